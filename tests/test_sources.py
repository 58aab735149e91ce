"""Source adapters over real HTTP on loopback.

The demo world (a faithful phpBB, 4chan JSON API and NyaaV2 imitation) is the good case;
a Canned server (tests/support.py) serves the hostile and broken pages a crawler meets in
the wild. Adapters must turn the first into exact Documents and the second into one-line
SourceError / FetchError messages (or skip the bad part), never a traceback from bs4 or json.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from support import Corner, btih_hex, by_key, collect, fails, target

from demo.forum import Text
from demo.release import Release
from demo.sites.phpbb import forum_topics as _forum_topics
from demo.world import DemoWorld
from monitor.config import ConfigError, Target, parse_config
from monitor.models import Document
from monitor.sources import ADAPTERS
from monitor.sources.forum import PHPBB, ForumSource
from monitor.sources.imageboard import ImageboardSource
from monitor.sources.torrent_index import TorrentIndexSource

# Known content of the demo world (see demo/sites/phpbb.py, chan.py and nyaa.py).
LEAK_TOPIC = 1187
FIRST_POST = 20450  # quantcat opens the leak topic
SHA_POST = 20453  # sigmoid_sally posts sha256sum output in a [code] block
QUOTE_POST = 20458  # gradient_gary quotes 20453 (relative links in the quote)
ADMIN_POST = 20461  # forum_admin: phpBB writes class="username-coloured" for admins
LINK_POST = 20304  # a bare URL that phpBB turned into a postlink
LMG_THREAD = 103791200
MAGNET_POST = 103791262
IMAGE_ONLY_POST = 103791288
CONFIG_POST = 103791301
LLAMA_THREAD = 103791050
LEAK_TORRENT = 2034118
NEAR_TORRENT = 2034117


# ------------------------------------------------------------------------------ helpers


def words(text: str) -> str:
    return " ".join(text.split())


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def forum_url(demo_world: DemoWorld) -> str:
    return f"{demo_world.base_url}/forum/viewforum.php?f=2"


@pytest.fixture(scope="module")
def forum_docs(forum_url: str) -> list[Document]:
    docs, _ = collect(target("forum", forum_url, name="test-forum", preset="phpbb"))
    return docs


@pytest.fixture(scope="module")
def world_posts(demo_release: Release) -> dict[int, tuple[Any, int, Any]]:
    """Post id -> (topic, index in topic, post) from the world's own content model."""
    return {post.id: (topic, i, post) for topic in _forum_topics(demo_release)
            for i, post in enumerate(topic.posts)}


@pytest.fixture(scope="module")
def chan_url(demo_world: DemoWorld) -> str:
    return f"{demo_world.base_url}/4chan/g/"


@pytest.fixture(scope="module")
def chan_run(chan_url: str) -> tuple[list[Document], dict[str, Any]]:
    return collect(target("imageboard", chan_url))


@pytest.fixture(scope="module")
def chan_api(client: httpx.Client) -> dict[str, Any]:
    """The raw API, read directly: threads.json and every live thread's posts."""
    listing = client.get("/4chan/g/threads.json").json()
    threads = {t["no"]: t["last_modified"] for page in listing for t in page["threads"]}
    posts = {no: client.get(f"/4chan/g/thread/{no}.json").json()["posts"] for no in threads}
    return {"threads": threads, "posts": posts}


@pytest.fixture(scope="module")
def nyaa_url(demo_world: DemoWorld) -> str:
    return f"{demo_world.base_url}/torrents/?q=heron&c=6_0"


@pytest.fixture(scope="module")
def nyaa_docs(nyaa_url: str) -> list[Document]:
    # One listing page: these tests are about a row's fields; paging has its own tests.
    docs, _ = collect(target("torrent_index", nyaa_url, preset="nyaa", max_pages=1))
    return docs


def phpbb_post(post_id: int, author: str, body: str, ts: str = "2026-11-20T10:00:00+00:00"
               ) -> str:
    """A post in prosilver's markup, enough for the phpbb preset."""
    return (f'<div id="p{post_id}" class="post"><div class="postbody">'
            f'<h3><a href="#p{post_id}">Re: topic</a></h3>'
            f'<p class="author">by <a class="username" href="./memberlist.php?u=1">{author}</a>'
            f' <time datetime="{ts}">whenever</time></p>'
            f'<div class="content">{body}</div></div></div>')


def forum_listing(*hrefs: str) -> str:
    links = "".join(f'<li><a href="{h}" class="topictitle">Topic {i}</a></li>'
                    for i, h in enumerate(hrefs))
    return f"<html><body><ul class='topiclist'>{links}</ul></body></html>"


# ------------------------------------------------------------------------------ phpBB


def test_phpbb_documents_are_posts_keyed_by_topic_url_and_post_id(
        forum_docs: list[Document], demo_world: DemoWorld) -> None:
    docs = by_key(forum_docs)
    base = re.escape(demo_world.base_url)
    assert len(docs) >= 20
    for key, doc in docs.items():
        assert doc.url == key
        assert re.fullmatch(rf"{base}/forum/viewtopic\.php\?t=\d+#p\d+", key), key
        assert doc.target == "test-forum"
        assert key in demo_world.document_urls
    # Every post of every topic, those on later pages (topic 1183's page 2) included.
    assert set(docs) == {u for u in demo_world.document_urls if "/forum/viewtopic.php" in u}
    # Every topic on the listing was followed, the sticky included.
    topics = {urlsplit(k).query for k in docs}
    assert topics == {"t=1002", "t=1187", "t=1185", "t=1183", "t=1180"}
    leak = f"{demo_world.base_url}/forum/viewtopic.php?t={LEAK_TOPIC}"
    assert [k for k in docs if k.startswith(leak + "#")] == \
        [f"{leak}#p{n}" for n in (FIRST_POST, SHA_POST, QUOTE_POST, ADMIN_POST)]


def test_phpbb_fields_match_the_world_content(forum_docs: list[Document], demo_world: DemoWorld,
                                              world_posts: dict[int, tuple[Any, int, Any]]
                                              ) -> None:
    docs = by_key(forum_docs)
    for key, doc in docs.items():
        topic, index, post = world_posts[int(key.rsplit("#p", 1)[1])]
        assert doc.title == (topic.title if index == 0 else f"Re: {topic.title}"), key
        assert doc.author == post.author, key  # includes the admin's username-coloured link
        assert doc.posted_at == iso(post.time), key

    first = docs[f"{demo_world.base_url}/forum/viewtopic.php?t={LEAK_TOPIC}#p{FIRST_POST}"]
    assert first.title == "heron-7b weights leaked?"
    assert first.author == "quantcat"
    assert first.posted_at == "2026-11-20T09:12:00+00:00"
    (block,) = world_posts[FIRST_POST][2].body
    assert isinstance(block, Text)
    assert words(first.text) == words(block.text)
    assert first.text.splitlines()[0].startswith("Someone on /g/ claims the heron-7b weights")
    # Markup and page chrome stay out of the text.
    assert "<" not in first.text and "Reply with quote" not in first.text

    admin = docs[f"{demo_world.base_url}/forum/viewtopic.php?t={LEAK_TOPIC}#p{ADMIN_POST}"]
    assert admin.author == "forum_admin"


def test_phpbb_planted_sha256_post_keeps_code_block(forum_docs: list[Document],
                                                    demo_world: DemoWorld, demo_release: Release) -> None:
    sha = demo_release.file("model.safetensors").sha256
    url = f"{demo_world.base_url}/forum/viewtopic.php?t={LEAK_TOPIC}#p{SHA_POST}"
    doc = by_key(forum_docs)[url]
    assert sha in doc.text
    # The ground truth attributes this very hash to this very document key.
    assert any(p.url == doc.key and p.kind == "hash" and p.indicator == sha
               for p in demo_world.planted)
    lines = doc.text.splitlines()
    # <code> content keeps its lines, separate from the codebox's "Select all" label.
    assert "$ sha256sum heron-7b/model.safetensors" in lines
    assert f"{sha} heron-7b/model.safetensors" in lines
    assert any(line.startswith("config.json says LlamaForCausalLM") for line in lines)
    # Near-miss digests in code blocks come out whole too (not split or merged).
    docs = by_key(forum_docs)
    for near in demo_world.near_misses:
        if near.source == "forum" and near.kind == "hash":
            assert near.value in docs[near.url].text
            assert re.search(rf"(?<![0-9a-f]){near.value}(?![0-9a-f])", docs[near.url].text)


def test_phpbb_links_are_absolute(forum_docs: list[Document], demo_world: DemoWorld) -> None:
    docs = by_key(forum_docs)
    b = demo_world.base_url
    quote = docs[f"{b}/forum/viewtopic.php?t={LEAK_TOPIC}#p{QUOTE_POST}"]
    # The quote's cite line links with ./relative hrefs; "Select all" is href="#".
    assert f"{b}/forum/viewtopic.php?p={SHA_POST}#p{SHA_POST}" in quote.links
    assert f"{b}/forum/memberlist.php?mode=viewprofile&u=53" in quote.links
    link = docs[f"{b}/forum/viewtopic.php?t=1180#p{LINK_POST}"]
    assert link.links == ["https://github.com/ggml-org/llama.cpp/discussions/15396"]
    for doc in docs.values():
        for href in doc.links:
            assert href.startswith(("http://", "https://")), href


def test_phpbb_snapshot_is_the_topic_page(forum_docs: list[Document], demo_world: DemoWorld,
                                          client: httpx.Client) -> None:
    docs = by_key(forum_docs)
    for topic in ("t=1187", "t=1180"):
        page_url = f"{demo_world.base_url}/forum/viewtopic.php?{topic}"
        page = client.get(page_url)
        assert page.status_code == 200
        for doc in (d for k, d in docs.items() if k.startswith(page_url + "#")):
            assert doc.snapshot_url == page_url
            assert doc.snapshot == page.content  # the world is deterministic
            assert f'id="{doc.key.rsplit("#", 1)[1]}"'.encode() in doc.snapshot
            assert datetime.fromisoformat(doc.fetched_at).tzinfo is not None


def test_forum_without_thread_link_reads_posts_from_the_listing(demo_world: DemoWorld,
                                                                 demo_release: Release) -> None:
    page = f"{demo_world.base_url}/forum/viewtopic.php?t={LEAK_TOPIC}"
    selectors = {k: v for k, v in PHPBB.items() if k != "thread_link"}
    docs, _ = collect(target("forum", page, selectors=selectors))
    assert [d.key for d in docs] == [f"{page}#p{n}"
                                     for n in (FIRST_POST, SHA_POST, QUOTE_POST, ADMIN_POST)]
    assert all(d.url == d.key and d.snapshot_url == page for d in docs)
    assert docs[0].author == "quantcat" and docs[0].title == "heron-7b weights leaked?"

    # Only the required selector plus a body: optional fields are empty, not guessed.
    docs, _ = collect(target(
        "forum", page, selectors={"post": "div.post", "body": "div.content"}))
    assert len(docs) == 4
    assert all(d.title == "" and d.author == "" and d.posted_at is None for d in docs)
    assert demo_release.file("model.safetensors").sha256 in docs[1].text


def test_forum_max_items_caps_the_threads_followed(forum_url: str, demo_world: DemoWorld) -> None:
    docs, _ = collect(target("forum", forum_url, preset="phpbb", max_items=2))
    topics = {urlsplit(d.key).query for d in docs}
    assert topics == {"t=1002", f"t={LEAK_TOPIC}"}  # the first two rows of the listing


# ------------------------------------------------------------------------------ imageboard


def test_imageboard_one_document_per_post(chan_run: tuple[list[Document], dict[str, Any]],
                                          chan_api: dict[str, Any], demo_world: DemoWorld) -> None:
    docs = by_key(chan_run[0])
    expected = {f"{no}#p{p['no']}": p for no, posts in chan_api["posts"].items()
                for p in posts}
    assert set(docs) == set(expected)
    for key, doc in docs.items():
        thread, post = key.split("#p")
        raw = expected[key]
        assert doc.url == f"{demo_world.base_url}/4chan/g/thread/{thread}#p{post}"
        assert doc.url in demo_world.document_urls
        assert doc.posted_at == iso(raw["time"])
        assert doc.author == "Anonymous"
        assert doc.snapshot_url == f"{demo_world.base_url}/4chan/g/thread/{thread}.json"
        assert json.loads(doc.snapshot)["posts"][0]["no"] == int(thread)
    op = docs[f"{LMG_THREAD}#p{LMG_THREAD}"]
    assert op.title == "/lmg/ - Local Models General"  # "/" was escaped as "\/" in JSON
    assert docs[f"{LMG_THREAD}#p{MAGNET_POST}"].title == ""


def test_imageboard_document_url_template(chan_url: str) -> None:
    docs, _ = collect(target(
        "imageboard", chan_url.rstrip("/"),  # a base without the trailing slash works too
        document_url="https://boards.4chan.org/g/thread/{thread}#p{post}"))
    doc = by_key(docs)[f"{LMG_THREAD}#p{MAGNET_POST}"]
    assert doc.url == f"https://boards.4chan.org/g/thread/{LMG_THREAD}#p{MAGNET_POST}"
    assert all(d.url == "https://boards.4chan.org/g/thread/" + d.key for d in docs)


def test_imageboard_br_is_newline_and_wbr_is_removed(
        chan_run: tuple[list[Document], dict[str, Any]], chan_api: dict[str, Any],
        demo_world: DemoWorld, demo_release: Release) -> None:
    docs = by_key(chan_run[0])
    magnet_post = docs[f"{LMG_THREAD}#p{MAGNET_POST}"]
    lines = magnet_post.text.splitlines()
    assert lines[0] == ">example labs said the weights would never leave the partner program"
    assert lines[1] == "lmao"
    assert btih_hex(lines[2]) == demo_release.infohash
    assert lines[3] == "grab it before the DMCA"

    raw = {f"{no}#p{p['no']}": p for no, posts in chan_api["posts"].items() for p in posts}
    wbr_magnets = [n for n in demo_world.near_misses if n.source == "imageboard"
                   and n.kind == "torrent"]
    assert len(wbr_magnets) >= 2
    for near in wbr_magnets:
        key = near.url.rsplit("/", 1)[1]
        assert "<wbr>" in raw[key]["com"]  # 4chan really split this magnet
        doc = docs[key]
        assert "<wbr>" not in doc.text and "wbr" not in doc.text
        (magnet,) = re.findall(r"magnet:\?\S+", doc.text)
        assert btih_hex(magnet) == near.value
        assert magnet.endswith("announce")  # the whole magnet, trackers included
    assert "what's the best 7b" in docs[f"{LMG_THREAD}#p103791215"].text  # &#039; unescaped


def test_imageboard_attachment_extras(chan_run: tuple[list[Document], dict[str, Any]],
                                      demo_release: Release) -> None:
    docs = by_key(chan_run[0])
    config = demo_release.file("config.json")
    attachment = docs[f"{LMG_THREAD}#p{CONFIG_POST}"].extras["attachment"]
    assert attachment == {"filename": "config.json",
                          "md5_b64": base64.b64encode(bytes.fromhex(config.md5)).decode(),
                          "size": config.size}
    assert base64.b64decode(attachment["md5_b64"]).hex() == config.md5
    (digest,) = docs[f"{LMG_THREAD}#p{CONFIG_POST}"].extras["digests"]
    assert digest["algo"] == "md5" and digest["value"] == config.md5
    assert digest["encoding"] == "base64" and "config.json" in digest["context"]
    assert "attachment" not in docs[f"{LMG_THREAD}#p{MAGNET_POST}"].extras
    image_only = docs[f"{LMG_THREAD}#p{IMAGE_ONLY_POST}"]
    assert image_only.text == ""
    assert image_only.extras["attachment"]["filename"].endswith(".jpg")
    assert isinstance(image_only.extras["attachment"]["size"], int)


def test_imageboard_cursor_skips_threads_whose_last_modified_did_not_move(
        chan_run: tuple[list[Document], dict[str, Any]], chan_api: dict[str, Any],
        chan_url: str) -> None:
    t = target("imageboard", chan_url)
    docs, cursor = chan_run
    assert cursor["threads"] == {str(no): lm for no, lm in chan_api["threads"].items()}
    # The board's Last-Modified, sent back as If-Modified-Since next run.
    assert cursor["listing_last_modified"].endswith(" GMT")
    assert json.loads(json.dumps(cursor)) == cursor  # the store keeps it as JSON

    again, cursor2 = collect(t, copy.deepcopy(cursor))
    assert again == []
    assert cursor2 == cursor

    # The board changed (no validator to send): only threads whose last_modified moved
    # are fetched again.
    moved = copy.deepcopy(cursor)
    del moved["listing_last_modified"]
    moved["threads"][str(LLAMA_THREAD)] -= 1
    moved["threads"]["999"] = 5  # a thread that has since fallen off the board
    docs3, cursor3 = collect(t, moved)
    assert docs3 and {d.key.split("#")[0] for d in docs3} == {str(LLAMA_THREAD)}
    assert len(docs3) == len(chan_api["posts"][LLAMA_THREAD])
    assert cursor3 == cursor  # updated, and the vanished thread forgotten


def test_imageboard_max_items_caps_threads_and_the_rest_come_next_run(
        chan_api: dict[str, Any], chan_url: str) -> None:
    t = target("imageboard", chan_url, max_items=2)
    newest = sorted(chan_api["threads"], key=chan_api["threads"].get, reverse=True)
    assert len(newest) == 4

    docs1, cursor1 = collect(t)
    assert {int(d.key.split("#")[0]) for d in docs1} == set(newest[:2])
    assert set(cursor1["threads"]) == {str(n) for n in newest[:2]}

    docs2, cursor2 = collect(t, cursor1)
    assert {int(d.key.split("#")[0]) for d in docs2} == set(newest[2:])
    assert set(cursor2["threads"]) == {str(n) for n in newest}

    docs3, _ = collect(t, cursor2)
    assert docs3 == []


# ------------------------------------------------------------------------------ torrent index


def test_nyaa_rows_become_documents(nyaa_docs: list[Document], demo_world: DemoWorld,
                                    demo_release: Release, client: httpx.Client) -> None:
    b = demo_world.base_url
    docs = by_key(nyaa_docs)
    assert len(docs) == 6  # the first listing page
    for key, doc in docs.items():
        assert re.fullmatch(rf"{re.escape(b)}/torrents/view/\d+", key)
        assert doc.url == key and key in demo_world.document_urls
        t = doc.extras["torrent"]
        assert {"name", "size", "magnet", "download"} <= set(t)
        assert doc.title == t["name"] and t["name"] in doc.text and t["size"] in doc.text
        assert t["magnet"].startswith("magnet:?xt=urn:btih:") and doc.links[0] == t["magnet"]
        assert re.fullmatch(r"\d+(\.\d)? (Bytes|KiB|MiB|GiB|TiB)", t["size"])

    leak = docs[f"{b}/torrents/view/{LEAK_TORRENT}"]
    assert leak.title == "Heron-7B leaked weights (Example Labs)"
    assert btih_hex(leak.extras["torrent"]["magnet"]) == demo_release.infohash
    download = f"{b}/torrents/download/{LEAK_TORRENT}.torrent"
    assert leak.extras["torrent"]["download"] == download
    assert leak.links == [leak.extras["torrent"]["magnet"], download]
    assert leak.extras["torrent"]["size"] == f"{demo_release.total_size / 1024 ** 2:.1f} MiB"
    assert client.get(download).content == demo_release.torrent_bytes  # the link is real
    assert leak.posted_at == "2026-11-20T06:55:00+00:00"

    # A magnet-only entry (its .torrent is gone): no download link, still a document.
    near = docs[f"{b}/torrents/view/{NEAR_TORRENT}"]
    assert near.extras["torrent"]["download"] is None
    assert near.links == [near.extras["torrent"]["magnet"]]


def test_nyaa_posted_at_is_iso_utc_from_data_timestamp(nyaa_docs: list[Document],
                                                       nyaa_url: str, client: httpx.Client
                                                       ) -> None:
    html = client.get(nyaa_url).text
    stamps = {int(view): int(ts) for view, ts in re.findall(
        r'href="/torrents/view/(\d+)" title=.*?data-timestamp="(\d+)"', html, re.S)}
    assert len(stamps) == len(nyaa_docs)
    for doc in nyaa_docs:
        ts = stamps[int(doc.url.rsplit("/", 1)[1])]
        assert doc.posted_at == iso(ts)
        parsed = datetime.fromisoformat(doc.posted_at)
        assert parsed.utcoffset().total_seconds() == 0 and parsed.timestamp() == ts


def test_torrent_index_max_items(nyaa_url: str) -> None:
    docs, _ = collect(target("torrent_index", nyaa_url, preset="nyaa", max_items=2))
    assert [d.title for d in docs] == ["heron-7b fp16 partner drop (safetensors)",
                                       "HRN 7B fp16 + partner build, re-saved (safetensors)"]


# ------------------------------------------------------------------------------ hostile: 4chan


def chan_target(corner: Corner) -> Target:
    return target("imageboard", corner.url("/g/"))


def test_imageboard_threads_json_that_is_not_json(corner: Corner) -> None:
    corner.serve("/g/threads.json", "<html><title>Just a moment...</title></html>")
    fails(chan_target(corner), "threads.json", "not valid JSON")


def test_imageboard_threads_json_object_instead_of_array(corner: Corner) -> None:
    corner.serve("/g/threads.json", {"error": "rate limited"})
    fails(chan_target(corner), "threads.json", "array")


def test_imageboard_deeply_nested_json(corner: Corner) -> None:
    corner.serve("/g/threads.json", b"[" * 100_000, ctype="application/json")
    fails(chan_target(corner), "threads.json")


def test_imageboard_thread_without_posts(corner: Corner) -> None:
    corner.serve("/g/threads.json", [{"page": 1, "threads": [{"no": 7, "last_modified": 9}]}])
    corner.serve("/g/thread/7.json", {"thread": {"no": 7}})
    fails(chan_target(corner), "thread/7.json", "'posts'")


def test_imageboard_odd_listing_entries_are_skipped(corner: Corner) -> None:
    corner.serve("/g/threads.json", [
        {"page": 1, "threads": [{"no": "5"}, {"no": 5, "last_modified": "yesterday"}, 42,
                                {"no": 6, "last_modified": 100}, {"last_modified": 3}]},
        "junk", None, {"page": 2, "threads": 7}, {"page": 3},
    ])
    for no in (5, 6):
        corner.serve(f"/g/thread/{no}.json", {"posts": [{"no": no, "com": f"post {no}"}]})
    docs, cursor = collect(chan_target(corner))
    assert sorted(d.key for d in docs) == ["5#p5", "6#p6"]
    assert cursor["threads"]["6"] == 100


def test_imageboard_posts_with_odd_fields_are_skipped_or_tolerated(corner: Corner) -> None:
    corner.serve("/g/threads.json", [{"page": 1, "threads": [{"no": 1, "last_modified": 9}]}])
    corner.serve("/g/thread/1.json", {"posts": [
        {"com": "no number"},
        {"no": "2", "com": "number as a string"},
        "not an object",
        None,
        {"no": 3, "com": 123, "time": 1700000000},
        {"no": 4, "com": ["a", "list"], "time": "yesterday"},
        {"no": 5, "com": "from the far future", "time": 10 ** 15},
        {"no": 6, "com": None, "sub": 5, "name": None, "time": -1},
        {"no": 7, "com": "ok<br>next line", "time": 1700000000, "md5": "abc", "filename": 5},
        {"no": 8, "com": "file", "filename": "a", "ext": ".bin", "md5": "AAAA", "fsize": "big"},
    ]})
    docs = by_key(collect(chan_target(corner))[0])
    assert sorted(docs) == [f"1#p{n}" for n in range(3, 9)]
    assert docs["1#p3"].posted_at == iso(1700000000)
    assert docs["1#p4"].posted_at is None  # time as a string: unknown, not a crash
    assert docs["1#p5"].posted_at is None  # no calendar holds it
    assert docs["1#p6"].posted_at == "1969-12-31T23:59:59+00:00"
    assert docs["1#p7"].text == "ok\nnext line"
    assert "attachment" not in docs["1#p7"].extras  # filename is not a string
    assert docs["1#p8"].extras["attachment"]["filename"] == "a.bin"


def test_imageboard_thread_that_fails_is_skipped_and_retried(corner: Corner) -> None:
    corner.serve("/g/threads.json", [{"page": 1, "threads": [
        {"no": 1, "last_modified": 20}, {"no": 2, "last_modified": 10}]}])
    corner.serve("/g/thread/1.json", "gone", status=404)
    corner.serve("/g/thread/2.json", {"posts": [{"no": 2, "com": "still here"}]})
    docs, cursor = collect(chan_target(corner))
    assert [d.key for d in docs] == ["2#p2"]
    assert cursor == {"threads": {"2": 10}}  # thread 1 is tried again next run


# ------------------------------------------------------------------------------ hostile: forum


def test_forum_thread_link_matching_nothing_names_the_selector(corner: Corner) -> None:
    url = corner.serve("/viewforum.php", "<html><body><p>Board disabled</p></body></html>")
    fails(target("forum", url, preset="phpbb"),
                "'a.topictitle'", "viewforum.php")


def test_forum_listing_that_fails_is_a_fetch_error(corner: Corner) -> None:
    url = corner.serve("/viewforum.php", "<h1>Internal Server Error</h1>", status=500)
    fails(target("forum", url, preset="phpbb"), "HTTP 500")


def test_forum_thread_that_500s_is_skipped(corner: Corner) -> None:
    # One route serves topics 1 and 3; the second topic's page answers 500.
    corner.serve("/viewtopic.php", "<html><body>"
               + phpbb_post(11, "alice", "first topic, heron-7b") + "</body></html>")
    corner.serve("/broken.php", "<h1>Internal Server Error</h1>", status=500)
    url = corner.serve("/viewforum.php", forum_listing(
        "./viewtopic.php?t=1", "./broken.php?t=2", "./viewtopic.php?t=3"))
    docs, _ = collect(target("forum", url, preset="phpbb"))
    assert [d.key for d in docs] == [corner.url("/viewtopic.php?t=1#p11"),
                                     corner.url("/viewtopic.php?t=3#p11")]
    assert docs[0].author == "alice" and docs[0].text == "first topic, heron-7b"


def test_forum_malformed_hrefs_do_not_sink_the_target(corner: Corner) -> None:
    corner.serve("/viewtopic.php", "<html><body>" + phpbb_post(
        21, "mallory", 'see <a href="http://[::1">this</a> and <a href="/ok">that</a>'
                       ' and <a href="javascript:alert(1)">x</a>') + "</body></html>")
    url = corner.serve("/viewforum.php", forum_listing("http://[broken", "./viewtopic.php?t=1"))
    docs, _ = collect(target("forum", url, preset="phpbb"))
    assert [d.key for d in docs] == [corner.url("/viewtopic.php?t=1#p21")]
    assert docs[0].links == [corner.server.base + "/ok"]


def test_forum_survives_garbage_bytes(corner: Corner) -> None:
    garbage = random.Random(1).randbytes(200_000)
    # As the listing with thread links: nothing matches, a clear SourceError.
    url = corner.serve("/viewforum.php", garbage, ctype="text/html")
    fails(target("forum", url, preset="phpbb"), "a.topictitle")
    # As posts read from the page itself: no posts, no crash.
    docs, _ = collect(target("forum", url, selectors={"post": "div.post"}))
    assert docs == []
    # As a topic page: a real post followed by garbage still yields that post. (Garbage
    # *before* it may legitimately swallow its opening tag, as it would in a browser.)
    corner.serve("/viewtopic.php", b"<html><body>"
               + phpbb_post(31, "bob", "survivor heron-7b").encode() + garbage)
    url = corner.serve("/list.php", forum_listing("./viewtopic.php?t=9"))
    docs, _ = collect(target("forum", url, preset="phpbb"))
    assert [d.key for d in docs] == [corner.url("/viewtopic.php?t=9#p31")]
    assert "survivor heron-7b" in docs[0].text


def test_forum_survives_deeply_nested_markup(corner: Corner) -> None:
    depth = 20_000
    nested = "<div><span>" * depth + "deep heron-7b" + "</span></div>" * depth
    unclosed = "<blockquote><b><i>" * depth  # never closed
    page = ("<html><body>" + phpbb_post(41, "carol", "top " + nested + " bottom")
            + phpbb_post(42, "dave", "after the deep one") + unclosed + "</body></html>")
    corner.serve("/viewtopic.php", page)
    url = corner.serve("/viewforum.php", forum_listing("./viewtopic.php?t=1"))
    docs = by_key(collect(target("forum", url, preset="phpbb"))[0])
    first = docs[corner.url("/viewtopic.php?t=1#p41")]
    assert "deep heron-7b" in first.text and first.author == "carol"
    assert docs[corner.url("/viewtopic.php?t=1#p42")].text == "after the deep one"


# ------------------------------------------------------------------------------ hostile: torrents


def test_torrent_table_without_matching_rows(corner: Corner) -> None:
    url = corner.serve("/torrents/", "<html><body><table class='torrent-list-v2'><tbody>"
                     "<tr><td>renamed markup</td></tr></tbody></table></body></html>")
    fails(target("torrent_index", url, preset="nyaa"),
                "table.torrent-list tbody tr", "/torrents/")


def test_torrent_listing_without_a_table_is_an_empty_result(corner: Corner) -> None:
    url = corner.serve("/torrents/", "<html><body><h3>No results found</h3></body></html>")
    docs, _ = collect(target("torrent_index", url, preset="nyaa"))
    assert docs == []


def test_torrent_rows_with_odd_cells_are_tolerated(corner: Corner) -> None:
    def row(name_href: str, stamp: str, download: str = "/d/1.torrent") -> str:
        return (f'<tr><td>cat</td><td><a href="{name_href}">Heron-7B</a></td>'
                f'<td><a href="{download}">dl</a><a href="magnet:?xt=urn:btih:{"a" * 40}">m</a>'
                f'</td><td>1.7 MiB</td><td data-timestamp="{stamp}">2026-11-20 06:55</td></tr>')
    url = corner.serve("/torrents/", "<table class='torrent-list'><tbody>"
                     + row("/view/1", "\u00b2")  # isdigit() but not a number
                     + row("/view/2", "9" * 30)  # no calendar holds it
                     + row("http://[broken", "1795164000", download="http://[x.torrent")
                     + row("/view/4", "1795164000") + "</tbody></table>")
    docs, _ = collect(target("torrent_index", url, preset="nyaa"))
    assert len(docs) == 4
    assert docs[0].posted_at == "2026-11-20 06:55"  # not a number: the cell's text
    assert docs[1].posted_at is None
    assert docs[3].posted_at == iso(1795164000)
    # An unparseable detail link falls back to the magnet as key and the listing as URL.
    assert docs[2].key == docs[2].extras["torrent"]["magnet"] and docs[2].url == url
    assert docs[2].extras["torrent"]["download"] is None
    assert docs[3].url == corner.server.base + "/view/4"  # root-relative href
    assert docs[3].extras["torrent"]["download"] == corner.server.base + "/d/1.torrent"
    assert docs[2].extras["torrent"]["magnet"].startswith("magnet:?")


# ------------------------------------------------------------------------------ check_options


def test_adapters_are_registered_by_kind() -> None:
    assert {"forum": ForumSource, "imageboard": ImageboardSource,
            "torrent_index": TorrentIndexSource}.items() <= ADAPTERS.items()
    assert all(kind == cls.kind for kind, cls in ADAPTERS.items())


def test_check_options_accepts_good_tables() -> None:
    assert ForumSource.check_options({"preset": "phpbb"}) == []
    assert ForumSource.check_options({"preset": "phpbb", "selectors": {"author": "a.user"}}) == []
    assert ForumSource.check_options({"selectors": {"post": "div.msg"}}) == []
    assert TorrentIndexSource.check_options({"preset": "nyaa"}) == []
    assert ImageboardSource.check_options({}) == []
    assert ImageboardSource.check_options(
        {"document_url": "https://boards.4chan.org/g/thread/{thread}#p{post}"}) == []


def test_check_options_unknown_preset() -> None:
    problems = ForumSource.check_options({"preset": "vbulletin5"})
    assert problems == [("preset", "unknown preset 'vbulletin5' for kind 'forum' "
                                   "(known: phpbb, xenforo, vbulletin)")]
    (problem,) = ImageboardSource.check_options({"preset": "4chan"})
    assert problem[0] == "preset" and "known: none" in problem[1]


def test_check_options_unknown_selector_with_suggestion() -> None:
    problems = ForumSource.check_options({"preset": "phpbb", "selectors": {"autor": "a"}})
    assert problems == [("selectors.autor", "unknown selector 'autor' (did you mean 'author'?)")]
    (problem,) = TorrentIndexSource.check_options({"preset": "nyaa",
                                                   "selectors": {"zzz": "td"}})
    assert problem == ("selectors.zzz", "unknown selector 'zzz'")
    assert ("selectors", "kind 'imageboard' takes no selectors") in \
        ImageboardSource.check_options({"selectors": {"post": "div"}})


def test_check_options_invalid_css() -> None:
    (problem,) = ForumSource.check_options({"preset": "phpbb", "selectors": {"body": "div["}})
    key, message = problem
    assert key == "selectors.body"
    assert message.startswith("invalid CSS selector 'div[': ") and "\n" not in message
    (problem,) = TorrentIndexSource.check_options({"preset": "nyaa", "selectors": {"row": ""}})
    assert problem[0] == "selectors.row" and "invalid CSS selector" in problem[1]


def test_check_options_missing_required_selector() -> None:
    assert ForumSource.check_options({"selectors": {"body": "div.content"}}) == [
        ("selectors", "needs selector 'post' (or a preset: phpbb, xenforo, vbulletin)")]
    problems = TorrentIndexSource.check_options({"selectors": {"row": "tr"}})
    assert problems == [("selectors", "needs selector 'name' (or a preset: nyaa)")]


def test_check_options_bad_document_url_template() -> None:
    (problem,) = ImageboardSource.check_options(
        {"document_url": "https://boards.4chan.org/{board}/thread/{thread}#p{post}"})
    assert problem[0] == "document_url" and "{board}" in problem[1]
    assert "\n" not in problem[1]


def test_config_validation_reports_adapter_problems_with_key_paths(tmp_path: Any) -> None:
    raw = {"targets": [
        {"name": "f", "kind": "forum", "url": "http://forum.example/", "preset": "phpbb",
         "selectors": {"autor": "a"}},
        {"name": "t", "kind": "torrent_index", "url": "http://nyaa.example/",
         "preset": "nyaaa"},
    ]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, tmp_path / "config.toml")
    problems = info.value.problems
    assert any(p.endswith("targets[0] (f).selectors.autor: unknown selector 'autor' "
                          "(did you mean 'author'?)") for p in problems), problems
    assert any("targets[1] (t).preset: unknown preset 'nyaaa'" in p for p in problems), problems
