"""Rendering rows for people (table) and for programs (json, csv, ndjson).

JSON output is a contract: scripts read it, so its keys only ever grow. CSV cells that a
spreadsheet would run as a formula are neutralised, because crawled text is hostile.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click

FORMATS = ("table", "json", "csv", "ndjson")
SEVERITY_COLOURS = {"critical": "red", "high": "magenta", "medium": "yellow", "low": "cyan"}
# A 64-hex digest is recognisable from its first 20 characters; the table gives the room
# to the URL, and `hits show` or --format json have the whole value.
COLUMN_CAPS = {"indicator": 20, "context": 60, "last_error": 60, "title": 40, "hits": 50,
               "text": 60}


def plural(n: int, noun: str) -> str:
    """`noun` as it reads after the number `n`: "1 hit", "2 hits"."""
    return noun if n == 1 else noun + "s"


def csv_safe(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        # Nested values as JSON (not Python's repr), still neutralised as a whole.
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render(rows: Sequence[Mapping[str, Any]], fmt: str, *, columns: Sequence[str] | None = None,
           table_columns: Sequence[str] | None = None, empty: str = "nothing to show") -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=2,
                          ensure_ascii=False)
    if fmt == "ndjson":
        return "\n".join(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False)
                         for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        # The csv module quotes only the line terminator's characters, so with "\n" a
        # cell holding a bare "\r" would be written unquoted and split the row in readers;
        # RFC 4180's "\r\n" makes both quoted.
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([csv_safe(r.get(c)) for c in columns])
        return buf.getvalue().removesuffix("\r\n")
    if not rows:
        return empty
    return table(rows, table_columns or columns)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """An aligned text table that fits the terminal, truncating the widest column."""
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [min(max(len(c), *(len(row[i]) for row in cells)), COLUMN_CAPS.get(c, 10**6))
              for i, c in enumerate(columns)]
    budget = shutil.get_terminal_size((160, 24)).columns
    while sum(widths) + 2 * (len(widths) - 1) > budget and max(widths) > 12:
        widest = widths.index(max(widths))
        widths[widest] -= 1
    lines = ["  ".join(click.style(_fit(c.upper(), w), bold=True) for c, w in zip(columns, widths))]
    for row, record in zip(cells, rows):
        parts = []
        for i, (value, width) in enumerate(zip(row, widths)):
            text = _fit(value, width, middle=columns[i] in MIDDLE_CUT)
            if columns[i] == "severity":
                text = click.style(text, fg=SEVERITY_COLOURS.get(str(record.get("severity"))))
            parts.append(text)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# URLs differ at the end (thread and post ids), so they are cut in the middle.
MIDDLE_CUT = {"url", "document"}


def _fit(text: str, width: int, middle: bool = False) -> str:
    """`text` cut to `width` (marked with an ellipsis) and padded to it."""
    if len(text) <= width:
        return text.ljust(width)
    if middle and width > 10:
        head = (width - 1) // 2
        return text[:head] + "…" + text[len(text) - (width - 1 - head):]
    return text[: width - 1] + "…"


def cell(value: Any) -> str:
    """One line of inert text: crawled content may hold terminal escape sequences or
    bidi overrides, which are shown escaped (`\\x1b`) rather than acted on."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    text = " ".join(str(value).split())
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                       for ch in text)
    return text


def emit(rows: Iterable[Mapping[str, Any]], fmt: str, **kwargs: Any) -> None:
    text = render(list(rows), fmt, **kwargs)
    if text:
        # An export (json, csv, ndjson) must arrive whole or fail; a table is for a
        # terminal, where click's echo also strips the colours a file should not get.
        click.echo(text) if fmt == "table" else write_all(text + "\n")


def write_all(text: str) -> None:
    """Write `text` to stdout, all of it or an OSError. Python's text layer ignores a
    short write (a disk that fills up mid-write takes 4 KiB of a 20 KiB export, and the
    command exits 0), so the bytes go to the binary layer until none is left."""
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(text)
        return
    stream.flush()
    data = memoryview(text.encode(stream.encoding or "utf-8", stream.errors or "strict"))
    while data:
        data = data[buffer.write(data):]
    buffer.flush()
