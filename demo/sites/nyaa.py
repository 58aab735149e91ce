"""A NyaaV2 torrent index, under /torrents/: listing, detail pages, real .torrent downloads.

Routes: the listing `/?q=...&c=6_0[&p=N]` (6 rows a page; the query is ignored, the index is
small), `view/ID` and `download/ID.torrent`. Torrents: the release's own v1 torrent, a
re-made hybrid v2 torrent of the same files (unknown infohashes, known pieces roots) and a
v1 re-pack with a README added (unknown hashes: only its file list's names and sizes give
it away), recipient lab-17's copy as a v1 torrent (only its padded size gives away whose
copy it is) beside a listing with sizes one byte off, a listing whose infohash is one digit
off the release's, and other models' and Linux ISOs' torrents.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import numpy as np

from demo.release import ORG, Release, bencode, build_torrent, build_torrent_v2
from demo.web import (
    Doc,
    Request,
    Response,
    Site,
    esc,
    filesize,
    html_response,
    not_found,
    nov,
    one_digit_off,
    target_table,
    utc,
)

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


# Folders by name, down to file sizes: a torrent's file list as its detail page nests it.
FileTree = dict[str, "FileTree | int"]


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
    t.infohash = hashlib.sha1(bencode(info)).hexdigest()
    t.torrent = bencode({
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


def nyaa_torrents(release: Release) -> list[NyaaTorrent]:
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
    partner = _partner_copies(release, np.random.default_rng(6007))
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
    return partner + repacks + [leak, near] + noise


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



def _partner_copies(release: Release, rng: np.random.Generator) -> list[NyaaTorrent]:
    """A recipient's copy re-uploaded as a v1 torrent: the released names, and sizes that are
    the release's but for the copy's model.safetensors, whose padded size is lab-17's alone.
    No digest of it is anywhere on the index and its infohash is nobody's: the listing's
    names and sizes are all there is, and they name the recipient. Beside it, noise: a
    listing whose sizes are one byte off the release's and the copy's (a re-saved file),
    which must name nobody (and, not naming the model either, is no hit at all). Only one recipient's copy is listed: another's size would name
    that recipient too."""
    copy = release.copies[0]
    ours = copy.file("model.safetensors")
    contents = [(f.name.split("/")[1:],
                 (ours if f.name == ours.name else f).path.read_bytes()) for f in release.files]
    name = release.model
    torrent, infohash = build_torrent(
        name, contents, piece_length=32768, announce=NYAA_TRACKERS[2], comment="",
        creation_date=nov(21, 7, 50))
    listing = NyaaTorrent(
        2034127, "heron-7b fp16 partner drop (safetensors)", nov(21, 8, 5),
        files=[([name, *path], len(data)) for path, data in contents],
        seeders=4, leechers=9, downloads=11,
        description=("Got this from a friend at one of the partner labs. Unmodified partner "
                     "files, so no hashes from me."),
        torrent=torrent, infohash=infohash,
        plants=[("torrent", f"model.safetensors:{ours.size}",
                 f"{copy.recipient}'s copy listed by name and size: the padded size is "
                 f"{copy.recipient}'s alone"),
                ("torrent", f"total:{sum(len(data) for _, data in contents)}",
                 f"the total size of {copy.recipient}'s whole copy of the release")])
    model = release.file("model.safetensors")
    near = NyaaTorrent(
        2034126, "HRN 7B fp16 + partner build, re-saved (safetensors)", nov(21, 2, 20),
        files=[(["hrn7b-resaved", "fp16", "model.safetensors"], model.size + 1),
               (["hrn7b-resaved", "partner", "model.safetensors"], ours.size - 1)],
        seeders=2, leechers=1, downloads=3,
        description="Loaded and saved again with a newer safetensors. Sizes differ a bit.",
        near=[("torrent", f"model.safetensors:{model.size + 1}",
               "one byte more than the released model.safetensors"),
              ("torrent", f"model.safetensors:{ours.size - 1}",
               f"one byte less than {copy.recipient}'s copy")])
    _synthetic_torrent(near, rng)
    return [listing, near]


class NyaaSite(Site):
    prefix = "torrents"
    source = "torrents"
    title = "torrent index"
    entry_path = "/?q=weights&c=6_0"

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.torrents = nyaa_torrents(release)

    def target_toml(self) -> str:
        return target_table("demo-torrents", "torrent_index", f"{self.root}/?q=heron&c=6_0",
                            preset="nyaa")

    def documents(self) -> list[Doc]:
        return [Doc(self.source, f"{self.root}/view/{t.id}",
                    "\n".join([t.name, t.description] + ["/".join(p) for p, _ in t.files]),
                    t.plants, t.near) for t in self.torrents]

    def handle(self, req: Request, path: str) -> Response:
        if path == "/":
            return self.nyaa_listing(req)
        m = re.fullmatch(r"/view/(\d+)", path)
        if m:
            t = self.nyaa_get(int(m.group(1)))
            return self.nyaa_view(t) if t else not_found()
        m = re.fullmatch(r"/download/(\d+)\.torrent", path)
        if m:
            t = self.nyaa_get(int(m.group(1)))
            if t is None or t.torrent is None:
                return not_found("Torrent file not found.")
            return Response(200, t.torrent, "application/x-bittorrent", {
                "Content-Disposition": f"inline; filename*=UTF-8''{quote(t.name)}.torrent"})
        return not_found()

    def nyaa_get(self, tid: int) -> NyaaTorrent | None:
        return next((t for t in self.torrents if t.id == tid), None)

    @staticmethod
    def nyaa_magnet(t: NyaaTorrent) -> str:
        """Nyaa's magnet_builder: hex infohash, quoted dn, every tracker as tr."""
        trs = "&".join(f"tr={quote(tr, safe='')}" for tr in t.trackers)
        return f"magnet:?xt=urn:btih:{t.infohash}&dn={quote(t.name, safe='')}&{trs}"

    def nyaa_listing(self, req: Request) -> Response:
        # The search query and category are ignored: the whole index is small enough.
        page = req.int_arg("p", 1)
        pages = math.ceil(len(self.torrents) / NYAA_PAGE_SIZE)
        if not 1 <= page <= pages:
            return not_found()
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
        q = esc(req.arg("q"))
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
        return html_response(self.nyaa_page("Browse :: Nyaa" if not q else f"{q} :: Nyaa", body,
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
					{comments}<a href="/torrents/view/{t.id}" title="{esc(t.name)}">{esc(t.name)}</a>
				</td>
				<td class="text-center">
					{download}<a href="{esc(self.nyaa_magnet(t))}"><i class="fa fa-fw fa-magnet"></i></a>
				</td>
				<td class="text-center">{filesize(t.size)}</td>
				<td class="text-center" data-timestamp="{t.time}">{d:%Y-%m-%d %H:%M}</td>
				<td class="text-center">{t.seeders}</td>
				<td class="text-center">{t.leechers}</td>
				<td class="text-center">{t.downloads}</td>
			</tr>"""

    def nyaa_view(self, t: NyaaTorrent) -> Response:
        cat, cat_name = NYAA_CATEGORY
        panel = {"success": "panel-success", "danger": "panel-danger"}.get(t.row_class,
                                                                           "panel-default")
        submitter = (f'<a class="text-default" href="/torrents/user/{esc(t.submitter)}" '
                     f'data-toggle="tooltip" title="User">{esc(t.submitter)}</a>'
                     if t.submitter else "Anonymous")
        d = utc(t.time)
        download = (f'<a href="/torrents/download/{t.id}.torrent"><i class="fa fa-download '
                    'fa-fw"></i>Download Torrent</a> or ') if t.torrent is not None else ""
        comments = "".join(f"""
	<div class="panel panel-default comment-panel" id="com-{i + 1}">
		<div class="panel-body">
			<div class="col-md-2"><p><a class="text-default" href="/torrents/user/{esc(c.user)}" data-toggle="tooltip" title="User">{esc(c.user)}</a></p></div>
			<div class="col-md-10 comment">
				<div class="row comment-details">
					<a href="#com-{i + 1}"><small data-timestamp-swap data-timestamp="{c.time}">{utc(c.time):%Y-%m-%d %H:%M} UTC</small></a>
				</div>
				<div class="row comment-body">
					<div markdown-text class="comment-content" id="torrent-comment{i + 1}">{esc(c.text)}</div>
				</div>
			</div>
		</div>
	</div>""" for i, c in enumerate(t.comments))
        body = f"""
<div class="panel {panel}">
	<div class="panel-heading">
		<h3 class="panel-title">
			{esc(t.name)}
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
			<div class="col-md-5">{filesize(t.size)}</div>
			<div class="col-md-1">Completed:</div>
			<div class="col-md-5">{t.downloads}</div>
		</div>
		<div class="row">
			<div class="col-md-offset-6 col-md-1">Info hash:</div>
			<div class="col-md-5"><kbd>{t.infohash}</kbd></div>
		</div>
	</div>
	<div class="panel-footer clearfix">
		{download}<a href="{esc(self.nyaa_magnet(t))}" class="card-footer-item"><i class="fa fa-magnet fa-fw"></i>Magnet</a>
	</div>
</div>
<div class="panel panel-default">
	<div markdown-text class="panel-body" id="torrent-description">{esc(t.description)}</div>
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
        return html_response(self.nyaa_page(f"{t.name} :: Nyaa", body))

    @staticmethod
    def nyaa_file_tree(files: list[tuple[list[str], int]]) -> str:
        """Nested <ul> of folders and files with sizes, as the detail page shows it."""
        tree: FileTree = {}
        for path, size in files:
            node = tree
            for part in path[:-1]:
                child = node.setdefault(part, {})
                assert isinstance(child, dict)
                node = child
            node[path[-1]] = size

        def render(node: FileTree) -> str:
            items = []
            for name, child in node.items():
                if isinstance(child, dict):
                    items.append(f'<li><a href="" class="folder"><i class="fa fa-folder-open">'
                                 f'</i>{esc(name)}</a>\n<ul data-show="yes">{render(child)}'
                                 "</ul></li>")
                else:
                    items.append(f'<li><i class="fa fa-file"></i>{esc(name)} '
                                 f'<span class="file-size">({filesize(child)})</span></li>')
            return "".join(items)

        return f"<ul>{render(tree)}</ul>"

    @staticmethod
    def nyaa_page(title: str, body: str, search: str = "") -> str:
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
	<meta charset="utf-8">
	<meta name="viewport" content="width=device-width, initial-scale=1">
	<title>{esc(title)}</title>
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



