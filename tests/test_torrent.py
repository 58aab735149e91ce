"""fingerprints.torrent: v1, v2 and hybrid metainfo against answers computed here, and every
kind of hostile input turned into one TorrentError line.

The torrents are built in the tests from real bytes with fastbencode and hashlib; the BEP 52
Merkle root is computed independently (recursively, from the spec's wording) so the parser's
iterative version is checked against a second reading of the spec.
"""

from __future__ import annotations

import hashlib
import io
import math
import random

import fastbencode
import pytest
from support import BLOCK, merkle_root_reference, metainfo, v1_info, v1_pieces, v2_tree

from demo.release import Release
from fingerprints.indicators import parse_magnet
from fingerprints.torrent import (
    TorrentError,
    TorrentFile,
    magnet_for,
    parse_torrent,
    pieces_root,
    pieces_root_of_stream,
)


def file_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


FILES = {"a.bin": file_bytes(0, 1), "b.bin": file_bytes(1, 2), "sub/c.bin": file_bytes(BLOCK, 3),
         "sub/deeper/d.bin": file_bytes(3 * BLOCK + 5, 4)}


# ------------------------------------------------------------------------------ Merkle roots


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5, 5 * BLOCK])
def test_pieces_root_matches_the_spec(size: int) -> None:
    data = file_bytes(size, size)
    assert pieces_root(data) == merkle_root_reference(data)
    assert pieces_root_of_stream(io.BytesIO(data)) == merkle_root_reference(data)


def test_pieces_root_known_answers() -> None:
    assert pieces_root(b"") is None
    # One block: the root is the block's own hash, i.e. the file's SHA-256.
    assert pieces_root(b"x") == hashlib.sha256(b"x").hexdigest()
    block = file_bytes(BLOCK, 7)
    assert pieces_root(block) == hashlib.sha256(block).hexdigest()
    # 3 blocks and 5 bytes: four leaves, two levels, no padding.
    data = FILES["sub/deeper/d.bin"]
    h = [hashlib.sha256(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK)]
    assert len(h) == 4 and len(data) == 3 * BLOCK + 5
    want = hashlib.sha256(hashlib.sha256(h[0] + h[1]).digest()
                          + hashlib.sha256(h[2] + h[3]).digest()).hexdigest()
    assert pieces_root(data) == want
    # Two blocks plus one byte: three leaves and one zero leaf.
    data = file_bytes(2 * BLOCK + 1, 8)
    h = [hashlib.sha256(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK)]
    want = hashlib.sha256(hashlib.sha256(h[0] + h[1]).digest()
                          + hashlib.sha256(h[2] + bytes(32)).digest()).hexdigest()
    assert pieces_root(data) == want


# ------------------------------------------------------------------------------ good torrents


def test_v1_single_file() -> None:
    data = file_bytes(40_000, 9)
    info = {b"length": len(data), b"name": b"model.safetensors", b"piece length": BLOCK,
            b"pieces": v1_pieces(data, BLOCK)}
    raw = metainfo(info, comment=b"hello", created_by=b"mktorrent 1.1", creation_date=1793610000)
    t = parse_torrent(raw)
    assert t.version == "v1" and t.infohash_v2 is None
    assert t.infohash_v1 == hashlib.sha1(fastbencode.bencode(info)).hexdigest()
    assert t.files == [TorrentFile("model.safetensors", 40_000, None)]
    assert t.total_size == 40_000 and t.piece_length == BLOCK and t.name == "model.safetensors"
    assert t.trackers == ["udp://tracker.example.org:1337/announce"]
    assert (t.comment, t.created_by, t.creation_date) == ("hello", "mktorrent 1.1", 1793610000)


def test_infohash_is_over_the_raw_info_bytes() -> None:
    """Written by hand, byte by byte: the hash is of exactly this span of the file."""
    pieces = hashlib.sha1(b"abc").digest()
    info = (b"d6:lengthi3e4:name5:a.txt12:piece lengthi16384e6:pieces20:" + pieces + b"e")
    raw = (b"d8:announce9:udp://x:17:comment2:hi4:info" + info
           + b"8:url-listl14:http://x/a.txtee")
    t = parse_torrent(raw)
    assert t.infohash_v1 == hashlib.sha1(info).hexdigest()
    assert t.files == [TorrentFile("a.txt", 3, None)]


def test_v1_multi_file_with_pad_files() -> None:
    files = {"x/one.bin": file_bytes(20_000, 10), "two.bin": file_bytes(5, 11)}
    info = v1_info(files, piece_length=BLOCK, name=b"pack", pad_to=BLOCK)
    tiers = [[b"udp://a:1/announce"], [b"udp://b:2/announce", b"udp://a:1/announce"]]
    t = parse_torrent(metainfo(info, announce__list=tiers))
    # BEP 47 pad files are not content; the pieces still cover them.
    assert t.files == [TorrentFile("pack/x/one.bin", 20_000, None),
                       TorrentFile("pack/two.bin", 5, None)]
    assert t.total_size == 20_005
    assert t.trackers == ["udp://tracker.example.org:1337/announce", "udp://a:1/announce",
                          "udp://b:2/announce"]


def test_v2_file_tree_and_pieces_roots() -> None:
    info = {b"file tree": v2_tree(FILES), b"meta version": 2, b"name": b"release",
            b"piece length": BLOCK}
    t = parse_torrent(metainfo(info))
    assert t.version == "v2" and t.infohash_v1 is None
    assert t.infohash_v2 == hashlib.sha256(fastbencode.bencode(info)).hexdigest()
    assert t.files == [TorrentFile(f"release/{path}", len(data), merkle_root_reference(data))
                       for path, data in sorted(FILES.items(),
                                                key=lambda kv: kv[0].split("/"))]
    assert t.total_size == sum(len(d) for d in FILES.values())
    assert [f.pieces_root for f in t.files if f.length == 0] == [None]


def test_v2_single_file_torrent_path_is_the_file_name() -> None:
    data = file_bytes(100, 12)
    info = {b"file tree": v2_tree({"solo.bin": data}), b"meta version": 2, b"name": b"solo.bin",
            b"piece length": BLOCK}
    assert parse_torrent(metainfo(info)).files == [
        TorrentFile("solo.bin", 100, merkle_root_reference(data))]


def test_hybrid_carries_both_hashes() -> None:
    files = {"a.bin": file_bytes(BLOCK + 3, 13), "b.bin": file_bytes(7, 14)}
    info = v1_info(files, piece_length=BLOCK, name=b"hy", pad_to=BLOCK)
    info.update({b"file tree": v2_tree(files), b"meta version": 2})
    raw = metainfo(info)
    t = parse_torrent(raw)
    encoded = fastbencode.bencode(info)
    assert encoded in raw
    assert t.version == "hybrid"
    assert t.infohash_v1 == hashlib.sha1(encoded).hexdigest()
    assert t.infohash_v2 == hashlib.sha256(encoded).hexdigest()
    assert [(f.path, f.length) for f in t.files] == [("hy/a.bin", BLOCK + 3), ("hy/b.bin", 7)]
    assert all(f.pieces_root == merkle_root_reference(files[f.path[3:]]) for f in t.files)
    magnet = parse_magnet(magnet_for(t))
    assert (magnet.btih, magnet.btmh, magnet.name, magnet.length) == (
        t.infohash_v1, t.infohash_v2, "hy", BLOCK + 10)


def test_the_demo_release_torrent(demo_release: Release) -> None:
    t = parse_torrent(demo_release.torrent_bytes)
    assert t.version == "v1" and t.infohash_v1 == demo_release.infohash
    assert [(f.path, f.length) for f in t.files] == [(f.name, f.size) for f in demo_release.files]
    assert t.total_size == demo_release.total_size
    magnet = parse_magnet(magnet_for(t))
    assert magnet.btih == demo_release.infohash and magnet.length == demo_release.total_size
    assert magnet.trackers == ("udp://tracker.example.org:1337/announce",)


# ------------------------------------------------------------------------------ hostile input


def _good_v1() -> bytes:
    data = file_bytes(1000, 15)
    return metainfo({b"length": 1000, b"name": b"f.bin", b"piece length": BLOCK,
                     b"pieces": v1_pieces(data, BLOCK)})


def _v1_with(**changes: object) -> bytes:
    info: dict[bytes, object] = {b"length": 1000, b"name": b"f.bin", b"piece length": BLOCK,
                                 b"pieces": bytes(20)}
    for key, value in changes.items():
        k = key.replace("_", " ").encode()
        if value is None:
            info.pop(k, None)
        else:
            info[k] = value
    return metainfo(info)


def _files_with(path: list[bytes], length: int = 10) -> bytes:
    return metainfo({b"files": [{b"length": length, b"path": path}], b"name": b"n",
                     b"piece length": BLOCK, b"pieces": bytes(20)})


def _v2_with(tree: object, **changes: object) -> bytes:
    info: dict[bytes, object] = {b"file tree": tree, b"meta version": 2, b"name": b"n",
                                 b"piece length": BLOCK}
    info.update({k.replace("_", " ").encode(): v for k, v in changes.items()})
    return metainfo(info)


def _deep_tree(depth: int) -> dict[bytes, object]:
    tree: dict[bytes, object] = {b"f": {b"": {b"length": 0}}}
    for _ in range(depth):
        tree = {b"d": tree}
    return tree


HOSTILE = {
    "empty": b"",
    "random 16 bytes": bytes(random.Random(1).randbytes(16)),
    "hostile 16 bytes": b"d4:infold4:infol",
    "info is an int": b"d4:infoi1ee",
    "info is a list": b"d4:infoli1eee",
    "info is a string": b"d4:info3:abce",
    "no info": b"d8:announce3:abce",
    "top level is a list": b"l4:infoe",
    "lists nested 100k deep": b"l" * 100_000,
    "closed lists nested 100k deep": b"d4:info" + b"l" * 100_000 + b"e" * 100_000 + b"e",
    "declared string length 2**62": b"d4:info" + str(2 ** 62).encode() + b":xe",
    "declared string length 10**12": b"d4:info1000000000000:abcde",
    "three million empty strings": b"d4:infol" + b"0:" * 3_000_000 + b"ee",
    "absurd length prefix": b"d4:info" + b"9" * 400 + b":x",
    "integer with 1000 digits": b"d1:ai" + b"9" * 1000 + b"e4:infodee",
    "unsorted keys": b"d4:infod4:name1:ae1:ai1ee",
    "leading zero": b"d4:infod6:lengthi01eee",
    "negative zero": b"d1:ai-0e4:infodee",
    "trailing junk": _good_v1() + b"junk",
    "truncated": _good_v1()[:-7],
    "byte not bencode": b"d4:infox",
    "non-string key": b"di1e4:infoe",
    "name is not utf-8": _v1_with(name=b"\xff\xfe.bin"),
    "name missing": _v1_with(name=None),
    "name is '..'": _v1_with(name=b".."),
    "name has a slash": _v1_with(name=b"a/b"),
    "negative length": _v1_with(length=-1),
    "length is a string": _v1_with(length=b"10"),
    "huge declared length": _v1_with(length=2 ** 62),
    "length beyond the pieces": _v1_with(length=10 ** 12),
    "pieces not a multiple of 20": _v1_with(pieces=bytes(19)),
    "too many pieces": _v1_with(pieces=bytes(40)),
    "piece length zero": _v1_with(piece_length=0),
    "piece length absurd": _v1_with(piece_length=2 ** 40),
    "both length and files": _v1_with(files=[]),
    "neither length nor files": _v1_with(length=None),
    "path '..'": _files_with([b"..", b"etc", b"passwd"]),
    "path '.'": _files_with([b".", b"x"]),
    "empty path component": _files_with([b"a", b"", b"b"]),
    "empty path": _files_with([]),
    "path not a list": _files_with(b"a/b"),  # type: ignore[arg-type]
    "path component not utf-8": _files_with([b"\xc3\x28"]),
    "files entry not a dict": metainfo({b"files": [1], b"name": b"n", b"piece length": BLOCK,
                                        b"pieces": b""}),
    "meta version 3": _v2_with(_deep_tree(0), meta_version=3),
    "file tree without meta version": metainfo({b"file tree": _deep_tree(0), b"name": b"n",
                                                b"piece length": BLOCK}),
    "v2 without file tree": metainfo({b"meta version": 2, b"name": b"n",
                                      b"piece length": BLOCK}),
    "v2 piece length not a power of two": _v2_with(_deep_tree(0), piece_length=20000),
    "v2 empty tree": _v2_with({}),
    "v2 leaf without pieces root": _v2_with({b"f": {b"": {b"length": 5}}}),
    "v2 pieces root of 31 bytes": _v2_with({b"f": {b"": {b"length": 5,
                                                         b"pieces root": bytes(31)}}}),
    "v2 file mixed with a folder": _v2_with({b"f": {b"": {b"length": 0}, b"g": {}}}),
    "v2 root is a file": _v2_with({b"": {b"length": 0}}),
    "v2 '..' in the tree": _v2_with({b"..": {b"f": {b"": {b"length": 0}}}}),
    "v2 tree too deep": _v2_with(_deep_tree(70)),
    "v2 leaf not a dict": _v2_with({b"f": {b"": 5}}),
    "hybrid file lists differ": metainfo({
        b"file tree": {b"a": {b"": {b"length": 0}}}, b"length": 3, b"meta version": 2,
        b"name": b"a", b"piece length": BLOCK, b"pieces": bytes(20)}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_one_torrent_error_line(name: str) -> None:
    with pytest.raises(TorrentError) as info:
        parse_torrent(HOSTILE[name])
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 300, message
    assert isinstance(info.value, ValueError)


def test_hostile_messages_say_what_is_wrong() -> None:
    def why(data: bytes) -> str:
        with pytest.raises(TorrentError) as info:
            parse_torrent(data)
        return str(info.value)

    assert "nesting deeper" in why(HOSTILE["closed lists nested 100k deep"])
    assert "truncated" in why(HOSTILE["declared string length 2**62"])
    assert "'info' is not a dictionary" in why(HOSTILE["info is an int"])
    assert "UTF-8" in why(HOSTILE["name is not utf-8"])
    assert "'..'" in why(HOSTILE["path '..'"])
    assert "trailing junk" in why(HOSTILE["trailing junk"])
    assert "disordered" in why(HOSTILE["unsorted keys"])
    assert "piece hashes" in why(HOSTILE["length beyond the pieces"])


def test_caps_on_size_and_file_count() -> None:
    with pytest.raises(TorrentError, match="cap"):
        parse_torrent(_good_v1(), max_bytes=50)
    files = {f"f{i}": b"x" for i in range(11)}
    with pytest.raises(TorrentError, match="more than 10 files"):
        parse_torrent(metainfo(v1_info(files, piece_length=BLOCK)), max_files=10)
    with pytest.raises(TorrentError, match="more than 10 files"):
        parse_torrent(_v2_with(v2_tree(files)), max_files=10)


def test_every_truncation_of_a_real_torrent(demo_release: Release) -> None:
    raw = demo_release.torrent_bytes
    for end in range(len(raw)):
        with pytest.raises(TorrentError):
            parse_torrent(raw[:end])


def test_random_bytes_and_mutations_never_escape_as_other_errors(demo_release: Release) -> None:
    rng = random.Random(20261127)
    samples = [rng.randbytes(rng.randrange(1, 64)) for _ in range(500)]
    base = bytearray(demo_release.torrent_bytes[:600] + demo_release.torrent_bytes[-200:])
    for _ in range(1500):
        mutated = bytearray(demo_release.torrent_bytes)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    samples += [bytes(base), b"d" * 1000, b"i" * 1000, b"0:" * 1000, b"de" * 1000]
    parsed = 0
    for data in samples:
        try:
            parse_torrent(data)
            parsed += 1
        except TorrentError as exc:
            assert "\n" not in str(exc)
    # Byte flips inside piece hashes keep a valid torrent; most others must not.
    assert 0 < parsed < len(samples)


@pytest.mark.slow
def test_big_but_honest_torrent_is_fine() -> None:
    """100k files (the default cap) of a v1 torrent parse; math stays exact."""
    n = 100_000
    entries = [{b"length": 1, b"path": [b"d", f"{i:06d}".encode()]} for i in range(n)]
    info = {b"files": entries, b"name": b"many", b"piece length": BLOCK,
            b"pieces": bytes(20 * math.ceil(n / BLOCK))}
    t = parse_torrent(metainfo(info))
    assert len(t.files) == n and t.total_size == n
