"""What do per-recipient watermarks cost to detect, and what do they do to a model?

On the real all-MiniLM-L6-v2 (F32) and a generated LLaMA-shaped model stored as BF16
(tests/weights_lab.py; --hidden/--layers/--intermediate/--vocab), both fingerprinted with
`fingerprint_weights` so detection sees what the product keeps (a keyed run of 16 rows per
tensor), this prints:

(a) detection time with 1,000 and 10,000 registered recipients (--recipients) on a
    recipient's GGUF Q4_0 copy, with the number of elements compared and the outcome,
    against references measured in the same run: reading the sampled rows from the model
    file (page-cached) and one numpy forward pass of MiniLM over 20 sentences. Plus the z
    of every wrong recipient on the generated model's original with noise (the null).
(b) the effect on outputs: cosine of marked vs original MiniLM sentence embeddings
    (min / mean over 20 sentences) for F32 marks and BF16 marks, against Q8_0 and Q4_0
    quantisation of the original; and the time to mark a whole copy against writing it.
(c) per tensor, the relative RMS of the mark against Q8_0 quantisation's (F32 and BF16
    storage of MiniLM, BF16 of the generated model).

    python benchmarks/watermark.py
    python benchmarks/watermark.py --recipients 1000,10000,30000 --layers 4

Timings are the best of --repeat runs (default 3), with one BLAS thread. Nothing is
asserted here: tests/test_watermark_marks.py holds the pass/fail checks.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One BLAS thread, set before numpy loads: OpenBLAS threads spin, so on two shared cores the
# forward-pass reference swings tenfold; detection itself is single-threaded numpy anyway.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The lab and the numpy MiniLM live with the tests (test support, not shipped code).
sys.path.insert(0, str(ROOT / "tests"))

import minilm_numpy  # noqa: E402
import weights_lab as lab  # noqa: E402

from fingerprints.names import canonical_name  # noqa: E402
from fingerprints.tensors import FileSource  # noqa: E402
from fingerprints.watermark import (  # noqa: E402
    FINALISTS,
    Candidate,
    Evidence,
    detect_marks,
    mark_rows,
    plan_density,
    q8_0_roundtrip,
    recipient_key,
)
from fingerprints.weightprint import WeightPrint, fingerprint_weights  # noqa: E402
from fingerprints.weights import open_weights  # noqa: E402

MASTER = b"weightwatch benchmarks/watermark.py master secret"
PRINT_KEY = b"weightwatch benchmarks/watermark.py print key 01"
SEED = 20261127
ROWS_AT_ONCE = 4096

Tensors = dict[str, np.ndarray]


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of `repeat` runs (noise on a shared machine only ever adds time)."""
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


class Subject:
    """A model file, its fingerprint, its stored values and the planned densities."""

    def __init__(self, name: str, path: Path, tensors: Tensors, dtype: str):
        self.name, self.path, self.tensors, self.dtype = name, path, tensors, dtype
        self.fingerprint: WeightPrint = fingerprint_weights(open_weights(FileSource(path)),
                                                            PRINT_KEY)
        # Planned on whole tensors, as the marker does when it writes a copy.
        self.densities = {t.canonical: plan_density(tensors[t.name], dtype)
                          for t in self.fingerprint.tensors}

    def registry(self, n: int) -> list[Candidate]:
        return [Candidate(f"recipient-{i:05d}", recipient_key(MASTER, self.name,
                                                               f"recipient-{i:05d}"),
                          self.densities) for i in range(n)]

    def marked_rows(self, key: bytes) -> Tensors:
        return {t.name: mark_rows(t.samples, self.dtype, key, t.canonical, t.sample_index,
                                  self.densities[t.canonical])
                for t in self.fingerprint.tensors}

    def evidence(self, suspect: Tensors) -> list[Evidence]:
        return [Evidence(t.canonical, t.dtype, t.sample_index, t.samples, suspect[t.name])
                for t in self.fingerprint.tensors]

    def read_samples(self) -> int:
        """What a scan reads for detection: each fingerprinted tensor's run of rows."""
        total = 0
        with FileSource(self.path) as source:
            reader = open_weights(source)
            by_name = {t.name: t for t in reader.tensors}
            for t in self.fingerprint.tensors:
                total += reader.read_rows(by_name[t.name], t.sample_index).size
        return total


def mark_whole(tensors: Tensors, dtype: str, key: bytes) -> Tensors:
    out = {}
    for name, array in tensors.items():
        if array.ndim != 2:
            out[name] = array
            continue
        canonical = canonical_name(name)
        density = plan_density(array, dtype)
        out[name] = np.concatenate([
            mark_rows(array[s:s + ROWS_AT_ONCE], dtype, key, canonical,
                      np.arange(s, min(s + ROWS_AT_ONCE, array.shape[0])), density)
            for s in range(0, array.shape[0], ROWS_AT_ONCE)])
    return out


def rel_rms(delta: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(delta.astype(np.float64) ** 2))
                 / np.sqrt(np.mean(reference.astype(np.float64) ** 2)))


def row_noise(rows: Tensors, fraction: float, seed: int) -> Tensors:
    out = {}
    for name, r in rows.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        out[name] = (r + np.float32(fraction) * r.std(axis=1, keepdims=True)
                     * rng.standard_normal(r.shape, dtype=np.float32)).astype(np.float32)
    return out


# --- (a) detection ---------------------------------------------------------------------------

def detection(subjects: list[Subject], counts: list[int], repeat: int, forward: float) -> None:
    print("\n(a) detection time: a recipient's GGUF Q4_0 copy against N registered recipients")
    rows = []
    for subject in subjects:
        read, elements = best_of(repeat, subject.read_samples)
        registry = subject.registry(max(counts))
        truth = registry[len(registry) // 3]
        suspect = lab.gguf_roundtrip(subject.marked_rows(truth.key), "Q4_0")
        evidence = subject.evidence(suspect)
        rows.append([subject.name, "read sampled rows (reference)", "-", elements,
                     len(evidence), f"{read * 1e3:.1f}", "1.0", f"{read / forward:.2f}",
                     "", "", ""])
        for n in counts:
            keys, candidates = best_of(1, lambda: subject.registry(n))
            candidates[len(candidates) // 3] = truth  # the copy's recipient is registered
            seconds, result = best_of(repeat, lambda: detect_marks(evidence, candidates))
            rows.append([subject.name, f"detect_marks, {n:,} recipients", f"{keys:.2f}",
                         result.elements, result.tensors, f"{seconds * 1e3:.0f}",
                         f"{seconds / read:.0f}", f"{seconds / forward:.2f}",
                         result.outcome if result.recipient in (None, truth.recipient)
                         else f"WRONG {result.recipient}",
                         f"{result.z:.2f}", f"{result.bound:.1e}"])
    print(lab.text_table(["model", "step", "keys s", "elements", "tensors", "ms", "x read",
                 "x forward", "outcome", "z", "bound"], rows))
    print(f"reference: one numpy MiniLM forward pass over {len(minilm_numpy.SENTENCES)} "
          f"sentences = {forward * 1e3:.0f} ms; 'keys s' = deriving the N HMAC keys")


def null_of_all(subject: Subject, n: int) -> None:
    """Every registered recipient's full z on the unmarked original with 5% noise: detect
    scores only FINALISTS on every element, so ask about that many at a time."""
    evidence = subject.evidence(row_noise({t.name: t.samples
                                           for t in subject.fingerprint.tensors}, 0.05, SEED))
    registry = subject.registry(n)
    start = time.perf_counter()
    z = []
    for i in range(0, n, FINALISTS):
        group = registry[i:i + FINALISTS]
        scores = detect_marks(evidence, group).scores
        z += [scores[c.recipient] for c in group]
    seconds = time.perf_counter() - start
    z = np.array(z)
    print(f"\nnull on {subject.name} (unmarked original, noise 5%): z of all {n} recipients: "
          f"mean {z.mean():+.3f}, std {z.std():.3f}, max {z.max():.2f} "
          f"(N(0,1) max of {n} ~ {math.sqrt(2 * math.log(n)):.1f}); {seconds:.1f} s")


# --- (b) outputs -----------------------------------------------------------------------------

def outputs(minilm: Tensors, repeat: int) -> tuple[float, dict[str, Tensors]]:
    print("\n(b) MiniLM sentence embeddings, cosine with the original's over "
          f"{len(minilm_numpy.SENTENCES)} sentences")
    key = recipient_key(MASTER, "all-MiniLM-L6-v2", "recipient-00000")
    forward, base = best_of(repeat, lambda: minilm_numpy.encode(minilm))
    bf16 = lab.to_dtype_roundtrip(minilm, "BF16")
    mark_time, marked = best_of(1, lambda: mark_whole(minilm, "F32", key))
    marked_bf16 = mark_whole(bf16, "BF16", key)
    with tempfile.TemporaryDirectory() as tmp:
        write_time, _ = best_of(1, lambda: lab.write_safetensors(
            Path(tmp) / "copy.safetensors", marked))
    variants = [
        ("F32 mark", marked, base),
        ("BF16 mark (vs the BF16 original)", marked_bf16, minilm_numpy.encode(bf16)),
        ("Q8_0 quantisation, unmarked (llama.cpp)", lab.gguf_roundtrip(minilm, "Q8_0"), base),
        ("Q4_0 quantisation, unmarked (llama.cpp)", lab.gguf_roundtrip(minilm, "Q4_0"), base),
        ("F32 mark, then Q8_0", lab.gguf_roundtrip(marked, "Q8_0"), base),
    ]
    results = [(label, minilm_numpy.cosines(reference, minilm_numpy.encode(tensors)))
               for label, tensors, reference in variants]
    q8_loss = 1 - float(results[2][1].mean())
    print(lab.text_table(["model", "min cosine", "mean cosine", "1-mean vs Q8_0's"],
                [[label, f"{c.min():.6f}", f"{c.mean():.6f}",
                  f"{(1 - c.mean()) / q8_loss:.2f}"] for label, c in results]))
    print(f"marking a whole MiniLM copy (22.6M values, F32): {mark_time:.2f} s; writing it "
          f"as safetensors: {write_time:.2f} s (x{mark_time / write_time:.1f})")
    return forward, {"F32": marked, "BF16": marked_bf16, "BF16 original": bf16}


# --- (c) tensor RMS --------------------------------------------------------------------------

def rms(label: str, original: Tensors, marked: Tensors, verbose: bool) -> None:
    rows, ratios = [], []
    for name, array in original.items():
        if array.ndim != 2 or array.shape[1] % 32:
            continue
        mark = rel_rms(marked[name] - array, array)
        q8 = rel_rms(q8_0_roundtrip(array) - array, array)
        ratios.append(mark / q8)
        rows.append([canonical_name(name), "x".join(map(str, array.shape)), f"{mark:.3e}",
                     f"{q8:.3e}", f"{mark / q8:.3f}"])
    print(f"\n(c) {label}: relative RMS of the mark vs Q8_0's, {len(rows)} tensors, ratio "
          f"min {min(ratios):.3f} median {float(np.median(ratios)):.3f} max {max(ratios):.3f}")
    if verbose:
        print(lab.text_table(["tensor", "shape", "mark", "Q8_0", "mark/Q8_0"], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", default="1000,10000",
                        help="registry sizes to time detection with (comma-separated)")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--null", type=int, default=1000,
                        help="recipients in the generated model's null (0: skip)")
    args = parser.parse_args()
    counts = [int(n) for n in args.recipients.split(",")]

    minilm = lab.minilm_tensors()
    forward, marked = outputs(minilm, args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        generated = lab.generate_model(args.layers, args.hidden, args.intermediate, args.vocab,
                                       seed=SEED)
        path = lab.write_safetensors(Path(tmp) / "generated.safetensors", generated, "BF16")
        generated = lab.to_dtype_roundtrip(generated, "BF16")
        name = f"generated-llama-{args.hidden}x{args.layers}"
        subjects = [Subject("all-MiniLM-L6-v2", lab.minilm_path(), minilm, "F32"),
                    Subject(name, path, generated, "BF16")]
        detection(subjects, counts, args.repeat, forward)
        if args.null:
            null_of_all(subjects[1], args.null)
        gen_marked = mark_whole(generated, "BF16",
                                recipient_key(MASTER, name, "recipient-00000"))

    rms("all-MiniLM-L6-v2 stored F32, F32 mark", minilm, marked["F32"], verbose=True)
    rms("all-MiniLM-L6-v2 stored BF16, BF16 mark", marked["BF16 original"], marked["BF16"],
        verbose=False)
    rms(f"{name} stored BF16, BF16 mark", generated, gen_marked, verbose=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
