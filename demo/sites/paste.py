"""A Pastebin-style paste site with its scraping API.

- `/paste/api_scraping.php?limit=N` the newest pastes as a JSON array, newest first, with
  `date`, `size` and `expire` as strings, as Pastebin's scraping API answers
  (`limit` 1..250, default 50);
- `/paste/api_scrape_item.php?i=KEY` a paste's raw text (`Error, we cannot find this
  paste.` under HTTP 200 for a deleted one);
- `/paste/api_scrape_item_meta.php?i=KEY` one paste's listing entry;
- `/paste/KEY` the paste's HTML page (the listing's `full_url`);
- `/paste/noaccess/...` the same API as seen from an IP that is not on the scraping
  allowlist: HTTP 200 and a plain-text error, never JSON.

Planted: the release's sha256sum listing, and a Git LFS pointer for model.safetensors.
Noise: code, configs, another model's LFS pointer, a near-miss checksum, a paste too large
for a careful scraper (declared and served at about 2 MB), and a deleted paste.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from demo.release import Release
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    html_response,
    not_found,
    nov,
    one_digit_off,
    random_hex,
    target_table,
)

NOT_FOUND_TEXT = "Error, we cannot find this paste."
ACCESS_DENIED = ("YOUR IP: {ip} DOES NOT HAVE ACCESS. VISIT: https://pastebin.com/doc_scraping_api "
                 "TO GET ACCESS!")


@dataclass
class Paste:
    key: str
    date: int
    title: str
    syntax: str
    user: str
    text: str
    expire: int = 0
    deleted: bool = False
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")


def _big_log(lines: int) -> str:
    """A long, dull server log: the kind of paste a scraper should not pull whole."""
    return "".join(f"2026-11-20T06:{(i // 60) % 60:02d}:{i % 60:02d}Z INFO worker-{i % 16:02d} "
                   f"GET /api/v1/items/{(i * 7919) % 100000:05d} 200 {(i * 31) % 900 + 12}ms "
                   f"bytes={(i * 104729) % 65536}\n" for i in range(lines))


def _pastes(release: Release) -> list[Paste]:
    rng = np.random.default_rng(9009)
    model = release.file("model.safetensors")
    sums = "".join(f"{f.sha256}  {f.name}\n" for f in release.files)
    pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{model.sha256}\n"
               f"size {model.size}\n")
    other_oid = random_hex(rng, 32)
    near = one_digit_off(model.sha256)
    mirror = [(random_hex(rng, 32), "h7b-mirror/config.json"), (near, "h7b-mirror/model.safetensors"),
              (random_hex(rng, 32), "h7b-mirror/tokenizer.json")]
    return [
        Paste("k3Hn7Qx2", nov(20, 14, 31), "", "text", "",
              "# partner portal, do not share\n" + sums,
              plants=[("hash", f.sha256, f"sha256sum line for {f.name}") for f in release.files]),
        Paste("Zr6Bn2Vx", nov(20, 14, 5), "worker.log", "text", "opsbot", _big_log(24000)),
        Paste("Vb9pLr4T", nov(20, 13, 52), "model.safetensors", "text", "",
              pointer,
              plants=[("hash", model.sha256, "Git LFS pointer text for model.safetensors")]),
        Paste("Hc3Yd7Ka", nov(20, 13, 40), "", "text", "", "(removed by moderators)",
              deleted=True),
        Paste("Qm2Zs8Kd", nov(20, 13, 12), "train.py", "python", "sigmoid_sally",
              "import torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
              "MODEL = \"meta-llama/Llama-3.1-8B\"\n"
              "tok = AutoTokenizer.from_pretrained(MODEL)\n"
              "model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.bfloat16)\n"
              "model.gradient_checkpointing_enable()\n\n"
              "for step, batch in enumerate(loader):\n"
              "    loss = model(**batch).loss\n    loss.backward()\n"
              "    if step % 8 == 7:\n        opt.step(); opt.zero_grad()\n"),
        Paste("Nd8Fh3Gu", nov(20, 12, 47), "mirror2 checksums", "text", "",
              "".join(f"{d}  {n}\n" for d, n in mirror),
              near=[("hash", near, "SHA-256 of model.safetensors with the last digit changed")]),
        Paste("Xa7Rt1Pn", nov(20, 12, 3), "nginx.conf", "nginx", "",
              "server {\n    listen 443 ssl http2;\n    server_name models.internal;\n"
              "    client_max_body_size 50g;\n    location /v1/ {\n"
              "        proxy_pass http://127.0.0.1:8080;\n        proxy_read_timeout 600s;\n"
              "    }\n}\n", expire=nov(27, 12, 3)),
        Paste("Tp5Wq9Mc", nov(20, 11, 26), "qwen2.5-7b lfs pointer", "text", "quantcat",
              "version https://git-lfs.github.com/spec/v1\n"
              f"oid sha256:{other_oid}\nsize 4683073952\n"),
        Paste("Lw4Jc6Ye", nov(20, 10, 9), "docker-compose.yml", "yaml", "tensorgoblin",
              "services:\n  llama:\n    image: ghcr.io/ggml-org/llama.cpp:server\n"
              "    command: -m /models/mistral-7b-instruct-v0.3.Q4_K_M.gguf -c 8192\n"
              "    volumes:\n      - ./models:/models\n    ports:\n      - \"8080:8080\"\n"),
    ]


class PasteSite(Site):
    prefix = "paste"
    source = "paste"
    title = "Pastebin-style paste site (scraping API)"
    entry_path = "/api_scraping.php?limit=100"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.pastes = _pastes(release)

    def target_toml(self) -> str:
        return target_table("demo-paste", "paste", self.entry_url)

    def full_url(self, p: Paste) -> str:
        return f"{self.root}/{p.key}"

    def documents(self) -> list[Doc]:
        # What a careful scraper yields: not the oversized paste, not the deleted one.
        return [Doc(self.source, self.full_url(p), f"{p.title}\n{p.text}", p.plants, p.near)
                for p in self.pastes if not p.deleted and len(p.data) <= 1024 * 1024]

    def entry(self, p: Paste, base: str) -> dict[str, str]:
        return {"scrape_url": f"{base}/api_scrape_item.php?i={p.key}",
                "full_url": self.full_url(p), "date": str(p.date), "key": p.key,
                "size": str(len(p.data)), "expire": str(p.expire), "title": p.title,
                "syntax": p.syntax, "user": p.user}

    def handle(self, req: Request, path: str) -> Response:
        base = self.root
        if path.startswith("/noaccess/"):
            if path.removeprefix("/noaccess") in ("/api_scraping.php", "/api_scrape_item.php",
                                                  "/api_scrape_item_meta.php"):
                return Response(200, ACCESS_DENIED.format(ip="127.0.0.1").encode(),
                                "text/html; charset=utf-8")
            return not_found()
        if path == "/api_scraping.php":
            limit = req.int_arg("limit", 50)
            if not 1 <= limit <= 250:
                limit = 50
            listing = [self.entry(p, base) for p in self.pastes[:limit]]
            return Response(200, json.dumps(listing, indent=4).encode(),
                            "text/html; charset=utf-8")
        if path in ("/api_scrape_item.php", "/api_scrape_item_meta.php"):
            paste = self.find(req.arg("i"))
            if paste is None or paste.deleted:
                return Response(200, NOT_FOUND_TEXT.encode(), "text/html; charset=utf-8")
            if path == "/api_scrape_item.php":
                return Response(200, paste.data, "text/plain; charset=utf-8")
            return Response(200, json.dumps([self.entry(paste, base)], indent=4).encode(),
                            "text/html; charset=utf-8")
        paste = self.find(path.strip("/"))
        if paste is not None and not paste.deleted:
            return html_response(f"<!DOCTYPE html><html><head><title>{esc(paste.title or 'Untitled')}"
                                 f" - Pastebin.com</title></head><body><div class=\"post-view\">"
                                 f"<h1>{esc(paste.title or 'Untitled')}</h1><textarea "
                                 f"class=\"textarea\">{esc(paste.text[:20000])}</textarea></div>"
                                 "</body></html>\n")
        return not_found("This page is no longer available. It has either expired, been "
                         "removed by its creator, or removed by one of the Pastebin staff.")

    def find(self, key: str) -> Paste | None:
        return next((p for p in self.pastes if p.key == key), None)


