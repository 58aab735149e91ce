"""Hub digests without download (issue 18): the SHA-256 a server states for a linked file
(a hub's X-Linked-Etag on its redirect to the CDN, with X-Linked-Size; a plain SHA-256
ETag; a file host's API) is looked up before any range read, and a registered one is the
critical `hash` hit with no byte of the file read.

The hub's answers are shaped as the Hugging Face Hub's `resolve` endpoint answers (and as
huggingface_hub's `get_hf_file_metadata` reads them: a HEAD that follows relative
redirects only, X-Linked-Etag and X-Linked-Size read off the redirect to the CDN, which is
never asked). Connections go through a backend that records each one and opens only
loopback ones, so a redirect into the private network is seen not to be followed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from support import FAST, Canned, RangeServer, registered_store, target
from test_hostile_fetch import RecordingBackend

import monitor.scan as scan_module
from demo.release import Release
from monitor.config import ScanSettings
from monitor.fetch import Fetcher
from monitor.scan import Probe, Registry, ScanReport, load_registry, probe_url, scan_url
from monitor.store import Store

SETTINGS = ScanSettings()
MODEL_FILE = "heron-7b/model.safetensors"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, demo_release: Release) -> Iterator[Store]:
    with registered_store(tmp_path_factory.mktemp("stated") / "release.db", demo_release) as s:
        yield s


@pytest.fixture(scope="module")
def registry(store: Store) -> Registry:
    return load_registry(store)


@pytest.fixture(scope="module")
def hub() -> Iterator[Canned]:
    server = Canned()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def cdn() -> Iterator[RangeServer]:
    server = RangeServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def no_tensor_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("a stated digest must not need the file's tensors")
    monkeypatch.setattr(scan_module, "open_weights", refuse)
    monkeypatch.setattr(scan_module, "match_weights", refuse)


def scan(url: str, registry: Registry, **kw: Any) -> tuple[ScanReport, RecordingBackend]:
    backend = RecordingBackend()

    async def go() -> ScanReport:
        async with Fetcher(FAST, network_backend=backend) as fetcher:
            return await scan_url(url, registry, SETTINGS, fetcher, target("scan", url), **kw)
    return asyncio.run(go()), backend


def probe(url: str) -> tuple[Probe, RecordingBackend]:
    backend = RecordingBackend()

    async def go() -> Probe:
        async with Fetcher(FAST, network_backend=backend) as fetcher:
            return await probe_url(url, fetcher, target("scan", url))
    return asyncio.run(go()), backend


def private(backend: RecordingBackend) -> list[tuple[str, int]]:
    return [c for c in backend.connects if not c[0].startswith("127.")]


def test_x_linked_etag_on_a_redirect_into_the_private_network_is_read_never_followed(
        hub: Canned, demo_release: Release, registry: Registry, no_tensor_work: None) -> None:
    """The hub's own answer states the digest; where its redirect points (10.0.0.0/8
    here) is never asked, so the hit costs one request and no byte of the file."""
    released = demo_release.file("model.safetensors")
    url = hub.serve("/org/heron/resolve/main/model.safetensors", b"", status=302, **{
        "Location": "http://10.20.30.40/repos/aa/bb/" + released.sha256,
        "X-Linked-Etag": f'"{released.sha256}"', "X-Linked-Size": str(released.size),
        "X-Repo-Commit": "0" * 40, "ETag": '"0123456789abcdef0123456789abcdef01234567"'})
    report, backend = scan(url, registry)
    assert report.verdict == "match" and report.digest is not None
    assert report.digest["artifact"] == MODEL_FILE
    assert report.digest["encoding"] == "the server's X-Linked-Etag header"
    assert report.size == released.size and report.bytes_read == 0
    assert private(backend) == []
    assert hub.count("/org/heron/resolve/main/model.safetensors") == 1


def test_an_unknown_stated_digest_leads_to_a_range_scan_whose_redirect_is_refused(
        hub: Canned, registry: Registry) -> None:
    """A digest nobody registered decides nothing: the range scan follows the redirect
    under the fetcher's rules, which refuse the metadata address: one line, no
    connection beyond loopback."""
    url = hub.serve("/org/other/resolve/main/model.safetensors", b"", status=302, **{
        "Location": "http://169.254.169.254/latest/meta-data/",
        "X-Linked-Etag": '"' + "ab" * 32 + '"', "X-Linked-Size": "1000"})
    report, backend = scan(url, registry)
    assert report.verdict == "error" and report.error is not None
    assert "\n" not in report.error and "169.254.169.254" in report.error
    assert private(backend) == []


def test_a_renamed_repo_redirect_is_followed_to_the_digest_and_the_cdn_never_asked(
        hub: Canned, cdn: RangeServer, demo_release: Release, registry: Registry,
        no_tensor_work: None) -> None:
    """The Hub answers a renamed repository's file with a relative redirect first (which
    huggingface_hub follows), then the redirect stating the digest."""
    released = demo_release.file("model.safetensors")
    cdn.put("/cdn/renamed", released.path.read_bytes())
    new = "/new-org/heron/resolve/main/model.safetensors"
    hub.serve(new, b"", status=302, **{"Location": cdn.url("/cdn/renamed"),
                                       "X-Linked-Etag": f'"{released.sha256}"',
                                       "X-Linked-Size": str(released.size)})
    url = hub.serve("/old-org/heron/resolve/main/model.safetensors", b"", status=307,
                    Location=new)
    found, _ = probe(url)
    assert [status for _u, status, _h in found.redirects] == [307, 302]
    assert found.size == released.size and found.error is None
    report, _ = scan(url, registry)
    assert report.verdict == "match" and report.digest is not None
    assert report.digest["value"] == released.sha256
    assert cdn.hits("/cdn/renamed") == []


def test_a_stated_size_that_is_not_a_number_is_not_believed(
        hub: Canned, cdn: RangeServer, demo_release: Release, registry: Registry) -> None:
    released = demo_release.file("model.safetensors")
    cdn.put("/cdn/other.gguf", demo_release.unrelated_gguf)
    url = hub.serve("/liar/x/resolve/main/model.safetensors", b"", status=302, **{
        "Location": cdn.url("/cdn/other.gguf"), "X-Linked-Etag": f'"{released.sha256}"',
        "X-Linked-Size": "12 GB"})
    report, _ = scan(url, registry)
    assert report.digest is None and report.verdict == "no_match"


def test_a_host_stated_digest_needs_no_request(registry: Registry, demo_release: Release,
                                               no_tensor_work: None) -> None:
    """A file host's API stating the SHA-256 (Pixeldrain's `hash_sha256`) is looked up
    before anything is fetched."""
    released = demo_release.file("model.safetensors")
    url = "http://127.0.0.1:9/api/file/abcd1234"  # nothing listens: nothing may be asked
    report, backend = scan(url, registry, stated=(released.sha256.upper(), "the host's API"))
    assert report.verdict == "match" and report.digest is not None
    assert report.digest["encoding"] == "the host's API" and backend.connects == []


def test_a_probe_that_fails_is_one_line_and_the_scan_says_why(hub: Canned,
                                                               registry: Registry) -> None:
    url = hub.serve("/gone/x/resolve/main/model.safetensors", b"gone", status=404)
    found, _ = probe(url)
    assert found.error is not None and "HTTP 404" in found.error and "\n" not in found.error
    report, _ = scan(url, registry)
    assert report.verdict == "error" and "\n" not in (report.error or "")


def test_redirect_loops_end_at_max_redirects(hub: Canned) -> None:
    url = hub.serve("/loop/resolve/main/a.safetensors", b"", status=302,
                    Location="/loop/resolve/main/a.safetensors")
    found, _ = probe(url)
    assert found.error is not None and "redirects" in found.error
    assert len(found.redirects) == FAST.max_redirects + 1


def test_a_probe_sends_no_credentials_past_the_origin(hub: Canned, cdn: RangeServer) -> None:
    """A target's headers and cookies are for its own origin: the probe's hop to the CDN
    (another port, another origin) goes without them, as the fetcher's redirects do."""
    cdn.put("/cdn/creds", b"x" * 100)
    url = hub.serve("/creds/resolve/main/model.safetensors", b"", status=302,
                    Location=cdn.url("/cdn/creds"))

    async def go() -> Probe:
        async with Fetcher(FAST) as fetcher:
            return await probe_url(url, fetcher, target(
                "scan", url, headers={"Authorization": "Bearer s3cret"},
                cookies={"session": "c00kie"}))
    found = asyncio.run(go())
    assert found.error is None and found.size == 100
    [asked] = [r for r in hub.requests if r.path == "/creds/resolve/main/model.safetensors"]
    assert asked.headers["authorization"] == "Bearer s3cret"
    [followed] = cdn.hits("/cdn/creds")
    assert "authorization" not in followed.headers and "cookie" not in followed.headers
    assert followed.headers["range"] == "bytes=0-0"
