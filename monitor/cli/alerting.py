"""The alert outbox and silences: `alerts list|flush|test`, `silence add|list|expire`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from monitor.cli.common import State, fail, format_option, operator
from monitor.config import parse_duration
from monitor.models import SilenceRow, system_clock, utcnow
from monitor.output import emit


@click.group("alerts")
def alerts() -> None:
    """The alert outbox: what was sent, what is pending."""


@alerts.command("list")
@click.option("--status", type=click.Choice(["pending", "sending", "sent", "failed"]))
@click.option("--notices", is_flag=True, help="Target down/recovered notices instead of hit alerts.")
@format_option
@click.pass_obj
def alerts_list(state: State, status: str | None, notices: bool, fmt: str) -> None:
    """Alerts in the outbox with their delivery state (or, with --notices, target notices)."""
    with state.store(write=False) as store:
        if notices:
            emit(store.notices(status), fmt, empty="no target notices",
                 table_columns=("id", "kind", "target", "status", "attempts", "created_at",
                                "sent_at", "error", "last_error"))
            return
        rows = store.outbox(status)
    emit(rows, fmt, table_columns=("id", "hit_id", "channel", "status", "attempts", "severity",
                                   "model",
                                   "created_at", "sent_at", "silenced_by", "last_error"),
         empty="the outbox is empty")


@alerts.command("flush")
@click.pass_obj
def alerts_flush(state: State) -> None:
    """Send every pending alert now, ignoring retry back-off. Exit 1 if delivery failed
    (email or a chat channel)."""
    from monitor.alerts import Alerter

    with state.store() as store:
        store.retry_now()
        result = Alerter(store, state.config, clock=system_clock).flush()
    silenced = f", {result.alerts_silenced} held by silences" if result.alerts_silenced else ""
    click.echo(f"{result.emails_sent} email(s) sent for {result.alerts_sent} hit(s); "
               f"{result.alerts_pending} pending{silenced}")
    for name, chat in result.chats.items():
        click.echo(f"{name}: {chat.sent} message(s) sent for {chat.alerts_sent} hit(s); "
                   f"{chat.alerts_pending} pending")
    errors = [e for e in (result.error, *(chat.error for chat in result.chats.values())) if e]
    for error in errors[:-1]:
        click.echo(f"weightwatch: {error}", err=True)
    if errors:
        fail(errors[-1], 1)


@click.group("silence")
def silence_group() -> None:
    """Hold back alerts that match, for a while (hits are still recorded)."""


@silence_group.command("add")
@click.option("--match", "matchers", multiple=True, required=True,
              help="KEY=VALUE, KEY!=VALUE, KEY=~REGEX or KEY!~REGEX on severity, kind, model, "
                   "recipient, target, url, indicator, artifact, detector, rule (repeatable; "
                   "all must hold).")
@click.option("--for", "duration", required=True, help="How long, e.g. 2h, 7d.")
@click.option("--reason", required=True, help="Why: shown in `silence list`, kept for audit.")
@format_option
@click.pass_obj
def silence_add(state: State, matchers: tuple[str, ...], duration: str, reason: str,
                fmt: str) -> None:
    """Silence matching alerts from now for DURATION. When it ends (or is expired), what
    it held back and is still pending is emailed once."""
    from monitor.silences import SilenceError, parse_matcher

    try:
        parsed = [parse_matcher(m) for m in matchers]
        seconds = parse_duration(duration)
    except (SilenceError, ValueError) as exc:
        fail(str(exc), 2)
    if not reason.strip():
        fail("--reason: say why (it is the audit trail)", 2)
    ends_at = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(
        timespec="seconds")
    with state.store() as store:
        silence_id = store.add_silence(matchers=[str(m) for m in parsed], reason=reason.strip(),
                                       created_by=operator(), ends_at=ends_at)
        row = next(r for r in store.silences(include_ended=True) if r["id"] == silence_id)
    emit([_silence_row(row)], fmt, table_columns=SILENCE_COLUMNS)


SILENCE_COLUMNS = ("id", "matchers", "reason", "created_by", "starts_at", "ends_at", "state")


def _silence_row(row: SilenceRow) -> dict[str, Any]:
    from monitor.silences import silence_state

    state = silence_state(row["expired_at"], row["starts_at"], row["ends_at"], utcnow())
    return {"id": row["id"], "matchers": " ".join(json.loads(row["matchers"])),
            "reason": row["reason"], "created_by": row["created_by"],
            "starts_at": row["starts_at"], "ends_at": row["ends_at"],
            "expired_at": row["expired_at"], "state": state}


@silence_group.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Also silences that have ended.")
@format_option
@click.pass_obj
def silence_list(state: State, include_ended: bool, fmt: str) -> None:
    """Active silences (with --all, ended and expired ones too), newest first."""
    with state.store(write=False) as store:
        rows = [_silence_row(r) for r in store.silences(include_ended=include_ended)]
    emit(rows, fmt, table_columns=SILENCE_COLUMNS, empty="no active silences")


@silence_group.command("expire")
@click.argument("silence_id", type=int)
@click.pass_obj
def silence_expire(state: State, silence_id: int) -> None:
    """End a silence now; what it held back is emailed by the next flush. Exit 1 if it
    does not exist or has already ended."""
    with state.store() as store:
        if not store.expire_silence(silence_id):
            fail(f"no active silence {silence_id} (see `weightwatch silence list --all`)", 1)
    click.echo(f"silence {silence_id} expired; what it held back is due now")


@alerts.command("test")
@click.option("--channel", "channel", metavar="NAME",
              help="Send a test message to this chat channel ([[alerts.channels]]) instead "
                   "of a test email.")
@click.pass_obj
def alerts_test(state: State, channel: str | None) -> None:
    """Send a test email with the configured SMTP settings (or, with --channel, a test
    message to a chat channel). Exit 1 if it fails."""
    from monitor.alerts import DeliveryError, send_test

    if channel is not None:
        from monitor.alerting.notifiers import send_chat_test

        chats = {chat.name: chat for chat in state.config.alerts.chats}
        if channel not in chats:
            known = ", ".join(chats) or "none configured"
            fail(f"--channel {channel}: no such channel in [[alerts.channels]] ({known})", 2)
        try:
            send_chat_test(state.config.alerts, chats[channel], clock=system_clock)
        except DeliveryError as exc:
            fail(str(exc), 1)
        click.echo(f"test message sent to channel {channel}")
        return
    if state.config.smtp is None:
        fail(f"{state.config.path or '<defaults>'}: no [smtp] section; nothing to test", 2)
    try:
        message_id = send_test(state.config)
    except DeliveryError as exc:
        fail(str(exc), 1)
    click.echo(f"test email sent to {', '.join(state.config.alerts.to)} ({message_id})")


COMMANDS = (alerts, silence_group)
