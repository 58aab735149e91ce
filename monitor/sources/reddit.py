"""Reddit-style listings (`/r/{sub}/new.json`), read newest first with the `after` cursor.

The target's URL is a listing (`https://www.reddit.com/r/LocalLLaMA/new.json`; a URL
without `.json` gets it). A run asks for `limit=100&raw_json=1` (an operator's own `limit`
in the URL is kept) and follows `data.after` up to `max_pages` pages, stopping at the first
post not newer than the newest one the last run saw: the cursor keeps that post's
`created_utc` and the names posted in that same second, so a post deleted since cannot
make the next run read the whole listing again. When Reddit's `x-ratelimit-remaining`
reaches zero the run stops paging early rather than collecting 429s.

Reddit asks API clients for a distinctive User-Agent; the target's `user_agent` (or the
crawl's, which names weightwatch) is sent, never a library default.

Every post (`t3`, or `t1` in a comments listing) is a Document keyed by its fullname
(`t3_1gx2abc`) whose URL is the absolute permalink; a link post's `url` is among its links.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, TypedDict
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from monitor.models import Document
from monitor.sources.base import (
    Source,
    SourceError,
    epoch_iso,
    links_of,
    markdown_links,
    off_loop,
    parse_html,
    parse_json,
    safe_urljoin,
    str_or_empty,
)

log = structlog.get_logger("weightwatch.sources.reddit")

PAGE_LIMIT = 100  # the most Reddit returns per listing page


class ListedPost(TypedDict):
    """A listing child that passed `parse_listing`'s checks; `data` is the rest, unchecked."""

    kind: Literal["t1", "t3"]  # a comment, a link post
    id: str
    name: str  # the fullname, e.g. t3_abc
    created_utc: float
    data: dict[str, Any]


class RedditSource(Source):
    kind = "reddit"
    option_keys = frozenset({"max_pages"})

    def listing_url(self, after: str | None) -> str:
        parts = urlsplit(self.target.url)
        path = parts.path.rstrip("/")
        if not path.endswith(".json"):
            path += ".json"
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k not in ("after", "before", "count")]
        names = {k for k, _ in query}
        if "limit" not in names:
            query.append(("limit", str(PAGE_LIMIT)))
        if "raw_json" not in names:
            query.append(("raw_json", "1"))
        if after:
            query.append(("after", after))
        return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))

    async def documents(self) -> AsyncIterator[Document]:
        newest = self.cursor.get("newest_utc")
        newest = float(newest) if isinstance(newest, (int, float)) else None
        at_newest = set(self.cursor.get("names") or [])
        seen: dict[str, float] = {}
        after: str | None = None
        for page_number in range(self.target.max_pages):
            response = await self.fetcher.get(self.listing_url(after), self.target)
            posts, after = await off_loop(parse_listing, response.body, response.url)
            reached_known = False
            for post in posts:
                created, name = post["created_utc"], post["name"]
                if name in seen:
                    continue  # shifted onto the next page by a newer post
                if newest is not None and (created < newest
                                           or (created == newest and name in at_newest)):
                    reached_known = True  # everything further down is older still
                    continue
                seen[name] = created
                # Off the loop: an HTML body is parsed, and a hostile one may be large.
                yield await off_loop(self._document, post, response.body, response.url,
                                     response.fetched_at)
            if reached_known or not after or not posts:
                break
            if _rate_limit_exhausted(response.headers.get("x-ratelimit-remaining")):
                log.warning("rate_limit_exhausted", pages=page_number + 1)
                break
            if page_number + 1 == self.target.max_pages and newest is not None:
                log.warning("listing_truncated", pages=self.target.max_pages,
                            hint="older new posts are not read; raise max_pages or crawl "
                                 "more often")
        if seen:
            top = max(seen.values())
            if newest is None or top > newest:
                self.cursor["newest_utc"] = top
                self.cursor["names"] = sorted(n for n, c in seen.items() if c == top)
            elif top == newest:
                self.cursor["names"] = sorted(at_newest | {n for n, c in seen.items() if c == top})

    def _document(self, post: ListedPost, body: bytes, url: str, fetched_at: str) -> Document:
        data = post["data"]
        permalink = str_or_empty(data.get("permalink"))
        doc_url = _human_url(url, permalink or f"/comments/{post['id']}/")
        is_comment = post["kind"] == "t1"
        text = str_or_empty(data.get("body" if is_comment else "selftext"))
        html = str_or_empty(data.get("body_html" if is_comment else "selftext_html"))
        if html:
            links = links_of(parse_html(html, doc_url), doc_url)
        else:
            links = markdown_links(text)  # a listing without `selftext_html`
        target_url = str_or_empty(data.get("url_overridden_by_dest") or data.get("url"))
        if target_url and not is_comment:
            absolute = _human_url(url, target_url)
            if absolute and absolute != doc_url and absolute not in links:
                links.insert(0, absolute)
        extras: dict[str, Any] = {"subreddit": str_or_empty(data.get("subreddit"))}
        if is_comment:
            extras["link_title"] = str_or_empty(data.get("link_title"))
        return Document(
            target=self.target.name, key=post["name"], url=doc_url,
            title="" if is_comment else str_or_empty(data.get("title")),
            author=str_or_empty(data.get("author")), text=text, links=links,
            posted_at=epoch_iso(int(post["created_utc"])), extras=extras,
            snapshot=body, snapshot_url=url, fetched_at=fetched_at)


def parse_listing(body: bytes, url: str) -> tuple[list[ListedPost], str | None]:
    """The posts of one listing page (with their fullname and creation time checked), and
    the `after` cursor of the next page."""
    data = parse_json(body, url)
    listing = data.get("data") if isinstance(data, dict) else None
    if not isinstance(listing, dict) or not isinstance(listing.get("children"), list):
        raise SourceError(f"{url}: expected a Listing object with 'data.children'")
    posts: list[ListedPost] = []
    for child in listing["children"]:
        kind = child.get("kind") if isinstance(child, dict) else None
        if kind != "t3" and kind != "t1":
            continue
        item = child.get("data")
        if not isinstance(item, dict):
            continue
        ident, created = item.get("id"), item.get("created_utc")
        if not isinstance(ident, str) or not ident or isinstance(created, bool) \
                or not isinstance(created, (int, float)) or created != created:  # NaN
            continue
        name = item.get("name")
        name = name if isinstance(name, str) and name else f"{kind}_{ident}"
        if epoch_iso(int(min(max(created, -1e15), 1e15))) is None:
            continue
        posts.append({"kind": kind, "id": ident, "name": name,
                      "created_utc": float(created), "data": item})
    after = listing.get("after")
    return posts, after if isinstance(after, str) and after else None


def _human_url(listing_url: str, href: str) -> str:
    """An absolute URL for a permalink or link; the OAuth API host is not one people open."""
    absolute = safe_urljoin(listing_url, href) or ""
    parts = urlsplit(absolute) if absolute else None
    if parts and parts.hostname == "oauth.reddit.com":
        absolute = urlunsplit((parts.scheme, "www.reddit.com", parts.path, parts.query,
                               parts.fragment))
    return absolute


def _rate_limit_exhausted(value: str | None) -> bool:
    try:
        return value is not None and float(value) < 1
    except ValueError:
        return False
