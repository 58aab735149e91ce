"""What every source adapter is: a target's config in, documents out.

An adapter knows one shape of site (a phpBB forum, a 4chan-style API, a torrent index). It
fetches through the shared Fetcher, parses through `off_loop` (in a parse thread, unless
the markup is small), and yields Documents (through `pages()`, grouped as the responses they
came in); it neither detects nor stores. Its `cursor` is saved by the crawler after a
successful run so the next run can skip what has not moved.
"""

from __future__ import annotations

import difflib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeGuard
from urllib.parse import urljoin, urlsplit

from monitor.config import Target
from monitor.fetch import Fetcher, FetchError
from monitor.models import Document, KnownDigest

# The parsers and their helpers live in monitor.parsing; adapters import them from here
# with the rest.
from monitor.parsing import HtmlPage, Node, Selector, compile_css
from monitor.parsing import html_text as html_text
from monitor.parsing import off_loop as off_loop
from monitor.parsing import parse_html as parse_html


class SourceError(Exception):
    """A page that does not have the shape the target's selectors expect."""


class Source(ABC):
    kind: ClassVar[str]
    # Preset name -> selectors; an operator's `selectors` table overrides single entries.
    presets: ClassVar[dict[str, dict[str, str]]] = {}
    selector_keys: ClassVar[tuple[str, ...]] = ()
    # Which kind-specific target keys (config.KIND_SPECIFIC_KEYS) this kind takes.
    option_keys: ClassVar[frozenset[str]] = frozenset()
    required_selectors: ClassVar[tuple[str, ...]] = ()
    # What the target's `url` may start with (`dht://` names a DHT node, not a page).
    url_schemes: ClassVar[tuple[str, ...]] = ("http", "https")
    # A source that watches the registered torrents (the DHT) is handed their infohashes.
    watches_infohashes: ClassVar[bool] = False

    def __init__(self, target: Target, fetcher: Fetcher, cursor: dict[str, Any] | None = None,
                 *, infohashes: Sequence[KnownDigest] = ()):
        self.target = target
        self.fetcher = fetcher
        self.cursor: dict[str, Any] = dict(cursor or {})
        self.infohashes = list(infohashes)
        self.selectors = self.resolve_selectors(target.preset, target.selectors)
        self._patterns: dict[str, Selector] = {}

    def pattern(self, css: str) -> Selector:
        """`css` compiled, once per source (a run of one target), not on every page and
        for every post it is applied to."""
        compiled = self._patterns.get(css)
        if compiled is None:
            compiled = self._patterns[css] = Selector(css)  # checked with the config
        return compiled

    @classmethod
    def resolve_selectors(cls, preset: str | None, selectors: dict[str, str]) -> dict[str, str]:
        base = dict(cls.presets.get(preset or "", {})) if cls.presets else {}
        base.update(selectors)
        return base

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with a target table's kind-specific options, as (key, message)."""
        problems: list[tuple[str, str]] = []
        url = options.get("url")
        if isinstance(url, str) and urlsplit(url).scheme.lower() not in cls.url_schemes:
            schemes = " or ".join(f"{s}://" for s in cls.url_schemes)
            problems.append(("url", f"kind {cls.kind!r} takes a {schemes} URL, got {url!r}"))
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
            problem = css_problem(css)
            if problem:
                problems.append((f"selectors.{key}", problem))
        return problems

    def select(self, node: HtmlPage | Node, name: str) -> Node | None:
        """The first element matching the named selector, or None when it is not set."""
        css = self.selectors.get(name)
        return self.pattern(css).select_one(node) if css else None

    @abstractmethod
    def documents(self) -> AsyncIterator[Document]:
        """The target's documents, fetched and parsed now (an async generator)."""

    async def pages(self) -> AsyncIterator[list[Document]]:
        """The same documents, grouped as the responses they were read from: the crawler
        records each group in one transaction. A source that reads whole pages of posts
        (a forum) yields each page's documents at once; by default each document is its
        own group."""
        async for doc in self.documents():
            yield [doc]


def css_problem(css: str) -> str | None:
    """Why a CSS selector will not compile, as a config problem; None when it does.
    Checked when the config loads, by the engine that runs it (cssselect, which does not
    know soupsieve's extensions), so a typo fails there and not on the first crawl."""
    try:
        compile_css(css)
    except Exception as exc:  # cssselect's SelectorError, lxml's XPathError
        return f"invalid CSS selector {css!r}: {str(exc).splitlines()[0] or type(exc).__name__}"
    return None


def template_problems(options: dict[str, Any], **sample: int) -> list[tuple[str, str]]:
    """Problems with a target's `document_url` template, which may use only the fields in
    `sample` (formatted with those values to prove it): a bad template would otherwise
    fail every document of the run."""
    template = options.get("document_url")
    if not isinstance(template, str):
        return []
    try:
        template.format(**sample)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        fields = " and ".join(f"{{{name}}}" for name in sample)
        return [("document_url", f"invalid template {template!r} "
                                 f"({type(exc).__name__}: {exc}); it may use only {fields}")]
    return []


def links_of(node: HtmlPage | Node, base_url: str) -> list[str]:
    """The links of the <a href> elements in `node` (below it, or anywhere in a page), in
    document order. lxml's own iteration, not a selector: an XPath call costs more than
    walking a post, and this runs for every post."""
    out: list[str] = []
    anchors = node.root.iter("a") if isinstance(node, HtmlPage) else node.iterdescendants("a")
    for a in anchors:
        href = a.get("href")
        if href is None:
            continue
        href = href.strip()
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
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def _as_utc(moment: datetime) -> datetime | None:
    """An aware datetime in UTC, a naive one taken as UTC; None when the conversion leaves
    the calendar (year 1 with a positive offset, year 9999 with a negative one)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def utc_iso(moment: datetime | None) -> str | None:
    """A datetime (naive ones taken as UTC) as the store's ISO 8601 UTC text; None for None
    or a moment UTC cannot hold."""
    utc = _as_utc(moment) if moment is not None else None
    return utc.isoformat(timespec="seconds") if utc is not None else None


def parse_iso_time(value: Any) -> datetime | None:
    """An ISO 8601 / RFC 3339 timestamp from a JSON API as an aware UTC datetime; None for
    anything else. `Z` or `z` means UTC (RFC 3339 allows both; Python 3.11 reads only `Z`),
    and a naive time (Lemmy 0.18) is taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return _as_utc(moment)


def parse_json(body: bytes | str, url: str) -> Any:
    """A JSON answer, or a one-line SourceError naming `url` (pass it redacted when it may
    carry a secret): a JSON API that answers an HTML error page must fail the target, and
    a hostile answer nested thousands deep must not surface as a RecursionError."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SourceError(f"{url}: not valid JSON ({exc})") from None
    except RecursionError:
        raise SourceError(f"{url}: JSON nested too deeply to read") from None


def json_array(data: Any, name: str, url: str,
               reason: tuple[str, str] | None = None) -> list[Any]:
    """`data[name]`, the array a JSON API's answer object must carry; otherwise a one-line
    SourceError. `reason` = (field, who) quotes the field the API explains a refusal in,
    e.g. ("error", "the server says"), so the operator sees why and not only that."""
    items = data.get(name) if isinstance(data, dict) else None
    if isinstance(items, list):
        return items
    detail = ""
    if reason is not None:
        field, who = reason
        said = data.get(field) if isinstance(data, dict) else None
        detail = f" ({who}: {said[:200]!r})" if isinstance(said, str) else ""
    raise SourceError(f"{url}: expected an object with a '{name}' array{detail}")


def is_int(value: object) -> TypeGuard[int]:
    """A JSON integer: `true` decodes to a bool, which Python counts as an int."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_object(value: object) -> dict[str, Any]:
    """A JSON field that should be an object; anything else reads as an empty one."""
    return value if isinstance(value, dict) else {}


def str_or_empty(value: object) -> str:
    """A JSON field that should be a string; anything else reads as empty."""
    return value if isinstance(value, str) else ""


# Bare links in Markdown (`[text](url "title")`, `<url>`, a plain URL): a post body that
# comes as Markdown has no <a> elements for links_of to read.
_MARKDOWN_LINK = re.compile(r"(?:https?://|magnet:\?)[^\s<>()\[\]\"'`]+")


def markdown_links(text: str) -> list[str]:
    return _MARKDOWN_LINK.findall(text)


def http_url(base_url: str, href: Any) -> str | None:
    """`href` made absolute against `base_url` when it is an http(s) URL; None for anything
    else (javascript:, data:, junk, a non-string from JSON), so a hostile page cannot hand
    the crawler a link it must not follow or show."""
    if not isinstance(href, str) or not href.strip():
        return None
    absolute = safe_urljoin(base_url, href.strip())
    if absolute and absolute.split(":", 1)[0].lower() in ("http", "https"):
        return absolute
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str | None, int | None] | None:
    """(scheme, host, port) with the scheme's default port filled in, so `https://a/` and
    `https://a:443/` compare equal; None for a URL that does not parse (a port that is not
    a number, a broken IPv6 literal)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme.lower())
    return parts.scheme.lower(), parts.hostname, port


_HTTP_STATUS = re.compile(r"^HTTP (\d{3}) ")


def http_status(exc: FetchError) -> int | None:
    """The HTTP status a failed request got; None if it got none. Read from the message
    too, because not every FetchError carries `status` (giving up on a long Retry-After
    says only "HTTP 429 from ...")."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    m = _HTTP_STATUS.match(str(exc))
    return int(m.group(1)) if m else None
