"""What a leaker's conversion makes of the demo release: a GGUF file as llama.cpp's
converter writes it (GGUF names, the query and key rows permuted, weight matrices quantised
to Q8_0, vectors kept F32), written here by hand with numpy so the demo needs no gguf
package. Its bytes share no digest with the release; only the tensor fingerprints know it.
"""

from __future__ import annotations

import struct

import numpy as np

from fingerprints.dequant import quantize_q8_0
from fingerprints.names import canonical_name, is_query_or_key, qk_permutation

GGUF_VERSION = 3
ALIGNMENT = 32
_F32, _Q8_0 = 0, 8
_KV_UINT32, _KV_STRING = 4, 8


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def gguf_q8_0(tensors: list[tuple[str, np.ndarray]], *, name: str, heads: int,
              kv_heads: int) -> bytes:
    """A LLaMA-architecture GGUF v3 of `tensors` (Hugging Face names), as llama.cpp's
    converter lays it out, with Q8_0 weight matrices."""
    infos, blobs, offset = [], [], 0
    for hf_name, array in tensors:
        gguf_name = canonical_name(hf_name)
        array = np.asarray(array, dtype=np.float32)
        if is_query_or_key(gguf_name):
            n = heads if ".attn_q." in gguf_name else kv_heads
            array = array[qk_permutation(array.shape[0], n)]
        quantise = array.ndim == 2 and array.shape[1] % 32 == 0
        data = quantize_q8_0(array) if quantise else array.astype("<f4").tobytes()
        infos.append(_string(gguf_name) + struct.pack("<I", array.ndim)
                     + struct.pack(f"<{array.ndim}Q", *reversed(array.shape))
                     + struct.pack("<IQ", _Q8_0 if quantise else _F32, offset))
        padded = data + bytes(-len(data) % ALIGNMENT)
        blobs.append(padded)
        offset += len(padded)
    layers = 1 + max(int(n.split(".")[1]) for n in map(canonical_name, dict(tensors))
                     if n.startswith("blk."))
    kv = [("general.architecture", _KV_STRING, _string("llama")),
          ("general.name", _KV_STRING, _string(name)),
          ("llama.block_count", _KV_UINT32, struct.pack("<I", layers)),
          ("llama.attention.head_count", _KV_UINT32, struct.pack("<I", heads)),
          ("llama.attention.head_count_kv", _KV_UINT32, struct.pack("<I", kv_heads))]
    head = b"GGUF" + struct.pack("<IQQ", GGUF_VERSION, len(infos), len(kv))
    head += b"".join(_string(key) + struct.pack("<I", kind) + value for key, kind, value in kv)
    head += b"".join(infos)
    head += bytes(-len(head) % ALIGNMENT)
    return head + b"".join(blobs)
