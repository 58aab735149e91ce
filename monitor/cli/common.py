"""What every command group shares: the resolved config and database (`State`), one-line
errors and exit codes (`fail`, `OneLineErrors`), and the options and columns more than one
group takes."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from monitor.queue import Queue

from monitor.config import Config, parse_duration
from monitor.output import FORMATS
from monitor.store import (
    HIT_FIELDS,
    NeedsMigration,
    StorageFailure,
    Store,
    StoreError,
    on_readonly_media,
)

T = TypeVar("T")

# A hit in JSON is the store's one list of hit columns.
HIT_JSON_COLUMNS = HIT_FIELDS
HIT_TABLE_COLUMNS = ("id", "severity", "status", "kind", "model", "recipient", "indicator",
                     "target", "first_seen", "url")


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"weightwatch: {message}", err=True)
    sys.exit(code)


def open_queue(url: str) -> Queue:
    """The queue at `url`, reachable now: exit 2 on a URL that is not a queue's, 1 on one
    that cannot be reached (one line each, the URL's password never shown)."""
    from monitor.queue import Queue, QueueError
    from monitor.redact import redact_url

    try:
        queue = Queue(url)
        queue.depth()  # the first round trip: an unreachable queue fails here
    except QueueError as exc:
        fail(f"--queue {exc}", 2)
    except Exception as exc:  # redis-py's and sqlite3's connection errors
        fail(f"--queue {redact_url(url)}: cannot reach the queue: "
             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", 1)
    return queue


def since_iso(duration: str | None, option: str = "--since") -> str | None:
    """`--since 7d` (or `--until 1d`) as the ISO time that many seconds ago, or exit 2 on a
    bad duration, naming the `option` it came from."""
    if not duration:
        return None
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(f"{option}: {exc}", 2)
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="seconds")


# Who triages or silences, for scripts and services that run as a shared account.
OPERATOR_ENV = "WEIGHTWATCH_OPERATOR"


def operator(by: str | None = None) -> str:
    """Who runs this command, for the audit trail of silences and triage: `--by`, else
    $WEIGHTWATCH_OPERATOR, else the login name. Exit 2 if none is known (a service
    without $USER, a container's uid with no passwd entry): a record "by unknown" would
    tell an auditor nothing."""
    for given in (by, os.environ.get(OPERATOR_ENV)):
        if given and given.strip():
            return " ".join(given.split())
    name = os.environ.get("USER") or os.environ.get("LOGNAME") or os.environ.get("USERNAME")
    if name:
        return name
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):  # no pwd module (Windows); a uid without an entry
        fail(f"cannot tell who you are (no login name for this user): pass --by NAME or "
             f"set ${OPERATOR_ENV}", 2)


def run_interruptible(coro: Awaitable[T]) -> T:
    """Run a coroutine so SIGTERM/SIGINT cancel it cleanly (runs record themselves as
    interrupted) instead of killing the process mid-write."""
    import asyncio  # only the commands that crawl or scan pay for the event loop

    async def runner() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        return await task

    return asyncio.run(runner())


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


def refuse_unknown(state: State, store: Store, *, target: str | None = None,
                   model: str | None = None) -> None:
    """Exit 2, naming the known ones, when `--target` or `--model` names nothing the
    config, the registry or the recorded hits know: a misspelt name would otherwise read
    as "no hits", which is the one answer an analyst must be able to trust."""
    if target:
        configured = {t.name for t in state.config.targets}
        if target not in configured and not store.name_found("target", target):
            known = configured | set(store.names_found("target"))
            fail(f"--target {target!r}: no such target (known: {_listed(known)})", 2)
    if model:  # "" means the hits of no model
        registered = set(store.models()) | {r.model for r in state.config.rules if r.model}
        if model not in registered and not store.name_found("model", model):
            known = registered | set(store.names_found("model"))
            fail(f"--model {model!r}: no such model (known: {_listed(known)})", 2)


def _listed(names: set[str], most: int = 20) -> str:
    shown = sorted(names)[:most]
    more = f", and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(shown) + more if shown else "none"
