"""The task queue between the scheduler, the workers and the writer (docs/scaling.md).

Huey carries the tasks, over SQLite (`sqlite:///path/queue.db`: one machine, no server) or
Redis (`redis://host:6379/0`: any number of machines), with the same task code for both:

- `crawl(order)`, taken by workers: one run of one target (`monitor.worker`);
- `record`, `touch` and `finish`, taken only by the writer (`weightwatch run`, the one
  process that owns the database): what a run found, applied to the store in order.

Four Huey namespaces share the backend: crawl orders, writes, shared state (which document
versions the database holds, the registry's bundles, per-host request slots) and worker
heartbeats, so that listing one (`status`) never reads another.

Messages are JSON, never pickle (Huey's default): whoever can write to the queue must not
be able to run code in the writer. A message that is not ours is refused whole.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict, cast
from urllib.parse import urlsplit

import structlog
from huey import Huey, RedisHuey, SqliteHuey
from huey.registry import Message
from huey.serializer import Serializer

from monitor.config import Config
from monitor.models import Document, Hit

log = structlog.get_logger("weightwatch.queue")
# Huey says "Executing ..." for every task at INFO: thousands of lines a run that say
# nothing the crawl's own events do not.
logging.getLogger("huey").setLevel(logging.WARNING)


class QueueError(Exception):
    """A queue URL that cannot be used, or a message that is not ours: one line."""


class CrawlOrder(TypedDict):
    """One run of one target, as the scheduler hands it to a worker."""

    target: str
    run_id: int
    cursor: dict[str, Any]
    registry: str          # the registry's version: the bundle the worker must match with
    config: str            # `config_version` of the scheduler's config
    lease_s: float         # the worker has this long before the run is taken back


class WorkerBeat(TypedDict):
    worker: str
    host: str
    pid: int
    started_at: str
    beat_at: float         # Unix time of the beat
    tasks_done: int
    current: str | None    # "target#run" in progress


class _JsonSerializer(Serializer):  # type: ignore[misc]  # huey ships no types
    """Huey's messages and stored values as JSON. A Message is a list under "m"; its
    `eta` (a datetime) is ISO text."""

    def _serialize(self, data: Any) -> bytes:
        if isinstance(data, Message):
            fields = data._asdict()
            if isinstance(fields.get("eta"), datetime):
                fields["eta"] = fields["eta"].isoformat()
            if any(fields.get(k) is not None for k in ("on_complete", "on_error",
                                                      "chord_config")):
                raise QueueError("chained tasks are not used here")
            data = {"m": fields}
        return json.dumps(data, separators=(",", ":")).encode()

    def _deserialize(self, data: bytes) -> Any:
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise QueueError(f"a queue message that is not JSON: {exc}") from None
        if isinstance(value, dict) and set(value) == {"m"} and isinstance(value["m"], dict):
            fields = value["m"]
            if not set(fields) <= set(Message._fields):
                raise QueueError("a queue message with unknown fields")
            if isinstance(fields.get("eta"), str):
                fields["eta"] = datetime.fromisoformat(fields["eta"])
            args = fields.get("args")
            fields["args"] = tuple(args) if isinstance(args, list) else ()
            return Message(**fields)
        return value


def _huey(name: str, url: str, *, blocking: bool) -> Huey:
    parts = urlsplit(url)
    serializer = _JsonSerializer()
    if parts.scheme == "sqlite":
        path = Path(parts.path) if parts.netloc in ("", "localhost") else None
        if path is None or not parts.path:
            raise QueueError(f"{url}: a SQLite queue is sqlite:///absolute/path.db")
        return SqliteHuey(name, filename=str(path), results=False, serializer=serializer,
                          utc=True)
    if parts.scheme in ("redis", "rediss"):
        return RedisHuey(name, url=url, results=False, serializer=serializer, utc=True,
                         blocking=blocking, read_timeout=1)
    raise QueueError(f"{url}: a queue is sqlite:///path or redis://host:port/db")


def config_version(config: Config) -> str:
    """What a worker must share with the scheduler to run its orders: the targets, rules,
    crawl and scan settings (not paths or secrets: only their digest travels)."""
    text = repr((config.targets, config.rules, config.crawl, config.scan))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def document_json(doc: Document) -> dict[str, Any]:
    fields = dataclasses.asdict(doc)
    fields["snapshot"] = base64.b64encode(doc.snapshot).decode()
    # As the content hash reads them: a value JSON cannot hold travels as its text.
    fields["extras"] = json.loads(json.dumps(doc.extras, default=str))
    return fields


def document_from_json(fields: dict[str, Any]) -> Document:
    try:
        fields = dict(fields)
        fields["snapshot"] = base64.b64decode(fields.get("snapshot") or "", validate=True)
        return Document(**fields)
    except (TypeError, ValueError) as exc:
        raise QueueError(f"a record whose document is not one: {exc}") from None


def hit_from_json(fields: dict[str, Any]) -> Hit:
    try:
        return Hit(**fields)
    except TypeError as exc:
        raise QueueError(f"a record whose hit is not one: {exc}") from None


class Queue:
    """The queue's four namespaces and the tasks on them. Both sides build it from the
    same URL; a side binds the handlers it runs (`on_crawl` on a worker, the writes on the
    writer) and only ever takes tasks from its own namespace."""

    def __init__(self, url: str, *, blocking: bool = True):
        self.url = url
        self.crawls = _huey("weightwatch-crawl", url, blocking=blocking)
        # The writer drains its queue from the daemon's event loop: it must never block.
        self.writes = _huey("weightwatch-write", url, blocking=False)
        self.state = _huey("weightwatch-state", url, blocking=False)
        self.workers = _huey("weightwatch-workers", url, blocking=False)
        self.on_crawl: Callable[[CrawlOrder], None] | None = None
        self.on_record: Callable[[int, dict[str, Any], list[dict[str, Any]], str], None] | None = None
        self.on_touch: Callable[[int, str, str], None] | None = None
        self.on_finish: Callable[[int, dict[str, Any], dict[str, Any] | None, int], None] | None = None
        self._crawl = self.crawls.task(name="crawl")(self._run_crawl)
        self._record = self.writes.task(name="record")(self._run_record)
        self._touch = self.writes.task(name="touch")(self._run_touch)
        self._finish = self.writes.task(name="finish")(self._run_finish)

    # Producers.
    def order(self, order: CrawlOrder) -> None:
        self._crawl(order)

    def record(self, run_id: int, doc: Document, hits: list[Hit], content_sha256: str) -> None:
        self._record(run_id, document_json(doc), [dataclasses.asdict(h) for h in hits],
                     content_sha256)

    def touch(self, run_id: int, target: str, key: str) -> None:
        self._touch(run_id, target, key)

    def finish(self, run_id: int, result: dict[str, Any], cursor: dict[str, Any] | None,
               records: int) -> None:
        self._finish(run_id, result, cursor, records)

    # Consumers: each task calls the handler its side bound.
    def _run_crawl(self, order: CrawlOrder) -> None:
        _bound(self.on_crawl, "crawl")(order)

    def _run_record(self, run_id: int, doc: dict[str, Any], hits: list[dict[str, Any]],
                    content_sha256: str) -> None:
        _bound(self.on_record, "record")(run_id, doc, hits, content_sha256)

    def _run_touch(self, run_id: int, target: str, key: str) -> None:
        _bound(self.on_touch, "touch")(run_id, target, key)

    def _run_finish(self, run_id: int, result: dict[str, Any], cursor: dict[str, Any] | None,
                    records: int) -> None:
        _bound(self.on_finish, "finish")(run_id, result, cursor, records)

    def drain_writes(self, limit: int) -> int:
        """Apply up to `limit` queued writes, in order; how many were taken. A message that
        is not ours is dropped with a log line (Huey logs a task that failed)."""
        done = 0
        while done < limit:
            try:
                task = self.writes.dequeue()
            except QueueError as exc:
                log.error("queue_message_refused", error=str(exc))
                done += 1
                continue
            if task is None:
                break
            self.writes.execute(task)
            done += 1
        return done

    # Shared state.
    def seen(self, target: str, key: str) -> str | None:
        value = self.state.storage.peek_data(_seen_key(target, key))
        return value.decode() if isinstance(value, bytes) else None

    def set_seen(self, target: str, key: str, content_sha256: str) -> None:
        self.state.storage.put_data(_seen_key(target, key), content_sha256.encode())

    def put_registry(self, version: str, bundle: bytes) -> None:
        self.state.storage.put_data(f"registry:{version}", bundle)

    def registry(self, version: str) -> bytes | None:
        value = self.state.storage.peek_data(f"registry:{version}")
        return value if isinstance(value, bytes) else None

    def beat(self, beat: WorkerBeat) -> None:
        self.workers.storage.put_data(beat["worker"], json.dumps(beat).encode())

    def gone(self, worker: str) -> None:
        self.workers.storage.pop_data(worker)

    def beats(self) -> list[WorkerBeat]:
        out = []
        for raw in self.workers.storage.result_items().values():
            try:
                out.append(cast(WorkerBeat, json.loads(raw)))
            except (ValueError, TypeError):
                continue
        return sorted(out, key=lambda b: b["worker"])

    def depth(self) -> dict[str, int]:
        return {"crawl": self.crawls.pending_count(), "write": self.writes.pending_count()}

    def pending_orders(self) -> Iterator[CrawlOrder]:
        for task in self.crawls.pending():
            if task.args:
                yield cast(CrawlOrder, task.args[0])

    def redis(self) -> Any | None:
        """The Redis connection under a Redis queue (None under SQLite)."""
        return getattr(self.state.storage, "conn", None)

    def close(self) -> None:
        for huey in (self.crawls, self.writes, self.state, self.workers):
            close = getattr(huey.storage, "close", None)
            if callable(close):
                close()


def _bound(handler: Callable[..., None] | None, name: str) -> Callable[..., None]:
    if handler is None:
        raise QueueError(f"a {name!r} task reached a process that does not run them")
    return handler


def _seen_key(target: str, key: str) -> str:
    return "seen:" + hashlib.sha256(f"{target}\x1f{key}".encode()).hexdigest()[:32]


@dataclass
class RedisGate:
    """Politeness shared by every worker through Redis (`monitor.fetch.HostGate`), so ten
    workers are as polite to a host as one: each request start is reserved at least
    `spacing` after the previous one, at most `limit` requests are in flight, and a
    robots.txt one worker read serves them all until it expires. Every reservation is one
    script on Redis's own clock, so the machines' clocks need not agree."""

    conn: Any
    prefix: str = "weightwatch:host:"

    _NEXT_START = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
    local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
    local start = math.max(now, nxt)
    redis.call('SET', KEYS[1], tostring(start + tonumber(ARGV[1])), 'EX', 3600)
    return tostring(start - now)
    """
    # Slots in flight: members are tokens scored by when their lease runs out, so a slot a
    # killed worker held is free again after its lease.
    _ACQUIRE = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
        redis.call('EXPIRE', KEYS[1], 3600)
        return 1
    end
    return 0
    """
    poll: float = 0.02
    robots_wait: float = 10.0

    async def wait(self, host: str, spacing: float) -> float:
        raw = await asyncio.to_thread(self.conn.eval, self._NEXT_START, 1,
                                      self.prefix + host.lower(), repr(spacing))
        return max(0.0, float(raw))

    async def acquire(self, host: str, limit: int, lease: float) -> str:
        token = secrets.token_hex(8)
        key = self.prefix + "inflight:" + host.lower()
        while not await asyncio.to_thread(self.conn.eval, self._ACQUIRE, 1, key, str(limit),
                                          repr(lease), token):
            await asyncio.sleep(self.poll)
        return token

    async def release(self, host: str, token: str) -> None:
        await asyncio.to_thread(self.conn.zrem, self.prefix + "inflight:" + host.lower(), token)

    async def robots(self, origin: str) -> tuple[int, bytes, float] | None:
        """The shared answer, or None when this caller is to fetch it: it claimed the
        fetch, or whoever did has not shared an answer within `robots_wait` (it may have
        failed: a network error is never shared)."""
        key = self.prefix + "robots:" + origin.lower()
        deadline = time.monotonic() + self.robots_wait
        while True:
            raw, left, claimed = await asyncio.to_thread(self._robots_or_claim, key)
            if isinstance(raw, bytes) and left is not None and left > 0:
                status, _, body = raw.partition(b"\n")
                return (int(status), body, left / 1000) if status.isdigit() else None
            if claimed or time.monotonic() > deadline:
                return None
            await asyncio.sleep(self.poll)

    def _robots_or_claim(self, key: str) -> tuple[Any, Any, bool]:
        raw, left = self.conn.get(key), self.conn.pttl(key)
        if isinstance(raw, bytes):
            return raw, left, False
        return None, None, bool(self.conn.set(key + ":claim", b"1", nx=True, px=30_000))

    async def remember_robots(self, origin: str, status: int, body: bytes,
                              ttl: float) -> None:
        if ttl > 0:
            await asyncio.to_thread(self.conn.set, self.prefix + "robots:" + origin.lower(),
                                    str(status).encode() + b"\n" + body,
                                    px=max(1, int(ttl * 1000)))
