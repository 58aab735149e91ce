"""Acceptance tests of per-recipient watermarks (issue 6) on real and generated weights.

Two models: the real all-MiniLM-L6-v2 (float32, 22M values) and a generated LLaMA-shaped
model (hidden 1024, 3 layers, stored as BF16 as LLM releases are, 46M values). Each has
1,000 recipients whose keys come from one master secret. What issue 6 asks, tested here:

- marked copies of a few recipients, after F16, BF16, GGUF Q8_0, GGUF Q4_0 and noise of 5%
  of each row's std, are attributed to the right recipient with a false-attribution bound
  of at most 1e-9 (one MiniLM copy also through real GGUF / safetensors files read back
  with `open_weights`);
- no copy, and no transform of the unmarked original, is ever pinned on a wrong recipient:
  every wrong key's bound stays >= 1e-3, and the z of all 999 wrong keys on a MiniLM copy
  is printed to show the null is the N(0, 1) the bound assumes;
- the mark moves each tensor by no more RMS than Q8_0 quantisation does (F32 and BF16
  storage, and next to a very large weight, where Q8_0 rounds the rest of a block to 0);
- a marked MiniLM embeds 20 sentences with cosine >= 0.999 to the original's, by a numpy
  forward pass (tests/minilm_numpy.py) first checked against published reference values;
- beyond issue 6: a noisier copy whose true key still proves it beyond doubt is
  attributed (the detector's screen alone could lose it).

Detection uses what the product has: the fingerprint's keyed run of 16 sample rows per
tensor (`fingerprint_weights`) as the originals, and the suspect's same rows. A recipient's
mark is a pure function of (key, tensor, row), so the attribution trials mark and transform
only those rows; the real-file test checks that this gives exactly the rows a whole marked
file gives. Tables are printed (`pytest -s`) and repeated in assertion messages.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import minilm_numpy
import numpy as np
import pytest
import weights_lab as lab

from fingerprints.names import canonical_name
from fingerprints.tensors import FileSource
from fingerprints.watermark import (
    FINALISTS,
    Attribution,
    Candidate,
    Evidence,
    bound,
    detect_marks,
    mark_rows,
    plan_density,
    q8_0_roundtrip,
    recipient_key,
)
from fingerprints.weightprint import WeightPrint, fingerprint_weights
from fingerprints.weights import open_weights

# CPU-heavy acceptance tests (1,000 recipients through five conversions of two models):
# minutes on a loaded 2-core machine, so a longer timeout than the suite's 120 s;
# `-m 'not slow'` leaves them out of the inner loop.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MASTER = b"weightwatch test_watermark_marks master secret 01"
PRINT_KEY = b"weightwatch test_watermark_marks print key 0001"  # fixes the sampled rows
RECIPIENTS = 1000
MAX_BOUND = 1e-9          # issue 6: a right attribution is at least this sure
WRONG_MIN_BOUND = 1e-3    # issue 6: no wrong key ever gets closer than this
NOISE = 0.05              # of each row's std
MIN_COSINE = 0.999
MARK_ROWS_AT_ONCE = 4096  # bounds memory when marking a 30522-row embedding table

Tensors = dict[str, np.ndarray]


# --- models, registries and suspects -------------------------------------------------------

@dataclass
class Trial:
    model: str
    transform: str
    truth: str | None             # the recipient whose copy it is; None: unmarked original
    result: Attribution

    def wrong_z(self) -> list[float]:
        """Full-data z of every wrong recipient the detector scored (its finalists)."""
        return [z for who, z in self.result.scores.items() if who != self.truth]


@dataclass
class Model:
    name: str
    dtype: str                    # the original's stored dtype: the mark's unit
    tensors: Tensors              # HF names, values as stored (float32)
    fingerprint: WeightPrint
    densities: dict[str, float]   # canonical name -> share of elements marked
    registry: list[Candidate]
    picked: list[int]             # registry indices whose copies the trials test
    transforms: list[str]
    trials: list[Trial] = field(default_factory=list)

    def original_rows(self) -> Tensors:
        return {t.name: t.samples for t in self.fingerprint.tensors}

    def marked_rows(self, who: int) -> Tensors:
        key = self.registry[who].key
        return {t.name: mark_rows(t.samples, self.dtype, key, t.canonical, t.sample_index,
                                  self.densities[t.canonical])
                for t in self.fingerprint.tensors}

    def evidence(self, suspect: Tensors) -> list[Evidence]:
        return [Evidence(t.canonical, t.dtype, t.sample_index, t.samples, suspect[t.name])
                for t in self.fingerprint.tensors if t.name in suspect]


def _registry(model: str, densities: dict[str, float]) -> list[Candidate]:
    names = [f"recipient-{i:04d}" for i in range(RECIPIENTS)]
    return [Candidate(n, recipient_key(MASTER, model, n), densities) for n in names]


def _fingerprint(path: Path) -> WeightPrint:
    return fingerprint_weights(open_weights(FileSource(path)), PRINT_KEY)


def _densities(tensors: Tensors, fingerprint: WeightPrint, dtype: str) -> dict[str, float]:
    # Planned on the whole tensor, as the marker does when it writes a copy.
    return {t.canonical: plan_density(tensors[t.name], dtype) for t in fingerprint.tensors}


@pytest.fixture(scope="module")
def minilm() -> Model:
    tensors = lab.minilm_tensors()
    fingerprint = _fingerprint(lab.minilm_path())
    densities = _densities(tensors, fingerprint, "F32")
    return Model("all-MiniLM-L6-v2", "F32", tensors, fingerprint, densities,
                 _registry("all-MiniLM-L6-v2", densities), picked=[0, 1, 317, 642, 999],
                 transforms=["F16", "BF16", "GGUF Q8_0", "GGUF Q4_0", "noise 5%"])


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Model:
    # Stored as BF16 like most LLM releases: marks of one BF16 unit at a planned density
    # below 1, the case F32 MiniLM does not cover; its BF16 copy is the one delivered.
    path = tmp_path_factory.mktemp("generated") / "model.safetensors"
    model = lab.generate_model(3, 1024, 2816, 4096, seed=61)
    lab.write_safetensors(path, model, "BF16")
    tensors = lab.to_dtype_roundtrip(model, "BF16")
    fingerprint = _fingerprint(path)
    densities = _densities(tensors, fingerprint, "BF16")
    return Model("generated-llama-1024x3", "BF16", tensors, fingerprint, densities,
                 _registry("generated-llama-1024x3", densities), picked=[7, 501, 998],
                 transforms=["BF16 (as delivered)", "F16", "GGUF Q8_0", "GGUF Q4_0",
                             "noise 5%"])


@pytest.fixture(scope="module", params=["minilm", "generated"])
def model(request: pytest.FixtureRequest) -> Model:
    return request.getfixturevalue(request.param)


def _row_noise(rows: Tensors, fraction: float, seed: int) -> Tensors:
    out = {}
    for name, r in rows.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        noise = rng.standard_normal(r.shape, dtype=np.float32)
        out[name] = (r + np.float32(fraction) * r.std(axis=1, keepdims=True) * noise
                     ).astype(np.float32)
    return out


# Each takes the suspect's rows (HF names, so GGUF types are the ones llama.cpp's converter
# picks for the whole tensor) and a seed. Q8_0 and Q4_0 blocks lie within a row, so
# quantising the sampled rows alone gives what quantising the whole tensor gives.
TRANSFORMS: dict[str, Callable[[Tensors, int], Tensors]] = {
    "BF16 (as delivered)": lambda rows, seed: rows,
    "F16": lambda rows, seed: lab.to_dtype_roundtrip(rows, "F16"),
    "BF16": lambda rows, seed: lab.to_dtype_roundtrip(rows, "BF16"),
    "GGUF Q8_0": lambda rows, seed: lab.gguf_roundtrip(rows, "Q8_0"),
    "GGUF Q4_0": lambda rows, seed: lab.gguf_roundtrip(rows, "Q4_0"),
    "noise 5%": lambda rows, seed: _row_noise(rows, NOISE, seed),
}


def _trials(model: Model) -> list[Trial]:
    """Every picked recipient's copy and the unmarked original under every transform,
    attributed against all 1,000 recipients (computed once per model)."""
    if model.trials:
        return model.trials
    sources: list[tuple[str | None, Tensors, int]] = [
        (model.registry[i].recipient, model.marked_rows(i), i) for i in model.picked]
    sources.append((None, model.original_rows(), RECIPIENTS))
    for truth, rows, seed in sources:
        for transform in model.transforms:
            suspect = TRANSFORMS[transform](rows, seed)
            result = detect_marks(model.evidence(suspect), model.registry, max_bound=MAX_BOUND)
            model.trials.append(Trial(model.name, transform, truth, result))
    return model.trials


# --- printing ------------------------------------------------------------------------------

def _show(title: str, text: str) -> str:
    out = f"\n== {title} ==\n{text}\n"
    print(out)
    return out


def _fmt_bound(b: float | None) -> str:
    return "-" if b is None else f"{b:.1e}"


def _trial_table(trials: list[Trial]) -> str:
    rows = []
    for t in trials:
        r = t.result
        worst = max(t.wrong_z(), default=float("nan"))
        rows.append([t.truth or "(unmarked original)", t.transform, r.outcome,
                     r.recipient or "-", f"{r.z:.2f}", _fmt_bound(r.bound),
                     f"{worst:.2f}", _fmt_bound(bound(worst, r.recipients)), r.elements])
    return lab.text_table(["copy of", "transform", "outcome", "attributed to", "z", "bound",
                   "best wrong z", "its bound", "elements"], rows)


# --- attribution ---------------------------------------------------------------------------

def _check_attributed(trials: list[Trial], text: str) -> None:
    for t in trials:
        assert t.result.outcome == "marked", f"{t.truth} {t.transform}: not attributed{text}"
        assert t.result.recipient == t.truth, f"{t.truth} {t.transform}: wrong recipient{text}"
        assert t.result.bound <= MAX_BOUND, f"{t.truth} {t.transform}: bound too high{text}"
        assert t.result.recipients == RECIPIENTS


def test_marked_copies_are_attributed_to_their_recipient(model: Model) -> None:
    trials = [t for t in _trials(model) if t.truth is not None]
    text = _show(f"{model.name} ({model.dtype}): copies of {len(model.picked)} of "
                 f"{RECIPIENTS} recipients", _trial_table(trials))
    assert len(trials) == len(model.picked) * len(model.transforms)
    _check_attributed(trials, text)


class Precondition(Exception):
    """Raised where a test's premise (the true key alone is decisive) does not hold."""


def test_a_copy_the_true_key_proves_is_attributed(minilm: Model) -> None:
    """Noise of 30% of each row's std: beyond issue 6's 5%, but the true recipient's z on
    every sampled element still gives a bound far below 1e-9. The detector's screen sees a
    quarter of the rows, where the true z is about half the full one and can be lost
    among 1,000 N(0, 1) scores; when no finalist is attributed, everyone is scored in
    full, so the copy is still attributed."""
    rows = []
    for index in minilm.picked[:3]:
        truth = minilm.registry[index]
        evidence = minilm.evidence(_row_noise(minilm.marked_rows(index), 0.30, index))
        alone = detect_marks(evidence, [truth])
        if bound(alone.z, RECIPIENTS) > MAX_BOUND:
            raise Precondition(f"{truth.recipient}: full z {alone.z:.2f} is not decisive")
        result = detect_marks(evidence, minilm.registry, max_bound=MAX_BOUND)
        rows.append([truth.recipient, result.outcome, result.recipient or "-",
                     f"{result.z:.2f}", f"{alone.z:.2f}", f"{bound(alone.z, RECIPIENTS):.1e}"])
    text = _show(f"{minilm.name}: copies with 30% noise", lab.text_table(
        ["copy of", "outcome", "attributed to", "z", "true recipient's full z",
         "its bound"], rows))
    for r in rows:
        assert r[1] == "marked" and r[2] == r[0], text


def test_no_copy_or_original_is_pinned_on_a_wrong_recipient(model: Model) -> None:
    trials = _trials(model)
    originals = [t for t in trials if t.truth is None]
    text = _show(f"{model.name}: the unmarked original, transformed", _trial_table(originals))
    wrong = np.array([z for t in trials for z in t.wrong_z()])
    worst = float(wrong.max())
    text += _show(f"{model.name}: wrong recipients' full-data z over all {len(trials)} "
                  f"trials (the detector's finalists, so the top of 1000 each time)",
                  f"n={wrong.size} mean={wrong.mean():.2f} max={worst:.2f} "
                  f"bound(max)={bound(worst, RECIPIENTS):.2e}; a bound of {WRONG_MIN_BOUND:g} "
                  f"needs z={math.sqrt(2 * math.log(RECIPIENTS / WRONG_MIN_BOUND)):.2f}")
    for t in originals:
        assert t.result.outcome == "unmarked_original", f"{t.transform}: attributed{text}"
        assert t.result.recipient is None
        assert t.result.bound >= WRONG_MIN_BOUND, f"{t.transform}{text}"
    for t in trials:
        if t.result.runner_up_bound is not None and t.result.runner_up != t.truth:
            assert t.result.runner_up_bound >= WRONG_MIN_BOUND, f"{t.transform}{text}"
    assert bound(worst, RECIPIENTS) >= WRONG_MIN_BOUND, text


def _all_z(evidence: list[Evidence], candidates: list[Candidate]) -> np.ndarray:
    """The full-data z of every candidate. detect_marks scores its FINALISTS best on every
    element, so asked about that many at a time it scores all of them in full."""
    z = []
    for i in range(0, len(candidates), FINALISTS):
        group = candidates[i:i + FINALISTS]
        scores = detect_marks(evidence, group).scores
        assert set(scores) == {c.recipient for c in group}
        z += [scores[c.recipient] for c in group]
    return np.array(z)


def test_null_distribution_of_every_wrong_key(minilm: Model) -> None:
    """The z of all 999 wrong recipients, not only the finalists, on the hardest MiniLM
    copy: another recipient's mark under Q4_0 noise. Also the registry without the true
    recipient, as when a copy's key is missing: it must come out unmarked, not as someone
    else's. (One trial: scoring all keys in full costs ~250 detect_marks calls; the
    benchmark does the same on the generated model.)"""
    truth_index = minilm.picked[2]
    label = f"{minilm.registry[truth_index].recipient}'s copy, GGUF Q4_0"
    suspect = TRANSFORMS["GGUF Q4_0"](minilm.marked_rows(truth_index), truth_index)
    wrong = [c for i, c in enumerate(minilm.registry) if i != truth_index]
    evidence = minilm.evidence(suspect)
    z = _all_z(evidence, wrong)
    without = detect_marks(evidence, wrong, max_bound=MAX_BOUND)
    hist, edges = np.histogram(z, bins=np.arange(-4.5, 5.0, 1.0))
    normal = [z.size * (math.erf(b / math.sqrt(2)) - math.erf(a / math.sqrt(2))) / 2
              for a, b in zip(edges[:-1], edges[1:])]
    text = _show(
        f"{minilm.name}: z of all {z.size} wrong recipients on {label}",
        f"mean={z.mean():+.3f} std={z.std():.3f} min={z.min():.2f} max={z.max():.2f} "
        f"bound(max)={bound(float(z.max()), len(wrong)):.2e} over "
        f"{evidence[0].original.shape[0]}-row runs of {len(evidence)} tensors\n"
        + lab.text_table(["z bin", "count", "N(0,1) expects"],
                 [[f"[{a:+.1f}, {b:+.1f})", h, f"{e:.0f}"]
                  for a, b, h, e in zip(edges[:-1], edges[1:], hist, normal)])
        + f"\nwithout the true recipient: {without.outcome}, best z={without.z:.2f}, "
          f"bound={without.bound:.2e}")
    # 999 nearly independent N(0, 1) draws: mean within ~5 standard errors, std close to 1.
    assert abs(z.mean()) < 0.15, text
    assert 0.85 < z.std() < 1.15, text
    assert bound(float(z.max()), len(wrong)) >= WRONG_MIN_BOUND, text
    assert without.outcome == "unmarked_original" and without.bound >= WRONG_MIN_BOUND, text


# --- whole marked MiniLM: real files, tensor RMS, embeddings -------------------------------

def _mark_whole(tensors: Tensors, dtype: str, key: bytes) -> tuple[Tensors, dict[str, float]]:
    """Every 2-D tensor marked as the recipient's copy would be; vectors as they are."""
    out, densities = {}, {}
    for name, array in tensors.items():
        if array.ndim != 2:
            out[name] = array
            continue
        canonical = canonical_name(name)
        density = densities[canonical] = plan_density(array, dtype)
        parts = [mark_rows(array[s:s + MARK_ROWS_AT_ONCE], dtype, key, canonical,
                           np.arange(s, min(s + MARK_ROWS_AT_ONCE, array.shape[0])), density)
                 for s in range(0, array.shape[0], MARK_ROWS_AT_ONCE)]
        out[name] = np.concatenate(parts)
    return out, densities


@pytest.fixture(scope="module")
def whole(minilm: Model) -> dict[str, tuple[Tensors, Tensors, dict[str, float]]]:
    """Per storage dtype: (original as stored, the first picked recipient's marked copy,
    densities)."""
    key = minilm.registry[minilm.picked[0]].key
    out = {}
    for dtype in ("F32", "BF16"):
        original = (minilm.tensors if dtype == "F32"
                    else lab.to_dtype_roundtrip(minilm.tensors, "BF16"))
        marked, densities = _mark_whole(original, dtype, key)
        out[dtype] = (original, marked, densities)
    return out


def test_real_files_carry_the_same_marks(minilm: Model, whole, tmp_path: Path) -> None:
    """The first picked recipient's whole marked MiniLM written as real files and read back
    by `open_weights`: the sampled rows are exactly the in-memory transform's (so the other
    trials' shortcut is sound) and the copy is attributed to its recipient."""
    who = minilm.picked[0]
    truth = minilm.registry[who].recipient
    _, marked, _ = whole["F32"]
    rows = minilm.marked_rows(who)
    files = {"GGUF Q8_0": lab.write_gguf(tmp_path / "q8_0.gguf", marked, "Q8_0"),
             "GGUF Q4_0": lab.write_gguf(tmp_path / "q4_0.gguf", marked, "Q4_0"),
             "F16": lab.write_safetensors(tmp_path / "f16.safetensors", marked, "F16")}
    results = []
    for transform, path in files.items():
        with FileSource(path) as source:
            reader = open_weights(source)
            by_canonical = {canonical_name(t.name): t for t in reader.tensors}
            suspect = {t.name: reader.read_rows(by_canonical[t.canonical], t.sample_index)
                       for t in minilm.fingerprint.tensors if t.canonical in by_canonical}
        expected = TRANSFORMS[transform](rows, 0)
        for name, got in suspect.items():
            assert np.array_equal(got, expected[name]), f"{transform}: {name} differs"
        result = detect_marks(minilm.evidence(suspect), minilm.registry, max_bound=MAX_BOUND)
        results.append((Trial(minilm.name, f"{transform} file", truth, result), len(suspect)))
    text = _show(f"{minilm.name}: {truth}'s whole marked copy written to disk and read back",
                 _trial_table([t for t, _ in results]) + "\ntensors found: "
                 + ", ".join(f"{t.transform}: {n}" for t, n in results))
    for t, _ in results:
        assert t.result.outcome == "marked" and t.result.recipient == truth, text
        assert t.result.bound <= MAX_BOUND, text
        assert all(bound(z, RECIPIENTS) >= WRONG_MIN_BOUND for z in t.wrong_z()), text


def _rel_rms(delta: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(delta.astype(np.float64) ** 2))
                 / np.sqrt(np.mean(reference.astype(np.float64) ** 2)))


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_mark_moves_each_tensor_less_than_q8_0(whole, dtype: str) -> None:
    original, marked, densities = whole[dtype]
    rows, failures = [], []
    for name, array in original.items():
        if array.ndim != 2:
            continue
        mark = _rel_rms(marked[name] - array, array)
        q8 = _rel_rms(q8_0_roundtrip(array) - array, array)
        # gguf-py's Q8_0 for reference (it divides by the unrounded scale), under a neutral
        # name: by their own names llama.cpp keeps the position embeddings F32.
        ggml = _rel_rms(lab.gguf_roundtrip({"w.weight": array}, "Q8_0")["w.weight"] - array,
                        array)
        rows.append([canonical_name(name), "x".join(map(str, array.shape)),
                     f"{densities[canonical_name(name)]:.4f}", f"{mark:.3e}", f"{q8:.3e}",
                     f"{ggml:.3e}", f"{mark / q8:.3f}"])
        if not mark <= q8:
            failures.append(name)
    ratios = [float(r[-1]) for r in rows]
    text = _show(f"all-MiniLM-L6-v2 stored {dtype}: relative RMS of the mark vs Q8_0, per "
                 f"tensor (ratio range {min(ratios):.3f}..{max(ratios):.3f})",
                 lab.text_table(["tensor", "shape", "density", "mark", "Q8_0", "Q8_0 gguf-py",
                         "mark/Q8_0"], rows))
    assert len(rows) == 40
    assert not failures, f"mark larger than Q8_0 in {failures}{text}"


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_mark_stays_below_q8_0_next_to_a_large_weight(dtype: str) -> None:
    """One weight of 500 standard deviations in a 256x1024 matrix (trained LLMs have such
    'super weights'; the lab's heavy-tailed generator draws one too for some seeds:
    benchmarks/watermark.py's model has 10.75 in a tensor of std 0.022)."""
    rng = np.random.default_rng(7)
    array = rng.normal(0, 0.02, (256, 1024)).astype(np.float32)
    array[7, 100] = 10.0
    if dtype == "BF16":
        array = lab.to_dtype_roundtrip({"w": array}, "BF16")["w"]
    key = recipient_key(MASTER, "outlier", "recipient-0000")
    marked = mark_rows(array, dtype, key, "blk.0.ffn_up.weight", np.arange(256),
                       plan_density(array, dtype))
    mark = _rel_rms(marked - array, array)
    q8 = _rel_rms(q8_0_roundtrip(array) - array, array)
    text = _show(f"one large weight, {dtype}", f"mark {mark:.3e}  Q8_0 {q8:.3e}  "
                                               f"ratio {mark / q8:.3f}")
    assert mark <= q8, text


# --- outputs: a numpy MiniLM, checked, then marked ------------------------------------------

# sentence-transformers' README (all-MiniLM-L6-v2, model.similarity of these three).
PUBLISHED_SIMILARITY = np.array([[1.0000, 0.6660, 0.1046],
                                 [0.6660, 1.0000, 0.1411],
                                 [0.1046, 0.1411, 1.0000]])
# First 8 values of SENTENCES[0] and SENTENCES[17] (the shortest-padded and the longest)
# by sentence-transformers 6.2.0 / torch 2.14.1 on CPU, from this package's model folder.
REFERENCE_VALUES = {
    0: [0.0191958, 0.1200854, 0.1595983, 0.0670659, 0.0500748, -0.0259187, 0.0564682,
        -0.0928577],
    17: [0.0086619, -0.0045179, 0.0046159, 0.0745799, 0.0699886, -0.0179461, -0.0349749,
         -0.0528752],
}
PARAPHRASES = [(3, 4), (5, 6), (7, 8)]
TOPICS = {0: "weather", 1: "weather", 16: "weather", 3: "guitar", 4: "guitar", 5: "stocks",
          6: "stocks", 7: "account", 8: "account"}


@pytest.fixture(scope="module")
def original_embeddings(minilm: Model) -> np.ndarray:
    return minilm_numpy.encode(minilm.tensors)


def test_numpy_minilm_reproduces_the_reference(original_embeddings: np.ndarray,
                                               minilm: Model) -> None:
    e = original_embeddings
    sentences = minilm_numpy.SENTENCES
    similarity = e[:3] @ e[:3].T
    alone = minilm_numpy.encode(minilm.tensors, [sentences[0]])[0]
    topic = [TOPICS.get(i, str(i)) for i in range(len(sentences))]
    unrelated = max(float(e[i] @ e[j]) for i in range(len(e)) for j in range(i)
                    if topic[i] != topic[j])
    paraphrase = min(float(e[i] @ e[j]) for i, j in PARAPHRASES)
    off = max(float(np.abs(e[i, :8] - v).max()) for i, v in REFERENCE_VALUES.items())
    text = _show("numpy all-MiniLM-L6-v2 vs references",
                 f"similarity of the README's three sentences:\n{np.round(similarity, 4)}\n"
                 f"published:\n{PUBLISHED_SIMILARITY}\n"
                 f"max |value - sentence-transformers| over 2x8 values: {off:.1e}\n"
                 f"paraphrases' cosine min {paraphrase:.3f}, unrelated pairs' max {unrelated:.3f}\n"
                 f"a padded sentence vs alone: max |diff| {np.abs(alone - e[0]).max():.1e}")
    assert minilm_numpy.pooling_config()["pooling_mode_mean_tokens"] is True
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert np.abs(similarity - PUBLISHED_SIMILARITY).max() < 2e-4, text
    assert off < 1e-5, text
    assert paraphrase > unrelated + 0.2, text
    assert np.abs(alone - e[0]).max() < 1e-5, text  # the attention mask hides the padding


def test_marked_minilm_embeds_as_the_original(whole, original_embeddings: np.ndarray) -> None:
    rows = []
    for dtype in ("F32", "BF16"):
        original, marked, _ = whole[dtype]
        base = (original_embeddings if dtype == "F32" else minilm_numpy.encode(original))
        c = minilm_numpy.cosines(base, minilm_numpy.encode(marked))
        rows.append([f"marked ({dtype} storage) vs original {dtype}", f"{c.min():.6f}",
                     f"{c.mean():.6f}", int(c.argmin())])
    # For scale: what Q8_0 quantisation alone does to the F32 original.
    q8 = {n: q8_0_roundtrip(a) if a.ndim == 2 else a for n, a in whole["F32"][0].items()}
    c = minilm_numpy.cosines(original_embeddings, minilm_numpy.encode(q8))
    rows.append(["Q8_0-quantised original vs original (F32)", f"{c.min():.6f}",
                 f"{c.mean():.6f}", int(c.argmin())])
    text = _show(f"embedding cosine over {len(minilm_numpy.SENTENCES)} sentences",
                 lab.text_table(["model", "min", "mean", "worst sentence"], rows))
    for r in rows[:2]:
        assert float(r[1]) >= MIN_COSINE, text
