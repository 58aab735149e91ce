"""Decoding stored weights to float32: plain dtypes, bfloat16, float8, ggml's quantised blocks.

This is the one place values are decoded: every reader turns its format's type names into
the `PLAIN_DTYPES` names and calls `decode_plain` (or `dequantize` for ggml types).

Every kernel is vectorised numpy over whole blocks and follows ggml's reference layout
(ggml-quants.c, `dequantize_row_*`) byte for byte, so a GGUF row decodes to what llama.cpp
would compute. A kernel takes the raw bytes of a whole number of blocks and returns
float32 values, `block_size` per block. Scales come from the (hostile) file: an inf or NaN
scale gives inf or NaN values, never an exception or a warning.

Block layouts (little-endian; `d`, `m`, `dmin` are float16):

- Q8_0, 32 values, 34 bytes: d, int8 q[32]; x = d*q.
- Q4_0, 32 values, 18 bytes: d, qs[16]; x[j] = d*((qs[j] & 15) - 8), x[j+16] = d*((qs[j] >> 4) - 8).
- Q4_1, 32 values, 20 bytes: d, m, qs[16]; x = d*q + m with q as in Q4_0 without the -8.
- Q5_0, 32 values, 22 bytes: d, qh (u32), qs[16]; bit j of qh is the fifth bit of x[j];
  x = d*(q - 16).
- Q5_1, 32 values, 24 bytes: d, m, qh, qs[16]; x = d*q + m.
- Q4_K, 256 values, 144 bytes: d, dmin, scales[12] (eight 6-bit scales and mins), qs[128];
  each 64-value chunk c uses qs[32c:32c+32], low nibbles for sub-block 2c and high nibbles
  for 2c+1; x = d*sc*q - dmin*m.
- Q5_K, 256 values, 176 bytes: as Q4_K with qh[32] before qs; bit s of qh[l] is the fifth bit
  of value l of sub-block s.
- Q6_K, 256 values, 210 bytes: ql[128], qh[64], int8 scales[16], d; sixteen 16-value groups,
  x = d*scale[group]*(q - 32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

__all__ = ["Floats", "RawData",
           "GGML_TYPES", "ITEMSIZE", "KERNELS", "PLAIN_DTYPES", "QK_K", "bf16_to_f32", "quantize_q8_0",
           "affine_rows", "decode_plain", "dequantize", "f8_e4m3_to_f32", "f8_e5m2_to_f32", "ggml_type_name"]

# What every decoder returns and every reader's `read_rows` gives back.
Floats: TypeAlias = NDArray[np.float32]
# Stored bytes as a reader holds them: read from a source, or already viewed as an array.
RawData: TypeAlias = bytes | bytearray | memoryview | np.ndarray

QK_K = 256

# ggml type id -> (name, values per block, bytes per block), from ggml.h / gguf-py constants.
# Ids 4, 5 (Q4_2, Q4_3) and 31-33, 36-38 (repacked variants) were removed from the format.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", QK_K, 84),
    11: ("Q3_K", QK_K, 110),
    12: ("Q4_K", QK_K, 144),
    13: ("Q5_K", QK_K, 176),
    14: ("Q6_K", QK_K, 210),
    15: ("Q8_K", QK_K, 292),
    16: ("IQ2_XXS", QK_K, 66),
    17: ("IQ2_XS", QK_K, 74),
    18: ("IQ3_XXS", QK_K, 98),
    19: ("IQ1_S", QK_K, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", QK_K, 110),
    22: ("IQ2_S", QK_K, 82),
    23: ("IQ4_XS", QK_K, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", QK_K, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", QK_K, 54),
    35: ("TQ2_0", QK_K, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}


def ggml_type_name(type_id: int) -> str:
    entry = GGML_TYPES.get(type_id)
    return entry[0] if entry else f"type {type_id}"


# --- plain formats: one value per element ----------------------------------------------

# Every plain dtype a reader meets, by the safetensors names all readers use: name ->
# (bytes per value, numpy type of the stored bits, without byte order). bfloat16 and the
# float8s have no numpy type; their bits are decoded below.
PLAIN_DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "f8"), "F32": (4, "f4"), "F16": (2, "f2"), "BF16": (2, "u2"),
    "I64": (8, "i8"), "I32": (4, "i4"), "I16": (2, "i2"), "I8": (1, "i1"),
    "U64": (8, "u8"), "U32": (4, "u4"), "U16": (2, "u2"), "U8": (1, "u1"),
    "BOOL": (1, "u1"), "F8_E4M3": (1, "u1"), "F8_E5M2": (1, "u1"),
}
ITEMSIZE: dict[str, int] = {name: size for name, (size, _) in PLAIN_DTYPES.items()}


def _bits(raw: RawData, dtype: str) -> np.ndarray:
    """Raw bytes, or an array reinterpreted, as a flat array of `dtype`."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return np.frombuffer(raw, dtype=dtype)
    return np.asarray(raw).view(dtype)


def bf16_to_f32(raw: RawData, big_endian: bool = False) -> Floats:
    """bfloat16 (u16, little-endian unless told) to float32: the 16 bits become the top half."""
    return (_bits(raw, ">u2" if big_endian else "<u2").astype(np.uint32) << 16).view(np.float32)


def _f8_table(exp_bits: int, man_bits: int, bias: int, ieee_specials: bool) -> Floats:
    """All 256 values of an 8-bit float, sign | exponent | mantissa."""
    table = np.empty(256, dtype=np.float32)
    max_exp = (1 << exp_bits) - 1
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exp = (byte >> man_bits) & max_exp
        man = byte & ((1 << man_bits) - 1)
        if ieee_specials and exp == max_exp:
            value = float("inf") if man == 0 else float("nan")
        elif not ieee_specials and exp == max_exp and man == (1 << man_bits) - 1:
            value = float("nan")  # e4m3fn: no infinities, S.1111.111 is NaN
        elif exp == 0:
            value = man / (1 << man_bits) * 2.0 ** (1 - bias)
        else:
            value = (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)
        table[byte] = sign * value
    return table


_F8_E4M3 = _f8_table(4, 3, 7, ieee_specials=False)   # float8_e4m3fn, max 448
_F8_E5M2 = _f8_table(5, 2, 15, ieee_specials=True)   # the top byte of a float16


def f8_e4m3_to_f32(raw: RawData) -> Floats:
    return np.take(_F8_E4M3, _bits(raw, "u1"))


def f8_e5m2_to_f32(raw: RawData) -> Floats:
    return np.take(_F8_E5M2, _bits(raw, "u1"))


def decode_plain(raw: RawData, dtype: str, big_endian: bool = False) -> Floats:
    """Values of a plain dtype (a `PLAIN_DTYPES` name) widened to a flat float32 array.

    The one decoder of unquantised data, for every reader: little-endian unless
    `big_endian` (numpy and PyTorch files may be big-endian; float8 has no byte order).
    ValueError for a dtype that is not plain.
    """
    if dtype == "BF16":
        return bf16_to_f32(raw, big_endian)
    if dtype == "F8_E4M3":
        return f8_e4m3_to_f32(raw)
    if dtype == "F8_E5M2":
        return f8_e5m2_to_f32(raw)
    if dtype not in PLAIN_DTYPES:
        raise ValueError(f"cannot decode dtype {dtype}")
    order = ">" if big_endian else "<"
    return _bits(raw, order + PLAIN_DTYPES[dtype][1]).astype(np.float32)


# --- ggml block kernels: (n_blocks, type_size) uint8 -> (n_blocks, block_size) float32 ---

def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of every block, as an (n, 1) float32 column."""
    return blocks[:, start:start + 2].view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) packed bytes -> (n, 32): the low nibbles, then the high nibbles."""
    # Written into one array: two temporaries and a concatenation were a tenth of the
    # time of a Q4_0 tensor fingerprint.
    out = np.empty((qs.shape[0], 2 * qs.shape[1]), dtype=np.uint8)
    np.bitwise_and(qs, 0x0F, out=out[:, :qs.shape[1]])
    np.right_shift(qs, 4, out=out[:, qs.shape[1]:])
    return out


# Kernels compute in float32 in the order ggml does (scale * value, then the offset), in
# place where they can: fresh temporaries cost page faults, which dominate at these speeds.

def _scaled(q: np.ndarray, d: np.ndarray, offset: np.ndarray | None = None,
            minus: np.ndarray | None = None) -> np.ndarray:
    out = q.astype(np.float32)
    out *= d
    if offset is not None:
        out += offset
    if minus is not None:
        out -= minus
    return out


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    values: Floats = np.multiply(blocks[:, 2:].view(np.int8), _f16(blocks, 0), dtype=np.float32)
    return values


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    q = _nibbles(blocks[:, 2:]).view(np.int8)
    q -= np.int8(8)
    return _scaled(q, _f16(blocks, 0))


def _q4_1(blocks: np.ndarray) -> np.ndarray:
    return _scaled(_nibbles(blocks[:, 4:]), _f16(blocks, 0), offset=_f16(blocks, 2))


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """(n, 4) bytes of a little-endian u32 -> (n, 32) bits, bit j for value j, shifted to 16."""
    return np.unpackbits(qh, axis=1, bitorder="little") << np.uint8(4)


def _q5_0(blocks: np.ndarray) -> np.ndarray:
    q = _nibbles(blocks[:, 6:])
    q |= _fifth_bits(blocks[:, 2:6])
    q = q.view(np.int8)
    q -= np.int8(16)
    return _scaled(q, _f16(blocks, 0))


def _q5_1(blocks: np.ndarray) -> np.ndarray:
    q = _nibbles(blocks[:, 8:])
    q |= _fifth_bits(blocks[:, 4:8])
    return _scaled(q, _f16(blocks, 0), offset=_f16(blocks, 2))


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4 for all eight sub-blocks: (n, 12) -> two (n, 8) arrays.

    Bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; bytes 8-11 hold the
    low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high nibble), whose top 2 bits are the
    top bits of bytes 0-3 (scales) and 4-7 (mins).
    """
    lo, hi, mix = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([lo & 0x3F, (mix & 0x0F) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([hi & 0x3F, (mix >> 4) | ((hi >> 6) << 4)], axis=1)
    return sc, mn


def _k_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 128) -> (n, 8, 32): chunk c's 32 bytes give sub-block 2c (low) and 2c+1 (high)."""
    n = qs.shape[0]
    chunks = qs.reshape(n, 4, 1, 32)
    return np.concatenate([chunks & 0x0F, chunks >> 4], axis=2).reshape(n, 8, 32)


def _k_scale_min(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: per sub-block d*scale and dmin*min, as (n, 8, 1) float32."""
    n = blocks.shape[0]
    sc, mn = _k_scales(blocks[:, 4:16])
    d = np.multiply(_f16(blocks, 0), sc, dtype=np.float32).reshape(n, 8, 1)
    dm = np.multiply(_f16(blocks, 2), mn, dtype=np.float32).reshape(n, 8, 1)
    return d, dm


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    d, dm = _k_scale_min(blocks)
    return _scaled(_k_nibbles(blocks[:, 16:144]), d, minus=dm).reshape(-1, QK_K)


_SUB_BLOCK_BITS = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)


def _q5_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d, dm = _k_scale_min(blocks)
    q = _k_nibbles(blocks[:, 48:176])
    high = blocks[:, 16:48].reshape(n, 1, 32) >> _SUB_BLOCK_BITS
    high &= 1
    high <<= 4
    q |= high
    return _scaled(q, d, minus=dm).reshape(n, QK_K)


_Q6_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    # Each 128-value half h uses ql[64h:64h+64] and qh[32h:32h+32]; its four 32-value runs
    # take the low nibbles of ql[0:32], ql[32:64], then the high nibbles of the same, and
    # bits (0,1), (2,3), (4,5), (6,7) of qh[l] as the top two bits.
    n = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(n, 2, 2, 32)
    q = np.concatenate([ql & 0x0F, ql >> 4], axis=2)                     # (n, 2, 4, 32)
    high = blocks[:, 128:192].reshape(n, 2, 1, 32) >> _Q6_SHIFTS         # (n, 2, 4, 32)
    high &= 3
    high <<= 4
    q |= high
    q = q.view(np.int8)
    q -= np.int8(32)
    d = np.multiply(_f16(blocks, 208), blocks[:, 192:208].view(np.int8), dtype=np.float32)
    return _scaled(q.reshape(n, 16, 16), d.reshape(n, 16, 1)).reshape(n, QK_K)


KERNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0,
    "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}

# The ggml types that are plain dtypes, decoded by decode_plain.
_GGML_PLAIN = frozenset({"F32", "F16", "F64", "I8", "I16", "I32", "I64", "BF16"})

_SIZES = {name: (block, size) for name, block, size in GGML_TYPES.values()}
SUPPORTED = frozenset(KERNELS) | _GGML_PLAIN


def dequantize(raw: RawData, type_name: str) -> Floats:
    """Decode a whole number of blocks of a ggml type to a flat float32 array.

    Raises ValueError for a type without a kernel or a length that is not whole blocks.
    """
    if type_name not in SUPPORTED:
        raise ValueError(f"unsupported type {type_name}")
    data = raw.view(np.uint8).reshape(-1) if isinstance(raw, np.ndarray) \
        else np.frombuffer(raw, dtype=np.uint8)
    if type_name in _GGML_PLAIN:
        if data.size % ITEMSIZE[type_name]:
            raise ValueError(f"{type_name} data is not a whole number of values")
        return decode_plain(data, type_name)
    block, size = _SIZES[type_name]
    if data.size % size:
        raise ValueError(f"{type_name} data is not a whole number of {size}-byte blocks")
    with np.errstate(all="ignore"):
        return KERNELS[type_name](data.reshape(-1, size)).reshape(-1)


def quantize_q8_0(values: np.ndarray) -> bytes:
    """Q8_0 blocks of `values` (a multiple of 32 of them) as ggml-quants.c writes them:
    per block d = max|x| / 127 as f16, then round(x / d) as int8. The inverse of the Q8_0
    kernel above; the demo's conversions and the watermark's strength use it."""
    blocks = np.asarray(values, dtype=np.float32).reshape(-1, 32)
    # As quantize_row_q8_0_ref: q from the unrounded scale, rounded half away from zero;
    # only the stored scale is f16.
    d = np.abs(blocks).max(axis=1) / np.float32(127)
    inverse = np.where(d == 0, np.float32(0), np.float32(1) / np.where(d == 0, 1, d))
    scaled = blocks * inverse[:, None]
    q = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))
    out = np.empty(len(blocks), dtype=[("d", "<f2"), ("q", "i1", 32)])
    out["d"], out["q"] = d.astype(np.float16), q.astype(np.int8)
    return out.tobytes()


def affine_rows(values: np.ndarray, index: np.ndarray, shape: tuple[int, ...],
                scale: np.ndarray, scale_shape: tuple[int, ...],
                zero: np.ndarray, zero_shape: tuple[int, ...]) -> Floats:
    """(q - zero) * scale for rows `index` of an integer tensor of `shape`, the rows given
    flattened as (len(index), columns): the affine dequantisation of ONNX and TFLite alike.
    `scale` and `zero` broadcast against the tensor in `scale_shape` / `zero_shape` (all 1s
    per tensor; the channel count on one axis per channel), so one rule serves a
    per-tensor, a per-row or a per-column scale on any axis."""
    if not shape:  # a quantised scalar
        scalar: Floats = ((values.reshape(-1) - zero.reshape(-1)[0]) * scale.reshape(-1)[0]
                          ).astype(np.float32).reshape(len(index), 1)
        return scalar
    blocks = values.reshape(len(index), *shape[1:])

    def rows_of(v: np.ndarray, v_shape: tuple[int, ...]) -> np.ndarray:
        full = np.asarray(v).reshape(v_shape)
        return full[index] if full.ndim and full.shape[0] != 1 else full

    out = (blocks - rows_of(zero, zero_shape)) * rows_of(scale, scale_shape)
    rows: Floats = out.reshape(len(index), -1).astype(np.float32)
    return rows
