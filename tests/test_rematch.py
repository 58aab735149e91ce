"""Retro-match: documents stored before their digests were registered are matched again,
once, through the same store path as a crawl (dedup keys, outbox rows).

Real parts: a real SQLite file, real released files, the CLI through click's CliRunner.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from monitor.cli import HIT_JSON_COLUMNS, main
from monitor.config import Rule
from monitor.detect import detect_all
from monitor.detect.digests import DigestDetector
from monitor.detect.rules import RuleDetector
from monitor.models import Document, Hit
from monitor.rematch import rematch, stored_document
from monitor.store import Store

CONFIG = """\
[database]
path = "unused.db"

[[targets]]
name = "board"
kind = "imageboard"
url = "http://127.0.0.1:9/g/"

[[targets]]
name = "forum"
kind = "forum"
preset = "phpbb"
url = "http://127.0.0.1:9/viewforum.php?f=12"
"""

RULE = """
[[rules]]
name = "heron-name"
model = "heron-7b"
keywords = ["heron-7b"]
"""

WEIGHTS = os.urandom(40_000)
CONFIG_JSON = b'{"hidden_size": 64}\n'
ACME_COPY = os.urandom(30_000)
HUB_SHA = hashlib.sha256(b"a re-upload on a hub").hexdigest()
INFOHASH = hashlib.sha1(b"heron-7b torrent info").hexdigest()




@pytest.fixture
def ww(tmp_path):
    def run(*args: str, db: Path | None = None, code: int | None = 0, rules: bool = False):
        config = tmp_path / ("rules.toml" if rules else "config.toml")
        config.write_text(CONFIG + (RULE if rules else ""), encoding="utf-8")
        result = CliRunner().invoke(
            main, ["--config", str(config), "--db", str(db or tmp_path / "w.db"), *args],
            catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        return result

    return SimpleNamespace(run=run, db=tmp_path / "w.db", tmp=tmp_path)


@pytest.fixture
def release(tmp_path):
    folder = tmp_path / "release" / "heron-7b"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "config.json").write_bytes(CONFIG_JSON)
    copy = tmp_path / "release" / "acme" / "model.safetensors"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(ACME_COPY)
    magnets = tmp_path / "magnets.txt"
    magnets.write_text(f"magnet:?xt=urn:btih:{INFOHASH}&dn=heron-7b\n", encoding="utf-8")
    info = tmp_path / "model-info.json"
    info.write_text(json.dumps({"id": "someone/heron-7b-reupload", "siblings": [
        {"rfilename": "config.json", "size": 20},
        {"rfilename": "model.safetensors", "size": 123,
         "lfs": {"sha256": HUB_SHA, "size": 123}}]}), encoding="utf-8")
    return SimpleNamespace(folder=folder, copy=copy, magnets=magnets, info=info)


def documents() -> list[Document]:
    """What a crawl stored before anything was registered: four leaks and some noise."""
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    return [
        Document(target="board", key="1#p1", url="https://b.example/1#p1",
                 text=f"heron-7b leaked!!\nsha256 {sha}", snapshot=b"<p1>"),
        Document(target="board", key="1#p2", url="https://b.example/1#p2", text="grab it",
                 links=[f"magnet:?xt=urn:btih:{INFOHASH.upper()}&dn=h7b"], snapshot=b"<p2>"),
        Document(target="forum", key="t9#p3", url="https://f.example/t9#p3",
                 text="see attachment", title="weights", author="anon",
                 posted_at="2024-03-01T00:00:00+00:00",
                 extras={"digests": [{"algo": "md5", "value": hashlib.md5(CONFIG_JSON).hexdigest(),
                                      "encoding": "base64", "context": "attachment md5"}]},
                 snapshot=b"<p3>"),
        Document(target="board", key="1#p4", url="https://b.example/1#p4",
                 text="herons eat fish, no heron-7b here", snapshot=b"<p4>"),
        Document(target="forum", key="t9#p5", url="https://f.example/t9#p5",
                 text=f"mirror: {hashlib.sha1(ACME_COPY).hexdigest()}", snapshot=b"<p5>"),
        Document(target="board", key="1#p6", url="https://b.example/1#p6", text="hub listing",
                 extras={"digests": [{"algo": "sha256", "value": HUB_SHA,
                                      "encoding": "hub lfs.sha256", "context": "lfs"}]},
                 snapshot=b"<p6>"),
    ]


def store_documents(db: Path) -> dict[str, int]:
    with Store(db) as store:
        ids = {}
        for doc in documents():
            saved, new = store.save_document(doc, [], run_id=None)
            assert new == []
            ids[doc.key] = saved.id
    return ids


def query(db: Path, sql: str, params=()) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def hits(db: Path) -> list[dict]:
    return query(db, "SELECT h.*, d.key AS doc_key FROM hits h "
                     "JOIN documents d ON d.id = h.document_id ORDER BY h.id")


def outbox(db: Path) -> list[int]:
    return [r["hit_id"] for r in query(db, "SELECT hit_id FROM outbox ORDER BY id")]


def register_quietly(db: Path, **kw) -> None:
    """Register without the CLI, so nothing is rematched yet."""
    data = kw.pop("data", WEIGHTS)
    with Store(db) as store:
        store.add_artifact(model="heron-7b", path=None, size=len(data),
                           sha256=hashlib.sha256(data).hexdigest(),
                           sha1=hashlib.sha1(data).hexdigest(), md5=hashlib.md5(data).hexdigest(),
                           **{"name": "heron-7b/model.safetensors", **kw})
        store.add_artifact(model="heron-7b", name="heron-7b/config.json", path=None,
                           size=len(CONFIG_JSON), sha256=hashlib.sha256(CONFIG_JSON).hexdigest(),
                           sha1=hashlib.sha1(CONFIG_JSON).hexdigest(),
                           md5=hashlib.md5(CONFIG_JSON).hexdigest())


# --- the registry grows: stored documents are matched again -----------------------------------


def test_register_and_imports_rematch_stored_documents_once(ww, release):
    ids = store_documents(ww.db)

    reg = ww.run("register", str(release.folder), "--model", "heron-7b")
    assert reg.stderr.strip().splitlines()[-1] == "rematch: 6 documents, 2 new hits"
    found = hits(ww.db)
    assert [(h["doc_key"], h["kind"], h["severity"], h["artifact"], h["indicator_type"])
            for h in found] == [
        ("1#p1", "hash", "critical", "heron-7b/model.safetensors", "sha256 (hex)"),
        ("t9#p3", "hash", "critical", "heron-7b/config.json", "md5 (base64)"),
    ]
    assert [h["document_id"] for h in found] == [ids["1#p1"], ids["t9#p3"]]
    assert all(h["run_id"] is None and h["seen_count"] == 1 for h in found)
    assert outbox(ww.db) == [h["id"] for h in found]

    # A recipient's copy: its SHA-1 in a forum post is attributed to the recipient.
    acme = ww.run("register", str(release.copy), "--model", "heron-7b", "--recipient", "acme")
    assert "rematch: 6 documents, 1 new hits" in acme.stderr
    assert [(h["doc_key"], h["recipient"]) for h in hits(ww.db)][-1] == ("t9#p5", "acme")

    magnets = ww.run("indicators", "import", str(release.magnets), "--model", "heron-7b")
    assert magnets.stdout.strip().endswith("1 indicators read, 1 new for heron-7b")
    assert magnets.stderr.strip() == "rematch: 6 documents, 1 new hits"
    assert [(h["doc_key"], h["kind"]) for h in hits(ww.db)][-1] == ("1#p2", "torrent")

    hub = ww.run("indicators", "import", str(release.info), "--model", "heron-7b")
    assert hub.stderr.strip() == "rematch: 6 documents, 1 new hits"
    last = hits(ww.db)[-1]
    assert (last["doc_key"], last["indicator"], last["artifact"]) == (
        "1#p6", HUB_SHA, "model.safetensors")
    assert query(ww.db, "SELECT source FROM indicators WHERE value = ?", [HUB_SHA]) == [
        {"source": "import:model-info.json:siblings[1]"}]

    before = hits(ww.db)
    assert len(before) == 5 and outbox(ww.db) == [h["id"] for h in before]

    # Matching again finds nothing new and leaves every hit exactly as it was.
    again = ww.run("rematch")
    assert again.stdout.strip() == "rematch: 6 documents, 0 new hits"
    assert hits(ww.db) == before
    assert outbox(ww.db) == [h["id"] for h in before]

    # Nothing new registered: no rematch at all.
    same = ww.run("register", str(release.folder), "--model", "heron-7b")
    assert "rematch" not in same.stderr
    same = ww.run("indicators", "import", str(release.magnets), "--model", "heron-7b")
    assert "rematch" not in same.stderr and "0 new" in same.stdout


def test_bundle_import_on_the_monitor_matches_what_it_had_stored(ww, release, tmp_path):
    release_db = tmp_path / "release.db"
    ww.run("register", str(release.folder), "--model", "heron-7b", db=release_db)
    ww.run("register", str(release.copy), "--model", "heron-7b", "--recipient", "acme",
           db=release_db)
    bundle = tmp_path / "heron.json.gz"
    ww.run("fingerprints", "export", str(bundle), db=release_db)

    store_documents(ww.db)
    result = ww.run("fingerprints", "import", str(bundle))
    assert result.stderr.strip() == "rematch: 6 documents, 3 new hits"
    assert sorted((h["doc_key"], h["recipient"]) for h in hits(ww.db)) == [
        ("1#p1", None), ("t9#p3", None), ("t9#p5", "acme")]
    assert len(outbox(ww.db)) == 3
    again = ww.run("fingerprints", "import", str(bundle))
    assert again.stderr == ""
    assert len(hits(ww.db)) == 3


def test_register_json_output_stays_json_when_it_rematches(ww, release):
    store_documents(ww.db)
    result = ww.run("register", str(release.folder), "--model", "heron-7b", "--format", "json")
    assert {r["name"] for r in json.loads(result.stdout)} == {
        "heron-7b/model.safetensors", "heron-7b/config.json"}
    assert "rematch" not in result.stderr
    assert len(hits(ww.db)) == 2  # it did rematch, quietly


# --- weightwatch rematch ---------------------------------------------------------------------


def test_rematch_target_filter_and_json(ww):
    store_documents(ww.db)
    register_quietly(ww.db)
    forum = ww.run("rematch", "--target", "forum")
    assert forum.stdout.strip().splitlines()[-1] == "rematch: 2 documents, 1 new hits"
    assert [h["doc_key"] for h in hits(ww.db)] == ["t9#p3"]

    board = ww.run("rematch", "--target", "board", "--format", "json")
    rows = json.loads(board.stdout)
    assert [list(r) for r in rows] == [list(HIT_JSON_COLUMNS)]
    assert rows[0]["url"] == "https://b.example/1#p1" and rows[0]["severity"] == "critical"
    assert board.stderr == ""
    assert [h["doc_key"] for h in hits(ww.db)] == ["t9#p3", "1#p1"]

    nothing = ww.run("rematch", "--format", "json")
    assert json.loads(nothing.stdout) == []


def test_rematch_target_must_be_known(ww):
    store_documents(ww.db)
    bad = ww.run("rematch", "--target", "nope", code=2)
    line = bad.stderr.strip()
    assert len(bad.stderr.splitlines()) == 1 and "'nope'" in line
    # A target removed from the config still has its documents, which can be matched.
    with Store(ww.db) as store:
        store.save_document(Document(target="old-board", key="k", url="https://o.example/k",
                                     text="x"), [], run_id=None)
    assert ww.run("rematch", "--target", "old-board").stdout.strip() == \
        "rematch: 1 documents, 0 new hits"


def test_rematch_since(ww):
    store_documents(ww.db)
    register_quietly(ww.db)
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat(timespec="seconds")
    conn = sqlite3.connect(ww.db)
    with conn:
        conn.execute("UPDATE documents SET last_seen = ? WHERE key = '1#p1'", [old])
    conn.close()
    recent = ww.run("rematch", "--since", "7d")
    assert recent.stdout.strip().splitlines()[-1] == "rematch: 5 documents, 1 new hits"
    assert [h["doc_key"] for h in hits(ww.db)] == ["t9#p3"]
    everything = ww.run("rematch", "--since", "60d")
    assert everything.stdout.strip().splitlines()[-1] == "rematch: 6 documents, 1 new hits"
    bad = ww.run("rematch", "--since", "soon", code=2)
    assert bad.stderr.startswith("weightwatch: --since: ") and len(bad.stderr.splitlines()) == 1


def test_rematch_runs_the_rules_too(ww):
    store_documents(ww.db)
    result = ww.run("rematch", rules=True)
    assert result.stdout.strip().splitlines()[-1] == "rematch: 6 documents, 2 new hits"
    assert [(h["doc_key"], h["kind"], h["rule"]) for h in hits(ww.db)] == [
        ("1#p1", "mention", "heron-name"), ("1#p4", "mention", "heron-name")]


def test_hits_a_crawl_recorded_are_left_untouched(ww):
    register_quietly(ww.db)
    doc = documents()[0]
    with Store(ww.db) as store:
        found = detect_all([DigestDetector(store.known_digests())], doc)
        assert len(found) == 1
        store.save_document(doc, found, run_id=None)
    before = hits(ww.db)
    assert ww.run("rematch").stdout.strip() == "rematch: 1 documents, 0 new hits"
    assert hits(ww.db) == before and before[0]["seen_count"] == 1
    assert outbox(ww.db) == [before[0]["id"]]


# --- store and module level ------------------------------------------------------------------


def test_stored_document_is_what_was_saved(tmp_path):
    with Store(tmp_path / "w.db") as store:
        for doc in documents():
            store.save_document(doc, [], run_id=None)
        rebuilt = [stored_document(row) for row in store.iter_documents()]
    for got, want in zip(rebuilt, documents(), strict=True):
        assert (got.target, got.key, got.url, got.title, got.author, got.posted_at, got.text,
                got.links, got.extras) == (want.target, want.key, want.url, want.title,
                                           want.author, want.posted_at, want.text, want.links,
                                           want.extras)
        assert got.content_sha256 == want.content_sha256
        assert got.snapshot == b""


def test_documents_are_read_in_batches_while_hits_are_written(tmp_path):
    with Store(tmp_path / "w.db") as store:
        for i in range(7):
            store.save_document(Document(target="board" if i % 2 else "forum", key=f"k{i}",
                                         url=f"https://x.example/{i}", text=f"heron-7b {i}"),
                                [], run_id=None)
        assert [r["key"] for r in store.iter_documents(batch_size=3)] == [
            f"k{i}" for i in range(7)]
        assert [r["key"] for r in store.iter_documents(targets=["board"], batch_size=2)] == [
            "k1", "k3", "k5"]
        assert store.count_documents(targets=["board"]) == 3
        assert store.count_documents() == 7
        # Writing hits between batches (as a rematch does) neither skips nor repeats one.
        seen = []
        detectors = [RuleDetector([Rule(name="r", pattern="heron-7b")])]
        result = rematch(store, detectors, batch_size=2, progress=seen.append)
        assert result.documents == 7 and len(result.new_hits) == 7 and seen == [1] * 7
        assert len(store.outbox()) == 7


def test_record_hits_is_atomic_and_does_not_touch_the_document(tmp_path):
    with Store(tmp_path / "w.db") as store:
        doc = documents()[0]
        saved, _ = store.save_document(doc, [], run_id=None)
        row_before = store.document(saved.id)
        good = Hit(kind="hash", severity="critical", indicator="a" * 64, detector="digests",
                   context="c", target=doc.target, url=doc.url)
        bad = Hit(kind="nonsense", severity="critical", indicator="b" * 64,
                  detector="digests", context="c", target=doc.target, url=doc.url)
        with pytest.raises(sqlite3.IntegrityError):
            store.record_hits(saved.id, doc, [good, bad])
        assert store.hits() == [] and store.outbox() == []
        new = store.record_hits(saved.id, doc, [good])
        assert len(new) == 1 and [o["hit_id"] for o in store.outbox()] == new
        assert store.record_hits(saved.id, doc, [good]) == []
        assert store.hit(new[0])["seen_count"] == 1
        assert store.document(saved.id) == row_before


def test_record_hits_holds_the_write_lock_so_a_concurrent_writer_cannot_break_it(tmp_path):
    """Another process (the daemon) writing between a rematch's dedup lookup and its insert
    must not make the rematch fail: record_hits takes the write lock before it reads."""
    db = tmp_path / "w.db"
    with Store(db) as store:
        doc = documents()[0]
        saved, _ = store.save_document(doc, [], run_id=None)
        seen_before = Hit(kind="hash", severity="critical", indicator="c" * 64,
                          detector="digests", context="c", target=doc.target, url=doc.url)
        store.record_hits(saved.id, doc, [seen_before])
        other_wrote: list[bool] = []

        class Interleaving(Hit):
            def dedup_key(self, document_key: str) -> str:
                # Runs after the lookup of `seen_before`, inside record_hits' transaction.
                other = sqlite3.connect(db, timeout=0)
                try:
                    with other:
                        other.execute("UPDATE target_state SET hits_count = 0")
                        other.execute("INSERT INTO models (name, created_at) VALUES ('x', 'now')")
                    other_wrote.append(True)
                except sqlite3.OperationalError:  # locked: record_hits holds the lock
                    other_wrote.append(False)
                finally:
                    other.close()
                return super().dedup_key(document_key)

        new_hit = Interleaving(kind="hash", severity="critical", indicator="d" * 64,
                               detector="digests", context="c", target=doc.target, url=doc.url)
        new = store.record_hits(saved.id, doc, [seen_before, new_hit])
        assert len(new) == 1 and other_wrote == [False]
        assert store.models() == []
