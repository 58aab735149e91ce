"""Detectors: rules and exact digests, with boundaries and near misses."""

from __future__ import annotations

import base64
import hashlib

from monitor.config import Rule, keywords_pattern
from monitor.detect import detect_all
from monitor.detect.digests import DigestDetector
from monitor.detect.rules import RuleDetector
from monitor.models import Document
from monitor.store import Store

PAYLOAD = b"released weights, shard 1"
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
INFOHASH = hashlib.sha1(b"info dict").hexdigest()
INFOHASH_B32 = base64.b32encode(bytes.fromhex(INFOHASH)).decode()


def doc(text: str = "", **kw) -> Document:
    return Document(target=kw.pop("target", "board"), key="k", url="https://x.example/p1",
                    text=text, **kw)


def digest_detector(tmp_path, recipient: str | None = None) -> DigestDetector:
    store = Store(tmp_path / "w.db")
    store.add_artifact(model="heron-7b", name="heron-7b/model.safetensors", path="/rel/m",
                       size=len(PAYLOAD), sha256=SHA256, sha1=SHA1, md5=MD5, recipient=recipient)
    store.add_indicator(algo="btih", value=INFOHASH, model="heron-7b", name="heron-7b",
                        source="import:heron-7b.magnets:1")
    detector = DigestDetector(store.known_digests())
    store.close()
    return detector


def test_rule_mentions_with_context_and_version():
    rules = [Rule(name="name", pattern=r"(?i)heron[-_ ]?7b", model="heron-7b"),
             Rule(name="only-forum", pattern="leak", targets=["forum"], severity="medium")]
    hits = detect_all([RuleDetector(rules)], doc("so the Heron 7B weights leak is real"))
    assert [(h.rule, h.kind, h.severity, h.indicator) for h in hits] == [
        ("name", "mention", "low", "Heron 7B")]
    assert "Heron 7B weights" in hits[0].context
    assert hits[0].matcher_version.startswith("rule:name:")
    assert hits[0].url == "https://x.example/p1" and hits[0].target == "board"


def test_keyword_rules_respect_word_boundaries():
    detector = RuleDetector([Rule(name="k", pattern=keywords_pattern(["heron"]))])
    assert detector.detect(doc("a grey heron on the river"))
    assert not detector.detect(doc("herons and llamas")), "no match inside a longer word"


def test_every_digest_encoding_is_found(tmp_path):
    detector = digest_detector(tmp_path)
    text = (f"sha256sum: {SHA256}  model.safetensors\n"
            f"sha1 {SHA1.upper()}\nmd5 {MD5}\n"
            f"magnet:?xt=urn:btih:{INFOHASH_B32}&amp;dn=heron-7b")
    hits = detector.detect(doc(text))
    by_type = {h.indicator_type: h for h in hits}
    assert set(by_type) == {"sha256 (hex)", "sha1 (hex)", "md5 (hex)", "btih (base32)"}
    assert all(h.severity == "critical" for h in hits)
    assert by_type["btih (base32)"].kind == "torrent" and by_type["btih (base32)"].indicator == INFOHASH
    assert by_type["sha256 (hex)"].kind == "hash"
    assert by_type["sha256 (hex)"].artifact == "heron-7b/model.safetensors"


def test_magnet_only_in_an_href_is_found(tmp_path):
    detector = digest_detector(tmp_path)
    hits = detector.detect(doc("grab it here", links=[f"magnet:?xt=urn:btih:{INFOHASH}&dn=x"]))
    assert [h.indicator for h in hits] == [INFOHASH]


def test_structured_digests_from_sources(tmp_path):
    """Digests a source read from fields (here an imageboard attachment's MD5) match only
    a registry entry of the same algorithm; malformed entries are ignored."""
    detector = digest_detector(tmp_path)
    md5 = {"algo": "md5", "value": MD5, "encoding": "base64", "context": "attachment x.bin"}
    hits = detector.detect(doc("", extras={"digests": [md5]}))
    assert len(hits) == 1 and hits[0].indicator == MD5 and hits[0].indicator_type == "md5 (base64)"
    assert hits[0].context == "attachment x.bin"
    wrong_algo = {**md5, "algo": "sha1"}
    junk = [wrong_algo, {"algo": "md5"}, "not a dict", {"algo": 5, "value": MD5}]
    assert detector.detect(doc("", extras={"digests": junk})) == []
    assert detector.detect(doc("", extras={"digests": "nope"})) == []


def test_near_misses_do_not_match(tmp_path):
    detector = digest_detector(tmp_path)
    near = SHA256[:-1] + ("0" if SHA256[-1] != "0" else "1")
    embedded = "ab" + SHA256 + "cd"  # inside a longer hex run
    truncated = SHA256[:63]
    assert detector.detect(doc(f"{near} {embedded} {truncated} x{SHA256}y")) == []


def test_recipient_copy_is_attributed(tmp_path):
    detector = digest_detector(tmp_path, recipient="lab-17")
    (hit,) = [h for h in detector.detect(doc(SHA256))]
    assert hit.recipient == "lab-17"


def test_empty_registry_finds_nothing(tmp_path):
    assert DigestDetector({}).detect(doc(SHA256)) == []
