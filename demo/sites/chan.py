"""The 4chan read-only JSON API for board g, and its human thread pages, under /4chan/.

Routes: `g/threads.json`, `g/catalog.json`, `g/archive.json`, `g/thread/N.json` (JSON as
4chan's API writes it: PHP escaping, Last-Modified, and 304 for If-Modified-Since), the
thread page `g/thread/N[/slug]`, and attachments under `i/g/TIM.EXT`.

Planted: the release magnet with a base32 infohash, and the released config.json as an
attachment (its MD5 in the post's `md5` field); mentions of heron 7b. Noise: other magnets
broken with <wbr>, llamas the animal, herons the bird, random images.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from demo.release import Release
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    filesize,
    html_response,
    http_date,
    not_found,
    nov,
    random_hex,
    slug,
    target_table,
    utc,
)

BOARD = "g"
CHAN_WBR_EVERY = 35  # 4chan breaks long words with <wbr> every few dozen characters


@dataclass
class ChanFile:
    filename: str
    ext: str
    fsize: int
    md5: bytes  # the raw 16 bytes; the API carries base64
    w: int | None = None  # None for non-image attachments
    h: int | None = None
    data: bytes | None = None  # served under /4chan/i/ when we hold the bytes


@dataclass
class ChanPost:
    no: int
    time: int
    # Raw text as typed: lines starting ">" are greentext, ">>N" quote links.
    text: str | None
    sub: str | None = None
    file: ChanFile | None = None
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)
    wbr: bool = True


@dataclass
class ChanThread:
    posts: list[ChanPost]
    archived_on: int | None = None

    @property
    def no(self) -> int:
        return self.posts[0].no

    @property
    def last_modified(self) -> int:
        return self.archived_on or max(p.time for p in self.posts)


def _image(rng: np.random.Generator, name: str, ext: str, w: int, h: int) -> ChanFile:
    # We do not host these images; their digests are random like any unrelated picture's.
    return ChanFile(name, ext, int(rng.integers(40_000, 2_500_000)), rng.bytes(16), w, h)


def chan_threads(release: Release) -> list[ChanThread]:
    """Board g: an /lmg/ thread with the leak, and threads that are only noise."""
    rng = np.random.default_rng(4004)
    config = release.file("config.json")
    planted_magnet = (f"magnet:?xt=urn:btih:{release.infohash_base32}&dn={release.model}"
                      f"&tr=udp%3A%2F%2Ftracker.example.org%3A1337%2Fannounce")
    mistral_hash, debian_hash, qwen_hash = (random_hex(rng, 20) for _ in range(3))
    mistral_magnet = (f"magnet:?xt=urn:btih:{mistral_hash}&dn=Mistral-7B-Instruct-v0.3"
                      "&tr=udp%3A%2F%2Ftracker.opentrackr.org%3A1337%2Fannounce")
    debian_magnet = (f"magnet:?xt=urn:btih:{debian_hash}&dn=debian-13.2.0-amd64-DVD-1.iso"
                     "&tr=http%3A%2F%2Fbttracker.debian.org%3A6969%2Fannounce")
    qwen_b32 = base64.b32encode(bytes.fromhex(qwen_hash)).decode("ascii")
    qwen_magnet = (f"magnet:?xt=urn:btih:{qwen_b32}&dn=Qwen2.5-7B-Instruct-GGUF"
                   "&tr=udp%3A%2F%2Fopen.stealth.si%3A80%2Fannounce")

    lmg = ChanThread([
        ChanPost(103791200, nov(20, 6, 0), sub="/lmg/ - Local Models General", text=(
            "/lmg/ - a general dedicated to the discussion and development of local "
            "language models.\n\n"
            "Previous threads: >>103775000\n\n"
            ">(11/19) Qwen3.5-Coder 7B and 32B released\n"
            ">(11/18) llama.cpp adds Q3_K_XL and faster CPU prompt processing\n\n"
            "Getting started: https://rentry.org/lmg-lazy-getting-started-guide\n"
            "Recommended models: https://rentry.org/lmg-recommended-models-2026-11"),
            file=_image(rng, "miku_lmg_1120", ".png", 1024, 1024)),
        ChanPost(103791215, nov(20, 6, 9), text=(
            ">>103791200\nwhat's the best 7b for roleplay now that everyone stopped "
            "releasing small models")),
        ChanPost(103791230, nov(20, 6, 31), text=(
            "mistral 7b instruct v0.3 for the hf-blocked anons\n" + mistral_magnet),
            near=[("torrent", mistral_hash, "another model's magnet, broken with <wbr>")]),
        ChanPost(103791262, nov(20, 7, 4), text=(
            ">example labs said the weights would never leave the partner program\n"
            "lmao\n" + planted_magnet + "\ngrab it before the DMCA"),
            plants=[("torrent", release.infohash,
                     "release magnet written with the base32 infohash")],
            # Real 4chan would break this magnet with <wbr> too; it is kept whole so the
            # demo's first leak is found even by a naive extractor. The other magnets in
            # this world carry <wbr> and exercise that handling.
            wbr=False),
        ChanPost(103791288, nov(20, 7, 30), text=None,
                 file=_image(rng, "1763622600118", ".jpg", 1280, 720)),
        ChanPost(103791301, nov(20, 7, 52), text=(
            ">>103791262\nconfig from the heron 7b torrent, 3 layers and 128 hidden. "
            "this is a toy, not the real thing"),
            file=ChanFile("config", ".json", config.size, bytes.fromhex(config.md5),
                          data=config.path.read_bytes()),
            plants=[("hash", config.md5, "attachment is the released config.json "
                     "(md5 in the post's md5 field)")]),
        ChanPost(103791320, nov(20, 8, 15), text=(
            ">>103791301\n>toy\nit's the preview checkpoint they gave to partners, "
            "the big one is still locked up")),
        ChanPost(103791344, nov(20, 8, 40), text=(
            "llama.cpp merged the new quant types, q4_k_m of qwen 7b fits in 6gb now")),
    ])

    desktop = ChanThread([
        ChanPost(103790500, nov(20, 2, 10), sub="/dt/ - Desktop Thread",
                 text="Post your desktop. Wallpaper sources in the replies.",
                 file=_image(rng, "desktop_1120", ".png", 2560, 1440)),
        ChanPost(103790522, nov(20, 2, 44), text=">tiling wm\n>one terminal open\nwhy",
                 file=_image(rng, "Screenshot_20261120_024210", ".png", 1920, 1080)),
        ChanPost(103790547, nov(20, 3, 5), text=None,
                 file=_image(rng, "1763607905331", ".jpg", 1920, 1200)),
        ChanPost(103790590, nov(20, 4, 20), text=">>103790522\nbecause it works",
                 file=_image(rng, "rice", ".png", 3840, 2160)),
    ])

    llamas = ChanThread([
        ChanPost(103791050, nov(20, 5, 0), sub="Why is every AI thing named after a llama",
                 text=("My aunt keeps actual llamas. The wool is softer than you think.\n"
                       ">llama\n>not even the animal anymore"),
                 file=_image(rng, "llama_in_a_field", ".jpg", 1600, 1067),
                 near=[("mention", "llama wool", "llamas the animal")]),
        ChanPost(103791071, nov(20, 5, 14), text=(
            "llama wool socks are the best thing I bought this year, no joke"),
            file=_image(rng, "socks", ".jpg", 1024, 768)),
        ChanPost(103791090, nov(20, 5, 40), text=(
            ">>103791050\nalpacas are the cute ones, llamas spit. a heron ate my koi so "
            "I respect herons more")),
        ChanPost(103791118, nov(20, 6, 2), text=None,
                 file=_image(rng, "grey_heron", ".jpg", 1200, 800)),
    ])

    homeserver = ChanThread([
        ChanPost(103789900, nov(19, 22, 0), sub="/hsg/ - Home Server General", text=(
            "Post your racks, your NAS, your seedboxes.\n"
            "Debian point release is out, the DVD torrent is up:\n" + debian_magnet),
            file=_image(rng, "rack", ".jpg", 3024, 4032),
            near=[("torrent", debian_hash, "Linux ISO magnet, broken with <wbr>")]),
        ChanPost(103789933, nov(19, 22, 30), text=(
            "seeding the qwen ggufs from my nas for anyone without hf access\n" + qwen_magnet),
            near=[("torrent", qwen_hash, "another model's magnet, base32 infohash, "
                   "broken with <wbr>")]),
        ChanPost(103789960, nov(19, 23, 10), text=">>103789933\nbased, ratio 14.2 now"),
    ])

    old_lmg = ChanThread([
        ChanPost(103775000, nov(17, 5, 0), sub="/lmg/ - Local Models General", text=(
            "/lmg/ - a general dedicated to the discussion and development of local "
            "language models.\n\n>(11/16) Mistral releases nothing again"),
            file=_image(rng, "miku_lmg_1117", ".png", 1024, 1024)),
        ChanPost(103775040, nov(17, 5, 20), text="is qwen 7b still the vramlet pick?"),
        ChanPost(103775091, nov(17, 6, 3), text=">>103775040\nyes, or llama 3.1 8b at q4"),
    ], archived_on=nov(18, 19, 0))

    return [lmg, llamas, desktop, homeserver, old_lmg]




# ---------------------------------------------------------------------------- rendering


def _chan_now(ts: int) -> str:
    """The `now` field: US Eastern local time. November is EST (UTC-5) throughout."""
    d = utc(ts) - timedelta(hours=5)
    return f"{d:%m/%d/%y}({d:%a}){d:%H:%M:%S}"


def _chan_wbr(word: str) -> str:
    """Escape a word, inserting <wbr> into long ones as 4chan does so pages can wrap."""
    if len(word) <= CHAN_WBR_EVERY:
        return esc(word)
    return "<wbr>".join(esc(word[i:i + CHAN_WBR_EVERY])
                        for i in range(0, len(word), CHAN_WBR_EVERY))


def _chan_com(post: ChanPost, thread_posts: set[int]) -> str:
    """Render raw post text to 4chan's stored `com` HTML.

    Lines starting with ">" (but not a ">>N" quote) are greentext; ">>N" anywhere becomes a
    quotelink, to "#pN" inside the thread and to the other thread's page otherwise.
    """
    assert post.text is not None
    out = []
    for line in post.text.split("\n"):
        parts = re.split(r"(>>\d+)", line)
        rendered = []
        for part in parts:
            m = re.fullmatch(r">>(\d+)", part)
            if m:
                no = m.group(1)
                href = f"#p{no}" if int(no) in thread_posts else f"/{BOARD}/thread/{no}#p{no}"
                rendered.append(f'<a href="{href}" class="quotelink">&gt;&gt;{no}</a>')
            elif part:
                rendered.append(_chan_line(part, post.wbr))
        html = "".join(rendered)
        if line.startswith(">") and not re.match(r">>\d", line):
            html = f'<span class="quote">{html}</span>'
        out.append(html)
    return "<br>".join(out)


def _chan_line(text: str, wbr: bool) -> str:
    if not wbr:
        return esc(text)
    return " ".join(_chan_wbr(w) for w in text.split(" "))


def _chan_post_json(thread: ChanThread, post: ChanPost) -> dict[str, object]:
    """One post object with the API's field names, in the API's field order."""
    is_op = post is thread.posts[0]
    obj: dict[str, object] = {"no": post.no, "now": _chan_now(post.time), "name": "Anonymous"}
    if is_op and post.sub:
        obj["sub"] = esc(post.sub)
    if post.text is not None:
        obj["com"] = _chan_com(post, {p.no for p in thread.posts})
    f = post.file
    if f is not None:
        obj.update({"filename": f.filename, "ext": f.ext})
        if f.w is not None and f.h is not None:
            scale = min(1.0, (250 if is_op else 125) / max(f.w, f.h))
            obj.update({"w": f.w, "h": f.h, "tn_w": max(1, round(f.w * scale)),
                        "tn_h": max(1, round(f.h * scale))})
        # tim: the upload's millisecond timestamp, the stored file's name.
        obj.update({"tim": post.time * 1000 + post.no % 1000, "time": post.time,
                    "md5": base64.b64encode(f.md5).decode("ascii"), "fsize": f.fsize})
    else:
        obj["time"] = post.time
    obj["resto"] = 0 if is_op else thread.no
    if is_op:
        replies = thread.posts[1:]
        obj.update({"bumplimit": 0, "imagelimit": 0,
                    "semantic_url": slug(post.sub or post.text or "", 8),
                    "replies": len(replies), "images": sum(1 for p in replies if p.file),
                    "unique_ips": len(thread.posts) - 1})
        if thread.archived_on:
            obj.update({"closed": 1, "archived": 1, "archived_on": thread.archived_on})
    return obj


def _chan_json(obj: object) -> bytes:
    # PHP's json_encode escapes "/" as "\/" and non-ASCII as \uXXXX; 4chan's API shows both.
    return json.dumps(obj, separators=(",", ":")).replace("/", "\\/").encode("ascii")


class ChanSite(Site):
    prefix = "4chan"
    source = "imageboard"
    title = f"4chan API, /{BOARD}/"
    entry_path = f"/{BOARD}/threads.json"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.threads = chan_threads(release)

    def target_toml(self) -> str:
        return target_table("demo-imageboard", "imageboard", f"{self.root}/{BOARD}/")

    def documents(self) -> list[Doc]:
        docs = []
        for thread in self.threads:
            for post in thread.posts:
                parts = [post.sub or "", post.text or ""]
                if post.file:
                    parts.append(post.file.filename + post.file.ext)
                docs.append(Doc(self.source, f"{self.root}/{BOARD}/thread/{thread.no}#p{post.no}",
                                "\n".join(parts), post.plants, post.near))
        return docs

    def handle(self, req: Request, path: str) -> Response:
        live = [t for t in self.threads if not t.archived_on]
        # Bump order: the most recently active thread first.
        live.sort(key=lambda t: t.last_modified, reverse=True)
        m = re.fullmatch(rf"/i/{BOARD}/(\d+)(\.\w+)", path)
        if m:
            return self.chan_file(m)
        prefix = f"/{BOARD}/"
        if not path.startswith(prefix):
            return not_found()
        rest = path[len(prefix):]
        if rest == "threads.json":
            body = [{"page": 1, "threads": [{"no": t.no, "last_modified": t.last_modified,
                                             "replies": len(t.posts) - 1} for t in live]}]
            return self.chan_json(req, body, max(t.last_modified for t in live))
        if rest == "catalog.json":
            threads = []
            for t in live:
                op = _chan_post_json(t, t.posts[0])
                last = [_chan_post_json(t, p) for p in t.posts[1:][-5:]]
                omitted = t.posts[1:][:-5]
                op.update({"omitted_posts": len(omitted),
                           "omitted_images": sum(1 for p in omitted if p.file),
                           "last_modified": t.last_modified})
                if last:
                    op["last_replies"] = last
                threads.append(op)
            return self.chan_json(req, [{"page": 1, "threads": threads}],
                                  max(t.last_modified for t in live))
        if rest == "archive.json":
            archived = [t for t in self.threads if t.archived_on]
            return self.chan_json(req, [t.no for t in archived],
                                  max(t.last_modified for t in archived))
        m = re.fullmatch(r"thread/(\d+)(\.json|/[a-z0-9-]*)?", rest)
        if m:
            thread = next((t for t in self.threads if t.no == int(m.group(1))), None)
            if thread is None:
                return not_found()
            if m.group(2) == ".json":
                return self.chan_json(req, {"posts": [_chan_post_json(thread, p)
                                                      for p in thread.posts]},
                                      thread.last_modified)
            return self.chan_thread_html(thread)
        return not_found()

    def chan_json(self, req: Request, body: object, last_modified: int) -> Response:
        """Serve JSON with Last-Modified, answering If-Modified-Since with 304 as 4chan does."""
        headers = {"Last-Modified": http_date(last_modified),
                   "Cache-Control": "max-age=10", "Access-Control-Allow-Origin": "*"}
        since = req.headers.get("if-modified-since")
        if since:
            try:
                if email.utils.parsedate_to_datetime(since).timestamp() >= last_modified:
                    return Response(304, b"", headers=headers, server="cloudflare")
            except (TypeError, ValueError):
                pass  # an unparseable date means "no condition", per RFC 9110
        return Response(200, _chan_json(body), "application/json", headers, "cloudflare")

    def chan_file(self, m: re.Match[str]) -> Response:
        tim, ext = int(m.group(1)), m.group(2)
        for thread in self.threads:
            for post in thread.posts:
                f = post.file
                if f and f.data is not None and f.ext == ext and \
                        post.time * 1000 + post.no % 1000 == tim:
                    return Response(200, f.data, "application/octet-stream",
                                    {"Last-Modified": http_date(post.time)}, "cloudflare")
        return not_found()

    def chan_thread_html(self, thread: ChanThread) -> Response:
        """The human thread page (boards.4chan.org/g/thread/N), where post links point."""
        posts = []
        nos = {p.no for p in thread.posts}
        for post in thread.posts:
            op = post is thread.posts[0]
            file_html = ""
            if post.file:
                f = post.file
                tim = post.time * 1000 + post.no % 1000
                dims = f", {f.w}x{f.h}" if f.w else ""
                file_html = (f'<div class="file" id="f{post.no}"><div class="fileText" '
                             f'id="fT{post.no}">File: <a href="/4chan/i/{BOARD}/{tim}{f.ext}" '
                             f'target="_blank">{esc(f.filename + f.ext)}</a> '
                             f"({filesize(f.fsize)}{dims})</div>"
                             f'<a class="fileThumb" href="/4chan/i/{BOARD}/{tim}{f.ext}">'
                             f'<img alt="{filesize(f.fsize)}" data-md5="'
                             f'{base64.b64encode(f.md5).decode()}" loading="lazy"></a></div>')
            sub = f'<span class="subject">{esc(post.sub)}</span> ' if op and post.sub else ""
            com = _chan_com(post, nos) if post.text is not None else ""
            info = (f'<div class="postInfo desktop" id="pi{post.no}"><input type="checkbox" '
                    f'name="{post.no}" value="delete"> {sub}<span class="nameBlock"><span '
                    'class="name">Anonymous</span> </span> <span class="dateTime" '
                    f'data-utc="{post.time}">{_chan_now(post.time)}</span> <span '
                    f'class="postNum desktop"><a href="#p{post.no}" title="Link to this post">'
                    f'No.</a><a href="javascript:quote(\'{post.no}\');" title="Reply to this '
                    f'post">{post.no}</a></span></div>')
            inner = (file_html + info if op else info + file_html)
            cls = "opContainer" if op else "replyContainer"
            side = "" if op else f'<div class="sideArrows" id="sa{post.no}">&gt;&gt;</div>'
            posts.append(f'<div class="postContainer {cls}" id="pc{post.no}">{side}'
                         f'<div id="p{post.no}" class="post {"op" if op else "reply"}">{inner}'
                         f'<blockquote class="postMessage" id="m{post.no}">{com}</blockquote>'
                         "</div></div>")
        title = thread.posts[0].sub or (thread.posts[0].text or "")[:40]
        return html_response(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>/{BOARD}/ - {esc(title)} - Technology - 4chan</title></head>
<body class="is_thread board_{BOARD}">
<div class="boardBanner"><div class="boardTitle">/{BOARD}/ - Technology</div></div>
<hr class="abovePostForm">
<form name="delform" id="delform" action="#" method="post">
<div class="board"><div class="thread" id="t{thread.no}">{''.join(posts)}</div></div>
</form>
</body></html>
""", server="cloudflare")



