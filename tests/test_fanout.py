"""The fan-out of a new hit to one outbox row per channel: the channels are an argument,
so a store opened by the daemon, a test or a library caller alerts where the config says,
not only where the CLI set an attribute after opening it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support import target

from demo.world import DemoWorld
from monitor.config import AlertSettings, Config, CrawlSettings, Rule, WebhookSettings
from monitor.crawler import crawl_once
from monitor.models import Document, Hit
from monitor.store import Store


def page(key: str) -> Document:
    return Document(target="forum", key=key, url=f"https://board.example/{key}", text="t")


def found(indicator: str) -> Hit:
    return Hit(kind="hash", severity="critical", indicator=indicator, detector="digest",
               context="c", model="heron-7b")


def test_each_new_hit_is_queued_once_per_channel_given(tmp_path: Path) -> None:
    with Store(tmp_path / "w.db") as store:
        _, (both,) = store.save_document(page("a"), [found("ab" * 32)], run_id=None,
                                         channels=("email", "webhook"))
        _, (default,) = store.save_document(page("b"), [found("cd" * 32)], run_id=None)
        _, (quiet,) = store.save_document(page("c"), [found("ef" * 32)], run_id=None,
                                          alert=False, channels=("email", "webhook"))
        saved, _ = store.save_document(page("d"), [], run_id=None)
        (later,) = store.record_hits(saved.id, page("d"), [found("01" * 32)],
                                     channels=("webhook",))
        queued = sorted((r["hit_id"], r["channel"]) for r in store.outbox())
    assert queued == sorted([(both, "email"), (both, "webhook"), (default, "email"),
                             (later, "webhook")])
    assert quiet not in {hit_id for hit_id, _ in queued}


@pytest.fixture(scope="module")
def world(demo_release):
    with DemoWorld(demo_release) as w:
        yield w


def test_a_crawl_outside_the_cli_queues_the_webhook_too(tmp_path: Path, world) -> None:
    """The daemon opens its own store: the crawler passes the config's channels."""
    forum = target("forum", f"{world.base_url}/forum/viewforum.php?f=2", name="forum",
                   preset="phpbb")
    alerts = AlertSettings(webhook=WebhookSettings(url="http://127.0.0.1:9/hook"))
    cfg = Config(path=None, database_path=tmp_path / "w.db",
                 crawl=CrawlSettings(host_delay=0.001, request_timeout=5), alerts=alerts,
                 smtp=None, targets=[forum],
                 rules=[Rule(name="heron", pattern=r"(?i)heron[-_ ]?7b", model="heron-7b")])
    with Store(cfg.database_path) as store:
        (result,) = asyncio.run(crawl_once(cfg, store, cfg.targets))
        assert result.status == "ok" and result.hits_new > 0
        channels: dict[int, set[str]] = {}
        for row in store.outbox():
            channels.setdefault(row["hit_id"], set()).add(row["channel"])
    assert len(channels) == result.hits_new
    assert all(queued == {"email", "webhook"} for queued in channels.values())
