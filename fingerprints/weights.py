"""Open any weight file the readers know, by what its bytes say it is.

One entry point for register, scan and the daemon: `open_weights(source)` sniffs the format
(`fingerprints.archives.sniff`) and returns a reader with `tensors` and `read_rows`, whatever
the file's name claims. An archive holding several weight files (a zip of shards, a tar of a
release) is read as one checkpoint whose tensor names are prefixed with the member's name.
A file that is no weight format is `UnknownFormat`, which callers report as the verdict
`unknown_format` rather than as an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fingerprints.archives import open_archive, safe_member_name, sniff, weight_members
from fingerprints.gguf import open_gguf
from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.numpy_files import open_npy, open_npz
from fingerprints.onnx import open_onnx
from fingerprints.pytorch import open_pytorch
from fingerprints.safetensors import open_safetensors
from fingerprints.tflite import open_tflite
from fingerprints.tensors import ByteSource, TensorInfo, TensorLookup, WeightFileError, WeightReader

__all__ = ["CombinedReader", "UnknownFormat", "open_weights"]

_OPENERS = {"safetensors": open_safetensors, "gguf": open_gguf, "pytorch-zip": open_pytorch,
            "onnx": open_onnx, "npy": open_npy, "npz": open_npz, "tflite": open_tflite}
# A file whose bytes are no known format but whose name claims one is handed to that
# format's reader, so the error says what is wrong (a header past the end of the file, a
# bad magic) instead of "unknown format".
_BY_EXTENSION = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx",
                 ".npy": "npy", ".npz": "npz", ".pt": "pytorch-zip", ".pth": "pytorch-zip",
                 ".ckpt": "pytorch-zip", ".tflite": "tflite"}
# An archive inside an archive is read one level deep only: deeper nesting has no
# legitimate use for weights and is a classic way to hide a bomb.
_MAX_MEMBERS_READ = 256


class UnknownFormat(WeightFileError):
    """Bytes that are none of the weight formats the readers know."""


class CombinedReader(TensorLookup):
    """Several readers seen as one: the members of an archive, named `member/tensor`."""

    def __init__(self, label: str, parts: Sequence[tuple[str, WeightReader]],
                 source: ByteSource):
        self._label = label
        self.source = source
        self.tensors: list[TensorInfo] = []
        self._owner: dict[str, tuple[WeightReader, TensorInfo]] = {}
        for prefix, reader in parts:
            for tensor in reader.tensors:
                name = f"{prefix}/{tensor.name}"
                info = TensorInfo(name, tensor.shape, tensor.dtype, tensor.offset, tensor.nbytes,
                                  tensor.row_nbytes, extra={**tensor.extra, "member": prefix})
                self.tensors.append(info)
                self._owner.setdefault(name, (reader, tensor))

    @property
    def label(self) -> str:
        return self._label

    def read_rows(self, tensor: TensorInfo, rows: Iterable[int] | np.ndarray) -> np.ndarray:
        owner = self._owner.get(tensor.name)
        if owner is None:
            raise KeyError(f"{self._label}: no tensor {tensor.name!r}")
        reader, inner = owner
        return reader.read_rows(inner, rows)


def open_weights(source: ByteSource, *, kind: str | None = None) -> WeightReader:
    """A reader for `source` chosen by its content (or by `kind`, a `sniff` name).

    UnknownFormat if it is no weight format; WeightFileError (one line) if it claims to be
    one and is malformed. A zip or tar is read member by member: every weight-named member
    that opens is part of the result; one that does not is skipped unless none opens.
    """
    kind = kind or sniff(source)
    if kind == "unknown":
        suffix = "." + source.name.rsplit(".", 1)[-1].lower() if "." in source.name else ""
        kind = _BY_EXTENSION.get(suffix, kind)
    opener = _OPENERS.get(kind)
    if opener is not None:
        return opener(source)
    if kind == "pickle-legacy":
        return open_pytorch(source)  # refuses with its own message: never unpickled
    if kind in ("zip", "tar"):
        return _open_archive(source)
    raise UnknownFormat(f"{source.name}: not a weight format this reader knows")


def _open_archive(source: ByteSource) -> WeightReader:
    archive = open_archive(source)
    parts: list[tuple[str, WeightReader]] = []
    errors: list[str] = []
    total = 0
    for member in weight_members(archive)[:_MAX_MEMBERS_READ]:
        member_source = archive.open(member)
        member_kind = sniff(member_source)
        if member_kind not in _OPENERS:
            errors.append(f"{safe_member_name(member.raw_name)}: {member_kind}")
            continue
        try:
            reader = _OPENERS[member_kind](member_source)
        except WeightFileError as exc:
            errors.append(str(exc))
            continue
        parts.append((safe_member_name(member.raw_name), reader))
        # Each member is bounded by its reader's limits; the archive as a whole is too, or
        # 256 members at the limit would cost 256 times what one file may.
        total += len(reader.tensors)
        if total > MAX_TENSORS_PER_FILE:
            raise WeightFileError(f"{source.name}: its weight files hold more than "
                                  f"{MAX_TENSORS_PER_FILE} tensors together")
    if not parts:
        if errors:
            raise WeightFileError(f"{source.name}: no readable weight file inside ({errors[0]})")
        raise UnknownFormat(f"{source.name}: an archive with no weight files")
    if len(parts) == 1:
        return parts[0][1]
    return CombinedReader(source.name, parts, source)
