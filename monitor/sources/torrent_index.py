"""Torrent index HTML listings (NyaaV2 preset; selectors for others).

Each listing row becomes a Document carrying the torrent's name, size, magnet and download
link; the digest detector reads the infohash from the magnet.
"""

from __future__ import annotations

from typing import AsyncIterator

from bs4 import BeautifulSoup, Tag

from monitor.models import Document
from monitor.sources.base import Source, SourceError, epoch_iso, off_loop, safe_urljoin

NYAA = {
    "row": "table.torrent-list tbody tr",
    "name": "td:nth-of-type(2) a:not(.comments)",
    "magnet": "a[href^='magnet:']",
    "torrent": "a[href$='.torrent']",
    "size": "td:nth-of-type(4)",
    "time": "td[data-timestamp]",
}


class TorrentIndexSource(Source):
    kind = "torrent_index"
    option_keys = frozenset({"preset", "selectors", "max_pages"})
    presets = {"nyaa": NYAA}
    selector_keys = ("row", "name", "magnet", "torrent", "size", "time")
    required_selectors = ("row", "name")

    async def documents(self) -> AsyncIterator[Document]:
        listing = await self.fetcher.get(self.target.url, self.target)
        docs = await off_loop(self.parse_listing, listing.body, listing.url, listing.fetched_at)
        for doc in docs[: self.target.max_items]:
            yield doc

    def parse_listing(self, body: bytes, url: str, fetched_at: str) -> list[Document]:
        soup = BeautifulSoup(body, "lxml")
        rows = soup.select(self.selectors["row"])
        if not rows and soup.select_one("table"):
            raise SourceError(f"no rows matched {self.selectors['row']!r} on {url}: "
                              f"has the index's markup changed?")
        docs = []
        for row in rows:
            name_node = self.select(row, "name")
            if name_node is None:
                continue
            name = name_node.get_text(" ", strip=True) or str(name_node.get("title", ""))
            detail = safe_urljoin(url, str(name_node["href"])) if name_node.get("href") else None
            magnet = self._href(row, "magnet", url)
            torrent = self._href(row, "torrent", url)
            size_node = self.select(row, "size")
            size = size_node.get_text(" ", strip=True) if size_node else ""
            time_node = self.select(row, "time")
            key = detail or magnet or torrent or name
            links = [link for link in (magnet, torrent) if link]
            docs.append(Document(
                target=self.target.name, key=key, url=detail or url, title=name,
                text=f"{name}\n{size}".strip(), links=links,
                posted_at=_timestamp(time_node), snapshot=body, snapshot_url=url,
                extras={"torrent": {"name": name, "size": size, "magnet": magnet,
                                    "download": torrent}},
                fetched_at=fetched_at))
        return docs

    def _href(self, row: Tag, name: str, base: str) -> str | None:
        node = self.select(row, name)
        href = str(node.get("href", "")).strip() if node else ""
        if not href:
            return None
        return href if href.lower().startswith("magnet:") else safe_urljoin(base, href)


def _timestamp(node: Tag | None) -> str | None:
    if node is None:
        return None
    raw = node.get("data-timestamp")
    if raw and str(raw).isascii() and str(raw).isdigit():
        return epoch_iso(int(str(raw)))
    return node.get_text(strip=True) or None
