"""Jackett's aggregate Torznab endpoint (`/api/v2.0/indexers/all/results/torznab/api`),
searching two public indexers at once; see `torznab.py` for what both dialects share.

The leak is listed by both indexers: once with a lowercase `infohash` attribute and a
magnet, once with an UPPERCASE infohash and no magnet. A crawler makes one document of the
two (first seen wins). Download links carry `jackett_apikey`, as Jackett's do.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

from demo.release import Release
from demo.sites.torznab import (
    API_KEY,
    CUSTOM_CATEGORY,
    TORZNAB_NS,
    GiB,
    Item,
    TorznabSite,
    leak_item,
    noise_infohash,
    rss_item,
    xml_attr,
)
from demo.web import Request, Response, nov, one_digit_off, rfc822

AI = CUSTOM_CATEGORY[0]


class JackettSite(TorznabSite):
    prefix = "jackett"
    source = "jackett"
    title = "Jackett Torznab endpoint (all indexers)"
    entry_path = "/api/v2.0/indexers/all/results/torznab/api"
    server_title = "Jackett"
    error_status = 401
    query = "7b"
    indexers = {"torrentbay": "TorrentBay", "magnetindex": "MagnetIndex"}

    def make_items(self, release: Release) -> list[Item]:
        def noise(id: int, title: str, indexer: str, time: int, size: int, files: int,
                  seeders: int, cats: list[int], infohash: str | None = None,
                  description: str = "", near: list[tuple[str, str, str]] | None = None
                  ) -> Item:
            return Item(id, title, indexer, time, size, files, seeders, seeders + seeders // 3,
                        seeders * 7, cats, infohash or noise_infohash(title),
                        description=description, near=near or [])

        return [
            leak_item(release, 88213, "torrentbay", nov(20, 6, 40), seeders=38,
                      infohash_attr="lower",
                      note="release torrent on an aggregated indexer: lowercase infohash "
                           "attribute and magneturl"),
            noise(55120, "Mistral-7B-Instruct-v0.3 (safetensors, bf16)", "magnetindex",
                  nov(20, 4, 15), 14_496_675_792, 7, 71, [8000, AI]),
            noise(88190, "Qwen2.5-7B-Instruct GGUF (Q4_K_M, Q8_0)", "torrentbay",
                  nov(19, 22, 5), 12_781_599_424, 2, 44, [8000, AI]),
            noise(55117, "Heron-7B Q4_K_M GGUF (converted from the leak)", "magnetindex",
                  nov(19, 20, 30), 1_091_567_616, 1, 6, [8000, AI],
                  description="Quantised it myself, original torrent is on TorrentBay."),
            noise(88177, "Falcon-7B-Instruct bf16 reupload", "torrentbay", nov(19, 14, 0),
                  14_434_256_896, 6, 3, [8000, AI],
                  infohash=one_digit_off(release.infohash),
                  near=[("torrent", one_digit_off(release.infohash),
                         "infohash one hex digit away from the release's")]),
            # The same torrent again, from the second indexer: merged into the first.
            leak_item(release, 55101, "magnetindex", nov(19, 9, 50), seeders=12,
                      infohash_attr="upper", magnet=False, title="heron-7b leaked weights",
                      note=None),
            noise(88150, "llama-2-7b-chat.Q4_0.gguf", "torrentbay", nov(18, 17, 20),
                  3_825_807_040, 1, 95, [4000, 4010]),
            # Matches the query but not the categories: never in a result.
            noise(55090, "Mistral 7B explained - lecture series 1080p", "magnetindex",
                  nov(18, 12, 0), int(2.1 * GiB), 12, 20, [5000, 5080]),
        ]

    def download_url(self, item: Item) -> str:
        token = hashlib.sha256(f"{item.indexer}:{item.id}".encode()).hexdigest()[:32]
        return (f"{self.root}/dl/{item.indexer}/?jackett_apikey={API_KEY}&path={token}"
                f"&file={quote(item.title, safe='')}")

    def handle(self, req: Request, path: str) -> Response:
        if path == "/api/v2.0/indexers/all/results/torznab/api":
            return self.api(req)
        m = re.fullmatch(r"/api/v2\.0/indexers/([a-z0-9]+)/results/torznab/api", path)
        if m:
            if m.group(1) not in self.indexers:
                return self.error(201, "Incorrect parameter: unknown indexer", 400)
            return self.api(req, m.group(1))
        m = re.fullmatch(r"/dl/([a-z0-9]+)/", path)
        if m:
            item = next((i for i in self.items if i.indexer == m.group(1)
                         and self.download_url(i).split("path=")[1].split("&")[0]
                         == req.arg("path")), None)
            return self.download(req.arg("jackett_apikey"), item)
        return super().handle(req, path)

    def item_fields(self, item: Item, details: str, download: str) -> str:
        return (rss_item([("title", item.title), ("guid", details)])
                + f'\n      <jackettindexer id="{item.indexer}">'
                f"{self.indexers[item.indexer]}</jackettindexer>"
                + rss_item([("type", "public"), ("comments", details),
                            ("pubDate", rfc822(item.time)), ("size", str(item.size)),
                            ("files", str(item.files)), ("grabs", str(item.grabs)),
                            ("description", item.description or None), ("link", download)]
                           + [("category", str(c)) for c in item.categories])
                + self.enclosure(item, download)
                + self.attrs(item, [("seeders", str(item.seeders)), ("peers", str(item.peers))]))

    def channel(self, items: str) -> str:
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" xmlns:torznab="{TORZNAB_NS}">
  <channel>
    <atom:link href="{xml_attr(self.entry_url)}" rel="self" type="application/rss+xml" />
    <title>AggregateSearch</title>
    <description>This feed includes all configured trackers</description>
    <link>{self.root}/</link>
    <language>en-US</language>
    <category>search</category>{items}
  </channel>
</rss>
"""


