"""Recording what was released: file digests from `register`, indicators from `import`.

This is the release engineer's side. It reads the released files once each (all digests in
one pass) and stores only digests and names, never the weights themselves. A weight file's
tensor fingerprint reads only the rows it sketches; it is computed on its own thread while
the digest pass reads the file, so on two cores the two share the machine instead of
taking turns (issue 16: register with the fingerprint within 2x `md5sum`).

A leak posted before its digests were registered is still a leak: whatever adds to the
registry here matches the stored documents again (`monitor.rematch`) once it is done, for
every caller, unless the caller says otherwise (`rematch=None`). The default rematch uses
the default config (no rules, default scan and crawl settings); the CLI passes its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fingerprints.digests import FileDigests, digest_file, iter_files, yield_to_md5
from fingerprints.ipfs import (
    REGISTER_LAYOUTS,
    DagRef,
    Layout,
    release_folder_cids,
    root_digests,
)
from monitor.threads import one_blas_thread

if TYPE_CHECKING:
    from fingerprints.weightprint import WeightPrint
    from monitor.rematch import RematchResult
    from monitor.store import Store

MAX_INDICATOR_FILE = 64 * 1024 * 1024

# Matches the stored documents again after the registry changed.
Rematch = Callable[["Store"], "RematchResult"]


def rematch_with_defaults(store: Store) -> RematchResult:
    """The rematch a library caller gets: every detector of the default config."""
    from monitor.config import parse_config
    from monitor.rematch import rematch_stored

    return rematch_stored(store, parse_config({}, None))


def _load_meanwhile(*, tensors: bool, rematch: bool) -> threading.Thread:
    """Import what comes after the digest pass on a thread while it runs, instead of
    after it (about 0.4 s together; the hash workers leave the interpreter free most of
    the time): numpy and the weight readers for the fingerprints, the detectors (the HTTP
    client, every detector) for the rematch that follows. One thread, in the order
    `print_weights` imports them, so that no two threads take the import locks of the
    same modules in different orders."""
    def load() -> None:
        if tensors:
            import fingerprints.tensors
            import fingerprints.weightprint
            import fingerprints.weights  # noqa: F401
        if rematch:
            import monitor.rematch  # noqa: F401

    thread = threading.Thread(target=load, name="register-imports", daemon=True)
    thread.start()
    return thread


@dataclass
class RegistryChange:
    """Whether a block of registrations changed the registry, and the rematch it led to."""

    rematched: RematchResult | None = None


@contextmanager
def registry_change(store: Store, rematch: Rematch | None) -> Iterator[RegistryChange]:
    """Run `rematch` after the block if it added anything to the registry (files, digests,
    tensor fingerprints: what detectors compare with), and only then."""
    change = RegistryChange()
    before = _registry_state(store)
    yield change
    if rematch is not None and _registry_state(store) != before:
        change.rematched = rematch(store)


def _registry_state(store: Store) -> tuple[dict[str, int], int, int]:
    # The registry only grows, so any growth shows in its row counts or versions.
    return (store.registry_counts(), store.weight_print_version(),
            store.imported_files_version())


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


class RegisteredFiles(list[RegisteredFile]):
    """The files `register_paths` recorded, and the rematch that followed (None: the
    registry did not change, or the caller asked for none)."""

    rematched: RematchResult | None = None


@dataclass
class ImportResult:
    source: str
    parsed: int  # digests read
    added: int  # digests new to the model
    files: int = 0  # names and sizes read without a digest (size lists, v1 torrent files)
    described: int = 0  # digests known before that this import gave a new name or size
    rematched: RematchResult | None = field(default=None, compare=False)


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
                   shards: bool = False, tensors: bool = True,
                   cid_layouts: Sequence[Layout] = REGISTER_LAYOUTS,
                   rematch: Rematch | None = rematch_with_defaults) -> RegisteredFiles:
    """Digest every file under `paths` and record it as an artifact of `model`; with
    `tensors` (the default), also fingerprint the tensors of every weight file, whatever
    its name, so converted and quantised copies are recognised too.

    `on_file(path, size)` may return a progress callback for that file's bytes (called for
    the digest pass, then for the fingerprint pass of a weight file); `shards` adds the
    SHA-256 of each 1 GB shard of files larger than that; `cid_layouts` are the IPFS
    layouts whose CIDs are recorded for each file and each folder in `paths` (kubo's
    default unless told; fingerprints.ipfs.LAYOUTS for all, at a SHA-256 pass per kind of
    leaf). If anything was new, `rematch` runs once at the end (its result is the returned
    list's `rematched`).
    """
    roots = [Path(p) for p in paths]
    out = RegisteredFiles()
    _load_meanwhile(tensors=tensors, rematch=rematch is not None)
    with registry_change(store, rematch) as change:
        out.extend(_register(store, roots, model=model, release=release, recipient=recipient,
                             on_file=on_file, shards=shards, tensors=tensors,
                             cid_layouts=cid_layouts))
    out.rematched = change.rematched
    return out


def _register(store: Store, roots: list[Path], *, model: str, release: str | None,
              recipient: str | None,
              on_file: Callable[[Path, int], Callable[[int], None] | None] | None,
              shards: bool, tensors: bool,
              cid_layouts: Sequence[Layout]) -> Iterator[RegisteredFile]:
    cid_roots: dict[str, dict[str, DagRef]] = {}
    for path in iter_files(roots):
        size = path.stat().st_size
        # Started first, so that the fingerprint overlaps the digest pass.
        printing = _Printing(path) if tensors else None
        try:
            progress = on_file(path, size) if on_file else None
            digests = digest_file(path, progress=progress, shards=shards,
                                  cid_layouts=cid_layouts, short_hashes=True)
            cid_roots[str(path)] = dict(digests.cids)
            name = artifact_name(path, roots)
            artifact_id, added = store.add_artifact(
                model=model, name=name, path=str(path.resolve()), size=digests.size,
                sha256=digests.sha256, sha1=digests.sha1, md5=digests.md5,
                pieces_root=digests.pieces_root, shards=digests.shards, release=release,
                recipient=recipient, cids=root_digests(digests.cids))
            if digests.short:  # AutoV1, AutoV3, CRC32, BLAKE3: what hubs and A1111 show
                store.add_short_hashes(artifact_id, model, digests.short)
            registered = RegisteredFile(name, digests, artifact_id, sum(added))
            if printing is not None:
                printing.store(store, registered, model=model, on_file=on_file)
        except BaseException:
            if printing is not None:
                printing.cancel()  # a failed file leaves no thread behind
            raise
        yield registered
    for root in roots:   # a folder's CID, as `ipfs add -r` would give it
        if root.is_dir():
            store.add_folder_cids(model=model, name=root.resolve().name, recipient=recipient,
                                  cids=release_folder_cids(root, cid_roots, cid_layouts))


def fingerprint_file(store: Store, path: Path, registered: RegisteredFile, *, model: str,
                     on_file: Callable[[Path, int], Callable[[int], None] | None] | None = None
                     ) -> WeightPrint | None:
    """Fingerprint one registered file's tensors if it is a weight file (by content, not
    name) and store the print; a malformed weight file keeps its digests and gets a note."""
    already = store.printed_tensors(registered.artifact_id)
    if already is not None:
        registered.tensors = already
        return None
    sized = (lambda n: on_file(path, n)) if on_file else None
    print_, registered.note = print_weights(path, sized)
    return _store_print(store, registered, print_, model=model)


def print_weights(path: Path,
                  on_size: Callable[[int], Callable[[int], None] | None] | None = None
                  ) -> tuple[WeightPrint | None, str | None]:
    """The tensor fingerprint of a weight file (by content, not name), or None and why not
    (None and None: not a weight file). `on_size(n)`, once the file is known to hold n
    bytes of matrices, may return a progress callback for them (called last with n)."""
    # In this order, as _load_meanwhile loads them.
    from fingerprints.tensors import FileSource, WeightFileError
    from fingerprints.weightprint import fingerprint_weights, new_key
    from fingerprints.weights import UnknownFormat, open_weights

    with FileSource(path) as source:
        try:
            reader = open_weights(source)
        except UnknownFormat:
            return None, None
        except WeightFileError as exc:
            return None, f"no tensor fingerprint: {exc}"
        weight_bytes = sum(t.nbytes for t in reader.tensors if len(t.shape) >= 2)
        progress = on_size(weight_bytes) if on_size else None
        try:
            print_ = fingerprint_weights(reader, new_key(), progress=progress)
        except WeightFileError as exc:
            return None, f"no tensor fingerprint: {exc}"
        finally:
            if progress is not None:
                progress(weight_bytes)
    if not print_.tensors:
        return None, "no matrix (a tensor of two or more dimensions) to fingerprint"
    return print_, None


def _store_print(store: Store, registered: RegisteredFile, print_: WeightPrint | None, *,
                 model: str) -> WeightPrint | None:
    if print_ is None:
        return None
    store.add_weight_print(model=model, name=registered.name, print_=print_,
                           artifact_id=registered.artifact_id)
    registered.tensors = len(print_.tensors)
    return print_


class _Cancelled(Exception):
    """Raised in the fingerprint thread, through its progress callback, to stop it."""


class _Printing:
    """`print_weights` of one file on its own thread, started before the file's digest
    pass so that both run at once: the fingerprint reads only the rows it sketches, the
    digest pass every byte, and neither waits for the other. Nothing here touches the
    store (its connection belongs to the registering thread), and the caller's progress
    callbacks are called from the registering thread only, after the digest pass's, as
    they would be one pass after the other."""

    _POLL = 0.1  # seconds between progress reports while waiting for the thread

    def __init__(self, path: Path) -> None:
        self.path = path
        self.weight_bytes: int | None = None
        self.done = 0
        self.result: tuple[WeightPrint | None, str | None] = (None, None)
        self.error: BaseException | None = None
        self._sized = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fingerprint-{path.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        yield_to_md5()  # like every digest but MD5, the longest (fingerprints/digests.py)
        try:
            with one_blas_thread():
                self.result = print_weights(self.path, self._on_size)
        except _Cancelled:
            pass
        except BaseException as exc:  # re-raised in the registering thread
            self.error = exc
        finally:
            self._sized.set()

    def _on_size(self, weight_bytes: int) -> Callable[[int], None]:
        self.weight_bytes = weight_bytes
        self._sized.set()
        return self._progress

    def _progress(self, done: int) -> None:
        if self._stop.is_set():
            raise _Cancelled
        self.done = done

    def cancel(self) -> None:
        """Stop at the next tensor and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def store(self, store: Store, registered: RegisteredFile, *, model: str,
              on_file: Callable[[Path, int], Callable[[int], None] | None] | None
              ) -> WeightPrint | None:
        """Wait for the fingerprint (reporting its progress as `fingerprint_file` would)
        and store it; a file printed before keeps its print and this one is dropped."""
        already = store.printed_tensors(registered.artifact_id)
        if already is not None:
            self.cancel()
            registered.tensors = already
            return None
        self._sized.wait()
        progress = (on_file(self.path, self.weight_bytes)
                    if on_file and self.weight_bytes is not None else None)
        try:
            while self._thread.is_alive():
                self._thread.join(self._POLL if progress is not None else None)
                if progress is not None:
                    progress(self.done)
        except BaseException:
            self.cancel()
            raise
        finally:
            if progress is not None and self.weight_bytes is not None:
                progress(self.weight_bytes)
        if self.error is not None:
            raise self.error
        print_, registered.note = self.result
        return _store_print(store, registered, print_, model=model)


def import_indicators(store: Store, path: str | Path, *, model: str,
                      rematch: Rematch | None = rematch_with_defaults) -> ImportResult:
    """Read a checksum list, magnet file, LFS pointer, size list, model-hub JSON or released
    .torrent and add its digests, names and sizes for `model`, all or none; raise
    IndicatorFileError/OSError naming the file. If anything was new, `rematch` runs after
    the import (its result is `rematched`).

    A name or size given for a digest already known is added to it (so a checksum list and
    the LFS pointers of the same files give names and sizes in either order), but a size
    that contradicts the one known is refused: one of the two sources is wrong.

    Each indicator's source is `import:FILE:LINE` (text) or `import:FILE:ENTRY` (JSON or
    .torrent, e.g. `import:model-info.json:siblings[3]`), FILE being the file's name
    without its folder.
    """
    from fingerprints.indicators import IndicatorError, parse_indicator_file

    path = Path(path)
    if path.stat().st_size > MAX_INDICATOR_FILE:
        raise IndicatorFileError(f"{path}: larger than {MAX_INDICATOR_FILE // 2**20} MiB; "
                                 f"not an indicator list")
    try:
        parsed = parse_indicator_file(path.read_bytes())
    except IndicatorError as exc:
        raise IndicatorFileError(f"{path}: {exc}") from None
    added = described = 0
    with registry_change(store, rematch) as change:
        with store.db.atomic():
            for ind in parsed.indicators:
                where = ind.origin or (str(ind.line) if ind.line else None)
                source = f"import:{path.name}" + (f":{where}" if where else "")
                if ind.size is not None and (known := store.known_size(ind.algo, ind.value)):
                    if known[0] != ind.size:
                        at = ind.origin or f"line {ind.line}"
                        raise IndicatorFileError(
                            f"{path}: {at}: size {ind.size} for {ind.algo} {ind.value[:16]}..., "
                            f"but {known[1]} gave {known[0]}")
                claims = store.imported_files_version()
                if store.add_indicator(algo=ind.algo, value=ind.value, model=model,
                                       name=ind.name, size=ind.size, source=source):
                    added += 1
                elif store.imported_files_version() != claims:
                    described += 1  # a name or size new to a digest known before
            for entry in parsed.files:
                where = entry.origin or str(entry.line)
                store.add_imported_file(model=model, name=entry.name, size=entry.size,
                                        source=f"import:{path.name}:{where}")
    return ImportResult(source=str(path), parsed=len(parsed.indicators), added=added,
                        files=len(parsed.files), described=described,
                        rematched=change.rematched)

