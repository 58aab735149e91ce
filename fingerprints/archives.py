"""Zip and tar archives holding weight files, and telling formats apart by their first bytes.

Leakers wrap weights in archives; PyTorch checkpoints and .npz files are zips themselves.
Nothing here extracts to disk: a member is opened as a `ByteSource`, so a member named
`../../etc/passwd` is only a name (shown normalised by `safe_member_name`).

Zip: the central directory is parsed by hand (zip64 too, and zips with data prepended, such
as a zip appended to an image) with bounds on the member count and the directory size. A
stored member is a range of the archive (a `SliceSource`, kept in `fingerprints.tensors` with
the other sources and re-exported here), read by range like any file. A deflated member is
inflated in memory, and only after its declared size passed a cap and a compression-ratio
check; inflating past the declared size, members whose data overlap (the
"overlapping files" zip bomb), lying sizes and bad CRCs are refused.

Tar (plain, .gz, .bz2, .xz): parsed with `tarfile`, whose reads go through a capped file
object over the source. A plain tar's regular members are ranges of it. A compressed tar
cannot be read by range (a gzip stream has no index), so it is streamed once through a
decompressor whose output is capped in total and in ratio, and while it streams, the
members worth reading (weight files and archives, `is_wanted_name`) are copied to an
anonymous temporary file, at most `max_inflate` bytes for the whole tar: memory stays at
one chunk whatever the member's size, and a member is then read by range from the disk.
Links, devices and sparse members are listed as skipped.

`sniff(source)` names a format from the first bytes (and the zip directory), for the
dispatcher that opens the right reader.

Within an `archive_session` (one per scan), an archive opened once is opened once: each
pass over a file (digests first, then tensors) gets the same archive, its inflated members
and its temporary copy, so a gzip tarball is read and inflated once, not once per pass; and
the session's `max_stream` bounds what its compressed streams may inflate (`BudgetSpent`,
which a scan reports as inconclusive). `member_digests` walks archives inside archives the
way the weight reader does and hashes their members (a compressed tar's as they stream).
"""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import os
import re
import struct
import tarfile
import tempfile
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.tensors import (
    ByteSource,
    BytesSource,
    SliceSource,
    WeightFileError,
    _CountedSource,
    check_range,
)

__all__ = ["ARCHIVE_EXTENSIONS", "ArchiveMember", "ArchiveSession", "BudgetSpent",
           "MemberDigest", "SliceSource", "TarArchive", "WEIGHT_EXTENSIONS", "ZipArchive",
           "archive_session", "is_archive_name", "is_wanted_name", "is_weight_name",
           "member_digests", "open_archive", "safe_member_name", "sha256_of", "sniff",
           "weight_members"]

WEIGHT_EXTENSIONS = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx", ".npy", ".npz",
                     ".ckpt", ".jit", ".torchscript", ".ptl", ".tflite")
# What weights get wrapped in: wheels and eggs (zips), npm tarballs (.tgz), release tars.
ARCHIVE_EXTENSIONS = (".zip", ".whl", ".egg", ".jar", ".tar", ".tgz", ".tar.gz", ".tbz2",
                      ".tar.bz2", ".txz", ".tar.xz")

# A PyTorch zip stores one member per storage (about one per tensor) plus a few; an .npz one
# per array; a release archive a few hundred files.
DEFAULT_MAX_MEMBERS = MAX_TENSORS_PER_FILE + 1024
# No checkpoint format stores a tar member per tensor; a tar is a release of a few hundred
# files. tarfile takes 20-50 us a header, so this bounds a hostile tar to about a second.
DEFAULT_MAX_TAR_MEMBERS = 1 << 14
DEFAULT_MAX_DIRECTORY_BYTES = 64 << 20
DEFAULT_MAX_INFLATE = 1 << 30
# Weights barely compress (about 1.1x); deflate's own ceiling is about 1032x.
DEFAULT_MAX_RATIO = 100
# Below this size a high ratio is harmless (small text members compress well).
RATIO_FLOOR = 1 << 20
# tarfile reads pax and GNU long-name headers whole; no single read may exceed this.
MAX_TAR_READ = 64 << 20
CHUNK = 1 << 20
# The least a compressed stream reads at once when its session's budget is nearly spent.
MIN_INPUT = 64 << 10
# An inflated member larger than this goes to a temporary file, not memory: a wheel's
# deflated inner zip of weights is tens or hundreds of MB.
SPOOL_ABOVE = 16 << 20

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_LOCATOR64 = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_METHODS = {0: "stored", 8: "deflated", 12: "bzip2", 14: "lzma", 93: "zstd"}


def safe_member_name(raw: str) -> str:
    """A member name made harmless to show: no absolute paths, drive letters, `..`, control
    characters. It is never used as a path; this is for display and extension checks."""
    text = raw.replace("\\", "/")
    if not text.isprintable():  # (checked whole first: a zip may name 100k members)
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    parts = [p for p in text.split("/") if p not in ("", ".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts.pop(0)
    return "/".join(parts) or "<unnamed>"


def is_weight_name(name: str) -> bool:
    return name.lower().endswith(WEIGHT_EXTENSIONS)


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_EXTENSIONS)


# Names ONNX exporters give external data (`model.onnx.data`, `model.onnx_data`): a
# compressed tar keeps them from its stream too, so a model inside can read its tensors.
SIDE_FILE_SUFFIXES = (".data", "_data")


def is_side_file_name(name: str) -> bool:
    return name.lower().endswith(SIDE_FILE_SUFFIXES)


def is_wanted_name(name: str) -> bool:
    """A member worth opening when looking for weights: a weight file or another archive."""
    return is_weight_name(name) or is_archive_name(name)


@dataclass(frozen=True)
class ArchiveMember:
    """One member of a zip or tar archive.

    `name` is `safe_member_name(raw_name)`. `method` is `stored`, `deflated` (zip methods by
    name) or `tar`. `header_offset` is where the member's header starts in the archive;
    `data_offset` is where its data starts, when known without reading (tar), else -1 (zip:
    ask `ZipArchive.data_offset`).
    """

    name: str
    raw_name: str
    size: int
    compressed_size: int
    method: str
    index: int
    header_offset: int
    data_offset: int = -1
    encrypted: bool = False
    is_dir: bool = False

    @property
    def is_weight(self) -> bool:
        return not self.is_dir and is_weight_name(self.name)

    @property
    def is_wanted(self) -> bool:
        return not self.is_dir and is_wanted_name(self.name)


def _fail(source: ByteSource, what: str) -> WeightFileError:
    return WeightFileError(f"{source.name}: {what}")


class SpooledSource(_CountedSource):
    """A range of an anonymous temporary file (deleted by the system when closed): where a
    compressed tar's members are copied as the stream passes them."""

    def __init__(self, spool: io.BufferedRandom, offset: int, size: int, name: str):
        self._spool = spool
        self._offset = offset
        self._size = size
        self._name = name
        self.bytes_read = 0

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._spool.fileno(), length, self._offset + offset)
        if len(data) != length:
            raise WeightFileError(f"{self._name}: temporary copy is short")
        return data

class _Inflated:
    """A small LRU of inflated members, bounded in total bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.items: OrderedDict[int, BytesSource | SpooledSource] = OrderedDict()

    def get(self, index: int) -> BytesSource | SpooledSource | None:
        item = self.items.get(index)
        if item is not None:
            self.items.move_to_end(index)
        return item

    def put(self, index: int, source: BytesSource | SpooledSource) -> None:
        self.items[index] = source
        while len(self.items) > 1 and sum(s.size for s in self.items.values()) > self.budget:
            self.items.popitem(last=False)


def _decompressor(method: str) -> Callable[[], object]:
    if method == "deflated":
        return lambda: zlib.decompressobj(-15)
    if method == "bzip2":
        return bz2.BZ2Decompressor
    raise KeyError(method)


class _Archive(ABC):
    """What zip and tar archives share once a member can be opened as a ByteSource."""

    kind: str
    source: ByteSource
    members: list[ArchiveMember]
    max_inflate: int
    _by_name: tuple[dict[str, list[ArchiveMember]], dict[str, list[ArchiveMember]]] | None = None
    # Stored members' slices, one per member: a pass that opens a member again gets the
    # same source, so an archive inside it is found in the session, not opened again.
    _slices: dict[int, SliceSource] | None = None

    @abstractmethod
    def open(self, member: ArchiveMember) -> ByteSource:
        """The member's bytes as a source (by range where it is stored as is)."""

    def digest(self, member: ArchiveMember) -> str | None:
        """The member's SHA-256 if it was computed without asking (a compressed tar's
        members, hashed as they streamed past), else None."""
        return None

    def narrow(self, max_inflate: int) -> None:
        """Apply a smaller inflation cap to an archive opened earlier in the session, as
        opening it afresh with that cap would have (what is already inflated must fit)."""
        self.max_inflate = min(self.max_inflate, max_inflate)

    def _slice(self, member: ArchiveMember, offset: int) -> SliceSource:
        if self._slices is None:
            self._slices = {}
        found = self._slices.get(member.index)
        if found is None:
            found = SliceSource(self.source, offset, member.size,
                                f"{self.source.name}!{member.name}")
            self._slices[member.index] = found
        return found

    def _named(self, name: str) -> list[ArchiveMember]:
        """Members whose raw (or else normalised) name is `name`, through an index built
        once: a checkpoint looks up one member per tensor, and a scan per lookup would be
        quadratic in a hostile archive's member count."""
        if self._by_name is None:
            raw: dict[str, list[ArchiveMember]] = {}
            safe: dict[str, list[ArchiveMember]] = {}
            for m in self.members:
                raw.setdefault(m.raw_name, []).append(m)
                safe.setdefault(m.name, []).append(m)
            self._by_name = (raw, safe)
        return self._by_name[0].get(name) or self._by_name[1].get(name, [])

    def read(self, member: ArchiveMember, max_bytes: int | None = None) -> bytes:
        """A member's whole content (small members: pickles, headers, text)."""
        if max_bytes is not None and member.size > max_bytes:
            raise _fail(self.source, f"{self.kind} member {member.name!r} is {member.size} bytes, "
                                     f"over the limit of {max_bytes}")
        source = self.open(member)
        return source.read(0, source.size)


class ZipArchive(_Archive):
    """A zip read through a ByteSource: its central directory, and its members on demand."""

    kind = "zip"

    def __init__(self, source: ByteSource, *, max_members: int = DEFAULT_MAX_MEMBERS,
                 max_directory_bytes: int = DEFAULT_MAX_DIRECTORY_BYTES,
                 max_inflate: int = DEFAULT_MAX_INFLATE, max_ratio: float = DEFAULT_MAX_RATIO):
        self.source = source
        self.max_members = max_members
        self.max_directory_bytes = max_directory_bytes
        self.max_inflate = max_inflate
        self.max_ratio = max_ratio
        self.members: list[ArchiveMember] = []
        self.skipped: list[tuple[str, str]] = []
        self._name_bytes: list[bytes] = []
        self._crc: list[int] = []
        self._limit: list[int] = []  # where the next member's header (or the directory) starts
        self._data_offset: dict[int, int] = {}
        self._cache = _Inflated(max_inflate)
        self._parse_directory(*self._read_directory())

    @staticmethod
    def member_names(source: ByteSource) -> list[str]:
        """Every member's name, read from the central directory without building members or
        checking their data: what sniffing needs, at a few microseconds a member."""
        archive = ZipArchive.__new__(ZipArchive)
        archive.source = source
        archive.max_members = DEFAULT_MAX_MEMBERS
        archive.max_directory_bytes = DEFAULT_MAX_DIRECTORY_BYTES
        cd, count, _, _ = archive._read_directory()
        names, pos = [], 0
        for index in range(count):
            if pos + 46 > len(cd) or cd[pos:pos + 4] != _CENTRAL:
                raise _fail(source, f"zip central directory entry {index} is malformed")
            (flags,) = struct.unpack_from("<H", cd, pos + 8)
            nlen, xlen, clen = struct.unpack_from("<HHH", cd, pos + 28)
            raw = cd[pos + 46:pos + 46 + nlen]
            names.append(raw.decode("utf-8" if flags & 0x800 else "cp437", errors="replace"))
            pos += 46 + nlen + xlen + clen
        return names

    # -- central directory -------------------------------------------------------------
    def _read_directory(self) -> tuple[bytes, int, int, int]:
        """(central directory bytes, member count, shift of every offset, where it starts)."""
        src = self.source
        size = src.size
        if size < 22:
            raise _fail(src, "not a zip file (too short for an end-of-directory record)")
        tail_len = min(size, 22 + 65535)
        tail_start = size - tail_len
        tail = src.read(tail_start, tail_len)
        pos = tail.rfind(_EOCD)
        while pos >= 0 and pos + 22 > len(tail):
            pos = tail.rfind(_EOCD, 0, pos)
        if pos < 0:
            raise _fail(src, "not a zip file (no end-of-central-directory record)")
        eocd = tail_start + pos
        disk, cd_disk, _, count, cd_size, cd_offset, _ = struct.unpack_from("<HHHHIIH", tail, pos + 4)
        directory_end = eocd
        zip64 = count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF
        loc = src.read(eocd - 20, 20) if eocd >= 20 else b""
        if loc[:4] == _LOCATOR64:  # zip64 end record and locator sit between directory and EOCD
            (record,) = struct.unpack_from("<Q", loc, 8)
            # the record's offset is shifted like every other when data is prepended
            for at in (record, eocd - 20 - 56):
                if 0 <= at <= eocd - 20 - 56 and src.read(at, 4) == _EOCD64:
                    rec = src.read(at, 56)
                    disk, cd_disk, _, count, cd_size, cd_offset = struct.unpack_from("<IIQQQQ", rec, 16)
                    directory_end = at
                    break
            else:
                raise _fail(src, "zip64 end record is missing or lies outside the file")
        elif zip64:
            raise _fail(src, "zip64 sizes without a zip64 locator")
        if disk != 0 or cd_disk != 0:
            raise _fail(src, "multi-volume zip archives are not supported")
        if count > self.max_members:
            raise _fail(src, f"zip declares {count} members, over the limit of {self.max_members}")
        if cd_size > self.max_directory_bytes:
            raise _fail(src, f"zip central directory is {cd_size} bytes, over the limit of "
                             f"{self.max_directory_bytes}")
        if cd_size < 46 * count:
            raise _fail(src, f"zip central directory of {cd_size} bytes cannot hold {count} members")
        # Data before the archive (a self-extractor, an image) shifts every offset.
        shift = directory_end - cd_size - cd_offset
        if shift < 0:
            raise _fail(src, "zip central directory lies outside the file")
        cd_start = cd_offset + shift
        return src.read(cd_start, cd_size), count, shift, cd_start

    def _parse_directory(self, cd: bytes, count: int, shift: int, cd_start: int) -> None:
        src = self.source
        pos = 0
        spans: list[tuple[int, int, int]] = []  # (header offset, minimal end, index)
        for index in range(count):
            if pos + 46 > len(cd) or cd[pos:pos + 4] != _CENTRAL:
                raise _fail(src, f"zip central directory entry {index} is malformed")
            (flags, method, crc, csize, usize, nlen, xlen, clen, disk, offset) = struct.unpack_from(
                "<4xHH4xIIIHHHH6xI", cd, pos + 4)
            end = pos + 46 + nlen + xlen + clen
            if end > len(cd):
                raise _fail(src, f"zip central directory entry {index} runs past the directory")
            raw = cd[pos + 46:pos + 46 + nlen]
            extra = cd[pos + 46 + nlen:pos + 46 + nlen + xlen]
            pos = end
            if usize == 0xFFFFFFFF or csize == 0xFFFFFFFF or offset == 0xFFFFFFFF:
                usize, csize, offset = self._zip64_extra(extra, usize, csize, offset, index)
            name = raw.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
            offset += shift
            method_name = _METHODS.get(method, f"method {method}")
            if offset + 30 + nlen + csize > cd_start:
                raise _fail(src, f"zip member {safe_member_name(name)!r} runs into the central directory")
            if method == 0 and csize != usize and not flags & 1:
                raise _fail(src, f"zip member {safe_member_name(name)!r} is stored but declares "
                                 f"{usize} bytes uncompressed and {csize} compressed")
            member = ArchiveMember(name=safe_member_name(name), raw_name=name, size=usize,
                                   compressed_size=csize, method=method_name, index=index,
                                   header_offset=offset, encrypted=bool(flags & 1),
                                   is_dir=name.endswith("/") and usize == 0)
            self.members.append(member)
            self._name_bytes.append(raw)
            self._crc.append(crc)
            self._limit.append(cd_start)
            spans.append((offset, offset + 30 + nlen + csize, index))
        spans.sort()
        for (_start, end, index), (next_start, _, next_index) in zip(spans, spans[1:]):
            if end > next_start:
                raise _fail(src, f"zip members {self.members[index].name!r} and "
                                 f"{self.members[next_index].name!r} overlap (a zip bomb "
                                 "shape); refusing")
            self._limit[index] = next_start

    def _zip64_extra(self, extra: bytes, usize: int, csize: int, offset: int,
                     index: int) -> tuple[int, int, int]:
        pos = 0
        while pos + 4 <= len(extra):
            tag, length = struct.unpack_from("<HH", extra, pos)
            body = extra[pos + 4:pos + 4 + length]
            pos += 4 + length
            if tag != 1:
                continue
            values = []
            for at in range(0, len(body) - 7, 8):
                values.append(struct.unpack_from("<Q", body, at)[0])
            it = iter(values)
            try:
                if usize == 0xFFFFFFFF:
                    usize = next(it)
                if csize == 0xFFFFFFFF:
                    csize = next(it)
                if offset == 0xFFFFFFFF:
                    offset = next(it)
            except StopIteration:
                break
            return usize, csize, offset
        raise _fail(self.source, f"zip member {index} needs zip64 sizes but has no zip64 field")

    # -- members ----------------------------------------------------------------------
    def member(self, name: str) -> ArchiveMember:
        """The member whose raw (or else normalised) name is `name`; refused if ambiguous."""
        found = self._named(name)
        if not found:
            raise _fail(self.source, f"no member named {safe_member_name(name)!r}")
        if len(found) > 1:
            raise _fail(self.source, f"{len(found)} members are named {safe_member_name(name)!r}")
        return found[0]

    def data_offset(self, member: ArchiveMember) -> int:
        """Where the member's (possibly compressed) data starts: read from its local header."""
        cached = self._data_offset.get(member.index)
        if cached is not None:
            return cached
        raw = self._name_bytes[member.index]
        header = self.source.read(member.header_offset, 30 + len(raw))
        if header[:4] != _LOCAL:
            raise _fail(self.source, f"zip member {member.name!r}: local header signature missing")
        nlen: int
        xlen: int
        nlen, xlen = struct.unpack_from("<HH", header, 26)
        if header[30:30 + nlen] != raw:
            raise _fail(self.source, f"zip member {member.name!r}: local header names a different file")
        start = member.header_offset + 30 + nlen + xlen
        if start + member.compressed_size > self._limit[member.index]:
            raise _fail(self.source, f"zip member {member.name!r}: data overlaps the next member")
        self._data_offset[member.index] = start
        return start

    def _check_openable(self, member: ArchiveMember) -> None:
        if member.encrypted:
            raise _fail(self.source, f"zip member {member.name!r} is encrypted")
        if member.method not in ("stored", "deflated", "bzip2"):
            raise _fail(self.source, f"zip member {member.name!r} uses {member.method} "
                                     "compression, which is not supported")

    def _check_bomb(self, member: ArchiveMember) -> None:
        if member.size > self.max_inflate:
            raise _fail(self.source, f"zip member {member.name!r} declares {member.size} bytes "
                                     f"uncompressed, over the limit of {self.max_inflate}")
        if member.size > RATIO_FLOOR and member.size > self.max_ratio * max(1, member.compressed_size):
            raise _fail(self.source, f"zip member {member.name!r} would inflate "
                                     f"{member.compressed_size} bytes to {member.size} (ratio over "
                                     f"{self.max_ratio:g}); refusing a likely zip bomb")

    def _inflate(self, member: ArchiveMember, want: int | None = None,
                 sink: io.BufferedRandom | None = None) -> bytes:
        """Inflate a member, or only its first `want` bytes; every cap checked on the way.
        With a `sink` the output goes there, a chunk at a time, and b"" is returned."""
        self._check_openable(member)
        self._check_bomb(member)
        start = self.data_offset(member)
        decomp = _decompressor(member.method)()
        limit = member.size + 1 if want is None else min(want, member.size + 1)
        out = bytearray()
        produced = crc = done = 0
        while produced < limit and not decomp.eof:  # type: ignore[attr-defined]
            if member.method == "deflated":
                data = decomp.unconsumed_tail  # type: ignore[attr-defined]
                need = not data
            else:
                data, need = b"", decomp.needs_input  # type: ignore[attr-defined]
            if need:
                if done >= member.compressed_size:
                    break
                data = self.source.read(start + done, min(CHUNK, member.compressed_size - done))
                done += len(data)
            try:
                chunk = decomp.decompress(data, min(limit - produced, 4 * CHUNK))  # type: ignore[attr-defined]
            except (zlib.error, OSError, EOFError, ValueError) as exc:
                raise _fail(self.source, f"zip member {member.name!r} is corrupt ({_one_line(exc)})") from None
            produced += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if sink is None:
                out += chunk
            else:
                sink.write(chunk)
        eof = decomp.eof  # type: ignore[attr-defined]
        if produced > member.size:
            raise _fail(self.source, f"zip member {member.name!r} inflates past its declared size "
                                     f"of {member.size} bytes; refusing a likely zip bomb")
        if want is not None and produced >= min(want, member.size):
            return bytes(out[:want])
        if produced != member.size or not eof:
            raise _fail(self.source, f"zip member {member.name!r} inflates to {produced} bytes but "
                                     f"declares {member.size}")
        if crc != self._crc[member.index]:
            raise _fail(self.source, f"zip member {member.name!r} fails its CRC check")
        return bytes(out)

    def open(self, member: ArchiveMember) -> ByteSource:
        """The member as a ByteSource: a range of the archive if stored, else inflated (in
        memory when small, else to an anonymous temporary file, read back by range)."""
        self._check_openable(member)
        label = f"{self.source.name}!{member.name}"
        if member.method == "stored":
            return self._slice(member, self.data_offset(member))
        cached = self._cache.get(member.index)
        if cached is None:
            if member.size <= SPOOL_ABOVE:
                cached = BytesSource(self._inflate(member), label)
            else:
                spool = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as its source)
                try:
                    self._inflate(member, sink=spool)
                    spool.flush()
                except BaseException:
                    spool.close()
                    raise
                cached = SpooledSource(spool, 0, member.size, label)
            self._cache.put(member.index, cached)
        return cached

    def read_prefix(self, member: ArchiveMember, length: int) -> bytes:
        """The first `length` bytes of a member (or all of it if shorter), inflating no more."""
        self._check_openable(member)
        length = min(length, member.size)
        if member.method == "stored":
            return self.source.read(self.data_offset(member), length)
        return self._inflate(member, length)


# -- tar -------------------------------------------------------------------------------
class _SourceFile(io.RawIOBase):
    """A seekable read-only file object over a ByteSource, for tarfile."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.source.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), max(0, self.source.size - self.pos))
        if n > MAX_TAR_READ:
            raise _fail(self.source, f"tar header asks to read {n} bytes at once; refusing")
        data = self.source.read(self.pos, n) if n else b""
        buffer[:n] = data
        self.pos += n
        return n


def _compression(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def _new_decompressor(kind: str):  # type: ignore[no-untyped-def]
    if kind == "gz":
        return zlib.decompressobj(31)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor()


class _Decompressed(io.RawIOBase):
    """A compressed source as a forward-only stream, capped in output and in ratio, and
    charged to the session's budget (if any) as it inflates."""

    def __init__(self, source: ByteSource, kind: str, max_output: int, max_ratio: float,
                 session: ArchiveSession | None = None):
        self.source = source
        self.session = session
        self.kind = kind
        self.max_output = max_output
        self.max_ratio = max_ratio
        self.decomp = _new_decompressor(kind)
        self.consumed = 0
        self.produced = 0
        self.tail = b""

    def readable(self) -> bool:
        return True

    def _more_input(self) -> bytes:
        n = min(CHUNK, self.source.size - self.consumed)
        if self.session is not None:
            n = min(n, self.session.input_allowance())
        data = self.source.read(self.consumed, n) if n > 0 else b""
        self.consumed += len(data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        want = len(buffer)
        if want == 0:
            return 0
        while True:
            if self.decomp.eof:
                rest = self.decomp.unused_data + self.tail
                self.tail = b""
                while not rest.strip(b"\x00"):  # end of input, or padding after a stream
                    rest = self._more_input()
                    if not rest:
                        return 0
                self.decomp = _new_decompressor(self.kind)  # concatenated streams
                self.tail = rest.lstrip(b"\x00")
            if self.kind == "gz":
                data = self.decomp.unconsumed_tail or self.tail
                need = not data
            else:
                data, need = b"", self.decomp.needs_input
                if need and self.tail:
                    data, need = self.tail, False
            self.tail = b""
            if need:
                data = self._more_input()
                if not data:
                    raise _fail(self.source, "compressed tar ends in the middle of a stream")
            try:
                out = self.decomp.decompress(data, want)
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
                raise _fail(self.source, f"compressed tar is corrupt ({_one_line(exc)})") from None
            if not out:
                continue
            self.produced += len(out)
            if self.produced > self.max_output:
                raise _fail(self.source, f"compressed tar expands past {self.max_output} bytes; "
                                         "refusing")
            if self.produced > RATIO_FLOOR and self.produced > self.max_ratio * max(1, self.consumed):
                raise _fail(self.source, f"compressed tar expands over {self.max_ratio:g} times "
                                         "its size; refusing a likely decompression bomb")
            if self.session is not None:
                self.session.charge(self.source, len(out), self.consumed)
            buffer[:len(out)] = out
            return len(out)


class TarArchive(_Archive):
    """A tar (optionally gz, bz2 or xz compressed) read through a ByteSource."""

    kind = "tar"

    def __init__(self, source: ByteSource, *, max_members: int = DEFAULT_MAX_TAR_MEMBERS,
                 max_inflate: int = DEFAULT_MAX_INFLATE, max_ratio: float = DEFAULT_MAX_RATIO,
                 max_stream: int = 1 << 40, session: ArchiveSession | None = None):
        self.source = source
        self.max_members = max_members
        self.max_inflate = max_inflate
        self.max_ratio = max_ratio
        self.max_stream = max_stream
        self.session = session
        self.compression = _compression(source.read(0, min(6, source.size)))
        self.members: list[ArchiveMember] = []
        self.skipped: list[tuple[str, str]] = []
        self._spool: io.BufferedRandom | None = None
        self._spooled: dict[int, SpooledSource] = {}
        self._sha256: dict[int, str] = {}
        self._spool_end = 0
        tar = self._open()
        try:
            for index, info in enumerate(self._iterate(tar)):
                if self._add(index, info) and self.compression is not None:
                    self._copy(tar, info, self.members[-1])
        except BaseException:
            self.close()
            raise
        finally:
            tar.close()

    def _copy(self, tar: tarfile.TarFile, info: tarfile.TarInfo, member: ArchiveMember) -> None:
        """Copy a wanted member of a compressed tar to the spool while the stream is at it
        (a stream cannot come back); the rest is skipped over unread."""
        if not (member.is_wanted or (not member.is_dir and is_side_file_name(member.name))):
            return
        if self._spool_end + member.size > self.max_inflate:
            raise self._over_inflate()
        if self._spool is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 (kept open with the archive)
        handle = tar.extractfile(info)
        start, left = self._spool_end, member.size
        # Hashed on the way to the spool: the digest pass costs no second read.
        sha = hashlib.sha256()
        self._spool.seek(start)
        while handle is not None and left > 0:
            try:
                chunk = handle.read(min(CHUNK, left))
            except (tarfile.TarError, EOFError):  # the stream ends inside the member
                break
            if not chunk:
                break
            self._spool.write(chunk)
            sha.update(chunk)
            left -= len(chunk)
        if left:
            raise _fail(self.source, f"tar member {member.name!r} is truncated")
        self._spool.flush()
        self._spool_end += member.size
        self._sha256[member.index] = sha.hexdigest()
        self._spooled[member.index] = SpooledSource(
            self._spool, start, member.size, f"{self.source.name}!{member.name}")

    def _over_inflate(self) -> WeightFileError:
        return _fail(self.source, f"compressed tar's weight and archive members exceed "
                                  f"{self.max_inflate} bytes together; refusing")

    def digest(self, member: ArchiveMember) -> str | None:
        return self._sha256.get(member.index)

    def narrow(self, max_inflate: int) -> None:
        super().narrow(max_inflate)
        if self._spool_end > self.max_inflate:
            raise self._over_inflate()

    @property
    def spooled_bytes(self) -> int:
        """Bytes decompressed and copied to the temporary file (0 for a plain tar)."""
        return self._spool_end

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _open(self) -> tarfile.TarFile:
        try:
            if self.compression is None:
                return tarfile.open(fileobj=_SourceFile(self.source), mode="r:")
            stream = _Decompressed(self.source, self.compression, self.max_stream,
                                   self.max_ratio, self.session)
            return tarfile.open(fileobj=io.BufferedReader(stream, CHUNK), mode="r|")
        except WeightFileError:
            raise
        except Exception as exc:
            raise _fail(self.source, f"not a readable tar archive ({_one_line(exc)})") from None

    def _iterate(self, tar: tarfile.TarFile):  # type: ignore[no-untyped-def]
        count = 0
        while True:
            try:
                info = tar.next()
            except WeightFileError:
                raise
            except Exception as exc:
                raise _fail(self.source, f"malformed tar archive ({_one_line(exc)})") from None
            if info is None:
                return
            tar.members.clear()  # type: ignore[attr-defined]  # (undeclared in typeshed) tarfile keeps every TarInfo; ArchiveMember is all we keep
            count += 1
            if count > self.max_members:
                raise _fail(self.source, f"tar has more than {self.max_members} members")
            yield info

    def _add(self, index: int, info: tarfile.TarInfo) -> bool:
        name = safe_member_name(info.name)
        if info.isdir():
            return False
        if not info.isreg() or info.issparse():
            kind = ("link to " + safe_member_name(info.linkname)) if info.issym() or info.islnk() \
                else "not a regular file"
            self.skipped.append((name, kind))
            return False
        if self.compression is None:
            check_range(self.source, info.offset_data, info.size)
        self.members.append(ArchiveMember(
            name=name, raw_name=info.name, size=info.size, compressed_size=info.size,
            method="tar" if self.compression is None else f"tar.{self.compression}", index=index,
            header_offset=info.offset, data_offset=info.offset_data))
        return True

    def member(self, name: str) -> ArchiveMember:
        found = self._named(name)
        if len(found) != 1:
            raise _fail(self.source, f"{len(found) or 'no'} members named {safe_member_name(name)!r}")
        return found[0]

    def open(self, member: ArchiveMember) -> ByteSource:
        if self.compression is None:
            return self._slice(member, member.data_offset)
        spooled = self._spooled.get(member.index)
        if spooled is None:
            raise _fail(self.source, f"tar member {member.name!r} is neither a weight file nor an "
                                     "archive, so it was not kept from the compressed stream")
        return spooled


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def open_archive(source: ByteSource, **limits: int) -> ZipArchive | TarArchive:
    """A zip (also .npz, .pth) or a tar (plain or compressed), by content; within an
    `archive_session`, the one opened before for this very source."""
    session = _SESSION.get()
    if session is not None:
        return session.open(source, limits)
    return _open_new(source, limits, None)


def _open_new(source: ByteSource, limits: dict[str, int],
              session: ArchiveSession | None) -> ZipArchive | TarArchive:
    head = source.read(0, min(source.size, 512 + 8))
    if head.startswith((_LOCAL, _EOCD)):
        return ZipArchive(source, **limits)
    if _compression(head) or _is_tar_header(head):
        return TarArchive(source, **limits, session=session)
    if _has_zip_directory(source):
        return ZipArchive(source, **limits)
    raise _fail(source, "not a zip or tar archive")


# -- one scan's archives -------------------------------------------------------------------
class BudgetSpent(WeightFileError):
    """The session's inflation budget ran out inside a compressed stream: what lies past
    that point is unknown, not absent, so a scan reports `inconclusive`, never `no_match`."""


class ArchiveSession:
    """The archives one scan opened, by source object, and what their compressed streams
    may inflate together (`max_stream`, None for no bound beyond each archive's own caps).

    An archive is kept with the limits it was opened with; asked for again with the same
    limits (or a smaller `max_inflate`, which is checked against what it already holds) it
    is returned as is. An archive that failed to open fails again the same way, unread.
    """

    def __init__(self, max_stream: int | None = None):
        self.max_stream = max_stream
        self.streamed = 0
        self.spent: str | None = None  # why the budget ran out, once it has
        self._opened: dict[int, tuple[ByteSource, dict[str, int],
                                      ZipArchive | TarArchive | WeightFileError]] = {}

    def charge(self, source: ByteSource, produced: int, consumed: int) -> None:
        """Count `produced` bytes inflated from `source`, of which `consumed` bytes are
        read so far; BudgetSpent past `max_stream`."""
        self.streamed += produced
        if self.max_stream is not None and self.streamed > self.max_stream:
            self.spent = (f"{source.name}: the budget of {self.max_stream} bytes (--max-bytes) "
                          f"was spent inflating compressed tars, after {consumed} of its "
                          f"{source.size} bytes; the rest was not read")
            raise BudgetSpent(self.spent)

    def input_allowance(self) -> int:
        """How much compressed input a stream may read next: near the budget's end, no
        more than what may still be inflated (compressed data is rarely larger than what
        it inflates to), so the bytes read stop close to --max-bytes, not a chunk past."""
        if self.max_stream is None:
            return CHUNK
        return max(MIN_INPUT, self.max_stream - self.streamed + 1)

    def open(self, source: ByteSource, limits: dict[str, int]) -> ZipArchive | TarArchive:
        found = self._opened.get(id(source))
        if found is not None and found[0] is source:
            _, before, opened = found
            inflate = limits.get("max_inflate", DEFAULT_MAX_INFLATE)
            same = ({k: v for k, v in before.items() if k != "max_inflate"}
                    == {k: v for k, v in limits.items() if k != "max_inflate"})
            if same and inflate <= before.get("max_inflate", DEFAULT_MAX_INFLATE):
                if isinstance(opened, WeightFileError):
                    raise type(opened)(str(opened))
                opened.narrow(inflate)
                return opened
            if same and not isinstance(opened, WeightFileError):
                return _open_new(source, limits, self)  # a looser cap than before: afresh
        try:
            archive = _open_new(source, limits, self)
        except WeightFileError as exc:
            self._opened[id(source)] = (source, dict(limits), exc)
            raise
        self._opened[id(source)] = (source, dict(limits), archive)
        return archive

    def close(self) -> None:
        """Delete the temporary copies of compressed tars' members."""
        for _, _, opened in self._opened.values():
            if isinstance(opened, TarArchive):
                opened.close()
        self._opened.clear()


_SESSION: ContextVar[ArchiveSession | None] = ContextVar("archive_session", default=None)


@contextmanager
def archive_session(max_stream: int | None = None) -> Iterator[ArchiveSession]:
    """One scan's archives (see `ArchiveSession`); inside a session already open, that
    session, whose budget holds."""
    current = _SESSION.get()
    if current is not None:
        yield current
        return
    session = ArchiveSession(max_stream)
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)
        session.close()


@dataclass(frozen=True)
class MemberDigest:
    """A member's SHA-256, `path` naming it through the archives as the weight reader
    does (`pkg/data/model.zip!minilm/model.safetensors`)."""

    path: str
    size: int
    sha256: str


class _WalkSpent(Exception):
    """The walk's member or inflation allowance is spent: the tensor pass says so."""


@dataclass
class _Allowance:
    members: int
    inflate: int

    def spend(self, members: int = 0, inflated: int = 0) -> None:
        self.members -= members
        self.inflate -= inflated
        if self.members < 0 or self.inflate < 0:
            raise _WalkSpent


def member_digests(source: ByteSource, worth: Callable[[int], bool], *, max_depth: int,
                   max_members: int, max_inflate: int,
                   streamed_only: bool = False) -> Iterator[MemberDigest]:
    """The SHA-256 of each member of the archive `source` that the weight reader opens
    (weight files and archives, into archives `max_depth` levels deep, `max_members` members
    and `max_inflate` bytes inflated for the whole walk: `fingerprints.weights`' limits),
    for the members whose size `worth` accepts, in the reader's order. A compressed tar's
    members come hashed from its one stream; others are read by range or inflated once,
    and in a session the tensor pass reuses what was inflated. A member or archive that
    does not open is passed over (the tensor pass names what is wrong); BudgetSpent ends
    the walk. `streamed_only`: only the digests that cost no read of their own (a remote
    file's, whose members are not downloaded to be hashed)."""
    allowance = _Allowance(max_members, max_inflate)
    try:
        yield from _member_digests(source, "", 0, max_depth, allowance, worth, streamed_only)
    except _WalkSpent:
        return


def _member_digests(source: ByteSource, prefix: str, depth: int, max_depth: int,
                    allowance: _Allowance, worth: Callable[[int], bool], streamed_only: bool
                    ) -> Iterator[MemberDigest]:
    archive = open_archive(source, max_inflate=max(1, allowance.inflate))
    if isinstance(archive, TarArchive):
        allowance.spend(inflated=archive.spooled_bytes)
    for member in archive.members:
        if not member.is_wanted:
            continue
        path = f"{prefix}{safe_member_name(member.raw_name)}"
        inflating = isinstance(archive, ZipArchive) and member.method != "stored"
        allowance.spend(members=1, inflated=member.size if inflating else 0)
        try:
            opened = archive.open(member)
            if worth(member.size):
                sha256 = archive.digest(member)
                if sha256 is None and not streamed_only:
                    sha256 = sha256_of(opened)
                if sha256 is not None:
                    yield MemberDigest(path, member.size, sha256)
            if depth + 1 < max_depth and sniff(opened) in ("zip", "tar"):
                yield from _member_digests(opened, path + "!", depth + 1, max_depth, allowance,
                                           worth, streamed_only)
        except BudgetSpent:
            raise
        except WeightFileError:
            continue


def sha256_of(source: ByteSource) -> str:
    """A source's SHA-256, read a chunk at a time (bounded memory whatever its size)."""
    sha = hashlib.sha256()
    for offset in range(0, source.size, CHUNK):
        sha.update(source.read(offset, min(CHUNK, source.size - offset)))
    return sha.hexdigest()


def weight_members(archive: ZipArchive | TarArchive) -> list[ArchiveMember]:
    """Members whose names end in a weight-file extension."""
    return [m for m in archive.members if m.is_weight]


# -- sniffing ----------------------------------------------------------------------------
def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    field = block[148:156].split(b"\x00", 1)[0].strip()
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    if not block[:100].strip(b"\x00"):
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    return stored == unsigned


def _decompressed_head(head: bytes, kind: str) -> bytes:
    try:
        decomp = _new_decompressor(kind)
        out: bytes = decomp.decompress(head, 1024)
        return out
    except Exception:
        return b""


def _has_zip_directory(source: ByteSource) -> bool:
    if source.size < 22:
        return False
    tail_len = min(source.size, 22 + 65535)
    return _EOCD in source.read(source.size - tail_len, tail_len)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    raise ValueError("bad varint")


# ModelProto fields that may follow ir_version (field number, wire type).
_ONNX_FIELDS = {(2, 2), (3, 2), (4, 2), (5, 0), (6, 2), (7, 2), (8, 2), (14, 2), (20, 2), (25, 2)}


def _looks_like_onnx(head: bytes, size: int) -> bool:
    if not head.startswith(b"\x08"):
        return False
    try:
        version, pos = _varint(head, 1)
        if not 1 <= version <= 64:
            return False
        tag, pos = _varint(head, pos)
        if (tag >> 3, tag & 7) not in _ONNX_FIELDS:
            return False
        if tag & 7 == 2:
            length, pos = _varint(head, pos)
            return pos + length <= size
        return True
    except ValueError:
        return False


def sniff(source: ByteSource) -> str:
    """The format of a file from its first bytes: 'safetensors', 'gguf', 'pytorch-zip',
    'pickle-legacy', 'onnx', 'npy', 'npz', 'tflite', 'zip', 'tar' or 'unknown'. Never raises for
    content (only if the source cannot be read)."""
    size = source.size
    head = source.read(0, min(size, 4096))
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[4:8] == b"TFL3":  # the FlatBuffer file identifier TFLite writes
        return "tflite"
    if head.startswith((_LOCAL, _EOCD)):
        return _zip_kind(source)
    # Safetensors before the pickle marker: a header of 0x280..0x5ff bytes whose low byte
    # is 0x80 starts like a pickle (b"\x80\x05"), and a pickle's ninth byte is never "{".
    if len(head) >= 9:
        (length,) = struct.unpack_from("<Q", head, 0)
        if 2 <= length <= min(size - 8, 100 << 20) and head[8:9] == b"{":
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle-legacy"
    if _is_tar_header(head[:512]):
        return "tar"
    kind = _compression(head)
    if kind and _is_tar_header(_decompressed_head(head, kind)[:512]):
        return "tar"
    if _looks_like_onnx(head, size):
        return "onnx"
    if _has_zip_directory(source):
        return _zip_kind(source)
    return "unknown"


def _zip_kind(source: ByteSource) -> str:
    try:
        names = [n for n in ZipArchive.member_names(source) if not n.endswith("/")]
    except WeightFileError:
        return "zip"
    if any(n.endswith("/data.pkl") for n in names):
        return "pytorch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"
