"""Retro-match: run the detectors again over the documents already stored.

A leak posted before its digests were registered is still a leak. When the registry grows
(`register`, `indicators import`, `fingerprints import`) or the rules change, the stored
documents are matched again (`weightwatch rematch`). A document is rebuilt from its stored
row (target, key, URL, title, author, posted time, text, links, extras), which is exactly
what detectors read; its evidence snapshot is already stored and is not touched.

New hits go through the store like any other (dedup key, outbox row, so they are alerted);
hits found before have the same dedup key and are left untouched, so a rematch is
idempotent. Documents are read in batches and each document's new hits are committed on
their own, so any number of documents is walked in little memory without holding the
database's write lock for long.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from monitor.models import Document
from monitor.store import Store

if TYPE_CHECKING:
    from monitor.detect import Detector

log = structlog.get_logger("weightwatch.rematch")


@dataclass
class RematchResult:
    documents: int = 0
    new_hits: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return f"rematch: {self.documents} documents, {len(self.new_hits)} new hits"


def stored_document(row: dict[str, Any]) -> Document:
    """The Document a stored row was saved from, as detectors see it (no snapshot)."""
    return Document(
        target=row["target"], key=row["key"], url=row["url"], text=row["text"] or "",
        title=row["title"] or "", author=row["author"] or "", posted_at=row["posted_at"],
        links=json.loads(row["links"] or "[]"), extras=json.loads(row["extras"] or "{}"),
        fetched_at=row["fetched_at"] or "")


def rematch(store: Store, detectors: list[Detector], *, targets: Sequence[str] = (),
            since: str | None = None, batch_size: int = 500,
            progress: Callable[[int], None] | None = None,
            channels: Sequence[str] = ("email",)) -> RematchResult:
    """Run `detectors` over the stored documents (of `targets`, last seen since `since`)
    and record the hits that are new, alerted on `channels`; `progress(n)` is called
    after each document."""
    from monitor.detect import detect_all
    from monitor.fetch import redact_url

    result = RematchResult()
    for row in store.iter_documents(targets=targets, since=since, batch_size=batch_size):
        doc = stored_document(row)
        hits = detect_all(detectors, doc)
        if hits:
            new = store.record_hits(row["id"], doc, hits, channels=channels)
            for hit_id in new:
                log.debug("hit", hit_id=hit_id, url=redact_url(doc.url), rematch=True)
            result.new_hits.extend(new)
        result.documents += 1
        if progress is not None:
            progress(1)
    return result
