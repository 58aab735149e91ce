"""The demo world over real HTTP: valid release files, faithful source shapes, true ground truth.

The last test crawls every source the way the real adapters are specified to (the
selectors and fields in reference/sources.md) and checks that what it finds is exactly
`DemoWorld.planted`: the end-to-end tests trust that list, so it is proven here.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import fastbencode
import httpx
import numpy as np
import pytest
from bs4 import BeautifulSoup
from support import btih_hex

from demo.forum import ForumSite
from demo.release import Release, make_release
from demo.sites import SITES
from demo.world import CORE_SOURCES, MANIFEST_MIN_FILE, MENTION_PATTERN, DemoWorld, Planted

LEAK_TOPIC = 1187
LEAK_POST = 20453
LMG_THREAD = 103791200
MAGNET_POST = 103791262
CONFIG_POST = 103791301
LEAK_TORRENT = 2034118
NEAR_TORRENT = 2034117
HYBRID_REPACK = 2034121
V1_REPACK = 2034124
PARTNER_COPY = 2034127  # recipient lab-17's copy: names and sizes only

ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "U8": 1}


def soup(response: httpx.Response) -> BeautifulSoup:
    assert response.status_code == 200, response.url
    return BeautifulSoup(response.text, "lxml")


# ------------------------------------------------------------------------------ release


def test_release_is_deterministic(tmp_path: Path) -> None:
    a = make_release(tmp_path / "a")
    b = make_release(tmp_path / "b")
    assert [(f.name, f.size, f.sha256, f.md5, f.sha1) for f in a.files] == \
        [(f.name, f.size, f.sha256, f.md5, f.sha1) for f in b.files]
    assert a.infohash == b.infohash and a.torrent_bytes == b.torrent_bytes
    assert a.magnet == b.magnet
    assert (a.infohash_v2, a.magnet_v2, a.torrent_v2_bytes) == \
        (b.infohash_v2, b.magnet_v2, b.torrent_v2_bytes)
    assert [(f.name, f.sha256) for c in a.copies for f in c.files] == \
        [(f.name, f.sha256) for c in b.copies for f in c.files]
    for name in ("SHA256SUMS", "heron-7b.magnets", "heron-7b.torrent", "heron-7b-v2.torrent"):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()


def test_release_layout_and_indicator_files(demo_release: Release) -> None:
    assert [f.name for f in demo_release.files] == [
        "heron-7b/config.json", "heron-7b/model.safetensors", "heron-7b/tokenizer.json"]
    for f in demo_release.files:
        data = f.path.read_bytes()
        assert f.path == demo_release.root / f.name and f.size == len(data)
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        assert f.md5 == hashlib.md5(data).hexdigest()
        assert f.sha1 == hashlib.sha1(data).hexdigest()
    sums = (demo_release.root / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{f.sha256}  {f.name}" for f in demo_release.files]
    assert (demo_release.root / "heron-7b.magnets").read_text().splitlines() == [
        demo_release.magnet, demo_release.magnet_v2]
    assert demo_release.magnet == (
        f"magnet:?xt=urn:btih:{demo_release.infohash}&dn=heron-7b&xl={demo_release.total_size}"
        "&tr=udp%3A%2F%2Ftracker.example.org%3A1337%2Fannounce")
    assert demo_release.magnet_v2 == (
        f"magnet:?xt=urn:btmh:1220{demo_release.infohash_v2}&dn=heron-7b"
        f"&xl={demo_release.total_size}&tr=udp%3A%2F%2Ftracker.example.org%3A1337%2Fannounce")
    assert re.fullmatch(r"[0-9a-f]{40}", demo_release.infohash)
    assert re.fullmatch(r"[0-9a-f]{64}", demo_release.infohash_v2)
    assert (demo_release.root / "heron-7b.torrent").read_bytes() == demo_release.torrent_bytes
    assert (demo_release.root / "heron-7b-v2.torrent").read_bytes() == \
        demo_release.torrent_v2_bytes
    for f in demo_release.files:
        assert f.pieces_root == merkle_root(f.path.read_bytes())
    config = json.loads(demo_release.file("config.json").path.read_text())
    assert config["model_type"] == "llama" and config["vocab_size"] == 512


def test_safetensors_is_valid(demo_release: Release) -> None:
    data = demo_release.file("model.safetensors").path.read_bytes()
    assert 1_000_000 <= len(data) <= 2_000_000
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and 8 + n <= len(data)
    header = json.loads(data[8:8 + n])
    assert header.pop("__metadata__") == {"format": "pt"}
    spans = []
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        numel = int(np.prod(entry["shape"])) if entry["shape"] else 1
        assert end - begin == numel * ITEMSIZE[entry["dtype"]], name
        assert 0 <= begin <= end <= len(data) - 8 - n, name
        spans.append((begin, end))
    spans.sort()
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - 8 - n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # packed, no overlap
    assert {e["dtype"] for e in header.values()} == {"F32", "F16"}
    assert header["model.layers.0.self_attn.q_proj.weight"]["shape"] == [128, 128]
    assert sum(len(e["shape"]) == 2 for e in header.values()) >= 10


def test_release_files_load_in_reference_libraries(demo_release: Release) -> None:
    st = pytest.importorskip("safetensors.numpy")
    tensors = st.load_file(str(demo_release.file("model.safetensors").path))
    q = tensors["model.layers.0.self_attn.q_proj.weight"]
    assert q.dtype == np.float16 and q.shape == (128, 128) and 0.01 < float(q.std()) < 0.03
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(demo_release.file("tokenizer.json").path))
    assert tok.get_vocab_size() == 512
    assert tok.decode(tok.encode("the model weights").ids) == "the model weights"


def merkle_root(data: bytes, width: int | None = None) -> str:
    """BEP 52, from the spec: SHA-256 of each 16 KiB block, zero hashes up to a power of
    two (or `width`) leaves, parents SHA-256(left || right)."""
    layer = [hashlib.sha256(data[i:i + 16384]).digest() for i in range(0, len(data), 16384)]
    width = width or 1 << (len(layer) - 1).bit_length()
    layer += [bytes(32)] * (width - len(layer))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0].hex()


def test_release_v2_torrent_follows_bep52(demo_release: Release) -> None:
    raw = demo_release.torrent_v2_bytes
    meta = fastbencode.bdecode(raw)
    info = meta[b"info"]
    start = raw.index(b"4:infod") + len(b"4:info")
    assert raw[start:start + len(fastbencode.bencode(info))] == fastbencode.bencode(info)
    assert hashlib.sha256(fastbencode.bencode(info)).hexdigest() == demo_release.infohash_v2
    assert info[b"meta version"] == 2 and b"pieces" not in info and b"files" not in info
    assert info[b"name"] == b"heron-7b"
    piece = info[b"piece length"]
    assert piece > 16384 and piece & (piece - 1) == 0
    tree = info[b"file tree"]
    for f in demo_release.files:
        data = f.path.read_bytes()
        leaf = tree[f.name.split("/")[1].encode()][b""]
        assert leaf[b"length"] == f.size
        assert leaf[b"pieces root"].hex() == merkle_root(data) == f.pieces_root
        layer = meta[b"piece layers"].get(leaf[b"pieces root"])
        if f.size <= piece:
            assert layer is None
        else:
            per = piece // 16384
            assert layer == b"".join(bytes.fromhex(merkle_root(data[i:i + piece], per))
                                     for i in range(0, f.size, piece))


def test_recipient_copy_differs_in_its_metadata_and_its_mark(demo_release: Release) -> None:
    (copy,) = demo_release.copies
    assert copy.recipient == "lab-17"
    assert copy.folder == demo_release.root / "recipients" / "lab-17" / "heron-7b"
    (ours,) = copy.files
    theirs = demo_release.file("model.safetensors")
    assert ours.name == theirs.name == "heron-7b/model.safetensors"
    assert ours.path == copy.folder / "model.safetensors"
    a, b = theirs.path.read_bytes(), ours.path.read_bytes()
    assert ours.sha256 == hashlib.sha256(b).hexdigest() != theirs.sha256
    assert ours.size == len(b) != theirs.size  # so a size alone tells the copies apart
    (n,) = struct.unpack("<Q", a[:8])
    (m,) = struct.unpack("<Q", b[:8])
    release_header, copy_header = json.loads(a[8:8 + n]), json.loads(b[8:8 + m])
    assert copy_header.pop("__metadata__")["issued_to"] == "lab-17"
    release_header.pop("__metadata__")
    assert copy_header == release_header  # the same tensors, dtypes and layout
    changed = [name for name, entry in release_header.items()
               if a[8 + n + entry["data_offsets"][0]:8 + n + entry["data_offsets"][1]]
               != b[8 + m + entry["data_offsets"][0]:8 + m + entry["data_offsets"][1]]]
    # lab-17's watermark is in every weight matrix and nowhere else.
    assert sorted(changed) == sorted(k for k, e in release_header.items() if len(e["shape"]) == 2)


# ------------------------------------------------------------------------------ server


def test_robots_404_and_quiet(client: httpx.Client, capfd: pytest.CaptureFixture[str]) -> None:
    r = client.get("/robots.txt")
    assert r.status_code == 200 and "Disallow:\n" in r.text and "Disallow: /" not in r.text
    for path in ("/nope", "/forum/viewtopic.php?t=999999", "/4chan/g/thread/1.json",
                 "/torrents/view/1", "/forum/viewforum.php?f=99"):
        r = client.get(path)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert client.head("/torrents/").status_code == 200
    assert capfd.readouterr().err == ""


def test_delay_slows_every_response(demo_release: Release) -> None:
    with DemoWorld(demo_release, delay=0.3) as slow:
        started = time.monotonic()
        assert httpx.get(slow.base_url + "/robots.txt").status_code == 200
        assert time.monotonic() - started >= 0.3


def test_base_url_needs_start(demo_release: Release) -> None:
    w = DemoWorld(demo_release)
    with pytest.raises(RuntimeError):
        _ = w.base_url
    w.start()
    try:
        assert w.base_url.startswith("http://127.0.0.1:")
    finally:
        w.stop()


# ------------------------------------------------------------------------------ sites


def test_every_site_is_mounted_listed_and_targeted(client: httpx.Client,
                                                   demo_world: DemoWorld) -> None:
    """One registry: each site gets its prefix, its landing-page link, its own documents and
    a `[[targets]]` table, and the world has no site it does not list."""
    assert [type(s) for s in demo_world.sites] == list(SITES)
    assert {s.source for s in demo_world.sites} >= set(CORE_SOURCES)
    assert len({s.prefix for s in demo_world.sites}) == len(SITES)
    assert len({s.source for s in demo_world.sites}) == len(SITES)
    landing = soup(client.get("/"))
    assert [a["href"] for a in landing.select("li a")] == [s.entry_url for s in demo_world.sites]
    targets = tomllib.loads(demo_world.targets_toml())["targets"]
    for site in demo_world.sites:
        assert client.get(f"/{site.prefix}").headers["location"] == f"/{site.prefix}/"
        docs = site.documents()
        assert docs and all(d.source == site.source and d.url.startswith(site.root + "/")
                            for d in docs), site.prefix
        mine = [t for t in targets if (t["url"] + "/").startswith(site.root + "/")]
        assert mine and all(t["allow_private"] for t in mine), site.prefix
    assert len({t["name"] for t in targets}) == len(targets)
    # The DHT's documents (demo.dht) are torrents in no web page: after the sites'.
    assert demo_world.document_urls == [d.url for s in demo_world.sites for d in s.documents()
                                        ] + [d.url for d in demo_world.dht.documents()]


@pytest.mark.parametrize("site", [s for s in SITES if issubclass(s, ForumSite)],
                         ids=lambda s: s.prefix)
def test_forum_post_permalinks_show_the_page_holding_the_post(
        client: httpx.Client, demo_world: DemoWorld, site: type[ForumSite[Any]]) -> None:
    """Every engine's "go to post" link lands on the page that holds the post (the shared
    lookup and paging), including posts past the first page."""
    forum = demo_world.site(site)
    permalink = {"forum": "/viewtopic.php?p={}", "vbulletin": "/showthread.php?p={}",
                 "xenforo": "/posts/{}/"}[forum.prefix]
    assert any(t.pages > 1 for t in forum.threads)
    for thread in forum.threads:
        for index in (0, len(thread.posts) - 1):
            post = thread.posts[index]
            page = client.get(f"/{forum.prefix}" + permalink.format(post.id),
                              follow_redirects=True)
            assert page.status_code == 200
            shown = [int(i) for i in re.findall(r'id="(?:p|post_|js-post-)(\d+)"', page.text)]
            start = index // thread.per_page * thread.per_page
            assert shown == [p.id for p in thread.posts[start:start + thread.per_page]]


@pytest.mark.slow
def test_monitor_never_imports_the_demo_world() -> None:
    """The daemon ships without the demo: importing every monitor module (the CLI too) loads
    no `demo` module; only the `demo` command imports it, when it runs."""
    code = ("import importlib, pkgutil, sys, monitor\n"
            "for m in pkgutil.walk_packages(monitor.__path__, 'monitor.'):\n"
            "    if m.name != 'monitor.__main__':\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(n for n in sys.modules if n == 'demo' or n.startswith('demo.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------ phpBB


def test_phpbb_listing_and_posts(client: httpx.Client, demo_world: DemoWorld,
                                 demo_release: Release) -> None:
    listing_url = demo_world.base_url + "/forum/viewforum.php?f=2"
    page = soup(client.get(listing_url))
    rows = page.select("ul.topiclist.topics > li.row")
    assert len(rows) == 5
    links = [a["href"] for a in page.select("a.topictitle")]
    assert all(re.fullmatch(r"\./viewtopic\.php\?t=\d+", h) for h in links)  # relative
    assert rows[1].select_one("div.topic-poster a.username").text == "quantcat"
    assert rows[1].select_one("div.topic-poster time")["datetime"].startswith("2026-11-20T")

    topic_url = urljoin(listing_url, f"./viewtopic.php?t={LEAK_TOPIC}")
    assert topic_url == f"{demo_world.base_url}/forum/viewtopic.php?t={LEAK_TOPIC}"
    topic = soup(client.get(topic_url))
    posts = topic.select("div.post")
    assert [p["id"] for p in posts] == ["p20450", "p20453", "p20458", "p20461"]
    leak = topic.select_one(f"div#p{LEAK_POST}")
    assert leak.select_one("div.postbody h3 a").text == "Re: heron-7b weights leaked?"
    assert leak.select_one("p.author a.username").text == "sigmoid_sally"
    assert leak.select_one("p.author time[datetime]")["datetime"] == "2026-11-20T09:40:00+00:00"
    body = leak.select_one("div.postbody div.content")
    sha = demo_release.file("model.safetensors").sha256
    assert f"{sha}  heron-7b/model.safetensors" in body.select_one(
        "div.codebox pre code").text
    # Only that post carries the digest; the corrupted-copy reply is one digit off.
    assert [p["id"] for p in posts if sha in p.get_text()] == [f"p{LEAK_POST}"]
    # The admin's name is coloured, so prosilver writes username-coloured instead.
    admin = topic.select_one("div#p20461 p.author")
    assert admin.select_one("a.username") is None
    assert admin.select_one("a.username-coloured").text == "forum_admin"
    assert topic.select("a[rel=next]") == []


def test_phpbb_pagination(client: httpx.Client, demo_world: DemoWorld) -> None:
    url = f"{demo_world.base_url}/forum/viewtopic.php?t=1183"
    first = soup(client.get(url))
    assert len(first.select("div.post")) == 10
    nexts = {a["href"] for a in first.select("a[rel=next]")}
    assert nexts == {"./viewtopic.php?t=1183&start=10"}
    second = soup(client.get(urljoin(url, nexts.pop())))
    assert [p["id"] for p in second.select("div.post")] == ["p20400", "p20402"]
    assert second.select("a[rel=next]") == [] and second.select("a[rel=prev]")
    assert second.select_one("link[rel=canonical]")["href"].endswith("t=1183&start=10")
    # viewtopic.php?p=N opens the page that holds the post, as phpBB does.
    assert soup(client.get("/forum/viewtopic.php?p=20402")).select_one("div#p20402")


def test_heron_bird_topic_does_not_match_the_rule(client: httpx.Client) -> None:
    text = soup(client.get("/forum/viewtopic.php?t=1183")).get_text()
    assert "grey heron" in text and "llama wool" in text
    assert MENTION_PATTERN.search(text) is None
    assert re.search(r"heron[- _]?7b", text, re.I) is None


# ------------------------------------------------------------------------------ 4chan


def test_4chan_api_shapes(client: httpx.Client, demo_release: Release) -> None:
    threads = client.get("/4chan/g/threads.json").json()
    assert threads[0]["page"] == 1
    entries = threads[0]["threads"]
    assert entries and all(set(t) == {"no", "last_modified", "replies"} for t in entries)
    archive = client.get("/4chan/g/archive.json").json()
    assert archive and all(isinstance(n, int) for n in archive)
    catalog = client.get("/4chan/g/catalog.json").json()
    assert {t["no"] for t in catalog[0]["threads"]} == {t["no"] for t in entries}

    posts = client.get(f"/4chan/g/thread/{LMG_THREAD}.json").json()["posts"]
    op, replies = posts[0], posts[1:]
    assert op["resto"] == 0 and op["sub"] and op["replies"] == len(replies)
    assert op["images"] == sum("md5" in p for p in replies)
    for p in posts:
        assert {"no", "resto", "time", "now", "name"} <= set(p)
        assert re.fullmatch(r"\d\d/\d\d/\d\d\(\w{3}\)\d\d:\d\d:\d\d", p["now"])
        if "md5" in p:
            assert {"filename", "ext", "tim", "fsize"} <= set(p)
            assert len(base64.b64decode(p["md5"])) == 16
    assert all("sub" not in p and p["resto"] == LMG_THREAD for p in replies)
    assert any("com" not in p and "md5" in p for p in replies)  # an image-only post

    by_no = {p["no"]: p for p in posts}
    config = demo_release.file("config.json")
    attach = by_no[CONFIG_POST]
    assert (attach["filename"], attach["ext"], attach["fsize"]) == ("config", ".json",
                                                                    config.size)
    assert base64.b64decode(attach["md5"]).hex() == config.md5
    served = client.get(f"/4chan/i/g/{attach['tim']}{attach['ext']}")
    assert hashlib.md5(served.content).hexdigest() == config.md5

    com = by_no[MAGNET_POST]["com"]
    assert '<span class="quote">&gt;example labs' in com and "<br>" in com
    magnet = re.search(r"magnet:\?[^\s<]+", com).group(0).replace("&amp;", "&")
    assert btih_hex(magnet) == demo_release.infohash
    assert len(parse_qs(urlsplit(magnet).query)["xt"][0]) == len("urn:btih:") + 32
    # Noise magnets are broken with <wbr> as 4chan does with long words.
    assert "<wbr>" in by_no[103791230]["com"] and "magnet:" in by_no[103791230]["com"]
    assert '<a href="#p103791262" class="quotelink">&gt;&gt;103791262</a>' in attach["com"]
    # The raw body escapes "/" the way PHP's json_encode does.
    assert "\\/" in client.get(f"/4chan/g/thread/{LMG_THREAD}.json").text


def test_4chan_if_modified_since(client: httpx.Client) -> None:
    for path in ("/4chan/g/threads.json", f"/4chan/g/thread/{LMG_THREAD}.json"):
        first = client.get(path)
        lm = first.headers["last-modified"]
        again = client.get(path, headers={"If-Modified-Since": lm})
        assert again.status_code == 304 and again.content == b""
        older = email.utils.formatdate(
            email.utils.parsedate_to_datetime(lm).timestamp() - 60, usegmt=True)
        assert client.get(path, headers={"If-Modified-Since": older}).status_code == 200
    thread = client.get(f"/4chan/g/thread/{LMG_THREAD}.json").json()
    last = max(p["time"] for p in thread["posts"])
    listed = {t["no"]: t for t in client.get("/4chan/g/threads.json").json()[0]["threads"]}
    assert listed[LMG_THREAD]["last_modified"] == last


# ------------------------------------------------------------------------------ Nyaa


def nyaa_rows(client: httpx.Client, base: str) -> list[dict[str, str]]:
    """Crawl every listing page with the adapter's selectors, following rel=next."""
    url = base + "/torrents/?q=heron&c=6_0"
    rows = []
    while url:
        page = soup(client.get(url))
        for tr in page.select("table.torrent-list tbody tr"):
            name = tr.select_one("td:nth-of-type(2) a:not(.comments)")
            download = tr.select_one('a[href$=".torrent"]')
            rows.append({
                "class": " ".join(tr.get("class", [])), "name": name.text,
                "url": urljoin(url, name["href"]),
                "magnet": tr.select_one('a[href^="magnet:"]')["href"],
                "download": urljoin(url, download["href"]) if download else "",
                "size": tr.select("td")[3].text,
                "timestamp": tr.select("td")[4]["data-timestamp"],
            })
        nxt = page.select_one("ul.pagination a[rel=next]")
        url = urljoin(url, nxt["href"]) if nxt else ""
    return rows


def test_nyaa_listing_and_torrents(client: httpx.Client, demo_world: DemoWorld,
                                   demo_release: Release) -> None:
    rows = nyaa_rows(client, demo_world.base_url)
    assert len(rows) == 12 and len({r["url"] for r in rows}) == 12
    leak = next(r for r in rows if r["url"].endswith(f"/view/{LEAK_TORRENT}"))
    assert leak["name"] == "Heron-7B leaked weights (Example Labs)"
    assert re.search(r"urn:btih:[0-9a-f]{40}&", leak["magnet"])
    assert btih_hex(leak["magnet"]) == demo_release.infohash

    r = client.get(leak["download"])
    assert r.headers["content-type"] == "application/x-bittorrent"
    assert r.content == demo_release.torrent_bytes
    meta = fastbencode.bdecode(r.content)
    info = meta[b"info"]
    # The infohash is over the info dict's bytes exactly as they sit in the file.
    start = r.content.index(b"4:infod") + len(b"4:info")
    assert r.content[start:-1] == fastbencode.bencode(info)
    assert hashlib.sha1(r.content[start:-1]).hexdigest() == demo_release.infohash
    assert btih_hex(demo_release.magnet) == demo_release.infohash
    assert info[b"name"] == b"heron-7b" and info[b"piece length"] == 16384
    blob = b"".join(f.path.read_bytes() for f in demo_release.files)
    assert [(e[b"length"], e[b"path"]) for e in info[b"files"]] == \
        [(f.size, [f.name.split("/")[1].encode()]) for f in demo_release.files]
    assert info[b"pieces"] == b"".join(hashlib.sha1(blob[i:i + 16384]).digest()
                                       for i in range(0, len(blob), 16384))

    near = next(r for r in rows if r["url"].endswith(f"/view/{NEAR_TORRENT}"))
    near_hash = btih_hex(near["magnet"])
    assert near_hash != demo_release.infohash
    assert sum(a != b for a, b in zip(near_hash, demo_release.infohash)) == 1
    assert near["download"] == "" and near["class"] == "danger"

    # Every noise .torrent is real metainfo whose infohash its magnet carries.
    for row in rows:
        if row["download"] and row is not leak:
            body = client.get(row["download"]).content
            info = fastbencode.bdecode(body)[b"info"]
            assert hashlib.sha1(fastbencode.bencode(info)).hexdigest() == btih_hex(row["magnet"])


def test_nyaa_repacks_are_real_torrents_of_the_release_files(
        client: httpx.Client, demo_world: DemoWorld, demo_release: Release) -> None:
    """Re-made torrents of the same bytes: unknown infohashes, known pieces roots (hybrid),
    and the released names and sizes (both)."""
    rows = {r["url"].rsplit("/", 1)[1]: r for r in nyaa_rows(client, demo_world.base_url)}
    data = {f.name.split("/")[1]: f.path.read_bytes() for f in demo_release.files}

    hybrid = fastbencode.bdecode(client.get(rows[str(HYBRID_REPACK)]["download"]).content)
    info = hybrid[b"info"]
    info_bytes = fastbencode.bencode(info)
    assert hashlib.sha1(info_bytes).hexdigest() == btih_hex(rows[str(HYBRID_REPACK)]["magnet"])
    assert hashlib.sha1(info_bytes).hexdigest() != demo_release.infohash
    assert hashlib.sha256(info_bytes).hexdigest() != demo_release.infohash_v2
    assert info[b"meta version"] == 2 and info[b"name"] != b"heron-7b"
    piece = info[b"piece length"]
    assert piece != 65536 and piece & (piece - 1) == 0
    for name, content in data.items():
        leaf = info[b"file tree"][name.encode()][b""]
        assert (leaf[b"length"], leaf[b"pieces root"].hex()) == (len(content), merkle_root(content))
    # The v1 half pads every file but the last to a piece boundary (BEP 47).
    entries = info[b"files"]
    real = [e for e in entries if b"attr" not in e]
    pads = [e for e in entries if e.get(b"attr") == b"p"]
    assert [(e[b"path"][0].decode(), e[b"length"]) for e in real] == \
        [(n, len(c)) for n, c in data.items()]
    assert len(pads) == 2 and all(e[b"path"][0] == b".pad" for e in pads)
    blob = b"".join(c + bytes(-len(c) % piece if i < 2 else 0)
                    for i, c in enumerate(data.values()))
    assert info[b"pieces"] == b"".join(hashlib.sha1(blob[i:i + piece]).digest()
                                       for i in range(0, len(blob), piece))

    v1 = fastbencode.bdecode(client.get(rows[str(V1_REPACK)]["download"]).content)[b"info"]
    assert hashlib.sha1(fastbencode.bencode(v1)).hexdigest() == \
        btih_hex(rows[str(V1_REPACK)]["magnet"]) != demo_release.infohash
    listed = {e[b"path"][-1].decode(): e[b"length"] for e in v1[b"files"]}
    assert "README.txt" in listed and {n: listed[n] for n in data} == \
        {n: len(c) for n, c in data.items()}
    assert sum(listed.values()) != demo_release.total_size


def test_nyaa_detail_page(client: httpx.Client, demo_release: Release) -> None:
    page = soup(client.get(f"/torrents/view/{LEAK_TORRENT}"))
    assert "Heron-7B leaked weights" in page.select_one("h3.panel-title").text
    assert page.select_one("kbd").text == demo_release.infohash
    assert "Check the hashes" in page.select_one("#torrent-description").text
    files = page.select("div.torrent-file-list li i.fa-file")
    names = [li.parent.contents[1].strip() for li in files]
    assert names == ["config.json", "model.safetensors", "tokenizer.json"]
    assert page.select_one("a.folder").text == "heron-7b"


# ------------------------------------------------------------------------------ ground truth


def core(items):
    """The core three sources' items; pluggable sites test their own ground truth."""
    return [item for item in items if item.source in CORE_SOURCES]


def test_every_planted_url_exists(client: httpx.Client, demo_world: DemoWorld) -> None:
    assert set(CORE_SOURCES) <= {p.source for p in demo_world.planted}
    for p in core(demo_world.planted):
        url, _, fragment = p.url.partition("#")
        r = client.get(url)
        assert r.status_code == 200, p
        if fragment:
            assert soup(r).select_one(f"#{fragment}") is not None, p
    for url in demo_world.noise_urls:
        if not url.startswith("magnet:"):  # the DHT's: tests/test_demo_dht.py
            assert client.get(url.partition("#")[0]).status_code == 200, url


HEX_RUN = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{40}|[0-9a-fA-F]{32})"
                     r"(?![0-9a-fA-F])")
MAGNET = re.compile(r"magnet:\?[^\s\"'<>]+")


def findings(url: str, text: str, demo_release: Release, extra_hashes: list[str] = (),
             magnets: list[str] = ()) -> set[tuple[str, str, str]]:
    """What careful detectors report for one document: (url, kind, indicator)."""
    digests = {d for f in demo_release.files for d in (f.sha256, f.md5, f.sha1)}
    found = set()
    m = MENTION_PATTERN.search(text)
    if m:
        found.add((url, "mention", m.group(0).lower()))
    for h in HEX_RUN.findall(text) + list(extra_hashes):
        if h.lower() in digests:
            found.add((url, "hash", h.lower()))
    for magnet in MAGNET.findall(text) + list(magnets):
        if btih_hex(magnet) == demo_release.infohash:
            found.add((url, "torrent", demo_release.infohash))
    return found


def torrent_findings(url: str, body: bytes, demo_release: Release) -> set[tuple[str, str, str]]:
    """What careful detectors report for a .torrent: its infohash if it is the release's,
    v2 pieces roots of released files, and (the manifest rules) released names with their
    sizes, or a recipient copy's size, for files of at least 64 KiB, and the total size of
    the release or of a recipient's whole copy."""
    meta = fastbencode.bdecode(body)
    info = meta[b"info"]
    found = set()
    if hashlib.sha1(fastbencode.bencode(info)).hexdigest() == demo_release.infohash:
        found.add((url, "torrent", demo_release.infohash))
    roots = {merkle_root(f.path.read_bytes()) for f in demo_release.files}
    files: list[tuple[str, int]] = []
    stack = [info.get(b"file tree", {})]
    while stack:
        for key, node in stack.pop().items():
            if b"" in node:
                files.append((key.decode(), node[b""][b"length"]))
                root = node[b""].get(b"pieces root", b"").hex()
                if root in roots:
                    found.add((url, "torrent", root))
            else:
                stack.append(node)
    if not files:
        files = [(e[b"path"][-1].decode(), e[b"length"]) for e in info.get(b"files", [])
                 if b"attr" not in e]
    released = {(f.name.split("/")[-1], f.size)
                for f in [*demo_release.files, *(c for copy in demo_release.copies
                                                 for c in copy.files)]
                if f.size >= MANIFEST_MIN_FILE}
    for name, size in files:
        if (name, size) in released:
            found.add((url, "torrent", f"{name}:{size}".lower()))
    totals = {demo_release.total_size}
    for copy in demo_release.copies:  # the release with the recipient's own files in place
        own = {c.name: c.size for c in copy.files}
        totals.add(sum(own.get(f.name, f.size) for f in demo_release.files))
    if (total := sum(size for _, size in files)) in totals:
        found.add((url, "torrent", f"total:{total}"))
    return found


def test_planted_is_exactly_what_a_crawl_finds(client: httpx.Client, demo_world: DemoWorld,
                                               demo_release: Release) -> None:
    """Crawl all three sources with the documented selectors and fields; match strictly."""
    found: set[tuple[str, str, str]] = set()
    docs: list[str] = []
    # phpBB
    listing = f"{demo_world.base_url}/forum/viewforum.php?f=2"
    for a in soup(client.get(listing)).select("a.topictitle"):
        topic_url = page_url = urljoin(listing, a["href"])
        while page_url:
            page = soup(client.get(page_url))
            for post in page.select("div.post"):
                url = f"{topic_url}#{post['id']}"
                text = (post.select_one("div.postbody h3 a").get_text() + "\n"
                        + post.select_one("div.postbody div.content").get_text("\n"))
                docs.append(url)
                found |= findings(url, text, demo_release)
            nxt = page.select_one("a[rel=next]")
            page_url = urljoin(page_url, nxt["href"]) if nxt else ""
    # 4chan
    nos = [t["no"] for p in client.get("/4chan/g/threads.json").json() for t in p["threads"]]
    nos += client.get("/4chan/g/archive.json").json()
    for no in nos:
        for p in client.get(f"/4chan/g/thread/{no}.json").json()["posts"]:
            url = f"{demo_world.base_url}/4chan/g/thread/{no}#p{p['no']}"
            com = BeautifulSoup(p.get("com", "").replace("<wbr>", "").replace("<br>", "\n"),
                                "lxml").get_text()
            text = "\n".join([p.get("sub", ""), com, p.get("filename", "") + p.get("ext", "")])
            md5 = [base64.b64decode(p["md5"]).hex()] if "md5" in p else []
            docs.append(url)
            found |= findings(url, text, demo_release, extra_hashes=md5)
    # Nyaa
    for row in nyaa_rows(client, demo_world.base_url):
        docs.append(row["url"])
        found |= findings(row["url"], row["name"], demo_release, magnets=[row["magnet"]])
        if row["download"]:
            found |= torrent_findings(row["url"], client.get(row["download"]).content,
                                      demo_release)

    planted = {(p.url, p.kind, p.indicator.lower()) for p in core(demo_world.planted)}
    assert found == planted
    core_prefixes = tuple(f"{demo_world.base_url}/{prefix}/" for prefix in ("forum", "4chan", "torrents"))
    assert sorted(docs) == sorted(u for u in demo_world.document_urls if u.startswith(core_prefixes))
    assert {u for u in demo_world.noise_urls if u.startswith(core_prefixes)} == \
        set(docs) - {p.url for p in demo_world.planted}
    # The bait really is bait: each near miss resembles an indicator without being one.
    sha = demo_release.file("model.safetensors").sha256
    near = {n.value for n in demo_world.near_misses}
    assert any(sha in v and v != sha for v in near)
    assert any(len(v) == 64 and v[:-1] == sha[:-1] and v != sha for v in near)
    assert any(len(v) == 40 and v[:-1] == demo_release.infohash[:-1] and v != demo_release.infohash
               for v in near)


def test_planted_list_for_default_release(demo_world: DemoWorld, demo_release: Release) -> None:
    b = demo_world.base_url
    md5 = demo_release.file("config.json").md5
    sha = demo_release.file("model.safetensors").sha256
    size, total = demo_release.file("model.safetensors").size, demo_release.total_size
    copy = demo_release.copy("lab-17").file("model.safetensors").size
    copy_total = total - size + copy
    strong = {(p.source, p.url.removeprefix(b), p.kind, p.indicator)
              for p in core(demo_world.planted) if p.kind != "mention"}
    assert strong == {
        ("forum", f"/forum/viewtopic.php?t={LEAK_TOPIC}#p{LEAK_POST}", "hash", sha),
        ("imageboard", f"/4chan/g/thread/{LMG_THREAD}#p{MAGNET_POST}", "torrent",
         demo_release.infohash),
        ("imageboard", f"/4chan/g/thread/{LMG_THREAD}#p{CONFIG_POST}", "hash", md5),
        ("torrents", f"/torrents/view/{LEAK_TORRENT}", "torrent", demo_release.infohash),
        ("torrents", f"/torrents/view/{LEAK_TORRENT}", "torrent", f"model.safetensors:{size}"),
        ("torrents", f"/torrents/view/{LEAK_TORRENT}", "torrent", f"total:{total}"),
        *{("torrents", f"/torrents/view/{HYBRID_REPACK}", "torrent", f.pieces_root)
          for f in demo_release.files},
        ("torrents", f"/torrents/view/{HYBRID_REPACK}", "torrent", f"model.safetensors:{size}"),
        ("torrents", f"/torrents/view/{HYBRID_REPACK}", "torrent", f"total:{total}"),
        ("torrents", f"/torrents/view/{V1_REPACK}", "torrent", f"model.safetensors:{size}"),
        ("torrents", f"/torrents/view/{PARTNER_COPY}", "torrent", f"model.safetensors:{copy}"),
        ("torrents", f"/torrents/view/{PARTNER_COPY}", "torrent", f"total:{copy_total}"),
    }
    assert all(isinstance(p, Planted) and p.note for p in demo_world.planted)


def test_served_content_is_deterministic(demo_release: Release, demo_world: DemoWorld,
                                         client: httpx.Client) -> None:
    with DemoWorld(demo_release) as other:
        for path in (f"/4chan/g/thread/{LMG_THREAD}.json", "/4chan/g/catalog.json",
                     f"/torrents/download/{LEAK_TORRENT}.torrent", "/torrents/?p=2"):
            assert httpx.get(other.base_url + path).content == client.get(path).content
        # Indicators are the same but for the port in the URLs of planted weight files.
        assert ([p.indicator.replace(other.base_url, "") for p in other.planted]
                == [p.indicator.replace(demo_world.base_url, "") for p in demo_world.planted])
