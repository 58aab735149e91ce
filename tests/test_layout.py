"""The layout DESIGN.md fixes: `fingerprints` is a pure library that `monitor` calls."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# No network, no database, no scheduler, and never the daemon: fingerprints reads bytes.
FORBIDDEN = {"monitor", "httpx", "sqlite3", "sqlite_utils", "apscheduler", "smtplib", "socket",
             "urllib.request", "pickle"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_fingerprints_is_a_pure_library():
    files = sorted((ROOT / "fingerprints").glob("*.py"))
    assert files
    for path in files:
        bad = {name for name in imported_modules(path)
               if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN}
        assert not bad, f"{path.name} imports {sorted(bad)}"
