"""Migration 14: hits' indexes hold times as Unix seconds, not ISO text (issue 16).

A database made at schema 13 with real rows is upgraded in place; every hit keeps every
stored field, every `hits --sort` lists and pages them in the order schema 13's text
columns gave, `--since`/`--until` pick the same hits, and the full-text index still
finds them. The integer a query is given (`unix_seconds`) is the one SQLite generates.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from monitor.incidents import incidents
from monitor.migrations import MIGRATIONS
from monitor.models import DEFAULT_GROUP_BY, Document, Hit
from monitor.store import HIT_FIELDS, HIT_SORTS, Store, _statements
from monitor.store.hits import unix_seconds

SCHEMA_13_HIT_COLUMNS = (
    "id", "dedup_key", "kind", "severity", "model", "artifact", "recipient", "indicator",
    "indicator_type", "rule", "detector", "matcher_version", "score", "context", "target",
    "url", "document_id", "run_id", "first_seen", "last_seen", "seen_count", "status")
# Each sort's order as schema 13 wrote it: on the text columns.
SCHEMA_13_ORDERS = {"severity": "severity_level DESC, first_seen DESC, id DESC",
                    "newest": "first_seen DESC, id DESC", "oldest": "first_seen, id",
                    "score": "score DESC, first_seen DESC, id DESC",
                    "last-seen": "last_seen DESC, id DESC"}


def _schema_13(path: Path, n_hits: int) -> None:
    """A database as weightwatch at schema 13 left it, with `n_hits` hits on 20 documents;
    few distinct seconds and scores, so every order has ties to break by id."""
    rng = random.Random(13)
    conn = sqlite3.connect(path)
    for number, sql in enumerate(MIGRATIONS[:13], start=1):
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    seconds = [f"2026-{month:02d}-{day:02d}T{hour:02d}:00:{s:02d}+00:00"
               for month, day, hour, s in ((3, 1, 9, 0), (3, 1, 9, 1), (6, 15, 23, 59),
                                           (11, 30, 0, 0), (12, 1, 12, 30))]
    for d in range(1, 21):
        conn.execute("INSERT INTO documents (id, target, key, url, text, content_sha256, "
                     "fetched_at, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [d, f"t{d % 3}", f"k{d}", f"https://f.example/t/{d}",
                      f"post {d} heron weights", "0" * 64, seconds[0], seconds[0], seconds[0]])
    severities = (("critical", "hash"), ("high", "torrent"), ("medium", "mention"),
                  ("low", "mention"))
    for i in range(1, n_hits + 1):
        severity, kind = rng.choice(severities)
        first, last = sorted(rng.choices(seconds, k=2))
        document = rng.randint(1, 20)
        conn.execute(
            f"INSERT INTO hits ({', '.join(SCHEMA_13_HIT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(SCHEMA_13_HIT_COLUMNS))})",
            [i, f"key{i}", kind, severity, rng.choice(("heron-7b", "egret-3b", None)),
             f"heron-7b/model-{i % 3}.safetensors" if kind == "hash" else None,
             rng.choice(("lab-17", None, None)), f"indicator-{i % 7}", kind, None, "rules",
             f"rule:r:{i % 2}", rng.choice((1.0, 0.5, 0.75)), f"heron weights seen {i}",
             f"t{document % 3}", f"https://f.example/t/{document}", document, None,
             first, last, rng.randint(1, 4),
             rng.choice(("new", "new", "acknowledged", "false_positive"))])
    conn.commit()
    conn.close()


def _stored(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT {', '.join(SCHEMA_13_HIT_COLUMNS)} FROM hits ORDER BY id"
                        ).fetchall()


def _all_pages(store: Store, sort: str, **filters: str) -> list[int]:
    """Every hit's id, `sort`ed, read 7 at a time through the keyset cursor."""
    ids: list[int] = []
    after = None
    while page := store.hits(sort=sort, after=after, limit=7, **filters):
        ids += [row["id"] for row in page]
        after = Store.parse_cursor(Store.hit_cursor(page[-1], sort), sort)
    return ids


def test_a_schema_13_database_is_upgraded_in_place_with_every_hit_and_order(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _schema_13(path, 120)
    conn = sqlite3.connect(path)
    before = _stored(conn)
    orders = {sort: [r[0] for r in conn.execute(f"SELECT id FROM hits ORDER BY {order}")]
              for sort, order in SCHEMA_13_ORDERS.items()}
    cut = "2026-06-15T23:00:00+00:00"
    since = {r[0] for r in conn.execute("SELECT id FROM hits WHERE first_seen >= ?", [cut])}
    until = {r[0] for r in conn.execute("SELECT id FROM hits WHERE first_seen < ?", [cut])}
    found = sorted(r[0] for r in conn.execute(
        "SELECT rowid FROM hits_fts WHERE hits_fts MATCH 'seen'"))
    conn.close()
    assert 0 < len(since) < 120 and len(set(before)) == 120

    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        conn = store.db.conn
        assert _stored(conn) == before, "every stored field of every hit is kept"
        assert sorted(HIT_SORTS) == sorted(orders)
        for sort, expected in orders.items():
            assert _all_pages(store, sort) == expected, sort
        assert {r["id"] for r in store.hits(since=cut)} == since
        assert {r["id"] for r in store.hits(until=cut)} == until
        # The time filter and the model filter seek the integer indexes together.
        egret = [i for i in orders["newest"] if before[i - 1][4] == "egret-3b"
                 and before[i - 1][18] >= cut]
        assert _all_pages(store, "newest", model="egret-3b", since=cut) == egret
        assert sum(i["hits"] for i in incidents(store, DEFAULT_GROUP_BY, since=cut,
                                                include_closed=True)) == len(since)
        assert sorted(r[0] for r in conn.execute(
            "SELECT rowid FROM hits_fts WHERE hits_fts MATCH 'seen'")) == found
        conn.execute("INSERT INTO hits_fts(hits_fts) VALUES ('integrity-check')")
        assert store.integrity_check() == "ok"
        for index in ("hits_first_seen", "hits_worst", "hits_score", "hits_model",
                      "hits_model_worst", "hits_target_worst", "hits_recipient_worst"):
            columns = [r[2] for r in conn.execute(f"PRAGMA index_info({index})")]
            assert "first_seen_unix" in columns and "first_seen" not in columns, index
        # The crawl goes on writing text; its new hit is the newest.
        _, (new,) = store.save_document(
            Document(target="t1", key="k-new", url="https://f.example/new", text="heron",
                     snapshot=b"<p>heron</p>"),
            [Hit(kind="mention", severity="low", indicator="heron", detector="rules",
                 context="heron")], run_id=None)
        assert store.hits(sort="newest", limit=1)[0]["id"] == new
        assert store.hit(new)["first_seen"] == store.hit(new)["last_seen"]


def test_the_time_indexes_take_a_fraction_of_the_bytes(tmp_path: Path) -> None:
    """What migration 14 is for: the indexes that hold a time shrink by more than half."""
    path = tmp_path / "old.db"
    _schema_13(path, 3000)
    timed = ("hits_first_seen", "hits_last_seen", "hits_worst", "hits_score", "hits_model",
             "hits_model_worst", "hits_target_worst")

    def index_bytes(conn: sqlite3.Connection) -> int:
        return int(conn.execute(
            f"SELECT sum(payload) FROM dbstat WHERE name IN ({', '.join('?' * len(timed))})",
            timed).fetchone()[0])

    conn = sqlite3.connect(path)
    before = index_bytes(conn)
    conn.close()
    with Store(path) as store:
        after = index_bytes(store.db.conn)
    assert after < 0.55 * before, (before, after)


@pytest.mark.parametrize("moment", [
    "2026-12-07T18:38:25+00:00", "2026-12-07T20:38:25+02:00", "2026-12-07T18:38:25Z",
    "2026-12-07T18:38:25.999999+00:00", "2026-12-07T18:38:25.9994+00:00",
    "2026-12-07T18:38:25.5+00:00", "2026-12-07T18:38:25", "2026-12-07",
    "1999-12-31T23:59:59-05:00"])
def test_a_time_given_to_a_query_is_the_integer_sqlite_generates(tmp_path: Path,
                                                                 moment: str) -> None:
    with Store(tmp_path / "w.db") as store:
        store.db.execute(
            "INSERT INTO hits (dedup_key, kind, severity, indicator, detector, target, url, "
            "first_seen, last_seen) VALUES ('k', 'mention', 'low', 'i', 'd', 't', 'u', ?, ?)",
            [moment, moment])
        stored = store.db.execute("SELECT first_seen_unix, last_seen_unix FROM hits"
                                  ).fetchone()
    assert stored == (unix_seconds(moment), unix_seconds(moment))


def test_a_cursor_whose_time_is_not_a_time_is_refused() -> None:
    assert Store.parse_cursor("newest:2026-12-07T18:38:25+00:00:5", "newest")[-1] == 5
    with pytest.raises(ValueError, match="not a hits cursor"):
        Store.parse_cursor("newest:yesterday:5", "newest")
    with pytest.raises(ValueError, match="not a hits cursor"):
        Store.parse_cursor("0:2026-13-45T00:00:00+00:00:5", "severity")


def test_hit_columns_leave_the_generated_integers_out() -> None:
    """Commands and exports read the text times; the integers are only the indexes' keys."""
    assert "first_seen" in HIT_FIELDS and "first_seen_unix" not in HIT_FIELDS
    assert "last_seen_unix" not in HIT_FIELDS
