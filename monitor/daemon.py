"""`weightwatch run`: one scheduled job per target, until SIGTERM or SIGINT.

APScheduler (3.x, in-memory job store: the schedule's source of truth is config.toml) runs
each target on its interval with jitter, never two runs of one target at once
(`max_instances=1`, missed runs coalesced). Each run is bounded by the crawler's run
timeout. A failing target is skipped until its escalating back-off has passed (`crawl`
ignores back-off: an operator running it by hand wants the attempt). On a signal the
scheduler stops taking work, running crawls are cancelled (each records itself as
interrupted; documents and hits already committed stay; a parse in progress is stopped,
see monitor.parsing), pending alerts get one last flush, and the database is closed
cleanly.

The daemon beats: a row in the database (`monitor.health.HeartbeatRow`) renewed every
`heartbeat_interval`, so `weightwatch health` in another process can tell a live daemon
from a dead or hung one, with a log line naming the next run (after the first pass the
daemon would otherwise be silent for a whole interval). A back-off an operator ended with
`weightwatch targets retry` is noticed at the next beat and the target is run at once.
With `--metrics-addr`, each finished run's costs go to the Prometheus counters
(monitor.metrics).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.alerts import Alerter
from monitor.config import Config, Target
from monitor.crawler import crawl_target
from monitor.fetch import Fetcher
from monitor.health import backing_off, heartbeat_interval
from monitor.models import system_clock, utcnow
from monitor.store import Store, StoreError

if TYPE_CHECKING:
    from monitor.metrics import Metrics
    from monitor.queue import Queue
    from monitor.writer import Writer

log = structlog.get_logger("weightwatch.daemon")

ALERT_FLUSH_INTERVAL = 60.0
SHUTDOWN_GRACE = 5.0
# With a queue: how often the writer drains it, and how often runs are checked for a
# worker that stopped beating.
DRAIN_INTERVAL = 0.25
DRAIN_BATCH = 500
LEASE_CHECK_INTERVAL = 2.0
# A run not finished within its target's run timeout plus this is taken back.
LEASE_GRACE = 60.0


@dataclass
class Lease:
    """A run handed to the queue: its target, and when it is taken back at the latest."""

    target: str
    deadline: float  # time.monotonic()


class Daemon:
    def __init__(self, config: Config, store: Store, *, metrics: Metrics | None = None,
                 metrics_url: str | None = None, queue: Queue | None = None):
        """Without `queue`, the daemon crawls every target itself. With one, it only
        schedules (each run an order on the queue, for workers) and writes (the records
        workers send back), and takes back runs whose worker was lost."""
        self.config = config
        self.store = store
        self.fetcher = Fetcher(config.crawl)
        # The one place the daemon's alerting learns the time: the wall clock, handed in.
        self.alerter = Alerter(store, config, clock=system_clock)
        self.stopping = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()
        self.crawling: set[str] = set()
        # Targets whose last scheduled job found them backing off: at each beat, those
        # whose back-off has gone (`targets retry`, or its time passed) are run at once.
        self.backing_off: set[str] = set()
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.metrics = metrics
        self.metrics_url = metrics_url
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.started_at = utcnow()
        self.beat_interval = heartbeat_interval(
            t.interval for t in config.targets if t.enabled)
        self.queue = queue
        self.leases: dict[int, Lease] = {}
        self.writer: Writer | None = None
        self.registry_version = ""
        self._registry_signature: tuple[int, ...] = ()
        if queue is not None:
            from monitor.writer import Writer
            self.writer = Writer(store, config, queue, finished=self._run_over)

    async def crawl_job(self, target: Target) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            backoff_until = backing_off(self.store.target_state(target.name), utcnow())
            if backoff_until:
                self.backing_off.add(target.name)
                log.info("target_backing_off", target=target.name, until=backoff_until)
                return
            self.backing_off.discard(target.name)
            if self.queue is not None:
                self._order(target)
                return
            self.crawling.add(target.name)
            result = await crawl_target(target, self.config, self.store, self.fetcher)
            if self.metrics is not None:
                self.metrics.observe(result)
            await self.alerter.aflush()
        except StoreError as exc:
            # A full disk fails the run's first write (start_run) before the crawler can
            # record anything; one line per attempt, and the next interval tries again.
            log.error("crawl_job_store_failed", target=target.name, error=str(exc))
        finally:
            self.running.discard(task)
            if self.queue is None:  # with a queue, a run is crawling until its finish
                self.crawling.discard(target.name)
            when = self._next_run(target.name)
            if when and not self.stopping.is_set():
                log.info("next_run", target=target.name, at=when)

    def _order(self, target: Target) -> None:
        """Hand one run of `target` to the workers, unless one is in flight already."""
        assert self.queue is not None
        if any(lease.target == target.name for lease in self.leases.values()):
            log.info("run_in_flight", target=target.name, note="not ordered again")
            return
        from monitor.queue import config_version

        self._publish_registry()
        run_id = self.store.start_run(target.name)
        lease_s = self.config.crawl.run_timeout + LEASE_GRACE
        self.queue.order({"target": target.name, "run_id": run_id,
                          "cursor": self.store.cursor(target.name),
                          "registry": self.registry_version,
                          "config": config_version(self.config), "lease_s": lease_s})
        self.leases[run_id] = Lease(target.name, time.monotonic() + lease_s)
        self.crawling.add(target.name)
        log.info("crawl_ordered", target=target.name, run_id=run_id)

    def _publish_registry(self) -> None:
        """Put the registry on the queue (`monitor.writer.registry_snapshot`), under a
        version of its content, when it changed since the last time: workers match with
        the version an order names."""
        assert self.queue is not None
        signature = (*self.store.registry_counts().values(), self.store.weight_print_version(),
                     self.store.imported_files_version())
        if signature == self._registry_signature:
            return
        from monitor.writer import registry_snapshot

        data = registry_snapshot(self.store)
        version = hashlib.sha256(data).hexdigest()[:16]
        self.queue.put_registry(version, data)
        self.registry_version, self._registry_signature = version, signature
        log.info("registry_published", version=version, bytes=len(data))

    def _run_over(self, run_id: int, target: str, status: str) -> None:
        """The writer applied a run's finish: its lease ends; a run cut short runs again."""
        self.leases.pop(run_id, None)
        self.crawling.discard(target)
        if status == "interrupted":
            self._run_now(target)

    def _run_now(self, target: str) -> None:
        job = self.scheduler.get_job(f"crawl:{target}")
        if job is not None and not self.stopping.is_set():
            job.modify(next_run_time=datetime.now(UTC))

    async def drain_job(self) -> None:
        """Apply what the workers sent, then send the alerts of new hits."""
        assert self.queue is not None and self.writer is not None
        while self.queue.drain_writes(DRAIN_BATCH) == DRAIN_BATCH:
            await asyncio.sleep(0)  # let the loop breathe between full batches
        if self.writer.new_hits:
            self.writer.new_hits = 0
            await self.alerter.aflush()

    async def lease_job(self) -> None:
        """Take back each run whose worker stopped beating or whose lease ran out, and
        run its target again at once (the writer adds nothing twice)."""
        assert self.queue is not None
        from monitor.worker import BEAT_STALE_AFTER

        holders = {b["current"]: b for b in self.queue.beats() if b.get("current")}
        now, wall = time.monotonic(), time.time()
        for run_id, lease in list(self.leases.items()):
            holder = holders.get(f"{lease.target}#{run_id}")
            if holder is not None and wall - holder["beat_at"] > BEAT_STALE_AFTER:
                why = f"worker {holder['worker']} stopped beating"
            elif now > lease.deadline:
                why = "no worker finished it within its lease"
            else:
                continue
            del self.leases[run_id]
            self.crawling.discard(lease.target)
            try:
                self.store.finish_run(run_id, status="interrupted",
                                      error=f"{why}; the target runs again",
                                      down_after=self.config.alerts.target_down_after)
            except StoreError as exc:
                log.error("run_not_recorded", run_id=run_id, error=str(exc))
            log.warning("run_taken_back", target=lease.target, run_id=run_id, reason=why)
            self._run_now(lease.target)

    def _next_run(self, name: str) -> str | None:
        job = self.scheduler.get_job(f"crawl:{name}")
        when = job.next_run_time if job is not None else None
        return when.isoformat(timespec="seconds") if when else None

    async def heartbeat_job(self) -> None:
        """Record that the daemon is alive, say what runs next, and run at once any target
        whose back-off has been lifted."""
        self.beat()
        now = utcnow()
        for name in sorted(self.backing_off):
            if backing_off(self.store.target_state(name), now) is None:
                self.backing_off.discard(name)
                job = self.scheduler.get_job(f"crawl:{name}")
                if job is not None:
                    log.info("target_back_off_lifted", target=name, note="running it now")
                    job.modify(next_run_time=datetime.now(UTC))
        upcoming = sorted((when, name) for name in (t.name for t in self.config.targets)
                          if (when := self._next_run(name)))
        log.info("heartbeat", crawling=sorted(self.crawling),
                 backing_off=sorted(self.backing_off),
                 next_run=upcoming[0][0] if upcoming else None,
                 next_target=upcoming[0][1] if upcoming else None)

    def beat(self) -> None:
        try:
            self.store.runs.beat(pid=self.pid, host=self.host, started_at=self.started_at,
                                 interval_s=self.beat_interval, metrics_url=self.metrics_url)
        except StoreError as exc:  # a full disk: `health` will call the daemon stale
            log.error("heartbeat_not_recorded", error=str(exc))

    async def flush_job(self) -> None:
        await self.alerter.aflush()

    def schedule(self) -> None:
        now = datetime.now(UTC)
        for target in self.config.targets:
            if not target.enabled:
                log.info("target_disabled", target=target.name)
                continue
            self.scheduler.add_job(
                self.crawl_job, IntervalTrigger(seconds=target.interval, jitter=target.jitter),
                args=[target], id=f"crawl:{target.name}", name=target.name,
                max_instances=1, coalesce=True, misfire_grace_time=int(target.interval),
                next_run_time=now)
        self.scheduler.add_job(self.flush_job, IntervalTrigger(seconds=ALERT_FLUSH_INTERVAL),
                               id="alerts:flush", max_instances=1, coalesce=True)
        if self.queue is not None:
            self.scheduler.add_job(self.drain_job, IntervalTrigger(seconds=DRAIN_INTERVAL),
                                   id="queue:drain", max_instances=1, coalesce=True)
            self.scheduler.add_job(self.lease_job, IntervalTrigger(seconds=LEASE_CHECK_INTERVAL),
                                   id="queue:leases", max_instances=1, coalesce=True)
        # A beat delayed by a busy event loop still runs (no misfire limit): skipping it
        # would make a slow daemon look dead.
        self.scheduler.add_job(self.heartbeat_job, IntervalTrigger(seconds=self.beat_interval),
                               id="daemon:heartbeat", max_instances=1, coalesce=True,
                               misfire_grace_time=None)
        self.scheduler.add_listener(self._on_event,
                                    EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_ERROR:
            log.error("job_failed", job=event.job_id, error=repr(getattr(event, "exception", None)))
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            if event.job_id.startswith("queue:"):
                return  # a drain still at work when its next turn comes: nothing is missed
            log.warning("job_still_running", job=event.job_id,
                        note="previous run of this target has not finished; skipped")
        else:
            log.warning("job_missed", job=event.job_id)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signal, sig)
        abandoned = self.store.close_abandoned_runs()
        if abandoned:
            log.warning("abandoned_runs_closed", count=abandoned)
        self.beat()
        self.schedule()
        self.scheduler.start()
        enabled = [t.name for t in self.config.targets if t.enabled]
        if self.queue is not None:
            from monitor.redact import redact_url
            self._publish_registry()
        log.info("daemon_started", targets=enabled, database=str(self.store.path),
                 heartbeat_s=self.beat_interval, metrics=self.metrics_url,
                 queue=redact_url(self.queue.url) if self.queue is not None else None)
        try:
            await self.stopping.wait()
        finally:
            await self.shutdown()

    def _signal(self, sig: signal.Signals) -> None:
        if self.stopping.is_set():
            return
        log.info("daemon_stopping", signal=sig.name)
        self.stopping.set()

    async def shutdown(self) -> None:
        self.scheduler.shutdown(wait=False)
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
        if self.queue is not None:
            # What workers sent before the stop is recorded now; runs still out are
            # closed as interrupted at the next start (their records wait in the queue).
            self.queue.drain_writes(1_000_000)
        try:
            await asyncio.wait_for(self.alerter.aflush(), timeout=SHUTDOWN_GRACE)
        except (TimeoutError, Exception) as exc:  # never block a shutdown on SMTP
            log.warning("final_flush_skipped", error=str(exc) or type(exc).__name__)
        await self.fetcher.aclose()
        try:
            self.store.runs.daemon_stopped(pid=self.pid)
        except StoreError as exc:
            log.warning("stop_not_recorded", error=str(exc))
        log.info("daemon_stopped")


async def run_daemon(config: Config, store: Store, *, metrics: Metrics | None = None,
                     metrics_url: str | None = None, queue: Queue | None = None) -> None:
    await Daemon(config, store, metrics=metrics, metrics_url=metrics_url, queue=queue).run()
