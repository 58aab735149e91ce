"""The delivery queues: the outbox (one row per hit and channel) and target health
notices, with their retries, silences and alert groups."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from monitor.grouping import HIT_RELEASE
from monitor.health import later
from monitor.models import AlertRow, DueNotice, NoticeRow, OutboxRow, SilenceRow, utcnow
from monitor.store.columns import hit_columns
from monitor.store.connection import Database, insert, insert_row, marks, write_transaction

QUEUES = ("outbox", "notices")

# The channels a hit is alerted on when the caller names none: email alone, as
# `AlertSettings.channels` is without a webhook.
DEFAULT_CHANNELS: tuple[str, ...] = ("email",)


def _queue(table: str) -> str:
    """The name of a delivery queue table; never interpolate anything else into SQL."""
    if table not in QUEUES:
        raise ValueError(f"not a delivery queue: {table!r}")
    return table


# An outbox row with its hit (`HIT_COLUMNS` and the dedup key its Message-ID is made
# from), the hit's release and its document's evidence: what an alert is composed from.
ALERT_ROWS = (
    "SELECT o.id AS outbox_id, o.attempts, o.created_at AS queued_at, "
    "o.status AS outbox_status, o.message_id AS outbox_message_id, "
    f"{hit_columns('h')}, h.dedup_key, "
    f"{HIT_RELEASE} AS release, d.snapshot_sha256, d.title AS doc_title, "
    "d.author AS doc_author, d.posted_at AS doc_posted_at "
    "FROM outbox o JOIN hits h ON h.id = o.hit_id "
    "LEFT JOIN documents d ON d.id = h.document_id")


class Outbox:
    def __init__(self, db: Database):
        self.db = db

    def fan_out(self, hit_id: int, channels: Sequence[str], *, now: str) -> None:
        """Queue a new hit's alert: one outbox row per channel it goes to."""
        for channel in channels:  # plain SQL: it runs in the crawl's save of each hit
            insert_row(self.db, "outbox", {"hit_id": hit_id, "channel": channel,
                                           "created_at": now, "next_attempt_at": now})

    def due_alerts(self, now: str | None = None, *, channel: str = "email") -> list[AlertRow]:
        """Pending alerts of a channel whose retry time has come, with their hits."""
        return cast(list[AlertRow], list(self.db.query(
            f"{ALERT_ROWS} WHERE o.status IN ('pending', 'sending') "
            "AND o.next_attempt_at <= ? AND o.channel = ? ORDER BY o.id",
            [now or utcnow(), channel])))

    def due_notices(self, now: str | None = None) -> list[DueNotice]:
        """Pending target health notices whose retry time has come, with the target's state."""
        return cast(list[DueNotice], list(self.db.query(
            "SELECT n.*, s.last_success_at, s.last_run_at, s.consecutive_failures "
            "FROM notices n LEFT JOIN target_state s ON s.name = n.target "
            "WHERE n.status IN ('pending', 'sending') AND n.next_attempt_at <= ? ORDER BY n.id",
            [now or utcnow()])))

    def mark_sending(self, ids: list[int], message_id: str, *, table: str = "outbox",
                     now: str | None = None) -> None:
        """Committed before the SMTP conversation, with the Message-ID a retry reuses, so a
        crash mid-send yields at worst a resend that mail systems recognise as the same.
        `table` is 'outbox' (hit alerts) or 'notices' (target health)."""
        table = _queue(table)
        with self.db.atomic():
            self.db.execute(
                f"UPDATE {table} SET status = 'sending', message_id = ?, last_attempt_at = ?, "
                f"attempts = attempts + 1 WHERE id IN ({marks(len(ids))})",
                [message_id, now or utcnow(), *ids])

    def mark_sent(self, ids: list[int], *, table: str = "outbox",
                  now: str | None = None) -> None:
        table = _queue(table)
        with self.db.atomic():
            self.db.execute(
                f"UPDATE {table} SET status = 'sent', sent_at = ?, last_error = NULL "
                f"WHERE id IN ({marks(len(ids))})", [now or utcnow(), *ids])

    def mark_retry(self, ids: list[int], error: str, *, max_attempts: int = 20,
                   table: str = "outbox", now: str | None = None) -> None:
        """Back off exponentially (1 min doubling, capped at 6 h); give up after many tries
        so a permanently rejected message is visible as failed rather than retried forever."""
        now = now or utcnow()
        with self.db.atomic():
            for oid in ids:
                attempts = self.db.execute(f"SELECT attempts FROM {_queue(table)} WHERE id = ?",
                                           [oid]).fetchone()[0]
                delay = min(60 * 2 ** max(attempts - 1, 0), 6 * 3600)
                status = "failed" if attempts >= max_attempts else "pending"
                self.db.execute(
                    f"UPDATE {_queue(table)} SET status = ?, last_error = ?, next_attempt_at = ? "
                    f"WHERE id = ?", [status, error, later(now, delay), oid])

    def retry_now(self, *, now: str | None = None) -> int:
        """Make every pending alert and notice due immediately (`alerts flush`)."""
        now = now or utcnow()
        count = 0
        with self.db.atomic():
            for table in QUEUES:
                count += self.db.execute(
                    f"UPDATE {table} SET next_attempt_at = ? WHERE status IN ('pending', 'sending')",
                    [now]).rowcount
        return count

    def notices(self, status: str | None = None) -> list[NoticeRow]:
        return cast(list[NoticeRow], self._queue_rows(
            "SELECT n.id, n.kind, n.target, n.created_at, n.failures, n.error, n.status, "
            "n.attempts, n.next_attempt_at, n.sent_at, n.last_error, n.message_id "
            "FROM notices n", "n", status))

    def outbox(self, status: str | None = None) -> list[OutboxRow]:
        return cast(list[OutboxRow], self._queue_rows(
            "SELECT o.id, o.hit_id, o.channel, o.status, o.attempts, o.created_at, "
            "o.next_attempt_at, "
            "o.sent_at, o.last_error, o.message_id, o.silenced_by, h.severity, h.kind, h.model, "
            "h.url "
            "FROM outbox o JOIN hits h ON h.id = o.hit_id", "o", status))

    def _queue_rows(self, select: str, alias: str, status: str | None) -> list[dict[str, Any]]:
        where, params = (f" WHERE {alias}.status = ?", [status]) if status else ("", [])
        return list(self.db.query(f"{select}{where} ORDER BY {alias}.id", params))

    # --- silences ------------------------------------------------------------------------

    def add_silence(self, *, matchers: Sequence[str], reason: str, created_by: str,
                    ends_at: str, starts_at: str | None = None, now: str | None = None) -> int:
        now = now or utcnow()
        return insert(self.db, "silences", {
            "matchers": json.dumps(list(matchers)), "reason": reason, "created_by": created_by,
            "created_at": now, "starts_at": starts_at or now, "ends_at": ends_at})

    def silences(self, *, include_ended: bool = False, now: str | None = None
                 ) -> list[SilenceRow]:
        """Silences, newest first: active and future ones, or all with `include_ended`."""
        sql = "SELECT * FROM silences"
        params: list[Any] = []
        if not include_ended:
            sql += " WHERE expired_at IS NULL AND ends_at > ?"
            params.append(now or utcnow())
        return cast(list[SilenceRow], list(self.db.query(sql + " ORDER BY id DESC", params)))

    def expire_silence(self, silence_id: int, *, now: str | None = None) -> bool:
        """End a silence now; what it held back becomes due at once. False if it had
        already ended or does not exist."""
        now = now or utcnow()
        with write_transaction(self.db):
            cur = self.db.execute("UPDATE silences SET expired_at = ? WHERE id = ? AND "
                                  "expired_at IS NULL AND ends_at > ?", [now, silence_id, now])
            if cur.rowcount != 1:
                return False
            self.db.execute("UPDATE outbox SET next_attempt_at = ? WHERE silenced_by = ? AND "
                            "status = 'pending' AND next_attempt_at > ?",
                            [now, silence_id, now])
        return True

    def hold_alerts(self, ids: list[int], until: str, silence_id: int | None = None) -> None:
        """Defer alerts: to the end of the silence that holds them back, or to when their
        group may send (group_wait, group_interval)."""
        if not ids:
            return
        with write_transaction(self.db):
            if silence_id is None:
                self.db.execute(f"UPDATE outbox SET next_attempt_at = ? "
                                f"WHERE id IN ({marks(len(ids))})", [until, *ids])
            else:
                self.db.execute(f"UPDATE outbox SET next_attempt_at = ?, silenced_by = ? "
                                f"WHERE id IN ({marks(len(ids))})",
                                [until, silence_id, *ids])

    # --- alert groups --------------------------------------------------------------------

    def groups_sent(self) -> dict[str, str]:
        """When each alert group was last emailed (`alert_groups`), by key."""
        return dict(self.db.execute("SELECT key, last_sent_at FROM alert_groups").fetchall())

    def group_sent_at(self, key: str) -> str | None:
        row = self.db.execute("SELECT last_sent_at FROM alert_groups WHERE key = ?",
                              [key]).fetchone()
        return str(row[0]) if row else None

    def open_alerted_hits(self) -> list[AlertRow]:
        """Hits already emailed and still new (nobody acknowledged, resolved or dismissed
        them), as `due_alerts` rows, oldest first: what reminders repeat."""
        return cast(list[AlertRow], list(self.db.query(
            f"{ALERT_ROWS} WHERE o.channel = 'email' AND o.status = 'sent' "
            "AND h.status = 'new' ORDER BY h.id")))

    def mark_group_sent(self, key: str, when: str | None = None, *,
                        now: str | None = None) -> None:
        """Record that group `key` was sent at `when` (or `now`; None reads the clock)."""
        self.db.execute("INSERT INTO alert_groups (key, last_sent_at) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET last_sent_at = excluded.last_sent_at",
                        [key, when or now or utcnow()])
