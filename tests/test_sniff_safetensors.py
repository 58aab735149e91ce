"""A safetensors file whose header length starts with the bytes of a pickle protocol marker
(0x580 bytes: b"\\x80\\x05") is safetensors, not a legacy PyTorch pickle refused unread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fingerprints.archives import sniff
from fingerprints.tensors import BytesSource, FileSource
from fingerprints.weights import open_weights


def test_a_header_of_0x580_bytes_is_still_safetensors(tmp_path: Path) -> None:
    data = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
    header = {"w": {"dtype": "F32", "shape": [64, 16], "data_offsets": [0, data.nbytes]}}
    text = json.dumps(header).encode()
    text += b" " * (0x580 - len(text))  # safetensors pads its header with spaces
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + data.tobytes())
    assert path.read_bytes()[:2] == b"\x80\x05"
    with FileSource(path) as source:
        assert sniff(source) == "safetensors"
        reader = open_weights(source)
        np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], range(64)), data)
    # A real protocol-2 pickle's opening is still recognised as one.
    assert sniff(BytesSource(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "old.pt")) \
        == "pickle-legacy"
