"""Grouping: which incident (alert group) a hit belongs to, by its `alerts.group_by` labels.

The alerter groups the rows it sends in Python, and analysts' incidents are grouped over
the whole table in SQL; both read a hit's labels from the one table `LABELS` below, the SQL
generated from it (`label_sql`), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.models import DEFAULT_GROUP_BY, GROUP_LABELS

if TYPE_CHECKING:
    from monitor.config import AlertSettings

# The release a hit is of: its artifact's, else the model's when the model has exactly
# one (a mention or a converted copy names no file, but with one release out there is no
# doubt which one leaked). In SQL only: a hit row read from the store carries it as
# `release`, and that is what `hit_label` reads.
HIT_RELEASE = (
    "COALESCE((SELECT a.release FROM artifacts a WHERE a.model = h.model "
    "AND a.name = h.artifact AND a.release IS NOT NULL ORDER BY a.id LIMIT 1), "
    "(SELECT MIN(a.release) FROM artifacts a WHERE a.model = h.model "
    "HAVING COUNT(DISTINCT a.release) = 1))")


@dataclass(frozen=True)
class Label:
    """A label is a hit's `column`, "" when it has none; with `types`, only when the
    hit's indicator_type starts with one of them (a torrent's infohash). A column that is
    never NULL (`nullable` False) is compared as it is, so its index serves a filter."""

    column: str
    types: tuple[str, ...] = ()
    nullable: bool = True


LABELS: dict[str, Label] = {
    "model": Label("model"),
    "release": Label("release"),
    "infohash": Label("indicator", types=("btih", "btmh")),
    "artifact": Label("artifact"),
    "recipient": Label("recipient"),
    "kind": Label("kind", nullable=False),
    "severity": Label("severity", nullable=False),
    "target": Label("target", nullable=False),
}
assert tuple(LABELS) == GROUP_LABELS, "every group_by label has one definition"

# Where a label's column comes from in SQL over `hits h`, where it is not a hits column.
_SQL_COLUMNS = {"release": HIT_RELEASE}


def hit_label(row: Mapping[str, object], label: str) -> str:
    """A hit's value for an `alerts.group_by` label ("" when it has none)."""
    spec = LABELS[label]
    if spec.types and not str(row.get("indicator_type") or "").startswith(spec.types):
        return ""
    return str(row.get(spec.column) or "")


def label_sql(label: str) -> str:
    """`hit_label` as an SQL expression over `hits h` (with `HIT_RELEASE` for release)."""
    spec = LABELS[label]
    value = _SQL_COLUMNS.get(spec.column, "h." + spec.column)
    if spec.nullable:
        value = f"COALESCE({value}, '')"
    if spec.types:
        width = {len(t) for t in spec.types}
        assert len(width) == 1, "one prefix length, so one substr() tests them all"
        listed = ", ".join(f"'{t}'" for t in spec.types)
        return (f"CASE WHEN substr(COALESCE(h.indicator_type, ''), 1, {width.pop()}) "
                f"IN ({listed}) THEN {value} ELSE '' END")
    return value


def group_key(row: Mapping[str, object], settings: AlertSettings | None = None) -> str:
    """The alert group (incident) a hit belongs to: `label:value` for each label of
    `alerts.group_by` the hit has a value for, joined by "|" (e.g.
    "model:heron-7b|release:v1"), or the digest for the severities `alerts.digest` names
    (all models together)."""
    if settings is not None and row.get("severity") in settings.digest:
        return "digest"
    return incident_key(row, settings.group_by if settings is not None else DEFAULT_GROUP_BY)


def incident_key(row: Mapping[str, object],
                 group_by: Sequence[str] = DEFAULT_GROUP_BY) -> str:
    """The incident a hit is part of, by the `group_by` labels alone (the digest, which
    gathers low hits of every incident into one email, is a delivery choice)."""
    return labels_key({label: hit_label(row, label) for label in group_by})


def labels_key(labels: Mapping[str, str]) -> str:
    """An incident's key from its label values, in `group_by` order ("" values left out),
    e.g. "model:heron-7b|release:v1"."""
    parts = [f"{label}:{value}" for label, value in labels.items() if value]
    # Hits with none of the labels (no model) are one group, like the others.
    return "|".join(parts) or "model:"
