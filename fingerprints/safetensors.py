"""safetensors files and sharded checkpoints, read without torch and without loading them.

Layout: a little-endian u64 N, then N bytes of UTF-8 JSON (starting with `{`, possibly
padded with spaces), then the data section. Each JSON entry but `__metadata__` (string to
string) is `{"dtype", "shape", "data_offsets": [begin, end]}` with offsets relative to the
data section. The header is checked whole before anything else is read: known dtype,
non-negative integer shape, `end - begin == numel * itemsize`, every range inside the data
section and no two ranges overlapping. Rows are then read on demand, one read per
contiguous run of requested rows (`fingerprints.tensors.read_row_runs`), and decoded to
float32 by `fingerprints.dequant.decode_plain` (which widens BF16 and the float8 formats; the
`safetensors` package's numpy loader cannot read BF16).

A sharded checkpoint is a `model.safetensors.index.json` whose `weight_map` names the shard
holding each tensor; `open_sharded` opens each shard through a callable, so the shards may
be local files or remote ones read by ranges.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from fingerprints.dequant import ITEMSIZE, Floats, decode_plain
from fingerprints.limits import MAX_TENSORS_PER_FILE, json_values_bound
from fingerprints.tensors import (
    ByteSource,
    FileSource,
    Rows,
    TensorInfo,
    TensorLookup,
    WeightFileError,
    quote,
    read_row_runs,
)

__all__ = ["MAX_HEADER", "MAX_TENSORS", "SafetensorsReader", "ShardedSafetensorsReader",
           "open_safetensors", "open_sharded"]

# A real entry is ~150 bytes (a 50-character name, dtype, shape, offsets), so MAX_TENSORS of
# them take ~20 MB; 32 MiB leaves room for __metadata__. (The reference implementation
# allows 100 MB, but reading and decoding that much already costs 200 MB before parsing.)
MAX_HEADER = 32 << 20
MAX_TENSORS = MAX_TENSORS_PER_FILE
# A tensor entry is ~10 JSON values (the entry, dtype, shape and its dims, the offsets list
# and both offsets) and ~12 by `json_values_bound`'s count; 16 per tensor plus room for
# __metadata__ admits every real header and keeps the objects json builds under ~100 MB.
MAX_HEADER_VALUES = 16 * MAX_TENSORS + (1 << 16)
# The largest real indexes (1T-parameter MoE checkpoints) map ~200k tensors at ~90 bytes
# each, ~20 MB. 24 MiB holds them; parsing one that size costs ~150 MB, so no more.
MAX_INDEX = 24 << 20
MAX_INDEX_ENTRIES = 1 << 19
# An index entry is one JSON value after a comma; its metadata adds a handful.
MAX_INDEX_EXTRA_VALUES = 1 << 16

# More dimensions than any real tensor has; keeps hostile shapes cheap to check.
MAX_DIMS = 64


def _numel(shape: list[int], cap: int) -> int:
    """The product of `shape`, or cap + 1 as soon as it is known to exceed `cap`."""
    if 0 in shape:
        return 0
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > cap:
            return cap + 1
    return numel


class SafetensorsReader(TensorLookup):
    """A parsed safetensors file: `tensors` in header order, `metadata`, rows on demand."""

    def __init__(self, source: ByteSource, tensors: list[TensorInfo],
                 metadata: dict[str, str], header_size: int):
        self.source = source
        self.tensors = tensors
        self._metadata = metadata
        self.header_size = header_size  # 8 + N: where the data section starts

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        """The given rows (first axis; later axes flattened) as float32 (len(rows), columns)."""
        self.check_own(tensor)
        return read_row_runs(self.source, tensor, rows, lambda raw: decode_plain(raw, tensor.dtype))


def _fail(source: ByteSource, message: str) -> WeightFileError:
    return WeightFileError(f"{source.name}: {message}")


def _bad(source: ByteSource, name: str, message: str) -> WeightFileError:
    """An entry's error, its name quoted only when there is one to report."""
    return _fail(source, f"tensor {quote(name)}: {message}")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {quote(key)}")
        result[key] = value
    return result


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_COLON = re.compile(r"[ \t\n\r]*:[ \t\n\r]*")
_NEXT = re.compile(r'[ \t\n\r]*(?:,[ \t\n\r]*(")|\})')
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
# json's own string scanner (C where available), which typeshed leaves out of json.decoder.
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _skip_space(text: str, at: int) -> int:
    """The position after any JSON whitespace at `at` (the pattern matches the empty string)."""
    space = _WHITESPACE.match(text, at)
    return space.end() if space else at


def _header_entries(text: str) -> Iterator[tuple[str, object]]:
    """The top-level members of the JSON object `text`, one at a time, as json would parse
    them (its C scanner parses each value; JSONDecodeError where the text is not JSON).

    One at a time so the caller checks and counts each entry as it comes: a header of a
    million entries is refused at the first bad one or at the limit, never built whole.
    """
    at = _skip_space(text, 0)
    if text[at:at + 1] != "{":
        raise json.JSONDecodeError("Expecting '{'", text, at)
    at = _skip_space(text, at + 1)
    if text[at:at + 1] == "}":
        at += 1
    elif text[at:at + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, at)
    else:
        raw_decode = _DECODER.raw_decode
        while True:
            key, at = _scanstring(text, at + 1)
            colon = _COLON.match(text, at)
            if colon is None:
                raise json.JSONDecodeError("Expecting ':' delimiter", text, at)
            value, at = raw_decode(text, colon.end())
            yield key, value
            following = _NEXT.match(text, at)
            if following is None:
                raise json.JSONDecodeError("Expecting ',' delimiter or '}'", text, at)
            at = following.end()
            if following.group(1) is None:
                break
            at -= 1  # at the key's opening quote
    end = _skip_space(text, at)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)


def open_safetensors(source: ByteSource) -> SafetensorsReader:
    """Parse and validate a safetensors header; WeightFileError (one line) if malformed."""
    if source.size < 8:
        raise _fail(source, f"not a safetensors file: {source.size} bytes, shorter than the "
                            "8-byte header length")
    (length,) = struct.unpack("<Q", source.read(0, 8))
    if length > MAX_HEADER:
        raise _fail(source, f"safetensors header length {length} exceeds the "
                            f"{MAX_HEADER}-byte limit")
    if length > source.size - 8:
        raise _fail(source, f"safetensors header length {length} is larger than the file "
                            f"({source.size} bytes)")
    raw = source.read(8, length)
    if not raw.startswith(b"{"):
        raise _fail(source, "not a safetensors file: the header does not start with '{'")
    values = json_values_bound(raw)
    if values > MAX_HEADER_VALUES:
        raise _fail(source, f"safetensors header holds up to {values} JSON values, over the "
                            f"limit of {MAX_HEADER_VALUES} (at most {MAX_TENSORS} tensors)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(source, f"safetensors header is not UTF-8 (byte {8 + exc.start})") from None
    del raw  # only the text is needed from here: one copy of the header, not two

    metadata: dict[str, str] = {}
    data_start = 8 + length
    data_size = source.size - data_start
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    entries = _header_entries(text)
    while True:
        try:
            item = next(entries, None)
        except json.JSONDecodeError as exc:
            raise _fail(source, f"safetensors header is not JSON: {exc.msg} at byte "
                                f"{8 + exc.pos}") from None
        except (ValueError, RecursionError) as exc:
            raise _fail(source, f"safetensors header is not usable JSON: "
                                f"{str(exc).splitlines()[0][:200]}") from None
        if item is None:
            break
        name, entry = item
        if name in seen:
            raise _fail(source, f"safetensors header is not usable JSON: duplicate key "
                                f"{quote(name)}")
        seen.add(name)
        if name == "__metadata__":
            if entry is None:
                continue
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise _fail(source, "safetensors __metadata__ must map strings to strings")
            metadata = entry
            continue
        if len(tensors) >= MAX_TENSORS:
            raise _fail(source, f"safetensors header has more than {MAX_TENSORS} tensors")
        if not isinstance(entry, dict):
            raise _bad(source, name, "entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise _bad(source, name, f"unknown dtype {quote(dtype)}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise _bad(source, name, f"shape {quote(shape)} is not a list of non-negative integers")
        if len(shape) > MAX_DIMS:
            raise _bad(source, name, f"shape has {len(shape)} dimensions (at most {MAX_DIMS})")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
            raise _bad(source, name, f"data_offsets {quote(offsets)} is not [begin, end] with "
                                     "0 <= begin <= end")
        begin, end = offsets
        itemsize = ITEMSIZE[dtype]
        numel = _numel(shape, source.size)
        if end - begin != numel * itemsize:
            needs = f"{numel * itemsize}" if numel <= source.size else "more than the file holds"
            raise _bad(source, name, f"data_offsets span {end - begin} bytes but shape "
                                     f"{quote(shape)} of {dtype} needs {needs}")
        if end > data_size:
            raise _bad(source, name, f"data_offsets [{begin}, {end}] run past the data section "
                                     f"({data_size} bytes)")
        row_nbytes = itemsize * math.prod(shape[1:]) if shape else end - begin
        tensors.append(TensorInfo(name=name, shape=tuple(shape), dtype=dtype,
                                  offset=data_start + begin, nbytes=end - begin,
                                  row_nbytes=row_nbytes))

    previous: TensorInfo | None = None
    for tensor in sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset):
        if previous is not None and tensor.offset < previous.offset + previous.nbytes:
            raise _fail(source, f"tensors {quote(previous.name)} and {quote(tensor.name)} overlap")
        previous = tensor
    return SafetensorsReader(source, tensors, metadata, data_start)


# --- sharded checkpoints -------------------------------------------------------------------

def _check_shard_name(index_name: str, shard: object) -> str:
    if not isinstance(shard, str) or not shard or "\x00" in shard:
        raise WeightFileError(f"{index_name}: shard name {quote(shard)} is not a file name")
    posix, windows = PurePosixPath(shard), PureWindowsPath(shard)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or shard.startswith(("/", "\\")):
        raise WeightFileError(f"{index_name}: shard name {quote(shard)} is an absolute path")
    if ".." in posix.parts or ".." in windows.parts:
        raise WeightFileError(f"{index_name}: shard name {quote(shard)} leaves the checkpoint's "
                              "folder")
    return shard


class ShardedSafetensorsReader(TensorLookup):
    """Several safetensors shards read as one checkpoint.

    `tensors` holds every shard's tensors (shard order, then header order); each tensor's
    `extra["shard"]` names its shard, and `shards` maps shard name to its reader. `source`
    is the first shard's source (the protocol wants one); use `sources` for all of them.
    """

    def __init__(self, name: str, shards: dict[str, SafetensorsReader],
                 index_metadata: dict[str, object], owned: list[FileSource]):
        self.name = name
        self.shards = shards
        self.index_metadata = index_metadata
        self.tensors: list[TensorInfo] = []
        self._shard_of: dict[str, SafetensorsReader] = {}
        for shard_name, reader in shards.items():
            for tensor in reader.tensors:
                self.tensors.append(TensorInfo(tensor.name, tensor.shape, tensor.dtype,
                                               tensor.offset, tensor.nbytes, tensor.row_nbytes,
                                               extra={"shard": shard_name}))
                self._shard_of[tensor.name] = reader
        self._owned = owned
        # An index maps at least one tensor, so there is a first shard.
        self.source = next(iter(shards.values())).source

    @property
    def sources(self) -> list[ByteSource]:
        return [reader.source for reader in self.shards.values()]

    @property
    def metadata(self) -> dict[str, str]:
        """Every shard's `__metadata__`, the first shard's value winning on a clash."""
        merged: dict[str, str] = {}
        for reader in reversed(list(self.shards.values())):
            merged.update(reader.metadata)
        return merged

    @property
    def label(self) -> str:
        return self.name

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        reader = self._shard_of.get(tensor.name)
        if reader is None:
            raise KeyError(f"{self.name}: no tensor {quote(tensor.name)}")
        return reader.read_rows(reader.by_name[tensor.name], rows)

    def close(self) -> None:
        """Close the shard files this reader opened itself (the default opener)."""
        for source in self._owned:
            source.close()
        self._owned = []


def open_sharded(index: str | os.PathLike[str] | bytes,
                 open_shard: Callable[[str], ByteSource] | None = None,
                 ) -> ShardedSafetensorsReader:
    """Open a sharded checkpoint from its `model.safetensors.index.json`.

    `index` is the index file's path or its bytes. `open_shard(name)` returns a ByteSource
    for a shard named in the `weight_map` (names are checked first: no absolute paths, no
    `..`). Without it, shards are opened as files next to the index (a path is then needed)
    and `close()` closes them. Every tensor the weight_map names must be in its shard, and no
    tensor may be in two shards.
    """
    owned: list[FileSource] = []
    if isinstance(index, (bytes, bytearray, memoryview)):
        index_name, raw = "<index>", bytes(index)
        if open_shard is None:
            raise TypeError("open_sharded needs open_shard when the index is given as bytes")
    else:
        path = Path(index)
        index_name = str(path)
        try:
            size = path.stat().st_size
            if size > MAX_INDEX:
                raise WeightFileError(f"{index_name}: index is {size} bytes, over the "
                                      f"{MAX_INDEX}-byte limit")
            with open(path, "rb") as f:
                raw = f.read(MAX_INDEX + 1)
        except OSError as exc:
            raise WeightFileError(f"{index_name}: cannot read: {exc.strerror}") from None
        if open_shard is None:
            folder = path.parent

            def open_shard(shard: str) -> ByteSource:
                source = FileSource(folder / shard)
                owned.append(source)
                return source

    if len(raw) > MAX_INDEX:
        raise WeightFileError(f"{index_name}: index is over the {MAX_INDEX}-byte limit")
    values = json_values_bound(raw)
    if values > MAX_INDEX_ENTRIES + MAX_INDEX_EXTRA_VALUES:
        raise WeightFileError(f"{index_name}: index holds up to {values} JSON values, over the "
                              f"limit of {MAX_INDEX_ENTRIES + MAX_INDEX_EXTRA_VALUES} (at most "
                              f"{MAX_INDEX_ENTRIES} tensors)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WeightFileError(f"{index_name}: index is not UTF-8") from None
    del raw  # one copy of the index while json builds its objects, not two
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).splitlines()[0]
        raise WeightFileError(f"{index_name}: index is not JSON: {message[:200]}") from None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightFileError(f"{index_name}: index has no weight_map object")
    if len(weight_map) > MAX_INDEX_ENTRIES:
        raise WeightFileError(f"{index_name}: index maps {len(weight_map)} tensors, over the "
                              f"limit of {MAX_INDEX_ENTRIES}")
    index_metadata = document.get("metadata") or {}
    if not isinstance(index_metadata, dict):
        raise WeightFileError(f"{index_name}: index metadata is not an object")

    by_shard: dict[str, list[str]] = {}
    for tensor_name, shard in weight_map.items():
        by_shard.setdefault(_check_shard_name(index_name, shard), []).append(tensor_name)

    shards: dict[str, SafetensorsReader] = {}
    seen: dict[str, str] = {}
    try:
        for shard, names in by_shard.items():
            reader = open_safetensors(open_shard(shard))
            for tensor_name in names:
                if tensor_name not in reader.by_name:
                    raise WeightFileError(f"{index_name}: tensor {quote(tensor_name)} is mapped to "
                                          f"{quote(shard)} but that shard does not hold it")
            for tensor in reader.tensors:
                if tensor.name in seen:
                    raise WeightFileError(f"{index_name}: tensor {quote(tensor.name)} is in both "
                                          f"{quote(seen[tensor.name])} and {quote(shard)}")
                seen[tensor.name] = shard
            if len(seen) > MAX_INDEX_ENTRIES:
                raise WeightFileError(f"{index_name}: the shards hold more than "
                                      f"{MAX_INDEX_ENTRIES} tensors")
            shards[shard] = reader
    except BaseException:
        for source in owned:
            source.close()
        raise
    return ShardedSafetensorsReader(index_name, shards, index_metadata, owned)
