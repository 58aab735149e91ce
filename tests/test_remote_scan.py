"""A remote scan reads a sliver of a weight file and reaches the local scan's verdict.

The small version of `benchmarks/scan.py`: generated LLaMA-shaped models (the lab's
streaming writers, as the benchmark's files are made) of about 40 MB, one safetensors BF16
and one GGUF Q4_0, each registered into a real SQLite store and then scanned from disk
(`scan_path`) and through a loopback Range server with a real `Fetcher` (`scan_url`). The
registered model must be recognised remotely exactly as it is locally, from at most 1% of
the file; a model of the same shapes with another seed must not be recognised either way.

Why about 40 MB: the remote scan's floor is the 64 KiB head request plus a 16 KiB block per
tensor read, about 115 KiB for a match, so 1% is only a real constraint for files well
above 12 MB; at 40 MB a scan that read whole tensors, or most of the header twice, would
fail it. The GGUF model is wider than the BF16 one to reach that size at 0.56 bytes a
value. Both keep under 64 weight matrices, the most a fingerprint covers: with more, the
scan's keyed sample of tensors would include unfingerprinted ones, and how many tensors
(and bytes) a match takes would vary with the fresh key each registration draws.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import weights_lab as lab
from support import FAST, RangeServer, target

from monitor.config import ScanSettings
from monitor.fetch import Fetcher
from monitor.registry import register_paths
from monitor.scan import Registry, ScanReport, load_registry, scan_path, scan_url
from monitor.store import Store

# Builds and scans real-sized models in every format (a minute of CPU).
pytestmark = [pytest.mark.slow]

MODEL = "lab-llama"
SEED, OTHER_SEED = 0, 1
SETTINGS = ScanSettings()

# format -> (config, writer, dtype); vocab 8000 keeps the embeddings from dominating.
FORMATS = {
    "safetensors-bf16": (lab.llama_config(4, 512, 1408, 8000), lab.stream_safetensors, "BF16"),
    "gguf-q4_0": (lab.llama_config(5, 1024, 2816, 8000), lab.stream_gguf, "Q4_0"),
}


@dataclass
class Served:
    """One format's registered model and its other-seed negative, on disk and served."""

    fmt: str
    registry: Registry
    server: RangeServer
    files: dict[str, Path]  # "model", "negative"

    def url(self, which: str) -> str:
        return self.server.url(f"/{self.files[which].name}")

    def size(self, which: str) -> int:
        return self.files[which].stat().st_size


@pytest.fixture(scope="module", params=sorted(FORMATS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    fmt = request.param
    config, write, dtype = FORMATS[fmt]
    folder = tmp_path_factory.mktemp(fmt)
    suffix = ".gguf" if fmt.startswith("gguf") else ".safetensors"
    files = {"model": folder / f"model{suffix}", "negative": folder / f"other{suffix}"}
    write(files["model"], config, SEED, dtype)
    write(files["negative"], config, OTHER_SEED, dtype)
    # Registering one format per store: the two formats' models share seed and tensor
    # names, so the GGUF one would match a BF16 registration too (rightly, but it would blur
    # which registration a verdict came from).
    with Store(folder / "registry.db") as store:
        registered, = register_paths(store, [files["model"]], model=MODEL)
        matrices = sum(len(shape) == 2 for _, shape in config.shapes())
        assert registered.tensors == matrices, registered.note  # see the docstring
        # Tensors only: the suspect is the registered file itself, which its digest would
        # recognise before any tensor is read (tests/test_scan_digests.py); here the range
        # reader must give the local tensor verdict.
        registry = dataclasses.replace(load_registry(store), digests={})
    server = RangeServer()
    # Its handler writes headers and body separately, so Nagle's algorithm holds the body
    # until the client's delayed ACK (about 40 ms a request on Linux); a negative's 50
    # requests would spend seconds waiting on that alone.
    server.server.RequestHandlerClass.disable_nagle_algorithm = True
    for path in files.values():
        server.put(f"/{path.name}", path.read_bytes())
    try:
        yield Served(fmt, registry, server, files)
    finally:
        server.close()


def remote_scan(served: Served, which: str) -> ScanReport:
    url = served.url(which)

    async def go() -> ScanReport:
        # FAST: 1 ms host spacing, no retries; allow_private lets the fetcher reach loopback.
        async with Fetcher(FAST) as fetcher:
            return await scan_url(url, served.registry, SETTINGS, fetcher, target("scan", url))

    return asyncio.run(go())


def sent(served: Served, which: str) -> int:
    """Body bytes the server sent for the file, whatever the client says it read."""
    return served.server.sent.get(f"/{served.files[which].name}", 0)


def verdict_of(report: ScanReport) -> dict:
    """Everything a scan reports except where the file was and what reading it cost."""
    out = report.as_dict()
    for key in ("location", "bytes_read"):
        out.pop(key)
    return out


def test_remote_scan_gives_the_local_verdict_from_at_most_1_percent(served: Served) -> None:
    size = served.size("model")
    assert size >= 40_000_000  # below this, 1% would no longer say much (see the docstring)
    local = scan_path(served.files["model"], served.registry, SETTINGS)
    remote = remote_scan(served, "model")
    assert local.verdict == "match" and local.result is not None
    assert local.result.model == MODEL and local.result.tensors_matched >= 3
    # Same rows read (the order is keyed by the fingerprint, not by the source), so not
    # just the same verdict but the same score, probability, pairs and sizes.
    assert verdict_of(remote) == verdict_of(local)
    assert remote.size == size
    assert remote.bytes_read <= size // 100
    # The client's count is what crossed the wire, robots.txt aside.
    assert sent(served, "model") == remote.bytes_read


def test_other_seed_is_no_match_remotely_and_locally(served: Served) -> None:
    local = scan_path(served.files["negative"], served.registry, SETTINGS)
    remote = remote_scan(served, "negative")
    assert local.verdict == remote.verdict == "no_match"
    # Not rows_matched == 0: a row of an unrelated model passes the per-row test with
    # probability ROW_ALPHA (1e-4), so one of a negative's few hundred sampled rows does in
    # a few percent of registrations; the verdict's false-match probability allows for it.
    assert verdict_of(remote) == verdict_of(local)
    assert remote.result is not None
    # A negative keeps reading tensors in search of evidence, so it costs more than a
    # match, but never more than the budget.
    assert remote.result.tensors_compared > 3
    assert sent(served, "negative") == remote.bytes_read <= SETTINGS.max_bytes
    assert remote.size == served.size("negative")
