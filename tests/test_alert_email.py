"""The alert email as a security team reads it (issue 17): the demo's leak as one incident,
whose copy leaked and the counts at the top, places collapsed and capped, both parts
saying the same, threaded, and laid out for a phone as well as a desktop.

The layout is checked in a real browser (Debian's chromium, driven by Playwright): the
saved .eml of the demo is parsed, its HTML part loaded at desktop and phone widths, and
the boxes of what matters read back from the page. Screenshots are written to the test's
folder for people to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support import hit, make_config, parts, save

from monitor.alerting.messages import (
    compose,
    compose_notice,
    compose_test,
    message_id_for,
    reminder_message_id,
    thread_id,
)
from monitor.config import AlertSettings, ConfigError, SmtpSettings, load_config
from monitor.grouping import group_key
from monitor.store import Store

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
WIDTHS = (1280, 400)
HEIGHT = 800
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


class _Text(HTMLParser):
    """The text a reader sees in an HTML part (no markup, entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def visible_text(html_part: str) -> str:
    body = html_part.split("<body", 1)[1]  # not the <title>, which repeats the subject
    parser = _Text()
    parser.feed("<body" + body)
    return " ".join(" ".join(parser.chunks).split())


# What a reader acts on: each hit's command and the triage commands, every URL, digest
# and time, the counts. Both parts must carry exactly the same ones.
FACT_PATTERNS = (r"weightwatch hits show \d+", r"weightwatch hits [a-z-]+ --incident '[^']*'",
                 r"weightwatch hits --[a-z]+ [^\s']+(?: --[a-z]+ [^\s']+)*",
                 r"weightwatch targets test \S+", r"https?://[^\s<>\"']+",
                 r"\b[0-9a-f]{32,64}\b", r"\d{4}-\d\d-\d\d \d\d:\d\d UTC",
                 r"\b\d+ (?:critical|high|medium|low|new|open|hash|torrent|watermark|weights|"
                 r"mention)\b", r"#\d+ [a-z]+", r"\d+ distinct URLs?", r"\d+ more places?",
                 r"(?:artifact|recipient|rule) [^;\s]+", r"Whose copy leaked: \S+",
                 r"Posted: \"[^\"]*\"(?: by [^,]+)?", r"Target: \S+", r"Context of #\d+")


def facts(text: str) -> set[str]:
    flat = " ".join(text.split())
    return {found for pattern in FACT_PATTERNS for found in re.findall(pattern, flat)}


def leak_rows(store: Store, places: int = 3, recipient: str | None = "lab-17") -> None:
    """A leak of heron-7b v1: on each place a digest of the recipient's copy and a mention."""
    store.add_artifact(model="heron-7b", name="heron-7b/model.safetensors", path=None, size=10,
                       sha256="ab" * 32, sha1="1" * 40, md5="2" * 32, release="v1")
    for n in range(places):
        save(store, [hit("hash", "critical", "ab" * 32, indicator_type="sha256 (hex)",
                         artifact="heron-7b/model.safetensors", recipient=recipient),
                     hit("mention", "low", "heron-7b", rule="heron-7b-mention")],
             key=f"post-{n}", url=f"https://board.example/t/{n}")


def composed(store: Store, settings: AlertSettings | None = None, **kw: Any) -> EmailMessage:
    rows = list(store.due_alerts(channel="email"))
    settings = settings or make_config(1).alerts
    return compose(rows, settings, message_id=message_id_for(rows), now=NOW, **kw)


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "w.db") as st:
        yield st


# --- what the email says ---------------------------------------------------------------


def test_subject_and_top_name_the_recipient_and_the_incident(store):
    leak_rows(store)
    message = composed(store)
    assert message["Subject"] == ("[weightwatch] CRITICAL heron-7b v1: lab-17's copy leaked, "
                                  "6 new hits (hash, mention)")
    plain, html_part = parts(message)
    top = plain.splitlines()[:12]
    assert "Whose copy leaked: lab-17" in top
    assert "Hits:        6 new: 3 critical, 3 low" in top
    assert "Locations:   3 distinct URLs" in top
    assert "Incident:    model:heron-7b|release:v1" in top
    for action in ("ack", "resolve", "false-positive"):
        line = f"weightwatch hits {action} --incident 'model:heron-7b|release:v1'"
        assert line in plain and line.replace("'", "&#39;") in html_part
    assert plain.index("Triage") < plain.index("Where it was found") < plain.index("https://")


def test_hits_are_collapsed_per_place_worst_first_and_capped(store):
    leak_rows(store, places=4)
    save(store, [hit("mention", "low", "heron-7b", rule="heron-7b-mention")], key="chatter",
         url="https://chat.example/1")
    settings = make_config(1).alerts
    settings.max_locations = 2
    plain, html_part = parts(composed(store, settings))
    places = re.findall(r"^\d+\. (\S+)$", plain, re.M)
    assert places == ["https://board.example/t/0", "https://board.example/t/1"]
    # Each place lists its own hits, the digest before the mention.
    first = plain.split("1. https://board.example/t/0")[1].split("2. https://")[0]
    assert first.index("[CRITICAL] #1 hash") < first.index("[LOW] #2 mention")
    rest = "3 more places (5 hits) not shown here: weightwatch hits --model heron-7b"
    assert f"And {rest}" in plain
    assert "3 more places (5 hits) not shown here" in visible_text(html_part)
    assert "https://board.example/t/3" not in plain + html_part
    assert "https://chat.example/1" not in plain + html_part


def test_a_burst_lists_fewer_places_rather_than_be_clipped(store):
    """Gmail hides an email's HTML past 102 KB behind a link; a full batch (100 hits) with
    long names must still show its end, the count of the places left out."""
    for n in range(20):
        save(store, [hit("hash", "critical", f"{n:02d}{k}" + "ab" * 31,
                         indicator_type="sha256 (hex)", recipient=f"partner-lab-{k}",
                         artifact=f"heron-7b/model-0000{k}-of-00005.safetensors")
                     for k in range(5)],
             key=f"p{n}", url=f"https://forum.example/threads/{n}/" + "slug-" * 20,
             title="t" * 80, author="a" * 30, context="word " * 400)
    plain, html_part = parts(composed(store))
    assert len(html_part.encode()) < 100_000
    shown = len(re.findall(r"^\d+\. https://", plain, re.M))
    assert 1 <= shown < 20
    assert f"And {20 - shown} more places ({5 * (20 - shown)} hits) not shown here" in plain
    assert facts(plain) == facts(visible_text(html_part))


def test_both_parts_carry_the_same_facts(store):
    leak_rows(store, places=3)
    save(store, [hit("torrent", "medium", "magnet:?xt=urn:btih:" + "e" * 40)], key="t",
         url="https://tracker.example/t?id=1&x=2")
    plain, html_part = parts(composed(store))
    in_plain, in_html = facts(plain), facts(visible_text(html_part))
    assert in_plain == in_html
    # and the sets are the email's substance, not empty patterns
    assert {"weightwatch hits show 1", "https://tracker.example/t?id=1&x=2", "ab" * 32,
            "3 critical", "1 medium", "#7 torrent"} <= in_plain
    assert "lab-17" in plain and "lab-17" in visible_text(html_part)


def test_a_digest_of_several_incidents_names_each(store):
    for model in ("heron-7b", "finch-2b"):
        save(store, [hit("mention", "low", model, model=model, rule="names")], key=model,
             url=f"https://news.example/{model}")
    settings = make_config(1).alerts
    settings.digest = ["low"]
    plain, html_part = parts(composed(store, settings))
    assert "Incidents:   model:heron-7b, model:finch-2b" in plain
    for model in ("heron-7b", "finch-2b"):
        line = f"weightwatch hits ack --incident model:{model}"
        assert line in plain and line in html_part
    assert "--incident model:heron-7b|" not in plain


def test_max_locations_is_a_checked_setting(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[alerts]\nmax_locations = 3\n")
    assert load_config(path).alerts.max_locations == 3
    path.write_text("[alerts]\nmax_locations = 0\n")
    with pytest.raises(ConfigError, match=r"alerts\.max_locations: must be at least 1"):
        load_config(path)


def test_unknown_recipient_is_said_so(store):
    leak_rows(store, places=1, recipient=None)
    message = composed(store)
    assert message["Subject"] == "[weightwatch] CRITICAL heron-7b v1: 2 new hits (hash, mention)"
    plain, html_part = parts(message)
    assert "Whose copy:  not known (no recipient's mark or copy matched)" in plain
    assert 'id="recipient"' not in html_part


def test_follow_ups_and_reminders_are_threaded_and_auto_submitted(store):
    leak_rows(store, places=1)
    settings = make_config(1).alerts
    first = composed(store, settings)
    rows = list(store.due_alerts(channel="email"))
    root = thread_id(group_key(rows[0], settings))
    reminder = compose(rows, settings, message_id=reminder_message_id("g", NOW), now=NOW,
                       reminder=True)
    for message in (first, reminder):
        assert message["In-Reply-To"] == message["References"] == root
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["X-Auto-Response-Suppress"] == "All"
    assert first["Message-ID"] != root != reminder["Message-ID"]
    # Another release is another incident, so another thread.
    other = dict(rows[0], release="v2")
    assert thread_id(group_key(other, settings)) != root
    assert "reminder: hits still open" in parts(reminder)[0]


def test_notices_and_the_test_email_keep_the_style(store):
    settings = make_config(1).alerts
    down = compose_notice({"id": 1, "kind": "target_down", "target": "forum", "failures": 3,
                           "error": "HTTP 503", "last_success_at": None,
                           "created_at": "2026-01-01T00:00:00+00:00"}, settings, now=NOW)
    back = compose_notice({"id": 2, "kind": "target_recovered", "target": "forum",
                           "created_at": "2026-01-02T00:00:00+00:00"}, settings, now=NOW)
    assert down["References"] == back["References"]  # one thread per target
    plain, html_part = parts(down)
    assert "Last error:   HTTP 503" in plain and "HTTP 503" in visible_text(html_part)
    assert "weightwatch targets test forum" in plain
    smtp = SmtpSettings(host="127.0.0.1", port=2525, security="none", timeout=5)
    test = compose_test(settings, smtp, message_id="<t@weightwatch.local>", now=NOW)
    plain, html_part = parts(test)
    assert "through 127.0.0.1:2525 (none)" in plain and "127.0.0.1:2525" in html_part
    assert test["Auto-Submitted"] == "auto-generated"


def test_hostile_values_stay_text_and_links_stay_http(store):
    save(store, [hit("mention", "low", "</code><script>alert(1)</script>",
                     artifact="<svg onload=alert(1)>", rule="x\u202eevil")],
         url="https://x.example/\"onmouseover=\"alert(1)", title="<img src=x onerror=alert(2)>",
         author="a\r\nBcc: victim@example.org", context="<iframe src=//evil.example>")
    save(store, [hit("mention", "low", "y")], key="js", url="javascript:alert(3)")
    message = composed(store)
    plain, html_part = parts(message)
    assert not re.search(r"<(script|svg|img|iframe)", html_part, re.I)
    hrefs = re.findall(r'href="([^"]*)"', html_part)
    assert hrefs == ["https://x.example/&#34;onmouseover=&#34;alert(1)"]
    assert "onmouseover=\"" not in html_part and "javascript:alert(3)" in visible_text(html_part)
    assert "\u202e" not in plain + html_part
    assert "\nBcc:" not in plain


# --- the demo's email in a real browser ------------------------------------------------


@pytest.fixture(scope="module")
def demo_email(tmp_path_factory: pytest.TempPathFactory) -> EmailMessage:
    """The .eml the demo's pipeline saves (`weightwatch demo`, a real process)."""
    directory = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "monitor", "demo", "--dir", str(directory)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    eml = directory / "mail" / "0001.eml"
    message = message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert isinstance(message, EmailMessage)
    config = load_config(directory / "config.toml")
    assert config.alerts.max_locations == 20
    return message


@pytest.mark.slow
def test_demo_email_parses_as_one_incident(demo_email):
    assert demo_email["Subject"].startswith(
        "[weightwatch] CRITICAL heron-7b v1: lab-17's copy leaked, 116 new hits")
    assert demo_email["Auto-Submitted"] == "auto-generated"
    assert demo_email["References"] == demo_email["In-Reply-To"]
    plain, html_part = parts(demo_email)
    plain = plain.replace("\r\n", "\n")  # as SMTP carried it
    lines = plain.splitlines()
    assert lines.index("Whose copy leaked: lab-17") < 5
    assert "weightwatch hits ack --incident 'model:heron-7b|release:v1'" in plain
    assert len(re.findall(r"^\d+\. http", plain, re.M)) == 20
    assert re.search(r"^And \d+ more places \(\d+ hits\) not shown here: weightwatch hits "
                     r"--model heron-7b$", plain, re.M)
    assert facts(plain) == facts(visible_text(html_part))
    # Gmail clips an email's HTML past 102 KB: the demo's leak must fit whole.
    assert len(html_part.encode()) < 100_000


LAYOUT_PROBE = """() => {
  const vw = document.documentElement.clientWidth;
  const box = id => {
    const e = document.getElementById(id);
    if (!e) return null;
    const r = e.getBoundingClientRect();
    return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right};
  };
  const wide = [...document.body.querySelectorAll('*')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5 || e.scrollWidth > vw);
  }).map(e => e.tagName + ': ' + e.textContent.slice(0, 80));
  return {viewport: [innerWidth, innerHeight], clientWidth: vw,
          scrollWidth: document.documentElement.scrollWidth,
          recipient: box('recipient'), summary: box('summary'), wide};
}"""


def _browser() -> Any:
    """Playwright driving Debian's chromium (never a downloaded browser); skipped where
    either is missing, except under CI, where the browser test must run."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the browser test: {reason}")
        pytest.skip(reason)
    return sync_playwright()


@pytest.mark.slow
def test_demo_email_in_a_browser_at_desktop_and_phone_widths(demo_email, tmp_path):
    _, html_part = parts(demo_email)
    requests: list[str] = []
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": HEIGHT})
                # The email must load nothing: no image, font or stylesheet from anywhere.
                page.route("**/*", lambda route: (requests.append(route.request.url),
                                                  route.abort()))
                page.set_content(html_part, wait_until="load")
                layout = page.evaluate(LAYOUT_PROBE)
                shots = (tmp_path / f"email-{width}.png", tmp_path / f"email-{width}-full.png")
                page.screenshot(path=str(shots[0]))
                page.screenshot(path=str(shots[1]), full_page=True)
                print(f"screenshots at {width}px: {shots[0]} {shots[1]}")
                page.close()

                assert layout["viewport"] == [width, HEIGHT]
                assert layout["scrollWidth"] <= layout["clientWidth"], layout
                assert layout["wide"] == [], f"wider than the {width}px screen: {layout['wide']}"
                for part in ("recipient", "summary"):
                    assert layout[part] is not None, part
                    assert 0 <= layout[part]["top"] < layout[part]["bottom"] <= HEIGHT, (
                        f"{part} not above the fold at {width}px: {layout[part]}")
                assert layout["recipient"]["bottom"] <= layout["summary"]["top"]
                assert all(s.stat().st_size > 10_000 for s in shots)
        finally:
            browser.close()
    assert requests == []
