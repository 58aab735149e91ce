"""Crawl CPU: a target's CSS selectors are compiled once, not once per page or per post."""

from __future__ import annotations

import soupsieve
from support import target

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
    real = soupsieve.compile

    def counting(pattern, *args, **kwargs):
        compiled.append(str(pattern))
        return real(pattern, *args, **kwargs)

    monkeypatch.setattr(soupsieve, "compile", counting)
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
