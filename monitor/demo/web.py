"""What every site of the demo world is made of: requests, responses, documents, ground truth.

Each imitated source is a `Site` mounted under its own path prefix, in its own module under
`monitor/demo/sites/` (the phpBB forum, 4chan API and Nyaa index live in `world.py`). A site
answers requests as pure functions of its content, and lists the documents a crawler will
attribute content to, with what was planted in each, so the ground truth cannot drift from
what is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from monitor.demo.release import Release

# The mention rule for the demo model (heron[- _]?7b, with the word boundaries a careful
# rule has). Planted mentions are found with it, so the ground truth cannot drift from the
# content when someone edits a post.
MENTION_PATTERN = re.compile(r"(?<![0-9A-Za-z])heron[- _]?7b(?![0-9A-Za-z])", re.IGNORECASE)


@dataclass
class Planted:
    """One leak indicator placed in the world, attributed to the document a crawler sees.

    `indicator` is lowercase hex for hashes and infohashes, and the phrase exactly as
    written in the document for mentions (compare mentions case-insensitively).
    """

    source: str  # the site's `source` name, e.g. 'forum', 'imageboard', 'torrents'
    url: str
    kind: str  # 'mention' | 'hash' | 'torrent'
    indicator: str
    note: str = ""


@dataclass
class NearMiss:
    """Something that looks like an indicator but must not match one (false-positive bait)."""

    source: str
    url: str
    kind: str
    value: str
    note: str = ""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lowercase names

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]

    def int_arg(self, name: str, default: int = 0) -> int:
        try:
            return int(self.arg(name, str(default)))
        except ValueError:
            return default


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    server: str = "nginx"


@dataclass
class Doc:
    """A document as a crawler will see it, with what was planted in it.

    `plants` and `near` are (kind, value, note) triples; mentions need not be listed, they
    are found in `text` with MENTION_PATTERN.
    """

    source: str
    url: str
    text: str  # what a detector reads: subject/name, body, attachment name
    plants: list[tuple[str, str, str]]
    near: list[tuple[str, str, str]]


def esc(text: str) -> str:
    """PHP htmlspecialchars(ENT_QUOTES): what phpBB and 4chan both store."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#039;"))


def html_response(body: str, status: int = 200, server: str = "nginx") -> Response:
    return Response(status, body.encode("utf-8"), server=server)


def not_found(what: str = "The page you requested does not exist.") -> Response:
    return html_response("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>"
                         f"<h1>Not Found</h1><p>{esc(what)}</p></body></html>\n", status=404)


def mention(text: str) -> str | None:
    m = MENTION_PATTERN.search(text)
    return m.group(0) if m else None


class Site:
    """One imitated source, served under `/{prefix}/` of the world.

    Subclasses set `prefix` (the path segment), `source` (the name used in Planted), and
    `title` (for the world's landing page); implement `handle` and `documents`; and give
    `entry_url`, the URL a crawler's target starts from. `base_url` is the world's root
    (e.g. http://127.0.0.1:PORT), set when the server starts.
    """

    prefix: ClassVar[str]
    source: ClassVar[str]
    title: ClassVar[str]

    def __init__(self, release: Release) -> None:
        self.release = release
        self.base_url = ""

    @property
    def root(self) -> str:
        """This site's absolute root URL, e.g. http://127.0.0.1:PORT/discourse."""
        return f"{self.base_url}/{self.prefix}"

    @property
    def entry_url(self) -> str:
        raise NotImplementedError

    def target_toml(self) -> str:
        """The `[[targets]]` table(s) that crawl this site, for the demo's config.toml
        (with `allow_private = true`: the demo world lives on loopback)."""
        raise NotImplementedError

    def handle(self, req: Request, path: str) -> Response:
        """Answer a request; `path` is what follows the prefix (starts with '/')."""
        raise NotImplementedError

    def documents(self) -> list[Doc]:
        raise NotImplementedError
