"""Do the analyst commands start at once? Each against `python -c 'import sqlite3'`.

Builds a demo-sized database (the generator of benchmarks/hits_queries.py: --hits hits over
a year, 8 targets, 5 models) and runs every analyst command as an operator would, in a
fresh process with the shipped config.toml (every kind of target, so validating it is the
real work): `hits --limit 50`, `hits show`, `incidents`, `search`, `targets`, `alerts
list`, `silence list`, `check-config`. The reference, `python -c 'import sqlite3'` (the
interpreter starting and loading SQLite, the least any of them can cost), is run in the
same rounds, interleaved with the commands, so the load of a shared machine weighs on
both alike. Prints the median wall time of --runs rounds and each command's ratio to the
reference (wall and CPU time); the issue's target is `hits --limit 50` at most 5x (exit 1 if it is above).

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
import resource
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


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run; CPU is what a loaded machine
    distorts least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}: "
                         f"{done.stderr.decode(errors='replace').strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


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
        # Bytecode as an installed package has it (pip compiles on install), in a cache of
        # this run's own: with PYTHONDONTWRITEBYTECODE and no .pyc, every run would
        # compile weightwatch's modules from source.
        # The shipped config's secrets set, as on a deployed machine: check-config checks
        # the environment too and exits 1 while they are missing.
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"),
               "PYTHONPYCACHEPREFIX": str(work / "pycache"),
               "WEIGHTWATCH_SMTP_PASSWORD": "benchmark", "WEIGHTWATCH_JACKETT_API_KEY": "benchmark"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        base = [*weightwatch(), "--config", str(config), "--db", str(db)]
        reference = [sys.executable, "-c", "import sqlite3"]
        timed([*base, "check-config"], env)  # the targets' checks, remembered from here on
        for command in COMMANDS:  # and every module compiled once
            timed([*base, *command], env)

        times: dict[str, list[tuple[float, float]]] = {"reference": [], "check-config (first run)": []}
        for command in COMMANDS:
            times[" ".join(command)] = []
        for round_ in range(args.runs):
            times["reference"].append(timed(reference, env))
            for command in COMMANDS:
                times[" ".join(command)].append(timed([*base, *command], env))
            cold = {**env, "XDG_CACHE_HOME": str(work / f"cold-{round_}")}
            times["check-config (first run)"].append(timed([*base, "check-config"], cold))

    def medians(name: str) -> tuple[float, float]:
        return (statistics.median(wall for wall, _ in times[name]),
                statistics.median(cpu for _, cpu in times[name]))

    ref_wall, ref_cpu = medians("reference")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} "
          f"cores; {args.hits} hits; medians of {args.runs} runs")
    print(f"{'command':<38}{'wall ms':>9}{'ratio':>7}{'CPU ms':>9}{'ratio':>7}")
    label = "python -c 'import sqlite3'"
    print(f"{label:<38}{ref_wall * 1000:>9.1f}{1:>7.2f}{ref_cpu * 1000:>9.1f}{1:>7.2f}")
    for name in times:
        if name == "reference":
            continue
        wall, cpu = medians(name)
        print(f"{'weightwatch ' + name:<38}{wall * 1000:>9.1f}{wall / ref_wall:>7.2f}"
              f"{cpu * 1000:>9.1f}{cpu / ref_cpu:>7.2f}")
    hits = medians("hits --limit 50")[0] / ref_wall
    met = hits <= TARGET_RATIO
    print(f"target: hits --limit 50 at most {TARGET_RATIO:g}x the reference (wall): "
          f"{hits:.2f}x, {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
