"""What `check-config` checks beyond the file: the environment the daemon will run in.

A config can be valid and still fail at 3 a.m.: the variable holding the SMTP password unset
in the service's environment, the database's directory not writable by the service user,
no config file found at all (so the defaults, with nothing to crawl), or an empty registry
that only rules can match against. Each finding is an error (the daemon would fail or do
nothing: `check-config` exits 1) or a warning (it runs, perhaps not as meant). Nothing here
prints or keeps a secret's value: a variable is only tested for being set.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from monitor.config import CONFIG_ENV, CREDENTIALS_ENV, DEFAULT_CONFIG, Config, secret

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str


def check_environment(config: Config, db_path: Path) -> list[Finding]:
    """Every finding about `config` run against this environment and `db_path`, errors
    first."""
    found = [*_config_file(config), *_secrets(config), *_database(db_path),
             *_work(config)]
    return sorted(found, key=lambda f: f.level != "error")


def _config_file(config: Config) -> list[Finding]:
    if config.path is not None:
        return []
    return [Finding("error", f"no config file found (looked for ${CONFIG_ENV}, then "
                             f"./{DEFAULT_CONFIG}): these are the defaults, with no targets "
                             f"and no email; name one with --config")]


def _secrets(config: Config) -> list[Finding]:
    """Each `*_env` key whose variable is unset or empty where it will be read: an error
    where it is used (email, the webhook, a chat channel, an enabled target), else a warning."""
    needed: list[tuple[str, str | None, bool]] = []
    smtp, hook = config.smtp, config.alerts.webhook
    if smtp is not None and (smtp.username or smtp.password_env):
        needed.append(("smtp.password_env", smtp.password_env, config.alerts.enabled))
    if hook is not None and hook.token_env:
        needed.append(("alerts.webhook.token_env", hook.token_env, config.alerts.enabled))
    for i, chat in enumerate(config.alerts.chats):
        needed.append((f"alerts.channels[{i}] ({chat.name}).url_env", chat.url_env,
                       config.alerts.enabled))
    for i, target in enumerate(config.targets):
        if target.api_key_env:
            needed.append((f"targets[{i}] ({target.name}).api_key_env", target.api_key_env,
                           target.enabled))
    found = []
    for key, variable, used in needed:
        level: Level = "error" if used else "warning"
        if variable is None:
            found.append(Finding(level, f"smtp.username is set but {key} is not: email "
                                        f"cannot log in"))
        elif not secret(variable):  # the variable, or a credential file of its name
            state = ("empty" if variable in os.environ else "not set") + (
                f" (nor a file in ${CREDENTIALS_ENV})" if os.environ.get(CREDENTIALS_ENV) else "")
            why = "" if used else " (not used now: disabled)"
            found.append(Finding(level, f"{key}: environment variable {variable} is "
                                        f"{state}{why}"))
    return found


def _database(path: Path) -> list[Finding]:
    """The database: writable where it is, or creatable where it is not; its mode (it
    holds watermark keys and tensor prints); its registry."""
    if path.is_dir():
        return [Finding("error", f"database {path} is a directory")]
    if not path.exists():
        parent = next(p for p in path.parents if p.exists())  # "/" at least
        if not parent.is_dir():
            return [Finding("error", f"database {path} cannot be created: {parent} is not "
                                     f"a directory")]
        if not os.access(parent, os.W_OK | os.X_OK):
            return [Finding("error", f"database {path} cannot be created: {parent} is not "
                                     f"writable by this user")]
        return [Finding("warning", f"no database at {path} yet (it is created on first "
                                   f"use): the registry is empty, so only rules can match; "
                                   f"register the release first (weightwatch register)")]
    found = []
    # SQLite writes the -wal and -shm files beside the database, so its directory too.
    for what, where, mode in (("database", path, os.R_OK | os.W_OK),
                              ("database directory", path.parent, os.W_OK | os.X_OK)):
        if not os.access(where, mode):
            found.append(Finding("error", f"{what} {where} is not writable by this user"))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        found.append(Finding("warning", f"database {path} is readable by other users (mode "
                                        f"{mode:04o}) and holds watermark keys and tensor "
                                        f"prints: chmod 600 it"))
    found += _registry(path)
    return found


def _registry(path: Path) -> list[Finding]:
    from monitor.store import NeedsMigration, Store, StoreError

    try:
        with Store(path, readonly=True) as store:
            models = store.models()
    except NeedsMigration:
        return [Finding("warning", f"database {path} was written by an older weightwatch; "
                                   f"the first writing command migrates it")]
    except StoreError as exc:
        return [Finding("error", str(exc))]
    if not models:
        return [Finding("warning", f"the registry in {path} is empty: only rules can match; "
                                   f"register the release (weightwatch register)")]
    return []


def _work(config: Config) -> list[Finding]:
    if config.path is None:  # the defaults: said once, by _config_file
        return []
    found = []
    if not any(t.enabled for t in config.targets):
        found.append(Finding("warning", "no enabled targets: `weightwatch run` has nothing "
                                        "to crawl"))
    if config.alerts.enabled and config.smtp is None and config.alerts.webhook is None:
        found.append(Finding("warning", "alerts go nowhere: no [smtp] and no "
                                        "[alerts.webhook] section"))
    return found
