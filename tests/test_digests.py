"""fingerprints.digests against independent hashlib computations on real files."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from fingerprints import digests, torrent
from fingerprints.digests import DigestError, FileDigests, digest_file, iter_files

MIB = 1 << 20
STITCHING = digests.stitching_available()


@pytest.fixture(autouse=True, params=["hashlib", "stitched"])
def lanes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with both ways of computing MD5, SHA-1, SHA-256 and the pieces
    root: four hashlib lanes, and the compiled stitched lane where this machine has it."""
    if request.param == "stitched" and not STITCHING:
        pytest.skip("fingerprints._stitch not built or no SHA-NI on this CPU")
    monkeypatch.setattr(digests, "stitching_available", lambda: request.param == "stitched")
    return str(request.param)


def _write_random(path: Path, size: int, seed: int = 1234) -> bytes:
    data = random.Random(seed + size).randbytes(size)
    path.write_bytes(data)
    return data


def _merkle_root(data: bytes) -> str | None:
    """BEP 52 pieces root, computed the plain way (every leaf in memory) to check the
    streaming one: SHA-256 of each 16 KiB block, zero leaves up to a power of two."""
    if not data:
        return None
    layer = [hashlib.sha256(data[i:i + 16384]).digest() for i in range(0, len(data), 16384)]
    width = 1
    while width < len(layer):
        width *= 2
    layer += [bytes(32)] * (width - len(layer))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0].hex()


@pytest.mark.parametrize("chunks", [[1], [16384], [3 * 16384 + 1], [5 * 16384, 7, 2 * 16384 - 7]])
def test_pieces_root_batches_across_any_chunking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 chunks: list[int]) -> None:
    """Leaves are reduced in aligned runs of up to _BATCH; with a batch of 4, chunks that
    start off alignment and files of 1 to 21 blocks cross every case of run and padding."""
    monkeypatch.setattr(torrent, "_BATCH", 4)
    for blocks in (1, 2, 3, 4, 5, 8, 9, 13, 16, 21):
        data = random.Random(blocks).randbytes(blocks * 16384 - blocks % 3)
        hasher, pos, i = torrent.PiecesRootHasher(), 0, 0
        while pos < len(data):
            step = chunks[i % len(chunks)]
            hasher.update(data[pos:pos + step])
            pos, i = pos + step, i + 1
        assert hasher.hexdigest() == _merkle_root(data), (blocks, chunks)


def _expected(path: Path, data: bytes) -> FileDigests:
    sha256 = hashlib.sha256(data).hexdigest()
    return FileDigests(
        path=str(path),
        size=len(data),
        sha256=sha256,
        sha1=hashlib.sha1(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        pieces_root=_merkle_root(data),
        shards=(sha256,),
    )


@pytest.mark.parametrize(
    "size", [0, 1, 16384, 3 * 16384, 4 * MIB, 4 * MIB + 1, 5_000_003, 3 * 4 * MIB + 17]
)
def test_known_answers_default_chunk(tmp_path: Path, size: int) -> None:
    path = tmp_path / f"f{size}.bin"
    data = _write_random(path, size)
    assert digest_file(path) == _expected(path, data)


def test_empty_file_has_the_well_known_digests(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    d = digest_file(path)
    assert d.size == 0
    assert d.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert d.sha1 == "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    assert d.md5 == "d41d8cd98f00b204e9800998ecf8427e"


@pytest.mark.parametrize("chunk_size", [7, 4096, 16383, 16384, 16385, 3 * 16384])
@pytest.mark.parametrize("size", [3 * 16384, 3 * 16384 + 5, 100_003])
def test_chunk_boundaries(tmp_path: Path, size: int, chunk_size: int) -> None:
    path = tmp_path / "f.bin"
    data = _write_random(path, size)
    assert digest_file(path, chunk_size=chunk_size) == _expected(path, data)


@pytest.mark.parametrize("size", [2, 3, 1001])
def test_one_byte_chunks(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.bin"
    data = _write_random(path, size)
    assert digest_file(path, chunk_size=1) == _expected(path, data)


def test_digests_are_lowercase_hex_and_as_dict_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "x"
    data = _write_random(path, 1000)
    d = digest_file(str(path))
    assert d.path == str(path)
    for value, length in ((d.sha256, 64), (d.sha1, 40), (d.md5, 32)):
        assert len(value) == length and value == value.lower()
        int(value, 16)
    assert d.as_dict() == {
        "path": str(path),
        "size": 1000,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
        # One 16 KiB block or less: the pieces root is that block's SHA-256.
        "pieces_root": hashlib.sha256(data).hexdigest(),
        "shards": (hashlib.sha256(data).hexdigest(),),
    }
    assert FileDigests(**d.as_dict()) == d


@pytest.mark.parametrize(("size", "chunk_size"), [(0, 4096), (3000, 4096), (100_003, 4096)])
def test_progress_is_monotonic_and_reaches_the_size(
    tmp_path: Path, size: int, chunk_size: int
) -> None:
    path = tmp_path / "p"
    _write_random(path, size)
    seen: list[int] = []
    digest_file(path, chunk_size=chunk_size, progress=seen.append)
    assert seen, "progress must be called at least once"
    assert seen[-1] == size
    assert seen == sorted(seen)
    assert all(0 <= n <= size for n in seen)
    if size > chunk_size:
        # Reported as chunks complete, not only at the end.
        assert len(seen) >= 2
        assert all(n % chunk_size == 0 for n in seen[:-1] if n != size)


def test_multi_chunk_files_are_hashed_by_worker_threads(tmp_path: Path, lanes: str) -> None:
    path = tmp_path / "big"
    _write_random(path, 10 * 65536)
    names: set[str] = set()
    digest_file(
        path,
        chunk_size=65536,
        progress=lambda n: names.update(t.name for t in threading.enumerate()),
    )
    assert ({"digest-md5+sha"} if lanes == "stitched"
            else {"digest-sha256", "digest-sha1", "digest-md5"}) <= names
    # The workers are gone once digest_file returns.
    assert not [t for t in threading.enumerate() if t.name.startswith("digest-")]


def test_exception_from_progress_aborts_and_stops_workers(tmp_path: Path) -> None:
    path = tmp_path / "big"
    _write_random(path, 40 * 4096)

    class Cancelled(Exception):
        pass

    def cancel(n: int) -> None:
        if n >= 8192:
            raise Cancelled

    with pytest.raises(Cancelled):
        digest_file(path, chunk_size=4096, progress=cancel)
    assert not [t for t in threading.enumerate() if t.name.startswith("digest-")]


def test_missing_file_raises_digest_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(DigestError) as info:
        digest_file(missing)
    assert isinstance(info.value, OSError)
    assert info.value.filename == str(missing)
    assert str(missing) in str(info.value)
    assert info.value.errno == 2


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DigestError) as info:
        digest_file(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DigestError, match="not a regular file"):
        digest_file(fifo)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_raises_digest_error(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(DigestError) as info:
        digest_file(path)
    assert info.value.filename == str(path)


def test_bad_chunk_size_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"x")
    with pytest.raises(ValueError):
        digest_file(path, chunk_size=0)


def _tree(root: Path) -> None:
    for rel in ["b.txt", "a/z.bin", "a/b/c.txt", "a/b/a.txt", "a-1/x", "A.txt", "a/y/q"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)


def test_iter_files_walks_folders_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "release"
    _tree(root)
    got = [p.relative_to(root).as_posix() for p in iter_files([root])]
    assert got == ["A.txt", "a/b/a.txt", "a/b/c.txt", "a/y/q", "a/z.bin", "a-1/x", "b.txt"]
    # The same order as sorting all relative paths by their parts.
    assert got == sorted(got, key=lambda s: s.split("/"))


def test_iter_files_keeps_argument_order_and_mixes_files_and_folders(tmp_path: Path) -> None:
    root = tmp_path / "release"
    _tree(root)
    single = tmp_path / "single.bin"
    single.write_bytes(b"1")
    got = list(iter_files([str(single), root / "a" / "b"]))
    assert got == [single, root / "a" / "b" / "a.txt", root / "a" / "b" / "c.txt"]
    assert all(isinstance(p, Path) for p in got)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_iter_files_does_not_follow_symlinked_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"s")
    root = tmp_path / "release"
    root.mkdir()
    (root / "model.bin").write_bytes(b"m")
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link_file").symlink_to(outside / "secret.bin")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "dangling").symlink_to(tmp_path / "gone")
    got = [p.name for p in iter_files([root])]
    assert got == ["link_file", "model.bin"]


def test_iter_files_raises_on_missing_path(tmp_path: Path) -> None:
    present = tmp_path / "here"
    present.write_bytes(b"")
    missing = tmp_path / "not-here"
    it = iter_files([present, missing])
    assert next(it) == present
    with pytest.raises(FileNotFoundError) as info:
        next(it)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("size", [250_003, 300_000, 100_001])
def test_shards_above_the_shard_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     size: int) -> None:
    """Files larger than a shard get the SHA-256 of each shard (the last one shorter), as
    sigstore model signing lays them out; a small shard size stands in for 1 GB here."""
    monkeypatch.setattr(digests, "SHARD_SIZE", 100_000)
    path = tmp_path / "big.bin"
    data = _write_random(path, size)
    d = digest_file(path, chunk_size=7_777, shards=True)
    assert d.shards == tuple(hashlib.sha256(data[i:i + 100_000]).hexdigest()
                             for i in range(0, size, 100_000))
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.pieces_root == _merkle_root(data)


def test_shards_of_large_files_only_when_asked(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `shards`, a file above the shard size gets no shard list (not a wrong one),
    and its other digests are the same; a file within one shard always has its SHA-256."""
    monkeypatch.setattr(digests, "SHARD_SIZE", 100_000)
    big = tmp_path / "big.bin"
    data = _write_random(big, 250_003)
    plain, sharded = digest_file(big, chunk_size=7_777), digest_file(big, chunk_size=7_777,
                                                                     shards=True)
    assert plain.shards == () and len(sharded.shards) == 3
    assert (plain.sha256, plain.sha1, plain.md5, plain.pieces_root) == (
        sharded.sha256, sharded.sha1, sharded.md5, sharded.pieces_root)
    assert plain.sha256 == hashlib.sha256(data).hexdigest()
    small = tmp_path / "small.bin"
    _write_random(small, 100_000)
    assert digest_file(small).shards == (digest_file(small).sha256,)


def test_pieces_root_matches_a_v2_torrent_built_independently(tmp_path: Path) -> None:
    """A v2 torrent made here with fastbencode carries each file's pieces root; the one
    register computes must be the one in the torrent."""
    import fastbencode

    from fingerprints.torrent import parse_torrent

    files = {"a.bin": _write_random(tmp_path / "a.bin", 3 * 16384 + 5),
             "b.bin": _write_random(tmp_path / "b.bin", 16384)}
    tree = {name.encode(): {b"": {b"length": len(data),
                                  b"pieces root": bytes.fromhex(_merkle_root(data))}}
            for name, data in files.items()}
    info = {b"file tree": tree, b"meta version": 2, b"name": b"pack", b"piece length": 16384}
    layers = {bytes.fromhex(_merkle_root(files["a.bin"])):
              b"".join(hashlib.sha256(files["a.bin"][i:i + 16384]).digest()
                       for i in range(0, len(files["a.bin"]), 16384))}
    torrent = parse_torrent(fastbencode.bencode({b"info": info, b"piece layers": layers}))
    roots = {f.path: f.pieces_root for f in torrent.files}
    for name in files:
        assert digest_file(tmp_path / name).pieces_root == roots[f"pack/{name}"]


def test_file_growing_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    _write_random(path, 3 * 16384)

    def grow(done: int) -> None:
        if done and done < 10 * 16384:
            with open(path, "ab") as f:
                f.write(b"x" * 16384)

    with pytest.raises(DigestError, match="changed size while being read"):
        digest_file(path, chunk_size=16384, progress=grow)
