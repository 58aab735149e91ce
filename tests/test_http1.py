"""The fetcher's HTTP/1.1 transport (monitor/http1.py) against scripted servers on
loopback: what it sends, keep-alive reuse and when a connection must not be reused, the
answers a hostile or broken server gives, timeouts, the pool's limits and the memory a
response can take."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from monitor import http1
from monitor.http1 import Http11Transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A TCP server on 127.0.0.1 whose every connection runs `handler`; counts the
    connections and keeps each request head it read."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head


def ok(body: bytes, *extra: str) -> bytes:
    headers = "".join(f"{line}\r\n" for line in extra)
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode() + body


def answering(answer: Callable[[bytes], Awaitable[bytes | None]]) -> Scripted:
    """A server answering each request on a connection with `answer(head)`, for as long as
    the connection stays open; None holds the connection until the client drops it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await server.head(reader)
            except asyncio.IncompleteReadError:
                return
            reply = await answer(head)
            if reply is None:
                await reader.read()
                return
            writer.write(reply)
            await writer.drain()

    server = Scripted(handler)
    return server


def keep_alive(body: bytes) -> Scripted:
    async def answer(head: bytes) -> bytes:
        return ok(body)

    return answering(answer)


async def get(transport: Http11Transport, url: str, *, read: float = 5.0,
              pool: float = 5.0) -> tuple[int, httpx.Headers, bytes]:
    request = httpx.Request("GET", url, headers={"User-Agent": "weightwatch-test"},
                            extensions={"timeout": {"connect": 5.0, "read": read,
                                                    "write": 5.0, "pool": pool}})
    response = await transport.handle_async_request(request)
    try:
        assert isinstance(response.stream, httpx.AsyncByteStream)
        body = b"".join([chunk async for chunk in response.stream])
    finally:
        await response.aclose()
    return response.status_code, response.headers, body


# --- what it sends and keeps ----------------------------------------------------------


def test_requests_reuse_one_connection_and_say_what_httpx_would():
    async def go() -> tuple[Scripted, str, list[bytes]]:
        async with keep_alive(b"hello") as srv:
            async with Http11Transport() as transport:
                bodies = [(await get(transport, f"{srv.url}/page?n={n}"))[2] for n in range(3)]
            return srv, srv.url, bodies

    srv, url, bodies = asyncio.run(go())
    assert bodies == [b"hello"] * 3
    assert srv.connections == 1, "keep-alive: one connection for three requests"
    first = srv.heads[0].decode()
    assert first.startswith("GET /page?n=0 HTTP/1.1\r\n")
    assert f"Host: {url.removeprefix('http://')}\r\n" in first
    assert "User-Agent: weightwatch-test\r\n" in first


def test_response_headers_keep_their_spelling_and_repeats():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.head(reader)
        writer.write(ok(b"x", "X-Linked-Etag: \"abc\"", "Set-Cookie: a=1", "Set-Cookie: b=2"))
        await writer.drain()

    srv = Scripted(handler)

    async def go() -> httpx.Headers:
        async with srv, Http11Transport() as transport:
            return (await get(transport, f"{srv.url}/"))[1]

    headers = asyncio.run(go())
    assert headers["x-linked-etag"] == '"abc"'
    assert headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert (b"X-Linked-Etag", b'"abc"') in headers.raw, "as the server spelled it"


def test_chunked_bodies_and_interim_answers_are_read():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        await srv.head(reader)  # the connection is reused after a chunked body
        writer.write(ok(b"again"))
        await writer.drain()

    srv = Scripted(handler)

    async def go() -> list[bytes]:
        async with srv, Http11Transport() as transport:
            return [(await get(transport, f"{srv.url}/{n}"))[2] for n in range(2)]

    assert asyncio.run(go()) == [b"hello world", b"again"]
    assert srv.connections == 1


def test_connection_close_and_a_body_left_unread_are_not_reused():
    """`Connection: close`, and a response whose reader stopped early (the rest of its
    body would be read as the next answer): each next request gets a new connection."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await srv.head(reader)
        if b"/close" in head:
            writer.write(ok(b"bye", "Connection: close"))
        else:
            writer.write(ok(b"x" * 200_000))
        await writer.drain()
        await reader.read()  # hold the connection until the client drops it

    srv = Scripted(handler)

    async def go() -> None:
        async with srv, Http11Transport() as transport:
            assert (await get(transport, f"{srv.url}/close"))[2] == b"bye"
            request = httpx.Request("GET", f"{srv.url}/big")
            response = await transport.handle_async_request(request)
            assert isinstance(response.stream, httpx.AsyncByteStream)
            async for _chunk in response.stream:
                break  # the fetcher's cap was reached: it stops reading here
            await response.aclose()
            assert (await get(transport, f"{srv.url}/close"))[2] == b"bye"

    asyncio.run(go())
    assert srv.connections == 3


def test_a_connection_the_server_closed_while_idle_is_not_used_again():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.head(reader)
        writer.write(ok(b"once"))  # keep-alive by default, and yet closed right after
        await writer.drain()

    srv = Scripted(handler)

    async def go() -> list[bytes]:
        async with srv, Http11Transport() as transport:
            first = (await get(transport, f"{srv.url}/"))[2]
            await asyncio.sleep(0.05)  # the server's FIN arrives while the connection idles
            return [first, (await get(transport, f"{srv.url}/"))[2]]

    assert asyncio.run(go()) == [b"once", b"once"]
    assert srv.connections == 2


def test_an_expired_idle_connection_is_replaced():
    async def go() -> Scripted:
        async with keep_alive(b"k") as srv:
            limits = httpx.Limits(max_connections=10, max_keepalive_connections=5,
                                  keepalive_expiry=0.01)
            async with Http11Transport(limits=limits) as transport:
                await get(transport, f"{srv.url}/")
                await asyncio.sleep(0.05)
                await get(transport, f"{srv.url}/")
            return srv

    assert asyncio.run(go()).connections == 2


# --- broken and hostile servers ---------------------------------------------------------


@pytest.mark.parametrize(("reply", "error", "words"), [
    (b"", httpx.RemoteProtocolError, "disconnected without sending a response"),
    (b"HTTP/1.1 200 OK\r\nContent-Len", httpx.RemoteProtocolError, "disconnected without"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", httpx.RemoteProtocolError,
     "peer closed connection"),
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", httpx.RemoteProtocolError, "illegal status line"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n", httpx.RemoteProtocolError,
     "buffer"),
])
def test_broken_answers_are_one_httpx_error(reply: bytes, error: type[Exception], words: str):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.head(reader)
        writer.write(reply)
        await writer.drain()

    srv = Scripted(handler)

    async def go() -> None:
        async with srv, Http11Transport() as transport:
            await get(transport, f"{srv.url}/")

    with pytest.raises(error) as caught:
        asyncio.run(go())
    message = str(caught.value)
    assert words in message and "\n" not in message, message


def test_a_server_that_never_answers_times_out():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.head(reader)
        await reader.read()

    srv = Scripted(handler)

    async def go() -> None:
        async with srv, Http11Transport() as transport:
            await get(transport, f"{srv.url}/", read=0.1)

    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(go())


def test_a_refused_connection_is_a_connect_error():
    async def go() -> None:
        async with keep_alive(b"") as srv:
            url = srv.url
        async with Http11Transport() as transport:  # the server is gone: nothing listens
            await get(transport, f"{url}/")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(go())


def test_an_endless_body_read_slowly_stays_bounded_in_memory():
    """A server streaming as fast as loopback allows while the reader dawdles: what
    waits in this process stays near READ_BUFFER_HIGH, the rest backs up in the socket."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
        while True:
            writer.write(block)
            await writer.drain()

    srv = Scripted(handler)
    buffered: list[int] = []

    async def go() -> int:
        async with srv, Http11Transport() as transport:
            request = httpx.Request("GET", f"{srv.url}/")
            response = await transport.handle_async_request(request)
            read = 0
            protocol = response.extensions["network_stream"]._protocol  # noqa: SLF001
            assert isinstance(protocol, http1._Protocol)  # noqa: SLF001
            assert isinstance(response.stream, httpx.AsyncByteStream)
            async for chunk in response.stream:
                read += len(chunk)
                await asyncio.sleep(0.002)  # a slow consumer: the server outruns it
                buffered.append(len(protocol.buffer))
                if read > 8_000_000:
                    break
            await response.aclose()
            return read

    assert asyncio.run(go()) > 8_000_000
    assert max(buffered) > http1.READ_BUFFER_LOW, "the server did outrun the reader"
    assert max(buffered) <= http1.READ_BUFFER_HIGH + 4 * 65536, max(buffered)


# --- the pool ---------------------------------------------------------------------------


def test_max_connections_makes_requests_wait_and_the_pool_timeout_holds():
    release = asyncio.Event

    async def go() -> tuple[list[bytes], type[Exception] | None]:
        gate = release()

        async def answer(head: bytes) -> bytes:
            if b"/slow" in head:
                await gate.wait()
            return ok(b"done")

        srv = answering(answer)
        async with srv:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with Http11Transport(limits=limits) as transport:
                slow = asyncio.create_task(get(transport, f"{srv.url}/slow"))
                await asyncio.sleep(0.05)
                failure: type[Exception] | None = None
                try:
                    await get(transport, f"{srv.url}/fast", pool=0.05)
                except httpx.PoolTimeout as exc:
                    failure = type(exc)
                waiting = asyncio.create_task(get(transport, f"{srv.url}/fast"))
                await asyncio.sleep(0.05)
                assert not waiting.done(), "one connection, and it is busy"
                gate.set()
                bodies = [(await slow)[2], (await waiting)[2]]
        assert srv.connections == 1
        return bodies, failure

    bodies, failure = asyncio.run(go())
    assert bodies == [b"done", b"done"]
    assert failure is httpx.PoolTimeout


def test_idle_connections_beyond_the_keepalive_limit_are_closed():
    async def go() -> int:
        servers = [keep_alive(b"s") for _ in range(3)]
        for server in servers:
            await server.__aenter__()
        limits = httpx.Limits(max_connections=10, max_keepalive_connections=2)
        async with Http11Transport(limits=limits) as transport:
            for server in servers:
                await get(transport, f"{server.url}/")
            idle = sum(len(c) for c in transport._idle.values())  # noqa: SLF001
        for server in servers:
            await server.__aexit__()
        return idle

    assert asyncio.run(go()) == 2


def test_a_cancelled_request_leaves_no_connection_behind():
    async def answer(head: bytes) -> bytes | None:
        return None if b"/hang" in head else ok(b"fine")

    srv = answering(answer)

    async def go() -> tuple[bytes, int]:
        async with srv, Http11Transport() as transport:
            task = asyncio.create_task(get(transport, f"{srv.url}/hang"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            body = (await get(transport, f"{srv.url}/ok"))[2]
            return body, transport._open  # noqa: SLF001

    body, still_open = asyncio.run(go())
    assert body == b"fine"
    assert srv.connections == 2, "the cancelled request's connection was not reused"
    assert still_open == 1, "only the idle connection of the second request is open"
