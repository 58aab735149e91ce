"""Domain objects that flow through the pipeline: documents in, hits out.

They are plain dataclasses so every stage can be tested without the others, and so the
store decides alone how they are persisted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Protocol, TypedDict, overload

if TYPE_CHECKING:
    from fingerprints.weightprint import WeightPrint

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


# --- a document's file list: `extras["file_list"]` --------------------------------------

FILE_LIST = "file_list"
# What a file list is, as a hit's evidence names it ("name and size (GitHub release
# assets)"): a .torrent's file list (from an index's download or a Torznab item), a Torznab
# item's total size alone, a torrent's metadata fetched from the DHT, a GitHub release's
# assets, files attached to a Telegram message, a file host's folder listing.
FileListLabel = Literal["torrent file list", "torrent listing", "DHT metadata",
                        "GitHub release assets", "Telegram attachment", "file host listing"]


class ListedFile(TypedDict):
    """One listed file: its exact size (`length`, bytes), or a size shown only rounded
    (a Telegram attachment's "1.7 MB": `size_text`, and `size_min`..`size_max`, the byte
    range it stands for, both ends included)."""

    path: str  # as listed, folders included ("heron7b-leak/model.safetensors")
    length: NotRequired[int]
    size_text: NotRequired[str]
    size_min: NotRequired[int | None]
    size_max: NotRequired[int | None]
    pieces_root: NotRequired[str | None]  # a v2 torrent's, for the digests detector


class FileList(TypedDict):
    """The files a document lists with their sizes, which manifest matching compares with
    the released files (`monitor.detect.manifest`). One key for every source that hands a
    file list, whatever it lists; `label` says what, for the evidence and the hit's kind
    (FILE_LIST_KINDS)."""

    label: FileListLabel
    name: str  # the torrent's, release's or message's name, as a hit's context shows it
    files: NotRequired[list[ListedFile]]
    total_size: NotRequired[int]  # bytes in all, where the source states it exactly


# The kind of a hit on a file list: a torrent's is a `torrent` hit; a file listed where it
# can be downloaded as it is (a GitHub release asset, an attachment, a file host's file) is
# the released file itself posted there, a `weights` hit, as the weights detector's when it
# reads the file's rows.
FILE_LIST_KINDS: dict[FileListLabel, HitKind] = {
    "torrent file list": "torrent", "torrent listing": "torrent", "DHT metadata": "torrent",
    "GitHub release assets": "weights", "Telegram attachment": "weights",
    "file host listing": "weights"}


@dataclass
class Document:
    """One unit of content from a source: a post, a torrent listing row, a hub record.

    `key` identifies the document within its target across crawls (a post number, a
    torrent URL); `text` is what detectors read; `extras` carries structured fields a
    source knows so detectors need not re-parse. By convention: `extras["digests"]` lists
    digests read from fields (see monitor.detect.digests), `extras["file_list"]` the files
    it lists with their sizes (`FileList`), and `extras["stats"]` holds counts that change
    on every fetch (seeders, grabs), which do not make a document "changed" and so are left
    out of its content hash.
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


# --- alerting (issue 15): the time, handed in ------------------------------------------

# What code that decides by the time takes instead of reading the wall clock itself, so a
# test can hand it a clock of its own.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock: what the outermost callers (CLI, daemon) hand in."""
    return datetime.now(UTC)


# --- store records (issue 15, store part) ---------------------------------------------
# What the store returns, as typed rows: the column names are the database's, so a row
# reads as the table does, and `--format json` prints them as they are.

Severity = Literal["critical", "high", "medium", "low"]
HitKind = Literal["mention", "hash", "torrent", "weights", "watermark"]
HitStatus = Literal["new", "acknowledged", "resolved", "false_positive"]
RunStatus = Literal["running", "ok", "failed", "interrupted"]
QueueStatus = Literal["pending", "sending", "sent", "failed"]
NoticeKind = Literal["target_down", "target_recovered"]
TargetHealth = Literal["disabled", "down", "failing", "ok", "new"]
SilenceState = Literal["active", "pending", "ended", "expired"]
# The verdicts of a remote weight scan (`monitor.scan.VERDICTS`).
ScanVerdict = Literal["match", "related", "no_match", "inconclusive", "unknown_format", "error"]


def severity_level(severity: str) -> int:
    """The severity as the database orders it (the `hits.severity_level` column of
    migration 11): critical 4 down to low 1, 0 for anything unknown, so higher is worse.
    The same order as `severity_rank`, counted from the other end."""
    return len(SEVERITIES) - severity_rank(severity)


def severity_of_level(level: int) -> str:
    """The severity `severity_level` gave `level`; "unknown" for 0."""
    return SEVERITIES[len(SEVERITIES) - level] if 0 < level <= len(SEVERITIES) else "unknown"


class HitRow(TypedDict):
    """A hit as every query that lists hits selects it (`monitor.store.hits.HIT_COLUMNS`)."""

    id: int
    kind: HitKind
    severity: Severity
    model: str | None
    artifact: str | None
    recipient: str | None
    indicator: str
    indicator_type: str | None
    rule: str | None
    detector: str
    matcher_version: str
    score: float
    target: str
    url: str
    first_seen: str
    last_seen: str
    seen_count: int
    status: HitStatus
    context: str
    document_id: int | None


class ReleasedHit(HitRow):
    """A hit with the release it is of (`monitor.grouping.HIT_RELEASE`)."""

    release: str | None


class AlertRow(ReleasedHit):
    """An outbox row with its hit and its document's evidence: what an alert is composed
    from."""

    dedup_key: str
    outbox_id: int
    attempts: int
    queued_at: str
    outbox_status: QueueStatus
    outbox_message_id: str | None
    snapshot_sha256: str | None
    doc_title: str | None
    doc_author: str | None
    doc_posted_at: str | None


class IncidentAggregate(TypedDict):
    """One incident summed in SQL (`Store.incident_rows`): its label values in `group_by`
    order, hit counts by status, and the distinct kinds, recipients and hit ids."""

    labels: dict[str, str]
    hits: int
    open: int
    statuses: dict[str, int]
    locations: int
    kinds: list[str]
    recipients: list[str]
    first_seen: str
    last_seen: str
    severity_level: int
    hit_ids: list[int]


class TargetStateRow(TypedDict, total=False):
    """A target's crawl state; empty ({}) for a target never crawled."""

    name: str
    cursor: str | None
    last_run_at: str | None
    last_success_at: str | None
    consecutive_failures: int
    last_error: str | None
    backoff_until: str | None
    down_since: str | None
    documents_count: int
    hits_count: int


class NoticeRow(TypedDict):
    id: int
    kind: NoticeKind
    target: str
    created_at: str
    failures: int
    error: str | None
    status: QueueStatus
    attempts: int
    next_attempt_at: str
    sent_at: str | None
    last_error: str | None
    message_id: str | None


class DueNotice(NoticeRow):
    """A notice with its target's state, what a health email is composed from."""

    last_attempt_at: str | None
    last_success_at: str | None
    last_run_at: str | None
    consecutive_failures: int | None


class OutboxRow(TypedDict):
    id: int
    hit_id: int
    channel: str
    status: QueueStatus
    attempts: int
    created_at: str
    next_attempt_at: str
    sent_at: str | None
    last_error: str | None
    message_id: str | None
    silenced_by: int | None
    severity: Severity
    kind: HitKind
    model: str | None
    url: str


class TriageRow(TypedDict):
    status: HitStatus
    note: str | None
    by: str
    at: str


class SilenceRow(TypedDict):
    id: int
    matchers: str          # JSON list of matcher strings
    reason: str
    created_by: str
    created_at: str
    starts_at: str
    ends_at: str
    expired_at: str | None


class _DocumentFields(TypedDict):
    """What every stored document's row carries, however it is read back."""

    id: int
    target: str
    key: str
    url: str
    title: str | None
    author: str | None
    posted_at: str | None
    fetched_at: str | None


class DocumentRow(_DocumentFields):
    """A stored document's metadata (`Store.document`); `extras` is JSON text."""

    first_seen: str
    last_seen: str
    content_sha256: str
    snapshot_sha256: str | None
    extras: str | None


class StoredDocument(_DocumentFields):
    """A stored document as a rematch reads it back; links and extras are JSON text."""

    text: str | None
    links: str | None
    extras: str | None


class ArtifactRow(TypedDict):
    id: int
    model: str
    name: str
    path: str | None
    size: int
    sha256: str
    sha1: str
    md5: str
    pieces_root: str | None
    shards: str | None     # JSON list
    release: str | None
    recipient: str | None
    registered_at: str


class IndicatorRow(TypedDict):
    id: int
    algo: str
    value: str
    model: str
    artifact_id: int | None
    recipient: str | None
    name: str | None
    size: int | None
    source: str
    added_at: str


class ImportedFileRow(TypedDict):
    """A released file's name and size as imported indicators state them (the name from
    one source and the size from another, when both describe the same digest)."""
    model: str
    name: str
    size: int
    # 'md5' | 'sha256' | ... of the digest the name and size describe; 'btih' | 'btmh': a
    # torrent's name and total size; None: a file no digest was given for (a size list).
    algo: str | None
    ref: str  # "indicator:ID" or "file:ID", for the hit's matcher_version


class WatermarkRow(TypedDict):
    id: int
    model: str
    recipient: str
    key: bytes
    key_id: str
    version: int
    densities: dict[str, float]
    artifact_id: int | None
    issued_at: str


class WeightScanRow(TypedDict):
    url: str
    scanned_at: str
    verdict: ScanVerdict
    model: str | None
    score: float | None
    bytes_read: int
    error: str | None
    details: str
    registry_version: int


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

    def imported_files(self) -> Sequence[ImportedFileRow]: ...


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

    @overload
    def weight_prints(self, models: Sequence[str] = (), *, with_recipient: Literal[False] = False
                      ) -> Sequence[tuple[str, str, WeightPrint]]: ...

    @overload
    def weight_prints(self, models: Sequence[str] = (), *, with_recipient: Literal[True]
                      ) -> Sequence[tuple[str, str, WeightPrint, str | None]]: ...

    def watermarks(self, model: str | None = None) -> Sequence[Mapping[str, Any]]: ...
