"""numpy .npy and .npz files, read without pickle.

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

Rows are read by `fingerprints.tensors.read_plain_rows`, as for the PyTorch and ONNX readers;
dtypes are the safetensors names (F16, F32, ..., BOOL), as `fingerprints.dequant` decodes them.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from fingerprints.archives import ArchiveMember, ZipArchive
from fingerprints.dequant import ITEMSIZE, Floats
from fingerprints.tensors import (
    ByteSource,
    Rows,
    TensorInfo,
    TensorLookup,
    WeightFileError,
    read_plain_rows,
)

__all__ = ["NPY_MAGIC", "NpyHeader", "NpyReader", "NpzReader", "open_npy", "open_npz",
           "parse_npy_header"]

NPY_MAGIC = b"\x93NUMPY"
# numpy's own np.load refuses headers over 10,000 bytes unless told otherwise.
MAX_HEADER_BYTES = 65536
MAX_NDIM = 32
MAX_NUMEL = 1 << 48

_NUMPY_NAMES = {"f2": "F16", "f4": "F32", "f8": "F64", "i1": "I8", "i2": "I16", "i4": "I32",
                "i8": "I64", "u1": "U8", "u2": "U16", "u4": "U32", "u8": "U64", "b1": "BOOL"}
_DESCR = re.compile(r"^([<>|=]?)(f2|f4|f8|i1|i2|i4|i8|u1|u2|u4|u8|b1)$")


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


# The header exactly as numpy writes it, read without compiling it: literal_eval costs ~100 us
# a header, and an .npz may hold 100k of them. Anything else goes to literal_eval.
_WRITTEN = re.compile(r"\{'descr': '([<>|=]?[a-z]\d{1,2})', 'fortran_order': (True|False), "
                      r"'shape': \(((?:\d{1,20}, ?)*(?:\d{1,20})?)\), \} *\n?")


def _numpy_written_header(text: str) -> dict[str, object] | None:
    match = _WRITTEN.fullmatch(text)
    if match is None:
        return None
    descr, fortran, dims = match.groups()
    shape = tuple(int(d) for d in dims.replace(" ", "").split(",") if d)
    if dims.strip() and "," not in dims:
        return None  # `(3)` is an int, not a tuple: let literal_eval say so
    return {"descr": descr, "fortran_order": fortran == "True", "shape": shape}


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
        meta = _numpy_written_header(text)
        if meta is None:
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


class NpyReader(TensorLookup):
    """One .npy file: a single tensor, named after the file unless `name` is given."""

    def __init__(self, source: ByteSource, name: str | None = None):
        self.source = source
        header = _read_header(source, 0, source.size, source.name)
        self.header = header
        self.tensors = [_tensor(name if name is not None else _stem(source.name), header,
                                header.data_offset)]

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        _check_readable(self.source, tensor)
        return read_plain_rows(self.source, tensor, rows)


class NpzReader(TensorLookup):
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

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        _check_readable(self.source, tensor)
        member = tensor.extra.get("member")
        source = self.archive.open(self.archive.member(str(member))) if member else self.source
        return read_plain_rows(source, tensor, rows)


def open_npy(source: ByteSource) -> NpyReader:
    return NpyReader(source)


def open_npz(source: ByteSource) -> NpzReader:
    return NpzReader(source)
