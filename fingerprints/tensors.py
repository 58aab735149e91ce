"""What every weight-file reader shares: where bytes come from, what a tensor is, and how
its rows are read.

Readers never load a whole file. They read the header through a `ByteSource` (a local file,
a range of another source such as a stored archive member, or, later, HTTP Range requests
through the crawler's fetcher), describe each tensor with a `TensorInfo` (name, shape,
dtype and where its bytes lie), and decode only the rows a caller asks for with
`read_row_runs`, the one place rows are located, fetched and put in order. A suspect file
is hostile input: every length and offset is checked against the source's size before
anything is read or allocated, and a malformed file is a `WeightFileError` with one line
saying what is wrong, never a crash.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, TypeAlias

import numpy as np
from numpy.typing import NDArray

from fingerprints.dequant import Floats, decode_plain

# Rows of plain data this close (in bytes) are fetched in one read: fewer range requests.
MERGE_GAP = 4096


# Rows a caller asks a reader for: any iterable of ints, or an integer array (samplers pass
# numpy indices). `row_indices` checks what arrives, so the hostile case is still caught.
Rows: TypeAlias = Iterable[int] | np.ndarray


class WeightFileError(ValueError):
    """A weight file that cannot be read safely; the message is one line."""


class RowIndexError(WeightFileError, IndexError):
    """A row the tensor does not have: a reader error, and an IndexError like any index."""


class RowTypeError(WeightFileError, TypeError):
    """Rows that are not a flat sequence of integers."""


class NoTensorError(WeightFileError, KeyError):
    """No tensor of that name: a reader error, and a KeyError like any failed lookup."""

    __str__ = WeightFileError.__str__  # the one-line message, not KeyError's repr of it


class ByteSource(Protocol):
    """Random access to a file's bytes: a local file, or a remote one read by ranges."""

    @property
    def size(self) -> int: ...

    @property
    def name(self) -> str: ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`; WeightFileError if the source is shorter."""
        ...


def check_range(source: ByteSource, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > source.size:
        raise WeightFileError(f"{source.name}: wants bytes {offset}..{offset + length} but the "
                              f"file has {source.size}")


class _NamedSource:
    """A source's fixed size and name (set as `_size` and `_name` by the subclass), and
    `bytes_read`, what it has read so far (tests and the crawler use it to see that a
    reader fetched rows, not the file)."""

    _name: str
    _size: int
    bytes_read: int = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._name


class _CountedSource(_NamedSource, ABC):
    """The part local sources share: every read checked against the size first and
    counted. A subclass implements `_read`, which may assume the range lies inside the
    source."""

    def read(self, offset: int, length: int) -> bytes:
        check_range(self, offset, length)
        data = self._read(offset, length)
        self.bytes_read += length
        return data

    @abstractmethod
    def _read(self, offset: int, length: int) -> bytes:
        """Exactly the bytes [offset, offset + length), already checked to exist."""


class FileSource(_CountedSource):
    """A local file read with pread, so concurrent readers share one descriptor safely."""

    def __init__(self, path: str | os.PathLike[str]):
        self._name = os.fspath(path)
        try:
            self._fd = os.open(self._name, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise WeightFileError(f"{self._name}: cannot open: {exc.strerror}") from None
        self._size = os.fstat(self._fd).st_size
        self.bytes_read = 0

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise WeightFileError(f"{self._name}: file shrank while being read")
        return data

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BytesSource(_CountedSource):
    """An in-memory file (a member of an archive, a test fixture)."""

    def __init__(self, data: bytes, name: str = "<bytes>"):
        self._data = data
        self._name = name
        self._size = len(data)
        self.bytes_read = 0

    def _read(self, offset: int, length: int) -> bytes:
        return self._data[offset:offset + length]


class SliceSource(_CountedSource):
    """A range of another source, seen as a whole file (a stored archive member)."""

    def __init__(self, parent: ByteSource, offset: int, length: int, name: str):
        check_range(parent, offset, length)
        self.parent = parent
        self.offset = offset
        self._size = length
        self._name = name
        self.bytes_read = 0

    def _read(self, offset: int, length: int) -> bytes:
        return self.parent.read(self.offset + offset, length)


def quote(value: object, limit: int = 80) -> str:
    """A value from the file, cut short and escaped, safe inside a one-line message.

    Strings are shown with repr (quotes, escaped newlines); lists, numbers and the like as
    Python prints them, which escapes any strings inside.
    """
    if isinstance(value, (list, dict)) and len(value) > 8:
        value = list(value)[:8]
        text = str(value)[:-1] + ", ...]"
    else:
        text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a reader found it.

    `shape` is in numpy order (rows first). `dtype` is the format's own name (`F16`, `BF16`,
    `Q4_0`, ...). `offset` and `nbytes` locate its data in the source; `row_nbytes` is the
    size of one row as stored (quantised formats store whole rows of blocks), so a reader
    can fetch a sample of rows without the rest.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int
    row_nbytes: int
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def columns(self) -> int:
        """Values per row: the later axes flattened (1 for a vector or a scalar)."""
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) == 2


def row_indices(rows: Rows, count: int, name: str) -> NDArray[np.int64]:
    """Row numbers as int64, each checked to lie in 0..count-1.

    RowTypeError if they are not a flat sequence of integers, RowIndexError if one is out
    of range; both are WeightFileErrors (and a TypeError / IndexError).
    """
    try:
        index = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows)
    except TypeError:
        raise RowTypeError(f"{name}: rows must be a list of integers") from None
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise RowTypeError(f"{name}: rows must be a list of integers")
    index = index.astype(np.int64)
    bad = index[(index < 0) | (index >= count)]
    if bad.size:
        raise RowIndexError(f"{name}: row {int(bad[0])} is outside 0..{count - 1}")
    return index


def read_row_runs(source: ByteSource, tensor: TensorInfo, rows: Rows,
                  decode: Callable[[bytes], Floats], *, merge_gap: int = 0) -> Floats:
    """Rows of a tensor stored row after row, `tensor.row_nbytes` bytes each, as float32.

    The data starts at `tensor.offset` in `source`. Wanted rows are read one run at a time,
    a run being rows whose gaps hold at most `merge_gap` bytes (0: consecutive rows only),
    so a sample of rows costs one read per run, not per row nor the whole tensor. `decode` turns the bytes
    of whole rows into a flat float32 array. Returns (len(rows), columns) in the order
    asked, repeats included.
    """
    start = tensor.offset
    row_nbytes = tensor.row_nbytes
    index = row_indices(rows, tensor.rows, f"{source.name}: {tensor.name}")
    columns = tensor.columns
    if index.size == 0 or columns == 0:
        return np.zeros((index.size, columns), dtype=np.float32)
    check_range(source, start, tensor.rows * row_nbytes)
    wanted = np.unique(index)
    breaks = np.flatnonzero((np.diff(wanted) - 1) * row_nbytes > merge_gap) + 1
    out: Floats | None = None
    for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), wanted.size]):
        first, last = int(wanted[lo]), int(wanted[hi - 1])
        raw = source.read(start + first * row_nbytes, (last - first + 1) * row_nbytes)
        block = decode(raw).reshape(last - first + 1, columns)
        rows_read = block if hi - lo == last - first + 1 else block[wanted[lo:hi] - first]
        if hi - lo == wanted.size and rows_read.flags.writeable:
            out = rows_read  # one run: the decoded rows are the answer, not copied again
            break
        if out is None:
            out = np.empty((wanted.size, columns), dtype=np.float32)
        out[lo:hi] = rows_read
    assert out is not None
    if wanted.size == index.size and np.array_equal(wanted, index):
        return out
    return out[np.searchsorted(wanted, index)]


def read_plain_rows(source: ByteSource, tensor: TensorInfo, rows: Rows) -> Floats:
    """Rows of a tensor of a plain dtype (`fingerprints.dequant.PLAIN_DTYPES`), as float32.

    The numpy, PyTorch and ONNX readers' `read_rows`: `read_row_runs` with `decode_plain`
    in the byte order `tensor.extra["big_endian"]` gives, and runs at most MERGE_GAP bytes
    apart fetched together, since these files are often read by range from inside archives.
    """
    big_endian = bool(tensor.extra.get("big_endian"))
    return read_row_runs(source, tensor, rows,
                         lambda raw: decode_plain(raw, tensor.dtype, big_endian),
                         merge_gap=MERGE_GAP)


class WeightReader(Protocol):
    """A parsed weight file: its tensors, and their rows decoded to float32 on demand."""

    source: ByteSource
    tensors: list[TensorInfo]

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        """The given rows of a 2-D tensor as float32, shape (len(rows), columns)."""
        ...


class TensorLookup(ABC):
    """`tensor(name)` and `read_tensor` for a reader, written once.

    A reader sets `tensors` (complete once its constructor returns) and implements
    `read_rows`; `label` (default its source's name) starts error messages.
    """

    source: ByteSource
    tensors: list[TensorInfo]

    @property
    def label(self) -> str:
        return self.source.name

    @cached_property
    def by_name(self) -> dict[str, TensorInfo]:
        """Tensors by name; the first one wins if a file repeats a name."""
        table: dict[str, TensorInfo] = {}
        for tensor in self.tensors:
            table.setdefault(tensor.name, tensor)
        return table

    def tensor(self, name: str) -> TensorInfo:
        """The tensor called `name`; NoTensorError (a KeyError too) if there is none."""
        try:
            return self.by_name[name]
        except KeyError:
            raise NoTensorError(f"{self.label}: no tensor {quote(name)}") from None

    def check_own(self, tensor: TensorInfo) -> None:
        """KeyError unless `tensor` is this reader's own (the same name, shape and place)."""
        if self.by_name.get(tensor.name) != tensor:
            raise KeyError(f"{self.label}: tensor {quote(tensor.name)} is not from this file")

    @abstractmethod
    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        """The given rows of a tensor as float32, shape (len(rows), columns)."""

    def read_tensor(self, tensor: TensorInfo) -> Floats:
        """The whole tensor as float32 in its own shape (for small tensors and tests)."""
        return self.read_rows(tensor, range(tensor.rows)).reshape(tensor.shape)
