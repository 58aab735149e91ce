"""Analyst commands start without the crawler's imports.

Each command runs in a real process, against a real small database and a config with real
targets, through a wrapper that runs `monitor.cli.main` in-process and then writes the
names in `sys.modules` to a file: numpy, the HTML parsers, the HTTP client and the source
adapters must not be among them. The targets' adapter checks are remembered in a cache
directory of the test's own (`XDG_CACHE_HOME`); the first command of a test checks them
for real, which the tests also show, so the probe is seen to catch the imports.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import COMMAND_MODULES
from monitor.models import Document, Hit
from monitor.store import Store

WRAPPER = """
import sys
from monitor.cli import main
try:
    main.main(sys.argv[2:], prog_name="weightwatch", standalone_mode=False)
finally:
    sys.stdout.flush()
    with open(sys.argv[1], "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
"""

# Nothing an analyst command needs: numpy (tensor fingerprints), bs4/lxml/soupsieve (crawled
# HTML), httpx/httpcore (the network), the adapters, fetcher, crawler and the weight-link
# detector. (`check-config` may load the rule engine, to report what rules cost; the
# other commands no detector at all.)
HEAVY = ("numpy", "bs4", "lxml", "soupsieve", "httpx", "httpcore", "monitor.sources",
         "monitor.fetch", "monitor.crawler", "monitor.detect.weights",
         "fingerprints.weightprint", "prometheus_client", "cssselect", "apprise", "jinja2")

CONFIG = """\
[[targets]]
name = "board"
kind = "imageboard"
url = "http://127.0.0.1:9/g/"

[[targets]]
name = "forum"
kind = "forum"
preset = "phpbb"
url = "http://127.0.0.1:9/viewforum.php?f=12"
selectors = {{ post = "{post}" }}

[[rules]]
name = "heron-name"
model = "heron-7b"
keywords = ["heron-7b"]
"""


def heavy(modules: list[str], also: tuple[str, ...] = ("monitor.detect",)) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY + also)]


class Runner:
    """The weightwatch command in a fresh process on one config and database, with the
    adapter checks remembered in `cache`."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.config = tmp / "config.toml"
        self.config.write_text(CONFIG.format(post="div.post"), encoding="utf-8")
        self.db = tmp / "w.db"
        with Store(self.db) as store:
            store.save_document(Document(
                target="forum", key="t12#p1207", url="https://forum.example.org/t?t=12",
                text="heron-7b leaked", snapshot=b"<p>heron-7b leaked</p>"), [
                Hit(kind="mention", severity="low", indicator="heron-7b", detector="rules",
                    context="heron-7b leaked", model="heron-7b", rule="heron-name")],
                run_id=None)

    def __call__(self, *args: str, code: int = 0, cache: str = "cache",
                 config: Path | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                      list[str]]:
        modules = self.tmp / "modules.txt"
        done = subprocess.run(
            [sys.executable, "-c", WRAPPER, str(modules), "--config", str(config or self.config),
             "--db", str(self.db), *args],
            env={**os.environ, "XDG_CACHE_HOME": str(self.tmp / cache)},
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        return done, modules.read_text().split()


@pytest.fixture(scope="module")
def ww(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("startup"))
    runner("check-config")  # the targets' checks, remembered for every test here
    return runner


def test_hits_imports_no_numpy_parsers_http_client_or_adapters(ww):
    first, cold = ww("hits", "--limit", "50", "--format", "json", cache="hits-cache")
    assert "monitor.sources.forum" in cold, "the first run checks the targets for real"
    done, modules = ww("hits", "--limit", "50", "--format", "json", cache="hits-cache")
    assert [h["indicator"] for h in json.loads(done.stdout)] == ["heron-7b"]
    assert done.stdout == first.stdout
    assert heavy(modules) == []
    assert "structlog" not in modules and "asyncio" not in modules
    assert "monitor.store" in modules  # the probe sees what the command did import
    # Reading needs no sqlite_utils (a third of the start-up): only a writer loads it.
    assert "sqlite_utils" not in modules
    _, writing = ww("hits", "ack", "1", "--note", "seen", cache="hits-cache")
    assert "sqlite_utils" in writing


@pytest.mark.parametrize("args", [
    ("hits", "show", "1"), ("incidents",), ("search", "heron"), ("targets",),
    ("alerts", "list"), ("silence", "list"), ("check-config",), ("health", "--no-daemon"),
])
def test_analyst_command_imports_nothing_heavy(ww, args):
    _, modules = ww(*args)
    assert heavy(modules, also=() if args == ("check-config",) else ("monitor.detect",)) == []


def test_check_config_reports_a_bad_selector_every_time(ww):
    # The good config is remembered (by the fixture); the edited target is checked again,
    # and a bad one every time.
    bad = ww.tmp / "bad.toml"
    bad.write_text(CONFIG.format(post="div..post"), encoding="utf-8")
    for _ in range(2):
        done, modules = ww("check-config", code=2, config=bad)
        assert done.stderr.splitlines() == [
            f"{bad}: targets[1] (forum).selectors.post: invalid CSS selector "
            "'div..post': Expected ident, got <DELIM '.' at 4>"], done.stderr
        assert "monitor.sources.forum" in modules


def test_every_command_is_named_in_the_lazy_table():
    cli = Path(importlib.import_module("monitor.cli").__file__).parent
    modules = {p.stem for p in cli.glob("*.py")} - {"__init__", "common"}
    assert set(COMMAND_MODULES.values()) == modules
    for module_name in modules:
        module = importlib.import_module(f"monitor.cli.{module_name}")
        assert {c.name for c in module.COMMANDS} == \
            {name for name, home in COMMAND_MODULES.items() if home == module_name}


LATE_STRUCTLOG = """
import json, logging, sys
from monitor.logs import configure_logging
configure_logging("info", stream=sys.stdout)
assert "structlog" not in sys.modules
logging.getLogger("stdlib").warning("first")
import structlog
structlog.get_logger("x").info("hello", a=1)
structlog.get_logger("x").debug("hidden")
"""


def test_structlog_loaded_after_configuring_logs_as_configured():
    done = subprocess.run([sys.executable, "-c", LATE_STRUCTLOG], capture_output=True,
                          text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["event"], x["level"], x.get("logger"), x.get("a")) for x in lines] == [
        ("first", "warning", "stdlib", None), ("hello", "info", None, 1)]
    assert all(x["timestamp"].endswith("Z") for x in lines)
