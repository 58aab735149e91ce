"""Health and metrics (issue 17): per-run stats, the Prometheus figures, the heartbeat,
`weightwatch health`, `targets retry`, and one real daemon scraped while a target goes
down and comes back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import structlog
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from structlog.testing import capture_logs
from support import Canned, crawl, registered_store, target

from monitor.cli import main
from monitor.config import AlertSettings, Config, CrawlSettings, Rule
from monitor.crawler import crawl_once
from monitor.health import (
    QUEUE_STUCK_AFTER,
    HeartbeatRow,
    QueueTrouble,
    heartbeat_interval,
    later,
    stale_after,
    verdict,
)
from monitor.listening import is_loopback, parse_address
from monitor.metrics import Metrics
from monitor.models import Document, Hit, TargetStateRow
from monitor.store import Store
from monitor.store.figures import Figures

RULE = Rule(name="heron", pattern=r"(?i)heron[-_ ]?7b", model="heron-7b")


def rss(*titles: str) -> bytes:
    items = "".join(f"<item><title>{t}</title><link>http://127.0.0.1:9/{n}</link>"
                    f"<guid>{n}</guid><description>{t}</description></item>"
                    for n, t in enumerate(titles))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>f</title>'
            f"<link>http://127.0.0.1:9/</link><description>d</description>{items}"
            f"</channel></rss>").encode()


def figures(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, as Prometheus would parse the text it serves."""
    from prometheus_client import generate_latest

    return parse(generate_latest(registry).decode())


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# --- per-run stats -----------------------------------------------------------------------


def test_each_run_counts_its_own_requests_bytes_and_retries(tmp_path, serve):
    """Two targets crawled at once through one fetcher: each run's stats are its own, the
    retried 503 is counted, and `crawl_finished` carries them (a failed run at `error`)."""
    feed, quiet = rss("heron-7b weights posted", "nothing here"), rss("quiet")
    busy = serve({"/a.xml": lambda r: (503, b"busy") if r.n == 0 else (200, feed)})
    calm = serve({"/b.xml": (200, quiet)})
    down = serve()
    down.close()  # a port nothing listens on: connection refused
    targets = [target("feed", f"{busy.base}/a.xml", name="a"),
               target("feed", f"{calm.base}/b.xml", name="b"),
               target("feed", f"{down.base}/c.xml", name="c")]
    cfg = Config(path=None, database_path=tmp_path / "w.db",
                 crawl=CrawlSettings(host_delay=0.001, request_timeout=5, retries=1),
                 alerts=AlertSettings(), smtp=None, targets=targets, rules=[RULE])
    with Store(cfg.database_path) as store, \
            capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        from monitor.fetch import Fetcher

        async def go():
            async with Fetcher(cfg.crawl, backoff_base=0.01) as fetcher:
                return await crawl_once(cfg, store, targets, fetcher)

        results = {r.target: r for r in asyncio.run(go())}
    a, b, c = results["a"].stats, results["b"].stats, results["c"].stats
    # a: robots.txt (404), the 503, its retry; b: robots.txt and the feed; c: two refused
    # attempts at its robots.txt.
    not_found = len(b"not found")
    assert (a.requests, a.retries, a.wire_bytes) == (3, 1, not_found + len(b"busy") + len(feed))
    assert (b.requests, b.retries, b.wire_bytes) == (2, 0, not_found + len(quiet))
    assert (c.requests, c.retries, c.wire_bytes) == (2, 1, 0)
    assert all(s.duration_s > 0 for s in (a, b, c)) and a.scan_bytes == 0
    finished = {e["target"]: e for e in logs if e["event"] == "crawl_finished"}
    assert finished["a"]["log_level"] == "info" and finished["a"]["retries"] == 1
    assert finished["a"]["requests"] == a.requests and finished["a"]["bytes"] == a.wire_bytes
    assert finished["a"]["new_hits"] == 1 and finished["a"]["duration_s"] >= 0
    assert finished["c"]["log_level"] == "error"
    # The root cause, not "robots.txt unavailable".
    assert finished["c"]["error"].startswith(f"{down.base} is unreachable: ")


@pytest.mark.slow
def test_weight_files_read_by_range_are_counted_as_scan_bytes(tmp_path, demo_world,
                                                              demo_release):
    """The demo hub links weight files; fingerprinting them reads ranges, counted apart
    from the pages (and within the run's response bytes)."""
    store = registered_store(tmp_path / "w.db", demo_release)
    try:
        (result,) = crawl(store, [target("hub", f"{demo_world.base_url}/hub", query="heron")])
    finally:
        store.close()
    stats = result.stats
    assert result.status == "ok" and stats.scan_bytes > 0
    assert stats.wire_bytes > stats.scan_bytes and stats.requests > 2


# --- the Prometheus figures ---------------------------------------------------------------


def seeded(path: Path) -> Store:
    store = Store(path)
    for severity, n in (("critical", 2), ("low", 1)):
        for i in range(n):
            doc = Document(target="board", key=f"{severity}{i}", url=f"http://127.0.0.1:9/{i}",
                           text="heron-7b", snapshot=b"x")
            store.save_document(doc, [Hit(kind="mention", severity=severity,
                                          indicator=f"{severity}{i}", detector="rules",
                                          context="heron-7b", model="heron-7b")], run_id=None)
    store.finish_run(store.start_run("board"), status="ok", down_after=1)
    store.finish_run(store.start_run("forum"), status="failed", error="refused", down_after=1)
    return store


def test_collector_reads_the_database_at_each_scrape(tmp_path):
    db = tmp_path / "w.db"
    with seeded(db) as store:
        metrics = Metrics(db, ["board", "forum"])
        first = figures(metrics.registry)
        assert first[("weightwatch_database_up", ())] == 1
        assert first[("weightwatch_crawl_runs_total", (("status", "ok"), ("target", "board")))] == 1
        assert first[("weightwatch_crawl_runs_total",
                      (("status", "failed"), ("target", "forum")))] == 1
        assert first[("weightwatch_hits", (("severity", "critical"), ("status", "new")))] == 2
        assert first[("weightwatch_hits", (("severity", "low"), ("status", "new")))] == 1
        assert first[("weightwatch_documents", (("target", "board"),))] == 3
        pending = ("weightwatch_outbox_messages",
                   (("channel", "email"), ("queue", "outbox"), ("status", "pending")))
        assert first[pending] == 3
        assert first[("weightwatch_outbox_messages",
                      (("channel", "email"), ("queue", "notices"), ("status", "pending")))] == 1
        assert first[("weightwatch_target_down", (("target", "forum"),))] == 1
        assert first[("weightwatch_target_down", (("target", "board"),))] == 0
        assert first[("weightwatch_target_last_success_timestamp_seconds",
                      (("target", "board"),))] == pytest.approx(time.time(), abs=60)
        assert first[("weightwatch_http_requests_total", (("target", "forum"),))] == 0
        # Another process delivers an alert, one is given up on: the next scrape sees it.
        rows = [r["id"] for r in store.outbox()]
        store.mark_sent(rows[:1])
        store.mark_retry(rows[1:2], "550 rejected", max_attempts=0)
        second = figures(metrics.registry)
        assert second[pending] == 1
        assert second[("weightwatch_outbox_messages",
                       (("channel", "email"), ("queue", "outbox"), ("status", "failed")))] == 1
        assert second[("weightwatch_outbox_messages",
                       (("channel", "email"), ("queue", "outbox"), ("status", "sent")))] == 1
    db.unlink()
    db.mkdir()  # the database cannot be opened: the scrape says so instead of failing
    assert figures(metrics.registry)[("weightwatch_database_up", ())] == 0


# --- the rules of `weightwatch health` ------------------------------------------------------

NOW = "2030-05-01T12:00:00+00:00"


def beat(age: float, interval: float = 60.0, **kw: object) -> HeartbeatRow:
    row: HeartbeatRow = {"pid": 7, "host": "box", "started_at": later(NOW, -3600),
                         "beat_at": later(NOW, -age), "interval_s": interval,
                         "stopped_at": None, "metrics_url": None}
    return {**row, **kw}  # type: ignore[typeddict-item]


def queue(**kw: object) -> QueueTrouble:
    row: QueueTrouble = {"queue": "outbox", "pending": 0, "retrying": 0,
                         "retrying_since": None, "last_error": None, "failed": 0,
                         "failed_last_at": None}
    return {**row, **kw}  # type: ignore[typeddict-item]


def messages(found) -> list[str]:
    return [f.message for f in found]


def test_heartbeat_fresh_stale_stopped_missing():
    assert heartbeat_interval([900, 30]) == 30 and heartbeat_interval([3600]) == 60
    assert heartbeat_interval([]) == 60 and heartbeat_interval([0.1]) == 1
    assert stale_after(60) == 120 and stale_after(10) == 20 and stale_after(600) == 660
    assert verdict({}, None, beat(119), [], now=NOW).ok
    (stale,) = verdict({}, None, beat(121), [], now=NOW).problems
    assert stale.check == "daemon" and "stale: last beat 121s ago" in stale.message
    assert "pid 7 on box" in stale.message
    assert not verdict({}, None, beat(30), [], now=NOW, stale_seconds=20).ok
    (stopped,) = verdict({}, None, beat(1, stopped_at=NOW), [], now=NOW).problems
    assert stopped.message == f"the daemon (pid 7 on box) stopped at {NOW}"
    (missing,) = verdict({}, None, None, [], now=NOW).problems
    assert "no daemon has recorded a heartbeat" in missing.message
    assert verdict({}, None, None, [], now=NOW, daemon=False).ok


def test_down_is_a_problem_failing_a_warning_and_only_watched_targets_count():
    states: dict[str, TargetStateRow] = {
        "down": {"name": "down", "consecutive_failures": 1, "down_since": NOW,
                 "last_error": "http://127.0.0.1:9 is unreachable: refused"},
        "wobbly": {"name": "wobbly", "consecutive_failures": 2, "last_error": "HTTP 503"},
        "gone": {"name": "gone", "consecutive_failures": 9, "down_since": NOW}}
    found = verdict(states, {"down", "wobbly"}, beat(1), [], now=NOW)
    assert messages(found.problems) == [
        f"target down is down since {NOW} (1 failed run in a row): "
        "http://127.0.0.1:9 is unreachable: refused"]
    assert messages(found.warnings) == [
        "target wobbly is failing (2 failed runs, not yet down): HTTP 503"]
    assert len(verdict(states, None, beat(1), [], now=NOW).problems) == 2


def test_outbox_stuck_after_an_hour_of_failed_attempts_and_given_up_for_a_week():
    fresh = queue(pending=3, retrying=2, retrying_since=later(NOW, -QUEUE_STUCK_AFTER + 60),
                  last_error="SMTP 535 auth failed")
    assert verdict({}, None, beat(1), [fresh], now=NOW).ok, "retrying, not stuck yet"
    stuck = {**fresh, "retrying_since": later(NOW, -QUEUE_STUCK_AFTER - 60)}
    (problem,) = verdict({}, None, beat(1), [stuck], now=NOW).problems
    assert problem.check == "outbox" and problem.message.startswith(
        "2 alert(s) undelivered after failed attempts") and "SMTP 535" in problem.message
    gave_up = queue(queue="notices", failed=1, failed_last_at=later(NOW, -86400))
    (problem,) = verdict({}, None, beat(1), [gave_up], now=NOW).problems
    assert problem.message.startswith("1 health notice(s) given up on")
    old = {**gave_up, "failed_last_at": later(NOW, -8 * 86400)}
    assert verdict({}, None, beat(1), [old], now=NOW).ok


def test_queue_trouble_as_the_store_counts_it(tmp_path):
    with seeded(tmp_path / "w.db") as store:
        ids = [r["id"] for r in store.outbox()]
        store.mark_sending(ids[:2], "<m@x>", now=later(NOW, -7200))
        store.mark_retry(ids[:1], "SMTP 451", now=later(NOW, -7000))
        store.mark_retry(ids[1:2], "SMTP 550", max_attempts=1, now=later(NOW, -6000))
        outbox, notices = Figures(store.db).queue_trouble()
    assert outbox["queue"] == "outbox" and outbox["pending"] == 2 and outbox["retrying"] == 1
    assert outbox["failed"] == 1 and outbox["failed_last_at"] == later(NOW, -7200)
    assert outbox["last_error"] in ("SMTP 451", "SMTP 550")
    assert notices["pending"] == 1 and notices["retrying"] == 0 and notices["failed"] == 0


def test_a_lifted_back_off_runs_the_target_at_the_next_beat(tmp_path):
    """`targets retry` from another process clears the back-off in the database; the
    daemon's next heartbeat notices and moves the target's run to now."""
    from datetime import UTC, datetime, timedelta

    from monitor.daemon import Daemon

    feed = target("feed", "http://127.0.0.1:9/feed.xml", name="feed")
    cfg = Config(path=None, database_path=tmp_path / "w.db", crawl=CrawlSettings(),
                 alerts=AlertSettings(), smtp=None, targets=[feed], rules=[])
    with Store(cfg.database_path) as store:
        store.finish_run(store.start_run("feed"), status="failed", error="x", down_after=1)

        async def go() -> None:
            daemon = Daemon(cfg, store)
            daemon.schedule()
            daemon.scheduler.start(paused=True)  # nothing runs but what the test calls
            try:
                await daemon.crawl_job(feed)
                assert daemon.backing_off == {"feed"}
                job = daemon.scheduler.get_job("crawl:feed")
                job.modify(next_run_time=datetime.now(UTC) + timedelta(hours=1))
                await daemon.heartbeat_job()
                assert daemon.backing_off == {"feed"}, "still backing off: left alone"
                assert store.runs.retry("feed")
                with capture_logs() as logs:
                    await daemon.heartbeat_job()
                assert not daemon.backing_off
                when = daemon.scheduler.get_job("crawl:feed").next_run_time
                assert when <= datetime.now(UTC) + timedelta(seconds=1)
                assert [e["event"] for e in logs] == ["target_back_off_lifted", "heartbeat"]
                assert logs[1]["next_target"] == "feed"
                beat = store.runs.heartbeat()
                assert beat and beat["pid"] == os.getpid() and beat["interval_s"] == 60
            finally:
                daemon.scheduler.shutdown(wait=False)
                await daemon.fetcher.aclose()

        asyncio.run(go())
        assert store.db["crawl_runs"].count == 1, "no run while backing off"


# --- the CLI -----------------------------------------------------------------------------


def cli(db: Path, *args: str, config: Path | None = None):
    return CliRunner().invoke(main, ["--config", str(config or os.devnull), "--db", str(db),
                                     *args])


CONFIG = """\
[[targets]]
name = "board"
kind = "imageboard"
url = "http://127.0.0.1:9/g/"
[[targets]]
name = "forum"
kind = "imageboard"
url = "http://127.0.0.1:9/h/"
"""


def test_health_targets_and_retry_commands(tmp_path):
    db = tmp_path / "w.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    missing = cli(db, "health", config=config)
    assert missing.exit_code == 1 and not db.exists()
    assert missing.stdout == f"unhealthy: no database at {db} (has `weightwatch run` started?)\n"
    assert json.loads(cli(db, "health", "--format", "json").stdout)["problems"] == [
        {"check": "database", "subject": str(db), "message": missing.stdout[11:-1]}]
    with seeded(db) as store:
        store.runs.beat(pid=os.getpid(), host="here", started_at=NOW, interval_s=60)
        until = store.target_state("forum")["backoff_until"]
    done = cli(db, "health", config=config)
    assert done.exit_code == 1
    assert done.stdout.splitlines()[0].startswith("unhealthy: target forum is down since ")
    report = json.loads(cli(db, "health", "--format", "json", config=config).stdout)
    assert report["status"] == "unhealthy" and report["targets"] == ["board", "forum"]
    assert [p["check"] for p in report["problems"]] == ["target"]
    assert report["daemon"]["host"] == "here" and report["outbox"][0]["pending"] == 3
    listed = cli(db, "targets", "--format", "json", config=config)
    assert listed.exit_code == 1 and json.loads(listed.stdout)[1]["health"] == "down"
    assert "down: forum" in cli(db, "targets", config=config).stderr
    retried = cli(db, "targets", "retry", "forum", config=config)
    assert retried.exit_code == 0 and f"back-off until {until} lifted" in retried.stdout
    with Store(db) as store:
        state = store.target_state("forum")
        assert state["backoff_until"] is None and state["down_since"], "still down until a run"
        assert cli(db, "targets", "retry", "forum", config=config).stdout.startswith(
            "forum: not backing off")
        store.finish_run(store.start_run("forum"), status="ok")
        store.runs.daemon_stopped(pid=os.getpid() + 1)  # another daemon's stop: ignored
    assert cli(db, "targets", config=config).exit_code == 0
    healthy = cli(db, "health", config=config)
    assert healthy.exit_code == 0, healthy.stdout
    assert healthy.stdout.startswith("ok: 2 targets watched, none down; daemon pid ")
    unknown = cli(db, "targets", "retry", "nope", config=config)
    assert unknown.exit_code == 2 and "known: board, forum" in unknown.stderr


@pytest.mark.parametrize(("addr", "message"), [
    ("0.0.0.0:9464", "not a loopback address"), ("example.org:1", "not a loopback address"),
    ("127.0.0.1:99999", "port from 0 to 65535"), ("::1:80", "IPv6 address in brackets"),
    ("127.0.0.1:x", "expected HOST:PORT"),
])
def test_run_refuses_a_bad_or_public_metrics_address(tmp_path, addr, message):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    done = cli(tmp_path / "w.db", "run", "--metrics-addr", addr, config=config)
    assert done.exit_code == 2 and message in done.stderr and "--metrics-addr" in done.stderr


def test_metrics_addresses_and_the_one_loopback_rule():
    from monitor import serve

    assert serve.is_loopback is is_loopback, "serve and run --metrics-addr share the rule"
    assert parse_address("9464") == ("127.0.0.1", 9464)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    assert parse_address("localhost:1") == ("localhost", 1)
    assert is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")


# --- one real daemon -----------------------------------------------------------------------


class Site:
    """A feed on a fixed loopback port that can be stopped and started again, as a real
    site goes down and comes back."""

    def __init__(self, feed: bytes):
        self.canned = Canned({"/feed.xml": (200, feed, {"Content-Type": "application/rss+xml"})})
        self.port = self.canned.port

    def stop(self) -> None:
        self.canned.close()

    def start(self) -> None:
        """Listen again on the same port, with the same routes."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port),
                                     self.canned.server.RequestHandlerClass)
        server.daemon_threads = True
        self.canned.server = server
        self.canned.thread = threading.Thread(target=server.serve_forever, daemon=True,
                                              kwargs={"poll_interval": 0.05})
        self.canned.thread.start()


def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site(rss("heron-7b weights posted", "heron 7b again"))
    yield s
    s.stop()


@pytest.mark.slow
def test_daemon_metrics_move_and_health_follows_a_target_down_and_back(tmp_path, site):
    """`weightwatch run --metrics-addr 127.0.0.1:0`: scraped over HTTP, crawl, hit and
    outbox figures move; `health` exits 1 within one interval of the site going down, and
    0 once it is back and the back-off is lifted (`targets retry`)."""
    interval = 10  # the shortest interval a target may have
    config = tmp_path / "config.toml"
    config.write_text(f"""\
[database]
path = "w.db"
[crawl]
retries = 0
[alerts]
target_down_after = 1
[[targets]]
name = "feed"
kind = "feed"
url = "http://127.0.0.1:{site.port}/feed.xml"
interval = "{interval}s"
jitter = "1s"
allow_private = true
[[rules]]
name = "heron"
pattern = "(?i)heron[-_ ]?7b"
model = "heron-7b"
""")
    stderr = tmp_path / "run.log"

    def ww(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    def events(name: str) -> list[dict]:
        lines = stderr.read_text().splitlines()
        return [e for e in map(json.loads, lines) if e.get("event") == name]

    with stderr.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "monitor", "--config", str(config),
                                   "run", "--metrics-addr", "127.0.0.1:0"],
                                  stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path)
    try:
        until(lambda: events("daemon_started"), 30, "the daemon started")
        url = events("daemon_started")[0]["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

        def scrape() -> dict:
            answer = httpx.get(url, timeout=10)
            assert answer.status_code == 200
            return parse(answer.text)

        runs = ("weightwatch_crawl_runs_total", (("status", "ok"), ("target", "feed")))
        until(lambda: scrape().get(runs) == 1, 30, "the first run recorded")
        first = scrape()
        assert first[("weightwatch_hits", (("severity", "low"), ("status", "new")))] == 2
        assert first[("weightwatch_outbox_messages", (("channel", "email"), ("queue", "outbox"),
                                                      ("status", "pending")))] == 2
        # robots.txt and the feed (a second run may have begun: at least those)
        assert first[("weightwatch_http_requests_total", (("target", "feed"),))] >= 2
        assert first[("weightwatch_http_response_bytes_total", (("target", "feed"),))] > 0
        assert first[("weightwatch_crawl_duration_seconds_count",
                      (("status", "ok"), ("target", "feed")))] >= 1
        assert first[("weightwatch_daemon_heartbeat_timestamp_seconds", ())] == \
            pytest.approx(time.time(), abs=interval * 2)
        finished = events("crawl_finished")[0]
        assert finished["requests"] == 2 and finished["new_hits"] == 2
        assert events("next_run")[0]["target"] == "feed"
        assert ww("health").returncode == 0

        site.stop()
        took = until(lambda: ww("health").returncode == 1, interval + 5,
                     "health failing once the site is down")
        assert took <= interval + 5
        report = json.loads(ww("health", "--format", "json").stdout)
        (problem,) = report["problems"]
        assert problem["subject"] == "feed" and "is down since" in problem["message"]
        assert f"127.0.0.1:{site.port}" in problem["message"]
        assert "robots.txt" not in problem["message"]
        failed = events("crawl_finished")[-1]
        assert failed["level"] == "error" and failed["status"] == "failed"
        down = scrape()
        assert down[("weightwatch_crawl_runs_total",
                     (("status", "failed"), ("target", "feed")))] == 1
        assert down[("weightwatch_target_down", (("target", "feed"),))] == 1
        assert down[("weightwatch_outbox_messages", (("channel", "email"),
                                                     ("queue", "notices"),
                                                     ("status", "pending")))] == 1

        site.start()
        assert "lifted" in ww("targets", "retry", "feed").stdout
        until(lambda: ww("health").returncode == 0, interval + 10,
              "health ok once the site is back and the back-off lifted")
        assert scrape()[("weightwatch_target_down", (("target", "feed"),))] == 0
        heartbeats = events("heartbeat")
        assert heartbeats and heartbeats[-1]["next_target"] == "feed"
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    stopped = ww("health")
    assert stopped.returncode == 1 and "stopped at" in stopped.stdout
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=2)
