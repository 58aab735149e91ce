"""The `civitai` hub dialect over real HTTP on loopback (issue 19).

The demo world's Civitai imitation is the good case: every file's stated hashes become
`digests` extras under their own algorithm names, recomputed here from the bytes as Civitai
defines them; the download links are scanned through Civitai's redirect to the file host.
A Canned server and the hostile host serve the bad cases (the wrong shape, malformed and
deep JSON, hostile records, foreign and looping next pages, huge and endless answers,
redirects into cloud metadata): one-line errors, or a skipped record with the rest going on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_http import MIB, HostileServer, Reply
from support import (
    FAST,
    Canned,
    by_key,
    collect,
    crawl,
    expected,
    fails,
    found,
    registered_store,
    run,
    target,
)

from demo.release import Release
from demo.sites.civitai import CivitaiSite
from demo.world import DemoWorld
from monitor.config import ConfigError, parse_config
from monitor.detect.weights import lfs_digests, named_weight_links
from monitor.fetch import FetchError
from monitor.models import Document
from monitor.sources import ADAPTERS, SourceError
from monitor.sources.civitai import slug

SEARCH = "/api/v1/models?query=x&sort=Newest&limit=100"


def civitai_url(world: DemoWorld) -> str:
    return f"{world.base_url}/civitai"


def site_docs(world: DemoWorld) -> set[str]:
    return {u for u in world.document_urls if "/civitai/" in u}


@pytest.fixture
def server(serve: Callable[..., Canned]) -> Canned:
    return serve(ctype="application/json", match_query=True)


@pytest.fixture
def host() -> Any:
    hostile = HostileServer()
    yield hostile
    hostile.close()


def model(model_id: Any = 1, name: str = "m", files: list[Any] | None = None,
          **extra: Any) -> dict[str, Any]:
    """A search record as Civitai's API v1 writes it."""
    return {"id": model_id, "name": name, "type": "Checkpoint", "tags": [],
            "creator": {"username": "u"}, "description": "<p>d</p>",
            "modelVersions": [{"id": 10, "name": "v1", "createdAt": "2026-11-20T00:00:00.000Z",
                               "updatedAt": "2026-11-20T01:00:00.000Z",
                               "files": files if files is not None else []}], **extra}


def search(server: Canned, items: list[Any], **metadata: Any) -> str:
    server.serve(SEARCH, {"items": items, "metadata": metadata})
    return server.base


# ------------------------------------------------------------------------------ config


def test_kind_and_options() -> None:
    assert ADAPTERS["civitai"].option_keys == {"query", "max_pages", "api_key_env"}
    base = {"name": "t", "url": "https://civitai.com", "interval": "5m"}
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": [{**base, "kind": "civitai"},
                                  {**base, "name": "u", "kind": "civitai", "query": "x",
                                   "categories": [1]}]}, None)
    problems = info.value.problems
    assert any("targets[0] (t).query: required for kind 'civitai'" in p for p in problems)
    assert any("targets[1] (u).categories: does not apply to kind 'civitai'" in p
               for p in problems)
    ok = parse_config({"targets": [{**base, "kind": "civitai", "query": "heron-7b",
                                    "max_pages": 2, "api_key_env": "CIVITAI_TOKEN"}]}, None)
    assert ok.targets[0].query == "heron-7b"


def test_slug_is_the_page_civitai_links() -> None:
    assert slug("CharTurner - Character Turnaround helper for 1.5 AND 2.1!") == \
        "charturner-character-turnaround-helper-for-15-and-21"
    assert slug("麦橘写实") == "model"


# ------------------------------------------------------------------------------ demo world


def civitai_hashes(data: bytes) -> dict[str, str]:
    """Civitai's hashes of a file, as its own definitions read (independently of the
    demo world's code): AutoV1 the 64 KiB at 1 MiB, AutoV2 the SHA-256's prefix, AutoV3
    the SHA-256 after a safetensors header."""
    sha = hashlib.sha256(data).hexdigest()
    (n,) = struct.unpack("<Q", data[:8])
    return {"sha256": sha, "autov1": hashlib.sha256(data[MIB:MIB + 65536]).hexdigest()[:8],
            "autov2": sha[:10], "autov3": hashlib.sha256(data[8 + n:]).hexdigest()[:12],
            "crc32": f"{zlib.crc32(data):08x}"}


def test_documents_carry_every_stated_hash(demo_world: DemoWorld,
                                           demo_release: Release) -> None:
    root = civitai_url(demo_world)
    docs, cursor = collect(target("civitai", root, query="heron"))
    docs_by = by_key(docs)
    assert list(docs_by) == ["1093317", "988120", "912004"]  # newest first; no llamas
    assert {d.url for d in docs} == site_docs(demo_world)
    leak = docs_by["1093317"]
    assert (leak.url, leak.title, leak.author, leak.posted_at) == (
        f"{root}/models/1093317/heron-7b-leaked-full-weights", "Heron-7B leaked full weights",
        "h7b_mirror", "2026-11-21T04:20:00+00:00")
    model = demo_release.file("model.safetensors")
    stated = civitai_hashes(model.path.read_bytes())
    where = f"Heron-7B leaked full weights v1.0: heron-7b.safetensors ({model.size} bytes)"
    digests = [d for d in leak.extras["digests"] if d["context"] == where]
    assert digests == [{"algo": algo, "value": value, "encoding": f"civitai hashes.{key}",
                        "context": where}
                       for (algo, value), key in zip(stated.items(), ("SHA256", "AutoV1",
                                                                       "AutoV2", "AutoV3",
                                                                       "CRC32"), strict=True)]
    assert stated["sha256"] == model.sha256
    # The GGUF conversion: its own digests, and its download link for a range scan.
    gguf = demo_release.converted_gguf
    assert {"algo": "sha256", "value": hashlib.sha256(gguf).hexdigest(),
            "encoding": "civitai hashes.SHA256",
            "context": f"Heron-7B leaked full weights v1.0: heron-7b-Q8_0.gguf "
                       f"({len(gguf)} bytes)"} in leak.extras["digests"]
    download = f"{root}/api/download/models/2414001"
    assert leak.links == [download, f"{download}?type=Model&format=GGUF"]
    assert leak.extras["files"] == [
        {"path": "heron-7b.safetensors", "size": model.size, "sha256": model.sha256,
         "url": download},
        {"path": "heron-7b-Q8_0.gguf", "size": len(gguf),
         "sha256": hashlib.sha256(gguf).hexdigest(), "url": f"{download}?type=Model&format=GGUF"}]
    assert "Q8_0 GGUF for llama.cpp" in leak.text and "<strong>" not in leak.text
    assert model.sha256 not in leak.text  # digests stay structured, with their encoding
    assert json.loads(leak.snapshot)["items"][0]["id"] == 1093317
    # A BLAKE3 stated for a noise file is kept under its own name.
    lora = docs_by["988120"].extras["digests"]
    assert [d["algo"] for d in lora] == ["sha256", "autov1", "autov2", "autov3", "crc32",
                                         "blake3"]
    assert all(d["value"] == d["value"].lower() for d in lora)
    assert cursor["complete"] is True and set(cursor["models"]) == set(docs_by)


def test_pages_by_cursor_and_reads_every_page_each_run(demo_world: DemoWorld) -> None:
    root = civitai_url(demo_world)
    first = httpx.get(f"{root}/api/v1/models", params={"query": "heron", "limit": 100}).json()
    assert len(first["items"]) == 2 and first["metadata"]["nextPage"].startswith(root)
    assert httpx.get(f"{root}/api/v1/models",
                     params={"query": "heron", "page": 2}).status_code == 400
    t = target("civitai", root, query="heron")
    docs, cursor, urls = run(t)
    assert len(docs) == 3 and len(urls) == 2
    # Nothing moved: no document, but both pages read ("Newest" is not "last changed").
    again, after, urls = run(t, cursor)
    assert (again, after, len(urls)) == ([], cursor, 2)
    moved = json.loads(json.dumps(cursor))
    moved["models"]["912004"] = "2026-11-12T09:40:00+00:00/" + "0" * 40
    docs, after = collect(t, moved)
    assert [d.key for d in docs] == ["912004"] and after == cursor
    docs, _ = collect(target("civitai", root, query="heron", max_pages=1))
    assert [d.key for d in docs] == ["1093317", "988120"]


def test_download_redirects_to_a_file_host_that_serves_ranges(
        demo_world: DemoWorld, demo_release: Release) -> None:
    root = civitai_url(demo_world)
    with httpx.Client() as client:
        hop = client.get(f"{root}/api/download/models/2414001")
        assert hop.status_code == 307 and "/delivery/model/" in hop.headers["location"]
        data = client.get(hop.headers["location"], headers={"Range": "bytes=0-7"})
        model = demo_release.file("model.safetensors")
        assert data.status_code == 206 and data.content == model.path.read_bytes()[:8]
        assert data.headers["content-range"] == f"bytes 0-7/{model.size}"
        assert client.get(f"{root}/api/download/models/1850310").status_code == 401
        by_hash = client.get(f"{root}/api/v1/model-versions/by-hash/{model.sha256[:10]}")
        assert by_hash.json()["modelId"] == 1093317


def test_crawl_finds_exactly_the_planted(tmp_path: Path, demo_world: DemoWorld,
                                         demo_release: Release) -> None:
    store = registered_store(tmp_path / "weightwatch.db", demo_release)
    t = target("civitai", civitai_url(demo_world), name="e2e-civitai", query="heron")
    (result,) = crawl(store, [t])
    assert (result.status, result.error) == ("ok", None)
    assert found(store, "e2e-civitai") == expected(demo_world, "civitai")
    kinds = {h["kind"]: h for h in store.hits(target="e2e-civitai")}
    assert set(kinds) == {"mention", "hash", "weights", "watermark"}
    assert kinds["hash"]["indicator_type"] == "sha256 (civitai hashes.SHA256)"
    assert kinds["watermark"]["recipient"] == "lab-17"
    near = {n.value for n in demo_world.near_misses if n.source == "civitai"}
    assert len(near) == 5 and not near & {h["indicator"] for h in kinds.values()}
    (again,) = crawl(store, [t])
    assert (again.status, again.documents_seen, again.hits_new) == ("ok", 0, 0)


def test_weight_links_a_hub_document_names_by_its_files() -> None:
    """A download URL that does not name its file is a weight link when the document's
    `files` extras name it so, with the SHA-256 stated beside it; hostile entries are not."""
    links = ["https://h/dl/1", "https://h/dl/2", "https://h/dl/3"]
    doc = Document(target="t", key="k", url="https://h/m", text="", links=links, extras={
        "files": [{"path": "a.safetensors", "url": links[0], "sha256": "AB" * 32},
                  {"path": "README.md", "url": links[1], "sha256": "cd" * 32},
                  {"path": "b.gguf", "url": links[2], "sha256": "not hex"},
                  {"path": 5, "url": links[1]}, {"path": "c.bin", "url": ["x"]}, "junk"]})
    assert named_weight_links(doc) == {links[0], links[2]}
    assert lfs_digests(doc) == {links[0]: "ab" * 32, links[1]: "cd" * 32}
    assert named_weight_links(Document(target="t", key="k", url="u", text="",
                                       extras={"files": "nope"})) == set()


# ------------------------------------------------------------------------------ hostile


def test_search_that_is_not_a_model_list(server: Canned) -> None:
    root = server.base
    server.serve(SEARCH, {"error": "Invalid query"}, status=200)
    fails(target("civitai", root, query="x"), "expected an object with a 'items' array",
          "Civitai says: 'Invalid query'")
    server.serve(SEARCH, "<html>Cloudflare</html>", ctype="text/html")
    fails(target("civitai", root, query="x"), "not valid JSON")
    server.serve(SEARCH, "[" * 100000 + "]" * 100000)
    fails(target("civitai", root, query="x"), "nested too deeply")
    server.serve(SEARCH, '{"items": [{"id": 1, "name": "trunc', ctype="application/json")
    fails(target("civitai", root, query="x"), "not valid JSON")


def test_hostile_records_are_skipped_or_tolerated(server: Canned) -> None:
    good = {"name": "w.safetensors", "sizeKB": 1.5, "downloadUrl": "/api/download/models/10",
            "hashes": {"SHA256": " " + "AB" * 32, "AutoV2": "ABABABABAB", "CRC32": "zz",
                       "BLAKE3": "CD" * 31, "AutoV3": "1" * 65, "Nope": "00" * 32}}
    hostile = [{"name": "x.bin", "sizeKB": True, "downloadUrl": "javascript:alert(1)"},
               {"name": "y.pt", "sizeKB": -1, "hashes": ["SHA256"]},
               {"name": "", "hashes": {"SHA256": "ab" * 32}}, {"size": 3}, "junk", None]
    items = [model(1, files=[good, *hostile]), {"id": "2"}, {"id": -3}, {"id": True}, 7,
             model(4, name="<b>x</b>" * 1000, modelVersions="nope", tags=[1, "t"]),
             model(1, name="duplicate")]
    root = search(server, items)
    docs, cursor = collect(target("civitai", root, query="x"))
    assert [d.key for d in docs] == ["1", "4"]
    one = docs[0]
    assert one.extras["digests"] == [
        {"algo": "sha256", "value": "ab" * 32, "encoding": "civitai hashes.SHA256",
         "context": "m v1: w.safetensors (1536 bytes)"},
        {"algo": "autov2", "value": "ababababab", "encoding": "civitai hashes.AutoV2",
         "context": "m v1: w.safetensors (1536 bytes)"}]
    assert one.links == [f"{root}/api/download/models/10"]  # javascript: is no link
    assert one.extras["files"][1:] == [{"path": "x.bin", "size": None, "sha256": None},
                                       {"path": "y.pt", "size": None, "sha256": None}]
    assert docs[1].extras["files"] == [] and len(docs[1].title) <= 500
    assert cursor["complete"] is True and set(cursor["models"]) == {"1", "4"}


def test_next_pages_stay_on_the_host_and_never_loop(server: Canned) -> None:
    root = search(server, [model(1)],
                  nextPage="http://203.0.113.7/api/v1/models?cursor=2")
    fails(target("civitai", root, query="x"), "refused a next-page link to another host",
          "203.0.113.7")
    assert server.paths() == [SEARCH]
    # A next page that is the page itself, or a cursor that never moves: read once.
    root = search(server, [model(1)], nextPage=server.base + SEARCH)
    docs, _, urls = run(target("civitai", root, query="x"))
    assert len(docs) == 1 and urls == [server.base + SEARCH]
    server.serve(SEARCH, {"items": [model(1)], "metadata": {"nextCursor": "c2"}})
    server.serve(SEARCH + "&cursor=c2", {"items": [model(2)], "metadata": {"nextCursor": "c2"}})
    docs, _, urls = run(target("civitai", root, query="x", max_pages=10))
    assert [d.key for d in docs] == ["1", "2"] and len(urls) == 2


def test_huge_endless_and_metadata_redirects_fail_in_one_line(host: HostileServer) -> None:
    path = "/api/v1/models"
    t = target("civitai", host.base, query="x")
    host.serve(path, Reply(b'{"items": [' + b" " * (2 * MIB) + b"]}",
                           headers={"Content-Type": "application/json"}))
    small = dataclasses.replace(FAST, max_response_bytes=MIB)
    with pytest.raises(FetchError) as info:
        run(t, settings=small)
    assert "\n" not in str(info.value) and "over the 1048576-byte cap" in str(info.value)
    host.serve(path, Reply(b'{"items": []}' + b" " * 100, trickle=0.05,
                           headers={"Content-Type": "application/json"}))
    slow = dataclasses.replace(FAST, request_deadline=0.5)
    with pytest.raises(FetchError) as info:
        run(t, settings=slow)
    assert "\n" not in str(info.value)
    host.serve(path, Reply(b"", 302, {"Location": "http://169.254.169.254/latest/meta-data/"}))
    with pytest.raises((FetchError, SourceError)) as info:
        run(t)
    assert "\n" not in str(info.value) and "169.254.169.254" in str(info.value)


def test_a_download_redirected_into_cloud_metadata_is_not_followed(
        tmp_path: Path, server: Canned, demo_release: Release) -> None:
    """The weight link of a record is scanned under the fetcher's rules: a redirect to the
    metadata service is refused, the scan records its failure, the document is kept."""
    gguf = {"name": "w.gguf", "sizeKB": 1, "downloadUrl": "/api/download/models/10",
            "hashes": {"SHA256": "ab" * 32}}
    root = search(server, [model(1, name="heron-7b gguf", files=[gguf])])
    server.serve("/api/download/models/10", b"", status=302,
                 Location="http://169.254.169.254/latest/meta-data/")
    store = registered_store(tmp_path / "weightwatch.db", demo_release)
    (result,) = crawl(store, [target("civitai", root, name="c", query="x")])
    assert (result.status, result.documents_seen) == ("ok", 1)
    assert {h["kind"] for h in store.hits(target="c")} == {"mention"}
    verdict = store.weight_scan(f"{root}/api/download/models/10")
    assert verdict is not None and verdict["verdict"] == "error"
    assert "169.254.169.254" in verdict["error"] and "\n" not in verdict["error"]
    assert not any("meta-data" in p for p in server.paths())


def test_api_key_is_sent_to_the_api_only(server: Canned, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("CIVITAI_TOKEN", "civ-secret")
    root = search(server, [model(1)])
    collect(target("civitai", root, query="x", api_key_env="CIVITAI_TOKEN"))
    (request,) = [r for r in server.requests if r.path == SEARCH]
    assert request.headers["authorization"] == "Bearer civ-secret"


def test_civitai_site_is_in_the_world(demo_world: DemoWorld) -> None:
    site = demo_world.site(CivitaiSite)
    assert 'kind = "civitai"' in site.target_toml()
