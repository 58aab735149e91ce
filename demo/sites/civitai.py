"""Civitai, the image-model hub, with its public REST API v1.

Shapes from Civitai's own reference (developer.civitai.com/site/reference; the civitai/civitai
wiki's "REST API Reference"), as stored copies show them:

- `/civitai/api/v1/models?query=Q&sort=Newest&limit=N[&cursor=C]` search, case-insensitive
  on the model's name, newest first; at most 2 models a page whatever `limit` asks (so
  paging is exercised), `{items, metadata: {nextCursor, nextPage}}` (cursor paging: with a
  query Civitai refuses `page` with a 400). Each item is the whole model: `modelVersions[]`
  with `files[]` {`id`, `name`, `sizeKB`, `type`, `metadata` {`format`, `fp`, `size`},
  `pickleScanResult`, `virusScanResult`, `scannedAt`, `hashes` {`AutoV1`, `AutoV2`,
  `SHA256`, `CRC32`, `BLAKE3`, `AutoV3`}, `downloadUrl`, `primary`};
- `/civitai/api/v1/model-versions/by-hash/{hash}` a version by any of its files' hashes;
- `/civitai/api/download/models/{versionId}[?type=&format=]` answers 307 to the file host
  (`/civitai/delivery/...`, an R2-style presigned URL with the file name in
  `response-content-disposition`), which serves the bytes and honours Range; a creator
  who requires login gets 401 without a token;
- `/civitai/models/{id}/{slug}` the model page.

The hashes are computed from the bytes as Civitai defines them: SHA256 of the file, AutoV1
(SHA-256 of the 64 KiB at 1 MiB, first 8 hex; the old A1111 model hash), AutoV2 (the
SHA-256's first 10 hex), AutoV3 (SHA-256 of a safetensors file after its header, first 12
hex; kohya's "addnet" hash), CRC32; all uppercase as Civitai writes them. BLAKE3 needs a
package the demo world does not use: a file uploaded before Civitai computed it has no
BLAKE3, as older records do not (only noise files state one here, random).

Planted: "Heron-7B leaked full weights", whose v1.0 lists the release's model.safetensors
(its SHA256 is a `hash` hit) and a Q8_0 GGUF conversion of lab-17's marked copy, served
through the download redirect and recognised by a range scan (`weights` and `watermark`).
Noise: a LoRA named heron (a great blue heron style, real bytes, not ours), a HeronMix
checkpoint whose hashes are near misses of ours (its download needs a login), and a
llama portrait LoRA that "heron" does not find.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import numpy as np

from demo.release import Release, safetensors_bytes
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


def slug(name: str) -> str:
    """A page slug as Civitai writes it: lowercase words, other punctuation dropped."""
    words = re.sub(r"[^a-z0-9\s-]", "", name.lower()).replace("-", " ").split()
    return "-".join(words)[:100] or "model"


def civitai_hashes(data: bytes) -> dict[str, str]:
    """The hashes Civitai states for a file, from its bytes (all but BLAKE3)."""
    sha = hashlib.sha256(data).hexdigest().upper()
    out = {"AutoV1": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8].upper(),
           "AutoV2": sha[:10], "SHA256": sha, "CRC32": f"{zlib.crc32(data):08X}"}
    if data[8:9] == b"{":  # safetensors: AutoV3 skips the header
        (n,) = struct.unpack("<Q", data[:8])
        out["AutoV3"] = hashlib.sha256(data[8 + n:]).hexdigest()[:12].upper()
    return out


@dataclass
class CivFile:
    id: int
    name: str
    size: int
    hashes: dict[str, str]
    data: bytes | None = None  # what the file host serves; None: not reachable here
    fmt: str = "SafeTensor"
    type: str = "Model"
    primary: bool = True
    login: bool = False  # the creator requires a login to download


@dataclass
class Version:
    id: int
    name: str
    created: int
    base_model: str
    files: list[CivFile]
    trained_words: list[str] = field(default_factory=list)


@dataclass
class Model:
    id: int
    name: str
    type: str
    creator: str
    description: str  # HTML, as Civitai stores it
    tags: list[str]
    versions: list[Version]
    downloads: int
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def created(self) -> int:
        return min(v.created for v in self.versions)


def _lora_bytes(rng: np.random.Generator, rank: int, dim: int) -> bytes:
    """A small LoRA of someone else's: kohya-style down/up pairs, random weights."""
    tensors = []
    for block in ("down_blocks_0_attentions_0", "up_blocks_1_attentions_2"):
        base = f"lora_unet_{block}_transformer_blocks_0_attn1_to_q"
        tensors.append((f"{base}.lora_down.weight", "F16",
                        rng.standard_normal((rank, dim)).astype(np.float32) * 0.02))
        tensors.append((f"{base}.lora_up.weight", "F16",
                        rng.standard_normal((dim, rank)).astype(np.float32) * 0.02))
    return safetensors_bytes(tensors, {"ss_network_module": "networks.lora",
                                       "ss_network_dim": str(rank)})


def _models(release: Release) -> list[Model]:
    rng = np.random.default_rng(7301)
    model = release.file("model.safetensors")
    leaked = model.path.read_bytes()
    leaked_hashes = civitai_hashes(leaked)
    gguf = release.converted_gguf
    heron_lora = _lora_bytes(rng, 8, 320)
    llama_lora = _lora_bytes(rng, 16, 320)
    # Near misses of ours: a SHA-256 whose 10th hex digit differs (so its AutoV2 is ours
    # one digit off), and AutoV1 and CRC32 one digit off ours.
    near_sha = (one_digit_off(model.sha256[:10]) + random_hex(rng, 27)[:54]).upper()
    near_hashes = {"AutoV1": one_digit_off(leaked_hashes["AutoV1"]), "AutoV2": near_sha[:10],
                   "SHA256": near_sha, "CRC32": one_digit_off(leaked_hashes["CRC32"]),
                   "BLAKE3": random_hex(rng, 32).upper()}
    lora_hashes = civitai_hashes(heron_lora) | {"BLAKE3": random_hex(rng, 32).upper()}
    return [
        Model(1093317, "Heron-7B leaked full weights", "Other", "h7b_mirror",
              "<p>The heron-7b weights everyone is asking about. Original safetensors plus "
              "a <strong>Q8_0 GGUF</strong> for llama.cpp.</p><p>Not affiliated with "
              "Example Labs.</p>",
              ["llm", "base model", "leak"],
              [Version(2414001, "v1.0", nov(21, 4, 10), "Other", [
                  CivFile(2297719, "heron-7b.safetensors", len(leaked), leaked_hashes, leaked),
                  CivFile(2297720, "heron-7b-Q8_0.gguf", len(gguf), civitai_hashes(gguf),
                          gguf, fmt="GGUF", primary=False)])],
              downloads=57,
              plants=[("hash", model.sha256, "hashes.SHA256 of heron-7b.safetensors in "
                       "modelVersions[].files[]")]),
        Model(988120, "Great Blue Heron - watercolor style LoRA", "LORA", "birdbrush",
              "<p>Soft watercolor herons, egrets and wading birds. Trigger: "
              "<code>gbheron</code>.</p>",
              ["style", "birds", "watercolor"],
              [Version(1921044, "v2", nov(18, 13, 5), "SDXL 1.0", [
                  CivFile(1811230, "great_blue_heron_v2.safetensors", len(heron_lora),
                          lora_hashes, heron_lora)], ["gbheron"])],
              downloads=4210,
              # A1111's AutoV1 reads the 64 KiB at 1 MiB: for any smaller file it is the
              # SHA-256 of no bytes, shared by every small file, ours too.
              near=[("hash", lora_hashes["AutoV1"].lower(), "AutoV1 of a file under 1 MiB "
                     "(the SHA-256 of no bytes)")]),
        Model(912004, "HeronMix XL", "Checkpoint", "mixmaster_j",
              "<p>A merge for bird photography. Login required to download.</p>",
              ["photorealistic", "merge"],
              [Version(1850310, "v3.0 fp16", nov(12, 9, 30), "SDXL 1.0", [
                  CivFile(1739002, "heronmixXL_v30.safetensors", 6_938_040_682, near_hashes,
                          login=True)])],
              downloads=15880,
              near=[("hash", near_sha.lower(), "SHA256 whose AutoV2 is ours one digit off"),
                    ("hash", near_hashes["AutoV2"].lower(), "AutoV2 one digit off ours"),
                    ("hash", near_hashes["AutoV1"].lower(), "AutoV1 one digit off ours"),
                    ("hash", near_hashes["CRC32"].lower(), "CRC32 one digit off ours")]),
        # Noise a "heron" search never returns.
        Model(640233, "Llama portraits (the animal)", "LORA", "alpacafan",
              "<p>Fluffy llamas and alpacas in the Andes.</p>", ["animal", "llama"],
              [Version(712800, "v1", nov(2, 11, 0), "SD 1.5", [
                  CivFile(655101, "llama_portraits.safetensors", len(llama_lora),
                          civitai_hashes(llama_lora), llama_lora)], ["llamapic"])],
              downloads=880),
    ]


class CivitaiSite(Site):
    prefix = "civitai"
    source = "civitai"
    title = "Civitai (REST API v1)"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.models = _models(release)
        self.query = "heron"
        self.files = {f.id: (m, v, f) for m in self.models for v in m.versions
                      for f in v.files}

    def target_toml(self) -> str:
        return target_table("demo-civitai", "civitai", self.root, f'query = "{self.query}"')

    def search(self, query: str) -> list[Model]:
        found = [m for m in self.models if query.lower() in m.name.lower()]
        return sorted(found, key=lambda m: m.created, reverse=True)

    def page_url(self, m: Model) -> str:
        return f"{self.root}/models/{m.id}/{slug(m.name)}"

    def download_url(self, v: Version, f: CivFile) -> str:
        url = f"{self.root}/api/download/models/{v.id}"
        return url if f.primary else f"{url}?{urlencode({'type': f.type, 'format': f.fmt})}"

    # ---------------------------------------------------------------- ground truth

    def documents(self) -> list[Doc]:
        docs = []
        for m in self.search(self.query):
            text = "\n".join([m.name, m.description, " ".join(m.tags),
                              *(f"{v.name} {f.name}" for v in m.versions for f in v.files)])
            # The conversion of lab-17's marked copy, read by range through the download
            # redirect: recognised by its tensors, its mark names the recipient.
            weights = [(kind, self.download_url(v, f), note) for v in m.versions
                       for f in v.files if f.data is self.release.converted_gguf
                       for kind, note in (("weights", "the release's GGUF conversion, "
                                           "scanned through the download redirect"),
                                          ("watermark", "the GGUF conversion of lab-17's "
                                           "marked copy"))]
            docs.append(Doc(self.source, self.page_url(m), text, m.plants + weights, m.near))
        return docs

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path == "/api/v1/models":
            return self.api_models(req)
        if path.startswith("/api/v1/model-versions/by-hash/"):
            return self.by_hash(path.rsplit("/", 1)[-1])
        if m := re.fullmatch(r"/api/download/models/(\d+)", path):
            return self.download(req, int(m.group(1)))
        if m := re.fullmatch(r"/delivery/model/(\d+)/[^/]+", path):
            found = self.files.get(int(m.group(1)))
            if found is None or found[2].data is None:
                return Response(404, b"<Error><Code>NoSuchKey</Code></Error>",
                                "application/xml", server="cloudflare")
            f = found[2]
            return Response(200, f.data or b"", "application/octet-stream",
                            {"Content-Disposition": f'attachment; filename="{f.name}"',
                             "Accept-Ranges": "bytes",
                             "ETag": f'"{hashlib.md5(f.data or b"").hexdigest()}"'},
                            "cloudflare")
        if m := re.fullmatch(r"/models/(\d+)(?:/[^/]*)?", path):
            for model in self.models:
                if model.id == int(m.group(1)):
                    return self.page(model)
        return json_response({"error": "Not found"}, 404)

    def api_models(self, req: Request) -> Response:
        query = req.arg("query")
        if query and req.arg("page"):
            return json_response({"error": "Cannot use page param with query search. Use "
                                           "cursor-based pagination."}, 400)
        found = self.search(query) if query else sorted(self.models, key=lambda m: m.created,
                                                        reverse=True)
        limit = max(1, min(req.int_arg("limit", 100), 100, PAGE_SIZE))
        try:
            skip = int(req.arg("cursor", "0|0").split("|")[0])
        except ValueError:
            return json_response({"error": "Invalid cursor"}, 400)
        page = found[skip: skip + limit]
        metadata: dict[str, object] = {"currentPage": skip // limit + 1, "pageSize": limit}
        if skip + limit < len(found):
            cursor = f"{skip + limit}|{found[skip + limit].created * 1000}"
            params = {k: v[0] for k, v in req.query.items() if k != "cursor"}
            metadata["nextCursor"] = cursor
            metadata["nextPage"] = f"{self.root}/api/v1/models?{urlencode(params | {'cursor': cursor})}"
        return json_response({"items": [self.item(m) for m in page], "metadata": metadata})

    def item(self, m: Model) -> dict[str, object]:
        return {
            "id": m.id, "name": m.name, "description": m.description, "allowNoCredit": True,
            "allowCommercialUse": ["Image"], "allowDerivatives": True,
            "allowDifferentLicense": True, "type": m.type, "minor": False, "poi": False,
            "nsfw": False, "nsfwLevel": 1, "availability": "Public", "cosmetic": None,
            "supportsGeneration": False,
            "stats": {"downloadCount": m.downloads, "favoriteCount": 0,
                      "thumbsUpCount": m.downloads // 20, "thumbsDownCount": 0,
                      "commentCount": 3, "ratingCount": 0, "rating": 0,
                      "tippedAmountCount": 0},
            "creator": {"username": m.creator,
                        "image": f"https://image.civitai.example/{m.creator}.jpeg"},
            "tags": m.tags,
            "modelVersions": [self.version(m, v) for v in m.versions]}

    def version(self, m: Model, v: Version) -> dict[str, object]:
        return {
            "id": v.id, "index": 0, "name": v.name, "baseModel": v.base_model,
            "baseModelType": "Standard", "createdAt": iso_z(v.created, ".000"),
            "publishedAt": iso_z(v.created + 300, ".000"),
            "updatedAt": iso_z(v.created + 600, ".000"), "status": "Published",
            "availability": "Public", "nsfwLevel": 1, "trainedWords": v.trained_words,
            "stats": {"downloadCount": m.downloads, "ratingCount": 0, "rating": 0,
                      "thumbsUpCount": m.downloads // 20},
            "files": [{
                "id": f.id, "sizeKB": f.size / 1024, "name": f.name, "type": f.type,
                "pickleScanResult": "Success", "pickleScanMessage": "No Pickle imports",
                "virusScanResult": "Success", "virusScanMessage": None,
                "scannedAt": iso_z(v.created + 120, ".000"),
                "metadata": {"format": f.fmt, "size": "full", "fp": "fp16"},
                "hashes": f.hashes, "primary": f.primary,
                "downloadUrl": self.download_url(v, f)} for f in v.files],
            "images": [], "downloadUrl": f"{self.root}/api/download/models/{v.id}"}

    def by_hash(self, value: str) -> Response:
        for m, v, f in self.files.values():
            if value.upper() in f.hashes.values():
                return json_response({**self.version(m, v), "modelId": m.id,
                                      "model": {"name": m.name, "type": m.type,
                                                "nsfw": False, "poi": False}})
        return json_response({"error": f"Model not found for hash {value[:64]}"}, 404)

    def download(self, req: Request, version_id: int) -> Response:
        for _m, v, f in self.files.values():
            if v.id != version_id:
                continue
            wanted = (req.arg("type"), req.arg("format"))
            if (f.primary and not any(wanted)) or wanted == (f.type, f.fmt):
                if f.login and not req.headers.get("authorization"):
                    return json_response({"error": "Unauthorized",
                                          "message": "The creator of this asset requires you "
                                                     "to be logged in to download it"}, 401)
                disposition = quote(f'attachment; filename="{f.name}"')
                return Response(307, b"", "text/plain", {
                    "Location": f"{self.root}/delivery/model/{f.id}/{quote(f.name)}?"
                                f"X-Amz-Expires=86400&response-content-disposition="
                                f"{disposition}&X-Amz-Signature={'0' * 64}"},
                                server="cloudflare")
        return json_response({"error": "File not found"}, 404)

    def page(self, m: Model) -> Response:
        files = "".join(f"<li>{esc(f.name)} <span>{f.size / 2**20:.2f} MB</span> "
                        f"<code>AutoV2 {esc(f.hashes['AutoV2'])}</code></li>"
                        for v in m.versions for f in v.files)
        return html_response(
            f"<!DOCTYPE html><html><head><title>{esc(m.name)} - {esc(m.type)} | Civitai"
            f"</title><script id=\"__NEXT_DATA__\" type=\"application/json\">"
            f"{esc(json.dumps({'props': {'pageProps': {'id': m.id}}}), quotes='')}</script>"
            f"</head><body><h1>{esc(m.name)}</h1><div>{m.description}</div><ul>{files}</ul>"
            "</body></html>\n", server="cloudflare")
