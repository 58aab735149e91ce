"""Incidents: hits grouped as the alerter groups them, for analysts.

An incident is one leak as the security team hears of it: the hits that share the
`alerts.group_by` labels (by default the model and release), wherever they were found.
Listing them is how an analyst sees twenty mirrors as one thing to triage, and `hits show`
uses the same labels to list a hit's siblings.

The store groups the whole table in SQL (`Store.incident_rows`, a million hits in a few
seconds); `group_incidents` groups rows already in memory (a report's period) by
`monitor.grouping.incident_key`, the alerter's own key. Both read the labels from
`monitor.grouping`, so both give the same summaries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.grouping import hit_label, incident_key, labels_key
from monitor.models import OPEN_STATUSES, ReleasedHit, Severity, severity_of_level, severity_rank


@dataclass
class Incident:
    """The hits of one incident, in memory, and what an analyst reads first about them."""

    key: str
    labels: dict[str, str]
    hits: list[ReleasedHit] = field(default_factory=list)
    last_emailed: str | None = None

    @property
    def severity(self) -> Severity:
        return min((h["severity"] for h in self.hits), key=severity_rank)

    def summary(self) -> dict[str, Any]:
        """The JSON contract of `weightwatch incidents` (keys only ever grow)."""
        statuses: dict[str, int] = {}
        for h in self.hits:
            statuses[h["status"]] = statuses.get(h["status"], 0) + 1
        return {
            "key": self.key,
            "labels": self.labels,
            "severity": self.severity,
            "hits": len(self.hits),
            "open": sum(statuses.get(s, 0) for s in OPEN_STATUSES),
            "statuses": statuses,
            "kinds": sorted({h["kind"] for h in self.hits}),
            "locations": len({h["url"] for h in self.hits}),
            "recipients": sorted({h["recipient"] for h in self.hits if h["recipient"]}),
            "first_seen": min(h["first_seen"] for h in self.hits),
            "last_seen": max(h["last_seen"] for h in self.hits),
            "last_emailed": self.last_emailed,
            "hit_ids": sorted(h["id"] for h in self.hits),
        }


def group_incidents(rows: Iterable[ReleasedHit], group_by: Sequence[str],
                    emailed: dict[str, str] | None = None) -> list[Incident]:
    """Hits in memory (with their `release`) grouped into incidents, worst and most
    recent first."""
    incidents: dict[str, Incident] = {}
    for row in rows:
        key = incident_key(row, group_by)
        if key not in incidents:
            labels = {label: hit_label(row, label) for label in group_by}
            incidents[key] = Incident(key, labels, last_emailed=(emailed or {}).get(key))
        incidents[key].hits.append(row)
    return _worst_and_newest_first(list(incidents.values()), lambda i: (
        i.severity, max(h["last_seen"] for h in i.hits), i.key))


def _worst_and_newest_first(items: list[Any], facts: Any) -> list[Any]:
    """Sorted by the (severity, last_seen, key) `facts` gives: worst, then most recently
    seen, then by key, so ties come out the same from SQL and from memory."""
    by_key = sorted(items, key=lambda i: facts(i)[2])
    newest_first = sorted(by_key, key=lambda i: facts(i)[1], reverse=True)
    return sorted(newest_first, key=lambda i: severity_rank(facts(i)[0]))


def incidents(store: Any, group_by: Sequence[str], *, since: str | None = None,
              include_closed: bool = False, model: str | None = None,
              labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The store's incidents as `Incident.summary()` dicts, worst and most recent first:
    by default those with a hit still open (new or acknowledged), counting only their
    open hits; `include_closed` counts every hit. `labels` narrows to one incident."""
    emailed = store.groups_sent()
    found = []
    for row in store.incident_rows(group_by, since=since, model=model, labels=labels,
                                   statuses=() if include_closed else OPEN_STATUSES):
        key = labels_key(row["labels"])
        found.append({
            "key": key,
            "labels": row["labels"],
            "severity": severity_of_level(row["severity_level"]),
            "hits": row["hits"],
            "open": row["open"],
            "statuses": row["statuses"],
            "kinds": row["kinds"],
            "locations": row["locations"],
            "recipients": row["recipients"],
            "first_seen": row["first_seen"],
            "last_seen": row["last_seen"],
            "last_emailed": emailed.get(key),
            "hit_ids": row["hit_ids"],
        })
    return _worst_and_newest_first(found, lambda i: (i["severity"], i["last_seen"], i["key"]))


def incident_of(store: Any, hit: Mapping[str, Any], group_by: Sequence[str], *,
                shown: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The incident `hit` (with its release, as `Store.hit` gives it) belongs to, counting
    hits of any status, and up to `shown` of its other hits, worst first."""
    labels = {label: hit_label(hit, label) for label in group_by}
    (summary,) = incidents(store, group_by, include_closed=True, labels=labels)
    others = [h for h in store.incident_hits(group_by, labels, limit=shown + 1)
              if h["id"] != hit["id"]][:shown]
    return summary, others


def incident_labels(store: Any, group_by: Sequence[str], key: str) -> dict[str, str] | None:
    """The `group_by` labels of the incident whose key (`labels_key`) is `key`, or None if
    no hit has them. The key is read back label by label ("model:heron-7b|release:v1"), a
    "|" inside a value kept, so the incident is found by an index, not by grouping every hit."""
    labels = dict.fromkeys(group_by, "")
    if key != labels_key(labels):
        starts = "|".join(re.escape(label) for label in group_by)
        for part in re.split(rf"\|(?=(?:{starts}):)", key):
            label, colon, value = part.partition(":")
            if not colon or label not in labels or labels[label]:
                return None
            labels[label] = value
    if labels_key(labels) != key or not store.incident_hits(group_by, labels, limit=1):
        return None
    return labels
