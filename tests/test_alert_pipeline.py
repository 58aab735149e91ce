"""The alert pipeline on a time the test gives: the retry back-off, and the same stages
(group wait, silence) for every channel, with a real SMTP server and a real HTTP receiver
on loopback. The pipeline never reads the clock when told the time."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from support import Hook, Server, hit, make_config, save, with_hook

from demo.smtp_sink import free_port
from monitor.alerts import Alerter
from monitor.config import Config
from monitor.store import Store


def no_clock() -> datetime:
    raise AssertionError("the pipeline read its clock although it was told the time")


def start() -> datetime:
    """A time at or after the store's stamps on the hits a test just saved (whole seconds,
    like the store's), from which the test moves on."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)


def test_a_failed_send_is_retried_after_the_back_off_and_delivered_once(tmp_path: Path) -> None:
    port = free_port()
    with Store(tmp_path / "w.db") as store:
        ids = save(store, [hit()])
        alerter = Alerter(store, make_config(port), clock=no_clock)
        t0 = start()
        assert "connection refused" in (alerter.flush(t0).error or "")
        (row,) = store.outbox()
        # The first retry is a minute later, and not before.
        assert (row["attempts"], row["next_attempt_at"]) == (
            1, (t0 + timedelta(seconds=60)).isoformat())
        assert alerter.flush(t0 + timedelta(seconds=59)).error is None
        assert store.outbox()[0]["attempts"] == 1
        t1 = t0 + timedelta(seconds=60)
        assert alerter.flush(t1).error
        # The second waits twice as long.
        (row,) = store.outbox()
        assert (row["attempts"], row["next_attempt_at"]) == (
            2, (t1 + timedelta(seconds=120)).isoformat())
        with Server(port) as server:
            assert alerter.flush(t1 + timedelta(seconds=119)).emails_sent == 0
            t2 = t1 + timedelta(seconds=120)
            sent = alerter.flush(t2)
            assert (sent.emails_sent, sent.alerts_sent, sent.error) == (1, 1, None)
            assert alerter.flush(t2 + timedelta(days=1)).emails_sent == 0
        (email,) = server.emails
        assert email["X-Weightwatch-Hits"] == str(ids[0])
        assert email["Date"] == format_datetime(t2)  # composed at the time it was given
        (row,) = store.outbox()
        assert (row["status"], row["attempts"], row["sent_at"]) == ("sent", 3, t2.isoformat())


def grouped_with_hook(port: int, url: str) -> Config:
    config = with_hook(port, url)
    return dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, group_wait=300.0, group_interval=3600.0))


@pytest.fixture
def server():
    with Server(free_port()) as srv:
        yield srv


@pytest.fixture
def hook():
    receiver = Hook()
    yield receiver
    receiver.close()


def test_the_webhook_waits_for_its_group_as_the_email_does(tmp_path: Path, server: Server,
                                                           hook: Hook) -> None:
    config = grouped_with_hook(server.port, hook.url)
    with Store(tmp_path / "w.db") as store:
        first = save(store, [hit()], channels=config.alerts.channels, key="a", url="https://m1.example/w")
        alerter = Alerter(store, config, clock=no_clock)
        t0 = start()
        waiting = alerter.flush(t0)
        assert (waiting.emails_sent, waiting.webhook_posts) == (0, 0)
        second = save(store, [hit(indicator="cd" * 32)], channels=config.alerts.channels, key="b", url="https://m2.example/w")
        t1 = t0 + timedelta(seconds=301)
        both = alerter.flush(t1)
        assert (both.emails_sent, both.webhook_posts) == (1, 1)
        (_, body), = hook.posts
        assert sorted(h["id"] for h in body["hits"]) == sorted(first + second)
        assert set(server.emails[0]["X-Weightwatch-Hits"].split(",")) == {
            str(i) for i in first + second}
        # A later mirror waits the group interval, on both channels alike.
        late = save(store, [hit(indicator="ef" * 32)], channels=config.alerts.channels, key="c", url="https://m3.example/w")
        held = alerter.flush(t1 + timedelta(seconds=3599))
        assert (held.emails_sent, held.webhook_posts) == (0, 0)
        follow_up = alerter.flush(t1 + timedelta(seconds=3601))
        assert (follow_up.emails_sent, follow_up.webhook_posts) == (1, 1)
        assert [h["id"] for h in hook.posts[1][1]["hits"]] == late


def test_a_silence_that_ends_releases_both_channels_at_the_time_given(
        tmp_path: Path, server: Server, hook: Hook) -> None:
    config = with_hook(server.port, hook.url)
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()], channels=config.alerts.channels)
        t0 = start()
        ends = (t0 + timedelta(hours=2)).isoformat()
        store.add_silence(matchers=["model=heron-7b"], reason="known", created_by="t",
                          ends_at=ends)
        alerter = Alerter(store, config, clock=no_clock)
        held = alerter.flush(t0)
        assert (held.alerts_silenced, held.emails_sent, held.webhook_posts) == (1, 0, 0)
        assert {r["next_attempt_at"] for r in store.outbox()} == {ends}
        assert alerter.flush(t0 + timedelta(hours=2, seconds=-1)).webhook_posts == 0
        released = alerter.flush(t0 + timedelta(hours=2))
        assert (released.emails_sent, released.webhook_posts) == (1, 1)
        assert {r["status"] for r in store.outbox()} == {"sent"}


def test_a_naive_time_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "w.db") as store, pytest.raises(ValueError, match="aware"):
        Alerter(store, make_config(free_port())).flush(datetime(2026, 1, 1))


def test_a_webhook_batch_that_may_have_been_posted_goes_again_as_it_was(
        tmp_path: Path, server: Server, hook: Hook) -> None:
    """Dedup is the pipeline's, so the webhook has it too: a POST cut short after the
    receiver may have taken it is repeated with the same hits, not merged with newer ones."""
    config = with_hook(server.port, hook.url)
    with Store(tmp_path / "w.db") as store:
        first = save(store, [hit()], channels=config.alerts.channels, key="a", url="https://m1.example/w")
        (due,) = store.due_alerts(channel="webhook")
        store.mark_sending([due["outbox_id"]], "webhook:<crashed@weightwatch.local>")
        second = save(store, [hit(indicator="cd" * 32)], channels=config.alerts.channels, key="b", url="https://m2.example/w")
        result = Alerter(store, config, clock=no_clock).flush(start())
        assert result.webhook_posts == 2
        assert [[h["id"] for h in body["hits"]] for _, body in hook.posts] == [first, second]
        assert {r["message_id"] for r in store.outbox() if r["hit_id"] == first[0]
                and r["channel"] == "webhook"} == {"webhook:<crashed@weightwatch.local>"}


def test_a_time_in_another_zone_is_recorded_in_utc(tmp_path: Path, server: Server) -> None:
    with Store(tmp_path / "w.db") as store:
        save(store, [hit()])
        t0 = start()
        paris = t0.astimezone(timezone(timedelta(hours=2)))
        assert Alerter(store, make_config(server.port), clock=no_clock).flush(paris).alerts_sent == 1
        assert store.outbox()[0]["sent_at"] == t0.isoformat()
