"""Notifiers: the channels an alert goes out on. Each composes its message and sends it,
nothing more; which alerts go, when, and what happens after a failure is the pipeline's
(`monitor.alerts`), the same for every channel.

`send` blocks (SMTP, HTTP) and raises DeliveryError with one line saying why; the pipeline
runs it in a worker thread and records the outcome.
"""

from __future__ import annotations

import secrets
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import structlog

from monitor.alerting.messages import (
    MESSAGE_ID_DOMAIN,
    Row,
    WebhookPayload,
    clean_line,
    compose,
    compose_notice,
    compose_test,
    webhook_payload,
)
from monitor.config import AlertSettings, ChannelSettings, Config, SmtpSettings, WebhookSettings
from monitor.models import Clock, system_clock

if TYPE_CHECKING:
    from monitor.alerting.chat import ChatMessage

# An outbox channel: "email", "webhook", or a chat channel's configured name.
Channel = str
# What a notification carries: new alerts of one group, a target health notice, or a
# reminder of a group's alerts still open.
BatchKind = Literal["alerts", "notice", "reminder"]
Message = TypeVar("Message")


def log() -> structlog.stdlib.BoundLogger:
    # Looked up per call, not at import: a logger cached at import time would bypass
    # whatever configuration (or test capture) is active when alerts are actually sent.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger("weightwatch.alerts")
    return logger


class DeliveryError(Exception):
    """One line saying why delivery failed; safe to log and to store as last_error."""


@dataclass(frozen=True)
class Batch:
    """One notification's content, as the pipeline decided it: its rows (outbox rows, or
    the one notice row), the alert group they belong to, and the Message-ID it goes under
    (reused when a batch that may have been delivered is sent again)."""

    kind: BatchKind
    rows: list[Row]
    message_id: str
    group: str | None = None

    @property
    def queue(self) -> Literal["outbox", "notices"] | None:
        """The table whose rows this batch delivers; a reminder's rows were sent already."""
        return "outbox" if self.kind == "alerts" else "notices" if self.kind == "notice" else None

    @property
    def ids(self) -> list[int]:
        if self.kind == "alerts":
            return sorted(int(r["outbox_id"]) for r in self.rows)
        return [int(r["id"]) for r in self.rows] if self.kind == "notice" else []


class Notifier(Protocol[Message]):
    """A channel: composes a batch into its message and sends it."""

    @property
    def channel(self) -> Channel:
        """The outbox channel whose rows it delivers."""

    @property
    def carries(self) -> frozenset[BatchKind]:
        """The kinds of batch it sends (target notices and reminders go by email only)."""

    @property
    def event(self) -> str:
        """The prefix of its log events (`alert_sent`, `webhook_delivery_failed`)."""

    def held(self) -> str | None:
        """Why nothing can be sent on this channel now (its settings), or None."""

    def subject(self, message: Message) -> str:
        """What the message is about, in one line, for the log."""

    def compose(self, batch: Batch, now: datetime) -> Message:
        """The message for `batch`, as of `now`; raises nothing for any stored content."""

    def send(self, message: Message) -> None:
        """Deliver it, blocking; DeliveryError (one line) on any failure."""


@dataclass(frozen=True)
class EmailNotifier:
    settings: AlertSettings
    smtp: SmtpSettings | None
    channel: Channel = "email"
    carries: frozenset[BatchKind] = field(
        default=frozenset({"alerts", "notice", "reminder"}))
    event: str = "alert"

    def held(self) -> str | None:
        if not self.settings.enabled:
            return "alerts are disabled (alerts.enabled = false); alerts stay pending"
        if self.smtp is None:
            return "no [smtp] section in the config; alerts stay pending"
        if not self.settings.to and not self.settings.routes:
            return "alerts.to is empty; alerts stay pending"
        return None

    def subject(self, message: EmailMessage) -> str:
        return str(message["Subject"])

    def compose(self, batch: Batch, now: datetime) -> EmailMessage:
        if batch.kind == "notice":
            return compose_notice(batch.rows[0], self.settings, now=now)
        return compose(batch.rows, self.settings, message_id=batch.message_id, now=now,
                       reminder=batch.kind == "reminder")

    def send(self, message: EmailMessage) -> None:
        if self.smtp is None:
            raise DeliveryError("no [smtp] section in the config")
        deliver(message, self.smtp)


@dataclass(frozen=True)
class WebhookNotifier:
    settings: AlertSettings
    hook: WebhookSettings
    channel: Channel = "webhook"
    carries: frozenset[BatchKind] = field(default=frozenset({"alerts"}))
    event: str = "webhook"

    def held(self) -> str | None:
        return None

    def subject(self, message: WebhookPayload) -> str:
        return message["subject"]

    def compose(self, batch: Batch, now: datetime) -> WebhookPayload:
        return webhook_payload(batch.rows, self.settings, group=batch.group or "")

    def send(self, message: WebhookPayload) -> None:
        post_webhook(message, self.hook)


@dataclass(frozen=True)
class ChatNotifier:
    """A chat service through Apprise (`[[alerts.channels]]`): a short text per group."""

    settings: AlertSettings
    chat: ChannelSettings
    carries: frozenset[BatchKind] = field(default=frozenset({"alerts"}))
    event: str = "chat"

    @property
    def channel(self) -> Channel:
        return self.chat.name

    def held(self) -> str | None:
        # A URL that is missing or not Apprise's holds the alerts pending, as a missing
        # [smtp] does, rather than spending their retries on a setting to fix.
        url = self.chat.url()
        if url is None:
            return (f"environment variable {self.chat.url_env} (the URL of channel "
                    f"{self.chat.name}) is not set; alerts stay pending")
        from monitor.alerting.chat import ChatError, service

        try:
            service(url)
        except ChatError as exc:
            return (f"{self.chat.url_env} (the URL of channel {self.chat.name}): {exc}; "
                    "alerts stay pending")
        return None

    def subject(self, message: ChatMessage) -> str:
        return message["title"]

    def compose(self, batch: Batch, now: datetime) -> ChatMessage:
        from monitor.alerting.chat import chat_message

        return chat_message(batch.rows, self.settings)

    def send(self, message: ChatMessage) -> None:
        from monitor.alerting.chat import ChatError, send_chat

        url = self.chat.url()
        if url is None:
            raise DeliveryError(f"channel {self.chat.name}: {self.chat.url_env} is not set")
        try:
            send_chat(message, url)
        except ChatError as exc:
            raise DeliveryError(f"channel {self.chat.name}: {exc}") from None


# --- the webhook -------------------------------------------------------------------------


def post_webhook(payload: WebhookPayload, hook: WebhookSettings) -> None:
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
            log().warning("alert_recipients_refused", message_id=message["Message-ID"],
                           refused=sorted(refused))
        return
    raise DeliveryError(clean_line(_redact(f"{where}: {reason}", smtp), 500))


def send_chat_test(settings: AlertSettings, chat: ChannelSettings, *,
                   clock: Clock = system_clock) -> None:
    """Send a short test message to a chat channel; DeliveryError (one line, the URL
    masked) if it fails. Sent even when alerts are disabled: the operator asked for it."""
    from monitor.alerting.chat import ChatMessage

    notifier = ChatNotifier(settings, chat)
    reason = notifier.held()
    if reason is not None:
        raise DeliveryError(reason.removesuffix("; alerts stay pending"))
    stamp = clock().isoformat(timespec="seconds")
    notifier.send(ChatMessage(
        title=f"{clean_line(settings.subject_prefix, 60)} test message",
        body=f"weightwatch can post to channel {chat.name} ({stamp}): its alert groups "
             "will arrive here.", kind="info"))
    log().info("chat_test_sent", channel=chat.name)


def send_test(config: Config, *, clock: Clock = system_clock) -> str:
    """Send a short test email with the configured SMTP settings; return its Message-ID.

    Sent even when alerts are disabled: the operator asked for it explicitly.
    """
    if config.smtp is None:
        raise DeliveryError("no [smtp] section in the config")
    if not config.alerts.to:
        raise DeliveryError("alerts.to is empty: nobody to send the test to")
    # Short enough never to be folded: a folded Message-ID is easily mangled by relays.
    message_id = f"<weightwatch-test.{secrets.token_hex(8)}@{MESSAGE_ID_DOMAIN}>"
    deliver(compose_test(config.alerts, config.smtp, message_id=message_id, now=clock()),
            config.smtp)
    log().info("alert_test_sent", message_id=message_id)
    return message_id


def check_login(smtp: SmtpSettings) -> str:
    """Connect, secure and log in as `deliver` does, sending nothing (`check-config
    --online`); what was done, or DeliveryError with one line why, never the password."""
    where = f"smtp {smtp.host}:{smtp.port}"
    try:
        with _connect(smtp) as client:
            _secure(client, smtp)
            _login(client, smtp)
    except (OSError, smtplib.SMTPException, _Refused) as exc:
        reason = _reason(exc)
    else:
        return (f"{where}: logged in as {smtp.username}" if smtp.username
                else f"{where}: connected (no smtp.username: no login)")
    raise DeliveryError(clean_line(_redact(f"{where}: {reason}", smtp), 500))
