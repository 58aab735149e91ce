"""The BitTorrent DHT itself, read through a real BitTorrent engine (libtorrent).

A magnet posted once lives on in the DHT after every index has dropped it. Each poll joins
the DHT as one node (libtorrent's session, bootstrapped from the target's nodes) and:

- asks the swarm of every registered infohash (the registry's `btih`, and `btmh` by its
  first 20 bytes as BEP 52 does) for peers (BEP 5 `get_peers`), and yields, for each one
  with peers, a document whose evidence says "seen with N peers on DATE" with the counts of
  the last polls: the digest detector makes it one critical `torrent` hit, and later polls
  update that hit (same document key) instead of adding one per poll;
- where the operator turns `sample_infohashes` on, asks up to `max_nodes` nodes for samples
  of the infohashes they store (BEP 51), and for up to `max_items` of those never seen
  before fetches the torrent's metadata from its peers (BEP 9 `ut_metadata`; an info dict
  over `max_metadata_bytes` is refused unparsed), yielding the metainfo as a torrent
  listing: the manifest detector
  compares its file list with the released names and sizes, the digest detector its v2
  pieces roots, as for a .torrent read from an index.

The node is read-only (BEP 43), and keeps its DHT state (id and known nodes) in the cursor
so the next poll starts from them rather than from the bootstrap nodes again.

No file content is ever downloaded: a metadata fetch adds the torrent in upload mode with
every file at priority 0 (libtorrent's `upload_mode` and `default_dont_download`), connects
only to the peers our own lookup found (`disable_dht`, so the monitor never announces
itself as a peer), and removes it as soon as the metadata is in. Requests are paced to
`rate` per second. The shapes come from the BEPs (5, 9, 51, 52) and libtorrent 2.x's
reference and Python bindings (`session.dht_get_peers`, `dht_get_peers_reply_alert`,
`session.dht_sample_infohashes`, `dht_sample_infohashes_alert`, `add_torrent_params`,
`metadata_received_alert`, settings `max_metadata_size`, `dht_bootstrap_nodes`,
`listen_interfaces`, `enable_lsd`/`enable_upnp`/`enable_natpmp`).

libtorrent is a dependency of weightwatch (the demo world runs a DHT of its own), imported
only when a `dht` target runs.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import hashlib
import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import structlog

from fingerprints.torrent import TorrentError, parse_torrent
from monitor.config import parse_duration
from monitor.models import FILE_LIST, Document, FileList, KnownDigest, utcnow
from monitor.sources.base import Source, SourceError
from monitor.sources.torrent_index import MAX_FILES_IN_TEXT, metainfo_extras

if TYPE_CHECKING:
    import libtorrent as lt  # at run time only inside Engine: no other command loads it

log = structlog.get_logger("weightwatch.sources.dht")

# Set (to anything) by the test suite: every node this source would talk to must then be a
# loopback address, so no test can reach the real DHT whatever its config says.
LOOPBACK_ONLY_ENV = "WEIGHTWATCH_DHT_LOOPBACK_ONLY"
MISSING_ENGINE = ("kind 'dht' needs libtorrent's Python bindings: "
                  "pip install 'weightwatch[dht]'")

DEFAULT_LISTEN = "0.0.0.0:6881"
DEFAULT_RATE = 5.0  # DHT requests this source starts per second
DEFAULT_MAX_NODES = 50  # nodes asked for samples per poll
DEFAULT_MAX_METADATA = 1024 * 1024  # a real info dict of 1000 files is ~100 KB
MAX_METADATA_LIMIT = 10 * 1024 * 1024  # as a downloaded .torrent (MAX_TORRENT_BYTES)
DEFAULT_LOOKUP_TIMEOUT = 20.0
# A lookup's answers come within a second or two of each other; this long without a new
# one ends the wait for it.
SETTLE_SECONDS = 2.0
HISTORY_POLLS = 30  # peer counts kept per infohash, shown in the evidence
MAX_REMEMBERED = 5000  # sampled infohashes remembered as read, and as tried in vain
RETRY_AFTER = timedelta(days=1)  # a sampled torrent whose metadata did not come is asked again
MAX_PEERS_IN_SNAPSHOT = 50
MAX_STATE_BYTES = 64 * 1024  # the DHT state kept between polls (a routing table: ~10 KB)
DHT_KEYS = ("listen", "bootstrap_nodes", "rate", "max_nodes", "max_metadata_bytes",
            "sample_infohashes", "lookup_timeout")


@dataclass(frozen=True)
class Node:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DhtSettings:
    """A `dht` target's table, checked: where the node listens, whom it asks first, and how
    much it may ask."""

    listen: Node
    bootstrap: tuple[Node, ...]
    rate: float
    max_nodes: int
    max_metadata_bytes: int
    sample_infohashes: bool
    lookup_timeout: float
    max_torrents: int  # the target's max_items: metadata fetches per poll
    # Seconds the poll may take: it yields only when done, so it must end inside the run
    # timeout however many sampled torrents keep it waiting.
    budget: float = 600.0


def parse_node(value: object, what: str) -> Node:
    """`HOST:PORT` or `[V6]:PORT`; ValueError naming `what` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{what}: must be a string HOST:PORT, got {value!r}")
    try:
        parts = urlsplit(f"//{value.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None or parts.path or parts.username:
        raise ValueError(f"{what}: must be HOST:PORT (e.g. router.bittorrent.com:6881), "
                         f"got {value!r}")
    return Node(host, port)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def contactable(host: str, *, loopback: bool) -> bool:
    """Whether a node or peer the DHT named may be contacted: a public address, or for a
    node listening on loopback (a test's swarm) loopback alone. Anyone can announce a peer
    or return a node at 10.0.0.1 or 127.0.0.1, which would have the monitor knock on its
    own network's doors."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback if loopback else address.is_global


def dht_settings(options: dict[str, Any], url: str, max_items: int = 50,
                 run_timeout: float = 600.0) -> DhtSettings:
    """The target's `url` (the first bootstrap node, `dht://HOST:PORT`) and `dht` table as
    settings; ValueError (one line, naming the key) for anything wrong."""
    unknown = sorted(set(options) - set(DHT_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], DHT_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(DHT_KEYS)})"
        raise ValueError(f"dht.{unknown[0]}: unknown key '{unknown[0]}'{hint}")
    parts = urlsplit(url)
    if parts.scheme != "dht":
        raise ValueError(f"url: kind 'dht' takes dht://HOST:PORT (a bootstrap node), "
                         f"got {url!r}")
    first = parse_node(parts.netloc, "url")
    listen = parse_node(options.get("listen", DEFAULT_LISTEN), "dht.listen")
    extra = options.get("bootstrap_nodes", [])
    if not isinstance(extra, list):
        raise ValueError("dht.bootstrap_nodes: must be an array of HOST:PORT strings")
    nodes = [first, *(parse_node(v, "dht.bootstrap_nodes") for v in extra)]
    if os.environ.get(LOOPBACK_ONLY_ENV):
        keys = ("dht.listen", "url", *("dht.bootstrap_nodes",) * len(extra))
        for key, node in zip(keys, (listen, *nodes), strict=True):
            if not _loopback(node.host):
                raise ValueError(f"{key}: {node} is not a loopback address, and "
                                 f"{LOOPBACK_ONLY_ENV} allows only loopback")
    rate = _number(options, "rate", DEFAULT_RATE, 0.1, 100)
    max_nodes = int(_number(options, "max_nodes", DEFAULT_MAX_NODES, 1, 10_000, integer=True))
    max_metadata = int(_number(options, "max_metadata_bytes", DEFAULT_MAX_METADATA, 1024,
                               MAX_METADATA_LIMIT, integer=True))
    sample = options.get("sample_infohashes", False)
    if not isinstance(sample, bool):
        raise ValueError("dht.sample_infohashes: must be true or false")
    raw_timeout = options.get("lookup_timeout", DEFAULT_LOOKUP_TIMEOUT)
    try:
        lookup_timeout = parse_duration(raw_timeout)
    except ValueError as exc:
        raise ValueError(f"dht.lookup_timeout: {exc}") from None
    if lookup_timeout > 300:
        raise ValueError("dht.lookup_timeout: must be at most 5m")
    return DhtSettings(listen=listen, bootstrap=tuple(nodes), rate=rate, max_nodes=max_nodes,
                       max_metadata_bytes=max_metadata, sample_infohashes=sample,
                       lookup_timeout=lookup_timeout, max_torrents=max_items,
                       budget=0.9 * run_timeout)


def _number(options: dict[str, Any], key: str, default: float, low: float, high: float, *,
            integer: bool = False) -> float:
    value = options.get(key, default)
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and not (integer and isinstance(value, float)) and low <= value <= high:
        return float(value)
    what = "an integer" if integer else "a number"
    raise ValueError(f"dht.{key}: must be {what} from {low:g} to {high:g}, got {value!r}")


# --------------------------------------------------------------------------- the poll


@dataclass
class Swarm:
    """What one lookup of an infohash found."""

    infohash: str  # as registered (40 hex for btih, 64 for btmh) or sampled (40 hex)
    peers: set[tuple[str, int]] = field(default_factory=set)


@dataclass
class Metadata:
    """A sampled infohash's info dict as its peers sent it (BEP 9)."""

    infohash: str
    info: bytes
    peers: int
    sampled_from: str


@dataclass
class PollResult:
    swarms: list[Swarm]
    metadata: list[Metadata]
    tried: list[str]  # sampled infohashes whose metadata was asked for and not got
    read: list[str]  # sampled infohashes whose torrent was read (both ids of a hybrid)
    nodes_asked: int
    samples: int
    payload_bytes: int  # file content received by the metadata fetches: always 0
    state: bytes  # the node's DHT state, for the next poll


class Pacer:
    """At most `rate` requests a second, spread evenly."""

    def __init__(self, rate: float):
        self.gap = 1.0 / rate
        self.next = time.monotonic()

    def wait(self, stop: threading.Event) -> None:
        now = time.monotonic()
        if self.next > now:
            stop.wait(self.next - now)
        self.next = max(now, self.next) + self.gap


class Engine:
    """One libtorrent session for one poll: a DHT node that asks and never announces."""

    def __init__(self, settings: DhtSettings, stop: threading.Event, state: bytes = b""):
        """`state` is the node's DHT state (its id and the nodes it knew) from the last
        poll: asked first, they spare the bootstrap nodes a request each poll."""
        try:
            import libtorrent as lt
        except ImportError:
            raise SourceError(MISSING_ENGINE) from None
        self.lt = lt
        self.settings = settings
        self.stop = stop
        self.pacer = Pacer(settings.rate)
        self.payload = 0  # payload bytes the metadata fetches received (always 0)
        self.scratch = tempfile.mkdtemp(prefix="weightwatch-dht-")
        listen = str(settings.listen)
        self.loopback = _loopback(settings.listen.host)
        category = lt.alert.category_t
        pack: lt.settings_pack = {
            "listen_interfaces": listen,
            "enable_dht": True,
            # BEP 43: a node that leaves after each poll stays out of others' routing
            # tables (it asks, and answers nobody), instead of leaving a dead entry there.
            "dht_read_only": True,
            "dht_bootstrap_nodes": ",".join(str(n) for n in settings.bootstrap),
            # Nothing that talks to routers or the local network; peers over TCP alone
            # (every client takes it; a uTP attempt to a peer without it stalls a fetch).
            "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
            "enable_outgoing_utp": False, "enable_incoming_utp": False,
            "max_metadata_size": settings.max_metadata_bytes,
            "alert_mask": (category.status_notification | category.error_notification
                           | category.dht_operation_notification | category.stats_notification),
            "user_agent": "weightwatch", "peer_fingerprint": "-WW0001-",
            # On a network of one address (a test's loopback swarm) libtorrent's defences
            # against many nodes behind one IP would leave a single node to ask.
            **({"dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
                "dht_prefer_verified_node_ids": False, "dht_ignore_dark_internet": False,
                "allow_multiple_connections_per_ip": True, "dht_block_ratelimit": 100_000}
               if self.loopback else {}),
        }
        params = lt.session_params(pack)
        if state:
            try:
                params = lt.read_session_params(state, lt.save_state_flags_t.save_dht_state)
                params.settings = pack
            except RuntimeError as exc:  # a cursor from another libtorrent: bootstrap anew
                log.info("dht_state_unreadable", reason=str(exc)[:200])
        self.session: lt.session = lt.session(params)

    def state(self) -> bytes:
        flag = self.lt.save_state_flags_t.save_dht_state
        if hasattr(self.session, "session_state"):
            return self.lt.write_session_params_buf(self.session.session_state(flag), flag)
        # libtorrent 2.0's bindings have no session_state; its save_state is the same dict
        # (the same bytes, bencoded), which read_session_params reads back.
        return bytes(self.lt.bencode(self.session.save_state(flag)))

    def close(self) -> None:
        for handle in self.session.get_torrents():
            self.session.remove_torrent(handle)
        self.session.pause()  # the session itself ends with the engine, after the poll
        shutil.rmtree(self.scratch, ignore_errors=True)

    def alerts(self, wait_ms: int = 100) -> list[lt.alert]:
        self.session.wait_for_alert(wait_ms)
        return list(self.session.pop_alerts())

    def _sha1(self, infohash: str) -> lt.sha1_hash:
        # BEP 52: a v2 infohash is looked up in the DHT by its first 20 bytes.
        return self.lt.sha1_hash(bytes.fromhex(infohash)[:20])

    def bootstrap(self) -> None:
        """Until the routing table holds a node, or one lookup timeout."""
        deadline = time.monotonic() + self.settings.lookup_timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            self.session.post_session_stats()
            for alert in self.alerts(200):
                if isinstance(alert, self.lt.session_stats_alert) \
                        and alert.values.get("dht.dht_nodes", 0) > 0:
                    return
        nodes = ", ".join(str(n) for n in self.settings.bootstrap)
        raise SourceError(f"no DHT node answered within {self.settings.lookup_timeout:g}s "
                          f"(bootstrap nodes: {nodes})")

    def lookup(self, infohashes: Sequence[str]) -> list[Swarm]:
        """Every infohash's peers: one `get_peers` each, their answers gathered until they
        stop coming (SETTLE_SECONDS) or the lookup timeout."""
        swarms = {ih[:40]: Swarm(ih) for ih in infohashes}
        for ih in infohashes:
            self.pacer.wait(self.stop)
            self.session.dht_get_peers(self._sha1(ih))
        deadline = time.monotonic() + self.settings.lookup_timeout
        settle = min(SETTLE_SECONDS, self.settings.lookup_timeout / 5)
        last = time.monotonic()
        while time.monotonic() < deadline and not self.stop.is_set():
            for alert in self.alerts():
                if isinstance(alert, self.lt.dht_get_peers_reply_alert):
                    swarm = swarms.get(str(alert.info_hash))
                    if swarm is not None:
                        swarm.peers.update((str(h), int(p)) for h, p in alert.peers())
                        last = time.monotonic()
            # Stop once every swarm answered and then nothing more came for a while.
            if time.monotonic() - last > settle and all(s.peers for s in swarms.values()):
                break
        return list(swarms.values())

    def sample(self, skip: set[str]) -> tuple[dict[str, str], int, int]:
        """Infohashes sampled from up to `max_nodes` nodes (BEP 51), starting at the
        bootstrap nodes and going on to the nodes each answer names: {infohash: the node
        that gave it}, less those in `skip`; and the nodes asked, the samples seen."""
        todo: list[tuple[str, int]] = [(n.host, n.port) for n in self.settings.bootstrap]
        asked: set[tuple[str, int]] = set()
        found: dict[str, str] = {}
        seen = 0
        target = self.lt.sha1_hash(secrets.token_bytes(20))
        deadline = time.monotonic() + self.settings.lookup_timeout
        pending = 0
        while time.monotonic() < deadline and not self.stop.is_set():
            while todo and len(asked) < self.settings.max_nodes:
                endpoint = todo.pop(0)
                if endpoint in asked:
                    continue
                asked.add(endpoint)
                self.pacer.wait(self.stop)
                self.session.dht_sample_infohashes(endpoint, target)
                pending += 1
            if pending == 0:
                break
            for alert in self.alerts():
                if not isinstance(alert, self.lt.dht_sample_infohashes_alert):
                    continue
                pending -= 1
                host, port = alert.endpoint
                for sample in alert.samples:
                    seen += 1
                    ih = str(sample)
                    if ih not in skip:
                        found.setdefault(ih, str(Node(str(host), int(port))))
                todo.extend((str(n["endpoint"][0]), int(n["endpoint"][1]))
                            for n in alert.nodes if self.reachable(str(n["endpoint"][0])))
        return found, len(asked), seen

    def reachable(self, host: str) -> bool:
        return contactable(host, loopback=self.loopback)

    def metadata(self, infohash: str, peers: set[tuple[str, int]]) -> bytes | None:
        """The info dict of `infohash` from `peers` (BEP 9), or None if no peer sent it in
        time."""
        lt = self.lt
        params = lt.add_torrent_params()
        params.info_hashes = lt.info_hash_t(self._sha1(infohash))
        # Nothing is written there (no piece is ever requested), but libtorrent wants a
        # folder it could write to.
        params.save_path = self.scratch
        params.flags = (lt.torrent_flags.upload_mode | lt.torrent_flags.default_dont_download
                        | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_pex
                        | lt.torrent_flags.disable_lsd)
        handle = self.session.add_torrent(params)
        try:
            for peer in peers:
                if self.reachable(peer[0]):
                    handle.connect_peer(peer)
            deadline = time.monotonic() + self.settings.lookup_timeout
            while time.monotonic() < deadline and not self.stop.is_set():
                for alert in self.alerts():
                    if isinstance(alert, (lt.metadata_failed_alert, lt.torrent_error_alert)):
                        log.warning("dht_metadata_failed", infohash=infohash,
                                    reason=alert.message()[:200])
                        return None
                    if isinstance(alert, lt.metadata_received_alert) and alert.handle == handle:
                        torrent = handle.torrent_file()
                        return bytes(torrent.info_section()) if torrent is not None else None
            if not self.stop.is_set():
                log.warning("dht_metadata_missing", infohash=infohash, peers=len(peers),
                            waited_s=self.settings.lookup_timeout)
            return None
        finally:
            self.payload += int(handle.status().total_payload_download)
            self.session.remove_torrent(handle)


def poll(settings: DhtSettings, infohashes: Sequence[str], skip: set[str],
         stop: threading.Event, state: bytes = b"") -> PollResult:
    """One poll of the DHT, blocking (run in a thread)."""
    deadline = time.monotonic() + settings.budget
    engine = Engine(settings, stop, state)
    try:
        engine.bootstrap()
        swarms = engine.lookup(infohashes) if infohashes else []
        metadata: list[Metadata] = []
        tried: list[str] = []
        read: list[str] = []
        nodes_asked = samples = 0
        if settings.sample_infohashes:
            found, nodes_asked, samples = engine.sample(skip | {ih[:40] for ih in infohashes})
            fetches = 0
            for ih, node in found.items():
                if stop.is_set() or fetches >= settings.max_torrents:
                    break
                if ih in read or ih in tried:
                    continue
                if time.monotonic() + 2 * settings.lookup_timeout > deadline:
                    # A lookup and a fetch more might outlast the run: the rest next poll.
                    log.info("dht_poll_budget_spent", fetched=len(metadata), tried=len(tried))
                    break
                fetches += 1
                (swarm,) = engine.lookup([ih])
                info = engine.metadata(ih, swarm.peers) if swarm.peers else None
                if engine.payload:  # what upload mode and priority 0 rule out
                    raise SourceError(f"{ih}: file content received during a metadata fetch")
                if info is None:
                    if not swarm.peers:
                        log.info("dht_sample_without_peers", infohash=ih)
                    tried.append(ih)
                    continue
                # A hybrid torrent is in the DHT under both ids: fetched once.
                ids = {ih, hashlib.sha1(info).hexdigest(), hashlib.sha256(info).hexdigest()[:40]}
                if len(info) > settings.max_metadata_bytes:
                    # libtorrent 2.1 takes a size the peer announces, up to 4 MiB, whatever
                    # max_metadata_size says (ut_metadata.cpp): the bound is kept here,
                    # before anything parses it.
                    log.warning("dht_metadata_refused", infohash=ih, size=len(info),
                                limit=settings.max_metadata_bytes)
                    tried.extend(ids - set(tried))
                    continue
                metadata.append(Metadata(ih, info, len(swarm.peers), node))
                read.extend(ids - set(read))
        return PollResult(swarms, metadata, tried, read, nodes_asked, samples, engine.payload,
                          engine.state())
    finally:
        engine.close()


# --------------------------------------------------------------------------- the source


class DhtSource(Source):
    kind = "dht"
    option_keys = frozenset({"dht"})
    url_schemes: ClassVar[tuple[str, ...]] = ("dht",)
    watches_infohashes: ClassVar[bool] = True

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        table = options.get("dht", {})
        try:
            if not any(key == "url" for key, _ in problems):  # said once, by the base check
                dht_settings(table if isinstance(table, dict) else {}, str(options["url"]))
        except ValueError as exc:
            key, _, message = str(exc).partition(": ")  # "dht.rate: must be ..."
            problems.append((key, message))
        # A disabled example (the shipped config.toml has one) needs no engine yet.
        if options.get("enabled", True) and importlib.util.find_spec("libtorrent") is None:
            problems.append(("kind", MISSING_ENGINE))
        return problems

    def settings(self) -> DhtSettings:
        try:
            return dht_settings(self.target.dht, self.target.url, self.target.max_items,
                                self.fetcher.settings.run_timeout)
        except ValueError as exc:
            raise SourceError(str(exc)) from None

    async def documents(self) -> AsyncIterator[Document]:
        settings = self.settings()
        registered = _by_value(self.infohashes)
        read = _remembered(self.cursor.get("read"))
        retry = _iso(datetime.now(UTC) - RETRY_AFTER)
        tried = {ih: at for ih, at in _remembered(self.cursor.get("tried")).items()
                 if at > retry and ih not in read}
        stop = threading.Event()
        try:
            result = await asyncio.to_thread(poll, settings, list(registered),
                                             set(read) | set(tried), stop,
                                             _state(self.cursor.get("state")))
        finally:
            stop.set()  # a cancelled run (timeout, shutdown) ends the thread's waits
        now = utcnow()
        history = _histories(self.cursor.get("peers"))
        for swarm in result.swarms:
            counts = history.setdefault(swarm.infohash, [])
            counts.append([now, len(swarm.peers)])
            del counts[:-HISTORY_POLLS]
            if swarm.peers:
                yield self._swarm_document(swarm, registered[swarm.infohash], counts, now)
        for meta in result.metadata:
            doc = self._metadata_document(meta, now)
            if doc is not None:
                yield doc
        tried.update(dict.fromkeys(result.tried, now))
        read.update(dict.fromkeys(result.read, now))
        log.info("dht_polled", infohashes=len(result.swarms),
                 with_peers=sum(1 for s in result.swarms if s.peers),
                 nodes_asked=result.nodes_asked, samples=result.samples,
                 metadata=len(result.metadata), payload_bytes=result.payload_bytes)
        self.cursor["peers"] = {ih: counts for ih, counts in history.items() if ih in registered}
        self.cursor["read"] = dict(list(read.items())[-MAX_REMEMBERED:])
        self.cursor["tried"] = dict(list(tried.items())[-MAX_REMEMBERED:])
        if len(result.state) <= MAX_STATE_BYTES:
            self.cursor["state"] = base64.b64encode(result.state).decode()

    def _swarm_document(self, swarm: Swarm, entries: list[KnownDigest],
                        counts: list[list[Any]], now: str) -> Document:
        entry = entries[0]
        algo = entry.algo
        what = entry.artifact or entry.model
        seen = f"seen with {_peers(len(swarm.peers))} on {_day(now)}"
        table = "\n".join(f"  {at}  {_peers(n)}" for at, n in reversed(counts))
        urn = f"btmh:1220{swarm.infohash}" if algo == "btmh" else f"btih:{swarm.infohash}"
        peers = sorted(swarm.peers)[:MAX_PEERS_IN_SNAPSHOT]
        evidence = {"infohash": swarm.infohash, "algo": algo, "polled_at": now,
                    "peers": len(swarm.peers), "history": counts,
                    "peer_addresses": [f"{h}:{p}" for h, p in peers]}
        # Title and text are what rules read: they name the infohash, never the model,
        # or every poll would be a mention of it that nobody wrote.
        return Document(
            target=self.target.name, key=f"dht:swarm:{swarm.infohash}",
            url=f"magnet:?xt=urn:{urn}", title=f"A registered torrent's swarm: {seen}",
            text=(f"The swarm of {algo} {swarm.infohash} was {seen} "
                  f"(BEP 5 get_peers).\nPeers over the last polls:\n{table}"),
            extras={"dht": {k: v for k, v in evidence.items() if k != "peer_addresses"},
                    "digests": [{"algo": algo, "value": swarm.infohash,
                                 "encoding": "DHT get_peers",
                                 "context": f"{what}: {algo} {swarm.infohash} {seen}"}]},
            snapshot=_json(evidence), snapshot_url=f"magnet:?xt=urn:{urn}", fetched_at=now)

    def _metadata_document(self, meta: Metadata, now: str) -> Document | None:
        metainfo = b"d4:info" + meta.info + b"e"
        try:
            info = parse_torrent(metainfo)
        except TorrentError as exc:
            log.warning("dht_metadata_unparseable", infohash=meta.infohash, reason=str(exc))
            return None
        extras = metainfo_extras(info)
        digests = extras.pop("digests")
        listed: FileList = {"label": "DHT metadata", "name": info.name,
                            "files": extras.pop("files"), "total_size": extras.pop("total_size")}
        # The torrent's own ids, whichever of a hybrid's two the DHT sample gave.
        urns = [*([f"btih:{info.infohash_v1}"] if info.infohash_v1 else []),
                *([f"btmh:1220{info.infohash_v2}"] if info.infohash_v2 else [])]
        magnet = "magnet:?" + "&".join(f"xt=urn:{urn}" for urn in urns)
        extras.update({"name": info.name, "magnet": magnet})
        paths = [f.path for f in info.files[:MAX_FILES_IN_TEXT]]
        return Document(
            target=self.target.name, key=f"dht:metadata:{urns[0].split(':')[-1]}", url=magnet,
            title=info.name,
            text="\n".join([f"{info.name} ({info.total_size} bytes, {len(info.files)} files; "
                            f"metadata from {meta.peers} peers, sampled from DHT node "
                            f"{meta.sampled_from} on {_day(now)})", *paths]),
            extras={"torrent": extras, FILE_LIST: listed, "digests": digests,
                    "dht": {"infohash": meta.infohash, "peers": meta.peers,
                            "sampled_from": meta.sampled_from, "fetched_at": now}},
            snapshot=metainfo, snapshot_url=magnet, fetched_at=now)


def _by_value(entries: Sequence[KnownDigest]) -> dict[str, list[KnownDigest]]:
    """Registered infohashes (lowercase hex) to their entries, in registry order."""
    out: dict[str, list[KnownDigest]] = {}
    for entry in entries:
        if entry.algo in ("btih", "btmh") and len(entry.value) in (40, 64):
            out.setdefault(entry.value, []).append(entry)
    return out


def _histories(value: Any) -> dict[str, list[list[Any]]]:
    """The cursor's peer counts, {infohash: [[polled_at, peers], ...]}, well-formed only."""
    if not isinstance(value, dict):
        return {}
    return {ih: [[at, n] for at, n in (p for p in counts if isinstance(p, list) and len(p) == 2)
                 if isinstance(at, str) and type(n) is int]
            for ih, counts in value.items() if isinstance(ih, str) and isinstance(counts, list)}


def _state(value: Any) -> bytes:
    """The cursor's DHT state; nothing for anything else."""
    if not isinstance(value, str) or len(value) > 2 * MAX_STATE_BYTES:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def _remembered(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _peers(n: int) -> str:
    return f"{n} peer" if n == 1 else f"{n} peers"


def _day(iso: str) -> str:
    """"2026-12-07 21:30 UTC" from the store's ISO text."""
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


__all__ = ["DhtSettings", "DhtSource", "LOOPBACK_ONLY_ENV", "dht_settings", "poll"]
