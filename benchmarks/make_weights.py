"""Write a LLaMA-shaped model of about --size-gb gigabytes, for benchmarks that scan weights.

The shapes and values come from tests/weights_lab.py (`config_for_size`, `stream_*`), so the
same seed gives the same numbers as the lab's in-memory `generate_model` of that config,
and a test can hold the small version of what a benchmark scans. Tensors are generated and
written one chunk (safetensors) or one tensor (GGUF) at a time: memory stays far below the
file's size.

    python benchmarks/make_weights.py --size-gb 1.0 --format safetensors-bf16 --out model.safetensors
    python benchmarks/make_weights.py --size-gb 1.0 --format gguf-q4_0 --out model.gguf --seed 7

GGUF files are what llama.cpp's converter makes of the same model: GGUF tensor names,
query/key rows permuted, vectors kept F32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The lab lives with the tests (it is test support, not shipped code).
sys.path.insert(0, str(ROOT / "tests"))

import weights_lab as lab  # noqa: E402

# format -> (container, dtype, bytes a value takes, for sizing the model)
FORMATS: dict[str, tuple[str, str, float]] = {
    "safetensors-f32": ("safetensors", "F32", 4),
    "safetensors-f16": ("safetensors", "F16", 2),
    "safetensors-bf16": ("safetensors", "BF16", 2),
    "gguf-f16": ("gguf", "F16", 2),
    "gguf-q8_0": ("gguf", "Q8_0", 34 / 32),
    "gguf-q4_0": ("gguf", "Q4_0", 18 / 32),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, required=True,
                        help="approximate file size in GB (10^9 bytes)")
    parser.add_argument("--format", choices=sorted(FORMATS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size_gb <= 0 or args.seed < 0:
        parser.error("--size-gb must be positive and --seed non-negative")

    container, dtype, per_value = FORMATS[args.format]
    config = lab.config_for_size(args.size_gb * 1e9, per_value)
    print(f"{args.format}: {config.n_layers} layers, hidden {config.hidden}, intermediate "
          f"{config.intermediate}, vocab {config.vocab}, heads {config.n_head}/"
          f"{config.n_head_kv}, {config.n_values / 1e6:.0f}M values", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if container == "safetensors":
        lab.stream_safetensors(args.out, config, args.seed, dtype)
    else:
        lab.stream_gguf(args.out, config, args.seed, dtype)
    elapsed = time.perf_counter() - start
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {size:,} bytes ({size / 1e9:.3f} GB) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
