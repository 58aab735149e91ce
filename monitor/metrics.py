"""`weightwatch run --metrics-addr`: the daemon's figures for Prometheus.

Two kinds of figure, each from where it is right:

- What lives in the database (runs by target and status, documents, hits by severity and
  status, the delivery queues, each target's last success and failures, the heartbeat) is
  read when Prometheus scrapes, by `DatabaseCollector`, through a read-only connection of
  its own (the server answers on its own thread). These survive a restart and include
  what `weightwatch crawl` or another process wrote.
- What only this process sees (requests, response bytes, retries, weight-scan bytes, run
  durations) is counted from each run's `RunStats` when the run ends (`observe`).

prometheus-client is imported by this module alone, which only `run` loads. The server
binds loopback unless the operator asked for another address and said it may be public
(`monitor.listening`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector

from monitor import __version__
from monitor.health import health
from monitor.store import Store, StoreError
from monitor.store.figures import Figures

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from monitor.crawler import RunResult

log = structlog.get_logger("weightwatch.metrics")

PREFIX = "weightwatch"
# Run durations: a quiet feed answers in a second, a forum with weight links to scan can
# take the whole run timeout (30 min by default).
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def _timestamp(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


class DatabaseCollector:
    """The database's figures, read at each scrape (a custom collector: nothing cached)."""

    def __init__(self, path: Path):
        self.path = path

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_database_up",
                               "1 if the database could be read for this scrape, else 0")
        try:
            with Store(self.path, readonly=True) as store:
                metrics = list(self._read(store))
        except (StoreError, sqlite3.Error, OSError) as exc:
            # A scrape that fails is an alert nobody can read; a 0 here is one to act on.
            log.warning("metrics_database_unreadable", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self, store: Store) -> Iterable[Metric]:
        figures = Figures(store.db)
        runs = CounterMetricFamily(f"{PREFIX}_crawl_runs", "Crawl runs recorded, by outcome "
                                   "(ok, failed, interrupted, running)",
                                   labels=["target", "status"])
        for run in figures.run_counts():
            runs.add_metric([run["target"], run["status"]], run["count"])
        yield runs
        documents = GaugeMetricFamily(f"{PREFIX}_documents", "Documents stored",
                                      labels=["target"])
        for target, count in sorted(figures.document_counts().items()):
            documents.add_metric([target], count)
        yield documents
        hits = GaugeMetricFamily(f"{PREFIX}_hits", "Hits recorded, by severity and triage "
                                 "status", labels=["severity", "status"])
        for (severity, status), count in sorted(figures.hit_counts().items()):
            hits.add_metric([severity, status], count)
        yield hits
        queues = GaugeMetricFamily(f"{PREFIX}_outbox_messages", "Alerts (queue outbox) and "
                                   "target health notices (queue notices) by delivery status",
                                   labels=["queue", "channel", "status"])
        for row in figures.queue_counts():
            queues.add_metric([row["queue"], row["channel"], row["status"]], row["count"])
        yield queues
        retrying = GaugeMetricFamily(f"{PREFIX}_outbox_retrying", "Undelivered messages "
                                     "that failed at least one attempt", labels=["queue"])
        for trouble in figures.queue_trouble():
            retrying.add_metric([trouble["queue"]], trouble["retrying"])
        yield retrying
        yield from self._targets(store)
        beat = store.runs.heartbeat()
        heartbeat = GaugeMetricFamily(f"{PREFIX}_daemon_heartbeat_timestamp_seconds",
                                      "When the daemon last recorded that it is alive")
        if beat is not None:
            heartbeat.add_metric([], _timestamp(beat["beat_at"]) or 0)
        yield heartbeat

    def _targets(self, store: Store) -> Iterable[Metric]:
        last = GaugeMetricFamily(f"{PREFIX}_target_last_success_timestamp_seconds",
                                 "When the target was last read successfully",
                                 labels=["target"])
        failures = GaugeMetricFamily(f"{PREFIX}_target_consecutive_failures",
                                     "Failed runs in a row", labels=["target"])
        down = GaugeMetricFamily(f"{PREFIX}_target_down", "1 if the target is down (past "
                                 "alerts.target_down_after failures in a row)",
                                 labels=["target"])
        for name, state in sorted(store.all_target_states().items()):
            success = _timestamp(state.get("last_success_at"))
            if success is not None:
                last.add_metric([name], success)
            failures.add_metric([name], state.get("consecutive_failures", 0))
            down.add_metric([name], 1 if health(state) == "down" else 0)
        yield from (last, failures, down)


class Metrics:
    """The daemon's registry: its own counters, the database's figures, the process's."""

    def __init__(self, database: Path, targets: Iterable[str] = ()):
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(database))
        ProcessCollector(registry=self.registry)
        labels = ["target"]
        self.duration = Histogram(f"{PREFIX}_crawl_duration_seconds",
                                  "How long crawl runs took, by outcome",
                                  ["target", "status"], buckets=DURATION_BUCKETS,
                                  registry=self.registry)
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests made (each "
                                "attempt, robots.txt and weight-file ranges included)",
                                labels, registry=self.registry)
        self.bytes = Counter(f"{PREFIX}_http_response_bytes", "Response bytes received, as "
                             "sent (before content decoding)", labels, registry=self.registry)
        self.retries = Counter(f"{PREFIX}_http_retries", "Requests retried after a "
                               "transient failure", labels, registry=self.registry)
        self.scan_bytes = Counter(f"{PREFIX}_scan_bytes", "Bytes of linked weight files read "
                                  "to fingerprint them", labels, registry=self.registry)
        info = GaugeMetricFamily(f"{PREFIX}_build_info", "The running weightwatch",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        self.registry.register(_Fixed([info]))
        # Every watched target shows a zero from the start, so a rate() has a baseline.
        for target in targets:
            for counter in (self.requests, self.bytes, self.retries, self.scan_bytes):
                counter.labels(target)
        self._server: WSGIServer | None = None

    def observe(self, result: RunResult) -> None:
        """Count a finished run's costs."""
        stats, target = result.stats, result.target
        self.duration.labels(target, result.status).observe(stats.duration_s)
        self.requests.labels(target).inc(stats.requests)
        self.bytes.labels(target).inc(stats.wire_bytes)
        self.retries.labels(target).inc(stats.retries)
        self.scan_bytes.labels(target).inc(stats.scan_bytes)

    def serve(self, host: str, port: int) -> str:
        """Answer scrapes on `host`:`port` (0 picks a free port) from a thread of its own;
        returns the URL of the metrics, with the port really bound. OSError if it cannot
        be bound."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        bound_host, bound_port = self._server.socket.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"http://{shown}:{bound_port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Fixed:
    """A collector of metrics that never change."""

    def __init__(self, metrics: list[Metric]):
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics
