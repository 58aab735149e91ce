"""One pass over a text for many literals: which of them occur.

Aho-Corasick (pyahocorasick, a C extension) finds every occurrence of every literal in one
pass, whatever their number: measured in `benchmarks/detect.py`. Where the extension is
missing, each literal is looked for with `str.__contains__` (C speed per literal, so the cost
grows with their number, but the answers are the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

try:
    import ahocorasick  # type: ignore[import-not-found]  # a C extension without stubs
except ImportError:  # pragma: no cover - the portable fallback
    ahocorasick = None


class LiteralSet(Protocol):
    engine: str

    def fired(self, text: str) -> set[int]:
        """The tags of the literals that occur in `text`."""
        ...


class _Automaton:
    engine = "pyahocorasick"

    def __init__(self, literals: Sequence[tuple[str, int]]):
        self._automaton = ahocorasick.Automaton()
        tags: dict[str, list[int]] = {}
        for literal, tag in literals:
            tags.setdefault(literal, []).append(tag)
        for literal, literal_tags in tags.items():
            self._automaton.add_word(literal, tuple(literal_tags))
        self._empty = not tags
        if tags:
            self._automaton.make_automaton()

    def fired(self, text: str) -> set[int]:
        if self._empty:
            return set()
        found: set[int] = set()
        seen: set[tuple[int, ...]] = set()
        for _end, literal_tags in self._automaton.iter(text):
            if literal_tags not in seen:
                seen.add(literal_tags)
                found.update(literal_tags)
        return found


class _Scan:
    engine = "python"

    def __init__(self, literals: Sequence[tuple[str, int]]):
        tags: dict[str, list[int]] = {}
        for literal, tag in literals:
            tags.setdefault(literal, []).append(tag)
        self._literals = list(tags.items())

    def fired(self, text: str) -> set[int]:
        found: set[int] = set()
        for literal, tags in self._literals:
            if literal in text:
                found.update(tags)
        return found


def literal_set(literals: Iterable[tuple[str, int]], *, portable: bool = False) -> LiteralSet:
    """The literals (each with a tag saying what it stands for) ready to be looked for;
    `portable` picks the pure-Python engine even where the C one is installed."""
    items = list(literals)
    if ahocorasick is None or portable:
        return _Scan(items)
    return _Automaton(items)
