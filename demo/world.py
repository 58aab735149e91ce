"""The demo world: a loopback HTTP server that imitates real sources and leaks heron-7b.

Every source is a site (`demo.web.Site`, registered in `demo.sites.SITES`) mounted under its
own path prefix of one port, each shaped like the real system it stands for (see
/work/shared/reference/sources.md), so a crawler that works here works out there. The three
core sources are a phpBB board (`/forum/`), the 4chan read-only API (`/4chan/`) and a NyaaV2
torrent index (`/torrents/`); the others are forums, feeds, social sites, a model hub, a
paste site and Torznab indexers. Beside the web sites, `demo.dht` runs a BitTorrent DHT of
real libtorrent sessions on loopback, with a re-pack of the release that no index lists.

Leaks of the demo release are planted among realistic noise (herons the bird, llamas the
animal, other models, near-miss digests). `DemoWorld.planted` is the ground truth a correct
crawler plus detectors must find, `DemoWorld.near_misses` what they must not match, and
`DemoWorld.noise_urls` the documents that must produce no hit at all.

Everything is deterministic: fixed timestamps around 2026-11-20 and fixed random seeds.
Only stdlib, numpy and fastbencode are used so the world never depends on the code it tests.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from demo.dht import DemoDht
from demo.release import Release
from demo.sites import SITES
from demo.sites.nyaa import MANIFEST_MIN_FILE
from demo.web import (
    MENTION_PATTERN,
    Doc,
    NearMiss,
    Planted,
    Request,
    Response,
    Site,
    esc,
    html_response,
    mention,
    not_found,
    ranged,
    redirect,
)

CORE_SOURCES = ("forum", "imageboard", "torrents")

SiteT = TypeVar("SiteT", bound=Site)


def _handler_class(world: DemoWorld) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keep-alive like the real sites; every response sets Content-Length.
        protocol_version = "HTTP/1.1"
        # Idle keep-alive connections end instead of pinning a thread forever.
        timeout = 30
        # Headers and body go out in separate writes; with Nagle on, each keep-alive
        # response would wait ~40 ms for the client's delayed ACK.
        disable_nagle_algorithm = True
        _server_name = "nginx"

        def version_string(self) -> str:
            return self._server_name

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # quiet: the demo's output is the monitor's, not an access log

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def _serve(self, body: bool) -> None:
            # Read per request, so a test can slow a running world down (to have a crawl in
            # progress when it kills the process) without moving it to another port.
            if world.delay:
                time.sleep(world.delay)
            parts = urlsplit(self.path)
            req = Request(self.command, parts.path, parse_qs(parts.query),
                           {k.lower(): v for k, v in self.headers.items()})
            try:
                resp = ranged(req, world.handle(req))
            except Exception:  # a bug in the world must not look like a dead source
                resp = Response(500, b"<h1>Internal Server Error</h1>\n")
            self._server_name = resp.server
            self.send_response(resp.status)
            if resp.status != 304:
                self.send_header("Content-Type", resp.content_type)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if body and resp.status != 304:
                self.wfile.write(resp.body)

    return Handler


class DemoWorld:
    """The demo sources on a free loopback port, served from a daemon thread.

    Use it as a context manager. `base_url` and `planted` exist once started, because the
    planted URLs are absolute and the port is only known then.
    """

    def __init__(self, release: Release, *, delay: float = 0.0) -> None:
        self.release = release
        self.delay = delay
        self.sites: list[Site] = [cls(release) for cls in SITES]
        self._mounts = {f"/{site.prefix}": site for site in self.sites}
        if len(self._mounts) != len(self.sites):
            raise ValueError("two demo sites share a prefix")
        self.dht = DemoDht(release)  # not a site: its documents are in no web page
        self._base_url = ""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> DemoWorld:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._base_url = f"http://127.0.0.1:{server.server_address[1]}"
        for site in self.sites:
            site.base_url = self._base_url
        self._thread = threading.Thread(target=server.serve_forever, name="demo-world",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        try:
            self.dht.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.dht.stop()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> DemoWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _require_started(self) -> None:
        if self._server is None:
            raise RuntimeError("DemoWorld is not started; use start() or a with-block")

    def site(self, cls: type[SiteT]) -> SiteT:
        """The world's own instance of a site (its base URL set once started)."""
        return next(s for s in self.sites if isinstance(s, cls))

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request) -> Response:
        path = req.path
        if path == "/robots.txt":
            return Response(200, b"User-agent: *\nDisallow:\n", "text/plain; charset=utf-8")
        if path == "/":
            return self.landing()
        prefix = "/" + path[1:].split("/", 1)[0]
        site = self._mounts.get(prefix)
        if site is None:
            return not_found()
        if path == prefix:
            return redirect(prefix + "/")
        return site.handle(req, path[len(prefix):])

    def landing(self) -> Response:
        return html_response(
            "<!DOCTYPE html>\n<html><head><title>weightwatch demo world</title></head><body>"
            "<h1>weightwatch demo world</h1><ul>"
            + "".join(f'<li><a href="{esc(site.entry_url)}">{esc(site.title)}</a></li>'
                      for site in self.sites)
            + "</ul></body></html>\n")

    # ---------------------------------------------------------------- ground truth

    @property
    def base_url(self) -> str:
        self._require_started()
        return self._base_url

    @property
    def urls(self) -> dict[str, str]:
        """Entry points a crawler's targets start from, by source."""
        self._require_started()
        return {site.source: site.entry_url for site in self.sites}

    def targets_toml(self) -> str:
        """`[[targets]]` tables for every site, for the demo's config.toml."""
        self._require_started()
        tables = [*(site.target_toml() for site in self.sites), self.dht.target_toml()]
        return "".join("\n" + table.strip() + "\n" for table in tables)

    @property
    def documents(self) -> list[Doc]:
        """Every document a crawler attributes content to, with what was planted in it."""
        self._require_started()
        return [doc for site in self.sites for doc in site.documents()] + self.dht.documents()

    @property
    def planted(self) -> list[Planted]:
        """Every leak indicator in the world: what a correct crawl must report."""
        out: list[Planted] = []
        for doc in self.documents:
            # Mentions are found, not declared: whatever the text says is the truth.
            phrase = mention(doc.text)
            if phrase:
                out.append(Planted(doc.source, doc.url, "mention", phrase,
                                   f"'{phrase}' matches heron[- _]?7b"))
            out += [Planted(doc.source, doc.url, kind, indicator.lower(), note)
                    for kind, indicator, note in doc.plants]
        return out

    @property
    def near_misses(self) -> list[NearMiss]:
        """Bait: values that resemble indicators but must not match them."""
        return [NearMiss(doc.source, doc.url, kind, value, note)
                for doc in self.documents for kind, value, note in doc.near]

    @property
    def document_urls(self) -> list[str]:
        """Every document a crawler attributes content to (post, thread post, listing row)."""
        return [doc.url for doc in self.documents]

    @property
    def noise_urls(self) -> list[str]:
        """Documents with nothing planted: any hit on one of these is a false positive."""
        hit = {p.url for p in self.planted}
        return [url for url in self.document_urls if url not in hit]


__all__ = ["CORE_SOURCES", "MANIFEST_MIN_FILE", "MENTION_PATTERN", "DemoWorld", "NearMiss",
           "Planted"]
