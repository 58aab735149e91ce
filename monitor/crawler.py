"""One pass over one target: fetch, extract, detect, store, in that order.

Documents whose content hash has not changed since the last run are neither re-matched nor
re-stored (only their last-seen time moves). A source hands over its documents a page at a
time (the posts of one response; `Source.pages`), and each page's documents are committed
together with their hits and outbox rows in one transaction, so a run cut short by a
timeout, a signal or `kill -9` keeps every page it had recorded and none of a page half
way; the target's cursor is saved only after a whole run, so the next run covers whatever
this one missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from monitor import runstats
from monitor.config import Config, Target
from monitor.detect import Detection, Detector, build_detection, detect_all
from monitor.fetch import Fetcher, FetchError, redact_url
from monitor.models import Document, Hit, KnownDigest
from monitor.sources import ADAPTERS, SourceError
from monitor.store import Detected, Store, StoreError

log = structlog.get_logger("weightwatch.crawler")


@dataclass
class RunResult:
    target: str
    run_id: int
    status: str
    documents_seen: int = 0
    documents_new: int = 0
    documents_changed: int = 0
    hits_new: int = 0
    error: str | None = None
    # What the run cost (requests, bytes, retries, scan bytes, duration): `crawl_finished`
    # logs it and the daemon's metrics count it.
    stats: runstats.RunStats = field(default_factory=runstats.RunStats)


class Recorder(Protocol):
    """Where one run's findings go: the store itself on one machine (`StoreRecorder`), or
    the writer's queue from a worker on another (`monitor.worker`). Each call takes one
    page's documents (all of one target)."""

    def document_hashes(self, target: str, keys: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each key that is stored."""
        ...

    def touch_documents(self, target: str, keys: Sequence[str]) -> None: ...

    def save_documents(self, found: Sequence[Detected], run_id: int) -> list[RecordedDocument]:
        """Record `found` (with their hits and outbox rows) all or none; one result each,
        in order."""
        ...

    def set_cursor(self, target: str, cursor: dict[str, Any]) -> None: ...


@dataclass
class RecordedDocument:
    """What recording one document did: whether it was new, and the ids of its new hits
    (empty where the writer, not this process, decides which hits are new)."""

    is_new: bool
    new_hits: list[int] = field(default_factory=list)


class StoreRecorder:
    """The one-machine recorder: straight into the store, each page's documents with their
    hits and the hits' outbox rows in one transaction."""

    def __init__(self, store: Store, channels: Sequence[str]):
        self.store = store
        self.channels = channels

    def document_hashes(self, target: str, keys: Sequence[str]) -> dict[str, str]:
        return self.store.document_hashes(target, keys)

    def touch_documents(self, target: str, keys: Sequence[str]) -> None:
        self.store.touch_documents(target, keys)

    def save_documents(self, found: Sequence[Detected], run_id: int) -> list[RecordedDocument]:
        saved = self.store.save_documents(found, run_id, channels=self.channels)
        return [RecordedDocument(doc.is_new, new_hits) for doc, new_hits in saved]

    def set_cursor(self, target: str, cursor: dict[str, Any]) -> None:
        self.store.set_cursor(target, cursor)


async def crawl_target(target: Target, config: Config, store: Store, fetcher: Fetcher,
                       detectors: Detection | Sequence[Detector] | None = None) -> RunResult:
    """Crawl one target within the run timeout and record the run, whatever happens.

    `detectors` are the pass's (a crawl of many targets shares them), else the config's;
    given as document detectors alone, the weight links are still scanned."""
    if isinstance(detectors, Detection):
        detection = detectors
    else:
        detection = build_detection(config, store, fetcher)
        if detectors is not None:
            detection.detectors = detectors
    run_id = store.start_run(target.name)
    result = RunResult(target=target.name, run_id=run_id, status="running")
    await run_source(target, config, StoreRecorder(store, config.alerts.channels), fetcher,
                     detection, result, store.cursor(target.name),
                     lambda done: _finish(store, done, config),
                     watched_infohashes(target, store))
    return result


def watched_infohashes(target: Target, store: Store) -> list[KnownDigest]:
    """The registry's torrents, for a source that watches their swarms (`dht`)."""
    return store.registry.infohashes() if ADAPTERS[target.kind].watches_infohashes else []


async def run_source(target: Target, config: Config, recorder: Recorder, fetcher: Fetcher,
                     detection: Detection, result: RunResult, cursor: dict[str, Any],
                     finish: Callable[[RunResult], None],
                     infohashes: Sequence[KnownDigest] = ()) -> None:
    """Run `target`'s source from `cursor` within the run timeout, every document detected
    and recorded, and call `finish` with the run's outcome whatever happens (a shutdown's
    cancellation too, which is then raised again). `infohashes` are the registry's
    torrents, for a source that watches them."""
    with (structlog.contextvars.bound_contextvars(target=target.name, run_id=result.run_id),
          runstats.counting() as result.stats):
        log.info("crawl_started", url=redact_url(target.url))
        try:
            await asyncio.wait_for(_crawl(target, recorder, fetcher, detection, result, cursor,
                                          infohashes),
                                   timeout=config.crawl.run_timeout)
            result.status = "ok"
        except TimeoutError:
            result.status, result.error = "failed", f"run exceeded {config.crawl.run_timeout:.0f}s timeout"
        except (FetchError, SourceError) as exc:
            result.status, result.error = "failed", str(exc)
        except StoreError as exc:  # disk full, read-only media: one line, not a traceback
            log.error("crawl_store_failed", error=str(exc))
            result.status, result.error = "failed", str(exc)
        except asyncio.CancelledError:
            result.status, result.error = "interrupted", "cancelled (shutdown)"
            finish(result)
            raise
        except Exception as exc:  # a bug in an adapter must not kill the daemon
            log.exception("crawl_crashed")
            result.status, result.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finish(result)


async def _crawl(target: Target, recorder: Recorder, fetcher: Fetcher, detection: Detection,
                 result: RunResult, cursor: dict[str, Any],
                 infohashes: Sequence[KnownDigest]) -> None:
    adapter = ADAPTERS[target.kind]
    source = adapter(target, fetcher, cursor,
                     infohashes=infohashes if adapter.watches_infohashes else ())
    async for page in source.pages():
        result.documents_seen += len(page)
        changed: list[Detected] = []
        unchanged: dict[str, list[str]] = {}
        for name, docs in _by_target(page).items():
            stored = recorder.document_hashes(name, [doc.key for doc in docs])
            for doc in docs:
                content_sha = doc.content_sha256
                if stored.get(doc.key) == content_sha:
                    unchanged.setdefault(name, []).append(doc.key)
                else:
                    changed.append(Detected(doc, [], content_sha))
        for name, keys in unchanged.items():
            recorder.touch_documents(name, keys)
        # Weight links are read by range and compared with the tensor fingerprints (no
        # transaction is open while that awaits); the verdict is stored before the
        # document, so a crash in between rescans nothing.
        for item in changed:
            item.hits = await detection.detect(item.doc, target)
        if not changed:
            continue
        for item, recorded in zip(changed, recorder.save_documents(changed, result.run_id),
                                  strict=True):
            result.documents_new += recorded.is_new
            result.documents_changed += not recorded.is_new
            result.hits_new += len(recorded.new_hits)
            for hit_id in recorded.new_hits:
                log.info("hit", hit_id=hit_id, url=redact_url(item.doc.url))
    recorder.set_cursor(target.name, source.cursor)


def _by_target(page: list[Document]) -> dict[str, list[Document]]:
    """A page's documents by target, in order: one target's, unless a source mixes them."""
    groups: dict[str, list[Document]] = {}
    for doc in page:
        groups.setdefault(doc.target, []).append(doc)
    return groups


def _finish(store: Store, result: RunResult, config: Config) -> None:
    try:
        transition = store.finish_run(
            result.run_id, status=result.status, documents_seen=result.documents_seen,
            documents_new=result.documents_new, documents_changed=result.documents_changed,
            hits_new=result.hits_new, error=result.error,
            down_after=config.alerts.target_down_after)
    except StoreError as exc:  # the disk that failed the run may fail its record too
        log.error("run_not_recorded", status=result.status, error=str(exc))
        return
    if transition == "target_down":
        log.error("target_down", failures=config.alerts.target_down_after, error=result.error)
    elif transition == "target_recovered":
        log.info("target_recovered")
    # A failed run is an error: the operator must act (or the back-off will); a shutdown
    # cutting a run short is only worth a warning.
    event = {"ok": log.info, "failed": log.error}.get(result.status, log.warning)
    stats = result.stats
    event("crawl_finished", status=result.status, documents=result.documents_seen,
          new_documents=result.documents_new, changed_documents=result.documents_changed,
          new_hits=result.hits_new, requests=stats.requests, bytes=stats.wire_bytes,
          retries=stats.retries, scan_bytes=stats.scan_bytes,
          duration_s=round(stats.finish(), 3), error=result.error)


async def crawl_once(config: Config, store: Store, targets: list[Target],
                     fetcher: Fetcher | None = None) -> list[RunResult]:
    """One pass over the given targets (concurrently; the fetcher spaces requests per host)."""
    own = fetcher is None
    fetcher = fetcher or Fetcher(config.crawl)
    try:
        detection = build_detection(config, store, fetcher)
        tasks = [crawl_target(t, config, store, fetcher, detection) for t in targets]
        return list(await asyncio.gather(*tasks))
    finally:
        if own:
            await fetcher.aclose()


@dataclass
class Preview:
    """A document a target yields now, and the hits detectors would record for it."""

    document: Document
    hits: list[Hit]


async def dry_run(target: Target, config: Config, detectors: list[Detector],
                  fetcher: Fetcher | None = None, *,
                  infohashes: Sequence[KnownDigest] = ()) -> list[Preview]:
    """Fetch and extract one target from scratch (no cursor) and run the detectors,
    recording nothing: what an operator checks before a target goes live. `infohashes`
    are the registered ones, for a source that watches them."""
    own = fetcher is None
    fetcher = fetcher or Fetcher(config.crawl)
    try:
        source = ADAPTERS[target.kind](target, fetcher, {}, infohashes=infohashes)

        async def collect() -> list[Preview]:
            return [Preview(doc, detect_all(detectors, doc)) async for doc in source.documents()]

        try:
            return await asyncio.wait_for(collect(), timeout=config.crawl.run_timeout)
        except TimeoutError:
            raise FetchError(f"run exceeded {config.crawl.run_timeout:.0f}s timeout") from None
    finally:
        if own:
            await fetcher.aclose()
