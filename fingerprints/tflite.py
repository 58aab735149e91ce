"""TFLite models: the constant tensors of a FlatBuffer, read without tensorflow or flatbuffers.

A .tflite file is one FlatBuffer (schema `tflite/schema.fbs`, file identifier `TFL3` at byte
4). A FlatBuffer is a web of little-endian offsets: a table starts with an int32 pointing
back to its vtable, whose uint16 entries give each field's place inside the table; offsets
to tables, vectors and strings are uint32s relative to where they are stored; a vector is
a uint32 count then its elements. Every one of these is a number from the (hostile) file,
so each is checked against the file's size before it is followed, and only a fixed path of
the schema is walked (Model -> subgraphs -> tensors -> quantization, and Model -> buffers
for the buffers tensors name): no generic recursion, so a cyclic or overlapping web costs
no more than a well-formed one, and counts are capped before anything is allocated.

Fields used (schema field order):
  Model: 2 subgraphs, 4 buffers.      SubGraph: 0 tensors, 4 name.
  Tensor: 0 shape, 1 type, 2 buffer, 3 name, 4 quantization, 5 is_variable, 6 sparsity.
  QuantizationParameters: 2 scale [float], 3 zero_point [long], 6 quantized_dimension.
  Buffer: 0 data [ubyte], 1 offset (ulong), 2 size (ulong): models over 2 GB keep tensor
  data after the FlatBuffer, at `offset` from the start of the file (0 or 1: not used).

A weight is a tensor with a non-empty buffer (activations have buffer 0 or an empty one).
FLOAT32, FLOAT16 and BFLOAT16 tensors are read as they are, in the file's layout (a 4-D
kernel's `extra["layout"]` names it: `OHWI`, or `1HWC` for a depthwise one); INT8 and
UINT8 ones are dequantised, (q - zero_point) * scale, per tensor or per channel along
`quantized_dimension`. Other types (INT32 biases and shapes, strings, ...), sparse and
variable tensors, and a second tensor naming an already listed buffer are listed in
`skipped` with the reason. The header is read through a small page cache, so a remote scan
reads the tables and then only the rows it samples.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from typing import cast

import numpy as np

from fingerprints.dequant import Floats, affine_rows
from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.tensors import (
    ByteSource,
    Rows,
    TensorInfo,
    TensorLookup,
    WeightFileError,
    quote,
    read_plain_rows,
    row_indices,
)

__all__ = ["TFLITE_TYPES", "TfliteReader", "dequantize_rows", "open_tflite"]

IDENTIFIER = b"TFL3"
# TensorInfo.extra["layout"] of a 4-D tensor (see fingerprints.weightprint.matrix_shape).
LAYOUT_OHWI = "OHWI"
LAYOUT_DEPTHWISE = "1HWC"
# TensorType -> our dtype names (None: listed as skipped, by the schema's name).
TFLITE_TYPES: dict[int, str] = {0: "F32", 1: "F16", 3: "U8", 9: "I8", 18: "BF16"}
_TYPE_NAMES = {2: "INT32", 4: "INT64", 5: "STRING", 6: "BOOL", 7: "INT16", 8: "COMPLEX64",
               10: "FLOAT64", 11: "COMPLEX128", 12: "UINT64", 13: "RESOURCE", 14: "VARIANT",
               15: "UINT32", 16: "UINT16", 17: "INT4"}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1, "I8": 1}

# Real models have 1-10 subgraphs (control flow bodies, signatures); tensors and buffers
# share the per-file limit every reader has.
MAX_SUBGRAPHS = 4096
MAX_TENSORS = MAX_TENSORS_PER_FILE
MAX_BUFFERS = MAX_TENSORS_PER_FILE
MAX_DIMS = 64
MAX_NAME = 65536
MAX_NUMEL = 1 << 48
# Tables, vectors and strings may be shared by any number of tensors (legal in a
# FlatBuffer), so what each tensor costs is also capped for the file as a whole: names, and
# quantisation parameters (one per channel: an int8 LLM has a few million).
MAX_NAME_BYTES = 64 << 20
MAX_SCALES = 1 << 24
_PAGE = 4096
_MAX_PAGES = 4096  # 16 MiB of header cached at most
_MAX_RUN = 64      # pages fetched at once while a walk moves forward


class _Pages:
    """Reads of a source through an LRU of 4 KiB pages. FlatBuffer tables sit close to each
    other, so a walk of thousands of small fields costs a few reads; a miss right after the
    previous one fetches twice as many pages as that one did (up to 256 KiB), so a long run
    of tables is a few large reads, while a jump (to the small table next to each buffer's
    data) fetches one page: a remote source is asked for little more than the tables."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.size = source.size
        self.pages: OrderedDict[int, bytes] = OrderedDict()
        self._next_miss = -1
        self._run = 1

    def _page(self, number: int) -> bytes:
        page = self.pages.get(number)
        if page is not None:
            self.pages.move_to_end(number)
            return page
        self._run = min(self._run * 2, _MAX_RUN) if number == self._next_miss else 1
        start = number * _PAGE
        block = self.source.read(start, min(self._run * _PAGE, self.size - start))
        for i in range(0, len(block), _PAGE):
            self.pages[number + i // _PAGE] = block[i:i + _PAGE]
        self._next_miss = number + -(-len(block) // _PAGE)
        while len(self.pages) > _MAX_PAGES:
            self.pages.popitem(last=False)
        return self.pages[number]

    def get(self, pos: int, n: int) -> bytes:
        """Exactly n bytes at pos; the caller has checked the range lies in the file."""
        if n <= 0:
            return b""
        first, last = pos // _PAGE, (pos + n - 1) // _PAGE
        if first == last:
            off = pos - first * _PAGE
            return self._page(first)[off:off + n]
        if last - first > 4:  # a long vector: read directly, do not flush the cache
            return self.source.read(pos, n)
        joined = b"".join(self._page(p) for p in range(first, last + 1))
        off = pos - first * _PAGE
        return joined[off:off + n]


class TfliteReader(TensorLookup):
    """A TFLite model's constant tensors, rows read by range and dequantised."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.size = source.size
        self.pages = _Pages(source)
        self.tensors: list[TensorInfo] = []
        self.skipped: list[tuple[str, str]] = []
        self._name_bytes_left = MAX_NAME_BYTES
        self._scales_left = MAX_SCALES
        if self.size < 8:
            raise self._fail(f"{self.size} bytes is too short for a TFLite model")
        head = self.pages.get(0, 8)
        if head[4:8] != IDENTIFIER:
            raise self._fail(f"no {IDENTIFIER.decode()} identifier at byte 4: not a TFLite model")
        model = self._table(self._u32(0), "model")
        subgraphs = self._vector(model, 2, 4, "model.subgraphs", MAX_SUBGRAPHS)
        buffers = self._vector(model, 4, 4, "model.buffers", MAX_BUFFERS)
        counted = 0
        listed: dict[int, str] = {}
        graphs_at, graph_count = subgraphs or (0, 0)
        for index in range(graph_count):
            graph = self._table(self._indirect(graphs_at + 4 * index), f"subgraph {index}")
            tensors = self._vector(graph, 0, 4, f"subgraph {index}.tensors", MAX_TENSORS)
            if not tensors:
                continue
            counted += tensors[1]
            if counted > MAX_TENSORS:
                raise self._fail(f"more than {MAX_TENSORS} tensors")
            prefix = ""
            if index:
                prefix = (self._string(graph, 4, f"subgraph {index}.name") or f"subgraph{index}") + "/"
            for t in range(tensors[1]):
                pos = self._indirect(tensors[0] + 4 * t)
                self._tensor(self._table(pos, f"subgraph {index} tensor {t}"), prefix, t,
                             buffers, listed)

    def _fail(self, what: str) -> WeightFileError:
        return WeightFileError(f"{self.source.name}: {what}")

    # -- FlatBuffer primitives, every offset checked ------------------------------------------
    def _need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise self._fail(f"{what}: bytes {pos}..{pos + n} lie outside the file "
                             f"({self.size} bytes)")

    def _u32(self, pos: int, what: str = "offset") -> int:
        self._need(pos, 4, what)
        return int.from_bytes(self.pages.get(pos, 4), "little")

    def _indirect(self, pos: int) -> int:
        """The position a uoffset stored at `pos` points to."""
        return pos + self._u32(pos)

    def _table(self, pos: int, what: str) -> tuple[int, bytes, int]:
        """(table position, vtable entries, table length) of the table at `pos`."""
        self._need(pos, 4, what)
        (back,) = struct.unpack("<i", self.pages.get(pos, 4))
        vtable = pos - back
        self._need(vtable, 4, f"{what}: vtable")
        vt_size, t_size = struct.unpack("<HH", self.pages.get(vtable, 4))
        if vt_size < 4 or vt_size % 2 or t_size < 4:
            raise self._fail(f"{what}: malformed vtable at byte {vtable}")
        self._need(vtable, vt_size, f"{what}: vtable")
        self._need(pos, t_size, what)
        return pos, self.pages.get(vtable + 4, vt_size - 4), t_size

    def _field(self, table: tuple[int, bytes, int], field: int, width: int, what: str) -> int | None:
        """Position of a field `width` bytes wide, or None when absent."""
        pos, entries, t_size = table
        if 2 * field + 2 > len(entries):
            return None
        off = int.from_bytes(entries[2 * field:2 * field + 2], "little")
        if off == 0:
            return None
        if off + width > t_size:
            raise self._fail(f"{what}: field runs past its table")
        return pos + off

    def _scalar(self, table: tuple[int, bytes, int], field: int, fmt: str, default: int,
                what: str) -> int:
        at = self._field(table, field, struct.calcsize(fmt), what)
        if at is None:
            return default
        value: int = struct.unpack(fmt, self.pages.get(at, struct.calcsize(fmt)))[0]
        return value

    def _vector(self, table: tuple[int, bytes, int], field: int, elem: int, what: str,
                limit: int) -> tuple[int, int] | None:
        """(position of the first element, count) of a vector field, or None when absent."""
        at = self._field(table, field, 4, what)
        if at is None:
            return None
        start = self._indirect(at)
        count = self._u32(start, what)
        if count > limit:
            raise self._fail(f"{what}: {count} entries, over the limit of {limit}")
        self._need(start + 4, count * elem, what)
        return start + 4, count

    def _string(self, table: tuple[int, bytes, int], field: int, what: str) -> str:
        vec = self._vector(table, field, 1, what, MAX_NAME)
        if vec is None:
            return ""
        self._name_bytes_left -= vec[1]
        if self._name_bytes_left < 0:
            raise self._fail(f"names of more than {MAX_NAME_BYTES} bytes in all")
        return self.pages.get(*vec).decode("utf-8", "replace")

    def _array(self, vec: tuple[int, int] | None, fmt: str) -> np.ndarray:
        if vec is None:
            return np.zeros(0, dtype=fmt)
        width = np.dtype(fmt).itemsize
        return np.frombuffer(self.pages.get(vec[0], vec[1] * width), dtype=fmt)

    # -- the schema ------------------------------------------------------------------------
    def _tensor(self, table: tuple[int, bytes, int], prefix: str, number: int,
                buffers: tuple[int, int] | None, listed: dict[int, str]) -> None:
        what = f"{prefix}tensor {number}"
        buffer = self._scalar(table, 2, "<I", 0, what)
        if buffer == 0:
            return  # buffer 0 is the schema's empty sentinel: an activation or an input
        name = prefix + (self._string(table, 3, what) or f"tensor{number}")
        if buffers is None or buffer >= buffers[1]:
            raise self._fail(f"tensor {quote(name)}: names buffer {buffer} but the model has "
                             f"{buffers[1] if buffers else 0}")
        if buffer in listed:
            self.skipped.append((name, f"shares buffer {buffer} with {quote(listed[buffer])}"))
            return
        data = self._buffer(buffers[0], buffer, name)
        if data is None:
            return  # an empty buffer: not a constant
        shape_vec = self._vector(table, 0, 4, f"{what}.shape", MAX_DIMS)
        shape = tuple(int(d) for d in self._array(shape_vec, "<i4"))
        if any(d < 0 for d in shape):
            raise self._fail(f"tensor {quote(name)}: negative dimension in {list(shape)}")
        numel = math.prod(shape)
        if numel > MAX_NUMEL:
            raise self._fail(f"tensor {quote(name)}: {numel} values is implausible")
        type_id = self._scalar(table, 1, "<B", 0, what)
        dtype = TFLITE_TYPES.get(type_id)
        if self._field(table, 6, 4, what) is not None:
            self.skipped.append((name, "sparse storage is not read"))
            return
        if self._scalar(table, 5, "<B", 0, what):
            self.skipped.append((name, "a variable (state), not a weight"))
            return
        if dtype is None:
            self.skipped.append((name, f"type {_TYPE_NAMES.get(type_id, type_id)} is not read"))
            return
        offset, nbytes = data
        if nbytes != numel * _ITEMSIZE[dtype]:
            raise self._fail(f"tensor {quote(name)}: buffer {buffer} has {nbytes} bytes, shape "
                             f"{list(shape)} of {dtype} needs {numel * _ITEMSIZE[dtype]}")
        columns = math.prod(shape[1:]) if len(shape) > 1 else 1
        extra: dict[str, object] = {"buffer": buffer}
        if len(shape) == 4:
            # TFLite's convolution kernels are [out, h, w, in] and depthwise ones [1, h, w,
            # channels], where PyTorch and ONNX store [out, in, h, w] and [channels, 1, h,
            # w]: said here, so a fingerprint can see every format's kernels alike.
            extra["layout"] = LAYOUT_DEPTHWISE if shape[0] == 1 else LAYOUT_OHWI
        if dtype in ("I8", "U8"):
            extra.update(self._quantization(table, name, shape, what))
        listed[buffer] = name
        self.tensors.append(TensorInfo(name, shape, dtype, offset, nbytes,
                                       columns * _ITEMSIZE[dtype], extra))

    def _buffer(self, buffers_pos: int, index: int, name: str) -> tuple[int, int] | None:
        """(offset, length) of a buffer's bytes in the file, or None if it is empty."""
        table = self._table(self._indirect(buffers_pos + 4 * index), f"buffer {index}")
        data = self._vector(table, 0, 1, f"buffer {index}.data", self.size)
        if data is not None and data[1]:
            return data
        offset = self._scalar(table, 1, "<Q", 0, f"buffer {index}")
        length = self._scalar(table, 2, "<Q", 0, f"buffer {index}")
        if offset <= 1 or length == 0:
            return None
        if offset + length > self.size:
            raise self._fail(f"tensor {quote(name)}: buffer {index} wants bytes "
                             f"{offset}..{offset + length} but the file has {self.size}")
        return offset, length

    def _quantization(self, table: tuple[int, bytes, int], name: str, shape: tuple[int, ...],
                      what: str) -> dict[str, object]:
        at = self._field(table, 4, 4, what)
        if at is None:
            return {}
        quant = self._table(self._indirect(at), f"{what}.quantization")
        scale_vec = self._vector(quant, 2, 4, f"{what}.scale", MAX_SCALES)
        zero_vec = self._vector(quant, 3, 8, f"{what}.zero_point", MAX_SCALES)
        count = scale_vec[1] if scale_vec else 0
        if count == 0:
            return {}
        zeros = zero_vec[1] if zero_vec else 0
        if zeros not in (0, count):
            raise self._fail(f"tensor {quote(name)}: {count} scales but {zeros} zero points")
        quantized_dimension = self._scalar(quant, 6, "<i", 0, f"{what}.quantization")
        axis: int | None = None
        if count > 1:
            axis = quantized_dimension
            if not (0 <= axis < len(shape) and shape[axis] == count):
                raise self._fail(f"tensor {quote(name)}: {count} scales do not fit dimension "
                                 f"{axis} of shape {list(shape)}")
        self._scales_left -= count
        if self._scales_left < 0:
            raise self._fail(f"more than {MAX_SCALES} quantisation scales in all")
        scale = self._array(scale_vec, "<f4")
        zero = self._array(zero_vec, "<i8") if zeros else np.zeros(count, dtype=np.int64)
        return {"quantized": True, "scale": scale.astype(np.float32),
                "zero_point": zero.astype(np.float32), "axis": axis}

    # -- reading -----------------------------------------------------------------------------
    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        """The given rows (first axis; later axes flattened) as float32, dequantised."""
        self.check_own(tensor)
        index = row_indices(rows, tensor.rows, f"{self.source.name}: {tensor.name}")
        values = read_plain_rows(self.source, tensor, index)
        if not tensor.extra.get("quantized"):
            return values
        extra = tensor.extra  # as _quantization stored it: float32 arrays, an axis or None
        return dequantize_rows(values, index, tensor.shape, cast("np.ndarray", extra["scale"]),
                               cast("np.ndarray", extra["zero_point"]),
                               cast("int | None", extra["axis"]))


def dequantize_rows(values: np.ndarray, index: np.ndarray, shape: tuple[int, ...],
                    scale: np.ndarray, zero: np.ndarray, axis: int | None) -> Floats:
    """(q - zero) * scale for rows `index`; per tensor (`axis` None) or per channel along
    `axis` (TFLite's quantized_dimension), through the one affine rule (dequant)."""
    channels = [1] * len(shape)
    if axis is not None:
        channels[axis] = shape[axis]
    return affine_rows(values, index, tuple(shape), scale, tuple(channels), zero,
                       tuple(channels))


def open_tflite(source: ByteSource) -> TfliteReader:
    return TfliteReader(source)
