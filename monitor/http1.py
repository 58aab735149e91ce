"""HTTP/1.1 for the fetcher's direct connections: h11 over asyncio, as an httpx transport.

Why not httpcore's pool, which httpx uses by default: a crawler spends its CPU per request,
and on a 20 KB page on loopback httpcore's pool over anyio cost about 0.9 ms of CPU
(cancel scopes and locks around every read and write, a pool walk per request), the
httpx client above it another 0.3, while h11 itself, the protocol, takes about a third of
a millisecond. This transport keeps only what the fetcher needs: HTTP/1.1 (httpx speaks
nothing else without its http2 extra), keep-alive connections per origin, the request's
connect, read, write and pool timeouts, TLS with the URL's host name for SNI and the
certificate check. Everything else (redirects, retries, caps, decoding, robots, the SSRF
check) is the fetcher's, above it.

The network seam is httpcore's (`httpcore.AsyncNetworkBackend`): `AsyncioBackend` here by
default, `fetch.PinnedBackend` on top of it to connect only to vetted addresses, and any
backend a test records connections with. Failures are httpx's exceptions, as
httpx's own transport raises them, so callers cannot tell the two apart.

The memory a response can take is bounded here too: a connection stops reading from its
socket while `READ_BUFFER_HIGH` bytes wait to be consumed, so a server that sends faster
than the fetcher reads (or endlessly) fills a socket buffer, not this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator

import h11
import httpcore
import httpx

# What one read asks of the socket (httpcore's own figure).
READ_SIZE = 64 * 1024
# A response head larger than this is refused (httpcore's limit: real heads stay far below,
# but a long cookie or CSP header can pass h11's default of 16 KB).
MAX_HEAD_BYTES = 100 * 1024
# Reading from the socket pauses above HIGH unread bytes and resumes below LOW.
READ_BUFFER_HIGH = 256 * 1024
READ_BUFFER_LOW = 64 * 1024
# httpx's own defaults, as its transport would build them.
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)

Origin = tuple[bytes, bytes, int]


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The TLS settings and CA bundle every client verifies with (httpx's own: certifi's
    bundle, no environment overrides), read once per process: reading the bundle costs
    tens of milliseconds of CPU, and every client used to read its own. Connections share
    an SSLContext safely."""
    context = httpx.create_ssl_context(trust_env=False)
    context.set_alpn_protocols(["http/1.1"])
    return context


# --- the network: asyncio streams with httpcore's interface ---------------------------


class _Protocol(asyncio.Protocol):
    """Buffers what the socket delivers until `_Stream.read` takes it; pauses the socket
    while too much waits. One waiter at a time (a request is written, then its answer
    read), woken by anything that happens: data, the end, a drained write buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_BUFFER_HIGH and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.writing_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, timeout: float | None, timed_out: type[httpcore.TimeoutException],
                   message: str) -> None:
        """Until something happens on the connection, or `timed_out(message)`."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self.waiter
        except TimeoutError:
            raise timed_out(message) from None
        finally:
            self.waiter = None


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol):
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        while not protocol.buffer and not protocol.eof:
            await protocol.wait(timeout, httpcore.ReadTimeout, "timed out reading the response")
        if protocol.buffer:
            if len(protocol.buffer) <= max_bytes:
                data = bytes(protocol.buffer)
                protocol.buffer.clear()
            else:
                data = bytes(protocol.buffer[:max_bytes])
                del protocol.buffer[:max_bytes]
            if protocol.reading_paused and len(protocol.buffer) < READ_BUFFER_LOW:
                protocol.reading_paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        protocol = self._protocol
        while protocol.writing_paused:
            await protocol.wait(timeout, httpcore.WriteTimeout, "timed out sending the request")
        if protocol.error is not None:
            raise httpcore.WriteError(str(protocol.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        if transport is None:  # the peer closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        assert isinstance(transport, asyncio.Transport)
        self._protocol.transport = transport
        return _Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable":  # an idle connection with data or EOF is stale
            return bool(self._protocol.buffer) or self._protocol.eof
        name = {"server_addr": "peername", "client_addr": "sockname"}.get(info, info)
        return self._transport.get_extra_info(name)


class TcpBackend(httpcore.AsyncNetworkBackend):
    """A network backend for the fetcher, which only ever opens TCP connections."""

    async def connect_unix_socket(
            self, path: str, timeout: float | None = None,
            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the fetcher")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncioBackend(TcpBackend):
    """TCP connections as plain asyncio transports."""

    async def connect_tcp(
            self, host: str, port: int, timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port,
                    local_addr=(local_address, 0) if local_address else None)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        assert isinstance(transport, asyncio.Transport)
        return _Stream(transport, protocol)


# --- failures as httpx raises them ------------------------------------------------------


_MAPPED: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (h11.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (h11.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
)


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except tuple(source for source, _ in _MAPPED) as exc:
        mapped = next(target for source, target in _MAPPED if isinstance(exc, source))
        raise mapped(str(exc) or type(exc).__name__, request=request) from None


# --- connections and the pool -----------------------------------------------------------


class _Connection:
    """One socket and its HTTP/1.1 state; serves one request at a time."""

    def __init__(self, origin: Origin, stream: httpcore.AsyncNetworkStream):
        self.origin = origin
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.idle_since = 0.0
        self.closed = False

    async def next_event(self, read_timeout: float | None) -> object:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.read(READ_SIZE, read_timeout)
            if not data and self.h11.their_state == h11.SEND_RESPONSE:
                # h11 would say "peer closed connection without sending complete message
                # body: incomplete chunked read": the reason is simpler.
                raise httpx.RemoteProtocolError("the server disconnected without sending a "
                                                "response")
            self.h11.receive_data(data)

    def reusable(self) -> bool:
        return (not self.closed and self.h11.our_state is h11.DONE
                and self.h11.their_state is h11.DONE)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                await self.stream.aclose()


class Http11Transport(httpx.AsyncBaseTransport):
    """An httpx transport speaking HTTP/1.1 through `network_backend` (see the module
    docstring). Connections are kept per origin for `limits.keepalive_expiry` seconds,
    at most `limits.max_keepalive_connections` of them idle and `limits.max_connections`
    open. `ssl_context` defaults to `default_ssl_context()`, read at the first https
    connection: a crawl of plain-http pages never reads the CA bundle."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 limits: httpx.Limits = POOL_LIMITS,
                 network_backend: httpcore.AsyncNetworkBackend | None = None):
        self._ssl_context = ssl_context
        self._backend = network_backend or AsyncioBackend()
        self._max_open = limits.max_connections or 100
        self._max_idle = limits.max_keepalive_connections or 0
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None \
            else float("inf")
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}",
                                            request=request)
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        with _as_httpx(request):
            connection = await self._checkout(origin, timeouts)
            try:
                await self._send(connection, request, timeouts.get("write"))
                event = await self._head(connection, request, timeouts.get("read"))
            except BaseException:
                await self._discard(connection)
                raise
        return httpx.Response(
            status_code=event.status_code, headers=event.headers.raw_items(),
            stream=_Body(self, connection, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason,
                        "network_stream": connection.stream})

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await self._discard(connection)

    # --- the pool ----------------------------------------------------------------------

    async def _checkout(self, origin: Origin, timeouts: dict[str, float | None]) -> _Connection:
        """An idle connection to `origin`, else a new one; when `max_connections` are open
        an idle one of another origin is closed for it, or the request waits (up to the
        pool timeout) for one to come back or close."""
        waited = 0.0
        while True:
            connection = await self._idle_connection(origin)
            if connection is not None:
                return connection
            if self._open < self._max_open:
                self._open += 1
                try:
                    return await self._connect(origin, timeouts.get("connect"))
                except BaseException:
                    self._release_slot()
                    raise
            oldest = min((c for cs in self._idle.values() for c in cs),
                         key=lambda c: c.idle_since, default=None)
            if oldest is not None:
                self._idle[oldest.origin].remove(oldest)
                await self._discard(oldest)
                continue
            waited += await self._wait_for_a_connection(timeouts.get("pool"), waited)

    async def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self._expiry \
                    and not connection.stream.get_extra_info("is_readable"):
                return connection
            # Expired, or the server closed it (or sent something unasked) while it idled.
            await self._discard(connection)
        return None

    async def _wait_for_a_connection(self, timeout: float | None, waited: float) -> float:
        """Wait until a connection is checked in or closed; the seconds it took."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        start = time.monotonic()
        try:
            async with asyncio.timeout(None if timeout is None else max(0.0, timeout - waited)):
                await waiter
        except TimeoutError:
            raise httpcore.PoolTimeout("no connection became free in time") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        return time.monotonic() - start

    def _wake_a_waiter(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release_slot(self) -> None:
        self._open -= 1
        self._wake_a_waiter()

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        name = host.decode("ascii")
        stream = await self._backend.connect_tcp(name, port, timeout=timeout)
        if scheme == b"https":
            context = self._ssl_context or default_ssl_context()
            try:
                stream = await stream.start_tls(context, server_hostname=name, timeout=timeout)
            except BaseException:
                with contextlib.suppress(Exception):
                    await stream.aclose()
                raise
        return _Connection(origin, stream)

    async def _checkin(self, connection: _Connection) -> None:
        """A connection whose exchange ended: kept for the next request to its origin if
        both sides may go on, else closed."""
        if not connection.reusable() or self._max_idle == 0:
            await self._discard(connection)
            return
        connection.h11.start_next_cycle()
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.origin, []).append(connection)
        self._wake_a_waiter()
        idle = sum(len(cs) for cs in self._idle.values())
        if idle > self._max_idle:
            oldest = min((c for cs in self._idle.values() for c in cs),
                         key=lambda c: c.idle_since)
            self._idle[oldest.origin].remove(oldest)
            await self._discard(oldest)

    async def _discard(self, connection: _Connection) -> None:
        if not connection.closed:
            await connection.close()
            self._release_slot()

    @staticmethod
    async def _head(connection: _Connection, request: httpx.Request,
                    timeout: float | None) -> h11.Response:
        """The response's status line and headers (1xx interim answers skipped)."""
        while True:
            event = await connection.next_event(timeout)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} before "
                                                f"the response", request=request)

    @staticmethod
    async def _send(connection: _Connection, request: httpx.Request,
                    timeout: float | None) -> None:
        stream = connection.stream
        head = connection.h11.send(h11.Request(method=request.method,
                                               target=request.url.raw_path,
                                               headers=request.headers.raw))
        assert head is not None
        await stream.write(head, timeout)
        body = request.stream
        if isinstance(body, httpx.AsyncByteStream):
            async for chunk in body:
                data = connection.h11.send(h11.Data(data=chunk))
                if data:
                    await stream.write(data, timeout)
        end = connection.h11.send(h11.EndOfMessage())
        if end:
            await stream.write(end, timeout)


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection as the caller iterates; the connection
    goes back to the pool when the body ended cleanly, and is closed when the caller
    stops early (what is left of the body would otherwise be the next response)."""

    def __init__(self, transport: Http11Transport, connection: _Connection,
                 request: httpx.Request, read_timeout: float | None):
        self._transport = transport
        self._connection = connection
        self._request = request
        self._timeout = read_timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        try:
            with _as_httpx(self._request):
                while not self._done:
                    event = await connection.next_event(self._timeout)
                    if isinstance(event, h11.Data):
                        yield bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        self._done = True
                        await self._transport._checkin(connection)  # noqa: SLF001
                    elif isinstance(event, h11.ConnectionClosed):
                        raise httpx.RemoteProtocolError("the server closed the connection "
                                                        "mid-response", request=self._request)
        except BaseException:
            self._done = True
            await self._transport._discard(connection)  # noqa: SLF001
            raise

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            await self._transport._discard(self._connection)  # noqa: SLF001
