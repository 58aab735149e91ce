"""Crawl runs and each target's state: cursor, counts and health."""

from __future__ import annotations

import json
from typing import Any, cast

import sqlite_utils

from monitor import health
from monitor.models import NoticeKind, TargetStateRow, utcnow
from monitor.store.connection import insert


class Runs:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    def start_run(self, target: str, *, now: str | None = None) -> int:
        with self.db.atomic():
            return insert(self.db, "crawl_runs",
                          {"target": target, "started_at": now or utcnow()})

    def finish_run(self, run_id: int, *, status: str, documents_seen: int = 0,
                   documents_new: int = 0, documents_changed: int = 0, hits_new: int = 0,
                   error: str | None = None, down_after: int = 3,
                   now: str | None = None) -> NoticeKind | None:
        """Record a run's end and move the target's health (`monitor.health.after_run`);
        returns 'target_down' or 'target_recovered' when this run crossed that line (and
        a notice was queued)."""
        run = self.db.table("crawl_runs").get(run_id)
        now = now or utcnow()
        with self.db.atomic():
            self.db.table("crawl_runs").update(run_id, {
                "finished_at": now, "status": status, "documents_seen": documents_seen,
                "documents_new": documents_new, "documents_changed": documents_changed,
                "hits_new": hits_new, "error": error})
            state = self.target_state(run["target"])
            outcome = health.after_run(state, status, now=now, error=error,
                                       down_after=down_after)
            self.db.table("target_state").upsert({
                "name": run["target"], "last_run_at": run["started_at"],
                "documents_count": state.get("documents_count", 0) + documents_new,
                "hits_count": state.get("hits_count", 0) + hits_new,
                **outcome.changes}, pk="name")
            if outcome.transition:
                self.db.table("notices").insert({
                    "kind": outcome.transition, "target": run["target"], "created_at": now,
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
