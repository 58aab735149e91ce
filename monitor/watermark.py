"""Issuing marked copies to recipients, and naming the recipient of a leaked copy.

The marks themselves, and the test that reads them back from a suspect, are
`fingerprints.watermark` (pure: no store, no files of ours); this module holds the master
secret for the length of one command, writes recipients' copies and keeps what detection
needs in the registry (each recipient's derived key and how densely each tensor was
marked).

Each copy is also padded to a size of its own (`fingerprints.padding`) and registered with
that size and its digests, so a torrent listing of names and sizes, or a hash of the copy,
names the recipient before anyone reads a tensor.

The master secret comes from the environment (WEIGHTWATCH_WATERMARK_KEY) or a key file
that only its owner can read. It is never written anywhere: not to the config, the
database, the logs, bundles or exports. Anyone with the registry can check marks (and
could, for one recipient, compute that recipient's pattern); only the master secret can
mark a copy for a recipient not yet issued.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import structlog

from fingerprints.names import canonical_name
from fingerprints.padding import Padded, PaddingError, SizesTaken, choose_padding
from fingerprints.tensors import FileSource, TensorInfo, WeightReader
from fingerprints.watermark import (
    MARK_DTYPES,
    MARK_VERSION,
    WatermarkError,
    key_id,
    mark_rows,
    plan_density,
    q8_0_roundtrip,
    recipient_key,
)
from fingerprints.weightprint import MIN_COLUMNS, MIN_ROWS, canonical_order
from fingerprints.weights import open_weights
from monitor.durable import fsync_path
from monitor.registry import Rematch, register_paths, registry_change, rematch_with_defaults
from monitor.rematch import RematchResult

if TYPE_CHECKING:
    from monitor.scan import ScanReport
    from monitor.store import Store

log = structlog.get_logger("weightwatch.watermark")

MASTER_ENV = "WEIGHTWATCH_WATERMARK_KEY"
# Rows decoded and marked at a time while writing a copy: bounds memory on big tensors.
_BLOCK_BYTES = 32 << 20


def master_secret(key_file: str | os.PathLike[str] | None = None) -> bytes:
    """The master secret from `key_file` (owned by this user, readable by nobody else) or
    else from $WEIGHTWATCH_WATERMARK_KEY. WatermarkError saying which, without the value."""
    if key_file is not None:
        path = Path(key_file)
        try:
            info = path.stat()
        except OSError as exc:
            raise WatermarkError(f"{path}: cannot read the key file: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise WatermarkError(f"{path}: the key file is not a regular file")
        if info.st_mode & 0o077:
            raise WatermarkError(f"{path}: the key file is readable by others (mode "
                                 f"{stat.S_IMODE(info.st_mode):o}); chmod 600 it")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise WatermarkError(f"{path}: the key file belongs to another user")
        secret = path.read_bytes().strip()
    else:
        value = os.environ.get(MASTER_ENV)
        if not value:
            raise WatermarkError(f"no watermark master secret: set {MASTER_ENV} or pass "
                                 f"--key-file")
        secret = value.strip().encode()
    if len(secret) < 16:
        raise WatermarkError("the watermark master secret must be at least 16 bytes")
    return secret


# -- issuing ----------------------------------------------------------------------------------


@dataclass
class TensorMark:
    name: str
    canonical: str
    dtype: str
    density: float
    mark_rms: float        # relative RMS of (marked - original)
    q8_0_rms: float | None  # the same for Q8_0 quantisation (None: rows not in 32-blocks)


@dataclass
class Issued:
    model: str
    recipient: str
    path: Path
    key_id: str
    tensors: list[TensorMark] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    artifact_id: int | None = None
    rematched: RematchResult | None = None
    size: int = 0
    # Bytes of padding that make the copy's size this recipient's own (0: not padded, and
    # `unpadded` says why: a listing of names and sizes cannot then name the recipient).
    padding: int = 0
    unpadded: str | None = None


def _markable(tensor: TensorInfo) -> bool:
    return (tensor.is_matrix and tensor.rows >= MIN_ROWS and tensor.columns >= MIN_COLUMNS
            and tensor.dtype in MARK_DTYPES)


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return values.astype("<f4").tobytes()
    if dtype == "F16":
        return values.astype("<f2").tobytes()
    # Marked values are representable in BF16 already: the top half of their bits.
    return (np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(
        "<u2").tobytes()


def issue_copy(store: Store, *, model: str, recipient: str, source: str | os.PathLike[str],
               out: str | os.PathLike[str], master: bytes, release: str | None = None,
               pad: bool = True, mark: bool = True,
               rematch: Rematch | None = rematch_with_defaults) -> Issued:
    """Write `recipient`'s marked copy of `source` to `out` (same format, dtypes, names
    and layout: the marked tensors' bytes are rewritten in place of a copy), register its
    digests and size as that recipient's artifact of `release` (default: the release whose
    registered file has the original's exact size, if only one has) and record the
    verification data; then, if the registry changed, `rematch` (once the mark is recorded,
    so link scans can name the recipient). The original's tensor fingerprint must be
    registered: detection compares a suspect with its rows, so a copy issued without it
    could never be attributed.

    With `pad` (the default), a safetensors or GGUF copy is padded to a size no other file
    or copy of the model has (`fingerprints.padding`), so a listing of names and sizes alone
    names the recipient; other formats keep the original's size (`Issued.unpadded`).
    Without `mark`, the copy is only padded (its size and digests still name the recipient,
    its tensors are the original's): refused where it cannot be padded, as it would then be
    the original byte for byte."""
    if not mark and not pad:
        raise WatermarkError("a copy neither marked nor padded is the original: nothing to "
                             "issue")
    if mark and not any(store.weight_prints([model])):
        raise WatermarkError(f"no tensor fingerprint of {model} registered; run `weightwatch "
                             f"register` on the original first (detection compares with its "
                             f"rows)")
    src, dst = Path(source), Path(out)
    if dst.exists() and dst.resolve() == src.resolve():
        raise WatermarkError(f"{dst}: the copy must not overwrite the original")
    key = recipient_key(master, model, recipient)
    issued = Issued(model=model, recipient=recipient, path=dst, key_id=key_id(key))
    tmp = dst.with_name(f".{dst.name}.partial")
    try:
        with FileSource(src) as original:
            reader = open_weights(original)
            if getattr(reader, "source", original) is not original or len(
                    getattr(reader, "sources", [original])) != 1:
                raise WatermarkError(f"{src}: mark each file of a checkpoint on its own "
                                     f"(archives and sharded indexes are not rewritten)")
            padded = None
            if pad:
                padded = _padding(store, reader, issued, key, dst.name)
            else:
                issued.unpadded = "not asked for"
            if padded is None and not mark:
                raise WatermarkError(f"{src}: {issued.unpadded}; unmarked, the copy would be "
                                     f"the original")
            _write_unmarked(src, tmp, padded)
            if mark:
                _mark_all(reader, key, tmp, padded.shift if padded else 0, issued)
            else:
                fsync_path(tmp)  # on disk before it is renamed into place, as a marked copy is
        if mark and not issued.tensors:
            raise WatermarkError(f"{src}: no 2-D F32, F16 or BF16 tensor to mark")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    issued.size = dst.stat().st_size
    if release is None:
        release = _release_of(store, model, src.stat().st_size)
    with registry_change(store, rematch) as change:
        registered = register_paths(store, [dst], model=model, release=release,
                                    recipient=recipient, tensors=False, rematch=None)
        issued.artifact_id = registered[0].artifact_id
        if mark:
            store.add_watermark(model=model, recipient=recipient, key=key,
                                key_id=issued.key_id,
                                version=MARK_VERSION,
                                densities={t.canonical: t.density for t in issued.tensors},
                                artifact_id=issued.artifact_id)
    issued.rematched = change.rematched
    log.info("watermark_issued", model=model, recipient=recipient, key_id=issued.key_id,
             tensors=len(issued.tensors), size=issued.size, padding=issued.padding)
    return issued


def _release_of(store: Store, model: str, size: int) -> str | None:
    """The release of the registered original with this exact size, if exactly one is."""
    releases = {a["release"] for a in store.artifacts(model)
                if a["recipient"] is None and a["size"] == size}
    return releases.pop() if len(releases) == 1 else None


def _padding(store: Store, reader: WeightReader, issued: Issued, key: bytes,
             name: str) -> Padded | None:
    """The recipient's padding of this file: the first of its slots whose size no other
    recipient's copy, nor any other registered file, has. The recipient's own earlier
    copies do not count, so issuing again gives the same size."""
    taken = {a["size"] for a in store.artifacts()
             if (a["model"], a["recipient"]) != (issued.model, issued.recipient)}
    try:
        padded = choose_padding(reader, seed=key, name=name, taken=taken)
    except SizesTaken as exc:
        raise WatermarkError(str(exc)) from None
    except PaddingError as exc:
        issued.unpadded = str(exc)
        return None
    issued.padding = padded.shift
    return padded


def _write_unmarked(src: Path, tmp: Path, padded: Padded | None) -> None:
    """The original's bytes at `tmp`, after the padded head if there is one."""
    if padded is None:
        shutil.copyfile(src, tmp)
        return
    with src.open("rb") as fin, tmp.open("wb") as fout:
        fout.write(padded.head)
        fout.flush()
        left = src.stat().st_size - padded.data_start
        at = padded.data_start
        # The kernel copies (and may share extents) where it can, as `shutil.copyfile` does.
        copy_range = getattr(os, "copy_file_range", None)
        while left and copy_range is not None:
            try:
                done = copy_range(fin.fileno(), fout.fileno(), left, at)
            except OSError:
                break  # not between these file systems: copied by reads and writes below
            if done == 0:
                break
            at, left = at + done, left - done
        if left:
            fin.seek(at)
            fout.seek(len(padded.head) + at - padded.data_start)
            shutil.copyfileobj(fin, fout, 8 << 20)


def _mark_all(reader: WeightReader, key: bytes, path: Path, shift: int, issued: Issued) -> None:
    """Mark every markable tensor of the copy at `path`, whose tensors sit `shift` bytes
    after the original's; what was not marked, and why, goes to `issued.skipped`."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for tensor in reader.tensors:
            if tensor.extra.get("big_endian") or tensor.extra.get("member"):
                issued.skipped.append(f"{tensor.name}: stored in a way not rewritten")
            elif _markable(tensor):
                issued.tensors.append(_mark_tensor(reader, tensor, key, fd, shift))
            elif tensor.is_matrix and tensor.rows >= MIN_ROWS:
                issued.skipped.append(f"{tensor.name}: {tensor.dtype} is not marked "
                                      f"(only {', '.join(MARK_DTYPES)})")
        os.fsync(fd)
    finally:
        os.close(fd)


def _mark_tensor(reader: WeightReader, tensor: TensorInfo, key: bytes, fd: int,
                 shift: int = 0) -> TensorMark:
    canonical = canonical_name(tensor.name)
    order = canonical_order(reader, tensor)
    # The file's row j is canonical row to_canonical[j] (llama.cpp's Q/K permutation).
    to_canonical = np.arange(tensor.rows) if order is None else np.argsort(order)
    block = max(1, _BLOCK_BYTES // max(1, tensor.columns * 4))
    density = plan_density(_density_sample(reader, tensor), tensor.dtype)
    sums = np.zeros(3)  # original energy, mark energy, Q8_0 error energy
    blocks_of_32 = tensor.columns % 32 == 0
    for start in range(0, tensor.rows, block):
        stop = min(tensor.rows, start + block)
        rows = reader.read_rows(tensor, range(start, stop))
        marked = mark_rows(rows, tensor.dtype, key, canonical, to_canonical[start:stop], density)
        os.pwrite(fd, _encode(marked, tensor.dtype),
                  tensor.offset + shift + start * tensor.row_nbytes)
        sums[0] += float(np.sum(rows.astype(np.float64) ** 2))
        sums[1] += float(np.sum((marked - rows).astype(np.float64) ** 2))
        if blocks_of_32:
            sums[2] += float(np.sum((q8_0_roundtrip(rows) - rows).astype(np.float64) ** 2))
    scale = sums[0] if sums[0] > 0 else 1.0
    return TensorMark(name=tensor.name, canonical=canonical, dtype=tensor.dtype,
                      density=density, mark_rms=float(np.sqrt(sums[1] / scale)),
                      q8_0_rms=float(np.sqrt(sums[2] / scale)) if blocks_of_32 else None)


def _density_sample(reader: WeightReader, tensor: TensorInfo) -> np.ndarray:
    """Up to 4096 evenly spread rows: enough to plan a tensor's density."""
    rows = np.unique(np.linspace(0, tensor.rows - 1, min(tensor.rows, 4096)).astype(np.int64))
    return reader.read_rows(tensor, rows)


# -- detecting ----------------------------------------------------------------------------------


def detection_outcome(report: ScanReport) -> str:
    """Whose copy a scanned file is: `marked` (the attribution names the recipient) or
    `unmarked_original` for our model, `not_our_model` otherwise, or the scan's own
    verdict when it could not tell (`inconclusive`, `unknown_format`, `error`)."""
    if report.verdict == "match":
        return report.attribution.outcome if report.attribution else "unmarked_original"
    # A relative shares embeddings, not our layers: not our model either.
    if report.verdict in ("no_match", "related"):
        return "not_our_model"
    return report.verdict
