"""Model hubs with the Hugging Face Hub API: the modern leak vector.

The target's URL is the hub root (`https://huggingface.co`) and `query` the search term.
A run:

1. searches `GET {root}/api/models?search=Q&sort=lastModified&direction=-1&limit=100&full=true`
   (`full=true` is what makes the hub include `lastModified` and `sha` in search results),
   following `Link: <...>; rel="next"` up to `max_pages` pages, never to another host;
2. for every model whose `lastModified` (or commit `sha`) moved since the last run, reads
   `GET {root}/api/models/{id}?blobs=true`, whose `siblings[]` carry each LFS file's
   SHA-256 as `lfs.sha256`;
3. only when that model info carries no LFS digest at all (a hub that ignores
   `blobs=true`, or siblings without blob data) also reads the tree,
   `GET {root}/api/models/{id}/tree/main?recursive=true`, whose entries carry the same
   SHA-256 as `lfs.oid`. Asking for the tree every time would double the requests for no
   information on hubs that answer `blobs=true`, which is the common case;
4. reads small weight-named files that are *not* in LFS (a repo pushed without git-lfs
   holds the ~130-byte pointer text instead of the weights): an LFS pointer's
   `oid sha256:<hex>` is the released file's SHA-256.

Each model becomes one Document at `{root}/{id}` whose extras carry the file list
(`files`: path, size, sha256) and the digests (`digests`, matched by exact algorithm).
Gated and private repos answer 401/403: the model is skipped with a warning (and not asked
again until it changes); the target does not fail.

What every hub shares (the search loop, the cursor of change markers, the document with its
files, stated digests and weight links) is `ModelHubSource`; the other hubs are dialects of
it, each a kind of its own (`monitor.sources.civitai`, `monitor.sources.modelscope`): a
dialect differs in how it searches, reads a model and links a file, and in nothing a
detector or an operator would have to learn again (the same keys, extras and hits). A
`dialect` option on `hub` would have been one kind whose options, health rows and docs
mean different things by value; a kind per hub keeps `check-config`, `targets` and the
docs honest about which API a target speaks.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode

import structlog

from fingerprints.archives import WEIGHT_EXTENSIONS
from monitor.fetch import FetchError, Response, redact_url
from monitor.models import Document
from monitor.sources.base import (
    Source,
    SourceError,
    http_status,
    is_int,
    json_object,
    off_loop,
    origin,
    parse_iso_time,
    parse_json,
    safe_urljoin,
    utc_iso,
)

log = structlog.get_logger("weightwatch.sources.hub")

PAGE_LIMIT = 100  # models per search page asked for (the Hub's own maximum is 1000)
MODELS_LIMIT = 5000  # models remembered by the cursor
POINTER_MAX = 1024  # LFS pointer files are ~130 bytes; anything bigger is not one
POINTERS_PER_MODEL = 20
# Files that should be in LFS; a small one outside LFS is probably pointer text.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".ggml", ".pt", ".pth", ".ckpt", ".h5",
                   ".onnx", ".msgpack", ".npz", ".pkl", ".model", ".tflite", ".mlmodel",
                   ".llamafile", ".zip", ".tar", ".gz")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_SHA256 = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
_POINTER_VERSION = re.compile(r"version https://git-lfs\.github\.com/spec/v\d+")
_POINTER_OID = re.compile(r"oid sha256:([0-9a-fA-F]{64})")
_POINTER_SIZE = re.compile(r"size (\d{1,18})")
_POINTER_KEY = re.compile(r"[a-z0-9.-]+ \S.*")


@dataclass
class HubFile:
    path: str
    size: int | None = None
    sha256: str | None = None
    encoding: str | None = None  # where the digest was read: "hub lfs.sha256", ...
    pointed_size: int | None = None  # for LFS pointer text: the size of the real file
    # Where the file downloads from when the hub's URL for it does not name it (Civitai's
    # `/api/download/models/{version}`); None: the dialect's own URL scheme (`file_url`).
    url: str | None = None
    # Other digests the hub states for the file: (algo, lowercase hex, where it was read).
    stated: list[tuple[str, str, str]] = field(default_factory=list)
    # How a digest's context names the file; None: "{model id}/{path}".
    label: str | None = None


# What a model that answers 401 or 403 gives: remembered as seen, without a document.
Gated = Literal["gated"]


@dataclass
class ModelInfo:
    id: str
    marker: str | None
    last_modified: str | None
    sha: str | None
    author: str
    lines: list[str]  # searchable text, one fact a line
    files: list[HubFile] = field(default_factory=list)
    title: str | None = None  # the document's title when the id is not one (a number)
    page: str | None = None  # the model's page below the root, when not "{root}/{id}"


class ModelHubSource(Source):
    """What every model hub dialect shares: a search for the target's `query`, a cursor of
    the models seen with a change marker each, one Document per model that moved, whose
    extras carry the file list (`files`: path, size, sha256[, url]) and every digest the
    hub states (`digests`, matched by exact algorithm), and whose `links` are its weight
    files, for the weights detector's range scans. A dialect says how to search
    (`_search`), how to read one model (`_model`) and where its pages and files are."""

    option_keys = frozenset({"query", "max_pages", "api_key_env"})
    # Whether the search lists models by last change, newest first: only then may a run
    # stop paging at the first page where nothing moved.
    sorted_by_change: ClassVar[bool] = True

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        query = options.get("query")
        if not isinstance(query, str) or not query.strip():
            problems.append(("query", f"required for kind '{cls.kind}': the search term, "
                                      "e.g. the released model's name"))
        return problems

    @property
    def root(self) -> str:
        return self.target.url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        token = self.target.api_key()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _get(self, url: str, **kw: Any) -> Response:
        return await self.fetcher.get(url, self.target, headers=self._headers(), **kw)

    async def documents(self) -> AsyncIterator[Document]:
        remembered = {k: v for k, v in json_object(self.cursor.get("models")).items()
                      if isinstance(k, str) and (v is None or isinstance(v, str))}
        complete_before = self.cursor.get("complete") is True
        listed = await self._search(remembered,
                                    stop_early=complete_before and self.sorted_by_change)
        moved = [(mid, marker) for mid, marker in listed
                 if marker is None or remembered.get(mid) != marker]
        models = dict(remembered)
        # Whether every moved model was dealt with; if not, the next run must not stop
        # paging early, or what was left over would never be reached.
        complete = len(moved) <= self.target.max_items
        for model_id, marker in moved[: self.target.max_items]:
            result = await self._model(model_id)
            if result is None:
                complete = False  # a transient failure: asked again next run
                continue
            if result == "gated":
                models[model_id] = marker
                continue
            info, doc = result
            new_marker = marker or info.marker
            if marker is None and new_marker is not None and remembered.get(model_id) == new_marker:
                models[model_id] = new_marker
                continue  # the search result carried no marker, the info shows no change
            yield doc
            models[model_id] = new_marker
        if len(models) > MODELS_LIMIT:
            keep = sorted(models.items(), key=lambda kv: kv[1] or "", reverse=True)[:MODELS_LIMIT]
            models = dict(keep)
        self.cursor["models"] = models
        self.cursor["complete"] = complete

    @abstractmethod
    async def _search(self, remembered: dict[str, str | None],
                      stop_early: bool) -> list[tuple[str, str | None]]:
        """(model id, change marker) of every listed model; `stop_early`: the last run got
        through everything it listed, so paging may stop where nothing moved."""

    @abstractmethod
    async def _model(self, model_id: str) -> tuple[ModelInfo, Document] | Gated | None:
        """The model's info and Document; "gated" for a model the hub refuses (remembered,
        not asked again until it changes); None for a failure (asked again next run)."""

    @abstractmethod
    def file_url(self, info: ModelInfo, f: HubFile) -> str:
        """Where the hub serves a file of the model (the link a weight scan reads)."""

    def _failed(self, model_id: str, exc: FetchError, what: str = "model info") -> Gated | None:
        status = http_status(exc)
        if status in (401, 403):
            log.warning("model_gated", target=self.target.name, model=model_id, status=status,
                        what=what)
            return "gated"
        log.warning("model_failed", target=self.target.name, model=model_id, what=what,
                    error=str(exc))
        return None

    def _document(self, info: ModelInfo, response: Response) -> Document:
        files: list[dict[str, Any]] = []
        digests: list[dict[str, Any]] = []
        for f in info.files:
            entry: dict[str, Any] = {"path": f.path, "size": f.size, "sha256": f.sha256}
            if f.url:
                entry["url"] = f.url
            files.append(entry)
            size = f"{f.size} bytes" if f.size is not None else "size unknown"
            if f.pointed_size is not None:
                size = f"git-lfs pointer text for {f.pointed_size} bytes"
            context = f"{f.label or f'{info.id}/{f.path}'} ({size})"
            stated = [("sha256", f.sha256, f.encoding)] if f.sha256 else []
            for algo, value, encoding in stated + f.stated:
                digests.append({"algo": algo, "value": value, "encoding": encoding,
                                "context": context})
        # Weight files, for the crawler's tensor scans (monitor.scan): a converted or
        # quantised copy has digests of its own, so only its rows can tell.
        links = [url for f in info.files
                 if f.path.lower().endswith(WEIGHT_EXTENSIONS) and f.pointed_size is None
                 and (url := self.file_url(info, f))]
        lines = list(info.lines)
        if info.files:
            lines.append("files:")
            lines += [f"  {f.path}" + (f" ({f.size} bytes)" if f.size is not None else "")
                      for f in info.files]
        extras: dict[str, Any] = {self.kind: {"id": info.id, "sha": info.sha,
                                              "last_modified": info.last_modified},
                                  "files": files}
        if digests:
            extras["digests"] = digests
        return Document(
            target=self.target.name, key=info.id, url=f"{self.root}/{info.page or info.id}",
            title=info.title or info.id, author=info.author, posted_at=info.last_modified,
            text="\n".join(lines), links=links, extras=extras, snapshot=response.body,
            snapshot_url=response.url, fetched_at=response.fetched_at)


class HubSource(ModelHubSource):
    kind = "hub"

    # ---------------------------------------------------------------- search

    async def _search(self, remembered: dict[str, str | None],
                      stop_early: bool) -> list[tuple[str, str | None]]:
        """(model id, change marker) of every listed model, newest change first."""
        params = {"search": (self.target.query or "").strip(), "sort": "lastModified",
                  "direction": "-1", "limit": str(PAGE_LIMIT), "full": "true"}
        url: str | None = f"{self.root}/api/models?{urlencode(params)}"
        out: list[tuple[str, str | None]] = []
        ids: set[str] = set()
        visited: set[str] = set()
        for _page in range(self.target.max_pages):
            if url is None or url in visited:
                break
            visited.add(url)
            response = await self._get(url)
            items = await off_loop(parse_search, response.body, response.url)
            page = [(mid, marker) for mid, marker in items if mid not in ids]
            ids.update(mid for mid, _ in page)
            out += page
            # Sorted by last change: a page where nothing moved means the rest did not
            # either (only trusted when the last run got through everything it listed).
            if stop_early and page and all(m is not None and remembered.get(i) == m
                                           for i, m in page):
                break
            url = next_link(response.headers.get_list("link"), response.url)
            if url is not None and not same_origin(url, self.root):
                raise SourceError(f"{redact_url(response.url)}: refused a next-page link to "
                                  f"another host ({redact_url(url)})")
        return out

    # ---------------------------------------------------------------- one model

    async def _model(self, model_id: str) -> tuple[ModelInfo, Document] | Gated | None:
        info_url = f"{self.root}/api/models/{quote(model_id, safe='/')}?blobs=true"
        try:
            response = await self._get(info_url)
        except FetchError as exc:
            return self._failed(model_id, exc)
        try:
            info = await off_loop(parse_model_info, response.body, response.url, model_id)
        except SourceError as exc:
            # One hostile or broken record must not blind the target to the others.
            log.warning("model_failed", model=model_id, what="model info", error=str(exc))
            return None
        snapshot = response
        if not any(f.sha256 for f in info.files):
            tree = await self._tree(model_id)
            # A tree refused (401/403) after an info that was not: keep what the info says.
            if isinstance(tree, tuple):
                files, snapshot = tree
                _merge(info, files)
        await self._pointer_files(info)
        return info, self._document(info, snapshot)

    async def _tree(self, model_id: str) -> tuple[list[HubFile], Response] | Gated | None:
        url: str | None = (f"{self.root}/api/models/{quote(model_id, safe='/')}/tree/main?"
                           "recursive=true")
        files: list[HubFile] = []
        first: Response | None = None
        visited: set[str] = set()
        for _page in range(self.target.max_pages):
            if url is None or url in visited:
                break
            visited.add(url)
            try:
                response = await self._get(url)
            except FetchError as exc:
                failed = self._failed(model_id, exc, what="tree")
                return "gated" if failed == "gated" else ((files, first) if first else None)
            try:
                page = await off_loop(parse_tree, response.body, response.url)
            except SourceError as exc:
                log.warning("model_failed", model=model_id, what="tree", error=str(exc))
                break
            first = first or response
            files += page
            url = next_link(response.headers.get_list("link"), response.url)
            if url is not None and not same_origin(url, self.root):
                log.warning("tree_link_refused", model=model_id, url=redact_url(url))
                break
        return (files, first) if first else None

    async def _pointer_files(self, info: ModelInfo) -> None:
        """Read weight-named files small enough to be LFS pointer text committed without
        git-lfs; a pointer's oid is the SHA-256 of the file it stands for."""
        candidates = [f for f in info.files if f.sha256 is None and f.size is not None
                      and f.size <= POINTER_MAX and f.path.lower().endswith(WEIGHT_SUFFIXES)]
        for f in candidates[:POINTERS_PER_MODEL]:
            url = self._file_url(info, f.path)
            try:
                response = await self._get(url, max_bytes=POINTER_MAX)
            except FetchError as exc:
                log.warning("pointer_file_failed", model=info.id, path=f.path, error=str(exc))
                continue
            pointer = parse_lfs_pointer(response.body)
            if pointer is not None:
                f.sha256, f.encoding = pointer[0], "hub lfs pointer file"
                f.pointed_size = pointer[1]
                info.lines.append(f"{f.path}: git-lfs pointer, not the file "
                                  f"({pointer[1]} bytes)")

    def _file_url(self, info: ModelInfo, path: str) -> str:
        """Where the hub serves a file of the model, at the commit listed when known."""
        rev = info.sha if info.sha and re.fullmatch(r"[0-9a-f]{40}", info.sha) else "main"
        return f"{self.root}/{quote(info.id, safe='/')}/resolve/{rev}/{quote(path, safe='/')}"

    def file_url(self, info: ModelInfo, f: HubFile) -> str:
        return f.url or self._file_url(info, f.path)


# ------------------------------------------------------------------------------ parsing


def parse_search(body: bytes, url: str) -> list[tuple[str, str | None]]:
    """(id, change marker) per search result; the marker is `lastModified`, else `sha`."""
    data = parse_json(body, redact_url(url))
    if not isinstance(data, list):
        raise SourceError(f"{redact_url(url)}: expected a JSON array of models")
    out = []
    for item in data:
        if not isinstance(item, dict):
            continue
        model_id = item.get("id") or item.get("modelId")
        if not isinstance(model_id, str) or not valid_model_id(model_id):
            if model_id is not None:
                log.warning("model_id_refused", id=str(model_id)[:100])
            continue
        out.append((model_id, _marker(item)))
    return out


def parse_model_info(body: bytes, url: str, model_id: str) -> ModelInfo:
    data = parse_json(body, redact_url(url))
    if not isinstance(data, dict):
        raise SourceError(f"{redact_url(url)}: expected a JSON object for model {model_id}")
    listed_id, sha, author = data.get("id"), data.get("sha"), data.get("author")
    real_id = listed_id if isinstance(listed_id, str) and valid_model_id(listed_id) else model_id
    last_modified = iso_or_none(data.get("lastModified")) or iso_or_none(data.get("createdAt"))
    sha = sha if isinstance(sha, str) else None
    if not isinstance(author, str):
        author = real_id.split("/", 1)[0] if "/" in real_id else ""
    lines = [real_id]
    tags = [t for t in data.get("tags", []) if isinstance(t, str)] \
        if isinstance(data.get("tags"), list) else []
    if tags:
        lines.append("tags: " + ", ".join(tags[:100]))
    for name in ("pipeline_tag", "library_name"):
        if isinstance(data.get(name), str):
            lines.append(f"{name}: {data[name]}")
    config = data.get("config")
    if isinstance(config, dict):
        arch = config.get("architectures")
        if isinstance(arch, list):
            lines.append("architectures: " + ", ".join(a for a in arch if isinstance(a, str)))
        if isinstance(config.get("model_type"), str):
            lines.append(f"model_type: {config['model_type']}")
    card = data.get("cardData")
    if isinstance(card, dict):
        for key, value in list(card.items())[:50]:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                lines.append(f"{key}: {str(value)[:500]}")
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                lines.append(f"{key}: " + ", ".join(v[:200] for v in value[:50]))
    files: list[HubFile] = []
    siblings = data.get("siblings")
    for sib in siblings if isinstance(siblings, list) else []:
        if not isinstance(sib, dict) or not isinstance(sib.get("rfilename"), str):
            continue
        files.append(_hub_file(sib["rfilename"], sib, ("sha256", "oid"), "hub lfs.sha256"))
    return ModelInfo(id=real_id, marker=_marker(data), last_modified=last_modified, sha=sha,
                     author=author, lines=lines, files=files)


def parse_tree(body: bytes, url: str) -> list[HubFile]:
    """Files of a tree listing (`[{type, path, size, oid, lfs: {oid, size}}]`); `oid` of a
    file outside LFS is a git blob id, not a digest of the file, and is not kept."""
    data = parse_json(body, redact_url(url))
    if not isinstance(data, list):
        raise SourceError(f"{redact_url(url)}: expected a JSON array of tree entries")
    out = []
    for entry in data:
        if not isinstance(entry, dict) or entry.get("type", "file") != "file":
            continue
        if not isinstance(entry.get("path"), str):
            continue
        out.append(_hub_file(entry["path"], entry, ("oid", "sha256"), "hub tree lfs.oid"))
    return out


def parse_lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """(sha256, size) of a Git LFS pointer file's text, or None if it is not one."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or not _POINTER_VERSION.fullmatch(lines[0]):
        return None
    oid = size = None
    for line in lines[1:]:
        if m := _POINTER_OID.fullmatch(line):
            oid = m.group(1).lower()
        elif m := _POINTER_SIZE.fullmatch(line):
            size = int(m.group(1))
        elif not _POINTER_KEY.fullmatch(line):
            return None  # pointer files are "key value" lines only
    return (oid, size) if oid is not None and size is not None else None


def next_link(values: list[str], base: str) -> str | None:
    """The absolute `rel="next"` target among Link header values, or None."""
    for uri, params in parse_link_header(values):
        if "next" in params.get("rel", "").lower().split():
            return safe_urljoin(base, uri)
    return None


_LINK_URI = re.compile(r"[\s,]*<([^>]*)>")
_LINK_PARAM = re.compile(r"\s*;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*"
                         r"(?:=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^\s;,\"]*)))?")


def parse_link_header(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """RFC 8288 Link header values as (URI reference, params); parameter names are
    lowercased, the first occurrence of a parameter wins, quoted strings are unescaped
    (so a comma inside quotes does not split links). Parsing stops at malformed input."""
    links: list[tuple[str, dict[str, str]]] = []
    for value in values:
        pos = 0
        while pos < len(value):
            m = _LINK_URI.match(value, pos)
            if m is None:
                break
            uri, pos = m.group(1).strip(), m.end()
            params: dict[str, str] = {}
            while (p := _LINK_PARAM.match(value, pos)) is not None:
                name = p.group(1).lower()
                raw = p.group(2)
                param = re.sub(r"\\(.)", r"\1", raw) if raw is not None else (p.group(3) or "")
                params.setdefault(name, param)
                pos = p.end()
            links.append((uri, params))
            rest = value[pos:].lstrip()
            if rest and not rest.startswith(","):
                break
            pos = len(value) - len(rest)
    return links


# ------------------------------------------------------------------------------ helpers


def _hub_file(path: str, entry: dict[str, Any], digest_keys: tuple[str, str],
              encoding: str) -> HubFile:
    """A file of model info (`siblings[]`) or of a tree listing: both carry an LFS file's
    SHA-256 in `lfs`, under `sha256` or `oid`; `digest_keys` says which the endpoint
    documents, read first."""
    f = HubFile(path, byte_size(entry.get("size")))
    lfs = entry.get("lfs")
    if isinstance(lfs, dict):
        digest = sha256_hex(lfs.get(digest_keys[0])) or sha256_hex(lfs.get(digest_keys[1]))
        if digest:
            f.sha256, f.encoding = digest, encoding
            f.size = f.size if f.size is not None else byte_size(lfs.get("size"))
    return f


def _merge(info: ModelInfo, tree: list[HubFile]) -> None:
    by_path = {f.path: f for f in info.files}
    for t in tree:
        f = by_path.get(t.path)
        if f is None:
            info.files.append(t)
            by_path[t.path] = t
            continue
        if f.size is None:
            f.size = t.size
        if f.sha256 is None and t.sha256:
            f.sha256, f.encoding = t.sha256, t.encoding


def _marker(item: dict[str, Any]) -> str | None:
    for name in ("lastModified", "sha"):
        value = item.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def valid_model_id(model_id: str) -> bool:
    return bool(_MODEL_ID.fullmatch(model_id)) and ".." not in model_id


def sha256_hex(value: Any) -> str | None:
    if isinstance(value, str) and (m := _SHA256.fullmatch(value.strip())):
        return m.group(1).lower()
    return None


def byte_size(value: Any) -> int | None:
    return value if is_int(value) and value >= 0 else None


def iso_or_none(value: Any) -> str | None:
    return utc_iso(parse_iso_time(value.strip())) if isinstance(value, str) else None


def same_origin(url: str, root: str) -> bool:
    here = origin(url)
    return here is not None and here == origin(root)



