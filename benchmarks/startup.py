"""Do the analyst commands start at once? Each against `python -c 'import sqlite3'`.

Builds a demo-sized database (the generator of benchmarks/hits_queries.py: --hits hits over
a year, 8 targets, 5 models) and runs every analyst command as an operator would, in a
fresh process with the shipped config.toml (every kind of target, so validating it is the
real work): `hits --limit 50`, `hits show`, `incidents`, `search`, `targets`, `alerts
list`, `silence list`, `check-config`. The reference, `python -c 'import sqlite3'` (the
interpreter starting and loading SQLite, the least any of them can cost), is run in the
same rounds, interleaved with the commands, so the load of a shared machine weighs on
both alike. Prints the median wall time of --runs rounds and each command's ratio to the
reference; the issue's target is `hits --limit 50` at most 5x (exit 1 if it is above).

The config's targets are checked against the source adapters once and remembered
(`monitor.config.TargetChecks`, in a cache directory of this run's own); the line
`check-config (first run)` shows what that first check costs, with an empty cache each
round.

    python benchmarks/startup.py
    python benchmarks/startup.py --hits 20000 --runs 11
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hits_queries import World, generate  # noqa: E402

from monitor.store import Store  # noqa: E402

TARGET_RATIO = 5.0
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("hits", "--limit", "50"),
    ("hits", "show", "1"),
    ("incidents",),
    ("search", "heron"),
    ("targets",),
    ("alerts", "list"),
    ("silence", "list"),
    ("check-config",),
)


def weightwatch() -> list[str]:
    """The console script an operator runs, where it is installed next to this Python."""
    script = Path(sys.executable).with_name("weightwatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}: "
                         f"{done.stderr.decode(errors='replace').strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--documents", type=int, help="default: a fifth of --hits")
    parser.add_argument("--runs", type=int, default=7, help="rounds; medians are printed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ww-startup-") as tmp:
        work = Path(tmp)
        db = work / "hits.db"
        rng = random.Random(20240301)
        store = Store(db)
        generate(store, args.hits, args.documents or max(1, args.hits // 5), rng, World(rng))
        store.close()
        config = work / "config.toml"
        shutil.copyfile(ROOT / "config.toml", config)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
        base = [*weightwatch(), "--config", str(config), "--db", str(db)]
        reference = [sys.executable, "-c", "import sqlite3"]
        timed([*base, "check-config"], env)  # the targets' checks, remembered from here on

        times: dict[str, list[float]] = {"reference": [], "check-config (first run)": []}
        for command in COMMANDS:
            times[" ".join(command)] = []
        for round_ in range(args.runs):
            times["reference"].append(timed(reference, env))
            for command in COMMANDS:
                times[" ".join(command)].append(timed([*base, *command], env))
            cold = {**env, "XDG_CACHE_HOME": str(work / f"cold-{round_}")}
            times["check-config (first run)"].append(timed([*base, "check-config"], cold))

    ref = statistics.median(times["reference"])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores; "
          f"{args.hits} hits; median of {args.runs} runs")
    print(f"{'command':<28}{'median ms':>10}{'ratio':>8}")
    label = "python -c 'import sqlite3'"
    print(f"{label:<28}{ref * 1000:>10.1f}{1:>8.2f}")
    for name, values in times.items():
        if name == "reference":
            continue
        median = statistics.median(values)
        print(f"{'weightwatch ' + name:<28}{median * 1000:>10.1f}{median / ref:>8.2f}")
    hits = statistics.median(times["hits --limit 50"]) / ref
    met = hits <= TARGET_RATIO
    print(f"target: hits --limit 50 at most {TARGET_RATIO:g}x the reference: "
          f"{hits:.2f}x, {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
