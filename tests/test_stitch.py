"""fingerprints/_stitch.c (MD5, SHA-1, SHA-256 and 16 KiB SHA-256 leaves in one interleaved
pass) against hashlib, at every size around its block, leaf and update boundaries."""

from __future__ import annotations

import hashlib
import platform
import random
from pathlib import Path

import pytest

from fingerprints.digests import stitching_available

needs_stitch = pytest.mark.skipif(not stitching_available(),
                                  reason="fingerprints._stitch not built or no SHA-NI here")


def _cpu_has_sha_ni() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return (platform.machine() == "x86_64" and cpuinfo.exists()
            and " sha_ni" in cpuinfo.read_text())


@pytest.mark.skipif(not _cpu_has_sha_ni(), reason="no x86-64 CPU with SHA-NI here")
def test_the_extension_is_built_where_the_cpu_can_run_it() -> None:
    # The build is optional (no compiler: hashlib lanes), so a broken build would pass
    # unnoticed as a skip everywhere else; where the CPU can run it, it must be there.
    from fingerprints import _stitch

    assert _stitch.available and stitching_available()

LEAF = 16384
# Around the 64-byte block (MD5/SHA padding needs one or two blocks: 55/56 bytes left), the
# 16 KiB leaf, and a few leaves.
SIZES = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, LEAF - 1, LEAF, LEAF + 1,
         LEAF + 55, LEAF + 56, 2 * LEAF - 64, 2 * LEAF, 3 * LEAF + 63, 5 * LEAF + 4097]


def _expected(data: bytes, leaf: int) -> tuple[bytes, bytes, bytes, list[bytes]]:
    leaves = ([hashlib.sha256(data[i:i + leaf]).digest() for i in range(0, len(data), leaf)]
              if leaf else [])
    return (hashlib.md5(data).digest(), hashlib.sha1(data).digest(),
            hashlib.sha256(data).digest(), leaves)


def _stitched(data: bytes, leaf: int, pieces: list[int]) -> tuple[bytes, bytes, bytes,
                                                                    list[bytes]]:
    from fingerprints._stitch import Stitched

    s = Stitched(leaf_size=leaf)
    view, done, out = memoryview(data), 0, b""
    for n in pieces:
        out += s.update(view[done:done + n])
        done += n
    out += s.update(view[done:])
    md5, sha1, sha256, last = s.digests()
    leaves = [out[i:i + 32] for i in range(0, len(out), 32)] + ([last] if last else [])
    return md5, sha1, sha256, leaves


@needs_stitch
@pytest.mark.parametrize("leaf", [0, 64, LEAF])
@pytest.mark.parametrize("size", SIZES)
def test_one_update_gives_hashlibs_digests(size: int, leaf: int) -> None:
    data = random.Random(size).randbytes(size)
    assert _stitched(data, leaf, []) == _expected(data, leaf)


@needs_stitch
@pytest.mark.parametrize("seed", range(12))
def test_any_split_into_updates_gives_the_same(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(0, 6 * LEAF))
    pieces = [rng.choice([1, 7, 63, 64, 65, 4095, 4096, 4097, LEAF, LEAF + 1])
              for _ in range(rng.randrange(0, 40))]
    assert _stitched(data, LEAF, pieces) == _expected(data, LEAF)


@needs_stitch
def test_leaves_come_back_as_soon_as_complete() -> None:
    from fingerprints._stitch import Stitched

    data = random.Random(5).randbytes(3 * LEAF)
    s = Stitched(leaf_size=LEAF)
    assert s.update(data[:LEAF - 1]) == b""
    assert s.update(data[LEAF - 1:LEAF]) == hashlib.sha256(data[:LEAF]).digest()
    assert s.update(data[LEAF:]) == b"".join(
        hashlib.sha256(data[i:i + LEAF]).digest() for i in (LEAF, 2 * LEAF))
    assert s.digests()[3] is None  # the file ends on a leaf boundary: no shorter leaf


@needs_stitch
def test_misuse_is_refused_with_one_line() -> None:
    from fingerprints._stitch import Stitched

    with pytest.raises(ValueError, match="multiple of 64"):
        Stitched(leaf_size=100)
    s = Stitched()
    s.update(b"abc")
    assert s.digests()[0] == hashlib.md5(b"abc").digest()
    with pytest.raises(ValueError, match="after digests"):
        s.update(b"more")
    with pytest.raises(ValueError, match="twice"):
        s.digests()
    with pytest.raises(TypeError):
        Stitched().update("text")  # type: ignore[arg-type]
