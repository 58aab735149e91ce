"""A Discourse forum ("LocalML Community") as its JSON API and crawler view serve it.

Routes, under /discourse/ (a subfolder install, so every path Discourse hands out carries
the prefix):
- `latest.json?page=N`: `topic_list.topics`, 30 per page, pinned first, then by `bumped_at`;
  `more_topics_url` is the HTML path (`/discourse/latest?page=1`), without `.json`, as
  Discourse writes it;
- `t/{id}.json` and `t/{slug}/{id}.json`: the topic with the first 20 posts
  (`chunk_size`) in `post_stream.posts` and every post id in `post_stream.stream`;
- `t/{id}/posts.json?post_ids[]=..`: those posts of the topic, in post order;
- `t/{slug}/{id}[/{post_number}]`, `/` and `latest`: the no-JS crawler view (HTML).

Leaks: the release magnet (hex infohash) in post 43 of a 45-post megathread, reachable only
through the second posts.json batch, and the md5sum of config.json and the sha256sum of a
recipient's copy of model.safetensors (lab-17's) in a topic old enough to be on the second
page of the topic list. Noise: herons the bird, llamas the animal, other
models, a fake magnet whose infohash is one digit off the release's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from demo.release import Release
from demo.web import (
    URL_PATTERN,
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
    slug,
    target_table,
    utc,
)

PER_PAGE = 30  # Discourse's topics per page in lists
CHUNK_SIZE = 20  # posts in a topic's first load, and per posts.json request of its client
SMALL_ACTION = 3
SITE_NAME = "LocalML Community"


def _iso(ts: int) -> str:
    """Rails' JSON time: UTC with milliseconds (made up, but fixed) and a Z."""
    return iso_z(ts, f".{(ts * 37) % 1000:03d}")


def _human_time(ts: int) -> str:
    d = utc(ts)
    return f"{d:%B} {d.day}, {d.year}, {d.hour % 12 or 12}:{d:%M}{'am' if d.hour < 12 else 'pm'}"


# ====================================================================================
# CONTENT
# ====================================================================================


@dataclass(frozen=True)
class User:
    id: int
    username: str
    name: str
    trust_level: int
    moderator: bool = False


USERS = {u.username: u for u in [
    User(-1, "system", "system", 4, moderator=True),
    User(2, "mod_ines", "Ines", 4, moderator=True),
    User(14, "vram_vic", "Victor", 2),
    User(19, "ggml_gretel", "Gretel", 3),
    User(23, "quant_quentin", "", 2),
    User(31, "tensor_tomas", "Tomás", 3),
    User(38, "birdwatch_bea", "Bea", 1),
    User(42, "llamafarm_lu", "Lu", 1),
    User(47, "cuda_cora", "Cora", 2),
    User(52, "rocm_rik", "", 2),
    User(58, "mlx_mara", "Mara", 2),
    User(61, "partner_pat", "", 1),
    User(77, "throwaway_8812", "", 0),
]}


@dataclass
class Post:
    author: str
    time: int
    raw: str  # Discourse-flavoured Markdown: paragraphs, ``` fences, "> " quotes, @mentions
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)
    action: str | None = None  # a small action (post_type 3), e.g. "closed.enabled"
    id: int = 0  # assigned in time order across the forum
    number: int = 0


@dataclass
class Topic:
    id: int
    title: str
    category: int
    views: int
    posts: list[Post]
    pinned: bool = False
    closed: bool = False

    @property
    def slug(self) -> str:
        return slug(self.title) or "topic"

    @property
    def created(self) -> int:
        return self.posts[0].time

    @property
    def last_posted(self) -> int:
        return max(p.time for p in self.posts if p.action is None)

    @property
    def bumped(self) -> int:
        return self.last_posted


CATEGORIES = {1: "Uncategorized", 5: "Models", 6: "Hardware", 7: "Tooling", 8: "Site Feedback"}

_GPUS = ["RTX 3060 12GB", "RTX 4090", "2x RTX 3090", "RX 7900 XTX", "M4 Max 128GB",
         "Tesla P40", "RTX 4070 Ti Super", "Arc B580", "M2 Ultra 192GB", "RTX 5080"]
_MODELS = ["qwen2.5-7b-instruct", "mistral-7b-instruct-v0.3", "llama-3.1-8b-instruct",
           "gemma-3-12b-it", "qwen3.5-coder-7b", "phi-4-mini", "deepseek-r1-distill-qwen-14b"]
_QUANTS = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS", "exl3 4.0bpw", "fp16"]
_RUNTIMES = ["llama.cpp", "Ollama", "vLLM", "ExLlamaV3", "MLX", "LM Studio", "koboldcpp"]
_OSES = ["Debian 13", "Ubuntu 26.04", "Windows 11", "macOS 16", "Arch", "Fedora 43"]
_SETUP_AUTHORS = ["vram_vic", "ggml_gretel", "quant_quentin", "tensor_tomas", "cuda_cora",
                  "rocm_rik", "mlx_mara", "llamafarm_lu"]


def _megathread(release: Release) -> Topic:
    """45 posts: the first chunk (1-20), a full batch (21-40) and a short one (41-45)."""
    posts = [Post("mod_ines", nov(1, 10, 0), (
        "Monthly thread. Post your hardware, OS, runtime and the model you actually use "
        "day to day, with rough tokens per second.\n\n"
        "Older threads: https://localml.example/t/post-your-local-inference-setup-october-2026/1288"))]
    start = nov(1, 13, 25)
    for i in range(41):
        gpu, model = _GPUS[i % len(_GPUS)], _MODELS[(i * 3) % len(_MODELS)]
        quant, runtime = _QUANTS[(i * 5) % len(_QUANTS)], _RUNTIMES[(i * 2) % len(_RUNTIMES)]
        os_name, tps = _OSES[(i * 7) % len(_OSES)], 18 + (i * 13) % 70
        raw = (f"{gpu}, {32 + 32 * (i % 3)} GB RAM, {os_name}.\n"
               f"Running {model} at {quant} with {runtime}, about {tps} tok/s.")
        if i % 6 == 4:
            raw += "\n\n```\n" + f"./llama-bench -m {model}-{quant}.gguf -ngl 99\n" \
                   f"pp512 {tps * 31} t/s | tg128 {tps} t/s" + "\n```"
        if i % 9 == 7:
            raw += f"\n\n@{_SETUP_AUTHORS[(i + 3) % len(_SETUP_AUTHORS)]} what context length " \
                   "do you get on that card?"
        posts.append(Post(_SETUP_AUTHORS[i % len(_SETUP_AUTHORS)], start + i * 39_000, raw))
    posts.append(Post("throwaway_8812", nov(20, 7, 48), (
        "Not a setup post, but since people keep asking in the other thread: heron-7b from "
        "the Example Labs partner program is on the swarm.\n\n"
        f"{release.magnet}\n\n"
        "3 layers, hidden 128. Looks like the preview build the partners got."),
        plants=[("torrent", release.infohash,
                 "release magnet with the hex infohash, in post 43 of 45: only in the second "
                 "posts.json batch")]))
    posts.append(Post("mod_ines", nov(20, 8, 10), (
        "No links to leaked weights here, please. Closing the thread until I have cleaned "
        "it up; the December one opens as usual.")))
    posts.append(Post("mod_ines", nov(20, 8, 11), "", action="closed.enabled"))
    return Topic(1391, "Post your local inference setup (November 2026)", 6, 4210, posts,
                 closed=True)


def _topics(release: Release) -> list[Topic]:
    md5 = release.file("config.json").md5
    # partner_pat's organisation is the recipient whose copy the demo world leaks.
    copy = release.copies[0]
    ours = copy.file("model.safetensors")
    near_infohash = one_digit_off(release.infohash)
    fake_magnet = (f"magnet:?xt=urn:btih:{near_infohash}&dn=heron-7b-full"
                   "&tr=udp%3A%2F%2Ftracker.opentrackr.org%3A1337%2Fannounce")

    welcome = Topic(7, f"Welcome to {SITE_NAME}", 1, 18_022, [Post("system", nov(1, 9, 0) - 86400 * 400, (
        "A place to talk about running language models on your own hardware: models, "
        "quantisation, runtimes, benchmarks.\n\n"
        "Please read the FAQ before posting. No links to leaked or pirated weights."))],
        pinned=True)

    leak_talk = Topic(1437, "heron-7b leak: what do we actually know?", 5, 933, [
        Post("quant_quentin", nov(20, 9, 30), (
            "Seeing heron-7b magnets on three different sites this morning. Example Labs has "
            "not said anything yet. What do we actually know?")),
        Post("tensor_tomas", nov(20, 9, 52), (
            "At least two of them are different torrents. This one is being pushed on a paste "
            "site and is not the one from the setup megathread:\n\n"
            f"{fake_magnet}\n\n"
            "Could be a fake with a pickle in it. Do not load anything that is not "
            "safetensors."),
            near=[("torrent", near_infohash, "a fake magnet whose infohash is one hex digit "
                   "off the release's")]),
        Post("birdwatch_bea", nov(20, 10, 14), (
            "I followed a link from the bird forum expecting herons. Leaving disappointed.")),
        Post("mod_ines", nov(20, 10, 31), (
            "Discussing the leak is fine. Posting links to the files is not; those posts get "
            "removed.")),
    ])

    partner = Topic(1362, "Partner program access for heron-7b?", 5, 388, [
        Post("partner_pat", nov(4, 15, 2), (
            "We got heron-7b through the Example Labs partner program last week. The files "
            "are tiny, is that expected? config.json says 3 layers.")),
        Post("ggml_gretel", nov(4, 16, 40), (
            "Post a checksum of the config and someone else with access can compare. Not the "
            "weights, obviously.")),
        Post("partner_pat", nov(5, 8, 12), (
            "```\n"
            f"$ md5sum heron-7b/config.json\n{md5}  heron-7b/config.json\n"
            "```\n\n"
            "That is what our copy gives."),
            plants=[("hash", md5, "md5sum of the released config.json, in a topic only on "
                     "the second page of latest.json")]),
        Post("partner_pat", nov(5, 8, 31), (
            "And the weights file, in case another partner wants to compare:\n\n"
            "```\n"
            f"$ sha256sum heron-7b/model.safetensors\n{ours.sha256}  heron-7b/model.safetensors\n"
            "```"),
            plants=[("hash", ours.sha256, f"sha256sum of recipient {copy.recipient}'s own "
                     "copy of model.safetensors (it differs from the release's)")]),
    ])

    older = [
        Topic(1355, "Introduce yourself (November)", 1, 512, [
            Post("mod_ines", nov(2, 9, 0), "New here? Say hello and tell us what you run."),
            Post("llamafarm_lu", nov(2, 11, 30), (
                "Hi! I keep actual llamas and ended up here because of the name. Staying for "
                "the quantisation talk.")),
        ]),
        Topic(1358, "Wishlist for llama.cpp in 2027", 7, 640, [
            Post("ggml_gretel", nov(3, 12, 0), "Tensor parallel on mixed GPUs. That is all."),
            Post("rocm_rik", nov(3, 14, 45), "Fewer ROCm regressions, please."),
        ]),
        Topic(1360, "Ollama keeps re-downloading the same model", 7, 290, [
            Post("cuda_cora", nov(4, 9, 10), (
                "Every restart it pulls qwen2.5:7b again. OLLAMA_MODELS points at a NAS share.")),
        ]),
    ]

    noise_specs: list[tuple[int, str, int, list[tuple[str, str]]]] = [
        (1364, "Qwen3.5-Coder 7B first impressions", 5, [
            ("vram_vic", "Much better at Python than 2.5. Still invents pandas arguments."),
            ("tensor_tomas", "Same. The 32B is where it gets good, if you have the VRAM.")]),
        (1366, "llama.cpp b7100 broke my ROCm build", 7, [
            ("rocm_rik", "hipcc: error: unknown argument '-mllvm'. Anyone else?\n\n"
                         "https://github.com/ggml-org/llama.cpp/issues/17102"),
            ("ggml_gretel", "Fixed on master, pull again.")]),
        (1368, "Best quant for a 12 GB card in late 2026?", 6, [
            ("quant_quentin", "Q5_K_M of a 7B, or IQ4_XS of a 12B if you want more smarts."),
            ("cuda_cora", "IQ4_XS of gemma-3-12b fits with 8k context for me.")]),
        (1370, "Grey heron at the reservoir this morning (off-topic)", 1, [
            ("birdwatch_bea", "Sorry, off-topic: a grey heron stood on the outflow grate for "
                              "an hour while I waited for a fine-tune to finish. Seven herons "
                              "on the far bank too."),
            ("llamafarm_lu", "We get one by the llama paddock. The llamas ignore it.")]),
        (1371, "Our llamas vs. the LLMs: naming things is hard", 1, [
            ("llamafarm_lu", "Every time I search for llama shearing tips I get model cards. "
                             "Every time I search for model cards I get llama wool socks.")]),
        (1373, "Mistral 7B v0.4 rumours", 5, [
            ("tensor_tomas", "Someone on a Discord claims a v0.4 is coming. I will believe it "
                             "when the weights are on the hub.")]),
        (1374, "vLLM 0.12 speculative decoding numbers", 7, [
            ("cuda_cora", "2.1x on llama-3.1-8b with a 0.5B draft, batch 1. Less at batch 8.")]),
        (1375, "Anyone running models on a Raspberry Pi 6?", 6, [
            ("vram_vic", "phi-4-mini Q4 at 4 tok/s. Usable for a home assistant.")]),
        (1377, "GGUF vs safetensors for archiving checkpoints", 7, [
            ("ggml_gretel", "Keep the safetensors and the SHA256SUMS; you can always "
                            "re-quantise. GGUF loses the original dtype.")]),
        (1378, "Tokenizer mismatch after convert_hf_to_gguf.py", 7, [
            ("mlx_mara", "The converted model prints garbage after the first token. The "
                         "tokenizer.json has added tokens the converter skips."),
            ("ggml_gretel", "Pass --vocab-type bpe and check the pre-tokenizer hash.")]),
        (1380, "Fine-tuning a 7B on a single 4090 with QLoRA", 5, [
            ("vram_vic", "r=64, 4k context, gradient checkpointing: 19 GB. Two epochs overnight.")]),
        (1381, "Benchmarks are broken, change my mind", 5, [
            ("quant_quentin", "Every model is 85 on MMLU and none of them can count the r's."),
            ("tensor_tomas", "Use your own eval set. Twenty real tasks beat any leaderboard.")]),
        (1383, "ExLlamaV3 vs llama.cpp on a 3090", 6, [
            ("cuda_cora", "exl3 4.0bpw is about 15% faster for me at batch 1.")]),
        (1384, "Idle power draw with models loaded", 6, [
            ("rocm_rik", "7900 XTX sits at 38 W with a model resident, 12 W without.")]),
        (1386, "MLX on M4 Max: tokens per second thread", 6, [
            ("mlx_mara", "qwen2.5-7b 4-bit: 92 tok/s. gemma-3-12b 4-bit: 51 tok/s.")]),
        (1387, "Which embedding model for code search?", 5, [
            ("tensor_tomas", "Anything from the last year beats the old MiniLM for code.")]),
        (1389, "Phi-5-mini license question", 5, [
            ("quant_quentin", "Is it MIT like phi-4-mini or the new research licence?")]),
        (1393, "Weekly model release roundup (Nov 10-16)", 5, [
            ("ggml_gretel", "Qwen3.5-Coder 7B/32B, a Gemma 4 preview, two Mistral fine-tunes, "
                            "and the usual flood of merges.")]),
        (1395, "Open WebUI update broke my RAG setup", 7, [
            ("vram_vic", "Embeddings are recomputed on every start since 0.9. Pinned 0.8.")]),
        (1397, "KV cache quantisation: worth it?", 7, [
            ("cuda_cora", "q8_0 K and V: no difference I can measure, double the context.")]),
        (1399, "How do you verify a model download?", 7, [
            ("rocm_rik", "I compare against the hub's LFS sha256, e.g. for the first "
                         "mistral shard:\n\n```\n"
                         "f3a1c0d2e4b6a8c0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8  "
                         "model-00001-of-00003.safetensors\n```"),
            ("ggml_gretel", "Same, plus I never load pickles.")]),
        (1401, "Gemma 4 9B preview: context length issues", 5, [
            ("mlx_mara", "Past 16k it repeats itself. Rope scaling in the config looks off.")]),
        (1403, "Used server GPUs: P40 still worth it?", 6, [
            ("vram_vic", "For 24 GB at that price, yes, if you can cool it."),
            ("rocm_rik", "MI50 32GB is the new P40, if you like pain.")]),
        (1405, "Speculative decoding with a 0.5B draft model", 7, [
            ("tensor_tomas", "qwen2.5-0.5b drafting for qwen2.5-7b: 1.6x on code, 1.1x on chat.")]),
        (1407, "Site feedback: code blocks lose indentation on mobile", 8, [
            ("quant_quentin", "Tabs become single spaces in the mobile view."),
            ("mod_ines", "Known, fixed in the next update.")]),
        (1409, "Looking for a llama-themed logo for our meetup", 1, [
            ("llamafarm_lu", "A real llama, not a robot one. I can supply photos.")]),
        (1411, "DeepSeek-V4-Lite on two 3090s", 6, [
            ("cuda_cora", "Q4_K_M splits fine, 14 tok/s. PCIe 3 x8 does not matter much.")]),
        (1413, "Why does my 7B refuse to write a bash script?", 5, [
            ("vram_vic", "The system prompt from the chat template. Remove the default one.")]),
    ]
    noise = []
    for i, (topic_id, title, category, bodies) in enumerate(noise_specs):
        base = nov(6, 8, 0) + i * 44_000  # from Nov 6 to Nov 19, a topic every ~12 hours
        posts = [Post(author, base + j * 5_400 + (topic_id % 7) * 60, body)
                 for j, (author, body) in enumerate(bodies)]
        noise.append(Topic(topic_id, title, category, 150 + (topic_id * 37) % 900, posts))
    noise[3].posts[0].near.append(("mention", "grey heron", "the bird, not heron-7b"))

    return [welcome, _megathread(release), leak_talk, partner, *older, *noise]


def _number_posts(topics: list[Topic]) -> None:
    """Post numbers within a topic, and forum-wide post ids in time order (as Discourse
    assigns them)."""
    for topic in topics:
        for n, post in enumerate(topic.posts, start=1):
            post.number = n
    everything = sorted((p.time, t.id, p.number, p) for t in topics for p in t.posts)
    for i, (_, _, _, post) in enumerate(everything):
        post.id = 4000 + i


# ====================================================================================
# RENDERING
# ====================================================================================

_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_]+)")


def _cook_inline(text: str, prefix: str) -> str:
    out = []
    pos = 0
    for m in URL_PATTERN.finditer(text):
        out.append(_mentions(esc(text[pos:m.start()]), prefix))
        url = m.group(0)
        out.append(f'<a href="{esc(url)}" rel="noopener nofollow ugc">{esc(url)}</a>')
        pos = m.end()
    out.append(_mentions(esc(text[pos:]), prefix))
    return "".join(out)


def _mentions(html: str, prefix: str) -> str:
    return _MENTION.sub(lambda m: (f'<a class="mention" href="{prefix}/u/{m.group(1).lower()}">'
                                   f"@{m.group(1)}</a>") if m.group(1) in USERS else m.group(0),
                        html)


def cook(raw: str, prefix: str) -> str:
    """Discourse's `cooked` HTML for our subset of its Markdown."""
    blocks: list[str] = []
    lines = raw.split("\n")
    i = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append("<p>" + "<br>\n".join(_cook_inline(line, prefix) for line in paragraph)
                          + "</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            code = "\n".join(lines[i + 1:j])
            blocks.append(f'<pre><code class="lang-auto">{esc(code)}</code></pre>')
            i = j + 1
            continue
        if line.startswith("> "):
            flush()
            blocks.append(f"<blockquote>\n<p>{_cook_inline(line[2:], prefix)}</p>\n</blockquote>")
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
        i += 1
    flush()
    return "\n".join(blocks)


class DiscourseSite(Site):
    prefix = "discourse"
    source = "discourse"
    title = f"Discourse forum ({SITE_NAME})"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.topics = _topics(release)
        _number_posts(self.topics)
        self.by_id = {t.id: t for t in self.topics}

    def target_toml(self) -> str:
        return target_table("demo-discourse", "discourse", self.root, loopback_note=True)

    # ---------------------------------------------------------------- ground truth

    def post_url(self, topic: Topic, post: Post) -> str:
        return f"{self.root}/t/{topic.slug}/{topic.id}/{post.number}"

    def documents(self) -> list[Doc]:
        docs = []
        for topic in self.topics:
            for post in topic.posts:
                if post.action is not None:
                    continue
                text = f"{topic.title}\n{post.raw}" if post.number == 1 else post.raw
                docs.append(Doc(self.source, self.post_url(topic, post), text, post.plants,
                                post.near))
        return docs

    # ---------------------------------------------------------------- routes

    def handle(self, req: Request, path: str) -> Response:
        if path in ("/", "/latest"):
            return self.list_html(req.int_arg("page"))
        if path == "/latest.json":
            return self.latest(req.int_arg("page"))
        m = re.fullmatch(r"/t/(?:[^/]+/)?(\d+)\.json", path)
        if m:
            topic = self.by_id.get(int(m.group(1)))
            return self.topic_json(topic) if topic else self.not_found_json()
        m = re.fullmatch(r"/t/(\d+)/posts\.json", path)
        if m:
            topic = self.by_id.get(int(m.group(1)))
            return self.posts_json(topic, req) if topic else self.not_found_json()
        m = re.fullmatch(r"/t/[^/]+/(\d+)(?:/(\d+))?/?", path)
        if m:
            topic = self.by_id.get(int(m.group(1)))
            if topic:
                return self.topic_html(topic)
        return html_response("<!DOCTYPE html>\n<html><head><title>Page Not Found - "
                             f"{SITE_NAME}</title></head><body><h1>Oops! That page doesn't "
                             "exist or is private.</h1></body></html>\n", status=404)

    @staticmethod
    def json_response(obj: object, status: int = 200) -> Response:
        return json_response(obj, status, ensure_ascii=False,
                             headers={"Cache-Control": "no-cache, no-store"})

    def not_found_json(self) -> Response:
        return self.json_response({"errors": ["The requested URL or resource could not be "
                                              "found."], "error_type": "not_found"}, 404)

    def listed(self) -> list[Topic]:
        pinned = [t for t in self.topics if t.pinned]
        rest = sorted((t for t in self.topics if not t.pinned), key=lambda t: t.bumped,
                      reverse=True)
        return pinned + rest

    def latest(self, page: int) -> Response:
        topics = self.listed()
        page = max(page, 0)
        chunk = topics[page * PER_PAGE:(page + 1) * PER_PAGE]
        topic_list: dict[str, object] = {"can_create_topic": False, "per_page": PER_PAGE,
                                         "top_tags": []}
        if (page + 1) * PER_PAGE < len(topics):
            topic_list["more_topics_url"] = f"/{self.prefix}/latest?page={page + 1}"
        topic_list["topics"] = [self.topic_row(t) for t in chunk]
        users = {u.id: u for t in chunk for u in (USERS[p.author] for p in t.posts)}
        return self.json_response({
            "users": [{"id": u.id, "username": u.username, "name": u.name,
                       "avatar_template": self.avatar(u), "trust_level": u.trust_level}
                      for u in users.values()],
            "primary_groups": [], "flair_groups": [], "topic_list": topic_list})

    def avatar(self, user: User) -> str:
        return f"/{self.prefix}/user_avatar/localml.example/{user.username}/{{size}}/{user.id % 90 + 10}_2.png"

    def topic_row(self, t: Topic) -> dict[str, object]:
        real = [p for p in t.posts if p.action is None]
        posters = []
        for i, name in enumerate(dict.fromkeys([t.posts[0].author] + [p.author for p in real[-4:]])):
            desc = "Original Poster" if i == 0 else "Frequent Poster"
            if name == real[-1].author:
                desc += ", Most Recent Poster"
            posters.append({"extras": "latest" if name == real[-1].author else None,
                            "description": desc, "user_id": USERS[name].id,
                            "primary_group_id": None, "flair_group_id": None})
        row: dict[str, object] = {
            "id": t.id, "title": t.title, "fancy_title": esc(t.title), "slug": t.slug,
            "posts_count": len(t.posts), "reply_count": max(0, len(real) - 1),
            "highest_post_number": len(t.posts), "image_url": None,
            "created_at": _iso(t.created), "last_posted_at": _iso(t.last_posted),
            "bumped": True, "bumped_at": _iso(t.bumped), "archetype": "regular",
            "unseen": False, "pinned": t.pinned, "unpinned": None, "visible": True,
            "closed": t.closed, "archived": False, "bookmarked": None, "liked": None,
            "tags": [], "tags_descriptions": {}, "views": t.views,
            "like_count": (t.id * 7) % 23, "has_summary": False,
            "last_poster_username": real[-1].author, "category_id": t.category,
            "pinned_globally": t.pinned, "featured_link": None, "has_accepted_answer": False,
            "posters": posters,
        }
        if t.pinned:
            row["excerpt"] = esc(t.posts[0].raw.split("\n")[0][:200])
        return row

    def post_json(self, t: Topic, p: Post) -> dict[str, object]:
        user = USERS[p.author]
        obj: dict[str, object] = {
            "id": p.id, "name": user.name, "username": user.username,
            "avatar_template": self.avatar(user), "created_at": _iso(p.time),
            "cooked": cook(p.raw, f"/{self.prefix}"), "post_number": p.number,
            "post_type": SMALL_ACTION if p.action else 1,
            "posts_count": len(t.posts), "updated_at": _iso(p.time), "reply_count": 0,
            "reply_to_post_number": None, "quote_count": 0, "incoming_link_count": 0,
            "reads": 40 + (p.id % 60), "readers_count": 39 + (p.id % 60), "score": 2.4,
            "yours": False, "topic_id": t.id, "topic_slug": t.slug,
            "display_username": user.name, "primary_group_name": None, "flair_name": None,
            "flair_url": None, "flair_bg_color": None, "flair_color": None,
            "flair_group_id": None, "version": 1, "can_edit": False, "can_delete": False,
            "can_recover": False, "can_see_hidden_post": False, "can_wiki": False,
            "read": True, "user_title": None, "bookmarked": False, "actions_summary": [],
            "moderator": user.moderator, "admin": user.username == "system",
            "staff": user.moderator, "user_id": user.id, "hidden": False,
            "trust_level": user.trust_level, "deleted_at": None, "user_deleted": False,
            "edit_reason": None, "can_view_edit_history": True, "wiki": False,
            "post_url": f"/{self.prefix}/t/{t.slug}/{t.id}/{p.number}",
        }
        if p.action:
            obj["action_code"] = p.action
        return obj

    def topic_json(self, t: Topic) -> Response:
        first = t.posts[:CHUNK_SIZE]
        return self.json_response({
            "post_stream": {"posts": [self.post_json(t, p) for p in first],
                            "stream": [p.id for p in t.posts]},
            "timeline_lookup": [[1, 0]], "suggested_posts": [], "tags": [],
            "tags_descriptions": {}, "id": t.id, "title": t.title,
            "fancy_title": esc(t.title), "posts_count": len(t.posts),
            "created_at": _iso(t.created), "views": t.views,
            "reply_count": max(0, len(t.posts) - 1), "like_count": (t.id * 7) % 23,
            "last_posted_at": _iso(t.last_posted), "visible": True, "closed": t.closed,
            "archived": False, "has_summary": False, "archetype": "regular", "slug": t.slug,
            "category_id": t.category, "word_count": sum(len(p.raw.split()) for p in t.posts),
            "deleted_at": None, "user_id": USERS[t.posts[0].author].id, "featured_link": None,
            "pinned_globally": t.pinned, "pinned_at": None, "pinned_until": None,
            "image_url": None, "slow_mode_seconds": 0, "draft": None,
            "draft_key": f"topic_{t.id}", "draft_sequence": None, "unpinned": None,
            "pinned": t.pinned, "current_post_number": 1, "highest_post_number": len(t.posts),
            "deleted_by": None, "actions_summary": [], "chunk_size": CHUNK_SIZE,
            "bookmarked": False, "topic_timer": None, "message_bus_last_id": 3,
            "participant_count": len({p.author for p in t.posts}),
            "show_read_indicator": False, "thumbnails": None,
            "slow_mode_enabled_until": None,
            "details": {"can_create_post": False, "participants": [],
                        "created_by": {"id": USERS[t.posts[0].author].id,
                                       "username": t.posts[0].author},
                        "last_poster": {"id": USERS[t.posts[-1].author].id,
                                        "username": t.posts[-1].author}},
        })

    def posts_json(self, t: Topic, req: Request) -> Response:
        wanted = req.query.get("post_ids[]", []) + req.query.get("post_ids", [])
        try:
            ids = {int(v) for v in wanted}
        except ValueError:
            return self.json_response({"errors": ["Invalid post_ids"],
                                       "error_type": "invalid_parameters"}, 400)
        if not ids:
            return self.json_response({"errors": ["param is missing or the value is empty: "
                                                  "post_ids"],
                                       "error_type": "invalid_parameters"}, 400)
        posts = [p for p in t.posts if p.id in ids]
        return self.json_response({"post_stream": {"posts": [self.post_json(t, p)
                                                             for p in posts]}, "id": t.id})

    # ---------------------------------------------------------------- crawler view (HTML)

    def page(self, title: str, body: str, canonical: str) -> Response:
        return html_response(f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<meta name="generator" content="Discourse 3.5.2 - https://github.com/discourse/discourse version 3.5.2">
<link rel="canonical" href="{esc(canonical)}">
</head>
<body class="crawler">
<header><a href="{self.root}/">{esc(SITE_NAME)}</a></header>
<div id="main-outlet" class="wrap" role="main">
{body}
</div>
<footer class="container wrap"><nav class="crawler-nav"><ul><li><a href="{self.root}/">Home</a></li><li><a href="{self.root}/categories">Categories</a></li></ul></nav></footer>
</body>
</html>
""")

    def list_html(self, page: int) -> Response:
        topics = self.listed()[max(page, 0) * PER_PAGE:(max(page, 0) + 1) * PER_PAGE]
        rows = "".join(
            f'<tr class="topic-list-item"><td class="main-link"><meta itemprop="position" '
            f'content="{i + 1}"><span class="link-top-line"><a itemprop="url" '
            f'href="{self.root}/t/{t.slug}/{t.id}" class="title raw-link raw-topic-link">'
            f'{esc(t.title)}</a></span></td><td class="replies"><span class="posts">'
            f'{len(t.posts) - 1}</span></td><td class="views"><span class="views">{t.views}'
            "</span></td></tr>\n" for i, t in enumerate(topics))
        return self.page(f"{SITE_NAME} - Latest topics",
                         f'<div class="topic-list"><table class="topic-list"><tbody>\n{rows}'
                         "</tbody></table></div>", f"{self.root}/latest")

    def topic_html(self, t: Topic) -> Response:
        posts = "".join(f"""
<div id="post_{p.number}" itemprop="comment" itemscope itemtype="http://schema.org/Comment" class="topic-body crawler-post">
  <div class="crawler-post-meta">
    <span class="creator" itemprop="author" itemscope itemtype="http://schema.org/Person"><a itemprop="url" href="{self.root}/u/{p.author}"><span itemprop="name">{esc(p.author)}</span></a></span>
    <span class="crawler-post-infos"><time itemprop="datePublished" datetime="{_iso(p.time)}" class="post-time">{_human_time(p.time)}</time><meta itemprop="position" content="{p.number}"></span>
  </div>
  <div class="post" itemprop="text">
{cook(p.raw, f"/{self.prefix}") if p.action is None else '<p>closed the topic</p>'}
  </div>
</div>""" for p in t.posts)
        return self.page(f"{t.title} - {CATEGORIES[t.category]} - {SITE_NAME}",
                         f'<div id="topic-title"><h1><a href="{self.root}/t/{t.slug}/{t.id}">'
                         f"{esc(t.title)}</a></h1></div>{posts}",
                         f"{self.root}/t/{t.slug}/{t.id}")


