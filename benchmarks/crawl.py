"""Crawl CPU per page: weightwatch against Scrapy on the same loopback phpBB forum, with
the same detection.

The demo world (its phpBB board, demo/sites/phpbb.py) is served on 127.0.0.1 by this
process. Each crawler runs in a child process of its own, so the CPU it reports (its own
process time from the crawl's start to its end, interpreter start-up and imports left out)
excludes the server's (modules either crawler imports on first use are imported before
the clock starts too):

- weightwatch: `crawl_once` over the demo's `demo-forum` target (phpbb preset), once per
  round, each round into a fresh copy of a database where the demo release is registered,
  through one fetcher and with every store open before the clock starts (the daemon keeps
  one fetcher and one store); pages are the requests the adapter made through the fetcher.
  What each run records is read back after the clock stops.
- Scrapy: a spider reading the same board with the same phpBB selectors (parsel's CSS):
  listing pages, then each topic page by page; each post becomes the same kind of Document
  and goes through the same detector set (`build_detectors` over the same registered
  database: rules and digests). Nothing is stored (Scrapy has no store; weightwatch's
  SQLite writes are counted in its CPU, as in production).

Both crawlers read robots.txt; the fetcher's politeness spacing is 1 ms (the demo's own is
10 ms) and Scrapy runs with DOWNLOAD_DELAY 0, so neither waits much, and pages/s is
reported beside CPU for what it is.

Each crawler runs `--repeats` times with `--rounds` crawls of the board and as often with
one. CPU per page is reported two ways, medians of the repeats: over the long run (start-up
of the crawl spread over its pages), and in the steady state a daemon lives in: the CPU the
extra rounds cost per extra page (long run minus one-round run), which leaves out what
either crawler spends once (Scrapy's engine and reactor, weightwatch's first connection and
first statements). The issue's target is the steady-state ratio weightwatch / Scrapy <= 1.0.
The hits of both are compared (post URL, kind, indicator), to show both ran the detectors
on the same posts.

Then the parsers themselves on every page the crawl read, parse only, median of
`--repeats`, as a ratio to bs4 with its lxml builder (what parse_html was before issue 16):
weightwatch's parse_html (lxml, with its caps and bs4's encoding detection), lxml.html
directly and selectolax (when installed).

    pip install -e '.[bench]'
    python benchmarks/crawl.py --rounds 10 --repeats 5

Scrapy is in the `bench` extra only; without it the weightwatch half still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = "demo-forum"


# ------------------------------------------------------------------------------ workers


def _config(config_path: str) -> Any:
    from monitor.config import load_config

    return load_config(Path(config_path))


def ww_worker(config_path: str, template: str, rounds: int) -> dict[str, Any]:
    from monitor.crawler import crawl_once
    from monitor.fetch import Fetcher
    from monitor.logs import configure_logging
    from monitor.store import Store

    configure_logging("error")
    # What a crawl imports on first use (the weight-link detector with its tensor readers,
    # httpcore's asyncio backend) is a cost per process, like the imports above: left out.
    import anyio._backends._asyncio  # noqa: F401

    import monitor.detect.weights  # noqa: F401

    config = _config(config_path)
    target = next(t for t in config.targets if t.name == TARGET)
    work = Path(tempfile.mkdtemp(prefix="ww-crawl-"))
    dbs = [work / f"r{i}.db" for i in range(rounds)]
    for db in dbs:  # copied before the clock starts: a fresh database is set-up, not crawling
        shutil.copyfile(template, db)

    class Counting(Fetcher):
        pages = 0

        async def get(self, *args: Any, **kwargs: Any) -> Any:
            Counting.pages += 1
            return await super().get(*args, **kwargs)

    # Open before the clock, closed after it: the daemon keeps its store open.
    stores = [Store(db) for db in dbs]

    async def crawl_all() -> None:
        # One fetcher for every round, as the daemon keeps one (the CA bundle, read at
        # the first https connection, is read once per process anyway).
        async with Counting(config.crawl) as fetcher:
            for store in stores:
                results = await crawl_once(config, store, [target], fetcher)
                assert results[0].status == "ok", results[0].error

    cpu0, wall0 = time.process_time(), time.perf_counter()
    asyncio.run(crawl_all())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    hits = 0
    found: set[tuple[str, str, str]] = set()
    for store in stores:
        rows = store.hits(target=TARGET)
        hits += len(rows)
        found.update((h["url"], h["kind"], h["indicator"].lower()) for h in rows)
        store.close()
    shutil.rmtree(work, ignore_errors=True)
    return {"pages": Counting.pages, "cpu": cpu, "wall": wall, "hits": hits,
            "found": sorted(found)}


def scrapy_worker(config_path: str, template: str, rounds: int) -> dict[str, Any]:
    import scrapy
    import scrapy.dupefilters  # noqa: F401 (imported on first use, as above)
    import scrapy.pqueues  # noqa: F401
    import scrapy.squeues  # noqa: F401
    from scrapy.crawler import CrawlerProcess

    from monitor.detect import build_detectors, detect_all
    from monitor.models import Document
    from monitor.sources.forum import PHPBB, iso_time, thread_url
    from monitor.store import Store

    config = _config(config_path)
    target = next(t for t in config.targets if t.name == TARGET)
    store = Store(Path(template))
    detectors = build_detectors(config, store)
    state = {"pages": 0, "hits": 0}
    found: set[tuple[str, str, str]] = set()

    class PhpbbSpider(scrapy.Spider):  # type: ignore[misc]
        name = "phpbb"

        async def start(self) -> Any:
            for _ in range(rounds):
                yield scrapy.Request(target.url, self.parse_listing, dont_filter=True)

        def parse_listing(self, response: Any) -> Any:
            state["pages"] += 1
            for href in response.css(PHPBB["thread_link"] + "::attr(href)").getall():
                yield scrapy.Request(thread_url(response.urljoin(href)), self.parse_topic,
                                     dont_filter=True)
            nxt = response.css(PHPBB["listing_next"] + "::attr(href)").get()
            if nxt:
                yield scrapy.Request(response.urljoin(nxt), self.parse_listing,
                                     dont_filter=True)

        def parse_topic(self, response: Any) -> Any:
            state["pages"] += 1
            key_base = thread_url(response.url)
            for post in response.css(PHPBB["post"]):
                anchor = post.attrib.get("id", "")
                body = post.css(PHPBB["body"])
                text = "\n".join(s.strip() for s in body.css("*::text").getall() if s.strip())
                links = [response.urljoin(h) for h in body.css("a::attr(href)").getall()]
                doc = Document(
                    target=target.name, key=f"{key_base}#{anchor}", url=f"{key_base}#{anchor}",
                    title=" ".join(post.css(PHPBB["subject"] + " ::text").getall()).strip(),
                    author=" ".join(post.css(PHPBB["author"].split(",")[0] + " ::text")
                                    .getall()).strip(),
                    posted_at=iso_time(post.css(PHPBB["time"] + "::attr(datetime)").get()),
                    text=text, links=links)
                hits = detect_all(detectors, doc)
                state["hits"] += len(hits)
                found.update((h.url, h.kind, h.indicator.lower()) for h in hits)
            nxt = response.css(PHPBB["next_page"] + "::attr(href)").get()
            if nxt:
                yield scrapy.Request(response.urljoin(nxt), self.parse_topic, dont_filter=True)

    process = CrawlerProcess(settings={
        "LOG_LEVEL": "ERROR", "ROBOTSTXT_OBEY": True, "DOWNLOAD_DELAY": 0,
        "TELNETCONSOLE_ENABLED": False, "COOKIES_ENABLED": False,
        "REQUEST_FINGERPRINTER_IMPLEMENTATION": "2.7"})
    process.crawl(PhpbbSpider)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    process.start()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    store.close()
    return {"pages": state["pages"], "cpu": cpu, "wall": wall, "hits": state["hits"],
            "found": sorted(found)}


WORKERS = {"weightwatch": ww_worker, "scrapy": scrapy_worker}


# ------------------------------------------------------------------------------ parent


def run_worker(kind: str, config_path: Path, template: Path, rounds: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(config_path),
                          str(template), str(rounds)], capture_output=True, text=True,
                         check=False, env={**os.environ, "PYTHONHASHSEED": "0"})
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def parser_times(pages: list[bytes], repeats: int) -> dict[str, float]:
    """Seconds to parse every page once, median of `repeats`, per parser."""
    import lxml.html
    from bs4 import BeautifulSoup

    from monitor.parsing import parse_html

    parsers: dict[str, Any] = {"bs4 (lxml builder)": lambda page: BeautifulSoup(page, "lxml"),
                               "parse_html (lxml)": parse_html,
                               "lxml.html": lxml.html.document_fromstring}
    try:
        from selectolax.lexbor import LexborHTMLParser
        parsers["selectolax (lexbor)"] = LexborHTMLParser
    except ImportError:
        pass
    times: dict[str, float] = {}
    for name, parse in parsers.items():
        runs = []
        for _ in range(repeats):
            start = time.process_time()
            for page in pages:
                parse(page)
            runs.append(time.process_time() - start)
        times[name] = statistics.median(runs)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="crawls of the board per run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per crawler (medians)")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, config_path, template, rounds = args.worker
        print(json.dumps(WORKERS[kind](config_path, template, int(rounds))))
        return 0

    import httpx

    from demo.release import make_release
    from demo.runner import demo_config, register_demo_release
    from demo.world import DemoWorld
    from monitor.logs import configure_logging
    from monitor.store import Store

    configure_logging("error")
    try:
        import scrapy  # noqa: F401
        kinds = ["weightwatch", "scrapy"]
    except ImportError:
        print("Scrapy is not installed (pip install -e '.[bench]'): weightwatch only")
        kinds = ["weightwatch"]
    with tempfile.TemporaryDirectory(prefix="crawl-bench-") as tmp:
        work = Path(tmp)
        release = make_release(work / "release")
        with DemoWorld(release) as world:
            config_path = work / "config.toml"
            text = demo_config(world, 2525, config_path).replace('host_delay = "10ms"',
                                                                 'host_delay = "1ms"')
            config_path.write_text(text)
            template = work / "registered.db"
            with Store(template) as store:
                register_demo_release(store, release)
            long: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            short: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for _ in range(args.repeats):
                for kind in kinds:  # interleaved, so a burst of load hits both alike
                    long[kind].append(run_worker(kind, config_path, template, args.rounds))
                    short[kind].append(run_worker(kind, config_path, template, 1))
            pages_bodies = _forum_pages(_config(str(config_path)), httpx)
        print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min), "
              f"{os.cpu_count()} cores; {args.rounds} crawls of the board a run (and one), "
              f"medians of {args.repeats} runs")
        overall, steady = {}, {}
        for kind in kinds:
            runs, ones = long[kind], short[kind]
            pages, extra = runs[0]["pages"], runs[0]["pages"] - ones[0]["pages"]
            overall[kind] = statistics.median(r["cpu"] / r["pages"] * 1000 for r in runs)
            steady[kind] = statistics.median(
                (r["cpu"] - o["cpu"]) / extra * 1000 for r, o in zip(runs, ones)) \
                if extra > 0 else overall[kind]
            rate = statistics.median(r["pages"] / r["wall"] for r in runs)
            print(f"{kind:12} {pages:5d} pages  {overall[kind]:6.2f} ms CPU/page over the run, "
                  f"{steady[kind]:6.2f} in the steady state  {rate:7.1f} pages/s  "
                  f"{runs[0]['hits']} hits")
        if "scrapy" in overall:
            same = long["weightwatch"][0]["found"] == long["scrapy"][0]["found"]
            print(f"same hits (post URL, kind, indicator): {'yes' if same else 'NO'}")
            print(f"CPU per page, weightwatch / Scrapy: over the run "
                  f"{overall['weightwatch'] / overall['scrapy']:.2f}, in the steady state "
                  f"{steady['weightwatch'] / steady['scrapy']:.2f} (target <= 1.0)")
        times = parser_times(pages_bodies, args.repeats)
        reference = times["bs4 (lxml builder)"]
        print(f"parse only, {len(pages_bodies)} forum pages "
              f"({sum(map(len, pages_bodies)) // 1024} KB):")
        for name, seconds in times.items():
            print(f"  {name:22} {seconds / len(pages_bodies) * 1000:6.2f} ms/page  "
                  f"{seconds / reference:5.2f}x bs4")
    return 0


def _forum_pages(config: Any, httpx: Any) -> list[bytes]:
    """Every page of the demo phpBB board (listing and topics), fetched once."""
    from monitor.parsing import compile_css, parse_html
    from monitor.sources.forum import PHPBB

    target = next(t for t in config.targets if t.name == TARGET)
    pages, todo, seen = [], [target.url], set()
    with httpx.Client(timeout=10) as client:
        while todo:
            url = todo.pop()
            if url in seen:
                continue
            seen.add(url)
            resp = client.get(url)
            if resp.status_code != 200:
                continue
            pages.append(resp.content)
            page = parse_html(resp.content, url)
            for css in (PHPBB["thread_link"], PHPBB["next_page"]):
                for a in compile_css(css).select(page):
                    todo.append(str(httpx.URL(url).join(str(a.get("href")))))
    return pages


if __name__ == "__main__":
    sys.exit(main())
