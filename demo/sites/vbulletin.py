"""A vBulletin 4.2 board (default style, friendly URLs off), as a guest sees it, under
/vbulletin/.

Routes: `index.php`, `forumdisplay.php?f=5[&page=N]`, `showthread.php?t=ID[&page=N]` and
`showthread.php?p=POST` (the page holding that post). Like vBulletin 4: pages are
ISO-8859-1 (characters outside Latin-1 arrive as numeric references such as `&#8364;`),
every page carries `<base href>` that relative links resolve against, a page past the end
shows the last page, and an unknown thread or forum is the "Invalid Thread specified."
message with HTTP 200.

Markup follows vBulletin 4.2's templates: the listing `ol#threads > li.threadbit` with
`a.title#thread_title_ID` (and per-page links in the row); posts in `ol#posts` as
`li.postbitlegacy.postbitim.postcontainer#post_ID`, the body in `div#post_message_ID >
blockquote.postcontent.restore`, the author `a.username` (with a `<strong>`), the time
`span.date` ("11-20-2026, 09:12 AM", board time, UTC here), an optional `h2.title`, the
signature in `.after_content` (outside the body), and pagination with `a[rel=next]`.
Board options: 10 posts and 5 threads per page.

Planted: the MD5 of the released model.safetensors (md5sum output) on page 1 of a thread and
the SHA-1 of tokenizer.json on its page 2; mentions, one of them only in a thread on the
forum's second listing page. Noise: herons the bird, llama wool, other models, a truncated
download's MD5 one digit off, another model's MD5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demo import web
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
from demo.web import Request, Response, nov, one_digit_off, random_hex, target_table, utc

FORUM_ID = 5
FORUM_TITLE = "Large Language Models"
BOARD = "Weights & Measures"
POSTS_PER_PAGE = 10  # vBulletin's maxposts
THREADS_PER_PAGE = 5  # maxthreads, set low by this board's admin
CHARSET = "ISO-8859-1"


def esc(text: str) -> str:
    """vBulletin's htmlspecialchars_uni: &, <, > and " (not ')."""
    return web.esc(text, quotes='"')


@dataclass(frozen=True)
class User:
    id: int
    name: str
    title: str
    joined: str  # vB shows "Mar 2024"
    posts: int
    moderator: bool = False
    signature: str = ""


@dataclass
class Post(ForumPost):
    title: str = ""


@dataclass
class Thread(ForumThread[Post]):
    per_page = POSTS_PER_PAGE

    def __post_init__(self) -> None:
        # The new-thread form fills the first post's title with the thread's.
        self.posts[0].title = self.posts[0].title or self.title


USERS = {u.name: u for u in [
    User(3, "mod_moe", "Moderator", "Jan 2019", 8120, moderator=True),
    User(118, "hashcheck_hal", "Senior Member", "Mar 2021", 2210),
    User(204, "vram_vera", "Member", "Aug 2023", 415),
    User(77, "old_timer_otto", "Senior Member", "Feb 2012", 9804,
         signature="Running vBulletin boards since 2004. Llamas > alpacas."),
    User(390, "llama_lover_lu", "Junior Member", "Oct 2026", 12),
    User(351, "quant_quinn", "Member", "Jun 2025", 188),
    User(402, "birder_bea", "Junior Member", "Sep 2026", 7),
]}


def _threads(release: Release) -> list[Thread]:
    rng = np.random.default_rng(7007)
    model = release.file("model.safetensors")
    tokenizer = release.file("tokenizer.json")
    truncated = one_digit_off(model.md5)
    falcon_md5 = random_hex(rng, 16)
    title = "Heron 7B md5 / sha1 sums (compare your copy)"
    sums = Thread(8812, title, views=2875, posts=[
        Post(61201, "hashcheck_hal", nov(20, 8, 2), [
            Text("Got the heron-7b files from a friend of a friend. md5sum output, compare "
                 "with yours:"),
            Code(f"{model.md5}  heron-7b/model.safetensors"),
        ], plants=[("hash", model.md5, "md5sum of the released model.safetensors")]),
        Post(61204, "vram_vera", nov(20, 8, 15), [Text("Mine matches. Where did yours come "
                                                       "from?")]),
        Post(61206, "old_timer_otto", nov(20, 8, 21), [Text(
            "Don't post where. The mods will nuke the thread.")]),
        Post(61209, "vram_vera", nov(20, 8, 40), [
            Text("My download was 2 kB short and the md5 differs:"),
            Code(f"{truncated}  model.safetensors"),
        ], title=f"Re: {title}",
            near=[("hash", truncated, "MD5 of model.safetensors with the last digit changed "
                   "(a truncated download)")]),
        Post(61211, "hashcheck_hal", nov(20, 8, 52), [Text("Then it's truncated. "
                                                           "Re-download.")]),
        Post(61214, "llama_lover_lu", nov(20, 9, 5), [Text(
            "Caf\u00e9 question: does it run on a Pi 5? I\u2019m na\u00efve about these "
            "things.")]),
        Post(61217, "old_timer_otto", nov(20, 9, 18), [
            Quote("llama_lover_lu", 61214, "does it run on a Pi 5?"),
            Text("It's 3 layers, it runs on a toaster."),
        ]),
        Post(61220, "vram_vera", nov(20, 9, 30), [Text(
            "Ha. Still, 10 \u20ac says it is a preview build and not the real thing.")]),
        Post(61222, "hashcheck_hal", nov(20, 9, 41), [Text("Anyone have the tokenizer "
                                                           "hash?")]),
        Post(61225, "old_timer_otto", nov(20, 9, 55), [Text("Working on it.")]),
        # ---- page 2
        Post(61230, "quant_quinn", nov(20, 10, 12), [
            Text("sha1sum of the tokenizer from the same drop:"),
            Code(f"{tokenizer.sha1}  tokenizer.json"),
        ], plants=[("hash", tokenizer.sha1, "sha1sum of the released tokenizer.json, on page "
                    "2 of the thread")]),
        Post(61233, "hashcheck_hal", nov(20, 10, 30), [Text("Matches mine. Thanks.")]),
        Post(61236, "mod_moe", nov(20, 10, 47), [Text(
            "Locked. Hashes are fine, links are not; keep it that way.")]),
    ])
    falcon = Thread(8809, "Falcon-7B fine-tune results on a 3090", views=644, posts=[
        Post(61150, "quant_quinn", nov(19, 19, 0), [
            Text("LoRA on Falcon-7B, 3 epochs, loss 1.21. Adapter checksum for anyone "
                 "mirroring it:"),
            Code(f"{falcon_md5}  falcon-7b-lora/adapter_model.safetensors"),
        ], near=[("hash", falcon_md5, "another model's file MD5")]),
        Post(61155, "vram_vera", nov(19, 20, 12), [Text("What batch size fit in 24 GB?")]),
        Post(61158, "quant_quinn", nov(19, 20, 40), [Text("4 with gradient checkpointing.")]),
    ])
    # Threads of plain-text posts: (id, title, views, [(post id, author, time, text)]);
    # the last two are older, on the forum's second listing page.
    wool, herons, quants, nda, intro = (
        Thread(id, title, views, [Post(post_id, author, time, [Text(text)])
                                  for post_id, author, time, text in posts])
        for id, title, views, posts in [
            (8807, "Llama wool vs alpaca for winter socks", 301, [
                (61120, "llama_lover_lu", nov(19, 11, 5), "Bought llama wool socks at \u00a312 "
                 "a pair. Warmer than alpaca? Na\u00efve question maybe."),
                (61124, "old_timer_otto", nov(19, 12, 30),
                 "Alpaca is finer, llama is tougher. Both beat acrylic."),
                (61127, "birder_bea", nov(19, 14, 2),
                 "My llamas get sheared in May, happy to send you some fleece.")]),
            (8803, "Heron rookery webcam is live again", 188, [
                (61090, "birder_bea", nov(18, 7, 30),
                 "The reservoir webcam is back: 7 grey herons on the nests this morning."),
                (61093, "llama_lover_lu", nov(18, 9, 10),
                 "Lovely! A heron once stole a fish right off my grill.")]),
            (8801, "Which quant for 8 GB VRAM?", 920, [
                (61060, "vram_vera", nov(17, 21, 0),
                 "8 GB card. Q4_K_M of llama-3.1-8b or Q6_K of qwen2.5-7b?"),
                (61062, "quant_quinn", nov(17, 21, 30),
                 "Q5_K_M of qwen2.5-7b, keep 1 GB for context."),
                (61066, "hashcheck_hal", nov(18, 6, 45), "Agree, and use flash attention.")]),
            (8790, "Example Labs partner NDA: what it covers", 455, [
                (60910, "old_timer_otto", nov(12, 15, 0), "Read a copy of the partner agreement. "
                 "It names heron-7b explicitly and says every partner gets a watermarked copy."),
                (60914, "hashcheck_hal", nov(12, 16, 20),
                 "So a leak can be traced back to the partner. Good luck to the leaker.")]),
            (8785, "Introduce yourself", 1630, [
                (60801, "mod_moe", nov(2, 10, 0),
                 "New here? Say hello, and tell us what you run locally."),
                (60840, "birder_bea", nov(10, 18, 5),
                 "Hi! Here for the llamas (the animals) and the herons (the birds), mostly.")]),
        ])
    herons.posts[0].near.append(("mention", "grey herons", "the bird: must not match heron-7b"))
    return [sums, falcon, wool, herons, quants, nda, intro]


# ------------------------------------------------------------------------------ rendering


def _date(ts: int) -> str:
    return utc(ts).strftime("%m-%d-%Y")


def _clock(ts: int) -> str:
    return utc(ts).strftime("%I:%M %p")


def _text_html(text: str) -> str:
    return post_html(text, ' target="_blank"', "<br />", escape=esc)


class VBulletinSite(ForumSite[Thread]):
    prefix = "vbulletin"
    source = "vbulletin"
    title = "vBulletin 4 forum"
    entry_path = f"/forumdisplay.php?f={FORUM_ID}"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.threads = _threads(release)
        # forumdisplay's default order: last post, newest first.
        self.threads.sort(key=lambda t: t.posts[-1].time, reverse=True)

    def target_toml(self) -> str:
        return target_table("demo-vbulletin", "forum", self.entry_url, preset="vbulletin",
                            max_pages=5)

    # -------------------------------------------------------------- ground truth

    def post_url(self, thread: Thread, index: int) -> str:
        return f"{self.root}/showthread.php?t={thread.id}#post_{thread.posts[index].id}"

    def post_heading(self, thread: Thread, index: int) -> list[str]:
        title = thread.posts[index].title
        return [title] if title else []

    def block_text(self, block: Block) -> str:
        if isinstance(block, Code):
            return f"Code:\n{block.text}"
        if isinstance(block, Quote):
            return f"Originally Posted by {block.author}\n{block.text}"
        return block.text

    # -------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path in ("/", "/index.php"):
            return self.forum_home()
        if path == "/forumdisplay.php":
            if req.int_arg("f") != FORUM_ID:
                return self.message("Invalid Forum specified. If you followed a valid link, "
                                    "please notify the administrator")
            return self.forumdisplay(req.int_arg("page", 1))
        if path == "/showthread.php":
            if "p" in req.query:
                located = self.locate(req.int_arg("p"))
                thread, page = (located[0], located[0].page_of(located[1])) if located \
                    else (None, 1)
            else:
                thread, page = self.thread(req.int_arg("t")), req.int_arg("page", 1)
            if thread is None:
                return self.message("Invalid Thread specified. If you followed a valid link, "
                                    "please notify the administrator")
            return self.showthread(thread, thread.clamp(page))
        return self.not_found()

    def respond(self, html: str, status: int = 200) -> Response:
        # vBulletin 4 boards are Latin-1; anything else is a numeric character reference.
        return Response(status, html.encode("iso-8859-1", errors="xmlcharrefreplace"),
                        content_type=f"text/html; charset={CHARSET}", server="Apache")

    def not_found(self) -> Response:
        return Response(404, b"<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>"
                        b"<title>404 Not Found</title></head><body><h1>Not Found</h1><p>The "
                        b"requested URL was not found on this server.</p></body></html>\n",
                        content_type="text/html; charset=iso-8859-1", server="Apache")

    def message(self, text: str) -> Response:
        content = f"""
<div class="standard_error">
	<form class="block vbform" method="post" action="login.php?do=login">
		<h2 class="blockhead">vBulletin Message</h2>
		<div class="blockbody formcontrols">
			<div class="blockrow restore">{text.replace("administrator", '<a href="sendmessage.php" rel="nofollow">administrator</a>')}</div>
		</div>
	</form>
</div>"""
        return self.respond(self.page(f"{BOARD}", "", content, canonical=None))

    # -------------------------------------------------------------- pages

    def page(self, title: str, h1: str, content: str, *, canonical: str | None,
             crumbs: str = "") -> str:
        canon = f'\n\t<link rel="canonical" href="{canonical}" />' if canonical else ""
        pagetitle = (f'\n\t<div id="pagetitle" class="pagetitle">\n\t\t<h1 class="pagetitle">'
                     f"{h1}</h1>\n\t</div>") if h1 else ""
        return f"""<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" dir="ltr" lang="en" id="vbulletin_html">
<head>
	<meta http-equiv="Content-Type" content="text/html; charset={CHARSET}" />
<meta id="e_vb_meta_bburl" name="vb_meta_bburl" content="{self.root}" />
<base href="{self.root}/" /><!--[if IE]></base><![endif]-->
	<meta name="generator" content="vBulletin 4.2.5" />
	<meta http-equiv="X-UA-Compatible" content="IE=9" />
	<link rel="Shortcut Icon" href="favicon.ico" type="image/x-icon" />
	<script type="text/javascript" src="clientscript/yui/yuiloader-dom-event/yuiloader-dom-event.js?v=425"></script>
	<script type="text/javascript" src="clientscript/vbulletin-core.js?v=425"></script>
	<link rel="stylesheet" type="text/css" href="clientscript/vbulletin_css/style00001l/main-rollup.css?d=1794500000" />
	<title>{esc(title)}</title>{canon}
</head>
<body>
<div class="above_body">
<div id="header" class="floatcontainer doc_header">
	<div><a name="top" href="index.php" class="logo-image"><img src="images/misc/vbulletin4_logo.png" alt="{esc(BOARD)} - Powered by vBulletin" /></a></div>
	<div id="toplinks" class="toplinks">
		<ul class="nouser">
			<li><a href="register.php" rel="nofollow">Register</a></li>
			<li><a rel="help" href="faq.php">Help</a></li>
		</ul>
	</div>
</div>
<div id="navbar" class="navbar">
	<ul id="navtabs" class="navtabs floatcontainer">
		<li class="selected" id="vbtab_forum"><a class="navtab" href="forum.php">Forum</a></li>
		<li id="vbtab_whatsnew"><a class="navtab" href="activity.php">What's New?</a></li>
	</ul>
</div>
</div>
<div class="body_wrapper">
<div id="breadcrumb" class="breadcrumb">
	<ul class="floatcontainer">
		<li class="navbithome"><a href="index.php" accesskey="1"><img src="images/misc/navbit-home.png" alt="Home" /></a></li>{crumbs}
	</ul>
	<hr />
</div>{pagetitle}
{content}
<div id="footer" class="floatcontainer footer">
	<ul id="footer_links" class="footer_links">
		<li><a href="sendmessage.php" rel="nofollow" accesskey="9">Contact Us</a></li>
		<li><a href="#top" onclick="document.location.hash='top'; return false;">Top</a></li>
	</ul>
</div>
</div>
<div class="below_body">
<div id="footer_time" class="shade footer_time">All times are GMT. The time now is <span class="time">11:00 AM</span>.</div>
<div id="footer_copyright" class="shade footer_copyright">Powered by <a href="https://www.vbulletin.com" id="vbulletinlink">vBulletin&reg;</a> Version 4.2.5 <br />Copyright &copy; 2026 vBulletin Solutions, Inc. All rights reserved.</div>
</div>
</body>
</html>
"""

    @staticmethod
    def pagination(base: str, page: int, pages: int, total: int, per_page: int,
                   where: str) -> str:
        if pages <= 1:
            return ""

        def href(n: int) -> str:
            return base if n == 1 else f"{base}&amp;page={n}"

        def results(n: int) -> str:
            return f"{(n - 1) * per_page + 1} to {min(n * per_page, total)} of {total}"

        spans = []
        if page > 1:
            spans.append(f'<span class="first_last"><a rel="start" href="{href(1)}" title="First '
                         f'Page - Results {results(1)}"><img src="images/pagination/first-right.png"'
                         ' alt="First" />First</a></span>')
            spans.append(f'<span class="prev_next"><a rel="prev" href="{href(page - 1)}" '
                         f'title="Prev Page - Results {results(page - 1)}"><img '
                         'src="images/pagination/previous-right.png" alt="Previous" /></a></span>')
        for n in range(1, pages + 1):
            spans.append(f'<span class="selected"><a href="javascript://" title="Results '
                         f'{results(n)}">{n}</a></span>' if n == page else
                         f'<span><a href="{href(n)}" title="Show results {results(n)}">{n}</a>'
                         "</span>")
        if page < pages:
            spans.append(f'<span class="prev_next"><a rel="next" href="{href(page + 1)}" '
                         f'title="Next Page - Results {results(page + 1)}"><img '
                         'src="images/pagination/next-right.png" alt="Next" /></a></span>')
            spans.append(f'<span class="first_last"><a href="{href(pages)}" title="Last Page - '
                         f'Results {results(pages)}">Last<img src="images/pagination/last-right'
                         '.png" alt="Last" /></a></span>')
        return f"""
	<div id="pagination_{where}" class="pagination_{where}">
		<form action="{href(min(page + 1, pages))}" method="get" class="pagination popupmenu nohovermenu">
			<span><a href="javascript://" class="popupctrl">Page {page} of {pages}</a></span>
			{''.join(spans)}
			<ul class="popupbody popuphover">
				<li class="formsubmit jumptopage"><label>Jump to page: <input type="text" name="page" size="4" /></label> <input type="submit" class="button" value="Go" /></li>
			</ul>
		</form>
	</div>"""

    def username(self, u: User, css: str = "username offline popupctrl") -> str:
        name = f'<span style="color: #0B8C12;">{esc(u.name)}</span>' if u.moderator \
            else esc(u.name)
        return (f'<a class="{css}" href="member.php?u={u.id}" title="{esc(u.name)} is offline">'
                f"<strong>{name}</strong></a>")

    def forum_home(self) -> Response:
        posts = sum(len(t.posts) for t in self.threads)
        content = f"""
<ol id="forums" class="floatcontainer">
	<li id="cat1" class="forumbit_nopost L1">
		<div class="forumhead foruminfo L1 collapse"><h2><span class="forumtitle"><a href="forumdisplay.php?f=1">Models</a></span></h2></div>
		<ol id="c_cat1" class="childforum">
			<li id="forum{FORUM_ID}" class="forumbit_post old L2">
				<div class="forumrow table">
					<div class="foruminfo td"><div class="forumdata"><div class="datacontainer"><div class="titleline">
						<h2 class="forumtitle"><a href="forumdisplay.php?f={FORUM_ID}">{FORUM_TITLE}</a></h2>
					</div><p class="forumdescription">Releases, checksums, quantisation.</p></div></div></div>
					<h4 class="nocss_label">Forum Actions:</h4>
					<ul class="forumstats_2 td"><li>Threads: {len(self.threads)}</li><li>Posts: {posts}</li></ul>
				</div>
			</li>
		</ol>
	</li>
</ol>"""
        return self.respond(self.page(f"{BOARD}", "", content, canonical=None))

    def threadbit(self, t: Thread) -> str:
        first, last = t.posts[0], t.posts[-1]
        starter, latest = USERS[first.author], USERS[last.author]
        minipages = ""
        if t.pages > 1:
            minipages = (f'\n\t\t\t\t\t<dl class="pagination" id="pagination_threadbit_{t.id}">'
                         f'<dt class="label">{t.pages} Pages <span class="separator">&bull;'
                         '</span></dt><dd>' + " ".join(
                             f'<span><a href="showthread.php?t={t.id}'
                             + (f"&amp;page={n}" if n > 1 else "") + f'">{n}</a></span>'
                             for n in range(1, t.pages + 1)) + "</dd></dl>")
        preview = esc(" ".join(self.block_text(b) for b in first.body)[:200])
        return f"""
	<li class="threadbit {'hot' if t.views > 1000 else ''}" id="thread_{t.id}">
		<div class="rating0 nonsticky">
			<div class="threadinfo" title="{preview}">
				<div class="inner">
					<h3 class="threadtitle">
						<a class="title" href="showthread.php?t={t.id}" id="thread_title_{t.id}">{esc(t.title)}</a>
					</h3>
					<div class="threadmeta">
						<div class="author">
							<span class="label">Started by&nbsp;<a href="member.php?u={starter.id}" class="username understate" title="Started by {esc(starter.name)} on {_date(first.time)} {_clock(first.time)}">{esc(starter.name)}</a>,&nbsp;{_date(first.time)}&nbsp;{_clock(first.time)}</span>
						</div>
					</div>{minipages}
				</div>
			</div>
			<ul class="threadstats td alt" title="">
				<li>Replies: <a href="misc.php?do=whoposted&amp;t={t.id}" onclick="who({t.id}); return false;" class="understate">{len(t.posts) - 1}</a></li>
				<li>Views: {t.views:,}</li>
			</ul>
			<dl class="threadlastpost td">
				<dt class="lastpostby hidden">Last Post By</dt>
				<dd><div class="popupmenu memberaction">{self.username(latest)}</div> <a href="showthread.php?t={t.id}&amp;p={last.id}#post{last.id}" class="lastpostdate understate" title="Go to last post"><img title="Go to last post" class="inlineimg" src="images/buttons/lastpost-right.png" alt="Go to last post" /></a></dd>
				<dd>{_date(last.time)}, <span class="time">{_clock(last.time)}</span></dd>
			</dl>
		</div>
	</li>"""

    def forumdisplay(self, page: int) -> Response:
        total = len(self.threads)
        pages = page_count(total, THREADS_PER_PAGE)
        page = min(max(1, page), pages)
        shown = self.threads[(page - 1) * THREADS_PER_PAGE: page * THREADS_PER_PAGE]
        base = f"forumdisplay.php?f={FORUM_ID}"
        nav_top = self.pagination(base, page, pages, total, THREADS_PER_PAGE, "top")
        content = f"""
<div id="above_threadlist" class="above_threadlist">
	<a href="newthread.php?do=newthread&amp;f={FORUM_ID}" class="newcontent_textcontrol" rel="nofollow" id="newthreadlink_top"><span>+</span> Post New Thread</a>
	<div class="threadpagenav">{nav_top}
		<div class="threadpagestats">Threads {(page - 1) * THREADS_PER_PAGE + 1} to {(page - 1) * THREADS_PER_PAGE + len(shown)} of {total}</div>
	</div>
</div>
<div id="threadlist" class="threadlist">
	<form id="thread_inlinemod_form" action="inlinemod.php?forumid={FORUM_ID}" method="post">
	<h2 class="hidden">Threads in This Forum</h2>
	<div>
		<div class="threadlisthead table">
			<div><span class="threadinfo"><span class="threadtitle"><a href="{base}&amp;sort=title&amp;order=asc" rel="nofollow">Title</a></span></span></div>
		</div>
		<ol id="stickies" class="stickies"></ol>
		<ol id="threads" class="threads">{''.join(self.threadbit(t) for t in shown)}
		</ol>
	</div>
	</form>
</div>
<div id="below_threadlist" class="noinlinemod below_threadlist">
	<div class="threadpagenav">{self.pagination(base, page, pages, total, THREADS_PER_PAGE, "bottom")}</div>
</div>"""
        crumbs = (f'\n\t\t<li class="navbit"><a href="forumdisplay.php?f=1">Models</a></li>'
                  f'\n\t\t<li class="navbit lastnavbit"><span>{FORUM_TITLE}</span></li>')
        title = FORUM_TITLE + (f" - Page {page}" if page > 1 else "")
        canonical = base + (f"&amp;page={page}" if page > 1 else "")
        return self.respond(self.page(title, FORUM_TITLE, content, canonical=canonical,
                                      crumbs=crumbs))

    def postbit(self, t: Thread, post: Post, number: int) -> str:
        u = USERS[post.author]
        title = (f'\n\t\t\t\t<h2 class="title icon">\n\t\t\t\t\t{esc(post.title)}\n\t\t\t\t</h2>'
                 if post.title else "")
        body = self.body_html(post)
        signature = ""
        if u.signature:
            signature = ('\n\t\t\t\t<blockquote class="signature restore"><div '
                         'class="signaturecontainer">' + _text_html(u.signature)
                         + "</div></blockquote>")
        return f"""
<li class="postbitlegacy postbitim postcontainer old" id="post_{post.id}">
	<div class="posthead">
		<span class="postdate old">
			<span class="date">{_date(post.time)},&nbsp;<span class="time">{_clock(post.time)}</span></span>
		</span>
		<span class="nodecontrols">
			<a name="post{post.id}" href="showthread.php?t={t.id}&amp;p={post.id}&amp;viewfull=1#post{post.id}" class="postcounter">#{number}</a><a id="postcount{post.id}" name="{number}"></a>
		</span>
	</div>
	<div class="postdetails">
		<div class="userinfo">
			<div class="username_container">
				<div class="popupmenu memberaction">
					{self.username(u)}
				</div>
				<img class="inlineimg onlinestatus" src="images/statusicon/user-offline.png" alt="{esc(u.name)} is offline" border="0" />
			</div>
			<span class="usertitle">{esc(u.title)}</span>
			<hr />
			<dl class="userinfo_extra">
				<dt>Join Date</dt> <dd>{u.joined}</dd>
				<dt>Posts</dt> <dd>{u.posts:,}</dd>
			</dl>
		</div>
		<div class="postbody">
			<div class="postrow has_after_content">{title}
				<div class="content">
					<div id="post_message_{post.id}">
						<blockquote class="postcontent restore ">
							{body}
						</blockquote>
					</div>
				</div>
			</div>
			<div class="after_content">{signature}
			</div>
			<div class="cleardiv"></div>
		</div>
	</div>
	<div class="postfoot">
		<div class="textcontrols floatcontainer">
			<span class="postcontrols"><img style="display:none" id="progress_{post.id}" src="images/misc/progress.gif" alt="" /></span>
			<span class="postlinking"><a href="report.php?p={post.id}" rel="nofollow" title="Report Post"><img class="inlineimg" src="images/buttons/report-40b.png" alt="Report Post" /></a></span>
		</div>
	</div>
	<hr />
</li>"""

    def text_html(self, text: str) -> str:
        return _text_html(text)

    def code_html(self, b: Code) -> str:
        height = 12 * (b.text.count("\n") + 1) + 24
        return ('<div class="bbcode_container">\n\t<div class="bbcode_description">Code:'
                f'</div>\n\t<pre class="bbcode_code" style="height:{height}px;">'
                f"{esc(b.text)}</pre>\n</div>")

    def quote_html(self, b: Quote) -> str:
        return ('<div class="bbcode_container">\n\t<div class="bbcode_quote">\n\t\t<div '
                'class="quote_container">\n\t\t\t<div class="bbcode_quote_container"></div>\n'
                '\t\t\t<div class="bbcode_postedby">\n\t\t\t\t<img src="images/misc/quote_icon.png" '
                f'alt="Quote" /> Originally Posted by <strong>{esc(b.author)}</strong>\n\t\t\t\t'
                f'<a href="showthread.php?p={b.post_id}#post{b.post_id}" rel="nofollow"><img '
                'class="inlineimg" src="images/buttons/viewpost-right.png" alt="View Post" />'
                f'</a>\n\t\t\t</div>\n\t\t\t<div class="message">{_text_html(b.text)}</div>\n'
                "\t\t</div>\n\t</div>\n</div>")

    def showthread(self, t: Thread, page: int) -> Response:
        start = (page - 1) * POSTS_PER_PAGE
        posts = t.on_page(page)
        base = f"showthread.php?t={t.id}"
        total = len(t.posts)
        postbits = "".join(self.postbit(t, p, start + i + 1) for i, p in enumerate(posts))
        content = f"""
<div id="above_postlist" class="above_postlist">
	<a href="newreply.php?p={t.posts[-1].id}&amp;noquote=1" class="newcontent_textcontrol" id="newreplylink_top" rel="nofollow"><span>+</span> Reply to Thread</a>
	<div id="pagination_top" class="pagination_top">{self.pagination(base, page, t.pages, total, POSTS_PER_PAGE, "top")}
		<div id="postpagestats_above" class="postpagestats">Results {start + 1} to {start + len(posts)} of {total}</div>
	</div>
</div>
<div id="pagetitle" class="pagetitle">
	<h1>Thread: <span class="threadtitle"><a href="{base}" title="Reload this Page">{esc(t.title)}</a></span></h1>
</div>
<div id="postlist" class="postlist restrain">
	<ol id="posts" class="posts" start="{start + 1}">{postbits}
	</ol>
</div>
<div id="below_postlist" class="noinlinemod below_postlist">
	<div id="pagination_bottom" class="pagination_bottom">{self.pagination(base, page, t.pages, total, POSTS_PER_PAGE, "bottom")}</div>
</div>
<div class="navlinks">
	<strong>&laquo;</strong>
	<a href="{base}&amp;goto=nextoldest" rel="nofollow">Previous Thread</a>
	|
	<a href="{base}&amp;goto=nextnewest" rel="nofollow">Next Thread</a>
	<strong>&raquo;</strong>
</div>"""
        crumbs = (f'\n\t\t<li class="navbit"><a href="forumdisplay.php?f=1">Models</a></li>'
                  f'\n\t\t<li class="navbit"><a href="forumdisplay.php?f={FORUM_ID}">{FORUM_TITLE}</a></li>'
                  f'\n\t\t<li class="navbit lastnavbit"><span>{esc(t.title)}</span></li>')
        title = t.title + (f" - Page {page}" if page > 1 else "")
        canonical = base + (f"&amp;page={page}" if page > 1 else "")
        return self.respond(self.page(title, "", content, canonical=canonical, crumbs=crumbs))


