"""The one writer of a database fed by workers (docs/scaling.md): the `record`, `touch` and
`finish` tasks of the queue, applied to the store in the order they were sent.

Every record is idempotent: a document is stored only if its content changed, a hit only
under its dedup key (`Store.save_document`), so a record delivered twice, or the same
documents sent again by the run that replaces a lost one, adds nothing, and no hit is
alerted twice. A run's `finish` moves the target's cursor only if every record the worker
sent for it arrived; otherwise the run is closed as interrupted and the scheduler runs the
target again at once.
"""

from __future__ import annotations

import sqlite3
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from monitor.config import Config
from monitor.queue import Queue, document_from_json, hit_from_json
from monitor.store import Store

log = structlog.get_logger("weightwatch.writer")

# What detection reads of the registry, parents before children (foreign keys).
REGISTRY_TABLES = ("models", "artifacts", "indicators", "indicator_files", "weight_prints",
                   "tensor_prints", "watermarks")


def registry_snapshot(store: Store) -> bytes:
    """The registry's tables as a database of their own, zlib-compressed: what workers
    match with. Not a bundle: a bundle re-numbers what it carries on import, and a hit's
    evidence names the registry row it matched (`indicator:ID`), which must be the
    writer's. Artifacts' local paths stay behind; watermarks hold derived keys only, as in
    a bundle (the master secret is never stored)."""
    with tempfile.TemporaryDirectory(prefix="weightwatch-registry-") as tmp:
        path = Path(tmp) / "registry.db"
        Store(path).close()  # the schema, migrated as this weightwatch's
        conn = sqlite3.connect(path)
        try:
            conn.execute("ATTACH DATABASE ? AS src",
                         [f"file:{store.path.resolve().as_posix()}?mode=ro"])
            with conn:
                for table in REGISTRY_TABLES:
                    conn.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table}")
                conn.execute("UPDATE main.artifacts SET path = NULL")
            conn.execute("DETACH DATABASE src")
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("VACUUM")
        finally:
            conn.close()
        return zlib.compress(path.read_bytes(), 6)


@dataclass
class _Tally:
    records: int = 0
    new: int = 0
    changed: int = 0
    hits: int = 0


class Writer:
    def __init__(self, store: Store, config: Config, queue: Queue, *,
                 finished: Callable[[int, str, str], None]):
        """`finished(run_id, target, status)` tells the scheduler a run is over."""
        self.store = store
        self.config = config
        self.queue = queue
        self.finished = finished
        self.tallies: dict[int, _Tally] = {}
        self.new_hits = 0
        queue.on_record = self.record
        queue.on_touch = self.touch
        queue.on_finish = self.finish

    def record(self, run_id: int, doc: dict[str, Any], hits: list[dict[str, Any]],
               content_sha256: str) -> None:
        document = document_from_json(doc)
        found = [hit_from_json(h) for h in hits]
        saved, new_hits = self.store.save_document(
            document, found, run_id, channels=self.config.alerts.channels,
            content_sha256=content_sha256)
        tally = self.tallies.setdefault(run_id, _Tally())
        tally.records += 1
        tally.new += saved.is_new
        tally.changed += not saved.is_new
        tally.hits += len(new_hits)
        self.new_hits += len(new_hits)
        self.queue.set_seen(document.target, document.key, content_sha256)
        for hit_id in new_hits:
            log.info("hit", hit_id=hit_id, target=document.target, run_id=run_id)

    def touch(self, run_id: int, target: str, key: str) -> None:
        self.store.touch_document(target, key)
        self.tallies.setdefault(run_id, _Tally()).records += 1

    def finish(self, run_id: int, result: dict[str, Any], cursor: dict[str, Any] | None,
               records: int) -> None:
        tally = self.tallies.pop(run_id, _Tally())
        status, error = str(result.get("status")), result.get("error")
        if status not in ("ok", "failed", "interrupted"):
            status, error = "failed", f"a worker reported status {status!r}"
        if tally.records != records:
            status, cursor = "interrupted", None
            error = (f"{records - tally.records} of {records} records from the worker did "
                     f"not arrive; the target runs again")
        target = self.store.db.execute("SELECT target, status FROM crawl_runs WHERE id = ?",
                                       [run_id]).fetchone()
        if target is None or target[1] != "running":
            # Taken back by the scheduler already (its worker stopped beating): the run
            # that replaced it covers the same documents.
            log.warning("late_finish_ignored", run_id=run_id, status=status)
            return
        if cursor is not None and status == "ok":
            self.store.set_cursor(target[0], cursor)
        self.store.finish_run(run_id, status=status,
                              documents_seen=int(result.get("documents_seen") or 0),
                              documents_new=tally.new, documents_changed=tally.changed,
                              hits_new=tally.hits, error=error,
                              down_after=self.config.alerts.target_down_after)
        event = log.info if status == "ok" else log.error
        event("crawl_finished", target=target[0], run_id=run_id, status=status,
              worker=result.get("worker"), documents=result.get("documents_seen"),
              new_documents=tally.new, changed_documents=tally.changed, new_hits=tally.hits,
              requests=result.get("requests"), bytes=result.get("bytes"), error=error)
        self.finished(run_id, target[0], status)
