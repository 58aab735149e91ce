"""What a person sees in a terminal (issue 17): on 80 columns tables give up whole columns
rather than cut URLs to three characters and timestamps to the date; on 200 they show
everything; colour only on a terminal, and never with NO_COLOR. Real CLI processes, with
COLUMNS as a terminal sets it and a real pseudo-terminal where colour is the question."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import hit, save

from monitor.store import Store

URL = "https://forum.example.org/viewtopic.php?t=1187&start=40#p20453"
ESC = "\x1b["


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("terminal") / "w.db"
    with Store(path) as store:
        for n in range(4):
            save(store, [hit(indicator=f"{n:02x}" * 32, recipient="lab-17" if n % 2 else None,
                             severity="critical" if n < 2 else "high")],
                 key=f"k{n}", url=f"{URL}{n}")
    return path


def run(db: Path, *args: str, columns: int, stdout: int = subprocess.PIPE,
        **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "LINES")}
    return subprocess.run([sys.executable, "-m", "monitor", "--config", "/dev/null", "--db",
                           str(db), *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=60, env={**environ, "COLUMNS": str(columns), **env})


def test_80_columns_drop_columns_and_keep_urls_readable(db: Path) -> None:
    out = run(db, "hits", columns=80)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert len(rows) == 4
    assert all(len(line) <= 80 for line in out.stdout.splitlines())
    shown = header.split()
    assert shown[:3] == ["ID", "SEVERITY", "STATUS"] and shown[-2:] == ["INDICATOR", "URL"]
    assert not {"MODEL", "TARGET", "FIRST_SEEN"} & set(shown), "the least important go"
    ends = set()
    for row in rows:
        url = row[header.index("URL"):]
        # Host and the start of the path, and the end that tells posts apart.
        assert re.fullmatch(r"forum\.example\.org/viewtopic\S*…\S*453\d", url), url
        assert len(url) >= 30
        ends.add(url[-1])
    assert ends == {"0", "1", "2", "3"}
    # Each kept cell is readable: the indicator keeps a digest's recognisable start.
    indicator = rows[0][header.index("INDICATOR"):header.index("URL")].strip()
    assert len(indicator) >= 12 and indicator.endswith("…")


def test_200_columns_show_every_column_whole(db: Path) -> None:
    out = run(db, "hits", columns=200)
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["ID", "SEVERITY", "STATUS", "KIND", "MODEL", "RECIPIENT",
                              "INDICATOR", "TARGET", "FIRST_SEEN", "URL"]
    assert {row.split()[-1] for row in rows} == {f"{URL}{n}" for n in range(4)}
    first_seen = rows[0].split()[-2]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", first_seen)
    assert "lab-17" in out.stdout


def test_between_the_two_a_timestamp_keeps_the_minute(db: Path) -> None:
    out = run(db, "hits", columns=130)
    header, *rows = out.stdout.splitlines()
    assert "FIRST_SEEN" in header and all(len(line) <= 130 for line in rows)
    assert re.search(r"  \d{4}-\d\d-\d\d \d\d:\d\d  ", rows[0]), rows[0]


def in_a_terminal(db: Path, *args: str, **env: str) -> str:
    """Run with stdout on a real pseudo-terminal; what it printed there."""
    leader, follower = pty.openpty()
    try:
        done = run(db, *args, columns=120, stdout=follower, **env)
    finally:
        os.close(follower)
    assert done.returncode == 0, done.stderr
    return read_all(leader)


def read_all(leader: int) -> str:
    """Everything written to a pseudo-terminal whose other end has closed; closes it."""
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(db: Path) -> None:
    coloured = in_a_terminal(db, "hits")
    assert f"{ESC}31m" in coloured, "a critical severity is red on a terminal"
    assert ESC not in in_a_terminal(db, "hits", NO_COLOR="1")
    assert ESC not in run(db, "hits", columns=120).stdout, "a pipe gets no colour"
    # An empty NO_COLOR does not count (no-color.org).
    assert f"{ESC}31m" in in_a_terminal(db, "hits", NO_COLOR="")
    assert "lab-17" in coloured


def log_line_in_a_terminal(**env: str) -> str:
    """A warning logged as a command logs it, with stderr on a real pseudo-terminal."""
    leader, follower = pty.openpty()
    code = ("import logging; from monitor.logs import configure_logging; "
            "configure_logging('info'); logging.getLogger('monitor.x').warning('target_down')")
    environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    try:
        done = subprocess.run([sys.executable, "-c", code], stderr=follower, timeout=60,
                              env={**environ, **env})
    finally:
        os.close(follower)
    assert done.returncode == 0
    return read_all(leader)


def test_log_lines_honour_no_color_too() -> None:
    assert "target_down" in log_line_in_a_terminal() and ESC in log_line_in_a_terminal()
    plain = log_line_in_a_terminal(NO_COLOR="1")
    assert "target_down" in plain and ESC not in plain
