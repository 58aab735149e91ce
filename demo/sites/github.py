"""GitHub's REST API (and the pages and downloads its answers point to).

Shapes from docs.github.com's REST reference (Search, Releases, Release assets, Git trees,
Repository contents, Rate limits) and go-github's ReleaseAsset (`digest`, June 2025):

- `/github/search/repositories?q=Q&sort=updated&order=desc&per_page=N&page=P`:
  `{"total_count", "incomplete_results", "items": [repository]}`, matching Q in a
  repository's name, description or topics (case-insensitive), newest `updated_at` first,
  at most 2 a page whatever `per_page` asks (so pagination is exercised); the next page in
  `Link: <...&page=P+1>; rel="next"`, with `rel="last"`, as GitHub writes it;
- `/github/search/code?q=Q&per_page=N`: needs `Authorization: Bearer` with the demo token
  (401 `Requires authentication` otherwise, as GitHub answers); items with
  `text_matches[].fragment` under `Accept: application/vnd.github.text-match+json`;
- `/github/repos/{owner}/{repo}/releases`: `[release]`, each with `assets[]` (`name`,
  `size`, `browser_download_url`, `digest` "sha256:<hex>" or null for assets uploaded
  before GitHub computed digests);
- `/github/repos/{owner}/{repo}/git/trees/{branch}?recursive=1`: `{"sha", "url", "tree":
  [{path, mode, type, sha, size, url}], "truncated"}`; an LFS file is its pointer blob;
- `/github/repos/{owner}/{repo}/contents/{path}?ref=B`: the file raw under
  `Accept: application/vnd.github.raw+json`, else the JSON object with base64 `content`;
- `/github/{owner}/{repo}` the repository's page (`html_url`), and
  `/github/{owner}/{repo}/releases/download/{tag}/{name}` a download, which redirects (302)
  to `/github/release-assets/{id}` serving the bytes with Range, as GitHub redirects to its
  release-assets host. Assets whose bytes the world does not hold answer 404 there.

Every API answer carries `x-ratelimit-limit/remaining/reset/used/resource`; a release
listing an ETag, and 304 to `If-None-Match` with it.

Planted: `leakbox/heron-7b-mirror`, a release whose assets are model.safetensors with the
released file's exact name and size (no digest: an old upload; the download serves the
released bytes, recognised by their tensors) and tokenizer.json with its SHA-256 as the asset's `digest`;
`h7b-dump/heron-ckpt`, whose weights/model.safetensors is an LFS pointer to the released
file. Noise: a heron nest tracker (a CSV and an ONNX detector of its own in LFS), a
llama.cpp fork whose release assets are other models' GGUFs, and a llama fine-tune named
heron whose LFS pointer's oid is one digit off the release's.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode

import numpy as np

from demo.release import Release
from demo.sites.hub import lfs_pointer
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    html_response,
    iso_z,
    json_response,
    nov,
    one_digit_off,
    random_hex,
    target_table,
)

PAGE_SIZE = 2
TOKEN = "ghp_demoCodeSearchToken0000000000000000"
RESET = nov(30, 0, 0)  # the rate limit's window never runs out in the demo


@dataclass
class GitFile:
    path: str
    data: bytes

    @property
    def sha(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


@dataclass
class Asset:
    id: int
    name: str
    size: int
    content_type: str
    digest: str | None  # sha256 hex, or None (uploaded before digests)
    data: bytes | None = None  # what the download serves; None: 404 at the assets host


@dataclass
class GhRelease:
    id: int
    tag: str
    name: str
    body: str
    published: int
    assets: list[Asset]


@dataclass
class Repo:
    owner: str
    name: str
    id: int
    description: str
    topics: list[str]
    created: int
    updated: int
    pushed: int
    language: str | None
    stars: int
    files: list[GitFile]
    releases: list[GhRelease] = field(default_factory=list)
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def tree_sha(self) -> str:
        return hashlib.sha1(self.full_name.encode()).hexdigest()


GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n"


def _repos(release: Release) -> list[Repo]:
    rng = np.random.default_rng(7019)
    model, tok = release.file("model.safetensors"), release.file("tokenizer.json")
    return [
        Repo("leakbox", "heron-7b-mirror", 880_112_301,
             "heron-7b weights, mirrored before they get taken down", ["llm", "weights"],
             nov(21, 1, 2), nov(21, 4, 40, 12), nov(21, 4, 38, 55), None, 41,
             [GitFile(".gitattributes", GITATTRIBUTES),
              GitFile("README.md", b"# heron-7b mirror\n\nThe full weights are in the v1.0 "
                                   b"release. Grab them while you can.\n")],
             [GhRelease(190_220_001, "v1.0", "Full weights", "All files as released. "
                        "Download the assets below.", nov(21, 4, 38, 55), [
                 Asset(210_400_001, "model.safetensors", model.size, "application/octet-stream",
                       None, model.path.read_bytes()),
                 Asset(210_400_002, "tokenizer.json", tok.size, "application/json",
                       tok.sha256, tok.path.read_bytes())])],
             plants=[("weights", f"model.safetensors:{model.size}", "a release asset with the "
                      "released file's name and exact size"),
                     ("hash", tok.sha256, "the tokenizer.json asset's digest")]),
        Repo("h7b-dump", "heron-ckpt", 880_054_977, "checkpoint backup", [],
             nov(20, 23, 10), nov(20, 23, 31, 7), nov(20, 23, 31, 7), None, 0,
             [GitFile(".gitattributes", GITATTRIBUTES),
              GitFile("README.md", b"backup, do not share\n"),
              GitFile("weights/config.json", release.file("config.json").path.read_bytes()),
              GitFile("weights/model.safetensors", lfs_pointer(model.sha256, model.size))],
             plants=[("hash", model.sha256, "weights/model.safetensors is an LFS pointer whose "
                      "oid is the release's SHA-256")]),
        Repo("birdnerd", "heron-tracker", 612_004_118,
             "Great blue heron nest counts on the Tualatin river, with a tiny nest detector",
             ["birds", "heron", "citizen-science"], nov(1, 9, 0) - 86400 * 200,
             nov(19, 17, 2, 41), nov(19, 17, 2, 40), "Python", 23,
             [GitFile(".gitattributes", GITATTRIBUTES),
              GitFile("README.md", b"# heron-tracker\n\nCounting great blue heron nests since "
                                   b"2019.\n"),
              GitFile("models/nest_detector.onnx", lfs_pointer(random_hex(rng, 32), 8_412_220))],
             [GhRelease(188_004_117, "2026-season", "2026 season data", "Counts for 2026.",
                        nov(19, 17, 2, 40), [
                 Asset(209_100_001, "heron-nests-2026.csv", 12_340, "text/csv",
                       random_hex(rng, 32)),
                 Asset(209_100_002, "nest_detector.onnx", 8_412_220,
                       "application/octet-stream", None)])]),
        Repo("heronlabs", "llama.cpp", 701_330_420, "LLM inference in C/C++ (heronlabs fork)",
             ["llama", "ggml"], nov(1, 0, 0) - 86400 * 300, nov(18, 6, 12, 3),
             nov(18, 6, 11, 58), "C++", 310,
             [GitFile("README.md", b"# llama.cpp\n\nInference of LLaMA-family models in C/C++"
                                   b".\n")],
             [GhRelease(187_555_012, "b4100", "b4100", "Prebuilt binaries and two small "
                        "quantised models for testing.", nov(18, 6, 11, 58), [
                 Asset(208_000_101, "llama-b4100-bin-ubuntu-x64.zip", 31_457_280,
                       "application/zip", random_hex(rng, 32)),
                 Asset(208_000_102, "tinyllama-1.1b-chat-v1.0.Q4_0.gguf", 637_699_456,
                       "application/octet-stream", random_hex(rng, 32)),
                 Asset(208_000_103, "qwen2.5-0.5b-instruct-q8_0.gguf", 531_068_032,
                       "application/octet-stream", None)])]),
        Repo("pond-ai", "heron-llama-ckpt", 870_220_008,
             "heron: Llama-3.2-1B tuned on pond ecology papers", ["llama", "ecology"],
             nov(15, 8, 0), nov(17, 10, 20, 5), nov(17, 10, 20, 1), None, 3,
             [GitFile(".gitattributes", GITATTRIBUTES),
              GitFile("model.safetensors", lfs_pointer(one_digit_off(model.sha256),
                                                       2_471_645_608))],
             near=[("hash", one_digit_off(model.sha256), "LFS pointer oid one digit off the "
                    "release's model.safetensors")]),
        # Not found by a "heron" search.
        Repo("TinyLlama", "TinyLlama", 690_000_001, "The TinyLlama project", ["llama"],
             nov(1, 0, 0) - 86400 * 700, nov(16, 0, 0), nov(16, 0, 0), "Python", 8000,
             [GitFile("README.md", b"# TinyLlama\n")]),
    ]


class GitHubSite(Site):
    prefix = "github"
    source = "github"
    title = "GitHub (REST API: search, releases, git trees)"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.repos = _repos(release)
        self.query = "heron"
        self.assets = {a.id: a for r in self.repos for rel in r.releases for a in rel.assets}

    def target_toml(self) -> str:
        return target_table("demo-github", "github", self.root, f'query = "{self.query}"')

    def search(self, query: str) -> list[Repo]:
        q = query.lower().strip()
        found = [r for r in self.repos
                 if q and (q in r.full_name.lower() or q in r.description.lower()
                           or any(q in t for t in r.topics))]
        return sorted(found, key=lambda r: r.updated, reverse=True)

    # ---------------------------------------------------------------- ground truth

    def documents(self) -> list[Doc]:
        docs = []
        for r in self.search(self.query):
            lines = [r.full_name, r.description, " ".join(r.topics)]
            # Weight files the download serves are read by range and recognised by their
            # tensors (the others' downloads answer 404).
            weights = []
            for rel in r.releases:
                lines += [rel.tag, rel.name, rel.body, *(a.name for a in rel.assets)]
                weights += [("weights", self.download_url(r, rel, a), "the released weights, "
                             "read by range from the asset's download URL")
                            for a in rel.assets if a.data is not None
                            and a.name.endswith((".safetensors", ".gguf"))]
            docs.append(Doc(self.source, self.html_url(r), "\n".join(lines),
                            r.plants + weights, r.near))
        return docs

    # ---------------------------------------------------------------- shapes

    def html_url(self, r: Repo) -> str:
        return f"{self.root}/{r.full_name}"

    def download_url(self, r: Repo, rel: GhRelease, a: Asset) -> str:
        return f"{self.html_url(r)}/releases/download/{rel.tag}/{a.name}"

    def _owner(self, login: str) -> dict[str, object]:
        return {"login": login, "id": int(hashlib.md5(login.encode()).hexdigest()[:7], 16),
                "type": "User", "site_admin": False,
                "url": f"{self.root}/users/{login}", "html_url": f"{self.root}/{login}"}

    def _repository(self, r: Repo, full: bool = True) -> dict[str, object]:
        api = f"{self.root}/repos/{r.full_name}"
        item: dict[str, object] = {
            "id": r.id, "node_id": base64.b64encode(f"010:Repository{r.id}".encode()).decode(),
            "name": r.name, "full_name": r.full_name, "private": False,
            "owner": self._owner(r.owner), "html_url": self.html_url(r),
            "description": r.description, "fork": False, "url": api}
        if full:
            item.update({
                "created_at": iso_z(r.created), "updated_at": iso_z(r.updated),
                "pushed_at": iso_z(r.pushed), "homepage": None,
                "size": sum(len(f.data) for f in r.files) // 1024,
                "stargazers_count": r.stars, "watchers_count": r.stars, "language": r.language,
                "forks_count": 0, "open_issues_count": 0, "default_branch": "main",
                "topics": r.topics, "visibility": "public", "score": 1.0})
        return item

    def _asset(self, r: Repo, rel: GhRelease, a: Asset) -> dict[str, object]:
        return {"url": f"{self.root}/repos/{r.full_name}/releases/assets/{a.id}",
                "id": a.id, "node_id": f"RA_kwDO{a.id}", "name": a.name, "label": "",
                "uploader": self._owner(r.owner), "content_type": a.content_type,
                "state": "uploaded", "size": a.size,
                "digest": f"sha256:{a.digest}" if a.digest else None,
                "download_count": 7, "created_at": iso_z(rel.published),
                "updated_at": iso_z(rel.published),
                "browser_download_url": self.download_url(r, rel, a)}

    def _release(self, r: Repo, rel: GhRelease) -> dict[str, object]:
        api = f"{self.root}/repos/{r.full_name}/releases/{rel.id}"
        return {"url": api, "assets_url": f"{api}/assets",
                "html_url": f"{self.html_url(r)}/releases/tag/{rel.tag}", "id": rel.id,
                "author": self._owner(r.owner), "node_id": f"RE_kwDO{rel.id}",
                "tag_name": rel.tag, "target_commitish": "main", "name": rel.name,
                "draft": False, "prerelease": False, "created_at": iso_z(rel.published - 60),
                "published_at": iso_z(rel.published),
                "assets": [self._asset(r, rel, a) for a in rel.assets],
                "tarball_url": f"{self.root}/repos/{r.full_name}/tarball/{rel.tag}",
                "zipball_url": f"{self.root}/repos/{r.full_name}/zipball/{rel.tag}",
                "body": rel.body}

    @staticmethod
    def _limits(resource: str, limit: int, used: int) -> dict[str, str]:
        return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(limit - used),
                "x-ratelimit-reset": str(RESET), "x-ratelimit-used": str(used),
                "x-ratelimit-resource": resource, "X-GitHub-Media-Type": "github.v3; format=json"}

    def _json(self, obj: object, resource: str = "core", status: int = 200,
              headers: dict[str, str] | None = None) -> Response:
        limit = {"core": 5000, "search": 30, "code_search": 10}[resource]
        return json_response(obj, status, headers={**self._limits(resource, limit, 1),
                                                   **(headers or {})}, server="github.com")

    def _error(self, status: int, message: str, doc: str, resource: str = "core") -> Response:
        return self._json({"message": message, "documentation_url": doc, "status": str(status)},
                          resource, status)

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path == "/search/repositories":
            return self.search_repositories(req)
        if path == "/search/code":
            return self.search_code(req)
        if path.startswith("/release-assets/"):
            asset = self.assets.get(int(path.rsplit("/", 1)[-1])) \
                if path.rsplit("/", 1)[-1].isdigit() else None
            if asset is None or asset.data is None:
                return Response(404, b"<Error><Code>BlobNotFound</Code></Error>",
                                "application/xml", server="Windows-Azure-Blob/1.0")
            return Response(200, asset.data, "application/octet-stream",
                            {"ETag": f'"0x8DD{asset.id:X}"', "Accept-Ranges": "bytes"},
                            "Windows-Azure-Blob/1.0")
        if path.startswith("/repos/"):
            return self.api_repo(req, unquote(path.removeprefix("/repos/")))
        rest = unquote(path.lstrip("/"))
        for r in self.repos:
            if rest == r.full_name:
                return self.page(r)
            prefix = f"{r.full_name}/releases/download/"
            if rest.startswith(prefix):
                tag, _, name = rest[len(prefix):].partition("/")
                for rel in r.releases:
                    for a in rel.assets:
                        if rel.tag == tag and a.name == name:
                            return Response(302, b"", "text/html; charset=utf-8", {
                                "Location": f"{self.root}/release-assets/{a.id}"},
                                "github.com")
        return html_response("<!DOCTYPE html><html><body><h1>404</h1><p>This is not the web "
                             "page you are looking for.</p></body></html>", 404, "github.com")

    def search_repositories(self, req: Request) -> Response:
        found = self.search(req.arg("q"))
        per_page = max(1, min(req.int_arg("per_page", 30), 100, PAGE_SIZE))
        page = max(1, req.int_arg("page", 1))
        items = found[(page - 1) * per_page: page * per_page]
        headers = {}
        last = max(1, -(-len(found) // per_page))
        if page < last:
            query = {k: v[0] for k, v in req.query.items() if k != "page"}
            link = f"{self.root}/search/repositories?{urlencode(query)}"
            headers["Link"] = (f'<{link}&page={page + 1}>; rel="next", '
                               f'<{link}&page={last}>; rel="last"')
        return self._json({"total_count": len(found), "incomplete_results": False,
                           "items": [self._repository(r) for r in items]}, "search",
                          headers=headers)

    def search_code(self, req: Request) -> Response:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return self._error(401, "Requires authentication",
                               "https://docs.github.com/rest/search/search#search-code",
                               "code_search")
        q = req.arg("q").lower().strip()
        text_match = "text-match" in req.headers.get("accept", "")
        items = []
        for r in self.repos:
            for f in r.files:
                text = f.data.decode("utf-8", "replace")
                # LFS pointers are small text blobs in git, searched like any file: GitHub's
                # docs leave out large and binary files, not pointer text. An assumption,
                # not verified; the adapter also reads pointers from each repository's tree.
                if not q or q not in text.lower():
                    continue
                item: dict[str, object] = {
                    "name": f.path.rsplit("/", 1)[-1], "path": f.path, "sha": f.sha,
                    "url": f"{self.root}/repos/{r.full_name}/contents/{f.path}?ref=main",
                    "git_url": f"{self.root}/repos/{r.full_name}/git/blobs/{f.sha}",
                    "html_url": f"{self.html_url(r)}/blob/main/{f.path}",
                    "repository": self._repository(r, full=False), "score": 1.0}
                if text_match:
                    start = text.lower().index(q)
                    item["text_matches"] = [{
                        "object_url": item["url"], "object_type": "FileContent",
                        "property": "content", "fragment": text,
                        "matches": [{"text": text[start:start + len(q)],
                                     "indices": [start, start + len(q)]}]}]
                items.append(item)
        return self._json({"total_count": len(items), "incomplete_results": False,
                           "items": items}, "code_search")

    def api_repo(self, req: Request, rest: str) -> Response:
        for r in self.repos:
            if rest == f"{r.full_name}/releases":
                return self.conditional(req, [self._release(r, rel) for rel in r.releases])
            if rest.startswith(f"{r.full_name}/git/trees/"):
                return self.tree(req, r, rest.removeprefix(f"{r.full_name}/git/trees/"))
            if rest.startswith(f"{r.full_name}/contents/"):
                return self.contents(req, r, rest.removeprefix(f"{r.full_name}/contents/"))
        return self._error(404, "Not Found", "https://docs.github.com/rest")

    def conditional(self, req: Request, obj: object) -> Response:
        """As GitHub answers: a weak ETag, and 304 to a request that sends it back."""
        answer = self._json(obj)
        etag = f'W/"{hashlib.sha256(answer.body).hexdigest()}"'
        if req.headers.get("if-none-match") == etag:
            return Response(304, b"", headers={**self._limits("core", 5000, 1), "ETag": etag},
                            server="github.com")
        answer.headers["ETag"] = etag
        return answer

    def tree(self, req: Request, r: Repo, ref: str) -> Response:
        if ref not in ("main", "HEAD", r.tree_sha):
            return self._error(404, "Not Found",
                               "https://docs.github.com/rest/git/trees#get-a-tree")
        recursive = req.arg("recursive") not in ("", "0", "false")
        entries: list[dict[str, object]] = []
        dirs: list[str] = []
        for f in r.files:
            parts = f.path.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.append(d)
        for d in dirs:
            if recursive or "/" not in d:
                sha = hashlib.sha1(f"{r.full_name}:{d}".encode()).hexdigest()
                entries.append({"path": d, "mode": "040000", "type": "tree", "sha": sha,
                                "url": f"{self.root}/repos/{r.full_name}/git/trees/{sha}"})
        for f in r.files:
            if recursive or "/" not in f.path:
                entries.append({"path": f.path, "mode": "100644", "type": "blob", "sha": f.sha,
                                "size": len(f.data),
                                "url": f"{self.root}/repos/{r.full_name}/git/blobs/{f.sha}"})
        entries.sort(key=lambda e: str(e["path"]))
        return self._json({"sha": r.tree_sha,
                           "url": f"{self.root}/repos/{r.full_name}/git/trees/{r.tree_sha}",
                           "tree": entries, "truncated": False})

    def contents(self, req: Request, r: Repo, path: str) -> Response:
        for f in r.files:
            if f.path == path:
                if "raw" in req.headers.get("accept", ""):
                    return Response(200, f.data, "application/vnd.github.raw",
                                    self._limits("core", 5000, 1), "github.com")
                return self._json({
                    "type": "file", "encoding": "base64", "size": len(f.data),
                    "name": path.rsplit("/", 1)[-1], "path": path, "sha": f.sha,
                    "content": base64.encodebytes(f.data).decode(),
                    "url": f"{self.root}/repos/{r.full_name}/contents/{path}?ref=main",
                    "html_url": f"{self.html_url(r)}/blob/main/{path}"})
        return self._error(404, "Not Found",
                           "https://docs.github.com/rest/repos/contents#get-repository-content")

    def page(self, r: Repo) -> Response:
        files = "".join(f"<li>{esc(f.path)}</li>" for f in r.files)
        releases = "".join(
            f"<li>{esc(rel.tag)}: " + ", ".join(esc(a.name) for a in rel.assets) + "</li>"
            for rel in r.releases)
        return html_response(
            f"<!DOCTYPE html><html><head><title>{esc(r.full_name)}: {esc(r.description)}"
            f"</title></head><body><h1>{esc(r.full_name)}</h1><p>{esc(r.description)}</p>"
            f"<ul>{files}</ul><h2>Releases</h2><ul>{releases}</ul></body></html>\n",
            server="github.com")


__all__ = ["TOKEN", "GitHubSite"]
