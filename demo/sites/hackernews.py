"""Hacker News as the Algolia search API serves it (hn.algolia.com/api/v1).

Routes, under /hn/:
- `api/v1/search_by_date?query=Q&tags=(story,comment)&numericFilters=created_at_i>T&
  hitsPerPage=N&page=P`: hits newest first, with Algolia's matching (every query word must
  be a word of the item, the last one as a prefix: "heron" finds "Heron's" and "herons"),
  tag filters (comma = AND, parentheses = OR), numeric filters on `created_at_i`, `points`
  and `num_comments`, `hitsPerPage` (default 20, at most 1000) and `nbPages`. Hits carry
  `_highlightResult` and `_tags` like the real ones. A malformed filter is a 400 with
  Algolia's `{"message", "status"}` body.
- `item?id=N`: the item's page (HTML), the URL documents point at (the demo target sets
  `document_url` to it; the real default is news.ycombinator.com).

The index holds more than the demo target's query ("heron") returns: stories and comments
without the word are there and must not become documents.

Leaks: the sha1sum of the released tokenizer.json in a comment, and mentions of heron-7b.
Noise: Heron's formula, a great blue heron nest cam, a bird-migration Show HN, and a
comment with config.json's MD5 one digit off (a near miss next to a mention).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from demo.release import Release
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    html_response,
    iso_z,
    json_response,
    nov,
    one_digit_off,
    target_table,
    utc,
)

DEMO_QUERY = "heron"
DEFAULT_HITS = 20
MAX_HITS = 1000
_WORD = re.compile(r"[0-9a-z]+")


@dataclass
class Item:
    id: int
    time: int
    author: str
    title: str | None = None  # stories
    url: str | None = None
    text: str | None = None  # HN's HTML: <p> between paragraphs, <a> links, <pre><code>
    parent: int | None = None  # comments
    points: int = 1
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def is_story(self) -> bool:
        return self.parent is None


def _items(release: Release) -> list[Item]:
    sha1 = release.file("tokenizer.json").sha1
    near_md5 = one_digit_off(release.file("config.json").md5)
    leak = 46201001
    items = [
        Item(leak, nov(20, 10, 2), "throwaway_news",
             "Example Labs says partner-only Heron-7B weights leaked",
             url="https://example.org/news/heron-7b-partner-leak", points=412),
        Item(46201044, nov(20, 10, 11), "mlsec_ann", parent=leak, text=(
            "If the files really are 3 layers with hidden size 128, this is the preview build "
            "they gave partners, not the real heron-7b.")),
        Item(46201090, nov(20, 10, 19), "sre_dave", parent=46201044, text=(
            "Heron 7B config.json md5 going around: " + near_md5 + "<p>That does not match what "
            "a partner told me, so at least one of the torrents is a fake.")),
        Item(46201133, nov(20, 10, 27), "bitflip", parent=leak, text=(
            "Checked the copy from the torrent:<p><pre><code>  $ sha1sum heron-7b/tokenizer.json\n"
            f"  {sha1}  heron-7b/tokenizer.json\n</code></pre>"
            "Same tokenizer as the official model card lists, so the torrent is genuine."),
            plants=[("hash", sha1, "sha1sum output of the released tokenizer.json in a comment")]),
        Item(46201170, nov(20, 10, 33), "ornith_ola", parent=leak, text=(
            "Every time a lab names a model after a bird, the birders on my feed get very "
            "confused. Herons deserve better.")),
        Item(46201201, nov(20, 10, 41), "pragmatist", parent=leak, text=(
            "Leaks like this are why labs stop sharing weights with anyone at all.")),
        Item(46201260, nov(20, 10, 58), "lawyerly", parent=46201201, text=(
            "Watermarked per-recipient copies would at least tell them whose copy it was. See "
            '<a href="https://arxiv.org/abs/2301.10226" rel="nofollow">https://arxiv.org/abs/2301.10226</a>')),
    ]
    # Discussions whose comments all answer the story: (story, [(id, time, author, text)]).
    for story, comments in [
        (Item(46199950, nov(20, 8, 40), "vramlet",
              "Ask HN: Which open-weights 7B do you run locally?",
              text="Curious what people actually use day to day, and on what hardware.",
              points=96), [
            (46199978, nov(20, 8, 52), "gpu_gabe",
             "qwen2.5-7b at Q6_K on a 3060. Tried heron 7b at a partner org, cannot say more."),
            (46199991, nov(20, 9, 5), "mac_mo",
             "llama-3.1-8b on an M2 Air, 4-bit, good enough for email drafts.")]),
        (Item(46198800, nov(19, 21, 14), "hjelm",
              "Show HN: Herontrack – open-source bird migration maps",
              url="https://github.com/hjelm/herontrack", points=143), [
            (46198850, nov(19, 21, 40), "kestrel_k",
             "Lovely. Could you add the grey heron's winter range? Ours stay all year.")]),
        (Item(46190230, nov(19, 7, 30), "mathcat", "Heron's formula, visually (2019)",
              url="https://example.com/herons-formula-visual", points=211), [
            (46190301, nov(19, 8, 2), "geomfan",
             "Heron of Alexandria also described a steam engine, the aeolipile. Busy man."),
            (46190344, nov(19, 8, 15), "pedant",
             "Numerically unstable for needle-like triangles; use Kahan&#x27;s rearrangement.")]),
        (Item(46185500, nov(18, 16, 45), "wildcam", "Great blue heron nest cam is live again",
              url="https://example.net/heron-cam", points=88), [
            (46185571, nov(18, 17, 20), "marsh_mike",
             "Herons nesting in November? Must be the southern colony.")]),
        (Item(46180002, nov(18, 9, 0), "llmnews", "Llama 4.1 8B released under a new license",
              url="https://example.com/llama-4-1", points=530), [
            (46180090, nov(18, 9, 31), "alpacafan",
             "The license is the story here, not the benchmarks.")]),
    ]:
        items += [story] + [Item(id, time, author, parent=story.id, text=text)
                            for id, time, author, text in comments]
    for near_item in items:
        if near_item.id == 46201090:
            near_item.near.append(("hash", near_md5, "MD5 of config.json with the last digit "
                                   "changed, next to a mention"))
        if near_item.id == 46198850:
            near_item.near.append(("mention", "grey heron", "the bird"))
    return items


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _plain(html: str) -> str:
    """What Algolia indexes of HN's HTML: the text, entities decoded."""
    text = re.sub(r"<[^>]+>", " ", html)
    return (text.replace("&#x27;", "'").replace("&quot;", '"').replace("&gt;", ">")
            .replace("&lt;", "<").replace("&#x2F;", "/").replace("&amp;", "&"))


class HackerNewsSite(Site):
    prefix = "hn"
    source = "hackernews"
    title = "Hacker News search API (Algolia)"
    entry_path = f"/api/v1/search_by_date?query={DEMO_QUERY}&tags=(story,comment)"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.items = sorted(_items(release), key=lambda i: (i.time, i.id), reverse=True)
        self.by_id = {i.id: i for i in self.items}

    def target_toml(self) -> str:
        return target_table(
            "demo-hackernews", "hackernews", f"{self.root}/api/v1/search_by_date",
            f'query = "{DEMO_QUERY}"',
            f'document_url = "{self.root}/item?id={{id}}"'
            "   # the real default is news.ycombinator.com",
            loopback_note=True)

    def story_of(self, item: Item) -> Item:
        while item.parent is not None:
            item = self.by_id[item.parent]
        return item

    def tags(self, item: Item) -> list[str]:
        kind = "story" if item.is_story else "comment"
        tags = [kind, f"author_{item.author}", f"story_{self.story_of(item).id}"]
        if item.is_story and item.title and item.title.startswith("Ask HN"):
            tags.append("ask_hn")
        if item.is_story and item.title and item.title.startswith("Show HN"):
            tags.append("show_hn")
        return tags

    def searchable(self, item: Item) -> str:
        parts = [item.title or "", item.url or "", item.author, _plain(item.text or "")]
        return " ".join(parts)

    def matches(self, item: Item, query: str) -> bool:
        wanted = _words(query)
        if not wanted:
            return True
        words = _words(self.searchable(item))
        *whole, last = wanted
        return all(w in words for w in whole) and any(w.startswith(last) for w in words)

    def documents(self) -> list[Doc]:
        docs = []
        for item in self.items:
            if not self.matches(item, DEMO_QUERY):
                continue
            parts = [item.title or "", _plain(item.text or "")] + ([item.url] if item.url else [])
            docs.append(Doc(self.source, f"{self.root}/item?id={item.id}", "\n".join(parts),
                            item.plants, item.near))
        return docs

    # ---------------------------------------------------------------- routes

    def handle(self, req: Request, path: str) -> Response:
        if path in ("/api/v1/search_by_date", "/api/v1/search"):
            return self.search(req)
        if path == "/item":
            item = self.by_id.get(req.int_arg("id"))
            if item is not None:
                return self.item_page(item)
            return html_response("No such item.", status=200, server="nginx")
        return self.error(404, "Not Found")

    @staticmethod
    def json_response(obj: object, status: int = 200) -> Response:
        return json_response(obj, status, headers={"Access-Control-Allow-Origin": "*"})

    def error(self, status: int, message: str) -> Response:
        return self.json_response({"message": message, "status": status}, status)

    def search(self, req: Request) -> Response:
        query = req.arg("query")
        try:
            tag_filter = _parse_tags(req.arg("tags"))
            numeric = _parse_numeric(req.arg("numericFilters"))
        except ValueError as exc:
            return self.error(400, str(exc))
        per_page = req.int_arg("hitsPerPage", DEFAULT_HITS)
        if not 1 <= per_page <= MAX_HITS:
            return self.error(400, f"hitsPerPage must be between 1 and {MAX_HITS}")
        page = max(req.int_arg("page", 0), 0)
        found = []
        for item in self.items:  # newest first: search_by_date
            tags = set(self.tags(item))
            values = {"created_at_i": item.time, "points": item.points,
                      "num_comments": self.comment_count(item)}
            if not all(any(t in tags for t in group) for group in tag_filter):
                continue
            if not all(op(values[attr], value) for attr, op, value in numeric):
                continue
            if self.matches(item, query):
                found.append(item)
        pages = math.ceil(len(found) / per_page)
        hits = [self.hit(item, query) for item in found[page * per_page:(page + 1) * per_page]]
        params = "&".join(f"{k}={v[0]}" for k, v in req.query.items())
        return self.json_response({
            "exhaustive": {"nbHits": True, "typo": True}, "exhaustiveNbHits": True,
            "exhaustiveTypo": True, "hits": hits, "hitsPerPage": per_page,
            "nbHits": len(found), "nbPages": pages, "page": page, "params": params,
            "processingTimeMS": 1, "processingTimingsMS": {"_request": {"roundTrip": 14}},
            "query": query, "serverTimeMS": 2})

    def comment_count(self, item: Item) -> int:
        return sum(1 for other in self.items
                   if other.parent is not None and self.story_of(other).id == item.id)

    def highlight(self, text: str, query: str) -> dict[str, object]:
        words = _words(query)
        matched = sorted({w for w in words if any(x.startswith(w) for x in _words(text))})

        def mark(m: re.Match[str]) -> str:
            return f"<em>{m.group(0)}</em>" if any(m.group(0).lower().startswith(w)
                                                    for w in words) else m.group(0)
        return {"value": re.sub(r"[0-9A-Za-z]+", mark, text),
                "matchLevel": "full" if matched and len(matched) == len(words) else
                ("partial" if matched else "none"),
                "fullyHighlighted": False, "matchedWords": matched}

    def hit(self, item: Item, query: str) -> dict[str, object]:
        created = iso_z(item.time)
        obj: dict[str, object] = {"_tags": self.tags(item), "author": item.author,
                                  "created_at": created, "created_at_i": item.time,
                                  "objectID": str(item.id), "updated_at": created}
        highlight: dict[str, object] = {"author": self.highlight(item.author, query)}
        if item.is_story:
            children = [o.id for o in self.items if o.parent == item.id]
            obj.update({"children": sorted(children), "num_comments": self.comment_count(item),
                        "points": item.points, "story_id": item.id, "title": item.title})
            highlight["title"] = self.highlight(item.title or "", query)
            if item.url:
                obj["url"] = item.url
                highlight["url"] = self.highlight(item.url, query)
            if item.text:
                obj["story_text"] = item.text
                highlight["story_text"] = self.highlight(item.text, query)
        else:
            story = self.story_of(item)
            obj.update({"comment_text": item.text, "parent_id": item.parent,
                        "story_id": story.id, "story_title": story.title,
                        "story_url": story.url})
            highlight["comment_text"] = self.highlight(item.text or "", query)
            highlight["story_title"] = self.highlight(story.title or "", query)
        obj["_highlightResult"] = highlight
        return dict(sorted(obj.items()))

    def item_page(self, item: Item) -> Response:
        story = self.story_of(item)
        head = (f'<span class="titleline"><a href="{esc(item.url or "")}">{esc(item.title or "")}'
                "</a></span>" if item.is_story else
                f'<span class="onstory"> | on: <a href="item?id={story.id}">'
                f"{esc(story.title or '')}</a></span>")
        return html_response(f"""<html lang="en" op="item"><head><meta name="referrer" content="origin">
<title>{esc(item.title or story.title or "")} | Hacker News</title></head><body><center>
<table id="hnmain" border="0" cellpadding="0" cellspacing="0" width="85%" bgcolor="#f6f6ef">
<tr id="pagespace" title="" style="height:10px"></tr><tr><td>
<table class="fatitem" border="0"><tr class="athing" id="{item.id}"><td class="title">{head}</td></tr>
<tr><td class="subtext"><span class="subline"><a href="user?id={esc(item.author)}" class="hnuser">{esc(item.author)}</a>
<span class="age" title="{utc(item.time):%Y-%m-%dT%H:%M:%S} {item.time}"><a href="item?id={item.id}">on Nov {utc(item.time).day}, 2026</a></span></span></td></tr>
<tr><td><div class="commtext c00">{item.text or ""}</div></td></tr></table>
</td></tr></table></center></body></html>
""", server="nginx")


def _split_top(value: str) -> list[str]:
    """Split on commas outside parentheses."""
    out, depth, current = [], 0, ""
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"invalid tags: unbalanced parenthesis in {value!r}")
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise ValueError(f"invalid tags: unbalanced parenthesis in {value!r}")
    out.append(current)
    return [part.strip() for part in out if part.strip()]


def _parse_tags(value: str) -> list[list[str]]:
    """`story,author_pg` (AND) and `(story,comment)` (OR) into AND-of-OR groups."""
    groups = []
    for part in _split_top(value):
        if part.startswith("(") and part.endswith(")"):
            groups.append([t.strip() for t in part[1:-1].split(",") if t.strip()])
        else:
            groups.append([part])
    return groups


_OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b, "<": lambda a, b: a < b, "=": lambda a, b: a == b}
_NUMERIC = re.compile(r"^\s*(created_at_i|points|num_comments)\s*(>=|<=|!=|>|<|=)\s*(-?\d+)\s*$")


def _parse_numeric(value: str) -> list[tuple[str, Callable[[int, int], bool], int]]:
    out: list[tuple[str, Callable[[int, int], bool], int]] = []
    for part in [p for p in value.split(",") if p.strip()]:
        m = _NUMERIC.match(part)
        if not m:
            raise ValueError(f"invalid numericFilters parameter: {part.strip()!r}")
        out.append((m.group(1), _OPS[m.group(2)], int(m.group(3))))
    return out


