"""Recipient sizes in the demo world (issue 18): lab-17's padded copy, listed on the torrent
index by names and sizes only, is a hit naming lab-17; a listing one byte off names
nobody; and the demo's padded files load in the `safetensors` package unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import fastbencode
import httpx
import pytest
from safetensors import safe_open
from support import crawl, registered_store, target

from demo.release import Release
from demo.world import DemoWorld
from fingerprints.padding import choose_padding, pad_bytes
from fingerprints.safetensors import open_safetensors
from fingerprints.tensors import BytesSource

PARTNER_COPY = 2034127
NEAR_COPY = 2034126


def tensors(path: Path) -> dict[str, bytes]:
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k).tobytes() for k in f.keys()}


@pytest.mark.slow  # a crawl of the index with the demo release registered: a few seconds
def test_the_listing_of_lab_17s_copy_names_lab_17(tmp_path: Path, demo_world: DemoWorld,
                                                  demo_release: Release) -> None:
    copy = demo_release.copy("lab-17").file("model.safetensors")
    released = demo_release.file("model.safetensors")
    base = f"{demo_world.base_url}/torrents/view/"
    # What the index offers: a real v1 torrent of the copy's bytes, no digest of any file,
    # an infohash nobody registered.
    body = httpx.get(f"{demo_world.base_url}/torrents/download/{PARTNER_COPY}.torrent").content
    info = fastbencode.bdecode(body)[b"info"]
    assert b"pieces root" not in body and b"file tree" not in info
    assert hashlib.sha1(fastbencode.bencode(info)).hexdigest() != demo_release.infohash
    assert {e[b"path"][-1]: e[b"length"] for e in info[b"files"]}[b"model.safetensors"] == \
        copy.size

    with registered_store(tmp_path / "ww.db", demo_release) as store:
        (run,) = crawl(store, [target("torrent_index", demo_world.urls["torrents"],
                                      name="demo-torrents", preset="nyaa")])
        assert run.status == "ok", run.error
        hits = store.hits(target="demo-torrents")
    ours = {h["indicator"]: h for h in hits
            if h["url"] == f"{base}{PARTNER_COPY}" and h["kind"] == "torrent"}
    total = demo_release.total_size - released.size + copy.size
    assert {(k, h["recipient"], h["severity"]) for k, h in ours.items()} == {
        (f"model.safetensors:{copy.size}", "lab-17", "high"),
        (f"total:{total}", "lab-17", "medium")}
    assert (f"size {copy.size} bytes is unique to lab-17's copy of heron-7b v1"
            in ours[f"model.safetensors:{copy.size}"]["context"])
    assert ours[f"total:{total}"]["context"].endswith(
        f"{total} bytes in all, the total size of lab-17's copy of heron-7b v1 (3 files)")
    # The release's own size names nobody; sizes one byte off are no hit at all.
    plain = [h for h in hits if h["indicator"] == f"model.safetensors:{released.size}"]
    assert plain and all(h["recipient"] is None for h in plain)
    assert not [h for h in hits if h["url"] == f"{base}{NEAR_COPY}"]


def test_the_demo_copy_is_padded_and_loads_unchanged(tmp_path: Path,
                                                     demo_release: Release) -> None:
    copy = demo_release.copy("lab-17").file("model.safetensors")
    data = copy.path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n]
    unpadded = header.rstrip(b" ")
    assert n % 8 == 0 and len(header) - len(unpadded) > 8
    assert json.loads(unpadded)["__metadata__"]["issued_to"] == "lab-17"
    # The released file, padded the same way, loads in the reference reader unchanged.
    released = demo_release.file("model.safetensors")
    original = released.path.read_bytes()
    padded = choose_padding(open_safetensors(BytesSource(original, "model.safetensors")),
                            seed=b"any recipient", name="model.safetensors",
                            taken={released.size})
    out = tmp_path / "model.safetensors"
    out.write_bytes(pad_bytes(original, padded))
    assert out.stat().st_size == released.size + padded.shift
    assert tensors(out) == tensors(released.path)
    assert tensors(copy.path).keys() == tensors(released.path).keys()
