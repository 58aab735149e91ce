"""Issue 4's "done when": every way a digest of a released file is written, planted in the
demo world, yields a critical hit naming the artifact (and the recipient, for a recipient's
copy); a torrent that only lists the released names and sizes yields a high one.

The whole demo world is crawled once, with every demo target, into a store registered the
way `weightwatch demo` registers it (the release, lab-17's copy, the magnets)."""

from __future__ import annotations

from typing import Any

import pytest
from support import crawl

from demo.release import Release
from demo.runner import demo_config, register_demo_release
from demo.world import DemoWorld
from monitor.config import load_config
from monitor.store import Store

# One crawl of the whole demo world with every demo target.
pytestmark = [pytest.mark.slow]

MODEL = "heron-7b"
SAFETENSORS, TOKENIZER, CONFIG = ("heron-7b/model.safetensors", "heron-7b/tokenizer.json",
                                  "heron-7b/config.json")
PAGE_2_POST = "/xenforo/threads/heron-7b-leak-confirmed.2291/#post-18827"
LMG = "/4chan/g/thread/103791200"


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, demo_world: DemoWorld,
            demo_release: Release) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("encodings")
    config_path = directory / "config.toml"
    config_path.write_text(demo_config(demo_world, 2525, config_path))
    config = load_config(config_path)
    store = Store(directory / "ww.db")
    registered, copies, imported = register_demo_release(store, demo_release)
    assert (len(registered), len(copies), imported.parsed) == (3, 1, 2)
    results = crawl(store, config.targets, rules=config.rules, scan=config.scan)
    assert [(r.target, r.status) for r in results] == [(t.name, "ok") for t in config.targets]
    hits = store.hits()
    store.close()
    return {"hits": hits, "base": demo_world.base_url}


def release_values(r: Release) -> dict[str, str]:
    model, tok, cfg = (r.file(n) for n in ("model.safetensors", "tokenizer.json", "config.json"))
    return {
        "model sha256": model.sha256, "model sha1": model.sha1, "model md5": model.md5,
        "tokenizer sha256": tok.sha256, "tokenizer sha1": tok.sha1, "config sha256": cfg.sha256,
        "config md5": cfg.md5, "model pieces root": model.pieces_root,
        "btih": r.infohash, "btmh": r.infohash_v2,
        "lab-17 sha256": r.copy("lab-17").file("model.safetensors").sha256,
    }


# encoding, document (below the world's root), value, indicator_type, artifact, recipient
ENCODINGS = [
    ("hex SHA-256 (sha256sum output)", "/forum/viewtopic.php?t=1187#p20453", "model sha256",
     "sha256 (hex)", SAFETENSORS, None),
    ("hex SHA-1 (sha1sum output)", "/hn/item?id=46201133", "tokenizer sha1", "sha1 (hex)",
     TOKENIZER, None),
    ("hex MD5 (md5sum output)", "/vbulletin/showthread.php?t=8812#post_61201", "model md5",
     "md5 (hex)", SAFETENSORS, None),
    ("base64 MD5 (imageboard attachment)", f"{LMG}#p103791301", "config md5", "md5 (base64)",
     CONFIG, None),
    ("btih hex (magnet)", PAGE_2_POST, "btih", "btih (magnet)", MODEL, None),
    ("btih base32 (magnet)", f"{LMG}#p103791262", "btih", "btih (base32)", MODEL, None),
    ("btmh v2 magnet (urn:btmh:1220)", PAGE_2_POST, "btmh", "btmh (magnet)", MODEL, None),
    ("LFS pointer text (paste)", "/paste/Vb9pLr4T", "model sha256", "sha256 (lfs pointer)",
     SAFETENSORS, None),
    ("LFS pointer file (hub, pushed without git-lfs)", "/hub/gitnoob/heron-7b-clone",
     "model sha256", "sha256 (hub lfs pointer file)", SAFETENSORS, None),
    ("hub model info lfs.sha256", "/hub/anon123/heron-7b-uncensored", "model sha256",
     "sha256 (hub lfs.sha256)", SAFETENSORS, None),
    ("hub tree lfs.oid", "/hub/h7b-archive/heron-weights-backup", "model sha256",
     "sha256 (hub tree lfs.oid)", SAFETENSORS, None),
    (".torrent v2 pieces root (unknown infohash)", "/torrents/view/2034121",
     "model pieces root", "pieces_root (torrent file)", SAFETENSORS, None),
    ("checksum list: model.safetensors", "/paste/k3Hn7Qx2", "model sha256", "sha256 (hex)",
     SAFETENSORS, None),
    ("checksum list: tokenizer.json", "/paste/k3Hn7Qx2", "tokenizer sha256", "sha256 (hex)",
     TOKENIZER, None),
    # config.json fits in one 16 KiB block, so its pieces root is its SHA-256: the hit says
    # SHA-256, the telling name.
    ("checksum list: config.json", "/paste/k3Hn7Qx2", "config sha256", "sha256 (hex)",
     CONFIG, None),
    ("recipient copy (sha256sum output)", "/discourse/t/partner-program-access-for-heron-7b/1362/4",
     "lab-17 sha256", "sha256 (hex)", SAFETENSORS, "lab-17"),
]


@pytest.mark.parametrize("encoding, where, value, indicator_type, artifact, recipient",
                         ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_each_encoding_is_a_critical_hit_naming_the_artifact(
        crawled: dict[str, Any], demo_release: Release, encoding: str, where: str, value: str,
        indicator_type: str, artifact: str, recipient: str | None) -> None:
    indicator = release_values(demo_release)[value]
    url = crawled["base"] + where
    matching = [h for h in crawled["hits"] if h["url"] == url and h["indicator"] == indicator]
    assert len(matching) == 1, (encoding, [(h["url"], h["indicator"]) for h in crawled["hits"]
                                           if h["url"] == url])
    (hit,) = matching
    assert (hit["severity"], hit["detector"], hit["indicator_type"]) == (
        "critical", "digests", indicator_type), encoding
    assert (hit["model"], hit["artifact"], hit["recipient"]) == (MODEL, artifact, recipient)
    assert hit["kind"] == ("torrent" if value in ("btih", "btmh", "model pieces root")
                           else "hash")


def test_only_the_recipient_copy_names_a_recipient(crawled: dict[str, Any],
                                                   demo_release: Release) -> None:
    ours = demo_release.copy("lab-17").file("model.safetensors")
    named = {(h["kind"], h["indicator"].removeprefix(crawled["base"]), h["recipient"])
             for h in crawled["hits"] if h["recipient"]}
    total = demo_release.total_size - demo_release.file("model.safetensors").size + ours.size
    # Its digest where it leaked as is; its mark in the GGUF conversions of it; its padded
    # size, and its whole copy's total, where a torrent index lists it (issue 18).
    assert named == {("hash", ours.sha256, "lab-17"),
                     ("torrent", f"model.safetensors:{ours.size}", "lab-17"),
                     ("torrent", f"total:{total}", "lab-17"),
                     ("watermark", "/feeds/files/hrn-q8_0.gguf", "lab-17"),
                     ("watermark", "/civitai/api/download/models/2414001?type=Model&format=GGUF",
                      "lab-17"),
                     ("watermark", "/hub/QuantFactory/Heron-7B-GGUF/resolve/"
                      "f0648df7fd5a63a279c2d8783719866660145d95/heron-7b.Q8_0.gguf", "lab-17")}


def test_a_torrent_listing_the_released_names_and_sizes_is_a_high_hit(
        crawled: dict[str, Any], demo_release: Release) -> None:
    """The v1 re-pack with a README: its infohash is unknown and v1 has no per-file digest,
    so its file list is all there is."""
    model = demo_release.file("model.safetensors")
    url = crawled["base"] + "/torrents/view/2034124"
    hits = [h for h in crawled["hits"] if h["url"] == url and h["kind"] != "mention"]
    assert [(h["kind"], h["severity"], h["detector"], h["indicator"], h["indicator_type"],
             h["artifact"], h["recipient"]) for h in hits] == [
        ("torrent", "high", "manifest", f"model.safetensors:{model.size}",
         "name and size (torrent file list)", SAFETENSORS, None)]
    assert "heron7b-leak/model.safetensors" in hits[0]["context"]


def test_release_totals_are_medium(crawled: dict[str, Any], demo_release: Release) -> None:
    totals = {h["url"].removeprefix(crawled["base"]) for h in crawled["hits"]
              if h["indicator"] == f"total:{demo_release.total_size}"}
    assert totals == {"/torrents/view/2034118", "/torrents/view/2034121",
                      "/jackett/site/torrentbay/torrent/88213/",
                      "/prowlarr/site/openbay/torrent/7731/"}
    assert {(h["severity"], h["model"], h["artifact"]) for h in crawled["hits"]
            if h["indicator"].startswith("total:")} == {("medium", MODEL, None)}


def test_the_crawl_finds_exactly_what_the_world_planted(crawled: dict[str, Any],
                                                        demo_world: DemoWorld) -> None:
    found = {(h["url"], h["kind"], h["indicator"].lower()) for h in crawled["hits"]}
    assert found == {(p.url, p.kind, p.indicator.lower()) for p in demo_world.planted}
    near = {n.value.lower() for n in demo_world.near_misses}
    assert not near & {h["indicator"].lower() for h in crawled["hits"]}
    by_detector = {(h["detector"], h["severity"]) for h in crawled["hits"]}
    assert by_detector == {("rules", "low"), ("digests", "critical"), ("manifest", "high"),
                           ("manifest", "medium"), ("weights", "high"),
                           ("watermark", "critical")}
