"""How a watermark test's numbers are shown: a false-attribution bound too small for a
float is never printed as 0, and the z of an unattributed test says whose it is.

The whole path (real files, the CLI on a monitoring machine) is
tests/test_watermark_bundle.py; this is the arithmetic and the record, fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fingerprints.watermark import (
    Attribution,
    Candidate,
    Evidence,
    bound,
    detect_marks,
    log10_bound,
    mark_rows,
    show_bound,
)


@pytest.mark.parametrize(("z", "recipients"), [(0.5, 3), (3.0, 1), (6.0, 1000), (30.0, 7)])
def test_log10_bound_is_the_bound_where_a_float_holds_it(z, recipients):
    assert log10_bound(z, recipients) == pytest.approx(math.log10(bound(z, recipients)),
                                                       abs=1e-9)


def test_a_bound_below_the_smallest_float_keeps_its_power_of_ten():
    z, recipients = 50.0, 1000
    assert bound(z, recipients) == 0.0
    exact = 3 - z * z / 2 / math.log(10)  # log10(1000 * exp(-1250))
    assert log10_bound(z, recipients) == pytest.approx(exact)
    assert show_bound(0.0, exact) == "10^-539.9"
    # Subnormal floats have lost their digits: shown from the log10 as well.
    assert show_bound(bound(38.0, 1000), log10_bound(38.0, 1000)) == "10^-310.6"
    assert show_bound(bound(6.0, 1000), log10_bound(6.0, 1000)) == "1.52e-05"
    assert show_bound(1.0, 0.0) == "1" and show_bound(None, None) is None
    record = Attribution("marked", "acme", z, bound(z, recipients), recipients=recipients,
                         best="acme").as_dict()
    assert record["bound"] == 0.0 and record["bound_log10"] == pytest.approx(exact, abs=1e-3)


def _evidence(marked_for: bytes | None, seed: int = 3) -> list[Evidence]:
    """One F32 tensor's kept rows, and the suspect's: `marked_for`'s copy (or the original)
    after noise ten times the mark."""
    rng = np.random.default_rng(seed)
    rows = np.arange(64)
    original = rng.normal(0, 0.02, (64, 256)).astype(np.float32)
    suspect = (original if marked_for is None
               else mark_rows(original, "F32", marked_for, "blk.0.attn_q.weight", rows, 1.0))
    suspect = suspect + rng.normal(0, 0.001, suspect.shape).astype(np.float32)
    return [Evidence("blk.0.attn_q.weight", "F32", rows, original, suspect)]


CANDIDATES = [Candidate(name, bytes([i]) * 32, {"blk.0.attn_q.weight": 1.0})
              for i, name in enumerate(["acme", "globex", "initech"], start=1)]


def test_an_unmarked_copy_names_whose_z_is_shown():
    result = detect_marks(_evidence(None), CANDIDATES)
    assert result.outcome == "unmarked_original" and result.recipient is None
    assert result.best in {c.recipient for c in CANDIDATES}
    assert result.z == result.scores[result.best] == max(result.scores.values())
    record = result.as_dict()
    assert record["best_candidate"] == result.best and record["recipient"] is None


def test_a_marked_copy_names_its_recipient_as_best_too():
    result = detect_marks(_evidence(CANDIDATES[1].key), CANDIDATES)
    assert (result.outcome, result.recipient, result.best) == ("marked", "globex", "globex")
    assert result.as_dict()["runner_up_bound_log10"] == pytest.approx(
        log10_bound(result.runner_up_z or 0.0, 3), abs=1e-3)
