"""What the demo's three forum engines (phpBB, vBulletin, XenForo) share, written once.

A board is threads of posts; a post is blocks of text, code and quotes, and carries what was
planted in it. The shared `ForumSite` derives the ground truth from the posts (one document
per post), finds threads and posts, and pages a thread's posts; an engine adds only its own
markup (pages, blocks, the text a crawler reads from a post) and URLs.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from demo.web import URL_PATTERN, Doc, Site, esc

# kind, value, note: what `Doc.plants` and `Doc.near` hold.
Indicator = tuple[str, str, str]


@dataclass(frozen=True)
class Text:
    """Plain post text; each forum renders newlines and bare URLs its own way."""

    text: str


@dataclass(frozen=True)
class Code:
    """A [code] block."""

    text: str


@dataclass(frozen=True)
class Quote:
    """A [quote] of another post. `time` is the quoted post's, for forums whose cite line
    shows it (phpBB)."""

    author: str
    post_id: int
    text: str
    time: int = 0


Block = Text | Code | Quote


@dataclass
class ForumPost:
    id: int
    author: str
    time: int
    body: list[Block]
    plants: list[Indicator] = field(default_factory=list)
    near: list[Indicator] = field(default_factory=list)


def page_count(total: int, per_page: int) -> int:
    """Pages a listing of `total` items takes; an empty listing is still one page."""
    return max(1, math.ceil(total / per_page))


PostT = TypeVar("PostT", bound=ForumPost)


@dataclass
class ForumThread(Generic[PostT]):
    """A thread (topic) of an engine's posts; subclasses set `per_page`, the board's posts
    per page."""

    id: int
    title: str
    views: int
    posts: list[PostT]

    per_page: ClassVar[int]

    @property
    def pages(self) -> int:
        return page_count(len(self.posts), self.per_page)

    def page_of(self, index: int) -> int:
        """The page (from 1) that shows the thread's `index`-th post (from 0)."""
        return index // self.per_page + 1

    def clamp(self, page: int) -> int:
        """A requested page as the board shows it: the first below 1, the last past the end."""
        return min(max(1, page), self.pages)

    def on_page(self, page: int) -> list[PostT]:
        return self.posts[(page - 1) * self.per_page:page * self.per_page]


def post_html(text: str, link_attrs: str, br: str, escape: Callable[[str], str] = esc) -> str:
    """Post text as forum software renders it: escaped, bare URLs made links (`link_attrs`
    follow the href), and `br` before each newline."""
    linked = URL_PATTERN.sub(lambda m: f'<a href="{m.group(0)}"{link_attrs}>{m.group(0)}</a>',
                             escape(text))
    return linked.replace("\n", br + "\n")


# Any: a site is generic over its engine's thread type, whatever post type that holds.
ThreadT = TypeVar("ThreadT", bound=ForumThread[Any])


class ForumSite(Site, Generic[ThreadT]):
    """A forum engine's site: `threads` in the board's listing order. An engine gives the
    permalink and the text a crawler reads for each post, and renders each kind of block."""

    threads: list[ThreadT]

    # ---------------------------------------------------------------- ground truth

    # A post is given as its thread and index, so an engine sees its own post type.

    @abstractmethod
    def post_url(self, thread: ThreadT, index: int) -> str:
        """The absolute URL a crawler attributes the post to."""

    @abstractmethod
    def post_heading(self, thread: ThreadT, index: int) -> list[str]:
        """What a crawler reads before the post's blocks (a subject, a title), if anything."""

    @abstractmethod
    def block_text(self, block: Block) -> str:
        """A block as text, with the words the engine puts around code and quotes."""

    def documents(self) -> list[Doc]:
        return [Doc(self.source, self.post_url(t, i),
                    "\n".join(self.post_heading(t, i)
                              + [self.block_text(b) for b in post.body]),
                    post.plants, post.near)
                for t in self.threads for i, post in enumerate(t.posts)]

    # ---------------------------------------------------------------- lookups

    def thread(self, thread_id: int) -> ThreadT | None:
        return next((t for t in self.threads if t.id == thread_id), None)

    def locate(self, post_id: int) -> tuple[ThreadT, int] | None:
        """The thread holding a post, and the post's index in it (permalinks need both)."""
        for t in self.threads:
            for i, post in enumerate(t.posts):
                if post.id == post_id:
                    return t, i
        return None

    # ---------------------------------------------------------------- markup

    @abstractmethod
    def text_html(self, text: str) -> str: ...

    @abstractmethod
    def code_html(self, block: Code) -> str: ...

    @abstractmethod
    def quote_html(self, block: Quote) -> str: ...

    def block_html(self, block: Block) -> str:
        if isinstance(block, Text):
            return self.text_html(block.text)
        if isinstance(block, Code):
            return self.code_html(block)
        return self.quote_html(block)

    def body_html(self, post: ForumPost) -> str:
        return "\n".join(self.block_html(b) for b in post.body)
