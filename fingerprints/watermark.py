"""Per-recipient watermarks: a keyed spread-spectrum mark in the weight matrices of each
recipient's copy, and the test that names whose copy a leaked file was.

Marking. Each recipient has a key derived from the organisation's master secret
(`recipient_key`: HMAC-SHA256 of model and recipient), so the registry keeps per-recipient
keys and never the master. The key drives a pseudo-random pattern over every element of
every marked 2-D tensor: a sign, and whether the element is marked at all (a keyed choice
with probability `density`). A marked element moves by its *magnitude*: the RMS error Q8_0
quantisation makes in its block of 32 (times 0.9, measured on the block), and never less
than one unit of the stored dtype, so the mark survives being written as F16 or BF16. Where one
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

The pattern is splitmix64 over (per-tensor seed, row, column // 8), seeded from the
recipient's key, one byte per element: random access to any element, vectorised over
thousands of recipients at once.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fingerprints.dequant import dequantize, quantize_q8_0
from fingerprints.names import canonical_name
from fingerprints.tensors import TensorInfo, WeightFileError, WeightReader
from fingerprints.weightprint import MatchResult, WeightPrint, canonical_order

__all__ = ["Attribution", "MARK_DTYPES", "WatermarkError", "attribute", "detect_marks",
           "gather_evidence", "key_id", "log10_bound", "mark_rows", "mark_values",
           "plan_density", "recipient_key", "show_bound"]

MARK_VERSION = 1
BLOCK = 32
MARK_DTYPES = ("F32", "F16", "BF16")
FINALISTS = 16            # recipients scored on all the evidence after the screen
_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ROW_MIX = np.uint64(0xD1B54A32D192ED03)


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
        mixed: np.ndarray = x ^ (x >> np.uint64(31))
        return mixed


def _tensor_seed(key: bytes, canonical: str) -> np.uint64:
    digest = hmac.new(key, canonical.encode(), hashlib.sha256).digest()
    return np.uint64(int.from_bytes(digest[:8], "little"))


def density_steps(density: float) -> int:
    """A density as the pattern applies it: a whole number of 128ths, rounded down (so
    the mark is never denser, and never stronger, than planned)."""
    return int(min(128, max(0, math.floor(density * 128 + 1e-9))))


def _lanes(seeds: np.ndarray, rows: np.ndarray, columns: int) -> np.ndarray:
    """A pattern byte per element of whole rows `rows` (canonical row numbers) for each
    seed (one per recipient): shape (len(seeds), len(rows), columns). One hash gives 8
    elements a byte each: bit 0 the sign, bits 1-7 whether it is marked."""
    blocks = -(-columns // 8)
    with np.errstate(over="ignore"):
        grid = (np.asarray(rows, dtype=np.uint64)[:, None] * _ROW_MIX
                + np.arange(blocks, dtype=np.uint64)[None, :])
        h = _splitmix(np.asarray(seeds, dtype=np.uint64)[:, None, None] ^ grid[None])
    lanes = h.astype("<u8").view(np.uint8).reshape(len(seeds), len(rows), blocks * 8)
    return lanes[:, :, :columns]


def _sign_table(density: float, dtype: type = np.int8) -> np.ndarray:
    """Pattern byte -> -1, 0 or +1."""
    byte = np.arange(256)
    sign = np.where(byte & 1, 1, -1)
    return np.where((byte >> 1) < density_steps(density), sign, 0).astype(dtype)


def _signs(seeds: np.ndarray, rows: np.ndarray, columns: int, density: float) -> np.ndarray:
    """The pattern (-1, 0, +1) of whole rows for each seed: (len(seeds), len(rows), columns)."""
    signs: np.ndarray = _sign_table(density)[_lanes(seeds, rows, columns)]
    return signs


# -- magnitudes and dtypes ------------------------------------------------------------------


def q8_0_error(rows: np.ndarray) -> np.ndarray:
    """Per element, 0.9 times the RMS error Q8_0 quantisation makes in its block of 32
    along the row: the strength of the mark there. Measured on the block itself, so a
    block whose one large weight leaves the others at 0 gets the (small) error Q8_0
    really makes, not one guessed from its maximum."""
    rows = np.asarray(rows, dtype=np.float32)
    n, cols = rows.shape
    width = -(-cols // BLOCK) * BLOCK
    padded = np.zeros((n, width), dtype=np.float32)
    padded[:, :cols] = rows
    error = (q8_0_roundtrip(padded) - padded).astype(np.float64) ** 2
    counts = np.full(width // BLOCK, BLOCK, dtype=np.float64)
    counts[-1] = cols - (width - BLOCK)  # the padding of a short last block errs by 0
    per_block = 0.9 * np.sqrt(error.reshape(n, -1, BLOCK).sum(axis=2) / counts)
    return np.repeat(per_block, BLOCK, axis=1)[:, :cols].astype(np.float32)


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
        marked: np.ndarray = (rows + signs * step).astype(np.float32)
        return marked
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
    return min(1.0, float(np.mean(alpha.astype(np.float64) ** 2)) / energy)


def mark_rows(rows: np.ndarray, dtype: str, key: bytes, canonical: str,
              row_index: np.ndarray, density: float) -> np.ndarray:
    """Rows `row_index` of tensor `canonical` as the recipient with `key` receives them."""
    seed = np.array([_tensor_seed(key, canonical)], dtype=np.uint64)
    signs = _signs(seed, np.asarray(row_index), rows.shape[1], density)[0]
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
    # z of the best-scoring recipients (all of them scored in full), best first
    scores: dict[str, float] = field(default_factory=dict)
    # Whose z `z` is: the best-scoring recipient, attributed or not (None: nobody scored).
    best: str | None = None

    @property
    def bound_log10(self) -> float:
        return log10_bound(self.z, self.recipients)

    @property
    def runner_up_bound_log10(self) -> float | None:
        return None if self.runner_up_z is None else log10_bound(self.runner_up_z,
                                                                 self.recipients)

    def as_dict(self) -> dict[str, object]:
        runner_log10 = self.runner_up_bound_log10
        return {"outcome": self.outcome, "recipient": self.recipient, "z": round(self.z, 3),
                "bound": self.bound, "runner_up": self.runner_up,
                "runner_up_z": None if self.runner_up_z is None else round(self.runner_up_z, 3),
                "runner_up_bound": self.runner_up_bound, "recipients": self.recipients,
                "elements": self.elements, "tensors": self.tensors,
                "scores": {r: round(z, 3) for r, z in self.scores.items()},
                "best_candidate": self.best, "bound_log10": round(self.bound_log10, 3),
                "runner_up_bound_log10": (None if runner_log10 is None
                                          else round(runner_log10, 3))}


def bound(z: float, recipients: int) -> float:
    """N * exp(-z^2 / 2), at most 1: the chance a wrong recipient scores z or more. It
    underflows to 0 beyond z of about 38.6; `log10_bound` holds it exactly."""
    if z <= 0:
        return 1.0
    return float(min(1.0, recipients * math.exp(-z * z / 2)))


def log10_bound(z: float, recipients: int) -> float:
    """log10 of `bound`, computed without forming the bound, so it never underflows."""
    if z <= 0 or recipients <= 0:
        return 0.0
    return min(0.0, math.log10(recipients) - z * z / (2 * math.log(10)))


def show_bound(value: float | None, log10: float | None) -> str | None:
    """A bound for people: three significant digits, or, for one too small for a float
    (it would show as 0 or lose its digits), its power of ten from the log10."""
    if value is None or log10 is None:
        return None
    if value >= sys.float_info.min:
        return f"{value:.3g}"
    return f"10^{log10:.1f}"


def detect_marks(evidence: Sequence[Evidence], candidates: Sequence[Candidate], *,
                 max_bound: float = 1e-6) -> Attribution:
    """Score every candidate recipient on the deviation of the suspect's rows from the
    originals; the best is attributed if its bound is at most `max_bound`.

    Every candidate is scored on the first SCREEN_ROWS rows of each tensor, the
    FINALISTS best on everything; if none of them is attributed, everyone is scored on
    everything, so a recipient the whole evidence proves is never screened out. The bound
    covers every candidate either way."""
    parts = [_Part.of(e) for e in evidence if e.original.size and e.original.shape == e.suspect.shape]
    n = len(candidates)
    if not n or not parts or not any(part.wd.any() for part in parts):
        # Nothing to score, or the suspect's rows are the originals bit for bit.
        return Attribution("unmarked_original", None, 0.0, 1.0, recipients=n,
                           elements=sum(p.wd.size for p in parts), tensors=len(parts))
    seeds = np.array([[_tensor_seed(c.key, part.canonical) for part in parts]
                      for c in candidates], dtype=np.uint64)
    everyone = np.arange(n)
    screen = _score([part.head(SCREEN_ROWS) for part in parts], candidates, seeds, everyone)
    chosen = np.argsort(-screen)[:FINALISTS]
    full = _score(parts, candidates, seeds, chosen)
    if bound(float(full.max()), n) > max_bound and n > len(chosen):
        chosen, full = everyone, _score(parts, candidates, seeds, everyone)
    order = np.argsort(-full)
    z = float(full[order[0]])
    attributed = bound(z, n) <= max_bound
    result = Attribution(
        outcome="marked" if attributed else "unmarked_original",
        recipient=candidates[int(chosen[order[0]])].recipient if attributed else None,
        z=z, bound=bound(z, n), recipients=n, elements=sum(p.wd.size for p in parts),
        tensors=len(parts),
        scores={candidates[int(chosen[i])].recipient: float(full[i]) for i in order[:FINALISTS]},
        best=candidates[int(chosen[order[0]])].recipient)
    if len(order) > 1:
        second = int(chosen[order[1]])
        result.runner_up = candidates[second].recipient
        result.runner_up_z = float(full[order[1]])
        result.runner_up_bound = bound(result.runner_up_z, n)
    return result


SCREEN_ROWS = 4           # rows of each tensor every recipient is scored on first
_CHUNK_ELEMENTS = 1 << 22  # pattern elements generated at once (bounds memory)


@dataclass
class _Part:
    """One tensor's evidence, ready to score: the deviation times each element's weight
    (what it would move by if marked, over the square of its block's scale: conversion
    noise grows with the scale as the mark does, so this is the matched filter, and a few
    outlier blocks cannot drown the rest)."""

    index: int
    canonical: str
    rows: np.ndarray          # canonical row numbers
    wd: np.ndarray            # (rows, columns) float32
    density: float

    @classmethod
    def of(cls, e: Evidence) -> _Part:
        moved = (mark_values(e.original, np.ones(e.original.shape, np.int8), e.dtype)
                 - e.original).astype(np.float64)
        scale = q8_0_error(e.original).astype(np.float64)
        weight = np.where(scale > 0, moved / np.where(scale > 0, scale, 1) ** 2, 0.0)
        deviation = e.suspect.astype(np.float64) - e.original
        return cls(-1, e.canonical, np.asarray(e.row_index), (weight * deviation).astype(np.float32),
                   0.0)

    def head(self, rows: int) -> _Part:
        return _Part(self.index, self.canonical, self.rows[:rows], self.wd[:rows], self.density)


def _score(parts: Sequence[_Part], candidates: Sequence[Candidate], seeds: np.ndarray,
           which: np.ndarray) -> np.ndarray:
    """z of the candidates `which` (indices) on `parts`."""
    numer = np.zeros(len(which))
    denom = np.zeros(len(which))
    for t, part in enumerate(parts):
        wd = part.wd
        wd2 = wd * wd
        densities = np.array([candidates[i].densities.get(part.canonical, 0.0) for i in which])
        chunk = max(1, _CHUNK_ELEMENTS // max(1, wd.size))
        for density in np.unique(densities):
            if density_steps(float(density)) == 0:
                continue
            group = np.flatnonzero(densities == density)
            signs, marked = (_sign_table(float(density), np.float32),
                             np.abs(_sign_table(float(density), np.float32)))
            for start in range(0, group.size, chunk):
                sel = group[start:start + chunk]
                lanes = _lanes(seeds[which[sel], t], part.rows, wd.shape[1]).reshape(len(sel), -1)
                numer[sel] += signs[lanes] @ wd.ravel()
                denom[sel] += marked[lanes] @ wd2.ravel()
    z = np.zeros(len(which))
    ok = denom > 0
    z[ok] = numer[ok] / np.sqrt(denom[ok])
    return z


# -- evidence from a suspect ------------------------------------------------------------------

# The suspect's rows must look like the originals before their difference is evidence.
MIN_ROW_COSINE = 0.9
# Elements compared before the test stops reading: on all-MiniLM-L6-v2 a Q4_0 conversion
# of a marked copy scores z of about 10 on this many (bound ~1e-19 among 1,000 recipients),
# and every tensor read is one more range request of a remote file.
EVIDENCE_ELEMENTS = 131_072


def _nothing_spent() -> int:
    return 0


def gather_evidence(reader: WeightReader, print_: WeightPrint, match: MatchResult, *,
                    spent: Callable[[], int] = _nothing_spent, max_bytes: int | None = None,
                    max_elements: int = EVIDENCE_ELEMENTS) -> list[Evidence]:
    """The suspect's rows at the fingerprint's kept originals, tensor by tensor: the
    suspect tensor the match paired with ours, else one with our canonical name and shape;
    rows that do not look like the originals are left out. Stops at `max_bytes`, or once
    `max_elements` are in hand."""
    paired: dict[str, list[str]] = {}
    for pair in match.pairs:
        if pair.ours:
            paired.setdefault(pair.ours, []).append(pair.suspect)
    by_name = {t.name: t for t in reader.tensors}
    by_canonical: dict[str, list[TensorInfo]] = {}
    for t in reader.tensors:
        by_canonical.setdefault(canonical_name(t.name), []).append(t)
    evidence: list[Evidence] = []
    for ours in print_.tensors:
        if sum(e.original.size for e in evidence) >= max_elements:
            break
        options = [by_name[n] for n in paired.get(ours.canonical, []) if n in by_name]
        options += by_canonical.get(ours.canonical, [])
        for suspect in options:
            if suspect.shape != ours.shape:
                continue
            order = canonical_order(reader, suspect)
            rows = ours.sample_index if order is None else order[ours.sample_index]
            if max_bytes is not None and spent() + len(rows) * suspect.row_nbytes > max_bytes:
                return evidence
            try:
                found = reader.read_rows(suspect, rows)
            except WeightFileError:
                continue
            if _similar(found, ours.samples):
                evidence.append(Evidence(ours.canonical, ours.dtype, ours.sample_index,
                                         ours.samples, found))
                break
    return evidence


def _similar(found: np.ndarray, original: np.ndarray) -> bool:
    a = found - found.mean(axis=1, keepdims=True)
    b = original - original.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), 0)
    return bool(np.median(cos) >= MIN_ROW_COSINE)


def attribute(reader: WeightReader, print_: WeightPrint, match: MatchResult,
              marks: Sequence[Candidate], *, spent: Callable[[], int] = _nothing_spent,
              max_bytes: int | None = None, max_bound: float = 1e-6) -> Attribution:
    """Whose copy is this? The watermark test on a suspect the fingerprint matched."""
    evidence = gather_evidence(reader, print_, match, spent=spent, max_bytes=max_bytes)
    return detect_marks(evidence, marks, max_bound=max_bound)
