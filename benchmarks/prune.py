"""`prune` time: weightwatch's batched prune against the plain way, two DELETE statements
with SQLite's foreign keys checking, on copies of the same database.

The database is built once: `--documents` forum posts, five to a page (each page one
snapshot), half of them last seen 200 days ago, and a hit on one post of every 50th page.
Each run prunes a fresh copy with `--older-than 90d`:

- weightwatch: `monitor.store.maintenance.prune`, as `weightwatch prune` runs it (500 rows
  per transaction; snapshots checked against the documents once per batch, foreign keys
  off meanwhile);
- reference: the same two rules as two DELETE statements in one transaction, with
  `PRAGMA foreign_keys = ON` as the store opens it: each snapshot deleted makes SQLite scan
  every document for one that still shows it (no index leads from a snapshot to them).

Both must remove the same rows (checked). Prints the medians of `--repeats` runs and the
ratio weightwatch / reference (lower is better).

    python benchmarks/prune.py --documents 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.store import Store  # noqa: E402
from monitor.store.maintenance import (  # noqa: E402
    PRUNABLE_DOCUMENT,
    PRUNABLE_SNAPSHOT_AFTER,
    prune,
)

POSTS_PER_PAGE = 5


def build(path: Path, documents: int) -> None:
    old = (datetime.now(UTC) - timedelta(days=200)).isoformat(timespec="seconds")
    new = datetime.now(UTC).isoformat(timespec="seconds")
    with Store(path) as store:
        conn = store.db.conn
        conn.execute("BEGIN")
        for page in range(documents // POSTS_PER_PAGE):
            body = os.urandom(256)
            sha = hashlib.sha256(body).hexdigest()
            seen = old if page % 2 else new
            conn.execute("INSERT INTO snapshots (sha256, url, fetched_at, size, body) "
                         "VALUES (?, ?, ?, ?, ?)", [sha, f"https://f.example/{page}", old,
                                                    len(body), body])
            for post in range(POSTS_PER_PAGE):
                conn.execute(
                    "INSERT INTO documents (target, key, url, text, content_sha256, "
                    "snapshot_sha256, fetched_at, first_seen, last_seen) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ["forum", f"{page}#{post}", f"https://f.example/{page}#{post}",
                     f"post {post} of page {page}", sha, sha, old, old, seen])
            if page % 50 == 1:  # an old page: its snapshot and that post must stay
                conn.execute(
                    "INSERT INTO hits (dedup_key, kind, severity, indicator, detector, "
                    "target, url, document_id, first_seen, last_seen) "
                    "VALUES (?, 'mention', 'low', 'heron-7b', 'rules', 'forum', ?, "
                    "(SELECT MAX(id) FROM documents), ?, ?)",
                    [f"hit-{page}", f"https://f.example/{page}#4", old, old])
        conn.execute("COMMIT")


def counts(path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(path)
    try:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                     for table in ("documents", "snapshots", "hits"))  # type: ignore[return-value]
    finally:
        conn.close()


def ours(path: Path, before: str) -> None:
    with Store(path) as store:
        prune(store.db, before)


def reference(path: Path, before: str) -> None:
    with Store(path) as store:  # foreign keys on, as the store opens every database
        conn = store.db.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"DELETE FROM documents WHERE id IN (SELECT d.id FROM documents d "
                     f"WHERE {PRUNABLE_DOCUMENT})", {"before": before})
        conn.execute(f"DELETE FROM snapshots WHERE sha256 IN (SELECT s.sha256 FROM "
                     f"snapshots s WHERE {PRUNABLE_SNAPSHOT_AFTER})", {"before": before})
        conn.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    before = (datetime.now(UTC) - timedelta(days=90)).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.db"
        build(base, args.documents)
        print(f"database: {counts(base)} documents, snapshots, hits; "
              f"{base.stat().st_size / 1e6:.1f} MB")
        times: dict[str, list[float]] = {"weightwatch": [], "reference": []}
        results = {}
        for _ in range(args.repeats):
            for name, run in (("weightwatch", ours), ("reference", reference)):
                copy = Path(tmp) / f"{name}.db"
                shutil.copy(base, copy)
                start = time.perf_counter()
                run(copy, before)
                times[name].append(time.perf_counter() - start)
                results[name] = counts(copy)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{copy}{suffix}").unlink(missing_ok=True)
        assert results["weightwatch"] == results["reference"], results
        print(f"after prune: {results['weightwatch']} documents, snapshots, hits (both)")
        mine, theirs = (statistics.median(times[n]) for n in ("weightwatch", "reference"))
        print(f"prune --older-than 90d: weightwatch {mine:.2f} s, reference {theirs:.2f} s "
              f"(medians of {args.repeats}); ratio {mine / theirs:.3f}")


if __name__ == "__main__":
    main()
