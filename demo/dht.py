"""The demo world's BitTorrent DHT: real libtorrent sessions on 127.0.0.1, among themselves.

A magnet posted once lives on in the DHT after every index has dropped it; the `dht` source
reads it there. The demo world gives it a DHT of its own: `NODES` libtorrent sessions bound
to 127.0.0.1 that know only each other, each a client seeding what a real swarm would hold:

- the release's own torrents (the v1 and the pure v2 one whose magnets are registered),
  seeded by two clients: the source reports their swarm ("seen with 2 peers");
- a re-pack of the release that no index lists (another folder name, 32 KiB pieces, a
  README added, a hybrid v1+v2 torrent as qBittorrent 5 makes them): found only by sampling
  the DHT (BEP 51) and fetching its metadata (BEP 9), by its file list and its pieces roots;
- noise: another model's files under the released names with other sizes, and a dataset.

The nodes are what `tests/dht_swarm.py` has always started for the source's own tests
(`LoopbackSwarm`, now here so the two cannot drift): loopback sockets, no router, no LSD,
UPnP, NAT-PMP or uTP, and libtorrent's defences against many nodes on one IP relaxed as a
network of one address needs. The torrents are built by `demo.release`'s own writers
(BEP 3, and BEP 52 hybrids with BEP 47 pad files as libtorrent 2 writes them), so their
infohashes, and the world's ground truth, are the same on every run; the shapes of the
swarm come from BEP 5, 9, 51 and 52 and libtorrent 2.x's Python bindings.

libtorrent is a runtime dependency for this (the `dht` source's engine); the rest of the
demo world keeps to stdlib, numpy and fastbencode.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fastbencode
import libtorrent as lt
import numpy as np

from demo.release import Release, bencode, build_torrent, build_torrent_v2
from demo.sites.nyaa import MANIFEST_MIN_FILE, _manifest_plants
from demo.web import Doc, nov

LOOPBACK = "127.0.0.1"
SOURCE = "dht"  # the `source` of the DHT's documents in the world's ground truth
TARGET = "demo-dht"
NODES = 4
REPACK = "h7b_weights_full"  # no `heron-7b` in it: the file list alone gives it away
REPACK_PIECE = 32768  # neither the release's v1 (16 KiB) nor its v2 (64 KiB) pieces
SEED = 20261207
RETRY_ANNOUNCE = 0.25  # seconds between announces of a torrent no other node knows yet

# Settings every node shares: loopback only, nothing that reaches a router or the LAN.
NODE_SETTINGS: lt.settings_pack = {
    "listen_interfaces": f"{LOOPBACK}:0",
    "outgoing_interfaces": "",
    "enable_dht": True,
    "dht_bootstrap_nodes": "",
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_incoming_utp": False,
    "enable_outgoing_utp": False,
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_prefer_verified_node_ids": False,
    "dht_enforce_node_id": False,
    "dht_ignore_dark_internet": False,
    # Samples (BEP 51) recomputed at once, not every six hours: a poll sees what was just
    # announced.
    "dht_sample_infohashes_interval": 0,
    # A node blocks an IP sending over 5 queries a second: here every node is 127.0.0.1.
    "dht_block_ratelimit": 100_000,
    "allow_multiple_connections_per_ip": True,
    "alert_mask": (lt.alert.category_t.status_notification
                   | lt.alert.category_t.error_notification
                   | lt.alert.category_t.dht_operation_notification),
}


class LoopbackSwarm:
    """`size` DHT nodes on 127.0.0.1 that know each other; `seed` makes one of them seed."""

    def __init__(self, size: int = NODES):
        self.handles: list[lt.torrent_handle] = []
        self.sessions: list[lt.session] = [lt.session(NODE_SETTINGS.copy())
                                           for _ in range(size)]
        # No bootstrap "router" (libtorrent keeps those out of its routing table): each
        # node is told of the others as nodes, so the swarm forms without waiting on
        # refreshes.
        for session in self.sessions:
            for other in self.sessions:
                if other is not session:
                    session.add_dht_node((LOOPBACK, other.listen_port()))

    @property
    def nodes(self) -> list[str]:
        """Every node as `127.0.0.1:PORT`, the form `bootstrap_nodes` takes."""
        return [f"{LOOPBACK}:{s.listen_port()}" for s in self.sessions]

    def wait_connected(self, timeout: float = 20.0) -> None:
        """Until every node has the others in its routing table."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_dht_nodes(s) >= len(self.sessions) - 1 for s in self.sessions):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the loopback DHT did not form in {timeout}s: "
                           f"{[_dht_nodes(s) for s in self.sessions]} nodes known")

    def seed(self, node: int, torrent: bytes, save_path: Path) -> lt.torrent_handle:
        """Seed the files under `save_path` from node `node` (checked, then announced to the
        DHT alone: the metainfo's trackers are dropped, or a seeder would look their hosts
        up beyond loopback)."""
        meta = fastbencode.bdecode(torrent)
        for key in (b"announce", b"announce-list"):
            meta.pop(key, None)
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(bencode(meta))
        params.save_path = str(save_path)
        params.flags = lt.torrent_flags.default_flags & ~lt.torrent_flags.auto_managed \
            & ~lt.torrent_flags.paused
        handle = self.sessions[node].add_torrent(params)
        self.handles.append(handle)
        return handle

    def wait_seeding(self, handle: lt.torrent_handle, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if handle.status().is_seeding:
                return
            time.sleep(0.02)
        raise RuntimeError(f"not seeding after {timeout}s: {handle.status().state}")

    def announce(self, handle: lt.torrent_handle, node: int, peers: int = 1,
                 timeout: float = 20.0) -> None:
        """Announce until another node's DHT returns `peers` peers for its infohash."""
        self.announce_all([(handle, node, peers)], timeout)

    def announce_all(self, seeders: Sequence[tuple[lt.torrent_handle, int, int]],
                     timeout: float = 20.0) -> None:
        """Announce each (handle, node, peers) until another node's DHT returns `peers`
        peers for its infohash: all at once, asking again every RETRY_ANNOUNCE seconds."""
        pending = {(_v1_id(h.info_hashes().get_best()).to_bytes(), node): (h, peers)
                   for h, node, peers in seeders}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for (ih, node), (handle, _) in pending.items():
                handle.force_dht_announce()
                self.sessions[(node + 1) % len(self.sessions)].dht_get_peers(lt.sha1_hash(ih))
            end = time.monotonic() + RETRY_ANNOUNCE
            while pending and time.monotonic() < end:
                for session in self.sessions:
                    for alert in session.pop_alerts():
                        if isinstance(alert, lt.dht_get_peers_reply_alert):
                            ih, found = alert.info_hash.to_bytes(), alert.num_peers()
                            for key in [k for k, (_, n) in pending.items()
                                        if k[0] == ih and found >= n]:
                                del pending[key]
                time.sleep(0.02)
        if pending:
            raise RuntimeError(f"{sorted(ih.hex() for ih, _ in pending)} not announced "
                               f"within {timeout}s")

    def payload_uploaded(self) -> int:
        """Payload bytes every seeding node sent: 0 proves a reader took metadata only."""
        return sum(h.status().total_payload_upload for h in self.handles)

    def close(self) -> None:
        for handle, session in [(h, s) for s in self.sessions for h in s.get_torrents()]:
            session.remove_torrent(handle)
        self.handles.clear()
        self.sessions.clear()  # a session stops when its last reference goes


def _v1_id(ih: lt.sha1_hash | lt.sha256_hash) -> lt.sha1_hash:
    """How the DHT files a torrent: its v1 infohash, or a v2 one's first 20 bytes (BEP 52)."""
    return ih if isinstance(ih, lt.sha1_hash) else lt.sha1_hash(ih.to_bytes()[:20])


def _dht_nodes(session: lt.session) -> int:
    """The nodes in a session's routing table (its stats counter `dht.dht_nodes`)."""
    session.post_session_stats()
    for _ in range(20):
        session.wait_for_alert(100)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.session_stats_alert):
                return int(alert.values["dht.dht_nodes"])
    return 0


# --------------------------------------------------------------------------- the world


@dataclass
class Seeded:
    """One torrent a node seeds: its files, and the document the `dht` source makes of it."""

    name: str
    torrent: bytes
    files: list[tuple[list[str], bytes]]  # paths below `name`, and contents to write
    nodes: tuple[int, ...]  # which nodes seed it
    doc: Doc
    home: Path | None = None  # the folder holding `name` already (the release's), if any


@dataclass
class DemoDht:
    """The demo world's DHT: what its nodes seed, the ground truth of what a `dht` target
    finds there, and, once started, the nodes themselves."""

    release: Release
    seeded: list[Seeded] = field(init=False)
    swarm: LoopbackSwarm | None = field(default=None, init=False)
    _scratch: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.seeded = [*_release_swarms(self.release), _repack(self.release),
                       *_noise(self.release)]

    def start(self) -> DemoDht:
        if self.swarm is not None:
            return self
        # The release's own torrents are seeded from the release folder; the others' files
        # are written here and go with the world.
        scratch = self._scratch = Path(tempfile.mkdtemp(prefix="weightwatch-demo-dht-"))
        swarm = self.swarm = LoopbackSwarm()
        try:
            handles = []
            for item in self.seeded:
                for path, data in item.files:
                    out = scratch.joinpath(item.name, *path)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data)
                handles += [(swarm.seed(n, item.torrent, item.home or scratch), n,
                             len(item.nodes)) for n in item.nodes]
            swarm.wait_connected()
            for handle, _, _ in handles:
                swarm.wait_seeding(handle)
            swarm.announce_all(handles)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.swarm is not None:
            self.swarm.close()
            self.swarm = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    @property
    def nodes(self) -> list[str]:
        """The nodes as `127.0.0.1:PORT`, once started."""
        if self.swarm is None:
            raise RuntimeError("the demo DHT is not started")
        return self.swarm.nodes

    def target_toml(self) -> str:
        """The `dht` target: bootstrapped on the world's nodes alone, listening on loopback,
        sampling on (the re-pack is in no index), with short waits (answers on loopback come
        in milliseconds)."""
        # Two of the nodes are named: libtorrent keeps a bootstrap node out of its routing
        # table, so the table fills with the others, which the first answers name.
        first, second = self.nodes[:2]
        return "\n".join([
            "[[targets]]", f'name = "{TARGET}"', 'kind = "dht"', f'url = "dht://{first}"',
            'interval = "5m"',
            f"max_items = {len(self.seeded)}  # sampled torrents whose metadata a poll fetches",
            "[targets.dht]",
            f'listen = "{LOOPBACK}:0"  # the demo DHT lives on loopback',
            f'bootstrap_nodes = ["{second}"]',
            "sample_infohashes = true",
            'lookup_timeout = "3s"',
            "rate = 50", ""])

    def documents(self) -> list[Doc]:
        return [item.doc for item in self.seeded]


def _magnet(v1: str | None, v2: str | None) -> str:
    """A document's URL as the `dht` source writes it: the torrent's own ids."""
    return "magnet:?" + "&".join([*([f"xt=urn:btih:{v1}"] if v1 else []),
                                  *([f"xt=urn:btmh:1220{v2}"] if v2 else [])])


def _listing(name: str, files: Sequence[tuple[list[str], bytes]]) -> str:
    """What the rules read of a sampled torrent: its name and its paths."""
    return "\n".join([name, *("/".join(path) for path, _ in files)])


def _release_swarms(release: Release) -> list[Seeded]:
    """The release's v1 and v2 torrents (their magnets registered), each seeded by two of
    the nodes: one swarm document each, whose peer count is the evidence."""
    out = []
    for torrent, v1, v2 in ((release.torrent_bytes, release.infohash, None),
                            (release.torrent_v2_bytes, None, release.infohash_v2)):
        ih = v1 or v2
        assert ih is not None
        what = "v1" if v1 else "v2"
        out.append(Seeded(release.model, torrent, [], (1, 2), Doc(
            SOURCE, _magnet(v1, None) if v1 else _magnet(None, v2), "",
            [("torrent", ih, f"the release's {what} torrent seen with 2 peers in the DHT "
                             "(BEP 5 get_peers of a registered infohash)")], []),
            home=release.root))
    return out


def _repack(release: Release) -> Seeded:
    """The release re-packed: a hybrid torrent with a README, seeded by one node, on no index.
    Its infohashes are nobody's; its file list names the released weights by name and size,
    its v2 pieces roots are the released files' own."""
    readme = b"full weights, fp16, from the partner drop. seed please\n"
    contents = sorted([(["README.txt"], readme),
                       *((f.name.split("/")[1:], f.path.read_bytes()) for f in release.files)])
    torrent, v2, v1 = build_torrent_v2(
        REPACK, contents, piece_length=REPACK_PIECE, announce="", comment="",
        creation_date=nov(21, 3, 15), created_by="qBittorrent v5.0.2", hybrid=True)
    plants = [*(("torrent", f.pieces_root, f"v2 pieces root of {f.name} in a re-pack found "
                 "only in the DHT (BEP 51 samples, BEP 9 metadata)") for f in release.files),
              *_manifest_plants(release, "a re-pack found only in the DHT", total=False)]
    return Seeded(REPACK, torrent, contents, (2,),
                  Doc(SOURCE, _magnet(v1, v2), _listing(REPACK, contents), plants, []))


def _noise(release: Release) -> list[Seeded]:
    """Torrents the DHT holds that are none of ours: another model whose files have the
    released names with other sizes (the manifest's bait: a name alone is no hit), and a
    dataset."""
    rng = np.random.default_rng(SEED)
    model = release.file("model.safetensors")
    taken = {f.size for f in release.files} | {f.size for c in release.copies for f in c.files}
    size = model.size * 3 // 4
    while size in taken:
        size += 8
    other = [(["config.json"], rng.bytes(611)), (["model.safetensors"], rng.bytes(size)),
             (["tokenizer.json"], rng.bytes(18190))]
    near = [("torrent", f"{path[-1]}:{len(data)}",
             f"{path[-1]} under its released name with another model's size")
            for path, data in other if len(data) >= MANIFEST_MIN_FILE]
    dataset = [([f"wiki.{part}.raw"], rng.bytes(n))
               for part, n in (("test", 41_233), ("train", 402_117), ("valid", 38_811))]
    out = []
    for name, files, bait in (("tinyllama-mini-fp16", other, near),
                              ("wikitext-2-raw-v1", dataset, [])):
        torrent, v1 = build_torrent(name, files, piece_length=32768, announce="",
                                    comment="", creation_date=nov(19, 22, 0))
        out.append(Seeded(name, torrent, files, (3,),
                          Doc(SOURCE, _magnet(v1, None), _listing(name, files), [], bait)))
    return out


__all__ = ["DemoDht", "LoopbackSwarm", "NODE_SETTINGS", "TARGET"]
