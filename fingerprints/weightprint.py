"""Tensor fingerprints: recognise released weights after conversion, quantisation, renaming,
resharding, row permutation and light fine-tuning, from a few rows of the suspect file.

A leaked copy is rarely byte-identical, but its weight matrices keep their rows: a GGUF
Q4_0 row is the original row plus rounding noise, a fine-tune adds a small update, a
conversion renames and reorders tensors, llama.cpp permutes the query and key rows. So the
fingerprint is built from rows, and matching relies on neither names nor order:

- At register time every row of each fingerprinted 2-D tensor is centred (its mean taken
  out, so an offset does not count as likeness), projected on SKETCH_DIMS keyed random
  directions and normalised: the row *sketch*, 64 bytes per row. A keyed run of whole rows
  is kept too (the originals watermark detection compares with), with permutation-invariant
  statistics (moments, row-norm quantiles) that describe the tensor whatever order its rows
  are in.
- A scan reads a short run of consecutive rows from each of a few suspect tensors (one
  range request each), sketches them the same way and finds each row's nearest counterpart
  among *all* sketched rows of the same width, whatever tensor or position it is in. So
  tensors pair up by width and content, never by name, and any row order is fine.
- The null is known: a row unrelated to ours projects to a uniformly random direction, whose
  cosine with a fixed unit vector in d dimensions has P(c >= t) = I_{1-t^2}((d-1)/2, 1/2)/2
  (a regularised incomplete beta). The effective d is *measured* at register time on decoys
  (the model's own sampled rows with keyed column permutations, so they keep the weights'
  value distribution but none of their alignment) and never taken larger than SKETCH_DIMS.
  A sampled row "hits" when its p-value, times the number of candidate rows, is below
  ROW_ALPHA; the false-match probability of k hits among M rows is the binomial tail
  P(Bin(M, ROW_ALPHA) >= k), times the number of models tried.

Exact copies give cosines of 1, Q4_0 about 0.99, noise of 5% of a tensor's spread about
0.999; an unrelated row about 0.2 at most. The score is the fraction of sampled rows that
hit; matched copies sit near 1, unrelated models at 0.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from fingerprints.names import canonical_name, is_query_or_key, qk_permutation
from fingerprints.tensors import TensorInfo, WeightFileError, WeightReader

__all__ = ["DEFAULT_MAX_FALSE_MATCH", "MatchResult", "PrintError", "TensorPrint",
           "WeightPrint", "fingerprint_weights", "match_weights", "new_key"]

PRINT_VERSION = 1
SKETCH_DIMS = 32
SAMPLE_ROWS = 16            # whole rows kept per tensor
MAX_TENSORS = 64            # tensors fingerprinted per file
MAX_SKETCH_ROWS = 1 << 17   # wider vocabularies are left out: 64 bytes a row adds up
MIN_ROWS = 8
MIN_COLUMNS = 16
RUN_ROWS = 8                # consecutive rows read per suspect tensor: one range request
ROW_ALPHA = 1e-4            # per-row p-value below which a row counts as a hit
DEFAULT_MAX_FALSE_MATCH = 1e-6
DECOYS_PER_TENSOR = 4
# GGUF architectures whose query and key rows llama.cpp permutes (LlamaModel.permute).
_PERMUTED_ARCHS = {"llama", "mistral", "granite", "granitemoe", "deci"}
_READ_BLOCK_BYTES = 32 << 20
_EPS = 1e-12


class PrintError(ValueError):
    """A stored or imported fingerprint that does not hold together; one line."""


def new_key() -> bytes:
    """A fresh fingerprint key: it chooses the projections and the sampled rows, so someone
    without the registry cannot tell which rows to disturb."""
    import secrets
    return secrets.token_bytes(32)


def _seed(key: bytes, *parts: object) -> int:
    digest = hashlib.sha256(key + repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@lru_cache(maxsize=64)
def projection(key: bytes, columns: int) -> np.ndarray:
    """The keyed (columns, SKETCH_DIMS) Gaussian projection for rows of this width."""
    rng = np.random.default_rng(_seed(key, "projection", columns))
    return rng.standard_normal((columns, SKETCH_DIMS), dtype=np.float32)


def sketch(rows: np.ndarray, key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length projections of the centred rows, and which rows were not constant (a
    constant row has no direction and is left as zeros)."""
    rows = np.asarray(rows, dtype=np.float32)
    centred = rows - rows.mean(axis=1, keepdims=True)
    projected = centred @ projection(key, rows.shape[1])
    norms = np.linalg.norm(projected, axis=1)
    scale = np.abs(centred).max(axis=1) if rows.size else np.zeros(0, np.float32)
    valid = np.isfinite(norms) & (norms > _EPS) & (scale > _EPS)
    out = np.zeros_like(projected)
    out[valid] = projected[valid] / norms[valid, None]
    return out, valid


# -- the fingerprint ----------------------------------------------------------------------


@dataclass
class TensorPrint:
    """One fingerprinted 2-D tensor. Rows of a LLaMA-family GGUF's query and key matrices
    are put back in Hugging Face order (llama.cpp's permutation undone), so their row
    numbers mean the same as the hub checkpoint's. Meta's .pth files store the same
    interleaved order as GGUF but carry no head count, so theirs are kept as stored."""

    name: str
    canonical: str
    shape: tuple[int, int]
    dtype: str
    sketch: np.ndarray              # (rows, SKETCH_DIMS) float16, unit rows
    sample_index: np.ndarray        # (k,) int64 row numbers
    samples: np.ndarray             # (k, columns) float32: those rows
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> int:
        return self.shape[1]


@dataclass
class WeightPrint:
    """The fingerprint of one weight file: its key, its tensors and the measured null."""

    key: bytes
    tensors: list[TensorPrint]
    null_dims: float = float(SKETCH_DIMS)
    version: int = PRINT_VERSION

    def as_json(self) -> dict[str, Any]:
        """A JSON-safe dict (arrays base64, little-endian), for bundles."""
        return {"version": self.version, "key": self.key.hex(), "null_dims": self.null_dims,
                "tensors": [{
                    "name": t.name, "canonical": t.canonical, "shape": list(t.shape),
                    "dtype": t.dtype, "stats": t.stats,
                    "sketch": _b64(t.sketch.astype("<f2")),
                    "sample_index": [int(i) for i in t.sample_index],
                    "samples": _b64(t.samples.astype("<f4"))} for t in self.tensors]}

    @classmethod
    def from_json(cls, doc: Any, where: str = "fingerprint") -> "WeightPrint":
        """Parse and check `as_json` output; PrintError naming the place otherwise."""
        def fail(message: str) -> PrintError:
            return PrintError(f"{where}: {message}")

        if not isinstance(doc, dict) or doc.get("version") != PRINT_VERSION:
            raise fail(f"not a version-{PRINT_VERSION} tensor fingerprint")
        try:
            key = bytes.fromhex(doc["key"])
            null_dims = float(doc["null_dims"])
            tensors = []
            for i, t in enumerate(doc["tensors"]):
                rows, cols = (int(v) for v in t["shape"])
                index = np.asarray(t["sample_index"], dtype=np.int64)
                tensors.append(TensorPrint(
                    name=str(t["name"]), canonical=str(t["canonical"]), shape=(rows, cols),
                    dtype=str(t["dtype"]), stats=dict(t["stats"]),
                    sketch=_unb64(t["sketch"], "<f2", (rows, SKETCH_DIMS), fail, f"tensors[{i}]"),
                    sample_index=index,
                    samples=_unb64(t["samples"], "<f4", (index.size, cols), fail, f"tensors[{i}]")))
        except PrintError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise fail(f"malformed ({type(exc).__name__}: {exc})") from None
        return cls(key=key, tensors=tensors, null_dims=null_dims).checked(where)

    def checked(self, where: str = "fingerprint") -> "WeightPrint":
        """Self after checking that sizes and numbers hold together (PrintError if not)."""
        if len(self.key) < 16:
            raise PrintError(f"{where}: key shorter than 16 bytes")
        if not 1.0 <= self.null_dims <= SKETCH_DIMS:
            raise PrintError(f"{where}: null_dims {self.null_dims} outside 1..{SKETCH_DIMS}")
        for t in self.tensors:
            rows, cols = t.shape
            if not (MIN_ROWS <= rows <= MAX_SKETCH_ROWS and MIN_COLUMNS <= cols <= 1 << 20):
                raise PrintError(f"{where}: {t.name}: shape {list(t.shape)} out of range")
            if t.sketch.shape != (rows, SKETCH_DIMS) or t.samples.shape[1:] != (cols,):
                raise PrintError(f"{where}: {t.name}: arrays do not fit shape {list(t.shape)}")
            if t.sample_index.size and (t.sample_index.min() < 0 or t.sample_index.max() >= rows):
                raise PrintError(f"{where}: {t.name}: sample row outside 0..{rows - 1}")
            if not (np.isfinite(t.sketch).all() and np.isfinite(t.samples).all()):
                raise PrintError(f"{where}: {t.name}: non-finite values")
        return self

    @property
    def nbytes(self) -> int:
        return sum(t.sketch.nbytes + t.samples.nbytes for t in self.tensors)

    @cached_property
    def groups(self) -> dict[int, "_Group"]:
        """Sketches stacked by row width, built once per print (every scan needs them)."""
        return _groups(self)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _unb64(text: Any, dtype: str, shape: tuple[int, int], fail: Callable[[str], PrintError],
           where: str) -> np.ndarray:
    if not isinstance(text, str):
        raise fail(f"{where}: array is not base64 text")
    raw = base64.b64decode(text, validate=True)
    want = math.prod(shape) * np.dtype(dtype).itemsize
    if len(raw) != want:
        raise fail(f"{where}: array of {len(raw)} bytes, shape {list(shape)} needs {want}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(
        np.float16 if dtype == "<f2" else np.float32)


# -- register time --------------------------------------------------------------------------


def fingerprint_weights(reader: WeightReader, key: bytes, *, max_tensors: int = MAX_TENSORS,
                        progress: Callable[[int], None] | None = None) -> WeightPrint:
    """Fingerprint a weight file: sketches of every row of up to `max_tensors` 2-D tensors
    (a keyed choice when there are more), keyed sample rows, statistics, and the null
    measured on decoys. Reads each chosen tensor once, a block of rows at a time.

    `progress(n)` gets the number of tensor bytes read so far. WeightFileError (one line)
    if a chosen tensor cannot be read.
    """
    arch, heads = _permutation_info(reader)
    eligible = [t for t in reader.tensors if _printable(t)]
    if len(eligible) > max_tensors:
        # Chosen by canonical name, so the same model registered from a GGUF or from
        # safetensors keeps the same tensors.
        eligible.sort(key=lambda t: _seed(key, "choose", canonical_name(t.name)))
        eligible = sorted(eligible[:max_tensors], key=reader.tensors.index)
    prints, done = [], 0
    for tensor in eligible:
        canonical = canonical_name(tensor.name)
        order = _canonical_order(tensor, canonical, arch, heads)
        prints.append(_print_tensor(reader, tensor, canonical, key, order))
        done += tensor.nbytes
        if progress is not None:
            progress(done)
    result = WeightPrint(key=key, tensors=prints)
    result.null_dims = measure_null_dims(result)
    return result


def _printable(tensor: TensorInfo) -> bool:
    return (tensor.is_matrix and MIN_ROWS <= tensor.rows <= MAX_SKETCH_ROWS
            and tensor.columns >= MIN_COLUMNS)


def _permutation_info(reader: WeightReader) -> tuple[str | None, tuple[int | None, int | None]]:
    arch = getattr(reader, "architecture", None)
    heads = getattr(reader, "head_counts", (None, None))
    return (arch if arch in _PERMUTED_ARCHS else None), heads


def canonical_order(reader: WeightReader, tensor: TensorInfo) -> np.ndarray | None:
    """The file's row for each canonical row of `tensor` (`rows[order]` is canonical), or
    None when the file stores rows in canonical order already."""
    arch, heads = _permutation_info(reader)
    return _canonical_order(tensor, canonical_name(tensor.name), arch, heads)


def _canonical_order(tensor: TensorInfo, canonical: str, arch: str | None,
                     heads: tuple[int | None, int | None]) -> np.ndarray | None:
    """For a GGUF query/key matrix of a LLaMA-family model: file rows in Hugging Face order
    (so `rows[order]` is canonical). None when rows are already canonical."""
    if arch is None or not is_query_or_key(canonical):
        return None
    n = heads[0] if ".attn_q." in canonical else heads[1]
    if not n:
        return None
    try:
        return np.argsort(qk_permutation(tensor.rows, n))
    except ValueError:
        return None


def _print_tensor(reader: WeightReader, tensor: TensorInfo, canonical: str, key: bytes,
                  order: np.ndarray | None) -> TensorPrint:
    rows, cols = tensor.shape
    block = max(1, _READ_BLOCK_BYTES // (cols * 4))
    sketches = np.zeros((rows, SKETCH_DIMS), dtype=np.float32)
    norms = np.zeros(rows, dtype=np.float64)
    # Raw moments in float64 are enough for statistics reported to a few digits.
    moments = np.zeros(4, dtype=np.float64)
    absmax = 0.0
    # A keyed run of consecutive rows: a remote reader fetches it in one range request.
    rng = np.random.default_rng(_seed(key, "sample", canonical, tensor.shape))
    count = min(SAMPLE_ROWS, rows)
    sample_index = int(rng.integers(0, rows - count + 1)) + np.arange(count)
    samples = np.zeros((sample_index.size, cols), dtype=np.float32)
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        wanted = np.arange(start, stop) if order is None else order[start:stop]
        data = reader.read_rows(tensor, wanted)
        if not np.isfinite(data).all():
            raise WeightFileError(f"{tensor.name}: non-finite values in rows {start}..{stop - 1}")
        sketches[start:stop] = sketch(data, key)[0]
        norms[start:stop] = np.linalg.norm(data, axis=1)
        flat = data.astype(np.float64).ravel()
        squares = flat * flat
        moments += [flat.sum(), squares.sum(), np.dot(squares, flat), np.dot(squares, squares)]
        absmax = max(absmax, float(np.abs(flat).max(initial=0.0)))
        inside = (sample_index >= start) & (sample_index < stop)
        samples[inside] = data[sample_index[inside] - start]
    return TensorPrint(name=tensor.name, canonical=canonical, shape=(rows, cols),
                       dtype=tensor.dtype, sketch=sketches.astype(np.float16),
                       sample_index=sample_index, samples=samples,
                       stats=_stats(moments, rows * cols, absmax, norms))


def _stats(moments: np.ndarray, n: int, absmax: float, norms: np.ndarray) -> dict[str, Any]:
    """Moments and row-norm quantiles: the same whatever order rows or values are in."""
    m1, m2, m3, m4 = moments / max(n, 1)
    var = max(m2 - m1 * m1, 0.0)
    central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1 ** 4
    return {"mean": round(float(m1), 8), "std": round(math.sqrt(var), 8),
            "absmax": round(absmax, 6),
            "kurtosis": round(float(central4 / var ** 2), 4) if var > 0 else 0.0,
            "row_norm_quantiles": [round(float(q), 6) for q in
                                   np.quantile(norms, [0.01, 0.25, 0.5, 0.75, 0.99])]}


def measure_null_dims(print_: WeightPrint) -> float:
    """The effective dimension of the null, measured: decoy rows (sampled rows with keyed
    column permutations: the weights' own values, none of their alignment) against every
    sketch of the same width. For a random direction E[c^2] = 1/d; structure shared by
    unrelated rows would show as a larger mean square and a smaller d, which makes every
    p-value more cautious. Never more than SKETCH_DIMS."""
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
    if not count or squares <= 0:
        return float(SKETCH_DIMS)
    return float(min(SKETCH_DIMS, max(1.0, count / squares)))


# -- matching -------------------------------------------------------------------------------


@dataclass
class _Group:
    """Every sketched row of one width in one fingerprint, stacked: candidates for a row."""

    sketch: np.ndarray                 # (n, SKETCH_DIMS) float32
    owner: np.ndarray                  # (n,) index into the tensor list
    tensors: list[TensorPrint]


def _groups(print_: WeightPrint) -> dict[int, _Group]:
    by_width: dict[int, list[TensorPrint]] = {}
    for tensor in print_.tensors:
        by_width.setdefault(tensor.columns, []).append(tensor)
    out = {}
    for width, tensors in by_width.items():
        out[width] = _Group(
            sketch=np.concatenate([t.sketch for t in tensors]).astype(np.float32),
            owner=np.concatenate([np.full(t.shape[0], i) for i, t in enumerate(tensors)]),
            tensors=tensors)
    return out


@dataclass
class TensorPair:
    """A suspect tensor and the fingerprinted tensor most of its sampled rows matched."""

    suspect: str
    shape: tuple[int, ...]
    dtype: str
    rows_compared: int
    rows_matched: int
    model: str | None = None
    ours: str | None = None            # canonical name of our tensor
    similarity: float | None = None    # median cosine of its matched rows


@dataclass
class MatchResult:
    """A scan's verdict: `match` or `no_match` (`unknown_format` is the caller's, when the
    file cannot be opened as weights at all)."""

    verdict: str
    model: str | None
    score: float
    false_match_probability: float
    log10_false_match: float
    rows_compared: int
    rows_matched: int
    tensors_compared: int
    tensors_matched: int
    similarity: float | None
    pairs: list[TensorPair] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    budget_exhausted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "model": self.model, "score": round(self.score, 4),
                "false_match_probability": self.false_match_probability,
                "log10_false_match": round(self.log10_false_match, 2),
                "rows_compared": self.rows_compared, "rows_matched": self.rows_matched,
                "tensors_compared": self.tensors_compared,
                "tensors_matched": self.tensors_matched,
                "similarity": None if self.similarity is None else round(self.similarity, 4),
                "budget_exhausted": self.budget_exhausted,
                "pairs": [{"suspect": p.suspect, "shape": list(p.shape), "dtype": p.dtype,
                           "rows_compared": p.rows_compared, "rows_matched": p.rows_matched,
                           "model": p.model, "ours": p.ours,
                           "similarity": None if p.similarity is None else round(p.similarity, 4)}
                          for p in self.pairs],
                "skipped": self.skipped}


@dataclass
class _Row:
    log_p: float
    model: str | None
    cosine: float
    ours: str | None


def match_weights(reader: WeightReader, prints: Sequence[tuple[str, WeightPrint]], *,
                  spent: Callable[[], int] = lambda: 0, max_bytes: int | None = None,
                  max_tensors: int = 48, rows_per_tensor: int = RUN_ROWS,
                  max_false_match: float = DEFAULT_MAX_FALSE_MATCH) -> MatchResult:
    """Compare a suspect file with registered fingerprints (`(model, print)` pairs).

    Reads `rows_per_tensor` consecutive rows from each of up to `max_tensors` suspect
    tensors whose width some fingerprint has, in a keyed order that prefers fingerprinted
    names, then fingerprinted shapes;
    `spent()` says how many bytes the source has read so far (header included) and no
    tensor is read that would take it past `max_bytes`. Stops early once the evidence is
    overwhelming (false-match probability below `max_false_match` squared, three tensors
    matched). The verdict is `match` when the best model's false-match probability is at
    most `max_false_match`.
    """
    groups = [(model, p, p.groups) for model, p in prints]
    widths = {w for _, _, g in groups for w in g}
    shapes = {t.shape for _, p in prints for t in p.tensors}
    order_key = prints[0][1].key if prints else b"none"
    names = {t.canonical for _, p in prints for t in p.tensors}
    plan = [t for t in reader.tensors if t.is_matrix and t.columns in widths and t.rows >= 1]
    # Tensors whose canonical name was fingerprinted first (names usually survive a
    # conversion, and a deep model has more matrices than a fingerprint keeps), then those
    # of a fingerprinted shape, in a keyed order.
    plan.sort(key=lambda t: (canonical_name(t.name) not in names, t.shape not in shapes,
                             _seed(order_key, "scan", t.name, t.shape)))
    rows_seen: list[_Row] = []
    pairs: list[TensorPair] = []
    skipped: list[str] = []
    exhausted = False
    n_models = max(1, len({model for model, _ in prints}))
    for tensor in plan:
        if len(pairs) >= max_tensors:
            break
        run = min(rows_per_tensor, tensor.rows)
        if max_bytes is not None and spent() + run * tensor.row_nbytes > max_bytes:
            exhausted = True
            continue
        rng = np.random.default_rng(_seed(order_key, "offset", tensor.name, tensor.shape))
        first = int(rng.integers(0, tensor.rows - run + 1))
        try:
            data = reader.read_rows(tensor, range(first, first + run))
        except WeightFileError as exc:
            skipped.append(str(exc))
            continue
        found = _compare_rows(data, groups)
        rows_seen += found
        pairs.append(_pair(tensor, found))
        verdict = _verdict(rows_seen, pairs, n_models, max_false_match)
        if (verdict.log10_false_match <= 2 * math.log10(max_false_match)
                and verdict.tensors_matched >= 3):
            break
    result = _verdict(rows_seen, pairs, n_models, max_false_match)
    result.skipped, result.budget_exhausted = skipped, exhausted
    return result


def _compare_rows(data: np.ndarray, groups: list[tuple[str, WeightPrint, dict[int, _Group]]]
                  ) -> list[_Row]:
    """Each suspect row's best counterpart over every fingerprint, with its p-value."""
    best: list[_Row] = [_Row(0.0, None, 0.0, None) for _ in range(len(data))]
    tries = sum(1 for _, _, g in groups if data.shape[1] in g)
    for model, print_, by_width in groups:
        group = by_width.get(data.shape[1])
        if group is None:
            continue
        projected, valid = sketch(data, print_.key)
        cos = projected @ group.sketch.T
        top = cos.argmax(axis=1)
        for i in np.flatnonzero(valid):
            c = float(cos[i, top[i]])
            # Union bound over every candidate row and every fingerprint of this width.
            log_p = min(0.0, math.log(group.sketch.shape[0] * tries)
                        + log_cosine_tail(c, print_.null_dims))
            if log_p < best[i].log_p or best[i].model is None:
                owner = group.tensors[int(group.owner[top[i]])]
                best[i] = _Row(log_p, model, c, owner.canonical)
    return [row for row in best if row.model is not None]


def _pair(tensor: TensorInfo, rows: list[_Row]) -> TensorPair:
    hits = [r for r in rows if r.log_p <= math.log(ROW_ALPHA)]
    pair = TensorPair(suspect=tensor.name, shape=tensor.shape, dtype=tensor.dtype,
                      rows_compared=len(rows), rows_matched=len(hits))
    if hits:
        (model, ours), _ = Counter((r.model, r.ours) for r in hits).most_common(1)[0]
        pair.model, pair.ours = model, ours
        pair.similarity = float(np.median([r.cosine for r in hits]))
    return pair


def _verdict(rows: list[_Row], pairs: list[TensorPair], n_models: int,
             max_false_match: float) -> MatchResult:
    hits = [r for r in rows if r.log_p <= math.log(ROW_ALPHA)]
    per_model = Counter(r.model for r in hits)
    model, k = per_model.most_common(1)[0] if per_model else (None, 0)
    m = len(rows)
    log10_fmp = min(0.0, (log_binomial_tail(m, k, ROW_ALPHA) + math.log(n_models))
                    / math.log(10))
    matched = [r.cosine for r in hits if r.model == model]
    verdict = "match" if model is not None and log10_fmp <= math.log10(max_false_match) else "no_match"
    return MatchResult(
        verdict=verdict, model=model if verdict == "match" else None,
        score=k / m if m else 0.0,
        false_match_probability=10 ** max(log10_fmp, -300.0),
        log10_false_match=log10_fmp, rows_compared=m, rows_matched=k,
        tensors_compared=len(pairs),
        tensors_matched=sum(1 for p in pairs if p.model == model and p.rows_matched),
        similarity=float(np.median(matched)) if matched else None, pairs=pairs)


# -- the statistics -------------------------------------------------------------------------


def log_cosine_tail(c: float, dims: float) -> float:
    """ln P(cos >= c) for a uniformly random direction in `dims` dimensions against a
    fixed unit vector: ln(I_{1-c^2}((dims-1)/2, 1/2) / 2) for c >= 0."""
    if c <= 0:
        return math.log(0.5)
    if c >= 1:
        return -math.inf
    return math.log(0.5) + _log_betainc((dims - 1) / 2, 0.5, 1 - c * c)


def _log_betainc(a: float, b: float, x: float) -> float:
    """ln of the regularised incomplete beta I_x(a, b), by Lentz's continued fraction
    (Numerical Recipes' betacf), in logs so tiny tails do not underflow."""
    if x <= 0:
        return -math.inf
    if x >= 1:
        return 0.0
    log_front = (a * math.log(x) + b * math.log1p(-x)
                 + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    if x < (a + 1) / (a + b + 2):
        return log_front + math.log(_betacf(a, b, x)) - math.log(a)
    rest = math.exp(log_front) * _betacf(b, a, 1 - x) / b
    return math.log1p(-rest) if rest < 1 else -math.inf


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + aa * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def log_binomial_tail(n: int, k: int, p: float) -> float:
    """ln P(Bin(n, p) >= k), summed in logs from k up (the terms fall fast past n*p)."""
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = []
    for j in range(k, min(n, k + 2000) + 1):
        term = (math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
                + j * log_p + (n - j) * log_q)
        terms.append(term)
        if term < terms[0] - 50:
            break
    top = max(terms)
    return min(0.0, top + math.log(sum(math.exp(t - top) for t in terms)))


def describe(result: MatchResult) -> str:
    """One line for logs and tables."""
    if result.verdict != "match":
        return (f"no match ({result.rows_matched}/{result.rows_compared} rows, "
                f"{result.tensors_compared} tensors compared)")
    return (f"match {result.model}: {result.rows_matched}/{result.rows_compared} rows in "
            f"{result.tensors_matched}/{result.tensors_compared} tensors, similarity "
            f"{result.similarity:.4f}, false-match probability "
            f"{result.false_match_probability:.1e}")

