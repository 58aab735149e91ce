"""Torznab endpoints (Jackett, Prowlarr): one search over many torrent sites at once.

A target's `url` is the endpoint ending in `/api`: Jackett's
`.../api/v2.0/indexers/all/results/torznab/api` or Prowlarr's `.../{indexerId}/api`. The API
key is read from the environment variable named by `api_key_env`, never from config.toml,
and it never leaves this module: it is stripped from every URL a document carries, scrubbed
from the stored snapshot, and the fetcher logs request URLs with `apikey` redacted.

Each run asks `t=caps` once a day (page size limits, category names), then
`t=search&q=QUERY&cat=...&limit=N&offset=K` page by page while full pages come back, up to
`max_pages`. Both dialects are read: Jackett writes `size`, `files` and `grabs` as plain
elements; Prowlarr (`<rss version="1.0">`) writes `files` and `grabs` as torznab attributes.
The infohash comes from the `infohash` attribute (any case), else from the magnet
(`magneturl` attribute or a magnet link), else from the .torrent itself (fetched and parsed,
at most a few per run and remembered in the cursor). Errors (`<error code= description=>`)
are one line: "torznab error 100: Invalid API Key".

One Document per torrent (the same infohash from several indexers is one document listing
where else it was seen), keyed by infohash (or guid), at the indexer's details page.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit
from xml.etree.ElementTree import Element, ParseError

import structlog
from defusedxml import DefusedXmlException

from fingerprints.indicators import Magnet, btih_to_hex, parse_magnet
from fingerprints.torrent import MAX_TORRENT_BYTES, TorrentError, parse_torrent
from monitor.fetch import SECRET_PARAMS, FetchError, Response, redact_url
from monitor.models import FILE_LIST, Document, FileList
from monitor.parsing import XMLTooLarge, parse_xml
from monitor.sources.base import Source, SourceError, html_text, http_status, off_loop, utc_iso

log = structlog.get_logger("weightwatch.sources.torznab")

DEFAULT_LIMIT = 100  # results per page we ask for when the endpoint's caps do not say
CAPS_TTL = 86400.0  # seconds between t=caps requests
MAX_TORRENT_FETCHES = 10  # .torrent downloads per run for items with no infohash at all
MAX_CACHED_TORRENTS = 2000
MAX_DESCRIPTION = 4000

# Newznab/Torznab standard categories, for names when the endpoint's caps do not give them.
STANDARD_CATEGORIES = {
    1000: "Console", 2000: "Movies", 3000: "Audio", 4000: "PC", 4010: "PC/0day",
    4020: "PC/ISO", 4030: "PC/Mac", 4040: "PC/Mobile-Other", 4050: "PC/Games",
    4060: "PC/Mobile-iOS", 4070: "PC/Mobile-Android", 5000: "TV", 6000: "XXX", 7000: "Books",
    7010: "Books/Mags", 7020: "Books/EBook", 7030: "Books/Comics", 7040: "Books/Technical",
    7050: "Books/Other", 8000: "Other", 8010: "Other/Misc", 8020: "Other/Hashed",
}
# Query parameter names that carry secrets besides fetch.SECRET_PARAMS: Jackett's download
# links use `jackett_apikey`, private trackers `passkey`/`torrent_pass`/`authkey`/`rsskey`.
_SECRET_NAME = re.compile(r"api_?key|pass_?key|torrent_?pass|auth_?key|rss_?key|token|"
                          r"secret|password|signature", re.I)
# The same in a raw response body (the stored snapshot): a secret-looking parameter after
# `?`, `&`, `&amp;` or their percent-encodings (magnets carry tracker URLs encoded), and
# credentials in `//user:password@host`.
_SECRET_PARAM_BYTES = re.compile(
    rb"((?:[?&;]|%26|%3[fF])(?:[A-Za-z_]*api_?key|[A-Za-z_]*pass_?key|torrent_?pass|"
    rb"auth_?key|auth|rss_?key|[A-Za-z_]*token|secret|password|signature|sig|"
    rb"x-amz-signature)(?:=|%3[dD]))(?:(?!%26)[^&\"'<>\s])+", re.I)
_USERINFO_BYTES = re.compile(rb"(//)[^/@\s\"'<>]+@")
_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_B32 = re.compile(r"[A-Za-z2-7]{32}")


class TorznabSource(Source):
    kind = "torznab"
    option_keys = frozenset({"query", "api_key_env", "categories", "max_pages"})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        url = options.get("url")
        if isinstance(url, str):
            try:
                names = [k for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
            except ValueError:
                names = []
            if any(_is_secret_param(k) for k in names):
                problems.append(("url", "carries an API key; put the key in an environment "
                                        "variable and name it in api_key_env"))
        for value in options.get("categories", []):
            if isinstance(value, int) and value < 0:
                problems.append(("categories", f"category ids are non-negative, got {value}"))
                break
        return problems

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._key: str | None = None

    # ----------------------------------------------------------------- the crawl

    async def documents(self) -> AsyncIterator[Document]:
        self._key = self._api_key()
        caps = await self._caps()
        page_cap = _positive(caps.get("max")) or _positive(caps.get("default")) or DEFAULT_LIMIT
        categories = {int(k): v for k, v in caps.get("categories", {}).items()
                      if isinstance(k, str) and k.isdigit() and isinstance(v, str)}
        docs: dict[str, Document] = {}
        seen_items: set[str] = set()
        offset = 0
        for _page in range(self.target.max_pages):
            remaining = self.target.max_items - len(docs)
            if remaining <= 0:
                break
            limit = max(1, min(page_cap, DEFAULT_LIMIT, remaining))
            try:
                response = await self._get(self._search_params(limit, offset))
                items = await off_loop(parse_feed, response.body, self._safe(response.url))
            except (SourceError, FetchError) as exc:
                if _page == 0:
                    raise
                # Pages already read stay good (an indexer's request limit, say).
                log.warning("torznab_paging_stopped", offset=offset, reason=str(exc))
                break
            snapshot = self._scrub_bytes(response.body)
            fresh = 0
            for item in items:
                ident = item.get("guid") or item.get("link") or item.get("title") or ""
                if ident not in seen_items:
                    seen_items.add(ident)
                    fresh += 1
                self._add(docs, item, categories, snapshot, response)
            if len(items) < limit or fresh == 0:
                break  # a short page is the last; a repeated one means offset is ignored
            offset += len(items)
        out = list(docs.values())[: self.target.max_items]
        await self._fill_from_torrents(out)
        for doc in out:
            yield doc

    def _api_key(self) -> str | None:
        env = self.target.api_key_env
        if not env:
            return None
        key = self.target.api_key()
        if not key:
            raise SourceError(f"environment variable {env} (api_key_env) is not set: "
                              "the Torznab API key is read from it")
        return key

    def _search_params(self, limit: int, offset: int) -> list[tuple[str, str]]:
        params = [("t", "search")]
        if self.target.query:
            params.append(("q", self.target.query))
        if self.target.categories:
            params.append(("cat", ",".join(str(c) for c in self.target.categories)))
        params += [("limit", str(limit)), ("offset", str(offset))]
        return params

    def _url(self, params: list[tuple[str, str]]) -> str:
        parts = urlsplit(self.target.url)
        ours = {k for k, _ in params} | {"apikey"}
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                if k not in ours]
        if self._key:
            params = params + [("apikey", self._key)]
        return urlunsplit((parts.scheme, parts.netloc, parts.path,
                           urlencode(kept + params), ""))

    async def _get(self, params: list[tuple[str, str]]) -> Response:
        url = self._url(params)
        try:
            return await self.fetcher.get(url, self.target)
        except FetchError as exc:
            message = self._scrub(str(exc))
            status = http_status(exc)
            # The fetcher does not hand on a 4xx body, so a Jackett <error code="100"> under
            # 401 is known by its status only.
            if status in (400, 401, 403):
                hint = (f" (is the API key in {self.target.api_key_env} right?)"
                        if status in (401, 403) and self.target.api_key_env else "")
                raise TorznabRefused(f"torznab endpoint refused the request: {message}{hint}") \
                    from None
            if message == str(exc):
                raise
            raise FetchError(message) from None

    async def _caps(self) -> dict[str, Any]:
        cached = self.cursor.get("caps")
        if isinstance(cached, dict) and isinstance(cached.get("categories"), dict) \
                and isinstance(cached.get("fetched"), (int, float)) \
                and 0 <= time.time() - cached["fetched"] < CAPS_TTL:
            return cached
        try:
            response = await self._get([("t", "caps")])
            caps = await off_loop(parse_caps, response.body, self._safe(response.url))
        except TorznabError as exc:
            if exc.code in (100, 101, 102):  # bad, suspended or missing API key
                raise
            log.info("torznab_caps_unavailable", reason=str(exc))
            return {}
        except TorznabRefused:
            raise
        except SourceError as exc:
            log.info("torznab_caps_unavailable", reason=str(exc))
            return {}
        except FetchError as exc:
            log.info("torznab_caps_unavailable", reason=str(exc))
            return {}
        caps["fetched"] = time.time()
        self.cursor["caps"] = caps
        return caps

    # ----------------------------------------------------------------- documents

    def _add(self, docs: dict[str, Document], item: dict[str, Any],
             categories: dict[int, str], snapshot: bytes, response: Response) -> None:
        attrs: dict[str, str] = item["attrs"]
        title = self._scrub(" ".join((item.get("title") or attrs.get("title") or "").split())
                            ) or "(untitled)"
        magnet_raw = attrs.get("magneturl") or next(
            (v for v in (item.get("link"), item.get("enclosure_url"), item.get("guid"),
                         item.get("comments")) if v and v[:7].lower() == "magnet:"), None)
        magnet = parse_magnet_safely(magnet_raw)
        btih, btmh, encoding = None, None, "torznab attr"
        raw_hash = (attrs.get("infohash") or "").strip()
        if _HEX40.fullmatch(raw_hash) or _B32.fullmatch(raw_hash):
            btih = btih_to_hex(raw_hash)
        elif _HEX64.fullmatch(raw_hash):
            btmh = raw_hash.lower()
        if magnet is not None:
            if btih is None and btmh is None:
                encoding = "magnet"
            btih = btih or magnet.btih
            btmh = btmh or magnet.btmh
        download_raw = next((v for v in (item.get("link"), item.get("enclosure_url"))
                             if v and v[:7].lower() != "magnet:"), None)
        download = self._clean_url(download_raw)
        details = next((u for u in (self._clean_url(item.get("comments")),
                                    self._clean_url(item.get("guid")))
                        if u and u.startswith(("http://", "https://"))), None)
        indexer = self._scrub(item.get("indexer") or "")
        key = btih or btmh or self._scrub(item.get("guid") or "") or details or download \
            or f"title:{title}"
        if key in docs:
            other = docs[key].extras["torrent"]
            also = other.setdefault("also_at", [])
            place = {"indexer": indexer, "url": details}
            if place not in also and len(also) < 20:
                also.append(place)
            return

        # Jackett writes size, files and grabs as elements, Prowlarr files and grabs as
        # attributes; the enclosure's length is the last resort for the size.
        size = _first_int(item.get("size"), attrs.get("size"), item.get("enclosure_length"))
        files = _first_int(item.get("files"), attrs.get("files"))
        grabs = _first_int(item.get("grabs"), attrs.get("grabs"))
        cat_ids = []
        for raw in item["categories"]:
            value = _int(raw)
            if value is not None and value not in cat_ids:
                cat_ids.append(value)
        cat_names = [categories.get(c) or STANDARD_CATEGORIES.get(c) or str(c) for c in cat_ids]
        description = item.get("description") or ""
        if "<" in description:
            description = html_text(description)
        description = self._scrub(description)[:MAX_DESCRIPTION]
        clean_magnet = self._clean_magnet(magnet_raw) if magnet is not None else None

        lines = [title]
        if size is not None:
            lines.append(f"Size: {human_size(size)} ({size} bytes)")
        if files is not None:
            lines.append(f"Files: {files}")
        if cat_names:
            lines.append("Category: " + ", ".join(cat_names))
        if indexer:
            lines.append(f"Indexer: {indexer}")
        if description:
            lines.append(description)
        digests = []
        context = f"{title} [{indexer}]" if indexer else title
        if btih:
            digests.append({"algo": "btih", "value": btih, "encoding": encoding,
                            "context": f"{context}: infohash {btih}"})
        if btmh:
            digests.append({"algo": "btmh", "value": btmh, "encoding": encoding,
                            "context": f"{context}: v2 infohash {btmh}"})
        links = [link for link in (clean_magnet, download) if link]
        docs[key] = Document(
            target=self.target.name, key=key,
            url=details or self._safe(self.target.url), title=title,
            text="\n".join(lines), posted_at=_rfc822(item.get("pubdate")), links=links,
            extras={
                "torrent": {"name": title, "size": size, "files": files,
                            "infohash": btih or btmh, "magnet": clean_magnet,
                            "download": download, "indexer": indexer or None,
                            "categories": cat_ids},
                "digests": digests,
                # Swarm counts change every run; kept out of the content hash (see Document).
                "stats": {"seeders": _int(attrs.get("seeders")),
                          "peers": _int(attrs.get("peers")), "grabs": grabs},
                # Not stored: the download URL as served (it may carry the API key), used
                # below to read the infohash from the .torrent when nothing else gives it.
                "_download": download_raw if not (btih or btmh) else None,
            },
            snapshot=snapshot, snapshot_url=self._safe(response.url),
            fetched_at=response.fetched_at)
        if size is not None:  # an item lists no files, but states the total exactly
            total: FileList = {"label": "torrent listing", "name": title, "total_size": size}
            docs[key].extras[FILE_LIST] = total

    async def _fill_from_torrents(self, docs: list[Document]) -> None:
        """Items with neither an infohash nor a magnet: read the hash from the .torrent."""
        cache = self.cursor.get("torrents")
        cache = dict(cache) if isinstance(cache, dict) else {}
        budget = MAX_TORRENT_FETCHES
        for doc in docs:
            raw = doc.extras.pop("_download", None)
            if not raw:
                continue
            clean = doc.extras["torrent"]["download"] or raw
            entry = cache.pop(clean, None)
            if entry is None:
                if budget <= 0 or not self._safe_to_fetch(raw):
                    continue
                budget -= 1
                entry = await self._read_torrent(raw)
                if entry is None:
                    continue
            cache[clean] = entry  # re-inserted: most recently used last
            self._apply_torrent(doc, entry)
        for doc in docs:
            doc.extras.pop("_download", None)
        while len(cache) > MAX_CACHED_TORRENTS:
            cache.pop(next(iter(cache)))
        if cache:
            self.cursor["torrents"] = cache

    def _safe_to_fetch(self, url: str) -> bool:
        # The fetcher logs URLs through redact_url; fetch only what it fully redacts.
        return not self._key or not self._contains_key(redact_url(url))

    async def _read_torrent(self, url: str) -> dict[str, Any] | None:
        try:
            response = await self.fetcher.get(url, self.target, max_bytes=MAX_TORRENT_BYTES)
            info = await off_loop(parse_torrent, response.body)
        except (FetchError, TorrentError) as exc:
            log.warning("torznab_torrent_unreadable", url=self._clean_url(url),
                        reason=self._scrub(str(exc)))
            return None
        return {"infohash_v1": info.infohash_v1, "infohash_v2": info.infohash_v2,
                "version": info.version, "total_size": info.total_size,
                "file_count": len(info.files)}

    def _apply_torrent(self, doc: Document, entry: dict[str, Any]) -> None:
        t = doc.extras["torrent"]
        t["infohash"] = entry.get("infohash_v1") or entry.get("infohash_v2")
        t["infohash_v2"] = entry.get("infohash_v2")
        t["version"] = entry.get("version")
        for algo, name in (("btih", "infohash_v1"), ("btmh", "infohash_v2")):
            if entry.get(name):
                doc.extras["digests"].append({
                    "algo": algo, "value": entry[name], "encoding": "torrent file",
                    "context": f"{doc.title}: {name.replace('_', ' ')} {entry[name]} "
                               "(read from the .torrent)"})

    # ----------------------------------------------------------------- secrets

    def _key_forms(self) -> list[str]:
        if not self._key:
            return []
        return sorted({self._key, quote(self._key, safe=""), quote_plus(self._key)},
                      key=len, reverse=True)

    def _contains_key(self, text: str) -> bool:
        return any(form in text for form in self._key_forms())

    def _scrub(self, text: str) -> str:
        for form in self._key_forms():
            text = text.replace(form, "REDACTED")
        return text

    def _scrub_bytes(self, body: bytes) -> bytes:
        for form in self._key_forms():
            body = body.replace(form.encode("utf-8"), b"REDACTED")
        body = _SECRET_PARAM_BYTES.sub(rb"\1REDACTED", body)
        return _USERINFO_BYTES.sub(rb"\1REDACTED@", body)

    def _safe(self, url: str) -> str:
        return self._clean_url(url) or ""

    def _clean_url(self, url: str | None) -> str | None:
        """The URL with secret query parameters and credentials removed, and the API key
        replaced wherever else it appears (some trackers put passkeys in the path)."""
        if not url:
            return None
        url = url.strip()
        if url[:7].lower() == "magnet:":
            return self._clean_magnet(url)
        try:
            parts = urlsplit(url)
            pairs = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError:
            return None
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = urlencode([(k, v) for k, v in pairs if not _is_secret_param(k)], safe=":/")
        return self._scrub(urlunsplit((parts.scheme, netloc, parts.path, query, "")))

    def _clean_magnet(self, magnet: str | None) -> str | None:
        if not magnet:
            return None
        query = magnet.strip()[7:].removeprefix("?").replace("&amp;", "&")
        out = []
        for k, v in parse_qsl(query, keep_blank_values=True):
            if _is_secret_param(k):
                continue
            if k.split(".", 1)[0].lower() in ("tr", "as", "xs", "ws"):
                cleaned = self._clean_url(v)
                if not cleaned:
                    continue
                v = cleaned
            out.append(f"{k}={quote(v, safe=':' if k.lower().startswith('xt') else '')}")
        return self._scrub("magnet:?" + "&".join(out))


# --------------------------------------------------------------------- parsing (pure)


class TorznabRefused(SourceError):
    """HTTP 400, 401 or 403 from the endpoint: a bad key or request, not a broken page."""


class TorznabError(SourceError):
    """An `<error code= description=>` answer."""

    def __init__(self, code: int | None, description: str):
        self.code = code
        label = f"torznab error {code}" if code is not None else "torznab error"
        super().__init__(f"{label}: {description}" if description else label)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _xml(body: bytes, url: str) -> Element:
    try:
        return parse_xml(body)
    except ParseError as exc:
        raise SourceError(f"torznab response from {url} is not well-formed XML: "
                          f"{str(exc).splitlines()[0]}") from None
    except XMLTooLarge as exc:
        raise SourceError(f"torznab response from {url} was refused: {exc}") from None
    except DefusedXmlException as exc:
        raise SourceError(f"torznab response from {url} was refused: "
                          f"{type(exc).__name__} (DTDs and entities are not accepted)") from None


def _root(body: bytes, url: str, expected: str, complaint: str) -> Element:
    """The root element of a Torznab answer, which must be <expected>: any request may be
    answered with <error code= description=> instead (TorznabError), and anything else is
    a SourceError worded by `complaint` (its {url} and {tag} filled in)."""
    root = _xml(body, url)
    tag = _local(root.tag)
    if tag == "error":
        raise _error(root)
    if tag != expected:
        raise SourceError(complaint.format(url=url, tag=tag[:40]))
    return root


def _error(node: Element) -> TorznabError:
    code = _int(node.get("code"))
    description = " ".join((node.get("description") or node.text or "").split())[:200]
    return TorznabError(code, description)


def parse_feed(body: bytes, url: str) -> list[dict[str, Any]]:
    """A Torznab search response as raw items: plain child elements by lowercase local
    name, `attrs` (torznab:attr name -> value, first wins), `categories`, enclosure and
    indexer. Raises TorznabError for an `<error>` answer, SourceError for anything else
    that is not an RSS feed."""
    root = _root(body, url, "rss", "not a Torznab feed at {url}: the root element is <{tag}>")
    channel = next((c for c in root if _local(c.tag) == "channel"), None)
    if channel is None:
        raise SourceError(f"not a Torznab feed at {url}: <rss> has no <channel>")
    items = []
    for node in channel:
        if _local(node.tag) != "item":
            continue
        item: dict[str, Any] = {"attrs": {}, "categories": []}
        for child in node:
            name = _local(child.tag)
            text = (child.text or "").strip()
            if name == "attr":
                attr = (child.get("name") or "").strip().lower()
                value = (child.get("value") or "").strip()
                if attr == "category":
                    item["categories"].append(value)
                elif attr:
                    item["attrs"].setdefault(attr, value)
            elif name == "category":
                item["categories"].append(text)
            elif name == "enclosure":
                item.setdefault("enclosure_url", (child.get("url") or "").strip())
                item.setdefault("enclosure_length", (child.get("length") or "").strip())
            elif name in ("jackettindexer", "prowlarrindexer", "indexer"):
                item.setdefault("indexer", " ".join(text.split()))
            elif name:
                item.setdefault(name, text)
        items.append(item)
    return items


def parse_caps(body: bytes, url: str) -> dict[str, Any]:
    """`t=caps`: {"max": int|None, "default": int|None, "categories": {"id": "name"}}."""
    root = _root(body, url, "caps", "not a Torznab caps document at {url}: the root is <{tag}>")
    caps: dict[str, Any] = {"max": None, "default": None, "categories": {}}
    for node in root:
        name = _local(node.tag)
        if name == "limits":
            caps["max"] = _positive(node.get("max"))
            caps["default"] = _positive(node.get("default"))
        elif name == "categories":
            for cat in node:
                if _local(cat.tag) != "category":
                    continue
                for c in [cat, *(s for s in cat if _local(s.tag) == "subcat")]:
                    cid, cname = _int(c.get("id")), " ".join((c.get("name") or "").split())
                    if cid is not None and cname and len(caps["categories"]) < 5000:
                        caps["categories"][str(cid)] = cname[:100]
    return caps


def parse_magnet_safely(uri: str | None) -> Magnet | None:
    if not uri:
        return None
    try:
        return parse_magnet(uri)
    except ValueError:
        return None


def _is_secret_param(name: str) -> bool:
    return name.lower() in SECRET_PARAMS or bool(_SECRET_NAME.search(name))


def _int(value: Any) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text)
    return None


def _first_int(*values: Any) -> int | None:
    return next((n for n in map(_int, values) if n is not None), None)


def _positive(value: Any) -> int | None:
    n = _int(value)
    return n if n else None


def _rfc822(value: str | None) -> str | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # No zone, or -0000 ("zone unknown"), leaves the indexer's local time: no time beats a
    # wrong one.
    return utc_iso(moment) if moment.tzinfo is not None else None


def human_size(size: int) -> str:
    """Binary units as torrent sites show them: 1.7 MiB, 4.6 GiB."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"
