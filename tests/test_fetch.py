"""The fetcher against a real HTTP server on loopback, and the SSRF guard."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from monitor.config import CrawlSettings, Target
from monitor.fetch import (BlockedAddress, Fetcher, FetchError, check_destination,
                           is_forbidden_address, redact_url)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/ok":
            self._send(200, b"hello")
        elif self.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif self.path == "/endless":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        elif self.path.startswith("/loop"):
            n = int(self.path.removeprefix("/loop") or 0)
            self.send_response(302)
            self.send_header("Location", f"/loop{n + 1}")
            self.end_headers()
        elif self.path == "/to-ok":
            self.send_response(301)
            self.send_header("Location", "/ok")
            self.end_headers()
        elif self.path == "/ua":
            self._send(200, self.headers.get("User-Agent", "").encode())
        else:
            self._send(404, b"nope")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def target(url: str, allow_private: bool = True, **kw) -> Target:
    return Target(name="t", kind="forum", url=url, interval=60, jitter=0,
                  allow_private=allow_private, **kw)


def fetch(url: str, *, settings: CrawlSettings | None = None, **kw):
    settings = settings or CrawlSettings(host_delay=0.001, request_timeout=1, max_response_bytes=1 << 20)

    async def go():
        async with Fetcher(settings) as f:
            return await f.get(url, target(url, **kw))

    return asyncio.run(go())


def test_plain_get_and_redirect(server):
    assert fetch(server + "/ok").body == b"hello"
    r = fetch(server + "/to-ok")
    assert r.body == b"hello" and r.url.endswith("/ok")


def test_user_agent_per_target(server):
    assert fetch(server + "/ua", user_agent="probe/1").body == b"probe/1"


def test_size_cap_declared_and_streamed(server):
    with pytest.raises(FetchError, match="over the 1048576-byte cap"):
        fetch(server + "/declared-huge")
    with pytest.raises(FetchError, match="exceeded the 1048576-byte cap"):
        fetch(server + "/endless")


def test_read_timeout(server):
    with pytest.raises(FetchError, match="timed out"):
        fetch(server + "/slow")


def test_redirect_cap(server):
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch(server + "/loop0")


def test_http_error_is_one_line(server):
    with pytest.raises(FetchError) as info:
        fetch(server + "/missing")
    assert str(info.value) == f"HTTP 404 from {server}/missing"


def test_loopback_refused_unless_target_opts_in(server):
    with pytest.raises(BlockedAddress, match="resolves to 127.0.0.1"):
        fetch(server + "/ok", allow_private=False)


@pytest.mark.parametrize("address", [
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1",
    "::ffff:127.0.0.1", "2002:0a00:0001::1",
])
def test_forbidden_addresses(address):
    assert is_forbidden_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_allowed(address):
    assert not is_forbidden_address(address)


def test_non_http_schemes_refused():
    for url in ("file:///etc/passwd", "gopher://x/", "ftp://example.org/"):
        with pytest.raises(BlockedAddress, match="only http and https"):
            asyncio.run(check_destination(url, allow_private=True))


def test_redirect_hop_into_private_network_is_refused():
    """A public page redirecting to the cloud metadata address: every hop is re-checked."""
    requested = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        if request.url.host == "public.test":
            return httpx.Response(302, headers={"Location": "http://metadata.test/latest/"})
        return httpx.Response(200, text="secret credentials")

    async def resolver(host: str, port: int) -> list[str]:
        return {"public.test": ["93.184.216.34"], "metadata.test": ["169.254.169.254"]}[host]

    async def go():
        async with Fetcher(CrawlSettings(host_delay=0.001), transport=httpx.MockTransport(handler),
                           resolver=resolver) as f:
            return await f.get("http://public.test/", target("http://public.test/", allow_private=False))

    with pytest.raises(BlockedAddress, match="metadata.test resolves to 169.254.169.254"):
        asyncio.run(go())
    assert requested == ["http://public.test/"], "the private hop was never requested"


def test_redact_url_hides_secrets():
    url = "https://user:pw@idx.example/api?t=search&apikey=SECRET123&q=heron"
    safe = redact_url(url)
    assert "SECRET123" not in safe and "pw" not in safe
    assert "q=heron" in safe and "t=search" in safe
