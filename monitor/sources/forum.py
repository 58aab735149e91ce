"""HTML forums read through CSS selectors, with presets for phpBB 3, XenForo 2 and vBulletin 4.

A target's URL is a listing (a board, a "newest" page). With a `thread_link` selector the
adapter follows each thread and reads its posts, page after page; without one, the posts are
on the listing pages themselves (link aggregators). Each post becomes a Document, and each
page's posts are handed over together (`pages()`), so the crawler records them in one
transaction.

Selectors (all CSS; presets fill them, a target's `selectors` table overrides single ones):

  listing page   thread_link    links to threads (their href)
                 listing_next   the link to the next listing page (href)
  thread page    post           each post
                 next_page      the link to the next page of the thread (href)
                 thread_title   the thread's title; the title of its first post when that
                                post has no `subject` of its own
  within a post  post_id        the post's anchor (default: the post element's id attribute)
                 subject        the post's title
                 author         who wrote it
                 time           when (the element's datetime, data-time or title attribute,
                                else its text; ISO 8601 and Unix times are normalised to UTC)
                 body           the text detectors read (default: the whole post)

A value may end in `::attr(NAME)` to read that attribute of the matched element instead of
its text, and may be only `::attr(NAME)` to read an attribute of the post element itself:
XenForo's post is `<article data-author="..." data-content="post-123">`, so its preset has
`author = "::attr(data-author)"` and `post_id = "::attr(data-content)"`.

Pages and limits. Listing pages are followed through `listing_next` up to `max_pages` (and
no further once `max_items` threads are known); the first `max_items` threads are read, each
through `next_page` up to `max_pages` pages. A next link to another host (host and port) is
never followed, nor are thread links to another host, and a URL already read in the same walk
ends it, so pagination loops terminate.

Document keys. A post's key and URL are `<thread URL>#<post anchor>`, the thread URL being
the listing's link to the thread without page, session or fragment parts (phpBB
`viewtopic.php?t=ID`, XenForo `/threads/slug.ID/`, vBulletin `showthread.php?t=ID`). Keys
therefore do not depend on the page a post is on: a post that moves from page 2 to page 1
after deletions keeps its key. A post without an anchor falls back to `<page URL>#post-N`.

Cursor. New replies arrive on a thread's last page, so the cursor remembers, per thread, the
page to start from next run: the last page read, or the first unread one when `max_pages`
stopped the walk (a long thread is read a few pages per run until caught up). A later run
reads the listing again, then only the remembered page of each listed thread and whatever
follows it. If that page is gone, the thread is read from its first page. The map is bounded
(the most recently read threads are kept). Posts edited on earlier pages are not re-read:
that would cost every page of every thread on every run. Without `thread_link` the listing
pages are read from the first each run, with no cursor (new items appear on page 1).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urldefrag, urlsplit

import structlog

from monitor.fetch import FetchError, Response, redact_url
from monitor.models import Document
from monitor.parsing import HtmlPage, Node, cut_out, detach_nested, text_pieces
from monitor.sources.base import (
    Source,
    SourceError,
    css_problem,
    epoch_iso,
    html_text,
    links_of,
    off_loop,
    origin,
    parse_html,
    safe_urljoin,
    utc_iso,
)

log = structlog.get_logger("weightwatch.sources.forum")

PHPBB = {
    "thread_link": "a.topictitle",
    "listing_next": "a[rel=next]",
    "post": "div.post",
    "post_id": "::attr(id)",  # <div id="p20450" class="post ...">
    "subject": "div.postbody h3 a",
    # Administrators and moderators get class="username-coloured" instead.
    "author": "p.author a.username, p.author a.username-coloured",
    "time": "p.author time[datetime]",
    "body": "div.postbody div.content",
    "next_page": "a[rel=next]",
}

XENFORO = {
    # "threads/" also matches boards without friendly URLs (index.php?threads/slug.1/);
    # thread prefixes are separate links to the forum (?prefix_id=) and do not match.
    "thread_link": '.structItem--thread .structItem-title a[href*="threads/"]',
    "listing_next": "link[rel=next], a.pageNav-jump--next",
    "post": "article.message--post",
    "post_id": "::attr(data-content)",  # data-content="post-123"; the page's #post-123
    "author": "::attr(data-author)",
    # Not `time.u-dt` alone: "Last edited" in the post footer is one too.
    "time": ".message-attribution time.u-dt",
    # Not `.bbWrapper` alone: the signature below the post is one too.
    "body": ".message-body .bbWrapper",
    "next_page": "link[rel=next], a.pageNav-jump--next",
    "thread_title": "h1.p-title-value",
}

VBULLETIN = {
    "thread_link": 'a.title[id^="thread_title_"]',
    "listing_next": "a[rel=next]",
    # Not every li of ol#posts is a post (the thanks box of a popular add-on is one).
    "post": 'ol#posts > li.postcontainer[id^="post_"]',
    "post_id": "::attr(id)",  # id="post_123"
    "subject": ".postrow h2.title",
    "author": ".userinfo .username",  # a.username, or span.username for guests
    "time": ".posthead span.date",
    # Signatures live outside post_message_N, in .after_content.
    "body": 'div[id^="post_message_"]',
    "next_page": "a[rel=next]",
}

LINK_KEYS = ("thread_link", "listing_next", "next_page")
# Threads remembered in the cursor; the least recently read are forgotten first.
CURSOR_THREADS = 1000
MAX_ANCHOR = 200

_ATTR = re.compile(r"^(?P<css>.*?)::attr\(\s*(?P<attr>[^()\s]*)\s*\)\s*$", re.S)
_ATTR_NAME = re.compile(r"[^\s\"'>/=\x00-\x1f]+")
_PAGE_SUFFIX = re.compile(r"/page-?\d+/?$", re.I)
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_DIGITS = re.compile(r"[0-9]+")


def split_attr(spec: str) -> tuple[str, str | None]:
    """`"css::attr(name)"` -> ("css", "name"); a plain selector -> (selector, None)."""
    m = _ATTR.match(spec)
    if m is None:
        return spec, None
    return m.group("css").strip(), m.group("attr")


def thread_url(url: str) -> str:
    """A thread's URL without its page, session or fragment parts: the key of its posts.

    Drops the fragment, `start=N` / `page=N` (phpBB, vBulletin), 32-hex `sid=` / `s=`
    session ids (phpBB, vBulletin without cookies) and a trailing `/page-N` or `/pageN`
    (XenForo, vBulletin friendly URLs, also inside a path-like query). The raw spelling of
    everything else is kept.
    """
    url = urldefrag(url).url
    parts = urlsplit(url)
    path = _PAGE_SUFFIX.sub("/", parts.path) if parts.path.count("/") > 1 else parts.path
    pieces = []
    for piece in parts.query.split("&"):
        if not piece:
            continue
        name, eq, value = piece.partition("=")
        lname = name.lower()
        if eq and lname in ("start", "page") and (not value or _DIGITS.fullmatch(value)):
            continue
        if eq and lname in ("sid", "s") and (not value or _HEX32.fullmatch(value)):
            continue
        if not eq:
            piece = _PAGE_SUFFIX.sub("/", piece)
        pieces.append(piece)
    query = "&".join(pieces)
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{query}" if query else "")


def same_host(a: str, b: str) -> bool:
    """Same host name and port (explicit or the scheme's default); the scheme may differ."""
    oa, ob = origin(a), origin(b)
    return oa is not None and ob is not None and oa[1] is not None and oa[1:] == ob[1:]


def iso_time(raw: str | None) -> str | None:
    """ISO 8601 with an offset, or Unix seconds, as UTC ISO text; anything else as given
    (vBulletin shows "11-20-2026, 09:12 AM" in the board's own time zone)."""
    if not raw:
        return None
    raw = " ".join(raw.split())
    if _DIGITS.fullmatch(raw):  # Unix seconds (XenForo's data-time), 1973 to 33658
        return (epoch_iso(int(raw)) or raw) if 9 <= len(raw) <= 12 else raw
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return raw
    if parsed.tzinfo is None:
        return raw
    return utc_iso(parsed) or raw


def _charset(resp: Response) -> str | None:
    """The charset the HTTP header declares (it wins over <meta>), if Python knows it."""
    match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", resp.headers.get("content-type", ""),
                      re.I)
    if not match:
        return None
    try:
        return codecs.lookup(match.group(1)).name
    except LookupError:
        return None


def _base_url(page: HtmlPage, url: str) -> str:
    """What relative links resolve against: <base href> (vBulletin always sends one)."""
    base = page.root.find(".//base[@href]")
    if base is not None:
        joined = safe_urljoin(url, (base.get("href") or "").strip())
        if joined and urlsplit(joined).scheme in ("http", "https"):
            return joined
    return url


def _element(node: HtmlPage | Node) -> Node:
    return node.root if isinstance(node, HtmlPage) else node


def _unseen(docs: list[Document], keys: set[str]) -> list[Document]:
    """The documents whose keys are not in `keys` yet (a post repeated on the next page
    after an insertion, or twice on one page), first of each; `keys` takes theirs."""
    fresh = []
    for doc in docs:
        if doc.key not in keys:
            keys.add(doc.key)
            fresh.append(doc)
    return fresh


@dataclass
class _Page:
    """What one fetched page gave: documents or thread links, and the next page's URL."""

    docs: list[Document]
    threads: list[str]
    next_url: str | None
    posts: int = 0


class ForumSource(Source):
    kind = "forum"
    option_keys = frozenset({"preset", "selectors", "max_pages"})
    presets = {"phpbb": PHPBB, "xenforo": XENFORO, "vbulletin": VBULLETIN}
    selector_keys = ("thread_link", "listing_next", "post", "post_id", "subject", "author",
                     "time", "body", "next_page", "thread_title")
    required_selectors = ("post",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.specs = {name: split_attr(value) for name, value in self.selectors.items()}
        self.pages_read = self.posts_seen = 0  # thread pages read and posts on them, per run
        threads = self.cursor.get("threads")
        # Our own copy: the caller's cursor must not change under it mid-run.
        self.cursor["threads"] = {k: v for k, v in threads.items()
                                  if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(threads, dict) else {}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        if any(key == "preset" for key, _ in problems):
            return problems
        resolved = cls.resolve_selectors(options.get("preset"), options.get("selectors", {}))
        with_attr = {name: split_attr(value) for name, value in resolved.items()
                     if split_attr(value)[1] is not None}
        # The base class sees `::attr(...)` as invalid CSS; check the two parts instead.
        problems = [(key, message) for key, message in problems
                    if not (key.removeprefix("selectors.") in with_attr
                            and message.startswith("invalid CSS selector"))]
        for name, (css, attr) in with_attr.items():
            if not attr or not _ATTR_NAME.fullmatch(attr):
                problems.append((f"selectors.{name}", f"invalid attribute name {attr!r} in "
                                                      f"::attr(...)"))
            problem = css_problem(css) if css else None
            if problem:
                problems.append((f"selectors.{name}", problem))
        return problems

    # ------------------------------------------------------------------ crawling

    async def documents(self) -> AsyncIterator[Document]:
        async for page in self.pages():
            for doc in page:
                yield doc

    async def pages(self) -> AsyncIterator[list[Document]]:
        """Each page's posts not yielded before in the same walk, at once (empty pages
        left out)."""
        if "thread_link" not in self.selectors:
            async for page in self._listing_posts():
                yield page
            return
        threads = await self._thread_urls()
        self.pages_read = self.posts_seen = 0
        for thread in threads:
            async for page in self._thread(thread):
                yield page
        pages_read = self.pages_read
        if threads and not pages_read:
            raise SourceError(f"none of the {len(threads)} thread(s) linked from "
                              f"{redact_url(self.target.url)} could be read (see the log)")
        if pages_read and not self.posts_seen:
            raise SourceError(f"no posts matched {self.selectors['post']!r} on {pages_read} "
                              f"thread page(s) of {redact_url(self.target.url)}: has the "
                              f"forum's markup changed?")

    async def _thread_urls(self) -> list[str]:
        """Listing pages, first to `max_pages`: the threads to read, in listing order."""
        found: dict[str, None] = {}
        url: str | None = self.target.url
        seen: set[str] = set()
        pages = 0
        while url and pages < self.target.max_pages and len(found) < self.target.max_items:
            resp = await self._listing_page(url, seen, first=pages == 0)
            if resp is None:
                break
            pages += 1
            page = await off_loop(self.parse_listing, resp.body, resp.url, _charset(resp))
            if pages == 1 and not page.threads:
                raise SourceError(f"no thread links matched {self.selectors['thread_link']!r} "
                                  f"on {redact_url(resp.url)}: has the forum's markup changed?")
            for link in page.threads:
                if same_host(link, resp.url):
                    found.setdefault(link, None)
                else:
                    log.info("thread_link_refused", url=redact_url(link),
                             reason="another host")
            url = self._follow(page.next_url, resp.url, "listing_next")
        return list(found)[: self.target.max_items]

    async def _thread(self, thread: str) -> AsyncIterator[list[Document]]:
        """One thread's posts page by page, from its remembered page on; counts pages and
        posts seen."""
        remembered = self.cursor["threads"].get(thread)
        url: str | None = remembered if remembered and same_host(remembered, thread) else thread
        seen: set[str] = set()
        keys: set[str] = set()
        pages = 0
        last: str | None = None
        resume: str | None = None
        while url:
            if pages >= self.target.max_pages:
                resume = url  # the first page not read: start there next time
                break
            if url in seen:
                log.info("pagination_loop", url=redact_url(url), selector="next_page")
                break
            seen.add(url)
            try:
                resp = await self.fetcher.get(url, self.target)
            except FetchError as exc:
                if pages == 0 and url != thread:
                    # The remembered page is gone (posts deleted, thread moved): start over.
                    log.info("resume_page_failed", url=redact_url(url), error=str(exc))
                    url = thread
                    continue
                # One broken thread must not blind the whole target.
                log.warning("thread_failed", url=redact_url(url), error=str(exc))
                break
            pages += 1
            seen.add(urldefrag(resp.url).url)
            last = resp.url
            page = await off_loop(self.parse_posts, resp.body, resp.url, resp.fetched_at,
                                  _charset(resp), thread, url == thread, "next_page")
            self.pages_read += 1
            self.posts_seen += page.posts
            fresh = _unseen(page.docs, keys)
            if fresh:
                yield fresh
            url = self._follow(page.next_url, resp.url, "next_page")
        if last is not None:
            self._remember(thread, resume or last)

    async def _listing_posts(self) -> AsyncIterator[list[Document]]:
        """Without `thread_link`: the posts on the listing pages, from the first each run."""
        url: str | None = self.target.url
        seen: set[str] = set()
        keys: set[str] = set()
        key_base: str | None = None
        pages = 0
        while url and pages < self.target.max_pages:
            resp = await self._listing_page(url, seen, first=pages == 0)
            if resp is None:
                break
            pages += 1
            key_base = key_base or thread_url(resp.url)
            page = await off_loop(self.parse_posts, resp.body, resp.url, resp.fetched_at,
                                  _charset(resp), key_base, False, "listing_next")
            fresh = _unseen(page.docs, keys)
            if fresh:
                yield fresh
            url = self._follow(page.next_url, resp.url, "listing_next")

    async def _listing_page(self, url: str, seen: set[str], first: bool) -> Response | None:
        """A listing page of a walk, or None where the walk ends: at a URL it has been at (a
        pagination loop), or at a page after the first that fails to load. The first page
        failing is the target failing, so that is raised."""
        if url in seen:
            log.info("pagination_loop", url=redact_url(url), selector="listing_next")
            return None
        seen.add(url)
        try:
            resp = await self.fetcher.get(url, self.target)
        except FetchError as exc:
            if first:
                raise
            log.warning("listing_page_failed", url=redact_url(url), error=str(exc))
            return None
        seen.add(urldefrag(resp.url).url)  # where a redirect landed counts as visited too
        return resp

    def _follow(self, next_url: str | None, page_url: str, selector: str) -> str | None:
        if not next_url:
            return None
        if not same_host(next_url, page_url):
            log.info("next_page_refused", url=redact_url(next_url), selector=selector,
                     reason="another host")
            return None
        return next_url

    def _remember(self, thread: str, page_url: str) -> None:
        threads: dict[str, str] = self.cursor["threads"]
        threads.pop(thread, None)
        threads[thread] = page_url
        while len(threads) > CURSOR_THREADS:
            del threads[next(iter(threads))]

    # ------------------------------------------------------------------ parsing

    def parse_listing(self, body: bytes, url: str, charset: str | None = None) -> _Page:
        page = parse_html(body, url, charset)
        base = _base_url(page, url)
        found: dict[str, None] = {}
        css, attr = self.specs["thread_link"]
        for a in self.pattern(css).select(page) if css else []:
            link = self._link(a.get(attr or "href"), base)
            if link:
                found.setdefault(thread_url(link), None)
        return _Page([], list(found), self._next(page, "listing_next", base))

    def parse_posts(self, body: bytes, url: str, fetched_at: str, charset: str | None = None,
                    key_base: str | None = None, first_page: bool = False,
                    next_selector: str = "next_page") -> _Page:
        """The posts of one page, keyed `<key_base>#<anchor>`, and the next page's URL."""
        page = parse_html(body, url, charset)
        base = _base_url(page, url)
        key_base = key_base or thread_url(url)
        page_url = urldefrag(url).url
        thread_title = self.value(page, "thread_title") if first_page else None
        next_url = self._next(page, next_selector, base)  # before posts are cut apart
        docs = []
        posts = detach_nested(self.pattern(self.selectors["post"]).select(page))
        for index, post in enumerate(posts):
            anchor = self._anchor(post)
            post_url = f"{key_base}#{anchor}" if anchor else f"{page_url}#post-{index + 1}"
            body_node = self.select_node(post, "body")
            if body_node is None:
                body_node = post
            title = self.value(post, "subject") or ""
            if not title and index == 0 and thread_title:
                title = thread_title
            docs.append(Document(
                target=self.target.name, key=post_url, url=post_url, title=title,
                author=self.value(post, "author") or "",
                posted_at=iso_time(self.value(post, "time", ("datetime", "data-time", "title"))),
                text=html_text(body_node), links=links_of(body_node, base), snapshot=body,
                snapshot_url=url, fetched_at=fetched_at))
        if page.truncated:
            # Past the parse caps the posts' elements are gone but their text is not: it
            # sits in whatever element was open, maybe outside every post. What the posts
            # did not take is one more document, so a digest a page pushes past the caps
            # is still read.
            cut_out(posts)
            rest = html_text(page)
            if rest:
                docs.append(Document(
                    target=self.target.name, key=f"{page_url}#past-parse-caps", url=page_url,
                    text=rest, links=links_of(page, base), snapshot=body, snapshot_url=url,
                    fetched_at=fetched_at))
        return _Page(docs, [], next_url, posts=len(posts))

    def select_node(self, node: HtmlPage | Node, name: str) -> HtmlPage | Node | None:
        """The element a named selector picks within `node` (the node itself for a bare
        `::attr(...)`), or None when the selector is not set or matches nothing."""
        spec = self.specs.get(name)
        if spec is None:
            return None
        css, _ = spec
        return self.pattern(css).select_one(node) if css else node

    def value(self, node: HtmlPage | Node, name: str, attrs: tuple[str, ...] = ()) -> str | None:
        """A named selector's value within `node`: the `::attr(...)` it names, else the
        first of `attrs` present, else the element's text (whitespace collapsed)."""
        element = self.select_node(node, name)
        if element is None:
            return None
        attr = self.specs[name][1]
        for candidate in (attr,) if attr else attrs:
            raw = _element(element).get(candidate)
            if raw and raw.strip():
                return " ".join(raw.split())
        if attr:
            return None
        # node_text's pieces, stripped and joined by spaces, then collapsed: the same words
        # as splitting the pieces joined by a space, with one pass instead of two.
        return " ".join(" ".join(text_pieces(element)).split()) or None

    def _anchor(self, post: Node) -> str | None:
        anchor = self.value(post, "post_id") if "post_id" in self.specs else None
        if not anchor:
            raw = post.get("id")
            anchor = str(raw).strip() if raw else None
        if not anchor:
            return None
        anchor = anchor.lstrip("#")
        # `split() != [anchor]`: the anchor holds whitespace (a C scan, not a Python loop).
        if not anchor or len(anchor) > MAX_ANCHOR or anchor.split() != [anchor]:
            return None
        return anchor

    def _next(self, page: HtmlPage, name: str, base: str) -> str | None:
        element = self.select_node(page, name)
        if element is None:
            return None
        return self._link(_element(element).get(self.specs[name][1] or "href"), base)

    @staticmethod
    def _link(href: str | None, base: str) -> str | None:
        href = (href or "").strip()
        if not href or href.startswith("#"):
            return None
        absolute = safe_urljoin(base, href)
        # Not base.http_url: this reads the scheme as urllib does (control characters and
        # tabs dropped), and urldefrag below cleans the link the same way.
        if not absolute or urlsplit(absolute).scheme not in ("http", "https"):
            return None
        return urldefrag(absolute).url
