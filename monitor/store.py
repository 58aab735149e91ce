"""The SQLite store: one file, one writer, readers never blocked.

Everything the daemon learns goes through here: target state, crawl runs, documents with
their evidence snapshots, hits and the alert outbox, and the registry of released
artifacts and their digests. A document, its hits and their outbox rows are written in one
transaction, so a crash at any point leaves either all of them or none.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from fingerprints.weightprint import TensorPrint, WeightPrint
from monitor.migrations import MIGRATIONS
from monitor.models import (
    HIT_STATUSES,
    OPEN_STATUSES,
    SEVERITIES,
    Document,
    Hit,
    KnownDigest,
    utcnow,
)

BUSY_TIMEOUT_MS = 10_000


class StoreError(Exception):
    """A database that cannot be opened or is newer than this program: one line naming
    the file and what to do."""


class StorageFailure(StoreError):
    """The storage under the database failed or cannot be written (disk full, read-only
    media, I/O error): not the user's mistake, and nothing committed before is lost."""


class NeedsMigration(StoreError):
    """A read-only open of a database an older weightwatch wrote: reading it as it is
    could misread it, and migrating it is a write."""


# SQLite's primary result codes that say the storage failed, not the statement.
SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 8, 10, 13, 14


def storage_error(path: Path, exc: sqlite3.Error) -> StorageFailure | None:
    """The one-line StoreError for a storage failure under `path`, or None if `exc` is
    about the statement (a syntax error, a constraint) and belongs to the caller.

    Every statement the store runs passes through here (`_Connection`), so a full disk
    is the same line in `crawl`, `run`, `register` or a triage command, and a caller
    that logs unexpected exceptions with their traceback never sees one for it."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    # Growing the -shm or -wal on a full disk is reported as an I/O error.
    if primary == SQLITE_FULL or (primary == SQLITE_IOERR and _nearly_full(path)):
        return StorageFailure(f"{path}: disk full ({exc}); what was committed before is "
                              f"kept: free space on the filesystem holding it and run the "
                              f"command again")
    if primary in (SQLITE_READONLY, SQLITE_CANTOPEN) and on_readonly_media(path):
        return StorageFailure(f"{path}: cannot write: the database is on read-only media "
                              f"({exc}); run this command where it is writable (hits, search, "
                              f"report and the other reading commands work as it is)")
    if primary == SQLITE_READONLY:
        return StorageFailure(f"{path}: cannot write ({exc}); check the permissions of the "
                              f"file, its -wal and -shm files and its folder")
    if primary == SQLITE_IOERR:
        return StorageFailure(f"{path}: I/O error ({exc}); check the disk holding it, then "
                              f"run the command again")
    return None


# Less free space than this, and an I/O error is taken for the disk being full.
NEARLY_FULL_BYTES = 1 << 20


def _nearly_full(path: Path) -> bool:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES


def on_readonly_media(path: Path) -> bool:
    """Whether the filesystem holding `path` is mounted read-only. Asked of the
    filesystem, not of permissions: root may write to any file it can reach, never to a
    read-only mount."""
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _translating(method: Any) -> Any:
    """`method` with its storage failures raised as StorageFailure (`storage_error`)."""

    def call(self: _Connection, *args: Any) -> Any:
        try:
            return method(self, *args)
        except sqlite3.Error as exc:
            error = storage_error(self.store_path, exc)
            if error is None:
                raise
            self.failure = error
            raise error from None

    return call


class _Connection(sqlite3.Connection):
    """A connection whose storage failures are StorageFailure (see `storage_error`).
    sqlite-utils runs every statement, BEGIN and COMMIT included, through `execute`."""

    store_path: Path
    # The last storage failure raised here: a caller that records a failed run and goes
    # on (the crawler) still lets the command end with the one line saying why.
    failure: StorageFailure | None = None

    execute = _translating(sqlite3.Connection.execute)
    executemany = _translating(sqlite3.Connection.executemany)
    executescript = _translating(sqlite3.Connection.executescript)
    commit = _translating(sqlite3.Connection.commit)


def _connect(path: Path, uri: str | None = None, *,
             factory: type[sqlite3.Connection] = _Connection, **kwargs: Any) -> Any:
    conn = sqlite3.connect(uri or str(path), uri=uri is not None,
                           timeout=BUSY_TIMEOUT_MS / 1000, factory=factory, **kwargs)
    if isinstance(conn, _Connection):
        conn.store_path = path
    return conn


def connect_readonly(path: Path, **kwargs: Any) -> tuple[sqlite3.Connection, str | None]:
    """A connection that can only read `path`, and a note to tell the user how it was
    opened when that is not the usual way (None when it is).

    `mode=ro` reads a database the daemon is writing, WAL included, but needs the
    shared-memory file (-shm), which it can neither create nor grow on read-only media or
    a full disk. There the file is opened `immutable=1` (SQLite then neither locks nor
    looks at the WAL), which is exact only while there is no write-ahead log to miss: a
    non-empty -wal is refused. (A writer could start a log while it is read, but neither
    medium lets one write.)
    """
    if not path.exists():
        raise StoreError(f"{path}: no such database")
    # A URI built from the resolved path, so a `?` or `#` in the name stays in the name.
    base = path.resolve().as_uri()
    readonly_media = on_readonly_media(path)
    conn = _connect(path, f"{base}?mode=ro", **kwargs)
    try:
        conn.execute("PRAGMA user_version")  # the file is opened lazily, here
    except (sqlite3.Error, StoreError) as exc:
        conn.close()
        failed: BaseException = exc
    else:
        return conn, "database on read-only media: opened read-only" if readonly_media else None
    wal = path.with_name(path.name + "-wal")
    if not (readonly_media or isinstance(failed, StorageFailure)):
        if isinstance(failed, StoreError):
            raise failed
        raise StoreError(f"{path}: cannot open database: {failed}") from None
    why = "database on read-only media" if readonly_media else "no space for its -shm file"
    pending = wal.stat().st_size if wal.exists() else 0
    if pending:
        raise StorageFailure(f"{path}: {why}, and {pending} bytes of writes are still in "
                             f"{wal.name}, which cannot be read without it; copy the database "
                             f"with its -wal file to writable storage and read it there")
    conn = _connect(path, f"{base}?mode=ro&immutable=1", **kwargs)
    try:
        conn.execute("PRAGMA user_version")
    except (sqlite3.Error, StoreError) as exc:
        conn.close()
        raise StoreError(f"{path}: cannot open database: {exc}") from None
    return conn, f"{why}: opened read-only (immutable)"


@dataclass
class SavedDocument:
    id: int
    is_new: bool
    changed: bool


@dataclass(frozen=True)
class HitSort:
    """An order `Store.hits` lists hits in. Its key ends with the id, so the order is
    total, and runs all one way, so "after this row" is one row-value comparison that an
    index of migration 11 seeks to: a deep page costs what the first one does."""

    key: tuple[str, ...]
    descending: bool


# `hits --sort`; "severity" (worst, then newest) is the default and was the only order.
HIT_SORTS: dict[str, HitSort] = {
    "severity": HitSort(("severity_level", "first_seen", "id"), descending=True),
    "newest": HitSort(("first_seen", "id"), descending=True),
    "oldest": HitSort(("first_seen", "id"), descending=False),
    "score": HitSort(("score", "first_seen", "id"), descending=True),
    "last-seen": HitSort(("last_seen", "id"), descending=True),
}


def _words_query(text: str) -> str | None:
    """`hits --text` as an FTS5 query on the indicator, context and URL: the words of
    `text` as one phrase whose last word may be cut short (the start of a digest, as the
    table shows it, is found); None if `text` has no letters or digits to look up."""
    if not any(ch.isalnum() for ch in text):
        return None
    return '{indicator context url} : "' + text.replace('"', '""') + '"*'


def _cursor_value(column: str, text: str) -> Any:
    """One leading key value of a cursor; ValueError if it is not one `hit_cursor` wrote.
    A severity cursor holds the rank (0 critical) as before --sort existed; the key
    column holds the level (4 critical), so higher is worse in one descending key."""
    if column == "severity_level":
        if not (text.isdigit() and int(text) <= len(SEVERITIES)):
            raise ValueError(text)
        return len(SEVERITIES) - int(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


class Store:
    def __init__(self, path: str | Path, *, readonly: bool = False):
        """Open (creating and migrating) the database; `readonly` opens an existing one
        for reading only, so a dry run or an analyst's query provably writes nothing, and
        a database on read-only media can still be read (`media_note` then says so)."""
        self.path = Path(path)
        self.readonly = readonly
        self.media_note: str | None = None
        # Where each new hit is alerted: one outbox row per channel (the CLI adds
        # "webhook" when [alerts.webhook] is configured).
        self.channels: tuple[str, ...] = ("email",)
        if readonly:
            conn, self.media_note = connect_readonly(self.path)
            self.db = sqlite_utils.Database(conn)
            try:
                conn.execute("PRAGMA query_only = ON")
                self._check_readable_schema()
            except BaseException:
                conn.close()
                raise
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable against a killed process in WAL mode, which is the crash
            # the daemon must survive; FULL would only add power-loss durability.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open database: {exc}") from None
        self.db = sqlite_utils.Database(conn)
        self.migrate()

    def _check_readable_schema(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: database schema {version} is newer than this "
                             f"weightwatch (knows {len(MIGRATIONS)}); upgrade weightwatch")
        if version < len(MIGRATIONS):
            where = ("it is on read-only media, so copy it to writable storage and run"
                     if on_readonly_media(self.path) else "run")
            raise NeedsMigration(f"{self.path}: database schema {version}, this weightwatch "
                                 f"needs {len(MIGRATIONS)}; {where} any command that writes "
                                 f"(e.g. crawl) to migrate it")

    @property
    def storage_failure(self) -> StorageFailure | None:
        """The last storage failure (disk full, read-only media) any write met, even one
        a caller caught to carry on."""
        return getattr(self.db.conn, "failure", None)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema ------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: database schema {version} is newer than this "
                             f"weightwatch (knows {len(MIGRATIONS)}); upgrade weightwatch")
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db.atomic():
                for statement in _statements(sql):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    def integrity_check(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]

    # --- runs and target state ---------------------------------------------------------

    def start_run(self, target: str) -> int:
        with self.db.atomic():
            return self.db["crawl_runs"].insert({"target": target, "started_at": utcnow()}).last_pk

    def finish_run(self, run_id: int, *, status: str, documents_seen: int = 0,
                   documents_new: int = 0, documents_changed: int = 0, hits_new: int = 0,
                   error: str | None = None, down_after: int = 3) -> str | None:
        """Record a run's end and move the target's health; returns 'target_down' or
        'target_recovered' when this run crossed that line (and a notice was queued).

        A failed run backs the target off on an escalating ladder; the `down_after`-th
        failure in a row queues one down notice, and the first success after it one
        recovery notice. An interrupted run (shutdown) is neither success nor failure.
        """
        run = self.db["crawl_runs"].get(run_id)
        now = utcnow()
        transition = None
        with self.db.atomic():
            self.db["crawl_runs"].update(run_id, {
                "finished_at": now, "status": status, "documents_seen": documents_seen,
                "documents_new": documents_new, "documents_changed": documents_changed,
                "hits_new": hits_new, "error": error})
            state = self.target_state(run["target"])
            failures = state.get("consecutive_failures", 0)
            values: dict[str, Any] = {
                "name": run["target"], "last_run_at": run["started_at"],
                "documents_count": state.get("documents_count", 0) + documents_new,
                "hits_count": state.get("hits_count", 0) + hits_new}
            if status == "ok":
                values.update(last_success_at=now, consecutive_failures=0, last_error=None,
                              backoff_until=None, down_since=None)
                if state.get("down_since"):
                    transition = "target_recovered"
            elif status == "failed":
                failures += 1
                values.update(consecutive_failures=failures, last_error=error,
                              backoff_until=_later(now, backoff_seconds(failures)))
                if failures == down_after:
                    values["down_since"] = now
                    transition = "target_down"
            self.db["target_state"].upsert(values, pk="name")
            if transition:
                self.db["notices"].insert({
                    "kind": transition, "target": run["target"], "created_at": now,
                    "failures": failures, "error": error, "next_attempt_at": now})
        return transition

    def close_abandoned_runs(self) -> int:
        """Runs left 'running' by a killed process are marked interrupted at start-up."""
        with self.db.atomic():
            cur = self.db.execute(
                "UPDATE crawl_runs SET status = 'interrupted', finished_at = ? "
                "WHERE status = 'running'", [utcnow()])
            return cur.rowcount

    def target_state(self, name: str) -> dict[str, Any]:
        rows = list(self.db.query("SELECT * FROM target_state WHERE name = ?", [name]))
        return rows[0] if rows else {}

    def all_target_states(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.db.query("SELECT * FROM target_state")}

    def cursor(self, target: str) -> dict[str, Any]:
        state = self.target_state(target)
        return json.loads(state["cursor"]) if state.get("cursor") else {}

    def set_cursor(self, target: str, cursor: dict[str, Any]) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO target_state (name, cursor) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET cursor = excluded.cursor",
                [target, json.dumps(cursor, sort_keys=True)])

    # --- documents, hits and the outbox ------------------------------------------------

    def document_hash(self, target: str, key: str) -> str | None:
        row = self.db.execute("SELECT content_sha256 FROM documents WHERE target = ? AND key = ?",
                              [target, key]).fetchone()
        return row[0] if row else None

    def touch_document(self, target: str, key: str) -> None:
        """An unchanged document seen again: it and its hits were still there now."""
        now = utcnow()
        with self.db.atomic():
            row = self.db.execute("SELECT id FROM documents WHERE target = ? AND key = ?",
                                  [target, key]).fetchone()
            if row is None:
                return
            self.db.execute("UPDATE documents SET last_seen = ? WHERE id = ?", [now, row[0]])
            self.db.execute("UPDATE hits SET last_seen = ?, seen_count = seen_count + 1 "
                            "WHERE document_id = ?", [now, row[0]])

    def save_document(self, doc: Document, hits: Iterable[Hit], run_id: int | None,
                      *, alert: bool = True) -> tuple[SavedDocument, list[int]]:
        """Store a document, its snapshot, its hits and their outbox rows atomically.

        Returns the document and the ids of hits that are new (first seen now); hits seen
        before only get `last_seen` and `seen_count` moved, and are not alerted again.
        """
        now = utcnow()
        with self.db.atomic():
            snapshot_sha = self._save_snapshot(doc) if doc.snapshot else None
            saved = self._upsert_document(doc, snapshot_sha, run_id, now)
            new_hits = [hit_id for hit in hits
                        if (hit_id := self._record_hit(hit, doc, saved.id, run_id, now, alert))]
        return saved, new_hits

    def _save_snapshot(self, doc: Document) -> str:
        sha = hashlib.sha256(doc.snapshot).hexdigest()
        self.db.execute(
            "INSERT INTO snapshots (sha256, url, fetched_at, size, body) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(sha256) DO NOTHING",
            [sha, doc.snapshot_url or doc.url, doc.fetched_at or utcnow(), len(doc.snapshot),
             zlib.compress(doc.snapshot, 6)])
        return sha

    def _upsert_document(self, doc: Document, snapshot_sha: str | None, run_id: int | None,
                         now: str) -> SavedDocument:
        content_sha = doc.content_sha256
        row = self.db.execute("SELECT id, content_sha256 FROM documents WHERE target = ? AND key = ?",
                              [doc.target, doc.key]).fetchone()
        values = {
            "url": doc.url, "title": doc.title, "author": doc.author, "posted_at": doc.posted_at,
            "text": doc.text, "links": json.dumps(doc.links), "extras": json.dumps(doc.extras, sort_keys=True),
            "content_sha256": content_sha, "snapshot_sha256": snapshot_sha,
            "fetched_at": doc.fetched_at or now, "last_seen": now, "run_id": run_id,
        }
        if row is None:
            pk = self.db["documents"].insert(
                {"target": doc.target, "key": doc.key, "first_seen": now, **values}).last_pk
            return SavedDocument(pk, is_new=True, changed=True)
        self.db["documents"].update(row[0], values)
        return SavedDocument(row[0], is_new=False, changed=row[1] != content_sha)

    def _record_hit(self, hit: Hit, doc: Document, document_id: int, run_id: int | None,
                    now: str, alert: bool, touch: bool = True) -> int | None:
        """Insert a new hit and queue its alert; an existing one (same dedup key) only has
        `last_seen` and `seen_count` moved, and not even that unless `touch`."""
        key = hit.dedup_key(doc.key)
        existing = self.db.execute("SELECT id FROM hits WHERE dedup_key = ?", [key]).fetchone()
        if existing:
            if not touch:
                return None
            self.db.execute(
                "UPDATE hits SET last_seen = ?, seen_count = seen_count + 1, document_id = ? "
                "WHERE id = ?", [now, document_id, existing[0]])
            return None
        # An analyst said this indicator at this URL is a false positive: record what is
        # found again, never alert it.
        dismissed = self.db.execute(
            "SELECT 1 FROM hits WHERE url = ? AND indicator = ? AND status = 'false_positive' "
            "LIMIT 1", [doc.url, hit.indicator]).fetchone() is not None
        hit_id = self.db["hits"].insert({
            "status": "false_positive" if dismissed else "new",
            "dedup_key": key, "kind": hit.kind, "severity": hit.severity, "model": hit.model,
            "artifact": hit.artifact, "recipient": hit.recipient, "indicator": hit.indicator,
            "indicator_type": hit.indicator_type, "rule": hit.rule, "detector": hit.detector,
            "matcher_version": hit.matcher_version, "score": hit.score, "context": hit.context,
            "target": doc.target, "url": doc.url, "document_id": document_id, "run_id": run_id,
            "first_seen": now, "last_seen": now,
        }).last_pk
        if alert and not dismissed:
            for channel in self.channels:
                self.db["outbox"].insert({"hit_id": hit_id, "channel": channel,
                                          "created_at": now, "next_attempt_at": now})
        return hit_id

    def record_hits(self, document_id: int, doc: Document, hits: Iterable[Hit], *,
                    alert: bool = True) -> list[int]:
        """Record hits found later in an already stored document (a rematch), atomically
        with their outbox rows; returns the ids of the new ones.

        The document row is not rewritten, and hits already recorded (same dedup key) are
        left exactly as they are: nobody saw them again, the registry merely grew.
        """
        now = utcnow()
        with self._write_transaction():
            return [hit_id for hit in hits
                    if (hit_id := self._record_hit(hit, doc, document_id, None, now, alert,
                                                   touch=False))]

    @contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """A transaction that takes the write lock at once (BEGIN IMMEDIATE), waiting for
        it up to the busy timeout. One that reads first (a dedup lookup) and writes after
        would instead fail outright if another process (the daemon) wrote in between."""
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.rollback()
            raise
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self.db.conn.rollback()
            raise

    def snapshot(self, sha256: str) -> bytes | None:
        row = self.db.execute("SELECT body FROM snapshots WHERE sha256 = ?", [sha256]).fetchone()
        return zlib.decompress(row[0]) if row else None

    # --- reading hits --------------------------------------------------------------------

    HIT_COLUMNS = ("id, kind, severity, model, artifact, recipient, indicator, indicator_type, "
                   "rule, detector, matcher_version, score, target, url, first_seen, last_seen, "
                   "seen_count, status, context, document_id")

    # The release a hit is of, for alert groups and incidents: its artifact's, else the
    # model's when the model has exactly one (a mention or a converted copy names no file,
    # but with one release out there is no doubt which one leaked).
    HIT_RELEASE = (
        "COALESCE((SELECT a.release FROM artifacts a WHERE a.model = h.model "
        "AND a.name = h.artifact AND a.release IS NOT NULL ORDER BY a.id LIMIT 1), "
        "(SELECT MIN(a.release) FROM artifacts a WHERE a.model = h.model "
        "HAVING COUNT(DISTINCT a.release) = 1))")

    # Each `alerts.group_by` label of a hit in SQL, "" when it has none, as
    # monitor.alerts.hit_label reads it from a row: the alerter groups the rows it sends,
    # analysts' incidents are grouped here over the whole table, and both agree.
    LABEL_SQL = {
        "model": "COALESCE(h.model, '')",
        "release": f"COALESCE({HIT_RELEASE}, '')",
        "infohash": "CASE WHEN substr(h.indicator_type, 1, 4) IN ('btih', 'btmh') "
                    "THEN h.indicator ELSE '' END",
        "artifact": "COALESCE(h.artifact, '')",
        "recipient": "COALESCE(h.recipient, '')",
        "kind": "h.kind",
        "severity": "h.severity",
        "target": "h.target",
    }

    # An outbox row with its hit, the hit's release and its document's evidence: what an
    # alert is composed from.
    ALERT_ROWS = (
        "SELECT o.id AS outbox_id, o.attempts, o.created_at AS queued_at, "
        "o.status AS outbox_status, o.message_id AS outbox_message_id, h.*, "
        f"{HIT_RELEASE} AS release, d.snapshot_sha256, d.title AS doc_title, "
        "d.author AS doc_author, d.posted_at AS doc_posted_at "
        "FROM outbox o JOIN hits h ON h.id = o.hit_id "
        "LEFT JOIN documents d ON d.id = h.document_id")

    def hits(self, *, since: str | None = None, until: str | None = None,
             severity: Iterable[str] = (), kind: Iterable[str] = (), model: str | None = None,
             status: Iterable[str] = (), target: str | None = None,
             recipient: str | None = None, text: str | None = None, sort: str = "severity",
             after: tuple[Any, ...] | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Hits in `sort` order (`HIT_SORTS`; by default worst, then newest). `text`
        finds words of the indicator, context or URL through the full-text index, so it
        costs no scan of the hits (`_words_query`; text without letters or digits is
        matched as a plain substring); `after` is the keyset cursor (`parse_cursor` of
        the previous page's last `hit_cursor`), so deep pages cost what the first one does."""
        order = HIT_SORTS[sort]
        where, params = [], []
        for clause, value in (("first_seen >= ?", since), ("first_seen < ?", until)):
            if value:
                where.append(clause)
                params.append(value)
        # By level rather than by name, so the indexes that hold the default order serve.
        levels = [len(SEVERITIES) - SEVERITIES.index(s) for s in severity]
        for column, values in (("severity_level", levels), ("kind", kind), ("status", status)):
            values = list(values)
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        for column, value in (("model", model), ("target", target), ("recipient", recipient)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if text:
            words = _words_query(text)
            if words:
                # The unary + stops SQLite from fetching every match by id and sorting
                # them all (0.6 s for a word in 40% of a million hits): it walks the
                # order's index instead, testing ids against the matches, and stops at
                # the end of the page.
                where.append("+id IN (SELECT rowid FROM hits_fts WHERE hits_fts MATCH ?)")
                params.append(words)
            else:
                like = "%" + (text.replace("\\", "\\\\").replace("%", "\\%")
                              .replace("_", "\\_")) + "%"
                where.append("(indicator LIKE ? ESCAPE '\\' OR context LIKE ? ESCAPE '\\' "
                             "OR url LIKE ? ESCAPE '\\')")
                params += [like, like, like]
        if after is not None:
            where.append(f"({', '.join(order.key)}) {'<' if order.descending else '>'} "
                         f"({', '.join('?' * len(order.key))})")
            params.extend(after)
        sql = f"SELECT {self.HIT_COLUMNS} FROM hits"
        if where:
            sql += " WHERE " + " AND ".join(where)
        direction = " DESC" if order.descending else ""
        sql += " ORDER BY " + ", ".join(column + direction for column in order.key)
        if limit:
            sql += f" LIMIT {int(limit)}"
        return list(self.db.query(sql, params))

    def hits_with_release(self, *, since: str | None = None, statuses: Iterable[str] = (),
                          model: str | None = None) -> list[dict[str, Any]]:
        """Hits with their release (`HIT_RELEASE`), oldest first: what incidents are made
        of; `model` "" selects the hits of no model. The grouping is the caller's."""
        where, params = self._incident_filter(since=since, statuses=statuses, model=model)
        return list(self.db.query(
            f"SELECT {self.HIT_COLUMNS}, {self.HIT_RELEASE} AS release FROM hits h{where} "
            "ORDER BY h.id", params))

    def _incident_filter(self, *, since: str | None = None, statuses: Iterable[str] = (),
                         model: str | None = None, labels: dict[str, str] | None = None
                         ) -> tuple[str, list[Any]]:
        """The WHERE clause (with its parameters) that picks hits for incidents."""
        where, params = [], []
        if since:
            where.append("h.first_seen >= ?")
            params.append(since)
        statuses = list(statuses)
        if statuses:
            where.append(f"h.status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        if model is not None:
            where.append("h.model IS ?")
            params.append(model or None)
        for label, value in (labels or {}).items():
            if label == "model":  # as the column, so the model index serves it
                where.append("h.model IS ?")
                params.append(value or None)
            else:
                where.append(f"{self.LABEL_SQL[label]} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def incident_rows(self, group_by: Sequence[str], *, since: str | None = None,
                      statuses: Iterable[str] = (), model: str | None = None,
                      labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """One row per incident (hits alike in every `group_by` label), aggregated in SQL
        so a million hits are summed without reading them into Python: `label_<name>` per
        label, hits, open, status counts `n_<status>`, locations, kinds and recipients
        (comma-joined), first_seen, last_seen, severity_level (the worst) and hit_ids
        (comma-joined). `labels` narrows to one incident."""
        where, params = self._incident_filter(since=since, statuses=statuses, model=model,
                                              labels=labels)
        keys = [f"{self.LABEL_SQL[label]} AS label_{label}" for label in group_by]
        counts = [f"SUM(h.status = '{status}') AS n_{status}" for status in HIT_STATUSES]
        sql = (f"SELECT {', '.join([*keys, *counts])}, COUNT(*) AS hits, "
               f"SUM(h.status IN ({', '.join(map(repr, OPEN_STATUSES))})) AS open, "
               "COUNT(DISTINCT h.url) AS locations, group_concat(DISTINCT h.kind) AS kinds, "
               "group_concat(DISTINCT h.recipient) AS recipients, "
               "MIN(h.first_seen) AS first_seen, MAX(h.last_seen) AS last_seen, "
               "MAX(h.severity_level) AS severity_level, group_concat(h.id) AS hit_ids "
               f"FROM hits h{where}")
        if group_by:
            sql += " GROUP BY " + ", ".join(f"label_{label}" for label in group_by)
        # Without GROUP BY an empty table still yields one row, of no hits.
        return [row for row in self.db.query(sql, params) if row["hits"]]

    def incident_hits(self, group_by: Sequence[str], labels: dict[str, str], *,
                      limit: int) -> list[dict[str, Any]]:
        """The worst hits of one incident (the one whose `group_by` labels are `labels`)."""
        where, params = self._incident_filter(labels={k: labels[k] for k in group_by})
        return list(self.db.query(
            f"SELECT {self.HIT_COLUMNS} FROM hits h{where} "
            f"ORDER BY h.severity_level DESC, h.id LIMIT {int(limit)}", params))

    def groups_sent(self) -> dict[str, str]:
        """When each alert group was last emailed (`alert_groups`), by key."""
        return dict(self.db.execute("SELECT key, last_sent_at FROM alert_groups").fetchall())

    @staticmethod
    def hit_cursor(row: dict[str, Any], sort: str = "severity") -> str:
        """The keyset cursor after `row` in `sort` order, for `parse_cursor`. A severity
        cursor is rank:first_seen:id, as before --sort existed; the others start with
        their sort's name (newest:first_seen:id, score:score:first_seen:id), so a cursor
        is never read in an order it was not made for."""
        if sort == "severity":
            severity = row["severity"]
            rank = SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
            return f"{rank}:{row['first_seen']}:{row['id']}"
        return ":".join([sort, *(repr(float(row[column])) if column == "score"
                                 else str(row[column]) for column in HIT_SORTS[sort].key)])

    @staticmethod
    def parse_cursor(cursor: str, sort: str = "severity") -> tuple[Any, ...]:
        """The key after which `hits(sort=sort, after=...)` goes on (`HIT_SORTS[sort].key`
        values); ValueError naming the problem unless `hit_cursor` made `cursor` for the
        same `sort`."""
        head, _, rest = cursor.partition(":")
        made_for = "severity" if head.isdigit() else head
        if made_for not in HIT_SORTS or head == "severity":
            raise ValueError(f"not a hits cursor: {cursor!r}")
        if made_for != sort:
            raise ValueError(f"that cursor pages --sort {made_for}, not --sort {sort}; use "
                             f"it with --sort {made_for}, or start again without --after")
        key = HIT_SORTS[sort].key
        rest = cursor if sort == "severity" else rest
        leading = []
        for _ in key[:-2]:
            value, _, rest = rest.partition(":")
            leading.append(value)
        moment, _, hit_id = rest.rpartition(":")
        try:
            if not (moment and hit_id.isdigit()):
                raise ValueError(cursor)
            values = [_cursor_value(column, value) for column, value in zip(key, leading)]
        except ValueError:
            raise ValueError(f"not a hits cursor: {cursor!r}") from None
        return (*values, moment, int(hit_id))

    # What `search` reads of each table with a full-text index (migration 11), and the
    # time its `since` applies to: a document's last sighting (as `rematch --since`), a
    # hit's first (as `hits --since`).
    SEARCHED = {
        "documents": (("id", "target", "url", "title", "first_seen", "last_seen",
                       "fetched_at"), "last_seen"),
        "hits": (("id", "target", "url", "indicator", "severity", "kind", "model",
                  "first_seen", "last_seen", "document_id"), "first_seen"),
    }

    def search(self, table: str, match: str, *, marks: tuple[str, str, str], tokens: int,
               window: int, since: str | None = None, target: str | None = None,
               limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Rows of `table` ("documents" or "hits") that the FTS5 query `match` finds, best
        (lowest bm25 `rank`) first, each with a `snippet` of about `tokens` tokens from
        its best column, the matches between `marks[0]` and `marks[1]` and cuts shown
        as `marks[2]`; and whether the query matched more than `window` rows, of which
        only the newest `window` were ranked (then filtered by `target` and `since`), so
        that a query matching most rows costs no more than one matching `window` (see
        `monitor.search`). sqlite3.OperationalError if FTS5 cannot parse `match`."""
        columns, seen = self.SEARCHED[table]
        fts = f"{table}_fts"
        past = self.db.execute(f"SELECT rowid FROM {fts} WHERE {fts} MATCH ? "
                               f"ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                               [match, int(window)]).fetchone()
        where, params = [f"{fts} MATCH ?"], [match]
        for clause, value in (("t.target = ?", target), (f"t.{seen} >= ?", since),
                              (f"{fts}.rowid > ?", past[0] if past else None)):
            if value:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT {', '.join('t.' + c for c in columns)}, {fts}.rank AS rank, "
               f"snippet({fts}, -1, ?, ?, ?, ?) AS snippet "
               f"FROM {fts} JOIN {table} t ON t.id = {fts}.rowid "
               f"WHERE {' AND '.join(where)} ORDER BY {fts}.rank LIMIT ?")
        return list(self.db.query(sql, [*marks, tokens, *params, int(limit)])), past is not None

    def hit_ids_by_document(self, document_ids: Sequence[int]) -> dict[int, list[int]]:
        """The ids of each document's hits, oldest first (documents without hits left out)."""
        found: dict[int, list[int]] = {}
        if document_ids:
            for document_id, hit_id in self.db.execute(
                    f"SELECT document_id, id FROM hits WHERE document_id IN "
                    f"({', '.join('?' * len(document_ids))}) ORDER BY id", list(document_ids)):
                found.setdefault(document_id, []).append(hit_id)
        return found

    def hit(self, hit_id: int) -> dict[str, Any] | None:
        """One hit, with its release (`HIT_RELEASE`)."""
        rows = list(self.db.query(f"SELECT {self.HIT_COLUMNS}, {self.HIT_RELEASE} AS release "
                                  "FROM hits h WHERE id = ?", [hit_id]))
        return rows[0] if rows else None

    def document(self, document_id: int) -> dict[str, Any] | None:
        rows = list(self.db.query(
            "SELECT id, target, key, url, title, author, posted_at, fetched_at, first_seen, "
            "last_seen, content_sha256, snapshot_sha256, extras FROM documents WHERE id = ?",
            [document_id]))
        return rows[0] if rows else None

    DOCUMENT_COLUMNS = ("id, target, key, url, title, author, posted_at, fetched_at, text, "
                        "links, extras")

    def _document_filter(self, targets: Sequence[str], since: str | None
                         ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if targets:
            where.append(f"target IN ({', '.join('?' * len(targets))})")
            params.extend(targets)
        if since:
            where.append("last_seen >= ?")
            params.append(since)
        return where, params

    def count_documents(self, *, targets: Sequence[str] = (), since: str | None = None) -> int:
        """How many stored documents `iter_documents` with the same filter would yield."""
        where, params = self._document_filter(targets, since)
        sql = "SELECT COUNT(*) FROM documents" + (" WHERE " + " AND ".join(where) if where else "")
        return self.db.execute(sql, params).fetchone()[0]

    def iter_documents(self, *, targets: Sequence[str] = (), since: str | None = None,
                       batch_size: int = 500) -> Iterator[dict[str, Any]]:
        """Stored documents (with text, links and extras, as JSON text) in id order, read
        `batch_size` at a time, so any number can be walked in little memory; documents last
        seen before `since` (ISO time) or of other `targets` are left out.

        Each batch is its own query (keyset pagination), so no read stays open while the
        caller writes between batches."""
        where, params = self._document_filter(targets, since)
        last = 0
        while True:
            sql = (f"SELECT {self.DOCUMENT_COLUMNS} FROM documents WHERE "
                   + " AND ".join([*where, "id > ?"]) + f" ORDER BY id LIMIT {int(batch_size)}")
            rows = list(self.db.query(sql, [*params, last]))
            yield from rows
            if len(rows) < batch_size:
                return
            last = rows[-1]["id"]

    # --- outbox --------------------------------------------------------------------------

    def due_alerts(self, now: str | None = None, *, channel: str = "email"
                   ) -> list[dict[str, Any]]:
        """Pending alerts of a channel whose retry time has come, with their hits."""
        now = now or utcnow()
        return list(self.db.query(
            f"{self.ALERT_ROWS} WHERE o.status IN ('pending', 'sending') "
            "AND o.next_attempt_at <= ? AND o.channel = ? ORDER BY o.id", [now, channel]))

    def due_notices(self, now: str | None = None) -> list[dict[str, Any]]:
        """Pending target health notices whose retry time has come, with the target's state."""
        return list(self.db.query(
            "SELECT n.*, s.last_success_at, s.last_run_at, s.consecutive_failures "
            "FROM notices n LEFT JOIN target_state s ON s.name = n.target "
            "WHERE n.status IN ('pending', 'sending') AND n.next_attempt_at <= ? ORDER BY n.id",
            [now or utcnow()]))

    def mark_sending(self, ids: list[int], message_id: str, *, table: str = "outbox") -> None:
        """Committed before the SMTP conversation, with the Message-ID a retry reuses, so a
        crash mid-send yields at worst a resend that mail systems recognise as the same.
        `table` is 'outbox' (hit alerts) or 'notices' (target health)."""
        table = _queue(table)
        with self.db.atomic():
            self.db.execute(
                f"UPDATE {table} SET status = 'sending', message_id = ?, last_attempt_at = ?, "
                f"attempts = attempts + 1 WHERE id IN ({', '.join('?' * len(ids))})",
                [message_id, utcnow(), *ids])

    def mark_sent(self, ids: list[int], *, table: str = "outbox") -> None:
        table = _queue(table)
        with self.db.atomic():
            self.db.execute(
                f"UPDATE {table} SET status = 'sent', sent_at = ?, last_error = NULL "
                f"WHERE id IN ({', '.join('?' * len(ids))})", [utcnow(), *ids])

    def mark_retry(self, ids: list[int], error: str, *, max_attempts: int = 20,
                   table: str = "outbox") -> None:
        """Back off exponentially (1 min doubling, capped at 6 h); give up after many tries
        so a permanently rejected message is visible as failed rather than retried forever."""
        with self.db.atomic():
            for oid in ids:
                attempts = self.db.execute(f"SELECT attempts FROM {_queue(table)} WHERE id = ?",
                                           [oid]).fetchone()[0]
                delay = min(60 * 2 ** max(attempts - 1, 0), 6 * 3600)
                next_at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="seconds")
                status = "failed" if attempts >= max_attempts else "pending"
                self.db.execute(
                    f"UPDATE {_queue(table)} SET status = ?, last_error = ?, next_attempt_at = ? "
                    f"WHERE id = ?", [status, error, next_at, oid])

    def retry_now(self) -> int:
        """Make every pending alert and notice due immediately (`alerts flush`)."""
        count = 0
        with self.db.atomic():
            for table in QUEUES:
                count += self.db.execute(
                    f"UPDATE {table} SET next_attempt_at = ? WHERE status IN ('pending', 'sending')",
                    [utcnow()]).rowcount
        return count

    def notices(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._queue_rows(
            "SELECT n.id, n.kind, n.target, n.created_at, n.failures, n.error, n.status, "
            "n.attempts, n.next_attempt_at, n.sent_at, n.last_error, n.message_id "
            "FROM notices n", "n", status)

    def outbox(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._queue_rows(
            "SELECT o.id, o.hit_id, o.channel, o.status, o.attempts, o.created_at, "
            "o.next_attempt_at, "
            "o.sent_at, o.last_error, o.message_id, o.silenced_by, h.severity, h.kind, h.model, "
            "h.url "
            "FROM outbox o JOIN hits h ON h.id = o.hit_id", "o", status)

    def _queue_rows(self, select: str, alias: str, status: str | None) -> list[dict[str, Any]]:
        where, params = (f" WHERE {alias}.status = ?", [status]) if status else ("", [])
        return list(self.db.query(f"{select}{where} ORDER BY {alias}.id", params))

    # --- triage --------------------------------------------------------------------------

    def triage(self, hit_ids: Sequence[int], status: str, *, by: str,
               note: str | None = None) -> list[int]:
        """Set hits' status, keeping who, when and why; returns the ids that do not exist
        (and then changes nothing). Alerts not yet sent for resolved hits and false
        positives are dropped, and a false positive's indicator at its URL is never
        alerted again."""
        now = utcnow()
        with self._write_transaction():
            marks = ", ".join("?" * len(hit_ids))
            found = {row[0] for row in self.db.execute(
                f"SELECT id FROM hits WHERE id IN ({marks})", list(hit_ids))}
            missing = [i for i in hit_ids if i not in found]
            if missing:
                return missing
            self.db.execute(f"UPDATE hits SET status = ? WHERE id IN ({marks})",
                            [status, *hit_ids])
            self.db["triage"].insert_all({"hit_id": i, "status": status, "note": note,
                                          "by": by, "at": now} for i in hit_ids)
            if status in ("resolved", "false_positive"):
                # Nothing left to tell anyone: a silence that ends sends only what is open.
                self.db.execute(f"DELETE FROM outbox WHERE status = 'pending' AND hit_id IN "
                                f"({marks})", list(hit_ids))
        return []

    def triage_history(self, hit_id: int) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT status, note, by, at FROM triage WHERE hit_id = ? "
                                  "ORDER BY id", [hit_id]))

    # --- silences ------------------------------------------------------------------------

    def add_silence(self, *, matchers: Sequence[str], reason: str, created_by: str,
                    ends_at: str, starts_at: str | None = None) -> int:
        now = utcnow()
        return int(self.db["silences"].insert({
            "matchers": json.dumps(list(matchers)), "reason": reason, "created_by": created_by,
            "created_at": now, "starts_at": starts_at or now, "ends_at": ends_at}).last_pk)

    def silences(self, *, include_ended: bool = False, now: str | None = None
                 ) -> list[dict[str, Any]]:
        """Silences, newest first: active and future ones, or all with `include_ended`."""
        sql = "SELECT * FROM silences"
        params: list[Any] = []
        if not include_ended:
            sql += " WHERE expired_at IS NULL AND ends_at > ?"
            params.append(now or utcnow())
        return list(self.db.query(sql + " ORDER BY id DESC", params))

    def expire_silence(self, silence_id: int) -> bool:
        """End a silence now; what it held back becomes due at once. False if it had
        already ended or does not exist."""
        now = utcnow()
        with self._write_transaction():
            cur = self.db.execute("UPDATE silences SET expired_at = ? WHERE id = ? AND "
                                  "expired_at IS NULL AND ends_at > ?", [now, silence_id, now])
            if cur.rowcount != 1:
                return False
            self.db.execute("UPDATE outbox SET next_attempt_at = ? WHERE silenced_by = ? AND "
                            "status = 'pending' AND next_attempt_at > ?",
                            [now, silence_id, now])
        return True

    def hold_alerts(self, ids: list[int], until: str, silence_id: int | None = None) -> None:
        """Defer alerts: to the end of the silence that holds them back, or to when their
        group may send (group_wait, group_interval)."""
        if not ids:
            return
        with self._write_transaction():
            if silence_id is None:
                self.db.execute(f"UPDATE outbox SET next_attempt_at = ? "
                                f"WHERE id IN ({', '.join('?' * len(ids))})", [until, *ids])
            else:
                self.db.execute(f"UPDATE outbox SET next_attempt_at = ?, silenced_by = ? "
                                f"WHERE id IN ({', '.join('?' * len(ids))})",
                                [until, silence_id, *ids])

    def group_sent_at(self, key: str) -> str | None:
        row = self.db.execute("SELECT last_sent_at FROM alert_groups WHERE key = ?",
                              [key]).fetchone()
        return row[0] if row else None

    def open_alerted_hits(self) -> list[dict[str, Any]]:
        """Hits already emailed and still new (nobody acknowledged, resolved or dismissed
        them), as `due_alerts` rows, oldest first: what reminders repeat."""
        return list(self.db.query(
            f"{self.ALERT_ROWS} WHERE o.channel = 'email' AND o.status = 'sent' "
            "AND h.status = 'new' ORDER BY h.id"))

    def mark_group_sent(self, key: str, when: str | None = None) -> None:
        self.db.execute("INSERT INTO alert_groups (key, last_sent_at) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET last_sent_at = excluded.last_sent_at",
                        [key, when or utcnow()])

    # --- registry ------------------------------------------------------------------------

    def add_model(self, name: str) -> None:
        self.db.execute("INSERT INTO models (name, created_at) VALUES (?, ?) "
                        "ON CONFLICT(name) DO NOTHING", [name, utcnow()])

    def add_artifact(self, *, model: str, name: str, path: str | None, size: int, sha256: str,
                     sha1: str, md5: str, pieces_root: str | None = None,
                     shards: Sequence[str] = (), release: str | None = None,
                     recipient: str | None = None) -> tuple[int, list[bool]]:
        """Register one released file and its digests; returns its id and, per digest,
        whether it was new to the registry."""
        now = utcnow()
        digests = [("sha256", sha256), ("sha1", sha1), ("md5", md5)]
        if pieces_root:
            digests.append(("pieces_root", pieces_root))
        if len(shards) > 1:  # a single shard is the file's SHA-256, already listed
            digests += [("shard", shard) for shard in shards]
        with self.db.atomic():
            self.add_model(model)
            row = self.db.execute(
                "SELECT id FROM artifacts WHERE model = ? AND sha256 = ? AND recipient IS ?",
                [model, sha256, recipient]).fetchone()
            if row:
                artifact_id = row[0]
                # Registered before these digests existed: fill them in (but never blank
                # them, e.g. from a bundle written before they were computed).
                fill: dict[str, Any] = {}
                if pieces_root:
                    fill["pieces_root"] = pieces_root
                if shards:
                    fill["shards"] = json.dumps(list(shards))
                if fill:
                    self.db["artifacts"].update(artifact_id, fill)
            else:
                artifact_id = self.db["artifacts"].insert({
                    "model": model, "name": name, "path": path, "size": size, "sha256": sha256,
                    "sha1": sha1, "md5": md5, "pieces_root": pieces_root,
                    "shards": json.dumps(list(shards)), "release": release,
                    "recipient": recipient, "registered_at": now}).last_pk
            added = [self.add_indicator(algo=algo, value=value, model=model, name=name, size=size,
                                        source=f"register:{path or name}", artifact_id=artifact_id,
                                        recipient=recipient)
                     for algo, value in digests]
        return artifact_id, added

    def artifacts(self, model: str | None = None) -> list[dict[str, Any]]:
        """Registered files (name, size, digests, release, recipient), for manifest matching
        and bundles."""
        sql = "SELECT * FROM artifacts"
        params: list[Any] = []
        if model:
            sql += " WHERE model = ?"
            params.append(model)
        return list(self.db.query(sql + " ORDER BY id", params))

    def add_indicator(self, *, algo: str, value: str, model: str, source: str,
                      name: str | None = None, size: int | None = None,
                      artifact_id: int | None = None, recipient: str | None = None) -> bool:
        """Add a known digest; True if it was not known for this model before."""
        with self.db.atomic():
            self.add_model(model)
            cur = self.db.execute(
                "INSERT INTO indicators (algo, value, model, artifact_id, recipient, name, size, "
                "source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(algo, value, model) DO NOTHING",
                [algo, value.lower(), model, artifact_id, recipient, name, size, source, utcnow()])
            return cur.rowcount == 1

    def models(self) -> list[str]:
        """Names of the registered models, sorted."""
        return [row[0] for row in self.db.execute("SELECT name FROM models ORDER BY name")]

    def indicators(self, *, models: Sequence[str] = (),
                   standalone: bool = False) -> list[dict[str, Any]]:
        """Indicator rows in the order they were added; `standalone` keeps only those not
        derived from a registered artifact (imported lists, magnets, bundles)."""
        where, params = [], []
        if models:
            where.append(f"model IN ({', '.join('?' * len(models))})")
            params.extend(models)
        if standalone:
            where.append("artifact_id IS NULL")
        sql = "SELECT * FROM indicators" + (" WHERE " + " AND ".join(where) if where else "")
        return list(self.db.query(sql + " ORDER BY id", params))

    def registry_counts(self) -> dict[str, int]:
        """Rows in each registry table; the registry only grows, so a change in these
        counts means something new was registered."""
        return {table: self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("models", "artifacts", "indicators")}

    # --- tensor fingerprints ------------------------------------------------------------

    def add_weight_print(self, *, model: str, name: str, print_: WeightPrint,
                         artifact_id: int | None = None) -> tuple[int, bool]:
        """Store one weight file's tensor fingerprint; returns its id and whether it was
        new (the same file fingerprinted with the same key is stored once)."""
        with self.db.atomic():
            self.add_model(model)
            row = self.db.execute(
                "SELECT id FROM weight_prints WHERE model = ? AND name = ? AND key = ?",
                [model, name, print_.key]).fetchone()
            if row:
                return row[0], False
            print_id = self.db["weight_prints"].insert({
                "model": model, "artifact_id": artifact_id, "name": name, "key": print_.key,
                "null_dims": print_.null_dims, "version": print_.version,
                "tensors": len(print_.tensors), "added_at": utcnow()}).last_pk
            self.db["tensor_prints"].insert_all(({
                "print_id": print_id, "position": i, "name": t.name, "canonical": t.canonical,
                "rows": t.shape[0], "columns": t.shape[1], "dtype": t.dtype,
                "stats": json.dumps(t.stats),
                "sketch": t.sketch.astype("<f2").tobytes(),
                "sample_index": t.sample_index.astype("<i8").tobytes(),
                "samples": t.samples.astype("<f4").tobytes(), "role": t.role or None,
                "column_sketch": (None if t.column_sketch is None
                                  else t.column_sketch.astype("<f2").tobytes())}
                for i, t in enumerate(print_.tensors)))
        return print_id, True

    def weight_prints(self, models: Sequence[str] = (), *, with_recipient: bool = False
                      ) -> list[Any]:
        """Every stored tensor fingerprint as (model, file name, print), oldest first; with
        `with_recipient`, (model, file name, print, recipient of its artifact or None)."""
        where, params = "", list(models)
        if models:
            where = f" WHERE p.model IN ({', '.join('?' * len(models))})"
        out: list[Any] = []
        for row in list(self.db.query(
                "SELECT p.*, a.recipient AS recipient FROM weight_prints p LEFT JOIN artifacts a "
                f"ON a.id = p.artifact_id{where} ORDER BY p.id", params)):
            tensors = [TensorPrint(
                name=t["name"], canonical=t["canonical"], shape=(t["rows"], t["columns"]),
                dtype=t["dtype"], stats=json.loads(t["stats"]),
                sketch=np.frombuffer(t["sketch"], "<f2").reshape(t["rows"], -1),
                sample_index=np.frombuffer(t["sample_index"], "<i8").astype(np.int64),
                samples=np.frombuffer(t["samples"], "<f4").reshape(-1, t["columns"]),
                role=t["role"] or "",
                column_sketch=None if t["column_sketch"] is None else np.frombuffer(
                    t["column_sketch"], "<f2").reshape(t["columns"], -1))
                for t in self.db.query("SELECT * FROM tensor_prints WHERE print_id = ? "
                                       "ORDER BY position", [row["id"]])]
            entry = (row["model"], row["name"], WeightPrint(
                key=bytes(row["key"]), tensors=tensors, null_dims=row["null_dims"],
                version=row["version"]))
            out.append((*entry, row["recipient"]) if with_recipient else entry)
        return out

    def printed_tensors(self, artifact_id: int) -> int | None:
        """How many tensors the stored fingerprint of this artifact has; None if it has none
        (re-registering a file does not fingerprint it again)."""
        row = self.db.execute("SELECT tensors FROM weight_prints WHERE artifact_id = ?",
                              [artifact_id]).fetchone()
        return row[0] if row else None

    def weight_print_version(self) -> int:
        """Grows whenever a fingerprint or a digest is added (scans look digests up first):
        remote scans made before are stale. Both tables only grow, so the sum of their
        largest ids does too."""
        return self.db.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM weight_prints) + "
            "(SELECT COALESCE(MAX(id), 0) FROM indicators)").fetchone()[0]

    def weight_scan(self, url: str) -> dict[str, Any] | None:
        """The last remote scan of `url` (redacted), if any."""
        rows = list(self.db.query("SELECT * FROM weight_scans WHERE url = ?", [url]))
        return rows[0] if rows else None

    def record_weight_scan(self, url: str, *, verdict: str, model: str | None = None,
                           score: float | None = None, bytes_read: int = 0,
                           error: str | None = None, details: str = "{}") -> None:
        """Remember a remote scan's verdict (the URL redacted) for this registry version."""
        self.db["weight_scans"].upsert({
            "url": url, "scanned_at": utcnow(), "verdict": verdict, "model": model,
            "score": score, "bytes_read": bytes_read, "error": error, "details": details,
            "registry_version": self.weight_print_version()}, pk="url")

    # --- watermarks ----------------------------------------------------------------------

    def add_watermark(self, *, model: str, recipient: str, key: bytes, key_id: str,
                      version: int, densities: dict[str, float],
                      artifact_id: int | None = None) -> bool:
        """Record a recipient's marking key; True if new. Issuing the same recipient again
        with the same key keeps the record; a different key is refused (ValueError): two
        copies with different marks for one recipient would make attribution ambiguous."""
        with self.db.atomic():
            self.add_model(model)
            row = self.db.execute("SELECT key_id FROM watermarks WHERE model = ? AND "
                                  "recipient = ?", [model, recipient]).fetchone()
            if row:
                if row[0] != key_id:
                    raise ValueError(f"{recipient} already has a {model} copy marked with "
                                     f"another key (key id {row[0]})")
                return False
            self.db["watermarks"].insert({
                "model": model, "recipient": recipient, "key": key, "key_id": key_id,
                "version": version, "densities": json.dumps(densities, sort_keys=True),
                "artifact_id": artifact_id, "issued_at": utcnow()})
            return True

    def watermarks(self, model: str | None = None) -> list[dict[str, Any]]:
        """Recipients with marked copies: model, recipient, key, key_id, densities (dict)."""
        sql, params = "SELECT * FROM watermarks", []
        if model:
            sql, params = sql + " WHERE model = ?", [model]
        rows = list(self.db.query(sql + " ORDER BY id", params))
        for row in rows:
            row["key"] = bytes(row["key"])
            row["densities"] = json.loads(row["densities"])
        return rows

    def known_digests(self) -> dict[str, list[KnownDigest]]:
        """Every registered digest value (lowercase hex) to what it identifies."""
        index: dict[str, list[KnownDigest]] = {}
        for row in self.db.query(
                "SELECT i.id, i.algo, i.value, i.model, i.source, "
                "COALESCE(a.name, i.name) AS artifact, COALESCE(i.recipient, a.recipient) AS recipient, "
                "a.release AS release, COALESCE(a.size, i.size) AS size "
                "FROM indicators i LEFT JOIN artifacts a ON a.id = i.artifact_id"):
            index.setdefault(row["value"], []).append(KnownDigest(
                algo=row["algo"], value=row["value"], model=row["model"], artifact=row["artifact"],
                recipient=row["recipient"], source=row["source"], indicator_id=row["id"],
                release=row["release"], size=row["size"]))
        return index



QUEUES = ("outbox", "notices")


def _queue(table: str) -> str:
    """The name of a delivery queue table; never interpolate anything else into SQL."""
    if table not in QUEUES:
        raise ValueError(f"not a delivery queue: {table!r}")
    return table


def backoff_seconds(failures: int) -> float:
    """The escalating wait after `failures` failed runs in a row: 5 min, tripling, capped
    at a day, so a broken source is retried soon at first and rarely once it stays down."""
    return min(300.0 * 3 ** max(failures - 1, 0), 86400.0)


def _later(now: str, seconds: float) -> str:
    return (datetime.fromisoformat(now) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def _statements(sql: str) -> list[str]:
    """Split a migration into whole statements, so it can run inside one transaction
    (executescript would commit first)."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
