"""GGUF reading against llama.cpp's own gguf-py: files it writes, blocks it dequantises.

Valid files are written with `gguf.GGUFWriter`; F16, BF16, Q8_0 and Q4_0 data come from
`gguf.quants.quantize`. gguf-py cannot quantise Q4_1, Q5_0, Q5_1 or the K types, so those
tensors are random blocks (with finite float16 scales) and our dequantisation must equal
`gguf.quants.dequantize` on the same bytes. Hostile files are assembled by hand, field by
field, so each one breaks exactly one rule.
"""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from fingerprints.dequant import GGML_TYPES, dequantize
from fingerprints.gguf import GgufFile, open_gguf
from fingerprints.tensors import BytesSource, FileSource, WeightFileError

RNG_SEED = 20240611

# byte offsets of the float16 scales inside one block, per type (the rest is random bits)
F16_FIELDS = {T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2), T.Q4_K: (0, 2), T.Q5_K: (0, 2),
              T.Q6_K: (208,)}


def random_blocks(rng: np.random.Generator, qtype: T, rows: int, columns: int) -> np.ndarray:
    """rows x (bytes of `columns` values) of random blocks with finite, modest f16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * columns // block, size), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:
        scale = rng.normal(0, 0.05, size=(blocks.shape[0], 1)).astype("<f2")
        blocks[:, at:at + 2] = scale.view(np.uint8)
    return blocks.reshape(rows, columns // block * size)


def write_gguf(path: Path, tensors: list[tuple[str, np.ndarray, T | None]],
               arch: str = "llama", **kv: object) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_head_count(8)
    writer.add_head_count_kv(2)
    for key, value in kv.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, int(value))
    for name, data, raw_dtype in tensors:
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A GGUF with every supported type; returns the file and each tensor's reference values."""
    rng = np.random.default_rng(RNG_SEED)
    base = rng.normal(0, 0.02, size=(48, 512)).astype(np.float32)
    tensors: list[tuple[str, np.ndarray, T | None]] = [
        ("f32.weight", base, None),
        ("f16.weight", base.astype(np.float16), None),
        ("bf16.weight", gguf.quants.quantize(base, T.BF16), T.BF16),
        ("q8_0.weight", gguf.quants.quantize(base, T.Q8_0), T.Q8_0),
        ("q4_0.weight", gguf.quants.quantize(base, T.Q4_0), T.Q4_0),
        ("norm.weight", rng.normal(1, 0.1, size=512).astype(np.float32), None),
        ("experts.weight", rng.normal(0, 1, size=(3, 4, 64)).astype(np.float32), None),
    ]
    for qtype in (T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K):
        tensors.append((f"{qtype.name.lower()}.weight", random_blocks(rng, qtype, 40, 512), qtype))
    path = write_gguf(tmp_path_factory.mktemp("gguf") / "model.gguf", tensors,
                      **{"general.name": "tiny", "tokenizer.ggml.tokens": ["<s>", "a", "b"],
                         "llama.rope.freq_base": 10000.0})
    reference = {}
    for name, data, qtype in tensors:
        reference[name] = (data.astype(np.float32) if qtype is None
                           else gguf.quants.dequantize(data, qtype))
    return path, reference


def test_header_agrees_with_gguf_py(model_file):
    path, reference = model_file
    ref = gguf.GGUFReader(path)
    with FileSource(path) as source:
        ours = open_gguf(source)
        assert ours.version == 3 and ours.alignment == 32
        assert ours.data_start == ref.data_offset
        assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
        for mine, theirs in zip(ours.tensors, ref.tensors):
            assert mine.shape == tuple(reversed([int(n) for n in theirs.shape]))
            assert mine.dtype == theirs.tensor_type.name
            assert mine.offset == theirs.data_offset  # gguf-py's is from the file start
            assert mine.nbytes == theirs.n_bytes
            assert mine.extra["ggml_type"] == int(theirs.tensor_type)


def test_metadata(model_file):
    path, _ = model_file
    with FileSource(path) as source:
        ours = open_gguf(source)
    assert ours.architecture == "llama"
    assert ours.head_counts == (8, 2)
    assert ours.metadata["general.name"] == "tiny"
    assert ours.metadata["tokenizer.ggml.tokens"] == ["<s>", "a", "b"]
    assert ours.metadata["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert ours.arch_value("attention.head_count") == 8


@pytest.mark.parametrize("name", ["f32.weight", "f16.weight", "bf16.weight", "q8_0.weight",
                                  "q4_0.weight", "q4_1.weight", "q5_0.weight", "q5_1.weight",
                                  "q4_k.weight", "q5_k.weight", "q6_k.weight",
                                  "experts.weight"])
def test_every_type_dequantises_as_gguf_py_does(model_file, name):
    path, reference = model_file
    with FileSource(path) as source:
        ours = open_gguf(source)
        tensor = ours.tensor(name)
        full = ours.read_tensor(tensor)
        assert full.dtype == np.float32 and full.shape == tensor.shape
        np.testing.assert_array_equal(full, reference[name].reshape(tensor.shape))
        rows = np.random.default_rng(7).choice(tensor.rows, size=min(9, tensor.rows),
                                               replace=False)
        rows = [*rows.tolist(), int(rows[0])]  # unsorted, with a repeat
        subset = ours.read_rows(tensor, rows)
        np.testing.assert_array_equal(subset, full.reshape(tensor.rows, -1)[rows])


def test_quantised_copies_stay_close_to_the_original(model_file):
    path, reference = model_file
    with FileSource(path) as source:
        ours = open_gguf(source)
        original = reference["f32.weight"]
        for name, cosine in (("q8_0.weight", 0.9999), ("q4_0.weight", 0.99)):
            rows = ours.read_tensor(ours.tensor(name))
            got = float(np.sum(rows * original) / np.linalg.norm(rows) / np.linalg.norm(original))
            assert got > cosine, (name, got)


def test_vector_rows_are_single_values(model_file):
    path, reference = model_file
    with FileSource(path) as source:
        ours = open_gguf(source)
        norm = ours.tensor("norm.weight")
        assert norm.shape == (512,) and norm.row_nbytes == 4
        np.testing.assert_array_equal(ours.read_rows(norm, [3, 1]),
                                      reference["norm.weight"][[3, 1]].reshape(2, 1))


def test_reads_only_the_rows_asked_for(tmp_path):
    rng = np.random.default_rng(1)
    big = rng.normal(0, 1, size=(1024, 4096)).astype(np.float32)
    q8 = gguf.quants.quantize(big, T.Q8_0)
    path = write_gguf(tmp_path / "big.gguf", [("big.weight", q8, T.Q8_0)])
    with FileSource(path) as source:
        ours = open_gguf(source)
        header_bytes = source.bytes_read
        tensor = ours.tensor("big.weight")
        rows = [5, 6, 7, 900]  # two runs: two reads
        got = ours.read_rows(tensor, rows)
        assert source.bytes_read - header_bytes == len(rows) * tensor.row_nbytes
        assert source.bytes_read < 0.03 * source.size, (source.bytes_read, source.size)
    np.testing.assert_array_equal(got, gguf.quants.dequantize(q8[rows], T.Q8_0))


def test_unsupported_type_is_listed_but_not_read(tmp_path):
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, size=(4, 2 * 84), dtype=np.uint8)  # two Q2_K blocks per row
    path = write_gguf(tmp_path / "q2k.gguf", [("q2k.weight", raw, T.Q2_K)])
    with FileSource(path) as source:
        ours = open_gguf(source)
        tensor = ours.tensor("q2k.weight")
        assert tensor.dtype == "Q2_K" and tensor.shape == (4, 512)
        with pytest.raises(WeightFileError, match="unsupported type Q2_K"):
            ours.read_rows(tensor, [0])


def test_kernels_equal_gguf_py_on_random_blocks():
    """Many blocks per type, straight through the kernel entry point."""
    rng = np.random.default_rng(3)
    for qtype in F16_FIELDS:
        blocks = random_blocks(rng, qtype, 64, 1024)
        ours = dequantize(blocks.tobytes(), GGML_TYPES[int(qtype)][0])
        np.testing.assert_array_equal(ours, gguf.quants.dequantize(blocks, qtype).reshape(-1))


# --- hostile files, built field by field ---------------------------------------------------

def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<II", 4, value)


def tensor_info(name: str, ne: list[int], ggml_type: int, offset: int) -> bytes:
    return (gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            + struct.pack("<IQ", ggml_type, offset))


def build(kvs: list[bytes] = (), infos: list[bytes] = (), data: bytes = b"", *,
          magic: bytes = b"GGUF", version: int = 3, n_tensors: int | None = None,
          n_kv: int | None = None, alignment: int = 32) -> bytes:
    head = (magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                len(kvs) if n_kv is None else n_kv)
            + b"".join(kvs) + b"".join(infos))
    return head + b"\0" * (-len(head) % alignment) + data


def valid_file() -> bytes:
    values = np.arange(64 * 4, dtype=np.float32).reshape(4, 64)
    return build([kv_u32("llama.block_count", 1), gstr("general.architecture")
                  + struct.pack("<I", 8) + gstr("llama")],
                 [tensor_info("a", [64, 4], 0, 0), tensor_info("b", [64, 4], 0, 1024)],
                 values.tobytes() + (values + 1).tobytes())


def hostile(data: bytes) -> str:
    """The one-line error for a hostile file, checking that parsing it allocates little."""
    tracemalloc.start()
    try:
        with pytest.raises(WeightFileError) as caught:
            open_gguf(BytesSource(data, "evil.gguf"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("evil.gguf: ")
    assert peak < 4 * 1024 * 1024 + 2 * len(data), peak
    return message


def test_hand_built_valid_file_reads():
    ours = open_gguf(BytesSource(valid_file()))
    assert ours.metadata == {"llama.block_count": 1, "general.architecture": "llama"}
    b = ours.tensor("b")
    np.testing.assert_array_equal(ours.read_rows(b, [3]),
                                  np.arange(192, 256, dtype=np.float32)[None] + 1)


@pytest.mark.parametrize("data, message", [
    (b"GGML" + valid_file()[4:], "not a GGUF file: magic"),
    (build(version=7), "GGUF version 7 is not supported"),
    (build(version=1), "GGUF version 1 is not supported"),
    (build(version=3 << 24), "big-endian"),
    (build(n_tensors=2**60), "2^60"),
    (build(n_tensors=1000), "more than the"),
    (build(n_kv=2**40), "key-value"),
    (build([struct.pack("<Q", 2**40) + b"key"]), "claims 1099511627776 bytes, past the end"),
    (build([gstr("k") + struct.pack("<I", 8) + struct.pack("<Q", 10**6) + b"abc"]),
     "past the end"),
    (build([gstr("k") + struct.pack("<IIQ", 9, 0, 2**40)]), "claims 1099511627776 elements"),
    (build([gstr("k") + struct.pack("<IIQ", 9, 8, 2**40)]), "claims 1099511627776 elements"),
    (build([gstr("k") + struct.pack("<IIQ", 9, 9, 3) + struct.pack("<IQ", 9, 2**50) * 3]),
     "claims 1125899906842624 elements"),
    (build([gstr("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 12
            + struct.pack("<IQ", 0, 0)]), "nested more than"),
    (build([gstr("k") + struct.pack("<I", 13) + b"\0" * 8]), "unknown value type 13"),
    (build([kv_u32("k", 1), kv_u32("k", 2)]), "duplicate key"),
    (build([kv_u32("general.alignment", 48)]), "not a power of two"),
    (build(infos=[tensor_info("t", [4] * 9, 0, 0)], data=b"\0" * 64), "9 dimensions"),
    (build(infos=[tensor_info("t", [64, 4], 0, 0)], data=b"\0" * 512), "past the end"),
    (build(infos=[tensor_info("t", [2**40, 2**20], 0, 0)], data=b"\0" * 64), "past the end"),
    (build(infos=[tensor_info("t", [2**62, 2**62, 2**62, 2**62], 0, 0)]), "past the end"),
    (build(infos=[tensor_info("t", [64], 0, 2**63)], data=b"\0" * 256), "past the end"),
    (build(infos=[tensor_info("t", [2**63], 0, 0)]), "negative"),
    (build(infos=[tensor_info("a", [64], 0, 0), tensor_info("b", [64], 0, 128)],
           data=b"\0" * 512), "overlap"),
    (build(infos=[tensor_info("a", [64], 0, 0), tensor_info("a", [64], 0, 256)],
           data=b"\0" * 512), "duplicate tensor"),
    (build(infos=[tensor_info("t", [64], 99, 0)], data=b"\0" * 512), "unknown ggml type 99"),
    (build(infos=[tensor_info("t", [48, 2], 8, 0)], data=b"\0" * 512),
     "not a multiple of the Q8_0 block size 32"),
    (build(infos=[tensor_info("t", [64], 0, 4)], data=b"\0" * 512), "not a multiple of the "
                                                                   "alignment"),
])
def test_hostile_files_fail_with_one_line(data, message):
    assert message.replace("2^60", str(2**60)) in hostile(data)


def test_tensor_name_must_be_utf8():
    data = build(infos=[gstr(b"\xff\xfe") + struct.pack("<IQIQ", 1, 64, 0, 0)], data=b"\0" * 256)
    assert "not UTF-8" in hostile(data)


def test_every_truncation_fails_cleanly(tmp_path):
    """A real file cut at every 64th byte: each prefix is refused, none crashes."""
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, size=(8, 256)).astype(np.float32)
    path = write_gguf(tmp_path / "cut.gguf", [("a.weight", x, None),
                                              ("b.weight", gguf.quants.quantize(x, T.Q4_0),
                                               T.Q4_0)],
                      **{"tokenizer.ggml.tokens": [f"tok{i}" for i in range(50)]})
    data = path.read_bytes()
    ours = open_gguf(BytesSource(data))
    assert ours.tensors[-1].offset + ours.tensors[-1].nbytes == len(data)
    for cut in range(0, len(data), 64):
        hostile(data[:cut])


def test_gguf_file_satisfies_weight_reader(model_file):
    path, _ = model_file
    with FileSource(path) as source:
        ours: GgufFile = open_gguf(source)
        assert ours.source is source
        assert all(t.row_nbytes * t.rows == t.nbytes for t in ours.tensors if len(t.shape) == 2)


def test_rows_of_a_quantised_vector_are_refused():
    """A 1-D Q8_0 tensor's row is one value, not a whole block: listed, not read."""
    ours = open_gguf(BytesSource(build(infos=[tensor_info("v", [64], 8, 0)], data=b"\0" * 96)))
    vector = ours.tensor("v")
    assert vector.nbytes == 68 and vector.rows == 64
    with pytest.raises(WeightFileError, match="not a whole number of Q8_0 blocks"):
        ours.read_rows(vector, [0])


def test_q8_0_quantiser_writes_what_gguf_py_writes() -> None:
    """The demo's GGUF conversions and the watermark's strength use our Q8_0 quantiser:
    byte for byte what llama.cpp's reference (as gguf-py ports it) writes."""
    from fingerprints.dequant import quantize_q8_0

    rng = np.random.default_rng(8)
    values = np.concatenate([rng.standard_normal(32 * 40).astype(np.float32) * 0.02,
                             np.zeros(32, np.float32), np.full(32, 0.5, np.float32)])
    values[5] = 3.0  # an outlier block
    assert quantize_q8_0(values) == gguf.quants.quantize(
        values.reshape(-1, 32), gguf.GGMLQuantizationType.Q8_0).tobytes()
