"""File digests of weight files, computed in one read pass.

Leaks are matched on whichever digest the leaker's venue publishes: model hubs show SHA-256
(LFS oids), checksum lists use SHA-256, SHA-1 or MD5, imageboards show MD5, BitTorrent v2
torrents carry each file's pieces root (BEP 52), and sigstore model signing can hash 1 GB
shards (its default is one SHA-256 per file, which every file gets here). Weight files are
tens of gigabytes, so reading them once per digest is not an option. IPFS CIDs of the
file in the layouts `ipfs add` produces (fingerprints.ipfs) are computed in the same pass
when asked for: each kind of leaf is one more hasher. Here the file is read once, into a small ring of reusable buffers, and each chunk is
fed to one worker thread per digest while the next chunks are read. hashlib releases the GIL
on large buffers, so the digests run on every core at once, and peak memory is a few chunks
whatever the file size.
"""

from __future__ import annotations

import errno
import hashlib
import io
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
from fingerprints.torrent import PiecesRootHasher

__all__ = ["DigestError", "FileDigests", "digest_file", "iter_files"]

_ALGOS = ("sha256", "sha1", "md5")
# sigstore model-signing's shard size: with `shards=True`, files above it also get a
# SHA-256 per shard. Off by default: it is a second full SHA-256 pass over every large file
# (about a third more CPU on two cores) for a layout model-signing uses only when asked to.
SHARD_SIZE = 1_000_000_000


class Hash(Protocol):
    """What a worker feeds: hashlib objects, the pieces root and the shard hasher."""

    @property
    def name(self) -> str: ...

    def update(self, data: bytes | memoryview, /) -> None: ...


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
# Chunks in flight between the reader and the slowest hasher; see _hash_threaded.
_BUFFERS = 8


def _yield_to_md5() -> None:
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
    """

    path: str
    size: int
    sha256: str
    sha1: str
    md5: str
    pieces_root: str | None = None
    shards: tuple[str, ...] = ()
    cids: Mapping[str, DagRef] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Plain dict, for JSON output and database rows; CIDs (where computed) as text."""
        out = asdict(self)
        del out["cids"]
        if self.cids:
            out["cids"] = {name: str(ref.cid) for name, ref in self.cids.items()}
        return out


def digest_file(
    path: str | os.PathLike[str],
    *,
    chunk_size: int = 4 << 20,
    progress: Callable[[int], None] | None = None,
    shards: bool = False,
    cid_layouts: Sequence[Layout] = (),
) -> FileDigests:
    """Compute SHA-256, SHA-1, MD5 and the BEP 52 pieces root of a regular file in a single
    streaming read, and with `shards` the SHA-256 of each 1 GB shard too, and the IPFS CID
    of the file in each of `cid_layouts`.

    ``progress(n)`` is called from the calling thread with the number of bytes fully hashed so
    far, at least once and last with the file size; an exception it raises aborts hashing (use
    it to cancel). Raises :class:`DigestError` naming the path if the file cannot be opened or
    read, or is not a regular file (a FIFO or a device would block or never end).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    name = os.fspath(path)
    algos = [hashlib.new(a) for a in _ALGOS]
    pieces_root = PiecesRootHasher()
    cid_hashers = file_cid_hashers(cid_layouts) if cid_layouts else []
    hashers: list[Hash] = [*algos, pieces_root, *cid_hashers]
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
                hashers.append(sharder)
            if st.st_size <= chunk_size:
                # One chunk: nothing to overlap with reading, and thread start-up and extra
                # buffers cost more than the parallel hashing saves.
                size = _hash_inline(f, hashers, max(1, st.st_size), progress)
            else:
                chunks = -(-st.st_size // chunk_size)
                size = _hash_threaded(f, hashers, chunk_size, min(_BUFFERS, chunks), progress)
    except DigestError:
        raise
    except OSError as e:
        raise DigestError(e.errno, f"cannot read: {e.strerror or e}", name) from e
    if size != st.st_size:
        # Digests of a file being written describe no file that exists.
        raise DigestError(errno.EAGAIN, f"changed size while being read ({st.st_size} -> "
                                        f"{size} bytes); register it once it is complete", name)
    sha256, sha1, md5 = (h.hexdigest() for h in algos)
    pieces = pieces_root.hexdigest()
    shard_list = sharder.hexdigests() if sharder else () if large else (sha256,)
    return FileDigests(path=name, size=size, sha256=sha256, sha1=sha1, md5=md5,
                       pieces_root=pieces, shards=shard_list, cids=cid_results(cid_hashers))


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


def _hash_threaded(
    f: io.RawIOBase,
    hashers: list[Hash],
    bufsize: int,
    nbuf: int,
    progress: Callable[[int], None] | None,
) -> int:
    # One long-lived worker per hasher, each fed buffer indices in file order. A ring of
    # buffers (rather than two, with a barrier per chunk) lets the fast hashers run ahead
    # while MD5 keeps a core to itself (see _yield_to_md5): on 2 cores this is close to
    # MD5's speed alone, where a per-chunk barrier was about a third slower. A buffer is refilled only once every hasher has
    # finished with it, so memory stays at nbuf * bufsize whatever the file size.
    buffers = [memoryview(bytearray(bufsize)) for _ in range(nbuf)]
    lengths = [0] * nbuf
    pending = [0] * nbuf  # hashers that have not yet consumed buffer j
    lock = threading.Lock()
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for j in range(nbuf):
        free.put(j)
    inboxes: list[queue.SimpleQueue[int | None]] = [queue.SimpleQueue() for _ in hashers]
    failures: list[BaseException] = []

    def work(h: Hash, inbox: queue.SimpleQueue[int | None]) -> None:
        if h.name != "md5":
            _yield_to_md5()
        while (j := inbox.get()) is not None:
            try:
                h.update(buffers[j][: lengths[j]])
            except BaseException as e:  # reported by the reader; the buffer must come back
                failures.append(e)
            with lock:
                pending[j] -= 1
                last = pending[j] == 0
            if last:
                free.put(j)

    threads = [
        threading.Thread(target=work, args=(h, q), name=f"digest-{h.name}", daemon=True)
        for h, q in zip(hashers, inboxes)
    ]
    for t in threads:
        t.start()
    done = 0
    try:
        # Buffers come back in file order because every worker consumes them in that order,
        # so `done` counts a prefix of the file. lengths[j] is counted when j comes back.
        while True:
            j = free.get()
            if lengths[j]:
                done += lengths[j]
                if progress is not None:
                    progress(done)
            lengths[j] = n = f.readinto(buffers[j])
            if not n:
                break
            pending[j] = len(hashers)
            for inbox in inboxes:
                inbox.put(j)
        for _ in range(nbuf - 1):
            done += lengths[free.get()]
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for t in threads:
            t.join()
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
