"""Fuzzing the parsers that read what hostile hosts serve: bencode, every weight reader, the
feed parser and the sources' JSON parsers.

Inputs are real valid files (written by the reference writers: safetensors, gguf-py, numpy,
and this suite's torch.save and ONNX look-alikes) mutated by byte flips, overwritten
lengths, insertions, deletions and truncations, and plain random bytes. The only allowed
outcomes are a result or the module's documented error (WeightFileError, TorrentError,
SourceError) with a one-line message; any other exception fails the test with the input
that caused it, and pytest-timeout catches a hang.

CI runs a short, derandomised profile (reproducible: the same examples every run). For a
long run, with fresh random examples each time:

    WEIGHTWATCH_FUZZ=long .venv/bin/python -m pytest -q tests/test_fuzz.py -p no:cacheprovider \
        -o timeout=0

(WEIGHTWATCH_FUZZ_EXAMPLES sets the examples per test in the long profile, default 20000.)
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as save_safetensors
from support import bf16_bits, checkpoint, metainfo, model, node, v1_info, v2_tree
from support import tensor as onnx_tensor

from fingerprints.gguf import open_gguf
from fingerprints.numpy_files import open_npy, open_npz
from fingerprints.onnx import open_onnx
from fingerprints.pytorch import open_pytorch
from fingerprints.safetensors import open_safetensors, open_sharded
from fingerprints.tensors import BytesSource, WeightFileError
from fingerprints.torrent import TorrentError, parse_torrent
from fingerprints.weights import open_weights
from monitor.sources import discourse, hackernews, hub, imageboard, lemmy, paste, reddit
from monitor.sources.base import SourceError, parse_json
from monitor.sources.feed import parse_feed

# Property-based fuzzing: thousands of generated inputs per reader.
pytestmark = [pytest.mark.slow]

settings.register_profile(
    "weightwatch-ci", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "weightwatch-long", max_examples=int(os.environ.get("WEIGHTWATCH_FUZZ_EXAMPLES", 20000)),
    deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Applied per test rather than loaded globally, so no other test's settings change.
FUZZ = settings.get_profile(
    "weightwatch-long" if os.environ.get("WEIGHTWATCH_FUZZ") == "long" else "weightwatch-ci")


def outcome(call: Callable[[], Any], *allowed: type[BaseException]) -> Any:
    """`call()`'s result, or None if it raised one of `allowed` with a one-line message;
    any other exception propagates and fails the test."""
    try:
        return call()
    except allowed as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None


# -- mutations ------------------------------------------------------------------------------------
_INTERESTING = [0, 1, 7, 8, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32,
                1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with one to four mutations: the shapes of a corrupt or crafted file."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "byte", "length", "insert", "delete", "truncate"]))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "length":  # a count or length field overwritten with an edge value
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(_INTERESTING + [len(data), len(data) - pos]))
            data[pos:pos + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


def fuzz_input(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Mostly mutated seeds; some random bytes behind each seed's first bytes (its magic)."""
    prefixed = st.tuples(st.sampled_from([s[:8] for s in seeds]), st.binary(max_size=512))
    return st.one_of(mutated(seeds), mutated(seeds), mutated(seeds),
                     prefixed.map(lambda p: p[0] + p[1]), st.binary(max_size=512))


# -- seeds: real valid files ----------------------------------------------------------------------
RNG = np.random.default_rng(13)
MATRIX = RNG.standard_normal((4, 8)).astype(np.float32)


@functools.cache
def safetensors_seeds() -> list[bytes]:
    return [save_safetensors({"w": MATRIX, "b": MATRIX[0].astype(np.float16),
                              "e": np.zeros((0, 3), np.float32)}, metadata={"format": "np"}),
            save_safetensors({"x": np.arange(6, dtype=np.int64).reshape(2, 3)})]


@functools.cache
def gguf_seeds() -> list[bytes]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.gguf"
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_head_count(2)
        writer.add_string("general.name", "tiny")
        writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])
        writer.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0])
        writer.add_float32("llama.rope.freq_base", 10000.0)
        writer.add_tensor("w", np.tile(MATRIX, (1, 4)))
        writer.add_tensor("q", gguf.quants.quantize(np.tile(MATRIX, (1, 4)),
                                                     gguf.GGMLQuantizationType.Q8_0),
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return [path.read_bytes()]


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@functools.cache
def npy_seeds() -> list[bytes]:
    return [npy(MATRIX), npy(MATRIX.astype(">f8")), npy(np.arange(5, dtype=np.int16))]


@functools.cache
def npz_seeds() -> list[bytes]:
    out = []
    for save in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        save(buf, w=MATRIX, b=MATRIX[0])
        out.append(buf.getvalue())
    return out


@functools.cache
def onnx_seeds() -> list[bytes]:
    q = np.array([[1, -2, 3, 4]], dtype=np.int8)
    return [
        model([onnx_tensor("w", MATRIX.shape, 1, raw=MATRIX.tobytes()),
               onnx_tensor("f", (2, 2), 1, floats=[1.0, 2.0, 3.0, 4.0], packed=False),
               onnx_tensor("i", (3,), 7, int64s=[1, 2, 3])]),
        model([onnx_tensor("W_quantized", q.shape, 3, raw=q.tobytes()),
               onnx_tensor("W_scale", (), 1, floats=[0.5]),
               onnx_tensor("W_zero_point", (), 3, int32s=[0])],
              [node("DequantizeLinear", ["W_quantized", "W_scale", "W_zero_point"], ["W"])]),
    ]


@functools.cache
def pytorch_seeds() -> list[bytes]:
    arrays = {"f32": np.tile(MATRIX[:, :6], (1, 1)), "f16": MATRIX[:3, :5].astype(np.float16),
              "bf16": bf16_bits(np.tile(MATRIX, (2, 2)).astype(np.float64)),
              "bias": MATRIX[0, :6].copy()}
    return [checkpoint(arrays)[0]]


@functools.cache
def torrent_seeds() -> list[bytes]:
    files = {"model/a.bin": b"x" * 40000, "model/b.txt": b"hello"}
    v2 = {b"name": b"pack", b"piece length": 16384, b"meta version": 2,
          b"file tree": v2_tree(files)}
    return [metainfo(v1_info(files), comment=b"release"), metainfo(v2),
            metainfo({**v1_info(files, piece_length=16384), **v2})]


def read_some_rows(reader: Any) -> None:
    """A few rows of the first tensors: the readers' row paths are public too."""
    for tensor in reader.tensors[:3]:
        if tensor.rows:
            reader.read_rows(tensor, [0, tensor.rows - 1])


def open_and_read(opener: Callable[[BytesSource], Any], data: bytes, name: str) -> None:
    def run() -> None:
        read_some_rows(opener(BytesSource(data, name)))
    outcome(run, WeightFileError)


# -- weight readers -------------------------------------------------------------------------------
@FUZZ
@given(data=fuzz_input(safetensors_seeds()))
def test_fuzz_safetensors(data):
    open_and_read(open_safetensors, data, "fuzz.safetensors")


@FUZZ
@given(weight_map=st.dictionaries(st.text(max_size=8), st.one_of(
    st.sampled_from(["a.safetensors", "b.safetensors", "../x", "/abs", "C:x", ""]),
    st.integers(), st.none()), max_size=6), extra=st.sampled_from([b"", b"x", b"{}", b"[]"]))
def test_fuzz_sharded_index(weight_map, extra):
    shard = safetensors_seeds()[0]
    index = json.dumps({"metadata": {}, "weight_map": weight_map}).encode() + extra

    def opener(name: str) -> BytesSource:
        return BytesSource(shard, name)
    outcome(lambda: read_some_rows(open_sharded(index, opener)), WeightFileError)


@FUZZ
@given(data=fuzz_input(gguf_seeds()))
def test_fuzz_gguf(data):
    open_and_read(open_gguf, data, "fuzz.gguf")


@FUZZ
@given(data=fuzz_input(npy_seeds()))
def test_fuzz_npy(data):
    open_and_read(open_npy, data, "fuzz.npy")


@FUZZ
@given(data=fuzz_input(npz_seeds()))
def test_fuzz_npz(data):
    open_and_read(open_npz, data, "fuzz.npz")


@FUZZ
@given(data=fuzz_input(onnx_seeds()))
def test_fuzz_onnx(data):
    open_and_read(open_onnx, data, "fuzz.onnx")


@FUZZ
@given(data=fuzz_input(pytorch_seeds()))
def test_fuzz_pytorch_zip(data):
    open_and_read(open_pytorch, data, "fuzz.pt")


@functools.cache
def archive_seeds() -> list[bytes]:
    """Release archives: a tar, a gzipped tar and a zip of weight files."""
    import tarfile
    import zipfile
    members = {"release/model.safetensors": safetensors_seeds()[0],
               "release/emb.npy": npy_seeds()[0]}
    out = []
    for mode in ("w", "w:gz"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            for name, blob in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        out.append(buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    out.append(buf.getvalue())
    return out


@FUZZ
@given(data=fuzz_input(safetensors_seeds() + gguf_seeds() + npz_seeds() + onnx_seeds()
                       + pytorch_seeds() + npy_seeds() + archive_seeds()))
def test_fuzz_any_weight_file_by_content(data):
    """The dispatcher sniffs the format from the bytes, whatever the mutation made them."""
    open_and_read(open_weights, data, "fuzz.bin")


def test_fuzz_seeds_are_valid():
    """The seeds read cleanly, so the mutations start from real files."""
    for opener, seeds in ((open_safetensors, safetensors_seeds()), (open_gguf, gguf_seeds()),
                          (open_npy, npy_seeds()), (open_npz, npz_seeds()),
                          (open_onnx, onnx_seeds()), (open_pytorch, pytorch_seeds())):
        for seed in seeds:
            reader = opener(BytesSource(seed, "seed"))
            assert reader.tensors
            read_some_rows(reader)
    for seed in archive_seeds():
        assert len(open_weights(BytesSource(seed, "seed")).tensors) == 4
    for seed in torrent_seeds():
        assert parse_torrent(seed).files


# -- bencode ------------------------------------------------------------------------------------
@FUZZ
@given(data=fuzz_input(torrent_seeds()))
def test_fuzz_torrent(data):
    outcome(lambda: parse_torrent(data), TorrentError)


bencode_values = st.recursive(
    st.one_of(st.integers(-(1 << 70), 1 << 70), st.binary(max_size=24)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.binary(max_size=12), inner, max_size=5)),
    max_leaves=30)


@FUZZ
@given(info=bencode_values, top=st.dictionaries(st.binary(max_size=12), bencode_values,
                                               max_size=3))
def test_fuzz_torrent_structure(info, top):
    """Well-formed bencode of the wrong shape: info a number, files a dict, lengths strings..."""
    import fastbencode
    data = fastbencode.bencode({**top, b"info": info})
    outcome(lambda: parse_torrent(data), TorrentError)


# -- feeds ---------------------------------------------------------------------------------------
FEED_SEEDS = [
    b'<?xml version="1.0"?><rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/'
    b'content/"><channel><title>t</title><link>http://127.0.0.1/</link><item><title>leak'
    b'</title><link>/p/1</link><guid>1</guid><pubDate>Mon, 01 Jan 2024 00:00:00 GMT</pubDate>'
    b'<content:encoded><![CDATA[<p>magnet:?xt=urn:btih:'
    + b"a" * 40 + b'</p>]]></content:encoded><enclosure url="/x.torrent" length="12" '
    b'type="application/x-bittorrent"/></item></channel></rss>',
    b'<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://127.0.0.1/"><title>t</title>'
    b'<entry><id>e1</id><title type="html">&lt;b&gt;x&lt;/b&gt;</title><link rel="alternate" '
    b'href="/e/1"/><updated>2024-01-01T00:00:00Z</updated><author><name>a</name></author>'
    b'<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">hi</div></content>'
    b'</entry></feed>',
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    b'xmlns="http://purl.org/rss/1.0/"><channel><title>t</title></channel><item '
    b'rdf:about="http://127.0.0.1/1"><title>x</title><link>http://127.0.0.1/1</link>'
    b'<description>d</description></item></rdf:RDF>',
]


@FUZZ
@given(body=fuzz_input(FEED_SEEDS))
def test_fuzz_feed(body):
    outcome(lambda: parse_feed(body, "http://127.0.0.1/feed"), SourceError)


# -- the sources' JSON parsers -------------------------------------------------------------------
def _vocabulary(*modules: Any) -> list[str]:
    """The quoted words in the parsers' source: the keys their JSON answers carry, so the
    generated objects reach past the first isinstance check."""
    words: set[str] = set()
    for module in modules:
        words.update(re.findall(r'"([A-Za-z_]{1,30})"', Path(module.__file__).read_text()))
    return sorted(words)


JSON_PARSERS: dict[str, Callable[[bytes], Any]] = {
    "parse_json": lambda body: parse_json(body, "http://127.0.0.1/"),
    "imageboard.parse_threads": lambda body: imageboard.parse_threads(body, "http://127.0.0.1/"),
    "hub.parse_search": lambda body: hub.parse_search(body, "http://127.0.0.1/"),
    "hub.parse_model_info": lambda body: hub.parse_model_info(body, "http://127.0.0.1/", "o/m"),
    "hub.parse_tree": lambda body: hub.parse_tree(body, "http://127.0.0.1/"),
    "hub.parse_lfs_pointer": hub.parse_lfs_pointer,
    "paste.parse_listing": lambda body: paste.parse_listing(body, "http://127.0.0.1/"),
    "lemmy.parse_post_list": lambda body: lemmy.parse_post_list(body, "http://127.0.0.1/"),
    "reddit.parse_listing": lambda body: reddit.parse_listing(body, "http://127.0.0.1/"),
    "hackernews.parse_search": lambda body: hackernews.parse_search(body, "http://127.0.0.1/"),
    "discourse.parse_latest": lambda body: discourse.parse_latest(body, "http://127.0.0.1/"),
    "discourse.parse_topic": lambda body: discourse.parse_topic(body, "http://127.0.0.1/"),
    "discourse.parse_posts": lambda body: discourse.parse_posts(body, "http://127.0.0.1/"),
}
KEYS = _vocabulary(imageboard, hub, paste, lemmy, reddit, hackernews, discourse)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=20), st.sampled_from(KEYS))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)),
                                            inner, max_size=6)),
    max_leaves=40)
json_bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()),
                        json_values.map(lambda v: json.dumps(v).encode()).flatmap(
                            lambda b: mutated([b or b"{}"])),
                        st.binary(max_size=200))


@pytest.mark.parametrize("name", list(JSON_PARSERS))
def test_fuzz_source_json_parsers(name):
    parser = JSON_PARSERS[name]

    @FUZZ
    @given(body=json_bodies)
    def run(body):
        outcome(lambda: parser(body), SourceError)
    run()


def test_fuzz_profile_is_reproducible_in_ci():
    """CI's profile draws the same examples every run, so a red CI run can be reproduced."""
    if os.environ.get("WEIGHTWATCH_FUZZ") == "long":
        pytest.skip("the long profile draws fresh examples")
    assert FUZZ.derandomize and FUZZ.deadline is None
