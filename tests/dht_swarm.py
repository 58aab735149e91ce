"""A BitTorrent swarm on loopback for the `dht` source's tests: real libtorrent sessions.

The swarm is the demo world's own (`demo.dht.LoopbackSwarm`: sessions bound to 127.0.0.1
alone, no router, no LSD, UPnP, NAT-PMP or uTP, the DHT formed among themselves), so the
source's tests and the demo's DHT cannot drift apart. What a node seeds is announced to the
DHT as any client announces it, so a test's `dht` source has nothing but the DHT to go on.
"""

from __future__ import annotations

from pathlib import Path

import libtorrent as lt

from demo.dht import LoopbackSwarm as Swarm

__all__ = ["Swarm", "make_torrent"]


def make_torrent(root: Path, folder: str, *, piece_size: int = 0) -> bytes:
    """A hybrid (v1 + v2) .torrent of `root/folder`, as a client creates one."""
    path = str(root / folder)
    if hasattr(lt, "list_files"):
        creator = lt.create_torrent(lt.list_files(path), piece_size)
    else:  # libtorrent 2.0, whose file_storage way 2.1 deprecates
        files = lt.file_storage()
        lt.add_files(files, path)
        creator = lt.create_torrent(files, piece_size)
    lt.set_piece_hashes(creator, str(root))
    return lt.bencode(creator.generate())
