"""Public Telegram channels through their web preview (`https://t.me/s/CHANNEL`), no account.

The target's URL is the channel's preview (`https://t.me/s/heronleaks`; `https://t.me/
heronleaks` gets the `/s/`). The preview is Telegram's own HTML, read as the public scrapers
of it read it (snscrape's `telegram` module, and the stored t.me/s/ pages its tests and
others' quote): a `section.tgme_channel_history` of `div.tgme_widget_message_wrap`, each
holding a `div.tgme_widget_message[data-post="CHANNEL/ID"]` with the message's text
(`.tgme_widget_message_text`, a quoted reply's text sits inside `.tgme_widget_message_reply`
and is not the message's), a link preview (`a.tgme_widget_message_link_preview`), the
channel it was forwarded from (`a.tgme_widget_message_forwarded_from_name`, whose href is
the original post), attached files (`.tgme_widget_message_document_wrap` with
`.tgme_widget_message_document_title` and `_extra`, the size as "4.1 GB") and its time
(`.tgme_widget_message_date time[datetime]`). A page shows the newest ~20 messages, oldest
first; `a.tme_messages_more[data-before]` asks for the older ones (`?before=ID`: messages
with a smaller id). A channel without a public preview answers with a redirect to its
landing page (`t.me/CHANNEL`, a `tgme_page` with a "View in Telegram" button): that fails
the target in one line, instead of reading as an empty channel. A message with nothing to
read (a service message such as "Channel created" or "pinned «...»", whose quote is another
message's text; a photo without a caption) is skipped.

Incremental: the cursor keeps the newest message id seen. A run pages back from the newest
message until it reaches that id or `max_pages`; when the budget ends first, the ids not yet
read are kept as a gap (`?before=` where it stopped, down to the old newest id) that later
runs read with the pages they have left (at least one a run), so a burst of posts between
runs is read late but not skipped. A `data-before` that does not go back (a loop, a
hostile page) ends the paging, and a page claiming more than MAX_MESSAGES_PER_PAGE
messages is cut to its newest.

Every message is a Document keyed by its `data-post` whose URL is the post's permalink
(`https://t.me/CHANNEL/ID`); its text is the message text, "Forwarded from NAME" and one line
per attached file ("NAME (SIZE)"). Attached files also go to `extras["torrent"]["files"]`,
the file list the manifest detector reads, with the size as the range of byte counts the
rounded figure stands for (`size_min`..`size_max`) and never as an exact `length`: Telegram
shows one decimal of a binary unit ("1.7 MB" is anything from about 1.65 to 1.8 MiB, whether
it rounded or cut the figure), so a released file's name with a size in that range is
weaker evidence than a torrent's exact byte count (see monitor/detect/manifest.py).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

import structlog

from monitor.models import FILE_LIST, Document, FileList
from monitor.parsing import Node, Selector, detach_nested, node_text
from monitor.sources.base import (
    Source,
    SourceError,
    html_text,
    http_url,
    links_of,
    off_loop,
    parse_html,
    parse_iso_time,
    utc_iso,
)

log = structlog.get_logger("weightwatch.sources.telegram")

MAX_FILES_PER_MESSAGE = 10  # Telegram's album limit; a hostile page may claim more
MAX_MESSAGES_PER_PAGE = 100  # t.me shows 20; a hostile page of 50 000 is cut here
MAX_NAME = 300
MAX_GAPS = 20  # unread stretches remembered; older ones are given up (and logged)

# Telegram's sizes: one decimal at most, binary multiples named KB/MB/GB (as its clients
# write them; the scrapers of the preview convert with 1024).
_SIZE = re.compile(r"^\s*(\d{1,7})(?:[.,](\d{1,2}))?\s*(B|KB|MB|GB|TB)\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_DATA_POST = re.compile(r"^([A-Za-z0-9_]{1,64})/(\d{1,12})$")
_CHANNEL = re.compile(r"^[A-Za-z0-9_]{1,64}$")

_HISTORY = Selector(".tgme_channel_history")
_MESSAGE = Selector(".tgme_widget_message[data-post]")
_MORE = Selector("a.tme_messages_more[data-before]")
_LANDING = Selector(".tgme_page, .tgme_page_title, .tgme_action_button_new")
_TEXT = Selector(".tgme_widget_message_text")
_PREVIEW = Selector("a.tgme_widget_message_link_preview")
_FORWARDED = Selector(".tgme_widget_message_forwarded_from_name")
_DOCUMENT = Selector(".tgme_widget_message_document_wrap")
_DOC_TITLE = Selector(".tgme_widget_message_document_title")
_DOC_EXTRA = Selector(".tgme_widget_message_document_extra")
_TIME = Selector(".tgme_widget_message_date time[datetime]")
_AUTHOR = Selector(".tgme_widget_message_from_author, .tgme_widget_message_owner_name")


class AttachedFile(TypedDict):
    """A file attached to a message as the preview states it."""

    path: str  # the file name, under the key the manifest detector reads
    size_text: str  # as shown, e.g. "4.1 GB"; "" when the line is not a size (an audio's artist)
    size_min: int | None  # the byte counts the shown size stands for, both ends included
    size_max: int | None


@dataclass
class Message:
    channel: str
    id: int
    text: str
    author: str
    posted_at: str | None
    links: list[str]
    forwarded_from: dict[str, str] | None
    files: list[AttachedFile] = field(default_factory=list)
    service: bool = False

    @property
    def empty(self) -> bool:
        """Nothing of its own to read: a service message ("Channel created", or "pinned
        «...»" quoting a message read in its own place), a photo without a caption. It
        still counts for paging."""
        return self.service or not (self.text or self.links or self.forwarded_from
                                    or self.files)


@dataclass
class Page:
    messages: list[Message]  # newest first
    before: int | None  # the id `?before=` asks for next


def size_range(text: str) -> tuple[int, int] | None:
    """The byte counts a shown size such as "1.7 MB" stands for, both ends included; None
    for text that is not a size. Telegram may round the figure or cut it, so "1.7" is read
    as anything from 1.65 up to (not including) 1.8 of the unit."""
    m = _SIZE.match(text)
    if m is None:
        return None
    whole, decimals, unit = m.group(1), m.group(2) or "", m.group(3).upper()
    value = Fraction(f"{whole}.{decimals}" if decimals else whole)
    step = Fraction(1, 10 ** len(decimals))
    scale = _UNITS[unit]
    low = max(Fraction(0), (value - step / 2) * scale)
    high = (value + step) * scale  # excluded
    return ceil(low), ceil(high) - 1


def preview_url(url: str, before: int | None = None) -> str:
    """The channel's web preview (`/s/CHANNEL`), asking for messages older than `before`."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) >= 2 and segments[-2] == "s":
        path = "/" + "/".join(segments)
    elif segments:
        path = "/" + "/".join([*segments[:-1], "s", segments[-1]])
    else:
        raise SourceError(f"{url}: name the channel, e.g. https://t.me/s/CHANNEL")
    query = f"before={before}" if before is not None else ""
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _post_base(url: str) -> str:
    """Where the preview's posts have their permalinks: `https://t.me/` for
    `https://t.me/s/CHANNEL` (the part before `/s/`)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    head = path.rsplit("/", 2)[0] if "/s/" in path else path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, head + "/", "", ""))


class TelegramSource(Source):
    kind = "telegram"
    option_keys = frozenset({"max_pages"})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        url = options.get("url")
        if isinstance(url, str):
            segments = [s for s in urlsplit(url).path.split("/") if s]
            if not segments or not _CHANNEL.match(segments[-1]) or segments[-1] == "s":
                problems.append(("url", f"{url!r} does not name a channel: use "
                                        "https://t.me/s/CHANNEL"))
        return problems

    async def documents(self) -> AsyncIterator[Document]:
        known = self.cursor.get("newest_id")
        known = known if type(known) is int and known >= 0 else None
        gaps = [(g[0], g[1]) for g in self.cursor.get("gaps") or []
                if isinstance(g, list) and len(g) == 2 and all(type(x) is int for x in g)
                and g[0] > g[1] + 1]
        budget = self.target.max_pages
        seen: set[int] = set()
        new_gaps: list[tuple[int, int]] = []

        # The newest messages first, down to the newest one the last run saw.
        run = _Run(self, None, known if known is not None else -1, seen, budget)
        async for doc in run:
            yield doc
        top = run.newest
        budget -= run.pages
        if known is not None and run.stopped_at is not None:
            new_gaps.append((run.stopped_at, known))
            log.warning("channel_backlog", pages=self.target.max_pages,
                        hint="older new messages are read by the next runs; raise max_pages "
                             "or crawl more often")
        # Then what earlier runs had no pages left for, oldest gap last; at least one page
        # a run, or a target crawled with max_pages = 1 would never catch up.
        budget = max(budget, 1)
        for before, floor in gaps:
            if budget <= 0:
                new_gaps.append((before, floor))
                continue
            run = _Run(self, before, floor, seen, budget)
            async for doc in run:
                yield doc
            budget -= run.pages
            if run.stopped_at is not None:
                new_gaps.append((run.stopped_at, floor))

        if top is not None and (known is None or top > known):
            self.cursor["newest_id"] = top
        if len(new_gaps) > MAX_GAPS:
            log.warning("channel_backlog_dropped", gaps=len(new_gaps) - MAX_GAPS)
        if new_gaps or "gaps" in self.cursor:
            self.cursor["gaps"] = [list(g) for g in new_gaps[:MAX_GAPS]]

    def parse_page(self, body: bytes, url: str) -> Page:
        """One preview page: its messages, newest first, and the next `before`."""
        page = parse_html(body, url)
        more = _MORE.select_one(page)
        history = _HISTORY.select_one(page)
        nodes = detach_nested(_MESSAGE.select(page))
        if history is None and not nodes:
            if _LANDING.select_one(page) is not None:
                raise SourceError(f"{url}: Telegram answered with the channel's landing page, "
                                  f"not its message preview (a private channel, a preview "
                                  f"its owner turned off, or no such channel)")
            raise SourceError(f"{url}: not a Telegram channel preview (no "
                              f"tgme_channel_history): has the page's markup changed?")
        messages = [m for m in (_message(node, url) for node in nodes) if m is not None]
        messages.sort(key=lambda m: m.id, reverse=True)
        if len(messages) > MAX_MESSAGES_PER_PAGE:
            log.warning("page_cut", url=url, messages=len(messages),
                        kept=MAX_MESSAGES_PER_PAGE)
            del messages[MAX_MESSAGES_PER_PAGE:]
        raw = (more.get("data-before") or "").strip() if more is not None else ""
        next_before = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None
        return Page(messages, next_before)

    def document(self, message: Message, base: str, body: bytes, url: str,
                 fetched_at: str) -> Document:
        lines = [message.text] if message.text else []
        extras: dict[str, Any] = {"telegram": {"channel": message.channel,
                                               "message_id": message.id}}
        if message.forwarded_from:
            lines.append(f"Forwarded from {message.forwarded_from['name']}")
            extras["telegram"]["forwarded_from"] = message.forwarded_from
        for f in message.files:
            lines.append(f"{f['path']} ({f['size_text']})" if f["size_text"] else f["path"])
        if message.files:
            extras["telegram"]["files"] = [dict(f) for f in message.files]
        sized = [f for f in message.files if f["size_min"] is not None]
        if sized:
            attached: FileList = {"label": "Telegram attachment", "name": sized[0]["path"],
                                  "files": [{"path": f["path"], "size_text": f["size_text"],
                                             "size_min": f["size_min"],
                                             "size_max": f["size_max"]} for f in sized]}
            extras[FILE_LIST] = attached
        return Document(
            target=self.target.name, key=f"{message.channel}/{message.id}",
            url=f"{base}{message.channel}/{message.id}", text="\n".join(lines),
            author=message.author, posted_at=message.posted_at, links=message.links,
            extras=extras, snapshot=body, snapshot_url=url, fetched_at=fetched_at)


class _Run:
    """Pages of one stretch of the channel, newest first: from `before` (None: the newest
    message) down to `floor` (excluded), at most `budget` pages. Iterating yields the
    documents; afterwards `pages` is what it fetched, `newest` the highest message id it
    saw (a service message's too), and `stopped_at` the `before` it would have asked for
    next when the budget ran out first (None when the stretch was read to its end, or
    paging stopped for good)."""

    def __init__(self, source: TelegramSource, before: int | None, floor: int,
                 seen: set[int], budget: int) -> None:
        self.source, self.before, self.floor, self.seen = source, before, floor, seen
        self.budget = budget
        self.pages = 0
        self.newest: int | None = None
        self.stopped_at: int | None = None

    async def __aiter__(self) -> AsyncIterator[Document]:
        source = self.source
        before = self.before
        while True:
            if self.pages >= self.budget:
                self.stopped_at = before
                return
            url = preview_url(source.target.url, before)
            response = await source.fetcher.get(url, source.target)
            self.pages += 1
            page = await off_loop(source.parse_page, response.body, response.url)
            base = _post_base(response.url)
            reached = False
            for message in page.messages:
                if message.id <= self.floor:
                    reached = True
                    continue
                if before is not None and message.id >= before or message.id in self.seen:
                    continue  # not what was asked for, or read already this run
                self.seen.add(message.id)
                self.newest = max(self.newest or 0, message.id)
                if message.empty:
                    continue
                # No parsing left to do: the page was parsed off the loop already.
                yield source.document(message, base, response.body, response.url,
                                      response.fetched_at)
            oldest = min((m.id for m in page.messages), default=None)
            nxt = page.before
            if reached or not page.messages or nxt is None or nxt <= self.floor + 1:
                return
            if (before is not None and nxt >= before) or (oldest is not None and nxt > oldest):
                log.warning("paging_loop", url=url, before=nxt,
                            hint="the page's data-before does not go back; paging stopped")
                return
            before = nxt


def _message(node: Node, page_url: str) -> Message | None:
    m = _DATA_POST.match((node.get("data-post") or "").strip())
    if m is None:
        return None
    channel, message_id = m.group(1), int(m.group(2))
    texts = [n for n in _TEXT.select(node) if not _in_reply(n, node)]
    text_node = texts[0] if texts else None
    text = html_text(text_node) if text_node is not None else ""
    links = links_of(text_node, page_url) if text_node is not None else []
    preview = _PREVIEW.select_one(node)
    if preview is not None:
        href = http_url(page_url, preview.get("href"))
        if href and href not in links:
            links.append(href)
    forwarded = None
    fwd = _FORWARDED.select_one(node)
    if fwd is not None:
        forwarded = {"name": node_text(fwd)[:MAX_NAME],
                     "url": http_url(page_url, fwd.get("href")) or ""}
    files: list[AttachedFile] = []
    for wrap in _DOCUMENT.select(node):
        title = _DOC_TITLE.select_one(wrap)
        name = node_text(title)[:MAX_NAME] if title is not None else ""
        if not name:
            continue
        if len(files) == MAX_FILES_PER_MESSAGE:
            break
        extra = _DOC_EXTRA.select_one(wrap)
        shown = node_text(extra)[:40] if extra is not None else ""
        sizes = size_range(shown)
        files.append({"path": name, "size_text": shown if sizes else "",
                      "size_min": sizes[0] if sizes else None,
                      "size_max": sizes[1] if sizes else None})
    time = _TIME.select_one(node)
    author = _AUTHOR.select_one(node)
    return Message(channel=channel, id=message_id, text=text,
                   author=node_text(author)[:MAX_NAME] if author is not None else "",
                   posted_at=utc_iso(parse_iso_time(time.get("datetime"))) if time is not None
                   else None,
                   links=links, forwarded_from=forwarded, files=files,
                   service="service_message" in (node.get("class") or "").split())


def _in_reply(node: Node, top: Node) -> bool:
    """Whether `node` is inside the quoted message a reply shows (below `top`)."""
    for ancestor in node.iterancestors():
        if ancestor is top:
            return False
        if "tgme_widget_message_reply" in (ancestor.get("class") or "").split():
            return True
    return False


__all__ = ["AttachedFile", "TelegramSource", "preview_url", "size_range"]
