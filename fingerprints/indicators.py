"""Digests as people write them: checksum lists, magnet links, infohashes, hex in free text.

Two jobs, both pure text work:

- ``parse_indicator_file`` reads a file an operator imports (a release's ``SHA256SUMS``, a
  list of known magnets, Git LFS pointers, a size list, a model hub's model-info or tree
  JSON (Hugging Face's, or a Civitai model version's with its short hashes), a released
  .torrent) strictly: every line (or JSON entry) must be understood, and
  an error names the line (or entry), because a silently skipped line is a leak that will
  never be matched. Besides digests it returns the released files' names and sizes that
  carry no digest (a size list, a v1 torrent's file list, a hub file outside LFS), which
  manifest matching compares torrent file lists with.
- ``scan_text`` finds candidate digests in crawled documents leniently and fast; the
  detector decides which candidates matter by looking them up.

Everything is normalised to lowercase hex so that a digest has one spelling in the registry,
whatever encoding (upper case, base32, base64, multihash) the venue used.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fingerprints.algos import SHORT_FORMS, value_lengths
from fingerprints.torrent import MAX_FILE_LENGTH, TorrentError, parse_torrent

__all__ = [
    "FileEntry",
    "Indicator",
    "IndicatorError",
    "Magnet",
    "Token",
    "btih_to_hex",
    "magnet_indicators",
    "md5_b64_to_hex",
    "parse_hub_json",
    "parse_indicator_file",
    "parse_indicator_text",
    "ParsedIndicators",
    "SHORT_CONTEXTS",
    "ShortContext",
    "ShortToken",
    "parse_magnet",
    "scan_short_hashes",
    "scan_text",
]

_ALGO_BY_HEX_LEN = {32: "md5", 40: "sha1", 64: "sha256"}
_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_B32_32 = re.compile(r"[A-Za-z2-7]{32}")
# Multihash prefix of a BEP 52 v2 infohash: 0x12 = sha2-256, 0x20 = 32 bytes.
_BTMH_PREFIX = "1220"


@dataclass(frozen=True)
class Indicator:
    """One known digest of something released, as read from an indicator file."""

    # "md5" | "sha1" | "sha256" | "btih" | "btmh" | "pieces_root" (a .torrent's); a Civitai
    # record's also "autov1" | "autov2" | "autov3" | "crc32" | "blake3" (fingerprints.algos)
    algo: str
    value: str  # lowercase hex
    name: str | None = None  # file name or torrent dn
    size: int | None = None
    line: int | None = None
    # Where in a JSON file it was read, e.g. "siblings[3]" or "[3]" (None for text lines).
    origin: str | None = None


class IndicatorError(ValueError):
    """An indicator file line (or JSON entry) that cannot be understood; the message names
    the line (``line N: ...``) or the entry (``siblings[3].lfs.sha256: ...``)."""

    def __init__(self, line: int | None, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{where if where is not None else f'line {line}'}: {message}")
        self.line = line
        self.where = where


def btih_to_hex(s: str) -> str:
    """Return a BitTorrent v1 infohash as 40 lowercase hex from 40-hex or 32-char base32.

    Both spellings occur in magnets (base32 is the older one), and the registry needs one.
    """
    s = s.strip()
    if _HEX40.fullmatch(s):
        return s.lower()
    if _B32_32.fullmatch(s):
        return base64.b32decode(s.upper()).hex()
    raise ValueError(f"not a BitTorrent v1 infohash (40 hex or 32 base32): {s[:60]!r}")


def md5_b64_to_hex(s: str) -> str:
    """Return an imageboard attachment md5 (base64 of the 16 raw bytes) as 32 lowercase hex.

    Padding is restored if a scraper stripped it. Anything that does not decode to exactly 16
    bytes is refused, so a truncated or mangled value never looks like a digest.
    """
    t = s.strip()
    t += "=" * (-len(t) % 4)
    try:
        raw = base64.b64decode(t, validate=True)
    except binascii.Error as e:
        raise ValueError(f"not base64: {s[:60]!r}") from e
    if len(raw) != 16:
        raise ValueError(f"base64 md5 must decode to 16 bytes, got {len(raw)}: {s[:60]!r}")
    return raw.hex()


@dataclass(frozen=True)
class Magnet:
    """The parts of a magnet link that identify a torrent."""

    btih: str | None  # v1 infohash, 40 lowercase hex
    btmh: str | None  # v2 infohash (SHA-256), 64 lowercase hex, multihash prefix removed
    name: str | None
    length: int | None
    trackers: tuple[str, ...]


def parse_magnet(uri: str) -> Magnet:
    """Parse a magnet URI; raise ``ValueError`` if it carries neither a btih nor a btmh.

    Accepts HTML-escaped ``&amp;`` separators, percent-encoding, several ``xt`` (hybrid
    torrents carry both hashes, some clients number them ``xt.1``), upper-case hex and base32
    btih. Unknown ``xt`` kinds (ed2k, sha1 of a file) are ignored; a malformed btih or btmh is an
    error rather than skipped, since it means the link was mangled.
    """
    uri = uri.strip()
    scheme, sep, query = uri.partition(":")
    if not sep or scheme.lower() != "magnet":
        raise ValueError(f"not a magnet link: {uri[:60]!r}")
    query = query.removeprefix("?").replace("&amp;", "&")
    btih = btmh = name = None
    length = None
    trackers: list[str] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        key = key.split(".", 1)[0].lower()
        if key == "xt":
            kind, _, digest = value.rpartition(":")
            kind = kind.lower()
            if kind == "urn:btih" and btih is None:
                btih = btih_to_hex(digest)
            elif kind == "urn:btmh" and btmh is None:
                if not (digest[:4] == _BTMH_PREFIX and _HEX64.fullmatch(digest, 4)):
                    raise ValueError(f"btmh is not a sha2-256 multihash: {digest[:80]!r}")
                btmh = digest[4:].lower()
        elif key == "dn" and name is None:
            name = value or None
        elif key == "xl" and length is None:
            # A bad length is the leaker's typo, not a reason to lose the infohash.
            length = int(value) if value.isascii() and value.isdigit() else None
        elif key == "tr" and value and value not in trackers:
            trackers.append(value)
    if btih is None and btmh is None:
        raise ValueError(f"magnet link has no urn:btih or urn:btmh: {uri[:60]!r}")
    return Magnet(btih=btih, btmh=btmh, name=name, length=length, trackers=tuple(trackers))


def magnet_indicators(magnet: Magnet, line: int | None = None) -> list[Indicator]:
    """The btih and/or btmh indicators of a magnet, named and sized by its dn and xl."""
    return [
        Indicator(algo, value, magnet.name, magnet.length, line)
        for algo, value in (("btih", magnet.btih), ("btmh", magnet.btmh))
        if value is not None
    ]


# GNU coreutils: "<hex>  <name>" (text mode) or "<hex> *<name>" (binary mode); a leading
# backslash means the name is escaped. A single space or tab is tolerated for hand-made lists.
_GNU = re.compile(r"(?P<esc>\\)?(?P<hex>[0-9A-Fa-f]+)(?: [ *]|[ \t]+\*?)(?P<name>.+)")
# BSD and `shasum --tag`: "SHA256 (name) = <hex>"; openssl dgst: "SHA2-256(name)= <hex>".
_TAG = re.compile(r"(?P<tag>[A-Za-z0-9-]+) ?\((?P<name>.*)\) ?= ?(?P<hex>[0-9A-Fa-f]+)")
_TAG_ALGOS = {
    "md5": "md5",
    "sha1": "sha1",
    "sha-1": "sha1",
    "sha256": "sha256",
    "sha-256": "sha256",
    "sha2-256": "sha256",
}
_LONE_HEX = re.compile(r"[0-9A-Fa-f]+")
_PREFIXED = re.compile(r"(?:urn:)?(?P<kind>btih|btmh):(?P<value>\S+)(?:\s+(?P<name>.+))?", re.I)
# Git LFS pointer files, as model hubs store weights: "oid sha256:<hex>" then "size <n>".
_LFS_VERSION = re.compile(r"version https://git-lfs\.github\.com/spec/\S+")
_LFS_OID = re.compile(r"oid sha256:(?P<hex>[0-9A-Fa-f]{64})")
_LFS_SIZE = re.compile(r"size (?P<size>\d+)")


def _unescape_gnu(name: str) -> str:
    # coreutils escapes backslash, newline and carriage return in names and flags the line.
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), name)


def _hex_indicator(
    hexval: str, name: str | None, lineno: int, algo: str | None = None
) -> Indicator:
    by_len = _ALGO_BY_HEX_LEN.get(len(hexval))
    if by_len is None:
        raise IndicatorError(lineno, f"unsupported digest length {len(hexval)}: {hexval[:60]}")
    if algo is not None and algo != by_len:
        want = next(n for n, a in _ALGO_BY_HEX_LEN.items() if a == algo)
        message = f"{algo} digest must be {want} hex characters, not {len(hexval)}"
        raise IndicatorError(lineno, message)
    return Indicator(by_len, hexval.lower(), name, None, lineno)


@dataclass(frozen=True)
class FileEntry:
    """A released file's name and size, known without a digest of it: a size list's line, a
    v1 torrent's file list, a hub file kept outside LFS. Torrent file lists are compared
    with these as with registered files."""

    name: str
    size: int
    line: int | None = None
    origin: str | None = None  # as Indicator.origin, e.g. "siblings[0]" or "files[2]"


@dataclass
class ParsedIndicators:
    """What an indicator file says: digests (with a name and a size where it gives them)
    and the names and sizes it gives without a digest."""

    indicators: list[Indicator] = dataclasses.field(default_factory=list)
    files: list[FileEntry] = dataclasses.field(default_factory=list)


# No real file is larger (a petabyte, as for a torrent's files); a larger "size" is a typo
# or a hostile file.
MAX_FILE_SIZE = MAX_FILE_LENGTH
# `du -b`, `stat -c '%s %n'`, `find -printf '%s %p\\n'`: a size in bytes, blanks, the name.
# Never a digest: a size has at most 16 digits, a digest 32 or more.
_SIZE_LINE = re.compile(r"(?P<size>\d{1,19})[ \t]+(?P<name>\S.*)")
# Bencode of a .torrent: a dictionary whose first key is a length-prefixed string. A
# checksum list never starts so ("d41d8cd9..." has no colon after its digits).
_BENCODE_START = re.compile(rb"d[1-9][0-9]{0,5}:")


def _size(value: int, lineno: int | None, where: str | None = None) -> int:
    if value > MAX_FILE_SIZE:
        raise IndicatorError(lineno, f"size {str(value)[:30]} is larger than any real file "
                             f"({MAX_FILE_SIZE} bytes)", where=where)
    return value


def parse_indicator_text(text: str) -> list[Indicator]:
    """The digests of an indicator file's text, strictly (see :func:`parse_indicator_file`,
    which also returns the names and sizes given without a digest)."""
    return _parse_text(text).indicators


def parse_indicator_file(data: bytes) -> ParsedIndicators:
    """Parse an indicator file strictly: a released .torrent (recognised by its bencode),
    else UTF-8 text (see :func:`_parse_text`). Raise :class:`IndicatorError` (one line)."""
    if _BENCODE_START.match(data):
        return parse_torrent_indicators(data)
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise IndicatorError(line, "not UTF-8 text (nor a .torrent)") from None
    return _parse_text(text)


def parse_torrent_indicators(data: bytes) -> ParsedIndicators:
    """A released .torrent's infohashes (named and sized by the torrent's name and total),
    each file's v2 pieces root (named and sized by its path and length), and, for a file a
    v1 torrent gives no digest of, its path and length. The metainfo is hostile-input safe
    (see :func:`fingerprints.torrent.parse_torrent`)."""
    try:
        info = parse_torrent(data)
    except TorrentError as e:
        raise IndicatorError(None, f"not a valid .torrent: {e}", where="torrent") from None
    out = ParsedIndicators()
    for algo, value in (("btih", info.infohash_v1), ("btmh", info.infohash_v2)):
        if value is not None:
            out.indicators.append(Indicator(algo, value, info.name, info.total_size,
                                            origin="info"))
    for i, f in enumerate(info.files):
        if f.pieces_root is not None:
            out.indicators.append(Indicator("pieces_root", f.pieces_root, f.path, f.length,
                                            origin=f"files[{i}]"))
        else:
            out.files.append(FileEntry(f.path, f.length, origin=f"files[{i}]"))
    return out


def _parse_text(text: str) -> ParsedIndicators:
    """Parse a checksum list / magnet list / size list / hub JSON strictly, in file order.

    Accepted lines: GNU ``md5sum``/``sha1sum``/``sha256sum`` output (algorithm by length; a
    Meta-style ``checklist.chk`` is ``md5sum`` output), BSD / ``shasum --tag`` / ``openssl
    dgst`` tagged lines, magnet links, ``btih:``/``urn:btih:`` (and ``btmh:``/
    ``urn:btmh:1220``) prefixed infohashes with an optional name, lone hex digests (by
    length; a lone 40-hex is both a SHA-1 and a v1 infohash, since without a prefix it cannot
    be told which was meant), a lone 32-character base32 infohash, Git LFS pointers, and
    size lines (``du -b`` / ``stat -c '%s %n'``: bytes, blanks, name).
    Blank lines and ``#`` comments are skipped. A text whose first non-space character is
    ``{`` or ``[`` is model-hub JSON (see :func:`parse_hub_json`; a Civitai model or model
    version, with its files' hashes, is read by :func:`_parse_civitai`). Anything else raises
    :class:`IndicatorError` naming the line, so nothing is silently lost.
    """
    if text.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        return _parse_hub_json(text)
    out: list[Indicator] = []
    files: list[FileEntry] = []
    lfs_oid_at: int | None = None  # index in `out` of an LFS oid still waiting for its size
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff") if lineno == 1 else raw.strip()
        after_oid, lfs_oid_at = lfs_oid_at, None
        if not line or line.startswith("#"):
            continue
        if line[:7].lower() == "magnet:":
            try:
                out.extend(magnet_indicators(parse_magnet(line), lineno))
            except ValueError as e:
                raise IndicatorError(lineno, str(e)) from None
            continue
        if m := _PREFIXED.fullmatch(line):
            kind, value = m["kind"].lower(), m["value"]
            try:
                if kind == "btih":
                    value = btih_to_hex(value)
                elif value[:4] == _BTMH_PREFIX and _HEX64.fullmatch(value, 4):
                    value = value[4:].lower()
                else:
                    raise ValueError(f"btmh is not a sha2-256 multihash: {value[:80]!r}")
            except ValueError as e:
                raise IndicatorError(lineno, str(e)) from None
            out.append(Indicator(kind, value, m["name"], None, lineno))
            continue
        if m := _LFS_OID.fullmatch(line):
            lfs_oid_at = len(out)
            out.append(Indicator("sha256", m["hex"].lower(), None, None, lineno))
            continue
        if after_oid is not None and (m := _LFS_SIZE.fullmatch(line)):
            size = _size(int(m["size"]), lineno)
            out[after_oid] = dataclasses.replace(out[after_oid], size=size)
            continue
        if _LFS_VERSION.fullmatch(line):
            continue
        if m := _TAG.fullmatch(line):
            algo = _TAG_ALGOS.get(m["tag"].lower())
            if algo is None:
                raise IndicatorError(lineno, f"unsupported digest algorithm {m['tag']}")
            out.append(_hex_indicator(m["hex"], m["name"], lineno, algo))
            continue
        if m := _LONE_HEX.fullmatch(line):
            ind = _hex_indicator(m[0], None, lineno)
            out.append(ind)
            if ind.algo == "sha1":
                # A bare 40-hex value is a SHA-1 or a v1 infohash and whoever pasted it may
                # mean either; registering both costs nothing, since a SHA-1 cannot equal
                # an infohash by accident.
                out.append(dataclasses.replace(ind, algo="btih"))
            continue
        if _B32_32.fullmatch(line):
            # 32 base32 characters alone: a v1 infohash as old magnets spell it (an all-hex
            # line of 32 characters was read as an MD5 just above).
            out.append(Indicator("btih", btih_to_hex(line), None, None, lineno))
            continue
        if m := _SIZE_LINE.fullmatch(line):
            name = m["name"].removeprefix("./")
            files.append(FileEntry(name, _size(int(m["size"]), lineno), lineno))
            continue
        if m := _GNU.fullmatch(line):
            name = _unescape_gnu(m["name"]) if m["esc"] else m["name"]
            out.append(_hex_indicator(m["hex"], name, lineno))
            continue
        raise IndicatorError(lineno, f"not a checksum line or magnet link: {line[:60]}")
    return ParsedIndicators(out, files)


_SHA256_FIELD = re.compile(r"(?:sha256:)?([0-9A-Fa-f]{64})")


def parse_hub_json(text: str) -> list[Indicator]:
    """The SHA-256 indicators of a model hub's model info or tree listing (see
    :func:`_parse_hub_json`, which also returns the sizes of files outside LFS)."""
    return _parse_hub_json(text).indicators


def _parse_hub_json(text: str) -> ParsedIndicators:
    """Read a model hub's model info or tree listing strictly into SHA-256 indicators.

    - model info (``GET /api/models/{id}?blobs=true``): ``{"id": ..., "siblings": [{"rfilename",
      "size", "lfs": {"sha256", "size"}}]}``; each sibling in LFS gives an indicator named by
      its ``rfilename``, with origin ``siblings[i]``.
    - tree listing (``GET /api/models/{id}/tree/{rev}``): ``[{"type", "path", "size", "oid",
      "lfs": {"oid", "size"}}]``; each file in LFS gives an indicator named by its ``path``,
      with origin ``[i]``.

    A file outside LFS carries only a git blob id (a SHA-1 of a header and the bytes, not a
    digest of the file), so it gives no digest, only its name and size if listed. Model info fetched without ``?blobs=true`` lists
    file names only, which is refused, since importing it would silently register nothing.
    Malformed JSON or a malformed entry raises :class:`IndicatorError` naming the line or the
    entry.
    """
    try:
        data = json.loads(text.lstrip("\ufeff"))
    except RecursionError:
        raise IndicatorError(None, "JSON nested too deeply", where="JSON") from None
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError):
            raise IndicatorError(e.lineno, f"not valid JSON: {e.msg} (column {e.colno})") from None
        raise IndicatorError(None, f"not valid JSON: {e}", where="JSON") from None
    if isinstance(data, dict) and "siblings" not in data and (
            isinstance(data.get("files"), list) or isinstance(data.get("modelVersions"), list)):
        return _parse_civitai(data)
    if isinstance(data, dict):
        entries = data.get("siblings")
        if not isinstance(entries, list):
            raise IndicatorError(None, "a JSON object must be model-hub model info with a "
                                 "'siblings' list, or a Civitai model version (a 'files' "
                                 "list) or model (a 'modelVersions' list)", where="siblings")
        prefix, name_key, digest_keys = "siblings", "rfilename", ("sha256", "oid")
    elif isinstance(data, list):
        entries, prefix, name_key, digest_keys = data, "", "path", ("oid", "sha256")
    else:  # pragma: no cover - a text starting with { or [ parses to one of the above
        raise IndicatorError(None, "expected model info or a tree listing", where="JSON")
    out: list[Indicator] = []
    files: list[FileEntry] = []
    names_only = bool(entries)
    for i, entry in enumerate(entries):
        where = f"{prefix}[{i}]"
        if not isinstance(entry, dict):
            raise IndicatorError(None, "expected an object", where=where)
        kind = entry.get("type", "file")
        if prefix == "" and kind != "file":
            if kind == "directory":
                continue
            raise IndicatorError(None, f"unknown entry type {str(kind)[:40]!r}",
                                 where=f"{where}.type")
        name = entry.get(name_key)
        if not isinstance(name, str) or not name:
            raise IndicatorError(None, "missing or not a string", where=f"{where}.{name_key}")
        if set(entry) - {name_key, "type"}:
            names_only = False
        size = _json_size(entry.get("size"), f"{where}.size")
        lfs = entry.get("lfs")
        if lfs is None:
            if size is not None:  # not in LFS: no digest of the file, but its size
                files.append(FileEntry(name, size, origin=where))
            continue
        if not isinstance(lfs, dict):
            raise IndicatorError(None, "expected an object", where=f"{where}.lfs")
        key = next((k for k in digest_keys if k in lfs), digest_keys[0])
        raw = lfs.get(key)
        m = _SHA256_FIELD.fullmatch(raw.strip()) if isinstance(raw, str) else None
        if m is None:
            shown = repr(raw)[:70] if raw is not None else "missing"
            raise IndicatorError(None, f"expected a SHA-256 (64 hex characters), got {shown}",
                                 where=f"{where}.lfs.{key}")
        lfs_size = _json_size(lfs.get("size"), f"{where}.lfs.size")
        out.append(Indicator("sha256", m[1].lower(), name,
                             lfs_size if lfs_size is not None else size, None, where))
    if names_only:
        raise IndicatorError(None, "model info lists file names only, no digests; fetch it "
                             "with ?blobs=true (or import the tree listing)", where="siblings")
    return ParsedIndicators(out, files)


# Civitai's names for the hashes of `files[].hashes`, and the registry's.
_CIVITAI_HASHES = {"SHA256": "sha256", "AutoV1": "autov1", "AutoV2": "autov2",
                   "AutoV3": "autov3", "CRC32": "crc32", "BLAKE3": "blake3"}


def _parse_civitai(data: dict[str, object]) -> ParsedIndicators:
    """Read a Civitai model version (``GET /api/v1/model-versions/{id}`` or ``/by-hash/``:
    ``{"id", "modelId", "files": [{"name", "sizeKB", "hashes": {"SHA256", "AutoV1",
    "AutoV2", "AutoV3", "CRC32", "BLAKE3"}}]}``) or a model (``GET /api/v1/models/{id}``:
    the same under ``modelVersions[i]``), as Civitai's REST API reference documents them.

    Each hash becomes an indicator named and sized as its file (origin ``files[i]``, or
    ``modelVersions[v].files[i]``), in uppercase or lowercase hex, at the length Civitai
    shows (`fingerprints.algos.SHORT_FORMS`: 8 hex of AutoV1, 12 of AutoV3). AutoV2 is the
    SHA-256's first 10 hex: beside the SHA-256 it must agree with it and adds nothing, and
    alone it is kept. ``sizeKB`` is bytes / 1024 as a float: a size that is not a whole
    number of bytes (rounded by whoever copied the record) is not kept, the file's name and
    hashes are. A file without hashes (not yet scanned) gives its name and size. An unknown
    hash name, a value of the wrong length or a disagreeing AutoV2 raises
    :class:`IndicatorError` naming the entry.
    """
    versions: list[tuple[str, object]]
    if isinstance(data.get("files"), list):
        versions = [("", data["files"])]
    else:
        listed = data["modelVersions"]
        assert isinstance(listed, list)
        versions = []
        for v, version in enumerate(listed):
            if not isinstance(version, dict):
                raise IndicatorError(None, "expected an object", where=f"modelVersions[{v}]")
            versions.append((f"modelVersions[{v}].", version.get("files")))
    out = ParsedIndicators()
    for prefix, entries in versions:
        if not isinstance(entries, list):
            raise IndicatorError(None, "expected a list", where=f"{prefix}files")
        for i, entry in enumerate(entries):
            where = f"{prefix}files[{i}]"
            if not isinstance(entry, dict):
                raise IndicatorError(None, "expected an object", where=where)
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise IndicatorError(None, "missing or not a string", where=f"{where}.name")
            size = _civitai_size(entry.get("sizeKB"), f"{where}.sizeKB")
            hashes = entry.get("hashes") or {}
            if not isinstance(hashes, dict):
                raise IndicatorError(None, "expected an object", where=f"{where}.hashes")
            found: dict[str, str] = {}
            for key, raw in hashes.items():
                at = f"{where}.hashes.{str(key)[:40]}"
                algo = _CIVITAI_HASHES.get(key)
                if algo is None:
                    raise IndicatorError(None, f"unknown hash {str(key)[:40]!r} (known: "
                                         f"{', '.join(_CIVITAI_HASHES)})", where=at)
                if raw is None:
                    continue
                lengths = value_lengths(algo)
                if not (isinstance(raw, str) and len(raw) in lengths
                        and _LONE_HEX.fullmatch(raw)):
                    wanted = " or ".join(map(str, lengths))
                    raise IndicatorError(None, f"expected {wanted} hex characters, got "
                                         f"{repr(raw)[:70]}", where=at)
                found[algo] = raw.lower()
            sha256, autov2 = found.get("sha256"), found.get("autov2")
            if sha256 is not None and autov2 is not None:
                if not sha256.startswith(autov2):
                    raise IndicatorError(None, f"{autov2.upper()} is not the start of the "
                                         f"file's SHA256 {sha256[:16].upper()}...",
                                         where=f"{where}.hashes.AutoV2")
                del found["autov2"]
            if not found:
                if size is not None:
                    out.files.append(FileEntry(name, size, origin=where))
                continue
            out.indicators += [Indicator(algo, value, name, size, None, where)
                               for algo, value in found.items()]
    return out


def _civitai_size(value: object, where: str) -> int | None:
    """Bytes from Civitai's ``sizeKB`` (bytes / 1024, a float); None where it is not a
    whole number of bytes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise IndicatorError(None, f"expected a size in KiB, got {repr(value)[:40]}",
                             where=where)
    size = value * 1024
    if isinstance(size, float) and not (size.is_integer() and size < 2**53):
        return None
    return _size(int(size), None, where)


def _json_size(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IndicatorError(None, f"expected a size in bytes, got {repr(value)[:40]}",
                             where=where)
    return _size(value, None, where)


@dataclass(frozen=True)
class Token:
    """A candidate digest found in free text; the detector looks ``value`` up."""

    value: str  # lowercase hex
    # 'hex' | 'base32' | 'magnet' | 'base64'; scan_text never produces 'base64' (bare base64
    # is noise), it is for callers that wrap structured fields such as an imageboard md5.
    encoding: str
    # 'btih' for magnet/base32 infohashes, 'btmh' for v2 magnets, None for bare hex (the
    # length tells md5 / sha1-or-btih / sha256).
    algo_hint: str | None
    start: int  # span of the digest as written, text[start:end] == raw
    end: int
    raw: str


# Infohashes are recognised after "urn:btih:" / "urn:btmh:1220" wherever they appear (magnet
# links, HTML-escaped or percent-encoded, Torznab attributes), which is specific enough to
# allow base32; bare base32 elsewhere would match ordinary words and identifiers. Bare hex must
# be a whole alphanumeric run of exactly 32, 40 or 64 characters, so a slice of a longer hash
# or identifier is not mistaken for a digest.
_HEX = "[0-9A-Fa-f]"
_ALNUM = "[0-9A-Za-z]"
_COLON = "(?::|%3[Aa])"
_URN_RE = re.compile(
    rf"[Uu][Rr][Nn]{_COLON}[Bb][Tt](?:"
    rf"[Ii][Hh]{_COLON}(?P<btih>{_HEX}{{40}}|[A-Za-z2-7]{{32}})"
    rf"|[Mm][Hh]{_COLON}1220(?P<btmh>{_HEX}{{64}})"
    rf")(?!{_ALNUM})"
)
# The boundary look-behind comes after the first character so that the regex engine can skip
# ahead on that character class; this and using two patterns rather than one alternation make
# the scan about twice as fast on ordinary text.
_BARE_HEX_RE = re.compile(
    rf"{_HEX}(?<!{_ALNUM}{_HEX}){_HEX}{{31}}(?:{_HEX}{{8}}(?:{_HEX}{{24}})?)?(?!{_ALNUM})"
)


def scan_text(text: str) -> list[Token]:
    """Find candidate digests in free text: bare 32/40/64 hex runs and magnet infohashes.

    Tokens are returned in text order. A hex infohash inside a magnet is reported once, as
    the magnet token.
    """
    tokens: list[Token] = []
    for m in _URN_RE.finditer(text):
        if (raw := m["btih"]) is not None:
            encoding = "magnet" if len(raw) == 40 else "base32"
            tokens.append(Token(btih_to_hex(raw), encoding, "btih", *m.span("btih"), raw))
        else:
            raw = m["btmh"]
            tokens.append(Token(raw.lower(), "magnet", "btmh", *m.span("btmh"), raw))
    in_magnets = {(t.start, t.end) for t in tokens}
    for m in _BARE_HEX_RE.finditer(text):
        if m.span() not in in_magnets:
            raw = m[0]
            tokens.append(Token(raw.lower(), "hex", None, m.start(), m.end(), raw))
    if in_magnets:
        tokens.sort(key=lambda t: t.start)
    return tokens


# --- short hashes in naming context (issue 18) ---------------------------------------------
#
# A short hash (8 to 12 hex) is no evidence alone: git short SHAs, colours, ids and CRCs of
# other files are written the same way. It is read only where the text names what it is:
# A1111's generation parameters ("Model hash: 925997e9", as images of the 2022 NovelAI
# leak carried them; 8 hex there was AutoV1 until January 2023, 10 hex AutoV2 since), its
# checkpoint titles ("model.ckpt [925997e9]", same lengths), and labels as Civitai writes
# them ("AutoV2: 6CE0161689", "CRC32: 0D4A1185"), and A1111's list of LoRAs ("Lora hashes:
# "name: 12 hex, ..."). A value of another length than its label says is not read as that
# label's.


@dataclass(frozen=True)
class ShortContext:
    """A way text names a short hash: the literals (lowercase) one of which every match
    contains, so a one-pass literal search tells which documents to run `pattern` on."""

    name: str       # said in the hit's evidence
    literals: tuple[str, ...]
    pattern: re.Pattern[str]
    # The form a hex of each length is, where the context does not label it.
    forms: dict[int, str] = dataclasses.field(default_factory=dict)
    # For a list ("Lora hashes"): each hash within the pattern's "list" group.
    item: re.Pattern[str] | None = None


@dataclass(frozen=True)
class ShortToken:
    """A short hash found in naming context; the detector looks `value` up among the
    registered values of `form` (a key of `fingerprints.algos.SHORT_FORMS`)."""

    form: str
    value: str      # lowercase hex
    context: str    # the ShortContext's name
    start: int
    end: int
    raw: str


# The patterns read lowercased text (`_folded`), and each starts with a literal, the word
# boundary checked by a look-behind after it: so the regex engine skips from one occurrence
# of that literal to the next at C speed, where a case-insensitive pattern starting with a
# boundary is tried at every position (30 to 60 times slower on a 2 KB post).
_LOWER_HEX = "[0-9a-f]"
_LOWER_ALNUM = "[0-9a-z]"
_SHORT_HEX = rf"(?P<hex>{_LOWER_HEX}{{8,12}})(?!{_LOWER_ALNUM})"
_LABEL_TAIL = rf"(?:\s*hash)?[\s:=|*`'\"]{{0,8}}(?<!{_LOWER_ALNUM}){_SHORT_HEX}"
# A1111 writes an AutoV1 as 8 hex and an AutoV2 as 10, in both of its forms.
_A1111_FORMS = {8: "autov1", 10: "autov2"}
_LABEL_FORMS = {"autov1": "autov1", "autov2": "autov2", "autov3": "autov3", "crc32": "crc32",
                "crc-32": "crc32"}
SHORT_CONTEXTS: tuple[ShortContext, ...] = (
    ShortContext('A1111 "Model hash:"', ("model hash",),
                 re.compile(rf"model hash(?<![0-9a-z_]model hash)\s*:\s*{_SHORT_HEX}"),
                 _A1111_FORMS),
    ShortContext("A1111 checkpoint title",
                 ("ckpt [", "safetensors [", ".pt [", ".pth [", ".bin ["),
                 re.compile(rf"\.(?<=[^\s\[\]]\.)(?:ckpt|safetensors|pth?|bin) \[{_SHORT_HEX}\]"),
                 _A1111_FORMS),
    ShortContext("hub label", ("autov",),
                 re.compile(rf"(?P<label>autov[123])(?<![0-9a-z_]autov.){_LABEL_TAIL}")),
    ShortContext("hub label", ("crc32", "crc-32"),
                 re.compile(rf"(?P<label>crc-?32)(?<![0-9a-z_]crc-32)(?<![0-9a-z_]crc32)"
                            rf"{_LABEL_TAIL}")),
    # A1111's LoRA list, `Lora hashes: "name: 12 hex, ..."`: for a .safetensors LoRA the
    # hash of its tensor data (A1111's "addnet hash", what Civitai calls AutoV3).
    ShortContext('A1111 "Lora hashes:"', ("lora hashes",),
                 re.compile(r'lora hashes(?<![0-9a-z_]lora hashes)\s*:\s*'
                            r'"(?P<list>[^"\n]{1,4000})"'),
                 {12: "autov3"}, re.compile(rf":\s*{_SHORT_HEX}")),
)


def _folded(text: str) -> str:
    """`text` lowercased character by character, so positions carry over (str.lower turns
    a few characters into two)."""
    if text.isascii():
        return text.lower()
    return "".join(low if len(low := ch.lower()) == 1 else ch for ch in text)


def scan_short_hashes(text: str, contexts: Iterable[int] | None = None, *,
                      folded: str | None = None) -> list[ShortToken]:
    """Short hashes written in naming context (`SHORT_CONTEXTS`, or those of them numbered
    in `contexts`), in any case, in text order, each with the form its context and length
    say. `folded` is `text` lowercased with its positions kept, if the caller has it."""
    chosen = range(len(SHORT_CONTEXTS)) if contexts is None else sorted(set(contexts))
    low = _folded(text) if folded is None else folded
    tokens: list[ShortToken] = []
    for index in chosen:
        context = SHORT_CONTEXTS[index]
        for m in context.pattern.finditer(low):
            found = ([m] if context.item is None else
                     context.item.finditer(low, m.start("list"), m.end("list")))
            for hit in found:
                raw = hit["hex"]
                label = hit.groupdict().get("label")
                form = (_LABEL_FORMS[label.lower()] if label is not None
                        else context.forms.get(len(raw)))
                if form is None or SHORT_FORMS[form].length != len(raw):
                    continue
                begin, end = hit.span("hex")
                tokens.append(ShortToken(form, raw, context.name, begin, end,
                                         text[begin:end]))
    tokens.sort(key=lambda t: t.start)
    return tokens
