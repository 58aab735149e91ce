"""Exact digests of registered artifacts, however they are written.

Hex SHA-256/SHA-1/MD5 tokens, BitTorrent infohashes in magnets (hex or base32), and the
base64 MD5 imageboards give for attachments are normalised to lowercase hex and looked up
in a set: fast on any volume of text, and an exact digest is the strongest evidence there
is, so every match is critical.
"""

from __future__ import annotations

from typing import Iterable

from fingerprints.indicators import scan_text
from monitor.detect.text import searchable_text, snippet
from monitor.models import Document, Hit
from monitor.store import KnownDigest

TORRENT_ALGOS = {"btih", "btmh"}


class DigestDetector:
    name = "digests"

    def __init__(self, known: dict[str, list[KnownDigest]]):
        self.known = known

    def detect(self, doc: Document) -> list[Hit]:
        if not self.known:
            return []
        text = searchable_text(doc)
        found: dict[tuple[str, str, str | None], Hit] = {}
        for token in scan_text(text):
            for entry in self._lookup(token.value, token.algo_hint):
                context = snippet(text, token.start, token.end)
                self._add(found, entry, token.encoding, context)
        for item in structured_digests(doc):
            for entry in self._lookup(item["value"], item["algo"], exact=True):
                self._add(found, entry, item.get("encoding", "field"), item.get("context", ""))
        return list(found.values())

    def _lookup(self, value: str, algo_hint: str | None, *,
                exact: bool = False) -> Iterable[KnownDigest]:
        for entry in self.known.get(value, ()):
            if exact and entry.algo != algo_hint:
                continue
            # A magnet's infohash only matches infohashes; a bare 40-hex token may be
            # either a SHA-1 or an infohash, and the registry says which it is.
            if algo_hint in TORRENT_ALGOS and entry.algo not in TORRENT_ALGOS:
                continue
            if algo_hint is None and entry.algo == "md5" and len(value) != 32:
                continue
            yield entry

    def _add(self, found: dict, entry: KnownDigest, encoding: str, context: str) -> None:
        key = (entry.value, entry.model, entry.recipient)
        if key in found:
            return
        found[key] = Hit(
            kind="torrent" if entry.algo in TORRENT_ALGOS else "hash", severity="critical",
            indicator=entry.value, indicator_type=f"{entry.algo} ({encoding})",
            detector=self.name, model=entry.model, artifact=entry.artifact,
            recipient=entry.recipient, context=context,
            matcher_version=f"indicator:{entry.indicator_id}")


def structured_digests(doc: Document) -> list[dict]:
    """Digests a source read from structured fields (an attachment's MD5, a Torznab
    infohash attribute, a hub's LFS SHA-256), as `extras["digests"]`: a list of
    {"algo", "value" (lowercase hex), "encoding", "context"}. Malformed entries are skipped:
    extras come from hostile pages."""
    items = doc.extras.get("digests")
    if not isinstance(items, list):
        return []
    return [item for item in items
            if isinstance(item, dict) and isinstance(item.get("value"), str)
            and isinstance(item.get("algo"), str)]
