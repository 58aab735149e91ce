"""Full-text search (`weightwatch search`, issue 8) and `hits --sort` with keyset pages, on
real SQLite files written through the real store: ranking, snippets, what analysts paste
(a SHA-256, `heron-7b`, a URL), the index following changed and deleted rows, a database
from before the index (schema 10), malformed queries, hostile text."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import hit

from monitor import search as search_module
from monitor.cli import SEARCH_JSON_COLUMNS, main
from monitor.migrations import MIGRATIONS
from monitor.models import Document
from monitor.search import SearchError, parse_query, search
from monitor.store import HIT_SORTS, Store

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def cli(db: Path, *args: str, code: int = 0, color: bool = False):
    result = CliRunner().invoke(main, ["--config", "/dev/null", "--db", str(db), *args],
                                catch_exceptions=False, color=color)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def post(store: Store, key: str, text: str, *, title: str = "a post", hits=(),
         target: str = "forum", url: str | None = None) -> tuple[int, list[int]]:
    doc = Document(target=target, key=key, url=url or f"https://board.example/t/{key}",
                   title=title, author="anon", text=text)
    saved, hit_ids = store.save_document(doc, list(hits), run_id=None)
    return saved.id, hit_ids


def found(db: Path, *query: str) -> list[dict]:
    return json.loads(cli(db, "search", *query, "--format", "json").stdout)


def documents(db: Path, *query: str) -> set[int]:
    return {r["id"] for r in found(db, *query) if r["kind"] == "document"}


def test_ranks_by_bm25_with_snippets_and_finds_what_analysts_paste(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        once, _ = post(store, "p1", "someone says heron-7b is out, and lots of other words "
                                    "about birds and lakes and fish and the weather today")
        thrice, hit_ids = post(
            store, "p2", "heron-7b weights: heron-7b torrent, heron-7b magnet below",
            hits=[hit(indicator=SHA, context=f"sha256 {SHA} of model-00001.safetensors")])
        post(store, "p3", "a grey heron at the lake", title="birds")
    results = found(db, "heron-7b", "--in", "documents")
    assert [(r["kind"], r["id"]) for r in results] == [("document", thrice),
                                                       ("document", once)]
    best = results[0]
    assert list(best) == list(SEARCH_JSON_COLUMNS)
    assert best["hits"] == hit_ids and best["rank"] < results[1]["rank"] < 0
    assert "heron-7b" in best["snippet"].lower()
    # Highlights are offsets into the plain snippet, each over the matched words.
    assert best["highlights"] and all(
        best["snippet"][a:b].lower() == "heron-7b" for a, b in best["highlights"])
    # The bird is not the model: a phrase, not two loose words.
    assert "birds" not in {r["title"] for r in results}
    # A pasted digest finds the hit that holds it; its first letters find it too.
    by_digest = found(db, SHA)
    assert [(r["kind"], r["id"], r["indicator"]) for r in by_digest] == [
        ("hit", hit_ids[0], SHA)]
    assert by_digest[0]["document_id"] == thrice and SHA in by_digest[0]["snippet"]
    assert [r["id"] for r in found(db, SHA[:10] + "*", "--in", "hits")] == hit_ids
    # A URL as pasted, and a column filter.
    assert [r["id"] for r in found(db, "https://board.example/t/p3")] == [thrice + 1]
    assert [r["id"] for r in found(db, "title:birds")] == [thrice + 1]
    assert found(db, "model-00001.safetensors", "--in", "documents") == []
    # The table marks the match.
    table = cli(db, "search", "grey").stdout
    assert "[grey]" in table and "birds" in table


def test_filters_scope_and_the_ranking_window(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = [post(store, f"p{n}", f"leaked weights number {n}", target=target)[0]
               for n, target in enumerate(["forum", "board", "forum", "board"])]
        _, hit_ids = post(store, "h", "nothing", hits=[hit(kind="mention", severity="low",
                                                           indicator="leaked weights")])
        store.db.execute("UPDATE documents SET last_seen = '2020-01-01T00:00:00+00:00' "
                         "WHERE id = ?", [ids[0]])
    assert documents(db, "leaked", "--target", "board") == {ids[1], ids[3]}
    assert documents(db, "leaked", "--since", "30d") == set(ids[1:])
    assert {r["kind"] for r in found(db, "leaked", "--in", "hits")} == {"hit"}
    assert [r["id"] for r in found(db, "leaked", "--in", "hits")] == hit_ids
    assert len(found(db, "leaked", "--limit", "2")) == 2
    # Past the window only the newest matches are ranked, and stderr says so.
    monkeypatch.setattr(search_module, "WINDOW", 2)
    out = cli(db, "search", "leaked", "--in", "documents", "--format", "json")
    assert {r["id"] for r in json.loads(out.stdout)} == {ids[3], ids[2]}
    assert "more than 2 documents match; only the newest 2 were ranked" in out.stderr


def test_the_index_follows_changed_and_deleted_rows(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        doc_id, _ = post(store, "p1", "first version mentions albatross")
        assert [r.id for r in search(store, "albatross").results] == [doc_id]
        again, _ = post(store, "p1", "edited: now it says cormorant")  # same key: an update
        assert again == doc_id
        assert search(store, "albatross").results == []
        assert [r.id for r in search(store, "cormorant").results] == [doc_id]
        # Seeing it again without a change re-indexes nothing and finds the same.
        store.touch_document("forum", "p1")
        assert [r.id for r in search(store, "cormorant").results] == [doc_id]
        other, hit_ids = post(store, "p2", "pelican", hits=[hit(indicator="pelican-2b")])
        store.db.execute("DELETE FROM outbox WHERE hit_id = ?", hit_ids)
        store.db.execute("DELETE FROM hits WHERE id = ?", hit_ids)
        store.db.execute("DELETE FROM documents WHERE id = ?", [other])
        assert search(store, "pelican").results == []
        for table in ("documents_fts", "hits_fts"):
            store.db.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")


def test_migration_indexes_a_database_that_already_had_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v10.db"
    # A weightwatch that knew ten migrations made this database and filled it.
    monkeypatch.setattr("monitor.store.MIGRATIONS", MIGRATIONS[:10])
    Store(path).close()
    monkeypatch.undo()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (10,)
    t = "2026-01-01T00:00:00+00:00"
    conn.execute("INSERT INTO documents (id, target, key, url, title, text, content_sha256, "
                 "fetched_at, first_seen, last_seen) VALUES (1, 'forum', 'k', "
                 "'https://board.example/t/1', 'old leak', 'the Héron-7B torrent', 'x', ?, ?, ?)",
                 [t, t, t])
    for n, severity in enumerate(["low", "critical"], start=1):
        conn.execute("INSERT INTO hits (id, dedup_key, kind, severity, indicator, detector, "
                     "target, url, document_id, first_seen, last_seen) VALUES (?, ?, 'hash', "
                     "?, ?, 'digests', 'forum', 'https://board.example/t/1', 1, ?, ?)",
                     [n, f"d{n}", severity, SHA if n == 2 else "heron-7b", t, t])
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        # Accents and case folded: the analyst types what they remember.
        assert [(r.kind, r.id) for r in search(store, "heron-7b", scope="documents").results] \
            == [("document", 1)]
        assert [r.id for r in search(store, SHA).results] == [2]
        assert [h["id"] for h in store.hits()] == [2, 1]  # worst first, via severity_level


def test_a_malformed_query_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        post(store, "p1", "heron-7b")
    for query, needle in (('"heron 7b', "unbalanced quote"),
                          ("(heron", "unbalanced parenthesis"),
                          ("heron)", "unbalanced parenthesis"),
                          ("heron AND", "syntax error at its end"),
                          ("heron - bird", "'-' is not a word"),
                          ("AND heron", "syntax error near"),
                          ("indicator:x title:y", "column filter indicator, title")):
        out = cli(db, "search", query, code=2)
        assert out.stdout == ""
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("weightwatch: search: "), out.stderr
        assert needle in lines[0], lines[0]
    out = cli(db, "search", "title:heron", "--in", "hits", code=2)
    assert "hits have artifact, context, indicator, model, recipient, url" in out.stderr


def test_query_rewriting_keeps_fts5_syntax_and_quotes_the_rest() -> None:
    assert parse_query('heron-7b OR "grey heron" NOT bird*').fts == \
        '"heron-7b" OR "grey heron" NOT bird*'
    assert parse_query("NEAR(heron weights, 5)").fts == "NEAR ( heron weights , 5 )"
    assert parse_query("url:https://x.example/a ^leak").fts == 'url : "https://x.example/a" ^leak'
    assert parse_query('"heron 7"* magnet:?xt=urn:btih:ab').fts == \
        '"heron 7"* "magnet:?xt=urn:btih:ab"'
    with pytest.raises(SearchError, match="empty query"):
        parse_query("   ")


def test_hostile_text_is_shown_inert_and_json_is_clean(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    evil = "heron-7b \x1b[31mred\x1b[0m \x1b]0;pwned\x07 \u202egnp.exe leaked"
    with Store(db) as store:
        post(store, "p1", evil, title="\x1b[2Jtitle", hits=[hit(kind="mention", severity="low",
                                                                indicator="heron-7b",
                                                                context=evil)])
    table = cli(db, "search", "leaked", color=True).stdout
    for raw in ("\x1b[31m", "\x1b]0;", "\x07", "\x1b[2J", "\u202e"):
        assert raw not in table
    assert "\\x1b[31m" in table and "\\u202e" in table
    out = cli(db, "search", "leaked", "--format", "json")
    results = json.loads(out.stdout)  # all of stdout is the JSON
    assert {r["kind"] for r in results} == {"document", "hit"}
    assert "\x1b" not in out.stdout  # escaped by JSON, never raw
    assert all("\x1b[31mred" in r["snippet"] and "\x02" not in r["snippet"] for r in results)
    assert out.stderr == ""
    rows = cli(db, "search", "leaked", "--format", "ndjson").stdout.splitlines()
    assert [json.loads(line)["kind"] for line in rows] == [r["kind"] for r in results]


# --- hits --sort and keyset pages -------------------------------------------------------


def sortable_hits(db: Path) -> list[dict]:
    """Ten hits with ties in every sort key, so only the id breaks some of them."""
    with Store(db) as store:
        for n in range(10):
            severity = ("critical", "high", "medium", "low")[n % 4]
            _, (hit_id,) = post(store, f"p{n}", "x", hits=[hit(
                indicator=f"{n:02x}" * 32, severity=severity, recipient="lab-17" if n % 3 else None)])
            store.db.execute(
                "UPDATE hits SET first_seen = ?, last_seen = ?, score = ? WHERE id = ?",
                [f"2026-0{1 + n % 3}-01T00:00:00+00:00", f"2026-09-{10 + n % 4}T00:00:00+00:00",
                 (0.5, 0.9, 0.9, 1.0)[n % 4], hit_id])
        return store.hits(limit=None)


def pages(db: Path, *args: str) -> list[list[int]]:
    out, cursor = [], None
    while True:
        result = cli(db, "hits", *args, "--limit", "4", "--format", "json",
                     *(["--after", cursor] if cursor else []))
        out.append([h["id"] for h in json.loads(result.stdout)])
        if "next page: --after " not in result.stderr:
            return out
        cursor = result.stderr.split("next page: --after ")[1].split()[0]


@pytest.mark.parametrize("sort", list(HIT_SORTS))
def test_every_sort_pages_through_every_hit_once_in_order(tmp_path: Path, sort: str) -> None:
    db = tmp_path / "w.db"
    rows = sortable_hits(db)
    level = {"critical": 4, "high": 3, "medium": 2, "low": 1}
    key = {"severity": lambda h: (level[h["severity"]], h["first_seen"], h["id"]),
           "newest": lambda h: (h["first_seen"], h["id"]),
           "oldest": lambda h: (h["first_seen"], h["id"]),
           "score": lambda h: (h["score"], h["first_seen"], h["id"]),
           "last-seen": lambda h: (h["last_seen"], h["id"])}[sort]
    expected = [h["id"] for h in sorted(rows, key=key, reverse=HIT_SORTS[sort].descending)]
    got = pages(db, "--sort", sort)
    assert [len(p) for p in got] == [4, 4, 2]
    assert [i for p in got for i in p] == expected
    # Filters and pages together: the lab's hits, each once, in the same order.
    lab = [h["id"] for h in rows if h["recipient"] == "lab-17"]
    assert [i for p in pages(db, "--sort", sort, "--recipient", "lab-17") for i in p] == \
        [i for i in expected if i in lab]


def test_default_order_is_unchanged_and_a_cursor_keeps_to_its_sort(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    sortable_hits(db)
    plain = cli(db, "hits", "--limit", "4", "--format", "json")
    explicit = cli(db, "hits", "--sort", "severity", "--limit", "4", "--format", "json")
    assert plain.stdout == explicit.stdout and plain.stderr == explicit.stderr
    severity_cursor = plain.stderr.split("--after ")[1].split()[0]
    assert severity_cursor[0].isdigit()  # rank:first_seen:id, as before --sort
    newest_cursor = cli(db, "hits", "--sort", "newest", "--limit", "4").stderr.split(
        "--after ")[1].split()[0]
    for args, cursor, made_for in ((("--sort", "newest"), severity_cursor, "severity"),
                                   ((), newest_cursor, "newest"),
                                   (("--sort", "score"), newest_cursor, "newest")):
        out = cli(db, "hits", *args, "--after", cursor, code=2)
        assert out.stdout == "" and len(out.stderr.splitlines()) == 1
        assert f"that cursor pages --sort {made_for}" in out.stderr
    for bogus in ("score:nan:2026-01-01T00:00:00+00:00:3", "9:2026-01-01:3", "newest:3",
                  "severity:0:2026-01-01:3"):
        sort = bogus.partition(":")[0] if not bogus[0].isdigit() else "severity"
        sort = sort if sort in HIT_SORTS else "severity"
        assert "not a hits cursor" in cli(db, "hits", "--sort", sort, "--after", bogus,
                                          code=2).stderr


def test_hits_text_finds_words_through_the_index(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        _, (digest_hit, name_hit) = post(store, "p1", "x", hits=[
            hit(indicator=SHA, context="file digest"),
            hit(kind="mention", severity="low", indicator="Heron-7B", context="the model")])
        post(store, "p2", "x", hits=[hit(kind="mention", severity="low", indicator="heron",
                                         context="a bird, 100% sure")])

    def ids(text: str) -> list[int]:
        return [h["id"] for h in json.loads(cli(db, "hits", "--text", text, "--format",
                                                "json").stdout)]

    assert ids("heron-7b") == [name_hit]
    assert ids(SHA[:12]) == [digest_hit]  # the start of a digest, as the table shows it
    assert ids("%") == [digest_hit + 2]  # no letters or digits: a plain substring
