"""Numbered schema migrations, applied in order and recorded in `PRAGMA user_version`.

A migration is never edited once released; a schema change is a new entry at the end, so
every database, however old, reaches the same schema by the same steps.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the foundation: target state, runs, evidence, hits, outbox, registry.
    """
    CREATE TABLE target_state (
        name TEXT PRIMARY KEY,
        last_run_at TEXT,
        last_success_at TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        documents_count INTEGER NOT NULL DEFAULT 0,
        hits_count INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        cursor TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE crawl_runs (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL DEFAULT 'running'
            CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
        documents_seen INTEGER NOT NULL DEFAULT 0,
        documents_new INTEGER NOT NULL DEFAULT 0,
        documents_changed INTEGER NOT NULL DEFAULT 0,
        hits_new INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX crawl_runs_target ON crawl_runs(target, started_at);
    -- Content-addressed, so a thread page that yields fifty posts is stored once.
    CREATE TABLE snapshots (
        sha256 TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        fetched_at TEXT NOT NULL,
        size INTEGER NOT NULL,
        compression TEXT NOT NULL DEFAULT 'zlib',
        body BLOB NOT NULL
    );
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        key TEXT NOT NULL,
        url TEXT NOT NULL,
        title TEXT,
        author TEXT,
        posted_at TEXT,
        text TEXT NOT NULL,
        links TEXT NOT NULL DEFAULT '[]',
        extras TEXT NOT NULL DEFAULT '{}',
        content_sha256 TEXT NOT NULL,
        snapshot_sha256 TEXT REFERENCES snapshots(sha256),
        fetched_at TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        run_id INTEGER REFERENCES crawl_runs(id),
        UNIQUE (target, key)
    );
    CREATE TABLE models (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    );
    CREATE TABLE artifacts (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL REFERENCES models(name),
        name TEXT NOT NULL,
        path TEXT,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        sha1 TEXT NOT NULL,
        md5 TEXT NOT NULL,
        release TEXT,
        recipient TEXT,
        registered_at TEXT NOT NULL,
        UNIQUE (model, sha256, recipient)
    );
    -- Every known digest of the registry, whatever produced it (register, an imported
    -- checksum list, a magnet), with where it came from.
    CREATE TABLE indicators (
        id INTEGER PRIMARY KEY,
        algo TEXT NOT NULL CHECK (algo IN ('md5', 'sha1', 'sha256', 'btih', 'btmh')),
        value TEXT NOT NULL,
        model TEXT NOT NULL REFERENCES models(name),
        artifact_id INTEGER REFERENCES artifacts(id),
        recipient TEXT,
        name TEXT,
        size INTEGER,
        source TEXT NOT NULL,
        added_at TEXT NOT NULL,
        UNIQUE (algo, value, model)
    );
    CREATE INDEX indicators_value ON indicators(value);
    CREATE TABLE hits (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('mention', 'hash', 'torrent', 'weights', 'watermark')),
        severity TEXT NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
        model TEXT,
        artifact TEXT,
        recipient TEXT,
        indicator TEXT NOT NULL,
        indicator_type TEXT,
        rule TEXT,
        detector TEXT NOT NULL,
        matcher_version TEXT NOT NULL DEFAULT '',
        score REAL NOT NULL DEFAULT 1.0,
        context TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL,
        url TEXT NOT NULL,
        document_id INTEGER REFERENCES documents(id),
        run_id INTEGER REFERENCES crawl_runs(id),
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        seen_count INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL DEFAULT 'new'
            CHECK (status IN ('new', 'acknowledged', 'resolved', 'false_positive'))
    );
    CREATE INDEX hits_first_seen ON hits(first_seen);
    CREATE INDEX hits_severity ON hits(severity, first_seen);
    CREATE INDEX hits_kind ON hits(kind, first_seen);
    CREATE INDEX hits_model ON hits(model, first_seen);
    CREATE INDEX hits_document ON hits(document_id);
    -- One row per hit to notify, written in the same transaction as the hit, so a crash
    -- between detecting and emailing loses nothing.
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        hit_id INTEGER NOT NULL UNIQUE REFERENCES hits(id),
        channel TEXT NOT NULL DEFAULT 'email',
        created_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_attempt_at TEXT,
        last_error TEXT,
        sent_at TEXT,
        message_id TEXT
    );
    CREATE INDEX outbox_status ON outbox(status, next_attempt_at);
    """,
    # 2: target health: escalating backoff, down/recovered notices sent like alerts.
    """
    ALTER TABLE target_state ADD COLUMN backoff_until TEXT;
    ALTER TABLE target_state ADD COLUMN down_since TEXT;
    CREATE TABLE notices (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('target_down', 'target_recovered')),
        target TEXT NOT NULL,
        created_at TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_attempt_at TEXT,
        last_error TEXT,
        sent_at TEXT,
        message_id TEXT
    );
    CREATE INDEX notices_status ON notices(status, next_attempt_at);
    """,
    # 3: every digest of a released file: BEP 52 pieces roots and 1 GB shard SHA-256s.
    # SQLite cannot widen a CHECK constraint in place, so indicators is rebuilt.
    """
    ALTER TABLE artifacts ADD COLUMN pieces_root TEXT;
    ALTER TABLE artifacts ADD COLUMN shards TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE indicators_v3 (
        id INTEGER PRIMARY KEY,
        algo TEXT NOT NULL
            CHECK (algo IN ('md5', 'sha1', 'sha256', 'btih', 'btmh', 'pieces_root', 'shard')),
        value TEXT NOT NULL,
        model TEXT NOT NULL REFERENCES models(name),
        artifact_id INTEGER REFERENCES artifacts(id),
        recipient TEXT,
        name TEXT,
        size INTEGER,
        source TEXT NOT NULL,
        added_at TEXT NOT NULL,
        UNIQUE (algo, value, model)
    );
    INSERT INTO indicators_v3 SELECT id, algo, value, model, artifact_id, recipient, name, size,
        source, added_at FROM indicators;
    DROP TABLE indicators;
    ALTER TABLE indicators_v3 RENAME TO indicators;
    CREATE INDEX indicators_value ON indicators(value);
    CREATE INDEX artifacts_size ON artifacts(size);
    """,
    # 4: tensor fingerprints of registered weight files (fingerprints.weightprint), and
    # remote scans of weight links already made, so a crawl does not scan the same file twice.
    """
    CREATE TABLE weight_prints (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL REFERENCES models(name),
        artifact_id INTEGER REFERENCES artifacts(id),
        name TEXT NOT NULL,
        key BLOB NOT NULL,
        null_dims REAL NOT NULL,
        version INTEGER NOT NULL,
        tensors INTEGER NOT NULL,
        added_at TEXT NOT NULL,
        UNIQUE (model, name, key)
    );
    CREATE TABLE tensor_prints (
        print_id INTEGER NOT NULL REFERENCES weight_prints(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        canonical TEXT NOT NULL,
        rows INTEGER NOT NULL,
        columns INTEGER NOT NULL,
        dtype TEXT NOT NULL,
        stats TEXT NOT NULL DEFAULT '{}',
        sketch BLOB NOT NULL,
        sample_index BLOB NOT NULL,
        samples BLOB NOT NULL,
        PRIMARY KEY (print_id, position)
    );
    CREATE TABLE weight_scans (
        url TEXT PRIMARY KEY,
        scanned_at TEXT NOT NULL,
        verdict TEXT NOT NULL,
        model TEXT,
        score REAL,
        bytes_read INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        details TEXT NOT NULL DEFAULT '{}',
        registry_version INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 5: per-recipient watermark keys (derived from the master secret, which is never
    # stored) and how densely each tensor of that recipient's copy was marked.
    """
    CREATE TABLE watermarks (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL REFERENCES models(name),
        recipient TEXT NOT NULL,
        key BLOB NOT NULL,
        key_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        densities TEXT NOT NULL DEFAULT '{}',
        artifact_id INTEGER REFERENCES artifacts(id),
        issued_at TEXT NOT NULL,
        UNIQUE (model, recipient)
    );
    """,
    # 6: silences (issue 7): alerts they hold back wait in the outbox until they end.
    """
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        matchers TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        expired_at TEXT
    );
    ALTER TABLE outbox ADD COLUMN silenced_by INTEGER REFERENCES silences(id);
    """,
    # 7: alert groups (one per model): when each last emailed, for group_interval.
    """
    CREATE TABLE alert_groups (
        key TEXT PRIMARY KEY,
        last_sent_at TEXT NOT NULL
    );
    """,
    # 8: a webhook channel beside email: one outbox row per hit and channel.
    """
    CREATE TABLE outbox_v8 (
        id INTEGER PRIMARY KEY,
        hit_id INTEGER NOT NULL REFERENCES hits(id),
        channel TEXT NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'webhook')),
        created_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_attempt_at TEXT,
        last_error TEXT,
        sent_at TEXT,
        message_id TEXT,
        silenced_by INTEGER REFERENCES silences(id),
        UNIQUE (hit_id, channel)
    );
    INSERT INTO outbox_v8 SELECT id, hit_id, channel, created_at, status, attempts,
        next_attempt_at, last_attempt_at, last_error, sent_at, message_id, silenced_by
        FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v8 RENAME TO outbox;
    CREATE INDEX outbox_status ON outbox(status, next_attempt_at);
    """,
    # 9: triage: who set a hit's status, when, and why.
    """
    CREATE TABLE triage (
        id INTEGER PRIMARY KEY,
        hit_id INTEGER NOT NULL REFERENCES hits(id),
        status TEXT NOT NULL
            CHECK (status IN ('new', 'acknowledged', 'resolved', 'false_positive')),
        note TEXT,
        by TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX triage_hit ON triage(hit_id, id);
    CREATE INDEX hits_url_indicator ON hits(url, indicator);
    """,
    # 10: alert groups and incidents look up a hit's release by its model and artifact name.
    """
    CREATE INDEX artifacts_model_name ON artifacts(model, name);
    """,
    # 11: analysts' full-text search (FTS5 over documents and hits, kept in step by
    # triggers) and an index for each `hits --sort` order, so any page is a seek.
    """
    -- unicode61 folds case and accents; '-', '_', '.', ':' and '/' separate tokens, so
    -- heron-7b, a URL or a magnet is found as a phrase of its parts, and a hex digest
    -- (letters and digits only) is one token whatever surrounds it.
    CREATE VIRTUAL TABLE documents_fts USING fts5(
        title, author, text, url,
        content='documents', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2');
    -- A word in a title says more about a post than the same word in its body.
    INSERT INTO documents_fts(documents_fts, rank) VALUES ('rank', 'bm25(3.0, 1.0, 1.0, 1.0)');
    CREATE TRIGGER documents_fts_insert AFTER INSERT ON documents BEGIN
        INSERT INTO documents_fts(rowid, title, author, text, url)
            VALUES (new.id, new.title, new.author, new.text, new.url);
    END;
    CREATE TRIGGER documents_fts_delete AFTER DELETE ON documents BEGIN
        INSERT INTO documents_fts(documents_fts, rowid, title, author, text, url)
            VALUES ('delete', old.id, old.title, old.author, old.text, old.url);
    END;
    -- A re-saved document whose indexed text did not change is not re-indexed.
    CREATE TRIGGER documents_fts_update AFTER UPDATE OF id, title, author, text, url ON documents
    WHEN old.id IS NOT new.id OR old.title IS NOT new.title OR old.author IS NOT new.author
        OR old.text IS NOT new.text OR old.url IS NOT new.url
    BEGIN
        INSERT INTO documents_fts(documents_fts, rowid, title, author, text, url)
            VALUES ('delete', old.id, old.title, old.author, old.text, old.url);
        INSERT INTO documents_fts(rowid, title, author, text, url)
            VALUES (new.id, new.title, new.author, new.text, new.url);
    END;
    CREATE VIRTUAL TABLE hits_fts USING fts5(
        indicator, context, url, model, artifact, recipient,
        content='hits', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2');
    INSERT INTO hits_fts(hits_fts, rank) VALUES ('rank', 'bm25(3.0, 1.0, 1.0, 1.0, 1.0, 1.0)');
    CREATE TRIGGER hits_fts_insert AFTER INSERT ON hits BEGIN
        INSERT INTO hits_fts(rowid, indicator, context, url, model, artifact, recipient)
            VALUES (new.id, new.indicator, new.context, new.url, new.model, new.artifact,
                    new.recipient);
    END;
    CREATE TRIGGER hits_fts_delete AFTER DELETE ON hits BEGIN
        INSERT INTO hits_fts(hits_fts, rowid, indicator, context, url, model, artifact, recipient)
            VALUES ('delete', old.id, old.indicator, old.context, old.url, old.model,
                    old.artifact, old.recipient);
    END;
    -- Seeing a hit again or triaging it changes no indexed column, so this never fires
    -- on the daemon's hot path.
    CREATE TRIGGER hits_fts_update
    AFTER UPDATE OF id, indicator, context, url, model, artifact, recipient ON hits
    WHEN old.id IS NOT new.id OR old.indicator IS NOT new.indicator
        OR old.context IS NOT new.context OR old.url IS NOT new.url
        OR old.model IS NOT new.model OR old.artifact IS NOT new.artifact
        OR old.recipient IS NOT new.recipient
    BEGIN
        INSERT INTO hits_fts(hits_fts, rowid, indicator, context, url, model, artifact, recipient)
            VALUES ('delete', old.id, old.indicator, old.context, old.url, old.model,
                    old.artifact, old.recipient);
        INSERT INTO hits_fts(rowid, indicator, context, url, model, artifact, recipient)
            VALUES (new.id, new.indicator, new.context, new.url, new.model, new.artifact,
                    new.recipient);
    END;
    INSERT INTO documents_fts(documents_fts) VALUES ('rebuild');
    INSERT INTO hits_fts(hits_fts) VALUES ('rebuild');
    -- Higher is worse (critical 4 ... low 1), so "worst, then newest" is one descending
    -- key (severity_level, first_seen, id) that a keyset page seeks into, where the CASE
    -- expression this replaces could only be sorted.
    ALTER TABLE hits ADD COLUMN severity_level INTEGER GENERATED ALWAYS AS (
        CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2
        WHEN 'low' THEN 1 ELSE 0 END) VIRTUAL;
    CREATE INDEX hits_worst ON hits(severity_level, first_seen);
    CREATE INDEX hits_last_seen ON hits(last_seen);
    CREATE INDEX hits_score ON hits(score, first_seen);
    CREATE INDEX hits_target ON hits(target, first_seen);
    -- The usual filters in the default order: a page is read in order and stops at its
    -- limit, instead of sorting every hit of a model (a quarter of them, say) first.
    CREATE INDEX hits_model_worst ON hits(model, severity_level, first_seen);
    CREATE INDEX hits_kind_worst ON hits(kind, severity_level, first_seen);
    CREATE INDEX hits_target_worst ON hits(target, severity_level, first_seen);
    CREATE INDEX hits_recipient_worst ON hits(recipient, severity_level, first_seen);
    """,
    # 12: tensor fingerprints version 2 (issue 14): each tensor's role (body or shared by
    # relatives) and the sketch of its columns, for copies stored transposed. Rows of
    # version-1 prints keep NULLs: their roles are derived when they are loaded.
    """
    ALTER TABLE tensor_prints ADD COLUMN role TEXT;
    ALTER TABLE tensor_prints ADD COLUMN column_sketch BLOB;
    """,
    # 13: hits keep only the indexes a query the code runs uses (issue 16; each is named
    # by a plan in benchmarks/hits_queries.py): they were more than half of each hit's
    # bytes. Severity filters seek hits_worst, kind filters ride the default order, a target
    # filter seeks hits_target_worst. The false-positive check on every insert and the
    # recipient filter look for a few hits, so their indexes hold only those (partial).
    """
    DROP INDEX hits_severity;
    DROP INDEX hits_kind;
    DROP INDEX hits_target;
    DROP INDEX hits_kind_worst;
    DROP INDEX hits_url_indicator;
    CREATE INDEX hits_dismissed ON hits(url, indicator) WHERE status = 'false_positive';
    DROP INDEX hits_recipient_worst;
    CREATE INDEX hits_recipient_worst ON hits(recipient, severity_level, first_seen)
        WHERE recipient IS NOT NULL;
    """,
    # 14: hits' indexes hold each time as Unix seconds (4 bytes) instead of its ISO text
    # (25 bytes), a time being in every index a page is read in order of (issue 16). The
    # text stays the one stored value, so every command and export reads it as before;
    # the integer is generated from it (strftime, not unixepoch: any SQLite that has
    # generated columns computes it). utcnow writes whole seconds, so the order is the
    # text's; `monitor.store.hits.unix_seconds` turns a time given to a query into the
    # same integer. Each index is rebuilt with the same columns, the time as an integer.
    """
    ALTER TABLE hits ADD COLUMN first_seen_unix INTEGER
        GENERATED ALWAYS AS (CAST(strftime('%s', first_seen) AS INTEGER)) VIRTUAL;
    ALTER TABLE hits ADD COLUMN last_seen_unix INTEGER
        GENERATED ALWAYS AS (CAST(strftime('%s', last_seen) AS INTEGER)) VIRTUAL;
    DROP INDEX hits_first_seen;
    CREATE INDEX hits_first_seen ON hits(first_seen_unix);
    DROP INDEX hits_last_seen;
    CREATE INDEX hits_last_seen ON hits(last_seen_unix);
    DROP INDEX hits_worst;
    CREATE INDEX hits_worst ON hits(severity_level, first_seen_unix);
    DROP INDEX hits_score;
    CREATE INDEX hits_score ON hits(score, first_seen_unix);
    DROP INDEX hits_model;
    CREATE INDEX hits_model ON hits(model, first_seen_unix);
    DROP INDEX hits_model_worst;
    CREATE INDEX hits_model_worst ON hits(model, severity_level, first_seen_unix);
    DROP INDEX hits_target_worst;
    CREATE INDEX hits_target_worst ON hits(target, severity_level, first_seen_unix);
    DROP INDEX hits_recipient_worst;
    CREATE INDEX hits_recipient_worst ON hits(recipient, severity_level, first_seen_unix)
        WHERE recipient IS NOT NULL;
    """,
    # 15 (issue 17): the daemon's heartbeat, one row, so `weightwatch health` in another
    # process can tell a live daemon from a dead or hung one.
    """
    CREATE TABLE daemon (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started_at TEXT NOT NULL,
        beat_at TEXT NOT NULL,
        interval_s REAL NOT NULL,
        stopped_at TEXT,
        metrics_url TEXT
    );
    """,
    # 16 (issue 17): chat channels beside email and the webhook (`[[alerts.channels]]`),
    # each queued under its configured name, so the outbox takes any channel name the
    # config accepts, not two fixed ones.
    """
    CREATE TABLE outbox_chat (
        id INTEGER PRIMARY KEY,
        hit_id INTEGER NOT NULL REFERENCES hits(id),
        channel TEXT NOT NULL DEFAULT 'email' CHECK (length(channel) BETWEEN 1 AND 32),
        created_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_attempt_at TEXT,
        last_error TEXT,
        sent_at TEXT,
        message_id TEXT,
        silenced_by INTEGER REFERENCES silences(id),
        UNIQUE (hit_id, channel)
    );
    INSERT INTO outbox_chat SELECT id, hit_id, channel, created_at, status, attempts,
        next_attempt_at, last_attempt_at, last_error, sent_at, message_id, silenced_by
        FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_chat RENAME TO outbox;
    CREATE INDEX outbox_status ON outbox(status, next_attempt_at);
    """,
    # 17 (issue 18): IPFS CIDs of released files and folders, one indicator per import
    # layout (fingerprints.ipfs.LAYOUTS); the CHECK is widened by rebuilding, as in 3 (before
    # 18, whose indicator_files refers to indicators: a referenced table is never dropped).
    """
    CREATE TABLE indicators_v17 (
        id INTEGER PRIMARY KEY,
        algo TEXT NOT NULL
            CHECK (algo IN ('md5', 'sha1', 'sha256', 'btih', 'btmh', 'pieces_root', 'shard',
                            'cid-v0', 'cid-v1', 'cid-v1-1m', 'cid-v1-2025')),
        value TEXT NOT NULL,
        model TEXT NOT NULL REFERENCES models(name),
        artifact_id INTEGER REFERENCES artifacts(id),
        recipient TEXT,
        name TEXT,
        size INTEGER,
        source TEXT NOT NULL,
        added_at TEXT NOT NULL,
        UNIQUE (algo, value, model)
    );
    INSERT INTO indicators_v17 SELECT id, algo, value, model, artifact_id, recipient, name,
        size, source, added_at FROM indicators;
    DROP TABLE indicators;
    ALTER TABLE indicators_v17 RENAME TO indicators;
    CREATE INDEX indicators_value ON indicators(value);
    """,
    # 18 (issue 18): every name and size an import gave a known digest, or a released file
    # without one (a size list's line, a v1 torrent's file list), all kept: manifest matching
    # joins a name from one source with the size from another whatever the order of the
    # imports, and two names of the same bytes both count.
    """
    CREATE TABLE indicator_files (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL REFERENCES models(name),
        indicator_id INTEGER REFERENCES indicators(id),
        name TEXT,
        size INTEGER CHECK (size IS NULL OR size >= 0),
        source TEXT NOT NULL,
        added_at TEXT NOT NULL,
        CHECK (name IS NOT NULL OR size IS NOT NULL),
        CHECK (indicator_id IS NOT NULL OR (name IS NOT NULL AND size IS NOT NULL))
    );
    CREATE UNIQUE INDEX indicator_files_claim ON indicator_files(
        model, ifnull(indicator_id, 0), ifnull(name, ''), ifnull(size, -1));
    CREATE INDEX indicator_files_indicator ON indicator_files(indicator_id);
    """,
    # 19 (issue 18): hub and A1111 short hashes (autov1, autov2, autov3, crc32, blake3). The
    # CHECK now bounds the name's shape only; which algorithms exist is one table in Python
    # (fingerprints.algos.HEX_LENGTHS, which the store checks), so the next algorithm needs
    # no rebuild. indicator_files refers to indicators, and foreign keys are on during a
    # migration: its rows wait in a temporary table while indicators is rebuilt, and come
    # back with their ids, as do the indicators'.
    """
    CREATE TABLE indicators_v19 (
        id INTEGER PRIMARY KEY,
        algo TEXT NOT NULL
            CHECK (length(algo) BETWEEN 1 AND 32 AND algo NOT GLOB '*[^a-z0-9_-]*'),
        value TEXT NOT NULL,
        model TEXT NOT NULL REFERENCES models(name),
        artifact_id INTEGER REFERENCES artifacts(id),
        recipient TEXT,
        name TEXT,
        size INTEGER,
        source TEXT NOT NULL,
        added_at TEXT NOT NULL,
        UNIQUE (algo, value, model)
    );
    INSERT INTO indicators_v19 SELECT id, algo, value, model, artifact_id, recipient, name,
        size, source, added_at FROM indicators;
    CREATE TEMP TABLE indicator_files_v19 AS SELECT id, model, indicator_id, name, size,
        source, added_at FROM indicator_files;
    DROP TABLE indicator_files;
    DROP TABLE indicators;
    ALTER TABLE indicators_v19 RENAME TO indicators;
    CREATE INDEX indicators_value ON indicators(value);
    CREATE TABLE indicator_files (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL REFERENCES models(name),
        indicator_id INTEGER REFERENCES indicators(id),
        name TEXT,
        size INTEGER CHECK (size IS NULL OR size >= 0),
        source TEXT NOT NULL,
        added_at TEXT NOT NULL,
        CHECK (name IS NOT NULL OR size IS NOT NULL),
        CHECK (indicator_id IS NOT NULL OR (name IS NOT NULL AND size IS NOT NULL))
    );
    INSERT INTO indicator_files SELECT id, model, indicator_id, name, size, source, added_at
        FROM temp.indicator_files_v19;
    DROP TABLE temp.indicator_files_v19;
    CREATE UNIQUE INDEX indicator_files_claim ON indicator_files(
        model, ifnull(indicator_id, 0), ifnull(name, ''), ifnull(size, -1));
    CREATE INDEX indicator_files_indicator ON indicator_files(indicator_id);
    """,
]
