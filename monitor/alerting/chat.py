"""Chat channels (Slack, Teams, Matrix, Discord, Mattermost, ntfy...) through Apprise.

A chat message is read on a phone between two others: a short text (the subject, the worst
severity, whose copy leaked, the counts, the top locations, the commands to triage), not
the email's evidence. Apprise knows each service's API and payload, so weightwatch keeps
one composition and one sender for all of them.

The service's URL carries its token, so it is read from the environment at send time and
never logged, stored or echoed in an error: Apprise's own log lines (which print URLs at
debug level) are kept from the application's log, and the one line of reason a failure
gets has every piece of the URL masked. Apprise is imported only when a chat is sent, so
analyst commands never load it.
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, TypedDict
from urllib.parse import parse_qsl, unquote, urlsplit

from monitor.alerting.messages import Row, clean_line, show_command, subject_line, worst_first
from monitor.grouping import incident_key
from monitor.models import severity_rank

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

    from monitor.config import AlertSettings

# Enough to see where a leak is without scrolling a chat window.
TOP_LOCATIONS = 5
# Apprise's notification types, by which services colour a message.
NotifyKind = Literal["info", "warning", "failure"]
_KIND_OF_SEVERITY: dict[str, NotifyKind] = {"critical": "failure", "high": "failure",
                                             "medium": "warning"}


class ChatMessage(TypedDict):
    title: str
    body: str
    kind: NotifyKind


def _inert(text: str) -> str:
    """Crawled text as chat text: mentions (`@everyone`, `@room`, `<!channel>`) would page
    a whole team, so every `@` and `<!` is broken with a zero-width space."""
    return text.replace("@", "@\u200b").replace("<!", "<\u200b!")


def chat_message(rows: list[Row], settings: AlertSettings) -> ChatMessage:
    """The text an alert group is sent as: what an on-call reader decides from, and the
    commands that take them to the evidence."""
    ordered = worst_first(rows)
    worst = clean_line(ordered[0]["severity"], 20)
    recipients = sorted({clean_line(r["recipient"], 80) for r in ordered if r.get("recipient")})
    severities = Counter(clean_line(r["severity"], 20) for r in ordered)
    kinds = Counter(clean_line(r["kind"], 20) for r in ordered)
    by_url: dict[str, list[Row]] = {}
    for row in ordered:
        by_url.setdefault(clean_line(row.get("url"), 200), []).append(row)
    lines = [f"Worst severity: {worst.upper()}"]
    if recipients:
        lines.append(f"Whose copy: {', '.join(recipients)}")
    lines.append("Hits: " + ", ".join(
        f"{n} {s}" for s, n in sorted(severities.items(), key=lambda i: severity_rank(i[0])))
        + " (" + ", ".join(f"{n} {k}" for k, n in kinds.most_common()) + ")")
    lines.append(f"Locations: {len(by_url)}")
    for url, hits in list(by_url.items())[:TOP_LOCATIONS]:
        noun = "hit" if len(hits) == 1 else "hits"
        lines.append(f"- {_inert(url)} ({len(hits)} {noun}, {hits[0]['severity']})")
    if len(by_url) > TOP_LOCATIONS:
        lines.append(f"- and {len(by_url) - TOP_LOCATIONS} more (weightwatch incidents)")
    key = incident_key(ordered[0], settings.group_by)
    lines += ["", f"Evidence: {show_command(ordered[0])}",
              f"Triage: weightwatch hits ack --incident {shlex.quote(key)} --note TEXT"]
    return ChatMessage(title=subject_line(rows, clean_line(settings.subject_prefix, 60)),
                       body="\n".join(lines), kind=_KIND_OF_SEVERITY.get(worst, "info"))


# --- sending -------------------------------------------------------------------------


class ChatError(Exception):
    """One line, the URL's pieces masked, saying why a chat could not be sent."""


def url_secrets(url: str) -> list[str]:
    """Every piece of an Apprise URL that may be a token: Apprise puts tokens in the host
    (`slack://T.../B.../X...`), the path, the user, the password and the query alike."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    pieces = {url}
    if parts is not None:
        pieces |= {parts.netloc, parts.hostname or "", parts.username or "",
                   parts.password or "", str(port or ""), parts.fragment}
        pieces |= set(parts.path.split("/")) | {v for _, v in parse_qsl(parts.query)}
        pieces |= {unquote(p) for p in list(pieces)}
    # Longest first, so a token is masked whole before any piece of it.
    return sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True)


def redact(text: str, url: str) -> str:
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


class _Collector(logging.Handler):
    """Apprise's warnings during one send, kept for the failure's reason (per thread: each
    send runs in a worker thread of its own)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines: list[str] | None = getattr(self.local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())

    @contextmanager
    def collecting(self) -> Iterator[list[str]]:
        lines: list[str] = []
        self.local.lines = lines
        try:
            yield lines
        finally:
            self.local.lines = None


_collector = _Collector()
_quieted = threading.Lock()


def _quiet_apprise() -> None:
    """Apprise logs its URLs (tokens) at debug level and its failures with details: none
    of it may reach the application's log, whatever its level, so its logger keeps to
    itself and only warnings are even formatted, into the collector."""
    with _quieted:
        logger = logging.getLogger("apprise")
        logger.propagate = False
        logger.setLevel(logging.WARNING)
        if _collector not in logger.handlers:
            logger.handlers[:] = [_collector]
        # Apprise's HTTP goes through requests and urllib3, which log each request's path
        # (a Slack or Discord token) at debug and retries with it at warning. weightwatch's
        # own HTTP is httpx, so nothing else is lost by silencing urllib3 altogether.
        transport = logging.getLogger("urllib3")
        transport.propagate = False
        transport.setLevel(logging.CRITICAL + 1)


def service(url: str) -> NotifyBase:
    """The Apprise service for `url`; ChatError (never naming the URL) if it is not one."""
    _quiet_apprise()
    import apprise

    with _collector.collecting():
        # In memory only: Apprise's persistent store would keep service state (tokens it
        # was given, ids it looked up) in files of its own beside weightwatch's. No icon:
        # Apprise's are on GitHub, which every reader's client would then be sent to.
        asset = apprise.AppriseAsset(app_id="weightwatch", app_desc="weightwatch alerts",
                                     app_url="", image_url_mask="", image_url_logo="",
                                     secure_logging=True, storage_mode="memory")
        plugin = apprise.Apprise.instantiate(url, asset=asset, suppress_exceptions=True)
    if plugin is None:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        known = scheme.isalnum() and len(scheme) <= 20
        raise ChatError(f"not a URL Apprise can send to (scheme {scheme!r})" if known
                        else "not a URL Apprise can send to")
    return plugin


def send_chat(message: ChatMessage, url: str) -> None:
    """Post one message; ChatError with a one-line reason, masked, on any failure."""
    plugin = service(url)
    import apprise

    with _collector.collecting() as warnings:
        try:
            ok = plugin.notify(body=message["body"], title=message["title"],
                               notify_type=apprise.NotifyType(message["kind"]),
                               body_format=apprise.NotifyFormat.TEXT)
        except Exception as exc:  # a plugin's bug must not end the flush; say what it was
            warnings.append(type(exc).__name__)
            ok = False
    if not ok:
        reason = "; ".join(dict.fromkeys(warnings)) or "the service refused the message"
        raise ChatError(clean_line(redact(reason, url), 300))
