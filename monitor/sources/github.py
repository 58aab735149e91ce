"""GitHub through its REST API: repositories, release assets and LFS pointers.

Leaked weights are re-released on GitHub as release assets (up to 2 GiB a file) and pushed
to repositories with git-lfs. The target's URL is the API root (`https://api.github.com`;
a GitHub Enterprise Server's `https://HOST/api/v3`) and `query` the search term, e.g. the
released model's name or a file's SHA-256. A run:

1. searches repositories, `GET {root}/search/repositories?q=Q&sort=updated&order=desc&
   per_page=100`, following `Link: <...>; rel="next"` up to `max_pages` pages, never to
   another host;
2. with a token, also searches code, `GET {root}/search/code?q=Q&per_page=100` with the
   text-match media type (`application/vnd.github.text-match+json`), whose
   `text_matches[].fragment` is the matched text; the repositories of its results are read
   too (code search needs authentication: without a token it is skipped);
3. for each repository whose `updated_at`/`pushed_at` (or, found by code search only, the
   blob ids of its matched files) moved since the last run: reads its releases,
   `GET {root}/repos/{owner}/{repo}/releases?per_page=100` (`assets[]`: `name`, `size`,
   `browser_download_url`, and since June 2025 `digest`, "sha256:<hex>"), and its tree,
   `GET {root}/repos/{owner}/{repo}/git/trees/{branch}?recursive=1`. In git, a file kept
   in LFS is a ~130-byte pointer blob; weight-named blobs that small are read raw
   (`GET {root}/repos/{owner}/{repo}/contents/{path}?ref={branch}` with
   `application/vnd.github.raw+json`) and parsed with the hub's `parse_lfs_pointer`: the
   `oid sha256:<hex>` is the SHA-256 of the file it stands for;
4. for each listed repository that did not move, asks for its releases again with the
   ETag they last had (`If-None-Match`): uploading assets to an existing release moves
   neither `updated_at` nor `pushed_at`; a 304 to a request with a token costs nothing of
   the rate limit (docs.github.com, "Best practices for using the REST API").

Each repository becomes one Document at its `html_url`: the text says what it is (name,
description, topics, releases with their assets, matched code fragments, LFS pointers);
`extras["digests"]` carries asset digests and pointer oids; `extras["files"]` every asset
and pointed-to file (path, size, sha256); `extras["file_list"]` the assets' names
and sizes, which is the file list the manifest detector (monitor.detect.manifest) compares
with the released files; `links` the assets' download URLs, which the weights detector
scans by range.

Rate limits (docs.github.com, "Rate limits for the REST API"): every answer states
`x-ratelimit-remaining` and `x-ratelimit-reset` (epoch seconds) for its resource (`core`,
`search`, `code_search`, each limited on its own). At 0 remaining no further request of
that resource is made; a 403 or 429 that says a limit was passed (`retry-after` seconds,
or remaining 0 and the reset) is the same. The time is kept in the cursor
(`rate_limited`, by resource), so later runs ask nothing of that resource before it: a
run stops reading repositories at a `core` limit, and the ones it had not read keep their
old markers and are read by the first run after the reset; a search limit stops paging
(what was listed is read); a code search limit skips code search alone. The token comes from the environment variable `api_key_env` names, is sent
as `Authorization: Bearer`, and is neither logged nor stored (the fetcher logs URLs only,
and drops it on a redirect to another origin).

Shapes: docs.github.com REST reference ("Search", "Releases", "Git trees", "Repository
contents", media types) and go-github's ReleaseAsset.Digest (2025); the demo's imitation
is demo/sites/github.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import structlog

from monitor.fetch import FetchError, Response, parse_retry_after, redact_url
from monitor.models import FILE_LIST, Document, FileList, ListedFile
from monitor.sources.base import (
    Source,
    SourceError,
    http_status,
    http_url,
    is_int,
    json_array,
    json_object,
    markdown_links,
    off_loop,
    origin,
    parse_iso_time,
    parse_json,
    str_or_empty,
    utc_iso,
)
from monitor.sources.hub import (
    POINTER_MAX,
    WEIGHT_SUFFIXES,
    next_link,
    parse_lfs_pointer,
)

log = structlog.get_logger("weightwatch.sources.github")

API_VERSION = "2022-11-28"
JSON = "application/vnd.github+json"
TEXT_MATCH = "application/vnd.github.text-match+json"
RAW = "application/vnd.github.raw+json"
PER_PAGE = 100  # the API's own maximum
REPOS_LIMIT = 5000  # repositories remembered by the cursor
POINTERS_PER_REPO = 20
ETAG_MAX = 200
RELEASES_PER_REPO = 100
ASSETS_PER_RELEASE = 200
FRAGMENTS_PER_REPO = 20
TEXT_LIMIT = 20_000  # characters of a release's notes kept
# A hostile or broken reset far ahead must not silence the target for good: GitHub's
# limits reset within the hour.
MAX_WAIT = timedelta(hours=24)
# "Otherwise, wait for at least one minute before retrying" (secondary rate limits).
SECONDARY_WAIT = timedelta(minutes=1)
_FULL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
# A repository's releases that answer these will not come back by asking again.
GONE = frozenset({401, 403, 404, 410, 451})
_SHA256 = re.compile(r"sha256:([0-9a-fA-F]{64})")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,255}")


class RateLimited(Exception):
    """No more requests of a resource ("core", "search", "code_search") before `until`."""

    def __init__(self, resource: str, until: datetime, reason: str):
        super().__init__(reason)
        self.resource = resource
        self.until = until


@dataclass
class Repo:
    full_name: str
    marker: str | None  # what changes when the repository does
    html_url: str | None = None
    owner: str = ""
    description: str = ""
    topics: list[str] = field(default_factory=list)
    branch: str | None = None  # the default branch, when the listing says
    updated_at: str | None = None
    fragments: list[str] = field(default_factory=list)  # code search: "path: text"
    listing: Response | None = None  # the search answer it was found in (evidence)


@dataclass
class Asset:
    name: str
    size: int | None
    url: str | None
    sha256: str | None


@dataclass
class Release:
    id: int
    tag: str
    name: str
    body: str
    url: str | None
    published_at: str | None
    author: str
    assets: list[Asset]


@dataclass
class Pointer:
    path: str
    sha256: str
    size: int


class GitHubSource(Source):
    kind = "github"
    option_keys = frozenset({"query", "max_pages", "api_key_env"})

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # resource -> no request of it before this time (kept in the cursor across runs)
        self._waits: dict[str, datetime] = {}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        query = options.get("query")
        if not isinstance(query, str) or not query.strip():
            problems.append(("query", "required for kind 'github': the search term, e.g. the "
                                      "released model's name"))
        return problems

    @property
    def root(self) -> str:
        return self.target.url.rstrip("/")

    # ---------------------------------------------------------------- requests

    async def _get(self, url: str, resource: str, accept: str = JSON,
                   max_bytes: int | None = None, etag: str | None = None) -> Response:
        now = datetime.now(UTC)
        until = self._waits.get(resource)
        if until is not None and until > now:
            raise RateLimited(resource, until, f"GitHub's {resource} rate limit is used up "
                                               f"until {utc_iso(until)}")
        headers = {"Accept": accept, "X-GitHub-Api-Version": API_VERSION}
        if etag:
            headers["If-None-Match"] = etag
        token = self.target.api_key()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self.fetcher.get(url, self.target, headers=headers,
                                              max_bytes=max_bytes)
        except FetchError as exc:
            limited = rate_limit_until(http_status(exc), exc.headers, now)
            if limited is not None:
                self._waits[resource] = limited
                raise RateLimited(resource, limited, str(exc)) from None
            raise
        remaining = response.headers.get("x-ratelimit-remaining")
        reset = reset_time(response.headers.get("x-ratelimit-reset"), now)
        if remaining is not None and remaining.strip() == "0" and reset is not None:
            # The resource asked for, not the one the answer names: a server cannot make
            # the cursor remember names of its choosing.
            self._waits[resource] = reset
        return response

    async def _pages(self, url: str, resource: str, accept: str = JSON,
                     etag: str | None = None) -> AsyncIterator[Response]:
        """The answers of a paged listing, by `Link: rel="next"`, up to `max_pages`, on the
        API's own origin only; with `etag`, the first page is asked for conditionally, and
        a 304 ends the listing there."""
        next_url: str | None = url
        visited: set[str] = set()
        for page in range(self.target.max_pages):
            if next_url is None or next_url in visited:
                return
            visited.add(next_url)
            response = await self._get(next_url, resource, accept,
                                       etag=etag if page == 0 else None)
            yield response
            if response.not_modified:
                return
            next_url = next_link(response.headers.get_list("link"), response.url)
            if next_url is not None and origin(next_url) != origin(self.root):
                raise SourceError(f"{redact_url(response.url)}: refused a next-page link to "
                                  f"another host ({redact_url(next_url)})")

    # ---------------------------------------------------------------- a run

    async def documents(self) -> AsyncIterator[Document]:
        now = datetime.now(UTC)
        self._waits = saved_waits(self.cursor.get("rate_limited"), now)
        try:
            for resource in ("search", "core"):
                if resource in self._waits:
                    # Listing or reading anything needs both: no request at all.
                    log.info("rate_limited_wait", resource=resource,
                             until=utc_iso(self._waits[resource]))
                    return
            async for doc in self._run():
                yield doc
        finally:
            waits = {r: utc_iso(t) for r, t in self._waits.items() if t > datetime.now(UTC)}
            if waits:
                self.cursor["rate_limited"] = waits
            else:
                self.cursor.pop("rate_limited", None)

    async def _run(self) -> AsyncIterator[Document]:
        remembered = {k: v for k, v in json_object(self.cursor.get("repos")).items()
                      if isinstance(k, str) and (v is None or isinstance(v, str))}
        repos: dict[str, Repo] = {}
        try:
            await self._search_repositories(repos)
        except RateLimited as exc:
            _stopped(exc, "repository search")  # the repositories listed so far are read
        if not self.target.api_key():
            log.debug("code_search_skipped", reason="code search needs a token")
        elif "code_search" not in self._waits:
            try:
                await self._search_code(repos)
            except RateLimited as exc:
                _stopped(exc, "code search")
        etags = {k: v for k, v in json_object(self.cursor.get("etags")).items()
                 if isinstance(k, str) and isinstance(v, str) and len(v) <= ETAG_MAX}
        moved = [r for r in repos.values()
                 if r.marker is None or remembered.get(r.full_name) != r.marker]
        # A repository's change times do not move when assets are uploaded to a release
        # it already has: listed ones that did not move are asked for their releases again,
        # conditionally (with a token, a 304 does not count against the rate limit).
        moved_names = {r.full_name for r in moved}
        unmoved = [r for r in repos.values()
                   if r.full_name not in moved_names and r.full_name in etags]
        state = dict(remembered)
        for repo in (moved + unmoved)[: self.target.max_items]:
            try:
                read = await self._repository(
                    repo, None if repo.full_name in moved_names else etags[repo.full_name])
            except RateLimited as exc:
                _stopped(exc, f"repository {repo.full_name}")
                break  # the rest keep their old markers and ETags: read by a later run
            if read is None:
                continue  # a transient failure, or releases not modified
            doc, etag = read
            yield doc
            # Only now: a run cut short before the yield asks again, unconditionally.
            state[repo.full_name] = repo.marker
            if etag:
                etags[repo.full_name] = etag
            else:
                etags.pop(repo.full_name, None)
        if len(state) > REPOS_LIMIT:
            state = dict(sorted(state.items(), key=lambda kv: kv[1] or "",
                                reverse=True)[:REPOS_LIMIT])
        self.cursor["repos"] = state
        self.cursor["etags"] = {k: v for k, v in etags.items() if k in state}

    async def _search_repositories(self, repos: dict[str, Repo]) -> None:
        params = {"q": self._query(), "sort": "updated", "order": "desc",
                  "per_page": str(PER_PAGE)}
        async for response in self._pages(f"{self.root}/search/repositories?{urlencode(params)}",
                                          "search"):
            for repo in await off_loop(parse_repositories, response.body, response.url):
                repo.listing = response
                repos.setdefault(repo.full_name, repo)

    async def _search_code(self, repos: dict[str, Repo]) -> None:
        params = {"q": self._query(), "per_page": str(PER_PAGE)}
        found: dict[str, tuple[Repo, list[str]]] = {}
        async for response in self._pages(f"{self.root}/search/code?{urlencode(params)}",
                                          "code_search", TEXT_MATCH):
            for repo, blob in await off_loop(parse_code, response.body, response.url):
                repo.listing = response
                known, blobs = found.setdefault(repo.full_name, (repo, []))
                blobs.append(blob)
                if known is not repo:
                    known.fragments += repo.fragments
        for name, (repo, blobs) in found.items():
            listed = repos.get(name)
            if listed is not None:
                listed.fragments += repo.fragments
                continue
            # No change time in a code result: what matched stands for it.
            repo.marker = "code:" + hashlib.sha256(
                " ".join(sorted(blobs)).encode()).hexdigest()[:16]
            repos[name] = repo

    def _query(self) -> str:
        return (self.target.query or "").strip()

    # ---------------------------------------------------------------- a repository

    async def _repository(self, repo: Repo,
                          etag: str | None) -> tuple[Document, str | None] | None:
        """The repository's document and its releases' ETag now; None when it failed
        (asked again next run) or its releases answered 304 to `etag`."""
        base = f"{self.root}/repos/{quote(repo.full_name, safe='/')}"
        releases: list[Release] = []
        first: Response | None = None
        try:
            async for response in self._pages(f"{base}/releases?per_page={PER_PAGE}", "core",
                                               etag=etag):
                if response.not_modified:
                    return None
                first = first or response
                releases += await off_loop(parse_releases, response.body, response.url)
        except FetchError as exc:
            if http_status(exc) not in GONE:
                log.warning("repository_failed", repo=repo.full_name, what="releases",
                            error=str(exc))
                return None  # asked again next run
            # Deleted, private now, or blocked (451: a DMCA takedown): what the search
            # said of it is all there is, and is worth keeping.
            log.info("releases_unavailable", repo=repo.full_name, status=http_status(exc))
        except SourceError as exc:
            log.warning("repository_failed", repo=repo.full_name, what="releases",
                        error=str(exc))
            return None
        now = first.etag if first is not None else None
        pointers, truncated = await self._pointers(base, repo)
        doc = self._document(repo, releases[:RELEASES_PER_REPO], pointers, truncated,
                             first or repo.listing)
        return doc, now if now and len(now) <= ETAG_MAX else None

    async def _pointers(self, base: str, repo: Repo) -> tuple[list[Pointer], bool]:
        """LFS pointers among the repository's weight-named files; (pointers, whether the
        tree listing was cut short by GitHub)."""
        branch = repo.branch or "HEAD"
        try:
            response = await self._get(f"{base}/git/trees/{quote(branch, safe='')}?recursive=1",
                                       "core")
            blobs, truncated = await off_loop(parse_tree, response.body, response.url)
        except (FetchError, SourceError) as exc:
            # An empty repository answers 409, a missing branch 404: no files to read.
            log.info("tree_unavailable", repo=repo.full_name, error=str(exc))
            return [], False
        candidates = [(path, size) for path, size in blobs
                      if size <= POINTER_MAX and path.lower().endswith(WEIGHT_SUFFIXES)]
        pointers: list[Pointer] = []
        for path, _size in candidates[:POINTERS_PER_REPO]:
            url = f"{base}/contents/{quote(path, safe='/')}?ref={quote(branch, safe='')}"
            try:
                raw = await self._get(url, "core", RAW, max_bytes=POINTER_MAX)
            except FetchError as exc:
                log.warning("pointer_file_failed", repo=repo.full_name, path=path,
                            error=str(exc))
                continue
            pointer = parse_lfs_pointer(raw.body)
            if pointer is not None:
                pointers.append(Pointer(path, pointer[0], pointer[1]))
        return pointers, truncated

    def _document(self, repo: Repo, releases: list[Release], pointers: list[Pointer],
                  truncated: bool, snapshot: Response | None) -> Document:
        name = repo.full_name
        lines = [name]
        if repo.description:
            lines.append(repo.description)
        if repo.topics:
            lines.append("topics: " + ", ".join(repo.topics))
        files: list[dict[str, Any]] = []
        listed: list[ListedFile] = []
        digests: list[dict[str, Any]] = []
        links: list[str] = []
        for rel in releases:
            title = f"release {rel.tag}" + (f": {rel.name}" if rel.name and rel.name != rel.tag
                                             else "")
            lines.append(title)
            if rel.body:
                lines.append(rel.body)
                links += [u for u in markdown_links(rel.body) if http_url(u, u)]
            for asset in rel.assets:
                size = f" ({asset.size} bytes)" if asset.size is not None else ""
                lines.append(f"  asset {asset.name}{size}")
                files.append({"path": f"releases/{rel.tag}/{asset.name}", "size": asset.size,
                              "sha256": asset.sha256})
                if asset.size is not None:
                    listed.append({"path": asset.name, "length": asset.size})
                if asset.url:
                    links.append(asset.url)
                if asset.sha256:
                    digests.append({"algo": "sha256", "value": asset.sha256,
                                    "encoding": "github release asset digest",
                                    "context": f"{name} release {rel.tag}: {asset.name}{size}"})
        if repo.fragments:
            lines.append("code:")
            lines += [f"  {f}" for f in repo.fragments[:FRAGMENTS_PER_REPO]]
        for p in pointers:
            lines.append(f"{p.path}: git-lfs pointer, not the file ({p.size} bytes)")
            files.append({"path": p.path, "size": p.size, "sha256": p.sha256})
            digests.append({"algo": "sha256", "value": p.sha256,
                            "encoding": "github lfs pointer",
                            "context": f"{name}/{p.path} (git-lfs pointer text for "
                                       f"{p.size} bytes)"})
        if truncated:
            lines.append("(the repository's file list was truncated by GitHub)")
        extras: dict[str, Any] = {"github": {"repo": name, "releases": [r.id for r in releases],
                                             "updated_at": repo.updated_at},
                                  "files": files}
        if listed:
            assets: FileList = {"label": "GitHub release assets",
                                "name": f"{name} release assets", "files": listed}
            extras[FILE_LIST] = assets
        if digests:
            extras["digests"] = digests
        latest = max((r.published_at for r in releases if r.published_at), default=None)
        posted = latest or repo.updated_at
        url = repo.html_url or f"{self.root}/repos/{name}"
        return Document(
            target=self.target.name, key=name, url=url, title=name, author=repo.owner,
            posted_at=posted, text="\n".join(lines), links=list(dict.fromkeys(links)),
            extras=extras, snapshot=snapshot.body if snapshot else b"",
            snapshot_url=snapshot.url if snapshot else "",
            fetched_at=snapshot.fetched_at if snapshot else "")


# ------------------------------------------------------------------------------ rate limits

RESOURCES = ("core", "search", "code_search")


def _stopped(exc: RateLimited, what: str) -> None:
    log.warning("rate_limited", resource=exc.resource, until=utc_iso(exc.until), stopped=what,
                error=str(exc))


def saved_waits(value: Any, now: datetime) -> dict[str, datetime]:
    """The cursor's `rate_limited` ({resource: ISO time}) still ahead of `now`; a cursor
    is the source's own, but a time past MAX_WAIT is cut to it all the same."""
    waits: dict[str, datetime] = {}
    for resource, until in json_object(value).items():
        moment = parse_iso_time(until)
        if resource in RESOURCES and moment is not None and moment > now:
            waits[resource] = min(moment, now + MAX_WAIT)
    return waits


def reset_time(value: str | None, now: datetime) -> datetime | None:
    """`x-ratelimit-reset` (UTC epoch seconds) as a time, at most MAX_WAIT from `now`;
    None when absent or not a number."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 12:
        return None
    try:
        moment = datetime.fromtimestamp(int(value.strip()), UTC)
    except (OverflowError, OSError, ValueError):
        return now + MAX_WAIT
    return min(moment, now + MAX_WAIT)


def rate_limit_until(status: int | None, headers: Mapping[str, str] | None,
                     now: datetime) -> datetime | None:
    """When GitHub allows requests again after a refusal, or None if the refusal is not a
    rate limit. GitHub's rules: `retry-after` seconds when present; else, with
    `x-ratelimit-remaining: 0`, the `x-ratelimit-reset` time; else a 429 (or a 403 that
    states a limit) waits a minute. A 403 without any of these is a permission refusal."""
    if status not in (403, 429) or headers is None:
        return None
    after = parse_retry_after(headers.get("retry-after"), now=now)
    if after is not None:
        return now + min(timedelta(seconds=after), MAX_WAIT)
    remaining = headers.get("x-ratelimit-remaining")
    if remaining is not None and remaining.strip() == "0":
        reset = reset_time(headers.get("x-ratelimit-reset"), now)
        return max(reset, now + timedelta(seconds=1)) if reset is not None else now + SECONDARY_WAIT
    if status == 429:
        return now + SECONDARY_WAIT
    return None


# ------------------------------------------------------------------------------ parsing


def _full_name(value: Any) -> str | None:
    if isinstance(value, str) and _FULL_NAME.fullmatch(value) and ".." not in value:
        return value
    if value is not None:
        log.warning("repository_name_refused", name=str(value)[:100])
    return None


def _iso(value: Any) -> str | None:
    return utc_iso(parse_iso_time(value))


def _repo(item: dict[str, Any], url: str) -> Repo | None:
    name = _full_name(item.get("full_name"))
    if name is None:
        return None
    owner = str_or_empty(json_object(item.get("owner")).get("login")) or name.split("/")[0]
    topics = item.get("topics")
    branch = item.get("default_branch")
    updated, pushed = _iso(item.get("updated_at")), _iso(item.get("pushed_at"))
    marker = "|".join(m for m in (updated, pushed) if m) or None
    return Repo(full_name=name, marker=marker,
                html_url=http_url(url, item.get("html_url")),
                owner=owner, description=str_or_empty(item.get("description"))[:2000],
                topics=[t for t in topics if isinstance(t, str)][:50]
                if isinstance(topics, list) else [],
                branch=branch if isinstance(branch, str) and _BRANCH.fullmatch(branch)
                and ".." not in branch else None,
                updated_at=max((m for m in (updated, pushed) if m), default=None))


def parse_repositories(body: bytes, url: str) -> list[Repo]:
    """The repositories of a search page (`{"total_count", "incomplete_results", "items"}`)."""
    safe = redact_url(url)
    data = parse_json(body, safe)
    items = json_array(data, "items", safe, reason=("message", "GitHub says"))
    return [r for item in items if isinstance(item, dict) and (r := _repo(item, url)) is not None]


def parse_code(body: bytes, url: str) -> list[tuple[Repo, str]]:
    """(repository with the matched fragments, blob id) per code search result."""
    safe = redact_url(url)
    data = parse_json(body, safe)
    out: list[tuple[Repo, str]] = []
    for item in json_array(data, "items", safe, reason=("message", "GitHub says")):
        if not isinstance(item, dict):
            continue
        repo = _repo(json_object(item.get("repository")), url)
        path = str_or_empty(item.get("path"))[:500]
        if repo is None or not path:
            continue
        repo.marker = None
        matches = item.get("text_matches")
        for match in matches[:5] if isinstance(matches, list) else []:
            fragment = str_or_empty(json_object(match).get("fragment"))
            if fragment:
                repo.fragments.append(f"{path}: {' '.join(fragment.split())[:500]}")
        if not repo.fragments:
            repo.fragments.append(path)
        out.append((repo, str_or_empty(item.get("sha"))[:64] + ":" + path))
    return out


def parse_releases(body: bytes, url: str) -> list[Release]:
    safe = redact_url(url)
    data = parse_json(body, safe)
    if not isinstance(data, list):
        said = data.get("message") if isinstance(data, dict) else None
        detail = f" (GitHub says: {said[:200]!r})" if isinstance(said, str) else ""
        raise SourceError(f"{safe}: expected a JSON array of releases{detail}")
    out: list[Release] = []
    for item in data:
        if not isinstance(item, dict) or not is_int(item.get("id")):
            continue
        assets: list[Asset] = []
        raw_assets = item.get("assets")
        for a in raw_assets[:ASSETS_PER_RELEASE] if isinstance(raw_assets, list) else []:
            if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not a["name"]:
                continue
            size = a.get("size")
            digest = _SHA256.fullmatch(str_or_empty(a.get("digest")).strip())
            assets.append(Asset(
                name=a["name"].replace("\n", " ")[:300],
                size=size if is_int(size) and size >= 0 else None,
                url=http_url(url, a.get("browser_download_url")),
                sha256=digest.group(1).lower() if digest else None))
        tag = str_or_empty(item.get("tag_name"))[:200] or str(item["id"])
        out.append(Release(
            id=item["id"], tag=tag, name=str_or_empty(item.get("name"))[:300],
            body=str_or_empty(item.get("body"))[:TEXT_LIMIT],
            url=http_url(url, item.get("html_url")),
            published_at=_iso(item.get("published_at")) or _iso(item.get("created_at")),
            author=str_or_empty(json_object(item.get("author")).get("login")),
            assets=assets))
    return out


def parse_tree(body: bytes, url: str) -> tuple[list[tuple[str, int]], bool]:
    """(path, size) of each blob of a git tree listing, and its `truncated` flag."""
    safe = redact_url(url)
    data = parse_json(body, safe)
    entries = json_array(data, "tree", safe, reason=("message", "GitHub says"))
    blobs = [(e["path"], e["size"]) for e in entries
             if isinstance(e, dict) and e.get("type") == "blob"
             and isinstance(e.get("path"), str) and is_int(e.get("size")) and e["size"] >= 0]
    return blobs, data.get("truncated") is True
