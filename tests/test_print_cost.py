"""Fingerprinting in bounded memory gives the same print as the old whole-block pass.

The register pass takes its float64 statistics a slice of rows at a time and measures the
null through Gram matrices (issue 16); this keeps the old computation here (statistics on
the whole read block at once; every decoy against every sketch) and checks the real MiniLM
file, as safetensors and as a Q4_0 GGUF, prints the same under both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import weights_lab as lab

from fingerprints import weightprint
from fingerprints.tensors import FileSource
from fingerprints.weightprint import (
    DECOYS_PER_TENSOR,
    WeightPrint,
    _seed,
    fingerprint_weights,
    sketch,
)
from fingerprints.weights import open_weights

KEY = bytes(range(32))


def old_null_dims(print_: WeightPrint) -> float:
    """measure_null_dims before issue 16: each decoy against every sketch of its width."""
    groups = print_.groups
    squares, count = 0.0, 0
    for tensor in print_.tensors:
        rng = np.random.default_rng(_seed(print_.key, "decoy", tensor.name))
        for _ in range(DECOYS_PER_TENSOR):
            decoys = tensor.samples[:, rng.permutation(tensor.columns)]
            projected, valid = sketch(decoys, print_.key)
            cos = projected[valid] @ groups[tensor.columns].sketch.T
            squares += float(np.einsum("ij,ij->", cos, cos, dtype=np.float64))
            count += cos.size
    return float(min(weightprint.SKETCH_DIMS, max(1.0, count / squares)))


def fingerprint(path: Path) -> WeightPrint:
    with FileSource(path) as source:
        return fingerprint_weights(open_weights(source), KEY)


@pytest.fixture(scope="module")
def minilm_q4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab.write_gguf(tmp_path_factory.mktemp("q4") / "minilm.gguf", lab.minilm_tensors(),
                          "Q4_0")


@pytest.mark.parametrize("form", ["safetensors", "gguf-q4_0"])
def test_sliced_statistics_and_gram_null_give_the_old_print(
        form: str, minilm_q4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = lab.minilm_path() if form == "safetensors" else minilm_q4
    new = fingerprint(path)
    # The old pass: float64 statistics over the whole 32 MB read block at once.
    monkeypatch.setattr(weightprint, "_STATS_BLOCK_BYTES", 1 << 40)
    monkeypatch.setattr(weightprint, "measure_null_dims", old_null_dims)
    old = fingerprint(path)
    assert [t.name for t in new.tensors] == [t.name for t in old.tensors]
    assert len(new.tensors) > 30
    for a, b in zip(new.tensors, old.tensors, strict=True):
        assert a.role == b.role and a.stats == b.stats, a.name
        np.testing.assert_array_equal(a.sketch, b.sketch)
        np.testing.assert_array_equal(a.sample_index, b.sample_index)
        np.testing.assert_array_equal(a.samples, b.samples)
        assert (a.column_sketch is None) == (b.column_sketch is None)
        if a.column_sketch is not None:
            np.testing.assert_array_equal(a.column_sketch, b.column_sketch)
    # float32 products against float64 Gram sums: equal to far more digits than the
    # p-values it scales are reported with.
    assert new.null_dims == pytest.approx(old.null_dims, rel=1e-7)
