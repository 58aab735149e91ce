"""Direct file hosts: which links point at one, and how each host gives up its file.

Leaked weights are posted as links to file hosts as often as to a hub. A host is one of:

- `direct`: the link is the file, served with HTTP Range (a path without a weight
  extension included: the host's Content-Disposition names the file);
- `page`: the link is a page about the file and the file is elsewhere; a resolver, a pure
  function over what the page (or the host's public file API) says, gives the direct link
  and what the host states about the file (name, size, SHA-256), never by running the
  page's scripts;
- `unscannable`: the file cannot be read without an account or a key the link does not
  give the server; such a link is recorded for the analyst (`inconclusive` in
  `weight_scans`, with the reason and the name the link states), never fetched.

The shapes, from each host's public documentation and stored copies of its answers:

- Pixeldrain (pixeldrain.com/net, pixeldra.in): `/u/{id}` is a viewer page; its public
  API (pixeldrain.com/api, "File Methods") has `GET /api/file/{id}` (the file, "supports
  byte range requests", Content-Disposition with the name) and `GET /api/file/{id}/info`,
  JSON `{"success", "id", "name", "size", "mime_type", "date_upload", "hash_sha256", ...}`
  (the fields and types as gallery-dl's recorded answers of real files have them).
- MediaFire: `/file/{key}/{name}/file` is a page whose download button
  `<a id="downloadButton" href="https://download…mediafire.com/…/{name}">` is the direct
  link (what every MediaFire downloader reads, `a#downloadButton[href]`).
- Hugging Face: `/{repo}/blob/{rev}/{path}` is the file's page; `/{repo}/resolve/{rev}/
  {path}` the file, whose redirect states its SHA-256 (`X-Linked-Etag`, as
  huggingface_hub's `get_hf_file_metadata` reads it).
- Gofile: `/d/{code}` is a script-built page over an API (`api.gofile.io/contents/{code}`)
  that wants an account's token (`Authorization: Bearer`, a guest account made by `POST
  /accounts`) and a token the site's obfuscated script derives: unscannable (we make no
  accounts on other people's services).
- MEGA: `/file/{handle}#{key}` and `/#!{handle}!{key}`: files are encrypted in the browser
  with the key after `#`, which is never sent to the server: unscannable.
- Range-serving hosts whose links are the file: catbox.moe's files.catbox.moe, 0x0.st,
  transfer.sh, Discord's attachment CDN.

An operator (and the demo world, and the tests, which live on loopback) maps more URL
prefixes to these hosts with `[scan] file_hosts` (a mirror domain, a private instance).
Nothing here fetches: `monitor.scan.scan_link` fetches the page through the crawler's
Fetcher (SSRF checks on every hop, robots, politeness) and hands it to the resolver.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

Way = Literal["direct", "page", "unscannable"]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_MAX_NAME = 255


class ResolveError(ValueError):
    """A host's page or API answer that does not say where its file is (one line)."""


@dataclass(frozen=True)
class Resolved:
    """What a host states about its file: where to read it (None: nowhere we may), and
    the name, size and SHA-256 it gives for it, each None when not stated."""

    url: str | None
    name: str | None = None
    size: int | None = None
    sha256: str | None = None
    mime_type: str | None = None
    reason: str | None = None  # why there is no `url`


@dataclass(frozen=True)
class FileHost:
    """One host: its names, how its links look (`path` matches what follows the host or
    the configured prefix) and how its file is reached."""

    name: str
    domains: tuple[str, ...]
    way: Way
    path: re.Pattern[str]
    # `page`: the URL whose answer the resolver reads, from the link's match and base.
    page: Callable[[re.Match[str], str], str] | None = None
    # `direct`: where the file is, when the link is a page whose file URL it implies.
    file: Callable[[re.Match[str], str], str] | None = None
    resolve: Callable[[bytes, str, re.Match[str], str], Resolved] | None = None
    # `unscannable`: why, for the analyst.
    reason: str = ""


@dataclass(frozen=True)
class HostLink:
    """A link recognised as a file host's: the host, the path match, and the base URL
    (scheme, host and configured prefix) its other URLs are made from."""

    url: str
    host: FileHost
    match: re.Match[str]
    base: str

    @property
    def name(self) -> str | None:
        """The file name the link itself carries, if any (a last path part without an
        extension is an upload's id, not a name)."""
        named = self.match.groupdict().get("name")
        name = _clean_name(unquote(named)) if named else None
        return name if name and "." in name.strip(".") else None

    def page_url(self) -> str | None:
        return self.host.page(self.match, self.base) if self.host.page else None

    def file_url(self) -> str:
        """Where a `direct` host's file is: the link itself, or the URL it implies."""
        return self.host.file(self.match, self.base) if self.host.file else self.url

    def resolve(self, body: bytes, page_url: str) -> Resolved:
        """The host's resolver over the page it answered; ResolveError if it says nothing
        usable. Pure: no fetch, no script run."""
        if self.host.resolve is None:
            raise ResolveError(f"{self.host.name} has no resolver")
        return self.host.resolve(body, page_url, self.match, self.base)


def _clean_name(name: str) -> str | None:
    """A stated file name as it may be shown: its last path part, no control characters,
    bounded; None if nothing is left."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()[:_MAX_NAME]
    return name or None


# --- resolvers ------------------------------------------------------------------------


def _pixeldrain_page(match: re.Match[str], base: str) -> str:
    return f"{base}/api/file/{match['id']}/info"


def _pixeldrain(body: bytes, page_url: str, match: re.Match[str], base: str) -> Resolved:
    """`/api/file/{id}/info`: the file's name, size, type and SHA-256; the file itself is
    `/api/file/{id}` on the same host, whatever the page says (a hostile answer cannot
    send the scan elsewhere)."""
    try:
        info = json.loads(body)
    except (ValueError, RecursionError):
        raise ResolveError(f"{page_url}: the file info is not JSON") from None
    if not isinstance(info, dict):
        raise ResolveError(f"{page_url}: the file info is not a JSON object")
    if info.get("success") is False:
        reason = info.get("message") or info.get("value")
        return Resolved(None, reason=f"pixeldrain says: {str(reason)[:200]}")
    name = info.get("name")
    size = info.get("size")
    digest = info.get("hash_sha256")
    mime = info.get("mime_type")
    return Resolved(
        f"{base}/api/file/{match['id']}",
        name=_clean_name(name) if isinstance(name, str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0
        else None,
        sha256=digest.lower() if isinstance(digest, str) and _HEX64.fullmatch(digest) else None,
        mime_type=mime[:100] if isinstance(mime, str) else None)


def _mediafire_page(match: re.Match[str], base: str) -> str:
    return f"{base}{match.group(0)}"


def _mediafire(body: bytes, page_url: str, match: re.Match[str], base: str) -> Resolved:
    """The page's download button, `a#downloadButton[href]`: an absolute http(s) link."""
    from monitor.parsing import parse_html

    try:
        page = parse_html(body, page_url)
    except ValueError as exc:
        raise ResolveError(f"{page_url}: {exc}") from None
    buttons = [str(h) for h in page.root.xpath('//a[@id="downloadButton"]/@href')]
    if not buttons:
        raise ResolveError(f"{page_url}: no download button (a#downloadButton) on the page")
    href = buttons[0].strip()
    direct = urljoin(page_url, href)
    if urlsplit(direct).scheme not in ("http", "https"):
        raise ResolveError(f"{page_url}: the download button's link is not http(s)")
    name = match.groupdict().get("name")
    return Resolved(direct, name=_clean_name(unquote(name)) if name else None)


def _hub_resolve(match: re.Match[str], base: str) -> str:
    return f"{base}/{match['repo']}/resolve/{match['rev']}/{match['path']}"


# --- the table ------------------------------------------------------------------------

HOSTS: tuple[FileHost, ...] = (
    FileHost("pixeldrain", ("pixeldrain.com", "pixeldrain.net", "pixeldra.in"), "page",
             re.compile(r"/(?:u|api/file)/(?P<id>[A-Za-z0-9]{4,32})(?:/info)?/?"),
             page=_pixeldrain_page, resolve=_pixeldrain),
    FileHost("mediafire", ("mediafire.com",), "page",
             re.compile(r"/file/(?P<key>[A-Za-z0-9]{6,32})(?:/(?P<name>[^/?#]{1,255}))?"
                        r"(?:/file)?/?"),
             page=_mediafire_page, resolve=_mediafire),
    FileHost("gofile", ("gofile.io",), "unscannable",
             re.compile(r"/d/(?P<code>[A-Za-z0-9]{4,32})/?"),
             reason="gofile serves files only to an account's token"),
    FileHost("mega", ("mega.nz", "mega.co.nz"), "unscannable",
             re.compile(r"/(?:file|folder)/(?P<handle>[A-Za-z0-9_-]{6,16})/?|/"),
             reason="MEGA encrypts files in the browser with a key the server never sees"),
    # A hub's `blob` page of a file: its `resolve` URL is the file, whose redirect states
    # the SHA-256 (X-Linked-Etag), as for any `/resolve/` link.
    FileHost("huggingface", ("huggingface.co", "hf.co", "hf-mirror.com"), "direct",
             re.compile(r"/(?P<repo>(?:datasets/|spaces/)?[^/]+/[^/]+)/blob/(?P<rev>[^/]+)/"
                        r"(?P<path>(?:[^/]+/)*(?P<name>[^/]+))"),
             file=_hub_resolve),
    FileHost("direct", ("files.catbox.moe", "0x0.st", "transfer.sh", "cdn.discordapp.com"),
             "direct", re.compile(r"/(?:.*/)?(?P<name>[^/]{1,255})")),
)
BY_NAME: Mapping[str, FileHost] = {h.name: h for h in HOSTS}


def host_link(url: str, extra: Mapping[str, str] | None = None) -> HostLink | None:
    """The file host `url` is a link to, or None. `extra` maps URL prefixes (the config's
    `[scan] file_hosts`) to a host of the table; the longest prefix wins. The path must
    have the host's link shape (a MEGA link is its fragment's, `#!handle!key`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    mapped = extra or {}
    for prefix in sorted(mapped, key=len, reverse=True):
        if url.startswith(prefix.rstrip("/") + "/"):
            host = BY_NAME[mapped[prefix]]
            base = prefix.rstrip("/")
            rest = urlsplit(url[len(base):]).path or "/"
            return _matched(url, host, rest, base)
    hostname = parts.hostname.lower()
    for host in HOSTS:
        if any(hostname == d or hostname.endswith("." + d) for d in host.domains):
            base = f"{parts.scheme}://{parts.netloc}"
            return _matched(url, host, parts.path or "/", base)
    return None


def _matched(url: str, host: FileHost, path: str, base: str) -> HostLink | None:
    match = host.path.fullmatch(path)
    if match is None:
        return None
    if host.name == "mega" and match.group(0) == "/" and not urlsplit(url).fragment.startswith("!"):
        return None  # MEGA's home page, not a file link
    return HostLink(url, host, match, base)


def named_weight_link(url: str) -> str | None:
    """The weight file an http(s) link names other than at the end of its path (a
    download script's `?file=model.safetensors`, a viewer's `/model.gguf/view`), for a link
    no host of the table reads: it is recorded, unscanned, with that name."""
    from fingerprints.archives import WEIGHT_EXTENSIONS

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.path.lower().endswith(WEIGHT_EXTENSIONS):
        return None
    for piece in re.split(r"[/?&=#]", unquote(f"{parts.path}?{parts.query}")):
        if piece.lower().endswith(WEIGHT_EXTENSIONS) and piece.lower() not in WEIGHT_EXTENSIONS:
            return _clean_name(piece)
    return None


def check_file_hosts(value: Mapping[str, str]) -> None:
    """`[scan] file_hosts`: each key an http(s) URL prefix, each value a host of the
    table (ValueError saying which is wrong)."""
    for prefix, name in value.items():
        parts = urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
                or parts.fragment:
            raise ValueError(f"{prefix!r} is not an http(s) URL prefix (scheme, host and "
                             "optionally a path)")
        if name not in BY_NAME:
            raise ValueError(f"{prefix!r}: host must be one of {', '.join(BY_NAME)}, "
                             f"got {name!r}")
