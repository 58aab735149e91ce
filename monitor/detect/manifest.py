"""File lists against the registry: re-packed torrents of the released files, and the files
posted as they are (a GitHub release's assets, a Telegram attachment).

A torrent made again from the released files (another name, piece length or client) has an
infohash nobody registered, and a v1 torrent carries no digest of any one file. What a
re-packer does not change is each file's name and exact size, so a document's file list
(`extras["file_list"]`, `monitor.models.FileList`: each file's {"path", "length"}, and the
total size where the source states it exactly) is compared with the released files. The
list's label says what it is ("torrent file list", "GitHub release assets", "Telegram
attachment"...), and a hit's evidence says it ("name and size (GitHub release assets)");
a match in a torrent's list is a `torrent` hit, in a list of files posted as they are a
`weights` hit (`FILE_LIST_KINDS`). Documents stored before that key had the list in
`extras["torrent"]`, whichever their source: a rematch still reads it there, labelled by
the source that wrote it (`listed_files`). Released files are the registered artifacts, and
the names and sizes imported indicators state (`Store.imported_files`: a checksum list's
name joined with the LFS pointer's size of the same digest, a hub record, a size list, a
released .torrent's file list), which count exactly as registered files do:

- a file with a released file's basename and exact size: high ("name:size");
- a file with the exact size of a large released file (LARGE_FILE_BYTES or more), whatever
  its name: high ("size:N"), unless that file already matched by name and size;
- a file whose size is known only as a rounded figure (a Telegram attachment's "1.7 MB",
  stated as `size_min`..`size_max` instead of `length`) with a released file's basename
  and a size in that range: medium ("name:~1.7 MB"), since many sizes share the figure;
- a listing whose total is the total of one release of a model (its artifacts summed,
  recipients' copies left out; for a model known only from imports, its imported files
  summed; or the total of a released torrent imported by magnet or .torrent), or of one
  recipient's whole copy of a release (the release's files with that recipient's own in
  place of those of the same name), which names the recipient: medium ("total:N").

These are not proofs, unlike a digest: small files (configs, licences, READMEs) are shared
verbatim across model families, so files under MIN_FILE_BYTES never count, and a total
under it neither. A matched artifact that only one recipient received names that recipient
("size N bytes is unique to lab-17's copy of heron-7b v1"): `watermark issue` pads each
recipient's copy to a size of its own (`fingerprints.padding`), so a listing of names and
sizes alone, which no digest backs, says whose copy leaked. A size the release's own file
or another recipient's copy shares names none. Work is one dict lookup per listed file,
bounded by MAX_FILES, so a hostile listing of 100 000 files costs milliseconds, and hits are
bounded by the registry (one per matched artifact), not by the listing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from monitor.models import (
    FILE_LIST,
    FILE_LIST_KINDS,
    Document,
    FileListLabel,
    Hit,
    HitKind,
    ImportedFileRow,
)

LARGE_FILE_BYTES = 64 * 1024 * 1024  # from here on an exact size alone is evidence
MIN_FILE_BYTES = 64 * 1024  # below this a name and size say nothing (config.json, LICENSE)
MAX_FILES = 100_000  # listed files read per document; parse_torrent refuses more
MAX_PATH_IN_CONTEXT = 200


@dataclass(frozen=True)
class _Artifact:
    ref: str  # "artifact:ID" (registered) or "indicator:ID" / "file:ID" (imported)
    model: str
    name: str  # as registered or imported, e.g. "heron-7b/model.safetensors"
    size: int
    release: str | None
    recipient: str | None


@dataclass(frozen=True)
class _Release:
    model: str
    release: str | None
    total: int
    refs: frozenset[str]
    what: str  # how the context describes it, e.g. "heron-7b v1 (3 files)"
    recipient: str | None = None  # a recipient's copy of the release, with its own files


class ManifestDetector:
    name = "manifest"

    def __init__(self, artifacts: Iterable[Mapping[str, Any]],
                 imported: Iterable[ImportedFileRow] = ()):
        """`artifacts` are the store's rows (`Store.artifacts()`), `imported` the names and
        sizes imported indicators state (`Store.imported_files()`), read once per crawl."""
        self.by_name_size: dict[tuple[str, int], list[_Artifact]] = defaultdict(list)
        self.by_large_size: dict[int, list[_Artifact]] = defaultdict(list)
        self.by_name: dict[str, list[_Artifact]] = defaultdict(list)
        self.by_total: dict[int, list[_Release]] = defaultdict(list)
        releases: dict[tuple[str, str | None], list[_Artifact]] = defaultdict(list)
        copies: dict[tuple[str, str | None, str], list[_Artifact]] = defaultdict(list)
        known: set[tuple[str, str, int]] = set()  # (model, basename, size) of every file
        for row in artifacts:
            art = _artifact(row)
            if art is None:
                continue
            if art.recipient is None:
                releases[(art.model, art.release)].append(art)
            else:
                copies[(art.model, art.release, art.recipient)].append(art)
            known.add((art.model, _basename(art.name).casefold(), art.size))
            self._index(art)
        for (model, release), members in releases.items():
            version = f" {release}" if release else ""
            self._add_release(model, release, members, f"{model}{version}")
        for (model, release, recipient), own in copies.items():
            self._add_copy(releases.get((model, release), []), own, recipient)
        self._add_imported(imported, registered_models={m for m, _ in releases}, known=known)

    def _index(self, art: _Artifact) -> None:
        if art.size >= MIN_FILE_BYTES:
            self.by_name_size[(_basename(art.name).casefold(), art.size)].append(art)
            self.by_name[_basename(art.name).casefold()].append(art)
        if art.size >= LARGE_FILE_BYTES:
            self.by_large_size[art.size].append(art)

    def _add_release(self, model: str, release: str | None, members: list[_Artifact],
                     what: str, recipient: str | None = None) -> None:
        total = sum(a.size for a in members)
        if total >= MIN_FILE_BYTES:
            self.by_total[total].append(_Release(
                model, release, total, frozenset(a.ref for a in members),
                f"{what} ({len(members)} files)", recipient))

    def _add_copy(self, members: list[_Artifact], own: list[_Artifact], recipient: str) -> None:
        """A recipient's whole copy of a release: the release's files with the recipient's
        own (a marked, padded weight file) in place of those of the same name. Files of the
        copy no released file is named like count for their name and size only; a name the
        recipient holds at several sizes (issued again) makes the whole copy ambiguous."""
        released = {a.name for a in members}
        names = [a.name for a in own if a.name in released]
        if not names or len(set(names)) != len(names):
            return
        mine = {a.name: a for a in own if a.name in released}
        model, release = own[0].model, own[0].release
        version = f" {release}" if release else ""
        self._add_release(model, release, [mine.get(a.name, a) for a in members],
                          f"{recipient}'s copy of {model}{version}", recipient)

    def _add_imported(self, rows: Iterable[ImportedFileRow], *, registered_models: set[str],
                      known: set[tuple[str, str, int]]) -> None:
        """Imported names and sizes as files of their model (one per basename and size:
        the MD5 and the SHA-256 of one file, or a file already registered, count once), and
        imported torrents' totals. A model with registered files gets its release totals
        from them; one known only from imports, from the sum of its imported files."""
        imported: dict[str, list[_Artifact]] = defaultdict(list)
        counted: set[str] = set()
        for row in rows:
            model, name, size, algo = row["model"], row["name"], row["size"], row["algo"]
            if algo in ("btih", "btmh"):  # a torrent's name and total size
                if size >= MIN_FILE_BYTES:
                    self.by_total[size].append(_Release(
                        model, None, size, frozenset((row["ref"],)),
                        f"{model}'s released torrent {_short(name)}"))
                continue
            key = (model, _basename(name).casefold(), size)
            if key in known:
                if row["ref"] not in counted and model not in registered_models:
                    counted.add(row["ref"])  # another name of a file counted already
                continue
            known.add(key)
            art = _Artifact(ref=row["ref"], model=model, name=name, size=size, release=None,
                            recipient=None)
            self._index(art)
            if row["ref"] not in counted and model not in registered_models:
                counted.add(row["ref"])
                imported[model].append(art)
        for model, members in imported.items():
            self._add_release(model, None, members, f"{model} (as imported)")

    def detect(self, doc: Document) -> list[Hit]:
        listing = listed_files(doc)
        if listing is None or not (self.by_name_size or self.by_total):
            return []
        what, listed = listing
        kind = FILE_LIST_KINDS[what]
        name = listed.get("name")
        label = (name if isinstance(name, str) else doc.title)[:MAX_PATH_IN_CONTEXT]
        found: dict[tuple[str, str, str | None], Hit] = {}
        matched: set[str] = set()
        for path, length in _files(listed.get("files")):
            if length < MIN_FILE_BYTES:
                continue
            named = self.by_name_size.get((_basename(path).casefold(), length))
            if named:
                self._add(found, matched, named, f"{_basename(named[0].name)}:{length}",
                          f"name and size ({what})",
                          f"{label}: {_short(path)} ({length} bytes) has the name and size of",
                          length, kind)
            elif length >= LARGE_FILE_BYTES and (sized := self.by_large_size.get(length)):
                self._add(found, matched, sized, f"size:{length}",
                          f"exact size of a large file ({what})",
                          f"{label}: {_short(path)} ({length} bytes) has the exact size of",
                          length, kind)
        for path, low, high, shown in _rounded_files(listed.get("files")):
            # Recipients' copies differ from the release by bytes or a few KB, which a
            # rounded figure does not show: it never names a recipient.
            near = [replace(a, recipient=None)
                    for a in self.by_name.get(_basename(path).casefold(), ())
                    if low <= a.size <= high]
            if near:
                rounded: dict[tuple[str, str, str | None], Hit] = {}
                self._add(rounded, matched, near, f"{_basename(near[0].name)}:~{shown}",
                          f"name and rounded size ({what})",
                          f"{label}: {_short(path)} ({shown}, {low} to {high} bytes) has the "
                          f"name, and a size within the rounding, of", low, kind)
                for key, found_hit in rounded.items():
                    found_hit.severity = "medium"
                    found.setdefault(key, found_hit)
        total = _total(listed)
        by_model: dict[str, list[_Release]] = defaultdict(list)
        for rel in self.by_total.get(total, ()) if total is not None else ():
            if len(rel.refs) == 1 and rel.refs <= matched:
                continue  # a one-file release: the file's own hit says it all
            by_model[rel.model].append(rel)
        for model, rels in by_model.items():
            # A total one recipient's copy alone has names that recipient; one the release
            # (or another copy) shares names nobody and describes the release.
            recipients = {r.recipient for r in rels}
            recipient = recipients.pop() if len(recipients) == 1 else None
            rel = rels[0] if recipient else next((r for r in rels if r.recipient is None),
                                                 rels[0])
            whose = f":{recipient}" if recipient else ""
            found[(f"total:{total}", model, None)] = Hit(
                kind=kind, severity="medium", indicator=f"total:{total}",
                indicator_type=f"release total size ({what})", detector=self.name,
                model=model, recipient=recipient,
                context=f"{label}: {total} bytes in all, the total size of {rel.what}",
                matcher_version=f"release:{model}/{rel.release or ''}{whose}")
        return list(found.values())

    def _add(self, found: dict[tuple[str, str, str | None], Hit], matched: set[str],
             candidates: list[_Artifact], indicator: str, indicator_type: str,
             context: str, length: int, kind: HitKind) -> None:
        """One hit per (model, artifact name) among the candidates; the recipient named only
        when every candidate of that name is the same recipient's copy (a size the release's
        own file or another recipient's copy shares names nobody)."""
        groups: dict[tuple[str, str], list[_Artifact]] = defaultdict(list)
        for art in candidates:
            groups[(art.model, art.name)].append(art)
        for (model, name), arts in groups.items():
            matched.update(a.ref for a in arts)
            key = (indicator, model, name)
            if key in found:
                continue
            recipients = {a.recipient for a in arts}
            recipient = recipients.pop() if len(recipients) == 1 else None
            whose = ""
            if recipient:
                release = next((a.release for a in arts if a.release), None)
                whose = (f": size {length} bytes is unique to {recipient}'s copy of "
                         f"{model}{f' {release}' if release else ''}")
            imported = "" if arts[0].ref.startswith("artifact:") else " (imported indicators)"
            found[key] = Hit(
                kind=kind, severity="high", indicator=indicator,
                indicator_type=indicator_type, detector=self.name, model=model,
                artifact=name, recipient=recipient,
                context=f"{context} {name}{whose}{imported}",
                matcher_version=_refs(a.ref for a in arts))


# Sources whose documents carried their file list in `extras["torrent"]` before
# `extras["file_list"]` existed, known by the extras key each also wrote.
_LEGACY_LABELS: tuple[tuple[str, FileListLabel], ...] = (
    ("github", "GitHub release assets"), ("telegram", "Telegram attachment"),
    ("dht", "DHT metadata"))


def listed_files(doc: Document) -> tuple[FileListLabel, Mapping[str, Any]] | None:
    """The document's file list and what it is (`extras["file_list"]`); for a document
    stored before that key, the `extras["torrent"]` every source wrote its list to then,
    labelled by the source that wrote it. None when it lists no files."""
    listed = doc.extras.get(FILE_LIST)
    if listed is not None:
        if isinstance(listed, dict):
            what = listed.get("label")
            for label in FILE_LIST_KINDS:
                if what == label:
                    return label, listed
        return None
    legacy = doc.extras.get("torrent")
    if not isinstance(legacy, dict):
        return None
    for key, label in _LEGACY_LABELS:
        if key in doc.extras:
            return label, legacy
    return ("torrent file list" if isinstance(legacy.get("files"), list)
            else "torrent listing"), legacy


def _refs(refs: Iterable[str]) -> str:
    """"artifact:1,2" as before imports counted; "indicator:7" or "file:3" for these."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        kind, _, ident = ref.partition(":")
        by_kind[kind].append(ident)
    return ";".join(f"{kind}:{','.join(ids)}" for kind, ids in by_kind.items())


def _artifact(row: Any) -> _Artifact | None:
    if not isinstance(row, Mapping):
        return None
    size, name, model = row.get("size"), row.get("name"), row.get("model")
    if type(size) is not int or size < 0 or not isinstance(name, str) or not isinstance(model, str):
        return None
    art_id = row.get("id")
    return _Artifact(ref=f"artifact:{art_id if type(art_id) is int else 0}", model=model,
                     name=name, size=size, release=_str_or_none(row.get("release")),
                     recipient=_str_or_none(row.get("recipient")))


def _files(files: Any) -> Iterable[tuple[str, int]]:
    """(path, length) of well-formed entries; extras come from hostile pages."""
    if not isinstance(files, list):
        return
    for entry in files[:MAX_FILES]:
        if isinstance(entry, dict):
            path, length = entry.get("path"), entry.get("length")
            if isinstance(path, str) and type(length) is int:
                yield path, length


def _rounded_files(files: Any) -> Iterable[tuple[str, int, int, str]]:
    """(path, size_min, size_max, size as shown) of entries whose size is a range."""
    if not isinstance(files, list):
        return
    for entry in files[:MAX_FILES]:
        if isinstance(entry, dict) and "length" not in entry:
            path, low, high = entry.get("path"), entry.get("size_min"), entry.get("size_max")
            shown = entry.get("size_text")
            if isinstance(path, str) and type(low) is int and type(high) is int \
                    and isinstance(shown, str) and MIN_FILE_BYTES <= low <= high:
                yield path, low, high, shown


def _total(listed: Mapping[str, Any]) -> int | None:
    """The listing's total size in bytes: `total_size` (from the .torrent, a Torznab item),
    else, in a document stored before `extras["file_list"]`, a Torznab item's `size` (an
    index's "1.7 MiB" is rounded, and not used)."""
    for key in ("total_size", "size"):
        value = listed.get(key)
        if type(value) is int and value >= 0:
            return value
    return None


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _short(path: str) -> str:
    return path if len(path) <= MAX_PATH_IN_CONTEXT else "..." + path[-MAX_PATH_IN_CONTEXT:]


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
