"""The SQLite store: schema, pragmas, atomic documents+hits+outbox, dedup, registry."""

from __future__ import annotations

import sqlite3

import pytest

from monitor.migrations import MIGRATIONS
from monitor.models import Document, Hit
from monitor.store import Store, StoreError


def doc(text: str = "a post", key: str = "t#p1", **kw) -> Document:
    return Document(target="forum", key=key, url=f"https://f.example/{key}", text=text,
                    snapshot=b"<html>" + text.encode() + b"</html>", **kw)


def hit(indicator: str = "abc", **kw) -> Hit:
    return Hit(kind=kw.pop("kind", "mention"), severity=kw.pop("severity", "low"),
               indicator=indicator, detector="rules", context="ctx", **kw)


def test_pragmas_and_migrations(tmp_path):
    path = tmp_path / "w.db"
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
        tables = set(store.db.table_names())
    assert {"target_state", "crawl_runs", "snapshots", "documents", "hits", "outbox", "models",
            "artifacts", "indicators"} <= tables
    # Reopening applies nothing twice.
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this weightwatch"):
        Store(path)


def test_document_hits_and_outbox_written_together_and_deduplicated(tmp_path):
    with Store(tmp_path / "w.db") as store:
        saved, new = store.save_document(doc(), [hit("heron-7b")], run_id=None)
        assert saved.is_new and len(new) == 1
        row = store.hit(new[0])
        assert row["status"] == "new" and row["first_seen"] == row["last_seen"]
        assert [o["hit_id"] for o in store.outbox()] == new
        # The same indicator in the same place again: no new hit, no new alert.
        saved2, new2 = store.save_document(doc(), [hit("heron-7b")], run_id=None)
        assert not saved2.is_new and not saved2.changed and new2 == []
        assert store.hit(new[0])["seen_count"] == 2
        assert len(store.outbox()) == 1
        # Elsewhere it is a new hit.
        _, new3 = store.save_document(doc(key="t#p2"), [hit("heron-7b")], run_id=None)
        assert len(new3) == 1 and len(store.outbox()) == 2


def test_snapshot_is_compressed_evidence(tmp_path):
    with Store(tmp_path / "w.db") as store:
        big = "leak " * 10_000
        saved, _ = store.save_document(doc(big), [], run_id=None)
        sha = store.document(saved.id)["snapshot_sha256"]
        stored = store.db.execute("SELECT size, length(body) FROM snapshots").fetchone()
        assert store.snapshot(sha) == doc(big).snapshot
        assert stored[0] == len(doc(big).snapshot) and stored[1] < stored[0] / 10


def test_failed_write_leaves_nothing(tmp_path):
    with Store(tmp_path / "w.db") as store:
        bad = hit("x", kind="nonsense")  # violates the CHECK constraint
        with pytest.raises(sqlite3.IntegrityError):
            store.save_document(doc(), [hit("ok"), bad], run_id=None)
        assert store.db["documents"].count == 0
        assert store.db["hits"].count == 0 and store.db["outbox"].count == 0


def test_runs_and_target_state(tmp_path):
    with Store(tmp_path / "w.db") as store:
        run = store.start_run("forum")
        store.finish_run(run, status="failed", error="HTTP 503")
        run = store.start_run("forum")
        store.finish_run(run, status="failed", error="HTTP 503")
        state = store.target_state("forum")
        assert state["consecutive_failures"] == 2 and state["last_error"] == "HTTP 503"
        run = store.start_run("forum")
        store.finish_run(run, status="ok", documents_new=3, hits_new=1)
        state = store.target_state("forum")
        assert state["consecutive_failures"] == 0 and state["last_error"] is None
        assert state["documents_count"] == 3 and state["hits_count"] == 1
        store.start_run("forum")  # left running by a killed process
        assert store.close_abandoned_runs() == 1
        store.set_cursor("forum", {"threads": {"1": 5}})
        assert store.cursor("forum") == {"threads": {"1": 5}}


def test_registry_indexes_digests_with_their_source(tmp_path):
    with Store(tmp_path / "w.db") as store:
        artifact, added = store.add_artifact(model="m", name="m/model.safetensors", path="/r/m",
                                             size=10, sha256="a" * 64, sha1="b" * 40, md5="c" * 32)
        assert added == [True, True, True]
        assert store.add_artifact(model="m", name="m/model.safetensors", path="/r/m", size=10,
                                  sha256="a" * 64, sha1="b" * 40, md5="c" * 32)[1] == [False] * 3
        assert store.add_indicator(algo="btih", value="D" * 40, model="m", source="import:x:1")
        known = store.known_digests()
        assert known["a" * 64][0].artifact == "m/model.safetensors"
        assert known["a" * 64][0].source == "register:/r/m"
        assert known["d" * 40][0].algo == "btih", "values are stored lowercase"


def test_outbox_retry_backoff(tmp_path):
    with Store(tmp_path / "w.db") as store:
        store.save_document(doc(), [hit()], run_id=None)
        (due,) = store.due_alerts()
        store.mark_sending([due["outbox_id"]], "<m@x>")
        store.mark_retry([due["outbox_id"]], "connection refused")
        assert store.due_alerts() == [], "backed off"
        row = store.outbox()[0]
        assert row["status"] == "pending" and row["attempts"] == 1
        assert row["last_error"] == "connection refused"
        store.retry_now()
        assert len(store.due_alerts()) == 1


def test_upgrade_keeps_registry_and_widens_digest_kinds(tmp_path):
    """A database made by an older weightwatch (schema 2) migrates with its data intact."""
    from monitor.store import _statements

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for number, sql in enumerate(MIGRATIONS[:2], start=1):
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO models VALUES ('m', '2026-01-01T00:00:00+00:00')")
    conn.execute("INSERT INTO indicators (algo, value, model, source, added_at) "
                 "VALUES ('sha256', ?, 'm', 'import:x:1', '2026-01-01T00:00:00+00:00')", ["a" * 64])
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert [k.source for k in store.known_digests()["a" * 64]] == ["import:x:1"]
        assert store.add_indicator(algo="pieces_root", value="b" * 64, model="m", source="t")
        artifact, added = store.add_artifact(
            model="m", name="f", path=None, size=1, sha256="c" * 64, sha1="d" * 40,
            md5="e" * 32, pieces_root="f" * 64, shards=["1" * 64, "2" * 64])
        assert added == [True] * 6
        assert store.artifacts("m")[0]["pieces_root"] == "f" * 64
        assert store.integrity_check() == "ok"


def test_one_severity_order_in_python_and_in_the_database(tmp_path) -> None:
    """severity_rank, severity_level and the hits.severity_level column of migration 11
    are one order: worst first by rank, highest level for the worst."""
    from monitor.models import SEVERITIES, severity_level, severity_of_level, severity_rank

    with Store(tmp_path / "w.db") as store:
        store.db.execute("INSERT INTO hits (dedup_key, kind, severity, indicator, detector, "
                         "context, target, url, first_seen, last_seen, status) "
                         "SELECT 'k' || s, 'hash', s, 'i', 'd', 'c', 't', 'u', 'x', 'x', 'new' "
                         "FROM (SELECT 'critical' AS s UNION SELECT 'high' UNION SELECT 'medium' "
                         "UNION SELECT 'low')")
        levels = dict(store.db.execute("SELECT severity, severity_level FROM hits").fetchall())
    assert levels == {s: severity_level(s) for s in SEVERITIES}
    assert severity_level("bogus") == 0
    assert sorted(SEVERITIES, key=severity_rank) == sorted(SEVERITIES, key=severity_level,
                                                           reverse=True)
    assert [severity_of_level(severity_level(s)) for s in SEVERITIES] == list(SEVERITIES)
    assert severity_of_level(0) == "unknown"
