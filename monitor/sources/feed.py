"""RSS 2.0 and Atom feeds (RSS 1.0 / RDF too), one adapter for all of them.

Each item or entry becomes a Document: its title, its link (Atom: `rel=alternate`), its
HTML content as text (`content:encoded`, `description`, Atom `content` or `summary`), its
guid / id as the key, its publication time in ISO UTC, its author, and its enclosures
(in `links` and `extras["enclosures"]`, so a magnet or .torrent enclosure reaches the
digest detector).

Feeds are XML from hostile servers, so they are parsed with defusedxml and any document
type declaration is refused outright: a feed has no use for one, and it is where entity
bombs ("billion laughs") and external entities hide.

Polling is cheap for both sides: the feed is requested with the ETag / Last-Modified the
last response carried, a 304 means nothing new, and the cursor remembers which items were
already yielded (and a digest of each, so an edited item is yielded again).
"""

from __future__ import annotations

import email.utils
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import defusedxml
import structlog

from monitor.fetch import redact_url
from monitor.models import Document
from monitor.parsing import XMLTooLarge, parse_xml
from monitor.sources.base import (
    Source,
    SourceError,
    html_text,
    http_url,
    links_of,
    off_loop,
    parse_html,
    safe_urljoin,
    utc_iso,
)

log = structlog.get_logger("weightwatch.sources.feed")

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
DC = "{http://purl.org/dc/elements/1.1/}"
RSS1 = "{http://purl.org/rss/1.0/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
XHTML = "{http://www.w3.org/1999/xhtml}"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"

# How many item keys the cursor remembers; a feed carries tens of items, so this is many
# windows of history while keeping the cursor small.
SEEN_LIMIT = 1000


@dataclass
class Entry:
    key: str
    url: str
    title: str
    author: str
    posted_at: str | None
    html: str  # HTML (or plain text when `is_html` is False)
    is_html: bool = True
    enclosures: list[dict[str, Any]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    other_links: list[str] = field(default_factory=list)


@dataclass
class Feed:
    format: str  # 'rss' | 'atom' | 'rdf'
    title: str
    entries: list[Entry]


class FeedSource(Source):
    kind = "feed"
    option_keys = frozenset()

    async def documents(self) -> AsyncIterator[Document]:
        headers: dict[str, str] = {}
        if isinstance(self.cursor.get("etag"), str):
            headers["If-None-Match"] = self.cursor["etag"]
        if isinstance(self.cursor.get("last_modified"), str):
            headers["If-Modified-Since"] = self.cursor["last_modified"]
        response = await self.fetcher.get(self.target.url, self.target, headers=headers)
        if response.not_modified:
            log.info("feed_not_modified", url=redact_url(self.target.url))
            return
        feed = await off_loop(parse_feed, response.body, response.url)
        seen = _seen_pairs(self.cursor.get("seen"))
        remembered = dict(seen)
        current: list[tuple[str, str]] = []
        capped = False
        yielded = 0
        for entry in feed.entries:
            # Off the loop: the entry's HTML is parsed, and a hostile one may be large.
            doc = await off_loop(self._document, entry, feed, response.body, response.url,
                                 response.fetched_at)
            marker = _marker(doc)
            if remembered.get(entry.key) == marker:
                current.append((entry.key, marker))
                continue
            if yielded >= self.target.max_items:
                capped = True  # left for the next run: neither remembered nor validated
                continue
            yield doc
            yielded += 1
            current.append((entry.key, marker))
        keys = {key for key, _ in current}
        history = current + [(k, m) for k, m in seen if k not in keys]
        self.cursor["seen"] = [[k, m] for k, m in history[:SEEN_LIMIT]]
        # The validators say "you have everything up to this response"; with items left
        # over by max_items that would hide them behind a 304, so they are kept only when
        # the whole feed was taken.
        for name, header in (("etag", "etag"), ("last_modified", "last-modified")):
            value = response.headers.get(header)
            if value and not capped:
                self.cursor[name] = value
            else:
                self.cursor.pop(name, None)

    def _document(self, entry: Entry, feed: Feed, body: bytes, url: str,
                  fetched_at: str) -> Document:
        base = entry.url or url
        if entry.is_html:
            soup = parse_html(entry.html, base)
            text = html_text(soup)
            links = links_of(soup, base)
        else:
            text = "\n".join(" ".join(line.split()) for line in entry.html.splitlines()).strip()
            links = []
        enclosure_urls = [e["url"] for e in entry.enclosures]
        links = _unique(enclosure_urls + entry.other_links + links)
        extras: dict[str, Any] = {"feed": {"format": feed.format, "title": feed.title}}
        if entry.enclosures:
            extras["enclosures"] = entry.enclosures
        if entry.categories:
            extras["categories"] = entry.categories
        return Document(
            target=self.target.name, key=entry.key, url=entry.url or url, title=entry.title,
            author=entry.author, posted_at=entry.posted_at, text=text, links=links,
            extras=extras, snapshot=body, snapshot_url=url, fetched_at=fetched_at)


# ------------------------------------------------------------------------------ parsing


def parse_feed(body: bytes, url: str) -> Feed:
    """Parse an RSS 2.0, RSS 1.0 or Atom document; SourceError (one line) for anything else,
    including any DTD."""
    safe_url = redact_url(url)
    try:
        root = parse_xml(body)
    except defusedxml.DTDForbidden:
        raise SourceError(f"{safe_url}: refused a feed that declares a DTD (<!DOCTYPE>): feeds "
                          "need none, and entity bombs and external entities hide there") from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden):
        raise SourceError(f"{safe_url}: refused a feed that declares entities") from None
    except ET.ParseError as exc:
        raise SourceError(f"{safe_url}: not well-formed XML ({exc})") from None
    except XMLTooLarge as exc:
        raise SourceError(f"{safe_url}: refused a feed of {exc}") from None
    except RecursionError:
        raise SourceError(f"{safe_url}: XML nested too deeply to read") from None
    try:
        if root.tag == "rss":
            return _parse_rss(root, url)
        if root.tag == f"{ATOM}feed":
            return _parse_atom(root, url)
        if root.tag == f"{RDF}RDF":
            return _parse_rdf(root, url)
    except RecursionError:
        raise SourceError(f"{safe_url}: XML nested too deeply to read") from None
    raise SourceError(f"{safe_url}: not an RSS or Atom feed (root element <{_local(root.tag)}>)")


def _parse_rss(root: ET.Element, url: str) -> Feed:
    channel = root.find("channel")
    if channel is None:
        raise SourceError(f"{redact_url(url)}: RSS document without a <channel>")
    base = safe_urljoin(url, _text(channel, "link")) or url
    entries = []
    for item in channel.iter("item"):
        link = http_url(base, _text(item, "link"))
        guid_node = item.find("guid")
        guid = _clean(guid_node.text) if guid_node is not None else ""
        if not link and guid_node is not None and guid \
                and guid_node.get("isPermaLink", "true").lower() != "false":
            link = http_url(base, guid)
        html = _text(item, f"{CONTENT}encoded") or _text(item, "description")
        title = _clean(_text(item, "title"))
        posted = _date(_text(item, "pubDate")) or _date(_text(item, f"{DC}date"))
        author = _clean(_text(item, f"{DC}creator") or _text(item, "author"))
        enclosures = []
        for enc in item.findall("enclosure"):
            enc_url = _enclosure_url(base, enc.get("url"))
            if enc_url:
                enclosures.append({"url": enc_url, "length": _int(enc.get("length")),
                                   "type": enc.get("type") or None})
        categories = [_clean(c.text) for c in item.findall("category") if _clean(c.text)]
        key = guid or link or _fallback_key(title, posted, html)
        entries.append(Entry(key=key, url=link or "", title=title, author=author,
                             posted_at=posted, html=html, enclosures=enclosures,
                             categories=categories))
    return Feed("rss", _clean(_text(channel, "title")), entries)


def _parse_rdf(root: ET.Element, url: str) -> Feed:
    channel = root.find(f"{RSS1}channel")
    entries = []
    for item in root.findall(f"{RSS1}item"):
        link = http_url(url, _text(item, f"{RSS1}link"))
        title = _clean(_text(item, f"{RSS1}title"))
        html = _text(item, f"{CONTENT}encoded") or _text(item, f"{RSS1}description")
        posted = _date(_text(item, f"{DC}date"))
        key = item.get(f"{RDF}about") or link or _fallback_key(title, posted, html)
        entries.append(Entry(key=key, url=link or "", title=title,
                             author=_clean(_text(item, f"{DC}creator")), posted_at=posted,
                             html=html))
    title = _clean(_text(channel, f"{RSS1}title")) if channel is not None else ""
    return Feed("rdf", title, entries)


def _parse_atom(root: ET.Element, url: str) -> Feed:
    feed_base = safe_urljoin(url, root.get(XML_BASE, "")) or url
    feed_author = _atom_author(root)
    entries = []
    for entry in root.findall(f"{ATOM}entry"):
        base = safe_urljoin(feed_base, entry.get(XML_BASE, "")) or feed_base
        alternates: list[tuple[str, str]] = []
        enclosures: list[dict[str, Any]] = []
        others: list[str] = []
        for link in entry.findall(f"{ATOM}link"):
            href = link.get("href")
            rel = (link.get("rel") or "alternate").strip().lower()
            if rel == "enclosure":
                enc_url = _enclosure_url(base, href)
                if enc_url:
                    enclosures.append({"url": enc_url, "length": _int(link.get("length")),
                                       "type": link.get("type") or None})
                continue
            absolute = http_url(base, href)
            if not absolute:
                continue
            if rel == "alternate":
                alternates.append((absolute, (link.get("type") or "text/html").lower()))
            elif rel not in ("self", "edit", "replies"):
                others.append(absolute)
        # The first HTML alternate, else the first alternate of any type.
        html_alternates = [href for href, kind in alternates if kind.startswith("text/html")]
        alternate = (html_alternates or [href for href, _ in alternates] or [""])[0]
        others = [href for href, _ in alternates if href != alternate] + others
        content = entry.find(f"{ATOM}content")
        if content is None or content.get("src"):
            content = entry.find(f"{ATOM}summary")
        html, is_html = _atom_text(content)
        title_node = entry.find(f"{ATOM}title")
        title_text, title_html = _atom_text(title_node)
        title = _clean(html_text(title_text) if title_html else title_text)
        posted = (_date(_text(entry, f"{ATOM}published"))
                  or _date(_text(entry, f"{ATOM}updated")))
        key = _clean(_text(entry, f"{ATOM}id")) or alternate or _fallback_key(title, posted, html)
        categories = [c.get("term", "") for c in entry.findall(f"{ATOM}category") if c.get("term")]
        entries.append(Entry(key=key, url=alternate, title=title,
                             author=_atom_author(entry) or feed_author, posted_at=posted,
                             html=html, is_html=is_html, enclosures=enclosures,
                             categories=categories, other_links=others))
    title_text, title_html = _atom_text(root.find(f"{ATOM}title"))
    return Feed("atom", _clean(html_text(title_text) if title_html else title_text), entries)


def _atom_text(node: ET.Element | None) -> tuple[str, bool]:
    """An Atom text construct as (markup or text, is_html): type text, html or xhtml."""
    if node is None:
        return "", False
    kind = (node.get("type") or "text").lower()
    if kind in ("html", "text/html"):
        return node.text or "", True
    if kind in ("xhtml", "application/xhtml+xml"):
        parts = [node.text or ""]
        for child in node:
            for element in child.iter():
                if isinstance(element.tag, str) and element.tag.startswith(XHTML):
                    element.tag = element.tag[len(XHTML):]
            parts.append(ET.tostring(child, encoding="unicode"))
        return "".join(parts), True
    return "".join(node.itertext()), False


def _atom_author(node: ET.Element) -> str:
    names = [_clean(_text(a, f"{ATOM}name")) for a in node.findall(f"{ATOM}author")]
    return ", ".join(n for n in names if n)


# ------------------------------------------------------------------------------ helpers


def _text(node: ET.Element | None, path: str) -> str:
    if node is None:
        return ""
    child = node.find(path)
    return (child.text or "") if child is not None else ""


def _clean(value: str | None) -> str:
    return " ".join((value or "").split())


def _local(tag: Any) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _enclosure_url(base: str, href: str | None) -> str | None:
    """Enclosures may be magnets (torrent feeds), besides http(s) URLs."""
    href = (href or "").strip()
    if href.lower().startswith("magnet:?"):
        return href
    return http_url(base, href)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _date(value: str) -> str | None:
    """RFC 822 (RSS pubDate) or RFC 3339 (Atom, dc:date) as ISO 8601 UTC; None if neither."""
    value = value.strip()
    if not value:
        return None
    parsed: datetime | None = None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    return utc_iso(parsed)


def _fallback_key(title: str, posted: str | None, html: str) -> str:
    digest = hashlib.sha256(f"{title}\x1f{posted}\x1f{html}".encode("utf-8", "replace"))
    return "sha256:" + digest.hexdigest()[:32]


def _marker(doc: Document) -> str:
    """A short digest of what an item says, so an edited item is yielded again."""
    return doc.content_sha256[:16]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _seen_pairs(raw: Any) -> list[tuple[str, str]]:
    """The cursor's [[key, marker], ...] list; anything malformed is dropped."""
    out = []
    for item in raw if isinstance(raw, list) else []:
        if (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], str)):
            out.append((item[0], item[1]))
    return out
