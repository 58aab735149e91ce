"""Torrent index HTML listings (NyaaV2 preset; selectors for others).

Each listing row becomes a Document carrying the torrent's name, size, magnet and download
link; listing pages are followed (`next` selector) up to `max_pages`. Where a row links its
.torrent, the file is downloaded (10 MB cap) and parsed strictly (v1, v2, hybrid), adding to
the document both infohashes, the file list with sizes and v2 pieces roots, and structured
digests (`btih`, `btmh`, `pieces_root`) for the digest detector. A broken or hostile .torrent
costs a warning, never the target. With a `description` selector the detail page's
description is read too. Parsed .torrents and descriptions are remembered in the cursor, so
a row seen before costs no request beyond its listing page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import structlog

from fingerprints.torrent import MAX_TORRENT_BYTES, TorrentError, TorrentInfo, parse_torrent
from monitor.fetch import FetchError, redact_url
from monitor.models import FILE_LIST, Document, FileList
from monitor.parsing import Node, detach_nested, node_text
from monitor.sources.base import (
    Source,
    SourceError,
    epoch_iso,
    html_text,
    off_loop,
    parse_html,
    safe_urljoin,
)

log = structlog.get_logger("weightwatch.sources.torrent_index")

NYAA = {
    "row": "table.torrent-list tbody tr",
    "name": "td:nth-of-type(2) a:not(.comments)",
    "magnet": "a[href^='magnet:']",
    "torrent": "a[href$='.torrent']",
    "size": "td:nth-of-type(4)",
    "time": "td[data-timestamp]",
    "next": "ul.pagination a[rel=next]",
    "description": "#torrent-description",
}

# Bounds on what the cursor remembers, so it stays a few MB at worst.
MAX_CACHED_TORRENTS = 2000
MAX_CACHED_FILE_ROWS = 20_000
MAX_FILES_KEPT = 1000  # files listed per torrent in a document
MAX_FILES_IN_TEXT = 200
MAX_CACHED_DESCRIPTIONS = 1000
MAX_DESCRIPTION = 4000


class TorrentIndexSource(Source):
    kind = "torrent_index"
    option_keys = frozenset({"preset", "selectors", "max_pages"})
    presets = {"nyaa": NYAA}
    selector_keys = ("row", "name", "magnet", "torrent", "size", "time", "next", "description")
    required_selectors = ("row", "name")

    async def documents(self) -> AsyncIterator[Document]:
        docs: list[Document] = []
        details: dict[str, str] = {}  # document key -> detail page URL
        keys: set[str] = set()
        url: str | None = self.target.url
        visited: set[str] = set()
        for _page in range(self.target.max_pages):
            if url is None or url in visited:
                break
            visited.add(url)
            listing = await self.fetcher.get(url, self.target)
            page, next_url = await off_loop(self.parse_page, listing.body, listing.url,
                                            listing.fetched_at)
            for doc, detail in page:
                if doc.key in keys or len(docs) >= self.target.max_items:
                    continue
                keys.add(doc.key)
                docs.append(doc)
                if detail:
                    details[doc.key] = detail
            if len(docs) >= self.target.max_items:
                break
            url = next_url

        torrents = _cache(self.cursor.get("torrents"))
        descriptions = _cache(self.cursor.get("descriptions"))
        for doc in docs:
            download = doc.extras["torrent"].get("download")
            if download:
                await self._add_metainfo(doc, download, torrents)
            if "description" in self.selectors and doc.key in details:
                await self._add_description(doc, details[doc.key], descriptions)
            yield doc
        self.cursor["torrents"] = _bounded(torrents, MAX_CACHED_TORRENTS, MAX_CACHED_FILE_ROWS)
        if descriptions:
            self.cursor["descriptions"] = _bounded(descriptions, MAX_CACHED_DESCRIPTIONS)

    # ----------------------------------------------------------------- listing pages

    def parse_listing(self, body: bytes, url: str, fetched_at: str) -> list[Document]:
        return [doc for doc, _ in self.parse_page(body, url, fetched_at)[0]]

    def parse_page(self, body: bytes, url: str, fetched_at: str
                   ) -> tuple[list[tuple[Document, str | None]], str | None]:
        """The rows of one listing page (with their detail URLs) and the next page's URL."""
        page = parse_html(body, url)
        next_node = self.select(page, "next")  # before rows are cut apart
        rows = detach_nested(self.pattern(self.selectors["row"]).select(page))
        if not rows and page.root.find(".//table") is not None:
            raise SourceError(f"no rows matched {self.selectors['row']!r} on {url}: "
                              f"has the index's markup changed?")
        out = []
        for row in rows:
            name_node = self.select(row, "name")
            if name_node is None:
                continue
            name = node_text(name_node) or name_node.get("title", "")
            href = name_node.get("href")
            detail = safe_urljoin(url, href) if href else None
            magnet = self._href(row, "magnet", url)
            torrent = self._href(row, "torrent", url)
            size_node = self.select(row, "size")
            size = node_text(size_node) if size_node is not None else ""
            time_node = self.select(row, "time")
            key = detail or magnet or torrent or name
            links = [link for link in (magnet, torrent) if link]
            out.append((Document(
                target=self.target.name, key=key, url=detail or url, title=name,
                text=f"{name}\n{size}".strip(), links=links,
                posted_at=_timestamp(time_node), snapshot=body, snapshot_url=url,
                extras={"torrent": {"name": name, "size": size, "magnet": magnet,
                                    "download": torrent}},
                fetched_at=fetched_at), detail))
        next_href = (next_node.get("href") or "").strip() if next_node is not None else ""
        next_url = safe_urljoin(url, next_href) if next_href and next_href != "#" else None
        if next_url and not next_url.startswith(("http://", "https://")):
            next_url = None
        return out, next_url

    def _href(self, row: Node, name: str, base: str) -> str | None:
        node = self.select(row, name)
        href = (node.get("href") or "").strip() if node is not None else ""
        if not href:
            return None
        return href if href.lower().startswith("magnet:") else safe_urljoin(base, href)

    # ----------------------------------------------------------------- .torrent files

    async def _add_metainfo(self, doc: Document, url: str, cache: dict[str, Any]) -> None:
        entry = cache.pop(url, None)
        if not _valid_entry(entry):
            entry = await self._read_torrent(url)
            if entry is None:
                return  # a transient failure: try again next run
        cache[url] = entry  # most recently used last
        if "error" in entry:
            doc.extras["torrent"]["metainfo_error"] = entry["error"]
            return
        doc.extras["torrent"].update({k: v for k, v in entry.items()
                                      if k not in ("digests", "files", "total_size")})
        listed: FileList = {"label": "torrent file list", "name": doc.extras["torrent"]["name"],
                            "files": entry["files"], "total_size": entry["total_size"]}
        doc.extras[FILE_LIST] = listed
        doc.extras["digests"] = list(entry["digests"])
        paths = [f["path"] for f in entry["files"][:MAX_FILES_IN_TEXT]]
        if paths:
            doc.text += "\n" + "\n".join(paths)

    async def _read_torrent(self, url: str) -> dict[str, Any] | None:
        """The parsed .torrent as cursor-ready data; {"error": ...} for a file that will not
        parse (remembered, so it is not fetched again); None for a failed download."""
        try:
            response = await self.fetcher.get(url, self.target, max_bytes=MAX_TORRENT_BYTES)
        except FetchError as exc:
            log.warning("torrent_download_failed", url=redact_url(url), reason=str(exc))
            return None
        try:
            info = await off_loop(parse_torrent, response.body)
        except TorrentError as exc:
            log.warning("torrent_unparseable", url=redact_url(url), reason=str(exc))
            return {"error": str(exc)}
        return metainfo_extras(info)

    # ----------------------------------------------------------------- detail pages

    async def _add_description(self, doc: Document, url: str, cache: dict[str, Any]) -> None:
        text = cache.pop(url, None)
        if not isinstance(text, str):
            try:
                page = await self.fetcher.get(url, self.target)
            except FetchError as exc:
                log.warning("torrent_detail_failed", url=redact_url(url), reason=str(exc))
                return
            text = await off_loop(self._description, page.body, page.url)
        cache[url] = text
        if text:
            doc.text += "\n" + text

    def _description(self, body: bytes, url: str = "") -> str:
        node = self.select(parse_html(body, url), "description")
        return html_text(node)[:MAX_DESCRIPTION] if node is not None else ""


def metainfo_extras(info: TorrentInfo) -> dict[str, Any]:
    """What a parsed .torrent tells of a document: its ids and version (for
    extras["torrent"]), its files and total size (for extras["file_list"]), and its
    digests."""
    files = [{"path": f.path, "length": f.length, "pieces_root": f.pieces_root}
             for f in info.files[:MAX_FILES_KEPT]]
    context = f"{info.name} ({info.version} .torrent)"
    digests: list[dict[str, str]] = []
    if info.infohash_v1:
        digests.append({"algo": "btih", "value": info.infohash_v1, "encoding": "torrent file",
                        "context": f"{context}: infohash {info.infohash_v1}"})
    if info.infohash_v2:
        digests.append({"algo": "btmh", "value": info.infohash_v2, "encoding": "torrent file",
                        "context": f"{context}: v2 infohash {info.infohash_v2}"})
    for kept in info.files[:MAX_FILES_KEPT]:
        if kept.pieces_root:
            digests.append({"algo": "pieces_root", "value": kept.pieces_root,
                            "encoding": "torrent file",
                            "context": f"{context}: pieces root of {kept.path}"})
    extras: dict[str, Any] = {
        "infohash_v1": info.infohash_v1, "infohash_v2": info.infohash_v2,
        "version": info.version, "total_size": info.total_size, "files": files,
        "digests": digests,
    }
    if len(info.files) > MAX_FILES_KEPT:
        extras["files_total"] = len(info.files)
    return extras


def _valid_entry(entry: Any) -> bool:
    """A cursor entry this version wrote (the cursor is ours, but may be from an older run)."""
    if not isinstance(entry, dict):
        return False
    if "error" in entry:
        return isinstance(entry["error"], str)
    return (isinstance(entry.get("files"), list) and isinstance(entry.get("digests"), list)
            and all(isinstance(f, dict) and isinstance(f.get("path"), str)
                    for f in entry["files"]))


def _cache(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _bounded(cache: dict[str, Any], entries: int, file_rows: int | None = None
             ) -> dict[str, Any]:
    """Drop the least recently used entries until the cache fits."""
    items = list(cache.items())[-entries:]
    if file_rows is not None:
        total = sum(len(v.get("files", ())) for _, v in items if isinstance(v, dict))
        while items and total > file_rows:
            _, dropped = items.pop(0)
            total -= len(dropped.get("files", ())) if isinstance(dropped, dict) else 0
    return dict(items)


def _timestamp(node: Node | None) -> str | None:
    if node is None:
        return None
    raw = node.get("data-timestamp")
    if raw and raw.isascii() and raw.isdigit():
        return epoch_iso(int(raw))
    return node_text(node, "") or None
