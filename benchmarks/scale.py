"""Throughput of `run --queue` with 1, 2 and 4 workers on a real Redis (docs/scaling.md).

Two worlds, both served on 127.0.0.1 by this process:

- the demo world (every demo target, the demo release registered);
- a generated model hub of `--models` models (the Hugging Face API shapes the `hub` kind
  reads: search pages by `Link: rel="next"`, each model's info with its files' LFS
  SHA-256s), its weight files real 64 KiB safetensors files served by Range, which workers
  range-scan (unregistered digests: the fingerprint decides). The sweep is split in 8
  targets by query, as an operator would shard a hub-wide sweep.

For each world and worker count: a fresh database (the demo release registered), a
`redis-server` of its own, `weightwatch run --queue` (scheduler and writer) and N
`weightwatch worker` processes, until every target has a finished run and the write queue
is empty. Printed: documents, wall seconds, documents per second and its ratio to one
worker, CPU milliseconds per document (every process, from the kernel's accounting of each
child), and the writer's share of that CPU (its headroom: a writer at 100% of one core is
the ceiling). Host spacing is 1 ms here: the benchmark measures work, not politeness.

    python benchmarks/scale.py                 # demo world and a 10,000-model hub
    python benchmarks/scale.py --models 2000 --workers 1 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.release import make_release  # noqa: E402
from demo.runner import DEMO_KEY, DEMO_KEY_ENV, demo_config, register_demo_release  # noqa: E402
from demo.smtp_sink import SmtpSink  # noqa: E402
from demo.world import DemoWorld  # noqa: E402
from monitor.store import Store  # noqa: E402

SHARDS = 8
PAGE = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def safetensors_file(seed: int) -> bytes:
    """A real safetensors file (two F32 tensors, 64 KiB of data)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((64, 128), dtype=np.float32).tobytes()
    b = rng.standard_normal((64, 128), dtype=np.float32).tobytes()
    header = json.dumps({"w1": {"dtype": "F32", "shape": [64, 128], "data_offsets": [0, len(a)]},
                         "w2": {"dtype": "F32", "shape": [64, 128],
                                "data_offsets": [len(a), len(a) + len(b)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + a + b


class Hub:
    """A generated hub of `models` models in SHARDS shards (`q=shard-K`)."""

    def __init__(self, models: int):
        self.models = models
        self.weights = [safetensors_file(i) for i in range(16)]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self, shard: int) -> list[str]:
        return [f"org{shard}/model-{i}" for i in range(shard, self.models, SHARDS)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                headers: dict[str, str] = {"Content-Type": "application/json"}
                status, body = 200, b""
                if parts.path == "/robots.txt":
                    body, headers = b"User-agent: *\nDisallow:\n", {"Content-Type": "text/plain"}
                elif parts.path == "/api/models":
                    shard = int(query.get("search", ["shard-0"])[0].rsplit("-", 1)[1])
                    page = int(query.get("p", ["0"])[0])
                    ids = hub.ids(shard)
                    items = [{"id": mid, "lastModified": "2026-12-01T00:00:00.000Z"}
                             for mid in ids[page * PAGE:(page + 1) * PAGE]]
                    body = json.dumps(items).encode()
                    if (page + 1) * PAGE < len(ids):
                        nxt = f"{hub.url}/api/models?search=shard-{shard}&p={page + 1}"
                        headers["Link"] = f'<{nxt}>; rel="next"'
                elif parts.path.startswith("/api/models/"):
                    mid = parts.path[len("/api/models/"):]
                    weights = hub.weights[int(hashlib.sha256(mid.encode()).hexdigest(), 16) % 16]
                    body = json.dumps({
                        "id": mid, "sha": hashlib.sha1(mid.encode()).hexdigest(),
                        "lastModified": "2026-12-01T00:00:00.000Z", "tags": ["safetensors"],
                        "siblings": [
                            {"rfilename": "README.md", "size": 120},
                            {"rfilename": "model.safetensors", "size": len(weights),
                             "lfs": {"sha256": hashlib.sha256(weights).hexdigest(),
                                     "size": len(weights)}}]}).encode()
                elif "/resolve/" in parts.path:
                    mid = parts.path[1:].split("/resolve/", 1)[0]
                    data = hub.weights[int(hashlib.sha256(mid.encode()).hexdigest(), 16) % 16]
                    headers = {"Content-Type": "application/octet-stream",
                               "Accept-Ranges": "bytes", "ETag": '"w"'}
                    rng = self.headers.get("Range", "")
                    if rng.startswith("bytes="):
                        start_s, _, end_s = rng[6:].partition("-")
                        start = int(start_s)
                        end = min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
                        status, body = 206, data[start:end + 1]
                        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    else:
                        body = data
                else:
                    status, body = 404, b"{}"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def targets_toml(self) -> str:
        return "".join(f'\n[[targets]]\nname = "hub-{k}"\nkind = "hub"\nurl = "{self.url}"\n'
                       f'query = "shard-{k}"\nmax_pages = {self.models // PAGE + 2}\n'
                       f'max_items = {self.models}\nallow_private = true\ninterval = "1d"\n'
                       for k in range(SHARDS))


class Redis:
    def __init__(self, folder: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis as redis_py
        client = redis_py.Redis(host="127.0.0.1", port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis_py.ConnectionError:
                time.sleep(0.05)
        sys.exit("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def cpu_of(proc: subprocess.Popen[bytes]) -> float:
    """Stop `proc` and return the CPU seconds it used (the kernel's accounting)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def one_round(config: Path, db: Path, workers: int, targets: list[str],
              folder: Path) -> tuple[int, float, float, float]:
    """(documents, wall seconds, CPU seconds of all, CPU seconds of the writer)."""
    redis = Redis(folder)
    env = {**os.environ, DEMO_KEY_ENV: DEMO_KEY}
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)

    def ww(*args: str, log: str) -> subprocess.Popen[bytes]:
        with (logs / log).open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "monitor", "--log-level",
                                     "warning", "--config", str(config), *args],
                                    stdout=subprocess.DEVNULL, stderr=out, env=env)

    procs = [ww("worker", "--queue", redis.url, "--cache-dir", str(folder / f"cache{i}"),
                log=f"worker{i}.log") for i in range(workers)]
    time.sleep(1.5)  # workers up (their start-up is not the work measured)
    started = time.monotonic()
    writer = ww("--db", str(db), "run", "--queue", redis.url, log="run.log")
    try:
        while True:
            time.sleep(0.2)
            if writer.poll() is not None:
                sys.exit(f"the writer stopped: {(logs / 'run.log').read_text()[-2000:]}")
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                done = {r[0] for r in conn.execute(
                    "SELECT target FROM crawl_runs WHERE status != 'running'")}
                running = conn.execute("SELECT COUNT(*) FROM crawl_runs "
                                       "WHERE status = 'running'").fetchone()[0]
            if done >= set(targets) and not running:
                break
        wall = time.monotonic() - started
    finally:
        writer_cpu = cpu_of(writer)
        total = writer_cpu + sum(cpu_of(p) for p in procs)
        redis.stop()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        documents = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    return documents, wall, total, writer_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault(DEMO_KEY_ENV, DEMO_KEY)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores")
    print(f"{'world':<14} {'workers':>7} {'docs':>6} {'wall s':>7} {'docs/s':>7} "
          f"{'x 1':>5} {'CPU ms/doc':>10} {'writer %':>8}")
    with tempfile.TemporaryDirectory(prefix="weightwatch-scale-") as tmp_s:
        tmp = Path(tmp_s)
        release = make_release(tmp / "release")
        with SmtpSink(tmp / "mail") as sink, DemoWorld(release) as world:
            hub = Hub(args.models)
            worlds = [] if args.skip_demo else ["demo"]
            worlds.append(f"hub {args.models}")
            for name in worlds:
                base: float | None = None
                for n in args.workers:
                    folder = tmp / f"{name.replace(' ', '-')}-{n}"
                    folder.mkdir()
                    config = folder / "config.toml"
                    text = demo_config(world, sink.port, config).replace(
                        'host_delay = "10ms"', 'host_delay = "1ms"')
                    if name != "demo":  # the hub alone: the demo's targets disabled
                        text = text.split("[[targets]]", 1)[0] + hub.targets_toml()
                    config.write_text(text)
                    db = folder / "w.db"
                    with Store(db) as store:
                        register_demo_release(store, release)
                    from monitor.config import load_config
                    targets = [t.name for t in load_config(config).targets if t.enabled]
                    docs, wall, cpu, writer = one_round(config, db, n, targets, folder)
                    rate = docs / wall if wall else 0.0
                    base = base or rate
                    print(f"{name:<14} {n:>7} {docs:>6} {wall:>7.1f} {rate:>7.1f} "
                          f"{rate / base:>5.2f} {1000 * cpu / max(docs, 1):>10.2f} "
                          f"{100 * writer / max(cpu, 1e-9):>7.0f}%")
            hub.server.shutdown()


if __name__ == "__main__":
    main()
