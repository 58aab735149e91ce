"""Shared test helpers: targets for the demo world, collecting documents, crawling into a
store with the demo release registered, and checking hits against the world's ground truth."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from monitor.config import AlertSettings, Config, CrawlSettings, Rule, Target
from monitor.crawler import RunResult, crawl_once
from monitor.demo.release import Release
from monitor.demo.world import DemoWorld
from monitor.fetch import Fetcher
from monitor.models import Document
from monitor.registry import import_indicators, register_paths
from monitor.sources import ADAPTERS
from monitor.store import Store

# No retries: a test that serves an error wants the error now, not after real back-off.
FAST = CrawlSettings(host_delay=0.001, request_timeout=5, run_timeout=60, retries=0)
DEMO_RULE = Rule(name="heron-7b-mention", pattern=r"(?i)(?<![\w-])heron[-_ ]?7b(?!\w)",
                 model="heron-7b")


def target(kind: str, url: str, name: str | None = None, **kw: Any) -> Target:
    """A target reaching the loopback demo world (allow_private) with no schedule noise."""
    return Target(name=name or f"demo-{kind}", kind=kind, url=url, interval=60, jitter=0,
                  allow_private=True, **kw)


def collect(t: Target, cursor: dict[str, Any] | None = None,
            settings: CrawlSettings = FAST) -> tuple[list[Document], dict[str, Any]]:
    """Run one adapter to the end: its documents and the cursor it would save."""

    async def run() -> tuple[list[Document], dict[str, Any]]:
        async with Fetcher(settings) as fetcher:
            source = ADAPTERS[t.kind](t, fetcher, cursor)
            docs = [d async for d in source.documents()]
            return docs, source.cursor

    return asyncio.run(run())


def registered_store(path: Path, release: Release) -> Store:
    """A store with the demo release registered the way a release engineer would."""
    store = Store(path)
    register_paths(store, [release.root / release.model], model=release.model, release="v1")
    import_indicators(store, release.root / f"{release.model}.magnets", model=release.model)
    return store


def crawl(store: Store, targets: list[Target], settings: CrawlSettings = FAST,
          rules: list[Rule] | None = None) -> list[RunResult]:
    config = Config(path=None, database_path=store.path, crawl=settings, alerts=AlertSettings(),
                    smtp=None, targets=targets, rules=[DEMO_RULE] if rules is None else rules)
    return asyncio.run(crawl_once(config, store, targets))


def found(store: Store, target_name: str) -> set[tuple[str, str, str]]:
    """(url, kind, indicator) of every hit of a target, indicators lowercased."""
    return {(h["url"], h["kind"], h["indicator"].lower()) for h in store.hits(target=target_name)}


def expected(world: DemoWorld, source: str) -> set[tuple[str, str, str]]:
    """(url, kind, indicator) the world planted in one source."""
    return {(p.url, p.kind, p.indicator.lower()) for p in world.planted if p.source == source}
