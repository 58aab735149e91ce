"""The registry: `register`, `indicators import`, `fingerprints export|import`, `rematch`."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fingerprints.ipfs import LAYOUTS, REGISTER_LAYOUTS, Layout
from monitor.cli.common import (
    HIT_JSON_COLUMNS,
    HIT_TABLE_COLUMNS,
    State,
    fail,
    format_option,
    since_iso,
)
from monitor.output import emit
from monitor.store import Store

if TYPE_CHECKING:  # the detectors load when a rematch runs, not with every command
    from monitor.rematch import RematchResult


def _layout_help(layout: Layout) -> str:
    leaves = "raw" if layout.raw_leaves else "dag-pb"
    kib = layout.chunk_size >> 10
    chunks = f"{kib >> 10} MiB" if kib % 1024 == 0 else f"{kib} KiB"
    return (f"{layout.name} (CIDv{layout.cid_version}, {chunks} chunks, {leaves} leaves, "
            f"{layout.max_links} links a node)")


def parse_cid_layouts(text: str) -> tuple[Layout, ...]:
    """`--cids`: layout names separated by commas, `all` or `none`, in LAYOUTS' order.
    Raises ValueError naming the valid names (one line)."""
    by_name = {layout.name: layout for layout in LAYOUTS}
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return LAYOUTS
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in by_name] or ([] if names else [text])
    if unknown:
        raise ValueError(f"--cids: unknown layout {unknown[0][:40]!r}; valid: "
                         f"{', '.join(by_name)}, all or none")
    return tuple(layout for layout in LAYOUTS if layout.name in names)


_DEFAULT_CIDS = ",".join(layout.name for layout in REGISTER_LAYOUTS)


@click.command("register")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", required=True, help="Model name the files belong to.")
@click.option("--release", help="Release label, e.g. v1.0.")
@click.option("--recipient", help="Recipient id when registering one recipient's copy.")
@click.option("--shards", is_flag=True,
              help="Also the SHA-256 of each 1 GB shard of larger files (sigstore "
                   "model-signing's sharded layout); a second SHA-256 pass over them.")
@click.option("--no-tensors", is_flag=True,
              help="Skip the tensor fingerprints of weight files (digests only).")
@click.option("--cids", default=_DEFAULT_CIDS, show_default=True, metavar="LAYOUTS",
              help="IPFS CIDs to record for each file and folder, as `ipfs add` (-r) would "
                   "give them: layout names separated by commas, `all` or `none`. Layouts: "
                   + "; ".join(_layout_help(layout) for layout in LAYOUTS)
                   + ". Each kind of leaf asked for (chunk size and leaf encoding) is a "
                     "SHA-256 pass of its own over every file (about 0.7 core-seconds a "
                     "GB): the default one, `all` three (the two 1 MiB layouts share "
                     "theirs). The default is kubo's `ipfs add`.")
@format_option
@click.pass_obj
def register(state: State, paths: tuple[str, ...], model: str, release: str | None,
             recipient: str | None, shards: bool, no_tensors: bool, cids: str,
             fmt: str) -> None:
    """Record released files' digests (size, SHA-256, SHA-1, MD5, BitTorrent v2 pieces
    root, IPFS CIDs, hub short hashes: AutoV1, AutoV3, CRC32, BLAKE3), folders recursively
    (with the folder's CID), and the tensor fingerprints of weight files (recognised by
    content: safetensors, GGUF, PyTorch, ONNX, numpy, and archives of them)."""
    from monitor.registry import register_paths

    try:
        cid_layouts = parse_cid_layouts(cids)
    except ValueError as exc:
        fail(str(exc), 2)
    show_progress = fmt == "table" and sys.stderr.isatty()
    bars: list[Any] = []
    seen: set[Path] = set()

    def on_file(path: Path, size: int) -> Callable[[int], None] | None:
        label = f"{path.name} (tensors)" if path in seen else path.name
        seen.add(path)
        if not show_progress or size < 64 * 2**20:
            return None
        bar = click.progressbar(length=size, label=label, file=sys.stderr)
        bar.__enter__()
        bars.append(bar)
        done = [0]

        def progress(n: int) -> None:
            bar.update(n - done[0])
            done[0] = n
            if n >= size:
                bar.__exit__(None, None, None)
        return progress

    with state.store() as store:
        try:
            files = register_paths(store, paths, model=model, release=release,
                                   recipient=recipient, on_file=on_file, shards=shards,
                                   tensors=not no_tensors, cid_layouts=cid_layouts,
                                   rematch=lambda s: run_rematch(state, s, fmt=fmt))
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}", 1)
        rematched = files.rematched
    rows = [{"name": f.name, "size": f.digests.size, "sha256": f.digests.sha256,
             "sha1": f.digests.sha1, "md5": f.digests.md5, "artifact_id": f.artifact_id,
             "new_digests": f.new_digests, "tensors": f.tensors, "model": model,
             "recipient": recipient} for f in files]
    emit(rows, fmt, table_columns=("name", "size", "sha256", "new_digests", "tensors"),
         empty="no files found")
    for f in files:
        if f.note:
            click.echo(f"{f.name}: {f.note}", err=True)
    if rematched is not None and fmt == "table":
        click.echo(rematched.summary(), err=True)


@click.group("indicators")
def indicators() -> None:
    """Known digests from outside: checksum lists, magnet links, hub records."""


@indicators.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", required=True)
@click.pass_obj
def indicators_import(state: State, file: str, model: str) -> None:
    """Import digests, names and sizes for MODEL from FILE, strictly (a line not understood
    stops the import).

    \b
    Text: sha256sum/sha1sum/md5sum lines (so Meta-style checklist.chk), BSD and
    `shasum --tag` lines, magnet links, btih:/btmh: infohashes, a bare infohash (40 hex,
    kept as SHA-1 and infohash both, or 32 base32), Git LFS pointer files, size lists
    (`du -b` or `stat -c '%s %n'` lines: bytes, then the name).
    JSON: model-hub model info (siblings with lfs.sha256; fetched with ?blobs=true) or a
    tree listing (lfs.oid).
    .torrent: a released torrent's infohashes, its files' names, sizes and v2 pieces roots.
    A name or size given for a digest already known is added to it (a checksum list and
    the LFS pointers of the same files, in either order); a size contradicting the known
    one stops the import. The stored documents are then matched again if anything was new.
    """
    from monitor.registry import IndicatorFileError, import_indicators

    with state.store() as store:
        try:
            result = import_indicators(store, file, model=model,
                                       rematch=lambda s: run_rematch(state, s))
        except IndicatorFileError as exc:
            fail(str(exc), 1)
        except OSError as exc:
            fail(f"{file}: {exc.strerror or exc}", 1)
        sized = (f", {result.files} files' names and sizes read" if result.files else "")
        described = (f"; {result.described} known digests newly named or sized"
                     if result.described else "")
        click.echo(f"{result.source}: {result.parsed} indicators read{sized}, {result.added} "
                   f"new for {model}{described}")
        if result.rematched is not None:
            click.echo(result.rematched.summary(), err=True)


@click.group("fingerprints")
def fingerprints_group() -> None:
    """Fingerprint bundles: the registry, carried from the release machine to the monitor."""


@fingerprints_group.command("export")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--model", "models", multiple=True, help="Only this model (repeatable).")
@click.pass_obj
def fingerprints_export(state: State, bundle: str, models: tuple[str, ...]) -> None:
    """Write the registry (models, artifacts' names, sizes and digests, imported indicators,
    tensor fingerprints, recipients' watermark keys) to BUNDLE, a gzip-compressed JSON
    file readable by its owner only; never paths, weights or the watermark master secret.

    Exit 1 if there is nothing to export or BUNDLE cannot be written.
    """
    from fingerprints.bundle import write_bundle
    from monitor.bundle import bundle_from_store

    with state.store(write=False) as store:
        known = store.models()
        for model in models:
            if model not in known:
                fail(f"--model: no model named {model!r} in {state.db_path} (known: "
                     f"{', '.join(known) or 'none'})", 2)
        data = bundle_from_store(store, models)
    if not data.artifacts and not data.indicators:
        fail(f"{state.db_path}: the registry is empty; nothing to export (register files "
             f"or import indicators first)", 1)
    try:
        write_bundle(data, bundle)
    except OSError as exc:
        fail(f"{bundle}: cannot write: {exc.strerror or exc}", 1)
    click.echo(f"{bundle}: {len(data.models)} models, {len(data.artifacts)} artifacts, "
               f"{len(data.indicators)} indicators, {len(data.watermarks)} recipients' "
               f"marks, {len(data.weight_prints)} tensor fingerprints exported")


@fingerprints_group.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def fingerprints_import(state: State, bundle: str) -> None:
    """Add a bundle's registry to this database, all or nothing, skipping what is already
    known (importing twice adds nothing); then match the stored documents again if anything
    was new. Exit 1 if the bundle is not valid (one line naming the entry)."""
    from fingerprints.bundle import BundleError, read_bundle
    from monitor.bundle import import_bundle

    try:
        data = read_bundle(bundle)
    except BundleError as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"{bundle}: {exc.strerror or exc}", 1)
    with state.store() as store:
        try:
            counts = import_bundle(store, data, rematch=lambda s: run_rematch(state, s))
        except BundleError as exc:
            fail(f"{bundle}: {exc}", 1)
    click.echo(f"{bundle}: {counts.models} models ({counts.models_new} new), "
               f"{counts.artifacts} artifacts ({counts.artifacts_new} new), "
               f"{counts.digests} digests ({counts.digests_new} new), "
               f"{counts.prints} tensor fingerprints ({counts.prints_new} new), "
               f"{counts.watermarks} recipients' marks ({counts.watermarks_new} new), "
               f"{counts.files} names and sizes ({counts.files_new} new)")
    if counts.rematched is not None:
        click.echo(counts.rematched.summary(), err=True)


# A progress bar is worth drawing (on a terminal) from this many documents.
PROGRESS_MIN_DOCUMENTS = 2000


def run_rematch(state: State, store: Store, *, targets: tuple[str, ...] = (),
                since: str | None = None, fmt: str = "table") -> RematchResult:
    """Run every detector over the stored documents again; a progress bar on stderr when
    it is a terminal, the output is a table and there are many documents."""
    from monitor.rematch import rematch_stored

    total = (store.count_documents(targets=targets, since=since)
             if fmt == "table" and sys.stderr.isatty() else 0)
    if total >= PROGRESS_MIN_DOCUMENTS:
        with click.progressbar(length=total, label="rematch", file=sys.stderr) as bar:
            return rematch_stored(store, state.config, targets=targets, since=since,
                                  progress=bar.update)
    return rematch_stored(store, state.config, targets=targets, since=since)


@click.command("rematch")
@click.option("--target", "names", multiple=True,
              help="Only documents of this target (repeatable).")
@click.option("--since", help="Only documents last seen within this duration, e.g. 24h, 30d.")
@format_option
@click.pass_obj
def rematch_cmd(state: State, names: tuple[str, ...], since: str | None, fmt: str) -> None:
    """Run the detectors again over the stored documents, recording (and queueing alerts
    for) the hits that are new, e.g. after the rules changed. Hits found before are left
    as they are. `register`, `indicators import` and `fingerprints import` do this by
    themselves when they add something.

    Prints the new hits (as `hits` does) and, in a table, `rematch: N documents, M new hits`.
    """
    since_at = since_iso(since)
    configured = {t.name for t in state.config.targets}
    with state.store() as store:
        for name in names:
            if name not in configured and not store.count_documents(targets=(name,)):
                fail(f"--target: no target named {name!r} in {state.config.path or '<defaults>'} "
                     f"or {state.db_path}", 2)
        result = run_rematch(state, store, targets=names, since=since_at, fmt=fmt)
        rows = [hit for hit_id in result.new_hits if (hit := store.hit(hit_id)) is not None]
    if fmt != "table":
        emit(rows, fmt, columns=HIT_JSON_COLUMNS)
        return
    if rows:
        emit(rows, fmt, columns=HIT_JSON_COLUMNS, table_columns=HIT_TABLE_COLUMNS)
    click.echo(result.summary())


COMMANDS = (register, indicators, fingerprints_group, rematch_cmd)
