"""Session-wide fixtures: one demo release and one demo world for tests that only read it.

Tests that slow the world down (`world.delay`) or need it fresh start their own.
"""

from __future__ import annotations

import pytest

from monitor.demo.release import Release, make_release
from monitor.demo.world import DemoWorld


@pytest.fixture(scope="session")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return make_release(tmp_path_factory.mktemp("demo-release"))


@pytest.fixture(scope="session")
def demo_world(demo_release: Release):
    with DemoWorld(demo_release) as world:
        yield world
