"""A BitTorrent swarm on loopback for the `dht` source's tests: real libtorrent sessions.

Each node is a libtorrent session bound to 127.0.0.1 alone (a socket bound there cannot
reach another host), with UPnP, NAT-PMP, local service discovery and uTP off, and the DHT
bootstrapped from the swarm's own first node, never a public router. libtorrent's defensive
DHT rules that assume a public internet are relaxed as a test network needs: every node
shares one IP, so the "one node per /24" routing and search restrictions and BEP 42 node
ids are off, a node does not block the one IP that sends it every query, and samples
(BEP 51) are recomputed at once instead of every six hours.

What a node seeds is announced to the DHT as any client announces it, so a test's `dht`
source has nothing but the DHT to go on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import libtorrent as lt

LOOPBACK = "127.0.0.1"

# Settings every swarm node shares: loopback only, nothing that reaches a router or the LAN.
BASE_SETTINGS: dict[str, Any] = {
    "listen_interfaces": f"{LOOPBACK}:0",
    "outgoing_interfaces": "",
    "enable_dht": True,
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
    "dht_sample_infohashes_interval": 0,
    # A node blocks an IP sending over 5 queries a second: here every node is 127.0.0.1.
    "dht_block_ratelimit": 100_000,
    "allow_multiple_connections_per_ip": True,
    "alert_mask": (lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
                   | lt.alert.category_t.dht_operation_notification),
}


class Swarm:
    """`size` DHT nodes on 127.0.0.1 that know each other; `seed` makes one of them seed."""

    def __init__(self, size: int = 4):
        self.sessions: list[lt.session] = []
        self.handles: list[lt.torrent_handle] = []
        self.sessions = [self._start() for _ in range(size)]
        # No bootstrap "router" (libtorrent keeps those out of its routing table): each
        # node is told of the others as nodes, so the swarm forms without waiting on
        # refreshes.
        for session in self.sessions:
            for other in self.sessions:
                if other is not session:
                    session.add_dht_node((LOOPBACK, other.listen_port()))

    @staticmethod
    def _start() -> lt.session:
        return lt.session(dict(BASE_SETTINGS, dht_bootstrap_nodes=""))

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
            time.sleep(0.1)
        raise AssertionError(f"the swarm's DHT did not form in {timeout}s: "
                             f"{[_dht_nodes(s) for s in self.sessions]} nodes known")

    def seed(self, node: int, torrent: bytes, save_path: Path) -> lt.torrent_handle:
        """Seed the files under `save_path` from node `node` (checked, then announced)."""
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(torrent))
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
            time.sleep(0.05)
        raise AssertionError(f"not seeding after {timeout}s: {handle.status().state}")

    def announce(self, handle: lt.torrent_handle, node: int, timeout: float = 20.0) -> None:
        """Announce until another node's DHT returns the seeder for its infohash."""
        ih = handle.info_hashes().get_best()
        other = self.sessions[(node + 1) % len(self.sessions)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            handle.force_dht_announce()
            other.dht_get_peers(_v1_id(ih))
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                other.wait_for_alert(100)
                for alert in other.pop_alerts():
                    if isinstance(alert, lt.dht_get_peers_reply_alert) and alert.num_peers():
                        return
        raise AssertionError(f"{ih} was not announced within {timeout}s")

    def payload_uploaded(self) -> int:
        """Payload bytes every seeding node sent: 0 proves a reader took metadata only."""
        return sum(h.status().total_payload_upload for h in self.handles)

    def close(self) -> None:
        for handle, session in [(h, s) for s in self.sessions for h in s.get_torrents()]:
            session.remove_torrent(handle)
        self.sessions.clear()  # a session stops when its last reference goes


def _v1_id(ih: Any) -> Any:
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


def make_torrent(root: Path, folder: str, *, piece_size: int = 0) -> bytes:
    """A hybrid (v1 + v2) .torrent of `root/folder`, as a client creates one."""
    files = lt.list_files(str(root / folder))
    creator = lt.create_torrent(files, piece_size)
    lt.set_piece_hashes(creator, str(root))
    return lt.bencode(creator.generate())
