"""Crawl CPU: a target's CSS selectors are compiled once, not once per page or per post."""

from __future__ import annotations

from support import target

from monitor import parsing
from monitor.sources.forum import ForumSource


def phpbb_page(topic: int, posts: int) -> bytes:
    rows = "".join(
        f'<div id="p{topic}{i}" class="post"><div class="postbody"><h3><a>Re: {i}</a></h3>'
        f'<p class="author"><a class="username">user{i}</a>'
        f'<time datetime="2026-11-0{1 + i % 9}T10:00:00+00:00">x</time></p>'
        f'<div class="content">post {i} <a href="/f/{i}">link</a></div></div></div>'
        for i in range(posts))
    return (f'<html><body><h1>t</h1>{rows}<a rel="next" href="?t={topic}&start=10">next</a>'
            f'</body></html>').encode()


def test_selectors_are_compiled_once_per_target_whatever_the_pages_and_posts(monkeypatch):
    compiled: list[str] = []
    real = parsing.Selector.__init__

    def counting(self, css):
        compiled.append(css)
        real(self, css)

    monkeypatch.setattr(parsing.Selector, "__init__", counting)
    source = ForumSource(target("forum", "http://127.0.0.1:1/f", preset="phpbb"), None, {})
    url = "http://127.0.0.1:1/viewtopic.php?t=1"
    first = source.parse_posts(phpbb_page(1, 10), url, "2026-11-20T00:00:00Z", None, url, True)
    assert [d.author for d in first.docs] == [f"user{i}" for i in range(10)]
    assert first.docs[3].links == ["http://127.0.0.1:1/f/3"]
    after_one_page = len(compiled)
    assert 0 < after_one_page == len(set(compiled))  # each selector once
    for topic in (2, 3):
        page = source.parse_posts(phpbb_page(topic, 10), url, "2026-11-20T00:00:00Z")
        assert len(page.docs) == 10 and page.next_url
    assert len(compiled) == after_one_page


def test_every_preset_and_shipped_selector_compiles_with_the_engine_that_runs_them():
    """cssselect (not soupsieve) runs the selectors now: every preset's and every one in
    the shipped config.toml must still compile, `::attr(...)` parts aside."""
    import tomllib
    from pathlib import Path

    from monitor.sources import ADAPTERS
    from monitor.sources.base import css_problem
    from monitor.sources.forum import split_attr

    shipped = tomllib.loads((Path(__file__).parents[1] / "config.toml").read_text())
    selectors = [css for t in shipped["targets"] for css in t.get("selectors", {}).values()]
    selectors += [css for adapter in ADAPTERS.values() for preset in adapter.presets.values()
                  for css in preset.values()]
    assert len(selectors) > 30
    for spec in selectors:
        css = split_attr(spec)[0]
        assert not css or css_problem(css) is None, spec


def test_soupsieve_only_syntax_is_refused_with_one_line_naming_the_target(tmp_path):
    import pytest

    from monitor.config import ConfigError, load_config

    path = tmp_path / "config.toml"
    path.write_text("""
[[targets]]
name = "board"
kind = "forum"
url = "https://forum.example.org/"
selectors = { post = 'div.post:-soup-contains("leak")', subject = "h3" }
""")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: targets[0] (board).selectors.post: invalid CSS selector "
        "'div.post:-soup-contains(\"leak\")': The pseudo-class :-soup-contains() is unknown"]
