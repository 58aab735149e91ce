"""What every source adapter is: a target's config in, documents out.

An adapter knows one shape of site (a phpBB forum, a 4chan-style API, a torrent index). It
fetches through the shared Fetcher, parses off the event loop, and yields Documents; it
neither detects nor stores. Its `cursor` is saved by the crawler after a successful run so
the next run can skip what has not moved.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable, ClassVar, TypeVar
from urllib.parse import urljoin

from bs4 import BeautifulSoup, NavigableString, PageElement, Tag

from monitor.config import Target
from monitor.fetch import Fetcher
from monitor.models import Document

T = TypeVar("T")


class SourceError(Exception):
    """A page that does not have the shape the target's selectors expect."""


class Source:
    kind: ClassVar[str]
    # Preset name -> selectors; an operator's `selectors` table overrides single entries.
    presets: ClassVar[dict[str, dict[str, str]]] = {}
    selector_keys: ClassVar[tuple[str, ...]] = ()
    # Which kind-specific target keys (config.KIND_SPECIFIC_KEYS) this kind takes.
    option_keys: ClassVar[frozenset[str]] = frozenset()
    required_selectors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, target: Target, fetcher: Fetcher, cursor: dict[str, Any] | None = None):
        self.target = target
        self.fetcher = fetcher
        self.cursor: dict[str, Any] = dict(cursor or {})
        self.selectors = self.resolve_selectors(target.preset, target.selectors)

    @classmethod
    def resolve_selectors(cls, preset: str | None, selectors: dict[str, str]) -> dict[str, str]:
        base = dict(cls.presets.get(preset or "", {})) if cls.presets else {}
        base.update(selectors)
        return base

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with a target table's kind-specific options, as (key, message)."""
        problems: list[tuple[str, str]] = []
        preset = options.get("preset")
        if preset is not None and preset not in cls.presets:
            known = ", ".join(cls.presets) or "none"
            problems.append(("preset", f"unknown preset {preset!r} for kind {cls.kind!r} (known: {known})"))
            return problems
        if options.get("selectors") and not cls.selector_keys:
            problems.append(("selectors", f"kind {cls.kind!r} takes no selectors"))
        for key in options.get("selectors", {}):
            if key not in cls.selector_keys:
                close = difflib.get_close_matches(key, cls.selector_keys, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append((f"selectors.{key}", f"unknown selector '{key}'{hint}"))
        resolved = cls.resolve_selectors(preset, options.get("selectors", {}))
        for key in cls.required_selectors:
            if key not in resolved:
                problems.append(("selectors", f"needs selector '{key}' (or a preset: "
                                              f"{', '.join(cls.presets) or 'none'})"))
        for key, css in resolved.items():
            try:
                BeautifulSoup("<p></p>", "lxml").select(css)
            except Exception as exc:  # soupsieve raises its own SelectorSyntaxError
                problems.append((f"selectors.{key}", f"invalid CSS selector {css!r}: "
                                                     f"{str(exc).splitlines()[0]}"))
        return problems

    def select(self, node: Tag, name: str) -> Tag | None:
        """The first element matching the named selector, or None when it is not set."""
        css = self.selectors.get(name)
        return node.select_one(css) if css else None

    def documents(self) -> AsyncIterator[Document]:
        raise NotImplementedError


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Parsing costs tens of milliseconds a page; keep it off the event loop."""
    return await asyncio.to_thread(fn, *args)


_SPACE = re.compile(r"[ \t\r\f\v]+")
# Elements a browser puts on their own lines; without a break their text fuses with the
# neighbours' ("Select all" + a code block's first line), hiding words from boundary rules.
_BLOCKS = {"address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption",
           "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol",
           "p", "pre", "section", "table", "td", "th", "tr", "ul"}
_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_text(node: Tag | str) -> str:
    """Readable text of an HTML fragment: line breaks kept, <wbr> joined (4chan splits long
    words such as magnet links with it), runs of spaces collapsed."""
    if isinstance(node, str):
        node = BeautifulSoup(node, "lxml")
    # One iterative walk, linear in the tree however deep it is, leaving the tree intact.
    # A <wbr> contributes only its children: lxml does not know it is void and nests the
    # rest of the post inside it, so dropping the tag must not drop what follows.
    parts: list[str] = []
    stack: list[PageElement | None] = [node]  # None closes a block
    while stack:
        item = stack.pop()
        if item is None:
            parts.append("\n")
        elif isinstance(item, NavigableString):
            if type(item) is NavigableString:  # not comments, scripts, styles, doctypes
                parts.append(str(item))
        elif isinstance(item, Tag):
            if item.name == "br":
                parts.append("\n")
                continue
            if item.name in _BLOCKS:
                parts.append("\n")
                stack.append(None)
            stack.extend(reversed(item.contents))
    text = "".join(parts)
    lines = (_SPACE.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def links_of(node: Tag, base_url: str) -> list[str]:
    out: list[str] = []
    for a in node.select("a[href]"):
        href = str(a.get("href", "")).strip()
        if href and not href.startswith("#") and not href.lower().startswith("javascript:"):
            magnet = href.lower().startswith("magnet:")
            absolute = href if magnet else safe_urljoin(base_url, href)
            if absolute:
                out.append(absolute)
    return out


def safe_urljoin(base_url: str, href: str) -> str | None:
    """urljoin, or None for an href urllib cannot parse (e.g. `http://[broken`)."""
    try:
        return urljoin(base_url, href)
    except ValueError:
        return None


def epoch_iso(ts: int) -> str | None:
    """Unix seconds as the ISO 8601 UTC text the store uses everywhere; None for a value no
    calendar holds (hostile or broken input)."""
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None
