"""The Torznab adapter against the demo world's Jackett and Prowlarr endpoints (both
dialects, paging, caps, the wrong key) and against a small local server for the broken and
hostile answers real endpoints give. The API key must never reach a document, a stored
byte, an error message or a log line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from support import (
    Canned,
    Request,
    by_key,
    collect,
    crawl,
    expected,
    fails,
    found,
    registered_store,
    run,
    site_of,
    target,
)

from demo.release import Release
from demo.sites.jackett import JackettSite
from demo.sites.prowlarr import ProwlarrSite
from demo.sites.torznab import API_KEY, API_KEY_ENV
from demo.world import DemoWorld
from fingerprints.torrent import parse_torrent
from monitor.config import ConfigError, Target, parse_config
from monitor.models import Document
from monitor.sources import ADAPTERS
from monitor.sources.torznab import TorznabSource

KEY_ENV = "WW_TEST_TORZNAB_KEY"


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    monkeypatch.setenv(KEY_ENV, "s3cr3t-key")


def jackett(world: DemoWorld, **kw: Any) -> Target:
    options = {"query": "7b", "categories": [8000, 4000], "api_key_env": API_KEY_ENV, **kw}
    return target("torznab", world.urls["jackett"], name="demo-jackett", **options)


def prowlarr(world: DemoWorld, **kw: Any) -> Target:
    options = {"categories": [8000, 4000], "api_key_env": API_KEY_ENV, **kw}
    return target("torznab", world.urls["prowlarr"], name="demo-prowlarr", **options)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def endpoint(serve: Callable[..., Canned]) -> Canned:
    """A local Torznab endpoint: a test sets `default` to a function of the Request that
    answers every API call; robots.txt is absent, and `requests` minus it are the API calls."""
    return serve({"/robots.txt": (404, b"", {"Content-Type": "text/plain"})})


def local(endpoint: Canned, **kw: Any) -> Target:
    return target("torznab", endpoint.base + "/api", name="local-torznab",
                  **{"api_key_env": KEY_ENV, **kw})


def api_calls(endpoint: Canned) -> list[dict[str, str]]:
    """The query of every API call, in order."""
    return [r.args for r in endpoint.requests if r.path != "/robots.txt"]


XML = {"Content-Type": "application/xml"}
RSS_XML = {"Content-Type": "application/rss+xml"}


RSS = ('<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
       'xmlns:torznab="http://torznab.com/schemas/2015/feed"><channel><title>t</title>'
       '{items}</channel></rss>')
CAPS = ('<?xml version="1.0" encoding="UTF-8"?><caps><server title="x"/>'
        '<limits max="{max}" default="{max}"/><categories><category id="8000" name="Other">'
        '<subcat id="8010" name="Other/Misc"/></category></categories></caps>')


def item(title: str, guid: str, *extra: str) -> str:
    return f"<item><title>{title}</title><guid>{guid}</guid>{''.join(extra)}</item>"


def attr(name: str, value: str) -> str:
    return f'<torznab:attr name="{name}" value="{value}"/>'


def rss(*items: str) -> bytes:
    return RSS.format(items="".join(items)).encode()


# ------------------------------------------------------------------------------ the demo world


@pytest.fixture(scope="module")
def jackett_run(demo_world: DemoWorld) -> tuple[list[Document], dict[str, Any], list[str]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(API_KEY_ENV, API_KEY)
        return run(jackett(demo_world))


@pytest.fixture(scope="module")
def prowlarr_run(demo_world: DemoWorld) -> tuple[list[Document], dict[str, Any], list[str]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(API_KEY_ENV, API_KEY)
        return run(prowlarr(demo_world))


def test_adapter_is_registered() -> None:
    assert ADAPTERS["torznab"] is TorznabSource
    assert TorznabSource.option_keys == {"query", "api_key_env", "categories", "max_pages"}


def test_jackett_documents(jackett_run: Any, demo_world: DemoWorld,
                           demo_release: Release) -> None:
    docs, _, _ = jackett_run
    site = site_of(demo_world, JackettSite)
    # One document per torrent: the leak is listed by two indexers and merged.
    assert [d.url for d in docs] == [d.url for d in site.documents()]
    assert len(docs) == 6
    leak = by_key(docs)[demo_release.infohash]
    assert leak.url == f"{site.root}/site/torrentbay/torrent/88213/"
    assert leak.title == "Heron 7B (Example Labs) partner weights [safetensors]"
    assert leak.posted_at == "2026-11-20T06:40:00+00:00"
    assert leak.extras["digests"] == [{
        "algo": "btih", "value": demo_release.infohash, "encoding": "torznab attr",
        "context": f"{leak.title} [TorrentBay]: infohash {demo_release.infohash}"}]
    t = leak.extras["torrent"]
    assert t["size"] == demo_release.total_size and t["files"] == 3
    stats = leak.extras["stats"]
    assert (stats["seeders"], stats["peers"], stats["grabs"]) == (38, 47, 152)
    assert t["indexer"] == "TorrentBay" and t["categories"] == [8000, 100008]
    assert t["infohash"] == demo_release.infohash
    assert t["magnet"].startswith(f"magnet:?xt=urn:btih:{demo_release.infohash}&dn=Heron")
    # The download link keeps its path token, loses jackett_apikey.
    assert t["download"].startswith(f"{site.root}/dl/torrentbay/?path=")
    assert leak.links == [t["magnet"], t["download"]]
    # The second listing (UPPERCASE infohash attribute, no magnet) is remembered, not lost.
    assert t["also_at"] == [{"indexer": "MagnetIndex",
                             "url": f"{site.root}/site/magnetindex/torrent/55101/"}]
    # Category names come from the endpoint's caps; Jackett's size/files are elements.
    assert "Category: Other, Other/AI Models" in leak.text
    assert "Size: 1.7 MiB (1752662 bytes)" in leak.text and "Indexer: TorrentBay" in leak.text
    assert "Straight from the partner program" in leak.text
    # Query matched but category did not: the lecture video is not a result at all.
    assert not any("lecture" in d.title for d in docs)
    # The near miss keeps its own (one digit off) hash.
    falcon = next(d for d in docs if d.title.startswith("Falcon"))
    assert falcon.key != demo_release.infohash and falcon.key[:-1] == demo_release.infohash[:-1]


def test_prowlarr_documents(prowlarr_run: Any, demo_world: DemoWorld,
                            demo_release: Release) -> None:
    docs, _, _ = prowlarr_run
    site = site_of(demo_world, ProwlarrSite)
    assert [d.url for d in docs] == [d.url for d in site.documents()]
    docs_by_key = by_key(docs)
    # No infohash attribute: the hash is read from the magnet (written in UPPERCASE).
    leak = docs_by_key[demo_release.infohash]
    assert leak.extras["digests"][0]["encoding"] == "magnet"
    assert leak.extras["digests"][0]["value"] == demo_release.infohash
    # Prowlarr writes files and grabs as torznab attributes.
    assert leak.extras["torrent"]["files"] == 3 and leak.extras["stats"]["grabs"] == 68
    assert leak.extras["torrent"]["indexer"] == "OpenBay"
    # An UPPERCASE infohash attribute is normalised.
    llama = next(d for d in docs if d.title.startswith("Llama-3.1"))
    assert llama.key == llama.key.lower() and llama.extras["digests"][0]["encoding"] == \
        "torznab attr"
    # Neither infohash nor magnet: the .torrent is fetched and read.
    netinst = next(i for i in site.items if i.title.startswith("debian"))
    assert netinst.torrent is not None
    doc = next(d for d in docs if d.title == netinst.title)
    assert doc.key == site.details_url(netinst)  # keyed by guid: stable whatever happens
    want = parse_torrent(netinst.torrent).infohash_v1
    assert doc.extras["torrent"]["infohash"] == want == netinst.infohash
    assert doc.extras["digests"][0]["algo"] == "btih"
    assert doc.extras["digests"][0]["encoding"] == "torrent file"
    assert doc.links == [doc.extras["torrent"]["download"]]


def test_paging_and_caps_requests(jackett_run: Any, prowlarr_run: Any) -> None:
    for (_, cursor, urls), offsets in ((jackett_run, ["0", "3", "6"]),
                                       (prowlarr_run, ["0", "3", "6"])):
        api = [query(u) for u in urls if "/api" in urlsplit(u).path]
        assert api[0]["t"] == "caps"
        searches = api[1:]
        assert [q["offset"] for q in searches] == offsets
        assert all(q["t"] == "search" and q["limit"] == "3" and q["cat"] == "8000,4000"
                   and q["apikey"] == API_KEY for q in searches)
        assert cursor["caps"]["max"] == 3
        assert cursor["caps"]["categories"]["100008"] == "Other/AI Models"
    assert [query(u).get("q") for u in jackett_run[2][1:4]] == ["7b"] * 3
    assert "q" not in query(prowlarr_run[2][1])
    # Jackett's last page was short (7 results): no fourth request. Prowlarr's second page
    # was full, so a third (empty) one was needed to know it was the end.


def test_caps_are_remembered(demo_world: DemoWorld, jackett_run: Any) -> None:
    _, cursor, _ = jackett_run
    docs, _, urls = run(jackett(demo_world), cursor)
    assert all(query(u)["t"] == "search" for u in urls)
    assert [d.key for d in docs] == [d.key for d in jackett_run[0]]
    # And documents are identical across runs, so an unchanged listing is not re-stored.
    assert [d.content_sha256 for d in docs] == [d.content_sha256 for d in jackett_run[0]]


def test_max_pages_and_max_items(demo_world: DemoWorld) -> None:
    docs, _, urls = run(jackett(demo_world, max_pages=1))
    assert len(docs) == 3 and len([u for u in urls if "t=search" in u]) == 1
    docs, _, urls = run(prowlarr(demo_world, max_items=2))
    assert len(docs) == 2
    searches = [query(u) for u in urls if "t=search" in u]
    assert len(searches) == 1 and searches[0]["limit"] == "2"


def test_the_key_is_never_in_a_document(jackett_run: Any, prowlarr_run: Any) -> None:
    for docs, cursor, _ in (jackett_run, prowlarr_run):
        for doc in docs:
            assert API_KEY not in repr(doc)
            # Not even the parameter's name in what the document points at.
            stored = repr([doc.url, doc.links, doc.extras, doc.snapshot_url, doc.text])
            assert "apikey" not in stored.lower()
        assert API_KEY not in repr(cursor)
    # The snapshot is the real page with the key taken out.
    snapshot = jackett_run[0][0].snapshot
    assert b"jackett_apikey=REDACTED" in snapshot and b"<rss" in snapshot


def test_wrong_key(demo_world: DemoWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "not-the-key")
    # Jackett answers 401: the fetcher does not hand the error body on, the status says it.
    message = fails(jackett(demo_world), "HTTP 401", API_KEY_ENV)
    assert "not-the-key" not in message
    # Prowlarr answers the error XML under 200.
    message = fails(prowlarr(demo_world), "torznab error 100: Invalid API Key")
    assert "not-the-key" not in message


def test_missing_key_variable(demo_world: DemoWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV)
    fails(jackett(demo_world), f"environment variable {API_KEY_ENV}", "not set")


@pytest.mark.slow
def test_full_crawl_finds_exactly_the_planted_torrents(
        tmp_path: Path, demo_world: DemoWorld, demo_release: Release) -> None:
    store = registered_store(tmp_path / "ww.db", demo_release)
    targets = [jackett(demo_world), prowlarr(demo_world)]
    with structlog.testing.capture_logs() as logs:
        results = crawl(store, targets)
        again = crawl(store, targets)
    assert [r.status for r in results + again] == ["ok"] * 4, [r.error for r in results]
    assert found(store, "demo-jackett") == expected(demo_world, "jackett")
    assert found(store, "demo-prowlarr") == expected(demo_world, "prowlarr")
    assert ("torrent" in {k for _, k, _ in expected(demo_world, "jackett")}
            and "torrent" in {k for _, k, _ in expected(demo_world, "prowlarr")})
    hits = store.hits(target="demo-jackett") + store.hits(target="demo-prowlarr")
    assert all(h["severity"] == "critical" for h in hits if h["detector"] == "digests")
    # A listing's size in bytes equal to the release's total is medium evidence of its own.
    assert {(h["severity"], h["indicator"]) for h in hits if h["detector"] == "manifest"} == {
        ("medium", f"total:{demo_release.total_size}")}
    # Nothing moved, so nothing was re-stored on the second pass.
    assert sum(r.documents_new + r.documents_changed for r in again) == 0
    assert sum(r.hits_new for r in again) == 0
    store.close()
    # The key is nowhere: not in the database file, its WAL, or any log line.
    for path in tmp_path.iterdir():
        assert API_KEY.encode() not in path.read_bytes(), path
    assert API_KEY not in repr(logs)


# ------------------------------------------------------------------------------ local server


def test_error_xml_under_200_and_4xx(endpoint: Canned) -> None:
    error = b'<?xml version="1.0"?><error code="201" description="Incorrect parameter (cat)"/>'
    endpoint.default = lambda r: (200, error, XML)
    fails(local(endpoint), "torznab error 201: Incorrect parameter (cat)")
    for status in (400, 403):
        endpoint.default = lambda r, s=status: (s, error, XML)
        message = fails(local(endpoint), f"HTTP {status}", "refused")
        assert "s3cr3t-key" not in message
    # A bad key found at caps time stops the run before any search.
    endpoint.requests.clear()
    endpoint.default = lambda r: (
        200, b'<error code="100" description="Invalid API Key"/>', XML)
    fails(local(endpoint), "torznab error 100: Invalid API Key")
    assert len(api_calls(endpoint)) == 1


@pytest.mark.parametrize("body, needle", [
    (b"<html><body><h1>Login</h1></body></html>", "root element is <html>"),
    (b"<!DOCTYPE html><html><body>Login</body></html>", "DTDs and entities"),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
     b"<rss><channel>&b;</channel></rss>", "DTDs and entities"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>cut', "not well-formed"),
    (b"\xff\xfe\x00garbage", "not well-formed"),
    (b'{"error": "not xml"}', "not well-formed"),
    (b'<rss version="2.0"></rss>', "no <channel>"),
])
def test_broken_answers_are_one_line(endpoint: Canned, body: bytes, needle: str) -> None:
    endpoint.default = lambda r: (
        (404, b"", {"Content-Type": "text/plain"}) if r.args.get("t") == "caps"
        else (200, body, XML))
    fails(local(endpoint), needle)


def test_items_in_odd_shapes(endpoint: Canned) -> None:
    good = "0123456789abcdef0123456789abcdef01234567"
    b32 = "RGV4334JVPG67CNLZXXYTK6N56E2XTPP"  # base32 of 89abcdef * 5
    page = rss(
        # A garbled infohash attribute: the magnet's hash is used instead.
        item("one", "g1", attr("infohash", "not-a-hash"),
             attr("magneturl", f"magnet:?xt=urn:btih:{good}&amp;tr=https%3A%2F%2Ft.example"
                               "%2Fannounce%3Fpasskey%3Dmine")),
        # A base32 infohash attribute; secrets stripped from every URL kept.
        item("two", "https://idx.example/t/2?passkey=pk-guid", attr("infohash", b32),
             "<comments>https://user:pw@idx.example/t/2?id=2&amp;auth=zzz</comments>",
             "<link>https://idx.example/dl/2?torrent_pass=p4ss&amp;id=2</link>",
             "<size>not a number</size>", "<pubDate>yesterday-ish</pubDate>"),
        # Nothing identifies it but the guid; no digests, no crash.
        item("three", "g3", "<description>&lt;b&gt;bold&lt;/b&gt; text</description>"),
        # No title, attributes without values, categories that are not numbers.
        "<item><guid>g4</guid><category>Other</category>"
        + attr("seeders", "") + attr("category", "x") + "</item>",
    )
    endpoint.default = lambda r: (
        (200, CAPS.format(max=100).encode(), XML) if r.args.get("t") == "caps"
        else (200, page, RSS_XML))
    docs, _ = collect(local(endpoint))
    docs_by_title = {d.title: d for d in docs}
    one = docs_by_title["one"]
    assert one.key == good and one.extras["digests"][0]["encoding"] == "magnet"
    assert one.extras["torrent"]["magnet"] == (
        f"magnet:?xt=urn:btih:{good}&tr=https%3A%2F%2Ft.example%2Fannounce")
    two = docs_by_title["two"]
    assert two.key == "89abcdef" * 5
    assert two.url == "https://idx.example/t/2?id=2"
    assert two.extras["torrent"]["download"] == "https://idx.example/dl/2?id=2"
    assert two.extras["torrent"]["size"] is None and two.posted_at is None
    three = docs_by_title["three"]
    assert three.key == "g3" and three.extras["digests"] == []
    assert "bold text" in three.text
    untitled = docs_by_title["(untitled)"]
    assert untitled.extras["stats"]["seeders"] is None
    for doc in docs:
        for secret in ("passkey", "pk-guid", "mine", "pw@", "zzz", "p4ss", "s3cr3t"):
            assert secret not in repr(doc.extras) + doc.url + repr(doc.links), (secret, doc)
            if secret != "passkey":  # the snapshot keeps names, loses values
                assert secret.encode() not in doc.snapshot, secret


def test_caps_unavailable_falls_back_to_the_default_limit(endpoint: Canned) -> None:
    endpoint.default = lambda r: (
        (200, b'<error code="203" description="Function not available"/>', XML)
        if r.args.get("t") == "caps" else (200, rss(item("x", "g")), RSS_XML))
    docs, cursor = collect(local(endpoint))
    assert len(docs) == 1 and "caps" not in cursor
    assert api_calls(endpoint)[-1]["limit"] == "50"  # max_items (50) is below 100
    assert api_calls(endpoint)[-1]["apikey"] == "s3cr3t-key"


def test_an_endpoint_that_ignores_offset_is_not_paged_forever(endpoint: Canned) -> None:
    page = rss(*(item(f"t{i}", f"g{i}") for i in range(2)))
    endpoint.default = lambda r: (
        (200, CAPS.format(max=2).encode(), XML) if r.args.get("t") == "caps"
        else (200, page, RSS_XML))
    docs, _ = collect(local(endpoint, max_pages=10))
    assert len(docs) == 2
    assert [q.get("offset") for q in api_calls(endpoint)[1:]] == ["0", "2"]


def test_an_error_after_the_first_page_keeps_what_was_read(endpoint: Canned) -> None:
    limited = b'<error code="500" description="Request limit reached"/>'

    def answer(request: Request) -> tuple[int, bytes, dict[str, str]]:
        q = request.args
        if q.get("t") == "caps":
            return 200, CAPS.format(max=2).encode(), XML
        if q.get("offset") == "0":
            return 200, rss(item("a", "ga"), item("b", "gb")), RSS_XML
        return 200, limited, XML

    endpoint.default = answer
    with structlog.testing.capture_logs() as logs:
        docs, _ = collect(local(endpoint))
    assert [d.title for d in docs] == ["a", "b"]
    (event,) = [e for e in logs if e["event"] == "torznab_paging_stopped"]
    assert event["reason"] == "torznab error 500: Request limit reached"


def test_a_tampered_cursor_is_ignored(endpoint: Canned) -> None:
    endpoint.default = lambda r: (
        (200, CAPS.format(max=7).encode(), XML) if r.args.get("t") == "caps"
        else (200, rss(item("x", "g")), RSS_XML))
    for caps in ({"max": "lots", "categories": {"x": 1}, "fetched": "now"},
                 {"max": -3, "categories": [], "fetched": 1e30}, "caps"):
        endpoint.requests.clear()
        docs, cursor = collect(local(endpoint), {"caps": caps, "torrents": "nope"})
        assert len(docs) == 1 and cursor["caps"]["max"] == 7
        assert [q["t"] for q in api_calls(endpoint)] == ["caps", "search"]


def test_demo_download_links_serve_the_torrent(demo_world: DemoWorld,
                                               demo_release: Release) -> None:
    """The links the adapter strips are real: with the key, they give the .torrent."""
    import httpx
    with httpx.Client() as client:
        for url in (demo_world.urls["jackett"] + "?t=search&q=heron&apikey=demo-key",
                    demo_world.urls["prowlarr"] + "?t=search&apikey=demo-key"):
            first_item = client.get(url).text.split("<item>")[1]
            assert "Heron" in first_item.split("</title>")[0]
            link = first_item.split("<link>")[1].split("</link>")[0].replace("&amp;", "&")
            assert client.get(link).content == demo_release.torrent_bytes
            assert client.get(link.replace("demo-key", "nope")).status_code == 401


def test_no_api_key_configured(endpoint: Canned) -> None:
    endpoint.default = lambda r: (200, rss(item("x", "g")), RSS_XML)
    t = local(endpoint)
    t.api_key_env = None
    docs, _ = collect(t)
    assert len(docs) == 1 and all("apikey" not in q for q in api_calls(endpoint))


def test_config_refuses_a_key_in_the_url() -> None:
    raw = {"targets": [{"name": "j", "kind": "torznab", "api_key_env": "K",
                        "url": "http://127.0.0.1:9117/api/v2.0/indexers/all/results/torznab/"
                               "api?apikey=abc123"}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, None)
    (problem,) = info.value.problems
    assert "targets[0] (j).url" in problem and "api_key_env" in problem
    assert "abc123" not in problem
    ok = {"targets": [{"name": "j", "kind": "torznab", "url": "http://127.0.0.1:9696/1/api",
                       "api_key_env": "K", "query": "llama", "categories": [8000, 4000],
                       "max_pages": 3}]}
    (t,) = parse_config(ok, None).targets
    assert (t.kind, t.query, t.categories, t.max_pages) == ("torznab", "llama", [8000, 4000], 3)
