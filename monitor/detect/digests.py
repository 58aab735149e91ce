"""Exact digests of registered artifacts, however they are written.

Hex SHA-256/SHA-1/MD5 tokens (an LFS pointer's `oid sha256:` line among them), BitTorrent
infohashes in magnets (hex or base32), v2 pieces roots read from .torrent files, and the
base64 MD5 imageboards give for attachments are normalised to lowercase hex and looked up
in a set: fast on any volume of text, and an exact digest is the strongest evidence there
is, so every match is critical. A document is tokenised only where one of its runs of hex
(or a "btih") could be a registered value, which a byte-level pass over it tells at C speed.

IPFS CIDs (`Qm...`, `bafy...` and the other multibases, bare, in `ipfs://` links, gateway
paths and subdomains) are looked up by their multihash digest among the CIDs computed at
register time, once a registry holds any: a CID has no checksum, so a mistyped one decodes
to another digest and simply matches nothing.

BLAKE3 (and a full AutoV1 or AutoV3) is 64 hex like a SHA-256: a 64-hex token is looked up
under every algorithm at once. Short hashes (AutoV1 and CRC32 at 8 hex, AutoV2 at 10,
AutoV3 at 12: `fingerprints.algos.SHORT_FORMS`) are read only in naming context
(`fingerprints.indicators.SHORT_CONTEXTS`: A1111's "Model hash:", checkpoint titles and
"Lora hashes:" list, "AutoV2:"-style labels), and from a hub's stated hashes. A document
is read for them only if the pass that looks for digests saw a run of at least 8 hex in it
and one of the contexts' literals occurs (`monitor.detect.multipattern`): prose pays only
that search for a run of 8 (about 2 us a 2 KB post, this detector alone 270 -> 195 MB/s on
benchmarks/detect.py's posts; benchmarks/short_hashes.py prints the cost where every post
has a parameter block). Such a hit rests on 4 bits a hex character: with N registered values of its
form, an unrelated value written so matches one by chance N / 2^bits (8 hex: N / 2^32), and
the hit says so. It is never critical: a prefix is not the file's digest but a claim about
it, and it can be forged cheaply (2^32 SHA-256 trials for 8 hex; a CRC32 is set by patching
four bytes). It is high while that chance is at most one in a million (N up to 4,294
registered values at 32 bits, a million at 40), and medium beyond: crawls read a few
million parameter blocks a year, so a per-mention chance of 10^-6 is about one coincidence
a year, and more is too many for an alert that wakes someone.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from fingerprints.algos import SHORT_FORMS, ShortForm, chance
from fingerprints.indicators import SHORT_CONTEXTS, ShortToken, scan_short_hashes, scan_text
from fingerprints.ipfs import DAG_PB, LAYOUT_BY_NAME, Cid, FoundCid, find_cids
from monitor.detect.literals import fold
from monitor.detect.multipattern import LiteralSet, literal_set
from monitor.detect.text import searchable_text, snippet
from monitor.models import Document, Hit, KnownDigest, Severity

TORRENT_ALGOS = {"btih", "btmh"}
# A v2 pieces root is only ever listed inside a .torrent: a match means a torrent of the file.
TORRENT_KIND_ALGOS = TORRENT_ALGOS | {"pieces_root"}
# "oid sha256:<hex>": a Git LFS pointer's digest line, pasted or committed as text.
LFS_OID_PREFIX = "oid sha256:"
# A CID's registry entries are named after the import layout they were computed for.
CID_PREFIX = "cid-"
# When one value is registered under several algorithms (a file of at most 16 KiB has a
# pieces root equal to its SHA-256), the hit names the most telling one.
ALGO_PREFERENCE = {"sha256": 0, "sha1": 1, "md5": 2, "btih": 3, "btmh": 4, "shard": 5,
                   "pieces_root": 6, "blake3": 7, "autov1": 8, "autov3": 9}
# Short-hash hits: the matching rule's version (the registry entry is named beside it).
SHORT_MATCHER = "shorthash-v1"
# A short hash in context is high while a chance match is at most this likely, else medium.
SHORT_HIGH_CHANCE = 1e-6
# Hit key: (value or short indicator, model, recipient).
_Found = dict[tuple[str, str, str | None], Hit]


class DigestDetector:
    name = "digests"

    def __init__(self, known: Mapping[str, Sequence[KnownDigest]]):
        self.known = known
        # The store's registry already holds its values as bytes (`KnownDigests.packed`);
        # a plain mapping (tests, a scan's subset) is packed here.
        packed = getattr(known, "packed", None)
        self._packed: frozenset[bytes] = (packed if isinstance(packed, frozenset)
                                          else frozenset(_packed(known)))
        # Base32 infohashes are 20 bytes; without any, a magnet's base32 cannot match.
        self._base32 = any(len(key) == 20 for key in self._packed)
        has_cids = getattr(known, "has_cids", None)
        self._cids: bool = (has_cids if isinstance(has_cids, bool) else any(
            e.algo.startswith(CID_PREFIX) for entries in known.values() for e in entries))
        # The last document's `_hex_runs`, which both pre-checks read.
        self._last_runs: tuple[str, tuple[bool, bool]] | None = None
        # A plain mapping's values in order, for prefix lookups (built on the first).
        self._sorted: list[str] | None = None

    def detect(self, doc: Document) -> list[Hit]:
        if not self.known:
            return []
        text = searchable_text(doc)
        found: _Found = {}
        for token in scan_text(text) if self._may_match(text) else ():
            encoding = token.encoding
            if encoding == "hex" and text[max(0, token.start - len(LFS_OID_PREFIX)):
                                          token.start].lower() == LFS_OID_PREFIX:
                encoding = "lfs pointer"
            for entry in self._lookup(token.value, token.algo_hint):
                context = snippet(text, token.start, token.end)
                self._add(found, entry, encoding, context)
        for cid in find_cids(text) if self._cids else ():
            for entry in self._lookup(cid.cid.digest.hex(), "cid"):
                self._add(found, entry, cid.form, snippet(text, cid.start, cid.end),
                          indicator=registered_cid(entry, cid))
        stated_short = []
        for item in structured_digests(doc):
            form = SHORT_FORMS.get(item["algo"])
            if form is not None and len(item["value"]) == form.length:
                stated_short.append((form, item))
                continue
            for entry in self._lookup(item["value"], item["algo"], exact=True):
                self._add(found, entry, item.get("encoding", "field"), item.get("context", ""))
        named_hashes = self._named_short(text)
        if not (named_hashes or stated_short):
            return list(found.values())
        # A file already named by a full digest here needs no weaker hit beside it.
        named = {(hit.model, hit.artifact, hit.recipient) for hit in found.values()}
        short: _Found = {}
        for form, item in stated_short:
            self._add_short(short, named, form, item["value"],
                            f"stated by the hub ({item.get('encoding', 'field')})",
                            item.get("context", ""))
        for named_hash in named_hashes:
            self._add_short(short, named, SHORT_FORMS[named_hash.form], named_hash.value,
                            named_hash.context, (text, named_hash.start, named_hash.end))
        return [*found.values(), *short.values()]

    def _add_short(self, found: _Found, named: set[tuple[str | None, str | None, str | None]],
                   form: ShortForm, value: str, seen_as: str,
                   context: str | tuple[str, int, int]) -> None:
        """Hits for the registered values `value` is a prefix of; `context` is the hit's
        context, or the (text, start, end) to cut it from, once a value matched (nearly
        every short hash seen is not ours)."""
        prefix = value.lower()
        readings = [(prefix, seen_as)]
        if form.name == "crc32" and (swapped := crc32_swapped(prefix)) != prefix:
            # Civitai's scanner writes a CRC-32's bytes in little-endian order ("hello
            # world": 85114A0D; zlib and SFV files: 0D4A1185): both readings are tried, and
            # the chance of a coincidence counts both.
            readings.append((swapped, f"{seen_as}; its bytes reversed, as Civitai writes a "
                                      f"CRC-32"))
        for reading, how in readings:
            for entry in self._starting_with(form, reading):
                if not isinstance(context, str):
                    context = snippet(*context)
                if (entry.model, entry.artifact, entry.recipient) in named:
                    continue
                key = (f"{form.name}:{prefix}", entry.model, entry.recipient)
                if key not in found:
                    found[key] = short_hit(entry, form, prefix, how, context,
                                           self._registered(form) * len(readings))

    def _starting_with(self, form: ShortForm, prefix: str) -> list[KnownDigest]:
        """Registered values of `form` starting with `prefix`: by the store's index, or by
        reading a plain mapping (a test's, a scan's subset) through."""
        lookup = getattr(self.known, "starting_with", None)
        if callable(lookup):
            return list(lookup(form, prefix))
        if self._sorted is None:
            self._sorted = sorted(self.known)
        start = bisect.bisect_left(self._sorted, prefix)
        end = bisect.bisect_left(self._sorted, prefix + "g", start)
        return sorted((e for value in self._sorted[start:end] for e in self.known[value]
                       if e.algo in form.algos), key=lambda e: e.indicator_id)

    def _registered(self, form: ShortForm) -> int:
        count = getattr(self.known, "registered", None)
        if callable(count):
            return int(count(form))
        return len({value[:form.length] for value, entries in self.known.items()
                    if any(e.algo in form.algos for e in entries)})

    def _may_match(self, text: str) -> bool:
        """Whether `scan_text` could find a registered digest in `text` (`_hex_runs`)."""
        return self._hex_runs(text)[0]

    def _named_short(self, text: str) -> list[ShortToken]:
        """The short hashes in naming context in `text`: none looked for without a run of
        at least 8 hex characters (`_hex_runs`), and only the contexts whose literals
        occur are read."""
        if not self._hex_runs(text)[1]:
            return []
        folded = fold(text)
        fired = _short_literals().fired(folded)
        return scan_short_hashes(text, fired, folded=folded) if fired else []

    def _hex_runs(self, text: str) -> tuple[bool, bool]:
        """Whether a registered digest, and whether a short hash, could be in `text`, read
        in one pass over its runs of hex at C speed (once per document, for both checks):
        a token ends where its run of hex characters does (it is never followed by a letter
        or digit), so the last 32, 40 and 64 characters of each run of at least 32 are
        every digest it could have, and a short hash needs a run of at least 8; a base32
        infohash only follows "btih"."""
        last = self._last_runs
        if last is not None and last[0] is text:
            return last[1]
        data = text.encode("utf-8", "surrogatepass")
        mask = data.translate(_HEX_MASK)
        start = mask.find(_SHORT_RUN)
        short, digest = start >= 0, False
        while start >= 0 and not digest:
            end = mask.find(b".", start + len(_SHORT_RUN))
            end = len(mask) if end < 0 else end
            digest = end - start >= len(_RUN) and any(
                end - start >= size and bytes.fromhex(data[end - size:end].decode())
                in self._packed for size in (32, 40, 64))
            start = mask.find(_SHORT_RUN, end)
        found = (digest or (self._base32 and b"btih" in data.lower()), short)
        self._last_runs = (text, found)
        return found

    def _lookup(self, value: str, algo_hint: str | None, *,
                exact: bool = False) -> Iterable[KnownDigest]:
        entries = self.known.get(value, ())
        if len(entries) > 1:
            entries = sorted(entries, key=lambda e: ALGO_PREFERENCE.get(e.algo, 99))
        for entry in entries:
            if exact and entry.algo != algo_hint:
                continue
            # A CID's digest is that of an IPFS block, matched only where a CID was written.
            if (algo_hint == "cid") != entry.algo.startswith(CID_PREFIX):
                continue
            # A magnet's infohash only matches infohashes; a bare 40-hex token may be
            # either a SHA-1 or an infohash, and the registry says which it is.
            if algo_hint in TORRENT_ALGOS and entry.algo not in TORRENT_ALGOS:
                continue
            if algo_hint is None and entry.algo == "md5" and len(value) != 32:
                continue
            yield entry

    def _add(self, found: _Found, entry: KnownDigest,
             encoding: str, context: str, *, indicator: str | None = None) -> None:
        key = (entry.value, entry.model, entry.recipient)
        if key not in found:
            found[key] = digest_hit(entry, encoding, context, indicator=indicator)


# Hex characters as "x", everything else as ".": runs of hex found by bytes.find.
_HEX_MASK = bytes(ord("x") if chr(b) in "0123456789abcdefABCDEF" else ord(".") for b in range(256))
_RUN = b"x" * 32
_SHORT_RUN = b"x" * min(form.length for form in SHORT_FORMS.values())


def _packed(known: Iterable[str]) -> Iterator[bytes]:
    """The values a text token can match, as bytes (a token is lowercase hex)."""
    for value in known:
        try:
            key = bytes.fromhex(value)
        except ValueError:
            continue
        if key.hex() == value:
            yield key


def registered_cid(entry: KnownDigest, seen: FoundCid) -> str:
    """The CID as the registered layout writes it (`Qm...` for CIDv0, base32 for v1),
    whichever multibase it was seen in: the same file posted twice is one indicator."""
    layout = LAYOUT_BY_NAME.get(entry.algo)
    version = layout.cid_version if layout and seen.cid.codec == DAG_PB else 1
    return str(Cid(version, seen.cid.codec, seen.cid.digest))


def digest_hit(entry: KnownDigest, encoding: str, context: str, *,
               indicator: str | None = None) -> Hit:
    """The hit for a registered digest, wherever it was seen (a page's text, a hub's LFS
    field, the digest a server states for a weight link): one rule, so the same digest seen
    by the text detector and by a link scan is one hit (same kind, indicator, model and
    artifact). `indicator` replaces the hex value where the digest was written otherwise
    (a CID)."""
    return Hit(
        kind="torrent" if entry.algo in TORRENT_KIND_ALGOS else "hash", severity="critical",
        indicator=indicator or entry.value, indicator_type=f"{entry.algo} ({encoding})",
        detector=DigestDetector.name, model=entry.model, artifact=entry.artifact,
        recipient=entry.recipient, context=context,
        matcher_version=f"indicator:{entry.indicator_id}")


@cache
def _short_literals() -> LiteralSet:
    """The literals of every short-hash context, tagged with the context's number: built
    once, on the first document read, and looked for in one pass over a document that
    has a run of at least 8 hex characters."""
    return literal_set((literal, index) for index, context in enumerate(SHORT_CONTEXTS)
                       for literal in context.literals)


def crc32_swapped(value: str) -> str:
    """A CRC-32 in hex with its four bytes in the other order (anything else as it is)."""
    try:
        return bytes.fromhex(value)[::-1].hex() if len(value) == 8 else value
    except ValueError:
        return value


def short_hit(entry: KnownDigest, form: ShortForm, prefix: str, seen_as: str, context: str,
              registered: int) -> Hit:
    """The hit for a short hash seen in naming context: the bits it rests on and the chance
    of a coincidence among the `registered` values of its form are its evidence."""
    odds = chance(form, registered)
    severity: Severity = "high" if odds <= SHORT_HIGH_CHANCE else "medium"
    evidence = (f"{form.name} ({seen_as}; {form.length} hex = {form.bits} bits: chance of a "
                f"random match {registered}/2^{form.bits} = {odds:.1e})")
    return Hit(
        kind="hash", severity=severity, indicator=f"{form.name}:{prefix}",
        indicator_type=evidence, detector=DigestDetector.name, model=entry.model,
        artifact=entry.artifact, recipient=entry.recipient, context=context,
        score=1.0 - odds, matcher_version=f"{SHORT_MATCHER}/indicator:{entry.indicator_id}")


def structured_digests(doc: Document) -> list[dict[str, Any]]:
    """Digests a source read from structured fields (an attachment's MD5, a Torznab
    infohash attribute, a hub's LFS SHA-256), as `extras["digests"]`: a list of
    {"algo", "value" (lowercase hex), "encoding", "context"}. Malformed entries are skipped:
    extras come from hostile pages."""
    items = doc.extras.get("digests")
    if not isinstance(items, list):
        return []
    return [item for item in items
            if isinstance(item, dict) and isinstance(item.get("value"), str)
            and isinstance(item.get("algo"), str)]
