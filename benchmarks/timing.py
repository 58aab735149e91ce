"""What the benchmarks measure CPU with: the median process time of several calls (this
machine is shared and noisy, so one call tells little)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_cpu(fn: Callable[[], object], runs: int) -> float:
    """Seconds of process CPU time one `fn()` takes, median of `runs` calls."""
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)
