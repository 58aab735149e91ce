"""Incidents (issue 8): hits grouped as the alerter groups them, `hits show` listing a
hit's incident, and `hits show --snapshot` writing the page as it was fetched."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from support import LEAK_SNAPSHOT, cli, hit, leak, save

from monitor.incidents import group_incidents, incidents
from monitor.models import GROUP_LABELS
from monitor.store import Store


def test_incidents_group_hits_as_the_alerter_does(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    ids = leak(db)
    cli(db, "hits", "false-positive", str(ids["v1"][3]), "--note", "mirror of a decoy")
    listed = json.loads(cli(db, "incidents", "--format", "json").stdout)
    assert [(i["key"], i["severity"], i["hits"], i["locations"]) for i in listed] == [
        ("model:heron-7b|release:v1", "critical", 3, 3),
        ("model:heron-7b|release:v2", "high", 1, 1),
        ("model:heron-7b", "low", 1, 1)]
    assert listed[0]["hit_ids"] == ids["v1"][:3]
    assert listed[0]["labels"] == {"model": "heron-7b", "release": "v1"}
    assert listed[0]["statuses"] == {"new": 3} and listed[1]["kinds"] == ["torrent"]
    # --all counts the dismissed mirror too.
    everything = json.loads(cli(db, "incidents", "--all", "--format", "json").stdout)
    assert everything[0]["hits"] == 4 and everything[0]["open"] == 3
    assert everything[0]["statuses"] == {"new": 3, "false_positive": 1}
    table = cli(db, "incidents").stdout.splitlines()
    assert table[0].split()[:5] == ["SEVERITY", "MODEL", "RELEASE", "HITS", "OPEN"]
    assert table[1].split()[:5] == ["critical", "heron-7b", "v1", "3", "3"]
    assert table[3].split()[:4] == ["low", "heron-7b", "1", "1"]  # no release: blank
    # The same key the alerter would use with another group_by in the config.
    config = tmp_path / "config.toml"
    config.write_text('[alerts]\ngroup_by = ["model"]\n')
    result = cli(db, "--config", str(config), "incidents", "--format", "csv")
    rows = result.stdout.splitlines()
    assert len(rows) == 2 and rows[1].startswith("model:heron-7b,")


def test_hits_show_lists_the_other_hits_of_its_incident(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    ids = leak(db)
    shown = json.loads(cli(db, "hits", "show", str(ids["v1"][1]), "--format", "json").stdout)[0]
    incident = shown["incident"]
    assert incident["key"] == "model:heron-7b|release:v1" and incident["hits"] == 4
    assert incident["other_hit_ids"] == [ids["v1"][0], *ids["v1"][2:]]
    assert shown["release"] == "v1"
    table = cli(db, "hits", "show", str(ids["chatter"][0])).stdout
    assert "incident model:heron-7b: 1 hit at 1 location" in table
    # The table lists the worst siblings first, and says how many it left out.
    with Store(db) as store:
        more = [i for n in range(25) for i in save(
            store, [hit(kind="mention", severity="low", indicator="Heron 7B",
                        artifact="heron-7b/model.safetensors")],
            key=f"more-{n}", url=f"https://board.example/{n}")]
    lines = cli(db, "hits", "show", str(more[0])).stdout.splitlines()
    listed = lines[lines.index(next(x for x in lines if x.startswith("incident "))) + 1:]
    assert [x.split()[0] for x in listed[:4]] == [str(i) for i in ids["v1"]]
    assert len(listed) == 21 and "8 more" in listed[-1]


def test_the_store_groups_as_the_alerter_does(tmp_path: Path) -> None:
    """Incidents summed in SQL over the table equal the alerter's grouping in Python of
    the same hits, for every label `alerts.group_by` may name."""
    db = tmp_path / "w.db"
    leak(db)
    with Store(db) as store:
        save(store, [hit(kind="torrent", severity="high", indicator="ef" * 20,
                         indicator_type="btih (magnet)", recipient="lab-17")],
             key="t", url="https://tracker.example/t")
        save(store, [hit(model=None, kind="mention", severity="medium", indicator="x")],
             key="n", url="https://board.example/n")
        for group_by in ([], ["model"], ["model", "release"], list(GROUP_LABELS)):
            in_python = [i.summary() for i in group_incidents(
                store.hits_with_release(), group_by, store.groups_sent())]
            assert incidents(store, group_by, include_closed=True) == in_python, group_by
        # By infohash: the magnet apart, the model's other hits together, the unattributed one.
        assert [i["key"] for i in incidents(store, ["model", "infohash"])] == [
            "model:heron-7b", "model:heron-7b|infohash:" + "ef" * 20, "model:"]


def test_hits_show_snapshot_writes_the_page_as_fetched(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    ids = leak(db)
    out = tmp_path / "evidence.html"
    result = cli(db, "hits", "show", str(ids["v1"][2]), "--snapshot", str(out),
                 "--format", "json")
    assert out.read_bytes() == LEAK_SNAPSHOT + bytes([2])
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    # The file is what the hit's evidence names, and stdout stays clean JSON.
    assert json.loads(result.stdout)[0]["document"]["snapshot_sha256"] == digest
    assert digest in result.stderr
    # Evidence is never overwritten, nor written through a planted link.
    again = cli(db, "hits", "show", str(ids["v1"][1]), "--snapshot", str(out), code=1)
    assert "exists" in again.stderr and out.read_bytes() == LEAK_SNAPSHOT + bytes([2])
    link = tmp_path / "link.html"
    os.symlink(tmp_path / "elsewhere", link)
    cli(db, "hits", "show", str(ids["v1"][1]), "--snapshot", str(link), code=1)
    assert not (tmp_path / "elsewhere").exists()


def test_a_recipient_with_a_comma_is_one_recipient_everywhere(tmp_path: Path) -> None:
    """`Lab 17, Inc.` was two recipients (`Lab 17`, ` Inc.`) in `incidents`, whose SQL
    joined the names with commas, and one in `report`; now one in all three commands."""
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = [i for n in range(2) for i in save(
            store, [hit(recipient="Lab 17, Inc.")], key=f"k{n}",
            url=f"https://mirror{n}.example/w")]
    (listed,) = json.loads(cli(db, "incidents", "--format", "json").stdout)
    assert listed["recipients"] == ["Lab 17, Inc."] and listed["hit_ids"] == ids
    shown = json.loads(cli(db, "hits", "show", str(ids[0]), "--format", "json").stdout)[0]
    assert shown["recipient"] == "Lab 17, Inc."
    assert shown["incident"]["recipients"] == ["Lab 17, Inc."]
    page = tmp_path / "report.html"
    cli(db, "report", "--since", "30d", "--out", str(page))
    assert "Whose copy leaked: <strong>Lab 17, Inc.</strong>" in page.read_text()
