"""HTML forums read through CSS selectors, with presets for common forum software.

A target's URL is a listing (a board, a "newest" page). With a `thread_link` selector the
adapter follows each thread and reads its posts; without one, the posts are on the listing
itself (link aggregators). Each post becomes a Document whose URL points at the post.
"""

from __future__ import annotations

from typing import AsyncIterator
from urllib.parse import urldefrag

import structlog
from bs4 import BeautifulSoup, Tag

from monitor.fetch import FetchError
from monitor.models import Document
from monitor.sources.base import (Source, SourceError, html_text, links_of, off_loop,
                                   safe_urljoin)

log = structlog.get_logger("weightwatch.sources.forum")

PHPBB = {
    "thread_link": "a.topictitle",
    "post": "div.post",
    "subject": "div.postbody h3 a",
    # Administrators and moderators get class="username-coloured" instead.
    "author": "p.author a.username, p.author a.username-coloured",
    "time": "p.author time[datetime]",
    "body": "div.postbody div.content",
}


class ForumSource(Source):
    kind = "forum"
    option_keys = frozenset({"preset", "selectors", "max_pages"})
    presets = {"phpbb": PHPBB}
    selector_keys = ("thread_link", "post", "subject", "author", "time", "body")
    required_selectors = ("post",)

    async def documents(self) -> AsyncIterator[Document]:
        listing = await self.fetcher.get(self.target.url, self.target)
        if "thread_link" not in self.selectors:
            for doc in await off_loop(self.parse_posts, listing.body, listing.url, listing.fetched_at):
                yield doc
            return
        threads = await off_loop(self.parse_listing, listing.body, listing.url)
        if not threads:
            raise SourceError(f"no thread links matched {self.selectors['thread_link']!r} "
                              f"on {listing.url}: has the forum's markup changed?")
        for thread_url in threads[: self.target.max_items]:
            try:
                page = await self.fetcher.get(thread_url, self.target)
            except FetchError as exc:
                # One broken thread must not blind the whole target.
                log.warning("thread_failed", url=thread_url, error=str(exc))
                continue
            for doc in await off_loop(self.parse_posts, page.body, page.url, page.fetched_at):
                yield doc

    def parse_listing(self, body: bytes, url: str) -> list[str]:
        soup = BeautifulSoup(body, "lxml")
        seen: dict[str, None] = {}
        for a in soup.select(self.selectors["thread_link"]):
            href = a.get("href")
            absolute = safe_urljoin(url, str(href)) if href else None
            if absolute:
                seen.setdefault(urldefrag(absolute).url, None)
        return list(seen)

    def parse_posts(self, body: bytes, url: str, fetched_at: str) -> list[Document]:
        soup = BeautifulSoup(body, "lxml")
        docs = []
        for index, post in enumerate(soup.select(self.selectors["post"])):
            anchor = str(post.get("id") or f"post-{index}")
            post_url = f"{url}#{anchor}"
            body_node = self.select(post, "body") or post
            docs.append(Document(
                target=self.target.name, key=post_url, url=post_url,
                title=self._text(post, "subject"), author=self._text(post, "author"),
                posted_at=self._time(post), text=html_text(body_node),
                links=links_of(body_node, url), snapshot=body, snapshot_url=url,
                fetched_at=fetched_at))
        return docs

    def _text(self, post: Tag, name: str) -> str:
        node = self.select(post, name)
        return node.get_text(" ", strip=True) if node else ""

    def _time(self, post: Tag) -> str | None:
        node = self.select(post, "time")
        if node is None:
            return None
        return str(node.get("datetime") or node.get("title") or node.get_text(strip=True)) or None
