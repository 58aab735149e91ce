"""Tensor prints of earlier versions keep matching, and version-3 prints (keyed runs of rows,
not every row) hold together through bundles and the store (issue 16).

tests/data/print_v2.json.gz is a version-2 print (every row sketched) made by weightwatch
before version 3, of the model `_model()` builds, under `V2_KEY`; it is pinned, not
regenerated, so a change that stops old prints in databases and bundles from matching
fails here.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import weights_lab as lab

from fingerprints import weightprint
from fingerprints.tensors import FileSource
from fingerprints.weightprint import (
    PRINT_VERSION,
    RUN_ROWS,
    VERDICT_MATCH,
    VERDICT_NO_MATCH,
    PrintError,
    WeightPrint,
    fingerprint_weights,
    match_weights,
    run_rows,
)
from fingerprints.weights import open_weights
from monitor.store import Store

V2_PRINT = Path(__file__).parent / "data" / "print_v2.json.gz"
V2_KEY = b"weightwatch v2 print test key 32"


def _model(seed: int = 20261207) -> dict[str, np.ndarray]:
    """The model the pinned print was made of (the same generator, the same order)."""
    rng = np.random.default_rng(seed)
    t = {"embed.weight": rng.standard_normal((256, 32)).astype(np.float32)}
    for i in range(3):
        t[f"layer.{i}.w1.weight"] = (rng.standard_normal((64, 32)) * 0.1).astype(np.float32)
        t[f"layer.{i}.w2.weight"] = (rng.standard_normal((32, 64)) * 0.1).astype(np.float32)
    return t


def _v2() -> WeightPrint:
    with gzip.open(V2_PRINT, "rt") as f:
        return WeightPrint.from_json(json.load(f), str(V2_PRINT))


def _match(path: Path, prints: list[tuple[str, WeightPrint]]):  # type: ignore[no-untyped-def]
    with FileSource(path) as source:
        return match_weights(open_weights(source), prints)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab.write_safetensors(tmp_path_factory.mktemp("v2") / "copy.safetensors", _model())


def test_a_pinned_version_2_print_still_matches_its_copy(copy: Path, tmp_path: Path) -> None:
    old = _v2()
    assert old.version == 2 and old.key == V2_KEY
    assert all(t.every_row and t.runs == 0 for t in old.tensors)
    result = _match(copy, [("old", old)])
    assert result.verdict == VERDICT_MATCH and result.model == "old", result.as_dict()
    # Through the store too (the sketch blob of a version-2 row is every row's).
    with Store(tmp_path / "r.db") as store:
        store.add_weight_print(model="old", name="copy.safetensors", print_=old)
        (_, _, back), = store.weight_prints()
    assert back.version == 2
    np.testing.assert_array_equal(back.tensors[0].sketch, old.tensors[0].sketch)
    assert _match(copy, [("old", back)]).verdict == VERDICT_MATCH
    # An unrelated model of the same shapes is not it.
    other = lab.write_safetensors(tmp_path / "other.safetensors", _model(seed=5))
    assert _match(other, [("old", old)]).verdict == VERDICT_NO_MATCH


def test_old_and_new_prints_side_by_side(copy: Path, tmp_path: Path) -> None:
    """A registry holding a version-2 print of one model and a version-3 print of another
    of the same shapes tells their copies apart."""
    other_path = lab.write_safetensors(tmp_path / "other.safetensors", _model(seed=5))
    with FileSource(other_path) as source:
        new = fingerprint_weights(open_weights(source), b"another key, 32 bytes long......")
    assert new.version == PRINT_VERSION == 3
    prints = [("old", _v2()), ("new", new)]
    assert _match(copy, prints).model == "old"
    assert _match(other_path, prints).model == "new"


def test_a_version_1_print_gets_its_roles_derived() -> None:
    """A fingerprint stored before roles existed (bundle version 2, store rows with no role
    column) is read, and its roles come out as they were registered."""
    with gzip.open(V2_PRINT, "rt") as f:
        doc = json.load(f)
    roles = [t["role"] for t in doc["tensors"]]
    doc["version"] = 1
    for t in doc["tensors"]:
        del t["role"], t["column_sketch"]
    old = WeightPrint.from_json(doc)
    assert [t.role for t in old.tensors] == roles
    assert all(t.column_sketch is None for t in old.tensors)


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-tensor budget of a few runs, so small test matrices are sketched in part, as
    a large model's are."""
    monkeypatch.setattr(weightprint, "SKETCH_TENSOR_VALUES", 1 << 12)


def _tall(rows: int = 512, cols: int = 64, layers: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {f"layer.{i}.w.weight": rng.standard_normal((rows, cols)).astype(np.float32)
            for i in range(layers)}


def test_a_version_3_print_sketches_keyed_runs_and_round_trips(tmp_path: Path,
                                                               small_budget: None) -> None:
    """Tall matrices: only whole keyed runs are sketched, at the same positions in every
    tensor of that height; JSON (bundles) and the store give the same print back, positions
    derived from the key."""
    path = lab.write_safetensors(tmp_path / "tall.safetensors", _tall())
    key = bytes(range(32))
    with FileSource(path) as source:
        print_ = fingerprint_weights(open_weights(source), key)
    first = print_.tensors[0]
    assert 0 < first.sketch.shape[0] < first.shape[0] and not first.every_row
    index = first.sketch_index(key)
    assert index.size == first.sketch.shape[0] == first.runs * RUN_ROWS
    assert np.array_equal(index, run_rows(key, 512, first.runs))
    # Whole runs of consecutive rows: one range request each.
    assert set(np.unique(index // RUN_ROWS).tolist()) == set((index // RUN_ROWS).tolist())
    assert np.unique(index // RUN_ROWS).size == first.runs
    assert all(np.array_equal(t.sketch_index(key), index) for t in print_.tensors)
    assert first.column_sketch is not None and first.column_sketch.shape == (64, 32)

    back = WeightPrint.from_json(json.loads(json.dumps(print_.as_json())))
    with Store(tmp_path / "r.db") as store:
        store.add_weight_print(model="m", name="tall.safetensors", print_=print_)
        (_, _, stored), = store.weight_prints()
    for again in (back, stored):
        assert again.version == 3
        for ours, theirs in zip(print_.tensors, again.tensors):
            assert theirs.runs == ours.runs
            np.testing.assert_array_equal(theirs.sketch, ours.sketch)
            np.testing.assert_array_equal(theirs.column_sketch, ours.column_sketch)
            np.testing.assert_array_equal(theirs.samples, ours.samples)
    assert _match(path, [("m", back)]).verdict == VERDICT_MATCH


def test_a_copy_stored_transposed_is_found_by_restricted_columns(tmp_path: Path,
                                                                 small_budget: None) -> None:
    """Our columns restricted to the sketched rows: a suspect storing the matrices
    transposed reads whole rows (our columns), keeps those positions, and is found."""
    tensors = _tall(rows=512, cols=96)
    path = lab.write_safetensors(tmp_path / "tall.safetensors", tensors)
    with FileSource(path) as source:
        print_ = fingerprint_weights(open_weights(source), bytes(range(32)))
    assert not print_.tensors[0].every_row
    onnx = lab.write_safetensors(tmp_path / "t.safetensors", {
        f"onnx::MatMul_{i}": np.ascontiguousarray(a.T) for i, a in enumerate(tensors.values())})
    result = _match(onnx, [("m", print_)])
    assert result.verdict == VERDICT_MATCH, result.as_dict()
    assert all(p.transposed for p in result.pairs if p.rows_matched)
    unrelated = np.random.default_rng(3).standard_normal((96, 512)).astype(np.float32)
    other = lab.write_safetensors(tmp_path / "o.safetensors", {"x": unrelated})
    assert _match(other, [("m", print_)]).verdict == VERDICT_NO_MATCH


def test_a_tampered_version_3_sketch_count_is_one_line(tmp_path: Path,
                                                       small_budget: None) -> None:
    path = lab.write_safetensors(tmp_path / "tall.safetensors", _tall())
    with FileSource(path) as source:
        doc = fingerprint_weights(open_weights(source), bytes(range(32))).as_json()
    import base64
    raw = base64.b64decode(doc["tensors"][0]["sketch"])
    doc["tensors"][0]["sketch"] = base64.b64encode(raw[:-64]).decode()
    with pytest.raises(PrintError) as info:
        WeightPrint.from_json(doc, "b.json")
    message = str(info.value)
    assert message.startswith("b.json: layer.0.w.weight: ") and "keyed runs" in message
    assert "\n" not in message


def test_shards_registered_under_their_own_keys_find_a_merged_renamed_copy(
        tmp_path: Path, small_budget: None) -> None:
    """Each registered file has its own key, so its own sketched positions: a suspect
    tensor is read at the positions of each print holding its shape (names gone, so none
    is preferred), and the shards' layers are found in one merged file."""
    tensors = _tall(layers=4)
    names = list(tensors)
    prints = []
    for i, part in enumerate((names[:2], names[2:])):
        path = lab.write_safetensors(tmp_path / f"s{i}.safetensors",
                                     {n: tensors[n] for n in part})
        with FileSource(path) as source:
            prints.append(("m", fingerprint_weights(open_weights(source), bytes([i + 1]) * 32)))
    assert not prints[0][1].tensors[0].every_row
    merged = lab.write_safetensors(tmp_path / "merged.safetensors",
                                   {f"t{i}": a for i, a in enumerate(tensors.values())})
    result = _match(merged, prints)
    assert result.verdict == VERDICT_MATCH, result.as_dict()
    # Found through both keys (the scan stops once three body matrices are found).
    assert set(names[:2]) & set(result.body_found) and set(names[2:]) & set(result.body_found)
    # Every tensor read at both keys' positions when neither finds anything.
    other = lab.write_safetensors(tmp_path / "other.safetensors", {
        f"t{i}": np.random.default_rng(i).standard_normal((512, 64)).astype(np.float32)
        for i in range(4)})
    with FileSource(other) as source:
        result = match_weights(open_weights(source), prints)
        assert result.verdict == VERDICT_NO_MATCH
        assert result.rows_compared == 4 * 2 * RUN_ROWS
