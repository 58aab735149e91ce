"""ONNX models: the weights in the graph's initializers, read by a minimal protobuf decoder.

No `onnx` package is needed. The decoder knows the four wire types it meets (varint, 64-bit,
length-delimited, 32-bit), checks every length against the enclosing message, and descends
only ModelProto -> graph (field 7) -> initializer (GraphProto field 5, a TensorProto) and
node (field 1) -> attribute (field 5), whose `g` / `graphs` (control flow: `If`, `Loop`,
`Scan`) are graphs again, to at most MAX_GRAPH_DEPTH levels. Weights inside a subgraph are
named by the path of the nodes that hold it (`Loop_3.body::If_0.then_branch::W`), so names
stay unique and stable however a branch names its tensors.
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
Tensors kept in an external file (`data_location` EXTERNAL, models over 2 GB) are read
from that file through `open_sibling(location)`: for a local model the folder it lies in
(never an absolute path, `..` or a symlink out of it), for an archive member or a remote
file whatever the caller can open beside it. Their `offset` and `length` are checked
against the tensor's shape and the side file's size. Sparse initializers, segments and
other types are not read; they are listed in `skipped` with the reason.

int8 exports keep a weight as integers and dequantise it in the graph; the reader follows
the graph from each integer initializer to the operation that gives it its scale, since
names are often anonymised (`val_49_q`, `onnx::MatMul_470`):
  - `DequantizeLinear(q, scale, zero_point, axis=1)` (QDQ exports), `QLinearMatMul` and
    `QLinearConv` (the weight's scale and zero point are inputs 4 and 5), `Gather(q)` ->
    `DequantizeLinear` (a quantised embedding table);
  - `Cast(q)` [-> `Sub(zero_point)`] -> `Mul(scale)` with numpy broadcasting (torch.onnx
    exports of hand-quantised models: a [1, out] or [rows, 1] scale), or `Cast(q)` as a
    MatMul's right operand whose product a `Mul` scales per output column;
  - `MatMulInteger(a, q, a_zero, q_zero)` / `ConvInteger` -> `Cast` -> `Mul(s)`, where `s`
    is the weight's scale initializer or `Mul(activation scale, weight scale)`
    (onnxruntime's quantize_dynamic);
  - failing all of these, onnxruntime's names: `W_quantized` with `W_scale` and
    `W_zero_point`.
Such a weight is listed once with its integer dtype and `extra["quantized"]`; its rows come
back dequantised, (q - zero_point) * scale, per tensor, per axis or per broadcast block.
`extra["dequantized"]` says how. Every 2-D weight also says how the graph uses it:
`extra["onnx_use"]` (`MatMul.B`, `Gemm.B`, `Gather.data`, ...) and `extra["transposed"]`,
True when it is stored [in, out] (the right operand of a MatMul, of a Gemm without
transB), False when stored [out, in] as PyTorch keeps it (an embedding table, a Gemm with
transB, a weight that a Transpose turns round before its MatMul), absent when unknown.
"""

from __future__ import annotations

import math
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from numpy.typing import NDArray

from fingerprints.dequant import ITEMSIZE, Floats, affine_rows, decode_plain
from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.tensors import (
    ByteSource,
    FileSource,
    Rows,
    TensorInfo,
    TensorLookup,
    WeightFileError,
    _CountedSource,
    quote,
    read_plain_rows,
    row_indices,
)

__all__ = ["ONNX_TYPES", "OnnxReader", "OutsideFolder", "decode_varints", "local_siblings",
           "open_onnx"]

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
    external: dict[str, str] = field(default_factory=dict)  # external_data key -> value
    location_external: bool = False  # data_location == EXTERNAL
    segment: bool = False
    scope: int = 0


@dataclass
class _Node:
    op_type: str = ""
    name: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    ints: dict[str, int] = field(default_factory=dict)  # the integer attributes read
    value: _Tensor | None = None
    scope: int = 0


# Integer attributes the dequantising and layout rules read; others are not kept.
_INT_ATTRIBUTES = ("axis", "block_size", "to", "transA", "transB")
# Subgraph scopes a weight may sit in. Real exports nest a Loop in an If in a Loop at most;
# each level is bounded by the shared field/node/tensor counts too, so depth only has to
# keep the Python recursion (and a hostile file's path names) short.
MAX_GRAPH_DEPTH = 16
# A real model has a handful of subgraphs per layer at most; the count and the label
# length keep the path names of a hostile file's scopes to tens of MB at worst.
MAX_SUBGRAPHS = 1 << 14
MAX_LABEL = 128
MAX_EXTERNAL_FILES = 4096  # one file per tensor is the most an exporter writes
MAX_LOCATION = 1024
_FLOAT_CASTS = {1, 10, 11, 16}  # Cast(to=FLOAT / FLOAT16 / DOUBLE / BFLOAT16)
# Users that tell a weight's role (its layout, or a kernel whose layout is fixed).
_LAYOUT_OPS = ("MatMul", "Gemm", "Gather", "Conv", "ConvTranspose", "LSTM", "GRU", "RNN")
_INTEGER_TYPES = ("I8", "U8", "I16", "U16", "I32")
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


class OutsideFolder(WeightFileError):
    """A side file that resolves outside the model's folder: hostile, never just missing."""


def local_siblings(folder: str | os.PathLike[str]) -> Callable[[str], ByteSource]:
    """An `open_sibling` for a model on disk: files inside `folder` only.

    The location is a name from a file we do not trust: absolute paths, `..` and
    symlinks resolving outside the folder are refused (OutsideFolder; an opener for an
    archive or a remote folder raises it too for a name it will not open). Each read opens the file afresh
    (a model may have one side file per tensor; holding them open would spend descriptors).
    """
    root = os.path.realpath(folder)

    def open_sibling(location: str) -> ByteSource:
        path = os.path.realpath(os.path.join(root, location))
        if os.path.commonpath([root, path]) != root or path == root:
            raise OutsideFolder(f"external data {quote(location)} resolves outside "
                                  f"the model's folder")
        return _SiblingFile(path, location)

    return open_sibling


class _SiblingFile(_CountedSource):
    """A side file of external data, opened for each read (see `local_siblings`)."""

    def __init__(self, path: str, name: str):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise WeightFileError(f"{name}: cannot open: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise WeightFileError(f"{name}: not a regular file")
        self._path, self._name, self._size = path, name, st.st_size
        self.bytes_read = 0

    def _read(self, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise WeightFileError(f"{self._name}: cannot open: {exc.strerror}") from None
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise WeightFileError(f"{self._name}: file shrank while being read")
        return data


def _safe_location(location: str) -> str | None:
    """Why an external-data location may not be opened beside the model, or None."""
    if not location:
        return "is empty"
    if len(location) > MAX_LOCATION or "\0" in location:
        return "is not a file name"
    if location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        return "is an absolute path"
    if any(part == ".." for part in location.replace("\\", "/").split("/")):
        return "leaves the model's folder"
    return None


class OnnxReader(TensorLookup):
    """An ONNX model's initializers (and Constant node tensors), rows read by range.

    `open_sibling(location)` opens a file of external data kept beside the model; without
    it a FileSource's own folder is used, and any other source's external tensors are
    listed in `skipped`. `sources` is the model and every side file opened, for counting
    the bytes a scan read.
    """

    def __init__(self, source: ByteSource,
                 open_sibling: Callable[[str], ByteSource] | None = None):
        self.source = source
        self.window = _Window(source)
        self.ir_version: int | None = None
        self.tensors: list[TensorInfo] = []
        self.skipped: list[tuple[str, str]] = []
        if open_sibling is None and isinstance(source, FileSource):
            open_sibling = local_siblings(os.path.dirname(os.path.abspath(source.name)))
        self._open_sibling = open_sibling
        self._siblings: dict[str, ByteSource] = {}
        self._decoded: OrderedDict[str, Floats] = OrderedDict()
        # scope id -> (parent scope id, name prefix); scope 0 is the main graph
        self._scopes: list[tuple[int, str]] = [(-1, "")]
        initializers: list[_Tensor] = []
        nodes: list[_Node] = []
        graphs = 0
        self._node_count = self._tensor_count = 0
        self._fields_left = MAX_FIELDS
        for num, wire, a, b in self._fields(0, source.size, "model"):
            if num == 1 and wire == 0:
                self.ir_version = a
            elif num == 7 and wire == 2:
                graphs += 1
                self._graph(a, a + b, 0, initializers, nodes)
        if graphs == 0:
            raise self._fail("no graph (ModelProto field 7): not an ONNX model")
        self._build(initializers, nodes)

    @property
    def sources(self) -> list[ByteSource]:
        return [self.source, *self._siblings.values()]

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
    def _graph(self, start: int, end: int, scope: int, initializers: list[_Tensor],
               nodes: list[_Node]) -> None:
        index = 0
        for num, wire, a, b in self._fields(start, end, "graph"):
            if wire != 2:
                continue
            if num == 5:
                self._count_tensor()
                t = self._tensor(a, a + b)
                t.scope = scope
                initializers.append(t)
            elif num == 1:
                self._node_count += 1
                if self._node_count > MAX_NODES:
                    raise self._fail(f"more than {MAX_NODES} nodes")
                nodes.append(self._node(a, a + b, scope, index, initializers, nodes))
                index += 1
            elif num == 15:
                self.skipped.append(("<sparse initializer>", "sparse initializers are not read"))

    def _count_tensor(self) -> None:
        # initializers and Constant values, in every subgraph; other nodes count as nodes
        self._tensor_count += 1
        if self._tensor_count > MAX_TENSORS:
            raise self._fail(f"more than {MAX_TENSORS} initializers and constants")

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
                if len(t.external) >= 8:
                    raise self._fail("initializer: more than 8 external_data entries")
                self._external(a, a + b, t.external)
            elif num == 14 and wire == 0 and a == 1:
                t.location_external = True
        return t

    def _external(self, start: int, end: int, into: dict[str, str]) -> None:
        key = value = ""
        for num, wire, a, b in self._fields(start, end, "external_data"):
            if wire == 2 and num in (1, 2):
                if b > MAX_LOCATION:
                    raise self._fail(f"external_data: a value of {b} bytes")
                text = self._string(a, b, "external_data")
                key, value = (text, value) if num == 1 else (key, text)
        into[key] = value

    def _node(self, start: int, end: int, scope: int, index: int,
              initializers: list[_Tensor], nodes: list[_Node]) -> _Node:
        node = _Node(scope=scope)
        attributes: list[tuple[int, int]] = []
        for num, wire, a, b in self._fields(start, end, "node"):
            if wire != 2:
                continue
            if num == 1:
                node.inputs.append(self._string(a, b, "node"))
            elif num == 2:
                node.outputs.append(self._string(a, b, "node"))
            elif num == 3:
                node.name = self._string(a, b, "node")
            elif num == 4:
                node.op_type = self._string(a, b, "node")
            elif num == 5:
                attributes.append((a, a + b))
        label = node.name or f"{node.op_type}#{index}"
        for a_start, a_end in attributes:
            self._attribute(node, label, a_start, a_end, initializers, nodes)
        return node

    def _attribute(self, node: _Node, label: str, start: int, end: int,
                   initializers: list[_Tensor], nodes: list[_Node]) -> None:
        name = ""
        integer: int | None = None
        tensor: tuple[int, int] | None = None
        graphs: list[tuple[int, int]] = []
        for num, wire, a, b in self._fields(start, end, "attribute"):
            if num == 1 and wire == 2:
                name = self._string(a, b, "attribute")
            elif num == 3 and wire == 0:
                integer = a - (1 << 64) if a >= 1 << 63 else a
            elif num == 5 and wire == 2:
                tensor = (a, a + b)
            elif num in (6, 11) and wire == 2:  # g (GRAPH), graphs (GRAPHS)
                graphs.append((a, a + b))
        if name in _INT_ATTRIBUTES and integer is not None:
            node.ints[name] = integer
        elif name == "value" and tensor is not None and node.op_type == "Constant":
            self._count_tensor()
            node.value = self._tensor(*tensor)
        for k, (g_start, g_end) in enumerate(graphs):
            depth, parent = 1, node.scope
            while parent > 0:
                depth, parent = depth + 1, self._scopes[parent][0]
            if depth > MAX_GRAPH_DEPTH:
                raise self._fail(f"subgraphs nested more than {MAX_GRAPH_DEPTH} deep")
            if len(self._scopes) > MAX_SUBGRAPHS:
                raise self._fail(f"more than {MAX_SUBGRAPHS} subgraphs")
            suffix = f"[{k}]" if len(graphs) > 1 else ""
            prefix = f"{self._scopes[node.scope][1]}{label[:MAX_LABEL]}.{name[:MAX_LABEL] or '?'}{suffix}::"
            self._scopes.append((node.scope, prefix))
            self._graph(g_start, g_end, len(self._scopes) - 1, initializers, nodes)

    # -- tensors ---------------------------------------------------------------------------
    def _within(self, scope: int, outer: int) -> bool:
        """Whether `scope` is `outer` or nested in it (a subgraph sees its parents' names)."""
        while scope > outer:
            scope = self._scopes[scope][0]
        return scope == outer

    def _build(self, initializers: list[_Tensor], nodes: list[_Node]) -> None:
        for node in nodes:
            if node.op_type == "Constant" and node.value is not None and node.outputs:
                node.value.name = node.outputs[0]
                node.value.scope = node.scope
                initializers.append(node.value)
        self._consumers: dict[str, list[tuple[_Node, int]]] = {}
        self._made_by: dict[str, list[_Node]] = {}
        for node in nodes:
            for name in node.outputs:
                self._made_by.setdefault(name, []).append(node)
            for i, name in enumerate(node.inputs):
                if name:
                    self._consumers.setdefault(name, []).append((node, i))
        # (scope, name in the file) -> TensorInfo; names shown are scope-qualified
        infos: dict[tuple[int, str], TensorInfo] = {}
        shown: set[str] = set()
        for t in initializers:
            label = self._scopes[t.scope][1] + (t.name or "<unnamed initializer>")
            info = self._describe(t, label)
            if info is None:
                continue
            if (t.scope, t.name) in infos:
                raise self._fail(f"two initializers named {quote(label)}")
            if label in shown:  # two scopes that print alike (nodes of one name)
                n = 2
                while f"{label}#{n}" in shown:
                    n += 1
                label = f"{label}#{n}"
                info = TensorInfo(label, info.shape, info.dtype, info.offset, info.nbytes,
                                  info.row_nbytes, info.extra)
            shown.add(label)
            infos[(t.scope, t.name)] = info
        self._infos = infos
        hidden: set[tuple[int, str]] = set()
        replaced: dict[tuple[int, str], TensorInfo] = {}
        for key, info in infos.items():
            scope, raw = key
            if info.dtype in _INTEGER_TYPES:
                found = self._dequantizer(scope, raw, info, shown)
                if found is not None:
                    new, used = found
                    replaced[key] = new
                    hidden.update(used)
                    continue
            if len(info.shape) == 2:
                replaced[key] = self._with_use(info, self._use(scope, raw))
        self.tensors = [replaced.get(key, info) for key, info in infos.items()
                        if key not in hidden]

    def _lookup(self, scope: int, name: str) -> tuple[tuple[int, str], TensorInfo] | None:
        """The initializer `name` as seen from `scope`: its own, or an enclosing graph's."""
        while scope >= 0:
            info = self._infos.get((scope, name))
            if info is not None:
                return (scope, name), info
            scope = self._scopes[scope][0]
        return None

    def _users(self, scope: int, name: str) -> list[tuple[_Node, int]]:
        return [(n, i) for n, i in self._consumers.get(name, ()) if self._within(n.scope, scope)]

    def _only_user(self, scope: int, name: str, op_types: tuple[str, ...]) -> tuple[_Node, int] | None:
        users = self._users(scope, name)
        if len(users) == 1 and users[0][0].op_type in op_types:
            return users[0]
        return None

    def _float_operand(self, scope: int, node: _Node, index: int, floats_only: bool = True
                       ) -> tuple[tuple[int, str], TensorInfo] | None:
        """The (float) initializer that is binary `node`'s other operand (not input `index`)."""
        if len(node.inputs) != 2:
            return None
        found = self._lookup(scope, node.inputs[1 - index])
        if found is not None and (not floats_only or found[1].dtype in _FLOAT_TYPES):
            return found
        return None

    def _dequantizer(self, scope: int, raw: str, q: TensorInfo, shown: set[str]
                     ) -> tuple[TensorInfo, set[tuple[int, str]]] | None:
        """The dequantised view of integer initializer `raw`, found by following the graph
        from it to its scale (module docstring), and the keys of the scale and zero point
        it folds in; None if none."""

        def aux(name: str | None) -> tuple[tuple[int, str], TensorInfo] | None:
            return self._lookup(scope, name) if name else None

        for node, i in self._users(scope, raw):
            op = node.op_type
            scale = zero = None
            name, use, method, axis = q.name, None, op, None
            if op == "DequantizeLinear" and i == 0 and len(node.inputs) >= 2:
                if node.ints.get("block_size"):
                    self.skipped.append((q.name, "blocked quantisation (block_size) is not read"))
                    return None
                scale = aux(node.inputs[1])
                zero = aux(node.inputs[2] if len(node.inputs) > 2 else None)
                axis = node.ints.get("axis", 1)
                name = self._base_name(scope, raw, name)
                use = self._use(node.scope, node.outputs[0]) if node.outputs else None
            elif op == "Gather" and i == 0 and node.ints.get("axis", 0) == 0 and node.outputs:
                # onnxruntime's quantised embedding: the rows are gathered, then dequantised
                step = self._only_user(node.scope, node.outputs[0], ("DequantizeLinear",))
                if step is None or step[1] != 0 or len(step[0].inputs) < 2:
                    continue
                scale = aux(step[0].inputs[1])
                zero = aux(step[0].inputs[2] if len(step[0].inputs) > 2 else None)
                axis = step[0].ints.get("axis", 1)
                if scale is not None and math.prod(scale[1].shape) != 1 and \
                        axis % max(len(q.shape), 1) == 0:
                    continue  # a scale per gathered row says nothing about the table's rows
                method, use = "Gather+DequantizeLinear", ("Gather.data", False)
                name = self._base_name(scope, raw, name)
            elif op in ("QLinearMatMul", "QLinearConv") and i == 3 and len(node.inputs) >= 6:
                scale, zero = aux(node.inputs[4]), aux(node.inputs[5])
                axis = 0 if op == "QLinearConv" else -1
                use = ("MatMul.B", True) if op == "QLinearMatMul" else ("Conv.W", False)
            elif op in ("MatMulInteger", "ConvInteger") and i == 1:
                zero = aux(node.inputs[3] if len(node.inputs) > 3 else None)
                scale = self._output_scale(node)
                axis = -1 if op == "MatMulInteger" else 0
                use = ("MatMul.B", True) if op == "MatMulInteger" else ("Conv.W", False)
                name = self._base_name(scope, raw, name)
            elif op == "Cast" and i == 0 and node.ints.get("to") in _FLOAT_CASTS and node.outputs:
                value, method = node.outputs[0], "Cast"
                step = self._only_user(node.scope, value, ("Sub",))
                if step is not None and step[1] == 0:
                    zero = self._float_operand(node.scope, *step, floats_only=False)
                    if zero is not None and step[0].outputs:
                        value, method = step[0].outputs[0], "Cast+Sub"
                step = self._only_user(node.scope, value, ("Mul", "MatMul"))
                if step is None or not step[0].outputs:
                    continue
                if step[0].op_type == "MatMul":
                    # the scale applied to the product instead: per output column of W
                    if step[1] != 1:
                        continue
                    after = self._only_user(node.scope, step[0].outputs[0], ("Mul",))
                    if after is None:
                        continue
                    scale = self._float_operand(node.scope, *after)
                    method, axis, use = method + "+MatMul+Mul", -1, ("MatMul.B", True)
                else:
                    scale = self._float_operand(node.scope, *step)
                    method += "+Mul"
                    value = step[0].outputs[0]
                    if self._lookup(scope, value) is None and \
                            self._scopes[scope][1] + value not in shown:
                        name = self._scopes[scope][1] + value
                    use = self._use(step[0].scope, value)
            else:
                continue
            if scale is None:
                continue
            if zero is not None and zero[1].dtype not in _INTEGER_TYPES + _FLOAT_TYPES:
                continue
            info = self._quantized(q, name, scale[1], zero[1] if zero else None, axis, method)
            info = self._with_use(info, use)
            return info, {scale[0]} | ({zero[0]} if zero else set())
        # onnxruntime's names, when no node says more (a model cut out of its graph)
        base = raw.removesuffix("_quantized")
        if base and base != raw:
            scale = self._lookup(scope, base + "_scale")
            zero = self._lookup(scope, base + "_zero_point")
            if scale is not None and scale[1].dtype in _FLOAT_TYPES:
                name = self._base_name(scope, raw, q.name)
                info = self._quantized(q, name, scale[1], zero[1] if zero else None, None, "names")
                return info, {scale[0]} | ({zero[0]} if zero else set())
        return None

    def _base_name(self, scope: int, raw: str, default: str) -> str:
        """onnxruntime's `W_quantized` is shown as `W` unless an initializer has that name."""
        base = raw.removesuffix("_quantized")
        if base and base != raw and self._lookup(scope, base) is None:
            return self._scopes[scope][1] + base
        return default

    def _output_scale(self, node: _Node) -> tuple[tuple[int, str], TensorInfo] | None:
        """The weight scale applied after an integer MatMul/Conv: its output goes through a
        Cast to a Mul by an initializer, or by Mul(activation scale, weight scale)."""
        if not node.outputs:
            return None
        step = self._only_user(node.scope, node.outputs[0], ("Cast",))
        if step is None or not step[0].outputs:
            return None
        for mul, i in self._users(node.scope, step[0].outputs[0]):
            if mul.op_type != "Mul" or len(mul.inputs) != 2:
                continue
            direct = self._float_operand(mul.scope, mul, i)
            if direct is not None:
                return direct
            other = mul.inputs[1 - i]
            for producer in self._producers(mul.scope, other):
                if producer.op_type == "Mul" and len(producer.inputs) == 2:
                    found = [self._lookup(mul.scope, x) for x in producer.inputs]
                    floats = [f for f in found if f is not None and f[1].dtype in _FLOAT_TYPES]
                    if len(floats) == 1:
                        return floats[0]
        return None

    def _producers(self, scope: int, name: str) -> list[_Node]:
        return [n for n in self._made_by.get(name, ()) if self._within(scope, n.scope)]

    def _use(self, scope: int, value: str, depth: int = 0) -> tuple[str, bool | None] | None:
        """How the graph uses weight `value`, and whether it is stored [in, out]: the first
        user that says (a MatMul, Gemm, Gather ... before a Shape or an Add)."""
        fallback = None
        for node, i in self._users(scope, value):
            use = self._use_by(node, i, depth)
            if use is not None and (use[1] is not None or "." in use[0] and
                                    use[0].split("+")[-1].split(".")[0] in _LAYOUT_OPS):
                return use
            fallback = fallback or use
        return fallback

    def _use_by(self, node: _Node, i: int, depth: int) -> tuple[str, bool | None] | None:
        op = node.op_type
        if op == "MatMul":
            return f"MatMul.{'AB'[min(i, 1)]}", i == 1
        if op == "Gemm" and i < 2:
            flag = bool(node.ints.get("transB" if i == 1 else "transA", 0))
            return f"Gemm.{'AB'[i]}", (i == 1) != flag
        if op == "Gather" and i == 0:
            return "Gather.data", False
        if op in ("Conv", "ConvTranspose") and i == 1:
            return f"{op}.W", None
        if op in ("LSTM", "GRU", "RNN") and i in (1, 2):
            return f"{op}.{'WR'[i - 1]}", None
        if op in ("Transpose", "Identity", "Cast") and node.outputs and depth < 4:
            inner = self._use(node.scope, node.outputs[0], depth + 1)
            if inner is None:
                return None
            flipped = None if inner[1] is None else (not inner[1] if op == "Transpose" else inner[1])
            return f"{op}+{inner[0]}", flipped
        return f"{op}.{i}", None

    @staticmethod
    def _with_use(info: TensorInfo, use: tuple[str, bool | None] | None) -> TensorInfo:
        if use is None:
            return info
        extra = {**info.extra, "onnx_use": use[0]}
        if use[1] is not None and len(info.shape) == 2:
            extra["transposed"] = use[1]
        return TensorInfo(info.name, info.shape, info.dtype, info.offset, info.nbytes,
                          info.row_nbytes, extra)

    def _describe(self, t: _Tensor, label: str) -> TensorInfo | None:
        if t.location_external or t.external:
            return self._describe_external(t, label)
        if t.segment:
            self.skipped.append((label, "segmented tensors are not read"))
            return None
        checked = self._checked(t, label)
        if checked is None:
            return None
        shape, dtype, numel, itemsize, row_nbytes = checked
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

    def _checked(self, t: _Tensor, label: str) -> tuple[tuple[int, ...], str, int, int, int] | None:
        """Shape, dtype, element count, item size and row size; None (noted) for a type not read."""
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
        return shape, dtype, numel, itemsize, row_nbytes

    def _describe_external(self, t: _Tensor, label: str) -> TensorInfo | None:
        location = t.external.get("location")
        if location is None:
            raise self._fail(f"initializer {label!r}: external data without a location")
        why = _safe_location(location)
        if why is not None:
            raise self._fail(f"initializer {label!r}: external data location {quote(location)} {why}")
        if self._open_sibling is None:
            self.skipped.append((label, f"data kept outside the model, in {quote(location)}, "
                                        "which cannot be opened from here"))
            return None
        checked = self._checked(t, label)
        if checked is None:
            return None
        shape, dtype, numel, itemsize, row_nbytes = checked
        try:
            offset = int(t.external.get("offset", "0"))
            length = int(t.external.get("length", str(numel * itemsize)))
        except ValueError:
            raise self._fail(f"initializer {label!r}: external data offset/length are not "
                             "numbers") from None
        if offset < 0 or length != numel * itemsize:
            raise self._fail(f"initializer {label!r}: external data of {length} bytes at {offset}, "
                             f"shape {shape} of {dtype} needs {numel * itemsize}")
        sibling = self._siblings.get(location)
        if sibling is None:
            if len(self._siblings) >= MAX_EXTERNAL_FILES:
                raise self._fail(f"more than {MAX_EXTERNAL_FILES} external data files")
            try:
                sibling = self._open_sibling(location)
            except OutsideFolder as exc:
                raise self._fail(f"initializer {label!r}: {exc}") from None
            except (WeightFileError, OSError) as exc:  # missing: the rest is still readable
                self.skipped.append((label, f"data kept outside the model, in {quote(location)}: "
                                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"))
                return None
            self._siblings[location] = sibling
        if offset + length > sibling.size:
            raise self._fail(f"initializer {label!r}: external data {offset}..{offset + length} "
                             f"runs past the end of {quote(location)} ({sibling.size} bytes)")
        extra = {"onnx_type": t.data_type, "storage": "external", "external": location}
        return TensorInfo(label, shape, dtype, offset, length, row_nbytes, extra)

    def _quantized(self, q: TensorInfo, name: str, scale: TensorInfo, zero: TensorInfo | None,
                   axis: int | None, method: str) -> TensorInfo:
        """`q` dequantised by `scale` (and `zero`): per tensor; per `axis` for a 1-D scale
        (DequantizeLinear, QLinear*, integer MatMul/Conv; -1 is the last axis); otherwise by
        numpy broadcasting of the scale's own shape (a Mul in the graph)."""
        if scale.dtype not in _FLOAT_TYPES:
            raise self._fail(f"{scale.name}: a quantisation scale must be a float, not {scale.dtype}")
        scale_v = self._whole(scale, aux=True)
        zero_v = self._whole(zero, aux=True) if zero is not None else np.zeros(1, dtype=np.float32)
        ndim = len(q.shape)

        def broadcast(values: np.ndarray, own: tuple[int, ...], what: str) -> tuple[int, ...]:
            if values.size == 1:
                return (1,) * ndim
            if axis is not None and sum(d != 1 for d in own) <= 1:
                a = axis + ndim if axis < 0 else axis
                if not 0 <= a < ndim or q.shape[a] != values.size:
                    raise self._fail(f"{q.name}: {values.size} {what} fit no axis of shape {q.shape}")
                out = [1] * ndim
                out[a] = values.size
                return tuple(out)
            if len(own) > ndim or any(d not in (1, full) for d, full in
                                      zip(own[::-1], q.shape[::-1])):
                raise self._fail(f"{q.name}: {what} of shape {own} do not broadcast to {q.shape}")
            return (1,) * (ndim - len(own)) + tuple(own)

        scale_shape = broadcast(scale_v, scale.shape, "scales")
        zero_shape = broadcast(zero_v, zero.shape if zero is not None else (1,), "zero points")
        per = [i for i, d in enumerate(scale_shape) if d != 1]
        extra = {**q.extra, "quantized": True, "scale": scale_v, "zero_point": zero_v,
                 "scale_shape": scale_shape, "zero_shape": zero_shape,
                 "axis": per[0] if len(per) == 1 else None,
                 "dequantized": f"{method}, " + ("per tensor" if not per else
                                                 f"per axis {per[0]}" if len(per) == 1 else
                                                 f"scale of shape {scale.shape}"),
                 "onnx_names": (q.name, scale.name, zero.name if zero else None)}
        return TensorInfo(name, q.shape, q.dtype, q.offset, q.nbytes, q.row_nbytes, extra)

    # -- reading -----------------------------------------------------------------------------
    def _whole(self, tensor: TensorInfo, aux: bool = False) -> np.ndarray:
        numel = math.prod(tensor.shape)
        if aux and numel > MAX_AUX_NUMEL:
            raise self._fail(f"{tensor.name}: {numel} quantisation parameters is implausible")
        return self._plain_rows(tensor, np.arange(tensor.rows)).reshape(-1)

    def _varint_values(self, tensor: TensorInfo) -> Floats:
        cached = self._decoded.get(tensor.name)
        if cached is not None:
            self._decoded.move_to_end(tensor.name)
            return cached
        values: list[np.ndarray] = []
        # (wire type, offset, length) of each run of the typed field, as _initializer found them.
        segments = cast("list[tuple[int, int, int]]", tensor.extra["segments"])
        for wire, a, b in segments:
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

    def _plain_rows(self, tensor: TensorInfo, index: NDArray[np.int64]) -> Floats:
        """Rows `index` (already checked) of the values as stored, before any dequantising."""
        if "segments" in tensor.extra:
            return self._varint_values(tensor).reshape(tensor.rows, tensor.columns)[index]
        if tensor.nbytes == 0:
            return np.zeros((len(index), tensor.columns), dtype=np.float32)
        if tensor.extra.get("storage") == "external":
            return read_plain_rows(self._siblings[str(tensor.extra["external"])], tensor, index)
        return read_plain_rows(self.source, tensor, index)

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        index = row_indices(rows, tensor.rows, f"{self.source.name}: {tensor.name}")
        values = self._plain_rows(tensor, index)
        if not tensor.extra.get("quantized"):
            return values
        extra = tensor.extra
        # The broadcast shapes _quantized stored (tuples of ints), or one value per tensor.
        scale_shape = cast("tuple[int, ...]", extra.get("scale_shape") or (1,))
        zero_shape = cast("tuple[int, ...]", extra.get("zero_shape") or (1,))
        return affine_rows(values, index, tuple(tensor.shape), np.asarray(extra["scale"]),
                           tuple(scale_shape), np.asarray(extra["zero_point"]), tuple(zero_shape))


def _typed_to_float32(values: np.ndarray, dtype: str) -> Floats:
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


def open_onnx(source: ByteSource,
              open_sibling: Callable[[str], ByteSource] | None = None) -> OnnxReader:
    return OnnxReader(source, open_sibling)
