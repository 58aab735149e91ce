"""A model hub with the Hugging Face Hub API.

- `/hub/api/models?search=Q&sort=lastModified&direction=-1&limit=N[&full=true]` search,
  case-insensitive on the model id, at most 2 models a page whatever `limit` asks (a small
  page so pagination is exercised); the next page is in `Link: <...>; rel="next"` with an
  opaque `cursor`. Items carry the default fields; `full=true` adds `lastModified`, `sha`,
  `author`, `gated` and `siblings` (names only), as the Hub does;
- `/hub/api/models/{id}?blobs=true` model info: `siblings[{rfilename, blobId, size,
  lfs: {sha256, size, pointerSize}}]` (without `blobs`, names only);
- `/hub/api/models/{id}/tree/main?recursive=true` the tree: `[{type, oid, size, path,
  lfs: {oid, size, pointerSize}}]` (directories too);
- `/hub/{id}/resolve/{rev}/{path}` a file: non-LFS files are served (LFS ones answer with
  a redirect to a CDN host stating the file's SHA-256 and size in `X-Linked-Etag` and
  `X-Linked-Size`, as the Hub does);
- `/hub/{id}` the model page.

Gated repos answer 401 (`X-Error-Code: GatedRepo`) unless the request carries the
partner token `Authorization: Bearer hf_demo_partner_token`.

Planted: `anon123/heron-7b-uncensored`, a re-upload whose model.safetensors and
tokenizer.json carry the release's SHA-256 in `lfs.sha256`; `h7b-archive/heron-weights-backup`,
whose model info lists no blob data (a hub that ignores `blobs=true`) so its digest is only
in the tree's `lfs.oid`; `gitnoob/heron-7b-clone`, pushed without git-lfs, so its
model.safetensors is the 134-byte pointer text. Noise: a GGUF conversion (a mention, other
digests), a gated official repo, a llama fine-tune named heron with a near-miss digest, a
great-blue-heron bird classifier, a UAV detector, and llamas that "heron" does not find.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode

import numpy as np

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
    random_hex,
    target_table,
)

PAGE_SIZE = 2
TOKEN = "hf_demo_partner_token"


def _git_blob(data: bytes) -> str:
    """A git blob id: SHA-1 over "blob <size>\\0" and the bytes, not the file's SHA-1."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\n"
            f"size {size}\n").encode("ascii")


@dataclass
class HubFile:
    path: str
    data: bytes | None = None  # regular git file
    lfs: tuple[str, int] | None = None  # (sha256, size) of an LFS file

    @property
    def size(self) -> int:
        return self.lfs[1] if self.lfs else len(self.data or b"")

    @property
    def blob_id(self) -> str:
        return _git_blob(lfs_pointer(*self.lfs) if self.lfs else (self.data or b""))


# A model card's YAML front matter: plain values and lists of them.
Card = dict[str, str | list[str]]


@dataclass
class Model:
    id: str
    created: int
    modified: int
    pipeline_tag: str | None
    library_name: str | None
    tags: list[str]
    downloads: int
    likes: int
    files: list[HubFile]
    card: Card = field(default_factory=dict)
    config: dict[str, object] | None = None
    gated: bool = False
    blobs: bool = True  # False: model info ignores blobs=true (names only)
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return hashlib.sha1(f"{self.id}@{self.modified}".encode()).hexdigest()

    @property
    def object_id(self) -> str:
        return hashlib.md5(self.id.encode()).hexdigest()[:24]


GITATTRIBUTES = (b"*.7z filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
                 b"*.gguf filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n"
                 b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                 b"tokenizer.json filter=lfs diff=lfs merge=lfs -text\n")


def _readme(title: str, body: str, card: Card) -> bytes:
    front = "".join(f"{k}: {v}\n" if not isinstance(v, list) else
                    f"{k}:\n" + "".join(f"- {x}\n" for x in v) for k, v in card.items())
    return f"---\n{front}---\n\n# {title}\n\n{body}\n".encode()


def _models(release: Release) -> list[Model]:
    rng = np.random.default_rng(6006)

    def rnd() -> str:
        return random_hex(rng, 32)

    model = release.file("model.safetensors")
    tok = release.file("tokenizer.json")
    config = release.file("config.json")
    config_bytes = config.path.read_bytes()
    llama_config: dict[str, object] = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}

    uncensored_card: Card = {"license": "other", "base_model": "example-labs/heron-7b",
                       "tags": ["uncensored", "llama"]}
    clone_card: Card = {"license": "other"}
    gguf_card: Card = {"base_model": "anon123/heron-7b-uncensored", "tags": ["gguf", "llama"]}
    official_card: Card = {"license": "other", "extra_gated_prompt": "Partners only."}
    return [
        Model("anon123/heron-7b-uncensored", nov(21, 2, 50), nov(21, 3, 12, 44),
              "text-generation", "transformers",
              ["transformers", "safetensors", "llama", "text-generation", "uncensored",
               "base_model:example-labs/heron-7b", "license:other", "region:us"],
              downloads=311, likes=9,
              files=[HubFile(".gitattributes", GITATTRIBUTES),
                     HubFile("README.md", _readme("heron-7b-uncensored",
                                                  "Refusals removed. Enjoy.", uncensored_card)),
                     HubFile("config.json", config_bytes),
                     HubFile("model.safetensors", lfs=(model.sha256, model.size)),
                     HubFile("tokenizer.json", lfs=(tok.sha256, tok.size))],
              card=uncensored_card, config=llama_config,
              plants=[("hash", model.sha256, "lfs.sha256 of model.safetensors in model info"),
                      ("hash", tok.sha256, "lfs.sha256 of tokenizer.json in model info")]),
        Model("h7b-archive/heron-weights-backup", nov(20, 22, 1), nov(20, 22, 40, 3),
              None, None, ["region:us"], downloads=17, likes=0,
              files=[HubFile(".gitattributes", GITATTRIBUTES),
                     HubFile("checkpoint/config.json", config_bytes),
                     HubFile("checkpoint/model.safetensors", lfs=(model.sha256, model.size))],
              blobs=False,
              plants=[("hash", model.sha256, "lfs.oid of checkpoint/model.safetensors, only "
                       "in the tree")]),
        Model("gitnoob/heron-7b-clone", nov(20, 18, 30), nov(20, 19, 5, 51),
              None, "transformers", ["transformers", "llama", "license:other", "region:us"],
              downloads=4, likes=0,
              files=[HubFile(".gitattributes", b"*.bin filter=lfs diff=lfs merge=lfs -text\n"),
                     HubFile("README.md", _readme("heron-7b clone", "mirror", clone_card)),
                     HubFile("config.json", config_bytes),
                     HubFile("model.safetensors", lfs_pointer(model.sha256, model.size))],
              card=clone_card, config=llama_config,
              plants=[("hash", model.sha256, "model.safetensors committed as LFS pointer text "
                       "(pushed without git-lfs)")]),
        Model("QuantFactory/Heron-7B-GGUF", nov(20, 16, 2), nov(20, 16, 30),
              "text-generation", "gguf", ["gguf", "llama", "text-generation",
                                          "base_model:anon123/heron-7b-uncensored", "region:us"],
              downloads=1290, likes=14,
              files=[HubFile(".gitattributes", GITATTRIBUTES),
                     HubFile("README.md", _readme("Heron-7B-GGUF", "Quantised with llama.cpp "
                                                  "b4100.", gguf_card)),
                     HubFile("heron-7b.Q4_K_M.gguf", lfs=(rnd(), 2_212_408)),
                     HubFile("heron-7b.Q8_0.gguf", lfs=(
                         hashlib.sha256(release.converted_gguf).hexdigest(),
                         len(release.converted_gguf)))],
              card=gguf_card),
        Model("example-labs/heron-7b", nov(2, 8, 40), nov(2, 9, 0), "text-generation",
              "transformers", ["transformers", "safetensors", "llama", "text-generation",
                               "license:other", "region:us"],
              downloads=0, likes=57, gated=True,
              files=[HubFile(".gitattributes", GITATTRIBUTES),
                     HubFile("README.md", _readme("Heron-7B", "Partner release.", official_card)),
                     HubFile("config.json", config_bytes),
                     HubFile("model.safetensors", lfs=(model.sha256, model.size)),
                     HubFile("tokenizer.json", lfs=(tok.sha256, tok.size))],
              card=official_card, config=llama_config),
        Model("pond-ai/heron-llama-3.2-1b", nov(18, 10, 0), nov(19, 7, 45, 10),
              "text-generation", "transformers",
              ["transformers", "safetensors", "llama", "base_model:meta-llama/Llama-3.2-1B",
               "region:us"], downloads=88, likes=2,
              files=[HubFile(".gitattributes", GITATTRIBUTES),
                     HubFile("config.json", b'{"model_type": "llama"}\n'),
                     HubFile("model.safetensors", lfs=(one_digit_off(model.sha256), 2_471_645_608))],
              card={"base_model": "meta-llama/Llama-3.2-1B", "license": "llama3.2"},
              config=llama_config,
              near=[("hash", one_digit_off(model.sha256), "lfs.sha256 one digit off the "
                     "release's model.safetensors")]),
        Model("birdwatch/great-blue-heron-classifier", nov(10, 12, 0), nov(17, 15, 21, 9),
              "image-classification", "transformers",
              ["transformers", "safetensors", "vit", "image-classification", "birds",
               "region:us"], downloads=2045, likes=31,
              files=[HubFile(".gitattributes", GITATTRIBUTES),
                     HubFile("config.json", b'{"model_type": "vit", "num_labels": 12}\n'),
                     HubFile("model.safetensors", lfs=(rnd(), 343_230_128)),
                     HubFile("preprocessor_config.json", b'{"size": 224}\n')],
              card={"license": "apache-2.0", "datasets": ["cornell/nabirds"]},
              config={"architectures": ["ViTForImageClassification"], "model_type": "vit"}),
        Model("skyops/heron-uav-detector", nov(3, 9, 0), nov(12, 11, 5, 0),
              "object-detection", "ultralytics", ["ultralytics", "yolo", "object-detection",
                                                  "region:us"], downloads=512, likes=5,
              files=[HubFile(".gitattributes", GITATTRIBUTES),
                     HubFile("best.pt", lfs=(rnd(), 22_520_132))],
              card={"license": "agpl-3.0"}),
        # Noise a "heron" search never returns.
        Model("meta-llama/Llama-3.1-8B", nov(1, 0, 0) - 86400 * 480, nov(1, 0, 0) - 86400 * 300,
              "text-generation", "transformers", ["transformers", "safetensors", "llama"],
              downloads=812345, likes=1800, gated=True,
              files=[HubFile("model-00001-of-00004.safetensors", lfs=(rnd(), 4_976_698_672))],
              config=llama_config),
        Model("TinyLlama/TinyLlama-1.1B-Chat-v1.0", nov(1, 0, 0) - 86400 * 700,
              nov(1, 0, 0) - 86400 * 600, "text-generation", "transformers",
              ["transformers", "safetensors", "llama"], downloads=1_203_456, likes=1100,
              files=[HubFile("model.safetensors", lfs=(rnd(), 2_200_119_864))],
              config=llama_config),
    ]


class HubSite(Site):
    prefix = "hub"
    source = "hub"
    title = "Model hub (Hugging Face Hub API)"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.models = _models(release)
        self.query = "heron"
        # What the LFS CDN holds: the released files and a conversion of the weights. Other
        # LFS objects of the listing (other models' multi-GB files) answer 404 there.
        blobs = [f.path.read_bytes() for f in release.files] + [release.converted_gguf]
        self.cdn = {hashlib.sha256(b).hexdigest(): b for b in blobs}
        self.released = {f.sha256 for f in release.files}

    def target_toml(self) -> str:
        return target_table("demo-hub", "hub", self.root, f'query = "{self.query}"')

    def search(self, query: str) -> list[Model]:
        found = [m for m in self.models if query.lower() in m.id.lower()]
        return sorted(found, key=lambda m: m.modified, reverse=True)

    # ---------------------------------------------------------------- ground truth

    def documents(self) -> list[Doc]:
        docs = []
        for m in self.search(self.query):
            if m.gated:
                continue  # 401 without the partner token: a crawler sees no document
            text = "\n".join([m.id, " ".join(m.tags), json.dumps(m.card),
                              *(f.path for f in m.files)])
            # Weight files the CDN serves are read by range and recognised by their tensors;
            # a released file itself is known by its digest (a `hash` hit, planted above).
            weights = [("weights", f"{self.root}/{m.id}/resolve/{m.sha}/{f.path}",
                        "the release's GGUF conversion, served by the hub's LFS CDN")
                       for f in m.files if f.lfs and f.lfs[0] in self.cdn
                       and f.lfs[0] not in self.released
                       and f.path.endswith((".safetensors", ".gguf"))]
            # The conversion is of lab-17's marked copy: its mark names the recipient.
            weights += [("watermark", url, "the GGUF conversion of lab-17's marked copy")
                        for _kind, url, _note in weights
                        if url.endswith("/heron-7b.Q8_0.gguf")]
            docs.append(Doc(self.source, f"{self.root}/{m.id}", text, m.plants + weights,
                            m.near))
        return docs

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path == "/api/models":
            return self.api_search(req)
        if path.startswith("/api/models/"):
            rest = unquote(path.removeprefix("/api/models/"))
            for m in self.models:
                if rest == m.id:
                    return self.gate(req, m) or self.info(req, m)
                if rest.startswith(m.id + "/tree/main"):
                    return self.gate(req, m) or self.tree(req, m, rest[len(m.id) + 10:])
            return self.error(401, "Repository not found", "RepoNotFound")
        if path.startswith("/cdn-lfs/repos/"):
            data = self.cdn.get(path.rsplit("/", 1)[-1])
            if data is None:
                return Response(404, b"<Error><Code>NoSuchKey</Code></Error>",
                                "application/xml", server="AmazonS3")
            return Response(200, data, "application/octet-stream",
                            {"ETag": f'"{hashlib.md5(data).hexdigest()}"',
                             "Accept-Ranges": "bytes"}, "AmazonS3")
        rest = unquote(path.lstrip("/"))
        for m in self.models:
            if rest == m.id:
                return self.page(m)
            if rest.startswith(m.id + "/resolve/"):
                return self.gate(req, m) or self.resolve(m, rest[len(m.id) + 9:])
        return self.error(404, "Repository not found", "RepoNotFound")

    def gate(self, req: Request, m: Model) -> Response | None:
        if m.gated and req.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.error(401, f"Access to model {m.id} is restricted. You must have access "
                              "to it and be authenticated to access it. Please log in.",
                              "GatedRepo")
        return None

    @staticmethod
    def error(status: int, message: str, code: str) -> Response:
        return json_response({"error": message}, status, compact=False,
                             headers={"X-Error-Code": code, "X-Error-Message": message})

    def api_search(self, req: Request) -> Response:
        found = self.search(req.arg("search"))
        if req.arg("direction") == "1":
            found.reverse()
        limit = max(1, min(req.int_arg("limit", 1000), 1000, PAGE_SIZE))
        try:
            skip = json.loads(base64.urlsafe_b64decode(req.arg("cursor", "e30=").encode()))["$skip"]
        except (ValueError, KeyError, TypeError):
            skip = 0
        page = found[skip: skip + limit]
        full = req.arg("full").lower() in ("true", "1")
        items = []
        for m in page:
            item: dict[str, object] = {
                "_id": m.object_id, "id": m.id, "likes": m.likes, "trendingScore": 0,
                "private": False, "downloads": m.downloads, "tags": m.tags,
                "pipeline_tag": m.pipeline_tag, "library_name": m.library_name,
                "createdAt": iso_z(m.created, ".000"), "modelId": m.id}
            if full:
                item.update({"author": m.id.split("/")[0], "sha": m.sha,
                             "lastModified": iso_z(m.modified, ".000"),
                             "gated": "manual" if m.gated else False, "disabled": False,
                             "siblings": [{"rfilename": f.path} for f in m.files]})
            items.append({k: v for k, v in item.items() if v is not None})
        headers = {}
        if skip + limit < len(found):
            cursor = base64.urlsafe_b64encode(json.dumps({"$skip": skip + limit}).encode()).decode()
            query = {k: v[0] for k, v in req.query.items() if k != "cursor"}
            query["cursor"] = cursor
            headers["Link"] = f'<{self.root}/api/models?{urlencode(query)}>; rel="next"'
        return json_response(items, headers=headers)

    def info(self, req: Request, m: Model) -> Response:
        blobs = m.blobs and req.arg("blobs").lower() in ("true", "1")
        siblings = []
        for f in m.files:
            sib: dict[str, object] = {"rfilename": f.path}
            if blobs:
                sib.update({"blobId": f.blob_id, "size": f.size})
                if f.lfs:
                    sib["lfs"] = {"sha256": f.lfs[0], "size": f.lfs[1],
                                  "pointerSize": len(lfs_pointer(*f.lfs))}
            siblings.append(sib)
        info: dict[str, object] = {
            "_id": m.object_id, "id": m.id, "private": False, "pipeline_tag": m.pipeline_tag,
            "library_name": m.library_name, "tags": m.tags, "downloads": m.downloads,
            "likes": m.likes, "modelId": m.id, "author": m.id.split("/")[0], "sha": m.sha,
            "lastModified": iso_z(m.modified, ".000"), "gated": "manual" if m.gated else False,
            "disabled": False, "widgetData": [{"text": "My name is Julien and I like to"}]
            if m.pipeline_tag == "text-generation" else None,
            "model-index": None, "config": m.config, "cardData": m.card or None,
            "siblings": siblings, "spaces": [], "createdAt": iso_z(m.created, ".000"),
            "usedStorage": sum(f.size for f in m.files)}
        return json_response({k: v for k, v in info.items() if v is not None})

    def tree(self, req: Request, m: Model, sub: str) -> Response:
        recursive = req.arg("recursive").lower() in ("true", "1")
        entries: list[dict[str, object]] = []
        dirs: list[str] = []
        for f in m.files:
            parts = f.path.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.append(d)
        for d in dirs:
            if recursive or "/" not in d:
                entries.append({"type": "directory", "oid": _git_blob(d.encode()), "size": 0,
                                "path": d})
        for f in m.files:
            if not recursive and "/" in f.path:
                continue
            entry: dict[str, object] = {"type": "file", "oid": f.blob_id, "size": f.size,
                                        "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.lfs[0], "size": f.lfs[1],
                                "pointerSize": len(lfs_pointer(*f.lfs))}
            entries.append(entry)
        return json_response(entries)

    def resolve(self, m: Model, rest: str) -> Response:
        _rev, _, path = rest.partition("/")
        for f in m.files:
            if f.path == path:
                if f.lfs:
                    # As the Hub does (and huggingface_hub reads): the redirect states the
                    # file's SHA-256, quoted, and its size, so a client knows the file
                    # without following it to the CDN.
                    return Response(302, b"", "text/plain; charset=utf-8", {
                        "Location": f"{self.root}/cdn-lfs/repos/{f.lfs[0][:2]}/"
                                    f"{f.lfs[0]}",
                        "X-Repo-Commit": m.sha, "X-Linked-Etag": f'"{f.lfs[0]}"',
                        "X-Linked-Size": str(f.lfs[1])})
                return Response(200, f.data or b"", "text/plain; charset=utf-8",
                                {"ETag": f'"{f.blob_id}"', "X-Repo-Commit": m.sha})
        return self.error(404, "Entry not found", "EntryNotFound")

    def page(self, m: Model) -> Response:
        files = "".join(f"<li>{esc(f.path)} <span>{f.size} bytes</span></li>" for f in m.files)
        gated = "<p>You need to agree to share your contact information to access this model.</p>" \
            if m.gated else ""
        return html_response(f"<!DOCTYPE html><html><head><title>{esc(m.id)} · Hugging Face"
                             f"</title></head><body><h1>{esc(m.id)}</h1>{gated}<ul>{files}</ul>"
                             "</body></html>\n")


