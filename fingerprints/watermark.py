"""Per-recipient watermarks: a keyed spread-spectrum mark in the weight matrices of each
recipient's copy, and the test that names whose copy a leaked file was.

Marking. Each recipient has a key derived from the organisation's master secret
(`recipient_key`: HMAC-SHA256 of model and recipient), so the registry keeps per-recipient
keys and never the master. The key drives a pseudo-random pattern over every element of
every marked 2-D tensor: a sign, and whether the element is marked at all (a keyed choice
with probability `density`). A marked element moves by its *magnitude*: the RMS error Q8_0
quantisation would make in its block of 32 (max|x| / 127 / sqrt(12)), and never less than
one unit of the stored dtype, so the mark survives being written as F16 or BF16. Where one
unit is larger than the Q8_0 error (BF16 near a block's maximum), fewer elements are marked
(`plan_density`), so each tensor changes by no more RMS than Q8_0 quantisation would.

Detecting. The fingerprint keeps a run of original rows of each tensor
(`fingerprints.weightprint`); the suspect's same rows minus the originals is the deviation
d. For a recipient with expected mark p (recomputed exactly from the originals and the key),
each element weighted by the inverse square of its block's scale (conversion noise grows
with the scale, as the mark does), S = sum(d * w) and z = S / sqrt(sum((d * w)^2)) with
w = p / scale^2. If the copy is not that recipient's, the
signs of p are independent of d, and Hoeffding's inequality for a sum of independently
signed terms gives P(z >= t) <= exp(-t^2 / 2) whatever d is (conversion noise, another
recipient's mark, fine-tuning). So with N recipients, the chance that a wrong one reaches z
is at most N * exp(-z^2 / 2): the false-attribution bound an analyst can put in a report.

The pattern is splitmix64 over (per-tensor seed, row, column), seeded from the recipient's
key: random access to any element, vectorised over thousands of recipients at once.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fingerprints.dequant import dequantize, quantize_q8_0

__all__ = ["Attribution", "MARK_DTYPES", "WatermarkError", "detect_marks", "key_id",
           "mark_rows", "mark_values", "plan_density", "recipient_key"]

MARK_VERSION = 1
BLOCK = 32
MARK_DTYPES = ("F32", "F16", "BF16")
SCREEN_ELEMENTS = 16384   # elements every recipient is scored on before the full test
FINALISTS = 4             # recipients scored on every element
_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ROW_MIX = np.uint64(0xD1B54A32D192ED03)
_DENSITY_BITS = 24


class WatermarkError(ValueError):
    """A file or request the watermarker cannot handle; one line."""


def recipient_key(master: bytes, model: str, recipient: str) -> bytes:
    """The recipient's marking key: HMAC-SHA256(master, model, recipient). Stored in the
    registry for detection; the master secret itself never is."""
    if len(master) < 16:
        raise WatermarkError("the watermark master secret must be at least 16 bytes")
    message = f"weightwatch-watermark/v{MARK_VERSION}\x1f{model}\x1f{recipient}".encode()
    return hmac.new(master, message, hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name for a key (logs, reports): reveals nothing about it."""
    return hashlib.sha256(b"weightwatch-key-id\x1f" + key).hexdigest()[:16]


# -- the pattern ----------------------------------------------------------------------------


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _tensor_seed(key: bytes, canonical: str) -> np.uint64:
    digest = hmac.new(key, canonical.encode(), hashlib.sha256).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


def _signs(seeds: np.ndarray, rows: np.ndarray, cols: np.ndarray, density: float) -> np.ndarray:
    """The pattern (-1, 0, +1) at elements (rows[i], cols[i]) for each seed (one per
    recipient): shape (len(seeds), len(rows))."""
    with np.errstate(over="ignore"):
        where = rows.astype(np.uint64) * _ROW_MIX + cols.astype(np.uint64)
        h = _splitmix(seeds[:, None] ^ where[None, :])
    threshold = np.uint64(int(density * (1 << _DENSITY_BITS)))
    marked = (h >> np.uint64(64 - _DENSITY_BITS)) < threshold
    sign = np.where(h & np.uint64(1), 1, -1).astype(np.int8)
    return np.where(marked, sign, 0).astype(np.int8)


# -- magnitudes and dtypes ------------------------------------------------------------------


def q8_0_error(rows: np.ndarray) -> np.ndarray:
    """Per element, the RMS error Q8_0 quantisation makes in its block of 32 along the
    row (the last block may be shorter)."""
    rows = np.asarray(rows, dtype=np.float32)
    n, cols = rows.shape
    padded = np.zeros((n, -(-cols // BLOCK) * BLOCK), dtype=np.float32)
    padded[:, :cols] = np.abs(rows)
    blockmax = padded.reshape(n, -1, BLOCK).max(axis=2)
    # 0.9: the block maximum itself quantises exactly, so Q8_0 errs a little less than
    # a uniform rounding error would; the mark stays below what Q8_0 does.
    per_block = 0.9 * blockmax / 127 / math.sqrt(12)
    return np.repeat(per_block, BLOCK, axis=1)[:, :cols]


def q8_0_roundtrip(rows: np.ndarray) -> np.ndarray:
    """What Q8_0 quantisation makes of rows whose length is a multiple of 32."""
    rows = np.asarray(rows, dtype=np.float32)
    return dequantize(quantize_q8_0(rows), "Q8_0").reshape(rows.shape)


def _bf16_round(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def _ordered(values: np.ndarray, dtype: str) -> np.ndarray:
    """Values of a 16-bit dtype as integers in value order (one unit apart = 1 apart)."""
    if dtype == "F16":
        bits = values.astype(np.float16).view(np.uint16).astype(np.int32)
    else:
        bits = (_bf16_round(values).view(np.uint32) >> 16).astype(np.int32)
    return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)


def _from_ordered(ordered: np.ndarray, dtype: str) -> np.ndarray:
    bits = np.where(ordered < 0, (-ordered) | 0x8000, ordered).astype(np.uint32)
    if dtype == "F16":
        return bits.astype(np.uint16).view(np.float16).astype(np.float32)
    return (bits << 16).view(np.float32)


def mark_values(rows: np.ndarray, signs: np.ndarray, dtype: str) -> np.ndarray:
    """`rows` (as stored: representable in `dtype`) with the mark `signs` (-1, 0, +1)
    applied: each marked element moves by the Q8_0 error of its block, and at least one
    unit of the dtype, in its sign's direction. Returns float32 values representable in
    `dtype`, so the copy has the original's dtype and the detector can recompute it."""
    if dtype not in MARK_DTYPES:
        raise WatermarkError(f"cannot mark {dtype} tensors (only {', '.join(MARK_DTYPES)})")
    rows = np.asarray(rows, dtype=np.float32)
    alpha = q8_0_error(rows)
    if dtype == "F32":
        step = np.maximum(alpha, np.spacing(np.abs(rows)))
        return (rows + signs * step).astype(np.float32)
    target = rows + signs * alpha
    rounded = (target.astype(np.float16).astype(np.float32) if dtype == "F16"
               else _bf16_round(target))
    # Where the Q8_0 error is under half a unit, rounding would undo the mark: one unit.
    short = (rounded == rows) & (signs != 0)
    stepped = _from_ordered(_ordered(rows, dtype) + signs.astype(np.int32), dtype)
    return np.where(short, stepped, rounded).astype(np.float32)


def plan_density(rows: np.ndarray, dtype: str) -> float:
    """The share of elements to mark so the mark's RMS stays at most Q8_0's error: 1 where
    one unit of the dtype is below that error (F32, F16), less for BF16."""
    rows = np.asarray(rows, dtype=np.float32)
    alpha = q8_0_error(rows)
    moved = mark_values(rows, np.ones(rows.shape, dtype=np.int8), dtype) - rows
    energy = float(np.mean(moved.astype(np.float64) ** 2))
    if energy <= 0:
        return 1.0
    return float(min(1.0, np.mean(alpha.astype(np.float64) ** 2) / energy))


def mark_rows(rows: np.ndarray, dtype: str, key: bytes, canonical: str,
              row_index: np.ndarray, density: float) -> np.ndarray:
    """Rows `row_index` of tensor `canonical` as the recipient with `key` receives them."""
    n, cols = rows.shape
    r = np.repeat(np.asarray(row_index, dtype=np.int64), cols)
    c = np.tile(np.arange(cols, dtype=np.int64), n)
    seed = np.array([_tensor_seed(key, canonical)], dtype=np.uint64)
    signs = _signs(seed, r, c, density)[0].reshape(n, cols)
    return mark_values(rows, signs, dtype)


# -- detection ------------------------------------------------------------------------------


@dataclass
class Evidence:
    """One tensor's rows as registered and as found in the suspect."""

    canonical: str
    dtype: str                # the original's stored dtype (the mark's unit)
    row_index: np.ndarray     # canonical row numbers
    original: np.ndarray      # (rows, columns) float32
    suspect: np.ndarray       # the same rows in the suspect, float32


@dataclass
class Candidate:
    recipient: str
    key: bytes
    densities: dict[str, float]


@dataclass
class Attribution:
    """The outcome of a watermark test."""

    outcome: str                              # "marked" or "unmarked_original"
    recipient: str | None
    z: float
    bound: float                              # N * exp(-z^2 / 2), at most 1
    runner_up: str | None = None
    runner_up_z: float | None = None
    runner_up_bound: float | None = None
    recipients: int = 0
    elements: int = 0
    tensors: int = 0
    scores: dict[str, float] = field(default_factory=dict)  # z of the finalists

    def as_dict(self) -> dict[str, object]:
        return {"outcome": self.outcome, "recipient": self.recipient, "z": round(self.z, 3),
                "bound": self.bound, "runner_up": self.runner_up,
                "runner_up_z": None if self.runner_up_z is None else round(self.runner_up_z, 3),
                "runner_up_bound": self.runner_up_bound, "recipients": self.recipients,
                "elements": self.elements, "tensors": self.tensors}


def bound(z: float, recipients: int) -> float:
    """N * exp(-z^2 / 2), at most 1: the chance a wrong recipient scores z or more."""
    if z <= 0:
        return 1.0
    return float(min(1.0, recipients * math.exp(-z * z / 2)))


def detect_marks(evidence: Sequence[Evidence], candidates: Sequence[Candidate], *,
                 max_bound: float = 1e-6) -> Attribution:
    """Score every candidate recipient on the deviation of the suspect's rows from the
    originals; the best is attributed if its bound is at most `max_bound`.

    All candidates are first scored on a fixed sample of SCREEN_ELEMENTS elements, then
    the FINALISTS best on every element; the bound covers every candidate either way
    (a wrong recipient's full score is what the bound is about, screened or not)."""
    flat = _flatten(evidence)
    n = len(candidates)
    if not n or flat is None:
        return Attribution("unmarked_original", None, 0.0, 1.0, recipients=n)
    d, rows, cols, tensor, dtypes, originals = flat
    screen = _screen_positions(d.size)
    screened = [_score(d, rows, cols, tensor, dtypes, originals, evidence, candidates[i:i + 256],
                       screen) for i in range(0, n, 256)]
    screen_z = np.concatenate(screened) if screened else np.zeros(0)
    finalists = np.argsort(-screen_z)[:FINALISTS]
    full = _score(d, rows, cols, tensor, dtypes, originals, evidence,
                  [candidates[i] for i in finalists], None)
    order = np.argsort(-full)
    best = int(finalists[order[0]])
    z = float(full[order[0]])
    result = Attribution(
        outcome="marked" if bound(z, n) <= max_bound else "unmarked_original",
        recipient=candidates[best].recipient if bound(z, n) <= max_bound else None,
        z=z, bound=bound(z, n), recipients=n, elements=int(d.size), tensors=len(evidence),
        scores={candidates[int(finalists[i])].recipient: float(full[i])
                for i in range(len(finalists))})
    if len(order) > 1:
        second = int(finalists[order[1]])
        result.runner_up = candidates[second].recipient
        result.runner_up_z = float(full[order[1]])
        result.runner_up_bound = bound(result.runner_up_z, n)
    return result


def _flatten(evidence: Sequence[Evidence]):  # type: ignore[no-untyped-def]
    parts = [e for e in evidence if e.original.size and e.original.shape == e.suspect.shape]
    if not parts:
        return None
    d = np.concatenate([(e.suspect - e.original).ravel() for e in parts]).astype(np.float64)
    rows = np.concatenate([np.repeat(e.row_index, e.original.shape[1]) for e in parts])
    cols = np.concatenate([np.tile(np.arange(e.original.shape[1]), e.original.shape[0])
                           for e in parts])
    tensor = np.concatenate([np.full(e.original.size, i) for i, e in enumerate(parts)])
    dtypes = [e.dtype for e in parts]
    # Each element's weight in the test, for every recipient alike: what it would move by
    # if marked, over the square of its block's scale. Conversion noise grows with a
    # block's scale as the mark does, so this is the matched filter, and a few blocks
    # with outliers cannot drown the rest.
    weight = np.concatenate([_weights(e.original, e.dtype).ravel() for e in parts])
    return d, rows, cols, tensor, dtypes, (parts, weight)


def _weights(original: np.ndarray, dtype: str) -> np.ndarray:
    moved = (mark_values(original, np.ones(original.shape, np.int8), dtype)
             - original).astype(np.float64)
    scale = q8_0_error(original).astype(np.float64)
    return np.where(scale > 0, moved / np.where(scale > 0, scale, 1) ** 2, 0.0)


def _screen_positions(size: int) -> np.ndarray | None:
    if size <= SCREEN_ELEMENTS:
        return None
    return np.linspace(0, size - 1, SCREEN_ELEMENTS).astype(np.int64)


def _score(d, rows, cols, tensor, dtypes, originals, evidence, candidates, positions):  # type: ignore[no-untyped-def]
    """z of each candidate on the elements at `positions` (all when None)."""
    parts, weight = originals
    if positions is not None:
        d, rows, cols, tensor, weight = (a[positions] for a in (d, rows, cols, tensor, weight))
    z = np.zeros(len(candidates))
    if not len(candidates):
        return z
    numer = np.zeros(len(candidates))
    denom = np.zeros(len(candidates))
    for t, part in enumerate(parts):
        sel = np.flatnonzero(tensor == t)
        if not sel.size:
            continue
        seeds = np.array([_tensor_seed(c.key, part.canonical) for c in candidates],
                         dtype=np.uint64)
        # Densities differ per recipient only if their copies came from different plans.
        for density in sorted({c.densities.get(part.canonical, 0.0) for c in candidates}):
            if density <= 0:
                continue
            who = np.array([c.densities.get(part.canonical, 0.0) == density
                            for c in candidates])
            signs = _signs(seeds[who], rows[sel], cols[sel], density).astype(np.float64)
            expected = signs * weight[sel][None, :]
            terms = expected * d[sel][None, :]
            numer[who] += terms.sum(axis=1)
            denom[who] += (terms ** 2).sum(axis=1)
    ok = denom > 0
    z[ok] = numer[ok] / np.sqrt(denom[ok])
    return z

