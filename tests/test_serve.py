"""`weightwatch serve` end to end: a real `python -m monitor serve` process on loopback
over a real SQLite file, read over HTTP as an analyst's browser would. Pages load with the
data, arbitrary SQL and the secret tables are refused, crawled text stays text, and after
the whole session the database holds exactly what it held before."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

pytest.importorskip("datasette", reason="weightwatch serve needs the ui extra "
                                        "(pip install -e '.[test,ui]')")

from monitor.cli import main  # noqa: E402
from monitor.models import Document, Hit  # noqa: E402
from monitor.serve import (  # noqa: E402
    DATABASE,
    FTS_TABLES,
    QUERIES,
    SECRET_TABLES,
    TABLES,
    build_metadata,
    is_loopback,
    make_datasette,
)
from monitor.store import Store  # noqa: E402

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
SHA = "5" * 64
WATERMARK_KEY = bytes(range(32))
STARTUP_TIMEOUT = 20.0


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)

    def kill(self) -> None:
        """Whatever a failed test left running."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def seed(db: Path) -> dict[str, int]:
    """Three hits of three severities on two targets, newest first: high, critical, low;
    the low one acknowledged; a failing target; a recipient's watermark key. Returns the
    hit ids by severity."""
    with Store(db) as store:
        store.add_watermark(model="heron-7b", recipient="lab-17", key=WATERMARK_KEY,
                            key_id="0123456789abcdef", version=1, densities={"blk.0": 0.5})
        forum = Document(target="forum", key="t12#p1207",
                         url="https://forum.example/viewtopic.php?t=12#p1207",
                         text=f"heron-7b weights {HOSTILE} sha256 {SHA}", title=HOSTILE,
                         author="anon", snapshot=f"<p>{HOSTILE} {SHA}</p>".encode())
        _, (critical, low) = store.save_document(forum, [
            Hit(kind="hash", severity="critical", indicator=SHA, detector="digests",
                context=f"{HOSTILE} sha256 {SHA}", model="heron-7b",
                artifact="model.safetensors", recipient="lab-17",
                indicator_type="sha256 (hex)", matcher_version="indicator:1"),
            Hit(kind="mention", severity="low", indicator="heron-7b", detector="rules",
                context="heron-7b weights", model="heron-7b", rule="heron-name"),
        ], run_id=None)
        board = Document(target="board", key="123#p5", url="https://board.example/thread/123",
                         text="magnet for other-3b", snapshot=b'{"posts": []}',
                         title='=HYPERLINK("http://evil.example","open")')
        _, (high,) = store.save_document(board, [
            Hit(kind="torrent", severity="high", indicator="c" * 40, detector="manifest",
                context="other-3b.torrent", model="other-3b")], run_id=None)
        store.triage([low], "acknowledged", by="analyst", note="known mention")
        run_id = store.start_run("board")
        store.finish_run(run_id, status="failed", error="HTTP 503 from board.example")
        # Distinct times, so "newest first" has one right answer.
        for hit_id, first_seen in ((low, "2026-11-01T00:00:00+00:00"),
                                   (critical, "2026-11-02T00:00:00+00:00"),
                                   (high, "2026-11-03T00:00:00+00:00")):
            store.db.execute("UPDATE hits SET first_seen = ? WHERE id = ?", [first_seen, hit_id])
    return {"critical": critical, "high": high, "low": low}


def content_digest(db: Path) -> str:
    """SHA-256 of the whole database as SQL (schema, every row, user_version): what the
    database says, whatever the WAL and checkpoints do to the bytes."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256(str(conn.execute("PRAGMA user_version").fetchone()).encode())
        for line in conn.iterdump():
            digest.update(line.encode())
        return digest.hexdigest()
    finally:
        conn.close()


def start(tmp: Path, db: Path, *args: str, name: str = "serve") -> Server:
    """`python -m monitor serve` on a free port; its stderr goes to a file (the access log
    would fill a pipe nobody reads), from which the URL it printed is taken."""
    config = tmp / "config.toml"
    config.touch()
    log = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTWATCH_CONFIG"}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "--config", str(config), "--db", str(db),
             "serve", "--port", "0", *args],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"read-only at (http://\S+)", log.read_text())
        if found:
            return Server(proc, found.group(1), log)
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"serve printed no URL within {STARTUP_TIMEOUT}s: {log.read_text()}")


@dataclass
class Session:
    server: Server
    http: httpx.Client
    db: Path
    ids: dict[str, int]
    before: str
    before_bytes: bytes = field(repr=False)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    tmp = tmp_path_factory.mktemp("serve")
    db = tmp / "weightwatch.db"
    ids = seed(db)
    before, before_bytes = content_digest(db), db.read_bytes()
    server = start(tmp, db)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield Session(server, http, db, ids, before, before_bytes)
    finally:
        server.kill()


def page(session: Session, path: str, **params: str) -> str:
    response = session.http.get(path, params=params)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response.text


def rows(session: Session, path: str, **params: str) -> list[dict]:
    response = session.http.get(f"{path}.json", params={**params, "_shape": "objects"})
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response.json()["rows"]


# --- what analysts see ------------------------------------------------------------------------


def test_start_page_links_the_queries_and_explains_triage(session):
    html = page(session, "/")
    assert session.http.head("/").status_code == 200
    for name in [*QUERIES, "hits"]:
        assert f'href="/{DATABASE}/{name}"' in html
    assert "weightwatch hits ack" in html and "false-positive" in html
    assert "critical" in html and "low" in html
    # The database page offers the canned queries, not a SQL editor.
    database = session.http.get(f"/{DATABASE}.json").json()
    assert database["allow_execute_sql"] is False
    assert {q["name"] for q in database["queries"]} == set(QUERIES)


def test_hits_table_is_newest_first_with_the_four_facets(session):
    html = page(session, f"/{DATABASE}/hits")
    for column in ("severity", "kind", "model", "status"):
        assert f'id="facet-{column}"' in html
    listing = session.http.get(f"/{DATABASE}/hits.json").json()
    facets = {name: {v["value"]: v["count"] for v in facet["results"]}
              for name, facet in listing["facet_results"].items()}
    assert facets == {"severity": {"critical": 1, "high": 1, "low": 1},
                      "kind": {"hash": 1, "mention": 1, "torrent": 1},
                      "model": {"heron-7b": 2, "other-3b": 1},
                      "status": {"new": 2, "acknowledged": 1}}
    ids = session.ids
    assert [r["id"] for r in rows(session, f"/{DATABASE}/hits")] == [
        ids["high"], ids["critical"], ids["low"]]
    # A facet value filters, as the links on the page do.
    assert [r["id"] for r in rows(session, f"/{DATABASE}/hits", severity="critical")] == [
        ids["critical"]]


def test_a_hit_row_page_shows_it_with_its_triage(session):
    hit_id = session.ids["critical"]
    html = page(session, f"/{DATABASE}/hits/{hit_id}")
    assert SHA in html and "lab-17" in html and "model.safetensors" in html
    assert f'href="/{DATABASE}/triage?hit_id={hit_id}"' in html
    # From the table, its document is one click away.
    assert f'href="/{DATABASE}/documents/1"' in page(session, f"/{DATABASE}/hits")


def test_every_column_description_is_on_the_table_page(session):
    html = page(session, f"/{DATABASE}/target_state")
    assert "Failed runs in a row; 0 when healthy." in html


def test_new_critical_hits(session):
    assert SHA in page(session, f"/{DATABASE}/new_critical_hits")
    found = rows(session, f"/{DATABASE}/new_critical_hits")
    assert [(r["id"], r["recipient"]) for r in found] == [(session.ids["critical"], "lab-17")]


def test_hits_by_recipient(session):
    html = page(session, f"/{DATABASE}/hits_by_recipient", recipient="lab-17")
    assert SHA in html and 'name="recipient"' in html
    assert [r["id"] for r in rows(session, f"/{DATABASE}/hits_by_recipient",
                                  recipient="lab-17")] == [session.ids["critical"]]
    assert rows(session, f"/{DATABASE}/hits_by_recipient", recipient="nobody") == []


def test_failing_targets(session):
    assert "HTTP 503 from board.example" in page(session, f"/{DATABASE}/failing_targets")
    found = rows(session, f"/{DATABASE}/failing_targets")
    assert [(r["name"], r["consecutive_failures"], r["last_error"]) for r in found] == [
        ("board", 1, "HTTP 503 from board.example")]


def test_open_hits_by_model(session):
    page(session, f"/{DATABASE}/open_hits_by_model")
    found = {r["model"]: r for r in rows(session, f"/{DATABASE}/open_hits_by_model")}
    assert [m for m in found] == ["heron-7b", "other-3b"]  # the critical one first
    heron = found["heron-7b"]
    assert (heron["open_hits"], heron["critical"], heron["low"], heron["untriaged"],
            heron["recipients"]) == (2, 1, 1, 1, "lab-17")


def test_full_text_search_when_the_indexes_exist(session):
    if FTS_TABLES["hits"] not in tables_of(session.db):
        pytest.skip("this schema has no full-text indexes")
    assert [r["id"] for r in rows(session, f"/{DATABASE}/hits", _search="lab")] == [
        session.ids["critical"]]


def test_crawled_text_is_escaped_everywhere(session):
    for path in (f"/{DATABASE}/hits", f"/{DATABASE}/hits/{session.ids['critical']}",
                 f"/{DATABASE}/new_critical_hits", f"/{DATABASE}/documents",
                 f"/{DATABASE}/documents/1"):
        html = page(session, path)
        assert ESCAPED in html, path
        assert HOSTILE not in html, path


def test_a_snapshot_body_is_a_compressed_download_never_a_page(session):
    (snapshot,) = rows(session, f"/{DATABASE}/snapshots", url__contains="forum.example")
    response = session.http.get(f"/{DATABASE}/snapshots/{snapshot['sha256']}.blob",
                                params={"_blob_column": "body"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/binary"
    assert response.headers["content-disposition"].startswith("attachment")
    assert HOSTILE.encode() in zlib.decompress(response.content)


def test_csv_export_neutralises_formulas(session):
    """CSV is written from the page's JSON, every cell neutralised as the CLI's CSV is: a
    crawled `=cmd|...` reaches the spreadsheet as text."""
    for path in (f"/{DATABASE}/hits.csv", f"/{DATABASE}/new_critical_hits.csv"):
        response = session.http.get(path, params={"_labels": "on", "_size": "max"})
        assert response.status_code == 200, path
        parsed = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["id"] for r in parsed][:1] and SHA in response.text
        if path == f"/{DATABASE}/hits.csv":
            assert [int(r["id"]) for r in parsed] == [
                session.ids["high"], session.ids["critical"], session.ids["low"]]
            # The labelled document, as Datasette's own CSV gives it.
            assert parsed[1]["document_id"] == "1" and parsed[1]["document_id_label"] == HOSTILE
    # Streamed page after page, as a download.
    streamed = session.http.get(f"/{DATABASE}/hits.csv",
                                params={"_stream": "on", "_dl": "on", "_size": "1"})
    assert streamed.status_code == 200
    assert streamed.headers["content-disposition"] == 'attachment; filename="hits.csv"'
    assert [r["id"] for r in csv.DictReader(io.StringIO(streamed.text))] == [
        str(session.ids[s]) for s in ("high", "critical", "low")]
    # A formula in a crawled cell is quoted: found by the search, so only through the JSON.
    formula = session.http.get(f"/{DATABASE}/documents.csv",
                               params={"title__startswith": "=HYPERLINK"})
    assert formula.status_code == 200
    (row,) = csv.DictReader(io.StringIO(formula.text))
    assert row["title"].startswith("'=HYPERLINK(")


# --- what is refused --------------------------------------------------------------------------


@pytest.mark.parametrize("path, params", [
    (f"/{DATABASE}", {"sql": "select 'zz' || 'top'"}),
    (f"/{DATABASE}.json", {"sql": "select 'zz' || 'top'"}),
    (f"/{DATABASE}/hits", {"_where": "'zz' || 'top' = 'zztop'"}),
])
def test_arbitrary_sql_is_refused(session, path, params):
    response = session.http.get(path, params=params)
    assert response.status_code == 403
    assert "zztop" not in response.text


@pytest.mark.parametrize("table", SECRET_TABLES)
def test_secret_tables_are_refused(session, table):
    for path in (f"/{DATABASE}/{table}", f"/{DATABASE}/{table}.json", f"/{DATABASE}/{table}/1",
                 f"/{DATABASE}/{table}/1.json", f"/{DATABASE}/{table.upper()}",
                 f"/{DATABASE}/{table}.csv", f"/{DATABASE}/{table}.csv?_stream=on"):
        assert session.http.get(path).status_code in (403, 404), path
    # Not through another table's many-to-many filter either.
    through = ('{"table": "%s", "column": "model", "value": "heron-7b"}' % table)
    assert session.http.get(f"/{DATABASE}/models", params={"_through": through}
                            ).status_code in (400, 403)


def test_secret_tables_are_not_listed_and_the_key_never_served(session):
    for path in ("/", f"/{DATABASE}", f"/{DATABASE}?_show_hidden=1"):
        html = page(session, path)
        for table in SECRET_TABLES:
            assert f'href="/{DATABASE}/{table}"' not in html, (path, table)
    listed = {t["name"] for t in session.http.get(f"/{DATABASE}.json").json()["tables"]}
    assert "hits" in listed and not listed & set(SECRET_TABLES)
    key_hex = WATERMARK_KEY.hex()
    for path in ("/-/metadata.json", f"/{DATABASE}/watermarks/1.blob?_blob_column=key",
                 f"/{DATABASE}/artifacts", f"/{DATABASE}/models/heron-7b"):
        assert key_hex not in session.http.get(path).text.lower(), path
    assert session.http.get(f"/{DATABASE}.db").status_code == 403  # no whole-file download


def test_the_database_refuses_writes_even_through_datasettes_own_api(session, tmp_path):
    """The mechanism, without HTTP: the write connection is refused, and a read
    connection is `mode=ro` (a copy of the database, so the session's stays untouched)."""
    copy = tmp_path / "copy.db"
    copy.write_bytes(session.before_bytes)
    database = make_datasette(copy).get_database(DATABASE)
    with pytest.raises(PermissionError):
        asyncio.run(database.execute_write("DELETE FROM hits"))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        database.connect().execute("DELETE FROM hits")


def test_nothing_can_be_written(session):
    """POSTs to every kind of page, with Datasette's CSRF token as a browser would send
    it; afterwards the database holds exactly what it held before the server started."""
    http = session.http
    page(session, "/-/messages")  # the one page with a form that sets the CSRF cookie
    token = http.cookies.get("ds_csrftoken")
    assert token
    attempts = [
        (f"/{DATABASE}/new_critical_hits", {}),
        (f"/{DATABASE}/hits_by_recipient", {"recipient": "lab-17"}),
        (f"/{DATABASE}", {"sql": "DELETE FROM hits"}),
        (f"/{DATABASE}/hits", {"status": "resolved"}),
        (f"/{DATABASE}/hits/{session.ids['critical']}", {"status": "resolved"}),
        (f"/{DATABASE}/hits/-/insert", {"row": "{}"}),
        (f"/{DATABASE}/-/create", {"table": "x"}),
        ("/-/permissions", {"actor": '{"id": "root"}'}),
        ("/-/messages", {"message": "hello", "message_type": "INFO"}),
    ]
    for path, data in attempts:
        response = http.post(path, data={**data, "csrftoken": token})
        assert response.status_code == 405, (path, response.status_code)
        assert "read-only" in response.text
    for method in ("PUT", "DELETE", "PATCH"):
        assert http.request(method, f"/{DATABASE}/hits/1").status_code == 405
    assert content_digest(session.db) == session.before


def test_sigterm_stops_it_cleanly_and_the_file_is_untouched(session):
    assert session.server.stop(signal.SIGTERM) == 0
    log = session.server.log.read_text()
    assert "Traceback" not in log
    assert content_digest(session.db) == session.before
    # Readers never write the main file: its bytes are the ones seeded.
    assert session.db.read_bytes() == session.before_bytes


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """`serving(db, name=...)` starts a server for this test; all are killed after it."""
    servers: list[Server] = []

    def begin(db: Path, name: str) -> Server:
        servers.append(start(tmp_path, db, name=name))
        return servers[-1]

    yield begin
    for server in servers:
        server.kill()


@pytest.mark.slow
def test_it_shows_what_the_daemon_writes_meanwhile(tmp_path, serving):
    """The file is served as a changing database (not immutable): a hit the daemon
    records while the UI is up is on the next page load. Also: a second server on the same
    port is one line and exit 1, and Ctrl-C stops the first cleanly."""
    db = tmp_path / "w.db"
    Store(db).close()
    first = serving(db, name="first")
    listing = f"{first.url}{DATABASE}/hits.json?_shape=objects"
    assert httpx.get(listing, timeout=10).json()["rows"] == []
    with Store(db) as daemon:
        daemon.save_document(Document(target="board", key="9", url="https://board.example/9",
                                      text="new leak"), [
            Hit(kind="hash", severity="critical", indicator=SHA, detector="digests",
                context="new leak", model="heron-7b")], run_id=None)
        assert [r["indicator"] for r in httpx.get(listing, timeout=10).json()["rows"]] == [SHA]

    port = first.url.rsplit(":", 1)[1].strip("/")
    second = subprocess.run(
        [sys.executable, "-m", "monitor", "--config", str(tmp_path / "config.toml"), "--db",
         str(db), "serve", "--port", port], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"weightwatch: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert httpx.get(first.url, timeout=10).status_code == 200  # the first one still serves
    assert first.stop(signal.SIGINT) == 0
    assert "Traceback" not in first.log.read_text()


def invoke(tmp_path: Path, *args: str):
    (tmp_path / "config.toml").touch()
    return CliRunner().invoke(main, ["--config", str(tmp_path / "config.toml"), "--db",
                                     str(tmp_path / "w.db"), "serve", *args])


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "example.org"])
def test_a_non_loopback_host_needs_public(tmp_path, host):
    result = invoke(tmp_path, "--host", host)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"weightwatch: --host {host} is not a loopback address and the UI has no login; add "
        f"--public to serve every hit to whoever can reach it"]
    assert not (tmp_path / "w.db").exists()  # refused before anything was opened


def test_loopback_hosts():
    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "localhost.example.org"]))


def test_without_datasette_it_says_how_to_install_it(tmp_path, monkeypatch):
    # As if the ui extra were absent: importing datasette fails, and monitor.serve is
    # imported afresh.
    monkeypatch.setitem(sys.modules, "datasette", None)
    monkeypatch.delitem(sys.modules, "monitor.serve")
    result = invoke(tmp_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "weightwatch: weightwatch serve needs the ui extra: pip install 'weightwatch[ui]'"]


# --- the metadata -----------------------------------------------------------------------------


def tables_of(db: Path) -> set[str]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")}
    finally:
        conn.close()


def test_every_table_and_column_of_the_schema_is_described(tmp_path):
    """A migration that adds a table or a column must describe it in monitor/serve.py."""
    db = tmp_path / "fresh.db"
    Store(db).close()
    described = {name: {"description": text, "columns": columns}
                 for name, (text, columns) in TABLES.items()}
    shown = build_metadata()["databases"][DATABASE]["tables"]
    conn = sqlite3.connect(db)
    try:
        virtual = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")}
        missing = []
        for table in sorted(tables_of(db)):
            # Full-text indexes and their shadow tables: Datasette hides them, and their
            # tables' pages search them.
            if table.startswith("sqlite_") or any(table == v or table.startswith(f"{v}_")
                                                  for v in virtual):
                continue
            meta = described.get(table, {})
            if not meta.get("description", "").strip():
                missing.append(table)
            # table_xinfo also lists generated columns; hidden = 1 marks a virtual table's.
            for column in conn.execute(f'PRAGMA table_xinfo("{table}")'):
                if column[6] != 1 and not meta.get("columns", {}).get(column[1], "").strip():
                    missing.append(f"{table}.{column[1]}")
        assert not missing, f"describe these in monitor/serve.py TABLES: {missing}"
        # Each table's page carries them, folded under its description.
        for name, (_, columns) in TABLES.items():
            assert all(f"<code>{c}</code></dt>" in shown[name]["description_html"]
                       for c in columns), name
        # And every canned query runs on the schema as it is.
        for query in QUERIES.values():
            conn.execute(query["sql"], {p: "x" for p in query.get("params", [])}).fetchall()
    finally:
        conn.close()


def test_metadata_denies_sql_and_the_secret_tables():
    metadata = build_metadata()
    assert metadata["allow_sql"] is False
    tables = metadata["databases"][DATABASE]["tables"]
    for table in SECRET_TABLES:
        assert tables[table]["allow"] is False and tables[table]["hidden"] is True
    assert not any(q.get("write") for q in QUERIES.values())
    assert "license" not in metadata and "source" not in metadata
