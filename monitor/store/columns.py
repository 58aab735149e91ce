"""The one list of a hit's columns: every query that selects hit rows (`HitRow`) selects
these, so a hit reads the same from `hits`, `hit`, incidents and the alert queue."""

from __future__ import annotations

HIT_FIELDS = ("id", "kind", "severity", "model", "artifact", "recipient", "indicator",
              "indicator_type", "rule", "detector", "matcher_version", "score", "target",
              "url", "first_seen", "last_seen", "seen_count", "status", "context",
              "document_id")
HIT_COLUMNS = ", ".join(HIT_FIELDS)


def hit_columns(alias: str) -> str:
    """HIT_COLUMNS of the hits table aliased `alias`, for queries that join it."""
    return ", ".join(f"{alias}.{field}" for field in HIT_FIELDS)
