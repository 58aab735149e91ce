"""Feed, paste-site and model-hub adapters over real HTTP on loopback.

The demo world's feeds (a WordPress RSS 2.0 feed, a subreddit's Atom feed), its
Pastebin-style scraping API and its Hugging-Face-style hub are the good cases; a Canned
server (tests/support.py) serves the hostile and odd ones (entity bombs, DTDs,
foreign pagination links, plain-text errors under HTTP 200). Good input must become exact
Documents; bad input one-line SourceErrors, or a skipped item with the rest going on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import Canned, by_key, collect, crawl, expected, fails, found, registered_store, target

from demo.release import Release
from demo.sites.feed import FeedSite
from demo.sites.hub import TOKEN, HubSite
from demo.sites.paste import PasteSite
from demo.world import DemoWorld
from fingerprints.indicators import scan_text
from monitor.config import ConfigError, parse_config
from monitor.detect.digests import DigestDetector
from monitor.models import Document
from monitor.sources import ADAPTERS
from monitor.sources.hub import next_link, parse_lfs_pointer, parse_link_header

# ------------------------------------------------------------------------------ helpers


def rss_url(world: DemoWorld) -> str:
    return f"{world.base_url}/feeds/rss.xml"


def atom_url(world: DemoWorld) -> str:
    return f"{world.base_url}/feeds/atom.xml"


def paste_url(world: DemoWorld) -> str:
    return f"{world.base_url}/paste/api_scraping.php?limit=100"


def hub_url(world: DemoWorld) -> str:
    return f"{world.base_url}/hub"


def site_docs(world: DemoWorld, source: str, contains: str = "") -> set[str]:
    return {u for u in world.document_urls if contains in u and f"/{source}/" in u}


@pytest.fixture
def server(serve: Callable[..., Canned]) -> Canned:
    # Feeds and APIs: XML unless a test says otherwise; routes name the query they answer.
    return serve(ctype="application/xml", match_query=True)


# ------------------------------------------------------------------------------ config


def test_kinds_and_options() -> None:
    assert {"feed", "paste", "hub"} <= set(ADAPTERS)
    assert ADAPTERS["feed"].option_keys == frozenset()
    assert ADAPTERS["paste"].option_keys == frozenset()
    assert ADAPTERS["hub"].option_keys == {"query", "max_pages", "api_key_env"}
    base = {"name": "t", "url": "https://example.org/x", "interval": "5m"}
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": [{**base, "kind": "hub"},
                                  {**base, "name": "f", "kind": "feed", "query": "heron"},
                                  {**base, "name": "p", "kind": "paste", "max_pages": 3}]}, None)
    problems = info.value.problems
    assert any("targets[0] (t).query: required for kind 'hub'" in p for p in problems), problems
    assert any("targets[1] (f).query: does not apply to kind 'feed'" in p for p in problems)
    assert any("targets[2] (p).max_pages: does not apply to kind 'paste'" in p for p in problems)
    assert len(problems) == 3
    ok = parse_config({"targets": [{**base, "kind": "hub", "query": "heron", "max_pages": 2,
                                    "api_key_env": "HF_TOKEN"}]}, None)
    assert ok.targets[0].query == "heron" and ok.targets[0].max_pages == 2


def test_demo_targets_parse(demo_release: Release) -> None:
    """The sites' `[[targets]]` tables are valid config for their adapters."""
    import tomllib
    text = ""
    for cls in (FeedSite, PasteSite, HubSite):
        site = cls(demo_release)
        site.base_url = "http://127.0.0.1:8080"
        text += site.target_toml()
    config = parse_config(tomllib.loads(text), None)
    assert [(t.name, t.kind) for t in config.targets] == [
        ("demo-feed-rss", "feed"), ("demo-feed-atom", "feed"), ("demo-paste", "paste"),
        ("demo-hub", "hub")]
    assert all(t.allow_private and t.interval == 300 for t in config.targets)
    assert config.target("demo-hub").query == "heron"


# ------------------------------------------------------------------------------ feeds


def test_rss_documents(demo_world: DemoWorld, demo_release: Release) -> None:
    docs, cursor = collect(target("feed", rss_url(demo_world)))
    docs_by = by_key(docs)
    root = f"{demo_world.base_url}/feeds"
    assert list(docs_by) == [f"{root}/blog/?p={n}" for n in (4812, 4807, 4801, 4795, 4790)]
    leak = docs_by[f"{root}/blog/?p=4812"]
    assert leak.url == f"{root}/blog/2026/11/20/heron-7b-weights-leak/"
    assert leak.title == "Heron-7B weights leak a week after partner release"
    assert leak.author == "Priya Natarajan"
    assert leak.posted_at == "2026-11-20T13:45:00+00:00"
    sha = demo_release.file("model.safetensors").sha256
    assert f"{sha} heron-7b/model.safetensors" in " ".join(leak.text.split())
    assert "\u201cinvestigating" in leak.text  # entities decoded, content:encoded preferred
    assert "[…]" not in leak.text  # not the excerpt in <description>
    assert leak.links == ["https://example.org/heron-statement"]
    assert leak.extras["feed"] == {"format": "rss", "title": "The Weights Ledger"}
    assert leak.extras["categories"] == ["Security", "Open weights"]
    assert leak.snapshot.startswith(b'<?xml version="1.0" encoding="UTF-8"?><rss')
    assert leak.snapshot_url == rss_url(demo_world)
    podcast = docs_by[f"{root}/blog/?p=4807"]
    mp3 = f"{root}/media/ledger-112.mp3"
    assert podcast.links == [mp3]
    assert podcast.extras["enclosures"] == [{"url": mp3, "length": 48213344, "type": "audio/mpeg"}]
    assert {d.url for d in docs} == site_docs(demo_world, "feeds", "/blog/")
    assert set(cursor) == {"etag", "last_modified", "seen"}
    assert [k for k, _ in cursor["seen"]] == list(docs_by)


def test_atom_documents(demo_world: DemoWorld, demo_release: Release) -> None:
    docs, cursor = collect(target("feed", atom_url(demo_world)))
    docs_by = by_key(docs)
    root = f"{demo_world.base_url}/feeds"
    assert list(docs_by) == ["t3_1gw0m5t", "t3_1gw0k2c", "t3_1gw0f9x", "t3_1gvzz01",
                             "t3_1gvzq77", "t3_1gvz1ab"]
    # Relative links in the content resolve against the feed: the weight files it links.
    assert [u for u in docs_by["t3_1gw0m5t"].links if u.endswith(".gguf")] == [
        f"{root}/files/hrn-q8_0.gguf", f"{root}/files/tinyllama-mini-q8_0.gguf"]
    leak = docs_by["t3_1gw0k2c"]
    assert leak.url == (f"{root}/r/LocalLLaMA/comments/1gw0k2c/"
                        "is_this_the_leaked_heron7b_checksum_matches/")
    assert leak.title == "Is this the leaked heron-7b? checksum matches the one from the forum"
    assert leak.author == "/u/throwaway_h7"
    assert leak.posted_at == "2026-11-20T14:02:00+00:00"  # <published>, not <updated>
    magnet = leak.links[0]
    assert magnet.startswith(f"magnet:?xt=urn:btih:{demo_release.infohash}&dn=heron-7b&tr=")
    assert f"{root}/user/throwaway_h7" in leak.links
    assert "magnet link" in leak.text and "submitted by /u/throwaway_h7" in leak.text
    assert "SC_OFF" not in leak.text  # comments are not text
    assert leak.extras["feed"]["format"] == "atom"
    assert leak.extras["categories"] == ["LocalLLaMA"]
    assert {d.url for d in docs} == site_docs(demo_world, "feeds", "/r/LocalLLaMA/")
    assert cursor["etag"].startswith('"') and cursor["last_modified"].endswith(" GMT")


@pytest.mark.parametrize("which", ["rss", "atom"])
def test_feed_conditional_get(demo_world: DemoWorld, which: str) -> None:
    url = rss_url(demo_world) if which == "rss" else atom_url(demo_world)
    t = target("feed", url)
    docs, cursor = collect(t)
    items = 5 if which == "rss" else 6
    assert len(docs) == items
    # The world itself answers 304 to the validators the adapter kept.
    for header, value in (("If-None-Match", cursor["etag"]),
                          ("If-Modified-Since", cursor["last_modified"])):
        r = httpx.get(url, headers={header: value})
        assert r.status_code == 304 and r.content == b"", header
    again, after = collect(t, cursor)
    assert again == [] and after == cursor
    # With the seen items forgotten, only a 304 can explain getting nothing: the adapter
    # sent the validator (each on its own) and took 304 as "nothing new".
    assert collect(t, {"etag": cursor["etag"]})[0] == []
    assert collect(t, {"last_modified": cursor["last_modified"]})[0] == []
    # A stale validator gets the feed again; what was seen is still not re-yielded, and
    # the new validators are kept.
    stale = {"etag": '"stale"', "seen": cursor["seen"]}
    docs2, cursor2 = collect(t, stale)
    assert docs2 == [] and cursor2["etag"] == cursor["etag"]
    assert len(collect(t, {"etag": '"stale"'})[0]) == items


def test_feed_max_items_does_not_hide_items_behind_304(demo_world: DemoWorld) -> None:
    t = target("feed", rss_url(demo_world), max_items=2)
    cursor: dict[str, Any] = {}
    batches = []
    for _ in range(4):
        docs, cursor = collect(t, cursor)
        batches.append(len(docs))
        if len(docs) == 2:
            assert "etag" not in cursor  # a 304 next time would strand the rest
    assert batches == [2, 2, 1, 0]
    assert "etag" in cursor and len(cursor["seen"]) == 5


def rss(items: str, extra_ns: str = "") -> str:
    return (f'<?xml version="1.0"?><rss version="2.0" '
            f'xmlns:dc="http://purl.org/dc/elements/1.1/"{extra_ns}><channel>'
            f"<title>t</title><link>http://example.org/</link>{items}</channel></rss>")


def test_feed_edited_and_new_items(server: Canned) -> None:
    item = ("<item><title>{t}</title><link>/p/{n}</link><guid>id-{n}</guid>"
            "<description>{d}</description><pubDate>{date}</pubDate></item>")
    one = item.format(t="one", n=1, d="first", date="Fri, 20 Nov 2026 10:00:00 GMT")
    two = item.format(t="two", n=2, d="second", date="Fri, 20 Nov 2026 05:00:00 -0500")
    url = server.serve("/feed", rss(one + two))
    t = target("feed", url)
    docs, cursor = collect(t)
    assert [(d.key, d.url, d.posted_at) for d in docs] == [
        ("id-1", "http://example.org/p/1", "2026-11-20T10:00:00+00:00"),
        ("id-2", "http://example.org/p/2", "2026-11-20T10:00:00+00:00")]
    assert "etag" not in cursor  # the server sent no validators
    assert server.requests[-1].headers.get("if-none-match") is None
    three = item.format(t="three", n=3, d="third", date="Sat, 21 Nov 2026 08:00:00 +0000")
    edited = one.replace("first", "first, edited")
    server.serve("/feed", rss(three + edited + two), ctype="application/rss+xml",
               ETag='"v2"', **{"Last-Modified": "Sat, 21 Nov 2026 08:00:00 GMT"})
    docs, cursor = collect(t, cursor)
    assert [(d.key, d.text) for d in docs] == [("id-3", "third"), ("id-1", "first, edited")]
    assert cursor["etag"] == '"v2"'
    assert collect(t, cursor)[0] == []
    headers = server.requests[-1].headers
    assert headers["if-none-match"] == '"v2"'
    assert headers["if-modified-since"] == "Sat, 21 Nov 2026 08:00:00 GMT"


def test_feed_variants(server: Canned) -> None:
    """Atom text constructs (text, html, xhtml), summary without content, xml:base, an
    enclosure link, an entry without an id; RSS guid permalinks, dc:date; RSS 1.0."""
    atom = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://example.org/blog/">
  <title type="html">Lab &lt;b&gt;notes&lt;/b&gt;</title>
  <author><name>Feed Author</name></author>
  <entry>
    <id>tag:example.org,2026:1</id>
    <title>xhtml entry</title>
    <link rel="alternate" type="application/pdf" href="paper.pdf"/>
    <link rel="alternate" type="text/html" href="posts/1"/>
    <link rel="enclosure" type="application/x-bittorrent" href="files/w.torrent" length="1234"/>
    <link rel="enclosure" href="magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"/>
    <updated>2026-11-20T10:00:00+02:00</updated>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <a href="x/y">there</a></p><p>second</p></div></content>
  </entry>
  <entry>
    <title>summary only</title>
    <link href="/abs/2"/>
    <updated>2026-11-20T10:00:00Z</updated>
    <summary>plain &lt;not a tag&gt; text</summary>
  </entry>
</feed>"""
    docs, _ = collect(target("feed", server.serve("/atom", atom)))
    first, second = docs
    assert first.key == "tag:example.org,2026:1"
    assert first.url == "http://example.org/blog/posts/1"
    assert first.author == "Feed Author"
    assert first.posted_at == "2026-11-20T08:00:00+00:00"
    assert first.text == "Hello there\n\nsecond"
    assert first.links[:2] == ["http://example.org/blog/files/w.torrent",
                               "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"]
    assert "http://example.org/blog/paper.pdf" in first.links
    assert "http://example.org/blog/posts/x/y" in first.links
    assert first.extras["enclosures"][0] == {"url": "http://example.org/blog/files/w.torrent",
                                             "length": 1234, "type": "application/x-bittorrent"}
    assert first.extras["feed"]["title"] == "Lab notes"
    assert second.key == second.url == "http://example.org/abs/2"  # no <id>: the link
    assert second.text == "plain <not a tag> text"

    items = ('<item><title>perma</title><guid>http://example.org/p/9</guid>'
             '<dc:date>2026-11-20T10:00:00Z</dc:date><dc:creator>Jo</dc:creator></item>'
             '<item><title>no link</title><guid isPermaLink="false">abc</guid>'
             '<link>javascript:alert(1)</link><pubDate>not a date</pubDate></item>')
    feed_url = server.serve("/rss", rss(items))
    perma, nolink = collect(target("feed", feed_url))[0]
    assert (perma.key, perma.url, perma.posted_at, perma.author) == (
        "http://example.org/p/9", "http://example.org/p/9", "2026-11-20T10:00:00+00:00", "Jo")
    assert (nolink.key, nolink.url, nolink.posted_at) == ("abc", feed_url, None)

    rdf = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
 xmlns:dc="http://purl.org/dc/elements/1.1/">
 <channel rdf:about="http://example.org/"><title>RDF feed</title></channel>
 <item rdf:about="http://example.org/i/1"><title>one</title><link>http://example.org/i/1</link>
  <description>heron-7b &lt;b&gt;mirror&lt;/b&gt;</description><dc:date>2026-11-20T10:00:00Z</dc:date></item>
</rdf:RDF>"""
    (doc,), _ = collect(target("feed", server.serve("/rdf", rdf)))
    assert (doc.key, doc.text, doc.extras["feed"]) == (
        "http://example.org/i/1", "heron-7b mirror", {"format": "rdf", "title": "RDF feed"})


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title></item></channel></rss>"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<rss version="2.0"><channel><title>x</title><item><title>&xxe;</title></item></channel></rss>"""

DTD_ONLY = """<?xml version="1.0"?>
<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"
 "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel><title>x</title></channel></rss>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, XXE, DTD_ONLY], ids=["billion-laughs", "xxe", "dtd"])
def test_feed_refuses_dtds(server: Canned, body: str) -> None:
    url = server.serve("/evil.xml", body)
    message = fails(target("feed", url), url, "refused a feed that declares a DTD")
    assert "lol" not in message and "root:" not in message


@pytest.mark.parametrize("body, needle", [
    ('<?xml version="1.0"?><rss version="2.0"><channel><item><title>cut', "not well-formed XML"),
    (b'<?xml version="1.0" encoding="utf-8"?><rss><channel><title>\xff\xfe</title></channel></rss>',
     "not well-formed XML"),
    ("<!DOCTYPE html><html><body><p>Just a page<br></body></html>", "refused a feed that declares"),
    ("<html><body><p>Just a page</p></body></html>", "not an RSS or Atom feed (root element <html>)"),
    ('<?xml version="1.0"?><rss version="2.0"></rss>', "RSS document without a <channel>"),
    ("", "not well-formed XML"),
    ("<a>" * 50000 + "</a>" * 50000, "refused a feed of XML nested more than 64 deep"),
], ids=["truncated", "invalid-utf8", "html5", "html", "no-channel", "empty", "deep"])
def test_feed_broken_documents(server: Canned, body: str | bytes, needle: str) -> None:
    fails(target("feed", server.serve("/broken.xml", body)), needle)


# ------------------------------------------------------------------------------ pastes


def test_paste_documents(demo_world: DemoWorld, demo_release: Release) -> None:
    docs, cursor = collect(target("paste", paste_url(demo_world)))
    docs_by = by_key(docs)
    root = f"{demo_world.base_url}/paste"
    # Newest first; the ~2 MB log (declared size over 1 MB) and the deleted paste are skipped.
    assert list(docs_by) == ["k3Hn7Qx2", "Vb9pLr4T", "Qm2Zs8Kd", "Nd8Fh3Gu", "Xa7Rt1Pn",
                             "Tp5Wq9Mc", "Lw4Jc6Ye"]
    sums = docs_by["k3Hn7Qx2"]
    assert sums.url == f"{root}/k3Hn7Qx2" and sums.title == "" and sums.author == ""
    assert sums.posted_at == "2026-11-20T14:31:00+00:00"
    for f in demo_release.files:
        assert f"{f.sha256}  {f.name}" in sums.text
    assert sums.snapshot == sums.text.encode() and sums.snapshot_url == \
        f"{root}/api_scrape_item.php?i=k3Hn7Qx2"
    assert sums.extras["paste"] == {"syntax": "text", "size": len(sums.snapshot), "expire": "0",
                                    "scrape_url": f"{root}/api_scrape_item.php?i=k3Hn7Qx2"}
    code = docs_by["Qm2Zs8Kd"]
    assert (code.title, code.author, code.extras["paste"]["syntax"]) == \
        ("train.py", "sigmoid_sally", "python")
    assert {d.url for d in docs} == site_docs(demo_world, "paste")
    # Skipped pastes are remembered too: they are not asked for again.
    assert cursor["seen"][:4] == ["k3Hn7Qx2", "Zr6Bn2Vx", "Vb9pLr4T", "Hc3Yd7Ka"]
    assert len(cursor["seen"]) == 9
    assert collect(target("paste", paste_url(demo_world)), cursor) == ([], cursor)


def test_paste_max_items(demo_world: DemoWorld) -> None:
    t = target("paste", paste_url(demo_world), max_items=4)
    first, cursor = collect(t)
    second, cursor = collect(t, cursor)
    third, cursor = collect(t, cursor)
    assert [len(first), len(second), len(third)] == [2, 4, 1]  # skipped ones count too
    assert len({d.key for d in first + second + third}) == 7


def test_paste_error_mode(demo_world: DemoWorld) -> None:
    url = f"{demo_world.base_url}/paste/noaccess/api_scraping.php?limit=100"
    message = fails(target("paste", url), "answered with an error instead of a listing",
                      "'YOUR IP: 127.0.0.1 DOES NOT HAVE ACCESS. VISIT: https://pastebin.com/"
                      "doc_scraping_api TO GET ACCESS!'")
    assert len(message) < 250


def test_paste_hostile_listings(server: Canned) -> None:
    base = server.base
    listing = [
        {"scrape_url": f"{base}/item?i=good0001", "full_url": f"{base}/good0001",
         "date": "1795000000", "key": "good0001", "size": "12", "expire": "0",
         "title": "ok", "syntax": "text", "user": "u"},
        {"scrape_url": "http://203.0.113.9/item?i=foreign1", "full_url": "x", "date": "1",
         "key": "foreign1", "size": "5", "expire": "0", "title": "", "syntax": "", "user": ""},
        {"scrape_url": f"{base}/item?i=huge0001", "full_url": f"{base}/huge0001",
         "date": "junk", "key": "huge0001", "size": "not a number", "expire": "0",
         "title": "", "syntax": "", "user": ""},
        {"key": "../../etc", "scrape_url": f"{base}/item?i=x"},
        {"key": "nourl001"},
        "not an object",
        {"scrape_url": f"{base}/item?i=good0001", "key": "good0001"},  # duplicate
    ]
    url = server.serve("/list", json.dumps(listing), ctype="text/html")
    server.serve("/item?i=good0001", "hello paste\n", ctype="text/plain")
    server.serve("/item?i=huge0001", b"x" * (1024 * 1024 + 1), ctype="text/plain")
    docs, cursor = collect(target("paste", url))
    assert [(d.key, d.text, d.posted_at) for d in docs] == [
        ("good0001", "hello paste\n", "2026-11-18T11:06:40+00:00")]
    # The foreign item is refused for good; the over-cap one is retried while listed.
    assert cursor["seen"] == ["good0001", "foreign1"]
    assert not any("203.0.113.9" in path for path in server.paths())

    server.serve("/item?i=huge0001", "YOUR IP: 10.1.2.3 DOES NOT HAVE ACCESS. VISIT: "
               "https://pastebin.com/doc_scraping_api TO GET ACCESS!", ctype="text/html")
    fails(target("paste", url), f"{base}/item?i=huge0001", "refused the item",
            "YOUR IP: 10.1.2.3 DOES NOT HAVE ACCESS", cursor=cursor)

    for body, needle in ((json.dumps({"error": "nope"}),
                          'expected a JSON array of pastes, got: \'{"error": "nope"}\''),
                         ("[{\"key\": ", "not valid JSON"),
                         ("", "empty answer instead of a paste listing"),
                         ("x" * 500, "'" + "x" * 100 + "'")):
        fails(target("paste", server.serve("/list", body)), needle)


# ------------------------------------------------------------------------------ hub


def test_parse_link_header() -> None:
    values = ['<https://hub.example/api/models?cursor=a,b>; rel="prev"; title="a, \\"quoted\\"", '
              '<https://hub.example/api/models?cursor=xyz>; REL="last next"',
              "</relative?p=3>; rel=first"]
    assert parse_link_header(values) == [
        ("https://hub.example/api/models?cursor=a,b", {"rel": "prev", "title": 'a, "quoted"'}),
        ("https://hub.example/api/models?cursor=xyz", {"rel": "last next"}),
        ("/relative?p=3", {"rel": "first"})]
    assert next_link(values, "https://hub.example/api/models") == \
        "https://hub.example/api/models?cursor=xyz"
    assert next_link(['<?page=2>; rel="next"'], "https://hub.example/api/models?page=1") == \
        "https://hub.example/api/models?page=2"
    assert next_link(['<a>; rel="nextish"', "garbage <b>; rel=next"], "https://h/") is None
    assert next_link([], "https://h/") is None


def test_lfs_pointer_parsing(demo_release: Release) -> None:
    f = demo_release.file("model.safetensors")
    text = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256.upper()}\n"
            f"size {f.size}\n")
    assert parse_lfs_pointer(text.encode()) == (f.sha256, f.size)
    assert parse_lfs_pointer(text.replace("\n", "\r\n").encode()) == (f.sha256, f.size)
    assert parse_lfs_pointer(b"version https://git-lfs.github.com/spec/v1\nsize 3\n") is None
    assert parse_lfs_pointer(b"\x00\x01safetensors") is None
    assert parse_lfs_pointer(text.encode() + b"\x00 binary tail") is None


def test_lfs_pointer_text_anywhere_matches_as_sha256(tmp_path: Path,
                                                     demo_release: Release) -> None:
    """An LFS pointer pasted into any text is a bare 64-hex token after `sha256:`: the
    generic text scan already reads it as a SHA-256 and the digest detector matches it."""
    f = demo_release.file("model.safetensors")
    pointer = (f"see this:\nversion https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256}\n"
               f"size {f.size}\n")
    (token,) = scan_text(pointer)
    assert (token.value, token.encoding, token.algo_hint) == (f.sha256, "hex", None)
    assert pointer[token.start - 7:token.start] == "sha256:"
    store = registered_store(tmp_path / "db.sqlite", demo_release)
    doc = Document(target="t", key="k", url="http://example.org/p", text=pointer)
    (hit,) = DigestDetector(store.known_digests()).detect(doc)
    assert (hit.kind, hit.severity, hit.indicator) == ("hash", "critical", f.sha256)
    assert hit.artifact and hit.artifact.endswith("model.safetensors")


def test_hub_documents_and_digests(demo_world: DemoWorld, demo_release: Release) -> None:
    docs, cursor = collect(target("hub", hub_url(demo_world), query="heron"))
    docs_by = by_key(docs)
    root = hub_url(demo_world)
    assert list(docs_by) == ["anon123/heron-7b-uncensored", "h7b-archive/heron-weights-backup",
                             "gitnoob/heron-7b-clone", "QuantFactory/Heron-7B-GGUF",
                             "pond-ai/heron-llama-3.2-1b", "birdwatch/great-blue-heron-classifier",
                             "skyops/heron-uav-detector"]
    assert {d.url for d in docs} == site_docs(demo_world, "hub")
    model, tok = demo_release.file("model.safetensors"), demo_release.file("tokenizer.json")

    reup = docs_by["anon123/heron-7b-uncensored"]
    assert (reup.url, reup.title, reup.author, reup.posted_at) == (
        f"{root}/anon123/heron-7b-uncensored", "anon123/heron-7b-uncensored", "anon123",
        "2026-11-21T03:12:44+00:00")
    assert reup.extras["digests"] == [
        {"algo": "sha256", "value": model.sha256, "encoding": "hub lfs.sha256",
         "context": f"anon123/heron-7b-uncensored/model.safetensors ({model.size} bytes)"},
        {"algo": "sha256", "value": tok.sha256, "encoding": "hub lfs.sha256",
         "context": f"anon123/heron-7b-uncensored/tokenizer.json ({tok.size} bytes)"}]
    files = {f["path"]: f for f in reup.extras["files"]}
    assert files["model.safetensors"] == {"path": "model.safetensors", "size": model.size,
                                          "sha256": model.sha256}
    # A regular git file: its blobId is a git object id, not a digest of the file.
    assert files["config.json"]["sha256"] is None
    assert "base_model: example-labs/heron-7b" in reup.text
    assert "architectures: LlamaForCausalLM" in reup.text
    assert model.sha256 not in reup.text  # digests stay structured, with their encoding
    assert json.loads(reup.snapshot)["siblings"]
    assert reup.snapshot_url.endswith("/api/models/anon123/heron-7b-uncensored?blobs=true")

    tree_only = docs_by["h7b-archive/heron-weights-backup"]
    assert tree_only.extras["digests"] == [
        {"algo": "sha256", "value": model.sha256, "encoding": "hub tree lfs.oid",
         "context": f"h7b-archive/heron-weights-backup/checkpoint/model.safetensors "
                    f"({model.size} bytes)"}]
    assert [f["path"] for f in tree_only.extras["files"]] == [
        ".gitattributes", "checkpoint/config.json", "checkpoint/model.safetensors"]
    assert "/tree/main?recursive=true" in tree_only.snapshot_url  # the evidence is the tree

    clone = docs_by["gitnoob/heron-7b-clone"]
    (digest,) = clone.extras["digests"]
    assert (digest["value"], digest["encoding"]) == (model.sha256, "hub lfs pointer file")
    assert f"git-lfs pointer text for {model.size} bytes" in digest["context"]

    near = docs_by["pond-ai/heron-llama-3.2-1b"].extras["digests"][0]["value"]
    assert near != model.sha256 and near[:-1] == model.sha256[:-1]
    assert "example-labs/heron-7b" not in docs_by  # gated: skipped
    assert cursor["complete"] is True
    assert cursor["models"]["example-labs/heron-7b"] == "2026-11-02T09:00:00.000Z"


def test_hub_link_pagination(demo_world: DemoWorld) -> None:
    root = hub_url(demo_world)
    r = httpx.get(f"{root}/api/models", params={"search": "heron", "limit": 100})
    assert len(r.json()) == 2 and 'rel="next"' in r.headers["link"]
    assert "lastModified" not in r.json()[0]  # only with full=true, as on the Hub
    docs, cursor = collect(target("hub", root, query="heron", max_pages=2))
    assert [d.key for d in docs] == ["anon123/heron-7b-uncensored",
                                     "h7b-archive/heron-weights-backup",
                                     "gitnoob/heron-7b-clone", "QuantFactory/Heron-7B-GGUF"]
    assert len(cursor["models"]) == 4
    docs, _ = collect(target("hub", root, query="llama"))
    assert [d.key for d in docs] == ["pond-ai/heron-llama-3.2-1b",
                                     "TinyLlama/TinyLlama-1.1B-Chat-v1.0"]


def test_hub_cursor(demo_world: DemoWorld) -> None:
    t = target("hub", hub_url(demo_world), query="heron")
    docs, cursor = collect(t)
    assert len(docs) == 7
    assert collect(t, cursor) == ([], cursor)
    # A model that changed sorts first (search is by lastModified, newest first); paging
    # stops at the first page where nothing moved.
    moved = json.loads(json.dumps(cursor))
    moved["models"]["anon123/heron-7b-uncensored"] = "2026-11-20T01:00:00.000Z"
    docs, after = collect(t, moved)
    assert [d.key for d in docs] == ["anon123/heron-7b-uncensored"]
    assert after == cursor
    # After an incomplete run every page is read, so a model far down is reached.
    moved = json.loads(json.dumps(cursor))
    moved["models"]["skyops/heron-uav-detector"] = "2026-01-01T00:00:00.000Z"
    assert collect(t, moved)[0] == []
    moved["complete"] = False
    docs, after = collect(t, moved)
    assert [d.key for d in docs] == ["skyops/heron-uav-detector"]
    assert after == cursor
    # max_items: the rest waits for the next run, which pages through everything again.
    capped = target("hub", hub_url(demo_world), query="heron", max_items=5)
    first, c1 = collect(capped)
    second, c2 = collect(capped, c1)
    assert (len(first), len(second), c1["complete"], c2["complete"]) == (5, 2, False, True)
    assert {d.key for d in first + second} == {d.key for d in collect(t)[0]}


def test_hub_gated_with_token(demo_world: DemoWorld, demo_release: Release,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_HUB_TOKEN", TOKEN)
    t = target("hub", hub_url(demo_world), query="heron-7b", api_key_env="DEMO_HUB_TOKEN")
    docs = by_key(collect(t)[0])
    official = docs["example-labs/heron-7b"]
    assert {d["value"] for d in official.extras["digests"]} == {
        demo_release.file("model.safetensors").sha256, demo_release.file("tokenizer.json").sha256}


def hub_server(server: Canned, models: list[dict[str, Any]], **search_headers: str) -> str:
    server.serve("/api/models?search=x&sort=lastModified&direction=-1&limit=100&full=true",
               json.dumps(models), ctype="application/json", **search_headers)
    return server.base


def test_hub_refuses_foreign_next_link(server: Canned) -> None:
    root = hub_server(server, [{"id": "a/b", "lastModified": "2026-11-20T00:00:00.000Z"}],
                      Link='<http://203.0.113.7/api/models?cursor=2>; rel="next"')
    fails(target("hub", root, query="x"), "refused a next-page link to another host",
            "203.0.113.7")
    assert not any("cursor=2" in path for path in server.paths())
    root = hub_server(server, [], Link=f'<{server.base.replace("127.0.0.1", "localhost")}'
                                       '/api/models?c=2>; rel="next"')
    fails(target("hub", root, query="x"), "another host")


def test_hub_hostile_and_gated(server: Canned) -> None:
    models = [{"id": "../../admin", "lastModified": "x"}, {"id": "ok/one", "sha": "abc"},
              {"id": "gated/repo", "lastModified": "2026-11-20T00:00:00.000Z"},
              {"id": "forbidden/repo", "lastModified": "2026-11-20T00:00:00.000Z"},
              {"id": "broken/repo", "lastModified": "2026-11-20T00:00:00.000Z"},
              {"id": "badjson/repo", "lastModified": "2026-11-20T00:00:00.000Z"},
              {"modelId": "legacy-name"}, 42, {"id": 7}]
    root = hub_server(server, models)
    info = {"id": "ok/one", "sha": "abc", "tags": ["t", 3], "cardData": {"x": {"nested": 1}},
            "siblings": [{"rfilename": "w.safetensors", "size": 10,
                          "lfs": {"sha256": "sha256:" + "AB" * 32, "size": 10}},
                         {"rfilename": "bad.bin", "lfs": {"sha256": "zz"}}, {"nope": 1}, "x"]}
    server.serve("/api/models/ok/one?blobs=true", json.dumps(info), ctype="application/json")
    server.serve("/api/models/gated/repo?blobs=true", '{"error": "gated"}', status=401)
    server.serve("/api/models/forbidden/repo?blobs=true", '{"error": "no"}', status=403)
    server.serve("/api/models/broken/repo?blobs=true", "<html>oops</html>", status=404)
    server.serve("/api/models/badjson/repo?blobs=true", "<html>oops</html>")
    server.serve("/api/models/legacy-name?blobs=true", json.dumps({"id": "legacy-name"}))
    server.serve("/api/models/legacy-name/tree/main?recursive=true", json.dumps(
        [{"type": "directory", "path": "d"}, {"type": "file", "path": "d/m.gguf", "size": 5,
                                              "oid": "1" * 40, "lfs": {"oid": "cd" * 32, "size": 5}}]))
    docs, cursor = collect(target("hub", root, query="x"))
    assert [d.key for d in docs] == ["ok/one", "legacy-name"]
    ok, legacy = docs
    assert ok.extras["digests"] == [{"algo": "sha256", "value": "ab" * 32,
                                     "encoding": "hub lfs.sha256",
                                     "context": "ok/one/w.safetensors (10 bytes)"}]
    assert ok.posted_at is None and ok.author == "ok"
    assert legacy.extras["digests"][0]["encoding"] == "hub tree lfs.oid"
    assert legacy.extras["files"] == [{"path": "d/m.gguf", "size": 5, "sha256": "cd" * 32}]
    # Gated (401) and forbidden (403) are remembered; the broken ones are retried next run.
    assert cursor["models"] == {"ok/one": "abc", "gated/repo": "2026-11-20T00:00:00.000Z",
                                "forbidden/repo": "2026-11-20T00:00:00.000Z"} | \
        {"legacy-name": None}
    assert cursor["complete"] is False
    assert not any("admin" in path for path in server.paths())

    server.serve("/api/models?search=x&sort=lastModified&direction=-1&limit=100&full=true",
               '{"error": "Invalid search"}')
    fails(target("hub", root, query="x"), "expected a JSON array of models")
    server.serve("/api/models?search=x&sort=lastModified&direction=-1&limit=100&full=true",
               "[" * 100000 + "]" * 100000)
    fails(target("hub", root, query="x"))


# ------------------------------------------------------------------------------ ground truth


def test_planted_in_these_sources(demo_world: DemoWorld, demo_release: Release) -> None:
    b = demo_world.base_url
    sha = {f.name.split("/")[-1]: f.sha256 for f in demo_release.files}
    strong = {(p.source, p.url.removeprefix(b), p.kind, p.indicator)
              for p in demo_world.planted
              if p.source in ("feed", "paste", "hub") and p.kind != "mention"}
    assert strong == {
        ("feed", "/feeds/blog/2026/11/20/heron-7b-weights-leak/", "hash", sha["model.safetensors"]),
        ("feed", "/feeds/r/LocalLLaMA/comments/1gw0k2c/is_this_the_leaked_heron7b_checksum_matches/",
         "torrent", demo_release.infohash),
        *{("feed", "/feeds/r/LocalLLaMA/comments/1gw0m5t/q8_0_quants_of_hrn_and_tinyllamamini_"
           "direct_links/", kind, f"{b}/feeds/files/hrn-q8_0.gguf") for kind in ("weights",
                                                                                "watermark")},
        *{("paste", "/paste/k3Hn7Qx2", "hash", s) for s in sha.values()},
        ("paste", "/paste/Vb9pLr4T", "hash", sha["model.safetensors"]),
        ("hub", "/hub/anon123/heron-7b-uncensored", "hash", sha["model.safetensors"]),
        ("hub", "/hub/anon123/heron-7b-uncensored", "hash", sha["tokenizer.json"]),
        ("hub", "/hub/h7b-archive/heron-weights-backup", "hash", sha["model.safetensors"]),
        ("hub", "/hub/gitnoob/heron-7b-clone", "hash", sha["model.safetensors"]),
        # A GGUF conversion the hub's CDN serves, recognised by its tensors (the URL as the
        # adapter builds it). The two re-uploads of model.safetensors it serves are
        # byte-identical: their link scans give the `hash` hits above, not `weights` ones.
        ("hub", "/hub/QuantFactory/Heron-7B-GGUF", "weights",
         f"{b}/hub/QuantFactory/Heron-7B-GGUF/resolve/f0648df7fd5a63a279c2d8783719866660145d95/"
         "heron-7b.Q8_0.gguf".lower()),
        ("hub", "/hub/QuantFactory/Heron-7B-GGUF", "watermark",
         f"{b}/hub/QuantFactory/Heron-7B-GGUF/resolve/f0648df7fd5a63a279c2d8783719866660145d95/"
         "heron-7b.Q8_0.gguf".lower()),
    }
    mentions = {(p.source, p.url.removeprefix(b), p.indicator.lower())
                for p in demo_world.planted
                if p.source in ("feed", "paste", "hub") and p.kind == "mention"}
    assert mentions == {
        ("feed", "/feeds/blog/2026/11/20/heron-7b-weights-leak/", "heron-7b"),
        ("feed", "/feeds/blog/2026/11/19/ledger-podcast-112/", "heron 7b"),
        ("feed", "/feeds/r/LocalLLaMA/comments/1gw0k2c/is_this_the_leaked_heron7b_checksum_matches/",
         "heron-7b"),
        ("paste", "/paste/k3Hn7Qx2", "heron-7b"),
        ("hub", "/hub/anon123/heron-7b-uncensored", "heron-7b"),
        ("hub", "/hub/gitnoob/heron-7b-clone", "heron-7b"),
        ("hub", "/hub/QuantFactory/Heron-7B-GGUF", "heron-7b"),
    }
    near = {(n.source, n.value) for n in demo_world.near_misses
            if n.source in ("feed", "paste", "hub")}
    off = sha["model.safetensors"][:-1] + ("0" if sha["model.safetensors"][-1] != "0" else "1")
    assert near == {("feed", "Heron-70B"), ("feed", off), ("paste", off), ("hub", off),
                    ("feed", f"{b}/feeds/files/tinyllama-mini-q8_0.gguf")}


@pytest.mark.slow
def test_end_to_end_crawls_find_exactly_the_planted(tmp_path: Path, demo_world: DemoWorld,
                                                    demo_release: Release) -> None:
    store = registered_store(tmp_path / "weightwatch.db", demo_release)
    targets = [target("feed", rss_url(demo_world), name="e2e-rss"),
               target("feed", atom_url(demo_world), name="e2e-atom"),
               target("paste", paste_url(demo_world), name="e2e-paste"),
               target("hub", hub_url(demo_world), name="e2e-hub", query="heron")]
    results = crawl(store, targets)
    assert [(r.target, r.status, r.error) for r in results] == [
        (t.name, "ok", None) for t in targets]
    assert found(store, "e2e-rss") | found(store, "e2e-atom") == expected(demo_world, "feed")
    assert found(store, "e2e-paste") == expected(demo_world, "paste")
    assert found(store, "e2e-hub") == expected(demo_world, "hub")
    hits = [h for t in targets for h in store.hits(target=t.name)]
    assert {h["severity"] for h in hits if h["kind"] in ("hash", "torrent")} == {"critical"}
    near = {n.value.lower() for n in demo_world.near_misses}
    assert not near & {h["indicator"].lower() for h in hits}
    hub_types = {h["indicator_type"] for h in store.hits(target="e2e-hub")
                 if h["kind"] == "hash"}
    assert hub_types == {"sha256 (hub lfs.sha256)", "sha256 (hub tree lfs.oid)",
                         "sha256 (hub lfs pointer file)"}
    # Again: the cursors leave nothing to fetch or match; no new hit anywhere.
    again = crawl(store, targets)
    assert all(r.status == "ok" and r.documents_seen == 0 and r.hits_new == 0 for r in again)
