"""Hacker News through the Algolia search API (`/api/v1/search_by_date`), newest first.

The target's URL is the search endpoint (`https://hn.algolia.com/api/v1/search_by_date`)
and `query` what to search for (a `query` in the URL works too). A run asks for
`tags=(story,comment)` (unless the URL sets `tags`) and `hitsPerPage=50`, pages through
`nbPages` up to `max_pages`, and after the first run only for hits newer than the cursor:
`numericFilters=created_at_i>T`. Algolia indexes items a few minutes after they are posted,
so T is the newest `created_at_i` seen minus an hour, and the objectIDs seen in that hour
are kept in the cursor and skipped: a late-indexed comment is still read, and none twice.

Every hit is a Document keyed by its objectID, with the story's or comment's HTML as text
and the story's `url` among the links. Its URL comes from `document_url`, a template with
`{id}` (default `https://news.ycombinator.com/item?id={id}`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import structlog

from monitor.models import Document
from monitor.sources.base import (
    Source,
    epoch_iso,
    html_text,
    is_int,
    json_array,
    links_of,
    off_loop,
    parse_html,
    parse_json,
    str_or_empty,
    template_problems,
)

log = structlog.get_logger("weightwatch.sources.hackernews")

HITS_PER_PAGE = 50
DEFAULT_DOCUMENT_URL = "https://news.ycombinator.com/item?id={id}"
# How far behind the newest hit seen the next run looks again (Algolia's indexing lag).
OVERLAP = 3600
MAX_REMEMBERED = 5000


class HackerNewsSource(Source):
    kind = "hackernews"
    option_keys = frozenset({"query", "max_pages", "document_url"})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        url = options.get("url")
        in_url = isinstance(url, str) and any(
            k == "query" and v.strip() for k, v in parse_qsl(urlsplit(url).query))
        query = options.get("query")
        if isinstance(query, str) and not query.strip() or query is None and not in_url:
            problems.append(("query", "required: what to search for (for example \"heron-7b\"); "
                                      "without it the search returns every story and comment"))
        return problems + template_problems(options, id=1)

    def search_url(self, page: int, since: int | None) -> str:
        parts = urlsplit(self.target.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k != "page" and not (k == "query" and self.target.query)]
        names = {k for k, _ in query}
        if self.target.query:
            query.insert(0, ("query", self.target.query))
        if "tags" not in names:
            query.append(("tags", "(story,comment)"))
        if since is not None:
            filters = [v for k, v in query if k == "numericFilters" and v]
            query = [(k, v) for k, v in query if k != "numericFilters"]
            # Algolia ANDs comma-separated numeric filters.
            query.append(("numericFilters", ",".join(filters + [f"created_at_i>{since}"])))
        if "hitsPerPage" not in names:
            query.append(("hitsPerPage", str(HITS_PER_PAGE)))
        query.append(("page", str(page)))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))

    def item_url(self, object_id: str) -> str:
        return (self.target.document_url or DEFAULT_DOCUMENT_URL).format(
            id=quote(object_id, safe=""))

    async def documents(self) -> AsyncIterator[Document]:
        newest = self.cursor.get("newest")
        newest = newest if is_int(newest) else None
        recent_raw = self.cursor.get("recent")
        recent: dict[str, int] = {k: v for k, v in (recent_raw or {}).items()
                                  if isinstance(v, int)} if isinstance(recent_raw, dict) else {}
        since = newest - OVERLAP if newest is not None else None
        for page in range(self.target.max_pages):
            response = await self.fetcher.get(self.search_url(page, since), self.target)
            hits, pages = await off_loop(parse_search, response.body, response.url)
            for hit in hits:
                if hit["objectID"] in recent:
                    continue  # seen last run (the look-back overlaps it) or on an earlier page
                recent[hit["objectID"]] = hit["created_at_i"]
                # Off the loop: the comment's HTML is parsed, and a hostile one may be large.
                yield await off_loop(self._document, hit, response.body, response.url,
                                     response.fetched_at)
            if not hits or page + 1 >= pages:
                break
            if page + 1 == self.target.max_pages and newest is not None:
                log.warning("results_truncated", pages=self.target.max_pages,
                            hint="older new hits are not read; raise max_pages or crawl more often")
        if recent:
            top = max([*recent.values(), newest if newest is not None else 0])
            keep = sorted(((c, i) for i, c in recent.items() if c > top - OVERLAP), reverse=True)
            self.cursor["newest"] = top
            self.cursor["recent"] = {i: c for c, i in keep[:MAX_REMEMBERED]}

    def _document(self, hit: dict[str, Any], body: bytes, url: str, fetched_at: str) -> Document:
        item = hit["item"]
        html = str_or_empty(item.get("comment_text")) or str_or_empty(item.get("story_text"))
        doc_url = self.item_url(hit["objectID"])
        soup = parse_html(html, doc_url)
        links = links_of(soup, doc_url)
        story_url = str_or_empty(item.get("url"))
        if story_url.startswith(("http://", "https://")) and story_url not in links:
            links.insert(0, story_url)
        tags = item.get("_tags")
        is_comment = "comment_text" in item and item.get("comment_text") is not None \
            or isinstance(tags, list) and "comment" in tags
        extras: dict[str, Any] = {"type": "comment" if is_comment else "story"}
        for name in ("story_id", "parent_id"):
            if isinstance(item.get(name), int):
                extras[name] = item[name]
        if is_comment and str_or_empty(item.get("story_title")):
            extras["story_title"] = item["story_title"]
        return Document(
            target=self.target.name, key=hit["objectID"], url=doc_url,
            title="" if is_comment else str_or_empty(item.get("title")),
            author=str_or_empty(item.get("author")), text=html_text(soup), links=links,
            posted_at=epoch_iso(hit["created_at_i"]), extras=extras,
            snapshot=body, snapshot_url=url, fetched_at=fetched_at)


def parse_search(body: bytes, url: str) -> tuple[list[dict[str, Any]], int]:
    """The hits of one result page (objectID and created_at_i checked) and `nbPages`."""
    data = parse_json(body, url)
    out = []
    for item in json_array(data, "hits", url, reason=("message", "the API says")):
        if not isinstance(item, dict):
            continue
        object_id, created = item.get("objectID"), item.get("created_at_i")
        if is_int(object_id):
            object_id = str(object_id)
        if not isinstance(object_id, str) or not object_id or not is_int(created) \
                or epoch_iso(created) is None:
            continue
        out.append({"objectID": object_id, "created_at_i": created, "item": item})
    pages = data.get("nbPages")
    return out, pages if is_int(pages) else 1
