"""IPFS CIDs computed by fingerprints.ipfs against the reference UnixFS importer.

The reference is the js `ipfs-unixfs-importer` (what `ipfs add` does, in the implementation
IPFS maintains for js), run by node on the same files. It is taken from tests/.node when the
test command installed it there, else installed once into a temporary folder; without npm or
the registry the tests skip, except under CI, where a missing reference is a failure.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from fingerprints import ipfs
from fingerprints.digests import digest_file
from fingerprints.ipfs import LAYOUTS, Layout

REFERENCE = "ipfs-unixfs-importer@17.1.1"
SCRIPT = Path(__file__).with_name("ipfs_reference.mjs")
CHUNK = 256 * 1024

Reference = Callable[..., dict[str, dict[str, str]]]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"IPFS reference implementation unavailable under CI: {reason}")
    pytest.skip(f"IPFS reference implementation unavailable: {reason}")


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    node = shutil.which("node")
    if node is None:
        _unavailable("no node on PATH")
    prefix = Path(__file__).with_name(".node")
    if not (prefix / "node_modules" / "ipfs-unixfs-importer").is_dir():
        prefix = tmp_path_factory.mktemp("ipfs-reference")
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("no npm on PATH")
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix",
                               str(prefix), REFERENCE], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            _unavailable(f"npm install {REFERENCE} failed: {done.stderr.strip()[-300:]}")
    # ES modules resolve packages next to the script, not through NODE_PATH. Copied under
    # a name of this process's and renamed: parallel test workers share tests/.node.
    script = prefix / SCRIPT.name
    part = prefix / f"{SCRIPT.name}.{os.getpid()}"
    shutil.copyfile(SCRIPT, part)
    os.replace(part, script)

    def run(layouts: Sequence[Layout], paths: Sequence[Path],
            root: Path | None = None) -> dict[str, dict[str, str]]:
        job = {"layouts": [{"name": lay.name, "cidVersion": lay.cid_version,
                            "chunkSize": lay.chunk_size, "rawLeaves": lay.raw_leaves,
                            "maxLinks": lay.max_links} for lay in layouts],
               "paths": [str(p) for p in paths], "root": str(root) if root else None}
        done = subprocess.run([str(node), str(script)], input=json.dumps(job),
                              capture_output=True, text=True, timeout=600, check=True)
        result: dict[str, dict[str, str]] = json.loads(done.stdout)
        return result

    return run


def _write(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _cids(path: Path, layouts: Sequence[Layout] = LAYOUTS) -> dict[str, str]:
    hashers = ipfs.file_cid_hashers(layouts)
    with path.open("rb") as f:
        # An odd read size, so chunks straddle the reads.
        while block := f.read(100_003):
            for h in hashers:
                h.update(block)
    return {name: str(ref.cid) for name, ref in ipfs.results(hashers).items()}


# 0 B, 1 B, one chunk, one chunk plus one byte, the 1 MiB layouts' chunk plus one byte, and
# past one node of 174 leaves (a two-level tree of 256 KiB chunks: 45.6 MB).
SIZES = [0, 1, CHUNK, CHUNK + 1, 4 * CHUNK + 1, 174 * CHUNK + 1]


def test_files_match_reference(reference: Reference, tmp_path: Path) -> None:
    paths = [_write(tmp_path / f"f{size}", size, seed=size) for size in SIZES]
    expected = reference(LAYOUTS, paths)
    for path in paths:
        mine = _cids(path)
        for layout in LAYOUTS:
            assert mine[layout.name] == expected[layout.name][path.name], (path.name, layout)


def test_known_cids_of_tiny_files() -> None:
    # Published values, independent of the reference run: the empty file as kubo adds it.
    empty = ipfs.file_cids(b"")
    assert str(empty["cid-v0"].cid) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert str(empty["cid-v1"].cid) == \
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_deep_trees_match_reference(reference: Reference, tmp_path: Path) -> None:
    # Tiny chunks and few links per node give trees four and five levels deep, with
    # partly filled last nodes at every level, in a few kilobytes.
    layouts = [Layout("tiny-pb", 0, 64, False, 3), Layout("tiny-raw", 1, 100, True, 4),
               Layout("tiny-v1-pb", 1, 64, False, 2)]
    paths = [_write(tmp_path / f"d{size}", size, seed=size)
             for size in (64 * 3, 64 * 9 + 1, 64 * 27, 5000, 12_345)]
    expected = reference(layouts, paths)
    for path in paths:
        mine = _cids(path, layouts)
        for layout in layouts:
            assert mine[layout.name] == expected[layout.name][path.name], (path.name, layout)


def _release_folder(tmp_path: Path) -> Path:
    root = tmp_path / "heron-7b"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    _write(root / "model.safetensors", CHUNK * 3 + 7, seed=1)
    _write(root / "Config.json", 300, seed=2)          # capitals sort before lowercase
    _write(root / "a b ü.txt", 10, seed=3)
    (root / "zero").write_bytes(b"")
    _write(root / "sub" / "tokenizer.model", CHUNK, seed=4)
    _write(root / "sub" / "deeper" / "x", 5, seed=5)
    return root


def _folder_cids(root: Path, layouts: Sequence[Layout] = LAYOUTS,
                 hidden: bool = True) -> dict[str, str]:
    roots = {os.path.join(dirpath, name): ipfs.file_cids((Path(dirpath) / name).read_bytes(),
                                                         layouts)
             for dirpath, _, names in os.walk(root) for name in names}
    entries = ipfs.folder_entries(root, roots, hidden=hidden)
    assert entries is not None
    return {name: str(ref.cid) for name, ref in ipfs.folder_cids(entries, layouts).items()}


def test_folder_matches_reference(reference: Reference, tmp_path: Path) -> None:
    root = _release_folder(tmp_path)
    paths = sorted(root.rglob("*"))
    expected = reference(LAYOUTS, paths, root)
    mine = _folder_cids(root)
    for layout in LAYOUTS:
        assert mine[layout.name] == expected[layout.name]["heron-7b"], layout


def test_hidden_files_and_symlinks(tmp_path: Path) -> None:
    root = _release_folder(tmp_path)
    with_hidden = _folder_cids(root)
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    assert _folder_cids(root, hidden=False) == with_hidden   # kubo's default skips it
    assert _folder_cids(root) != with_hidden                 # `--hidden` adds it
    (root / "link").symlink_to(root / "zero")
    assert ipfs.folder_entries(root, {}) is None


def test_digest_file_computes_cids(reference: Reference, tmp_path: Path) -> None:
    # Through register's single read: 4 MiB reads, hashers on threads.
    path = _write(tmp_path / "w.bin", 9 * 1024 * 1024 + 5, seed=9)
    digests = digest_file(path, cid_layouts=LAYOUTS)
    expected = reference(LAYOUTS, [path])
    assert {name: str(ref.cid) for name, ref in digests.cids.items()} == \
        {lay.name: expected[lay.name][path.name] for lay in LAYOUTS}


@pytest.mark.slow
def test_one_gigabyte_matches_reference(reference: Reference, tmp_path: Path) -> None:
    path = tmp_path / "1g.bin"
    rng = random.Random(1)
    with path.open("wb") as f:
        for _ in range(1000):
            f.write(rng.randbytes(1_000_000))
    digests = digest_file(path, cid_layouts=LAYOUTS)
    expected = reference(LAYOUTS, [path])
    for layout in LAYOUTS:
        assert str(digests.cids[layout.name].cid) == expected[layout.name][path.name]


# --- parsing CIDs in text -----------------------------------------------------------------

V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
V1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


def test_every_form_of_a_cid_is_read() -> None:
    cid, _ = ipfs.parse_cid(V1)
    v1_forms = {
        "b": V1, "B": V1.upper(), "z": "z" + ipfs.b58encode(cid.to_bytes()),
        "f": "f" + cid.to_bytes().hex(), "F": "F" + cid.to_bytes().hex().upper(),
    }
    for prefix, text in v1_forms.items():
        parsed, _ = ipfs.parse_cid(text)
        assert parsed == cid, prefix
    k = ipfs.parse_cid("k" + ipfs._b36encode(cid.to_bytes()))[0]
    assert k == cid
    text = (f"mirror: ipfs://{V0} and https://gw.example/ipfs/{V1}/llama/7B/ and "
            f"https://{V1}.ipfs.dweb.example/ or plain {v1_forms['z']}.")
    found = list(ipfs.find_cids(text))
    assert [f.form for f in found] == ["CIDv0 base58btc, ipfs://", "CIDv1 base32, gateway path",
                                       "CIDv1 base32, subdomain gateway", "CIDv1 base58btc, bare"]
    assert found[1].cid == found[2].cid == found[3].cid == cid
    # Offsets are the text's, past non-ASCII characters too.
    text = f"größe: 13 GB — ipfs://{V0}"
    (only,) = ipfs.find_cids(text)
    assert text[only.start:only.end] == V0 and only.form == "CIDv0 base58btc, ipfs://"


def test_near_misses_are_not_cids() -> None:
    # One character changed still decodes (there is no checksum), to another digest; a
    # non-canonical base32 ending, a wrong length or a CID inside a longer word is refused.
    cid, _ = ipfs.parse_cid(V0)
    changed = V0[:20] + ("a" if V0[20] != "a" else "b") + V0[21:]
    assert ipfs.parse_cid(changed)[0].digest != cid.digest
    last = "abcdefghijklmnopqrstuvwxyz234567"
    alias = V1[:-1] + last[last.index(V1[-1]) + 1]     # same leading bits, other padding
    with pytest.raises(ipfs.CidError):
        ipfs.parse_cid(alias)
    assert not list(ipfs.find_cids("x" + V0 + " " + V1[:-1] + " " + V0 + "Q"))
    assert not list(ipfs.find_cids("Qm" + "1" * 44))     # decodes to no multihash


def test_a_real_posted_cid_is_read() -> None:
    # The LLaMA leak's IPFS mirror as posted (meta-llama/llama pull request 73, 2023-03-12):
    # the whole torrent's folder and two model sizes, as ipfs:// links and gateway paths.
    found = list(ipfs.find_cids(LLAMA_POST))
    assert [f.text for f in found] == [LLAMA_FULL, LLAMA_FULL, LLAMA_7B, LLAMA_7B]
    assert [f.form.split(", ")[1] for f in found] == ["ipfs://", "gateway path"] * 2
    assert all(f.cid.version == 0 and str(f.cid) == f.text for f in found)


LLAMA_FULL = "Qmb9y5GCkTG7ZzbBWMu2BXwMkzyCKcUjtEKPpgdZ7GEFKm"
LLAMA_7B = "QmbvdJ7KgvZiyaqHw5QtQxRtUd7pCAdkWWbzuvyKusLGTw"
LLAMA_POST = (f"Full backup: [ipfs://{LLAMA_FULL}](https://ipfs.io/ipfs/{LLAMA_FULL})\n\n"
              f"7B: [ipfs://{LLAMA_7B}](https://ipfs.io/ipfs/{LLAMA_7B})")


def test_memory_is_bounded_by_chunks_and_tree_depth() -> None:
    # 50 MB (past 174 leaves of 256 KiB) through every layout in odd-sized pieces: what is kept is a partial chunk per
    # kind of leaf and one unfinished node per tree level, never the file.
    import tracemalloc

    piece = random.Random(5).randbytes(1_000_003)
    hashers = ipfs.file_cid_hashers()
    tracemalloc.start()
    try:
        for _ in range(50):
            for h in hashers:
                h.update(piece)
        ipfs.results(hashers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak


def test_a_folder_kubo_would_shard_gets_no_cid() -> None:
    one = ipfs.file_cids(b"x")
    entry = lambda i: ipfs.FolderEntry(f"{i:0200d}", file=one)  # noqa: E731
    # Links of 34 + 200 bytes: 1120 of them stay under 256 KiB, 1121 reach it.
    assert set(ipfs.folder_cids([entry(i) for i in range(1120)])) == {
        layout.name for layout in LAYOUTS if layout.cid_version == 0}
    assert ipfs.folder_cids([entry(i) for i in range(1121)], [ipfs.KUBO_V0]) == {}
