"""`weightwatch serve`: the hits database in Datasette, read-only, for analysts.

Datasette (the optional `ui` extra) runs in this process on a socket we bind ourselves, so
a port in use is one line of error, `--port 0` can pick a free port, and SIGTERM/SIGINT
stop it cleanly. What it may do is narrowed on every path, not only in the UI:

- Read-only: the daemon keeps writing the same file in WAL mode, so it is opened as a
  *mutable* database (`immutable=1` would ignore the WAL and cache counts of a file that
  changes), through `mode=ro` connections (`immutable=1` only on read-only media, where
  nothing can change it and `mode=ro` cannot open it), and the write connection Datasette would open
  for writable canned queries or plugins is refused outright (`ReadOnlyDatabase`). There
  are no writable canned queries, and third-party Datasette plugins are not loaded.
- Arbitrary SQL is off for everyone (`allow_sql: false`), which also turns off the table
  pages' `_where=`; the canned queries below are the only SQL that runs.
- Secrets are refused: the tables in SECRET_TABLES are denied to everyone and hidden.
- Crawled text is hostile: Datasette escapes every cell, and no third-party plugin may
  render one. CSV is made from the page's JSON with every cell neutralised as the CLI's CSV
  is (a spreadsheet would run a cell such as `=cmd|...` as a formula), never by Datasette's
  own CSV writer.
- Only GET and HEAD reach Datasette (`Refusals`).

What an analyst reads first is laid out by templates shipped with the package
(monitor/ui_templates): a hit is a card (its severity, whose copy, its context, a link to
its document and evidence) rather than a row wider than the screen, without the internal
columns (INTERNAL_COLUMNS); each table's column descriptions are folded under its
description instead of pushing the rows below the fold.
"""

from __future__ import annotations

import csv
import html
import io
import json
import signal
import socket
import sqlite3 as stdlib_sqlite3
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn

# Datasette publishes no type information (no stubs, no py.typed): its names are Any here.
from datasette import hookimpl  # type: ignore[import-untyped]
from datasette.app import Datasette  # type: ignore[import-untyped]
from datasette.database import Database  # type: ignore[import-untyped]
from datasette.plugins import DEFAULT_PLUGINS, pm  # type: ignore[import-untyped]
from datasette.utils.sqlite import sqlite3  # type: ignore[import-untyped]

from monitor.listening import is_loopback
from monitor.output import csv_safe
from monitor.store import connect_readonly

__all__ = ["DATABASE", "FTS_TABLES", "INTERNAL_COLUMNS", "QUERIES", "SECRET_TABLES", "TABLES",
           "TEMPLATES", "ReadOnlyDatabase",
           "Refusals", "build_metadata", "is_loopback", "listen", "make_datasette", "serve",
           "url"]

# The database's name in URLs (/weightwatch/hits), whatever the file is called, so links
# on the start page and in notes stay valid.
DATABASE = "weightwatch"

# Tables whose contents would help a leaker more than an analyst: each recipient's derived
# watermark key (whoever holds it can find and strip that recipient's mark), and the tensor
# fingerprints' key, sampled row positions and original rows (which rows to disturb so a
# converted copy is no longer recognised). Nothing else in the database is secret: SMTP
# passwords, API keys and the watermark master secret are never stored (they come from the
# environment), and Torznab answers, which echo the API key, are scrubbed before saving.
SECRET_TABLES = ("watermarks", "weight_prints", "tensor_prints")

# The hits' columns that serve the program, not the analyst: the dedup key, the severity as
# a sort number, the crawl run. A hit's card (TEMPLATES/_hit_card.html) never shows them;
# its document is a link, not a number.
INTERNAL_COLUMNS = ("dedup_key", "severity_level", "run_id", "document_id")

# Datasette templates shipped with the package: the hit cards (`_table-table-...` on the
# hits page, `_table-row-...` on a hit's page; Datasette looks them up by these names).
TEMPLATES = Path(__file__).parent / "ui_templates"

# CSV made from a table's JSON pages (`_stream`): at most this many rows in one download.
CSV_STREAM_ROWS = 1_000_000

# Every table and column of the schema (monitor/migrations.py), described for the UI.
# tests/test_serve.py fails when a migration adds one without a description here.
TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "hits": ("What the detectors found: one row per indicator seen in one place (seen "
             "again, it moves last_seen and seen_count instead of adding a row).", {
        "id": "Hit number, as `weightwatch hits show ID` and the alert emails name it.",
        "dedup_key": "Stable key of kind, indicator, model, artifact, rule, target and "
                     "document: the same leak seen again is this row.",
        "kind": "mention, hash, torrent, weights (the weights recognised after conversion, "
                "or a released file posted as it is) or watermark (a recipient's copy).",
        "severity": "critical, high, medium or low (see the start page).",
        "model": "The registered model the hit points to.",
        "artifact": "The released file it points to, when a digest or file list named one.",
        "recipient": "The recipient whose copy leaked: by a registered copy's digest or by "
                     "the watermark found in it.",
        "indicator": "What matched: a digest, an infohash, a file name, a rule's match, a "
                     "weight file's URL. Crawled text.",
        "indicator_type": "How the indicator was read, e.g. `sha256 (hex)`, `lfs pointer`, "
                          "`tensor_fingerprint`.",
        "rule": "The [[rules]] entry that matched, for mentions.",
        "detector": "The detector that made the hit: digests, manifest, rules, weights or "
                    "watermark.",
        "matcher_version": "Which version of the rule or registry entry matched "
                           "(`rule:NAME:HASH`, `indicator:ID`, `watermark-vN`): evidence.",
        "score": "1.0 for exact matches; for weights hits the share of sampled rows that "
                 "matched; for watermark hits the z-score of the recipient's mark.",
        "context": "The text around the match in the crawled document. Crawled text: "
                   "shown escaped, never as HTML.",
        "target": "The crawl target (config.toml [[targets]] name) it was found on.",
        "url": "The document's URL, where the leak was seen. Crawled: open with care.",
        "document_id": "The stored document (with its evidence snapshot) it was found in.",
        "run_id": "The crawl run that first found it.",
        "first_seen": "When it was first found (UTC).",
        "last_seen": "When it was last seen still there (UTC).",
        "seen_count": "How many crawls have seen it.",
        "status": "Triage: new, acknowledged, resolved or false_positive; set with "
                  "`weightwatch hits ack|resolve|false-positive`.",
        "severity_level": "The severity as a number, critical 4 to low 1, so worst first "
                          "is one descending sort.",
        "first_seen_unix": "first_seen in Unix seconds: what the indexes order hits by.",
        "last_seen_unix": "last_seen in Unix seconds: what the indexes order hits by.",
    }),
    "triage": ("Triage history: every status change of a hit, who made it, when and why.", {
        "id": "Entry number, in the order they were made.",
        "hit_id": "The hit whose status changed.",
        "status": "The status it was given.",
        "note": "Why, as given with --note.",
        "by": "Who ($USER of the command).",
        "at": "When (UTC).",
    }),
    "documents": ("Crawled documents (a post, a torrent listing row, a hub record): what the "
                  "detectors read. Everything here is crawled text.", {
        "id": "Document number.",
        "target": "The crawl target it came from.",
        "key": "Its identity within the target across crawls (post number, torrent URL).",
        "url": "Where it was read.",
        "title": "Its title, as the source gave it.",
        "author": "Its author, as the source gave it.",
        "posted_at": "When the source says it was posted.",
        "text": "The text the detectors matched against.",
        "links": "JSON list of the links it carried.",
        "extras": "JSON of structured fields the source read (attachment digests, torrent "
                  "file lists, LFS oids, seeders).",
        "content_sha256": "SHA-256 of what the detectors saw: unchanged content is not "
                          "matched again.",
        "snapshot_sha256": "The evidence snapshot (snapshots.sha256) it was extracted from.",
        "fetched_at": "When it was fetched (UTC).",
        "first_seen": "When it was first stored (UTC).",
        "last_seen": "When it was last seen (UTC).",
        "run_id": "The crawl run that last stored it.",
    }),
    "snapshots": ("Evidence: the raw responses documents were extracted from, compressed, "
                  "stored once per content.", {
        "sha256": "SHA-256 of the uncompressed response.",
        "url": "Where it was fetched.",
        "fetched_at": "When (UTC).",
        "size": "Uncompressed size in bytes.",
        "compression": "How body is compressed (zlib).",
        "body": "The response, compressed: a download, never rendered (decompress with "
                "zlib to read it).",
    }),
    "target_state": ("Each crawl target's health and where its crawl left off.", {
        "name": "The target's name in config.toml.",
        "last_run_at": "When its last run started (UTC).",
        "last_success_at": "When a run of it last succeeded (UTC).",
        "consecutive_failures": "Failed runs in a row; 0 when healthy.",
        "documents_count": "Documents stored from it.",
        "hits_count": "Hits found on it.",
        "last_error": "The last failed run's error.",
        "cursor": "JSON of what the source remembers between runs (pages read, ETags, "
                  "the newest item seen).",
        "backoff_until": "No run before this time (UTC): the escalating back-off after "
                         "failures.",
        "down_since": "Set once `alerts.target_down_after` runs in a row failed; cleared "
                      "when it recovers.",
    }),
    "crawl_runs": ("One row per run of one target.", {
        "id": "Run number.",
        "target": "The target crawled.",
        "started_at": "When it started (UTC).",
        "finished_at": "When it ended (UTC).",
        "status": "running, ok, failed or interrupted (shutdown).",
        "documents_seen": "Documents the source yielded.",
        "documents_new": "Documents never seen before.",
        "documents_changed": "Known documents whose content changed.",
        "hits_new": "New hits recorded.",
        "error": "Why it failed.",
    }),
    "daemon": ("The daemon's heartbeat: the last `weightwatch run`, renewed every interval "
               "(`weightwatch health` reads it).", {
        "id": "Always 1: there is one row.",
        "pid": "The daemon's process id.",
        "host": "The machine it runs on.",
        "started_at": "When it started (UTC).",
        "beat_at": "Its last heartbeat (UTC).",
        "interval_s": "Seconds between heartbeats.",
        "stopped_at": "When it shut down cleanly (UTC); empty while it runs.",
        "metrics_url": "Where it serves Prometheus metrics (`run --metrics-addr`), if it does.",
    }),
    "outbox": ("Alerts to deliver: one row per hit and channel, written with the hit.", {
        "id": "Alert number.",
        "hit_id": "The hit it announces.",
        "channel": "email, webhook, or a chat channel's name ([[alerts.channels]]).",
        "created_at": "When it was queued (UTC).",
        "status": "pending, sending, sent or failed.",
        "attempts": "Delivery attempts so far.",
        "next_attempt_at": "Not sent before this time (UTC): retry back-off, grouping or "
                           "a silence.",
        "last_attempt_at": "When delivery was last tried (UTC).",
        "last_error": "Why the last attempt failed.",
        "sent_at": "When it was delivered (UTC).",
        "message_id": "The Message-ID of the email that carried it (a retry reuses it).",
        "silenced_by": "The silence holding it back, or that did.",
    }),
    "notices": ("Target down and target recovered emails, queued like alerts.", {
        "id": "Notice number.",
        "kind": "target_down or target_recovered.",
        "target": "The target it is about.",
        "created_at": "When it was queued (UTC).",
        "failures": "Failed runs in a row when it was queued.",
        "error": "The target's last error.",
        "status": "pending, sending, sent or failed.",
        "attempts": "Delivery attempts so far.",
        "next_attempt_at": "Not sent before this time (UTC).",
        "last_attempt_at": "When delivery was last tried (UTC).",
        "last_error": "Why the last attempt failed.",
        "sent_at": "When it was delivered (UTC).",
        "message_id": "The Message-ID of its email.",
    }),
    "silences": ("Silences: matchers whose hits are recorded but whose alerts wait until "
                 "the silence ends.", {
        "id": "Silence number, as `weightwatch silence expire ID` takes it.",
        "matchers": "JSON list of matchers (`severity=low`, `url=~regex`), all of which "
                    "must hold.",
        "reason": "Why, as given with --reason.",
        "created_by": "Who added it.",
        "created_at": "When it was added (UTC).",
        "starts_at": "When it takes effect (UTC).",
        "ends_at": "When it ends (UTC).",
        "expired_at": "When it was ended early with `silence expire` (UTC).",
    }),
    "alert_groups": ("When each alert group (incident) was last emailed, for "
                     "group_interval and reminders.", {
        "key": "The group: its `alerts.group_by` labels (`model:heron-7b|release:v1`), or "
               "`digest`; prefixed by `webhook:` for the webhook channel and by a chat "
               "channel's name and `:` for that channel.",
        "last_sent_at": "When it was last sent (UTC).",
    }),
    "models": ("Registered models.", {
        "name": "The model's name, as hits, --model and silences use it.",
        "created_at": "When it was first registered (UTC).",
    }),
    "artifacts": ("Released files: their names, sizes and digests (never their contents), "
                  "and recipients' copies.", {
        "id": "Artifact number.",
        "model": "The model it belongs to.",
        "name": "The file's name within the release.",
        "path": "Where it was read when registered (empty when it came from a bundle).",
        "size": "Size in bytes.",
        "sha256": "SHA-256 of the file.",
        "sha1": "SHA-1 of the file.",
        "md5": "MD5 of the file.",
        "release": "The release label (--release).",
        "recipient": "The recipient this copy was handed to; empty for the original.",
        "registered_at": "When it was registered (UTC).",
        "pieces_root": "BitTorrent v2 (BEP 52) pieces root of the file.",
        "shards": "JSON list of the SHA-256 of each 1 GB shard (`register --shards`).",
    }),
    "indicators": ("Every known digest of the registry, whatever produced it, with where "
                   "it came from.", {
        "id": "Indicator number; `indicator:ID` in hits' matcher_version.",
        "algo": "md5, sha1, sha256, btih, btmh, pieces_root or shard.",
        "value": "The digest, lowercase hex (btih/btmh: the infohash).",
        "model": "The model it identifies.",
        "artifact_id": "The registered file it is a digest of, if any.",
        "recipient": "The recipient whose copy it identifies, if any.",
        "name": "The file name the source gave.",
        "size": "The file size the source gave.",
        "source": "Where it came from (`register:PATH`, `import:SHA256SUMS:2`, a bundle).",
        "added_at": "When it was added (UTC).",
    }),
    "indicator_files": ("Names and sizes imported indicators give a known digest beyond its "
                        "row's (a size from LFS pointers, a second name), or a released file "
                        "without a digest (a size list, a v1 torrent's file list); torrent "
                        "file lists are matched against them.", {
        "id": "Row number; `file:ID` in hits' matcher_version when no digest is named.",
        "model": "The model it belongs to.",
        "indicator_id": "The indicator (digest) it names or sizes; empty for a file given "
                        "without a digest.",
        "name": "The file name the source gave.",
        "size": "The file size in bytes the source gave.",
        "source": "Where it came from (`import:sizes.txt:3`, `import:heron-7b.torrent:files[1]`).",
        "added_at": "When it was added (UTC).",
    }),
    "weight_scans": ("Remote weight files already scanned, so a file linked again is not "
                     "read again until the registry changes.", {
        "url": "The weight file's URL (secrets redacted).",
        "scanned_at": "When it was scanned (UTC).",
        "verdict": "match, no_match, unknown_format or error.",
        "model": "The model it matched.",
        "score": "Share of sampled rows that matched.",
        "bytes_read": "Bytes read from it by HTTP Range.",
        "error": "Why it could not be scanned.",
        "details": "JSON of the comparison: false-match probability, tensors and rows "
                   "compared and matched, size, format; for a byte-identical copy, the "
                   "registered digest it has.",
        "registry_version": "The registry (fingerprints and digests) it was compared with; "
                            "a newer one scans it again.",
    }),
    "watermarks": ("Each recipient's derived watermark key. Secret: refused by this UI.", {
        "id": "Watermark number.",
        "model": "The model marked.",
        "recipient": "The recipient whose copy carries the mark.",
        "key": "The recipient's derived key (secret).",
        "key_id": "A public name for the key.",
        "version": "Marking scheme version.",
        "densities": "JSON of how densely each tensor was marked.",
        "artifact_id": "The recipient's registered copy.",
        "issued_at": "When it was issued (UTC).",
    }),
    "weight_prints": ("Tensor fingerprints of registered weight files. Secret (the key "
                      "tells which rows to disturb): refused by this UI.", {
        "id": "Fingerprint number.",
        "model": "The model fingerprinted.",
        "artifact_id": "The registered file it was made from.",
        "name": "The file's name.",
        "key": "The fingerprint key: chooses the projections and sampled rows (secret).",
        "null_dims": "Effective dimensions of unrelated rows, measured on decoys.",
        "version": "Fingerprint format version.",
        "tensors": "Tensors fingerprinted.",
        "added_at": "When it was added (UTC).",
    }),
    "tensor_prints": ("Per-tensor parts of the fingerprints: row sketches, sampled original "
                      "rows. Secret: refused by this UI.", {
        "print_id": "The fingerprint (weight_prints.id) it belongs to.",
        "position": "Its order within the fingerprint.",
        "name": "The tensor's name in the file.",
        "canonical": "Its llama.cpp-style canonical name.",
        "rows": "Rows of the tensor.",
        "columns": "Columns of the tensor.",
        "dtype": "Its stored dtype.",
        "stats": "JSON of permutation-invariant statistics.",
        "sketch": "The 32-dimension keyed projections of the sketched rows: every row "
                  "(fingerprint versions 1 and 2) or keyed runs of rows (version 3; the key "
                  "says which) (secret).",
        "sample_index": "Positions of the sampled rows (secret).",
        "samples": "The sampled original rows (secret).",
        "role": "body (a per-layer matrix) or what relatives share: embedding, tied_head, "
                "basis, head; only body matrices make a match.",
        "column_sketch": "Every column's keyed projection, restricted to the sketched rows "
                         "in version 3, so a copy stored transposed matches (secret).",
    }),
}

# Full-text indexes the tables' pages search (`_search=`). Datasette finds an index by
# itself only when it was declared `content="table"`; the migration writes content='table'.
FTS_TABLES = {"hits": "hits_fts", "documents": "documents_fts"}

# Newest first within each query: what an analyst opens the page for is what just arrived.
QUERIES: dict[str, dict[str, Any]] = {
    "new_critical_hits": {
        "title": "New critical hits",
        "description": "Critical hits nobody has triaged yet, newest first: exact digests "
                       "of released files or torrents, and recipients' watermarks.",
        "sql": "SELECT id, first_seen, last_seen, seen_count, kind, model, artifact, "
               "recipient, indicator, target, url, context FROM hits "
               "WHERE status = 'new' AND severity = 'critical' "
               "ORDER BY first_seen_unix DESC, id DESC",
    },
    "hits_by_recipient": {
        "title": "Hits by recipient",
        "description": "Every hit on one recipient's copy (a registered copy's digest or "
                       "its watermark), newest first.",
        "sql": "SELECT id, first_seen, last_seen, severity, kind, status, model, artifact, "
               "indicator, target, url, context FROM hits WHERE recipient = :recipient "
               "ORDER BY first_seen_unix DESC, id DESC",
        "params": ["recipient"],
    },
    "open_hits_by_model": {
        "title": "Open hits by model",
        "description": "Hits not yet resolved or dismissed (new or acknowledged), counted "
                       "per model and severity, the worst first. `weightwatch incidents` "
                       "groups them as the alert emails do.",
        "sql": "SELECT model, COUNT(*) AS open_hits, "
               "SUM(severity = 'critical') AS critical, SUM(severity = 'high') AS high, "
               "SUM(severity = 'medium') AS medium, SUM(severity = 'low') AS low, "
               "SUM(status = 'new') AS untriaged, "
               "GROUP_CONCAT(DISTINCT recipient) AS recipients, "
               "MIN(first_seen) AS first_seen, MAX(last_seen) AS last_seen FROM hits "
               "WHERE status IN ('new', 'acknowledged') GROUP BY model "
               "ORDER BY critical DESC, high DESC, open_hits DESC, model",
    },
    "failing_targets": {
        "title": "Failing targets",
        "description": "Targets whose last runs failed, longest failing first: a target "
                       "that cannot be read is a leak nobody sees.",
        "sql": "SELECT name, consecutive_failures, last_error, last_run_at, last_success_at, "
               "backoff_until, down_since FROM target_state WHERE consecutive_failures > 0 "
               "ORDER BY consecutive_failures DESC, name",
    },
}

_START_PAGE = f"""
<p>The hits weightwatch recorded, read-only: nothing here can change the database, and
arbitrary SQL is switched off. Triage with the command line.</p>
<ul>
  <li><a href="/{DATABASE}/hits">All hits</a>, newest first, faceted by severity, kind, model
    and status (click a value to filter; a row's id opens its evidence).</li>
  <li><a href="/{DATABASE}/new_critical_hits">New critical hits</a>: what to look at first.</li>
  <li><a href="/{DATABASE}/hits_by_recipient">Hits by recipient</a>: everything on one
    recipient's copy.</li>
  <li><a href="/{DATABASE}/open_hits_by_model">Open hits by model</a>.</li>
  <li><a href="/{DATABASE}/failing_targets">Failing targets</a>: sources that went blind.</li>
  <li><a href="/{DATABASE}/documents">Documents</a> and <a href="/{DATABASE}/snapshots">
    snapshots</a>: the evidence.</li>
</ul>
<p><strong>Severities.</strong> <em>critical</em>: an exact digest of a released file or
torrent, or a recipient's watermark: the weights are out, and whose copy it was may be
named. <em>high</em>: the weights themselves recognised after conversion or quantisation,
or a torrent listing released files by name and size. <em>medium</em>: a torrent whose total
size is a release's, or a strong keyword rule. <em>low</em>: a mention by name.
<strong>Triage.</strong> Open the hit and its document, then record the decision with
<code>weightwatch hits ack ID</code> (being handled), <code>weightwatch hits resolve ID
--note "taken down"</code> (dealt with) or <code>weightwatch hits false-positive ID</code>
(its unsent alerts are dropped and the same indicator at the same URL is never alerted
again); <code>weightwatch hits show ID</code> prints the evidence and its triage history,
and with <code>--snapshot FILE</code> writes the page as it was fetched. Everything crawled
is hostile: URLs and text are shown as text, never run, and snapshots are compressed
downloads, never rendered.</p>
"""


def build_metadata(existing_tables: Collection[str] = ()) -> dict[str, Any]:
    """Datasette's metadata: descriptions for every table and column, the start page, the
    hits table's facets and order, the canned queries, and the permissions that make it
    safe to show (no arbitrary SQL, secret tables denied). Full-text search is offered on
    the tables whose index is among `existing_tables` (a database migrated before the
    indexes existed has none, and searching a missing index would be an error page)."""
    tables: dict[str, dict[str, Any]] = {
        name: {"description_html": _described(description, columns)}
        for name, (description, columns) in TABLES.items()}
    tables["hits"].update(facets=["severity", "kind", "model", "status"],
                          sort_desc="first_seen_unix")
    for name, index in FTS_TABLES.items():
        if index in existing_tables:
            tables[name]["fts_table"] = index
    for name in SECRET_TABLES:
        tables[name].update(hidden=True, allow=False)
    return {
        "title": "weightwatch",
        "description_html": _START_PAGE,
        "allow_sql": False,
        "databases": {DATABASE: {
            "description": "Hits, their evidence, target health and the release registry.",
            "tables": tables,
            "queries": QUERIES,
        }},
    }


def _described(description: str, columns: dict[str, str]) -> str:
    """A table's description with its columns' folded under it: Datasette's own list of
    column descriptions is as long as the table is wide and pushes the rows below the
    fold, so the columns are given here (and so not as Datasette's `columns`)."""
    items = "".join(f"<dt><code>{html.escape(name)}</code></dt><dd>{html.escape(text)}</dd>"
                    for name, text in columns.items())
    return (f"<p>{html.escape(description)}</p><details class=\"ww-columns\"><summary>"
            f"What each of its {len(columns)} columns means</summary><dl>{items}</dl></details>")


def listen(host: str, port: int) -> socket.socket:
    """Bind the server's socket now, so a port in use is an OSError here rather than a log
    line from inside the server; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url(sock: socket.socket) -> str:
    """Where a bound socket serves, with the port it really got (for --port 0)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class ReadOnlyDatabase(Database):  # type: ignore[misc]  # Database is untyped (Any)
    """A Datasette database that can only read: every connection is `mode=ro`, and the
    write connection (behind writable canned queries and plugins' `execute_write`) is
    refused, so no path through Datasette can change the file the daemon writes."""

    def connect(self, write: bool = False) -> sqlite3.Connection:
        if write:
            raise PermissionError("weightwatch serve is read-only")
        return _connect_read_only(Path(self.path))


def _connect_read_only(path: Path) -> sqlite3.Connection:
    # The store's read-only connection: a URI built from the path itself (Datasette pastes
    # the path in as it is, `?` and `#` included), `mode=ro`, or `immutable=1` on
    # read-only media where `mode=ro` cannot open a WAL database.
    # A plain sqlite3 connection: Datasette renders SQLite's own errors.
    return connect_readonly(path, factory=stdlib_sqlite3.Connection, check_same_thread=False)[0]


class Refusals:
    """A Datasette plugin (a class, since Datasette lists plugins by `__name__`) answering
    two kinds of request before Datasette sees them:

    - anything but GET and HEAD (405): nothing an analyst does here needs to send data,
      and Datasette answers some POSTs to read-only pages with a 500 and a traceback;
    - `.csv` pages: cells hold crawled text, which a spreadsheet would run as a formula
      (`=cmd|' /C calc'!A0`), and Datasette's CSV cannot neutralise them; so the CSV is
      written here from the same page's JSON, each cell neutralised as the CLI's (`_csv`).
    """

    @staticmethod
    @hookimpl  # type: ignore[untyped-decorator]  # pluggy's marker, untyped as datasette
    def asgi_wrapper(datasette: Datasette) -> Callable[[Any], Any]:
        def wrap(app: Any) -> Any:
            async def refuse(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                             send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
                if scope["type"] != "http":
                    await app(scope, receive, send)
                    return
                # Datasette routes on the raw path, and only a `.csv` suffix selects CSV.
                raw = scope.get("raw_path") or scope["path"].encode()
                if scope["method"] not in ("GET", "HEAD"):
                    await _plain(send, 405, "weightwatch serve is read-only: triage with "
                                            "`weightwatch hits ack|resolve|false-positive`",
                                 ((b"allow", b"GET, HEAD"),))
                elif raw.split(b"?")[0].endswith(b".csv"):
                    await _csv(app, scope, receive, send)
                else:
                    await app(scope, receive, send)
            return refuse
        return wrap


async def _plain(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, text: str,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *headers]})
    await send({"type": "http.response.body", "body": f"{text}\n".encode()})


async def _json_page(app: Any, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                     path: bytes, query: list[tuple[str, str]]) -> tuple[int, bytes]:
    """Datasette's answer to a GET of `path` (a `.json` page) with `query`, read whole."""
    qs = urlencode(query).encode()
    inner = {**scope, "method": "GET", "path": path.decode(), "raw_path": path,
             "query_string": qs}
    status, body = 500, bytearray()

    async def collect(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(inner, receive, collect)
    return status, bytes(body)


def _csv_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page's rows as CSV cells: a labelled foreign key (`_labels=on`) as its value and a
    `_label` column, as Datasette's CSV has it; every cell neutralised."""
    out = []
    for row in rows:
        cells: dict[str, Any] = {}
        for name, value in row.items():
            if isinstance(value, dict) and set(value) == {"value", "label"}:
                cells[name], cells[f"{name}_label"] = value["value"], value["label"]
            else:
                cells[name] = value
        out.append({name: csv_safe(value) for name, value in cells.items()})
    return out


async def _csv(app: Any, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
               send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """A `.csv` page: the same page's JSON, every cell neutralised; with `_stream`, every
    page of it (up to CSV_STREAM_ROWS rows); with `_dl`, as a download."""
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.split(b"?")[0][: -len(b".csv")] + b".json"
    asked = parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True)
    stream = any(k == "_stream" and v not in ("", "0", "off") for k, v in asked)
    download = any(k == "_dl" and v not in ("", "0", "off") for k, v in asked)
    query = [(k, v) for k, v in asked if k not in ("_stream", "_dl", "_shape")]
    query.append(("_shape", "objects"))
    status, body = await _json_page(app, scope, receive, path, query)
    if status != 200:
        await _plain(send, status, f"no CSV: the page answered HTTP {status}")
        return
    page = json.loads(body)
    name = path.rsplit(b"/", 1)[-1][: -len(b".json")].decode("utf-8", "replace")
    headers = [(b"content-type", b"text/csv; charset=utf-8" if download
                else b"text/plain; charset=utf-8")]
    if download:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "rows"
        headers.append((b"content-disposition", f'attachment; filename="{safe}.csv"'.encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["method"] == "HEAD":
        await send({"type": "http.response.body", "body": b""})
        return
    rows = _csv_rows(page.get("rows") or [])
    columns = list(rows[0]) if rows else list(page.get("columns") or [])
    written, first = len(rows), True
    while True:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
        if first and columns:
            writer.writeheader()
        first = False
        writer.writerows(rows)
        token = page.get("next") if stream and written < CSV_STREAM_ROWS else None
        await send({"type": "http.response.body", "body": text.getvalue().encode(),
                    "more_body": token is not None})
        if token is None:
            return
        more = [(k, v) for k, v in query if k != "_next"] + [("_next", str(token))]
        status, body = await _json_page(app, scope, receive, path, more)
        page = json.loads(body) if status == 200 else {}
        rows = _csv_rows(page.get("rows") or [])
        written += len(rows)
        if not rows:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return


def make_datasette(db_path: Path) -> Datasette:
    """A Datasette over the weightwatch database and nothing else, read-only, with only
    Datasette's own plugins and ours."""
    # Datasette prints every error (each refused page too) to stdout with rich, local
    # variables and request headers included, whenever rich is installed; the error page
    # and uvicorn's log line say enough. (Imported here: imported before datasette.app,
    # this module would be registered as a plugin half-initialised.)
    from datasette import handle_exception as default_errors
    default_errors.rich = None
    # Any installed plugin could write, add routes or render cells as HTML; only
    # Datasette's built-ins (which do none of that) stay registered.
    for plugin in list(pm.get_plugins()):
        if pm.get_name(plugin) not in DEFAULT_PLUGINS:
            pm.unregister(plugin)
    pm.register(Refusals, name="weightwatch-refusals")
    conn = _connect_read_only(db_path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    # suggest_facets: the useful facets are fixed above, and suggesting others costs a
    # query per column on every page of a table that only grows.
    ds = Datasette(metadata=build_metadata(tables), settings={"suggest_facets": False},
                   template_dir=str(TEMPLATES))
    ds.remove_database("_memory")  # Datasette adds one when given no files
    ds.add_database(ReadOnlyDatabase(ds, path=str(db_path), is_mutable=True), name=DATABASE)
    return ds


def _stop_quietly(signum: int, frame: FrameType | None) -> None:
    """uvicorn stops on SIGTERM/SIGINT, then raises the same signal again so the default
    action runs; by then everything has shut down, so that second delivery is ignored and
    `serve` returns normally instead of dying by the signal or with KeyboardInterrupt."""


def serve(db_path: Path, sock: socket.socket) -> None:
    """Serve the database on a bound socket until SIGTERM/SIGINT."""
    app = make_datasette(db_path).app()
    # log_config None: uvicorn's records go through the root logger weightwatch set up,
    # as JSON lines like every other log.
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None))
    previous = {sig: signal.signal(sig, _stop_quietly)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
