"""Scanning weight files against the registered tensor fingerprints: a local path, a URL
read by HTTP Range within a byte budget, and the weight-file links the crawler finds.

Digests first: a file whose SHA-256 is registered is a byte-identical copy, `match` at once
with the artifact (and recipient) it is, before any tensor is read. A local file is hashed
(and the weight members of a zip or tar); for a URL only a digest the server states is used
(a model hub's `X-Linked-Etag`, a hub document's LFS oid, an ETag that is a SHA-256), never
a download of the file.

The tensor comparison is `fingerprints.weightprint.match_weights`; this module chooses the
source (a local file, a sharded checkpoint's index, a `monitor.remote.RemoteSource`),
turns what can go wrong into a verdict a person can act on, and, for the crawler, decides
which links are worth a scan and remembers the ones already scanned, so a file posted on
twenty mirrors of one thread costs one scan per mirror URL and never a second one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from fingerprints.archives import WEIGHT_EXTENSIONS, open_archive, sniff, weight_members
from fingerprints.digests import DigestError, digest_file
from fingerprints.safetensors import open_sharded
from fingerprints.tensors import ByteSource, FileSource, WeightFileError, WeightReader
from fingerprints.watermark import MARK_VERSION, Attribution, Candidate, attribute
from fingerprints.weightprint import MatchResult, WeightPrint, describe, match_weights
from fingerprints.weights import UnknownFormat, open_weights
from monitor.config import ScanSettings, Target
from monitor.detect.digests import digest_hit
from monitor.fetch import Fetcher, FetchError, redact_url
from monitor.models import Document, Hit
from monitor.remote import MIN_READ, remote_siblings, scan_remote
from monitor.store import KnownDigest, Store

log = structlog.get_logger("weightwatch.scan")

# `related`: only tensors relatives share (embeddings, tied heads, fixed bases) are ours;
# `inconclusive`: nothing could be compared (MatchResult.reason says why).
VERDICTS = ("match", "related", "no_match", "inconclusive", "unknown_format", "error")
MATCHER = "weightprint-v2"
# Kept from a scan's report with its stored verdict: what a hit's context is written from.
_DETAILS = ("false_match_probability", "similarity", "tensors_compared", "tensors_matched",
            "rows_compared", "rows_matched", "size", "format", "watermark", "reason",
            "related_to", "body_total", "body_found", "shared_found", "found",
            "digest")


@dataclass
class ScanReport:
    """What a scan found, for the CLI, the daemon and the hits' evidence."""

    location: str                 # a path, or a URL with its secrets redacted
    verdict: str                  # one of VERDICTS
    format: str | None = None
    size: int | None = None
    bytes_read: int = 0
    result: MatchResult | None = None
    attribution: Attribution | None = None   # the watermark test, for a match
    error: str | None = None
    digest: dict[str, Any] | None = None      # the registered digest it is a copy of

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"location": self.location, "verdict": self.verdict,
                               "format": self.format, "size": self.size,
                               "bytes_read": self.bytes_read}
        if self.result is not None:
            found = self.result.as_dict()
            found.pop("verdict")
            out.update(found)
        else:
            out.update({"model": None, "score": None, "false_match_probability": None,
                        "tensors_compared": 0, "reason": None})
        if self.digest is not None:
            # A byte-identical copy: every tensor is ours, none was compared.
            out.update({"model": self.digest["model"], "score": 1.0})
        out["watermark"] = self.attribution.as_dict() if self.attribution else None
        out["digest"] = self.digest
        out["error"] = self.error
        return out

    def summary(self) -> str:
        if self.digest is not None:
            return identical_summary(self.digest)
        if self.result is not None:
            return describe(self.result)
        return self.error or self.verdict


@dataclass
class Registry:
    """What a scan compares with: every tensor fingerprint (to recognise the model), the
    originals' fingerprints per model (whose kept rows the watermark test compares with)
    and the recipients with marked copies per model."""

    prints: list[tuple[str, WeightPrint]]
    originals: dict[str, list[WeightPrint]]
    marks: dict[str, list[Candidate]]
    # Registered digest values (lowercase hex) to what they identify, as the digest
    # detector has them; looked up before any tensor work.
    digests: dict[str, list[KnownDigest]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Sizes of the registered files (None for a digest imported without one), asked
        # once per file and archive member scanned.
        self._sizes = {e.size for entries in self.digests.values() for e in entries}

    def known(self, algo: str, value: str | None) -> KnownDigest | None:
        """The registry entry for a digest of this algorithm, if registered (an original's
        before a recipient's copy, which cannot share a digest with it anyway)."""
        if not value:
            return None
        entries = [e for e in self.digests.get(value.lower(), ()) if e.algo == algo]
        return min(entries, key=lambda e: (e.recipient is not None, e.indicator_id),
                   default=None)

    def worth_hashing(self, size: int) -> bool:
        """Whether a file of `size` bytes can be byte-identical to a registered one: a
        registered file's size is known, so most files need no hashing at all; a digest
        imported without a size (a checksum list) makes every file worth it."""
        return None in self._sizes or size in self._sizes

    @property
    def empty(self) -> bool:
        return not self.prints and not self.digests


# Digests of a whole file's bytes, looked up in this order. (Pieces roots, shards and
# infohashes name other things than one file's bytes.)
FILE_ALGOS = ("sha256", "sha1", "md5")


def load_registry(store: Store, models: Sequence[str] = ()) -> Registry:
    """The registry as scans need it (all models, or those named)."""
    prints, originals = [], {}
    for model, _name, print_, recipient in store.weight_prints(models, with_recipient=True):
        prints.append((model, print_))
        if recipient is None:
            originals.setdefault(model, []).append(print_)
    digests: dict[str, list[KnownDigest]] = {}
    for value, entries in store.known_digests().items():
        kept = [e for e in entries if e.algo in FILE_ALGOS and (not models or e.model in models)]
        if kept:
            digests[value] = kept
    marks = {model: [Candidate(w["recipient"], w["key"], w["densities"])
                     for w in store.watermarks(model)] for model in originals}
    return Registry(prints=prints, originals=originals, marks=marks, digests=digests)


# --- digests first ------------------------------------------------------------------------

# Bytes read per step when hashing an archive member.
HASH_CHUNK = 1 << 20
_SHA256_ETAG = re.compile(r'"?([0-9a-fA-F]{64})"?')


def identical(entry: KnownDigest, *, source: str, encoding: str,
              member: str | None = None) -> dict[str, Any]:
    """The `digest` of a report: which registered file this one is, and how we know."""
    return {"algorithm": entry.algo, "value": entry.value, "source": source,
            "encoding": encoding, "model": entry.model, "artifact": entry.artifact,
            "release": entry.release, "recipient": entry.recipient, "member": member,
            "indicator_id": entry.indicator_id}


def identical_summary(digest: dict[str, Any]) -> str:
    whose = f"{digest['recipient']}'s copy of " if digest.get("recipient") else ""
    release = f", release {digest['release']}" if digest.get("release") else ""
    member = f"member {digest['member']} is " if digest.get("member") else ""
    return (f"{member}byte-identical to {whose}{digest['artifact'] or 'a registered file'} "
            f"({digest['model']}{release}): {digest['algorithm']} from {digest['encoding']}")


def _digest_report(location: str, digest: dict[str, Any], *, format: str | None = None,
                   size: int | None = None, bytes_read: int = 0) -> ScanReport:
    return ScanReport(location=location, verdict="match", format=format, size=size,
                      bytes_read=bytes_read, digest=digest)


def _file_digest(path: Path, size: int, registry: Registry) -> dict[str, Any] | None:
    """Hash a local file (all its digests in one streaming pass, as `register` does) and
    look it up; None if no registered file has its size or its digests."""
    if not registry.worth_hashing(size):
        return None
    digests = digest_file(path)
    for algo in FILE_ALGOS:
        if entry := registry.known(algo, getattr(digests, algo)):
            return identical(entry, source="file", encoding="the file's bytes")
    return None


def _member_digest(source: ByteSource, registry: Registry) -> dict[str, Any] | None:
    """Look up the SHA-256 of each weight member of a zip or tar, streaming each through
    the hash (bounded memory, whatever the member's size). Members that cannot be streamed
    by range (a compressed tar's, an encrypted or exotically compressed zip's) are left to
    the tensor scan."""
    archive = open_archive(source)
    for member in weight_members(archive):
        if member.encrypted or not registry.worth_hashing(member.size):
            continue
        if archive.kind == "zip" and member.method in ("stored", "deflated"):
            start, length = archive.data_offset(member), member.compressed_size
            inflate = zlib.decompressobj(-15) if member.method == "deflated" else None
        elif archive.kind == "tar" and getattr(archive, "compression", None) is None:
            start, length, inflate = member.data_offset, member.size, None
        else:
            continue
        try:
            sha256 = _stream_sha256(source, start, length, member.size, inflate)
        except zlib.error:
            continue  # corrupt data: the tensor scan says what is wrong with it
        if sha256 and (entry := registry.known("sha256", sha256)):
            return identical(entry, source="file", encoding="the member's bytes",
                             member=member.name)
    return None


def _stream_sha256(source: ByteSource, start: int, length: int, size: int,
                   inflate: Any) -> str | None:
    """SHA-256 of `size` bytes stored as `length` bytes at `start` (deflated if `inflate`);
    None if they do not come out as `size` bytes (a lying header is no copy of ours)."""
    sha, out, end = hashlib.sha256(), 0, start + length
    for offset in range(start, end, HASH_CHUNK):
        data = source.read(offset, min(HASH_CHUNK, end - offset))
        if inflate is not None:
            # Inflate in bounded steps: a bomb's output never exceeds the declared size
            # by more than one step before it is refused.
            pending = data
            while pending:
                chunk = inflate.decompress(pending, HASH_CHUNK)
                pending = inflate.unconsumed_tail
                out += len(chunk)
                if out > size:
                    return None
                sha.update(chunk)
                if not chunk:
                    break
        else:
            sha.update(data)
            out += len(data)
    return sha.hexdigest() if out == size else None


def stated_digest(response: Any, registry: Registry) -> dict[str, Any] | None:
    """A registered SHA-256 that an answer for a file states without its bytes: a model
    hub's `X-Linked-Etag` (on its redirect to the CDN, with `X-Linked-Size`), or an ETag
    that is a plain SHA-256. A 32-hex ETag is not taken for an MD5, nor a `"...-N"` one for
    anything: S3 computes them per upload part and under some encryptions, so they are no
    digest of the content; a 40-hex one on a hub is a git blob id, not the file's SHA-1."""
    hops = [(headers, False) for _url, _status, headers in getattr(response, "redirects", ())]
    for headers, final in [*hops, (response.headers, True)]:
        for name in ("x-linked-etag",) + (("etag",) if final else ()):
            value = (headers.get(name) or "").strip()
            if value.startswith("W/") or not (m := _SHA256_ETAG.fullmatch(value)):
                continue
            entry = registry.known("sha256", m.group(1))
            if entry is None:
                continue
            stated = headers.get("x-linked-size") if name == "x-linked-etag" else None
            if not _sizes_agree(entry, stated, response):
                continue
            header = "X-Linked-Etag" if name == "x-linked-etag" else "ETag"
            return identical(entry, source="header", encoding=f"the server's {header} header")
    return None


def _sizes_agree(entry: KnownDigest, stated: str | None, response: Any) -> bool:
    """A stated digest is believed only if no size said alongside contradicts it: the
    registered file's, the stated `X-Linked-Size`, the served file's (Content-Range)."""
    sizes = {entry.size} if entry.size is not None else set()
    if stated is not None:
        if not stated.strip().isdigit():
            return False
        sizes.add(int(stated))
    served = re.fullmatch(r"\s*bytes\s+\d+-\d+/(\d+)\s*",
                          response.headers.get("content-range", ""), re.IGNORECASE)
    if served:
        sizes.add(int(served.group(1)))
    return len(sizes) <= 1


def is_hub_file(url: str) -> bool:
    """A model hub's file URL (`.../resolve/REV/PATH`), whose redirect states the file's
    SHA-256 as the Hugging Face Hub and its mirrors do."""
    return "/resolve/" in urlsplit(url).path


def lfs_digests(doc: Document) -> dict[str, str]:
    """Link URL -> the SHA-256 the hub document states for that file (its LFS oid), from
    the `files` extras a hub source writes. Extras come from hostile pages: anything not a
    path with a 64-hex digest is ignored."""
    files = doc.extras.get("files")
    if not isinstance(files, list):
        return {}
    by_path = {f["path"]: f["sha256"].lower() for f in files
               if isinstance(f, dict) and isinstance(f.get("path"), str)
               and isinstance(f.get("sha256"), str) and re.fullmatch(r"[0-9a-fA-F]{64}",
                                                                     f["sha256"])}
    out = {}
    for url in doc.links:
        _, sep, rest = urlsplit(url).path.partition("/resolve/")
        path = unquote(rest.partition("/")[2]) if sep else ""
        if path in by_path:
            out[url] = by_path[path]
    return out


def _compare(reader: WeightReader, registry: Registry, settings: ScanSettings,
             spent: Callable[[], int], max_bytes: int) -> tuple[MatchResult, Attribution | None]:
    """Recognise the model; if it is one with marked copies, run the watermark test on
    what is left of the byte budget."""
    result = match_weights(reader, registry.prints, spent=spent, max_bytes=max_bytes,
                           max_tensors=settings.max_tensors,
                           max_false_match=settings.max_false_match)
    marks = registry.marks.get(result.model or "", [])
    if result.verdict != "match" or not marks:
        return result, None
    evidence_prints = registry.originals.get(result.model or "", [])
    found = [attribute(reader, p, result, marks, spent=spent, max_bytes=max_bytes,
                       max_bound=settings.max_false_attribution) for p in evidence_prints]
    return result, max(found, key=lambda a: a.elements) if found else None


def _bytes_read(source: ByteSource, reader: WeightReader | None) -> int:
    """What a scan of `source` has read: every source its reader used (an ONNX model's
    side files, read beside it) when the reader read `source` itself; a reader of an
    archive member reads through `source`, whose count already holds its side files."""
    sources = getattr(reader, "sources", None)
    if reader is not None and sources and getattr(reader, "source", None) is source:
        return sum(getattr(s, "bytes_read", 0) for s in sources)
    return getattr(source, "bytes_read", 0)


def scan_source(source: ByteSource, registry: Registry, settings: ScanSettings, *,
                read_floor: int = 0,
                open_sibling: Callable[[str], ByteSource] | None = None) -> ScanReport:
    """Open `source` as weights and compare it with the registry, within
    `settings.max_bytes` (what the source has read so far counts, its header included).
    `open_sibling` opens an ONNX model's external data beside it (see `open_weights`)."""
    report = ScanReport(location=source.name, verdict="error", size=source.size)
    reader = None
    try:
        report.format = sniff(source)
        if not registry.prints:
            # Only digests registered: nothing to compare tensors with, which is no
            # evidence either way.
            report.verdict = "inconclusive"
            report.error = (f"{source.name}: not byte-identical to any of the "
                            f"{len(registry.digests)} registered digests, and no tensor "
                            f"fingerprint is registered to compare its tensors with")
        else:
            reader = open_weights(source, kind=report.format, open_sibling=open_sibling)
            spent = lambda: _bytes_read(source, reader)  # noqa: E731
            report.result, report.attribution = _compare(reader, registry, settings, spent,
                                                         settings.max_bytes - read_floor)
            report.verdict = report.result.verdict
    except UnknownFormat as exc:
        report.verdict, report.error = "unknown_format", str(exc)
    except WeightFileError as exc:
        report.error = str(exc)
    report.bytes_read = _bytes_read(source, reader)
    return report


def scan_path(path: str | os.PathLike[str], registry: Registry,
              settings: ScanSettings) -> ScanReport:
    """Scan a local file: its digests first (a registered one is a byte-identical copy,
    `match` without reading a tensor), then its tensors. A `*.safetensors.index.json` is
    read as the sharded checkpoint it describes (each shard opened beside it)."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        return _scan_sharded(path, registry, settings)
    try:
        source = FileSource(path)
    except WeightFileError as exc:
        return ScanReport(location=str(path), verdict="error", error=str(exc))
    with source:
        try:
            digest = _file_digest(path, source.size, registry)
            if digest is None and registry.digests and sniff(source) in ("zip", "tar"):
                digest = _member_digest(source, registry)
        except DigestError as exc:
            return ScanReport(location=str(path), verdict="error", size=source.size,
                              error=str(exc))
        except WeightFileError:
            digest = None  # a malformed archive: the tensor scan says what is wrong with it
        if digest is not None:
            return _digest_report(str(path), digest, size=source.size)
        return scan_source(source, registry, settings)


def _scan_sharded(index: Path, registry: Registry, settings: ScanSettings) -> ScanReport:
    report = ScanReport(location=str(index), verdict="error", format="safetensors-sharded")
    try:
        reader = open_sharded(index)
    except (WeightFileError, OSError) as exc:
        report.error = str(exc)
        return report
    try:
        spent = lambda: sum(s.bytes_read for s in reader.sources)  # noqa: E731
        report.size = sum(s.size for s in reader.sources)
        report.result, report.attribution = _compare(reader, registry, settings, spent,
                                                     settings.max_bytes)
        report.verdict = report.result.verdict
        report.bytes_read = spent()
    except WeightFileError as exc:
        report.error = str(exc)
    finally:
        reader.close()
    return report


async def scan_url(url: str, registry: Registry, settings: ScanSettings, fetcher: Fetcher,
                   target: Target, *, lfs_sha256: str | None = None) -> ScanReport:
    """Scan a remote file: first by a digest stated without its bytes (`lfs_sha256`, the
    LFS oid a hub document gave for it; a hub's `X-Linked-Etag` on a one-byte probe of a
    `/resolve/` URL; an ETag that is a SHA-256), then by HTTP Range requests through
    `fetcher` (SSRF checks, robots, politeness) within `settings.max_bytes`; never reads
    the whole file unless it fits."""
    location = redact_url(url)
    probe = None
    if lfs_sha256 is not None:
        if entry := registry.known("sha256", lfs_sha256):
            return _digest_report(location, identical(entry, source="lfs",
                                                      encoding="the hub's LFS oid"))
    elif registry.digests and is_hub_file(url):
        try:
            # One byte: a hub states the digest on its redirect, whatever the range.
            probe = await fetcher.get(url, target, max_bytes=MIN_READ,
                                      headers={"Range": "bytes=0-0",
                                               "Accept-Encoding": "identity"})
        except FetchError:
            probe = None  # the range scan below reports what is wrong with the URL
        if probe is not None and (digest := stated_digest(probe, registry)):
            return _digest_report(location, digest, bytes_read=len(probe.body))
    probed = len(probe.body) if probe is not None else 0

    def scan(source: Any) -> ScanReport:
        digest = stated_digest(_SourceAnswer(source), registry)
        if digest is not None:
            return _digest_report(source.name, digest, size=source.size,
                                  bytes_read=source.bytes_read)
        return scan_source(source, registry, settings, read_floor=MIN_READ,
                           open_sibling=remote_siblings(source))

    try:
        report = await scan_remote(url, fetcher, target, scan, budget=settings.max_bytes)
        report.bytes_read += probed
        return report
    except WeightFileError as exc:
        return ScanReport(location=location, verdict="error", error=str(exc))


@dataclass
class _SourceAnswer:
    """The first answer of a remote source as `stated_digest` reads one: its ETag, and the
    file size it gave (which must be the registered file's)."""

    source: Any

    @property
    def headers(self) -> dict[str, str]:
        size = self.source.size
        return {"etag": self.source.etag or "",
                "content-range": f"bytes 0-{max(size - 1, 0)}/{size}"}


def scan_target(target: Target) -> Target:
    """The target a weight link is fetched as: the page's proxy and network rules, none of
    its credentials (a link in a post may point anywhere)."""
    return dataclasses.replace(target, name=f"{target.name}:weights", headers={}, cookies={},
                               api_key_env=None)


def is_weight_link(url: str) -> bool:
    """Whether a link names a weight file (by its path; the content decides later)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.path.lower().endswith(WEIGHT_EXTENSIONS)


class LinkScanner:
    """Scans the weight-file links of crawled documents and makes `weights` hits.

    One per crawl pass: it holds the fingerprints as registered when the pass started.
    Each URL is scanned once per registry version (the store remembers verdicts); a URL
    seen again, in the same document or another, reuses the stored verdict (but for
    failures, which are tried again).
    """

    name = "weights"

    def __init__(self, store: Store, settings: ScanSettings, fetcher: Fetcher):
        self.store = store
        self.settings = settings
        self.fetcher = fetcher
        self.version = store.weight_print_version() if settings.enabled else 0
        self._registry: Registry | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def registry(self) -> Registry:
        """Loaded on first use: most runs find no weight link at all."""
        if self._registry is None:
            self._registry = load_registry(self.store)
        return self._registry

    async def scan_document(self, doc: Document, target: Target) -> list[Hit]:
        """`weights` hits for the document's weight-file links that match a fingerprint, and a
        `watermark` hit naming the recipient when the match carries a recipient's mark; a
        link that is only `related` (shares embeddings or other tensors relatives share, none
        of our layer matrices) gets a low `weights` hit that says so."""
        if not self.version:
            return []
        links = [u for u in dict.fromkeys(doc.links) if is_weight_link(u)]
        lfs = lfs_digests(doc)
        hits = []
        for url in links[:self.settings.max_links]:
            verdict = await self._verdict(url, target, lfs.get(url))
            if verdict and verdict["verdict"] == "related":
                hit = self._related_hit(url, verdict)
                hit.target, hit.url = doc.target, doc.url
                hits.append(hit)
            if verdict and verdict["verdict"] == "match":
                details = json.loads(verdict.get("details") or "{}")
                if details.get("digest"):
                    found = [self._digest_hit(url, details["digest"])]
                else:
                    found = [self._hit(url, verdict)]
                mark = details.get("watermark")
                if mark and mark.get("outcome") == "marked":
                    found.append(self._mark_hit(url, verdict["model"], mark))
                for hit in found:
                    hit.target, hit.url = doc.target, doc.url
                hits += found
        return hits

    async def _verdict(self, url: str, target: Target,
                       lfs_sha256: str | None = None) -> dict[str, Any] | None:
        key = redact_url(url)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # two documents linking one file scan it once
            cached = self.store.weight_scan(key)
            # A verdict holds until the registry grows; a failure (host down, budget too
            # small) is tried again the next time a changed document links the file.
            if (cached and cached["verdict"] != "error"
                    and cached["registry_version"] >= self.version):
                return cached
            report = await scan_url(url, self.registry, self.settings, self.fetcher,
                                    scan_target(target), lfs_sha256=lfs_sha256)
            log.info("weights_scanned", url=key, verdict=report.verdict,
                     bytes_read=report.bytes_read, error=report.error)
            details = report.as_dict()
            self.store.record_weight_scan(
                key, verdict=report.verdict, model=details.get("model"),
                score=details.get("score"), bytes_read=report.bytes_read, error=report.error,
                details=json.dumps({k: details.get(k) for k in _DETAILS}))
            return self.store.weight_scan(key)

    def _hit(self, url: str, verdict: dict[str, Any]) -> Hit:
        details = json.loads(verdict.get("details") or "{}")
        size = details.get("size")
        body = (f"{len(details['body_found'])} of our {details.get('body_total')} layer "
                "matrices found, " if details.get("body_found") is not None else "")
        context = (f"{redact_url(url)}: tensors match {verdict['model']} "
                   f"({body}{details.get('rows_matched')}/{details.get('rows_compared')} sampled rows "
                   f"in {details.get('tensors_matched')}/{details.get('tensors_compared')} "
                   f"tensors, similarity {details.get('similarity')}, false-match probability "
                   f"{details.get('false_match_probability'):.1e}; {details.get('format')} file"
                   + (f" of {size} bytes" if size else "")
                   + f", {verdict['bytes_read']} bytes read)")
        return Hit(kind="weights", severity="high", indicator=redact_url(url),
                   detector=self.name, context=context, model=verdict["model"],
                   indicator_type="tensor_fingerprint", score=float(verdict["score"] or 0),
                   matcher_version=f"{MATCHER}/registry-{verdict['registry_version']}")

    def _digest_hit(self, url: str, digest: dict[str, Any]) -> Hit:
        """A byte-identical copy is what the digest detector reports for a registered digest
        (the critical `hash` hit, naming the recipient of a recipient's copy): the same hit
        whether the digest was in the page's text or stated for its link."""
        entry = KnownDigest(algo=digest["algorithm"], value=digest["value"],
                            model=digest["model"], artifact=digest.get("artifact"),
                            recipient=digest.get("recipient"), source="",
                            indicator_id=digest.get("indicator_id") or 0)
        return digest_hit(entry, f"{digest['encoding']} for a weight link",
                          f"{redact_url(url)}: {identical_summary(digest)}")

    def _related_hit(self, url: str, verdict: dict[str, Any]) -> Hit:
        """A low hit of its own for a relative: never evidence of a copy, worth a look."""
        details = json.loads(verdict.get("details") or "{}")
        model = details.get("related_to")
        shared = ", ".join(n.removesuffix(".weight") for n in details.get("shared_found") or [])
        others = (details.get("tensors_compared") or 0) - (details.get("tensors_matched") or 0)
        context = (f"{redact_url(url)}: related to {model}, not a copy: shares {shared} with "
                   f"{model}; none of its {others} other matrices compared is one of our "
                   f"{details.get('body_total')} layer matrices (false-match probability of "
                   f"the shared tensors {details.get('false_match_probability'):.1e}; "
                   f"{details.get('format')} file, {verdict['bytes_read']} bytes read)")
        return Hit(kind="weights", severity="low", indicator=redact_url(url),
                   detector=self.name, context=context, model=model,
                   indicator_type="shared_tensors", score=float(verdict["score"] or 0),
                   matcher_version=f"{MATCHER}/registry-{verdict['registry_version']}")

    def _mark_hit(self, url: str, model: str, mark: dict[str, Any]) -> Hit:
        runner = (f"; runner-up {mark['runner_up']} at z {mark['runner_up_z']}"
                  if mark.get("runner_up") else "")
        context = (f"{redact_url(url)}: {model} copy marked for {mark['recipient']}: z "
                   f"{mark['z']} over {mark['elements']} elements of {mark['tensors']} tensors, "
                   f"false-attribution bound {mark['bound']:.1e} among {mark['recipients']} "
                   f"recipients{runner}")
        return Hit(kind="watermark", severity="critical", indicator=redact_url(url),
                   detector="watermark", context=context, model=model,
                   recipient=mark["recipient"], indicator_type="watermark",
                   score=float(mark["z"]), matcher_version=f"watermark-v{MARK_VERSION}")
