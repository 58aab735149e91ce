"""IPFS content identifiers (CIDs) of released files and folders, computed from their bytes.

A leak mirrored on IPFS is posted as a CID (`Qm...`, `bafy...`, `ipfs://...`, a gateway
link), never as a SHA-256. A CID is a deterministic function of the bytes *and* of how they
were imported (chunk size, leaf encoding, links per node, CID version), so the release's
CIDs are computed here from its bytes, in the layouts people actually get (`register`
records REGISTER_LAYOUTS, kubo's default; the others cost a SHA-256 pass each):

- `cid-v0`: `ipfs add` with kubo's defaults (profile `unixfs-v0-2015`): 256 KiB chunks,
  leaves wrapped in dag-pb UnixFS nodes, balanced DAG of at most 174 links, CIDv0. The CID
  people post.
- `cid-v1`: `ipfs add --cid-version=1` (and the js importer's defaults): the same shape with
  raw leaves, CIDv1.
- `cid-v1-1m`: kubo's `test-cid-v1` profile: raw leaves, 1 MiB chunks, 174 links.
- `cid-v1-2025`: profile `unixfs-v1-2025` (IPIP-499): raw leaves, 1 MiB chunks, 1024 links.

Layouts with the same chunks and leaves share their leaf hashing (one SHA-256 pass over the
file per leaf kind); each layout only adds its small internal nodes. Everything streams: a
`LeafHasher` is fed the file's bytes in order (any slicing) and keeps at most one chunk and
one pending node per tree level, never the file.

A folder's CID (`ipfs add -r`) is a dag-pb directory node listing its entries sorted by
name. Kubo and the js importer turn a directory into a HAMT shard once its listing passes
256 KiB; that layout is not computed here, so such a folder (thousands of entries) gets no
folder CID (see `folder_cids`).

Only the multihash digest (SHA-256) is matched: CIDv0 and CIDv1 (any multibase) of the
same node name the same block, so the registry keeps the digest and the layout's name.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "KUBO_V0", "KUBO_V1", "KUBO_V1_1M", "LAYOUTS", "LAYOUT_BY_NAME", "REGISTER_LAYOUTS",
    "UNIXFS_V1_2025", "Cid", "CidError", "DagRef", "FolderEntry", "FoundCid", "Layout",
    "LeafHasher", "file_cid_hashers", "file_cids", "find_cids", "folder_cids",
    "folder_entries", "has_hidden", "parse_cid", "release_folder_cids", "results",
    "root_digests",
]

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
# Kubo shards a directory into a HAMT once the estimated size of its links (name and CID
# bytes) passes this, as does the js importer by default (its `links-bytes` estimate).
HAMT_THRESHOLD = 256 * 1024


@dataclass(frozen=True)
class Layout:
    """How a file was imported: what decides its CID besides its bytes."""

    name: str
    cid_version: int
    chunk_size: int
    raw_leaves: bool
    max_links: int


KUBO_V0 = Layout("cid-v0", 0, 256 * 1024, False, 174)
KUBO_V1 = Layout("cid-v1", 1, 256 * 1024, True, 174)
KUBO_V1_1M = Layout("cid-v1-1m", 1, 1024 * 1024, True, 174)
UNIXFS_V1_2025 = Layout("cid-v1-2025", 1, 1024 * 1024, True, 1024)
LAYOUTS: tuple[Layout, ...] = (KUBO_V0, KUBO_V1, KUBO_V1_1M, UNIXFS_V1_2025)
LAYOUT_BY_NAME = {layout.name: layout for layout in LAYOUTS}
# What `register` computes: kubo's default, the CID people post. Each other kind of leaf is
# one more SHA-256 pass over the file (about 0.7 core-seconds per GB, +0.2 to +0.3 times
# md5sum on two cores, benchmarks/register.py), which the register budget (1.3x md5sum)
# does not hold; `cid-v1` shares nothing with it, the two 1 MiB layouts share their leaves.
REGISTER_LAYOUTS: tuple[Layout, ...] = (KUBO_V0,)


class CidError(ValueError):
    """Text that is not a CID weightwatch can read (one line, for the CLI)."""


# --- encodings ----------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7
    raise CidError("truncated varint")


def _bytes_field(tag: int, payload: bytes) -> bytes:
    return _varint(tag << 3 | 2) + _varint(len(payload)) + payload


def _uint_field(tag: int, value: int) -> bytes:
    return _varint(tag << 3) + _varint(value)


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def _radix_encode(data: bytes, digits: str) -> str:
    """`data` as a big number in `digits`' base, each leading zero byte kept as one zero
    digit: the multibase rule for base58btc and base36."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, len(digits))
        out.append(digits[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return digits[0] * zeros + "".join(reversed(out))


def _radix_bytes(n: int, text: str, zero: str) -> bytes:
    """The bytes of number `n` read from `text`, each leading `zero` digit one zero byte."""
    zeros = len(text) - len(text.lstrip(zero))
    return b"\0" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def b58encode(data: bytes) -> str:
    return _radix_encode(data, _B58)


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise CidError(f"not base58btc: {c!r}") from None
    return _radix_bytes(n, text, _B58[0])


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except ValueError:
        raise CidError("not base32") from None


def _b36encode(data: bytes) -> str:
    return _radix_encode(data, "0123456789abcdefghijklmnopqrstuvwxyz")


def _b36decode(text: str) -> bytes:
    try:
        n = int(text, 36)
    except ValueError:
        raise CidError("not base36") from None
    return _radix_bytes(n, text, "0")


# --- CIDs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cid:
    """A CID of a UnixFS block (dag-pb or raw) with a SHA-256 multihash, the only hash
    `ipfs add` uses by default."""

    version: int
    codec: int
    digest: bytes

    def to_bytes(self) -> bytes:
        multihash = bytes((SHA2_256, 32)) + self.digest
        if self.version == 0:
            return multihash
        return _varint(1) + _varint(self.codec) + multihash

    def __str__(self) -> str:
        """The canonical text: base58btc for v0, base32 (`b...`) for v1."""
        if self.version == 0:
            return b58encode(self.to_bytes())
        return "b" + _b32encode(self.to_bytes())


def _cid_from_binary(data: bytes) -> Cid:
    if len(data) == 34 and data[:2] == b"\x12\x20":
        return Cid(0, DAG_PB, data[2:])
    version, pos = _read_varint(data, 0)
    if version != 1:
        raise CidError(f"unknown CID version {version}")
    codec, pos = _read_varint(data, pos)
    if codec not in (DAG_PB, RAW):
        # UnixFS imports make nothing else; a changed character in a CID's prefix would
        # otherwise still carry our digest under some other codec.
        raise CidError(f"not a UnixFS codec: {codec:#x}")
    code, pos = _read_varint(data, pos)
    length, pos = _read_varint(data, pos)
    if code != SHA2_256 or length != 32:
        raise CidError("not a SHA-256 multihash")
    if len(data) - pos != 32:
        raise CidError("wrong digest length")
    return Cid(1, codec, data[pos:])


def parse_cid(text: str) -> tuple[Cid, str]:
    """A CID and the name of its multibase, from its text form: CIDv0 (`Qm...`, base58btc)
    or CIDv1 in base32 (`b`/`B`), base58btc (`z`), base36 (`k`/`K`, subdomain gateways) or
    base16 (`f`/`F`). Only the canonical spelling is accepted: base32's last character has
    unused bits, and a spelling with other bits there would name the same digest while
    being a different string. Raises CidError."""
    if len(text) == 46 and text.startswith("Qm"):
        raw, base = b58decode(text), "base58btc"
        cid = _cid_from_binary(raw)
        if b58encode(raw) != text:
            raise CidError("not canonical base58btc")
        return cid, base
    if not text:
        raise CidError("empty")
    prefix, body = text[0], text[1:]
    again: Callable[[bytes], str]
    if prefix in "bB" and (body.islower() or body.isupper()):
        body = body.lower()
        raw, base, again = _b32decode(body), "base32", _b32encode
    elif prefix == "z":
        raw, base, again = b58decode(body), "base58btc", b58encode
    elif prefix in "kK" and (body.islower() or body.isupper() or body.isdigit()):
        body = body.lower()
        raw, base, again = _b36decode(body), "base36", _b36encode
    elif prefix in "fF" and (body.islower() or body.isupper() or body.isdigit()):
        body = body.lower()
        try:
            raw = bytes.fromhex(body)
        except ValueError:
            raise CidError("not base16") from None
        base, again = "base16", bytes.hex
    else:
        raise CidError("unknown multibase")
    cid = _cid_from_binary(raw)
    if cid.version != 1 or again(raw) != body:
        raise CidError(f"not a canonical {base} CIDv1")
    return cid, base


# Candidates in text: a CID is a whole word, a run of ASCII letters and digits (every
# multibase alphabet used here is within them) of one of these lengths: v0 is 46 base58
# characters from "Qm"; a v1 SHA-256 CID (dag-pb or raw) is 36 bytes: 58 base32, 48 base58,
# 55 base36 or 72 base16 characters after the one-character multibase prefix.
_CID_LENGTHS = frozenset({46, 49, 56, 59, 73})
_ALNUM_MASK = bytes(ord("x") if chr(b).isascii() and chr(b).isalnum() else ord(".")
                    for b in range(256))
_MIN_RUN = b"x" * min(_CID_LENGTHS)
_GATEWAY_RE = re.compile(r"/ipfs/\Z")
_SUBDOMAIN_RE = re.compile(r"\A\.ipfs\.", re.IGNORECASE)


@dataclass(frozen=True)
class FoundCid:
    cid: Cid
    text: str
    form: str      # how it was written: "ipfs:// base58btc", "gateway path base32", ...
    start: int
    end: int


def find_cids(text: str) -> Iterator[FoundCid]:
    """The CIDs written in `text`, in order, each with the form it was written in (bare, an
    `ipfs://` URI, a gateway path `/ipfs/CID/...` or a subdomain gateway `CID.ipfs.host`).

    Runs of letters and digits long enough to be a CID are found by a byte-level pass at
    C speed (most posts have none); only those are decoded."""
    data = text.encode("utf-8", "surrogatepass")
    mask = data.translate(_ALNUM_MASK)
    # The str offset of byte offset `done`, moved forward run by run: each stretch between
    # two runs is decoded once, so a page of thousands of CIDs (a gateway listing) costs
    # linear time, not a decode of everything before each of them.
    done = chars = 0
    run = mask.find(_MIN_RUN)
    while run >= 0:
        end = mask.find(b".", run)
        end = len(mask) if end < 0 else end
        if end - run in _CID_LENGTHS:
            # Runs are ASCII, so `done` and `run` fall between characters.
            chars += len(data[done:run].decode("utf-8", "surrogatepass"))
            done = run
            found = _found(text, data[run:end].decode("ascii"), chars)
            if found is not None:
                yield found
        run = mask.find(_MIN_RUN, end)


def _found(text: str, word: str, start: int) -> FoundCid | None:
    """`word`, at str offset `start` of `text`, as a CID with the form it was written in."""
    try:
        cid, base = parse_cid(word)
    except CidError:
        return None
    stop = start + len(word)
    before = text[max(0, start - 7):start].lower()
    if before.endswith("ipfs://"):
        where = "ipfs://"
    elif _GATEWAY_RE.search(before):
        where = "gateway path"
    elif _SUBDOMAIN_RE.match(text[stop:stop + 6]):
        where = "subdomain gateway"
    else:
        where = "bare"
    version = "CIDv0" if cid.version == 0 else "CIDv1"
    return FoundCid(cid, word, f"{version} {base}, {where}", start, stop)


# --- dag-pb / UnixFS ----------------------------------------------------------------------

_UNIXFS_DIRECTORY = 1
_UNIXFS_FILE = 2


@dataclass(frozen=True)
class DagRef:
    """A DAG node as its parent links to it: its CID, the bytes of every block under it
    (the link's Tsize) and the file bytes it holds."""

    cid: Cid
    tsize: int
    filesize: int


def _unixfs(kind: int, *, data: bytes | memoryview = b"", filesize: int | None = None,
            blocksizes: Sequence[int] = ()) -> bytes:
    out = _uint_field(1, kind)
    if len(data):
        out += _bytes_field(2, bytes(data))
    if filesize is not None:
        out += _uint_field(3, filesize)
    for size in blocksizes:
        out += _uint_field(4, size)
    return out


def _pb_node(links: Iterable[tuple[bytes, str, int]], data: bytes) -> bytes:
    """A dag-pb block: links first (hash, name, tsize; the name is written even when
    empty, as both kubo and the js importer do), then the data."""
    out = b""
    for cid, name, tsize in links:
        out += _bytes_field(2, _bytes_field(1, cid) + _bytes_field(2, name.encode("utf-8"))
                            + _uint_field(3, tsize))
    return out + _bytes_field(1, data)


def _block_ref(block: bytes, version: int, filesize: int, tsize: int) -> DagRef:
    return DagRef(Cid(version, DAG_PB, hashlib.sha256(block).digest()), tsize, filesize)


class _Tree:
    """Balanced layout: leaves grouped by `max_links` into nodes, those nodes grouped the
    same way, and so on until one root is left; built as leaves arrive, holding at most one
    unfinished node per level."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.levels: list[list[DagRef]] = [[]]
        self.leaves = 0

    def add_leaf(self, ref: DagRef) -> None:
        self.leaves += 1
        self._push(0, ref)

    def _push(self, level: int, ref: DagRef) -> None:
        if level == len(self.levels):
            self.levels.append([])
        children = self.levels[level]
        children.append(ref)
        if len(children) == self.layout.max_links:
            self.levels[level] = []
            self._push(level + 1, self._node(children))

    def _node(self, children: list[DagRef]) -> DagRef:
        data = _unixfs(_UNIXFS_FILE, filesize=sum(c.filesize for c in children),
                       blocksizes=[c.filesize for c in children])
        block = _pb_node(((c.cid.to_bytes(), "", c.tsize) for c in children), data)
        return _block_ref(block, self.layout.cid_version, sum(c.filesize for c in children),
                          len(block) + sum(c.tsize for c in children))

    def root(self) -> DagRef:
        if self.leaves == 1:
            return self.levels[0][0]   # a single chunk is its own root
        level = 0
        while True:
            children = self.levels[level]
            higher = any(self.levels[level + 1:])
            if children and (higher or len(children) > 1):
                self.levels[level] = []
                self._push(level + 1, self._node(children))
            elif children:
                return children[0]
            level += 1


class LeafHasher:
    """Cuts a file into fixed-size chunks as its bytes are fed, hashes each chunk as a leaf
    (raw, or wrapped in a UnixFS node) and feeds the leaves to the tree of every layout
    that shares them. Use `update` in file order, then `roots()`."""

    def __init__(self, layouts: Sequence[Layout]):
        first = layouts[0]
        if any((lay.chunk_size, lay.raw_leaves) != (first.chunk_size, first.raw_leaves)
               for lay in layouts):
            raise ValueError("layouts of one LeafHasher must share chunk size and leaves")
        self.chunk_size = first.chunk_size
        self.raw = first.raw_leaves
        self.name = f"ipfs-{'raw' if self.raw else 'pb'}-{self.chunk_size >> 10}k"
        self.trees = [_Tree(layout) for layout in layouts]
        self._pending = bytearray()
        self._size = 0
        self._root_cache: dict[str, DagRef] | None = None

    def update(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data)
        self._size += len(view)
        if self._pending:
            take = min(self.chunk_size - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < self.chunk_size:
                return
            self._leaf(self._pending)
            self._pending = bytearray()
        while len(view) >= self.chunk_size:
            self._leaf(view[:self.chunk_size])
            view = view[self.chunk_size:]
        if view:
            self._pending += view

    def _leaf(self, chunk: bytes | bytearray | memoryview) -> None:
        n = len(chunk)
        if self.raw:
            ref = DagRef(Cid(1, RAW, hashlib.sha256(chunk).digest()), n, n)
            for tree in self.trees:
                tree.add_leaf(ref)
            return
        # A dag-pb leaf is a PBNode whose only field is Data = UnixFS{File, chunk, size};
        # hashed around the chunk rather than copying it into a block.
        inner_head = _uint_field(1, _UNIXFS_FILE) + (
            _varint(2 << 3 | 2) + _varint(n) if n else b"")
        inner_tail = _uint_field(3, n)
        inner_len = len(inner_head) + n + len(inner_tail)
        head = _varint(1 << 3 | 2) + _varint(inner_len) + inner_head
        h = hashlib.sha256(head)
        h.update(chunk)
        h.update(inner_tail)
        digest = h.digest()
        block_len = len(head) + n + len(inner_tail)
        for tree in self.trees:
            cid = Cid(tree.layout.cid_version, DAG_PB, digest)
            tree.add_leaf(DagRef(cid, block_len, n))

    def roots(self) -> dict[str, DagRef]:
        """The root of each layout, by layout name (the fed bytes are the whole file)."""
        if self._root_cache is None:
            if self._pending or self._size == 0:
                # The last, short chunk; an empty file is one empty chunk.
                self._leaf(self._pending)
                self._pending = bytearray()
            self._root_cache = {tree.layout.name: tree.root() for tree in self.trees}
        return self._root_cache


def file_cid_hashers(layouts: Sequence[Layout] = LAYOUTS) -> list[LeafHasher]:
    """One hasher per kind of leaf (each a full SHA-256 pass over the file, so each can run
    on its own core), every layout attached to the hasher whose leaves it uses."""
    groups: dict[tuple[int, bool], list[Layout]] = {}
    for layout in layouts:
        groups.setdefault((layout.chunk_size, layout.raw_leaves), []).append(layout)
    return [LeafHasher(group) for group in groups.values()]


def results(hashers: Iterable[LeafHasher]) -> dict[str, DagRef]:
    """Every layout's root from a set of fed hashers."""
    out: dict[str, DagRef] = {}
    for hasher in hashers:
        out.update(hasher.roots())
    return out


def file_cids(data: bytes, layouts: Sequence[Layout] = LAYOUTS) -> dict[str, DagRef]:
    """The root of each layout for bytes in memory (tests, small files)."""
    hashers = file_cid_hashers(layouts)
    for hasher in hashers:
        hasher.update(data)
    return results(hashers)


# --- folders ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FolderEntry:
    """A folder's entry: a file's roots by layout, or a sub-folder's entries."""

    name: str
    file: Mapping[str, DagRef] | None = None
    children: tuple[FolderEntry, ...] = ()


def folder_cids(entries: Sequence[FolderEntry],
                layouts: Sequence[Layout] = LAYOUTS) -> dict[str, DagRef]:
    """The CID of a folder added recursively (`ipfs add -r`), per layout: a UnixFS
    directory node linking each entry by name, sorted by the names' bytes. A layout is left
    out where a file lacks its root, or where a directory would be HAMT-sharded (its links
    pass HAMT_THRESHOLD bytes, kubo's rule), a layout not computed here."""
    out: dict[str, DagRef] = {}
    for layout in layouts:
        ref = _directory(entries, layout)
        if ref is not None:
            out[layout.name] = ref
    return out


def _directory(entries: Sequence[FolderEntry], layout: Layout) -> DagRef | None:
    links: list[tuple[bytes, str, int]] = []
    for entry in sorted(entries, key=lambda e: e.name.encode("utf-8")):
        if entry.file is not None:
            ref = entry.file.get(layout.name)
        else:
            ref = _directory(entry.children, layout)
        if ref is None:
            return None
        links.append((ref.cid.to_bytes(), entry.name, ref.tsize))
    # At the threshold itself kubo and the js importer may differ: no CID rather than a guess.
    if sum(len(cid) + len(name.encode("utf-8")) for cid, name, _ in links) >= HAMT_THRESHOLD:
        return None
    block = _pb_node(links, _unixfs(_UNIXFS_DIRECTORY))
    return _block_ref(block, layout.cid_version, 0,
                      len(block) + sum(tsize for _, _, tsize in links))


def folder_entries(folder: str | os.PathLike[str], roots: Mapping[str, Mapping[str, DagRef]],
                   *, hidden: bool = True) -> tuple[FolderEntry, ...] | None:
    """A folder's tree as `ipfs add -r` reads it, each file given by its roots (`roots`,
    keyed by the file's path as `os.path.join` spells it under `folder`). Without `hidden`,
    names starting with "." are left out, as kubo does unless given `--hidden`. None where
    the folder holds what is not added as a plain file or folder (a symlink, which kubo adds
    as a link node; a FIFO), or a file without roots: no CID is better than a wrong one."""
    entries: list[FolderEntry] = []
    with os.scandir(folder) as it:
        listing = sorted(it, key=lambda e: e.name)
    for entry in listing:
        if not hidden and entry.name.startswith("."):
            continue
        if entry.is_symlink():
            return None
        if entry.is_dir():
            children = folder_entries(entry.path, roots, hidden=hidden)
            if children is None:
                return None
            entries.append(FolderEntry(entry.name, children=children))
        elif entry.is_file() and entry.path in roots:
            entries.append(FolderEntry(entry.name, file=roots[entry.path]))
        else:
            return None
    return tuple(entries)


def has_hidden(entries: Iterable[FolderEntry]) -> bool:
    """Whether any name in the tree starts with "." (kubo leaves those out by default)."""
    return any(e.name.startswith(".") or has_hidden(e.children) for e in entries)


def release_folder_cids(folder: str | os.PathLike[str], roots: Mapping[str, Mapping[str, DagRef]],
                        layouts: Sequence[Layout] = LAYOUTS) -> list[tuple[str, str]]:
    """(layout name, hex root digest) of a folder added recursively, as `ipfs add -r`
    leaves it (hidden files out) and, where it has hidden files, as `--hidden` and the js
    importer add it; empty where it cannot be computed (see folder_entries)."""
    out: list[tuple[str, str]] = []
    full = folder_entries(folder, roots)
    if full is None:
        return out
    trees = [full, folder_entries(folder, roots, hidden=False)] if has_hidden(full) else [full]
    for entries in trees:
        for name, ref in folder_cids(entries or (), layouts).items():
            if (name, ref.cid.digest.hex()) not in out:
                out.append((name, ref.cid.digest.hex()))
    return out


def root_digests(refs: Mapping[str, DagRef]) -> dict[str, str]:
    """A file's roots as the registry keeps them: layout name to hex SHA-256 digest."""
    return {name: ref.cid.digest.hex() for name, ref in refs.items()}
