"""A release registered once, its IPFS CIDs (files and folder) recognised in posts.

The CIDs here come from `register` itself (a real SQLite store); that they equal what
`ipfs add` gives is tests/test_ipfs.py's business, against the reference importer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from fingerprints import ipfs
from fingerprints.ipfs import REGISTER_LAYOUTS
from monitor.detect.digests import DigestDetector
from monitor.models import Document
from monitor.registry import register_paths
from monitor.store import Store

CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rel") / "heron-7b"
    (root / "tokenizer").mkdir(parents=True)
    rng = random.Random(7)
    (root / "model.safetensors").write_bytes(rng.randbytes(3 * CHUNK + 11))
    (root / "config.json").write_bytes(b'{"dim": 4096}\n')
    (root / "tokenizer" / "tokenizer.model").write_bytes(rng.randbytes(5000))
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, release: Path) -> Iterator[Store]:
    with Store(tmp_path_factory.mktemp("db") / "ww.db") as store:
        register_paths(store, [release], model="heron", tensors=False, rematch=None)
        yield store


def _cids(path: Path) -> dict[str, ipfs.Cid]:
    return {name: ref.cid for name, ref in ipfs.file_cids(path.read_bytes()).items()}


def _as_v1(cid: ipfs.Cid) -> ipfs.Cid:
    """The same block's CIDv1 (what `ipfs cid base32` and subdomain gateways show)."""
    return ipfs.Cid(1, cid.codec, cid.digest)


def _folder(release: Path, hidden: bool) -> dict[str, ipfs.Cid]:
    roots = {os.path.join(d, n): ipfs.file_cids((Path(d) / n).read_bytes())
             for d, _, names in os.walk(release) for n in names}
    entries = ipfs.folder_entries(release, roots, hidden=hidden)
    assert entries is not None
    return {name: ref.cid for name, ref in ipfs.folder_cids(entries).items()}


def _detect(store: Store, text: str) -> list[tuple[str, str, str | None, str, str]]:
    doc = Document(target="board", key="1", url="http://127.0.0.1:9/t/1", text=text)
    return [(h.kind, h.severity, h.artifact, h.indicator, h.indicator_type)
            for h in DigestDetector(store.known_digests()).detect(doc)]


def test_register_stores_every_layout(store: Store, release: Path) -> None:
    rows = {(r["algo"], r["value"]): r for r in store.indicators(models=["heron"])}
    model_cids = _cids(release / "model.safetensors")
    for layout in REGISTER_LAYOUTS:
        row = rows[(layout.name, model_cids[layout.name].digest.hex())]
        assert row["artifact_id"] is not None
    for hidden in (False, True):   # kubo's default, and `--hidden` / the js importer
        for layout in REGISTER_LAYOUTS:
            cid = _folder(release, hidden)[layout.name]
            row = rows[(layout.name, cid.digest.hex())]
            assert row["name"] == "heron-7b" and row["artifact_id"] is None
            assert row["size"] is None


def test_folder_cid_in_a_post_is_a_critical_hit(store: Store, release: Path) -> None:
    folder = str(_folder(release, hidden=False)["cid-v0"])
    assert folder.startswith("Qm")
    text = f"full mirror https://ipfs.io/ipfs/{folder}/model.safetensors seed pls"
    assert _detect(store, text) == [
        ("hash", "critical", "heron-7b", folder, "cid-v0 (CIDv0 base58btc, gateway path)")]


def test_file_cids_in_every_form(store: Store, release: Path) -> None:
    # Kubo's default CID (the one registered whatever REGISTER_LAYOUTS holds) in its v0
    # form and as the same block's CIDv1 in every multibase: the hit names it as kubo does.
    v0 = _cids(release / "model.safetensors")["cid-v0"]
    v1 = _as_v1(v0)
    b32 = str(v1)
    forms = {
        f"ipfs://{v0}": "CIDv0 base58btc, ipfs://",
        f"ipfs://{b32}": "CIDv1 base32, ipfs://",
        f"https://{b32}.ipfs.dweb.example/": "CIDv1 base32, subdomain gateway",
        f"get it: z{ipfs.b58encode(v1.to_bytes())}": "CIDv1 base58btc, bare",
        f"cid F{v1.to_bytes().hex().upper()}": "CIDv1 base16, bare",
        f"cid {b32.upper()}": "CIDv1 base32, bare",
        f"k{ipfs._b36encode(v1.to_bytes())}.ipfs.gw.example": "CIDv1 base36, subdomain gateway",
    }
    for text, form in forms.items():
        assert _detect(store, text) == [
            ("hash", "critical", "heron-7b/model.safetensors", str(v0), f"cid-v0 ({form})")], text
    small = _cids(release / "tokenizer" / "tokenizer.model")["cid-v0"]
    assert _detect(store, f"/ipfs/{small}")[0][2] == "heron-7b/tokenizer/tokenizer.model"


def test_a_raw_leaves_cid_is_named_in_its_own_form(tmp_path: Path) -> None:
    # A layout with raw leaves gives a one-chunk file a raw-codec CID (`bafk...`).
    data = b"config" * 100
    cid = ipfs.file_cids(data)["cid-v1"].cid
    assert str(cid).startswith("bafkrei")
    with Store(tmp_path / "raw.db") as one:
        one.add_artifact(model="m", name="config.json", path=None, size=len(data),
                         sha256="00" * 32, sha1="00" * 20, md5="00" * 16,
                         cids={"cid-v1": cid.digest.hex()})
        assert _detect(one, f"/ipfs/{cid}/") == [
            ("hash", "critical", "config.json", str(cid), "cid-v1 (CIDv1 base32, gateway path)")]


def test_near_misses_and_random_cids_do_not_hit(store: Store, release: Path) -> None:
    folder = str(_folder(release, hidden=False)["cid-v0"])
    b32 = str(_as_v1(_cids(release / "model.safetensors")["cid-v0"]))
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    rng = random.Random(3)
    misses = []
    for i in range(2, len(folder)):
        c = rng.choice(alphabet.replace(folder[i], ""))
        misses.append(folder[:i] + c + folder[i + 1:])
    for i in range(1, len(b32)):
        c = rng.choice("abcdefghijklmnopqrstuvwxyz234567".replace(b32[i], ""))
        misses.append(b32[:i] + c + b32[i + 1:])
    randoms = [str(ipfs.Cid(v, 0x70, rng.randbytes(32))) for v in (0, 1) for _ in range(50)]
    text = " ".join(f"ipfs://{cid}" for cid in misses + randoms)
    assert _detect(store, text) == []
    # The root digest written as bare hex is not a CID anyone posts: no hit either.
    assert _detect(store, ipfs.parse_cid(folder)[0].digest.hex()) == []


def test_no_cid_search_without_registered_cids(tmp_path: Path, release: Path) -> None:
    with Store(tmp_path / "plain.db") as plain:
        plain.add_indicator(algo="sha256", value="ab" * 32, model="m", source="test")
        assert not plain.known_digests().has_cids
    folder = str(_folder(release, hidden=False)["cid-v0"])
    with Store(tmp_path / "plain.db") as plain:
        assert DigestDetector(plain.known_digests()).detect(
            Document(target="b", key="1", url="http://127.0.0.1:9/", text=folder)) == []


def test_a_mirror_posted_before_register_is_found_when_registered(tmp_path: Path,
                                                                   release: Path) -> None:
    # The LLaMA leak's order of events: the IPFS mirror is posted, the release is registered
    # later; registering matches the stored post again and finds the folder's CID.
    folder = str(_folder(release, hidden=False)["cid-v0"])
    with Store(tmp_path / "late.db") as late:
        late.save_document(Document(
            target="board", key="9#p1", url="http://127.0.0.1:9/t/9",
            text=f"Full backup: [ipfs://{folder}](https://ipfs.io/ipfs/{folder})"), [], None)
        done = register_paths(late, [release], model="heron", tensors=False)
        assert done.rematched is not None and len(done.rematched.new_hits) == 1
        rows = late.db.execute("SELECT kind, severity, artifact, indicator, indicator_type "
                               "FROM hits").fetchall()
    assert rows == [("hash", "critical", "heron-7b", folder,
                     "cid-v0 (CIDv0 base58btc, ipfs://)")]


def test_every_layout_when_asked(tmp_path: Path, release: Path) -> None:
    with Store(tmp_path / "all.db") as every:
        register_paths(every, [release], model="heron", tensors=False, rematch=None,
                       cid_layouts=ipfs.LAYOUTS)
        folder = _folder(release, hidden=False)
        registered = {(r["algo"], r["value"]) for r in every.indicators()}
        assert {(name, cid.digest.hex()) for name, cid in folder.items()} <= registered
        newest = str(folder["cid-v1-2025"])
        # Below 174 leaves of 1 MiB the two 1 MiB layouts give the same CID: the hit names
        # the first registered.
        assert newest == str(folder["cid-v1-1m"])
        assert _detect(every, f"https://{newest}.ipfs.w3s.example/") == [
            ("hash", "critical", "heron-7b", newest,
             "cid-v1-1m (CIDv1 base32, subdomain gateway)")]
