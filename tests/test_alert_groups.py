"""Alert grouping windows, with a real SMTP server on loopback: twenty mirrors of one leak
found within the group window are one email listing the twenty places; a new mirror after
the group interval is one follow-up (issue 7)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from support import ManualClock, Server, hit, make_config, parts, release, save

from monitor.alerts import Alerter
from monitor.config import Config, load_config
from monitor.store import Store

SHA = "ab" * 32


@pytest.fixture
def server():
    from demo.smtp_sink import free_port

    with Server(free_port()) as srv:
        yield srv


def grouped(port: int, wait: float, interval: float) -> Config:
    config = make_config(port)
    return dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, group_wait=wait, group_interval=interval))


def mirror(store: Store, n: int, model: str = "heron-7b") -> list[int]:
    return save(store, [hit(indicator=SHA, model=model)], key=f"mirror-{model}-{n}",
                url=f"https://mirror{n}.example/{model}/weights")


def test_twenty_mirrors_are_one_email_and_a_late_one_a_single_follow_up(
        tmp_path: Path, server: Server) -> None:
    # Minutes and hours, and checked well inside them: the store stamps hits to the second
    # by the wall clock, which the test's own run time moves too.
    config = grouped(server.port, wait=600.0, interval=3600.0)
    clock = ManualClock()
    with Store(tmp_path / "w.db") as store:
        alerter = Alerter(store, config, clock=clock)
        ids = [i for n in range(20) for i in mirror(store, n)]
        assert alerter.flush().emails_sent == 0  # the group waits for the rest of the leak
        clock.advance(300)
        assert alerter.flush().emails_sent == 0
        clock.advance(301)
        first = alerter.flush()
        assert (first.emails_sent, first.alerts_sent) == (1, 20)
        (email,) = server.emails
        plain, html_part = parts(email)
        assert all(f"https://mirror{n}.example/heron-7b/weights" in plain for n in range(20))
        assert set(email["X-Weightwatch-Hits"].split(",")) == {str(i) for i in ids}
        assert "20 new hits" in email["Subject"] and "heron-7b" in email["Subject"]

        late = mirror(store, 20)
        assert alerter.flush().emails_sent == 0  # within group_interval of the last email
        clock.advance(1800)
        assert alerter.flush().emails_sent == 0
        clock.advance(1801)
        follow_up = alerter.flush()
        assert (follow_up.emails_sent, follow_up.alerts_sent) == (1, 1)
        assert server.emails[1]["X-Weightwatch-Hits"] == str(late[0])
        # The follow-up is a reply in the incident's thread, under its own Message-ID.
        assert server.emails[1]["In-Reply-To"] == server.emails[1]["References"] == (
            email["References"])
        assert server.emails[1]["Message-ID"] != email["Message-ID"]
        assert alerter.flush().emails_sent == 0
        assert {row["status"] for row in store.outbox()} == {"sent"}


def test_groups_are_per_model(tmp_path: Path, server: Server) -> None:
    config = grouped(server.port, wait=0.0, interval=60.0)
    with Store(tmp_path / "w.db") as store:
        alerter = Alerter(store, config)
        mirror(store, 1)
        assert alerter.flush().emails_sent == 1
        # heron-7b has just been emailed; other-3b never was, so it goes out at once.
        mirror(store, 2)
        mirror(store, 1, model="other-3b")
        result = alerter.flush()
        assert (result.emails_sent, result.alerts_sent) == (1, 1)
        assert "other-3b" in server.emails[1]["Subject"]
        # Another incident, another thread.
        assert server.emails[1]["References"] != server.emails[0]["References"]
        # The held heron-7b alert is pending, due when the interval ends.
        pending = store.outbox("pending")
        assert len(pending) == 1 and pending[0]["next_attempt_at"] > pending[0]["created_at"]


def subjects_and_hits(server: Server) -> dict[str, set[str]]:
    return {email["Subject"]: set(email["X-Weightwatch-Hits"].split(","))
            for email in server.emails}


def test_two_releases_leaked_in_one_window_are_two_emails(tmp_path: Path,
                                                          server: Server) -> None:
    config = grouped(server.port, wait=0.0, interval=0.0)
    with Store(tmp_path / "w.db") as store:
        release(store, "heron-7b/model.safetensors", "v1")
        release(store, "heron-7b-v2/model.safetensors", "v2")
        v1 = [i for n in range(3) for i in save(
            store, [hit(artifact="heron-7b/model.safetensors")], key=f"v1-{n}",
            url=f"https://mirror{n}.example/v1")]
        v2 = save(store, [hit(indicator="cd" * 32, artifact="heron-7b-v2/model.safetensors")],
                  key="v2", url="https://mirror.example/v2")
        # Two releases are out: a mention names neither, so it is the model's own group.
        mention = save(store, [hit(kind="mention", severity="low", indicator="Heron 7B")],
                       key="m", url="https://board.example/m")
        assert Alerter(store, config).flush().emails_sent == 3
    got = subjects_and_hits(server)
    assert sorted(map(sorted, got.values())) == sorted(
        sorted(str(i) for i in ids) for ids in (v1, v2, mention))
    (v1_subject,) = [s for s, ids in got.items() if ids == {str(i) for i in v1}]
    assert "heron-7b v1: 3 new hits" in v1_subject


def test_with_one_release_out_every_hit_of_the_model_is_its_incident(
        tmp_path: Path, server: Server) -> None:
    config = grouped(server.port, wait=0.0, interval=0.0)
    with Store(tmp_path / "w.db") as store:
        release(store, "heron-7b/model.safetensors", "v1")
        ids = [*save(store, [hit(artifact="heron-7b/model.safetensors")], key="a"),
               *save(store, [hit(kind="weights", severity="high", indicator="https://x/y.gguf")],
                     key="b", url="https://x.example/y"),
               *save(store, [hit(kind="mention", severity="low", indicator="Heron 7B")],
                     key="c", url="https://board.example/c")]
        assert Alerter(store, config).flush().emails_sent == 1
    (email,) = server.emails
    assert set(email["X-Weightwatch-Hits"].split(",")) == {str(i) for i in ids}
    assert "heron-7b v1: 3 new hits" in email["Subject"]


def test_group_by_infohash_splits_two_torrents_of_one_model(tmp_path: Path,
                                                           server: Server) -> None:
    config = grouped(server.port, wait=0.0, interval=0.0)
    config = dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, group_by=["model", "infohash"]))
    with Store(tmp_path / "w.db") as store:
        first = [i for n in range(2) for i in save(
            store, [hit(kind="torrent", severity="high", indicator="aa" * 20,
                        indicator_type="btih (magnet)")],
            key=f"t1-{n}", url=f"https://tracker{n}.example/1")]
        second = save(store, [hit(kind="torrent", severity="high", indicator="bb" * 20,
                                  indicator_type="btih (magnet)")],
                      key="t2", url="https://tracker.example/2")
        assert Alerter(store, config).flush().emails_sent == 2
    assert sorted(map(sorted, subjects_and_hits(server).values())) == sorted(
        sorted(str(i) for i in ids) for ids in (first, second))


def test_group_settings_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[alerts]\ngroup_wait = "30s"\ngroup_interval = "0"\n')
    alerts = load_config(path).alerts
    assert (alerts.group_wait, alerts.group_interval) == (30.0, 0.0)
    assert alerts.group_by == ["model", "release"]
    path.write_text('[alerts]\ngroup_wait = "-5s"\n')
    with pytest.raises(Exception) as info:
        load_config(path)
    assert "alerts.group_wait" in str(info.value)
    path.write_text('[alerts]\ngroup_by = ["model", "infohash", "mirror"]\n')
    with pytest.raises(Exception) as info:
        load_config(path)
    assert "alerts.group_by" in str(info.value) and "'mirror'" in str(info.value)
    path.write_text('[alerts]\ngroup_by = ["model", "artifact"]\n')
    assert load_config(path).alerts.group_by == ["model", "artifact"]


def test_routes_send_each_alert_to_its_recipients(tmp_path: Path, server: Server) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'''
[smtp]
host = "127.0.0.1"
port = {server.port}
security = "none"

[alerts]
from = "weightwatch@example.org"
to = ["security@example.org"]

[[alerts.routes]]
severity = ["critical"]
kind = ["watermark", "hash"]
to = ["ciso@example.org", "security@example.org"]

[[alerts.routes]]
kind = ["mention"]
to = ["analysts@example.org"]
''')
    config = load_config(path)
    with Store(tmp_path / "w.db") as store:
        critical = save(store, [hit(indicator=SHA)], key="a", url="https://a.example/1")
        mention = save(store, [hit(kind="mention", severity="low", indicator="heron-7b")],
                       key="b", url="https://b.example/1")
        torrent = save(store, [hit(kind="torrent", severity="high", indicator="cd" * 20)],
                       key="c", url="https://c.example/1")
        assert Alerter(store, config).flush().emails_sent == 3
    by_hits = {m["X-Weightwatch-Hits"]: m["To"] for m in server.emails}
    assert by_hits == {str(critical[0]): "ciso@example.org, security@example.org",
                       str(mention[0]): "analysts@example.org",
                       str(torrent[0]): "security@example.org"}


def test_bad_routes_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[alerts.routes]]\nseverity = ["urgent"]\nto = []\n'
                    '[[alerts.routes]]\nkind = ["hash"]\n')
    with pytest.raises(Exception) as info:
        load_config(path)
    message = str(info.value)
    assert "alerts.routes[0].to: must name at least one address" in message
    assert "alerts.routes[0].severity: unknown severity 'urgent'" in message
    assert "alerts.routes[1]" in message and "to" in message


def test_low_severity_hits_wait_for_the_digest(tmp_path: Path, server: Server) -> None:
    config = grouped(server.port, wait=0.0, interval=0.0)
    config = dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, digest=["low"], digest_interval=3600.0))
    clock = ManualClock()
    with Store(tmp_path / "w.db") as store:
        alerter = Alerter(store, config, clock=clock)
        critical = mirror(store, 1)
        mentions = [i for n, model in enumerate(("heron-7b", "other-3b", "heron-7b"))
                    for i in save(store, [hit(kind="mention", severity="low",
                                              indicator=model, model=model)],
                                  key=f"m{n}", url=f"https://forum.example/t/{n}")]
        first = alerter.flush()
        # The critical hit at once; the mentions wait for the digest.
        assert (first.emails_sent, first.alerts_sent) == (1, 1)
        assert server.emails[0]["X-Weightwatch-Hits"] == str(critical[0])
        clock.advance(1800)
        assert alerter.flush().emails_sent == 0
        clock.advance(1801)
        digest = alerter.flush()
        assert (digest.emails_sent, digest.alerts_sent) == (1, 3)  # one email, both models
        assert set(server.emails[1]["X-Weightwatch-Hits"].split(",")) == {str(i) for i in mentions}
        assert alerter.flush().emails_sent == 0


def test_a_reminder_repeats_what_is_still_new(tmp_path: Path, server: Server) -> None:
    config = grouped(server.port, wait=0.0, interval=0.0)
    repeat = 4 * 3600.0
    config = dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, repeat_interval=repeat))
    clock = ManualClock()
    with Store(tmp_path / "w.db") as store:
        alerter = Alerter(store, config, clock=clock)
        first, second = mirror(store, 1), mirror(store, 2)
        assert alerter.flush().emails_sent == 1
        clock.advance(repeat / 2)
        assert alerter.flush().emails_sent == 0  # not yet
        clock.advance(repeat / 2 + 1)
        reminded = alerter.flush()
        assert (reminded.reminders_sent, reminded.alerts_sent) == (1, 0)
        reminder = server.emails[1]
        assert "reminder" in reminder["Subject"] and "2 open hits" in reminder["Subject"]
        assert set(reminder["X-Weightwatch-Hits"].split(",")) == {str(first[0]), str(second[0])}
        assert reminder["Message-ID"] != server.emails[0]["Message-ID"]
        # A reply to the email its hits went out in, in the incident's thread.
        assert reminder["In-Reply-To"] == server.emails[0]["Message-ID"]
        assert reminder["References"] == (
            f"{server.emails[0]['References']} {server.emails[0]['Message-ID']}")
        assert "Hits:        2 open: 2 critical" in parts(reminder)[0]
        # Once someone acknowledges a hit, it is no longer repeated; resolved, neither.
        store.triage(first, "acknowledged", by="t")
        store.triage(second, "resolved", by="t")
        clock.advance(repeat + 1)
        assert alerter.flush().emails_sent == 0
