"""Disk full and read-only media (issue 13): one line, exit 1, nothing committed lost, and
the reading commands still reading.

SQLite's own size cap (`PRAGMA max_page_count`) makes SQLITE_FULL in-process, so the
logic is covered without root. The rest runs on real filesystems: a nearly full tmpfs and
a read-only bind mount, each made inside a private mount namespace (`unshare --mount`) so
nothing outlives the test; those tests are skipped, saying why, where mounting is not
permitted. Root ignores file permissions, so only a read-only mount is read-only media.

Run as a script (`python test_disk_faults.py STEPS.json`) it is the helper that runs the
CLI inside the namespace: each step through click's runner in that one process, or as a
real `python -m monitor` process where the process itself is what is tested.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve()


# --- the helper run inside the namespace -----------------------------------------------


def _run_steps(spec: dict[str, Any]) -> dict[str, Any]:
    from click.testing import CliRunner

    from monitor.cli import main

    out: dict[str, Any] = {}
    for name, step in spec.items():
        if step.get("sql"):
            conn = sqlite3.connect(f"file:{step['sql'][0]}?mode=ro", uri=True)
            out[name] = conn.execute(step["sql"][1]).fetchall()
            conn.close()
        elif step.get("serve"):
            out[name] = _serve_page(Path(step["serve"][0]), step["serve"][1])
        elif step.get("ls"):
            out[name] = sorted(os.listdir(step["ls"]))
        elif step.get("fill"):
            out[name] = _fill(Path(step["fill"][0]), step["fill"][1])
        elif step.get("process"):
            # stdout to a file when the step names one (an export), else captured.
            with open(step.get("stdout", os.devnull), "wb") as file:
                done = subprocess.run([sys.executable, "-m", "monitor", *step["argv"]],
                                      stdout=file if step.get("stdout") else subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, timeout=120)
            out[name] = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        else:
            result = CliRunner().invoke(main, step["argv"])
            out[name] = {"rc": result.exit_code, "stdout": result.stdout,
                         "stderr": result.stderr,
                         "exception": None if result.exit_code in (0, 1, 2)
                         else repr(result.exception)}
    return out


def _serve_page(db: Path, path: str) -> list[Any]:
    """`weightwatch serve`'s Datasette over `db`: the status and JSON of one page."""
    import asyncio

    from monitor.serve import make_datasette

    async def get() -> Any:
        return await make_datasette(db).client.get(path)

    response = asyncio.run(get())
    return [response.status_code, response.json()]


def _fill(directory: Path, keep: int) -> int:
    """Fill the filesystem holding `directory` until `keep` bytes are left; bytes left."""
    stat = os.statvfs(directory)
    size = stat.f_bavail * stat.f_frsize - keep
    try:
        with open(directory / "filler", "ab") as f:
            while size > 0:
                size -= f.write(b"\0" * min(size, 1 << 20))
    except OSError:
        pass  # full a block early: that is the point
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


if __name__ == "__main__":
    print(json.dumps(_run_steps(json.loads(Path(sys.argv[1]).read_text()))))
    sys.exit(0)


# --- the tests ---------------------------------------------------------------------------

from click.testing import CliRunner  # noqa: E402
from structlog.testing import capture_logs  # noqa: E402
from support import hit, save  # noqa: E402

from monitor.alerts import Alerter  # noqa: E402
from monitor.cli import main  # noqa: E402
from monitor.migrations import MIGRATIONS  # noqa: E402
from monitor.models import Document  # noqa: E402
from monitor.store import StorageFailure, Store  # noqa: E402


def _mounts_permitted(probe: Path) -> str | None:
    """None if this process may make a private mount namespace and mount in it, else why
    not (the reason the tests that need it are skipped with)."""
    if sys.platform != "linux" or not shutil.which("unshare"):
        return "needs Linux and unshare(1)"
    probe.mkdir(exist_ok=True)
    done = subprocess.run(["unshare", "--mount", "sh", "-c",
                           f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(probe))}"],
                          capture_output=True, text=True, timeout=30)
    if done.returncode:
        return f"private mounts not permitted here: {done.stderr.strip() or done.returncode}"
    return None


@pytest.fixture(scope="module")
def mounts(tmp_path_factory) -> None:
    reason = _mounts_permitted(tmp_path_factory.mktemp("probe") / "mnt")
    if reason:
        pytest.skip(reason)


def in_namespace(tmp_path: Path, mount: str, steps: dict[str, Any]) -> dict[str, Any]:
    """Run `mount` (shell) then the helper's `steps` in a private mount namespace."""
    spec = tmp_path / "steps.json"
    spec.write_text(json.dumps(steps))
    script = f"{mount} && exec {shlex.quote(sys.executable)} {shlex.quote(str(HERE))} " \
             f"{shlex.quote(str(spec))}"
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                          text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def only_error_line(result: dict[str, Any] | Any) -> str:
    """The failure is one line on stderr; no traceback anywhere."""
    stderr = result["stderr"] if isinstance(result, dict) else result.stderr
    assert "Traceback" not in stderr and '"exception"' not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("weightwatch: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def one_error_line(result: dict[str, Any] | Any, db: Path | str) -> str:
    """The failure is one line on stderr naming the database; no traceback anywhere."""
    line = only_error_line(result)
    assert line.startswith(f"weightwatch: {db}: "), line
    return line


def page(n: int) -> Document:
    # Random bytes do not compress: each snapshot really takes its size in the file.
    return Document(target="forum", key=f"post-{n}", url=f"https://board.example/t/{n}",
                    text=f"post {n}", title=f"post {n}", snapshot=os.urandom(20_000))


def cap_pages(store: Store, extra: int) -> None:
    """SQLite's own size cap: the database may grow by `extra` pages, then SQLITE_FULL."""
    count = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {count + extra}")


def test_a_full_database_is_one_line_and_keeps_what_was_committed(tmp_path):
    db = tmp_path / "w.db"
    with Store(db) as store:
        cap_pages(store, 40)
        saved = 0
        with pytest.raises(StorageFailure) as failed:
            for n in range(100):
                store.save_document(page(n), [hit(indicator=f"{n:064x}")], run_id=None)
                saved += 1
        assert store.storage_failure is failed.value
    message = str(failed.value)
    assert message.startswith(f"{db}: disk full") and "\n" not in message
    assert 0 < saved < 100
    with Store(db, readonly=True) as store:
        assert store.count_documents() == saved
        assert len(store.hits()) == saved
        assert store.integrity_check() == "ok"


def test_a_crawl_that_fills_the_disk_records_the_run_failed_in_one_line(tmp_path,
                                                                       demo_world):
    """What `run` relies on: the crawler records the failure (one log line, no
    traceback) and returns, and the alerter likewise; neither raises."""
    import asyncio

    from demo.runner import demo_config
    from demo.smtp_sink import free_port
    from monitor.config import load_config
    from monitor.crawler import crawl_target
    from monitor.fetch import Fetcher

    path = tmp_path / "config.toml"
    path.write_text(demo_config(demo_world, free_port(), path))
    config = load_config(path)
    db = tmp_path / "w.db"
    with Store(db) as store:
        store.save_document(page(0), [hit()], run_id=None)  # an alert for the flush
        cap_pages(store, 3)

        async def crawl():
            async with Fetcher(config.crawl) as fetcher:
                return await crawl_target(config.target("demo-imageboard"), config, store,
                                          fetcher, detectors=[])

        with capture_logs() as logs:
            result = asyncio.run(crawl())
            flushed = Alerter(store, config).flush()
    assert result.status == "failed" and result.error.startswith(f"{db}: disk full"), result
    assert not any(e.get("exc_info") for e in logs), logs
    assert "crawl_store_failed" in [e["event"] for e in logs if e["log_level"] == "error"]
    assert flushed.error is not None  # the SMTP port is closed, or the disk full
    with Store(db, readonly=True) as store:
        assert store.count_documents() == 1 + result.documents_new


def test_the_daemon_job_survives_a_disk_too_full_to_start_a_run(tmp_path, demo_world):
    """Under `run`, the run's first write (start_run) fails before the crawler can record
    anything: the job logs one line, raises nothing into the scheduler, and the database
    keeps what it had."""
    import asyncio

    from demo.runner import demo_config
    from demo.smtp_sink import free_port
    from monitor.config import load_config
    from monitor.daemon import Daemon

    path = tmp_path / "config.toml"
    path.write_text(demo_config(demo_world, free_port(), path))
    config = load_config(path)
    db = tmp_path / "w.db"
    with Store(db) as store:
        store.save_document(page(0), [hit()], run_id=None)
        cap_pages(store, 2)
        with pytest.raises(StorageFailure):  # fill the last pages: start_run fails now
            for _ in range(100_000):
                store.start_run("demo-imageboard")

        async def job() -> None:
            daemon = Daemon(config, store)
            try:
                await daemon.crawl_job(config.target("demo-imageboard"))
            finally:
                await daemon.fetcher.aclose()

        with capture_logs() as logs:
            asyncio.run(job())
    failed = [e for e in logs if e["event"] == "crawl_job_store_failed"]
    assert len(failed) == 1 and str(db) in failed[0]["error"], logs
    assert not any(e.get("exc_info") for e in logs), logs
    with Store(db, readonly=True) as store:
        assert store.count_documents() == 1 and len(store.hits()) == 1


def test_cli_on_a_full_database_is_one_line_and_exit_1(tmp_path, monkeypatch):
    """`indicators import` here; `register`, `fingerprints import` and the triage commands
    write through the same connection and the same CLI handler."""
    import monitor.store as store_module

    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = save(store, [hit()])
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(f"{os.urandom(32).hex()}  shard-{n}.bin\n" for n in range(3000)))
    connect = store_module._connect

    def capped(path, uri=None, **kw):
        conn = connect(path, uri, **kw)
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(count, 1) + 2}")
        return conn

    monkeypatch.setattr(store_module, "_connect", capped)
    result = CliRunner().invoke(main, ["--config", "/dev/null", "--db", str(db), "indicators",
                                       "import", str(sums), "--model", "heron-7b"])
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert "disk full" in one_error_line(result, db)
    monkeypatch.setattr(store_module, "_connect", connect)
    with Store(db, readonly=True) as store:
        assert [h["id"] for h in store.hits()] == ids
        assert store.indicators() == []  # all or nothing


# --- real filesystems ----------------------------------------------------------------


@pytest.mark.slow
def test_crawl_on_a_full_disk_exits_1_in_one_line_and_loses_nothing(tmp_path, mounts,
                                                                    demo_world):
    from demo.runner import demo_config
    from demo.smtp_sink import free_port

    disk = tmp_path / "disk"
    disk.mkdir()
    db = disk / "w.db"
    config = tmp_path / "config.toml"
    config.write_text(demo_config(demo_world, free_port(), config))
    base = ["--config", str(config), "--db", str(db)]
    count = {"sql": [str(db), "SELECT count(*) FROM documents"]}
    out = in_namespace(tmp_path, f"mount -t tmpfs -o size=4m tmpfs {shlex.quote(str(disk))}", {
        "first": {"argv": [*base, "crawl", "--target", "demo-forum"]},
        "before": count,
        # A second database, closed cleanly (no -shm) before the disk fills up.
        "other": {"argv": ["--config", str(config), "--db", str(disk / "other.db"), "hits"]},
        "fill": {"fill": [str(disk), 48 * 1024]},
        "full": {"argv": [*base, "crawl", "--target", "demo-imageboard", "--target",
                          "demo-feed-rss"], "process": True},
        "after": count,
        "hits": {"argv": [*base, "hits", "--format", "json"]},
        "integrity": {"sql": [str(db), "PRAGMA integrity_check"]},
        "brim": {"fill": [str(disk), 0]},
        "other-hits": {"argv": ["--config", str(config), "--db", str(disk / "other.db"),
                                "hits", "--format", "json"]},
    })
    assert out["first"]["rc"] == 0, out["first"]["stderr"]
    assert out["before"][0][0] > 0
    assert out["full"]["rc"] == 1
    line = one_error_line(out["full"], db)
    assert "disk full" in line and "free space" in line
    assert out["after"][0][0] >= out["before"][0][0]
    assert out["hits"]["rc"] == 0 and json.loads(out["hits"]["stdout"])
    assert out["integrity"] == [["ok"]]
    # Not even room for the shared-memory file a reader needs: still read, and said so.
    assert out["brim"] == 0
    assert (out["other-hits"]["rc"], out["other-hits"]["stdout"]) == (0, "[]\n"), out
    assert out["other-hits"]["stderr"] == (f"weightwatch: {disk / 'other.db'}: no space for "
                                           f"its -shm file: opened read-only (immutable)\n")


@pytest.fixture
def filled_db(tmp_path: Path) -> tuple[Path, list[int]]:
    """A database with hits, closed cleanly (no -wal left), in a folder of its own."""
    db = tmp_path / "src" / "w.db"
    with Store(db) as store:
        ids = save(store, [hit(), hit("mention", "low", "heron-7b weights", rule="kw")])
    assert sorted(p.name for p in db.parent.iterdir()) == ["w.db"]
    return db, ids


def read_only(src: Path, ro: Path) -> str:
    ro.mkdir()
    return f"mount --bind -o ro {shlex.quote(str(src))} {shlex.quote(str(ro))}"


@pytest.mark.slow
def test_reading_commands_work_on_read_only_media_and_writes_are_one_line(
        tmp_path, mounts, filled_db):
    src, ids = filled_db
    ro = tmp_path / "ro"
    db = ro / "w.db"
    report = tmp_path / "report.html"
    base = ["--config", "/dev/null", "--db", str(db)]
    out = in_namespace(tmp_path, read_only(src.parent, ro), {
        "hits": {"argv": [*base, "hits", "--format", "json"], "process": True},
        "show": {"argv": [*base, "hits", "show", str(ids[0]), "--format", "json"]},
        "search": {"argv": [*base, "search", "heron", "--format", "json"]},
        "report": {"argv": [*base, "report", "--out", str(report)]},
        "incidents": {"argv": [*base, "incidents", "--format", "json"]},
        "targets": {"argv": [*base, "targets", "list", "--format", "json"]},
        "alerts": {"argv": [*base, "alerts", "list", "--format", "json"]},
        "silences": {"argv": [*base, "silence", "list", "--format", "json"]},
        "ack": {"argv": [*base, "hits", "ack", str(ids[0])], "process": True},
        "silence": {"argv": [*base, "silence", "add", "--match", "model=x", "--for", "1h",
                             "--reason", "r"]},
        "serve": {"serve": [str(db), "/weightwatch/hits.json?_shape=objects"]},
        # The registry is read (and found empty: these say so, exit 1).
        "scan": {"argv": [*base, "scan", str(report)]},
        "export": {"argv": [*base, "fingerprints", "export", str(tmp_path / "b.json.gz")]},
    })
    note = f"weightwatch: {db}: database on read-only media: opened read-only (immutable)"
    for name in ("hits", "show", "search", "report", "incidents", "targets", "alerts",
                 "silences"):
        assert out[name]["rc"] == 0, (name, out[name])
        assert out[name]["stderr"].splitlines().count(note) == 1, (name, out[name]["stderr"])
    assert sorted(h["id"] for h in json.loads(out["hits"]["stdout"])) == sorted(ids)
    assert json.loads(out["show"]["stdout"])[0]["id"] == ids[0]
    assert json.loads(out["search"]["stdout"])
    assert json.loads(out["incidents"]["stdout"])
    assert len(json.loads(out["alerts"]["stdout"])) == len(ids)
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert "no tensor fingerprints registered" in out["scan"]["stderr"]
    assert "the registry is empty" in out["export"]["stderr"]
    for name in ("scan", "export"):
        assert out[name]["rc"] == 1 and out[name]["stderr"].count(note) == 1, out[name]
    status, page = out["serve"]
    assert status == 200 and sorted(row["id"] for row in page["rows"]) == sorted(ids)
    for name in ("ack", "silence"):
        assert out[name]["rc"] == 1, (name, out[name])
        assert "read-only media" in one_error_line(out[name], db)
    with Store(src, readonly=True) as store:
        assert store.hit(ids[0])["status"] == "new"


@pytest.mark.slow
def test_read_only_media_with_a_pending_wal_or_an_old_schema_is_refused_in_one_line(
        tmp_path, mounts, filled_db):
    src, ids = filled_db
    pending = tmp_path / "pending"
    pending.mkdir()
    # A copy taken while a writer had unmerged pages in its -wal (as a snapshot of a live
    # disk would be), without the -shm: immutable would silently miss those pages.
    with Store(src) as store:
        store.db.execute("PRAGMA wal_autocheckpoint = 0")
        save(store, [hit(indicator="ef" * 32)], key="post-2", url="https://board.example/t/2")
        for name in ("w.db", "w.db-wal"):
            shutil.copy(src.parent / name, pending / name)
    assert (pending / "w.db-wal").stat().st_size > 0
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(src, old / "w.db")
    conn = sqlite3.connect(old / "w.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.close()
    mount = " && ".join([read_only(pending, tmp_path / "ro1"), read_only(old, tmp_path / "ro2")])
    out = in_namespace(tmp_path, mount, {
        "pending": {"argv": ["--config", "/dev/null", "--db", str(tmp_path / "ro1" / "w.db"),
                             "hits"]},
        "old": {"argv": ["--config", "/dev/null", "--db", str(tmp_path / "ro2" / "w.db"),
                         "hits"]},
    })
    assert out["pending"]["rc"] == 1
    assert "w.db-wal" in one_error_line(out["pending"], tmp_path / "ro1" / "w.db")
    assert out["old"]["rc"] == 1
    line = one_error_line(out["old"], tmp_path / "ro2" / "w.db")
    assert "schema" in line and "read-only media" in line


@pytest.mark.slow
def test_an_export_or_a_snapshot_to_a_full_disk_is_one_line_and_leaves_no_part(tmp_path,
                                                                              mounts):
    """Python's text layer drops what a short write did not take (4 KiB of a 20 KiB
    export landed, exit 0); the export must fail instead, and a partial snapshot (it is
    evidence) must not be left behind."""
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = save(store, [hit(indicator=f"{n:064x}", context="x" * 2000) for n in range(12)])
    full = tmp_path / "full"
    full.mkdir()
    base = ["--config", "/dev/null", "--db", str(db)]
    out = in_namespace(tmp_path, f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(full))}", {
        "fill": {"fill": [str(full), 4096]},
        "export": {"argv": [*base, "hits", "--format", "json"], "process": True,
                   "stdout": str(full / "hits.json")},
        "snapshot": {"argv": [*base, "hits", "show", str(ids[0]), "--snapshot",
                              str(full / "page.html")], "process": True},
        "left": {"sql": [str(db), "SELECT count(*) FROM hits"]},
        "files": {"ls": str(full)},
    })
    assert out["export"]["rc"] == 1
    assert only_error_line(out["export"]) == ("weightwatch: cannot write the output: No space "
                                              "left on device")
    assert out["snapshot"]["rc"] == 1
    assert only_error_line(out["snapshot"]).startswith(
        f"weightwatch: --snapshot: cannot write {full / 'page.html'}: No space left on device")
    assert out["files"] == ["filler", "hits.json"]
    assert out["left"] == [[12]]
