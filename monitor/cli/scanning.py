"""Is this file ours, and whose copy: `scan` and `watermark issue|detect`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from monitor.cli.common import State, fail, format_option, run_interruptible
from monitor.cli.registry import run_rematch
from monitor.output import emit

if TYPE_CHECKING:
    from monitor.scan import ScanReport


scan_options = [
    click.argument("locations", nargs=-1, required=True),
    click.option("--model", "models", multiple=True,
                 help="Compare with this registered model only (repeatable)."),
    click.option("--max-bytes", type=click.IntRange(min=4096),
                 help="Bytes one file may cost, header included [default: the config's "
                      "[scan] max_bytes]."),
    click.option("--allow-private", is_flag=True,
                 help="Let a URL reach loopback and private addresses (a file served "
                      "locally)."),
    format_option,
]


def with_scan_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(scan_options):
        command = option(command)
    return command


def _scan_all(state: State, locations: tuple[str, ...], models: tuple[str, ...],
              allow_private: bool, *, digests: bool = True, max_bytes: int | None = None,
              max_false_match: float | None = None) -> list[ScanReport]:
    """Scan each location (a path, or a URL through the crawler's fetcher) against the
    registry, digests first unless `digests` is off (the watermark test wants the tensors
    read even of a registered copy); exit 1 with a hint if nothing is registered to
    compare with."""
    import dataclasses

    from monitor.config import Target
    from monitor.fetch import Fetcher
    from monitor.scan import load_registry, scan_link, scan_path

    settings = state.config.scan
    if max_bytes is not None:
        settings = dataclasses.replace(settings, max_bytes=max_bytes)
    if max_false_match is not None:
        settings = dataclasses.replace(settings, max_false_match=max_false_match)
    with state.store(write=False) as store:
        registry = load_registry(store, models)
    if not digests:
        registry = dataclasses.replace(registry, digests={})
    if registry.empty:
        fail("no tensor fingerprints registered" + (f" for {', '.join(models)}" if models else "")
             + ", nor any file digest; run `weightwatch register` on the released weights or import a bundle", 1)

    async def remote(url: str) -> ScanReport:
        target = Target(name="scan", kind="scan", url=url, interval=0, jitter=0,
                        allow_private=allow_private)
        async with Fetcher(state.config.crawl) as fetcher:
            return await scan_link(url, registry, settings, fetcher, target)

    return [run_interruptible(remote(location)) if location.startswith(("http://", "https://"))
            else scan_path(location, registry, settings) for location in locations]


def _finish_scans(reports: list[ScanReport], fmt: str) -> None:
    if fmt == "table":
        for report in reports:
            if report.error:  # the readers' messages start with the file's name
                click.echo(report.error, err=True)
    if any(r.verdict == "error" for r in reports):
        sys.exit(1)


@click.command("scan")
@with_scan_options
@click.option("--max-false-match", type=click.FloatRange(min=0, max=1, min_open=True),
              help="A match needs a false-match probability at most this [default: the "
                   "config's, 1e-6].")
@click.pass_obj
def scan(state: State, locations: tuple[str, ...], models: tuple[str, ...],
         max_bytes: int | None, allow_private: bool, fmt: str,
         max_false_match: float | None) -> None:
    """Is this file our model? Compare weight files (PATH, or an http(s) URL read by Range
    requests through the crawler's safe fetcher) with the registered tensor fingerprints,
    whatever their format, names, dtype or quantisation.

    Digests first: a file byte-identical to a registered one (or a URL whose server states
    a registered SHA-256, e.g. a hub's X-Linked-Etag) is `match` at once, naming the
    artifact and, for a recipient's copy, the recipient.

    Prints per file the verdict (match: our layer matrices found; related: only tensors
    relatives share, such as embeddings; no_match; inconclusive: nothing could be
    compared; unknown_format; error), the model, the score (share of the compared
    matrices that are our layer matrices), the false-match probability, the tensors
    compared and the bytes read; for a model with marked copies, the watermark
    test too. A sharded checkpoint is scanned through its `*.safetensors.index.json`.
    Exit 1 if a file could not be scanned.
    """
    reports = _scan_all(state, locations, models, allow_private, max_bytes=max_bytes,
                        max_false_match=max_false_match)
    rows = [r.as_dict() for r in reports]
    for row in rows:
        if row["false_match_probability"] is not None:
            row["false_match_probability"] = float(f"{row['false_match_probability']:.3g}")
    if fmt == "table":
        # The JSON's `watermark` is the whole test; a person needs its outcome and whose
        # copy it is (by the mark, or by the digest of a recipient's byte-identical copy).
        rows = [{**row, "watermark": r.attribution.outcome if r.attribution else None,
                 "recipient": (r.attribution.recipient if r.attribution
                               else (r.digest or {}).get("recipient"))}
                for row, r in zip(rows, reports)]
    emit(rows, fmt, table_columns=("location", "verdict", "model", "score",
                                   "false_match_probability", "watermark", "recipient",
                                   "tensors_compared", "bytes_read"),
         drop=("tensors_compared", "bytes_read", "score", "false_match_probability", "model"))
    _finish_scans(reports, fmt)


@click.group("watermark")
def watermark_group() -> None:
    """Marked copies for recipients, and whose copy a leaked file is."""


@watermark_group.command("issue")
@click.option("--model", required=True, help="The registered model the original belongs to.")
@click.option("--recipient", required=True, help="Who receives this copy.")
@click.option("--in", "source", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The original weight file (safetensors, GGUF or npy with F32/F16/BF16 "
                   "matrices).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the recipient's copy.")
@click.option("--key-file", type=click.Path(dir_okay=False),
              help="The master secret, in a file only you can read [default: "
                   "$WEIGHTWATCH_WATERMARK_KEY].")
@format_option
@click.pass_obj
def watermark_issue(state: State, model: str, recipient: str, source: str, out: str,
                    key_file: str | None, fmt: str) -> None:
    """Write RECIPIENT's marked copy of a weight file: same format, dtypes and layout, a
    keyed mark in every 2-D weight matrix no stronger than Q8_0 quantisation. The copy's
    digests are registered as the recipient's artifact and its key as verification data;
    the master secret is read from the environment or --key-file and stored nowhere.
    Register the original (`weightwatch register`) first: its fingerprint keeps the rows
    the detector compares with."""
    from fingerprints.tensors import WeightFileError
    from fingerprints.watermark import WatermarkError
    from monitor.watermark import issue_copy, master_secret

    try:
        master = master_secret(key_file)
        with state.store() as store:
            issued = issue_copy(store, model=model, recipient=recipient, source=source,
                                out=out, master=master,
                                rematch=lambda s: run_rematch(state, s, fmt=fmt))
    except (WatermarkError, WeightFileError, ValueError) as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"{exc.filename or out}: {exc.strerror or exc}", 1)
    # Each row carries the copy's summary too (as `register` rows carry their artifact), so
    # a script reads where the copy is, its artifact and its key id from the JSON.
    rows = [{"tensor": t.name, "dtype": t.dtype, "density": round(t.density, 4),
             "mark_rms": float(f"{t.mark_rms:.3g}"),
             "q8_0_rms": None if t.q8_0_rms is None else float(f"{t.q8_0_rms:.3g}"),
             "path": str(issued.path), "model": model, "recipient": recipient,
             "artifact_id": issued.artifact_id, "key_id": issued.key_id,
             "size": issued.size, "padding": issued.padding}
            for t in issued.tensors]
    emit(rows, fmt, table_columns=("tensor", "dtype", "density", "mark_rms", "q8_0_rms"))
    if fmt == "table":
        click.echo(f"{issued.path}: {recipient}'s copy of {model}, {len(issued.tensors)} tensors "
                   f"marked (key id {issued.key_id}); registered as artifact "
                   f"{issued.artifact_id}", err=True)
        for note in issued.skipped:
            click.echo(f"not marked: {note}", err=True)
        click.echo(f"size {issued.size} bytes ({issued.padding} bytes of padding)" if
                   issued.padding else f"not padded ({issued.unpadded}): the copy has the "
                   f"original's size, so a listing of names and sizes cannot name "
                   f"{recipient}", err=True)
        if issued.rematched is not None:
            click.echo(issued.rematched.summary(), err=True)


@watermark_group.command("detect")
@with_scan_options
@click.pass_obj
def watermark_detect(state: State, locations: tuple[str, ...], models: tuple[str, ...],
                     max_bytes: int | None, allow_private: bool, fmt: str) -> None:
    """Whose copy is this? For each file (PATH or URL): `marked` with the recipient, the
    z-score, the runner-up and the false-attribution bound N*exp(-z^2/2) (one too small
    for a float shown as a power of ten); or `unmarked_original` (our model, no
    recipient's mark: the z shown is the best-scoring recipient's, named in BEST); or
    `not_our_model`. Works wherever the recipients' marks are registered: on the release
    machine, or on a monitoring machine that imported a fingerprint bundle. Exit 1 if a
    file could not be read."""
    from fingerprints.watermark import show_bound
    from monitor.watermark import detection_outcome

    with state.store(write=False) as store:
        if not store.watermarks():
            fail(f"no recipients' marks in {state.db_path}: on the machine that holds the "
                 f"weights, issue marked copies with `weightwatch watermark issue`; on a "
                 f"monitoring machine, import a bundle exported there since "
                 f"(`weightwatch fingerprints export`, then `fingerprints import`)", 1)
    reports = _scan_all(state, locations, models, allow_private, digests=False,
                        max_bytes=max_bytes)
    rows = []
    for report in reports:
        found = report.attribution
        mark = found.as_dict() if found else {}
        row = {"location": report.location, "outcome": detection_outcome(report),
               "model": report.result.model if report.result else None,
               **{k: mark.get(k) for k in ("recipient", "z", "bound", "runner_up",
                                           "runner_up_z", "runner_up_bound", "recipients",
                                           "tensors", "elements", "scores", "best_candidate",
                                           "bound_log10", "runner_up_bound_log10")},
               "bytes_read": report.bytes_read, "error": report.error}
        if found and fmt == "table":
            row.update(best=found.best, bound=show_bound(found.bound, found.bound_log10),
                       runner_up_bound=show_bound(found.runner_up_bound,
                                                  found.runner_up_bound_log10))
        elif found:
            row.update(bound=float(f"{found.bound:.3g}"), runner_up_bound=(
                None if found.runner_up_bound is None else float(f"{found.runner_up_bound:.3g}")))
        rows.append(row)
    emit(rows, fmt, table_columns=("location", "outcome", "model", "recipient", "best", "z",
                                   "bound", "runner_up", "runner_up_bound"),
         drop=("runner_up_bound", "runner_up", "model", "bound", "recipient"))
    _finish_scans(reports, fmt)


COMMANDS = (scan, watermark_group)
