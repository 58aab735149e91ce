"""The webhook channel: a JSON POST per alert group beside the emails, with the same
grouping, silences and retries, against a real HTTP server on loopback (issue 7)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import Hook, Server, hit, save, with_hook

from monitor.alerts import Alerter
from monitor.config import WebhookSettings, load_config
from monitor.store import Store

TOKEN = "hook-token-not-for-logs"


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


@pytest.fixture
def server():
    from demo.smtp_sink import free_port

    with Server(free_port()) as srv:
        yield srv


def test_each_group_is_posted_once_beside_the_email(tmp_path: Path, server: Server, hook: Hook,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WW_HOOK_TOKEN", TOKEN)
    config = with_hook(server.port, hook.url)
    with Store(tmp_path / "w.db") as store:
        heron = [i for n in range(3) for i in save(
            store, [hit(indicator="ab" * 32)], key=f"k{n}", url=f"https://m{n}.example/w",
            channels=config.alerts.channels)]
        other = save(store, [hit(indicator="cd" * 32, model="other-3b",
                                 context='<script>alert(1)</script>')], key="o",
                     channels=config.alerts.channels)
        result = Alerter(store, config).flush()
        assert (result.emails_sent, result.webhook_posts) == (2, 2)
        assert {r["channel"] for r in store.outbox()} == {"email", "webhook"}
        assert {r["status"] for r in store.outbox()} == {"sent"}
        again = Alerter(store, config).flush()
        assert (again.emails_sent, again.webhook_posts) == (0, 0)
    groups = {body["group"]: body for _, body in hook.posts}
    assert set(groups) == {"model:heron-7b", "model:other-3b"}
    assert [h["id"] for h in groups["model:heron-7b"]["hits"]] == heron
    first = groups["model:heron-7b"]["hits"][0]
    assert first["url"] == "https://m0.example/w" and first["show"] == f"weightwatch hits show {heron[0]}"
    assert "3 new hits" in groups["model:heron-7b"]["subject"]
    # Crawled text travels as JSON data, never as markup to render.
    assert groups["model:other-3b"]["hits"][0]["context"] == "<script>alert(1)</script>"
    assert [h["id"] for h in groups["model:other-3b"]["hits"]] == other
    assert all(headers["authorization"] == f"Bearer {TOKEN}" for headers, _ in hook.posts)


def test_a_failing_webhook_retries_and_delivers_once(tmp_path: Path, server: Server,
                                                     hook: Hook) -> None:
    config = with_hook(server.port, hook.url)
    hook.status = 503
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()], channels=config.alerts.channels)
        result = Alerter(store, config).flush()
        # The email went out; the webhook's alert waits, its error naming only the origin.
        assert result.emails_sent == 1 and result.webhook_posts == 0
        assert "answered HTTP 503" in result.webhook_error
        assert "SECRETPATH" not in result.webhook_error
        (pending,) = store.outbox("pending")
        assert pending["channel"] == "webhook" and pending["attempts"] == 1
        hook.status = 200
        store.retry_now()
        assert Alerter(store, config).flush().webhook_posts == 1
        store.retry_now()
        assert Alerter(store, config).flush().webhook_posts == 0
    assert len(hook.posts) == 2 and len(server.emails) == 1  # one refused, one delivered


def test_silences_hold_the_webhook_too(tmp_path: Path, server: Server, hook: Hook) -> None:
    config = with_hook(server.port, hook.url)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit(model="heron-7b")], channels=config.alerts.channels)
        store.add_silence(matchers=["model=heron-7b"], reason="known", created_by="t",
                          ends_at="2999-01-01T00:00:00+00:00")
        result = Alerter(store, config).flush()
        assert (result.emails_sent, result.webhook_posts) == (0, 0)
    assert hook.posts == []


def test_webhook_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[alerts.webhook]\nurl = "https://hooks.example/services/X"\n'
                    'token_env = "HOOK_TOKEN"\ntimeout = "5s"\n')
    alerts = load_config(path).alerts
    assert alerts.webhook == WebhookSettings("https://hooks.example/services/X", "HOOK_TOKEN", 5.0)
    assert alerts.channels == ("email", "webhook")
    path.write_text('[alerts.webhook]\nurl = "ftp://x"\n')
    with pytest.raises(Exception) as info:
        load_config(path)
    assert "alerts.webhook.url" in str(info.value)


def test_a_database_from_before_the_webhook_keeps_its_outbox(tmp_path: Path) -> None:
    """Migration 8 rebuilds the outbox (one row per hit and channel): rows written by the
    previous schema survive with their state."""
    import sqlite3

    from monitor.migrations import MIGRATIONS

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    for sql in MIGRATIONS[:7]:
        conn.executescript(sql)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("INSERT INTO hits (dedup_key, kind, severity, indicator, detector, context, "
                 "target, url, first_seen, last_seen) VALUES ('k', 'hash', 'critical', 'ab', "
                 "'digests', 'c', 't', 'https://x.example', '2026-01-01', '2026-01-01')")
    conn.execute("INSERT INTO outbox (hit_id, created_at, next_attempt_at, status, attempts, "
                 "sent_at) VALUES (1, '2026-01-01', '2026-01-01', 'sent', 1, '2026-01-01')")
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.schema_version == len(MIGRATIONS)
        (row,) = store.outbox()
        assert (row["hit_id"], row["channel"], row["status"], row["attempts"]) == (
            1, "email", "sent", 1)


def test_the_webhook_answer_body_is_never_read(tmp_path: Path) -> None:
    """A receiver that answers 200 and then an endless, doubly gzipped body: delivery
    counts the status and closes the connection, instead of inflating what follows."""
    import gzip

    from monitor.alerts import post_webhook

    chunk = gzip.compress(gzip.compress(b"\0" * (8 << 20)))
    sent: list[int] = []

    class Endless(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip, gzip")
            self.end_headers()
            try:
                while True:  # until the client hangs up
                    self.wfile.write(chunk)
                    sent.append(len(chunk))
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        post_webhook({"subject": "x"}, WebhookSettings(url=url, timeout=5))
    finally:
        server.shutdown()
        server.server_close()
    assert sent, "the receiver never got to send its body"
