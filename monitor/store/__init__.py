"""The SQLite store: one file, one writer, readers never blocked.

Everything the daemon learns goes through here: target state, crawl runs, documents with
their evidence snapshots, hits and the alert outbox, and the registry of released
artifacts and their digests. A document, its hits and their outbox rows are written in one
transaction (a crawled page's documents all in one), so a crash at any point leaves either
all of them or none.

`Store` is a thin facade over one repository per concern (`runs`, `documents`, `hits`,
`outbox`, `registry`), each over the same connection; its methods are theirs, so callers
keep one object and the rules stay in the modules that own them (grouping in
`monitor.grouping`, health in `monitor.health`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from monitor.health import backoff_seconds
from monitor.migrations import MIGRATIONS
from monitor.models import Document, Hit, KnownDigest
from monitor.store.columns import HIT_COLUMNS, HIT_FIELDS
from monitor.store.connection import (
    BUSY_TIMEOUT_MS,
    Database,
    NeedsMigration,
    Reader,
    StorageFailure,
    StoreError,
    _connect,
    check_readable_schema,
    connect_readonly,
    migrate,
    on_readonly_media,
    schema_version,
    storage_error,
    writable,
)
from monitor.store.connection import statements as _statements
from monitor.store.documents import Detected, Documents, SavedDocument
from monitor.store.hits import HIT_SORTS, LABEL_SQL, Hits, HitSort, hit_cursor, parse_cursor
from monitor.store.outbox import DEFAULT_CHANNELS, QUEUES, Outbox
from monitor.store.registry import Registry
from monitor.store.runs import Runs

__all__ = ["BUSY_TIMEOUT_MS", "DEFAULT_CHANNELS", "HIT_COLUMNS", "HIT_FIELDS", "HIT_SORTS",
           "QUEUES", "Detected", "HitSort", "KnownDigest", "NeedsMigration", "SavedDocument",
           "StorageFailure", "Store", "StoreError", "_statements", "backoff_seconds",
           "connect_readonly", "on_readonly_media", "storage_error"]


class Store:
    HIT_COLUMNS = HIT_COLUMNS
    LABEL_SQL = LABEL_SQL
    hit_cursor = staticmethod(hit_cursor)
    parse_cursor = staticmethod(parse_cursor)

    def __init__(self, path: str | Path, *, readonly: bool = False):
        """Open (creating and migrating) the database; `readonly` opens an existing one
        for reading only, so a dry run or an analyst's query provably writes nothing, and
        a database on read-only media can still be read (`media_note` then says so)."""
        self.path = Path(path)
        self.readonly = readonly
        self.media_note: str | None = None
        if readonly:
            conn, self.media_note = connect_readonly(self.path)
            self.db: Database = Reader(conn)
            try:
                conn.execute("PRAGMA query_only = ON")
                check_readable_schema(self.db, self.path, MIGRATIONS)
            except BaseException:
                conn.close()
                raise
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Looked up here, not in `connection`, so a test can swap it for one that
                # caps the file (a full disk).
                conn = _connect(self.path)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                # NORMAL is durable against a killed process in WAL mode, which is the
                # crash the daemon must survive; FULL would only add power-loss durability.
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"{self.path}: cannot open database: {exc}") from None
            self.db = writable(conn)
            self.migrate()
        self.runs = Runs(self.db)
        self.outbox_queue = Outbox(self.db)
        self.hit_store = Hits(self.db, self.outbox_queue)
        self.documents = Documents(self.db, self.hit_store)
        self.registry = Registry(self.db)
        self._delegate()

    def _delegate(self) -> None:
        """The facade: each public method is its repository's."""
        runs, outbox, hits = self.runs, self.outbox_queue, self.hit_store
        documents, registry = self.documents, self.registry
        # runs and target state
        self.start_run = runs.start_run
        self.finish_run = runs.finish_run
        self.close_abandoned_runs = runs.close_abandoned_runs
        self.target_state = runs.target_state
        self.all_target_states = runs.all_target_states
        self.cursor = runs.cursor
        self.set_cursor = runs.set_cursor
        # documents and snapshots
        self.document_hash = documents.document_hash
        self.document_hashes = documents.document_hashes
        self.touch_document = documents.touch_document
        self.touch_documents = documents.touch_documents
        self.snapshot = documents.snapshot
        self.document = documents.document
        self.count_documents = documents.count_documents
        self.iter_documents = documents.iter_documents
        # hits and their queries
        self.hits = hits.hits
        self.hits_with_release = hits.hits_with_release
        self.incident_rows = hits.incident_rows
        self.incident_hits = hits.incident_hits
        self.hit_ids_by_document = hits.hit_ids_by_document
        self.hit = hits.hit
        self.triage = hits.triage
        self.triage_matching = hits.triage_matching
        self.names_found = hits.names_found
        self.name_found = hits.name_found
        self.triage_history = hits.triage_history
        self.search = hits.search
        # outbox, notices, silences and alert groups
        self.due_alerts = outbox.due_alerts
        self.due_notices = outbox.due_notices
        self.mark_sending = outbox.mark_sending
        self.mark_sent = outbox.mark_sent
        self.mark_retry = outbox.mark_retry
        self.retry_now = outbox.retry_now
        self.notices = outbox.notices
        self.outbox = outbox.outbox
        self.add_silence = outbox.add_silence
        self.silences = outbox.silences
        self.expire_silence = outbox.expire_silence
        self.hold_alerts = outbox.hold_alerts
        self.groups_sent = outbox.groups_sent
        self.group_sent_at = outbox.group_sent_at
        self.open_alerted_hits = outbox.open_alerted_hits
        self.mark_group_sent = outbox.mark_group_sent
        # registry
        self.add_model = registry.add_model
        self.add_artifact = registry.add_artifact
        self.add_folder_cids = registry.add_folder_cids
        self.add_short_hashes = registry.add_short_hashes
        self.artifacts = registry.artifacts
        self.add_indicator = registry.add_indicator
        self.add_imported_file = registry.add_imported_file
        self.known_size = registry.known_size
        self.imported_files = registry.imported_files
        self.imported_files_version = registry.imported_files_version
        self.models = registry.models
        self.indicators = registry.indicators
        self.registry_counts = registry.registry_counts
        self.add_weight_print = registry.add_weight_print
        self.weight_prints = registry.weight_prints
        self.printed_tensors = registry.printed_tensors
        self.weight_print_version = registry.weight_print_version
        self.weight_scan = registry.weight_scan
        self.record_weight_scan = registry.record_weight_scan
        self.add_watermark = registry.add_watermark
        self.watermarks = registry.watermarks
        self.known_digests = registry.known_digests

    def save_document(self, doc: Document, hits: Iterable[Hit], run_id: int | None, *,
                      alert: bool = True, channels: Sequence[str] = DEFAULT_CHANNELS,
                      now: str | None = None, content_sha256: str | None = None
                      ) -> tuple[SavedDocument, list[int]]:
        """`Documents.save_document`; each new hit is queued on `channels` (the
        configured `AlertSettings.channels`), on none unless `alert`."""
        return self.documents.save_document(doc, hits, run_id,
                                            channels=channels if alert else (), now=now,
                                            content_sha256=content_sha256)

    def save_documents(self, found: Sequence[Detected], run_id: int | None, *,
                       alert: bool = True, channels: Sequence[str] = DEFAULT_CHANNELS,
                       now: str | None = None) -> list[tuple[SavedDocument, list[int]]]:
        """`Documents.save_documents`: a crawled page's documents in one transaction,
        queued as `save_document` queues one."""
        return self.documents.save_documents(found, run_id, channels=channels if alert else (),
                                             now=now)

    def record_hits(self, document_id: int, doc: Document, hits: Iterable[Hit], *,
                    alert: bool = True, channels: Sequence[str] = DEFAULT_CHANNELS,
                    now: str | None = None) -> list[int]:
        """`Hits.record_hits`; new hits are queued on `channels`, on none unless `alert`."""
        return self.hit_store.record_hits(document_id, doc, hits,
                                          channels=channels if alert else (), now=now)

    @property
    def storage_failure(self) -> StorageFailure | None:
        """The last storage failure (disk full, read-only media) any write met, even one
        a caller caught to carry on."""
        failure = getattr(self.db.conn, "failure", None)
        return failure if isinstance(failure, StorageFailure) else None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema ------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return schema_version(self.db)

    def migrate(self) -> None:
        migrate(self.db, self.path, MIGRATIONS)

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])
