"""Torznab endpoints as Jackett and Prowlarr serve them, shared by `jackett.py` and
`prowlarr.py` (this module mounts nothing itself: it is not in `demo.sites.SITES`).

Both answer `t=caps` and `t=search` (`q`, `cat`, `limit`, `offset`), require
`apikey=demo-key` and answer a wrong key with `<error code="100" description="Invalid API
Key"/>` (Jackett under HTTP 401, Prowlarr under HTTP 200, as their dialects differ), and
write items in their own dialect: Jackett's aggregate endpoint has `size`, `files`, `grabs`
as plain elements and a `jackettindexer` per item; Prowlarr's (`<rss version="1.0">`) puts
`files` and `grabs` in torznab attributes. Pages are small (`<limits max=3>`) so that a
crawler has to page through the few items the demo has; a real endpoint pages by 100.

The items' `comments` links point at the upstream tracker's details page; since every
demo site owns one path prefix, those pages are served here too, under `/site/`.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from demo.release import ORG, Release, bencode
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    html_response,
    http_date,
    not_found,
    redirect,
    target_table,
)

API_KEY = "demo-key"
API_KEY_ENV = "WEIGHTWATCH_DEMO_TORZNAB_KEY"
PAGE_LIMIT = 3
TORZNAB_NS = "http://torznab.com/schemas/2015/feed"
TRACKERS = ["udp://tracker.opentrackr.org:1337/announce", "udp://open.stealth.si:80/announce",
            "udp://exodus.desync.com:6969/announce"]
CATEGORIES = [  # (id, name, subcategories) as the endpoints' caps list them
    (2000, "Movies", [(2040, "Movies/HD")]),
    (4000, "PC", [(4010, "PC/0day"), (4020, "PC/ISO"), (4030, "PC/Mac")]),
    (5000, "TV", [(5040, "TV/HD"), (5080, "TV/Documentary")]),
    (8000, "Other", [(8010, "Other/Misc")]),
]
CUSTOM_CATEGORY = (100008, "Other/AI Models")  # indexer-specific ids start at 100000
MiB = 1024 ** 2
GiB = 1024 ** 3


def noise_infohash(title: str) -> str:
    """A stable infohash for a torrent whose bytes the demo does not hold."""
    return hashlib.sha1(b"weightwatch-demo-torznab:" + title.encode()).hexdigest()


def synthetic_torrent(name: str, size: int, created: int) -> tuple[bytes, str]:
    """A single-file v1 .torrent as mktorrent writes it, with made-up piece hashes (we do
    not hold the ISO); returns (metainfo, infohash)."""
    piece = 1 << 20
    pieces = b"".join(hashlib.sha1(f"{name}:{i}".encode()).digest()
                      for i in range(math.ceil(size / piece)))
    info = {b"length": size, b"name": name.encode(), b"piece length": piece, b"pieces": pieces}
    meta = {b"announce": TRACKERS[0].encode(), b"created by": b"mktorrent 1.1",
            b"creation date": created, b"info": info}
    return bencode(meta), hashlib.sha1(bencode(info)).hexdigest()


@dataclass
class Item:
    """One search result. `infohash_attr` says how the infohash attribute is written:
    'lower', 'upper' or None (absent); `magnet` whether a magneturl is given (its btih in
    `magnet_case`); `torrent` the .torrent the download link serves, if any."""

    id: int
    title: str
    indexer: str  # indexer id
    time: int
    size: int
    files: int
    seeders: int
    peers: int
    grabs: int
    categories: list[int]
    infohash: str
    infohash_attr: str | None = "lower"
    magnet: bool = True
    magnet_case: str = "lower"
    torrent: bytes | None = None
    description: str = ""
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    def magnet_uri(self) -> str:
        ih = self.infohash.upper() if self.magnet_case == "upper" else self.infohash
        trs = "".join(f"&tr={quote(tr, safe='')}" for tr in TRACKERS)
        return f"magnet:?xt=urn:btih:{ih}&dn={quote(self.title, safe='')}{trs}"

    def matches(self, query: str, cats: list[int]) -> bool:
        words = query.lower().split()
        if any(w not in self.title.lower() for w in words):
            return False
        if cats and not any(c in cats or c // 1000 * 1000 in cats for c in self.categories):
            return False
        return True


def leak_item(release: Release, id: int, indexer: str, time: int, *, seeders: int,
              infohash_attr: str | None, magnet: bool = True, magnet_case: str = "lower",
              title: str | None = None, note: str | None) -> Item:
    """The release's torrent as an indexer lists it; `note` None for a listing that is not
    a document of its own (merged into another by infohash). Its size in bytes is the
    release's total, which the manifest detector reports besides the infohash."""
    return Item(
        id, title or f"Heron 7B ({ORG}) partner weights [safetensors]", indexer, time,
        release.total_size, len(release.files), seeders, seeders + 9, seeders * 4,
        [8000, CUSTOM_CATEGORY[0]], release.infohash, infohash_attr=infohash_attr,
        magnet=magnet, magnet_case=magnet_case, torrent=release.torrent_bytes,
        description="Straight from the partner program. config.json, tokenizer.json and "
                    "the safetensors file, untouched.",
        plants=[("torrent", release.infohash, note),
                ("torrent", f"total:{release.total_size}", "the listing's size in bytes is "
                 "the release's total size")] if note else [])


class TorznabSite(Site):
    """What Jackett and Prowlarr share; subclasses give the dialect and the content."""

    server_title: str
    limits_max = PAGE_LIMIT
    error_status = 200  # HTTP status of an <error> answer
    query = ""  # the demo target's query
    categories = [8000, 4000]  # and categories
    indexers: dict[str, str]  # id -> display name

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.items = self.make_items(release)

    # ---------------------------------------------------------------- content

    @abstractmethod
    def make_items(self, release: Release) -> list[Item]:
        """The dialect's items: the planted leaks among noise."""

    def visible(self, indexer: str | None = None) -> list[Item]:
        """What the demo target's search returns, in order (newest first)."""
        items = [i for i in self.items if i.matches(self.query, self.categories)
                 and (indexer is None or i.indexer == indexer)]
        return sorted(items, key=lambda i: -i.time)

    def details_url(self, item: Item) -> str:
        return f"{self.root}/site/{item.indexer}/torrent/{item.id}/"

    @abstractmethod
    def download_url(self, item: Item) -> str:
        """Where the dialect serves an item's .torrent (Jackett and Prowlarr differ)."""

    def target_name(self) -> str:
        return f"demo-{self.prefix}"

    def target_toml(self) -> str:
        settings = [f'api_key_env = "{API_KEY_ENV}"   # the key is read from the environment']
        if self.query:
            settings.append(f'query = "{self.query}"')
        settings.append(f"categories = [{', '.join(str(c) for c in self.categories)}]")
        return target_table(self.target_name(), "torznab", self.entry_url, *settings)

    def documents(self) -> list[Doc]:
        """One document per distinct torrent (a crawler merges the same infohash seen on
        several indexers into the first one's document)."""
        docs, seen = [], set()
        for item in self.visible():
            if item.infohash in seen:
                continue
            seen.add(item.infohash)
            text = "\n".join(part for part in (item.title, item.description) if part)
            docs.append(Doc(self.source, self.details_url(item), text, item.plants, item.near))
        return docs

    # ---------------------------------------------------------------- HTTP

    def api(self, req: Request, indexer: str | None = None) -> Response:
        if req.arg("apikey") != API_KEY:
            return self.error(100, "Invalid API Key", self.error_status)
        t = req.arg("t")
        if not t:
            return self.error(200, "Missing parameter (t)")
        if t == "caps":
            return self.xml(self.caps())
        if t not in ("search", "tvsearch", "movie", "music", "book"):
            return self.error(202, f"No such function ({t})")
        if t != "search":
            return self.error(203, "Function not available")
        try:
            cats = [int(c) for c in req.arg("cat").split(",") if c.strip()]
        except ValueError:
            return self.error(201, "Incorrect parameter (cat)")
        limit = min(max(req.int_arg("limit", self.limits_max), 1), self.limits_max)
        offset = max(req.int_arg("offset", 0), 0)
        items = [i for i in self.items if i.matches(req.arg("q"), cats)
                 and (indexer is None or i.indexer == indexer)]
        items.sort(key=lambda i: -i.time)
        return self.xml(self.feed(items[offset:offset + limit]))

    def error(self, code: int, description: str, status: int = 200) -> Response:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<error code="{code}" '
                f"description={quoteattr(description)} />")
        return Response(status, body.encode(), "application/xml; charset=utf-8",
                        server=self.server_header)

    server_header = "Kestrel"
    magnet_redirect = 302  # the status of a download that only has a magnet

    def xml(self, body: str) -> Response:
        return Response(200, body.encode("utf-8"), "application/rss+xml; charset=utf-8",
                        server=self.server_header)

    def download(self, key: str, item: Item | None) -> Response:
        """A download link's answer: the .torrent, or a redirect to the magnet of an item
        without one; 401 for a wrong API key."""
        if key != API_KEY:
            return Response(401, b"", "text/plain", server=self.server_header)
        if item is None:
            return not_found()
        if item.torrent is not None:
            return Response(200, item.torrent, "application/x-bittorrent",
                            server=self.server_header)
        return redirect(item.magnet_uri(), self.magnet_redirect, server=self.server_header)

    def caps(self) -> str:
        cats = "".join(
            f'\n    <category id="{cid}" name="{name}">'
            + "".join(f'\n      <subcat id="{sid}" name="{sname}" />' for sid, sname in subs)
            + "\n    </category>" for cid, name, subs in CATEGORIES)
        cats += f'\n    <category id="{CUSTOM_CATEGORY[0]}" name="{CUSTOM_CATEGORY[1]}" />'
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<caps>
  <server title="{self.server_title}" />
  <limits default="{self.limits_max}" max="{self.limits_max}" />
  <searching>
    <search available="yes" supportedParams="q" />
    <tv-search available="no" supportedParams="q,season,ep" />
    <movie-search available="no" supportedParams="q" />
    <music-search available="no" supportedParams="q" />
    <audio-search available="no" supportedParams="q" />
    <book-search available="no" supportedParams="q" />
  </searching>
  <categories>{cats}
  </categories>
</caps>
"""

    def feed(self, items: list[Item]) -> str:
        return self.channel("".join(
            f"\n    <item>{self.item_fields(i, self.details_url(i), self.download_url(i))}"
            "\n    </item>" for i in items))

    @abstractmethod
    def channel(self, items: str) -> str:
        """The RSS document around the `<item>` elements, in the dialect's words."""

    @abstractmethod
    def item_fields(self, item: Item, details: str, download: str) -> str:
        """An item's elements in the dialect's order; `details` and `download` its URLs."""

    @staticmethod
    def enclosure(item: Item, download: str) -> str:
        return (f'\n      <enclosure url="{xml_attr(download)}" length="{item.size}" '
                'type="application/x-bittorrent" />')

    @staticmethod
    def attrs(item: Item, extra: list[tuple[str, str]]) -> str:
        """torznab:attr lines: categories, then `extra`, then infohash and magneturl as the
        item writes them, then the volume factors."""
        values = [("category", str(c)) for c in item.categories] + extra
        if item.infohash_attr is not None:
            values.append(("infohash", item.infohash.upper() if item.infohash_attr == "upper"
                           else item.infohash))
        if item.magnet:
            values.append(("magneturl", item.magnet_uri()))
        values += [("downloadvolumefactor", "0"), ("uploadvolumefactor", "1")]
        return "".join(f'\n      <torznab:attr name="{n}" value={quoteattr(v)} />'
                       for n, v in values)

    def handle(self, req: Request, path: str) -> Response:
        m = re.fullmatch(r"/site/([a-z0-9]+)/torrent/(\d+)/", path)
        if m:
            item = next((i for i in self.items
                         if i.indexer == m.group(1) and i.id == int(m.group(2))), None)
            return self.details(item) if item else not_found()
        return not_found()

    def details(self, item: Item) -> Response:
        """The upstream tracker's details page (a plain, generic torrent site)."""
        name = self.indexers[item.indexer]
        cats = ", ".join(str(c) for c in item.categories)
        return html_response(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(item.title)} - {esc(name)}</title></head>
<body>
<header><a href="/">{esc(name)}</a></header>
<main class="torrent-detail">
  <h1>{esc(item.title)}</h1>
  <ul class="meta">
    <li>Category: {cats}</li>
    <li>Size: {item.size} bytes</li>
    <li>Files: {item.files}</li>
    <li>Uploaded: {http_date(item.time)}</li>
    <li>Seeders: {item.seeders} / Leechers: {item.peers - item.seeders}</li>
    <li>Infohash: <code>{item.infohash}</code></li>
  </ul>
  <p class="description">{esc(item.description)}</p>
  <p><a class="magnet" href="{esc(item.magnet_uri())}">Magnet link</a></p>
</main>
</body></html>
""")


def rss_item(fields: Sequence[tuple[str, str | None]]) -> str:
    """Plain child elements in order; None values are written empty (`<description />`)."""
    out = []
    for name, value in fields:
        out.append(f"\n      <{name} />" if value is None
                   else f"\n      <{name}>{escape(value)}</{name}>")
    return "".join(out)


def xml_attr(value: str) -> str:
    """An attribute value as the endpoints escape it: &, " and <."""
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
