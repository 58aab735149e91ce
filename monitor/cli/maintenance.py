"""Keeping the database: `backup`, `restore`, `prune` (see docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path

import click

from monitor.cli.common import State, fail, since_iso
from monitor.output import plural
from monitor.store.maintenance import Copied, MaintenanceError


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _described(copied: Copied) -> str:
    return (f"{copied.path} ({_size(copied.size)}, schema {copied.schema}, "
            f"{copied.hits} {plural(copied.hits, 'hit')}, {copied.check})")


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@click.pass_obj
def backup_command(state: State, dest: Path, force: bool) -> None:
    """Copy the database to DEST (a file, or a folder to name a dated file in) while the
    daemon runs: a consistent, compacted, owner-only copy, checked before it is named.

    Exit 1 if DEST exists (without --force) or the copy cannot be written.
    """
    from monitor.store.maintenance import backup

    try:
        copied = backup(state.db_path, dest, force=force)
    except MaintenanceError as exc:
        fail(str(exc), 1)
    click.echo(f"backup: {_described(copied)}")


@click.command("restore")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace the database if it exists (stop the daemon first).")
@click.pass_obj
def restore_command(state: State, source: Path, force: bool) -> None:
    """Write the backup SOURCE into the database (the config's, or --db), after checking
    it whole (integrity_check); a newer weightwatch's backup is refused.

    Exit 1 if the database exists (without --force) or the backup is damaged.
    """
    from monitor.store.maintenance import restore

    try:
        copied = restore(source, state.db_path, force=force)
    except MaintenanceError as exc:
        fail(str(exc), 1)
    click.echo(f"restore: {_described(copied)} from {source}")


@click.command("prune")
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Remove documents last seen longer ago than this (e.g. 90d) that no hit "
                   "needs, and the snapshots only they needed.")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option("--vacuum", is_flag=True,
              help="Then rewrite the file to return the space to the filesystem (VACUUM: "
                   "blocks the daemon's writes while it runs).")
@click.pass_obj
def prune_command(state: State, older_than: str, dry_run: bool, vacuum: bool) -> None:
    """Remove old documents and snapshots that no hit needs: every hit keeps its
    document, snapshot and context, whatever its age or status.
    """
    from monitor.store.maintenance import prune

    before = since_iso(older_than or "0", "--older-than")
    assert before is not None  # "0" and any other non-duration exit 2 above
    with state.store(write=not dry_run) as store:
        done = prune(store.db, before, dry_run=dry_run, vacuum=vacuum and not dry_run)
    removed = done.documents or done.snapshots
    space = {"full": "; the file was rewritten (VACUUM)",
             "incremental": "; the freed pages were returned (incremental vacuum)"}.get(
        done.vacuum, "; the freed pages are reused by later writes" if removed and not dry_run
        else "")
    click.echo(f"prune: {'would remove' if dry_run else 'removed'} {done.documents} "
               f"{plural(done.documents, 'document')} and {done.snapshots} "
               f"{plural(done.snapshots, 'snapshot')} ({_size(done.snapshot_bytes)}) last "
               f"seen before {before}; kept {done.kept_documents} older "
               f"{plural(done.kept_documents, 'document')} as hits' evidence{space}")

COMMANDS = (backup_command, restore_command, prune_command)
