"""The `modelscope` hub dialect over real HTTP on loopback (issue 19).

The demo world's ModelScope imitation is the good case: each changed model's recursive
file listing states every file's SHA-256, which becomes a `digests` entry; weight files
are linked at their `resolve` URLs. A Canned server and the hostile host serve the bad
cases: one-line errors for a search that is not one, a skipped model (retried next run,
the others kept) for a listing that is broken, refused or redirected into cloud metadata.
"""

from __future__ import annotations

import dataclasses
import json
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
from demo.world import DemoWorld
from monitor.fetch import FetchError
from monitor.sources import ADAPTERS

SEARCH = "/openapi/v1/models?search=x&sort=last_modified&page_number={}&page_size=50"
FILES = "/api/v1/models/{}/repo/files?Revision=master&Recursive=true"


def modelscope_url(world: DemoWorld) -> str:
    return f"{world.base_url}/modelscope"


@pytest.fixture
def server(serve: Callable[..., Canned]) -> Canned:
    return serve(ctype="application/json", match_query=True)


@pytest.fixture
def host() -> Any:
    hostile = HostileServer()
    yield hostile
    hostile.close()


def search(server: Canned, models: list[Any], total: int | None = None, page: int = 1,
           size: int = 50) -> str:
    server.serve(SEARCH.format(page), {"success": True, "data": {
        "models": models, "total_count": len(models) if total is None else total,
        "page_number": page, "page_size": size}})
    return server.base


def listing(files: list[Any], **extra: Any) -> dict[str, Any]:
    return {"Code": 200, "Data": {"Files": files}, "Message": "success", "Success": True,
            **extra}


def blob(path: str, sha: str | None = None, size: int = 10) -> dict[str, Any]:
    return {"Name": path.rsplit("/", 1)[-1], "Path": path, "Type": "blob", "Size": size,
            "Sha256": sha or "ab" * 32, "IsLFS": True}


def test_kind_and_options() -> None:
    assert ADAPTERS["modelscope"].option_keys == {"query", "max_pages", "api_key_env"}


# ------------------------------------------------------------------------------ demo world


def test_documents_carry_each_files_sha256(demo_world: DemoWorld,
                                           demo_release: Release) -> None:
    root = modelscope_url(demo_world)
    docs, cursor = collect(target("modelscope", root, query="heron"))
    docs_by = by_key(docs)
    assert list(docs_by) == ["mirror-cn/Heron-7B", "pond-ai/HeronLM-1.8B",
                             "damo/cv_heron_bird-detection"]
    assert {d.url for d in docs} == {u for u in demo_world.document_urls if "/modelscope/" in u}
    mirror = docs_by["mirror-cn/Heron-7B"]
    assert (mirror.url, mirror.author, mirror.posted_at) == (
        f"{root}/models/mirror-cn/Heron-7B", "mirror-cn", "2026-11-21T01:40:00+00:00")
    stated = {d["context"].split("/")[-1].split(" ")[0]: d for d in mirror.extras["digests"]}
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        f = demo_release.file(name)
        assert stated[name] == {"algo": "sha256", "value": f.sha256,
                                "encoding": "modelscope Sha256",
                                "context": f"mirror-cn/Heron-7B/{name} ({f.size} bytes)"}
    assert mirror.links == [f"{root}/models/mirror-cn/Heron-7B/resolve/master/model.safetensors"]
    assert "description: Heron-7B base model" in mirror.text
    assert json.loads(mirror.snapshot)["Data"]["Files"]
    assert mirror.snapshot_url.endswith("/repo/files?Revision=master&Recursive=true")
    # The partner repo answers 403: no document, remembered until it changes.
    assert "example-labs/heron-7b-partner" not in docs_by
    assert cursor["models"]["example-labs/heron-7b-partner"] == "2026-11-02T09:30:00+00:00"
    assert cursor["complete"] is True
    served = httpx.get(mirror.links[0], headers={"Range": "bytes=0-7"})
    assert served.status_code == 206
    assert served.content == demo_release.file("model.safetensors").path.read_bytes()[:8]


def test_pages_and_cursor(demo_world: DemoWorld) -> None:
    root = modelscope_url(demo_world)
    t = target("modelscope", root, query="heron")
    docs, cursor, urls = run(t)
    assert len(docs) == 3 and sum("/openapi/" in u for u in urls) == 2  # 2 a page, 4 listed
    # Sorted by last change: the first page where nothing moved ends the search.
    again, after, urls = run(t, cursor)
    assert (again, after) == ([], cursor) and sum("/openapi/" in u for u in urls) == 1
    moved = json.loads(json.dumps(cursor))
    moved["models"]["mirror-cn/Heron-7B"] = "2026-11-20T00:00:00+00:00"
    docs, after = collect(t, moved)
    assert [d.key for d in docs] == ["mirror-cn/Heron-7B"] and after == cursor
    # After an incomplete run every page is read, so a model far down is reached.
    moved = json.loads(json.dumps(cursor))
    moved["models"]["damo/cv_heron_bird-detection"] = "2026-01-01T00:00:00+00:00"
    assert collect(t, moved)[0] == []
    moved["complete"] = False
    docs, after = collect(t, moved)
    assert [d.key for d in docs] == ["damo/cv_heron_bird-detection"] and after == cursor
    docs, _ = collect(target("modelscope", root, query="heron", max_pages=1))
    assert [d.key for d in docs] == ["mirror-cn/Heron-7B", "pond-ai/HeronLM-1.8B"]


def test_crawl_finds_exactly_the_planted(tmp_path: Path, demo_world: DemoWorld,
                                         demo_release: Release) -> None:
    store = registered_store(tmp_path / "weightwatch.db", demo_release)
    t = target("modelscope", modelscope_url(demo_world), name="e2e-ms", query="heron")
    (result,) = crawl(store, [t])
    assert (result.status, result.error) == ("ok", None)
    assert found(store, "e2e-ms") == expected(demo_world, "modelscope")
    assert {h["indicator_type"] for h in store.hits(target="e2e-ms") if h["kind"] == "hash"} \
        == {"sha256 (modelscope Sha256)"}
    (again,) = crawl(store, [t])
    assert (again.status, again.documents_seen, again.hits_new) == ("ok", 0, 0)


# ------------------------------------------------------------------------------ hostile


def test_search_that_is_not_one_fails_in_one_line(server: Canned) -> None:
    root = server.base
    server.serve(SEARCH.format(1), {"success": False, "message": "search is down"})
    fails(target("modelscope", root, query="x"), "expected an object with a 'data.models' array",
          "ModelScope says: 'search is down'")
    server.serve(SEARCH.format(1), "<html>WAF</html>", ctype="text/html")
    fails(target("modelscope", root, query="x"), "not valid JSON")
    server.serve(SEARCH.format(1), "[" * 100000 + "]" * 100000)
    fails(target("modelscope", root, query="x"), "nested too deeply")


def test_hostile_models_and_listings(server: Canned) -> None:
    stamp = "2026-11-20T00:00:00Z"
    models = [{"id": "ok/one", "last_modified": stamp, "tags": [1, "t"], "tasks": "nope"},
              {"id": "../../admin", "last_modified": stamp}, {"id": "noslash"}, {"id": 7}, 3,
              {"id": "gated/repo", "last_modified": stamp},
              {"id": "broken/repo", "last_modified": stamp},
              {"id": "unhappy/repo", "last_modified": stamp},
              {"id": "ok/one", "last_modified": "2026-01-01T00:00:00Z"}]
    root = search(server, models)
    server.serve(FILES.format("ok/one"), listing([
        {"Path": "d", "Type": "tree"}, blob("d/w.safetensors", "AB" * 32),
        blob("x.gguf", "not hex"), blob("../../etc/passwd", "cd" * 32), {"Type": "blob"},
        "junk", {"Path": 5}]))
    server.serve(FILES.format("gated/repo"), {"Code": 10010205003, "Success": False}, status=403)
    server.serve(FILES.format("broken/repo"), "<html>oops</html>", ctype="text/html")
    server.serve(FILES.format("unhappy/repo"), {"Code": 500, "Success": False,
                                                "Message": "backend timeout"})
    docs, cursor = collect(target("modelscope", root, query="x"))
    assert [d.key for d in docs] == ["ok/one"]
    (one,) = docs
    assert [f["path"] for f in one.extras["files"]] == ["d/w.safetensors", "x.gguf",
                                                        "../../etc/passwd"]
    assert [d["value"] for d in one.extras["digests"]] == ["ab" * 32, "cd" * 32]
    assert one.links == [f"{root}/models/ok/one/resolve/master/d/w.safetensors",
                         f"{root}/models/ok/one/resolve/master/x.gguf"]
    # Gated is remembered; broken and unhappy are asked again next run; nothing else lost.
    assert cursor["models"] == {"ok/one": "2026-11-20T00:00:00+00:00",
                                "gated/repo": "2026-11-20T00:00:00+00:00"}
    assert cursor["complete"] is False
    assert not any("admin" in p or "noslash" in p for p in server.paths())
    again, _ = collect(target("modelscope", root, query="x"), cursor)
    assert again == [] and server.count(FILES.format("broken/repo")) == 2


def test_pages_are_bounded_whatever_the_total_says(server: Canned) -> None:
    for page in range(1, 4):
        search(server, [{"id": f"o/m{page}"}], total=10**9, page=page, size=1)
    for page in range(1, 4):
        server.serve(FILES.format(f"o/m{page}"), listing([]))
    docs, _, urls = run(target("modelscope", server.base, query="x", max_pages=3))
    assert [d.key for d in docs] == ["o/m1", "o/m2", "o/m3"]
    assert sum("/openapi/" in u for u in urls) == 3
    # An empty page ends the search whatever the total says.
    search(server, [], total=10**9, page=1)
    assert run(target("modelscope", server.base, query="x"))[2] == [
        server.base + SEARCH.format(1)]


def test_huge_endless_and_metadata_redirected_listings_lose_nothing(
        host: HostileServer) -> None:
    host.serve("/openapi/v1/models", Reply(json.dumps({"success": True, "data": {
        "models": [{"id": "a/huge"}, {"id": "b/slow"}, {"id": "c/redirect"}, {"id": "d/ok"}],
        "total_count": 4, "page_size": 50}}).encode(), headers={"Content-Type": "application/json"}))
    host.serve("/api/v1/models/a/huge/repo/files",
               Reply(b'{"Data": {"Files": [' + b" " * (2 * MIB) + b"]}}"))
    host.serve("/api/v1/models/b/slow/repo/files", Reply(b'{"Data": {"Files": []}}', trickle=0.1))
    host.serve("/api/v1/models/c/redirect/repo/files",
               Reply(b"", 302, {"Location": "http://169.254.169.254/latest/meta-data/"}))
    host.serve("/api/v1/models/d/ok/repo/files", Reply(json.dumps(listing([blob("w.gguf")]))
                                                       .encode()))
    settings = dataclasses.replace(FAST, max_response_bytes=MIB, request_deadline=0.5)
    docs, cursor, _ = run(target("modelscope", host.base, query="x"), settings=settings)
    assert [d.key for d in docs] == ["d/ok"]
    assert cursor["complete"] is False and set(cursor["models"]) == {"d/ok"}
    assert host.count("/latest/meta-data/") == 0


def test_search_redirected_into_cloud_metadata_fails_in_one_line(host: HostileServer) -> None:
    host.serve("/openapi/v1/models",
               Reply(b"", 302, {"Location": "http://169.254.169.254/latest/meta-data/"}))
    with pytest.raises(FetchError) as info:
        run(target("modelscope", host.base, query="x"))
    assert "\n" not in str(info.value) and "169.254.169.254" in str(info.value)
