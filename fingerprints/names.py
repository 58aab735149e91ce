"""Canonical tensor names across Meta .pth, Hugging Face and GGUF naming, and llama.cpp's
Q/K row permutation.

The same weight matrix is `layers.3.attention.wq.weight` in Meta's consolidated
checkpoints, `model.layers.3.self_attn.q_proj.weight` on a model hub and `blk.3.attn_q.weight`
in a GGUF file. Matching never relies on names (a leaker can rename everything), but a
report that says "their `blk.3.attn_q` is our layer 3 query" is what an analyst needs, and
the fingerprint stores rows in one canonical order. llama.cpp's names are the canonical
ones: they are already the common denominator across architectures.

llama.cpp's converter (convert_hf_to_gguf.py, `LlamaModel.permute`) reorders the rows of
the query and key matrices of LLaMA-family models from Hugging Face's rotary layout back to
Meta's interleaved one: per head, the two halves of its rows are interleaved. The function
here gives that row order so a GGUF tensor's rows can be put back in Hugging Face order.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["canonical_name", "qk_permutation", "is_query_or_key"]

_LAYER = r"(?P<i>\d+)"

# (pattern, canonical template) tried in order; the first match wins. Patterns see the
# name with its `.weight`/`.bias` suffix removed and common wrapper prefixes stripped.
_RULES: list[tuple[re.Pattern[str], str]] = [(re.compile(p), t) for p, t in [
    # Meta consolidated .pth (LLaMA 1-3)
    (rf"^layers\.{_LAYER}\.attention\.wq$", "blk.{i}.attn_q"),
    (rf"^layers\.{_LAYER}\.attention\.wk$", "blk.{i}.attn_k"),
    (rf"^layers\.{_LAYER}\.attention\.wv$", "blk.{i}.attn_v"),
    (rf"^layers\.{_LAYER}\.attention\.wo$", "blk.{i}.attn_output"),
    (rf"^layers\.{_LAYER}\.feed_forward\.w1$", "blk.{i}.ffn_gate"),
    (rf"^layers\.{_LAYER}\.feed_forward\.w2$", "blk.{i}.ffn_down"),
    (rf"^layers\.{_LAYER}\.feed_forward\.w3$", "blk.{i}.ffn_up"),
    (rf"^layers\.{_LAYER}\.attention_norm$", "blk.{i}.attn_norm"),
    (rf"^layers\.{_LAYER}\.ffn_norm$", "blk.{i}.ffn_norm"),
    (r"^tok_embeddings$", "token_embd"),
    (r"^norm$", "output_norm"),
    (r"^output$", "output"),
    # Hugging Face LLaMA, Mistral, Qwen and relatives
    (rf"^layers\.{_LAYER}\.self_attn\.q_proj$", "blk.{i}.attn_q"),
    (rf"^layers\.{_LAYER}\.self_attn\.k_proj$", "blk.{i}.attn_k"),
    (rf"^layers\.{_LAYER}\.self_attn\.v_proj$", "blk.{i}.attn_v"),
    (rf"^layers\.{_LAYER}\.self_attn\.o_proj$", "blk.{i}.attn_output"),
    (rf"^layers\.{_LAYER}\.mlp\.gate_proj$", "blk.{i}.ffn_gate"),
    (rf"^layers\.{_LAYER}\.mlp\.up_proj$", "blk.{i}.ffn_up"),
    (rf"^layers\.{_LAYER}\.mlp\.down_proj$", "blk.{i}.ffn_down"),
    (rf"^layers\.{_LAYER}\.input_layernorm$", "blk.{i}.attn_norm"),
    (rf"^layers\.{_LAYER}\.post_attention_layernorm$", "blk.{i}.ffn_norm"),
    (r"^embed_tokens$", "token_embd"),
    (r"^lm_head$", "output"),
    # Hugging Face BERT family (all-MiniLM among them)
    (rf"^encoder\.layer\.{_LAYER}\.attention\.self\.query$", "blk.{i}.attn_q"),
    (rf"^encoder\.layer\.{_LAYER}\.attention\.self\.key$", "blk.{i}.attn_k"),
    (rf"^encoder\.layer\.{_LAYER}\.attention\.self\.value$", "blk.{i}.attn_v"),
    (rf"^encoder\.layer\.{_LAYER}\.attention\.output\.dense$", "blk.{i}.attn_output"),
    (rf"^encoder\.layer\.{_LAYER}\.attention\.output\.LayerNorm$", "blk.{i}.attn_output_norm"),
    (rf"^encoder\.layer\.{_LAYER}\.intermediate\.dense$", "blk.{i}.ffn_up"),
    (rf"^encoder\.layer\.{_LAYER}\.output\.dense$", "blk.{i}.ffn_down"),
    (rf"^encoder\.layer\.{_LAYER}\.output\.LayerNorm$", "blk.{i}.layer_output_norm"),
    (r"^embeddings\.word_embeddings$", "token_embd"),
    (r"^embeddings\.position_embeddings$", "position_embd"),
    (r"^embeddings\.token_type_embeddings$", "token_types"),
    (r"^embeddings\.LayerNorm$", "token_embd_norm"),
    (r"^pooler\.dense$", "pooler"),
]]
_PREFIXES = ("module.", "model.", "transformer.", "bert.", "base_model.", "language_model.")
_GGUF = re.compile(r"^(blk\.\d+\.[a-z_]+|token_embd|token_embd_norm|position_embd|token_types"
                   r"|output|output_norm|rope_freqs)$")


def canonical_name(name: str) -> str:
    """The llama.cpp-style name of a tensor given under any of the common namings, with its
    `.weight` or `.bias` suffix kept; a name no rule knows is returned unchanged."""
    base, dot, suffix = name.rpartition(".")
    if suffix not in ("weight", "bias"):
        base, dot, suffix = name, "", ""
    stem = base
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if stem.startswith(prefix):
                stem, changed = stem[len(prefix):], True
    if _GGUF.match(stem):
        return stem + dot + suffix
    for pattern, template in _RULES:
        m = pattern.match(stem)
        if m:
            return template.format(**m.groupdict()) + dot + suffix
    return name


def is_query_or_key(canonical: str) -> bool:
    """Whether llama.cpp permutes this tensor's rows when writing a LLaMA-family GGUF."""
    return re.match(r"^blk\.\d+\.attn_[qk]\.(weight|bias)$", canonical) is not None


def qk_permutation(rows: int, heads: int) -> np.ndarray:
    """Row order llama.cpp writes for a query or key matrix of `rows` rows in `heads` heads:
    GGUF row j holds Hugging Face row `perm[j]`. So `hf = gguf[argsort(perm)]`, and the
    Hugging Face index of GGUF row j is `perm[j]`. ValueError if rows do not split into
    heads of even size (then the tensor was not permuted this way)."""
    if heads <= 0 or rows % heads or (rows // heads) % 2:
        raise ValueError(f"{rows} rows do not split into {heads} heads of an even size")
    half = rows // heads // 2
    # The converter's reshape(heads, 2, half, ...).swapaxes(1, 2): within a head, GGUF row
    # 2*r + s is Hugging Face row s*half + r.
    return np.arange(rows).reshape(heads, 2, half).swapaxes(1, 2).reshape(rows)
