"""Scanning weight files against the registered tensor fingerprints: a local path, or a URL
read by HTTP Range within a byte budget. (The weight-file links of crawled documents are
the `monitor.detect.weights` detector's, which scans them through `scan_url`.)

Digests first: a file whose SHA-256 is registered is a byte-identical copy, `match` at once
with the artifact (and recipient) it is, before any tensor is read. A local file is hashed,
and so is every member the weight reader would open in an archive, at every level of
nesting (a wheel holding a zip holding the safetensors; an npm .tgz, hashed as it streams);
for a URL only a digest the server states is used (a model hub's `X-Linked-Etag`, read
off its redirect, which is then never followed; a hub document's LFS oid; a file host's
API, such as Pixeldrain's `hash_sha256`; an ETag that is a SHA-256), never a download of
the file. A file host's link is read the way that host gives up its file
(`monitor.filehosts`, through `scan_link`). Both passes
share one `archive_session`, so a compressed tar is read and inflated once, within the
scan's --max-bytes: a scan stopped by that budget is `inconclusive`, never `no_match`.

The tensor comparison is `fingerprints.weightprint.match_weights`; this module chooses the
source (a local file, a sharded checkpoint's index, a `monitor.remote.RemoteSource`) and
turns what can go wrong into a verdict a person can act on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import fingerprints.weights
from fingerprints.archives import (
    ARCHIVE_EXTENSIONS,
    WEIGHT_EXTENSIONS,
    ArchiveSession,
    archive_session,
    member_digests,
    sniff,
)
from fingerprints.digests import DigestError, digest_file
from fingerprints.safetensors import open_sharded
from fingerprints.tensors import ByteSource, FileSource, WeightFileError, WeightReader
from fingerprints.watermark import Attribution, Candidate, attribute
from fingerprints.weightprint import MatchResult, WeightPrint, describe, match_weights
from fingerprints.weights import UnknownFormat, open_weights
from monitor.config import ScanSettings, Target
from monitor.fetch import REDIRECT_CODES, Fetcher, FetchError, redact_url
from monitor.filehosts import HostLink, ResolveError, host_link, named_weight_link
from monitor.models import KnownDigest, WeightRegistry
from monitor.remote import MIN_READ, remote_siblings, scan_remote

# `related`: only tensors relatives share (embeddings, tied heads, fixed bases) are ours;
# `inconclusive`: nothing could be compared (MatchResult.reason says why).
VERDICTS = ("match", "related", "no_match", "inconclusive", "unknown_format", "error")


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
            reason = self.error if self.verdict == "inconclusive" else None
            out.update({"model": None, "score": None, "false_match_probability": None,
                        "tensors_compared": 0, "reason": reason})
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


def load_registry(store: WeightRegistry, models: Sequence[str] = ()) -> Registry:
    """The registry as scans need it (all models, or those named)."""
    prints: list[tuple[str, WeightPrint]] = []
    originals: dict[str, list[WeightPrint]] = {}
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


def _member_digest(source: ByteSource, registry: Registry, *,
                   streamed_only: bool = False) -> dict[str, Any] | None:
    """Look up the SHA-256 of each member the weight reader would open in the archive
    `source`, at every level of nesting and within the reader's own limits (so a digest
    is never sought where the tensors would not be), members of a registered size only;
    `streamed_only` for a remote file: only a compressed tar's members, hashed as the
    stream the tensor pass needs anyway passes. BudgetSpent (a compressed tar past
    --max-bytes) ends the walk; the tensor pass, which finds the same archive in the
    session, reports it."""
    walk = member_digests(source, registry.worth_hashing,
                          max_depth=fingerprints.weights.MAX_NESTING,
                          max_members=fingerprints.weights._MAX_MEMBERS_READ,
                          max_inflate=fingerprints.weights.MAX_INFLATE_TOTAL,
                          streamed_only=streamed_only)
    for found in walk:
        if entry := registry.known("sha256", found.sha256):
            return identical(entry, source="file", encoding="the member's bytes",
                             member=found.path)
    return None


def stated_digest(response: Any, registry: Registry) -> dict[str, Any] | None:
    """A registered SHA-256 that an answer for a file states without its bytes: a model
    hub's `X-Linked-Etag` (on its redirect to the CDN, with `X-Linked-Size`), or an ETag
    that is a plain SHA-256. A 32-hex ETag is not taken for an MD5, nor a `"...-N"` one for
    anything: S3 computes them per upload part and under some encryptions, so they are no
    digest of the content; a 40-hex one on a hub is a git blob id, not the file's SHA-1.
    `response` is a fetcher `Response` or a `Probe` (its `redirects`, then its `headers`)."""
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
    served = _served_size(response.headers)
    if served is not None:
        sizes.add(served)
    return len(sizes) <= 1


def _served_size(headers: Mapping[str, str]) -> int | None:
    served = re.fullmatch(r"\s*bytes\s+\d+-\d+/(\d+)\s*", headers.get("content-range", ""),
                          re.IGNORECASE)
    return int(served.group(1)) if served else None


_DISPOSITION_UTF8 = re.compile(r"""filename\*\s*=\s*(?:utf-8|UTF-8)'[^']*'([^;\s]+)""")
_DISPOSITION = re.compile(r"""filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))""")


def disposition_name(value: str) -> str | None:
    """The file name a Content-Disposition header gives (RFC 6266: `filename*` in UTF-8
    first, else `filename`), its last path part only; None if it gives none."""
    if m := _DISPOSITION_UTF8.search(value):
        name = unquote(m.group(1))
    elif m := _DISPOSITION.search(value):
        name = m.group(1).replace('\\"', '"') if m.group(1) is not None else m.group(2)
    else:
        return None
    name = "".join(c for c in name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())
    return name.strip()[:255] or None


@dataclass
class Probe:
    """What a one-byte request for a linked file said before any range read: the redirect
    answers on the way, as (url, status, headers), and the last answer's headers; `error`
    if a hop failed (a redirect into the private network, a dead host), the range scan
    then says what is wrong. A hub's redirect that states the file's digest ends the
    probe: what it points to is never asked (as huggingface_hub reads X-Linked-Etag off
    the redirect without following it to the CDN)."""

    redirects: list[tuple[str, int, Mapping[str, str]]] = dataclasses.field(
        default_factory=list)
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    error: str | None = None
    bytes_read: int = 0

    @property
    def name(self) -> str | None:
        """The file's name as the server states it (Content-Disposition), if it does."""
        return disposition_name(self.headers.get("content-disposition", ""))

    @property
    def size(self) -> int | None:
        """The file's size: the served Content-Range's, else a hub's X-Linked-Size."""
        served = _served_size(self.headers)
        if served is not None:
            return served
        for _url, _status, headers in reversed(self.redirects):
            stated = (headers.get("x-linked-size") or "").strip()
            if stated.isdigit():
                return int(stated)
        return None


async def probe_url(url: str, fetcher: Fetcher, target: Target) -> Probe:
    """Ask for the first byte of `url`, following redirects one at a time, each through
    `fetcher` (SSRF checks on every hop, robots, politeness), up to the crawl's
    max_redirects; never raises. A hop to another origin is asked without the target's
    credentials (headers, cookies), as the fetcher's own redirects are."""
    probe = Probe()
    current = url
    origin = urlsplit(url)[:2]
    bare = dataclasses.replace(target, headers={}, cookies={}, api_key_env=None)
    asking = target
    for _hop in range(fetcher.settings.max_redirects + 1):
        if urlsplit(current)[:2] != origin:
            asking = bare  # and stays so: a hop back is the other origin's choice
        try:
            answer = await fetcher.get(current, asking, max_bytes=MIN_READ,
                                       follow_redirects=False,
                                       headers={"Range": "bytes=0-0",
                                                "Accept-Encoding": "identity"})
        except FetchError as exc:
            probe.error = str(exc)
            return probe
        probe.bytes_read += len(answer.body)
        location = answer.headers.get("location")
        if answer.status in REDIRECT_CODES and location:
            probe.redirects.append((answer.url, answer.status, answer.headers))
            if answer.headers.get("x-linked-etag"):
                return probe
            current = urljoin(current, location)
            continue
        probe.headers = answer.headers
        return probe
    probe.error = f"more than {fetcher.settings.max_redirects} redirects from {redact_url(url)}"
    return probe


def is_hub_file(url: str) -> bool:
    """A model hub's file URL (`.../resolve/REV/PATH`), whose redirect states the file's
    SHA-256 as the Hugging Face Hub and its mirrors do."""
    return "/resolve/" in urlsplit(url).path


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


def _bytes_read(source: ByteSource, reader: object | None) -> int:
    """What a scan of `source` has read: every source its reader used (an ONNX model's
    side files, read beside it) when the reader read `source` itself; a reader of an
    archive member reads through `source`, whose count already holds its side files."""
    sources = getattr(reader, "sources", None)
    if reader is not None and sources and getattr(reader, "source", None) is source:
        return sum(getattr(s, "bytes_read", 0) for s in sources)
    return getattr(source, "bytes_read", 0)


def scan_source(source: ByteSource, registry: Registry, settings: ScanSettings, *,
                read_floor: int = 0, digest_read: int = 0,
                open_sibling: Callable[[str], ByteSource] | None = None) -> ScanReport:
    """Open `source` as weights and compare it with the registry, within
    `settings.max_bytes` (what the source has read so far counts, its header included,
    but for `digest_read`, what the digest pass read hashing archive members: reported,
    not charged; a compressed tar's stream is bounded by the archive session instead).
    `open_sibling` opens an ONNX model's external data beside it (see `open_weights`)."""
    with archive_session(settings.max_bytes) as session:
        report = _scan_source(source, registry, settings, read_floor, digest_read,
                              open_sibling)
        _budget_spent(report, session)
    return report


def _budget_spent(report: ScanReport, session: ArchiveSession) -> None:
    """A scan cut short by the inflation budget saw part of the file: what it did not find
    is unknown, never `no_match`, and that is the reason to give (a match or a relation
    found holds)."""
    if session.spent is None or report.verdict in ("match", "related"):
        return
    report.verdict, report.error = "inconclusive", session.spent
    if report.result is not None:
        report.result.verdict, report.result.reason = "inconclusive", session.spent


def _scan_source(source: ByteSource, registry: Registry, settings: ScanSettings,
                 read_floor: int, digest_read: int,
                 open_sibling: Callable[[str], ByteSource] | None) -> ScanReport:
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
            spent = lambda: _bytes_read(source, reader) - digest_read  # noqa: E731
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
    # One session for both passes: the tensor pass reopens no archive the digest pass
    # opened (a gzip tarball is streamed once), and one inflation budget holds for both.
    with source, archive_session(settings.max_bytes):
        try:
            digest = _file_digest(path, source.size, registry)
            if digest is None and registry.digests and sniff(source) in ("zip", "tar"):
                digest = _member_digest(source, registry)
        except DigestError as exc:
            return ScanReport(location=str(path), verdict="error", size=source.size,
                              error=str(exc))
        except WeightFileError:
            # A malformed archive, or the budget spent inflating it: the tensor pass meets
            # the same archive in the session, unread, and says what is wrong with it.
            digest = None
        if digest is not None:
            return _digest_report(str(path), digest, size=source.size,
                                  bytes_read=source.bytes_read)
        return scan_source(source, registry, settings, digest_read=source.bytes_read)


def _scan_sharded(index: Path, registry: Registry, settings: ScanSettings) -> ScanReport:
    report = ScanReport(location=str(index), verdict="error", format="safetensors-sharded")
    try:
        reader = open_sharded(index)
    except (WeightFileError, OSError) as exc:
        report.error = str(exc)
        return report
    def spent() -> int:
        return _bytes_read(reader.source, reader)  # every shard's source

    try:
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
                   target: Target, *, lfs_sha256: str | None = None,
                   stated: tuple[str, str] | None = None,
                   probe: Probe | None = None) -> ScanReport:
    """Scan a remote file: first by a digest stated without its bytes (`lfs_sha256`, the
    LFS oid a hub document gave for it; `stated`, (SHA-256, who states it) from a file
    host's API; a hub's `X-Linked-Etag` on a one-byte probe of a `/resolve/` URL, or the
    `probe` the caller made; an ETag that is a SHA-256), then by HTTP Range requests
    through `fetcher` (SSRF checks, robots, politeness) within `settings.max_bytes`; never
    reads the whole file unless it fits."""
    location = redact_url(url)
    if lfs_sha256 is not None:
        if entry := registry.known("sha256", lfs_sha256):
            return _digest_report(location, identical(entry, source="lfs",
                                                      encoding="the hub's LFS oid"))
    elif stated is not None:
        if entry := registry.known("sha256", stated[0]):
            return _digest_report(location, identical(entry, source="host",
                                                      encoding=stated[1]))
    elif probe is None and registry.digests and is_hub_file(url):
        probe = await probe_url(url, fetcher, target)
    if probe is not None and (digest := stated_digest(probe, registry)):
        return _digest_report(location, digest, size=probe.size,
                              bytes_read=probe.bytes_read)
    probed = probe.bytes_read if probe is not None else 0

    def scan(source: Any) -> ScanReport:
        with archive_session(settings.max_bytes):
            digest = stated_digest(_SourceAnswer(source), registry)
            if digest is None and registry.digests and sniff(source) == "tar":
                try:
                    digest = _member_digest(source, registry, streamed_only=True)
                except WeightFileError:
                    digest = None  # the tensor pass meets the same archive and says why
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


# A file host's page or file-info answer is a small document; a bigger one is no page.
MAX_HOST_PAGE = 2 * 1024 * 1024


async def scan_link(url: str, registry: Registry, settings: ScanSettings, fetcher: Fetcher,
                    target: Target, *, lfs_sha256: str | None = None) -> ScanReport:
    """Scan what a link points to: a file host's link the way that host gives up its file
    (`scan_file_host`); a link that names a weight file somewhere else than at the end of
    its path, on no host of the table, recorded unscanned with that name (no request);
    any other link as the file itself (`scan_url`)."""
    link = host_link(url, settings.file_hosts)
    if link is not None:
        return await scan_file_host(link, registry, settings, fetcher, target)
    if name := named_weight_link(url):
        return _unscanned(redact_url(url), "no file host weightwatch reads serves it", name,
                          None)
    return await scan_url(url, registry, settings, fetcher, target, lfs_sha256=lfs_sha256)


async def scan_file_host(link: HostLink, registry: Registry, settings: ScanSettings,
                         fetcher: Fetcher, target: Target) -> ScanReport:
    """A file host's link: an unscannable host's is `inconclusive` with the reason (no
    request made); a page host's page is fetched and its resolver names the direct link
    and what the host states (a registered SHA-256 is a `match` with no byte of the file
    read); then a one-byte probe (the file's name and size from Content-Disposition and
    Content-Range, a stated digest) and, for a file named as weights (or not named at
    all), the range scan. Every URL, the resolver's included, goes through `fetcher`, so a
    page pointing into the private network is refused like any link."""
    location = redact_url(link.url)
    host = link.host.name
    name, size = link.name, None
    if link.host.way == "unscannable":
        return _unscanned(location, link.host.reason, name, size)
    url = link.url
    stated: tuple[str, str] | None = None
    page_url = link.page_url()
    if page_url is not None:
        try:
            answer = await fetcher.get(page_url, target, max_bytes=MAX_HOST_PAGE)
            resolved = await asyncio.to_thread(link.resolve, answer.body, answer.url)
        except (FetchError, ResolveError) as exc:
            text = str(exc)
            return ScanReport(location=location, verdict="error",
                              error=text if location in text else f"{location}: {text}")
        name, size = resolved.name or name, resolved.size
        if resolved.sha256:
            stated = (resolved.sha256, f"{host}'s file info")
            if entry := registry.known("sha256", resolved.sha256):
                return _digest_report(location, identical(entry, source="host",
                                                          encoding=stated[1]), size=size)
        if resolved.url is None:
            return _unscanned(location, resolved.reason or f"{host} gives no direct link",
                              name, size)
        url = resolved.url
    else:
        url = link.file_url()
    if name and not _named_as_weights(name):
        # The host says what the file is: a photo or a video is not worth a range read.
        return _not_weights(location, host, name, size, 0)
    probe = await probe_url(url, fetcher, target)
    name, size = probe.name or name, probe.size if probe.size is not None else size
    if name and not _named_as_weights(name) and stated_digest(probe, registry) is None:
        return _not_weights(location, host, name, size, probe.bytes_read)
    report = await scan_url(url, registry, settings, fetcher, target, stated=stated,
                            probe=probe)
    report.location = location
    return report


def _named_as_weights(name: str) -> bool:
    return name.lower().endswith(WEIGHT_EXTENSIONS + ARCHIVE_EXTENSIONS)


def _unscanned(location: str, reason: str, name: str | None, size: int | None) -> ScanReport:
    """A weight link that cannot be read: recorded with what the link or its host states,
    for the analyst (the weight_scans table), and tried again when the registry grows."""
    what = f" ({name}{f', {size} bytes' if size is not None else ''})" if name else ""
    return ScanReport(location=location, verdict="inconclusive", size=size,
                      error=f"{location}{what}: not scanned: {reason}")


def _not_weights(location: str, host: str, name: str, size: int | None,
                 bytes_read: int) -> ScanReport:
    of = f", {size} bytes" if size is not None else ""
    return ScanReport(location=location, verdict="unknown_format", size=size,
                      bytes_read=bytes_read,
                      error=f"{location}: {host} serves {name!r}{of}, not a weight file or "
                            "an archive by its name")


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
