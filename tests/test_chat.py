"""Chat channels through Apprise (`[[alerts.channels]]`, issue 17): a short text per alert
group, through the same outbox, silences and retries as email, against real HTTP
receivers on loopback.

Services that take a host (`json://`, `mmost://`, `rocket://`, Matrix's hookshot bridge)
are pointed at the receiver; those whose hosts are fixed in Apprise (Slack, Discord, Teams'
Power Automate workflows) are sent to the receiver by redirecting the transport (requests'
adapter) on loopback, so the test sees the exact payload Apprise builds for them. Nothing may leave
loopback: name resolution and connections to any other address are refused and recorded,
and a test shows that guard catching Apprise.
"""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from support import Server, hit, make_config, save

from demo.smtp_sink import free_port
from monitor.alerts import Alerter
from monitor.config import ChannelSettings, Config, ConfigError, load_config
from monitor.logs import configure_logging
from monitor.store import Store

TOKEN = "XoxbChatTokenNotForLogs42"
ENV = "WW_CHAT_URL"


class Receiver:
    """A chat service's endpoint: records each request (method, path, headers, body as
    text) and answers `status` with `answer` (JSON)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.answer: bytes = b"{}"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.requests.append({
                    "method": self.command, "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length).decode("utf-8")})
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            do_POST = do_GET = do_PUT = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def posts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name lookup and connection beyond loopback is refused and recorded."""
    refused: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not _loopback(name):
            refused.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"test refuses to resolve {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            refused.append(str(address[0]))
            raise ConnectionRefusedError(f"test refuses to connect to {address[0]}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return refused


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[Server]:
    with Server(free_port()) as srv:
        yield srv


@pytest.fixture
def redirect(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> list[str]:
    """Requests to the fixed hosts of Slack, Discord and Teams' workflows go to the
    receiver instead (same path and query); returns the hosts they were meant for."""
    import requests.adapters

    meant: list[str] = []
    fixed = ("hooks.slack.com", "discord.com", "prod-00.westus.logic.azure.com")
    real_send = requests.adapters.HTTPAdapter.send

    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url)
        if parts.hostname in fixed:
            meant.append(f"{parts.scheme}://{parts.hostname}")
            request.url = urlunsplit(("http", f"127.0.0.1:{receiver.port}", parts.path,
                                      parts.query, ""))
            kwargs["verify"] = False
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return meant


def with_chat(smtp_port: int, name: str = "team-chat") -> Config:
    config = make_config(smtp_port)
    return dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, chats=[ChannelSettings(name=name, url_env=ENV)]))


def leak(store: Store, channels: tuple[str, ...]) -> list[int]:
    """lab-17's copy on three mirrors, the first also as a watermark hit."""
    ids = []
    for n in range(3):
        ids += save(store, [hit(recipient="lab-17", indicator=f"{n:02x}" * 32)], key=f"m{n}",
                    url=f"https://mirror{n}.example/heron.safetensors", channels=channels)
    ids += save(store, [hit(kind="watermark", recipient="lab-17", indicator="lab-17")],
                key="m0w", url="https://mirror0.example/heron.safetensors", channels=channels)
    return ids


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON payload, wherever the service's format nests the text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def dump(db: Path) -> str:
    """Everything the database holds, as text (WAL included: read through SQLite)."""
    with sqlite3.connect(db) as conn:
        return "\n".join(conn.iterdump())


def test_a_group_goes_to_the_chat_as_one_short_text(tmp_path: Path, smtp: Server,
                                                     receiver: Receiver,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}")
    config = with_chat(smtp.port)
    with Store(tmp_path / "w.db") as store:
        ids = leak(store, config.alerts.channels)
        # Another model's hit is another group, so another message.
        save(store, [hit(model="other-3b", severity="low", kind="mention", indicator="Other",
                         context="@everyone <!channel> look")], key="o",
             url="https://board.example/o", channels=config.alerts.channels)
        result = Alerter(store, config).flush()
        chat = result.chats["team-chat"]
        assert (result.emails_sent, chat.sent, chat.alerts_sent, chat.error) == (2, 2, 5, None)
        assert {(r["channel"], r["status"]) for r in store.outbox()} == {
            ("email", "sent"), ("team-chat", "sent")}
        again = Alerter(store, config).flush(datetime.now(UTC) + timedelta(days=1))
        assert again.chats["team-chat"].sent == 0
    assert len(receiver.posts) == 2
    first = receiver.posts[0]
    assert first["path"] == f"/hook/{TOKEN}"
    body = json.loads(first["body"])
    assert body["title"].startswith(
        "[weightwatch] CRITICAL heron-7b: lab-17's copy leaked, 4 new hits")
    assert body["type"] == "failure"
    text = body["message"]
    assert text.splitlines()[:4] == [
        "Worst severity: CRITICAL", "Whose copy: lab-17", "Hits: 4 critical (3 hash, 1 watermark)",
        "Locations: 3"]
    assert "- https://mirror0.example/heron.safetensors (2 hits, critical)" in text
    assert f"Evidence: weightwatch hits show {ids[0]}" in text
    assert "Triage: weightwatch hits ack --incident model:heron-7b --note TEXT" in text
    # The evidence stays in the email: a chat message is short.
    assert len(text) < 1000
    other = json.loads(receiver.posts[1]["body"])
    assert other["type"] == "info" and "Whose copy" not in other["message"]


def test_a_failing_channel_retries_and_delivers_once_and_never_shows_its_token(
        tmp_path: Path, smtp: Server, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    logged = io.StringIO()
    configure_logging("debug", stream=logged, json=True)
    url = f"json://ops:pw-{TOKEN}@127.0.0.1:{receiver.port}/hook/{TOKEN}?token={TOKEN}"
    monkeypatch.setenv(ENV, url)
    config = with_chat(smtp.port)
    receiver.status = 503
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()], channels=config.alerts.channels)
        alerter = Alerter(store, config)
        first = alerter.flush(t0)
        # The email went; the chat's alert waits for its back-off with a masked reason.
        assert first.emails_sent == 1 and first.chats["team-chat"].sent == 0
        error = first.chats["team-chat"].error or ""
        assert error.startswith("channel team-chat: ") and "503" in error
        # The reason is stored for `alerts list`, the token is not.
        stored = dump(tmp_path / "w.db")
        assert error in stored and TOKEN not in stored
        (pending,) = store.outbox("pending")
        assert (pending["channel"], pending["attempts"]) == ("team-chat", 1)
        assert alerter.flush(t0 + timedelta(seconds=59)).chats["team-chat"].sent == 0
        receiver.status = 200
        later = alerter.flush(t0 + timedelta(seconds=60))
        assert (later.chats["team-chat"].sent, later.chats["team-chat"].error) == (1, None)
        assert alerter.flush(t0 + timedelta(days=1)).chats["team-chat"].sent == 0
        assert {r["status"] for r in store.outbox()} == {"sent"}
    assert [json.loads(p["body"])["title"] for p in receiver.posts] == [
        json.loads(receiver.posts[0]["body"])["title"]] * 2  # one refused, one delivered
    assert len(smtp.emails) == 1
    text = logged.getvalue()
    assert "chat_delivery_failed" in text and "chat_sent" in text  # the log was captured
    assert TOKEN not in text and "pw-" not in text
    assert TOKEN not in dump(tmp_path / "w.db")


def test_an_unreachable_channel_names_no_piece_of_its_url(tmp_path: Path, smtp: Server,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    closed = free_port()
    monkeypatch.setenv(ENV, f"jsons://127.0.0.1:{closed}/{TOKEN}")
    config = with_chat(smtp.port)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()], channels=config.alerts.channels)
        error = Alerter(store, config).flush().chats["team-chat"].error or ""
        (row,) = store.outbox("pending")
    assert error.startswith("channel team-chat: ")
    assert TOKEN not in error and str(closed) not in error
    assert TOKEN not in (row["last_error"] or "x" + TOKEN)


def test_a_silence_mutes_the_chat_too(tmp_path: Path, smtp: Server, receiver: Receiver,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, f"json://127.0.0.1:{receiver.port}/hook")
    config = with_chat(smtp.port)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit(model="heron-7b")], channels=config.alerts.channels)
        store.add_silence(matchers=["model=heron-7b"], reason="known", created_by="t",
                          ends_at="2999-01-01T00:00:00+00:00")
        result = Alerter(store, config).flush()
        chat = result.chats["team-chat"]
        assert (chat.alerts_silenced, chat.sent, result.emails_sent) == (1, 0, 0)
        held = {r["channel"]: r["silenced_by"] for r in store.outbox()}
        assert held["team-chat"] is not None
        # Expired, the silence lets its alert go once.
        store.expire_silence(held["team-chat"])
        store.retry_now()
        assert Alerter(store, config).flush().chats["team-chat"].sent == 1
    assert len(receiver.posts) == 1


def test_a_missing_or_foreign_url_holds_the_alerts_pending(tmp_path: Path, smtp: Server,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.delenv(ENV, raising=False)
    config = with_chat(smtp.port)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()], channels=config.alerts.channels)
        held = Alerter(store, config).flush().chats["team-chat"]
        assert held.sent == 0 and f"environment variable {ENV}" in (held.error or "")
        monkeypatch.setenv(ENV, f"nosuch://{TOKEN}@example.org/x")
        held = Alerter(store, config).flush().chats["team-chat"]
        assert "not a URL Apprise can send to" in (held.error or "")
        assert TOKEN not in (held.error or "")
        (row,) = store.outbox("pending")
        # Held, not tried: no attempt is spent on a setting to fix.
        assert (row["channel"], row["attempts"]) == ("team-chat", 0)


@pytest.mark.parametrize(("scheme", "url", "path", "field"), [
    # Mattermost's incoming webhook and Rocket.Chat's take a host.
    ("mmost", "mmost://127.0.0.1:{port}/{token}", "/hooks/{token}", "text"),
    ("rocket", "rocket://a1b2c3/tok3n@127.0.0.1:{port}/?mode=webhook", "/hooks/a1b2c3/tok3n",
     "text"),
    # Matrix through its hookshot bridge's webhook (the token is the webhook's).
    ("matrix", "matrix://{token}@127.0.0.1:{port}/?mode=hookshot", "/webhook/{token}", "text"),
    # Slack's, Discord's and Teams' hosts are fixed: their payloads, on loopback.
    ("slack", "slack://T1JJ3T3L2/A1BRTD4JD/{token}", "/services/T1JJ3T3L2/A1BRTD4JD/{token}",
     "attachments"),
    ("discord", "discord://4174216298/{token}", "/api/webhooks/4174216298/{token}", "content"),
    ("teams", "workflows://prod-00.westus.logic.azure.com:443/wf-1/{token}",
     "/workflows/wf-1/triggers/manual/paths/invoke", "attachments"),
])
def test_each_service_gets_the_text_in_its_own_payload(
        tmp_path: Path, smtp: Server, receiver: Receiver, redirect: list[str],
        monkeypatch: pytest.MonkeyPatch, scheme: str, url: str, path: str, field: str
        ) -> None:
    monkeypatch.setenv(ENV, url.format(port=receiver.port, token=TOKEN))
    if scheme == "slack":
        receiver.answer = b"ok"  # what Slack's incoming webhooks answer
    config = with_chat(smtp.port)
    with Store(tmp_path / "w.db") as store:
        leak(store, config.alerts.channels)
        result = Alerter(store, config).flush()
    assert result.chats["team-chat"].error is None
    (post,) = receiver.posts
    assert post["path"].split("?")[0] == path.format(token=TOKEN)
    payload = json.loads(post["body"])
    assert field in payload
    # As the service shows it: markdown services get the text with its markup escaped.
    flat = " ".join(strings(payload)).replace("\\", "")
    for fact in ("CRITICAL heron-7b", "Whose copy: lab-17", "mirror2.example",
                 "weightwatch hits ack --incident model:heron-7b"):
        assert fact in flat, (scheme, fact, flat)
    assert bool(redirect) == (scheme in ("slack", "discord", "teams"))
    # No icon on a third-party host for every reader's client to fetch.
    assert "github.com" not in json.dumps(payload)


def test_crawled_text_cannot_mention_everyone(tmp_path: Path, smtp: Server, receiver: Receiver,
                                              redirect: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, f"discord://4174216298/{TOKEN}")
    config = with_chat(smtp.port)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()], url="https://x.example/@everyone/<!channel>",
             channels=config.alerts.channels)
        Alerter(store, config).flush()
    content = json.loads(receiver.posts[0]["body"])["content"]
    assert "x.example/@\u200beveryone/<\u200b!channel>" in content
    assert "@everyone" not in content and "<!channel>" not in content


def test_apprise_cannot_leave_loopback(tmp_path: Path, smtp: Server,
                                       loopback_only: list[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the redirection, Slack's fixed host is refused by the guard: it is seen."""
    monkeypatch.setenv(ENV, f"slack://T1JJ3T3L2/A1BRTD4JD/{TOKEN}")
    config = with_chat(smtp.port)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()], channels=config.alerts.channels)
        error = Alerter(store, config).flush().chats["team-chat"].error
    assert error and TOKEN not in error
    assert "hooks.slack.com" in loopback_only


def test_channels_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[alerts.channels]]\nname = "sec-slack"\nurl_env = "WW_SLACK_URL"\n'
                    '[[alerts.channels]]\nname = "oncall-matrix"\nurl_env = "WW_MATRIX_URL"\n')
    alerts = load_config(path).alerts
    assert alerts.chats == [ChannelSettings("sec-slack", "WW_SLACK_URL"),
                            ChannelSettings("oncall-matrix", "WW_MATRIX_URL")]
    assert alerts.channels == ("email", "sec-slack", "oncall-matrix")
    for body, needle in [
        (f'name = "x"\nurl = "slack://a/b/{TOKEN}"\nurl_env = "E"', "alerts.channels[0].url: "
                                                                   "never in the config file"),
        ('name = "email"\nurl_env = "E"', "alerts.channels[0].name"),
        ('name = "Bad Name"\nurl_env = "E"', "alerts.channels[0].name"),
        ('name = "x"\nurl_env = "not a name"', "alerts.channels[0].url_env"),
        ('name = "x"', "alerts.channels[0].url_env: required"),
    ]:
        path.write_text(f"[[alerts.channels]]\n{body}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert needle in str(info.value), (body, str(info.value))
        assert TOKEN not in str(info.value)
    path.write_text('[[alerts.channels]]\nname = "x"\nurl_env = "A"\n'
                    '[[alerts.channels]]\nname = "x"\nurl_env = "B"\n')
    with pytest.raises(ConfigError, match=r"alerts.channels\[1\].name"):
        load_config(path)


def test_a_database_from_before_chat_channels_keeps_its_outbox(tmp_path: Path) -> None:
    """The migration that lets the outbox take chat channels' names rebuilds the table:
    rows written before it survive with their state, and new channels can be queued."""
    from monitor.migrations import MIGRATIONS

    mine = next(i for i, sql in enumerate(MIGRATIONS) if "outbox_chat" in sql)
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    for sql in MIGRATIONS[:mine]:
        conn.executescript(sql)
    conn.execute(f"PRAGMA user_version = {mine}")
    conn.execute("INSERT INTO hits (dedup_key, kind, severity, indicator, detector, context, "
                 "target, url, first_seen, last_seen) VALUES ('k', 'hash', 'critical', 'ab', "
                 "'digests', 'c', 't', 'https://x.example', '2026-01-01', '2026-01-01')")
    conn.execute("INSERT INTO outbox (hit_id, channel, created_at, next_attempt_at, status, "
                 "attempts, sent_at, message_id) VALUES (1, 'email', '2026-01-01', "
                 "'2026-01-01', 'sent', 1, '2026-01-01', '<m@x>')")
    conn.execute("INSERT INTO outbox (hit_id, channel, created_at, next_attempt_at, status, "
                 "attempts, last_error) VALUES (1, 'webhook', '2026-01-01', '2026-01-02', "
                 "'pending', 2, 'webhook http://x answered HTTP 503')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO outbox (hit_id, channel, created_at, next_attempt_at) "
                     "VALUES (1, 'team-chat', '2026-01-01', '2026-01-01')")
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert [(r["channel"], r["status"], r["attempts"], r["message_id"], r["last_error"])
                for r in store.outbox()] == [
            ("email", "sent", 1, "<m@x>", None),
            ("webhook", "pending", 2, None, "webhook http://x answered HTTP 503")]
        store.db.execute("INSERT INTO outbox (hit_id, channel, created_at, next_attempt_at) "
                         "VALUES (1, 'team-chat', '2026-01-01', '2026-01-01')")
        assert [r["channel"] for r in store.outbox()][-1] == "team-chat"


def test_only_a_flush_with_a_chat_to_send_loads_apprise(tmp_path: Path, receiver: Receiver,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Analyst commands on a config with chat channels import neither Apprise nor its HTTP
    stack; `alerts flush` with a chat alert due does, and sends it (real processes)."""
    from test_startup import CONFIG, Runner

    runner = Runner(tmp_path)
    config = tmp_path / "chat.toml"
    config.write_text(CONFIG.format(post="div.post") + '\n[[alerts.channels]]\n'
                      f'name = "team-chat"\nurl_env = "{ENV}"\n', encoding="utf-8")
    monkeypatch.setenv(ENV, f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}")
    with Store(runner.db) as store:
        save(store, [hit()], channels=("team-chat",))
    light = ("apprise", "requests", "urllib3")
    for args in [("hits",), ("alerts", "list"), ("incidents",), ("check-config",)]:
        _, modules = runner(*args, config=config)
        assert [m for m in modules if m.split(".")[0] in light] == [], args
    # Exit 1: the email channel has no [smtp] here; the chat is sent all the same.
    done, modules = runner("alerts", "flush", config=config, code=1)
    assert "no [smtp] section" in done.stderr
    assert "apprise" in modules and "team-chat: 1 message(s) sent for 1 hit(s)" in done.stdout
    assert len(receiver.posts) == 1 and TOKEN not in done.stdout + done.stderr


def test_alerts_test_sends_a_test_message_to_a_channel(tmp_path: Path, receiver: Receiver,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from monitor.cli import main

    config = tmp_path / "config.toml"
    config.write_text(f'[alerts]\nenabled = false\n[[alerts.channels]]\nname = "team-chat"\n'
                      f'url_env = "{ENV}"\n', encoding="utf-8")
    base = ["--config", str(config), "--db", str(tmp_path / "w.db"), "alerts", "test"]

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)

    monkeypatch.delenv(ENV, raising=False)
    unset = run("--channel", "team-chat")
    assert unset.exit_code == 1 and f"environment variable {ENV}" in unset.stderr
    unknown = run("--channel", "nope")
    assert unknown.exit_code == 2 and "(team-chat)" in unknown.stderr
    monkeypatch.setenv(ENV, f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}")
    receiver.status = 500
    failed = run("--channel", "team-chat")
    assert failed.exit_code == 1 and "channel team-chat: " in failed.stderr
    assert TOKEN not in failed.stderr + failed.stdout
    receiver.status = 200
    sent = run("--channel", "team-chat")  # sent although alerts are disabled: asked for
    assert sent.exit_code == 0 and "test message sent to channel team-chat" in sent.stdout
    body = json.loads(receiver.posts[-1]["body"])
    assert body["title"] == "[weightwatch] test message" and "team-chat" in body["message"]
