"""Detection as one interface (issue 15): the weight-link detector runs in `rematch` too, the
registry layer rematches for every caller, and `monitor.detect` stands without the store.

Real parts: a real SQLite file, real safetensors files served by range on loopback, the
CLI in a subprocess as an operator runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import weights_lab as lab
from click.testing import CliRunner
from support import FAST, RangeServer

from monitor.cli import main
from monitor.config import ScanSettings, Target
from monitor.detect import Detection, WeightLinkDetector
from monitor.fetch import Fetcher
from monitor.models import Document, Hit
from monitor.registry import import_indicators, register_paths
from monitor.rematch import RematchResult
from monitor.store import Store

CONFIG = """\
[crawl]
host_delay = "10ms"

[[targets]]
name = "forum"
kind = "forum"
preset = "phpbb"
url = "http://127.0.0.1:9/viewforum.php?f=12"
allow_private = true
"""


def tiny_model(seed: int) -> dict[str, np.ndarray]:
    """A small BERT-shaped model: enough layer matrices for a confident match, few bytes
    for the loopback server to hand out."""
    rng = np.random.default_rng(seed)
    model = {"embeddings.word_embeddings.weight": rng.standard_normal((2000, 64))}
    for i in range(3):
        for part in ("attention.self.query", "attention.self.key", "attention.output.dense"):
            model[f"encoder.layer.{i}.{part}.weight"] = rng.standard_normal((64, 64))
    return {n: a.astype(np.float32) for n, a in model.items()}


def ww(home: Path, *args: str) -> str:
    """The real CLI in a subprocess, as an operator runs it; its standard output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-m", "monitor", "--config",
                             str(home / "config.toml"), "--db", str(home / "w.db"), *args],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def ww_here(home: Path, *args: str) -> str:
    """The same CLI in this process (no interpreter start-up), for the steps around the
    one the test is about."""
    result = CliRunner().invoke(main, ["--config", str(home / "config.toml"), "--db",
                                       str(home / "w.db"), *args], catch_exceptions=False)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


@pytest.mark.slow
def test_rematch_scans_a_stored_weight_link_again_once_its_fingerprints_are_registered(
        tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(CONFIG, encoding="utf-8")
    db = tmp_path / "w.db"
    ours = lab.write_safetensors(tmp_path / "ours.safetensors", tiny_model(1))
    other = lab.write_safetensors(tmp_path / "other.safetensors", tiny_model(2))
    server = RangeServer()
    try:
        server.put("/leak/model.safetensors", ours.read_bytes())
        link = server.url("/leak/model.safetensors")
        with Store(db) as store:
            store.save_document(Document(target="forum", key="t1#p1", url=server.url("/t1"),
                                         text="new weights, who dis", links=[link]),
                                [], run_id=None)
            # Another model is registered: the link is scanned, and matches nothing.
            register_paths(store, [other], model="other", rematch=None)
        first = ww_here(tmp_path, "rematch")
        assert first.strip() == "rematch: 1 documents, 0 new hits"
        scans = rows(db, "SELECT verdict FROM weight_scans")
        assert [s["verdict"] for s in scans] == ["no_match"]
        asked = len(server.hits("/leak/model.safetensors"))
        assert asked > 0

        with Store(db) as store:
            register_paths(store, [ours], model="ours", rematch=None)
        second = ww(tmp_path, "rematch")
        assert second.strip().splitlines()[-1] == "rematch: 1 documents, 1 new hits"
        assert len(server.hits("/leak/model.safetensors")) > asked  # read again, by range
        hit, = rows(db, "SELECT * FROM hits")
        assert (hit["kind"], hit["severity"], hit["model"]) == ("weights", "high", "ours")
        assert hit["indicator"] == link and hit["detector"] == "weights"
        assert rows(db, "SELECT verdict FROM weight_scans")[0]["verdict"] == "match"
        # The verdict is remembered against the grown registry: nothing new, nothing
        # fetched (the server is still up, so a fetch would show).
        before = len(server.requests)
        assert ww_here(tmp_path, "rematch").strip() == "rematch: 1 documents, 0 new hits"
        assert len(server.requests) == before
    finally:
        server.close()


# --- the registry layer rematches, whoever calls it ----------------------------------------------

WEIGHTS = os.urandom(20_000)


def store_leak(store: Store) -> None:
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    store.save_document(Document(target="board", key="1#p1", url="https://b.example/1#p1",
                                 text=f"leaked, sha256 {sha}"), [], run_id=None)


def test_a_library_caller_of_register_paths_gets_the_rematch(tmp_path: Path) -> None:
    release = tmp_path / "heron-7b"
    release.mkdir()
    (release / "model.bin").write_bytes(WEIGHTS)
    with Store(tmp_path / "w.db") as store:
        store_leak(store)
        files = register_paths(store, [release], model="heron-7b")
        assert isinstance(files.rematched, RematchResult)
        assert files.rematched.documents == 1 and len(files.rematched.new_hits) == 1
        hit = store.hit(files.rematched.new_hits[0])
        assert hit is not None
        assert (hit["kind"], hit["severity"], hit["model"]) == ("hash", "critical", "heron-7b")
        # Registering the same files again adds nothing, so nothing is matched again.
        assert register_paths(store, [release], model="heron-7b").rematched is None


def test_a_library_caller_of_import_indicators_gets_the_rematch_unless_it_opts_out(
        tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(WEIGHTS).hexdigest()}  model.bin\n", encoding="utf-8")
    with Store(tmp_path / "quiet.db") as store:
        store_leak(store)
        quiet = import_indicators(store, sums, model="heron-7b", rematch=None)
        assert (quiet.added, quiet.rematched) == (1, None)
    assert rows(tmp_path / "quiet.db", "SELECT id FROM hits") == []
    with Store(tmp_path / "w.db") as store:
        store_leak(store)
        result = import_indicators(store, sums, model="heron-7b")
        assert result.rematched is not None and len(result.rematched.new_hits) == 1


def test_register_without_stored_documents_loads_no_detector(tmp_path: Path) -> None:
    """A release machine has no documents: the rematch is a no-op, not a detector load."""
    (tmp_path / "model.bin").write_bytes(WEIGHTS)
    with Store(tmp_path / "w.db") as store:
        files = register_paths(store, [tmp_path / "model.bin"], model="heron-7b")
    assert files.rematched == RematchResult()


# --- detect/ never needs the store ---------------------------------------------------------------


def test_detect_does_not_import_the_store() -> None:
    code = ("import sys, monitor.detect, monitor.detect.weights, monitor.scan; "
            "print(sorted(m for m in sys.modules if m.startswith('monitor.store')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.stdout.strip() == "[]"
    detect = Path(__file__).parent.parent / "monitor" / "detect"
    for path in detect.glob("*.py"):
        assert "monitor.store" not in path.read_text(encoding="utf-8"), path


class RememberedVerdicts:
    """A verdict cache that is not the store: the detector needs nothing more."""

    def __init__(self, verdicts: dict[str, dict[str, Any]]) -> None:
        self.verdicts = verdicts
        self.asked: list[str] = []

    def weight_scan(self, url: str) -> dict[str, Any] | None:
        self.asked.append(url)
        return self.verdicts.get(url)

    def record_weight_scan(self, url: str, **kw: Any) -> None:
        raise AssertionError(f"{url}: a remembered verdict is not scanned again")


def test_the_link_detector_reads_verdicts_through_the_cache_alone() -> None:
    link = "http://127.0.0.1:9/w/model.safetensors"
    cache = RememberedVerdicts({link: {
        "verdict": "match", "model": "heron-7b", "score": 1.0, "bytes_read": 1234,
        "registry_version": 3, "details": json.dumps({
            "size": 99, "format": "safetensors", "body_found": ["a", "b"], "body_total": 2,
            "rows_matched": 8, "rows_compared": 8, "tensors_matched": 2,
            "tensors_compared": 2, "similarity": 1.0, "false_match_probability": 1e-30})}})

    async def go() -> list[Hit]:
        async with Fetcher(FAST) as fetcher:
            links = WeightLinkDetector(cache, ScanSettings(), fetcher, version=3,
                                       registry=lambda: pytest.fail("no registry needed"))
            doc = Document(target="t", key="k", url="http://127.0.0.1:9/p", text="",
                           links=["http://127.0.0.1:9/readme.md", link, link])
            return await Detection([], [links]).detect(
                doc, Target(name="t", kind="scan", url=doc.url, interval=0, jitter=0))

    hit, = asyncio.run(go())
    assert cache.asked == [link]  # once, and only for the weight file
    assert (hit.kind, hit.severity, hit.model, hit.indicator) == ("weights", "high",
                                                                  "heron-7b", link)
    assert (hit.target, hit.url) == ("t", "http://127.0.0.1:9/p")
    assert hit.matcher_version == "weightprint-v2/registry-3"


def test_searchable_text_follows_every_change_to_the_document():
    """Detectors of one pass share the joined text; a document changed in any part (or
    another document with equal parts) never gets a stale one."""
    from monitor.detect.text import searchable_text

    doc = Document(target="t", key="k", url="u", title="Heron", text="first",
                   links=["magnet:?xt=urn:btih:" + "a" * 40])
    assert searchable_text(doc) == "Heron\nfirst\nmagnet:?xt=urn:btih:" + "a" * 40
    assert searchable_text(doc) is searchable_text(doc)
    doc.text = "second"
    assert searchable_text(doc) == "Heron\nsecond\nmagnet:?xt=urn:btih:" + "a" * 40
    doc.links[0] = "http://mirror/heron.gguf"
    assert searchable_text(doc).endswith("\nhttp://mirror/heron.gguf")
    doc.links.append("http://other/")
    assert searchable_text(doc).endswith("heron.gguf\nhttp://other/")
    doc.title = ""
    assert searchable_text(doc) == "second\nhttp://mirror/heron.gguf\nhttp://other/"
    twin = Document(target="t", key="k2", url="u", title="", text="sec" + "ond",
                    links=list(doc.links))
    assert searchable_text(twin) == searchable_text(doc)
