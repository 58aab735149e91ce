"""Keyword and regex rules from `[[rules]]`: mentions of a release by name."""

from __future__ import annotations

import hashlib
import re

from monitor.config import Rule
from monitor.detect.text import searchable_text, snippet
from monitor.models import Document, Hit


class RuleDetector:
    name = "rules"

    def __init__(self, rules: list[Rule]):
        self.rules = [(rule, re.compile(rule.pattern), _version(rule)) for rule in rules]

    def detect(self, doc: Document) -> list[Hit]:
        text = searchable_text(doc)
        hits = []
        for rule, pattern, version in self.rules:
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
