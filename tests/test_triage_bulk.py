"""Triage by incident and by filter (issue 17): one `hits ack --incident KEY` for a leak of
eighty mirrors, filters as `hits` takes them with a dry-run count and `--yes` above the
limit, and the operator's identity from `--by`, $WEIGHTWATCH_OPERATOR, then the login
name, never "unknown"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support import hit, query, save

from monitor.cli import main
from monitor.cli.analysis import BULK_CONFIRM
from monitor.store import Store

LEAK = 82  # the size of the demo's leak when the issue was filed


def ww(db: Path, *args: str, code: int = 0, **env: str | None) -> Result:
    """`weightwatch --db DB ARGS` in-process, with `env` over the process's (None unsets)."""
    result = CliRunner().invoke(main, ["--config", "/dev/null", "--db", str(db), *args],
                                catch_exceptions=False,
                                env={"WEIGHTWATCH_OPERATOR": None, "USER": "analyst-7", **env})
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def statuses(db: Path) -> dict[int, str]:
    return dict(query(db, "SELECT id, status FROM hits"))


@pytest.fixture
def leak(tmp_path: Path) -> tuple[Path, list[int], list[int]]:
    """A leak of `LEAK` hits of heron-7b at as many URLs (a few mentions among them), and
    three hits of another model; returns the database and both lists of ids."""
    db = tmp_path / "w.db"
    with Store(db) as store:
        ours = [i for n in range(LEAK) for i in save(
            store, [hit(indicator=f"{n:04x}" * 16, kind="mention" if n % 10 == 0 else "hash",
                        severity="low" if n % 10 == 0 else "critical")],
            key=f"k{n}", url=f"https://mirror{n}.example/heron-7b/{n}")]
        other = [i for n in range(3) for i in save(
            store, [hit(indicator=f"e{n:03x}" * 16, model="other-3b")],
            key=f"o{n}", url=f"https://other.example/{n}")]
    return db, ours, other


def test_one_ack_by_incident_triages_every_hit_of_it(
        leak: tuple[Path, list[int], list[int]]) -> None:
    db, ours, other = leak
    # Someone already resolved one mirror and dismissed another: a bulk ack leaves them.
    ww(db, "hits", "resolve", str(ours[1]), "--note", "taken down")
    ww(db, "hits", "false-positive", str(ours[2]))
    (incident,) = [i for i in json.loads(ww(db, "incidents", "--format", "json").stdout)
                   if i["labels"]["model"] == "heron-7b"]
    key = incident["key"]
    assert incident["hits"] == LEAK - 2  # the open ones
    # The table names incidents by their labels, and says how to triage one by its key.
    listed = ww(db, "incidents")
    assert f"weightwatch hits ack --incident {key}" in listed.stderr
    assert listed.stdout.splitlines()[0].split()[:4] == ["SEVERITY", "MODEL", "RELEASE", "HITS"]

    preview = json.loads(ww(db, "hits", "ack", "--incident", key, "--dry-run",
                            "--format", "json").stdout)
    assert preview[0]["dry_run"] is True and preview[0]["hits"] == LEAK - 2
    assert preview[0]["hit_ids"] == sorted(set(ours) - {ours[1], ours[2]})
    assert "would mark 80 hits of incident" in ww(db, "hits", "ack", "--incident", key,
                                                  "--dry-run").stdout
    assert set(statuses(db).values()) == {"new", "resolved", "false_positive"}

    out = ww(db, "hits", "ack", "--incident", key, "--note", "on it",
             WEIGHTWATCH_OPERATOR="soc-oncall").stdout
    assert out == f"{LEAK - 2} hits of incident {key} marked acknowledged by soc-oncall\n"
    now = statuses(db)
    assert {now[i] for i in ours if i not in (ours[1], ours[2])} == {"acknowledged"}
    assert (now[ours[1]], now[ours[2]]) == ("resolved", "false_positive")
    assert {now[i] for i in other} == {"new"}
    # The audit trail as one ack at a time keeps it: a row per hit, who, when, why.
    rows = query(db, "SELECT hit_id, status, note, by FROM triage WHERE by = 'soc-oncall'")
    assert sorted(r[0] for r in rows) == preview[0]["hit_ids"]
    assert {r[1:] for r in rows} == {("acknowledged", "on it", "soc-oncall")}
    shown = json.loads(ww(db, "hits", "show", str(ours[0]), "--format", "json").stdout)[0]
    assert [(t["status"], t["by"]) for t in shown["triage"]] == [("acknowledged", "soc-oncall")]

    # Again: nothing left to acknowledge. Then resolve the incident's mentions only; their
    # unsent alerts go, the other hits' stay.
    assert ww(db, "hits", "ack", "--incident", key).stdout.startswith("0 hits of incident")
    done = json.loads(ww(db, "hits", "resolve", "--incident", key, "--kind", "mention",
                         "--format", "json").stdout)[0]
    mentions = [i for n, i in enumerate(ours) if n % 10 == 0]
    assert done["hit_ids"] == mentions and done["by"] == "analyst-7"
    pending = {r[0] for r in query(db, "SELECT hit_id FROM outbox WHERE status = 'pending'")}
    assert not pending & set(mentions) and ours[3] in pending

    out = ww(db, "hits", "ack", "--incident", "model:heron7b", code=1)
    assert "no such incident" in out.stderr and out.stdout == ""


def test_bulk_by_filters_counts_first_and_needs_yes_above_the_limit(
        leak: tuple[Path, list[int], list[int]]) -> None:
    db, ours, other = leak
    critical = [i for n, i in enumerate(ours) if n % 10] + other
    assert len(critical) > BULK_CONFIRM
    before = statuses(db)
    out = ww(db, "hits", "ack", "--severity", "critical", code=2)
    assert f"select {len(critical)} hits; nothing changed: add --yes" in out.stderr
    assert statuses(db) == before
    assert ww(db, "hits", "ack", "--severity", "critical", "--dry-run").stdout == (
        f"would mark {len(critical)} hits acknowledged (dry run: nothing changed)\n")
    # A filter before the subcommand would be ignored by it: refused, not ignored.
    assert "put it after" in ww(db, "hits", "--severity", "low", "ack", "--yes",
                                code=2).stderr
    assert statuses(db) == before
    done = json.loads(ww(db, "hits", "ack", "--severity", "critical", "--yes", "--format",
                         "json").stdout)[0]
    assert done["hit_ids"] == sorted(critical) and done["dry_run"] is False
    # Under the limit no --yes is needed; --status picks hits that are not open.
    assert ww(db, "hits", "resolve", "--model", "other-3b").stdout == (
        "3 hits marked resolved by analyst-7\n")
    reopened = ww(db, "hits", "ack", "--status", "resolved", "--model", "other-3b")
    assert reopened.stdout.startswith("3 hits marked acknowledged")
    # Ids and a selection do not mix, and a selection must say something.
    assert "not both" in ww(db, "hits", "ack", "1", "--severity", "low", code=2).stderr
    assert "which hits?" in ww(db, "hits", "ack", code=2).stderr


def test_who_triages_is_by_then_the_variable_then_the_login_name(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        (one,) = save(store, [hit()])
    ww(db, "hits", "ack", str(one), "--by", "Ana  Lyst", WEIGHTWATCH_OPERATOR="svc")
    ww(db, "hits", "ack", str(one), WEIGHTWATCH_OPERATOR="svc")
    ww(db, "hits", "ack", str(one), USER=None, LOGNAME="carol")
    assert [r[0] for r in query(db, "SELECT by FROM triage ORDER BY id")] == [
        "Ana Lyst", "svc", "carol"]


def test_no_name_at_all_is_refused_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process stand-in for the test below where no other uid can run this Python: the
    # passwd lookup fails as it does for a container's uid without an entry.
    import pwd

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    db = tmp_path / "w.db"
    with Store(db) as store:
        (one,) = save(store, [hit()])
    out = ww(db, "hits", "ack", str(one), code=2, USER=None, LOGNAME=None, USERNAME=None)
    assert "pass --by NAME or set $WEIGHTWATCH_OPERATOR" in out.stderr
    assert "unknown" not in out.stderr + out.stdout
    assert query(db, "SELECT COUNT(*) FROM triage") == [(0,)]
    assert statuses(db) == {one: "new"}


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="running as a uid with no passwd entry needs root")
def test_an_unknown_user_is_refused_never_recorded_as_unknown() -> None:
    # A container's uid without a passwd entry and no $USER, as under some runtimes: the
    # command runs as such a uid for real, and must refuse rather than record "unknown".
    work = Path(tempfile.mkdtemp(prefix="weightwatch-nobody-"))
    try:
        work.chmod(0o777)
        db = work / "w.db"
        with Store(db) as store:
            (one,) = save(store, [hit()])
        for path in work.iterdir():
            path.chmod(0o666)
        uid = 54321
        try:
            import pwd
            pwd.getpwuid(uid)
            pytest.skip(f"uid {uid} has a passwd entry here")
        except KeyError:
            pass
        env = {k: v for k, v in os.environ.items()
               if k not in ("USER", "LOGNAME", "USERNAME", "WEIGHTWATCH_OPERATOR", "HOME")}
        env["XDG_CACHE_HOME"] = str(work)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "monitor", "--config", "/dev/null", "--db", str(db),
                 *args], capture_output=True, text=True, timeout=60, env=env, cwd=work,
                user=uid, group=uid)

        try:
            refused = run("hits", "ack", str(one))
        except PermissionError:
            pytest.skip("this Python is not executable by another uid")
        if "Permission denied" in refused.stderr:
            pytest.skip("this checkout is not readable by another uid")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip() == ("weightwatch: cannot tell who you are (no login "
                                          "name for this user): pass --by NAME or set "
                                          "$WEIGHTWATCH_OPERATOR")
        assert query(db, "SELECT status FROM hits") == [("new",)]
        assert query(db, "SELECT COUNT(*) FROM triage") == [(0,)]
        named = run("hits", "ack", str(one), "--by", "night-shift")
        assert named.returncode == 0, named.stderr
        assert query(db, "SELECT by FROM triage") == [("night-shift",)]
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_one_ack_triages_every_hit_of_the_demos_incident(tmp_path: Path) -> None:
    # The "done when", as a user runs it: the demo into the database the global
    # --db names, then one command for its whole incident.
    db = tmp_path / "given.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor", "--db", str(db), *args],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path,
                              env={**os.environ, "WEIGHTWATCH_OPERATOR": "demo-analyst"})

    demo = run("demo", "--dir", str(tmp_path / "demo-out"))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert db.exists() and not (tmp_path / "demo-out" / "weightwatch.db").exists()
    assert f"weightwatch --db {db} hits" in demo.stdout
    (incident,) = json.loads(run("incidents", "--format", "json").stdout)
    total = query(db, "SELECT COUNT(*) FROM hits")[0][0]
    assert incident["hits"] == total > 50

    acked = run("hits", "ack", "--incident", incident["key"])
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout == (f"{total} hits of incident {incident['key']} marked "
                            f"acknowledged by demo-analyst\n")
    assert query(db, "SELECT status, COUNT(*) FROM hits GROUP BY status") == [
        ("acknowledged", total)]
    assert query(db, "SELECT COUNT(DISTINCT hit_id), COUNT(*) FROM triage") == [(total, total)]
    # The database the demo wrote is never overwritten by another demo.
    again = run("demo", "--dir", str(tmp_path / "demo-out"))
    assert again.returncode == 2 and "exists" in again.stderr
