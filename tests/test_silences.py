"""Silences, with a real SMTP server on loopback: a silenced match is recorded and not
emailed; when the silence ends or is expired, what it held back is emailed once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import Server, hit, make_config, save

from monitor.alerts import Alerter
from monitor.cli import main
from monitor.silences import SilenceError, parse_matcher
from monitor.store import Store


@pytest.fixture
def server():
    from demo.smtp_sink import free_port

    with Server(free_port()) as srv:
        yield srv


def cli(db: Path, *args: str, code: int = 0):
    result = CliRunner().invoke(main, ["--config", "/dev/null", "--db", str(db), *args],
                                catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def indicators_in(server: Server) -> list[set[str]]:
    """Per email received, the hit ids it carries (X-Weightwatch-Hits)."""
    return [set(m["X-Weightwatch-Hits"].split(",")) for m in server.emails]


def seeded(tmp_path: Path) -> tuple[Path, list[int], list[int]]:
    """A store with two hits on a mirror of heron-7b and one on another model."""
    db = tmp_path / "w.db"
    with Store(db) as store:
        heron = save(store, [hit(indicator="ab" * 32), hit(kind="torrent", indicator="cd" * 20)],
                     url="https://mirror.example/heron")
        other = save(store, [hit(indicator="ef" * 32, model="other-3b")], key="post-2",
                     url="https://board.example/t/2")
    return db, heron, other


def flush(db: Path, port: int, now: datetime | None = None):
    with Store(db) as store:
        return Alerter(store, make_config(port)).flush(now)


def test_a_silenced_match_is_recorded_not_emailed_and_sent_once_when_expired(
        tmp_path: Path, server: Server) -> None:
    db, heron, other = seeded(tmp_path)
    out = json.loads(cli(db, "silence", "add", "--match", "model=heron-7b", "--match",
                         "url=~https://mirror\\..*", "--for", "7d", "--reason",
                         "known mirror, takedown requested", "--format", "json").stdout)
    assert out[0]["state"] == "active" and out[0]["matchers"].startswith("model=heron-7b")
    result = flush(db, server.port)
    assert (result.alerts_sent, result.alerts_silenced) == (1, 2)
    assert indicators_in(server) == [{str(i) for i in other}]
    with Store(db) as store:
        assert {h["id"] for h in store.hits()} == set(heron) | set(other)  # recorded
        held = [r for r in store.outbox("pending")]
        assert {r["hit_id"] for r in held} == set(heron)
        assert {r["silenced_by"] for r in held} == {out[0]["id"]}
    # Flushing again, even forcing retries, sends nothing while the silence holds.
    cli(db, "alerts", "flush")
    assert len(server.emails) == 1
    cli(db, "silence", "expire", str(out[0]["id"]))
    assert flush(db, server.port).alerts_sent == 2
    assert indicators_in(server)[1] == {str(i) for i in heron}
    assert flush(db, server.port).emails_sent == 0  # once, not twice
    listed = json.loads(cli(db, "silence", "list", "--all", "--format", "json").stdout)
    assert [s["state"] for s in listed] == ["expired"]
    assert "no active silences" in cli(db, "silence", "list").stdout


def test_a_silence_that_runs_out_releases_what_it_held(tmp_path: Path, server: Server) -> None:
    db, heron, other = seeded(tmp_path)
    cli(db, "silence", "add", "--match", "severity=critical", "--for", "1h", "--reason", "test")
    assert flush(db, server.port).alerts_silenced == 3
    assert server.emails == []
    # The silence ran out an hour after it was added: the flush is told the time.
    later = datetime.now(UTC) + timedelta(hours=1, seconds=2)
    assert flush(db, server.port, later).alerts_sent == 3
    assert set().union(*indicators_in(server)) == {str(i) for i in heron + other}
    assert flush(db, server.port, later).emails_sent == 0


def test_matchers_that_do_not_hold_let_alerts_through(tmp_path: Path, server: Server) -> None:
    db, heron, other = seeded(tmp_path)
    cli(db, "silence", "add", "--match", "model=heron-7b", "--match", "kind!=torrent",
        "--for", "1h", "--reason", "hash posts only")
    result = flush(db, server.port)
    # The heron hash is held; the heron torrent and the other model's hash are sent.
    assert (result.alerts_sent, result.alerts_silenced) == (2, 1)
    sent = set().union(*indicators_in(server))
    assert sent == {str(heron[1]), str(other[0])}


@pytest.mark.parametrize("matcher, message", [
    ("colour=red", "unknown key 'colour'"),
    ("model", "a matcher is KEY=VALUE"),
    ("url=~(", "invalid regex"),
])
def test_bad_matchers_are_one_line_errors(tmp_path: Path, matcher: str, message: str) -> None:
    with pytest.raises(SilenceError, match=message.replace("(", r"\(")):
        parse_matcher(matcher)
    out = cli(tmp_path / "w.db", "silence", "add", "--match", matcher, "--for", "1h",
              "--reason", "x", code=2)
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_expiring_twice_or_an_unknown_silence_fails(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    cli(db, "silence", "add", "--match", "kind=mention", "--for", "1h", "--reason", "noise")
    cli(db, "silence", "expire", "1")
    assert "no active silence 1" in cli(db, "silence", "expire", "1", code=1).stderr
    assert "no active silence 9" in cli(db, "silence", "expire", "9", code=1).stderr


def test_when_a_silence_ends_only_what_is_still_open_is_emailed(tmp_path: Path,
                                                                server: Server) -> None:
    db, heron, other = seeded(tmp_path)
    cli(db, "silence", "add", "--match", "severity=~critical|high", "--for", "1h",
        "--reason", "maintenance window")
    assert flush(db, server.port).alerts_silenced == 3
    cli(db, "hits", "resolve", str(heron[0]), "--note", "taken down during the silence")
    cli(db, "silence", "expire", "1")
    result = flush(db, server.port)
    assert result.alerts_sent == 2
    assert set().union(*indicators_in(server)) == {str(heron[1]), str(other[0])}


def test_silence_state_is_one_rule_for_list_and_alerter() -> None:
    from monitor.silences import Silence, silence_state

    now = "2030-01-01T12:00:00+00:00"
    before, after = "2030-01-01T11:00:00+00:00", "2030-01-01T13:00:00+00:00"
    assert silence_state(None, before, after, now) == "active"
    assert silence_state(None, after, "2030-01-02T00:00:00+00:00", now) == "pending"
    assert silence_state(None, "2029-12-31T00:00:00+00:00", before, now) == "ended"
    assert silence_state(before, before, after, now) == "expired"
    assert silence_state(None, before, now, now) == "ended", "ends_at is exclusive"
    silence = Silence(id=1, matchers=(), reason="r", created_by="t", starts_at=before,
                      ends_at=after)
    assert silence.active(now) and not silence.active(after)
