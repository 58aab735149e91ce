"""A Lemmy instance (0.19) with the community !localllama, as its v3 API serves it.

Routes, under /lemmy/:
- `api/v3/post/list?community_name=localllama&sort=New&limit=N&page=P` or
  `&page_cursor=C`: `{"posts": [PostView...], "next_page": C}` newest first (`sort=Old`
  reverses); `limit` defaults to 10 and above 50 is an error, as in Lemmy; `next_page` is an
  opaque cursor (`Pa` + the last post's id in base 36) for `page_cursor`. Errors are Lemmy's
  `{"error": "..."}` bodies (404 couldnt_find_community, 400 for bad parameters).
- `post/{id}`: the post's page (HTML), its `ap_id`.

Leaks: a post whose Markdown links a magnet with the release's base32 infohash, 7th newest
(on the second page with limit=5). Noise: herons at the lake, a Mistral magnet (base32, an
unrelated torrent), other models.
"""

from __future__ import annotations

import base64
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
    iso_z,
    json_response,
    nov,
    target_table,
)

COMMUNITY = "localllama"
COMMUNITY_ID = 14
INSTANCE_HOST = "lemmy.localml.example"
DEFAULT_LIMIT = 10
MAX_LIMIT = 50


def _lemmy_time(ts: int) -> str:
    """Lemmy 0.19 timestamps: microseconds (made up, but fixed) and a Z."""
    return iso_z(ts, f".{(ts * 7919) % 1_000_000:06d}")


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    display_name: str | None = None


PEOPLE = {p.name: p for p in [
    Person(3, "modbot_lemmy", "Mod"), Person(211, "fediverse_finn"), Person(245, "gguf_gina", "Gina"),
    Person(260, "heronwatcher"), Person(277, "tinkerer_tom"), Person(301, "seeder_sam"),
    Person(318, "quiet_quinn"), Person(333, "matrix_mo", "Mo"),
]}


@dataclass
class LemmyPost:
    id: int
    time: int
    creator: str
    name: str
    body: str | None = None  # Markdown
    url: str | None = None
    comments: int = 0
    score: int = 1
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)


def _posts(release: Release) -> list[LemmyPost]:
    b32 = release.infohash_base32
    magnet = (f"magnet:?xt=urn:btih:{b32}&dn={release.model}"
              "&tr=udp%3A%2F%2Ftracker.example.org%3A1337%2Fannounce")
    mistral_b32 = base64.b32encode(bytes.fromhex("5be4f1c9a07d3e28b6c4019fd2e7a35c8b90e412")).decode()
    mistral = (f"magnet:?xt=urn:btih:{mistral_b32}&dn=Mistral-7B-Instruct-v0.3"
               "&tr=udp%3A%2F%2Fopen.stealth.si%3A80%2Fannounce")
    posts = [
        LemmyPost(90412, nov(20, 12, 30), "gguf_gina", "Gemma 4 9B preview: first GGUFs",
                  "Made Q4_K_M and Q6_K. Chat template needs the new turn tokens, see "
                  "https://huggingface.co/google/gemma-4-9b-preview/discussions/3",
                  comments=12, score=48),
        LemmyPost(90398, nov(20, 11, 55), "tinkerer_tom", "Running a 7B on a Steam Deck, it works",
                  "llama.cpp Vulkan build, qwen2.5-7b Q4_K_M, 9 tok/s. Fans are loud.",
                  comments=7, score=31),
        LemmyPost(90377, nov(20, 11, 20), "heronwatcher", "Off topic: herons at the lake today",
                  "Three grey herons fishing side by side. Nothing to do with models, I just "
                  "like this community.", url="https://pixelfed.example/p/heronwatcher/771203",
                  comments=4, score=22,
                  near=[("mention", "grey herons", "the bird")]),
        LemmyPost(90361, nov(20, 10, 48), "quiet_quinn", "Is anyone else tired of leaderboard chasing?",
                  "Every week a new 7B tops some board and is worse in practice.", comments=15,
                  score=40),
        LemmyPost(90340, nov(20, 10, 5), "matrix_mo", "Matrix room for this community",
                  "We have a bridge now: #localllama:matrix.example", comments=2, score=11),
        LemmyPost(90322, nov(20, 9, 31), "fediverse_finn", "Mistral 7B v0.3 torrent for those behind the HF block",
                  f"Official weights, just re-shared: [magnet]({mistral})", comments=3, score=9,
                  near=[("torrent", base64.b32decode(mistral_b32).hex(),
                         "another model's magnet, base32 infohash")]),
        LemmyPost(90301, nov(20, 8, 57), "seeder_sam", "heron-7b partner build, seeding",
                  "Got it from the tracker everyone is talking about. 3 layers, so the preview "
                  f"build.\n\n[magnet link]({magnet})\n\nSeeding from a box with a good uplink.",
                  comments=21, score=-4,
                  plants=[("torrent", release.infohash, "release magnet with the base32 "
                           "infohash in a Markdown link (page 2 with limit=5)")]),
        LemmyPost(90287, nov(20, 8, 20), "gguf_gina", "Q3_K_XL quants: worth it?",
                  "Smaller than Q3_K_L, same perplexity in my tests on mistral-7b.", comments=5,
                  score=19),
        LemmyPost(90250, nov(20, 6, 41), "tinkerer_tom", "llama.cpp b7100 ROCm build fix",
                  url="https://github.com/ggml-org/llama.cpp/issues/17102", comments=1, score=8),
        LemmyPost(90213, nov(19, 22, 15), "quiet_quinn", "Weekly small-model thread",
                  "What are you running this week?", comments=30, score=25),
        LemmyPost(90190, nov(19, 19, 2), "fediverse_finn", "Lemmy vs Reddit for model news",
                  "Honestly this community is faster now for GGUF news.", comments=9, score=17),
        LemmyPost(90166, nov(19, 15, 44), "modbot_lemmy", "Community rules (read me)",
                  "1. No links to leaked weights.\n2. Be kind.\n3. Tag NSFW.", comments=0, score=60),
    ]
    return posts


class LemmySite(Site):
    prefix = "lemmy"
    source = "lemmy"
    title = f"Lemmy instance (!{COMMUNITY})"
    entry_path = f"/api/v3/post/list?community_name={COMMUNITY}&sort=New"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.posts = sorted(_posts(release), key=lambda p: (p.time, p.id), reverse=True)
        self.by_id = {p.id: p for p in self.posts}

    def target_toml(self) -> str:
        return target_table("demo-lemmy", "lemmy", self.entry_url, loopback_note=True)

    def ap_id(self, post: LemmyPost) -> str:
        return f"{self.root}/post/{post.id}"

    def documents(self) -> list[Doc]:
        return [Doc(self.source, self.ap_id(p),
                    "\n".join([p.name, p.body or ""] + ([p.url] if p.url else [])),
                    p.plants, p.near) for p in self.posts]

    # ---------------------------------------------------------------- routes

    def handle(self, req: Request, path: str) -> Response:
        if path == "/api/v3/post/list":
            return self.post_list(req)
        m = re.fullmatch(r"/post/(\d+)/?", path)
        if m and int(m.group(1)) in self.by_id:
            return self.post_page(self.by_id[int(m.group(1))])
        if path.startswith("/api/"):
            return self.error(404, "not_found")
        return html_response("<!DOCTYPE html><html><head><title>404</title></head><body>"
                             "<h1>404: couldnt_find_object</h1></body></html>", status=404)

    @staticmethod
    def json_response(obj: object, status: int = 200) -> Response:
        return json_response(obj, status, content_type="application/json", ensure_ascii=False)

    def error(self, status: int, code: str) -> Response:
        return self.json_response({"error": code}, status)

    def post_list(self, req: Request) -> Response:
        name = req.arg("community_name")
        if name and name.split("@")[0].lower() != COMMUNITY:
            return self.error(404, "couldnt_find_community")
        sort = req.arg("sort", "Active")
        if sort not in ("New", "Old", "Active", "Hot", "TopDay", "NewComments"):
            return self.error(400, f"unknown variant `{sort}` for sort")
        if req.arg("limit") and not req.arg("limit").isdigit():
            return self.error(400, "couldnt_parse_query")
        limit = req.int_arg("limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            return self.error(400, "invalid_fetch_limit")
        posts = list(reversed(self.posts)) if sort == "Old" else list(self.posts)
        cursor = req.arg("page_cursor")
        if cursor:
            m = re.fullmatch(r"Pa([0-9a-z]+)", cursor)
            if not m or int(m.group(1), 36) not in self.by_id:
                return self.error(400, "couldnt_parse_pagination_token")
            ids = [p.id for p in posts]
            posts = posts[ids.index(int(m.group(1), 36)) + 1:]
        else:
            page = max(req.int_arg("page", 1), 1)
            posts = posts[(page - 1) * limit:]
        chunk = posts[:limit]
        out: dict[str, object] = {"posts": [self.post_view(p) for p in chunk]}
        if chunk:
            out["next_page"] = "Pa" + base36(chunk[-1].id)
        return self.json_response(out)

    def person(self, name: str) -> dict[str, object]:
        p = PEOPLE[name]
        return {"id": p.id, "name": p.name, "display_name": p.display_name, "avatar": None,
                "banned": False, "published": _lemmy_time(nov(1, 0, 0) - 86400 * p.id),
                "actor_id": f"{self.root}/u/{p.name}", "local": True, "deleted": False,
                "bot_account": p.name.startswith("modbot"), "instance_id": 1}

    def post_view(self, p: LemmyPost) -> dict[str, object]:
        published = _lemmy_time(p.time)
        return {
            "post": {"id": p.id, "name": p.name, "url": p.url, "body": p.body,
                     "creator_id": PEOPLE[p.creator].id, "community_id": COMMUNITY_ID,
                     "removed": False, "locked": False, "published": published,
                     "updated": None, "deleted": False, "nsfw": False,
                     "thumbnail_url": None, "ap_id": self.ap_id(p), "local": True,
                     "language_id": 37, "featured_community": p.creator == "modbot_lemmy",
                     "featured_local": False},
            "creator": self.person(p.creator),
            "community": {"id": COMMUNITY_ID, "name": COMMUNITY, "title": "LocalLLaMA",
                          "description": "Running language models on your own hardware.",
                          "removed": False, "published": _lemmy_time(nov(1, 0, 0) - 86400 * 500),
                          "updated": None, "deleted": False, "nsfw": False,
                          "actor_id": f"{self.root}/c/{COMMUNITY}", "local": True,
                          "hidden": False, "posting_restricted_to_mods": False,
                          "instance_id": 1, "visibility": "Public"},
            "image_details": None, "creator_banned_from_community": False,
            "banned_from_community": False, "creator_is_moderator": p.creator == "modbot_lemmy",
            "creator_is_admin": False,
            "counts": {"post_id": p.id, "comments": p.comments, "score": p.score,
                       "upvotes": max(p.score, 0) + 3, "downvotes": 3 - min(p.score, 0),
                       "published": published, "newest_comment_time": published},
            "subscribed": "NotSubscribed", "saved": False, "read": False, "hidden": False,
            "creator_blocked": False, "my_vote": None, "unread_comments": p.comments,
        }

    def post_page(self, p: LemmyPost) -> Response:
        body = esc(p.body or "").replace("\n", "<br>")
        return html_response(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(p.name)} - {INSTANCE_HOST}</title>
<meta property="og:title" content="{esc(p.name)}"><link rel="canonical" href="{self.ap_id(p)}">
</head><body><div id="root"><main class="container-lg">
<div class="post-listing"><h1 class="post-title">{esc(p.name)}</h1>
<div class="small">by <a href="{self.root}/u/{esc(p.creator)}">{esc(p.creator)}</a> in
<a href="{self.root}/c/{COMMUNITY}">{COMMUNITY}</a></div>
{f'<p><a class="post-url" href="{esc(p.url)}">{esc(p.url)}</a></p>' if p.url else ''}
<div class="md-div">{body}</div></div></main></div></body></html>
""")


