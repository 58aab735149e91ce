"""The `weightwatch` command line.

Global options (`--config`, `--db`) come before the command. Every command validates the
config first and stops with exit code 2 and one line per problem if it is wrong. Listing
commands take `--format table|json|csv|ndjson`; JSON is a documented contract. Exit codes:
0 ok, 1 a failure or finding the caller must act on (see each command), 2 bad usage or
config. A user's mistake is one line on stderr, never a traceback.

One module per command group, each command a thin shell: parse the options, call the
domain, render. What they share (the state, errors, options) is `monitor.cli.common`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from monitor import __version__
from monitor.cli import alerting, analysis, crawling, registry, scanning, serving
from monitor.cli.analysis import SEARCH_JSON_COLUMNS
from monitor.cli.common import HIT_JSON_COLUMNS, OneLineErrors, State
from monitor.config import CONFIG_ENV, DEFAULT_CONFIG, ConfigError, load_config
from monitor.logs import configure_logging

__all__ = ["HIT_JSON_COLUMNS", "SEARCH_JSON_COLUMNS", "main"]


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


for _group in (crawling, registry, scanning, analysis, alerting, serving):
    for _command in _group.COMMANDS:
        main.add_command(_command)
