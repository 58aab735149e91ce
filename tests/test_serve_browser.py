"""`weightwatch serve` as an analyst sees it: a real headless Chromium (Debian's, driven by
Playwright; no browser is downloaded) over a real `weightwatch serve` process on loopback,
at a desktop and a phone width. What is asserted comes from the page's layout (element
boxes, what is rendered), and the screenshots are written to the test's tmp folder.

Without Chromium the tests skip, saying so, except under CI (`CI` set), where they fail.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("datasette", reason="weightwatch serve needs the ui extra")
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="the browser tests need playwright (test extra)")

from test_serve import HOSTILE, SHA, Server, seed, start  # noqa: E402

from monitor.serve import DATABASE, INTERNAL_COLUMNS  # noqa: E402

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
WIDTHS = (1280, 400)
HEIGHT = 800
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI is set but Chromium is missing ({CHROMIUM}): the UI tests "
                           "need it (apt-get install chromium)")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, int]]]:
    tmp = tmp_path_factory.mktemp("serve-browser")
    db = tmp / "weightwatch.db"
    ids = seed(db)
    server = start(tmp, db)
    try:
        yield server, ids
    finally:
        server.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as p:
        # A persistent context: its profile (--user-data-dir) is the test's own folder.
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": WIDTHS[0], "height": HEIGHT})
        try:
            yield context
        finally:
            context.close()


def loopback_only(route: Any) -> None:
    """Nothing the page asks for may leave loopback."""
    host = httpx.URL(route.request.url).host
    if host in ("127.0.0.1", "localhost", "::1"):
        route.continue_()
    else:
        route.abort()


def visit(browser: Any, url: str, width: int, shot: Path) -> Any:
    page = browser.new_page()
    page.route("**/*", loopback_only)
    page.set_viewport_size({"width": width, "height": HEIGHT})
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    page.screenshot(path=str(shot), full_page=False)
    print(f"screenshot: {shot}")
    return page


def check_layout(page: Any, width: int) -> None:
    """What every hits page must give at this width."""
    # The first hit's context is on screen without scrolling.
    box = page.locator(".ww-hit .ww-context").first.bounding_box()
    assert box is not None and box["height"] > 0
    assert box["y"] + min(box["height"], 40) <= HEIGHT, (width, box)
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
    # Nothing runs off the side: no sideways scrolling of the page.
    assert page.evaluate("document.scrollingElement.scrollWidth") <= width, width
    # Internal columns are not shown, as a column or in a card.
    for column in INTERNAL_COLUMNS:
        assert page.locator(f'[data-column="{column}"], .col-{column}').count() == 0, column
        assert column not in page.locator(".ww-hits").inner_text(), column
    # Column descriptions are folded: present, closed, not laid out.
    folded = page.locator("details.ww-columns")
    assert folded.count() == 1 and folded.get_attribute("open") is None
    assert not page.locator("details.ww-columns dl").is_visible()
    assert page.locator("dl.column-descriptions").count() == 0


def check_links(page: Any, served: Server) -> None:
    """The document link opens the hit's document, and every CSV link answers CSV."""
    card = page.locator(".ww-hit").first
    href = card.locator("a.ww-document").get_attribute("href")
    assert href and href.startswith(f"/{DATABASE}/documents/")
    seen_at = card.locator(".ww-url").inner_text().strip()
    with httpx.Client(base_url=served.url, timeout=10) as http:
        document = http.get(href)
        # The document the hit was found in: it was read at the hit's URL.
        assert document.status_code == 200 and seen_at in document.text, (href, seen_at)
        links = page.eval_on_selector_all(
            'a[href*=".csv"], form[action*=".csv"]',
            "els => els.map(e => e.getAttribute('href') || e.getAttribute('action'))")
        for link in links:
            answer = http.get(link)
            assert answer.status_code == 200, (link, answer.status_code, answer.text[:200])
            assert "id" in next(csv.reader(io.StringIO(answer.text))), link


@pytest.mark.parametrize("width", WIDTHS)
def test_the_hits_page_shows_each_hit_as_a_card(browser, served, tmp_path, width):
    server, ids = served
    page = visit(browser, f"{server.url}{DATABASE}/hits", width, tmp_path / f"hits-{width}.png")
    try:
        check_layout(page, width)
        check_links(page, server)
        cards = page.locator(".ww-hit")
        assert [int(cards.nth(i).get_attribute("data-hit-id") or 0)
                for i in range(cards.count())] == [ids["high"], ids["critical"], ids["low"]]
        critical = page.locator(f'.ww-hit[data-hit-id="{ids["critical"]}"]')
        text = critical.inner_text()
        # Whose copy, the context (crawled markup as text) and the hit's command.
        assert "lab-17" in text and HOSTILE in text and SHA in text
        assert f"weightwatch hits show {ids['critical']}" in text
        assert page.locator(".ww-context script").count() == 0
        # A CSV link is there to check (Datasette's export links), so the check is real.
        assert page.locator('a[href*=".csv"]').count() >= 1
    finally:
        page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_a_hit_page_shows_the_hit_as_a_card_with_its_evidence(browser, served, tmp_path, width):
    server, ids = served
    hit_id = ids["critical"]
    page = visit(browser, f"{server.url}{DATABASE}/hits/{hit_id}", width,
                 tmp_path / f"hit-{width}.png")
    try:
        check_layout(page, width)
        check_links(page, server)
        text = page.locator(".ww-hit").inner_text()
        assert "Whose copy: lab-17" in text and "indicator:1" in text
        triage = page.locator(".ww-hit a", has_text="Triage history").get_attribute("href")
        assert triage == f"/{DATABASE}/triage?hit_id={hit_id}"
    finally:
        page.close()
