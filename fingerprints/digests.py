"""File digests of weight files, computed in one read pass.

Leaks are matched on whichever digest the leaker's venue publishes: model hubs show SHA-256
(LFS oids), checksum lists use SHA-256, SHA-1 or MD5, imageboards show MD5, BitTorrent v2
torrents carry each file's pieces root (BEP 52), and sigstore model signing can hash 1 GB
shards (its default is one SHA-256 per file, which every file gets here). Weight files are
tens of gigabytes, so reading them once per digest is not an option. IPFS CIDs of the
file in the layouts `ipfs add` produces (fingerprints.ipfs) are computed in the same pass
when asked for: each kind of leaf is one more hasher. So are the short hashes image-model
sites and tools name files by (`short_hashes`, see SHORT_KEYS). Here the file is read
once, mapped (or into a small ring of reusable buffers where it cannot be), and each chunk
is fed to worker threads (one per costly digest, the cheap ones sharing one) while the
next chunks are handed out. hashlib, zlib-ng and blake3 release the GIL on large buffers,
so the digests run on every core at once, and peak memory is a few chunks whatever the
file size.
"""

from __future__ import annotations

import errno
import hashlib
import io
import mmap
import os
import queue
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from fingerprints.ipfs import DagRef, Layout, file_cid_hashers
from fingerprints.ipfs import results as cid_results
from fingerprints.torrent import BLOCK_SIZE, PiecesRootHasher

__all__ = ["SHORT_KEYS", "DigestError", "FileDigests", "digest_file", "iter_files",
           "yield_to_md5"]

_ALGOS = ("sha256", "sha1", "md5")
# sigstore model-signing's shard size: with `shards=True`, files above it also get a
# SHA-256 per shard. Off by default: it is a second full SHA-256 pass over every large file
# (about a third more CPU on two cores) for a layout model-signing uses only when asked to.
SHARD_SIZE = 1_000_000_000


class Hash(Protocol):
    """What a worker feeds: hashlib objects, the pieces root and the shard hasher."""

    @property
    def name(self) -> str: ...

    def update(self, data: bytes | memoryview, /) -> object: ...


class ShardHasher:
    """SHA-256 of each `shard_size` slice of a file (the last one shorter)."""

    name = "shards"

    def __init__(self, shard_size: int = SHARD_SIZE) -> None:
        self.shard_size = shard_size
        self._done: list[str] = []
        self._current = hashlib.sha256()
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(self.shard_size - self._filled, len(view))
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.shard_size:
                self._done.append(self._current.hexdigest())
                self._current, self._filled = hashlib.sha256(), 0

    def hexdigests(self) -> tuple[str, ...]:
        tail = (self._current.hexdigest(),) if self._filled or not self._done else ()
        return tuple(self._done) + tail


class StitchedHasher:
    """MD5, SHA-1, SHA-256 and the BEP 52 pieces root of a file in one lane: the compiled
    fingerprints/_stitch.c interleaves the SHA rounds (on the CPU's SHA extensions) with
    MD5's, which leaves most of a core idle while it waits on its own dependency chain, so
    the four cost about what MD5 costs alone (register's heaviest CPU, halved). Used where
    the extension is built and the CPU has SHA-NI (`stitching_available`)."""

    name = "md5+sha"

    def __init__(self) -> None:
        from fingerprints._stitch import Stitched

        self._stitched = Stitched(leaf_size=BLOCK_SIZE)
        self.pieces_root = PiecesRootHasher()
        self._done: tuple[str, str, str] | None = None

    def update(self, data: bytes | memoryview, /) -> None:
        if leaves := self._stitched.update(data):
            self.pieces_root.add_leaf_digests(leaves)

    def hexdigests(self) -> tuple[str, str, str]:
        """(sha256, sha1, md5) as hex; the pieces root is then complete too."""
        if self._done is None:
            md5, sha1, sha256, last = self._stitched.digests()
            if last is not None:
                self.pieces_root.last_leaf_digest(last)
            self._done = (sha256.hex(), sha1.hex(), md5.hex())
        return self._done


def stitching_available() -> bool:
    """Whether the stitched lane can run here: fingerprints/_stitch.c compiled (pip builds
    it when a C compiler is present) and an x86-64 CPU with the SHA extensions."""
    try:
        from fingerprints._stitch import available
    except ImportError:
        return False
    return available


# -- short hashes ----------------------------------------------------------------------------
# Image-model ecosystems name a file by hashes other than the checksum lists' (Civitai shows
# AutoV1, AutoV2, AutoV3, CRC32 and BLAKE3 on every file page; AUTOMATIC1111 writes
# "Model hash: " into every image it makes). Shapes from AUTOMATIC1111's `model_hash` and
# kohya-ss sd-scripts' `addnet_hash_safetensors` (which Civitai calls AutoV3), and from
# Civitai's model-scanner (HashTask.cs: AutoV1 only for files of 2 MiB or more, AutoV2 the
# SHA-256's first 10 hex, BLAKE3 and CRC32 of the whole file). AutoV2 is not computed here:
# it is a prefix of `sha256`.
SHORT_KEYS = ("autov1", "autov3", "crc32", "blake3")
AUTOV1_START = 0x100000   # A1111 seeks to 1 MiB and reads 64 KiB
AUTOV1_LENGTH = 0x10000
# safetensors caps its JSON header at 100 MB; a larger length is not a safetensors file.
_SAFETENSORS_MAX_HEADER = 100_000_000


class RangeHasher:
    """SHA-256 of the bytes [start, start + length) of a stream fed in order (AutoV1).

    A file that ends inside the range is hashed as far as it goes, as A1111's `read`
    returns what there is; one that ends before `start` has no value (A1111 would hash
    nothing, the same e3b0c442 for every such file, which names none of them)."""

    def __init__(self, name: str, start: int, length: int) -> None:
        self.name = name
        self.start, self.stop = start, start + length
        self._hash = hashlib.sha256()
        self._pos = 0

    def update(self, data: bytes | memoryview, /) -> None:
        n = len(data)
        lo, hi = max(self._pos, self.start), min(self._pos + n, self.stop)
        if lo < hi:
            self._hash.update(memoryview(data)[lo - self._pos:hi - self._pos])
        self._pos += n

    def hexdigest(self) -> str | None:
        return self._hash.hexdigest() if self._pos > self.start else None


class SuffixHasher:
    """SHA-256 of a stream from byte `start` to its end: for a safetensors file, from the
    end of its header (AutoV3, the hash of the tensor data alone, which editing the
    metadata does not change)."""

    def __init__(self, name: str, start: int) -> None:
        self.name = name
        self.start = start
        self._hash = hashlib.sha256()
        self._pos = 0

    def update(self, data: bytes | memoryview, /) -> None:
        n = len(data)
        if self._pos + n > self.start:
            skip = max(0, self.start - self._pos)
            self._hash.update(memoryview(data)[skip:] if skip else data)
        self._pos += n

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Crc32Hasher:
    """CRC-32 (zlib's, as SFV files and 7-Zip show it: 8 hex, most significant byte first).

    zlib-ng's, the same function as the standard library's `zlib.crc32` but folded with
    carry-less multiplication: 0.10 CPU-seconds per GB here against 0.41, a tenth of
    md5sum's time on two cores, which the register budget (issue 16) does not have."""

    name = "crc32"

    def __init__(self) -> None:
        from zlib_ng import zlib_ng

        self._crc32 = zlib_ng.crc32
        self.value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self.value = self._crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


def safetensors_data_offset(f: io.RawIOBase | int, size: int) -> int | None:
    """Where a safetensors file's tensor data starts (8 + the header's length), or None if
    the file does not start like one: a little-endian length within safetensors' limit and
    the file, a header that opens with `{` and ends with `}` or the spaces that pad it."""
    fd = f if isinstance(f, int) else f.fileno()
    if size < 10:
        return None
    head = os.pread(fd, 9, 0)
    length = int.from_bytes(head[:8], "little")
    if len(head) < 9 or head[8:9] != b"{" or not 2 <= length <= _SAFETENSORS_MAX_HEADER \
            or 8 + length > size:
        return None
    return 8 + length if os.pread(fd, 1, 7 + length) in (b"}", b" ") else None


class _ShortHashers:
    """The short hashes of one file, fed with the other digests; `result()` gives the
    `FileDigests.short` mapping."""

    def __init__(self, data_offset: int | None) -> None:
        import blake3  # only register asks for short hashes; scans need not load it

        self.autov1 = RangeHasher("autov1", AUTOV1_START, AUTOV1_LENGTH)
        self.autov3 = SuffixHasher("autov3", data_offset) if data_offset is not None else None
        self.crc32 = Crc32Hasher()
        self.blake3 = blake3.blake3()

    def cheap(self) -> list[Hash]:
        """The hashers that together cost less than one SHA-256 pass: they share a worker."""
        return [self.crc32, self.blake3, self.autov1]

    def result(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if (v1 := self.autov1.hexdigest()) is not None:
            out["autov1"] = v1
        if self.autov3 is not None:
            out["autov3"] = self.autov3.hexdigest()
        out["crc32"] = self.crc32.hexdigest()
        out["blake3"] = self.blake3.hexdigest()
        return out


# Chunks in flight between the reader and the slowest hasher; see _hash_threaded.
_BUFFERS = 8
# Mapped chunks cost nothing to fill, so they are kept small: 8 of 1 MiB resident instead
# of 8 of 4 MiB leaves room for the tensor fingerprint that register runs beside the pass
# (together under 150 MB, issue 16), and the lanes read a chunk while it is still in the
# shared cache. (4 MiB and 1 MiB cost the same CPU; 256 KiB a tenth more.)
CHUNK_SIZE = 1 << 20


# The lanes that carry MD5 keep their priority (see yield_to_md5).
_MD5_LANES = frozenset({"md5", StitchedHasher.name})


def yield_to_md5() -> None:
    """Lower this thread's priority a little. MD5 is the slowest digest and cannot be
    split; when the faster hashers yield to it, it keeps a core to itself and they fill
    the other one (with 8 buffers of slack between them): on 2 cores that took register
    from about 1.2 to 1.1 times `md5sum` alone. Linux only, where a thread has its own
    nice value (elsewhere the id would name a process)."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
        except OSError:
            pass


class DigestError(OSError):
    """A file could not be digested; ``filename`` names it and ``errno`` is kept from the cause."""

    def __str__(self) -> str:
        # One clear line for the CLI, without the "[Errno N]" noise.
        return f"{self.filename}: {self.strerror}"


@dataclass(frozen=True)
class FileDigests:
    """The digests of one file, lowercase hex, and the number of bytes hashed.

    `pieces_root` is the BEP 52 Merkle root (None for an empty file); `shards` the SHA-256
    of each SHARD_SIZE slice: one entry (the file's SHA-256) for a file up to that size,
    and for a larger one every shard's when asked for (`digest_file(shards=True)`), else
    none. `cids` holds the file's IPFS root in each layout asked for, by layout name.
    `short` holds the short hashes when asked for (`digest_file(short_hashes=True)`), by
    SHORT_KEYS name, each lowercase full-length hex: "autov1" (SHA-256 of the 64 KiB at 1
    MiB; absent for a file of 1 MiB or less), "autov3" (SHA-256 of a safetensors file's
    tensor data; absent for other files), "crc32" (8 hex) and "blake3" (64 hex). Sites
    show prefixes of these (AutoV1 8 hex, AutoV3 10 or 12); AutoV2 is `sha256[:10]`.
    """

    path: str
    size: int
    sha256: str
    sha1: str
    md5: str
    pieces_root: str | None = None
    shards: tuple[str, ...] = ()
    cids: Mapping[str, DagRef] = field(default_factory=dict)
    short: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain dict, for JSON output and database rows; CIDs and short hashes where
        computed (CIDs as text)."""
        out = asdict(self)
        del out["cids"]
        if self.cids:
            out["cids"] = {name: str(ref.cid) for name, ref in self.cids.items()}
        if not self.short:
            del out["short"]
        return out


def digest_file(
    path: str | os.PathLike[str],
    *,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
    shards: bool = False,
    cid_layouts: Sequence[Layout] = (),
    short_hashes: bool = False,
    stitched: bool | None = None,
) -> FileDigests:
    """Compute SHA-256, SHA-1, MD5 and the BEP 52 pieces root of a regular file in a single
    streaming read, and with `shards` the SHA-256 of each 1 GB shard too, the IPFS CID
    of the file in each of `cid_layouts`, and with `short_hashes` the hashes of
    `FileDigests.short`. MD5, SHA-1, SHA-256 and the pieces root are one stitched lane
    where `stitching_available()` (or as `stitched` says), else four hashlib lanes: the
    same digests either way.

    ``progress(n)`` is called from the calling thread with the number of bytes fully hashed so
    far, at least once and last with the file size; an exception it raises aborts hashing (use
    it to cancel). Raises :class:`DigestError` naming the path if the file cannot be opened or
    read, or is not a regular file (a FIFO or a device would block or never end).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    name = os.fspath(path)
    core = StitchedHasher() if (stitching_available() if stitched is None else stitched) \
        else None
    algos = [] if core else [hashlib.new(a) for a in _ALGOS]
    pieces_root = core.pieces_root if core else PiecesRootHasher()
    cid_hashers = file_cid_hashers(cid_layouts) if cid_layouts else []
    # Each lane is one worker thread: a costly digest alone, cheap ones together.
    digests: list[Hash] = [core] if core else [*algos, pieces_root]
    digests += cid_hashers
    lanes = [[h] for h in digests]
    short: _ShortHashers | None = None
    try:
        # O_NONBLOCK so that opening a FIFO returns instead of hanging before we can refuse it;
        # it has no effect on regular files.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        with open(os.open(name, flags), "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise DigestError(errno.EINVAL, "not a regular file", name)
            if flags & getattr(os, "O_NONBLOCK", 0):
                # A non-blocking read may return None, which would end a loop early and give a
                # wrong digest; regular files ignore the flag on Linux, but not every filesystem.
                os.set_blocking(f.fileno(), True)
            # Fresh buffers cost page faults (about 0.5 ms per MiB), so they are sized to the
            # file: no more bytes, and no more buffers than chunks. The file may still change
            # size while we read; both loops read to EOF regardless.
            large = st.st_size > SHARD_SIZE
            sharder = ShardHasher(SHARD_SIZE) if shards and large else None
            if sharder is not None:
                lanes.append([sharder])
            if short_hashes:
                short = _ShortHashers(safetensors_data_offset(f, st.st_size))
                lanes.append(short.cheap())
                if short.autov3 is not None:
                    lanes.append([short.autov3])
            if st.st_size <= chunk_size:
                # One chunk: nothing to overlap with reading, and thread start-up and extra
                # buffers cost more than the parallel hashing saves.
                size = _hash_inline(f, [h for lane in lanes for h in lane],
                                    max(1, st.st_size), progress)
            else:
                chunks = -(-st.st_size // chunk_size)
                size = _hash_threaded(f, lanes, chunk_size, min(_BUFFERS, chunks), progress,
                                      st.st_size)
            now = os.fstat(f.fileno()).st_size
    except DigestError:
        raise
    except OSError as e:
        raise DigestError(e.errno, f"cannot read: {e.strerror or e}", name) from e
    if size != st.st_size or now != st.st_size:
        # Digests of a file being written describe no file that exists.
        raise DigestError(errno.EAGAIN, f"changed size while being read ({st.st_size} -> "
                                        f"{now if now != st.st_size else size} bytes); "
                                        "register it once it is complete", name)
    sha256, sha1, md5 = core.hexdigests() if core else (h.hexdigest() for h in algos)
    pieces = pieces_root.hexdigest()
    shard_list = sharder.hexdigests() if sharder else () if large else (sha256,)
    return FileDigests(path=name, size=size, sha256=sha256, sha1=sha1, md5=md5,
                       pieces_root=pieces, shards=shard_list, cids=cid_results(cid_hashers),
                       short=short.result() if short is not None else {})


def _hash_inline(
    f: io.RawIOBase, hashers: list[Hash], bufsize: int, progress: Callable[[int], None] | None
) -> int:
    buf = memoryview(bytearray(bufsize))
    done = 0
    while n := f.readinto(buf):
        for h in hashers:
            h.update(buf[:n])
        done += n
        if progress is not None:
            progress(done)
    if progress is not None and done == 0:
        progress(0)
    return done


class _ReadChunks:
    """Chunks read into a ring of reusable buffers (any file, any chunk size)."""

    def __init__(self, f: io.RawIOBase, bufsize: int, nbuf: int) -> None:
        self._f = f
        self._buffers = [memoryview(bytearray(bufsize)) for _ in range(nbuf)]
        self.views: list[memoryview] = [b[:0] for b in self._buffers]

    def fill(self, j: int) -> int:
        n = self._f.readinto(self._buffers[j]) or 0
        self.views[j] = self._buffers[j][:n]
        return n

    def consumed(self, offset: int) -> None:
        pass

    def close(self) -> None:
        pass


class _MappedChunks:
    """Chunks as views of the file's pages, mapped: no copy into buffers (reading 1 GB
    from the page cache into buffers costs about 0.4 CPU-seconds, mapping it 0.07; a
    tenth of register's CPU). Pages every lane is done with are unmapped as the pass goes
    (MADV_DONTNEED keeps them in the page cache), so resident memory stays near nbuf
    chunks, as with buffers.

    The map covers the size the file had when opened: a file that grows meanwhile is
    refused by the size check after the pass, and one that shrinks is seen before each
    chunk is handed out. A file cut shorter in the instant between that check and the
    lanes' reading of the chunk would end the process with SIGBUS, as it would any
    program that maps files (b3sum, ripgrep); files being rewritten are not registered."""

    def __init__(self, f: io.RawIOBase, size: int, bufsize: int, nbuf: int) -> None:
        self._fd = f.fileno()
        self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_SEQUENTIAL"):
            self._map.madvise(mmap.MADV_SEQUENTIAL)
        self._whole = memoryview(self._map)
        self._size, self._bufsize, self._pos, self._released = size, bufsize, 0, 0
        self.views: list[memoryview] = [self._whole[:0] for _ in range(nbuf)]

    def fill(self, j: int) -> int:
        n = min(self._bufsize, self._size - self._pos)
        if n and os.fstat(self._fd).st_size < self._pos + n:
            return 0  # cut shorter: stop here, the size check after the pass says why
        self.views[j] = self._whole[self._pos:self._pos + n]
        self._pos += n
        return n

    def consumed(self, offset: int) -> None:
        upto = offset - offset % mmap.PAGESIZE
        if upto > self._released and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto

    def close(self) -> None:
        for view in self.views:
            view.release()
        self._whole.release()
        self._map.close()


def _hash_threaded(
    f: io.RawIOBase,
    lanes: list[list[Hash]],
    bufsize: int,
    nbuf: int,
    progress: Callable[[int], None] | None,
    size: int,
) -> int:
    # One long-lived worker per lane of hashers, each fed chunk indices in file order. A
    # ring of chunks (rather than two, with a barrier per chunk) lets the fast lanes run
    # ahead while MD5 keeps a core to itself (see yield_to_md5): on 2 cores this is close
    # to MD5's speed alone, where a per-chunk barrier was about a third slower. A chunk is
    # refilled only once every lane has finished with it, so memory stays at
    # nbuf * bufsize whatever the file size.
    chunks: _ReadChunks | _MappedChunks
    try:
        chunks = _MappedChunks(f, size, bufsize, nbuf)
    except (OSError, ValueError):  # a file system that cannot map files: read them
        chunks = _ReadChunks(f, bufsize, nbuf)
    views = chunks.views
    lengths = [0] * nbuf
    pending = [0] * nbuf  # lanes that have not yet consumed chunk j
    lock = threading.Lock()
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for j in range(nbuf):
        free.put(j)
    inboxes: list[queue.SimpleQueue[int | None]] = [queue.SimpleQueue() for _ in lanes]
    failures: list[BaseException] = []

    def work(lane: list[Hash], inbox: queue.SimpleQueue[int | None]) -> None:
        if lane[0].name not in _MD5_LANES:
            yield_to_md5()
        while (j := inbox.get()) is not None:
            try:
                for h in lane:
                    h.update(views[j])
            except BaseException as e:  # reported by the reader; the chunk must come back
                failures.append(e)
            with lock:
                pending[j] -= 1
                last = pending[j] == 0
            if last:
                free.put(j)

    threads = [
        threading.Thread(target=work, args=(lane, q), name=f"digest-{lane[0].name}",
                         daemon=True)
        for lane, q in zip(lanes, inboxes)
    ]
    for t in threads:
        t.start()
    done = 0
    try:
        # Chunks come back in file order because every worker consumes them in that order,
        # so `done` counts a prefix of the file. lengths[j] is counted when j comes back.
        while True:
            j = free.get()
            if lengths[j]:
                done += lengths[j]
                chunks.consumed(done)
                if progress is not None:
                    progress(done)
            lengths[j] = n = chunks.fill(j)
            if not n:
                break
            pending[j] = len(lanes)
            for inbox in inboxes:
                inbox.put(j)
        for _ in range(nbuf - 1):
            done += lengths[free.get()]
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for t in threads:
            t.join()
        chunks.close()
    if failures:
        raise failures[0]
    if progress is not None:
        progress(done)
    return done


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield the files named by ``paths``, walking folders recursively in sorted order.

    Paths given explicitly are yielded (files) or walked (folders) even if they are symlinks,
    because the user asked for them. Inside a walk, symlinked folders are not followed (they
    can loop or lead out of the release), symlinks to files are yielded, and anything that is
    not a regular file (FIFOs, sockets, broken links) is skipped. Sorted order makes registers
    and reports reproducible. Raises ``FileNotFoundError`` naming a missing path.
    """
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from _walk(path)
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", str(path))


def _walk(folder: Path) -> Iterator[Path]:
    # Visiting entries sorted by name and descending into each folder as it comes yields the
    # same order as sorting all relative paths by their parts, without collecting them first.
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)
