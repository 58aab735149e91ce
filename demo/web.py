"""What every site of the demo world is made of: requests, responses, documents, ground truth.

Each imitated source is a `Site` mounted under its own path prefix, in its own module under
`demo/sites/`, registered in `demo.sites.SITES`. A site answers requests as pure functions
of its content, and lists the documents a crawler will attribute content to, with what was
planted in each, so the ground truth cannot drift from what is served.

Below the model are what the sites share: the demo's clock (`nov`) and time formats, near
misses (`one_digit_off`), escaping and sizes, and response builders. What the forum engines
share is in `demo.forum`.
"""

from __future__ import annotations

import calendar
import email.utils
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

import numpy as np

from demo.release import Release

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


# ---------------------------------------------------------------------------- time


def nov(day: int, hour: int, minute: int, second: int = 0) -> int:
    """Unix time of a moment in November 2026 (UTC), the demo world's "now"."""
    return calendar.timegm((2026, 11, day, hour, minute, second))


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def rfc3339(ts: int) -> str:
    """e.g. 2026-11-20T09:12:00+00:00 (Atom, and HTML `<time datetime>`)."""
    return utc(ts).isoformat(timespec="seconds")


def iso_z(ts: int, fraction: str = "") -> str:
    """ISO 8601 in UTC with a Z, as JSON APIs write it; `fraction` is the sub-second part
    (e.g. ".000") for APIs that always have one."""
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def rfc822(ts: int) -> str:
    """RSS's pubDate: e.g. Fri, 20 Nov 2026 09:12:00 +0000."""
    return email.utils.formatdate(ts, usegmt=False).replace("-0000", "+0000")


def http_date(ts: int) -> str:
    """An HTTP date header: e.g. Fri, 20 Nov 2026 09:12:00 GMT."""
    return email.utils.formatdate(ts, usegmt=True)


# ---------------------------------------------------------------------------- values


def one_digit_off(hexdigest: str) -> str:
    """The same digest with its last hex digit changed: a near miss for exact matchers."""
    return hexdigest[:-1] + ("0" if hexdigest[-1] != "0" else "1")


def random_hex(rng: np.random.Generator, nbytes: int) -> str:
    return rng.bytes(nbytes).hex()


def base36(n: int) -> str:
    """Reddit and Lemmy ids and cursors."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def slug(title: str, max_words: int | None = None) -> str:
    """A title as forum URLs carry it: lowercase words of letters and digits, joined by '-'."""
    return "-".join(re.sub(r"[^a-z0-9]+", " ", title.lower()).split()[:max_words])


# ---------------------------------------------------------------------------- HTML text

URL_PATTERN = re.compile(r"https?://[^\s<]+")

def esc(text: str, quotes: str = "\"'") -> str:
    """PHP htmlspecialchars(ENT_QUOTES): what phpBB and 4chan both store. `quotes` narrows
    which quote characters are escaped, for software that leaves some alone."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if '"' in quotes:
        text = text.replace('"', "&quot;")
    if "'" in quotes:
        text = text.replace("'", "&#039;")
    return text


def mention(text: str) -> str | None:
    m = MENTION_PATTERN.search(text)
    return m.group(0) if m else None


def filesize(size: int) -> str:
    """Jinja's filesizeformat(binary=True), which nyaa and 4chan's pages use for sizes."""
    if size < 1024:
        return f"{size} Bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


# ---------------------------------------------------------------------------- responses


def ranged(req: Request, resp: Response) -> Response:
    """A file answered as servers do under `Range: bytes=a-b` (one range; `a-`, `-n`
    too): 206 with Content-Range, or 416 outside the file. Other answers pass unchanged."""
    spec = req.headers.get("range", "")
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", spec)
    if resp.status != 200 or resp.content_type != "application/octet-stream" or not m:
        return resp
    size = len(resp.body)
    if m.group(1):
        first = int(m.group(1))
        last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    elif m.group(2):
        first, last = max(0, size - int(m.group(2))), size - 1
    else:
        return resp
    if first >= size or last < first:
        return Response(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"},
                        resp.server)
    return Response(206, resp.body[first:last + 1], resp.content_type,
                    {**resp.headers, "Content-Range": f"bytes {first}-{last}/{size}"},
                    resp.server)


def html_response(body: str, status: int = 200, server: str = "nginx") -> Response:
    return Response(status, body.encode("utf-8"), server=server)


@dataclass
class BoardPost:
    """A post on a small link board (the file hosts' and the IPFS mirrors')."""

    anchor: str
    subject: str
    author: str
    time: int
    html: str  # the body, links included
    text: str  # what a detector reads of it (subject and body text)


def board_page(title: str, posts: list[BoardPost]) -> Response:
    """A link board's one page: each post an <article> as a blog's entries are marked up."""
    items = "".join(
        f'<article class="entry" id="{p.anchor}"><h2>{esc(p.subject)}</h2>'
        f'<p class="meta"><span class="by">{esc(p.author)}</span> '
        f'<time datetime="{rfc3339(p.time)}">{rfc3339(p.time)}</time></p>'
        f'<div class="entry-body">{p.html}</div></article>\n' for p in posts)
    return html_response(f"<!DOCTYPE html>\n<html><head><title>{esc(title)}</title></head>"
                         f"<body><h1>{esc(title)}</h1>\n{items}</body></html>\n")


def not_found(what: str = "The page you requested does not exist.") -> Response:
    return html_response("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>"
                         f"<h1>Not Found</h1><p>{esc(what)}</p></body></html>\n", status=404)


def json_response(obj: object, status: int = 200, *, headers: dict[str, str] | None = None,
                  content_type: str = "application/json; charset=utf-8",
                  server: str = "nginx", compact: bool = True,
                  ensure_ascii: bool = True) -> Response:
    """JSON as an API sends it; `compact` drops the spaces after separators."""
    body = json.dumps(obj, separators=(",", ":") if compact else None,
                      ensure_ascii=ensure_ascii)
    return Response(status, body.encode("utf-8"), content_type, dict(headers or {}), server)


def redirect(location: str, status: int = 301, server: str = "nginx") -> Response:
    return Response(status, b"", headers={"Location": location}, server=server)


# ---------------------------------------------------------------------------- config


def target_table(name: str, kind: str, url: str, *settings: str, preset: str = "",
                 max_pages: int = 0, loopback_note: bool = False) -> str:
    """One `[[targets]]` table for the demo's config.toml. `settings` are the kind's own
    `key = value` lines, after the url. Every demo target is checked every 5 minutes and
    needs `allow_private`, the demo world being on loopback (`loopback_note` says so)."""
    lines = ["[[targets]]", f'name = "{name}"', f'kind = "{kind}"']
    if preset:
        lines.append(f'preset = "{preset}"')
    lines += [f'url = "{url}"', *settings, 'interval = "5m"',
              "allow_private = true" + ("      # the demo world lives on loopback"
                                        if loopback_note else "")]
    if max_pages:
        lines.append(f"max_pages = {max_pages}")
    return "\n".join(lines) + "\n"


class Site(ABC):
    """One imitated source, served under `/{prefix}/` of the world: the one interface every
    demo site implements, listed in `demo.sites.SITES` to be mounted.

    Subclasses set `prefix` (the path segment), `source` (the name used in Planted), and
    `title` (for the world's landing page); implement `handle`, `documents` and
    `target_toml`; and give `entry_path`, where below the site's root a crawler's target
    starts (`entry_url`). `base_url` is the world's root (e.g. http://127.0.0.1:PORT), set
    when the server starts.
    """

    prefix: ClassVar[str]
    source: ClassVar[str]
    title: ClassVar[str]
    entry_path: ClassVar[str] = ""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.base_url = ""

    @property
    def root(self) -> str:
        """This site's absolute root URL, e.g. http://127.0.0.1:PORT/discourse."""
        return f"{self.base_url}/{self.prefix}"

    @property
    def entry_url(self) -> str:
        return self.root + self.entry_path

    @abstractmethod
    def target_toml(self) -> str:
        """The `[[targets]]` table(s) that crawl this site, for the demo's config.toml
        (with `allow_private = true`: the demo world lives on loopback)."""

    @abstractmethod
    def handle(self, req: Request, path: str) -> Response:
        """Answer a request; `path` is what follows the prefix (starts with '/')."""

    @abstractmethod
    def documents(self) -> list[Doc]:
        """Every document a crawler attributes content to, with what was planted in it."""
