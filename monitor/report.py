"""`weightwatch report`: one self-contained HTML page on a period's hits, for people who
were not at the terminal.

Security teams forward it to management, who open it offline, in any browser, and print
it. So everything is in the one file: the chart is SVG drawn here, the styles are inline,
there is no script and nothing is fetched (no font, image or stylesheet). Most of what it
shows was copied from crawled pages, which are hostile: every value is escaped, and a
Content-Security-Policy forbids the page any script or request, so that even markup that
slipped through could neither run nor call home.

The markup is also well-formed XML (void elements closed, attributes quoted, only XML's
entities), so the tests can hold it to a strict parser, not only a forgiving one.
"""

from __future__ import annotations

import html
import os
import secrets
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil
from pathlib import Path
from typing import Any

from monitor import health
from monitor.alerting.messages import (
    NO_RECIPIENT,
    WHOSE_COPY_NOTE,
    by_location,
    clean_line,
    html_url,
    parse_time,
    severity_colours,
    severity_counts,
    show_command,
    when,
)
from monitor.incidents import Incident, group_incidents
from monitor.models import OPEN_STATUSES, SEVERITIES, ReleasedHit, TargetStateRow, severity_rank
from monitor.output import plural
from monitor.store import Store

# The page may load nothing and run nothing; only its own <style> and inline styles apply.
# base-uri and form-action are not covered by default-src, so they are closed explicitly.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'none'")
DISMISSED = "false_positive"
# An incident lists this many of its locations; `hits show` of its worst hit lists all.
SHOWN_LOCATIONS = 5
HOUR, DAY, WEEK = timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)
# Day bars up to about a quarter; past that a bar a day is too thin to see, so weeks.
MAX_DAY_BUCKETS = 92
# At most this many x-axis labels, so that they never overlap.
MAX_X_LABELS = 12
# The chart's canvas (SVG user units) and the margins its axes and legend take.
WIDTH, HEIGHT = 880, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 64


@dataclass
class Report:
    """The page and what the command line says it holds."""

    html: str
    hits: int
    incidents: int


class ReportError(Exception):
    """One line saying why the report could not be written."""


def build_report(store: Store, group_by: Sequence[str], since: str | None,
                 until: str | None = None, *, now: datetime | None = None, top: int = 10,
                 include_closed: bool = False,
                 targets: Collection[str] | None = None) -> Report:
    """The report on the hits first seen from `since` (ISO 8601; None for all time) up to
    `until` (default `now`), with the `top` incidents grouped by `group_by` as the alerter
    groups them, and the failing targets among `targets` (None: every target with state).

    Hits dismissed as false positives are counted by status but left out of the chart
    and of the severity counts, which say what was found; incidents, as in `weightwatch
    incidents`, count open hits only unless `include_closed`.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    # One read serves the chart, the counts and the incidents, so they cannot disagree.
    rows = [r for r in store.hits_with_release(since=since)
            if until is None or r["first_seen"] < until]
    found = [r for r in rows if r["status"] != DISMISSED]
    grouped = group_incidents(
        rows if include_closed else [r for r in rows if r["status"] in OPEN_STATUSES],
        group_by, store.groups_sent())
    end = parse_time(until) if until else now
    start = (parse_time(since) if since
             else min((parse_time(r["first_seen"]) for r in rows), default=end))
    failing = health.failing(store.all_target_states(), targets)
    body = "\n".join([
        _header(store, start, end, now, since is None),
        _summary(rows, found, grouped),
        _chart_section(found, start, end, len(rows) - len(found)),
        _incidents_section(grouped, top, include_closed),
        _targets_section(failing),
        _how_to_read(group_by),
    ])
    title = f"weightwatch report {_day(start)} to {_day(end)}"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" />\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_esc(CSP)}" />\n'
            f'<meta name="referrer" content="no-referrer" />\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1" />\n'
            f"<title>{_esc(title)}</title>\n<style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
    return Report(page, hits=len(found), incidents=len(grouped))


def write_report(path: Path, text: str) -> None:
    """Write `text` to `path` atomically: a temporary file in the same folder, renamed
    over `path`, so a reader (or a mail job picking the file up) never sees half a report
    and a failed write leaves any previous report whole.

    A symlink at `path` is refused rather than replaced: whoever planted it meant the
    report to land elsewhere, and silently replacing the link would hide that.
    """
    if path.is_symlink():
        raise ReportError(f"{path} is a symbolic link; refusing to write through it")
    # A fresh name opened exclusively, never following a link, with the mode a plain
    # open() would give (0666 less the umask, applied by the kernel).
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- the parts of the page --------------------------------------------------------------


def _header(store: Store, start: datetime, end: datetime, now: datetime,
            all_time: bool) -> str:
    period = (f"all time: {when(start)} (the first hit) to {when(end)}" if all_time
              else f"{when(start)} to {when(end)} ({_span(end - start)})")
    facts = [("Period", period), ("Generated", when(now)), ("Database", str(store.path))]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts)
    return (f'<header><h1>weightwatch report</h1>\n<table class="facts">{rows}</table>\n'
            f'<p class="caution">Locations and indicators below were copied from crawled '
            f"pages: treat them as untrusted. Links lead to the original places; this file "
            f"holds no copy of them.</p></header>")


def _summary(rows: list[ReleasedHit], found: list[ReleasedHit],
             grouped: list[Incident]) -> str:
    if not rows:
        return ('<section id="summary"><h2>Summary</h2>\n'
                '<p class="empty">No hits in this period.</p></section>')
    severities = dict(severity_counts(r["severity"] for r in found))
    statuses = Counter(r["status"] for r in rows)
    by_severity = "".join(
        f"<tr><th>{_badge(s)}</th><td class=\"num\">{severities.get(s, 0)}</td></tr>"
        for s in sorted({*SEVERITIES, *severities}, key=severity_rank))
    by_status = "".join(
        f"<tr><th>{_esc(s.replace('_', ' '))}</th><td class=\"num\">{n}</td></tr>"
        for s, n in sorted(statuses.items(), key=lambda item: _status_order(item[0])))
    dismissed = len(rows) - len(found)
    note = f" (and {dismissed} dismissed as false positives)" if dismissed else ""
    return (f'<section id="summary"><h2>Summary</h2>\n'
            f"<p><strong>{len(found)}</strong> {plural(len(found), 'hit')}{_esc(note)} in "
            f"<strong>{len(grouped)}</strong> {plural(len(grouped), 'incident')}.</p>\n"
            f'<div class="counts"><table><caption>Hits by severity</caption>{by_severity}'
            f"</table>\n<table><caption>Hits by status</caption>{by_status}</table></div>"
            f"</section>")


def _chart_section(found: list[ReleasedHit], start: datetime, end: datetime,
                   dismissed: int) -> str:
    if not found:
        note = f" ({dismissed} dismissed as false positives)" if dismissed else ""
        return (f'<section id="chart"><h2>Hits over time</h2>\n'
                f'<p class="empty">No hits in this period{_esc(note)}.</p></section>')
    return (f'<section id="chart"><h2>Hits over time</h2>\n{hits_chart(found, start, end)}'
            f"</section>")


def hits_chart(rows: Iterable[Mapping[str, Any]], start: datetime, end: datetime) -> str:
    """Hits (`severity`, `first_seen`) per hour, day or week between `start` and `end` as
    an inline SVG of bars stacked by severity, worst at the bottom where the eye starts.

    Each bar is a <rect> in its severity's <g class="series">, carrying its bucket and
    count (`data-bucket`, `data-count`) and a <title> a pointer shows, so the picture can
    be read back by a program, a test or a screen reader.
    """
    rows = list(rows)
    step = _bucket_step(end - start)
    counts = Counter((r["severity"], _floor(parse_time(r["first_seen"]), step)) for r in rows)
    # Every bucket from the period's first to its last (end is exclusive), and any a hit
    # with a later clock than ours falls in, so that no counted hit is off the chart.
    last = max([_floor(end - timedelta(microseconds=1), step), *(b for _, b in counts)])
    buckets = [_floor(start, step)]
    while buckets[-1] < last:
        buckets.append(buckets[-1] + step)
    present = sorted({severity for severity, _ in counts}, key=severity_rank)
    totals = Counter(r["severity"] for r in rows)
    peak = max(sum(counts[s, b] for s in present) for b in buckets)
    tick = _tick_step(peak)
    top_value = ceil(peak / tick) * tick
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(buckets)
    bar_w = max(slot * 0.8, 1.0)
    unit = plot_h / top_value
    base = TOP + plot_h

    parts = [_axes(tick, top_value, unit, base, plot_w),
             _x_labels(buckets, step, slot, base), _legend(present, totals)]
    stacked: Counter[datetime] = Counter()  # how high each bucket's bar already reaches
    for severity in present:
        bars = []
        for i, bucket in enumerate(buckets):
            n = counts[severity, bucket]
            if not n:
                continue
            y = base - (stacked[bucket] + n) * unit
            stacked[bucket] += n
            label = f"{_bucket_label(bucket, step)}: {n} {severity}"
            bars.append(f'<rect x="{LEFT + i * slot + (slot - bar_w) / 2:.1f}" y="{y:.1f}" '
                        f'width="{bar_w:.1f}" height="{n * unit:.1f}" '
                        f'data-bucket="{_esc(bucket.isoformat(timespec="minutes"))}" '
                        f'data-count="{n}"><title>{_esc(label)}</title></rect>')
        fill = severity_colours(severity)[0]
        parts.append(f'<g class="series" data-severity="{_esc(severity)}" fill="{fill}" '
                     f'stroke="#fff" stroke-width="0.5">{"".join(bars)}</g>')
    per = {HOUR: "hour", DAY: "day", WEEK: "week"}[step]
    title = f"Hits first seen per {per}, by severity"
    desc = (f"Stacked bars, one per {per} (UTC) from {when(buckets[0])} to "
            f"{when(buckets[-1] + step)}: {len(rows)} {plural(len(rows), 'hit')}, "
            + ", ".join(f"{totals[s]} {s}" for s in present)
            + f"; the busiest {per} had {peak}.")
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-labelledby="chart-title chart-desc">'
            f'<title id="chart-title">{_esc(title)}</title>'
            f'<desc id="chart-desc">{_esc(desc)}</desc>\n' + "\n".join(parts) + "</svg>")


def _axes(tick: int, top_value: int, unit: float, base: float, plot_w: float) -> str:
    lines = []
    for value in range(0, top_value + 1, tick):
        y = base - value * unit
        lines.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{"#444" if value == 0 else "#ddd"}" />'
                     f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{value}</text>')
    middle = TOP + (base - TOP) / 2
    lines.append(f'<text x="14" y="{middle:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {middle:.1f})" class="axis-title">hits</text>')
    return "".join(lines)


def _x_labels(buckets: list[datetime], step: timedelta, slot: float, base: float) -> str:
    every = ceil(len(buckets) / MAX_X_LABELS)
    labels, last_day = [], None
    for i, bucket in enumerate(buckets):
        if i % every:
            continue
        x = LEFT + (i + 0.5) * slot
        if step == HOUR:
            # The hour on the first line, the date under it wherever the day changes.
            day = bucket.strftime("%b %d")
            text = (f'<tspan x="{x:.1f}">{bucket:%H:00}</tspan>'
                    + (f'<tspan x="{x:.1f}" dy="13">{day}</tspan>' if day != last_day else ""))
            last_day = day
        else:
            text = bucket.strftime("%b %d")
        labels.append(f'<text class="x-label" x="{x:.1f}" y="{base + 16:.1f}" '
                      f'text-anchor="middle">{text}</text>')
    name = {HOUR: "hour", DAY: "day", WEEK: "week (from Monday)"}[step]
    labels.append(f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.1f}" y="{HEIGHT - 8}" '
                  f'text-anchor="middle" class="axis-title">first seen, per {name} '
                  f"(UTC)</text>")
    return "".join(labels)


def _legend(present: list[str], totals: Counter[str]) -> str:
    labels = [f"{severity} ({totals[severity]})" for severity in present]
    # There are no text metrics without a browser: every item gets the room the longest
    # label needs in a wide font, which also lines the items up.
    pitch = 36 + 9 * max(len(label) for label in labels)
    items = [f'<rect x="{LEFT + i * pitch}" y="12" width="12" height="12" '
             f'fill="{severity_colours(severity)[0]}" />'
             f'<text x="{LEFT + i * pitch + 17}" y="22">{_esc(label)}</text>'
             for i, (severity, label) in enumerate(zip(present, labels))]
    return f'<g class="legend">{"".join(items)}</g>'


def _incidents_section(grouped: list[Incident], top: int, include_closed: bool) -> str:
    which = "" if include_closed else "open "
    if not grouped:
        return (f'<section id="incidents"><h2>Top incidents</h2>\n'
                f'<p class="empty">No {which}incidents in this period.</p></section>')
    shown = grouped[:top]
    more = (f'<p>{len(shown)} of {len(grouped)} {which}incidents, worst and most recent '
            f"first; <code>weightwatch incidents</code> lists them all.</p>"
            if len(grouped) > len(shown) else
            f"<p>Every {which}incident, worst and most recent first.</p>")
    return (f'<section id="incidents"><h2>Top incidents</h2>\n{more}\n'
            + "\n".join(_incident(i, n) for n, i in enumerate(shown, start=1)) + "</section>")


def _incident(incident: Incident, number: int) -> str:
    s = incident.summary()
    worst = min(incident.hits, key=lambda h: (severity_rank(h["severity"]), h["id"]))
    recipients = ""
    if s["recipients"]:
        names = ", ".join(s["recipients"])
        recipients = (f'<p class="recipient">Whose copy leaked: <strong>{_esc(names)}'
                      f"</strong> ({_esc(WHOSE_COPY_NOTE)}).</p>")
    open_ = f"{s['open']} open" + "".join(
        f", {n} {status.replace('_', ' ')}" for status, n in
        sorted(s["statuses"].items(), key=lambda item: _status_order(item[0]))
        if status not in OPEN_STATUSES)
    facts = [("Hits", f"{s['hits']} ({open_})"), ("Locations", str(s["locations"])),
             ("Kinds", ", ".join(s["kinds"])),
             *([] if s["recipients"] else [("Whose copy", NO_RECIPIENT)]),
             ("First seen", when(parse_time(s["first_seen"]))),
             ("Last seen", when(parse_time(s["last_seen"]))),
             ("Last emailed", when(parse_time(s["last_emailed"])) if s["last_emailed"]
              else "not yet")]
    cells = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts)
    locations = _locations(incident.hits)
    return (f'<section class="incident" id="incident-{number}">'
            f"<h3>{number}. {_badge(s['severity'])} <code>{_esc(clean_line(s['key']))}"
            f"</code></h3>\n{recipients}"
            f'<table class="facts">{cells}</table>\n{locations}'
            f"<p>Evidence of its worst hit: <code>{_esc(show_command(dict(worst)))}</code></p>"
            f"</section>")


def _locations(hits: list[ReleasedHit]) -> str:
    """The incident's distinct URLs, worst and earliest first (as the alert email lists
    them), as inert text or (http and https only, exactly as shown) as links that send no
    referrer."""
    places = by_location(hits)
    items = [f'<li><span class="url">{html_url(place.url)}</span> '
             f'<span class="note">— {_esc(h["severity"])} {_esc(h["kind"])}, first seen '
             f"{_esc(when(parse_time(h['first_seen'])))}</span></li>"
             for place in places[:SHOWN_LOCATIONS] for h in place.hits[:1]]
    if len(places) > SHOWN_LOCATIONS:
        items.append(f"<li>and {len(places) - SHOWN_LOCATIONS} more</li>")
    return f'<ul class="locations">{"".join(items)}</ul>\n'


def _targets_section(failing: list[TargetStateRow]) -> str:
    if not failing:
        return ('<section id="targets"><h2>Failing targets</h2>\n'
                "<p>No target failed its last crawl.</p></section>")
    rows = []
    for s in failing:
        cells = [clean_line(s.get("name")), health.health(s),
                 str(int(s.get("consecutive_failures", 0))),
                 when(parse_time(last)) if (last := s.get("last_success_at")) else "never", clean_line(s.get("last_error"), 200)]
        rows.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return ('<section id="targets"><h2>Failing targets</h2>\n'
            f"<p>{len(failing)} {plural(len(failing), 'target')} could not be read at "
            f"{'its' if len(failing) == 1 else 'their'} last crawl; while a target fails, "
            f"leaks posted there go unseen.</p>\n"
            '<table class="grid"><tr><th>target</th><th>health</th><th>failures in a row'
            "</th><th>last success</th><th>last error</th></tr>"
            f"{''.join(rows)}</table></section>")


def _how_to_read(group_by: Sequence[str]) -> str:
    labels = ", ".join(group_by) or "nothing"
    points = [
        "A hit is one finding in one place (a post, a torrent listing, a file), counted in "
        "the period its first sighting falls in (UTC). Hits an analyst dismissed as false "
        "positives are counted by status but left out of the chart and the severity counts.",
        "By default, critical: an exact digest of a released file or torrent, or a recipient's "
        "watermark. High: the weights themselves after conversion, or a torrent listing "
        "released files' names and sizes. Medium: a torrent of the release's total size. "
        "Low: a mention.",
        f"An incident is the hits that share the alert grouping ({labels}): one leak "
        "mirrored in many places is one incident. Its counts cover this period; open hits "
        "are new or acknowledged ones.",
        "A recipient named on an incident is whose copy leaked: its watermark, or the "
        "digests of the copy registered for them, was found.",
        "Each incident ends with the command that shows its worst hit with the evidence: "
        "the page as fetched, its SHA-256, what matched. Add --snapshot FILE to save the "
        "page.",
        "A quiet period is reassuring only if no target is failing.",
    ]
    items = "".join(f"<li>{_esc(p)}</li>" for p in points)
    return f'<footer id="how-to-read"><h2>How to read this</h2><ul>{items}</ul></footer>'


# --- small helpers -----------------------------------------------------------------------


def _esc(value: Any) -> str:
    """Text or an attribute value made inert: quotes too, so it cannot leave an
    attribute."""
    return html.escape(str(value), quote=True)


def _badge(severity: str) -> str:
    fill, ink = severity_colours(severity)
    return (f'<span class="badge" style="background:{fill};color:{ink}">'
            f"{_esc(clean_line(severity, 20).upper())}</span>")


def _status_order(status: str) -> tuple[int, str]:
    # Open statuses first, in their own order (new before acknowledged), then the rest.
    return ((OPEN_STATUSES.index(status), "") if status in OPEN_STATUSES
            else (len(OPEN_STATUSES), status))


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _span(delta: timedelta) -> str:
    if delta >= 2 * DAY:
        return f"{round(delta / DAY, 1):g} days"
    return f"{round(delta / HOUR, 1):g} hours"


def _bucket_step(span: timedelta) -> timedelta:
    """Hours for up to two days, days up to a quarter, weeks beyond: enough bars to show a
    trend, few enough to see each one."""
    if span <= 2 * DAY:
        return HOUR
    return DAY if span <= MAX_DAY_BUCKETS * DAY else WEEK


def _floor(moment: datetime, step: timedelta) -> datetime:
    """The start of the bucket `moment` falls in: its hour, its day, or its week's Monday."""
    if step == HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if step == DAY else day - timedelta(days=day.weekday())


def _bucket_label(bucket: datetime, step: timedelta) -> str:
    return bucket.strftime("%Y-%m-%d %H:00" if step == HOUR else "%Y-%m-%d")


def _tick_step(peak: int) -> int:
    """The y axis's step: 1, 2 or 5 times a power of ten, for at most five steps."""
    magnitude = 1
    while True:
        for multiple in (1, 2, 5):
            if peak <= 5 * multiple * magnitude:
                return multiple * magnitude
        magnitude *= 10


STYLE = """
:root { color-scheme: light; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: #1a1a1a; background: #fff; max-width: 62rem; margin: 1.5rem auto;
       padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 .4rem; }
h2 { font-size: 1.2rem; border-bottom: 1px solid #bbb; padding-bottom: .2rem;
     margin-top: 1.6rem; }
h3 { font-size: 1rem; margin: 0 0 .4rem; }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: .15rem .8rem .15rem 0; }
th { font-weight: 600; }
caption { text-align: left; font-weight: 600; padding-bottom: .2rem; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.grid th, table.grid td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; }
.counts { display: flex; gap: 3rem; flex-wrap: wrap; }
.badge { display: inline-block; padding: 0 .4rem; border-radius: 3px; font-size: .8rem;
         font-weight: 700; letter-spacing: .03em; }
.caution, .note { color: #555; }
.empty { font-size: 1.1rem; font-weight: 600; }
code, .url { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
             font-size: .9em; overflow-wrap: anywhere; }
.incident { border: 1px solid #ccc; border-radius: 4px; padding: .6rem .8rem;
            margin: .8rem 0; break-inside: avoid; page-break-inside: avoid; }
.recipient { border-left: 5px solid #c62828; background: #fdecea; padding: .4rem .6rem;
             margin: .3rem 0 .5rem; }
.locations { margin: .4rem 0; padding-left: 1.2rem; }
svg.chart { width: 100%; height: auto; max-width: 880px; }
svg.chart text { font: 11px system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
                 sans-serif; fill: #333; }
svg.chart .axis-title { font-weight: 600; }
a { color: #0b57d0; }
@media print {
  body { margin: 0; max-width: none; font-size: 10.5pt; }
  a { color: inherit; text-decoration: none; }
  h2, #incidents > p { break-after: avoid; page-break-after: avoid; }
  #chart { break-inside: avoid; page-break-inside: avoid; }
}
"""
