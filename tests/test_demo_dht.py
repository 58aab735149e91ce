"""The demo world's loopback DHT (demo/dht.py): what the demo's `dht` target finds there is
exactly what the world planted: the release's swarm with its peer count, and a re-pack that
no index lists by its file list and its pieces roots; the noise (another model's files
under the released names, a dataset) is read and is no hit.

The crawl runs the demo config's own `demo-dht` target against the session's demo world, in
a store registered as `weightwatch demo` registers it. LOOPBACK_ONLY_ENV makes the source
refuse any node off loopback, whatever the demo config says.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from support import crawl, expected, found, query, registered_store

from demo.dht import TARGET, DemoDht
from demo.release import Release
from demo.runner import demo_config
from demo.world import DemoWorld
from monitor.config import load_config
from monitor.sources.dht import LOOPBACK_ONLY_ENV, DhtSource


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOPBACK_ONLY_ENV, "1")


def dht_table(world: DemoWorld) -> dict[str, Any]:
    (table,) = [t for t in tomllib.loads(world.targets_toml())["targets"] if t["kind"] == "dht"]
    return table


def test_the_demo_config_has_a_dht_target_on_the_worlds_nodes_alone(
        demo_world: DemoWorld, tmp_path: Path) -> None:
    table = dht_table(demo_world)
    assert demo_world.dht.swarm is not None
    nodes = demo_world.dht.swarm.nodes
    assert table["name"] == TARGET and table["url"] == f"dht://{nodes[0]}"
    assert table["dht"]["bootstrap_nodes"] == [nodes[1]]
    assert table["dht"]["listen"] == "127.0.0.1:0" and table["dht"]["sample_infohashes"]
    # The nodes themselves reach nothing beyond loopback: bound there, no public bootstrap
    # node, nothing that talks to routers or the local network.
    for session in demo_world.dht.swarm.sessions:
        settings = session.get_settings()
        assert settings["listen_interfaces"] == "127.0.0.1:0"
        assert settings["dht_bootstrap_nodes"] == ""
        assert not any(settings[k] for k in ("enable_lsd", "enable_upnp", "enable_natpmp"))
    assert all(n.startswith("127.0.0.1:") for n in nodes)
    # Every torrent the world seeds but the release's two may be sampled and fetched.
    assert table["max_items"] >= len(demo_world.dht.seeded) - 2
    # The demo's whole config loads, and the target checks (loopback only, as the guard wants).
    path = tmp_path / "config.toml"
    path.write_text(demo_config(demo_world, 2525, path))
    (target,) = [t for t in load_config(path).targets if t.kind == "dht"]
    assert DhtSource.check_options({"url": target.url, "dht": target.dht}) == []


def test_the_ground_truth_is_the_same_on_every_run(demo_world: DemoWorld,
                                                   demo_release: Release) -> None:
    """The torrents are built by the demo's own writers: the same infohashes, hence the
    same documents and plants, from another instance (no node started)."""
    assert DemoDht(demo_release).documents() == demo_world.dht.documents()
    docs = demo_world.dht.documents()
    assert len({d.url for d in docs}) == len(docs)
    assert all(d.url.startswith("magnet:?xt=urn:bt") and d.source == "dht" for d in docs)
    planted = {(p.url, p.kind) for p in demo_world.planted if p.source == "dht"}
    assert (f"magnet:?xt=urn:btih:{demo_release.infohash}", "torrent") in planted
    assert (f"magnet:?xt=urn:btmh:1220{demo_release.infohash_v2}", "torrent") in planted
    # Two noise torrents, one of them bait: the released names with other sizes.
    noise = [u for u in demo_world.noise_urls if u.startswith("magnet:")]
    assert len(noise) == 2
    bait = [n for n in demo_world.near_misses if n.source == "dht"]
    assert [n.value.split(":")[0] for n in bait] == ["model.safetensors"]
    assert {n.url for n in bait} < set(noise)


@pytest.mark.slow
def test_the_demo_dht_target_finds_exactly_what_was_planted(
        demo_world: DemoWorld, demo_release: Release, tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(demo_config(demo_world, 2525, config_path))
    config = load_config(config_path)
    targets = [t for t in config.targets if t.name == TARGET]
    store = registered_store(tmp_path / "dht.db", demo_release)
    (result,) = crawl(store, targets, rules=config.rules)
    assert result.status == "ok", result.error

    # Exactly the planted hits: nothing missed, nothing more.
    assert found(store, TARGET) == expected(demo_world, "dht")
    hits = store.hits(target=TARGET)
    by_indicator = {h["indicator"]: h for h in hits}

    # The release's swarms, with their peer count: both seeders, for v1 and for v2.
    for ih in (demo_release.infohash, demo_release.infohash_v2):
        hit = by_indicator[ih]
        assert (hit["kind"], hit["severity"]) == ("torrent", "critical")
        assert "seen with 2 peers on " in hit["context"], hit["context"]

    # The re-pack, found with nothing but the DHT: by its file list (the released weights'
    # name and size) and by the v2 pieces root of every released file.
    (repack,) = [s for s in demo_world.dht.seeded if s.name == "h7b_weights_full"]
    weights = demo_release.file("model.safetensors")
    named = by_indicator[f"model.safetensors:{weights.size}"]
    assert (named["url"], named["severity"], named["detector"]) == (
        repack.doc.url, "high", "manifest")
    for f in demo_release.files:
        root = by_indicator[f.pieces_root]
        assert (root["url"], root["severity"], root["detector"]) == (
            repack.doc.url, "critical", "digests")

    # The noise was read (its metadata fetched and stored) and is no hit: not the other
    # model whose files carry the released names, not the dataset.
    noise = [u for u in demo_world.noise_urls if u.startswith("magnet:")]
    stored = {url for (url,) in query(store.path, "SELECT url FROM documents")}
    assert set(noise) <= stored
    assert not {h["url"] for h in hits} & set(noise)
    near = {n.value for n in demo_world.near_misses if n.source == "dht"}
    assert near and not near & {h["indicator"] for h in hits}

    # Metadata only: no seeder sent a byte of any file.
    assert demo_world.dht.swarm is not None
    assert demo_world.dht.swarm.payload_uploaded() == 0
    # What was read is remembered, so the next poll fetches none of it again.
    assert repack.doc.url.split("btih:")[1][:40] in store.cursor(TARGET)["read"]
    store.close()
