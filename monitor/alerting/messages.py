"""Alert messages: what an email or a webhook POST says, from outbox rows.

Everything that came from a crawled page (titles, authors, URLs, context, indicators,
artifact names) is treated as hostile: escaped in HTML, stripped of control characters
everywhere, and never placed in a header without removing CR/LF first.

Composition is pure: the time (the Date header) and the Message-ID are given, so the same
batch composed twice is the same message, and nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import html
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit

from monitor.config import AlertSettings, SmtpSettings
from monitor.models import severity_rank

# An alert row as `Store.due_alerts` gives it (`models.AlertRow`), or a notice: read-only, so
# composing works on any typed row.
Row = Mapping[str, Any]

MESSAGE_ID_DOMAIN = "weightwatch.local"
# One email per model, but bounded: a burst of thousands of hits must not produce a
# multi-megabyte message or an X-Weightwatch-Hits header longer than SMTP's 998-char line.
MAX_HITS_PER_EMAIL = 100
# Up to this many outbox ids are spelled out in a Message-ID; beyond, a range plus a hash.
MAX_IDS_IN_MESSAGE_ID = 8
LINE_LIMIT = 300
URL_LIMIT = 2000
CONTEXT_LIMIT = 2000
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


def subject_line(rows: list[Row], prefix: str, state: str = "new") -> str:
    """The one-line summary an email's Subject and a webhook's `subject` share."""
    ordered = worst_first(rows)
    worst = clean_line(ordered[0]["severity"], 20).upper()
    models = _unique(_model_label(r["model"])
                     + (f" {clean_line(r['release'], 40)}" if r.get("release") else "")
                     for r in ordered)
    shown = ", ".join(models[:3]) + (f" +{len(models) - 3} more" if len(models) > 3 else "")
    kinds = ", ".join(_unique(clean_line(r["kind"], 20) for r in ordered))
    noun = "hit" if len(rows) == 1 else "hits"
    return clean_line(f"{prefix} {worst} {shown}: {len(rows)} {state} {noun} ({kinds})", 250)


def _grouped(rows: list[Row]) -> list[tuple[str, list[tuple[str, list[Row]]]]]:
    """Model -> severity -> hits, the model with the worst hit first."""
    by_model: dict[str, list[Row]] = {}
    for row in worst_first(rows):
        by_model.setdefault(_model_label(row["model"]), []).append(row)
    groups = []
    for model, model_rows in by_model.items():
        by_severity: dict[str, list[Row]] = {}
        for row in model_rows:
            by_severity.setdefault(clean_line(row["severity"], 20), []).append(row)
        groups.append((model, list(by_severity.items())))
    return groups


def _facts(row: Row) -> list[tuple[str, str]]:
    """The labelled single-line facts of one hit, already cleaned, for both parts."""
    what = clean_line(row["indicator"])
    if row.get("indicator_type"):
        what += f" ({clean_line(row['indicator_type'], 40)})"
    facts = [("What matched", what)]
    for label, key in (("Artifact", "artifact"), ("Recipient", "recipient"), ("Rule", "rule")):
        if row.get(key):
            facts.append((label, clean_line(row[key])))
    detector = clean_line(row.get("detector"), 60)
    if row.get("matcher_version"):
        detector += f" (matcher {clean_line(row['matcher_version'], 60)})"
    if row.get("score") is not None:
        detector += f", score {float(row['score']):.2f}"
    facts.append(("Detector", detector))
    facts.append(("Target", clean_line(row.get("target"), 80)))
    facts.append(("URL", clean_line(row.get("url"), URL_LIMIT)))
    if row.get("doc_title") or row.get("doc_author"):
        title = clean_line(row.get("doc_title")) or "(untitled)"
        author = clean_line(row.get("doc_author"), 80)
        facts.append(("Posted", f'"{title}"' + (f" by {author}" if author else "")))
    facts.append(("When", f"first seen {clean_line(row.get('first_seen'), 40)}, posted "
                          f"{clean_line(row.get('doc_posted_at'), 40) or 'unknown'}"))
    facts.append(("Evidence", "snapshot sha256 "
                              + (clean_line(row.get("snapshot_sha256"), 64) or "(none stored)")))
    return facts


def _hit_heading(row: Row) -> str:
    return (f"[{clean_line(row['severity'], 20).upper()}] {clean_line(row['kind'], 20)} "
            f"hit #{int(row['id'])}")


def show_command(row: Row) -> str:
    """How to see a hit's whole evidence: emails, webhooks and reports all point there."""
    return f"weightwatch hits show {int(row['id'])}"


def _plain_hit(row: Row) -> list[str]:
    lines = [_hit_heading(row)]
    lines += [f"  {label + ':':<13} {value}" for label, value in _facts(row)]
    context = clean_block(row.get("context"))
    if context:
        lines.append("  Context:")
        lines += [f"    > {line}" for line in context.split("\n")]
    lines.append(f"  {'See more:':<13} {show_command(row)}")
    return lines


def _plain_body(rows: list[Row]) -> str:
    lines = [f"weightwatch found {len(rows)} new {'hit' if len(rows) == 1 else 'hits'}.",
             "Quoted titles, URLs and context below were copied from crawled pages; "
             "treat them as untrusted.", ""]
    for model, severities in _grouped(rows):
        lines += [f"=== {model} ===", ""]
        for severity, hits in severities:
            lines += [f"--- {severity.upper()} ({len(hits)}) ---", ""]
            for row in hits:
                lines += _plain_hit(row) + [""]
    return "\n".join(lines)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def html_url(url: Any) -> str:
    """A crawled URL for HTML: escaped text, a link only when it is plain http(s)."""
    shown = _esc(clean_line(url, URL_LIMIT))
    target = _safe_link_target(url)
    if target is None:
        return shown
    return f'<a href="{_esc(target)}" rel="noopener noreferrer nofollow">{shown}</a>'


def _html_hit(row: Row) -> str:
    # The URL cell is the one place a crawled value may become markup (a link).
    facts = [(label, html_url(row.get("url")) if label == "URL" else _esc(value))
             for label, value in _facts(row)]
    cells = "".join(f'<tr><th align="left" valign="top">{_esc(label)}</th><td>{value}</td></tr>'
                    for label, value in facts)
    context = clean_block(row.get("context"))
    quoted = (f'<tr><th align="left" valign="top">Context</th><td><pre style="white-space:'
              f'pre-wrap">{_esc(context)}</pre></td></tr>') if context else ""
    more = (f'<tr><th align="left">See more</th><td><code>{_esc(show_command(row))}</code>'
            f'</td></tr>')
    return f"<h4>{_esc(_hit_heading(row))}</h4><table>{cells}{quoted}{more}</table>"


def _html_body(rows: list[Row]) -> str:
    parts = [f"<p>weightwatch found {len(rows)} new {'hit' if len(rows) == 1 else 'hits'}. "
             "Quoted titles, URLs and context were copied from crawled pages; treat them as "
             "untrusted.</p>"]
    for model, severities in _grouped(rows):
        parts.append(f"<h2>{_esc(model)}</h2>")
        for severity, hits in severities:
            parts.append(f"<h3>{_esc(severity.upper())} ({len(hits)})</h3>")
            parts += [_html_hit(row) for row in hits]
    body = "\n".join(parts)
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>\n'


def compose(rows: list[Row], settings: AlertSettings, *, message_id: str, now: datetime,
            to: Sequence[str] | None = None, reminder: bool = False) -> EmailMessage:
    """One multipart/alternative email for a batch of due outbox rows (`Store.due_alerts`),
    to `to` (default: the recipients its route names), dated `now`; a `reminder` of hits
    still open."""
    if not rows:
        raise ValueError("compose needs at least one alert row")
    prefix = clean_line(settings.subject_prefix, 60) + (" reminder:" if reminder else "")
    message = _envelope(settings, subject_line(rows, prefix, "open" if reminder else "new"),
                        message_id, settings.recipients(rows[0]) if to is None else to, now)
    message["X-Weightwatch-Hits"] = ",".join(str(int(r["id"]))
                                             for r in sorted(rows, key=lambda r: int(r["id"])))
    # Quoted-printable keeps every line under SMTP's limit whatever the crawled text holds,
    # and needs no 8BITMIME from the relay.
    message.set_content(_plain_body(rows), subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(_html_body(rows), subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def _envelope(settings: AlertSettings, subject: str, message_id: str,
              to: Sequence[str], now: datetime) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = clean_line(settings.sender)
    message["To"] = ", ".join(clean_line(addr) for addr in to)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = clean_line(message_id)
    # RFC 3834: keeps vacation responders from answering the alert address.
    message["Auto-Submitted"] = "auto-generated"
    return message


def compose_notice(notice: Row, settings: AlertSettings, *, now: datetime) -> EmailMessage:
    """A target health notice (`Store.due_notices` row): down after N failures, or back.

    A silent source is a blind spot, so the team hears of it once, and once more when it
    recovers; never on every failed run.
    """
    target = clean_line(notice["target"], 100)
    prefix = clean_line(settings.subject_prefix, 60)
    if notice["kind"] == "target_down":
        subject = f"{prefix} target down: {target} ({int(notice['failures'])} failed runs in a row)"
        lines = [f"The target {target} has failed {int(notice['failures'])} runs in a row; "
                 f"weightwatch cannot see what is posted there until it recovers.",
                 "", f"Last error: {clean_line(notice.get('error'))}",
                 f"Last success: {clean_line(notice.get('last_success_at')) or 'never'}",
                 f"Down since: {clean_line(notice['created_at'])}",
                 "", "Retries continue with an escalating back-off (up to a day apart).",
                 f"Check it with: weightwatch targets test {target}"]
    else:
        subject = f"{prefix} target recovered: {target}"
        lines = [f"The target {target} is crawled successfully again.",
                 f"Recovered at: {clean_line(notice['created_at'])}",
                 "Posts made while it was down are read now, if the source still lists them."]
    message = _envelope(settings, subject, notice_message_id(notice),
                        settings.recipients({"kind": notice["kind"], "target": notice["target"]}),
                        now)
    text = "\n".join(lines) + "\n"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    html_lines = "".join(f"<p>{_esc(line)}</p>" for line in lines if line)
    message.add_alternative(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>'
                            f"{html_lines}</body></html>\n", subtype="html", charset="utf-8",
                            cte="quoted-printable")
    return message


def compose_test(settings: AlertSettings, smtp: SmtpSettings, *, message_id: str,
                 now: datetime) -> EmailMessage:
    """The short email `weightwatch alerts test` sends to `alerts.to`."""
    message = _envelope(settings, f"{clean_line(settings.subject_prefix, 60)} weightwatch test "
                        "alert", message_id, settings.to, now)
    message.set_content(
        "weightwatch test alert\n\n"
        f"This message was sent by `weightwatch alerts test` through "
        f"{smtp.host}:{smtp.port} ({smtp.security}).\n"
        "If you can read it, alert emails will reach this address.\n")
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


