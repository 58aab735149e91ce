"""Rendering rows: CSV formula neutralising, hostile text in JSON/NDJSON, tables that fit."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest

from monitor.output import _fit, csv_safe, emit, render, table

HOSTILE = [
    "=cmd|' /C calc'!A0",
    '"quoted", with, commas',
    "line one\nline two\r\nline three",
    "old mac\rline ending",
    "tab\there",
    "\x1b[31mred\x1b[0m and \x1b]0;title\x07",
    "quote \" backslash \\ slash /",
    "\u202eevil bidi\u202c",
    "nul\x00byte",
    "unicode: héron 鷺 🐦",
    "</script><script>alert(1)</script>",
]


def rows_of(values: list[str]) -> list[dict]:
    return [{"id": i, "context": v, "score": 0.5, "missing": None} for i, v in enumerate(values)]


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# --- CSV --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "=cmd|' /C calc'!A0", "+1", "-1", "@SUM(1)", "\t=1+1", "\r=1+1", "=HYPERLINK(\"x\")",
])
def test_csv_neutralises_formula_cells(value):
    text = render([{"id": 1, "context": value}], "csv")
    header, row = parse_csv(text)
    assert header == ["id", "context"]
    assert row == ["1", "'" + value]


@pytest.mark.parametrize("value", ["safe text", "1=1", "a-b", "heron-7b", "", "e@mail"])
def test_csv_leaves_ordinary_cells_alone(value):
    assert csv_safe(value) == value
    header, row = parse_csv(render([{"context": value}], "csv"))
    assert row == [value]


def test_csv_numbers_are_not_prefixed():
    # Only text can be a formula; a negative number stays a number.
    assert csv_safe(-1) == -1
    assert csv_safe(-0.5) == -0.5
    _, row = parse_csv(render([{"n": -1, "f": 2.5}], "csv"))
    assert row == ["-1", "2.5"]


def test_csv_header_and_rows_with_hostile_content():
    values = [v for v in HOSTILE if "\x00" not in v]
    text = render(rows_of(values), "csv", columns=("id", "context", "missing"))
    parsed = parse_csv(text)
    assert parsed[0] == ["id", "context", "missing"]
    assert len(parsed) == len(values) + 1
    for i, (row, value) in enumerate(zip(parsed[1:], values)):
        assert row[0] == str(i)
        assert row[1] == csv_safe(value)
        assert row[2] == ""  # None is an empty cell, not "None"


def test_csv_of_no_rows_is_the_header():
    assert render([], "csv", columns=("id", "kind")) == "id,kind"


# --- JSON and NDJSON ----------------------------------------------------------------------


def test_json_round_trips_hostile_content():
    rows = rows_of(HOSTILE)
    text = render(rows, "json")
    assert json.loads(text) == rows


def test_json_selects_and_orders_columns_and_keeps_null():
    rows = [{"b": 2, "a": 1, "extra": "x"}]
    parsed = json.loads(render(rows, "json", columns=("a", "b", "missing")))
    assert parsed == [{"a": 1, "b": 2, "missing": None}]
    assert list(parsed[0]) == ["a", "b", "missing"]


def test_json_of_no_rows_is_an_empty_array():
    assert json.loads(render([], "json", columns=("id",))) == []


def test_ndjson_is_one_object_per_line_with_hostile_content():
    rows = rows_of(HOSTILE)
    text = render(rows, "ndjson")
    lines = text.split("\n")
    assert len(lines) == len(rows)
    assert [json.loads(line) for line in lines] == rows
    # No raw control characters that a terminal or a line-based reader would act on.
    assert "\x1b" not in text and "\r" not in text and "\x00" not in text


def test_ndjson_of_no_rows_prints_nothing(capsys):
    assert render([], "ndjson") == ""
    emit([], "ndjson")
    assert capsys.readouterr().out == ""


def test_emit_writes_json_to_stdout_only(capsys):
    emit(rows_of(HOSTILE[:3]), "json")
    out, err = capsys.readouterr()
    assert json.loads(out) == rows_of(HOSTILE[:3])
    assert err == ""


# --- tables --------------------------------------------------------------------------------


def visible_lines(text: str) -> list[str]:
    return click.unstyle(text).split("\n")


@pytest.fixture
def terminal_width(monkeypatch):
    def set_width(columns: int) -> None:
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.setenv("LINES", "24")
    return set_width


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_table_truncates_to_fit_the_terminal(terminal_width, width):
    terminal_width(width)
    rows = [{"id": 1, "severity": "critical", "url": "https://example.org/" + "a" * 200,
             "context": "word " * 60},
            {"id": 22, "severity": "low", "url": "https://example.org/short", "context": "ok"}]
    lines = visible_lines(table(rows, ("id", "severity", "url", "context")))
    assert len(lines) == 3
    for line in lines:
        assert len(line) <= width, (width, line)
    assert lines[1].startswith("1 ")
    assert "…" in lines[1]  # the long cells say they were cut
    assert "https://example.org/short" in lines[2] or "…" in lines[2]


def test_table_header_is_truncated_too(terminal_width):
    # A column whose header is its widest text (e.g. CONSECUTIVE_FAILURES) may be the one
    # shrunk; its header must then be cut like any cell, or the table overflows.
    terminal_width(40)
    columns = ("name", "consecutive_failures_in_a_row", "last_error_message_for_operator")
    rows = [{"name": "4chan-g", "consecutive_failures_in_a_row": 3,
             "last_error_message_for_operator": "timeout"}]
    lines = visible_lines(table(rows, columns))
    for line in lines:
        assert len(line) <= 40, line


def test_table_uses_full_values_when_they_fit(terminal_width):
    terminal_width(200)
    rows = [{"id": 7, "url": "https://example.org/" + "b" * 100}]
    lines = visible_lines(table(rows, ("id", "url")))
    assert lines[0].split() == ["ID", "URL"]
    assert lines[1].split() == ["7", "https://example.org/" + "b" * 100]
    assert "…" not in lines[1]


def test_table_honours_monkeypatched_terminal_size(monkeypatch):
    import os
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size",
                        lambda fallback=(80, 24): os.terminal_size((50, 24)))
    rows = [{"id": 1, "context": "x" * 300}]
    for line in visible_lines(table(rows, ("id", "context"))):
        assert len(line) <= 50


def test_table_renders_none_as_empty_and_collapses_whitespace(terminal_width):
    terminal_width(120)
    rows = [{"id": 1, "model": None, "context": "two\nlines\tand  spaces", "score": 0.25}]
    lines = visible_lines(table(rows, ("id", "model", "context", "score")))
    assert "None" not in lines[1]
    assert "two lines and spaces" in lines[1]
    assert lines[1].endswith("0.25")
    # The empty model cell keeps its column: the context starts where its header does.
    assert lines[1].index("two") == lines[0].index("CONTEXT")


def test_table_does_not_pass_terminal_control_characters(terminal_width):
    # Crawled text is hostile: an escape sequence in a post must not reach the analyst's
    # terminal (retitle the window, clear the screen, fake output).
    terminal_width(200)
    rows = [{"id": 1, "context": "a\x1b]0;pwned\x07b \x1b[2Jc \u202egnp.exe"}]
    text = table(rows, ("id", "context"))
    body = text.split("\n", 1)[1]  # the header is styled by us; the cells must not be
    assert "\x1b" not in body and "\x07" not in body and "\u202e" not in body
    assert "pwned" in body  # the text is still shown, made visible


def test_table_severity_is_coloured_only_on_a_terminal(terminal_width):
    terminal_width(120)
    text = table([{"id": 1, "severity": "critical"}], ("id", "severity"))
    assert click.style("critical", fg="red") in text
    # emit goes through click.echo, which strips styles when stdout is not a terminal.
    out = io.StringIO()
    click.echo(text, file=out)
    assert "\x1b" not in out.getvalue()


def test_render_empty_table_prints_the_empty_message():
    assert render([], "table", empty="no hits") == "no hits"


def test_render_table_default_columns_are_the_rows_keys(terminal_width):
    terminal_width(120)
    lines = visible_lines(render([{"alpha": 1, "beta": None}], "table"))
    assert lines[0].split() == ["ALPHA", "BETA"]
    assert lines[1].strip() == "1"


def test_float_cells_are_compact(terminal_width):
    terminal_width(120)
    lines = visible_lines(render([{"score": 1.0}, {"score": 0.125}], "table"))
    assert [line.strip() for line in lines[1:]] == ["1", "0.125"]



# --- narrow terminals: whole columns go, what stays is readable ------------------------------


def test_narrow_table_gives_up_whole_columns_least_important_first(terminal_width):
    terminal_width(70)
    rows = [{"id": 12, "severity": "critical", "model": "heron-7b", "target": "demo-forum",
             "first_seen": "2026-12-07T18:45:09+00:00",
             "url": "https://forum.example.org/viewtopic.php?t=1187#p20453"}]
    header, line = visible_lines(table(rows, tuple(rows[0])))
    # DROP_FIRST: model, then target, then first_seen; never cut to a few characters.
    assert header.split() == ["ID", "SEVERITY", "FIRST_SEEN", "URL"]
    assert line.split()[:2] == ["12", "critical"] and "2026-12-07 18:45" in line
    assert max(len(header), len(line)) <= 70
    terminal_width(50)
    header, line = visible_lines(table(rows, tuple(rows[0])))
    assert header.split() == ["ID", "SEVERITY", "URL"]
    url = line.split()[2]
    assert url.startswith("forum.example.org/viewtopic.ph") and url.endswith("…20453")


def test_a_caller_names_its_own_drop_order_and_empty_columns_go_first(terminal_width):
    terminal_width(60)
    rows = [{"severity": "critical", "model": "heron-7b", "release": "v1", "recipients": "",
             "hits": 82, "last_emailed": "2026-12-07T18:45:09+00:00",
             "kinds": "hash,mention,torrent,watermark,weights"}]
    header, _ = visible_lines(table(rows, tuple(rows[0]), drop=("last_emailed", "kinds")))
    assert header.split() == ["SEVERITY", "MODEL", "RELEASE", "HITS"]
    terminal_width(200)  # room for all: an empty column stays, with its header
    header, _ = visible_lines(table(rows, tuple(rows[0]), drop=("last_emailed", "kinds")))
    assert "RECIPIENTS" in header.split()


@pytest.mark.parametrize("width, expected", [
    (30, "forum.example.org/viewtop…0453"),
    (40, "forum.example.org/viewtopic.php?…#p20453"),
    (60, "forum.example.org/viewtopic.php?t=1187&start=40#p20453"),
])
def test_a_cut_url_keeps_its_host_the_start_of_its_path_and_its_end(width, expected):
    cut = _fit("https://forum.example.org/viewtopic.php?t=1187&start=40#p20453", width,
               kind="url")
    assert cut.rstrip() == expected and len(cut) == width
