"""Civitai, the hub of image models, where files are known by their stated hashes.

The target's URL is the site root (`https://civitai.com`) and `query` the search term. The
shapes are Civitai's public REST API v1, as its reference documents them
(developer.civitai.com/site/reference, and the "REST API Reference" of the civitai/civitai
wiki): a run

1. searches `GET {root}/api/v1/models?query=Q&sort=Newest&limit=100`, an object
   `{items: [model], metadata: {nextCursor, nextPage, ...}}`; the next page is
   `metadata.nextPage` (an absolute URL; with a query Civitai pages by cursor), followed up
   to `max_pages` pages and never to another host;
2. reads every model from its search record, which is complete: `modelVersions[].files[]`
   carry `name`, `sizeKB` (the size in KiB, a float: bytes / 1024), `type`, `hashes`
   {`SHA256`, `AutoV1`, `AutoV2`, `AutoV3`, `CRC32`, `BLAKE3`} (uppercase hex) and
   `downloadUrl` (`{root}/api/download/models/{versionId}`, which redirects to the file
   host; the redirect is followed under the fetcher's SSRF rules when the file is scanned).
   No further request is made per model.

Each model becomes one Document at its page, `{root}/models/{id}/{slug}`. Every stated hash
goes into the `digests` extras under its algorithm ("sha256", "autov1", "autov2",
"autov3", "crc32", "blake3", lowercase hex), where the digest detector matches each by
exact algorithm; the weight files' download URLs go into `links`, named by the `files`
extras (`url`), so the weights detector range-scans them as it does a hub's files.

Civitai's "Newest" orders by creation, not by last change: a new version of an old model
need not come first, so every run reads its `max_pages` pages (one request each) instead
of stopping at the first page where nothing moved. A model's change marker is its newest
version's time and a digest of its versions' ids, update times and files, never of its
download counts.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlencode

import structlog

from monitor.fetch import Response, redact_url
from monitor.models import Document
from monitor.parsing import html_text
from monitor.sources.base import (
    SourceError,
    http_url,
    is_int,
    json_array,
    json_object,
    off_loop,
    parse_iso_time,
    parse_json,
    str_or_empty,
    utc_iso,
)
from monitor.sources.hub import Gated, HubFile, ModelHubSource, ModelInfo, same_origin

log = structlog.get_logger("weightwatch.sources.civitai")

PAGE_LIMIT = 100  # Civitai's maximum
DESCRIPTION_MAX = 20_000  # characters of a model's description kept as text
# Civitai's hash names -> the algorithm names digests are matched under, with how many hex
# digits each has (AutoV3: as stated; Civitai shows its first 12).
HASHES: dict[str, tuple[str, tuple[int, int]]] = {
    "SHA256": ("sha256", (64, 64)), "AutoV1": ("autov1", (8, 8)),
    "AutoV2": ("autov2", (10, 10)), "AutoV3": ("autov3", (8, 64)),
    "CRC32": ("crc32", (8, 8)), "BLAKE3": ("blake3", (64, 64))}
_HEX = re.compile(r"[0-9a-fA-F]+")


class CivitaiSource(ModelHubSource):
    kind = "civitai"
    sorted_by_change = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # The search pages hold each model whole: what `_model` reads, by model id.
        self._listed: dict[str, tuple[ModelInfo, Response]] = {}

    async def _search(self, remembered: dict[str, str | None],
                      stop_early: bool) -> list[tuple[str, str | None]]:
        params = {"query": (self.target.query or "").strip(), "sort": "Newest",
                  "limit": str(PAGE_LIMIT)}
        url: str | None = f"{self.root}/api/v1/models?{urlencode(params)}"
        out: list[tuple[str, str | None]] = []
        visited: set[str] = set()
        for _page in range(self.target.max_pages):
            if url is None or url in visited:
                break
            visited.add(url)
            response = await self._get(url)
            models, url = await off_loop(parse_models, response.body, response.url, self.root)
            for info in models:
                if info.id not in self._listed:
                    self._listed[info.id] = (info, response)
                    out.append((info.id, info.marker))
            if url is not None and not same_origin(url, self.root):
                raise SourceError(f"{redact_url(response.url)}: refused a next-page link to "
                                  f"another host ({redact_url(url)})")
        return out

    async def _model(self, model_id: str) -> tuple[ModelInfo, Document] | Gated | None:
        info, response = self._listed[model_id]
        return info, self._document(info, response)

    def file_url(self, info: ModelInfo, f: HubFile) -> str:
        # Every file of a version is listed with its own download URL; one without is
        # not linked (there is no other URL scheme to guess).
        return f.url or ""


# ------------------------------------------------------------------------------ parsing


def parse_models(body: bytes, url: str, root: str) -> tuple[list[ModelInfo], str | None]:
    """The models of one search page and the next page's URL (None on the last page).
    A record that is not a model with an id is skipped; the page itself must have the
    shape, or the target fails with a one-line error."""
    where = redact_url(url)
    data = parse_json(body, where)
    items = json_array(data, "items", where, reason=("error", "Civitai says"))
    models = []
    for item in items:
        if not isinstance(item, dict) or not is_int(item.get("id")) or item["id"] < 0:
            if isinstance(item, dict) and "id" in item:
                log.warning("model_id_refused", id=str(item.get("id"))[:100])
            continue
        models.append(parse_model(item, root))
    meta = json_object(data.get("metadata"))
    next_url = http_url(url, meta.get("nextPage"))
    cursor = meta.get("nextCursor")
    if next_url is None and isinstance(cursor, (str, int)) and not isinstance(cursor, bool) \
            and str(cursor):
        next_url = _with_cursor(url, str(cursor))
    return models, next_url


def parse_model(item: dict[str, Any], root: str) -> ModelInfo:
    model_id = str(item["id"])
    name = str_or_empty(item.get("name")).strip()[:500] or model_id
    author = str_or_empty(json_object(item.get("creator")).get("username"))[:200]
    lines = [name]
    if isinstance(item.get("type"), str):
        lines.append(f"type: {item['type'][:100]}")
    tags = [t[:200] for t in item.get("tags", []) if isinstance(t, str)][:100] \
        if isinstance(item.get("tags"), list) else []
    if tags:
        lines.append("tags: " + ", ".join(tags))
    if author:
        lines.append(f"creator: {author}")
    if isinstance(item.get("mode"), str):
        lines.append(f"mode: {item['mode'][:50]}")  # Archived: no files; TakenDown
    description = str_or_empty(item.get("description"))
    if description.strip():
        lines.append(html_text(description[:DESCRIPTION_MAX * 5])[:DESCRIPTION_MAX])
    files: list[HubFile] = []
    times: list[str] = []
    changes: list[Any] = []
    versions = item.get("modelVersions")
    for version in versions if isinstance(versions, list) else []:
        if not isinstance(version, dict):
            continue
        vname = str_or_empty(version.get("name")).strip()[:200]
        stamps = [utc_iso(parse_iso_time(version.get(k)))
                  for k in ("publishedAt", "updatedAt", "createdAt")]
        times += [t for t in stamps if t]
        base = str_or_empty(version.get("baseModel"))[:100]
        words = [w[:200] for w in version.get("trainedWords", []) if isinstance(w, str)][:50] \
            if isinstance(version.get("trainedWords"), list) else []
        lines.append(f"version {vname}" + (f" (base model {base})" if base else "")
                     + (f"; trained words: {', '.join(words)}" if words else ""))
        version_files = version.get("files")
        for entry in version_files if isinstance(version_files, list) else []:
            f = _file(entry, root, f"{name} {vname}".strip())
            if f is not None:
                files.append(f)
        changes.append([version.get("id"), version.get("updatedAt"),
                        [[e.get("id"), e.get("name"), e.get("hashes")]
                         for e in (version_files if isinstance(version_files, list) else [])
                         if isinstance(e, dict)]])
    # Led by the newest time, so the cursor, when it must forget, forgets the oldest.
    newest = max(times, default=None)
    digest = hashlib.sha1(json.dumps(changes, sort_keys=True, default=str).encode()).hexdigest()
    return ModelInfo(id=model_id, marker=f"{newest or ''}/{digest}", last_modified=newest,
                     sha=None, author=author, lines=lines, files=files, title=name,
                     page=f"models/{model_id}/{slug(name)}")


def _file(entry: Any, root: str, where: str) -> HubFile | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return None
    name = entry["name"].strip()[:500]
    if not name:
        return None
    kib = entry.get("sizeKB")
    size = round(kib * 1024) if isinstance(kib, (int, float)) and not isinstance(kib, bool) \
        and 0 <= kib < 2**43 else None
    f = HubFile(name, size, url=http_url(root, entry.get("downloadUrl")),
                label=f"{where}: {name}")
    hashes = json_object(entry.get("hashes"))
    for key, (algo, (shortest, longest)) in HASHES.items():
        value = hashes.get(key)
        if not isinstance(value, str) or not _HEX.fullmatch(value.strip()) \
                or not shortest <= len(value.strip()) <= longest:
            continue
        value = value.strip().lower()
        if algo == "sha256":
            f.sha256, f.encoding = value, f"civitai hashes.{key}"
        else:
            f.stated.append((algo, value, f"civitai hashes.{key}"))
    return f


def slug(name: str) -> str:
    """A model page's slug as Civitai writes it: lowercase words of letters and digits,
    other punctuation dropped, joined by '-'."""
    words = re.sub(r"[^a-z0-9\s-]", "", name.lower()).replace("-", " ").split()
    return "-".join(words)[:100] or "model"


def _with_cursor(url: str, cursor: str) -> str:
    base, _, query = url.partition("?")
    kept = [part for part in query.split("&") if part and not part.startswith("cursor=")]
    return f"{base}?{'&'.join(kept + [urlencode({'cursor': cursor})])}"
