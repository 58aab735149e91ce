"""Recording what was released: file digests from `register`, indicators from `import`.

This is the release engineer's side. It reads the released files once each (all digests in
one pass) and stores only digests and names, never the weights themselves. Whatever adds to
the registry here should be followed by a rematch of the stored documents
(`monitor.rematch`), which the CLI does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fingerprints.digests import FileDigests, digest_file, iter_files
from fingerprints.indicators import IndicatorError, parse_indicator_text
from fingerprints.tensors import FileSource, WeightFileError
from fingerprints.weightprint import WeightPrint, fingerprint_weights, new_key
from fingerprints.weights import UnknownFormat, open_weights
from monitor.store import Store

MAX_INDICATOR_FILE = 64 * 1024 * 1024


class IndicatorFileError(ValueError):
    """An indicator file that cannot be imported; the message names the file (and line)."""


@dataclass
class RegisteredFile:
    name: str
    digests: FileDigests
    artifact_id: int
    new_digests: int
    tensors: int = 0              # tensors fingerprinted (0: not a weight file, or skipped)
    note: str | None = None       # why a weight file got no tensor fingerprint


@dataclass
class ImportResult:
    source: str
    parsed: int
    added: int


def artifact_name(path: Path, roots: list[Path]) -> str:
    """A released file's name as recipients see it: relative to the folder registered
    (keeping that folder's own name, e.g. `heron-7b/model.safetensors`)."""
    resolved = path.resolve()
    for root in roots:
        root = root.resolve()
        if root.is_dir() and resolved.is_relative_to(root):
            return str(Path(root.name) / resolved.relative_to(root))
    return path.name


def register_paths(store: Store, paths: Iterable[str | Path], *, model: str,
                   release: str | None = None, recipient: str | None = None,
                   on_file: Callable[[Path, int], Callable[[int], None] | None] | None = None,
                   shards: bool = False, tensors: bool = True) -> list[RegisteredFile]:
    """Digest every file under `paths` and record it as an artifact of `model`; with
    `tensors` (the default), also fingerprint the tensors of every weight file, whatever
    its name, so converted and quantised copies are recognised too.

    `on_file(path, size)` may return a progress callback for that file's bytes (called for
    the digest pass, then for the fingerprint pass of a weight file); `shards` adds the
    SHA-256 of each 1 GB shard of files larger than that.
    """
    roots = [Path(p) for p in paths]
    out = []
    for path in iter_files(roots):
        size = path.stat().st_size
        progress = on_file(path, size) if on_file else None
        digests = digest_file(path, progress=progress, shards=shards)
        name = artifact_name(path, roots)
        artifact_id, added = store.add_artifact(
            model=model, name=name, path=str(path.resolve()), size=digests.size,
            sha256=digests.sha256, sha1=digests.sha1, md5=digests.md5,
            pieces_root=digests.pieces_root, shards=digests.shards, release=release,
            recipient=recipient)
        registered = RegisteredFile(name, digests, artifact_id, sum(added))
        if tensors:
            fingerprint_file(store, path, registered, model=model, on_file=on_file)
        out.append(registered)
    return out


def fingerprint_file(store: Store, path: Path, registered: RegisteredFile, *, model: str,
                     on_file: Callable[[Path, int], Callable[[int], None] | None] | None = None
                     ) -> WeightPrint | None:
    """Fingerprint one registered file's tensors if it is a weight file (by content, not
    name) and store the print; a malformed weight file keeps its digests and gets a note."""
    already = store.printed_tensors(registered.artifact_id)
    if already is not None:
        registered.tensors = already
        return None
    with FileSource(path) as source:
        try:
            reader = open_weights(source)
        except UnknownFormat:
            return None
        except WeightFileError as exc:
            registered.note = f"no tensor fingerprint: {exc}"
            return None
        weight_bytes = sum(t.nbytes for t in reader.tensors if len(t.shape) >= 2)
        progress = on_file(path, weight_bytes) if on_file else None
        try:
            print_ = fingerprint_weights(reader, new_key(), progress=progress)
        except WeightFileError as exc:
            registered.note = f"no tensor fingerprint: {exc}"
            return None
        finally:
            if progress is not None:
                progress(weight_bytes)
    if not print_.tensors:
        registered.note = "no matrix (a tensor of two or more dimensions) to fingerprint"
        return None
    store.add_weight_print(model=model, name=registered.name, print_=print_,
                           artifact_id=registered.artifact_id)
    registered.tensors = len(print_.tensors)
    return print_


def import_indicators(store: Store, path: str | Path, *, model: str) -> ImportResult:
    """Read a checksum list, magnet file, LFS pointer or model-hub JSON and add its digests
    for `model`, all or none; raise IndicatorFileError/OSError naming the file.

    Each indicator's source is `import:FILE:LINE` (text) or `import:FILE:ENTRY` (JSON, e.g.
    `import:model-info.json:siblings[3]`), FILE being the file's name without its folder.
    """
    path = Path(path)
    if path.stat().st_size > MAX_INDICATOR_FILE:
        raise IndicatorFileError(f"{path}: larger than {MAX_INDICATOR_FILE // 2**20} MiB; "
                                 f"not an indicator list")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise IndicatorFileError(f"{path}: not UTF-8 text") from None
    try:
        indicators = parse_indicator_text(text)
    except IndicatorError as exc:
        raise IndicatorFileError(f"{path}: {exc}") from None
    added = 0
    with store.db.atomic():
        for ind in indicators:
            where = ind.origin or (str(ind.line) if ind.line else None)
            added += store.add_indicator(
                algo=ind.algo, value=ind.value, model=model, name=ind.name, size=ind.size,
                source=f"import:{path.name}" + (f":{where}" if where else ""))
    return ImportResult(source=str(path), parsed=len(indicators), added=added)
