"""Triage (issue 8's commands, issue 7's suppression): `hits ack|resolve|false-positive`,
kept across restarts and shown by `hits show`; a false positive's indicator at its URL is
recorded again but never alerted."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from support import Server, cli, hit, make_config, save

from monitor.alerts import Alerter
from monitor.cli import main
from monitor.models import Document
from monitor.store import Store


def test_triage_is_recorded_and_survives_restarts(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = save(store, [hit(indicator="ab" * 32), hit(indicator="cd" * 32)])
    cli(db, "hits", "ack", str(ids[0]), "--note", "looking into it")
    cli(db, "hits", "resolve", str(ids[0]), "--note", "takedown confirmed")
    shown = json.loads(cli(db, "hits", "show", str(ids[0]), "--format", "json").stdout)[0]
    assert shown["status"] == "resolved"
    assert [(t["status"], t["by"], t["note"]) for t in shown["triage"]] == [
        ("acknowledged", "analyst-7", "looking into it"),
        ("resolved", "analyst-7", "takedown confirmed")]
    table = cli(db, "hits", "show", str(ids[0])).stdout
    assert "resolved by analyst-7: takedown confirmed" in table
    statuses = {h["id"]: h["status"] for h in json.loads(
        cli(db, "hits", "--status", "resolved", "--format", "json").stdout)}
    assert statuses == {ids[0]: "resolved"}
    # An unknown id changes nothing, and says which.
    out = cli(db, "hits", "ack", str(ids[1]), "999", code=1)
    assert "999" in out.stderr
    with Store(db) as store:
        assert store.hit(ids[1])["status"] == "new"


def test_a_false_positive_is_not_emailed_now_or_when_found_again(tmp_path: Path) -> None:
    from demo.smtp_sink import free_port

    db = tmp_path / "w.db"
    with Store(db) as store:
        noise = save(store, [hit(kind="mention", severity="low", indicator="heron-7b")],
                     key="p1", url="https://birds.example/heron")
        real = save(store, [hit(indicator="ab" * 32)], key="p2", url="https://leak.example/1")
    cli(db, "hits", "false-positive", str(noise[0]), "--note", "the bird")
    with Server(free_port()) as server, Store(db) as store:
        assert Alerter(store, make_config(server.port)).flush().alerts_sent == 1
        assert server.emails[0]["X-Weightwatch-Hits"] == str(real[0])
        # The page changes (a new document key) but says the same thing: recorded, quiet.
        doc = Document(target="forum", key="p1-edited", url="https://birds.example/heron",
                       text="heron-7b again")
        _, again = store.save_document(doc, [hit(kind="mention", severity="low",
                                                 indicator="heron-7b")], run_id=None)
        assert store.hit(again[0])["status"] == "false_positive"
        assert [r for r in store.outbox() if r["hit_id"] == again[0]] == []
        # The same indicator at another URL still alerts.
        elsewhere = save(store, [hit(kind="mention", severity="low", indicator="heron-7b")],
                         key="p3", url="https://forum.example/t/9")
        assert Alerter(store, make_config(server.port)).flush().alerts_sent == 1
        assert server.emails[1]["X-Weightwatch-Hits"] == str(elsewhere[0])


def test_hits_filters_and_keyset_pages(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = [i for n in range(7) for i in save(
            store, [hit(indicator=f"{n:02x}" * 32, recipient="lab-17" if n % 2 else None,
                        severity="critical" if n < 3 else "high")],
            key=f"k{n}", url=f"https://m{n}.example/x_{n}")]
    every = json.loads(cli(db, "hits", "--format", "json").stdout)
    pages, cursor = [], None
    while True:
        args = ["hits", "--limit", "3", "--format", "json"] + (["--after", cursor] if cursor else [])
        out = CliRunner().invoke(main, ["--config", "/dev/null", "--db", str(db), *args])
        page = json.loads(out.stdout)
        pages.append([h["id"] for h in page])
        if "next page: --after " not in out.stderr:
            break
        cursor = out.stderr.split("next page: --after ")[1].split()[0]
    assert [i for page in pages for i in page] == [h["id"] for h in every]
    assert [len(p) for p in pages] == [3, 3, 1]
    labs = json.loads(cli(db, "hits", "--recipient", "lab-17", "--format", "json").stdout)
    assert {h["id"] for h in labs} == {ids[1], ids[3], ids[5]}
    # --text is a substring, not a pattern: "_" matches only an underscore.
    found = json.loads(cli(db, "hits", "--text", "x_4", "--format", "json").stdout)
    assert [h["id"] for h in found] == [ids[4]]
    assert json.loads(cli(db, "hits", "--text", "%", "--format", "json").stdout) == []
    assert json.loads(cli(db, "hits", "--until", "1h", "--format", "json").stdout) == []
    assert "--after" in cli(db, "hits", "--after", "bogus", code=2).stderr
