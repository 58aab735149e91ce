"""Tensor fingerprints: recognise released weights after conversion, quantisation, renaming,
resharding, row permutation and light fine-tuning, from a few rows of the suspect file.

A leaked copy is rarely byte-identical, but its weight matrices keep their rows: a GGUF
Q4_0 row is the original row plus rounding noise, a fine-tune adds a small update, a
conversion renames and reorders tensors, llama.cpp permutes the query and key rows. So the
fingerprint is built from rows, and matching relies on neither names nor order:

- At register time keyed runs of RUN_ROWS consecutive rows of each fingerprinted tensor
  (a fixed budget per tensor and per file, `_runs_budget`: every row of a small tensor, a
  few runs of a large one) are read, dequantised, centred (the mean taken out, so an
  offset does not count as likeness), projected on SKETCH_DIMS keyed random directions and
  normalised: the row *sketch*, 64 bytes per row. Nothing else of the file is read or
  dequantised, so a 7B model costs what a 1 GB file does. The runs' positions come from
  the key and the row count alone (`run_rows`), so every tensor of one height is sketched
  at the same rows. A keyed run of whole rows is kept too (the originals watermark
  detection compares with), with statistics of the rows read.
- A scan reads, from each of a few suspect tensors, one of the sketched runs of a
  fingerprinted tensor of its shape (rows in canonical order; one range request per run),
  sketches them the same way and finds each row's nearest counterpart among all sketched
  rows of the same width, whatever tensor it is in. So tensors pair up by shape and
  content, never by name. Prints of versions 1 and 2 sketched every row: any run of a
  tensor of their width is read for them, as before.
- The null is known: a row unrelated to ours projects to a uniformly random direction, whose
  cosine with a fixed unit vector in d dimensions has P(c >= t) = I_{1-t^2}((d-1)/2, 1/2)/2
  (a regularised incomplete beta). The effective d is *measured* at register time on decoys
  (the model's own sampled rows with keyed column permutations, so they keep the weights'
  value distribution but none of their alignment) and never taken larger than SKETCH_DIMS,
  nor than what the projection of the compared vectors' width fills (`projected_dims`:
  fewer for narrow vectors, such as columns cut down to a few sketched runs).
  A sampled row "hits" when its p-value, times the number of candidate rows, is below
  ROW_ALPHA; the false-match probability of k hits among M rows is the binomial tail
  P(Bin(M, ROW_ALPHA) >= k), times the number of models tried.

Exact copies give cosines of 1, Q4_0 about 0.99, noise of 5% of a tensor's spread about
0.999; an unrelated row about 0.2 at most.

Verdicts mean what they say (issue 14). Models that share an ancestor keep its token,
position and type embeddings while every layer matrix differs, so each fingerprinted
tensor has a *role* (`assign_roles`): `body` for the per-layer matrices (attention, MLP,
convolution, recurrent) and a shared role for what relatives share (embeddings, tied
output heads, fixed signal-processing bases, other heads). `match` needs the body: hits on
our body matrices alone must reach the false-match bound, in at least two suspect tensors
(each with half the rows read from it hitting: a stray row or two is no evidence).
A suspect whose hits fall only on shared tensors is `related`; a scan that could compare
nothing is `inconclusive` with the reason, never `no_match`. The score is the share of the
compared suspect matrices (those explained by a shared tensor left out) that are our body
matrices.

Layout does not matter either: besides the sketch of its rows, each tensor keeps a sketch
of its *columns*, each restricted to the sketched rows (centred over them, projected the
same way), so a suspect matrix stored transposed ([in, out], as ONNX and TF exports store
linear weights) is read by row runs like any other: its rows, our columns, are read whole,
cut down to our sketched positions and find their counterparts. Tensors of more than
two dimensions are seen as matrices (`matrix_shape`): conv kernels [out, in, k...] as [out,
in*k...], stacked ones whose first axis is short (recurrent [directions, gates*hidden,
in]) as [directions*gates*hidden, in]; rows are compared one by one, so gate blocks in
another order (ONNX GRU z,r,h against PyTorch r,z,n) match all the same where every row is
sketched (a tensor within the budget); in a larger one only rows that land on sketched
positions can, as for any copy whose rows were moved.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from fingerprints.dequant import Floats
from fingerprints.names import canonical_name, is_query_or_key, qk_permutation
from fingerprints.tensors import TensorInfo, WeightFileError, WeightReader
from fingerprints.tflite import LAYOUT_DEPTHWISE, LAYOUT_OHWI

__all__ = ["DEFAULT_MAX_FALSE_MATCH", "MatchResult", "PrintError", "TensorPrint",
           "WeightPrint", "fingerprint_weights", "match_weights", "new_key"]

# 3: keyed runs of rows sketched, not every row; 2: roles and column sketches. Versions 1
# and 2 are still read (and matched as before: every row of theirs was sketched).
PRINT_VERSION = 3
READS_VERSIONS = (1, 2, 3)
SKETCH_DIMS = 32
SAMPLE_ROWS = 16            # whole rows kept per tensor
MAX_TENSORS = 64            # tensors fingerprinted per file
MAX_SKETCH_ROWS = 1 << 17   # taller matrices are left out
MIN_ROWS = 8
MIN_COLUMNS = 16
RUN_ROWS = 8                # consecutive rows read per suspect tensor: one range request
# Version 3 sketches keyed runs of RUN_ROWS rows, never fewer than MIN_SKETCH_RUNS per
# tensor, at most SKETCH_VALUES values per file and SKETCH_TENSOR_VALUES per tensor (all
# rows when that covers them): the same order of work for a 100 MB file and a 7B model.
# A 384-wide model of 40 matrices has every row of its 384-row matrices sketched, so a
# copy whose rows are permuted is still found; a large model's are not (only rows at the
# keyed positions are compared), but conversions keep row order, or permute it in a way
# the readers undo (llama.cpp's query and key rows, `canonical_order`).
SKETCH_VALUES = 1 << 23
SKETCH_TENSOR_VALUES = 1 << 21
MIN_SKETCH_RUNS = 4
# A suspect tensor is read for at most this many fingerprint keys (each print has its own
# keyed runs: one range request per key).
MAX_KEYS_PER_TENSOR = 4
ROW_ALPHA = 1e-4            # per-row p-value below which a row counts as a hit
DEFAULT_MAX_FALSE_MATCH = 1e-6
DECOYS_PER_TENSOR = 4
DECOY_TENSORS = 16          # tensors (a keyed choice) whose samples make the decoys
# GGUF architectures whose query and key rows llama.cpp permutes (LlamaModel.permute).
_PERMUTED_ARCHS = {"llama", "mistral", "granite", "granitemoe", "deci"}
# A stacked tensor (short first axis) is read a whole slice at a time at scan time; a slice
# larger than this is left out rather than fetched for 8 of its rows.
MAX_SLICE_BYTES = 8 << 20
MIN_BODY_TENSORS = 2        # suspect tensors that must hit our body for a `match`
# A suspect tensor counts as one of our body matrices when at least half the rows compared
# from its run hit, and two at least (all when fewer were read). A copy hits most rows of
# a run; unrelated narrow rows (BlazeFace's 24-wide kernels against another BlazeFace's)
# hit one or two now and then, and that, in a few tensors, called an independent model a
# copy.
MIN_ROWS_PER_BODY_TENSOR = 2

# Integer and boolean tensors of these types are indices, shapes and masks, never weights
# (quantised weights come as 8-bit types, which readers dequantise).
_NOT_WEIGHTS = frozenset({"I64", "INT64", "I32", "INT32", "U64", "UINT64", "BOOL"})

ROLE_BODY = "body"
ROLE_EMBEDDING = "embedding"
ROLE_TIED_HEAD = "tied_head"
ROLE_BASIS = "basis"
ROLE_HEAD = "head"
ROLES = (ROLE_BODY, ROLE_EMBEDDING, ROLE_TIED_HEAD, ROLE_BASIS, ROLE_HEAD)
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


@lru_cache(maxsize=256)
def projected_dims(key: bytes, columns: int) -> float:
    """How many dimensions a centred isotropic vector of this width fills once projected:
    the participation ratio tr(S)^2 / tr(S^2) of S = P^T C P (P the keyed projection, C
    the centring). A Gaussian P is not orthogonal: for widths near SKETCH_DIMS its columns
    differ in length and the projection of a random vector leans on a few directions, so
    an unrelated row lands nearer ours than the uniform null in SKETCH_DIMS says (about
    SKETCH_DIMS / (1 + SKETCH_DIMS / columns) dimensions: 16 for 32 values, 29.5 for 384)."""
    centred = projection(key, columns).astype(np.float64)
    centred -= centred.mean(axis=0)
    gram = centred.T @ centred
    return float(np.trace(gram) ** 2 / np.sum(gram * gram))


def sketch(rows: np.ndarray, key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length projections of the centred rows, and which rows were not constant (a
    constant row has no direction and is left as zeros)."""
    rows = np.asarray(rows, dtype=np.float32)
    centred = rows - rows.mean(axis=1, keepdims=True)
    projected = centred @ projection(key, rows.shape[1])
    norms = np.linalg.norm(projected, axis=1)
    # max |x| as max(max x, -min x): the same values, without a copy of the block.
    scale = (np.maximum(centred.max(axis=1), -centred.min(axis=1)) if rows.size
             else np.zeros(0, np.float32))
    valid = np.isfinite(norms) & (norms > _EPS) & (scale > _EPS)
    out = np.zeros_like(projected)
    out[valid] = projected[valid] / norms[valid, None]
    return out, valid


@lru_cache(maxsize=256)
def _slot_order(key: bytes, rows: int) -> np.ndarray:
    """The keyed order of a matrix's runs (slot s: rows s*RUN_ROWS.. up to RUN_ROWS of
    them). It depends on the row count alone, so every tensor of that height is sketched at
    the same positions (a suspect row finds its counterpart whichever tensor it is) and a
    smaller budget's runs are a prefix of a larger one's."""
    order = np.random.default_rng(_seed(key, "runs", rows)).permutation(-(-rows // RUN_ROWS))
    order.flags.writeable = False
    return order


def run_rows(key: bytes, rows: int, runs: int) -> np.ndarray:
    """The rows (ascending, canonical order) of the first `runs` keyed runs of a matrix of
    `rows` rows: the rows a version-3 print sketches."""
    chosen = np.sort(_slot_order(key, rows)[:runs])
    index = (chosen[:, None] * RUN_ROWS + np.arange(RUN_ROWS)).ravel()
    return index[index < rows]


def _runs_of(key: bytes, rows: int, sketched: int) -> int | None:
    """How many keyed runs make `sketched` rows (a stored print keeps the sketches, the key
    says where they are); None if no prefix of runs does."""
    order = _slot_order(key, rows)
    hit = np.flatnonzero(np.cumsum(np.minimum(RUN_ROWS, rows - order * RUN_ROWS)) == sketched)
    return int(hit[0]) + 1 if hit.size else None


def _runs_budget(rows: int, columns: int, tensors: int) -> int:
    """Runs a version-3 print sketches of a (rows, columns) matrix among `tensors`."""
    values = min(SKETCH_VALUES // max(1, tensors), SKETCH_TENSOR_VALUES)
    return min(-(-rows // RUN_ROWS), max(MIN_SKETCH_RUNS, values // (columns * RUN_ROWS)))


# -- the fingerprint ----------------------------------------------------------------------


@dataclass
class TensorPrint:
    """One fingerprinted tensor, seen as a matrix (`matrix_shape`). Rows of a LLaMA-family
    GGUF's query and key matrices are put back in Hugging Face order (llama.cpp's
    permutation undone), so their row numbers mean the same as the hub checkpoint's. Meta's
    .pth files store the same interleaved order as GGUF but carry no head count, so theirs
    are kept as stored.

    `sketch` holds the rows `sketch_index` says: every row in versions 1 and 2 (`runs` 0),
    the first `runs` keyed runs (`run_rows`) in version 3, which `WeightPrint` derives
    from the key and the number of sketches, so nothing else is stored.

    `column_sketch` (columns, SKETCH_DIMS) sketches the columns the way rows are sketched,
    for suspects that store the matrix transposed, each column restricted to the sketched
    rows (all of them before version 3); None in version-1 prints and for matrices too
    short or too wide for it. `role` is one of ROLES (`assign_roles`)."""

    name: str
    canonical: str
    shape: tuple[int, int]
    dtype: str
    sketch: np.ndarray              # (rows, SKETCH_DIMS) float16, unit rows
    sample_index: np.ndarray        # (k,) int64 row numbers
    samples: np.ndarray             # (k, columns) float32: those rows
    stats: dict[str, Any] = field(default_factory=dict)
    role: str = ""
    column_sketch: np.ndarray | None = None
    runs: int = 0                   # keyed runs sketched; 0: every row (versions 1, 2)

    @property
    def columns(self) -> int:
        return self.shape[1]

    def sketch_index(self, key: bytes) -> np.ndarray:
        """Our rows (canonical order) that `sketch` holds, in its order."""
        if not self.runs:
            return np.arange(self.shape[0])
        return run_rows(key, self.shape[0], self.runs)

    @property
    def every_row(self) -> bool:
        return bool(self.sketch.shape[0] == self.shape[0])

    @property
    def is_body(self) -> bool:
        return self.role == ROLE_BODY


@dataclass
class WeightPrint:
    """The fingerprint of one weight file: its key, its tensors and the measured null."""

    key: bytes
    tensors: list[TensorPrint]
    null_dims: float = float(SKETCH_DIMS)
    version: int = PRINT_VERSION

    def __post_init__(self) -> None:
        if self.version >= 3:
            for t in self.tensors:
                # A height out of range is `checked`'s to report, not a reason to lay out
                # a keyed order of 2^40 rows.
                if not t.runs and MIN_ROWS <= t.shape[0] <= MAX_SKETCH_ROWS:
                    runs = _runs_of(self.key, t.shape[0], t.sketch.shape[0])
                    if runs is None:
                        raise PrintError(f"{t.name}: {t.sketch.shape[0]} sketched rows are "
                                         f"not whole keyed runs of {t.shape[0]}")
                    t.runs = runs
        # Prints stored before roles existed (or a role lost on the way) get them derived.
        if any(t.role not in ROLES for t in self.tensors):
            assign_roles(self.tensors)

    def as_json(self) -> dict[str, Any]:
        """A JSON-safe dict (arrays base64, little-endian), for bundles."""
        return {"version": self.version, "key": self.key.hex(), "null_dims": self.null_dims,
                "tensors": [{
                    "name": t.name, "canonical": t.canonical, "shape": list(t.shape),
                    "dtype": t.dtype, "stats": t.stats, "role": t.role,
                    "sketch": _b64(t.sketch.astype("<f2")),
                    "column_sketch": (None if t.column_sketch is None
                                      else _b64(t.column_sketch.astype("<f2"))),
                    "sample_index": [int(i) for i in t.sample_index],
                    "samples": _b64(t.samples.astype("<f4"))} for t in self.tensors]}

    @classmethod
    def from_json(cls, doc: Any, where: str = "fingerprint") -> WeightPrint:
        """Parse and check `as_json` output (version 1, 2 or 3); PrintError naming the place
        otherwise."""
        def fail(message: str) -> PrintError:
            return PrintError(f"{where}: {message}")

        if not isinstance(doc, dict) or doc.get("version") not in READS_VERSIONS:
            raise fail("not a version-" + ", ".join(map(str, READS_VERSIONS[:-1]))
                       + f" or {READS_VERSIONS[-1]} tensor fingerprint")
        try:
            key = bytes.fromhex(doc["key"])
            null_dims = float(doc["null_dims"])
            tensors = []
            for i, t in enumerate(doc["tensors"]):
                rows, cols = (int(v) for v in t["shape"])
                index = np.asarray(t["sample_index"], dtype=np.int64)
                role = t.get("role", "")
                if role not in ("", *ROLES):
                    raise fail(f"tensors[{i}]: unknown role {str(role)[:40]!r}")
                columns = t.get("column_sketch")
                tensors.append(TensorPrint(
                    name=str(t["name"]), canonical=str(t["canonical"]), shape=(rows, cols),
                    dtype=str(t["dtype"]), stats=dict(t["stats"]), role=role,
                    sketch=_unb64(t["sketch"], "<f2", (rows if doc["version"] < 3 else -1,
                                                       SKETCH_DIMS), fail, f"tensors[{i}]"),
                    column_sketch=None if columns is None else _unb64(
                        columns, "<f2", (cols, SKETCH_DIMS), fail, f"tensors[{i}]"),
                    sample_index=index,
                    samples=_unb64(t["samples"], "<f4", (index.size, cols), fail, f"tensors[{i}]")))
            # Inside the try: a version-3 print whose sketch count fits no keyed runs
            # fails here, as a PrintError naming the place.
            print_ = cls(key=key, tensors=tensors, null_dims=null_dims,
                         version=int(doc["version"]))
        except PrintError as exc:
            raise exc if str(exc).startswith(where) else fail(str(exc)) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise fail(f"malformed ({type(exc).__name__}: {exc})") from None
        return print_.checked(where)

    def checked(self, where: str = "fingerprint") -> WeightPrint:
        """Self after checking that sizes and numbers hold together (PrintError if not)."""
        if len(self.key) < 16:
            raise PrintError(f"{where}: key shorter than 16 bytes")
        if not 1.0 <= self.null_dims <= SKETCH_DIMS:
            raise PrintError(f"{where}: null_dims {self.null_dims} outside 1..{SKETCH_DIMS}")
        for t in self.tensors:
            rows, cols = t.shape
            if not (MIN_ROWS <= rows <= MAX_SKETCH_ROWS and MIN_COLUMNS <= cols <= 1 << 20):
                raise PrintError(f"{where}: {t.name}: shape {list(t.shape)} out of range")
            sketched = rows if not t.runs else run_rows(self.key, rows, t.runs).size
            if t.sketch.shape != (sketched, SKETCH_DIMS) or t.samples.shape[1:] != (cols,):
                raise PrintError(f"{where}: {t.name}: arrays do not fit shape {list(t.shape)}")
            if t.column_sketch is not None and t.column_sketch.shape != (cols, SKETCH_DIMS):
                raise PrintError(f"{where}: {t.name}: column sketch does not fit shape "
                                 f"{list(t.shape)}")
            if t.sample_index.size and (t.sample_index.min() < 0 or t.sample_index.max() >= rows):
                raise PrintError(f"{where}: {t.name}: sample row outside 0..{rows - 1}")
            if not (np.isfinite(t.sketch).all() and np.isfinite(t.samples).all()
                    and (t.column_sketch is None or np.isfinite(t.column_sketch).all())):
                raise PrintError(f"{where}: {t.name}: non-finite values")
        return self

    @property
    def nbytes(self) -> int:
        return sum(t.sketch.nbytes + t.samples.nbytes
                   + (0 if t.column_sketch is None else t.column_sketch.nbytes)
                   for t in self.tensors)

    @property
    def body(self) -> list[TensorPrint]:
        return [t for t in self.tensors if t.is_body]

    @cached_property
    def groups(self) -> dict[int, _Group]:
        """Sketches stacked by row width, built once per print (every scan needs them)."""
        return _groups(self)

    @cached_property
    def partial_columns(self) -> dict[int, list[_Group]]:
        """Column sketches restricted to some of our rows, by our row count (the width of a
        suspect that stores the matrix transposed): one group per set of rows."""
        return _partial_columns(self)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _unb64(text: Any, dtype: str, shape: tuple[int, int], fail: Callable[[str], PrintError],
           where: str) -> np.ndarray:
    """A base64 array of `shape`; a first dimension of -1 takes as many rows as there are."""
    if not isinstance(text, str):
        raise fail(f"{where}: array is not base64 text")
    raw = base64.b64decode(text, validate=True)
    row = shape[1] * np.dtype(dtype).itemsize
    if shape[0] < 0:
        shape = (len(raw) // row, shape[1])
    want = math.prod(shape) * np.dtype(dtype).itemsize
    if len(raw) != want:
        raise fail(f"{where}: array of {len(raw)} bytes, shape {list(shape)} needs {want}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(
        np.float16 if dtype == "<f2" else np.float32)


# -- roles ----------------------------------------------------------------------------------

_LAYER_NAME = re.compile(r"^blk\.\d+\.")
_EMBEDDING_NAME = re.compile(r"(^|[._/])(token_embd|position_embd|token_types|wte|wpe|"
                             r"[a-z_]*embed[a-z_]*)([._/]|$)", re.I)
_BASIS_NAME = re.compile(r"stft|istft|mel|filterbank|fbank|window|dft|fourier|basis", re.I)
_HEAD_NAME = re.compile(r"(^|[._/])(output|lm_head|pooler|classifier|cls|head|score)"
                        r"([._/]|$)", re.I)
_SAME_ROWS = 0.999          # mean cosine of sketches above which two tensors hold one matrix


def _vocabulary_sized(shape: tuple[int, int]) -> bool:
    """A lookup table's shape: far more rows than columns, and many of them."""
    rows, cols = shape
    return rows >= 4096 and rows >= 6 * cols


def _same_rows(a: TensorPrint, b: TensorPrint) -> bool:
    """Whether two tensors hold the same rows (a tied output head and its embedding):
    their sketches, row by row, nearly equal."""
    if a.shape != b.shape:
        return False
    n = min(a.shape[0], 256)
    cos = np.einsum("ij,ij->i", a.sketch[:n].astype(np.float32), b.sketch[:n].astype(np.float32))
    return float(cos.mean()) >= _SAME_ROWS


def _fixed_basis(t: TensorPrint) -> bool:
    """Whether a tensor's kept rows look like a fixed signal-processing basis rather than
    learnt weights: windowed sinusoids (an STFT or DFT basis: each row's spectrum is a peak
    a few bins wide) or mel-style filterbanks (non-negative rows, zero almost everywhere).
    Rows must be long enough for a spectrum to say something (a learnt 5-tap kernel is
    trivially concentrated)."""
    rows = t.samples.astype(np.float64)
    if rows.shape[0] < 4 or rows.shape[1] < 64:
        return False
    live = np.abs(rows).max(axis=1) > _EPS
    if live.sum() < 4:
        return False
    rows = rows[live]
    if (rows >= 0).all() and ((rows > 0).mean(axis=1) <= 0.25).all():
        return True
    power = np.abs(np.fft.rfft(rows - rows.mean(axis=1, keepdims=True), axis=1)) ** 2
    peak = power.argmax(axis=1)
    near = np.stack([np.take_along_axis(power, np.clip(peak + d, 0, power.shape[1] - 1)[:, None],
                                        axis=1)[:, 0] for d in (-1, 0, 1)]).sum(axis=0)
    return bool(np.mean(near / np.maximum(power.sum(axis=1), _EPS) >= 0.8) >= 0.75)


def assign_roles(tensors: Sequence[TensorPrint]) -> None:
    """Give each tensor without a role one of ROLES, from its name, shape, position and
    content; names are often anonymised (`val_49_q`, `onnx::MatMul_470`), so they decide
    only when they are explicit:

    - llama.cpp-canonical per-layer names (`blk.N.*`) are body; embedding names
      (token/position/type embeddings) are embeddings; names of fixed signal-processing
      bases (STFT, mel filterbanks, windows) are bases; output, pooler and classifier
      names are heads.
    - A tensor holding the same rows as another (a tied output head) is a tied head (or,
      when neither is named, both are embeddings).
    - A vocabulary-sized table (many more rows than columns) is an embedding; one whose
      rows are windowed sinusoids or sparse non-negative filters is a fixed basis.
    - Of the rest, matrices whose shape (either way round) repeats, as per-layer matrices
      do, and tensors stored with more than two dimensions (conv, recurrent) are body;
      a lone shape (a position table, a projection head) is a head. If that leaves no body
      at all (a one-layer model), every unnamed matrix is body.
    """
    pending = [t for t in tensors if t.role not in ROLES]
    for t in pending:
        base = t.canonical.rsplit(".", 1)[0] if t.canonical.endswith((".weight", ".bias")) \
            else t.canonical
        if _BASIS_NAME.search(t.name):
            t.role = ROLE_BASIS
        elif _LAYER_NAME.match(t.canonical):
            t.role = ROLE_BODY
        elif _EMBEDDING_NAME.search(base):
            t.role = ROLE_EMBEDDING
        elif _HEAD_NAME.search(base):
            t.role = ROLE_HEAD
    for i, t in enumerate(tensors):
        for other in tensors[:i]:
            if ROLE_BODY in (t.role, other.role) or not _same_rows(t, other):
                continue
            # The named head (or the later one) is the tie; the table stays an embedding.
            table, tied = (t, other) if other.role == ROLE_HEAD else (other, t)
            table.role = table.role if table.role in (ROLE_EMBEDDING, ROLE_BASIS) \
                else ROLE_EMBEDDING
            tied.role = ROLE_TIED_HEAD if tied.role != ROLE_BASIS else tied.role
    for t in tensors:
        if not t.role and _vocabulary_sized(t.shape):
            t.role = ROLE_EMBEDDING
        elif not t.role and _fixed_basis(t):
            t.role = ROLE_BASIS
    unnamed = [t for t in tensors if not t.role]
    shapes = Counter(tuple(sorted(t.shape)) for t in tensors
                     if t.role in ("", ROLE_BODY))
    for t in unnamed:
        stacked = len(t.stats.get("stored_shape", t.shape)) > 2
        t.role = ROLE_BODY if stacked or shapes[tuple(sorted(t.shape))] >= 2 else ROLE_HEAD
    if unnamed and not any(t.is_body for t in tensors):
        for t in unnamed:
            t.role = ROLE_BODY


# -- tensors as matrices --------------------------------------------------------------------


def matrix_shape(tensor: TensorInfo) -> tuple[int, int, int] | None:
    """How a tensor is seen as a matrix: (rows, columns, rows per stored slice), or None
    for a vector or a scalar. A 2-D tensor is itself (one row per slice). A tensor of more
    dimensions whose first axis is long enough is a bank of kernels, [out, in, k...] seen
    as [out, in*k...] (one row per slice, read as it is stored). One whose first axis is
    short (recurrent [directions, gates*hidden, in], stacked layers) is its matrices
    stacked, [directions*gates*hidden, in]: the reader hands out whole slices along the
    first axis, so rows are cut out of those.

    Kernels a format stores in another layout (TFLite's [out, h, w, in] and depthwise [1,
    h, w, channels], `extra["layout"]`) are seen as PyTorch and ONNX store them, [out,
    in*h*w] and [channels, h*w], so the same kernel has the same rows in every format:
    `read_matrix_rows` reads the stored rows (or the one depthwise slice) by range and
    reorders their values after reading."""
    shape = tensor.shape
    if len(shape) < 2:
        return None
    if _kernel_layout(tensor) == LAYOUT_DEPTHWISE:
        return shape[3], shape[1] * shape[2], shape[3]
    if len(shape) == 2 or shape[0] >= MIN_ROWS:
        return shape[0], tensor.columns, 1
    per = math.prod(shape[1:-1])
    return shape[0] * per, shape[-1], per


def _kernel_layout(tensor: TensorInfo) -> str | None:
    """The stored layout to undo for a 4-D kernel (`matrix_shape`), or None: none said, or
    one that does not fit the shape (a short bank of kernels is seen stacked, as stored).
    A depthwise kernel whose h*w is under MIN_COLUMNS (3x3) would not be fingerprinted as
    [channels, h*w] in any format, so it keeps its stored view [h*w, channels], which at
    least another TFLite file of the model shares."""
    layout = tensor.extra.get("layout")
    if len(tensor.shape) != 4:
        return None
    if (layout == LAYOUT_DEPTHWISE and tensor.shape[0] == 1
            and tensor.shape[1] * tensor.shape[2] >= MIN_COLUMNS):
        return layout
    if layout == LAYOUT_OHWI and tensor.shape[0] >= MIN_ROWS:
        return layout
    return None


def read_matrix_rows(reader: WeightReader, tensor: TensorInfo, rows: np.ndarray | range
                     ) -> Floats:
    """Rows of `tensor` seen as `matrix_shape` says, as float32 (len(rows), columns)."""
    view = matrix_shape(tensor)
    if view is None:
        raise WeightFileError(f"{tensor.name}: not a matrix")
    _, columns, per = view
    index = np.asarray(rows, dtype=np.int64)
    layout = _kernel_layout(tensor)
    if per == 1:
        data = reader.read_rows(tensor, index)
        if layout == LAYOUT_OHWI:
            _, h, w, c = tensor.shape
            data = data.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(len(index), columns)
        return data
    slices = np.unique(index // per)
    data = reader.read_rows(tensor, slices)
    if layout == LAYOUT_DEPTHWISE:
        data = data.reshape(columns, per).T  # [h*w, channels] -> [channels, h*w]
    data = np.ascontiguousarray(data).reshape(slices.size * per, columns)
    place = np.searchsorted(slices, index // per) * per + index % per
    ordered: Floats = data[place]
    return ordered


def matrix_read_cost(tensor: TensorInfo, rows: int) -> int:
    """Bytes a run of `rows` consecutive matrix rows costs at most (whole slices for a
    stacked tensor, and a run may straddle two)."""
    view = matrix_shape(tensor)
    if view is None:
        return 0
    per = view[2]
    if per == 1:
        return rows * tensor.row_nbytes
    return min(tensor.shape[0], -(-rows // per) + 1) * tensor.row_nbytes


# -- register time --------------------------------------------------------------------------


def fingerprint_weights(reader: WeightReader, key: bytes, *, max_tensors: int = MAX_TENSORS,
                        progress: Callable[[int], None] | None = None) -> WeightPrint:
    """Fingerprint a weight file: sketches of keyed runs of rows of up to `max_tensors`
    matrices (a keyed choice when there are more; `_runs_budget` rows each), restricted
    column sketches, keyed sample rows, statistics, and the null measured on decoys. Reads
    and dequantises only those rows, one range per run: the same work for any model size.

    `progress(n)` gets the number of tensor bytes dealt with so far. WeightFileError (one
    line) if a chosen tensor cannot be read.
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
        order = _canonical_order(tensor, canonical, arch, heads) if tensor.is_matrix else None
        prints.append(_print_tensor(reader, tensor, canonical, key, order, len(eligible)))
        done += tensor.nbytes
        if progress is not None:
            progress(done)
    assign_roles(prints)
    result = WeightPrint(key=key, tensors=prints)
    result.null_dims = measure_null_dims(result)
    return result


def _printable(tensor: TensorInfo) -> bool:
    view = matrix_shape(tensor)
    return (view is not None and tensor.dtype.upper() not in _NOT_WEIGHTS
            and MIN_ROWS <= view[0] <= MAX_SKETCH_ROWS
            and view[1] >= MIN_COLUMNS)


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
                  order: np.ndarray | None, tensors: int) -> TensorPrint:
    view = matrix_shape(tensor)
    assert view is not None, "_printable checked it"
    rows, cols, _ = view
    runs = _runs_budget(rows, cols, tensors)
    index = run_rows(key, rows, runs)
    # A keyed run of consecutive rows kept whole (watermark detection compares them): a
    # remote reader fetches it in one range request.
    rng = np.random.default_rng(_seed(key, "sample", canonical, (rows, cols)))
    count = min(SAMPLE_ROWS, rows)
    sample_index = int(rng.integers(0, rows - count + 1)) + np.arange(count)
    wanted = np.union1d(index, sample_index)
    data = read_matrix_rows(reader, tensor, wanted if order is None else order[wanted])
    if not np.isfinite(data).all():
        bad = wanted[int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])]
        raise WeightFileError(f"{tensor.name}: non-finite values in row {bad}")
    sketched = data[np.searchsorted(wanted, index)]
    # Columns are sketched like rows, each restricted to the sketched rows: a suspect that
    # stores the matrix transposed has our columns as rows, reads one whole and keeps those
    # positions (`_partial_columns`). With every row sketched it is the whole column.
    column_sketch = None
    if MIN_COLUMNS <= index.size and cols <= MAX_SKETCH_ROWS:
        column_sketch = sketch(sketched.T, key)[0].astype(np.float16)
    # Moments of the rows read, summed in float64 from float32 products: statistics
    # reported to a few digits, at a third of the cost of a float64 copy.
    flat = data.ravel()
    squares = flat * flat
    moments = np.array([flat.sum(dtype=np.float64), squares.sum(dtype=np.float64),
                        np.dot(squares, flat, out=None), np.dot(squares, squares)],
                       dtype=np.float64)
    absmax = float(max(flat.max(initial=0.0), -flat.min(initial=0.0)))
    stats = _stats(moments, flat.size, absmax, np.sqrt(squares.reshape(data.shape).sum(
        axis=1, dtype=np.float64)))
    if len(tensor.shape) != 2:
        stats["stored_shape"] = list(tensor.shape)
    return TensorPrint(name=tensor.name, canonical=canonical, shape=(rows, cols),
                       dtype=tensor.dtype, sketch=sketch(sketched, key)[0].astype(np.float16),
                       sample_index=sample_index,
                       samples=data[np.searchsorted(wanted, sample_index)],
                       stats=stats, column_sketch=column_sketch,
                       runs=runs)


def _unit_rows(projected: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    out = np.where(norms > _EPS, projected / np.maximum(norms, _EPS), 0.0)
    return out.astype(np.float16)


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
    # The sum of squared cosines of decoys p against sketches S is the sum of p (S^T S) p^T:
    # one SKETCH_DIMS-square Gram matrix per width, instead of every decoy against every
    # sketch, which grew with the square of the model (most of a large file's print time).
    # Decoys of DECOY_TENSORS tensors (thousands of decoy rows against every sketch) pin
    # the mean square down well; more only cost register time.
    grams: dict[int, np.ndarray] = {}
    squares, count = 0.0, 0
    chosen_tensors = sorted(print_.tensors, key=lambda t: _seed(print_.key, "decoys", t.name))
    for tensor in chosen_tensors[:DECOY_TENSORS]:
        group = groups[tensor.columns].sketch
        if (gram := grams.get(tensor.columns)) is None:
            wide = group.astype(np.float64)
            gram = grams[tensor.columns] = wide.T @ wide
        rng = np.random.default_rng(_seed(print_.key, "decoy", tensor.name))
        decoys = np.concatenate([tensor.samples[:, rng.permutation(tensor.columns)]
                                 for _ in range(DECOYS_PER_TENSOR)])
        projected, valid = sketch(decoys, print_.key)
        chosen = projected[valid].astype(np.float64)
        squares += float(np.einsum("ij,jk,ik->", chosen, gram, chosen))
        count += chosen.shape[0] * group.shape[0]
    if not count or squares <= 0:
        return float(SKETCH_DIMS)
    return float(min(SKETCH_DIMS, max(1.0, count / squares)))


# -- matching -------------------------------------------------------------------------------


@dataclass
class _Group:
    """Every sketched vector of one width in one fingerprint, stacked: candidates for a
    suspect row. Our rows, and our columns (`transposed`) of tensors whose row count is
    this width."""

    sketch: np.ndarray                 # (n, SKETCH_DIMS) float32
    owner: np.ndarray                  # (n,) index into the tensor list
    transposed: np.ndarray             # (n,) bool: a column of ours, not a row
    tensors: list[TensorPrint]
    # Column sketches restricted to these of our rows: a suspect row (one of our columns)
    # is cut down to them before it is sketched. None: the whole row.
    positions: np.ndarray | None = None
    # What the projection of the compared vectors' width lets the null fill
    # (`projected_dims`): the print's measured null is an average over its widths, and
    # a narrow vector (a column cut down to a few runs) fills fewer dimensions.
    dims: float = float(SKETCH_DIMS)

    def null_dims(self, measured: float) -> float:
        return min(measured, self.dims)


def _groups(print_: WeightPrint) -> dict[int, _Group]:
    parts: dict[int, list[tuple[np.ndarray, int, bool]]] = {}
    for i, tensor in enumerate(print_.tensors):
        parts.setdefault(tensor.columns, []).append((tensor.sketch, i, False))
        if tensor.column_sketch is not None and tensor.every_row:
            parts.setdefault(tensor.shape[0], []).append((tensor.column_sketch, i, True))
    out = {}
    for width, items in parts.items():
        out[width] = _Group(
            sketch=np.concatenate([a for a, _, _ in items]).astype(np.float32),
            owner=np.concatenate([np.full(a.shape[0], i) for a, i, _ in items]),
            transposed=np.concatenate([np.full(a.shape[0], t) for a, _, t in items]),
            tensors=print_.tensors, dims=projected_dims(print_.key, width))
    return out


def _partial_columns(print_: WeightPrint) -> dict[int, list[_Group]]:
    parts: dict[tuple[int, int], list[int]] = {}
    for i, tensor in enumerate(print_.tensors):
        if tensor.column_sketch is not None and not tensor.every_row:
            parts.setdefault((tensor.shape[0], tensor.runs), []).append(i)
    out: dict[int, list[_Group]] = {}
    for (rows, runs), owners in sorted(parts.items()):
        sketches = [print_.tensors[i].column_sketch for i in owners]
        out.setdefault(rows, []).append(_Group(
            sketch=np.concatenate([a for a in sketches if a is not None]).astype(np.float32),
            owner=np.concatenate([np.full(print_.tensors[i].columns, i) for i in owners]),
            transposed=np.ones(sum(print_.tensors[i].columns for i in owners), dtype=bool),
            tensors=print_.tensors, positions=(positions := run_rows(print_.key, rows, runs)),
            dims=projected_dims(print_.key, positions.size)))
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
    role: str | None = None            # our tensor's role
    transposed: bool = False           # their rows are our columns

    def as_dict(self) -> dict[str, Any]:
        return {"suspect": self.suspect, "shape": list(self.shape), "dtype": self.dtype,
                "rows_compared": self.rows_compared, "rows_matched": self.rows_matched,
                "model": self.model, "ours": self.ours, "role": self.role,
                "transposed": self.transposed,
                "similarity": None if self.similarity is None else round(self.similarity, 4)}


VERDICT_MATCH, VERDICT_RELATED, VERDICT_NO_MATCH, VERDICT_INCONCLUSIVE = (
    "match", "related", "no_match", "inconclusive")


@dataclass
class MatchResult:
    """A scan's verdict: `match` (our body matrices found), `related` (only tensors that
    relatives share found), `no_match` (tensors compared, none ours) or `inconclusive`
    (nothing could be compared; `reason` says why). `unknown_format` is the caller's, when
    the file cannot be opened as weights at all.

    `score` is the share of compared suspect matrices, those explained by one of our
    shared tensors left out, that are our body matrices. The false-match probability is
    the one the verdict rests on: of the body hits for `match`, of the shared hits for
    `related`, of all hits otherwise."""

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
    reason: str | None = None
    related_to: str | None = None       # the model a `related` suspect shares tensors with
    body_total: int = 0                 # our body matrices (of `model` or `related_to`)
    body_found: list[str] = field(default_factory=list)
    shared_found: list[str] = field(default_factory=list)
    body_not_found: list[str] = field(default_factory=list)
    log10_body: float = 0.0
    log10_shared: float = 0.0

    @property
    def evidence_model(self) -> str | None:
        return self.model or self.related_to

    def found(self) -> list[dict[str, Any]]:
        """Which of our tensors were found: by role, transposed or not, in which tensor."""
        return [{"ours": p.ours, "role": p.role, "suspect": p.suspect,
                 "transposed": p.transposed, "rows": f"{p.rows_matched}/{p.rows_compared}",
                 "similarity": None if p.similarity is None else round(p.similarity, 4)}
                for p in self.pairs
                if p.rows_matched and p.model == self.evidence_model and p.ours]

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "model": self.model, "score": round(self.score, 4),
                "false_match_probability": self.false_match_probability,
                "log10_false_match": round(self.log10_false_match, 2),
                "reason": self.reason, "related_to": self.related_to,
                "rows_compared": self.rows_compared, "rows_matched": self.rows_matched,
                "tensors_compared": self.tensors_compared,
                "tensors_matched": self.tensors_matched,
                "similarity": None if self.similarity is None else round(self.similarity, 4),
                "budget_exhausted": self.budget_exhausted,
                "body_total": self.body_total,
                "found": self.found(),
                "body_found": self.body_found, "shared_found": self.shared_found,
                "body_not_found": self.body_not_found,
                "compared_not_found": [p.suspect for p in self.pairs if not p.rows_matched],
                "log10_false_match_body": round(self.log10_body, 2),
                "log10_false_match_shared": round(self.log10_shared, 2),
                "pairs": [p.as_dict() for p in self.pairs],
                "skipped": self.skipped}


@dataclass
class _Row:
    log_p: float
    model: str | None
    cosine: float
    ours: str | None
    role: str | None = None
    transposed: bool = False

    @property
    def hit(self) -> bool:
        return self.model is not None and self.log_p <= math.log(ROW_ALPHA)


def match_weights(reader: WeightReader, prints: Sequence[tuple[str, WeightPrint]], *,
                  spent: Callable[[], int] = lambda: 0, max_bytes: int | None = None,
                  max_tensors: int = 48, rows_per_tensor: int = RUN_ROWS,
                  max_false_match: float = DEFAULT_MAX_FALSE_MATCH) -> MatchResult:
    """Compare a suspect file with registered fingerprints (`(model, print)` pairs).

    Reads about `rows_per_tensor` rows from each of up to `max_tensors` suspect tensors
    (seen as matrices, `matrix_shape`) that some fingerprint could recognise (`_reads`):
    for a version-3 print, one of its keyed runs of a tensor of the same shape (our rows
    in canonical order, so a GGUF's permuted query and key rows are read where ours are);
    for older prints and copies stored transposed, a keyed run anywhere. Tensors come in a
    keyed order that prefers fingerprinted names, then fingerprinted shapes (either way
    round). `spent()` says how many bytes the source has read so far (header included)
    and no read is made that would take it past `max_bytes`. Stops early once the evidence
    on our body is overwhelming (false-match probability below `max_false_match` squared,
    three tensors matched). See MatchResult for the verdicts.
    """
    shapes = {s for _, p in prints for t in p.tensors for s in (t.shape, t.shape[::-1])}
    order_key = prints[0][1].key if prints else b"none"
    names = {t.canonical for _, p in prints for t in p.tensors}
    # Each tensor with its own view: a file may repeat a name (TFLite does not forbid it),
    # and a same-named vector must not hide a matrix.
    viewed = [(t, view) for t in reader.tensors
              if (view := matrix_shape(t)) is not None and t.dtype.upper() not in _NOT_WEIGHTS]
    matrices = [t for t, _ in viewed]
    planned = [(t, view, reads) for t, view in viewed
               if (reads := _reads(reader, t, view, prints, order_key, rows_per_tensor))]
    # Tensors whose canonical name was fingerprinted first (names usually survive a
    # conversion, and a deep model has more matrices than a fingerprint keeps), then those
    # of a fingerprinted shape, in a keyed order.
    planned.sort(key=lambda tv: (canonical_name(tv[0].name) not in names,
                                 tv[1][:2] not in shapes,
                                 _seed(order_key, "scan", tv[0].name, tv[0].shape)))
    plan = [t for t, _, _ in planned]
    rows_seen: list[_Row] = []
    pairs: list[TensorPair] = []
    skipped: list[str] = []
    exhausted = False
    n_models = max(1, len({model for model, _ in prints}))
    for tensor, (_, _, per), reads in planned:
        if len(pairs) >= max_tensors:
            break
        if per > 1 and tensor.row_nbytes > MAX_SLICE_BYTES:
            skipped.append(f"{tensor.name}: slices of {tensor.row_nbytes} bytes too large "
                           "to read for a few rows")
            continue
        best: list[_Row] | None = None
        for index, members in reads:
            if max_bytes is not None and spent() + _read_cost(tensor, index) > max_bytes:
                exhausted = True
                continue
            try:
                data = read_matrix_rows(reader, tensor, index)
            except WeightFileError as exc:
                skipped.append(str(exc))
                break
            # Every row read is a trial, whichever key it was read for; the pair is made of
            # the read that found most (the others were another print's positions).
            found = _compare_rows(data, [prints[i] for i in members])
            rows_seen += found
            if best is None or _hits(found) > _hits(best):
                best = found
            if _hits(best) >= _rows_for_body(len(best)):
                break
        if best is None:
            continue
        pairs.append(_pair(tensor, best))
        verdict = _verdict(rows_seen, pairs, prints, n_models, max_false_match)
        if (verdict.verdict == VERDICT_MATCH
                and verdict.log10_body <= 2 * math.log10(max_false_match)
                and len(verdict.body_found) >= 3):
            break
    result = _verdict(rows_seen, pairs, prints, n_models, max_false_match)
    result.skipped, result.budget_exhausted = skipped, exhausted
    if not pairs:
        result.verdict = VERDICT_INCONCLUSIVE
        result.reason = _why_nothing(reader.tensors, matrices, plan, skipped, exhausted)
    return result


Read = tuple[np.ndarray, list[int]]     # suspect rows (file order), prints to compare with


def _reads(reader: WeightReader, tensor: TensorInfo, view: tuple[int, int, int],
           prints: Sequence[tuple[str, WeightPrint]], order_key: bytes,
           rows_per_tensor: int) -> list[Read]:
    """The reads that could recognise a suspect tensor, at most MAX_KEYS_PER_TENSOR:

    - For each version-3 print key with a partly sketched tensor of the same shape, whole
      runs among the first it sketched (ours is found at its own positions, whatever its
      name), in canonical row order (`canonical_order`).
    - One keyed run anywhere, for prints of versions 1 and 2 (every row sketched) and for
      version-3 prints that can only recognise the tensor there: a tensor of its width
      with every row sketched, or one stored transposed (every column is sketched).
    Reads for a print holding the tensor's canonical name come first."""
    rows, width, _ = view
    canonical = canonical_name(tensor.name)
    keyed: dict[bytes, tuple[list[int], int, bool]] = {}
    anywhere: list[int] = []
    named_anywhere = False
    for i, (_, p) in enumerate(prints):
        named = any(t.canonical == canonical for t in p.tensors)
        if p.version >= 3:
            partial = [t.runs for t in p.tensors if t.shape == (rows, width) and not t.every_row]
            if partial:
                members, runs, was_named = keyed.get(p.key, ([], min(partial), False))
                keyed[p.key] = ([*members, i], min(runs, *partial), was_named or named)
                continue
            if not (width in p.partial_columns or any(
                    t.every_row and (t.columns == width or (
                        t.shape[0] == width and t.column_sketch is not None))
                    for t in p.tensors)):
                continue
        elif width not in p.groups:
            continue
        anywhere.append(i)
        named_anywhere = named_anywhere or named
    wanted: list[tuple[bool, int, Read]] = []
    order = canonical_order(reader, tensor) if keyed else None
    for key, (members, runs, named) in keyed.items():
        rng = np.random.default_rng(_seed(key, "read", tensor.name, tensor.shape))
        take = min(runs, -(-rows_per_tensor // RUN_ROWS))
        slots = np.sort(_slot_order(key, rows)[rng.choice(runs, take, replace=False)])
        index = (slots[:, None] * RUN_ROWS + np.arange(RUN_ROWS)).ravel()
        index = index[index < rows]
        # Keys in an order of this tensor's own: with more same-shaped prints than
        # MAX_KEYS_PER_TENSOR, each is tried on some of the suspect's tensors.
        wanted.append((not named, _seed(order_key, "key", key, tensor.name),
                       (index if order is None else order[index], members)))
    if anywhere:
        run = min(rows_per_tensor, rows)
        rng = np.random.default_rng(_seed(order_key, "offset", tensor.name, tensor.shape))
        first = int(rng.integers(0, rows - run + 1))
        wanted.append((not named_anywhere, 0, (np.arange(first, first + run), anywhere)))
    wanted.sort(key=lambda w: w[:2])
    return [read for _, _, read in wanted[:MAX_KEYS_PER_TENSOR]]


def _read_cost(tensor: TensorInfo, index: np.ndarray) -> int:
    """Bytes reading these rows costs at most: one range per run of consecutive rows."""
    rows = np.unique(index)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return sum(matrix_read_cost(tensor, len(run)) for run in np.split(rows, breaks))


def _hits(rows: list[_Row]) -> int:
    return sum(1 for r in rows if r.hit)


def _rows_for_body(compared: int) -> int:
    """Hits among a suspect tensor's compared rows for it to count as one of our body
    matrices (MIN_ROWS_PER_BODY_TENSOR)."""
    return min(compared, max(MIN_ROWS_PER_BODY_TENSOR, -(-compared // 2)))


def _why_nothing(tensors: Sequence[TensorInfo], matrices: Sequence[TensorInfo],
                 plan: Sequence[TensorInfo], skipped: Sequence[str], exhausted: bool) -> str:
    if not tensors or not matrices:
        return "no readable tensor: the file holds no matrix"
    if not plan:
        return (f"none of a comparable shape: none of its {len(matrices)} matrices has a "
                "shape, width or column length of ours")
    if exhausted:
        return "budget spent before any tensor could be compared"
    return f"no readable tensor: {len(skipped)} could not be read ({skipped[0]})"


def _compare_rows(data: np.ndarray, prints: Sequence[tuple[str, WeightPrint]]) -> list[_Row]:
    """Each suspect row's best counterpart over these fingerprints (our rows, our columns,
    our columns restricted to sketched rows), with its p-value."""
    best: list[_Row] = [_Row(0.0, None, 0.0, None) for _ in range(len(data))]
    width = data.shape[1]
    candidates = [(model, p, group) for model, p in prints
                  for group in ([p.groups[width]] if width in p.groups else [])
                  + p.partial_columns.get(width, [])]
    tries = len(candidates)
    for model, print_, group in candidates:
        rows = data if group.positions is None else data[:, group.positions]
        projected, valid = sketch(rows, print_.key)
        cos = projected @ group.sketch.T
        top = cos.argmax(axis=1)
        for i in np.flatnonzero(valid):
            c = float(cos[i, top[i]])
            # Union bound over every candidate vector and every group compared.
            log_p = min(0.0, math.log(group.sketch.shape[0] * tries)
                        + log_cosine_tail(c, group.null_dims(print_.null_dims)))
            if log_p < best[i].log_p or best[i].model is None:
                owner = group.tensors[int(group.owner[top[i]])]
                best[i] = _Row(log_p, model, c, owner.canonical, owner.role,
                               bool(group.transposed[top[i]]))
    return [row for row in best if row.model is not None]


def _pair(tensor: TensorInfo, rows: list[_Row]) -> TensorPair:
    hits = [r for r in rows if r.hit]
    pair = TensorPair(suspect=tensor.name, shape=tensor.shape, dtype=tensor.dtype,
                      rows_compared=len(rows), rows_matched=len(hits))
    if hits:
        (model, ours, role, transposed), _ = Counter(
            (r.model, r.ours, r.role, r.transposed) for r in hits).most_common(1)[0]
        pair.model, pair.ours, pair.role, pair.transposed = model, ours, role, transposed
        pair.similarity = float(np.median([r.cosine for r in hits]))
    return pair


def _log10_tail(m: int, k: int, n_models: int) -> float:
    return min(0.0, (log_binomial_tail(m, k, ROW_ALPHA) + math.log(n_models)) / math.log(10))


def _verdict(rows: list[_Row], pairs: list[TensorPair],
             prints: Sequence[tuple[str, WeightPrint]], n_models: int,
             max_false_match: float) -> MatchResult:
    """The verdict from the rows compared so far. Every compared row, whatever it hit, is
    a trial: any row could have hit a body row by chance, so the binomial tail of body hits
    among all rows is the body's false-match probability (and the same for shared hits)."""
    m = len(rows)
    hits = [r for r in rows if r.hit]
    body = Counter(r.model for r in hits if r.role == ROLE_BODY)
    shared = Counter(r.model for r in hits if r.role != ROLE_BODY)
    every = Counter(r.model for r in hits)
    bound = math.log10(max_false_match)

    def tensors_hit(model: str | None, body_role: bool | None) -> list[TensorPair]:
        return [p for p in pairs if p.rows_matched and p.model == model and p.ours
                and (body_role is None or (p.role == ROLE_BODY) == body_role)]

    body_model, k_body = body.most_common(1)[0] if body else (None, 0)
    shared_model, k_shared = shared.most_common(1)[0] if shared else (None, 0)
    log10_body = _log10_tail(m, k_body, n_models)
    log10_shared = _log10_tail(m, k_shared, n_models)
    body_pairs = [p for p in tensors_hit(body_model, True)
                  if p.rows_matched >= _rows_for_body(p.rows_compared)]
    ours_body = {model: [t.canonical for t in p.body] for model, p in prints}
    needed = min(MIN_BODY_TENSORS, max(1, len(ours_body.get(body_model or "", []))))
    model: str | None
    if body_model is not None and log10_body <= bound and len(body_pairs) >= needed:
        verdict, model, log10_fmp = VERDICT_MATCH, body_model, log10_body
    elif shared_model is not None and log10_shared <= bound:
        verdict, model, log10_fmp = VERDICT_RELATED, shared_model, log10_shared
    else:
        any_model, k_any = every.most_common(1)[0] if every else (None, 0)
        verdict, model, log10_fmp = VERDICT_NO_MATCH, any_model, _log10_tail(m, k_any, n_models)
    evidence = model if verdict != VERDICT_NO_MATCH else None
    body_found = sorted({p.ours for p in tensors_hit(evidence, True) if p.ours})
    shared_pairs = tensors_hit(evidence, False)
    explained = {p.suspect for p in shared_pairs}
    considered = [p for p in pairs if p.suspect not in explained]
    found_body = tensors_hit(evidence, True)
    matched = [r.cosine for r in hits if r.model == evidence]
    return MatchResult(
        verdict=verdict, model=model if verdict == VERDICT_MATCH else None,
        related_to=model if verdict == VERDICT_RELATED else None,
        score=len(found_body) / len(considered) if considered else 0.0,
        false_match_probability=10 ** max(log10_fmp, -300.0),
        log10_false_match=log10_fmp, rows_compared=m,
        rows_matched=sum(1 for r in hits if r.model == (evidence or model)),
        tensors_compared=len(pairs),
        tensors_matched=len(tensors_hit(evidence, None)) if evidence else 0,
        similarity=float(np.median(matched)) if matched else None, pairs=pairs,
        body_total=len(ours_body.get(evidence or "", [])), body_found=body_found,
        shared_found=sorted({p.ours for p in shared_pairs if p.ours}),
        body_not_found=[n for n in ours_body.get(evidence or "", []) if n not in body_found],
        log10_body=log10_body, log10_shared=log10_shared)


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


def _short(name: str) -> str:
    return name[:-len(".weight")] if name.endswith(".weight") else name


def describe(result: MatchResult) -> str:
    """One line for logs, tables and hits."""
    if result.verdict == VERDICT_INCONCLUSIVE:
        return f"inconclusive: {result.reason}"
    if result.verdict == VERDICT_RELATED:
        shared = ", ".join(_short(n) for n in result.shared_found[:4]) + (
            f" and {len(result.shared_found) - 4} more" if len(result.shared_found) > 4 else "")
        compared = result.tensors_compared - result.tensors_matched
        return (f"related: shares {shared} with {result.related_to}; none of its {compared} "
                f"other matrices compared is one of our {result.body_total} layer matrices "
                f"(false-match probability of the shared tensors "
                f"{result.false_match_probability:.1e})")
    if result.verdict != VERDICT_MATCH:
        return (f"no match ({result.rows_matched}/{result.rows_compared} rows, "
                f"{result.tensors_compared} tensors compared)")
    transposed = sum(1 for f in result.found() if f["transposed"] and f["role"] == ROLE_BODY)
    return (f"match {result.model}: {len(result.body_found)} of our {result.body_total} layer "
            f"matrices found" + (f" ({transposed} stored transposed)" if transposed else "")
            + f", {result.rows_matched}/{result.rows_compared} rows in "
            f"{result.tensors_matched}/{result.tensors_compared} tensors, similarity "
            f"{result.similarity:.4f}, false-match probability "
            f"{result.false_match_probability:.1e}")
