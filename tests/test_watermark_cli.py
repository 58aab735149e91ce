"""`weightwatch watermark issue` and `detect` on the real all-MiniLM-L6-v2, the daemon's
`watermark` hits, and the master secret staying out of everything weightwatch writes.

The statistics of the marks (1,000 recipients, transforms, the null distribution, the
effect on embeddings) are tests/test_watermark_marks.py; this file is the operator's side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import weights_lab as lab
from safetensors.numpy import load_file
from support import RangeServer

from fingerprints.tensors import FileSource
from fingerprints.weights import open_weights
from monitor.store import Store

# Issuing and detecting watermarks on real-sized weights: CPU-heavy.
pytestmark = [pytest.mark.slow]

SECRET = "correct horse battery staple 0123456789"
ENV = {"WEIGHTWATCH_WATERMARK_KEY": SECRET}


def ww(home: Path, *args: str, code: int = 0, env: dict[str, str] | None = None,
       ) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, logging JSON to stderr, as an operator runs it."""
    environ = {k: v for k, v in os.environ.items() if k != "WEIGHTWATCH_WATERMARK_KEY"}
    environ.update(env or {})
    environ["PYTHONPATH"] = os.pathsep.join(sys.path)
    result = subprocess.run([sys.executable, "-m", "monitor", "--config",
                             str(home / "config.toml"), "--db", str(home / "ww.db"),
                             "--log-level", "debug", *args],
                            capture_output=True, text=True, env=environ, timeout=300)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    (home / "output.log").open("a").write(result.stdout + result.stderr)
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release machine: MiniLM registered, copies issued to two recipients."""
    home = tmp_path_factory.mktemp("watermark")
    (home / "config.toml").write_text("[crawl]\nhost_delay = \"10ms\"\n")
    original = home / "minilm.safetensors"
    shutil.copyfile(lab.minilm_path(), original)
    ww(home, "register", str(original), "--model", "minilm")
    for recipient in ("acme", "globex"):
        ww(home, "watermark", "issue", "--model", "minilm", "--recipient", recipient,
           "--in", str(original), "--out", str(home / f"{recipient}.safetensors"), env=ENV)
    return home


def detect(home: Path, *locations: str, code: int = 0) -> list[dict]:
    return json.loads(ww(home, "watermark", "detect", *locations, "--allow-private",
                         "--format", "json", code=code).stdout)


def test_issued_copy_has_the_original_layout_and_registers_its_digests(home: Path) -> None:
    original = load_file(home / "minilm.safetensors")
    copy = load_file(home / "acme.safetensors")
    assert list(copy) == list(original)
    assert all(copy[k].dtype == original[k].dtype and copy[k].shape == original[k].shape
               for k in original)
    # Padded to sizes of their own (fingerprints.padding): spaces after the header.
    size = (home / "minilm.safetensors").stat().st_size
    sizes = {(home / f"{r}.safetensors").stat().st_size - size for r in ("acme", "globex")}
    assert len(sizes) == 2 and all(0 < s <= 4096 and s % 8 == 0 for s in sizes)
    changed = [k for k in original if not np.array_equal(copy[k], original[k])]
    assert changed and all(original[k].ndim == 2 for k in changed)
    assert all(np.array_equal(copy[k], original[k]) for k in original if original[k].ndim == 1)
    with Store(home / "ww.db") as store:
        artifacts = {a["recipient"]: a for a in store.artifacts("minilm")}
        marks = {w["recipient"]: w for w in store.watermarks("minilm")}
    assert set(artifacts) == {None, "acme", "globex"} and set(marks) == {"acme", "globex"}
    assert marks["acme"]["artifact_id"] == artifacts["acme"]["id"]
    # An exact leak of acme's copy is attributed by its digest alone.
    digest = json.loads(ww(home, "register", str(home / "acme.safetensors"), "--model",
                           "minilm", "--recipient", "acme", "--format", "json").stdout)[0]
    assert digest["new_digests"] == 0 and digest["sha256"] == artifacts["acme"]["sha256"]


def test_issue_reports_each_tensor_against_q8_0(home: Path, tmp_path: Path) -> None:
    out = ww(home, "watermark", "issue", "--model", "minilm", "--recipient", "initech",
             "--in", str(home / "minilm.safetensors"), "--out", str(tmp_path / "i.safetensors"),
             "--format", "json", env=ENV)
    rows = json.loads(out.stdout)
    assert len(rows) == 39
    assert all(r["mark_rms"] <= r["q8_0_rms"] for r in rows), rows


def test_detect_names_the_recipient_locally_and_over_http(home: Path, tmp_path: Path) -> None:
    # A Q8_0 GGUF conversion of globex's copy, served by range: whose is it?
    gguf = lab.write_gguf(tmp_path / "leak.gguf", load_file(home / "globex.safetensors"),
                          qtype="Q8_0")
    server = RangeServer()
    try:
        server.put("/files/leak.gguf", gguf.read_bytes())
        rows = detect(home, str(home / "acme.safetensors"), str(home / "minilm.safetensors"),
                      server.url("/files/leak.gguf"), str(lab.minilm_path().parent / "vocab.txt"))
    finally:
        server.close()
    acme, original, leak, text = rows
    assert (acme["outcome"], acme["recipient"]) == ("marked", "acme")
    assert acme["bound"] <= 1e-9 and acme["runner_up"] not in (None, "acme")
    assert acme["runner_up_bound"] >= 1e-3
    assert (leak["outcome"], leak["recipient"], leak["model"]) == ("marked", "globex", "minilm")
    assert leak["bound"] <= 1e-9 and leak["bytes_read"] < gguf.stat().st_size / 5
    assert (original["outcome"], original["recipient"]) == ("unmarked_original", None)
    assert original["bound"] >= 1e-3
    assert text["outcome"] == "unknown_format"


def test_detect_an_unrelated_model_is_not_ours(home: Path, tmp_path: Path) -> None:
    other = lab.write_safetensors(tmp_path / "other.safetensors",
                                  lab.independent_model(lab.minilm_tensors(), seed=5))
    row, = detect(home, str(other))
    assert row["outcome"] == "not_our_model" and row["recipient"] is None


def test_master_secret_rules(home: Path, tmp_path: Path) -> None:
    args = ("watermark", "issue", "--model", "minilm", "--recipient", "x", "--in",
            str(home / "minilm.safetensors"), "--out", str(tmp_path / "x.safetensors"))
    missing = ww(home, *args, code=1)
    assert "WEIGHTWATCH_WATERMARK_KEY" in missing.stderr and not (tmp_path / "x.safetensors").exists()
    key = tmp_path / "master.key"
    key.write_text(SECRET)
    key.chmod(0o644)
    loose = ww(home, *args, "--key-file", str(key), code=1)
    assert "readable by others" in loose.stderr and "chmod 600" in loose.stderr
    key.chmod(0o600)
    ww(home, *args, "--key-file", str(key))
    assert (tmp_path / "x.safetensors").exists()
    # The same recipient issued again with another master secret is refused.
    again = ww(home, *args, env={"WEIGHTWATCH_WATERMARK_KEY": "another secret of 16+ bytes"},
               code=1)
    assert "another key" in again.stderr


def test_the_master_secret_is_written_nowhere(home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.json.gz"
    ww(home, "fingerprints", "export", str(bundle))
    ww(home, "hits", "--format", "json")
    detect(home, str(home / "acme.safetensors"))
    places = [home / "ww.db", home / "config.toml", home / "output.log", bundle]
    places += [p for p in home.iterdir() if p.name.startswith("ww.db")]  # WAL files too
    import gzip
    needles = [SECRET.encode(), SECRET.encode().hex().encode()]
    for place in places:
        data = place.read_bytes()
        if place.suffix == ".gz":
            data = gzip.decompress(data)
        assert not any(n in data for n in needles), place
    assert (home / "output.log").stat().st_size > 0  # the logs were captured and searched


def test_the_original_must_be_fingerprinted_first(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    out = ww(tmp_path, "watermark", "issue", "--model", "minilm", "--recipient", "a", "--in",
             str(lab.minilm_path()), "--out", str(tmp_path / "a.safetensors"), env=ENV, code=1)
    assert "weightwatch register" in out.stderr


def test_quantised_tensors_are_not_marked(home: Path, tmp_path: Path) -> None:
    q4 = lab.write_gguf(tmp_path / "q4.gguf", lab.minilm_tensors(), qtype="Q4_0")
    out = ww(home, "watermark", "issue", "--model", "minilm", "--recipient", "q", "--in",
             str(q4), "--out", str(tmp_path / "q-copy.gguf"), env=ENV)
    assert "not marked" in out.stderr and "Q4_0" in out.stderr
    # What was marked (the F16/F32 matrices llama.cpp keeps unquantised) still reads back.
    with FileSource(tmp_path / "q-copy.gguf") as source:
        assert len(open_weights(source).tensors) == len(lab.minilm_tensors()) - 2
