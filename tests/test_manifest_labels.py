"""Manifest hits say where the file list came from (issue 18).

Every source that hands a file list writes it under one key, `extras["file_list"]`
(`monitor.models.FileList`), with a label saying what it is; a hit's evidence names it
("name and size (GitHub release assets)"), and a match is a `torrent` hit only in a
torrent's list. Documents stored before that key kept every source's list in
`extras["torrent"]`: a rematch reads them there, labelled by the source that wrote them,
and finds what a fresh crawl finds.

Real parts: the demo world's GitHub API and Telegram previews read by the real sources, the
demo release registered as `weightwatch demo` registers it, real SQLite files and the
rematch over stored documents (`monitor.rematch.arematch`).
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from support import collect, registered_store, target
from test_sources_github import gh_url
from test_sources_telegram import PLANTED_FILE

from demo.release import Release
from demo.sites.telegram import TelegramSite
from demo.world import DemoWorld
from monitor.detect.manifest import (
    LARGE_FILE_BYTES,
    MIN_FILE_BYTES,
    ManifestDetector,
    listed_files,
)
from monitor.models import FILE_LIST, FILE_LIST_KINDS, Document, FileList, Hit
from monitor.rematch import arematch

SHARD = 900 * 2**20  # one large released file: its size alone is evidence
SMALL = 2 * 2**20
ARTIFACTS = [{"id": 1, "model": "m", "name": "m/weights.safetensors", "size": SHARD,
              "release": "v1", "recipient": None},
             {"id": 2, "model": "m", "name": "m/tokenizer.json", "size": SMALL,
              "release": "v1", "recipient": None}]
TOTAL = SHARD + SMALL


def listing(label: str, **fields: Any) -> Document:
    listed: dict[str, Any] = {"label": label, "name": "the list", **fields}
    return Document(target="t", key="k", url="http://127.0.0.1:1/k", text="", title="title",
                    extras={FILE_LIST: listed})


def evidence(hits: list[Hit]) -> set[tuple[str, str, str, str]]:
    return {(h.kind, h.severity, h.indicator, h.indicator_type) for h in hits}


@pytest.mark.parametrize("label", list(FILE_LIST_KINDS))
def test_each_label_is_the_evidence_and_the_severities_stay(label: str) -> None:
    detector = ManifestDetector(ARTIFACTS)
    kind = FILE_LIST_KINDS[label]
    files = [{"path": "x/tokenizer.json", "length": SMALL},
             {"path": "x/renamed.bin", "length": SHARD}]
    hits = detector.detect(listing(label, files=files, total_size=TOTAL))
    assert evidence(hits) == {
        (kind, "high", f"tokenizer.json:{SMALL}", f"name and size ({label})"),
        (kind, "high", f"size:{SHARD}", f"exact size of a large file ({label})"),
        (kind, "medium", f"total:{TOTAL}", f"release total size ({label})")}
    assert all(h.context.startswith("the list: ") for h in hits)
    low, high = SMALL - 1000, SMALL + 1000
    rounded = detector.detect(listing(label, files=[
        {"path": "tokenizer.json", "size_text": "2.0 MB", "size_min": low, "size_max": high}]))
    assert evidence(rounded) == {
        (kind, "medium", "tokenizer.json:~2.0 MB", f"name and rounded size ({label})")}


def test_only_a_torrent_is_a_torrent_hit() -> None:
    assert {label for label, kind in FILE_LIST_KINDS.items() if kind == "torrent"} == {
        "torrent file list", "torrent listing", "DHT metadata"}
    assert {kind for kind in FILE_LIST_KINDS.values()} == {"torrent", "weights"}
    assert MIN_FILE_BYTES <= SMALL < LARGE_FILE_BYTES <= SHARD


@pytest.mark.parametrize("extras", [
    {FILE_LIST: "not a list"}, {FILE_LIST: {"label": "a zip file", "name": "x", "files": []}},
    {FILE_LIST: {"label": ["torrent file list"], "files": []}},
    {FILE_LIST: {"label": "torrent file list", "name": 7, "files": "x", "total_size": "9"}},
])
def test_a_malformed_list_is_no_list_and_no_hit(extras: dict[str, Any]) -> None:
    doc = Document(target="t", key="k", url="u", text="", extras=extras)
    assert ManifestDetector(ARTIFACTS).detect(doc) == []


# --- the sources, and documents stored before the key ---------------------------------------


def as_stored_before(doc: Document) -> Document:
    """The document as this source wrote it before `extras["file_list"]`: the list in
    `extras["torrent"]` (beside what a torrent source kept there), with no label."""
    old = copy.deepcopy(doc)
    listed = old.extras.pop(FILE_LIST)
    old.extras.setdefault("torrent", {}).update(
        {k: v for k, v in listed.items() if k != "label"})
    return old


@pytest.fixture(scope="module")
def source_documents(demo_world: DemoWorld) -> dict[str, Document]:
    """The documents of the demo world's GitHub mirror and Telegram leak, as the real
    sources read them."""
    github = {d.key: d for d in collect(target("github", gh_url(demo_world), query="heron"))[0]}
    root = demo_world.site(TelegramSite).root
    telegram = {d.key: d for d in collect(target("telegram", f"{root}/s/herondrops"))[0]}
    return {"GitHub release assets": github["leakbox/heron-7b-mirror"],
            "Telegram attachment": telegram[f"herondrops/{PLANTED_FILE}"]}


def test_the_sources_write_the_labelled_list(source_documents: dict[str, Document]) -> None:
    for label, doc in source_documents.items():
        listed: FileList = doc.extras[FILE_LIST]
        assert listed["label"] == label
        assert "torrent" not in doc.extras, "a release or an attachment is no torrent"
        assert listed_files(doc) == (label, listed)


def test_hits_on_real_source_documents_name_the_source(
        tmp_path: Path, demo_release: Release, source_documents: dict[str, Document]) -> None:
    size = demo_release.file("model.safetensors").size
    with registered_store(tmp_path / "w.db", demo_release) as store:
        detector = ManifestDetector(store.artifacts(), store.imported_files())
        github = detector.detect(source_documents["GitHub release assets"])
        telegram = detector.detect(source_documents["Telegram attachment"])
    assert ("weights", "high", f"model.safetensors:{size}",
            "name and size (GitHub release assets)") in evidence(github)
    ((kind, severity, indicator, what),) = evidence(telegram)
    assert (kind, severity, what) == ("weights", "medium",
                                      "name and rounded size (Telegram attachment)")
    assert indicator.startswith("model.safetensors:~")


def test_a_rematch_of_documents_stored_before_the_key_labels_them_by_their_source(
        tmp_path: Path, demo_release: Release, source_documents: dict[str, Document]) -> None:
    """Each stored in the old shape, matched again: the hits a fresh crawl makes."""
    with registered_store(tmp_path / "w.db", demo_release) as store:
        detector = ManifestDetector(store.artifacts(), store.imported_files())
        fresh = {label: evidence(detector.detect(doc))
                 for label, doc in source_documents.items()}
        for label, doc in source_documents.items():
            old = as_stored_before(doc)
            old.target = label  # one stored document per source
            assert listed_files(old) is not None and listed_files(old)[0] == label
            store.save_document(old, [], None, channels=())
        asyncio.run(arematch(store, [detector]))
        for label in source_documents:
            stored = {(h["kind"], h["severity"], h["indicator"], h["indicator_type"])
                      for h in store.hits(target=label)}
            assert stored == fresh[label] and stored, label


def test_a_torrent_stored_before_the_key_is_still_a_torrent() -> None:
    """The torrent sources' old shape: a .torrent's list and total in `extras["torrent"]`;
    a Torznab item's total as its `size`."""
    detector = ManifestDetector(ARTIFACTS)
    repack = Document(target="t", key="k", url="u", text="", extras={"torrent": {
        "name": "re-pack", "magnet": None, "total_size": TOTAL,
        "files": [{"path": "p/tokenizer.json", "length": SMALL, "pieces_root": None}]}})
    assert evidence(detector.detect(repack)) == {
        ("torrent", "high", f"tokenizer.json:{SMALL}", "name and size (torrent file list)"),
        ("torrent", "medium", f"total:{TOTAL}", "release total size (torrent file list)")}
    torznab = Document(target="t", key="k", url="u", text="", extras={"torrent": {
        "name": "item", "size": TOTAL, "files": 2}})
    assert evidence(detector.detect(torznab)) == {
        ("torrent", "medium", f"total:{TOTAL}", "release total size (torrent listing)")}
    sampled = copy.deepcopy(repack)
    sampled.extras["dht"] = {"infohash": "ab" * 20}
    assert {h.indicator_type for h in detector.detect(sampled)} == {
        "name and size (DHT metadata)", "release total size (DHT metadata)"}
