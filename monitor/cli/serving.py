"""Outside the pipeline: `serve` (the read-only analyst UI) and `demo`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from monitor.cli.common import State, fail


@click.command("serve")
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


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="weightwatch-demo",
              show_default=True, help="Where the demo writes its release, database and mail.")
@click.option("--keep-running", is_flag=True,
              help="Keep the demo world and SMTP sink up afterwards, until Ctrl-C.")
@click.pass_context
def demo(ctx: click.Context, /, directory: str, keep_running: bool) -> None:
    """The whole pipeline against a local demo world: register, crawl, detect, alert.

    Exit 1 if a planted kind of leak was not found or the alert email did not arrive.
    """
    from click.core import ParameterSource

    from demo.runner import run_demo

    root = ctx.find_root()
    db = root.params.get("db_path")
    if db and Path(db).exists():
        # The demo starts from nothing; an existing file may be someone's real database.
        fail(f"--db {db} exists; the demo writes a new database: name a new file", 2)
    if root.params.get("config_path"):
        click.echo(f"weightwatch: demo: --config is not read; the demo writes its own "
                   f"config to {Path(directory) / 'config.toml'}", err=True)
    explicit = root.get_parameter_source("log_level") is ParameterSource.COMMANDLINE
    sys.exit(run_demo(Path(directory), keep_running=keep_running,
                      database=Path(db) if db else None,
                      log_level=root.params["log_level"] if explicit else None))


COMMANDS = (serve_command, demo)
