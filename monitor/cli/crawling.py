"""Config and crawling: `check-config`, `targets`, `crawl`, `run`."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from monitor.cli.common import State, fail, format_option, open_queue, run_interruptible
from monitor.config import Config, Target
from monitor.models import system_clock
from monitor.output import emit
from monitor.store import Store, StoreError

if TYPE_CHECKING:
    from monitor.preflight import Finding


@click.command("check-config")
@click.option("--online", is_flag=True,
              help="Also connect to the SMTP server and log in (sending nothing).")
@click.pass_obj
def check_config(state: State, online: bool) -> None:
    """Validate the config file (exit 2 and one line per problem if it is wrong), then the
    environment it will run in: the variables its *_env keys name, the database's
    directory, the registry. Errors exit 1; warnings are printed and exit 0."""
    from monitor.preflight import check_environment

    c = state.config
    enabled = sum(t.enabled for t in c.targets)
    click.echo(f"{c.path or '<defaults>'}: ok: {len(c.targets)} targets ({enabled} enabled), "
               f"{len(c.rules)} rules, database {state.db_path}, "
               f"email {'to ' + ', '.join(c.alerts.to) if c.smtp and c.alerts.enabled else 'off'}")
    if c.rules:
        from monitor.detect.rules import rule_costs
        for cost in rule_costs(c.rules):
            click.echo(f"rule {cost.name}: no literal to pre-filter; its regex runs on every "
                       f"document ({cost.us_per_kb:.1f} µs per KB measured)")
    findings = check_environment(c, state.db_path)
    if online:
        findings += _check_online(c)
    for finding in findings:
        click.echo(f"weightwatch: {finding.level}: {finding.text}", err=True)
    if any(f.level == "error" for f in findings):
        sys.exit(1)


def _check_online(config: Config) -> list[Finding]:
    from monitor.alerting.notifiers import DeliveryError, check_login
    from monitor.preflight import Finding

    if config.smtp is None:
        return [Finding("warning", "--online: no [smtp] section to try")]
    try:
        click.echo(check_login(config.smtp))
    except DeliveryError as exc:
        return [Finding("error", str(exc))]
    return []


@click.group("targets", invoke_without_command=True)
@format_option
@click.pass_context
def targets(ctx: click.Context, fmt: str) -> None:
    """The crawl targets and their health (last run, failures, counts)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(targets_list, fmt=fmt)


@targets.command("list")
@format_option
@click.pass_obj
def targets_list(state: State, fmt: str) -> None:
    """Show every target with its state from the database.

    Exit 1 if an enabled target is down (past alerts.target_down_after failed runs).
    """
    from monitor.health import down
    from monitor.health import health as target_health
    from monitor.redact import redact_url

    with state.store(write=False) as store:
        states = store.all_target_states()
    rows = []
    for t in state.config.targets:
        s = states.get(t.name, {})
        rows.append({"name": t.name, "kind": t.kind, "enabled": t.enabled,
                     "health": target_health(s, enabled=t.enabled),
                     "url": redact_url(t.url), "interval_s": t.interval,
                     "last_run_at": s.get("last_run_at"),
                     "last_success_at": s.get("last_success_at"),
                     "consecutive_failures": s.get("consecutive_failures", 0),
                     "backoff_until": s.get("backoff_until"), "down_since": s.get("down_since"),
                     "documents": s.get("documents_count", 0), "hits": s.get("hits_count", 0),
                     "last_error": s.get("last_error")})
    emit(rows, fmt, table_columns=("name", "kind", "health", "last_success_at",
                                   "consecutive_failures", "documents", "hits", "last_error"),
         empty="no targets configured")
    gone = down(states, {t.name for t in state.config.targets if t.enabled})
    if gone:
        if fmt == "table":
            click.echo(f"weightwatch: down: {', '.join(str(s.get('name')) for s in gone)} "
                       f"(`weightwatch targets retry NAME` ends a back-off)", err=True)
        sys.exit(1)


@targets.command("retry")
@click.argument("name")
@click.pass_obj
def targets_retry(state: State, name: str) -> None:
    """End a target's back-off: the daemon runs it at its next heartbeat.

    The back-off after failed runs survives a restart; this lifts it (the failures and
    the down state stay until a run succeeds). `weightwatch crawl --target NAME` instead
    runs it now, in this process.
    """
    (target,) = _choose_targets(state.config, (name,))
    with state.store() as store:
        until = store.runs.retry(target.name)
    if until:
        click.echo(f"{target.name}: back-off until {until} lifted; a running daemon runs it "
                   f"at its next heartbeat")
    else:
        click.echo(f"{target.name}: not backing off; it runs on its schedule")


@targets.command("test")
@click.argument("name")
@format_option
@click.pass_obj
def targets_test(state: State, name: str, fmt: str) -> None:
    """Dry run of one target: fetch, extract, and show what the detectors would find.

    Writes nothing (the registry is read, if the database exists). Exit 1 if the target
    cannot be fetched or parsed.
    """
    from monitor.crawler import dry_run
    from monitor.detect import build_detectors
    from monitor.fetch import FetchError
    from monitor.sources import SourceError

    (target,) = _choose_targets(state.config, (name,))
    store: Store | None = None
    if state.db_path.exists():
        try:
            store = opened = Store(state.db_path, readonly=True)
        except StoreError as exc:
            fail(str(exc), 2)
        state.tell_how_opened(opened)
    else:
        click.echo(f"weightwatch: no database at {state.db_path}: digests are not matched, "
                   f"only rules", err=True)
    try:
        detectors = build_detectors(state.config, store)
        infohashes = store.registry.infohashes() if store is not None else []
    finally:
        if store is not None:
            store.close()
    try:
        previews = run_interruptible(dry_run(target, state.config, detectors,
                                             infohashes=infohashes))
    except (FetchError, SourceError) as exc:
        fail(f"{name}: {exc}", 1)
    except asyncio.CancelledError:
        fail("interrupted", 130)
    if fmt == "table":
        rows = [{"document": p.document.url, "title": p.document.title,
                 "hits": ", ".join(f"{h.kind}:{h.indicator}" for h in p.hits),
                 "text": p.document.text} for p in previews]
        emit(rows, fmt, table_columns=("document", "title", "hits", "text"),
             empty="the target yielded no documents")
        found = sum(len(p.hits) for p in previews)
        click.echo(f"{len(previews)} documents, {found} would-be hits; nothing was recorded",
                   err=True)
        return
    emit([{"key": p.document.key, "url": p.document.url, "title": p.document.title,
           "author": p.document.author, "posted_at": p.document.posted_at,
           "text": p.document.text, "links": p.document.links, "extras": p.document.extras,
           "hits": [{"kind": h.kind, "severity": h.severity, "indicator": h.indicator,
                     "indicator_type": h.indicator_type, "model": h.model,
                     "artifact": h.artifact, "recipient": h.recipient, "rule": h.rule,
                     "context": h.context} for h in p.hits]} for p in previews], fmt)


@click.command("crawl")
@click.option("--target", "names", multiple=True, help="Only this target (repeatable).")
@format_option
@click.pass_obj
def crawl(state: State, names: tuple[str, ...], fmt: str) -> None:
    """One pass over the enabled targets, then send pending alerts, then exit.

    Exit 1 if any target failed.
    """
    from monitor.alerts import Alerter
    from monitor.crawler import crawl_once

    chosen = _choose_targets(state.config, names)
    with state.store() as store:
        store.close_abandoned_runs()
        try:
            results = run_interruptible(crawl_once(state.config, store, chosen))
        except asyncio.CancelledError:
            fail("interrupted; everything recorded so far is kept", 130)
        flush = Alerter(store, state.config, clock=system_clock).flush()
        failure = store.storage_failure
    rows = [{"target": r.target, "run_id": r.run_id, "status": r.status,
             "documents": r.documents_seen, "new_documents": r.documents_new,
             "changed_documents": r.documents_changed, "new_hits": r.hits_new,
             "error": r.error} for r in results]
    emit(rows, fmt)
    if fmt == "table":
        click.echo(f"alerts: {flush.emails_sent} email(s) sent for {flush.alerts_sent} hit(s), "
                   f"{flush.alerts_pending} pending" + (f" ({flush.error})" if flush.error else ""),
                   err=True)
    if failure is not None:
        fail(str(failure), 1)
    if any(r.status != "ok" for r in results):
        sys.exit(1)


def _choose_targets(config: Config, names: tuple[str, ...]) -> list[Target]:
    if not names:
        return [t for t in config.targets if t.enabled]
    chosen = []
    for name in names:
        try:
            chosen.append(config.target(name))
        except KeyError:
            known = ", ".join(t.name for t in config.targets) or "none"
            fail(f"no target named {name!r} in {config.path} (known: {known})", 2)
    return chosen


@click.command("run")
@click.option("--metrics-addr", metavar="[HOST:]PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (HOST 127.0.0.1 "
                   "unless given; port 0 picks a free one, logged in `daemon_started`).")
@click.option("--metrics-public", is_flag=True,
              help="Allow a non-loopback --metrics-addr: there is no login, so whoever can "
                   "reach it reads target names and hit counts.")
@click.option("--queue", "queue_url", metavar="URL",
              help="Schedule and write only: each run goes to `weightwatch worker` processes "
                   "through this queue (redis://HOST:PORT/DB, or sqlite:///PATH on one "
                   "machine); see docs/scaling.md.")
@click.pass_obj
def run(state: State, metrics_addr: str | None, metrics_public: bool,
        queue_url: str | None) -> None:
    """Run the daemon: crawl every enabled target on its schedule until SIGTERM/SIGINT.

    It records a heartbeat in the database (see `weightwatch health`). Exit 1 if the
    metrics address cannot be bound. With --queue, workers crawl and this process writes.
    """
    from monitor.daemon import run_daemon
    from monitor.listening import is_loopback, parse_address

    if not any(t.enabled for t in state.config.targets):
        fail(f"{state.config.path or '<defaults>'}: no enabled targets to crawl", 2)
    address = None
    if metrics_addr is not None:
        try:
            address = parse_address(metrics_addr)
        except ValueError as exc:
            fail(f"--metrics-addr {exc}", 2)
        if not metrics_public and not is_loopback(address[0]):
            fail(f"--metrics-addr {address[0]} is not a loopback address and the metrics have "
                 f"no login; add --metrics-public to serve them to whoever can reach it", 2)
    queue = open_queue(queue_url) if queue_url else None
    with state.store() as store:
        metrics = url = None
        if address is not None:
            from monitor.metrics import Metrics

            metrics = Metrics(store.path, (t.name for t in state.config.targets if t.enabled))
            try:
                url = metrics.serve(*address)
            except OSError as exc:
                fail(f"cannot listen on {metrics_addr}: {exc.strerror or exc}", 1)
        try:
            asyncio.run(run_daemon(state.config, store, metrics=metrics, metrics_url=url,
                                   queue=queue))
        finally:
            if metrics is not None:
                metrics.close()
            if queue is not None:
                queue.close()


COMMANDS = (check_config, targets, crawl, run)
