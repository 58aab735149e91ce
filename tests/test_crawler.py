"""One crawl run in-process: timeouts, failures and what a run keeps."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from structlog.testing import capture_logs
from support import target

from demo.world import DemoWorld
from monitor.config import AlertSettings, Config, CrawlSettings, Rule, Target
from monitor.crawler import crawl_once
from monitor.store import Store


@pytest.fixture(scope="module")
def world(demo_release):
    # Its own world over the shared release: a test here slows the world down.
    with DemoWorld(demo_release) as w:
        yield w


def config(tmp_path, *targets: Target, run_timeout: float = 30) -> Config:
    return Config(path=None, database_path=tmp_path / "w.db",
                  crawl=CrawlSettings(host_delay=0.001, run_timeout=run_timeout, request_timeout=5),
                  alerts=AlertSettings(), smtp=None, targets=list(targets),
                  rules=[Rule(name="heron", pattern=r"(?i)heron[-_ ]?7b", model="heron-7b")])


def forum(world, **kw) -> Target:
    return target("forum", f"{world.base_url}/forum/viewforum.php?f=2", name="forum",
                  preset="phpbb", **kw)


@pytest.mark.slow
def test_run_timeout_keeps_what_was_recorded(tmp_path, world):
    # Six requests (robots.txt, the listing, four topics) of 1 s each: the run times out
    # after the first topic, with 1.5 s to spare for parsing and storing it even on a
    # loaded machine (0.4 s and 1.5 s left too little: the first topic's parse was cut).
    world.delay = 1.0
    try:
        cfg = config(tmp_path, forum(world), run_timeout=4.5)
        with Store(cfg.database_path) as store:
            (result,) = asyncio.run(crawl_once(cfg, store, cfg.targets))
            assert result.status == "failed" and "timeout" in result.error
            kept = store.db["documents"].count
            assert kept > 0 and kept == result.documents_new
            run = store.db["crawl_runs"].get(result.run_id)
            assert run["status"] == "failed" and run["finished_at"]
            assert store.cursor("forum") == {}, "cursor not advanced by an incomplete run"
    finally:
        world.delay = 0.0


def test_failing_target_is_recorded_and_does_not_stop_the_others(tmp_path, world):
    broken = target("imageboard", f"{world.base_url}/no-such-board/", name="broken")
    cfg = config(tmp_path, forum(world), broken)
    with Store(cfg.database_path) as store, \
            capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        results = {r.target: r for r in asyncio.run(crawl_once(cfg, store, cfg.targets))}
        assert results["forum"].status == "ok" and results["forum"].hits_new > 0
        assert results["broken"].status == "failed"
        assert results["broken"].error == f"HTTP 404 from {world.base_url}/no-such-board/threads.json"
        state = store.target_state("broken")
        assert state["consecutive_failures"] == 1 and state["last_error"] == results["broken"].error
        asyncio.run(crawl_once(cfg, store, [cfg.target("broken")]))
        assert store.target_state("broken")["consecutive_failures"] == 2
    finished = [e for e in logs if e["event"] == "crawl_finished"]
    assert {e["target"] for e in finished} == {"forum", "broken"}
    assert all(isinstance(e["run_id"], int) for e in finished)


def test_private_address_refused_without_opt_in(tmp_path, world):
    t = forum(world)
    t.allow_private = False
    cfg = config(tmp_path, t)
    with Store(cfg.database_path) as store:
        (result,) = asyncio.run(crawl_once(cfg, store, cfg.targets))
    assert result.status == "failed" and "private or reserved address" in result.error


def test_changed_document_is_matched_again(tmp_path, world):
    cfg = config(tmp_path, forum(world))
    with Store(cfg.database_path) as store:
        asyncio.run(crawl_once(cfg, store, cfg.targets))
        # Simulate an edit since the last crawl: the stored hash no longer matches.
        store.db.execute("UPDATE documents SET content_sha256 = 'old' WHERE id = 1")
        store.db.conn.commit()
        (result,) = asyncio.run(crawl_once(cfg, store, cfg.targets))
        assert result.documents_changed == 1 and result.documents_new == 0
