"""Keyword and regex rules from `[[rules]]`: mentions of a release by name.

A document is read once for the literals every rule needs (`literals.required_literals`,
all of them in one `multipattern` set); only the rules whose literals occur run their own
regex, over the whole text as before, so a hit is the same as `pattern.search` gives. A rule
with no literal to look for runs its regex on every document (`check-config` names them,
with their cost: `rule_costs`).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from monitor.config import Rule
from monitor.detect.literals import fold, required_literals
from monitor.detect.multipattern import Engine, literal_set
from monitor.detect.text import searchable_text, snippet
from monitor.models import Document, Hit


class RuleDetector:
    name = "rules"

    def __init__(self, rules: list[Rule], *, engine: Engine | None = None):
        """`engine` looks for the literals (the fastest installed by default; same hits)."""
        self.rules = [(rule, re.compile(rule.pattern), _version(rule)) for rule in rules]
        literals: list[tuple[str, int]] = []
        self._always: list[int] = []
        for i, (rule, *_compiled) in enumerate(self.rules):
            required = required_literals(rule.pattern)
            if required is None:
                self._always.append(i)
            else:
                literals.extend((literal, i) for literal in required)
        self._literals = literal_set(literals, engine=engine)

    def detect(self, doc: Document) -> list[Hit]:
        text = searchable_text(doc)
        candidates = self._literals.fired(fold(text)) if len(self._always) < len(self.rules) else set()
        candidates.update(self._always)
        hits = []
        for i in sorted(candidates):  # the config's order, as one regex per rule gave
            rule, pattern, version = self.rules[i]
            if rule.targets and doc.target not in rule.targets:
                continue
            match = pattern.search(text)
            if match is None:
                continue
            hits.append(Hit(
                kind="mention", severity=rule.severity, indicator=match.group(0),
                indicator_type="rule", detector=self.name, rule=rule.name, model=rule.model,
                context=snippet(text, match.start(), match.end()), matcher_version=version))
        return hits


def _version(rule: Rule) -> str:
    """Changes when the rule's meaning does, so evidence says which rule text matched."""
    digest = hashlib.sha256(f"{rule.pattern}\x1f{rule.severity}\x1f{rule.model}".encode()).hexdigest()
    return f"rule:{rule.name}:{digest[:12]}"


@dataclass(frozen=True)
class RuleCost:
    """A rule no literal can pre-filter, and what its regex costs per KB of text."""

    name: str
    us_per_kb: float


# Measured on prose shaped like forum posts, without the rule's literals (it has none).
_SAMPLE = ("Anyone tried the new release? The weights were posted on the tracker last night, "
           "grab the magnet before it is gone; the 7b quantised files are in the second "
           "post, checksums below. ") * 64


def rule_costs(rules: list[Rule], repeat: int = 5) -> list[RuleCost]:
    """The rules whose regex runs on every document (no literal to pre-filter), each with
    the best of `repeat` timings of its regex over an 8 KB sample, in microseconds per KB."""
    costs = []
    kb = len(_SAMPLE.encode()) / 1024
    for rule in rules:
        if required_literals(rule.pattern) is not None:
            continue
        pattern = re.compile(rule.pattern)
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            pattern.search(_SAMPLE)
            best = min(best, time.perf_counter() - start)
        costs.append(RuleCost(rule.name, best * 1e6 / kb))
    return costs
