"""Hostile weight, torrent and bundle files are refused fast, with one line, in bounded memory.

Each file is what a hostile host could serve: a well-formed header that declares or holds
millions of entries (the issue measured an 81 MB safetensors header of a million tensors
at 1 GB and a minute, a GGUF of 16.7 M empty strings at 67-98 s). Each is built here
cheaply (streamed, or sparse where the bytes are zeros) and opened in a fresh interpreter
so that its peak RSS, measured by the child itself (VmHWM), belongs to that one
read. The bounds are the issue's: under 200 MB, and "fast" read generously as 20 s on a
loaded 2-core machine (most refusals take milliseconds, none more than a few seconds).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

# Each hostile file is parsed in its own process, its time and peak memory measured.
pytestmark = [pytest.mark.slow]

MAX_RSS_MB = 200
MAX_SECONDS = 20

# The child opens the file with the reader a daemon would use and prints one JSON line: the
# outcome, the error's text, its own peak RSS and the seconds the read took.
CHILD = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
from fingerprints.tensors import FileSource, WeightFileError
from fingerprints.weights import open_weights
from fingerprints.safetensors import open_sharded
from fingerprints.torrent import TorrentError, parse_torrent
from fingerprints.bundle import BundleError, read_bundle
start = time.monotonic()
error = None
try:
    if kind == "weights":
        with FileSource(path) as source:
            open_weights(source)
    elif kind == "index":
        open_sharded(path)
    elif kind == "torrent":
        parse_torrent(open(path, "rb").read())
    elif kind == "bundle":
        read_bundle(path)
except (WeightFileError, TorrentError, BundleError) as exc:
    error = str(exc)
seconds = time.monotonic() - start
# VmHWM is this process's own peak: getrusage's ru_maxrss on Linux keeps the parent's peak
# across fork and exec, and the parent just built the file in memory.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
rss_mb = int(hwm[0].split()[1]) / 1024 if hwm else \
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"error": error, "seconds": seconds, "rss_mb": rss_mb}))
"""


def open_in_child(kind: str, path: Path, timeout: float = 120) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(path)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout[-2000:]
    return json.loads(lines[0])


def assert_refused(result: dict, *words: str) -> None:
    error = result["error"]
    assert error is not None, f"accepted: {result}"
    assert "\n" not in error and len(error) < 400, error
    for word in words:
        assert word in error, error
    assert result["rss_mb"] < MAX_RSS_MB, result
    assert result["seconds"] < MAX_SECONDS, result


# -- builders ---------------------------------------------------------------------------------
def write_safetensors_header(path: Path, entries, count: int) -> None:
    """A safetensors file whose JSON header is `{entries(0), ..., entries(count-1)}`, streamed."""
    chunks = []
    for start in range(0, count, 1 << 16):
        chunks.append(",".join(entries(i) for i in range(start, min(count, start + (1 << 16)))))
    header = ("{" + ",".join(chunks) + "}").encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)


def safetensors_million(path: Path) -> Path:
    """The issue's file: ~81 MB of header, a million empty F32 tensors."""
    write_safetensors_header(
        path, lambda i: f'"model.layers.{i:07d}.mlp.weight":{{"dtype":"F32","shape":[0],'
                        f'"data_offsets":[0,0]}}', 1_000_000)
    return path


def safetensors_million_small(path: Path) -> Path:
    """A million tiny values inside a header small enough to pass any byte limit."""
    write_safetensors_header(path, lambda i: f'"{i:x}":0', 1_000_000)
    return path


def safetensors_entries_under_byte_limit(path: Path) -> Path:
    """500k valid empty tensors in 28 MB: under the header's byte limit, over its tensor limit."""
    write_safetensors_header(
        path, lambda i: f'"{i:06x}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}', 500_000)
    return path


def gguf_strings_spread(path: Path, arrays: int = 20, count: int = 200_000) -> Path:
    """Many string arrays, each well under any per-array limit, together millions of strings."""
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, arrays))
        for i in range(arrays):
            key = f"tokenizer.ggml.tokens{i}".encode()
            f.write(struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 8, count))
            f.seek(8 * count, 1)  # zeros: empty strings, left as a hole in the file
        f.truncate(f.tell() + 64)
    return path


def gguf_strings(path: Path, count: int = 1 << 24) -> Path:
    """A GGUF whose one key is an array of `count` empty strings: 8 zero bytes each, so the
    file is written sparse."""
    key = b"tokenizer.ggml.tokens"
    head = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<IIQ", 9, 8, count))
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + 8 * count + 64)
    return path


def zip_of_members(path: Path, count: int, suffix: str = ".npy") -> Path:
    """A zip64 of `count` empty stored members, laid out with numpy records (a Python loop
    over a million members would take longer than the read it tests)."""
    names = np.char.encode(np.char.add(np.char.zfill(np.arange(count).astype(str), 8), suffix))
    nlen = len(names[0])
    local = np.zeros(count, dtype=[("sig", "<u4"), ("ver", "<u2"), ("flags", "<u2"),
                                   ("method", "<u2"), ("time", "<u2"), ("date", "<u2"),
                                   ("crc", "<u4"), ("csize", "<u4"), ("usize", "<u4"),
                                   ("nlen", "<u2"), ("xlen", "<u2"), ("name", f"S{nlen}")])
    local["sig"], local["ver"], local["nlen"], local["name"] = 0x04034B50, 20, nlen, names
    central = np.zeros(count, dtype=[("sig", "<u4"), ("made", "<u2"), ("ver", "<u2"),
                                     ("flags", "<u2"), ("method", "<u2"), ("time", "<u2"),
                                     ("date", "<u2"), ("crc", "<u4"), ("csize", "<u4"),
                                     ("usize", "<u4"), ("nlen", "<u2"), ("xlen", "<u2"),
                                     ("clen", "<u2"), ("disk", "<u2"), ("iattr", "<u2"),
                                     ("eattr", "<u4"), ("offset", "<u4"), ("name", f"S{nlen}")])
    central["sig"], central["made"], central["ver"] = 0x02014B50, 45, 45
    central["nlen"], central["name"] = nlen, names
    central["offset"] = np.arange(count, dtype=np.uint64) * local.itemsize
    cd_offset = local.nbytes
    cd_size = central.nbytes
    record64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size,
                           cd_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, cd_offset + cd_size, 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(local.tobytes())
        f.write(central.tobytes())
        f.write(record64 + locator + eocd)
    return path


def zip_of_safetensors(path: Path, members: int = 2, count: int = 70_000) -> Path:
    """A zip of deflated safetensors files, each under the tensor limit, over it together:
    a header compresses ~50x, so this is ~0.2 MB holding 140k tensors."""
    header = ("{" + ",".join(f'"{i:06x}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
                             for i in range(count)) + "}").encode()
    blob = struct.pack("<Q", len(header)) + header
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(members):
            z.writestr(f"release/model-{i}.safetensors", blob)
    return path


def tar_of_members(path: Path, count: int = 100_000) -> Path:
    """A ustar archive of `count` empty regular files, headers laid out with numpy."""
    template = bytearray(512)
    for offset, value in ((0, b"00000000.npy"), (100, b"0000644\0"), (108, b"0000000\0"),
                          (116, b"0000000\0"), (124, b"00000000000\0"), (136, b"00000000000\0"),
                          (156, b"0"), (257, b"ustar\0"), (263, b"00")):
        template[offset:offset + len(value)] = value
    template[148:156] = b" " * 8
    headers = np.tile(np.frombuffer(bytes(template), np.uint8), (count, 1))
    numbers = np.arange(count)
    for k in range(8):  # the name's eight decimal digits
        headers[:, 7 - k] = ord("0") + (numbers // 10 ** k) % 10
    checksum = headers.sum(axis=1, dtype=np.int64)
    for k in range(6):
        headers[:, 148 + k] = ord("0") + ((checksum >> (3 * (5 - k))) & 7)
    headers[:, 154], headers[:, 155] = 0, ord(" ")
    with open(path, "wb") as f:
        f.write(headers.tobytes())
        f.write(bytes(1024))
    return path


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def onnx_graph_of(path: Path, field: bytes, count: int = 5_000_000) -> Path:
    """A ModelProto (ir_version 7) whose graph holds `count` copies of a 2-byte field: empty
    initializers (0x2a 0), empty nodes (0x0a 0), or inputs the reader skips (0x5a 0)."""
    graph = field * count
    path.write_bytes(b"\x08\x07" + b"\x3a" + varint(len(graph)) + graph)
    return path


def pytorch_pickle(path: Path, opcodes: bytes, repeat: int) -> Path:
    """A torch.save-shaped zip whose data.pkl repeats one opcode `repeat` times."""
    pickle_bytes = b"\x80\x02" + opcodes * repeat + b".."
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def torrent_items(path: Path, count: int) -> Path:
    path.write_bytes(b"d4:infod5:filesl" + b"0:" * count + b"eee")
    return path


def torrent_nested(path: Path, depth: int) -> Path:
    path.write_bytes(b"d4:info" + b"l" * depth + b"e" * depth + b"e")
    return path


def index_million(path: Path) -> Path:
    """A model.safetensors.index.json mapping a million tensors (28 MB)."""
    body = ",".join(f'"t{i:07d}":"a.safetensors"' for i in range(1_000_000))
    path.write_text('{"metadata":{},"weight_map":{' + body + "}}")
    return path


def bundle_values(path: Path, count: int = 20_000_000) -> Path:
    """A gzipped fingerprint bundle whose indicators list holds `count` zeros: 40 MB of
    JSON, 40 KB on disk; json would build the list before any entry could be checked."""
    head = (b'{"format":"weightwatch-fingerprints","version":2,"created_at":"2024-01-01",'
            b'"generator":"g","models":[{"name":"m"}],"artifacts":[],"weight_prints":[],'
            b'"indicators":[')
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(compressor.compress(head))
        block = b"0," * 100_000
        for _ in range(count // 100_000):
            f.write(compressor.compress(block))
        f.write(compressor.compress(b"0]}"))
        f.write(compressor.flush())
    return path


# -- the cases ----------------------------------------------------------------------------------
CASES = {
    # name: (builder, child kind, words the one-line error must contain)
    "safetensors-million-entries": (safetensors_million, "weights", ("safetensors",)),
    "safetensors-million-tiny-values": (safetensors_million_small, "weights", ("not an object",)),
    "safetensors-500k-entries-in-28MB": (safetensors_entries_under_byte_limit, "weights",
                                         ("tensors",)),
    "gguf-16.7M-empty-strings": (gguf_strings, "weights", ("tokenizer.ggml.tokens",)),
    "gguf-4M-strings-in-20-arrays": (gguf_strings_spread, "weights", ("strings",)),
    "zip-of-2-safetensors-70k-each": (zip_of_safetensors, "weights", ("tensors together",)),
    "tar-100k-members": (tar_of_members, "weights", ("members",)),
    "npz-300k-members": (lambda p: zip_of_members(p, 300_000), "weights", ("members",)),
    "onnx-5M-initializers": (lambda p: onnx_graph_of(p, b"\x2a\x00"), "weights",
                             ("initializers",)),
    "onnx-5M-nodes": (lambda p: onnx_graph_of(p, b"\x0a\x00"), "weights", ("nodes",)),
    "onnx-5M-skipped-fields": (lambda p: onnx_graph_of(p, b"\x5a\x00"), "weights",
                               ("fields",)),
    "pickle-30M-empty-lists": (lambda p: pytorch_pickle(p, b"]", 30_000_000), "weights",
                               ("pickle",)),
    "pickle-15M-memoised": (lambda p: pytorch_pickle(p, b"N\x94", 15_000_000), "weights",
                            ("pickle",)),
    "pickle-1M-empty-sets": (lambda p: pytorch_pickle(p, b"\x8f", 1_000_000), "weights",
                             ("pickle",)),
    "torrent-5M-list-items": (lambda p: torrent_items(p, 5_000_000), "torrent", ()),
    "torrent-deep-nesting": (lambda p: torrent_nested(p, 5_000_000), "torrent", ("nesting",)),
    "index-million-entries": (index_million, "index", ("index",)),
    "bundle-20M-values": (bundle_values, "bundle", ("JSON values",)),
}
SUFFIX = {"weights": ".bin", "torrent": ".torrent", "index": ".index.json", "bundle": ".json.gz"}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_file_refused_fast_in_bounded_memory(case, tmp_path):
    build, kind, words = CASES[case]
    path = build(tmp_path / f"hostile{SUFFIX[kind]}")
    result = open_in_child(kind, path)
    assert_refused(result, *words)


def test_a_real_sized_vocabulary_still_reads(tmp_path):
    """The limits leave room for real tokenizers: 262k tokens plus 500k merges (the largest
    published) read, so the GGUF limit is not merely "refuse big headers"."""
    from fingerprints.gguf import open_gguf
    from fingerprints.tensors import FileSource
    tokens = [f"t{i}".encode() for i in range(262_144)]
    merges = [f"t{i} t{i + 1}".encode() for i in range(500_000)]
    parts = [b"GGUF", struct.pack("<IQQ", 3, 0, 2)]
    for key, values in ((b"tokenizer.ggml.tokens", tokens), (b"tokenizer.ggml.merges", merges)):
        parts += [struct.pack("<Q", len(key)), key, struct.pack("<IIQ", 9, 8, len(values))]
        parts += [struct.pack("<Q", len(v)) + v for v in values]
    path = tmp_path / "vocab.gguf"
    path.write_bytes(b"".join(parts))
    with FileSource(path) as source:
        reader = open_gguf(source)
    assert len(reader.metadata["tokenizer.ggml.merges"]) == 500_000
    assert reader.metadata["tokenizer.ggml.tokens"][-1] == "t262143"
