"""The weights lab (tests/weights_lab.py) itself: its files load in the reference readers
(the safetensors package, gguf-py's GGUFReader) and in ours, and each transform does what
it claims. Fingerprint tests lean on both, so a wrong lab would make them prove nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import weights_lab as lab

from fingerprints.gguf import open_gguf
from fingerprints.safetensors import open_safetensors, open_sharded
from fingerprints.tensors import FileSource

ROOT = Path(__file__).resolve().parent.parent

# The names llama.cpp's convert_hf_to_gguf gives MiniLM's tensors (pooler and position_ids
# dropped), written out by hand rather than derived, to check the lab's mapping.
MINILM_GGUF_LAYER = {
    "attention.output.LayerNorm.bias": "attn_output_norm.bias",
    "attention.output.LayerNorm.weight": "attn_output_norm.weight",
    "attention.output.dense.bias": "attn_output.bias",
    "attention.output.dense.weight": "attn_output.weight",
    "attention.self.key.bias": "attn_k.bias",
    "attention.self.key.weight": "attn_k.weight",
    "attention.self.query.bias": "attn_q.bias",
    "attention.self.query.weight": "attn_q.weight",
    "attention.self.value.bias": "attn_v.bias",
    "attention.self.value.weight": "attn_v.weight",
    "intermediate.dense.bias": "ffn_up.bias",
    "intermediate.dense.weight": "ffn_up.weight",
    "output.LayerNorm.bias": "layer_output_norm.bias",
    "output.LayerNorm.weight": "layer_output_norm.weight",
    "output.dense.bias": "ffn_down.bias",
    "output.dense.weight": "ffn_down.weight",
}
MINILM_GGUF_TOP = {
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.word_embeddings.weight": "token_embd.weight",
}


def expected_minilm_gguf_names() -> dict[str, str]:
    names = dict(MINILM_GGUF_TOP)
    for i in range(lab.MINILM_LAYERS):
        names.update({f"encoder.layer.{i}.{hf}": f"blk.{i}.{g}"
                      for hf, g in MINILM_GGUF_LAYER.items()})
    return names


def minilm_gguf_tensors(minilm: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MiniLM under its llama.cpp names, without the tensors the converter drops."""
    names = expected_minilm_gguf_names()
    return lab.rename(minilm, lambda n: names.get(n))


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def minilm() -> dict[str, np.ndarray]:
    return lab.minilm_tensors()


@pytest.fixture(scope="module")
def layer0(minilm: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One real layer and an embedding: real structure, without the 12M-value vocabulary."""
    return {n: a for n, a in minilm.items()
            if n.startswith(("encoder.layer.0.", "embeddings.position_embeddings"))}


@pytest.fixture(scope="module")
def small() -> dict[str, np.ndarray]:
    """A small LLaMA with grouped-query attention (4 heads sharing 2 key-value heads)."""
    return lab.generate_model(2, 256, 352, 512, seed=3, n_head_kv=2)


@pytest.fixture(scope="module")
def minilm_q4(minilm: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab.write_gguf(tmp_path_factory.mktemp("lab") / "minilm-q4_0.gguf", minilm, "Q4_0")


@pytest.fixture(scope="module")
def minilm_q4_seen(minilm: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What any reader must see in `minilm_q4`, computed in memory by gguf-py."""
    return lab.gguf_roundtrip(minilm_gguf_tensors(minilm), "Q4_0")


# --- the real model ------------------------------------------------------------------------

def test_minilm_is_the_real_model_shared_read_only(minilm: dict[str, np.ndarray]) -> None:
    assert lab.minilm_path().is_file()
    assert len(minilm) == 103 and "embeddings.position_ids" not in minilm
    assert minilm["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert all(a.dtype == np.float32 and not a.flags.writeable for a in minilm.values())
    again = lab.minilm_tensors()
    again.pop("pooler.dense.weight")
    assert "pooler.dense.weight" in lab.minilm_tensors()


# --- safetensors ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, numpy_dtype", [("F32", np.float32), ("F16", np.float16)])
def test_safetensors_loads_in_reference_reader(tmp_path: Path, small: dict[str, np.ndarray],
                                               dtype: str, numpy_dtype: type) -> None:
    path = lab.write_safetensors(tmp_path / "m.safetensors", small, dtype)
    loaded = safetensors.numpy.load_file(str(path))
    assert list(loaded) == list(small)
    for name, array in small.items():
        assert loaded[name].dtype == numpy_dtype
        np.testing.assert_array_equal(loaded[name], array.astype(numpy_dtype))


def test_safetensors_bf16_loads_in_reference_reader(tmp_path: Path,
                                                    layer0: dict[str, np.ndarray]) -> None:
    # numpy cannot hold bf16, so the reference reader is asked for the raw bytes instead
    part = layer0
    path = lab.write_safetensors(tmp_path / "m.safetensors", part, "BF16")
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == set(part)
        assert f.metadata() == {"format": "pt"}
    seen = lab.to_dtype_roundtrip(part, "BF16")
    for name, entry in safetensors.deserialize(path.read_bytes()):
        assert entry["dtype"].upper() == "BF16" and tuple(entry["shape"]) == part[name].shape
        bits = np.frombuffer(entry["data"], dtype="<u2")
        np.testing.assert_array_equal(bits, lab.bf16_bits(part[name]).ravel())
        widened = (bits.astype(np.uint32) << 16).view(np.float32).reshape(part[name].shape)
        np.testing.assert_array_equal(widened, seen[name])
        assert np.all(np.abs(widened - part[name]) <= np.abs(part[name]) * 2.0 ** -8)


def test_bf16_rounds_to_nearest_even() -> None:
    one = 1.0
    cases = {
        one + 2 ** -8: one,                           # halfway, 1.0 is even
        one + 3 * 2 ** -8: one + 2 ** -6,             # halfway, rounds up to the even one
        one + 2 ** -8 + 2 ** -20: one + 2 ** -7,      # past halfway
        -(one + 2 ** -8 + 2 ** -20): -(one + 2 ** -7),
        np.float32(3.4028235e38): np.inf,             # overflows as rounding says it must
    }
    got = lab.to_dtype_roundtrip({"x": np.array(list(cases), np.float32)}, "BF16")["x"]
    np.testing.assert_array_equal(got, np.array(list(cases.values()), np.float32))
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 1e-40], np.float32)
    rng = np.random.default_rng(5)
    values = np.concatenate([special, rng.standard_normal(10_000).astype(np.float32) * 0.02])
    # gguf-py's bf16 conversion is a second, independent implementation
    reference = gguf.quants.quantize(values, gguf.GGMLQuantizationType.BF16).view("<u2")
    np.testing.assert_array_equal(lab.bf16_bits(values), reference)
    assert np.isnan(lab.to_dtype_roundtrip({"x": special}, "BF16")["x"][:2]).all()


def test_sharded_checkpoint(tmp_path: Path, small: dict[str, np.ndarray]) -> None:
    index = lab.write_sharded(tmp_path / "ckpt", small, 3, "BF16")
    assert index.name == "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    assert list(weight_map) == list(small)
    shards = [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert sorted(set(weight_map.values())) == shards
    held: list[str] = []
    for shard in shards:
        with safetensors.safe_open(str(tmp_path / "ckpt" / shard), framework="numpy") as f:
            assert set(f.keys()) == {n for n, s in weight_map.items() if s == shard}
            held += list(f.keys())
    assert sorted(held) == sorted(small)

    seen = lab.to_dtype_roundtrip(small, "BF16")
    reader = open_sharded(index)
    try:
        assert {t.name for t in reader.tensors} == set(small)
        for tensor in reader.tensors:
            assert tensor.dtype == "BF16"
            np.testing.assert_array_equal(reader.read_tensor(tensor), seen[tensor.name])
    finally:
        reader.close()


@pytest.mark.parametrize("dtype", lab.SAFETENSORS_DTYPES)
def test_our_safetensors_reader_reads_lab_files(tmp_path: Path, small: dict[str, np.ndarray],
                                                dtype: str) -> None:
    path = lab.write_safetensors(tmp_path / "m.safetensors", small, dtype)
    seen = lab.to_dtype_roundtrip(small, dtype)
    with FileSource(path) as source:
        reader = open_safetensors(source)
        assert [t.name for t in reader.tensors] == list(small)
        for tensor in reader.tensors:
            assert tensor.dtype == dtype and tensor.shape == small[tensor.name].shape
            np.testing.assert_array_equal(reader.read_tensor(tensor), seen[tensor.name])


# --- GGUF ----------------------------------------------------------------------------------

def test_minilm_gguf_names_types_and_heads(minilm: dict[str, np.ndarray], minilm_q4: Path) -> None:
    expected = expected_minilm_gguf_names()
    assert {k: v for k, v in lab.gguf_names(minilm, "bert").items() if v is not None} == expected
    reader = gguf.GGUFReader(minilm_q4)
    assert reader.fields["general.architecture"].contents() == "bert"
    assert reader.fields["bert.attention.head_count"].contents() == 12
    assert reader.fields["bert.block_count"].contents() == 6
    by_name = {t.name: t for t in reader.tensors}
    assert set(by_name) == set(expected.values())
    for hf, name in expected.items():
        tensor = by_name[name]
        assert tuple(reversed(tensor.shape.tolist())) == minilm[hf].shape  # ne: columns first
        f32 = minilm[hf].ndim == 1 or name in ("position_embd.weight", "token_types.weight")
        assert tensor.tensor_type == (gguf.GGMLQuantizationType.F32 if f32
                                      else gguf.GGMLQuantizationType.Q4_0), name


def test_minilm_gguf_values_in_reference_reader(minilm: dict[str, np.ndarray], minilm_q4: Path,
                                                minilm_q4_seen: dict[str, np.ndarray]) -> None:
    names = expected_minilm_gguf_names()
    seen = minilm_q4_seen
    reader = gguf.GGUFReader(minilm_q4)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        values = values.reshape(seen[tensor.name].shape)
        np.testing.assert_array_equal(values, seen[tensor.name])
    original = {g: minilm[hf] for hf, g in names.items()}
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.5.ffn_down.weight"):
        assert 0 < rel_rms(seen[name], original[name]) < 0.2
    assert np.array_equal(seen["blk.0.attn_q.bias"], original["blk.0.attn_q.bias"])


def test_our_gguf_reader_reads_minilm(minilm_q4: Path,
                                      minilm_q4_seen: dict[str, np.ndarray]) -> None:
    seen = minilm_q4_seen
    with FileSource(minilm_q4) as source:
        reader = open_gguf(source)
        assert reader.architecture == "bert" and reader.head_counts == (12, 12)
        assert {t.name for t in reader.tensors} == set(seen)
        for tensor in reader.tensors:
            assert tensor.shape == seen[tensor.name].shape
            np.testing.assert_array_equal(reader.read_tensor(tensor), seen[tensor.name])


@pytest.mark.parametrize("qtype, max_error", [("F32", 0), ("F16", 1e-3), ("BF16", 5e-3),
                                              ("Q8_0", 0.02), ("Q4_0", 0.2)])
def test_llama_gguf_all_types(tmp_path: Path, small: dict[str, np.ndarray], qtype: str,
                              max_error: float) -> None:
    converted = lab.as_llama_cpp(small)
    path = lab.write_gguf(tmp_path / "m.gguf", converted, qtype, arch="llama")
    seen = lab.gguf_roundtrip(converted, qtype)
    reference = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert list(reference) == list(converted)
    assert "blk.1.ffn_gate.weight" in reference and "output.weight" in reference
    with FileSource(path) as source:
        ours = open_gguf(source)
        assert ours.head_counts == (4, 2)
        for tensor in ours.tensors:
            ref = reference[tensor.name]
            values = gguf.quants.dequantize(ref.data, ref.tensor_type).reshape(tensor.shape)
            np.testing.assert_array_equal(values, seen[tensor.name])
            np.testing.assert_array_equal(ours.read_tensor(tensor), seen[tensor.name])
            error = rel_rms(seen[tensor.name], converted[tensor.name])
            assert error <= max_error, tensor.name
            if converted[tensor.name].ndim == 2 and qtype in ("Q8_0", "Q4_0"):
                assert error > 0 and tensor.dtype == qtype


def test_gguf_keeps_obfuscated_names(tmp_path: Path, minilm: dict[str, np.ndarray]) -> None:
    part = lab.obfuscate({n: minilm[n] for n in list(minilm)[:16]}, seed=1)
    path = lab.write_gguf(tmp_path / "m.gguf", part, "Q8_0")
    assert [t.name for t in gguf.GGUFReader(path).tensors] == list(part)


# --- renames -------------------------------------------------------------------------------

def test_rename_and_obfuscate(small: dict[str, np.ndarray]) -> None:
    renamed = lab.rename(small, lambda n: None if n.endswith("norm.weight") else n.upper())
    assert list(renamed) == [n.upper() for n in small if not n.endswith("norm.weight")]
    assert all(np.array_equal(renamed[n.upper()], small[n]) for n in small if n.upper() in renamed)
    assert list(lab.rename(small, {"lm_head.weight": "output.weight"}))[-1] == "output.weight"
    with pytest.raises(ValueError):
        lab.rename(small, lambda n: "same")

    hidden = lab.obfuscate(small, seed=7)
    assert list(hidden) == [f"t{k}" for k in range(len(small))]
    mapping = lab.obfuscated_names(small, seed=7)
    assert all(np.array_equal(hidden[mapping[n]], small[n]) for n in small)
    assert [mapping[n] for n in small] != list(hidden)  # file order says nothing either
    assert lab.obfuscated_names(small, seed=8) != mapping


# --- Q/K permutation -----------------------------------------------------------------------

def test_qk_permute_inverts(minilm: dict[str, np.ndarray], small: dict[str, np.ndarray]) -> None:
    for tensors, heads, kv in ((minilm, 12, None), (small, 4, 2),
                               (lab.rename(small, lab.gguf_names(small, "llama")), 4, 2)):
        permuted = lab.qk_permute(tensors, heads, kv)
        back = lab.qk_unpermute(permuted, heads, kv)
        assert all(np.array_equal(back[n], tensors[n]) for n in tensors)
        changed = {n for n in tensors if not np.array_equal(permuted[n], tensors[n])}
        assert changed == {n for n in tensors
                            if re.search(r"(query|key|q_proj|k_proj|attn_q|attn_k)\.", n)}
    bias = "encoder.layer.0.attention.self.query.bias"
    assert not np.array_equal(lab.qk_permute(minilm, 12)[bias], minilm[bias])
    with pytest.raises(ValueError):
        lab.qk_permute({"t0": np.zeros((8, 8), np.float32)}, 2)


def test_qk_permute_interleaves_each_heads_halves(small: dict[str, np.ndarray]) -> None:
    # llama.cpp stores rotary pairs interleaved; HF keeps them as a head's two halves:
    # row h*d + 2i + j of the GGUF is row h*d + j*d/2 + i of the HF weight.
    permuted = lab.qk_permute(small, 4, 2)
    for name, heads in (("model.layers.0.self_attn.q_proj.weight", 4),
                        ("model.layers.0.self_attn.k_proj.weight", 2)):
        w = small[name]
        d = w.shape[0] // heads
        source = [h * d + j * (d // 2) + i for h in range(heads) for i in range(d // 2)
                  for j in range(2)]
        np.testing.assert_array_equal(permuted[name], w[source])


# --- row permutations ----------------------------------------------------------------------

def test_permute_rows(minilm: dict[str, np.ndarray]) -> None:
    names = ["encoder.layer.0.attention.self.value.weight", "encoder.layer.3.output.dense.bias"]
    out = lab.permute_rows(minilm, names, seed=2)
    def row_set(a: np.ndarray) -> np.ndarray:
        return np.sort(a) if a.ndim == 1 else a[np.lexsort(a.T[::-1])]

    for name in names:
        assert not np.array_equal(out[name], minilm[name])
        np.testing.assert_array_equal(row_set(out[name]), row_set(minilm[name]))
    assert all(np.array_equal(out[n], minilm[n]) for n in minilm if n not in names)
    assert np.array_equal(lab.permute_rows(minilm, names, 2)[names[0]], out[names[0]])
    assert not np.array_equal(lab.permute_rows(minilm, names, 3)[names[0]], out[names[0]])
    with pytest.raises(KeyError):
        lab.permute_rows(minilm, "no.such.weight", 1)


def test_permute_ffn_units_keeps_bert_function(minilm: dict[str, np.ndarray]) -> None:
    out = lab.permute_ffn_units(minilm, seed=4)
    x = np.random.default_rng(0).standard_normal((16, 384)).astype(np.float32)

    def mlp(t: dict[str, np.ndarray], i: int) -> np.ndarray:
        p = f"encoder.layer.{i}."
        h = gelu(x @ t[p + "intermediate.dense.weight"].T + t[p + "intermediate.dense.bias"])
        return h @ t[p + "output.dense.weight"].T + t[p + "output.dense.bias"]

    for i in range(lab.MINILM_LAYERS):
        p = f"encoder.layer.{i}."
        assert not np.array_equal(out[p + "intermediate.dense.weight"],
                                  minilm[p + "intermediate.dense.weight"])
        assert np.array_equal(out[p + "attention.output.dense.weight"],
                              minilm[p + "attention.output.dense.weight"])
        np.testing.assert_allclose(mlp(out, i), mlp(minilm, i), rtol=1e-4, atol=1e-5)


def test_permute_ffn_units_keeps_llama_function(small: dict[str, np.ndarray]) -> None:
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    for tensors, up, gate, down in (
            (small, "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.gate_proj.weight",
             "model.layers.1.mlp.down_proj.weight"),
            (lab.as_llama_cpp(small), "blk.1.ffn_up.weight", "blk.1.ffn_gate.weight",
             "blk.1.ffn_down.weight")):
        out = lab.permute_ffn_units(tensors, seed=5)

        def mlp(t: dict[str, np.ndarray]) -> np.ndarray:
            return (silu(x @ t[gate].T) * (x @ t[up].T)) @ t[down].T

        assert not np.array_equal(out[up], tensors[up])
        np.testing.assert_allclose(mlp(out), mlp(tensors), rtol=1e-4, atol=1e-6)


# --- perturbations and negatives -----------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.01, 0.05])
def test_add_noise_has_the_asked_std(layer0: dict[str, np.ndarray], fraction: float) -> None:
    out = lab.add_noise(layer0, fraction, seed=9)
    for name, array in layer0.items():
        if array.ndim == 1:
            assert np.array_equal(out[name], array)
        elif array.size >= 100_000:
            ratio = float((out[name] - array).std() / array.std())
            assert ratio == pytest.approx(fraction, rel=0.03), name
            assert corr(out[name], array) > 0.99


@pytest.mark.slow
def test_low_rank_update_has_the_asked_rank_and_norm(layer0: dict[str, np.ndarray]) -> None:
    names = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight",
             "encoder.layer.0.attention.self.key.bias"]
    out = lab.low_rank_update(layer0, rank=4, scale=0.05, seed=1, only=names)
    for name in names[:2]:
        delta = out[name].astype(np.float64) - layer0[name]
        singular = np.linalg.svd(delta, compute_uv=False)
        # float32 storage leaves a floor of rounding noise far below the update's 4 directions
        assert int((singular > 1e-3 * singular[0]).sum()) == 4
        assert np.linalg.norm(delta) / np.linalg.norm(layer0[name]) == pytest.approx(0.05,
                                                                                      rel=1e-3)
    assert all(np.array_equal(out[n], layer0[n]) for n in layer0 if n not in names[:2])
    everything = lab.low_rank_update(layer0, rank=2, scale=0.05, seed=1)
    assert all(np.array_equal(everything[n], a) == (a.ndim == 1) for n, a in layer0.items())


def test_independent_and_shuffled_models_are_unrelated(layer0: dict[str, np.ndarray]) -> None:
    independent = lab.independent_model(layer0, seed=1)
    shuffled = lab.shuffled_values_model(layer0, seed=1)
    for name, array in layer0.items():
        assert independent[name].shape == shuffled[name].shape == array.shape
        np.testing.assert_array_equal(np.sort(shuffled[name], axis=None),
                                      np.sort(array, axis=None))
        if array.size >= 100_000:
            assert abs(corr(independent[name], array)) < 0.02, name
            assert abs(corr(shuffled[name], array)) < 0.02, name
            assert float(independent[name].std()) == pytest.approx(float(array.std()), rel=0.02)
    assert list(independent) == list(shuffled) == list(layer0)


def test_to_dtype_roundtrip(minilm: dict[str, np.ndarray]) -> None:
    name = "encoder.layer.0.attention.self.query.weight"
    part = {name: minilm[name]}
    assert np.array_equal(lab.to_dtype_roundtrip(part, "F32")[name], minilm[name])
    f16 = lab.to_dtype_roundtrip(part, "F16")[name]
    np.testing.assert_array_equal(f16, minilm[name].astype(np.float16).astype(np.float32))
    bf16 = lab.to_dtype_roundtrip(part, "BF16")[name]
    assert 0 < rel_rms(f16, minilm[name]) < rel_rms(bf16, minilm[name]) < 2.0 ** -8


def test_transforms_are_pure_and_seeded(small: dict[str, np.ndarray]) -> None:
    writable = {n: a.copy() for n, a in small.items()}
    before = {n: a.copy() for n, a in writable.items()}
    seeded = {
        "permute_rows": lambda s: lab.permute_rows(writable, "model.embed_tokens.weight", s),
        "permute_ffn_units": lambda s: lab.permute_ffn_units(writable, s),
        "add_noise": lambda s: lab.add_noise(writable, 0.01, s),
        "low_rank_update": lambda s: lab.low_rank_update(writable, 2, 0.05, s),
        "independent_model": lambda s: lab.independent_model(writable, s),
        "shuffled_values_model": lambda s: lab.shuffled_values_model(writable, s),
    }
    for what, transform in seeded.items():
        first, again, other = transform(1), transform(1), transform(2)
        assert all(np.array_equal(first[n], again[n]) for n in first), what
        assert any(not np.array_equal(first[n], other[n]) for n in first), what
        assert all(a.dtype == np.float32 for a in first.values()), what
        assert all(first[n] is not writable[n] for n in first), what
    for out in (lab.qk_permute(writable, 4, 2), lab.to_dtype_roundtrip(writable, "BF16"),
                lab.gguf_roundtrip(writable, "Q4_0"), lab.obfuscate(writable, 1)):
        assert all(a is not writable[n] for n, a in out.items() if n in writable)
    assert all(np.array_equal(writable[n], before[n]) for n in before)
    # a tensor's result depends on its name and the seed, not on the rest of the dict
    one = "model.layers.1.mlp.up_proj.weight"
    assert np.array_equal(lab.add_noise({one: small[one]}, 0.01, 1)[one],
                          lab.add_noise(small, 0.01, 1)[one])


# --- generated models ----------------------------------------------------------------------

def test_generated_model_is_llama_shaped(small: dict[str, np.ndarray]) -> None:
    assert list(small)[:2] == ["model.embed_tokens.weight",
                               "model.layers.0.self_attn.q_proj.weight"]
    assert small["model.layers.1.self_attn.k_proj.weight"].shape == (128, 256)  # 2 of 4 heads
    assert small["model.layers.1.mlp.down_proj.weight"].shape == (256, 352)
    assert small["lm_head.weight"].shape == (512, 256)
    assert len(small) == 3 + 2 * 9
    norm = small["model.layers.0.input_layernorm.weight"]
    assert abs(float(norm.mean()) - 1) < 0.02
    w = small["model.layers.0.mlp.gate_proj.weight"]
    column_std = w.std(axis=0)
    assert float(np.median(column_std)) == pytest.approx(0.02, rel=0.05)
    outliers = column_std > 2 * np.median(column_std)
    assert 1 <= outliers.sum() <= 0.02 * w.shape[1]
    kurtosis = ((w[:, outliers] - w[:, outliers].mean(0)) ** 4).mean(0) / w[:, outliers].var(0) ** 2
    assert np.all(kurtosis > 4)  # heavy tails, not just wider
    assert not np.array_equal(lab.generate_model(2, 256, 352, 512, seed=4, n_head_kv=2)[
        "lm_head.weight"], small["lm_head.weight"])


def test_streamed_files_hold_the_in_memory_model(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # small chunks, so every matrix is streamed in several pieces
    monkeypatch.setattr(lab, "CHUNK_VALUES", 5000)
    config = lab.llama_config(2, 128, 352, 384, n_head_kv=1)
    model = lab.generate_model(2, 128, 352, 384, seed=6, n_head_kv=1)
    streamed = lab.stream_safetensors(tmp_path / "s.safetensors", config, 6, "BF16")
    whole = lab.write_safetensors(tmp_path / "w.safetensors", model, "BF16")
    assert streamed.read_bytes() == whole.read_bytes()

    streamed = lab.stream_gguf(tmp_path / "s.gguf", config, 6, "Q4_0")
    seen = lab.gguf_roundtrip(lab.as_llama_cpp(model), "Q4_0")
    with FileSource(streamed) as source:
        reader = open_gguf(source)
        assert reader.head_counts == (2, 1) and reader.arch_value("block_count") == 2
        assert [t.name for t in reader.tensors] == list(seen)
        for tensor in reader.tensors:
            np.testing.assert_array_equal(reader.read_tensor(tensor), seen[tensor.name])


def test_config_for_size_lands_near_the_target() -> None:
    for per_value in (2, 18 / 32):
        config = lab.config_for_size(1e9, per_value)
        assert config.n_values * per_value == pytest.approx(1e9, rel=0.15)
    tiny = lab.config_for_size(1e6, 2)
    assert tiny.n_layers == 1 and tiny.hidden == 256


def test_make_weights_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("make_weights",
                                                  ROOT / "benchmarks" / "make_weights.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "m.gguf"
    assert module.main(["--size-gb", "0.004", "--format", "gguf-q4_0", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with FileSource(out) as source:
        reader = open_gguf(source)
        assert reader.tensor("blk.0.attn_q.weight").dtype == "Q4_0"
        assert math.isfinite(float(reader.read_rows(reader.tensor("output.weight"), [0]).sum()))
