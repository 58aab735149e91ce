"""A remote weight file read by HTTP Range requests, within a byte budget.

Why: confirming a leak means fingerprinting rows of a suspect file, and that file is
usually gigabytes on someone else's server. The readers in `fingerprints/` need only its
header and a few rows, through a `ByteSource`; `RemoteSource` is that source over HTTP.
Each read is one Range request through the crawler's `Fetcher`, so it gets the same SSRF
checks (every redirect hop, DNS pinning), robots.txt, per-host politeness, retries and
secret redaction as any page, and a budget caps what one file may cost.

The readers are synchronous and the fetcher lives on an asyncio loop, so a source is
opened on the loop and read from a worker thread, which hands each request to the loop
and waits for it:

    source = await open_remote(url, fetcher, target, budget=8 << 20)
    reader = await asyncio.to_thread(open_safetensors, source)
    rows = await asyncio.to_thread(reader.read_rows, reader.tensors[0], [0, 1])

or, opening, reading and closing in one step:

    names = await scan_remote(url, fetcher, target,
                              lambda s: [t.name for t in open_gguf(s).tensors], budget=8 << 20)

Reading on the loop's own thread would wait for itself forever; it raises RuntimeError.

What a remote file may not do: change while it is read (the first answer's ETag, or else
its Last-Modified, goes with every later request as If-Range, and a new ETag or size is
caught too); lie about which bytes it sent (the Content-Range of every answer must be
exactly the range asked for, and the body that long); or make us download it whole (a
server that ignores Range is accepted only if the whole file fits the budget and the
crawl's max_response_bytes, and the fetcher's size cap stops the body otherwise). Every
failure is a `WeightFileError` whose message is one line with the URL's secrets redacted,
so callers catch one type.

Threads: reads take a lock, so the counters and the block cache stay consistent, but the
source is meant for one reader thread at a time: concurrent reads simply queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote as quote_path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from fingerprints.tensors import WeightFileError, _NamedSource, check_range, quote
from monitor.config import Target
from monitor.fetch import Fetcher, FetchError, Response, redact_url

T = TypeVar("T")

# Every reader starts with the header: safetensors reads 8 bytes then its JSON header
# (about 11 KiB for a small BERT), GGUF its first 64 KiB, archives their first bytes. One
# request of this size answers all of those and tells us the file's size.
HEAD_CHUNK = 64 * 1024
# A read shorter than this fetches this much around it and keeps it: the readers' small
# reads (a row of a few KiB, a zip local header, the next field) tend to come in runs, and
# a request costs a round trip plus the fetcher's per-host spacing, worth far more than
# 16 KiB of transfer. Large reads (GGUF's 128 KiB..1 MiB header chunks, runs of rows) are
# fetched exactly, so read-ahead never costs more than this.
MIN_READ = 16 * 1024
BLOCKS = 8  # read-ahead blocks kept, least recently used dropped first: 128 KiB at most

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", re.IGNORECASE)
# How Fetcher words a body larger than max_bytes ("... over the N-byte cap" when declared,
# "... exceeded the N-byte cap" when streamed); it carries no status, so the text is all
# there is to tell it from other failures.
_OVER_CAP = re.compile(r"-byte cap$")


class RemoteError(WeightFileError):
    """A remote file that could not be read: the fetcher failed, or the server misbehaved.
    `status` is the HTTP status when the server answered with an error, else None."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class BudgetExceeded(WeightFileError):
    """A read the byte budget cannot pay for; raised before anything is requested."""


class _Unsatisfiable(RemoteError):
    """HTTP 416: no byte of the range asked for is in the file."""


class RemoteSource(_NamedSource):
    """A `ByteSource` over HTTP Range requests; make one with `open_remote`.

    `bytes_read` counts bytes actually transferred (cache hits are free, read-ahead is
    not), `requests` the requests made, failed ones included. `budget` bounds
    `bytes_read`; `etag` is the first answer's ETag (None if the server sent none).
    """

    def __init__(self, url: str, fetcher: Fetcher, target: Target,
                 loop: asyncio.AbstractEventLoop, *, budget: int,
                 sharing: RemoteSource | None = None):
        if budget < 1:
            raise ValueError(f"budget must be at least 1 byte, got {budget}")
        self._name = redact_url(url)
        self._size = 0
        self._url = url
        self._requested = url  # (`_url` follows the first answer's redirects)
        self._fetcher = fetcher
        self._target = target
        self._loop = loop
        self.budget = budget
        self.bytes_read = 0
        # Sources opened for one scan (a model and its side files) pay from one budget.
        self._party: list[RemoteSource] = sharing._party if sharing is not None else []
        self._party.append(self)
        self.requests = 0
        self.etag: str | None = None
        self._last_modified: str | None = None
        self._if_range: str | None = None
        self._head = b""
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._whole_cap = min(budget, fetcher.settings.max_response_bytes)
        self._opened = False  # the head request answered: the size and validators are known
        self._closed = False

    # --- ByteSource ---------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        check_range(self, offset, length)
        if length == 0:
            return b""
        with self._lock:
            if self._closed:
                raise RemoteError(f"{self.name}: source closed, not reading bytes {offset}.."
                                  f"{offset + length}")
            cached = self._cached(offset, length)
            if cached is not None:
                return cached
            start, end = self._plan(offset, length)
            data = self._on_loop(self._fetch(start, end))
            if end - start > length:
                self._blocks[start] = data
                if len(self._blocks) > BLOCKS:
                    self._blocks.popitem(last=False)
            return data[offset - start:offset - start + length]

    def close(self) -> None:
        """Refuse further reads (a reader thread still running stops at its next read); a
        model's side files close with it."""
        for source in self._party:
            source._closed = True

    # --- cache and budget --------------------------------------------------------------

    def _cached(self, offset: int, length: int) -> bytes | None:
        if offset + length <= len(self._head):
            return self._head[offset:offset + length]
        for start, data in self._blocks.items():
            if start <= offset and offset + length <= start + len(data):
                self._blocks.move_to_end(start)
                return data[offset - start:offset - start + length]
        return None

    def _plan(self, offset: int, length: int) -> tuple[int, int]:
        """The bytes [start, end) to fetch for a read: exactly the read, or for a short one
        up to MIN_READ around it, inside the file and never paid for beyond the budget."""
        left = self._left()
        if length > left:
            raise BudgetExceeded(f"{self.name}: reading {length} more bytes would exceed the "
                                 f"{self.budget}-byte budget ({self.budget - left} bytes read)")
        if length >= MIN_READ:
            return offset, offset + length
        span = min(MIN_READ, left, self._size)
        # Near the end the block reaches back instead of past the end: archives read their
        # directory from the tail, backwards.
        start = min(offset, self._size - span)
        return start, start + span

    def _left(self) -> int:
        return self.budget - sum(s.bytes_read for s in self._party)

    # --- requests (on the loop) ----------------------------------------------------------

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("RemoteSource.read blocks until the event loop answers, so it "
                               "must run in a worker thread (asyncio.to_thread), not on the loop")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:
            coro.close()
            raise
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise RemoteError(f"{self.name}: request cancelled (the event loop is shutting "
                              f"down)") from None

    async def _get(self, start: int, end: int, cap: int) -> Response:
        """GET bytes start..end (inclusive, as Range counts); fetcher failures become
        RemoteError, a body over `cap` a "not honouring Range" error."""
        # identity: a compressed answer's Content-Range counts compressed bytes.
        headers = {"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        if self._if_range:
            headers["If-Range"] = self._if_range
        self.requests += 1
        try:
            return await self._fetcher.get(self._url, self._target, headers=headers,
                                           max_bytes=cap)
        except FetchError as exc:
            if exc.status == 416:
                raise _Unsatisfiable(str(exc), status=416) from None
            if exc.status is None and _OVER_CAP.search(str(exc)):
                raise RemoteError(f"{self._wholesale(start, end)} ({exc})") from None
            # The fetcher names the URL it failed on, which may be a redirect hop: say which
            # file it was for, once.
            text = str(exc) if self.name in str(exc) else f"{self.name}: {exc}"
            raise RemoteError(text, status=exc.status) from None

    def _wholesale(self, start: int, end: int) -> str:
        """Why a server answers a Range request with more than the range."""
        if not self._opened:
            return f"{self.name}: server ignores Range requests, and the whole file is over " \
                   f"{self._whole_cap} bytes (the budget, or crawl.max_response_bytes if smaller)"
        if self._if_range:
            return f"{self.name}: file changed while being read: bytes {start}-{end} with " \
                   f"If-Range {quote(self._if_range)} got the whole file back"
        return f"{self.name}: server stopped honouring Range requests at bytes {start}-{end}"

    async def _open(self) -> None:
        head = min(HEAD_CHUNK, self._left())
        if head < 1:
            raise BudgetExceeded(f"{self.name}: the {self.budget}-byte budget is spent")
        self._whole_cap = min(self._whole_cap, self._left())
        try:
            # A server ignoring Range sends the whole file: acceptable if the budget pays for
            # it and it is no bigger than any other response may be (it is kept in memory).
            response = await self._get(0, head - 1, cap=self._whole_cap)
        except _Unsatisfiable:
            # A range from byte 0 is unsatisfiable only in an empty file. (The fetcher keeps
            # a 416's headers to itself, so its `Content-Range: bytes */0` goes unread.)
            self._opened = True
            return
        self.bytes_read += len(response.body)
        # Later requests skip the redirect hops (the fetcher still checks the address).
        self._url = response.url
        self.etag = response.etag
        self._last_modified = response.last_modified
        if response.status == 200:
            self._head = response.body
            self._size = len(response.body)
        elif response.status == 206:
            total = self._check_partial(response, 0, head - 1, None)
            self._size = total
            self._head = response.body
        else:
            raise RemoteError(f"{self.name}: unexpected HTTP {response.status} to a Range "
                              f"request", status=response.status)
        self._opened = True
        # If-Range wants a strong validator: a weak ETag may stay put across a new upload.
        if self.etag and not self.etag.startswith("W/"):
            self._if_range = self.etag
        else:
            self._if_range = self._last_modified

    async def _fetch(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file as it was when opened."""
        try:
            response = await self._get(start, end - 1, cap=end - start)
        except _Unsatisfiable as exc:
            raise RemoteError(f"{self.name}: file changed while being read: bytes {start}-"
                              f"{end - 1} are no longer in it ({exc})", status=416) from None
        self.bytes_read += len(response.body)
        if response.status == 200:
            raise RemoteError(f"{self._wholesale(start, end - 1)} (HTTP 200)")
        if response.status != 206:
            raise RemoteError(f"{self.name}: unexpected HTTP {response.status} to a Range "
                              f"request", status=response.status)
        self._check_partial(response, start, end - 1, self._size)
        for now, then, what in ((response.etag, self.etag, "ETag"),
                                (response.last_modified, self._last_modified, "Last-Modified")):
            if now and then and now != then:
                raise RemoteError(f"{self.name}: file changed while being read: its {what} "
                                  f"went from {quote(then)} to {quote(now)}")
        return response.body

    def _check_partial(self, response: Response, start: int, end: int,
                       size: int | None) -> int:
        """The file size a 206 answer gives, after checking it is exactly bytes start..end
        (clipped to the file's end when the size is not known yet) and nothing else."""
        value = response.headers.get("content-range", "")
        match = _CONTENT_RANGE.fullmatch(value)
        if not match:
            raise RemoteError(f"{self.name}: HTTP 206 for bytes {start}-{end} with Content-Range "
                              f"{quote(value)}, not bytes FIRST-LAST/SIZE")
        first, last, total = match.groups()
        if total == "*":
            raise RemoteError(f"{self.name}: Content-Range {quote(value)} does not give the "
                              f"file size")
        total_n = int(total)
        if size is not None and total_n != size:
            raise RemoteError(f"{self.name}: file changed while being read: its size went "
                              f"from {size} to {total_n} bytes")
        want_last = min(end, total_n - 1)
        if (int(first), int(last)) != (start, want_last):
            raise RemoteError(f"{self.name}: asked for bytes {start}-{want_last}, the server "
                              f"answered Content-Range {quote(value)}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RemoteError(f"{self.name}: the server sent bytes {start}-{want_last} "
                              f"{quote(encoding)}-encoded, not as they are in the file")
        if len(response.body) != want_last - start + 1:
            raise RemoteError(f"{self.name}: Content-Range {quote(value)} promises "
                              f"{want_last - start + 1} bytes but the body has "
                              f"{len(response.body)}")
        return total_n


def remote_siblings(model: RemoteSource) -> Callable[[str], RemoteSource]:
    """An `open_sibling` for a remote ONNX model: its external data read by range from the
    same folder of the same server, through the same fetcher and target (SSRF checks,
    robots, politeness) and out of the model's own byte budget. The location comes from the
    untrusted model: one that resolves to another origin or outside the model's URL folder
    (absolute, `..`, percent-encoded or not) is OutsideFolder, never requested. Called from
    the reader's worker thread; the side file's first request runs on the model's loop."""
    from fingerprints.onnx import OutsideFolder

    base = urlsplit(model._requested)
    folder = base.path[:base.path.rfind("/") + 1]

    def open_sibling(location: str) -> RemoteSource:
        plain = unquote(location).replace("\\", "/")
        target = urlsplit(urljoin(model._requested, quote_path(location, safe="/")))
        parts = plain.split("/")
        if (plain.startswith("/") or ":" in parts[0] or any(p in ("..", ".") for p in parts)
                or (target.scheme, target.netloc) != (base.scheme, base.netloc)
                or not target.path.startswith(folder) or target.query or target.fragment):
            raise OutsideFolder(f"external data {quote(location)} resolves outside the "
                                "model's URL folder")
        sibling = RemoteSource(urlunsplit(target), model._fetcher, model._target, model._loop,
                               budget=model.budget, sharing=model)
        model._on_loop(sibling._open())
        return sibling

    return open_sibling


async def open_remote(url: str, fetcher: Fetcher, target: Target, *,
                      budget: int) -> RemoteSource:
    """Open `url` for ranged reads: one request for its head (HEAD_CHUNK bytes, or the
    budget if smaller) on the running loop, which must be the fetcher's; the source's
    reads then go through this loop from worker threads. WeightFileError if the file
    cannot be read by range within `budget` bytes."""
    source = RemoteSource(url, fetcher, target, asyncio.get_running_loop(), budget=budget)
    await source._open()
    return source


async def scan_remote(url: str, fetcher: Fetcher, target: Target,
                      fn: Callable[[RemoteSource], T], *, budget: int) -> T:
    """`fn(source)` run in a worker thread over the remote file at `url`; the source is
    closed afterwards, also when the caller is cancelled, so the thread stops at its next
    read instead of spending the rest of the budget for nobody."""
    source = await open_remote(url, fetcher, target, budget=budget)
    try:
        return await asyncio.to_thread(fn, source)
    finally:
        source.close()
