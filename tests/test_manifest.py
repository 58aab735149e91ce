"""The manifest detector: torrent file lists and sizes against the registered artifacts, for
torrents that are not byte-identical to a registered one (re-packed, renamed, re-hashed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from demo.world import MANIFEST_MIN_FILE
from monitor.config import Config
from monitor.detect import build_detectors, detect_all
from monitor.detect.manifest import LARGE_FILE_BYTES, MAX_FILES, MIN_FILE_BYTES, ManifestDetector
from monitor.models import Document
from monitor.store import Store

GB = 1_000_000_000
SHARD1, SHARD2, TOKENIZER, CONFIG = 4 * GB + 123, 3 * GB + 77, 2_113_415, 701
RELEASE_TOTAL = SHARD1 + SHARD2 + TOKENIZER + CONFIG
LAB9_SHARD1 = SHARD1 + 8  # lab-9's copy: another safetensors header, another size


def fake(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def add(store: Store, name: str, size: int, *, model: str = "m", release: str | None = "v1",
        recipient: str | None = None) -> None:
    seed = f"{model}/{name}/{size}/{recipient}"
    store.add_artifact(model=model, name=name, path=None, size=size, sha256=fake(seed, 64),
                       sha1=fake(seed + "1", 40), md5=fake(seed + "5", 32), release=release,
                       recipient=recipient)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "ww.db")
    add(s, "m/model-00001-of-00002.safetensors", SHARD1)
    add(s, "m/model-00002-of-00002.safetensors", SHARD2)
    add(s, "m/tokenizer.json", TOKENIZER)
    add(s, "m/config.json", CONFIG)
    add(s, "m/model-00001-of-00002.safetensors", LAB9_SHARD1, recipient="lab-9")
    # lab-3's tokenizer differs in bytes, not in size: a size cannot tell the two apart.
    add(s, "m/tokenizer.json", TOKENIZER, recipient="lab-3")
    # A single-file release of another model.
    add(s, "solo/solo.gguf", 900 * 2**20, model="solo", release=None)
    yield s
    s.close()


@pytest.fixture
def detector(store: Store) -> ManifestDetector:
    return ManifestDetector(store.artifacts())


def listing(files: list[tuple[str, int]] | None = None, name: str = "some torrent",
            **torrent: object) -> Document:
    t: dict[str, object] = {"name": name, **torrent}
    if files is not None:
        t["files"] = [{"path": p, "length": n, "pieces_root": None} for p, n in files]
        t.setdefault("total_size", sum(n for _, n in files))
    return Document(target="t", key="k", url="http://example.org/t/1", text=name, title=name,
                    extras={"torrent": t})


def summary(hits) -> set[tuple]:
    return {(h.kind, h.severity, h.indicator, h.model, h.artifact, h.recipient) for h in hits}


def test_name_and_size_is_high_and_names_the_artifact(detector: ManifestDetector) -> None:
    hits = detector.detect(listing([("Leak/model-00002-of-00002.safetensors", SHARD2),
                                    ("Leak/notes.txt", 1200)], name="Leak"))
    assert summary(hits) == {("torrent", "high", f"model-00002-of-00002.safetensors:{SHARD2}",
                              "m", "m/model-00002-of-00002.safetensors", None)}
    (hit,) = hits
    assert hit.detector == "manifest" and hit.indicator_type == "name and size (torrent file list)"
    assert "Leak/model-00002-of-00002.safetensors" in hit.context and "Leak" in hit.context
    assert hit.matcher_version.startswith("artifact:")
    # A large file matched by name and size is not reported again by its size alone.
    assert not any(h.indicator.startswith("size:") for h in hits)


def test_names_match_case_insensitively_but_sizes_exactly(detector: ManifestDetector) -> None:
    (hit,) = detector.detect(listing([("x/Tokenizer.JSON", TOKENIZER)]))
    assert hit.indicator == f"tokenizer.json:{TOKENIZER}" and hit.severity == "high"
    assert detector.detect(listing([("x/tokenizer.json", TOKENIZER + 1)])) == []


def test_exact_size_of_a_large_file_is_high_whatever_its_name(detector: ManifestDetector) -> None:
    assert SHARD1 >= LARGE_FILE_BYTES
    hits = detector.detect(listing([("renamed/weights.bin", SHARD1), ("renamed/a.txt", 10)]))
    assert summary(hits) == {("torrent", "high", f"size:{SHARD1}", "m",
                              "m/model-00001-of-00002.safetensors", None)}
    assert hits[0].indicator_type == "exact size of a large file (torrent file list)"
    # A medium-sized file needs its name as well: 2 MB is too common a size on its own.
    assert TOKENIZER < LARGE_FILE_BYTES
    assert detector.detect(listing([("x/vocab.json", TOKENIZER)])) == []


def test_small_files_are_never_evidence(detector: ManifestDetector) -> None:
    assert CONFIG < MIN_FILE_BYTES
    assert detector.detect(listing([("any-model/config.json", CONFIG)])) == []
    # The demo world plants manifest hits by the same floor.
    assert MANIFEST_MIN_FILE == MIN_FILE_BYTES


def test_release_total_is_medium(detector: ManifestDetector) -> None:
    # A Torznab listing: no file list, only the size in bytes.
    hits = detector.detect(listing(size=RELEASE_TOTAL, files=None))
    assert summary(hits) == {("torrent", "medium", f"total:{RELEASE_TOTAL}", "m", None, None)}
    (hit,) = hits
    assert hit.indicator_type == "release total size (torrent listing)" and "m v1" in hit.context
    # Recipients' copies do not count towards a release's total.
    assert detector.detect(listing(size=RELEASE_TOTAL + LAB9_SHARD1 + TOKENIZER)) == []
    # An index's rounded size string is no size.
    assert detector.detect(listing(size="8.0 GiB")) == []


def test_a_whole_release_gives_each_file_and_the_total(detector: ManifestDetector) -> None:
    files = [("m/config.json", CONFIG), ("m/model-00001-of-00002.safetensors", SHARD1),
             ("m/model-00002-of-00002.safetensors", SHARD2), ("m/tokenizer.json", TOKENIZER)]
    hits = detector.detect(listing(files))
    assert {(h.severity, h.indicator) for h in hits} == {
        ("high", f"model-00001-of-00002.safetensors:{SHARD1}"),
        ("high", f"model-00002-of-00002.safetensors:{SHARD2}"),
        ("high", f"tokenizer.json:{TOKENIZER}"),
        ("medium", f"total:{RELEASE_TOTAL}")}


def test_a_single_file_release_is_not_reported_twice(detector: ManifestDetector) -> None:
    solo = 900 * 2**20
    (hit,) = detector.detect(listing([("solo.gguf", solo)]))
    assert (hit.indicator, hit.model, hit.severity) == (f"solo.gguf:{solo}", "solo", "high")
    # With another name its size still says "solo.gguf"; the total adds nothing.
    (hit,) = detector.detect(listing([("x.bin", solo)]))
    assert (hit.indicator, hit.artifact) == (f"size:{solo}", "solo/solo.gguf")


def test_a_recipients_copy_names_the_recipient(detector: ManifestDetector) -> None:
    (hit,) = detector.detect(listing([("x/model-00001-of-00002.safetensors", LAB9_SHARD1)]))
    assert (hit.severity, hit.artifact, hit.recipient) == (
        "high", "m/model-00001-of-00002.safetensors", "lab-9")
    assert "lab-9" in hit.context
    (hit,) = detector.detect(listing([("x/renamed.bin", LAB9_SHARD1)]))
    assert (hit.indicator, hit.recipient) == (f"size:{LAB9_SHARD1}", "lab-9")
    # The release's own size is the release's file, not lab-9's.
    (hit,) = detector.detect(listing([("x/model-00001-of-00002.safetensors", SHARD1)]))
    assert hit.recipient is None


def test_a_size_that_copies_share_names_no_recipient(detector: ManifestDetector) -> None:
    # The release's tokenizer.json and lab-3's copy have the same name and size.
    (hit,) = detector.detect(listing([("x/tokenizer.json", TOKENIZER)]))
    assert hit.recipient is None and hit.artifact == "m/tokenizer.json"
    assert len(hit.matcher_version.removeprefix("artifact:").split(",")) == 2


def test_hostile_listing_of_100k_files_is_bounded(detector: ManifestDetector) -> None:
    """A .torrent of 100 000 files (what parse_torrent allows): one dict lookup per file, and
    hits bounded by the registry, not by the listing."""
    files = [(f"junk/{i:06d}/model-00001-of-00002.safetensors", SHARD1 + 1000 + i % 1000)
             for i in range(MAX_FILES - 3)]
    files += [("junk/a/weights.bin", SHARD1), ("junk/b/weights.bin", SHARD1),
              ("junk/c/tokenizer.json", TOKENIZER)]
    assert len(files) == MAX_FILES
    hits = detector.detect(listing(files))
    assert {(h.severity, h.indicator) for h in hits} == {
        ("high", f"size:{SHARD1}"), ("high", f"tokenizer.json:{TOKENIZER}")}
    # Entries beyond MAX_FILES are not read at all.
    beyond = [("x/y", 1)] * MAX_FILES + [("late/model-00002-of-00002.safetensors", SHARD2)]
    assert detector.detect(listing(beyond, total_size=0)) == []


@pytest.mark.parametrize("torrent", [
    "not a dict", {"files": "nope"}, {"files": [None, 3, {"path": 5, "length": SHARD1},
                                                 {"path": "a/b.bin", "length": True},
                                                 {"path": "a/b.bin", "length": str(SHARD1)},
                                                 {"path": "a/b.bin"}]},
    {"total_size": -1}, {"total_size": float(RELEASE_TOTAL)}, {"name": 7, "size": None},
])
def test_malformed_extras_are_ignored(detector: ManifestDetector, torrent: object) -> None:
    doc = Document(target="t", key="k", url="http://x/", text="", extras={"torrent": torrent})
    assert detector.detect(doc) == []


def test_malformed_registry_rows_are_skipped() -> None:
    rows = [{"id": 1, "model": "m", "name": "m/a.bin", "size": "big"}, "junk",
            {"id": 2, "model": "m", "name": "m/b.bin", "size": LARGE_FILE_BYTES}]
    (hit,) = ManifestDetector(rows).detect(listing([("x/other.bin", LARGE_FILE_BYTES)]))
    assert hit.artifact == "m/b.bin"


def test_an_empty_registry_or_a_document_without_a_torrent_finds_nothing(
        detector: ManifestDetector) -> None:
    assert ManifestDetector([]).detect(listing([("x.bin", SHARD1)], size=RELEASE_TOTAL)) == []
    assert detector.detect(Document(target="t", key="k", url="http://x/", text=str(SHARD1))) == []


def test_build_detectors_includes_the_manifest_detector(store: Store) -> None:
    config = Config(path=None, database_path=store.path, crawl=None, alerts=None, smtp=None,
                    targets=[], rules=[])
    detectors = build_detectors(config, store)
    assert "manifest" in [d.name for d in detectors]
    doc = listing([("m/model-00002-of-00002.safetensors", SHARD2)])
    hits = detect_all(detectors, doc)
    assert [(h.detector, h.target, h.url) for h in hits] == [("manifest", "t", doc.url)]
    assert [d.name for d in build_detectors(config, None)][-1] == "manifest"
