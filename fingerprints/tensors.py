"""What every weight-file reader shares: where bytes come from, and what a tensor is.

Readers never load a whole file. They read the header through a `ByteSource` (a local file
or, later, HTTP Range requests through the crawler's fetcher), describe each tensor with a
`TensorInfo` (name, shape, dtype and where its bytes lie), and decode only the rows a
caller asks for. A suspect file is hostile input: every length and offset is checked
against the source's size before anything is read or allocated, and a malformed file is
a `WeightFileError` with one line saying what is wrong, never a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class WeightFileError(ValueError):
    """A weight file that cannot be read safely; the message is one line."""


class ByteSource(Protocol):
    """Random access to a file's bytes: a local file, or a remote one read by ranges."""

    @property
    def size(self) -> int: ...

    @property
    def name(self) -> str: ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`; WeightFileError if the source is shorter."""
        ...


class FileSource:
    """A local file read with pread, so concurrent readers share one descriptor safely."""

    def __init__(self, path: str | os.PathLike[str]):
        self._name = os.fspath(path)
        try:
            self._fd = os.open(self._name, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise WeightFileError(f"{self._name}: cannot open: {exc.strerror}") from None
        self._size = os.fstat(self._fd).st_size
        self.bytes_read = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._name

    def read(self, offset: int, length: int) -> bytes:
        check_range(self, offset, length)
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise WeightFileError(f"{self._name}: file shrank while being read")
        self.bytes_read += length
        return data

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BytesSource:
    """An in-memory file (a member of an archive, a test fixture)."""

    def __init__(self, data: bytes, name: str = "<bytes>"):
        self._data = data
        self._name = name
        self.bytes_read = 0

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def name(self) -> str:
        return self._name

    def read(self, offset: int, length: int) -> bytes:
        check_range(self, offset, length)
        self.bytes_read += length
        return self._data[offset:offset + length]


def check_range(source: ByteSource, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > source.size:
        raise WeightFileError(f"{source.name}: wants bytes {offset}..{offset + length} but the "
                              f"file has {source.size}")


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
    def is_matrix(self) -> bool:
        return len(self.shape) == 2


class WeightReader(Protocol):
    """A parsed weight file: its tensors, and their rows decoded to float32 on demand."""

    source: ByteSource
    tensors: list[TensorInfo]

    def read_rows(self, tensor: TensorInfo, rows: list[int]) -> np.ndarray:
        """The given rows of a 2-D tensor as float32, shape (len(rows), columns)."""
        ...
