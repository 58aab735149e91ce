"""What one crawl run cost: requests, bytes, retries and weight-scan bytes.

The fetcher is shared by every target of a process, so it cannot keep per-run figures
itself; instead each run opens a `RunStats` in a context variable (`counting`), and the
fetcher and the weight scanner add to whichever run they are working for. asyncio copies
the context into the tasks a run starts, so concurrent runs of different targets never
mix their figures. Outside a run (`targets test`, `scan`) the notes go nowhere.

The crawler logs these in `crawl_finished`; the daemon adds them to its Prometheus
counters (monitor.metrics).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RunStats:
    requests: int = 0        # HTTP attempts, retries and robots.txt included
    wire_bytes: int = 0      # response bytes as received (before content decoding)
    retries: int = 0
    scan_bytes: int = 0      # bytes of weight files read by range to fingerprint them
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0  # set by `finish`, when the run is recorded

    def finish(self) -> float:
        """The run's duration until now, kept in `duration_s`."""
        self.duration_s = time.monotonic() - self.started
        return self.duration_s


_current: ContextVar[RunStats | None] = ContextVar("weightwatch_run_stats", default=None)


@contextmanager
def counting() -> Iterator[RunStats]:
    """Count what the code inside (and the tasks it starts) fetches, for one run."""
    stats = RunStats()
    token = _current.set(stats)
    try:
        yield stats
    finally:
        _current.reset(token)


def note_request() -> None:
    stats = _current.get()
    if stats is not None:
        stats.requests += 1


def note_bytes(count: int) -> None:
    stats = _current.get()
    if stats is not None:
        stats.wire_bytes += count


def note_retry() -> None:
    stats = _current.get()
    if stats is not None:
        stats.retries += 1


def note_scan(count: int) -> None:
    stats = _current.get()
    if stats is not None:
        stats.scan_bytes += count
