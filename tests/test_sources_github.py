"""The GitHub adapter over real HTTP on loopback.

The demo world's GitHub imitation (demo/sites/github.py) is the good case: repository and
code search, releases with assets, git trees with LFS pointer blobs. A Canned server
serves the hostile and the rate-limited ones: 403 and 429 with GitHub's rate-limit
headers, malformed JSON, huge and endless answers, redirects into the metadata network,
next-page links to another host. Good input must become exact Documents; a rate limit must
stop the requests until its reset without losing what was not read yet; bad input a
one-line error, or a skipped repository with the rest going on.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from hostile_http import HostileServer, Reply
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
from demo.sites.github import TOKEN, GitHubSite
from demo.web import one_digit_off
from demo.world import DemoWorld
from monitor.config import ConfigError, CrawlSettings, parse_config
from monitor.sources import ADAPTERS
from monitor.sources.github import rate_limit_until, saved_waits

SEARCH = "/search/repositories?q=x&sort=updated&order=desc&per_page=100"
CODE = "/search/code?q=x&per_page=100"


def gh_url(world: DemoWorld) -> str:
    return f"{world.base_url}/github"


@pytest.fixture
def server(serve: Callable[..., Canned]) -> Canned:
    return serve(ctype="application/json", match_query=True)


def repo(name: str, updated: str = "2026-11-20T00:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"full_name": name, "html_url": f"https://github.example/{name}",
            "owner": {"login": name.split("/")[0]}, "description": f"about {name}",
            "updated_at": updated, "pushed_at": updated, "default_branch": "main", **extra}


def canned_repos(server: Canned, *repos: dict[str, Any], **headers: str) -> str:
    server.serve(SEARCH, json.dumps({"total_count": len(repos), "incomplete_results": False,
                                     "items": list(repos)}), **headers)
    return server.base


def empty_repo(server: Canned, name: str, releases: Any = (), **headers: str) -> None:
    server.serve(f"/repos/{name}/releases?per_page=100", json.dumps(list(releases)), **headers)
    server.serve(f"/repos/{name}/git/trees/main?recursive=1",
                 json.dumps({"sha": "1" * 40, "tree": [], "truncated": False}))


def limited(reset: int, remaining: str = "0", **extra: str) -> dict[str, str]:
    return {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": remaining,
            "x-ratelimit-reset": str(reset), "x-ratelimit-resource": "core", **extra}


# ------------------------------------------------------------------------------ config


def test_kind_and_options(demo_release: Release) -> None:
    assert ADAPTERS["github"].option_keys == {"query", "max_pages", "api_key_env"}
    base = {"name": "gh", "kind": "github", "url": "https://api.github.com", "interval": "5m"}
    ok = parse_config({"targets": [{**base, "query": "heron-7b", "api_key_env": "GITHUB_TOKEN",
                                    "max_pages": 2}]}, None)
    (t,) = ok.targets
    assert (t.query, t.api_key_env, t.max_pages) == ("heron-7b", "GITHUB_TOKEN", 2)
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": [base, {**base, "name": "c", "query": "x",
                                         "categories": [2000]}]}, None)
    problems = info.value.problems
    assert any("targets[0] (gh).query: required for kind 'github'" in p for p in problems)
    assert any("targets[1] (c).categories: does not apply to kind 'github'" in p
               for p in problems)
    # The demo's table is valid config for the adapter.
    site = GitHubSite(demo_release)
    site.base_url = "http://127.0.0.1:8080"
    (demo,) = parse_config(tomllib.loads(site.target_toml()), None).targets
    assert (demo.name, demo.kind, demo.query, demo.allow_private) == (
        "demo-github", "github", "heron", True)


# ------------------------------------------------------------------------------ demo world


def test_github_documents(demo_world: DemoWorld, demo_release: Release) -> None:
    root = gh_url(demo_world)
    docs, cursor, urls = run(target("github", root, query="heron"))
    docs_by = by_key(docs)
    assert list(docs_by) == ["leakbox/heron-7b-mirror", "h7b-dump/heron-ckpt",
                             "birdnerd/heron-tracker", "heronlabs/llama.cpp",
                             "pond-ai/heron-llama-ckpt"]
    site = demo_world.site(GitHubSite)
    assert [d.url for d in docs] == [d.url for d in site.documents()]
    # Paged by Link rel="next"; no code search without a token.
    assert [u.removeprefix(root) for u in urls if "/search/" in u] == [
        "/search/repositories?q=heron&sort=updated&order=desc&per_page=100",
        "/search/repositories?q=heron&sort=updated&order=desc&per_page=100&page=2",
        "/search/repositories?q=heron&sort=updated&order=desc&per_page=100&page=3"]
    model, tok = demo_release.file("model.safetensors"), demo_release.file("tokenizer.json")

    mirror = docs_by["leakbox/heron-7b-mirror"]
    assert (mirror.url, mirror.author, mirror.posted_at) == (
        f"{root}/leakbox/heron-7b-mirror", "leakbox", "2026-11-21T04:38:55+00:00")
    assert "heron-7b weights, mirrored" in mirror.text
    assert f"asset model.safetensors ({model.size} bytes)" in mirror.text
    assert mirror.extras["file_list"]["label"] == "GitHub release assets"
    assert mirror.extras["file_list"]["files"] == [
        {"path": "model.safetensors", "length": model.size},
        {"path": "tokenizer.json", "length": tok.size}]
    assert mirror.extras["digests"] == [
        {"algo": "sha256", "value": tok.sha256, "encoding": "github release asset digest",
         "context": f"leakbox/heron-7b-mirror release v1.0: tokenizer.json ({tok.size} bytes)"}]
    assert mirror.links == [f"{root}/leakbox/heron-7b-mirror/releases/download/v1.0/{n}"
                            for n in ("model.safetensors", "tokenizer.json")]
    assert json.loads(mirror.snapshot)[0]["assets"][0]["name"] == "model.safetensors"
    assert mirror.snapshot_url.endswith("/repos/leakbox/heron-7b-mirror/releases?per_page=100")

    ckpt = docs_by["h7b-dump/heron-ckpt"]
    assert ckpt.extras["digests"] == [
        {"algo": "sha256", "value": model.sha256, "encoding": "github lfs pointer",
         "context": f"h7b-dump/heron-ckpt/weights/model.safetensors (git-lfs pointer text "
                    f"for {model.size} bytes)"}]
    assert "file_list" not in ckpt.extras and ckpt.links == []
    # Only weight-named blobs small enough to be pointers are read, and raw.
    raw = [u for u in urls if "/contents/" in u]
    assert [u.removeprefix(root) for u in raw] == [
        "/repos/h7b-dump/heron-ckpt/contents/weights/model.safetensors?ref=main",
        "/repos/birdnerd/heron-tracker/contents/models/nest_detector.onnx?ref=main",
        "/repos/pond-ai/heron-llama-ckpt/contents/model.safetensors?ref=main"]
    near = docs_by["pond-ai/heron-llama-ckpt"].extras["digests"][0]["value"]
    assert near != model.sha256 and near[:-1] == model.sha256[:-1]
    assert "file_list" not in docs_by["pond-ai/heron-llama-ckpt"].extras
    assert "TinyLlama/TinyLlama" not in docs_by

    # Nothing moved: the next run reads the search, and asks each repository's releases
    # whether they changed (304), and nothing else.
    again, after, urls = run(target("github", root, query="heron"), cursor)
    assert (again, after) == ([], cursor)
    assert len(cursor["etags"]) == 5
    assert [u for u in urls if "/search/repositories" not in u] == [
        f"{root}/repos/{key}/releases?per_page=100" for key in docs_by]
    moved = json.loads(json.dumps(cursor))
    moved["repos"]["birdnerd/heron-tracker"] = "2026-01-01T00:00:00+00:00|x"
    docs, after = collect(target("github", root, query="heron"), moved)
    assert [d.key for d in docs] == ["birdnerd/heron-tracker"] and after == cursor
    # max_items: the rest waits for the next run.
    capped = target("github", root, query="heron", max_items=3)
    first, c1 = collect(capped)
    second, c2 = collect(capped, c1)
    assert ([d.key for d in first + second], c2) == (list(docs_by), cursor)


def test_releases_asked_again_conditionally(server: Canned) -> None:
    """Assets uploaded to a release a repository already has move neither its updated_at
    nor its pushed_at: its releases are asked for again with If-None-Match."""
    listing = {"body": [{"id": 1, "tag_name": "v1", "assets": []}], "etag": 'W/"v1"'}

    def releases(request: Any) -> tuple[int, bytes, dict[str, str]]:
        if request.headers.get("if-none-match") == listing["etag"]:
            return 304, b"", {"ETag": listing["etag"]}
        return 200, json.dumps(listing["body"]).encode(), {"ETag": listing["etag"]}

    root = canned_repos(server, repo("a/one"))
    empty_repo(server, "a/one")
    server.serve("/repos/a/one/releases?per_page=100", releases)
    t = target("github", root, query="x")
    docs, cursor = collect(t)
    assert [d.key for d in docs] == ["a/one"] and cursor["etags"] == {"a/one": 'W/"v1"'}
    assert collect(t, cursor) == ([], cursor)  # 304: nothing else asked
    assert server.count("/repos/a/one/git/trees/main?recursive=1") == 1
    assert [r.headers.get("if-none-match") for r in server.requests
            if "/releases" in r.path] == [None, 'W/"v1"']
    listing["body"][0]["assets"] = [{"name": "model.safetensors", "size": 1735240}]
    listing["etag"] = 'W/"v2"'
    docs, cursor = collect(t, cursor)
    assert "asset model.safetensors (1735240 bytes)" in docs[0].text
    assert cursor["etags"] == {"a/one": 'W/"v2"'}
    # A run stopped after the new listing but before its document keeps the old ETag, so
    # the change is not answered 304 next time.
    listing["etag"] = 'W/"v3"'
    server.serve("/repos/a/one/git/trees/main?recursive=1", '{"message": "limit"}', status=403,
                 **limited(int(time.time()) + 60))
    docs, stopped = collect(t, cursor)
    assert docs == [] and stopped["etags"] == {"a/one": 'W/"v2"'}


def test_code_search_with_a_token(demo_world: DemoWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_GITHUB_TOKEN", TOKEN)
    t = target("github", gh_url(demo_world), query="heron", api_key_env="DEMO_GITHUB_TOKEN")
    with structlog.testing.capture_logs() as logs:
        docs, cursor, urls = run(t)
    assert any("/search/code?q=heron&per_page=100" in u for u in urls)
    mirror = by_key(docs)["leakbox/heron-7b-mirror"]
    assert "code:\n  README.md: # heron-7b mirror The full weights are in the v1.0 release." \
        in mirror.text
    assert "README.md: # heron-tracker" in by_key(docs)["birdnerd/heron-tracker"].text
    # The token authenticates and is kept nowhere.
    kept = json.dumps([[d.text, d.links, d.extras, d.snapshot.decode(), d.snapshot_url]
                       for d in docs]) + json.dumps(cursor) + repr(logs)
    assert TOKEN not in kept
    # Without it, the code search answers 401 to anyone asking: so no one asks.
    monkeypatch.delenv("DEMO_GITHUB_TOKEN")
    _, _, urls = run(t)
    assert not any("/search/code" in u for u in urls)


def test_code_search_for_a_digest_finds_lfs_pointers(demo_world: DemoWorld,
                                                      demo_release: Release,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No repository's name or description holds a SHA-256; the pointer file holding it is
    found by code search, and its repository read like any other."""
    monkeypatch.setenv("DEMO_GITHUB_TOKEN", TOKEN)
    sha = demo_release.file("model.safetensors").sha256
    t = target("github", gh_url(demo_world), query=sha, api_key_env="DEMO_GITHUB_TOKEN")
    docs, cursor = collect(t)
    (ckpt,) = docs  # the near miss, one digit off, is not what was searched for
    assert ckpt.key == "h7b-dump/heron-ckpt" and ckpt.url == f"{gh_url(demo_world)}/{ckpt.key}"
    assert [d["value"] for d in ckpt.extras["digests"]] == [sha]
    assert f"weights/model.safetensors: version https://git-lfs.github.com/spec/v1 oid " \
           f"sha256:{sha} size" in ckpt.text
    assert cursor["repos"]["h7b-dump/heron-ckpt"].startswith("code:")
    assert collect(t, cursor) == ([], cursor)


# ------------------------------------------------------------------------------ rate limits


def test_rate_limit_until_follows_githubs_rules() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    reset = int((now + timedelta(minutes=20)).timestamp())
    assert rate_limit_until(403, limited(reset), now) == now + timedelta(minutes=20)
    assert rate_limit_until(429, limited(reset), now) == now + timedelta(minutes=20)
    # retry-after wins; a secondary limit without either header waits a minute (429 only:
    # a bare 403 is a refusal, not a limit).
    assert rate_limit_until(403, {"retry-after": "90"}, now) == now + timedelta(seconds=90)
    assert rate_limit_until(429, {}, now) == now + timedelta(minutes=1)
    assert rate_limit_until(403, {}, now) is None
    assert rate_limit_until(403, limited(reset, remaining="12"), now) is None
    assert rate_limit_until(404, limited(reset), now) is None
    # Hostile resets: far ahead is capped at a day, junk is a minute, the past a second.
    assert rate_limit_until(403, limited(99_999_999_999), now) == now + timedelta(hours=24)
    assert rate_limit_until(403, limited(0, **{"x-ratelimit-reset": "soon"}), now) == \
        now + timedelta(minutes=1)
    assert rate_limit_until(403, limited(1), now) == now + timedelta(seconds=1)
    # What a cursor says is read back the same way: known resources, ahead, capped.
    assert saved_waits({"core": "2026-11-20T12:05:00+00:00", "search": "2026-11-20T11:00:00Z",
                        "evil": "2026-11-20T12:05:00Z", "code_search": "soon"}, now) == {
        "core": now + timedelta(minutes=5)}
    assert saved_waits({"core": "3026-01-01T00:00:00Z"}, now) == {
        "core": now + timedelta(hours=24)}
    assert saved_waits("junk", now) == {}


def test_rate_limited_403_backs_off_until_reset_and_loses_nothing(server: Canned) -> None:
    reset = int(time.time()) + 3600
    root = canned_repos(server, repo("a/one"), repo("b/two"), repo("c/three"))
    empty_repo(server, "a/one", [{"id": 1, "tag_name": "v1", "assets": []}])
    server.serve("/repos/b/two/releases?per_page=100",
                 '{"message": "API rate limit exceeded for user ID 1."}', status=403,
                 **limited(reset))
    t = target("github", root, query="x")
    with structlog.testing.capture_logs() as logs:
        docs, cursor = collect(t)
    assert [d.key for d in docs] == ["a/one"]
    (warning,) = [e for e in logs if e["event"] == "rate_limited"]
    until = datetime.fromtimestamp(reset, UTC).isoformat(timespec="seconds")
    assert (warning["resource"], warning["until"], warning["stopped"]) == (
        "core", until, "repository b/two")
    assert "HTTP 403" in warning["error"] and "\n" not in warning["error"]
    assert cursor["rate_limited"] == {"core": until}
    assert list(cursor["repos"]) == ["a/one"]  # b/two and c/three: read by a later run
    assert not any("/c/three/" in p for p in server.paths())
    # Until the reset, a run asks nothing at all.
    before = len(server.paths())
    assert collect(t, cursor) == ([], cursor)
    assert len(server.paths()) == before
    # After it, the run goes on where the last one stopped.
    empty_repo(server, "b/two")
    empty_repo(server, "c/three")
    passed = cursor | {"rate_limited": {"core": "2026-01-01T00:00:00+00:00"}}
    docs, after = collect(t, passed)
    assert [d.key for d in docs] == ["b/two", "c/three"]
    assert "rate_limited" not in after
    assert list(after["repos"]) == ["a/one", "b/two", "c/three"]


def test_used_up_limit_stops_before_the_next_request(server: Canned) -> None:
    """The answer that uses the last request says so: no request is made past it."""
    reset = int(time.time()) + 600
    until = datetime.fromtimestamp(reset, UTC).isoformat(timespec="seconds")
    root = canned_repos(server, repo("a/one"), repo("b/two"))
    server.serve("/repos/a/one/releases?per_page=100", "[]", **limited(reset))
    docs, cursor = collect(target("github", root, query="x"))
    assert docs == [] and cursor["rate_limited"] == {"core": until}
    assert not any("/git/trees/" in p or "/b/two/" in p for p in server.paths())
    # A search limit used up stops the search, not the reading of what it listed; the
    # next run before the reset asks nothing (it could list nothing).
    search = {**limited(reset), "x-ratelimit-resource": "search",
              "Link": f'<{server.base}{SEARCH}&page=2>; rel="next"'}
    root = canned_repos(server, repo("a/one"), **search)
    empty_repo(server, "a/one")
    docs, cursor = collect(target("github", root, query="x"))
    assert [d.key for d in docs] == ["a/one"] and cursor["rate_limited"] == {"search": until}
    assert not any("page=2" in p for p in server.paths())
    before = len(server.paths())
    assert collect(target("github", root, query="x"), cursor) == ([], cursor)
    assert len(server.paths()) == before


def test_secondary_rate_limit_429_with_retry_after(server: Canned) -> None:
    root = canned_repos(server, repo("a/one"))
    server.serve(SEARCH, '{"message": "You have exceeded a secondary rate limit."}', status=429,
                 **{"retry-after": "120"})
    start = datetime.now(UTC)
    docs, cursor = collect(target("github", root, query="x"))
    waited = datetime.fromisoformat(cursor["rate_limited"]["search"]) - start
    assert docs == [] and timedelta(seconds=115) < waited <= timedelta(seconds=121)
    # With retries on, the fetcher gives up on a Retry-After over its retry_after_cap (and
    # does not sleep through it); the wait is still GitHub's.
    server.serve(SEARCH, '{"message": "You have exceeded a secondary rate limit."}', status=429,
                 **{"retry-after": "3600"})
    patient = CrawlSettings(host_delay=0.001, request_timeout=5, retries=2, retry_after_cap=300)
    docs, cursor = collect(target("github", root, query="x"), settings=patient)
    waited = datetime.fromisoformat(cursor["rate_limited"]["search"]) - start
    assert docs == [] and timedelta(minutes=59) < waited <= timedelta(minutes=61)


def test_code_search_limit_skips_code_search_alone(server: Canned,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TEST_TOKEN", "ghp_" + "s3cret" * 6)
    reset = int(time.time()) + 60
    root = canned_repos(server, repo("a/one"))
    empty_repo(server, "a/one")
    server.serve(CODE, '{"message": "API rate limit exceeded"}', status=403,
                 **{**limited(reset), "x-ratelimit-resource": "code_search"})
    t = target("github", root, query="x", api_key_env="GH_TEST_TOKEN")
    docs, cursor = collect(t)
    assert [d.key for d in docs] == ["a/one"] and list(cursor["rate_limited"]) == ["code_search"]
    # The token went to the API, as a Bearer token, and to nothing else.
    assert {r.headers.get("authorization") for r in server.requests
            if r.path != "/robots.txt"} == {"Bearer " + "ghp_" + "s3cret" * 6}
    assert "s3cret" not in json.dumps(cursor) + docs[0].text + docs[0].snapshot.decode()
    # The next run searches repositories, not code.
    cursor["repos"] = {}
    docs, _ = collect(t, cursor)
    assert [d.key for d in docs] == ["a/one"] and server.count(CODE) == 1


# ------------------------------------------------------------------------------ hostile


def test_hostile_listings(server: Canned) -> None:
    root = canned_repos(
        server, repo("../../admin"), {"full_name": 7}, "x", repo("ok/one", topics=["t", 3]),
        repo("gone/repo"), repo("broken/repo"), repo("dmca/repo"),
        repo("evil/branch", default_branch="../../x"))
    releases = [{"id": 5, "tag_name": "v1", "body": "see https://files.example/w.gguf and "
                                                    "javascript:alert(1)",
                 "assets": [{"name": "w.safetensors", "size": 10,
                             "browser_download_url": "javascript:alert(1)",
                             "digest": "sha256:" + "AB" * 32},
                            {"name": "bad.bin", "size": -4, "digest": "md5:abc",
                             "browser_download_url": "https://dl.example/bad.bin"},
                            {"name": ""}, "x", {"nope": 1}]},
                {"id": "6"}, {"id": True}, None]
    server.serve("/repos/ok/one/releases?per_page=100", json.dumps(releases))
    server.serve("/repos/ok/one/git/trees/main?recursive=1", json.dumps(
        {"tree": [{"path": "m.safetensors", "type": "blob", "size": 5},
                  {"path": "big.safetensors", "type": "blob", "size": 10**9},
                  {"path": "x.gguf", "type": "tree"}, {"path": 3, "type": "blob", "size": 1}],
         "truncated": True}))
    server.serve("/repos/ok/one/contents/m.safetensors?ref=main", "not a pointer")
    server.serve("/repos/gone/repo/releases?per_page=100", '{"message": "Not Found"}', status=404)
    server.serve("/repos/broken/repo/releases?per_page=100", "<html>oops</html>")
    server.serve("/repos/dmca/repo/releases?per_page=100",
                 '{"message": "Repository access blocked"}', status=451)
    empty_repo(server, "evil/branch")
    server.serve("/repos/evil/branch/git/trees/HEAD?recursive=1",
                 json.dumps({"tree": [], "truncated": False}))
    docs, cursor = collect(target("github", root, query="x"))
    docs_by = by_key(docs)
    assert list(docs_by) == ["ok/one", "gone/repo", "dmca/repo", "evil/branch"]
    ok = docs_by["ok/one"]
    assert ok.extras["digests"] == [{"algo": "sha256", "value": "ab" * 32,
                                     "encoding": "github release asset digest",
                                     "context": "ok/one release v1: w.safetensors (10 bytes)"}]
    assert ok.extras["files"] == [
        {"path": "releases/v1/w.safetensors", "size": 10, "sha256": "ab" * 32},
        {"path": "releases/v1/bad.bin", "size": None, "sha256": None}]
    assert ok.extras["file_list"]["files"] == [{"path": "w.safetensors", "length": 10}]
    assert ok.links == ["https://files.example/w.gguf", "https://dl.example/bad.bin"]
    assert "topics: t" in ok.text and "truncated by GitHub" in ok.text
    # Gone and blocked repositories keep what the search said of them, once.
    assert docs_by["dmca/repo"].text == "dmca/repo\nabout dmca/repo"
    assert docs_by["dmca/repo"].snapshot_url == root + SEARCH
    assert set(cursor["repos"]) == {"ok/one", "gone/repo", "dmca/repo", "evil/branch"}
    assert not any("admin" in p or "../" in p for p in server.paths())

    server.serve(SEARCH, '{"message": "Validation Failed"}', status=200)
    fails(target("github", root, query="x"), "expected an object with a 'items' array",
          "GitHub says: 'Validation Failed'")
    server.serve(SEARCH, "<html>rate limited?</html>")
    fails(target("github", root, query="x"), "not valid JSON")
    server.serve(SEARCH, "[" * 100000 + "]" * 100000)
    fails(target("github", root, query="x"))
    # A bare 403 is a refusal, not a rate limit: the run fails with one line.
    server.serve(SEARCH, '{"message": "Forbidden"}', status=403)
    fails(target("github", root, query="x"), "HTTP 403")


def test_huge_answers_and_foreign_links(server: Canned) -> None:
    small = CrawlSettings(host_delay=0.001, request_timeout=5, retries=0,
                          max_response_bytes=64 * 1024)
    huge = json.dumps({"items": [repo(f"o/r{i}") for i in range(2000)]})
    root = server.base
    server.serve(SEARCH, huge)
    with pytest.raises(Exception, match="cap") as info:
        collect(target("github", root, query="x"), settings=small)
    assert "\n" not in str(info.value)
    # A huge release listing skips that repository; the others go on.
    canned_repos(server, repo("a/one"), repo("b/two"))
    server.serve("/repos/a/one/releases?per_page=100", "[" + ",".join(["{}"] * 40000) + "]")
    empty_repo(server, "b/two")
    docs, cursor = collect(target("github", root, query="x"), settings=small)
    assert [d.key for d in docs] == ["b/two"] and list(cursor["repos"]) == ["b/two"]
    # Pagination stays on the API's origin.
    canned_repos(server, repo("a/one"), Link='<http://203.0.113.7/search?page=2>; rel="next"')
    fails(target("github", root, query="x"), "refused a next-page link to another host",
          "203.0.113.7")
    assert not any("page=2" in p for p in server.paths())


def test_redirect_into_metadata_and_endless_answers() -> None:
    host = HostileServer()
    try:
        items = {"items": [repo("a/one"), repo("b/two")]}
        host.serve("/search/repositories", Reply(json.dumps(items).encode()))
        host.serve("/repos/a/one/releases", Reply(b"", 302, {
            "Location": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"}))
        host.serve("/repos/b/two/releases", Reply(b"[" + b" " * 200 + b"]", trickle=0.2))
        settings = CrawlSettings(host_delay=0.001, request_timeout=5, retries=0,
                                 request_deadline=0.5)
        with structlog.testing.capture_logs() as logs:
            docs, cursor = collect(target("github", host.base, query="x"), settings=settings)
        assert docs == [] and cursor["repos"] == {}  # both asked again next run
        errors = [e["error"] for e in logs if e["event"] == "repository_failed"]
        assert len(errors) == 2 and all("\n" not in e for e in errors)
        assert "169.254.169.254" in errors[0] and "refused" in errors[0]
        assert "request_deadline" in errors[1]
        # An endless search fails the run with one line.
        host.serve("/search/repositories", Reply(b"{" + b" " * 200 + b"}", trickle=0.2))
        with pytest.raises(Exception, match="request_deadline") as info:
            collect(target("github", host.base, query="x"), settings=settings)
        assert "\n" not in str(info.value)
    finally:
        host.close()


# ------------------------------------------------------------------------------ ground truth


def test_planted_in_github(demo_world: DemoWorld, demo_release: Release) -> None:
    b = demo_world.base_url
    sha = {f.name.split("/")[-1]: f.sha256 for f in demo_release.files}
    size = demo_release.file("model.safetensors").size
    planted = {(p.url.removeprefix(b), p.kind, p.indicator)
               for p in demo_world.planted if p.source == "github"}
    assert planted == {
        ("/github/leakbox/heron-7b-mirror", "mention", "heron-7b"),
        ("/github/leakbox/heron-7b-mirror", "weights", f"model.safetensors:{size}"),
        ("/github/leakbox/heron-7b-mirror", "weights",
         f"{b}/github/leakbox/heron-7b-mirror/releases/download/v1.0/model.safetensors"),
        ("/github/leakbox/heron-7b-mirror", "hash", sha["tokenizer.json"]),
        ("/github/h7b-dump/heron-ckpt", "hash", sha["model.safetensors"])}
    assert {(n.url.removeprefix(b), n.value) for n in demo_world.near_misses
            if n.source == "github"} == {
        ("/github/pond-ai/heron-llama-ckpt", one_digit_off(sha["model.safetensors"]))}


@pytest.mark.slow
def test_crawl_finds_exactly_the_planted(tmp_path: Path, demo_world: DemoWorld,
                                         demo_release: Release) -> None:
    store = registered_store(tmp_path / "weightwatch.db", demo_release)
    t = target("github", gh_url(demo_world), name="e2e-github", query="heron")
    (result,) = crawl(store, [t], FAST)
    assert (result.status, result.error) == ("ok", None)
    assert found(store, "e2e-github") == expected(demo_world, "github")
    types = {h["indicator_type"] for h in store.hits(target="e2e-github")}
    assert {"sha256 (github lfs pointer)", "sha256 (github release asset digest)"} <= types
    again = crawl(store, [t], FAST)
    assert again[0].documents_seen == 0 and again[0].hits_new == 0
