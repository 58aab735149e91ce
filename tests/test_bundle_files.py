"""Bundles carry every name and size the registry knows for a digest (bundle version 5).

A registry built from indicators alone holds, per digest, one name and one size in its
indicator row and every further name or size an import gave in `indicator_files` (a second
checksum list naming the same bytes otherwise, the LFS pointer's size, our released
.torrent's file list, which names and sizes files without a digest). A bundle that carried
the row alone made the monitoring machine match fewer re-packed torrents than the machine
that wrote it.

Real parts: the demo release's real bytes and indicator files (`sha256sum` output, the
.torrent the lab handed out), LFS pointer files as a clone without git-lfs holds them, a
mirror's checksum list renaming the weights, real SQLite files, the CLI's `fingerprints
export|import`, the writer's registry snapshot (`monitor.writer.registry_snapshot`), and a
re-packed v1 .torrent parsed as the torrent sources parse it.
"""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from test_manifest_imports import MODEL, lfs_pointers, repack, weights

import fingerprints.bundle as bundle_format
from demo.release import Release, make_release
from fingerprints.bundle import (
    MAX_FILE_CLAIMS,
    MAX_SIZES_PER_DIGEST,
    BundleError,
    parse_bundle,
    read_bundle,
)
from monitor.bundle import bundle_from_store
from monitor.cli import main
from monitor.config import parse_config
from monitor.detect import build_detectors, detect_all
from monitor.models import Document, Hit
from monitor.registry import import_indicators
from monitor.store import Store
from monitor.writer import registry_snapshot

MIRROR_NAME = "heron-7b-fp16.safetensors"  # what a mirror's checksum list calls the weights


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return make_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def machines(release: Release, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The machine that wrote the bundle (a registry of imports only: the release's
    SHA256SUMS, then the LFS pointers of its files, then a mirror's checksum list renaming
    the weights, then the released .torrent), its bundle, and a fresh database that imported
    it through the CLI."""
    tmp = tmp_path_factory.mktemp("machines")
    mirror_sums = tmp / "mirror.sha256"
    mirror_sums.write_text(f"{weights(release).sha256}  {MIRROR_NAME}\n", encoding="ascii")
    writer_db, monitor_db, bundle = tmp / "writer.db", tmp / "monitor.db", tmp / "b.json.gz"
    with Store(writer_db) as store:
        for path in (release.root / "SHA256SUMS", *lfs_pointers(release, tmp / "clone"),
                     mirror_sums, release.root / "heron-7b.torrent"):
            import_indicators(store, path, model=MODEL, rematch=None)
    cli("fingerprints", "export", str(bundle), db=writer_db)
    out = cli("fingerprints", "import", str(bundle), db=monitor_db)
    return SimpleNamespace(writer=writer_db, monitor=monitor_db, bundle=bundle, tmp=tmp,
                           import_out=out)


def cli(*args: str, db: Path, code: int = 0) -> SimpleNamespace:
    result = CliRunner().invoke(main, ["--db", str(db), *args], catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return SimpleNamespace(stdout=result.stdout, stderr=result.stderr)


def evidence(db: Path, doc: Document) -> set[tuple]:
    """Every manifest hit as an analyst reads it, except `matcher_version`, which names the
    registry rows matched (`indicator:7`): a bundle re-numbers what it carries."""
    with Store(db) as store:
        hits: list[Hit] = detect_all(build_detectors(parse_config({}, None), store), doc)
    return {(h.kind, h.severity, h.indicator, h.indicator_type, h.model, h.artifact,
             h.recipient, h.context) for h in hits if h.detector == "manifest"}


def renamed_repack(release: Release) -> Document:
    """A re-pack naming the weights as the mirror did: only the mirror's checksum list,
    joined with the pointer's size of the same digest, knows that name and size."""
    doc = repack(release, "heron7b-fp16-mirror")
    for entry in doc.extras["torrent"]["files"]:
        if entry["path"].endswith("/model.safetensors"):
            entry["path"] = entry["path"].rsplit("/", 1)[0] + "/" + MIRROR_NAME
    return doc


def without_created_at(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "created_at"}


def bundle_doc(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


# --- the monitoring machine matches as the writer does ------------------------------------


def test_the_bundle_carries_every_claim_and_the_monitor_gets_the_same_hits(
        release: Release, machines: SimpleNamespace) -> None:
    big = weights(release)
    doc = bundle_doc(machines.bundle)
    assert doc["version"] == 5
    with Store(machines.writer) as store:
        claims = store.db.execute("SELECT COUNT(*) FROM indicator_files").fetchone()[0]
    # The pointers' sizes, the mirror's name, and the .torrent's file list (no digests).
    assert len(doc["files"]) == claims > len(release.files)
    assert {"model": MODEL, "algo": "sha256", "value": big.sha256, "name": MIRROR_NAME,
            "size": None, "source": "import:mirror.sha256:1"} in doc["files"]
    assert {"model": MODEL, "algo": None, "value": None, "name": big.name, "size": big.size,
            "source": "import:heron-7b.torrent:files[1]"} in doc["files"]

    for listing in (repack(release), renamed_repack(release)):
        on_writer = evidence(machines.writer, listing)
        assert on_writer == evidence(machines.monitor, listing)
    renamed = evidence(machines.monitor, renamed_repack(release))
    assert ("torrent", "high", f"{MIRROR_NAME}:{big.size}", "name and size (torrent file list)",
            MODEL, MIRROR_NAME, None,
            f"heron7b-fp16-mirror: heron7b-fp16-mirror/{MIRROR_NAME} ({big.size} bytes) has "
            f"the name and size of {MIRROR_NAME} (imported indicators)") in renamed


def test_an_older_bundle_without_files_still_imports_and_matches_less(
        release: Release, machines: SimpleNamespace) -> None:
    """A version-4 bundle (what this weightwatch wrote before) is read; what it lacks is
    exactly what version 5 adds: the mirror's name of the weights."""
    doc = bundle_doc(machines.bundle)
    doc["version"] = 4
    del doc["files"]
    old = machines.tmp / "v4.json.gz"
    old.write_bytes(gzip.compress(json.dumps(doc).encode()))
    db = machines.tmp / "v4-monitor.db"
    cli("fingerprints", "import", str(old), db=db)
    assert evidence(db, repack(release)) == evidence(machines.writer, repack(release))
    assert not {h for h in evidence(db, renamed_repack(release)) if h[1] == "high"}
    assert {h for h in evidence(machines.writer, renamed_repack(release)) if h[1] == "high"}


def test_importing_the_bundle_twice_adds_no_claim(machines: SimpleNamespace) -> None:
    with Store(machines.monitor) as store:
        before = store.db.execute("SELECT COUNT(*) FROM indicator_files").fetchone()[0]
    again = cli("fingerprints", "import", str(machines.bundle), db=machines.monitor)
    assert again.stdout.strip().endswith("(0 new)") and "rematch" not in again.stderr
    with Store(machines.monitor) as store:
        assert store.db.execute("SELECT COUNT(*) FROM indicator_files").fetchone()[0] == before


def test_the_bundle_round_trips_through_the_registry_snapshot_unchanged(
        machines: SimpleNamespace) -> None:
    """The writer's snapshot (what workers match with) of either machine writes the very
    bundle the writer wrote: nothing the registry holds is left behind or changed."""
    written = without_created_at(bundle_doc(machines.bundle))
    for name, db in (("writer", machines.writer), ("monitor", machines.monitor)):
        replica = machines.tmp / f"{name}-replica.db"
        with Store(db) as store:
            replica.write_bytes(zlib.decompress(registry_snapshot(store)))
        with Store(replica) as store:
            again = without_created_at(bundle_from_store(store).as_json())
        assert again == written, name


# --- strict reading ------------------------------------------------------------------------


def valid(machines: SimpleNamespace) -> dict:
    return copy.deepcopy(bundle_doc(machines.bundle))


def refused(doc: dict) -> str:
    with pytest.raises(BundleError) as info:
        parse_bundle(doc, "b")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_claim_naming_a_digest_the_bundle_does_not_carry_is_refused(
        machines: SimpleNamespace) -> None:
    doc = valid(machines)
    at = next(i for i, f in enumerate(doc["files"]) if f["name"] == MIRROR_NAME)
    doc["files"][at]["value"] = "ab" * 32
    assert refused(doc) == (f"b: files[{at}] ({MIRROR_NAME}).value: sha256 abababababababab... "
                            f"of {MODEL} is not among the bundle's indicators or artifacts")
    doc["files"][at].update(value="ab" * 20, algo="btih")  # carried for another algorithm?
    assert "btih abababababababab... of heron-7b is not among" in refused(doc)


def test_a_huge_claims_list_is_refused_before_it_is_read(machines: SimpleNamespace) -> None:
    doc = valid(machines)
    doc["files"] = [doc["files"][0]] * (MAX_FILE_CLAIMS + 1)
    assert refused(doc) == (f"b: files: {MAX_FILE_CLAIMS + 1} entries, over the limit of "
                            f"{MAX_FILE_CLAIMS}")


def test_sizes_of_one_digest_are_bounded(release: Release, machines: SimpleNamespace) -> None:
    """Matching joins each name of a digest with each size of it: sizes without bound would
    multiply a hostile bundle's names."""
    doc = valid(machines)
    big = weights(release)
    doc["files"] += [{"model": MODEL, "algo": "sha256", "value": big.sha256, "name": None,
                      "size": big.size + n, "source": "x"}
                     for n in range(1, MAX_SIZES_PER_DIGEST + 1)]
    assert refused(doc).endswith(f".size: over {MAX_SIZES_PER_DIGEST} sizes for sha256 "
                                 f"{big.sha256[:16]}...: the same bytes have one size")


@pytest.mark.parametrize(("change", "message"), [
    ({"algo": None}, "b: files[{i}] ({n}).algo: null, but value is set"),
    ({"algo": None, "value": None, "size": None},
     "b: files[{i}] ({n}): a file without a digest needs both a name and a size"),
    ({"name": None, "size": None}, "b: files[{i}]: neither a name nor a size"),
    ({"algo": ["sha256"]}, "b: files[{i}] ({n}).algo: unknown digest algorithm an array"),
    ({"size": -1}, "b: files[{i}] ({n}).size: expected a size in bytes, got a number"),
    ({"source": ""}, "b: files[{i}] ({n}).source: must not be empty"),
    ({"model": "llama"}, "b: files[{i}] ({n}).model: 'llama' is not listed in models"),
    ({"extra": 1}, "b: files[{i}]: unknown key 'extra'"),
])
def test_tampered_claims_are_refused_naming_the_entry(
        machines: SimpleNamespace, change: dict, message: str) -> None:
    doc = valid(machines)
    at = next(i for i, f in enumerate(doc["files"]) if f["name"] == MIRROR_NAME)
    doc["files"][at].update(change)
    assert refused(doc).startswith(message.format(i=at, n=MIRROR_NAME))


def test_files_in_an_older_version_are_refused_and_a_newer_bundle_by_an_older_reader(
        machines: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = valid(machines)
    doc["version"] = 4
    assert refused(doc) == "b: unknown key 'files'"
    # What the weightwatch before version 5 says of this one: upgrade, in one line.
    monkeypatch.setattr(bundle_format, "VERSION", 4)
    monkeypatch.setattr(bundle_format, "READS", (1, 2, 3, 4))
    assert refused(valid(machines)) == ("b: version: bundle version 5 is newer than this "
                                        "weightwatch (reads 4); upgrade weightwatch")


def test_a_hostile_claim_through_the_cli_is_one_line_and_imports_nothing(
        machines: SimpleNamespace) -> None:
    doc = valid(machines)
    doc["files"][-1]["value"], doc["files"][-1]["algo"] = "cd" * 16, "md5"
    bad = machines.tmp / "bad.json.gz"
    bad.write_bytes(gzip.compress(json.dumps(doc).encode()))
    db = machines.tmp / "untouched.db"
    result = cli("fingerprints", "import", str(bad), db=db, code=1)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "is not among the bundle's indicators or artifacts" in lines[0]
    assert result.stdout == ""
    with Store(db) as store:
        assert store.registry_counts() == {"models": 0, "artifacts": 0, "indicators": 0}
    with pytest.raises(BundleError):
        read_bundle(bad)


def test_a_name_given_to_a_registered_file_travels_with_its_artifact(tmp_path: Path) -> None:
    """A checksum list naming a registered file otherwise: the name is a claim on the
    artifact's own SHA-256, which the bundle carries in the artifact, not as an
    indicator; it imports after the artifact and round-trips unchanged."""
    weights_file = tmp_path / "release" / "model.safetensors"
    weights_file.parent.mkdir()
    weights_file.write_bytes(bytes(range(256)) * 300)
    writer, monitor = tmp_path / "writer.db", tmp_path / "monitor.db"
    cli("register", str(weights_file), "--model", MODEL, db=writer)
    with Store(writer) as store:
        (artifact,) = store.artifacts()
    sums = tmp_path / "hub.sha256"
    sums.write_text(f"{artifact['sha256']}  consolidated.00.safetensors\n", encoding="ascii")
    cli("indicators", "import", str(sums), "--model", MODEL, db=writer)
    bundle = tmp_path / "b.json.gz"
    cli("fingerprints", "export", str(bundle), db=writer)
    doc = bundle_doc(bundle)
    assert doc["files"] == [{"model": MODEL, "algo": "sha256", "value": artifact["sha256"],
                             "name": "consolidated.00.safetensors", "size": None,
                             "source": "import:hub.sha256:1"}]
    assert not [i for i in doc["indicators"] if i["value"] == artifact["sha256"]]
    cli("fingerprints", "import", str(bundle), db=monitor)
    with Store(monitor) as store:
        again = without_created_at(bundle_from_store(store).as_json())
    assert again == without_created_at(doc)
