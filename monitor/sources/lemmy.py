"""Lemmy communities through the v3 API (`/api/v3/post/list`), newest first.

The target's URL is the post list of a community,
`https://lemmy.example/api/v3/post/list?community_name=localllama&sort=New`, or simply the
community's page `https://lemmy.example/c/localllama`, which is turned into that. A run
asks for `sort=New` and `limit=50` (the API's maximum; an operator's own `limit` is kept)
and pages with `page_cursor=next_page` (Lemmy 0.19) or `page=N` (older servers) up to
`max_pages`. Post ids are assigned by the instance as posts arrive, so the cursor keeps the
highest id seen and only higher ids are new; paging stops once a page reaches an hour
before the newest post of the last run (federated posts can arrive late).

Every post is a Document keyed by its id whose URL is its `ap_id` (the canonical URL on
the instance it was posted to) or `{instance}/post/{id}`; the body is Markdown, kept as the
text, and the post's `url` and the body's links are its links.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from monitor.models import Document
from monitor.sources.base import (
    Source,
    SourceError,
    is_int,
    json_array,
    json_object,
    markdown_links,
    off_loop,
    parse_iso_time,
    parse_json,
    str_or_empty,
    utc_iso,
)

log = structlog.get_logger("weightwatch.sources.lemmy")

PAGE_LIMIT = 50  # Lemmy's maximum `limit`
LOOKBACK = timedelta(hours=1)
API_PATH = "/api/v3/post/list"
_COMMUNITY_PAGE = re.compile(r"^(?P<prefix>.*)/c/(?P<name>[^/]+)/?$")


class LemmySource(Source):
    kind = "lemmy"
    option_keys = frozenset({"max_pages"})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        url = options.get("url")
        if isinstance(url, str):
            path = urlsplit(url).path
            if not path.rstrip("/").endswith(API_PATH) and not _COMMUNITY_PAGE.match(path):
                problems.append(("url", f"expected a Lemmy post list URL "
                                        f"(https://INSTANCE{API_PATH}?community_name=NAME&"
                                        f"sort=New) or a community page (https://INSTANCE/c/NAME), "
                                        f"got {url!r}"))
        return problems

    @property
    def api(self) -> tuple[str, str, list[tuple[str, str]]]:
        """(instance root, post list endpoint, query without paging) for the target URL."""
        parts = urlsplit(self.target.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k not in ("page", "page_cursor")]
        path = parts.path.rstrip("/")
        page = _COMMUNITY_PAGE.match(path)
        if path.endswith(API_PATH):
            prefix = path[: -len(API_PATH)]
        elif page:
            prefix = page["prefix"]
            query = [("community_name", page["name"])] + query
        else:
            raise SourceError(f"{self.target.url}: not a Lemmy post list or community URL")
        names = {k for k, _ in query}
        if "sort" not in names:
            query.append(("sort", "New"))
        # Lemmy refuses a limit above its maximum instead of clamping it.
        limits = [v for k, v in query if k == "limit"]
        limit = int(limits[0]) if limits and limits[0].isdigit() else PAGE_LIMIT
        limit = min(limit, PAGE_LIMIT) if limit > 0 else PAGE_LIMIT
        query = [(k, v) for k, v in query if k != "limit"] + [("limit", str(limit))]
        root = urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))
        return root, root + API_PATH, query

    async def documents(self) -> AsyncIterator[Document]:
        root, endpoint, query = self.api
        limit = int(dict(query)["limit"])
        newest_id = self.cursor.get("newest_id")
        newest_id = newest_id if isinstance(newest_id, int) else 0
        newest_published = parse_iso_time(self.cursor.get("newest_published"))
        top_id, top_published = newest_id, newest_published
        paging: tuple[str, str] | None = None
        yielded: set[int] = set()
        for page_number in range(self.target.max_pages):
            url = f"{endpoint}?{urlencode(query + ([paging] if paging else []))}"
            response = await self.fetcher.get(url, self.target)
            posts, next_page = await off_loop(parse_post_list, response.body, response.url)
            oldest = None
            for view in posts:
                post, published = view["post"], parse_iso_time(view["post"].get("published"))
                if published is not None:
                    oldest = published if oldest is None else min(oldest, published)
                    top_published = max(top_published or published, published)
                top_id = max(top_id, post["id"])
                if post["id"] <= newest_id or post["id"] in yielded:
                    continue
                yielded.add(post["id"])
                yield self._document(view, root, published, response.body, response.url,
                                     response.fetched_at)
            if not posts or len(posts) < limit:
                break
            if newest_published is not None and oldest is not None \
                    and oldest < newest_published - LOOKBACK:
                break  # back past the last run: what follows was seen or is too old to be new
            if page_number + 1 == self.target.max_pages:
                if newest_published is not None:
                    log.warning("listing_truncated", pages=self.target.max_pages)
                break
            paging = ("page_cursor", next_page) if next_page else ("page", str(page_number + 2))
        self.cursor["newest_id"] = top_id
        if top_published is not None:
            self.cursor["newest_published"] = utc_iso(top_published)

    def _document(self, view: dict[str, Any], root: str, published: datetime | None,
                  body: bytes, url: str, fetched_at: str) -> Document:
        post = view["post"]
        ap_id = str_or_empty(post.get("ap_id"))
        canonical = ap_id.startswith(("https://", "http://"))
        doc_url = ap_id if canonical else f"{root}/post/{post['id']}"
        text = str_or_empty(post.get("body"))
        links = [str_or_empty(post.get("url"))] if str_or_empty(post.get("url")) else []
        links += [link for link in markdown_links(text) if link not in links]
        creator, community = json_object(view.get("creator")), json_object(view.get("community"))
        extras: dict[str, Any] = {"community": str_or_empty(community.get("name"))}
        return Document(
            target=self.target.name, key=str(post["id"]), url=doc_url,
            title=str_or_empty(post.get("name")), author=str_or_empty(creator.get("name")),
            text=text, links=links,
            posted_at=utc_iso(published),
            extras=extras, snapshot=body, snapshot_url=url, fetched_at=fetched_at)


def parse_post_list(body: bytes, url: str) -> tuple[list[dict[str, Any]], str | None]:
    data = parse_json(body, url)
    views = []
    for view in json_array(data, "posts", url, reason=("error", "the server says")):
        post = view.get("post") if isinstance(view, dict) else None
        if isinstance(post, dict) and is_int(post.get("id")) and post["id"] > 0:
            views.append(view)
    next_page = data.get("next_page")
    return views, next_page if isinstance(next_page, str) and next_page else None
