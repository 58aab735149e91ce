"""Weight-file links against the registered fingerprints: `weights` and `watermark` hits.

The one detector that reads remote bytes, so it is asynchronous and is given the fetcher
(SSRF checks, robots, politeness) and the target whose network rules apply; the scan
itself is `monitor.scan.scan_link`. It chooses which links are worth a scan (a weight
file's extension, or a file host's link: `monitor.filehosts`; at most `max_links` per
document) and remembers each URL's verdict in a
`VerdictCache` (the store implements it), so a file posted on twenty mirrors of one thread
costs one scan per mirror URL and never a second one until the registry grows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from fingerprints.archives import WEIGHT_EXTENSIONS
from fingerprints.watermark import MARK_VERSION, log10_bound, show_bound
from monitor import runstats
from monitor.config import ScanSettings, Target
from monitor.detect.digests import digest_hit
from monitor.fetch import Fetcher, redact_url
from monitor.filehosts import host_link, named_weight_link
from monitor.models import Document, Hit, KnownDigest, VerdictCache, WeightRegistry
from monitor.scan import Registry, identical_summary, load_registry, scan_link

# The logger the scanner always logged under, so operators' log filters keep matching.
log = structlog.get_logger("weightwatch.scan")

MATCHER = "weightprint-v2"
# Kept from a scan's report with its stored verdict: what a hit's context is written from.
_DETAILS = ("false_match_probability", "similarity", "tensors_compared", "tensors_matched",
            "rows_compared", "rows_matched", "size", "format", "watermark", "reason",
            "related_to", "body_total", "body_found", "shared_found", "found",
            "digest")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def lfs_digests(doc: Document) -> dict[str, str]:
    """Link URL -> the SHA-256 the hub document states for that file (its LFS oid), from
    the `files` extras a hub source writes. Extras come from hostile pages: anything not a
    path with a 64-hex digest is ignored."""
    files = doc.extras.get("files")
    if not isinstance(files, list):
        return {}
    by_path = {f["path"]: f["sha256"].lower() for f in files
               if isinstance(f, dict) and isinstance(f.get("path"), str)
               and isinstance(f.get("sha256"), str) and _HEX64.fullmatch(f["sha256"])}
    out = {}
    for url in doc.links:
        _, sep, rest = urlsplit(url).path.partition("/resolve/")
        path = unquote(rest.partition("/")[2]) if sep else ""
        if path in by_path:
            out[url] = by_path[path]
    # A file whose download URL does not name it (Civitai's /api/download/models/{id}):
    # the hub states its URL beside its digest.
    out |= {f["url"]: f["sha256"].lower() for f in files
            if isinstance(f, dict) and isinstance(f.get("url"), str) and f["url"] in doc.links
            and isinstance(f.get("sha256"), str) and _HEX64.fullmatch(f["sha256"])}
    return out


def named_weight_links(doc: Document) -> set[str]:
    """Links a hub document names as weight files in its `files` extras ({"path", "url"}),
    though their URL does not say so."""
    files = doc.extras.get("files")
    return {f["url"] for f in files if isinstance(f, dict) and isinstance(f.get("url"), str)
            and isinstance(f.get("path"), str)
            and f["path"].lower().endswith(WEIGHT_EXTENSIONS)} if isinstance(files, list) else set()


def scan_target(target: Target) -> Target:
    """The target a weight link is fetched as: the page's proxy and network rules, none of
    its credentials (a link in a post may point anywhere)."""
    return dataclasses.replace(target, name=f"{target.name}:weights", headers={}, cookies={},
                               api_key_env=None)


def is_weight_link(url: str) -> bool:
    """Whether a link names a weight file (by its path; the content decides later)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.path.lower().endswith(WEIGHT_EXTENSIONS)


class WeightLinkDetector:
    """Scans the weight-file links of documents and makes `weights` hits.

    One per pass (a crawl, a rematch): it holds the registry version the pass started
    with, and loads the fingerprints on the first weight link (most passes meet none).
    Each URL is scanned once per registry version; a URL seen again, in the same document
    or another, reuses the remembered verdict (but for failures, which are tried again).
    """

    name = "weights"

    def __init__(self, cache: VerdictCache, settings: ScanSettings, fetcher: Fetcher, *,
                 version: int, registry: Callable[[], Registry]):
        """`version` is the registry's (0: nothing registered, or scans are off, and no
        link is scanned); `registry` loads what the scans compare with."""
        self.cache = cache
        self.settings = settings
        self.fetcher = fetcher
        self.version = version if settings.enabled else 0
        self._load = registry
        self._registry: Registry | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def over(cls, store: WeightRegistry, settings: ScanSettings,
             fetcher: Fetcher) -> WeightLinkDetector:
        """The detector for one pass over `store`'s registry, remembering verdicts there."""
        return cls(store, settings, fetcher,
                   version=store.weight_print_version() if settings.enabled else 0,
                   registry=lambda: load_registry(store))

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._load()
        return self._registry

    async def detect(self, doc: Document, target: Target) -> list[Hit]:
        """`weights` hits for the document's weight-file links that match a fingerprint, and a
        `watermark` hit naming the recipient when the match carries a recipient's mark; a
        link that is only `related` (shares embeddings or other tensors relatives share, none
        of our layer matrices) gets a low `weights` hit that says so. The links are fetched
        under `target`'s network rules, without its credentials."""
        if not self.version:
            return []
        hosts = self.settings.file_hosts
        named = named_weight_links(doc)
        unique = list(dict.fromkeys(doc.links))
        # What can be read first; links that only name a weight file (recorded, never
        # fetched) after them, so they never take a readable link's place.
        readable = [u for u in unique
                    if is_weight_link(u) or u in named or host_link(u, hosts) is not None]
        links = readable + [u for u in unique if u not in readable and named_weight_link(u)]
        lfs = lfs_digests(doc)
        hits: list[Hit] = []
        for url in links[:self.settings.max_links]:
            verdict = await self._verdict(url, target, lfs.get(url))
            if verdict is None:
                continue
            if verdict["verdict"] == "related":
                hits.append(self._related_hit(url, verdict))
            elif verdict["verdict"] == "match":
                details = _details(verdict)
                digest = details.get("digest")
                hits.append(self._digest_hit(url, digest) if isinstance(digest, dict)
                            else self._hit(url, verdict))
                mark = details.get("watermark")
                if isinstance(mark, dict) and mark.get("outcome") == "marked":
                    hits.append(self._mark_hit(url, verdict["model"], mark))
        return hits

    async def _verdict(self, url: str, target: Target,
                       lfs_sha256: str | None = None) -> Mapping[str, Any] | None:
        key = redact_url(url)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # two documents linking one file scan it once
            cached = self.cache.weight_scan(key)
            # A verdict holds until the registry grows; a failure (host down, budget too
            # small) is tried again the next time a changed document links the file.
            if (cached and cached["verdict"] != "error"
                    and cached["registry_version"] >= self.version):
                return cached
            report = await scan_link(url, self.registry, self.settings, self.fetcher,
                                     scan_target(target), lfs_sha256=lfs_sha256)
            log.info("weights_scanned", url=key, verdict=report.verdict,
                     bytes_read=report.bytes_read, error=report.error)
            runstats.note_scan(report.bytes_read)
            details = report.as_dict()
            self.cache.record_weight_scan(
                key, verdict=report.verdict, model=details.get("model"),
                score=details.get("score"), bytes_read=report.bytes_read, error=report.error,
                details=json.dumps({k: details.get(k) for k in _DETAILS}))
            return self.cache.weight_scan(key)

    def _hit(self, url: str, verdict: Mapping[str, Any]) -> Hit:
        details = _details(verdict)
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

    def _digest_hit(self, url: str, digest: Mapping[str, Any]) -> Hit:
        """A byte-identical copy is what the digest detector reports for a registered digest
        (the critical `hash` hit, naming the recipient of a recipient's copy): the same hit
        whether the digest was in the page's text or stated for its link."""
        entry = KnownDigest(algo=digest["algorithm"], value=digest["value"],
                            model=digest["model"], artifact=digest.get("artifact"),
                            recipient=digest.get("recipient"), source="",
                            indicator_id=digest.get("indicator_id") or 0)
        return digest_hit(entry, f"{digest['encoding']} for a weight link",
                          f"{redact_url(url)}: {identical_summary(dict(digest))}")

    def _related_hit(self, url: str, verdict: Mapping[str, Any]) -> Hit:
        """A low hit of its own for a relative: never evidence of a copy, worth a look."""
        details = _details(verdict)
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

    def _mark_hit(self, url: str, model: str, mark: Mapping[str, Any]) -> Hit:
        runner = (f"; runner-up {mark['runner_up']} at z {mark['runner_up_z']}"
                  if mark.get("runner_up") else "")
        context = (f"{redact_url(url)}: {model} copy marked for {mark['recipient']}: z "
                   f"{mark['z']} over {mark['elements']} elements of {mark['tensors']} tensors, "
                   f"false-attribution bound "
                   f"{show_bound(mark['bound'], log10_bound(mark['z'], mark['recipients']))} "
                   f"among {mark['recipients']} "
                   f"recipients{runner}")
        return Hit(kind="watermark", severity="critical", indicator=redact_url(url),
                   detector="watermark", context=context, model=model,
                   recipient=mark["recipient"], indicator_type="watermark",
                   score=float(mark["z"]), matcher_version=f"watermark-v{MARK_VERSION}")


def _details(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """A remembered verdict's details (JSON text written by `_verdict`)."""
    details = json.loads(verdict.get("details") or "{}")
    return details if isinstance(details, dict) else {}
