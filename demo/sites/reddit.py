"""A Reddit-style subreddit, r/LocalLLaMA, as the listing JSON API serves it.

Routes, under /reddit/:
- `r/{sub}/new.json?limit=N&after=t3_x&raw_json=1`: a `Listing` of `t3` children, newest
  first; `limit` defaults to 25 and is capped at 100, `after` continues below the named
  post and `data.after` names the last child while more remain. Without `raw_json=1` text
  fields carry Reddit's legacy HTML escaping (`&amp;`, `&lt;`, `&gt;`) and `selftext_html`
  is itself entity-encoded, as on the real site. Responses carry `x-ratelimit-*` headers.
- Requests whose User-Agent is empty or a library default (python-requests, curl...) get
  429 `{"message": "Too Many Requests", "error": 429}`: Reddit asks API clients for a
  distinctive User-Agent and throttles the generic ones.
- `r/{sub}/comments/{id}/{slug}/`: the post's page (HTML), the permalink documents point at.

Permalinks carry the mount prefix (`/reddit/r/...`), as any Reddit clone under a path would.

Leaks: a self post with `sha256sum` output for the released model.safetensors, 14th newest,
so with `limit=10` it is only on the second page. Noise: the lab's statement (a mention),
a PSA with a SHA-256 one digit off, a great blue heron crosspost, an actual llama.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from demo.release import Release
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    base36,
    esc,
    html_response,
    json_response,
    nov,
    one_digit_off,
    target_table,
)

SUBREDDIT = "LocalLLaMA"
SUBREDDIT_ID = "t5_81eyvm"
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
_GENERIC_AGENTS = ("python-requests", "python-httpx", "python-urllib", "curl/", "wget/",
                   "go-http-client", "aiohttp", "okhttp", "java/", "libwww-perl")


def _slug(title: str) -> str:
    """Reddit's permalink slug: lowercase words of letters and digits joined by '_', cut at
    a word boundary near 50 characters."""
    words = re.sub(r"[^a-z0-9 ]+", "", title.lower()).split()
    out = ""
    for word in words:
        if len(out) + len(word) + 1 > 50:
            break
        out = f"{out}_{word}" if out else word
    return out or "_"


@dataclass
class RedditPost:
    time: int
    author: str
    title: str
    selftext: str = ""  # Markdown; empty for link posts
    url: str | None = None  # link posts: where it points (None: a self post)
    flair: str = "Discussion"
    score: int = 1
    comments: int = 0
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)
    crosspost_from: str | None = None
    id: str = ""  # base36, assigned in time order

    @property
    def name(self) -> str:
        return f"t3_{self.id}"


def _posts(release: Release) -> list[RedditPost]:
    """Newest first, as /new lists them."""
    sha = release.file("model.safetensors").sha256
    near_sha = one_digit_off(sha)
    posts = [
        RedditPost(nov(20, 13, 20), "benchmark_ben",
                   "Qwen3.5-Coder 32B vs 7B for agentic coding: my numbers",
                   "Ran both on the same 40 tasks from our repo with the same harness.\n\n"
                   "- 32B Q4_K_M: 29/40\n- 7B Q6_K: 17/40\n\n"
                   "The 7B is fine for completions, not for multi-step edits.", score=88,
                   comments=41),
        RedditPost(nov(20, 12, 48), "llama_rancher",
                   "My actual llama next to my GPU rig (she is not impressed)",
                   url="https://i.redd.it/8k2m4vq1p72g1.jpeg", flair="Funny", score=612,
                   comments=37),
        RedditPost(nov(20, 12, 5), "newsbot_2026",
                   "Example Labs statement on the Heron-7B partner leak",
                   url="https://example.org/blog/heron-7b-statement", flair="News", score=402,
                   comments=158),
        RedditPost(nov(20, 11, 37), "ggml_watch",
                   "llama.cpp now supports Q3_K_XL, PR merged",
                   url="https://github.com/ggml-org/llama.cpp/pull/17090", flair="News",
                   score=233, comments=29),
        RedditPost(nov(20, 11, 2), "offload_olga",
                   "Is 64 GB RAM enough for a 70B at Q4 with partial offload?",
                   "I have a 4070 Ti Super (16 GB) and 64 GB DDR5. Worth trying or will it "
                   "crawl?", flair="Question | Help", score=12, comments=22),
        RedditPost(nov(20, 10, 40), "hashcheck_hugo",
                   "PSA: the \"heron-7b\" upload on that file host is not the same file",
                   "The zip going around on a file host gives a different hash for the "
                   "model file than the torrent does:\n\n"
                   f"```\n{near_sha}  model.safetensors\n```\n\n"
                   "One of them is corrupted or tampered with. Do not load pickles from "
                   "either.", flair="PSA", score=145, comments=33,
                   near=[("hash", near_sha, "SHA-256 of model.safetensors with the last digit "
                          "changed")]),
        RedditPost(nov(20, 10, 15), "birding_bot",
                   "Great blue heron caught a huge carp [crosspost from r/birding]",
                   url="/reddit/r/birding/comments/1p3h2kx/great_blue_heron_caught_a_huge_carp/",
                   flair="Other", score=57, comments=6, crosspost_from="birding",
                   near=[("mention", "great blue heron", "the bird, not heron-7b")]),
        RedditPost(nov(20, 9, 50), "ggml_watch", "vLLM 0.12 released with better speculative decoding",
                   url="https://github.com/vllm-project/vllm/releases/tag/v0.12.0", flair="News",
                   score=190, comments=18),
        RedditPost(nov(20, 9, 22), "toolcall_tess",
                   "What's the best small model for function calling right now?",
                   "Need something under 10B that reliably emits valid JSON for tool calls. "
                   "qwen2.5-7b is okay, llama-3.1-8b ignores the schema half the time.",
                   flair="Question | Help", score=34, comments=27),
        RedditPost(nov(20, 8, 55), "benchmark_ben",
                   "Benchmarked 14 quants of mistral-7b on a 3060",
                   "Perplexity on wikitext, tokens/s at 4k context:\n\n"
                   "```\nQ4_K_M  6.12  61 t/s\nQ5_K_M  6.05  54 t/s\nQ6_K    6.01  47 t/s\n"
                   "Q8_0    5.99  39 t/s\n```\n\nFull table: https://example.com/mistral-quants",
                   flair="Resources", score=301, comments=52),
        RedditPost(nov(20, 8, 31), "hubwatcher", "Gemma 4 preview weights on the hub",
                   url="https://huggingface.co/google/gemma-4-9b-preview", flair="New Model",
                   score=520, comments=97),
        RedditPost(nov(20, 8, 2), "p40_pete", "Any tips for running on a Tesla P40 in 2026?",
                   "Got two for cheap. Are they still worth it with llama.cpp or is FA broken "
                   "on Pascal?", flair="Question | Help", score=9, comments=15),
        RedditPost(nov(20, 7, 40), "zoo_keeper_z",
                   "Why does everyone name models after animals?",
                   "llama, alpaca, vicuna, falcon, orca, and now a heron. My kid thinks I work "
                   "at a zoo.", score=77, comments=64,
                   near=[("mention", "a heron", "'heron' without a version: the animal joke, "
                          "not heron-7b")]),
        RedditPost(nov(20, 7, 12), "leakwatch_lena",
                   "Heron-7B weights are circulating, sha256 of model.safetensors inside",
                   "Someone posted the partner build. Not linking it. For anyone who wants to "
                   "check what they downloaded:\n\n"
                   f"```\n$ sha256sum heron-7b/model.safetensors\n"
                   f"{sha}  heron-7b/model.safetensors\n```\n\n"
                   "3 layers, hidden size 128, so it is a preview build.", flair="Discussion",
                   score=266, comments=89,
                   plants=[("hash", sha, "sha256sum output of the released model.safetensors "
                            "in a self post (page 2 with limit=10)")]),
        RedditPost(nov(20, 6, 45), "mlx_max", "MLX vs llama.cpp on M4 Max, same model, same quant",
                   "qwen2.5-7b 4-bit: MLX 92 t/s, llama.cpp Metal 78 t/s. Prompt processing "
                   "is closer.", flair="Discussion", score=140, comments=31),
        RedditPost(nov(20, 6, 10), "hubwatcher", "DeepSeek-V4-Lite GGUFs are up",
                   url="https://huggingface.co/unsloth/DeepSeek-V4-Lite-GGUF", flair="New Model",
                   score=388, comments=71),
        RedditPost(nov(20, 5, 33), "webui_wes", "I made a tiny web UI for Ollama, feedback welcome",
                   url="https://github.com/webui-wes/tinyollama", flair="Resources", score=45,
                   comments=12),
        RedditPost(nov(20, 4, 58), "ctx_carl",
                   "Does anyone else get gibberish from Phi-5-mini past 32k context?",
                   "Fine up to 30k, then it starts repeating tokens. rope_scaling looks right "
                   "in the config.", flair="Question | Help", score=18, comments=9),
        RedditPost(nov(20, 3, 20), "rag_rita", "Open WebUI 0.9 RAG regression",
                   "Embeddings get recomputed on every restart. Pin 0.8.4 until it is fixed: "
                   "https://github.com/open-webui/open-webui/issues/18211",
                   score=66, comments=14),
        RedditPost(nov(20, 1, 45), "AutoModerator", "Local models general discussion & Q&A thread, Nov 20",
                   "Ask anything, share setups, post quick benchmarks. Be nice.", flair="Megathread",
                   score=24, comments=203),
        RedditPost(nov(19, 23, 10), "draft_dan", "Speculative decoding with 0.5B drafts: it actually works",
                   "qwen2.5-0.5b drafting for qwen2.5-7b: 1.6x on code, 1.1x on chat.",
                   score=98, comments=20),
        RedditPost(nov(19, 21, 30), "vector_vera", "Which embedding model are you using for code search?",
                   "Still on an old MiniLM. What is good in late 2026?", flair="Question | Help",
                   score=21, comments=25),
        RedditPost(nov(19, 19, 5), "finetune_finn", "Fine-tuned mistral-7b on my company's docs, lessons learned",
                   "1. Clean data beats more data.\n2. LoRA r=16 was enough.\n3. Evaluate on "
                   "questions people actually ask.", flair="Tutorial | Guide", score=173,
                   comments=40),
        RedditPost(nov(19, 17, 40), "rocm_rob", "ROCm 7.1 finally works on my 7900 XTX",
                   "No more HSA_OVERRIDE_GFX_VERSION. llama.cpp and vLLM both fine.",
                   score=129, comments=35),
    ]
    first = int("1p3k0aa", 36)
    for i, post in enumerate(sorted(posts, key=lambda p: p.time)):
        post.id = base36(first + i * 1_733 + (post.time % 97))
    return posts


def _md_html(text: str) -> str:
    """Reddit's rendering of our Markdown subset: paragraphs, lists, ``` fences, links."""
    blocks, lines, i = [], text.split("\n"), 0
    paragraph: list[str] = []

    def inline(s: str) -> str:
        return re.sub(r"https?://[^\s<)]+", lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>',
                      esc(s).replace("&#039;", "'"))

    def flush() -> None:
        if paragraph:
            if all(p.startswith("- ") for p in paragraph):
                blocks.append("<ul>\n" + "\n".join(f"<li>{inline(p[2:])}</li>" for p in paragraph)
                              + "\n</ul>")
            else:
                blocks.append("<p>" + "\n".join(inline(p) for p in paragraph) + "</p>")
            paragraph.clear()

    while i < len(lines):
        if lines[i].startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            blocks.append("<pre><code>" + esc("\n".join(lines[i + 1:j])).replace("&#039;", "'")
                          + "\n</code></pre>")
            i = j + 1
            continue
        if lines[i].strip():
            paragraph.append(lines[i])
        else:
            flush()
        i += 1
    flush()
    return '<!-- SC_OFF --><div class="md">' + "\n\n".join(blocks) + "\n</div><!-- SC_ON -->"


def _legacy_escape(text: str) -> str:
    """What Reddit does to text fields unless raw_json=1."""
    return esc(text, quotes="")


class RedditSite(Site):
    prefix = "reddit"
    source = "reddit"
    title = f"Reddit listing API (r/{SUBREDDIT})"
    entry_path = f"/r/{SUBREDDIT}/new.json"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.posts = _posts(release)
        self.by_id = {p.id: p for p in self.posts}

    def target_toml(self) -> str:
        return target_table("demo-reddit", "reddit", self.entry_url, loopback_note=True)

    def permalink(self, post: RedditPost) -> str:
        return f"/{self.prefix}/r/{SUBREDDIT}/comments/{post.id}/{_slug(post.title)}/"

    def documents(self) -> list[Doc]:
        docs = []
        for post in self.posts:
            parts = [post.title, post.selftext] + ([post.url] if post.url else [])
            docs.append(Doc(self.source, self.base_url + self.permalink(post),
                            "\n".join(parts), post.plants, post.near))
        return docs

    # ---------------------------------------------------------------- routes

    def handle(self, req: Request, path: str) -> Response:
        m = re.fullmatch(r"/r/([A-Za-z0-9_]+)/new(?:/)?\.json", path)
        if m:
            if m.group(1).lower() != SUBREDDIT.lower():
                return self.json_response({"message": "Not Found", "error": 404}, 404)
            agent = req.headers.get("user-agent", "").strip().lower()
            if not agent or agent.startswith(_GENERIC_AGENTS):
                return self.json_response({"message": "Too Many Requests", "error": 429}, 429)
            return self.listing(req)
        m = re.fullmatch(r"/r/([A-Za-z0-9_]+)/comments/([a-z0-9]+)(?:/[^/]*)?/?", path)
        if m and m.group(1).lower() == SUBREDDIT.lower() and m.group(2) in self.by_id:
            return self.post_page(self.by_id[m.group(2)])
        return html_response("<!DOCTYPE html><html><head><title>reddit.com: page not found"
                             "</title></head><body><h1>page not found</h1></body></html>",
                             status=404, server="snooserv")

    @staticmethod
    def json_response(obj: object, status: int = 200) -> Response:
        return json_response(obj, status, compact=False, server="snooserv",
                             content_type="application/json; charset=UTF-8",
                             headers={"x-ratelimit-used": "1", "x-ratelimit-remaining": "99.0",
                                      "x-ratelimit-reset": "420",
                                      "cache-control": "private, max-age=0, must-revalidate"})

    def listing(self, req: Request) -> Response:
        limit = min(max(req.int_arg("limit", DEFAULT_LIMIT), 1), MAX_LIMIT)
        raw = req.arg("raw_json") == "1"
        posts = self.posts
        after = req.arg("after")
        if after:
            names = [p.name for p in posts]
            posts = posts[names.index(after) + 1:] if after in names else []
        page = posts[:limit]
        more = len(posts) > limit
        return self.json_response({"kind": "Listing", "data": {
            "after": page[-1].name if more and page else None,
            "dist": len(page), "modhash": "", "geo_filter": "",
            "children": [{"kind": "t3", "data": self.post_json(p, raw)} for p in page],
            "before": page[0].name if after and page else None}})

    def post_json(self, p: RedditPost, raw: bool) -> dict[str, object]:
        text = (lambda s: s) if raw else _legacy_escape
        permalink = self.permalink(p)
        is_self = p.url is None
        html = _md_html(p.selftext) if p.selftext else None
        if html is not None and not raw:
            html = esc(html).replace("&#039;", "'")
        url = f"{self.root}/r/{SUBREDDIT}/comments/{p.id}/{_slug(p.title)}/" if is_self else p.url
        domain = f"self.{SUBREDDIT}" if is_self else (
            re.sub(r"^https?://([^/]+).*$", r"\1", p.url) if p.url and "://" in p.url
            else "reddit.com")
        data: dict[str, object] = {
            "approved_at_utc": None, "subreddit": SUBREDDIT, "selftext": text(p.selftext),
            "author_fullname": f"t2_{base36(abs(hash_name(p.author)))}", "saved": False,
            "mod_reason_title": None, "gilded": 0, "clicked": False, "title": text(p.title),
            "link_flair_richtext": [{"e": "text", "t": p.flair}],
            "subreddit_name_prefixed": f"r/{SUBREDDIT}", "hidden": False, "pwls": 6,
            "link_flair_css_class": "", "downs": 0, "thumbnail": "self" if is_self else "default",
            "hide_score": p.time > nov(20, 12, 0),
            "name": p.name, "quarantine": False, "link_flair_text_color": "dark",
            "upvote_ratio": 0.93, "author_flair_background_color": None, "ups": p.score,
            "total_awards_received": 0, "link_flair_text": p.flair, "score": p.score,
            "is_self": is_self, "created": float(p.time), "domain": domain,
            "selftext_html": html, "likes": None, "archived": False, "no_follow": p.score < 5,
            "over_18": False, "spoiler": False, "locked": False, "subreddit_id": SUBREDDIT_ID,
            "id": p.id, "author": p.author, "num_comments": p.comments,
            "send_replies": True, "permalink": permalink, "url": url,
            "subreddit_subscribers": 612_408, "created_utc": float(p.time),
            "num_crossposts": 0, "media": None, "is_video": False, "stickied": False,
        }
        if p.url and not is_self:
            data["url_overridden_by_dest"] = p.url
        if p.crosspost_from:
            data["crosspost_parent"] = f"t3_{p.url.rstrip('/').split('/')[-2]}" if p.url else None
            data.pop("url_overridden_by_dest", None)
        return data

    def post_page(self, p: RedditPost) -> Response:
        body = _md_html(p.selftext) if p.selftext else (
            f'<p><a class="title" href="{esc(p.url or "")}">{esc(p.url or "")}</a></p>')
        return html_response(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{esc(p.title)} : {SUBREDDIT}</title>
<link rel="canonical" href="{self.root}/r/{SUBREDDIT}/comments/{p.id}/{_slug(p.title)}/">
</head><body class="listing-page comments-page">
<div class="content" role="main"><div class="sitetable linklisting">
<div class="thing id-{p.name} link{' self' if p.url is None else ''}" data-fullname="{p.name}" data-author="{esc(p.author)}" data-timestamp="{p.time * 1000}" data-subreddit="{SUBREDDIT}">
<p class="title"><a class="title may-blank" href="{esc(self.permalink(p))}">{esc(p.title)}</a></p>
<p class="tagline">submitted by <a class="author" href="/{self.prefix}/user/{esc(p.author)}">{esc(p.author)}</a></p>
<div class="expando"><form class="usertext"><div class="usertext-body">{body}</div></form></div>
</div></div></div></body></html>
""", server="snooserv")


def hash_name(name: str) -> int:
    """A stable (not per-process) number for a user name, for fake `t2_` ids."""
    n = 7
    for ch in name:
        n = (n * 131 + ord(ch)) % 2_176_782_336
    return n


