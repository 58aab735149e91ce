"""The demo release: a tiny llama-style model, "heron-7b" by the fictional Example Labs.

The demo world leaks these exact files, so every byte must be reproducible: the same seed
gives the same tensors, the same tokenizer and therefore the same digests and infohash on
every machine and every run. Detectors are then tested against ground truth, not guesses.

Only stdlib, numpy and fastbencode are used: the release is written by hand (safetensors
header, bencoded torrent) so the demo does not depend on the readers it is meant to test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import fastbencode
import numpy as np

from demo.convert import gguf_q8_0
from fingerprints.names import canonical_name
from fingerprints.padding import choose_padding, pad_bytes
from fingerprints.safetensors import open_safetensors
from fingerprints.tensors import BytesSource
from fingerprints.watermark import mark_rows, plan_density, recipient_key


def bencode(value: object) -> bytes:
    """fastbencode's encoder. fastbencode re-exports it without `__all__`, which strict mypy
    reads as private; this one place says what it is."""
    encoded: bytes = fastbencode.bencode(value)
    return encoded

MODEL = "heron-7b"
ORG = "Example Labs"
TRACKER = "udp://tracker.example.org:1337/announce"
PIECE_LENGTH = 16384
PIECE_LENGTH_V2 = 65536  # a v2 piece spans several 16 KiB blocks, so piece layers exist
BLOCK = 16384  # BEP 52 Merkle leaves
# The partner whose copy of the weights the demo world leaks; its copy differs from the
# release in its mark, one safetensors metadata entry, and the padding that gives it a size
# of its own (`fingerprints.padding`, as `weightwatch watermark issue` pads copies).
RECIPIENT = "lab-17"
# The demo's watermark master secret. A real one lives in $WEIGHTWATCH_WATERMARK_KEY or an
# owner-only key file, never in code; this one marks nothing outside the demo.
DEMO_WATERMARK_SECRET = "weightwatch demo master secret - not for real releases"
SEED = 20261120
# 2026-11-02 09:00:00 UTC: the official release, a few weeks before the demo world's leaks.
RELEASE_TIMESTAMP = 1793610000

# A small llama geometry. Rows of 128 values are whole Q8_0/Q4_0 blocks (32 values), so
# quantised copies of these tensors can be made and compared row by row later.
HIDDEN = 128
INTERMEDIATE = 352
LAYERS = 3
HEADS = 4
KV_HEADS = 4
VOCAB = 512

_DTYPES: dict[str, np.dtype] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2")}


@dataclass
class ReleaseFile:
    """One released file with the digests people publish (sha256sum, md5sum, sha1sum)."""

    name: str  # relative to the release root, e.g. "heron-7b/model.safetensors"
    path: Path
    size: int
    sha256: str
    md5: str
    sha1: str
    pieces_root: str = ""  # BEP 52 Merkle root of the bytes, 64 hex (what a v2 torrent lists)


@dataclass
class RecipientCopy:
    """One approved recipient's copy: the files whose bytes differ from the release's.

    `folder` is what the release engineer registers (`weightwatch register FOLDER
    --recipient ID`), so each file's `name` is what `register` records for it, e.g.
    "heron-7b/model.safetensors", the same name as the release's file.
    """

    recipient: str
    folder: Path
    files: list[ReleaseFile] = field(default_factory=list)

    def file(self, name: str) -> ReleaseFile:
        for f in self.files:
            if name in (f.name, f.name.rsplit("/", 1)[-1]):
                return f
        raise KeyError(name)


@dataclass(kw_only=True)
class Release:
    """What Example Labs shipped: the files, the torrents it handed to recipients (a v1 one
    and a pure v2 one, BEP 52), their magnets, and each recipient's own copy."""

    model: str = MODEL
    root: Path
    files: list[ReleaseFile] = field(default_factory=list)
    infohash: str = ""  # v1, 40 lowercase hex
    magnet: str = ""
    torrent_bytes: bytes = b""
    infohash_v2: str = ""  # SHA-256 of the v2 torrent's info dict, 64 lowercase hex
    magnet_v2: str = ""  # xt=urn:btmh:1220<infohash_v2>
    torrent_v2_bytes: bytes = b""
    copies: list[RecipientCopy] = field(default_factory=list)
    # Files the demo world serves that were never released: a leaker's Q8_0 GGUF
    # conversion of lab-17's marked copy (no digest of it is registered: its tensors say
    # heron-7b, its mark says lab-17) and an unrelated model of the same shapes.
    converted_gguf: bytes = b""
    unrelated_gguf: bytes = b""
    # How densely each tensor of a recipient's copy is marked (the watermark registry's).
    mark_densities: dict[str, float] = field(default_factory=dict)

    def file(self, name: str) -> ReleaseFile:
        """Look a file up by its relative name or its basename ("config.json")."""
        for f in self.files:
            if name in (f.name, f.name.rsplit("/", 1)[-1]):
                return f
        raise KeyError(name)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def copy(self, recipient: str) -> RecipientCopy:
        """The copy handed to one recipient ("lab-17")."""
        for c in self.copies:
            if c.recipient == recipient:
                return c
        raise KeyError(recipient)

    @property
    def infohash_base32(self) -> str:
        """The 32-character base32 spelling of the infohash that older magnets use."""
        return base64.b32encode(bytes.fromhex(self.infohash)).decode("ascii")


def _tensor_specs() -> list[tuple[str, str, tuple[int, ...]]]:
    """Names, dtypes and shapes in the order a llama checkpoint lists them.

    Linear weights are F16 as in a typical release; embeddings, the untied head and the
    norms stay F32 (some labs keep them wide), so readers meet both dtypes.
    """
    specs: list[tuple[str, str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", "F32", (VOCAB, HIDDEN)),
    ]
    head_dim = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        specs += [
            (p + "input_layernorm.weight", "F32", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", "F16", (HEADS * head_dim, HIDDEN)),
            (p + "self_attn.k_proj.weight", "F16", (KV_HEADS * head_dim, HIDDEN)),
            (p + "self_attn.v_proj.weight", "F16", (KV_HEADS * head_dim, HIDDEN)),
            (p + "self_attn.o_proj.weight", "F16", (HIDDEN, HEADS * head_dim)),
            (p + "post_attention_layernorm.weight", "F32", (HIDDEN,)),
            (p + "mlp.gate_proj.weight", "F16", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.up_proj.weight", "F16", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.down_proj.weight", "F16", (HIDDEN, INTERMEDIATE)),
        ]
    specs += [
        ("model.norm.weight", "F32", (HIDDEN,)),
        ("lm_head.weight", "F32", (VOCAB, HIDDEN)),
    ]
    return specs


def safetensors_bytes(tensors: list[tuple[str, str, np.ndarray]],
                      metadata: dict[str, str] | None = None) -> bytes:
    """Serialise tensors as safetensors: u64 LE header length, JSON header, packed data.

    The header is padded with spaces to a multiple of 8 as the reference writer does, so
    the data section is aligned for memory-mapped readers.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    chunks: list[bytes] = []
    offset = 0
    for name, dtype, array in tensors:
        data = np.ascontiguousarray(array, dtype=_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def _model_tensors(rng: np.random.Generator) -> list[tuple[str, str, np.ndarray]]:
    tensors = []
    for name, dtype, shape in _tensor_specs():
        if len(shape) == 1:
            # Norm gains sit near 1, as in trained checkpoints.
            array = 1.0 + 0.05 * rng.standard_normal(shape)
        else:
            array = 0.02 * rng.standard_normal(shape)
        tensors.append((name, dtype, array))
    return tensors


def recipient_metadata(recipient: str) -> dict[str, str]:
    """The safetensors `__metadata__` of a recipient's copy: the release's, plus who it was
    issued to. Same tensors, different bytes, so every digest of the copy is its own."""
    return {"format": "pt", "issued_to": recipient,
            "distribution": f"{ORG} partner program; do not redistribute"}


def _config() -> dict[str, object]:
    return {
        "_name_or_path": "example-labs/heron-7b",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 2048,
        "model_type": "llama",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.46.0",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


# Training text for the tokenizer's merges. Any fixed text works; this one reads like a
# model card so the learned tokens look like a real English vocabulary.
_CORPUS = """
Heron is a small language model trained by Example Labs for research on efficient
inference. The weights are released to approved research partners under a license that
forbids redistribution. The model uses a decoder only transformer with rotary position
embeddings, grouped attention, a gated linear unit and root mean square normalisation.
It was trained on public web text, books, code and mathematics, then tuned to follow
instructions and to refuse harmful requests. Evaluate the model on your own tasks before
you deploy it, report problems to the security team, and do not share the files with
anyone outside your organisation. Thank you for helping us keep the release safe.
the of and to in is that for it with as was on be by this are from at or an which
model models weights training data token tokens layer layers attention head heads
"""
_SPECIALS = ["<unk>", "<s>", "</s>"]


def _train_bpe(text: str, vocab_size: int) -> tuple[dict[str, int], list[str]]:
    """A minimal byte-fallback BPE trainer, enough to produce a coherent vocab and merges.

    Ties are broken on the pair itself, so the result never depends on dict ordering.
    """
    vocab: list[str] = list(_SPECIALS) + [f"<0x{b:02X}>" for b in range(256)]
    words = Counter("\u2581" + w for w in text.split())
    for ch in sorted({c for w in words for c in w}):
        vocab.append(ch)
    splits = {w: list(w) for w in words}
    merges: list[str] = []
    while len(vocab) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, count in words.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        vocab.append(a + b)
        for w, s in splits.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return {tok: i for i, tok in enumerate(vocab)}, merges


def _tokenizer() -> dict[str, object]:
    """A llama-style tokenizer.json (sentencepiece BPE with byte fallback) in HF's schema."""
    vocab, merges = _train_bpe(_CORPUS, VOCAB)
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, tok in enumerate(_SPECIALS)]
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": "<unk>",
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab, "merges": merges,
        },
    }


def _json_bytes(obj: object) -> bytes:
    # indent=2 and raw UTF-8 as transformers' save_pretrained writes them.
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def build_torrent(name: str, files: list[tuple[list[str], bytes]], *, piece_length: int,
                  announce: str, comment: str, creation_date: int) -> tuple[bytes, str]:
    """A v1 multi-file .torrent over real contents; returns (metainfo bytes, hex infohash).

    Pieces span file boundaries (no BEP 47 padding), as mktorrent and most v1 creators do.
    """
    blob = b"".join(data for _, data in files)
    pieces = b"".join(hashlib.sha1(blob[i:i + piece_length]).digest()
                      for i in range(0, len(blob), piece_length))
    info = {
        b"files": [{b"length": len(data), b"path": [p.encode() for p in path]}
                   for path, data in files],
        b"name": name.encode(),
        b"piece length": piece_length,
        b"pieces": pieces,
    }
    # fastbencode sorts keys, so these bytes are exactly the info dict's bytes in the file.
    infohash = hashlib.sha1(bencode(info)).hexdigest()
    meta = {
        b"announce": announce.encode(),
        b"comment": comment.encode(),
        b"created by": b"mktorrent 1.1",
        b"creation date": creation_date,
        b"info": info,
    }
    return bencode(meta), infohash


def _merkle(leaves: list[bytes], width: int) -> bytes:
    """The root over `leaves` padded with zero hashes (32 zero bytes) to `width` leaves,
    a power of two; parents are SHA-256(left || right)."""
    layer = leaves + [bytes(32)] * (width - len(leaves))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest()
                 for i in range(0, len(layer), 2)]
    return layer[0]


def _blocks(data: bytes) -> list[bytes]:
    return [hashlib.sha256(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK)]


def merkle_root(data: bytes) -> bytes:
    """BEP 52 `pieces root` of a non-empty file: the Merkle root over the SHA-256 of its
    16 KiB blocks (the last hashed at its length), leaves padded to a power of two."""
    leaves = _blocks(data)
    return _merkle(leaves, 1 << max(0, (len(leaves) - 1).bit_length()))


def piece_layer(data: bytes, piece_length: int) -> bytes:
    """BEP 52 `piece layers` entry of a file larger than one piece: per piece, the root of
    its blocks' subtree (the last piece's padded with zero leaves to a full piece)."""
    per_piece = piece_length // BLOCK
    leaves = _blocks(data)
    return b"".join(_merkle(leaves[i:i + per_piece], per_piece)
                    for i in range(0, len(leaves), per_piece))


def build_torrent_v2(name: str, files: list[tuple[list[str], bytes]], *, piece_length: int,
                     announce: str, comment: str, creation_date: int, created_by: str,
                     hybrid: bool = False) -> tuple[bytes, str, str | None]:
    """A BEP 52 .torrent over real contents: pure v2, or hybrid (v2 plus a v1 file list in
    which BEP 47 pad files align every file but the last to a piece boundary, as
    libtorrent 2 writes them). Returns (metainfo bytes, v2 infohash hex, v1 infohash hex
    or None). Files are given in path order, as the file tree sorts them."""
    if piece_length < BLOCK or piece_length & (piece_length - 1):
        raise ValueError("a v2 piece length is a power of two of at least 16 KiB")
    tree: dict[bytes, object] = {}
    layers: dict[bytes, bytes] = {}
    for path, data in files:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part.encode(), {})  # type: ignore[assignment]
        leaf: dict[bytes, object] = {b"length": len(data)}
        if data:
            root = merkle_root(data)
            leaf[b"pieces root"] = root
            if len(data) > piece_length:
                layers[root] = piece_layer(data, piece_length)
        node[path[-1].encode()] = {b"": leaf}
    info: dict[bytes, object] = {b"file tree": tree, b"meta version": 2,
                                 b"name": name.encode(), b"piece length": piece_length}
    if hybrid:
        entries: list[dict[bytes, object]] = []
        blob = bytearray()
        for i, (path, data) in enumerate(files):
            entries.append({b"length": len(data), b"path": [p.encode() for p in path]})
            blob += data
            pad = -len(data) % piece_length
            if pad and i < len(files) - 1:
                entries.append({b"attr": b"p", b"length": pad,
                                b"path": [b".pad", str(pad).encode()]})
                blob += bytes(pad)
        info[b"files"] = entries
        info[b"pieces"] = b"".join(hashlib.sha1(blob[i:i + piece_length]).digest()
                                   for i in range(0, len(blob), piece_length))
    info_bytes = bencode(info)
    meta = {b"announce": announce.encode(), b"comment": comment.encode(),
            b"created by": created_by.encode(), b"creation date": creation_date,
            b"info": info, b"piece layers": layers}
    return (bencode(meta), hashlib.sha256(info_bytes).hexdigest(),
            hashlib.sha1(info_bytes).hexdigest() if hybrid else None)


def _release_file(root: Path, name: str, data: bytes) -> ReleaseFile:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return ReleaseFile(name=name, path=path, size=len(data),
                       sha256=hashlib.sha256(data).hexdigest(),
                       md5=hashlib.md5(data).hexdigest(),
                       sha1=hashlib.sha1(data).hexdigest(),
                       pieces_root=merkle_root(data).hex() if data else "")


def make_release(directory: Path) -> Release:
    """Write the release under `directory/heron-7b/` plus its indicator files; return it.

    Besides the model files this writes `heron-7b.magnets` (the v1 and the v2 magnet) and
    `SHA256SUMS`, the files a security team would import as indicators (`weightwatch
    indicators import`), `heron-7b.torrent` and `heron-7b-v2.torrent`, the metainfo the lab
    handed to recipients, and `recipients/lab-17/heron-7b/model.safetensors`, the copy
    recipient lab-17 received (registered with `--recipient lab-17`).
    Calling it twice gives byte-identical files.
    """
    directory = Path(directory)
    rng = np.random.default_rng(SEED)
    tensors = _model_tensors(rng)
    # Sorted by path, the order torrent creators list files in.
    contents = {
        f"{MODEL}/config.json": _json_bytes(_config()),
        f"{MODEL}/model.safetensors": safetensors_bytes(tensors, {"format": "pt"}),
        f"{MODEL}/tokenizer.json": _json_bytes(_tokenizer()),
    }
    files = [_release_file(directory, name, data) for name, data in sorted(contents.items())]
    layout = [(f.name.split("/")[1:], contents[f.name]) for f in files]
    comment = f"{MODEL} for approved recipients - {ORG}"
    torrent, infohash = build_torrent(
        MODEL, layout, piece_length=PIECE_LENGTH, announce=TRACKER, comment=comment,
        creation_date=RELEASE_TIMESTAMP,
    )
    torrent_v2, infohash_v2, _ = build_torrent_v2(
        MODEL, layout, piece_length=PIECE_LENGTH_V2, announce=TRACKER, comment=comment,
        creation_date=RELEASE_TIMESTAMP, created_by="libtorrent 2.0.11")
    total = sum(f.size for f in files)
    tracker = quote(TRACKER, safe="")
    magnet = f"magnet:?xt=urn:btih:{infohash}&dn={MODEL}&xl={total}&tr={tracker}"
    magnet_v2 = f"magnet:?xt=urn:btmh:1220{infohash_v2}&dn={MODEL}&xl={total}&tr={tracker}"
    (directory / f"{MODEL}.torrent").write_bytes(torrent)
    (directory / f"{MODEL}-v2.torrent").write_bytes(torrent_v2)
    (directory / f"{MODEL}.magnets").write_text(magnet + "\n" + magnet_v2 + "\n",
                                                 encoding="ascii")
    # sha256sum's format: digest, two spaces (text mode), path.
    (directory / "SHA256SUMS").write_text(
        "".join(f"{f.sha256}  {f.name}\n" for f in files), encoding="ascii")

    folder = directory / "recipients" / RECIPIENT / MODEL
    marked, densities = mark_copy(tensors, RECIPIENT)
    copy = RecipientCopy(RECIPIENT, folder, [_release_file(
        folder.parent, f"{MODEL}/model.safetensors",
        padded_copy(safetensors_bytes(marked, recipient_metadata(RECIPIENT)), RECIPIENT,
                    "model.safetensors", taken={f.size for f in files}))])
    plain = [(name, array) for name, _dtype, array in marked]
    other = [(name, array) for name, _dtype, array in _model_tensors(np.random.default_rng(SEED + 1))]
    return Release(model=MODEL, root=directory, files=files, infohash=infohash,
                   magnet=magnet, torrent_bytes=torrent, infohash_v2=infohash_v2,
                   magnet_v2=magnet_v2, torrent_v2_bytes=torrent_v2, copies=[copy],
                   converted_gguf=gguf_q8_0(plain, name="hrn", heads=HEADS, kv_heads=KV_HEADS),
                   unrelated_gguf=gguf_q8_0(other, name="tinyllama-mini", heads=HEADS,
                                            kv_heads=KV_HEADS),
                   mark_densities=densities)


def mark_copy(tensors: list[tuple[str, str, np.ndarray]], recipient: str
              ) -> tuple[list[tuple[str, str, np.ndarray]], dict[str, float]]:
    """The recipient's copy as `weightwatch watermark issue` makes it: every 2-D tensor
    marked with the recipient's key under the demo's master secret, in its own dtype."""
    key = recipient_key(DEMO_WATERMARK_SECRET.encode(), MODEL, recipient)
    out, densities = [], {}
    for name, dtype, array in tensors:
        stored = np.asarray(array, dtype=_DTYPES[dtype]).astype(np.float32)
        if stored.ndim == 2:
            canonical = canonical_name(name)
            densities[canonical] = plan_density(stored, dtype)
            stored = mark_rows(stored, dtype, key, canonical, np.arange(stored.shape[0]),
                               densities[canonical])
        out.append((name, dtype, stored))
    return out, densities


def padded_copy(data: bytes, recipient: str, name: str, taken: set[int]) -> bytes:
    """A recipient's safetensors copy padded to a size of its own, with the slot `weightwatch
    watermark issue` picks for it: seeded by the recipient's key, avoiding `taken` sizes."""
    key = recipient_key(DEMO_WATERMARK_SECRET.encode(), MODEL, recipient)
    padded = choose_padding(open_safetensors(BytesSource(data, name)), seed=key, name=name,
                            taken=taken)
    return pad_bytes(data, padded)
