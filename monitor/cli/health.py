"""`weightwatch health`: is this deployment working? For a container's health check, a
systemd timer or a monitoring probe: exit 0 when it is, 1 with one line per problem."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from monitor.cli.common import State


@click.command("health")
@click.option("--stale-after", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Call the daemon dead or hung when its last heartbeat is older than this "
                   "[default: its heartbeat interval plus a grace].")
@click.option("--no-daemon", is_flag=True,
              help="No daemon is expected (targets crawled by `weightwatch crawl` from a "
                   "timer): skip the heartbeat check.")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table",
              show_default=True, help="Output format; json is a stable contract.")
@click.pass_obj
def health_command(state: State, stale_after: float | None, no_daemon: bool, fmt: str) -> None:
    """Check the targets, the daemon's heartbeat and the alert outbox.

    \b
    Exit 0: healthy. Exit 1: at least one problem, one line each: an enabled target is
    down (past alerts.target_down_after failed runs), the daemon's heartbeat is missing,
    stopped or stale, or alerts are stuck (undelivered an hour after a failed attempt) or
    were given up on in the last week. A target failing but not yet down is a warning.
    """
    from monitor.health import Finding, HeartbeatRow, QueueTrouble, Verdict, verdict, watched
    from monitor.models import TargetStateRow, utcnow
    from monitor.store.figures import Figures

    now = utcnow()
    targets = watched(state.config.targets)
    states: dict[str, TargetStateRow] = {}
    beat: HeartbeatRow | None = None
    queues: list[QueueTrouble] = []
    if state.db_path.exists():
        with state.store(write=False) as store:
            states = store.all_target_states()
            beat = store.runs.heartbeat()
            queues = Figures(store.db).queue_trouble()
        found = verdict(states, targets, beat, queues, now=now, stale_seconds=stale_after,
                        daemon=not no_daemon)
    else:  # never created here: a probe must not make an empty database look healthy
        found = Verdict([Finding("database", str(state.db_path), (
            f"no database at {state.db_path} (has `weightwatch run` started?)"))], [])
    if fmt == "json":
        report: dict[str, Any] = {
            "status": "ok" if found.ok else "unhealthy", "checked_at": now,
            "problems": [vars(f) for f in found.problems],
            "warnings": [vars(f) for f in found.warnings],
            "daemon": beat, "outbox": queues,
            "targets": sorted(targets) if targets is not None else sorted(states)}
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for finding in found.problems:
            click.echo(f"unhealthy: {finding.message}")
        for finding in found.warnings:
            click.echo(f"warning: {finding.message}")
        if found.ok:
            count = len(targets) if targets is not None else len(states)
            pending = sum(q["pending"] for q in queues)
            daemon = (f"daemon pid {beat['pid']} on {beat['host']} beat at {beat['beat_at']}"
                      if beat and not no_daemon else "daemon not checked")
            click.echo(f"ok: {count} targets watched, none down; {daemon}; "
                       f"{pending} alerts and notices waiting to be sent")
    if not found.ok:
        sys.exit(1)


COMMANDS = (health_command,)
