"""How much of a weight file does `weightwatch scan` read, locally and by HTTP Range, and how long does it take?

For each format (default: safetensors BF16 and GGUF Q4_0) a LLaMA-shaped model of about
--size-gb gigabytes is generated (benchmarks/make_weights.py's generator), registered with
`weightwatch register` into a fresh database, and scanned with `weightwatch scan`: from
disk, and by URL from a loopback HTTP server this script runs (Range requests answered
206 with Content-Range and an ETag, as a CDN does; it counts the requests and the body
bytes it sends). Then the file is replaced by a model of the same shapes and another seed,
which both scans must call `no_match`. Reported per scan: verdict, bytes read (by the
scan's own count and, remotely, by the server's) against the file size, requests, and wall
time against two references measured in the same run on the same file: reading it whole
from the page cache, and downloading it whole from the same server.

    python benchmarks/scan.py --size-gb 1.0
    python benchmarks/scan.py --size-gb 4 --formats gguf-q4_0 --dir /var/tmp

Goal (issue 5): a remote scan of a file of 1 GB or more reads at most 1% of it and gives
the same verdict (and model) as a local scan. Exit 1 if any check fails.

Remote scans run with `[crawl] host_delay = "1ms"`: the fetcher's politeness spacing (1 s
between requests to a host by default; 0 is not a valid duration) would otherwise be most
of their wall time. The estimate at the default spacing, one host_delay per request after
the first, is printed beside the measured time. Wall times are whole CLI runs, interpreter
start-up and fingerprint loading included; "CLI floor", a scan of a file that is not
weights, shows how much of each that is ("-floor": the wall time less the floor). "/read"
and "/dl" are the wall time over the two references.

Disk: one generated file at a time (the positive is deleted before the negative is
written), plus a database of a few megabytes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# make_weights is beside this file; importing it puts tests/ on the path for the lab.
from make_weights import FORMATS, lab  # noqa: E402

from monitor.config import CrawlSettings  # noqa: E402

DEFAULT_FORMATS = "safetensors-bf16,gguf-q4_0"
HOST_DELAY = "1ms"
DEFAULT_HOST_DELAY = CrawlSettings().host_delay
GOAL_RATIO = 0.01
MODEL = "bench"
SEED, NEGATIVE_SEED = 0, 1


# --- the loopback server ---------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeFileServer:
    """Serves the files of one folder on 127.0.0.1 with single-range support, counting
    requests and the body bytes actually written to the socket (so what a scan cost is
    measured on the server's side, not taken from the scanner's word)."""

    PIECE = 4 << 20  # sendfile in pieces, so a client hanging up leaves an exact count

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests = Counter[str]()
        self.sent = Counter[str]()
        self.lock = threading.Lock()
        bench = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, the body waits
            # for the client's delayed ACK, about 40 ms a request on Linux, which would be
            # charged to the scanner.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                bench._answer(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def snapshot(self) -> tuple[int, int]:
        """Requests (robots.txt included: politeness spaces those too) and body bytes
        sent so far, all paths together."""
        with self.lock:
            return sum(self.requests.values()), sum(self.sent.values())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        name = urlsplit(h.path).path.lstrip("/")
        with self.lock:
            self.requests[name] += 1
        path = self.folder / name
        if not name or "/" in name or not path.is_file():  # robots.txt too: no rules
            return self._head(h, 404, 0, {})
        stat = path.stat()
        size = stat.st_size
        etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
        wanted = _RANGE.fullmatch(h.headers.get("Range", "").strip())
        if_range = h.headers.get("If-Range")
        if wanted is None or (if_range is not None and if_range != etag):
            self._head(h, 200, size, {"ETag": etag, "Accept-Ranges": "bytes"})
            return self._body(h, name, path, 0, size)
        first_text, last_text = wanted.groups()
        if not first_text:  # bytes=-N: the last N bytes
            first, last = max(0, size - int(last_text or 0)), size - 1
        else:
            first = int(first_text)
            last = min(int(last_text), size - 1) if last_text else size - 1
        if first >= size or last < first:
            return self._head(h, 416, 0, {"Content-Range": f"bytes */{size}", "ETag": etag})
        self._head(h, 206, last - first + 1,
                   {"Content-Range": f"bytes {first}-{last}/{size}", "ETag": etag})
        self._body(h, name, path, first, last - first + 1)

    @staticmethod
    def _head(h: BaseHTTPRequestHandler, status: int, length: int,
              headers: dict[str, str]) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(length))
        h.end_headers()

    def _body(self, h: BaseHTTPRequestHandler, name: str, path: Path, offset: int,
              count: int) -> None:
        try:
            with open(path, "rb") as f:
                while count:
                    n = h.connection.sendfile(f, offset, min(count, self.PIECE))
                    if not n:
                        break
                    with self.lock:
                        self.sent[name] += n
                    offset += n
                    count -= n
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True


# --- references ----------------------------------------------------------------------------


def read_whole(path: Path) -> float:
    """Seconds to read the file from the page cache, in 16 MiB reads."""
    buf = bytearray(16 << 20)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


def download_whole(url: str, size: int) -> float:
    """Seconds to GET the file whole from the server (no Range), body discarded."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    buf = bytearray(16 << 20)
    got = 0
    start = time.perf_counter()
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        while n := response.readinto(buf):
            got += n
    finally:
        conn.close()
    elapsed = time.perf_counter() - start
    if response.status != 200 or got != size:
        raise RuntimeError(f"download of {url}: HTTP {response.status}, {got} of {size} bytes")
    return elapsed


def best_of(runs: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(runs))


# --- the CLI -------------------------------------------------------------------------------


@dataclass
class Cli:
    config: Path
    db: Path

    def run(self, *args: str) -> tuple[float, Any]:
        """Wall seconds and parsed JSON output of one `weightwatch ... --format json`."""
        # No WEIGHTWATCH_CONFIG from the caller's shell: the benchmark's config only.
        env = {k: v for k, v in os.environ.items() if k != "WEIGHTWATCH_CONFIG"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "monitor", "--config", str(self.config), "--db",
               str(self.db), "--log-level", "error", *args, "--format", "json"]
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        elapsed = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} exited {out.returncode}: "
                               f"{out.stderr.strip() or out.stdout.strip()}")
        return elapsed, json.loads(out.stdout)


@dataclass
class Scan:
    label: str
    verdict: str
    model: str | None
    score: float | None
    bytes_read: int
    wall: float
    requests: int | None = None   # remote scans: requests the server answered
    sent: int | None = None       # remote scans: body bytes the server sent


def scan(cli: Cli, label: str, location: str, runs: int, *, server: RangeFileServer | None = None,
         extra: tuple[str, ...] = ()) -> Scan:
    """Best wall time of `runs` scans; the counts are the last run's (scans are
    deterministic: the fingerprint's key chooses the rows)."""
    walls = []
    for _ in range(runs):
        before = server.snapshot() if server else (0, 0)
        wall, rows = cli.run("scan", location, *extra)
        after = server.snapshot() if server else (0, 0)
        walls.append(wall)
    row, = rows
    if row["verdict"] == "error":
        raise RuntimeError(f"scan of {location}: {row['error']}")
    result = Scan(label, row["verdict"], row["model"], row["score"], row["bytes_read"],
                  min(walls))
    if server:
        result.requests, result.sent = after[0] - before[0], after[1] - before[1]
    return result


# --- one format ----------------------------------------------------------------------------


def config_at_least(size: float, per_value: float) -> lab.LlamaConfig:
    """make_weights' shape for `size` bytes, with layers added until the file is no
    smaller: the goal is stated for files of the size given *and more*, and the closest
    layer count often falls a few percent short."""
    config = lab.config_for_size(size, per_value)
    layers = config.n_layers
    while config.n_values * per_value < size:  # headers and F32 norms only add to this
        layers += 1
        config = lab.llama_config(layers, config.hidden, config.intermediate, config.vocab,
                                  config.n_head_kv, config.n_head)
    return config


def generate(fmt: str, size_gb: float, path: Path, seed: int) -> tuple[float, str]:
    container, dtype, per_value = FORMATS[fmt]
    config = config_at_least(size_gb * 1e9, per_value)
    start = time.perf_counter()
    if container == "safetensors":
        lab.stream_safetensors(path, config, seed, dtype)
    else:
        lab.stream_gguf(path, config, seed, dtype)
    elapsed = time.perf_counter() - start
    # Written back and read once before anything is timed: a gigabyte of dirty pages being
    # flushed while a scan runs made it several times slower in trials.
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    read_whole(path)
    shape = (f"{config.n_layers} layers, hidden {config.hidden}, intermediate "
             f"{config.intermediate}, vocab {config.vocab}")
    return elapsed, shape


def bench_format(fmt: str, args: argparse.Namespace, work: Path, server: RangeFileServer,
                 config: Path) -> list[str]:
    """Run and print one format's measurements; the failed checks, if any."""
    suffix = ".gguf" if FORMATS[fmt][0] == "gguf" else ".safetensors"
    files = work / "files"
    path = files / f"{fmt}{suffix}"
    cli = Cli(config, work / f"{fmt}.db")
    cli.db.unlink(missing_ok=True)

    gen, shape = generate(fmt, args.size_gb, path, SEED)
    size = path.stat().st_size
    print(f"\n{fmt}: {size:,} bytes ({size / 1e9:.3f} GB; {shape}), generated in {gen:.1f} s",
          flush=True)
    t_read = best_of(args.runs, lambda: read_whole(path))
    t_download = best_of(args.runs, lambda: download_whole(server.url(path.name), size))
    t_register, registered = cli.run("register", str(path), "--model", MODEL)
    tensors = registered[0]["tensors"]
    floor = best_of(args.runs, lambda: cli.run("scan", str(config))[0])

    scans = [scan(cli, "local", str(path), args.runs),
             scan(cli, "remote", server.url(path.name), args.runs, server=server,
                  extra=("--allow-private",))]
    path.unlink()
    negative = files / f"{fmt}-other{suffix}"
    generate(fmt, args.size_gb, negative, NEGATIVE_SEED)
    neg_size = negative.stat().st_size
    scans += [scan(cli, "negative local", str(negative), args.runs),
              scan(cli, "negative remote", server.url(negative.name), args.runs, server=server,
                   extra=("--allow-private",))]
    negative.unlink()
    cli.db.unlink()

    gbps = lambda s: size / s / 1e9  # noqa: E731
    print(f"  register            {t_register:7.2f} s  ({gbps(t_register):.2f} GB/s; "
          f"{tensors} tensors fingerprinted, digests too)")
    print(f"  ref: read whole     {t_read:7.2f} s  ({gbps(t_read):.2f} GB/s, page-cached)")
    print(f"  ref: download whole {t_download:7.2f} s  ({gbps(t_download):.2f} GB/s, loopback, "
          f"same server)")
    print(f"  CLI floor           {floor:7.2f} s  (start-up and fingerprint loading: a scan "
          f"of a file that is not weights)")
    print(f"  scans (best of {args.runs}; negatives: seed {NEGATIVE_SEED}, same shapes, "
          f"{neg_size:,} bytes; budget {budget_text(args)}):")
    print(f"    {'':16} {'verdict':9} {'score':>6} {'bytes read':>12} {'of file':>8} "
          f"{'sent':>12} {'reqs':>5} {'wall s':>7} {'-floor':>7} {'/read':>6} {'/dl':>6} "
          f"{'at ' + fmt_delay(DEFAULT_HOST_DELAY):>9}")
    for s in scans:
        of = size if not s.label.startswith("negative") else neg_size
        remote = s.requests is not None
        polite = (s.wall + (s.requests - 1) * (DEFAULT_HOST_DELAY - 0.001)) if remote else None
        print(f"    {s.label:16} {s.verdict:9} {s.score if s.score is not None else '-':>6} "
              f"{s.bytes_read:>12,} {s.bytes_read / of:>8.3%} "
              f"{f'{s.sent:,}' if remote else '-':>12} {s.requests if remote else '-':>5} "
              f"{s.wall:>7.2f} {s.wall - floor:>7.2f} {s.wall / t_read:>6.1f} "
              f"{s.wall / t_download:>6.2f} "
              f"{f'{polite:.1f} s' if remote else '-':>9}")

    local, remote, neg_local, neg_remote = scans
    checks = [
        (f"local and remote scans both match {MODEL}",
         local.verdict == remote.verdict == "match" and local.model == remote.model == MODEL),
        ("same score locally and remotely", local.score == remote.score),
        (f"remote scan reads at most {GOAL_RATIO:.0%} of the file",
         remote.bytes_read <= GOAL_RATIO * size and (remote.sent or 0) <= GOAL_RATIO * size),
        ("the server sent what the remote scan counted",
         remote.sent == remote.bytes_read and neg_remote.sent == neg_remote.bytes_read),
        ("negative is no_match locally and remotely",
         neg_local.verdict == neg_remote.verdict == "no_match"),
    ]
    failed = []
    for what, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failed.append(f"{fmt}: {what}")
    return failed


def budget_text(args: argparse.Namespace) -> str:
    return f"{args.max_bytes:,} bytes" if args.max_bytes else "[scan] max_bytes default"


def fmt_delay(seconds: float) -> str:
    return f"{seconds:g}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0,
                        help="approximate size of each generated file, GB (10^9 bytes)")
    parser.add_argument("--dir", default=None,
                        help="where to write the files and databases (default: a temp dir)")
    parser.add_argument("--formats", default=DEFAULT_FORMATS,
                        help=f"comma-separated, of {', '.join(sorted(FORMATS))}")
    parser.add_argument("--runs", type=int, default=3, help="best of N for each timing")
    parser.add_argument("--max-bytes", type=int, default=None,
                        help="scan budget, as `[scan] max_bytes` (default: the config default)")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        parser.error(f"unknown format(s) {unknown}; choose from {sorted(FORMATS)}")
    if args.size_gb <= 0 or args.runs < 1:
        parser.error("--size-gb must be positive and --runs at least 1")

    print(f"{os.cpu_count()} cores; remote scans with [crawl] host_delay = \"{HOST_DELAY}\" "
          f"(the last column adds the default {fmt_delay(DEFAULT_HOST_DELAY)} per request "
          f"after the first)", flush=True)
    failed: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="scan-bench-") as tmp:
        work = Path(tmp)
        (work / "files").mkdir()
        config = work / "bench.toml"
        config.write_text(f'# "0s" is refused: durations must be positive\n'
                          f'[crawl]\nhost_delay = "{HOST_DELAY}"\n'
                          + (f"[scan]\nmax_bytes = {args.max_bytes}\n" if args.max_bytes else ""))
        server = RangeFileServer(work / "files")
        try:
            for fmt in formats:
                failed += bench_format(fmt, args, work, server, config)
        finally:
            server.close()
    if failed:
        print("\nFAILED:\n  " + "\n  ".join(failed))
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
