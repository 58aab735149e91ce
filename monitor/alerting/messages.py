"""Alert messages: what an email or a webhook POST says, from outbox rows.

Everything that came from a crawled page (titles, authors, URLs, context, indicators,
artifact names) is treated as hostile: escaped in HTML, stripped of control characters
everywhere, and never placed in a header without removing CR/LF first.

An alert email is one incident, written to be acted on from its first screen: what it
says is computed once (`alert_view`, from the same incident summary `weightwatch
incidents` and the report use) and both parts, text and HTML, are rendered from that by
the Jinja2 templates in `templates/`, the HTML ones autoescaped. So the two parts cannot
say different things, and a value can reach the HTML only escaped.

Composition is pure: the time (the Date header) and the Message-ID are given, so the same
batch composed twice is the same message, and nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import html
import shlex
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, cast
from urllib.parse import urlsplit

from monitor.config import AlertSettings, SmtpSettings
from monitor.grouping import group_key, hit_label, incident_key
from monitor.incidents import Incident
from monitor.models import ReleasedHit, severity_rank
from monitor.output import SEVERITY_COLOURS, plural

if TYPE_CHECKING:
    import jinja2

# An alert row as `Store.due_alerts` gives it (`models.AlertRow`), or a notice: read-only, so
# composing works on any typed row.
Row = Mapping[str, Any]

MESSAGE_ID_DOMAIN = "weightwatch.local"
# One email per model, but bounded: a burst of thousands of hits must not produce a
# multi-megabyte message or an X-Weightwatch-Hits header longer than SMTP's 998-char line
# (the header is folded as encoded words). The demo world's leak, some hundred hits, is
# one email.
MAX_HITS_PER_EMAIL = 200
# Up to this many outbox ids are spelled out in a Message-ID; beyond, a range plus a hash.
MAX_IDS_IN_MESSAGE_ID = 8
LINE_LIMIT = 300
URL_LIMIT = 2000
CONTEXT_LIMIT = 2000
# An email quotes this much of a place's context (`hits show` has all of it): twenty
# places of long quotes would take the HTML past the 102 KB at which Gmail clips it.
EMAIL_CONTEXT_LIMIT = 600
# Gmail clips an email's HTML past 102 KB; this leaves room for what it adds.
MAX_HTML_BYTES = 90_000
NO_MODEL = "unattributed"
SAFE_LINK_SCHEMES = ("http", "https")
# Control, format (bidi overrides, zero-width), lone surrogate and line/paragraph separator
# characters: they can forge lines, reorder what the reader sees, or break encoding.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


# --- cleaning hostile text -----------------------------------------------------------


def clean_line(value: Any, limit: int = LINE_LIMIT) -> str:
    """One display line from untrusted text: no control characters, no line breaks.

    Used for headers (header injection) and for every single-line field in the body, so
    a crawled title cannot forge extra lines such as a fake `weightwatch hits show`.
    """
    if value is None:
        return ""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
                   for ch in str(value) if unicodedata.category(ch) not in ("Cf", "Cs"))
    return _truncate(" ".join(text.split()), limit)


def clean_block(value: Any, limit: int = CONTEXT_LIMIT) -> str:
    """Multi-line untrusted text (a context snippet): keeps newlines, drops the rest."""
    if value is None:
        return ""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = "".join(ch for ch in text
                   if ch == "\n" or unicodedata.category(ch) not in _UNSAFE_CATEGORIES)
    return _truncate(text.strip("\n"), limit)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _safe_link_target(url: Any) -> str | None:
    """The URL if it may become a link: http(s) and untouched by cleaning, else None.

    A URL that cleaning had to alter (control characters, truncation) is shown, never
    linked, so the link cannot lead somewhere other than what the reader sees.
    """
    if not isinstance(url, str) or not url:
        return None
    if clean_line(url, URL_LIMIT) != url or " " in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in SAFE_LINK_SCHEMES or not parts.netloc:
        return None
    return url


# --- composing -----------------------------------------------------------------------


def _rank(row: Row) -> int:
    return severity_rank(str(row.get("severity")))


def worst_first(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (_rank(r), r["id"]))


def _model_label(model: Any) -> str:
    return clean_line(model, 80) if model else NO_MODEL


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def show_command(row: Row) -> str:
    """How to see a hit's whole evidence: emails, webhooks and reports all point there."""
    return f"weightwatch hits show {int(row['id'])}"


def html_url(url: Any) -> str:
    """A crawled URL as HTML markup (for pages built without a template, the report): escaped
    text, a link only when it is plain http(s)."""
    shown = _esc(clean_line(url, URL_LIMIT))
    target = _safe_link_target(url)
    if target is None:
        return shown
    return f'<a href="{_esc(target)}" rel="noopener noreferrer nofollow">{shown}</a>'


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


# --- the incident an email is about ------------------------------------------------------

# Said wherever a recipient is named, in the email and the report alike.
WHOSE_COPY_NOTE = ("a recipient's watermark, or the digests of the copy registered for "
                   "them, was found")
NO_RECIPIENT = "not known (no recipient's mark or copy matched)"
# The fill and ink of each severity's badge: the terminal colours of
# `monitor.output.SEVERITY_COLOURS` as CSS, dark enough to read on paper, the yellow
# carrying black text because white on yellow cannot be read.
CSS_COLOURS = {"red": ("#c62828", "#fff"), "magenta": ("#9c27b0", "#fff"),
               "yellow": ("#f2b600", "#000"), "cyan": ("#00838f", "#fff")}
UNKNOWN_COLOUR = ("#757575", "#fff")
TRIAGE_ACTIONS = (("Acknowledge", "ack"), ("Resolve", "resolve"),
                  ("False positive", "false-positive"))
# A digest gathers several incidents; this many get their own triage line.
MAX_INCIDENT_COMMANDS = 5
# `hits` filters that narrow a list to an incident's labels (the others have none).
LIST_FILTERS = {"model": "--model", "recipient": "--recipient", "target": "--target",
                "kind": "--kind", "severity": "--severity"}

H = TypeVar("H", bound=Mapping[str, Any])


def severity_colours(severity: str) -> tuple[str, str]:
    return CSS_COLOURS.get(SEVERITY_COLOURS.get(severity, ""), UNKNOWN_COLOUR)


def severity_counts(severities: Iterable[str]) -> list[tuple[str, int]]:
    """How many of each severity, worst first: the email's summary and the report's."""
    counts = Counter(severities)
    return sorted(counts.items(), key=lambda item: (severity_rank(item[0]), item[0]))


def parse_time(value: str) -> datetime:
    """The store's ISO 8601 times as aware UTC datetimes (a naive one is taken as UTC,
    which is what the store writes)."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _shown_time(value: Any) -> str:
    """A stored time as people read it; one that does not parse is shown as it is."""
    try:
        return when(parse_time(str(value)))
    except ValueError:
        return clean_line(value, 40)


@dataclass(frozen=True)
class Location(Generic[H]):
    """One place (URL) and the hits found there, worst first."""

    url: str
    hits: list[H]


def by_location(hits: Iterable[H]) -> list[Location[H]]:
    """Hits collapsed per URL, the place with the worst (then earliest) hit first: a page
    that matched three digests is one place to take down, not three."""
    places: dict[str, list[H]] = {}
    for h in sorted(hits, key=lambda h: (severity_rank(str(h["severity"])),
                                         str(h["first_seen"]), int(h["id"]))):
        places.setdefault(str(h["url"]), []).append(h)
    return [Location(url, found) for url, found in places.items()]


@dataclass(frozen=True)
class Fact:
    label: str
    value: str


@dataclass(frozen=True)
class Badge:
    """A severity (or a count of one) with the colours it is shown in."""

    text: str
    fill: str
    ink: str


def _badge(severity: str, text: str | None = None) -> Badge:
    fill, ink = severity_colours(severity)
    return Badge(text if text is not None else clean_line(severity, 20).upper(), fill, ink)


@dataclass(frozen=True)
class HitView:
    id: int
    badge: Badge
    heading: str
    what: str
    what_type: str
    details: list[str]
    show: str


@dataclass(frozen=True)
class LocationView:
    number: int
    url: str
    href: str | None
    badge: Badge
    facts: list[Fact]
    hits: list[HitView]
    context: str
    context_of: int


@dataclass(frozen=True)
class AlertView:
    """What an alert email says, once: both its parts are rendered from this."""

    title: str
    badge: Badge
    state: str
    headline: str
    recipients: list[str]
    count: str
    summary: list[Fact]
    by_severity: list[Badge]
    commands: list[Fact]
    locations: list[LocationView]
    total_locations: int
    rest: str | None
    rest_command: str
    reminder: bool


def _recipients(rows: Iterable[Row]) -> list[str]:
    return sorted({clean_line(r["recipient"], 80) for r in rows if r.get("recipient")})


def _whose(recipients: Sequence[str]) -> str:
    if not recipients:
        return ""
    if len(recipients) == 1:
        return f"{recipients[0]}'s copy leaked"
    shown = ", ".join(recipients[:3]) + (f" +{len(recipients) - 3}" if len(recipients) > 3 else "")
    return f"copies of {shown} leaked"


def subject_line(rows: list[Row], prefix: str, state: str = "new") -> str:
    """The one-line summary an email's Subject and a webhook's `subject` share: worst
    severity, model and release, whose copy leaked when a recipient is known, how many
    hits of which kinds. The recipient comes before the counts, so that a phone's inbox,
    which shows a subject's start, still names it."""
    ordered = worst_first(rows)
    worst = clean_line(ordered[0]["severity"], 20).upper()
    shown = _models(ordered)
    kinds = ", ".join(_unique(clean_line(r["kind"], 20) for r in ordered))
    whose = _whose(_recipients(rows))
    return clean_line(f"{prefix} {worst} {shown}: {whose + ', ' if whose else ''}"
                      f"{len(rows)} {state} {plural(len(rows), 'hit')} ({kinds})", 250)


def _models(ordered: Sequence[Row]) -> str:
    """The models (with their release) rows are of, worst first, the first three named."""
    models = _unique(_model_label(r["model"])
                     + (f" {clean_line(r['release'], 40)}" if r.get("release") else "")
                     for r in ordered)
    return ", ".join(models[:3]) + (f" +{len(models) - 3} more" if len(models) > 3 else "")


def _quoted(value: str) -> str:
    return shlex.quote(clean_line(value, 200))


def _hit_view(row: Row) -> HitView:
    what_type = f"({clean_line(row['indicator_type'], 40)})" if row.get("indicator_type") else ""
    details = [f"{label} {clean_line(row[key])}" for label, key in
               (("artifact", "artifact"), ("recipient", "recipient"), ("rule", "rule"))
               if row.get(key)]
    detector = clean_line(row.get("detector"), 60)
    if row.get("matcher_version"):
        detector += f" (matcher {clean_line(row['matcher_version'], 60)})"
    if row.get("score") is not None:
        detector += f", score {float(row['score']):.2f}"
    details.append(detector)
    return HitView(int(row["id"]), _badge(str(row["severity"])),
                   f"#{int(row['id'])} {clean_line(row['kind'], 20)}",
                   clean_line(row["indicator"]), what_type, details, show_command(row))


def _location_view(number: int, place: Location[Row]) -> LocationView:
    worst = place.hits[0]
    facts = [Fact("Target", clean_line(worst.get("target"), 80))]
    if worst.get("doc_title") or worst.get("doc_author"):
        title = clean_line(worst.get("doc_title")) or "(untitled)"
        author = clean_line(worst.get("doc_author"), 80)
        facts.append(Fact("Posted", f'"{title}"' + (f" by {author}" if author else "")
                          + (f", {_shown_time(worst['doc_posted_at'])}"
                             if worst.get("doc_posted_at") else "")))
    facts.append(Fact("First seen", _shown_time(min(str(h["first_seen"]) for h in place.hits))))
    snapshots = _unique(clean_line(h.get("snapshot_sha256"), 64) for h in place.hits)
    facts.append(Fact("Evidence", "snapshot sha256 " + (", ".join(snapshots) or "(none stored)")))
    context_row = next((h for h in place.hits if clean_block(h.get("context"), 1)), worst)
    return LocationView(number, clean_line(place.url, URL_LIMIT), _safe_link_target(place.url),
                        _badge(str(worst["severity"])), facts,
                        [_hit_view(h) for h in place.hits],
                        clean_block(context_row.get("context"), EMAIL_CONTEXT_LIMIT),
                        int(context_row["id"]))


def _commands(rows: list[Row], settings: AlertSettings) -> list[Fact]:
    """The commands that act on what the email is about: triage of its whole incident by
    key (`weightwatch incidents` names it the same), and the worst hit's evidence."""
    keys = _unique(incident_key(r, settings.group_by) for r in worst_first(rows))
    if len(keys) == 1:
        commands = [Fact(label, f"weightwatch hits {action} --incident {_quoted(keys[0])}")
                    for label, action in TRIAGE_ACTIONS]
    else:
        commands = [Fact("Acknowledge", f"weightwatch hits ack --incident {_quoted(key)}")
                    for key in keys[:MAX_INCIDENT_COMMANDS]]
        if len(keys) > MAX_INCIDENT_COMMANDS:
            commands.append(Fact("All incidents", "weightwatch incidents"))
    commands.append(Fact("Worst hit's evidence", show_command(worst_first(rows)[0])))
    return commands


def _list_command(rows: list[Row], settings: AlertSettings) -> str:
    """`weightwatch hits` narrowed, as far as its filters go, to the email's incident."""
    first = worst_first(rows)[0]
    filters = [f"{flag} {_quoted(hit_label(first, label))}"
               for label, flag in LIST_FILTERS.items()
               if label in settings.group_by and hit_label(first, label)
               and all(hit_label(r, label) == hit_label(first, label) for r in rows)]
    return " ".join(["weightwatch hits", *filters])


def alert_view(rows: list[Row], settings: AlertSettings, *, reminder: bool = False,
               max_locations: int | None = None) -> AlertView:
    """The email for a batch of alert rows, as one incident: what leaked and whose copy,
    the counts, the triage commands, then the places, worst first, up to `max_locations`
    (default `alerts.max_locations`)."""
    ordered = worst_first(rows)
    # The report's and `weightwatch incidents`' summary of an incident, over this batch's
    # hits (its key and labels are not read: the batch may be a digest of several).
    summary = Incident("", {}, cast(list[ReleasedHit], ordered)).summary()
    state = "open" if reminder else "new"
    recipients = _recipients(rows)
    n = len(rows)
    counts = severity_counts(str(r["severity"]) for r in rows)
    kinds = Counter(clean_line(r["kind"], 20) for r in ordered)
    places = by_location(ordered)
    cap = max(1, settings.max_locations if max_locations is None else max_locations)
    keys = _unique(incident_key(r, settings.group_by) for r in ordered)
    count = f"{n} {state}"
    # A known recipient heads the email on its own; an unknown one is said so, in place.
    facts = [
        *([] if recipients else [Fact("Whose copy", NO_RECIPIENT)]),
        Fact("Hits", f"{count}: " + ", ".join(f"{c} {clean_line(s, 20)}" for s, c in counts)),
        Fact("Kinds", ", ".join(f"{c} {k}" for k, c in kinds.items())),
        Fact("Locations", f"{summary['locations']} distinct {plural(summary['locations'], 'URL')}"),
        Fact("First seen", _shown_time(summary["first_seen"])),
        Fact("Last seen", _shown_time(summary["last_seen"])),
        Fact("Incident" if len(keys) == 1 else "Incidents",
             ", ".join(clean_line(k, 200) for k in keys[:MAX_INCIDENT_COMMANDS])
             + (f" +{len(keys) - MAX_INCIDENT_COMMANDS} more"
                if len(keys) > MAX_INCIDENT_COMMANDS else "")),
    ]
    rest = None
    if len(places) > cap:
        hidden = sum(len(p.hits) for p in places[cap:])
        more = len(places) - cap
        rest = (f"{more} more {plural(more, 'place')} ({hidden} {plural(hidden, 'hit')}) "
                "not shown here")
    whose = _whose(recipients)
    return AlertView(
        title=_models(ordered), badge=_badge(str(ordered[0]["severity"])), state=state,
        headline=whose or f"{count} {plural(n, 'hit')}",
        recipients=recipients, count=count, summary=facts,
        by_severity=[_badge(s, f"{c} {clean_line(s, 20)}") for s, c in counts],
        commands=_commands(rows, settings),
        locations=[_location_view(i, p) for i, p in enumerate(places[:cap], start=1)],
        total_locations=len(places), rest=rest,
        rest_command=_list_command(rows, settings), reminder=reminder)


# --- rendering -------------------------------------------------------------------------


@cache
def _templates() -> jinja2.Environment:
    """The email templates (package data): HTML autoescaped, text not (a text/plain part
    is never rendered as markup). Undefined names fail the render rather than vanish."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("monitor.alerting", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                            default_for_string=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)


def render(name: str, **context: Any) -> str:
    """Template `name` (`alert.html`, `alert.txt`, ...) rendered with `context`."""
    return _templates().get_template(name).render(caution=CAUTION, whose_note=WHOSE_COPY_NOTE,
                                                  **context)


CAUTION = ("Quoted titles, URLs and context were copied from crawled pages; treat them as "
           "untrusted.")


def _add_parts(message: EmailMessage, name: str, *, html_part: str | None = None,
               **context: Any) -> None:
    """The text and HTML parts of template `name` (the HTML given if already rendered)."""
    # Quoted-printable keeps every line under SMTP's limit whatever the crawled text holds,
    # and needs no 8BITMIME from the relay.
    message.set_content(render(f"{name}.txt", **context), subtype="plain", charset="utf-8",
                        cte="quoted-printable")
    message.add_alternative(html_part if html_part is not None
                            else render(f"{name}.html", **context),
                            subtype="html", charset="utf-8", cte="quoted-printable")


def compose(rows: list[Row], settings: AlertSettings, *, message_id: str, now: datetime,
            to: Sequence[str] | None = None, reminder: bool = False) -> EmailMessage:
    """One multipart/alternative email for a batch of due outbox rows (`Store.due_alerts`),
    to `to` (default: the recipients its route names), dated `now`; a `reminder` of hits
    still open. Threaded under its alert group, so follow-ups and reminders of one
    incident read as one conversation."""
    if not rows:
        raise ValueError("compose needs at least one alert row")
    prefix = clean_line(settings.subject_prefix, 60) + (" reminder:" if reminder else "")
    subject = subject_line(rows, prefix, "open" if reminder else "new")
    message = _envelope(settings, subject, message_id,
                        settings.recipients(rows[0]) if to is None else to, now,
                        thread=_thread(rows, settings))
    message["X-Weightwatch-Hits"] = ",".join(str(int(r["id"]))
                                             for r in sorted(rows, key=lambda r: int(r["id"])))
    # Gmail clips an email whose HTML passes 102 KB, hiding its end behind a link: a burst
    # with long names and quotes lists fewer places instead, and counts the rest.
    places = settings.max_locations
    while True:
        view = alert_view(rows, settings, reminder=reminder, max_locations=places)
        html_part = render("alert.html", v=view, subject=subject)
        if len(html_part.encode()) <= MAX_HTML_BYTES or places == 1:
            break
        places = max(1, min(places, len(view.locations)) * 3 // 4)
    _add_parts(message, "alert", html_part=html_part, v=view, subject=subject)
    return message


def _thread(rows: list[Row], settings: AlertSettings) -> list[str]:
    """The ids an alert email refers to, the one it replies to last: its group's thread id
    and, for a reminder, the first and the last email its hits went out in (a reminder's
    rows were sent; new alerts' rows have no email yet)."""
    sent = _unique(clean_line(r.get("outbox_message_id"), 250)
                   for r in sorted(rows, key=lambda r: int(r.get("outbox_id") or 0))
                   if r.get("outbox_status") == "sent")
    return [thread_id(group_key(rows[0], settings)), *_unique([*sent[:1], *sent[-1:]])]


def thread_id(group: str) -> str:
    """The id every email of an alert group (first alert, follow-ups, reminders) names in
    References: derived from the group's key, so it needs no state and is the same after
    a restart. Mail clients thread messages that reference one id, whether or not they
    hold a message carrying it."""
    tag = hashlib.sha256(group.encode("utf-8", "replace")).hexdigest()[:16]
    return f"<weightwatch-incident.{tag}@{MESSAGE_ID_DOMAIN}>"


def _envelope(settings: AlertSettings, subject: str, message_id: str,
              to: Sequence[str], now: datetime, *, thread: Sequence[str] = ()) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = clean_line(settings.sender)
    message["To"] = ", ".join(clean_line(addr) for addr in to)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = clean_line(message_id)
    if thread:
        message["In-Reply-To"] = thread[-1]
        message["References"] = " ".join(thread)
    # RFC 3834: keeps vacation responders from answering the alert address; Exchange
    # reads its own header for the same (no out-of-office, no read or delivery receipts).
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    return message


def compose_notice(notice: Row, settings: AlertSettings, *, now: datetime) -> EmailMessage:
    """A target health notice (`Store.due_notices` row): down after N failures, or back.

    A silent source is a blind spot, so the team hears of it once, and once more when it
    recovers; never on every failed run. Both notices of a target are one thread.
    """
    target = clean_line(notice["target"], 100)
    prefix = clean_line(settings.subject_prefix, 60)
    if notice["kind"] == "target_down":
        subject = f"{prefix} target down: {target} ({int(notice['failures'])} failed runs in a row)"
        heading = f"target down: {target}"
        lines = [f"The target {target} has failed {int(notice['failures'])} runs in a row; "
                 f"weightwatch cannot see what is posted there until it recovers."]
        facts = [Fact("Last error", clean_line(notice.get("error"))),
                 Fact("Last success", _shown_time(notice["last_success_at"])
                      if notice.get("last_success_at") else "never"),
                 Fact("Down since", _shown_time(notice["created_at"]))]
        after = ["Retries continue with an escalating back-off (up to a day apart)."]
        commands = [Fact("Check it", f"weightwatch targets test {_quoted(notice['target'])}")]
        badge = _badge("critical", "TARGET DOWN")
    else:
        subject = f"{prefix} target recovered: {target}"
        heading = f"target recovered: {target}"
        lines = [f"The target {target} is crawled successfully again."]
        facts = [Fact("Recovered at", _shown_time(notice["created_at"]))]
        after = ["Posts made while it was down are read now, if the source still lists them."]
        commands = []
        badge = Badge("RECOVERED", "#2e7d32", "#fff")
    message = _envelope(settings, subject, notice_message_id(notice),
                        settings.recipients({"kind": notice["kind"], "target": notice["target"]}),
                        now, thread=[thread_id(f"target:{notice['target']}")])
    _add_parts(message, "notice", subject=subject, heading=heading, badge=badge, lines=lines,
               facts=facts, after=after, commands=commands)
    return message


def compose_test(settings: AlertSettings, smtp: SmtpSettings, *, message_id: str,
                 now: datetime) -> EmailMessage:
    """The short email `weightwatch alerts test` sends to `alerts.to`."""
    subject = f"{clean_line(settings.subject_prefix, 60)} weightwatch test alert"
    message = _envelope(settings, subject, message_id, settings.to, now)
    _add_parts(message, "notice", subject=subject, heading="weightwatch test alert",
               badge=Badge("TEST", "#455a64", "#fff"),
               lines=[f"This message was sent by `weightwatch alerts test` through "
                      f"{clean_line(smtp.host, 200)}:{int(smtp.port)} "
                      f"({clean_line(smtp.security, 20)}).",
                      "If you can read it, alert emails will reach this address."],
               facts=[], after=[], commands=[])
    return message


def notice_message_id(notice: Row) -> str:
    """Deterministic for the same notice, like an alert batch's, so a resend is one message."""
    tag = hashlib.sha256(repr((notice["kind"], notice["target"], notice["created_at"]))
                         .encode()).hexdigest()[:16]
    return f"<weightwatch-notice-{int(notice['id'])}.{tag}@{MESSAGE_ID_DOMAIN}>"


def reminder_message_id(group: str, now: datetime) -> str:
    """A new Message-ID for each reminder: it is a new message, not a resend of the last."""
    stamp = hashlib.sha256(f"{group}\x1f{now.isoformat(timespec='seconds')}".encode()
                           ).hexdigest()[:16]
    return f"<weightwatch-reminder.{stamp}@{MESSAGE_ID_DOMAIN}>"


def message_id_for(rows: Sequence[Row]) -> str:
    """Deterministic for the same batch, so a retry after a crash reuses the Message-ID.

    The hash covers each hit's dedup key and first-seen time, not only the outbox ids:
    two databases (staging and production, or one reset) both have an outbox row 1, and a
    mailbox that deduplicates by Message-ID would silently drop the second alert.
    """
    ids = sorted(int(r["outbox_id"]) for r in rows)
    by_id = {int(r["outbox_id"]): r for r in rows}
    digest = hashlib.sha256()
    for oid in ids:
        row = by_id[oid]
        digest.update(f"{oid}\x1f{row.get('dedup_key') or row.get('id')}\x1f"
                      f"{row.get('first_seen')}\x1e".encode("utf-8", "replace"))
    tag = digest.hexdigest()[:16]
    if len(ids) <= MAX_IDS_IN_MESSAGE_ID:
        spelled = "-".join(map(str, ids))
    else:
        spelled = f"{ids[0]}-to-{ids[-1]}-n{len(ids)}"
    return f"<weightwatch-ob-{spelled}.{tag}@{MESSAGE_ID_DOMAIN}>"


# --- the webhook -------------------------------------------------------------------------


class WebhookHit(TypedDict):
    id: int
    kind: str
    severity: str
    model: str | None
    artifact: str | None
    recipient: str | None
    indicator: str
    indicator_type: str | None
    detector: str
    matcher_version: str | None
    score: float | None
    target: str
    url: str
    first_seen: str
    context: str | None
    snapshot_sha256: str | None
    show: str


class WebhookPayload(TypedDict):
    source: str
    group: str
    subject: str
    count: int
    hits: list[WebhookHit]


def webhook_payload(rows: list[Row], settings: AlertSettings, *, group: str
                    ) -> WebhookPayload:
    """The JSON an alert group (`group`, its key) is POSTed as: the email's subject and
    each hit's evidence (values as stored; JSON escaping keeps crawled text inert)."""
    # Values as stored (the hit's columns), None where it has none: every key, always.
    hits = [WebhookHit(
        id=row["id"], kind=row["kind"], severity=row["severity"],
        model=row.get("model"), artifact=row.get("artifact"), recipient=row.get("recipient"),
        indicator=row["indicator"], indicator_type=row.get("indicator_type"),
        detector=row["detector"], matcher_version=row.get("matcher_version"),
        score=row.get("score"), target=row["target"], url=row["url"],
        first_seen=row["first_seen"], context=row.get("context"),
        snapshot_sha256=row.get("snapshot_sha256"), show=show_command(row))
        for row in worst_first(rows)]
    return {"source": "weightwatch", "group": group,
            "subject": subject_line(rows, clean_line(settings.subject_prefix, 60)),
            "count": len(rows), "hits": hits}


