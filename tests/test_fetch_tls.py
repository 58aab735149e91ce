"""The CA bundle is read once per process, and only when an https connection needs it
(issue 16: reading it cost ~47 ms of CPU for every fetcher and proxy client)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from support import FAST, Canned, target

from monitor import fetch
from monitor.fetch import Fetcher, FetchError


def test_the_ca_bundle_is_read_once_and_only_for_https(
        monkeypatch: pytest.MonkeyPatch, serve: Callable[..., Canned]) -> None:
    reads: list[bool] = []
    real = httpx.create_ssl_context

    def counting(*args, **kwargs):
        reads.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    fetch.ssl_context.cache_clear()
    server = serve()
    url = server.serve("/page", "<p>plain http</p>")
    tls_url = url.replace("http://", "https://")  # the same server: the handshake fails

    async def crawl() -> None:
        for passes in range(2):  # two fetchers, as two passes of the daemon may build
            async with Fetcher(FAST) as fetcher:
                page = await fetcher.get(url, target("forum", url))
                assert page.body == b"<p>plain http</p>"
                assert len(reads) == passes  # not read for http, then not again
                with pytest.raises(FetchError):
                    await fetcher.get(tls_url, target("forum", tls_url))

    try:
        asyncio.run(crawl())
        assert len(reads) == 1
    finally:
        fetch.ssl_context.cache_clear()


def test_plain_http_alone_reads_no_ca_bundle(monkeypatch: pytest.MonkeyPatch,
                                             serve: Callable[..., Canned]) -> None:
    monkeypatch.setattr(httpx, "create_ssl_context", lambda *a, **k: pytest.fail("CA read"))
    fetch.ssl_context.cache_clear()
    url = serve().serve("/page", "<p>plain http</p>")

    async def crawl() -> bytes:
        async with Fetcher(FAST) as fetcher:
            return (await fetcher.get(url, target("forum", url))).body

    try:
        assert asyncio.run(crawl()) == b"<p>plain http</p>"
    finally:
        fetch.ssl_context.cache_clear()
