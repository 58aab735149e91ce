"""BitTorrent metainfo (.torrent) files, v1, v2 (BEP 52) and hybrid, read safely.

A .torrent found on a crawled index is hostile input: it may be truncated, random bytes, a
length prefix of 10^12, lists nested a million deep, or a well-formed file whose info dict
is a number. ``parse_torrent`` turns any of these into one :class:`TorrentError` line and a
good file into a :class:`TorrentInfo`: both infohashes, the file list with sizes (BEP 47
pad files left out) and each file's v2 pieces root.

Decoding is done by ``fastbencode``, which is strict (sorted keys, no leading zeros, no
trailing junk). Infohashes are computed over the info dict's bytes exactly as they appear in
the file, never over a re-encoding: a small iterative scanner, bounded in depth, finds that
byte span first and also refuses pathological nesting before the decoder sees it.

``pieces_root`` computes the BEP 52 Merkle root of a file's bytes, which a release engineer
can register and which then matches inside any v2 or hybrid torrent of the same file.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import quote

import fastbencode

__all__ = [
    "BLOCK_SIZE",
    "PiecesRootHasher",
    "MAX_TORRENT_BYTES",
    "TorrentError",
    "TorrentFile",
    "TorrentInfo",
    "magnet_for",
    "parse_torrent",
    "pieces_root",
    "pieces_root_of_stream",
]

MAX_TORRENT_BYTES = 10 * 1024 * 1024
BLOCK_SIZE = 16 * 1024  # BEP 52 Merkle leaves
# Leaves hashed and reduced together by PiecesRootHasher (16 MiB of file, 32 KB of hashes).
_BATCH = 1024
# Deepest container nesting a real torrent needs: top dict > info > file tree > path
# components (bounded below) > file node > leaf dict. Anything deeper is refused unread.
MAX_NESTING = 80
MAX_PATH_DEPTH = 64
MAX_PIECE_LENGTH = 1 << 30  # 1 GiB; real creators stop at 16-64 MiB
MAX_FILE_LENGTH = 1 << 50  # 1 PiB: beyond any real file, well inside int64
MAX_TRACKERS = 200
_MAX_INT_DIGITS = 64
_MAX_LEN_DIGITS = 20


class TorrentError(ValueError):
    """A .torrent that is malformed or hostile; the message is one line."""


class TorrentFile(NamedTuple):
    """One file of a torrent: '/'-joined path (under the torrent's name for a multi-file
    torrent), length in bytes, and the v2 pieces root (64 hex) or None (v1-only torrent or
    empty file)."""

    path: str
    length: int
    pieces_root: str | None


@dataclass
class TorrentInfo:
    name: str
    infohash_v1: str | None  # SHA-1 of the info bytes, 40 hex; None for a pure v2 torrent
    infohash_v2: str | None  # SHA-256 of the info bytes, 64 hex; None for a v1 torrent
    version: str  # 'v1' | 'v2' | 'hybrid'
    piece_length: int
    files: list[TorrentFile]
    total_size: int
    trackers: list[str] = field(default_factory=list)
    comment: str | None = None
    created_by: str | None = None
    creation_date: int | None = None


# ------------------------------------------------------------------------- scanning


def _fail(message: str) -> TorrentError:
    return TorrentError(message)


def _read_len(data: bytes, pos: int, n: int) -> tuple[int, int]:
    """Parse a string's `<len>:` prefix at pos; return (start of bytes, end of bytes)."""
    colon = data.find(b":", pos, pos + _MAX_LEN_DIGITS + 1)
    if colon < 0:
        if data.find(b":", pos) < 0 and n - pos <= _MAX_LEN_DIGITS:
            raise _fail(f"truncated: string length at byte {pos} is not terminated")
        raise _fail(f"string length at byte {pos} is not a number of at most "
                    f"{_MAX_LEN_DIGITS} digits")
    digits = data[pos:colon]
    if not digits.isdigit():
        raise _fail(f"string length at byte {pos} is not a number")
    length = int(digits)
    end = colon + 1 + length
    if end > n:
        raise _fail(f"truncated: string at byte {pos} declares {length} bytes, "
                    f"{n - colon - 1} remain")
    return colon + 1, end


class _Budget:
    """How many bencode items a scan may visit: a real torrent has about ten per file, so
    millions of empty strings are an attack on the parser's time, refused early."""

    def __init__(self, items: int):
        self.left = items

    def spend(self, n: int, pos: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _fail(f"too many bencode items (at byte {pos}) for a torrent")


def _skip_value(data: bytes, pos: int, n: int, depth: int, budget: _Budget) -> int:
    """The end offset of the bencoded value starting at pos; iterative and bounded.

    Strings, the commonest item, are skipped inline (a million of them take about a
    second); anything unusual goes to `_read_len` for its error message.
    """
    start_depth = depth
    visited = 0
    find = data.find
    while True:
        if pos >= n:
            raise _fail("truncated: data ends inside a value")
        c = data[pos]
        visited += 1
        if visited >= 65536:
            budget.spend(visited, pos)
            visited = 0
        if 0x30 <= c <= 0x39:  # a string: <length>:<bytes>
            colon = find(b":", pos, pos + _MAX_LEN_DIGITS + 1)
            digits = data[pos:colon] if colon > 0 else b""
            end = colon + 1 + int(digits) if digits.isdigit() else n + 1
            if end > n:
                _read_len(data, pos, n)  # raises, saying which
            pos = end
        elif c == 0x6C or c == 0x64:  # 'l' or 'd'
            depth += 1
            if depth > MAX_NESTING:
                raise _fail(f"nesting deeper than {MAX_NESTING} levels at byte {pos}")
            pos += 1
            continue
        elif c == 0x65:  # 'e'
            if depth == start_depth:
                raise _fail(f"unexpected end marker at byte {pos}")
            depth -= 1
            pos += 1
        elif c == 0x69:  # 'i'
            end = find(b"e", pos + 1, pos + 2 + _MAX_INT_DIGITS)
            if end < 0:
                if n - pos <= _MAX_INT_DIGITS + 1:
                    raise _fail(f"truncated: integer at byte {pos} is not terminated")
                raise _fail(f"integer at byte {pos} is longer than {_MAX_INT_DIGITS} digits")
            pos = end + 1
        else:
            raise _fail(f"not bencode: unexpected byte 0x{c:02x} at offset {pos}")
        if depth == start_depth:
            budget.spend(visited, pos)
            return pos


def _info_span(data: bytes, max_items: int) -> tuple[int, int]:
    """Byte span of the top-level dict's `info` value, with the structure checked."""
    n = len(data)
    if n == 0:
        raise _fail("empty file")
    if data[0] != 0x64:
        raise _fail("not a torrent: metainfo is not a bencoded dictionary")
    pos, span = 1, None
    budget = _Budget(max_items)
    while True:
        if pos >= n:
            raise _fail("truncated: the metainfo dictionary is not closed")
        if data[pos] == 0x65:
            pos += 1
            break
        if not 0x30 <= data[pos] <= 0x39:
            raise _fail(f"metainfo dictionary key at byte {pos} is not a string")
        kstart, kend = _read_len(data, pos, n)
        value_start = kend
        pos = _skip_value(data, value_start, n, 1, budget)
        if data[kstart:kend] == b"info":
            span = (value_start, pos)
    if pos != n:
        raise _fail(f"{n - pos} bytes of trailing junk after the metainfo dictionary")
    if span is None:
        raise _fail("no info dictionary")
    return span


# ------------------------------------------------------------------------- validation


def _text(value: Any, what: str) -> str:
    if not isinstance(value, bytes):
        raise _fail(f"{what} is not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(f"{what} is not valid UTF-8") from None


def _optional_text(value: Any) -> str | None:
    if not isinstance(value, bytes):
        return None
    text = value.decode("utf-8", errors="replace").strip()
    return " ".join(text.split())[:2000] or None


def _component(value: Any, what: str) -> str:
    text = _text(value, what)
    if text in ("", ".", ".."):
        raise _fail(f"{what} is {text!r}, not a file or folder name")
    if "/" in text or "\x00" in text:
        raise _fail(f"{what} {text[:60]!r} contains '/' or NUL")
    return text


def _length(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _fail(f"{what} is not a non-negative integer")
    if value > MAX_FILE_LENGTH:
        raise _fail(f"{what} of {value} bytes is beyond any real file")
    return value


def _v1_files(info: dict[bytes, Any], name: str, max_files: int
              ) -> tuple[list[TorrentFile], int]:
    """Non-pad files and the length the v1 pieces cover (pad files included)."""
    has_length, has_files = b"length" in info, b"files" in info
    if has_length == has_files:
        raise _fail("info needs exactly one of 'length' and 'files'")
    if has_length:
        length = _length(info[b"length"], "length")
        return [TorrentFile(name, length, None)], length
    entries = info[b"files"]
    if not isinstance(entries, list):
        raise _fail("'files' is not a list")
    if len(entries) > max_files:
        raise _fail(f"more than {max_files} files")
    files, covered = [], 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _fail(f"files[{i}] is not a dictionary")
        length = _length(entry.get(b"length"), f"files[{i}].length")
        covered += length
        attr = entry.get(b"attr", b"")
        if isinstance(attr, bytes) and b"p" in attr:
            continue  # BEP 47 pad file: alignment, not content
        path = entry.get(b"path")
        if not isinstance(path, list) or not path:
            raise _fail(f"files[{i}].path is not a non-empty list")
        if len(path) > MAX_PATH_DEPTH:
            raise _fail(f"files[{i}].path is deeper than {MAX_PATH_DEPTH} folders")
        parts = [_component(p, f"files[{i}].path component") for p in path]
        files.append(TorrentFile("/".join([name, *parts]), length, None))
    return files, covered


def _v2_files(tree: Any, name: str, max_files: int) -> list[TorrentFile]:
    if not isinstance(tree, dict) or not tree:
        raise _fail("'file tree' is not a non-empty dictionary")
    found: list[tuple[list[str], int, str | None]] = []
    stack: list[tuple[dict[bytes, Any], list[str]]] = [(tree, [])]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_PATH_DEPTH:
            raise _fail(f"file tree is deeper than {MAX_PATH_DEPTH} folders")
        # Reversed so that files come out in the tree's (sorted) order.
        for key in sorted(node, reverse=True):
            child = node[key]
            if key == b"":
                raise _fail(f"file tree entry {'/'.join(path)[:80]!r} mixes a file with "
                            "folder entries" if path else "file tree root is a file")
            part = _component(key, "file tree name")
            if not isinstance(child, dict) or not child:
                raise _fail(f"file tree entry {part[:60]!r} is not a non-empty dictionary")
            if b"" in child:
                if len(child) != 1:
                    raise _fail(f"file tree entry {part[:60]!r} mixes a file with folder "
                                "entries")
                found.append((path + [part], *_v2_leaf(child[b""], part)))
                if len(found) > max_files:
                    raise _fail(f"more than {max_files} files")
            else:
                stack.append((child, path + [part]))
    found.sort(key=lambda f: [part.encode() for part in f[0]])
    single = len(found) == 1 and len(found[0][0]) == 1
    return [TorrentFile("/".join(parts if single else [name, *parts]), length, root)
            for parts, length, root in found]


def _v2_leaf(leaf: Any, part: str) -> tuple[int, str | None]:
    if not isinstance(leaf, dict):
        raise _fail(f"file {part[:60]!r} has no length dictionary")
    length = _length(leaf.get(b"length"), f"file {part[:60]!r} length")
    root = leaf.get(b"pieces root")
    if length == 0:
        return 0, None
    if not isinstance(root, bytes) or len(root) != 32:
        raise _fail(f"file {part[:60]!r} has no 32-byte pieces root")
    return length, root.hex()


def _trackers(meta: dict[bytes, Any]) -> list[str]:
    out: list[str] = []
    candidates: list[Any] = [meta.get(b"announce")]
    tiers = meta.get(b"announce-list")
    if isinstance(tiers, list):
        for tier in tiers[:MAX_TRACKERS]:
            if isinstance(tier, list):
                candidates.extend(tier[:MAX_TRACKERS])
    for value in candidates:
        url = _optional_text(value)
        if url and url not in out:
            out.append(url)
            if len(out) >= MAX_TRACKERS:
                break
    return out


# ------------------------------------------------------------------------- public API


def parse_torrent(data: bytes, *, max_bytes: int = MAX_TORRENT_BYTES,
                  max_files: int = 100_000) -> TorrentInfo:
    """Parse and validate a .torrent; raise :class:`TorrentError` (one line) if it is not a
    well-formed v1, v2 or hybrid metainfo file."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_torrent takes bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise _fail(f"{len(data)} bytes, over the {max_bytes}-byte cap for a .torrent")
    start, end = _info_span(data, 20 * max_files + 100_000)
    if data[start] != 0x64:
        raise _fail("'info' is not a dictionary")
    try:
        # fastbencode re-exports bdecode without __all__, which strict mypy reads as private.
        meta = fastbencode.bdecode(data)
    except (ValueError, TypeError, OverflowError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(f"not strict bencode: {reason[:200]}") from None
    if not isinstance(meta, dict):  # _info_span already saw a dict; belt and braces
        raise _fail("not a torrent: metainfo is not a dictionary")
    info = meta.get(b"info")
    if not isinstance(info, dict):
        raise _fail("'info' is not a dictionary")
    info_bytes = data[start:end]

    name = _component(info.get(b"name"), "name")
    piece_length = info.get(b"piece length")
    if type(piece_length) is not int or not 0 < piece_length <= MAX_PIECE_LENGTH:
        raise _fail(f"piece length is not an integer between 1 and {MAX_PIECE_LENGTH}")

    meta_version = info.get(b"meta version")
    if meta_version is not None and meta_version != 2:
        raise _fail(f"unsupported meta version {meta_version!r}")
    has_v2 = meta_version == 2
    has_v1 = b"pieces" in info or b"length" in info or b"files" in info
    if has_v2 and b"file tree" not in info:
        raise _fail("meta version 2 without a 'file tree'")
    if not has_v2 and b"file tree" in info:
        raise _fail("'file tree' without meta version 2")

    files_v1: list[TorrentFile] = []
    if has_v1:
        pieces = info.get(b"pieces")
        if not isinstance(pieces, bytes) or len(pieces) % 20:
            raise _fail("pieces is not a string of 20-byte SHA-1 hashes")
        files_v1, covered = _v1_files(info, name, max_files)
        want = math.ceil(covered / piece_length)
        if len(pieces) // 20 != want:
            raise _fail(f"{len(pieces) // 20} piece hashes for {covered} bytes in pieces of "
                        f"{piece_length} (expected {want})")
    files_v2: list[TorrentFile] = []
    if has_v2:
        if piece_length < BLOCK_SIZE or piece_length & (piece_length - 1):
            raise _fail(f"v2 piece length {piece_length} is not a power of two >= 16 KiB")
        files_v2 = _v2_files(info[b"file tree"], name, max_files)

    if has_v1 and has_v2:
        # A one-file torrent may be single-file in one layout and a folder in the other.
        def layout(files: list[TorrentFile]) -> list[tuple[str, int]]:
            return sorted((f.path.removeprefix(name + "/"), f.length) for f in files)
        v1, v2 = layout(files_v1), layout(files_v2)
        if v1 != v2:
            raise _fail("hybrid torrent's v1 and v2 file lists differ")
        version, files = "hybrid", files_v2
    elif has_v2:
        version, files = "v2", files_v2
    else:
        version, files = "v1", files_v1

    creation = meta.get(b"creation date")
    return TorrentInfo(
        name=name,
        infohash_v1=hashlib.sha1(info_bytes).hexdigest() if has_v1 else None,
        infohash_v2=hashlib.sha256(info_bytes).hexdigest() if has_v2 else None,
        version=version,
        piece_length=piece_length,
        files=files,
        total_size=sum(f.length for f in files),
        trackers=_trackers(meta),
        comment=_optional_text(meta.get(b"comment")),
        created_by=_optional_text(meta.get(b"created by")),
        creation_date=creation if type(creation) is int else None,
    )


def magnet_for(info: TorrentInfo) -> str:
    """A magnet URI: btih and/or btmh (multihash 0x12 0x20), name, size and trackers."""
    parts = []
    if info.infohash_v1:
        parts.append(f"xt=urn:btih:{info.infohash_v1}")
    if info.infohash_v2:
        parts.append(f"xt=urn:btmh:1220{info.infohash_v2}")
    parts.append(f"dn={quote(info.name, safe='')}")
    parts.append(f"xl={info.total_size}")
    parts += [f"tr={quote(tr, safe='')}" for tr in info.trackers]
    return "magnet:?" + "&".join(parts)


class PiecesRootHasher:
    """The BEP 52 pieces root of a file fed in chunks of any size, in O(log n) memory.

    Leaves are the SHA-256 of each 16 KiB block (the last at its length); the leaf layer
    is padded with zero hashes (32 zero bytes) to a power of two, and each parent is
    SHA-256(left || right). Full subtrees are merged as soon as they are complete, so a
    stack of at most log2(blocks) hashes is kept instead of every leaf: the same root for a
    4 GB file in a few KB. `name` and `update` make it a drop-in hasher for digests.py.
    """

    name = "pieces_root"

    def __init__(self) -> None:
        self._partial = bytearray()
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), levels strictly falling
        self._leaves = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self._partial:
            take = min(BLOCK_SIZE - len(self._partial), len(view))
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) < BLOCK_SIZE:
                return
            self._leaf(hashlib.sha256(self._partial).digest())
            self._partial = bytearray()
        whole = len(view) - len(view) % BLOCK_SIZE
        if whole:
            self._blocks(view[:whole])
        if whole < len(view):
            self._partial += view[whole:]

    def _leaf(self, digest: bytes) -> None:
        self._leaves += 1
        self._stack = _pushed(self._stack, 0, digest)

    def _blocks(self, view: memoryview) -> None:
        """Add whole 16 KiB blocks."""
        sha256 = hashlib.sha256
        self._reduce(len(view) // BLOCK_SIZE,
                     lambda i: sha256(view[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]).digest())

    def add_leaf_digests(self, digests: bytes) -> None:
        """Add whole leaves hashed elsewhere (32 bytes each, in file order): the stitched
        pass of fingerprints/_stitch.c hashes them beside MD5 and the file's SHA-256."""
        if self._partial:
            raise ValueError("leaf digests after a partial block")
        self._reduce(len(digests) // 32, lambda i: digests[32 * i:32 * i + 32])

    def last_leaf_digest(self, digest: bytes) -> None:
        """The file's last, shorter leaf, hashed elsewhere at its length."""
        if self._partial:
            raise ValueError("leaf digests after a partial block")
        self._leaf(digest)

    def _reduce(self, count: int, leaf: Callable[[int], bytes]) -> None:
        """Add `count` leaves. Pushing leaves one by one cost a stack copy and a merge
        loop per leaf in Python; instead each run of 2^k leaves that starts on a multiple of
        2^k (a subtree the one-by-one pushes would build) is reduced level by level in list
        comprehensions and pushed once. The runs are at most _BATCH leaves, so memory stays
        a few KB of hashes whatever the number of leaves."""
        sha256 = hashlib.sha256
        start = 0
        while start < count:
            # The largest aligned subtree that fits: bounded by the leaves left, by the
            # alignment of the leaves hashed so far, and by _BATCH.
            size = min(_BATCH, 1 << ((count - start).bit_length() - 1))
            if self._leaves:
                size = min(size, self._leaves & -self._leaves)
            layer = [leaf(start + i) for i in range(size)]
            while len(layer) > 1:
                layer = [sha256(layer[i] + layer[i + 1]).digest()
                         for i in range(0, len(layer), 2)]
            self._stack = _pushed(self._stack, size.bit_length() - 1, layer[0])
            self._leaves += size
            start += size

    def hexdigest(self) -> str | None:
        """The root as 64 hex, or None for an empty file (a v2 torrent lists no root)."""
        stack, leaves = list(self._stack), self._leaves
        if self._partial:
            leaves += 1
            stack = _pushed(stack, 0, hashlib.sha256(self._partial).digest())
        if not leaves:
            return None
        # Pad with zero subtrees until one full tree of 2^k leaves remains: the smallest
        # subtree on top gets a zero sibling of its own size, and merges upwards.
        while len(stack) > 1:
            level, digest = stack.pop()
            stack = _pushed(stack, level + 1,
                            hashlib.sha256(digest + _zero_subtree(level)).digest())
        return stack[0][1].hex()


def _pushed(stack: list[tuple[int, bytes]], level: int, digest: bytes) -> list[tuple[int, bytes]]:
    """`stack` with a subtree of `level` added and complete pairs merged (a copy)."""
    stack = list(stack)
    while stack and stack[-1][0] == level:
        _, left = stack.pop()
        digest = hashlib.sha256(left + digest).digest()
        level += 1
    stack.append((level, digest))
    return stack


def _zero_subtree(level: int) -> bytes:
    """The root of a subtree of 2^level zero leaves."""
    digest = bytes(32)
    for _ in range(level):
        digest = hashlib.sha256(digest + digest).digest()
    return digest


def pieces_root_of_stream(stream: BinaryIO) -> str | None:
    """The BEP 52 pieces root of a file read from a binary stream (None if it is empty)."""
    hasher = PiecesRootHasher()
    while chunk := stream.read(1 << 20):
        hasher.update(chunk)
    return hasher.hexdigest()


def pieces_root(data: bytes) -> str | None:
    """The BEP 52 pieces root of a file's bytes, 64 hex; None for an empty file."""
    hasher = PiecesRootHasher()
    hasher.update(data)
    return hasher.hexdigest()
