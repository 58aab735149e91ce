"""Limits every reader shares, and the cheap counts that enforce them before parsing.

A suspect file is hostile: its header may declare a million tensors or hold millions of
tiny values whose Python objects cost ten times the bytes that encode them. Each reader
checks a declared count against the bytes left in the file first, then against the fixed
limits here, which are set from real files with a wide margin, so a hostile file is
refused in bounded time and memory with one line while every real file still reads.
"""

from __future__ import annotations

__all__ = ["MAX_TENSORS_PER_FILE", "json_values_bound"]

# The largest real single weight files are per-expert MoE checkpoints: 256 experts x 61
# layers x 3 projections is ~47k tensors (twice that with FP8 scale tensors); dense models
# have a few thousand. 2^17 leaves room for those and keeps a hostile header to ~100 MB of
# TensorInfo objects at the very worst (safetensors, GGUF, ONNX initializers, PyTorch
# tensors, zip members of a .npz or checkpoint).
MAX_TENSORS_PER_FILE = 1 << 17


def json_values_bound(raw: bytes | bytearray) -> int:
    """An upper bound on the number of values `json.loads(raw)` would build, in C time.

    Every value but the root is either the first in its array or object (at most one per
    `[` or `{`) or follows a `,`. These bytes inside strings only make the bound larger, so
    a file it refuses really is large or full of punctuation; three `bytes.count` calls over
    tens of MB take milliseconds, where building the objects would take seconds and GB.
    """
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{") + 1
