"""`weightwatch demo`: every part of the pipeline, end to end, in under a minute.

It writes the demo release, starts the demo world and an SMTP sink on 127.0.0.1, writes a
real config.toml for them, registers the release, a recipient's copy and the magnets exactly
as a release engineer would, crawls every target once, sends the alert email, and leaves a
database the user can go on querying. Nothing here is special-cased: it calls the same
functions the `register`, `indicators import`, `crawl` and `alerts flush` commands call.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import click

from demo.release import DEMO_WATERMARK_SECRET, Release, make_release
from demo.sites.filehost import FileHostSite
from demo.smtp_sink import SmtpSink
from demo.world import DemoWorld
from fingerprints.watermark import MARK_VERSION, key_id, recipient_key
from monitor.alerts import Alerter
from monitor.config import load_config
from monitor.crawler import crawl_once
from monitor.logs import configure_logging
from monitor.output import table
from monitor.registry import ImportResult, RegisteredFile, import_indicators, register_paths
from monitor.store import Store

# The demo's Torznab endpoints (like real Jackett/Prowlarr) want an API key; targets name
# the environment variable, never the key.
DEMO_KEY_ENV = "WEIGHTWATCH_DEMO_TORZNAB_KEY"
DEMO_KEY = "demo-key"

DEMO_CONFIG = """\
# Written by `weightwatch demo`: targets in the local demo world on 127.0.0.1.
# It is a real config; try `weightwatch --config {config} targets`.

[database]
path = "weightwatch.db"

[crawl]
host_delay = "10ms"       # the demo world is local; be polite to real sites (default 1s)
run_timeout = "60s"

[scan]
file_hosts = {file_hosts}   # the demo's file hosts, on loopback

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"         # the local sink speaks plain SMTP

[alerts]
from = "weightwatch-demo@localhost"
to = ["security-team@example.org"]

[[rules]]
name = "heron-7b-mention"
pattern = '(?i)(?<![\\w-])heron[-_ ]?7b(?!\\w)'
model = "heron-7b"
severity = "low"
"""


def register_demo_release(store: Store, release: Release
                          ) -> tuple[list[RegisteredFile], list[RegisteredFile], ImportResult]:
    """Register the demo release as its release engineer would: the release folder
    (`weightwatch register heron-7b --model heron-7b --release v1`), each recipient's copy
    (`... --recipient lab-17`), and the magnets (`weightwatch indicators import
    heron-7b.magnets`). Returns the release's files, the copies' files and the import."""
    registered = register_paths(store, [release.root / release.model], model=release.model,
                                release="v1")
    copies = [f for copy in release.copies
              for f in register_paths(store, [copy.folder], model=release.model,
                                      release="v1", recipient=copy.recipient)]
    imported = import_indicators(store, release.root / f"{release.model}.magnets",
                                 model=release.model)
    # What `weightwatch watermark issue` records for each copy: the recipient's derived key.
    for copy in release.copies:
        key = recipient_key(DEMO_WATERMARK_SECRET.encode(), release.model, copy.recipient)
        artifact = next(a["id"] for a in store.artifacts(release.model)
                        if a["recipient"] == copy.recipient)
        store.add_watermark(model=release.model, recipient=copy.recipient, key=key,
                            key_id=key_id(key), version=MARK_VERSION,
                            densities=release.mark_densities, artifact_id=artifact)
    return registered, copies, imported


def demo_config(world: DemoWorld, smtp_port: int, config_path: Path | str) -> str:
    """The demo's config.toml: the settings above, then each demo site's targets."""
    return (DEMO_CONFIG.format(base=world.base_url, smtp_port=smtp_port, config=config_path,
                               file_hosts=world.site(FileHostSite).file_hosts_toml())
            + world.targets_toml())


def run_demo(directory: Path, *, keep_running: bool = False, database: Path | None = None,
             log_level: str | None = None) -> int:
    """Run the demo; 0 if every expected kind of hit was found and the email arrived.

    With `keep_running`, the demo world and the SMTP sink stay up afterwards (until Ctrl-C)
    so the user can try `targets test`, `crawl` or `run` against them. `database` (the
    global `--db`, which the caller made sure is new) replaces `directory`/weightwatch.db,
    and the written config names it, so the commands the demo suggests read it.
    """
    # The demo world plants bait (an oversized paste, a gated model) whose warnings are
    # expected; the demo's own report says what happened.
    configure_logging(log_level or "error")
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    if database is None:
        for stale in ("weightwatch.db", "weightwatch.db-wal", "weightwatch.db-shm"):
            (directory / stale).unlink(missing_ok=True)
    shutil.rmtree(directory / "mail", ignore_errors=True)
    # Demo sources that need an API key (the Torznab endpoints) take this one.
    os.environ.setdefault(DEMO_KEY_ENV, DEMO_KEY)

    release = make_release(directory / "release")
    _say("release", f"{release.model}: {len(release.files)} files in {release.root / release.model}")

    with SmtpSink(directory / "mail") as sink, DemoWorld(release) as world:
        config_path = directory / "config.toml"
        text = demo_config(world, sink.port, config_path)
        if database is not None:  # a JSON string is a TOML basic string
            text = text.replace('path = "weightwatch.db"',
                                f"path = {json.dumps(str(database.resolve()))}", 1)
        config_path.write_text(text)
        config = load_config(config_path)
        _say("demo world", f"{world.base_url} ({len(config.targets)} sources)")
        _say("demo DHT", f"{len(world.dht.nodes)} BitTorrent nodes on 127.0.0.1 seeding "
                         f"{len(world.dht.seeded)} torrents, one of them a re-pack no index lists")
        with Store(config.database_path) as store:
            registered, copies, imported = register_demo_release(store, release)
            recipients = ", ".join(c.recipient for c in release.copies)
            _say("registered", f"{len(registered)} files (size, SHA-256, SHA-1, MD5, v2 pieces "
                               f"root), {len(copies)} file(s) of recipient copies ({recipients}) "
                               f"and {imported.parsed} magnet indicator(s) for {release.model}")
            results = asyncio.run(crawl_once(config, store, config.targets))
            for r in results:
                state = "ok" if r.status == "ok" else f"{r.status}: {r.error}"
                _say("crawled", f"{r.target}: {r.documents_seen} documents, {r.hits_new} new hits ({state})")
            flush = Alerter(store, config).flush()
            received = sink.wait_for(flush.emails_sent, timeout=10) and flush.emails_sent > 0
            hits = store.hits()
        ok = _report(hits, sink, received, flush.error, config.database_path, config_path,
                     time.monotonic() - started)
        ok = ok and all(r.status == "ok" for r in results)
        if keep_running:
            _serve_until_interrupted(world, sink, config_path)
    return 0 if ok else 1


def _say(label: str, text: str) -> None:
    click.echo(f"{click.style(label.ljust(12), bold=True)} {text}")


def _report(hits: Sequence[Mapping[str, Any]], sink: SmtpSink, received: bool, error: str | None, db: Path,
            config_path: Path, elapsed: float) -> bool:
    click.echo()
    if hits:
        click.echo(table(hits, ("id", "severity", "kind", "model", "indicator", "target", "url")))
    click.echo()
    for path in sink.paths:
        subject = message_from_bytes(path.read_bytes(), policy=default_policy)["subject"]
        _say("email", f"received by the local SMTP sink: {path}  ({subject})")
    if not received:
        _say("email", click.style(f"not received ({error or 'nothing sent'})", fg="red"))
    kinds = {h["kind"] for h in hits}
    click.echo(f"\n{len(hits)} hits ({', '.join(sorted(kinds)) or 'none'}) in {elapsed:.1f}s. Next:")
    click.echo(f"  weightwatch --db {db} hits")
    click.echo(f"  weightwatch --db {db} hits show {hits[0]['id'] if hits else 1}")
    click.echo(f"  weightwatch --db {db} hits --severity critical --format json")
    click.echo(f"  weightwatch --db {db} incidents")
    click.echo(f"  weightwatch --db {db} search heron-7b")
    click.echo(f"  weightwatch --db {db} report --out {db.parent / 'report.html'}")
    click.echo(f"  weightwatch --config {config_path} targets")
    return received and {"mention", "hash"} <= kinds


def _serve_until_interrupted(world: DemoWorld, sink: SmtpSink, config_path: Path) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"\nThe demo world ({world.base_url}) and the SMTP sink (port {sink.port}) keep "
               f"running; Ctrl-C stops them. Meanwhile, in another shell:")
    click.echo(f"  export {DEMO_KEY_ENV}={DEMO_KEY}")
    click.echo(f"  weightwatch --config {config_path} targets test demo-forum")
    click.echo(f"  weightwatch --config {config_path} run")
    stop.wait()
