"""ModelScope (modelscope.cn), Alibaba's model hub: a Hugging-Face-like hub with its own API.

The target's URL is the site root (`https://modelscope.cn`) and `query` the search term.
The shapes are those the `modelscope` SDK (modelscope/hub/api.py, file_download.py,
info.py) and ModelScope's OpenAPI clients read:

1. searches `GET {root}/openapi/v1/models?search=Q&sort=last_modified&page_number=N&
   page_size=50`, an object `{success, data: {models: [{id: "owner/name",
   last_modified, description, tasks, tags, license, ...}], total_count, page_number,
   page_size}}`;
   pages follow by `page_number` while `total_count` says more remain (the OpenAPI serves
   at most page_number * page_size <= 3000), up to `max_pages`. (The site's own search,
   `PUT /api/v1/dolphin/models`, needs a request body; the fetcher only GETs.) Sorted by
   last change, newest first, so paging stops where nothing moved, as for the hub;
2. for every model whose `last_modified` moved, reads its files,
   `GET {root}/api/v1/models/{owner}/{name}/repo/files?Revision=master&Recursive=true`,
   `{Code, Success, Message, Data: {Files: [{Name, Path, Type: "blob"|"tree", Size,
   Sha256, IsLFS, Revision, CommittedDate}]}}`: every blob's `Sha256` is the SHA-256 of
   the file (the SDK checks downloads against it), LFS or not.

Each model becomes one Document at `{root}/models/{owner}/{name}`, with the file list and
digests in its extras as for the hub; weight files are linked at
`{root}/models/{owner}/{name}/resolve/master/{path}` (the HF-compatible download URL
ModelScope serves, redirecting to its CDN, which honours Range), so the weights detector
looks the stated SHA-256 up before reading a byte and range-scans what is not ours.
A model that answers 401 or 403 (private, or awaiting approval) is skipped with a warning.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import structlog

from monitor.fetch import FetchError, redact_url
from monitor.models import Document
from monitor.sources.base import (
    SourceError,
    is_int,
    json_object,
    off_loop,
    parse_json,
    str_or_empty,
)
from monitor.sources.hub import (
    Gated,
    HubFile,
    ModelHubSource,
    ModelInfo,
    byte_size,
    iso_or_none,
    sha256_hex,
    valid_model_id,
)

log = structlog.get_logger("weightwatch.sources.modelscope")

PAGE_SIZE = 50  # the OpenAPI's maximum
WINDOW = 3000  # page_number * page_size never exceeds this
REVISION = "master"  # ModelScope's default branch


class ModelScopeSource(ModelHubSource):
    kind = "modelscope"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._listed: dict[str, dict[str, Any]] = {}  # model id -> its search record

    async def _search(self, remembered: dict[str, str | None],
                      stop_early: bool) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for number in range(1, self.target.max_pages + 1):
            if number * PAGE_SIZE > WINDOW:
                break
            params = {"search": (self.target.query or "").strip(), "sort": "last_modified",
                      "page_number": str(number), "page_size": str(PAGE_SIZE)}
            response = await self._get(f"{self.root}/openapi/v1/models?{urlencode(params)}")
            records, total, size = await off_loop(parse_search, response.body, response.url)
            page = []
            for record in records:
                model_id = record["id"]
                if model_id not in self._listed:
                    self._listed[model_id] = record
                    page.append((model_id, iso_or_none(record.get("last_modified"))))
            out += page
            if stop_early and page and all(m is not None and remembered.get(i) == m
                                           for i, m in page):
                break
            # The page size the answer reports: a server may serve fewer than asked.
            if not records or total is None or number * (size or PAGE_SIZE) >= total:
                break
        return out

    async def _model(self, model_id: str) -> tuple[ModelInfo, Document] | Gated | None:
        url = (f"{self.root}/api/v1/models/{quote(model_id, safe='/')}/repo/files?"
               f"Revision={REVISION}&Recursive=true")
        try:
            response = await self._get(url)
        except FetchError as exc:
            return self._failed(model_id, exc, what="files")
        try:
            files = await off_loop(parse_files, response.body, response.url)
        except SourceError as exc:
            log.warning("model_failed", target=self.target.name, model=model_id, what="files",
                        error=str(exc))
            return None
        info = model_info(self._listed.get(model_id, {"id": model_id}), files)
        return info, self._document(info, response)

    def file_url(self, info: ModelInfo, f: HubFile) -> str:
        return (f"{self.root}/models/{quote(info.id, safe='/')}/resolve/{REVISION}/"
                f"{quote(f.path, safe='/')}")


# ------------------------------------------------------------------------------ parsing


def parse_search(body: bytes, url: str) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """The model records of one search page (each with a valid "owner/name" id), and the
    total and page size the search reports."""
    where = redact_url(url)
    data = parse_json(body, where)
    inner = data.get("data") if isinstance(data, dict) else None
    models = inner.get("models") if isinstance(inner, dict) else None
    if not isinstance(models, list):
        said = data.get("message") if isinstance(data, dict) else None
        detail = f" (ModelScope says: {said[:200]!r})" if isinstance(said, str) else ""
        raise SourceError(f"{where}: expected an object with a 'data.models' array{detail}")
    out = []
    for item in models:
        if not isinstance(item, dict):
            continue
        model_id = item.get("id")
        if not isinstance(model_id, str) or "/" not in model_id or not valid_model_id(model_id):
            if model_id is not None:
                log.warning("model_id_refused", id=str(model_id)[:100])
            continue
        out.append(item)
    total, size = json_object(inner).get("total_count"), json_object(inner).get("page_size")
    return out, total if is_int(total) else None, size if is_int(size) and size > 0 else None


def parse_files(body: bytes, url: str) -> list[HubFile]:
    """The blobs of a recursive file listing, with the SHA-256 and size ModelScope states."""
    where = redact_url(url)
    data = parse_json(body, where)
    files = json_object(json_object(data).get("Data")).get("Files")
    if not isinstance(data, dict) or data.get("Success") is False or not isinstance(files, list):
        said = data.get("Message") if isinstance(data, dict) else None
        detail = f" (ModelScope says: {said[:200]!r})" if isinstance(said, str) else ""
        raise SourceError(f"{where}: expected an object with a 'Data.Files' array{detail}")
    out = []
    for entry in files:
        if not isinstance(entry, dict) or entry.get("Type", "blob") != "blob":
            continue
        path = entry.get("Path")
        if not isinstance(path, str) or not path.strip() or len(path) > 1000:
            continue
        f = HubFile(path, byte_size(entry.get("Size")))
        if digest := sha256_hex(entry.get("Sha256")):
            f.sha256, f.encoding = digest, "modelscope Sha256"
        out.append(f)
    return out


def model_info(record: dict[str, Any], files: list[HubFile]) -> ModelInfo:
    """A model from its search record and its file listing."""
    model_id: str = record["id"]
    lines = [model_id]
    for key in ("display_name", "chinese_name", "license", "description"):
        value = str_or_empty(record.get(key)).strip()
        if value:
            lines.append(f"{key}: {value[:2000]}")
    for key in ("tasks", "tags", "architectures"):
        values = record.get(key)
        if isinstance(values, list):
            names = [v[:200] for v in values if isinstance(v, str)][:50]
            if names:
                lines.append(f"{key}: " + ", ".join(names))
    modified = iso_or_none(record.get("last_modified"))
    return ModelInfo(id=model_id, marker=modified, last_modified=modified, sha=None,
                     author=model_id.split("/", 1)[0], lines=lines, files=files,
                     page=f"models/{model_id}")
