"""GGUF files (llama.cpp, versions 2 and 3), read without gguf-py, torch or a memory map.

Layout (little-endian): magic `GGUF`, u32 version, u64 tensor_count, u64 kv_count; the
key-value pairs (string key, u32 value type, value); the tensor infos (string name, u32
n_dims, u64 ne[n_dims] fastest-varying first, u32 ggml type, u64 offset); padding to
`general.alignment` (default 32); the tensor data, each offset counted from there. Strings
are a u64 length and that many UTF-8 bytes; arrays are a u32 element type, a u64 count and
the elements.

The header is parsed through a small buffer that grows as it goes, so a local file or a
remote one read by ranges costs the header's size plus the rows asked for. A suspect file
is hostile: every count is checked against the bytes left in the file before anything is
allocated (a file cannot hold 2^60 tensor infos or an array of 2^40 strings), nesting and
the total number of array elements are bounded, and every tensor's byte range must lie in
the file and overlap no other. Rows are read one run of consecutive rows at a time and
dequantised by `fingerprints.dequant`; the numpy shape is ne reversed, so a row (first numpy
axis) is whole blocks whenever ne[0] is a multiple of the block size, which the format
requires.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from fingerprints.dequant import GGML_TYPES, SUPPORTED, Floats, dequantize
from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.tensors import (
    ByteSource,
    Rows,
    TensorInfo,
    TensorLookup,
    WeightFileError,
    quote,
    read_row_runs,
)

__all__ = ["GgufFile", "MAX_ARRAY_ELEMENTS", "MAX_DIMS", "MAX_STRINGS", "open_gguf"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4                 # GGML_MAX_DIMS
MAX_TENSORS = MAX_TENSORS_PER_FILE
# Real files carry a few dozen keys (general.*, the architecture's, the tokenizer's).
MAX_KV = 1 << 16
# Elements of all the header's arrays together. The largest real tokenizers have ~262k
# tokens (with as many scores and token types) and ~500k merges: ~1.3 M elements. 2^21
# admits them and bounds what a hostile header can make us build to ~70 MB and ~2 s.
MAX_ARRAY_ELEMENTS = 1 << 21
# Strings among those elements (tokens and merges: ~760k at most in real files); a
# string costs ~60 bytes as a Python object even when it is empty in the file.
MAX_STRINGS = 1 << 20
# Bytes of all strings in the header: `tokenizer.huggingface.json` embeds a whole
# tokenizer.json (up to ~20 MB), tokens and merges add ~12 MB.
MAX_STRING_BYTES = 64 << 20
MAX_NESTING = 8

# value type -> (name, struct format or None, minimum encoded size in bytes)
_VALUE_TYPES: dict[int, tuple[str, str | None, int]] = {
    0: ("u8", "<B", 1), 1: ("i8", "<b", 1), 2: ("u16", "<H", 2), 3: ("i16", "<h", 2),
    4: ("u32", "<I", 4), 5: ("i32", "<i", 4), 6: ("f32", "<f", 4), 7: ("bool", "<?", 1),
    8: ("string", None, 8), 9: ("array", None, 12), 10: ("u64", "<Q", 8),
    11: ("i64", "<q", 8), 12: ("f64", "<d", 8),
}
_NUMPY_TYPES = {0: "u1", 1: "i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4",
                7: "u1", 10: "<u8", 11: "<i8", 12: "<f8"}
_INTEGER_TYPES = {0, 1, 2, 3, 4, 5, 10, 11}
# Smallest tensor info: empty name (8), n_dims (4), type (4), offset (8).
_MIN_TENSOR_INFO = 24
# Smallest key-value pair: empty key (8), type (4), one byte of value.
_MIN_KV = 13
_U64 = struct.Struct("<Q")
_FIRST_CHUNK = 64 * 1024
_MAX_CHUNK = 1024 * 1024  # bounds the overshoot past the header for remote reads


class _Cursor:
    """Sequential reads over a ByteSource through one buffer, every length checked first."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.size = source.size
        self.pos = 0
        self._buf = b""
        self._buf_start = 0
        self._chunk = _FIRST_CHUNK
        self.elements = 0
        self.strings = 0
        self.string_bytes = 0

    def fail(self, message: str) -> WeightFileError:
        return WeightFileError(f"{self.source.name}: {message}")

    @property
    def left(self) -> int:
        return self.size - self.pos

    def _ensure(self, n: int, what: str) -> int:
        """Make bytes pos..pos+n buffered; return pos's index in the buffer."""
        if n > self.size - self.pos:
            raise self.fail(f"{what} at byte {self.pos} needs {n} bytes, past the end of the "
                            f"file ({self.size} bytes)")
        rel = self.pos - self._buf_start
        if rel + n > len(self._buf):
            keep = self._buf[rel:]
            start = self.pos + len(keep)
            want = min(max(n - len(keep), self._chunk), self.size - start)
            self._buf = keep + self.source.read(start, want)
            self._buf_start = self.pos
            self._chunk = min(self._chunk * 2, _MAX_CHUNK)
            rel = 0
        return rel

    def take(self, n: int, what: str) -> bytes:
        rel = self._ensure(n, what)
        self.pos += n
        return self._buf[rel:rel + n]

    def unpack(self, fmt: str, size: int, what: str) -> Any:
        rel = self._ensure(size, what)
        self.pos += size
        return struct.unpack_from(fmt, self._buf, rel)[0]

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "little")

    def _string_length(self, length: int, at: int, what: str) -> None:
        """Check a string's declared length against the file and the header's budget."""
        if length > self.size - at - 8:
            raise self.fail(f"{what} at byte {at} claims {length} bytes, past the end of the "
                            f"file ({self.size} bytes)")
        self.string_bytes += length
        if self.string_bytes > MAX_STRING_BYTES:
            raise self.fail(f"{what} at byte {at}: the header's strings exceed "
                            f"{MAX_STRING_BYTES} bytes")

    def string(self, what: str, strict: bool = True) -> str:
        at = self.pos
        length = self.u64(f"length of {what}")
        self._string_length(length, at, what)
        raw = self.take(length, what)
        try:
            return raw.decode("utf-8", errors="strict" if strict else "replace")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at byte {at} is not UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        entry = _VALUE_TYPES.get(vtype)
        if entry is None:
            raise self.fail(f"{what}: unknown value type {vtype}")
        name, fmt, size = entry
        if fmt is not None:
            return self.unpack(fmt, size, what)
        if vtype == 8:
            return self.string(what, strict=False)
        return self.array(what, depth + 1)

    def array(self, what: str, depth: int) -> list[Any]:
        if depth > MAX_NESTING:
            raise self.fail(f"{what}: arrays nested more than {MAX_NESTING} deep")
        at = self.pos
        etype = self.u32(f"element type of {what}")
        count = self.u64(f"length of {what}")
        if etype not in _VALUE_TYPES:
            raise self.fail(f"{what}: unknown array element type {etype}")
        min_size = _VALUE_TYPES[etype][2]
        if count > self.left // min_size:
            raise self.fail(f"{what} at byte {at} claims {count} elements of "
                            f"{_VALUE_TYPES[etype][0]}, more than the {self.left} bytes left "
                            "in the file can hold")
        self.elements += count
        if self.elements > MAX_ARRAY_ELEMENTS:
            raise self.fail(f"{what} at byte {at} claims {count} elements: the header's arrays "
                            f"would hold more than {MAX_ARRAY_ELEMENTS}")
        if etype in _NUMPY_TYPES:
            values = np.frombuffer(self.take(count * min_size, what), dtype=_NUMPY_TYPES[etype])
            numbers: list[bool | int | float] = (values.astype(bool).tolist() if etype == 7
                                                 else values.tolist())
            return numbers
        if etype == 8:
            self.strings += count
            if self.strings > MAX_STRINGS:
                raise self.fail(f"{what} at byte {at} claims {count} strings: the header would "
                                f"hold more than {MAX_STRINGS}")
            return self.string_array(count, what)
        return [self.value(etype, what, depth) for _ in range(count)]

    def string_array(self, count: int, what: str) -> list[str]:
        """`count` strings, in one tight loop: tokenizer arrays hold hundreds of thousands."""
        out: list[str] = []
        append = out.append
        unpack = _U64.unpack_from
        for _ in range(count):
            at = self.pos
            rel = self._ensure(8, f"length of {what}")
            (length,) = unpack(self._buf, rel)
            if length:
                self._string_length(length, at, what)
                rel = self._ensure(8 + length, what)
            self.pos = at + 8 + length
            append(self._buf[rel + 8:rel + 8 + length].decode("utf-8", "replace"))
        return out


def _single_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class GgufFile(TensorLookup):
    """A parsed GGUF file: `metadata` (key -> value), `tensors` in file order, rows on demand.

    Each TensorInfo's `dtype` is the ggml type name (`Q4_K`, `BF16`, ...), `shape` is numpy
    order (ne reversed) and `extra` holds `ggml_type` (the id) and `ne` (as stored).
    """

    def __init__(self, source: ByteSource, version: int, metadata: dict[str, Any],
                 value_types: dict[str, int], tensors: list[TensorInfo], alignment: int,
                 data_start: int, *, kv_end: int = 0, infos_end: int = 0):
        self.source = source
        self.version = version
        self.metadata = metadata
        self.value_types = value_types
        self.tensors = tensors
        self.alignment = alignment
        self.data_start = data_start
        # Where the key-value pairs end and the tensor infos end: the byte spans a
        # rewriter that adds a key (fingerprints.padding) copies around its insertion.
        self.kv_end = kv_end
        self.infos_end = infos_end

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_value(self, key: str, default: Any = None) -> Any:
        """`{architecture}.{key}`, e.g. arch_value("attention.head_count")."""
        arch = self.architecture
        return self.metadata.get(f"{arch}.{key}", default) if arch else default

    @property
    def head_counts(self) -> tuple[int | None, int | None]:
        """(attention heads, key-value heads), for undoing llama.cpp's Q/K row permutation.

        Key-value heads default to the head count, as in llama.cpp. Either is None when
        absent or not a single integer (some architectures store one per layer).
        """
        heads = self.arch_value("attention.head_count")
        kv = self.arch_value("attention.head_count_kv", heads)
        return _single_int(heads), _single_int(kv)

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        """The given rows (first numpy axis, later axes flattened) dequantised to float32."""
        self.check_own(tensor)
        if tensor.dtype not in SUPPORTED:
            raise WeightFileError(f"{self.source.name}: tensor {quote(tensor.name)}: unsupported "
                                  f"type {tensor.dtype}")
        if tensor.row_nbytes == 0 and tensor.nbytes:
            raise WeightFileError(f"{self.source.name}: tensor {quote(tensor.name)}: a row of "
                                  f"shape {list(tensor.shape)} is not a whole number of "
                                  f"{tensor.dtype} blocks")
        return read_row_runs(self.source, tensor, rows, lambda raw: dequantize(raw, tensor.dtype))


def open_gguf(source: ByteSource) -> GgufFile:
    """Parse and validate a GGUF header; WeightFileError (one line) if malformed."""
    cur = _Cursor(source)
    if source.size < 24:
        raise cur.fail(f"not a GGUF file: {source.size} bytes, shorter than the 24-byte header")
    magic = cur.take(4, "magic")
    if magic != MAGIC:
        raise cur.fail(f"not a GGUF file: magic {magic!r}, expected b'GGUF'")
    version = cur.u32("version")
    if version not in VERSIONS:
        if int.from_bytes(version.to_bytes(4, "little"), "big") in VERSIONS:
            raise cur.fail("big-endian GGUF files are not supported")
        raise cur.fail(f"GGUF version {version} is not supported (only 2 and 3)")
    tensor_count = cur.u64("tensor count")
    kv_count = cur.u64("key-value count")
    if tensor_count > MAX_TENSORS or kv_count > MAX_KV:
        raise cur.fail(f"GGUF header claims {tensor_count} tensors and {kv_count} key-value "
                       f"pairs (at most {MAX_TENSORS} and {MAX_KV})")
    if tensor_count * _MIN_TENSOR_INFO + kv_count * _MIN_KV > cur.left:
        raise cur.fail(f"GGUF header claims {tensor_count} tensors and {kv_count} key-value "
                       f"pairs, more than the {source.size}-byte file can hold")

    metadata: dict[str, Any] = {}
    value_types: dict[str, int] = {}
    for i in range(kv_count):
        key = cur.string(f"key {i}")
        what = f"value of {quote(key)}"
        vtype = cur.u32(f"type of {quote(key)}")
        value = cur.value(vtype, what)
        if key in metadata:
            raise cur.fail(f"duplicate key {quote(key)}")
        metadata[key] = value
        value_types[key] = vtype

    kv_end = cur.pos
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (value_types.get("general.alignment", 4) not in _INTEGER_TYPES
            or not isinstance(alignment, int) or alignment <= 0
            or alignment & (alignment - 1) or alignment > 1 << 30):
        raise cur.fail(f"general.alignment {quote(alignment)} is not a power of two")

    infos: list[tuple[str, list[int], int, int]] = []
    names: set[str] = set()
    for i in range(tensor_count):
        name = cur.string(f"name of tensor {i}")
        where = f"tensor {quote(name)}"
        if name in names:
            raise cur.fail(f"duplicate {where}")
        names.add(name)
        n_dims = cur.u32(f"n_dims of {where}")
        if n_dims > MAX_DIMS:
            raise cur.fail(f"{where} has {n_dims} dimensions (at most {MAX_DIMS})")
        ne = [cur.u64(f"dimensions of {where}") for _ in range(n_dims)]
        if any(d >= 1 << 63 for d in ne):
            raise cur.fail(f"{where}: dimension {max(ne)} is negative as int64")
        ggml_type = cur.u32(f"type of {where}")
        offset = cur.u64(f"offset of {where}")
        infos.append((name, ne, ggml_type, offset))

    infos_end = cur.pos
    data_start = -(-infos_end // alignment) * alignment
    data_size = source.size - data_start
    tensors: list[TensorInfo] = []
    for name, ne, ggml_type, offset in infos:
        where = f"tensor {quote(name)}"
        if ggml_type not in GGML_TYPES:
            raise cur.fail(f"{where} has unknown ggml type {ggml_type}")
        type_name, block, type_size = GGML_TYPES[ggml_type]
        if ne and ne[0] % block:
            raise cur.fail(f"{where}: row length {ne[0]} is not a multiple of the {type_name} "
                           f"block size {block}")
        if not ne and block != 1:
            raise cur.fail(f"{where}: a scalar cannot be stored as {type_name}")
        numel = math.prod(ne)  # at most 4 factors below 2^63
        nbytes = numel // block * type_size
        if offset % alignment:
            raise cur.fail(f"{where}: offset {offset} is not a multiple of the alignment "
                           f"{alignment}")
        if nbytes and (data_size < 0 or offset > data_size or nbytes > data_size - offset):
            raise cur.fail(f"{where}: bytes {data_start + offset}..{data_start + offset + nbytes}"
                           f" lie past the end of the file ({source.size} bytes)")
        shape = tuple(reversed(ne))
        if len(ne) >= 2:
            row_nbytes = math.prod(ne[:-1]) // block * type_size
        elif len(ne) == 1:
            row_nbytes = type_size if block == 1 else 0  # a row of a vector is one value
        else:
            row_nbytes = nbytes
        tensors.append(TensorInfo(name=name, shape=shape, dtype=type_name,
                                  offset=data_start + offset, nbytes=nbytes,
                                  row_nbytes=row_nbytes,
                                  extra={"ggml_type": ggml_type, "ne": tuple(ne)}))

    previous: TensorInfo | None = None
    for tensor in sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset):
        if previous is not None and tensor.offset < previous.offset + previous.nbytes:
            raise cur.fail(f"tensors {quote(previous.name)} and {quote(tensor.name)} overlap")
        previous = tensor
    return GgufFile(source, version, metadata, value_types, tensors, alignment, data_start,
                    kv_end=kv_end, infos_end=infos_end)
