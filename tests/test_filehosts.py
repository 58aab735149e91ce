"""Direct file hosts (issue 19): which links are a file host's, each host's resolver over
its real page shape, the demo world's hosts crawled end to end, and the hostile cases (a
resolver page pointing into the private network, a lying Content-Range, an endless page,
malformed JSON and HTML), each a one-line error with nothing lost.

Classifying a link is pure: the hosts' real names appear below only as strings that
`host_link` reads, nothing is fetched from them. Everything fetched is on loopback, mapped
to a host of the table with `[scan] file_hosts`, as the demo's config maps its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from hostile_http import HostileServer, Reply, gzip_zeros
from support import FAST, RangeServer, expected, found, registered_store, target
from test_hostile_fetch import RecordingBackend

import monitor.scan as scan_module
from demo.release import Release
from demo.sites.filehost import FILE_HOSTS, FileHostSite
from demo.web import Request
from demo.world import DemoWorld
from monitor.cli import main
from monitor.config import AlertSettings, Config, ConfigError, ScanSettings, parse_config
from monitor.crawler import crawl_once
from monitor.detect.weights import WeightLinkDetector
from monitor.fetch import Fetcher
from monitor.filehosts import BY_NAME, ResolveError, host_link, named_weight_link
from monitor.models import Document
from monitor.scan import Registry, ScanReport, load_registry, scan_link
from monitor.store import Store

MODEL_FILE = "heron-7b/model.safetensors"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, demo_release: Release) -> Iterator[Store]:
    with registered_store(tmp_path_factory.mktemp("hosts") / "release.db", demo_release) as s:
        yield s


@pytest.fixture(scope="module")
def registry(store: Store) -> Registry:
    return load_registry(store)


@pytest.fixture(scope="module")
def host() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def files() -> Iterator[RangeServer]:
    server = RangeServer()
    yield server
    server.close()


def settings(**hosts: str) -> ScanSettings:
    """Scan settings mapping loopback URL prefixes (the keywords' values) to hosts."""
    return ScanSettings(file_hosts={prefix: name for name, prefix in hosts.items()})


def scan(url: str, registry: Registry, scan_settings: ScanSettings
         ) -> tuple[ScanReport, RecordingBackend]:
    backend = RecordingBackend()

    async def go() -> ScanReport:
        async with Fetcher(FAST, network_backend=backend) as fetcher:
            return await scan_link(url, registry, scan_settings, fetcher, target("scan", url))
    return asyncio.run(go()), backend


def one_line(report: ScanReport) -> str:
    assert report.error and "\n" not in report.error, report
    return report.error


# ------------------------------------------------------------------ which links are a host's


@pytest.mark.parametrize(("url", "host", "name"), [
    ("https://pixeldrain.com/u/jW9E6s4h", "pixeldrain", None),
    ("https://pixeldrain.com/api/file/jW9E6s4h?download", "pixeldrain", None),
    ("https://pixeldra.in/u/jW9E6s4h", "pixeldrain", None),
    ("https://www.mediafire.com/file/abc123def456/model.safetensors/file", "mediafire",
     "model.safetensors"),
    ("https://www.mediafire.com/file/abc123def456", "mediafire", None),
    ("https://gofile.io/d/AbC123", "gofile", None),
    ("https://mega.nz/file/AbCdEfGh#key-in-the-fragment", "mega", None),
    ("https://mega.nz/#!AbCdEfGh!key", "mega", None),
    ("https://files.catbox.moe/x1y2z3", "direct", None),
    ("https://files.catbox.moe/x1y2z3.gguf", "direct", "x1y2z3.gguf"),
    ("https://transfer.sh/AbC1/model%20v2.safetensors", "direct", "model v2.safetensors"),
    ("https://huggingface.co/org/repo/blob/main/weights/model.safetensors", "huggingface",
     "model.safetensors"),
])
def test_a_file_hosts_links_are_known_by_name_and_shape(url: str, host: str,
                                                         name: str | None) -> None:
    link = host_link(url)
    assert link is not None and link.host.name == host and link.name == name


@pytest.mark.parametrize("url", [
    "https://pixeldrain.com/", "https://pixeldrain.com/about", "https://mega.nz/",
    "https://www.mediafire.com/", "https://gofile.io/", "https://example.org/u/abcd",
    "ftp://pixeldrain.com/u/abcd", "https://notpixeldrain.com/u/abcd",
])
def test_other_pages_of_those_hosts_are_not_file_links(url: str) -> None:
    assert host_link(url) is None


def test_a_hub_blob_page_is_read_as_its_resolve_url() -> None:
    link = host_link("https://huggingface.co/datasets/o/r/blob/v1.0/sub/dir/x.gguf")
    assert link is not None
    assert link.file_url() == "https://huggingface.co/datasets/o/r/resolve/v1.0/sub/dir/x.gguf"


@pytest.mark.parametrize(("url", "name"), [
    ("https://example.org/dl.php?file=model.safetensors&token=x", "model.safetensors"),
    ("https://example.org/d/model-Q4_K_M.gguf/view", "model-Q4_K_M.gguf"),
    ("https://example.org/get?f=weights%2Fpytorch_model.bin", "pytorch_model.bin"),
    ("https://example.org/files/model.safetensors", None),  # a weight link: scanned
    ("https://example.org/search?q=.gguf", None),
    ("https://example.org/about", None),
    ("magnet:?dn=model.safetensors", None),
])
def test_a_link_that_only_names_a_weight_file(url: str, name: str | None) -> None:
    assert named_weight_link(url) == name


def test_configured_prefixes_map_loopback_urls_to_a_host() -> None:
    hosts = {"http://127.0.0.1:8080/mirror": "pixeldrain",
             "http://127.0.0.1:8080/mirror/deeper": "direct"}
    link = host_link("http://127.0.0.1:8080/mirror/u/abcd1234", hosts)
    assert link is not None and link.host.name == "pixeldrain"
    assert link.page_url() == "http://127.0.0.1:8080/mirror/api/file/abcd1234/info"
    deeper = host_link("http://127.0.0.1:8080/mirror/deeper/x.bin", hosts)
    assert deeper is not None and deeper.host.name == "direct"  # the longest prefix
    assert host_link("http://127.0.0.1:8080/mirrored/u/abcd1234", hosts) is None
    assert host_link("http://127.0.0.1:8080/forum/u/abcd1234", hosts) is None


@pytest.mark.parametrize(("value", "problem"), [
    ('{ "http://127.0.0.1/x" = "dropbox" }', "must be one of"),
    ('{ "127.0.0.1/x" = "direct" }', "is not an http(s) URL prefix"),
    ('{ "http://127.0.0.1/x?y=1" = "direct" }', "is not an http(s) URL prefix"),
    ('"pixeldrain"', "scan.file_hosts"),
])
def test_file_hosts_config_errors_are_one_line(tmp_path: Any, value: str, problem: str
                                               ) -> None:
    data = tomllib.loads(f"[scan]\nfile_hosts = {value}\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(data, tmp_path / "config.toml")
    assert problem in str(caught.value) and "scan.file_hosts" in str(caught.value)


# ------------------------------------------------------------------ resolvers


def resolve(url: str, body: bytes, hosts: dict[str, str] | None = None) -> Any:
    link = host_link(url, hosts)
    assert link is not None
    return link.resolve(body, link.page_url() or url)


def test_pixeldrains_info_names_the_file_its_size_and_digest() -> None:
    info = {"success": True, "id": "jW9E6s4h", "name": "model.safetensors", "size": 182,
            "mime_type": "application/octet-stream", "hash_sha256": "EB" * 32,
            "date_upload": "2023-11-22T16:33:27.744Z", "can_download": True}
    resolved = resolve("https://pixeldrain.com/u/jW9E6s4h", json.dumps(info).encode())
    assert resolved.url == "https://pixeldrain.com/api/file/jW9E6s4h"
    assert (resolved.name, resolved.size, resolved.sha256) == ("model.safetensors", 182,
                                                               "eb" * 32)


def test_pixeldrains_info_cannot_send_the_scan_elsewhere() -> None:
    """The direct link is the host's own `/api/file/{id}`, whatever the answer says; odd
    field types are ignored, not trusted."""
    info = {"success": True, "id": "../../x", "name": "../../etc/a\x00b.safetensors",
            "size": True, "hash_sha256": "not hex", "url": "http://169.254.169.254/"}
    resolved = resolve("https://pixeldrain.com/u/abcd1234", json.dumps(info).encode())
    assert resolved.url == "https://pixeldrain.com/api/file/abcd1234"
    assert resolved.name == "ab.safetensors" and resolved.size is None
    assert resolved.sha256 is None


@pytest.mark.parametrize("body", [b"<html>rate limited</html>", b"[1, 2]", b"\xff\xfe",
                                  b"[" * 100_000])
def test_malformed_pixeldrain_info_is_one_line(body: bytes) -> None:
    with pytest.raises(ResolveError) as caught:
        resolve("https://pixeldrain.com/u/abcd1234", body)
    assert "\n" not in str(caught.value) and "abcd1234/info" in str(caught.value)


def test_pixeldrains_not_found_is_a_reason_not_a_link() -> None:
    body = b'{"success":false,"value":"not_found","message":"The entity was not found"}'
    resolved = resolve("https://pixeldrain.com/u/abcd1234", body)
    assert resolved.url is None and "not found" in (resolved.reason or "")


MEDIAFIRE_PAGE = """<!DOCTYPE html><html><head><title>model.safetensors - MediaFire</title>
</head><body><div class="dl-btn-cont"><a class="input popsok" aria-label="Download file"
 href="{href}" id="downloadButton" rel="nofollow">Download (13.48GB)</a></div></body></html>"""


def test_mediafires_download_button_is_the_direct_link() -> None:
    href = "https://download1234.mediafire.com/abcdef/abc123def456/model.safetensors"
    resolved = resolve("https://www.mediafire.com/file/abc123def456/model.safetensors/file",
                       MEDIAFIRE_PAGE.format(href=href).encode())
    assert resolved.url == href and resolved.name == "model.safetensors"


@pytest.mark.parametrize("page", [b"<html><body>captcha</body></html>", b"",
                                  MEDIAFIRE_PAGE.format(href="javascript:go()").encode()])
def test_a_mediafire_page_without_a_usable_button_is_one_line(page: bytes) -> None:
    with pytest.raises(ResolveError) as caught:
        resolve("https://www.mediafire.com/file/abc123def456/x.gguf/file", page)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ scans, on loopback


def test_unscannable_hosts_are_recorded_with_the_reason_and_nothing_asked(
        registry: Registry) -> None:
    base = "http://127.0.0.1:9"  # nothing listens: nothing may be asked
    hosts = settings(mega=f"{base}/mega", gofile=f"{base}/gofile")
    for url, reason in ((f"{base}/mega/file/AbCdEfGh", "encrypts files in the browser"),
                        (f"{base}/gofile/d/AbC123", "account's token")):
        report, backend = scan(url, registry, hosts)
        assert report.verdict == "inconclusive" and backend.connects == []
        assert "not scanned" in one_line(report) and reason in one_line(report)


def test_a_link_naming_a_weight_file_on_an_unknown_host_is_recorded_not_fetched(
        registry: Registry) -> None:
    url = "http://127.0.0.1:9/download.php?file=heron-7b.Q4_K_M.gguf"
    report, backend = scan(url, registry, ScanSettings())
    assert report.verdict == "inconclusive" and backend.connects == []
    assert "(heron-7b.Q4_K_M.gguf): not scanned" in one_line(report)


def test_a_hub_blob_link_is_known_from_the_resolve_redirect(
        host: HostileServer, files: RangeServer, registry: Registry,
        demo_release: Release) -> None:
    """A link to the hub's page of a file (`blob`) is read as its `resolve` URL, whose
    redirect states the SHA-256: one request, the CDN never asked."""
    released = demo_release.file("model.safetensors")
    files.put("/cdn/blob-target", released.path.read_bytes())
    host.serve("/hf/org/heron/resolve/main/model.safetensors",
               Reply(b"", 302, {"Location": files.url("/cdn/blob-target"),
                                "X-Linked-Etag": f'"{released.sha256}"',
                                "X-Linked-Size": str(released.size)}))
    report, _ = scan(host.base + "/hf/org/heron/blob/main/model.safetensors", registry,
                     settings(huggingface=host.base + "/hf"))
    assert report.verdict == "match" and report.digest is not None
    assert report.digest["encoding"] == "the server's X-Linked-Etag header"
    assert files.hits("/cdn/blob-target") == []


def test_a_pixeldrain_file_is_resolved_and_read_by_range(
        files: RangeServer, registry: Registry, demo_release: Release) -> None:
    """No digest stated (an older info answer): the file is found by its tensors, read by
    range from the host's /api/file/{id}."""
    released = demo_release.file("model.safetensors")
    files.put("/pd/api/file/abcd1234/info", json.dumps(
        {"success": True, "id": "abcd1234", "name": "weights.safetensors",
         "size": released.size}).encode())
    files.put("/pd/api/file/abcd1234", released.path.read_bytes())
    report, _ = scan(files.url("/pd/u/abcd1234"), registry,
                     settings(pixeldrain=files.url("/pd")))
    assert report.verdict == "match" and report.result is not None
    assert report.result.model == "heron-7b"
    assert report.location == files.url("/pd/u/abcd1234")
    assert 0 < report.bytes_read < released.size


def test_a_stated_pixeldrain_digest_is_a_match_without_the_file(
        files: RangeServer, registry: Registry, demo_release: Release,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_module, "open_weights", None)  # any tensor work would fail
    released = demo_release.copies[0].file("model.safetensors")
    files.put("/pd2/api/file/efgh5678/info", json.dumps(
        {"success": True, "id": "efgh5678", "name": "m.safetensors", "size": released.size,
         "hash_sha256": released.sha256}).encode())
    report, _ = scan(files.url("/pd2/u/efgh5678"), registry,
                     settings(pixeldrain=files.url("/pd2")))
    assert report.verdict == "match" and report.digest is not None
    assert report.digest["recipient"] == demo_release.copies[0].recipient
    assert report.digest["encoding"] == "pixeldrain's file info"
    assert files.hits("/pd2/api/file/efgh5678") == []


def test_a_resolver_page_pointing_into_the_private_network_is_refused(
        host: HostileServer, registry: Registry) -> None:
    """MediaFire's button says where the file is; the fetcher's rules decide whether it
    may be asked: the cloud metadata address never, and no connection is opened."""
    href = "http://169.254.169.254/latest/meta-data/iam/model.safetensors"
    host.serve("/mf/file/abc123def456/model.safetensors/file",
               Reply(MEDIAFIRE_PAGE.format(href=href).encode(),
                     headers={"Content-Type": "text/html"}))
    report, backend = scan(host.base + "/mf/file/abc123def456/model.safetensors/file",
                           registry, settings(mediafire=host.base + "/mf"))
    assert report.verdict == "error" and "169.254.169.254" in one_line(report)
    assert [c for c in backend.connects if not c[0].startswith("127.")] == []


def test_an_endless_resolver_page_stops_at_its_cap(host: HostileServer,
                                                   registry: Registry) -> None:
    """A page that inflates to 64 MiB is read no further than a page may be."""
    host.serve("/bomb/api/file/abcd1234/info",
               Reply(gzip_zeros(64), headers={"Content-Encoding": "gzip",
                                              "Content-Type": "application/json"}))
    report, _ = scan(host.base + "/bomb/u/abcd1234", registry,
                     settings(pixeldrain=host.base + "/bomb"))
    assert report.verdict == "error" and "cap" in one_line(report)


def test_malformed_json_from_the_host_is_one_line(host: HostileServer,
                                                  registry: Registry) -> None:
    host.serve("/bad/api/file/abcd1234/info", Reply(b'{"success": true, "name": "x'))
    report, _ = scan(host.base + "/bad/u/abcd1234", registry,
                     settings(pixeldrain=host.base + "/bad"))
    assert report.verdict == "error" and "not JSON" in one_line(report)


def test_a_lying_content_range_on_a_direct_host_is_one_line(
        files: RangeServer, registry: Registry, demo_release: Release) -> None:
    data = demo_release.file("model.safetensors").path.read_bytes()
    files.put("/dl/AbC1/blob", data,
              tamper=lambda first, last, body: (f"bytes {first + 1}-{last + 1}/{len(data)}",
                                                body))
    report, _ = scan(files.url("/dl/AbC1/blob"), registry, settings(direct=files.url("/dl")))
    assert report.verdict == "error" and "Content-Range" in one_line(report)


def test_a_host_that_names_a_photo_is_not_read(files: RangeServer,
                                              registry: Registry) -> None:
    files.put("/pd3/api/file/photo123/info", json.dumps(
        {"success": True, "id": "photo123", "name": "heron.jpg", "size": 4096,
         "mime_type": "image/jpeg"}).encode())
    files.put("/pd3/api/file/photo123", bytes(4096))
    report, _ = scan(files.url("/pd3/u/photo123"), registry,
                     settings(pixeldrain=files.url("/pd3")))
    assert report.verdict == "unknown_format" and "'heron.jpg'" in one_line(report)
    assert report.bytes_read == 0 and files.hits("/pd3/api/file/photo123") == []


# ------------------------------------------------------------------ the demo world


def test_the_demo_world_serves_pixeldrains_shapes(demo_world: DemoWorld) -> None:
    site = demo_world.site(FileHostSite)
    hosted = next(iter(site.pixeldrain.values()))
    info = json.loads(site.handle(Request("GET", f"/pixeldrain/api/file/{hosted.id}/info",
                                          {}, {}), f"/pixeldrain/api/file/{hosted.id}/info")
                      .body)
    assert info["hash_sha256"] == hashlib.sha256(hosted.data).hexdigest()
    assert info["size"] == len(hosted.data) and info["success"] is True
    viewer = site.handle(Request("GET", "", {}, {}), f"/pixeldrain/u/{hosted.id}").body
    assert b"window.viewer_data" in viewer
    missing = site.handle(Request("GET", "", {}, {}), "/pixeldrain/api/file/nope/info")
    assert missing.status == 404 and json.loads(missing.body)["value"] == "not_found"
    # The demo's config maps exactly the site's hosts.
    assert re.findall(r'"([^"]+)" = "(\w+)"', site.file_hosts_toml()) == [
        (site.root + prefix, name) for prefix, name in FILE_HOSTS.items()]
    assert all(name in BY_NAME for name in FILE_HOSTS.values())


def test_a_crawl_of_the_link_board_finds_the_planted_leak_and_no_noise(
        tmp_path: Any, demo_world: DemoWorld, demo_release: Release) -> None:
    site = demo_world.site(FileHostSite)
    t = target("forum", site.entry_url, name="demo-filehost", selectors={
        "post": "article.entry", "subject": "h2", "author": "span.by", "time": "time",
        "body": "div.entry-body"})
    scan_settings = ScanSettings(file_hosts={site.root + p: h for p, h in FILE_HOSTS.items()})
    with registered_store(tmp_path / "crawl.db", demo_release) as store:
        config = Config(path=None, database_path=store.path, crawl=FAST,
                        alerts=AlertSettings(), smtp=None, targets=[t], rules=[],
                        scan=scan_settings)
        [result] = asyncio.run(crawl_once(config, store, [t]))
        assert result.status == "ok", result
        planted = {(f"{site.entry_url}#m1", "hash", demo_release.file("model.safetensors")
                    .sha256)}
        assert expected(demo_world, "filehost") == planted
        assert found(store, "demo-filehost") == planted
        scans = {row["url"]: row for row in store.db.query("SELECT * FROM weight_scans")}
    photo = next(u for u in scans if u.endswith("/u/Gb3Tn9Lw"))
    assert scans[photo]["verdict"] == "unknown_format" and scans[photo]["bytes_read"] == 0
    gguf = next(u for u in scans if u.endswith(".gguf"))
    assert scans[gguf]["verdict"] == "no_match"


def test_links_that_only_name_a_file_never_take_a_readable_links_place(
        tmp_path: Any, files: RangeServer, demo_release: Release) -> None:
    """Six links naming weight files on no known host, then one the host serves: with
    `max_links` 4 the served one is read, and the named ones are recorded, unscanned, as
    far as the slots go."""
    released = demo_release.file("model.safetensors")
    files.put("/pd4/api/file/wxyz9876/info", json.dumps(
        {"success": True, "id": "wxyz9876", "name": "m.safetensors", "size": released.size,
         "hash_sha256": released.sha256}).encode())
    named = [f"http://127.0.0.1:9/get.php?file=part{n}.safetensors" for n in range(6)]
    doc = Document(target="board", key="k", url="http://127.0.0.1:9/board#1", text="links",
                   links=[*named, files.url("/pd4/u/wxyz9876")])
    scan_settings = dataclasses.replace(settings(pixeldrain=files.url("/pd4")), max_links=4)

    async def go(store: Store) -> list[Any]:
        async with Fetcher(FAST, network_backend=RecordingBackend()) as fetcher:
            detector = WeightLinkDetector.over(store, scan_settings, fetcher)
            return await detector.detect(doc, target("forum", doc.url))
    with registered_store(tmp_path / "slots.db", demo_release) as store:
        hits = asyncio.run(go(store))
        rows = {r["url"]: r for r in store.db.query("SELECT * FROM weight_scans")}
    assert [(h.kind, h.indicator) for h in hits] == [("hash", released.sha256)]
    assert set(rows) == {files.url("/pd4/u/wxyz9876"), *named[:3]}
    assert all(rows[u]["verdict"] == "inconclusive" and "not scanned" in rows[u]["error"]
               for u in named[:3])


def test_the_scan_command_reads_a_file_host_link_as_the_daemon_does(
        tmp_path: Any, store: Store, files: RangeServer, demo_release: Release) -> None:
    """`weightwatch scan URL` takes the config's `[scan] file_hosts`: a Pixeldrain-like
    link is resolved and known from the digest its host states."""
    released = demo_release.file("model.safetensors")
    files.put("/pd5/api/file/cli12345/info", json.dumps(
        {"success": True, "id": "cli12345", "name": "model.safetensors",
         "size": released.size, "hash_sha256": released.sha256}).encode())
    config = tmp_path / "config.toml"
    config.write_text(f'[scan]\nfile_hosts = {{ "{files.url("/pd5")}" = "pixeldrain" }}\n')
    result = CliRunner().invoke(main, ["--config", str(config), "--db", str(store.path),
                                       "scan", files.url("/pd5/u/cli12345"),
                                       "--allow-private", "--format", "json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    row, = json.loads(result.stdout)
    assert row["verdict"] == "match" and row["digest"]["artifact"] == MODEL_FILE
    assert row["digest"]["encoding"] == "pixeldrain's file info"
    assert row["location"] == files.url("/pd5/u/cli12345")
