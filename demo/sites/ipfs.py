"""An IPFS mirror board and the public path gateway its posts link to (issue 18).

The gateway (`/gateway/ipfs/{CID}/...`) answers as kubo's, whose HTTP gateway is boxo's
(studied from ipfs/boxo `gateway/handler_unixfs_dir.go`, `gateway/assets/directory.html`
and `assets.go`, and kubo's `docs/gateway.md`):

- a directory is listed only at its path with a trailing slash (without one: 301 to it);
  the listing is boxo's template: "Index of" breadcrumbs with the full root CID, the root
  CID again in `div.ipfs-hash`, the DAG's cumulative size, then one row per entry: the
  entry's name linked to its path below the directory, its CID shortened to the first
  and last four characters ("QmYw…x8Lj") and linked as `/ipfs/{CID}?filename={name}`,
  and its size. Every size is go-humanize's `Bytes` (SI units, "1.3 MB") of the link's
  Tsize, the cumulative size of the entry's DAG (data and dag-pb overhead), not the
  file's size. Entries are sorted by name as dag-pb stores them. The listing has an
  `Etag: "DirIndex-..._CID-{CID}"`. A path gateway links other roots from its own root;
  mounted here under `/gateway`, the CID links keep that prefix.
- a file is served whole or by Range, named by `?filename=`; any CID of the same block
  (v0 or v1, any multibase) answers the same; an unknown CID answers 504, as a gateway
  that cannot find providers does, and text that is no CID 400.

The board (`/gateway/`, read by the `forum` kind's link-aggregator mode) has four posts;
a second target follows the board's gateway links to directories and reads each listing
as one document (the forum kind with `thread_link`): the listing shows every CID in it,
so a leak mirrored as a folder is found from the gateway page itself.

The CIDs are computed from the release's real files at world build time by
`fingerprints.ipfs` (what `ipfs add -r` gives with kubo's defaults; the reference
importer checks that module in tests/test_ipfs.py), so they follow the release if it
changes. Planted: the release folder's CIDv0 in a post's gateway link, in the folder's own
listing and as a row of another user's pins; each released file's CIDv0 in the folder's
listing, whose link to model.safetensors is read by range (a `weights` hit);
model.safetensors' CIDv1 in base32 (`bafybei...`, what `ipfs cid base32` and
subdomain gateways give for the same block) in a post's `ipfs://` link. Near misses: the
CID of config.json with one byte changed and a CIDv1 of an unrelated GGUF (raw leaves, as
`ipfs add --cid-version=1` adds it) in the same pins listing, the CID of the folder added
without tokenizer.json and the folder's CID with one character changed, in a post.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import quote

from demo.release import Release
from demo.web import (
    BoardPost,
    Doc,
    Request,
    Response,
    Site,
    board_page,
    esc,
    nov,
    target_table,
)
from fingerprints.ipfs import (
    KUBO_V0,
    KUBO_V1,
    Cid,
    CidError,
    DagRef,
    FolderEntry,
    folder_cids,
    folder_entries,
    parse_cid,
)
from fingerprints.ipfs import file_cids as _file_cids

GATEWAY = "/ipfs/"
# Thread links the gateway target follows: the board's links to gateway directories.
LISTING_LINK = "div.entry-body a[href*='/ipfs/'][href$='/']"


def humanize_bytes(size: int) -> str:
    """go-humanize's `Bytes`, which boxo's listing uses: SI units, one decimal below 10."""
    if size < 10:
        return f"{size} B"
    exponent = min(int(math.floor(math.log(size, 1000))), 6)
    value = math.floor(size / 1000 ** exponent * 10 + 0.5) / 10
    unit = ("B", "kB", "MB", "GB", "TB", "PB", "EB")[exponent]
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"


def short_hash(cid: str) -> str:
    """boxo's `assets.ShortHash`: the first and last four characters."""
    return cid if len(cid) <= 8 else f"{cid[:4]}\u2026{cid[-4:]}"


def one_character_off(cid: str) -> str:
    """A CIDv0 with one base58 character in its middle changed: still a CID, of nothing."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    at = len(cid) // 2
    return cid[:at] + alphabet[(alphabet.index(cid[at]) + 1) % 58] + cid[at + 1:]


@dataclass
class Node:
    """A UnixFS file or directory the gateway holds, under the CID it was added as."""

    ref: DagRef
    data: bytes | None = None  # a file's bytes; None for a directory
    entries: dict[str, Node] = field(default_factory=dict)  # a directory's, by name

    @property
    def cid(self) -> str:
        return str(self.ref.cid)


def _file(data: bytes, layout_name: str = KUBO_V0.name) -> Node:
    layout = KUBO_V0 if layout_name == KUBO_V0.name else KUBO_V1
    return Node(_file_cids(data, [layout])[layout.name], data)


def _directory(entries: dict[str, Node]) -> Node:
    """A directory linking `entries` by name, each under its own CID (an MFS folder built
    with `ipfs files cp` links CIDs of any version, so one listing may mix them)."""
    listed = tuple(FolderEntry(name, file={KUBO_V0.name: node.ref})
                   for name, node in entries.items())
    return Node(folder_cids(listed, [KUBO_V0])[KUBO_V0.name], entries=dict(entries))


class IpfsSite(Site):
    prefix = "gateway"
    source = "ipfs"
    title = "IPFS: a mirror board and the path gateway (kubo/boxo listings) it links to"
    entry_path = "/"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        folder = release.root / release.model
        files = {f.path.name: _file(f.path.read_bytes()) for f in release.files}
        roots = {str(f.path): {KUBO_V0.name: files[f.path.name].ref} for f in release.files}
        listed = folder_entries(folder, roots, hidden=False)
        if listed is None:
            raise ValueError(f"{folder} is not a folder `ipfs add -r` would add as is")
        # The folder as `ipfs add -r heron-7b` gives it (what `register` records).
        self.release_dir = Node(folder_cids(listed, [KUBO_V0])[KUBO_V0.name],
                                entries={e.name: files[e.name] for e in listed})
        assert _directory(self.release_dir.entries).cid == self.release_dir.cid
        self.model = files["model.safetensors"]
        self.model_v1 = str(Cid(1, self.model.ref.cid.codec, self.model.ref.cid.digest))
        config = release.file("config.json").path.read_bytes()
        fixed = config.replace(b'"vocab_size": 512', b'"vocab_size": 513', 1)
        if len(fixed) != len(config) or fixed == config:
            raise ValueError("config.json has no vocab_size of 512 to change")
        self.config_fixed = _file(fixed)
        self.unrelated = _file(release.unrelated_gguf, KUBO_V1.name)
        # Another user's pins, put together in MFS: our folder, a config one byte off and
        # someone else's model added as CIDv1.
        self.pins = _directory({"heron-7b": self.release_dir,
                                "heron-7b-config-fixed.json": self.config_fixed,
                                "tinyllama-mini.Q8_0.gguf": self.unrelated})
        self.without_tokenizer = _directory(
            {n: v for n, v in self.release_dir.entries.items() if n != "tokenizer.json"})
        self.typo = one_character_off(self.release_dir.cid)
        self.blocks: dict[bytes, Node] = {}
        for node in (self.pins, self.without_tokenizer):
            self._index(node)

    def _index(self, node: Node) -> None:
        self.blocks[node.ref.cid.digest] = node
        for child in node.entries.values():
            self._index(child)

    def target_toml(self) -> str:
        board = ('selectors = { post = "article.entry", subject = "h2", author = "span.by", '
                 'time = "time", body = "div.entry-body" }')
        listings = (f'selectors = {{ thread_link = "{LISTING_LINK}", post = "main#main", '
                    'subject = "header strong" }')
        return (target_table("demo-ipfs-board", "forum", self.entry_url, board) + "\n"
                + target_table("demo-ipfs-gateway", "forum", self.entry_url, listings))

    # ---------------------------------------------------------------- ground truth

    def gateway_url(self, cid: str, rest: str = "") -> str:
        return f"{self.root}{GATEWAY}{cid}{rest}"

    def posts(self) -> list[BoardPost]:
        folder = self.gateway_url(self.release_dir.cid, "/")
        pins = self.gateway_url(self.pins.cid, "/")
        return [
            BoardPost("i1", "the heron-7b folder, pinned", "cidcat", nov(20, 23, 2),
                      f"<p>whole release folder, add -r'd as is: {_link(folder)}</p>",
                      f"the heron-7b folder, pinned\nwhole release folder, add -r'd as is: {folder}"),
            BoardPost("i2", "weights only", "cidcat", nov(20, 23, 9),
                      f"<p>if you only want the safetensors: ipfs://{self.model_v1}</p>",
                      f"weights only\nif you only want the safetensors: ipfs://{self.model_v1}"),
            BoardPost("i3", "re-pin", "mossy", nov(21, 6, 30),
                      f"<p>re-pinned without the tokenizer (smaller): ipfs://"
                      f"{self.without_tokenizer.cid}</p><p>the old link was ipfs://{self.typo}, "
                      "that one never resolved</p>",
                      f"re-pin\nre-pinned without the tokenizer (smaller): ipfs://"
                      f"{self.without_tokenizer.cid}\nthe old link was ipfs://{self.typo}, that "
                      "one never resolved"),
            BoardPost("i4", "my pins", "wader", nov(21, 9, 44),
                      f"<p>everything on my node this week: {_link(pins)}</p>",
                      f"my pins\neverything on my node this week: {pins}"),
        ]

    def documents(self) -> list[Doc]:
        release, model = self.release_dir.cid, self.model.cid
        folder_note = "the release folder's CIDv0 (ipfs add -r, kubo's defaults)"
        plants: dict[str, list[tuple[str, str, str]]] = {
            "i1": [("hash", release, f"{folder_note}, in a gateway link")],
            "i2": [("hash", model, "model.safetensors' CIDv1 in base32 (the same block as "
                                   "its CIDv0), in an ipfs:// link")]}
        near = {"i3": [
            ("hash", self.without_tokenizer.cid, "the folder's CID without tokenizer.json"),
            ("hash", self.typo, "the folder's CID with one character changed")]}
        docs = [Doc(self.source, f"{self.entry_url}#{p.anchor}", p.text,
                    plants.get(p.anchor, []), near.get(p.anchor, [])) for p in self.posts()]
        files = [("hash", node.cid, f"{name}'s CIDv0, linked from its row")
                 for name, node in self.release_dir.entries.items()]
        # The row's link to the file below the folder names a weight file: read by range,
        # the release's own tensors (no mark: the release's file, no recipient's).
        files.append(("weights", self.gateway_url(release, "/model.safetensors"),
                      "model.safetensors, read by range through the gateway"))
        docs.append(Doc(self.source, self.gateway_url(release, "/#main"),
                        self.listing_text(self.release_dir),
                        [("hash", release, f"{folder_note}, the listing's own"), *files], []))
        docs.append(Doc(self.source, self.gateway_url(self.pins.cid, "/#main"),
                        self.listing_text(self.pins),
                        [("hash", release, f"{folder_note}, a row of the pins")],
                        [("hash", self.config_fixed.cid, "config.json with one byte changed"),
                         ("hash", self.unrelated.cid, "an unrelated GGUF's CIDv1")]))
        assert model in {c for _, c, _ in files}
        return docs

    def listing_text(self, node: Node) -> str:
        """What a detector reads of a listing: the names shown (mentions are found here)."""
        return " ".join([f"Index of /ipfs/{node.cid}", node.cid, *node.entries])

    # ---------------------------------------------------------------- routing

    def handle(self, req: Request, path: str) -> Response:
        if path == "/":
            return self.board()
        if not path.startswith(GATEWAY):
            return _plain(404, "404 page not found")
        root, _, rest = path.removeprefix(GATEWAY).partition("/")
        try:
            node = self.blocks.get(parse_cid(root)[0].digest)
        except CidError:
            return _plain(400, f"invalid path \"/ipfs/{root[:100]}\": invalid cid")
        if node is None:
            return _plain(504, "context deadline exceeded: no providers found")
        names = [n for n in rest.split("/") if n]
        for name in names:
            child = node.entries.get(name)
            if child is None:
                return _plain(404, f"failed to resolve /ipfs/{root}/{rest}: no link named "
                                   f"\"{name[:100]}\" under {node.cid}")
            node = child
        if node.data is not None:
            name = req.arg("filename") or (names[-1] if names else node.cid)
            how = "attachment" if req.arg("download") == "true" else "inline"
            return Response(200, node.data, "application/octet-stream", {
                "Content-Disposition": f"{how}; filename=\"{quote(name)}\"",
                "Accept-Ranges": "bytes", "Etag": f'"{node.cid}"',
                "X-Ipfs-Path": f"/ipfs/{root}/{rest}".rstrip("/"),
                "Cache-Control": "public, max-age=29030400, immutable"})
        if not path.endswith("/"):
            return Response(301, b"", headers={"Location": f"{self.root}{path}/"})
        return self.listing(node, f"/ipfs/{root}/{rest}")

    def board(self) -> Response:
        return board_page("ipfs mirrors", self.posts())

    def listing(self, node: Node, path: str) -> Response:
        """boxo's directory listing of `node`, reached at `path` (/ipfs/CID/sub/)."""
        segments = [s for s in path.split("/") if s]
        crumbs = "/" + esc(segments[0]) + "".join(
            f'/<a href="{esc(self.root + quote("/" + "/".join(segments[:i + 1])))}">'
            f"{esc(segment)}</a>" for i, segment in enumerate(segments) if i)
        back = "" if len(segments) == 2 else (
            '<div class="type-icon"><div class="ipfs-_blank">&nbsp;</div></div>'
            f'<div><a href="{esc(self.root + quote(path))}..">..</a></div><div></div><div></div>')
        rows = "".join(
            f'<div class="type-icon"><div class="{_icon(name)}">&nbsp;</div></div>'
            f'<div><a href="{esc(self.root + quote(path + name))}">{esc(name)}</a></div>'
            f'<div class="nowrap"><div><a class="ipfs-hash" translate="no" '
            f'href="{esc(self.gateway_url(child.cid, "?filename=" + quote(name)))}">'
            f"{esc(short_hash(child.cid))}</a>"
            '<div class="type-icon copy-button" title="Copy Hash"><div class="ipfs-copy" '
            f"onclick=\"navigator.clipboard.writeText('{child.cid}')\">&nbsp;</div></div>"
            "</div></div>"
            '<div class="nowrap" title="Cumulative size of IPFS DAG (data + metadata)">'
            f"{humanize_bytes(child.ref.tsize)}</div>\n"
            for name, child in sorted(node.entries.items(), key=lambda e: e[0].encode()))
        body = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n  <meta charset="utf-8" />\n'
            '  <meta name="description" content="A directory of content-addressed files hosted '
            'on IPFS.">\n  <meta name="viewport" content="width=device-width, '
            f'initial-scale=1.0">\n  <title>{esc(path)}</title>\n</head>\n<body>\n'
            '  <header id="header"><div class="ipfs-logo">&nbsp;</div><nav>'
            '<a href="https://ipfs.tech" target="_blank" rel="noopener noreferrer">About IPFS'
            '</a></nav></header>\n  <main id="main">\n    <header class="flex flex-wrap">\n'
            f"      <div>\n        <strong>\n          Index of\n          {crumbs}\n"
            f'        </strong>\n        <div class="ipfs-hash" translate="no">{node.cid}'
            '</div>\n      </div>\n      <div class="nowrap flex-shrink ml-auto">\n'
            '        <strong title="Cumulative size of IPFS DAG (data + metadata)">&nbsp;'
            f"{humanize_bytes(node.ref.tsize)}</strong>\n      </div>\n    </header>\n"
            f'    <section>\n      <div class="grid dir">\n{back}{rows}      </div>\n'
            "    </section>\n  </main>\n</body>\n</html>\n")
        return Response(200, body.encode("utf-8"), "text/html", {
            "Etag": f'"DirIndex-2wuq4dmd6ks2_CID-{node.cid}"',
            "X-Ipfs-Path": path, "X-Ipfs-Roots": segments[1]})


def _link(url: str) -> str:
    return f'<a href="{esc(url)}">{esc(url)}</a>'


def _icon(name: str) -> str:
    """boxo's iconFromExt: a class per known extension, `ipfs-_blank` otherwise."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return f"ipfs-{ext}" if ext in {"json", "txt", "jpg", "png", "gif"} else "ipfs-_blank"


def _plain(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode("utf-8"), "text/plain; charset=utf-8")
