"""PyTorch zip checkpoints (`torch.save` since 1.6: .pt, .pth, .bin, .ckpt), read without torch
and without running anything.

The format is a zip: `<prefix>/data.pkl` (a pickle of the state dict), `<prefix>/data/<key>`
(each storage's raw bytes, stored uncompressed), `<prefix>/byteorder` (`little` or `big`;
absent in older files, meaning little) and `<prefix>/version`; the prefix varies (often
`archive`). A pickle is a program: loading one with `pickle.load` calls whatever globals it
names (`os.system`, `builtins.exec`, `subprocess.Popen` ...). So `data.pkl` is never given to
`pickle`. It is run by `_Machine`, a small interpreter of the pickle opcodes, like torch's
own `weights_only` unpickler, in which a global can only be one of a fixed set of plain
stand-ins (`find_class`):

- `collections.OrderedDict` -> a dict,
- `torch._utils._rebuild_tensor_v2` / `_v3`, `_rebuild_parameter` (and `_with_state`) ->
  a `TensorRef` describing `as_strided(storage[offset:], size, stride)`,
- the `torch.*Storage` types, `torch.UntypedStorage` and the `torch.<dtype>` names -> dtype
  descriptions,

- `torch.jit._pickle.build_*list` / `restore_type_tag` -> their argument, as it is,
- `__torch__.<module>.<Class>` (TorchScript's compiled classes) -> a `Placeholder` that
  only records the state BUILD gives it, once; constructing one with arguments is refused,

and `persistent_load(('storage', type, key, location, numel))` gives a `StorageRef` naming
`<prefix>/data/<key>` (`<prefix>/constants/<key>` for a TorchScript archive's
`constants.pkl`). Any other global is refused, naming it, when the opcode that names it
is read, before anything could call it; so are the copyreg extension opcodes and BUILD on
anything but a dict or a placeholder. A TorchScript archive's `code/` folder (the
compiled program) is never opened. The interpreter only builds numbers, strings, tuples, lists, dicts and
sets; nothing it does can reach a function outside this module. Legacy (pre-zip) checkpoints
are a bare pickle stream and are refused outright.

Tensors anywhere in the loaded object (nested under "model", "state_dict", in lists, in a
placeholder's attributes) are listed under their dotted path. A tensor's `offset` points into the checkpoint itself when
its storage is stored uncompressed (as torch writes it), so rows are read by range; when a
re-zipped checkpoint deflated its storages, `offset` is inside the inflated member and
`extra["member"]` names it. Rows are read only from row-major contiguous tensors; a
transposed or sliced view is listed but refused by `read_rows`, not guessed at.
"""

from __future__ import annotations

import codecs
import math
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from fingerprints.archives import ArchiveMember, ZipArchive
from fingerprints.dequant import ITEMSIZE, Floats
from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.tensors import (
    ByteSource,
    Rows,
    TensorInfo,
    TensorLookup,
    WeightFileError,
    read_plain_rows,
)

__all__ = ["ALLOWED_GLOBALS", "PyTorchReader", "StorageRef", "TensorRef", "load_pickle",
           "open_pytorch"]

# torch's data.pkl spends ~100-350 bytes a tensor: 32 MiB is ~100k tensors or more.
DEFAULT_MAX_PICKLE_BYTES = 32 << 20
# torch's pickle spends ~30 opcodes per tensor, so 2^22 covers MAX_TENSORS_PER_FILE tensors;
# the interpreter runs ~2 M opcodes a second, so this bounds a hostile pickle's time.
DEFAULT_MAX_OPS = 1 << 22
# What the objects an opcode builds cost in memory, estimated as it runs (a list or dict
# 64-72 bytes with its stack slot, a set ~230, a string its length; memo entries ~100) and
# never credited back. A state dict that memoises every object costs ~3 KB a tensor (4 KB
# estimated), so 96 MiB covers ~25k tensors in one pickle (torch .bin releases shard at a
# few thousand a file) and keeps a pickle of millions of empty containers under ~100 MB.
DEFAULT_MAX_MEMORY = 96 << 20
MAX_DEPTH = 64
MAX_VISITS = 5_000_000
MAX_NDIM = 64
MAX_DIM = 1 << 48


@dataclass(frozen=True)
class _Global:
    """What `find_class` returns: a named, inert stand-in."""

    name: str
    dtype: str = ""
    untyped: bool = False
    call: Callable[..., object] | None = None


@dataclass(frozen=True, eq=False)
class StorageRef:
    """A storage named by `persistent_load`: `<prefix>/data/<key>` holding `numel` elements of
    `dtype` (bytes, when `untyped`)."""

    key: str
    dtype: str
    numel: int
    location: str
    untyped: bool

    @property
    def nbytes(self) -> int:
        return self.numel * (1 if self.untyped else ITEMSIZE[self.dtype])


@dataclass(frozen=True, eq=False)
class TensorRef:
    """`as_strided(storage[offset:], size, stride)` as a description; `offset` in elements."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.size)

    @property
    def contiguous(self) -> bool:
        expected = 1
        for dim, step in zip(reversed(self.size), reversed(self.stride)):
            if dim != 1 and step != expected:
                return False
            expected *= dim
        return True

    @property
    def extent(self) -> int:
        """Elements of the storage the view reaches, from `offset` (0 if empty)."""
        if self.numel == 0:
            return 0
        return 1 + sum((dim - 1) * step for dim, step in zip(self.size, self.stride))


class _StateDict(dict[object, object]):
    """collections.OrderedDict's stand-in; torch BUILDs it with `_metadata`, which is dropped."""

    def _build(self, state: object) -> None:
        return None


class Placeholder:
    """An instance of a TorchScript class (`__torch__.<module>.<Class>`), kept as data.

    TorchScript pickles a module as `NEWOBJ` of its compiled class with no arguments, then
    `BUILD` with a dict of its attributes (parameters, buffers, submodules, plain values).
    Here the class is only its name: nothing is imported, no method exists to call, and the
    one thing that can happen to a placeholder is receiving its state, once. The state's
    tensors are then found under the attribute path, as torch's `named_parameters` names them.
    """

    __slots__ = ("cls", "state")

    def __init__(self, cls: str):
        self.cls = cls
        self.state: object = None

    def _build(self, state: object) -> None:
        if self.state is not None:
            raise WeightFileError(f"{_q(self.cls)} receives its state twice")
        self.state = state


def _is_int(value: object) -> TypeGuard[int]:
    return type(value) is int


def _shape(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_NDIM or \
            not all(_is_int(v) and 0 <= v <= MAX_DIM for v in value):
        raise WeightFileError(f"tensor {what} must be a tuple of at most {MAX_NDIM} "
                              "non-negative integers")
    return value


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object,
                    dtype: str | None = None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise WeightFileError("a tensor's storage is not a storage reference")
    if not _is_int(storage_offset) or not 0 <= storage_offset <= MAX_DIM:
        raise WeightFileError("a tensor's storage offset is not a non-negative integer")
    size_t, stride_t = _shape(size, "size"), _shape(stride, "stride")
    if len(size_t) != len(stride_t):
        raise WeightFileError(f"a tensor has size {size_t} but stride {stride_t}")
    if math.prod(size_t) > MAX_DIM:
        raise WeightFileError(f"a tensor of size {size_t} is implausibly large")
    return TensorRef(storage, storage_offset, size_t, stride_t, dtype or storage.dtype)


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object = False, backward_hooks: object = None,
                       metadata: object = None) -> TensorRef:
    if storage.untyped if isinstance(storage, StorageRef) else False:
        raise WeightFileError("_rebuild_tensor_v2 of an untyped storage has no dtype")
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object, backward_hooks: object, dtype: object,
                       metadata: object = None) -> TensorRef:
    if not isinstance(dtype, _Global) or not dtype.dtype or dtype.call is not None:
        raise WeightFileError("_rebuild_tensor_v3 needs a torch dtype")
    return _rebuild_tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None,
                       state: object = None) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise WeightFileError("a parameter wraps something that is not a tensor")
    return data


def _ordered_dict(*args: object) -> _StateDict:
    result = _StateDict()
    if len(args) > 1:
        raise WeightFileError("OrderedDict takes at most one argument")
    items = args[0] if args else ()
    if not isinstance(items, Iterable):
        raise WeightFileError("OrderedDict takes an iterable of pairs")
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise WeightFileError("OrderedDict items must be pairs")
        result[item[0]] = item[1]
    return result


_STORAGES = {"FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
             "DoubleStorage": "F64", "LongStorage": "I64", "IntStorage": "I32",
             "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8",
             "BoolStorage": "BOOL"}
_DTYPES = {"float32": "F32", "float": "F32", "float16": "F16", "half": "F16",
           "bfloat16": "BF16", "float64": "F64", "double": "F64", "int64": "I64", "long": "I64",
           "int32": "I32", "int": "I32", "int16": "I16", "short": "I16", "int8": "I8",
           "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL",
           "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}


def _build_list(items: object) -> list[object]:
    if not isinstance(items, list):
        raise WeightFileError("expects a list")
    return items


def _restore_type_tag(value: object, type_str: object = None) -> object:
    return value


# TorchScript's own data builders: each returns its argument as it is (a list, or a value
# whose type annotation is dropped), so they call nothing either.
_JIT_BUILDERS: dict[str, Callable[..., object]] = {f"torch.jit._pickle.{name}": _build_list
                 for name in ("build_intlist", "build_floatlist", "build_boollist",
                              "build_doublelist", "build_tensorlist", "build_complexlist")}
_JIT_BUILDERS["torch.jit._pickle.restore_type_tag"] = _restore_type_tag

# `__torch__` is the namespace TorchScript compiles every scripted class into; a mangled
# copy is `___torch_mangle_N`. Names are checked so that a placeholder's name is plain text.
_SCRIPT_MODULE = re.compile(r"^__torch__(\.[A-Za-z_][A-Za-z0-9_]{0,127}){0,32}$")
_SCRIPT_CLASS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _script_class(full: str) -> Callable[..., object]:
    def make(*args: object) -> Placeholder:
        if args:
            raise WeightFileError(f"TorchScript class {_q(full)} constructed with arguments")
        return Placeholder(full)
    return make


def _allowed() -> dict[str, _Global]:
    table: dict[str, _Global] = {
        "collections.OrderedDict": _Global("collections.OrderedDict", call=_ordered_dict),
        "torch._utils._rebuild_tensor_v2": _Global("torch._utils._rebuild_tensor_v2",
                                                   call=_rebuild_tensor_v2),
        "torch._utils._rebuild_tensor_v3": _Global("torch._utils._rebuild_tensor_v3",
                                                   call=_rebuild_tensor_v3),
        "torch._utils._rebuild_parameter": _Global("torch._utils._rebuild_parameter",
                                                   call=_rebuild_parameter),
        "torch._utils._rebuild_parameter_with_state": _Global(
            "torch._utils._rebuild_parameter_with_state", call=_rebuild_parameter),
    }
    for name, dtype in _STORAGES.items():
        table[f"torch.{name}"] = _Global(f"torch.{name}", dtype=dtype)
    for name in ("torch.UntypedStorage", "torch.storage.UntypedStorage"):
        table[name] = _Global(name, dtype="U8", untyped=True)
    for name, dtype in _DTYPES.items():
        table[f"torch.{name}"] = _Global(f"torch.{name}", dtype=dtype)
    for name, builder in _JIT_BUILDERS.items():
        table[name] = _Global(name, call=builder)
    return table


ALLOWED_GLOBALS: dict[str, _Global] = _allowed()


def _q(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:120] + "...")


class _Machine:
    """The pickle opcodes, interpreted with nothing reachable but this module's stand-ins."""

    def __init__(self, data: bytes, label: str,
                 persistent_load: Callable[[object], object], max_ops: int,
                 max_memory: int = DEFAULT_MAX_MEMORY):
        self.data = data
        self.pos = 0
        self.max_memory = max_memory
        self.memory = 0
        self.label = label
        self.persistent_load = persistent_load
        self.max_ops = max_ops
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.script_classes: dict[str, _Global] = {}
        self.dispatch: dict[int, Callable[[], None]] = {}
        for code, method in _OPCODES.items():
            self.dispatch[code] = getattr(self, method)

    # -- reading ---------------------------------------------------------------------
    def fail(self, what: str) -> WeightFileError:
        return WeightFileError(f"{self.label}: {what}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"pickle truncated (wants {n} bytes at {self.pos})")
        self.memory += n
        if self.memory > self.max_memory:  # before the copy is made
            raise self.fail(f"pickle builds more than {self.max_memory >> 20} MiB of objects; "
                            "refusing")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> int:
        value: int = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]  # integer formats only
        return value

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos, self.pos + 65536)
        if end < 0:
            raise self.fail("pickle truncated (unterminated line)")
        text = self.data[self.pos:end]
        self.pos = end + 1
        return text

    def pop(self) -> object:
        if not self.stack:
            raise self.fail("pickle stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[object]:
        if not self.metastack:
            raise self.fail("pickle has no MARK to pop to")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def top(self) -> object:
        if not self.stack:
            raise self.fail("pickle stack underflow")
        return self.stack[-1]

    def top_of(self, kind: type, what: str) -> Any:
        """The top of the stack, which `what` (an opcode's message) needs to be a `kind`."""
        target = self.top()
        if not isinstance(target, kind):
            raise self.fail(f"{what} a {type(target).__name__}")
        return target

    def find_class(self, module: object, name: object) -> _Global:
        if not isinstance(module, str) or not isinstance(name, str):
            raise self.fail("a pickle global must be named by two strings")
        full = f"{module}.{name}"
        found = ALLOWED_GLOBALS.get(full)
        if found is None and _SCRIPT_MODULE.match(module) and _SCRIPT_CLASS.match(name):
            found = self.script_classes.get(full)
            if found is None:
                found = self.script_classes[full] = _Global(full, call=_script_class(full))
        if found is None:
            raise self.fail(f"refusing to load global {_q(full)}: a weights checkpoint needs only "
                            "tensors, storages and dicts (this pickle would run code)")
        return found

    def call(self, func: object, args: object) -> object:
        if not isinstance(func, _Global) or func.call is None:
            what = func.name if isinstance(func, _Global) else type(func).__name__
            raise self.fail(f"refusing to call {_q(what)}")
        if not isinstance(args, tuple):
            raise self.fail(f"arguments to {func.name} are not a tuple")
        try:
            return func.call(*args)
        except WeightFileError as exc:
            raise self.fail(f"{func.name}: {exc}") from None
        except TypeError:
            raise self.fail(f"{func.name} called with {len(args)} arguments") from None

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> object:
        ops = 0
        data = self.data
        dispatch = self.dispatch
        cost = _COST
        while True:
            if self.pos >= len(data):
                raise self.fail("pickle ends without STOP")
            code = data[self.pos]
            self.pos += 1
            ops += 1
            if ops > self.max_ops:
                raise self.fail(f"pickle runs more than {self.max_ops} opcodes; refusing")
            self.memory += cost[code]
            if self.memory > self.max_memory:
                raise self.fail(f"pickle builds more than {self.max_memory >> 20} MiB of objects "
                                f"(at opcode {ops}); refusing")
            if code == 0x2E:  # STOP
                return self.pop()
            handler = dispatch.get(code)
            if handler is None:
                raise self.fail(f"unsupported pickle opcode {bytes([code])!r} at {self.pos - 1}")
            handler()

    # -- opcodes ---------------------------------------------------------------------------
    def op_proto(self) -> None:
        if self.take(1)[0] > 5:
            raise self.fail("pickle protocol above 5")

    def op_frame(self) -> None:
        self.take(8)

    def op_mark(self) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_pop(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_pop_mark(self) -> None:
        self.pop_mark()

    def op_dup(self) -> None:
        self.stack.append(self.top())

    def op_none(self) -> None:
        self.stack.append(None)

    def op_true(self) -> None:
        self.stack.append(True)

    def op_false(self) -> None:
        self.stack.append(False)

    def op_int(self) -> None:
        text = self.line()
        if text == b"00":
            self.stack.append(False)
        elif text == b"01":
            self.stack.append(True)
        else:
            self.stack.append(self.parse_int(text))

    def parse_int(self, text: bytes) -> int:
        try:
            return int(text.rstrip(b"L"))
        except ValueError:
            raise self.fail("bad integer in pickle") from None

    def op_long(self) -> None:
        self.stack.append(self.parse_int(self.line()))

    def op_binint(self) -> None:
        self.stack.append(self.unpack("<i"))

    def op_binint1(self) -> None:
        self.stack.append(self.take(1)[0])

    def op_binint2(self) -> None:
        self.stack.append(self.unpack("<H"))

    def op_long1(self) -> None:
        self.stack.append(int.from_bytes(self.take(self.take(1)[0]), "little", signed=True))

    def op_long4(self) -> None:
        n = self.unpack("<i")
        if n > 1024:
            raise self.fail("pickle integer of more than 1024 bytes")
        self.stack.append(int.from_bytes(self.take(n), "little", signed=True))

    def op_float(self) -> None:
        try:
            self.stack.append(float(self.line()))
        except ValueError:
            raise self.fail("bad float in pickle") from None

    def op_binfloat(self) -> None:
        self.stack.append(struct.unpack(">d", self.take(8))[0])

    def op_string(self) -> None:
        text = self.line().strip()
        if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b"'", b'"'):
            raise self.fail("bad STRING in pickle")
        try:
            raw = codecs.escape_decode(text[1:-1])[0]
        except Exception:
            raise self.fail("bad STRING escape in pickle") from None
        self.stack.append(raw.decode("latin-1"))

    def op_binstring(self) -> None:
        self.stack.append(self.take(self.unpack("<i")).decode("latin-1"))

    def op_short_binstring(self) -> None:
        self.stack.append(self.take(self.take(1)[0]).decode("latin-1"))

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.fail("bad UTF-8 string in pickle") from None

    def op_unicode(self) -> None:
        try:
            self.stack.append(self.line().decode("raw-unicode-escape"))
        except UnicodeDecodeError:
            raise self.fail("bad UNICODE string in pickle") from None

    def op_binunicode(self) -> None:
        self.stack.append(self.text(self.take(self.unpack("<I"))))

    def op_short_binunicode(self) -> None:
        self.stack.append(self.text(self.take(self.take(1)[0])))

    def op_binunicode8(self) -> None:
        self.stack.append(self.text(self.take(self.unpack("<Q"))))

    def op_binbytes(self) -> None:
        self.stack.append(self.take(self.unpack("<I")))

    def op_short_binbytes(self) -> None:
        self.stack.append(self.take(self.take(1)[0]))

    def op_binbytes8(self) -> None:
        self.stack.append(self.take(self.unpack("<Q")))

    def op_bytearray8(self) -> None:
        self.stack.append(bytearray(self.take(self.unpack("<Q"))))

    def op_empty_tuple(self) -> None:
        self.stack.append(())

    def op_tuple(self) -> None:
        items = self.pop_mark()  # (pop_mark replaces self.stack: take it first)
        self.stack.append(tuple(items))

    def op_tuple1(self) -> None:
        self.stack.append((self.pop(),))

    def op_tuple2(self) -> None:
        b = self.pop()
        self.stack.append((self.pop(), b))

    def op_tuple3(self) -> None:
        c = self.pop()
        b = self.pop()
        self.stack.append((self.pop(), b, c))

    def op_empty_list(self) -> None:
        self.stack.append([])

    def op_list(self) -> None:
        items = self.pop_mark()
        self.stack.append(items)

    def op_empty_dict(self) -> None:
        self.stack.append({})

    def op_empty_set(self) -> None:
        self.stack.append(set())

    def op_frozenset(self) -> None:
        items = self.hashable(self.pop_mark())
        self.stack.append(frozenset(items))

    def hashable(self, items: list[object]) -> list[object]:
        for item in items:
            try:
                hash(item)
            except TypeError:
                raise self.fail(f"unhashable {type(item).__name__} used as a key") from None
        return items

    def op_dict(self) -> None:
        items = self.pop_mark()
        self.stack.append(self.pairs({}, items))

    def pairs(self, target: dict[object, object], items: list[object]) -> dict[object, object]:
        if len(items) % 2:
            raise self.fail("odd number of items for a dict")
        keys = self.hashable(items[0::2])
        for key, value in zip(keys, items[1::2]):
            target[key] = value
        return target

    def op_append(self) -> None:
        value = self.pop()
        target = self.top_of(list, "APPEND to")
        target.append(value)

    def op_appends(self) -> None:
        items = self.pop_mark()
        target = self.top_of(list, "APPENDS to")
        target.extend(items)

    def op_setitem(self) -> None:
        value = self.pop()
        key = self.pop()
        target = self.top_of(dict, "SETITEM on")
        self.pairs(target, [key, value])

    def op_setitems(self) -> None:
        items = self.pop_mark()
        target = self.top_of(dict, "SETITEMS on")
        self.pairs(target, items)

    def op_additems(self) -> None:
        items = self.pop_mark()
        target = self.top_of(set, "ADDITEMS on")
        target.update(self.hashable(items))

    def op_put(self) -> None:
        self.memo[self.parse_int(self.line())] = self.top()

    def op_binput(self) -> None:
        self.memo[self.take(1)[0]] = self.top()

    def op_long_binput(self) -> None:
        self.memo[self.unpack("<I")] = self.top()

    def op_memoize(self) -> None:
        self.memo[len(self.memo)] = self.top()

    def get(self, key: int) -> None:
        if key not in self.memo:
            raise self.fail(f"pickle memo has no entry {key}")
        self.stack.append(self.memo[key])

    def op_get(self) -> None:
        self.get(self.parse_int(self.line()))

    def op_binget(self) -> None:
        self.get(self.take(1)[0])

    def op_long_binget(self) -> None:
        self.get(self.unpack("<I"))

    def op_global(self) -> None:
        module = self.line().decode("utf-8", "replace")
        name = self.line().decode("utf-8", "replace")
        self.stack.append(self.find_class(module, name))

    def op_stack_global(self) -> None:
        name = self.pop()
        module = self.pop()
        self.stack.append(self.find_class(module, name))

    def op_reduce(self) -> None:
        args = self.pop()
        func = self.pop()
        self.stack.append(self.call(func, args))

    def op_newobj(self) -> None:
        args = self.pop()
        cls = self.pop()
        self.stack.append(self.call(cls, args))

    def op_newobj_ex(self) -> None:
        kwargs = self.pop()
        args = self.pop()
        cls = self.pop()
        if kwargs:
            raise self.fail("NEWOBJ_EX with keyword arguments")
        self.stack.append(self.call(cls, args))

    def op_inst(self) -> None:
        module = self.line().decode("utf-8", "replace")
        name = self.line().decode("utf-8", "replace")
        func = self.find_class(module, name)
        args = tuple(self.pop_mark())
        self.stack.append(self.call(func, args))

    def op_obj(self) -> None:
        items = self.pop_mark()
        if not items:
            raise self.fail("OBJ without a class")
        self.stack.append(self.call(items[0], tuple(items[1:])))

    def op_build(self) -> None:
        state = self.pop()
        target = self.top()
        if not isinstance(target, (_StateDict, Placeholder)):
            raise self.fail(f"refusing to BUILD (set the state of) a {type(target).__name__}")
        try:
            target._build(state)
        except WeightFileError as exc:
            raise self.fail(str(exc)) from None

    def op_persid(self) -> None:
        self.stack.append(self.persistent_load(self.line().decode("ascii", "replace")))

    def op_binpersid(self) -> None:
        self.stack.append(self.persistent_load(self.pop()))

    def op_ext(self) -> None:
        raise self.fail("refusing the copyreg extension registry (EXT opcodes)")

    def op_buffer(self) -> None:
        raise self.fail("refusing out-of-band pickle buffers")


_OPCODES = {
    0x80: "op_proto", 0x95: "op_frame", 0x28: "op_mark", 0x30: "op_pop", 0x31: "op_pop_mark",
    0x32: "op_dup", 0x4E: "op_none", 0x88: "op_true", 0x89: "op_false", 0x49: "op_int",
    0x4C: "op_long", 0x4A: "op_binint", 0x4B: "op_binint1", 0x4D: "op_binint2",
    0x8A: "op_long1", 0x8B: "op_long4", 0x46: "op_float", 0x47: "op_binfloat",
    0x53: "op_string", 0x54: "op_binstring", 0x55: "op_short_binstring", 0x56: "op_unicode",
    0x58: "op_binunicode", 0x8C: "op_short_binunicode", 0x8D: "op_binunicode8",
    0x42: "op_binbytes", 0x43: "op_short_binbytes", 0x8E: "op_binbytes8",
    0x96: "op_bytearray8", 0x29: "op_empty_tuple", 0x74: "op_tuple", 0x85: "op_tuple1",
    0x86: "op_tuple2", 0x87: "op_tuple3", 0x5D: "op_empty_list", 0x6C: "op_list",
    0x7D: "op_empty_dict", 0x8F: "op_empty_set", 0x91: "op_frozenset", 0x64: "op_dict",
    0x61: "op_append", 0x65: "op_appends", 0x73: "op_setitem", 0x75: "op_setitems",
    0x90: "op_additems", 0x70: "op_put", 0x71: "op_binput", 0x72: "op_long_binput",
    0x94: "op_memoize", 0x67: "op_get", 0x68: "op_binget", 0x6A: "op_long_binget",
    0x63: "op_global", 0x93: "op_stack_global", 0x52: "op_reduce", 0x81: "op_newobj",
    0x92: "op_newobj_ex", 0x69: "op_inst", 0x6F: "op_obj", 0x62: "op_build",
    0x50: "op_persid", 0x51: "op_binpersid", 0x82: "op_ext", 0x83: "op_ext", 0x84: "op_ext",
    0x97: "op_buffer", 0x98: "op_buffer",
}

# Estimated bytes each opcode's objects cost (see DEFAULT_MAX_MEMORY): by default what a
# small object and its stack slot take; sets are larger; memo entries add a dict slot and
# an int key; pushing an existing object (GET, DUP) or filling a container costs a slot;
# opcodes that build nothing cost nothing.
_COST = [72] * 256
for _code in (0x80, 0x95, 0x2E, 0x30, 0x31):  # PROTO FRAME STOP POP POP_MARK
    _COST[_code] = 0
for _code in (0x8F, 0x91):  # EMPTY_SET FROZENSET
    _COST[_code] = 232
for _code in (0x70, 0x71, 0x72, 0x94):  # PUT BINPUT LONG_BINPUT MEMOIZE
    _COST[_code] = 104
for _code in (0x67, 0x68, 0x6A, 0x32, 0x61, 0x65, 0x73, 0x75, 0x90):
    _COST[_code] = 16  # GET BINGET LONG_BINGET DUP APPEND APPENDS SETITEM SETITEMS ADDITEMS
del _code

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def load_pickle(data: bytes, label: str = "<pickle>", *, max_ops: int = DEFAULT_MAX_OPS) -> object:
    """Interpret a torch `data.pkl` into dicts, lists, `TensorRef`s and `StorageRef`s.

    Any global outside `ALLOWED_GLOBALS` is a WeightFileError naming it; nothing is called
    but this module's stand-ins.
    """
    storages: dict[str, StorageRef] = {}

    def persistent_load(pid: object) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightFileError(f"{label}: unexpected persistent id (not a storage)")
        _, kind, key, location, numel = pid
        if not isinstance(kind, _Global) or not kind.dtype or kind.call is not None:
            raise WeightFileError(f"{label}: storage of unknown type")
        if not isinstance(key, str) or not _KEY.match(key) or key in (".", ".."):
            raise WeightFileError(f"{label}: bad storage key {_q(str(key))}")
        if not _is_int(numel) or not 0 <= numel <= MAX_DIM:
            raise WeightFileError(f"{label}: storage {key} has a bad element count")
        ref = StorageRef(key, kind.dtype, numel, str(location)[:64], kind.untyped)
        known = storages.setdefault(key, ref)
        if (known.dtype, known.numel, known.untyped) != (ref.dtype, ref.numel, ref.untyped):
            raise WeightFileError(f"{label}: storage {key} is declared twice differently")
        return known

    machine = _Machine(data, label, persistent_load, max_ops)
    try:
        return machine.run()
    except WeightFileError:
        raise
    except Exception as exc:  # MemoryError, RecursionError, struct.error...
        raise WeightFileError(f"{label}: malformed pickle ({type(exc).__name__})") from None


def _flatten(obj: object, label: str) -> list[tuple[str, TensorRef]]:
    """Every tensor in the loaded object, named by its dotted path. Each container is walked
    once (the memo can share one container between many paths, or make cycles)."""
    found: list[tuple[str, TensorRef]] = []
    seen: set[int] = set()

    def walk(value: object, path: list[str]) -> None:
        if isinstance(value, TensorRef):
            found.append((".".join(path) or "tensor", value))
            return
        if isinstance(value, Placeholder):
            if id(value) in seen:
                return
            seen.add(id(value))
            value = value.state
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        else:
            return
        if id(value) in seen:
            return
        seen.add(id(value))
        if len(seen) > MAX_VISITS:
            raise WeightFileError(f"{label}: checkpoint structure is too large to walk")
        if len(path) >= MAX_DEPTH:
            raise WeightFileError(f"{label}: checkpoint nests deeper than {MAX_DEPTH} levels")
        for key, item in items:
            try:
                part = key if isinstance(key, str) else str(key)
            except ValueError:  # an integer too long to print
                part = "?"
            walk(item, path + [part])

    walk(obj, [])
    return found


def _has_placeholder(root: object) -> bool:
    return isinstance(root, Placeholder)


class PyTorchReader(TensorLookup):
    """A torch.save zip checkpoint or a TorchScript archive (`torch.jit.save`): its tensors
    listed, their rows read by range. A TorchScript archive's `code/` (the compiled
    program) is never read."""

    def __init__(self, source: ByteSource, *, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES,
                 max_ops: int = DEFAULT_MAX_OPS, archive: ZipArchive | None = None):
        self.source = source
        head = source.read(0, min(source.size, 4))
        if head[:1] == b"\x80":
            raise WeightFileError(f"{source.name}: legacy (pre-zip) PyTorch pickle; refusing to "
                                  "unpickle it (re-save with torch >= 1.6 or as safetensors)")
        if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06") and archive is None:
            raise WeightFileError(f"{source.name}: not a PyTorch zip checkpoint")
        self.archive = archive if archive is not None else ZipArchive(source)
        pickles = [m for m in self.archive.members
                   if m.raw_name == "data.pkl" or m.raw_name.endswith("/data.pkl")]
        if not pickles:
            raise WeightFileError(f"{source.name}: no */data.pkl member: not a PyTorch checkpoint")
        if len(pickles) > 1:
            raise WeightFileError(f"{source.name}: {len(pickles)} data.pkl members "
                                  f"({', '.join(m.name for m in pickles[:3])}); expected one")
        self.prefix = pickles[0].raw_name[:-len("data.pkl")]
        self.byteorder = self._byteorder()
        self.tensors: list[TensorInfo] = []
        self.skipped: list[tuple[str, str]] = []
        self._members: dict[str, ArchiveMember] = {}
        names: set[str] = set()
        self.root = self._load(pickles[0], "data", "", names, max_pickle_bytes, max_ops)
        # A TorchScript archive keeps the tensors its code uses as constants in a second
        # pickle, with storages under `constants/`; listed as `constants.<index>`.
        try:
            constants = self.archive.member(self.prefix + "constants.pkl")
        except WeightFileError:
            constants = None
        if constants is not None:
            self._load(constants, "constants", "constants", names, max_pickle_bytes, max_ops)
        self.torchscript = _has_placeholder(self.root) or constants is not None

    def _load(self, member: ArchiveMember, folder: str, prefix: str, names: set[str],
              max_pickle_bytes: int, max_ops: int) -> object:
        label = f"{self.source.name}: {member.name}"
        data = self.archive.read(member, max_bytes=max_pickle_bytes)
        root = load_pickle(data, label, max_ops=max_ops)
        for name, ref in _flatten(root, label):
            name = f"{prefix}.{name}" if prefix else name
            unique, n = name, 1
            while unique in names:
                n += 1
                unique = f"{name}#{n}"
            names.add(unique)
            if len(self.tensors) >= MAX_TENSORS_PER_FILE:
                raise WeightFileError(f"{self.source.name}: more than {MAX_TENSORS_PER_FILE} "
                                      "tensors")
            self.tensors.append(self._tensor(unique, ref, folder))
        return root

    def _byteorder(self) -> str:
        try:
            member = self.archive.member(self.prefix + "byteorder")
        except WeightFileError:
            return "little"
        text = self.archive.read(member, max_bytes=16).decode("ascii", "replace").strip()
        if text not in ("little", "big"):
            raise WeightFileError(f"{self.source.name}: byteorder says {_q(text)}, not little or big")
        return text

    def _storage_member(self, key: str, folder: str) -> ArchiveMember:
        path = f"{self.prefix}{folder}/{key}"
        member = self._members.get(path)
        if member is None:
            try:
                member = self.archive.member(path)
            except WeightFileError:
                raise WeightFileError(f"{self.source.name}: storage {path} is missing") from None
            self._members[path] = member
        return member

    def _tensor(self, name: str, ref: TensorRef, folder: str = "data") -> TensorInfo:
        member = self._storage_member(ref.storage.key, folder)
        itemsize = ITEMSIZE[ref.dtype]
        if ref.storage.nbytes > member.size:
            raise WeightFileError(f"{self.source.name}: storage {member.name} declares "
                                  f"{ref.storage.nbytes} bytes but holds {member.size}")
        start = ref.offset * itemsize
        extent = ref.extent * itemsize
        if start + extent > member.size:
            raise WeightFileError(f"{self.source.name}: tensor {name} reaches byte {start + extent} "
                                  f"of storage {member.name}, which has {member.size}")
        extra: dict[str, object] = {"storage": ref.storage.key, "storage_offset": ref.offset,
                                    "stride": ref.stride, "contiguous": ref.contiguous,
                                    "big_endian": self.byteorder == "big"}
        if member.method == "stored":
            offset = self.archive.data_offset(member) + start
        else:
            offset = start
            extra["member"] = member.raw_name
        row_nbytes = itemsize * math.prod(ref.size[1:]) if ref.size else itemsize
        nbytes = ref.numel * itemsize if ref.contiguous else extent
        return TensorInfo(name=name, shape=ref.size, dtype=ref.dtype, offset=offset,
                          nbytes=nbytes, row_nbytes=row_nbytes, extra=extra)

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        if not tensor.extra.get("contiguous", True):
            raise WeightFileError(f"{self.source.name}: tensor {tensor.name} is a non-contiguous "
                                  f"view (size {tensor.shape}, stride {tensor.extra.get('stride')}); "
                                  "refusing to read its rows")
        member = tensor.extra.get("member")
        source = self.archive.open(self.archive.member(str(member))) if member else self.source
        return read_plain_rows(source, tensor, rows)


def open_pytorch(source: ByteSource, *, max_pickle_bytes: int = DEFAULT_MAX_PICKLE_BYTES,
                 max_ops: int = DEFAULT_MAX_OPS) -> PyTorchReader:
    return PyTorchReader(source, max_pickle_bytes=max_pickle_bytes, max_ops=max_ops)
