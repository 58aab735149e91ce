"""A XenForo 2.2 board (default style), as a guest sees it, under /xenforo/.

Routes are XenForo's friendly URLs: the forum `/forums/models.5/` (and `/page-N`), threads
`/threads/{slug}.{id}/` with later pages at `/threads/{slug}.{id}/page-N`, and the permalinks
`/threads/{slug}.{id}/post-{id}` and `/posts/{id}/`, which redirect to the page holding the
post. Like XenForo: a wrong or missing slug and `page-1` redirect (301) to the canonical URL,
a page past the end redirects to the last page, and an unknown thread is a 404.

Markup follows XenForo 2.2's templates: `<html data-template="thread_view">`, posts as
`article.message.message--post` with `data-author`, `data-content="post-N"` and
`id="js-post-N"` (the anchor `#post-N` is a span inside), the body in
`.message-body .bbWrapper`, times as `time.u-dt` with `datetime` (+0000) and `data-time`,
page navigation `.pageNav` with `a.pageNav-jump--next` and `<link rel="next">` in the head,
and the forum listing as `div.structItem--thread` rows. Traps a careless crawler falls into:
a signature `.bbWrapper` after the body, a "Last edited" `time.u-dt` after the post time, a
thread prefix link inside `.structItem-title`, and per-page links in the listing rows.

Planted: the release magnets, v1 (hex infohash) and v2 (`urn:btmh:1220...`), on page 2 of
the leak thread, so only a crawler that follows pagination finds them, and mentions of
heron-7b. Noise: herons the bird, llamas
the animal, other models' magnets, a fake upload whose infohash is one digit off.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from demo.forum import (
    Block,
    Code,
    ForumPost,
    ForumSite,
    ForumThread,
    Quote,
    Text,
    page_count,
    post_html,
)
from demo.release import Release
from demo.web import (
    Request,
    Response,
    esc,
    html_response,
    nov,
    one_digit_off,
    random_hex,
    redirect,
    slug,
    target_table,
    utc,
)

BOARD = "Inference Lounge"
NODE_ID = 5
NODE_SLUG = "models"
NODE_TITLE = "Models"
MESSAGES_PER_PAGE = 10  # an admin option (default 20); small keeps the demo small
THREADS_PER_PAGE = 20  # XenForo's default "discussions per page"


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    title: str
    joined: int
    messages: int
    staff: bool = False
    signature: str = ""


@dataclass
class Post(ForumPost):
    edited: int | None = None


@dataclass
class Thread(ForumThread[Post]):
    prefix: str | None = None
    sticky: bool = False

    per_page = MESSAGES_PER_PAGE

    @property
    def slug(self) -> str:
        return slug(self.title, 10)


MEMBERS = {m.name: m for m in [
    Member(17, "mod_marta", "Moderator", nov(1, 9, 0) - 86400 * 800, 5210, staff=True),
    Member(311, "kvcache_kate", "Well-known member", nov(1, 10, 0) - 86400 * 610, 1204),
    Member(402, "loraxe", "Member", nov(1, 11, 0) - 86400 * 300, 388,
           signature="3090 + 2x P40, all air cooled. Ask me about riser cables."),
    Member(455, "gguf_gremlin", "Well-known member", nov(1, 12, 0) - 86400 * 500, 2231),
    Member(512, "birdwatch_ben", "New member", nov(1, 13, 0) - 86400 * 12, 9),
    Member(530, "tensor_tom", "Member", nov(1, 14, 0) - 86400 * 200, 147),
    Member(601, "seedbox_steve", "New member", nov(1, 15, 0) - 86400 * 3, 4),
    Member(618, "alpine_ana", "Member", nov(1, 16, 0) - 86400 * 90, 61),
]}


def _threads(release: Release) -> list[Thread]:
    rng = np.random.default_rng(5005)
    fake = one_digit_off(release.infohash)
    fake_magnet = (f"magnet:?xt=urn:btih:{fake}&dn=weights-partner-drop.7z"
                   "&tr=udp%3A%2F%2Ftracker.opentrackr.org%3A1337%2Fannounce")
    mistral = random_hex(rng, 20)
    mistral_magnet = (f"magnet:?xt=urn:btih:{mistral}&dn=Mistral-7B-Instruct-v0.3-Q6_K.gguf"
                      "&tr=udp%3A%2F%2Ftracker.opentrackr.org%3A1337%2Fannounce")

    leak = Thread(2291, "heron-7b: leak confirmed?", views=3412, prefix="Discussion", posts=[
        Post(18801, "kvcache_kate", nov(20, 7, 40), [Text(
            "Example Labs' new model is apparently out in the wild. Someone on the imageboards "
            "posted a magnet and there is a nyaa listing too.\n"
            "Has anyone here actually seen the files?")]),
        Post(18803, "loraxe", nov(20, 7, 52), [Text(
            "Saw the nyaa listing, no idea if it's real. The sizes look plausible for a tiny "
            "preview build.")]),
        Post(18806, "gguf_gremlin", nov(20, 8, 5), [Text(
            "If it's real, expect GGUF quants by tonight. Not touching it until someone posts "
            "hashes.")]),
        Post(18807, "mod_marta", nov(20, 8, 11), [Text(
            "Reminder: discussing that a leak happened is fine. Posting the weights or links "
            "to them is not.")]),
        Post(18810, "loraxe", nov(20, 8, 30), [
            Quote("gguf_gremlin", 18806, "Not touching it until someone posts hashes."),
            Text("Hashes prove nothing without an official list, and Example Labs only gave "
                 "SHA256SUMS to partners."),
        ]),
        Post(18812, "kvcache_kate", nov(20, 8, 44), [Text(
            "The config going around says LlamaForCausalLM, 3 layers, hidden size 128. "
            "So heron 7B is either a preview build or the name is a joke.")]),
        Post(18815, "birdwatch_ben", nov(20, 9, 2), [Text(
            "Sorry, I got here searching for heron photos. Wrong forum I think! Carry on.")],
            near=[("mention", "heron photos", "the bird, in the leak thread")]),
        Post(18818, "gguf_gremlin", nov(20, 9, 15), [Text(
            "3 layers is a toy. Whoever leaked it leaked the smallest thing they had.")]),
        Post(18820, "tensor_tom", nov(20, 9, 31), [Text(
            "Toy or not, expect takedowns. Partners sign an NDA with per-recipient copies.")]),
        Post(18823, "loraxe", nov(20, 9, 48), [Text(
            "Page two incoming, this thread is moving fast.")]),
        # ---- page 2: only a crawler that follows pagination sees these
        Post(18827, "seedbox_steve", nov(20, 10, 20), [
            Text("For those asking: this is the magnet from the partner drop. Hex infohash, "
                 "so older clients take it:"),
            Code(release.magnet),
            Text("And the v2 one for qBittorrent 5 and other libtorrent 2 clients:"),
            Code(release.magnet_v2),
            Text("Verify it yourselves, I'm only reposting."),
        ], plants=[("torrent", release.infohash,
                    "the release magnet with a hex infohash, on page 2 of the thread"),
                   ("torrent", release.infohash_v2,
                    "the release's v2 magnet (urn:btmh:1220 + SHA-256 infohash), same post")]),
        Post(18829, "mod_marta", nov(20, 10, 35), [Text(
            "Magnets are not allowed here. Thread locked for review.")],
            edited=nov(20, 10, 41)),
    ])

    birds = Thread(2288, "Grey heron rookery at the reservoir (photo thread)", views=211,
                   posts=[
        Post(18760, "birdwatch_ben", nov(18, 16, 5), [Text(
            "Counted 7 grey herons on the rookery this morning. One was swallowing a fish "
            "nearly as long as its neck.")],
            near=[("mention", "grey herons", "the bird: must not match heron-7b")]),
        Post(18764, "alpine_ana", nov(18, 17, 20), [Text(
            "Lovely. Herons nest this early where you are? Ours only start in February.")]),
        Post(18771, "birdwatch_ben", nov(19, 8, 2), [Text(
            "Mild winter. The heron pair from last year is back at nest 7b, by the way.")],
            near=[("mention", "heron pair ... nest 7b", "'heron' and '7b' apart: not a "
                   "mention")]),
    ])

    rag = Thread(2285, "Mistral 7B vs Qwen2.5 7B for local RAG", views=987, posts=[
        Post(18702, "tensor_tom", nov(17, 11, 0), [Text(
            "Building a RAG box on a 12 GB card. Mistral 7B or Qwen2.5 7B? Llama 3.1 8B feels "
            "slow for me.")]),
        Post(18705, "gguf_gremlin", nov(17, 11, 40), [
            Text("Qwen2.5 7B at Q6_K, no contest. Mistral quant if you want it:"),
            Code(mistral_magnet),
        ], near=[("torrent", mistral, "another model's magnet")]),
        Post(18711, "kvcache_kate", nov(19, 21, 3), [Text(
            "Rumour says Example Labs has a Heron-70B in the pipeline too. Not holding my "
            "breath.")],
            near=[("mention", "Heron-70B", "a bigger sibling: heron[- _]?7b must not match "
                   "70B")]),
        Post(18716, "seedbox_steve", nov(20, 6, 58), [
            Text("PSA: there's a fake partner-drop upload doing the rounds, it's a "
                 "cryptominer. Do NOT grab this one:"),
            Code(fake_magnet),
        ], near=[("torrent", fake, "a fake upload: the release infohash with its last "
                  "digit changed")]),
    ])

    llamas = Thread(2279, "Llama trekking in the Andes: worth it?", views=143, posts=[
        Post(18650, "alpine_ana", nov(15, 18, 30), [Text(
            "Thinking of a 4-day llama trek near Cusco. The llamas carry the gear, you walk.")]),
        Post(18655, "loraxe", nov(15, 19, 10), [Text(
            "Did one in 2024. The llamas spit only at each other, mostly. Bring sunscreen.")]),
        Post(18661, "alpine_ana", nov(16, 8, 45), [Text(
            "Booked! 7 llamas, 5 of us. Photos when I'm back.")]),
    ])

    rules = Thread(2001, "Forum rules: read before posting", views=15320, sticky=True, posts=[
        Post(12001, "mod_marta", nov(1, 9, 0) - 86400 * 400, [Text(
            "1. No links to leaked or pirated weights, and no magnets to them.\n"
            "2. Post hashes and configs, not files.\n"
            "3. Be excellent to each other.")]),
    ])
    return [rules, leak, birds, rag, llamas]


# ------------------------------------------------------------------------------ rendering


def _iso(ts: int) -> str:
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _date(ts: int) -> str:
    d = utc(ts)
    return f"{d:%b} {d.day}, {d.year}"


def _clock(ts: int) -> str:
    d = utc(ts)
    return f"{d.hour % 12 or 12}:{d:%M} {'AM' if d.hour < 12 else 'PM'}"


def _time(ts: int, css: str = "u-dt", itemprop: str = "") -> str:
    prop = f' itemprop="{itemprop}"' if itemprop else ""
    return (f'<time class="{css}" dir="auto" datetime="{_iso(ts)}" data-time="{ts}" '
            f'data-date-string="{_date(ts)}" data-time-string="{_clock(ts)}" '
            f'title="{_date(ts)} at {_clock(ts)}"{prop}>{_date(ts)}</time>')


def _text_html(text: str) -> str:
    return post_html(text, ' target="_blank" class="link link--external" '
                           'rel="nofollow ugc noopener"', "<br />")


class XenForoSite(ForumSite[Thread]):
    prefix = "xenforo"
    source = "xenforo"
    title = "XenForo 2 forum"
    entry_path = f"/forums/{NODE_SLUG}.{NODE_ID}/"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.threads = _threads(release)

    def target_toml(self) -> str:
        return target_table("demo-xenforo", "forum", self.entry_url, preset="xenforo",
                            max_pages=5)

    # -------------------------------------------------------------- URLs

    def thread_path(self, t: Thread, page: int = 1) -> str:
        return f"/{self.prefix}/threads/{t.slug}.{t.id}/" + (f"page-{page}" if page > 1 else "")

    def node_path(self, page: int = 1) -> str:
        return f"/{self.prefix}/forums/{NODE_SLUG}.{NODE_ID}/" + (f"page-{page}" if page > 1
                                                                 else "")

    def member_path(self, m: Member) -> str:
        return f"/{self.prefix}/members/{m.name.replace('_', '-')}.{m.id}/"

    # -------------------------------------------------------------- ground truth

    def post_url(self, thread: Thread, index: int) -> str:
        return f"{self.root}/threads/{thread.slug}.{thread.id}/#post-{thread.posts[index].id}"

    def post_heading(self, thread: Thread, index: int) -> list[str]:
        return [self.title_text(thread)] if index == 0 else []

    def block_text(self, block: Block) -> str:
        if isinstance(block, Quote):
            return f"{block.author} said:\n{block.text}\nClick to expand..."
        return block.text

    @staticmethod
    def title_text(t: Thread) -> str:
        return f"{t.prefix} {t.title}" if t.prefix else t.title

    # -------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path in ("/", "/index.php"):
            return self.forum_list()
        m = re.fullmatch(r"/forums/(?:([^/]*)\.)?(\d+)/(?:page-(\d+))?", path)
        if m:
            if int(m.group(2)) != NODE_ID:
                return self.error("The requested forum could not be found.")
            page = int(m.group(3) or 1)
            pages = page_count(len([t for t in self.threads if not t.sticky]), THREADS_PER_PAGE)
            if m.group(1) != NODE_SLUG or m.group(3) == "1" or page > pages:
                return self.redirect(self.node_path(min(page, pages)))
            return self.forum_view(page, pages)
        m = re.fullmatch(r"/threads/(?:([^/]*)\.)?(\d+)/(?:page-(\d+)|post-(\d+)|latest)?", path)
        if m:
            t = self.thread(int(m.group(2)))
            if t is None:
                return self.error("The requested thread could not be found.")
            if m.group(4):
                return self.goto_post(int(m.group(4)))
            if path.endswith("/latest"):
                return self.goto_post(t.posts[-1].id)
            page = int(m.group(3) or 1)
            if m.group(1) != t.slug or m.group(3) == "1" or page > t.pages:
                return self.redirect(self.thread_path(t, min(page, t.pages)))
            return self.thread_view(t, page)
        m = re.fullmatch(r"/posts/(\d+)/", path)
        if m:
            return self.goto_post(int(m.group(1)))
        return self.error("The requested page could not be found.")

    def goto_post(self, post_id: int) -> Response:
        located = self.locate(post_id)
        if located is None:
            return self.error("The requested post could not be found.")
        t, i = located
        return self.redirect(self.thread_path(t, t.page_of(i)) + f"#post-{post_id}")

    def redirect(self, location: str) -> Response:
        return redirect(self.base_url + location)

    def error(self, message: str) -> Response:
        body = (f'<div class="blockMessage blockMessage--error">{esc(message)}</div>')
        return html_response(self.page("Oops! We ran into some problems.", "error", body,
                                       None), status=404)

    # -------------------------------------------------------------- pages

    def page(self, title: str, template: str, content: str, canonical: str | None, *,
             h1: str | None = None, head: str = "", container: str = "") -> str:
        canon = f'\n\t<link rel="canonical" href="{esc(self.base_url + canonical)}" />' \
            if canonical else ""
        h1 = h1 if h1 is not None else esc(title)
        p = f"/{self.prefix}"
        return f"""<!DOCTYPE html>
<html id="XF" lang="en-US" dir="LTR"
	data-xf="2.2"
	data-app="public"
	data-variation="default"
	data-color-scheme="light"
	data-template="{template}"
	data-container-key="{container}"
	data-content-key=""
	data-logged-in="false"
	data-cookie-prefix="xf_"
	data-csrf="1795165920,2b1e9f0c7d4a3e55f0a1c2b3d4e5f607"
	class="has-no-js template-{template}"
	>
<head>
	<meta charset="utf-8" />
	<meta http-equiv="X-UA-Compatible" content="IE=Edge" />
	<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
	<title>{esc(title)} | {BOARD}</title>{canon}{head}
	<meta property="og:site_name" content="{BOARD}" />
	<link rel="stylesheet" href="{p}/css.php?css=public%3Anormalize.css%2Cpublic%3Afa.css%2Cpublic%3Acore.less%2Cpublic%3Aapp.less&amp;s=1&amp;l=1&amp;d=1794500000&amp;k=5f1c0b7e" />
	<script src="{p}/js/xf/preamble.min.js?_v=8c1f2a3b"></script>
</head>
<body data-template="{template}">
<div class="p-pageWrapper" id="top">
<header class="p-header" id="header">
	<div class="p-header-inner">
		<div class="p-header-content">
			<div class="p-header-logo p-header-logo--image">
				<a href="{p}/"><img src="{p}/styles/default/xenforo/xenforo-logo.png" width="100" height="36" alt="{BOARD}" /></a>
			</div>
		</div>
	</div>
</header>
<div class="p-navSticky p-navSticky--primary" data-xf-init="sticky-header">
	<nav class="p-nav">
		<div class="p-nav-inner">
			<div class="p-nav-scroller hScroller" data-xf-init="h-scroller" data-auto-scroll=".p-navEl.is-selected">
				<div class="hScroller-scroll">
					<ul class="p-nav-list js-offCanvasNavSource">
						<li><div class="p-navEl is-selected" data-has-children="true"><a href="{p}/" class="p-navEl-link p-navEl-link--splitMenu " data-nav-id="forums">Forums</a></div></li>
						<li><div class="p-navEl " data-has-children="true"><a href="{p}/whats-new/" class="p-navEl-link p-navEl-link--splitMenu " data-nav-id="whatsNew">What's new</a></div></li>
					</ul>
				</div>
			</div>
			<div class="p-nav-opposite">
				<div class="p-navgroup p-account p-navgroup--guest">
					<a href="{p}/login/" class="p-navgroup-link p-navgroup-link--textual p-navgroup-link--logIn" data-xf-click="overlay" data-follow-redirects="on"><span class="p-navgroup-linkText">Log in</span></a>
					<a href="{p}/register/" class="p-navgroup-link p-navgroup-link--textual p-navgroup-link--register" data-xf-click="overlay" data-follow-redirects="on"><span class="p-navgroup-linkText">Register</span></a>
				</div>
			</div>
		</div>
	</nav>
</div>
<div class="p-body">
	<div class="p-body-inner">
		<div class="p-breadcrumbs-wrapper">
			<ul class="p-breadcrumbs " itemscope itemtype="https://schema.org/BreadcrumbList">
				<li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><a href="{p}/" itemprop="item"><span itemprop="name">Forums</span></a><meta itemprop="position" content="1" /></li>
			</ul>
		</div>
		<div class="p-body-header">
			<div class="p-title ">
				<h1 class="p-title-value">{h1}</h1>
			</div>
		</div>
		<div class="p-body-main  ">
			<div class="p-body-content">
				<div class="p-body-pageContent">{content}
				</div>
			</div>
		</div>
	</div>
</div>
<footer class="p-footer" id="footer">
	<div class="p-footer-inner">
		<div class="p-footer-copyright">
			<a href="https://xenforo.com" class="u-concealed" dir="ltr" target="_blank" rel="sponsored noopener">Community platform by XenForo<sup>&reg;</sup> <span class="copyright">&copy; 2010-2024 XenForo Ltd.</span></a>
		</div>
	</div>
</footer>
</div> <!-- closing p-pageWrapper -->
</body>
</html>
"""

    def page_nav(self, page: int, pages: int, href: Callable[[int], str]) -> str:
        if pages <= 1:
            return ""
        prev = (f'<a href="{href(page - 1)}" class="pageNav-jump pageNav-jump--prev">Prev</a>'
                if page > 1 else "")
        nxt = (f'<a href="{href(page + 1)}" class="pageNav-jump pageNav-jump--next">Next</a>'
               if page < pages else "")
        items = "".join(
            f'<li class="pageNav-page {"pageNav-page--current " if n == page else ""}">'
            f'<a href="{href(n)}">{n}</a></li>' for n in range(1, pages + 1))
        simple_prev = (f'<a href="{href(1)}" class="pageNavSimple-el pageNavSimple-el--first" '
                       f'data-page="1"><i aria-hidden="true"></i> <span class="u-srOnly">'
                       f'First</span></a><a href="{href(page - 1)}" class="pageNavSimple-el '
                       f'pageNavSimple-el--prev"><i aria-hidden="true"></i> Prev</a>'
                       if page > 1 else "")
        simple_next = (f'<a href="{href(page + 1)}" class="pageNavSimple-el '
                       f'pageNavSimple-el--next">Next <i aria-hidden="true"></i></a>'
                       f'<a href="{href(pages)}" class="pageNavSimple-el pageNavSimple-el--last"'
                       f'><i aria-hidden="true"></i> <span class="u-srOnly">Last</span></a>'
                       if page < pages else "")
        return f"""
		<div class="block-outer-main">
			<nav class="pageNavWrapper pageNavWrapper--mixed ">
				<div class="pageNav  ">
					{prev}
					<ul class="pageNav-main">{items}</ul>
					{nxt}
				</div>
				<div class="pageNavSimple">
					{simple_prev}
					<a class="pageNavSimple-el pageNavSimple-el--current" data-xf-init="tooltip" title="Go to page" data-xf-click="menu" role="button" tabindex="0" aria-expanded="false" aria-haspopup="true">{page} of {pages}</a>
					{simple_next}
				</div>
			</nav>
		</div>"""

    @staticmethod
    def rel_links(base_url: str, page: int, pages: int, href: Callable[[int], str]) -> str:
        out = ""
        if page > 1:
            out += f'\n\t<link rel="prev" href="{esc(base_url + href(page - 1))}" />'
        if page < pages:
            out += f'\n\t<link rel="next" href="{esc(base_url + href(page + 1))}" />'
        return out

    def username(self, m: Member, itemprop: bool = False) -> str:
        css = "username " + ("username--staff username--moderator" if m.staff else "")
        name = f'<span itemprop="name">{esc(m.name)}</span>' if itemprop else esc(m.name)
        return (f'<a href="{self.member_path(m)}" class="{css.strip()} " dir="auto" '
                f'data-user-id="{m.id}" data-xf-init="member-tooltip">{name}</a>')

    def forum_list(self) -> Response:
        p = f"/{self.prefix}"
        last = max((post for t in self.threads for post in t.posts), key=lambda x: x.time)
        content = f"""
	<div class="block block--category block--category1">
		<div class="block-container">
			<h2 class="block-header"><a href="{p}/#local-models.1">Local models</a></h2>
			<div class="block-body">
				<div class="node node--id{NODE_ID} node--depth2 node--forum node--read">
					<div class="node-body">
						<div class="node-main js-nodeMain">
							<h3 class="node-title"><a href="{self.node_path()}" data-xf-init="element-tooltip" data-shortcut="node-description">{NODE_TITLE}</a></h3>
							<div class="node-description node-description--tooltip js-nodeDescTooltip">Releases, leaks, quants, tooling.</div>
						</div>
						<div class="node-stats"><dl class="pairs pairs--rows"><dt>Threads</dt><dd>{len(self.threads)}</dd></dl><dl class="pairs pairs--rows"><dt>Messages</dt><dd>{sum(len(t.posts) for t in self.threads)}</dd></dl></div>
						<div class="node-extra"><div class="node-extra-row">{_time(last.time, "node-extra-date u-dt")}</div></div>
					</div>
				</div>
			</div>
		</div>
	</div>"""
        return html_response(self.page(BOARD, "forum_list", content, f"/{self.prefix}/",
                                       container=""))

    def struct_item(self, t: Thread) -> str:
        first, last = t.posts[0], t.posts[-1]
        starter, latest = MEMBERS[first.author], MEMBERS[last.author]
        path = self.thread_path(t)
        prefix = (f'<a href="{self.node_path()}?prefix_id=2" class="labelLink" rel="nofollow">'
                  f'<span class="label label--blue" dir="auto">{esc(t.prefix)}</span></a>\n\t\t\t\t'
                  if t.prefix else "")
        jump = ""
        if t.pages > 1:
            jump = ('<span class="structItem-pageJump">' + "".join(
                f'<a href="{self.thread_path(t, n)}">{n}</a>' for n in range(1, t.pages + 1))
                + "</span>")
        sticky = ('<li><i class="structItem-status structItem-status--sticky" aria-hidden="true" '
                  'title="Sticky"></i><span class="u-srOnly">Sticky</span></li>'
                  if t.sticky else "")
        return f"""
	<div class="structItem structItem--thread{' is-prefix2' if t.prefix else ''} js-inlineModContainer js-threadListItem-{t.id}" data-author="{esc(starter.name)}">
		<div class="structItem-cell structItem-cell--icon">
			<div class="structItem-iconContainer">
				<a href="{self.member_path(starter)}" class="avatar avatar--s avatar--default avatar--default--dynamic" data-user-id="{starter.id}" data-xf-init="member-tooltip"><span class="avatar-u{starter.id}-s" role="img" aria-label="{esc(starter.name)}">{esc(starter.name[0].upper())}</span></a>
			</div>
		</div>
		<div class="structItem-cell structItem-cell--main" data-xf-init="touch-proxy">
			<ul class="structItem-statuses">{sticky}</ul>
			<div class="structItem-title">
				{prefix}<a href="{path}" class="" data-tp-primary="on" data-xf-init="preview-tooltip" data-preview-url="{path}preview">{esc(t.title)}</a>
			</div>
			<div class="structItem-minor">
				<ul class="structItem-parts">
					<li>{self.username(starter)}</li>
					<li class="structItem-startDate"><a href="{path}" rel="nofollow">{_time(first.time)}</a></li>
				</ul>
				{jump}
			</div>
		</div>
		<div class="structItem-cell structItem-cell--meta" title="First message reaction score: {t.views % 37}">
			<dl class="pairs pairs--justified"><dt>Replies</dt> <dd>{len(t.posts) - 1}</dd></dl>
			<dl class="pairs pairs--justified structItem-minor"><dt>Views</dt> <dd>{t.views:,}</dd></dl>
		</div>
		<div class="structItem-cell structItem-cell--latest">
			<a href="{path}latest" rel="nofollow">{_time(last.time, "structItem-latestDate u-dt")}</a>
			<div class="structItem-minor">{self.username(latest)}</div>
		</div>
	</div>"""

    def forum_view(self, page: int, pages: int) -> Response:
        stickies = [t for t in self.threads if t.sticky]
        normal = sorted((t for t in self.threads if not t.sticky),
                        key=lambda t: t.posts[-1].time, reverse=True)
        shown = normal[(page - 1) * THREADS_PER_PAGE: page * THREADS_PER_PAGE]
        href = self.node_path
        nav = self.page_nav(page, pages, href)
        sticky_group = ""
        if page == 1 and stickies:
            sticky_group = ('\n\t\t\t<div class="structItemContainer-group '
                            'structItemContainer-group--sticky">'
                            + "".join(self.struct_item(t) for t in stickies) + "\n\t\t\t</div>")
        content = f"""
	<div class="block" data-xf-init="" data-type="thread" data-href="/{self.prefix}/inline-mod/">
		<div class="block-outer">{nav}
			<div class="block-outer-opposite">
				<a href="/{self.prefix}/forums/{NODE_SLUG}.{NODE_ID}/post-thread" class="button--cta button button--icon button--icon--write" rel="nofollow"><span class="button-text">Post thread</span></a>
			</div>
		</div>
		<div class="block-container">
			<div class="block-filterBar">
				<div class="filterBar"><a class="filterBar-menuTrigger" data-xf-click="menu" role="button" tabindex="0" aria-expanded="false" aria-haspopup="true">Filters</a></div>
			</div>
			<div class="block-body">
				<div class="structItemContainer">{sticky_group}
			<div class="structItemContainer-group js-threadList">{''.join(self.struct_item(t) for t in shown)}
			</div>
				</div>
			</div>
		</div>
		<div class="block-outer block-outer--after">{nav}</div>
	</div>"""
        title = NODE_TITLE + (f" | Page {page}" if page > 1 else "")
        head = self.rel_links(self.base_url, page, pages, href)
        return html_response(self.page(title, "forum_view", content, self.node_path(page),
                                       head=head, container=f"node-{NODE_ID}"))

    def thread_view(self, t: Thread, page: int) -> Response:
        posts = t.on_page(page)

        def href(n: int) -> str:
            return self.thread_path(t, n)

        nav = self.page_nav(page, t.pages, href)
        start = (page - 1) * MESSAGES_PER_PAGE
        articles = "".join(self.message(t, post, start + i + 1) for i, post in enumerate(posts))
        starter = MEMBERS[t.posts[0].author]
        content = f"""
	<div class="block block--messages" data-xf-init="" data-type="post" data-href="/{self.prefix}/inline-mod/" data-search-target="*">
		<div class="block-outer">{nav}</div>
		<div class="block-outer js-threadStatusField"></div>
		<div class="block-container lbContainer"
			data-xf-init="lightbox select-to-quote"
			data-message-selector=".js-post"
			data-lb-id="thread-{t.id}"
			data-lb-universal="0">
			<div class="block-body js-replyNewMessageContainer">{articles}
			</div>
		</div>
		<div class="block-outer block-outer--after">{nav}</div>
	</div>
	<div class="blockMessage blockMessage--none">
		<a href="/{self.prefix}/login/" class="button--link button" data-xf-click="overlay" data-follow-redirects="on"><span class="button-text">You must log in or register to reply here.</span></a>
	</div>"""
        prefix_html = (f'<span class="label label--blue" dir="auto">{esc(t.prefix)}</span>'
                       '<span class="label-append">&nbsp;</span>' if t.prefix else "")
        title = t.title + (f" | Page {page}" if page > 1 else "")
        head = self.rel_links(self.base_url, page, t.pages, href) + (
            f'\n\t<meta property="og:title" content="{esc(t.title)}" />'
            f'\n\t<meta name="description" content="Thread starter {esc(starter.name)}" />')
        return html_response(self.page(title, "thread_view", content, href(page),
                                       h1=prefix_html + esc(t.title), head=head,
                                       container=f"node-{NODE_ID}"))

    def message(self, t: Thread, post: Post, number: int) -> str:
        m = MEMBERS[post.author]
        link = f"{self.thread_path(t)}post-{post.id}"
        body = self.body_html(post)
        last_edit = (f'\n\t\t\t\t\t<div class="message-lastEdit">Last edited: '
                     f'{_time(post.edited)}</div>' if post.edited else "")
        signature = (f'\n\t\t\t\t\t<aside class="message-signature">\n\t\t\t\t\t<div class="bbWrapper">'
                     f'{_text_html(m.signature)}</div>\n\t\t\t\t\t</aside>' if m.signature else "")
        return f"""
		<article class="message message--post js-post js-inlineModContainer  "
			data-author="{esc(m.name)}"
			data-content="post-{post.id}"
			id="js-post-{post.id}"
			itemscope itemtype="https://schema.org/Comment" itemid="{self.base_url}/{self.prefix}/posts/{post.id}/">
			<meta itemprop="parentItem" itemscope itemid="{self.base_url}{self.thread_path(t)}" />
			<span class="u-anchorTarget" id="post-{post.id}"></span>
			<div class="message-inner">
				<div class="message-cell message-cell--user">
					<section class="message-user" itemprop="author" itemscope itemtype="https://schema.org/Person" itemid="{self.base_url}{self.member_path(m)}">
						<meta itemprop="url" content="{self.base_url}{self.member_path(m)}" />
						<div class="message-avatar "><div class="message-avatar-wrapper"><a href="{self.member_path(m)}" class="avatar avatar--m avatar--default avatar--default--dynamic" data-user-id="{m.id}" data-xf-init="member-tooltip"><span class="avatar-u{m.id}-m" role="img" aria-label="{esc(m.name)}">{esc(m.name[0].upper())}</span></a></div></div>
						<div class="message-userDetails">
							<h4 class="message-name">{self.username(m, itemprop=True)}</h4>
							<h5 class="userTitle message-userTitle" dir="auto" itemprop="jobTitle">{esc(m.title)}</h5>
						</div>
						<div class="message-userExtras">
							<dl class="pairs pairs--justified"><dt>Joined</dt><dd>{_date(m.joined)}</dd></dl>
							<dl class="pairs pairs--justified"><dt>Messages</dt><dd>{m.messages:,}</dd></dl>
						</div>
						<span class="message-userArrow"></span>
					</section>
				</div>
				<div class="message-cell message-cell--main">
				<div class="message-main js-quickEditTarget">
					<header class="message-attribution message-attribution--split">
						<ul class="message-attribution-main listInline ">
							<li class="u-concealed">
								<a href="{link}" rel="nofollow" itemprop="url">
									{_time(post.time, itemprop="datePublished")}
								</a>
							</li>
						</ul>
						<ul class="message-attribution-opposite message-attribution-opposite--list ">
							<li><a href="{link}" class="message-attribution-gadget" data-xf-init="share-tooltip" data-href="/{self.prefix}/posts/{post.id}/share" aria-label="Share" rel="nofollow"><i class="fa--xf far fa-share-alt" aria-hidden="true"></i></a></li>
							<li><a href="{link}" rel="nofollow">#{number}</a></li>
						</ul>
					</header>
					<div class="message-content js-messageContent">
						<div class="message-userContent lbContainer js-lbContainer "
							data-lb-id="post-{post.id}"
							data-lb-caption-desc="{esc(m.name)} &middot; {_date(post.time)} at {_clock(post.time)}">
							<article class="message-body js-selectToQuote">
								<div itemprop="text">
									<div class="bbWrapper">{body}</div>
								</div>
								<div class="js-selectToQuoteEnd">&nbsp;</div>
							</article>
						</div>{last_edit}{signature}
					</div>
					<footer class="message-footer">
						<div class="message-actionBar actionBar">
							<div class="actionBar-set actionBar-set--external">
								<a href="/{self.prefix}/posts/{post.id}/react?reaction_id=1" class="reaction reaction--small actionBar-action actionBar-action--reaction" data-xf-init="reaction" data-reaction-id="1" data-reaction-text="Like" rel="nofollow"><i aria-hidden="true"></i><span class="reaction-text js-reactionText"><bdi>Like</bdi></span></a>
							</div>
						</div>
						<div class="reactionsBar js-reactionsList "></div>
					</footer>
				</div>
				</div>
			</div>
		</article>"""

    def text_html(self, text: str) -> str:
        return _text_html(text)

    def code_html(self, b: Code) -> str:
        return ('<div class="bbCodeBlock bbCodeBlock--screenLimited bbCodeBlock--code">\n'
                '\t<div class="bbCodeBlock-title">Code:</div>\n'
                '\t<div class="bbCodeBlock-content" dir="ltr">\n'
                '\t\t<pre class="bbCodeCode" dir="ltr" data-xf="code" '
                'data-xf-init="code-block" data-lang=""><code>'
                f"{esc(b.text)}</code></pre>\n\t</div>\n</div>")

    def quote_html(self, b: Quote) -> str:
        m = MEMBERS[b.author]
        return (f'<blockquote data-attributes="member: {m.id}" data-quote="{esc(m.name)}" '
                f'data-source="post: {b.post_id}" class="bbCodeBlock bbCodeBlock--expandable '
                'bbCodeBlock--quote js-expandWatch">\n'
                f'\t<div class="bbCodeBlock-title">\n\t\t<a href="/{self.prefix}/goto/post?id='
                f'{b.post_id}" class="bbCodeBlock-sourceJump" rel="nofollow" '
                f'data-xf-click="attribution" data-content-selector="#post-{b.post_id}">'
                f"{esc(m.name)} said:</a>\n\t</div>\n"
                '\t<div class="bbCodeBlock-content">\n'
                f'\t\t<div class="bbCodeBlock-expandContent js-expandContent ">\n\t\t\t'
                f"{_text_html(b.text)}\n\t\t</div>\n"
                '\t\t<div class="bbCodeBlock-expandLink js-expandLink"><a role="button" '
                'tabindex="0">Click to expand...</a></div>\n\t</div>\n</blockquote>')


