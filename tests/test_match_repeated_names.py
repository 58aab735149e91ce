"""A suspect file that repeats a tensor name must still have each tensor compared.

TFLite does not forbid two tensors of one name, so a leaker can list a copied matrix and
then a vector of the same name. match_weights once looked each tensor's matrix view up by
name, so the vector's (none) hid the matrix and the copy came out inconclusive.
"""

from __future__ import annotations

import numpy as np

from fingerprints.dequant import Floats
from fingerprints.tensors import BytesSource, Rows, TensorInfo, TensorLookup, read_plain_rows
from fingerprints.weightprint import (
    VERDICT_MATCH,
    fingerprint_weights,
    match_weights,
    new_key,
)

WEIGHTS = np.random.default_rng(15).standard_normal((256, 256)).astype(np.float32)
VECTOR = np.zeros(256, dtype=np.float32)


class InMemory(TensorLookup):
    """F32 tensors laid end to end in one in-memory file, listed under the given names."""

    def __init__(self, tensors: list[tuple[str, np.ndarray]]):
        self.source = BytesSource(b"".join(a.tobytes() for _, a in tensors), "suspect.bin")
        self.tensors = []
        offset = 0
        for name, array in tensors:
            row = array.nbytes // array.shape[0]
            self.tensors.append(TensorInfo(name, array.shape, "F32", offset, array.nbytes, row))
            offset += array.nbytes

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        return read_plain_rows(self.source, tensor, rows)


def test_a_same_named_vector_after_a_copied_matrix_does_not_hide_it() -> None:
    ours = fingerprint_weights(InMemory([("w", WEIGHTS)]), new_key())
    for listing in ([("w", WEIGHTS), ("w", VECTOR)], [("w", VECTOR), ("w", WEIGHTS)]):
        result = match_weights(InMemory(listing), [("model", ours)])
        assert result.verdict == VERDICT_MATCH, (listing[0][1].shape, result.verdict)
        assert result.tensors_compared == 1
