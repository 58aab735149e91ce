"""Domain objects that flow through the pipeline: documents in, hits out.

They are plain dataclasses so every stage can be tested without the others, and so the
store decides alone how they are persisted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

VOLATILE_EXTRAS = "stats"
KINDS = ("mention", "hash", "torrent", "weights", "watermark")
SEVERITIES = ("critical", "high", "medium", "low")
HIT_STATUSES = ("new", "acknowledged", "resolved", "false_positive")
# Still to be dealt with: what incidents count and reminders repeat.
OPEN_STATUSES = ("new", "acknowledged")
# What `alerts.group_by` may name: hits alike in all of them are one incident (one email).
GROUP_LABELS = ("model", "release", "infohash", "artifact", "recipient", "kind", "severity",
                "target")
DEFAULT_GROUP_BY = ("model", "release")


def severity_rank(severity: str) -> int:
    """0 for critical up to 3 for low, so sorting by rank puts the worst first; anything
    unknown sorts last rather than crashing whoever sorts."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass
class Document:
    """One unit of content from a source: a post, a torrent listing row, a hub record.

    `key` identifies the document within its target across crawls (a post number, a
    torrent URL); `text` is what detectors read; `extras` carries structured fields a
    source knows so detectors need not re-parse. By convention: `extras["digests"]` lists
    digests read from fields (see monitor.detect.digests), and `extras["stats"]` holds
    counts that change on every fetch (seeders, grabs), which do not make a document
    "changed" and so are left out of its content hash.
    """

    target: str
    key: str
    url: str
    text: str
    title: str = ""
    author: str = ""
    posted_at: str | None = None
    links: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    # Evidence: the raw response the document was extracted from.
    snapshot: bytes = b""
    snapshot_url: str = ""
    fetched_at: str = ""

    @property
    def content_sha256(self) -> str:
        """Hash of what detectors see, so an unchanged document is not re-matched."""
        h = hashlib.sha256()
        stable = {k: v for k, v in self.extras.items() if k != VOLATILE_EXTRAS}
        extras = json.dumps(stable, sort_keys=True, default=str)
        for part in (self.title, self.author, self.text, "\n".join(self.links), extras):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()


@dataclass
class Hit:
    """A detector's finding in one document.

    `dedup_key` is stable across crawls: the same indicator seen again in the same place
    updates `last_seen` of the existing hit instead of making a new one.
    """

    kind: str
    severity: str
    indicator: str
    detector: str
    context: str
    model: str | None = None
    artifact: str | None = None
    recipient: str | None = None
    rule: str | None = None
    indicator_type: str | None = None
    score: float = 1.0
    # Which version of the rule or registry entry matched; part of the evidence.
    matcher_version: str = ""
    # Filled in by the crawler from the document.
    target: str = ""
    url: str = ""

    def dedup_key(self, document_key: str) -> str:
        parts = (self.kind, self.indicator.lower(), self.model or "", self.artifact or "",
                 self.rule or "", self.target, document_key)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def utcnow() -> str:
    """ISO 8601 in UTC to the second: sorts as text and reads well in SQL and JSON."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- detection (issue 15, detect part): what detectors read of the registry, as records and
# as the narrow seams the store implements, so `monitor.detect` never needs the store.


@dataclass(frozen=True)
class KnownDigest:
    """A registry entry as detectors need it: what a digest value points to."""

    algo: str
    value: str
    model: str
    artifact: str | None
    recipient: str | None
    source: str
    indicator_id: int
    release: str | None = None
    size: int | None = None       # bytes of the file it identifies, where known


class RegistryView(Protocol):
    """The registry as the document detectors read it, once per pass."""

    def known_digests(self) -> Mapping[str, Sequence[KnownDigest]]: ...

    def artifacts(self) -> Sequence[Mapping[str, Any]]: ...


class VerdictCache(Protocol):
    """Remembered weight-link verdicts, so a URL is scanned once per registry version.

    A verdict is a mapping with at least `verdict`, `model`, `score`, `bytes_read`,
    `details` (JSON text) and `registry_version` (the registry it was scanned against)."""

    def weight_scan(self, url: str) -> Mapping[str, Any] | None: ...

    def record_weight_scan(self, url: str, *, verdict: str, model: str | None = None,
                           score: float | None = None, bytes_read: int = 0,
                           error: str | None = None, details: str = "{}") -> None: ...


class WeightRegistry(RegistryView, VerdictCache, Protocol):
    """What the weight-link detector reads and writes: the fingerprints, digests and marks
    it compares with, their version, and its verdict cache."""

    def weight_print_version(self) -> int: ...

    def weight_prints(self, models: Sequence[str] = (), *,
                      with_recipient: bool = False) -> Sequence[Any]: ...

    def watermarks(self, model: str | None = None) -> Sequence[Mapping[str, Any]]: ...
