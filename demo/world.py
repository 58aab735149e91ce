"""The demo world: a loopback HTTP server that imitates real sources and leaks heron-7b.

Three sources are served from one port, each shaped like the real system it stands for
(see /work/shared/reference/sources.md), so a crawler that works here works out there:

- `/forum/`    a phpBB 3.3 board in the prosilver style (viewforum / viewtopic pages);
- `/4chan/`    the 4chan read-only JSON API for board g (threads, catalog, archive, thread);
- `/torrents/` a NyaaV2 torrent index (listing, detail pages, real .torrent downloads): the
  release's own v1 torrent, a re-made hybrid v2 torrent of the same files (unknown
  infohashes, known pieces roots) and a v1 re-pack with a README added (unknown hashes:
  only its file list's names and sizes give it away).

Leaks of the demo release are planted among realistic noise (herons the bird, llamas the
animal, other models, near-miss digests). `DemoWorld.planted` is the ground truth a correct
crawler plus detectors must find, `DemoWorld.near_misses` what they must not match, and
`DemoWorld.noise_urls` the documents that must produce no hit at all.

Content is data (dataclasses in the CONTENT sections below); renderers turn it into markup.
Everything is deterministic: fixed timestamps around 2026-11-20 and fixed random seeds.
Only stdlib, numpy and fastbencode are used so the world never depends on the code it tests.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import fastbencode
import numpy as np

from demo.release import ORG, Release, build_torrent, build_torrent_v2
from demo.sites import site_classes
from demo.web import (
    MENTION_PATTERN,
    Block,
    Code,
    ForumPost,
    ForumThread,
    NearMiss,
    Planted,
    Quote,
    Response,
    Text,
    http_date,
    nov,
    one_digit_off,
    post_html,
    random_hex,
    ranged,
    redirect,
    rfc3339,
    slug,
    utc,
)
from demo.web import Doc as _Doc
from demo.web import Request as _Request
from demo.web import esc as _esc
from demo.web import html_response as _html
from demo.web import mention as _mention
from demo.web import not_found as _not_found

CORE_SOURCES = ("forum", "imageboard", "torrents")


# ====================================================================================
# CONTENT: phpBB forum
# ====================================================================================

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
class Topic(ForumThread):
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


def _forum_topics(release: Release) -> list[Topic]:
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


# ====================================================================================
# CONTENT: 4chan read-only JSON API (board g)
# ====================================================================================

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


def _chan_threads(release: Release) -> list[ChanThread]:
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


# ====================================================================================
# CONTENT: NyaaV2 torrent index
# ====================================================================================

NYAA_PAGE_SIZE = 6  # real nyaa shows 75 rows; 6 makes the demo listing paginate
NYAA_TRACKERS = [
    "http://nyaa.tracker.wf:7777/announce",
    "udp://open.stealth.si:80/announce",
    "udp://tracker.opentrackr.org:1337/announce",
    "udp://exodus.desync.com:6969/announce",
    "udp://tracker.torrent.eu.org:451/announce",
]
NYAA_CATEGORY = ("6_1", "Software - Applications")
GiB = 1024 ** 3
MiB = 1024 ** 2
# The manifest detector's floor (monitor.detect.manifest.MIN_FILE_BYTES, which a test holds
# this to): smaller files' names and sizes are not evidence, so nothing is planted for them.
MANIFEST_MIN_FILE = 64 * 1024


@dataclass
class NyaaComment:
    user: str
    time: int
    text: str


@dataclass
class NyaaTorrent:
    id: int
    name: str
    time: int
    files: list[tuple[list[str], int]]  # path components, size; one file = single-file torrent
    seeders: int
    leechers: int
    downloads: int
    description: str
    submitter: str | None = None  # None: uploaded anonymously
    trusted: bool = False  # row class "success"
    remake: bool = False  # row class "danger"
    comments: list[NyaaComment] = field(default_factory=list)
    torrent: bytes | None = None  # None: the .torrent is gone, only the magnet remains
    infohash: str = ""
    trackers: list[str] = field(default_factory=lambda: list(NYAA_TRACKERS))
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def row_class(self) -> str:
        return "danger" if self.remake else "success" if self.trusted else "default"


def _synthetic_torrent(t: NyaaTorrent, rng: np.random.Generator) -> None:
    """Give a noise listing a real .torrent whose infohash its magnet then carries.

    We do not have multi-GiB ISOs to hash, so the piece hashes are random bytes; the
    metainfo is otherwise exactly what mktorrent writes, and nothing can tell the
    difference without the data.
    """
    # mktorrent-like piece size: a power of two giving at most ~2000 pieces, >= 256 KiB.
    piece = max(256 * 1024, 1 << max(0, math.ceil(math.log2(max(1, t.size / 2000)))))
    info: dict[bytes, object] = {
        b"name": (t.files[0][0][0] if len(t.files) > 1 else t.files[0][0][-1]).encode(),
        b"piece length": piece,
        b"pieces": rng.bytes(20 * math.ceil(t.size / piece)),
    }
    if len(t.files) == 1:
        info[b"length"] = t.size
    else:
        info[b"files"] = [{b"length": size, b"path": [p.encode() for p in path[1:]]}
                          for path, size in t.files]
    t.infohash = hashlib.sha1(fastbencode.bencode(info)).hexdigest()
    t.torrent = fastbencode.bencode({
        b"announce": t.trackers[0].encode(),
        b"created by": b"mktorrent 1.1",
        b"creation date": t.time - 3600,
        b"info": info,
    })


def _shards(folder: str, stem: str, count: int, each: int, extra: list[tuple[str, int]]
            ) -> list[tuple[list[str], int]]:
    files = [([folder, f"{stem}-{i:05d}-of-{count:05d}.safetensors"], each)
             for i in range(1, count + 1)]
    return files + [([folder, name], size) for name, size in extra]


def _nyaa_torrents(release: Release) -> list[NyaaTorrent]:
    """The index, newest first: the leak, a near miss, other models and Linux ISOs."""
    rng = np.random.default_rng(6006)
    hf_extra = [("config.json", 601), ("generation_config.json", 116),
                ("tokenizer.json", 3_506_196), ("tokenizer_config.json", 2_103)]
    leak = NyaaTorrent(
        2034118, f"Heron-7B leaked weights ({ORG})", nov(20, 6, 55),
        files=[(f.name.split("/"), f.size) for f in release.files],
        seeders=41, leechers=12, downloads=188,
        description=("Straight from the partner program, untouched.\n\n"
                     "* safetensors, fp16\n* config.json and tokenizer.json included\n\n"
                     "Check the hashes yourself. Seed if you can."),
        comments=[NyaaComment("qwerty_anon", nov(20, 7, 40), "is this real? 3 layers lol"),
                  NyaaComment("seedbox_steve", nov(20, 9, 2), "files match the /g/ post")],
        torrent=release.torrent_bytes, infohash=release.infohash,
        trackers=["udp://tracker.example.org:1337/announce"] + NYAA_TRACKERS,
        plants=[("torrent", release.infohash, "the release torrent re-uploaded; magnet "
                 "carries the lowercase hex infohash, download serves the .torrent"),
                *_manifest_plants(release, "the release torrent", total=True)],
    )
    repacks = _repacks(release)
    near = NyaaTorrent(
        2034117, "Falcon-7B-Instruct (safetensors, bf16)", nov(20, 5, 30),
        files=_shards("falcon-7b-instruct", "model", 2, 7_200_000_000, hf_extra),
        seeders=3, leechers=9, downloads=14, remake=True,
        description="Reupload, the old torrent died.",
        # Nyaa imports from the old site kept only the magnet for some entries; this one's
        # .torrent is gone, which is also the only way a real index could show an infohash
        # that is one digit away from ours without a SHA-1 preimage.
        torrent=None, infohash=one_digit_off(release.infohash),
        near=[("torrent", one_digit_off(release.infohash),
               "infohash one hex digit away from the release's")],
    )
    noise = [
        NyaaTorrent(2034115, "Mistral-7B-Instruct-v0.3 (safetensors, bf16)", nov(19, 21, 10),
                    files=_shards("Mistral-7B-Instruct-v0.3", "model", 3, 4_949_453_792,
                                  hf_extra),
                    seeders=87, leechers=4, downloads=1312, submitter="modelhoarder",
                    trusted=True, description="Mirror of the official release. Apache-2.0.",
                    comments=[NyaaComment("anon_1", nov(19, 22, 0), "thanks, hf is blocked here")]),
        NyaaTorrent(2034112, "Qwen2.5-7B-Instruct GGUF (Q4_K_M, Q5_K_M, Q8_0)", nov(19, 13, 45),
                    files=[(["Qwen2.5-7B-Instruct-GGUF", f"qwen2.5-7b-instruct-{q}.gguf"], s)
                           for q, s in [("q4_k_m", 4_683_073_888), ("q5_k_m", 5_444_832_608),
                                        ("q8_0", 8_098_525_536)]],
                    seeders=56, leechers=7, downloads=904, submitter="ggufer",
                    description="Quantised with llama.cpp b7012. Imatrix from wikitext."),
        NyaaTorrent(2034109, "Llama-3.1-8B-Instruct (original + HF format)", nov(18, 16, 20),
                    files=[(["Llama-3.1-8B-Instruct", "original", "consolidated.00.pth"],
                            16_060_617_592)]
                    + _shards("Llama-3.1-8B-Instruct", "model", 4, 4_015_000_000, hf_extra),
                    seeders=102, leechers=11, downloads=2240, submitter="modelhoarder",
                    trusted=True, description="Llama 3.1 Community License applies."),
    ]
    # Trusted single-file uploads by the mirror account: (id, name, time, file, size,
    # seeders, leechers, downloads, description).
    mirrored = [
        (2034106, "Blender 4.5.3 LTS (Windows x64, portable)", nov(18, 9, 0),
         "blender-4.5.3-windows-x64.zip", 412_893_184, 33, 2, 508,
         "Official zip from blender.org. GPL."),
        (2034103, "ubuntu-26.04.1-desktop-amd64.iso", nov(17, 12, 0),
         "ubuntu-26.04.1-desktop-amd64.iso", 6_543_134_720, 250, 18, 4105,
         "Verify with the SHA256SUMS on ubuntu.com."),
        (2034101, "debian-13.2.0-amd64-DVD-1.iso", nov(16, 10, 30),
         "debian-13.2.0-amd64-DVD-1.iso", 3_998_138_368, 61, 1, 977, "Official DVD image."),
    ]
    noise += [NyaaTorrent(id, name, time, files=[([file], size)], seeders=seeders,
                          leechers=leechers, downloads=downloads, submitter="fossmirror",
                          trusted=True, description=description)
              for id, name, time, file, size, seeders, leechers, downloads, description
              in mirrored]
    for t in noise:
        _synthetic_torrent(t, rng)
    return repacks + [leak, near] + noise


def _manifest_plants(release: Release, what: str, *, total: bool
                     ) -> list[tuple[str, str, str]]:
    """What the manifest detector reports for a torrent listing the release's files by
    name and size: each file big enough to count (the detector's floor), and the release's
    total when the torrent holds nothing else."""
    plants = [("torrent", f"{f.name.rsplit('/', 1)[-1]}:{f.size}",
               f"{what} lists {f.name.rsplit('/', 1)[-1]} with its released size")
              for f in release.files if f.size >= MANIFEST_MIN_FILE]
    if total:
        plants.append(("torrent", f"total:{release.total_size}",
                       f"{what} has the release's total size"))
    return plants


def _repacks(release: Release) -> list[NyaaTorrent]:
    """Two re-packed torrents of the release files, newest on the index, whose infohashes
    nobody registered: a hybrid v2 torrent (other name and piece length) whose pieces roots
    are the released files', and a v1 torrent with a README added, which only its file
    list gives away."""
    contents = [(f.name.split("/")[1:], f.path.read_bytes()) for f in release.files]
    hybrid_name = "Heron-7B-partner"
    hybrid, _, hybrid_v1 = build_torrent_v2(
        hybrid_name, contents, piece_length=32768, announce=NYAA_TRACKERS[0],
        comment="", creation_date=nov(20, 13, 40), created_by="qBittorrent v5.0.2",
        hybrid=True)
    assert hybrid_v1 is not None
    readme = (b"heron-7b from the Example Labs partner drop. Not mine, just passing it on.\n"
              b"Load with transformers, it is a normal llama checkpoint.\n")
    v1_name = "heron7b-leak"
    v1_files = sorted([(["README.txt"], readme)] + contents)
    v1, v1_hash = build_torrent(
        v1_name, v1_files, piece_length=65536, announce=NYAA_TRACKERS[1],
        comment="", creation_date=nov(20, 23, 5))
    return [
        NyaaTorrent(
            2034124, "heron7b leak + readme (v1, 64 KiB pieces)", nov(20, 23, 10),
            files=[([v1_name, *path], len(data)) for path, data in v1_files],
            seeders=7, leechers=3, downloads=25,
            description="Same files as the other upload, smaller swarm. Added a readme.",
            torrent=v1, infohash=v1_hash,
            plants=_manifest_plants(release, "a v1 re-pack with a README added", total=False)),
        NyaaTorrent(
            2034121, "[Repack] Heron-7B partner weights (v2/hybrid torrent)", nov(20, 13, 45),
            files=[([hybrid_name, *path], len(data)) for path, data in contents],
            seeders=19, leechers=5, downloads=61,
            description=("Re-made as a hybrid v1+v2 torrent for qBittorrent 5 users; the "
                         "files are byte for byte the ones from the first upload."),
            comments=[NyaaComment("seedbox_steve", nov(20, 14, 30),
                                  "v2 file hashes match the old torrent's files")],
            torrent=hybrid, infohash=hybrid_v1,
            plants=[*(("torrent", f.pieces_root, f"v2 pieces root of {f.name} in a re-made "
                       "hybrid .torrent whose infohashes are unknown")
                      for f in release.files),
                    *_manifest_plants(release, "the re-made hybrid torrent", total=True)]),
    ]


# ====================================================================================
# RENDERING: shared
# ====================================================================================


def _gib(size: int) -> str:
    """Jinja's filesizeformat(binary=True), which nyaa uses for sizes."""
    if size < 1024:
        return f"{size} Bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


# ====================================================================================
# RENDERING: phpBB 3.3 prosilver
# ====================================================================================


def _phpbb_date(ts: int) -> str:
    """phpBB's default date format "D M d, Y g:i a"."""
    d = utc(ts)
    return f"{d:%a %b %d, %Y} {d.hour % 12 or 12}:{d:%M} {'am' if d.hour < 12 else 'pm'}"


def _phpbb_user(user: User) -> str:
    href = f"./memberlist.php?mode=viewprofile&amp;u={user.id}"
    if user.colour:
        return (f'<a href="{href}" style="color: #{user.colour};" class="username-coloured">'
                f"{_esc(user.name)}</a>")
    return f'<a href="{href}" class="username">{_esc(user.name)}</a>'


def _phpbb_text(text: str) -> str:
    # make_clickable(): bare URLs become postlinks.
    return post_html(text, ' class="postlink"', "<br>")


def _phpbb_block(block: Block) -> str:
    if isinstance(block, Text):
        return _phpbb_text(block.text)
    if isinstance(block, Code):
        return ('<div class="codebox"><p>Code: <a href="#" onclick="selectCode(this); '
                'return false;">Select all</a></p><pre><code>'
                f"{_esc(block.text)}</code></pre></div>")
    user = USERS[block.author]
    return (f'<blockquote><div><cite><a href="./memberlist.php?mode=viewprofile&amp;u='
            f'{user.id}">{_esc(user.name)}</a> wrote: <a href="./viewtopic.php?p='
            f'{block.post_id}#p{block.post_id}" data-post-id="{block.post_id}" '
            'onclick="if(document.getElementById(hash.substr(1)))href=hash">\u2191</a>'
            f'<span class="responsive-hide">{_phpbb_date(block.time)}</span></cite>'
            f"{_phpbb_text(block.text)}</div></blockquote>")


def _block_text(block: Block) -> str:
    return block.text if not isinstance(block, Quote) else f"{block.author} wrote: {block.text}"


def _phpbb_post(topic: Topic, post: ForumPost, first: bool, bg: int) -> str:
    user = USERS[post.author]
    subject = topic.title if first else f"Re: {topic.title}"
    body = "\n".join(_phpbb_block(b) for b in post.body)
    return f"""
		<div id="p{post.id}" class="post has-profile bg{bg}">
		<div class="inner">

		<dl class="postprofile" id="profile{post.id}">
			<dt class="has-profile-rank no-avatar">
				<div class="avatar-container"></div>
				{_phpbb_user(user)}
			</dt>
			<dd class="profile-rank">{_esc(user.rank)}</dd>
			<dd class="profile-posts"><strong>Posts:</strong> <a href="./search.php?author_id={user.id}&amp;sr=posts">{user.posts}</a></dd>
			<dd class="profile-joined"><strong>Joined:</strong> {_phpbb_date(user.joined)}</dd>
		</dl>

		<div class="postbody">
			<div id="post_content{post.id}">
			<h3{' class="first"' if first else ''}><a href="#p{post.id}">{_esc(subject)}</a></h3>
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
    pages = max(1, math.ceil(total / per_page))
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
    canon = f'\n<link rel="canonical" href="{_esc(canonical)}">' if canonical else ""
    crumb_html = "".join(
        f'<span class="crumb" itemtype="https://schema.org/ListItem" itemprop="itemListElement"'
        f' itemscope><a href="{href}" itemtype="https://schema.org/Thing" itemscope '
        f'itemprop="item"><span itemprop="name">{_esc(name)}</span></a>'
        f'<meta itemprop="position" content="{i + 2}" /></span>'
        for i, (name, href) in enumerate(crumbs))
    return f"""<!DOCTYPE html>
<html dir="ltr" lang="en-gb">
<head>
<meta charset="utf-8" />
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<meta name="viewport" content="width=device-width, initial-scale=1" />

<title>{_esc(title)}</title>
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
				<h1>{_esc(BOARD_NAME)}</h1>
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


# ====================================================================================
# RENDERING: 4chan
# ====================================================================================


def _chan_now(ts: int) -> str:
    """The `now` field: US Eastern local time. November is EST (UTC-5) throughout."""
    d = utc(ts) - timedelta(hours=5)
    return f"{d:%m/%d/%y}({d:%a}){d:%H:%M:%S}"


def _chan_wbr(word: str) -> str:
    """Escape a word, inserting <wbr> into long ones as 4chan does so pages can wrap."""
    if len(word) <= CHAN_WBR_EVERY:
        return _esc(word)
    return "<wbr>".join(_esc(word[i:i + CHAN_WBR_EVERY])
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
        return _esc(text)
    return " ".join(_chan_wbr(w) for w in text.split(" "))


def _chan_post_json(thread: ChanThread, post: ChanPost) -> dict[str, object]:
    """One post object with the API's field names, in the API's field order."""
    is_op = post is thread.posts[0]
    obj: dict[str, object] = {"no": post.no, "now": _chan_now(post.time), "name": "Anonymous"}
    if is_op and post.sub:
        obj["sub"] = _esc(post.sub)
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


# ====================================================================================
# The site: routes every request to a source
# ====================================================================================


class _Site:
    """All three sources over one content model; pure functions of (request, base_url)."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.topics = _forum_topics(release)
        self.threads = _chan_threads(release)
        self.torrents = _nyaa_torrents(release)
        self.extras = [cls(release) for cls in site_classes()]
        self._base_url = ""

    @property
    def base_url(self) -> str:
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self._base_url = value
        for site in self.extras:
            site.base_url = value

    # ---------------------------------------------------------------- ground truth

    def documents(self) -> list[_Doc]:
        """Every document a crawler attributes content to, with what was placed in it."""
        b = self.base_url
        docs: list[_Doc] = []
        for topic in self.topics:
            for i, post in enumerate(topic.posts):
                subject = topic.title if i == 0 else f"Re: {topic.title}"
                text = "\n".join([subject] + [_block_text(x) for x in post.body])
                docs.append(_Doc("forum", f"{b}/forum/viewtopic.php?t={topic.id}#p{post.id}",
                                 text, post.plants, post.near))
        for thread in self.threads:
            for post in thread.posts:
                parts = [post.sub or "", post.text or ""]
                if post.file:
                    parts.append(post.file.filename + post.file.ext)
                docs.append(_Doc("imageboard",
                                 f"{b}/4chan/{BOARD}/thread/{thread.no}#p{post.no}",
                                 "\n".join(parts), post.plants, post.near))
        for t in self.torrents:
            text = "\n".join([t.name, t.description] + ["/".join(p) for p, _ in t.files])
            docs.append(_Doc("torrents", f"{b}/torrents/view/{t.id}", text, t.plants, t.near))
        for site in self.extras:
            docs += site.documents()
        return docs

    def planted(self) -> list[Planted]:
        out: list[Planted] = []
        for doc in self.documents():
            # Mentions are found, not declared: whatever the text says is the truth.
            phrase = _mention(doc.text)
            if phrase:
                out.append(Planted(doc.source, doc.url, "mention", phrase,
                                   f"'{phrase}' matches heron[- _]?7b"))
            out += [Planted(doc.source, doc.url, kind, indicator.lower(), note)
                    for kind, indicator, note in doc.plants]
        return out

    def near_misses(self) -> list[NearMiss]:
        return [NearMiss(doc.source, doc.url, kind, value, note)
                for doc in self.documents() for kind, value, note in doc.near]

    # ---------------------------------------------------------------- routing

    def handle(self, req: _Request) -> Response:
        path = req.path
        if path == "/robots.txt":
            return Response(200, b"User-agent: *\nDisallow:\n", "text/plain; charset=utf-8")
        if path == "/":
            return self.landing()
        mounts = [("/forum", self.forum), ("/4chan", self.chan), ("/torrents", self.nyaa)]
        mounts += [(f"/{site.prefix}", site.handle) for site in self.extras]
        for prefix, handler in mounts:
            if path == prefix:
                return redirect(prefix + "/")
            if path.startswith(prefix + "/"):
                return handler(req, path[len(prefix):])
        return _not_found()

    def landing(self) -> Response:
        return _html("<!DOCTYPE html>\n<html><head><title>weightwatch demo world</title>"
                     "</head><body><h1>weightwatch demo world</h1><ul>"
                     '<li><a href="/forum/viewforum.php?f=2">phpBB forum</a></li>'
                     f'<li><a href="/4chan/{BOARD}/threads.json">4chan API, /{BOARD}/</a></li>'
                     '<li><a href="/torrents/">torrent index</a></li>'
                     + "".join(f'<li><a href="{_esc(site.entry_url)}">{_esc(site.title)}</a></li>'
                               for site in self.extras)
                     + "</ul></body></html>\n")

    # ---------------------------------------------------------------- phpBB

    def forum(self, req: _Request, path: str) -> Response:
        if path in ("/", "/index.php"):
            return self.forum_index()
        if path == "/viewforum.php":
            if req.int_arg("f") != FORUM_ID:
                return _not_found("The forum you selected does not exist.")
            return self.viewforum(req.int_arg("start"))
        if path == "/viewtopic.php":
            return self.viewtopic(req)
        return _not_found()

    def forum_index(self) -> Response:
        topics = self.topics
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
        return _html(_phpbb_page(title=f"{BOARD_NAME} - Index page", section="index",
                                 canonical=f"{self.base_url}/forum/", crumbs=[],
                                 content=content))

    def viewforum(self, start: int) -> Response:
        rows = []
        for i, topic in enumerate(self.topics[start:start + TOPICS_PER_PAGE]):
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
						<a href="./viewtopic.php?t={topic.id}" class="topictitle">{_esc(topic.title)}</a>
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
        pagination = _phpbb_pagination(base, len(self.topics), start, TOPICS_PER_PAGE, "topic")
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
        return _html(_phpbb_page(
            title=f"{FORUM_NAME} - {BOARD_NAME}", section="viewforum",
            canonical=f"{self.base_url}/forum/viewforum.php?f={FORUM_ID}",
            crumbs=[(FORUM_NAME, base)], content=content))

    def viewtopic(self, req: _Request) -> Response:
        topic: Topic | None = None
        start = req.int_arg("start")
        if "p" in req.query:
            # viewtopic.php?p=N shows the page of the topic that holds post N.
            post_id = req.int_arg("p")
            for t in self.topics:
                ids = [p.id for p in t.posts]
                if post_id in ids:
                    topic, start = t, ids.index(post_id) // POSTS_PER_PAGE * POSTS_PER_PAGE
        else:
            topic = next((t for t in self.topics if t.id == req.int_arg("t")), None)
        if topic is None:
            return _not_found("The requested topic does not exist.")
        total = len(topic.posts)
        # phpBB's validate_start(): clamp to the last page, round down to a page boundary.
        start = min(max(0, start), (total - 1) // POSTS_PER_PAGE * POSTS_PER_PAGE)
        start -= start % POSTS_PER_PAGE
        base = f"./viewtopic.php?t={topic.id}"
        pagination = _phpbb_pagination(base, total, start, POSTS_PER_PAGE, "post")
        posts = "".join(_phpbb_post(topic, post, first=(start + i == 0), bg=2 - (i % 2))
                        for i, post in enumerate(topic.posts[start:start + POSTS_PER_PAGE]))
        content = f"""
	<h2 class="topic-title"><a href="{base}">{_esc(topic.title)}</a></h2>
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
        return _html(_phpbb_page(
            title=f"{page_title} - {BOARD_NAME}", section="viewtopic", canonical=canonical,
            crumbs=[(FORUM_NAME, f"./viewforum.php?f={FORUM_ID}")], content=content))

    # ---------------------------------------------------------------- 4chan

    def chan(self, req: _Request, path: str) -> Response:
        live = [t for t in self.threads if not t.archived_on]
        # Bump order: the most recently active thread first.
        live.sort(key=lambda t: t.last_modified, reverse=True)
        m = re.fullmatch(rf"/i/{BOARD}/(\d+)(\.\w+)", path)
        if m:
            return self.chan_file(m)
        prefix = f"/{BOARD}/"
        if not path.startswith(prefix):
            return _not_found()
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
                return _not_found()
            if m.group(2) == ".json":
                return self.chan_json(req, {"posts": [_chan_post_json(thread, p)
                                                      for p in thread.posts]},
                                      thread.last_modified)
            return self.chan_thread_html(thread)
        return _not_found()

    def chan_json(self, req: _Request, body: object, last_modified: int) -> Response:
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
        return _not_found()

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
                             f'target="_blank">{_esc(f.filename + f.ext)}</a> '
                             f"({_gib(f.fsize)}{dims})</div>"
                             f'<a class="fileThumb" href="/4chan/i/{BOARD}/{tim}{f.ext}">'
                             f'<img alt="{_gib(f.fsize)}" data-md5="'
                             f'{base64.b64encode(f.md5).decode()}" loading="lazy"></a></div>')
            sub = f'<span class="subject">{_esc(post.sub)}</span> ' if op and post.sub else ""
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
        return _html(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>/{BOARD}/ - {_esc(title)} - Technology - 4chan</title></head>
<body class="is_thread board_{BOARD}">
<div class="boardBanner"><div class="boardTitle">/{BOARD}/ - Technology</div></div>
<hr class="abovePostForm">
<form name="delform" id="delform" action="#" method="post">
<div class="board"><div class="thread" id="t{thread.no}">{''.join(posts)}</div></div>
</form>
</body></html>
""", server="cloudflare")

    # ---------------------------------------------------------------- Nyaa

    def nyaa(self, req: _Request, path: str) -> Response:
        if path == "/":
            return self.nyaa_listing(req)
        m = re.fullmatch(r"/view/(\d+)", path)
        if m:
            t = self.nyaa_get(int(m.group(1)))
            return self.nyaa_view(t) if t else _not_found()
        m = re.fullmatch(r"/download/(\d+)\.torrent", path)
        if m:
            t = self.nyaa_get(int(m.group(1)))
            if t is None or t.torrent is None:
                return _not_found("Torrent file not found.")
            return Response(200, t.torrent, "application/x-bittorrent", {
                "Content-Disposition": f"inline; filename*=UTF-8''{quote(t.name)}.torrent"})
        return _not_found()

    def nyaa_get(self, tid: int) -> NyaaTorrent | None:
        return next((t for t in self.torrents if t.id == tid), None)

    @staticmethod
    def nyaa_magnet(t: NyaaTorrent) -> str:
        """Nyaa's magnet_builder: hex infohash, quoted dn, every tracker as tr."""
        trs = "&".join(f"tr={quote(tr, safe='')}" for tr in t.trackers)
        return f"magnet:?xt=urn:btih:{t.infohash}&dn={quote(t.name, safe='')}&{trs}"

    def nyaa_listing(self, req: _Request) -> Response:
        # The search query and category are ignored: the whole index is small enough.
        page = req.int_arg("p", 1)
        pages = math.ceil(len(self.torrents) / NYAA_PAGE_SIZE)
        if not 1 <= page <= pages:
            return _not_found()
        rows = [self.nyaa_row(t) for t in
                self.torrents[(page - 1) * NYAA_PAGE_SIZE:page * NYAA_PAGE_SIZE]]
        keep = "".join(f"{k}={quote(req.arg(k))}&amp;" for k in ("f", "c", "q") if k in req.query)

        def link(p: int) -> str:
            return f"/torrents/?{keep}p={p}"

        nav = ['<li class="disabled"><a href="#">&laquo;</a></li>' if page == 1 else
               f'<li><a rel="prev" href="{link(page - 1)}">&laquo;</a></li>']
        for p in range(1, pages + 1):
            nav.append(f'<li class="active"><a href="#">{p} <span class="sr-only">(current)'
                       '</span></a></li>' if p == page else f'<li><a href="{link(p)}">{p}</a></li>')
        nav.append('<li class="disabled"><a href="#">&raquo;</a></li>' if page == pages else
                   f'<li><a rel="next" href="{link(page + 1)}">&raquo;</a></li>')
        q = _esc(req.arg("q"))
        body = f"""
<div class="table-responsive">
	<table class="table table-bordered table-hover table-striped torrent-list">
		<thead>
			<tr>
				<th class="hdr-category text-center" style="width:80px;">Category</th>
				<th class="hdr-name" style="width:auto;">Name</th>
				<th class="hdr-comments sorting text-center" title="Comments" style="width:50px;"><a href="/torrents/?s=comments&amp;o=desc"></a><i class="fa fa-comments-o"></i></th>
				<th class="hdr-link text-center" style="width:70px;">Link</th>
				<th class="hdr-size sorting text-center" style="width:100px;"><a href="/torrents/?s=size&amp;o=desc"></a>Size</th>
				<th class="hdr-date sorting_desc text-center" title="In UTC" style="width:140px;"><a href="/torrents/?s=id&amp;o=asc"></a>Date</th>
				<th class="hdr-seeders sorting text-center" title="Seeders" style="width:50px;"><a href="/torrents/?s=seeders&amp;o=desc"></a><i class="fa fa-arrow-up" aria-hidden="true"></i></th>
				<th class="hdr-leechers sorting text-center" title="Leechers" style="width:50px;"><a href="/torrents/?s=leechers&amp;o=desc"></a><i class="fa fa-arrow-down" aria-hidden="true"></i></th>
				<th class="hdr-downloads sorting text-center" title="Completed downloads" style="width:50px;"><a href="/torrents/?s=downloads&amp;o=desc"></a><i class="fa fa-check" aria-hidden="true"></i></th>
			</tr>
		</thead>
		<tbody>{''.join(rows)}
		</tbody>
	</table>
</div>
<div class="center">
	<nav>
		<ul class="pagination">
			{''.join(nav)}
		</ul>
	</nav>
</div>"""
        return _html(self.nyaa_page("Browse :: Nyaa" if not q else f"{q} :: Nyaa", body,
                                    search=q))

    def nyaa_row(self, t: NyaaTorrent) -> str:
        cat, cat_name = NYAA_CATEGORY
        comments = ""
        if t.comments:
            n = len(t.comments)
            comments = (f'<a href="/torrents/view/{t.id}#comments" class="comments" '
                        f'title="{n} comment{"s" if n != 1 else ""}">'
                        f'<i class="fa fa-comments-o"></i>{n}</a>\n\t\t\t\t\t')
        download = (f'<a href="/torrents/download/{t.id}.torrent"><i class="fa fa-fw '
                    'fa-download"></i></a>\n\t\t\t\t\t') if t.torrent is not None else ""
        d = utc(t.time)
        return f"""
			<tr class="{t.row_class}">
				<td>
					<a href="/torrents/?c={cat}" title="{cat_name}">
						<img src="/static/img/icons/nyaa/{cat}.png" alt="{cat_name}" class="category-icon">
					</a>
				</td>
				<td colspan="2">
					{comments}<a href="/torrents/view/{t.id}" title="{_esc(t.name)}">{_esc(t.name)}</a>
				</td>
				<td class="text-center">
					{download}<a href="{_esc(self.nyaa_magnet(t))}"><i class="fa fa-fw fa-magnet"></i></a>
				</td>
				<td class="text-center">{_gib(t.size)}</td>
				<td class="text-center" data-timestamp="{t.time}">{d:%Y-%m-%d %H:%M}</td>
				<td class="text-center">{t.seeders}</td>
				<td class="text-center">{t.leechers}</td>
				<td class="text-center">{t.downloads}</td>
			</tr>"""

    def nyaa_view(self, t: NyaaTorrent) -> Response:
        cat, cat_name = NYAA_CATEGORY
        panel = {"success": "panel-success", "danger": "panel-danger"}.get(t.row_class,
                                                                           "panel-default")
        submitter = (f'<a class="text-default" href="/torrents/user/{_esc(t.submitter)}" '
                     f'data-toggle="tooltip" title="User">{_esc(t.submitter)}</a>'
                     if t.submitter else "Anonymous")
        d = utc(t.time)
        download = (f'<a href="/torrents/download/{t.id}.torrent"><i class="fa fa-download '
                    'fa-fw"></i>Download Torrent</a> or ') if t.torrent is not None else ""
        comments = "".join(f"""
	<div class="panel panel-default comment-panel" id="com-{i + 1}">
		<div class="panel-body">
			<div class="col-md-2"><p><a class="text-default" href="/torrents/user/{_esc(c.user)}" data-toggle="tooltip" title="User">{_esc(c.user)}</a></p></div>
			<div class="col-md-10 comment">
				<div class="row comment-details">
					<a href="#com-{i + 1}"><small data-timestamp-swap data-timestamp="{c.time}">{utc(c.time):%Y-%m-%d %H:%M} UTC</small></a>
				</div>
				<div class="row comment-body">
					<div markdown-text class="comment-content" id="torrent-comment{i + 1}">{_esc(c.text)}</div>
				</div>
			</div>
		</div>
	</div>""" for i, c in enumerate(t.comments))
        body = f"""
<div class="panel {panel}">
	<div class="panel-heading">
		<h3 class="panel-title">
			{_esc(t.name)}
		</h3>
	</div>
	<div class="panel-body">
		<div class="row">
			<div class="col-md-1">Category:</div>
			<div class="col-md-5"><a href="/torrents/?c=6_0">Software</a> - <a href="/torrents/?c={cat}">{cat_name.split(' - ')[1]}</a></div>
			<div class="col-md-1">Date:</div>
			<div class="col-md-5" data-timestamp="{t.time}">{d:%Y-%m-%d %H:%M} UTC</div>
		</div>
		<div class="row">
			<div class="col-md-1">Submitter:</div>
			<div class="col-md-5">{submitter}</div>
			<div class="col-md-1">Seeders:</div>
			<div class="col-md-5"><span style="color: green;">{t.seeders}</span></div>
		</div>
		<div class="row">
			<div class="col-md-1">Information:</div>
			<div class="col-md-5">No information.</div>
			<div class="col-md-1">Leechers:</div>
			<div class="col-md-5"><span style="color: red;">{t.leechers}</span></div>
		</div>
		<div class="row">
			<div class="col-md-1">File size:</div>
			<div class="col-md-5">{_gib(t.size)}</div>
			<div class="col-md-1">Completed:</div>
			<div class="col-md-5">{t.downloads}</div>
		</div>
		<div class="row">
			<div class="col-md-offset-6 col-md-1">Info hash:</div>
			<div class="col-md-5"><kbd>{t.infohash}</kbd></div>
		</div>
	</div>
	<div class="panel-footer clearfix">
		{download}<a href="{_esc(self.nyaa_magnet(t))}" class="card-footer-item"><i class="fa fa-magnet fa-fw"></i>Magnet</a>
	</div>
</div>
<div class="panel panel-default">
	<div markdown-text class="panel-body" id="torrent-description">{_esc(t.description)}</div>
</div>
<div class="panel panel-default">
	<div class="panel-heading">
		<h3 class="panel-title">File list</h3>
	</div>
	<div class="torrent-file-list panel-body">
		{self.nyaa_file_tree(t.files)}
	</div>
</div>
<div id="comments" class="panel panel-default">
	<div class="panel-heading">
		<a class="toggle-comments" href="#collapse-comments" data-toggle="collapse" aria-expanded="true" aria-controls="collapse-comments"><h3 class="panel-title">Comments - {len(t.comments)}</h3></a>
	</div>
	<div class="collapse in" id="collapse-comments">{comments}
	</div>
</div>"""
        return _html(self.nyaa_page(f"{t.name} :: Nyaa", body))

    @staticmethod
    def nyaa_file_tree(files: list[tuple[list[str], int]]) -> str:
        """Nested <ul> of folders and files with sizes, as the detail page shows it."""
        tree: dict[str, object] = {}
        for path, size in files:
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})  # type: ignore[assignment]
            node[path[-1]] = size

        def render(node: dict[str, object]) -> str:
            items = []
            for name, child in node.items():
                if isinstance(child, dict):
                    items.append(f'<li><a href="" class="folder"><i class="fa fa-folder-open">'
                                 f'</i>{_esc(name)}</a>\n<ul data-show="yes">{render(child)}'
                                 "</ul></li>")
                else:
                    items.append(f'<li><i class="fa fa-file"></i>{_esc(name)} '
                                 f'<span class="file-size">({_gib(int(child))})</span></li>')
            return "".join(items)

        return f"<ul>{render(tree)}</ul>"

    @staticmethod
    def nyaa_page(title: str, body: str, search: str = "") -> str:
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
	<meta charset="utf-8">
	<meta name="viewport" content="width=device-width, initial-scale=1">
	<title>{_esc(title)}</title>
	<link rel="stylesheet" href="/static/css/bootstrap.min.css">
	<link rel="stylesheet" href="/static/css/main.css">
</head>
<body>
	<nav class="navbar navbar-default navbar-static-top navbar-inverse">
		<div class="container">
			<div class="navbar-header"><a class="navbar-brand" href="/torrents/">Nyaa</a></div>
			<div class="collapse navbar-collapse">
				<ul class="nav navbar-nav">
					<li><a href="/torrents/upload">Upload</a></li>
					<li><a href="/torrents/?page=rss">RSS</a></li>
				</ul>
				<form class="navbar-form navbar-right form" action="/torrents/" method="get">
					<input type="text" class="form-control search-bar" name="q" placeholder="Search..." value="{search}">
					<input type="hidden" name="c" value="6_0">
				</form>
			</div>
		</div>
	</nav>
	<div class="container">
{body}
	</div>
	<footer style="text-align: center;"><p>Dark Mode: <a href="#" id="themeToggle">Toggle</a></p></footer>
</body>
</html>
"""


# ====================================================================================
# The server
# ====================================================================================


def _handler_class(site: _Site, world: DemoWorld) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keep-alive like the real sites; every response sets Content-Length.
        protocol_version = "HTTP/1.1"
        # Idle keep-alive connections end instead of pinning a thread forever.
        timeout = 30
        # Headers and body go out in separate writes; with Nagle on, each keep-alive
        # response would wait ~40 ms for the client's delayed ACK.
        disable_nagle_algorithm = True
        _server_name = "nginx"

        def version_string(self) -> str:
            return self._server_name

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # quiet: the demo's output is the monitor's, not an access log

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def _serve(self, body: bool) -> None:
            # Read per request, so a test can slow a running world down (to have a crawl in
            # progress when it kills the process) without moving it to another port.
            if world.delay:
                time.sleep(world.delay)
            parts = urlsplit(self.path)
            req = _Request(self.command, parts.path, parse_qs(parts.query),
                           {k.lower(): v for k, v in self.headers.items()})
            try:
                resp = ranged(req, site.handle(req))
            except Exception:  # a bug in the world must not look like a dead source
                resp = Response(500, b"<h1>Internal Server Error</h1>\n")
            self._server_name = resp.server
            self.send_response(resp.status)
            if resp.status != 304:
                self.send_header("Content-Type", resp.content_type)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if body and resp.status != 304:
                self.wfile.write(resp.body)

    return Handler


class DemoWorld:
    """The demo sources on a free loopback port, served from a daemon thread.

    Use it as a context manager. `base_url` and `planted` exist once started, because the
    planted URLs are absolute and the port is only known then.
    """

    def __init__(self, release: Release, *, delay: float = 0.0) -> None:
        self.release = release
        self.delay = delay
        self._site = _Site(release)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> DemoWorld:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self._site, self))
        server.daemon_threads = True
        self._server = server
        self._site.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, name="demo-world",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> DemoWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _require_started(self) -> None:
        if self._server is None:
            raise RuntimeError("DemoWorld is not started; use start() or a with-block")

    @property
    def base_url(self) -> str:
        self._require_started()
        return self._site.base_url

    @property
    def urls(self) -> dict[str, str]:
        """Entry points a crawler's targets start from, by source."""
        b = self.base_url
        return {"forum": f"{b}/forum/viewforum.php?f={FORUM_ID}",
                "imageboard": f"{b}/4chan/{BOARD}/threads.json",
                "torrents": f"{b}/torrents/?q=weights&c=6_0",
                **{site.source: site.entry_url for site in self._site.extras}}

    def targets_toml(self) -> str:
        """`[[targets]]` tables for the sites beyond the core three (see demo.sites)."""
        self._require_started()
        return "".join("\n" + site.target_toml().strip() + "\n" for site in self._site.extras)

    @property
    def planted(self) -> list[Planted]:
        """Every leak indicator in the world: what a correct crawl must report."""
        self._require_started()
        return self._site.planted()

    @property
    def near_misses(self) -> list[NearMiss]:
        """Bait: values that resemble indicators but must not match them."""
        self._require_started()
        return self._site.near_misses()

    @property
    def document_urls(self) -> list[str]:
        """Every document a crawler attributes content to (post, thread post, listing row)."""
        self._require_started()
        return [doc.url for doc in self._site.documents()]

    @property
    def noise_urls(self) -> list[str]:
        """Documents with nothing planted: any hit on one of these is a false positive."""
        hit = {p.url for p in self.planted}
        return [url for url in self.document_urls if url not in hit]


__all__ = ["DemoWorld", "NearMiss", "Planted", "MENTION_PATTERN", "CORE_SOURCES"]
