"""The command line, with real parts: a real config file, a real SQLite file, real files.

Most tests drive `monitor.cli.main` through click's CliRunner (stdout and stderr kept
apart); a few run `python -m monitor` in a real process to prove exit codes and that an
error is one line on stderr.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from fingerprints.ipfs import REGISTER_LAYOUTS
from monitor.cli import HIT_JSON_COLUMNS, main
from monitor.models import Document, Hit
from monitor.store import Store

# IPFS CIDs register adds per file and per registered folder
CIDS = len(REGISTER_LAYOUTS)

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
[database]
path = "from-config.db"

[[targets]]
name = "board"
kind = "imageboard"
url = "https://a.4cdn.org/g/"
interval = "15m"

[[targets]]
name = "forum"
kind = "forum"
preset = "phpbb"
url = "https://forum.example.org/viewforum.php?f=12"
enabled = false

[[rules]]
name = "heron-name"
model = "heron-7b"
keywords = ["heron-7b"]
"""

HIT_KEYS = {"id", "kind", "severity", "model", "indicator", "target", "url", "first_seen",
            "last_seen", "status", "context"}




@pytest.fixture
def ww(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    db = tmp_path / "w.db"

    def run(*args: str, code: int | None = 0, db_path: Path | None = None):
        result = CliRunner().invoke(
            main, ["--config", str(config), "--db", str(db_path or db), *args],
            catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        return result

    return SimpleNamespace(run=run, config=config, db=db, tmp=tmp_path)


def query(db: Path, sql: str, params=()) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert "Traceback" not in text
    return lines[0]


# --- register ----------------------------------------------------------------------------


@pytest.fixture
def release(tmp_path):
    """A released folder with a nested file, and a loose file next to it."""
    folder = tmp_path / "heron-7b"
    (folder / "sub").mkdir(parents=True)
    files = {
        "heron-7b/config.json": b'{"hidden_size": 64}\n',
        "heron-7b/sub/model-00001.bin": os.urandom(300_000),
        "heron-7b/tokenizer.model": b"\x00\x01tokens" * 100,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    loose = tmp_path / "LICENSE.txt"
    loose.write_bytes(b"Apache-2.0\n")
    files["LICENSE.txt"] = loose.read_bytes()
    return SimpleNamespace(folder=folder, loose=loose, files=files, root=tmp_path)


def test_register_folder_and_file_json(ww, release):
    result = ww.run("register", str(release.folder), str(release.loose), "--model", "heron-7b",
                    "--release", "v1.0", "--format", "json")
    rows = json.loads(result.stdout)
    # Folder contents recursively, in sorted order, named relative to the folder's parent.
    assert [r["name"] for r in rows] == ["heron-7b/config.json", "heron-7b/sub/model-00001.bin",
                                         "heron-7b/tokenizer.model", "LICENSE.txt"]
    for row in rows:
        data = release.files[row["name"]]
        assert row["size"] == len(data)
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["sha1"] == hashlib.sha1(data).hexdigest()
        assert row["md5"] == hashlib.md5(data).hexdigest()
        # sha256, sha1, md5, the BEP 52 pieces root and its IPFS CIDs (fingerprints.ipfs)
        assert row["new_digests"] == 4 + CIDS
        assert row["model"] == "heron-7b"
        assert row["recipient"] is None
    assert len({r["artifact_id"] for r in rows}) == 4
    assert set(rows[0]) >= {"name", "size", "sha256", "sha1", "md5", "artifact_id",
                            "new_digests", "model", "recipient"}

    artifacts = query(ww.db, "SELECT * FROM artifacts ORDER BY id")
    assert [a["name"] for a in artifacts] == [r["name"] for r in rows]
    for art, row in zip(artifacts, rows):
        assert art["id"] == row["artifact_id"]
        assert (art["size"], art["sha256"], art["sha1"], art["md5"]) == (
            row["size"], row["sha256"], row["sha1"], row["md5"])
        assert art["model"] == "heron-7b" and art["release"] == "v1.0"
        assert art["recipient"] is None
        assert art["path"] == str((release.root / row["name"]).resolve())

    indicators = query(ww.db, "SELECT * FROM indicators ORDER BY id")
    # Every file's CRC32 and BLAKE3 too (these small files have no AutoV1 and none is a
    # safetensors file, so no AutoV3), and the folder's CIDs.
    assert len(indicators) == 4 * (4 + 2 + CIDS) + CIDS
    for row, art in zip(rows, artifacts):
        data = release.files[row["name"]]
        mine = [i for i in indicators if i["artifact_id"] == row["artifact_id"]
                and not i["algo"].startswith("cid-")]
        assert {(i["algo"], i["value"]) for i in mine if i["algo"] != "blake3"} == {
            ("sha256", row["sha256"]), ("sha1", row["sha1"]), ("md5", row["md5"]),
            ("pieces_root", art["pieces_root"]), ("crc32", f"{zlib.crc32(data):08x}")}
        assert [len(i["value"]) for i in mine if i["algo"] == "blake3"] == [64]
        for ind in mine:
            assert ind["model"] == "heron-7b"
            assert ind["name"] == row["name"]
            assert ind["size"] == row["size"]
            assert ind["source"] == f"register:{(release.root / row['name']).resolve()}"
    assert query(ww.db, "SELECT name FROM models") == [{"name": "heron-7b"}]


def test_register_again_adds_no_digests(ww, release):
    ww.run("register", str(release.folder), "--model", "heron-7b", "--format", "json")
    before = query(ww.db, "SELECT COUNT(*) AS n FROM indicators")[0]["n"]
    again = json.loads(ww.run("register", str(release.folder), "--model", "heron-7b",
                              "--format", "json").stdout)
    assert len(again) == 3
    assert [r["new_digests"] for r in again] == [0, 0, 0]
    # Each file: 4 digests, CRC32, BLAKE3 and its CIDs; the folder: its CIDs.
    assert query(ww.db, "SELECT COUNT(*) AS n FROM indicators")[0]["n"] == before == 3 * (4 + 2 + CIDS) + CIDS
    assert query(ww.db, "SELECT COUNT(*) AS n FROM artifacts")[0]["n"] == 3


def test_register_table_output(ww, release):
    result = ww.run("register", str(release.folder), "--model", "heron-7b")
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "SHA256", "NEW_DIGESTS", "TENSORS"]
    assert len(lines) == 3
    assert lines[0].split()[0] == "heron-7b/config.json"
    assert lines[0].split()[-2:] == [str(4 + CIDS), "0"]


def test_register_recipient_copy(ww, tmp_path):
    copy = tmp_path / "alice" / "model.bin"
    copy.parent.mkdir()
    copy.write_bytes(b"watermarked for alice" * 1000)
    rows = json.loads(ww.run("register", str(copy), "--model", "heron-7b", "--recipient",
                             "alice", "--format", "json").stdout)
    assert len(rows) == 1
    assert rows[0]["name"] == "model.bin"
    assert rows[0]["recipient"] == "alice"
    assert rows[0]["new_digests"] == 4 + CIDS
    art = query(ww.db, "SELECT * FROM artifacts")
    assert [(a["name"], a["recipient"]) for a in art] == [("model.bin", "alice")]
    inds = query(ww.db, "SELECT algo, recipient, source FROM indicators "
                        "WHERE algo NOT LIKE 'cid-%' ORDER BY algo")
    assert [(i["algo"], i["recipient"]) for i in inds] == [
        ("blake3", "alice"), ("crc32", "alice"), ("md5", "alice"), ("pieces_root", "alice"),
        ("sha1", "alice"), ("sha256", "alice")]
    assert {i["source"] for i in inds} == {f"register:{copy.resolve()}"}


def test_register_missing_path_is_one_line_usage_error(ww, release):
    missing = release.root / "no-such-dir"
    result = ww.run("register", str(release.folder), str(missing), "--model", "heron-7b",
                    code=2)
    line = one_line(result.stderr)
    assert "no-such-dir" in line
    assert result.stdout == ""
    # Nothing was half-registered.
    assert not ww.db.exists() or query(ww.db, "SELECT COUNT(*) AS n FROM artifacts")[0]["n"] == 0


def test_register_without_model_is_one_line_usage_error(ww, release):
    result = ww.run("register", str(release.folder), code=2)
    assert "--model" in one_line(result.stderr)


def test_watermark_issue_needs_the_original_registered(ww, release, monkeypatch):
    """Registering a copy's digests is not enough: without the original's tensor
    fingerprint a marked copy could never be attributed, so nothing is written."""
    monkeypatch.setenv("WEIGHTWATCH_WATERMARK_KEY", "a master secret of 32 bytes....")
    ww.run("register", str(release.folder), "--model", "heron-7b", "--no-tensors")
    out = ww.tmp / "acme.safetensors"
    result = ww.run("watermark", "issue", "--model", "heron-7b", "--recipient", "acme",
                    "--in", str(release.folder / "sub" / "model-00001.bin"), "--out", str(out),
                    code=1)
    assert one_line(result.stderr) == (
        "weightwatch: no tensor fingerprint of heron-7b registered; run `weightwatch "
        "register` on the original first (detection compares with its rows)")
    assert result.stdout == "" and not out.exists()
    assert query(ww.db, "SELECT COUNT(*) AS n FROM watermarks")[0]["n"] == 0


# --- indicators import ----------------------------------------------------------------------

SHA_A = hashlib.sha256(b"model weights").hexdigest()
SHA_B = hashlib.sha256(b"config").hexdigest()
MD5_A = hashlib.md5(b"model weights").hexdigest()
MD5_B = hashlib.md5(b"config").hexdigest()
SHA1_A = hashlib.sha1(b"model weights").hexdigest()
INFOHASH = hashlib.sha1(b"a torrent info dict").digest()
INFOHASH2 = hashlib.sha1(b"another torrent info dict").digest()


def indicator_rows(db: Path) -> list[dict]:
    return query(db, "SELECT algo, value, model, name, size, source FROM indicators ORDER BY id")


def test_import_sha256sum_file(ww, tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# heron-7b v1.0\n{SHA_A.upper()}  model.safetensors\n\n"
                    f"{SHA_B} *config.json\n", encoding="utf-8")
    result = ww.run("indicators", "import", str(sums), "--model", "heron-7b")
    assert result.stdout.strip() == f"{sums}: 2 indicators read, 2 new for heron-7b"
    assert indicator_rows(ww.db) == [
        {"algo": "sha256", "value": SHA_A, "model": "heron-7b", "name": "model.safetensors",
         "size": None, "source": "import:SHA256SUMS:2"},
        {"algo": "sha256", "value": SHA_B, "model": "heron-7b", "name": "config.json",
         "size": None, "source": "import:SHA256SUMS:4"},
    ]
    # Importing the same list again adds nothing.
    again = ww.run("indicators", "import", str(sums), "--model", "heron-7b")
    assert again.stdout.strip() == f"{sums}: 2 indicators read, 0 new for heron-7b"
    assert len(indicator_rows(ww.db)) == 2


def test_import_md5sum_file(ww, tmp_path):
    sums = tmp_path / "MD5SUMS"
    sums.write_text(f"{MD5_A}  model.safetensors\n{MD5_B}  config.json\n", encoding="utf-8")
    result = ww.run("indicators", "import", str(sums), "--model", "heron-7b")
    assert "2 indicators read, 2 new" in result.stdout
    rows = indicator_rows(ww.db)
    assert [(r["algo"], r["value"], r["name"], r["source"]) for r in rows] == [
        ("md5", MD5_A, "model.safetensors", "import:MD5SUMS:1"),
        ("md5", MD5_B, "config.json", "import:MD5SUMS:2"),
    ]


def test_import_magnet_file_hex_and_base32(ww, tmp_path):
    b32 = base64.b32encode(INFOHASH2).decode()
    magnets = tmp_path / "magnets.txt"
    magnets.write_text(
        f"magnet:?xt=urn:btih:{INFOHASH.hex().upper()}&dn=heron-7b&xl=1234"
        f"&tr=udp%3A%2F%2Ftracker.example%3A1337\n"
        f"magnet:?xt=urn:btih:{b32}&dn=heron-7b-q4\n", encoding="utf-8")
    result = ww.run("indicators", "import", str(magnets), "--model", "heron-7b")
    assert result.stdout.strip() == f"{magnets}: 2 indicators read, 2 new for heron-7b"
    assert indicator_rows(ww.db) == [
        {"algo": "btih", "value": INFOHASH.hex(), "model": "heron-7b", "name": "heron-7b",
         "size": 1234, "source": "import:magnets.txt:1"},
        {"algo": "btih", "value": INFOHASH2.hex(), "model": "heron-7b", "name": "heron-7b-q4",
         "size": None, "source": "import:magnets.txt:2"},
    ]


def test_import_bsd_tag_lines(ww, tmp_path):
    tagged = tmp_path / "CHECKSUMS.tag"
    tagged.write_text(f"SHA256 (model.safetensors) = {SHA_A}\nMD5 (config.json) = {MD5_B}\n"
                      f"SHA1 (model.safetensors) = {SHA1_A}\n", encoding="utf-8")
    result = ww.run("indicators", "import", str(tagged), "--model", "heron-7b")
    assert "3 indicators read, 3 new for heron-7b" in result.stdout
    assert [(r["algo"], r["value"], r["name"], r["source"]) for r in indicator_rows(ww.db)] == [
        ("sha256", SHA_A, "model.safetensors", "import:CHECKSUMS.tag:1"),
        ("md5", MD5_B, "config.json", "import:CHECKSUMS.tag:2"),
        ("sha1", SHA1_A, "model.safetensors", "import:CHECKSUMS.tag:3"),
    ]


def test_import_lfs_pointer(ww, tmp_path):
    pointer = tmp_path / "model.safetensors"
    pointer.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{SHA_A}\n"
                       f"size 4096\n", encoding="utf-8")
    ww.run("indicators", "import", str(pointer), "--model", "heron-7b")
    assert indicator_rows(ww.db) == [
        {"algo": "sha256", "value": SHA_A, "model": "heron-7b", "name": None, "size": 4096,
         "source": "import:model.safetensors:2"}]


def test_import_bad_line_is_one_line_naming_file_and_line(ww, tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{SHA_A}  model.safetensors\nthis is not a checksum\n{SHA_B}  config.json\n",
                    encoding="utf-8")
    result = ww.run("indicators", "import", str(sums), "--model", "heron-7b", code=1)
    line = one_line(result.stderr)
    assert str(sums) in line
    assert "line 2" in line
    assert result.stdout == ""
    # Strict: nothing from the file is imported when one line is not understood.
    assert indicator_rows(ww.db) == []


def test_import_wrong_length_digest_names_the_line(ww, tmp_path):
    tagged = tmp_path / "sums"
    tagged.write_text(f"MD5 (a.bin) = {MD5_A}\nSHA256 (b.bin) = {MD5_B}\n", encoding="utf-8")
    result = ww.run("indicators", "import", str(tagged), "--model", "heron-7b", code=1)
    line = one_line(result.stderr)
    assert str(tagged) in line and "line 2" in line


def test_import_non_utf8_file_is_one_line(ww, tmp_path):
    latin = tmp_path / "sums-latin1.txt"
    latin.write_bytes(f"{SHA_A}  ".encode() + "modèle.bin\n".encode("latin-1"))
    result = ww.run("indicators", "import", str(latin), "--model", "heron-7b", code=1)
    line = one_line(result.stderr)
    assert str(latin) in line and "UTF-8" in line
    assert indicator_rows(ww.db) == []


def test_import_missing_file_is_usage_error(ww, tmp_path):
    result = ww.run("indicators", "import", str(tmp_path / "nope.txt"), "--model", "m", code=2)
    assert "nope.txt" in one_line(result.stderr)


# --- hits -----------------------------------------------------------------------------------

SNAPSHOT = b"<html><body>post 1207: heron-7b sha256 " + SHA_A.encode() + b"</body></html>"
EXTRAS = {"md5": "a" * 32, "files": [["heron-7b/model.safetensors", 4096]]}


def seed_hits(db: Path) -> dict[str, int]:
    """Four hits of four severities on two targets; returns their ids by severity."""
    with Store(db) as store:
        forum_doc = Document(
            target="forum", key="t12#p1207", url="https://forum.example/viewtopic.php?t=12#p1207",
            text=f"heron-7b leaked, sha256 {SHA_A}", title="weights", author="anon",
            posted_at="2026-11-27T04:00:00+00:00", extras=EXTRAS, snapshot=SNAPSHOT,
            fetched_at="2026-11-27T04:41:00+00:00")
        _, forum_ids = store.save_document(forum_doc, [
            Hit(kind="mention", severity="low", indicator="heron-7b", detector="rules",
                context="heron-7b leaked", model="heron-7b", rule="heron-name"),
            Hit(kind="hash", severity="critical", indicator=SHA_A, detector="digests",
                context=f"sha256 {SHA_A}", model="heron-7b", artifact="heron-7b/model.safetensors",
                indicator_type="sha256 (hex)", matcher_version="indicator:1"),
        ], run_id=None)
        board_doc = Document(target="board", key="123#p5", url="https://board.example/thread/123#p5",
                             text="magnet for something", snapshot=b'{"posts": []}')
        _, board_ids = store.save_document(board_doc, [
            Hit(kind="torrent", severity="high", indicator=INFOHASH.hex(), detector="digests",
                context="magnet:?xt=urn:btih:...", model="other-3b"),
            Hit(kind="mention", severity="medium", indicator="weights", detector="rules",
                context="=cmd|' /C calc'!A0 weights", model="other-3b", rule="weights"),
        ], run_id=None)
    low, critical = forum_ids
    high, medium = board_ids
    return {"critical": critical, "high": high, "medium": medium, "low": low}


def hits_json(ww, *args: str) -> list[dict]:
    result = ww.run("hits", *args, "--format", "json")
    return json.loads(result.stdout)


def test_hits_json_contract_and_order(ww):
    ids = seed_hits(ww.db)
    rows = hits_json(ww)
    assert isinstance(rows, list) and len(rows) == 4
    for row in rows:
        assert HIT_KEYS <= set(row)
        assert list(row) == list(HIT_JSON_COLUMNS)
    # Worst first.
    assert [r["severity"] for r in rows] == ["critical", "high", "medium", "low"]
    assert [r["id"] for r in rows] == [ids[s] for s in ("critical", "high", "medium", "low")]
    crit = rows[0]
    assert crit["kind"] == "hash" and crit["indicator"] == SHA_A
    assert crit["model"] == "heron-7b" and crit["artifact"] == "heron-7b/model.safetensors"
    assert crit["target"] == "forum"
    assert crit["url"] == "https://forum.example/viewtopic.php?t=12#p1207"
    assert crit["status"] == "new" and crit["seen_count"] == 1
    assert crit["first_seen"] == crit["last_seen"]
    datetime.fromisoformat(crit["first_seen"])  # ISO 8601
    assert crit["context"] == f"sha256 {SHA_A}"
    assert isinstance(crit["document_id"], int)


@pytest.mark.parametrize("args, expected", [
    (("--severity", "critical"), ["critical"]),
    (("--severity", "high", "--severity", "low"), ["high", "low"]),
    (("--kind", "mention"), ["medium", "low"]),
    (("--kind", "hash", "--kind", "torrent"), ["critical", "high"]),
    (("--model", "other-3b"), ["high", "medium"]),
    (("--target", "forum"), ["critical", "low"]),
    (("--target", "board", "--kind", "mention"), ["medium"]),
    (("--status", "acknowledged"), ["high"]),
    (("--status", "new"), ["critical", "medium", "low"]),
    (("--limit", "2"), ["critical", "high"]),
    (("--limit", "1", "--model", "heron-7b"), ["critical"]),
])
def test_hits_filters(ww, args, expected):
    ids = seed_hits(ww.db)
    conn = sqlite3.connect(ww.db)
    with conn:
        conn.execute("UPDATE hits SET status = 'acknowledged' WHERE id = ?", [ids["high"]])
    conn.close()
    assert [r["severity"] for r in hits_json(ww, *args)] == expected


def test_unknown_target_or_model_is_refused_naming_the_known_ones(ww):
    # A misspelt name used to print "no hits" and exit 0: the one answer an analyst must
    # be able to trust. Known: the config's targets, the registry's and rules' models, and
    # whatever the hits were recorded under.
    seed_hits(ww.db)
    for args, known in ((("hits", "--target", "fourm"), "known: board, forum"),
                        (("hits", "--model", "heron7b"), "known: heron-7b, other-3b"),
                        (("incidents", "--model", "heron7b"), "known: heron-7b, other-3b"),
                        (("search", "weights", "--target", "fourm"), "known: board, forum"),
                        (("hits", "ack", "--target", "fourm"), "known: board, forum")):
        out = ww.run(*args, code=2)
        assert out.stdout == ""
        assert len(out.stderr.splitlines()) == 1 and known in out.stderr, out.stderr
    # A known name with nothing to show is still an empty answer, not an error.
    with Store(ww.db) as store:
        store.add_model("quiet-1b")
    assert hits_json(ww, "--model", "quiet-1b") == []
    assert ww.run("hits", "--model", "quiet-1b").stdout.strip() == "no hits"


def test_hits_since_excludes_older_hits(ww):
    ids = seed_hits(ww.db)
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="seconds")
    conn = sqlite3.connect(ww.db)
    with conn:
        conn.execute("UPDATE hits SET first_seen = ? WHERE id = ?", [old, ids["critical"]])
    conn.close()
    recent = hits_json(ww, "--since", "1h")
    assert ids["critical"] not in [r["id"] for r in recent]
    assert len(recent) == 3
    assert [r["id"] for r in hits_json(ww, "--since", "3h")][0] == ids["critical"]
    assert len(hits_json(ww, "--since", "1d")) == 4


def test_hits_ndjson_is_one_object_per_line(ww):
    seed_hits(ww.db)
    out = ww.run("hits", "--format", "ndjson").stdout
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 4
    objects = [json.loads(line) for line in lines]
    assert [o["severity"] for o in objects] == ["critical", "high", "medium", "low"]
    assert all(HIT_KEYS <= set(o) for o in objects)


def test_hits_csv_header_rows_and_formula_neutralised(ww):
    seed_hits(ww.db)
    out = ww.run("hits", "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(HIT_JSON_COLUMNS)
    assert len(rows) == 5
    by_severity = {r[rows[0].index("severity")]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert by_severity["medium"]["context"] == "'=cmd|' /C calc'!A0 weights"
    assert by_severity["critical"]["indicator"] == SHA_A
    assert by_severity["low"]["artifact"] == ""  # None is an empty cell


def test_hits_table(ww):
    ids = seed_hits(ww.db)
    out = ww.run("hits").stdout
    header, *lines = out.splitlines()
    assert header.split()[:5] == ["ID", "SEVERITY", "STATUS", "KIND", "MODEL"]
    assert len(lines) == 4
    assert lines[0].split()[:4] == [str(ids["critical"]), "critical", "new", "hash"]
    assert lines[-1].split()[:4] == [str(ids["low"]), "low", "new", "mention"]
    assert "\x1b" not in out  # no colour codes when stdout is not a terminal


def test_hits_empty_database(ww):
    table = ww.run("hits")
    assert table.stdout.strip() == "no hits"
    assert json.loads(ww.run("hits", "--format", "json").stdout) == []
    assert ww.run("hits", "--format", "ndjson").stdout == ""
    assert ww.run("hits", "--format", "csv").stdout.strip() == ",".join(HIT_JSON_COLUMNS)


@pytest.mark.parametrize("args, needle", [
    (("--since", "banana"), "--since"),
    (("--severity", "catastrophic"), "catastrophic"),
    (("--limit", "many"), "many"),
    (("--format", "xml"), "xml"),
])
def test_hits_bad_options_are_one_line(ww, args, needle):
    result = ww.run("hits", *args, code=2)
    assert needle in one_line(result.stderr)
    assert result.stdout == ""


def test_hits_show_json_has_evidence(ww):
    ids = seed_hits(ww.db)
    out = ww.run("hits", "show", str(ids["critical"]), "--format", "json").stdout
    (hit,) = json.loads(out)
    assert hit["id"] == ids["critical"]
    assert HIT_KEYS <= set(hit)
    doc = hit["document"]
    assert doc["id"] == hit["document_id"]
    assert doc["snapshot_sha256"] == hashlib.sha256(SNAPSHOT).hexdigest()
    assert doc["extras"] == EXTRAS  # decoded, not a JSON string
    assert doc["url"] == hit["url"]
    assert doc["author"] == "anon" and doc["fetched_at"] == "2026-11-27T04:41:00+00:00"
    assert len(doc["content_sha256"]) == 64
    # The snapshot the hash names is really stored.
    with Store(ww.db) as store:
        assert store.snapshot(doc["snapshot_sha256"]) == SNAPSHOT


def test_hits_show_table(ww):
    ids = seed_hits(ww.db)
    out = ww.run("hits", "show", str(ids["critical"])).stdout
    fields = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition("  ")
        fields.setdefault(key, value.strip())
    assert fields["id"] == str(ids["critical"])
    assert fields["severity"] == "critical"
    assert fields["indicator"] == SHA_A
    assert fields["artifact"] == "heron-7b/model.safetensors"
    assert fields["recipient"] == ""  # None shows empty
    assert "evidence" in out.splitlines()
    assert fields["snapshot_sha256"] == hashlib.sha256(SNAPSHOT).hexdigest()
    assert fields["fetched_at"] == "2026-11-27T04:41:00+00:00"


def test_hits_show_table_does_not_pass_escape_sequences(ww):
    # Post text and authors are written by whoever posted the leak; `hits show` must not let
    # them retitle the analyst's terminal or reorder what it shows (OSC, bidi override).
    with Store(ww.db) as store:
        doc = Document(target="board", key="9", url="https://board.example/9",
                       text="x", author="anon\x1b]0;owned\x07", snapshot=b"x")
        _, (hit_id,) = store.save_document(doc, [
            Hit(kind="mention", severity="low", indicator="heron-7b", detector="rules",
                context="heron-7b\x1b]8;;https://evil.example\x07 \u202etxt.exe\nnext line")],
            run_id=None)
    out = ww.run("hits", "show", str(hit_id)).stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    context = next(line for line in out.splitlines() if line.strip().startswith("context"))
    assert "heron-7b" in context and "next line" in context  # shown, on one line
    json_out = json.loads(ww.run("hits", "show", str(hit_id), "--format", "json").stdout)
    # JSON keeps the exact text (escaped by the JSON encoding, not altered).
    assert json_out[0]["context"].startswith("heron-7b\x1b]8;;")
    assert json_out[0]["document"]["author"] == "anon\x1b]0;owned\x07"


def test_hits_show_unknown_id_is_one_line(ww):
    seed_hits(ww.db)
    result = ww.run("hits", "show", "999", code=1)
    line = one_line(result.stderr)
    assert "999" in line
    assert result.stdout == ""
    result = ww.run("hits", "show", "nine", code=2)
    assert "nine" in one_line(result.stderr)


# --- alerts, targets, check-config --------------------------------------------------------


def test_alerts_list_json_shows_outbox(ww):
    ids = seed_hits(ww.db)
    rows = json.loads(ww.run("alerts", "list", "--format", "json").stdout)
    assert sorted(r["hit_id"] for r in rows) == sorted(ids.values())
    for row in rows:
        assert {"id", "hit_id", "status", "attempts", "created_at", "next_attempt_at", "sent_at",
                "last_error", "message_id", "severity", "kind", "model", "url"} <= set(row)
        assert row["status"] == "pending" and row["attempts"] == 0
    by_hit = {r["hit_id"]: r for r in rows}
    assert by_hit[ids["critical"]]["severity"] == "critical"
    assert by_hit[ids["critical"]]["model"] == "heron-7b"
    assert json.loads(ww.run("alerts", "list", "--status", "sent", "--format", "json").stdout) == []
    assert ww.run("alerts", "list", "--status", "sent").stdout.strip() == "the outbox is empty"


def test_targets_json_lists_config_targets_with_state(ww):
    with Store(ww.db) as store:
        run_id = store.start_run("board")
        store.finish_run(run_id, status="failed", error="HTTP 503 from a.4cdn.org")
    for args in (("targets", "--format", "json"), ("targets", "list", "--format", "json")):
        rows = json.loads(ww.run(*args).stdout)
        assert [r["name"] for r in rows] == ["board", "forum"]
        board, forum = rows
        assert board["kind"] == "imageboard" and board["enabled"] is True
        assert board["url"] == "https://a.4cdn.org/g/" and board["interval_s"] == 900
        assert board["consecutive_failures"] == 1
        assert board["last_error"] == "HTTP 503 from a.4cdn.org"
        assert board["last_run_at"] is not None and board["last_success_at"] is None
        assert forum["enabled"] is False and forum["consecutive_failures"] == 0
        assert forum["last_run_at"] is None and forum["documents"] == 0 and forum["hits"] == 0


def test_check_config_good(ww):
    result = ww.run("check-config")
    assert result.stdout.startswith(f"{ww.config}: ok: 2 targets (1 enabled), 1 rules")
    assert str(ww.db) in result.stdout
    # Warnings only (exit 0), on stderr: no database yet, so nothing registered.
    assert result.stderr == (f"weightwatch: warning: no database at {ww.db} yet (it is "
                             f"created on first use): the registry is empty, so only rules "
                             f"can match; register the release first (weightwatch register)\n"
                             f"weightwatch: warning: alerts go nowhere: no [smtp] and no "
                             f"[alerts.webhook] section\n")


def test_check_config_bad_is_one_line_per_problem(ww):
    ww.config.write_text(CONFIG.replace('interval = "15m"', 'intervall = "15m"')
                         .replace('keywords = ["heron-7b"]', 'keywords = []'), encoding="utf-8")
    result = ww.run("check-config", code=2)
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{ww.config}: ") for line in lines)
    assert "intervall" in lines[0] and "did you mean 'interval'" in lines[0]
    assert "keywords" in lines[1]
    assert result.stdout == ""


def test_database_from_config_when_no_db_option(ww, release):
    result = CliRunner().invoke(main, ["--config", str(ww.config), "register", str(release.loose),
                                       "--model", "m", "--format", "json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert (ww.config.parent / "from-config.db").exists()
    assert not ww.db.exists()


# --- a real process -------------------------------------------------------------------------


def run_process(tmp_path: Path, config: Path, db: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("WEIGHTWATCH_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "monitor", "--config", str(config), "--db",
                           str(db), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.slow
def test_process_exit_codes_and_one_line_errors(ww, release):
    missing = run_process(ww.tmp, ww.config, ww.db, "register", str(release.root / "gone"),
                          "--model", "heron-7b")
    assert missing.returncode == 2
    assert "gone" in one_line(missing.stderr)
    assert missing.stdout == ""

    bad = ww.tmp / "bad.sums"
    bad.write_text(f"{SHA_A}  ok.bin\n{SHA_B}\n\nnot a checksum line\n", encoding="utf-8")
    failed = run_process(ww.tmp, ww.config, ww.db, "indicators", "import", str(bad),
                         "--model", "heron-7b")
    assert failed.returncode == 1
    line = one_line(failed.stderr)
    assert str(bad) in line and "line 4" in line
    assert failed.stdout == ""

    unknown = run_process(ww.tmp, ww.config, ww.db, "hits", "show", "42")
    assert unknown.returncode == 1
    assert "42" in one_line(unknown.stderr)


@pytest.mark.slow
def test_process_json_stdout_is_only_json(ww, release):
    seed_hits(ww.db)
    for args in (("hits", "--format", "json"), ("alerts", "list", "--format", "json"),
                 ("targets", "--format", "json"),
                 ("register", str(release.folder), "--model", "heron-7b", "--format", "json")):
        done = run_process(ww.tmp, ww.config, ww.db, "--log-level", "debug", *args)
        assert done.returncode == 0, done.stderr
        parsed = json.loads(done.stdout)  # nothing but the JSON on stdout
        assert isinstance(parsed, list) and parsed, args
        assert "Traceback" not in done.stderr
