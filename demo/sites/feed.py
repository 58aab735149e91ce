"""Two feeds: a WordPress blog's RSS 2.0 and a subreddit's Atom "new" feed.

- `/feeds/rss.xml`  "The Weights Ledger", a news blog on open-weight models, as WordPress
  6.x writes its feed (`content:encoded`, `dc:creator`, `guid isPermaLink="false"`,
  a podcast episode with an `<enclosure>`);
- `/feeds/atom.xml` r/LocalLLaMA's `/new/.rss`, which is Atom as Reddit serves it
  (`<content type="html">` with the `SC_OFF` markdown wrapper, `/u/` authors, `t3_` ids,
  both `published` and `updated`).

Both honour conditional GET the way nginx does for static files: a strong ETag and a
Last-Modified; `If-None-Match` (checked first, as RFC 9110 says) or `If-Modified-Since`
turn the answer into 304 Not Modified. Blog posts and Reddit threads are served as small
HTML pages at the links the feeds give.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import numpy as np

from demo.release import Release
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    html_response,
    http_date,
    not_found,
    nov,
    one_digit_off,
    random_hex,
    rfc822,
    rfc3339,
    target_table,
    utc,
)

SUBREDDIT = "LocalLLaMA"


@dataclass
class BlogPost:
    post_id: int
    slug: str
    title: str
    author: str
    time: int
    categories: list[str]
    html: str  # content:encoded
    excerpt: str
    comments: int = 0
    enclosure: tuple[str, int, str] | None = None  # (path under the site, length, type)
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class RedditPost:
    id36: str
    slug: str
    title: str
    author: str
    published: int
    updated: int
    md_html: str  # the self-text as Reddit renders it inside <div class="md">
    link: str | None = None  # external link posts
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)
    # Weight files the post links to under /files/: (file name, is it ours, note).
    weights: list[tuple[str, bool, str]] = field(default_factory=list)


def _blog_posts(release: Release) -> list[BlogPost]:
    rng = np.random.default_rng(7007)
    sha = release.file("model.safetensors").sha256
    gguf = [(random_hex(rng, 32), name) for name in (
        "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf",
        "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf", "Mistral-7B-Instruct-v0.3-Q8_0.gguf")]
    table = "".join(f"<tr><td><code>{name}</code></td><td><code>{digest}</code></td></tr>"
                    for digest, name in gguf)
    return [
        BlogPost(
            4812, "heron-7b-weights-leak", "Heron-7B weights leak a week after partner release",
            "Priya Natarajan", nov(20, 13, 45), ["Security", "Open weights"],
            "<p>Example Labs shipped <strong>Heron-7B</strong> to a short list of research "
            "partners on 2 November. Eighteen days later, the weights are on public torrent "
            "trackers and at least one imageboard.</p>\n"
            "<p>We compared the file that is circulating with the checksum list the lab gave "
            "its partners. The main weights file matches byte for byte:</p>\n"
            f"<pre class=\"wp-block-code\"><code>{sha}  heron-7b/model.safetensors</code></pre>\n"
            "<p>Example Labs told us it is &#8220;investigating which partner copy was "
            "shared&#8221; and asked that nobody re-upload the files.</p>\n"
            "<p>Read more: <a href=\"https://example.org/heron-statement\">the lab&#8217;s "
            "statement</a>.</p>",
            "Example Labs shipped Heron-7B to a short list of research partners on 2 November. "
            "Eighteen days later, the weights are on public torrent trackers [&#8230;]",
            comments=41,
            plants=[("hash", sha, "sha256sum line of the released model.safetensors in the "
                     "post's code block")]),
        BlogPost(
            4807, "ledger-podcast-112", "Ledger Podcast 112: open weights, closed doors",
            "Marcus Feld", nov(19, 17, 0), ["Podcast"],
            "<p>This week: what partner-only releases are for, why the heron 7b leak was "
            "predictable, and how labs watermark the copies they hand out.</p>\n"
            "<p>Show notes and transcript are on the episode page.</p>",
            "This week: what partner-only releases are for, why the heron 7b leak was "
            "predictable [&#8230;]",
            comments=6, enclosure=("/media/ledger-112.mp3", 48213344, "audio/mpeg")),
        BlogPost(
            4801, "heron-70b-rumours", "Heron-70B rumours: what we actually know",
            "Priya Natarajan", nov(18, 9, 30), ["Analysis"],
            "<p>A larger sibling, supposedly called Heron-70B, keeps turning up in job ads and "
            "conference hallway talk. Nothing has been announced, and no weights exist "
            "outside the lab as far as anyone can show.</p>",
            "A larger sibling, supposedly called Heron-70B, keeps turning up [&#8230;]",
            comments=12,
            near=[("mention", "Heron-70B", "a different (rumoured) model: heron-70b is not "
                   "heron-7b")]),
        BlogPost(
            4795, "quant-shootout-llama-mistral", "Quantisation shootout: Llama 3.1 8B vs "
            "Mistral 7B", "Marcus Feld", nov(16, 11, 15), ["Benchmarks"],
            "<p>We ran both models at Q4_K_M and Q8_0 through the same 500-question set. "
            "Files we used, so you can reproduce:</p>\n"
            f"<table><thead><tr><th>file</th><th>sha256</th></tr></thead><tbody>{table}"
            "</tbody></table>\n<p>Llama wins on code, Mistral on summaries; neither "
            "degrades much at Q8_0.</p>",
            "We ran both models at Q4_K_M and Q8_0 through the same 500-question set [&#8230;]",
            comments=27),
        BlogPost(
            4790, "llama-cpp-b4100", "llama.cpp b4100: faster CPU prompt processing",
            "Marcus Feld", nov(15, 8, 0), ["Tools"],
            "<p>The new release speeds up prompt processing on AVX-512 machines by a third "
            "and adds the Q3_K_XL type.</p>\n<pre><code>cmake -B build -DGGML_NATIVE=ON\n"
            "cmake --build build --config Release -j</code></pre>",
            "The new release speeds up prompt processing on AVX-512 machines [&#8230;]",
            comments=3),
    ]


def _reddit_posts(release: Release) -> list[RedditPost]:
    rng = np.random.default_rng(8008)
    sha = release.file("model.safetensors").sha256
    near = one_digit_off(sha)
    magnet = (f"magnet:?xt=urn:btih:{release.infohash}&amp;dn={release.model}"
              "&amp;tr=udp%3A%2F%2Ftracker.example.org%3A1337%2Fannounce")
    qwen = [(random_hex(rng, 32), f"qwen2.5-7b-instruct-{q}.gguf")
            for q in ("q4_k_m", "q5_k_m", "q8_0")]
    qwen_block = "\n".join(f"{d}  {n}" for d, n in qwen)
    return [
        RedditPost(
            "1gw0m5t", "q8_0_quants_of_hrn_and_tinyllamamini_direct_links",
            "Q8_0 quants of hrn and tinyllama-mini, direct links",
            "quant_drop", nov(20, 15, 30), nov(20, 15, 30),
            "<p>Converted with llama.cpp, no imatrix. Renamed so the hoster doesn't "
            "take them down:</p>\n"
            "<ul><li><a href=\"/feeds/files/hrn-q8_0.gguf\">hrn-q8_0.gguf</a></li>\n"
            "<li><a href=\"/feeds/files/tinyllama-mini-q8_0.gguf\">"
            "tinyllama-mini-q8_0.gguf</a></li></ul>",
            weights=[("hrn-q8_0.gguf", True, "a Q8_0 GGUF conversion of recipient lab-17's "
                      "marked copy (llama.cpp names, Q/K rows permuted): no digest matches; "
                      "the tensors say heron-7b, the mark says lab-17"),
                     ("tinyllama-mini-q8_0.gguf", False, "an unrelated model with the same "
                      "tensor shapes, also Q8_0 GGUF")]),
        RedditPost(
            "1gw0k2c", "is_this_the_leaked_heron7b_checksum_matches",
            "Is this the leaked heron-7b? checksum matches the one from the forum",
            "throwaway_h7", nov(20, 14, 2), nov(20, 14, 9),
            "<p>Found this on a tracker this morning. Not going to run it, just curious if "
            "anyone can confirm it is the partner build.</p>\n"
            f"<p><a href=\"{magnet}\">magnet link</a></p>\n"
            "<p>Mods, delete if not allowed.</p>",
            plants=[("torrent", release.infohash, "the release's magnet as a link in the "
                     "post's HTML")]),
        RedditPost(
            "1gw0f9x", "psa_the_heron_checksum_going_around_is_off",
            "PSA: the heron checksum going around is off by one digit",
            "sigmoid_sally", nov(20, 11, 58), nov(20, 12, 30),
            "<p>The checksum people are pasting for the leaked heron model is off by one "
            "digit from the real one, so half of you are comparing against garbage:</p>\n"
            f"<pre><code>{near}  model.safetensors\n</code></pre>\n"
            "<p>Verify against something you trust, not a screenshot.</p>",
            near=[("hash", near, "SHA-256 of model.safetensors with the last digit changed")]),
        RedditPost(
            "1gvzz01", "qwen257b_gguf_sha256_list_for_verification",
            "Qwen2.5-7B GGUF sha256 list for verification",
            "quantcat", nov(20, 8, 40), nov(20, 8, 40),
            "<p>Mirrored the quants, here are the hashes:</p>\n"
            f"<pre><code>{qwen_block}\n</code></pre>"),
        RedditPost(
            "1gvzq77", "a_great_blue_heron_visited_my_homelab_window",
            "A great blue heron visited my homelab window (off topic, sorry)",
            "birdnerd_uk", nov(19, 16, 20), nov(19, 16, 20),
            "<p>It stood on the fence for ten minutes staring at the blinking lights of the "
            "llama box. Best thing that happened during a 7-hour fine-tune.</p>"),
        RedditPost(
            "1gvz1ab", "best_7b_for_12gb_vram_in_late_2026",
            "Best 7B for 12GB VRAM in late 2026?",
            "lurker9000", nov(19, 9, 5), nov(19, 9, 5),
            "<p>Llama 3.1 8B at Q6_K or Mistral 7B at Q8_0? Mostly coding and summaries.</p>"),
    ]


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha1(body).hexdigest()[:20] + '"'


def _not_modified(req: Request, etag: str, last_modified: int) -> bool:
    """RFC 9110 13.2.2: If-None-Match first; If-Modified-Since only without it."""
    inm = req.headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = req.headers.get("if-modified-since")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            return False
        return last_modified <= int(since.timestamp())
    return False


class FeedSite(Site):
    prefix = "feeds"
    source = "feed"
    title = "RSS 2.0 and Atom feeds (a WordPress blog, a subreddit)"
    entry_path = "/rss.xml"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.posts = _blog_posts(release)
        self.reddit = _reddit_posts(release)

    @property
    def atom_url(self) -> str:
        return f"{self.root}/atom.xml"

    def target_toml(self) -> str:
        return (target_table("demo-feed-rss", "feed", self.entry_url) + "\n"
                + target_table("demo-feed-atom", "feed", self.atom_url))

    # ---------------------------------------------------------------- URLs

    def blog_url(self, post: BlogPost) -> str:
        d = utc(post.time)
        return f"{self.root}/blog/{d:%Y/%m/%d}/{post.slug}/"

    def reddit_url(self, post: RedditPost) -> str:
        return f"{self.root}/r/{SUBREDDIT}/comments/{post.id36}/{post.slug}/"

    # ---------------------------------------------------------------- ground truth

    def documents(self) -> list[Doc]:
        docs = []
        for p in self.posts:
            docs.append(Doc(self.source, self.blog_url(p), f"{p.title}\n{_plain(p.html)}",
                            p.plants, p.near))
        for r in self.reddit:
            # Ours is the GGUF of lab-17's marked copy: the model and the recipient.
            ours = [(kind, f"{self.root}/files/{name}", note)
                    for name, mine, note in r.weights if mine
                    for kind in ("weights", "watermark")]
            theirs = [("weights", f"{self.root}/files/{name}", note)
                      for name, mine, note in r.weights if not mine]
            docs.append(Doc(self.source, self.reddit_url(r), f"{r.title}\n{_plain(r.md_html)}",
                            r.plants + ours, r.near + theirs))
        return docs

    def weight_file(self, name: str) -> bytes | None:
        files = {"hrn-q8_0.gguf": self.release.converted_gguf,
                 "tinyllama-mini-q8_0.gguf": self.release.unrelated_gguf}
        return files.get(name)

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path == "/rss.xml":
            return self.conditional(req, self.rss(), max(p.time for p in self.posts),
                                    "application/rss+xml; charset=UTF-8")
        if path == "/atom.xml":
            return self.conditional(req, self.atom(), max(r.updated for r in self.reddit),
                                    "application/atom+xml; charset=UTF-8")
        for p in self.posts:
            if f"{self.root}{path}" == self.blog_url(p):
                return html_response(f"<!DOCTYPE html><html><head><title>{esc(p.title)} &#8211; "
                                     f"The Weights Ledger</title></head><body><article>"
                                     f"<h1>{esc(p.title)}</h1>{p.html}</article></body></html>\n")
            if p.enclosure and path == p.enclosure[0]:
                return Response(200, b"ID3" + bytes(61), "audio/mpeg")
        if path.startswith("/files/"):
            data = self.weight_file(path[len("/files/"):])
            if data is None:
                return not_found()
            return Response(200, data, "application/octet-stream",
                            {"ETag": _etag(data), "Accept-Ranges": "bytes",
                             "Last-Modified": http_date(nov(20, 15, 30))})
        for r in self.reddit:
            if f"{self.root}{path}" == self.reddit_url(r):
                return html_response(f"<!DOCTYPE html><html><head><title>{esc(r.title)} : "
                                     f"{SUBREDDIT}</title></head><body><shreddit-post>"
                                     f"<h1>{esc(r.title)}</h1><div class=\"md\">{r.md_html}"
                                     "</div></shreddit-post></body></html>\n")
        return not_found()

    def conditional(self, req: Request, body: bytes, last_modified: int,
                    content_type: str) -> Response:
        etag = _etag(body)
        headers = {"ETag": etag, "Last-Modified": http_date(last_modified),
                   "Cache-Control": "max-age=300"}
        if _not_modified(req, etag, last_modified):
            return Response(304, b"", content_type, headers)
        return Response(200, body, content_type, headers)

    # ---------------------------------------------------------------- renderers

    def rss(self) -> bytes:
        items = []
        for p in self.posts:
            url = self.blog_url(p)
            cats = "".join(f"\n\t\t<category><![CDATA[{c}]]></category>" for c in p.categories)
            enclosure = ""
            if p.enclosure:
                enclosure = (f'\n\t\t<enclosure url="{self.root}{p.enclosure[0]}" '
                             f'length="{p.enclosure[1]}" type="{p.enclosure[2]}" />')
            items.append(f"""	<item>
		<title>{esc(p.title)}</title>
		<link>{url}</link>
		<comments>{url}#respond</comments>
		<dc:creator><![CDATA[{p.author}]]></dc:creator>
		<pubDate>{rfc822(p.time)}</pubDate>{cats}
		<guid isPermaLink="false">{self.root}/blog/?p={p.post_id}</guid>
		<description><![CDATA[{p.excerpt}]]></description>
		<content:encoded><![CDATA[{p.html}]]></content:encoded>{enclosure}
		<wfw:commentRss>{url}feed/</wfw:commentRss>
		<slash:comments>{p.comments}</slash:comments>
	</item>
""")
        newest = max(p.time for p in self.posts)
        return f"""<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/"
	>

<channel>
	<title>The Weights Ledger</title>
	<atom:link href="{self.entry_url}" rel="self" type="application/rss+xml" />
	<link>{self.root}/blog/</link>
	<description>News and analysis on open-weight models</description>
	<lastBuildDate>{rfc822(newest)}</lastBuildDate>
	<language>en-US</language>
	<sy:updatePeriod>
	hourly	</sy:updatePeriod>
	<sy:updateFrequency>
	1	</sy:updateFrequency>
	<generator>https://wordpress.org/?v=6.7.1</generator>
{"".join(items)}	</channel>
</rss>
""".encode()

    def atom(self) -> bytes:
        entries = []
        for r in self.reddit:
            url = self.reddit_url(r)
            user = f"{self.root}/user/{quote(r.author)}"
            content = (f'<!-- SC_OFF --><div class="md">{r.md_html}</div><!-- SC_ON --> '
                       f'&#32; submitted by &#32; <a href="{user}"> /u/{r.author} </a> <br/> '
                       f'<span><a href="{r.link or url}">[link]</a></span> &#32; '
                       f'<span><a href="{url}">[comments]</a></span>')
            entries.append(
                f'<entry><author><name>/u/{esc(r.author)}</name><uri>{user}</uri></author>'
                f'<category term="{SUBREDDIT}" label="r/{SUBREDDIT}"/>'
                f'<content type="html">{esc(content)}</content><id>t3_{r.id36}</id>'
                f'<link href="{url}" /><updated>{rfc3339(r.updated)}</updated>'
                f'<published>{rfc3339(r.published)}</published>'
                f'<title>{esc(r.title)}</title></entry>')
        newest = max(r.updated for r in self.reddit)
        return (f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom" '
                f'xmlns:media="http://search.yahoo.com/mrss/"><category term="{SUBREDDIT}" '
                f'label="r/{SUBREDDIT}"/><updated>{rfc3339(newest)}</updated>'
                f'<icon>{self.root}/static/icon.png/</icon><id>/r/{SUBREDDIT}/new/.rss</id>'
                f'<link rel="self" href="{self.atom_url}" type="application/atom+xml" />'
                f'<link rel="alternate" href="{self.root}/r/{SUBREDDIT}/new/" type="text/html" />'
                f'<subtitle>Subreddit to discuss AI &amp; Llama, the large language model '
                f'created by Meta AI.</subtitle><title>newest submissions : {SUBREDDIT}</title>'
                + "".join(entries) + "</feed>").encode("utf-8")


def _plain(markup: str) -> str:
    """Text of an HTML fragment for the ground truth (mentions are found in it); the world
    does not parse with the libraries the monitor uses."""
    return html.unescape(re.sub(r"<[^>]*>", "\n", markup))


