"""Paste sites with a Pastebin-style scraping API.

The target's URL is the listing endpoint (for Pastebin,
`https://scrape.pastebin.com/api_scraping.php?limit=100`), which answers a JSON array of
the newest pastes: `[{"scrape_url", "full_url", "date", "key", "size", "expire", "title",
"syntax", "user"}]`, with `date` (Unix seconds) and `size` (bytes) as strings. Each paste
not seen before is fetched from its `scrape_url` and becomes a Document keyed by the paste
key, at its `full_url`, with the raw paste as the evidence.

The API reports errors as HTTP 200 with a plain-text body ("YOUR IP: ... DOES NOT HAVE
ACCESS ..."); those become one-line SourceErrors quoting the body, because a paste site
that silently returns nothing is a blind spot.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from monitor.fetch import FetchError, redact_url
from monitor.models import Document
from monitor.sources.base import Source, SourceError, epoch_iso, http_url, off_loop, parse_json

log = structlog.get_logger("weightwatch.sources.paste")

# Pastes larger than this are skipped (the listing declares their size) and the fetch of an
# item is capped at it: leaks are posted as checksum lists, magnets and pointers, not bulk.
MAX_PASTE_BYTES = 1024 * 1024
# Keys remembered by the cursor: a listing holds at most 250 pastes, so this is many runs.
SEEN_LIMIT = 2000
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Item-level answers that are not paste contents (Pastebin's exact wording).
_ACCESS_DENIED = re.compile(r"^\s*YOUR IP:.*DOES NOT HAVE ACCESS", re.IGNORECASE | re.DOTALL)
_NOT_FOUND = "Error, we cannot find this paste."


@dataclass
class Paste:
    key: str
    scrape_url: str
    full_url: str
    date: int | None
    size: int | None
    expire: str
    title: str
    syntax: str
    user: str


class PasteSource(Source):
    kind = "paste"
    option_keys = frozenset()

    async def documents(self) -> AsyncIterator[Document]:
        listing = await self.fetcher.get(self.target.url, self.target)
        pastes = await off_loop(parse_listing, listing.body, listing.url)
        seen_list = [k for k in self.cursor.get("seen", []) if isinstance(k, str)]
        seen = set(seen_list)
        done: set[str] = set()
        fresh = [p for p in pastes if p.key not in seen]
        for paste in fresh[: self.target.max_items]:
            if paste.size is not None and paste.size > MAX_PASTE_BYTES:
                log.warning("paste_too_large", key=paste.key, size=paste.size,
                            limit=MAX_PASTE_BYTES)
                done.add(paste.key)
                continue
            if not _same_site(paste.scrape_url, listing.url):
                log.warning("paste_foreign_scrape_url", key=paste.key,
                            url=redact_url(paste.scrape_url))
                done.add(paste.key)
                continue
            try:
                item = await self.fetcher.get(paste.scrape_url, self.target,
                                              max_bytes=MAX_PASTE_BYTES)
            except FetchError as exc:
                log.warning("paste_failed", key=paste.key, error=str(exc))
                continue  # try again next run, while it is still listed
            text = item.text()
            if _ACCESS_DENIED.match(text):
                raise SourceError(f"{redact_url(paste.scrape_url)}: the paste site refused the "
                                  f"item: {_first_line(text)!r}")
            if text.strip() == _NOT_FOUND:
                log.info("paste_gone", key=paste.key)
                done.add(paste.key)
                continue
            yield Document(
                target=self.target.name, key=paste.key, url=paste.full_url,
                title=paste.title, author=paste.user, text=text,
                posted_at=epoch_iso(paste.date) if paste.date is not None else None,
                extras={"paste": {"syntax": paste.syntax, "size": paste.size,
                                  "expire": paste.expire, "scrape_url": paste.scrape_url}},
                snapshot=item.body, snapshot_url=item.url, fetched_at=item.fetched_at)
            done.add(paste.key)
        # Newest first: what this run finished, then what was remembered before.
        order = [p.key for p in pastes if p.key in done or p.key in seen]
        listed = set(order)
        self.cursor["seen"] = (order + [k for k in seen_list if k not in listed])[:SEEN_LIMIT]


def parse_listing(body: bytes, url: str) -> list[Paste]:
    """The pastes of a scraping listing, in listing order (newest first); SourceError for
    the plain-text errors the API answers with HTTP 200, and for anything not a listing."""
    safe_url = redact_url(url)
    text = body.decode("utf-8", errors="replace")
    if not text.lstrip().startswith(("[", "{")):
        if not text.strip():
            raise SourceError(f"{safe_url}: empty answer instead of a paste listing")
        raise SourceError(f"{safe_url}: the paste site answered with an error instead of a "
                          f"listing: {_first_line(text)!r}")
    data = parse_json(text, safe_url)
    if not isinstance(data, list):
        raise SourceError(f"{safe_url}: expected a JSON array of pastes, got: "
                          f"{_first_line(text)!r}")
    out: list[Paste] = []
    keys: set[str] = set()
    for raw in data:
        paste = _paste(raw, url)
        if paste is not None and paste.key not in keys:
            keys.add(paste.key)
            out.append(paste)
    return out


def _paste(raw: Any, listing_url: str) -> Paste | None:
    if not isinstance(raw, dict):
        return None
    key = raw.get("key")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return None
    scrape_url = http_url(listing_url, raw.get("scrape_url"))
    if scrape_url is None:
        return None
    full_url = http_url(listing_url, raw.get("full_url")) or scrape_url
    return Paste(key=key, scrape_url=scrape_url, full_url=full_url,
                 date=_number(raw.get("date")), size=_number(raw.get("size")),
                 expire=_str(raw.get("expire")), title=_str(raw.get("title")),
                 syntax=_str(raw.get("syntax")), user=_str(raw.get("user")))


def _number(value: Any) -> int | None:
    """The API's numbers are strings ("1442911802"); accept real numbers too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 18:
        return int(value.strip())
    return None


def _str(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _first_line(text: str) -> str:
    """The first 100 characters of a body, on one line."""
    return " ".join(text.split())[:100]


def _same_site(url: str, listing_url: str) -> bool:
    """Items are fetched from the listing's host only: a hostile listing must not turn the
    crawler into a fetcher of arbitrary URLs."""
    a, b = urlsplit(url), urlsplit(listing_url)
    try:
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
    except ValueError:
        return False
