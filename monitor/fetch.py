"""The one way weightwatch talks to the network: polite, bounded and SSRF-safe.

Crawled pages are hostile. A page can redirect into the private network, answer forever,
or send gigabytes; a URL can carry an API key. So every request here: resolves its host and
refuses private, loopback, link-local and metadata addresses (unless the target opted in),
on every redirect hop; streams the body and stops at a size cap; honours connect and read
timeouts; spaces requests to the same host; and logs URLs with their secrets redacted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import structlog

from monitor.config import CrawlSettings, Target
from monitor.models import utcnow

log = structlog.get_logger("weightwatch.fetch")

REDIRECT_CODES = {301, 302, 303, 307, 308}
# Query parameters whose values are secrets in the wild (Torznab apikey, signed URLs...).
SECRET_PARAMS = {"apikey", "api_key", "key", "token", "access_token", "auth", "password",
                 "passkey", "secret", "signature", "sig", "x-amz-signature"}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class FetchError(Exception):
    """A request that failed; the message is one line, safe to log (URL redacted)."""


class BlockedAddress(FetchError):
    """The URL points into a network the target may not reach."""


@dataclass
class Response:
    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    fetched_at: str = field(default_factory=utcnow)

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def text(self) -> str:
        charset = httpx.Response(200, headers=self.headers).charset_encoding or "utf-8"
        return self.body.decode(charset, errors="replace")


def redact_url(url: str) -> str:
    """The URL with credentials and secret-looking query values replaced by `REDACTED`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "REDACTED" if k.lower() in SECRET_PARAMS else v) for k, v in pairs],
                          safe=":/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_forbidden_address(address: str) -> bool:
    """True for any address a crawler must not be steered to (SSRF)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or ip in _CGNAT
            or (isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None
                and is_forbidden_address(str(ip.sixtofour))))


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}: {exc.strerror}") from None
    return [info[4][0] for info in infos]


async def check_destination(url: str, *, allow_private: bool,
                            resolver: Resolver = system_resolver) -> None:
    """Refuse non-HTTP schemes and hosts that resolve to forbidden addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedAddress(f"refused {parts.scheme or 'relative'} URL {redact_url(url)}: "
                             f"only http and https are fetched")
    host = parts.hostname
    if not host:
        raise BlockedAddress(f"refused {redact_url(url)}: no host")
    if allow_private:
        return
    for address in await resolver(host, parts.port or (443 if parts.scheme == "https" else 80)):
        if is_forbidden_address(address):
            raise BlockedAddress(f"refused {redact_url(url)}: {host} resolves to {address}, a "
                                 f"private or reserved address (set allow_private = true on a "
                                 f"target meant to be local)")


class Fetcher:
    """Shared by all targets of a process, so per-host spacing holds across targets."""

    def __init__(self, settings: CrawlSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 resolver: Resolver = system_resolver):
        self.settings = settings
        self.resolver = resolver
        timeout = httpx.Timeout(settings.request_timeout, connect=settings.connect_timeout)
        # Redirects are followed by hand so that every hop is checked.
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                        transport=transport, trust_env=False)
        self._host_locks: dict[str, asyncio.Lock] = {}
        self._host_last: dict[str, float] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> "Fetcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get(self, url: str, target: Target, *, headers: dict[str, str] | None = None,
                  max_bytes: int | None = None) -> Response:
        """GET with every safety rule applied; 304 is returned, other non-2xx raise."""
        max_bytes = max_bytes or self.settings.max_response_bytes
        request_headers = {"User-Agent": target.user_agent or self.settings.user_agent,
                           **target.headers, **(headers or {})}
        current = url
        for _hop in range(self.settings.max_redirects + 1):
            await check_destination(current, allow_private=target.allow_private,
                                    resolver=self.resolver)
            status, response_headers, body = await self._get_once(current, request_headers, max_bytes)
            if status in REDIRECT_CODES and "location" in response_headers:
                current = urljoin(current, response_headers["location"])
                continue
            if status == 304 or 200 <= status < 300:
                return Response(current, status, response_headers, body)
            raise FetchError(f"HTTP {status} from {redact_url(current)}")
        raise FetchError(f"more than {self.settings.max_redirects} redirects from {redact_url(url)}")

    async def _get_once(self, url: str, headers: dict[str, str],
                        max_bytes: int) -> tuple[int, httpx.Headers, bytes]:
        host = urlsplit(url).hostname or ""
        lock = self._host_locks.setdefault(host, asyncio.Lock())
        async with lock:
            wait = self._host_last.get(host, 0.0) + self.settings.host_delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await self._stream(url, headers, max_bytes)
            finally:
                self._host_last[host] = time.monotonic()

    async def _stream(self, url: str, headers: dict[str, str],
                      max_bytes: int) -> tuple[int, httpx.Headers, bytes]:
        safe_url = redact_url(url)
        try:
            async with self.client.stream("GET", url, headers=headers) as response:
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"response from {safe_url} is {int(declared)} bytes, "
                                     f"over the {max_bytes}-byte cap")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"response from {safe_url} exceeded the {max_bytes}-byte cap")
                    chunks.append(chunk)
                log.debug("fetched", url=safe_url, status=response.status_code, bytes=size)
                return response.status_code, response.headers, b"".join(chunks)
        except httpx.TimeoutException:
            raise FetchError(f"timed out fetching {safe_url}") from None
        except httpx.HTTPError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FetchError(f"cannot fetch {safe_url}: {reason}") from None
