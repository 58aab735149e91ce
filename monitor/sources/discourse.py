"""Discourse forums through their public JSON API.

The target's URL is the forum root (`https://forum.example.org`, or a subfolder install such
as `https://example.org/forum`). A run reads the topic list `/latest.json`, most recently
bumped first, following `topic_list.more_topics_url` (an HTML path Discourse gives without
`.json`) up to `max_pages` pages. A topic is fetched again only when its `posts_count`,
`last_posted_at` or `bumped_at` moved since the last run. `/t/{id}.json` carries the first
chunk of posts and `post_stream.stream`, the ids of every post; the ids not yet seen are
fetched with `/t/{id}/posts.json?post_ids[]=...` in batches of 20, Discourse's own chunk
size. Post ids grow with time, so the cursor keeps the highest id read per topic and a
topic that gained three posts costs one batch, not a re-read of the thread.

Every post is a Document keyed `{topic_id}#{post_number}` whose URL is the post's
permalink, `{root}/t/{slug}/{topic_id}/{post_number}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import structlog

from monitor.fetch import FetchError
from monitor.models import Document
from monitor.sources.base import (
    Source,
    SourceError,
    html_text,
    is_int,
    links_of,
    off_loop,
    parse_html,
    parse_iso_time,
    parse_json,
    safe_urljoin,
    str_or_empty,
    utc_iso,
)

log = structlog.get_logger("weightwatch.sources.discourse")

# Posts per /t/{id}/posts.json request: Discourse's `chunk_size`, what its own client asks.
BATCH = 20
# post_type 3 is a "small action" (closed, pinned, split...): no text of its own.
SMALL_ACTION = 3


class DiscourseSource(Source):
    kind = "discourse"
    option_keys = frozenset({"max_pages"})

    @property
    def root(self) -> str:
        """The forum root without a trailing slash, whatever list URL the operator gave."""
        parts = urlsplit(self.target.url)
        path = parts.path.rstrip("/")
        for suffix in ("/latest.json", "/latest"):
            if path.endswith(suffix):
                path = path[: -len(suffix)]
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    async def documents(self) -> AsyncIterator[Document]:
        topics = await self._topic_list()
        seen: dict[str, list[Any]] = {k: v for k, v in self.cursor.get("topics", {}).items()
                                      if isinstance(v, list) and len(v) == 4}
        moved = [t for t in topics
                 if str(t.id) not in seen or seen[str(t.id)][:3] != t.signature]
        # Most recently bumped first, so a cap on topics keeps what is most likely fresh.
        moved.sort(key=lambda t: _sort_time(t.bumped_at or t.last_posted_at), reverse=True)
        listed = {str(t.id) for t in topics}
        for topic in moved[: self.target.max_items]:
            previous = seen.get(str(topic.id))
            max_seen = previous[3] if previous and isinstance(previous[3], int) else 0
            highest, complete = max_seen, True
            try:
                page = await self.fetcher.get(f"{self.root}/t/{topic.id}.json", self.target)
            except FetchError as exc:
                log.warning("topic_failed", topic=topic.id, error=str(exc))
                seen.pop(str(topic.id), None)  # try again next run
                continue
            parsed = await off_loop(parse_topic, page.body, page.url)
            slug = parsed.slug or topic.slug
            title = parsed.title or topic.title
            loaded = {p["id"] for p in parsed.posts}
            for doc in await off_loop(self._post_documents, parsed.posts, topic.id, slug, title,
                                      page.body, page.url, page.fetched_at):
                yield doc
            highest = max([highest, *loaded])
            remaining = [pid for pid in parsed.stream if pid not in loaded and pid > max_seen]
            for start in range(0, len(remaining), BATCH):
                batch = remaining[start:start + BATCH]
                query = urlencode([("post_ids[]", pid) for pid in batch])
                url = f"{self.root}/t/{topic.id}/posts.json?{query}"
                try:
                    response = await self.fetcher.get(url, self.target)
                except FetchError as exc:
                    log.warning("posts_batch_failed", topic=topic.id, error=str(exc))
                    complete = False
                    continue
                posts = await off_loop(parse_posts, response.body, response.url)
                for doc in await off_loop(self._post_documents, posts, topic.id, slug, title,
                                          response.body, response.url, response.fetched_at):
                    yield doc
                highest = max([highest, *(p["id"] for p in posts)])
            if complete:
                seen[str(topic.id)] = [*topic.signature, highest]
            else:
                seen.pop(str(topic.id), None)  # the missing batch is fetched next run
        # Forget topics that fell off the pages read; keep those skipped by the cap unseen.
        self.cursor["topics"] = {k: v for k, v in seen.items() if k in listed}

    async def _topic_list(self) -> list[ListedTopic]:
        url = f"{self.root}/latest.json"
        fetched: set[str] = set()
        topics: dict[int, ListedTopic] = {}
        for page_number in range(self.target.max_pages):
            fetched.add(url)
            response = await self.fetcher.get(url, self.target)
            listed, more = await off_loop(parse_latest, response.body, response.url)
            for topic in listed:
                topics.setdefault(topic.id, topic)  # a topic bumped between pages shows twice
            next_url = self._json_url(more) if more else None
            if next_url is None or next_url in fetched:
                break
            if page_number + 1 == self.target.max_pages:
                log.info("topic_list_truncated", pages=self.target.max_pages)
                break
            url = next_url
        return list(topics.values())

    def _json_url(self, more: str) -> str | None:
        """`more_topics_url` is the HTML list's path (`/latest?page=1`); its JSON twin has
        `.json` before the query. Only the forum's own origin is followed."""
        absolute = safe_urljoin(self.root + "/", more)
        if absolute is None:
            return None
        parts, root = urlsplit(absolute), urlsplit(self.root)
        if (parts.scheme, parts.netloc) != (root.scheme, root.netloc):
            log.warning("foreign_more_topics_url", url=absolute[:200])
            return None
        path = parts.path if parts.path.endswith(".json") else parts.path.rstrip("/") + ".json"
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

    def _post_documents(self, posts: list[dict[str, Any]], topic_id: int, slug: str, title: str,
                        body: bytes, url: str, fetched_at: str) -> list[Document]:
        docs = []
        for post in posts:
            if post.get("post_type") == SMALL_ACTION:
                continue
            number = post["post_number"]
            post_url = f"{self.root}/t/{quote(slug, safe='-_.~%')}/{topic_id}/{number}"
            cooked = post.get("cooked")
            soup = parse_html(cooked if isinstance(cooked, str) else "", post_url)
            docs.append(Document(
                target=self.target.name, key=f"{topic_id}#{number}", url=post_url,
                title=title if number == 1 else "", author=str_or_empty(post.get("username")),
                text=html_text(soup), links=links_of(soup, post_url),
                posted_at=utc_iso(parse_iso_time(post.get("created_at"))),
                extras={"topic": {"id": topic_id, "title": title}, "post_id": post["id"]},
                snapshot=body, snapshot_url=url, fetched_at=fetched_at))
        return docs


class ListedTopic:
    """One row of the topic list, with the fields that say whether it moved."""

    __slots__ = ("id", "slug", "title", "posts_count", "last_posted_at", "bumped_at")

    def __init__(self, item: dict[str, Any]):
        self.id: int = item["id"]
        self.slug = str_or_empty(item.get("slug"))
        self.title = str_or_empty(item.get("title"))
        posts_count = item.get("posts_count")
        self.posts_count = posts_count if is_int(posts_count) else None
        self.last_posted_at = str_or_empty(item.get("last_posted_at")) or None
        self.bumped_at = str_or_empty(item.get("bumped_at")) or None

    @property
    def signature(self) -> list[Any]:
        return [self.last_posted_at, self.posts_count, self.bumped_at]


class ParsedTopic:
    __slots__ = ("slug", "title", "posts", "stream")

    def __init__(self, slug: str, title: str, posts: list[dict[str, Any]], stream: list[int]):
        self.slug, self.title, self.posts, self.stream = slug, title, posts, stream


def parse_latest(body: bytes, url: str) -> tuple[list[ListedTopic], str | None]:
    data = parse_json(body, url)
    topic_list = data.get("topic_list") if isinstance(data, dict) else None
    if not isinstance(topic_list, dict) or not isinstance(topic_list.get("topics"), list):
        raise SourceError(f"{url}: expected an object with 'topic_list.topics' (a Discourse "
                          "topic list)")
    listed = [ListedTopic(t) for t in topic_list["topics"] if isinstance(t, dict) and _is_id(t.get("id"))]
    more = topic_list.get("more_topics_url")
    return listed, more if isinstance(more, str) and more else None


def parse_topic(body: bytes, url: str) -> ParsedTopic:
    data = parse_json(body, url)
    stream_obj = data.get("post_stream") if isinstance(data, dict) else None
    if not isinstance(stream_obj, dict) or not isinstance(stream_obj.get("posts"), list):
        raise SourceError(f"{url}: expected an object with 'post_stream.posts' (a Discourse "
                          "topic)")
    stream = stream_obj.get("stream")
    ids = [i for i in stream if _is_id(i)] if isinstance(stream, list) else []
    return ParsedTopic(str_or_empty(data.get("slug")), str_or_empty(data.get("title")),
                       _valid_posts(stream_obj["posts"]), list(dict.fromkeys(ids)))


def parse_posts(body: bytes, url: str) -> list[dict[str, Any]]:
    data = parse_json(body, url)
    stream_obj = data.get("post_stream") if isinstance(data, dict) else None
    if not isinstance(stream_obj, dict) or not isinstance(stream_obj.get("posts"), list):
        raise SourceError(f"{url}: expected an object with 'post_stream.posts'")
    return _valid_posts(stream_obj["posts"])


def _valid_posts(posts: list[Any]) -> list[dict[str, Any]]:
    return [p for p in posts
            if isinstance(p, dict) and _is_id(p.get("id")) and _is_id(p.get("post_number"))]


def _sort_time(value: str | None) -> str:
    return utc_iso(parse_iso_time(value)) or ""


def _is_id(value: Any) -> bool:
    return is_int(value) and value > 0
