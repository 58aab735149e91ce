"""A crawled page's documents recorded together: one lookup of their stored hashes, one
transaction for the changed ones with their hits and outbox rows (issue 16).

Over the demo phpBB board (real HTTP on loopback, real SQLite files). A save is made to
fail by a temporary SQLite trigger on one document of a page: a real abort in the middle
of the page's transaction, where it would come from a full disk or a constraint."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from support import target

from monitor.config import AlertSettings, Config, CrawlSettings, Rule, Target
from monitor.crawler import RunResult, crawl_once, run_source
from monitor.detect import build_detection
from monitor.fetch import Fetcher
from monitor.models import Document, Hit
from monitor.queue import Queue
from monitor.sources.forum import ForumSource
from monitor.store import Detected, Store
from monitor.worker import QueueRecorder
from monitor.writer import Writer


def config(tmp_path, *targets: Target) -> Config:
    return Config(path=None, database_path=tmp_path / "w.db",
                  crawl=CrawlSettings(host_delay=0.001, run_timeout=30, request_timeout=5),
                  alerts=AlertSettings(), smtp=None, targets=list(targets),
                  rules=[Rule(name="heron", pattern=r"(?i)heron[-_ ]?7b", model="heron-7b")])


def forum(world) -> Target:
    return target("forum", f"{world.base_url}/forum/viewforum.php?f=2", name="forum",
                  preset="phpbb")


def forum_pages(cfg: Config) -> tuple[list[list[str]], list[str]]:
    """The keys of the board's pages as `pages()` groups them, and `documents()`' keys."""
    async def walk() -> tuple[list[list[str]], list[str]]:
        async with Fetcher(cfg.crawl) as fetcher:
            pages = [[d.key for d in page]
                     async for page in ForumSource(cfg.targets[0], fetcher, {}).pages()]
            docs = [d.key async for d in ForumSource(cfg.targets[0], fetcher, {}).documents()]
        return pages, docs
    return asyncio.run(walk())


def poison(store: Store, key: str) -> None:
    """Abort any insert of the document `key`: a temporary trigger, gone with the
    connection and never in the file."""
    quoted = key.replace("'", "''")
    store.db.execute(f"CREATE TEMP TRIGGER poison BEFORE INSERT ON main.documents "
                     f"WHEN NEW.key = '{quoted}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END")


def stored_keys(store: Store) -> set[str]:
    return {row[0] for row in store.db.execute("SELECT key FROM documents")}


def test_forum_pages_group_the_documents_by_response(tmp_path, demo_world):
    pages, docs = forum_pages(config(tmp_path, forum(demo_world)))
    assert [key for page in pages for key in page] == docs  # documents() is pages(), flat
    assert all(pages) and len(pages) < len(docs)
    assert max(map(len, pages)) > 1


def test_a_page_commits_whole_and_a_failed_save_keeps_every_earlier_page(tmp_path,
                                                                         demo_world):
    cfg = config(tmp_path, forum(demo_world))
    pages, docs = forum_pages(cfg)
    # The last page of several posts, failing at its second: the first is rolled back too.
    k = max(i for i, page in enumerate(pages) if len(page) > 1)
    earlier = {key for page in pages[:k] for key in page}
    with Store(cfg.database_path) as store:
        poison(store, pages[k][1])
        (failed,) = asyncio.run(crawl_once(cfg, store, cfg.targets))
        assert failed.status == "failed" and "poisoned" in (failed.error or "")
        assert stored_keys(store) == earlier
        assert failed.documents_new == len(earlier)
        assert store.cursor("forum") == {}, "the cursor waits for a whole run"
        hits = store.db.execute("SELECT COUNT(*) FROM hits").fetchone()[0]
        assert hits == failed.hits_new > 0
        # Each hit kept has its outbox rows: they were committed with its document.
        queued = store.db.execute("SELECT COUNT(DISTINCT hit_id) FROM outbox").fetchone()[0]
        assert queued == hits
        assert store.db.execute(
            "SELECT COUNT(*) FROM hits h LEFT JOIN documents d ON d.id = h.document_id "
            "WHERE d.key IS NULL").fetchone()[0] == 0

        store.db.execute("DROP TRIGGER temp.poison")
        (done,) = asyncio.run(crawl_once(cfg, store, cfg.targets))
        assert done.status == "ok"
        assert stored_keys(store) == set(docs)
        assert done.documents_seen == len(docs)
        assert done.documents_new == len(docs) - len(earlier) and done.documents_changed == 0
        # The earlier pages were unchanged: touched, not saved again, their hits not new.
        seen_twice = store.db.execute("SELECT COUNT(*) FROM documents WHERE run_id = ?",
                                      [failed.run_id]).fetchone()[0]
        assert seen_twice == len(earlier)
        assert store.db.execute("SELECT MIN(seen_count) FROM hits WHERE run_id = ?",
                                [failed.run_id]).fetchone()[0] == 2
        assert store.integrity_check() == "ok"


def doc(key: str, text: str, snapshot: bytes) -> Document:
    return Document(target="forum", key=key, url=f"https://board.example/t#{key}", text=text,
                    snapshot=snapshot, snapshot_url="https://board.example/t")


def hit(indicator: str) -> Hit:
    return Hit(kind="mention", severity="high", indicator=indicator, indicator_type="text",
               rule="heron", detector="rule", context=indicator)


def test_a_page_shares_its_snapshot_and_a_key_twice_in_a_batch_is_updated(tmp_path):
    page = b"<html><body>" + b"x" * 5000 + b"</body></html>"
    with Store(tmp_path / "w.db") as store:
        saved = store.save_documents([
            Detected(doc("p1", "heron-7b here", page), [hit("heron-7b")]),
            Detected(doc("p2", "second", page), []),
            Detected(doc("p1", "heron-7b here, edited", page), [hit("heron-7b")]),
        ], run_id=None)
        (first, new1), (second, _), (again, new3) = saved
        assert first.is_new and second.is_new and not again.is_new and again.changed
        assert again.id == first.id and len(new1) == 1 and new3 == []  # same dedup key
        assert store.db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 1
        assert store.db.execute("SELECT text FROM documents WHERE key = 'p1'").fetchone()[0] \
            == "heron-7b here, edited"
        assert store.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1


def test_a_rolled_back_page_takes_its_snapshot_and_the_next_save_stores_it_again(tmp_path):
    page = b"<html><body>" + b"y" * 5000 + b"</body></html>"
    with Store(tmp_path / "w.db") as store:
        poison(store, "p2")
        with pytest.raises(sqlite3.IntegrityError, match="poisoned"):
            store.save_documents([Detected(doc("p1", "one", page), [hit("heron-7b")]),
                                  Detected(doc("p2", "two", page), [])], run_id=None)
        for table in ("documents", "snapshots", "hits", "outbox"):
            assert store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
        store.db.execute("DROP TRIGGER temp.poison")
        # The same bytes object: its digest is remembered, its presence must not be.
        ((saved, new_hits),) = store.save_documents(
            [Detected(doc("p1", "one", page), [hit("heron-7b")])], run_id=None)
        sha = store.document(saved.id)["snapshot_sha256"]
        assert store.snapshot(sha) == page and len(new_hits) == 1
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_stored_hashes_are_read_in_one_batch_and_touched_together(tmp_path):
    with Store(tmp_path / "w.db") as store:
        found = [Detected(doc(f"p{n}", f"post {n}", b"<p>page</p>"),
                          [hit(f"heron-7b {n}")] if n == 1 else []) for n in range(3)]
        store.save_documents(found, run_id=None, now="2026-01-01T00:00:00+00:00")
        # More keys than one IN (...) list takes, the stored ones among them.
        keys = [f"q{n}" for n in range(1200)] + ["p2", "p0"]
        assert store.document_hashes("forum", keys) == {
            "p0": found[0].doc.content_sha256, "p2": found[2].doc.content_sha256}
        assert store.document_hashes("other", keys) == {}
        # Pages of 1 to 40 posts run seven statement shapes (IN lists of 1, 2, 4 ... 64),
        # not forty: the connection's cache of prepared statements holds 128.
        statements: set[str] = set()
        store.db.conn.set_trace_callback(statements.add)
        for size in range(1, 41):
            assert store.document_hashes("forum", ["p1", *keys[:size - 1]]) == {
                "p1": found[1].doc.content_sha256}
        store.db.conn.set_trace_callback(None)
        # (The trace shows the values bound: the shape is the IN list's length.)
        lengths = {sql.split(" IN (")[1].count(",") + 1 for sql in statements
                   if "FROM documents" in sql}
        assert lengths == {1, 2, 4, 8, 16, 32, 64}
        store.touch_documents("forum", ["p1", "p2", "nowhere"], now="2026-02-01T00:00:00+00:00")
        last_seen = dict(store.db.execute("SELECT key, last_seen FROM documents").fetchall())
        assert last_seen == {"p0": "2026-01-01T00:00:00+00:00",
                             "p1": "2026-02-01T00:00:00+00:00",
                             "p2": "2026-02-01T00:00:00+00:00"}
        assert store.db.execute("SELECT seen_count, last_seen FROM hits").fetchall() == [
            (2, "2026-02-01T00:00:00+00:00")]


def test_a_worker_sends_each_document_of_a_page_and_the_writer_stores_them(tmp_path,
                                                                           demo_world):
    """QueueRecorder over a SQLite queue (the worker's path without its consumer): one
    record per document, then one touch per unchanged document on the next run."""
    cfg = config(tmp_path, forum(demo_world))
    _, docs = forum_pages(cfg)
    queue = Queue(f"sqlite:///{tmp_path / 'queue.db'}", blocking=False)
    finished: list[tuple[int, str, str]] = []
    try:
        with Store(cfg.database_path) as store:
            Writer(store, cfg, queue, finished=lambda *done: finished.append(done))

            def crawl() -> tuple[RunResult, QueueRecorder]:
                run_id = store.start_run("forum")
                recorder = QueueRecorder(queue, run_id)
                result = RunResult(target="forum", run_id=run_id, status="running")

                async def go() -> None:
                    async with Fetcher(cfg.crawl) as fetcher:
                        await run_source(cfg.targets[0], cfg, recorder, fetcher,
                                         build_detection(cfg, store, fetcher), result, {},
                                         recorder.finished)
                asyncio.run(go())
                queue.drain_writes(10_000)
                return result, recorder

            first, recorder = crawl()
            assert first.status == "ok" and recorder.records == first.documents_new == len(docs)
            assert stored_keys(store) == set(docs)
            assert finished[-1][2] == "ok" and store.cursor("forum")
            hits = store.db.execute("SELECT COUNT(*) FROM hits").fetchone()[0]
            assert hits > 0

            second, recorder = crawl()
            assert second.status == "ok" and second.documents_new == 0
            assert recorder.records == len(docs)  # all touches
            assert finished[-1][2] == "ok"
            assert store.db.execute("SELECT MIN(seen_count) FROM hits").fetchone()[0] == 2
    finally:
        queue.close()


def test_a_page_save_waits_for_another_writer_instead_of_failing(tmp_path):
    """Another connection (a `triage` or `prune` run) holds the write lock when a page is
    saved: the save waits for it (BEGIN IMMEDIATE) rather than reading first and failing
    on its first write once the other has committed in between."""
    import threading

    db = tmp_path / "w.db"
    page = b"<p>page</p>"
    with Store(db) as store:
        store.save_documents([Detected(doc("p0", "zero", page), [])], run_id=None)
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE documents SET last_seen = 'then' WHERE key = 'p0'")
        released = threading.Timer(0.2, lambda: other.execute("COMMIT"))
        released.start()
        try:
            saved = store.save_documents([Detected(doc("p0", "zero, edited", page), []),
                                          Detected(doc("p1", "one", page), [])], run_id=None)
        finally:
            released.join()
            other.close()
        assert [s.is_new for s, _ in saved] == [False, True]
        assert stored_keys(store) == {"p0", "p1"}
