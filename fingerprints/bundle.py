"""Fingerprint bundles: the registry, carried from the release machine to the monitor.

The machine that holds the weights registers them (`weightwatch register`) and writes a
bundle (`weightwatch fingerprints export BUNDLE`); the monitoring machine, which must never
hold the weights, reads it (`weightwatch fingerprints import BUNDLE`). A bundle carries the
registry: model names, each released file's name, size and digests, the indicators
imported from checksum lists, magnets and hub records, the tensor fingerprints, and what
names the recipient of a marked copy (each recipient's derived key and mark densities). It
never carries a path on the release machine, the weights, or the watermark master secret.

Format, version 5
-----------------

A gzip-compressed UTF-8 JSON object (an uncompressed JSON file is read too)::

    {
      "format": "weightwatch-fingerprints",
      "version": 5,
      "created_at": "2024-05-01T12:00:00+00:00",        # ISO 8601
      "generator": "weightwatch 0.1.0",
      "models": [{"name": "heron-7b"}],
      "artifacts": [{
        "model": "heron-7b",                          # one of models[].name
        "name": "heron-7b/model.safetensors",         # as recipients see it, relative
        "size": 13476939516,                          # bytes
        "sha256": "<64 hex>", "sha1": "<40 hex>", "md5": "<32 hex>",
        "pieces_root": "<64 hex>" | null,             # BEP 52; null for an empty file
        "shards": ["<64 hex>", ...],                  # SHA-256 per 1 GB shard (may be [])
        "release": "v1.0" | null,
        "recipient": "acme" | null                    # set for a recipient's own copy
      }],
      "indicators": [{                                # digests not derived from artifacts
        "algo": "md5" | "sha1" | "sha256" | "btih" | "btmh" | "pieces_root" | "shard"
                | "cid-v0" | "cid-v1" | "cid-v1-1m" | "cid-v1-2025"  # IPFS root digests
                | "autov1" | "autov2" | "autov3" | "crc32" | "blake3",  # hub short hashes
        "value": "<hex: 32 for md5, 40 for sha1/btih, 10 for autov2, 8 for crc32,
                   64 otherwise; 8 for autov1 and 12 for autov3 as a hub shows them>",
        "model": "heron-7b",
        "name": "heron-7b" | null,                    # file name or torrent name
        "size": 1234 | null,
        "source": "import:SHA256SUMS:2",              # where it came from
        "recipient": "acme" | null
      }],
      "weight_prints": [{                             # tensor fingerprints (versions 1-3)
        "model": "heron-7b",
        "name": "heron-7b/model.safetensors",         # the registered file it describes
        "print": {...},                               # fingerprints.weightprint.WeightPrint.as_json
        "recipient": "acme" | null                    # whose copy it describes (version 4)
      }],
      "watermarks": [{                                # recipients' marks (version 4; may be [])
        "model": "heron-7b",
        "recipient": "acme",                          # whose marked copy
        "key": "<base64 of 32 bytes>",                # the recipient's derived key
        "version": 1,                                 # the mark's version
        "densities": {"blk.0.attn_q.weight": 1.0},    # share of each tensor's elements marked
        "artifact": "<64 hex>" | null                 # sha256 of the copy, one of artifacts[]
      }],
      "files": [{                                     # names and sizes (version 5; may be [])
        "model": "heron-7b",
        "algo": "sha256" | null,                      # the digest named or sized, carried
        "value": "<hex>" | null,                      #   by indicators[] or artifacts[];
                                                      #   null: a file given without one
        "name": "consolidated.00.pth" | null,         # a name a source gave those bytes
        "size": 1234 | null,                          # the size a source gave them
        "source": "import:SHA256SUMS:2"
      }]
    }

Every key shown is required (values may be null where shown); hex is lowercase when
written and accepted in either case. Reading is strict: an unknown format, a newer or
unknown version, an unknown or missing key, a wrong type, a digest of the wrong length for
its algorithm, a model not listed in `models`, or a file that is not gzip or JSON is refused
with one line naming the bundle and the entry (e.g. `heron.json.gz: artifacts[2]
(heron-7b/model.safetensors).sha1: expected 40 hex characters, got 39`), and nothing is
imported. A bundle is at most 256 MiB decompressed: a gzip whose trailer announces more is
refused before decompressing anything, and decompression stops at the limit whatever the
trailer says, so a gzip bomb is refused after reading no more than that. Importing is idempotent: digests
already in the registry are skipped, so importing the same bundle twice adds nothing.
Version 2 added `weight_prints`, the tensor fingerprints (row sketches, keyed sample rows
and statistics: what recognises converted and quantised copies; the key in them chooses
projections and rows, and is not a secret that marks or signs anything); version 1
bundles, which have none, are still read. Version 3 carries version-2 tensor fingerprints
(each tensor's role and a sketch of its columns, for copies stored transposed); version 2
bundles' prints are still read, their roles derived on import. Tensor fingerprints of
version 3 (keyed runs of rows, not every row) travel in version-4 bundles, so an older
weightwatch refuses the bundle as newer than itself rather than one print as malformed.

Version 4 added `watermarks`: what the watermark test needs besides the originals' kept rows
(which the tensor fingerprints carry), so a monitoring machine that never held the weights
names the recipient of a leaked copy as the release machine does; and each tensor
fingerprint's `recipient`, so the monitor compares a suspect with the original's kept rows,
never with a recipient's copy fingerprinted on the release machine. A recipient's key is
HMAC(master secret, model, recipient): it lets its holder check (and compute) that
recipient's mark only, and the master secret that marks new copies is never in a bundle.
A bundle is written readable by its owner only (0600): a recipient's key finds, and so
could strip, their mark, as a fingerprint's key and sampled rows tell which rows to disturb
(the web UI withholds the same tables). A key must decode (strict base64) to exactly 32
bytes, a density be a number in [0, 1], a recipient appear once per model, and `artifact`,
when set, be that recipient's copy among `artifacts`, as a fingerprint with a recipient
must describe one of theirs (model, name and recipient); versions 1 to 3 are still read
(no watermarks, every fingerprint the original's).

Version 5 added `files`: every name and size the registry's imports gave (its table
`indicator_files`). An indicator entry holds one name and one size, but the same bytes are
often named by several sources (a checksum list, a mirror's renamed copy) and sized by
another (the LFS pointer, a hub record), and a size list or a v1 torrent's file list names
and sizes files with no digest at all; manifest matching joins each name of a digest with
each size of it, so without these a monitoring machine caught fewer re-packed torrents than
the machine that wrote the bundle. Each entry names a digest the bundle itself carries (an
indicator, or an artifact's SHA-256, SHA-1, MD5, pieces root or shard) or none, and then
both a name and a size; at most MAX_FILE_CLAIMS entries, and at most MAX_SIZES_PER_DIGEST
sizes for one digest (the same bytes have one size: more would only multiply the names by
the sizes manifest matching indexes). Versions 1 to 4 are still read (no `files`).

The algorithms and their lengths are `fingerprints.algos.HEX_LENGTHS`, the registry's own
table. A digest of an artifact that its entry has no field for (an IPFS CID, AutoV1,
AutoV3, CRC32, BLAKE3) travels as an indicator named and sized as the artifact; AutoV2 is
the SHA-256's first 10 hex, so an artifact carries it already. A weightwatch from before
an algorithm was added refuses a bundle carrying it with one line naming the entry.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, TypedDict, TypeGuard, overload

from fingerprints.algos import HEX_LENGTHS, value_lengths
from fingerprints.limits import json_values_bound
from fingerprints.watermark import MARK_VERSION
from fingerprints.weightprint import PrintError, WeightPrint

FORMAT = "weightwatch-fingerprints"
VERSION = 5
READS = (1, 2, 3, 4, 5)
MAX_BUNDLE_SIZE = 256 * 2**20
# JSON values in a bundle: an indicator is ~10, a fingerprinted file ~2,000 (64 tensors of
# ~35), so 2^22 holds hundreds of thousands of indicators or thousands of files, and a
# bundle of millions of tiny values is refused before json builds them (~60 bytes each).
MAX_BUNDLE_VALUES = 1 << 22
MAX_TEXT = 4096
# A mark's key is HMAC-SHA256 output (fingerprints.watermark.recipient_key); its densities
# name a model's tensors (thousands at most in any released model).
MARK_KEY_BYTES = 32
MAX_MARK_TENSORS = 1 << 16
MARK_VERSIONS = tuple(range(1, MARK_VERSION + 1))

# Names and sizes a bundle carries (version 5): a registry holds a few per imported digest
# and one per file a size list or torrent file list gave, so a million is far beyond any
# registry's; sizes of one digest are bounded as the same bytes have one size.
MAX_FILE_CLAIMS = 1 << 20
MAX_SIZES_PER_DIGEST = 8

_TOP_KEYS = ("format", "version", "created_at", "generator", "models", "artifacts",
             "indicators", "weight_prints", "watermarks", "files")
_TOP_KEYS_BY_VERSION = {1: _TOP_KEYS[:-3], 2: _TOP_KEYS[:-2], 3: _TOP_KEYS[:-2],
                        4: _TOP_KEYS[:-1], 5: _TOP_KEYS}
_MARK_KEYS = ("model", "recipient", "key", "version", "densities", "artifact")
_PRINT_KEYS_BY_VERSION = {2: ("model", "name", "print"), 3: ("model", "name", "print"),
                          4: ("model", "name", "print", "recipient"),
                          5: ("model", "name", "print", "recipient")}
_FILE_KEYS = ("model", "algo", "value", "name", "size", "source")
_MODEL_KEYS = ("name",)
_ARTIFACT_KEYS = ("model", "name", "size", "sha256", "sha1", "md5", "pieces_root", "shards",
                  "release", "recipient")
_INDICATOR_KEYS = ("algo", "value", "model", "name", "size", "source", "recipient")
_HEX = re.compile(r"[0-9A-Fa-f]*")
_CHUNK = 1 << 20


class BundleError(ValueError):
    """A bundle that cannot be read or imported; the message is one line naming it."""


class BundleArtifact(TypedDict):
    """A released file as a bundle lists it (validated by `parse_bundle`): no path."""

    model: str
    name: str
    size: int
    sha256: str
    sha1: str
    md5: str
    pieces_root: str | None
    shards: list[str]
    release: str | None
    recipient: str | None


class BundleIndicator(TypedDict):
    """A digest known without its file (a checksum list, a magnet, a hub record)."""

    algo: str
    value: str
    model: str
    name: str | None
    size: int | None
    source: str
    recipient: str | None


class BundleFile(TypedDict):
    """A name or size a source gave a digest's bytes (`algo` and `value`, which the bundle
    carries), or a released file's name and size given without a digest (both null)."""

    model: str
    algo: str | None
    value: str | None
    name: str | None
    size: int | None
    source: str


class BundlePrint(NamedTuple):
    """A registered file's tensor fingerprint, and whose copy the file is (None: the
    release's own file, whose kept rows the watermark test compares with)."""

    model: str
    name: str
    fingerprint: WeightPrint
    recipient: str | None = None


class BundleMark(TypedDict):
    """A recipient's marked copy as the watermark test needs it: never the master secret."""

    model: str
    recipient: str
    key: bytes               # the recipient's derived key (HMAC of the master secret)
    version: int             # the mark's version (fingerprints.watermark.MARK_VERSION)
    densities: dict[str, float]  # canonical tensor name -> share of its elements marked
    artifact: str | None     # sha256 of the recipient's copy, when registered


@dataclass
class Bundle:
    created_at: str
    generator: str
    models: list[str]
    artifacts: list[BundleArtifact]
    indicators: list[BundleIndicator]
    weight_prints: list[BundlePrint] = field(default_factory=list)
    watermarks: list[BundleMark] = field(default_factory=list)
    files: list[BundleFile] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "created_at": self.created_at,
                "generator": self.generator, "models": [{"name": m} for m in self.models],
                "artifacts": self.artifacts, "indicators": self.indicators,
                "weight_prints": [{"model": p.model, "name": p.name,
                                   "print": p.fingerprint.as_json(), "recipient": p.recipient}
                                  for p in self.weight_prints],
                "watermarks": [{**mark, "key": base64.b64encode(mark["key"]).decode("ascii")}
                               for mark in self.watermarks],
                "files": self.files}


def write_bundle(bundle: Bundle, path: str | Path) -> None:
    """Write atomically (a temporary file renamed over `path`), so a reader never sees half
    a bundle."""
    path = Path(path)
    data = json.dumps(bundle.as_json(), ensure_ascii=False, separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        # Owner only: a recipient's key finds (and so could strip) their mark, and a
        # fingerprint's key and sampled rows tell which rows to disturb to evade it.
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --- reading -----------------------------------------------------------------------------


def read_bundle(source: str | Path | BinaryIO, *, name: str | None = None,
                max_size: int = MAX_BUNDLE_SIZE) -> Bundle:
    """Read and validate a bundle from a path or a binary file; raise BundleError (one line
    naming the bundle) if it is not a valid one. OSError propagates for an unreadable path."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return read_bundle(f, name=name or str(source), max_size=max_size)
    name = name or str(getattr(source, "name", "bundle"))
    data = _read_limited(source, name, max_size)
    values = json_values_bound(data)
    if values > MAX_BUNDLE_VALUES:
        raise BundleError(f"{name}: not a fingerprint bundle (up to {values} JSON values, over "
                          f"the limit of {MAX_BUNDLE_VALUES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{name}: not a fingerprint bundle (not UTF-8 JSON)") from None
    del data  # the text alone is parsed: one copy of a large bundle, not two
    try:
        doc = json.loads(text)
    except RecursionError:
        raise BundleError(f"{name}: not a fingerprint bundle (JSON nested too deeply)") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{name}: not a fingerprint bundle (invalid JSON: {exc.msg} at line "
                          f"{exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise BundleError(f"{name}: not a fingerprint bundle (invalid JSON: {exc})") from None
    return parse_bundle(doc, name)


def _read_limited(f: BinaryIO, name: str, limit: int) -> bytes | bytearray:
    """The bundle's JSON bytes, gunzipped if need be, refusing anything larger than `limit`
    after reading at most `limit` (+ one chunk) of it."""
    head = f.read(2)
    try:
        size = os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        size = None
    mib = f"{limit // 2**20} MiB"

    def refuse(why: str) -> BundleError:
        return BundleError(f"{name}: not a fingerprint bundle ({why})")

    if size is not None and size > limit:
        raise refuse(f"larger than {mib}")
    if head != b"\x1f\x8b":
        data = head + f.read(limit + 1 - len(head))
        if len(data) > limit:
            raise refuse(f"larger than {mib}")
        if not data.lstrip()[:1] == b"{":
            raise refuse("neither gzip nor JSON")
        return data
    # The gzip trailer holds the (last member's) uncompressed size mod 2**32: a cheap first
    # refusal for the plain bomb, before decompressing anything. It cannot be trusted alone
    # (several members, or a lie), so the read below is bounded as well.
    if size is not None and size >= 20 and f.seekable():
        f.seek(-4, os.SEEK_END)
        (isize,) = struct.unpack("<I", f.read(4))
        if isize > limit:
            raise refuse(f"its gzip trailer says {isize // 2**20} MiB decompressed, over the "
                         f"{mib} limit: a gzip bomb, or a truncated or corrupt file")
        f.seek(2)
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=_Prefixed(head, f), mode="rb") as gz:
            while chunk := gz.read(min(_CHUNK, limit + 1 - len(out))):
                out += chunk
                if len(out) > limit:
                    raise refuse(f"more than {mib} decompressed, reading stopped there: "
                                 f"a gzip bomb?")
    except (OSError, EOFError, zlib.error) as exc:
        raise refuse(f"corrupt gzip data: {exc}") from None
    return out  # not bytes(out): a copy of up to 256 MiB


class _Prefixed(io.RawIOBase):
    """`f` with `head` (already read from it) put back in front."""

    def __init__(self, head: bytes, f: BinaryIO):
        self._head, self._f = head, f

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def parse_bundle(doc: Any, name: str) -> Bundle:
    """Validate a decoded bundle strictly; BundleError names the bundle and the entry."""
    def fail(where: str, message: str) -> BundleError:
        return BundleError(f"{name}: {where + ': ' if where else ''}{message}")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise fail("", "not a fingerprint bundle (format is "
                   + (f"{str(found)[:40]!r}" if found is not None else "missing")
                   + f", expected {FORMAT!r})")
    version = doc.get("version")
    if not _is_int(version):
        raise fail("version", f"expected an integer, got {_show(version)}")
    if version > VERSION:
        raise fail("version", f"bundle version {version} is newer than this weightwatch "
                   f"(reads {VERSION}); upgrade weightwatch")
    if version not in READS:
        raise fail("version", f"unsupported bundle version {version} (reads "
                   f"{', '.join(map(str, READS))})")
    _check_keys(doc, _TOP_KEYS_BY_VERSION[version], "", fail)
    created_at = _text(doc["created_at"], "created_at", fail, required=True)
    try:
        datetime.fromisoformat(created_at)
    except ValueError:
        raise fail("created_at", f"not an ISO 8601 time: {created_at[:40]!r}") from None
    generator = _text(doc["generator"], "generator", fail, required=True)

    models: list[str] = []
    for i, entry in enumerate(_list(doc["models"], "models", fail)):
        where = f"models[{i}]"
        _check_keys(entry, _MODEL_KEYS, where, fail)
        models.append(_text(entry["name"], f"{where}.name", fail, required=True))
    known = set(models)

    def model_of(entry: dict[str, Any], where: str) -> str:
        model = _text(entry["model"], f"{where}.model", fail, required=True)
        if model not in known:
            raise fail(f"{where}.model", f"{model[:60]!r} is not listed in models")
        return model

    artifacts: list[BundleArtifact] = []
    for i, entry in enumerate(_list(doc["artifacts"], "artifacts", fail)):
        where = f"artifacts[{i}]"
        _check_keys(entry, _ARTIFACT_KEYS, where, fail)
        if isinstance(entry.get("name"), str):
            where += f" ({entry['name'][:60]})"
        shards = _list(entry["shards"], f"{where}.shards", fail)
        artifacts.append({
            "model": model_of(entry, where),
            "name": _text(entry["name"], f"{where}.name", fail, required=True),
            "size": _size(entry["size"], f"{where}.size", fail, required=True),
            "sha256": _hex(entry["sha256"], 64, f"{where}.sha256", fail),
            "sha1": _hex(entry["sha1"], 40, f"{where}.sha1", fail),
            "md5": _hex(entry["md5"], 32, f"{where}.md5", fail),
            "pieces_root": (None if entry["pieces_root"] is None else
                            _hex(entry["pieces_root"], 64, f"{where}.pieces_root", fail)),
            "shards": [_hex(s, 64, f"{where}.shards[{j}]", fail) for j, s in enumerate(shards)],
            "release": _text(entry["release"], f"{where}.release", fail),
            "recipient": _text(entry["recipient"], f"{where}.recipient", fail),
        })

    indicators: list[BundleIndicator] = []
    for i, entry in enumerate(_list(doc["indicators"], "indicators", fail)):
        where = f"indicators[{i}]"
        _check_keys(entry, _INDICATOR_KEYS, where, fail)
        algo = entry["algo"]
        if not isinstance(algo, str) or algo not in HEX_LENGTHS:  # a list is unhashable
            raise fail(f"{where}.algo", f"unknown digest algorithm {_show(algo)} (known: "
                       f"{', '.join(HEX_LENGTHS)})")
        indicators.append({
            "algo": algo,
            "value": _hex(entry["value"], value_lengths(algo), f"{where}.value", fail),
            "model": model_of(entry, where),
            "name": _text(entry["name"], f"{where}.name", fail),
            "size": _size(entry["size"], f"{where}.size", fail),
            "source": _text(entry["source"], f"{where}.source", fail, required=True),
            "recipient": _text(entry["recipient"], f"{where}.recipient", fail),
        })
    files = {(a["model"], a["name"], a["recipient"]) for a in artifacts}
    prints: list[BundlePrint] = []
    for i, entry in enumerate(_list(doc.get("weight_prints", []), "weight_prints", fail)):
        where = f"weight_prints[{i}]"
        _check_keys(entry, _PRINT_KEYS_BY_VERSION[version], where, fail)
        name_ = _text(entry["name"], f"{where}.name", fail, required=True)
        model = model_of(entry, where)
        recipient = _text(entry.get("recipient"), f"{where}.recipient", fail)
        if recipient is not None and (model, name_, recipient) not in files:
            raise fail(f"{where}.recipient", f"no artifact {name_[:60]!r} of {model[:60]} "
                       f"for {recipient[:60]} among artifacts")
        try:
            print_ = WeightPrint.from_json(entry["print"], f"{where} ({name_[:60]}).print")
        except PrintError as exc:
            raise BundleError(f"{name}: {exc}") from None
        prints.append(BundlePrint(model, name_, print_, recipient))
    copies = {(a["model"], a["recipient"], a["sha256"]) for a in artifacts if a["recipient"]}
    marks: list[BundleMark] = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(_list(doc.get("watermarks", []), "watermarks", fail)):
        where = f"watermarks[{i}]"
        _check_keys(entry, _MARK_KEYS, where, fail)
        if isinstance(entry.get("recipient"), str):
            where += f" ({entry['recipient'][:60]})"
        model = model_of(entry, where)
        recipient = _text(entry["recipient"], f"{where}.recipient", fail, required=True)
        if (model, recipient) in seen:
            raise fail(where, f"a second mark for {recipient[:60]}'s copy of {model[:60]}")
        seen.add((model, recipient))
        mark_version = entry["version"]
        if not _is_int(mark_version) or mark_version not in MARK_VERSIONS:
            raise fail(f"{where}.version", f"unknown mark version {_show_value(mark_version)} "
                       f"(reads {', '.join(map(str, MARK_VERSIONS))}); upgrade weightwatch")
        artifact = (None if entry["artifact"] is None
                    else _hex(entry["artifact"], 64, f"{where}.artifact", fail))
        if artifact is not None and (model, recipient, artifact) not in copies:
            raise fail(f"{where}.artifact", f"not {recipient[:60]}'s copy of {model[:60]} "
                       f"among artifacts")
        marks.append({"model": model, "recipient": recipient,
                      "key": _key(entry["key"], f"{where}.key", fail),
                      "version": mark_version,
                      "densities": _densities(entry["densities"], f"{where}.densities", fail),
                      "artifact": artifact})
    return Bundle(created_at=created_at, generator=generator, models=models,
                  artifacts=artifacts, indicators=indicators, weight_prints=prints,
                  watermarks=marks, files=_files(doc.get("files", []), artifacts, indicators,
                                                 model_of, fail))


def _files(value: object, artifacts: list[BundleArtifact], indicators: list[BundleIndicator],
           model_of: Callable[[dict[str, Any], str], str], fail: _Fail) -> list[BundleFile]:
    """The `files` entries, each naming a digest the bundle carries (as an indicator, or as
    an artifact's digest: what the registry holds a row for once they are imported)."""
    entries = _list(value, "files", fail)
    if len(entries) > MAX_FILE_CLAIMS:
        raise fail("files", f"{len(entries)} entries, over the limit of {MAX_FILE_CLAIMS}")
    carried: dict[tuple[str, str, str], set[int]] = {}
    for ind in indicators:
        sizes = carried.setdefault((ind["model"], ind["algo"], ind["value"]), set())
        if ind["size"] is not None:
            sizes.add(ind["size"])
    for art in artifacts:
        digests = [("sha256", art["sha256"]), ("sha1", art["sha1"]), ("md5", art["md5"])]
        if art["pieces_root"]:
            digests.append(("pieces_root", art["pieces_root"]))
        if len(art["shards"]) > 1:  # a single shard is the file's SHA-256 (add_artifact)
            digests += [("shard", shard) for shard in art["shards"]]
        for algo, digest in digests:
            carried.setdefault((art["model"], algo, digest), set())
    files: list[BundleFile] = []
    for i, entry in enumerate(entries):
        where = f"files[{i}]"
        _check_keys(entry, _FILE_KEYS, where, fail)
        if isinstance(entry.get("name"), str):
            where += f" ({entry['name'][:60]})"
        model = model_of(entry, where)
        algo, digest = entry["algo"], entry["value"]
        name = _text(entry["name"], f"{where}.name", fail)
        size = _size(entry["size"], f"{where}.size", fail)
        source = _text(entry["source"], f"{where}.source", fail, required=True)
        if algo is None:
            if digest is not None:
                raise fail(f"{where}.algo", "null, but value is set")
            if name is None or size is None:
                raise fail(where, "a file without a digest needs both a name and a size")
        else:
            if not isinstance(algo, str) or algo not in HEX_LENGTHS:
                raise fail(f"{where}.algo", f"unknown digest algorithm {_show(algo)} (known: "
                           f"{', '.join(HEX_LENGTHS)})")
            digest = _hex(digest, value_lengths(algo), f"{where}.value", fail)
            known = carried.get((model, algo, digest))
            if known is None:
                raise fail(f"{where}.value", f"{algo} {digest[:16]}... of {model[:60]} is "
                           f"not among the bundle's indicators or artifacts")
            if name is None and size is None:
                raise fail(where, "neither a name nor a size")
            if size is not None:
                known.add(size)
                if len(known) > MAX_SIZES_PER_DIGEST:
                    raise fail(f"{where}.size", f"over {MAX_SIZES_PER_DIGEST} sizes for "
                               f"{algo} {digest[:16]}...: the same bytes have one size")
        files.append({"model": model, "algo": algo, "value": digest, "name": name,
                      "size": size, "source": source})
    return files


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show_value(value: object) -> str:
    """A small number as itself, anything else as its kind."""
    return str(value)[:20] if _is_int(value) else _show(value)


def _show(value: object) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             type(None): "null", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _check_keys(entry: object, keys: tuple[str, ...], where: str, fail: _Fail) -> None:
    if not isinstance(entry, dict):
        raise fail(where, f"expected an object, got {_show(entry)}")
    unknown = [k for k in entry if k not in keys]
    if unknown:
        raise fail(where, f"unknown key {str(unknown[0])[:40]!r}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise fail(where, f"missing key {missing[0]!r}")


# Builds the BundleError for (where, what is wrong), naming the bundle.
_Fail = Callable[[str, str], BundleError]


def _list(value: object, where: str, fail: _Fail) -> list[Any]:
    if not isinstance(value, list):
        raise fail(where, f"expected an array, got {_show(value)}")
    return value


@overload
def _text(value: object, where: str, fail: _Fail, *, required: Literal[True]) -> str: ...
@overload
def _text(value: object, where: str, fail: _Fail, *, required: bool = False) -> str | None: ...
def _text(value: object, where: str, fail: _Fail, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise fail(where, f"expected a string{'' if required else ' or null'}, "
                   f"got {_show(value)}")
    if required and not value:
        raise fail(where, "must not be empty")
    if len(value) > MAX_TEXT or "\0" in value:
        raise fail(where, f"not a plausible value (longer than {MAX_TEXT} characters or "
                   f"containing NUL)")
    return value


@overload
def _size(value: object, where: str, fail: _Fail, *, required: Literal[True]) -> int: ...
@overload
def _size(value: object, where: str, fail: _Fail, *, required: bool = False) -> int | None: ...
def _size(value: object, where: str, fail: _Fail, *, required: bool = False) -> int | None:
    if value is None and not required:
        return None
    if not _is_int(value) or not 0 <= value < 2**63:
        raise fail(where, f"expected a size in bytes, got {_show(value)}")
    return value


def _hex(value: object, length: int | tuple[int, ...], where: str, fail: _Fail) -> str:
    lengths = (length,) if isinstance(length, int) else length
    wanted = " or ".join(map(str, lengths))
    if not isinstance(value, str):
        raise fail(where, f"expected {wanted} hex characters, got {_show(value)}")
    if not _HEX.fullmatch(value):
        raise fail(where, f"expected {wanted} hex characters, got non-hex {value[:70]!r}")
    if len(value) not in lengths:
        raise fail(where, f"expected {wanted} hex characters, got {len(value)}")
    return value.lower()


def _key(value: object, where: str, fail: _Fail) -> bytes:
    """A mark's key: strict base64 of exactly MARK_KEY_BYTES (the length is checked on the
    text first, so a huge string is refused before it is decoded)."""
    length = 4 * -(-MARK_KEY_BYTES // 3)
    if not isinstance(value, str):
        raise fail(where, f"expected base64 of {MARK_KEY_BYTES} bytes, got {_show(value)}")
    if len(value) != length:
        raise fail(where, f"expected base64 of {MARK_KEY_BYTES} bytes ({length} characters), "
                   f"got {len(value)} characters")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise fail(where, f"expected base64 of {MARK_KEY_BYTES} bytes, got invalid base64") \
            from None
    if len(key) != MARK_KEY_BYTES:
        raise fail(where, f"expected base64 of {MARK_KEY_BYTES} bytes, got {len(key)} bytes")
    return key


def _densities(value: object, where: str, fail: _Fail) -> dict[str, float]:
    if not isinstance(value, dict):
        raise fail(where, f"expected an object, got {_show(value)}")
    if len(value) > MAX_MARK_TENSORS:
        raise fail(where, f"{len(value)} tensors, over the limit of {MAX_MARK_TENSORS}")
    densities: dict[str, float] = {}
    for name, density in value.items():
        name = _text(name, f"{where} key", fail, required=True)
        inner = f"{where}[{name[:60]!r}]"
        if not isinstance(density, (int, float)) or isinstance(density, bool):
            raise fail(inner, f"expected a number from 0 to 1, got {_show(density)}")
        if not (math.isfinite(density) and 0 <= density <= 1):
            raise fail(inner, f"expected a number from 0 to 1, got {density!r:.20}")
        densities[name] = float(density)
    return densities
