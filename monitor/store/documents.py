"""Documents and their evidence snapshots: what was crawled, when it was seen, and the
raw response it was read from."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from monitor.models import Document, DocumentRow, Hit, StoredDocument, utcnow
from monitor.store.connection import Database, insert_row, marks, write_transaction
from monitor.store.hits import Hits

T = TypeVar("T")


@dataclass
class Detected:
    """A document to store with the hits detected in it, and its content hash when the
    caller has computed it already (None: computed on save)."""

    doc: Document
    hits: Sequence[Hit]
    content_sha256: str | None = None


@dataclass
class SavedDocument:
    id: int
    is_new: bool
    changed: bool


# Keys (or ids) per `IN (...)` list: well under SQLite's smallest parameter limit (999).
_KEYS_PER_QUERY = 512


def _in_lists(values: Sequence[T]) -> Iterator[tuple[str, list[T]]]:
    """`values` as `IN (...)` lists, (marks, parameters), at most _KEYS_PER_QUERY each.
    A list is padded to a power of two by repeating its last value (which IN ignores), so
    a page of any size runs one of ten statements: one per page size would crowd the
    connection's cache of prepared statements (128), and preparing costs more than
    running one of these."""
    for start in range(0, len(values), _KEYS_PER_QUERY):
        chunk = list(values[start:start + _KEYS_PER_QUERY])
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += chunk[-1:] * (size - len(chunk))
        yield marks(size), chunk

# `json.dumps` builds a new encoder on each call given any option; these are built once.
_json = json.JSONEncoder().encode
_sorted_json = json.JSONEncoder(sort_keys=True).encode


def _compress(body: bytes) -> bytes:
    """A snapshot as stored: the zlib format (read back by `zlib.decompress`), written by
    zlib-ng at level 2, which takes a third of the time the standard library's level 6
    does on a forum page (60 against 150 us) for 9% more bytes, and compressing is the
    largest share of storing a page after SQLite's own."""
    from zlib_ng import zlib_ng  # a C extension loaded once, only by a writer

    return zlib_ng.compress(body, 2)


DOCUMENT_COLUMNS = ("id, target, key, url, title, author, posted_at, fetched_at, text, "
                    "links, extras")


class Documents:
    def __init__(self, db: Database, hits: Hits):
        self.db = db
        self.hits = hits
        # Every post of a page carries the same response bytes as its snapshot: the last
        # one hashed (held, so its identity cannot be reused by another object) and its
        # digest, so a page of 50 posts is hashed once, not 50 times.
        self._hashed: tuple[bytes, str] = (b"", hashlib.sha256(b"").hexdigest())

    def document_hash(self, target: str, key: str) -> str | None:
        return self.document_hashes(target, [key]).get(key)

    def document_hashes(self, target: str, keys: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of `target`'s `keys` that is stored: a page's
        posts asked in one query, not one each."""
        return {key: sha for key, (_, sha) in self._stored(target, keys).items()}

    def _stored(self, target: str, keys: Iterable[str]) -> dict[str, tuple[int, str]]:
        """key -> (row id, content hash) of the stored documents among `keys`."""
        found: dict[str, tuple[int, str]] = {}
        for listed, chunk in _in_lists(list(dict.fromkeys(keys))):
            for doc_id, key, sha in self.db.execute(
                    "SELECT id, key, content_sha256 FROM documents "
                    f"WHERE target = ? AND key IN ({listed})", [target, *chunk]):
                found[key] = (doc_id, sha)
        return found

    def touch_document(self, target: str, key: str, *, now: str | None = None) -> None:
        """An unchanged document seen again: it and its hits were still there now."""
        self.touch_documents(target, [key], now=now)

    def touch_documents(self, target: str, keys: Sequence[str], *,
                        now: str | None = None) -> None:
        """Unchanged documents seen again, in one transaction: they and their hits were
        still there now. Keys not stored are left alone."""
        if not keys:
            return
        now = now or utcnow()
        with write_transaction(self.db):
            ids = [doc_id for doc_id, _ in self._stored(target, keys).values()]
            for listed, chunk in _in_lists(ids):
                self.db.execute(f"UPDATE documents SET last_seen = ? WHERE id IN ({listed})",
                                [now, *chunk])
                self.db.execute("UPDATE hits SET last_seen = ?, seen_count = seen_count + 1 "
                                f"WHERE document_id IN ({listed})", [now, *chunk])

    def save_document(self, doc: Document, hits: Iterable[Hit], run_id: int | None, *,
                      channels: Sequence[str], now: str | None = None,
                      content_sha256: str | None = None) -> tuple[SavedDocument, list[int]]:
        """Store a document, its snapshot, its hits and their outbox rows (one per channel
        in `channels`) atomically. `content_sha256` is `doc.content_sha256` when the caller
        has it already (the crawler compared it with the stored one): hashing a document
        serialises its extras, and is done once.

        Returns the document and the ids of hits that are new (first seen now); hits seen
        before only get `last_seen` and `seen_count` moved, and are not alerted again.
        """
        (saved,) = self.save_documents([Detected(doc, list(hits), content_sha256)], run_id,
                                       channels=channels, now=now)
        return saved

    def save_documents(self, found: Sequence[Detected], run_id: int | None, *,
                       channels: Sequence[str], now: str | None = None
                       ) -> list[tuple[SavedDocument, list[int]]]:
        """`save_document` for several documents (a crawled page's posts) in ONE
        transaction: all of them with their snapshots, hits and outbox rows, or none.
        One transaction instead of one each is most of what storing a page saves, and
        the stored rows of all the documents are looked up in one query."""
        now = now or utcnow()
        out: list[tuple[SavedDocument, list[int]]] = []
        # BEGIN IMMEDIATE: this reads before it writes, and a deferred transaction would
        # fail outright where another process (`triage`, `prune`) wrote in between.
        with write_transaction(self.db):
            # Read here, inside the transaction, and not taken from the crawler's lookup
            # before detection: `prune` (another process) may have deleted a row since.
            stored: dict[str, dict[str, tuple[int, str]]] = {}
            for target in dict.fromkeys(item.doc.target for item in found):
                stored[target] = self._stored(target, (item.doc.key for item in found
                                                       if item.doc.target == target))
            # Snapshots checked or stored in THIS transaction: their presence is only
            # remembered here, as a rolled back transaction takes the rows with it.
            snapshots: set[str] = set()
            for item in found:
                doc = item.doc
                snapshot_sha = self._save_snapshot(doc, now, snapshots) if doc.snapshot else None
                saved = self._upsert_document(doc, snapshot_sha, run_id, now,
                                              item.content_sha256 or doc.content_sha256,
                                              stored[doc.target])
                new_hits = [hit_id for hit in item.hits
                            if (hit_id := self.hits.record(hit, doc, saved.id, run_id, now,
                                                           channels))]
                out.append((saved, new_hits))
        return out

    def _save_snapshot(self, doc: Document, now: str, present: set[str]) -> str:
        """The snapshot's digest, storing it compressed unless it is stored already.

        The presence is asked of the database once per transaction (`present` holds what
        this transaction has checked or stored), never remembered across transactions: one
        rolled back after the insert takes the row with it."""
        body = doc.snapshot
        held, sha = self._hashed
        if body is not held:
            sha = hashlib.sha256(body).hexdigest()
            self._hashed = (body, sha)
        if sha in present:
            return sha
        if self.db.execute("SELECT 1 FROM snapshots WHERE sha256 = ?", [sha]).fetchone() is None:
            self.db.execute(
                "INSERT INTO snapshots (sha256, url, fetched_at, size, body) "
                "VALUES (?, ?, ?, ?, ?)",
                [sha, doc.snapshot_url or doc.url, doc.fetched_at or now, len(body),
                 _compress(body)])
        present.add(sha)
        return sha

    def _upsert_document(self, doc: Document, snapshot_sha: str | None, run_id: int | None,
                         now: str, content_sha: str,
                         stored: dict[str, tuple[int, str]]) -> SavedDocument:
        """Insert or update `doc`; `stored` is its target's rows looked up in this
        transaction (key -> id, hash), kept current so a key saved twice in one batch is
        updated the second time, not inserted again."""
        row = stored.get(doc.key)
        values = {
            "url": doc.url, "title": doc.title, "author": doc.author, "posted_at": doc.posted_at,
            "text": doc.text, "links": _json(doc.links), "extras": _sorted_json(doc.extras),
            "content_sha256": content_sha, "snapshot_sha256": snapshot_sha,
            "fetched_at": doc.fetched_at or now, "last_seen": now, "run_id": run_id,
        }
        # Plain SQL: sqlite_utils' insert and update cost more than the rest of the save
        # (they read the table's schema on each call), and this runs once per post.
        if row is None:
            values = {"target": doc.target, "key": doc.key, "first_seen": now, **values}
            doc_id = insert_row(self.db, "documents", values)
            stored[doc.key] = (doc_id, content_sha)
            return SavedDocument(doc_id, is_new=True, changed=True)
        self.db.execute(f"UPDATE documents SET {', '.join(f'{name} = ?' for name in values)} "
                        f"WHERE id = ?", [*values.values(), row[0]])
        stored[doc.key] = (row[0], content_sha)
        return SavedDocument(row[0], is_new=False, changed=row[1] != content_sha)

    def snapshot(self, sha256: str) -> bytes | None:
        row = self.db.execute("SELECT body FROM snapshots WHERE sha256 = ?", [sha256]).fetchone()
        return zlib.decompress(row[0]) if row else None

    def document(self, document_id: int) -> DocumentRow | None:
        rows = list(self.db.query(
            "SELECT id, target, key, url, title, author, posted_at, fetched_at, first_seen, "
            "last_seen, content_sha256, snapshot_sha256, extras FROM documents WHERE id = ?",
            [document_id]))
        return cast(DocumentRow, rows[0]) if rows else None

    def count_documents(self, *, targets: Sequence[str] = (), since: str | None = None) -> int:
        """How many stored documents `iter_documents` with the same filter would yield."""
        where, params = _document_filter(targets, since)
        sql = "SELECT COUNT(*) FROM documents" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self.db.execute(sql, params).fetchone()[0])

    def iter_documents(self, *, targets: Sequence[str] = (), since: str | None = None,
                       batch_size: int = 500) -> Iterator[StoredDocument]:
        """Stored documents (with text, links and extras, as JSON text) in id order, read
        `batch_size` at a time, so any number can be walked in little memory; documents last
        seen before `since` (ISO time) or of other `targets` are left out.

        Each batch is its own query (keyset pagination), so no read stays open while the
        caller writes between batches."""
        where, params = _document_filter(targets, since)
        last = 0
        while True:
            sql = (f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE "
                   + " AND ".join([*where, "id > ?"]) + f" ORDER BY id LIMIT {int(batch_size)}")
            rows = cast(list[StoredDocument], list(self.db.query(sql, [*params, last])))
            yield from rows
            if len(rows) < batch_size:
                return
            last = rows[-1]["id"]


def _document_filter(targets: Sequence[str], since: str | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if targets:
        where.append(f"target IN ({marks(len(targets))})")
        params.extend(targets)
    if since:
        where.append("last_seen >= ?")
        params.append(since)
    return where, params
