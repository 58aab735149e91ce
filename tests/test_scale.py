"""Workers on a real Redis: the demo world's hits are exactly the one-machine run's, with no
duplicate hit or email after a worker is killed with `kill -9` mid-crawl, and per-host
spacing holds across workers (docs/scaling.md).

A real `redis-server` (Debian's package; `.ci/run` installs it) runs on a loopback port
of the test's own, with no persistence. The scheduler and writer (`weightwatch run
--queue`) and three workers (`weightwatch worker`) are real processes against a demo world
served in this process, which records when each request arrives.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
import redis

from demo.runner import DEMO_KEY, DEMO_KEY_ENV, demo_config, register_demo_release
from demo.smtp_sink import SmtpSink, free_port
from demo.web import Request, Response
from demo.world import DemoWorld
from monitor.config import load_config
from monitor.crawler import crawl_once
from monitor.queue import Queue, QueueError, RedisGate
from monitor.store import Store

pytestmark = pytest.mark.slow

SPACING = 0.05  # the test config's host_delay: every demo site is one host


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing (.ci/run installs Debian's redis-server)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


def ww(config: Path, db: Path | None, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """A weightwatch process, its log (stderr) in `log`: a pipe nobody reads would fill
    and stop it."""
    where = ["--db", str(db)] if db is not None else []
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "monitor", "--config", str(config),
                                 *where, *args], stdout=subprocess.DEVNULL, stderr=out,
                                env={**os.environ, DEMO_KEY_ENV: DEMO_KEY})


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def hit_rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return sorted(conn.execute(
            "SELECT dedup_key, kind, severity, indicator, model, artifact, recipient, rule, "
            "target, url, matcher_version FROM hits"))


def test_three_workers_and_a_kill_give_the_one_machine_hits(demo_release, redis_url, tmp_path):
    os.environ.setdefault(DEMO_KEY_ENV, DEMO_KEY)
    arrivals: list[float] = []
    with SmtpSink(tmp_path / "mail") as sink, DemoWorld(demo_release) as world:
        handle = world.handle

        def recorded(req: Request) -> Response:
            arrivals.append(time.monotonic())
            return handle(req)

        world.handle = recorded  # type: ignore[method-assign]
        config_path = tmp_path / "config.toml"
        text = demo_config(world, sink.port, config_path)
        assert 'host_delay = "10ms"' in text
        config_path.write_text(text.replace('host_delay = "10ms"', f'host_delay = "{SPACING}s"'))
        config = load_config(config_path)
        one, many = tmp_path / "one.db", tmp_path / "many.db"
        for db in (one, many):
            with Store(db) as store:
                register_demo_release(store, demo_release)
        with Store(one) as store:
            results = __import__("asyncio").run(crawl_once(config, store, config.targets))
        assert all(r.status == "ok" for r in results)
        expected = hit_rows(one)
        assert len(expected) >= 80

        arrivals.clear()
        world.delay = 0.02  # long enough runs that a worker can be killed in one
        run_log = tmp_path / "run.log"
        writer = ww(config_path, many, "run", "--queue", redis_url, log=run_log)
        workers = [ww(config_path, None, "worker", "--queue", redis_url, "--cache-dir",
                      str(tmp_path / f"cache{i}"), log=tmp_path / f"worker{i}.log")
                   for i in range(3)]
        queue = Queue(redis_url)
        try:
            victim = _wait_for_a_worker_mid_run(queue, workers)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
            workers.append(ww(config_path, None, "worker", "--queue", redis_url,
                              "--cache-dir", str(tmp_path / "cache-new"),
                              log=tmp_path / "worker-new.log"))
            _wait_until_every_target_ran(many, [t.name for t in config.targets], writer, run_log)
            # What the surviving workers sent is applied before the writer stops.
            deadline = time.monotonic() + 30
            while queue.depth()["write"] and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            writer.send_signal(signal.SIGTERM)
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for proc in [writer, *workers]:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            queue.close()
        assert writer.returncode == 0, tail(run_log)

        # The one-machine hits, exactly: no hit missed, none doubled, same evidence.
        assert hit_rows(many) == expected
        with sqlite3.connect(f"file:{many}?mode=ro", uri=True) as conn:
            runs = dict(conn.execute("SELECT status, COUNT(*) FROM crawl_runs GROUP BY status"))
            outbox = conn.execute(
                "SELECT hit_id, COUNT(*), MIN(status), MAX(message_id) FROM outbox "
                "WHERE channel = 'email' GROUP BY hit_id").fetchall()
        assert runs.get("interrupted", 0) >= 1, runs  # the killed worker's run, taken back
        assert len(outbox) == len(expected) and {o[1] for o in outbox} == {1}
        assert {o[2] for o in outbox} == {"sent"}
        # Each alert email once: the messages received are the outbox's, no message twice.
        sent_ids = {o[3] for o in outbox}
        assert sink.wait_for(len(sent_ids), timeout=10)
        received = [str(message_from_bytes(m, policy=default_policy)["Message-ID"]).strip()
                    for m in sink.messages]
        assert len(received) == len(set(received)) == len(sent_ids)
        assert set(received) == sent_ids



def _wait_for_a_worker_mid_run(queue: Queue,
                               workers: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    by_pid = {w.pid: w for w in workers}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for beat in queue.beats():
            if beat["current"] and beat["pid"] in by_pid and beat["tasks_done"] >= 1:
                return by_pid[beat["pid"]]
        time.sleep(0.05)
    raise AssertionError("no worker took a crawl order within 60 s")


def _wait_until_every_target_ran(db: Path, targets: list[str],
                                 writer: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert writer.poll() is None, tail(log)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            done = {row[0] for row in conn.execute(
                "SELECT target FROM crawl_runs WHERE status = 'ok'")}
            running = conn.execute(
                "SELECT COUNT(*) FROM crawl_runs WHERE status = 'running'").fetchone()[0]
        if done >= set(targets) and not running:
            return
        time.sleep(0.5)
    raise AssertionError(f"targets never finished: {sorted(set(targets) - done)}\n{tail(log)}")


def test_per_host_spacing_holds_across_workers(demo_release, redis_url, tmp_path):
    """Three workers crawl three targets of one host at once: their requests still come
    one slot apart. Each slot is taken on Redis's clock at least `spacing` after the one
    before, so however a loaded machine delays single requests on their way, they cannot
    come in faster than that on average; three workers each spacing only their own
    requests would take about a third of the time."""
    spacing = 0.25
    arrivals: list[float] = []
    chosen = ("demo-forum", "demo-vbulletin", "demo-xenforo", "demo-torrents")
    with SmtpSink(tmp_path / "mail") as sink, DemoWorld(demo_release) as world:
        handle = world.handle

        def recorded(req: Request) -> Response:
            arrivals.append(time.monotonic())
            return handle(req)

        world.handle = recorded  # type: ignore[method-assign]
        config_path = tmp_path / "config.toml"
        text = demo_config(world, sink.port, config_path)
        config_path.write_text(text.replace('host_delay = "10ms"', f'host_delay = "{spacing}s"'))
        names = [t.name for t in load_config(config_path).targets]
        for name in set(names) - set(chosen):  # only these four run
            text = text.replace(f'name = "{name}"\n', f'name = "{name}"\nenabled = false\n')
        config_path.write_text(text.replace('host_delay = "10ms"', f'host_delay = "{spacing}s"'))
        db = tmp_path / "many.db"
        with Store(db) as store:
            register_demo_release(store, demo_release)
        run_log = tmp_path / "run.log"
        writer = ww(config_path, db, "run", "--queue", redis_url, log=run_log)
        workers = [ww(config_path, None, "worker", "--queue", redis_url, "--cache-dir",
                      str(tmp_path / f"cache{i}"), log=tmp_path / f"worker{i}.log")
                   for i in range(3)]
        try:
            _wait_until_every_target_ran(db, list(chosen), writer, run_log)
        finally:
            for proc in [writer, *workers]:
                proc.send_signal(signal.SIGTERM)
            for proc in [writer, *workers]:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            workers_used = {row[0] for row in conn.execute("SELECT target FROM crawl_runs")}
        assert workers_used == set(chosen)
    assert len(arrivals) > 30
    span = arrivals[-1] - arrivals[0]
    assert span >= (len(arrivals) - 1) * spacing * 0.9, (span, len(arrivals))


def test_a_message_that_is_not_ours_is_refused_not_run(redis_url):
    queue = Queue(redis_url)
    try:
        # A pickle in the write queue (what Huey's default serializer would load): the
        # writer refuses it whole and goes on with the next message.
        conn = queue.redis()
        assert conn is not None
        conn.lpush("huey.redis.weightwatchwrite",
                   b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system")
        seen: list[int] = []
        queue.on_touch = lambda run_id, target, key: seen.append(run_id)
        queue.touch(7, "board", "post-1")
        assert queue.drain_writes(10) == 2
        assert seen == [7]
        with pytest.raises(QueueError):
            queue.writes.deserialize_task(b"\x80\x04N.")
    finally:
        queue.close()


def test_the_redis_gate_spaces_starts_across_clients(redis_url):
    import asyncio

    first = RedisGate(redis.Redis.from_url(redis_url), prefix="weightwatch:test-gate:")
    second = RedisGate(redis.Redis.from_url(redis_url), prefix="weightwatch:test-gate:")

    async def waits() -> list[float]:
        return [await g.wait("Example.org", 10.0) for g in (first, second, first)]

    got = asyncio.run(waits())
    assert got[0] == pytest.approx(0.0, abs=0.05)
    assert got[1] == pytest.approx(10.0, abs=0.5)
    assert got[2] == pytest.approx(20.0, abs=0.5)
    # Another host has slots of its own.
    assert asyncio.run(second.wait("other.example", 10.0)) == pytest.approx(0.0, abs=0.05)


def test_the_redis_gate_holds_a_hosts_slots_across_clients(redis_url):
    import asyncio

    first = RedisGate(redis.Redis.from_url(redis_url), prefix="weightwatch:test-slots:")
    second = RedisGate(redis.Redis.from_url(redis_url), prefix="weightwatch:test-slots:")

    async def scenario() -> None:
        held = await first.acquire("example.org", 1, 30.0)
        with pytest.raises(TimeoutError):  # the one slot is taken, by another client
            await asyncio.wait_for(second.acquire("example.org", 1, 30.0), 0.3)
        await first.release("example.org", held)
        token = await asyncio.wait_for(second.acquire("example.org", 1, 30.0), 2)
        await second.release("example.org", token)
        # A holder that never releases (a killed worker) frees its slot after its lease.
        await first.acquire("example.org", 1, 0.3)
        await asyncio.wait_for(second.acquire("example.org", 1, 30.0), 3)

    asyncio.run(scenario())


def test_fetchers_sharing_a_gate_share_host_slots_and_robots(redis_url, serve):
    """Two fetchers (two workers' worth) on one host with host_concurrency 1: never two
    requests at once at the host, and its robots.txt read once for both."""
    import asyncio

    from support import target

    from monitor.config import CrawlSettings
    from monitor.fetch import Fetcher

    def slow(_request: object) -> tuple[int, bytes]:
        time.sleep(0.05)
        return 200, b"<p>page</p>"

    site = serve({"/robots.txt": (200, b"User-agent: *\nDisallow: /private\n")}, default=slow)
    settings = CrawlSettings(host_delay=0.001, host_concurrency=1, request_timeout=5,
                             run_timeout=60, retries=0)
    prefix = f"weightwatch:test-fetch-{time.monotonic_ns()}:"
    t = target("forum", site.base + "/")

    async def worker(gate: RedisGate, pages: range) -> None:
        async with Fetcher(settings, gate=gate) as fetcher:
            for n in pages:
                await fetcher.get(f"{site.base}/p{n}", t)

    async def both() -> None:
        gates = [RedisGate(redis.Redis.from_url(redis_url), prefix=prefix) for _ in range(2)]
        await asyncio.gather(worker(gates[0], range(0, 6)), worker(gates[1], range(6, 12)))

    asyncio.run(both())
    paths = [r.path for r in site.requests]
    assert sorted(p for p in paths if p != "/robots.txt") == sorted(f"/p{n}" for n in range(12))
    assert paths.count("/robots.txt") == 1
    assert site.max_active == 1


def test_a_bad_or_unreachable_queue_is_one_line_and_keeps_its_password(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[[targets]]\nname = "board"\nkind = "imageboard"\n'
                      'url = "http://127.0.0.1:9/g/"\n')

    def worker(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor", "--config", str(config),
                               "worker", "--queue", url], capture_output=True, text=True,
                              timeout=60, check=False)

    bad = worker("amqp://127.0.0.1/x")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["weightwatch: --queue amqp://127.0.0.1/x: a queue is "
                                       "sqlite:///path or redis://host:port/db"]
    down = worker(f"redis://:hunter2@127.0.0.1:{free_port()}/0")  # nothing listens there
    assert down.returncode == 1
    assert len(down.stderr.splitlines()) == 1
    assert "cannot reach the queue" in down.stderr and "hunter2" not in down.stderr


def test_a_damaged_or_oversized_registry_snapshot_is_refused(tmp_path):
    import zlib

    from monitor.worker import _inflate

    data = zlib.compress(b"SQLite format 3\x00" + b"\x00" * 4096)
    assert _inflate(data, 1 << 20).startswith(b"SQLite format 3")
    with pytest.raises(QueueError, match="damaged"):
        _inflate(data[:-8], 1 << 20)  # cut short
    with pytest.raises(QueueError, match="damaged"):
        _inflate(b"not zlib at all", 1 << 20)
    bomb = zlib.compress(b"\x00" * (8 << 20))  # 8 MiB from a few KB
    with pytest.raises(QueueError, match="over 1048576 bytes"):
        _inflate(bomb, 1 << 20)
