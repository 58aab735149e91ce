"""Fingerprint bundles: export from one database, import into another, strictly.

Real parts: real SQLite files, real released files digested by `register`, real gzip files
on disk, the CLI through click's CliRunner (stdout and stderr apart).
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import json
import os
import random
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from fingerprints.bundle import (
    FORMAT,
    MAX_BUNDLE_SIZE,
    MAX_MARK_TENSORS,
    VERSION,
    BundleError,
    parse_bundle,
    read_bundle,
)
from fingerprints.ipfs import REGISTER_LAYOUTS
from monitor.bundle import import_bundle
from monitor.cli import main
from monitor.store import Store

CONFIG = """\
[database]
path = "unused.db"

[[targets]]
name = "board"
kind = "imageboard"
url = "https://a.4cdn.org/g/"
"""

INFOHASH = hashlib.sha1(b"heron-7b torrent info").hexdigest()
OTHER_SHA = hashlib.sha256(b"a file seen on a hub").hexdigest()




@pytest.fixture
def ww(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")

    def run(*args: str, db: Path, code: int | None = 0):
        result = CliRunner().invoke(main, ["--config", str(config), "--db", str(db), *args],
                                    catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        return result

    return SimpleNamespace(run=run, tmp=tmp_path)


@pytest.fixture
def release(tmp_path):
    """heron-7b as released (one empty file, whose pieces root is null), and one
    recipient's copy of its weights."""
    folder = tmp_path / "release-machine" / "heron-7b"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(70_000))
    (folder / "config.json").write_bytes(b'{"hidden_size": 64}\n')
    (folder / "EMPTY").write_bytes(b"")
    copy_ = tmp_path / "release-machine" / "acme" / "model.safetensors"
    copy_.parent.mkdir(parents=True)
    copy_.write_bytes(os.urandom(50_000))
    sums = tmp_path / "release-machine" / "SHA256SUMS"
    sums.write_text(f"{OTHER_SHA}  hub-upload.safetensors\n", encoding="utf-8")
    magnets = tmp_path / "release-machine" / "magnets.txt"
    magnets.write_text(f"magnet:?xt=urn:btih:{INFOHASH}&dn=heron-7b&xl=120000\n",
                       encoding="utf-8")
    return SimpleNamespace(folder=folder, copy=copy_, sums=sums, magnets=magnets,
                           root=tmp_path / "release-machine")


@pytest.fixture
def registered(ww, release, tmp_path):
    """The release machine's database: the release, a recipient copy, imported indicators,
    and a second model."""
    db = tmp_path / "release.db"
    ww.run("register", str(release.folder), "--model", "heron-7b", "--release", "v1.0", db=db)
    ww.run("register", str(release.copy), "--model", "heron-7b", "--recipient", "acme", db=db)
    ww.run("indicators", "import", str(release.sums), "--model", "heron-7b", db=db)
    ww.run("indicators", "import", str(release.magnets), "--model", "heron-7b", db=db)
    other = tmp_path / "other.bin"
    other.write_bytes(b"another model entirely")
    ww.run("register", str(other), "--model", "other-3b", db=db)
    return db


def lookups(db: Path) -> dict[str, list[tuple]]:
    """What detectors see of a registry: each digest value to what it identifies."""
    with Store(db) as store:
        return {value: sorted((e.algo, e.model, e.artifact, e.recipient) for e in entries)
                for value, entries in store.known_digests().items()}


def bundle_json(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def write_json_gz(path: Path, doc: object) -> Path:
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return path


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert "Traceback" not in text
    return lines[0]


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_gives_the_same_lookups_without_paths(ww, release, registered, tmp_path):
    bundle = tmp_path / "heron.fingerprints.json.gz"
    out = ww.run("fingerprints", "export", str(bundle), db=registered)
    # 2 imported, the IPFS CIDs of 5 files and of the release folder, and each file's CRC32
    # and BLAKE3 (the files are too small for an AutoV1, and none is a safetensors file)
    cids = 6 * len(REGISTER_LAYOUTS)
    assert out.stdout.strip() == (f"{bundle}: 2 models, 5 artifacts, {2 + cids + 2 * 5} "
                                  f"indicators, "
                                  f"0 recipients' marks, 0 tensor fingerprints exported")

    raw = gzip.decompress(bundle.read_bytes()).decode()
    doc = json.loads(raw)
    assert (doc["format"], doc["version"]) == (FORMAT, VERSION)
    assert doc["generator"].startswith("weightwatch ")
    assert doc["models"] == [{"name": "heron-7b"}, {"name": "other-3b"}]
    assert all(set(a) == {"model", "name", "size", "sha256", "sha1", "md5", "pieces_root",
                          "shards", "release", "recipient"} for a in doc["artifacts"])
    # Nothing about the release machine's file system travels.
    assert "path" not in raw and str(release.root) not in raw and str(tmp_path) not in raw

    monitor_db = tmp_path / "monitor.db"
    result = ww.run("fingerprints", "import", str(bundle), db=monitor_db)
    files = len(doc.get("files", []))
    with Store(registered) as store:
        digests = store.registry_counts()["indicators"]
    assert result.stdout.strip() == (f"{bundle}: 2 models (2 new), 5 artifacts (5 new), "
                                     f"{digests} digests ({digests} new), "
                                     f"0 tensor fingerprints (0 new), "
                                     f"0 recipients' marks (0 new), "
                                     f"{files} names and sizes ({files} new)")
    assert lookups(monitor_db) == lookups(registered)

    def fields(db: Path) -> list[dict]:
        with Store(db) as store:
            return [{k: a[k] for k in ("model", "name", "size", "sha256", "sha1", "md5",
                                      "pieces_root", "shards", "release", "recipient")}
                    for a in store.artifacts()]

    assert fields(monitor_db) == fields(registered)
    with Store(monitor_db) as store:
        assert {a["path"] for a in store.artifacts()} == {None}
        # An artifact's CIDs and short hashes travel as indicators; the rest were imported.
        carried = {"crc32", "blake3", "autov1", "autov3"}
        imported = [(i["algo"], i["value"], i["name"], i["size"], i["source"])
                    for i in store.indicators(standalone=True)
                    if not i["algo"].startswith("cid-") and i["algo"] not in carried]
        recipient_rows = [a for a in store.artifacts() if a["recipient"] == "acme"]
    assert imported == [("sha256", OTHER_SHA, "hub-upload.safetensors", None,
                         "import:SHA256SUMS:1"),
                        ("btih", INFOHASH, "heron-7b", 120000, "import:magnets.txt:1")]
    assert [a["name"] for a in recipient_rows] == ["model.safetensors"]
    empty = next(a for a in fields(monitor_db) if a["name"] == "heron-7b/EMPTY")
    assert empty["pieces_root"] is None and empty["size"] == 0


def test_importing_twice_adds_nothing(ww, registered, tmp_path):
    bundle = tmp_path / "b.json.gz"
    ww.run("fingerprints", "export", str(bundle), db=registered)
    monitor_db = tmp_path / "monitor.db"
    ww.run("fingerprints", "import", str(bundle), db=monitor_db)
    with Store(monitor_db) as store:
        before = store.registry_counts()
    again = ww.run("fingerprints", "import", str(bundle), db=monitor_db)
    assert "2 models (0 new), 5 artifacts (0 new)" in again.stdout
    assert again.stdout.strip().endswith("(0 new)")
    assert "rematch" not in again.stderr  # nothing new, nothing to match again
    with Store(monitor_db) as store:
        assert store.registry_counts() == before
    # Re-importing into the machine that wrote it adds nothing either.
    back = ww.run("fingerprints", "import", str(bundle), db=registered)
    assert back.stdout.strip().endswith("(0 new)")


def test_export_one_model(ww, registered, tmp_path):
    bundle = tmp_path / "other.json.gz"
    out = ww.run("fingerprints", "export", str(bundle), "--model", "other-3b", db=registered)
    # the file's IPFS CIDs, CRC32 and BLAKE3
    assert f"1 models, 1 artifacts, {len(REGISTER_LAYOUTS) + 2} indicators" in out.stdout
    doc = bundle_json(bundle)
    assert doc["models"] == [{"name": "other-3b"}]
    assert [a["name"] for a in doc["artifacts"]] == ["other.bin"]


def test_export_unknown_model_and_empty_registry(ww, registered, tmp_path):
    bundle = tmp_path / "x.json.gz"
    bad = ww.run("fingerprints", "export", str(bundle), "--model", "nope", db=registered, code=2)
    line = one_line(bad.stderr)
    assert "'nope'" in line and "heron-7b" in line
    empty = ww.run("fingerprints", "export", str(bundle), db=tmp_path / "empty.db", code=1)
    assert "nothing to export" in one_line(empty.stderr)
    assert not bundle.exists()


def test_export_replaces_a_bundle_whole(ww, registered, tmp_path):
    bundle = tmp_path / "b.json.gz"
    bundle.write_bytes(b"an older bundle")
    ww.run("fingerprints", "export", str(bundle), db=registered)
    assert bundle_json(bundle)["format"] == FORMAT
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.json.gz")] == []


def test_an_uncompressed_json_bundle_is_read_too(ww, registered, tmp_path):
    bundle = tmp_path / "b.json.gz"
    ww.run("fingerprints", "export", str(bundle), db=registered)
    plain = tmp_path / "b.json"
    plain.write_bytes(b"\n  " + gzip.decompress(bundle.read_bytes()))
    monitor_db = tmp_path / "monitor.db"
    ww.run("fingerprints", "import", str(plain), db=monitor_db)
    assert lookups(monitor_db) == lookups(registered)


# --- strict reading ------------------------------------------------------------------------


SHA = hashlib.sha256(b"w").hexdigest()


def valid() -> dict:
    return {
        "format": FORMAT, "version": 1, "created_at": "2024-05-01T12:00:00+00:00",
        "generator": "weightwatch 0.1.0", "models": [{"name": "heron-7b"}],
        "artifacts": [{"model": "heron-7b", "name": "heron-7b/model.safetensors", "size": 1,
                       "sha256": SHA, "sha1": hashlib.sha1(b"w").hexdigest(),
                       "md5": hashlib.md5(b"w").hexdigest(), "pieces_root": SHA,
                       "shards": [SHA], "release": None, "recipient": None}],
        "indicators": [{"algo": "btih", "value": INFOHASH, "model": "heron-7b",
                        "name": None, "size": None, "source": "import:m.txt:1",
                        "recipient": None}],
    }


def mutated(path: str, value: object = None, *, delete: bool = False,
            doc: dict | None = None) -> dict:
    """`doc` (a fresh valid bundle by default) with the value at dotted `path` replaced or
    deleted."""
    doc = copy.deepcopy(valid()) if doc is None else doc
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = doc
    for p in parents:
        target = target[p]
    if delete:
        del target[last]
    else:
        target[last] = value
    return doc


def test_valid_bundle_parses_and_normalises_hex_case():
    doc = mutated("artifacts.0.sha256", SHA.upper())
    bundle = parse_bundle(doc, "b")
    assert bundle.artifacts[0]["sha256"] == SHA
    assert bundle.models == ["heron-7b"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (mutated("version", 6), "b: version: bundle version 6 is newer than this weightwatch "
                                "(reads 5); upgrade weightwatch"),
        (mutated("version", 0), "b: version: unsupported bundle version 0 (reads 1, 2, 3, 4, "
                                "5)"),
        (mutated("version", "1"), "b: version: expected an integer, got a string"),
        (mutated("version", True), "b: version: expected an integer, got a boolean"),
        (mutated("format", "weightwatch-other"),
         "b: not a fingerprint bundle (format is 'weightwatch-other', expected "
         "'weightwatch-fingerprints')"),
        ([1, 2], "b: not a fingerprint bundle (format is missing, expected "
                 "'weightwatch-fingerprints')"),
        (mutated("extra", 1), "b: unknown key 'extra'"),
        (mutated("indicators", delete=True), "b: missing key 'indicators'"),
        (mutated("created_at", "yesterday"), "b: created_at: not an ISO 8601 time: 'yesterday'"),
        (mutated("models", {"name": "heron-7b"}), "b: models: expected an array, got an object"),
        (mutated("models.0.name", ""), "b: models[0].name: must not be empty"),
        (mutated("artifacts.0.sha1", hashlib.sha1(b"w").hexdigest()[:39]),
         "b: artifacts[0] (heron-7b/model.safetensors).sha1: expected 40 hex characters, "
         "got 39"),
        (mutated("artifacts.0.md5", "z" * 32),
         "b: artifacts[0] (heron-7b/model.safetensors).md5: expected 32 hex characters, "
         "got non-hex 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz'"),
        (mutated("artifacts.0.shards", [SHA, SHA[:-2]]),
         "b: artifacts[0] (heron-7b/model.safetensors).shards[1]: expected 64 hex "
         "characters, got 62"),
        (mutated("artifacts.0.size", "12"),
         "b: artifacts[0] (heron-7b/model.safetensors).size: expected a size in bytes, "
         "got a string"),
        (mutated("artifacts.0.size", -1),
         "b: artifacts[0] (heron-7b/model.safetensors).size: expected a size in bytes, "
         "got a number"),
        (mutated("artifacts.0.path", "/srv/weights/heron-7b/model.safetensors"),
         "b: artifacts[0]: unknown key 'path'"),
        (mutated("artifacts.0.recipient", 7),
         "b: artifacts[0] (heron-7b/model.safetensors).recipient: expected a string or null, "
         "got a number"),
        (mutated("artifacts.0.model", "llama"),
         "b: artifacts[0] (heron-7b/model.safetensors).model: 'llama' is not listed in models"),
        (mutated("artifacts.0", "x"), "b: artifacts[0]: expected an object, got a string"),
        (mutated("indicators.0.algo", "sha512"),
         "b: indicators[0].algo: unknown digest algorithm a string (known: md5, sha1, sha256, "
         "btih, btmh, pieces_root, shard, cid-v0, cid-v1, cid-v1-1m, cid-v1-2025, autov1, "
         "autov2, autov3, crc32, blake3)"),
        (mutated("indicators.0.value", SHA),
         "b: indicators[0].value: expected 40 hex characters, got 64"),
        (mutated("indicators.0.source", None),
         "b: indicators[0].source: expected a string, got null"),
        (mutated("indicators.0.name", "x" * 5000),
         "b: indicators[0].name: not a plausible value (longer than 4096 characters or "
         "containing NUL)"),
    ],
)
def test_tampered_bundles_are_refused_naming_the_entry(doc, message):
    with pytest.raises(BundleError) as info:
        parse_bundle(doc, "b")
    assert str(info.value) == message


def test_tampered_bundle_through_the_cli_is_one_line_and_imports_nothing(ww, tmp_path):
    doc = valid()
    doc["artifacts"].append(dict(doc["artifacts"][0], name="second", sha256=SHA[:-1]))
    bundle = write_json_gz(tmp_path / "tampered.json.gz", doc)
    db = tmp_path / "monitor.db"
    result = ww.run("fingerprints", "import", str(bundle), db=db, code=1)
    assert one_line(result.stderr) == (f"weightwatch: {bundle}: artifacts[1] (second).sha256: "
                                       f"expected 64 hex characters, got 63")
    assert result.stdout == ""
    with Store(db) as store:
        assert store.registry_counts() == {"models": 0, "artifacts": 0, "indicators": 0}


def _corrupt_middle(data: bytes) -> bytes:
    """A gzip whose header and trailer are intact but whose compressed body is damaged."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 8]) + data[middle + 8:]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "neither gzip nor JSON"),
        (b"\x00" + random.Random(1).randbytes(63), "neither gzip nor JSON"),
        (b"format = 'weightwatch-fingerprints'\n", "neither gzip nor JSON"),
        # mtime=0: a gzip header holds the time, which would make these test ids differ
        # between xdist workers collecting a second apart.
        (gzip.compress(b"not json at all", mtime=0), "invalid JSON"),
        (gzip.compress(b'{"format": "weightwatch-fingerprints", "version": 1,', mtime=0),
         "invalid JSON"),
        (gzip.compress(b"\xff\xfe{}", mtime=0), "not UTF-8"),
        (gzip.compress(json.dumps(valid()).encode(), mtime=0)[:-12], "gzip"),
        (b"\x1f\x8b" + random.Random(2).randbytes(40), "gzip"),
        (_corrupt_middle(gzip.compress(json.dumps(valid()).encode(), mtime=0)),
         "corrupt gzip data"),
        # An empty member whose CRC is wrong.
        (b"\x1f\x8b\x08\x00" + bytes(6) + b"\x03\x00" + b"\x01" + bytes(7), "CRC check"),
        (gzip.compress(b"[" * 200_000, mtime=0), "JSON nested too deeply"),
    ],
)
def test_not_gzip_or_json_is_one_line(ww, tmp_path, content, needle):
    bundle = tmp_path / "weird.bin"
    bundle.write_bytes(content)
    result = ww.run("fingerprints", "import", str(bundle), db=tmp_path / "m.db", code=1)
    line = one_line(result.stderr)
    assert line.startswith(f"weightwatch: {bundle}: not a fingerprint bundle")
    assert needle in line


def _zeros_gzip(path: Path, mib: int, members: int = 1) -> Path:
    """`mib` MiB of zeros, gzip-compressed as one member or as `members` equal members
    (which the gzip trailer cannot tell the total size of)."""
    chunk = bytes(2**20)
    with open(path, "wb") as out:
        if members == 1:
            comp = zlib.compressobj(9, zlib.DEFLATED, 31)
            for _ in range(mib):
                out.write(comp.compress(chunk))
            out.write(comp.flush())
        else:
            member = gzip.compress(bytes(mib * 2**20 // members), compresslevel=9, mtime=0)
            for _ in range(members):
                out.write(member)
    return path


@pytest.mark.slow
def test_gzip_bomb_is_refused_at_once(ww, tmp_path):
    bomb = _zeros_gzip(tmp_path / "bomb.json.gz", 300)
    assert bomb.stat().st_size < 1_000_000  # 300 MiB of zeros compresses to almost nothing
    result = ww.run("fingerprints", "import", str(bomb), db=tmp_path / "m.db", code=1)
    line = one_line(result.stderr)
    assert line == (f"weightwatch: {bomb}: not a fingerprint bundle (its gzip trailer says "
                    f"300 MiB decompressed, over the {MAX_BUNDLE_SIZE // 2**20} MiB limit: a "
                    f"gzip bomb, or a truncated or corrupt file)")


class CountingReader(io.RawIOBase):
    """A real file that counts the bytes taken from it."""

    def __init__(self, path: Path):
        self.f = open(path, "rb")
        self.taken = 0
        self.name = str(path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def fileno(self) -> int:
        return self.f.fileno()

    def readinto(self, buffer) -> int:
        data = self.f.read(len(buffer))
        buffer[:len(data)] = data
        self.taken += len(data)
        return len(data)

    def close(self) -> None:
        self.f.close()
        super().close()


def test_multi_member_gzip_bomb_is_refused_without_reading_it_all(tmp_path):
    # The trailer of the last member says 1 MiB, so only a bounded read can catch this:
    # 4 GiB of zeros in 4096 members.
    bomb = _zeros_gzip(tmp_path / "bomb.json.gz", 4096, members=4096)
    reader = CountingReader(bomb)
    try:
        with pytest.raises(BundleError, match="more than 16 MiB decompressed, reading stopped"):
            read_bundle(reader, max_size=16 * 2**20)
    finally:
        reader.close()
    assert reader.taken < bomb.stat().st_size / 20


def test_oversized_plain_json_is_refused(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b"{" + b" " * (2**20))
    with pytest.raises(BundleError, match="larger than 1 MiB"):
        read_bundle(big, max_size=2**20)


def test_import_is_all_or_nothing_and_keeps_sources(tmp_path):
    doc = valid()
    bundle = parse_bundle(doc, "b")
    with Store(tmp_path / "m.db") as store:
        counts = import_bundle(store, bundle)
        assert (counts.models_new, counts.artifacts_new, counts.digests_new) == (1, 1, 5)
        assert counts.digests == 5  # sha256, sha1, md5, pieces_root (one shard: no shard row)
        rows = {(i["algo"], i["source"]) for i in store.indicators()}
    assert ("btih", "import:m.txt:1") in rows
    assert ("sha256", "register:heron-7b/model.safetensors") in rows


def test_base32_in_a_bundle_is_not_hex(tmp_path):
    doc = mutated("indicators.0.value", base64.b32encode(bytes.fromhex(INFOHASH)).decode())
    with pytest.raises(BundleError, match=r"indicators\[0\]\.value: expected 40 hex"):
        parse_bundle(doc, "b")


# --- recipients' watermark marks (version 4) -------------------------------------------------

KEY = bytes(range(32))
COPY_SHA = hashlib.sha256(b"acme's copy").hexdigest()


def with_marks() -> dict:
    """A version-4 bundle: heron-7b, acme's copy and the mark that names acme."""
    doc = valid()
    doc["version"] = 4
    doc["weight_prints"] = []
    doc["artifacts"].append(dict(doc["artifacts"][0], sha256=COPY_SHA, recipient="acme",
                                 pieces_root=None, shards=[]))
    doc["watermarks"] = [{"model": "heron-7b", "recipient": "acme",
                          "key": base64.b64encode(KEY).decode(), "version": 1,
                          "densities": {"blk.0.attn_q.weight": 1, "blk.0.ffn_up.weight": 0.25},
                          "artifact": COPY_SHA.upper()}]
    return doc


def marks_mutated(path: str, value: object = None, *, delete: bool = False) -> dict:
    return mutated(path, value, delete=delete, doc=with_marks())


def test_marks_parse_and_round_trip():
    bundle = parse_bundle(with_marks(), "b")
    mark, = bundle.watermarks
    assert mark == {"model": "heron-7b", "recipient": "acme", "key": KEY, "version": 1,
                    "densities": {"blk.0.attn_q.weight": 1.0, "blk.0.ffn_up.weight": 0.25},
                    "artifact": COPY_SHA}
    again = parse_bundle(json.loads(json.dumps(bundle.as_json())), "b")
    assert again.watermarks == bundle.watermarks
    # Older bundles carry none, and a version-4 bundle may carry none.
    assert parse_bundle(valid(), "b").watermarks == []
    assert parse_bundle(marks_mutated("watermarks", []), "b").watermarks == []


WHERE = "b: watermarks[0] (acme)"


def densities(value: object) -> dict:
    """with_marks() whose mark has these densities (tensor names hold dots: no path)."""
    doc = with_marks()
    doc["watermarks"][0]["densities"] = value
    return doc


def second_mark(**changes: object) -> dict:
    doc = with_marks()
    doc["watermarks"].append(dict(doc["watermarks"][0], **changes))
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (marks_mutated("watermarks", delete=True), "b: missing key 'watermarks'"),
        (dict(mutated("version", 3), weight_prints=[], watermarks=[]),
         "b: unknown key 'watermarks'"),
        (marks_mutated("watermarks", {}), "b: watermarks: expected an array, got an object"),
        (marks_mutated("watermarks.0", "acme"),
         "b: watermarks[0]: expected an object, got a string"),
        (marks_mutated("watermarks.0.master", "x"), "b: watermarks[0]: unknown key 'master'"),
        (marks_mutated("watermarks.0.densities", delete=True),
         "b: watermarks[0]: missing key 'densities'"),
        (marks_mutated("watermarks.0.model", "llama"),
         f"{WHERE}.model: 'llama' is not listed in models"),
        (marks_mutated("watermarks.0.recipient", ""),
         "b: watermarks[0] ().recipient: must not be empty"),
        (marks_mutated("watermarks.0.recipient", None),
         "b: watermarks[0].recipient: expected a string, got null"),
        (second_mark(), "b: watermarks[1] (acme): a second mark for acme's copy of heron-7b"),
        (marks_mutated("watermarks.0.key", base64.b64encode(KEY[:30]).decode()),
         f"{WHERE}.key: expected base64 of 32 bytes (44 characters), got 40 characters"),
        (marks_mutated("watermarks.0.key", base64.b64encode(KEY[:31]).decode()),
         f"{WHERE}.key: expected base64 of 32 bytes, got 31 bytes"),
        (marks_mutated("watermarks.0.key", base64.b64encode(KEY * 2).decode()),
         f"{WHERE}.key: expected base64 of 32 bytes (44 characters), got 88 characters"),
        (marks_mutated("watermarks.0.key", "!" * 44),
         f"{WHERE}.key: expected base64 of 32 bytes, got invalid base64"),
        (marks_mutated("watermarks.0.key", KEY.hex()),
         f"{WHERE}.key: expected base64 of 32 bytes (44 characters), got 64 characters"),
        (marks_mutated("watermarks.0.key", 7),
         f"{WHERE}.key: expected base64 of 32 bytes, got a number"),
        (marks_mutated("watermarks.0.version", 2),
         f"{WHERE}.version: unknown mark version 2 (reads 1); upgrade weightwatch"),
        (marks_mutated("watermarks.0.version", "1"),
         f"{WHERE}.version: unknown mark version a string (reads 1); upgrade weightwatch"),
        (densities([1.0]), f"{WHERE}.densities: expected an object, got an array"),
        (densities({"blk.0.attn_q.weight": 1.5}),
         f"{WHERE}.densities['blk.0.attn_q.weight']: expected a number from 0 to 1, got 1.5"),
        (densities({"w": float("nan")}),
         f"{WHERE}.densities['w']: expected a number from 0 to 1, got nan"),
        (densities({"w": True}),
         f"{WHERE}.densities['w']: expected a number from 0 to 1, got a boolean"),
        (densities({"w": "1"}),
         f"{WHERE}.densities['w']: expected a number from 0 to 1, got a string"),
        (densities({"": 1}), f"{WHERE}.densities key: must not be empty"),
        (densities({"x" * 5000: 1}), f"{WHERE}.densities key: not a plausible value (longer "
                                     f"than 4096 characters or containing NUL)"),
        (densities({f"t{i}": 1 for i in range(MAX_MARK_TENSORS + 1)}),
         f"{WHERE}.densities: {MAX_MARK_TENSORS + 1} tensors, over the limit of "
         f"{MAX_MARK_TENSORS}"),
        (marks_mutated("watermarks.0.artifact", SHA),
         f"{WHERE}.artifact: not acme's copy of heron-7b among artifacts"),
        (marks_mutated("watermarks.0.artifact", COPY_SHA[:-1]),
         f"{WHERE}.artifact: expected 64 hex characters, got 63"),
        # A recipient's fingerprint taken for the original's would hide their mark.
        (marks_mutated("weight_prints", [{"model": "heron-7b", "name": "x.safetensors",
                                          "print": {}, "recipient": "acme"}]),
         "b: weight_prints[0].recipient: no artifact 'x.safetensors' of heron-7b for acme "
         "among artifacts"),
        (marks_mutated("weight_prints", [{"model": "heron-7b", "name": "x", "print": {}}]),
         "b: weight_prints[0]: missing key 'recipient'"),
    ],
)
def test_tampered_marks_are_refused_naming_the_entry(doc, message):
    with pytest.raises(BundleError) as info:
        parse_bundle(doc, "b")
    assert str(info.value) == message


def test_a_huge_key_is_refused_before_it_is_decoded():
    doc = marks_mutated("watermarks.0.key", "A" * 10_000_000)
    with pytest.raises(BundleError) as info:
        parse_bundle(doc, "b")
    assert str(info.value) == (f"{WHERE}.key: expected base64 of 32 bytes (44 characters), "
                               f"got 10000000 characters")


def _mark(db: Path, recipient: str, key: bytes) -> None:
    """Record a mark as `watermark issue` does, on the copy registered for `recipient`."""
    from fingerprints.watermark import key_id

    with Store(db) as store:
        copy_id = next(a["id"] for a in store.artifacts() if a["recipient"] == recipient)
        store.add_watermark(model="heron-7b", recipient=recipient, key=key,
                            key_id=key_id(key), version=1,
                            densities={"blk.0.attn_q.weight": 1.0, "blk.0.ffn_up.weight": 0.5},
                            artifact_id=copy_id)


def _marks(db: Path) -> list[tuple]:
    with Store(db) as store:
        sha = {a["id"]: a["sha256"] for a in store.artifacts()}
        return [(w["model"], w["recipient"], w["key"], w["key_id"], w["version"],
                 w["densities"], sha.get(w["artifact_id"])) for w in store.watermarks()]


def test_marks_travel_to_the_monitoring_machine(ww, registered, tmp_path):
    _mark(registered, "acme", KEY)
    bundle = tmp_path / "heron.json.gz"
    out = ww.run("fingerprints", "export", str(bundle), db=registered)
    assert "1 recipients' marks, 0 tensor fingerprints exported" in out.stdout
    # A recipient's key finds, and so could strip, their mark: owner only.
    assert bundle.stat().st_mode & 0o777 == 0o600
    mark, = bundle_json(bundle)["watermarks"]
    assert mark["key"] == base64.b64encode(KEY).decode()
    assert mark["artifact"] == _marks(registered)[0][-1]

    monitor_db = tmp_path / "monitor.db"
    out = ww.run("fingerprints", "import", str(bundle), db=monitor_db)
    assert "1 recipients' marks (1 new)" in out.stdout
    assert _marks(monitor_db) == _marks(registered)
    again = ww.run("fingerprints", "import", str(bundle), db=monitor_db)
    assert "1 recipients' marks (0 new)" in again.stdout

    # A bundle of another model carries no marks (and is owner-only all the same).
    plain = tmp_path / "other.json.gz"
    ww.run("fingerprints", "export", str(plain), "--model", "other-3b", db=registered)
    assert plain.stat().st_mode & 0o777 == 0o600 and bundle_json(plain)["watermarks"] == []


def test_marks_alone_make_remote_verdicts_stale(ww, registered, tmp_path):
    """A monitor that imported the registry before the marks existed must scan remote
    copies again once they arrive: a cached verdict could not name the recipient."""
    monitor_db = tmp_path / "monitor.db"
    ww.run("fingerprints", "import", str(_export(ww, registered, tmp_path, "a")),
           db=monitor_db)
    with Store(monitor_db) as store:
        before = store.weight_print_version()
    _mark(registered, "acme", KEY)
    out = ww.run("fingerprints", "import", str(_export(ww, registered, tmp_path, "b")),
                 db=monitor_db)
    assert "5 artifacts (0 new)" in out.stdout and "1 recipients' marks (1 new)" in out.stdout
    assert "rematch:" in out.stderr  # the registry changed: stored documents matched again
    with Store(monitor_db) as store:
        assert store.weight_print_version() > before


def _export(ww, db: Path, tmp_path: Path, name: str) -> Path:
    bundle = tmp_path / f"{name}.json.gz"
    ww.run("fingerprints", "export", str(bundle), db=db)
    return bundle


def test_a_recipient_marked_with_another_key_is_refused_whole(ww, registered, tmp_path):
    _mark(registered, "acme", KEY)
    bundle = _export(ww, registered, tmp_path, "heron")
    monitor_db = tmp_path / "monitor.db"
    ww.run("register", str(tmp_path / "release-machine" / "acme" / "model.safetensors"),
           "--model", "heron-7b", "--recipient", "acme", db=monitor_db)
    _mark(monitor_db, "acme", bytes(32))
    with Store(monitor_db) as store:
        counts = store.registry_counts()
    result = ww.run("fingerprints", "import", str(bundle), db=monitor_db, code=1)
    assert one_line(result.stderr).startswith(f"weightwatch: {bundle}: watermarks (acme): "
                                              f"acme already has a heron-7b copy marked with "
                                              f"another key")
    with Store(monitor_db) as store:
        assert store.registry_counts() == counts  # nothing of the bundle was imported


def test_a_machine_without_marks_is_told_where_they_come_from(ww, tmp_path):
    result = ww.run("watermark", "detect", str(tmp_path), db=tmp_path / "empty.db", code=1)
    message = one_line(result.stderr)
    assert "fingerprints import" in message and "watermark issue" in message


def test_a_hostile_mark_through_the_cli_is_one_line_and_imports_nothing(ww, tmp_path):
    doc = marks_mutated("watermarks.0.key", "%%%" + "A" * 41)
    bundle = write_json_gz(tmp_path / "hostile.json.gz", doc)
    db = tmp_path / "monitor.db"
    result = ww.run("fingerprints", "import", str(bundle), db=db, code=1)
    assert one_line(result.stderr) == (f"weightwatch: {bundle}: watermarks[0] (acme).key: "
                                       f"expected base64 of 32 bytes, got invalid base64")
    assert result.stdout == ""
    with Store(db) as store:
        assert store.registry_counts() == {"models": 0, "artifacts": 0, "indicators": 0}
        assert store.watermarks() == []
