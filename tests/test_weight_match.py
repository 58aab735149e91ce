"""Acceptance tests of tensor-fingerprint matching (issue 5) on real weights.

The real all-MiniLM-L6-v2 file is registered once; every suspect is written to disk in a
real format by the weights lab and read back through `open_weights(FileSource(...))` (or
`open_sharded`), as a scan would read a download. Positives are what a converter or a
leaker does to a release; negatives are models of the same shapes that are not MiniLM.
Besides the verdicts, the distributions of score, false-match probability and similarity
are printed (`pytest -s`) so that the margin, not only the side of the threshold, is seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import weights_lab as lab

from fingerprints.names import canonical_name, qk_permutation
from fingerprints.safetensors import open_sharded
from fingerprints.tensors import FileSource, TensorInfo
from fingerprints.weightprint import (
    ROW_ALPHA,
    MatchResult,
    TensorPair,
    WeightPrint,
    fingerprint_weights,
    log_cosine_tail,
    match_weights,
    sketch,
)
from fingerprints.weights import open_weights

# CPU-heavy acceptance tests (the real MiniLM registered and scanned in every form):
# minutes on a loaded 2-core machine, so a longer timeout than the suite's 120 s;
# `-m 'not slow'` leaves them out of the inner loop.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEY = b"weightwatch test_weight_match 01"  # fixed, so which rows are read never changes
MODEL = "minilm"
MAX_FALSE_MATCH = 1e-6
HIDDEN, HEAD_DIM, LAYERS = 384, 384 // lab.MINILM_HEADS, lab.MINILM_LAYERS

Tensors = dict[str, np.ndarray]


# --- suspects ------------------------------------------------------------------------------

@dataclass
class Suspect:
    """A transformed MiniLM as written to disk, and what the tests may check on its tensors.

    `origin` maps a suspect tensor name to the MiniLM name it came from (so a pairing can
    be checked even when names were obfuscated); `rows_moved` names suspect tensors whose
    rows were reordered and `columns_moved` those whose columns were.
    """

    path: Path
    origin: dict[str, str] = field(default_factory=dict)
    rows_moved: set[str] = field(default_factory=set)
    columns_moved: set[str] = field(default_factory=set)


@dataclass
class Scan:
    label: str
    kind: str                      # positive, negative, reparametrised
    result: MatchResult
    bytes_read: int
    size: int
    suspect: Suspect
    per_tensor: list[TensorPair]   # each suspect tensor scanned on its own
    best_cosine: float | None      # nearest any row the scan read came to ours, hit or not

    @property
    def fraction_read(self) -> float:
        return self.bytes_read / self.size


def _matrices(tensors: Tensors) -> list[str]:
    return [n for n, a in tensors.items() if a.ndim == 2]


def _identity(tensors: Tensors) -> dict[str, str]:
    return {n: n for n in tensors}


def _safetensors(dtype: str = "F32") -> Callable[[Tensors, Path], Suspect]:
    def build(m: Tensors, folder: Path) -> Suspect:
        return Suspect(lab.write_safetensors(folder / f"{dtype}.safetensors", m, dtype),
                       _identity(m))
    return build


def _gguf(qtype: str) -> Callable[[Tensors, Path], Suspect]:
    def build(m: Tensors, folder: Path) -> Suspect:
        names = lab.gguf_names(m, "bert")
        return Suspect(lab.write_gguf(folder / f"{qtype}.gguf", m, qtype),
                       {g: n for n, g in names.items() if g is not None})
    return build


def _renamed(m: Tensors, folder: Path) -> Suspect:
    names = lab.obfuscated_names(m, seed=3)
    path = lab.write_safetensors(folder / "renamed.safetensors", lab.obfuscate(m, seed=3))
    return Suspect(path, {new: old for old, new in names.items()})


def _resharded(m: Tensors, folder: Path) -> Suspect:
    return Suspect(lab.write_sharded(folder / "sharded", m, 3), _identity(m))


def _gguf_qk(m: Tensors, folder: Path) -> Suspect:
    # BERT GGUFs are not Q/K-permuted by llama.cpp (arch bert is not in the matcher's
    # permuted list either), so nothing undoes this: rows are found in any order or not at all.
    names = lab.gguf_names(m, "bert")
    path = lab.write_gguf(folder / "qk.gguf", lab.qk_permute(m, lab.MINILM_HEADS), "F16")
    moved = {g for g in names.values() if g and g.endswith((".attn_q.weight", ".attn_k.weight"))}
    return Suspect(path, {g: n for n, g in names.items() if g is not None}, rows_moved=moved)


def _rows_permuted(m: Tensors, folder: Path) -> Suspect:
    # Every matrix, not a few: the scan samples a keyed handful of tensors and stops early,
    # so permuting only some would let it match on untouched ones and prove nothing.
    moved = set(_matrices(m))
    path = lab.write_safetensors(folder / "rows.safetensors", lab.permute_rows(m, moved, seed=4))
    return Suspect(path, _identity(m), rows_moved=moved)


def _ffn_units(m: Tensors, folder: Path) -> Suspect:
    path = lab.write_safetensors(folder / "ffn.safetensors", lab.permute_ffn_units(m, seed=5))
    return Suspect(path, _identity(m),
                   rows_moved={n for n in m if n.endswith("intermediate.dense.weight")},
                   columns_moved={n for n in m if n.endswith(".output.dense.weight")
                                  and ".attention." not in n})


def _noise(fraction: float) -> Callable[[Tensors, Path], Suspect]:
    def build(m: Tensors, folder: Path) -> Suspect:
        return Suspect(lab.write_safetensors(folder / f"noise{fraction}.safetensors",
                                             lab.add_noise(m, fraction, seed=6)), _identity(m))
    return build


def _low_rank(m: Tensors, folder: Path) -> Suspect:
    # token_type_embeddings (2 x 384) cannot take a rank-8 term; it is too short to be
    # fingerprinted anyway, so every fingerprinted matrix is updated.
    only = [n for n in _matrices(m) if min(m[n].shape) >= 8]
    path = lab.write_safetensors(folder / "lowrank.safetensors",
                                 lab.low_rank_update(m, 8, 0.05, seed=7, only=only))
    return Suspect(path, _identity(m))


def _independent(seed: int) -> Callable[[Tensors, Path], Suspect]:
    def build(m: Tensors, folder: Path) -> Suspect:
        return Suspect(lab.write_safetensors(folder / f"independent{seed}.safetensors",
                                             lab.independent_model(m, seed)))
    return build


def _shuffled(seed: int) -> Callable[[Tensors, Path], Suspect]:
    def build(m: Tensors, folder: Path) -> Suspect:
        return Suspect(lab.write_safetensors(folder / f"shuffled{seed}.safetensors",
                                             lab.shuffled_values_model(m, seed)))
    return build


def _llama_shaped(m: Tensors, folder: Path) -> Suspect:
    model = lab.generate_model(2, 256, 704, 1000, seed=8)
    return Suspect(lab.write_gguf(folder / "llama.gguf", lab.as_llama_cpp(model), "Q8_0",
                                  arch="llama"))


def column_scrambled(m: Tensors, seed: int) -> Tensors:
    """Every matrix's columns reordered by one permutation per width; rows and vectors kept.

    Whether this should be a negative: it keeps all of MiniLM's per-row structure that a
    permutation-invariant statistic could see (each row's values, so row norms and moments,
    every row Gram matrix W W^T and so the singular values), yet it no longer computes
    MiniLM's function: the LayerNorm vectors, the rows of the matrices that write into the
    residual stream and the head-concatenation basis of the attention output were not
    permuted along. So it is MiniLM's spectra with other singular vectors, "real structure,
    not MiniLM", and a negative. The *consistent* basis change that does preserve MiniLM's
    function is not a negative: see `reparametrised` and the tests at the end of the file.
    If a later matcher becomes invariant to column order (to close that blind spot) it may
    start matching this case; moving it out of the negatives is then the right fix.
    """
    perms = {w: np.random.default_rng([seed, w]).permutation(w)
             for w in {a.shape[1] for a in m.values() if a.ndim == 2}}
    return {n: (np.asarray(a)[:, perms[a.shape[1]]] if a.ndim == 2 else np.array(a))
            for n, a in m.items()}


def _column_scrambled(m: Tensors, folder: Path) -> Suspect:
    return Suspect(lab.write_safetensors(folder / "columns.safetensors",
                                         column_scrambled(m, seed=9)))


def reparametrised(m: Tensors, seed: int, *, ffn_units: bool, value_dims: bool
                   ) -> tuple[Tensors, np.ndarray]:
    """MiniLM in another basis that computes exactly the same function (up to the order of
    the output features), and that basis's residual permutation P.

    The residual stream is permuted by P: what reads it (embeddings, Q/K/V, FFN up,
    pooler) has its columns permuted, what writes it (attention output, FFN down) its rows,
    LayerNorm vectors their entries; LayerNorm commutes with a permutation. With
    `ffn_units`, each layer's FFN hidden units are shuffled as `lab.permute_ffn_units` does;
    with `value_dims`, each head's value dimensions (value rows with the attention output's
    columns). With both, no matrix keeps MiniLM's column order.
    """
    rng = np.random.default_rng(seed)
    p = rng.permutation(HIDDEN)
    out: Tensors = {}
    for name, array in m.items():
        a = np.asarray(array, dtype=np.float32)
        writes_residual = (name.endswith((".output.dense.weight", ".output.dense.bias"))
                           or "LayerNorm" in name)
        if writes_residual:
            a = a[p]
        elif a.ndim == 2 and a.shape[1] == HIDDEN:
            a = a[:, p]
        out[name] = np.ascontiguousarray(a)
    for i in range(LAYERS):
        layer = f"encoder.layer.{i}."
        if ffn_units:
            q = rng.permutation(4 * HIDDEN)
            for suffix in ("weight", "bias"):
                out[layer + "intermediate.dense." + suffix] = \
                    out[layer + "intermediate.dense." + suffix][q]
            out[layer + "output.dense.weight"] = out[layer + "output.dense.weight"][:, q]
        if value_dims:
            r = np.concatenate([h * HEAD_DIM + rng.permutation(HEAD_DIM)
                                for h in range(lab.MINILM_HEADS)])
            for suffix in ("weight", "bias"):
                out[layer + "attention.self.value." + suffix] = \
                    out[layer + "attention.self.value." + suffix][r]
            out[layer + "attention.output.dense.weight"] = \
                out[layer + "attention.output.dense.weight"][:, r]
    return {n: np.ascontiguousarray(a) for n, a in out.items()}, p


def _reparametrised(ffn_units: bool, value_dims: bool) -> Callable[[Tensors, Path], Suspect]:
    def build(m: Tensors, folder: Path) -> Suspect:
        tensors, _ = reparametrised(m, 10, ffn_units=ffn_units, value_dims=value_dims)
        writers = {n for n in m if n.endswith(".output.dense.weight")}
        columns = set(_matrices(m)) - writers
        if value_dims:
            columns |= {n for n in writers if ".attention." in n}
        if ffn_units:
            columns |= {n for n in writers if ".attention." not in n}
        path = lab.write_safetensors(folder / "reparametrised.safetensors", tensors)
        return Suspect(path, _identity(m), rows_moved=writers, columns_moved=columns)
    return build


POSITIVES: dict[str, Callable[[Tensors, Path], Suspect]] = {
    "F32 copy": _safetensors("F32"),
    "F16 safetensors": _safetensors("F16"),
    "BF16 safetensors": _safetensors("BF16"),
    "GGUF F16": _gguf("F16"),
    "GGUF Q8_0": _gguf("Q8_0"),
    "GGUF Q4_0": _gguf("Q4_0"),
    "renamed (obfuscated, shuffled)": _renamed,
    "resharded (3 shards)": _resharded,
    "GGUF F16, Q/K permuted": _gguf_qk,
    "rows of every matrix permuted": _rows_permuted,
    "FFN units permuted": _ffn_units,
    "noise 1% of spread": _noise(0.01),
    "noise 5% of spread": _noise(0.05),
    "low-rank update r8 x0.05": _low_rank,
}
NEGATIVES: dict[str, Callable[[Tensors, Path], Suspect]] = {
    **{f"independent seed {s}": _independent(s) for s in (1, 2, 3)},
    **{f"shuffled values seed {s}": _shuffled(s) for s in (1, 2, 3)},
    "LLaMA-shaped GGUF Q8_0": _llama_shaped,
    "MiniLM columns scrambled": _column_scrambled,
}
REPARAMETRISED: dict[str, Callable[[Tensors, Path], Suspect]] = {
    "residual basis permuted": _reparametrised(False, False),
    "residual+FFN+value bases permuted": _reparametrised(True, True),
}


class _Recorder:
    """A reader passed through unchanged that keeps the rows a scan asked for, so the
    nearest any of them came to our rows can be shown (MatchResult.similarity covers hits
    only, and a negative has none)."""

    def __init__(self, reader):
        self.tensors = reader.tensors
        self._reader = reader
        self.rows: list[np.ndarray] = []

    def __getattr__(self, name: str):
        return getattr(self._reader, name)  # architecture, head counts: as the reader says

    def read_rows(self, tensor: TensorInfo, rows) -> np.ndarray:
        data = self._reader.read_rows(tensor, rows)
        self.rows.append(data)
        return data

    def best_cosine(self, registered: WeightPrint) -> float | None:
        ours: dict[int, list[np.ndarray]] = {}
        for t in registered.tensors:
            ours.setdefault(t.columns, []).append(t.sketch.astype(np.float32))
        candidates = {width: np.concatenate(sketches) for width, sketches in ours.items()}
        cosines = []
        for data in self.rows:
            projected, valid = sketch(data, registered.key)
            if valid.any() and data.shape[1] in candidates:
                cosines.append(float((projected[valid] @ candidates[data.shape[1]].T).max()))
        return max(cosines, default=None)


def hit_cosine(registered: WeightPrint, columns: int) -> float:
    """The cosine a row needs against our rows of this width to count as a hit."""
    candidates = sum(t.shape[0] for t in registered.tensors if t.columns == columns)
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        p = math.log(candidates) + log_cosine_tail(mid, registered.null_dims)
        low, high = (mid, high) if p > math.log(ROW_ALPHA) else (low, mid)
    return high


class _OneTensor:
    """A reader that shows one tensor of another, so a scan covers it whatever the early
    stop would have skipped."""

    def __init__(self, reader, tensor: TensorInfo):
        self.tensors = [tensor]
        self._reader = reader

    def __getattr__(self, name: str):
        return getattr(self._reader, name)

    def read_rows(self, tensor: TensorInfo, rows) -> np.ndarray:
        return self._reader.read_rows(tensor, rows)


def _open(path: Path):
    """(reader, sources, close) for a suspect file or a sharded checkpoint's index."""
    if path.name.endswith(".index.json"):
        reader = open_sharded(path)
        return reader, reader.sources, reader.close
    source = FileSource(path)
    return open_weights(source), [source], source.close


def _scan(label: str, kind: str, build: Callable[[Tensors, Path], Suspect], m: Tensors,
          folder: Path, registered: WeightPrint) -> Scan:
    suspect = build(m, folder)
    prints = [(MODEL, registered)]
    reader, sources, close = _open(suspect.path)
    recorder = _Recorder(reader)
    try:
        result = match_weights(recorder, prints, max_false_match=MAX_FALSE_MATCH)
        read, size = sum(s.bytes_read for s in sources), sum(s.size for s in sources)
        # More rows read: only after the scan's own bytes are counted.
        per_tensor = []
        if suspect.origin:
            for tensor in reader.tensors:
                if tensor.is_matrix:
                    per_tensor += match_weights(_OneTensor(reader, tensor), prints).pairs
    finally:
        close()
    return Scan(label, kind, result, read, size, suspect, per_tensor,
                recorder.best_cosine(registered))


@pytest.fixture(scope="module")
def minilm() -> Tensors:
    return lab.minilm_tensors()


@pytest.fixture(scope="module")
def registered() -> tuple[WeightPrint, int, int]:
    """MiniLM's fingerprint, and the bytes registering it read out of the file's size."""
    with FileSource(lab.minilm_path()) as source:
        print_ = fingerprint_weights(open_weights(source), KEY)
        return print_, source.bytes_read, source.size


@pytest.fixture(scope="module")
def scans(minilm: Tensors, registered, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, Scan]:
    """Every suspect written once, scanned, and deleted (some are 90 MB)."""
    folder = tmp_path_factory.mktemp("suspects")
    out = {}
    for kind, cases in (("positive", POSITIVES), ("negative", NEGATIVES),
                        ("reparametrised", REPARAMETRISED)):
        for label, build in cases.items():
            out[label] = _scan(label, kind, build, minilm, folder, registered[0])
            for path in folder.rglob("*"):
                if path.is_file():
                    path.unlink()
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(scans: dict[str, Scan], register: tuple[WeightPrint, int, int] | None = None) -> str:
    lines = [f"{'kind':<15}{'suspect':<36}{'verdict':<9}{'score':>6}{'rows':>9}{'tensors':>8}"
             f"{'log10 FMP':>11}{'similarity':>11}{'best cos':>9}{'bytes read':>12}"
             f"{'of file':>9}"]
    for s in scans.values():
        r = s.result
        lines.append(f"{s.kind:<15}{s.label:<36}{r.verdict:<9}{r.score:>6.3f}"
                     f"{f'{r.rows_matched}/{r.rows_compared}':>9}"
                     f"{f'{r.tensors_matched}/{r.tensors_compared}':>8}"
                     f"{r.log10_false_match:>11.1f}{_fmt(r.similarity, '.4f'):>11}"
                     f"{_fmt(s.best_cosine, '.3f'):>9}{s.bytes_read:>12,}{s.fraction_read:>9.3%}")
    for kind in ("positive", "negative"):
        rs = [s.result for s in scans.values() if s.kind == kind]
        best = [s.best_cosine for s in scans.values() if s.kind == kind and s.best_cosine]
        if rs:
            lines.append(f"{kind}s ({len(rs)}): score {min(r.score for r in rs):.3f}.."
                         f"{max(r.score for r in rs):.3f}, log10 FMP "
                         f"{min(r.log10_false_match for r in rs):.1f}.."
                         f"{max(r.log10_false_match for r in rs):.1f}, best cos "
                         + (f"{min(best):.3f}..{max(best):.3f}" if best else "-"))
    if register:
        print_, read, size = register
        lines.append(f"a row is a hit at cosine >= {hit_cosine(print_, HIDDEN):.3f} (width "
                     f"{HIDDEN}) or {hit_cosine(print_, 4 * HIDDEN):.3f} (width {4 * HIDDEN}); "
                     f"null dims {print_.null_dims:.1f}")
        lines.append(f"register: fingerprinting read {read:,} of {size:,} bytes "
                     f"({read / size:.1%}); a scan reads rows, not files")
    return "\n".join(lines)


# --- positives and negatives ---------------------------------------------------------------

@pytest.mark.parametrize("label", list(POSITIVES))
def test_positive_matches(scans: dict[str, Scan], label: str) -> None:
    s = scans[label]
    r = s.result
    assert (r.verdict, r.model) == ("match", MODEL), f"{label}: {r.as_dict()}"
    assert r.false_match_probability <= MAX_FALSE_MATCH, f"{label}: {r.as_dict()}"
    assert s.fraction_read < 0.05, f"{label}: read {s.bytes_read} of {s.size} bytes"


@pytest.mark.parametrize("label", list(NEGATIVES))
def test_negative_does_not_match(scans: dict[str, Scan], label: str) -> None:
    r = scans[label].result
    if label.startswith("LLaMA"):
        # No width in common with MiniLM (256 / 704 against 384 / 1536): nothing to read,
        # and a scan that compared nothing says so instead of `no_match` (issue 14).
        assert (r.verdict, r.tensors_compared) == ("inconclusive", 0), r.as_dict()
        assert r.reason and r.reason.startswith("none of a comparable shape"), r.reason
        return
    assert r.verdict == "no_match" and r.model is None, f"{label}: {r.as_dict()}"


@pytest.mark.parametrize("label", list(POSITIVES))
def test_each_tensor_is_found_where_it_went(scans: dict[str, Scan], registered,
                                            label: str) -> None:
    """Each suspect tensor scanned alone: its sampled rows all match, and match the tensor
    it really came from, whatever it is called now and wherever its rows were moved.
    Tensors whose *columns* moved are left out (see the blind-spot tests at the end).

    Version-3 prints sketch keyed runs of rows, all of them only where the budget covers
    the tensor (MiniLM's 384-row matrices): a partly sketched tensor whose rows were moved
    has only some of the rows read at our positions among those sketched, so it must pair
    with its origin or with nothing, never with another tensor."""
    s = scans[label]
    fingerprinted = {t.name: t.every_row for t in registered[0].tensors}
    expected = {n: o for n, o in s.suspect.origin.items()
                if o in fingerprinted and n not in s.suspect.columns_moved}
    pairs = {p.suspect: p for p in s.per_tensor}

    def found(n: str, o: str) -> bool:
        if n not in pairs:
            return False
        if n in s.suspect.rows_moved and not fingerprinted[o]:
            return pairs[n].ours in (None, canonical_name(o))
        return (pairs[n].ours == canonical_name(o)
                and pairs[n].rows_matched == pairs[n].rows_compared)

    problems = [f"{n} (from {o}): " + (f"{pairs[n].rows_matched}/{pairs[n].rows_compared} "
                                        f"rows, paired with {pairs[n].ours}" if n in pairs
                                        else "not scanned")
                for n, o in expected.items() if not found(n, o)]
    assert expected and not problems, "\n".join(problems)
    # The moved tensors are among those checked, so the check covers what the case is about.
    moved = {n for n in s.suspect.rows_moved if s.suspect.origin[n] in fingerprinted}
    assert moved <= set(expected)


def test_renamed_tensors_are_paired_with_their_origin(scans: dict[str, Scan],
                                                      registered) -> None:
    """The report says which of our tensors an obfuscated one is: `t57` is our blk.3.ffn_up."""
    s = scans["renamed (obfuscated, shuffled)"]
    assert all(n.startswith("t") and n[1:].isdigit() for n in s.suspect.origin)
    matched = [p for p in s.result.pairs if p.rows_matched]
    assert len(matched) >= 3 and all(
        p.ours == canonical_name(s.suspect.origin[p.suspect]) for p in matched), \
        s.result.as_dict()["pairs"]
    # Every fingerprinted tensor, not only the few the early stop left time for.
    fingerprinted = {t.name for t in registered[0].tensors}
    paired = {p.suspect: p.ours for p in s.per_tensor if p.rows_matched}
    assert paired == {n: canonical_name(o) for n, o in s.suspect.origin.items()
                      if o in fingerprinted}


# --- the distributions ---------------------------------------------------------------------

def test_score_distributions_are_far_apart(scans: dict[str, Scan], registered) -> None:
    shown = table(scans, registered)
    print("\n" + shown)
    positives = [s.result for s in scans.values() if s.kind == "positive"]
    negatives = [s.result for s in scans.values() if s.kind == "negative"]
    assert min(r.score for r in positives) > 0.5, shown
    assert max(r.log10_false_match for r in positives) <= math.log10(MAX_FALSE_MATCH), shown
    # Nowhere near the threshold: a negative that came close would be luck, not margin.
    assert max(r.score for r in negatives) < 0.05, shown
    assert min(r.log10_false_match for r in negatives) > -2, shown
    assert all(s.fraction_read < 0.05 for s in scans.values() if s.kind == "positive"), shown


# --- Q/K permutation and canonical names ----------------------------------------------------

@pytest.mark.parametrize("n_head_kv", [None, 2], ids=["MHA", "GQA"])
def test_gguf_qk_permutation_is_undone_at_register_time(tmp_path: Path,
                                                        n_head_kv: int | None) -> None:
    model = lab.generate_model(2, 256, 704, 512, seed=11, n_head_kv=n_head_kv)
    hf_path = lab.write_safetensors(tmp_path / "hf.safetensors", model)
    gguf_path = lab.write_gguf(tmp_path / "llama.gguf", lab.as_llama_cpp(model), "F16",
                               arch="llama")
    with FileSource(hf_path) as hf_source, FileSource(gguf_path) as gguf_source:
        hf = {t.canonical: t for t in fingerprint_weights(open_weights(hf_source), KEY).tensors}
        reader = open_weights(gguf_source)
        heads = dict(zip(("attn_q", "attn_k"), reader.head_counts))
        assert heads == {"attn_q": 4, "attn_k": n_head_kv or 4}
        gguf_print = fingerprint_weights(reader, KEY)
        raw = {t.name: reader.read_rows(t, range(t.rows)) for t in reader.tensors
               if ".attn_q." in t.name or ".attn_k." in t.name}
    ours = {t.canonical: t for t in gguf_print.tensors}
    assert set(ours) == set(hf)
    for name, tensor in ours.items():
        cos = np.einsum("ij,ij->i", tensor.sketch.astype(np.float32),
                        hf[name].sketch.astype(np.float32))
        assert cos.min() > 0.999, f"{name}: row {cos.argmin()} has cosine {cos.min():.4f}"
    for name, rows in raw.items():
        hf_rows = model[next(n for n in model if canonical_name(n) == name)]
        perm = qk_permutation(rows.shape[0], heads[name.split(".")[2]])
        # The file really holds permuted rows (GGUF row j = HF row perm[j]), so the equal
        # sketches above are the permutation undone, not a permutation never applied.
        np.testing.assert_allclose(rows, hf_rows[perm], atol=1e-3)
        naive = np.einsum("ij,ij->i", sketch(rows, KEY)[0], hf[name].sketch.astype(np.float32))
        assert (naive > 0.999).mean() < 0.1, name


# Written out by hand, not derived, so the names code is checked against an outside list.
LAYER_NAMES = [
    # (canonical, Meta .pth, Hugging Face LLaMA), for layer 3
    ("attn_q", "attention.wq", "self_attn.q_proj"),
    ("attn_k", "attention.wk", "self_attn.k_proj"),
    ("attn_v", "attention.wv", "self_attn.v_proj"),
    ("attn_output", "attention.wo", "self_attn.o_proj"),
    ("ffn_gate", "feed_forward.w1", "mlp.gate_proj"),
    ("ffn_down", "feed_forward.w2", "mlp.down_proj"),
    ("ffn_up", "feed_forward.w3", "mlp.up_proj"),
    ("attn_norm", "attention_norm", "input_layernorm"),
    ("ffn_norm", "ffn_norm", "post_attention_layernorm"),
]
CANONICAL = {
    # canonical: (Meta .pth, Hugging Face LLaMA, GGUF)
    **{f"blk.3.{c}.weight": (f"layers.3.{meta}.weight", f"model.layers.3.{hf}.weight",
                             f"blk.3.{c}.weight") for c, meta, hf in LAYER_NAMES},
    "token_embd.weight": ("tok_embeddings.weight", "model.embed_tokens.weight",
                          "token_embd.weight"),
    "output_norm.weight": ("norm.weight", "model.norm.weight", "output_norm.weight"),
    "output.weight": ("output.weight", "lm_head.weight", "output.weight"),
}


@pytest.mark.parametrize("canonical", list(CANONICAL))
def test_llama_namings_share_canonical_names(canonical: str) -> None:
    meta, hf, gguf_name = CANONICAL[canonical]
    assert {canonical_name(n) for n in (meta, hf, gguf_name)} == {canonical}
    # gguf-py's own mapping (what llama.cpp's converter writes) agrees with the table.
    assert lab.gguf_name(hf, "llama", 4) == gguf_name


def test_bert_namings_share_canonical_names(minilm: Tensors) -> None:
    """MiniLM's HF names, with and without BertModel's `bert.` prefix, and the names gguf-py
    gives them in a GGUF, all land on one canonical name per tensor."""
    mapped = lab.gguf_names(minilm, "bert")
    kept = {n: g for n, g in mapped.items() if g is not None}
    assert len(kept) == len(minilm) - 2  # the converter drops the pooler's weight and bias
    wrong = {n: (canonical_name(n), canonical_name("bert." + n), canonical_name(g), g)
             for n, g in kept.items()
             if not canonical_name(n) == canonical_name("bert." + n) == canonical_name(g) == g}
    assert not wrong
    assert canonical_name("encoder.layer.5.attention.self.query.weight") == "blk.5.attn_q.weight"
    assert canonical_name("t17") == "t17"  # unknown names pass through


# --- function-preserving reparametrisations --------------------------------------------------

def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * weight + bias


_erf = np.vectorize(math.erf, otypes=[np.float64])


def bert_hidden_states(t: Tensors, ids: np.ndarray) -> np.ndarray:
    """MiniLM's last hidden states for one sequence (BERT's forward pass, in numpy).

    Only used to compare two parametrisations with each other, so it need not agree with
    transformers to the last digit; it must only use every weight the way BERT does."""
    def linear(name: str, x: np.ndarray) -> np.ndarray:
        return x @ t[name + ".weight"].T.astype(np.float64) + t[name + ".bias"]

    n = len(ids)
    x = (t["embeddings.word_embeddings.weight"][ids]
         + t["embeddings.position_embeddings.weight"][:n]
         + t["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(p + f"attention.self.{part}", x)
                   .reshape(n, lab.MINILM_HEADS, HEAD_DIM).transpose(1, 0, 2)
                   for part in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(HEAD_DIM)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = (weights @ v).transpose(1, 0, 2).reshape(n, HIDDEN)
        x = _layer_norm(linear(p + "attention.output.dense", context) + x,
                        t[p + "attention.output.LayerNorm.weight"],
                        t[p + "attention.output.LayerNorm.bias"])
        h = linear(p + "intermediate.dense", x)
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
        x = _layer_norm(linear(p + "output.dense", h) + x, t[p + "output.LayerNorm.weight"],
                        t[p + "output.LayerNorm.bias"])
    return x


@pytest.mark.parametrize("full", [False, True], ids=["residual", "residual+ffn+value"])
def test_reparametrisations_compute_minilm(minilm: Tensors, full: bool) -> None:
    """The reparametrised models below are MiniLM, not look-alikes: same outputs."""
    tensors, p = reparametrised(minilm, 10, ffn_units=full, value_dims=full)
    ids = np.array([101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 102])
    want = bert_hidden_states(minilm, ids)
    np.testing.assert_allclose(bert_hidden_states(tensors, ids), want[:, p], atol=1e-4)
    if full:
        # Not one of MiniLM's rows is left anywhere, in any position, for the matcher to find.
        for name in _matrices(minilm):
            rows = {row.tobytes() for row in minilm[name]}
            assert not any(row.tobytes() in rows for row in tensors[name]), name


def test_residual_basis_change_is_matched_through_residual_writers(scans: dict[str, Scan],
                                                                   registered) -> None:
    """Permuting the residual stream moves the *rows* of the matrices that write into it
    (attention output, FFN down), which the matcher sees through; every other matrix's
    columns moved and none of them match."""
    s = scans["residual basis permuted"]
    assert (s.result.verdict, s.result.model) == ("match", MODEL), table(scans)
    matched = {p.suspect for p in s.per_tensor if p.rows_matched}
    assert matched <= s.suspect.rows_moved, sorted(matched)
    # Those whose rows are all sketched are found in full; partly sketched ones (MiniLM's
    # FFN down, 384 rows of 1536 columns, past the version-3 budget) where rows land on
    # sketched positions.
    whole = {t.name for t in registered[0].tensors if t.every_row}
    assert {n for n in s.suspect.rows_moved if s.suspect.origin[n] in whole} <= matched


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "blind spot: rows are sketched in the file's column basis, so a function-preserving "
    "permutation of the residual, FFN-unit and per-head value bases (every matrix's columns "
    "move) leaves no row the matcher can recognise"))
def test_full_basis_change_is_matched(scans: dict[str, Scan]) -> None:
    s = scans["residual+FFN+value bases permuted"]
    assert s.result.verdict == "match", f"{s.result.as_dict()}\n{table(scans)}"
