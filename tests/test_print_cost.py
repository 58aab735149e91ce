"""A print costs a fixed budget of rows, whatever the model's size, and those rows are the
ones the matcher compares (issue 16).

Version 3 reads and sketches only keyed runs of rows (`run_rows`): this checks the bytes
a fingerprint reads stay within the budget as the model grows, that its sketches are the
sketches of exactly those rows read on their own (so a suspect's keyed run is compared
with the same computation), and that the null measured through Gram matrices is the one
every decoy against every sketch gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import weights_lab as lab

from fingerprints import weightprint
from fingerprints.tensors import FileSource
from fingerprints.weightprint import (
    DECOY_TENSORS,
    DECOYS_PER_TENSOR,
    MIN_SKETCH_RUNS,
    RUN_ROWS,
    SAMPLE_ROWS,
    WeightPrint,
    _seed,
    canonical_order,
    fingerprint_weights,
    read_matrix_rows,
    sketch,
)
from fingerprints.weights import open_weights

KEY = bytes(range(32))


def old_null_dims(print_: WeightPrint) -> float:
    """measure_null_dims without the Gram matrices: each decoy against every sketch."""
    groups = print_.groups
    squares, count = 0.0, 0
    chosen = sorted(print_.tensors, key=lambda t: _seed(print_.key, "decoys", t.name))
    for tensor in chosen[:DECOY_TENSORS]:
        rng = np.random.default_rng(_seed(print_.key, "decoy", tensor.name))
        decoys = np.concatenate([tensor.samples[:, rng.permutation(tensor.columns)]
                                 for _ in range(DECOYS_PER_TENSOR)])
        projected, valid = sketch(decoys, print_.key)
        cos = projected[valid] @ groups[tensor.columns].sketch.T
        squares += float(np.einsum("ij,ij->", cos, cos, dtype=np.float64))
        count += cos.size
    return float(min(weightprint.SKETCH_DIMS, max(1.0, count / squares)))


@pytest.fixture(scope="module")
def minilm_q4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab.write_gguf(tmp_path_factory.mktemp("q4") / "minilm.gguf", lab.minilm_tensors(),
                          "Q4_0")


@pytest.mark.parametrize("form", ["safetensors", "gguf-q4_0"])
def test_sketches_are_of_the_keyed_rows_and_the_gram_null_is_the_brute_one(
        form: str, minilm_q4: Path) -> None:
    path = lab.minilm_path() if form == "safetensors" else minilm_q4
    with FileSource(path) as source:
        reader = open_weights(source)
        print_ = fingerprint_weights(reader, KEY)
        by_name = {t.name: t for t in reader.tensors}
        assert len(print_.tensors) > 30
        assert any(not t.every_row for t in print_.tensors)
        for t in print_.tensors:
            tensor = by_name[t.name]
            index = t.sketch_index(KEY)
            order = canonical_order(reader, tensor)
            rows = read_matrix_rows(reader, tensor, index if order is None else order[index])
            np.testing.assert_array_equal(t.sketch, sketch(rows, KEY)[0].astype(np.float16))
    # float32 products against float64 Gram sums: equal to far more digits than the
    # p-values it scales are reported with.
    assert print_.null_dims == pytest.approx(old_null_dims(print_), rel=1e-7)


def _layers(n: int, rows: int = 512, cols: int = 256) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {f"layer.{i}.w.weight": rng.standard_normal((rows, cols)).astype(np.float32)
            for i in range(n)}


def test_bytes_read_stay_within_the_budget_as_the_model_grows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small per-file budget, so small files show what a 7B model does: each tensor gets
    MIN_SKETCH_RUNS runs plus its sample rows, never the whole tensor."""
    monkeypatch.setattr(weightprint, "SKETCH_VALUES", 1 << 14)
    read = {}
    for n in (4, 16):
        path = lab.write_safetensors(tmp_path / f"m{n}.safetensors", _layers(n))
        with FileSource(path) as source:  # it counts the bytes it reads
            print_ = fingerprint_weights(open_weights(source), KEY)
            read[n] = source.bytes_read
        assert all(t.runs == MIN_SKETCH_RUNS for t in print_.tensors)
        most = n * (MIN_SKETCH_RUNS * RUN_ROWS + SAMPLE_ROWS) * 256 * 4
        assert read[n] <= most + (1 << 16), (n, read[n], most)
        assert read[n] < path.stat().st_size / 3


@pytest.mark.parametrize("width", [32, 136, 1536])
def test_projected_dims_is_the_null_unrelated_vectors_show(width: int) -> None:
    """Unrelated random vectors of a narrow width, sketched, meet each other's sketches
    with E[c^2] = 1 / projected_dims, well above the 1 / 32 a uniform null would give for
    32 values: the p-values of columns cut down to a few runs rest on this."""
    rng = np.random.default_rng(width)
    ours, _ = sketch(rng.standard_normal((400, width)).astype(np.float32), KEY)
    theirs, _ = sketch(rng.standard_normal((400, width)).astype(np.float32), KEY)
    mean_square = float(np.mean((theirs @ ours.T) ** 2))
    dims = weightprint.projected_dims(KEY, width)
    assert 1 / mean_square == pytest.approx(dims, rel=0.08)
    assert dims < weightprint.SKETCH_DIMS * (0.6 if width == 32 else 1.0)
