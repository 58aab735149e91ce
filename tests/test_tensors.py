"""Byte sources every weight reader reads through: exact ranges, checked bounds."""

from __future__ import annotations

import pytest

from fingerprints.tensors import BytesSource, FileSource, TensorInfo, WeightFileError


def test_file_source_reads_exact_ranges_and_counts_bytes(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with FileSource(path) as src:
        assert src.size == 1024 and src.name == str(path)
        assert src.read(10, 3) == bytes([10, 11, 12])
        assert src.read(1020, 4) == bytes([252, 253, 254, 255])
        assert src.bytes_read == 7
        for offset, length in ((1021, 4), (-1, 2), (0, -1), (2**62, 1)):
            with pytest.raises(WeightFileError, match="wants bytes"):
                src.read(offset, length)


def test_bytes_source_and_missing_file(tmp_path):
    src = BytesSource(b"abcdef", "member.npy")
    assert src.read(2, 2) == b"cd" and src.bytes_read == 2
    with pytest.raises(WeightFileError, match="member.npy: wants bytes 4..8 but the file has 6"):
        src.read(4, 4)
    with pytest.raises(WeightFileError, match="cannot open"):
        FileSource(tmp_path / "absent.safetensors")


def test_tensor_info_rows():
    info = TensorInfo("w", (4, 8), "F32", 0, 128, 32)
    assert info.rows == 4 and info.is_matrix
    assert not TensorInfo("b", (8,), "F32", 0, 32, 32).is_matrix
