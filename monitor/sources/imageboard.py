"""4chan-style read-only JSON boards (`threads.json`, `thread/{no}.json`).

Only threads whose `last_modified` moved since the last run are fetched again, as the API's
rules ask; each post becomes a Document, with its attachment's name, size and base64 MD5 as
extras so the digest detector can match a released file posted as an attachment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import structlog

from fingerprints.indicators import md5_b64_to_hex
from monitor.fetch import FetchError
from monitor.models import Document
from monitor.sources.base import (
    Source,
    SourceError,
    epoch_iso,
    html_text,
    json_array,
    off_loop,
    parse_json,
    template_problems,
)

log = structlog.get_logger("weightwatch.sources.imageboard")


class ImageboardSource(Source):
    kind = "imageboard"
    option_keys = frozenset({"document_url"})

    @property
    def base(self) -> str:
        return self.target.url if self.target.url.endswith("/") else self.target.url + "/"

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        return super().check_options(options) + template_problems(options, thread=1, post=2)

    def post_url(self, thread: int, post: int) -> str:
        template = self.target.document_url or self.base + "thread/{thread}#p{post}"
        return template.format(thread=thread, post=post)

    async def documents(self) -> AsyncIterator[Document]:
        # The API asks clients to use If-Modified-Since: an unchanged board costs one 304.
        validator = self.cursor.get("listing_last_modified")
        listing = await self.fetcher.get(
            urljoin(self.base, "threads.json"), self.target,
            headers={"If-Modified-Since": validator} if isinstance(validator, str) else None)
        if listing.not_modified:
            return
        threads = await off_loop(parse_threads, listing.body, listing.url)
        seen: dict[str, int] = self.cursor.get("threads", {})
        moved = [(no, lm) for no, lm in threads if seen.get(str(no)) != lm]
        # Newest activity first, so a cap on items keeps what is most likely a fresh leak.
        moved.sort(key=lambda item: item[1], reverse=True)
        current = {str(no): lm for no, lm in threads}
        complete = len(moved) <= self.target.max_items
        for no, last_modified in moved[: self.target.max_items]:
            try:
                page = await self.fetcher.get(urljoin(self.base, f"thread/{no}.json"), self.target)
            except FetchError as exc:
                log.warning("thread_failed", thread=no, error=str(exc))
                current.pop(str(no), None)  # try again next run
                complete = False
                continue
            for doc in await off_loop(self.parse_thread, page.body, page.url, page.fetched_at, no):
                yield doc
            seen[str(no)] = last_modified
        # Forget threads that fell off the board; keep the ones skipped by the cap unseen.
        self.cursor["threads"] = {no: lm for no, lm in seen.items() if no in current}
        # Only a run that read every moved thread may let the next one stop at a 304:
        # otherwise the threads it left would wait until the board changes again.
        if complete and listing.last_modified:
            self.cursor["listing_last_modified"] = listing.last_modified
        else:
            self.cursor.pop("listing_last_modified", None)

    def parse_thread(self, body: bytes, url: str, fetched_at: str, thread: int) -> list[Document]:
        docs = []
        for post in json_array(parse_json(body, url), "posts", url):
            if not isinstance(post, dict) or not isinstance(post.get("no"), int):
                continue
            extras = _attachment_extras(post)
            posted = post.get("time")
            docs.append(Document(
                target=self.target.name, key=f"{thread}#p{post['no']}",
                url=self.post_url(thread, post["no"]), title=html_text(str(post.get("sub") or "")),
                author=str(post.get("name") or ""), text=html_text(str(post.get("com") or "")),
                posted_at=epoch_iso(posted) if isinstance(posted, int) else None,
                extras=extras, snapshot=body, snapshot_url=url, fetched_at=fetched_at))
        return docs


def parse_threads(body: bytes, url: str) -> list[tuple[int, int]]:
    """(thread number, last_modified) for every thread on every page of threads.json."""
    data = parse_json(body, url)
    if not isinstance(data, list):
        raise SourceError(f"{url}: expected an array of pages")
    out = []
    for page in data:
        threads = page.get("threads") if isinstance(page, dict) else None
        for thread in threads if isinstance(threads, list) else []:
            if isinstance(thread, dict) and isinstance(thread.get("no"), int):
                last_modified = thread.get("last_modified")
                out.append((thread["no"], last_modified if isinstance(last_modified, int) else 0))
    return out


def _attachment_extras(post: dict[str, Any]) -> dict[str, Any]:
    """The attachment's name and size, and its MD5 (base64 on the wire) as a digest the
    digest detector can look up."""
    if not post.get("md5") or not isinstance(post.get("filename"), str):
        return {}
    filename = f"{post['filename']}{post.get('ext', '')}"
    attachment = {"filename": filename, "md5_b64": str(post["md5"]), "size": post.get("fsize")}
    extras: dict[str, Any] = {"attachment": attachment}
    try:
        md5 = md5_b64_to_hex(str(post["md5"]))
    except ValueError:
        return extras
    extras["digests"] = [{"algo": "md5", "value": md5, "encoding": "base64",
                          "context": f"attachment {filename} ({post.get('fsize', '?')} bytes) "
                                     f"md5 {post['md5']}"}]
    return extras
