"""Hits and their queries: recording what detectors found (deduplicated, a false
positive never alerted again), listing and paging them, incidents summed in SQL, triage
and full-text search.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, cast

from monitor.grouping import HIT_RELEASE, LABELS, label_sql
from monitor.models import (
    HIT_STATUSES,
    OPEN_STATUSES,
    SEVERITIES,
    Document,
    Hit,
    HitRow,
    IncidentAggregate,
    ReleasedHit,
    TriageRow,
    severity_level,
    severity_rank,
    utcnow,
)
from monitor.store.columns import HIT_COLUMNS, hit_columns
from monitor.store.connection import Database, insert_row, marks, write_transaction
from monitor.store.outbox import Outbox

# Each `alerts.group_by` label of a hit in SQL, "" when it has none, generated from
# `monitor.grouping.LABELS`, the definition `hit_label` reads a row with.
LABEL_SQL = {label: label_sql(label) for label in LABELS}


# Each time column of hits and the integer (Unix seconds) generated from it that the
# indexes hold since migration 14: queries filter and order by the integer, so they seek.
TIME_COLUMNS = {"first_seen": "first_seen_unix", "last_seen": "last_seen_unix"}


def unix_seconds(moment: str) -> int:
    """`moment` (ISO 8601, UTC unless it names an offset) as the integer migration 14's
    columns hold for it; ValueError if it is not a time. Computed here and bound as a
    plain parameter: with the conversion in SQL on the right of a row value (a keyset
    cursor), SQLite seeks by the row value's first column only."""
    parsed = datetime.fromisoformat(moment)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # SQLite reads a time to the nearest millisecond, then strftime('%s') drops the
    # fraction: .9996 s is the next second, .9994 s this one.
    return math.floor(parsed.replace(microsecond=0).timestamp()) + (
        parsed.microsecond >= 999_500)


@dataclass(frozen=True)
class HitSort:
    """An order `Store.hits` lists hits in. Its key ends with the id, so the order is
    total, and runs all one way, so "after this row" is one row-value comparison that an
    index of migration 14 seeks to: a deep page costs what the first one does. `key`
    names the fields of a hit (what a cursor holds), `columns` what SQL orders by."""

    key: tuple[str, ...]
    descending: bool

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(TIME_COLUMNS.get(field, field) for field in self.key)

    def sql_values(self, values: Sequence[Any]) -> list[Any]:
        """Key values (`parse_cursor`'s) as `columns` compare them."""
        return [unix_seconds(value) if field in TIME_COLUMNS else value
                for field, value in zip(self.key, values, strict=True)]


# `hits --sort`; "severity" (worst, then newest) is the default and was the only order.
HIT_SORTS: dict[str, HitSort] = {
    "severity": HitSort(("severity_level", "first_seen", "id"), descending=True),
    "newest": HitSort(("first_seen", "id"), descending=True),
    "oldest": HitSort(("first_seen", "id"), descending=False),
    "score": HitSort(("score", "first_seen", "id"), descending=True),
    "last-seen": HitSort(("last_seen", "id"), descending=True),
}


def _words_query(text: str) -> str | None:
    """`hits --text` as an FTS5 query on the indicator, context and URL: the words of
    `text` as one phrase whose last word may be cut short (the start of a digest, as the
    table shows it, is found); None if `text` has no letters or digits to look up."""
    if not any(ch.isalnum() for ch in text):
        return None
    return '{indicator context url} : "' + text.replace('"', '""') + '"*'


def _cursor_value(column: str, text: str) -> Any:
    """One leading key value of a cursor; ValueError if it is not one `hit_cursor` wrote.
    A severity cursor holds the rank (0 critical) as before --sort existed; the key
    column holds the level (4 critical), so higher is worse in one descending key."""
    if column == "severity_level":
        if not (text.isdigit() and int(text) <= len(SEVERITIES)):
            raise ValueError(text)
        rank = int(text)
        return severity_level(SEVERITIES[rank]) if rank < len(SEVERITIES) else 0
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value



class Hits:
    def __init__(self, db: Database, outbox: Outbox):
        self.db = db
        self.outbox = outbox

    # --- recording ---------------------------------------------------------------------

    def record(self, hit: Hit, doc: Document, document_id: int, run_id: int | None,
               now: str, channels: Sequence[str], touch: bool = True) -> int | None:
        """Insert a new hit and queue its alert on each of `channels` (none: not alerted);
        an existing one (same dedup key) only has `last_seen` and `seen_count` moved, and
        not even that unless `touch`."""
        key = hit.dedup_key(doc.key)
        existing = self.db.execute("SELECT id FROM hits WHERE dedup_key = ?", [key]).fetchone()
        if existing:
            if not touch:
                return None
            self.db.execute(
                "UPDATE hits SET last_seen = ?, seen_count = seen_count + 1, document_id = ? "
                "WHERE id = ?", [now, document_id, existing[0]])
            return None
        # An analyst said this indicator at this URL is a false positive: record what is
        # found again, never alert it.
        dismissed = self.db.execute(
            "SELECT 1 FROM hits WHERE url = ? AND indicator = ? AND status = 'false_positive' "
            "LIMIT 1", [doc.url, hit.indicator]).fetchone() is not None
        row = {
            "status": "false_positive" if dismissed else "new",
            "dedup_key": key, "kind": hit.kind, "severity": hit.severity, "model": hit.model,
            "artifact": hit.artifact, "recipient": hit.recipient, "indicator": hit.indicator,
            "indicator_type": hit.indicator_type, "rule": hit.rule, "detector": hit.detector,
            "matcher_version": hit.matcher_version, "score": hit.score, "context": hit.context,
            "target": doc.target, "url": doc.url, "document_id": document_id, "run_id": run_id,
            "first_seen": now, "last_seen": now,
        }
        hit_id = insert_row(self.db, "hits", row)
        if not dismissed:
            self.outbox.fan_out(hit_id, channels, now=now)
        return hit_id

    def record_hits(self, document_id: int, doc: Document, hits: Iterable[Hit], *,
                    channels: Sequence[str], now: str | None = None) -> list[int]:
        """Record hits found later in an already stored document (a rematch), atomically
        with their outbox rows; returns the ids of the new ones.

        The document row is not rewritten, and hits already recorded (same dedup key) are
        left exactly as they are: nobody saw them again, the registry merely grew.
        """
        now = now or utcnow()
        with write_transaction(self.db):
            return [hit_id for hit in hits
                    if (hit_id := self.record(hit, doc, document_id, None, now, channels,
                                              touch=False))]

    # --- reading -----------------------------------------------------------------------

    def hits(self, *, since: str | None = None, until: str | None = None,
             severity: Iterable[str] = (), kind: Iterable[str] = (), model: str | None = None,
             status: Iterable[str] = (), target: str | None = None,
             recipient: str | None = None, text: str | None = None, sort: str = "severity",
             after: tuple[Any, ...] | None = None,
             limit: int | None = None) -> list[HitRow]:
        """Hits in `sort` order (`HIT_SORTS`; by default worst, then newest). `text`
        finds words of the indicator, context or URL through the full-text index, so it
        costs no scan of the hits (`_words_query`; text without letters or digits is
        matched as a plain substring); `after` is the keyset cursor (`parse_cursor` of
        the previous page's last `hit_cursor`), so deep pages cost what the first one does."""
        order = HIT_SORTS[sort]
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (("first_seen_unix >= ?", since), ("first_seen_unix < ?", until)):
            if value:
                where.append(clause)
                params.append(unix_seconds(value))
        # By level rather than by name, so the indexes that hold the default order serve.
        levels = [severity_level(s) for s in severity]
        filters: tuple[tuple[str, Iterable[Any]], ...] = (
            ("severity_level", levels), ("kind", kind), ("status", status))
        for column, given in filters:
            values = list(given)
            if values:
                where.append(f"{column} IN ({marks(len(values))})")
                params.extend(values)
        for column, value in (("model", model), ("target", target), ("recipient", recipient)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if text:
            words = _words_query(text)
            if words:
                # The unary + stops SQLite from fetching every match by id and sorting
                # them all (0.6 s for a word in 40% of a million hits): it walks the
                # order's index instead, testing ids against the matches, and stops at
                # the end of the page.
                where.append("+id IN (SELECT rowid FROM hits_fts WHERE hits_fts MATCH ?)")
                params.append(words)
            else:
                like = "%" + (text.replace("\\", "\\\\").replace("%", "\\%")
                              .replace("_", "\\_")) + "%"
                where.append("(indicator LIKE ? ESCAPE '\\' OR context LIKE ? ESCAPE '\\' "
                             "OR url LIKE ? ESCAPE '\\')")
                params += [like, like, like]
        if after is not None:
            where.append(f"({', '.join(order.columns)}) {'<' if order.descending else '>'} "
                         f"({marks(len(order.key))})")
            params.extend(order.sql_values(after))
        sql = f"SELECT {HIT_COLUMNS} FROM hits"
        if where:
            sql += " WHERE " + " AND ".join(where)
        direction = " DESC" if order.descending else ""
        sql += " ORDER BY " + ", ".join(column + direction for column in order.columns)
        if limit:
            sql += f" LIMIT {int(limit)}"
        return cast(list[HitRow], list(self.db.query(sql, params)))

    def hits_with_release(self, *, since: str | None = None, statuses: Iterable[str] = (),
                          model: str | None = None) -> list[ReleasedHit]:
        """Hits with their release (`HIT_RELEASE`), oldest first: what incidents are made
        of; `model` "" selects the hits of no model. The grouping is the caller's."""
        where, params = _incident_filter(since=since, statuses=statuses, model=model)
        return cast(list[ReleasedHit], list(self.db.query(
            f"SELECT {hit_columns('h')}, {HIT_RELEASE} AS release FROM hits h{where} "
            "ORDER BY h.id", params)))

    def incident_rows(self, group_by: Sequence[str], *, since: str | None = None,
                      statuses: Iterable[str] = (), model: str | None = None,
                      labels: dict[str, str] | None = None) -> list[IncidentAggregate]:
        """One row per incident (hits alike in every `group_by` label), aggregated in SQL
        so a million hits are summed without reading them into Python. The distinct
        kinds, recipients and hit ids come as JSON arrays, never a joined string: a
        recipient may well have a comma in its name. `labels` narrows to one incident."""
        where, params = _incident_filter(since=since, statuses=statuses, model=model,
                                         labels=labels)
        keys = [f"{LABEL_SQL[label]} AS label_{label}" for label in group_by]
        counts = [f"SUM(h.status = '{status}') AS n_{status}" for status in HIT_STATUSES]
        sql = (f"SELECT {', '.join([*keys, *counts])}, COUNT(*) AS hits, "
               f"SUM(h.status IN ({', '.join(map(repr, OPEN_STATUSES))})) AS open, "
               "COUNT(DISTINCT h.url) AS locations, "
               "json_group_array(DISTINCT h.kind) AS kinds, "
               "json_group_array(DISTINCT h.recipient) AS recipients, "
               "MIN(h.first_seen) AS first_seen, MAX(h.last_seen) AS last_seen, "
               "MAX(h.severity_level) AS severity_level, json_group_array(h.id) AS hit_ids "
               f"FROM hits h{where}")
        if group_by:
            sql += " GROUP BY " + ", ".join(f"label_{label}" for label in group_by)
        found: list[IncidentAggregate] = []
        for row in self.db.query(sql, params):
            if not row["hits"]:  # without GROUP BY an empty table still yields one row
                continue
            found.append({
                "labels": {label: row[f"label_{label}"] for label in group_by},
                "hits": row["hits"], "open": row["open"],
                "statuses": {s: row[f"n_{s}"] for s in HIT_STATUSES if row[f"n_{s}"]},
                "locations": row["locations"],
                "kinds": sorted(k for k in json.loads(row["kinds"]) if k),
                "recipients": sorted(r for r in json.loads(row["recipients"]) if r),
                "first_seen": row["first_seen"], "last_seen": row["last_seen"],
                "severity_level": int(row["severity_level"] or 0),
                "hit_ids": sorted(json.loads(row["hit_ids"]))})
        return found

    def incident_hits(self, group_by: Sequence[str], labels: dict[str, str], *,
                      limit: int) -> list[HitRow]:
        """The worst hits of one incident (the one whose `group_by` labels are `labels`)."""
        where, params = _incident_filter(labels={k: labels[k] for k in group_by})
        return cast(list[HitRow], list(self.db.query(
            f"SELECT {hit_columns('h')} FROM hits h{where} "
            f"ORDER BY h.severity_level DESC, h.id LIMIT {int(limit)}", params)))

    def hit_ids_by_document(self, document_ids: Sequence[int]) -> dict[int, list[int]]:
        """The ids of each document's hits, oldest first (documents without hits left out)."""
        found: dict[int, list[int]] = {}
        if document_ids:
            for document_id, hit_id in self.db.execute(
                    f"SELECT document_id, id FROM hits WHERE document_id IN "
                    f"({marks(len(document_ids))}) ORDER BY id", list(document_ids)):
                found.setdefault(document_id, []).append(hit_id)
        return found

    def hit(self, hit_id: int) -> ReleasedHit | None:
        """One hit, with its release (`HIT_RELEASE`)."""
        rows = list(self.db.query(f"SELECT {hit_columns('h')}, {HIT_RELEASE} AS release "
                                  "FROM hits h WHERE id = ?", [hit_id]))
        return cast(ReleasedHit, rows[0]) if rows else None

    # --- triage ------------------------------------------------------------------------

    def triage(self, hit_ids: Sequence[int], status: str, *, by: str,
               note: str | None = None, now: str | None = None) -> list[int]:
        """Set hits' status, keeping who, when and why; returns the ids that do not exist
        (and then changes nothing). Alerts not yet sent for resolved hits and false
        positives are dropped, and a false positive's indicator at its URL is never
        alerted again."""
        now = now or utcnow()
        with write_transaction(self.db):
            ids = json.dumps(sorted(set(hit_ids)))
            found = {row[0] for row in self.db.execute(
                "SELECT id FROM hits WHERE id IN (SELECT value FROM json_each(?))", [ids])}
            missing = [i for i in hit_ids if i not in found]
            if missing:
                return missing
            self._set_status(sorted(found), status, by=by, note=note, now=now)
        return []

    def triage_matching(self, status: str, *, by: str, note: str | None = None,
                        filters: HitFilter | None = None,
                        incident: tuple[Sequence[str], dict[str, str]] | None = None,
                        dry_run: bool = False, now: str | None = None) -> list[int]:
        """Set the status of every hit that `filters` (as `hits` takes them) and
        `incident` (its `group_by` and labels) select, in one transaction, and return
        their ids; with `dry_run` only return them. Only hits whose status would change
        are selected, and by default only open ones: a bulk acknowledgement must not
        reopen what someone resolved, nor a bulk resolve overrule a false positive."""
        filters = filters or {}
        statuses = [s for s in (filters.get("status") or OPEN_STATUSES) if s != status]
        wanted: dict[str, Any] = {k: v for k, v in filters.items() if k != "status"}
        if dry_run:
            return self._matching(statuses, wanted, incident)
        with write_transaction(self.db):
            ids = self._matching(statuses, wanted, incident)
            self._set_status(ids, status, by=by, note=note, now=now or utcnow())
        return ids

    def _matching(self, statuses: Sequence[str], filters: dict[str, Any],
                  incident: tuple[Sequence[str], dict[str, str]] | None) -> list[int]:
        if not statuses:
            return []
        if incident is None:
            return sorted(h["id"] for h in self.hits(**filters, status=statuses))
        group_by, labels = incident
        where, params = _incident_filter(statuses=statuses,
                                         labels={k: labels[k] for k in group_by})
        ids = [row[0] for row in self.db.execute(f"SELECT h.id FROM hits h{where}", params)]
        if any(filters.values()):  # an incident narrowed further (--severity, --target...)
            narrowed = {h["id"] for h in self.hits(**filters, status=statuses)}
            ids = [i for i in ids if i in narrowed]
        return sorted(ids)

    def _set_status(self, ids: Sequence[int], status: str, *, by: str, note: str | None,
                    now: str) -> None:
        """One statement per table whatever the number of hits (their ids as one JSON
        parameter, so SQLite's limit on parameters never applies); one triage row each."""
        chosen = json.dumps(list(ids))
        self.db.execute("UPDATE hits SET status = ? WHERE id IN "
                        "(SELECT value FROM json_each(?))", [status, chosen])
        self.db.execute("INSERT INTO triage (hit_id, status, note, \"by\", at) "
                        "SELECT value, ?, ?, ?, ? FROM json_each(?)",
                        [status, note, by, now, chosen])
        if status in ("resolved", "false_positive"):
            # Nothing left to tell anyone: a silence that ends sends only what is open.
            self.db.execute("DELETE FROM outbox WHERE status = 'pending' AND hit_id IN "
                            "(SELECT value FROM json_each(?))", [chosen])

    def names_found(self, column: Literal["target", "model"]) -> list[str]:
        """The distinct targets (or models) hits were recorded under, sorted: what a
        misspelt `--target` or `--model` is told it could have meant."""
        return [row[0] for row in self.db.execute(
            f"SELECT DISTINCT {column} FROM hits WHERE {column} IS NOT NULL ORDER BY 1")]

    def name_found(self, column: Literal["target", "model"], name: str) -> bool:
        """Whether a hit (or, for a target, a stored document) was recorded under `name`;
        one index seek, so checking every `--target` costs nothing."""
        tables = ("hits", "documents") if column == "target" else ("hits",)
        return any(self.db.execute(f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1",
                                   [name]).fetchone() for table in tables)

    def triage_history(self, hit_id: int) -> list[TriageRow]:
        return cast(list[TriageRow], list(self.db.query(
            "SELECT status, note, by, at FROM triage WHERE hit_id = ? ORDER BY id", [hit_id])))

    # --- full-text search --------------------------------------------------------------

    # What `search` reads of each table with a full-text index (migration 11), and the
    # time its `since` applies to: a document's last sighting (as `rematch --since`), a
    # hit's first (as `hits --since`).
    SEARCHED = {
        "documents": (("id", "target", "url", "title", "first_seen", "last_seen",
                       "fetched_at"), "last_seen"),
        "hits": (("id", "target", "url", "indicator", "severity", "kind", "model",
                  "first_seen", "last_seen", "document_id"), "first_seen"),
    }

    def search(self, table: str, match: str, *, marks: tuple[str, str, str], tokens: int,
               window: int, since: str | None = None, target: str | None = None,
               limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Rows of `table` ("documents" or "hits") that the FTS5 query `match` finds, best
        (lowest bm25 `rank`) first, each with a `snippet` of about `tokens` tokens from
        its best column, the matches between `marks[0]` and `marks[1]` and cuts shown
        as `marks[2]`; and whether the query matched more than `window` rows, of which
        only the newest `window` were ranked (then filtered by `target` and `since`), so
        that a query matching most rows costs no more than one matching `window` (see
        `monitor.search`). sqlite3.OperationalError if FTS5 cannot parse `match`."""
        columns, seen = self.SEARCHED[table]
        fts = f"{table}_fts"
        past = self.db.execute(f"SELECT rowid FROM {fts} WHERE {fts} MATCH ? "
                               f"ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                               [match, int(window)]).fetchone()
        where: list[str] = [f"{fts} MATCH ?"]
        params: list[Any] = [match]
        for clause, value in (("t.target = ?", target), (f"t.{seen} >= ?", since),
                              (f"{fts}.rowid > ?", past[0] if past else None)):
            if value:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT {', '.join('t.' + c for c in columns)}, {fts}.rank AS rank, "
               f"snippet({fts}, -1, ?, ?, ?, ?) AS snippet "
               f"FROM {fts} JOIN {table} t ON t.id = {fts}.rowid "
               f"WHERE {' AND '.join(where)} ORDER BY {fts}.rank LIMIT ?")
        return list(self.db.query(sql, [*marks, tokens, *params, int(limit)])), past is not None


def _incident_filter(*, since: str | None = None, statuses: Iterable[str] = (),
                     model: str | None = None, labels: dict[str, str] | None = None
                     ) -> tuple[str, list[Any]]:
    """The WHERE clause (with its parameters) that picks hits for incidents."""
    where: list[str] = []
    params: list[Any] = []
    if since:
        where.append("h.first_seen_unix >= ?")
        params.append(unix_seconds(since))
    wanted = list(statuses)
    if wanted:
        where.append(f"h.status IN ({marks(len(wanted))})")
        params += wanted
    if model is not None:
        where.append("h.model IS ?")
        params.append(model or None)
    for label, value in (labels or {}).items():
        if label == "model":  # as the column, so the model index serves it
            where.append("h.model IS ?")
            params.append(value or None)
        else:
            where.append(f"{LABEL_SQL[label]} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(where)) if where else "", params


class HitFilter(TypedDict, total=False):
    """What `hits` filters by, as `Hits.hits` takes it: bulk triage selects the same way."""

    since: str | None
    until: str | None
    severity: Sequence[str]
    kind: Sequence[str]
    model: str | None
    status: Sequence[str]
    target: str | None
    recipient: str | None
    text: str | None


def hit_cursor(row: HitRow, sort: str = "severity") -> str:
    """The keyset cursor after `row` in `sort` order, for `parse_cursor`. A severity
    cursor is rank:first_seen:id, as before --sort existed; the others start with
    their sort's name (newest:first_seen:id, score:score:first_seen:id), so a cursor
    is never read in an order it was not made for."""
    if sort == "severity":
        return f"{severity_rank(row['severity'])}:{row['first_seen']}:{row['id']}"
    fields: dict[str, Any] = dict(row)
    return ":".join([sort, *(repr(float(fields[column])) if column == "score"
                             else str(fields[column]) for column in HIT_SORTS[sort].key)])


def parse_cursor(cursor: str, sort: str = "severity") -> tuple[Any, ...]:
    """The key after which `hits(sort=sort, after=...)` goes on (`HIT_SORTS[sort].key`
    values); ValueError naming the problem unless `hit_cursor` made `cursor` for the
    same `sort`."""
    head, _, rest = cursor.partition(":")
    made_for = "severity" if head.isdigit() else head
    if made_for not in HIT_SORTS or head == "severity":
        raise ValueError(f"not a hits cursor: {cursor!r}")
    if made_for != sort:
        raise ValueError(f"that cursor pages --sort {made_for}, not --sort {sort}; use "
                         f"it with --sort {made_for}, or start again without --after")
    key = HIT_SORTS[sort].key
    rest = cursor if sort == "severity" else rest
    leading = []
    for _ in key[:-2]:
        value, _, rest = rest.partition(":")
        leading.append(value)
    moment, _, hit_id = rest.rpartition(":")
    try:
        if not (moment and hit_id.isdigit()):
            raise ValueError(cursor)
        values = [_cursor_value(column, value) for column, value in zip(key, leading)]
        unix_seconds(moment)  # what `HitSort.sql_values` will make of it: a time
    except ValueError:
        raise ValueError(f"not a hits cursor: {cursor!r}") from None
    return (*values, moment, int(hit_id))
