"""HTML forums: phpBB, XenForo 2 and vBulletin 4 presets, custom selectors, listing and
thread pagination, the per-thread cursor, and end-to-end crawls of the demo world's boards.

The demo world's XenForo and vBulletin boards are the good case (demo/sites/); a
Canned server (tests/support.py) serves hand-made boards whose pages a test can change
between runs, and records the requests it gets.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import support
from bs4 import BeautifulSoup
from support import Canned, by_key, crawl, expected, found, registered_store, site_of, target

from demo.release import Release
from demo.sites import vbulletin as vb
from demo.sites import xenforo as xf
from demo.world import DemoWorld
from monitor.config import Target, parse_config
from monitor.models import Document
from monitor.sources import SourceError
from monitor.sources.forum import (
    CURSOR_THREADS,
    PHPBB,
    VBULLETIN,
    XENFORO,
    ForumSource,
    iso_time,
    split_attr,
    thread_url,
)

LEAK_THREAD = 2291  # XenForo: the magnet is on page 2
MAGNET_POST = 18827
EDITED_POST = 18829
SUMS_THREAD = 8812  # vBulletin: md5 on page 1, sha1 on page 2
MD5_POST, SHA1_POST = 61201, 61230
NDA_THREAD = 8790  # vBulletin: on the forum's second listing page
HERON_TOPIC = 1183  # phpBB: 12 posts, 10 a page


# ------------------------------------------------------------------------------ helpers


def run(t: Target, cursor: dict[str, Any] | None = None
        ) -> tuple[list[Document], dict[str, Any], list[str]]:
    """One adapter run: documents, the cursor it leaves, and the URLs it requested; every
    run here also checks that keys are unique and that the cursor survives JSON."""
    docs, cur, urls = support.run(t, cursor)
    by_key(docs)  # asserts the keys are unique within the run
    # The cursor is stored as JSON between runs.
    assert json.loads(json.dumps(cur)) == cur
    return docs, cur, urls


def source_docs(world: DemoWorld, source: str) -> list[str]:
    return [d.url for d in world.documents if d.source == source]


@pytest.fixture
def board(serve: Callable[..., Canned]) -> Canned:
    # Hand-made boards page by query string (t.php?t=1&start=10): routes match it exactly.
    return serve(match_query=True)


@pytest.fixture
def other_host(serve: Callable[..., Canned]) -> Canned:
    return serve(match_query=True)


def post(pid: int, author: str, body: str, ts: str = "2026-11-20T10:00:00+00:00") -> str:
    """A post in prosilver's markup, enough for the phpbb preset."""
    return (f'<div id="p{pid}" class="post"><div class="postbody">'
            f'<h3><a href="#p{pid}">Re: topic</a></h3>'
            f'<p class="author">by <a class="username" href="./memberlist.php?u=1">{author}</a>'
            f' <time datetime="{ts}">whenever</time></p>'
            f'<div class="content">{body}</div></div></div>')


def topic_page(*posts: str, next_href: str | None = None) -> str:
    nxt = f'<a rel="next" href="{next_href}">Next</a>' if next_href else ""
    return f"<html><body><div class='pagination'>{nxt}</div>{''.join(posts)}</body></html>"


def listing(*hrefs: str, next_href: str | None = None) -> str:
    links = "".join(f'<li><a href="{h}" class="topictitle">Topic {i}</a></li>'
                    for i, h in enumerate(hrefs))
    nxt = f'<a rel="next" href="{next_href}">Next</a>' if next_href else ""
    return f"<html><body><ul class='topiclist'>{links}</ul>{nxt}</body></html>"


def phpbb(url: str, **kw: Any) -> Target:
    return target("forum", url, name="board", preset="phpbb", **kw)


# ------------------------------------------------------------------------------ demo: XenForo


@pytest.fixture(scope="module")
def xf_run(demo_world: DemoWorld) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(target("forum", demo_world.urls["xenforo"], name="xf", preset="xenforo"))


def test_xenforo_documents_are_every_post_keyed_by_thread_url_and_post_anchor(
        xf_run: tuple, demo_world: DemoWorld) -> None:
    docs = by_key(xf_run[0])
    assert sorted(docs) == sorted(source_docs(demo_world, "xenforo"))
    root = re.escape(f"{demo_world.base_url}/xenforo")
    for key, doc in docs.items():
        assert doc.url == key
        assert re.fullmatch(rf"{root}/threads/[a-z0-9-]+\.\d+/#post-\d+", key), key
        assert doc.target == "xf"


def test_xenforo_fields_match_the_world(xf_run: tuple, demo_world: DemoWorld,
                                        demo_release: Release) -> None:
    site = site_of(demo_world, xf.XenForoSite)
    docs = by_key(xf_run[0])
    for t in site.threads:
        for i, p in enumerate(t.posts):
            doc = docs[f"{site.root}/threads/{t.slug}.{t.id}/#post-{p.id}"]
            assert doc.author == p.author  # data-author
            # time.u-dt's datetime (+0000) as UTC ISO; "Last edited" is not the post time.
            assert doc.posted_at == iso_time(str(p.time))
            assert doc.title == (site.title_text(t) if i == 0 else "")
    first = docs[f"{site.root}/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/#post-18801"]
    assert first.title == "Discussion heron-7b: leak confirmed?"
    assert first.posted_at == "2026-11-20T07:40:00+00:00"
    assert first.text.startswith("Example Labs' new model is apparently out in the wild.")
    edited = docs[f"{site.root}/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/#post-{EDITED_POST}"]
    assert edited.posted_at == "2026-11-20T10:35:00+00:00"
    assert "Last edited" not in edited.text
    # The body is the message, not the signature under it.
    for doc in docs.values():
        assert "riser cables" not in doc.text, doc.key
    quoting = docs[f"{site.root}/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/#post-18810"]
    assert quoting.text.splitlines()[0] == "gguf_gremlin said:"
    assert "Not touching it until someone posts hashes." in quoting.text


def test_xenforo_pagination_reaches_page_2(xf_run: tuple, demo_world: DemoWorld,
                                           demo_release: Release) -> None:
    docs, cursor, urls = xf_run
    thread = f"{demo_world.base_url}/xenforo/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/"
    magnet = by_key(docs)[f"{thread}#post-{MAGNET_POST}"]  # keyed by the thread, not page 2
    assert demo_release.magnet in magnet.text
    assert magnet.snapshot_url == thread + "page-2"
    assert magnet.author == "seedbox_steve"
    assert thread + "page-2" in urls
    assert cursor["threads"][thread] == thread + "page-2"


# ------------------------------------------------------------------------------ demo: vBulletin


@pytest.fixture(scope="module")
def vb_run(demo_world: DemoWorld) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(target("forum", demo_world.urls["vbulletin"], name="vb", preset="vbulletin"))


def test_vbulletin_documents_are_every_post_keyed_by_thread_url_and_post_id(
        vb_run: tuple, demo_world: DemoWorld) -> None:
    docs = by_key(vb_run[0])
    assert sorted(docs) == sorted(source_docs(demo_world, "vbulletin"))
    root = re.escape(f"{demo_world.base_url}/vbulletin")
    for key in docs:
        assert re.fullmatch(rf"{root}/showthread\.php\?t=\d+#post_\d+", key), key


def test_vbulletin_fields_match_the_world(vb_run: tuple, demo_world: DemoWorld,
                                          demo_release: Release) -> None:
    site = site_of(demo_world, vb.VBulletinSite)
    docs = by_key(vb_run[0])
    for t in site.threads:
        for p in t.posts:
            doc = docs[f"{site.root}/showthread.php?t={t.id}#post_{p.id}"]
            assert doc.author == p.author
            assert doc.title == p.title
            # Board time as shown (no zone on the page): kept as text.
            assert doc.posted_at == f"{vb._date(p.time)}, {vb._clock(p.time)}"
            assert "Llamas > alpacas" not in doc.text  # the signature is not the body
    key = f"{site.root}/showthread.php?t={SUMS_THREAD}#post_"
    assert docs[key + str(MD5_POST)].posted_at == "11-20-2026, 08:02 AM"
    assert demo_release.file("model.safetensors").md5 in docs[key + str(MD5_POST)].text
    # Page 2 of the thread, and a thread on the second listing page.
    assert demo_release.file("tokenizer.json").sha1 in docs[key + str(SHA1_POST)].text
    assert docs[key + str(SHA1_POST)].snapshot_url.endswith(f"t={SUMS_THREAD}&page=2")
    assert f"{site.root}/showthread.php?t={NDA_THREAD}#post_60910" in docs
    # ISO-8859-1 pages, with numeric references for what Latin-1 lacks, decode right.
    assert docs[key + "61214"].text == ("Caf\u00e9 question: does it run on a Pi 5? "
                                        "I\u2019m na\u00efve about these things.")
    assert "10 \u20ac says" in docs[key + "61220"].text
    assert "\u00a312 a pair" in docs[f"{site.root}/showthread.php?t=8807#post_61120"].text


# ------------------------------------------------------------------------------ demo: phpBB


def test_phpbb_reads_page_2_of_a_topic(demo_world: DemoWorld) -> None:
    docs, cursor, urls = run(phpbb(demo_world.urls["forum"]))
    topic = f"{demo_world.base_url}/forum/viewtopic.php?t={HERON_TOPIC}"
    keys = sorted(k for k in by_key(docs) if k.startswith(topic + "#"))
    assert len(keys) == 12  # 10 on page 1, 2 on page 2, under one topic URL
    page2 = by_key(docs)[f"{topic}#p20402"]
    assert page2.snapshot_url == topic + "&start=10"
    assert page2.author == "alpaca_annie"
    assert cursor["threads"][topic] == topic + "&start=10"


# ------------------------------------------------------------------------------ limits


def test_max_pages_1_stops_at_the_first_page(demo_world: DemoWorld) -> None:
    xdocs, xcur, _ = run(target("forum", demo_world.urls["xenforo"], name="xf",
                                preset="xenforo", max_pages=1))
    thread = f"{demo_world.base_url}/xenforo/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/"
    assert f"{thread}#post-{MAGNET_POST}" not in by_key(xdocs)
    assert len(xdocs) == len(source_docs(demo_world, "xenforo")) - 2
    # Next run starts where this one stopped: the first page it did not read.
    assert xcur["threads"][thread] == thread + "page-2"

    vdocs, _, vurls = run(target("forum", demo_world.urls["vbulletin"], name="vb",
                                 preset="vbulletin", max_pages=1))
    keys = by_key(vdocs)
    assert not any(f"t={NDA_THREAD}#" in k for k in keys)  # listing page 2 not read
    assert not any(k.endswith(f"#post_{SHA1_POST}") for k in keys)  # thread page 2 not read
    assert not any("page=2" in u for u in vurls)

    pdocs, _, _ = run(phpbb(demo_world.urls["forum"], max_pages=1))
    assert f"{demo_world.base_url}/forum/viewtopic.php?t={HERON_TOPIC}#p20402" \
        not in by_key(pdocs)


def test_a_long_thread_is_read_a_few_pages_per_run_until_caught_up(board: Canned) -> None:
    pages = {n: f"/t.php?t=1&start={10 * (n - 1)}" if n > 1 else "/t.php?t=1"
             for n in range(1, 6)}
    for n, path in pages.items():
        board.serve(path, topic_page(post(100 + n, "ann", f"page {n}"),
                                     next_href=pages.get(n + 1)))
    url = board.serve("/list.php", listing("/t.php?t=1"))
    t = phpbb(url, max_pages=2)
    seen: list[str] = []
    cursor: dict[str, Any] | None = None
    for _ in range(4):
        docs, cursor, _ = run(t, cursor)
        seen += [d.text for d in docs]
    # Runs read pages 1-2, 3-4, 5, then 5 again (the last page, where new replies go).
    assert seen == ["page 1", "page 2", "page 3", "page 4", "page 5", "page 5"]


def test_listing_pages_are_followed_up_to_max_pages(board: Canned) -> None:
    for n in range(1, 5):
        board.serve(f"/t{n}.php", topic_page(post(n, "ann", f"topic {n}")))
        board.serve(f"/list{n}.php", listing(f"/t{n}.php",
                                             next_href=f"/list{n + 1}.php" if n < 4 else None))
    url = board.base + "/list1.php"
    docs, _, _ = run(phpbb(url, max_pages=3))
    assert [d.text for d in docs] == ["topic 1", "topic 2", "topic 3"]
    assert "/list4.php" not in board.paths()
    # Enough threads from the first page: no more listing pages.
    board.requests.clear()
    docs, _, _ = run(phpbb(url, max_pages=3, max_items=1))
    assert [d.text for d in docs] == ["topic 1"]
    assert board.paths() == ["/list1.php", "/t1.php"]


def test_next_links_and_thread_links_to_another_host_are_not_followed(
        board: Canned, other_host: Canned) -> None:
    evil = other_host.serve("/t.php?t=9", topic_page(post(9, "eve", "elsewhere")))
    other_host.serve("/list2.php", listing("/t.php?t=9"))
    board.serve("/t.php?t=1", topic_page(post(1, "ann", "here"), next_href=evil))
    url = board.serve("/list.php", listing("/t.php?t=1", evil,
                                           next_href=other_host.base + "/list2.php"))
    docs, cursor, urls = run(phpbb(url))
    assert [d.text for d in docs] == ["here"]
    assert other_host.paths() == []
    assert all(u.startswith(board.base) for u in urls)
    assert list(cursor["threads"]) == [board.base + "/t.php?t=1"]


def test_pagination_loops_terminate(board: Canned) -> None:
    # Page 1 -> page 2 -> page 1, and a page whose next link is itself.
    board.serve("/t.php?t=1", topic_page(post(1, "ann", "one"), next_href="/t.php?t=1&start=10"))
    board.serve("/t.php?t=1&start=10", topic_page(post(2, "bob", "two"), next_href="/t.php?t=1"))
    board.serve("/t.php?t=2", topic_page(post(3, "cat", "self"), next_href="/t.php?t=2#p3"))
    url = board.serve("/list.php", listing("/t.php?t=1", "/t.php?t=2", next_href="/list.php"))
    docs, _, _ = run(phpbb(url, max_pages=50))
    assert [d.text for d in docs] == ["one", "two", "self"]
    assert board.paths() == ["/list.php", "/t.php?t=1", "/t.php?t=1&start=10", "/t.php?t=2"]


# ------------------------------------------------------------------------------ cursor


def test_second_run_reads_only_the_last_page_of_each_thread(demo_world: DemoWorld) -> None:
    t = target("forum", demo_world.urls["xenforo"], name="xf", preset="xenforo")
    docs1, cursor, urls1 = run(t)
    docs2, cursor2, urls2 = run(t, cursor)
    site = site_of(demo_world, xf.XenForoSite)
    last_pages = {f"{demo_world.base_url}{site.thread_path(th, th.pages)}" for th in site.threads}
    assert urls2 == [demo_world.urls["xenforo"]] + [cursor["threads"][k] for k in cursor["threads"]]
    assert set(urls2[1:]) == last_pages
    assert len(urls2) < len(urls1)
    # What the second run yields: the posts on those last pages, nothing from page 1 of the
    # two-page thread.
    on_last = {f"{site.root}/threads/{th.slug}.{th.id}/#post-{p.id}" for th in site.threads
               for p in th.posts[(th.pages - 1) * xf.MESSAGES_PER_PAGE:]}
    assert {d.key for d in docs2} == on_last
    assert cursor2 == cursor
    # The same documents, byte for byte: the crawler's content hash sees no change.
    first = {d.key: d.content_sha256 for d in docs1}
    assert all(first[d.key] == d.content_sha256 for d in docs2)


def test_phpbb_second_run_reads_page_2_of_the_long_topic_only(demo_world: DemoWorld) -> None:
    t = phpbb(demo_world.urls["forum"])
    _, cursor, _ = run(t)
    docs, _, urls = run(t, cursor)
    topic = f"{demo_world.base_url}/forum/viewtopic.php?t={HERON_TOPIC}"
    assert topic + "&start=10" in urls and topic not in urls
    assert sorted(k for k in by_key(docs) if k.startswith(topic + "#")) == \
        [f"{topic}#p20400", f"{topic}#p20402"]


def test_new_replies_on_the_last_page_and_beyond_are_read(board: Canned) -> None:
    p1, p2, p3 = "/t.php?t=1", "/t.php?t=1&start=10", "/t.php?t=1&start=20"
    board.serve(p1, topic_page(post(1, "ann", "first"), next_href=p2))
    board.serve(p2, topic_page(post(2, "bob", "second")))
    url = board.serve("/list.php", listing(p1))
    _, cursor, _ = run(phpbb(url))
    assert cursor["threads"][board.base + p1] == board.base + p2
    # Replies arrive: one on page 2, and a page 3.
    board.serve(p2, topic_page(post(2, "bob", "second"), post(3, "cat", "third"), next_href=p3))
    board.serve(p3, topic_page(post(4, "dan", "fourth heron-7b")))
    board.requests.clear()
    docs, cursor, _ = run(phpbb(url), cursor)
    assert board.paths() == ["/list.php", p2, p3]
    assert [d.key for d in docs] == [board.base + p1 + f"#p{n}" for n in (2, 3, 4)]
    assert cursor["threads"][board.base + p1] == board.base + p3


def test_a_remembered_page_that_is_gone_means_reading_from_the_first(board: Canned) -> None:
    p1, p2 = "/t.php?t=1", "/t.php?t=1&start=10"
    board.serve(p1, topic_page(post(1, "ann", "first"), next_href=p2))
    board.serve(p2, topic_page(post(2, "bob", "second")))
    url = board.serve("/list.php", listing(p1))
    _, cursor, _ = run(phpbb(url))
    # Posts were deleted: the thread has one page now and the old page 2 is a 404.
    board.serve(p1, topic_page(post(1, "ann", "first")))
    board.routes.pop(p2)
    board.requests.clear()
    docs, cursor, _ = run(phpbb(url), cursor)
    assert board.paths() == ["/list.php", p2, p1]
    assert [d.text for d in docs] == ["first"]
    assert cursor["threads"][board.base + p1] == board.base + p1


def test_keys_do_not_change_when_a_post_moves_to_another_page(board: Canned) -> None:
    p1, p2 = "/t.php?t=1", "/t.php?t=1&start=2"
    board.serve(p1, topic_page(post(1, "ann", "a"), post(2, "bob", "b"), next_href=p2))
    board.serve(p2, topic_page(post(3, "cat", "c heron-7b")))
    url = board.serve("/list.php", listing(p1))
    before = {d.text: d for d in run(phpbb(url))[0]}
    # Post 2 is deleted: post 3 moves from page 2 to page 1.
    board.serve(p1, topic_page(post(1, "ann", "a"), post(3, "cat", "c heron-7b")))
    board.routes.pop(p2)
    after = {d.text: d for d in run(phpbb(url))[0]}
    moved_before, moved_after = before["c heron-7b"], after["c heron-7b"]
    assert moved_before.snapshot_url != moved_after.snapshot_url
    assert moved_before.key == moved_after.key == board.base + p1 + "#p3"
    assert moved_before.content_sha256 == moved_after.content_sha256


def test_the_cursor_is_bounded_and_keeps_the_most_recent_threads() -> None:
    source = ForumSource(target("forum", "http://forum.invalid/", preset="phpbb"), None,
                         {"threads": {"http://forum.invalid/old": "http://forum.invalid/old"},
                          "other": 1})
    for n in range(CURSOR_THREADS + 10):
        source._remember(f"http://forum.invalid/t{n}", f"http://forum.invalid/t{n}&p=2")
    threads = source.cursor["threads"]
    assert len(threads) == CURSOR_THREADS
    assert "http://forum.invalid/old" not in threads
    assert list(threads)[-1] == f"http://forum.invalid/t{CURSOR_THREADS + 9}"
    # Junk in a stored cursor is dropped, not trusted.
    junk = ForumSource(target("forum", "http://forum.invalid/", preset="phpbb"), None,
                       {"threads": {"a": 1, "b": "http://x/", "c": None}})
    assert junk.cursor["threads"] == {"b": "http://x/"}
    assert ForumSource(target("forum", "http://f.invalid/", preset="phpbb"), None,
                       {"threads": ["x"]}).cursor["threads"] == {}


# ------------------------------------------------------------------------------ selectors


SMF_LISTING = """<html><head><base href="/smf/"></head><body>
<table id="messageindex">
<tr><td class="subject"><span id="msg_7"><a href="index.php?topic=7.0">Leak?</a></span></td></tr>
<tr><td class="subject"><span id="msg_8"><a href="index.php?topic=8.0">Herons</a></span></td></tr>
</table>
<div class="pagelinks"><a class="nav_page" href="index.php?board=2.20">next</a></div>
</body></html>"""


def smf_topic(posts: list[tuple[int, str, str, str]], next_href: str | None = None) -> str:
    items = "".join(
        f'<div class="windowbg" data-msg="{mid}"><div class="poster"><h4><a>{who}</a></h4></div>'
        f'<div class="postarea"><div class="keyinfo"><a class="smalltext" title="{when}">'
        f'Today</a></div><div class="post"><div class="inner">{text}</div></div>'
        f'<div class="signature">sig of {who}</div></div></div>' for mid, who, when, text in posts)
    nxt = f'<a class="nav_page" href="{next_href}">&raquo;</a>' if next_href else ""
    return (f'<html><body><h3 id="topic_title">Topic title</h3><div id="forumposts">{items}</div>'
            f'<div class="pagelinks">{nxt}</div></body></html>')


SMF_SELECTORS = {
    "thread_link": "td.subject span[id^=msg_] a",
    "listing_next": "div.pagelinks a.nav_page",
    "post": "div#forumposts > div.windowbg",
    "post_id": "::attr(data-msg)",
    "author": ".poster h4 a",
    "time": ".keyinfo a.smalltext::attr(title)",
    "body": ".post .inner",
    "next_page": "div.pagelinks a.nav_page",
    "thread_title": "h3#topic_title",
}


def test_custom_selectors_with_attributes_and_base_href(board: Canned) -> None:
    board.serve("/smf/index.php?topic=7.0", smf_topic(
        [(70, "ann", "1795164000", "is it real? heron-7b"),
         (71, "bob", "2026-11-20T11:00:00+01:00", "no")], next_href="index.php?topic=7.2"))
    board.serve("/smf/index.php?topic=7.2", smf_topic([(72, "cat", "whenever", "page two")]))
    board.serve("/smf/index.php?topic=8.0", smf_topic([(80, "dan", "", "a grey heron")]))
    board.serve("/smf/index.php?board=2.20", SMF_LISTING.replace("topic=7.0", "topic=9.0")
                .replace('<div class="pagelinks"><a class="nav_page" href="index.php?board=2.20">'
                         "next</a></div>", ""))
    board.serve("/smf/index.php?topic=9.0", smf_topic([(90, "eve", "", "listing page 2")]))
    url = board.serve("/boards/index.php?board=2.0", SMF_LISTING)  # <base> points at /smf/
    t = target("forum", url, name="smf", selectors=SMF_SELECTORS)
    assert ForumSource.check_options({"selectors": SMF_SELECTORS}) == []
    docs = by_key(run(t)[0])
    topic7 = board.base + "/smf/index.php?topic=7.0"
    assert list(docs) == [f"{topic7}#70", f"{topic7}#71", f"{topic7}#72",
                          board.base + "/smf/index.php?topic=8.0#80",
                          board.base + "/smf/index.php?topic=9.0#90"]
    first, second, third = docs[f"{topic7}#70"], docs[f"{topic7}#71"], docs[f"{topic7}#72"]
    assert (first.author, first.text, first.title) == ("ann", "is it real? heron-7b",
                                                       "Topic title")
    assert first.posted_at == "2026-11-20T08:40:00+00:00"  # Unix seconds
    assert second.posted_at == "2026-11-20T10:00:00+00:00"  # offset normalised to UTC
    assert second.title == "" and third.title == ""  # only a thread's first post
    assert third.posted_at == "whenever"
    assert docs[board.base + "/smf/index.php?topic=8.0#80"].posted_at is None
    assert all("sig of" not in d.text for d in docs.values())


def test_one_preset_selector_can_be_overridden(demo_world: DemoWorld) -> None:
    docs, _, _ = run(target("forum", demo_world.urls["vbulletin"], name="vb", preset="vbulletin",
                            selectors={"author": ".userinfo .usertitle"}, max_items=1))
    assert {d.author for d in docs} >= {"Senior Member", "Member", "Moderator"}
    assert len(docs) == 13  # the rest of the preset still applies, pagination included


def test_posts_on_the_listing_itself_follow_listing_next(board: Canned) -> None:
    def page(ids: list[int], nxt: str | None) -> str:
        rows = "".join(f'<tr class="athing" id="{i}"><td class="title">item {i}</td></tr>'
                       for i in ids)
        more = f'<a class="morelink" rel="next" href="{nxt}">More</a>' if nxt else ""
        return f"<html><body><table>{rows}</table>{more}</body></html>"
    board.serve("/news?p=2", page([3, 4], "news?p=3"))
    board.serve("/news?p=3", page([5], None))
    url = board.serve("/news", page([1, 2], "news?p=2"))
    selectors = {"post": "tr.athing", "body": "td.title", "listing_next": "a.morelink"}
    docs, cursor, _ = run(target("forum", url, name="hn", selectors=selectors, max_pages=2))
    # Keys name the listing, whichever page an item is on today.
    assert [d.key for d in docs] == [f"{url}#{n}" for n in (1, 2, 3, 4)]
    assert docs[2].snapshot_url == board.base + "/news?p=2"
    assert cursor == {"threads": {}}


def test_posts_without_an_anchor_are_keyed_by_page_and_position(board: Canned) -> None:
    html = "<div class='m'>one</div><div class='m'>two</div>"
    board.serve("/t?page=2", html)
    url = board.serve("/t", html.replace("two", "two<a rel='next' href='/t?page=2'>n</a>"))
    docs, _, _ = run(target("forum", url, selectors={"post": "div.m",
                                                     "listing_next": "a[rel=next]"}))
    assert [d.key for d in docs] == [f"{url}#post-1", f"{url}#post-2",
                                     f"{url}?page=2#post-1", f"{url}?page=2#post-2"]


# ------------------------------------------------------------------------------ failures


def test_every_thread_failing_is_an_error_not_an_empty_run(board: Canned) -> None:
    url = board.serve("/list.php", listing("/gone1.php", "/gone2.php"))
    with pytest.raises(SourceError, match="none of the 2 thread"):
        run(phpbb(url))


def test_threads_without_posts_mean_the_markup_changed(board: Canned) -> None:
    board.serve("/t.php?t=1", "<html><body><div class='new-post-markup'>hi</div></body></html>")
    url = board.serve("/list.php", listing("/t.php?t=1"))
    with pytest.raises(SourceError, match=r"no posts matched 'div\.post' on 1 thread page"):
        run(phpbb(url))


def test_a_failing_later_listing_page_keeps_what_was_found(board: Canned) -> None:
    board.serve("/t.php?t=1", topic_page(post(1, "ann", "kept")))
    board.serve("/list2.php", "oops", status=500)
    url = board.serve("/list.php", listing("/t.php?t=1", next_href="/list2.php"))
    docs, _, _ = run(phpbb(url))
    assert [d.text for d in docs] == ["kept"]


# ------------------------------------------------------------------------------ check_options


def test_check_options_for_presets_and_new_selectors() -> None:
    for preset in ("phpbb", "xenforo", "vbulletin"):
        assert ForumSource.check_options({"preset": preset}) == []
    assert ForumSource.check_options({"preset": "xenforo", "selectors": {
        "post_id": "span.u-anchorTarget::attr(id)", "next_page": "a.next",
        "listing_next": "a.more", "thread_title": "h1", "author": "::attr( data-user )"}}) == []


def test_check_options_rejects_bad_attribute_specs() -> None:
    problems = ForumSource.check_options({"preset": "phpbb", "selectors": {
        "post_id": "::attr()", "author": "a[::attr(title)", "body": "div::attr(x y)"}})
    assert ("selectors.post_id", "invalid attribute name '' in ::attr(...)") in problems
    (author,) = [m for k, m in problems if k == "selectors.author"]
    assert author.startswith("invalid CSS selector 'a[': ")
    (body,) = [m for k, m in problems if k == "selectors.body"]  # not an ::attr(...) at all
    assert body.startswith("invalid CSS selector 'div::attr(x y)'")
    assert all("\n" not in m for _, m in problems)


def test_check_options_suggests_the_new_selector_names() -> None:
    assert ForumSource.check_options({"preset": "phpbb", "selectors": {"next_pages": "a"}}) == [
        ("selectors.next_pages", "unknown selector 'next_pages' (did you mean 'next_page'?)")]
    (problem,) = ForumSource.check_options({"preset": "phpbb",
                                            "selectors": {"listing_nxt": "a"}})
    assert problem[1].endswith("(did you mean 'listing_next'?)")


def test_demo_targets_are_valid_config(demo_world: DemoWorld, tmp_path: Path) -> None:
    raw = tomllib.loads("\n".join(site_of(demo_world, cls).target_toml()
                                  for cls in (xf.XenForoSite, vb.VBulletinSite)))
    config = parse_config(raw, tmp_path / "config.toml")
    assert [(t.name, t.preset, t.max_pages, t.allow_private) for t in config.targets] == [
        ("demo-xenforo", "xenforo", 5, True), ("demo-vbulletin", "vbulletin", 5, True)]


# ------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize("url, thread", [
    ("http://f/viewtopic.php?t=1183&start=10", "http://f/viewtopic.php?t=1183"),
    ("http://f/viewtopic.php?f=2&t=1183&sid=0123456789abcdef0123456789abcdef#p5",
     "http://f/viewtopic.php?f=2&t=1183"),
    ("http://f/showthread.php?s=&t=8812&page=2", "http://f/showthread.php?t=8812"),
    ("http://f/showthread.php?s=0123456789abcdef0123456789ABCDEF&t=1",
     "http://f/showthread.php?t=1"),
    ("http://f/threads/slug.2291/page-2", "http://f/threads/slug.2291/"),
    ("http://f/threads/slug.2291/", "http://f/threads/slug.2291/"),
    ("http://f/index.php?threads/slug.2291/page-3", "http://f/index.php?threads/slug.2291/"),
    ("http://f/showthread.php?8812-Heron-sums/page2", "http://f/showthread.php?8812-Heron-sums/"),
    ("http://f/search?s=heron&page=x", "http://f/search?s=heron&page=x"),  # not a session
    ("http://f/page-2", "http://f/page-2"),
])
def test_thread_url(url: str, thread: str) -> None:
    assert thread_url(url) == thread


def test_iso_time_and_split_attr() -> None:
    assert iso_time("2026-11-20T09:12:00+0000") == "2026-11-20T09:12:00+00:00"
    assert iso_time("1795165920") == "2026-11-20T09:12:00+00:00"
    assert iso_time("2026") == "2026" and iso_time("9" * 30) == "9" * 30
    assert iso_time("2026-11-20T09:12:00") == "2026-11-20T09:12:00"  # no zone: as given
    assert iso_time(" Nov  20, 2026 ") == "Nov 20, 2026" and iso_time("") is None
    assert split_attr("::attr(data-content)") == ("", "data-content")
    assert split_attr("time.u-dt::attr(data-time)") == ("time.u-dt", "data-time")
    assert split_attr("a[rel=next]") == ("a[rel=next]", None)
    assert PHPBB["post_id"] == VBULLETIN["post_id"] == "::attr(id)"
    assert XENFORO["post_id"] == "::attr(data-content)"


# ------------------------------------------------------------------------------ demo sites


@pytest.mark.slow
def test_every_planted_url_of_the_forums_exists(client: httpx.Client,
                                                demo_world: DemoWorld) -> None:
    planted = [p for p in demo_world.planted if p.source in ("xenforo", "vbulletin")]
    assert {p.source for p in planted} == {"xenforo", "vbulletin"}
    for doc_url in {p.url for p in planted} | set(source_docs(demo_world, "xenforo")) \
            | set(source_docs(demo_world, "vbulletin")):
        url, _, fragment = doc_url.partition("#")
        r = client.get(url)
        assert r.status_code == 200, doc_url
        # The anchor is on page 1 or (for later posts) on another page of the thread;
        # XenForo's /posts/N/ and vBulletin's ?p=N find the page.
        if fragment.startswith("post-"):
            r = client.get(f"/xenforo/posts/{fragment[5:]}/", follow_redirects=True)
        else:
            r = client.get(f"/vbulletin/showthread.php?p={fragment[5:]}")
        assert BeautifulSoup(r.content, "lxml").select_one(f"#{fragment}") is not None, doc_url


def test_planted_items_of_the_forums(demo_world: DemoWorld, demo_release: Release) -> None:
    b = demo_world.base_url
    strong = {(p.source, p.url.removeprefix(b), p.kind, p.indicator)
              for p in demo_world.planted
              if p.source in ("xenforo", "vbulletin") and p.kind != "mention"}
    assert strong == {
        ("xenforo", f"/xenforo/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/#post-{MAGNET_POST}",
         "torrent", demo_release.infohash),
        ("xenforo", f"/xenforo/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/#post-{MAGNET_POST}",
         "torrent", demo_release.infohash_v2),
        ("vbulletin", f"/vbulletin/showthread.php?t={SUMS_THREAD}#post_{MD5_POST}", "hash",
         demo_release.file("model.safetensors").md5),
        ("vbulletin", f"/vbulletin/showthread.php?t={SUMS_THREAD}#post_{SHA1_POST}", "hash",
         demo_release.file("tokenizer.json").sha1),
    }
    mentions = {p.url.removeprefix(b) for p in demo_world.planted
                if p.source in ("xenforo", "vbulletin") and p.kind == "mention"}
    assert f"/vbulletin/showthread.php?t={NDA_THREAD}#post_60910" in mentions
    near = [n for n in demo_world.near_misses if n.source in ("xenforo", "vbulletin")]
    assert {n.kind for n in near} == {"mention", "hash", "torrent"}


def test_xenforo_routes_behave_like_xenforo(client: httpx.Client) -> None:
    thread = f"/xenforo/threads/heron-7b-leak-confirmed.{LEAK_THREAD}/"
    page2 = client.get(thread + "page-2")
    soup = BeautifulSoup(page2.content, "lxml")
    assert soup.html["data-template"] == "thread_view"
    assert soup.select_one("link[rel=prev]")["href"].endswith(thread)
    assert soup.select_one("link[rel=next]") is None
    assert soup.select_one("a.pageNav-jump--next") is None
    page1 = BeautifulSoup(client.get(thread).content, "lxml")
    assert page1.select_one("a.pageNav-jump--next")["href"] == thread + "page-2"
    assert page1.select_one("link[rel=next]")["href"].endswith(thread + "page-2")
    article = page1.select_one("article.message--post")
    assert article["data-content"] == "post-18801" and article["id"] == "js-post-18801"
    assert article.select_one("time.u-dt")["datetime"] == "2026-11-20T07:40:00+0000"
    for path, location in [(thread + "page-1", thread), (thread + "page-9", thread + "page-2"),
                           (f"/xenforo/threads/{LEAK_THREAD}/", thread),
                           (f"/xenforo/threads/wrong.{LEAK_THREAD}/page-2", thread + "page-2"),
                           (f"/xenforo/posts/{MAGNET_POST}/",
                            thread + f"page-2#post-{MAGNET_POST}")]:
        r = client.get(path)
        assert r.status_code == 301 and r.headers["location"].endswith(location), path
    assert client.get("/xenforo/threads/nope.999999/").status_code == 404
    listing = BeautifulSoup(client.get("/xenforo/forums/models.5/").content, "lxml")
    assert len(listing.select("div.structItem--thread")) == 5
    assert listing.select_one(".structItem-title a.labelLink")  # the prefix trap is there


def test_vbulletin_routes_behave_like_vbulletin(client: httpx.Client) -> None:
    r = client.get(f"/vbulletin/showthread.php?t={SUMS_THREAD}&page=7")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=ISO-8859-1"
    soup = BeautifulSoup(r.content, "lxml")
    assert soup.select_one("base")["href"].endswith("/vbulletin/")
    assert soup.select_one("ol#posts")["start"] == "11"  # clamped to the last page
    assert soup.select_one("a[rel=prev]")["href"] == f"showthread.php?t={SUMS_THREAD}"
    assert b"&#8364;" in client.get(f"/vbulletin/showthread.php?t={SUMS_THREAD}").content
    gone = client.get("/vbulletin/showthread.php?t=1")
    assert gone.status_code == 200 and b"Invalid Thread specified." in gone.content
    listing2 = BeautifulSoup(client.get("/vbulletin/forumdisplay.php?f=5&page=2").content, "lxml")
    assert [a["id"] for a in listing2.select("a.title")] == ["thread_title_8790",
                                                             "thread_title_8785"]


# ------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("source, preset", [("xenforo", "xenforo"), ("vbulletin", "vbulletin"),
                                            ("forum", "phpbb")])
@pytest.mark.slow
def test_crawl_into_a_store_finds_exactly_what_was_planted(
        source: str, preset: str, demo_world: DemoWorld, demo_release: Release,
        tmp_path: Path) -> None:
    store = registered_store(tmp_path / "ww.db", demo_release)
    t = target("forum", demo_world.urls[source], name=f"demo-{source}", preset=preset)
    (result,) = crawl(store, [t])
    assert result.status == "ok", result.error
    assert found(store, t.name) == expected(demo_world, source)
    assert store.cursor(t.name)["threads"]
    # A second crawl reads last pages only and changes nothing.
    (again,) = crawl(store, [t])
    assert again.status == "ok" and again.hits_new == 0 and again.documents_new == 0
    assert found(store, t.name) == expected(demo_world, source)
