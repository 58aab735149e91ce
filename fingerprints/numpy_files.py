"""numpy .npy and .npz files, read without pickle, and the row decoding other readers share.

A `.npy` file is a magic string, a version, a header length and a Python-literal header
dict (`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`), then the raw array.
The header is parsed with `ast.literal_eval` after its length is bounded: literal_eval
builds only literals, it never calls anything. Object arrays (`|O`) hold pickles and are
refused; so is every dtype that is not a plain number. A `.npz` is a zip of `.npy` members
(`np.savez` stores them, `np.savez_compressed` deflates them); `allow_pickle` does not exist
here.

Tensors are named as numpy names them: an `.npz` member `emb.npy` is tensor `emb`, an
`.npy` file is named after the file. When an `.npz` member is stored, a tensor's `offset`
points into the `.npz` itself, so rows are read by range; when it is deflated, `offset` is
inside the inflated member and `extra["member"]` names it.

`decode_float32`, `ITEMSIZE` and `read_rows_at` decode rows of plain dtypes (the
safetensors names: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL F8_E4M3 F8_E5M2) for
the PyTorch and ONNX readers too.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fingerprints.archives import ArchiveMember, ZipArchive
from fingerprints.tensors import ByteSource, TensorInfo, WeightFileError, check_range

__all__ = ["ITEMSIZE", "NPY_MAGIC", "NpyHeader", "NpyReader", "NpzReader", "decode_float32",
           "open_npy", "open_npz", "parse_npy_header", "read_rows_at", "row_indices"]

NPY_MAGIC = b"\x93NUMPY"
# numpy's own np.load refuses headers over 10,000 bytes unless told otherwise.
MAX_HEADER_BYTES = 65536
MAX_NDIM = 32
MAX_NUMEL = 1 << 48
# Adjacent row runs closer than this are fetched in one read (fewer range requests).
MERGE_GAP = 4096

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_PLAIN = {"F64": "f8", "F32": "f4", "F16": "f2", "I64": "i8", "I32": "i4", "I16": "i2",
          "I8": "i1", "U64": "u8", "U32": "u4", "U16": "u2", "U8": "u1", "BOOL": "u1"}
_NUMPY_NAMES = {"f2": "F16", "f4": "F32", "f8": "F64", "i1": "I8", "i2": "I16", "i4": "I32",
                "i8": "I64", "u1": "U8", "u2": "U16", "u4": "U32", "u8": "U64", "b1": "BOOL"}
_DESCR = re.compile(r"^([<>|=]?)(f2|f4|f8|i1|i2|i4|i8|u1|u2|u4|u8|b1)$")


def _e4m3fn_table() -> np.ndarray:
    """float8_e4m3fn: bias 7, no infinities, 0x7f/0xff are NaN."""
    b = np.arange(256, dtype=np.uint32)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exp = (b >> 3) & 0xF
    man = (b & 7).astype(np.float64)
    value = np.where(exp == 0, man / 8 * 2.0 ** -6, (1 + man / 8) * 2.0 ** (exp.astype(np.float64) - 7))
    value = sign * value
    value[(b & 0x7F) == 0x7F] = np.nan
    return value.astype(np.float32)


_E4M3 = _e4m3fn_table()


def decode_float32(raw: bytes | memoryview, dtype: str, big_endian: bool = False) -> np.ndarray:
    """Raw little- (or big-) endian elements of a plain dtype, widened to float32 (1-D)."""
    order = ">" if big_endian else "<"
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype=order + "u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    if dtype == "F8_E4M3":
        return _E4M3[np.frombuffer(raw, dtype=np.uint8)]
    if dtype == "F8_E5M2":  # the high byte of an IEEE half
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    plain = _PLAIN.get(dtype)
    if plain is None:
        raise WeightFileError(f"cannot decode dtype {dtype}")
    return np.frombuffer(raw, dtype=order + plain).astype(np.float32)


def row_indices(rows: Iterable[int] | np.ndarray, count: int, name: str) -> np.ndarray:
    """Row numbers as int64, each checked to lie in 0..count-1."""
    try:
        index = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows)
    except TypeError:
        raise WeightFileError(f"{name}: rows must be a list of integers") from None
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise WeightFileError(f"{name}: rows must be a list of integers")
    index = index.astype(np.int64)
    bad = index[(index < 0) | (index >= count)]
    if bad.size:
        raise WeightFileError(f"{name}: row {int(bad[0])} is outside 0..{count - 1}")
    return index


def read_rows_at(source: ByteSource, offset: int, tensor: TensorInfo, rows: Iterable[int] | np.ndarray,
                 *, big_endian: bool = False) -> np.ndarray:
    """Rows of a row-major tensor whose data starts at `offset` in `source`, as float32.

    The result has shape (len(rows), elements per row). Adjacent rows are read in one
    range, so a sample of rows costs one read per run, not per row.
    """
    itemsize = ITEMSIZE.get(tensor.dtype)
    if itemsize is None:
        raise WeightFileError(f"{source.name}: {tensor.name}: cannot decode dtype {tensor.dtype}")
    width = math.prod(tensor.shape[1:]) if tensor.shape else 1
    row_nbytes = width * itemsize
    index = row_indices(rows, tensor.rows, f"{source.name}: {tensor.name}")
    out = np.empty((len(index), width), dtype=np.float32)
    if len(index) == 0 or width == 0:
        return out
    check_range(source, offset, tensor.rows * row_nbytes)
    order = np.unique(index)
    runs: list[tuple[int, int]] = []  # (first row, last row) inclusive
    for row in order.tolist():
        if runs and (row - runs[-1][1] - 1) * row_nbytes <= MERGE_GAP:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    decoded: dict[int, np.ndarray] = {}
    for first, last in runs:
        raw = source.read(offset + first * row_nbytes, (last - first + 1) * row_nbytes)
        block = decode_float32(raw, tensor.dtype, big_endian).reshape(last - first + 1, width)
        decoded[first] = block
        for row in order[(order >= first) & (order <= last)].tolist():
            decoded[row] = block[row - first]
    for i, row in enumerate(index.tolist()):
        out[i] = decoded[row]
    return out


@dataclass(frozen=True)
class NpyHeader:
    """What a .npy header says. `data_offset` is relative to the start of the .npy."""

    dtype: str
    descr: str
    shape: tuple[int, ...]
    fortran_order: bool
    big_endian: bool
    data_offset: int
    nbytes: int


def _numel(shape: Sequence[int]) -> int:
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > MAX_NUMEL:
            raise ValueError(f"shape {tuple(shape)} is implausibly large")
    return numel


def parse_npy_header(head: bytes, size: int, name: str) -> NpyHeader:
    """Parse a .npy header from its first bytes (`head`, at least the whole header).

    `size` is the length of the whole .npy, to check the data fits in it.
    """
    def fail(what: str) -> WeightFileError:
        return WeightFileError(f"{name}: {what}")

    if len(head) < 10 or not head.startswith(NPY_MAGIC):
        raise fail("not a .npy file (no \\x93NUMPY magic)")
    major, minor = head[6], head[7]
    if major == 1:
        (hlen,), start = struct.unpack_from("<H", head, 8), 10
    elif major in (2, 3):
        if len(head) < 12:
            raise fail("truncated .npy header")
        (hlen,), start = struct.unpack_from("<I", head, 8), 12
    else:
        raise fail(f".npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)")
    if hlen > MAX_HEADER_BYTES:
        raise fail(f".npy header is {hlen} bytes, over the {MAX_HEADER_BYTES}-byte limit")
    if start + hlen > size:
        raise fail(f".npy header of {hlen} bytes runs past the end of the file ({size} bytes)")
    if start + hlen > len(head):
        raise fail("truncated .npy header")
    try:
        text = head[start:start + hlen].decode("utf-8" if major == 3 else "latin-1")
        meta = ast.literal_eval(text)
    except Exception as exc:  # SyntaxError, ValueError, MemoryError, RecursionError...
        raise fail(f".npy header is not a Python literal ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or set(meta) != {"descr", "fortran_order", "shape"}:
        raise fail(".npy header must be a dict with exactly descr, fortran_order and shape")
    descr, fortran, shape = meta["descr"], meta["fortran_order"], meta["shape"]
    if not isinstance(descr, str):
        raise fail("structured (record) dtypes are not supported")
    if "O" in descr:
        raise fail(f"dtype {descr!r} is an object array (pickled Python objects); refusing")
    match = _DESCR.match(descr)
    if not match:
        raise fail(f"dtype {descr[:40]!r} is not a plain number type")
    if not isinstance(fortran, bool):
        raise fail("fortran_order must be True or False")
    if (not isinstance(shape, tuple) or len(shape) > MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise fail(f"shape must be a tuple of at most {MAX_NDIM} non-negative integers")
    dtype = _NUMPY_NAMES[match.group(2)]
    try:
        nbytes = _numel(shape) * ITEMSIZE[dtype]
    except ValueError as exc:
        raise fail(str(exc)) from None
    data_offset = start + hlen
    if data_offset + nbytes > size:
        raise fail(f"array of shape {shape} and dtype {descr} needs {nbytes} bytes but only "
                   f"{size - data_offset} follow the header")
    return NpyHeader(dtype=dtype, descr=descr, shape=shape, fortran_order=fortran,
                     big_endian=match.group(1) == ">", data_offset=data_offset, nbytes=nbytes)


def _read_header(source: ByteSource, offset: int, size: int, name: str) -> NpyHeader:
    head = source.read(offset, min(size, 12))
    if len(head) >= 10 and head.startswith(NPY_MAGIC):
        if head[6] == 1:
            want = 10 + struct.unpack_from("<H", head, 8)[0]
        elif len(head) >= 12:
            want = 12 + struct.unpack_from("<I", head, 8)[0]
        else:
            want = len(head)
        want = min(want, size, 12 + MAX_HEADER_BYTES)
        if want > len(head):
            head = source.read(offset, want)
    return parse_npy_header(head, size, name)


def _tensor(name: str, header: NpyHeader, offset: int, **extra: object) -> TensorInfo:
    itemsize = ITEMSIZE[header.dtype]
    row_nbytes = itemsize * math.prod(header.shape[1:]) if header.shape else itemsize
    return TensorInfo(name=name, shape=header.shape, dtype=header.dtype, offset=offset,
                      nbytes=header.nbytes, row_nbytes=row_nbytes,
                      extra={"numpy_dtype": header.descr, "fortran_order": header.fortran_order,
                             "big_endian": header.big_endian, **extra})


def _check_readable(source: ByteSource, tensor: TensorInfo) -> None:
    if tensor.extra.get("fortran_order") and len(tensor.shape) > 1:
        raise WeightFileError(f"{source.name}: {tensor.name}: stored in Fortran (column-major) "
                              "order, so its rows are not contiguous; refusing to read rows")


def _stem(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".npy") else base


class NpyReader:
    """One .npy file: a single tensor, named after the file unless `name` is given."""

    def __init__(self, source: ByteSource, name: str | None = None):
        self.source = source
        header = _read_header(source, 0, source.size, source.name)
        self.header = header
        self.tensors = [_tensor(name if name is not None else _stem(source.name), header,
                                header.data_offset)]

    def tensor(self, name: str) -> TensorInfo:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise WeightFileError(f"{self.source.name}: no tensor named {name!r}")

    def read_rows(self, tensor: TensorInfo, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        _check_readable(self.source, tensor)
        return read_rows_at(self.source, tensor.offset, tensor, rows,
                            big_endian=bool(tensor.extra.get("big_endian")))

    def read_tensor(self, tensor: TensorInfo) -> np.ndarray:
        return self.read_rows(tensor, range(tensor.rows)).reshape(tensor.shape)


class NpzReader:
    """An .npz: a zip whose `<key>.npy` members are the tensors (stored or deflated)."""

    def __init__(self, source: ByteSource, archive: ZipArchive | None = None):
        self.source = source
        self.archive = archive if archive is not None else ZipArchive(source)
        self.tensors: list[TensorInfo] = []
        self.skipped: list[tuple[str, str]] = []
        seen: set[str] = set()
        for member in self.archive.members:
            if member.is_dir:
                continue
            if not member.raw_name.endswith(".npy"):
                self.skipped.append((member.name, "not a .npy member"))
                continue
            key = member.raw_name[:-4]
            if key in seen:
                raise WeightFileError(f"{source.name}: two members named {member.name!r}")
            seen.add(key)
            self.tensors.append(self._member_tensor(key, member))

    def _member_tensor(self, key: str, member: ArchiveMember) -> TensorInfo:
        label = f"{self.source.name}: {member.name}"
        if member.method == "stored":
            start = self.archive.data_offset(member)
            header = _read_header(self.source, start, member.size, label)
            return _tensor(key, header, start + header.data_offset)
        head = self.archive.read_prefix(member, 12 + MAX_HEADER_BYTES)
        header = parse_npy_header(head, member.size, label)
        return _tensor(key, header, header.data_offset, member=member.raw_name)

    def tensor(self, name: str) -> TensorInfo:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise WeightFileError(f"{self.source.name}: no tensor named {name!r}")

    def read_rows(self, tensor: TensorInfo, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        _check_readable(self.source, tensor)
        member = tensor.extra.get("member")
        source = self.archive.open(self.archive.member(str(member))) if member else self.source
        return read_rows_at(source, tensor.offset, tensor, rows,
                            big_endian=bool(tensor.extra.get("big_endian")))

    def read_tensor(self, tensor: TensorInfo) -> np.ndarray:
        return self.read_rows(tensor, range(tensor.rows)).reshape(tensor.shape)


def open_npy(source: ByteSource) -> NpyReader:
    return NpyReader(source)


def open_npz(source: ByteSource) -> NpzReader:
    return NpzReader(source)
