"""`weightwatch report` (issue 8): a self-contained HTML page for people away from the
terminal. Real SQLite files with hits made through the real store, and the page read
back as a browser would (BeautifulSoup) and as a strict XML parser would.

The page is judged on what its readers rely on: the chart says how many hits of each
severity were first seen in each day or hour (counted here independently of the code
under test), incidents come worst and newest first with the recipient whose copy leaked,
hostile crawled content stays text, nothing is fetched or run, and the file on disk is
either the whole new report or untouched.
"""

from __future__ import annotations

import os
import sqlite3
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from support import cli, hit, leak, save

from monitor.report import CSP, build_report
from monitor.store import Store

NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
WEEK_AGO = (NOW - timedelta(days=7)).isoformat()
XSS_URL = 'https://evil.example/"><img src=x onerror=alert(1)>'
QUOTE_URL = 'https://evil.example/x"onmouseover="alert(1)'
SCRIPT = "<script>alert(1)</script>"


def set_times(db: Path, times: dict[int, str]) -> None:
    """Move hits to when they were first (and last) seen: the store stamps them now."""
    with sqlite3.connect(db) as conn:
        conn.executemany("UPDATE hits SET first_seen = ?, last_seen = ? WHERE id = ?",
                         [(at, at, hit_id) for hit_id, at in times.items()])
    conn.close()


def seeded(db: Path) -> dict[str, list[int]]:
    """issue 8's leak (release v1 on four mirrors, v2 on a tracker, chatter) with lab-17's
    watermarked copy of v2, one v1 mirror dismissed, a hit from before the week, and a
    failing target; spread over the week before NOW."""
    ids = leak(db)
    with Store(db) as store:
        ids["mark"] = save(store, [hit(kind="watermark", indicator="mark of lab-17",
                                       recipient="lab-17",
                                       artifact="heron-7b-v2/model.safetensors")],
                           key="wm", url="https://hub.example/heron-q8.gguf")
        ids["old"] = save(store, [hit(kind="mention", severity="low", indicator="heron")],
                          key="old", url="https://board.example/old")
        store.triage([ids["v1"][3]], "false_positive", by="analyst-7")
        run = store.start_run("board")
        store.finish_run(run, status="failed", error="HTTP 503 from the board")
    set_times(db, {
        ids["v1"][0]: "2024-03-04T08:00:00+00:00", ids["v1"][1]: "2024-03-04T09:30:00+00:00",
        ids["v1"][2]: "2024-03-06T23:59:59+00:00", ids["v1"][3]: "2024-03-06T10:00:00+00:00",
        ids["v2"][0]: "2024-03-08T01:00:00+00:00", ids["mark"][0]: "2024-03-09T15:00:00+00:00",
        ids["chatter"][0]: "2024-03-09T16:00:00+00:00", ids["old"][0]: "2024-02-01T00:00:00+00:00"})
    return ids


def report(db: Path, since: str | None = WEEK_AGO, **kwargs) -> str:
    with Store(db) as store:
        return build_report(store, ["model", "release"], since, now=NOW, **kwargs).html


def parse(page: str) -> BeautifulSoup:
    """The page as a browser reads it, after checking it is well-formed XML too (every
    element closed, every attribute quoted), which a forgiving parser would not tell."""
    ET.fromstring(page.removeprefix("<!DOCTYPE html>\n"))
    return BeautifulSoup(page, "html.parser")


def expected_bars(db: Path, since: str, bucket_chars: int) -> Counter:
    """Hits per (severity, bucket) straight from the database, the bucket being the
    first `bucket_chars` characters of first_seen (10: the day, 13: the hour)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT severity, first_seen FROM hits WHERE first_seen >= ? "
                            "AND status != 'false_positive'", [since]).fetchall()
    conn.close()
    return Counter((severity, first_seen[:bucket_chars]) for severity, first_seen in rows)


def drawn_bars(soup: BeautifulSoup, bucket_chars: int) -> Counter:
    """What the chart draws, read back from its rects; checks on the way that each bar's
    height is its count on one scale, so the picture says what the numbers say."""
    bars: Counter = Counter()
    heights = []
    for series in soup.svg.find_all("g", class_="series"):
        for rect in series.find_all("rect"):
            n = int(rect["data-count"])
            bars[series["data-severity"], rect["data-bucket"][:bucket_chars]] += n
            heights.append(float(rect["height"]) / n)
    assert heights and max(heights) - min(heights) < 0.1
    return bars


def test_the_report_charts_a_week_by_day_and_lists_the_incidents(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    ids = seeded(db)
    soup = parse(report(db))
    assert soup.find("meta", attrs={"http-equiv": "Content-Security-Policy"})["content"] == CSP
    assert "default-src 'none'; style-src 'unsafe-inline'; img-src data:" in CSP

    # The chart: a series per severity found, a bar per day and severity with hits.
    svg = soup.svg
    assert svg["role"] == "img" and svg.title.string and "per day" in svg.desc.string
    assert [g["data-severity"] for g in svg.find_all("g", class_="series")] == [
        "critical", "high", "low"]
    assert drawn_bars(soup, 10) == expected_bars(db, WEEK_AGO, 10)
    assert drawn_bars(soup, 10)["critical", "2024-03-04"] == 2
    assert [t.get_text() for t in svg.find_all("text", class_="x-label")] == [
        f"Mar {day:02d}" for day in range(3, 11)]
    assert [t.get_text() for t in svg.find("g", class_="legend").find_all("text")] == [
        "critical (4)", "high (1)", "low (1)"]

    # The header: the dismissed mirror is counted by status, not as a hit.
    summary = soup.find(id="summary").get_text(" ", strip=True)
    assert "6 hits (and 1 dismissed as false positives) in 3 incidents" in summary
    assert "new 6 false positive 1" in summary
    assert str(db) in soup.header.get_text()

    # Incidents, worst and most recent first; lab-17's copy named where it cannot be missed.
    incidents = soup.find_all("section", class_="incident")
    assert [i.h3.code.get_text() for i in incidents] == [
        "model:heron-7b|release:v2", "model:heron-7b|release:v1", "model:heron-7b"]
    assert [i.find("th", string="Hits").find_next("td").get_text() for i in incidents] == [
        "2 (2 open)", "3 (3 open)", "1 (1 open)"]
    assert incidents[0].find(class_="recipient").strong.get_text() == "lab-17"
    assert incidents[1].find(class_="recipient") is None
    assert f"weightwatch hits show {ids['mark'][0]}" in incidents[0].get_text()
    assert f"weightwatch hits show {ids['v1'][0]}" in incidents[1].get_text()
    assert [a["href"] for a in incidents[1].find_all("a")] == [
        f"https://mirror{n}.example/v1" for n in range(3)]

    # The failing target, and the footnote.
    assert "board" in soup.find(id="targets").get_text() and "HTTP 503" in str(soup)
    assert "How to read this" in soup.find(id="how-to-read").get_text()

    # Fewer incidents on request; closed hits counted when asked.
    top = parse(report(db, top=1, include_closed=True))
    (shown,) = top.find_all("section", class_="incident")
    assert "1 of 3 incidents" in top.find(id="incidents").get_text()
    assert shown.find("th", string="Hits").find_next("td").get_text() == "2 (2 open)"
    everything = parse(report(db, since=None, include_closed=True))
    v1 = everything.find_all("section", class_="incident")[1]
    assert v1.find("th", string="Hits").find_next("td").get_text() == \
        "4 (3 open, 1 false positive)"
    assert "all time" in everything.header.get_text()


def test_a_day_is_charted_by_the_hour(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = [i for n, severity in enumerate(("critical", "high", "critical", "medium"))
               for i in save(store, [hit(severity=severity, indicator=f"{n:02d}" * 32)],
                             key=f"p{n}", url=f"https://board.example/{n}")]
    set_times(db, dict(zip(ids, ["2024-03-10T11:30:00+00:00", "2024-03-10T09:50:00+00:00",
                                 "2024-03-10T09:10:00+00:00", "2024-03-09T13:00:00+00:00"])))
    since = (NOW - timedelta(days=1)).isoformat()
    soup = parse(report(db, since=since))
    assert "per hour" in soup.svg.desc.string
    assert drawn_bars(soup, 13) == expected_bars(db, since, 13)
    assert drawn_bars(soup, 13)["critical", "2024-03-10T09"] == 1


def test_hostile_content_stays_text(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = [*save(store, [hit(indicator=SCRIPT, model=SCRIPT, recipient=XSS_URL)], key="a",
                     url=XSS_URL),
               *save(store, [hit(kind="mention", severity="low", indicator="x")], key="b",
                     url="javascript:alert(1)"),
               *save(store, [hit(kind="mention", severity="low", indicator="y")], key="c",
                     url=QUOTE_URL)]
        run = store.start_run(SCRIPT)
        store.finish_run(run, status="failed", error=f"{SCRIPT} {XSS_URL}")
    set_times(db, dict.fromkeys(ids, "2024-03-09T00:00:00+00:00"))
    page = report(db)
    soup = parse(page)
    assert "<script" not in page.lower()
    assert not soup.find_all(["script", "img", "image", "iframe", "object", "embed", "link",
                              "base", "form", "foreignobject", "use"])
    assert all(m.parent.name == "head" for m in soup.find_all("meta"))
    for tag in soup.find_all(True):
        assert not [a for a in tag.attrs if a.lower().startswith("on")], tag
        assert "src" not in tag.attrs and "xlink:href" not in tag.attrs, tag
    # The only references are the evidence links, to http(s) URLs, sending no referrer.
    links = soup.find_all(href=True)
    assert [a["href"] for a in links] == [QUOTE_URL]
    assert all(a.name == "a" and set(a.attrs) == {"href", "rel"} and
               "noreferrer" in a["rel"] for a in links)
    styles = " ".join([soup.style.string, *(t["style"] for t in soup.find_all(style=True))])
    assert "@import" not in styles and "url(" not in styles
    # ...and the hostile values are all there to read, as text.
    text = soup.get_text()
    for value in (SCRIPT, XSS_URL, "javascript:alert(1)", QUOTE_URL):
        assert value in text


def test_the_command_writes_the_period_asked_for(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        ids = [i for n in range(3) for i in save(
            store, [hit(indicator=f"{n:02d}" * 32)], key=f"p{n}", url=f"https://m{n}.example/")]
    now = datetime.now(UTC)
    set_times(db, {hit_id: (now - timedelta(days=days)).isoformat(timespec="seconds")
                   for hit_id, days in zip(ids, (1, 3, 10))})
    out = tmp_path / "report.html"
    result = cli(db, "report", "--out", str(out))
    assert result.stderr.strip() == f"report: 2 hits, 1 incident written to {out}"
    assert drawn_bars(parse(out.read_text()), 0) == Counter({("critical", ""): 2})
    assert "report: 1 hit, 1 incident" in cli(db, "report", "--since", "2d", "--out", str(out)).stderr
    assert "report: 2 hits" in cli(db, "report", "--since", "30d", "--until", "2d",
                                   "--out", str(out)).stderr
    shown = parse(out.read_text()).find(id="incidents").get_text()
    assert "https://m0.example/" not in shown and "https://m2.example/" in shown
    assert "--since" in cli(db, "report", "--since", "soon", "--out", str(out), code=2).stderr
    assert "--until" in cli(db, "report", "--since", "1d", "--until", "2d", "--out", str(out),
                            code=2).stderr


def test_an_empty_period_is_a_clear_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = cli(tmp_path / "w.db", "report", "--out", str(out))
    assert "report: 0 hits, 0 incidents" in result.stderr
    soup = parse(out.read_text())
    assert soup.find(id="summary").find(class_="empty").get_text() == "No hits in this period."
    assert soup.svg is None
    assert "No open incidents in this period." in soup.find(id="incidents").get_text()


def test_the_file_is_never_written_through_a_link_or_in_part(tmp_path: Path,
                                                            monkeypatch) -> None:
    db = tmp_path / "w.db"
    leak(db)
    elsewhere = tmp_path / "elsewhere.html"
    link = tmp_path / "link.html"
    os.symlink(elsewhere, link)
    assert "symbolic link" in cli(db, "report", "--out", str(link), code=1).stderr
    assert not elsewhere.exists() and link.is_symlink()
    elsewhere.write_text("someone else's file")
    cli(db, "report", "--out", str(link), code=1)
    assert elsewhere.read_text() == "someone else's file"

    out = tmp_path / "report.html"
    out.write_text("last week's report")

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    failed = cli(db, "report", "--out", str(out), code=1)
    assert failed.stderr.count("\n") == 1 and "No space left on device" in failed.stderr
    assert out.read_text() == "last week's report"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    monkeypatch.undo()
    missing = cli(db, "report", "--out", str(tmp_path / "no-such-dir" / "r.html"), code=1)
    assert "cannot write" in missing.stderr
    cli(db, "report", "--out", str(out))
    assert "<svg" in out.read_text()


@pytest.mark.parametrize("days, per", [(1, "hour"), (2, "hour"), (30, "day"), (365, "week")])
def test_the_bucket_follows_the_period(tmp_path: Path, days: int, per: str) -> None:
    db = tmp_path / "w.db"
    with Store(db) as store:
        (hit_id,) = save(store, [hit()])
    set_times(db, {hit_id: (NOW - timedelta(hours=1)).isoformat()})
    soup = parse(report(db, since=(NOW - timedelta(days=days)).isoformat()))
    assert f"per {per}" in soup.svg.desc.string
    assert sum(drawn_bars(soup, 0).values()) == 1
