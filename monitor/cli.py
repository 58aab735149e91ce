"""The `weightwatch` command line.

Global options (`--config`, `--db`) come before the command. Every command validates the
config first and stops with exit code 2 and one line per problem if it is wrong. Listing
commands take `--format table|json|csv|ndjson`; JSON is a documented contract. Exit codes:
0 ok, 1 a failure or finding the caller must act on (see each command), 2 bad usage or
config. A user's mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from monitor import __version__
from monitor.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    load_config,
    parse_duration,
)
from monitor.logs import configure_logging
from monitor.models import HIT_STATUSES, KINDS, SEVERITIES, SilenceRow, utcnow
from monitor.output import FORMATS, cell, emit, plural
from monitor.search import SCOPES
from monitor.store import (
    HIT_FIELDS,
    HIT_SORTS,
    NeedsMigration,
    StorageFailure,
    Store,
    StoreError,
    on_readonly_media,
)

T = TypeVar("T")

# A hit in JSON is the store's one list of hit columns.
HIT_JSON_COLUMNS = HIT_FIELDS
# `hits show` lists this many of the incident's other hits; JSON has them all.
SHOWN_SIBLINGS = 20
HIT_TABLE_COLUMNS = ("id", "severity", "kind", "model", "indicator", "target", "first_seen", "url")


def _since(duration: str | None, option: str = "--since") -> str | None:
    """`--since 7d` (or `--until 1d`) as the ISO time that many seconds ago, or exit 2 on a
    bad duration, naming the `option` it came from."""
    if not duration:
        return None
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(f"{option}: {exc}", 2)
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="seconds")


def fail(message: str, code: int = 1) -> None:
    click.echo(f"weightwatch: {message}", err=True)
    sys.exit(code)


class OneLineErrors(click.Group):
    """Click prints a usage error as the usage block, a hint and the error; a user's mistake
    here is one line on stderr, naming the command, with exit code 2 as click gives it."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            # Output to a full disk fails here, not at exit where Python would print a
            # traceback and exit 120.
            sys.stdout.flush()
            return result
        except click.UsageError as exc:
            _usage_error(exc)
        except StoreError as exc:
            # Storage that failed mid-command (disk full, read-only media): everything
            # committed before is kept, so this is one line, not a traceback.
            fail(str(exc), 1)
        except OSError as exc:
            if exc.errno not in OUTPUT_ERRNOS:
                raise
            fail(f"{exc.filename}: cannot write: {exc.strerror}" if exc.filename
                 else f"cannot write the output: {exc.strerror}", 1)


# Writing output (stdout redirected to a file) can fail for these; each is one line.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})


def _usage_error(exc: click.UsageError) -> NoReturn:
    if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
        raise exc  # a bare group prints its help, as click does
    names = []
    ctx = exc.ctx
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    where = " ".join(reversed(names))
    fail(f"{where + ': ' if where else ''}{exc.format_message()} (see --help)", exc.exit_code)


class State:
    """What the group callback resolved for every command: the config and the database."""

    def __init__(self, config: Config, db_path: Path):
        self.config = config
        self.db_path = db_path
        self._told_how_opened = False

    @contextmanager
    def store(self, *, write: bool = True) -> Iterator[Store]:
        """The database, for a command that writes, or (`write=False`) for one that only
        reads: opened read-only, so it works on read-only media (saying so on stderr)
        and can never change what the daemon writes."""
        try:
            store = self._open(write)
        except (StorageFailure, NeedsMigration) as exc:
            fail(str(exc), 1)
        except StoreError as exc:
            fail(str(exc), 2)
        self.tell_how_opened(store)
        try:
            yield store
        finally:
            store.close()

    def tell_how_opened(self, store: Store) -> None:
        """Say once per command, on stderr, that the database was opened in an unusual
        way (read-only media: immutable), so a reader knows why it cannot be written."""
        if store.media_note and not self._told_how_opened:
            click.echo(f"weightwatch: {store.path}: {store.media_note}", err=True)
            self._told_how_opened = True

    def _open(self, write: bool) -> Store:
        # A reading command on a database that does not exist yet creates it (the answer
        # is "no hits", not an error), and one an older weightwatch wrote is migrated
        # where it is writable, as reading commands always did.
        if write or not self.db_path.exists():
            return Store(self.db_path)
        try:
            return Store(self.db_path, readonly=True)
        except NeedsMigration:
            if on_readonly_media(self.db_path):
                raise
            return Store(self.db_path)


format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                             show_default=True, help="Output format; json is a stable contract.")


@click.group(cls=OneLineErrors,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help=f"Config file [default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG}].")
@click.option("--db", "db_path", type=click.Path(dir_okay=False),
              help="SQLite database, overriding the config's [database] path.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.version_option(__version__, prog_name="weightwatch")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, db_path: str | None, log_level: str) -> None:
    """weightwatch: find leaked copies of released model weights, with evidence.

    \b
    Start with `weightwatch demo` to see every part work against a local demo world.
    """
    configure_logging(log_level)
    explicit = config_path or os.environ.get(CONFIG_ENV)
    try:
        config = load_config(explicit, required=bool(explicit))
    except ConfigError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    ctx.obj = State(config, Path(db_path) if db_path else config.database_path)


# --- config and targets --------------------------------------------------------------


@main.command("check-config")
@click.pass_obj
def check_config(state: State) -> None:
    """Validate the config file (exit 2 and one line per problem if it is wrong)."""
    c = state.config
    enabled = sum(t.enabled for t in c.targets)
    click.echo(f"{c.path or '<defaults>'}: ok: {len(c.targets)} targets ({enabled} enabled), "
               f"{len(c.rules)} rules, database {state.db_path}, "
               f"email {'to ' + ', '.join(c.alerts.to) if c.smtp and c.alerts.enabled else 'off'}")


@main.group("targets", invoke_without_command=True)
@format_option
@click.pass_context
def targets(ctx: click.Context, fmt: str) -> None:
    """The crawl targets and their health (last run, failures, counts)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(targets_list, fmt=fmt)


@targets.command("list")
@format_option
@click.pass_obj
def targets_list(state: State, fmt: str) -> None:
    """Show every target with its state from the database."""
    from monitor.fetch import redact_url
    from monitor.health import health as target_health

    with state.store(write=False) as store:
        states = store.all_target_states()
    rows = []
    for t in state.config.targets:
        s = states.get(t.name, {})
        rows.append({"name": t.name, "kind": t.kind, "enabled": t.enabled,
                     "health": target_health(s, enabled=t.enabled),
                     "url": redact_url(t.url), "interval_s": t.interval,
                     "last_run_at": s.get("last_run_at"),
                     "last_success_at": s.get("last_success_at"),
                     "consecutive_failures": s.get("consecutive_failures", 0),
                     "backoff_until": s.get("backoff_until"), "down_since": s.get("down_since"),
                     "documents": s.get("documents_count", 0), "hits": s.get("hits_count", 0),
                     "last_error": s.get("last_error")})
    emit(rows, fmt, table_columns=("name", "kind", "health", "last_success_at",
                                   "consecutive_failures", "documents", "hits", "last_error"),
         empty="no targets configured")


@targets.command("test")
@click.argument("name")
@format_option
@click.pass_obj
def targets_test(state: State, name: str, fmt: str) -> None:
    """Dry run of one target: fetch, extract, and show what the detectors would find.

    Writes nothing (the registry is read, if the database exists). Exit 1 if the target
    cannot be fetched or parsed.
    """
    from monitor.crawler import dry_run
    from monitor.detect import build_detectors
    from monitor.fetch import FetchError
    from monitor.sources import SourceError

    (target,) = _choose_targets(state.config, (name,))
    store = None
    if state.db_path.exists():
        try:
            store = Store(state.db_path, readonly=True)
        except StoreError as exc:
            fail(str(exc), 2)
        state.tell_how_opened(store)
    else:
        click.echo(f"weightwatch: no database at {state.db_path}: digests are not matched, "
                   f"only rules", err=True)
    try:
        detectors = build_detectors(state.config, store)
    finally:
        if store is not None:
            store.close()
    try:
        previews = run_interruptible(dry_run(target, state.config, detectors))
    except (FetchError, SourceError) as exc:
        fail(f"{name}: {exc}", 1)
    except asyncio.CancelledError:
        fail("interrupted", 130)
    if fmt == "table":
        rows = [{"document": p.document.url, "title": p.document.title,
                 "hits": ", ".join(f"{h.kind}:{h.indicator}" for h in p.hits),
                 "text": p.document.text} for p in previews]
        emit(rows, fmt, table_columns=("document", "title", "hits", "text"),
             empty="the target yielded no documents")
        found = sum(len(p.hits) for p in previews)
        click.echo(f"{len(previews)} documents, {found} would-be hits; nothing was recorded",
                   err=True)
        return
    emit([{"key": p.document.key, "url": p.document.url, "title": p.document.title,
           "author": p.document.author, "posted_at": p.document.posted_at,
           "text": p.document.text, "links": p.document.links, "extras": p.document.extras,
           "hits": [{"kind": h.kind, "severity": h.severity, "indicator": h.indicator,
                     "indicator_type": h.indicator_type, "model": h.model,
                     "artifact": h.artifact, "recipient": h.recipient, "rule": h.rule,
                     "context": h.context} for h in p.hits]} for p in previews], fmt)


# --- crawling ------------------------------------------------------------------------


def run_interruptible(coro: Awaitable[T]) -> T:
    """Run a coroutine so SIGTERM/SIGINT cancel it cleanly (runs record themselves as
    interrupted) instead of killing the process mid-write."""

    async def runner() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        return await task

    return asyncio.run(runner())


@main.command("crawl")
@click.option("--target", "names", multiple=True, help="Only this target (repeatable).")
@format_option
@click.pass_obj
def crawl(state: State, names: tuple[str, ...], fmt: str) -> None:
    """One pass over the enabled targets, then send pending alerts, then exit.

    Exit 1 if any target failed.
    """
    from monitor.alerts import Alerter
    from monitor.crawler import crawl_once

    chosen = _choose_targets(state.config, names)
    with state.store() as store:
        store.close_abandoned_runs()
        try:
            results = run_interruptible(crawl_once(state.config, store, chosen))
        except asyncio.CancelledError:
            fail("interrupted; everything recorded so far is kept", 130)
        flush = Alerter(store, state.config).flush()
        failure = store.storage_failure
    rows = [{"target": r.target, "run_id": r.run_id, "status": r.status,
             "documents": r.documents_seen, "new_documents": r.documents_new,
             "changed_documents": r.documents_changed, "new_hits": r.hits_new,
             "error": r.error} for r in results]
    emit(rows, fmt)
    if fmt == "table":
        click.echo(f"alerts: {flush.emails_sent} email(s) sent for {flush.alerts_sent} hit(s), "
                   f"{flush.alerts_pending} pending" + (f" ({flush.error})" if flush.error else ""),
                   err=True)
    if failure is not None:
        fail(str(failure), 1)
    if any(r.status != "ok" for r in results):
        sys.exit(1)


def _choose_targets(config: Config, names: tuple[str, ...]) -> list:
    if not names:
        return [t for t in config.targets if t.enabled]
    chosen = []
    for name in names:
        try:
            chosen.append(config.target(name))
        except KeyError:
            known = ", ".join(t.name for t in config.targets) or "none"
            fail(f"no target named {name!r} in {config.path} (known: {known})", 2)
    return chosen


@main.command("run")
@click.pass_obj
def run(state: State) -> None:
    """Run the daemon: crawl every enabled target on its schedule until SIGTERM/SIGINT."""
    from monitor.daemon import run_daemon

    if not any(t.enabled for t in state.config.targets):
        fail(f"{state.config.path or '<defaults>'}: no enabled targets to crawl", 2)
    with state.store() as store:
        asyncio.run(run_daemon(state.config, store))


# --- registry ------------------------------------------------------------------------


@main.command("register")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", required=True, help="Model name the files belong to.")
@click.option("--release", help="Release label, e.g. v1.0.")
@click.option("--recipient", help="Recipient id when registering one recipient's copy.")
@click.option("--shards", is_flag=True,
              help="Also the SHA-256 of each 1 GB shard of larger files (sigstore "
                   "model-signing's sharded layout); a second SHA-256 pass over them.")
@click.option("--no-tensors", is_flag=True,
              help="Skip the tensor fingerprints of weight files (digests only).")
@format_option
@click.pass_obj
def register(state: State, paths: tuple[str, ...], model: str, release: str | None,
             recipient: str | None, shards: bool, no_tensors: bool, fmt: str) -> None:
    """Record released files' digests (size, SHA-256, SHA-1, MD5, BitTorrent v2 pieces
    root), folders recursively, and the tensor fingerprints of weight files (recognised
    by content: safetensors, GGUF, PyTorch, ONNX, numpy, and archives of them)."""
    from monitor.registry import register_paths

    show_progress = fmt == "table" and sys.stderr.isatty()
    bars: list[Any] = []
    seen: set[Path] = set()

    def on_file(path: Path, size: int):
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
                                   tensors=not no_tensors,
                                   rematch=lambda s: _run_rematch(state, s, fmt=fmt))
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


@main.group("indicators")
def indicators() -> None:
    """Known digests from outside: checksum lists, magnet links, hub records."""


@indicators.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", required=True)
@click.pass_obj
def indicators_import(state: State, file: str, model: str) -> None:
    """Import digests for MODEL from FILE, strictly (a line not understood stops the import).

    \b
    Text: sha256sum/sha1sum/md5sum lines (so Meta-style checklist.chk), BSD and
    `shasum --tag` lines, magnet links, btih:/btmh: infohashes, a bare infohash (40 hex,
    kept as SHA-1 and infohash both, or 32 base32), Git LFS pointer files.
    JSON: model-hub model info (siblings with lfs.sha256; fetched with ?blobs=true) or a
    tree listing (lfs.oid). The stored documents are then matched again if anything was new.
    """
    from monitor.registry import IndicatorFileError, import_indicators

    with state.store() as store:
        try:
            result = import_indicators(store, file, model=model,
                                       rematch=lambda s: _run_rematch(state, s))
        except IndicatorFileError as exc:
            fail(str(exc), 1)
        except OSError as exc:
            fail(f"{file}: {exc.strerror or exc}", 1)
        click.echo(f"{result.source}: {result.parsed} indicators read, {result.added} new "
                   f"for {model}")
        if result.rematched is not None:
            click.echo(result.rematched.summary(), err=True)


@main.group("fingerprints")
def fingerprints_group() -> None:
    """Fingerprint bundles: the registry, carried from the release machine to the monitor."""


@fingerprints_group.command("export")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--model", "models", multiple=True, help="Only this model (repeatable).")
@click.pass_obj
def fingerprints_export(state: State, bundle: str, models: tuple[str, ...]) -> None:
    """Write the registry (models, artifacts' names, sizes and digests, imported indicators,
    tensor fingerprints) to BUNDLE, a gzip-compressed JSON file; never paths, weights or
    secrets.

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
               f"{len(data.indicators)} indicators, {len(data.weight_prints)} tensor "
               f"fingerprints exported")


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
        counts = import_bundle(store, data)
        click.echo(f"{bundle}: {counts.models} models ({counts.models_new} new), "
                   f"{counts.artifacts} artifacts ({counts.artifacts_new} new), "
                   f"{counts.digests} digests ({counts.digests_new} new), "
                   f"{counts.prints} tensor fingerprints ({counts.prints_new} new)")
        if counts.changed:
            click.echo(_run_rematch(state, store).summary(), err=True)


# --- rematch -------------------------------------------------------------------------

# A progress bar is worth drawing (on a terminal) from this many documents.
PROGRESS_MIN_DOCUMENTS = 2000


def _run_rematch(state: State, store: Store, *, targets: tuple[str, ...] = (),
                 since: str | None = None, fmt: str = "table") -> Any:
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
              allow_private: bool, *, digests: bool = True, **overrides: Any) -> list[Any]:
    """Scan each location (a path, or a URL through the crawler's fetcher) against the
    registry, digests first unless `digests` is off (the watermark test wants the tensors
    read even of a registered copy); exit 1 with a hint if nothing is registered to
    compare with."""
    import dataclasses

    from monitor.config import Target
    from monitor.fetch import Fetcher
    from monitor.scan import load_registry, scan_path, scan_url

    settings = dataclasses.replace(
        state.config.scan, **{k: v for k, v in overrides.items() if v is not None})
    with state.store(write=False) as store:
        registry = load_registry(store, models)
    if not digests:
        registry = dataclasses.replace(registry, digests={})
    if registry.empty:
        fail("no tensor fingerprints registered" + (f" for {', '.join(models)}" if models else "")
             + ", nor any file digest; run `weightwatch register` on the released weights or import a bundle", 1)

    async def remote(url: str) -> Any:
        target = Target(name="scan", kind="scan", url=url, interval=0, jitter=0,
                        allow_private=allow_private)
        async with Fetcher(state.config.crawl) as fetcher:
            return await scan_url(url, registry, settings, fetcher, target)

    return [run_interruptible(remote(location)) if location.startswith(("http://", "https://"))
            else scan_path(location, registry, settings) for location in locations]


def _finish_scans(reports: list[Any], fmt: str) -> None:
    if fmt == "table":
        for report in reports:
            if report.error:  # the readers' messages start with the file's name
                click.echo(report.error, err=True)
    if any(r.verdict == "error" for r in reports):
        sys.exit(1)


@main.command("scan")
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
    emit(rows, fmt, table_columns=("location", "verdict", "model", "score",
                                   "false_match_probability", "tensors_compared", "bytes_read"))
    _finish_scans(reports, fmt)


# --- watermarks ------------------------------------------------------------------------


@main.group("watermark")
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
            if not any(print_ for print_ in store.weight_prints([model])):
                fail(f"no tensor fingerprint of {model} registered; run `weightwatch register` "
                     f"on the original first (detection compares with its rows)", 1)
            issued = issue_copy(store, model=model, recipient=recipient, source=source,
                                out=out, master=master,
                                rematch=lambda s: _run_rematch(state, s, fmt=fmt))
    except (WatermarkError, WeightFileError, ValueError) as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"{exc.filename or out}: {exc.strerror or exc}", 1)
    rows = [{"tensor": t.name, "dtype": t.dtype, "density": round(t.density, 4),
             "mark_rms": float(f"{t.mark_rms:.3g}"),
             "q8_0_rms": None if t.q8_0_rms is None else float(f"{t.q8_0_rms:.3g}")}
            for t in issued.tensors]
    emit(rows, fmt, table_columns=("tensor", "dtype", "density", "mark_rms", "q8_0_rms"))
    if fmt == "table":
        click.echo(f"{issued.path}: {recipient}'s copy of {model}, {len(issued.tensors)} tensors "
                   f"marked (key id {issued.key_id}); registered as artifact "
                   f"{issued.artifact_id}", err=True)
        for note in issued.skipped:
            click.echo(f"not marked: {note}", err=True)
        if issued.rematched is not None:
            click.echo(issued.rematched.summary(), err=True)


@watermark_group.command("detect")
@with_scan_options
@click.pass_obj
def watermark_detect(state: State, locations: tuple[str, ...], models: tuple[str, ...],
                     max_bytes: int | None, allow_private: bool, fmt: str) -> None:
    """Whose copy is this? For each file (PATH or URL): `marked` with the recipient, the
    z-score, the runner-up and the false-attribution bound N*exp(-z^2/2); or
    `unmarked_original` (our model, no recipient's mark); or `not_our_model`. Exit 1 if a
    file could not be read."""
    with state.store(write=False) as store:
        if not store.watermarks():
            fail("no marked copies registered; issue them with `weightwatch watermark issue`", 1)
    reports = _scan_all(state, locations, models, allow_private, digests=False,
                        max_bytes=max_bytes)
    rows = []
    for report in reports:
        mark = report.attribution.as_dict() if report.attribution else {}
        outcome = (mark.get("outcome") or "unmarked_original" if report.verdict == "match"
                   # A relative shares embeddings, not our layers: not our model either.
                   else "not_our_model" if report.verdict in ("no_match", "related")
                   else report.verdict)
        rows.append({"location": report.location, "outcome": outcome,
                     "model": report.result.model if report.result else None,
                     **{k: mark.get(k) for k in ("recipient", "z", "bound", "runner_up",
                                                 "runner_up_z", "runner_up_bound",
                                                 "recipients", "tensors", "elements",
                                                 "scores")},
                     "bytes_read": report.bytes_read, "error": report.error})
    for row in rows:
        for k in ("bound", "runner_up_bound"):
            if row[k] is not None:
                row[k] = float(f"{row[k]:.3g}")
    emit(rows, fmt, table_columns=("location", "outcome", "model", "recipient", "z", "bound",
                                   "runner_up", "runner_up_bound"))
    _finish_scans(reports, fmt)


@main.command("rematch")
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
    since_iso = _since(since)
    configured = {t.name for t in state.config.targets}
    with state.store() as store:
        for name in names:
            if name not in configured and not store.count_documents(targets=(name,)):
                fail(f"--target: no target named {name!r} in {state.config.path or '<defaults>'} "
                     f"or {state.db_path}", 2)
        result = _run_rematch(state, store, targets=names, since=since_iso, fmt=fmt)
        rows = [store.hit(hit_id) for hit_id in result.new_hits]
    if fmt != "table":
        emit(rows, fmt, columns=HIT_JSON_COLUMNS)
        return
    if rows:
        emit(rows, fmt, columns=HIT_JSON_COLUMNS, table_columns=HIT_TABLE_COLUMNS)
    click.echo(result.summary())


# --- hits ----------------------------------------------------------------------------


@main.group("hits", invoke_without_command=True)
@click.option("--since", help="Only hits first seen within this duration, e.g. 24h, 7d.")
@click.option("--until", "until", help="Only hits first seen more than this long ago.")
@click.option("--severity", multiple=True, type=click.Choice(SEVERITIES))
@click.option("--kind", multiple=True, type=click.Choice(KINDS))
@click.option("--model")
@click.option("--target")
@click.option("--recipient")
@click.option("--status", multiple=True, type=click.Choice(HIT_STATUSES))
@click.option("--text", help="Only hits whose indicator, context or URL holds these words "
                                "(the last may be the start of one, e.g. of a digest).")
@click.option("--sort", type=click.Choice(list(HIT_SORTS)), default="severity",
              show_default=True,
              help="severity: worst, then newest; newest or oldest first seen; score: "
                   "highest first; last-seen: most recently seen again.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many hits.")
@click.option("--after", "cursor", help="The next page: the cursor the previous page printed "
                                        "(with the same --sort).")
@format_option
@click.pass_context
def hits(ctx: click.Context, since: str | None, until: str | None, severity: tuple[str, ...],
         kind: tuple[str, ...], model: str | None, target: str | None, recipient: str | None,
         status: tuple[str, ...], text: str | None, sort: str, limit: int | None,
         cursor: str | None, fmt: str) -> None:
    """List hits, worst and newest first (or in --sort order). With --limit, a full page
    ends with the cursor of the next one on stderr (`--after CURSOR`), so stdout stays
    the data."""
    if ctx.invoked_subcommand is not None:
        return
    state: State = ctx.obj
    try:
        after = Store.parse_cursor(cursor, sort) if cursor else None
    except ValueError as exc:
        fail(f"--after: {exc}", 2)
    with state.store(write=False) as store:
        rows = store.hits(since=_since(since), until=_since(until, "--until"), severity=severity,
                          kind=kind, model=model, status=status, target=target,
                          recipient=recipient, text=text, sort=sort, after=after, limit=limit)
    emit(rows, fmt, columns=HIT_JSON_COLUMNS, table_columns=HIT_TABLE_COLUMNS, empty="no hits")
    if limit and len(rows) == limit:
        click.echo(f"next page: --after {Store.hit_cursor(rows[-1], sort)}", err=True)


@hits.command("show")
@click.argument("hit_id", type=int)
@click.option("--snapshot", "snapshot_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the stored snapshot of the page (the bytes as fetched) here.")
@format_option
@click.pass_obj
def hits_show(state: State, hit_id: int, snapshot_path: str | None, fmt: str) -> None:
    """One hit with its evidence: where, when, what matched, the snapshot's SHA-256, its
    triage history and the other hits of its incident."""
    from monitor.incidents import incident_of

    with state.store(write=False) as store:
        hit = store.hit(hit_id)
        if hit is None:
            fail(f"no hit with id {hit_id} in {state.db_path}", 1)
        doc = store.document(hit["document_id"]) if hit["document_id"] else None
        history = store.triage_history(hit_id)
        incident, worst = incident_of(store, hit, state.config.alerts.group_by,
                                      shown=SHOWN_SIBLINGS)
        snapshot = (store.snapshot(doc["snapshot_sha256"])
                    if snapshot_path and doc and doc["snapshot_sha256"] else None)
    if snapshot_path:
        if snapshot is None:
            fail(f"hit {hit_id} has no stored snapshot", 1)
        _write_snapshot(Path(snapshot_path), snapshot)
    others = [i for i in incident.pop("hit_ids") if i != hit_id]
    evidence = {**hit, "document": doc, "triage": history,
                "incident": {**incident, "other_hit_ids": others}}
    if fmt != "table":
        if doc:
            doc["extras"] = json.loads(doc["extras"])
        emit([evidence], fmt)
        return
    width = max(len(k) for k in hit)
    for key in HIT_JSON_COLUMNS:
        click.echo(f"{key.rjust(width)}  {cell(hit.get(key))}")
    if doc:
        click.echo("\nevidence")
        for key in ("url", "title", "author", "posted_at", "fetched_at", "content_sha256",
                    "snapshot_sha256"):
            click.echo(f"{key.rjust(width)}  {cell(doc.get(key))}")
    if history:
        click.echo("\ntriage")
        for entry in history:
            note = f": {cell(entry['note'])}" if entry["note"] else ""
            click.echo(f"{cell(entry['at'])}  {entry['status']} by {cell(entry['by'])}{note}")
    hits_n, places = incident["hits"], incident["locations"]
    click.echo(f"\nincident {cell(incident['key'])}: {hits_n} {plural(hits_n, 'hit')} at "
               f"{places} {plural(places, 'location')}")
    for other in worst:
        click.echo(f"{str(other['id']).rjust(width)}  {other['severity']:<8} "
                   f"{other['kind']:<9} {other['status']:<14} {cell(other['url'])}")
    if len(others) > len(worst):
        click.echo(f"{'...'.rjust(width)}  {len(others) - len(worst)} more: "
                   f"`hits show {hit_id} --format json` lists them all")


def _write_snapshot(path: Path, body: bytes) -> None:
    """Write a snapshot for an analyst, never following a link planted at `path` and
    never overwriting a file silently (it is evidence, and so may be what is there)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
    except FileExistsError:
        fail(f"--snapshot: {path} exists; choose another name", 1)
    except OSError as exc:
        fail(f"--snapshot: cannot write {path}: {exc.strerror}", 1)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
    except OSError as exc:
        # A part of the evidence is worse than none: it would pass for the page.
        path.unlink(missing_ok=True)
        fail(f"--snapshot: cannot write {path}: {exc.strerror}; nothing was kept", 1)
    click.echo(f"snapshot: {len(body)} bytes written to {path} "
               f"(sha256 {hashlib.sha256(body).hexdigest()})", err=True)


def _triage_command(status: str, name: str, summary: str) -> None:
    @hits.command(name, help=summary)
    @click.argument("hit_ids", nargs=-1, required=True, type=int)
    @click.option("--note", help="Why (kept with who and when).")
    @click.pass_obj
    def command(state: State, hit_ids: tuple[int, ...], note: str | None) -> None:
        with state.store() as store:
            missing = store.triage(list(hit_ids), status, by=_operator(), note=note)
        if missing:
            fail(f"no hit with id {', '.join(map(str, missing))} in {state.db_path}; nothing "
                 f"changed", 1)
        click.echo(f"{len(hit_ids)} hit(s) marked {status.replace('_', ' ')}")


_triage_command("acknowledged", "ack", "Mark hits as seen and being handled.")
_triage_command("resolved", "resolve", "Mark hits as dealt with (taken down, reported).")
_triage_command("false_positive", "false-positive",
                "Mark hits as false positives: their unsent alerts are dropped and the same "
                "indicator at the same URL is never alerted again.")


INCIDENT_JSON_COLUMNS = ("key", "labels", "severity", "hits", "open", "statuses", "kinds",
                         "locations", "recipients", "first_seen", "last_seen", "last_emailed",
                         "hit_ids")
# The table shows the incident's labels (model, release...) as columns in place of its key.
INCIDENT_TABLE_COLUMNS = ("hits", "open", "locations", "kinds", "first_seen", "last_seen",
                          "last_emailed")


@main.command("incidents")
@click.option("--since", help="Only hits first seen within this duration, e.g. 7d.")
@click.option("--model", help="Only this model's incidents.")
@click.option("--all", "include_closed", is_flag=True,
              help="Also resolved and false-positive hits (and incidents with only those).")
@format_option
@click.pass_obj
def incidents_cmd(state: State, since: str | None, model: str | None, include_closed: bool,
                  fmt: str) -> None:
    """Hits grouped into incidents as the alerter groups them (`alerts.group_by`): one
    line per leak however many mirrors it is on, worst and most recent first. By default
    only open (new or acknowledged) hits count."""
    from monitor.incidents import incidents

    since_at = _since(since)
    with state.store(write=False) as store:
        rows = incidents(store, state.config.alerts.group_by, since=since_at, model=model,
                         include_closed=include_closed)
    group_by = tuple(state.config.alerts.group_by)
    if fmt == "table":
        rows = [{**r, **r["labels"], "kinds": ",".join(r["kinds"])} for r in rows]
    emit(rows, fmt, columns=INCIDENT_JSON_COLUMNS,
         table_columns=("severity", *group_by, *INCIDENT_TABLE_COLUMNS),
         empty="no open incidents")


# --- alerts --------------------------------------------------------------------------


@main.group("alerts")
def alerts() -> None:
    """The alert outbox: what was sent, what is pending."""


@alerts.command("list")
@click.option("--status", type=click.Choice(["pending", "sending", "sent", "failed"]))
@click.option("--notices", is_flag=True, help="Target down/recovered notices instead of hit alerts.")
@format_option
@click.pass_obj
def alerts_list(state: State, status: str | None, notices: bool, fmt: str) -> None:
    """Alerts in the outbox with their delivery state (or, with --notices, target notices)."""
    with state.store(write=False) as store:
        if notices:
            emit(store.notices(status), fmt, empty="no target notices",
                 table_columns=("id", "kind", "target", "status", "attempts", "created_at",
                                "sent_at", "error", "last_error"))
            return
        rows = store.outbox(status)
    emit(rows, fmt, table_columns=("id", "hit_id", "status", "attempts", "severity", "model",
                                   "created_at", "sent_at", "silenced_by", "last_error"),
         empty="the outbox is empty")


@alerts.command("flush")
@click.pass_obj
def alerts_flush(state: State) -> None:
    """Send every pending alert now, ignoring retry back-off. Exit 1 if delivery failed."""
    from monitor.alerts import Alerter

    with state.store() as store:
        store.retry_now()
        result = Alerter(store, state.config).flush()
    silenced = f", {result.alerts_silenced} held by silences" if result.alerts_silenced else ""
    click.echo(f"{result.emails_sent} email(s) sent for {result.alerts_sent} hit(s); "
               f"{result.alerts_pending} pending{silenced}")
    if result.error:
        fail(result.error, 1)


# --- silences --------------------------------------------------------------------------


@main.group("silence")
def silence_group() -> None:
    """Hold back alerts that match, for a while (hits are still recorded)."""


@silence_group.command("add")
@click.option("--match", "matchers", multiple=True, required=True,
              help="KEY=VALUE, KEY!=VALUE, KEY=~REGEX or KEY!~REGEX on severity, kind, model, "
                   "recipient, target, url, indicator, artifact, detector, rule (repeatable; "
                   "all must hold).")
@click.option("--for", "duration", required=True, help="How long, e.g. 2h, 7d.")
@click.option("--reason", required=True, help="Why: shown in `silence list`, kept for audit.")
@format_option
@click.pass_obj
def silence_add(state: State, matchers: tuple[str, ...], duration: str, reason: str,
                fmt: str) -> None:
    """Silence matching alerts from now for DURATION. When it ends (or is expired), what
    it held back and is still pending is emailed once."""
    from monitor.silences import SilenceError, parse_matcher

    try:
        parsed = [parse_matcher(m) for m in matchers]
        seconds = parse_duration(duration)
    except (SilenceError, ValueError) as exc:
        fail(str(exc), 2)
    if not reason.strip():
        fail("--reason: say why (it is the audit trail)", 2)
    ends_at = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(
        timespec="seconds")
    with state.store() as store:
        silence_id = store.add_silence(matchers=[str(m) for m in parsed], reason=reason.strip(),
                                       created_by=_operator(), ends_at=ends_at)
        row = next(r for r in store.silences(include_ended=True) if r["id"] == silence_id)
    emit([_silence_row(row)], fmt, table_columns=SILENCE_COLUMNS)


def _operator() -> str:
    """Who runs this command, for the audit trail of silences and triage."""
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


SILENCE_COLUMNS = ("id", "matchers", "reason", "created_by", "starts_at", "ends_at", "state")


def _silence_row(row: SilenceRow) -> dict[str, Any]:
    from monitor.silences import silence_state

    state = silence_state(row["expired_at"], row["starts_at"], row["ends_at"], utcnow())
    return {"id": row["id"], "matchers": " ".join(json.loads(row["matchers"])),
            "reason": row["reason"], "created_by": row["created_by"],
            "starts_at": row["starts_at"], "ends_at": row["ends_at"],
            "expired_at": row["expired_at"], "state": state}


@silence_group.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Also silences that have ended.")
@format_option
@click.pass_obj
def silence_list(state: State, include_ended: bool, fmt: str) -> None:
    """Active silences (with --all, ended and expired ones too), newest first."""
    with state.store(write=False) as store:
        rows = [_silence_row(r) for r in store.silences(include_ended=include_ended)]
    emit(rows, fmt, table_columns=SILENCE_COLUMNS, empty="no active silences")


@silence_group.command("expire")
@click.argument("silence_id", type=int)
@click.pass_obj
def silence_expire(state: State, silence_id: int) -> None:
    """End a silence now; what it held back is emailed by the next flush. Exit 1 if it
    does not exist or has already ended."""
    with state.store() as store:
        if not store.expire_silence(silence_id):
            fail(f"no active silence {silence_id} (see `weightwatch silence list --all`)", 1)
    click.echo(f"silence {silence_id} expired; what it held back is due now")


@alerts.command("test")
@click.pass_obj
def alerts_test(state: State) -> None:
    """Send a test email with the configured SMTP settings. Exit 1 if it fails."""
    from monitor.alerts import DeliveryError, send_test

    if state.config.smtp is None:
        fail(f"{state.config.path or '<defaults>'}: no [smtp] section; nothing to test", 2)
    try:
        message_id = send_test(state.config)
    except DeliveryError as exc:
        fail(str(exc), 1)
    click.echo(f"test email sent to {', '.join(state.config.alerts.to)} ({message_id})")


# --- analyst UI ----------------------------------------------------------------------


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; only a loopback one without --public.")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port to listen on; 0 picks a free one (the URL is printed).")
@click.option("--public", is_flag=True,
              help="Allow a non-loopback --host: there is no login, so everyone who can "
                   "reach it reads every hit.")
@click.pass_obj
def serve_command(state: State, host: str, port: int, public: bool) -> None:
    """Browse the hits in Datasette (the `ui` extra), read-only, until Ctrl-C.

    Arbitrary SQL is off and key material is refused. Exit 1 if the port cannot be bound.
    """
    try:
        from monitor.serve import is_loopback, listen, serve, url
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("datasette", "uvicorn"):
            raise
        fail("weightwatch serve needs the ui extra: pip install 'weightwatch[ui]'", 1)
    if not public and not is_loopback(host):
        fail(f"--host {host} is not a loopback address and the UI has no login; add "
             f"--public to serve every hit to whoever can reach it", 2)
    # Opening the store creates or migrates the database where that is needed, so
    # Datasette reads the schema this weightwatch describes; from here on nothing writes.
    with state.store(write=False):
        pass
    try:
        sock = listen(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
    click.echo(f"serving {state.db_path} read-only at {url(sock)} (Ctrl-C to stop)", err=True)
    serve(state.db_path, sock)


# --- search --------------------------------------------------------------------------

SEARCH_JSON_COLUMNS = ("kind", "id", "target", "url", "title", "indicator", "severity",
                       "document_id", "hits", "first_seen", "last_seen", "fetched_at", "rank",
                       "snippet", "highlights")


@main.command("search")
@click.argument("query", nargs=-1, required=True, metavar="QUERY")
@click.option("--in", "scope", type=click.Choice(SCOPES), default="all", show_default=True,
              help="Search the documents, the hits or both.")
@click.option("--since", help="Only documents last seen and hits first seen within this "
                              "duration, e.g. 7d.")
@click.option("--target", help="Only this target's documents and hits.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many results.")
@format_option
@click.pass_obj
def search_command(state: State, query: tuple[str, ...], scope: str, since: str | None,
                   target: str | None, limit: int, fmt: str) -> None:
    """Full-text search over stored documents and hits, best match (bm25) first, each
    with a snippet around the match ([marked] in a table).

    \b
    QUERY is FTS5 syntax: words, "a phrase", prefix*, AND / OR / NOT, NEAR(a b, 10),
    column:word (title, author, text, url; indicator, context, model, artifact,
    recipient). Pasted text with punctuation (heron-7b, a URL, a magnet link) is searched
    as the phrase of its words. A malformed query exits 2 with one line saying why.
    """
    from monitor.search import WINDOW, SearchError, search

    with state.store(write=False) as store:
        try:
            found = search(store, " ".join(query), scope=scope, since=_since(since),
                           target=target, limit=limit)
        except SearchError as exc:
            fail(f"search: {exc}", 2)
    if fmt != "table":
        emit([r.as_dict() for r in found.results], fmt, columns=SEARCH_JSON_COLUMNS)
    else:
        emit([{"kind": r.kind, "id": r.id, "target": r.target, "first_seen": r.first_seen,
               "title": r.title if r.kind == "document" else r.indicator,
               "snippet": r.marked_snippet()} for r in found.results], fmt,
             empty="no matches")
    for table in found.windowed:
        click.echo(f"search: more than {WINDOW:,} {table} match; only the newest {WINDOW:,} "
                   f"were ranked (add words or a \"phrase\" to narrow the query)", err=True)


# --- report --------------------------------------------------------------------------


@main.command("report")
@click.option("--since", default="7d", show_default=True,
              help="Hits first seen within this duration, e.g. 24h, 30d.")
@click.option("--until", help="Only hits first seen more than this long ago.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The HTML file to write (replaced atomically; never through a symlink).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many incidents to show in full.")
@click.option("--all", "include_closed", is_flag=True,
              help="Incidents count resolved and false-positive hits too.")
@click.pass_obj
def report_command(state: State, since: str, until: str | None, out: str, top: int,
                   include_closed: bool) -> None:
    """Write a self-contained HTML report for people away from the terminal: hits over
    time by severity (an SVG chart), the top incidents with whose copy leaked and where,
    and the failing targets. It opens offline in any browser, prints, and runs nothing
    (no script; a Content-Security-Policy forbids any request). Exit 1 if it cannot be
    written."""
    from monitor.report import ReportError, build_report, write_report

    since_at, until_at = _since(since), _since(until, "--until")
    if since_at and until_at and until_at <= since_at:
        fail(f"--until {until} ends the period before --since {since} starts it", 2)
    # Failing targets as `weightwatch targets` shows them (the config's enabled ones);
    # with a config that names none (a copy of the database read elsewhere), all of them.
    enabled = ({t.name for t in state.config.targets if t.enabled}
               if state.config.targets else None)
    with state.store(write=False) as store:
        report = build_report(store, state.config.alerts.group_by, since_at, until_at,
                              top=top, include_closed=include_closed, targets=enabled)
    try:
        write_report(Path(out), report.html)
    except ReportError as exc:
        fail(f"--out: {exc}", 1)
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror or exc}", 1)
    click.echo(f"report: {report.hits} {plural(report.hits, 'hit')}, {report.incidents} "
               f"{plural(report.incidents, 'incident')} "
               f"written to {out}",
               err=True)


# --- demo ----------------------------------------------------------------------------


@main.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="weightwatch-demo",
              show_default=True, help="Where the demo writes its release, database and mail.")
@click.option("--keep-running", is_flag=True,
              help="Keep the demo world and SMTP sink up afterwards, until Ctrl-C.")
def demo(directory: str, keep_running: bool) -> None:
    """The whole pipeline against a local demo world: register, crawl, detect, alert.

    Exit 1 if a planted kind of leak was not found or the alert email did not arrive.
    """
    from demo.runner import run_demo

    sys.exit(run_demo(Path(directory), keep_running=keep_running))
