"""Session-wide fixtures: one demo release and one demo world for tests that only read it.

Tests that slow the world down (`world.delay`) or need it fresh start their own.
"""

from __future__ import annotations

import os

import pytest

from monitor.demo.runner import DEMO_KEY, DEMO_KEY_ENV

from monitor.demo.release import Release, make_release
from monitor.demo.world import DemoWorld

# The demo world's Torznab endpoints want an API key, named by this variable in the demo
# targets; set here so CLI subprocesses that tests start inherit it, as a user exports it.
os.environ.setdefault(DEMO_KEY_ENV, DEMO_KEY)


@pytest.fixture(scope="session")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return make_release(tmp_path_factory.mktemp("demo-release"))


@pytest.fixture(scope="session")
def demo_world(demo_release: Release):
    with DemoWorld(demo_release) as world:
        yield world
