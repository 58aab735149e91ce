"""Rules that used to be decided in the CLI, tested where they now live, without it: what
`watermark detect` calls a scanned file; whose failures the report counts; that a marked copy is issued only for a model whose
tensor fingerprint is registered; and "a bundle import changed the registry, so match the
stored documents again" for every caller of `import_bundle`.

Real parts: a real SQLite file per store, real released files registered and exported.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from fingerprints.bundle import Bundle
from fingerprints.watermark import Attribution, WatermarkError
from monitor.bundle import bundle_from_store, import_bundle
from monitor.config import Target
from monitor.health import watched
from monitor.models import Document
from monitor.registry import register_paths
from monitor.scan import VERDICTS, ScanReport
from monitor.store import Store
from monitor.watermark import detection_outcome, issue_copy

WEIGHTS = os.urandom(20_000)


def marked(recipient: str) -> Attribution:
    return Attribution(outcome="marked", recipient=recipient, z=12.0, bound=1e-30)


@pytest.mark.parametrize(("verdict", "attribution", "outcome"), [
    ("match", marked("acme"), "marked"),
    ("match", Attribution(outcome="unmarked_original", recipient=None, z=0.4, bound=1.0),
     "unmarked_original"),
    # A match the watermark test did not run on (no marked copy of that model) is ours.
    ("match", None, "unmarked_original"),
    ("related", None, "not_our_model"),
    ("no_match", None, "not_our_model"),
    ("inconclusive", None, "inconclusive"),
    ("unknown_format", None, "unknown_format"),
    ("error", None, "error"),
])
def test_watermark_outcome_of_each_scan_verdict(verdict: str, attribution: Attribution | None,
                                                outcome: str) -> None:
    report = ScanReport(location="suspect.safetensors", verdict=verdict, attribution=attribution)
    assert detection_outcome(report) == outcome


def test_every_scan_verdict_has_a_watermark_outcome() -> None:
    outcomes = {detection_outcome(ScanReport(location="f", verdict=v)) for v in VERDICTS}
    assert outcomes == {"unmarked_original", "not_our_model", "inconclusive",
                        "unknown_format", "error"}


def test_the_report_watches_the_enabled_targets_or_all_without_a_config() -> None:
    def target(name: str, enabled: bool) -> Target:
        return Target(name=name, kind="imageboard", url=f"https://{name}.example/",
                      interval=900, jitter=0, enabled=enabled)

    assert watched([target("board", True), target("forum", False)]) == {"board"}
    assert watched([target("forum", False)]) == set()
    # A copy of the database read with no config: every target with state counts.
    assert watched([]) is None


def hit_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0])
    finally:
        conn.close()


def store_leak(store: Store) -> None:
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    store.save_document(Document(target="board", key="1#p1", url="https://b.example/1#p1",
                                 text=f"leaked, sha256 {sha}"), [], run_id=None)


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    (tmp_path / "model.bin").write_bytes(WEIGHTS)
    with Store(tmp_path / "release.db") as release:
        register_paths(release, [tmp_path / "model.bin"], model="heron-7b", rematch=None)
        return bundle_from_store(release)


def test_a_library_caller_of_import_bundle_gets_the_rematch(tmp_path: Path,
                                                           bundle: Bundle) -> None:
    with Store(tmp_path / "monitor.db") as store:
        store_leak(store)
        counts = import_bundle(store, bundle)
        assert counts.rematched is not None
        assert counts.rematched.documents == 1 and len(counts.rematched.new_hits) == 1
        hit = store.hit(counts.rematched.new_hits[0])
        assert hit is not None and (hit["kind"], hit["model"]) == ("hash", "heron-7b")
        # The same bundle again adds nothing, so nothing is matched again.
        assert import_bundle(store, bundle).rematched is None
    assert hit_count(tmp_path / "monitor.db") == 1


def test_import_bundle_without_rematch_records_no_hit(tmp_path: Path, bundle: Bundle) -> None:
    with Store(tmp_path / "monitor.db") as store:
        store_leak(store)
        counts = import_bundle(store, bundle, rematch=None)
    assert (counts.artifacts_new, counts.rematched) == (1, None)
    assert hit_count(tmp_path / "monitor.db") == 0


def test_a_library_caller_cannot_issue_a_copy_detection_could_not_attribute(
        tmp_path: Path) -> None:
    original = tmp_path / "model.bin"
    original.write_bytes(WEIGHTS)
    out = tmp_path / "acme.bin"
    with Store(tmp_path / "release.db") as store:
        # The original's digests, but not its tensor fingerprint.
        register_paths(store, [original], model="heron-7b", tensors=False, rematch=None)
        with pytest.raises(WatermarkError, match="no tensor fingerprint of heron-7b registered"):
            issue_copy(store, model="heron-7b", recipient="acme", source=original, out=out,
                       master=b"a master secret of 32 bytes....")
        assert store.watermarks() == []
    assert not out.exists()
