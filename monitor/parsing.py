"""The one place crawled HTML and XML are parsed, and the one way parsing leaves the loop.

Crawled pages come from hosts that may be hostile. A tree parser builds objects for every
element it sees, so a 20 MB page of tiny elements would cost gigabytes, and a page nested
thousands deep makes BeautifulSoup's tree building (and every CSS selector that walks
ancestors) superlinear. So both parsers count what they build:

- HTML keeps at most MAX_HTML_ELEMENTS elements, nested at most MAX_HTML_DEPTH deep. Past
  either cap the tree stops growing but the text keeps flowing into the element that is
  open, so a digest or a mention placed after the cap still reaches the detectors; the page
  is logged once (`html_truncated`).
- XML (feeds, Torznab) is refused with a one-line SourceError past MAX_XML_ELEMENTS or
  MAX_XML_DEPTH: a feed that large is not a feed, and half a feed would be read as all of it.

Parsing runs in a thread of its own (`off_loop`) so the event loop keeps serving fetches
and signals. When the awaiting task is cancelled (the run timeout, SIGTERM), the thread is
interrupted too: ParseCancelled is raised inside it at its next Python instruction, and the
tree builder and the extraction loops run Python for every element, so it stops within
milliseconds instead of running on, abandoned, for minutes and holding the process open.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import ctypes
import itertools
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from xml.etree.ElementTree import Element, TreeBuilder

import structlog
from bs4 import BeautifulSoup, Tag
from bs4.builder._lxml import LXMLTreeBuilder
from defusedxml.ElementTree import DefusedXMLParser

log = structlog.get_logger("weightwatch.parsing")

T = TypeVar("T")

# Real forum and index pages hold a few thousand elements and nest a few dozen deep (the
# demo world's boards: at most 241 elements, 20 deep); ten times that leaves room for odd
# boards, while a tree at the cap costs ~45 MB (870 bytes an element, measured).
MAX_HTML_ELEMENTS = 50_000
MAX_HTML_DEPTH = 256
# Real elements carry a handful of attributes; a hostile one carries a million (10 MB,
# 400 MB as bs4's dicts). The first ones are kept.
MAX_HTML_ATTRIBUTES = 100
# lxml hands the tree builder every attribute of a start tag in one dict before any cap can
# act (2 M attributes in a 20 MB tag: 500 MB), so a start tag longer than this keeps only
# its name. Real tags are shorter except inline data: URIs, which nothing here reads; lxml
# itself reads a "<x" that is never closed as a tag, so no page text is lost.
MAX_TAG_BYTES = 65_536
_LONG_TAG = re.compile(rf"<([A-Za-z][^\s/<>]*+)[^<>]{{{MAX_TAG_BYTES},}}")
_LONG_TAG_BYTES = re.compile(_LONG_TAG.pattern.encode())
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
              (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# A Torznab answer of 100 results has ~3,000 elements, a feed of 500 entries ~10,000.
MAX_XML_ELEMENTS = 200_000
MAX_XML_DEPTH = 64
# Parses at once, process-wide: each may hold a tree of the caps' size.
PARSE_SLOTS = 2
# How long a cancelled task waits for its parse thread to stop before giving up on it.
STOP_WAIT = 3.0


# Elements a browser puts on their own lines; without a break their text fuses with the
# neighbours' ("Select all" + a code block's first line), hiding words from boundary rules.
BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul"})


class ParseCancelled(BaseException):
    """Raised inside a parse thread whose task was cancelled. A BaseException, so no
    `except Exception` in a parser or an adapter can swallow it."""


class XMLTooLarge(ValueError):
    """An XML document past the element or depth cap (the callers word it as SourceError)."""


# ------------------------------------------------------------------------------ HTML


class _BoundedLXMLBuilder(LXMLTreeBuilder):
    """bs4's lxml builder, keeping elements only while under the caps. lxml reports start
    and end events properly nested, so every event after the first refused start until
    its end is inside it: a counter of open refused elements tells which ends to drop."""

    def __init__(self, max_elements: int, max_depth: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_elements, self.max_depth = max_elements, max_depth
        self._reset()

    def _reset(self) -> None:
        self.elements = self.depth = self.dropped = self.open_dropped = 0
        self.dropped_attributes = 0
        self.max_seen_depth = 0
        self.hidden = 0  # open refused <script>/<style>: their text is not page text

    def feed(self, markup: Any) -> None:
        self._reset()  # BeautifulSoup retries with other encodings on the same builder
        super().feed(markup)

    def start(self, tag: Any, attrib: Any, nsmap: Any = {}) -> None:  # noqa: B006 (bs4's)
        if self.open_dropped or self.elements >= self.max_elements \
                or self.depth >= self.max_depth:
            self.open_dropped += 1
            self.dropped += 1
            self.max_seen_depth = max(self.max_seen_depth, self.depth + self.open_dropped)
            if tag in ("script", "style", "template"):
                self.hidden += 1
            self._break(tag)
            return
        self.elements += 1
        self.depth += 1
        if len(attrib) > MAX_HTML_ATTRIBUTES:
            self.dropped_attributes += len(attrib) - MAX_HTML_ATTRIBUTES
            attrib = dict(itertools.islice(attrib.items(), MAX_HTML_ATTRIBUTES))
        super().start(tag, attrib, nsmap)

    def end(self, tag: Any) -> None:
        if self.open_dropped:
            self.open_dropped -= 1
            if tag in ("script", "style", "template") and self.hidden:
                self.hidden -= 1
            self._break(tag)
            return
        self.depth -= 1
        super().end(tag)

    def _break(self, tag: Any) -> None:
        """A refused block element still ends a line, so its words do not fuse with the
        next ones (the text past a cap is read by detectors with word-boundary rules)."""
        if tag in BLOCKS or tag == "br":
            self.data("\n")

    def data(self, data: Any) -> None:
        if not self.hidden:
            super().data(data)

    def comment(self, text: Any) -> None:
        if not self.open_dropped and self.elements < self.max_elements:
            self.elements += 1
            super().comment(text)

    def pi(self, target: Any, data: Any) -> None:
        if not self.open_dropped and self.elements < self.max_elements:
            self.elements += 1
            super().pi(target, data)


def parse_html(markup: bytes | str, url: str = "", charset: str | None = None, *,
               max_elements: int | None = None, max_depth: int | None = None) -> BeautifulSoup:
    """Crawled HTML as a BeautifulSoup tree bounded by the caps (module docstring); `url`
    names the page in the once-per-page warning when the caps cut the tree."""
    builder = _BoundedLXMLBuilder(max_elements or MAX_HTML_ELEMENTS, max_depth or MAX_HTML_DEPTH)
    markup = _short_tags(markup, charset)
    soup = BeautifulSoup(markup, builder=builder,
                         from_encoding=charset if isinstance(markup, bytes) else None)
    if builder.dropped or builder.dropped_attributes:
        log.warning("html_truncated", url=url or None, kept_elements=builder.elements,
                    dropped_elements=builder.dropped, deepest=builder.max_seen_depth,
                    dropped_attributes=builder.dropped_attributes,
                    max_elements=builder.max_elements, max_depth=builder.max_depth,
                    note="text past the caps is kept in the enclosing element")
    return soup


def _short_tags(markup: bytes | str, charset: str | None) -> bytes | str:
    """`markup` with every start tag longer than MAX_TAG_BYTES cut to its name. Bytes in
    an ASCII-compatible encoding are cut as bytes; UTF-16 and UTF-32 (a BOM, or the HTTP
    charset) are decoded first, since their "<" is not the byte b"<"."""
    if isinstance(markup, bytes):
        wide = next((name for bom, name in _WIDE_BOMS if markup.startswith(bom)), None)
        if wide is None and charset:
            try:
                name = codecs.lookup(charset).name
            except LookupError:
                name = ""
            wide = name if name.startswith(("utf-16", "utf-32")) else None
        if wide is None:
            return _LONG_TAG_BYTES.sub(rb"<\1", markup)
        markup = markup.decode(wide, errors="replace")
    return _LONG_TAG.sub(r"<\1", markup)


def detach_nested(nodes: Iterable[Tag]) -> list[Tag]:
    """`nodes` (a selector's matches, in document order), each cut out of any other match
    that contains it: a post nested in a post (an unclosed <div> nests every later post)
    is then read once, as itself, instead of again as part of every post around it, so
    extraction over all matches stays linear in the page. Linear itself: each ancestor's
    verdict is looked up once, and siblings are cut by index, last first."""
    nodes = list(nodes)
    chosen = {id(node) for node in nodes}
    inside: dict[int, bool] = {}  # id of an unchosen element -> is it within a match?
    nested: list[Tag] = []
    for node in nodes:
        walked: list[Tag] = []
        parent, verdict = node.parent, False
        while parent is not None:
            known = inside.get(id(parent))
            if known is not None or id(parent) in chosen:
                verdict = known if known is not None else True
                break
            walked.append(parent)
            parent = parent.parent
        for element in walked:
            inside[id(element)] = verdict
        if verdict:
            nested.append(node)
    cut_out(nested)
    return nodes


def truncated(soup: BeautifulSoup) -> bool:
    """Whether parse_html cut this page's tree at a cap."""
    builder = soup.builder
    return isinstance(builder, _BoundedLXMLBuilder) and builder.dropped > 0


def cut_out(nodes: Iterable[Tag]) -> None:
    """Remove `nodes` from their tree in time linear in the tree (Tag.extract alone looks
    its index up among its siblings: quadratic for thousands of sibling posts)."""
    by_parent: dict[int, tuple[Tag, list[Tag]]] = {}
    for node in nodes:
        if node.parent is not None:
            by_parent.setdefault(id(node.parent), (node.parent, []))[1].append(node)
    for parent, children in by_parent.values():
        cut = {id(child) for child in children}
        positions = [i for i, child in enumerate(parent.contents) if id(child) in cut]
        for index in reversed(positions):
            parent.contents[index].extract(_self_index=index)


# ------------------------------------------------------------------------------ XML


class _CountingTreeBuilder(TreeBuilder):
    def __init__(self, max_elements: int, max_depth: int) -> None:
        super().__init__()
        self.max_elements, self.max_depth = max_elements, max_depth
        self.elements = self.depth = 0

    def start(self, tag: Any, attrs: Any) -> Element:
        self.elements += 1
        self.depth += 1
        if self.elements > self.max_elements:
            raise XMLTooLarge(f"more than {self.max_elements:,} XML elements")
        if self.depth > self.max_depth:
            raise XMLTooLarge(f"XML nested more than {self.max_depth} deep")
        return super().start(tag, attrs)

    def end(self, tag: Any) -> Element:
        self.depth -= 1
        return super().end(tag)


def parse_xml(body: bytes | str, *, max_elements: int | None = None,
              max_depth: int | None = None) -> Element:
    """defusedxml's `fromstring` (no DTD, no entities, no external references; it raises
    what that raises) with the element and depth caps: XMLTooLarge past them."""
    target = _CountingTreeBuilder(max_elements or MAX_XML_ELEMENTS, max_depth or MAX_XML_DEPTH)
    parser = DefusedXMLParser(target=target, forbid_dtd=True, forbid_entities=True,
                              forbid_external=True)
    parser.feed(body)
    root: Element = parser.close()  # defusedxml is untyped; its parser is ElementTree's
    return root


# ------------------------------------------------------------------------------ off the loop


def _async_exc(ident: int, exc: type[BaseException] | None) -> int:
    """Raise `exc` in thread `ident` at its next Python instruction (None clears a pending
    one); how many threads it reached."""
    reached: int = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None)
    return reached


class _Job:
    """One call in its own (daemon) thread, interruptible. The lock orders interrupt()
    against the thread's start and end, so ParseCancelled is raised only inside the call
    and never in a thread that has moved on; a pending one is cleared at the end."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.args, self.loop = fn, args, loop
        self.context = contextvars.copy_context()  # the target and run id for the log
        self.future: asyncio.Future[Any] = loop.create_future()
        self.lock = threading.Lock()
        self.ident: int | None = None
        self.cancelled = self.injected = self.finished = False
        self.thread = threading.Thread(target=self._run, name="weightwatch-parse", daemon=True)

    def _begin(self) -> None:
        with self.lock:
            if self.cancelled:
                raise ParseCancelled
            self.ident = threading.get_ident()

    def _end(self) -> None:
        with self.lock:
            self.finished = True
            if self.injected:
                _async_exc(self.ident or 0, None)

    def _run(self) -> None:
        ok, value = False, None
        try:
            try:
                self._begin()
                value, ok = self.context.run(self.fn, *self.args), True
            finally:
                self._end()
        except BaseException as exc:  # delivered to the awaiting task, or dropped if gone
            value = exc
        try:
            self.loop.call_soon_threadsafe(self._settle, ok, value)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for this any more

    def _settle(self, ok: bool, value: Any) -> None:
        if self.future.done():
            return
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)

    def interrupt(self) -> bool:
        """Stop the call; True if an exception was raised into a running thread."""
        with self.lock:
            self.cancelled = True
            if self.finished or self.injected or self.ident is None:
                return False
            self.injected = True
            return _async_exc(self.ident, ParseCancelled) == 1


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
    weakref.WeakKeyDictionary()


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a thread of its own, at most PARSE_SLOTS at once; cancelling the
    awaiting task stops the thread (ParseCancelled inside it) before CancelledError goes
    on, so a run timeout or a shutdown leaves no parse behind."""
    loop = asyncio.get_running_loop()
    slots = _slots.setdefault(loop, asyncio.Semaphore(PARSE_SLOTS))
    async with slots:
        job = _Job(fn, args, loop)
        job.thread.start()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            if job.interrupt():
                log.info("parse_interrupted", call=getattr(fn, "__qualname__", repr(fn)))
            done, _ = await asyncio.wait([job.future], timeout=STOP_WAIT)
            if not done:
                log.warning("parse_not_stopped", waited=STOP_WAIT,
                            note="the parse thread is left to finish on its own")
            elif not job.future.cancelled():
                job.future.exception()  # retrieved: ParseCancelled is the expected end
            raise
