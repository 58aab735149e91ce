"""What a regex needs to see before it can match: the literals a pre-filter looks for.

A rule's regex only runs on a document where one of its required literals occurs, so the
literals must be a *necessary* condition: every match of the regex contains at least one of
them. They are read from the parsed regex (`re._parser`, the parser `re.compile` itself
uses, so the reading cannot disagree with the engine), and compared against case-folded
text: `fold` maps every character to one character the way `re.IGNORECASE` compares them,
so a literal of a case-insensitive rule occurs in the folded text whenever the rule could
match, and a literal of a case-sensitive rule does too (folding only merges characters).
"""

from __future__ import annotations

import re
import re._casefix as _casefix  # type: ignore[import-not-found]  # CPython's case table
import re._constants as sre_c  # type: ignore[import-not-found]  # CPython's own regex parser; no stubs
import re._parser as sre_p  # type: ignore[import-not-found]
from typing import Any

# Literals shorter than this fire on nearly every document: a rule whose best literal is
# shorter is treated as one with none (its regex runs everywhere, as check-config says).
MIN_LITERAL = 2

# `re.IGNORECASE` compares simple lowercase mappings, and treats a few lowercase letters as
# one (CPython's own table of them, `re._casefix`): the smallest of each group stands for it.
_CANON = {lower: min(lower, *others) for lower, others in _casefix._EXTRA_CASES.items()
          if min(lower, *others) != lower}
_CANON_RE = re.compile("[" + "".join(map(chr, _CANON)) + "]")
# str.lower() is the full mapping; U+0130 is the one character whose full lowercase is two
# characters (i + combining dot) where the simple mapping re uses is one (i).
_DOTTED_I = "\u0130"


def fold(text: str) -> str:
    """`text` with each character replaced by the one `re.IGNORECASE` compares it as; same
    length, so positions carry over."""
    if text.isascii():
        return text.lower()
    if _DOTTED_I in text:
        text = text.replace(_DOTTED_I, "i")
    folded = text.lower()
    if _CANON_RE.search(folded):
        folded = folded.translate(_CANON)
    return folded


def required_literals(pattern: str) -> list[str] | None:
    """Folded literals of which every match of `pattern` contains at least one; None when
    no such set of literals of at least `MIN_LITERAL` characters can be read from it."""
    try:
        parsed = sre_p.parse(pattern)
    except re.error:
        return None
    best = _required(list(parsed))
    if best is None or min(map(len, best)) < MIN_LITERAL:
        return None
    return sorted({fold(s) for s in best})


Requirement = frozenset[str]


def _score(req: Requirement) -> tuple[int, int]:
    """Longer literals fire less often; fewer of them make a tighter condition."""
    return (min(map(len, req)), -len(req))


def _best(candidates: list[Requirement]) -> Requirement | None:
    return max(candidates, key=_score, default=None)


def _required(items: list[tuple[Any, Any]]) -> Requirement | None:
    """The best requirement of a sequence: runs of consecutive literal characters, and the
    requirements of the groups, branches and repeats it must pass through."""
    candidates: list[Requirement] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            candidates.append(frozenset(["".join(run)]))
            run.clear()

    for op, av in items:
        if op is sre_c.LITERAL:
            run.append(chr(av))
            continue
        close_run()
        inner: Requirement | None = None
        if op is sre_c.SUBPATTERN:
            inner = _required(list(av[-1]))
        elif op is sre_c.BRANCH:
            alternatives = [_required(list(branch)) for branch in av[1]]
            if all(alt is not None for alt in alternatives):
                inner = frozenset().union(*(alt for alt in alternatives if alt is not None))
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            low, _high, body = av
            if low >= 1:
                inner = _required(list(body))
        elif op is sre_c.ATOMIC_GROUP:
            inner = _required(list(av))
        # Anything else (classes, any-character, anchors, look-arounds, back-references,
        # conditionals) requires no particular literal and ends the run of characters.
        if inner is not None:
            candidates.append(inner)
    close_run()
    return _best(candidates)
