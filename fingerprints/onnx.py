"""ONNX models: the weights in `graph.initializer`, read by a minimal protobuf decoder.

No `onnx` package is needed. The decoder knows the four wire types it meets (varint, 64-bit,
length-delimited, 32-bit), checks every length against the enclosing message, and descends
only ModelProto -> graph (field 7) -> initializer (GraphProto field 5, a TensorProto) and
node (field 1, for Constant weights and DequantizeLinear axes): no generic recursion.
Payloads are located, not read: a tensor's `raw_data` (TensorProto field 9) or packed
`float_data`/`double_data` is a range of the file, read by rows like any other format.
Reads go through a small window that grows while the parse moves forward and shrinks
after a jump over tensor data, so a header walk reads little of a large file.

TensorProto fields used: dims 1, data_type 2, float_data 4, int32_data 5, int64_data 7,
name 8, raw_data 9, double_data 10, uint64_data 11, external_data 13, data_location 14.
Types: FLOAT 1, UINT8 2, INT8 3, UINT16 4, INT16 5, INT32 6, INT64 7, BOOL 9, FLOAT16 10,
DOUBLE 11, UINT32 12, UINT64 13, BFLOAT16 16, FLOAT8E4M3FN 17, FLOAT8E5M2 19. Varint-coded
data (int32_data holds int8, uint8, float16 bit patterns ...) cannot be read by row; such a
tensor has `row_nbytes` 0 and is decoded whole (with a cap) when its rows are asked for.
Tensors kept in external files (`external_data`, models over 2 GB), sparse initializers,
segments and other types are not read; they are listed in `skipped` with the reason.

int8-quantised exports (onnxruntime's quantize_dynamic / quantize_static) keep a weight
`W` as `W_quantized` (int8 or uint8) with `W_scale` and `W_zero_point`; a DequantizeLinear
node names the three explicitly and gives the axis of per-channel scales (default 1). Such
a weight is listed once, as `W`, with its integer dtype and `extra["quantized"]`, and its
rows come back dequantised, (q - zero_point) * scale, per tensor or per axis.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from fingerprints.dequant import ITEMSIZE, decode_plain
from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.tensors import (ByteSource, TensorInfo, TensorLookup, WeightFileError,
                                  read_plain_rows, row_indices)

__all__ = ["ONNX_TYPES", "OnnxReader", "decode_varints", "open_onnx"]

ONNX_TYPES = {1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL",
              10: "F16", 11: "F64", 12: "U32", 13: "U64", 16: "BF16", 17: "F8_E4M3",
              19: "F8_E5M2"}
_TYPE_NAMES = {8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 18: "FLOAT8E4M3FNUZ",
               20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1"}
# Which repeated field carries typed (non-raw) data for each type.
_TYPED_FIELD = {"F32": 4, "F64": 10, "I64": 7, "U32": 11, "U64": 11}
_FIELD_NAMES = {4: "float_data", 5: "int32_data", 7: "int64_data", 10: "double_data",
                11: "uint64_data"}

MAX_TENSORS = MAX_TENSORS_PER_FILE  # initializers and Constant node values together
# Exported LLM graphs have tens of thousands of nodes; 2^17 leaves a wide margin while a
# hostile graph of empty nodes stays a second or two of parsing.
MAX_NODES = 1 << 17
# Protobuf fields visited in the whole model: a real node has ~5-10 (inputs, outputs, op,
# attributes), an initializer ~5, so even a graph at both limits above needs ~1.7 M. At
# ~0.5 us a field this bounds the time of a model made of millions of tiny fields.
MAX_FIELDS = 1 << 21
MAX_NAME = 65536
MAX_DIMS = 64
MAX_NUMEL = 1 << 48
MAX_VARINT_BYTES = 256 << 20
MAX_SEGMENTS = 1 << 22  # unpacked repeated values (proto2 writers) per tensor
MAX_AUX_NUMEL = 1 << 24  # scales and zero points are at most one per channel
SMALL_WINDOW = 4096
LARGE_WINDOW = 1 << 20


_CHUNK_MIN = 256
_CHUNK_MAX = 64 * 1024


def _varint_at(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at buf[i] and the index after it; IndexError if it runs off the end,
    ValueError if longer than 10 bytes."""
    byte = buf[i]
    if byte < 0x80:
        return byte, i + 1
    value, shift = byte & 0x7F, 7
    while True:
        i += 1
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def decode_varints(buf: bytes) -> np.ndarray:
    """Packed protobuf varints to uint64, vectorised."""
    a = np.frombuffer(buf, dtype=np.uint8)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero((a & 0x80) == 0)
    if ends.size == 0 or ends[-1] != a.size - 1:
        raise ValueError("packed varints end in the middle of a value")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise ValueError("varint longer than 10 bytes")
    shift = (np.arange(a.size) - np.repeat(starts, lengths)) * 7
    payload = (a & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    return np.bitwise_or.reduceat(payload, starts)


class _Window:
    """Reads from a source through one cached window: grows on sequential misses, shrinks
    after a jump."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.start = 0
        self.data = b""
        self.size = SMALL_WINDOW

    def get(self, pos: int, n: int) -> bytes:
        end_cached = self.start + len(self.data)
        if self.start <= pos and pos + n <= end_cached:
            return self.data[pos - self.start:pos - self.start + n]
        self.size = min(self.size * 2, LARGE_WINDOW) if pos == end_cached else SMALL_WINDOW
        if n > self.size:
            return self.source.read(pos, n)
        self.data = self.source.read(pos, min(self.size, self.source.size - pos))
        self.start = pos
        if len(self.data) < n:
            raise WeightFileError(f"{self.source.name}: wants bytes {pos}..{pos + n} but the file "
                                  f"has {self.source.size}")
        return self.data[:n]


@dataclass
class _Tensor:
    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    raw: tuple[int, int] | None = None
    typed: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)  # field -> (wire, off, len)
    external: str | None = None
    segment: bool = False


@dataclass
class _Node:
    op_type: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    axis: int | None = None
    block_size: int | None = None
    value: _Tensor | None = None


class OnnxReader(TensorLookup):
    """An ONNX model's initializers (and Constant node tensors), rows read by range."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.window = _Window(source)
        self.ir_version: int | None = None
        self.tensors: list[TensorInfo] = []
        self.skipped: list[tuple[str, str]] = []
        self._decoded: OrderedDict[str, np.ndarray] = OrderedDict()
        self._records: dict[str, _Tensor] = {}
        initializers: list[_Tensor] = []
        nodes: list[_Node] = []
        graphs = 0
        self._node_count = 0
        self._fields_left = MAX_FIELDS
        for num, wire, a, b in self._fields(0, source.size, "model"):
            if num == 1 and wire == 0:
                self.ir_version = a
            elif num == 7 and wire == 2:
                graphs += 1
                self._graph(a, a + b, initializers, nodes)
        if graphs == 0:
            raise self._fail("no graph (ModelProto field 7): not an ONNX model")
        self._build(initializers, nodes)

    def _fail(self, what: str) -> WeightFileError:
        return WeightFileError(f"{self.source.name}: {what}")

    # -- wire format ---------------------------------------------------------------------
    def _fields(self, start: int, end: int, what: str) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, a, b): varint (value, 0); 64/32-bit (offset, 8/4);
        length-delimited (offset, length). Every length checked against `end`.

        Tags and varints are decoded from a local chunk of the message, refilled as the walk
        moves on (growing while it is sequential, small again after a jump over tensor
        data): a message of millions of tiny fields costs about a microsecond a field.
        """
        pos = start
        buf, base, chunk = b"", start, _CHUNK_MIN
        while pos < end:
            self._fields_left -= 1
            if self._fields_left < 0:
                raise self._fail(f"more than {MAX_FIELDS} protobuf fields: too many for a model")
            rel = pos - base
            if len(buf) - rel < 20 and base + len(buf) < end:
                chunk = min(chunk * 2, _CHUNK_MAX) if buf and rel <= len(buf) else _CHUNK_MIN
                buf, base, rel = self.window.get(pos, min(end - pos, chunk)), pos, 0
            try:
                tag, rel = _varint_at(buf, rel)
            except (IndexError, ValueError):
                raise self._fail(f"{what}: truncated or overlong varint at byte {pos}") from None
            pos = base + rel
            num, wire = tag >> 3, tag & 7
            if num == 0:
                raise self._fail(f"{what}: field number 0 at byte {pos}")
            if wire == 0 or wire == 2:
                try:
                    value, rel = _varint_at(buf, rel)
                except (IndexError, ValueError):
                    raise self._fail(f"{what}: truncated or overlong varint at byte {pos}") from None
                pos = base + rel
                if wire == 0:
                    yield num, wire, value, 0
                    continue
                if pos + value > end:
                    raise self._fail(f"{what}: field {num} of {value} bytes runs past its "
                                     f"message (ends at {end})")
                yield num, wire, pos, value
                pos += value
            elif wire in (1, 5):
                width = 8 if wire == 1 else 4
                if pos + width > end:
                    raise self._fail(f"{what}: field {num} runs past its message")
                yield num, wire, pos, width
                pos += width
            else:
                raise self._fail(f"{what}: unsupported wire type {wire} at byte {pos}")

    def _string(self, pos: int, length: int, what: str) -> str:
        if length > MAX_NAME:
            raise self._fail(f"{what}: a name of {length} bytes")
        return self.window.get(pos, length).decode("utf-8", "replace")

    # -- messages ------------------------------------------------------------------------
    def _graph(self, start: int, end: int, initializers: list[_Tensor], nodes: list[_Node]) -> None:
        for num, wire, a, b in self._fields(start, end, "graph"):
            if wire != 2:
                continue
            if num == 5:
                if len(initializers) + len(nodes) >= MAX_TENSORS:
                    raise self._fail(f"more than {MAX_TENSORS} initializers and constants")
                initializers.append(self._tensor(a, a + b))
            elif num == 1:
                self._node_count += 1
                if self._node_count > MAX_NODES:
                    raise self._fail(f"more than {MAX_NODES} nodes")
                node = self._node(a, a + b)
                if node is not None:
                    if len(initializers) + len(nodes) >= MAX_TENSORS:
                        raise self._fail(f"more than {MAX_TENSORS} initializers and constants")
                    nodes.append(node)
            elif num == 15:
                self.skipped.append(("<sparse initializer>", "sparse initializers are not read"))

    def _tensor(self, start: int, end: int) -> _Tensor:
        t = _Tensor()
        for num, wire, a, b in self._fields(start, end, "initializer"):
            if num == 1:
                if wire == 0:
                    t.dims.append(a - (1 << 64) if a >= 1 << 63 else a)
                elif wire == 2:
                    if b > 10 * MAX_DIMS:
                        raise self._fail("initializer: too many dims")
                    try:
                        packed = decode_varints(self.window.get(a, b)).view(np.int64)
                    except ValueError as exc:
                        raise self._fail(f"initializer: bad packed dims ({exc})") from None
                    t.dims.extend(int(v) for v in packed)
                if len(t.dims) > MAX_DIMS:
                    raise self._fail("initializer: too many dims")
            elif num == 2 and wire == 0:
                t.data_type = a
            elif num == 3:
                t.segment = True
            elif num == 8 and wire == 2:
                t.name = self._string(a, b, "initializer")
            elif num == 9 and wire == 2:
                t.raw = (a, b)
            elif num in _FIELD_NAMES:
                # packed (wire 2), or one unpacked value: varint (wire 0, a is the value),
                # float (wire 5) or double (wire 1) at offset a
                t.typed.setdefault(num, []).append((wire, a, b))
            elif num == 13 and wire == 2:
                t.external = self._external(a, a + b, t.external)
            elif num == 14 and wire == 0 and a == 1:
                t.external = t.external or "an external file"
        return t

    def _external(self, start: int, end: int, known: str | None) -> str | None:
        key = value = ""
        for num, wire, a, b in self._fields(start, end, "external_data"):
            if wire == 2 and num in (1, 2):
                text = self._string(a, min(b, 512), "external_data")
                key, value = (text, value) if num == 1 else (key, text)
        if key == "location":
            return repr(value[:200])
        return known or "an external file"

    def _node(self, start: int, end: int) -> _Node | None:
        node = _Node()
        attributes: list[tuple[int, int]] = []
        for num, wire, a, b in self._fields(start, end, "node"):
            if wire != 2:
                continue
            if num == 1:
                node.inputs.append(self._string(a, b, "node"))
            elif num == 2:
                node.outputs.append(self._string(a, b, "node"))
            elif num == 4:
                node.op_type = self._string(a, b, "node")
            elif num == 5:
                attributes.append((a, a + b))
        if node.op_type not in ("DequantizeLinear", "Constant"):
            return None
        for a_start, a_end in attributes:
            self._attribute(node, a_start, a_end)
        return node

    def _attribute(self, node: _Node, start: int, end: int) -> None:
        name = ""
        integer: int | None = None
        tensor: tuple[int, int] | None = None
        for num, wire, a, b in self._fields(start, end, "attribute"):
            if num == 1 and wire == 2:
                name = self._string(a, b, "attribute")
            elif num == 3 and wire == 0:
                integer = a - (1 << 64) if a >= 1 << 63 else a
            elif num == 5 and wire == 2:
                tensor = (a, a + b)
        if name == "axis" and integer is not None:
            node.axis = integer
        elif name == "block_size" and integer:
            node.block_size = integer
        elif name == "value" and tensor is not None and node.op_type == "Constant":
            node.value = self._tensor(*tensor)

    # -- tensors ---------------------------------------------------------------------------
    def _build(self, initializers: list[_Tensor], nodes: list[_Node]) -> None:
        for node in nodes:
            if node.op_type == "Constant" and node.value is not None and node.outputs:
                node.value.name = node.outputs[0]
                initializers.append(node.value)
        infos: dict[str, TensorInfo] = {}
        for t in initializers:
            info = self._describe(t)
            if info is None:
                continue
            if info.name in infos:
                raise self._fail(f"two initializers named {info.name!r}")
            infos[info.name] = info
            self._records[info.name] = t
        hidden: set[str] = set()
        quantized: list[TensorInfo] = []
        dequant = {n.inputs[0]: n for n in nodes if n.op_type == "DequantizeLinear" and len(n.inputs) >= 2}
        for name, info in infos.items():
            if info.dtype not in ("I8", "U8", "I16", "U16"):
                continue
            node = dequant.get(name)
            base = name[:-len("_quantized")] if name.endswith("_quantized") else name
            if node is not None:
                scale_name = node.inputs[1]
                zp_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
                if node.block_size:
                    self.skipped.append((name, "blocked quantisation (block_size) is not read"))
                    hidden.add(name)
                    continue
            elif name.endswith("_quantized") and base + "_scale" in infos:
                scale_name = base + "_scale"
                zp_name = base + "_zero_point" if base + "_zero_point" in infos else None
            else:
                continue
            if scale_name not in infos:
                continue
            q = self._quantized(info, base if base not in infos or base == name else name,
                                infos[scale_name], infos.get(zp_name) if zp_name else None,
                                node.axis if node is not None else None)
            quantized.append(q)
            hidden.update({name, scale_name} | ({zp_name} if zp_name else set()))
        self.tensors = [info for name, info in infos.items() if name not in hidden] + quantized

    def _describe(self, t: _Tensor) -> TensorInfo | None:
        label = t.name or "<unnamed initializer>"
        if t.external is not None:
            self.skipped.append((label, f"data kept outside the model, in {t.external}"))
            return None
        if t.segment:
            self.skipped.append((label, "segmented tensors are not read"))
            return None
        dtype = ONNX_TYPES.get(t.data_type)
        if dtype is None:
            kind = _TYPE_NAMES.get(t.data_type, f"type {t.data_type}")
            self.skipped.append((label, f"{kind} tensors are not read"))
            return None
        if any(d < 0 for d in t.dims):
            raise self._fail(f"initializer {label!r} has a negative dimension")
        numel = 1
        for d in t.dims:
            numel *= d
            if numel > MAX_NUMEL:
                raise self._fail(f"initializer {label!r} of shape {tuple(t.dims)} is implausibly large")
        shape = tuple(t.dims)
        itemsize = ITEMSIZE[dtype]
        row_nbytes = itemsize * math.prod(shape[1:]) if shape else itemsize
        extra: dict[str, object] = {"onnx_type": t.data_type}
        if t.raw is not None:
            offset, length = t.raw
            if length != numel * itemsize:
                raise self._fail(f"initializer {label!r}: raw_data has {length} bytes, shape "
                                 f"{shape} of {dtype} needs {numel * itemsize}")
            extra["storage"] = "raw_data"
            return TensorInfo(label, shape, dtype, offset, length, row_nbytes, extra)
        fields = {num: segs for num, segs in t.typed.items() if segs}
        if not fields:
            if numel == 0:
                return TensorInfo(label, shape, dtype, 0, 0, row_nbytes, {**extra, "storage": "empty"})
            self.skipped.append((label, "no data"))
            return None
        if len(fields) > 1:
            raise self._fail(f"initializer {label!r} carries data in several fields")
        (num, segs), = fields.items()
        expected = _TYPED_FIELD.get(dtype, 5)
        if num != expected:
            raise self._fail(f"initializer {label!r}: {dtype} data in {_FIELD_NAMES[num]}, expected "
                             f"{_FIELD_NAMES[expected]}")
        extra["storage"] = _FIELD_NAMES[num]
        fixed = {4: 4, 10: 8}.get(num)
        if fixed and len(segs) == 1 and segs[0][0] == 2:
            _, offset, length = segs[0]
            if length != numel * fixed:
                raise self._fail(f"initializer {label!r}: {_FIELD_NAMES[num]} has {length // fixed} "
                                 f"values, shape {shape} needs {numel}")
            return TensorInfo(label, shape, dtype, offset, length, row_nbytes, extra)
        if len(segs) > MAX_SEGMENTS:
            raise self._fail(f"initializer {label!r}: more than {MAX_SEGMENTS} unpacked values")
        total = sum(seg[2] if seg[0] != 0 else 10 for seg in segs)
        if total > MAX_VARINT_BYTES:
            raise self._fail(f"initializer {label!r}: {total} bytes of {_FIELD_NAMES[num]}, over "
                             f"the limit of {MAX_VARINT_BYTES}")
        extra["segments"] = segs
        extra["numel"] = numel
        offset = segs[0][1] if segs[0][0] != 0 else 0
        return TensorInfo(label, shape, dtype, offset, total, 0, extra)

    def _quantized(self, q: TensorInfo, name: str, scale: TensorInfo, zero: TensorInfo | None,
                   axis: int | None) -> TensorInfo:
        scale_v = self._whole(scale, aux=True).reshape(-1)
        zero_v = self._whole(zero, aux=True).reshape(-1) if zero is not None else \
            np.zeros(1, dtype=np.float32)
        if scale.dtype not in ("F32", "F16", "BF16", "F64"):
            raise self._fail(f"{scale.name}: a quantisation scale must be a float, not {scale.dtype}")
        if zero_v.size != scale_v.size:
            raise self._fail(f"{q.name}: {scale_v.size} scales but {zero_v.size} zero points")
        ndim = len(q.shape)
        if scale_v.size == 1:
            axis = None
        else:
            if axis is None:  # no DequantizeLinear node: infer; ONNX's default axis is 1
                matches = [i for i, d in enumerate(q.shape) if d == scale_v.size]
                axis = 1 if 1 in matches else (matches[0] if matches else None)
            if axis is not None and axis < 0:
                axis += ndim
            if axis is None or not 0 <= axis < ndim or q.shape[axis] != scale_v.size:
                raise self._fail(f"{q.name}: {scale_v.size} scales fit no axis of shape {q.shape}")
        extra = {**q.extra, "quantized": True, "scale": scale_v, "zero_point": zero_v,
                 "axis": axis, "onnx_names": (q.name, scale.name, zero.name if zero else None)}
        return TensorInfo(name, q.shape, q.dtype, q.offset, q.nbytes, q.row_nbytes, extra)

    # -- reading -----------------------------------------------------------------------------
    def _whole(self, tensor: TensorInfo, aux: bool = False) -> np.ndarray:
        numel = math.prod(tensor.shape)
        if aux and numel > MAX_AUX_NUMEL:
            raise self._fail(f"{tensor.name}: {numel} quantisation parameters is implausible")
        return self._plain_rows(tensor, range(tensor.rows)).reshape(-1)

    def _varint_values(self, tensor: TensorInfo) -> np.ndarray:
        cached = self._decoded.get(tensor.name)
        if cached is not None:
            self._decoded.move_to_end(tensor.name)
            return cached
        values: list[np.ndarray] = []
        for wire, a, b in tensor.extra["segments"]:  # type: ignore[union-attr]
            if wire == 0:
                values.append(np.array([a], dtype=np.uint64))
                continue
            raw = self.source.read(a, b)
            if wire == 2:
                if tensor.extra["storage"] == "float_data":
                    values.append(np.frombuffer(raw, "<f4").astype(np.float64))
                elif tensor.extra["storage"] == "double_data":
                    values.append(np.frombuffer(raw, "<f8"))
                else:
                    try:
                        values.append(decode_varints(raw))
                    except ValueError as exc:
                        raise self._fail(f"{tensor.name}: {exc}") from None
            elif wire == 5:
                values.append(np.frombuffer(raw, "<f4").astype(np.float64))
            elif wire == 1:
                values.append(np.frombuffer(raw, "<f8"))
        flat = np.concatenate(values) if values else np.zeros(0)
        if flat.size != tensor.extra["numel"]:
            raise self._fail(f"{tensor.name}: {tensor.extra['storage']} "
                             f"has {flat.size} values, shape {tensor.shape} needs {tensor.extra['numel']}")
        result = _typed_to_float32(flat, tensor.dtype)
        self._decoded[tensor.name] = result
        while sum(v.nbytes for v in self._decoded.values()) > (256 << 20) and len(self._decoded) > 1:
            self._decoded.popitem(last=False)
        return result

    def _plain_rows(self, tensor: TensorInfo, index: np.ndarray) -> np.ndarray:
        """Rows `index` (already checked) of the values as stored, before any dequantising."""
        if "segments" in tensor.extra:
            return self._varint_values(tensor).reshape(tensor.rows, tensor.columns)[index]
        if tensor.nbytes == 0:
            return np.zeros((len(index), tensor.columns), dtype=np.float32)
        return read_plain_rows(self.source, tensor, index)

    def read_rows(self, tensor: TensorInfo, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        index = row_indices(rows, tensor.rows, f"{self.source.name}: {tensor.name}")
        values = self._plain_rows(tensor, index)
        if not tensor.extra.get("quantized"):
            return values
        scale = tensor.extra["scale"]
        zero = tensor.extra["zero_point"]
        axis = tensor.extra["axis"]
        if axis is None:
            return ((values - zero[0]) * scale[0]).astype(np.float32)
        if axis == 0:
            return ((values - zero[index][:, None]) * scale[index][:, None]).astype(np.float32)
        inner = list(tensor.shape[1:])
        shape = [1] * len(inner)
        shape[axis - 1] = inner[axis - 1]
        blocks = values.reshape(len(index), *inner)
        out = (blocks - zero.reshape(shape)) * scale.reshape(shape)  # type: ignore[union-attr]
        return out.reshape(len(index), -1).astype(np.float32)


def _typed_to_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    """Values from a typed field (varints as uint64, or floats) to float32."""
    if values.dtype.kind == "f":
        return values.astype(np.float32)
    signed = values.view(np.int64)
    if dtype in ("F16", "BF16"):
        return decode_plain(values.astype("<u2").tobytes(), dtype)
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return decode_plain(values.astype(np.uint8).tobytes(), dtype)
    if dtype in ("U64", "U32"):
        return values.astype(np.float32)
    if dtype in ("U8", "U16", "BOOL"):
        return (values & np.uint64(0xFFFF)).astype(np.float32)
    return signed.astype(np.float32)  # I8 I16 I32 I64: sign-extended varints


def open_onnx(source: ByteSource) -> OnnxReader:
    return OnnxReader(source)
