"""Target health: escalating back-off, one down notice, one recovery notice, sent by email."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from email import message_from_bytes
from email.policy import default as default_policy

from demo.smtp_sink import SmtpSink
from monitor.alerts import Alerter
from monitor.config import AlertSettings, Config, CrawlSettings, SmtpSettings, Target
from monitor.daemon import Daemon
from monitor.models import TargetStateRow, utcnow
from monitor.store import Store, backoff_seconds


def fail(store: Store, target: str = "board", error: str = "HTTP 503 from https://x/") -> str | None:
    run = store.start_run(target)
    return store.finish_run(run, status="failed", error=error, down_after=3)


def succeed(store: Store, target: str = "board") -> str | None:
    return store.finish_run(store.start_run(target), status="ok", down_after=3)


def test_backoff_ladder_escalates_to_a_day():
    ladder = [backoff_seconds(n) for n in range(1, 9)]
    assert ladder[0] == 300 and ladder == sorted(ladder)
    assert ladder[-1] == 86400 and backoff_seconds(50) == 86400


def test_down_once_then_recovered_once(tmp_path):
    with Store(tmp_path / "w.db") as store:
        assert [fail(store) for _ in range(2)] == [None, None]
        first = store.target_state("board")["backoff_until"]
        assert fail(store) == "target_down"
        assert store.target_state("board")["backoff_until"] > first, "back-off escalates"
        assert [fail(store) for _ in range(3)] == [None, None, None], "no repeat while down"
        (notice,) = store.notices()
        assert notice["kind"] == "target_down" and notice["failures"] == 3
        assert notice["error"] == "HTTP 503 from https://x/"
        # A shutdown mid-run is not a failure and not a recovery.
        store.finish_run(store.start_run("board"), status="interrupted", down_after=3)
        assert store.target_state("board")["consecutive_failures"] == 6
        assert succeed(store) == "target_recovered"
        state = store.target_state("board")
        assert state["consecutive_failures"] == 0 and state["backoff_until"] is None
        assert succeed(store) is None
        assert [n["kind"] for n in store.notices()] == ["target_down", "target_recovered"]


def config(port: int) -> Config:
    return Config(path=None, database_path=None, crawl=CrawlSettings(),
                  alerts=AlertSettings(sender="ww@example.org", to=["sec@example.org"]),
                  smtp=SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5),
                  targets=[], rules=[])


def test_notices_are_emailed_once(tmp_path):
    with SmtpSink() as sink, Store(tmp_path / "w.db") as store:
        for _ in range(3):
            fail(store, error="cannot fetch https://board.example/threads.json: <script>")
        result = Alerter(store, config(sink.port)).flush()
        assert result.notices_sent == 1 and result.error is None
        assert sink.wait_for(1)
        email = message_from_bytes(sink.messages[0], policy=default_policy)
        assert email["Subject"] == "[weightwatch] target down: board (3 failed runs in a row)"
        assert "weightwatch targets test board" in email.get_body(("plain",)).get_content()
        html = email.get_body(("html",)).get_content()
        assert "<script>" not in html and "&lt;script&gt;" in html
        assert Alerter(store, config(sink.port)).flush().notices_sent == 0
        succeed(store)
        assert Alerter(store, config(sink.port)).flush().notices_sent == 1
        assert sink.wait_for(2)
        recovered = message_from_bytes(sink.messages[1], policy=default_policy)
        assert recovered["Subject"] == "[weightwatch] target recovered: board"
        assert [n["status"] for n in store.notices()] == ["sent", "sent"]


def test_notice_stays_pending_while_smtp_is_down(tmp_path):
    with SmtpSink() as sink:
        dead = sink.port
    with Store(tmp_path / "w.db") as store:
        for _ in range(3):
            fail(store)
        result = Alerter(store, config(dead)).flush()
        assert result.error and "refused" in result.error
        (notice,) = store.notices()
        assert notice["status"] == "pending" and notice["attempts"] == 1


def test_daemon_skips_a_target_in_backoff(tmp_path):
    target = Target(name="board", kind="imageboard", url="http://127.0.0.1:9/", interval=60,
                    jitter=0, allow_private=True)
    cfg = config(9)
    cfg.targets = [target]
    with Store(tmp_path / "w.db") as store:
        fail(store)
        assert store.target_state("board")["backoff_until"] > utcnow()

        async def run_job() -> None:
            daemon = Daemon(cfg, store)
            await daemon.crawl_job(target)
            await daemon.fetcher.aclose()

        asyncio.run(run_job())
        assert store.db["crawl_runs"].count == 1, "no run while backing off"


def test_alerts_list_shows_notices(tmp_path):
    db = tmp_path / "w.db"
    with Store(db) as store:
        for _ in range(3):
            fail(store)
    proc = subprocess.run([sys.executable, "-m", "monitor", "--db", str(db), "alerts", "list",
                           "--notices", "--format", "json"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (notice,) = json.loads(proc.stdout)
    assert notice["kind"] == "target_down" and notice["target"] == "board"
    assert notice["status"] == "pending"


def test_targets_and_report_say_the_same_health() -> None:
    """One rule for the health word: `targets` and the report's failing targets both ask
    monitor.health."""
    from monitor.health import failing, health

    states: dict[str, TargetStateRow] = {
        "new": {"name": "new"},
        "ok": {"name": "ok", "last_success_at": "2026-01-01T00:00:00+00:00"},
        "failing": {"name": "failing", "consecutive_failures": 1},
        "down": {"name": "down", "consecutive_failures": 3,
                 "down_since": "2026-01-01T00:00:00+00:00"}}
    assert {name: health(s) for name, s in states.items()} == {
        "new": "new", "ok": "ok", "failing": "failing", "down": "down"}
    assert health(states["down"], enabled=False) == "disabled"
    assert [s["name"] for s in failing(states)] == ["down", "failing"]
    assert [s["name"] for s in failing(states, ["down"])] == ["down"]


def test_finish_run_takes_the_time_given(tmp_path):
    with Store(tmp_path / "w.db") as store:
        now = "2030-05-01T12:00:00+00:00"
        for _ in range(3):
            store.finish_run(store.start_run("board", now=now), status="failed",
                             error="boom", down_after=3, now=now)
        state = store.target_state("board")
        assert state["down_since"] == now
        assert state["backoff_until"] == "2030-05-01T12:45:00+00:00"  # 5 min, tripled twice
