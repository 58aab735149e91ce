"""The torrent index adapter's .torrent downloads, detail pages, pagination and cursor cache:
against the demo world's Nyaa index, and against a Canned server (tests/support.py) serving
hostile .torrent files (which must cost a warning, never the target)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastbencode
import pytest
import structlog
from support import Canned, crawl, expected, found, registered_store, run, target

from demo.release import Release
from demo.world import DemoWorld
from fingerprints.indicators import parse_magnet
from fingerprints.torrent import pieces_root
from monitor.config import Target
from monitor.models import Document
from monitor.sources.torrent_index import MAX_FILES_KEPT, _bounded

LEAK_TORRENT = 2034118
NEAR_TORRENT = 2034117


def nyaa(world: DemoWorld, **kw: Any) -> Target:
    return target("torrent_index", world.urls["torrents"], name="demo-torrents",
                  preset="nyaa", **kw)


@pytest.fixture(scope="module")
def nyaa_run(demo_world: DemoWorld) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(nyaa(demo_world))


# ------------------------------------------------------------------------------ demo world


def test_listing_pages_are_followed(nyaa_run: Any, demo_world: DemoWorld) -> None:
    docs, _, urls = nyaa_run
    rows = [u for u in demo_world.document_urls if "/torrents/view/" in u]
    assert [d.url for d in docs] == rows and len(rows) == 12
    listings = [u for u in urls if "/torrents/?" in u]
    assert len(listings) == 2 and listings[1].endswith("p=2")
    docs1, _, _ = run(nyaa(demo_world, max_pages=1))
    assert len(docs1) == 6
    docs2, _, urls2 = run(nyaa(demo_world, max_items=7))
    assert len(docs2) == 7 and len([u for u in urls2 if ".torrent" in u]) == 6


def test_the_torrent_is_read_into_extras(nyaa_run: Any, demo_world: DemoWorld,
                                         demo_release: Release) -> None:
    docs = {d.key: d for d in nyaa_run[0]}
    leak = docs[f"{demo_world.base_url}/torrents/view/{LEAK_TORRENT}"]
    t = leak.extras["torrent"]
    assert t["infohash_v1"] == demo_release.infohash and t["infohash_v2"] is None
    listed = leak.extras["file_list"]
    assert t["version"] == "v1" and listed["total_size"] == demo_release.total_size
    assert (listed["label"], listed["name"]) == ("torrent file list", t["name"])
    assert listed["files"] == [{"path": f.name, "length": f.size, "pieces_root": None}
                               for f in demo_release.files]
    assert t["download"] == f"{demo_world.base_url}/torrents/download/{LEAK_TORRENT}.torrent"
    assert leak.extras["digests"] == [{
        "algo": "btih", "value": demo_release.infohash, "encoding": "torrent file",
        "context": f"heron-7b (v1 .torrent): infohash {demo_release.infohash}"}]
    # The file list and the detail page's description are in the text detectors read.
    assert "heron-7b/model.safetensors" in leak.text
    assert "Check the hashes yourself. Seed if you can." in leak.text
    # Every .torrent's infohash agrees with the magnet the index printed next to it.
    for doc in docs.values():
        magnet = parse_magnet(doc.extras["torrent"]["magnet"])
        if doc.extras["torrent"]["download"]:
            assert doc.extras["torrent"]["infohash_v1"] == magnet.btih, doc.title
            assert doc.extras["file_list"]["total_size"] > 0
    # A row whose .torrent is gone keeps its listing fields only.
    near = docs[f"{demo_world.base_url}/torrents/view/{NEAR_TORRENT}"]
    assert set(near.extras["torrent"]) == {"name", "size", "magnet", "download"}
    assert "file_list" not in near.extras
    assert "digests" not in near.extras


def test_cursor_cache_avoids_refetching(nyaa_run: Any, demo_world: DemoWorld) -> None:
    docs, cursor, urls = nyaa_run
    assert len([u for u in urls if u.endswith(".torrent")]) == 11
    assert len([u for u in urls if "/torrents/view/" in u]) == 12
    assert len(cursor["torrents"]) == 11 and len(cursor["descriptions"]) == 12
    docs2, cursor2, urls2 = run(nyaa(demo_world), cursor)
    # Only the two listing pages are fetched again; documents are byte-for-byte the same.
    assert [u for u in urls2 if "/torrents/?" not in u] == []
    assert [d.content_sha256 for d in docs2] == [d.content_sha256 for d in docs]
    assert cursor2 == cursor


@pytest.mark.slow
def test_crawl_into_a_store_finds_exactly_what_was_planted(
        tmp_path: Path, demo_world: DemoWorld, demo_release: Release) -> None:
    store = registered_store(tmp_path / "ww.db", demo_release)
    first = crawl(store, [nyaa(demo_world)])
    second = crawl(store, [nyaa(demo_world)])
    assert [r.status for r in first + second] == ["ok", "ok"], [r.error for r in first]
    assert found(store, "demo-torrents") == expected(demo_world, "torrents")
    assert first[0].documents_seen == 12
    # With the parsed .torrents coming from the cursor, nothing changed on the second run.
    assert (second[0].documents_new, second[0].documents_changed, second[0].hits_new) == (0, 0, 0)
    hits = store.hits(target="demo-torrents")
    infohashes = [h for h in hits if h["indicator_type"].startswith("btih ")]
    assert [h["indicator"] for h in infohashes] == [demo_release.infohash]
    # A re-made torrent is found by its files' v2 pieces roots (critical) and, like any
    # torrent listing the released files, by their names and sizes (high) and the
    # release's total size (medium).
    roots = {h["indicator"] for h in hits if h["indicator_type"] == "pieces_root (torrent file)"}
    assert roots == {f.pieces_root for f in demo_release.files}
    assert {(h["severity"], h["detector"]) for h in hits if h["kind"] == "torrent"} == {
        ("critical", "digests"), ("high", "manifest"), ("medium", "manifest")}
    store.close()


# ------------------------------------------------------------------------------ local server


@pytest.fixture
def index(serve: Callable[..., Canned]) -> Canned:
    """A torrent index on loopback: listing pages, detail pages, .torrent files."""
    return serve(match_query=True)


def listing(index: Canned, path: str, rows: list[tuple[int, str, str | None]],
            next_href: str | None = None) -> str:
    """A Nyaa-style listing of (id, name, .torrent path) rows, and a detail page per row."""
    html = []
    for tid, name, torrent in rows:
        download = f'<a href="{torrent}"><i class="fa-download"></i></a>' if torrent else ""
        html.append(f'<tr><td>cat</td><td><a href="/view/{tid}">{name}</a></td>'
                    f'<td>{download}<a href="magnet:?xt=urn:btih:{tid:040x}">m</a></td>'
                    f'<td>1.0 MiB</td><td data-timestamp="1795164000">x</td></tr>')
        index.serve(f"/view/{tid}", f'<html><body><div id="torrent-description">About {name}: '
                    f"<b>nothing</b> to see.</div></body></html>", ctype="text/html")
    nav = f'<ul class="pagination"><li><a rel="next" href="{next_href}">&raquo;</a></li></ul>' \
        if next_href else ""
    return index.serve(path, "<html><body><table class='torrent-list'><tbody>" + "".join(html)
                       + f"</tbody></table>{nav}</body></html>", ctype="text/html")


def torrent(index: Canned, path: str, body: bytes, status: int = 200) -> str:
    index.serve(path, body, status, ctype="application/x-bittorrent")
    return path


def v2_torrent(files: dict[str, bytes]) -> bytes:
    tree = {name.encode(): {b"": {b"length": len(data),
                                  b"pieces root": bytes.fromhex(pieces_root(data) or "")}}
            for name, data in files.items()}
    info = {b"file tree": tree, b"meta version": 2, b"name": b"pack", b"piece length": 16384}
    return fastbencode.bencode({b"info": info})


def test_hostile_torrents_cost_a_warning_not_the_target(index: Canned) -> None:
    good = {"a.bin": random.Random(1).randbytes(40_000), "b.bin": b"tiny"}
    rows = [
        (1, "hostile sixteen", torrent(index, "/t/1.torrent", b"d4:infold4:infol")),
        (2, "random bytes", torrent(index, "/t/2.torrent", random.Random(2).randbytes(5000))),
        (3, "nested deep", torrent(index, "/t/3.torrent", b"d4:info" + b"l" * 100_000)),
        (4, "length 10^12", torrent(index, "/t/4.torrent", b"d4:info1000000000000:x")),
        (5, "gone", "/t/5.torrent"),
        (6, "too big", torrent(index, "/t/6.torrent", b"d" + b"0:" * 5_500_000)),
        (7, "a good v2 torrent", torrent(index, "/t/7.torrent", v2_torrent(good))),
        (8, "magnet only", None),
    ]
    url = listing(index, "/list", rows)
    t = target("torrent_index", url, preset="nyaa")
    with structlog.testing.capture_logs() as logs:
        docs, cursor, _ = run(t)
    assert [d.title for d in docs] == [name for _, name, _ in rows]
    by_title = {d.title: d for d in docs}
    warnings = {e["url"].rsplit("/", 1)[1]: e for e in logs if e["log_level"] == "warning"}
    for n in (1, 2, 3, 4):
        event = warnings[f"{n}.torrent"]
        assert event["event"] == "torrent_unparseable"
        assert event["reason"] and "\n" not in event["reason"]
    assert "nesting deeper" in warnings["3.torrent"]["reason"]
    assert "truncated" in warnings["4.torrent"]["reason"]
    assert warnings["5.torrent"]["event"] == "torrent_download_failed"
    assert "HTTP 404" in warnings["5.torrent"]["reason"]
    assert "cap" in warnings["6.torrent"]["reason"]
    # Broken files leave the row's own fields, and say why the metainfo is missing.
    hostile = by_title["hostile sixteen"].extras["torrent"]
    assert "infohash_v1" not in hostile and hostile["metainfo_error"].startswith("truncated")
    assert "metainfo_error" not in by_title["gone"].extras["torrent"]
    # The good v2 torrent: btmh and a pieces root per non-empty file.
    v2 = by_title["a good v2 torrent"]
    info_hash = hashlib.sha256(fastbencode.bencode(fastbencode.bdecode(
        v2_torrent(good))[b"info"])).hexdigest()
    assert v2.extras["torrent"]["version"] == "v2"
    assert v2.extras["torrent"]["infohash_v1"] is None
    assert v2.extras["torrent"]["infohash_v2"] == info_hash
    assert v2.extras["file_list"]["files"] == [
        {"path": f"pack/{name}", "length": len(data), "pieces_root": pieces_root(data)}
        for name, data in good.items()]
    assert [(d["algo"], d["value"]) for d in v2.extras["digests"]] == [
        ("btmh", info_hash)] + [("pieces_root", pieces_root(data)) for data in good.values()]
    assert "pack/a.bin" in v2.text and "About a good v2 torrent: nothing to see." in v2.text

    # Next run: parsed and unparseable files come from the cursor; failed downloads are
    # tried again; detail pages are not fetched again.
    before = len(index.requests)
    docs2, _, _ = run(t, cursor)
    fetched = {r.path for r in index.requests[before:]} - {"/robots.txt"}
    assert fetched == {"/list", "/t/5.torrent", "/t/6.torrent"}
    assert [d.content_sha256 for d in docs2] == [d.content_sha256 for d in docs]


def test_pagination_follows_next_and_stops_on_a_loop(index: Canned) -> None:
    listing(index, "/p2", [(21, "second page", None)], next_href="/p1")  # back to the start
    url = listing(index, "/p1", [(11, "first page", None)], next_href="/p2")
    docs, _, _ = run(target("torrent_index", url, preset="nyaa", max_pages=10))
    assert [d.title for d in docs] == ["first page", "second page"]
    assert index.count("/p1") == 1 and index.count("/p2") == 1


def test_without_description_selector_no_detail_page_is_fetched(index: Canned) -> None:
    url = listing(index, "/l", [(31, "row", None)])
    selectors = {"row": "table.torrent-list tbody tr", "name": "td:nth-of-type(2) a"}
    docs, _, _ = run(target("torrent_index", url, selectors=selectors))
    assert docs[0].text == "row" and index.count("/view/31") == 0


def test_cursor_cache_is_bounded() -> None:
    cache = {f"u{i}": {"files": [{"path": "x"}] * 30, "digests": []} for i in range(3000)}
    bounded = _bounded(cache, 2000, 20_000)
    assert len(bounded) == 666 and list(bounded)[-1] == "u2999"  # newest kept
    assert len(_bounded({f"d{i}": "text" for i in range(5000)}, 1000)) == 1000
    assert MAX_FILES_KEPT == 1000
