"""`weightwatch register --cids`: which IPFS layouts' CIDs register records, through the CLI.

Each recorded CID is compared with the reference importer's (`ipfs-unixfs-importer`, the
fixture of tests/test_ipfs.py) on the same files, and a post of a layout's CID is a hit
only once that layout was asked for.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from support import cli, query
from test_ipfs import Reference, reference  # noqa: F401  (the fixture, shared)

from fingerprints import ipfs
from fingerprints.ipfs import LAYOUTS
from monitor.models import Document
from monitor.store import Store

CHUNK = 256 * 1024


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "heron-7b"
    (root / "tokenizer").mkdir(parents=True)
    rng = random.Random(18)
    # Past one 1 MiB chunk, so every layout gives this file a CID of its own.
    (root / "model.safetensors").write_bytes(rng.randbytes(4 * CHUNK + 5))
    (root / "config.json").write_bytes(b'{"dim": 4096}\n')
    (root / "tokenizer" / "tokenizer.model").write_bytes(rng.randbytes(CHUNK + 1))
    return root


def _registered(db: Path) -> dict[tuple[str, str], str]:
    """(layout, name) -> the hex root digest registered (the registry keeps no more)."""
    return {(algo, name): value for algo, value, name in query(
        db, "SELECT algo, value, name FROM indicators WHERE algo LIKE 'cid-%'")}


def test_all_records_every_layout_as_the_reference_computes_it(
        reference: Reference, release: Path, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "ww.db"
    out = cli(db, "register", str(release), "--model", "heron-7b", "--no-tensors",
              "--cids", "all", "--format", "json")
    assert {row["name"] for row in json.loads(out.stdout)} == {
        "heron-7b/model.safetensors", "heron-7b/config.json",
        "heron-7b/tokenizer/tokenizer.model"}
    expected = reference(LAYOUTS, sorted(release.rglob("*")), release)
    # Each file and the folder registered (a sub-folder's CID is no indicator), in each
    # layout, with the digest of the reference's CID.
    assert _registered(db) == {
        (layout.name, path): ipfs.parse_cid(cid)[0].digest.hex()
        for layout in LAYOUTS for path, cid in expected[layout.name].items()
        if path != "heron-7b/tokenizer"}


def test_a_1m_cid_is_a_hit_only_once_its_layout_is_registered(release: Path,
                                                              tmp_path: Path) -> None:
    db = tmp_path / "ww.db"
    one_mib = ipfs.file_cids((release / "model.safetensors").read_bytes(),
                             [ipfs.KUBO_V1_1M])["cid-v1-1m"].cid
    assert str(one_mib).startswith("bafybei")
    with Store(db) as store:
        store.save_document(Document(
            target="board", key="7#p1", url="http://127.0.0.1:9/t/7#p1",
            text=f"weights only, 1 MiB chunks: ipfs://{one_mib}"), [], None)
    cli(db, "register", str(release), "--model", "heron-7b", "--no-tensors")
    assert query(db, "SELECT count(*) FROM hits") == [(0,)]
    assert {algo for (algo,) in query(db, "SELECT DISTINCT algo FROM indicators "
                                          "WHERE algo LIKE 'cid-%'")} == {"cid-v0"}
    cli(db, "register", str(release), "--model", "heron-7b", "--no-tensors",
        "--cids", "cid-v1-1m")
    assert query(db, "SELECT severity, artifact, indicator, indicator_type FROM hits") == [
        ("critical", "heron-7b/model.safetensors", str(one_mib),
         "cid-v1-1m (CIDv1 base32, ipfs://)")]


def test_none_and_a_list(release: Path, tmp_path: Path) -> None:
    cli(tmp_path / "none.db", "register", str(release), "--model", "m", "--no-tensors",
        "--cids", "none")
    assert query(tmp_path / "none.db",
                 "SELECT count(*) FROM indicators WHERE algo LIKE 'cid-%'") == [(0,)]
    cli(tmp_path / "two.db", "register", str(release), "--model", "m", "--no-tensors",
        "--cids", " cid-v1-2025,cid-v1 ")
    assert {algo for (algo,) in query(tmp_path / "two.db",
                                      "SELECT DISTINCT algo FROM indicators "
                                      "WHERE algo LIKE 'cid-%'")} == {"cid-v1", "cid-v1-2025"}


@pytest.mark.parametrize("value", ["cid-v2", "", "all,cid-v0", "CID-V0"])
def test_an_unknown_layout_is_one_line_naming_the_valid_ones(release: Path, tmp_path: Path,
                                                            value: str) -> None:
    out = cli(tmp_path / "ww.db", "register", str(release), "--model", "m", "--cids", value,
              code=2)
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("weightwatch: --cids: unknown layout")
    assert "valid: cid-v0, cid-v1, cid-v1-1m, cid-v1-2025, all or none" in out.stderr
    assert not (tmp_path / "ww.db").exists()
