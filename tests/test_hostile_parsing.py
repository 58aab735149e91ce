"""Hostile pages against the parsers (issue 13): element, depth and attribute caps on HTML
(the tree stops growing, the text keeps flowing), element and depth caps on XML (one-line
refusal), extraction linear in nested posts, parses that a cancellation really stops, and
the real CLI (`crawl` past its run timeout, `run` on SIGTERM mid-parse) on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml.etree import Comment
from structlog.testing import capture_logs
from support import DEMO_RULE, Canned, crawl, fails, query, target

from monitor.parsing import (
    INLINE_BYTES,
    MAX_HTML_DEPTH,
    MAX_HTML_ELEMENTS,
    MAX_TAG_BYTES,
    MAX_XML_DEPTH,
    MAX_XML_ELEMENTS,
    ParseCancelled,
    XMLTooLarge,
    off_loop,
    parse_html,
    parse_xml,
)
from monitor.sources import SourceError
from monitor.sources.base import html_text
from monitor.sources.forum import ForumSource
from monitor.sources.torznab import parse_feed as parse_torznab
from monitor.store import Store

REPO = Path(__file__).resolve().parents[1]
MENTION = "heron-7b"  # what support.DEMO_RULE and the CLI configs below look for


def phpbb_post(pid: int, body: str, close: bool = True) -> str:
    """A prosilver post (as tests/test_sources_forums.py writes it); unclosed, every later
    post nests inside it, as a truncated or hostile page does."""
    tail = "</div></div></div>" if close else ""
    return (f'<div id="p{pid}" class="post"><div class="postbody">'
            f'<h3><a href="#p{pid}">Re: topic</a></h3>'
            f'<p class="author">by <a class="username" href="./m.php?u=1">u{pid}</a>'
            f' <time datetime="2026-11-20T10:00:00+00:00">x</time></p>'
            f'<div class="content">post {pid} {body}{tail}')


def nested_posts(count: int, last_body: str = "") -> bytes:
    """`count` phpBB posts each nested in the one before (0.31 MB for 3,000 in the issue)."""
    posts = [phpbb_post(i, last_body if i == count - 1 else "", close=False)
             for i in range(count)]
    return f"<html><body>{''.join(posts)}</body></html>".encode()


def nested_divs(size: int) -> bytes:
    return b"<html><body>" + b"<div>" * (size // 5) + b"</body></html>"


def kept(page) -> int:
    """Elements in a parsed page's tree (comments and PIs aside)."""
    return len(page.root.xpath("//*"))


def truncations(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "html_truncated"]


# ------------------------------------------------------------------------------ HTML caps


@pytest.mark.parametrize("extra", [-1, 0, 1], ids=["cap-1", "cap", "cap+1"])
def test_html_element_cap_stops_the_tree_but_not_the_text(extra: int) -> None:
    cap = 40
    count = cap + extra - 2  # <html> and <body> count too
    markup = "<html><body>" + "".join(f"<p>para{i}</p>" for i in range(count)) + "</body></html>"
    with capture_logs() as logs:
        page = parse_html(markup, "http://127.0.0.1/page", max_elements=cap)
    assert kept(page) == min(cap, count + 2)
    text = html_text(page)
    assert all(f"para{i}" in text for i in range(count)), text  # the last one too
    warned = truncations(logs)
    assert len(warned) == (1 if extra > 0 else 0)
    if warned:
        assert warned[0]["dropped_elements"] == 1 and warned[0]["url"] == "http://127.0.0.1/page"


@pytest.mark.parametrize("extra", [-1, 0, 1], ids=["cap-1", "cap", "cap+1"])
def test_html_depth_cap_keeps_the_deepest_text_in_the_last_kept_element(extra: int) -> None:
    cap = 30
    depth = cap + extra
    divs = depth - 2
    markup = "<html><body>" + "<div>" * divs + "deepest words" + "</div>" * divs + "after"
    with capture_logs() as logs:
        page = parse_html(markup, max_depth=cap)
    assert kept(page) == min(depth, cap)
    innermost = page.root.findall(".//div")[-1]
    assert "".join(innermost.itertext()).strip() == "deepest words"
    assert html_text(page).endswith("after")
    assert len(truncations(logs)) == (1 if extra > 0 else 0)


def test_html_past_the_cap_keeps_script_text_out_and_comments_uncounted_beyond_it() -> None:
    markup = ("<html><body><p>a</p>" + "<i>x</i>" * 5
              + "<script>var secret = 1;</script><!-- c --><b>tail words</b></body></html>")
    page = parse_html(markup, max_elements=5)
    assert "var secret" not in html_text(page) and "tail words" in html_text(page)
    assert kept(page) == 5 and not [c for c in page.root.iter(Comment) if c.text.strip() == "c"]


def test_html_attribute_bombs_are_cut() -> None:
    many = " ".join(f"a{i}=x" for i in range(300))
    page = parse_html(f"<html><body><div {many} id=last>text</div></body></html>")
    assert len(page.root.find(".//div").attrib) == 100
    huge = "<html><body><div " + "b=1 " * 20_000 + ">inside</div><p class=k>after</p></body></html>"
    for markup in (huge, huge.encode(), huge.encode("utf-16")):
        page = parse_html(markup)
        assert dict(page.root.find(".//div").attrib) == {}
        assert page.root.find(".//p").get("class") == "k"
        assert html_text(page).split() == ["inside", "after"]


def quoted_gt_tag(size: int, lead: str = "") -> str:
    """A page whose one <div> start tag is `size` characters of attributes whose values
    hold ">" (libxml2 reads them all as attributes of the div), after `lead`."""
    attrs = " ".join(f'a{i}=">"' for i in range(size // 8))
    return f"<html><body>{lead}<div {attrs}>inside</div><p class=k>after</p></body></html>"


@pytest.mark.parametrize("lead", ["", "<!-- <x a=' -->", "<script>s = \"<x a='\";</script>",
                                  "<title>t <x a='</title>", "<![CDATA[ <x a=' ]]>"])
@pytest.mark.parametrize("body", ["quoted", "lt", "equals"])
def test_long_tags_are_cut_wherever_their_end_is(lead: str, body: str) -> None:
    """A start tag ends at a ">" outside quoted values (libxml2's HTML5 tokenizer), so
    quoted ">"s, "<"s inside the tag, or a quote that is not one (`="x` is a name) must
    not hide its length; nor may a comment, raw text or a bogus comment before it."""
    size = 400_000
    markup = {
        "quoted": quoted_gt_tag(size, lead),
        "lt": f"<html><body>{lead}<div " + " ".join(f"a{i}<" for i in range(size // 8))
              + ">inside</div><p class=k>after</p></body></html>",
        "equals": quoted_gt_tag(size, lead + '<i ="x a="' + ">" * 70_000 + '"></i>'),
    }[body]
    for page in (markup, markup.encode(), markup.encode("utf-16")):
        root = parse_html(page).root
        assert all(len(e.attrib) <= 1 for e in root.iter()), body
        assert root.find(".//div") is not None
        assert html_text(root).split()[-2:] == ["inside", "after"]


def test_ordinary_tags_with_quoted_angle_brackets_are_kept() -> None:
    """A page long enough to be checked tag by tag keeps its ordinary tags whole: quoted
    ">" and "<" in values, raw text and comments holding tag-like text."""
    post = ('<div class="post" title="a > b" data-x=\'<i>\'><a href="/t?a=1&b=2">link</a>'
            "<script>if (a<b) { s = '<p c=\"'; }</script><!-- <q r=' -->text</div>\n")
    page = "<html><body>" + post * 600 + "</body></html>"
    assert len(page) > MAX_TAG_BYTES
    root = parse_html(page).root
    divs = root.findall(".//div")
    assert len(divs) == 600
    assert all(d.get("title") == "a > b" and d.get("data-x") == "<i>" for d in divs)
    assert root.findall(".//a")[-1].get("href") == "/t?a=1&b=2"
    assert html_text(root).split().count("linktext") == 600


PEAK_RSS_TAG = """
import resource, sys
from monitor.parsing import parse_html
from monitor.sources.base import html_text
# Built in place, so building it costs no more than the page: a peak set before the parse
# would hide what the parse costs.
tag = bytearray(b"<html><body><div ")
i = 0
while len(tag) < 20_000_000:
    tag += b'a%x=">" ' % i
    i += 1
page = bytes(tag + b">inside</div><p>after</p></body></html>")
del tag
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
text = html_text(parse_html(page))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(page), before * 1024, after * 1024, text.split())
"""


@pytest.mark.slow
def test_peak_memory_of_a_20mb_tag_of_quoted_angle_brackets() -> None:
    """A 1.9 MB start tag whose attribute values held ">" slipped past the tag guard and
    cost 93 MB (20 MB: ~1 GB). It is cut to its name: the parse adds under twice the
    page to what the process held before it."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_TAG], env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    size, before, after, words = proc.stdout.splitlines()[-1].split(" ", 3)
    assert int(size) > 20_000_000
    assert words == "['inside', 'after']"
    assert int(after) - int(before) < 2 * int(size), (size, before, after)


def test_nested_posts_each_read_once_and_the_mention_past_the_cap_is_a_hit(
        tmp_path: Path, serve: Callable[..., Canned]) -> None:
    page = nested_posts(3000, last_body=f"the {MENTION} weights are up")
    board = serve()
    url = board.serve("/t.php", page)
    src = ForumSource(target("forum", url, name="board", preset="phpbb"), None, {})
    with capture_logs() as logs:
        parsed = src.parse_posts(page, url, "2026-11-20T10:00:00+00:00")
    assert len(truncations(logs)) == 1
    # 256 levels hold 85 posts of 3 levels; the rest is text in the deepest kept post.
    assert parsed.posts == len(parsed.docs) == MAX_HTML_DEPTH // 3
    for index, doc in enumerate(parsed.docs[:-1]):
        assert doc.text.startswith(f"post {index}") and f"post {index + 1}" not in doc.text
    assert "post 2999" in parsed.docs[-1].text and MENTION in parsed.docs[-1].text

    store = Store(tmp_path / "w.db")
    board_url = board.serve("/board", listing("/t.php"))
    [result] = crawl(store, [target("forum", board_url, name="board", preset="phpbb")])
    assert result.status == "ok", result.error
    hits = store.hits(target="board")
    assert [h["url"] for h in hits] == [parsed.docs[-1].url]


@pytest.mark.slow
def test_a_mention_past_the_element_cap_outside_every_post_is_still_read() -> None:
    """Past the element cap a later post keeps only its text, which lands outside every
    post (in <body>): the forum reads it as one more document of the page."""
    junk = "<i>x</i>" * MAX_HTML_ELEMENTS
    page = (f"<html><body>{phpbb_post(1, junk)}{phpbb_post(2, f'<p>the</p><p>{MENTION}</p>')}"
            "</body></html>").encode()
    url = "http://127.0.0.1:9/t.php?t=1"
    src = ForumSource(target("forum", url, name="b", preset="phpbb"), None, {})
    parsed = src.parse_posts(page, url, "2026-11-20T10:00:00+00:00")
    assert [d.key for d in parsed.docs] == [f"{url}#p1", f"{url}#past-parse-caps"]
    rest = parsed.docs[1].text
    assert re.search(DEMO_RULE.pattern, rest) and "post 2" in rest and "xxx" not in rest


def test_posts_inside_one_unclosed_post_are_separate_documents() -> None:
    page = ("<html><body>" + phpbb_post(0, "first", close=False)
            + "".join(phpbb_post(i, f"body{i}") for i in range(1, 1000)) + "</body></html>")
    src = ForumSource(target("forum", "http://127.0.0.1:9/t.php", name="b", preset="phpbb"),
                      None, {})
    parsed = src.parse_posts(page.encode(), "http://127.0.0.1:9/t.php", "2026-11-20T10:00:00+00:00")
    assert len(parsed.docs) == 1000
    assert parsed.docs[0].text == "post 0 first"
    assert [d.text for d in parsed.docs[1:3]] == ["post 1 body1", "post 2 body2"]


# ------------------------------------------------------------------------------ XML caps


@pytest.mark.parametrize("extra", [-1, 0, 1], ids=["cap-1", "cap", "cap+1"])
def test_xml_element_and_depth_caps(extra: int) -> None:
    cap = 20
    flat = "<r>" + "<i/>" * (cap + extra - 1) + "</r>"
    deep = "<a>" * (cap + extra) + "</a>" * (cap + extra)
    if extra <= 0:
        assert len(parse_xml(flat, max_elements=cap)) == cap + extra - 1
        assert parse_xml(deep, max_depth=cap).tag == "a"
        return
    with pytest.raises(XMLTooLarge, match=f"more than {cap} XML elements"):
        parse_xml(flat, max_elements=cap)
    with pytest.raises(XMLTooLarge, match=f"nested more than {cap} deep"):
        parse_xml(deep, max_depth=cap)


@pytest.mark.slow
def test_feed_and_torznab_past_the_default_caps_fail_with_one_line(
        serve: Callable[..., Canned]) -> None:
    wide = ('<?xml version="1.0"?><rss version="2.0"><channel>'
            + "<x/>" * MAX_XML_ELEMENTS + "</channel></rss>")
    deep = "<rss>" + "<x>" * MAX_XML_DEPTH + "</x>" * MAX_XML_DEPTH + "</rss>"
    server = serve()
    fails(target("feed", server.serve("/wide.xml", wide)),
          f"refused a feed of more than {MAX_XML_ELEMENTS:,} XML elements")
    fails(target("feed", server.serve("/deep.xml", deep)),
          f"refused a feed of XML nested more than {MAX_XML_DEPTH} deep")
    for body, needle in ((wide, "XML elements"), (deep, "nested more than")):
        with pytest.raises(SourceError) as err:
            parse_torznab(body.encode(), "http://127.0.0.1/api")
        assert needle in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ cancellation


def test_small_markup_is_parsed_on_the_loop_and_large_markup_in_a_parse_thread() -> None:
    """The hand-over costs more than a small page's parse; a page over INLINE_BYTES (a
    hostile one may be megabytes) still leaves the loop, and so can still be interrupted."""
    import threading

    def where(markup: bytes) -> str:
        return threading.current_thread().name

    async def main() -> tuple[str, str, str, str]:
        here = threading.current_thread().name
        small = await off_loop(where, b"x" * INLINE_BYTES)
        large = await off_loop(where, b"x" * (INLINE_BYTES + 1))
        # Two pieces of markup count together: a page and its listing, say.
        pair = await off_loop(lambda a, b: where(a), b"x" * INLINE_BYTES, "y")
        return here, small, large, pair

    here, small, large, pair = asyncio.run(main())
    assert small == here
    assert large != here and large.startswith("weightwatch-parse"), large
    assert pair != here


def test_cancelling_a_parse_stops_its_thread() -> None:
    """The run timeout (wait_for) cancels a parse of a big hostile page and a pure-Python
    loop; both threads end, the loop kept running meanwhile, and the next parse works."""
    stopped: list[str] = []

    def spin() -> None:
        try:
            while True:
                pass
        except ParseCancelled:
            stopped.append("spin")
            raise

    def big_parse() -> None:
        try:
            parse_html(nested_divs(2_400_000) + b"<p>x</p>" * 400_000)
        except ParseCancelled:
            stopped.append("parse")
            raise

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        for fn in (spin, big_parse):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(off_loop(fn), timeout=0.3)
        ticker.cancel()
        assert await off_loop(html_text, "<p>still <b>works</b></p>") == "still works"
        return ticks

    with capture_logs() as logs:
        ticks = asyncio.run(main())
    assert stopped == ["spin", "parse"]
    assert ticks > 0
    assert [e["event"] for e in logs].count("parse_interrupted") == 2
    for thread in [t for t in threading.enumerate() if t.name == "weightwatch-parse"]:
        thread.join(timeout=5)  # a thread hands its result over just before it ends
        assert not thread.is_alive()


# ------------------------------------------------------------------------------ the real CLI


def listing(*hrefs: str) -> bytes:
    links = "".join(f'<li><a href="{h}" class="topictitle">Topic {i}</a></li>'
                    for i, h in enumerate(hrefs))
    return f"<html><body><ul class='topiclist'>{links}</ul></body></html>".encode()


def write_config(tmp_path: Path, url: str, run_timeout: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"""\
[database]
path = "w.db"

[crawl]
run_timeout = "{run_timeout}"
host_delay = "10ms"
retries = 0

[[targets]]
name = "board"
kind = "forum"
preset = "phpbb"
url = "{url}"
interval = "1h"
allow_private = true

[[rules]]
name = "heron-name"
model = "heron-7b"
keywords = ["{MENTION}"]
""", encoding="utf-8")
    return config


def cli(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "monitor", "--config", str(tmp_path / "config.toml"), *args]


def cli_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("WEIGHTWATCH_CONFIG", None)
    return env


@pytest.mark.slow
def test_crawl_of_hostile_threads_ends_within_its_run_timeout(
        tmp_path: Path, serve: Callable[..., Canned]) -> None:
    run_timeout = 4.0
    board = serve()
    board.serve("/t1", f"<html><body>{phpbb_post(1, f'plain {MENTION} post')}</body></html>")
    board.serve("/t2", nested_posts(3000, last_body=f"deep {MENTION} mention"))
    board.serve("/t3", nested_divs(2_400_000))
    url = board.serve("/board", listing("/t1", "/t2", "/t3"))
    write_config(tmp_path, url, f"{run_timeout:.0f}s")
    started = time.monotonic()
    proc = subprocess.run(cli(tmp_path, "crawl", "--format", "json"), cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True,
                          timeout=run_timeout + 30)
    assert time.monotonic() - started < run_timeout + 10
    rows = json.loads(proc.stdout)
    [row] = rows
    if row["status"] == "ok":
        assert proc.returncode == 0
    else:  # a slow machine: the run timeout, as one line
        assert proc.returncode == 1 and "\n" not in row["error"]
    db = tmp_path / "w.db"
    urls = {u for (u,) in query(db, "SELECT url FROM hits")}
    assert f"{board.base}/t1#p1" in urls  # recorded before the hostile pages, kept
    if row["status"] == "ok":
        assert f"{board.base}/t2#p{MAX_HTML_DEPTH // 3 - 1}" in urls  # past the depth cap
    assert query(db, "SELECT COUNT(*) FROM crawl_runs WHERE status = 'running'") == [(0,)]


@pytest.mark.slow
def test_run_stops_within_10s_of_sigterm_mid_parse(tmp_path: Path,
                                                   serve: Callable[..., Canned]) -> None:
    board = serve(default=(200, nested_divs(2_400_000) + b"<p>x</p>" * 200_000,
                           {"Content-Type": "text/html"}))
    board.serve("/t0", f"<html><body>{phpbb_post(1, f'plain {MENTION} post')}</body></html>")
    url = board.serve("/board", listing("/t0", *(f"/t{i}" for i in range(1, 30))))
    write_config(tmp_path, url, "10m")
    proc = subprocess.Popen(cli(tmp_path, "run"), cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while board.count("/t1") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert board.count("/t1") == 1, "the daemon never reached the hostile pages"
        time.sleep(0.2)  # the page is on its way in and being parsed
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert "daemon_stopped" in events and "parse_interrupted" in events, events
    db = tmp_path / "w.db"
    assert query(db, "SELECT status FROM crawl_runs") == [("interrupted",)]
    assert query(db, "SELECT url FROM hits") == [(f"{board.base}/t0#p1",)]


PEAK_RSS = """
import resource, sys
from monitor.parsing import MAX_HTML_ELEMENTS, parse_html
from monitor.sources.base import html_text
tiny = b"<i>x</i>" * (MAX_HTML_ELEMENTS + 10_000)
line = b"<p>" + b"words of a post " * 60 + b"</p>\\n"
page = b"<html><body>" + tiny + line * ((19_900_000 - len(tiny)) // len(line)) + b"</body>"
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
text = html_text(parse_html(page))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(page), before * 1024, after * 1024, len(text))
"""


@pytest.mark.slow
def test_peak_memory_of_a_20mb_page_stays_a_small_multiple_of_it() -> None:
    """A 19.9 MB page (under the default response cap) cost 2.56 GB before the caps. Now
    the tree holds at most the element cap (this page fills it, then carries text): the
    parse and its text add under 10x the page to what the process held before it."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS], env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    size, before, after, chars = map(int, proc.stdout.splitlines()[-1].split())
    assert chars > size // 2  # the text past the cap was read
    assert after - before < 10 * size, (size, before, after)


def test_parse_threads_are_kept_and_a_cancelled_one_serves_the_next_call_cleanly() -> None:
    """Starting a thread per page cost more than parsing it, so parse threads are kept;
    a thread whose call was interrupted is kept too, and no ParseCancelled meant for that
    call ever lands in the next one (each call below would raise it within its loop)."""

    def spin() -> None:
        while True:
            pass

    def busy(seconds: float) -> threading.Thread:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return threading.current_thread()

    async def main() -> tuple[set[threading.Thread], list[threading.Thread]]:
        # Thread objects, held: an ended thread's ident may be given to the next one.
        first = {await off_loop(threading.current_thread) for _ in range(20)}
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(off_loop(spin), timeout=0.05)
        after = [await off_loop(busy, 0.01) for _ in range(20)]
        return first, after

    threads_before = threading.active_count()
    first, after = asyncio.run(main())
    assert len(first) == 1  # one after the other: the same kept thread every time
    assert len(set(after)) == 1
    assert threading.active_count() - threads_before <= 2  # PARSE_SLOTS idle at most
