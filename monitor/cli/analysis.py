"""The analysts' views: `hits` (and triage), `incidents`, `search`, `report`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from monitor.cli.common import (
    HIT_JSON_COLUMNS,
    HIT_TABLE_COLUMNS,
    OPERATOR_ENV,
    State,
    fail,
    format_option,
    operator,
    refuse_unknown,
    since_iso,
)
from monitor.models import HIT_STATUSES, KINDS, SEVERITIES
from monitor.output import cell, emit, plural
from monitor.search import SCOPES
from monitor.store import HIT_SORTS, Store
from monitor.store.hits import HitFilter

F = TypeVar("F", bound=Callable[..., Any])

# `hits show` lists this many of the incident's other hits; JSON has them all.
SHOWN_SIBLINGS = 20


def hit_filters(command: F) -> F:
    """The options that pick hits, as `hits` lists them and the triage commands select
    them: one definition, so both read a filter the same way."""
    options = (
        click.option("--since", help="Only hits first seen within this duration, e.g. 24h, 7d."),
        click.option("--until", "until", help="Only hits first seen more than this long ago."),
        click.option("--severity", multiple=True, type=click.Choice(SEVERITIES)),
        click.option("--kind", multiple=True, type=click.Choice(KINDS)),
        click.option("--model"),
        click.option("--target"),
        click.option("--recipient"),
        click.option("--status", multiple=True, type=click.Choice(HIT_STATUSES)),
        click.option("--text", help="Only hits whose indicator, context or URL holds these "
                                    "words (the last may be the start of one, e.g. of a "
                                    "digest)."),
    )
    for option in reversed(options):
        command = option(command)
    return command


FILTER_NAMES = ("since", "until", "severity", "kind", "model", "target", "recipient",
                "status", "text")


def _filter(state: State, store: Store, given: dict[str, object]) -> HitFilter:
    """The options of `hit_filters` as `Store.hits` takes them, names checked."""
    refuse_unknown(state, store, target=cast("str | None", given["target"]),
                   model=cast("str | None", given["model"]))
    return cast(HitFilter, {
        **{name: given[name] for name in FILTER_NAMES if name not in ("since", "until")},
        "since": since_iso(cast("str | None", given["since"])),
        "until": since_iso(cast("str | None", given["until"]), "--until")})


@click.group("hits", invoke_without_command=True)
@hit_filters
@click.option("--sort", type=click.Choice(list(HIT_SORTS)), default="severity",
              show_default=True,
              help="severity: worst, then newest; newest or oldest first seen; score: "
                   "highest first; last-seen: most recently seen again.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many hits.")
@click.option("--after", "cursor", help="The next page: the cursor the previous page printed "
                                        "(with the same --sort).")
@format_option
@click.pass_context
def hits(ctx: click.Context, /, sort: str, limit: int | None, cursor: str | None, fmt: str,
         **given: object) -> None:
    """List hits, worst and newest first (or in --sort order). With --limit, a full page
    ends with the cursor of the next one on stderr (`--after CURSOR`), so stdout stays
    the data."""
    if ctx.invoked_subcommand is not None:
        # `hits --severity low ack 5` would ack hit 5 whatever its severity, and a bulk
        # `hits --target x ack --incident K` would ignore the target: say so, change nothing.
        put = [f"--{name}" for name, value in given.items() if value]
        put += [f"--{name}" for name, value, default in (
            ("sort", sort, "severity"), ("limit", limit, None), ("after", cursor, None),
            ("format", fmt, "table")) if value != default]
        if put:
            fail(f"hits: {', '.join(put)} before `{ctx.invoked_subcommand}` would be "
                 f"ignored; put it after: hits {ctx.invoked_subcommand} {put[0]} ...", 2)
        return
    state: State = ctx.obj
    try:
        after = Store.parse_cursor(cursor, sort) if cursor else None
    except ValueError as exc:
        fail(f"--after: {exc}", 2)
    with state.store(write=False) as store:
        rows = store.hits(**_filter(state, store, given), sort=sort, after=after, limit=limit)
    emit(rows, fmt, columns=HIT_JSON_COLUMNS, table_columns=HIT_TABLE_COLUMNS, empty="no hits")
    if limit and len(rows) == limit:
        click.echo(f"next page: --after {Store.hit_cursor(rows[-1], sort)}", err=True)


@hits.command("show")
@click.argument("hit_id", type=int)
@click.option("--snapshot", "snapshot_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the stored snapshot of the page (the bytes as fetched) here.")
@format_option
@click.pass_obj
def hits_show(state: State, hit_id: int, snapshot_path: str | None, fmt: str) -> None:
    """One hit with its evidence: where, when, what matched, the snapshot's SHA-256, its
    triage history and the other hits of its incident."""
    from monitor.incidents import incident_of

    with state.store(write=False) as store:
        hit = store.hit(hit_id)
        if hit is None:
            fail(f"no hit with id {hit_id} in {state.db_path}", 1)
        doc = store.document(hit["document_id"]) if hit["document_id"] else None
        history = store.triage_history(hit_id)
        incident, worst = incident_of(store, hit, state.config.alerts.group_by,
                                      shown=SHOWN_SIBLINGS)
        snapshot = (store.snapshot(doc["snapshot_sha256"])
                    if snapshot_path and doc and doc["snapshot_sha256"] else None)
    if snapshot_path:
        if snapshot is None:
            fail(f"hit {hit_id} has no stored snapshot", 1)
        _write_snapshot(Path(snapshot_path), snapshot)
    others = [i for i in incident.pop("hit_ids") if i != hit_id]
    evidence = {**hit, "document": doc, "triage": history,
                "incident": {**incident, "other_hit_ids": others}}
    if fmt != "table":
        # The document's extras are JSON text in the database, structured in the output.
        document = {**doc, "extras": json.loads(doc["extras"] or "{}")} if doc else None
        emit([{**evidence, "document": document}], fmt)
        return
    width = max(len(k) for k in hit)
    for key in HIT_JSON_COLUMNS:
        click.echo(f"{key.rjust(width)}  {cell(hit.get(key))}")
    if doc:
        click.echo("\nevidence")
        for key in ("url", "title", "author", "posted_at", "fetched_at", "content_sha256",
                    "snapshot_sha256"):
            click.echo(f"{key.rjust(width)}  {cell(doc.get(key))}")
    if history:
        click.echo("\ntriage")
        for entry in history:
            note = f": {cell(entry['note'])}" if entry["note"] else ""
            click.echo(f"{cell(entry['at'])}  {entry['status']} by {cell(entry['by'])}{note}")
    hits_n, places = incident["hits"], incident["locations"]
    click.echo(f"\nincident {cell(incident['key'])}: {hits_n} {plural(hits_n, 'hit')} at "
               f"{places} {plural(places, 'location')}")
    for other in worst:
        click.echo(f"{str(other['id']).rjust(width)}  {other['severity']:<8} "
                   f"{other['kind']:<9} {other['status']:<14} {cell(other['url'])}")
    if len(others) > len(worst):
        click.echo(f"{'...'.rjust(width)}  {len(others) - len(worst)} more: "
                   f"`hits show {hit_id} --format json` lists them all")


def _write_snapshot(path: Path, body: bytes) -> None:
    """Write a snapshot for an analyst, never following a link planted at `path` and
    never overwriting a file silently (it is evidence, and so may be what is there)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
    except FileExistsError:
        fail(f"--snapshot: {path} exists; choose another name", 1)
    except OSError as exc:
        fail(f"--snapshot: cannot write {path}: {exc.strerror}", 1)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
    except OSError as exc:
        # A part of the evidence is worse than none: it would pass for the page.
        path.unlink(missing_ok=True)
        fail(f"--snapshot: cannot write {path}: {exc.strerror}; nothing was kept", 1)
    click.echo(f"snapshot: {len(body)} bytes written to {path} "
               f"(sha256 {hashlib.sha256(body).hexdigest()})", err=True)


# A bulk change selected by filters alone needs --yes above this many hits: a filter
# sweeps wider than meant more easily than an incident key or a list of ids.
BULK_CONFIRM = 50


def _triage_command(status: str, name: str, summary: str) -> None:
    @hits.command(name, help=summary + _TRIAGE_HELP)
    @click.argument("hit_ids", nargs=-1, type=int, metavar="[ID]...")
    @click.option("--incident", "incident_key",
                  help="Every hit of this incident (its key as `incidents` prints it, e.g. "
                       "model:heron-7b|release:v1).")
    @hit_filters
    @click.option("--note", help="Why (kept with who and when).")
    @click.option("--by", help=f"Who triages [default: ${OPERATOR_ENV}, else the login "
                               f"name].")
    @click.option("--dry-run", is_flag=True,
                  help="Only count (and with --format json, list) the hits it would change.")
    @click.option("--yes", is_flag=True,
                  help=f"Change more than {BULK_CONFIRM} hits selected by filters alone.")
    @click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table",
                  show_default=True, help="json: what changed (a stable contract).")
    @click.pass_obj
    def command(state: State, /, hit_ids: tuple[int, ...], incident_key: str | None,
                note: str | None, by: str | None, dry_run: bool, yes: bool, fmt: str,
                **given: object) -> None:
        who = operator(by)
        filtered = any(given.values())
        if hit_ids and (incident_key or filtered):
            fail(f"hits {name}: give hit ids, or --incident and filters, not both", 2)
        if not (hit_ids or incident_key or filtered):
            fail(f"hits {name}: which hits? Give ids, --incident KEY or filters such as "
                 f"--severity (see --help)", 2)
        verb = status.replace("_", " ")
        with state.store(write=not dry_run) as store:
            if hit_ids:
                ids = sorted(set(hit_ids))
                if dry_run:
                    found = {h["id"] for h in map(store.hit, ids) if h is not None}
                    missing = [i for i in ids if i not in found]
                else:
                    missing = store.triage(ids, status, by=who, note=note)
                if missing:
                    fail(f"no hit with id {', '.join(map(str, missing))} in {state.db_path}; "
                         f"nothing changed", 1)
            else:
                filters = _filter(state, store, given)
                incident = None
                if incident_key:
                    from monitor.incidents import incident_labels

                    group_by = tuple(state.config.alerts.group_by)
                    labels = incident_labels(store, group_by, incident_key)
                    if labels is None:
                        fail(f"--incident {incident_key!r}: no such incident in "
                             f"{state.db_path} (see `weightwatch incidents --all`)", 1)
                    incident = (group_by, labels)
                confirm = not (dry_run or incident or yes)
                if dry_run or confirm:
                    ids = store.triage_matching(status, by=who, note=note, filters=filters,
                                                incident=incident, dry_run=True)
                if confirm and len(ids) > BULK_CONFIRM:
                    fail(f"hits {name}: these filters select {len(ids)} hits; nothing "
                         f"changed: add --yes to mark them {verb} (or --dry-run to list "
                         f"them)", 2)
                if not dry_run:
                    ids = store.triage_matching(status, by=who, note=note, filters=filters,
                                                incident=incident)
        if fmt == "json":
            emit([{"status": status, "by": who, "note": note, "dry_run": dry_run,
                   "incident": incident_key, "hits": len(ids), "hit_ids": ids}], "json")
            return
        what = f"{len(ids)} {plural(len(ids), 'hit')}"
        where = f" of incident {incident_key}" if incident_key else ""
        if dry_run:
            click.echo(f"would mark {what}{where} {verb} (dry run: nothing changed)")
        else:
            click.echo(f"{what}{where} marked {verb} by {cell(who)}")


_TRIAGE_HELP = f"""

    \b
    Which hits: ids, or every hit of --incident KEY, or those the filters select (as
    `hits` lists them); --incident and filters together narrow the incident. A selection
    by incident or filters takes only the hits this changes, by default the open ones
    (--status to choose). Filters alone selecting more than {BULK_CONFIRM} hits need --yes.
    Who: --by, else ${OPERATOR_ENV}, else the login name (exit 2 if none is known)."""

_triage_command("acknowledged", "ack", "Mark hits as seen and being handled.")
_triage_command("resolved", "resolve", "Mark hits as dealt with (taken down, reported).")
_triage_command("false_positive", "false-positive",
                "Mark hits as false positives: their unsent alerts are dropped and the same "
                "indicator at the same URL is never alerted again.")


INCIDENT_JSON_COLUMNS = ("key", "labels", "severity", "hits", "open", "statuses", "kinds",
                         "locations", "recipients", "first_seen", "last_seen", "last_emailed",
                         "hit_ids")
# A narrow terminal keeps the labels that name the incident, how many hits and whose copy.
INCIDENT_DROP_FIRST = ("last_emailed", "first_seen", "kinds", "locations", "last_seen",
                       "statuses", "open")
# The table shows the incident's labels (model, release...) as columns in place of its key.
INCIDENT_TABLE_COLUMNS = ("hits", "open", "statuses", "recipients", "locations", "kinds",
                          "first_seen", "last_seen", "last_emailed")


@click.command("incidents")
@click.option("--since", help="Only hits first seen within this duration, e.g. 7d.")
@click.option("--model", help="Only this model's incidents.")
@click.option("--all", "include_closed", is_flag=True,
              help="Also resolved and false-positive hits (and incidents with only those).")
@format_option
@click.pass_obj
def incidents_cmd(state: State, since: str | None, model: str | None, include_closed: bool,
                  fmt: str) -> None:
    """Hits grouped into incidents as the alerter groups them (`alerts.group_by`): one
    line per leak however many mirrors it is on, worst and most recent first. By default
    only open (new or acknowledged) hits count."""
    from monitor.incidents import incidents

    since_at = since_iso(since)
    with state.store(write=False) as store:
        refuse_unknown(state, store, model=model)
        rows = incidents(store, state.config.alerts.group_by, since=since_at, model=model,
                         include_closed=include_closed)
    group_by = tuple(state.config.alerts.group_by)
    if fmt == "table":
        rows = [{**r, **r["labels"], "kinds": ",".join(r["kinds"]),
                 "recipients": ", ".join(r["recipients"]),
                 "statuses": " ".join(f"{n} {s.replace('_', ' ')}"
                                      for s, n in r["statuses"].items())} for r in rows]
    emit(rows, fmt, columns=INCIDENT_JSON_COLUMNS,
         table_columns=("severity", *group_by, *INCIDENT_TABLE_COLUMNS),
         drop=INCIDENT_DROP_FIRST, empty="no open incidents")
    if fmt == "table" and rows:
        # The table names an incident by its labels; triage takes its key.
        import shlex

        click.echo(f"triage the first: weightwatch hits ack --incident "
                   f"{shlex.quote(rows[0]['key'])}", err=True)


SEARCH_JSON_COLUMNS = ("kind", "id", "target", "url", "title", "indicator", "severity",
                       "document_id", "hits", "first_seen", "last_seen", "fetched_at", "rank",
                       "snippet", "highlights")


@click.command("search")
@click.argument("query", nargs=-1, required=True, metavar="QUERY")
@click.option("--in", "scope", type=click.Choice(SCOPES), default="all", show_default=True,
              help="Search the documents, the hits or both.")
@click.option("--since", help="Only documents last seen and hits first seen within this "
                              "duration, e.g. 7d.")
@click.option("--target", help="Only this target's documents and hits.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many results.")
@format_option
@click.pass_obj
def search_command(state: State, query: tuple[str, ...], scope: str, since: str | None,
                   target: str | None, limit: int, fmt: str) -> None:
    """Full-text search over stored documents and hits, best match (bm25) first, each
    with a snippet around the match ([marked] in a table).

    \b
    QUERY is FTS5 syntax: words, "a phrase", prefix*, AND / OR / NOT, NEAR(a b, 10),
    column:word (title, author, text, url; indicator, context, model, artifact,
    recipient). Pasted text with punctuation (heron-7b, a URL, a magnet link) is searched
    as the phrase of its words. A malformed query exits 2 with one line saying why.
    """
    from monitor.search import WINDOW, SearchError, search

    with state.store(write=False) as store:
        refuse_unknown(state, store, target=target)
        try:
            found = search(store, " ".join(query), scope=scope, since=since_iso(since),
                           target=target, limit=limit)
        except SearchError as exc:
            fail(f"search: {exc}", 2)
    if fmt != "table":
        emit([r.as_dict() for r in found.results], fmt, columns=SEARCH_JSON_COLUMNS)
    else:
        emit([{"kind": r.kind, "id": r.id, "target": r.target, "first_seen": r.first_seen,
               "title": r.title if r.kind == "document" else r.indicator,
               "snippet": r.marked_snippet()} for r in found.results], fmt,
             empty="no matches")
    for table in found.windowed:
        click.echo(f"search: more than {WINDOW:,} {table} match; only the newest {WINDOW:,} "
                   f"were ranked (add words or a \"phrase\" to narrow the query)", err=True)


@click.command("report")
@click.option("--since", default="7d", show_default=True,
              help="Hits first seen within this duration, e.g. 24h, 30d.")
@click.option("--until", help="Only hits first seen more than this long ago.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (replaced atomically; never through a symlink).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many incidents to show in full.")
@click.option("--all", "include_closed", is_flag=True,
              help="Incidents count resolved and false-positive hits too.")
@click.pass_obj
def report_command(state: State, since: str, until: str | None, out: str, top: int,
                   include_closed: bool) -> None:
    """Write a self-contained HTML report for people away from the terminal: hits over
    time by severity (an SVG chart), the top incidents with whose copy leaked and where,
    and the failing targets. It opens offline in any browser, prints, and runs nothing
    (no script; a Content-Security-Policy forbids any request). Exit 1 if it cannot be
    written."""
    from monitor.health import watched
    from monitor.report import ReportError, build_report, write_report

    since_at, until_at = since_iso(since), since_iso(until, "--until")
    if since_at and until_at and until_at <= since_at:
        fail(f"--until {until} ends the period before --since {since} starts it", 2)
    with state.store(write=False) as store:
        report = build_report(store, state.config.alerts.group_by, since_at, until_at,
                              top=top, include_closed=include_closed,
                              targets=watched(state.config.targets))
    try:
        write_report(Path(out), report.html)
    except ReportError as exc:
        fail(f"--out: {exc}", 1)
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror or exc}", 1)
    click.echo(f"report: {report.hits} {plural(report.hits, 'hit')}, {report.incidents} "
               f"{plural(report.incidents, 'incident')} "
               f"written to {out}",
               err=True)


COMMANDS = (hits, incidents_cmd, search_command, report_command)
