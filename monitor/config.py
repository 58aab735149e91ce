"""Loading and validating `config.toml`.

Every command validates the whole file before it starts, so an operator learns about a typo
from `check-config` (or from any command) rather than from a target that silently never
runs. Each problem is one line naming the file, the key path and what is wrong; secrets
are never read from this file, only the names of environment variables (or credential
files, `secret`) that hold them.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitor.filehosts import check_file_hosts
from monitor.models import DEFAULT_GROUP_BY, GROUP_LABELS, KINDS, SEVERITIES

DEFAULT_CONFIG = "config.toml"
CONFIG_ENV = "WEIGHTWATCH_CONFIG"

# Where systemd's `LoadCredential=` (and a compose file's secrets, with this variable set
# to /run/secrets) put secrets: one file per secret, named as its environment variable.
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def secret(name: str) -> str | None:
    """The secret named `name` by a `*_env` key: the environment variable, else (unset or
    empty) the file of that name in `$CREDENTIALS_DIRECTORY`, its one trailing newline
    dropped; else the variable as it is (None, or empty).

    A credential file keeps the secret out of the process environment, which other
    processes of the same user and a crash report can read. Read at use time, never kept."""
    value = os.environ.get(name)
    directory = os.environ.get(CREDENTIALS_ENV)
    if value or not directory:
        return value
    try:
        text = (Path(directory) / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return value
    return text.removesuffix("\n").removesuffix("\r")


class ConfigError(Exception):
    """One or more problems in a config file; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --- value parsers -------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any, *, zero: bool = False) -> float:
    """Seconds from `90`, `"90s"`, `"15m"`, `"1h"`, `"7d"` (and 0 when `zero` allows it);
    ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"15m\", got a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as \"15m\" or \"1h\", got {value!r}")
    if seconds < 0 or (seconds == 0 and not zero):
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def parse_wait(value: Any) -> float:
    """A duration that may be 0 (no waiting)."""
    return parse_duration(value, zero=True)


def check_url(value: str) -> str:
    parts = urlsplit(value)
    # dht://HOST:PORT names a DHT bootstrap node (kind `dht` alone takes it: Source.url_schemes)
    if parts.scheme not in ("http", "https", "dht"):
        raise ValueError(f"URL must start with http:// or https://, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {value!r}")
    return value


def check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def check_proxy(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        raise ValueError(f"proxy must be an http://, https://, socks5:// or socks5h:// URL "
                         f"with a host, got {value!r}")
    return value


def check_severity(value: str) -> str:
    if value not in SEVERITIES:
        raise ValueError(f"must be one of {', '.join(SEVERITIES)}, got {value!r}")
    return value


def check_env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"must be an environment variable name, got {value!r}")
    return value


# A channel's name is its outbox rows' `channel` and its log lines' `channel=`: short,
# plain, and never one of the built-in channels it would share rows with.
RESERVED_CHANNELS = ("email", "webhook")


def check_channel_name(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", value):
        raise ValueError(f"must be lowercase letters, digits, '-' or '_' (up to 32), got {value!r}")
    if value in RESERVED_CHANNELS:
        raise ValueError(f"{value!r} is a built-in channel; choose another name")
    return value


# --- schema --------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One allowed key: its TOML type(s), whether required, and an extra check."""

    types: tuple[type, ...]
    required: bool = False
    check: Callable[[Any], Any] | None = None
    items: type | None = None  # element type for arrays


def _k(*types: type, required: bool = False, check: Callable[[Any], Any] | None = None,
       items: type | None = None) -> Key:
    return Key(types, required, check, items)


DURATION = _k(str, int, float, check=parse_duration)
STRING_TABLE = _k(dict, items=str)

TOP_KEYS = {"database", "crawl", "scan", "smtp", "alerts", "targets", "rules"}

DATABASE_KEYS = {"path": _k(str)}

CRAWL_KEYS = {
    "user_agent": _k(str),
    "request_timeout": DURATION,
    "request_deadline": DURATION,
    "connect_timeout": DURATION,
    "run_timeout": DURATION,
    "max_response_bytes": _k(int),
    "max_redirects": _k(int),
    "host_delay": DURATION,
    "default_interval": DURATION,
    "default_jitter": DURATION,
    "retries": _k(int),
    "retry_after_cap": DURATION,
    "host_concurrency": _k(int),
}

SCAN_KEYS = {
    "enabled": _k(bool),
    "max_bytes": _k(int),
    "max_links": _k(int),
    "max_tensors": _k(int),
    "max_false_match": _k(float),
    "max_false_attribution": _k(float),
    "file_hosts": _k(dict, items=str, check=check_file_hosts),
}

SMTP_KEYS = {
    "host": _k(str, required=True),
    "port": _k(int),
    "security": _k(str, check=lambda v: _one_of(v, ("starttls", "tls", "none"))),
    "username": _k(str),
    "password_env": _k(str, check=check_env_name),
    "timeout": DURATION,
}

ALERTS_KEYS = {
    "enabled": _k(bool),
    "from": _k(str),
    "to": _k(list, items=str),
    "subject_prefix": _k(str),
    "target_down_after": _k(int),
    "group_wait": _k(str, int, float, check=parse_wait),
    "group_interval": _k(str, int, float, check=parse_wait),
    "repeat_interval": _k(str, int, float, check=parse_wait),
    "group_by": _k(list, items=str),
    "routes": _k(list, items=dict),
    "digest": _k(list, items=str),
    "digest_interval": DURATION,
    "max_locations": _k(int),
    "webhook": _k(dict),
    "channels": _k(list, items=dict),
}

WEBHOOK_KEYS = {
    "url": _k(str, required=True, check=check_url),
    "token_env": _k(str),
    "timeout": DURATION,
}

CHANNEL_KEYS = {
    "name": _k(str, required=True, check=check_channel_name),
    "url_env": _k(str, required=True, check=check_env_name),
}

ROUTE_KEYS = {
    "to": _k(list, required=True, items=str),
    "severity": _k(list, items=str),
    "model": _k(list, items=str),
    "kind": _k(list, items=str),
}

TARGET_COMMON_KEYS = {
    "name": _k(str, required=True),
    "kind": _k(str, required=True),
    "url": _k(str, required=True, check=check_url),
    "enabled": _k(bool),
    "interval": DURATION,
    "jitter": DURATION,
    "allow_private": _k(bool),
    "headers": STRING_TABLE,
    "user_agent": _k(str),
    "max_items": _k(int),
    "obey_robots": _k(bool),
    "proxy": _k(str, check=lambda v: check_proxy(v)),
    "cookies": STRING_TABLE,
    # Kind-specific: each adapter lists in `option_keys` which of these it takes.
    "preset": _k(str),
    "selectors": STRING_TABLE,
    "document_url": _k(str),
    "query": _k(str),
    "api_key_env": _k(str, check=check_env_name),
    "categories": _k(list, items=int),
    "max_pages": _k(int),
    "dht": _k(dict),
}
KIND_SPECIFIC_KEYS = frozenset({"preset", "selectors", "document_url", "query", "api_key_env",
                                "categories", "max_pages", "dht"})

RULE_KEYS = {
    "name": _k(str, required=True),
    "pattern": _k(str, check=check_regex),
    "keywords": _k(list, items=str),
    "model": _k(str),
    "severity": _k(str, check=check_severity),
    "targets": _k(list, items=str),
}

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               list: "an array", dict: "a table"}


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
    return value


# --- typed config --------------------------------------------------------------------


@dataclass
class CrawlSettings:
    user_agent: str = "weightwatch/0.1 (+https://example.org/weightwatch; leak monitoring)"
    request_timeout: float = 30.0     # longest wait for the next bytes (read, write)
    # Longest one request attempt may take, headers and body: a host trickling a byte
    # every few seconds never trips request_timeout.
    request_deadline: float = 120.0
    connect_timeout: float = 10.0
    run_timeout: float = 600.0
    max_response_bytes: int = 20_000_000
    max_redirects: int = 5
    host_delay: float = 1.0
    default_interval: float = 1800.0
    default_jitter: float = 60.0
    retries: int = 2
    retry_after_cap: float = 300.0
    host_concurrency: int = 2


@dataclass
class ScanSettings:
    """Remote scans of weight files against the tensor fingerprints (`[scan]`)."""

    enabled: bool = True
    max_bytes: int = 32_000_000       # per file: its header and the rows sampled
    max_links: int = 4                # weight links scanned per document
    max_tensors: int = 48             # suspect tensors sampled at most
    max_false_match: float = 1e-6     # a match needs a false-match probability this low
    max_false_attribution: float = 1e-6  # naming a recipient needs a bound this low
    # URL prefix -> a file host of monitor.filehosts (mirrors, private instances)
    file_hosts: dict[str, str] = field(default_factory=dict)


@dataclass
class SmtpSettings:
    host: str
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password_env: str | None = None
    timeout: float = 30.0

    def password(self) -> str | None:
        """Read at send time so the secret lives in the environment (or a credential
        file) only."""
        return secret(self.password_env) if self.password_env else None


@dataclass
class Route:
    """Who hears of which alerts: the first route whose lists all hold (an empty list
    holds for anything) names the recipients; alerts no route takes go to `alerts.to`."""

    to: list[str]
    severity: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)

    def takes(self, labels: Mapping[str, Any]) -> bool:
        return all(not allowed or labels.get(name) in allowed
                   for name, allowed in (("severity", self.severity), ("model", self.model),
                                         ("kind", self.kind)))


@dataclass
class WebhookSettings:
    """A JSON POST per alert group, beside the emails (`[alerts.webhook]`)."""

    url: str
    token_env: str | None = None   # sent as `Authorization: Bearer ...`, read at send time
    timeout: float = 10.0

    def token(self) -> str | None:
        return secret(self.token_env) if self.token_env else None


@dataclass
class ChannelSettings:
    """A chat or paging service (Slack, Teams, Matrix, Discord...) by its Apprise URL
    (`[[alerts.channels]]`). The URL carries the service's token, so only the name of the
    environment variable holding it is configured; it is read at send time."""

    name: str
    url_env: str

    def url(self) -> str | None:
        return secret(self.url_env) or None


@dataclass
class AlertSettings:
    enabled: bool = True
    sender: str = "weightwatch@localhost"
    to: list[str] = field(default_factory=list)
    subject_prefix: str = "[weightwatch]"
    target_down_after: int = 3
    # As Alertmanager: a model's first alerts wait `group_wait` for others of the same leak
    # (mirrors found in the same crawl); after an email, new alerts of that model wait
    # until `group_interval` has passed and go out as one follow-up. 0: send at once.
    group_wait: float = 0.0
    group_interval: float = 0.0
    # A reminder of a group's hits still new, this long after its last email (0: never).
    repeat_interval: float = 0.0
    # What makes two hits one incident (one email): by default the same model and
    # release, so one leak's mirrors are one email and two releases' leaks are two.
    group_by: list[str] = field(default_factory=lambda: list(DEFAULT_GROUP_BY))
    routes: list[Route] = field(default_factory=list)
    # Severities gathered into one digest email every `digest_interval` instead of
    # alerting one by one (e.g. ["low"] for mentions by name).
    digest: list[str] = field(default_factory=list)
    digest_interval: float = 86400.0
    # An email lists this many places (URLs), worst first, and counts the rest.
    max_locations: int = 20
    webhook: WebhookSettings | None = None
    chats: list[ChannelSettings] = field(default_factory=list)

    @property
    def channels(self) -> tuple[str, ...]:
        """The outbox channels a new hit is queued on: email, the webhook, each chat."""
        return ("email", *(("webhook",) if self.webhook is not None else ()),
                *(chat.name for chat in self.chats))

    def recipients(self, labels: Mapping[str, Any]) -> tuple[str, ...]:
        """Where an alert (or a target notice, by its kind) goes."""
        for route in self.routes:
            if route.takes(labels):
                return tuple(route.to)
        return tuple(self.to)


@dataclass
class Target:
    name: str
    kind: str
    url: str
    interval: float
    jitter: float
    enabled: bool = True
    allow_private: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    user_agent: str | None = None
    max_items: int = 50
    preset: str | None = None
    selectors: dict[str, str] = field(default_factory=dict)
    document_url: str | None = None
    obey_robots: bool = True
    proxy: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    query: str | None = None
    api_key_env: str | None = None
    categories: list[int] = field(default_factory=list)
    max_pages: int = 5
    dht: dict[str, Any] = field(default_factory=dict)  # kind `dht`: checked by its adapter

    def api_key(self) -> str | None:
        """Read at request time so the key lives in the environment (or a credential
        file) only."""
        return secret(self.api_key_env) if self.api_key_env else None


@dataclass
class Rule:
    name: str
    pattern: str
    model: str | None = None
    severity: str = "low"
    targets: list[str] = field(default_factory=list)


@dataclass
class Config:
    path: Path | None
    database_path: Path
    crawl: CrawlSettings
    alerts: AlertSettings
    smtp: SmtpSettings | None
    targets: list[Target]
    rules: list[Rule]
    scan: ScanSettings = field(default_factory=ScanSettings)

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)


# --- validation ----------------------------------------------------------------------


class _Checker:
    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[str] = []

    def problem(self, keypath: str, message: str) -> None:
        self.problems.append(f"{self.filename}: {keypath}: {message}")

    def table(self, data: Any, keys: dict[str, Key], path: str) -> dict[str, Any]:
        """Check one table against its keys; returns only the keys that passed."""
        if not isinstance(data, dict):
            self.problem(path, "must be a table")
            return {}
        ok: dict[str, Any] = {}
        for name, value in data.items():
            keypath = f"{path}.{name}" if path else name
            spec = keys.get(name)
            if spec is None:
                self.unknown(keypath, name, keys)
                continue
            if self.value(keypath, value, spec):
                ok[name] = value
        for name, spec in keys.items():
            if spec.required and name not in data:
                self.problem(f"{path}.{name}" if path else name, "required key is missing")
        return ok

    def unknown(self, keypath: str, name: str, allowed: dict[str, Any] | set[str]) -> None:
        close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        self.problem(keypath, f"unknown key '{name}'{hint}")

    def value(self, keypath: str, value: Any, spec: Key) -> bool:
        # bool is an int in Python; TOML keeps them apart, so do we.
        if isinstance(value, bool) and bool not in spec.types:
            wrong = True
        else:
            wrong = not isinstance(value, spec.types)
        if wrong:
            want = " or ".join(_TYPE_NAMES[t] for t in spec.types)
            self.problem(keypath, f"must be {want}, got {type(value).__name__} {value!r}")
            return False
        if spec.items is not None:
            elements = value.values() if isinstance(value, dict) else value
            for element in elements:
                if not isinstance(element, spec.items) or isinstance(element, bool):
                    self.problem(keypath, f"every entry must be {_TYPE_NAMES[spec.items]}, "
                                          f"got {element!r}")
                    return False
        if spec.check is not None:
            try:
                spec.check(value)
            except ValueError as exc:
                self.problem(keypath, str(exc))
                return False
        return True


def load_config(path: str | os.PathLike[str] | None = None, *,
                required: bool = True) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem.

    With `required=False` a missing file yields the defaults, so read-only commands such as
    `hits --db X` work where there is no config.
    """
    if not path:  # None or an empty WEIGHTWATCH_CONFIG: the default
        path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError([f"{p}: file not found"]) from None
        return parse_config({}, None)
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: TOML syntax error: {exc}"]) from None
    return parse_config(data, p)


def parse_config(data: dict[str, Any], path: Path | None) -> Config:
    """Validate already-parsed TOML data and build the typed Config."""
    c = _Checker(str(path) if path else "<defaults>")
    for name in data:
        if name not in TOP_KEYS:
            c.unknown(name, name, TOP_KEYS)

    db = c.table(data.get("database", {}), DATABASE_KEYS, "database")
    base = path.parent if path else Path.cwd()
    db_path = Path(db.get("path", "weightwatch.db"))
    if not db_path.is_absolute():
        db_path = base / db_path

    crawl_raw = c.table(data.get("crawl", {}), CRAWL_KEYS, "crawl")
    crawl = CrawlSettings()
    for name, value in crawl_raw.items():
        setattr(crawl, name, parse_duration(value) if CRAWL_KEYS[name] is DURATION else value)
    for name, least in (("max_response_bytes", 1), ("max_redirects", 0), ("retries", 0),
                        ("host_concurrency", 1)):
        if name in crawl_raw and crawl_raw[name] < least:
            c.problem(f"crawl.{name}", f"must be at least {least}, got {crawl_raw[name]}")

    scan_raw = c.table(data.get("scan", {}), SCAN_KEYS, "scan")
    scan = ScanSettings(**scan_raw)
    for name, least in (("max_bytes", 4096), ("max_links", 0), ("max_tensors", 1)):
        if name in scan_raw and scan_raw[name] < least:
            c.problem(f"scan.{name}", f"must be at least {least}, got {scan_raw[name]}")
    for name in ("max_false_match", "max_false_attribution"):
        if name in scan_raw and not 0 < scan_raw[name] < 1:
            c.problem(f"scan.{name}", f"must be between 0 and 1, got {scan_raw[name]}")

    smtp = None
    if "smtp" in data:
        s = c.table(data["smtp"], SMTP_KEYS, "smtp")
        if "host" in s:
            smtp = SmtpSettings(
                host=s["host"], port=s.get("port", 465 if s.get("security") == "tls" else 587),
                security=s.get("security", "starttls"), username=s.get("username"),
                password_env=s.get("password_env"),
                timeout=parse_duration(s.get("timeout", 30)))

    a = c.table(data.get("alerts", {}), ALERTS_KEYS, "alerts")
    alerts = AlertSettings(enabled=a.get("enabled", True), sender=a.get("from", "weightwatch@localhost"),
                           to=list(a.get("to", [])), subject_prefix=a.get("subject_prefix", "[weightwatch]"),
                           target_down_after=a.get("target_down_after", 3),
                           group_wait=parse_wait(a.get("group_wait", 0)),
                           group_interval=parse_wait(a.get("group_interval", 0)),
                           repeat_interval=parse_wait(a.get("repeat_interval", 0)),
                           group_by=list(a.get("group_by", DEFAULT_GROUP_BY)),
                           digest=list(a.get("digest", [])),
                           digest_interval=parse_duration(a.get("digest_interval", "1d")),
                           max_locations=a.get("max_locations", 20))
    if "webhook" in a:
        w = c.table(a["webhook"], WEBHOOK_KEYS, "alerts.webhook")
        if "url" in w:
            alerts.webhook = WebhookSettings(url=w["url"], token_env=w.get("token_env"),
                                             timeout=parse_duration(w.get("timeout", 10)))
    for i, raw in enumerate(a.get("channels", [])):
        where = f"alerts.channels[{i}]"
        if isinstance(raw, dict) and "url" in raw:
            # Said plainly rather than as an unknown key: the URL holds the service's token.
            c.problem(f"{where}.url", "never in the config file (the URL carries the "
                                      "service's token): put it in an environment variable "
                                      "and name that variable in url_env")
            raw = {k: v for k, v in raw.items() if k != "url"}
        ch = c.table(raw, CHANNEL_KEYS, where)
        if "name" not in ch or "url_env" not in ch:
            continue
        if ch["name"] in [chat.name for chat in alerts.chats]:
            c.problem(f"{where}.name", f"{ch['name']!r} is the name of an earlier channel")
            continue
        alerts.chats.append(ChannelSettings(name=ch["name"], url_env=ch["url_env"]))
    for bad in [label for label in alerts.group_by if label not in GROUP_LABELS]:
        c.problem("alerts.group_by", f"unknown label {bad!r} (one of {', '.join(GROUP_LABELS)})")
    for bad in set(alerts.digest) - set(SEVERITIES):
        c.problem("alerts.digest", f"unknown severity {bad!r} (one of {', '.join(SEVERITIES)})")
    for i, raw in enumerate(a.get("routes", [])):
        where = f"alerts.routes[{i}]"
        r = c.table(raw, ROUTE_KEYS, where)
        if "to" not in r:
            continue
        if not r["to"]:
            c.problem(f"{where}.to", "must name at least one address")
        for bad in set(r.get("severity", [])) - set(SEVERITIES):
            c.problem(f"{where}.severity", f"unknown severity {bad!r} (one of "
                                           f"{', '.join(SEVERITIES)})")
        for bad in set(r.get("kind", [])) - set(KINDS) - {"target_down", "target_recovered"}:
            c.problem(f"{where}.kind", f"unknown kind {bad!r}")
        alerts.routes.append(Route(to=list(r["to"]), severity=list(r.get("severity", [])),
                                   model=list(r.get("model", [])), kind=list(r.get("kind", []))))
    if alerts.target_down_after < 1:
        c.problem("alerts.target_down_after", "must be at least 1")
    if alerts.max_locations < 1:
        c.problem("alerts.max_locations", "must be at least 1")
    if alerts.enabled and smtp is not None and not alerts.to:
        c.problem("alerts.to", "required when [smtp] is set: who receives the alerts?")

    targets: list[Target] = []
    seen: dict[str, int] = {}
    raw_targets = data.get("targets", [])
    if not isinstance(raw_targets, list):
        c.problem("targets", "must be an array of tables ([[targets]])")
        raw_targets = []
    # Sources know their own presets and selectors, and checking them means importing
    # every parser and compiling every CSS selector. A target table that passed those
    # checks before, under the same code, is known good (`TargetChecks`), so a config
    # whose targets all did never loads the adapters: analyst commands start at once.
    checks = TargetChecks.load()
    target_keys = [checks.key(raw) for raw in raw_targets]
    adapters: Mapping[str, Any] = {}
    if not all(key in checks.good for key in target_keys):
        from monitor.sources import ADAPTERS as adapters
    for i, raw in enumerate(raw_targets):
        keypath = _item_path("targets", i, raw)
        t = c.table(raw, TARGET_COMMON_KEYS, keypath)
        target_name = t.get("name")
        if target_name is not None:
            if target_name in seen:
                c.problem(f"{keypath}.name", f"duplicate target name {target_name!r} "
                                             f"(also targets[{seen[target_name]}])")
            seen.setdefault(target_name, i)
        kind = t.get("kind")
        known = target_keys[i] in checks.good
        if not known:
            before = len(c.problems)
            adapter = adapters.get(kind) if kind else None
            if kind is not None and adapter is None:
                c.unknown(f"{keypath}.kind", kind, dict(adapters))
                # `unknown` says "unknown key"; a kind is a value, so restate it plainly.
                c.problems[-1] = c.problems[-1].replace("unknown key", "unknown kind")
            if adapter is not None:
                inapplicable = KIND_SPECIFIC_KEYS & t.keys() - adapter.option_keys
                for key in sorted(inapplicable):
                    c.problem(f"{keypath}.{key}", f"does not apply to kind {kind!r}")
                t = {k: v for k, v in t.items() if k not in inapplicable}
            if adapter is not None and not {"name", "url"} - t.keys():
                for problem_key, message in adapter.check_options(t):
                    c.problem(f"{keypath}.{problem_key}", message)
            known = adapter is not None
            if known and len(c.problems) == before and not {"name", "kind", "url"} - t.keys() \
                    and adapter.__module__.startswith("monitor.sources."):
                checks.passed(target_keys[i])
        if {"name", "kind", "url"} - t.keys() or not known:
            continue
        targets.append(Target(
            name=t["name"], kind=t["kind"], url=t["url"],
            interval=parse_duration(t.get("interval", crawl.default_interval)),
            jitter=parse_duration(t["jitter"]) if "jitter" in t else crawl.default_jitter,
            enabled=t.get("enabled", True), allow_private=t.get("allow_private", False),
            headers=dict(t.get("headers", {})), user_agent=t.get("user_agent"),
            max_items=t.get("max_items", 50), preset=t.get("preset"),
            selectors=dict(t.get("selectors", {})), document_url=t.get("document_url"),
            obey_robots=t.get("obey_robots", True), proxy=t.get("proxy"),
            cookies=dict(t.get("cookies", {})), query=t.get("query"),
            api_key_env=t.get("api_key_env"), categories=list(t.get("categories", [])),
            max_pages=t.get("max_pages", 5), dht=dict(t.get("dht", {}))))
        if targets[-1].interval < 10:
            c.problem(f"{keypath}.interval", "must be at least 10s: be polite to the source")
        for name in ("max_items", "max_pages"):
            if getattr(targets[-1], name) < 1:
                c.problem(f"{keypath}.{name}", "must be at least 1")
        for name, value in targets[-1].cookies.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or re.search(r"[;\r\n]", value):
                c.problem(f"{keypath}.cookies.{name}", "a cookie name must be a token and its "
                                                       "value must not contain ';' or line breaks")
        host = urlsplit(targets[-1].url).hostname or ""
        if host.endswith(".onion") and not (targets[-1].proxy or "").startswith("socks5"):
            c.problem(f"{keypath}.proxy", "a .onion target needs a socks5:// or socks5h:// proxy "
                                          "(e.g. Tor at socks5h://127.0.0.1:9050)")

    rules: list[Rule] = []
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        c.problem("rules", "must be an array of tables ([[rules]])")
        raw_rules = []
    rule_names: set[str] = set()
    for i, raw in enumerate(raw_rules):
        keypath = _item_path("rules", i, raw)
        r = c.table(raw, RULE_KEYS, keypath)
        if "name" not in r:
            continue
        if r["name"] in rule_names:
            c.problem(f"{keypath}.name", f"duplicate rule name {r['name']!r}")
        rule_names.add(r["name"])
        if ("pattern" in raw) == ("keywords" in raw):
            c.problem(keypath, "needs exactly one of 'pattern' or 'keywords'")
            continue
        if ("pattern" in r) == ("keywords" in r):
            continue  # the bad one was already reported
        if "keywords" in r and not r["keywords"]:
            c.problem(f"{keypath}.keywords", "must not be empty")
            continue
        for tname in r.get("targets", []):
            if tname not in seen:
                c.problem(f"{keypath}.targets", f"no target named {tname!r}")
        pattern = r.get("pattern") or keywords_pattern(r["keywords"])
        rules.append(Rule(name=r["name"], pattern=pattern, model=r.get("model"),
                          severity=r.get("severity", "low"), targets=list(r.get("targets", []))))

    checks.save()
    if c.problems:
        raise ConfigError(c.problems)
    return Config(path=path, database_path=db_path, crawl=crawl, alerts=alerts, smtp=smtp,
                  targets=targets, rules=rules, scan=scan)


class TargetChecks:
    """Target tables that passed the source adapters' checks (kind, kind-specific keys,
    presets, CSS selectors), kept between runs in the user's cache directory as one hash
    per line. A hash covers the table and a stamp of the code that checked it (this
    package's version and the files of the adapters, config and CSS parser), so an edited
    target, an upgrade or an edited adapter is checked again. Only passes are kept: a bad
    target is reported every time. Best effort: an unreadable or unwritable cache only
    means checking again."""

    LIMIT = 2000

    def __init__(self, path: Path | None, good: list[str]):
        self.path = path
        self._order = good
        self.good = set(good)
        self._stamp: str | None = None
        self._changed = False

    @classmethod
    def load(cls) -> TargetChecks:
        base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
        path = Path(base) / "weightwatch" / "checked-targets"
        try:
            return cls(path, path.read_text("ascii").split())
        except (OSError, UnicodeDecodeError):
            return cls(path, [])

    def key(self, raw: Any) -> str:
        if self._stamp is None:
            self._stamp = _code_stamp()
        text = json.dumps([self._stamp, raw], sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def passed(self, key: str) -> None:
        if key not in self.good:
            self.good.add(key)
            self._order.append(key)
            self._changed = True

    def save(self) -> None:
        if not self._changed or self.path is None:
            return
        keep = self._order[-self.LIMIT:]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"{self.path.name}.{os.getpid()}")
            partial.write_text("".join(f"{key}\n" for key in keep), "ascii")
            os.replace(partial, self.path)
        except OSError:
            pass


def _code_stamp() -> str:
    """What a target check depends on, read from file metadata (nothing is imported)."""
    from monitor import __version__

    here = Path(__file__).resolve().parent
    files = [here / "config.py", *sorted((here / "sources").glob("*.py"))]
    for package in ("cssselect", "bs4", "lxml"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            files.append(Path(spec.origin))
    parts = [__version__]
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue
        parts.append(f"{file}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts)


def _item_path(array: str, index: int, raw: Any) -> str:
    """`targets[2] (4chan-g)`: the index finds it in the file, the name in one's head."""
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"{array}[{index}] ({name})" if isinstance(name, str) else f"{array}[{index}]"


def keywords_pattern(keywords: list[str]) -> str:
    """A case-insensitive whole-word alternation, so 'heron' never fires inside 'herons'."""
    words = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return rf"(?i)(?<!\w)(?:{words})(?!\w)"
