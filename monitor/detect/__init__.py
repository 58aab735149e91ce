"""Detectors: each turns a Document into zero or more Hits, and never fetches.

`build_detectors` assembles the set a crawl uses from the config's rules and the store's
registry, so a run sees one consistent snapshot of both.
"""

from __future__ import annotations

from typing import Protocol

from monitor.config import Config
from monitor.detect.digests import DigestDetector
from monitor.detect.manifest import ManifestDetector
from monitor.detect.rules import RuleDetector
from monitor.models import Document, Hit
from monitor.store import Store


class Detector(Protocol):
    name: str

    def detect(self, doc: Document) -> list[Hit]: ...


def build_detectors(config: Config, store: Store | None) -> list[Detector]:
    """Rules from the config; digests and torrent file lists against the registry (none
    without a store)."""
    return [RuleDetector(config.rules),
            DigestDetector(store.known_digests() if store is not None else {}),
            ManifestDetector(store.artifacts() if store is not None else [])]


def detect_all(detectors: list[Detector], doc: Document) -> list[Hit]:
    hits = []
    for detector in detectors:
        for hit in detector.detect(doc):
            hit.target, hit.url = doc.target, doc.url
            hits.append(hit)
    return hits
