"""Alert emails end to end: a real SQLite store, a real SMTP server (aiosmtpd) on loopback.

The contract under test is the security team's: few grouped emails with the evidence
inline, crawled content unable to inject markup or headers, nothing lost while the SMTP
server is down, nothing sent twice once it is back, and the password never leaked.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from structlog.testing import capture_logs
from support import Server, hit, make_config, parts, save

from demo.smtp_sink import free_port
from monitor.alerts import (
    MAX_HITS_PER_EMAIL,
    Alerter,
    DeliveryError,
    compose,
    deliver,
    message_id_for,
    send_test,
)
from monitor.config import AlertSettings, SmtpSettings
from monitor.store import Store

SECRET = "s3cr3t-Pa55word-do-not-log"
PASSWORD_ENV = "WEIGHTWATCH_TEST_SMTP_PASSWORD"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server(port):
    with Server(port) as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "w.db") as st:
        yield st


def statuses(store: Store) -> list[str]:
    return [row["status"] for row in store.outbox()]


# --- tests ----------------------------------------------------------------------------


def test_flush_sends_one_grouped_email_then_nothing(store, server):
    ids = save(store, [
        hit("mention", "low", "heron-7b weights", rule="heron-keywords"),
        hit("hash", "critical", "cd" * 32, indicator_type="sha256",
            artifact="model-00001.safetensors", recipient="acme-labs"),
        hit("torrent", "medium", "magnet:?xt=urn:btih:" + "e" * 40),
    ])
    result = Alerter(store, make_config(server.port)).flush()

    assert (result.emails_sent, result.alerts_sent, result.alerts_pending, result.error) == (1, 3, 0, None)
    [message] = server.emails
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == ("[weightwatch] CRITICAL heron-7b: acme-labs's copy leaked, 3 new "
                                  "hits (hash, torrent, mention)")
    assert message["X-Weightwatch-Hits"] == ",".join(map(str, sorted(ids)))
    assert message["From"] == "weightwatch@example.org"
    assert set(server.recipients[0]) == {"security@example.org", "oncall@example.org"}
    assert message["Date"]
    plain, html_part = parts(message)
    for hit_id in ids:
        assert f"weightwatch hits show {hit_id}" in plain
        assert f"weightwatch hits show {hit_id}" in html_part
    for text in ("cd" * 32, "(sha256)", "model-00001.safetensors", "acme-labs", "heron-keywords",
                 "https://board.example/t/1", '"weights dump" by anon, 2024-03-01 10:00 UTC'):
        assert text in plain
    # Worst first inside the email too: the critical hit precedes the low one.
    assert plain.index("[CRITICAL]") < plain.index("[MEDIUM]") < plain.index("[LOW]")
    snapshot_sha = store.document(1)["snapshot_sha256"]
    assert snapshot_sha and f"snapshot sha256 {snapshot_sha}" in plain
    assert '<a href="https://board.example/t/1"' in html_part

    outbox = store.outbox()
    assert [row["status"] for row in outbox] == ["sent"] * 3
    assert {row["message_id"] for row in outbox} == {message["Message-ID"]}
    assert all(row["attempts"] == 1 for row in outbox)

    again = Alerter(store, make_config(server.port)).flush()
    assert (again.emails_sent, again.alerts_sent, again.alerts_pending) == (0, 0, 0)
    assert len(server.messages) == 1


def test_one_email_per_model_worst_model_first(store, server):
    save(store, [hit("mention", "low", "finch", model="finch-2b")], key="a")
    save(store, [hit("hash", "critical", "ef" * 32, model="heron-7b")], key="b")
    save(store, [hit("mention", "medium", "weights leak", model=None),
                 hit("mention", "low", "leak", model=None)], key="c")

    result = Alerter(store, make_config(server.port)).flush()

    assert (result.emails_sent, result.alerts_sent) == (3, 4)
    subjects = [m["Subject"] for m in server.emails]
    assert subjects == [
        "[weightwatch] CRITICAL heron-7b: 1 new hit (hash)",
        "[weightwatch] MEDIUM unattributed: 2 new hits (mention)",
        "[weightwatch] LOW finch-2b: 1 new hit (mention)",
    ]
    assert len({m["Message-ID"] for m in server.emails}) == 3


def test_many_hits_for_one_model_are_split_into_bounded_emails(store, server):
    hits = [hit("mention", "low", f"mirror-{i}") for i in range(MAX_HITS_PER_EMAIL + 5)]
    save(store, hits)

    result = Alerter(store, make_config(server.port)).flush()

    assert (result.emails_sent, result.alerts_sent) == (2, MAX_HITS_PER_EMAIL + 5)
    sizes = [len(m["X-Weightwatch-Hits"].split(",")) for m in server.emails]
    assert sizes == [MAX_HITS_PER_EMAIL, 5]
    assert all(len(m["Message-ID"]) < 100 for m in server.emails)


def test_hostile_crawled_content_is_escaped_in_html(store, server):
    hostile = '<script>alert(1)</script> and <img src=x onerror=alert(1)> "quoted"'
    save(store, [hit("mention", "low", "<b>heron</b>", artifact="<svg onload=alert(1)>.bin")],
         url="javascript:alert(1)", title="<script>alert('title')</script>",
         author='"><img src=x onerror=alert(2)>', context=hostile)

    Alerter(store, make_config(server.port)).flush()

    [message] = server.emails
    plain, html_part = parts(message)
    lowered = html_part.lower()
    assert "<script" not in lowered
    assert "<img" not in lowered
    assert "<svg" not in lowered
    assert "<b>heron" not in lowered
    assert 'href="javascript:' not in lowered
    assert "href=" not in lowered  # the only URL is not http(s), so there is no link at all
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_part
    assert "&lt;img src=x onerror=alert(1)&gt;" in html_part
    assert "&#34;quoted&#34;" in html_part
    assert "javascript:alert(1)" in html_part  # shown as text, for the analyst
    # The plain part shows the text as is: mail clients never render text/plain as markup.
    assert "<script>alert(1)</script>" in plain


def test_link_only_for_http_urls_even_with_quotes():
    row = {"outbox_id": 1, "id": 7, "kind": "mention", "severity": "low", "model": "heron-7b",
           "indicator": "heron", "url": 'https://x.example/"onmouseover="alert(1)',
           "first_seen": "2024-01-01T00:00:00+00:00", "last_seen": "2024-01-01T00:00:00+00:00",
           "status": "new", "recipient": None, "release": None, "target": "forum",
           "detector": "rules"}
    message = compose([row], AlertSettings(to=["a@example.org"]), message_id="<m@weightwatch.local>",
                      now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    _, html_part = parts(message)
    assert 'href="https://x.example/&#34;onmouseover=&#34;alert(1)"' in html_part
    assert 'onmouseover="' not in html_part


def test_smtp_down_then_recovered_delivers_exactly_once(store, port):
    ids = save(store, [hit(), hit("mention", "low", "heron-7b torrent")])
    config = make_config(port)

    with capture_logs() as logs:
        down = Alerter(store, config).flush()

    assert down.emails_sent == 0 and down.alerts_pending == 2
    assert down.error == f"smtp 127.0.0.1:{port}: connection refused"
    rows = store.outbox()
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert all(r["attempts"] == 1 and r["last_error"] == down.error for r in rows)
    assert [e["event"] for e in logs if e["event"].startswith("alert")] == ["alert_delivery_failed"]
    # Backed off: not due again before the retry time.
    assert store.due_alerts() == []

    with Server(port) as server:
        assert store.retry_now() == 2
        up = Alerter(store, config).flush()
        assert (up.emails_sent, up.alerts_sent, up.alerts_pending, up.error) == (1, 2, 0, None)
        assert Alerter(store, config).flush().emails_sent == 0
        store.retry_now()
        assert Alerter(store, config).flush().emails_sent == 0

    assert len(server.messages) == 1
    assert server.emails[0]["X-Weightwatch-Hits"] == ",".join(map(str, ids))
    assert statuses(store) == ["sent", "sent"]
    assert all(r["last_error"] is None and r["attempts"] == 2 for r in store.outbox())


def test_failure_stops_the_flush_and_leaves_later_batches_untouched(store, port):
    save(store, [hit(model="heron-7b")], key="a")
    save(store, [hit("mention", "low", "finch", model="finch-2b")], key="b")

    result = Alerter(store, make_config(port)).flush()

    assert result.alerts_pending == 2 and result.error
    attempts = {r["model"]: r["attempts"] for r in store.outbox()}
    assert attempts == {"heron-7b": 1, "finch-2b": 0}


def test_crash_mid_send_resends_with_the_same_message_id(store, server):
    save(store, [hit()])
    [due] = store.due_alerts()
    message_id = message_id_for([due])
    store.mark_sending([due["outbox_id"]], message_id)  # then the process died

    Alerter(store, make_config(server.port)).flush()

    [message] = server.emails
    assert message["Message-ID"] == message_id
    assert statuses(store) == ["sent"]


def test_message_id_is_deterministic_and_unique_across_databases(tmp_path):
    def first_due(name: str, indicator: str) -> list[dict]:
        with Store(tmp_path / name) as st:
            save(st, [hit(indicator=indicator)])
            return st.due_alerts()

    one, other = first_due("a.db", "aa" * 32), first_due("b.db", "bb" * 32)
    assert message_id_for(one) == message_id_for(list(reversed(one)))
    assert message_id_for(one).startswith("<weightwatch-ob-1.")
    # Both databases have outbox row 1; their alerts must not share a Message-ID, or a
    # deduplicating mailbox would drop the second.
    assert message_id_for(one) != message_id_for(other)


def test_header_injection_through_model_name(store, server):
    save(store, [hit(model="heron-7b\r\nBcc: x@y\r\nX-Evil: 1", artifact="a\nBcc: z@y")])

    result = Alerter(store, make_config(server.port)).flush()

    assert result.emails_sent == 1
    [message] = server.emails
    assert message["Bcc"] is None and message["X-Evil"] is None
    raw_headers = server.messages[0].split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in raw_headers and b"\nX-Evil:" not in raw_headers
    assert "x@y" not in server.recipients[0]
    assert "heron-7b Bcc: x@y X-Evil: 1" in message["Subject"]
    plain, _ = parts(message)
    assert "\nBcc:" not in plain  # nor can it forge lines in the body


def test_password_from_env_used_for_auth_and_never_logged(store, port, monkeypatch):
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        seen.append((auth_data.login, auth_data.password))
        # handled=False: let aiosmtpd answer 535 itself (its default assumes we replied).
        return AuthResult(success=auth_data.password == SECRET.encode(), handled=False)

    save(store, [hit()])
    config = make_config(port, username="alerts", password_env=PASSWORD_ENV)
    # PLAIN only, so each flush makes exactly one attempt: after a 535 smtplib would
    # otherwise try LOGIN too.
    with Server(port, authenticator=authenticator, auth_require_tls=False,
                auth_exclude_mechanism=["LOGIN"]) as server:
        with capture_logs() as logs:
            monkeypatch.setenv(PASSWORD_ENV, "wrong-" + SECRET)
            failed = Alerter(store, config).flush()
            store.retry_now()
            monkeypatch.setenv(PASSWORD_ENV, SECRET)  # read at send time, not at start-up
            sent = Alerter(store, config).flush()

    assert failed.error and failed.error.startswith(f"smtp 127.0.0.1:{port}: authentication failed: 535")
    assert SECRET not in failed.error
    assert (sent.emails_sent, sent.error) == (1, None)
    assert seen == [(b"alerts", ("wrong-" + SECRET).encode()), (b"alerts", SECRET.encode())]
    assert len(server.messages) == 1
    events = [e["event"] for e in logs]
    assert "alert_delivery_failed" in events and "alert_sent" in events
    assert SECRET not in repr(logs)
    assert all(SECRET not in (r["last_error"] or "") for r in store.outbox())


def test_missing_password_env_is_a_clear_error(store, port, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    save(store, [hit()])
    result = Alerter(store, make_config(port, username="alerts", password_env=PASSWORD_ENV)).flush()
    # Nothing listens on the port, so this also shows the env check is not what fails first.
    assert result.error == f"smtp 127.0.0.1:{port}: connection refused"
    with Server(port, auth_require_tls=False, authenticator=lambda *a: AuthResult(success=True, handled=False)):
        store.retry_now()
        result = Alerter(store, make_config(port, username="alerts", password_env=PASSWORD_ENV)).flush()
    assert result.error == (f"smtp 127.0.0.1:{port}: environment variable {PASSWORD_ENV} "
                            f"(smtp.password_env) is not set")
    assert statuses(store) == ["pending"]


def test_starttls_required_but_not_offered(store, server):
    save(store, [hit()])

    result = Alerter(store, make_config(server.port, security="starttls")).flush()

    assert result.emails_sent == 0
    assert "server does not offer STARTTLS" in result.error
    assert server.messages == []
    assert statuses(store) == ["pending"]


@pytest.mark.parametrize("kwargs, reason", [
    ({"enabled": False}, "alerts are disabled"),
    ({"smtp": False}, "no [smtp] section"),
])
def test_held_alerts_stay_pending(store, server, kwargs, reason):
    save(store, [hit()])

    result = Alerter(store, make_config(server.port, **kwargs)).flush()

    assert (result.emails_sent, result.alerts_pending) == (0, 1)
    assert reason in result.error
    assert server.messages == []
    assert [(r["status"], r["attempts"]) for r in store.outbox()] == [("pending", 0)]


def test_aflush_delivers_in_a_worker_thread(store, server):
    save(store, [hit(), hit("mention", "low", "heron")])

    result = asyncio.run(Alerter(store, make_config(server.port)).aflush())

    assert (result.emails_sent, result.alerts_sent) == (1, 2)
    assert statuses(store) == ["sent", "sent"]
    assert asyncio.run(Alerter(store, make_config(server.port)).aflush()).emails_sent == 0


def test_aflush_failure_marks_retry(store, port):
    save(store, [hit()])
    result = asyncio.run(Alerter(store, make_config(port)).aflush())
    assert result.error and "connection refused" in result.error
    assert [(r["status"], r["attempts"]) for r in store.outbox()] == [("pending", 1)]


def test_send_test(server):
    message_id = send_test(make_config(server.port))
    [message] = server.emails
    assert message["Message-ID"] == message_id
    assert "weightwatch test alert" in message["Subject"]
    assert "weightwatch test alert" in parts(message)[0]


def test_send_test_without_smtp_or_server(port):
    with pytest.raises(DeliveryError, match=r"no \[smtp\] section"):
        send_test(make_config(port, smtp=False))
    with pytest.raises(DeliveryError, match="connection refused"):
        send_test(make_config(port))


def test_deliver_error_is_one_line(port):
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.org", "b@example.org", "x"
    with pytest.raises(DeliveryError) as info:
        deliver(message, SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=2))
    assert "\n" not in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None
