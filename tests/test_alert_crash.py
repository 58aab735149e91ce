"""The alert sender killed between the SMTP server's acceptance and the database update
(issue 13): the retry must carry the same Message-ID, so a mailbox that has the first copy
reads the second as the same message, and nothing may be lost or sent under two ids.

The window is made exact by the SMTP server itself: smtplib reads the 250 for DATA, then
sends QUIT before `deliver` returns and the outbox row is marked sent; the server's QUIT
hook SIGKILLs the sender (a real `weightwatch alerts flush` process) and waits for it to
die before answering. The message was accepted; the database still says 'sending'.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import signal
import subprocess
import sys
from email import policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from support import hit, save

from demo.smtp_sink import free_port
from monitor.store import Store


class KillingServer:
    """An SMTP server on loopback that accepts every message and, while `victim` is set,
    kills that process when it says QUIT: after the 250, before its database update."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[email.message.EmailMessage] = []
        self.victim: subprocess.Popen | None = None
        self.killed = False
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        victim = self.victim
        if victim is not None:
            os.kill(victim.pid, signal.SIGKILL)
            self.killed = True
            # Answer only once it is dead, so it can never read the reply and go on.
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(victim.wait, 10)
        return "221 Bye"

    def __enter__(self) -> KillingServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def flush(tmp_path: Path, server: KillingServer, *, kill: bool) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "--config",
                             str(tmp_path / "config.toml"), "alerts", "flush"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    server.victim = proc if kill else None
    proc.communicate(timeout=60)
    return proc


def write_config(tmp_path: Path, port: int) -> None:
    # No grouping delays and no digest: every due alert may go at once, so what is
    # tested is the outbox, not the schedule.
    (tmp_path / "config.toml").write_text(f"""
[database]
path = "w.db"

[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
timeout = "10s"

[alerts]
enabled = true
from = "weightwatch@example.org"
to = ["security@example.org"]
group_wait = "0s"
group_interval = "0s"
digest = []
""")


def hit_ids(message: email.message.EmailMessage) -> set[int]:
    return {int(x) for x in message["X-Weightwatch-Hits"].split(",")}


@pytest.mark.slow
def test_killed_after_the_servers_250_the_retry_resends_under_the_same_message_id(tmp_path):
    db = tmp_path / "w.db"
    with KillingServer() as server:
        write_config(tmp_path, server.port)
        with Store(db) as store:
            [first] = save(store, [hit(indicator="ab" * 32)])

        killed = flush(tmp_path, server, kill=True)
        assert killed.returncode == -signal.SIGKILL and server.killed
        [accepted] = server.received
        assert hit_ids(accepted) == {first}
        with Store(db) as store:
            [row] = store.outbox()
            # The server has the message; the database does not know it was accepted.
            assert (row["status"], row["message_id"]) == ("sending", accepted["Message-ID"])
            # Before the retry, the next crawl finds another mirror of the same leak: an
            # alert of the same group, which a fresh batch would send together with the
            # first under a new Message-ID.
            [second] = save(store, [hit(indicator="cd" * 32)], key="post-2",
                            url="https://board.example/t/2")

        retried = flush(tmp_path, server, kill=False)
        assert retried.returncode == 0

    resent = [m for m in server.received[1:] if first in hit_ids(m)]
    assert len(resent) == 1
    assert resent[0]["Message-ID"] == accepted["Message-ID"]
    assert hit_ids(resent[0]) == {first}
    # Nothing lost, and every hit reached the mailbox under one Message-ID only.
    ids_of = {}
    for message in server.received:
        for hit_id in hit_ids(message):
            ids_of.setdefault(hit_id, set()).add(message["Message-ID"])
    assert set(ids_of) == {first, second}
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    with Store(db, readonly=True) as store:
        rows = {row["hit_id"]: row for row in store.outbox()}
    assert {r["status"] for r in rows.values()} == {"sent"}
    assert rows[first]["message_id"] == accepted["Message-ID"]
    assert {rows[h]["message_id"] for h in (first, second)} == {
        next(iter(ids_of[first])), next(iter(ids_of[second]))}
