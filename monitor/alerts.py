"""Alert emails: due outbox rows in, one grouped email per model out, over SMTP.

The security team must get few, trustworthy emails with the evidence inline, and never a
silent gap. So the outbox (written with the hits, in the same transaction) is the only
source of truth: a batch is marked 'sending' with its Message-ID *before* the SMTP
conversation, marked 'sent' after it, and put back for retry with the error otherwise. A
crash mid-send yields at worst a resend carrying the same Message-ID.

Everything that came from a crawled page (titles, authors, URLs, context, indicators,
artifact names) is treated as hostile: escaped in HTML, stripped of control characters
everywhere, and never placed in a header without removing CR/LF first.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import secrets
import smtplib
import ssl
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from monitor.config import AlertSettings, Config, SmtpSettings, WebhookSettings
from monitor.grouping import group_key
from monitor.models import severity_rank, utcnow
from monitor.silences import Silence, silencing
from monitor.store import StorageFailure

__all__ = ["Alerter", "DeliveryError", "FlushResult", "compose", "deliver", "message_id_for",
           "send_test", "batches"]

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


def _log() -> Any:
    # Looked up per call, not at import: a logger cached at import time would bypass
    # whatever configuration (or test capture) is active when alerts are actually sent.
    return structlog.get_logger("weightwatch.alerts")


class DeliveryError(Exception):
    """One line saying why SMTP delivery failed; safe to log and to store as last_error."""


@dataclass
class FlushResult:
    emails_sent: int
    alerts_sent: int
    alerts_pending: int
    error: str | None = None
    notices_sent: int = 0
    alerts_silenced: int = 0    # held back by a silence until it ends
    webhook_posts: int = 0
    webhook_error: str | None = None
    reminders_sent: int = 0


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


def _rank(row: dict[str, Any]) -> int:
    return severity_rank(str(row.get("severity")))


def _worst_first(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (_rank(r), r["id"]))


def _model_label(model: Any) -> str:
    return clean_line(model, 80) if model else NO_MODEL


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _subject(rows: list[dict[str, Any]], prefix: str, state: str = "new") -> str:
    ordered = _worst_first(rows)
    worst = clean_line(ordered[0]["severity"], 20).upper()
    models = _unique(_model_label(r["model"])
                     + (f" {clean_line(r['release'], 40)}" if r.get("release") else "")
                     for r in ordered)
    shown = ", ".join(models[:3]) + (f" +{len(models) - 3} more" if len(models) > 3 else "")
    kinds = ", ".join(_unique(clean_line(r["kind"], 20) for r in ordered))
    noun = "hit" if len(rows) == 1 else "hits"
    return clean_line(f"{prefix} {worst} {shown}: {len(rows)} {state} {noun} ({kinds})", 250)


def _grouped(rows: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, list[dict]]]]]:
    """Model -> severity -> hits, the model with the worst hit first."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in _worst_first(rows):
        by_model.setdefault(_model_label(row["model"]), []).append(row)
    groups = []
    for model, model_rows in by_model.items():
        by_severity: dict[str, list[dict[str, Any]]] = {}
        for row in model_rows:
            by_severity.setdefault(clean_line(row["severity"], 20), []).append(row)
        groups.append((model, list(by_severity.items())))
    return groups


def _facts(row: dict[str, Any]) -> list[tuple[str, str]]:
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


def _hit_heading(row: dict[str, Any]) -> str:
    return (f"[{clean_line(row['severity'], 20).upper()}] {clean_line(row['kind'], 20)} "
            f"hit #{int(row['id'])}")


def show_command(row: dict[str, Any]) -> str:
    """How to see a hit's whole evidence: emails, webhooks and reports all point there."""
    return f"weightwatch hits show {int(row['id'])}"


def _plain_hit(row: dict[str, Any]) -> list[str]:
    lines = [_hit_heading(row)]
    lines += [f"  {label + ':':<13} {value}" for label, value in _facts(row)]
    context = clean_block(row.get("context"))
    if context:
        lines.append("  Context:")
        lines += [f"    > {line}" for line in context.split("\n")]
    lines.append(f"  {'See more:':<13} {show_command(row)}")
    return lines


def _plain_body(rows: list[dict[str, Any]]) -> str:
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


def _html_hit(row: dict[str, Any]) -> str:
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


def _html_body(rows: list[dict[str, Any]]) -> str:
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


def compose(rows: list[dict[str, Any]], settings: AlertSettings, *,
            message_id: str, to: Sequence[str] | None = None,
            reminder: bool = False) -> EmailMessage:
    """One multipart/alternative email for a batch of due outbox rows (`Store.due_alerts`),
    to `to` (default: the recipients its route names); a `reminder` of hits still open."""
    if not rows:
        raise ValueError("compose needs at least one alert row")
    prefix = clean_line(settings.subject_prefix, 60) + (" reminder:" if reminder else "")
    message = _envelope(settings, _subject(rows, prefix, "open" if reminder else "new"),
                        message_id, settings.recipients(rows[0]) if to is None else to)
    message["X-Weightwatch-Hits"] = ",".join(str(int(r["id"])) for r in sorted(rows, key=lambda r: r["id"]))
    # Quoted-printable keeps every line under SMTP's limit whatever the crawled text holds,
    # and needs no 8BITMIME from the relay.
    message.set_content(_plain_body(rows), subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(_html_body(rows), subtype="html", charset="utf-8", cte="quoted-printable")
    return message


def _envelope(settings: AlertSettings, subject: str, message_id: str,
              to: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = clean_line(settings.sender)
    message["To"] = ", ".join(clean_line(addr) for addr in to)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = clean_line(message_id)
    # RFC 3834: keeps vacation responders from answering the alert address.
    message["Auto-Submitted"] = "auto-generated"
    return message


def compose_notice(notice: dict[str, Any], settings: AlertSettings) -> EmailMessage:
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
    message_id = (f"<weightwatch-notice-{int(notice['id'])}."
                  f"{hashlib.sha256(repr((notice['kind'], notice['target'], notice['created_at'])).encode()).hexdigest()[:16]}"
                  f"@{MESSAGE_ID_DOMAIN}>")
    message = _envelope(settings, subject, message_id,
                        settings.recipients({"kind": notice["kind"], "target": notice["target"]}))
    text = "\n".join(lines) + "\n"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    html_lines = "".join(f"<p>{_esc(line)}</p>" for line in lines if line)
    message.add_alternative(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>'
                            f"{html_lines}</body></html>\n", subtype="html", charset="utf-8",
                            cte="quoted-printable")
    return message


def message_id_for(rows: Sequence[dict[str, Any]]) -> str:
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


def batches(rows: list[dict[str, Any]], settings: AlertSettings | None = None
            ) -> list[list[dict[str, Any]]]:
    """One batch per alert group and route, worst group first, each capped at
    MAX_HITS_PER_EMAIL so that a flood of hits still yields bounded emails."""
    by_group: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for row in _worst_first(rows):
        route = settings.recipients(row) if settings is not None else ()
        by_group.setdefault((group_key(row, settings), route), []).append(row)
    out = []
    for group_rows in by_group.values():
        for start in range(0, len(group_rows), MAX_HITS_PER_EMAIL):
            out.append(group_rows[start:start + MAX_HITS_PER_EMAIL])
    return out


# --- the webhook -------------------------------------------------------------------------


def webhook_payload(rows: list[dict[str, Any]], settings: AlertSettings) -> dict[str, Any]:
    """The JSON an alert group is POSTed as: the email's subject and each hit's evidence
    (values as stored; JSON escaping keeps crawled text inert)."""
    keys = ("id", "kind", "severity", "model", "artifact", "recipient", "indicator",
            "indicator_type", "detector", "matcher_version", "score", "target", "url",
            "first_seen", "context", "snapshot_sha256")
    return {"source": "weightwatch", "group": group_key(rows[0], settings),
            "subject": _subject(rows, clean_line(settings.subject_prefix, 60)),
            "count": len(rows),
            "hits": [{**{k: row.get(k) for k in keys},
                      "show": show_command(row)}
                     for row in _worst_first(rows)]}


def post_webhook(payload: dict[str, Any], hook: WebhookSettings) -> None:
    """POST one group; DeliveryError (one line, naming only the webhook's origin: its path
    is often the secret) unless it answers 2xx."""
    parts = urlsplit(hook.url)
    origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    headers = {"User-Agent": "weightwatch", "Content-Type": "application/json"}
    token = hook.token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        # Only the status counts: the body is never read, so an answer of any size or
        # content coding (a compression bomb) costs nothing.
        with httpx.stream("POST", hook.url, json=payload, headers=headers,
                          timeout=hook.timeout, follow_redirects=False) as response:
            status = response.status_code
    except httpx.HTTPError as exc:
        raise DeliveryError(f"webhook {origin}: {type(exc).__name__}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"webhook {origin} answered HTTP {status}")


# --- delivering ----------------------------------------------------------------------


class _Refused(Exception):
    """Internal: a reason to stop that is not an SMTP or socket error."""


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    if smtp.security == "tls":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                context=ssl.create_default_context())
    return smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)


def _secure(client: smtplib.SMTP, smtp: SmtpSettings) -> None:
    """Upgrade to TLS when configured; refuse to go on in clear text if the server does
    not offer it, since that is also what a downgrade attack looks like."""
    if smtp.security != "starttls":
        return
    client.ehlo()
    if not client.has_extn("starttls"):
        raise _Refused("server does not offer STARTTLS (smtp.security = \"starttls\")")
    client.starttls(context=ssl.create_default_context())
    client.ehlo()


def _login(client: smtplib.SMTP, smtp: SmtpSettings) -> None:
    if not smtp.username:
        return
    if not smtp.password_env:
        raise _Refused("smtp.username is set but smtp.password_env is not")
    if smtp.password() is None:
        raise _Refused(f"environment variable {smtp.password_env} (smtp.password_env) is not set")
    # The secret is read again here rather than held in a variable, so it sits in as few
    # stack frames as possible should a traceback with locals ever be rendered.
    client.login(smtp.username, smtp.password() or "")


def _reason(exc: BaseException) -> str:
    """A short human reason for an SMTP or socket failure."""
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{addr} ({code})" for addr, (code, _) in exc.recipients.items())
        return f"all recipients refused: {refused}"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        what = "authentication failed" if isinstance(exc, smtplib.SMTPAuthenticationError) \
            else "server said"
        return f"{what}: {exc.smtp_code} {text}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"server disconnected{': ' + str(exc) if str(exc) else ''}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if isinstance(exc, ConnectionError) else exc.strerror
    return str(exc) or type(exc).__name__


def _redact(text: str, smtp: SmtpSettings) -> str:
    # Defence in depth: a hostile or buggy server could echo the credentials back.
    secret = smtp.password()
    return text.replace(secret, "***") if secret else text


def deliver(message: EmailMessage, smtp: SmtpSettings) -> None:
    """Send one message; raise DeliveryError with a one-line reason on any failure.

    The reason is computed inside the handler but raised outside it, so the DeliveryError
    carries no chained exception whose frames could reveal the password.
    """
    where = f"smtp {smtp.host}:{smtp.port}"
    try:
        with _connect(smtp) as client:
            _secure(client, smtp)
            _login(client, smtp)
            refused = client.send_message(message)
    except (OSError, smtplib.SMTPException, _Refused) as exc:
        reason = _reason(exc)
    else:
        if refused:
            # Others accepted it; a retry would duplicate their copy, so only report.
            _log().warning("alert_recipients_refused", message_id=message["Message-ID"],
                           refused=sorted(refused))
        return
    raise DeliveryError(clean_line(_redact(f"{where}: {reason}", smtp), 500))


# --- the outbox worker ---------------------------------------------------------------


class Alerter:
    """Drains the outbox: groups due alerts into emails and records each outcome.

    All store work happens in the caller's thread (the sqlite connection belongs to it);
    only `aflush` moves the SMTP conversation to a worker thread.
    """

    def __init__(self, store: Any, config: Config):
        self.store = store
        self.config = config

    def flush(self) -> FlushResult:
        """Send every due alert now, stopping at the first delivery failure.

        For callers outside an event loop (the CLI); the daemon awaits `aflush`."""
        return asyncio.run(self.aflush())

    async def aflush(self) -> FlushResult:
        """Send every due alert and target notice now, stopping at the first delivery failure.

        Store work stays in the caller's thread (the connection is not shareable); only
        `deliver` runs in a worker thread so the event loop keeps crawling while a slow
        SMTP server answers. If cancelled mid-send, the batch stays 'sending' and the next
        flush resends it under the same Message-ID.

        A store that cannot record the outcome (disk full, read-only media) ends the flush
        with one logged line and the error in the result, never an exception through the
        daemon: an email sent but not marked sent is still 'sending' with its Message-ID,
        so the next flush resends the same message."""
        progress = FlushResult(0, 0, 0)
        try:
            await self._flush(progress)
        except StorageFailure as exc:
            _log().error("alerts_store_failed", error=str(exc))
            progress.error = str(exc)
        return progress

    async def _flush(self, progress: FlushResult) -> None:
        rows, notices = self.store.due_alerts(), self.store.due_notices()
        rows, silenced = self._hold_silenced(rows)
        rows = self._hold_for_groups(rows)
        progress.alerts_pending, progress.alerts_silenced = len(rows), silenced
        # The webhook does not depend on the mail server, nor the mail on the webhook.
        await self._flush_webhook(progress)
        busy = {group_key(r, self.config.alerts) for r in rows}
        reminders = list(self._reminders(busy)) if self._held_reason() is None else []
        if not rows and not notices and not reminders:
            return
        reason = self._held_reason()
        if reason is not None:
            _log().info("alerts_held", pending=len(rows), notices=len(notices), reason=reason)
            progress.error = reason
            return
        for table, ids, message, group in [*self._emails(rows, notices), *reminders]:
            if ids:
                self.store.mark_sending(ids, message["Message-ID"], table=table)
            try:
                await asyncio.to_thread(deliver, message, self.config.smtp)
            except DeliveryError as exc:
                # The remaining emails are not tried: the server is most likely down for
                # them too, and they are still due at the next flush.
                if ids:
                    self.store.mark_retry(ids, str(exc), table=table)
                progress.error = str(exc)
                _log().warning("alert_delivery_failed", error=str(exc), items=len(ids))
                return
            if ids:
                self.store.mark_sent(ids, table=table)
            if group is not None:
                self.store.mark_group_sent(group)
            progress.emails_sent += 1
            if table == "outbox":
                progress.alerts_sent += len(ids)
                progress.alerts_pending -= len(ids)
            elif table == "notices":
                progress.notices_sent += 1
            else:
                progress.reminders_sent += 1
            _log().info("alert_sent", items=len(ids), message_id=message["Message-ID"],
                        subject=message["Subject"])

    def _reminders(self, busy: set[str]) -> Iterator[tuple[str, list[int], EmailMessage,
                                                           str | None]]:
        """A reminder per alert group emailed more than `repeat_interval` ago whose hits
        are still new (not acknowledged, resolved or false positives): nothing is lost in
        a busy inbox. Its outbox rows are already sent, so the reminder marks none."""
        interval = self.config.alerts.repeat_interval
        if interval <= 0:
            return
        cutoff = (datetime.now(UTC) - timedelta(seconds=interval)).isoformat(
            timespec="seconds")
        by_group: dict[str, list[dict[str, Any]]] = {}
        for row in self.store.open_alerted_hits():
            by_group.setdefault(group_key(row, self.config.alerts), []).append(row)
        for key, rows in by_group.items():
            # A group being emailed anyway needs no reminder; the digest is its own one.
            if key in busy or key == "digest":
                continue
            last = self.store.group_sent_at(key)
            if last is None or last > cutoff:
                continue
            stamp = hashlib.sha256(f"{key}\x1f{utcnow()}".encode()).hexdigest()[:16]
            message = compose(_worst_first(rows)[:MAX_HITS_PER_EMAIL], self.config.alerts,
                              reminder=True,
                              message_id=f"<weightwatch-reminder.{stamp}@{MESSAGE_ID_DOMAIN}>")
            yield "reminders", [], message, key

    def _hold_silenced(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """The alerts no silence holds back; the others are deferred to their silence's
        end (their hits stay recorded), so they are emailed once when it ends."""
        now = utcnow()
        active = [s for s in map(Silence.from_row, self.store.silences(now=now)) if s.active(now)]
        if not active or not rows:
            return rows, 0
        keep, held = [], {}
        for row in rows:
            silence = silencing(active, row)
            if silence is None:
                keep.append(row)
            else:
                held.setdefault(silence.id, (silence, []))[1].append(int(row["outbox_id"]))
        for silence, ids in held.values():
            self.store.hold_alerts(ids, silence.ends_at, silence.id)
            _log().info("alerts_silenced", silence=silence.id, alerts=len(ids),
                        until=silence.ends_at)
        return keep, len(rows) - len(keep)

    async def _flush_webhook(self, progress: FlushResult) -> None:
        """POST each due alert group to the webhook, as emails are grouped; a failure
        leaves the group pending for the next flush, with back-off."""
        settings = self.config.alerts
        if settings.webhook is None or not settings.enabled:
            return
        rows, _ = self._hold_silenced(self.store.due_alerts(channel="webhook"))
        rows = self._hold_for_groups(rows, channel="webhook")
        for batch in batches(rows, settings):
            ids = sorted(int(r["outbox_id"]) for r in batch)
            self.store.mark_sending(ids, "webhook:" + message_id_for(batch))
            try:
                await asyncio.to_thread(post_webhook, webhook_payload(batch, settings),
                                        settings.webhook)
            except DeliveryError as exc:
                self.store.mark_retry(ids, str(exc))
                progress.webhook_error = str(exc)
                _log().warning("webhook_delivery_failed", error=str(exc), items=len(ids))
                return
            self.store.mark_sent(ids)
            self.store.mark_group_sent("webhook:" + group_key(batch[0], settings))
            progress.webhook_posts += 1
            _log().info("webhook_sent", items=len(ids))

    def _hold_for_groups(self, rows: list[dict[str, Any]], channel: str = "email"
                         ) -> list[dict[str, Any]]:
        """The alerts whose group may send now; the others are deferred to that time. A
        group never emailed waits `group_wait` from its first alert (so the mirrors one
        crawl finds go out together); after an email, it waits `group_interval`."""
        settings = self.config.alerts
        if not rows or (settings.group_wait <= 0 and settings.group_interval <= 0
                        and not settings.digest):
            return rows
        now = datetime.now(UTC)
        by_group: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_group.setdefault(group_key(row, settings), []).append(row)
        keep = []
        for key, group in by_group.items():
            last = self.store.group_sent_at(key if channel == "email" else f"{channel}:{key}")
            # The digest waits its interval from its first alert, then between digests.
            wait, interval = ((settings.digest_interval, settings.digest_interval)
                              if key == "digest" else
                              (settings.group_wait, settings.group_interval))
            if last is None:
                first = min(datetime.fromisoformat(r["queued_at"]) for r in group)
                ready = first + timedelta(seconds=wait)
            else:
                ready = datetime.fromisoformat(last) + timedelta(seconds=interval)
            if ready <= now:
                keep += group
            else:
                until = ready.isoformat(timespec="seconds")
                self.store.hold_alerts([int(r["outbox_id"]) for r in group], until)
                _log().debug("alerts_grouping", group=key, alerts=len(group), until=until)
        return keep

    def _emails(self, rows: list[dict[str, Any]], notices: list[dict[str, Any]]
                ) -> Iterator[tuple[str, list[int], EmailMessage, str | None]]:
        """(queue table, ids, message, alert group) for each email to send; each is composed
        before it is marked sending, so a composing bug cannot burn retry attempts.

        A batch a flush marked 'sending' and then died on (perhaps after the server had
        accepted it) goes again as it was, under the Message-ID it was marked with, so the
        mailbox sees one message; batched afresh, with alerts queued since, it would go
        under a new Message-ID and be read twice. Only the other rows are batched anew."""
        unsent: list[dict[str, Any]] = []
        resend: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row.get("outbox_status") == "sending" and row.get("outbox_message_id"):
                resend.setdefault(row["outbox_message_id"], []).append(row)
            else:
                unsent.append(row)
        for message_id, batch in resend.items():
            message = compose(_worst_first(batch), self.config.alerts, message_id=message_id)
            yield ("outbox", sorted(int(r["outbox_id"]) for r in batch), message,
                   group_key(batch[0], self.config.alerts))
        for batch in batches(unsent, self.config.alerts):
            message = compose(batch, self.config.alerts, message_id=message_id_for(batch))
            yield ("outbox", sorted(int(r["outbox_id"]) for r in batch), message,
                   group_key(batch[0], self.config.alerts))
        for notice in notices:
            yield ("notices", [int(notice["id"])], compose_notice(notice, self.config.alerts),
                   None)

    def _held_reason(self) -> str | None:
        if not self.config.alerts.enabled:
            return "alerts are disabled (alerts.enabled = false); alerts stay pending"
        if self.config.smtp is None:
            return "no [smtp] section in the config; alerts stay pending"
        if not self.config.alerts.to and not self.config.alerts.routes:
            return "alerts.to is empty; alerts stay pending"
        return None


def send_test(config: Config) -> str:
    """Send a short test email with the configured SMTP settings; return its Message-ID.

    Sent even when alerts are disabled: the operator asked for it explicitly.
    """
    if config.smtp is None:
        raise DeliveryError("no [smtp] section in the config")
    if not config.alerts.to:
        raise DeliveryError("alerts.to is empty: nobody to send the test to")
    message = EmailMessage()
    # Short enough never to be folded: a folded Message-ID is easily mangled by relays.
    message_id = f"<weightwatch-test.{secrets.token_hex(8)}@{MESSAGE_ID_DOMAIN}>"
    message["Subject"] = f"{clean_line(config.alerts.subject_prefix, 60)} weightwatch test alert"
    message["From"] = clean_line(config.alerts.sender)
    message["To"] = ", ".join(clean_line(addr) for addr in config.alerts.to)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "weightwatch test alert\n\n"
        f"This message was sent by `weightwatch alerts test` through "
        f"{config.smtp.host}:{config.smtp.port} ({config.smtp.security}).\n"
        "If you can read it, alert emails will reach this address.\n")
    deliver(message, config.smtp)
    _log().info("alert_test_sent", message_id=message_id)
    return message_id
