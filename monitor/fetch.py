"""The one way weightwatch talks to the network: polite, bounded and SSRF-safe.

Crawled pages are hostile. A page can redirect into the private network, answer forever,
or send gigabytes; a URL can carry an API key. So every request here: resolves its host and
refuses link-local, metadata and other never-legitimate addresses always, and private and
loopback ones unless the target opted in, on every redirect hop, and then connects to the
very address it checked (no second DNS lookup for a rebinding server to answer
differently); streams the body raw and decodes it itself, stopping at a size cap on the
bytes as sent and as decoded (a compression bomb never expands past it); honours connect
and read timeouts and a deadline for the whole request; obeys robots.txt; keeps at most
`host_concurrency` requests in flight per host and spaces their starts by `host_delay` (or
the site's Crawl-delay); retries transient failures with jittered exponential backoff,
honouring Retry-After; and logs URLs with their secrets redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import ipaddress
import random
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
import structlog
from protego import Protego

from monitor import runstats
from monitor.config import CrawlSettings, Target
from monitor.http1 import POOL_LIMITS, AsyncioBackend, Http11Transport, TcpBackend
from monitor.http1 import default_ssl_context as ssl_context
from monitor.models import utcnow
from monitor.redact import SECRET_PARAMS as SECRET_PARAMS
from monitor.redact import redact_url as redact_url

log = structlog.get_logger("weightwatch.fetch")

REDIRECT_CODES = {301, 302, 303, 307, 308}
# What Scrapy retries: transient server trouble, timeouts at a gateway, rate limiting.
RETRY_CODES = {408, 429, 500, 502, 503, 504, 522, 524}
RETRY_AFTER_CODES = {429, 503}
MAX_BACKOFF = 60.0
# robots.txt: Google reads the first 500 KiB and ignores the rest; so do we (512 KB).
ROBOTS_MAX_BYTES = 512_000
ROBOTS_TTL = 24 * 3600.0
ROBOTS_ERROR_TTL = 600.0  # 5xx / network error: assume disallow-all, ask again after this
MAX_CRAWL_DELAY = 60.0
# How long a host's vetted addresses are used before it is looked up again, and for how
# many hosts: a lookup per request cost a thread hand-over and a resolver round trip each
# (Scrapy caches answers for good; the connection is pinned to the checked answer anyway).
DNS_TTL = 60.0
DNS_CACHE_HOSTS = 4096
# What `allow_private = true` opens, and nothing else: networks a local service (a demo
# world, a Jackett on the LAN or a tailnet) legitimately sits on.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",                              # loopback
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",       # RFC 1918
    "fc00::/7",                                            # unique local (RFC 4193)
    "100.64.0.0/10",                                       # CGNAT, where tailnets live
))
# Cloud metadata and platform endpoints that a default-deny of link-local does not catch
# because they sit in the ranges above or in public space. 169.254.169.254 and the rest
# of 169.254/16 (AWS, GCP, Azure, Oracle, OpenStack, ECS 169.254.170.2, Tencent
# 169.254.0.23...) are link-local and never open anyway.
METADATA_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "100.100.100.200/32",      # Alibaba Cloud metadata (inside CGNAT)
    "168.63.129.16/32",        # Azure WireServer (public space)
    "192.0.0.192/32",          # Oracle Cloud Classic metadata (which Python counts global)
    "fd00:ec2::/32",           # AWS IPv6 services: IMDS ::254, DNS ::253, NTP ::123, EKS ::23
    "fd20:ce::254/128",        # Google Cloud metadata on IPv6
    "fd00:c1::a9fe:a9fe/128",  # Oracle Cloud metadata on IPv6
    "fd00:42::42/128",         # Scaleway metadata on IPv6
    "fd00:a9fe:a9fe::1/128",   # Akamai (Linode) metadata on IPv6
))
# IPv6 prefixes that carry an IPv4 address in their low 32 bits to a translator (NAT64).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(Exception):
    """A request that failed; the message is one line, safe to log (URL redacted).

    `status` is the HTTP status when the server answered with an error, else None;
    `headers` that answer's headers (an API states its rate limit's reset there)."""

    def __init__(self, message: str, *, status: int | None = None,
                 headers: httpx.Headers | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


class BlockedAddress(FetchError):
    """The URL points into a network the target may not reach."""


class RobotsDisallowed(FetchError):
    """robots.txt forbids the URL (or could not be read, which counts as forbidding it)."""


class Unreachable(FetchError):
    """The host could not be reached on any attempt (refused, reset, timed out)."""


class _Transient(FetchError):
    """A failure worth retrying (timeout, connection trouble); `reason` is short."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Response:
    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    fetched_at: str = field(default_factory=utcnow)
    # (url, status, headers) of each redirect followed to get here: a model hub states a
    # file's digest on its redirect to the CDN (X-Linked-Etag), not on the CDN's answer.
    redirects: list[tuple[str, int, httpx.Headers]] = field(default_factory=list)

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def etag(self) -> str | None:
        """The ETag to send back as If-None-Match next time (None if the server sent none)."""
        etag: str | None = self.headers.get("etag")
        return etag

    @property
    def last_modified(self) -> str | None:
        """The Last-Modified value to send back as If-Modified-Since next time."""
        modified: str | None = self.headers.get("last-modified")
        return modified

    def text(self) -> str:
        charset = httpx.Response(200, headers=self.headers).charset_encoding or "utf-8"
        return self.body.decode(charset, errors="replace")


def _same_origin_key(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


@functools.lru_cache(maxsize=4096)  # every request checks its host's addresses again
def address_class(address: str) -> tuple[str, str]:
    """Where an address may be reached from: `("public", "")` for any target,
    `("private", what)` only for a target with `allow_private`, `("never", what)` for no
    target at all. This is the one place the never-allowed rule lives.

    Never: cloud metadata endpoints (METADATA_NETWORKS, and link-local, which holds
    169.254.169.254), unspecified, multicast, broadcast, reserved and documentation ranges,
    and everything else that is neither public nor in PRIVATE_NETWORKS. An IPv4-mapped
    address (::ffff:a.b.c.d) is the IPv4 address it maps to, as the socket connects to
    that; 6to4, NAT64 and Teredo addresses hand the IPv4 address they embed to a relay,
    so they are public when that address is, and never otherwise.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in METADATA_NETWORKS):
        return "never", "a cloud metadata address"
    if any(ip in net for net in PRIVATE_NETWORKS):
        return "private", "loopback or private"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = (ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
                                     if ip in _NAT64 else None)
                    or (ip.teredo[1] if ip.teredo else None))
        if embedded is not None:
            kind, what = address_class(str(embedded))
            if kind == "public":
                return kind, what
            return "never", f"an IPv6 relay address embedding {embedded}"
    if ip.is_link_local:
        return "never", "link-local, where cloud metadata lives"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or not ip.is_global:
        return "never", "unspecified, multicast, broadcast, reserved or special-purpose"
    return "public", ""


def is_forbidden_address(address: str) -> bool:
    """True for any address a target without `allow_private` must not be steered to."""
    return address_class(address)[0] != "public"


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return None


def is_onion(host: str) -> bool:
    return host.rstrip(".").lower().endswith(".onion")


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}: {exc.strerror}") from None
    except UnicodeError:
        raise FetchError(f"cannot resolve {host}: not a valid host name") from None
    return [str(info[4][0]) for info in infos]  # an IP address for SOCK_STREAM


_PRIVATE_HINT = "(set allow_private = true on a target meant to be local)"


async def check_destination(url: str, *, allow_private: bool,
                            resolver: Resolver = system_resolver,
                            remote_dns: bool = False) -> list[str]:
    """Refuse non-HTTP schemes and hosts that resolve to forbidden addresses.

    Never-allowed addresses (`address_class`) are refused whatever `allow_private` says;
    private ones only when it is false. Returns the addresses that were checked, which the
    connection is then pinned to (empty only with `remote_dns`, where a SOCKS proxy
    resolves the name: the name is not looked up here, since the proxy's answer may differ
    and a `.onion` name has none, so only IP literals, and `localhost` unless
    `allow_private`, can be refused).
    `.onion` hosts are refused unless `remote_dns`: they exist only behind Tor, and looking
    them up locally would leak the name to the local resolver.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedAddress(f"refused {parts.scheme or 'relative'} URL {redact_url(url)}: "
                             f"only http and https are fetched")
    try:
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BlockedAddress(f"refused {redact_url(url)}: invalid host or port") from None
    if not host:
        raise BlockedAddress(f"refused {redact_url(url)}: no host")
    if is_onion(host) and not remote_dns:
        raise BlockedAddress(f"refused {redact_url(url)}: .onion hosts are reached only through "
                             f"a socks5:// or socks5h:// proxy set on the target")
    literal = _ip_literal(host)
    if literal is not None:
        _refuse_unless_reachable(url, host, literal, allow_private)
        return [literal]
    if remote_dns:
        # The proxy resolves the name, so only IP literals (above) can be checked here.
        if not allow_private and (host.rstrip(".") == "localhost"
                                  or host.rstrip(".").endswith(".localhost")):
            raise BlockedAddress(f"refused {redact_url(url)}: {host} names the proxy's own "
                                 f"loopback {_PRIVATE_HINT}")
        return []
    addresses = await resolver(host, port)
    if not addresses:
        raise BlockedAddress(f"refused {redact_url(url)}: {host} resolves to no address")
    for address in addresses:
        _refuse_unless_reachable(url, host, address, allow_private)
    return addresses


def _refuse_unless_reachable(url: str, host: str, address: str, allow_private: bool) -> None:
    """BlockedAddress unless a target with this `allow_private` may connect to `address`."""
    kind, what = address_class(address)
    if kind == "never":
        raise BlockedAddress(f"refused {redact_url(url)}: {host} resolves to {address}, a "
                             f"private or reserved address that no target may reach, "
                             f"allow_private or not ({what})")
    if not allow_private and is_forbidden_address(address):
        raise BlockedAddress(f"refused {redact_url(url)}: {host} resolves to {address}, a "
                             f"private or reserved address {_PRIVATE_HINT}")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date); None if
    absent or unreadable. A date in the past means 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 1e9)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def product_token(user_agent: str) -> str:
    """`weightwatch` from `weightwatch/0.1 (+https://...)`: what robots.txt groups name."""
    match = re.match(r"\s*([^\s/;()]+)", user_agent or "")
    return match.group(1) if match else "*"


def normalise_proxy(proxy: str) -> str:
    """The proxy URL as httpx takes it. `socks5h://` (the curl spelling for "resolve at the
    proxy") becomes `socks5://`: httpx 0.28 accepts both and treats them alike (see
    `Fetcher`), and older releases reject `socks5h`."""
    if proxy.lower().startswith("socks5h://"):
        return "socks5://" + proxy[len("socks5h://"):]
    return proxy


def _is_socks(proxy: str | None) -> bool:
    return proxy is not None and proxy.lower().startswith(("socks5://", "socks5h://"))


def _secrets_of(proxy: str | None) -> list[str]:
    if not proxy:
        return []
    parts = urlsplit(proxy)
    return [s for s in (parts.password, parts.username) if s]


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "REDACTED")
    return text


# --- content codings -----------------------------------------------------------------

# Content-Encoding names we undo -> the format behind them. `deflate` is sniffed: RFC 9110
# means the zlib format, but servers have long sent raw deflate too, and httpx takes both.
_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
ACCEPT_ENCODING = "gzip, deflate"
# Real servers send one coding; a proxy that compresses again makes two. More is an attack.
MAX_CODINGS = 2
# Output of one inflate call: what each layer of the chain holds at a time.
DECODE_CHUNK = 64 * 1024


class DecodingError(ValueError):
    """A coding we do not undo, too many of them, or a stream that does not inflate."""


class OverCap(Exception):
    """A stage of the decoder chain produced more than the cap allows."""


class _Inflater:
    """One gzip or deflate layer, inflating DECODE_CHUNK bytes at a time (zlib's
    `max_length` and `unconsumed_tail`), so what a small input expands to is produced
    piece by piece as the next stage asks for it, never all at once."""

    def __init__(self, coding: str, cap: int | None):
        self.coding = coding
        self._cap = cap            # output stops once this much is out (None: no cap)
        self._produced = 0
        self._z: zlib._Decompress | None = None
        self._head = b""           # deflate: first bytes kept until the format is known
        self._started = False      # a gzip member or deflate stream has begun
        self._ended = False        # deflate: its stream is complete

    def feed(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for data in pieces:
            yield from self._inflate(data)

    def _open(self, data: bytes) -> tuple[bytes, zlib._Decompress] | None:
        """Start a stream on `data`: the bytes to inflate and the stream, or None to wait
        for more."""
        if self.coding == "gzip":
            # Between members: zero padding after a member is skipped, as gzip(1) does.
            data = data.lstrip(b"\0") if self._started else data
            if not data:
                return None
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            if self._ended:
                raise DecodingError("data after the end of the deflate stream")
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return None
            self._head = b""
            cmf, flg = data[0], data[1]
            wrapped = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        self._started = True
        return data, self._z

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        while data or self._z is not None:
            z = self._z
            if z is None:
                opened = self._open(data)
                if opened is None:
                    return
                data, z = opened
            try:
                out = z.decompress(data, DECODE_CHUNK)
            except zlib.error as exc:
                raise DecodingError(f"corrupt {self.coding} stream ({exc})") from None
            if out:
                # The piece that reaches the cap still goes on (the next layer may need it
                # to finish its own, truncated, output); anything after it is too much.
                if self._cap is not None and self._produced >= self._cap:
                    raise OverCap()
                self._produced += len(out)
                yield out
            if z.eof:
                # The rest of this input belongs to whatever follows the stream.
                data, self._z = z.unused_data, None
                self._ended = self.coding == "deflate"
                continue
            data = z.unconsumed_tail
            if not data and len(out) < DECODE_CHUNK:
                return  # zlib wants more input (a full chunk may hide pending output)

    def finish(self) -> Iterator[bytes]:
        """What the layer still holds; DecodingError if its stream stopped short."""
        if self._z is not None:
            yield from self._inflate(b"")
        if self._z is not None or self._head:
            raise DecodingError(f"{self.coding} stream ends early")


class BoundedDecoder:
    """Undoes a response's Content-Encoding chain with every stage bounded.

    httpx's own decoders inflate each network chunk whole, so a few KB coded twice
    (`gzip, gzip`) become gigabytes before any size cap sees a byte. Here every layer
    inflates at most DECODE_CHUNK bytes per step and only when the next stage asks, so
    memory stays at a few chunks per layer; and each layer's total output is held to `cap`
    too, so a chain whose inner layers expand to nothing cannot burn CPU unseen. The
    decoded output itself is the caller's to count (it may want to keep exactly `cap`).
    `decode` and `finish` raise DecodingError (a one-line reason) or OverCap.
    """

    def __init__(self, content_encoding: list[str], cap: int):
        codings = [c.strip().lower() for c in content_encoding]
        codings = [c for c in codings if c and c != "identity"]
        unknown = [c for c in codings if c not in _CODINGS]
        if unknown:
            raise DecodingError(f"unsupported Content-Encoding {unknown[0][:40]!r} "
                                f"(only {ACCEPT_ENCODING} and identity are read)")
        if len(codings) > MAX_CODINGS:
            raise DecodingError(f"{len(codings)} stacked content codings, more than the "
                                f"{MAX_CODINGS} accepted")
        # The header lists codings in the order they were applied: undo the last first.
        order = list(reversed(codings))
        self._layers = [_Inflater(_CODINGS[c], cap if i < len(order) - 1 else None)
                        for i, c in enumerate(order)]

    def _through(self, pieces: Iterable[bytes], first: int) -> Iterator[bytes]:
        for layer in self._layers[first:]:
            pieces = layer.feed(pieces)
        return iter(pieces)

    def decode(self, data: bytes) -> Iterator[bytes]:
        return self._through((data,), 0)

    def finish(self) -> Iterator[bytes]:
        for i, layer in enumerate(self._layers):
            yield from self._through(layer.finish(), i + 1)


# --- DNS pinning ---------------------------------------------------------------------

Vetter = Callable[[str, int], Awaitable[list[str]]]


class PinnedBackend(TcpBackend):
    """Connects to addresses the SSRF check vetted, not to whatever DNS says now.

    httpcore hands `connect_tcp` the URL's host name; we ask `vet(host, port)` for the
    checked addresses and connect to those. TLS still starts with the host name as SNI and
    certificate name, and the Host header is unchanged, because both come from the request
    URL, not from the socket. So a rebinding DNS server that answered with a public address
    for the check gets no second question to answer with 127.0.0.1.
    """

    def __init__(self, vet: Vetter, inner: httpcore.AsyncNetworkBackend | None = None):
        self._vet = vet
        self._inner = inner or AsyncioBackend()

    async def connect_tcp(
            self, host: str, port: int, timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._vet(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout,
                                                     local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address to connect to for {host}")


class PinnedTransport(Http11Transport):
    """The fetcher's transport for direct requests (monitor/http1.py), connecting through a
    `PinnedBackend`: only to the addresses `vet` approves for the URL's host."""

    def __init__(self, vet: Vetter, *, ssl_context: ssl.SSLContext | None = None,
                 limits: httpx.Limits = POOL_LIMITS,
                 backend: httpcore.AsyncNetworkBackend | None = None):
        super().__init__(ssl_context=ssl_context, limits=limits,
                         network_backend=PinnedBackend(vet, backend))


# --- robots.txt ----------------------------------------------------------------------


@dataclass
class _Robots:
    parser: Protego | None      # None: allow everything (4xx, or nothing to parse)
    unavailable: str | None     # set: 5xx / 429 / network error; disallow everything
    expires: float


# --- the fetcher ---------------------------------------------------------------------


class HostGate(Protocol):
    """Politeness shared beyond this process (`monitor.queue.RedisGate`): each host's
    request starts, its requests in flight and its robots.txt, for every worker at once."""

    async def wait(self, host: str, spacing: float) -> float:
        """Reserve the host's next start, at least `spacing` after the one before; the
        seconds to wait for it."""
        ...

    async def acquire(self, host: str, limit: int, lease: float) -> str:
        """Wait for one of the host's `limit` request slots; a token to release it with (a
        slot its holder never releases, a killed worker's, is free again after `lease`)."""
        ...

    async def release(self, host: str, token: str) -> None: ...

    async def robots(self, origin: str) -> tuple[int, bytes, float] | None:
        """The origin's robots.txt answer (status, body) another process fetched, and the
        seconds it stays fresh; None when this process is to fetch it (one at a time: the
        others wait a moment for its answer)."""
        ...

    async def remember_robots(self, origin: str, status: int, body: bytes,
                              ttl: float) -> None: ...


class Fetcher:
    """Shared by all targets of a process, so per-host spacing holds across targets.

    Transports: one httpx transport per distinct proxy. Direct requests go through a
    `PinnedTransport`, so the connection is made to the address the SSRF check approved;
    targets with `allow_private` have a pinned transport (and pins) of their own, so neither
    a pin nor a pooled connection vetted under the looser rule ever serves a target
    without it.

    SOCKS and DNS: httpcore's SOCKS5 code (httpcore/_async/socks_proxy.py,
    `_init_socks5_connection`) builds the CONNECT request with
    `socksio.socks5.SOCKS5CommandRequest.from_address(CONNECT, (host, port))` where `host`
    is the URL's host name; socksio's `encode_address` sends anything that is not an IP
    literal as address type DOMAINNAME (0x03). So `socks5://` in httpx already resolves at
    the proxy (what curl calls `socks5h://`), which Tor needs for `.onion` names; httpx
    0.28 also accepts the `socks5h` scheme and treats it the same. For any SOCKS target we
    therefore skip the local DNS check (the proxy's answer is the one that counts) and
    can refuse only IP literals (never-allowed ones always, private ones and `localhost`
    unless the target has `allow_private`).
    """

    def __init__(self, settings: CrawlSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 resolver: Resolver = system_resolver, backoff_base: float = 1.0,
                 robots_ttl: float = ROBOTS_TTL, robots_error_ttl: float = ROBOTS_ERROR_TTL,
                 network_backend: httpcore.AsyncNetworkBackend | None = None,
                 gate: HostGate | None = None, dns_ttl: float = DNS_TTL):
        """`transport` replaces the network entirely (no pinning); `network_backend` is
        what pinned connections are finally opened with (tests record them); `gate`
        spaces each host's request starts across processes (workers on many machines),
        in place of this process's own slots."""
        self.settings = settings
        self.resolver = resolver
        self.dns_ttl = dns_ttl
        # (host, port) -> (fresh until, addresses), oldest first.
        self._answers: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self.backoff_base = backoff_base
        self.robots_ttl = robots_ttl
        self.robots_error_ttl = robots_error_ttl
        self._timeouts = httpx.Timeout(settings.request_timeout,
                                       connect=settings.connect_timeout).as_dict()
        self._transport = transport
        self._network_backend = network_backend
        self._gate = gate
        # (proxy, allow_private) -> transport; proxy None means direct and pinned.
        # Redirects are followed by hand so that every hop is checked.
        self._transports: dict[tuple[str | None, bool], httpx.AsyncBaseTransport] = {}
        # allow_private -> host -> the addresses its last check approved.
        self._pins: dict[bool, dict[str, list[str]]] = {False: {}, True: {}}
        self._host_sems: dict[str, asyncio.Semaphore] = {}
        self._host_next_start: dict[str, float] = {}
        self._host_paused_until: dict[str, float] = {}
        self._crawl_delay: dict[str, float] = {}
        self._robots: dict[tuple[str, str, int], _Robots] = {}
        self._robots_locks: dict[tuple[str, str, int], asyncio.Lock] = {}
        self._robots_ignored: set[str] = set()

    async def aclose(self) -> None:
        for transport in {id(t): t for t in self._transports.values()}.values():
            await transport.aclose()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- public ----------------------------------------------------------------------

    async def get(self, url: str, target: Target, *, headers: dict[str, str] | None = None,
                  max_bytes: int | None = None, follow_redirects: bool = True) -> Response:
        """GET with every safety and politeness rule applied; 304 is returned, other
        non-2xx raise FetchError (RobotsDisallowed, BlockedAddress are FetchErrors too).
        Without `follow_redirects` a redirect is returned as it came (a hub states a file's
        digest on it; where it points need never be asked)."""
        if not target.obey_robots and target.name not in self._robots_ignored:
            self._robots_ignored.add(target.name)
            log.warning("robots_ignored", target=target.name)
        response, attempts = await self._fetch(url, target, headers=headers,
                                               max_bytes=max_bytes or self.settings.max_response_bytes,
                                               robots=target.obey_robots,
                                               follow=follow_redirects)
        if (response.status == 304 or 200 <= response.status < 300
                or (not follow_redirects and response.status in REDIRECT_CODES)):
            return response
        after = f" (after {attempts} attempts)" if attempts > 1 else ""
        raise FetchError(f"HTTP {response.status} from {redact_url(response.url)}{after}",
                         status=response.status, headers=response.headers)

    async def check_url(self, url: str, target: Target) -> list[str]:
        """The SSRF check for one URL as `get` makes it (scheme, host, addresses, `.onion`
        and proxy rules); returns the vetted addresses, which later connections use."""
        proxy = target.proxy
        addresses = await check_destination(url, allow_private=target.allow_private,
                                            resolver=self._resolve, remote_dns=_is_socks(proxy))
        if addresses and not proxy:
            self._pins[target.allow_private][_pin_key(url)] = addresses
        return addresses

    async def vetted_addresses(self, host: str, port: int, *,
                               allow_private: bool = False) -> list[str]:
        """Addresses a pinned connection to `host` may use: those the last check under the
        same `allow_private` approved; failing that (never expected), resolve and check now."""
        host = host.lower()
        pinned = self._pins[allow_private].get(host)
        if pinned:
            return pinned
        return await check_destination(_origin("http", host, port) + "/",
                                       allow_private=allow_private, resolver=self._resolve)

    async def _resolve(self, host: str, port: int) -> list[str]:
        """The resolver's answer, reused for `dns_ttl` seconds (a failure is not kept).
        Every use is still checked (`check_destination`), so a remembered answer can only
        be refused, never let through."""
        key = (host.lower(), port)
        now = time.monotonic()
        known = self._answers.get(key)
        if known is not None and known[0] > now:
            return known[1]
        addresses = await self.resolver(host, port)
        self._answers.pop(key, None)
        self._answers[key] = (now + self.dns_ttl, addresses)
        if len(self._answers) > DNS_CACHE_HOSTS:
            del self._answers[next(iter(self._answers))]
        return addresses

    def host_spacing(self, host: str) -> float:
        """Minimum seconds between request starts to `host`: host_delay or Crawl-delay."""
        return max(self.settings.host_delay, self._crawl_delay.get(host.lower(), 0.0))

    # --- one fetch: hops, robots, retries ----------------------------------------------

    def _transport_for(self, proxy: str | None, *,
                       allow_private: bool) -> httpx.AsyncBaseTransport:
        """Requests go straight to a transport (no httpx client: redirects, cookies and
        authentication are all decided here, and the client's per-request work cost a
        fifth of a request's CPU)."""
        key = ("<injected>", False) if self._transport is not None else (proxy, allow_private)
        transport = self._transports.get(key)
        if transport is None:
            if self._transport is not None:
                transport = self._transport
            elif not proxy:
                async def vet(host: str, port: int) -> list[str]:
                    return await self.vetted_addresses(host, port, allow_private=allow_private)
                transport = PinnedTransport(vet, backend=self._network_backend)
            else:
                log.debug("proxy_client", proxy=redact_url(proxy))
                transport = httpx.AsyncHTTPTransport(proxy=normalise_proxy(proxy),
                                                     verify=ssl_context(), trust_env=False,
                                                     limits=POOL_LIMITS)
            self._transports[key] = transport
        return transport

    def _headers(self, target: Target, extra: dict[str, str] | None) -> httpx.Headers:
        # Accept-Encoding said outright: a polite server then sends only what we decode
        # (httpx would add br and zstd whenever their packages happen to be installed).
        # Accept and Connection as an httpx client would send them.
        headers = httpx.Headers({"User-Agent": target.user_agent or self.settings.user_agent,
                                 "Accept": "*/*", "Accept-Encoding": ACCEPT_ENCODING,
                                 "Connection": "keep-alive"})
        headers.update(target.headers)
        headers.update(extra or {})
        if target.cookies:
            for name, value in target.cookies.items():
                if any(c in name + value for c in ";\r\n") or "=" in name or not name:
                    raise FetchError(f"target {target.name}: cookie {name[:40]!r} has a name or "
                                     f"value that cannot go in a Cookie header")
            jar = "; ".join(f"{name}={value}" for name, value in target.cookies.items())
            existing = headers.get("cookie")
            headers["Cookie"] = f"{existing}; {jar}" if existing else jar
        return headers

    async def _fetch(self, url: str, target: Target, *, headers: dict[str, str] | None,
                     max_bytes: int, robots: bool, truncate: bool = False,
                     follow: bool = True) -> tuple[Response, int]:
        request_headers = self._headers(target, headers)
        proxy = target.proxy
        transport = self._transport_for(proxy, allow_private=target.allow_private)
        secrets = _secrets_of(proxy)
        current = url
        hops: list[tuple[str, int, httpx.Headers]] = []
        for _hop in range(self.settings.max_redirects + 1):
            await self.check_url(current, target)
            if robots:
                await self._check_robots(current, target, request_headers["user-agent"])
            status, response_headers, body, attempts = await self._with_retries(
                transport, current, request_headers, max_bytes, truncate, secrets)
            if follow and status in REDIRECT_CODES and "location" in response_headers:
                following = urljoin(current, response_headers["location"])
                hops.append((current, status, response_headers))
                if _same_origin_key(following) != _same_origin_key(current):
                    # Credentials (tokens, cookies, API headers) were meant for the target's
                    # own origin; a hostile redirect must not collect them, as httpx and
                    # requests also ensure. Range, If-Range and Accept-Encoding say which
                    # bytes and in what form, not who is asking, and a model hub's file
                    # redirects to its CDN: they stay (a range must stay uncompressed).
                    request_headers = httpx.Headers(
                        {name: request_headers[name] for name in ("user-agent", "range",
                                                                  "if-range", "accept-encoding")
                         if name in request_headers})
                current = following
                continue
            return Response(current, status, response_headers, body, redirects=hops), attempts
        raise FetchError(f"more than {self.settings.max_redirects} redirects from {redact_url(url)}")

    async def _with_retries(self, transport: httpx.AsyncBaseTransport, url: str, headers: httpx.Headers,
                            max_bytes: int, truncate: bool,
                            secrets: list[str]) -> tuple[int, httpx.Headers, bytes, int]:
        safe_url = redact_url(url)
        host = (urlsplit(url).hostname or "").lower()
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                status, response_headers, body = await self._attempt(
                    transport, url, safe_url, host, headers, max_bytes, truncate, secrets)
            except _Transient as exc:
                if attempt == attempts:
                    after = f" (after {attempts} attempts)" if attempts > 1 else ""
                    raise Unreachable(f"{exc}{after}") from None
                reason = exc.reason
            else:
                if status not in RETRY_CODES or attempt == attempts:
                    return status, response_headers, body, attempt
                reason = f"HTTP {status}"
                if status in RETRY_AFTER_CODES:
                    retry_after = parse_retry_after(response_headers.get("retry-after"))
            if retry_after is not None:
                cap = self.settings.retry_after_cap
                if retry_after > cap:
                    raise FetchError(f"{reason} from {safe_url} with Retry-After of {retry_after:.0f}s, "
                                     f"over the retry_after_cap of {cap:.0f}s: giving up",
                                     status=status, headers=response_headers)
                delay = retry_after
                # The server asked the whole host to back off, not just this request.
                until = time.monotonic() + delay
                self._host_paused_until[host] = max(self._host_paused_until.get(host, 0.0), until)
            else:
                # Full jitter: uniform over [0, base * 2^(n-1)], so retries spread out.
                delay = random.uniform(0, min(MAX_BACKOFF, self.backoff_base * 2 ** (attempt - 1)))
            log.info("fetch_retry", url=safe_url, attempt=attempt, reason=reason,
                     delay=round(delay, 3))
            runstats.note_retry()
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, transport: httpx.AsyncBaseTransport, url: str, safe_url: str, host: str,
                       headers: httpx.Headers,
                       max_bytes: int, truncate: bool,
                       secrets: list[str]) -> tuple[int, httpx.Headers, bytes]:
        sem = self._host_sems.get(host)
        if sem is None:
            sem = self._host_sems[host] = asyncio.Semaphore(max(1, self.settings.host_concurrency))
        async with sem, self._shared_slot(host):
            await self._wait_turn(host)
            runstats.note_request()
            # The deadline starts after the politeness wait: the host's slot is ours to
            # wait for, the deadline is for the host to answer in.
            deadline = self.settings.request_deadline
            try:
                async with asyncio.timeout(deadline):
                    return await self._stream(transport, url, safe_url, headers, max_bytes,
                                              truncate, secrets)
            except TimeoutError:
                # Not a _Transient: a host that trickles its answer would do so again, and
                # each retry would stall the target for another whole deadline.
                raise FetchError(f"gave up on {safe_url}: no complete answer within the "
                                 f"request_deadline of {deadline:g}s") from None

    @contextlib.asynccontextmanager
    async def _shared_slot(self, host: str) -> AsyncIterator[None]:
        """One of the host's `host_concurrency` slots across every process sharing the
        gate (the local semaphore holds them within this one)."""
        if self._gate is None:
            yield
            return
        lease = self.settings.request_deadline + 30.0
        token = await self._gate.acquire(host, max(1, self.settings.host_concurrency), lease)
        try:
            yield
        finally:
            await self._gate.release(host, token)

    async def _wait_turn(self, host: str) -> None:
        """Reserve the next start slot for `host` (no await between read and write, so the
        reservation is atomic on the event loop), then sleep until it."""
        if self._gate is not None:
            wait = await self._gate.wait(host, self.host_spacing(host))
            paused = self._host_paused_until.get(host, 0.0) - time.monotonic()
            if max(wait, paused) > 0:
                await asyncio.sleep(max(wait, paused))
            return
        now = time.monotonic()
        start = max(now, self._host_next_start.get(host, 0.0), self._host_paused_until.get(host, 0.0))
        self._host_next_start[host] = start + self.host_spacing(host)
        if start > now:
            await asyncio.sleep(start - now)

    async def _stream(self, transport: httpx.AsyncBaseTransport, url: str, safe_url: str,
                      headers: httpx.Headers,
                      max_bytes: int, truncate: bool,
                      secrets: list[str]) -> tuple[int, httpx.Headers, bytes]:
        """One GET with its body read raw and decoded by a `BoundedDecoder`: `max_bytes`
        holds for the bytes on the wire, each stage of decoding and the decoded body. With
        `truncate` the body stops at `max_bytes` decoded bytes instead of failing.
        `safe_url` is `redact_url(url)`, made once for all attempts."""
        over_cap = f"response from {safe_url} exceeded the {max_bytes}-byte cap"
        try:
            async with self._exchange(transport, url, headers) as response:
                declared = response.headers.get("content-length")
                if not truncate and declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"response from {safe_url} is {int(declared)} bytes, "
                                     f"over the {max_bytes}-byte cap")
                chunks: list[bytes] = []
                size = raw = 0
                decoder: BoundedDecoder | None = None

                def take(pieces: Iterable[bytes]) -> bool:
                    """Keep decoded pieces; True once a truncated body is full."""
                    nonlocal size
                    for piece in pieces:
                        if size + len(piece) > max_bytes:
                            if not truncate:
                                raise FetchError(over_cap)
                            chunks.append(piece[:max_bytes - size])
                            size = max_bytes
                            return True
                        size += len(piece)
                        chunks.append(piece)
                    return False

                try:
                    complete = True
                    async for data in _raw_body(response):
                        if raw + len(data) > max_bytes:
                            if not truncate:
                                raise OverCap()
                            data, complete = data[:max_bytes - raw], False
                        raw += len(data)
                        if data and decoder is None:
                            decoder = BoundedDecoder(
                                response.headers.get_list("content-encoding", split_commas=True),
                                max_bytes)
                        if decoder is not None and take(decoder.decode(data)):
                            complete = False
                        if not complete:
                            break
                    if complete and decoder is not None:
                        take(decoder.finish())
                except OverCap:
                    if not truncate:
                        raise FetchError(over_cap) from None
                except DecodingError as exc:
                    raise FetchError(f"cannot read the response from {safe_url}: {exc}") from None
                log.debug("fetched", url=safe_url, status=response.status_code, bytes=size,
                          wire_bytes=raw)
                runstats.note_bytes(raw)
                return response.status_code, response.headers, b"".join(chunks)
        except httpx.TimeoutException:
            raise _Transient(f"timed out fetching {safe_url}", "timeout") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            reason = _scrub(_first_line(exc), secrets)
            raise _Transient(f"cannot fetch {safe_url}: {reason}", reason) from None
        except httpx.HTTPError as exc:
            raise FetchError(f"cannot fetch {safe_url}: {_scrub(_first_line(exc), secrets)}") from None

    @contextlib.asynccontextmanager
    async def _exchange(self, transport: httpx.AsyncBaseTransport, url: str,
                        headers: httpx.Headers) -> AsyncIterator[httpx.Response]:
        """One GET handed to the transport; the response (its body not yet read) is closed
        on the way out, which returns its connection to the pool or drops it."""
        request = httpx.Request("GET", url, headers=headers,
                                extensions={"timeout": self._timeouts})
        response = await transport.handle_async_request(request)
        try:
            yield response
        finally:
            await response.aclose()

    # --- robots.txt ----------------------------------------------------------------

    async def _check_robots(self, url: str, target: Target, user_agent: str) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, host, port)
        entry = self._robots.get(key)
        if entry is None or entry.expires <= time.monotonic():
            lock = self._robots_locks.setdefault(key, asyncio.Lock())
            async with lock:  # one fetch per origin, however many requests wait for it
                entry = self._robots.get(key)
                if entry is None or entry.expires <= time.monotonic():
                    entry = await self._load_robots(parts.scheme, host, parts.port, target)
                    self._robots[key] = entry
        if entry.unavailable is not None:
            raise RobotsDisallowed(f"robots.txt of {_origin(parts.scheme, host, parts.port)} is "
                                   f"unavailable ({entry.unavailable}), so the host counts as "
                                   f"disallowed for now: not fetching {redact_url(url)}")
        if entry.parser is None:
            return
        token = product_token(user_agent)
        delay = entry.parser.crawl_delay(token)
        self._crawl_delay[host] = min(float(delay), MAX_CRAWL_DELAY) if delay else 0.0
        if not entry.parser.can_fetch(url, token):
            raise RobotsDisallowed(f"robots.txt disallows {redact_url(url)} for {token}")

    async def _load_robots(self, scheme: str, host: str, port: int | None, target: Target) -> _Robots:
        origin = _origin(scheme, host, port)
        robots_url = origin + "/robots.txt"
        now = time.monotonic()
        if self._gate is not None and (shared := await self._gate.robots(origin)) is not None:
            status, body, fresh = shared
            entry = self._robots_from(robots_url, status, body, now)
            return replace(entry, expires=now + fresh)
        try:
            response, _ = await self._fetch(robots_url, target, headers=None,
                                            max_bytes=ROBOTS_MAX_BYTES, robots=False, truncate=True)
        except Unreachable as exc:
            # The host did not answer: that is the error, not its robots.txt; and it is not
            # remembered, so the host is asked again as soon as it is back.
            raise Unreachable(f"{_origin(scheme, host, port)} is unreachable: {exc}") from None
        except FetchError as exc:
            log.warning("robots_unavailable", url=robots_url, reason=str(exc))
            return _Robots(None, str(exc), now + self.robots_error_ttl)
        status = response.status
        log.debug("robots_fetched", url=robots_url, status=status, bytes=len(response.body))
        entry = self._robots_from(robots_url, status, response.body, now)
        if self._gate is not None:
            await self._gate.remember_robots(origin, status, response.body,
                                             entry.expires - now)
        return entry

    def _robots_from(self, robots_url: str, status: int, body: bytes, now: float) -> _Robots:
        """What a robots.txt answer means for the crawl, and until when."""
        if status == 429 or status >= 500:
            log.warning("robots_unavailable", url=robots_url, reason=f"HTTP {status}")
            return _Robots(None, f"HTTP {status}", now + self.robots_error_ttl)
        if 200 <= status < 300:
            try:
                parser = Protego.parse(body.decode("utf-8", errors="replace"))
            except Exception as exc:  # a parser bug on hostile input must not sink the target
                log.warning("robots_unparseable", url=robots_url, error=type(exc).__name__)
                parser = None
            return _Robots(parser, None, now + self.robots_ttl)
        # 4xx (no robots.txt, or not for us to read) and anything odd: no rules.
        return _Robots(None, None, now + self.robots_ttl)


def _origin(scheme: str, host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + (f":{port}" if port else "")


# A URL's scheme and authority, as httpx splits them: all a pin key depends on.
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")


def _pin_key(url: str) -> str:
    """The host as httpcore will hand it to `connect_tcp` (IDNA-encoded, lowercase).
    Worked out once per authority: httpx's URL parser costs more than the SSRF check it
    serves. (A key that differed from httpcore's would only make `vetted_addresses`
    check the host again.)"""
    match = _AUTHORITY.match(url)
    return _authority_pin_key(match.group(0) if match else url)


@functools.lru_cache(maxsize=1024)
def _authority_pin_key(url: str) -> str:
    try:
        return httpx.URL(url).raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, UnicodeError):
        return (urlsplit(url).hostname or "").lower()


async def _raw_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent, content codings intact: the transport's own stream (httpx's
    decoders, which inflate a chunk whole, never see it). An in-memory transport
    (httpx.MockTransport in tests) may hand a stream that is only iterable in sync."""
    stream = response.stream
    if isinstance(stream, httpx.AsyncByteStream):
        async for chunk in stream:
            yield chunk
    else:
        for chunk in stream:
            yield chunk


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
