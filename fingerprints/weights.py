"""Open any weight file the readers know, by what its bytes say it is.

One entry point for register, scan and the daemon: `open_weights(source)` sniffs the format
(`fingerprints.archives.sniff`) and returns a reader with `tensors` and `read_rows`, whatever
the file's name claims. An archive holding several weight files (a zip of shards, a tar of a
release) is read as one checkpoint whose tensor names are prefixed with the member's name.
Archives inside archives (a wheel holding a zip holding the safetensors, a zip in an npm
tarball) are opened the same way, `MAX_NESTING` levels deep, within one budget of members
and of bytes decompressed for the whole file (`_Walk`).
A file that is no weight format is `UnknownFormat`, which callers report as the verdict
`unknown_format` rather than as an error.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence

from fingerprints.archives import (
    ArchiveMember,
    TarArchive,
    ZipArchive,
    open_archive,
    safe_member_name,
    sniff,
)
from fingerprints.dequant import Floats
from fingerprints.gguf import open_gguf
from fingerprints.limits import MAX_TENSORS_PER_FILE
from fingerprints.numpy_files import open_npy, open_npz
from fingerprints.onnx import OutsideFolder, open_onnx
from fingerprints.pytorch import open_pytorch
from fingerprints.safetensors import open_safetensors
from fingerprints.tensors import (
    ByteSource,
    Rows,
    TensorInfo,
    TensorLookup,
    WeightFileError,
    WeightReader,
)
from fingerprints.tflite import open_tflite

__all__ = ["CombinedReader", "UnknownFormat", "open_weights"]

_OPENERS: dict[str, Callable[[ByteSource], TensorLookup]] = {"safetensors": open_safetensors, "gguf": open_gguf, "pytorch-zip": open_pytorch,
            "onnx": open_onnx, "npy": open_npy, "npz": open_npz, "tflite": open_tflite}
# A file whose bytes are no known format but whose name claims one is handed to that
# format's reader, so the error says what is wrong (a header past the end of the file, a
# bad magic) instead of "unknown format".
_BY_EXTENSION = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx",
                 ".npy": "npy", ".npz": "npz", ".pt": "pytorch-zip", ".pth": "pytorch-zip",
                 ".ckpt": "pytorch-zip", ".jit": "pytorch-zip", ".torchscript": "pytorch-zip",
                 ".ptl": "pytorch-zip", ".tflite": "tflite"}
# Archives inside the file, counted below it: a wheel (1) holding a zip (2) holding the
# weights is the deepest wrapping met in the wild; 3 leaves a level to spare, and stops a
# self-containing zip (a quine such as r.zip) or a 42.zip-style tower at once.
MAX_NESTING = 3
# Members opened (weights and archives, every level together): a release ships tens.
_MAX_MEMBERS_READ = 256
# Bytes decompressed for the whole file, every level together (zip members inflated in
# memory, compressed tars' members copied to a temporary file): each archive caps its own
# members at 1 GiB; this stops 256 of them, or three levels of them, from costing 256 times
# or three times that.
MAX_INFLATE_TOTAL = 1 << 30


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

    def read_rows(self, tensor: TensorInfo, rows: Rows) -> Floats:
        owner = self._owner.get(tensor.name)
        if owner is None:
            raise KeyError(f"{self._label}: no tensor {tensor.name!r}")
        reader, inner = owner
        return reader.read_rows(inner, rows)


def open_weights(source: ByteSource, *, kind: str | None = None,
                 open_sibling: Callable[[str], ByteSource] | None = None) -> WeightReader:
    """A reader for `source` chosen by its content (or by `kind`, a `sniff` name).

    UnknownFormat if it is no weight format; WeightFileError (one line) if it claims to be
    one and is malformed. A zip or tar is read member by member: every weight-named member
    that opens is part of the result; one that does not is skipped unless none opens.
    `open_sibling` opens an ONNX model's external data beside it (a remote folder); an
    ONNX member of an archive reads its side files from its own archive folder.
    """
    kind = kind or sniff(source)
    if kind == "unknown":
        suffix = "." + source.name.rsplit(".", 1)[-1].lower() if "." in source.name else ""
        kind = _BY_EXTENSION.get(suffix, kind)
    if kind == "onnx" and open_sibling is not None:
        return open_onnx(source, open_sibling)
    opener = _OPENERS.get(kind)
    if opener is not None:
        return opener(source)
    if kind == "pickle-legacy":
        return open_pytorch(source)  # refuses with its own message: never unpickled
    if kind in ("zip", "tar"):
        return _open_archive(source)
    raise UnknownFormat(f"{source.name}: not a weight format this reader knows")


class _Overrun(WeightFileError):
    """A bound of the whole walk was passed: the scan of this file ends here."""


class _Walk:
    """What one file's archives may still cost, shared by every level of nesting."""

    def __init__(self, root: ByteSource):
        self.root = root
        self.members = _MAX_MEMBERS_READ
        self.inflate = MAX_INFLATE_TOTAL
        self.tensors = 0

    def spend(self, members: int = 0, inflated: int = 0, tensors: int = 0) -> None:
        self.members -= members
        self.inflate -= inflated
        self.tensors += tensors
        if self.members < 0:
            raise _Overrun(f"{self.root.name}: more than {_MAX_MEMBERS_READ} weight and archive "
                           "members inside; refusing")
        if self.inflate < 0:
            raise _Overrun(f"{self.root.name}: its archives decompress to more than "
                           f"{MAX_INFLATE_TOTAL} bytes together; refusing")
        # Each member is bounded by its reader's limits; the archive as a whole is too, or
        # 256 members at the limit would cost 256 times what one file may.
        if self.tensors > MAX_TENSORS_PER_FILE:
            raise _Overrun(f"{self.root.name}: its weight files hold more than "
                           f"{MAX_TENSORS_PER_FILE} tensors together")


def _open_archive(source: ByteSource) -> WeightReader:
    walk = _Walk(source)
    parts: list[tuple[str, WeightReader]] = []
    errors: list[str] = []
    try:
        _collect(source, "", 0, walk, parts, errors)
    except _Overrun as exc:
        raise WeightFileError(str(exc)) from None
    if not parts:
        if errors:
            raise WeightFileError(f"{source.name}: no readable weight file inside ({errors[0]})")
        raise UnknownFormat(f"{source.name}: an archive with no weight files")
    if len(parts) == 1:
        return parts[0][1]
    return CombinedReader(source.name, parts, source)


def _collect(source: ByteSource, prefix: str, depth: int, walk: _Walk,
             parts: list[tuple[str, WeightReader]], errors: list[str]) -> None:
    """Every weight file in the archive `source` (at nesting `depth`) and in the archives
    inside it, appended to `parts` named by their path through the archives (`a.whl` holding
    `m.zip` holding `w.safetensors`: `m.zip!w.safetensors`). A member that does not open is
    an entry in `errors`; `_Overrun` ends the whole walk."""
    archive = open_archive(source, max_inflate=max(1, walk.inflate))
    if isinstance(archive, TarArchive):  # a compressed tar's members are already copied out
        walk.spend(inflated=archive.spooled_bytes)
    for member in archive.members:
        if not member.is_wanted:
            continue
        name = f"{prefix}{safe_member_name(member.raw_name)}"
        inflating = isinstance(archive, ZipArchive) and member.method != "stored"
        walk.spend(members=1, inflated=member.size if inflating else 0)
        try:
            member_source = archive.open(member)
            member_kind = sniff(member_source)
            if member_kind in ("zip", "tar"):
                if depth + 1 >= MAX_NESTING:
                    raise WeightFileError(f"{name}: archives nest deeper than {MAX_NESTING} "
                                          "levels; refusing")
                _collect(member_source, name + "!", depth + 1, walk, parts, errors)
                continue
            if member_kind not in _OPENERS:
                errors.append(f"{name}: {member_kind}")
                continue
            if member_kind == "onnx":
                reader: TensorLookup = open_onnx(member_source,
                                                 _archive_siblings(archive, member, walk))
            else:
                reader = _OPENERS[member_kind](member_source)
        except _Overrun:
            raise
        except WeightFileError as exc:
            errors.append(str(exc))
            continue
        parts.append((name, reader))
        walk.spend(tensors=len(reader.tensors))


def _archive_siblings(archive: ZipArchive | TarArchive, model: ArchiveMember,
                      walk: _Walk) -> Callable[[str], ByteSource]:
    """An `open_sibling` for an ONNX member: members of the same archive, in the model's
    folder or below it. The location comes from the untrusted model, so a name that would
    leave that folder is OutsideFolder; one the archive lacks is a plain WeightFileError
    (the reader notes it and reads the rest). Inflating a side file spends the walk's
    budget like any member."""
    folder = posixpath.dirname(model.raw_name.replace("\\", "/"))

    def open_sibling(location: str) -> ByteSource:
        wanted = posixpath.normpath(posixpath.join(folder, location.replace("\\", "/")))
        inside = (not location.startswith(("/", "\\")) and not wanted.startswith(("/", "../"))
                  and wanted != ".." and (not folder or wanted.startswith(folder + "/")))
        if not inside:
            raise OutsideFolder(f"external data {location!r} resolves outside the model's "
                                "folder in the archive")
        try:
            member = archive.member(wanted)
        except WeightFileError:
            raise WeightFileError(f"no member {safe_member_name(wanted)!r} in "
                                  f"{archive.source.name}") from None
        if member.is_dir:
            raise WeightFileError(f"{safe_member_name(wanted)!r} is a folder")
        inflating = isinstance(archive, ZipArchive) and member.method != "stored"
        walk.spend(members=1, inflated=member.size if inflating else 0)
        return archive.open(member)

    return open_sibling
