"""`weightwatch worker` and `weightwatch status`: crawling on many machines (docs/scaling.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from monitor.cli.common import State, fail, open_queue
from monitor.output import table

queue_option = click.option(
    "--queue", "queue_url", metavar="URL", required=True,
    help="The queue `weightwatch run --queue` schedules on: redis://HOST:PORT/DB, or "
         "sqlite:///PATH on one machine.")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "weightwatch" / "worker"


@click.command("worker")
@queue_option
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where registry replicas and scan verdicts are kept "
                   "[default: $XDG_CACHE_HOME/weightwatch/worker].")
@click.pass_obj
def worker(state: State, queue_url: str, cache_dir: Path | None) -> None:
    """Take crawl orders from the queue until SIGTERM or SIGINT.

    Needs the scheduler's config.toml (the same targets, rules and settings: an order made
    under another config is refused) but never its database: what it finds goes back to
    `weightwatch run --queue` through the queue.
    """
    from monitor.worker import Worker

    if not state.config.targets:
        fail(f"{state.config.path or '<defaults>'}: no targets: a worker runs the config's", 2)
    queue = open_queue(queue_url)
    try:
        Worker(state.config, queue, cache_dir or _cache_dir()).run()
    finally:
        queue.close()


@click.command("status")
@queue_option
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table",
              show_default=True, help="Output format; json is a stable contract.")
@click.pass_obj
def status(state: State, queue_url: str, fmt: str) -> None:
    """The queue's depth, each worker with its last heartbeat, and the runs in flight."""
    from monitor.worker import BEAT_STALE_AFTER

    queue = open_queue(queue_url)
    try:
        depth, beats = queue.depth(), queue.beats()
    finally:
        queue.close()
    now = time.time()
    workers: list[dict[str, Any]] = [{
        "worker": b["worker"], "host": b["host"], "pid": b["pid"],
        "started_at": b["started_at"], "last_beat_s": round(now - b["beat_at"], 1),
        "alive": now - b["beat_at"] <= BEAT_STALE_AFTER, "tasks_done": b["tasks_done"],
        "current": b["current"]} for b in beats]
    with state.store() as store:
        runs = [dict(r) for r in store.db.query(
            "SELECT id AS run_id, target, started_at FROM crawl_runs WHERE status = 'running' "
            "ORDER BY id")]
    if fmt == "json":
        click.echo(json.dumps({"queue": {"crawl": depth["crawl"], "write": depth["write"]},
                               "workers": workers, "runs": runs}, indent=2))
        return
    click.echo(f"queue: {depth['crawl']} crawl orders waiting, {depth['write']} writes "
               f"waiting")
    click.echo(f"workers: {sum(w['alive'] for w in workers)} alive of {len(workers)}")
    if workers:
        click.echo(table(workers, ("worker", "alive", "last_beat_s", "tasks_done", "current")))
    click.echo(f"runs in flight: {len(runs)}")
    if runs:
        click.echo(table(runs, ("run_id", "target", "started_at")))


COMMANDS = (worker, status)
