"""The Telegram web-preview adapter (t.me/s/CHANNEL) over real HTTP on loopback.

The demo world's channels are the good case: messages with their text, links, forwards and
attached files, paging back by `?before=`, the cursor, and a crawl whose hits are exactly
what the world planted (the magnet, the mention, and model.safetensors attached with its
rounded size: a medium manifest hit, not a high one). A Canned server (tests/support.py)
serves what a hostile or broken host would: endless and looping `data-before`, redirects
into the private network, pages over the size cap, malformed markup, the landing page of a
channel without a preview. Each ends in a one-line error, or is skipped, and a burst of
messages larger than the page budget is read by later runs, not lost.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup
from hostile_http import HostileServer, Reply
from support import (
    FAST,
    Canned,
    Corner,
    Request,
    by_key,
    collect,
    crawl,
    expected,
    fails,
    found,
    registered_store,
    run,
    target,
)

from demo.release import Release
from demo.sites.telegram import TelegramSite, tg_size
from demo.world import DemoWorld
from monitor.config import AlertSettings, Config, ConfigError, CrawlSettings, parse_config
from monitor.crawler import dry_run
from monitor.detect.manifest import ManifestDetector
from monitor.fetch import FetchError
from monitor.models import Document
from monitor.sources.telegram import preview_url, size_range

PLANTED_FILE = 104  # model.safetensors attached, on the second page
MAGNET_MESSAGE = 121
REPLY = 122  # quotes the magnet message
NEAR_MISS = 106


@pytest.fixture(scope="module")
def drops(demo_world: DemoWorld) -> Any:
    return target("telegram", f"{demo_world.base_url}/telegram/s/herondrops")


@pytest.fixture(scope="module")
def drops_run(drops: Any) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(drops)


@pytest.fixture(scope="module")
def server() -> Iterator[Canned]:
    canned = Canned()
    yield canned
    canned.close()


@pytest.fixture
def corner(server: Canned) -> Corner:
    return server.corner()


# ------------------------------------------------------------------------------ the demo


def test_messages_are_documents_at_their_permalinks(drops_run: Any, demo_world: DemoWorld,
                                                    demo_release: Release) -> None:
    docs, cursor, urls = drops_run
    root = f"{demo_world.base_url}/telegram"
    by = by_key(docs)
    world = {d.url: d for d in demo_world.documents if d.url.startswith(f"{root}/herondrops/")}
    assert {d.url for d in docs} == set(world)
    assert urls == [f"{root}/s/herondrops", f"{root}/s/herondrops?before=111"]
    assert "herondrops/101" not in by and "herondrops/130" not in by, "service messages"
    assert cursor == {"newest_id": 132}

    leak = by[f"herondrops/{PLANTED_FILE}"]
    size = demo_release.file("model.safetensors").size
    shown = tg_size(size)
    assert leak.url == f"{root}/herondrops/{PLANTED_FILE}"
    assert leak.posted_at == "2026-11-18T13:45:00+00:00" and leak.author == "H7B drops"
    assert leak.extras["telegram"]["forwarded_from"] == {
        "name": "Weights Vault", "url": f"{root}/weightsvault/88"}
    assert leak.extras["file_list"]["label"] == "Telegram attachment"
    [attached] = leak.extras["file_list"]["files"]
    assert attached["path"] == "model.safetensors" and attached["size_text"] == shown
    assert attached["size_min"] <= size <= attached["size_max"]
    assert "length" not in attached, "a rounded size is never stated as an exact one"
    assert leak.text.splitlines()[-2:] == ["Forwarded from Weights Vault",
                                           f"model.safetensors ({shown})"]

    magnet = by[f"herondrops/{MAGNET_MESSAGE}"]
    assert demo_release.infohash in magnet.text and "Heron-7B" in magnet.text
    # The reply shows the parent's text as a quote: not the reply's own words.
    reply = by[f"herondrops/{REPLY}"]
    assert reply.text == "lol the mods will nuke this within the hour"
    # A link in the text and the link preview's; an audio file's performer is not a size.
    assert by["herondrops/109"].links == ["https://huggingface.co/google/gemma-4-9b-preview"]
    audio = by["herondrops/110"]
    assert "file_list" not in audio.extras
    assert audio.extras["telegram"]["files"][0]["size_min"] is None
    for doc in docs:
        assert doc.text.strip() and doc.posted_at and doc.snapshot


def test_second_run_reads_one_page_and_nothing_again(drops: Any, drops_run: Any) -> None:
    docs, cursor, urls = run(drops, drops_run[1])
    assert docs == [] and urls == [drops.url] and cursor == drops_run[1]


def test_crawl_finds_exactly_what_the_world_planted(tmp_path: Path, demo_world: DemoWorld,
                                                    demo_release: Release) -> None:
    site = demo_world.site(TelegramSite)
    targets = [target("telegram", f"{site.root}/s/herondrops", name="demo-telegram"),
               target("telegram", f"{site.root}/s/heronshots", name="demo-telegram-herons")]
    with registered_store(tmp_path / "ww.db", demo_release) as store:
        results = crawl(store, targets)
        assert [r.status for r in results] == ["ok", "ok"], results
        hits = found(store, "demo-telegram") | found(store, "demo-telegram-herons")
        assert hits == expected(demo_world, "telegram")
        kinds = {h["indicator"].lower(): h for h in store.hits(target="demo-telegram")}
    shown = tg_size(demo_release.file("model.safetensors").size).lower()
    rounded = kinds[f"model.safetensors:~{shown}"]
    assert rounded["severity"] == "medium" and rounded["detector"] == "manifest"
    assert "within the rounding" in rounded["context"] and rounded["recipient"] is None
    assert kinds[demo_release.infohash]["severity"] == "critical"


def test_targets_test_dry_run(demo_world: DemoWorld, tmp_path: Path,
                              demo_release: Release) -> None:
    site = demo_world.site(TelegramSite)
    t = target("telegram", f"{site.root}/s/herondrops", name="demo-telegram")
    config = Config(path=None, database_path=tmp_path / "x.db", crawl=FAST,
                    alerts=AlertSettings(), smtp=None, targets=[t], rules=[])
    with registered_store(tmp_path / "ww.db", demo_release) as store:
        manifest = ManifestDetector(store.artifacts(), store.imported_files())
        previews = asyncio.run(dry_run(t, config, [manifest]))
    hits = {(p.document.url, h.indicator) for p in previews for h in p.hits}
    shown = tg_size(demo_release.file("model.safetensors").size)
    assert hits == {(f"{site.root}/herondrops/{PLANTED_FILE}", f"model.safetensors:~{shown}")}


def test_channel_without_a_preview_fails_in_one_line(demo_world: DemoWorld) -> None:
    t = target("telegram", f"{demo_world.base_url}/telegram/s/h7bvault")
    fails(t, "landing page", "private channel")


def test_the_imitation_reads_as_t_me_does_to_a_third_party_scraper(
        client: httpx.Client, demo_world: DemoWorld) -> None:
    """Read the demo's preview the way snscrape's telegram module reads t.me (bs4, its
    selectors, its paging by the data-before link's href), not with our parser."""
    url, posts = "/telegram/s/herondrops", []
    while url:
        soup = BeautifulSoup(client.get(url).text, "lxml")
        for post in reversed(soup.find_all("div", attrs={"class": "tgme_widget_message",
                                                          "data-post": True})):
            date = post.find("a", class_="tgme_widget_message_date")
            stamp = date.find("time", datetime=True)["datetime"]
            assert datetime.fromisoformat(stamp).utcoffset() is not None
            posts.append((post["data-post"], date["href"]))
        more = soup.find("a", attrs={"class": "tme_messages_more", "data-before": True})
        url = more["href"] if more else ""
    root = f"{demo_world.base_url}/telegram"
    assert len(posts) == 28 and len({p for p, _ in posts}) == 28
    assert all(href == f"{root}/{post}" for post, href in posts)
    assert client.get(posts[0][1]).status_code == 200  # a permalink opens
    landing = client.get("/telegram/s/h7bvault", follow_redirects=False)
    assert landing.status_code == 302 and landing.headers["location"] == "/telegram/h7bvault"


# ------------------------------------------------------------------------------ sizes


def test_a_rounded_size_stands_for_a_range() -> None:
    # "1.7 MB", rounded (1.65..1.75 MiB) or cut (1.7..1.8 MiB): both are read.
    assert size_range("1.7 MB") == (1730151, 1887436)
    assert size_range("4.1 GB") == (4348654388, 4509715660)
    assert size_range("812 KB") == (830976, 832511)
    assert size_range("0.5 kb") == (461, 614)
    assert size_range("512 B") == (512, 512)
    for junk in ("Farm Channel", "", "1.7", "MB", "1.7.3 MB", "9" * 20 + " GB", "-1 MB",
                 "1,5 MB extra", "NaN MB", "1e3 MB"):
        assert size_range(junk) is None, junk


def test_manifest_reads_a_rounded_size_as_weaker_evidence() -> None:
    size = 1_735_240
    rows = [{"id": 1, "model": "heron-7b", "name": "heron-7b/model.safetensors", "size": size,
             "release": "v1", "recipient": None},
            {"id": 2, "model": "heron-7b", "name": "heron-7b/model.safetensors",
             "size": size + 88, "release": "v1", "recipient": "lab-17"}]
    detector = ManifestDetector(rows)

    def hits(files: list[dict[str, Any]]) -> list[Any]:
        doc = Document(target="t", key="k", url="u", text="",
                       extras={"file_list": {"label": "Telegram attachment", "name": "x",
                                             "files": files}})
        return detector.detect(doc)

    def entry(name: str, shown: str) -> dict[str, Any]:
        low, high = size_range(shown)  # type: ignore[misc]
        return {"path": name, "size_text": shown, "size_min": low, "size_max": high}

    [hit] = hits([entry("model.safetensors", "1.7 MB")])
    assert hit.severity == "medium" and hit.indicator == "model.safetensors:~1.7 MB"
    assert hit.recipient is None, "a rounded size cannot tell the copies apart"
    assert "1730151 to 1887436 bytes" in hit.context
    assert hits([entry("model.safetensors", "1.9 MB")]) == []
    # Only a recipient's copy registered under that name: still no recipient named.
    [copy] = ManifestDetector(rows[1:]).detect(Document(
        target="t", key="k", url="u", text="",
        extras={"file_list": {"label": "Telegram attachment", "name": "x",
                              "files": [entry("model.safetensors", "1.7 MB")]}}))
    assert copy.recipient is None and "lab-17" not in copy.context
    assert hits([entry("other.safetensors", "1.7 MB")]) == []
    # An exact length is the stronger rule, whatever else the entry says.
    [exact] = hits([{**entry("model.safetensors", "1.7 MB"), "length": size}])
    assert exact.severity == "high" and exact.indicator == f"model.safetensors:{size}"
    # Hostile entries are skipped.
    assert hits([{"path": "model.safetensors", "size_text": "1.7 MB", "size_min": True,
                  "size_max": 2 * size},
                 {"path": "model.safetensors", "size_text": "x", "size_min": 0,
                  "size_max": 10**12},
                 {"path": 7, "size_text": "1.7 MB", "size_min": size, "size_max": size},
                 "model.safetensors"]) == []


# ------------------------------------------------------------------------------ config


def test_url_must_name_a_channel() -> None:
    assert preview_url("https://t.me/heronleaks") == "https://t.me/s/heronleaks"
    assert preview_url("https://t.me/s/heronleaks/", 40) == "https://t.me/s/heronleaks?before=40"
    for url in ("https://t.me/", "https://t.me/s/", "https://t.me/s/bad-name!"):
        with pytest.raises(ConfigError) as info:
            parse_config({"targets": [{"name": "tg", "kind": "telegram", "url": url}]},
                         Path("config.toml"))
        assert any("does not name a channel" in p for p in info.value.problems), url
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": [{"name": "tg", "kind": "telegram", "url": "https://t.me/s/x",
                                   "query": "heron"}]}, Path("config.toml"))
    assert any("does not apply" in p for p in info.value.problems)


# ------------------------------------------------------------------------------ hostile hosts


def message(channel: str, i: int, text: str = "", extra: str = "") -> str:
    return (f'<div class="tgme_widget_message_wrap js-widget_message_wrap"><div class='
            f'"tgme_widget_message js-widget_message" data-post="{channel}/{i}">{extra}'
            f'<div class="tgme_widget_message_text js-message_text">{text or f"post {i}"}</div>'
            f'<a class="tgme_widget_message_date" href="https://t.me/{channel}/{i}"><time '
            f'datetime="2026-11-20T10:{i % 60:02d}:00+00:00" class="time">10:00</time></a>'
            f"</div></div>")


def page(channel: str, ids: list[int], before: int | None) -> bytes:
    more = (f'<a href="/s/{channel}?before={before}" class="tme_messages_more js-messages_more" '
            f'data-before="{before}"></a>' if before is not None else "")
    body = "".join(message(channel, i) for i in sorted(ids))
    return (f'<html><body><section class="tgme_channel_history js-message_history">{more}{body}'
            f"</section></body></html>").encode()


class Channel:
    """A channel served by a Canned corner as t.me pages it: 20 messages a page."""

    def __init__(self, corner: Corner, ids: list[int]) -> None:
        self.corner, self.ids = corner, ids
        self.url = corner.serve("/s/chan", self.answer)

    def answer(self, request: Request) -> tuple[int, bytes, dict[str, str]]:
        before = int(request.args.get("before", 10**9))
        older = [i for i in self.ids if i < before]
        shown = sorted(older)[-20:]
        more = shown[0] if len(older) > len(shown) else None
        return 200, page("chan", shown, more), {"Content-Type": "text/html"}


def test_a_burst_beyond_max_pages_is_read_by_later_runs(corner: Corner) -> None:
    channel = Channel(corner, list(range(1, 31)))
    t = target("telegram", channel.url, max_pages=1)
    docs, cursor = collect(t)
    assert len(docs) == 20 and cursor == {"newest_id": 30}
    channel.ids += list(range(31, 91))  # 60 new messages: three pages, one page a run
    seen: set[str] = {d.key for d in docs}
    for _ in range(5):
        docs, cursor = collect(t, cursor)
        assert not {d.key for d in docs} & seen, "nothing is read twice"
        seen |= {d.key for d in docs}
    assert seen == {f"chan/{i}" for i in range(11, 91)}, "nothing new is lost"
    assert cursor == {"newest_id": 90, "gaps": []}


@pytest.mark.parametrize("max_pages", [1, 3])
def test_bursts_between_runs_are_each_read_once(corner: Corner, max_pages: int) -> None:
    rng = random.Random(max_pages)
    channel = Channel(corner, list(range(1, 6)))
    t = target("telegram", channel.url, max_pages=max_pages)
    docs, cursor = collect(t)
    read = [d.key for d in docs]
    next_id = 6
    for burst in [rng.randrange(0, 70) for _ in range(4)] + [0] * 8:
        new = [i for i in range(next_id, next_id + burst) if rng.random() > 0.1]  # deletions
        channel.ids += new
        next_id += burst
        docs, cursor = collect(t, cursor)
        read += [d.key for d in docs]
    assert sorted(read, key=lambda k: int(k.split("/")[1])) == [f"chan/{i}" for i in channel.ids]
    assert not cursor.get("gaps") and cursor["newest_id"] == channel.ids[-1]


def test_endless_paging_stops_at_max_pages(corner: Corner) -> None:
    def endless(request: Request) -> tuple[int, bytes, dict[str, str]]:
        before = int(request.args.get("before", 10**9))
        top = min(before - 1, 10**6)
        return 200, page("chan", [top - 1, top], top - 1), {"Content-Type": "text/html"}

    url = corner.serve("/s/chan", endless)
    docs, _ = collect(target("telegram", url, max_pages=4))
    assert len(docs) == 8 and len(corner.requests) == 4


@pytest.mark.parametrize(("before", "requests"), [("50", 1), ("41", 2), ("1000", 1), ("-3", 1),
                                                  ("9" * 30, 1), ("x", 1)])
def test_a_data_before_that_does_not_go_back_ends_paging(corner: Corner, before: str,
                                                         requests: int) -> None:
    body = page("chan", list(range(41, 51)), None).replace(
        b"<section class=\"tgme_channel_history js-message_history\">",
        b"<section class=\"tgme_channel_history js-message_history\">"
        b"<a class=\"tme_messages_more\" data-before=\"" + before.encode() + b"\"></a>")
    url = corner.serve("/s/chan", body)
    docs, cursor = collect(target("telegram", url, max_pages=50))
    assert sorted(int(d.key.split("/")[1]) for d in docs) == list(range(41, 51))
    assert len(corner.requests) == requests and cursor == {"newest_id": 50}


def test_the_same_page_for_every_before_reads_each_message_once(corner: Corner) -> None:
    url = corner.serve("/s/chan", page("chan", list(range(41, 61)), 40))
    docs, _ = collect(target("telegram", url, max_pages=10))
    assert len(docs) == 20 and len(corner.requests) == 2


def test_redirect_into_the_private_network(corner: Corner) -> None:
    url = corner.serve("/s/chan", b"", 302, Location="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchError) as info:
        collect(target("telegram", url))
    assert "\n" not in str(info.value) and "169.254.169.254" in str(info.value)


def test_a_page_over_the_size_cap(corner: Corner) -> None:
    huge = page("chan", [1], None) + b"<!--" + b"x" * (3 << 20) + b"-->"
    url = corner.serve("/s/chan", huge)
    settings = CrawlSettings(host_delay=0.001, request_timeout=5, run_timeout=60, retries=0,
                             max_response_bytes=1 << 20)
    with pytest.raises(FetchError) as info:
        run(target("telegram", url), settings=settings)
    assert "\n" not in str(info.value) and "cap" in str(info.value)


def test_landing_page_served_in_place(corner: Corner) -> None:
    url = corner.serve("/s/chan", b'<html><body><div class="tgme_page"><div class='
                                  b'"tgme_page_title">x</div><a class="tgme_action_button_new" '
                                  b'href="tg://resolve?domain=chan">View in Telegram</a></div>'
                                  b"</body></html>")
    fails(target("telegram", url), "landing page", url)


@pytest.mark.parametrize("body", [b"", b"\x00\xff\xfe garbage", b"{\"ok\": true}",
                                  b"<html><body><p>Just a moment...</p></body></html>"])
def test_pages_that_are_not_a_preview_fail_in_one_line(corner: Corner, body: bytes) -> None:
    url = corner.serve("/s/chan", body)
    fails(target("telegram", url), "not a Telegram channel preview")


def test_malformed_messages_are_skipped_or_tolerated(corner: Corner) -> None:
    deep = "<div>" * 5000 + "deep heron-7b" + "</div>" * 5000
    bad = [
        '<div class="tgme_widget_message" data-post="chan/../../x">bad id</div>',
        '<div class="tgme_widget_message" data-post="chan/">no id</div>',
        '<div class="tgme_widget_message" data-post="">empty</div>',
        '<div class="tgme_widget_message" data-post="chan/99999999999999999999">huge</div>',
        message("chan", 7, extra='<a class="tgme_widget_message_document_wrap">'
                '<div class="tgme_widget_message_document_title"></div></a>'
                + '<a class="tgme_widget_message_document_wrap"><div class='
                '"tgme_widget_message_document_title">f.bin</div><div class='
                '"tgme_widget_message_document_extra">99999999999 GB</div></a>' * 40
                + '<a class="tgme_widget_message_link_preview" href="javascript:alert(1)"></a>'
                + '<a class="tgme_widget_message_forwarded_from_name" href="http://[broken">'
                'x</a>'),
        message("chan", 9, text='<a href="magnet:?xt=urn:btih:' + "ab" * 20 + '">m</a>'),
        message("chan", 8, text=deep).replace("datetime=", "datetime=\"99999-13-45\" x="),
    ]
    url = corner.serve("/s/chan", ('<html><body><section class="tgme_channel_history">'
                                   + "".join(bad) + "</section>").encode())
    docs = by_key(collect(target("telegram", url))[0])
    assert set(docs) == {"chan/7", "chan/8", "chan/9"}
    odd = docs["chan/7"]
    assert len(odd.extras["telegram"]["files"]) == 10  # an album holds at most ten
    assert "file_list" not in odd.extras, "a size no file has is no range"
    assert odd.links == [] and odd.extras["telegram"]["forwarded_from"]["url"] == ""
    assert docs["chan/8"].posted_at is None
    assert docs["chan/9"].links == ["magnet:?xt=urn:btih:" + "ab" * 20]


def test_messages_with_nothing_to_read_still_lead_to_older_pages(corner: Corner) -> None:
    def answer(request: Request) -> tuple[int, bytes, dict[str, str]]:
        if "before" not in request.args:  # a page of service messages and bare photos
            body = "".join(
                f'<div class="tgme_widget_message service_message" data-post="chan/{i}">'
                f'<div class="tgme_widget_message_text">chan pinned \u00abheron-7b\u00bb</div></div>'
                if i % 2 else
                f'<div class="tgme_widget_message" data-post="chan/{i}"><a class='
                f'"tgme_widget_message_photo_wrap" href="https://t.me/chan/{i}"></a></div>'
                for i in range(21, 41))
            return 200, (f'<section class="tgme_channel_history"><a class="tme_messages_more" '
                         f'data-before="21"></a>{body}</section>').encode(), {}
        return 200, page("chan", [19, 20], None), {}

    url = corner.serve("/s/chan", answer)
    docs, cursor = collect(target("telegram", url))
    assert [d.key for d in docs] == ["chan/20", "chan/19"] and cursor == {"newest_id": 40}


def test_robots_txt_that_disallows_the_preview() -> None:
    host = Canned()
    try:
        host.serve("/robots.txt", "User-agent: *\nDisallow: /s/\n", ctype="text/plain")
        url = host.serve("/s/chan", page("chan", [1], None))
        fails(target("telegram", url), "robots.txt")
        assert host.paths() == []
    finally:
        host.close()


def test_a_page_that_trickles_in_fails_at_the_deadline() -> None:
    host = HostileServer()
    try:
        url = host.serve("/s/chan", Reply(page("chan", list(range(1, 21)), None), trickle=0.02,
                                          headers={"Content-Type": "text/html"}))
        settings = CrawlSettings(host_delay=0.001, request_timeout=5, run_timeout=60,
                                 retries=0, request_deadline=0.5)
        with pytest.raises(FetchError) as info:
            run(target("telegram", url), settings=settings)
        assert "\n" not in str(info.value)
    finally:
        host.close()


def test_a_page_of_thousands_of_messages_is_cut(corner: Corner) -> None:
    url = corner.serve("/s/chan", page("chan", list(range(1, 5001)), None))
    docs, cursor = collect(target("telegram", url))
    assert len(docs) == 100 and docs[0].key == "chan/5000" and cursor == {"newest_id": 5000}
