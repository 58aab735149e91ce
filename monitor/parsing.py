"""The one place crawled HTML and XML are parsed, and the one way parsing leaves the loop.

HTML is parsed by libxml2 through lxml (one path for every HTML source), its CSS selectors
translated to XPath by cssselect and compiled once per target; bs4's EncodingDetector
chooses how page bytes are decoded, as it did when bs4 built the trees.

Crawled pages come from hosts that may be hostile. A tree parser builds objects for every
element it sees, so a 20 MB page of tiny elements would cost gigabytes, and a page nested
thousands deep makes every selector that walks ancestors superlinear (and libxml2 drops
whatever lies deeper than 255 levels, text included). So both parsers count what they
build:

- HTML keeps at most MAX_HTML_ELEMENTS elements, nested at most MAX_HTML_DEPTH deep. Past
  either cap the tree stops growing but the text keeps flowing into the element that is
  open, so a digest or a mention placed after the cap still reaches the detectors; the page
  is logged once (`html_truncated`). libxml2 builds the tree of an ordinary page by itself,
  counted a chunk at a time; a page that passes a cap (or libxml2's depth limit) within
  a chunk is read again through a bounded builder that applies the caps event by event.
- XML (feeds, Torznab) is refused with a one-line SourceError past MAX_XML_ELEMENTS or
  MAX_XML_DEPTH: a feed that large is not a feed, and half a feed would be read as all of it.

Parsing runs in a parse thread (`off_loop`; threads are kept for the next call) so the
event loop keeps serving fetches and signals; only work on at most INLINE_BYTES of markup
runs on the loop itself, where its time is bounded and smaller than the hand-over's.
When the awaiting task is cancelled (the run timeout, SIGTERM), the thread is
interrupted too: ParseCancelled is raised inside it at its next Python instruction. libxml2
is fed CHUNK bytes at a time (well under a millisecond each), the bounded builder and the
extraction loops run Python for every element, so it stops within milliseconds instead of
running on, abandoned, for minutes and holding the process open.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import ctypes
import functools
import itertools
import os
import queue
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast
from xml.etree.ElementTree import Element, TreeBuilder

import structlog
from bs4.dammit import EncodingDetector
from cssselect import HTMLTranslator
from defusedxml.ElementTree import DefusedXMLParser
from lxml import etree

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
# act (2 M attributes in a 20 MB tag: 500 MB), so a tag longer than this keeps only its
# name. Real tags are shorter except inline data: URIs, which nothing here reads; lxml
# itself reads a "<x" that is never closed as a tag, so no page text is lost.
MAX_TAG_BYTES = 65_536
# Where a tag ends is where libxml2's HTML5 tokenizer ends it: at a ">" outside a quoted
# attribute value. A value is quoted only right after "=" (and blanks), "<" never ends a
# tag, and nothing inside a comment, a bogus comment (<!x>, <?x>, </1>) or the raw text of
# script, style, title, textarea, xmp, iframe, noembed or noframes is a tag.
_WS = "\t\n\f\r "
_RAW_TEXT = "script|style|title|textarea|xmp|iframe|noembed|noframes"
_TAGS = re.compile(
    r"<!--(?:-?>|(?s:.*?)--!?>|(?s:.*+))"  # comments
    r"|<[!?][^>]*+>?|</(?![A-Za-z])[^>]*+>?"  # bogus comments, doctypes, CDATA
    # A tag's name: raw text, plaintext or any other (the first that fits)...
    rf"|(?P<name><(?:(?P<raw>(?i:{_RAW_TEXT}))(?=[{_WS}/>])"
    rf"|(?P<plain>(?i:plaintext))(?=[{_WS}/>])|/?[A-Za-z][^{_WS}/>]*+))"
    # ... its attributes...
    rf"(?P<attributes>(?:[{_WS}/]++|[^{_WS}/>][^{_WS}/=>]*+"
    rf"(?:[{_WS}]*+=[{_WS}]*+(?:\"[^\"]*+\"?|'[^']*+'?|[^{_WS}>]*+))?)*+)"
    # ... and the text of raw text up to its end tag, or of plaintext to the end.
    rf"(?(raw)(?:>(?s:.*?)(?=</(?i:(?P=raw))[{_WS}/>])|(?s:.*+)))(?(plain)(?s:.*+))")
# Most pages are settled by two quick passes: a tag without a quoted ">" is a run without
# ">" (_PLAIN_LONG_TAG cuts it when it is long: a run that is no tag ends at the same ">"
# and holds no page text, or libxml2 would read it as a tag too). Only a page with a
# quoted ">" (_QUOTED_GT) is read tag by tag.
_PLAIN_LONG_TAG = re.compile(rf"<([A-Za-z][^\s/<>]*+)[^>]{{{MAX_TAG_BYTES},}}")
_QUOTED_GT = (re.compile(rf"=[{_WS}]*+\"[^\">]*+>"), re.compile(rf"=[{_WS}]*+'[^'>]*+>"))
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
              (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# A Torznab answer of 100 results has ~3,000 elements, a feed of 500 entries ~10,000.
MAX_XML_ELEMENTS = 200_000
MAX_XML_DEPTH = 64
# Parses at once, process-wide: each may hold a tree of the caps' size.
PARSE_SLOTS = 2
# How long a cancelled task waits for its parse thread to stop before giving up on it.
STOP_WAIT = 3.0
# Markup up to this size is parsed on the event loop: handing a call to a parse thread and
# back costs about 0.15 ms of CPU (two thread wake-ups), as much as parsing a 4 KB page,
# and what a parser does with 64 KB is bounded (libxml2 is linear, and the worst page of
# that size measured, 2,700 empty phpBB posts, took 60 ms to turn into documents, which
# then cost the loop more than that to detect and store anyway).
INLINE_BYTES = 64 * 1024


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

Node: TypeAlias = etree._Element

# Strings in these are not page text: bs4 gave them their own string classes (Script,
# Stylesheet, TemplateString, ruby annotations), which html_text always left out.
HIDDEN = frozenset({"script", "style", "template", "rt", "rp"})
# libxml2 builds its own tree at most 255 deep and drops everything deeper, text included;
# a page that deep is read through the bounded builder instead, which loses nothing.
_NATIVE_DEPTH = 250
# What the parser is fed at once: a cancellation lands between two chunks (well under a
# millisecond of libxml2 each), and a page past a cap is noticed within one chunk.
CHUNK = 64 * 1024
_ENCODING_ERRORS = (UnicodeDecodeError, LookupError, etree.ParserError)


@dataclass(eq=False)
class HtmlPage:
    """A parsed page: its root element and whether the caps cut the tree."""

    root: Node
    truncated: bool = False


class _BoundedTarget:
    """An lxml parser target building the tree only while under the caps. lxml reports
    start and end events properly nested, so every event after the first refused start
    until its end is inside it: a counter of open refused elements tells which ends to
    drop. Python runs for every event, so a cancellation stops it within microseconds."""

    def __init__(self, max_elements: int, max_depth: int) -> None:
        self.builder = etree.TreeBuilder()
        self.max_elements, self.max_depth = max_elements, max_depth
        self.elements = self.depth = self.dropped = self.open_dropped = 0
        self.dropped_attributes = 0
        self.max_seen_depth = 0
        self.hidden = 0  # open refused hidden elements: their text is not page text
        self.open: list[str] = []  # the kept elements not yet ended

    def start(self, tag: str, attrib: dict[str, str], /) -> None:
        if self.open_dropped or self.elements >= self.max_elements \
                or self.depth >= self.max_depth:
            self.open_dropped += 1
            self.dropped += 1
            self.max_seen_depth = max(self.max_seen_depth, self.depth + self.open_dropped)
            if tag in HIDDEN:
                self.hidden += 1
            self._break(tag)
            return
        self.elements += 1
        self.depth += 1
        self.open.append(tag)
        if len(attrib) > MAX_HTML_ATTRIBUTES:
            self.dropped_attributes += len(attrib) - MAX_HTML_ATTRIBUTES
            attrib = dict(itertools.islice(attrib.items(), MAX_HTML_ATTRIBUTES))
        self.builder.start(tag, attrib)

    def end(self, tag: str, /) -> None:
        if self.open_dropped:
            self.open_dropped -= 1
            if tag in HIDDEN and self.hidden:
                self.hidden -= 1
            self._break(tag)
            return
        self.depth -= 1
        self.builder.end(self.open.pop())

    def _break(self, tag: str) -> None:
        """A refused block element still ends a line, so its words do not fuse with the
        next ones (the text past a cap is read by detectors with word-boundary rules)."""
        if tag in BLOCKS or tag == "br":
            self.builder.data("\n")

    def data(self, data: str, /) -> None:
        if not self.hidden:
            self.builder.data(data)

    def comment(self, text: str, /) -> None:
        if not self.open_dropped and self.elements < self.max_elements:
            self.elements += 1
            self.builder.comment(text)

    def pi(self, target: str, data: str, /) -> None:
        if not self.open_dropped and self.elements < self.max_elements:
            self.elements += 1
            self.builder.pi(target, data)

    def close(self) -> Node | None:
        """The tree. A parse stopped midway (ParseCancelled raised in a callback) leaves
        elements open; they are ended here, so the exception lxml kept for the caller
        is not replaced by the builder's complaint about them."""
        while self.open:
            self.builder.end(self.open.pop())
        return self.builder.close() if self.elements else None


def _native(markup: bytes | str, encoding: str | None, max_elements: int,
            max_depth: int) -> Node | None:
    """libxml2's own tree, fed a chunk at a time and counted as it grows; None as soon
    as it passes a cap (or libxml2's depth limit), after at most one chunk more than the
    caps allow, so the caller reads the page through the bounded builder instead."""
    if len(markup) <= CHUNK:
        return _whole(markup, encoding, max_elements, max_depth)
    parser = etree.HTMLPullParser(events=("start", "end", "comment", "pi"),
                                  encoding=encoding, recover=True)
    elements = depth = 0
    deepest = min(max_depth, _NATIVE_DEPTH)

    def past_a_cap() -> bool:
        nonlocal elements, depth
        for event, element in parser.read_events():
            if event == "end":
                depth -= 1
                continue
            elements += 1
            if event == "start":
                depth += 1
                if depth > deepest or len(element.attrib) > MAX_HTML_ATTRIBUTES:
                    return True
            if elements > max_elements:
                return True
        return False

    for offset in range(0, len(markup) or 1, CHUNK):  # fed once at least, even if empty
        parser.feed(markup[offset:offset + CHUNK])
        if past_a_cap():
            return None
    root = _close(parser)
    return None if past_a_cap() else root


# What `_native` counts event by event, asked of a whole tree in C: some element's 101st
# attribute, all elements, comments and PIs, and (`_past_depth`) an element one too deep.
_PAST_ATTRIBUTES = etree.XPath(f"boolean(//@*[{MAX_HTML_ATTRIBUTES + 1}])")
_NODES = etree.XPath("count(//* | //comment() | //processing-instruction())")


@functools.lru_cache(maxsize=16)
def _past_depth(depth: int) -> etree.XPath:
    return etree.XPath("boolean(" + "/*" * (depth + 1) + ")")


def _whole(markup: bytes | str, encoding: str | None, max_elements: int,
           max_depth: int) -> Node | None:
    """`_native` for a page of one chunk: it is parsed whole before any count could stop
    it, so it is counted once parsed, by XPath; libxml2's events alone, read in Python,
    cost as much as the parse."""
    parser = etree.HTMLParser(encoding=encoding, recover=True)
    parser.feed(markup)
    root = _close(parser)
    if root is None:
        return None
    # Each element, comment or PI takes 3 bytes at least, so a short page is under the cap.
    if len(markup) // 3 > max_elements and cast(float, _NODES(root)) > max_elements:
        return None
    if _PAST_ATTRIBUTES(root) or _past_depth(min(max_depth, _NATIVE_DEPTH))(root):
        return None
    return root


def _close(parser: etree.HTMLPullParser[Any] | etree.HTMLParser[Any]) -> Node | None:
    """The parsed root; None for a page without elements (empty, text or comments only)."""
    try:
        root: Node | None = parser.close()
    except etree.XMLSyntaxError:
        return None
    return root


def _bounded(markup: bytes | str, encoding: str | None, url: str, max_elements: int,
             max_depth: int) -> tuple[Node | None, bool]:
    target = _BoundedTarget(max_elements, max_depth)
    # Only the methods lxml calls for HTML: with start_ns/end_ns present lxml would report
    # namespace events HTML never balances, which the stubs' ParserTarget asks for.
    parser = etree.HTMLParser(target=cast("etree.ParserTarget[Node | None]", target),
                              encoding=encoding, recover=True)
    for offset in range(0, len(markup) or 1, CHUNK):
        parser.feed(markup[offset:offset + CHUNK])
    root: Node | None = parser.close()
    if target.dropped or target.dropped_attributes:
        log.warning("html_truncated", url=url or None, kept_elements=target.elements,
                    dropped_elements=target.dropped, deepest=target.max_seen_depth,
                    dropped_attributes=target.dropped_attributes,
                    max_elements=target.max_elements, max_depth=target.max_depth,
                    note="text past the caps is kept in the enclosing element")
    return root, target.dropped > 0


def parse_html(markup: bytes | str, url: str = "", charset: str | None = None, *,
               max_elements: int | None = None, max_depth: int | None = None) -> HtmlPage:
    """Crawled HTML as an lxml tree bounded by the caps (module docstring); `url` names
    the page in the once-per-page warning when the caps cut the tree.

    Bytes are decoded as bs4 decodes them (its EncodingDetector: the HTTP `charset`, a
    BOM, the page's <meta>, a guess, then UTF-8 and Windows-1252, each tried in turn
    until libxml2 accepts one), so a page reads the same as it did through bs4."""
    max_elements, max_depth = max_elements or MAX_HTML_ELEMENTS, max_depth or MAX_HTML_DEPTH
    markup = _short_tags(markup, charset)
    candidates: Iterable[str | None]
    if isinstance(markup, str):
        markup = markup.removeprefix("\ufeff")  # lxml would read it as text
        candidates = [None]
    else:
        detector = EncodingDetector(markup, known_definite_encodings=[charset] if charset else [],
                                    is_html=True)
        markup, candidates = detector.markup, detector.encodings
    failure: Exception | None = None
    for encoding in candidates:
        try:
            root = _native(markup, encoding, max_elements, max_depth)
            truncated = False
            if root is None:
                root, truncated = _bounded(markup, encoding, url, max_elements, max_depth)
        except _ENCODING_ERRORS as exc:
            failure = exc
            continue
        if root is None or not isinstance(root.tag, str):  # no element: a comment at most
            root = etree.Element("html")
        return HtmlPage(root, truncated)
    raise ValueError(f"no encoding reads this page ({failure})")


def _short_tags(markup: bytes | str, charset: str | None) -> bytes | str:
    """`markup` with every tag longer than MAX_TAG_BYTES cut to its name. Bytes in
    an ASCII-compatible encoding are cut in place (read as Latin-1); UTF-16 and UTF-32 (a BOM, or the HTTP
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
            # Latin-1 maps each byte to one character, so "<", ">", quotes and blanks are
            # found where they are in any ASCII-compatible encoding, and back again.
            cut = _cut_long_tags(markup.decode("latin-1")) if len(markup) > MAX_TAG_BYTES \
                else None
            return markup if cut is None else cut.encode("latin-1")
        markup = markup.decode(wide, errors="replace")
    cut = _cut_long_tags(markup)
    return markup if cut is None else cut


def _cut_long_tags(markup: str) -> str | None:
    """`markup` with every tag longer than MAX_TAG_BYTES cut to its name (None when none
    is). Linear: the patterns never backtrack into what they matched, and each tag, comment
    and raw text is read once."""
    if len(markup) <= MAX_TAG_BYTES:
        return None
    if not any(quoted.search(markup) for quoted in _QUOTED_GT):
        cut, count = _PLAIN_LONG_TAG.subn(r"<\1", markup)
        return cut if count else None
    pieces: list[str] = []
    done = 0
    for tag in [found for found in _TAGS.finditer(markup)
                if found.end("attributes") - found.start("attributes") >= MAX_TAG_BYTES]:
        pieces += (markup[done:tag.start()], tag["name"])
        done = tag.end("attributes")
    if not pieces:
        return None
    pieces.append(markup[done:])
    return "".join(pieces)


def truncated(page: HtmlPage) -> bool:
    """Whether parse_html cut this page's tree at a cap."""
    return page.truncated


# ------------------------------------------------------------------------------ selectors


_TRANSLATOR = HTMLTranslator()


@functools.lru_cache(maxsize=1024)
def _xpath(css: str, prefix: str) -> str:
    """`css` as XPath, translated once per process (cssselect's parser is pure Python)."""
    return _TRANSLATOR.css_to_xpath(css, prefix=prefix)


class Selector:
    """A CSS selector translated to XPath by cssselect and compiled once. `select(node)`
    matches below `node`, as bs4's select did (a post never matches its own selector);
    on a page it matches anywhere, its root element included. A source compiles its own
    (`Source.pattern`, once per run of a target): compiling is quick C, the translation
    (`_xpath`) is what costs, and that is done once per process."""

    __slots__ = ("css", "_below", "_anywhere")

    def __init__(self, css: str) -> None:
        self.css = css
        self._below = etree.XPath(_xpath(css, "descendant::"))
        self._anywhere = etree.XPath(_xpath(css, "descendant-or-self::"))

    def select(self, node: HtmlPage | Node) -> list[Node]:
        found = self._anywhere(node.root) if isinstance(node, HtmlPage) else self._below(node)
        return cast(list[Node], found)  # a translated CSS selector selects only elements

    def select_one(self, node: HtmlPage | Node) -> Node | None:
        found = self.select(node)
        return found[0] if found else None


def compile_css(css: str) -> Selector:
    """A CSS selector compiled for pages from parse_html; raises cssselect's SelectorError
    (a syntax it does not know, such as soupsieve's own extensions) or lxml's XPathError."""
    selector = Selector(css)
    selector.select(etree.Element("p"))  # an XPath that compiles may still not evaluate
    return selector


# ------------------------------------------------------------------------------ text


def _element(node: HtmlPage | Node) -> Node:
    return node.root if isinstance(node, HtmlPage) else node


def text_pieces(node: HtmlPage | Node, breaks: bool = False) -> Iterator[str]:
    """The strings of `node`'s page text in document order (its own tail excluded),
    without comments and HIDDEN elements; with `breaks`, "\\n" around BLOCKS and at <br>.
    One walk by lxml's iterwalk: linear however deep the tree, leaving it intact."""
    top = _element(node)
    hidden = sum(1 for ancestor in top.iterancestors() if ancestor.tag in HIDDEN)
    for event, element in etree.iterwalk(top, events=("start", "end", "comment", "pi")):
        tag = element.tag
        if event == "start":
            if tag in HIDDEN:
                hidden += 1
            if breaks and (tag in BLOCKS or tag == "br"):
                yield "\n"  # within hidden elements too, as bs4's walk did
            if element.text and not hidden:
                yield element.text
            continue
        if event == "end":  # a comment or a PI has one event and no text of the page
            if tag in HIDDEN:
                hidden -= 1
            if breaks and tag in BLOCKS:
                yield "\n"
        if element.tail and not hidden and element is not top:
            yield element.tail


def node_text(node: HtmlPage | Node, separator: str = " ") -> str:
    """Each string of `node` stripped, the empty ones dropped, joined by `separator`: what
    bs4's `get_text(separator, strip=True)` gave."""
    return separator.join(s for s in (p.strip() for p in text_pieces(node)) if s)


_SPACE = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_text(node: HtmlPage | Node | str) -> str:
    """Readable text of an HTML fragment: line breaks kept, <wbr> joined (4chan splits long
    words such as magnet links with it), runs of spaces collapsed. libxml2 does not know
    <wbr> is void and nests the rest of the post inside it, so it is read as inline."""
    if isinstance(node, str):
        node = parse_html(node)
    text = "".join(text_pieces(node, breaks=True))
    lines = (_SPACE.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# ------------------------------------------------------------------------------ trees


def detach_nested(nodes: Iterable[Node]) -> list[Node]:
    """`nodes` (a selector's matches, in document order), each cut out of any other match
    that contains it: a post nested in a post (an unclosed <div> nests every later post)
    is then read once, as itself, instead of again as part of every post around it, so
    extraction over all matches stays linear in the page. Linear itself: each ancestor's
    verdict is looked up once. Elements are keys by identity, which holds because lxml
    hands out one proxy per element while it is referenced (the dict references them)."""
    nodes = list(nodes)
    chosen = set(nodes)
    inside: dict[Node, bool] = {}  # an unchosen element -> is it within a match?
    nested: list[Node] = []
    for node in nodes:
        walked: list[Node] = []
        parent, verdict = node.getparent(), False
        while parent is not None:
            known = inside.get(parent)
            if known is not None or parent in chosen:
                verdict = known if known is not None else True
                break
            walked.append(parent)
            parent = parent.getparent()
        for element in walked:
            inside[element] = verdict
        if verdict:
            nested.append(node)
    cut_out(nested)
    return nodes


def cut_out(nodes: Iterable[Node]) -> None:
    """Remove `nodes` from their tree, leaving the text that follows each (its tail) where
    it was, in time linear in the tree: each parent's children are walked once, and the
    tails of a run of removed siblings are joined once (lxml's remove() would take a tail
    along, and appending tail by tail is quadratic for thousands of sibling posts)."""
    by_parent: dict[Node, set[Node]] = {}
    for node in nodes:
        parent = node.getparent()
        if parent is not None:
            by_parent.setdefault(parent, set()).add(node)
    for parent, cut in by_parent.items():
        kept: Node | None = None
        pending: list[str] = []
        for child in list(parent):
            if child not in cut:
                if pending:
                    _join_tail(parent, kept, pending)
                    pending = []
                kept = child
                continue
            if child.tail:
                pending.append(child.tail)
                child.tail = None
            parent.remove(child)
        if pending:
            _join_tail(parent, kept, pending)


def _join_tail(parent: Node, kept: Node | None, texts: list[str]) -> None:
    if kept is None:
        parent.text = (parent.text or "") + "".join(texts)
    else:
        kept.tail = (kept.tail or "") + "".join(texts)


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
    """One interruptible call, run by a parse thread (`_Worker`). The lock orders
    interrupt() against the call's start and end, so ParseCancelled is raised only inside
    the call and never in a thread that has moved on to idling or to the next call; a
    pending one is cleared at the end, before the thread is handed out again."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.args, self.loop = fn, args, loop
        self.context = contextvars.copy_context()  # the target and run id for the log
        self.future: asyncio.Future[Any] = loop.create_future()
        self.lock = threading.Lock()
        self.ident: int | None = None
        self.cancelled = self.injected = self.finished = False

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

    def run(self, done: Callable[[], None]) -> None:
        """Run the call in this thread, call `done` (the thread is free again: the next
        call may be handed to it before this one's result is delivered), then deliver."""
        ok, value = False, None
        try:
            try:
                self._begin()
                value, ok = self.context.run(self.fn, *self.args), True
            finally:
                self._end()
        except BaseException as exc:  # delivered to the awaiting task, or dropped if gone
            value = exc
        done()
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


class _Worker:
    """A parse thread kept for the next call: starting a thread costs more than parsing a
    small page. It is named "weightwatch-parse" while it runs a call and
    "weightwatch-parse-idle" while it waits for one. A call that ignores ParseCancelled
    keeps its thread busy, never blocking others: a call finding no idle thread starts one.
    At most PARSE_SLOTS threads wait idle; one finishing beyond that ends."""

    _lock = threading.Lock()
    _idle: list[_Worker] = []

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="weightwatch-parse",
                                       daemon=True)
        self.retire = False

    @classmethod
    def submit(cls, job: _Job) -> None:
        with cls._lock:
            worker = cls._idle.pop() if cls._idle else None
        if worker is None:
            worker = cls()
            worker.thread.start()
        worker.thread.name = "weightwatch-parse"
        worker.inbox.put(job)

    def _free(self) -> None:
        with self._lock:
            if len(self._idle) < PARSE_SLOTS:
                self.thread.name = "weightwatch-parse-idle"
                self._idle.append(self)
            else:
                self.retire = True

    def _serve(self) -> None:
        while True:
            self.inbox.get().run(self._free)
            if self.retire:
                return


# A forked child has none of its parent's threads, so none of them is idle there.
os.register_at_fork(after_in_child=_Worker._idle.clear)


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
    weakref.WeakKeyDictionary()


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a parse thread (`_Worker`), at most PARSE_SLOTS at once; cancelling the
    awaiting task stops the thread (ParseCancelled inside it) before CancelledError goes
    on, so a run timeout or a shutdown leaves no parse behind.

    The markup among `args` (bytes and str) measures the work: when there is some and it
    is at most INLINE_BYTES in all, `fn` runs here, on the loop (see INLINE_BYTES)."""
    markup = [len(arg) for arg in args if isinstance(arg, (bytes, bytearray, str))]
    if markup and sum(markup) <= INLINE_BYTES:
        return fn(*args)
    loop = asyncio.get_running_loop()
    slots = _slots.setdefault(loop, asyncio.Semaphore(PARSE_SLOTS))
    async with slots:
        job = _Job(fn, args, loop)
        _Worker.submit(job)
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
