"""Rendering rows for people (table) and for programs (json, csv, ndjson).

JSON output is a contract: scripts read it, so its keys only ever grow. CSV cells that a
spreadsheet would run as a formula are neutralised, because crawled text is hostile.
"""

from __future__ import annotations

import csv
import io
import json
import os
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


def colour_wanted() -> bool | None:
    """False when $NO_COLOR is set to anything but "" (no-color.org), which every command
    honours (the root command sets it on click's context, so `click.echo` strips styles
    even on a terminal); None otherwise: click's own choice, colour only on a terminal."""
    return False if os.environ.get("NO_COLOR") else None


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
           table_columns: Sequence[str] | None = None, drop: Sequence[str] | None = None,
           empty: str = "nothing to show") -> str:
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
    return table(rows, table_columns or columns, drop)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
          drop: Sequence[str] | None = None) -> str:
    """An aligned text table that fits the terminal. Where it cannot show every column
    readably, it gives up whole columns (empty ones, then those of `drop` in order, by
    default `DROP_FIRST`) rather than cut each to a few useless characters; what stays is
    cut no shorter than `MIN_WIDTHS` (a URL keeps its host and the start of its path),
    unless even the columns nobody may drop are too wide."""
    cells = {c: [cell(r.get(c)) for r in rows] for c in columns}
    natural = {c: min(max([len(c), *map(len, cells[c])]), COLUMN_CAPS.get(c, 10**6))
               for c in columns}
    values = {c: min(natural[c], MIN_WIDTHS.get(c, _min_width(c, cells[c])))
              for c in columns}
    # Readable: cut no shorter than MIN_WIDTHS, and other columns whole with their header.
    readable = {c: values[c] if c in MIN_WIDTHS or _is_time(c) else natural[c]
                for c in columns}
    budget = shutil.get_terminal_size((160, 24)).columns
    kept = list(columns)

    def needed(widths: Mapping[str, int]) -> int:
        return sum(widths[c] for c in kept) + 2 * (len(kept) - 1)

    empty = [c for c in kept if not any(cells[c])]
    order = [*empty, *(c for c in (DROP_FIRST if drop is None else drop) if c not in empty)]
    for name in order:
        if needed(readable) <= budget or len(kept) == 1:
            break
        if name in kept:
            kept.remove(name)
    widths = {c: natural[c] for c in kept}
    # Cut the column furthest above its readable width, one character at a time; if the
    # columns nobody may drop are too wide even so, cut headers, then any column to 12.
    for floor in (readable, values, {c: min(natural[c], 12) for c in kept}):
        while needed(widths) > budget:
            over = [c for c in kept if widths[c] > floor[c]]
            if not over:
                break
            widths[max(over, key=lambda c: widths[c] - floor[c])] -= 1
    # A cut timestamp shows the minute (TIME_WIDTH); the room it leaves goes to the
    # columns cut the most.
    for c in kept:
        if _is_time(c) and TIME_WIDTH <= widths[c] < natural[c]:
            widths[c] = TIME_WIDTH
    while needed(widths) < budget:
        short = [c for c in kept if widths[c] < natural[c] and not _is_time(c)]
        if not short:
            break
        widths[max(short, key=lambda c: natural[c] - widths[c])] += 1
    lines = [click.style("  ".join(_fit(c.upper(), widths[c]) for c in kept).rstrip(),
                         bold=True)]
    for i, record in enumerate(rows):
        parts = []
        for c in kept:
            text = _fit(cells[c][i], widths[c], kind=_cut_kind(c))
            if c == "severity":
                text = click.style(text, fg=SEVERITY_COLOURS.get(str(record.get("severity"))))
            parts.append(text)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# Columns a narrow terminal gives up first, first listed first, where the caller names no
# order of its own; columns not listed are cut, never dropped.
DROP_FIRST = ("last_emailed", "seen_count", "text", "title", "model", "target", "first_seen",
              "last_seen", "locations", "kinds", "statuses", "documents",
              "consecutive_failures", "last_success_at", "recipient", "kind", "context",
              "status", "indicator")
# The narrowest a cut leaves these readable: a URL's host and path start, a timestamp to
# the minute, a digest's recognisable start. Other columns are cut to their longest value
# (their header shortened), so numbers and names are never cut.
MIN_WIDTHS = {"url": 30, "document": 30, "indicator": 12, "context": 20, "text": 20,
              "title": 16, "snippet": 24, "last_error": 20, "hits": 16}
TIME_WIDTH = 16  # 2026-12-07 18:45


def _is_time(column: str) -> bool:
    return column.endswith(("_seen", "_at", "_until", "_since", "last_emailed"))


def _min_width(column: str, values: Sequence[str]) -> int:
    if _is_time(column):
        return TIME_WIDTH
    return max(3, *map(len, values)) if values else 3


def _cut_kind(column: str) -> str:
    if column in MIDDLE_CUT:
        return "url"
    return "time" if _is_time(column) else "end"


# URLs differ at the end (thread and post ids), so they keep their host, the start of the
# path and its end.
MIDDLE_CUT = {"url", "document"}


def _fit(text: str, width: int, kind: str = "end") -> str:
    """`text` cut to `width` (marked with an ellipsis) and padded to it."""
    if len(text) <= width:
        return text.ljust(width)
    if kind == "time" and width >= TIME_WIDTH and text[10:11] == "T":
        return (text[:10] + " " + text[11:TIME_WIDTH]).ljust(width)
    if kind == "url" and width > 10:
        return _cut_url(text, width).ljust(width)
    return text[: width - 1] + "…"


def _cut_url(url: str, width: int) -> str:
    """A URL in `width` characters: without its scheme, then its host whole, as much of
    the path's start as fits beside its last few characters (the post or thread id)."""
    text = url.split("://", 1)[1] if "://" in url[:12] else url
    if len(text) <= width:
        return text
    host, slash, path = text.partition("/")
    if len(host) + len(slash) + 8 > width:
        head = (width - 1) // 2
        return text[:head] + "…" + text[len(text) - (width - 1 - head):]
    room = width - len(host) - len(slash) - 1
    tail = min(max(room // 3, 4), 12)
    return host + slash + path[:room - tail] + "…" + path[len(path) - tail:]


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
