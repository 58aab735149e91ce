""".npy and .npz files without pickle; zip and tar archives read as byte ranges, never
extracted; zip bombs refused; formats sniffed from their first bytes."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tarfile
import zipfile

import numpy as np
import pytest

from fingerprints.archives import (
    SliceSource,
    TarArchive,
    ZipArchive,
    open_archive,
    safe_member_name,
    sniff,
    weight_members,
)
from fingerprints.numpy_files import NpyReader, NpzReader, open_npy, open_npz
from fingerprints.tensors import BytesSource, FileSource, WeightFileError


def npy_bytes(array: np.ndarray, version: tuple[int, int] | None = None, **kw: object) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array, **kw)
    else:
        np.lib.format.write_array(buf, array, version=version, **kw)
    return buf.getvalue()


def npy_with_header(header: str, data: bytes = b"", version: int = 1) -> bytes:
    raw = header.encode("latin-1")
    length = struct.pack("<H", len(raw)) if version == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes([version, 0]) + length + raw + data


@pytest.fixture(scope="module")
def matrix() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((10, 12)).astype(np.float32)


# -- .npy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
def test_npy_versions_read_by_row(tmp_path, matrix, version):
    path = tmp_path / "tok_embeddings.npy"
    path.write_bytes(npy_bytes(matrix, version))
    with FileSource(path) as source:
        reader = open_npy(source)
        (info,) = reader.tensors
        assert (info.name, info.shape, info.dtype, info.row_nbytes) == ("tok_embeddings", (10, 12), "F32", 48)
        before = source.bytes_read
        np.testing.assert_array_equal(reader.read_rows(info, [9, 2, 3]), matrix[[9, 2, 3]])
        assert source.bytes_read - before <= 8 * 48  # two runs of rows, not the file
        assert sniff(source) == "npy"


@pytest.mark.parametrize("dtype", ["<f2", "<f8", ">f4", "|i1", "|u1", "<i8", "<u2", "|b1"])
def test_npy_plain_dtypes_and_byte_orders(dtype, matrix):
    array = (matrix * 10).astype(dtype)
    reader = NpyReader(BytesSource(npy_bytes(array), "x.npy"))
    np.testing.assert_array_equal(reader.read_tensor(reader.tensors[0]), array.astype(np.float32))


def test_fortran_order_is_listed_but_rows_are_refused(matrix):
    reader = NpyReader(BytesSource(npy_bytes(np.asfortranarray(matrix)), "f.npy"))
    info = reader.tensors[0]
    assert info.extra["fortran_order"] is True
    with pytest.raises(WeightFileError, match="Fortran \\(column-major\\) order"):
        reader.read_rows(info, [0])
    vector = NpyReader(BytesSource(npy_bytes(np.asfortranarray(matrix[0])), "v.npy"))
    np.testing.assert_array_equal(vector.read_rows(vector.tensors[0], [3]), matrix[0][[3]][:, None])


def test_object_arrays_and_hostile_headers_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    cases = {
        "object": (npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
                   "object array \\(pickled Python objects\\); refusing"),
        "code in header": (npy_with_header(f"__import__('os').system('touch {marker}')\n"),
                           "not a Python literal"),
        "structured": (npy_with_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}\n",
                                       b"\0" * 4), "structured"),
        "datetime": (npy_with_header("{'descr': '<M8[s]', 'fortran_order': False, 'shape': (1,)}\n",
                                     b"\0" * 8), "not a plain number type"),
        "header past end": (b"\x93NUMPY\x01\x00\xff\x00{", "runs past the end"),
        "huge header": (b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30) + b"{" * 100,
                        "over the 65536-byte limit"),
        "data short": (npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (100, 100)}\n",
                                       b"\0" * 16), "needs 40000 bytes but only 16"),
        "negative shape": (npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}\n"),
                           "non-negative"),
        "extra keys": (npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), 'x': 1}\n"),
                       "exactly descr"),
        "nested": (npy_with_header("(" * 300 + ")" * 300), "not a Python literal"),
        "version 9": (b"\x93NUMPY\x09\x00\x10\x00" + b" " * 16, "version 9.0"),
    }
    for name, (blob, message) in cases.items():
        with pytest.raises(WeightFileError, match=message) as caught:
            NpyReader(BytesSource(blob, "bad.npy"))
        assert "\n" not in str(caught.value), name
    assert not marker.exists()


# -- .npz -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_members_are_tensors(tmp_path, matrix, compressed):
    path = tmp_path / "weights.npz"
    save = np.savez_compressed if compressed else np.savez
    bias = np.arange(12, dtype=np.float16)
    save(path, **{"layer0.weight": matrix, "layer0.bias": bias})
    with FileSource(path) as source:
        assert sniff(source) == "npz"
        reader = open_npz(source)
        info = {t.name: t for t in reader.tensors}
        assert set(info) == {"layer0.weight", "layer0.bias"}
        weight = info["layer0.weight"]
        if compressed:
            assert weight.extra["member"] == "layer0.weight.npy"
        else:
            assert "member" not in weight.extra
            assert path.read_bytes()[weight.offset:weight.offset + weight.nbytes] == matrix.tobytes()
        np.testing.assert_array_equal(reader.read_rows(weight, [4, 1]), matrix[[4, 1]])
        np.testing.assert_array_equal(reader.read_tensor(info["layer0.bias"]), bias.astype(np.float32))


def test_npz_with_a_pickled_member_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.zeros(3), evil=np.array([object()], dtype=object))
    with FileSource(path) as source, pytest.raises(WeightFileError, match="evil.npy: dtype '\\|O'"):
        NpzReader(source)


# -- zip -----------------------------------------------------------------------------------------
def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buf.getvalue()


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, array in tensors.items():
        raw = array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def test_zip_members_are_listed_and_read_by_range(tmp_path, matrix):
    blob = zip_bytes({"release/README.md": b"# our model\n",
                      "release/model.safetensors": safetensors_bytes({"w": matrix}),
                      "release/emb.npy": npy_bytes(matrix),
                      "release/": b""})
    path = tmp_path / "leak.zip"
    path.write_bytes(blob)
    with FileSource(path) as source:
        archive = open_archive(source)
        assert isinstance(archive, ZipArchive) and sniff(source) == "zip"
        assert [m.name for m in weight_members(archive)] == ["release/model.safetensors", "release/emb.npy"]
        member = archive.member("release/emb.npy")
        inner = archive.open(member)
        assert isinstance(inner, SliceSource) and inner.size == member.size
        assert sniff(inner) == "npy"
        before = source.bytes_read
        reader = NpyReader(inner)
        np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], [6]), matrix[[6]])
        assert source.bytes_read - before < 400  # the header and one row, not the member
        st = archive.open(archive.member("release/model.safetensors"))
        assert sniff(st) == "safetensors"


def test_safetensors_member_reads_through_the_safetensors_reader(matrix):
    safetensors = pytest.importorskip("fingerprints.safetensors")
    if not hasattr(safetensors, "open_safetensors"):
        pytest.skip("safetensors reader not ready")
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        blob = zip_bytes({"model.safetensors": safetensors_bytes({"w": matrix})}, compression)
        archive = ZipArchive(BytesSource(blob, "leak.zip"))
        reader = safetensors.open_safetensors(archive.open(archive.members[0]))
        np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], [0, 9]), matrix[[0, 9]])


def test_deflated_zip_members_inflate_with_crc_check(matrix):
    blob = zip_bytes({"emb.npy": npy_bytes(matrix)}, zipfile.ZIP_DEFLATED)
    archive = ZipArchive(BytesSource(blob))
    member = archive.members[0]
    assert member.method == "deflated"
    reader = NpyReader(archive.open(member))
    np.testing.assert_array_equal(reader.read_tensor(reader.tensors[0]), matrix)
    corrupt = bytearray(blob)
    at = corrupt.index(b"PK\x01\x02") + 16  # the CRC in the central directory
    corrupt[at] ^= 0xFF
    archive = ZipArchive(BytesSource(bytes(corrupt)))
    with pytest.raises(WeightFileError, match="fails its CRC check"):
        archive.open(archive.members[0])


def test_zip64_and_prepended_data(monkeypatch, matrix):
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 16)  # forces zip64 records for tiny files
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    blob = zip_bytes({"a.npy": npy_bytes(matrix), "b.npy": npy_bytes(matrix[:2])})
    monkeypatch.undo()
    assert b"PK\x06\x06" in blob
    for data in (blob, b"\xff\xd8JPEG image data" * 50 + blob):  # a zip appended to an image
        archive = ZipArchive(BytesSource(data))
        assert [m.name for m in archive.members] == ["a.npy", "b.npy"]
        reader = NpyReader(archive.open(archive.members[1]))
        np.testing.assert_array_equal(reader.read_tensor(reader.tensors[0]), matrix[:2])
    assert sniff(BytesSource(b"\xff\xd8JPEG image data" * 50 + blob)) == "npz"


def _patch_sizes(blob: bytes, usize: int) -> bytes:
    """Lie about the uncompressed size in the local and central headers."""
    data = bytearray(blob)
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, usize)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, usize)
    return bytes(data)


def test_zip_bombs_are_refused():
    zeros = b"\0" * (4 << 20)
    ratio_bomb = zip_bytes({"model.safetensors": zeros}, zipfile.ZIP_DEFLATED)
    assert len(ratio_bomb) < 20_000
    archive = ZipArchive(BytesSource(ratio_bomb, "bomb.zip"))
    with pytest.raises(WeightFileError, match="ratio over 100\\); refusing a likely zip bomb"):
        archive.open(archive.members[0])
    # a member that declares a small size but inflates past it
    liar = _patch_sizes(zip_bytes({"x.npy": os.urandom(1000) + b"\0" * 5000}, zipfile.ZIP_DEFLATED), 2000)
    archive = ZipArchive(BytesSource(liar))
    with pytest.raises(WeightFileError, match="inflates past its declared size of 2000"):
        archive.open(archive.members[0])
    # a member that declares more than it holds
    short = _patch_sizes(zip_bytes({"x.npy": os.urandom(3000)}, zipfile.ZIP_DEFLATED), 9000)
    archive = ZipArchive(BytesSource(short))
    with pytest.raises(WeightFileError, match="inflates to 3000 bytes but declares 9000"):
        archive.open(archive.members[0])
    # declared size over the inflate cap
    archive = ZipArchive(BytesSource(zip_bytes({"x.bin": os.urandom(5000)}, zipfile.ZIP_DEFLATED)),
                         max_inflate=4096)
    with pytest.raises(WeightFileError, match="over the limit of 4096"):
        archive.open(archive.members[0])
    with pytest.raises(WeightFileError, match="zip declares 3 members, over the limit of 2"):
        ZipArchive(BytesSource(zip_bytes({"a": b"1", "b": b"2", "c": b"3"})), max_members=2)


def test_overlapping_members_are_refused():
    """The 'better zip bomb': many central entries pointing at one shared kernel."""
    blob = bytearray(zip_bytes({"a.npy": b"A" * 100, "b.npy": b"B" * 100}))
    first, second = [i for i in range(len(blob)) if blob[i:i + 4] == b"PK\x01\x02"]
    struct.pack_into("<I", blob, second + 42, struct.unpack_from("<I", blob, first + 42)[0])
    with pytest.raises(WeightFileError, match="overlap \\(a zip bomb shape\\); refusing"):
        ZipArchive(BytesSource(bytes(blob)))


@pytest.mark.parametrize("blob, message", [
    (b"PK\x03\x04" + b"\0" * 10, "too short"),
    (b"PK\x03\x04" + b"\0" * 100, "no end-of-central-directory"),
    (b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 5, 5, 100, 0, 0), "cannot hold 5 members"),
    (b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 1000, 0, 0), "lies outside the file"),
    (b"PK\x05\x06" + struct.pack("<HHHHIIH", 1, 0, 0, 0, 0, 0, 0), "multi-volume"),
])
def test_malformed_zips(blob, message):
    with pytest.raises(WeightFileError, match=message):
        ZipArchive(BytesSource(blob, "bad.zip"))


def test_path_traversal_names_are_harmless(tmp_path, matrix, monkeypatch):
    evil = {"../../outside.npy": npy_bytes(matrix), "/etc/cron.d/evil.npy": npy_bytes(matrix[:1]),
            "C:\\Windows\\evil.npy": npy_bytes(matrix[:2]), "dir/\x1b[31mred\x7f.npy": npy_bytes(matrix[:3])}
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for blob in (zip_bytes(evil), _tar_bytes(evil)):
        archive = open_archive(BytesSource(blob, "evil"))
        names = [m.name for m in archive.members]
        assert names == ["outside.npy", "etc/cron.d/evil.npy", "Windows/evil.npy", "dir/?[31mred?.npy"]
        assert all(m.is_weight for m in archive.members)
        for member in archive.members:
            reader = NpyReader(archive.open(member))
            assert reader.tensors[0].shape[1] == 12
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]  # nothing written anywhere
    assert safe_member_name("..") == "<unnamed>"


# -- tar -------------------------------------------------------------------------------------------
def _tar_bytes(members: dict[str, bytes], mode: str = "w", links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def test_tar_members_are_ranges_of_the_tar(tmp_path, matrix):
    long_name = "weights/" + "x" * 150 + "/emb.npy"  # needs a pax header
    blob = _tar_bytes({"weights/model.safetensors": safetensors_bytes({"w": matrix}),
                       long_name: npy_bytes(matrix), "weights/notes.txt": b"hi"},
                      links={"weights/shadow.npy": "/etc/shadow"})
    path = tmp_path / "leak.tar"
    path.write_bytes(blob)
    with FileSource(path) as source:
        assert sniff(source) == "tar"
        archive = open_archive(source)
        assert isinstance(archive, TarArchive) and archive.compression is None
        assert [m.name for m in weight_members(archive)] == ["weights/model.safetensors", long_name]
        assert archive.skipped == [("weights/shadow.npy", "link to etc/shadow")]
        member = archive.member(long_name)
        inner = archive.open(member)
        assert isinstance(inner, SliceSource) and inner.offset == member.data_offset
        before = source.bytes_read
        reader = NpyReader(inner)
        np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], [0, 9]), matrix[[0, 9]])
        assert source.bytes_read - before < 800  # header, and rows 0..9 in one run
        assert sniff(archive.open(archive.member("weights/model.safetensors"))) == "safetensors"


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_tars_are_streamed(matrix, mode):
    blob = _tar_bytes({"a/emb.npy": npy_bytes(matrix), "a/second.npy": npy_bytes(matrix[:3])}, mode)
    source = BytesSource(blob, "leak.tar" + mode[1:].replace(":", "."))
    assert sniff(source) == "tar"
    archive = TarArchive(source)
    assert archive.compression == mode[2:]
    assert [m.name for m in archive.members] == ["a/emb.npy", "a/second.npy"]
    reader = NpyReader(archive.open(archive.members[1]))
    np.testing.assert_array_equal(reader.read_tensor(reader.tensors[0]), matrix[:3])


def test_tar_bombs_and_broken_tars_are_refused():
    bomb = _tar_bytes({"zeros.safetensors": b"\0" * (8 << 20)}, "w:gz")
    assert len(bomb) < 40_000
    with pytest.raises(WeightFileError, match="expands over 100 times its size"):
        TarArchive(BytesSource(bomb, "bomb.tar.gz"))
    many = _tar_bytes({f"{i}.npy": b"" for i in range(5)})
    with pytest.raises(WeightFileError, match="more than 3 members"):
        TarArchive(BytesSource(many), max_members=3)
    truncated = gzip.compress(_tar_bytes({"a.npy": b"x" * 5000}))[:-300]
    with pytest.raises(WeightFileError, match="leak.tar.gz: "):
        TarArchive(BytesSource(truncated, "leak.tar.gz"))
    with pytest.raises(WeightFileError, match="not a zip or tar archive"):
        open_archive(BytesSource(b"hello world" * 100))


# -- sniffing --------------------------------------------------------------------------------------
def test_sniff_names_each_format(matrix):
    pytorch_zip = zip_bytes({"archive/data.pkl": b"\x80\x02}.", "archive/data/0": b"\0" * 8})
    cases = {
        "safetensors": safetensors_bytes({"w": matrix}),
        "gguf": b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
        "pytorch-zip": pytorch_zip,
        "pickle-legacy": b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.",
        "onnx": b"\x08\x08\x12\x07pytorch\x1a\x032.1:\x00",
        "npy": npy_bytes(matrix),
        "npz": zip_bytes({"a.npy": npy_bytes(matrix)}),
        "zip": zip_bytes({"model.onnx": b"\x08\x08"}),
        "tar": _tar_bytes({"model.gguf": b"GGUF"}),
        "unknown": b"just some text, not weights\n" * 10,
    }
    for expected, blob in cases.items():
        assert sniff(BytesSource(blob)) == expected, expected
    assert sniff(BytesSource(b"")) == "unknown"
    assert sniff(BytesSource(b"\x08\x08\x12\xff\x7f")) == "unknown"  # length past the end


def test_mutated_files_and_archives_fail_cleanly_or_read(matrix):
    """Random corruption: a WeightFileError or a result, never a crash."""
    buf = io.BytesIO()
    np.savez_compressed(buf, a=matrix, b=matrix[:2])
    npy = npy_bytes(matrix)
    samples = {"npy": npy, "npz": buf.getvalue(), "tar": _tar_bytes({"a.npy": npy}),
               "tar.gz": _tar_bytes({"a.npy": npy}, "w:gz")}
    rng = np.random.default_rng(2)
    for kind, blob in samples.items():
        for _ in range(150):
            data = bytearray(blob)
            for _ in range(int(rng.integers(1, 5))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            source = BytesSource(bytes(data))
            try:
                sniff(source)
                if kind == "npy":
                    readers = [NpyReader(source)]
                elif kind == "npz":
                    readers = [NpzReader(source)]
                else:
                    archive = open_archive(source)
                    readers = [NpyReader(archive.open(m)) for m in archive.members]
                for reader in readers:
                    for t in reader.tensors:
                        if not t.extra["fortran_order"]:
                            reader.read_rows(t, [0, t.rows - 1] if t.rows else [])
            except WeightFileError as exc:
                assert "\n" not in str(exc)
