"""The counts `weightwatch health` and the daemon's metrics read from the database at the
moment they are asked: runs, documents, hits by severity, the delivery queues. Read at
scrape time rather than counted in the process, they are right after a restart and count
what `crawl` and other processes wrote too."""

from __future__ import annotations

from typing import TypedDict, cast

from monitor.health import QueueTrouble
from monitor.store.connection import Database
from monitor.store.outbox import QUEUES


class RunCount(TypedDict):
    target: str
    status: str
    count: int


class QueueCount(TypedDict):
    queue: str
    channel: str
    status: str
    count: int


class Figures:
    def __init__(self, db: Database):
        self.db = db

    def run_counts(self) -> list[RunCount]:
        return cast(list[RunCount], list(self.db.query(
            "SELECT target, status, COUNT(*) AS count FROM crawl_runs "
            "GROUP BY target, status ORDER BY target, status")))

    def document_counts(self) -> dict[str, int]:
        return {row["target"]: row["count"] for row in self.db.query(
            "SELECT target, COUNT(*) AS count FROM documents GROUP BY target")}

    def hit_counts(self) -> dict[tuple[str, str], int]:
        """Hits by (severity, triage status)."""
        return {(row["severity"], row["status"]): row["count"] for row in self.db.query(
            "SELECT severity, status, COUNT(*) AS count FROM hits GROUP BY severity, status")}

    def queue_counts(self) -> list[QueueCount]:
        """Messages per queue, channel and status (a notice's channel is email)."""
        return cast(list[QueueCount], list(self.db.query(
            "SELECT 'outbox' AS queue, channel, status, COUNT(*) AS count FROM outbox "
            "GROUP BY channel, status UNION ALL "
            "SELECT 'notices', 'email', status, COUNT(*) FROM notices GROUP BY status "
            "ORDER BY 1, 2, 3")))

    def queue_trouble(self) -> list[QueueTrouble]:
        """Each queue's undelivered messages, for `monitor.health.verdict` to judge."""
        found = []
        for queue in QUEUES:  # a fixed list of table names, never input
            row = self.db.execute(
                "SELECT "
                "  COUNT(*) FILTER (WHERE status IN ('pending', 'sending')), "
                "  COUNT(*) FILTER (WHERE status IN ('pending', 'sending') AND attempts > 0), "
                "  MIN(created_at) FILTER (WHERE status IN ('pending', 'sending') "
                "                          AND attempts > 0), "
                "  COUNT(*) FILTER (WHERE status = 'failed'), "
                "  MAX(last_attempt_at) FILTER (WHERE status = 'failed') "
                f"FROM {queue}").fetchone()
            error = self.db.execute(
                f"SELECT last_error FROM {queue} WHERE last_error IS NOT NULL "
                "AND status IN ('pending', 'sending', 'failed') "
                "ORDER BY last_attempt_at DESC LIMIT 1").fetchone()
            found.append(QueueTrouble(
                queue=queue, pending=row[0], retrying=row[1], retrying_since=row[2],
                failed=row[3], failed_last_at=row[4], last_error=error[0] if error else None))
        return found
