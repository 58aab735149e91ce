"""Are analysts' queries fast on a database of a million hits, and do they use indexes?

Generates a database through the real migrations (`Store`), then bulk-inserts --documents
documents (default a fifth of --hits) and --hits hits (default 1,000,000) in one
transaction each, so the full-text triggers index them as they would a crawl's. The data
is shaped like a long-running deployment's: a year of hits over 8 targets and 5 models,
mostly low-severity mentions, a tenth exact digests of a few hundred released files, a
few watermark hits naming one of 5 recipients, nine in ten still `new`; documents are
posts of about 80 words, some holding a model name, a digest, a magnet or a weight URL.

Then it times typical queries through the real code paths, `Store.hits` (what `weightwatch
hits` runs) and `monitor.search.search` (`weightwatch search`): filters, the first page
and a page 90% of the way down for every --sort, --text, and searches for a word, a
phrase, a SHA-256 and a prefix. For each it prints the best of --repeat wall times, the
rows, the time over a reference measured in the same run (one full scan of the hits
table, `SELECT count(*) FROM hits WHERE context LIKE '%zzz%'`), and the EXPLAIN QUERY
PLAN of every statement the query ran, flagged `FULL SCAN` where a table is read
without an index.

    python benchmarks/hits_queries.py
    python benchmarks/hits_queries.py --hits 200000 --db /var/tmp/hits.db

Pages are 50 rows (`--limit 50`), searches 20 (the command's default). Nothing is
asserted here: tests/test_search.py holds the pass/fail checks. Exit 1 if a plan scans
a table without an index.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.incidents import incident_of, incidents  # noqa: E402
from monitor.models import DEFAULT_GROUP_BY  # noqa: E402
from monitor.search import search  # noqa: E402
from monitor.store import HIT_SORTS, Store  # noqa: E402

SEED = 20240301
PAGE = 50
TARGETS = (("4chan-g", 30), ("reddit-localllama", 20), ("nyaa", 12), ("jackett", 8),
           ("hub", 10), ("phpbb-ml", 8), ("paste", 7), ("hn", 5))
MODELS = (("heron-7b", 40), ("heron-13b", 25), ("egret-3b", 15), ("ibis-70b", 12),
          ("stork-1b", 8))
# (kind, severity, weight): mentions dominate, exact digests are the next largest share.
KINDS = (("mention", "low", 62), ("mention", "medium", 8), ("hash", "critical", 12),
         ("torrent", "critical", 5), ("torrent", "high", 3), ("torrent", "medium", 4),
         ("weights", "high", 4), ("watermark", "critical", 2))
STATUSES = (("new", 90), ("acknowledged", 5), ("resolved", 3), ("false_positive", 2))
RECIPIENTS = (("lab-17", 40), ("acme-labs", 25), ("uni-berlin", 15), ("corp-x", 12),
              ("lab-03", 8))
WORDS = """the a to of and in is it that for on with this you are be was have not but at they
from or by an just so if all what about can like one there will do would more my up out when
has get them some no time people know only think your their been new also which use see than
then now model weights leak leaked torrent magnet download link file files mirror seed seeders
quantized quantised gguf safetensors fp16 bf16 q4 q8 llama release released research access
license anyone here someone posted copy upload uploaded hub repo checkpoint fine tuned tune
inference gpu vram ram run running works working try tried bird birds heron herons lake fish
grey wings nest photo camera spring river water egret ibis stork wetland migration feathers
benchmark eval score scores paper arxiv tokens context window training trained dataset data
thread post reply op bump mods deleted archive backup pastebin share shared sharing private
internal confidential nda lab labs university corp company team researchers""".split()


def weighted(rng: random.Random, pairs: tuple[tuple[Any, ...], ...], k: int) -> list[Any]:
    """k draws from (value..., weight) pairs, weight last."""
    values = [p[:-1] if len(p) > 2 else p[0] for p in pairs]
    return rng.choices(values, weights=[p[-1] for p in pairs], k=k)


class World:
    """The registered digests and infohashes the generated leaks point to."""

    def __init__(self, rng: random.Random):
        self.digests = [f"{rng.getrandbits(256):064x}" for _ in range(300)]
        self.infohashes = [f"{rng.getrandbits(160):040x}" for _ in range(60)]
        # Zipf-like: a few released files are leaked far more often than the rest.
        self.digest_weights = [1 / (i + 1) for i in range(len(self.digests))]
        self.word_weights = [1 / (i + 1) ** 0.9 for i in range(len(WORDS))]

    def digest(self, rng: random.Random) -> str:
        return rng.choices(self.digests, weights=self.digest_weights)[0]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def generate(store: Store, n_hits: int, n_documents: int, rng: random.Random,
             world: World) -> None:
    """Fill the store; documents and their hits in time order, as crawls add them."""
    now = datetime.now(UTC)
    start = now - timedelta(days=365)
    span = (now - start).total_seconds()
    targets = weighted(rng, TARGETS, n_documents)
    docs = []
    for i in range(n_documents):
        seen = iso(start + timedelta(seconds=span * i / n_documents))
        words = rng.choices(WORDS, weights=world.word_weights, k=rng.randint(40, 120))
        extra = rng.random()
        model = weighted(rng, MODELS, 1)[0]
        if extra < 0.25:
            words.insert(rng.randrange(len(words)), model)
        elif extra < 0.32:
            words.insert(rng.randrange(len(words)), world.digest(rng))
        elif extra < 0.37:
            words.insert(rng.randrange(len(words)),
                         f"magnet:?xt=urn:btih:{rng.choice(world.infohashes)}&dn={model}")
        elif extra < 0.42:
            words.insert(rng.randrange(len(words)),
                         f"https://files.example/{model}/model-{rng.randint(1, 4):05d}.gguf")
        title = " ".join(rng.choices(WORDS, weights=world.word_weights, k=rng.randint(3, 9)))
        url = f"https://{targets[i]}.example/t/{i // 20}#p{i}"
        docs.append((i + 1, targets[i], f"k{i}", url, title, f"anon{rng.randrange(5000)}",
                     seen, " ".join(words), "0" * 64, seen, seen, seen))
    insert(store, "documents", DOCUMENT_COLUMNS, docs)
    kinds = weighted(rng, KINDS, n_hits)
    models = weighted(rng, MODELS, n_hits)
    statuses = weighted(rng, STATUSES, n_hits)
    recipients = weighted(rng, RECIPIENTS, n_hits)
    contexts = [" ".join(rng.choices(WORDS, weights=world.word_weights, k=8))
                for _ in range(5000)]
    rows = []
    for i in range(n_hits):
        kind, severity = kinds[i]
        model = models[i]
        doc = docs[min(n_documents - 1, int(i * n_documents / n_hits))]
        first = start + timedelta(seconds=span * i / n_hits)
        again = rng.random() < 0.3  # seen again since, some of them many times
        last = min(now, first + timedelta(days=rng.uniform(0, 30))) if again else first
        seen_count = 1 + rng.randint(1, 20) if again else 1
        recipient = artifact = None
        score = 1.0
        if kind == "hash":
            indicator = world.digest(rng)
            artifact = f"{model}/model-{rng.randint(1, 4):05d}-of-00004.safetensors"
            recipient = recipients[i] if rng.random() < 0.1 else None
        elif kind == "torrent":
            indicator = f"magnet:?xt=urn:btih:{rng.choice(world.infohashes)}"
        elif kind == "weights":
            indicator = f"https://files.example/{model}/model-{rng.randint(1, 4):05d}.gguf"
            score = round(rng.uniform(0.6, 1.0), 3)
        elif kind == "watermark":
            indicator = f"https://files.example/{model}/copy-{rng.randrange(100)}.gguf"
            recipient = recipients[i]
            score = round(rng.uniform(0.8, 1.0), 3)
        else:
            indicator = rng.choice((model, model.replace("-", " "), model.upper()))
        context = f"{rng.choice(contexts)} {indicator} {rng.choice(contexts)}"
        rows.append((i + 1, str(i), kind, severity, model, artifact, recipient, indicator,
                     kind, f"{kind}-detector", score, context, doc[1], doc[3], doc[0],
                     iso(first), iso(last), seen_count, statuses[i]))
    insert(store, "hits", HIT_COLUMNS, rows)


DOCUMENT_COLUMNS = ("id", "target", "key", "url", "title", "author", "posted_at", "text",
                    "content_sha256", "fetched_at", "first_seen", "last_seen")
HIT_COLUMNS = ("id", "dedup_key", "kind", "severity", "model", "artifact", "recipient",
               "indicator", "indicator_type", "detector", "score", "context", "target", "url",
               "document_id", "first_seen", "last_seen", "seen_count", "status")


def insert(store: Store, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Bulk-insert rows in one transaction, through the table's triggers. They are staged
    in a temporary table and moved by one INSERT ... SELECT: row by row, every statement
    would close a statement transaction, at which FTS5 writes out what it has buffered,
    so each row would become an index segment of its own (as it does, harmlessly, for
    the few hits a crawl adds at a time) and a million rows would take minutes."""
    names = ", ".join(columns)
    conn = store.db.conn
    with conn:
        conn.execute(f"CREATE TEMP TABLE staged AS SELECT {names} FROM {table} WHERE 0")
        conn.executemany(f"INSERT INTO staged VALUES ({', '.join('?' * len(columns))})", rows)
        conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM staged")
        conn.execute("DROP TABLE staged")


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    """The fastest of `repeat` runs (noise on a shared machine only ever adds time)."""
    return min(timeit.repeat(fn, number=1, repeat=repeat))


def traced(store: Store, fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What `fn` returns, and the EXPLAIN QUERY PLAN of each SELECT it ran, one line per
    statement."""
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        result = fn()
    finally:
        store.db.conn.set_trace_callback(None)
    out = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            steps = [row[-1] for row in store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            out.append("; ".join(steps))
    return result, out


# A table read whole: "SCAN hits", not "SCAN hits USING INDEX ..." nor a virtual table.
# A scan of a table that grows with the crawl; small bookkeeping tables (alert_groups,
# one row per incident emailed) are read whole by design.
FULL_SCAN = re.compile(r"(?:^|; )SCAN (hits|documents|snapshots|outbox|triage)(?=;|$)")


def hits_indexes(store: Store) -> list[str]:
    """The indexes of the hits table (the UNIQUE dedup key's included)."""
    return [r[0] for r in store.db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'hits'")]


def bytes_per_hit(store: Store, n_hits: int) -> dict[str, float]:
    """Pages of the hits table, each of its indexes and its full-text tables (together),
    per hit (dbstat), largest first."""
    names = ["hits", *hits_indexes(store)]
    rows = store.db.execute(
        "SELECT CASE WHEN name LIKE 'hits_fts%' THEN 'hits_fts (full-text)' ELSE name END "
        "AS part, sum(pgsize) AS size FROM dbstat "
        f"WHERE name IN ({', '.join('?' * len(names))}) OR name LIKE 'hits_fts%' "
        "GROUP BY part ORDER BY size DESC", names)
    return {part: float(size) / max(n_hits, 1) for part, size in rows}


def deep_cursor(store: Store, sort: str, fraction: float) -> tuple[Any, ...]:
    """The cursor of the row `fraction` of the way down `sort` (found by OFFSET, untimed)."""
    order = HIT_SORTS[sort]
    direction = " DESC" if order.descending else ""
    count = store.db.execute("SELECT count(*) FROM hits").fetchone()[0]
    row = next(store.db.query(
        f"SELECT {store.HIT_COLUMNS} FROM hits ORDER BY "
        + ", ".join(c + direction for c in order.columns) + " LIMIT 1 OFFSET ?",
        [int(count * fraction)]))
    return Store.parse_cursor(Store.hit_cursor(row, sort), sort)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=1_000_000)
    parser.add_argument("--documents", type=int, default=None,
                        help="documents to generate (default: hits / 5)")
    parser.add_argument("--db", type=Path, default=None,
                        help="keep the database here (reused if it exists)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_documents = args.documents or max(1, args.hits // 5)
    rng = random.Random(SEED)
    world = World(rng)
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="hits-bench-")
        path = Path(tmp.name) / "hits.db"
    else:
        path = args.db
    if not path.exists():
        began = time.perf_counter()
        with Store(path) as store:
            generate(store, args.hits, n_documents, rng, world)
        print(f"generated {args.hits:,} hits and {n_documents:,} documents in "
              f"{time.perf_counter() - began:.1f} s ({path.stat().st_size / 2**20:,.0f} MB)")
    # A connection of its own, as a command has: nothing cached from generating.
    store = Store(path)
    n_hits = store.db.execute("SELECT count(*) FROM hits").fetchone()[0]
    print(f"{path}: {n_hits:,} hits, "
          f"{store.db.execute('SELECT count(*) FROM documents').fetchone()[0]:,} documents")

    reference = best_of(args.repeat, lambda: store.db.execute(
        "SELECT count(*) FROM hits WHERE context LIKE '%zzz%'").fetchone())
    week = iso(datetime.now(UTC) - timedelta(days=7))
    digest = world.digests[3]
    # The smallest model's newest hit: `hits show` sums its whole incident (8% of hits).
    stork = store.db.execute("SELECT max(id) FROM hits WHERE model = 'stork-1b'").fetchone()[0]
    known_key, *known_place = store.db.execute(
        "SELECT dedup_key, url, indicator FROM hits WHERE id = ?", [n_hits // 2]).fetchone()
    queries: list[tuple[str, Callable[[], list[Any]]]] = [
        ("hits --severity critical --since 7d",
         lambda: store.hits(severity=["critical"], since=week, limit=PAGE)),
        ("hits --model heron-13b --status new",
         lambda: store.hits(model="heron-13b", status=["new"], limit=PAGE)),
        ("hits --kind torrent --target nyaa",
         lambda: store.hits(kind=["torrent"], target="nyaa", limit=PAGE)),
        ("hits --recipient lab-17", lambda: store.hits(recipient="lab-17", limit=PAGE)),
        ("hits --recipient nobody (empty)", lambda: store.hits(recipient="nobody", limit=PAGE)),
    ]
    for sort in HIT_SORTS:
        after = deep_cursor(store, sort, 0.9)
        queries += [
            (f"hits --sort {sort}", lambda s=sort: store.hits(sort=s, limit=PAGE)),
            (f"hits --sort {sort} --after <90%>",
             lambda s=sort, a=after: store.hits(sort=s, after=a, limit=PAGE)),
        ]
    queries += [
        ("hits --model egret-3b --sort newest --after <90%>",
         lambda a=deep_cursor(store, "newest", 0.9): store.hits(  # noqa: B008 (bound once, on purpose)
             model="egret-3b", sort="newest", after=a, limit=PAGE)),
        ("hits --text heron-7b", lambda: store.hits(text="heron-7b", limit=PAGE)),
        ("hits --text zzzz (no match)", lambda: store.hits(text="zzzz", limit=PAGE)),
        (f"hits --text {digest[:12]}", lambda: store.hits(text=digest[:12], limit=PAGE)),
        ("hits --text wetland --severity critical",
         lambda: store.hits(text="wetland", severity=["critical"], limit=PAGE)),
        ("search quantized", lambda: search(store, "quantized").results),
        ("search heron-7b (in 40% of hits)", lambda: search(store, "heron-7b").results),
        ('search "leaked weights"', lambda: search(store, '"leaked weights"').results),
        ("search <sha256>", lambda: search(store, digest).results),
        ("search quant*", lambda: search(store, "quant*").results),
        ("search heron-7b --in hits --target nyaa",
         lambda: search(store, "heron-7b", scope="hits", target="nyaa").results),
        ("incidents --since 7d", lambda: incidents(store, DEFAULT_GROUP_BY, since=week)),
        ("incidents --model stork-1b --since 7d",
         lambda: incidents(store, DEFAULT_GROUP_BY, since=week, model="stork-1b")),
        ("hits show: a stork-1b hit's incident",
         lambda: incident_of(store, store.hit(stork), DEFAULT_GROUP_BY, shown=20)[1]),
        ("rematch: the hits of 50 documents",
         lambda: list(store.hit_ids_by_document(list(range(1, 51))).items())),
        # What the crawl asks of hits on every insert (monitor/store/hits.py `record`):
        # is this hit known (dedup key), and was it dismissed at this URL?
        ("record: a known dedup key",
         lambda: store.db.execute("SELECT id FROM hits WHERE dedup_key = ?",
                                  [known_key]).fetchall()),
        ("record: dismissed here before?",
         lambda: store.db.execute(
             "SELECT 1 FROM hits WHERE url = ? AND indicator = ? "
             "AND status = 'false_positive' LIMIT 1", list(known_place)).fetchall()),
    ]

    parts = bytes_per_hit(store, n_hits)
    print(f"bytes per hit: {sum(parts.values()):,.0f} (the hits table, its indexes and its "
          "full-text index): " + ", ".join(f"{part} {size:.1f}" for part, size in parts.items()))
    used = {m for _, fn in queries for p in traced(store, fn)[1]
            for m in re.findall(r"USING (?:COVERING )?INDEX (\w+)", p)}
    unused = sorted(set(hits_indexes(store)) - used)
    print(f"hits indexes no query here uses: {', '.join(unused) or 'none'}")
    print(f"\nreference: one full scan of hits (LIKE '%zzz%'): {reference * 1000:.0f} ms\n")
    print(f"{'query':<48} {'ms':>8} {'rows':>5} {'/scan':>6}  plan")
    scans = 0
    for name, fn in queries:
        seconds = best_of(args.repeat, fn)
        rows, steps = traced(store, fn)
        flagged = [m for p in steps for m in FULL_SCAN.findall(p)]
        scans += bool(flagged)
        print(f"{name:<48} {seconds * 1000:>8.2f} {len(rows):>5} {seconds / reference:>6.3f}  "
              + ("FULL SCAN " if flagged else "") + " | ".join(steps))
    store.close()
    if tmp is not None:
        tmp.cleanup()
    print(f"\n{len(queries)} queries; {scans} with a full scan")
    return 1 if scans else 0


if __name__ == "__main__":
    sys.exit(main())
