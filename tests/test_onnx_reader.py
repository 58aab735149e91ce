"""ONNX initializers read with our own protobuf decoder; the models are encoded by hand here
(the onnx package is not a dependency), field by field as onnx.proto numbers them."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from support import (
    BFLOAT16,
    DOUBLE,
    FLOAT,
    FLOAT16,
    INT8,
    INT64,
    STRING,
    UINT8,
    attribute_int,
    f_bytes,
    f_varint,
    model,
    node,
    tag,
    tensor,
    varint,
)

from fingerprints.archives import sniff
from fingerprints.onnx import OnnxReader, decode_varints, open_onnx
from fingerprints.tensors import BytesSource, WeightFileError


# -- tests ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {"w": rng.standard_normal((6, 8)).astype(np.float32),
            "h": rng.standard_normal((4, 5)).astype(np.float16),
            "b": (rng.standard_normal((3, 4)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16),
            "d": rng.standard_normal((2, 3)),
            "i64": rng.integers(-10**12, 10**12, size=(3, 2)),
            "i8": rng.integers(-128, 128, size=(4, 4)).astype(np.int8)}


def test_raw_and_typed_initializers_read_by_row(weights):
    w, h, b, d, i64, i8 = (weights[k] for k in ("w", "h", "b", "d", "i64", "i8"))
    blob = model([
        tensor("encoder.w", (6, 8), FLOAT, raw=w.tobytes()),
        tensor("encoder.h", (4, 5), FLOAT16, raw=h.tobytes()),
        tensor("encoder.b", (3, 4), BFLOAT16, raw=b.tobytes()),
        tensor("typed.floats", (6, 8), FLOAT, floats=w.reshape(-1).tolist()),
        tensor("typed.doubles", (2, 3), DOUBLE, doubles=d.reshape(-1).tolist()),
        tensor("typed.fp16_in_int32_data", (4, 5), FLOAT16,
               int32s=h.view(np.uint16).reshape(-1).tolist()),
        tensor("typed.int64", (3, 2), INT64, int64s=i64.reshape(-1).tolist()),
        tensor("typed.int8_in_int32_data", (4, 4), INT8, int32s=i8.reshape(-1).astype(int).tolist()),
        tensor("unpacked.floats", (6, 8), FLOAT, floats=w.reshape(-1).tolist(), packed=False),
        tensor("unpacked.int8", (4, 4), INT8, int32s=i8.reshape(-1).astype(int).tolist(), packed=False),
        tensor("scalar", (), FLOAT, raw=struct.pack("<f", 2.5)),
    ])
    assert sniff(BytesSource(blob)) == "onnx"
    source = BytesSource(blob, "model.onnx")
    reader = open_onnx(source)
    assert reader.ir_version == 8
    info = {t.name: t for t in reader.tensors}
    assert list(info)[:3] == ["encoder.w", "encoder.h", "encoder.b"]
    enc = info["encoder.w"]
    assert (enc.shape, enc.dtype, enc.nbytes, enc.row_nbytes) == ((6, 8), "F32", 192, 32)
    assert blob[enc.offset:enc.offset + enc.nbytes] == w.tobytes()  # raw_data located, by range
    np.testing.assert_array_equal(reader.read_rows(enc, [5, 0]), w[[5, 0]])
    np.testing.assert_array_equal(reader.read_rows(info["encoder.h"], [3]), h[[3]].astype(np.float32))
    np.testing.assert_array_equal(reader.read_rows(info["encoder.b"], [1, 2]),
                                  (b[[1, 2]].astype(np.uint32) << 16).view(np.float32))
    # packed float_data is fixed width, so it is read by range as well
    assert info["typed.floats"].row_nbytes == 32
    np.testing.assert_array_equal(reader.read_rows(info["typed.floats"], [2]), w[[2]])
    np.testing.assert_array_equal(reader.read_tensor(info["typed.doubles"]), d.astype(np.float32))
    np.testing.assert_array_equal(reader.read_rows(info["typed.fp16_in_int32_data"], [0, 3]),
                                  h[[0, 3]].astype(np.float32))
    assert info["typed.fp16_in_int32_data"].row_nbytes == 0  # varints: decoded whole
    np.testing.assert_array_equal(reader.read_tensor(info["typed.int64"]), i64.astype(np.float32))
    np.testing.assert_array_equal(reader.read_tensor(info["typed.int8_in_int32_data"]),
                                  i8.astype(np.float32))
    np.testing.assert_array_equal(reader.read_tensor(info["unpacked.floats"]), w)
    np.testing.assert_array_equal(reader.read_tensor(info["unpacked.int8"]), i8.astype(np.float32))
    assert reader.read_tensor(info["scalar"]) == np.float32(2.5)


def test_int8_quantised_weights_are_dequantised(weights):
    rng = np.random.default_rng(3)
    q = rng.integers(-128, 128, size=(4, 6)).astype(np.int8)
    uq = rng.integers(0, 256, size=(3, 5)).astype(np.uint8)
    col_scale = rng.uniform(0.01, 0.1, size=5).astype(np.float32)
    col_zero = rng.integers(100, 150, size=5).astype(np.uint8)
    row_scale = rng.uniform(0.01, 0.1, size=3).astype(np.float32)
    row_zero = rng.integers(100, 150, size=3).astype(np.uint8)
    blob = model(
        [
            # quantize_dynamic style: names only, per tensor; scale and zero point written as
            # onnx.helper.make_tensor writes them (typed fields, the int8 sign-extended)
            tensor("fc1.weight_quantized", (4, 6), INT8, raw=q.tobytes()),
            tensor("fc1.weight_scale", (), FLOAT, floats=[0.02]),
            tensor("fc1.weight_zero_point", (), INT8, int32s=[-3]),
            # QDQ style: a DequantizeLinear node gives the axis of per-channel scales
            tensor("fc2.weight_quantized", (3, 5), UINT8, raw=uq.tobytes()),
            tensor("fc2.weight_scale", (5,), FLOAT, raw=col_scale.tobytes()),
            tensor("fc2.weight_zero_point", (5,), UINT8, raw=col_zero.tobytes()),
            tensor("fc3.q", (3, 5), UINT8, raw=uq.tobytes()),
            tensor("fc3.s", (3,), FLOAT, raw=row_scale.tobytes()),
            tensor("fc3.z", (3,), UINT8, raw=row_zero.tobytes()),
            tensor("bias", (6,), FLOAT, raw=np.arange(6, dtype=np.float32).tobytes()),
        ],
        nodes=[
            node("DequantizeLinear", ["fc2.weight_quantized", "fc2.weight_scale", "fc2.weight_zero_point"],
                 ["fc2.weight_dq"], [attribute_int("axis", 1)]),
            node("DequantizeLinear", ["fc3.q", "fc3.s", "fc3.z"], ["fc3.dq"], [attribute_int("axis", 0)]),
            node("MatMul", ["x", "fc2.weight_dq"], ["y"]),
        ])
    reader = OnnxReader(BytesSource(blob, "model.quant.onnx"))
    names = [t.name for t in reader.tensors]
    assert sorted(names) == ["bias", "fc1.weight", "fc2.weight", "fc3.q"]
    fc1 = reader.tensor("fc1.weight")
    assert fc1.dtype == "I8" and fc1.extra["quantized"] and fc1.extra["axis"] is None
    np.testing.assert_allclose(reader.read_rows(fc1, [0, 3]),
                               (q[[0, 3]].astype(np.float32) + 3) * np.float32(0.02), rtol=1e-6)
    fc2 = reader.tensor("fc2.weight")
    assert fc2.extra["axis"] == 1 and fc2.dtype == "U8"
    expected = (uq.astype(np.float32) - col_zero.astype(np.float32)) * col_scale
    np.testing.assert_allclose(reader.read_rows(fc2, [2, 0]), expected[[2, 0]], rtol=1e-6)
    fc3 = reader.tensor("fc3.q")
    assert fc3.extra["axis"] == 0
    expected = (uq.astype(np.float32) - row_zero.astype(np.float32)[:, None]) * row_scale[:, None]
    np.testing.assert_allclose(reader.read_tensor(fc3), expected, rtol=1e-6)


def test_constant_nodes_external_data_and_other_types_are_handled_or_noted(weights):
    w = weights["w"]
    constant = node("Constant", [], ["const_w"],
                    [f_bytes(1, "value") + f_bytes(5, tensor("", (6, 8), FLOAT, raw=w.tobytes()))
                     + f_varint(20, 4)])
    blob = model([tensor("big.weight", (4096, 4096), FLOAT, external="model.onnx.data"),
                  tensor("vocab", (2,), STRING),
                  tensor("empty", (0, 4), FLOAT)],
                 nodes=[constant])
    reader = OnnxReader(BytesSource(blob))
    assert [t.name for t in reader.tensors] == ["empty", "const_w"]
    np.testing.assert_array_equal(reader.read_rows(reader.tensor("const_w"), [1]), w[[1]])
    assert reader.read_rows(reader.tensor("empty"), []).shape == (0, 4)
    notes = dict(reader.skipped)
    assert "model.onnx.data" in notes["big.weight"] and "outside the model" in notes["big.weight"]
    assert notes["vocab"] == "STRING tensors are not read"


def test_listing_a_large_model_reads_only_headers():
    big = np.zeros((256, 1024), dtype=np.float32).tobytes()  # 1 MiB each
    blob = model([tensor(f"layers.{i}.weight", (256, 1024), FLOAT, raw=big) for i in range(8)])
    source = BytesSource(blob)
    reader = OnnxReader(source)
    assert len(reader.tensors) == 8
    assert source.bytes_read < 64 * 1024, source.bytes_read  # of 8 MiB
    reader.read_rows(reader.tensors[5], [7, 200])
    assert source.bytes_read < 64 * 1024 + 2 * 4096


@pytest.mark.parametrize("blob, message", [
    (f_varint(1, 8) + f_bytes(2, "x"), "no graph"),
    (f_varint(1, 8) + tag(7, 2) + varint(1000) + b"\x00" * 10, "runs past its message"),
    (f_varint(1, 8) + f_bytes(7, f_bytes(5, tensor("w", (2, 2), FLOAT, raw=b"\0" * 12))),
     "raw_data has 12 bytes, shape \\(2, 2\\) of F32 needs 16"),
    (f_varint(1, 8) + f_bytes(7, f_bytes(5, tensor("w", (2**40, 2**40), FLOAT, raw=b""))),
     "implausibly large"),
    (f_varint(1, 8) + f_bytes(7, f_bytes(5, tensor("w", (-1, 2), FLOAT, raw=b""))),
     "negative dimension"),
    (f_varint(1, 8) + f_bytes(7, f_bytes(5, tensor("w", (2,), FLOAT, floats=[1.0])))
     , "float_data has 1 values"),
    (f_varint(1, 8) + f_bytes(7, f_bytes(5, f_varint(2, 1) + tag(9, 3))), "unsupported wire type 3"),
    (f_varint(1, 8) + f_bytes(7, f_bytes(5, b"\x08" + b"\xff" * 12)), "overlong varint"),
    (f_varint(1, 8) + f_bytes(7, f_bytes(5, tensor("w", (1,), FLOAT, raw=b"\0" * 4)) * 2),
     "two initializers named 'w'"),
])
def test_malformed_models_fail_with_one_clear_line(blob, message):
    with pytest.raises(WeightFileError, match=message) as caught:
        OnnxReader(BytesSource(blob, "bad.onnx"))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("bad.onnx: ")


def test_varint_decoding_matches_protobuf():
    values = [0, 1, 127, 128, 300, 2**31 - 1, 2**63, 2**64 - 1, (-5) & (2**64 - 1)]
    decoded = decode_varints(b"".join(varint(v) for v in values))
    assert decoded.tolist() == values
    with pytest.raises(ValueError):
        decode_varints(b"\x80\x80")


def test_mutated_models_fail_cleanly_or_read(weights):
    """Random corruption of a valid model: a WeightFileError or a result, never a crash."""
    w = weights["w"]
    blob = model([tensor("a", (6, 8), FLOAT, raw=w.tobytes()),
                  tensor("b", (4, 5), FLOAT16, int32s=list(range(20))),
                  tensor("q_quantized", (6, 8), INT8, raw=bytes(48)),
                  tensor("q_scale", (8,), FLOAT, raw=bytes(32)),
                  tensor("q_zero_point", (8,), INT8, raw=bytes(8))],
                 [node("DequantizeLinear", ["q_quantized", "q_scale", "q_zero_point"], ["o"],
                       [attribute_int("axis", 1)])])
    rng = np.random.default_rng(0)
    for _ in range(300):
        data = bytearray(blob)
        for _ in range(int(rng.integers(1, 5))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        try:
            reader = OnnxReader(BytesSource(bytes(data)))
            for t in reader.tensors:
                reader.read_rows(t, [0, t.rows - 1] if t.rows else [])
        except WeightFileError as exc:
            assert "\n" not in str(exc)
