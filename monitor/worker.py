"""`weightwatch worker`: crawl orders from the queue, on any machine (docs/scaling.md).

A worker fetches, extracts, detects and scans exactly as `crawl` does (the same
`monitor.crawler.run_source`), but never opens the database: what it finds goes back to the
writer as `record`, `touch` and `finish` tasks, and it matches against a replica of the
registry: the writer's snapshot for the order's registry version (kept in its cache
directory, with the verdicts of the weight files it scanned).

A worker killed mid-run loses nothing: the writer moves a target's cursor only on a
`finish` whose run delivered every record, and the scheduler takes back a run whose worker
stopped beating; the run's documents are crawled again and the writer, which stores a
document only when its content changed and a hit only under its dedup key, adds nothing
twice.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from monitor.config import Config
from monitor.crawler import RecordedDocument, RunResult, run_source, watched_infohashes
from monitor.detect import build_detection
from monitor.fetch import Fetcher
from monitor.models import utcnow
from monitor.queue import CrawlOrder, Queue, QueueError, RedisGate, WorkerBeat, config_version
from monitor.store import Detected, Store
from monitor.threads import one_blas_thread

log = structlog.get_logger("weightwatch.worker")

BEAT_INTERVAL = 5.0
# A registry snapshot inflates to at most this (a million digests are ~200 MB).
MAX_REGISTRY_BYTES = 4 << 30
# A worker whose beat is older than this is taken for dead, and its run taken back.
BEAT_STALE_AFTER = 3 * BEAT_INTERVAL


class QueueRecorder:
    """A run's findings sent to the writer, counted so the writer can tell a run that
    delivered everything from one that lost records on the way."""

    def __init__(self, queue: Queue, run_id: int):
        self.queue = queue
        self.run_id = run_id
        self.records = 0
        self.cursor: dict[str, Any] | None = None

    # One message per document, as before: the writer stores each record as it comes,
    # so a page sent as one message would change its protocol for no saving here.
    def document_hashes(self, target: str, keys: Sequence[str]) -> dict[str, str]:
        return {key: sha for key in keys if (sha := self.queue.seen(target, key)) is not None}

    def touch_documents(self, target: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.queue.touch(self.run_id, target, key)
            self.records += 1

    def save_documents(self, found: Sequence[Detected], run_id: int) -> list[RecordedDocument]:
        recorded = []
        for item in found:
            doc = item.doc
            is_new = self.queue.seen(doc.target, doc.key) is None
            self.queue.record(run_id, doc, list(item.hits),
                              item.content_sha256 or doc.content_sha256)
            self.records += 1
            recorded.append(RecordedDocument(is_new))
        return recorded

    def set_cursor(self, target: str, cursor: dict[str, Any]) -> None:
        self.cursor = cursor

    def finished(self, result: RunResult) -> None:
        stats = result.stats
        self.queue.finish(self.run_id, {
            "status": result.status, "error": result.error,
            "documents_seen": result.documents_seen, "requests": stats.requests,
            "bytes": stats.wire_bytes, "worker": f"{socket.gethostname()}:{os.getpid()}",
        }, self.cursor if result.status == "ok" else None, self.records)


class Worker:
    def __init__(self, config: Config, queue: Queue, cache_dir: Path):
        self.config = config
        self.queue = queue
        self.cache_dir = cache_dir
        self.version = config_version(config)
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = utcnow()
        self.tasks_done = 0
        self.current: str | None = None
        self._replicas: dict[str, Store] = {}
        self._stop = threading.Event()
        queue.on_crawl = self.crawl

    # The Huey consumer calls this for each order, in its worker thread.
    def crawl(self, order: CrawlOrder) -> None:
        self.current = f"{order['target']}#{order['run_id']}"
        self.beat()
        try:
            asyncio.run(self._crawl(order))
        finally:
            self.current = None
            self.tasks_done += 1
            self.beat()

    async def _crawl(self, order: CrawlOrder) -> None:
        recorder = QueueRecorder(self.queue, order["run_id"])
        result = RunResult(target=order["target"], run_id=order["run_id"], status="running")
        refusal = self._refusal(order)
        if refusal is not None:
            log.error("order_refused", target=order["target"], run_id=order["run_id"],
                      error=refusal)
            result.status, result.error = "failed", refusal
            recorder.finished(result)
            return
        target = self.config.target(order["target"])
        store = self._replica(order["registry"])
        redis = self.queue.redis()
        async with Fetcher(self.config.crawl,
                           gate=RedisGate(redis) if redis is not None else None) as fetcher:
            detection = build_detection(self.config, store, fetcher)
            await run_source(target, self.config, recorder, fetcher, detection, result,
                             order["cursor"], recorder.finished,
                             watched_infohashes(target, store))

    def _refusal(self, order: CrawlOrder) -> str | None:
        if order.get("config") != self.version:
            return (f"worker {self.id} has another config than the scheduler "
                    f"({self.version} != {order.get('config')}): deploy the same config.toml")
        try:
            self.config.target(order["target"])
        except KeyError:
            return f"worker {self.id}'s config has no target {order['target']!r}"
        try:
            self._replica(order["registry"])
        except (QueueError, OSError, ValueError) as exc:
            return f"worker {self.id} cannot load registry {order['registry']}: {exc}"
        return None

    def _replica(self, version: str) -> Store:
        """The registry at `version`, the writer's snapshot of it, kept as a local database
        (which also holds this worker's scan verdicts)."""
        store = self._replicas.get(version)
        if store is not None:
            return store
        if not version.isalnum():
            raise QueueError(f"registry version {version!r} is not one")
        path = self.cache_dir / f"registry-{version}.db"
        if not path.exists():
            data = self.queue.registry(version)
            if data is None:
                raise QueueError(f"registry {version} is not in the queue")
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".db", dir=self.cache_dir)
            with os.fdopen(fd, "wb") as out:
                out.write(_inflate(data, MAX_REGISTRY_BYTES))
            with Store(tmp):  # checks the schema (migrating one an older writer made)
                pass
            os.replace(tmp, path)
        store = self._replicas[version] = Store(path)
        return store

    def beat(self) -> None:
        beat: WorkerBeat = {"worker": self.id, "host": socket.gethostname(),
                            "pid": os.getpid(), "started_at": self.started_at,
                            "beat_at": time.time(), "tasks_done": self.tasks_done,
                            "current": self.current}
        try:
            self.queue.beat(beat)
        except Exception as exc:  # a queue down for a moment: the next beat tries again
            log.warning("beat_not_sent", error=str(exc) or type(exc).__name__)

    def _beating(self) -> None:
        while not self._stop.wait(BEAT_INTERVAL):
            self.beat()

    def run(self) -> None:
        """Take orders until SIGTERM or SIGINT (Huey's consumer handles both)."""
        beating = threading.Thread(target=self._beating, name="worker-beat", daemon=True)
        self.beat()
        beating.start()
        log.info("worker_started", worker=self.id, queue=_shown(self.queue.url))
        consumer = self.queue.crawls.create_consumer(workers=1, worker_type="thread",
                                                     periodic=False, initial_delay=0.05,
                                                     max_delay=1.0)
        try:
            with one_blas_thread():  # a worker is one core's work; more would contend
                consumer.run()
        finally:
            self._stop.set()
            self.queue.gone(self.id)
            for store in self._replicas.values():
                store.close()
            log.info("worker_stopped", worker=self.id, tasks=self.tasks_done)


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as exc:
        raise QueueError(f"the registry snapshot is damaged: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise QueueError(f"the registry snapshot is damaged or over {limit} bytes")
    return out


def _shown(url: str) -> str:
    from monitor.fetch import redact_url
    return redact_url(url)
