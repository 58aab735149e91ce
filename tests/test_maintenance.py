"""Running it for years: the database's file mode, secrets from credential files, online
backups that restore whole, and pruning that keeps every hit's evidence.

Real SQLite files throughout; the backup is taken by a real `weightwatch backup` process
while another real process keeps committing hits, and restored by `weightwatch restore`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from support import Server, hit, make_config, save

from demo.smtp_sink import free_port
from monitor.alerts import Alerter
from monitor.cli import main
from monitor.config import load_config, secret
from monitor.models import Document, Hit
from monitor.store import Store

REPO = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a file SQLite creates itself would be 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --- file mode -------------------------------------------------------------------------


def test_a_new_database_its_wal_and_shm_are_owner_only(tmp_path, umask_022):
    db = tmp_path / "state" / "w.db"
    with Store(db) as store:
        save(store, [hit()])
        files = [db, db.with_name("w.db-wal"), db.with_name("w.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    # The control: what the same umask gives a file nobody chose a mode for.
    (tmp_path / "plain").touch()
    assert mode(tmp_path / "plain") == 0o644


def test_an_existing_database_keeps_its_mode(tmp_path, umask_022):
    """Decided: an operator may have given a group read access on purpose (docs say how
    to tighten it), so opening never chmods silently."""
    db = tmp_path / "w.db"
    Store(db).close()
    db.chmod(0o640)
    with Store(db) as store:
        save(store, [hit()])
    assert mode(db) == 0o640


# --- secrets ---------------------------------------------------------------------------


SMTP_CONFIG = """\
[smtp]
host = "127.0.0.1"
username = "alerts"
password_env = "WW_TEST_SMTP_PASSWORD"

[alerts]
to = ["security@example.org"]
"""


def test_a_secret_comes_from_the_environment_else_the_credentials_directory(
        tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text(SMTP_CONFIG, encoding="utf-8")
    smtp = load_config(tmp_path / "config.toml").smtp
    assert smtp is not None
    creds = tmp_path / "credentials"
    creds.mkdir()
    monkeypatch.delenv("WW_TEST_SMTP_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert smtp.password() is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert smtp.password() is None  # the directory holds no such credential
    # As `echo pw > file` leaves it: the one newline is not part of the secret.
    (creds / "WW_TEST_SMTP_PASSWORD").write_text("pa ss\n", encoding="utf-8")
    assert smtp.password() == "pa ss"
    (creds / "WW_TEST_SMTP_PASSWORD").write_text("pa ss\n\n", encoding="utf-8")
    assert smtp.password() == "pa ss\n"
    # An empty variable (`NAME=` in an EnvironmentFile) is no secret: the file is read.
    monkeypatch.setenv("WW_TEST_SMTP_PASSWORD", "")
    assert smtp.password() == "pa ss\n"
    monkeypatch.setenv("WW_TEST_SMTP_PASSWORD", "from-env")
    assert smtp.password() == "from-env"
    assert secret("WW_TEST_SMTP_PASSWORD") == "from-env"


def test_smtp_logs_in_with_a_systemd_credential(tmp_path, monkeypatch):
    password = "cred-" + secrets.token_hex(8)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "WW_TEST_SMTP_PASSWORD").write_text(password + "\n", encoding="utf-8")
    monkeypatch.delenv("WW_TEST_SMTP_PASSWORD", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    seen: list[bytes] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        seen.append(auth_data.password)
        return AuthResult(success=auth_data.password == password.encode(), handled=False)

    port = free_port()
    with Store(tmp_path / "w.db") as store, \
            Server(port, authenticator=authenticator, auth_require_tls=False,
                   auth_exclude_mechanism=["LOGIN"]) as server:
        save(store, [hit()])
        result = Alerter(store, make_config(port, username="alerts",
                                            password_env="WW_TEST_SMTP_PASSWORD")).flush()
    assert (result.emails_sent, result.error) == (1, None)
    assert seen == [password.encode()] and len(server.messages) == 1


# --- backup and restore ----------------------------------------------------------------


WRITER = """
import sys, time
from pathlib import Path
from monitor.models import Document, Hit
from monitor.store import Store

store = Store(sys.argv[1])
stop = Path(sys.argv[2])
i = 0
while not stop.exists():
    doc = Document(target="board", key=f"w{i}", url=f"https://board.example/w/{i}",
                   text=f"heron-7b weights part {i}", snapshot=b"<html>%d</html>" % i)
    store.save_document(doc, [Hit(kind="mention", severity="low", indicator="heron-7b",
                                  detector="rules", rule="heron", context=f"part {i}",
                                  target="board", url=doc.url)], run_id=None)
    i += 1
    if i == 1:
        print("writing", flush=True)
    time.sleep(0.005)  # a daemon's pace, not a core's
store.close()
print(i, flush=True)
"""


def weightwatch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, with no config (the defaults) and the test's
    umask."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("WEIGHTWATCH_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def hit_ids(db: Path) -> set[int]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM hits")}
    finally:
        conn.close()


def test_backup_of_a_database_being_written_restores_whole(tmp_path, umask_022):
    db = tmp_path / "live.db"
    with Store(db) as store:
        for i in range(200):  # enough pages that the copy is not instantaneous
            save(store, [hit(indicator=f"{i:064x}")], key=f"p{i}",
                 url=f"https://board.example/t/{i}", snapshot=os.urandom(2048))
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        before = hit_ids(db)  # committed before the backup began
        done = weightwatch(tmp_path, "--db", str(db), "backup", "copy.db")
        during = hit_ids(db)
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    assert len(during) > len(before), "the writer committed nothing while the backup ran"
    assert int(out.strip()) > 1 and writer.returncode == 0
    copy = tmp_path / "copy.db"
    assert mode(copy) == 0o600
    assert not copy.with_name("copy.db-wal").exists()  # one self-contained file
    assert done.stdout.startswith("backup: copy.db (") and "quick_check ok" in done.stdout

    restored = tmp_path / "restored" / "w.db"
    back = weightwatch(tmp_path, "--db", str(restored), "restore", "copy.db")
    assert back.returncode == 0, back.stderr
    assert mode(restored) == 0o600
    conn = sqlite3.connect(restored)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert before <= hit_ids(restored) <= hit_ids(db)
    # The restored database is one weightwatch reads as any other.
    listed = weightwatch(tmp_path, "--db", str(restored), "hits", "--format", "json")
    assert {h["id"] for h in json.loads(listed.stdout)} == hit_ids(restored)


def test_backup_and_restore_refuse_to_overwrite_and_say_why_in_one_line(tmp_path, umask_022):
    db = tmp_path / "w.db"
    with Store(db) as store:
        save(store, [hit()])
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(main, ["--config", str(tmp_path / "none.toml"), "--db",
                                      str(db), *args])
        return result.exit_code, result.stdout, result.stderr

    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    dest = tmp_path / "b.db"
    dest.write_bytes(b"precious")
    code, out, err = run("backup", str(dest))
    assert (code, out) == (1, "")
    assert one_line(err) == f"weightwatch: {dest}: exists; add --force to replace it"
    assert dest.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    code, out, err = run("backup", str(dest), "--force")
    assert code == 0 and hit_ids(dest) == hit_ids(db) and mode(dest) == 0o600

    # A folder: a dated file in it, every time a new one.
    folder = tmp_path / "backups"
    folder.mkdir()
    code, out, err = run("backup", str(folder))
    [made] = folder.iterdir()
    assert code == 0 and made.name.startswith("w-") and made.suffix == ".db"

    code, out, err = run("restore", str(dest))
    assert code == 1 and one_line(err) == (f"weightwatch: {db}: exists; stop the daemon and "
                                           f"add --force to replace it with {dest}")
    assert run("restore", str(dest), "--force")[0] == 0

    code, out, err = run("restore", str(tmp_path / "gone.db"), "--force")
    assert code == 1 and one_line(err) == f"weightwatch: {tmp_path / 'gone.db'}: no such backup"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    code, out, err = run("restore", str(junk), "--force")
    assert code == 1 and one_line(err).startswith(f"weightwatch: {junk}: cannot read it as a "
                                                  f"database: file is not a database")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    code, out, err = run("restore", str(empty), "--force")
    assert code == 1 and one_line(err) == f"weightwatch: {empty}: not a weightwatch database"
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("CREATE TABLE hits (id INTEGER)")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    code, out, err = run("restore", str(newer), "--force")
    assert code == 1 and "newer than this weightwatch" in one_line(err)
    # Backing one up is fine: a copy misreads nothing (the schema is the newer one's).
    result = runner.invoke(main, ["--config", str(tmp_path / "none.toml"), "--db", str(newer),
                                  "backup", str(tmp_path / "newer-copy.db")])
    assert result.exit_code == 0 and "schema 999, 0 hits" in result.stdout
    assert hit_ids(db) == hit_ids(dest)  # nothing refused touched the database
    missing = runner.invoke(main, ["--config", str(tmp_path / "none.toml"), "--db",
                                   str(tmp_path / "nope.db"), "backup", str(dest)])
    assert missing.exit_code == 1 and "no such database" in one_line(missing.stderr)


# --- prune -----------------------------------------------------------------------------


def ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")


def page_post(page: str, n: int, body: bytes, text: str = "") -> Document:
    url = f"https://forum.example/{page}"
    return Document(target="forum", key=f"{page}#{n}", url=f"{url}#{n}",
                    text=text or f"post {n} of {page}", snapshot=body, snapshot_url=url)


def mention(page: str, n: int) -> Hit:
    return Hit(kind="mention", severity="low", indicator="heron-7b", detector="rules",
               rule="heron", context=f"heron-7b in {page}#{n}", target="forum",
               url=f"https://forum.example/{page}#{n}")


@pytest.fixture
def aged(tmp_path) -> Path:
    """Documents of every kind a prune must tell apart, seen 200 days ago unless said."""
    db = tmp_path / "w.db"
    old, older = ago(200), ago(300)
    with Store(db) as store:
        def put(doc: Document, hits: list[Hit], now: str = old) -> None:
            store.save_document(doc, hits, run_id=None, now=now)

        # A page whose first post is a hit's evidence: the page and that post stay, the
        # other post goes.
        put(page_post("a", 1, b"<html>page a</html>"), [mention("a", 1)])
        put(page_post("a", 2, b"<html>page a</html>"), [])
        # A page with nothing found: both posts and the page go; most of the space.
        noise = os.urandom(300_000)
        put(page_post("b", 1, noise), [])
        put(page_post("b", 2, noise), [])
        # A hit's post edited since: it shows the newer page, and the page the hit was
        # found in stays too.
        put(page_post("c", 1, b"<html>c, v1</html>", "heron-7b weights"), [mention("c", 1)],
            older)
        put(page_post("c", 1, b"<html>c, v2</html>", "edited"), [], old)
        # A post without hits edited since: both versions of its page go.
        put(page_post("d", 1, b"<html>d, v1</html>"), [], older)
        put(page_post("d", 1, b"<html>d, v2</html>", "edited"), [], old)
        # Seen recently: stays whatever it holds.
        put(page_post("e", 1, b"<html>page e</html>"), [], ago(1))
        # The same page fetched again lately: the old post goes, the page stays for the new.
        put(page_post("g", 1, b"<html>page g</html>"), [])
        put(page_post("g", 2, b"<html>page g</html>"), [], ago(1))
        # A hit dismissed as a false positive is a hit: its evidence stays.
        put(page_post("f", 1, b"<html>page f</html>"), [mention("f", 1)])
        store.triage([h["id"] for h in store.hits() if h["url"].endswith("f#1")],
                     "false_positive", by="test")
    return db


def test_prune_removes_what_no_hit_needs_and_every_hit_keeps_its_evidence(aged, tmp_path):
    runner = CliRunner()
    config = tmp_path / "none.toml"
    config.write_text("", encoding="utf-8")

    def ww(*args: str) -> str:
        result = runner.invoke(main, ["--config", str(config), "--db", str(aged), *args],
                               catch_exceptions=False)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result.stdout

    def evidence() -> dict[int, tuple[dict, str]]:
        shown = {}
        for h in json.loads(ww("hits", "--format", "json")):
            [full] = json.loads(ww("hits", "show", str(h["id"]), "--format", "json"))
            out = tmp_path / f"snap-{h['id']}-{len(list(tmp_path.iterdir()))}"
            ww("hits", "show", str(h["id"]), "--snapshot", str(out))
            shown[h["id"]] = ({k: v for k, v in full.items() if k != "incident"},
                              hashlib.sha256(out.read_bytes()).hexdigest())
        return shown

    def counts() -> tuple[int, int]:
        conn = sqlite3.connect(aged)
        try:
            return (conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0],
                    conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])
        finally:
            conn.close()

    shown = evidence()
    assert len(shown) == 3
    assert counts() == (10, 9)
    dry = ww("prune", "--older-than", "90d", "--dry-run")
    assert dry.startswith("prune: would remove 5 documents and 3 snapshots (0.3 MB) last "
                          "seen before ")
    assert "kept 3 older documents as hits' evidence" in dry
    assert counts() == (10, 9)

    done = ww("prune", "--older-than", "90d")
    assert done.startswith("prune: removed 5 documents and 3 snapshots (0.3 MB)")
    assert counts() == (5, 6)
    assert evidence() == shown
    conn = sqlite3.connect(aged)
    keys = {row[0] for row in conn.execute("SELECT key FROM documents")}
    assert keys == {"a#1", "c#1", "e#1", "f#1", "g#2"}
    assert conn.execute("SELECT COUNT(*) FROM snapshots WHERE url LIKE '%/c'").fetchone()[0] == 2
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # The full-text index forgot the removed documents with them.
    conn.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")
    conn.close()
    assert "of b" not in ww("search", "post", "--in", "documents", "--format", "json")

    size = aged.stat().st_size
    again = ww("prune", "--older-than", "90d", "--vacuum")
    assert again.startswith("prune: removed 0 documents and 0 snapshots")
    assert "rewritten (VACUUM)" in again
    assert aged.stat().st_size < size - 250_000  # the noise page's pages returned
    assert evidence() == shown


def test_prune_refuses_a_bad_duration_in_one_line(aged):
    result = CliRunner().invoke(main, ["--db", str(aged), "prune", "--older-than", "soon"])
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("weightwatch: --older-than: expected a duration")
    missing = CliRunner().invoke(main, ["--db", str(aged), "prune"])
    assert missing.exit_code == 2 and "--older-than" in one_line(missing.stderr)
