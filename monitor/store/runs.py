"""Crawl runs, each target's state (cursor, counts and health) and the daemon's
heartbeat."""

from __future__ import annotations

import json
from typing import Any, cast

from monitor import health
from monitor.health import HeartbeatRow
from monitor.models import NoticeKind, TargetStateRow, utcnow
from monitor.store.connection import Database, StoreError, insert_row, marks


class Runs:
    def __init__(self, db: Database):
        self.db = db

    def start_run(self, target: str, *, now: str | None = None) -> int:
        with self.db.atomic():
            return insert_row(self.db, "crawl_runs", {"target": target, "started_at": now or utcnow()})

    def finish_run(self, run_id: int, *, status: str, documents_seen: int = 0,
                   documents_new: int = 0, documents_changed: int = 0, hits_new: int = 0,
                   error: str | None = None, down_after: int = 3,
                   now: str | None = None) -> NoticeKind | None:
        """Record a run's end and move the target's health (`monitor.health.after_run`);
        returns 'target_down' or 'target_recovered' when this run crossed that line (and
        a notice was queued)."""
        # Plain SQL: sqlite_utils' get, update, upsert and insert each read the table's
        # schema first, which cost more than the rest of a short run's bookkeeping.
        run = self.db.execute("SELECT target, started_at FROM crawl_runs WHERE id = ?",
                              [run_id]).fetchone()
        if run is None:
            raise StoreError(f"no crawl run {run_id}")
        target, started_at = run
        now = now or utcnow()
        with self.db.atomic():
            self.db.execute(
                "UPDATE crawl_runs SET finished_at = ?, status = ?, documents_seen = ?, "
                "documents_new = ?, documents_changed = ?, hits_new = ?, error = ? "
                "WHERE id = ?", [now, status, documents_seen, documents_new,
                                 documents_changed, hits_new, error, run_id])
            state = self.target_state(target)
            outcome = health.after_run(state, status, now=now, error=error,
                                       down_after=down_after)
            values = {"name": target, "last_run_at": started_at,
                      "documents_count": state.get("documents_count", 0) + documents_new,
                      "hits_count": state.get("hits_count", 0) + hits_new,
                      **outcome.changes}
            # Column names come from this code and monitor.health, never from input.
            self.db.execute(
                f"INSERT INTO target_state ({', '.join(values)}) "
                f"VALUES ({marks(len(values))}) ON CONFLICT(name) DO UPDATE SET "
                + ", ".join(f"{name} = excluded.{name}" for name in values if name != "name"),
                list(values.values()))
            if outcome.transition:
                insert_row(self.db, "notices", {
                    "kind": outcome.transition, "target": target, "created_at": now,
                    "failures": outcome.failures, "error": error, "next_attempt_at": now})
        return outcome.transition

    def close_abandoned_runs(self, *, now: str | None = None) -> int:
        """Runs left 'running' by a killed process are marked interrupted at start-up."""
        with self.db.atomic():
            cur = self.db.execute(
                "UPDATE crawl_runs SET status = 'interrupted', finished_at = ? "
                "WHERE status = 'running'", [now or utcnow()])
            return int(cur.rowcount)

    def target_state(self, name: str) -> TargetStateRow:
        rows = list(self.db.query("SELECT * FROM target_state WHERE name = ?", [name]))
        return cast(TargetStateRow, rows[0]) if rows else {}

    def all_target_states(self) -> dict[str, TargetStateRow]:
        return {row["name"]: cast(TargetStateRow, row)
                for row in self.db.query("SELECT * FROM target_state")}

    def cursor(self, target: str) -> dict[str, Any]:
        state = self.target_state(target)
        text = state.get("cursor")
        return cast(dict[str, Any], json.loads(text)) if text else {}

    def set_cursor(self, target: str, cursor: dict[str, Any]) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO target_state (name, cursor) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET cursor = excluded.cursor",
                [target, json.dumps(cursor, sort_keys=True)])

    def retry(self, target: str) -> str | None:
        """End the target's back-off so its next scheduled run goes ahead (a restart keeps
        the back-off; this is the operator's way past it). Its failures and down state
        stay until a run succeeds. Returns the back-off's end it cleared, if any."""
        with self.db.atomic():
            until = self.target_state(target).get("backoff_until")
            self.db.execute("UPDATE target_state SET backoff_until = NULL WHERE name = ?",
                            [target])
        return until

    # --- the daemon's heartbeat -------------------------------------------------------

    def beat(self, *, pid: int, host: str, started_at: str, interval_s: float,
             metrics_url: str | None = None, now: str | None = None) -> None:
        """Record that the daemon is alive at `now` (one row, replaced each beat)."""
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO daemon (id, pid, host, started_at, beat_at, interval_s, "
                "stopped_at, metrics_url) VALUES (1, ?, ?, ?, ?, ?, NULL, ?) "
                "ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, host = excluded.host, "
                "started_at = excluded.started_at, beat_at = excluded.beat_at, "
                "interval_s = excluded.interval_s, stopped_at = NULL, "
                "metrics_url = excluded.metrics_url",
                [pid, host, started_at, now or utcnow(), interval_s, metrics_url])

    def daemon_stopped(self, *, pid: int, now: str | None = None) -> None:
        """A clean shutdown, so `health` says "stopped" rather than "stale"; only the
        daemon that beat last may say so."""
        with self.db.atomic():
            self.db.execute("UPDATE daemon SET stopped_at = ? WHERE id = 1 AND pid = ?",
                            [now or utcnow(), pid])

    def heartbeat(self) -> HeartbeatRow | None:
        rows = list(self.db.query(
            "SELECT pid, host, started_at, beat_at, interval_s, stopped_at, metrics_url "
            "FROM daemon WHERE id = 1"))
        return cast(HeartbeatRow, rows[0]) if rows else None

