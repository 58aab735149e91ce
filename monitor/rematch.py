"""Retro-match: run the detectors again over the documents already stored.

A leak posted before its digests were registered is still a leak. When the registry grows
(`register`, `indicators import`, `fingerprints import`) or the rules change, the stored
documents are matched again (`weightwatch rematch`, and by the registry layer itself after
it adds anything: `monitor.registry`). A document is rebuilt from its stored row (target,
key, URL, title, author, posted time, text, links, extras), which is exactly what detectors
read; its evidence snapshot is already stored and is not touched. Its weight-file links are
scanned again too (`monitor.detect.weights`): a verdict remembered against an older
registry is stale, so a link that matched nothing is compared with the new fingerprints.

New hits go through the store like any other (dedup key, outbox row, so they are alerted);
hits found before have the same dedup key and are left untouched, so a rematch is
idempotent. Documents are read in batches and each document's new hits are committed on
their own, so any number of documents is walked in little memory without holding the
database's write lock for long.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from monitor.config import Config, Target
from monitor.detect import Detection, Detector, build_detection
from monitor.fetch import Fetcher, redact_url
from monitor.models import Document

if TYPE_CHECKING:
    from monitor.store import Store

log = structlog.get_logger("weightwatch.rematch")


@dataclass
class RematchResult:
    documents: int = 0
    new_hits: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return f"rematch: {self.documents} documents, {len(self.new_hits)} new hits"


def stored_document(row: Mapping[str, Any]) -> Document:
    """The Document a stored row was saved from, as detectors see it (no snapshot)."""
    return Document(
        target=row["target"], key=row["key"], url=row["url"], text=row["text"] or "",
        title=row["title"] or "", author=row["author"] or "", posted_at=row["posted_at"],
        links=json.loads(row["links"] or "[]"), extras=json.loads(row["extras"] or "{}"),
        fetched_at=row["fetched_at"] or "")


def link_target(name: str, url: str, configured: Mapping[str, Target]) -> Target:
    """The target whose network rules a stored document's links are fetched under: its own
    as configured, else (a target since removed) the defaults, which reach no private
    address."""
    return configured.get(name) or Target(name=name, kind="scan", url=url, interval=0,
                                          jitter=0)


def rematch(store: Store, detectors: Sequence[Detector] | Detection, *,
            targets: Sequence[str] = (), since: str | None = None, batch_size: int = 500,
            progress: Callable[[int], None] | None = None,
            configured: Sequence[Target] = (),
            channels: Sequence[str] = ("email",)) -> RematchResult:
    """Run `detectors` over the stored documents (of `targets`, last seen since `since`)
    and record the hits that are new, alerted on `channels`; `progress(n)` is called after
    each document. Link detectors fetch under the document's target as `configured` (see
    `link_target`)."""
    return asyncio.run(arematch(store, detectors, targets=targets, since=since,
                                batch_size=batch_size, progress=progress,
                                configured=configured, channels=channels))


async def arematch(store: Store, detectors: Sequence[Detector] | Detection, *,
                   targets: Sequence[str] = (), since: str | None = None,
                   batch_size: int = 500, progress: Callable[[int], None] | None = None,
                   configured: Sequence[Target] = (),
                   channels: Sequence[str] = ("email",)) -> RematchResult:
    """`rematch`, in a running event loop."""
    detection = detectors if isinstance(detectors, Detection) else Detection(detectors)
    by_name = {t.name: t for t in configured}
    result = RematchResult()
    for row in store.iter_documents(targets=targets, since=since, batch_size=batch_size):
        doc = stored_document(row)
        hits = await detection.detect(doc, link_target(doc.target, doc.url, by_name))
        if hits:
            new = store.record_hits(row["id"], doc, hits, channels=channels)
            for hit_id in new:
                log.debug("hit", hit_id=hit_id, url=redact_url(doc.url), rematch=True)
            result.new_hits.extend(new)
        result.documents += 1
        if progress is not None:
            progress(1)
    return result


def rematch_stored(store: Store, config: Config, *, targets: Sequence[str] = (),
                   since: str | None = None,
                   progress: Callable[[int], None] | None = None) -> RematchResult:
    """Every detector `config` defines (rules, digests, torrent file lists, weight links
    fetched under the config's crawl settings) over the stored documents; nothing to do,
    and no detector loaded, where none is stored (a release machine)."""
    if not store.count_documents(targets=targets, since=since):
        return RematchResult()

    async def run() -> RematchResult:
        async with Fetcher(config.crawl) as fetcher:
            return await arematch(store, build_detection(config, store, fetcher),
                                  targets=targets, since=since, progress=progress,
                                  configured=config.targets,
                                  channels=config.alerts.channels)

    return asyncio.run(run())
