"""Keeping a database over the years: online backups, restores, and pruning the documents
and snapshots no hit needs.

A backup is SQLite's backup API copying every page in one step, inside one read
transaction: in WAL mode that neither blocks the daemon's writes nor waits for them, and
the copy is the database as it was when the read began, turned into a single file with no
-wal of its own. (`VACUUM INTO` would compact it too, but SQLite before 3.41 fails on the
hits table's generated column.) It is written owner-only under a temporary name, checked,
and only then given its name, so a file of that name is always a whole, checked backup.

Pruning removes a document only if no hit points at it, and a snapshot only if no
remaining document shows it and it is not an earlier fetch of a page some hit's evidence
was read from: `hits show` of every hit shows the same evidence after a prune as before.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from monitor.durable import fsync_path
from monitor.migrations import MIGRATIONS
from monitor.store.connection import (
    BUSY_TIMEOUT_MS,
    DATABASE_MODE,
    Database,
    StoreError,
    create_private,
    marks,
    write_transaction,
)


class MaintenanceError(StoreError):
    """A backup, restore or prune that cannot be done: one line naming the file and why."""


@dataclass(frozen=True)
class Copied:
    """A database written by `backup` or `restore`, as checked after writing it."""

    path: Path
    size: int
    schema: int
    hits: int
    check: str  # which check SQLite made and what it said ("quick_check ok")


# --- backup and restore ----------------------------------------------------------------


def backup_path(dest: Path, source: Path, now: datetime | None = None) -> Path:
    """Where a backup to `dest` goes: `dest` itself, or inside `dest` when it is a folder,
    named for the database and the time (`weightwatch-20261207T184500Z.db`), so a daily
    timer can name only the folder."""
    if not dest.is_dir():
        return dest
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return dest / f"{source.stem}-{stamp}.db"


def backup(source: Path, dest: Path, *, force: bool = False) -> Copied:
    """Copy the database at `source` to `dest` (a file, or a folder to name one in) while
    other processes write it. Refuses an existing `dest` unless `force`."""
    target = backup_path(dest, source)
    with _read_only(source) as conn:
        # A newer weightwatch's database too: copying it misreads nothing.
        _check_weightwatch(conn, source, newer_ok=True)
        _refuse_existing(target, force, "add --force to replace it")
        partial = _partial(target)
        try:
            copy = sqlite3.connect(str(partial))
            try:
                conn.backup(copy)  # every page in one step: one consistent read
                copy.execute("PRAGMA journal_mode = DELETE")
            except sqlite3.Error as exc:
                raise MaintenanceError(f"{target}: backup failed: {exc}; nothing was "
                                       f"written") from None
            finally:
                copy.close()
            copied = _checked(partial, target, "quick_check")
            fsync_path(partial)
            _publish(partial, target, force)
        finally:
            partial.unlink(missing_ok=True)
    return copied


def restore(source: Path, database: Path, *, force: bool = False) -> Copied:
    """Write the backup at `source` into the database at `database` (created owner-only
    when missing) through SQLite's backup API, so the database's own -wal and -shm files
    stay consistent with it. Refuses a database that exists unless `force`; the daemon
    should be stopped first, or it goes on from state the backup does not have."""
    if not source.is_file():
        raise MaintenanceError(f"{source}: no such backup")
    with _read_only(source) as conn:
        _check_weightwatch(conn, source)
        check = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        if check != "ok":
            raise MaintenanceError(f"{source}: the backup is damaged (integrity_check: "
                                   f"{check}); nothing was restored")
        if database.exists() and database.stat().st_size and not force:
            raise MaintenanceError(f"{database}: exists; stop the daemon and add --force to "
                                   f"replace it with {source}")
        database.parent.mkdir(parents=True, exist_ok=True)
        create_private(database)
        target = sqlite3.connect(str(database), timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.backup(target)
        except sqlite3.Error as exc:
            raise MaintenanceError(f"{database}: restore failed: {exc}") from None
        finally:
            target.close()
    return _checked(database, database, "quick_check")


def _refuse_existing(path: Path, force: bool, hint: str) -> None:
    if path.is_dir():
        raise MaintenanceError(f"{path}: is a folder")
    if (path.exists() or path.is_symlink()) and not force:
        raise MaintenanceError(f"{path}: exists; {hint}")


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain read-only connection: errors in it are about this copy, and a full disk
    under the destination must not be reported as one under the source."""
    if not path.is_file():
        raise MaintenanceError(f"{path}: no such database")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise MaintenanceError(f"{path}: cannot open: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


def _check_weightwatch(conn: sqlite3.Connection, path: Path, *, newer_ok: bool = False) -> int:
    """The schema version of the weightwatch database `conn` reads, or a one-line error
    (for a schema newer than this weightwatch's too, unless `newer_ok`)."""
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        has_hits = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hits'").fetchone()
    except sqlite3.Error as exc:
        raise MaintenanceError(f"{path}: cannot read it as a database: {exc}") from None
    if not version or not has_hits:
        raise MaintenanceError(f"{path}: not a weightwatch database")
    if version > len(MIGRATIONS) and not newer_ok:
        raise MaintenanceError(f"{path}: database schema {version} is newer than this "
                               f"weightwatch (knows {len(MIGRATIONS)}); upgrade weightwatch")
    return version


def _partial(target: Path) -> Path:
    """An empty owner-only file beside `target` for the copy to be written into (SQLite
    keeps its mode, and gives it to the copy's transient journal too)."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                     | getattr(os, "O_NOFOLLOW", 0), DATABASE_MODE)
    except OSError as exc:
        raise MaintenanceError(f"{target}: cannot write: {exc.strerror}") from None
    os.close(fd)
    return partial


def _checked(path: Path, name: Path, check: str) -> Copied:
    """Open the copy at `path` and prove it is a whole database (`check` is SQLite's
    `quick_check` or `integrity_check`); `name` is what errors call it."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        result = str(conn.execute(f"PRAGMA {check}").fetchone()[0])
        schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
        hits = int(conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0])
    except sqlite3.Error as exc:
        raise MaintenanceError(f"{name}: the copy cannot be read back: {exc}") from None
    finally:
        conn.close()
    if result != "ok":
        raise MaintenanceError(f"{name}: the copy failed {check}: {result}")
    return Copied(name, path.stat().st_size, schema, hits, f"{check} {result}")


def _publish(partial: Path, target: Path, force: bool) -> None:
    """Give the checked copy its name: over an existing file only with `force`, and never
    over one that appeared while the copy was written otherwise."""
    try:
        if force:
            os.replace(partial, target)
        else:
            os.link(partial, target)  # fails if `target` exists, unlike a rename
    except FileExistsError:
        raise MaintenanceError(f"{target}: exists; add --force to replace it") from None
    except OSError as exc:
        raise MaintenanceError(f"{target}: cannot write: {exc.strerror}") from None
    with suppress(OSError):  # durability of the name; the data is synced already
        fsync_path(target.parent)


# --- prune -----------------------------------------------------------------------------


# What may go, as SQL over `:before` (an ISO time). One place for the rule, so a dry run
# counts exactly what a prune removes.
# A document is a hit's evidence if any hit points at it, whatever its age or status.
PRUNABLE_DOCUMENT = ("d.last_seen < :before AND NOT EXISTS "
                     "(SELECT 1 FROM hits h WHERE h.document_id = d.id)")
# A snapshot stays while a document that stays shows it, and so do earlier fetches of a
# page a hit's evidence was read from: a document edited after its hit was found shows
# the newer snapshot, and the one the hit was found in is one of those. `{staying}` says
# which documents stay: before the prunable ones are deleted, the others; after, all.
PRUNABLE_SNAPSHOT = (
    "s.fetched_at < :before"
    " AND s.sha256 NOT IN (SELECT d.snapshot_sha256 FROM documents d"
    "   WHERE d.snapshot_sha256 IS NOT NULL AND {staying})"
    " AND s.url NOT IN (SELECT e.url FROM snapshots e JOIN documents d"
    "   ON d.snapshot_sha256 = e.sha256 JOIN hits h ON h.document_id = d.id)")
PRUNABLE_SNAPSHOT_BEFORE = PRUNABLE_SNAPSHOT.format(staying=f"NOT ({PRUNABLE_DOCUMENT})")
PRUNABLE_SNAPSHOT_AFTER = PRUNABLE_SNAPSHOT.format(staying="1")

# Rows removed per transaction, so the daemon's writes wait milliseconds, not the prune.
PRUNE_BATCH = 500


@dataclass(frozen=True)
class Pruned:
    """What a prune removed (or, in a dry run, would remove), and what it kept."""

    documents: int
    snapshots: int
    snapshot_bytes: int  # compressed, as stored
    kept_documents: int  # older than the cut-off, kept as hits' evidence
    vacuum: str          # what was done to return the space: "", "incremental", "full"


def prune(db: Database, before: str, *, dry_run: bool = False,
          vacuum: bool = False, batch: int = PRUNE_BATCH) -> Pruned:
    """Remove documents last seen before `before` that no hit points at, then the
    snapshots nothing needs any more (`PRUNABLE_DOCUMENT`, `PRUNABLE_SNAPSHOT`); a dry
    run counts them without removing anything.

    The freed pages are reused by later writes; the file shrinks at once where the
    database uses incremental auto-vacuum, or with `vacuum` (a full VACUUM, which holds
    the write lock while it rewrites the file)."""
    params = {"before": before}
    kept = int(db.execute(
        "SELECT COUNT(*) FROM documents d WHERE d.last_seen < :before AND EXISTS "
        "(SELECT 1 FROM hits h WHERE h.document_id = d.id)", params).fetchone()[0])
    if dry_run:
        documents = int(db.execute(
            f"SELECT COUNT(*) FROM documents d WHERE {PRUNABLE_DOCUMENT}", params).fetchone()[0])
        snapshots, size = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(s.body)), 0) FROM snapshots s "
            f"WHERE {PRUNABLE_SNAPSHOT_BEFORE}", params).fetchone()
        return Pruned(documents, int(snapshots), int(size), kept, "")
    documents = _delete_documents(db, params, batch)
    snapshot_rows = [(row[0], int(row[1])) for row in db.execute(
        f"SELECT s.sha256, LENGTH(s.body) FROM snapshots s WHERE {PRUNABLE_SNAPSHOT_AFTER}",
        params)]
    snapshots = size = 0
    # No index leads from a snapshot to the documents showing it, so SQLite's own foreign
    # key check would scan every document for each snapshot deleted (benchmarks/prune.py:
    # 30 times slower at 20,000 documents, and quadratic). The check below asks the same
    # in one pass per batch, inside the transaction that deletes, so nothing a document
    # shows can go.
    db.execute("PRAGMA foreign_keys = OFF")
    try:
        for start in range(0, len(snapshot_rows), batch):
            chunk = dict(snapshot_rows[start:start + batch])
            names = {f"s{i}": sha for i, sha in enumerate(chunk)}
            named = ", ".join(f":{name}" for name in names)
            with write_transaction(db):
                # Asked again inside the transaction: the daemon may have written since.
                gone = [row[0] for row in db.execute(
                    f"SELECT s.sha256 FROM snapshots s WHERE s.sha256 IN ({named}) AND "
                    f"{PRUNABLE_SNAPSHOT_AFTER}", {**params, **names})]
                if gone:
                    db.execute(f"DELETE FROM snapshots WHERE sha256 IN "
                               f"({marks(len(gone))})", gone)
            snapshots += len(gone)
            size += sum(chunk[sha] for sha in gone)
    finally:
        db.execute("PRAGMA foreign_keys = ON")
    return Pruned(documents, snapshots, size, kept, _return_space(db, vacuum)
                  if documents or snapshots or vacuum else "")


def _delete_documents(db: Database, params: dict[str, str], batch: int) -> int:
    """Delete the documents `PRUNABLE_DOCUMENT` names, `batch` at a time in id order
    (each batch its own transaction, asking again), so the table is walked once; how many
    went."""
    removed = last = 0
    while True:
        with write_transaction(db):
            ids = [row[0] for row in db.execute(
                f"SELECT d.id FROM documents d WHERE d.id > :last AND {PRUNABLE_DOCUMENT} "
                f"ORDER BY d.id LIMIT {int(batch)}", {**params, "last": last})]
            if ids:
                db.execute(f"DELETE FROM documents WHERE id IN ({marks(len(ids))})",
                           ids)
        removed += len(ids)
        if len(ids) < batch:
            return removed
        last = ids[-1]


def _return_space(db: Database, vacuum: bool) -> str:
    if vacuum:
        # The full-text index keeps the removed documents' entries as deletion markers
        # until its segments are merged; merging first lets VACUUM return their pages.
        with write_transaction(db):
            db.execute("INSERT INTO documents_fts(documents_fts) VALUES ('optimize')")
        db.execute("VACUUM")
        return "full"
    if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:  # incremental
        db.execute("PRAGMA incremental_vacuum")
        return "incremental"
    return ""
