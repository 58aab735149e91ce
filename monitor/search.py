"""Full-text search over stored documents and hits (`weightwatch search`).

The index is SQLite FTS5 (migration 11): `documents_fts` over a document's title, author,
text and URL, `hits_fts` over a hit's indicator, context, URL, model, artifact and
recipient, both tokenised by unicode61 (case and accents folded; anything but letters and
digits separates words). Results are ranked by bm25, best first, and carry a snippet of
the best-matching column with the matches marked.

A query is FTS5 syntax: words, "phrases", prefix*, AND / OR / NOT (upper case), NEAR(a b,
10), ( ), ^initial and column filters such as `title:heron` or `url:"example.org"`. What an
analyst pastes is mostly not: `heron-7b`, a URL, a magnet link. So, outside quotes, a
chunk that FTS5 would reject (anything holding punctuation) is quoted for it and searched
as the phrase of its words, which is what the tokeniser makes of the same text when it is
stored. A chunk without letters or digits (a bare `-`), an unclosed quote or parenthesis,
or what FTS5 itself refuses, is a `SearchError`: one line naming the problem.

bm25 reads every row it ranks, so each index ranks only a query's newest WINDOW matches:
a model's name in 400,000 of a million hits is then ranked in 0.1 s, not a second.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from monitor.store import Store

SCOPES = ("all", "documents", "hits")
# The columns of each full-text index, as migration 11 made them, for column filters.
FTS_COLUMNS = {
    "documents": frozenset({"title", "author", "text", "url"}),
    "hits": frozenset({"indicator", "context", "url", "model", "artifact", "recipient"}),
}
RESULT_KIND = {"documents": "document", "hits": "hit"}
# About a line of a post around the match; a 64-hex digest counts as one token.
SNIPPET_TOKENS = 16
# How many of a query's matches (the newest) each index ranks: bm25 costs about 15 us a
# row, so a broad query stays near 0.1 s however many rows it matches.
WINDOW = 5000
ELLIPSIS = "…"
OPERATORS = ("AND", "OR", "NOT")
# FTS5's bareword characters; anything else outside quotes is a syntax error there.
BAREWORD = re.compile(r"[A-Za-z0-9_\x1a\x80-\U0010ffff]+")
COLUMN_FILTER = re.compile(r"([a-z]+):(.*)", re.DOTALL)


class SearchError(ValueError):
    """A query that cannot be run, as one line naming the problem."""


@dataclass
class SearchResult:
    """One document or hit that a search found.

    `snippet` is plain text; `highlights` are the [start, end) character offsets of the
    matched words in it, so no marker can be confused with crawled text."""

    kind: str  # "document" or "hit"
    id: int
    target: str
    url: str
    title: str | None  # a document's
    indicator: str | None  # a hit's
    severity: str | None  # a hit's
    document_id: int | None  # a hit's document
    hits: list[int]  # a document's hits
    first_seen: str
    last_seen: str
    fetched_at: str | None  # a document's
    rank: float
    snippet: str
    highlights: list[list[int]]

    def marked_snippet(self, start: str = "[", end: str = "]") -> str:
        """The snippet with each match between `start` and `end`, for people."""
        out, last = [], 0
        for begin, finish in self.highlights:
            out += [self.snippet[last:begin], start, self.snippet[begin:finish], end]
            last = finish
        return "".join(out) + self.snippet[last:]

    def as_dict(self) -> dict[str, Any]:
        """The JSON contract of `search --format json` (docs/json-output.md)."""
        return asdict(self)


@dataclass
class Found:
    """What a search found, best first, and the indexes ("documents", "hits") in which
    the query matched more than WINDOW rows, so that only the newest WINDOW were ranked."""

    results: list[SearchResult]
    windowed: list[str]


@dataclass(frozen=True)
class Query:
    """A user's query as FTS5 will read it, and the columns it filters on."""

    fts: str
    columns: frozenset[str]


def parse_query(query: str) -> Query:
    """Rewrite an analyst's query into FTS5 syntax (see the module docstring), or
    SearchError naming what is wrong with it."""
    known = frozenset().union(*FTS_COLUMNS.values())
    out: list[str] = []
    columns: set[str] = set()
    opened: list[tuple[int, bool]] = []  # each open parenthesis: where, and whether NEAR's
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = i + 1
            while True:
                end = query.find('"', end)
                if end == -1:
                    raise SearchError(f"unbalanced quote: the phrase opened at character "
                                      f"{i + 1} never ends")
                if query[end + 1:end + 2] != '"':
                    break
                end += 2  # "" inside a phrase is a literal quote
            # "heron 7"*: the phrase's last word is a prefix.
            stop = end + 2 if query[end + 1:end + 2] == "*" else end + 1
            out.append(query[i:stop])
            i = stop
        elif ch == "(":
            opened.append((i, bool(out) and out[-1] == "NEAR"))
            out.append("(")
            i += 1
        elif ch == ")":
            if not opened:
                raise SearchError(f"unbalanced parenthesis: ')' at character {i + 1} closes "
                                  f"nothing")
            opened.pop()
            out.append(")")
            i += 1
        elif ch == "," and opened and opened[-1][1]:
            out.append(",")  # NEAR(a b, 10)
            i += 1
        else:
            end = i
            while end < n and not query[end].isspace() and query[end] not in '"()' and not (
                    query[end] == "," and opened and opened[-1][1]):
                end += 1
            out.append(_chunk(query[i:end], query[end:end + 1] == "(", known, columns))
            i = end
    if opened:
        raise SearchError(f"unbalanced parenthesis: '(' at character {opened[-1][0] + 1} is "
                          f"never closed")
    if not out:
        raise SearchError("empty query: give a word, a \"phrase\" or a digest")
    return Query(" ".join(out), frozenset(columns))


def _chunk(chunk: str, before_paren: bool, known: frozenset[str], columns: set[str]) -> str:
    """One run of text between spaces, quotes and parentheses, as FTS5 must see it."""
    if chunk in OPERATORS or (chunk == "NEAR" and before_paren) or chunk == "+":
        return chunk
    if chunk.isdigit():
        return chunk  # a bareword, or NEAR's distance
    match = COLUMN_FILTER.fullmatch(chunk)
    if match and match.group(1) in known:
        columns.add(match.group(1))
        rest = match.group(2)
        return f"{match.group(1)} :" + (f" {_word(rest)}" if rest else "")
    return _word(chunk)


def _word(chunk: str) -> str:
    """A word, prefix* or ^initial word, quoted as a phrase if FTS5 would refuse it."""
    initial = "^" if chunk.startswith("^") else ""
    prefix = "*" if chunk.endswith("*") else ""
    core = chunk[len(initial):len(chunk) - len(prefix)]
    if BAREWORD.fullmatch(core):
        return initial + core + prefix
    if not any(ch.isalnum() for ch in core):
        raise SearchError(f"{chunk!r} is not a word to search for (leave words out with "
                          f"NOT, as in: heron NOT bird)")
    return f'{initial}"{core}"{prefix}'


def search(store: Store, query: str, *, scope: str = "all", since: str | None = None,
           target: str | None = None, limit: int = 20) -> Found:
    """Documents and hits (`scope`: "all", "documents" or "hits") that `query` finds,
    best first: each index's `limit` best by bm25 among its newest WINDOW matches,
    merged by rank (bm25 on both indexes is on one scale, so a strong hit and a strong
    document interleave) and cut to `limit`. An index without a column the query
    filters on is not searched. `since` (ISO time) keeps documents last seen and hits
    first seen since then; `target` keeps one target's. SearchError if the query is
    malformed."""
    parsed = parse_query(query)
    candidates = ("documents", "hits") if scope == "all" else (scope,)
    tables = [t for t in candidates if parsed.columns <= FTS_COLUMNS[t]]
    if not tables:
        raise SearchError(f"column filter {', '.join(sorted(parsed.columns))}: " + "; ".join(
            f"{t} have {', '.join(sorted(FTS_COLUMNS[t]))}" for t in candidates))
    # A fresh nonce in the markers: crawled text cannot forge a highlight it cannot guess.
    nonce = secrets.token_hex(8)
    marks = (f"\x02{nonce}\x03", f"\x03{nonce}\x02", ELLIPSIS)
    results: list[SearchResult] = []
    windowed: list[str] = []
    for table in tables:
        try:
            rows, cut = store.search(table, parsed.fts, marks=marks, tokens=SNIPPET_TOKENS,
                                     window=WINDOW, since=since, target=target, limit=limit)
        except sqlite3.OperationalError as exc:
            problem = _fts_problem(query, str(exc))
            if problem is None:
                raise
            raise SearchError(problem) from None
        if cut:
            windowed.append(table)
        hit_ids = (store.hit_ids_by_document([row["id"] for row in rows])
                   if table == "documents" else {})
        for row in rows:
            snippet, highlights = _unmark(row["snippet"] or "", marks[0], marks[1])
            results.append(SearchResult(
                kind=RESULT_KIND[table], id=row["id"], target=row["target"], url=row["url"],
                title=row.get("title"), indicator=row.get("indicator"),
                severity=row.get("severity"), document_id=row.get("document_id"),
                hits=hit_ids.get(row["id"], []), first_seen=row["first_seen"],
                last_seen=row["last_seen"], fetched_at=row.get("fetched_at"),
                rank=row["rank"], snippet=snippet, highlights=highlights))
    results.sort(key=lambda r: r.rank)
    return Found(results[:limit], windowed)


def _unmark(marked: str, start: str, end: str) -> tuple[str, list[list[int]]]:
    """Snippet text without the markers, and where the marked stretches were in it."""
    plain: list[str] = []
    highlights: list[list[int]] = []
    length = 0
    for piece in marked.split(start):
        inside, found, after = piece.partition(end)
        if found:
            highlights.append([length, length + len(inside)])
            plain += [inside, after]
            length += len(inside) + len(after)
        else:
            plain.append(piece)
            length += len(piece)
    return "".join(plain), highlights


def _fts_problem(query: str, message: str) -> str | None:
    """FTS5's complaint about a query, said so that an analyst can fix it; None if the
    error is not about the query (a locked or broken database is not the user's typo)."""
    if message.startswith("fts5: syntax error near"):
        near = message.removeprefix("fts5: syntax error near").strip()
        where = "at its end" if near in ('""', "") else f"near {near}"
        return (f"cannot parse {query!r}: syntax error {where} (AND, OR, NOT and NEAR need "
                f"words on both sides; put a phrase in quotes)")
    if message.startswith(("fts5:", "unterminated string", "no such column")):
        return f"cannot parse {query!r}: {message}"
    return None
