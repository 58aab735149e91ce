"""The fetcher against real HTTP servers on loopback: safety (SSRF guard, caps, DNS pinning)
and politeness (robots.txt, retries, per-host concurrency), cookies and proxies."""

from __future__ import annotations

import asyncio
import select
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from structlog.testing import capture_logs

from demo.smtp_sink import free_port
from monitor import fetch as fetch_module
from monitor.config import CrawlSettings, Target
from monitor.fetch import (
    BlockedAddress,
    Fetcher,
    FetchError,
    PinnedTransport,
    RobotsDisallowed,
    Unreachable,
    check_destination,
    is_forbidden_address,
    parse_retry_after,
    product_token,
    redact_url,
)


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


def target(url: str, allow_private: bool = True, name: str = "t", **kw) -> Target:
    return Target(name=name, kind="forum", url=url, interval=60, jitter=0,
                  allow_private=allow_private, **kw)


def fetch(url: str, *, settings: CrawlSettings | None = None, **kw):
    # retries=0: these tests are about one request; retries have their own tests below.
    settings = settings or CrawlSettings(host_delay=0.001, request_timeout=1, max_response_bytes=1 << 20,
                                         retries=0)

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


def to_metadata(requested: list[str]):
    """(transport, resolver) for a public host that redirects every request to the cloud
    metadata address; `requested` collects the URLs that reached the transport."""

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        if request.url.host == "public.test":
            return httpx.Response(302, headers={"Location": "http://metadata.test/latest/"})
        return httpx.Response(200, text="secret credentials")

    async def resolver(host: str, port: int) -> list[str]:
        return {"public.test": ["93.184.216.34"], "metadata.test": ["169.254.169.254"]}[host]

    return httpx.MockTransport(handler), resolver


def test_redirect_hop_into_private_network_is_refused():
    """A public page redirecting to the cloud metadata address: every hop is re-checked."""
    requested = []
    transport, resolver = to_metadata(requested)

    async def go():
        async with Fetcher(CrawlSettings(host_delay=0.001), transport=transport,
                           resolver=resolver) as f:
            return await f.get("http://public.test/", target("http://public.test/", allow_private=False,
                                                             obey_robots=False))

    with pytest.raises(BlockedAddress, match="metadata.test resolves to 169.254.169.254"):
        asyncio.run(go())
    assert requested == ["http://public.test/"], "the private hop was never requested"


def test_redact_url_hides_secrets():
    url = "https://user:pw@idx.example/api?t=search&apikey=SECRET123&q=heron"
    safe = redact_url(url)
    assert "SECRET123" not in safe and "pw" not in safe
    assert "q=heron" in safe and "t=search" in safe


# ===================================================================================
# Politeness: robots.txt, retries, per-host concurrency; cookies, proxies, DNS pinning.
# ===================================================================================



def settings(**kw) -> CrawlSettings:
    base = dict(host_delay=0.001, request_timeout=2, connect_timeout=2, retries=2,
                max_response_bytes=1 << 20)
    return CrawlSettings(**{**base, **kw})


def run(fn, *, crawl: CrawlSettings | None = None, **fetcher_kw):
    """Run `await fn(fetcher)` with a fresh Fetcher whose backoff base is 10 ms."""
    fetcher_kw.setdefault("backoff_base", 0.01)

    async def go():
        async with Fetcher(crawl or settings(), **fetcher_kw) as f:
            return await fn(f)

    return asyncio.run(go())


def outcome(coro_fn):
    """'ok' or the exception type name, so tests can compare whole tables of URLs."""
    async def wrapped():
        try:
            await coro_fn()
            return "ok"
        except FetchError as exc:
            return type(exc).__name__
    return wrapped


ROBOTS = b"""\
User-agent: *
Disallow: /private
Allow: /private/open$

User-agent: weightwatch
Disallow: /*.json$
Disallow: /search?q=
Allow: /search?q=ok

User-agent: otherbot
Disallow: /
"""


# --- robots.txt -------------------------------------------------------------------------


def test_robots_groups_and_wildcards(serve):
    """The most specific group applies (not '*' as well); '*' and '$' patterns; the
    longest match wins between Allow and Disallow; the product token picks the group."""
    srv = serve({"/robots.txt": (200, ROBOTS)}, default=(200, b"page"))
    cases = {
        ("weightwatch/0.1 (+https://x)", "/private/x"): "ok",  # '*' group does not apply
        ("weightwatch/0.1 (+https://x)", "/data.json"): "RobotsDisallowed",
        ("weightwatch/0.1 (+https://x)", "/data.json?x=1"): "ok",  # '$' anchors the end
        ("weightwatch/0.1 (+https://x)", "/search?q=bad"): "RobotsDisallowed",
        ("weightwatch/0.1 (+https://x)", "/search?q=ok"): "ok",  # longer Allow wins
        ("curious/1", "/private/x"): "RobotsDisallowed",
        ("curious/1", "/private/open"): "ok",
        ("curious/1", "/private/open/more"): "RobotsDisallowed",
        ("curious/1", "/data.json"): "ok",
        ("otherbot/2.0", "/anything"): "RobotsDisallowed",
    }

    async def go(f):
        got = {}
        for (ua, path), _ in cases.items():
            t = target(srv.base, user_agent=ua)
            got[(ua, path)] = await outcome(lambda: f.get(srv.base + path, t))()
        return got

    assert run(go) == cases
    fetched = srv.paths()
    assert sorted(fetched) == sorted(path for (_ua, path), v in cases.items() if v == "ok"), \
        "a disallowed URL never reaches the server"
    assert srv.count("/robots.txt") == 1, "one robots.txt per origin, shared by targets"


def test_robots_disallow_message_is_one_line_and_redacted(serve):
    srv = serve({"/robots.txt": (200, b"User-agent: *\nDisallow: /api\n")}, default=(200, b"x"))
    with pytest.raises(RobotsDisallowed) as info:
        run(lambda f: f.get(srv.base + "/api?apikey=SECRET1&q=heron", target(srv.base)))
    message = str(info.value)
    assert "\n" not in message and "SECRET1" not in message
    assert f"{srv.base}/api?apikey=REDACTED&q=heron" in message
    assert srv.count("/api") == 0


def test_robots_fetched_once_per_origin(serve):
    a = serve({"/robots.txt": (200, b"User-agent: *\nDisallow:\n")}, default=(200, b"a"))
    b = serve(default=(200, b"b"))  # no robots.txt: 404

    async def go(f):
        ta, tb = target(a.base), target(b.base, name="other")
        await asyncio.gather(*(f.get(f"{a.base}/p{i}", ta) for i in range(6)),
                             *(f.get(f"{b.base}/p{i}", tb) for i in range(6)))
        await f.get(a.base + "/again", ta)

    run(go)
    assert a.count("/robots.txt") == 1 and b.count("/robots.txt") == 1
    assert len(a.requests) == 8 and len(b.requests) == 7


def test_obey_robots_false_fetches_anyway_and_logs_once(serve):
    srv = serve({"/robots.txt": (200, b"User-agent: *\nDisallow: /\n")}, default=(200, b"x"))
    rude = Target(name="rude", kind="forum", url=srv.base, interval=60, jitter=0,
                  allow_private=True, obey_robots=False)
    polite = target(srv.base, name="polite")

    async def go(f):
        assert (await f.get(srv.base + "/a", rude)).body == b"x"
        assert (await f.get(srv.base + "/b", rude)).body == b"x"
        with pytest.raises(RobotsDisallowed):
            await f.get(srv.base + "/c", polite)

    with capture_logs() as logs:
        run(go)
    ignored = [e for e in logs if e["event"] == "robots_ignored"]
    assert ignored == [{"event": "robots_ignored", "target": "rude", "log_level": "warning"}]
    assert srv.count("/a") == 1 and srv.count("/b") == 1 and srv.count("/c") == 0


@pytest.mark.parametrize("status,allowed", [
    (404, True), (410, True), (401, True), (403, True),
    (500, False), (503, False), (429, False),
])
def test_robots_status_rules(serve, status, allowed):
    """4xx (except 429): no rules. 5xx and 429: the host counts as disallowed."""
    srv = serve({"/robots.txt": (status, b"User-agent: *\nDisallow: /\n")}, default=(200, b"x"))

    async def go(f):
        t = target(srv.base)
        return await outcome(lambda: f.get(srv.base + "/page", t))(), \
            await outcome(lambda: f.get(srv.base + "/page2", t))()

    result = run(go, crawl=settings(retries=0))
    assert result == (("ok", "ok") if allowed else ("RobotsDisallowed", "RobotsDisallowed"))
    assert srv.count("/robots.txt") == 1, "the verdict is cached, good or bad"
    assert srv.count("/page") == (1 if allowed else 0)


def test_robots_5xx_is_retried_later(serve):
    """A disallow from a failing robots.txt lasts `robots_error_ttl`, then robots is re-read."""
    srv = serve({"/robots.txt": lambda r: (500, b"") if r.n == 0 else (404, b"")},
                default=(200, b"x"))

    async def go(f):
        t = target(srv.base)
        with pytest.raises(RobotsDisallowed, match=r"unavailable \(HTTP 500\)"):
            await f.get(srv.base + "/page", t)
        return (await f.get(srv.base + "/page", t)).body

    assert run(go, crawl=settings(retries=0), robots_error_ttl=0) == b"x"
    assert srv.count("/robots.txt") == 2 and srv.count("/page") == 1


def test_robots_of_an_unreachable_host_reports_the_host():
    """A refused connection is the host's error, not "robots.txt unavailable" (issue 17),
    and is not remembered as a disallow: the next request asks the host again."""
    port = free_port()

    async def go(f):
        for _ in range(2):
            with pytest.raises(Unreachable, match=rf"^http://127\.0\.0\.1:{port} is unreachable: "):
                await f.get(f"http://127.0.0.1:{port}/x", target("http://127.0.0.1/"))

    run(go, crawl=settings(retries=0))


def test_robots_over_512kb_is_truncated_not_refused(serve):
    big = b"User-agent: *\nDisallow: /secret\n" + b"# padding\n" * 70_000  # ~700 KB
    srv = serve({"/robots.txt": (200, big)}, default=(200, b"x"))

    async def go(f):
        t = target(srv.base)
        assert (await f.get(srv.base + "/open", t)).body == b"x"
        with pytest.raises(RobotsDisallowed):
            await f.get(srv.base + "/secret/a", t)

    run(go)


def test_crawl_delay_spaces_request_starts(serve):
    srv = serve({"/robots.txt": (200, b"User-agent: *\nCrawl-delay: 0.2\n")}, default=(200, b"x"))

    async def go(f):
        t = target(srv.base)
        await asyncio.gather(*(f.get(f"{srv.base}/p", t) for _ in range(3)))

    run(go, crawl=settings(host_delay=0.001, host_concurrency=3))
    times = srv.times("/p")
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.15, gaps  # tolerant lower bound on a 0.2 s Crawl-delay


def test_crawl_delay_is_capped_at_60s(serve):
    srv = serve({"/robots.txt": (200, b"User-agent: *\nCrawl-delay: 1000\n")}, default=(200, b"x"))

    async def go(f):
        await f.get(srv.base + "/p", target(srv.base))
        return f.host_spacing("127.0.0.1")

    assert run(go) == 60.0


# --- retries ----------------------------------------------------------------------------


def test_retry_on_503_then_success(serve):
    srv = serve({"/flaky": lambda r: (503, b"busy") if r.n < 2 else (200, b"done")})
    with capture_logs() as logs:
        r = run(lambda f: f.get(srv.base + "/flaky?apikey=SECRET2", target(srv.base)))
    assert r.body == b"done" and srv.count("/flaky") == 3
    retries = [e for e in logs if e["event"] == "fetch_retry"]
    assert [(e["attempt"], e["reason"]) for e in retries] == [(1, "HTTP 503"), (2, "HTTP 503")]
    assert all(0 <= e["delay"] <= 0.01 * 2 ** (e["attempt"] - 1) for e in retries)
    assert "SECRET2" not in repr(logs)
    assert retries[0]["url"] == f"{srv.base}/flaky?apikey=REDACTED"


def test_503_retries_exhausted_is_one_line_error(serve):
    srv = serve({"/down": (503, b"busy")})
    with pytest.raises(FetchError) as info:
        run(lambda f: f.get(srv.base + "/down", target(srv.base)))
    assert str(info.value) == f"HTTP 503 from {srv.base}/down (after 3 attempts)"
    assert srv.count("/down") == 3


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_429_honours_retry_after(serve, retry_after):
    srv = serve({"/limited": lambda r: (429, b"slow down", {"Retry-After": retry_after})
                 if r.n == 0 else (200, b"ok")})
    with capture_logs() as logs:
        # A 1 s backoff base: were Retry-After ignored, the logged delay would be random.
        r = run(lambda f: f.get(srv.base + "/limited", target(srv.base)), backoff_base=1.0)
    assert r.body == b"ok" and srv.count("/limited") == 2
    [retry] = [e for e in logs if e["event"] == "fetch_retry"]
    assert retry["reason"] == "HTTP 429" and retry["delay"] == 0


# Ids fixed, not the date: pytest-xdist's workers must collect the same test names.
@pytest.mark.parametrize("retry_after", [
    "3600", format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)],
    ids=["seconds", "http-date"])
def test_retry_after_over_the_cap_gives_up_without_sleeping(serve, retry_after):
    srv = serve({"/limited": (429, b"", {"Retry-After": retry_after})})
    with capture_logs() as logs, pytest.raises(FetchError) as info:
        run(lambda f: f.get(srv.base + "/limited", target(srv.base)),
            crawl=settings(retry_after_cap=5))
    assert "Retry-After of" in str(info.value) and "over the retry_after_cap of 5s" in str(info.value)
    assert srv.count("/limited") == 1
    assert not [e for e in logs if e["event"] == "fetch_retry"]


def test_no_retry_on_404(serve):
    srv = serve()
    with pytest.raises(FetchError) as info:
        run(lambda f: f.get(srv.base + "/missing", target(srv.base)))
    assert str(info.value) == f"HTTP 404 from {srv.base}/missing"
    assert srv.count("/missing") == 1


def test_no_retry_on_size_cap(serve):
    srv = serve({"/big": (200, b"x" * 5000)})
    with pytest.raises(FetchError, match="cap"):
        run(lambda f: f.get(srv.base + "/big", target(srv.base), max_bytes=100))
    assert srv.count("/big") == 1


def test_connection_refused_is_retried_then_fails():
    url = f"http://127.0.0.1:{free_port()}/x"
    with capture_logs() as logs, pytest.raises(FetchError, match=r"after 3 attempts") as info:
        run(lambda f: f.get(url, target(url, obey_robots=False)))
    assert str(info.value).startswith(f"cannot fetch {url}: ")
    assert [e["attempt"] for e in logs if e["event"] == "fetch_retry"] == [1, 2]


def test_timeout_is_retried(serve):
    def stall_once(request):
        if request.n == 0:
            time.sleep(0.6)
        return 200, b"eventually"

    srv = serve({"/stall": stall_once})
    with capture_logs() as logs:
        r = run(lambda f: f.get(srv.base + "/stall", target(srv.base, obey_robots=False)),
                crawl=settings(request_timeout=0.2))
    assert r.body == b"eventually" and srv.count("/stall") == 2
    assert [e["reason"] for e in logs if e["event"] == "fetch_retry"] == ["timeout"]


def test_blocked_address_is_not_retried():
    calls = []

    async def resolver(host, port):
        calls.append(host)
        return ["10.0.0.5"]

    with pytest.raises(BlockedAddress):
        run(lambda f: f.get("http://intranet.test/", target("http://intranet.test/", allow_private=False)),
            resolver=resolver)
    assert calls == ["intranet.test"]


def test_parse_retry_after():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now=now) == 60
    assert parse_retry_after("Tue, 31 Dec 2024 00:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None and parse_retry_after(None) is None


# --- per-host concurrency -------------------------------------------------------------


def test_host_concurrency_limit(serve):
    def slow(request):
        time.sleep(0.1)
        return 200, b"x"

    srv = serve({"/slow": slow})

    async def go(f):
        t = target(srv.base, obey_robots=False)
        return await asyncio.gather(*(f.get(srv.base + "/slow", t) for _ in range(6)))

    assert len(run(go, crawl=settings(host_concurrency=2))) == 6
    assert srv.count("/slow") == 6
    assert srv.max_active == 2  # never more than 2, and the limit is used, not serialised


# --- headers, cookies, conditional GET -----------------------------------------------


def test_cookies_sent_merged_and_never_collected(serve):
    srv = serve({
        "/echo": lambda r: (200, (r.headers.get("cookie") or "-").encode()),
        "/set": (200, b"x", {"Set-Cookie": "tracker=1; Path=/"}),
    })

    async def go(f):
        with_cookies = target(srv.base, cookies={"session": "abc", "consent": "yes"},
                              headers={"Cookie": "pre=1"})
        plain = target(srv.base, name="plain")
        a = await f.get(srv.base + "/echo", with_cookies)
        await f.get(srv.base + "/set", plain)
        b = await f.get(srv.base + "/echo", plain)
        return a.body, b.body

    assert run(go) == (b"pre=1; session=abc; consent=yes", b"-")


def test_conditional_get_helpers(serve):
    def page(request):
        if request.headers.get("if-none-match") == '"v1"':
            return 304, b""
        return 200, b"body", {"ETag": '"v1"', "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT"}

    srv = serve({"/feed": page})

    async def go(f):
        t = target(srv.base)
        first = await f.get(srv.base + "/feed", t)
        again = await f.get(srv.base + "/feed", t, headers={"If-None-Match": first.etag,
                                                           "If-Modified-Since": first.last_modified})
        return first, again

    first, again = run(go)
    assert first.etag == '"v1"' and first.last_modified == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert not first.not_modified and again.not_modified and again.etag is None


# --- proxies ------------------------------------------------------------------------


def forward(request):
    """A forward proxy's answer: replay the absolute-URI GET it was sent, with urllib."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request.path, timeout=5) as upstream:
            return upstream.status, upstream.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_http_proxy_carries_the_targets_requests(serve):
    srv = serve({"/ok": lambda r: (200, r.headers.get("user-agent", "").encode())})
    proxy = serve(default=forward)  # every request is one to pass on
    r = run(lambda f: f.get(srv.base + "/ok", target(srv.base, proxy=proxy.base)))
    assert r.body.startswith(b"Python-urllib/"), "the origin was reached by the proxy"
    assert [req.path for req in proxy.requests] == [srv.base + "/robots.txt", srv.base + "/ok"]


def test_proxy_credentials_never_shown():
    url = "http://127.0.0.1:9/x"
    proxy = f"http://alice:hunter2@127.0.0.1:{free_port()}"
    with capture_logs() as logs, pytest.raises(FetchError) as info:
        run(lambda f: f.get(url, target(url, proxy=proxy, obey_robots=False)),
            crawl=settings(retries=1))
    assert "hunter2" not in str(info.value) and "alice" not in str(info.value)
    assert "hunter2" not in repr(logs)


class Socks5Proxy:
    """A minimal SOCKS5 server (no auth, CONNECT only) that records the address it was asked
    for and connects every request to one upstream port on loopback."""

    def __init__(self, upstream_port: int):
        self.requests: list[tuple[int, str, int]] = []
        proxy = self

        class H(socketserver.BaseRequestHandler):
            def handle(self):
                s = self.request

                def recv(n):
                    buf = b""
                    while len(buf) < n:
                        chunk = s.recv(n - len(buf))
                        if not chunk:
                            raise ConnectionError("client went away")
                        buf += chunk
                    return buf

                _ver, nmethods = recv(2)
                recv(nmethods)
                s.sendall(b"\x05\x00")
                _ver, _cmd, _rsv, atyp = recv(4)
                if atyp == 1:
                    host = socket.inet_ntoa(recv(4))
                elif atyp == 3:
                    host = recv(recv(1)[0]).decode()
                else:
                    host = socket.inet_ntop(socket.AF_INET6, recv(16))
                port = int.from_bytes(recv(2), "big")
                proxy.requests.append((atyp, host, port))
                upstream = socket.create_connection(("127.0.0.1", upstream_port))
                s.sendall(b"\x05\x00\x00\x01" + b"\x00" * 6)
                try:
                    while True:
                        ready, _, _ = select.select([s, upstream], [], [], 5)
                        if not ready:
                            return
                        for r in ready:
                            data = r.recv(65536)
                            if not data:
                                return
                            (upstream if r is s else s).sendall(data)
                finally:
                    upstream.close()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_onion_refused_without_a_socks_proxy():
    calls = []

    async def resolver(host, port):
        calls.append(host)
        return ["93.184.216.34"]

    url = "http://leaks2hxv3examplexyz.onion/board"
    for proxy in (None, "http://127.0.0.1:3128"):
        with pytest.raises(BlockedAddress, match=r"\.onion hosts are reached only through a socks5"):
            run(lambda f: f.get(url, target(url, allow_private=False, proxy=proxy)), resolver=resolver)
    assert calls == [], "the .onion name never went to the local resolver"


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_proxy_resolves_remotely(serve, scheme):
    """The .onion name travels to the proxy as a name (SOCKS5 address type 3), and the local
    resolver is never asked, with either spelling of the scheme."""
    srv = serve({"/ok": lambda r: (200, r.headers.get("host", "").encode())})
    socks = Socks5Proxy(srv.port)
    calls = []

    async def resolver(host, port):
        calls.append(host)
        return ["127.0.0.1"]

    url = "http://leaks2hxv3examplexyz.onion/ok"
    try:
        r = run(lambda f: f.get(url, target(url, allow_private=False,
                                            proxy=f"{scheme}://127.0.0.1:{socks.port}")),
                resolver=resolver)
    finally:
        socks.close()
    assert r.body == b"leaks2hxv3examplexyz.onion"
    assert set(socks.requests) == {(3, "leaks2hxv3examplexyz.onion", 80)}
    assert srv.count("/robots.txt") == 1, "robots.txt went through the proxy too"
    assert calls == []


@pytest.mark.parametrize("url", ["http://10.0.0.1/x", "http://[::ffff:127.0.0.1]/x",
                                 "http://localhost/x", "ftp://example.onion/"])
def test_socks_targets_still_refuse_private_literals(url):
    with pytest.raises(BlockedAddress):
        run(lambda f: f.get(url, target(url, allow_private=False,
                                        proxy="socks5h://127.0.0.1:9")))


# --- DNS pinning ----------------------------------------------------------------------


def test_pinned_transport_connects_to_the_vetted_address(serve):
    """`.invalid` never resolves: the request can only succeed by connecting to the address
    the vetting step returned, while the Host header keeps the name."""
    srv = serve({"/host": lambda r: (200, r.headers.get("host", "").encode())})
    asked = []

    async def vet(host, port):
        asked.append((host, port))
        return ["127.0.0.1"]

    async def go():
        async with httpx.AsyncClient(transport=PinnedTransport(vet)) as client:
            return (await client.get(f"http://rebind.invalid:{srv.port}/host")).content

    assert asyncio.run(go()) == f"rebind.invalid:{srv.port}".encode()
    assert asked == [("rebind.invalid", srv.port)]


def test_pinned_transport_refusal_never_connects(serve):
    srv = serve(default=(200, b"secret"))

    async def vet(host, port):
        raise BlockedAddress(f"refused {host}")

    async def go():
        async with httpx.AsyncClient(transport=PinnedTransport(vet)) as client:
            await client.get(f"{srv.base}/x")

    with pytest.raises(BlockedAddress):
        asyncio.run(go())
    assert srv.requests == []


def test_fetcher_pins_what_it_checked(serve, monkeypatch):
    """End to end through the Fetcher, for a target that does not allow private addresses.
    Loopback is made to count as public here (tests cannot reach a real public address);
    the resolver is asked once, and the connection goes to its answer although the name
    does not exist in DNS."""
    monkeypatch.setattr(fetch_module, "is_forbidden_address", lambda address: False)
    srv = serve({"/ok": lambda r: (200, r.headers.get("host", "").encode())})
    calls = []

    async def resolver(host, port):
        calls.append(host)
        return ["127.0.0.1"]

    url = f"http://pinned.invalid:{srv.port}/ok"
    r = run(lambda f: f.get(url, target(url, allow_private=False, obey_robots=False)),
            resolver=resolver)
    assert r.body == f"pinned.invalid:{srv.port}".encode()
    assert calls == ["pinned.invalid"]


def test_a_hosts_answer_is_reused_for_the_dns_ttl_and_a_failure_is_not(serve, monkeypatch):
    """One lookup serves a host's requests for `dns_ttl` seconds (a lookup per request is a
    thread hand-over and a resolver round trip each); a failed lookup is asked again, and
    a remembered answer is still checked like a fresh one."""
    monkeypatch.setattr(fetch_module, "is_forbidden_address", lambda address: False)
    srv = serve({"/ok": lambda r: (200, b"ok")})
    asked: list[str] = []
    answers = iter([FetchError("cannot resolve cached.invalid: temporary failure"),
                    ["127.0.0.1"], ["127.0.0.1"], ["127.0.0.1"]])

    async def resolver(host, port):
        asked.append(host)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    url = f"http://cached.invalid:{srv.port}/ok"
    t = target(url, allow_private=False, obey_robots=False)

    async def go(f):
        with pytest.raises(FetchError, match="temporary failure"):
            await f.get(url, t)
        bodies = [(await f.get(url, t)).body for _ in range(3)]
        assert len(asked) == 2, "the failure, then one answer for three requests"
        await asyncio.sleep(0.6)  # the answer went stale: the next request asks again
        await f.get(url, t)
        monkeypatch.setattr(fetch_module, "is_forbidden_address", lambda address: True)
        with pytest.raises(BlockedAddress):  # remembered, and still refused once forbidden
            await f.get(url, t)
        return bodies

    bodies = run(go, resolver=resolver, crawl=settings(retries=0), dns_ttl=0.5)
    assert bodies == [b"ok"] * 3
    assert asked == ["cached.invalid"] * 3


def test_rebinding_resolver_second_answer_is_never_used():
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def resolver(host, port):
        return next(answers)

    async def go(f):
        t = target("http://rebind.test/", allow_private=False)
        assert await f.check_url("http://rebind.test/", t) == ["93.184.216.34"]
        return await f.vetted_addresses("rebind.test", 80)

    assert run(go, resolver=resolver) == ["93.184.216.34"]


def test_unvetted_host_is_checked_at_connect_time():
    async def resolver(host, port):
        return ["127.0.0.1"]

    with pytest.raises(BlockedAddress, match="sneaky.test resolves to 127.0.0.1"):
        run(lambda f: f.vetted_addresses("sneaky.test", 80), resolver=resolver)


def test_product_token():
    assert product_token("weightwatch/0.1 (+https://example.org)") == "weightwatch"
    assert product_token("Mozilla/5.0 (compatible; probe)") == "Mozilla"
    assert product_token("") == "*"


def test_pinned_https_keeps_the_name_for_sni_and_certificate(serve, tmp_path):
    """Over TLS the pinned connection still says `pinned.invalid` in SNI, and the
    certificate is verified for that name (not for the address connected to)."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=pinned.invalid",
                    "-addext", "subjectAltName=DNS:pinned.invalid",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = serve({"/host": lambda r: (200, r.headers.get("host", "").encode())})
    names = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)
    srv.server.socket = server_ctx.wrap_socket(srv.server.socket, server_side=True)

    async def vet(host, port):
        return ["127.0.0.1"]

    async def go():
        transport = PinnedTransport(vet, ssl_context=ssl.create_default_context(cafile=str(cert)))
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.get(f"https://pinned.invalid:{srv.port}/host")).content

    assert asyncio.run(go()) == f"pinned.invalid:{srv.port}".encode()
    assert names == ["pinned.invalid"]


def test_robots_fetch_is_guarded_like_any_request():
    """robots.txt redirecting to the metadata address: the hop is refused, the host counts
    as disallowed, and neither the private address nor the page is requested."""
    requested = []
    transport, resolver = to_metadata(requested)
    with pytest.raises(RobotsDisallowed, match="metadata.test resolves to 169.254.169.254"):
        run(lambda f: f.get("http://public.test/page", target("http://public.test/", allow_private=False)),
            transport=transport, resolver=resolver, crawl=settings(retries=0))
    assert requested == ["http://public.test/robots.txt"]


def test_credentials_are_not_sent_across_origins_on_redirect():
    """A redirect to another origin must not carry the target's tokens or cookies."""
    seen: dict[str, dict[str, str]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = dict(request.headers)
        if request.url.host == "hub.test":
            return httpx.Response(302, headers={"Location": "http://collector.test/steal"})
        return httpx.Response(200, text="ok")

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    t = target("http://hub.test/api", allow_private=False, obey_robots=False,
               headers={"Authorization": "Bearer SECRET-TOKEN", "X-Api-Key": "K"},
               cookies={"session": "S3CR3T"})

    async def go():
        async with Fetcher(CrawlSettings(host_delay=0.001, retries=0),
                           transport=httpx.MockTransport(handler), resolver=resolver) as f:
            return await f.get("http://hub.test/api", t,
                               headers={"Range": "bytes=0-99", "If-Range": '"v1"'})

    assert asyncio.run(go()).body == b"ok"
    assert seen["hub.test"]["authorization"] == "Bearer SECRET-TOKEN"
    leaked = seen["collector.test"]
    assert "authorization" not in leaked and "cookie" not in leaked and "x-api-key" not in leaked
    assert leaked["user-agent"] == seen["hub.test"]["user-agent"]
    # Which bytes were asked for is no credential: a hub's file redirects to its CDN, and a
    # ranged read must stay ranged there.
    assert (leaked["range"], leaked["if-range"]) == ("bytes=0-99", '"v1"')


def test_fetch_error_carries_the_status(server):
    with pytest.raises(FetchError) as info:
        fetch(server + "/missing")
    assert info.value.status == 404
