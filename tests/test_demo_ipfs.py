"""The demo world's IPFS gateway (demo/sites/ipfs.py): its listings as boxo writes them, its
CIDs as `ipfs add -r` and `register` give them, its near misses one step from ours, and a
crawl of its two targets finding exactly what it planted."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import httpx
import pytest
from lxml import html
from support import crawl
from test_ipfs import Reference, reference  # noqa: F401  (the fixture, shared)

from demo.release import Release
from demo.runner import demo_config, register_demo_release
from demo.sites.ipfs import IpfsSite, humanize_bytes, short_hash
from demo.world import DemoWorld
from fingerprints.ipfs import DAG_PB, KUBO_V0, Cid, find_cids, parse_cid
from monitor.config import load_config
from monitor.registry import register_paths
from monitor.store import Store


@pytest.fixture(scope="module")
def site(demo_world: DemoWorld) -> IpfsSite:
    return demo_world.site(IpfsSite)


def _rows(page: str) -> list[tuple[str, str, str, str, str]]:
    """(name, path link, CID link, CID text, size) of each listing row, as a reader sees it."""
    tree = html.fromstring(page)
    cells = tree.cssselect("main section div.grid.dir > div")
    rows = []
    for i in range(0, len(cells), 4):
        name = cells[i + 1].cssselect("a")[0]
        cid = cells[i + 2].cssselect("a.ipfs-hash")[0]
        rows.append((name.text_content(), name.get("href"), cid.get("href"),
                     cid.text_content(), cells[i + 3].text_content()))
    return rows


def test_humanize_and_short_hash_as_go_humanize_and_boxo_write_them() -> None:
    # go-humanize's own examples: Bytes(82854982) == "83 MB"; below 10 a decimal.
    assert humanize_bytes(82_854_982) == "83 MB"
    assert [humanize_bytes(n) for n in (0, 9, 10, 999, 1000, 1_049, 1_550_000, 10**12)] == [
        "0 B", "9 B", "10 B", "999 B", "1.0 kB", "1.0 kB", "1.6 MB", "1.0 TB"]
    assert short_hash("QmPLEgc7ZhpJDPHrS73gfpUp") == "QmPL\u2026fpUp"


def test_the_folder_listing_is_boxos(site: IpfsSite, client: httpx.Client,
                                     demo_release: Release) -> None:
    folder = site.release_dir
    r = client.get(f"/gateway/ipfs/{folder.cid}/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html"
    assert r.headers["etag"].endswith(f'_CID-{folder.cid}"')
    tree = html.fromstring(r.text)
    assert tree.cssselect("main header div.ipfs-hash")[0].text_content() == folder.cid
    assert " ".join(tree.cssselect("main header strong")[0].text_content().split()) == \
        f"Index of /ipfs/{folder.cid}"
    root = f"{demo_world_root(client)}/gateway"
    expected = []
    for f in sorted(demo_release.files, key=lambda f: f.path.name):
        cid = site.release_dir.entries[f.path.name]
        expected.append((f.path.name, f"/gateway/ipfs/{folder.cid}/{f.path.name}",
                         f"{root}/ipfs/{cid.cid}?filename={f.path.name}", short_hash(cid.cid),
                         humanize_bytes(cid.ref.tsize)))
    assert [(n, re.sub(r"^https?://[^/]+", "", p), c, s, z) for n, p, c, s, z in _rows(r.text)] \
        == expected
    # A file's size on the page is its DAG's, a little more than its bytes (dag-pb leaves).
    model = demo_release.file("model.safetensors")
    assert site.model.ref.tsize > model.size


def demo_world_root(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def test_the_gateway_serves_files_by_any_cid_of_the_block(site: IpfsSite, client: httpx.Client,
                                                          demo_release: Release) -> None:
    data = demo_release.file("model.safetensors").path.read_bytes()
    folder = site.release_dir.cid
    for path in (f"/gateway/ipfs/{site.model.cid}?filename=model.safetensors",
                 f"/gateway/ipfs/{site.model_v1}", f"/gateway/ipfs/{folder}/model.safetensors"):
        assert client.get(path).content == data, path
    r = client.get(f"/gateway/ipfs/{site.model_v1}?filename=model.safetensors",
                   headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and r.content == data[:8]
    assert r.headers["content-disposition"] == 'inline; filename="model.safetensors"'
    r = client.get(f"/gateway/ipfs/{folder}")
    assert r.status_code == 301 and r.headers["location"].endswith(f"/gateway/ipfs/{folder}/")
    assert client.get(f"/gateway/ipfs/{folder}/nothing").status_code == 404
    assert client.get(f"/gateway/ipfs/{site.typo}/").status_code == 504  # no providers
    assert client.get("/gateway/ipfs/not-a-cid/").status_code == 400
    # The pins listing: our folder by name below it, its own root.
    r = client.get(f"/gateway/ipfs/{site.pins.cid}/heron-7b/")
    assert r.status_code == 200 and f"<div class=\"ipfs-hash\" translate=\"no\">{folder}" in r.text


def test_the_folder_cid_is_what_ipfs_add_and_register_give(
        reference: Reference, site: IpfsSite, demo_release: Release,  # noqa: F811
        tmp_path: Path) -> None:
    folder = demo_release.root / demo_release.model
    added = reference([KUBO_V0], sorted(folder.rglob("*")), folder)[KUBO_V0.name]
    assert added[folder.name] == site.release_dir.cid
    for name, node in site.release_dir.entries.items():
        assert added[f"{folder.name}/{name}"] == node.cid
    with Store(tmp_path / "ww.db") as store:
        register_paths(store, [folder], model="heron-7b", tensors=False, rematch=None)
        registered = {(r["algo"], r["value"]) for r in store.indicators()}
    assert ("cid-v0", parse_cid(site.release_dir.cid)[0].digest.hex()) in registered


def test_the_near_misses_are_one_step_from_ours(site: IpfsSite, demo_release: Release) -> None:
    config = demo_release.file("config.json").path.read_bytes()
    fixed = site.config_fixed.data or b""
    assert len(fixed) == len(config) and sum(a != b for a, b in zip(fixed, config)) == 1
    assert sorted(site.without_tokenizer.entries) == ["config.json", "model.safetensors"]
    ours, typo = site.release_dir.cid, site.typo
    assert sum(a != b for a, b in zip(ours, typo)) == 1 and len(typo) == len(ours)
    assert parse_cid(typo)[0].digest != parse_cid(ours)[0].digest  # a CID, of nothing
    assert site.unrelated.cid.startswith("bafybei")  # CIDv1, base32
    assert set(site.pins.entries) == {"heron-7b", "heron-7b-config-fixed.json",
                                      "tinyllama-mini.Q8_0.gguf"}


def test_a_crawl_of_the_gateway_targets_finds_exactly_what_was_planted(
        demo_world: DemoWorld, demo_release: Release, tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(demo_config(demo_world, 2525, config_path))
    config = load_config(config_path)
    targets = [t for t in config.targets if t.name.startswith("demo-ipfs")]
    assert [t.name for t in targets] == ["demo-ipfs-board", "demo-ipfs-gateway"]
    with Store(tmp_path / "ww.db") as store:
        register_demo_release(store, demo_release)
        results = crawl(store, targets, rules=config.rules, scan=config.scan)
        hits = store.hits()
    assert [(r.target, r.status) for r in results] == [(t.name, "ok") for t in targets]
    found = {(h["url"], h["kind"], h["indicator"].lower()) for h in hits}
    planted = {(p.url, p.kind, p.indicator.lower()) for p in demo_world.planted
               if p.source == "ipfs"}
    assert found == planted and len(hits) == len(planted) == 10
    near = {n.value.lower() for n in demo_world.near_misses if n.source == "ipfs"}
    assert len(near) == 4 and not near & {h["indicator"].lower() for h in hits}
    noise = {u for u in demo_world.noise_urls if "/gateway/" in u}
    assert noise and not noise & {h["url"] for h in hits}
    folder = demo_world.site(IpfsSite).release_dir.cid
    by_form = {h["indicator_type"] for h in hits if h["indicator"] == folder}
    assert by_form == {"cid-v0 (CIDv0 base58btc, gateway path)",
                       "cid-v0 (CIDv0 base58btc, bare)"}
    assert {h["severity"] for h in hits if h["kind"] == "hash"} == {"critical"}


def test_many_cids_in_one_page_are_read_in_one_pass() -> None:
    """A listing's CIDs, each after non-ASCII text: every one found where it is written,
    each stretch of text decoded once (benchmarks/cid_listing.py shows the time linear)."""
    rng = random.Random(3)
    cids = [str(Cid(0, DAG_PB, rng.randbytes(32))) for _ in range(5_000)]
    text = "".join(f"<td>héron ☃ {i}</td><a href=\"/ipfs/{cid}?filename={i}\">" for i, cid
                   in enumerate(cids))
    found = list(find_cids(text))
    assert [f.text for f in found] == cids
    assert all(text[f.start:f.end] == f.text for f in found)
    assert {f.form for f in found} == {"CIDv0 base58btc, gateway path"}


@pytest.mark.slow
def test_hostile_gateway_pages_through_the_demo_targets(serve, demo_release: Release,
                                                       tmp_path: Path) -> None:
    """What the demo's two gateway targets would meet out there: a listing of 100,000
    entries, a CID-shaped run of 10 MB in a post, and a gateway link that redirects to the
    cloud metadata address. Each is bounded: the listing is read once (its CIDs looked up,
    none ours), the run is no CID, and the redirect is refused in one line."""
    server = serve()
    site = IpfsSite(demo_release)
    site.base_url = f"http://127.0.0.1:{server.port}"
    base = site.root
    rng = random.Random(100_000)
    cids = [str(Cid(0, DAG_PB, rng.randbytes(32))) for _ in range(100_000)]
    rows = "".join(f'<div><a href="/gateway/ipfs/QmBig/{i}">{i}</a></div><div><a '
                   f'class="ipfs-hash" href="/gateway/ipfs/{cid}?filename={i}">'
                   f"{short_hash(cid)}</a></div>\n"
                   for i, cid in enumerate(cids))
    server.serve("/gateway/ipfs/QmBig/", '<main id="main"><header><strong>Index of /ipfs/QmBig'
                 f'</strong></header><div class="grid dir">{rows}</div></main>')
    server.serve("/gateway/ipfs/QmMeta/", "", status=302,
                 Location="http://169.254.169.254/latest/meta-data/")
    run = "Qm" + "".join(rng.choice("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
                         for _ in range(10_000_000 - 2))
    posts = "".join(
        f'<article class="entry" id="p{i}"><h2>p{i}</h2><span class="by">x</span>'
        f'<time datetime="2026-11-20T00:00:00+00:00">t</time><div class="entry-body">{body}'
        "</div></article>" for i, body in enumerate([
            f'<a href="{base}/ipfs/QmBig/">{base}/ipfs/QmBig/</a>',
            f'<a href="{base}/ipfs/QmMeta/">{base}/ipfs/QmMeta/</a>', f"ipfs://{run}"]))
    server.serve("/gateway/", f"<html><body>{posts}</body></html>")
    config_path = tmp_path / "config.toml"
    config_path.write_text(site.target_toml())  # the demo's own targets, on this server
    config = load_config(config_path)
    with Store(tmp_path / "ww.db") as store:
        store.add_folder_cids(model="heron-7b", name="heron-7b",
                              cids=[("cid-v0", "00" * 32)])
        started = time.monotonic()
        results = crawl(store, config.targets)
        elapsed = time.monotonic() - started
        hits = store.hits()
        documents = store.db.execute("SELECT url FROM documents").fetchall()
    assert [(r.target, r.status) for r in results] == [
        ("demo-ipfs-board", "ok"), ("demo-ipfs-gateway", "ok")], results
    assert hits == []
    assert f"{base}/ipfs/QmBig/#main" in {u for (u,) in documents}
    assert not any("169.254" in u for (u,) in documents)
    assert elapsed < 60, elapsed
