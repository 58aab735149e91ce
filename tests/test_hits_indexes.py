"""Every index of the hits table earns its bytes: some statement the code runs uses it.

Indexes were more than half of each hit's bytes (issue 16), and one nothing reads costs a
write on every insert. The real code paths (the crawl's insert and re-visit, rematch's
lookup, `hits` with each filter and sort, `search`, `incidents`, `hits show`) run on a small
real database with their SQL traced, and the EXPLAIN QUERY PLAN of each statement must
name every index of hits. benchmarks/hits_queries.py shows the same plans on a million
hits, with their times.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from monitor.incidents import incident_of, incidents
from monitor.models import DEFAULT_GROUP_BY, Document, Hit
from monitor.search import search
from monitor.store import HIT_SORTS, Store

INDEX = re.compile(r"USING (?:COVERING )?INDEX (\w+)")


def _doc(n: int) -> Document:
    return Document(target=("forum", "tracker")[n % 2], key=f"t#{n}",
                    url=f"https://f.example/t/{n}", text=f"post {n} about heron weights",
                    snapshot=f"<p>post {n}</p>".encode())


def _hit(n: int) -> Hit:
    return Hit(kind=("mention", "hash", "torrent")[n % 3],
               severity=("low", "critical", "high")[n % 3], indicator=f"heron-{n % 4}",
               detector="rules", context=f"heron weights {n}", model=("heron", "egret")[n % 2],
               recipient="lab-17" if n % 5 == 0 else None)


def _plans(conn: sqlite3.Connection, statements: list[str]) -> set[str]:
    used: set[str] = set()
    for sql in statements:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
                used.update(INDEX.findall(row[-1]))
    return used


def test_every_hits_index_is_used_by_a_statement_the_code_runs(tmp_path: Path) -> None:
    with Store(tmp_path / "w.db") as store:
        for n in range(40):
            store.save_document(_doc(n), [_hit(n)], run_id=None, channels=())
        conn = store.db.conn
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        # The crawl: a new hit on a known page, then the page seen again unchanged.
        store.save_document(_doc(1), [_hit(1), _hit(41)], run_id=None, channels=())
        store.touch_document("tracker", "t#1")
        store.hit_ids_by_document([1, 2, 3])
        for sort in HIT_SORTS:
            page = store.hits(sort=sort, limit=5)
            store.hits(sort=sort, after=Store.parse_cursor(Store.hit_cursor(page[-1], sort),
                                                           sort), limit=5)
        store.hits(severity=["critical"], since="2000-01-01", limit=5)
        store.hits(model="heron", status=["new"], limit=5)
        store.hits(model="egret", sort="newest", since="2000-01-01", limit=5)
        store.hits(kind=["torrent"], target="forum", limit=5)
        store.hits(recipient="lab-17", limit=5)
        store.hits(text="heron", limit=5)
        search(store, "heron")
        incidents(store, DEFAULT_GROUP_BY, since="2000-01-01")
        incidents(store, DEFAULT_GROUP_BY, since="2000-01-01", model="heron")
        shown = store.hit(1)
        assert shown is not None
        incident_of(store, shown, DEFAULT_GROUP_BY, shown=5)
        conn.set_trace_callback(None)
        indexes = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'hits'")}
        used = _plans(conn, statements)
    assert indexes, "the hits table has indexes"
    assert indexes - used == set(), f"no statement uses {sorted(indexes - used)}"
