"""Watermark attribution on a monitoring machine that never held the weights.

Machine A (the release machine, its own database) registers a generated LLaMA-shaped model
stored as F16, issues marked copies to two recipients with the master secret and exports a
fingerprint bundle. Machine B (a fresh database) imports the bundle and nothing else. A
Q4_0 GGUF conversion of acme's copy, as llama.cpp lays it out (Q/K rows permuted), is
scanned on B by the real CLI in a subprocess, by `scan` and by `watermark detect`: both
name acme, with the z and bound A computes.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import weights_lab as lab
from click.testing import CliRunner
from safetensors.numpy import load_file

from monitor.cli import main
from monitor.store import Store

# Registering, marking and converting a (small) model, and the CLI in subprocesses.
pytestmark = [pytest.mark.slow]

SECRET = "a master secret the monitor never sees 0123456789"


def in_process(db: Path, *args: str, code: int = 0, env: dict[str, str] | None = None):
    result = CliRunner().invoke(main, ["--config", str(db.parent / "config.toml"),
                                       "--db", str(db), *args], env=env,
                                catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def subprocess_cli(db: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """The real CLI as an operator runs it on the monitoring machine: no master secret in
    its environment, a terminal wide enough for the whole table."""
    environ = {k: v for k, v in os.environ.items() if k != "WEIGHTWATCH_WATERMARK_KEY"}
    environ.update(PYTHONPATH=os.pathsep.join(sys.path), COLUMNS="400")
    result = subprocess.run([sys.executable, "-m", "monitor", "--config",
                             str(db.parent / "config.toml"), "--db", str(db), *args],
                            capture_output=True, text=True, env=environ, timeout=300)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    a = tmp_path_factory.mktemp("release-machine")
    b = tmp_path_factory.mktemp("monitoring-machine")
    outside = tmp_path_factory.mktemp("the-world")
    for home in (a, b):
        (home / "config.toml").write_text("")
    original = lab.write_safetensors(a / "model.safetensors",
                                     lab.generate_model(2, 256, 704, 2000, seed=61), "F16")
    in_process(a / "a.db", "register", str(original), "--model", "heron")
    issued = {}
    for recipient in ("acme", "globex"):
        out = in_process(a / "a.db", "watermark", "issue", "--model", "heron", "--recipient",
                         recipient, "--in", str(original), "--out",
                         str(a / f"{recipient}.safetensors"), "--format", "json",
                         env={"WEIGHTWATCH_WATERMARK_KEY": SECRET})
        issued[recipient] = json.loads(out.stdout)
    # The operator registers acme's copy too (its digests are known already; its tensors
    # get a fingerprint of their own, which must never pass for the original's).
    in_process(a / "a.db", "register", str(a / "acme.safetensors"), "--model", "heron",
               "--recipient", "acme")
    bundle = a / "heron.json.gz"
    in_process(a / "a.db", "fingerprints", "export", str(bundle))
    in_process(b / "b.db", "fingerprints", "import", str(bundle))
    # What leaks: acme's copy converted by llama.cpp to Q4_0; the original converted too.
    leak = lab.write_gguf(outside / "leak-q4_0.gguf",
                          lab.as_llama_cpp(load_file(a / "acme.safetensors")), "Q4_0",
                          arch="llama")
    unmarked = lab.write_gguf(outside / "original-q4_0.gguf",
                              lab.as_llama_cpp(load_file(original)), "Q4_0", arch="llama")
    return SimpleNamespace(a=a / "a.db", b=b / "b.db", bundle=bundle, leak=leak,
                           unmarked=unmarked, issued=issued, exact=a / "acme.safetensors")


def test_the_monitoring_machine_names_the_recipient_as_the_release_machine_does(machines):
    on_b = json.loads(subprocess_cli(machines.b, "watermark", "detect", str(machines.leak),
                                     str(machines.unmarked), "--format", "json").stdout)
    on_a = json.loads(in_process(machines.a, "watermark", "detect", str(machines.leak),
                                 str(machines.unmarked), "--format", "json").stdout)
    leak, unmarked = on_b
    assert (leak["outcome"], leak["recipient"], leak["model"]) == ("marked", "acme", "heron")
    assert leak["bound"] <= 1e-9 and leak["runner_up"] == "globex"
    assert leak["runner_up_bound"] >= 1e-3
    for row_b, row_a in zip(on_b, on_a):
        keys = ("outcome", "recipient", "z", "bound", "bound_log10", "runner_up",
                "runner_up_z", "scores", "best_candidate", "elements", "tensors")
        assert {k: row_b[k] for k in keys} == {k: row_a[k] for k in keys}
    # An unmarked conversion: nobody is named, but the z printed says whose it is.
    assert (unmarked["outcome"], unmarked["recipient"]) == ("unmarked_original", None)
    assert unmarked["best_candidate"] in ("acme", "globex")
    assert unmarked["z"] == unmarked["scores"][unmarked["best_candidate"]]

    scan, = json.loads(subprocess_cli(machines.b, "scan", str(machines.leak), "--format",
                                      "json").stdout)
    assert scan["verdict"] == "match" and scan["model"] == "heron"
    assert (scan["watermark"]["outcome"], scan["watermark"]["recipient"]) == ("marked", "acme")
    assert scan["watermark"]["z"] == leak["z"]


def table(text: str) -> list[dict[str, str]]:
    """A CLI table read back by its header's column positions (empty cells stay empty)."""
    header, *lines = text.splitlines()
    names = header.split()
    starts = [header.index(name) for name in names] + [None]
    return [{name: line[starts[i]:starts[i + 1]].strip() for i, name in enumerate(names)}
            for line in lines]


def test_the_monitor_knows_the_originals_fingerprint_from_a_copys(machines):
    def prints(db: Path) -> list[tuple[str, str | None, int]]:
        with Store(db) as store:
            return [(name, recipient, len(p.tensors))
                    for _, name, p, recipient in store.weight_prints(with_recipient=True)]

    assert prints(machines.b) == prints(machines.a)
    assert [r for _, r, _ in prints(machines.a)] == [None, "acme"]


def test_scan_table_shows_the_watermark_outcome_and_recipient(machines):
    leak, unmarked, exact = table(subprocess_cli(
        machines.b, "scan", str(machines.leak), str(machines.unmarked), str(machines.exact)
    ).stdout)
    assert (leak["VERDICT"], leak["WATERMARK"], leak["RECIPIENT"]) == ("match", "marked", "acme")
    assert (unmarked["WATERMARK"], unmarked["RECIPIENT"]) == ("unmarked_original", "")
    # A byte-identical copy of acme's file: named by its digest, no watermark test needed.
    assert (exact["VERDICT"], exact["WATERMARK"], exact["RECIPIENT"]) == ("match", "", "acme")


def test_detect_table_names_whose_z_and_never_prints_a_zero_bound(machines):
    text = subprocess_cli(machines.b, "watermark", "detect", str(machines.exact),
                          str(machines.unmarked)).stdout
    assert text.splitlines()[0].split() == ["LOCATION", "OUTCOME", "MODEL", "RECIPIENT",
                                            "BEST", "Z", "BOUND", "RUNNER_UP",
                                            "RUNNER_UP_BOUND"]
    exact, unmarked = table(text)
    # The exact copy's z (hundreds) puts the bound far below the smallest float.
    assert (exact["OUTCOME"], exact["RECIPIENT"], exact["BEST"]) == ("marked", "acme", "acme")
    assert float(exact["Z"]) > 100 and exact["BOUND"].startswith("10^-")
    detail, = json.loads(subprocess_cli(machines.b, "watermark", "detect", str(machines.exact),
                                        "--format", "json").stdout)
    assert detail["bound"] == 0.0  # a float cannot hold it: its log10 does
    assert float(exact["BOUND"].removeprefix("10^")) == round(detail["bound_log10"], 1) < -1000
    # The unmarked conversion names nobody, and says whose z it shows.
    assert (unmarked["OUTCOME"], unmarked["RECIPIENT"]) == ("unmarked_original", "")
    assert unmarked["BEST"] in ("acme", "globex") and float(unmarked["Z"]) < 5


def test_issue_json_carries_the_summary(machines):
    rows = machines.issued["acme"]
    assert rows and {r["path"] for r in rows} == {str(machines.exact)}
    assert {(r["model"], r["recipient"]) for r in rows} == {("heron", "acme")}
    ids = {(r["artifact_id"], r["key_id"]) for r in rows}
    assert len(ids) == 1
    artifact_id, key = ids.pop()
    detect = json.loads(in_process(machines.a, "watermark", "detect", str(machines.exact),
                                   "--format", "json").stdout)
    assert detect[0]["recipient"] == "acme"
    with Store(machines.a) as store:
        mark, = (w for w in store.watermarks("heron") if w["recipient"] == "acme")
    assert (mark["artifact_id"], mark["key_id"]) == (artifact_id, key)


def test_the_bundle_carries_no_master_secret(machines):
    data = gzip.decompress(machines.bundle.read_bytes())
    secret = SECRET.encode()
    for needle in (secret, secret.hex().encode(), base64.b64encode(secret)):
        assert needle not in data
    marks = json.loads(data)["watermarks"]
    assert {m["recipient"] for m in marks} == {"acme", "globex"}
    assert machines.bundle.stat().st_mode & 0o777 == 0o600
