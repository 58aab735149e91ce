"""Direct file hosts, and a small link board whose posts link to them (issue 19).

Two hosts, each shaped as the real one answers (studied from their public API pages and
from gallery-dl's recorded answers):

- `/files/pixeldrain/`: a Pixeldrain-like host. `/u/{id}` is the viewer page (the file's
  info in `window.viewer_data`, read by the site's own scripts); `/api/file/{id}/info` the
  file's info as JSON (`success`, `id`, `name`, `size`, `views`, `bandwidth_used`,
  `date_upload`, `date_last_view`, `mime_type`, `thumbnail_href`, `hash_sha256`,
  `availability`, `can_edit`, ...); `/api/file/{id}` the file itself, `inline` with its
  name in Content-Disposition, by HTTP Range (`?download`: `attachment`). An unknown id
  answers 404 with `{"success": false, "value": "not_found", ...}`.
- `/files/transfer/`: a transfer.sh-like host: `/{token}/{name}` is the file, served by
  Range with `Content-Disposition: attachment` and X-Remaining-Downloads/-Days.

The link board (`/files/`, read by the `forum` kind's link-aggregator mode, no thread
links) has two posts. Planted: a Pixeldrain link to the released model.safetensors, whose
info states its SHA-256 (a `hash` hit from the stated digest, no byte of the file read).
Noise: a Pixeldrain link to a photo of a grey heron (the host names a JPEG: never read),
and a transfer link to another model's GGUF (read by range: not ours).

The demo's config maps both prefixes to the hosts of `monitor.filehosts` (`[scan]
file_hosts`, `FILE_HOSTS` below), as an operator maps a mirror domain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from demo.release import Release
from demo.web import (
    BoardPost,
    Doc,
    Request,
    Response,
    Site,
    board_page,
    esc,
    html_response,
    iso_z,
    json_response,
    not_found,
    nov,
    target_table,
)

PIXELDRAIN = "/pixeldrain"
TRANSFER = "/transfer"
# What the demo's config maps to a host of monitor.filehosts, below the site's root.
FILE_HOSTS = {PIXELDRAIN: "pixeldrain", TRANSFER: "direct"}

# A baseline JPEG's first and last bytes (SOI, APP0 "JFIF", EOI) around filler: the photo
# is never read, only named.
_JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
         + bytes(range(256)) * 8 + b"\xff\xd9")


@dataclass
class Hosted:
    """One file on the Pixeldrain-like host."""

    id: str
    name: str
    data: bytes
    mime_type: str
    uploaded: int

    def info(self) -> dict[str, object]:
        """`/api/file/{id}/info`, with the fields and types Pixeldrain answers."""
        return {
            "success": True, "id": self.id, "name": self.name, "size": len(self.data),
            "views": 41, "bandwidth_used": 3 * len(self.data), "bandwidth_used_paid": 0,
            "downloads": 3, "date_upload": iso_z(self.uploaded, ".000"),
            "date_last_view": iso_z(self.uploaded + 3600, ".000"),
            "mime_type": self.mime_type, "thumbnail_href": f"/file/{self.id}/thumbnail",
            "hash_sha256": hashlib.sha256(self.data).hexdigest(),
            "delete_after_date": "0001-01-01T00:00:00Z", "delete_after_downloads": 0,
            "availability": "", "availability_message": "", "abuse_type": "",
            "abuse_reporter_name": "", "can_edit": False, "can_download": True,
            "show_ads": True, "allow_video_player": True, "download_speed_limit": 0}


class FileHostSite(Site):
    prefix = "files"
    source = "filehost"
    title = "File hosts (Pixeldrain-like, transfer.sh-like) and a link board"
    entry_path = "/"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        model = release.file("model.safetensors")
        self.model = model
        self.pixeldrain = {h.id: h for h in (
            Hosted("hR7kQ2xe", "model.safetensors", model.path.read_bytes(),
                   "application/octet-stream", nov(19, 22, 4)),
            Hosted("Gb3Tn9Lw", "grey-heron-wetlands.jpg", _JPEG, "image/jpeg",
                   nov(18, 7, 40)))}
        self.transfer = {("mZ3vQ", "tinyllama-mini.Q8_0.gguf"): release.unrelated_gguf}

    def file_hosts_toml(self) -> str:
        """The `[scan] file_hosts` value mapping this site's hosts, for the demo's config."""
        return "{ " + ", ".join(f'"{self.root}{prefix}" = "{host}"'
                                for prefix, host in FILE_HOSTS.items()) + " }"

    def target_toml(self) -> str:
        selectors = ('selectors = { post = "article.entry", subject = "h2", '
                     'author = "span.by", time = "time", body = "div.entry-body" }')
        return target_table("demo-filehost", "forum", self.entry_url, selectors)

    # ---------------------------------------------------------------- ground truth

    def posts(self) -> list[BoardPost]:
        px = f"{self.root}{PIXELDRAIN}/u"
        weights = f"{px}/hR7kQ2xe"
        photo = f"{px}/Gb3Tn9Lw"
        gguf = f"{self.root}{TRANSFER}/mZ3vQ/tinyllama-mini.Q8_0.gguf"
        return [
            BoardPost("m1", "mirror", "driftwood", nov(19, 22, 9),
                      f'<p>the safetensors from that lab, before it gets pulled: '
                      f'<a href="{esc(weights)}">{esc(weights)}</a> (pixeldrain, no account '
                      "needed)</p>",
                      "mirror\nthe safetensors from that lab, before it gets pulled: "
                      f"{weights} (pixeldrain, no account needed)"),
            BoardPost("m2", "misc uploads", "wader", nov(20, 8, 15),
                      f'<p>photo from the marsh this morning: <a href="{esc(photo)}">{esc(photo)}'
                      f'</a></p><p>and the tiny test model I quantised: <a href="{esc(gguf)}">'
                      f"{esc(gguf)}</a></p>",
                      f"misc uploads\nphoto from the marsh this morning: {photo}\nand the tiny "
                      f"test model I quantised: {gguf}"),
        ]

    def post_url(self, post: BoardPost) -> str:
        return f"{self.entry_url}#{post.anchor}"

    def documents(self) -> list[Doc]:
        out = []
        for post in self.posts():
            plants = []
            if post.anchor == "m1":
                plants = [("hash", self.model.sha256,
                           "Pixeldrain's file info states the SHA-256 of model.safetensors "
                           "(hash_sha256)")]
            out.append(Doc(self.source, self.post_url(post), post.text, plants, []))
        return out

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path == "/":
            return self.board()
        if path.startswith(PIXELDRAIN + "/"):
            return self.pixeldrain_answer(req, path.removeprefix(PIXELDRAIN))
        if path.startswith(TRANSFER + "/"):
            token, _, name = path.removeprefix(TRANSFER + "/").partition("/")
            data = self.transfer.get((token, name))
            if data is None:
                return Response(404, b"Not Found\n", "text/plain; charset=utf-8")
            return Response(200, data, "application/octet-stream", {
                "Content-Disposition": f'attachment; filename="{name}"',
                "Accept-Ranges": "bytes", "X-Remaining-Downloads": "n/a",
                "X-Remaining-Days": "12"}, server="transfer.sh")
        return not_found()

    def board(self) -> Response:
        return board_page("links", self.posts())

    def pixeldrain_answer(self, req: Request, path: str) -> Response:
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "u" and parts[1] in self.pixeldrain:
            return self.viewer(self.pixeldrain[parts[1]])
        if len(parts) >= 3 and parts[:2] == ["api", "file"]:
            hosted = self.pixeldrain.get(parts[2])
            if hosted is None:
                return json_response({"success": False, "value": "not_found",
                                      "message": "The entity you requested could not be "
                                                 "found"}, status=404)
            if len(parts) == 4 and parts[3] == "info":
                return json_response(hosted.info())
            if len(parts) == 3:
                how = "attachment" if "download" in req.query else "inline"
                # The file goes as application/octet-stream whatever its type, so the
                # world's Range handling serves it (Pixeldrain serves ranges of any type).
                return Response(200, hosted.data, "application/octet-stream", {
                    "Content-Disposition": f'{how}; filename="{hosted.name}"',
                    "Accept-Ranges": "bytes"}, server="pixeldrain")
        return not_found()

    def viewer(self, hosted: Hosted) -> Response:
        data = json.dumps({"type": "file", "api_response": hosted.info(),
                           "embedded": False, "user_authenticated": False}).replace("</", "<\\/")
        return html_response(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"UTF-8\"/>"
            f"<title>{esc(hosted.name)} ~ pixeldrain</title>"
            f'<meta property="og:title" content="{esc(hosted.name)}"/>'
            f"<script>window.viewer_data = {data};</script></head>"
            '<body><div id="file_viewer">Loading...</div></body></html>\n', server="pixeldrain")
