"""The lxml parsing path yields the documents the bs4 path did (issue 16).

tests/bs4_documents.json.gz holds what the bs4 code (commit 3d361b9, before lxml) extracted
while the source, demo-world, hostile-parsing and encoding tests ran: every forum page
(phpBB, XenForo, vBulletin, SMF-like boards, listings and threads, the demo world's and the
page shapes the tests build), torrent-index listings and detail pages, and every HTML
fragment the feed, Hacker News, Discourse and Reddit adapters read, and every string
html_text was given. Each recorded call is replayed through today's code and must give the
same documents: URL, key, title, author, text with its line breaks, links, posted time,
next page and thread links (and a torrent row's name, size, magnet and download link, the
extras a listing page gives; the .torrent file's are added later, from the file).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from support import target

from monitor.sources.base import html_text, links_of, parse_html
from monitor.sources.forum import ForumSource
from monitor.sources.torrent_index import TorrentIndexSource

RECORDED = json.loads(gzip.decompress((Path(__file__).parent / "bs4_documents.json.gz")
                                      .read_bytes()))


def body(call: dict[str, Any]) -> bytes | str:
    return call["body"].encode("latin-1") if call["body_bytes"] else call["body"]


def doc(d: Any) -> dict[str, Any]:
    return {"key": d.key, "url": d.url, "title": d.title, "author": d.author, "text": d.text,
            "links": list(d.links), "posted_at": d.posted_at,
            "extras": {k: d.extras["torrent"][k] for k in ("name", "size", "magnet", "download")}
            if "torrent" in d.extras else None}


def replay(record: dict[str, Any]) -> Any:
    kind, call = record["kind"], record["call"]
    if kind == "html_text":
        return html_text(call["markup"])
    if kind == "fragment":
        page = parse_html(call["markup"], call["url"])
        return {"text": html_text(page), "links": links_of(page, call["url"])}
    url = call["url"]
    if kind.startswith("forum."):
        src = ForumSource(target("forum", url, name=record["target"],
                                 selectors=call["selectors"]), None, {})
        if kind == "forum.parse_listing":
            page = src.parse_listing(body(call), url, call["charset"])
        else:
            page = src.parse_posts(body(call), url, call["fetched_at"], call["charset"],
                                   call["key_base"], call["first_page"],
                                   call["next_selector"])
        return {"docs": [doc(d) for d in page.docs], "threads": page.threads,
                "next_url": page.next_url, "posts": page.posts}
    src = TorrentIndexSource(target("torrent_index", url, name=record["target"],
                                    selectors=call["selectors"]), None, {})
    if kind == "torrent.description":
        return src._description(body(call), url)
    rows, next_url = src.parse_page(body(call), url, call["fetched_at"])
    return {"docs": [[doc(d), detail] for d, detail in rows], "next_url": next_url}


def test_the_recording_covers_every_html_path() -> None:
    kinds = {r["kind"] for r in RECORDED}
    assert kinds == {"forum.parse_posts", "forum.parse_listing", "torrent.parse_page",
                     "torrent.description", "fragment", "html_text"}
    assert len(RECORDED) > 300
    forums = {r["target"] for r in RECORDED if r["kind"] == "forum.parse_posts"}
    assert {"demo-forum", "xf", "vb"} <= forums


@pytest.mark.parametrize("index", range(len(RECORDED)))
def test_lxml_gives_the_documents_bs4_gave(index: int) -> None:
    record = RECORDED[index]
    assert replay(record) == record["out"], (record["kind"], record["call"].get("url"))
