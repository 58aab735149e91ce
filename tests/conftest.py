"""Session-wide fixtures: one demo release and one demo world for tests that only read it,
and local `Canned` servers (tests/support.py) for the answers the world does not give.

Tests that slow the world down (`world.delay`) or need it fresh start their own.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import structlog
from support import Canned, Corner

from demo.release import Release, make_release
from demo.runner import DEMO_KEY, DEMO_KEY_ENV
from demo.world import DemoWorld

# The demo world's Torznab endpoints want an API key, named by this variable in the demo
# targets; set here so CLI subprocesses that tests start inherit it, as a user exports it.
os.environ.setdefault(DEMO_KEY_ENV, DEMO_KEY)

# Tables fit the terminal (shutil.get_terminal_size reads COLUMNS first); tests see what a
# pipe gets, whatever terminal runs them, and pytest-xdist's workers export COLUMNS=80.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

# `check-config` remembers targets that passed validation under $XDG_CACHE_HOME; the tests
# keep theirs in a folder of their own (CLI subprocesses inherit it), never the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="weightwatch-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return make_release(tmp_path_factory.mktemp("demo-release"))


@pytest.fixture(scope="session")
def demo_world(demo_release: Release) -> Iterator[DemoWorld]:
    with DemoWorld(demo_release) as world:
        yield world


@pytest.fixture(scope="module")
def client(demo_world: DemoWorld) -> Iterator[httpx.Client]:
    """Reads the demo world directly, as a browser or a script would."""
    with httpx.Client(base_url=demo_world.base_url, timeout=10) as c:
        yield c


@pytest.fixture
def serve() -> Iterator[Callable[..., Canned]]:
    """`serve(routes, **options)` starts a Canned server for this test; all stop after it."""
    servers: list[Canned] = []

    def start(routes: dict[str, Any] | None = None, **options: Any) -> Canned:
        servers.append(Canned(routes, **options))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def canned() -> Iterator[Canned]:
    """One Canned server for a whole module; tests take a `corner` of it each."""
    server = Canned()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def corner(canned: Canned) -> Corner:
    return canned.corner()


# Logging as the session starts. Restored after every test, not a per-test snapshot: a
# module-scoped fixture that runs the CLI in-process (registering a model once for a module)
# configures logging before any per-test snapshot is taken, and would otherwise leave its
# level filter in place for the rest of the session, hiding debug events from later tests'
# capture_logs.
_PRISTINE_HANDLERS = logging.getLogger().handlers[:]
_PRISTINE_LEVEL = logging.getLogger().level
_PRISTINE_STRUCTLOG = structlog.get_config()


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI points the root logger at the stream it was given (a CliRunner buffer in
    tests); put it back afterwards so later tests do not log into a closed buffer."""
    yield
    root = logging.getLogger()
    root.handlers[:] = _PRISTINE_HANDLERS
    root.setLevel(_PRISTINE_LEVEL)
    structlog.configure(**_PRISTINE_STRUCTLOG)
