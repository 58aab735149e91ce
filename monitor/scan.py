"""Scanning weight files against the registered tensor fingerprints: a local path, a URL
read by HTTP Range within a byte budget, and the weight-file links the crawler finds.

The comparison itself is `fingerprints.weightprint.match_weights`; this module chooses the
source (a local file, a sharded checkpoint's index, a `monitor.remote.RemoteSource`),
turns what can go wrong into a verdict a person can act on, and, for the crawler, decides
which links are worth a scan and remembers the ones already scanned, so a file posted on
twenty mirrors of one thread costs one scan per mirror URL and never a second one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from fingerprints.archives import WEIGHT_EXTENSIONS, sniff
from fingerprints.safetensors import open_sharded
from fingerprints.tensors import ByteSource, FileSource, WeightFileError, WeightReader
from fingerprints.watermark import MARK_VERSION, Attribution, Candidate
from fingerprints.weightprint import MatchResult, WeightPrint, describe, match_weights
from fingerprints.weights import UnknownFormat, open_weights
from monitor.config import ScanSettings, Target
from monitor.fetch import Fetcher, redact_url
from monitor.models import Document, Hit
from monitor.remote import MIN_READ, scan_remote
from monitor.store import Store
from monitor.watermark import attribute, candidates

log = structlog.get_logger("weightwatch.scan")

# `related`: only tensors relatives share (embeddings, tied heads, fixed bases) are ours;
# `inconclusive`: nothing could be compared (MatchResult.reason says why).
VERDICTS = ("match", "related", "no_match", "inconclusive", "unknown_format", "error")
MATCHER = "weightprint-v2"
# Kept from a scan's report with its stored verdict: what a hit's context is written from.
_DETAILS = ("false_match_probability", "similarity", "tensors_compared", "tensors_matched",
            "rows_compared", "rows_matched", "size", "format", "watermark", "reason",
            "related_to", "body_total", "body_found", "shared_found", "found")


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
        out["watermark"] = self.attribution.as_dict() if self.attribution else None
        out["error"] = self.error
        return out

    def summary(self) -> str:
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


def load_registry(store: Store, models: Sequence[str] = ()) -> Registry:
    """The registry as scans need it (all models, or those named)."""
    prints, originals = [], {}
    for model, _name, print_, recipient in store.weight_prints(models, with_recipient=True):
        prints.append((model, print_))
        if recipient is None:
            originals.setdefault(model, []).append(print_)
    return Registry(prints=prints, originals=originals,
                    marks={model: candidates(store, model) for model in originals})


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


def scan_source(source: ByteSource, registry: Registry, settings: ScanSettings, *,
                read_floor: int = 0) -> ScanReport:
    """Open `source` as weights and compare it with the registry, within
    `settings.max_bytes` (what the source has read so far counts, its header included)."""
    report = ScanReport(location=source.name, verdict="error", size=source.size)
    try:
        report.format = sniff(source)
        reader = open_weights(source, kind=report.format)
        spent = lambda: source.bytes_read  # noqa: E731  (RemoteSource and FileSource count)
        report.result, report.attribution = _compare(reader, registry, settings, spent,
                                                     settings.max_bytes - read_floor)
        report.verdict = report.result.verdict
    except UnknownFormat as exc:
        report.verdict, report.error = "unknown_format", str(exc)
    except WeightFileError as exc:
        report.error = str(exc)
    report.bytes_read = getattr(source, "bytes_read", 0)
    return report


def scan_path(path: str | os.PathLike[str], registry: Registry,
              settings: ScanSettings) -> ScanReport:
    """Scan a local file; a `*.safetensors.index.json` is read as the sharded checkpoint it
    describes (each shard opened beside it)."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        return _scan_sharded(path, registry, settings)
    try:
        source = FileSource(path)
    except WeightFileError as exc:
        return ScanReport(location=str(path), verdict="error", error=str(exc))
    with source:
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
                   target: Target) -> ScanReport:
    """Scan a remote file by HTTP Range requests through `fetcher` (SSRF checks, robots,
    politeness) within `settings.max_bytes`; never reads the whole file unless it fits."""
    try:
        return await scan_remote(
            url, fetcher, target,
            lambda source: scan_source(source, registry, settings, read_floor=MIN_READ),
            budget=settings.max_bytes)
    except WeightFileError as exc:
        return ScanReport(location=redact_url(url), verdict="error", error=str(exc))


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
        hits = []
        for url in links[:self.settings.max_links]:
            verdict = await self._verdict(url, target)
            if verdict and verdict["verdict"] == "related":
                hit = self._related_hit(url, verdict)
                hit.target, hit.url = doc.target, doc.url
                hits.append(hit)
            if verdict and verdict["verdict"] == "match":
                found = [self._hit(url, verdict)]
                mark = json.loads(verdict.get("details") or "{}").get("watermark")
                if mark and mark.get("outcome") == "marked":
                    found.append(self._mark_hit(url, verdict["model"], mark))
                for hit in found:
                    hit.target, hit.url = doc.target, doc.url
                hits += found
        return hits

    async def _verdict(self, url: str, target: Target) -> dict[str, Any] | None:
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
                                    scan_target(target))
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
