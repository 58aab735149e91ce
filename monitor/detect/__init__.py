"""Detectors: each turns a Document into zero or more Hits.

Document detectors (`Detector`) read the document alone and are synchronous; a link
detector (`LinkDetector`: the weight-link scanner) reads the files a document links to, so
it is asynchronous and is given the target whose network rules apply. `Detection` runs
both kinds over a document, the one way the crawler and `rematch` detect.

`build_detectors` assembles the document detectors from the config's rules and the
registry, so a pass sees one consistent snapshot of both. Nothing here imports the store:
the registry is read through the protocols in `monitor.models` that the store implements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from monitor.config import Config, Target
from monitor.detect.digests import DigestDetector
from monitor.detect.manifest import ManifestDetector
from monitor.detect.rules import RuleDetector
from monitor.models import Document, Hit, RegistryView, WeightRegistry

if TYPE_CHECKING:
    from monitor.detect.weights import WeightLinkDetector
    from monitor.fetch import Fetcher

__all__ = ["Detection", "Detector", "LinkDetector", "WeightLinkDetector", "build_detection",
           "build_detectors", "detect_all"]


class Detector(Protocol):
    name: str

    def detect(self, doc: Document) -> list[Hit]: ...


class LinkDetector(Protocol):
    name: str

    async def detect(self, doc: Document, target: Target) -> list[Hit]: ...


def build_detectors(config: Config, store: RegistryView | None) -> list[Detector]:
    """Rules from the config; digests and torrent file lists against the registry (none
    without a store)."""
    return [RuleDetector(config.rules),
            DigestDetector(store.known_digests() if store is not None else {}),
            ManifestDetector(store.artifacts() if store is not None else [],
                             store.imported_files() if store is not None else [])]


def detect_all(detectors: Sequence[Detector], doc: Document) -> list[Hit]:
    """The document detectors' hits, each placed in the document."""
    hits = []
    for detector in detectors:
        for hit in detector.detect(doc):
            hit.target, hit.url = doc.target, doc.url
            hits.append(hit)
    return hits


@dataclass
class Detection:
    """Every detector of one pass: the document detectors, then the link detectors."""

    detectors: Sequence[Detector]
    links: Sequence[LinkDetector] = field(default_factory=list)

    async def detect(self, doc: Document, target: Target) -> list[Hit]:
        hits = detect_all(self.detectors, doc)
        for detector in self.links:
            for hit in await detector.detect(doc, target):
                hit.target, hit.url = doc.target, doc.url
                hits.append(hit)
        return hits


def build_detection(config: Config, store: WeightRegistry, fetcher: Fetcher) -> Detection:
    """All the detectors of a pass over `store`'s registry, weight links fetched through
    `fetcher` (and their verdicts remembered in the store)."""
    from monitor.detect.weights import WeightLinkDetector
    return Detection(build_detectors(config, store),
                     [WeightLinkDetector.over(store, config.scan, fetcher)])


def __getattr__(name: str) -> Any:
    # The weight-link detector (numpy, the fetcher) loads when a pass needs it, so reading
    # rules (check-config's rule costs) stays light.
    if name == "WeightLinkDetector":
        from monitor.detect.weights import WeightLinkDetector
        return WeightLinkDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
