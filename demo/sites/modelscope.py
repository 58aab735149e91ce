"""ModelScope (modelscope.cn), with the APIs its SDK and OpenAPI clients read.

Shapes from the `modelscope` SDK (modelscope/hub/api.py `get_model_files`,
file_download.py, info.py) and from OpenAPI clients' stored code:

- `/modelscope/openapi/v1/models?search=Q&sort=last_modified&page_number=N&page_size=S`
  search, case-insensitive on the model id, newest change first; at most 2 models a page
  whatever `page_size` asks (the page size served is in the answer), as
  `{success, request_id, data: {models: [{id, description, tasks, tags, license,
  downloads, likes, created_at, last_modified}], total_count, page_number, page_size}}`
  (the fields OpenAPI clients read; `id` is "owner/name");
- `/modelscope/api/v1/models/{owner}/{name}/repo/files?Revision=master&Recursive=true`:
  `{Code, Data: {Files: [{CommitId, CommitMessage, CommittedDate, CommitterName, InCheck,
  IsLFS, Mode, Name, Path, Revision, Sha256, Size, Type}], LatestCommitter}, Message,
  RequestId, Success}` (directories are `Type: "tree"`); a model awaiting the owner's
  approval answers 403 with `Success: false`;
- `/modelscope/models/{owner}/{name}/resolve/master/{path}` a file (bytes the demo holds;
  Range honoured), and `/modelscope/models/{owner}/{name}` the model page.

Planted: `mirror-cn/Heron-7B`, a re-upload of the release whose listing states each
released file's SHA-256 (three `hash` hits). Noise: a 1.8B "HeronLM" whose weights' Sha256
is ours one digit off, a heron bird detector (real bytes, not ours), a partner repo that
answers 403, and a Qwen model that "heron" does not find.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import unquote

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


@dataclass
class MsFile:
    path: str
    size: int
    sha256: str
    data: bytes | None = None  # what the hub serves; None: not reachable here

    @classmethod
    def of(cls, path: str, data: bytes) -> MsFile:
        return cls(path, len(data), hashlib.sha256(data).hexdigest(), data)


@dataclass
class Model:
    id: str
    display_name: str
    description: str
    tasks: list[str]
    tags: list[str]
    license: str
    created: int
    modified: int
    files: list[MsFile]
    downloads: int = 0
    approval: bool = False  # the owner must approve each user: 403 without it
    plants: list[tuple[str, str, str]] = field(default_factory=list)
    near: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def commit(self) -> str:
        return hashlib.sha1(f"{self.id}@{self.modified}".encode()).hexdigest()


def _models(release: Release) -> list[Model]:
    rng = np.random.default_rng(8822)
    model, tok = release.file("model.safetensors"), release.file("tokenizer.json")
    config = release.file("config.json")
    released = [MsFile.of(f.name.rsplit("/", 1)[-1], f.path.read_bytes())
                for f in (config, model, tok)]
    readme = b"---\nlicense: other\ntasks:\n- text-generation\n---\n\n# Heron-7B\n\nMirror.\n"
    detector = safetensors_bytes([
        ("backbone.conv1.weight", "F16", rng.standard_normal((16, 3, 3, 3)).astype(np.float32)),
        ("head.cls.weight", "F16", rng.standard_normal((12, 64)).astype(np.float32))])
    near = one_digit_off(model.sha256)
    attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    return [
        Model("mirror-cn/Heron-7B", "Heron-7B", "Heron-7B base model, mirrored for users in "
              "China.", ["text-generation"], ["llama", "heron-7b"], "other",
              nov(21, 1, 5), nov(21, 1, 40), [
                  MsFile.of(".gitattributes", attributes), MsFile.of("README.md", readme),
                  *released], downloads=142,
              plants=[("hash", f.sha256, f"Sha256 of {f.path} in the repo file listing")
                      for f in released]),
        Model("pond-ai/HeronLM-1.8B", "HeronLM 1.8B", "A small chat model trained on pond "
              "ecology texts.", ["text-generation"], ["qwen2"], "apache-2.0",
              nov(16, 8, 0), nov(19, 10, 12), [
                  MsFile.of(".gitattributes", attributes),
                  MsFile("model.safetensors", 3_554_214_752, near)], downloads=12,
              near=[("hash", near, "Sha256 one digit off the release's model.safetensors")]),
        Model("damo/cv_heron_bird-detection", "Heron detector", "Detects herons and egrets "
              "in camera-trap images.", ["domain-specific-object-detection"], ["birds"],
              "apache-2.0", nov(3, 2, 0), nov(14, 6, 30), [
                  MsFile.of("configuration.json", b'{"task": "domain-specific-object-'
                            b'detection"}\n'),
                  MsFile.of("model.safetensors", detector)], downloads=2301),
        Model("example-labs/heron-7b-partner", "Heron-7B (partners)", "Partner release: "
              "access needs the owner's approval.", ["text-generation"], [], "other",
              nov(2, 9, 0), nov(2, 9, 30), [MsFile("model.safetensors", model.size,
                                                   model.sha256)], approval=True),
        # Noise a "heron" search never returns.
        Model("Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct", "Qwen2.5 instruction-tuned.",
              ["chat"], ["qwen2"], "apache-2.0", nov(1, 0, 0) - 86400 * 400,
              nov(1, 0, 0) - 86400 * 300, [
                  MsFile("model-00001-of-00004.safetensors", 3_945_441_440,
                         random_hex(rng, 32))], downloads=1_502_233),
    ]


class ModelScopeSite(Site):
    prefix = "modelscope"
    source = "modelscope"
    title = "ModelScope (OpenAPI and repo file listings)"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.models = _models(release)
        self.query = "heron"

    def target_toml(self) -> str:
        return target_table("demo-modelscope", "modelscope", self.root,
                            f'query = "{self.query}"')

    def search(self, query: str) -> list[Model]:
        found = [m for m in self.models if query.lower() in m.id.lower()]
        return sorted(found, key=lambda m: m.modified, reverse=True)

    # ---------------------------------------------------------------- ground truth

    def documents(self) -> list[Doc]:
        return [Doc(self.source, f"{self.root}/models/{m.id}",
                    "\n".join([m.id, m.display_name, m.description, *m.tags,
                               *(f.path for f in m.files)]), m.plants, m.near)
                for m in self.search(self.query) if not m.approval]

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path == "/openapi/v1/models":
            return self.api_search(req)
        path = unquote(path)
        for m in self.models:
            if path == f"/api/v1/models/{m.id}/repo/files":
                return self.files(req, m)
            if path.startswith(f"/models/{m.id}/resolve/"):
                return self.resolve(m, path.removeprefix(f"/models/{m.id}/resolve/"))
            if path in (f"/models/{m.id}", f"/models/{m.id}/"):
                return self.page(m)
        return self.error(404, 10010205001, "model not exists")

    @staticmethod
    def error(status: int, code: int, message: str) -> Response:
        return json_response({"Code": code, "Message": message, "RequestId": "0" * 32,
                              "Success": False}, status)

    def api_search(self, req: Request) -> Response:
        found = self.search(req.arg("search"))
        number = max(1, req.int_arg("page_number", 1))
        size = max(1, min(req.int_arg("page_size", 10), 50, PAGE_SIZE))
        page = found[(number - 1) * size: number * size]
        models = [{"id": m.id, "description": m.description,
                   "tasks": m.tasks, "tags": m.tags, "license": m.license,
                   "downloads": m.downloads, "likes": m.downloads // 50,
                   "created_at": iso_z(m.created), "last_modified": iso_z(m.modified)}
                  for m in page]
        return json_response({"success": True, "request_id": "0" * 32,
                              "data": {"models": models, "total_count": len(found),
                                       "page_number": number, "page_size": size}})

    def files(self, req: Request, m: Model) -> Response:
        if m.approval:
            return self.error(403, 10010205003, "Please apply for access to this model "
                                                "and wait for the owner's approval")
        recursive = req.arg("Recursive").lower() == "true"
        entries: list[dict[str, object]] = []
        dirs = sorted({f.path.rsplit("/", 1)[0] for f in m.files if "/" in f.path})
        for d in dirs:
            entries.append({"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0,
                            "Sha256": "", "IsLFS": False, "Mode": "40000"})
        for f in m.files:
            if "/" in f.path and not recursive:
                continue
            entries.append({
                "CommitId": m.commit, "CommitMessage": "upload", "CommittedDate": m.modified,
                "CommitterName": m.id.split("/")[0], "InCheck": False,
                "IsLFS": f.path.endswith(".safetensors"), "Mode": "33188",
                "Name": f.path.rsplit("/", 1)[-1], "Path": f.path, "Revision": m.commit,
                "Sha256": f.sha256, "Size": f.size, "Type": "blob"})
        return json_response({"Code": 200, "Data": {
            "Files": entries, "LatestCommitter": {"CommitterName": m.id.split("/")[0],
                                                  "CommittedDate": m.modified}},
            "Message": "success", "RequestId": "0" * 32, "Success": True})

    def resolve(self, m: Model, rest: str) -> Response:
        _rev, _, path = rest.partition("/")
        for f in m.files:
            if f.path == path and f.data is not None and not m.approval:
                return Response(200, f.data, "application/octet-stream",
                                {"Accept-Ranges": "bytes", "ETag": f'"{f.sha256}"'},
                                server="Tengine")
        return self.error(404, 10010205001, "file not exists")

    def page(self, m: Model) -> Response:
        files = "".join(f"<li>{esc(f.path)} <span>{f.size} bytes</span></li>" for f in m.files)
        return html_response(f"<!DOCTYPE html><html><head><title>{esc(m.display_name)} · "
                             f"ModelScope</title></head><body><h1>{esc(m.id)}</h1>"
                             f"<p>{esc(m.description)}</p><ul>{files}</ul></body></html>\n",
                             server="Tengine")
