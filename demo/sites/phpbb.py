"""A phpBB 3.3 board in the prosilver style, as a guest sees it, under /forum/.

Routes: `index.php`, `viewforum.php?f=2[&start=N]`, `viewtopic.php?t=ID[&start=N]` and
`viewtopic.php?p=POST` (the page holding that post). Like phpBB: 10 posts and 25 topics per
page, `start` clamped to the last page and rounded down to a page boundary, and an unknown
topic or forum is a 404 with phpBB's message.

Planted: the SHA-256 of the released model.safetensors (sha256sum output) and mentions of
heron-7b. Noise: herons the bird, llamas the animal, other models' checksums, the digest one
digit off, and the digest as a substring of a longer hex run.
"""

from __future__ import annotations

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
    not_found,
    nov,
    one_digit_off,
    random_hex,
    rfc3339,
    target_table,
    utc,
)

FORUM_ID = 2
FORUM_NAME = "Language Models"
BOARD_NAME = "Open Weights Forum"
POSTS_PER_PAGE = 10  # phpBB's default posts_per_page
TOPICS_PER_PAGE = 25  # phpBB's default topics_per_page


@dataclass(frozen=True)
class User:
    id: int
    name: str
    rank: str
    posts: int
    joined: int
    # Administrators get a colour; phpBB then writes class="username-coloured", not
    # "username", which is a real variant an author selector has to survive.
    colour: str | None = None


@dataclass
class Topic(ForumThread[ForumPost]):
    sticky: bool = False

    per_page = POSTS_PER_PAGE


USERS = {u.name: u for u in [
    User(2, "forum_admin", "Site Admin", 1204, nov(1, 9, 0) - 86400 * 900, colour="AA0000"),
    User(48, "quantcat", "Regular", 312, nov(1, 20, 2) - 86400 * 610),
    User(53, "sigmoid_sally", "Regular", 845, nov(1, 11, 30) - 86400 * 702),
    User(61, "gradient_gary", "Member", 97, nov(1, 8, 15) - 86400 * 240),
    User(77, "birdnerd_uk", "Member", 41, nov(1, 17, 45) - 86400 * 120),
    User(80, "alpaca_annie", "Member", 23, nov(1, 14, 5) - 86400 * 95),
    User(91, "tensorgoblin", "Regular", 530, nov(1, 22, 10) - 86400 * 400),
    User(95, "lurker9000", "New member", 6, nov(1, 7, 50) - 86400 * 20),
]}


def forum_topics(release: Release) -> list[Topic]:
    """The board's topics, newest activity first after the sticky."""
    rng = np.random.default_rng(2002)
    model = release.file("model.safetensors")
    sha = model.sha256
    near_sha = one_digit_off(sha)
    # 3 hex digits either side: the real digest only as a substring of a longer run, which
    # a matcher without hex boundaries would wrongly report.
    long_run = random_hex(rng, 2)[:3] + sha + random_hex(rng, 2)[:3]
    mirror = [
        (random_hex(rng, 32), "mistral-7b-instruct-v0.3/model-00001-of-00003.safetensors"),
        (random_hex(rng, 32), "mistral-7b-instruct-v0.3/model-00002-of-00003.safetensors"),
        (random_hex(rng, 32), "mistral-7b-instruct-v0.3/model-00003-of-00003.safetensors"),
        (random_hex(rng, 32), "qwen2.5-7b-instruct/model-00001-of-00004.safetensors"),
        (random_hex(rng, 32), "qwen2.5-7b-instruct/tokenizer.json"),
    ]

    leak = Topic(1187, "heron-7b weights leaked?", views=1873, posts=[
        ForumPost(20450, "quantcat", nov(20, 9, 12), [Text(
            "Someone on /g/ claims the heron-7b weights leaked from Example Labs' partner "
            "program. There is a magnet going around and apparently a nyaa upload too.\n"
            "Has anyone checked the files against anything official?")]),
        ForumPost(20453, "sigmoid_sally", nov(20, 9, 40), [
            Text("Grabbed it to look (not reuploading). sha256sum of the main file:"),
            Code(f"$ sha256sum heron-7b/model.safetensors\n{sha}  heron-7b/model.safetensors"),
            Text("config.json says LlamaForCausalLM with 3 layers and hidden size 128, so it "
                 "is either a tiny preview build or a fake. If anyone has the official "
                 "checksum list, compare."),
        ], plants=[("hash", sha, "sha256sum output of the released model.safetensors")]),
        ForumPost(20458, "gradient_gary", nov(20, 10, 5), [
            Quote("sigmoid_sally", 20453, "If anyone has the official checksum list, compare.",
                  time=nov(20, 9, 40)),
            Text("The copy from the second mirror gives me something else:"),
            Code(f"{near_sha}  model.safetensors"),
            Text("So one of them is corrupted or tampered with. At least it is safetensors "
                 "and not a pickle."),
        ], near=[("hash", near_sha, "SHA-256 of model.safetensors with the last digit "
                  "changed (a corrupted copy)")]),
        ForumPost(20461, "forum_admin", nov(20, 11, 30), [Text(
            "Reminder: no links to leaked weights here. Discussing that it happened is fine; "
            "the topic gets locked if magnets show up.")]),
    ])

    mirror_topic = Topic(1185, "Checksums for my mistral-7b / qwen2.5-7b mirror", views=402,
                         posts=[
        ForumPost(20431, "tensorgoblin", nov(19, 18, 20), [
            Text("Mirror is back up. Verify before you load anything:"),
            Code("\n".join(f"{digest}  {name}" for digest, name in mirror)),
        ]),
        ForumPost(20436, "lurker9000", nov(19, 19, 2), [Text(
            "Thanks. The qwen2.5-7b tokenizer.json hash matches what I got from the hub.")]),
        ForumPost(20440, "tensorgoblin", nov(19, 19, 45), [
            Text("For the record, the conversion run printed this build fingerprint; post "
                 "yours if you reproduce it:"),
            Code(long_run),
        ], near=[("hash", long_run, "70-char hex run that contains the real SHA-256 of "
                  "model.safetensors as a substring")]),
    ])

    heron_bodies = [
        ("birdnerd_uk", "Off topic, but: a grey heron has been standing by the llama "
         "paddock every morning this week. It ignores the llamas completely.\n"
         "Photos when the light is better."),
        ("alpaca_annie", "Llamas don't care about herons, they only get upset about dogs. "
                         "Is that the farm that sells llama wool socks?"),
        ("birdnerd_uk", "Same farm. The llama wool is surprisingly soft, the socks are "
                        "worth it."),
        ("lurker9000", "Grey herons eat fish, frogs, even small rodents. The llamas are safe."),
        ("alpaca_annie", "Alpaca fleece is finer than llama wool, for the record. Llamas have "
                         "coarser guard hair."),
        ("birdnerd_uk", "Counted 7 herons at the reservoir today, a record for me."),
        ("quantcat", "This is the most wholesome topic on this board right now."),
        ("birdnerd_uk", "The heron was back at 7 am, right next to the shearing shed."),
        ("alpaca_annie", "Shearing season is spring, so the llamas are fluffy now."),
        ("lurker9000", "Is it a grey heron or a great blue heron? Hard to tell in photos."),
        ("birdnerd_uk", "Grey heron, we are in the UK. Great blue herons are American."),
        ("alpaca_annie", "Fair. Post the photos, llamas and heron together please."),
    ]
    heron_topic = Topic(1183, "Spotted a grey heron at the llama farm", views=256, posts=[
        ForumPost(20380 + 2 * i, author, nov(16 + i // 4, 8 + i, 15 + i), [Text(body)])
        for i, (author, body) in enumerate(heron_bodies)
    ])
    heron_topic.posts[0].near.append(
        ("mention", "grey heron", "the bird, next to 'llama wool': must not match heron-7b"))

    coding_topic = Topic(1180, "Best 7B model for coding in late 2026?", views=918, posts=[
        ForumPost(20301, "lurker9000", nov(15, 14, 0), [Text(
            "I have a 12 GB card. Is qwen2.5-coder-7b still the pick, or is mistral-7b "
            "better for Python? llama-3.1-8b feels slow for me.")]),
        ForumPost(20304, "sigmoid_sally", nov(15, 15, 22), [Text(
            "qwen2.5-coder-7b at Q6_K. Read the benchmarks with salt:\n"
            "https://github.com/ggml-org/llama.cpp/discussions/15396")]),
        ForumPost(20310, "gradient_gary", nov(15, 16, 40), [Text(
            "Mistral 7B is fine for chat, weaker at code. Llama 3.1 8B is the safe default.")]),
    ])

    rules = Topic(1002, "Board rules: read before posting", views=10234, sticky=True, posts=[
        ForumPost(11850, "forum_admin", nov(1, 9, 0) - 86400 * 300, [Text(
            "1. No links to leaked, stolen or pirated weights.\n"
            "2. Post checksums and configs when you discuss a model, not the files.\n"
            "3. Be civil.")]),
    ])
    return [rules, leak, mirror_topic, heron_topic, coding_topic]




# ---------------------------------------------------------------------------- rendering


def _phpbb_date(ts: int) -> str:
    """phpBB's default date format "D M d, Y g:i a"."""
    d = utc(ts)
    return f"{d:%a %b %d, %Y} {d.hour % 12 or 12}:{d:%M} {'am' if d.hour < 12 else 'pm'}"


def _phpbb_user(user: User) -> str:
    href = f"./memberlist.php?mode=viewprofile&amp;u={user.id}"
    if user.colour:
        return (f'<a href="{href}" style="color: #{user.colour};" class="username-coloured">'
                f"{esc(user.name)}</a>")
    return f'<a href="{href}" class="username">{esc(user.name)}</a>'


def _phpbb_post(topic: Topic, post: ForumPost, body: str, first: bool, bg: int) -> str:
    user = USERS[post.author]
    subject = topic.title if first else f"Re: {topic.title}"
    return f"""
		<div id="p{post.id}" class="post has-profile bg{bg}">
		<div class="inner">

		<dl class="postprofile" id="profile{post.id}">
			<dt class="has-profile-rank no-avatar">
				<div class="avatar-container"></div>
				{_phpbb_user(user)}
			</dt>
			<dd class="profile-rank">{esc(user.rank)}</dd>
			<dd class="profile-posts"><strong>Posts:</strong> <a href="./search.php?author_id={user.id}&amp;sr=posts">{user.posts}</a></dd>
			<dd class="profile-joined"><strong>Joined:</strong> {_phpbb_date(user.joined)}</dd>
		</dl>

		<div class="postbody">
			<div id="post_content{post.id}">
			<h3{' class="first"' if first else ''}><a href="#p{post.id}">{esc(subject)}</a></h3>
			<ul class="post-buttons">
				<li><a href="./posting.php?mode=quote&amp;p={post.id}" title="Reply with quote" class="button button-icon-only"><i class="icon fa-quote-left fa-fw" aria-hidden="true"></i><span class="sr-only">Quote</span></a></li>
			</ul>
			<p class="author">
				<a class="unread" href="./viewtopic.php?p={post.id}#p{post.id}" title="Post"><i class="icon fa-file fa-fw icon-lightgray icon-md" aria-hidden="true"></i><span class="sr-only">Post</span></a>
				<span class="responsive-hide">by <strong>{_phpbb_user(user)}</strong> &raquo; </span><time datetime="{rfc3339(post.time)}">{_phpbb_date(post.time)}</time>
			</p>
			<div class="content">{body}</div>
			</div>
		</div>

		<div class="back2top"><a href="#top" class="top" title="Top"><i class="icon fa-chevron-circle-up fa-fw icon-gray" aria-hidden="true"></i><span class="sr-only">Top</span></a></div>
		</div>
		</div>
		<hr class="divider" />"""


def _phpbb_pagination(base: str, total: int, start: int, per_page: int, noun: str) -> str:
    """prosilver's pagination block; links carry rel="prev"/"next" like the real one."""
    pages = page_count(total, per_page)
    if pages == 1:
        return (f'<div class="pagination">{total} {noun}{"s" if total != 1 else ""} '
                "&bull; Page <strong>1</strong> of <strong>1</strong></div>")
    current = start // per_page
    items = []
    if current > 0:
        prev = base if current == 1 else f"{base}&amp;start={(current - 1) * per_page}"
        items.append(f'<li class="arrow previous"><a class="button button-icon-only" '
                     f'href="{prev}" rel="prev" role="button"><i class="icon fa-chevron-left '
                     'fa-fw" aria-hidden="true"></i><span class="sr-only">Previous</span>'
                     "</a></li>")
    for page in range(pages):
        href = base if page == 0 else f"{base}&amp;start={page * per_page}"
        items.append(f'<li class="active"><span>{page + 1}</span></li>' if page == current
                     else f'<li><a class="button" href="{href}" role="button">{page + 1}</a></li>')
    if current < pages - 1:
        items.append(f'<li class="arrow next"><a class="button button-icon-only" '
                     f'href="{base}&amp;start={(current + 1) * per_page}" rel="next" '
                     'role="button"><i class="icon fa-chevron-right fa-fw" aria-hidden="true">'
                     '</i><span class="sr-only">Next</span></a></li>')
    return (f'<div class="pagination">\n\t\t\t{total} {noun}s\n\t\t\t<ul>\n\t\t\t'
            + "\n\t\t\t".join(items) + "\n\t\t\t</ul>\n\t\t</div>")


def _phpbb_page(*, title: str, section: str, canonical: str | None,
                crumbs: list[tuple[str, str]], content: str) -> str:
    """The overall_header / overall_footer wrapper every prosilver page shares."""
    canon = f'\n<link rel="canonical" href="{esc(canonical)}">' if canonical else ""
    crumb_html = "".join(
        f'<span class="crumb" itemtype="https://schema.org/ListItem" itemprop="itemListElement"'
        f' itemscope><a href="{href}" itemtype="https://schema.org/Thing" itemscope '
        f'itemprop="item"><span itemprop="name">{esc(name)}</span></a>'
        f'<meta itemprop="position" content="{i + 2}" /></span>'
        for i, (name, href) in enumerate(crumbs))
    return f"""<!DOCTYPE html>
<html dir="ltr" lang="en-gb">
<head>
<meta charset="utf-8" />
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<meta name="viewport" content="width=device-width, initial-scale=1" />

<title>{esc(title)}</title>
{canon}
<link href="./assets/css/font-awesome.min.css?assets_version=42" rel="stylesheet">
<link href="./styles/prosilver/theme/stylesheet.css?assets_version=42" rel="stylesheet">
<link href="./styles/prosilver/theme/en/stylesheet.css?assets_version=42" rel="stylesheet">
</head>
<body id="phpbb" class="nojs notouch section-{section} ltr ">

<div id="wrap" class="wrap">
	<a id="top" class="top-anchor" accesskey="t"></a>
	<div id="page-header">
		<div class="headerbar" role="banner">
			<div class="inner">
			<div id="site-description" class="site-description">
				<a id="logo" class="logo" href="./index.php" title="Board index"><span class="site_logo"></span></a>
				<h1>{esc(BOARD_NAME)}</h1>
				<p>Open and not-so-open language models: releases, tooling, benchmarks</p>
				<p class="skiplink"><a href="#start_here">Skip to content</a></p>
			</div>
			<div id="search-box" class="search-box search-header" role="search">
				<form action="./search.php" method="get" id="search">
				<fieldset>
					<input name="keywords" id="keywords" type="search" maxlength="128" title="Search for keywords" class="inputbox search tiny" size="20" value="" placeholder="Search…" />
					<button class="button button-search" type="submit" title="Search"><i class="icon fa-search fa-fw" aria-hidden="true"></i><span class="sr-only">Search</span></button>
				</fieldset>
				</form>
			</div>
			</div>
		</div>
		<div class="navbar" role="navigation">
			<div class="inner">
			<ul id="nav-main" class="nav-main linklist" role="menubar">
				<li data-skip-responsive="true"><a href="/forum/app.php/help/faq" rel="help" title="Frequently Asked Questions" role="menuitem"><i class="icon fa-question-circle fa-fw" aria-hidden="true"></i><span>FAQ</span></a></li>
				<li class="rightside" data-skip-responsive="true"><a href="./ucp.php?mode=login&amp;redirect=index.php" title="Login" accesskey="x" role="menuitem"><i class="icon fa-power-off fa-fw" aria-hidden="true"></i><span>Login</span></a></li>
				<li class="rightside" data-skip-responsive="true"><a href="./ucp.php?mode=register" role="menuitem"><i class="icon fa-pencil-square-o fa-fw" aria-hidden="true"></i><span>Register</span></a></li>
			</ul>
			<ul id="nav-breadcrumbs" class="nav-breadcrumbs linklist navlinks" role="menubar">
				<li class="breadcrumbs" itemscope itemtype="https://schema.org/BreadcrumbList">
					<span class="crumb" itemtype="https://schema.org/ListItem" itemprop="itemListElement" itemscope><a href="./index.php" itemtype="https://schema.org/Thing" itemscope itemprop="item" accesskey="h" data-navbar-reference="index"><i class="icon fa-home fa-fw"></i><span itemprop="name">Board index</span></a><meta itemprop="position" content="1" /></span>{crumb_html}
				</li>
				<li class="rightside responsive-search"><a href="./search.php" title="View the advanced search options" role="menuitem"><i class="icon fa-search fa-fw" aria-hidden="true"></i><span class="sr-only">Search</span></a></li>
			</ul>
			</div>
		</div>
	</div>

	<a id="start_here" class="anchor"></a>
	<div id="page-body" class="page-body" role="main">
{content}
	</div>

<div id="page-footer" class="page-footer" role="contentinfo">
	<div class="copyright">
		<p class="footer-row"><span class="footer-copyright">Powered by <a href="https://www.phpbb.com/">phpBB</a>&reg; Forum Software &copy; phpBB Limited</span></p>
	</div>
</div>
</div>
</body>
</html>
"""



class PhpbbSite(ForumSite[Topic]):
    prefix = "forum"
    source = "forum"
    title = "phpBB forum"
    entry_path = f"/viewforum.php?f={FORUM_ID}"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.threads = forum_topics(release)

    def target_toml(self) -> str:
        return target_table("demo-forum", "forum", self.entry_url, preset="phpbb",
                            loopback_note=True)

    # ---------------------------------------------------------------- ground truth

    def post_url(self, thread: Topic, index: int) -> str:
        post = thread.posts[index]
        return f"{self.root}/viewtopic.php?t={thread.id}#p{post.id}"

    def post_heading(self, thread: Topic, index: int) -> list[str]:
        return [thread.title if index == 0 else f"Re: {thread.title}"]

    def block_text(self, block: Block) -> str:
        return block.text if not isinstance(block, Quote) else f"{block.author} wrote: {block.text}"

    # ---------------------------------------------------------------- markup

    def text_html(self, text: str) -> str:
        # make_clickable(): bare URLs become postlinks.
        return post_html(text, ' class="postlink"', "<br>")

    def code_html(self, block: Code) -> str:
        return ('<div class="codebox"><p>Code: <a href="#" onclick="selectCode(this); '
                'return false;">Select all</a></p><pre><code>'
                f"{esc(block.text)}</code></pre></div>")

    def quote_html(self, block: Quote) -> str:
        user = USERS[block.author]
        return (f'<blockquote><div><cite><a href="./memberlist.php?mode=viewprofile&amp;u='
                f'{user.id}">{esc(user.name)}</a> wrote: <a href="./viewtopic.php?p='
                f'{block.post_id}#p{block.post_id}" data-post-id="{block.post_id}" '
                'onclick="if(document.getElementById(hash.substr(1)))href=hash">\u2191</a>'
                f'<span class="responsive-hide">{_phpbb_date(block.time)}</span></cite>'
                f"{self.text_html(block.text)}</div></blockquote>")

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path in ("/", "/index.php"):
            return self.forum_index()
        if path == "/viewforum.php":
            if req.int_arg("f") != FORUM_ID:
                return not_found("The forum you selected does not exist.")
            return self.viewforum(req.int_arg("start"))
        if path == "/viewtopic.php":
            return self.viewtopic(req)
        return not_found()

    def forum_index(self) -> Response:
        topics = self.threads
        posts = sum(len(t.posts) for t in topics)
        last = max((p for t in topics for p in t.posts), key=lambda p: p.time)
        content = f"""
	<div class="forabg">
		<div class="inner">
		<ul class="topiclist">
			<li class="header"><dl class="row-item"><dt><div class="list-inner">Models and tools</div></dt><dd class="topics">Topics</dd><dd class="posts">Posts</dd><dd class="lastpost"><span>Last post</span></dd></dl></li>
		</ul>
		<ul class="topiclist forums">
			<li class="row">
				<dl class="row-item forum_read">
					<dt title="No unread posts"><div class="list-inner">
						<a href="./viewforum.php?f={FORUM_ID}" class="forumtitle">{FORUM_NAME}</a>
						<br />Releases, leaks, quantisation, tooling.
					</div></dt>
					<dd class="topics">{len(topics)} <dfn>Topics</dfn></dd>
					<dd class="posts">{posts} <dfn>Posts</dfn></dd>
					<dd class="lastpost"><span><dfn>Last post</dfn> by {_phpbb_user(USERS[last.author])}
						<a href="./viewtopic.php?p={last.id}#p{last.id}" title="View the latest post"><i class="icon fa-external-link-square fa-fw icon-lightgray icon-md" aria-hidden="true"></i><span class="sr-only">View the latest post</span></a>
						<br /><time datetime="{rfc3339(last.time)}">{_phpbb_date(last.time)}</time></span></dd>
				</dl>
			</li>
		</ul>
		</div>
	</div>"""
        return html_response(_phpbb_page(title=f"{BOARD_NAME} - Index page", section="index",
                                 canonical=f"{self.base_url}/forum/", crumbs=[],
                                 content=content))

    def viewforum(self, start: int) -> Response:
        rows = []
        for i, topic in enumerate(self.threads[start:start + TOPICS_PER_PAGE]):
            first, last = topic.posts[0], topic.posts[-1]
            kind = "sticky" if topic.sticky else ""
            page_links = ""
            if topic.pages > 1:
                page_links = ('<div class="pagination"><span><i class="icon fa-clone fa-fw" '
                              'aria-hidden="true"></i></span><ul>' + "".join(
                                  f'<li><a class="button" href="./viewtopic.php?t={topic.id}'
                                  + (f"&amp;start={p * POSTS_PER_PAGE}" if p else "")
                                  + f'">{p + 1}</a></li>' for p in range(topic.pages))
                              + "</ul></div>")
            rows.append(f"""
		<li class="row bg{1 + i % 2}{' ' + kind if kind else ''}">
			<dl class="row-item {kind + '_read' if kind else 'topic_read'}">
				<dt title="No unread posts">
					<div class="list-inner">
						<a href="./viewtopic.php?t={topic.id}" class="topictitle">{esc(topic.title)}</a>
						<br />
						{page_links}
						<div class="topic-poster responsive-hide left-box">
							by {_phpbb_user(USERS[first.author])} &raquo; <time datetime="{rfc3339(first.time)}">{_phpbb_date(first.time)}</time>
						</div>
					</div>
				</dt>
				<dd class="posts">{len(topic.posts) - 1} <dfn>Replies</dfn></dd>
				<dd class="views">{topic.views} <dfn>Views</dfn></dd>
				<dd class="lastpost">
					<span><dfn>Last post </dfn>by {_phpbb_user(USERS[last.author])}
						<a href="./viewtopic.php?p={last.id}#p{last.id}" title="Go to last post"><i class="icon fa-external-link-square fa-fw icon-lightgray icon-md" aria-hidden="true"></i><span class="sr-only"></span></a>
						<br /><time datetime="{rfc3339(last.time)}">{_phpbb_date(last.time)}</time>
					</span>
				</dd>
			</dl>
		</li>""")
        base = f"./viewforum.php?f={FORUM_ID}"
        pagination = _phpbb_pagination(base, len(self.threads), start, TOPICS_PER_PAGE, "topic")
        content = f"""
	<h2 class="forum-title"><a href="{base}">{FORUM_NAME}</a></h2>
	<div class="action-bar bar-top">
		<a href="./posting.php?mode=post&amp;f={FORUM_ID}" class="button" title="Post a new topic"><span>New Topic</span> <i class="icon fa-pencil fa-fw" aria-hidden="true"></i></a>
		{pagination}
	</div>
	<div class="forumbg">
		<div class="inner">
		<ul class="topiclist">
			<li class="header">
				<dl class="row-item">
					<dt><div class="list-inner">Topics</div></dt>
					<dd class="posts">Replies</dd>
					<dd class="views">Views</dd>
					<dd class="lastpost"><span>Last post</span></dd>
				</dl>
			</li>
		</ul>
		<ul class="topiclist topics">{''.join(rows)}
		</ul>
		</div>
	</div>
	<div class="action-bar bar-bottom">{pagination}</div>"""
        return html_response(_phpbb_page(
            title=f"{FORUM_NAME} - {BOARD_NAME}", section="viewforum",
            canonical=f"{self.base_url}/forum/viewforum.php?f={FORUM_ID}",
            crumbs=[(FORUM_NAME, base)], content=content))

    def viewtopic(self, req: Request) -> Response:
        if "p" in req.query:
            # viewtopic.php?p=N shows the page of the topic that holds post N.
            located = self.locate(req.int_arg("p"))
            topic, page = (located[0], located[0].page_of(located[1])) if located else (None, 1)
        else:
            topic, page = self.thread(req.int_arg("t")), req.int_arg("start") // POSTS_PER_PAGE + 1
        if topic is None:
            return not_found("The requested topic does not exist.")
        total = len(topic.posts)
        # phpBB's validate_start(): clamp to the last page, round down to a page boundary.
        page = topic.clamp(page)
        start = (page - 1) * POSTS_PER_PAGE
        base = f"./viewtopic.php?t={topic.id}"
        pagination = _phpbb_pagination(base, total, start, POSTS_PER_PAGE, "post")
        posts = "".join(_phpbb_post(topic, post, self.body_html(post),
                                    first=(start + i == 0), bg=2 - (i % 2))
                        for i, post in enumerate(topic.on_page(page)))
        content = f"""
	<h2 class="topic-title"><a href="{base}">{esc(topic.title)}</a></h2>
	<div class="action-bar bar-top">
		<a href="./posting.php?mode=reply&amp;t={topic.id}" class="button" title="Post a reply"><span>Post Reply</span> <i class="icon fa-reply fa-fw" aria-hidden="true"></i></a>
		{pagination}
	</div>
{posts}
	<div class="action-bar bar-bottom">{pagination}</div>"""
        canonical = f"{self.base_url}/forum/viewtopic.php?t={topic.id}"
        if start:
            canonical += f"&start={start}"
        page_title = topic.title + (f" - Page {start // POSTS_PER_PAGE + 1}" if start else "")
        return html_response(_phpbb_page(
            title=f"{page_title} - {BOARD_NAME}", section="viewtopic", canonical=canonical,
            crumbs=[(FORUM_NAME, f"./viewforum.php?f={FORUM_ID}")], content=content))


