"""The whole pipeline in real processes: the `weightwatch` CLI against the demo world, with a
real SMTP server on loopback and a real SQLite file, including signals and `kill -9`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from support import query

from demo.release import DEMO_WATERMARK_SECRET, Release, make_release
from demo.runner import demo_config
from demo.smtp_sink import SmtpSink
from demo.world import DemoWorld
from monitor.alerts import MAX_HITS_PER_EMAIL
from monitor.config import load_config

# The daemon in real processes against the whole demo world: signals, kill -9, SMTP.
pytestmark = [pytest.mark.slow]

REQUIRED_HIT_KEYS = {"id", "kind", "severity", "model", "indicator", "target", "url",
                     "first_seen", "last_seen", "status", "context"}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    return make_release(tmp_path_factory.mktemp("release"))


@pytest.fixture
def world(release):
    with DemoWorld(release) as w:
        yield w


@pytest.fixture
def sink():
    with SmtpSink() as s:
        yield s


@pytest.fixture(scope="module")
def registered(tmp_path_factory, release) -> Path:
    """The release (with its recipient copy and magnets) registered through the CLI, once
    for the module: each test's workdir starts from a copy of this database. Registering
    fingerprints every weight file, seconds of CPU in each of these processes."""
    directory = tmp_path_factory.mktemp("registered")
    (directory / "config.toml").write_text('[database]\npath = "weightwatch.db"\n')
    assert ww(directory, "register", str(release.root / release.model), "--model", "heron-7b").returncode == 0
    for copy in release.copies:
        assert ww(directory, "register", str(copy.folder), "--model", "heron-7b",
                  "--recipient", copy.recipient).returncode == 0
    assert ww(directory, "indicators", "import", str(release.root / "heron-7b.magnets"),
              "--model", "heron-7b").returncode == 0
    # lab-17's copy was marked as `watermark issue` marks it; issuing it again here, with
    # the demo's master secret, records the recipient's key as a release engineer would.
    for copy in release.copies:
        issued = ww(directory, "watermark", "issue", "--model", "heron-7b", "--recipient",
                    copy.recipient, "--in", str(release.file("model.safetensors").path),
                    "--out", str(directory / f"{copy.recipient}.safetensors"),
                    env={**os.environ, "WEIGHTWATCH_WATERMARK_KEY": DEMO_WATERMARK_SECRET})
        assert issued.returncode == 0, issued.stderr
    return directory / "weightwatch.db"


@pytest.fixture
def workdir(tmp_path, registered, world, sink) -> Path:
    """A config for this test's demo world and sink, and a copy of the registered database
    (SQLite's backup API: consistent whatever the WAL holds)."""
    (tmp_path / "config.toml").write_text(demo_config(world, sink.port, "config.toml"))
    source, copy = sqlite3.connect(registered), sqlite3.connect(tmp_path / "weightwatch.db")
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return tmp_path


def target_names(workdir: Path) -> set[str]:
    return {t.name for t in load_config(workdir / "config.toml").targets}


def ww(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, **kw)


def spawn(cwd: Path, *args: str) -> subprocess.Popen:
    """The command in the background, its output into files: the daemon logs a line per
    hit, and a pipe nobody reads while it runs fills up (64 KiB) and blocks it."""
    out, err = cwd / f"{args[0]}.stdout", cwd / f"{args[0]}.stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", *args], cwd=cwd,
                                stdout=stdout, stderr=stderr, text=True)
    proc.stderr_path = err  # type: ignore[attr-defined]
    return proc


def stderr_of(proc: subprocess.Popen) -> str:
    return proc.stderr_path.read_text()  # type: ignore[attr-defined]


def wait_until(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except sqlite3.OperationalError:
            pass  # the database is still being created
        time.sleep(step)
    return False


def emailed_hit_ids(sink: SmtpSink) -> list[int]:
    ids = []
    for raw in sink.messages:
        header = message_from_bytes(raw, policy=default_policy)["X-Weightwatch-Hits"]
        ids.extend(int(x) for x in header.split(","))
    return ids


def test_crawl_finds_every_planted_leak_and_emails_once(workdir, world, sink):
    db = workdir / "weightwatch.db"
    first = ww(workdir, "crawl", "--format", "json")
    assert first.returncode == 0, first.stderr
    runs = json.loads(first.stdout)
    assert {r["target"] for r in runs} == target_names(workdir)
    assert all(r["status"] == "ok" and r["documents"] > 0 for r in runs), runs

    hits = json.loads(ww(workdir, "hits", "--format", "json").stdout)
    assert hits and all(REQUIRED_HIT_KEYS <= set(h) for h in hits)
    found = {(h["url"], h["kind"], h["indicator"].lower()) for h in hits}
    for planted in world.planted:
        assert (planted.url, planted.kind, planted.indicator.lower()) in found, planted
    assert len(found) == len(world.planted), "nothing but the planted leaks is a hit"
    near = {n.value.lower() for n in world.near_misses}
    assert not near & {h["indicator"].lower() for h in hits}
    assert {h["severity"] for h in hits if h["kind"] in ("hash", "torrent")
            and h["detector"] != "manifest"} == {"critical"}

    # The model's hits grouped, worst first, in emails of at most MAX_HITS_PER_EMAIL (one
    # while the demo has at most that many), naming every hit and escaping nothing away.
    emails = -(-len(hits) // MAX_HITS_PER_EMAIL)
    assert sink.wait_for(emails)
    assert len(sink.messages) == emails
    raw = sink.messages[0]
    email = message_from_bytes(raw, policy=default_policy)
    assert email["Subject"].startswith("[weightwatch] CRITICAL heron-7b")
    assert sorted(emailed_hit_ids(sink)) == sorted(h["id"] for h in hits)
    text = email.get_body(("plain",)).get_content()
    assert world.release.file("model.safetensors").sha256 in text
    assert email.get_body(("html",)) is not None

    # The database is queryable afterwards, and the evidence is there.
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    show = json.loads(ww(workdir, "hits", "show", str(hits[0]["id"]), "--format", "json").stdout)[0]
    assert show["document"]["snapshot_sha256"] and show["document"]["url"] == hits[0]["url"]

    # A second crawl over unchanged pages: no new hit, no email.
    second = ww(workdir, "crawl", "--format", "json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert all(r["new_hits"] == 0 and r["new_documents"] == 0 for r in again)
    # But the DHT's two swarms: each poll adds their peer counts to their one document.
    assert {r["target"]: r["changed_documents"] for r in again if r["changed_documents"]} == {
        "demo-dht": 2}
    assert query(db, "SELECT COUNT(*) FROM hits") == [(len(hits),)]
    # Fetched again (forum, index): seen twice. Imageboard threads whose last_modified did
    # not move are not fetched at all, as the API's rules ask.
    assert query(db, "SELECT target, MIN(seen_count), MAX(seen_count) FROM hits "
                     "WHERE target IN ('demo-forum', 'demo-imageboard', 'demo-torrents') "
                     "GROUP BY target ORDER BY target") == [
        ("demo-forum", 2, 2), ("demo-imageboard", 1, 1), ("demo-torrents", 2, 2)]
    time.sleep(0.5)
    assert len(sink.messages) == emails


def test_sigterm_during_crawl_exits_fast_and_keeps_the_database_sound(workdir, world):
    db = workdir / "weightwatch.db"
    world.delay = 0.3
    proc = spawn(workdir, "crawl")
    try:
        assert wait_until(lambda: query(db, "SELECT COUNT(*) FROM documents")[0][0] > 0)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(timeout=10)
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr_of(proc)
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    statuses = {s for (s,) in query(db, "SELECT status FROM crawl_runs")}
    assert "running" not in statuses and "interrupted" in statuses


def test_kill_9_loses_no_hit_and_sends_no_alert_twice(workdir, world, sink):
    db = workdir / "weightwatch.db"
    # A complete crawl of one target first, so some alerts have already been sent.
    assert ww(workdir, "crawl", "--target", "demo-torrents").returncode == 0
    assert sink.wait_for(1)

    world.delay = 0.15
    proc = spawn(workdir, "crawl")
    before = 0
    try:
        assert wait_until(lambda: query(db, "SELECT COUNT(*) FROM hits")[0][0] > 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        recorded = set(query(db, "SELECT id, dedup_key FROM hits"))
        before = len(recorded)
    finally:
        proc.kill()
    assert before > 2

    world.delay = 0.0
    again = ww(workdir, "crawl")
    assert again.returncode == 0, again.stderr
    after = set(query(db, "SELECT id, dedup_key FROM hits"))
    assert recorded <= after, "every hit recorded before the kill is still there"
    assert len(after) == len(world.planted)
    assert query(db, "SELECT COUNT(*) FROM crawl_runs WHERE status = 'running'") == [(0,)]
    assert query(db, "PRAGMA integrity_check") == [("ok",)]

    assert wait_until(lambda: len(emailed_hit_ids(sink)) >= len(after), timeout=10)
    time.sleep(0.3)
    emailed = emailed_hit_ids(sink)
    assert sorted(emailed) == sorted(hit_id for hit_id, _ in after), "each hit emailed exactly once"
    assert query(db, "SELECT COUNT(*) FROM outbox WHERE status != 'sent'") == [(0,)]


def test_smtp_down_keeps_alerts_pending_until_a_later_run(workdir, world, sink):
    db = workdir / "weightwatch.db"
    config = workdir / "config.toml"
    dead_port = str(sink.port + 1 if sink.port < 65535 else sink.port - 1)
    config.write_text(config.read_text().replace(f"port = {sink.port}", f"port = {dead_port}"))
    # Three crawls while the mail server is down, each adding hits and retrying the rest.
    for target in ("demo-forum", "demo-imageboard", "demo-torrents"):
        down = ww(workdir, "crawl", "--target", target)
        assert down.returncode == 0, "a mail outage is not a crawl failure"
        assert "pending" in down.stderr
    pending = {row[0] for row in query(db, "SELECT hit_id FROM outbox WHERE status = 'pending'")}
    assert len(pending) > 3 and sink.messages == []
    assert query(db, "SELECT MAX(attempts) FROM outbox")[0][0] >= 1

    config.write_text(config.read_text().replace(f"port = {dead_port}", f"port = {sink.port}"))
    flushed = ww(workdir, "alerts", "flush")
    assert flushed.returncode == 0, flushed.stderr
    assert sink.wait_for(1)
    sent = len(sink.messages)
    # Every pending alert delivered, and exactly once.
    ids = emailed_hit_ids(sink)
    assert sorted(ids) == sorted(pending) and len(ids) == len(set(ids))
    assert ww(workdir, "alerts", "flush").returncode == 0
    time.sleep(0.3)
    assert len(sink.messages) == sent


def test_daemon_crawls_on_schedule_logs_json_and_stops_on_sigterm(workdir, world, sink):
    db = workdir / "weightwatch.db"
    proc = spawn(workdir, "run")
    try:
        assert wait_until(lambda: query(db, "SELECT COUNT(DISTINCT target) FROM crawl_runs "
                                            "WHERE status = 'ok'")[0][0] == len(target_names(workdir)))
        assert sink.wait_for(1, timeout=15)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    stderr = stderr_of(proc)
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert len(lines) == len(stderr.splitlines()), "every log line is JSON when not on a TTY"
    started = [line for line in lines if line["event"] == "crawl_started"]
    assert {line["target"] for line in started} == target_names(workdir)
    assert all(isinstance(line["run_id"], int) for line in started)
    hit_lines = [line for line in lines if line["event"] == "hit"]
    assert hit_lines and all("target" in line and "run_id" in line for line in hit_lines)
    assert any(line["event"] == "daemon_stopped" for line in lines)
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "SELECT COUNT(*) FROM crawl_runs WHERE status = 'running'") == [(0,)]


def test_demo_command(tmp_path):
    proc = ww(tmp_path, "demo", "--dir", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "email" in proc.stdout and "0001.eml" in proc.stdout
    hits = json.loads(ww(tmp_path, "--db", str(tmp_path / "demo" / "weightwatch.db"), "hits",
                         "--format", "json").stdout)
    assert {"mention", "hash", "torrent"} <= {h["kind"] for h in hits}
    assert (tmp_path / "demo" / "mail" / "0001.eml").exists()


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    # The CLI reads WEIGHTWATCH_CONFIG; a developer's own setting must not leak into tests.
    monkeypatch.delenv("WEIGHTWATCH_CONFIG", raising=False)
    yield




def test_targets_test_is_a_dry_run_that_writes_nothing(workdir, world):
    db = workdir / "weightwatch.db"
    before = {t: query(db, f"SELECT COUNT(*) FROM {t}") for t in
              ("documents", "hits", "crawl_runs", "snapshots", "target_state")}
    mtime = db.stat().st_mtime_ns
    proc = ww(workdir, "targets", "test", "demo-forum", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    previews = json.loads(proc.stdout)
    hits = {(p["url"], h["kind"], h["indicator"].lower()) for p in previews for h in p["hits"]}
    assert hits == {(p.url, p.kind, p.indicator.lower()) for p in world.planted
                    if p.source == "forum"}
    assert any(h["kind"] == "hash" for p in previews for h in p["hits"]), "registry was read"
    after = {t: query(db, f"SELECT COUNT(*) FROM {t}") for t in before}
    assert after == before and db.stat().st_mtime_ns == mtime

    table = ww(workdir, "targets", "test", "demo-forum")
    assert table.returncode == 0 and "would-be hits; nothing was recorded" in table.stderr

    missing = ww(workdir, "targets", "test", "nope")
    assert missing.returncode == 2 and "no target named 'nope'" in missing.stderr

    broken = workdir / "broken.toml"
    broken.write_text((workdir / "config.toml").read_text().replace("/forum/viewforum.php",
                                                                     "/forum/missing.php"))
    failed = ww(workdir, "--config", str(broken), "targets", "test", "demo-forum")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("weightwatch: demo-forum: HTTP 404")
