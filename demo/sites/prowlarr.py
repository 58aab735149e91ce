"""Prowlarr's per-indexer Torznab endpoint (`/{indexerId}/api`); see `torznab.py`.

Prowlarr's dialect: `<rss version="1.0">`, a `prowlarrindexer` element, and `files` and
`grabs` as torznab attributes. Its demo indexer lists the leak without an `infohash`
attribute (the magnet, with the hash in UPPERCASE hex, is all there is), an item with an
UPPERCASE infohash attribute, and one with neither infohash nor magnet, only a .torrent
download (Prowlarr's `/download?apikey=...` proxy). The target watches the latest uploads in
its categories, with no query.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

from demo.release import Release
from demo.sites.torznab import (
    API_KEY,
    TORZNAB_NS,
    GiB,
    Item,
    TorznabSite,
    leak_item,
    noise_infohash,
    rss_item,
    synthetic_torrent,
)
from demo.web import Request, Response, not_found, nov, rfc822

INDEXER_ID = 1


class ProwlarrSite(TorznabSite):
    prefix = "prowlarr"
    source = "prowlarr"
    title = "Prowlarr Torznab endpoint (indexer 1)"
    entry_path = f"/{INDEXER_ID}/api"
    server_title = "Prowlarr"
    error_status = 200
    magnet_redirect = 301
    query = ""
    indexers = {"openbay": "OpenBay"}

    def make_items(self, release: Release) -> list[Item]:
        netinst = "debian-13.2.0-amd64-netinst.iso"
        netinst_torrent, netinst_hash = synthetic_torrent(netinst, 754_974_720, nov(16, 9, 0))

        def noise(id: int, title: str, time: int, size: int, files: int, seeders: int,
                  cats: list[int], infohash_attr: str | None = "lower",
                  near: list[tuple[str, str, str]] | None = None) -> Item:
            return Item(id, title, "openbay", time, size, files, seeders, seeders + 5,
                        seeders * 11, cats, noise_infohash(title), infohash_attr=infohash_attr,
                        near=near or [])

        return [
            leak_item(release, 7731, "openbay", nov(20, 8, 5), seeders=17, infohash_attr=None,
                      magnet_case="upper", title="Heron-7B weights (leaked, partner build)",
                      note="release torrent with no infohash attribute: the magneturl "
                           "carries it in UPPERCASE hex"),
            noise(7728, "ubuntu-26.04.1-desktop-amd64.iso", nov(19, 23, 0), 6_543_134_720, 1,
                  412, [4000, 4020]),
            Item(7725, netinst, "openbay", nov(19, 18, 40), 754_974_720, 1, 58, 61, 640,
                 [4000, 4020], netinst_hash, infohash_attr=None, magnet=False,
                 torrent=netinst_torrent, description="Official netinst image."),
            noise(7722, "Llama-3.1-8B-Instruct (original + HF format)", nov(19, 11, 15),
                  32_121_235_184, 9, 102, [8000], infohash_attr="upper"),
            noise(7719, "Blender 4.5.3 LTS (Windows x64, portable)", nov(18, 9, 0),
                  412_893_184, 1, 33, [4000, 4010]),
            noise(7716, "Grey heron wallpapers 4K (50 images)", nov(17, 15, 30),
                  int(0.4 * GiB), 50, 9, [8000, 8010],
                  near=[("mention", "Grey heron", "the bird: must not match heron-7b")]),
            # Not in the watched categories: never in a result.
            noise(7713, "Herons of the Norfolk Broads (2025) 1080p", nov(17, 10, 0),
                  int(3.2 * GiB), 1, 14, [5000, 5080]),
        ]

    def download_url(self, item: Item) -> str:
        link = hashlib.sha256(f"{item.indexer}:{item.id}".encode()).hexdigest()[:40]
        return (f"{self.root}/{INDEXER_ID}/download?apikey={API_KEY}&link={link}"
                f"&file={quote(item.title, safe='')}")

    def handle(self, req: Request, path: str) -> Response:
        m = re.fullmatch(r"/(\d+)/(api|download)", path)
        if m:
            if int(m.group(1)) != INDEXER_ID:
                return not_found()
            if m.group(2) == "api":
                return self.api(req)
            item = next((i for i in self.items if f"link={req.arg('link')}&"
                         in self.download_url(i)), None) if req.arg("link") else None
            return self.download(req.arg("apikey"), item)
        return super().handle(req, path)

    def item_fields(self, item: Item, details: str, download: str) -> str:
        return (rss_item([("title", item.title), ("description", item.description or None),
                          ("guid", details)])
                + f'\n      <prowlarrindexer id="{INDEXER_ID}" type="public">'
                f"{self.indexers[item.indexer]}</prowlarrindexer>"
                + rss_item([("comments", details), ("pubDate", rfc822(item.time)),
                            ("size", str(item.size)), ("link", download)]
                           + [("category", str(c)) for c in item.categories])
                + self.enclosure(item, download)
                + self.attrs(item, [("seeders", str(item.seeders)), ("files", str(item.files)),
                                    ("grabs", str(item.grabs)), ("peers", str(item.peers))]))

    def channel(self, items: str) -> str:
        return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="1.0" xmlns:atom="http://www.w3.org/2005/Atom" xmlns:torznab="{TORZNAB_NS}">
  <channel>
    <atom:link rel="self" type="application/rss+xml" />
    <title>{self.indexers['openbay']}</title>{items}
  </channel>
</rss>
"""


