"""A hostile host on loopback, and the bodies it serves: compression bombs stacked in
content codings, bodies trickling a byte at a time, redirects into cloud metadata.

Bombs are built without ever holding (or even compressing) what they expand to: a deflate
block of 1 MiB of zeros ends in a full flush, which resets the compressor, so every such
block is the same bytes and a stream of N MiB is that block N times; the gzip trailer's
CRC-32 of N zero bytes comes from composing the CRC's affine update instead of feeding it
gigabytes. So a 4 GiB bomb costs a few MB of bytes and milliseconds to make.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from support import _LoopbackServer

MIB = 1 << 20
_BLOCK = bytes(MIB)


def _deflate_block() -> tuple[bytes, bytes]:
    """(one 1 MiB block of zeros as raw deflate ending in a full flush, the final block)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(_BLOCK) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block, compressor.flush(zlib.Z_FINISH)


def crc32_zeros(n: int, value: int = 0) -> int:
    """zlib.crc32(bytes(n), value) without the n bytes. zlib.crc32(zeros, v) is affine in v
    (A·v xor c), so A and c for 1 MiB are read off 33 calls and applied n/1MiB times."""
    c = zlib.crc32(_BLOCK, 0)
    columns = [zlib.crc32(_BLOCK, 1 << i) ^ c for i in range(32)]
    for _ in range(n // MIB):
        out = c
        for i in range(32):
            if value >> i & 1:
                out ^= columns[i]
        value = out
    return zlib.crc32(bytes(n % MIB), value)


def deflate_zeros(mib: int) -> bytes:
    """Raw deflate of `mib` MiB of zeros."""
    block, final = _deflate_block()
    return block * mib + final


def gzip_zeros(mib: int, prefix: bytes = b"") -> bytes:
    """A gzip member holding `prefix` (under 64 KiB, as a stored block) and then `mib` MiB
    of zeros (about 1 KB per MiB)."""
    n = len(prefix) + mib * MIB
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    stored = (b"\x00" + struct.pack("<HH", len(prefix), len(prefix) ^ 0xFFFF) + prefix
              if prefix else b"")
    crc = crc32_zeros(mib * MIB, zlib.crc32(prefix))
    return header + stored + deflate_zeros(mib) + struct.pack("<II", crc, n & 0xFFFFFFFF)


def zlib_zeros(mib: int) -> bytes:
    """`mib` MiB of zeros in the zlib format (what HTTP's `deflate` names)."""
    n = mib * MIB
    adler = (n % 65521) << 16 | 1  # a = 1 + sum of bytes = 1; b = n * a
    return b"\x78\xda" + deflate_zeros(mib) + struct.pack(">I", adler)


def encode(data: bytes, codings: list[str]) -> bytes:
    """`data` with each coding applied in turn, as `Content-Encoding: a, b` says."""
    for coding in codings:
        data = gzip.compress(data, 9) if coding in ("gzip", "x-gzip") else zlib.compress(data, 9)
    return data


def stacked_bomb(codings: list[str], mib: int) -> bytes:
    """A body that `Content-Encoding: <codings>` turns into `mib` MiB of zeros, the first
    (innermost) coding built by hand, the others compressing what it gives."""
    inner = gzip_zeros(mib) if codings[0] in ("gzip", "x-gzip") else zlib_zeros(mib)
    return encode(inner, codings[1:])


# ------------------------------------------------------------------------------- server


@dataclass
class Reply:
    """What the hostile host answers on one path. `trickle`: seconds between body bytes,
    sent one at a time after headers that promise them all."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float | None = None


class HostileServer(_LoopbackServer):
    """Answers GETs from `routes` (path without query -> Reply; anything else 404, so
    robots.txt allows all) and records each request: (path, headers lowercased)."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                server._answer(self)

        self._start(Handler)

    def serve(self, path: str, reply: Reply) -> str:
        self.routes[path] = reply
        return self.base + path

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self.lock:
            self.requests.append((path, {k.lower(): v for k, v in handler.headers.items()}))
        reply = self.routes.get(path, Reply(b"not found", 404))
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            if reply.trickle is None:
                handler.wfile.write(reply.body)
                return
            for byte in reply.body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(reply.trickle)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the client gave up: what a cap or deadline does


# ---------------------------------------------------------------- a child's peak memory

# Runs the command, and kills it if its resident memory passes `limit` MB: a regression
# must fail the test, not take the (shared) machine's memory with it. (Not an address-space
# rlimit: what a process reserves but never touches grows with the core count.)
_WRAPPER = """
import resource, subprocess, sys, time
peak_file, limit_kb, argv = sys.argv[1], int(sys.argv[2]) * 1024, sys.argv[3:]
child = subprocess.Popen(argv)
while child.poll() is None:
    try:
        with open(f"/proc/{child.pid}/status") as status:
            rss_kb = int(status.read().split("VmRSS:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        rss_kb = 0
    if rss_kb > limit_kb:
        child.kill()
    time.sleep(0.05)
with open(peak_file, "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(child.returncode)
"""
KILL_ABOVE_MB = 1024


def run_measured(argv: list[str], cwd: Path,
                 timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run `argv` to the end; (its result, its peak resident memory in MB). A fresh wrapper
    process waits for it, so getrusage(RUSAGE_CHILDREN) there sees this child alone."""
    peak_file = cwd / f".peak-{os.getpid()}-{time.monotonic_ns()}"
    result = subprocess.run([sys.executable, "-c", _WRAPPER, str(peak_file), str(KILL_ABOVE_MB),
                             *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    peak_kb = int(peak_file.read_text())
    peak_file.unlink()
    return result, peak_kb / 1024
