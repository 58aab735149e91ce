"""Incidents: hits grouped as the alerter groups them, for analysts.

An incident is one leak as the security team hears of it: the hits that share the
`alerts.group_by` labels (by default the model and release), wherever they were found.
Listing them is how an analyst sees twenty mirrors as one thing to triage, and `hits show`
uses the same key to list a hit's siblings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from monitor.alerts import hit_label, incident_key
from monitor.models import severity_rank

OPEN_STATUSES = ("new", "acknowledged")


@dataclass
class Incident:
    """The hits of one incident and what an analyst reads first about them."""

    key: str
    labels: dict[str, str]
    hits: list[dict[str, Any]] = field(default_factory=list)
    last_emailed: str | None = None

    @property
    def severity(self) -> str:
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
            "hit_ids": [h["id"] for h in self.hits],
        }


def group_incidents(rows: Iterable[dict[str, Any]], group_by: Sequence[str],
                    emailed: dict[str, str] | None = None) -> list[Incident]:
    """Hits (with their `release`) grouped into incidents, worst and most recent first."""
    incidents: dict[str, Incident] = {}
    for row in rows:
        key = incident_key(row, group_by)
        if key not in incidents:
            labels = {label: hit_label(row, label) for label in group_by}
            incidents[key] = Incident(key, labels, last_emailed=(emailed or {}).get(key))
        incidents[key].hits.append(row)
    newest_first = sorted(incidents.values(), reverse=True,
                          key=lambda i: max(h["last_seen"] for h in i.hits))
    return sorted(newest_first, key=lambda i: severity_rank(i.severity))


def incidents(store: Any, group_by: Sequence[str], *, since: str | None = None,
              include_closed: bool = False, model: str | None = None) -> list[Incident]:
    """The incidents in the store: by default those with a hit still open (new or
    acknowledged), counting only their open hits; `include_closed` counts every hit."""
    rows = store.hits_with_release(since=since, model=model,
                                   statuses=() if include_closed else OPEN_STATUSES)
    return group_incidents(rows, group_by, store.groups_sent())


def incident_of(store: Any, hit: dict[str, Any], group_by: Sequence[str]) -> Incident:
    """The incident `hit` belongs to, with every hit of it (any status). Incidents never
    span models unless `group_by` leaves the model out, so only the hit's model is read."""
    rows = store.hits_with_release(model=hit.get("model") or "" if "model" in group_by
                                   else None)
    key = next(incident_key(r, group_by) for r in rows if r["id"] == hit["id"])
    (incident,) = group_incidents([r for r in rows if incident_key(r, group_by) == key],
                                  group_by, store.groups_sent())
    return incident
