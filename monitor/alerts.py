"""The alert pipeline: due outbox rows in, grouped notifications out, the Alertmanager way.

The security team must get few, trustworthy alerts with the evidence inline, and never a
silent gap. So the outbox (written with the hits, in the same transaction) is the only
source of truth: a batch is marked 'sending' with its Message-ID *before* the conversation
with the channel, marked 'sent' after it, and put back for retry with the error otherwise.
A crash mid-send yields at worst a resend carrying the same Message-ID.

Every channel (a `Notifier`: email, webhook, chats through Apprise; `monitor.alerting`)
goes through the same stages, written once here: silence, group wait, dedup, send, retry.
The time is handed in (`now`, or the Alerter's clock) and no stage reads the clock, so
every timing rule can be tested on a clock the test holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from monitor.alerting.messages import (
    MAX_HITS_PER_EMAIL,
    MESSAGE_ID_DOMAIN,
    Row,
    clean_block,
    clean_line,
    compose,
    compose_notice,
    html_url,
    message_id_for,
    notice_message_id,
    reminder_message_id,
    show_command,
    webhook_payload,
    worst_first,
)
from monitor.alerting.notifiers import (
    Batch,
    Channel,
    ChatNotifier,
    DeliveryError,
    EmailNotifier,
    Notifier,
    WebhookNotifier,
    deliver,
    log,
    post_webhook,
    send_test,
)
from monitor.config import AlertSettings, Config
from monitor.grouping import group_key
from monitor.models import Clock, system_clock
from monitor.silences import Silence, silencing
from monitor.store import StorageFailure, Store

__all__ = ["MAX_HITS_PER_EMAIL", "MESSAGE_ID_DOMAIN", "Alerter", "DeliveryError", "FlushResult",
           "Notifier", "batches", "clean_block", "clean_line", "compose", "compose_notice",
           "deliver", "html_url", "message_id_for", "post_webhook", "send_test",
           "show_command", "webhook_payload"]

Message = TypeVar("Message")


@dataclass
class ChannelResult:
    """What one channel's flush did."""

    sent: int = 0               # messages: emails, webhook POSTs
    alerts_sent: int = 0
    alerts_pending: int = 0
    alerts_silenced: int = 0    # held back by a silence until it ends
    notices_sent: int = 0
    reminders_sent: int = 0
    error: str | None = None

    def count(self, batch: Batch) -> None:
        self.sent += 1
        if batch.kind == "alerts":
            self.alerts_sent += len(batch.ids)
            self.alerts_pending -= len(batch.ids)
        elif batch.kind == "notice":
            self.notices_sent += 1
        else:
            self.reminders_sent += 1


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
    # Each chat channel's own counts and error, by its name.
    chats: dict[str, ChannelResult] = field(default_factory=dict)

    @classmethod
    def of(cls, email: ChannelResult, webhook: ChannelResult, error: str | None,
           chats: dict[str, ChannelResult] | None = None) -> FlushResult:
        """The email channel's counts, the webhook's POSTs and error, each chat's result,
        and `error` (the store's) over the email's."""
        return cls(emails_sent=email.sent, alerts_sent=email.alerts_sent,
                   alerts_pending=email.alerts_pending, error=error or email.error,
                   notices_sent=email.notices_sent, alerts_silenced=email.alerts_silenced,
                   webhook_posts=webhook.sent, webhook_error=webhook.error,
                   reminders_sent=email.reminders_sent, chats=dict(chats or {}))


# --- grouping --------------------------------------------------------------------------


def batches(rows: list[Row], settings: AlertSettings | None = None) -> list[list[Row]]:
    """One batch per alert group and route, worst group first, each capped at
    MAX_HITS_PER_EMAIL so that a flood of hits still yields bounded emails."""
    by_group: dict[tuple[str, tuple[str, ...]], list[Row]] = {}
    for row in worst_first(rows):
        route = settings.recipients(row) if settings is not None else ()
        by_group.setdefault((group_key(row, settings), route), []).append(row)
    out = []
    for group_rows in by_group.values():
        for start in range(0, len(group_rows), MAX_HITS_PER_EMAIL):
            out.append(group_rows[start:start + MAX_HITS_PER_EMAIL])
    return out


# --- the stages ------------------------------------------------------------------------


@dataclass
class Flush:
    """One channel's flush: what its stages read (the store, the settings, the time) and
    what they count. Store work stays in the caller's thread: the connection is its own."""

    store: Store
    settings: AlertSettings
    channel: Channel
    now: datetime
    result: ChannelResult = field(default_factory=ChannelResult)

    @property
    def stamp(self) -> str:
        """`now` as the store writes times (ISO 8601 to the second)."""
        return self.now.isoformat(timespec="seconds")

    @property
    def prefix(self) -> str:
        # Email's group keys and Message-IDs are stored bare, as before there were other
        # channels; another channel's carry its name, so the two never share a group.
        return "" if self.channel == "email" else f"{self.channel}:"

    def key(self, name: str) -> str:
        """A group key or Message-ID as the store records it for this channel."""
        return self.prefix + name


def hold_silenced(flush: Flush, rows: list[Row]) -> list[Row]:
    """Silence: the alerts no silence holds back. The others are deferred to their
    silence's end (their hits stay recorded), so they are sent once when it ends."""
    if not rows:
        return rows
    active = [s for s in map(Silence.from_row, flush.store.silences(now=flush.stamp))
              if s.active(flush.stamp)]
    if not active:
        return rows
    keep: list[Row] = []
    held: dict[int, tuple[Silence, list[int]]] = {}
    for row in rows:
        silence = silencing(active, row)
        if silence is None:
            keep.append(row)
        else:
            held.setdefault(silence.id, (silence, []))[1].append(int(row["outbox_id"]))
    for silence, ids in held.values():
        flush.store.hold_alerts(ids, silence.ends_at, silence.id)
        log().info("alerts_silenced", channel=flush.channel, silence=silence.id,
                   alerts=len(ids), until=silence.ends_at)
    flush.result.alerts_silenced = len(rows) - len(keep)
    return keep


def hold_for_group(flush: Flush, rows: list[Row]) -> list[Row]:
    """Group wait: the alerts whose group may send now; the others are deferred to that
    time. A group never sent waits `group_wait` from its first alert (so the mirrors one
    crawl finds go out together); after that, `group_interval` from its last message. The
    digest waits its interval from its first alert, then between digests."""
    settings = flush.settings
    if not rows or (settings.group_wait <= 0 and settings.group_interval <= 0
                    and not settings.digest):
        return rows
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        by_group.setdefault(group_key(row, settings), []).append(row)
    keep: list[Row] = []
    for key, group in by_group.items():
        last = flush.store.group_sent_at(flush.key(key))
        wait, interval = ((settings.digest_interval, settings.digest_interval)
                          if key == "digest" else
                          (settings.group_wait, settings.group_interval))
        if last is None:
            first = min(datetime.fromisoformat(r["queued_at"]) for r in group)
            ready = first + timedelta(seconds=wait)
        else:
            ready = datetime.fromisoformat(last) + timedelta(seconds=interval)
        if ready <= flush.now:
            keep += group
        else:
            until = ready.isoformat(timespec="seconds")
            flush.store.hold_alerts([int(r["outbox_id"]) for r in group], until)
            log().debug("alerts_grouping", channel=flush.channel, group=key,
                        alerts=len(group), until=until)
    return keep


# The stages that hold alerts back, in order: what a silence holds is not grouped.
HOLDS: tuple[Callable[[Flush, list[Row]], list[Row]], ...] = (hold_silenced, hold_for_group)


def dedup(flush: Flush, rows: list[Row]) -> list[Batch]:
    """The batches to send, each under its Message-ID.

    A batch a flush marked 'sending' and then died on (perhaps after the server had
    accepted it) goes again as it was, under the Message-ID it was marked with, so the
    receiver sees one message; batched afresh, with alerts queued since, it would go under
    a new Message-ID and be read twice. Only the other rows are batched anew, under an id
    derived from the batch (`message_id_for`), so a retry after a failure reuses it too."""
    unsent: list[Row] = []
    resend: dict[str, list[Row]] = {}
    for row in rows:
        if row.get("outbox_status") == "sending" and row.get("outbox_message_id"):
            resend.setdefault(row["outbox_message_id"], []).append(row)
        else:
            unsent.append(row)
    out = [Batch("alerts", worst_first(batch), stored.removeprefix(flush.prefix),
                 group_key(batch[0], flush.settings))
           for stored, batch in resend.items()]
    out += [Batch("alerts", batch, message_id_for(batch), group_key(batch[0], flush.settings))
            for batch in batches(unsent, flush.settings)]
    return out


def notices(flush: Flush) -> list[Batch]:
    """A batch per target health notice due (down after N failures, or recovered)."""
    return [Batch("notice", [row], notice_message_id(row))
            for row in flush.store.due_notices(flush.stamp)]


def reminders(flush: Flush, busy: set[str]) -> list[Batch]:
    """A reminder per alert group sent more than `repeat_interval` ago whose hits are
    still new (not acknowledged, resolved or false positives): nothing is lost in a busy
    inbox. A group being sent anyway (`busy`) needs none; the digest is its own reminder.
    Its outbox rows were sent already, so a reminder marks none."""
    interval = flush.settings.repeat_interval
    if interval <= 0:
        return []
    cutoff = (flush.now - timedelta(seconds=interval)).isoformat(timespec="seconds")
    by_group: dict[str, list[Row]] = {}
    # The store keeps what was alerted by email; reminders are an email's (`carries`).
    for row in flush.store.open_alerted_hits():
        by_group.setdefault(group_key(row, flush.settings), []).append(row)
    out = []
    for key, rows in by_group.items():
        if key in busy or key == "digest":
            continue
        last = flush.store.group_sent_at(flush.key(key))
        if last is None or last > cutoff:
            continue
        out.append(Batch("reminder", worst_first(rows)[:MAX_HITS_PER_EMAIL],
                         reminder_message_id(key, flush.now), key))
    return out


async def send(flush: Flush, notifier: Notifier[Message], batches: Sequence[Batch]) -> None:
    """Send: each batch in turn, composed before it is marked 'sending' (so a composing
    bug cannot burn retry attempts), sent in a worker thread (the event loop keeps
    crawling while a slow server answers), then marked 'sent'. If cancelled mid-send, the
    batch stays 'sending' and the next flush resends it under the same Message-ID.

    The first failure is retried later and ends the channel's flush: the server is most
    likely down for the remaining batches too, and they are still due at the next flush."""
    for batch in batches:
        message = notifier.compose(batch, flush.now)
        if batch.queue is not None:
            flush.store.mark_sending(batch.ids, flush.key(batch.message_id), table=batch.queue,
                                     now=flush.stamp)
        try:
            await asyncio.to_thread(notifier.send, message)
        except DeliveryError as exc:
            retry_later(flush, notifier, batch, exc)
            return
        if batch.queue is not None:
            flush.store.mark_sent(batch.ids, table=batch.queue, now=flush.stamp)
        if batch.group is not None:
            flush.store.mark_group_sent(flush.key(batch.group), flush.stamp)
        flush.result.count(batch)
        log().info(f"{notifier.event}_sent", channel=flush.channel, items=len(batch.ids),
                   message_id=batch.message_id, subject=notifier.subject(message))


def retry_later(flush: Flush, notifier: Notifier[Message], batch: Batch,
                exc: DeliveryError) -> None:
    """Retry: the batch goes back with its error, due again after the store's back-off."""
    if batch.queue is not None:
        flush.store.mark_retry(batch.ids, str(exc), table=batch.queue, now=flush.stamp)
    flush.result.error = str(exc)
    log().warning(f"{notifier.event}_delivery_failed", channel=flush.channel, error=str(exc),
                  items=len(batch.ids))


async def run(flush: Flush, notifier: Notifier[Message]) -> None:
    """One channel through the stages: its due alerts, less what silences and group
    waits hold back; then, if there is anything to send and the channel can send, the
    batches (alerts, then notices and reminders where the channel carries them)."""
    rows: list[Row] = list(flush.store.due_alerts(flush.stamp, channel=flush.channel))
    for hold in HOLDS:
        rows = hold(flush, rows)
    flush.result.alerts_pending = len(rows)
    due_notices = notices(flush) if "notice" in notifier.carries else []
    if not rows and not due_notices and "reminder" not in notifier.carries:
        return  # nothing it could send: its settings need not be checked (or loaded)
    reason = notifier.held()
    due_reminders = (reminders(flush, {group_key(r, flush.settings) for r in rows})
                     if "reminder" in notifier.carries and reason is None else [])
    if not rows and not due_notices and not due_reminders:
        return
    if reason is not None:
        log().info("alerts_held", channel=flush.channel, pending=len(rows),
                   notices=len(due_notices), reason=reason)
        flush.result.error = reason
        return
    await send(flush, notifier, [*dedup(flush, rows), *due_notices, *due_reminders])


# --- the outbox worker ---------------------------------------------------------------


class Alerter:
    """Drains the outbox through the pipeline, one channel after the other.

    The time of every decision is `now` if given, else the clock's (read once per flush):
    the daemon and the CLI hand in the wall clock, a test its own."""

    def __init__(self, store: Store, config: Config, *, clock: Clock = system_clock):
        self.store = store
        self.config = config
        self.clock = clock

    def email(self) -> EmailNotifier:
        return EmailNotifier(self.config.alerts, self.config.smtp)

    def webhook(self) -> WebhookNotifier | None:
        """The webhook channel, when one is configured and alerts are enabled."""
        settings = self.config.alerts
        if settings.webhook is None or not settings.enabled:
            return None
        return WebhookNotifier(settings, settings.webhook)

    def chats(self) -> list[ChatNotifier]:
        """The chat channels (`[[alerts.channels]]`), when alerts are enabled."""
        settings = self.config.alerts
        return [ChatNotifier(settings, chat) for chat in settings.chats] if settings.enabled \
            else []

    def flush(self, now: datetime | None = None) -> FlushResult:
        """Send every due alert now, stopping at the first delivery failure.

        For callers outside an event loop (the CLI); the daemon awaits `aflush`."""
        return asyncio.run(self.aflush(now))

    async def aflush(self, now: datetime | None = None) -> FlushResult:
        """Send every due alert and target notice now, each channel stopping at its first
        delivery failure.

        A store that cannot record the outcome (disk full, read-only media) ends the flush
        with one logged line and the error in the result, never an exception through the
        daemon: a message sent but not marked sent is still 'sending' with its Message-ID,
        so the next flush resends the same message."""
        when = self.clock() if now is None else now
        if when.utcoffset() is None:
            raise ValueError("the alert pipeline needs an aware time (UTC), not a naive one")
        # In UTC, as the store writes its times: they are compared as text.
        when = when.astimezone(UTC)
        chats = self.chats()
        flushes = {channel: Flush(self.store, self.config.alerts, channel, when)
                   for channel in ("email", "webhook", *(c.channel for c in chats))}
        error = None
        try:
            # The webhook and chats first: they do not depend on the mail server, nor the
            # mail on them; each channel's failure ends only its own flush.
            webhook = self.webhook()
            if webhook is not None:
                await run(flushes["webhook"], webhook)
            for chat in chats:
                await run(flushes[chat.channel], chat)
            await run(flushes["email"], self.email())
        except StorageFailure as exc:
            log().error("alerts_store_failed", error=str(exc))
            error = str(exc)
        return FlushResult.of(flushes["email"].result, flushes["webhook"].result, error,
                              {c.channel: flushes[c.channel].result for c in chats})
