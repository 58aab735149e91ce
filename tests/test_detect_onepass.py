"""The one-pass detectors against the straightforward ones they replace: each rule's
`pattern.search` over every document, and every digest token of every document looked up.
Same hits (indicator, context, matcher version, order) over the demo world's documents and
over hard negatives: near-miss digests, case variants, overlapping keywords, alternations,
unicode that `re.IGNORECASE` folds."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import registered_store

from demo.release import Release
from demo.sites import SITES
from monitor.config import Rule, keywords_pattern
from monitor.detect import detect_all
from monitor.detect.digests import DigestDetector
from monitor.detect.literals import fold, required_literals
from monitor.detect.multipattern import engines
from monitor.detect.rules import RuleDetector, _version, rule_costs
from monitor.detect.text import searchable_text, snippet
from monitor.models import Document, Hit

ROOT = Path(__file__).resolve().parent.parent


def shipped_rules() -> list[Rule]:
    data = tomllib.loads((ROOT / "config.toml").read_text())
    return [Rule(name=r["name"], pattern=r.get("pattern") or keywords_pattern(r["keywords"]),
                 model=r.get("model"), severity=r.get("severity", "low"))
            for r in data.get("rules", [])]


HARD_RULES = [
    Rule(name="kw", pattern=keywords_pattern(["heron", "heron 7b", "ron", "7B weights"])),
    Rule(name="alt", pattern=r"(?i)(?:falcon|heron)[-_ ]?(?:7|13)b\b.{0,40}(?:leak|torrent)"),
    Rule(name="case-sensitive", pattern=r"HERON-7B|Heron-Secret"),
    Rule(name="inline-flag", pattern=r"(?i:mirror)\s+of\s+HERON"),
    Rule(name="long-s", pattern=r"(?i)\bdump\b.{0,10}ſafetensors"),
    Rule(name="kelvin", pattern=r"(?i)kilo-heron"),
    Rule(name="dotted", pattern=r"(?i)istanbul-leak"),
    Rule(name="no-literal", pattern=r"\b[0-9a-f]{12}\b"),
    Rule(name="one-char", pattern=r"(?i)x\d{4}"),
    Rule(name="repeat", pattern=r"(?:ab){2,}cd"),
    Rule(name="targeted", pattern=r"(?i)heron", targets=["elsewhere"]),
]

HARD_TEXTS = [
    "so the Heron 7B weights leak is real",
    "HERON-7b herons heron7b heron_7b Heron-Secret heron-secret",
    "MIRROR of HERON and mirror of heron",
    "a dump of ſafetensors and a dump of SAFETENSORS and DUMP of \u017fAFETENSORS",
    "\u212aILO-HERON kilo-heron KILO-heron",            # Kelvin sign folds to k
    "\u0130STANBUL-LEAK and ıstanbul-leak and istanbul-leak",  # dotted and dotless i
    "falcon 13b weights ... torrent; heron-7b totally not a leak; abababcd abcd",
    "commit deadbeefcafe and x1234 and X9999 and 7b weights and 7B WEIGHTS",
    "überheron heron\u00e9 «heron» 日本語 heron 7b 🦩 leak",
    "",
]


def near_misses(value: str) -> list[str]:
    """The digest as written around the registry's edges: one character off, one too many,
    inside a longer hex run, in upper case, glued to a word."""
    return [value[:-1] + ("0" if value[-1] != "0" else "1"), value + "0", "0" + value,
            "ab" + value + "cd", value.upper(), f"x{value}", f"{value}g", f"sha256:{value}",
            f"urn:btih:{value}", f"magnet:?xt=urn:btmh:1220{value}", value[:31]]


def reference_rules(rules: list[Rule], doc: Document) -> list[Hit]:
    """The rule detector before issue 16: each rule's regex over each document."""
    text = searchable_text(doc)
    hits = []
    for rule in rules:
        if rule.targets and doc.target not in rule.targets:
            continue
        match = re.compile(rule.pattern).search(text)
        if match:
            hits.append(Hit(
                kind="mention", severity=rule.severity, indicator=match.group(0),
                indicator_type="rule", detector="rules", rule=rule.name, model=rule.model,
                context=snippet(text, match.start(), match.end()), matcher_version=_version(rule)))
    return hits


class EveryToken(DigestDetector):
    """The digest detector before issue 16: every document tokenised and looked up."""

    def _may_match(self, text: str) -> bool:
        return True


@pytest.fixture(scope="module")
def documents(demo_release: Release) -> list[Document]:
    docs = [Document(target=doc.source, key=f"{i}", url=doc.url, text=doc.text)
            for i, doc in enumerate(d for site in SITES for d in site(demo_release).documents())]
    files = demo_release.files
    digests = [getattr(f, algo) for f in files for algo in ("sha256", "sha1", "md5")]
    extra = HARD_TEXTS + [" ".join(near_misses(v)) for v in digests]
    extra += [f"magnet:?xt=urn:btih:{base64.b32encode(bytes.fromhex(v)).decode()}&dn=x"
              for v in digests if len(v) == 40]
    docs += [Document(target="hard", key=f"h{i}", url="http://example.org/h", text=t)
             for i, t in enumerate(extra)]
    docs += [Document(target="hard", key=f"j{i}", url="http://example.org/j",
                      title=a.text[:40], text=b.text, links=[a.url])
             for i, (a, b) in enumerate(zip(docs[::3], docs[1::3], strict=False))]
    return docs


def fields(hits: list[Hit]) -> list[tuple[object, ...]]:
    return [(h.kind, h.severity, h.indicator, h.indicator_type, h.rule, h.model, h.artifact,
             h.recipient, h.context, h.matcher_version) for h in hits]


@pytest.mark.parametrize("engine", engines())
def test_rules_hit_as_one_regex_per_rule_did(documents, engine):
    rules = shipped_rules() + HARD_RULES
    assert len(rules) > len(HARD_RULES)
    detector = RuleDetector(rules, engine=engine)
    total = 0
    for doc in documents:
        expected = fields(reference_rules(rules, doc))
        assert fields(detector.detect(doc)) == expected, doc.text[:200]
        total += len(expected)
    assert total > 20, "the texts exercise the rules"
    hard = {h.rule for doc in documents if doc.target == "hard"
            for h in reference_rules(HARD_RULES, doc)}
    assert {"kw", "alt", "case-sensitive", "inline-flag", "long-s", "kelvin", "dotted",
            "repeat"} <= hard


def test_digests_hit_as_every_token_did(documents, demo_release, tmp_path):
    store = registered_store(tmp_path / "db.sqlite", demo_release)
    try:
        known = store.known_digests()
        fast, reference = DigestDetector(known), EveryToken(known)
        total = 0
        for doc in documents:
            expected = fields(detect_all([reference], doc))
            assert fields(detect_all([fast], doc)) == expected, doc.text[:200]
            total += len(expected)
        assert total >= 5, "planted digests are found"
    finally:
        store.close()


def test_literals_are_necessary_and_folded():
    assert required_literals(r"(?i)(?<![\w-])heron[-_ ]?7b(?!\w)") == ["heron"]
    assert required_literals(r"(?:falcon|HERON)-x") == ["falcon", "heron"]
    assert required_literals(r"a|\d+") is None  # one branch needs nothing
    assert required_literals(r"\b[0-9a-f]{12}\b") is None
    # Folding keeps lengths (positions carry over) and merges what IGNORECASE merges.
    for text in ("\u0130x", "\u212a", "\u017f", "µ", "Straße"):
        assert len(fold(text)) == len(text)
        for i, char in enumerate(text):
            assert re.fullmatch(re.escape(fold(text)[i]), char, re.I)


def test_rule_costs_name_only_unfiltered_rules():
    costs = rule_costs(HARD_RULES, repeat=1)
    assert [c.name for c in costs] == ["no-literal", "one-char"]
    assert all(c.us_per_kb > 0 for c in costs)


def test_check_config_names_the_rules_no_literal_can_prefilter(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[[rules]]\nname = \"hexy\"\npattern = '\\b[0-9a-f]{12}\\b'\n\n"
                      "[[rules]]\nname = \"named\"\npattern = '(?i)heron[-_ ]?7b'\n")
    proc = subprocess.run([sys.executable, "-m", "monitor", "--config", str(config),
                           "check-config"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{config}: ok: 0 targets (0 enabled), 2 rules")
    (cost,) = lines[1:]
    assert re.fullmatch(r"rule hexy: no literal to pre-filter; its regex runs on every "
                        r"document \([0-9.]+ µs per KB measured\)", cost)


def test_registry_is_held_as_digest_bytes_and_read_on_a_match(tmp_path):
    from monitor.store import Store
    store = Store(tmp_path / "db.sqlite")
    store.add_artifact(model="m", name="m/w.bin", path="/r", size=3, sha256="a" * 64,
                       sha1="b" * 40, md5="c" * 32)
    store.add_indicator(algo="btih", value="B" * 40, model="n", source="import:x:1")
    store.add_indicator(algo="md5", value="not-hex", model="m", source="import:x:2")
    known = store.known_digests()
    assert known.packed == {bytes.fromhex("a" * 64), bytes.fromhex("b" * 40),
                            bytes.fromhex("c" * 32)}
    assert len(known) == 4 and "A" * 64 not in known and "not-hex" in known
    with pytest.raises(KeyError):
        known["A" * 64]  # values are lowercase, as the dict it replaces had them
    store.close()  # `targets test` detects after closing: a match reopens the file
    assert [(e.algo, e.model, e.artifact) for e in known["b" * 40]] == [
        ("sha1", "m", "m/w.bin"), ("btih", "n", None)]
    assert [e.source for e in known["not-hex"]] == ["import:x:2"]
