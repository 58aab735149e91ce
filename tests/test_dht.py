"""The `dht` source on a loopback swarm of real libtorrent sessions (tests/dht_swarm.py).

One node seeds the demo release's own torrent, a third its pure v2 torrent (both
infohashes are registered, from the release's magnets); another seeds a re-packed torrent
of the release (another folder name, the weights and a README, libtorrent's own hybrid
layout), which nothing registers and no index lists: the source must find it with nothing
but the DHT (BEP 51 samples, then BEP 9 metadata from the peers `get_peers` gave).
No test reaches beyond 127.0.0.1: the swarm binds there, and LOOPBACK_ONLY_ENV makes the
source refuse any other node whatever a test's config says.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from support import FAST, RecordingFetcher, cli, crawl, registered_store, target

from demo.release import Release
from monitor.config import ConfigError, Target, parse_config
from monitor.models import Document, KnownDigest
from monitor.sources import ADAPTERS, SourceError
from monitor.sources.dht import (
    LOOPBACK_ONLY_ENV,
    MISSING_ENGINE,
    DhtSource,
    contactable,
    dht_settings,
)
from monitor.store import Store

lt = pytest.importorskip("libtorrent")
from dht_swarm import Swarm, make_torrent  # noqa: E402  (needs libtorrent)

REPACK = "heron7b-leaked"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOPBACK_ONLY_ENV, "1")


@pytest.fixture(scope="module")
def repack(demo_release: Release, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """The release's weights re-packed under another name: (folder's parent, .torrent)."""
    root = tmp_path_factory.mktemp("repack")
    (root / REPACK).mkdir()
    weights = demo_release.file("model.safetensors")
    shutil.copy(weights.path, root / REPACK / "model.safetensors")
    (root / REPACK / "README.txt").write_text("enjoy\n")
    return root, make_torrent(root, REPACK)


@pytest.fixture(scope="module")
def swarm(demo_release: Release, repack: tuple[Path, bytes]) -> Iterator[Swarm]:
    s = Swarm(4)
    try:
        s.wait_connected()
        release = s.seed(0, demo_release.torrent_bytes, demo_release.root)
        repacked = s.seed(1, repack[1], repack[0])
        release_v2 = s.seed(2, demo_release.torrent_v2_bytes, demo_release.root)
        for node, handle in ((0, release), (1, repacked), (2, release_v2)):
            s.wait_seeding(handle)
            s.announce(handle, node)
        yield s
    finally:
        s.close()


def dht_target(swarm: Swarm, **dht: Any) -> Any:
    options = {"listen": "127.0.0.1:0", "bootstrap_nodes": swarm.nodes[2:],
               "lookup_timeout": "3s", "rate": 50, **dht}
    return target("dht", f"dht://{swarm.nodes[1]}", name="dht", max_items=5, dht=options)


def run(t: Target, infohashes: list[KnownDigest] | None = None, *, run_timeout: float = 60,
        cursor: dict[str, Any] | None = None) -> tuple[list[Document], dict[str, Any]]:
    """One poll: the documents and the cursor the source would save."""

    async def go() -> tuple[list[Document], dict[str, Any]]:
        async with RecordingFetcher(replace(FAST, run_timeout=run_timeout)) as fetcher:
            source = ADAPTERS[t.kind](t, fetcher, cursor or {}, infohashes=infohashes or ())
            return [d async for d in source.documents()], source.cursor

    return asyncio.run(go())


def registered(demo_release: Release, path: Path) -> list[KnownDigest]:
    with registered_store(path, demo_release) as store:
        return store.registry.infohashes()


def repack_infohash(repack: tuple[Path, bytes]) -> str:
    return str(lt.torrent_info(lt.bdecode(repack[1])).info_hashes().v1)


def repack_magnet(repack: tuple[Path, bytes]) -> str:
    ids = lt.torrent_info(lt.bdecode(repack[1])).info_hashes()
    return f"magnet:?xt=urn:btih:{ids.v1}&xt=urn:btmh:1220{ids.v2}"


# ---------------------------------------------------------------- the swarm, end to end


@pytest.mark.slow
def test_reports_the_release_swarm_and_finds_a_repack_by_its_file_list(
        swarm: Swarm, demo_release: Release, repack: tuple[Path, bytes], tmp_path: Path) -> None:
    store = registered_store(tmp_path / "dht.db", demo_release)
    t = dht_target(swarm, sample_infohashes=True)
    with capture_logs() as logs:
        (result,) = crawl(store, [t])
    assert result.status == "ok", result.error
    (polled,) = [e for e in logs if e["event"] == "dht_polled"]
    assert (polled["metadata"], polled["payload_bytes"]) == (1, 0)
    hits = store.hits(target="dht")
    by_indicator = {h["indicator"]: h for h in hits}

    # The registered torrent's swarm: one critical hit, its evidence the peer count.
    swarm_hit = by_indicator[demo_release.infohash]
    assert (swarm_hit["kind"], swarm_hit["severity"]) == ("torrent", "critical")
    assert "seen with 1 peer on " in swarm_hit["context"], swarm_hit["context"]
    assert swarm_hit["url"] == f"magnet:?xt=urn:btih:{demo_release.infohash}"
    # Our own words are no mention: the swarm's document makes that one hit alone.
    assert [h["indicator"] for h in hits if h["url"] == swarm_hit["url"]] == [
        demo_release.infohash]

    # The re-packed torrent, found through samples and metadata alone: its file list
    # names the released weights by name and size.
    weights = demo_release.file("model.safetensors")
    named = by_indicator[f"model.safetensors:{weights.size}"]
    assert (named["kind"], named["severity"], named["detector"]) == ("torrent", "high", "manifest")
    assert named["url"] == repack_magnet(repack)
    assert REPACK in named["context"]
    # libtorrent makes hybrid torrents: the v2 pieces root is the file's own digest.
    assert by_indicator[weights.pieces_root]["severity"] == "critical"
    # Metadata only: no byte of any file came in (the fetches' total_payload_download,
    # summed) or went out of any seeder (their total_payload_upload).
    assert swarm.payload_uploaded() == 0

    # A second poll: the swarm's document moves on (two counts), no hit is added, and the
    # re-pack already read is not fetched again.
    (again,) = crawl(store, [t])
    assert again.status == "ok", again.error
    assert again.hits_new == 0
    assert len(store.hits(target="dht")) == len(hits)
    cursor = store.cursor("dht")
    assert [n for _, n in cursor["peers"][demo_release.infohash]] == [1, 1]
    # The node's DHT state (its id, the nodes it knew) is kept for the next poll.
    known = lt.read_session_params(base64.b64decode(cursor["state"]),
                                   lt.save_state_flags_t.save_dht_state)
    assert known.dht_state is not None
    assert repack_infohash(repack) in cursor["read"]
    assert swarm.payload_uploaded() == 0


@pytest.mark.slow
def test_without_sampling_only_registered_swarms_are_asked(
        swarm: Swarm, demo_release: Release, tmp_path: Path) -> None:
    # A cursor from another version (state that is not bencoded, junk counts) costs nothing.
    old = {"state": base64.b64encode(b"garbage").decode(), "peers": {"x": [[1, "y"]]},
           "tried": ["not", "a", "dict"]}
    docs, cursor = run(dht_target(swarm), registered(demo_release, tmp_path / "r.db"),
                       cursor=old)
    v1, v2 = demo_release.infohash, demo_release.infohash_v2
    assert [d.key for d in docs] == [f"dht:swarm:{v1}", f"dht:swarm:{v2}"]
    for doc, seeder in zip(docs, (swarm.nodes[0], swarm.nodes[2]), strict=True):
        assert doc.extras["dht"]["peers"] == 1
        assert "Peers over the last polls" in doc.text
        assert json.loads(doc.snapshot)["peer_addresses"] == [seeder]
    # The pure v2 torrent's swarm, looked up by the first 20 bytes of its infohash.
    assert docs[1].url == f"magnet:?xt=urn:btmh:1220{v2}"
    assert docs[1].extras["digests"][0]["algo"] == "btmh"
    assert [n for _, n in cursor["peers"][v2]] == [1]
    assert not cursor["tried"] and not cursor["read"]

    # The next poll starts from the nodes this one knew: it needs no bootstrap node.
    gone = target("dht", "dht://127.0.0.1:9", name="dht", dht={
        "listen": "127.0.0.1:0", "lookup_timeout": "3s", "rate": 50})
    again, cursor = run(gone, registered(demo_release, tmp_path / "r2.db"), cursor=cursor)
    assert [d.key for d in again] == [d.key for d in docs]
    assert [n for _, n in cursor["peers"][v1]] == [1, 1]


@pytest.mark.slow
def test_oversized_metadata_is_refused(swarm: Swarm, demo_release: Release,
                                       repack: tuple[Path, bytes], tmp_path: Path) -> None:
    """An info dict over max_metadata_bytes is refused before anything reads it: no
    document, nothing downloaded, and the infohash remembered as tried (asked again after a
    day), not as read. (libtorrent 2.1 takes a metadata size a peer announces up to 4 MiB
    whatever its max_metadata_size says, so the source checks the size itself.)"""
    info_size = len(lt.torrent_info(lt.bdecode(repack[1])).info_section())
    assert info_size > 1024
    with capture_logs() as logs:
        docs, cursor = run(dht_target(swarm, sample_infohashes=True, max_metadata_bytes=1024),
                           registered(demo_release, tmp_path / "o.db"))
    assert [d.key for d in docs] == [f"dht:swarm:{demo_release.infohash}",
                                     f"dht:swarm:{demo_release.infohash_v2}"]
    # Tried in vain (asked again after a day), not read.
    assert repack_infohash(repack) in cursor["tried"] and not cursor["read"]
    refused = [e for e in logs if e["event"] == "dht_metadata_refused"]
    assert [(e["size"], e["limit"]) for e in refused] == [(info_size, 1024)], logs
    assert swarm.payload_uploaded() == 0


@pytest.mark.slow
def test_a_poll_ends_inside_the_run_timeout(swarm: Swarm, demo_release: Release,
                                            tmp_path: Path) -> None:
    """The poll yields when it is done: with no time left for a lookup and a fetch, the
    sampled torrents wait for the next poll, and what was found is still yielded."""
    with capture_logs() as logs:
        docs, cursor = run(dht_target(swarm, sample_infohashes=True),
                           registered(demo_release, tmp_path / "b.db"), run_timeout=6)
    assert len(docs) == 2 and all(d.key.startswith("dht:swarm:") for d in docs)
    assert "dht_poll_budget_spent" in [e["event"] for e in logs]
    assert not cursor["tried"] and not cursor["read"]


@pytest.mark.slow
def test_targets_test_dry_run(swarm: Swarm, demo_release: Release, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    registered_store(db, demo_release).close()
    config = tmp_path / "config.toml"
    others = ", ".join(f'"{n}"' for n in swarm.nodes[2:])
    config.write_text(f'''
[[targets]]
name = "dht"
kind = "dht"
url = "dht://{swarm.nodes[1]}"
[targets.dht]
listen = "127.0.0.1:0"
bootstrap_nodes = [{others}]
lookup_timeout = "3s"
''')
    result = cli(db, "--config", str(config), "targets", "test", "dht", "--format", "json")
    docs = json.loads(result.stdout)
    assert [(d["url"], [(h["kind"], h["indicator"]) for h in d["hits"]]) for d in docs] == [
        (f"magnet:?xt=urn:btih:{demo_release.infohash}",
         [("torrent", demo_release.infohash)]),
        (f"magnet:?xt=urn:btmh:1220{demo_release.infohash_v2}",
         [("torrent", demo_release.infohash_v2)])]


# ---------------------------------------------------------------- config and failures


def _config(**table: Any) -> dict[str, Any]:
    dht = {"listen": "127.0.0.1:6881", **table.pop("dht", {})}
    return {"targets": [{"name": "d", "kind": "dht", "url": "dht://127.0.0.1:6881", "dht": dht,
                         **table}]}


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, None)
    return "\n".join(info.value.problems)


def test_config_reads_the_dht_table() -> None:
    config = parse_config(_config(dht={"listen": "127.0.0.1:7000", "rate": 2,
                                       "bootstrap_nodes": ["127.0.0.2:6881"],
                                       "sample_infohashes": True,
                                       "max_metadata_bytes": 65536}), None)
    (t,) = config.targets
    settings = dht_settings(t.dht, t.url, t.max_items)
    assert [str(n) for n in settings.bootstrap] == ["127.0.0.1:6881", "127.0.0.2:6881"]
    assert (settings.rate, settings.max_metadata_bytes, settings.sample_infohashes) == (
        2.0, 65536, True)


@pytest.mark.parametrize(("table", "needle"), [
    ({"dht": {"rate": 0}}, "dht.rate: must be a number from 0.1 to 100"),
    ({"dht": {"max_metadata_bytes": 1 << 30}}, "dht.max_metadata_bytes: must be an integer"),
    ({"dht": {"bootstrap_nodes": ["no-port"]}}, "dht.bootstrap_nodes: must be HOST:PORT"),
    ({"dht": {"sample_infohashes": "yes"}}, "dht.sample_infohashes: must be true or false"),
    ({"dht": {"lookup_timeout": "1h"}}, "dht.lookup_timeout: must be at most 5m"),
    ({"dht": {"port": 3}}, "dht.port: unknown key 'port' (known: listen, "),
    ({"dht": {"max_node": 3}}, "dht.max_node: unknown key 'max_node' (did you mean 'max_nodes'?)"),
    ({"url": "https://example.org/"}, "kind 'dht' takes a dht:// URL"),
    # The test-only guard: nothing but loopback while LOOPBACK_ONLY_ENV is set.
    ({"url": "dht://router.bittorrent.com:6881"}, "router.bittorrent.com:6881 is not a loopback"),
    ({"dht": {"listen": "0.0.0.0:6881"}}, "dht.listen: 0.0.0.0:6881 is not a loopback"),
    ({"dht": {"bootstrap_nodes": ["10.0.0.1:6881"]}},
     "dht.bootstrap_nodes: 10.0.0.1:6881 is not a loopback"),
])
def test_config_problems_are_one_line_each(table: dict[str, Any], needle: str) -> None:
    problems = _problems(_config(**table))
    assert needle in problems, problems
    assert len(problems.splitlines()) == 1 and "targets[0] (d)." in problems, problems


def test_other_kinds_refuse_a_dht_url_and_the_dht_table() -> None:
    problems = _problems({"targets": [{"name": "f", "kind": "feed",
                                       "url": "dht://127.0.0.1:6881", "dht": {}}]})
    assert "kind 'feed' takes a http:// or https:// URL" in problems
    assert "dht: does not apply to kind 'feed'" in problems


def test_a_missing_engine_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libtorrent", None)  # import fails as if not installed
    with pytest.raises(SourceError) as info:
        run(target("dht", "dht://127.0.0.1:9", dht={"listen": "127.0.0.1:0"}))
    assert str(info.value) == MISSING_ENGINE
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    options = {"name": "d", "url": "dht://127.0.0.1:9", "dht": {"listen": "127.0.0.1:0"}}
    assert DhtSource.check_options(options) == [("kind", MISSING_ENGINE)]
    # A disabled target (the shipped example) checks without the engine.
    assert DhtSource.check_options({**options, "enabled": False}) == []


def test_no_node_answering_fails_the_run() -> None:
    """A bootstrap node that is not there: the run fails with one line, after one lookup
    timeout, instead of polling an empty routing table."""
    t = target("dht", "dht://127.0.0.1:9", dht={"listen": "127.0.0.1:0",
                                                 "lookup_timeout": 0.5})
    with pytest.raises(SourceError, match=r"no DHT node answered within 0.5s "
                                          r"\(bootstrap nodes: 127.0.0.1:9\)"):
        run(t)


def test_the_adapter_is_registered() -> None:
    assert ADAPTERS["dht"] is DhtSource


def test_a_run_timeout_stops_the_poll_thread(tmp_path: Path) -> None:
    """The engine's waits run in a thread; a run cut short (run timeout, shutdown) must not
    leave it polling the DHT behind the crawler's back."""
    t = target("dht", "dht://127.0.0.1:9", dht={"listen": "127.0.0.1:0",
                                                 "lookup_timeout": "60s"})
    before = threading.active_count()
    with Store(tmp_path / "s.db") as store:
        (result,) = crawl(store, [t], settings=replace(FAST, run_timeout=0.5))
    assert result.status == "failed" and "run exceeded" in (result.error or "")
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_only_public_nodes_and_peers_are_contacted() -> None:
    """What the DHT says is anyone's word: a peer announced at a private or loopback address
    is never connected to, a node returned there never asked (except by a node that itself
    listens on loopback: a test's swarm, which then reaches loopback alone)."""
    for host in ("10.0.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "::1", "fd00::1",
                 "0.0.0.0", "not-an-ip"):
        assert not contactable(host, loopback=False), host
    assert contactable("1.1.1.1", loopback=False) and contactable("2606:4700::1", loopback=False)
    assert contactable("127.0.0.1", loopback=True) and not contactable("1.1.1.1", loopback=True)
