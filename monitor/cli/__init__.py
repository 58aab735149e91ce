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

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from monitor import __version__
from monitor.cli.common import HIT_JSON_COLUMNS, OneLineErrors, State
from monitor.config import CONFIG_ENV, DEFAULT_CONFIG, ConfigError, load_config
from monitor.logs import configure_logging
from monitor.output import colour_wanted

__all__ = ["HIT_JSON_COLUMNS", "SEARCH_JSON_COLUMNS", "main"]

# Which module defines each top-level command. A command's module is imported only when
# that command runs (or when help lists them all), so `hits` never pays for the crawler's,
# the scanner's or the server's imports. tests/test_startup.py checks this table against
# every module's COMMANDS.
COMMAND_MODULES: dict[str, str] = {
    "alerts": "alerting", "silence": "alerting",
    "hits": "analysis", "incidents": "analysis", "report": "analysis", "search": "analysis",
    "check-config": "crawling", "crawl": "crawling", "run": "crawling", "targets": "crawling",
    "backup": "maintenance", "prune": "maintenance", "restore": "maintenance",
    "fingerprints": "registry", "indicators": "registry", "register": "registry",
    "rematch": "registry",
    "scan": "scanning", "watermark": "scanning",
    "demo": "serving", "serve": "serving",
    "health": "health",
    "status": "workers", "worker": "workers",
}


def __getattr__(name: str) -> Any:
    # Kept importable from here, as before, without loading the analysis commands.
    if name == "SEARCH_JSON_COLUMNS":
        from monitor.cli.analysis import SEARCH_JSON_COLUMNS
        return SEARCH_JSON_COLUMNS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LazyGroup(OneLineErrors):
    """The root group: its commands are named up front and imported on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded: dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]  # click declares a plain attribute; reads load all
    def commands(self) -> dict[str, click.Command]:
        for name in COMMAND_MODULES:
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._loaded.update(value)

    def _load(self, name: str) -> click.Command | None:
        if name not in self._loaded and name in COMMAND_MODULES:
            module = importlib.import_module(f"monitor.cli.{COMMAND_MODULES[name]}")
            for command in module.COMMANDS:
                self._loaded.setdefault(command.name, command)
        return self._loaded.get(name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES.keys() | self._loaded.keys())


@click.group(cls=LazyGroup,
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
    ctx.color = colour_wanted()
    explicit = config_path or os.environ.get(CONFIG_ENV)
    try:
        config = load_config(explicit, required=bool(explicit))
    except ConfigError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    ctx.obj = State(config, Path(db_path) if db_path else config.database_path)

