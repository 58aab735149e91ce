"""A local SMTP server that saves what it receives as .eml files.

The demo uses it so a new user sees the alert email without configuring a mail server; the
tests use it as the real SMTP peer on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    """A port nothing listens on now (aiosmtpd's Controller cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _SaveHandler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sink._received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, directory: Path | None = None, port: int | None = None, **controller_kwargs: Any):
        self.directory = directory
        self.port = port or free_port()
        self.messages: list[bytes] = []
        # Each message's envelope recipients: who the server was asked to deliver to,
        # which need not be what the To header says.
        self.recipients: list[list[str]] = []
        self.paths: list[Path] = []
        self._cond = threading.Condition()
        self.controller = Controller(_SaveHandler(self), hostname="127.0.0.1", port=self.port,
                                     **controller_kwargs)

    def _received(self, sender: str, recipients: list[str], content: bytes) -> None:
        with self._cond:
            self.messages.append(content)
            self.recipients.append(recipients)
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"{len(self.messages):04d}.eml"
                path.write_bytes(content)
                self.paths.append(path)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
