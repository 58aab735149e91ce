"""Discourse, Reddit, Hacker News (Algolia) and Lemmy adapters over real HTTP on loopback.

The demo world's imitations are the good case: documents and their fields, pagination and
post batches (checked on content only reachable through a later page or batch), cursors
(a second run fetches the lists and yields nothing) and an end-to-end crawl whose hits are
exactly what the world planted. A Canned server (tests/support.py) serves broken and
hostile payloads; those must end in one-line SourceError / FetchError messages, or be
skipped, never a traceback from json or bs4.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from support import (
    Corner,
    Request,
    by_key,
    crawl,
    expected,
    fails,
    found,
    registered_store,
    run,
    site_of,
    target,
)

from demo.release import Release
from demo.sites.discourse import DiscourseSite
from demo.sites.hackernews import HackerNewsSite
from demo.sites.lemmy import LemmySite
from demo.sites.reddit import RedditSite
from demo.world import DemoWorld
from monitor.config import ConfigError, Target, parse_config
from monitor.models import Document
from monitor.sources import ADAPTERS

MEGATHREAD = 1391  # 45 posts: first chunk 1-20, batches 21-40 and 41-45; 45 is a small action
MAGNET_POST = 43  # the release magnet, only in the second posts.json batch
LEAK_TALK = 1437
PARTNER_TOPIC = 1362  # md5sum of config.json; only on page 2 of latest.json
SHA_TITLE = "Heron-7B weights are circulating, sha256 of model.safetensors inside"
HN_SHA1_COMMENT = "46201133"
HN_NEAR_COMMENT = "46201090"
HN_LEAK_STORY = "46201001"
HN_OLDEST = "46185571"
LEMMY_MAGNET_POST = "90301"
JSON = "application/json"


# ------------------------------------------------------------------------------ helpers


def config_problems(table: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"targets": [table]}, Path("config.toml"))
    return info.value.problems


# ------------------------------------------------------------------------------ demo targets


@pytest.fixture(scope="module")
def discourse_target(demo_world: DemoWorld) -> Target:
    return target("discourse", f"{demo_world.base_url}/discourse")


@pytest.fixture(scope="module")
def reddit_target(demo_world: DemoWorld) -> Target:
    return target("reddit", f"{demo_world.base_url}/reddit/r/LocalLLaMA/new.json")


@pytest.fixture(scope="module")
def hn_target(demo_world: DemoWorld) -> Target:
    return target("hackernews", f"{demo_world.base_url}/hn/api/v1/search_by_date", query="heron",
                  document_url=f"{demo_world.base_url}/hn/item?id={{id}}")


@pytest.fixture(scope="module")
def lemmy_target(demo_world: DemoWorld) -> Target:
    return target("lemmy", f"{demo_world.base_url}/lemmy/api/v3/post/list?"
                           "community_name=localllama&sort=New")


@pytest.fixture(scope="module")
def discourse_run(discourse_target: Target) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(discourse_target)


@pytest.fixture(scope="module")
def reddit_run(reddit_target: Target) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(reddit_target)


@pytest.fixture(scope="module")
def hn_run(hn_target: Target) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(hn_target)


@pytest.fixture(scope="module")
def lemmy_run(lemmy_target: Target) -> tuple[list[Document], dict[str, Any], list[str]]:
    return run(lemmy_target)


# ============================================================================== Discourse


def test_discourse_posts_are_documents_at_their_permalinks(
        discourse_run: tuple[list[Document], dict[str, Any], list[str]],
        demo_world: DemoWorld) -> None:
    docs = by_key(discourse_run[0])
    root = f"{demo_world.base_url}/discourse"
    world_urls = {d.url for d in site_of(demo_world, DiscourseSite).documents()}
    assert {d.url for d in docs.values()} == world_urls
    first = docs[f"{LEAK_TALK}#1"]
    assert first.url == f"{root}/t/heron-7b-leak-what-do-we-actually-know/{LEAK_TALK}/1"
    assert first.title == "heron-7b leak: what do we actually know?"
    assert first.author == "quant_quentin"
    assert first.posted_at == "2026-11-20T09:30:00+00:00"
    assert first.extras["topic"] == {"id": LEAK_TALK, "title": first.title}
    assert isinstance(first.extras["post_id"], int)
    reply = docs[f"{LEAK_TALK}#2"]
    assert reply.title == ""  # the topic title is on the first post only
    assert "pickle" in reply.text and "<" not in reply.text
    assert reply.snapshot.startswith(b"{") and reply.snapshot_url.endswith(f"/t/{LEAK_TALK}.json")


def test_discourse_cooked_html_becomes_text_and_links(
        discourse_run: tuple[list[Document], dict[str, Any], list[str]],
        demo_world: DemoWorld, demo_release: Release) -> None:
    docs = by_key(discourse_run[0])
    root = f"{demo_world.base_url}/discourse"
    partner = docs[f"{PARTNER_TOPIC}#3"]
    md5 = demo_release.file("config.json").md5
    # The code block keeps its lines (spaces collapse), so the checksum stays on its line.
    assert f"{md5} heron-7b/config.json" in partner.text.splitlines()
    assert "$ md5sum heron-7b/config.json" in partner.text.splitlines()
    # @mentions are links to the user's page, made absolute; external links are kept.
    with_mention = next(d for d in docs.values() if d.key.startswith(f"{MEGATHREAD}#")
                        and "@" in d.text)
    assert any(link.startswith(f"{root}/u/") for link in with_mention.links)
    opening = docs[f"{MEGATHREAD}#1"]
    assert opening.links == ["https://localml.example/t/"
                             "post-your-local-inference-setup-october-2026/1288"]


def test_discourse_batches_reach_posts_beyond_the_first_chunk(
        discourse_run: tuple[list[Document], dict[str, Any], list[str]],
        demo_world: DemoWorld, demo_release: Release) -> None:
    docs, _, urls = discourse_run
    keys = by_key(docs)
    thread = [k for k in keys if k.startswith(f"{MEGATHREAD}#")]
    # 45 posts; the last is a small action (the topic was closed), which has no text.
    assert sorted(thread, key=lambda k: int(k.split("#")[1])) == \
        [f"{MEGATHREAD}#{n}" for n in range(1, 45)]
    magnet_post = keys[f"{MEGATHREAD}#{MAGNET_POST}"]
    assert demo_release.magnet in magnet_post.text
    assert "/posts.json?" in magnet_post.snapshot_url
    # The topic's own JSON does not carry it: only a batch does.
    topic_json = httpx.get(f"{demo_world.base_url}/discourse/t/{MEGATHREAD}.json").json()
    assert len(topic_json["post_stream"]["posts"]) == 20
    assert demo_release.infohash not in json.dumps(topic_json["post_stream"]["posts"])
    batches = [parse_qs(urlsplit(u).query)["post_ids[]"] for u in urls
               if f"/t/{MEGATHREAD}/posts.json" in u]
    assert [len(b) for b in batches] == [20, 5]
    stream = topic_json["post_stream"]["stream"]
    assert [int(i) for b in batches for i in b] == stream[20:]


def test_discourse_follows_more_topics_url_up_to_max_pages(
        discourse_run: tuple[list[Document], dict[str, Any], list[str]],
        discourse_target: Target, demo_world: DemoWorld) -> None:
    docs, _, urls = discourse_run
    assert f"{PARTNER_TOPIC}#3" in by_key(docs)
    # more_topics_url is "/discourse/latest?page=1": the JSON twin is asked for.
    assert f"{demo_world.base_url}/discourse/latest.json?page=1" in urls
    one_page = Target(**{**discourse_target.__dict__, "max_pages": 1})
    docs1, _, urls1 = run(one_page)
    assert not any(d.key.startswith(f"{PARTNER_TOPIC}#") for d in docs1)
    assert [u for u in urls1 if "latest" in u] == [f"{demo_world.base_url}/discourse/latest.json"]


def test_discourse_cursor_refetches_only_topics_that_moved(
        discourse_run: tuple[list[Document], dict[str, Any], list[str]],
        discourse_target: Target) -> None:
    _, cursor, _ = discourse_run
    docs, again, urls = run(discourse_target, cursor)
    assert docs == [] and again == cursor
    assert all("latest.json" in u for u in urls)  # the lists only, no topic

    # The megathread gains posts: its signature moves, and only ids above the highest
    # one read are fetched, in one batch.
    moved = json.loads(json.dumps(cursor))
    entry = moved["topics"][str(MEGATHREAD)]
    topic_json = httpx.get(discourse_target.url + f"/t/{MEGATHREAD}.json").json()
    entry[1] -= 5  # posts_count
    entry[3] = topic_json["post_stream"]["stream"][39]  # as if posts 41-45 were new
    docs, after, urls = run(discourse_target, moved)
    keys = sorted(int(d.key.split("#")[1]) for d in docs)
    assert {d.key.split("#")[0] for d in docs} == {str(MEGATHREAD)}
    assert keys == list(range(1, 21)) + [41, 42, 43, 44]  # the free first chunk + new ones
    assert len([u for u in urls if "/posts.json" in u]) == 1
    assert after == cursor


def test_discourse_max_items_caps_topics_and_the_rest_come_next_run(
        discourse_target: Target) -> None:
    capped = Target(**{**discourse_target.__dict__, "max_items": 2})
    docs, cursor, _ = run(capped)
    # The two most recently bumped topics.
    assert {d.key.split("#")[0] for d in docs} == {str(LEAK_TALK), str(MEGATHREAD)}
    docs2, _, _ = run(capped, cursor)
    assert {d.key.split("#")[0] for d in docs2}.isdisjoint({str(LEAK_TALK), str(MEGATHREAD)})
    assert len({d.key.split("#")[0] for d in docs2}) == 2


def test_discourse_root_may_be_given_as_the_latest_url(discourse_target: Target,
                                                       demo_world: DemoWorld) -> None:
    t = Target(**{**discourse_target.__dict__, "url": f"{demo_world.base_url}/discourse/latest.json",
                  "max_items": 1})
    docs, _, _ = run(t)
    assert docs and docs[0].url.startswith(f"{demo_world.base_url}/discourse/t/")


def test_discourse_latest_that_is_not_json(corner: Corner) -> None:
    corner.serve("/latest.json", "<html><title>Just a moment...</title></html>")
    fails(target("discourse", corner.url()), "latest.json", "not valid JSON")


def test_discourse_latest_with_the_wrong_shape(corner: Corner) -> None:
    corner.serve("/latest.json", {"errors": ["You need to be logged in"],
                                  "error_type": "not_logged_in"})
    fails(target("discourse", corner.url()), "latest.json", "topic_list.topics")


def test_discourse_truncated_and_deep_json(corner: Corner) -> None:
    corner.serve("/latest.json", b'{"topic_list": {"topics": [{"id": 1, "ti', ctype=JSON)
    fails(target("discourse", corner.url()), "not valid JSON")
    corner.serve("/latest.json", b"[" * 100_000, ctype=JSON)
    fails(target("discourse", corner.url()), "latest.json")


def test_discourse_topic_without_post_stream(corner: Corner) -> None:
    corner.serve("/latest.json", {"topic_list": {"topics": [{"id": 5, "slug": "x"}]}})
    corner.serve("/t/5.json", {"errors": ["The requested URL or resource could not be found."]})
    fails(target("discourse", corner.url()), "t/5.json", "post_stream.posts")


def test_discourse_odd_fields_are_skipped_or_tolerated(corner: Corner) -> None:
    corner.serve("/latest.json", {"topic_list": {"topics": [
        {"id": "5"}, {"id": True}, None, "junk", {"title": "no id"}, {"id": -3},
        {"id": 6, "slug": None, "title": 7, "posts_count": "many", "bumped_at": 12},
    ]}})
    corner.serve("/t/6.json", {"slug": "a/b c", "title": "Odd", "post_stream": {
        "stream": [1, "2", None, 3, 3, True, 4],
        "posts": [
            {"id": 1, "post_number": 1, "cooked": "<p>hello <b>heron-7b</b></p>",
                "username": "alice", "created_at": "2026-11-20T09:00:00.123Z"},
            {"id": 2, "cooked": "no post number"},
            "not a post",
            {"id": 3, "post_number": 2, "cooked": ["a list"], "username": None,
                "created_at": "yesterday"},
        ]}})
    corner.serve("/t/6/posts.json", {"post_stream": {"posts": [
        {"id": 4, "post_number": 3, "cooked": "<p>late</p>", "created_at": "2026-11-20T10:00:00+02:00"},
        {"id": 4, "post_number": "3"}]}})
    docs = by_key(run(target("discourse", corner.url()))[0])
    assert sorted(docs) == ["6#1", "6#2", "6#3"]
    assert docs["6#1"].text == "hello heron-7b" and docs["6#1"].author == "alice"
    assert docs["6#1"].posted_at == "2026-11-20T09:00:00+00:00"
    assert docs["6#1"].url == corner.url("/t/a%2Fb%20c/6/1")  # a hostile slug stays one segment
    assert docs["6#2"].text == "" and docs["6#2"].author == "" and docs["6#2"].posted_at is None
    assert docs["6#3"].posted_at == "2026-11-20T08:00:00+00:00"


def test_discourse_topic_that_fails_is_skipped_and_retried(corner: Corner) -> None:
    corner.serve("/latest.json", {"topic_list": {"topics": [
        {"id": 1, "slug": "gone", "posts_count": 1, "bumped_at": "2026-11-20T10:00:00Z"},
        {"id": 2, "slug": "here", "posts_count": 1, "bumped_at": "2026-11-20T09:00:00Z"}]}})
    corner.serve("/t/1.json", {"errors": ["not found"]}, status=404)
    corner.serve("/t/2.json", {"post_stream": {"posts": [{"id": 9, "post_number": 1,
                                                          "cooked": "<p>ok</p>"}],
                                               "stream": [9]}})
    docs, cursor, _ = run(target("discourse", corner.url()))
    assert [d.key for d in docs] == ["2#1"]
    assert sorted(cursor["topics"]) == ["2"]  # topic 1 is tried again next run


def test_discourse_failed_batch_leaves_the_topic_to_retry(corner: Corner) -> None:
    corner.serve("/latest.json", {"topic_list": {"topics": [{"id": 3, "posts_count": 2}]}})
    corner.serve("/t/3.json", {"post_stream": {"posts": [{"id": 1, "post_number": 1,
                                                          "cooked": "<p>op</p>"}],
                                               "stream": [1, 2]}})
    corner.serve("/t/3/posts.json", "<h1>502 Bad Gateway</h1>", status=502)
    docs, cursor, _ = run(target("discourse", corner.url()))
    assert [d.key for d in docs] == ["3#1"]
    assert cursor == {"topics": {}}


def test_discourse_more_topics_url_elsewhere_or_looping_is_not_followed(corner: Corner) -> None:
    corner.serve("/latest.json", {"topic_list": {"topics": [],
                                                 "more_topics_url": "http://169.254.169.254/latest?page=1"}})
    run(target("discourse", corner.url()))
    corner.serve("/latest.json", {"topic_list": {"topics": [],
                                                 "more_topics_url": f"{corner.prefix}/latest"}})
    run(target("discourse", corner.url(), max_pages=50))
    assert len(corner.requests) == 2 + 0  # one per run: the loop back to page 0 is not taken


# ============================================================================== Reddit


def test_reddit_posts_are_documents_at_their_permalinks(
        reddit_run: tuple[list[Document], dict[str, Any], list[str]],
        demo_world: DemoWorld) -> None:
    docs, _, urls = reddit_run
    site = site_of(demo_world, RedditSite)
    assert [d.url for d in docs] == [d.url for d in site.documents()]  # newest first
    assert urls == [f"{demo_world.base_url}/reddit/r/LocalLLaMA/new.json?limit=100&raw_json=1"]
    sha_post = next(d for d in docs if d.title == SHA_TITLE)
    post = next(p for p in site.posts if p.title == SHA_TITLE)
    assert sha_post.key == f"t3_{post.id}"
    assert sha_post.url == f"{demo_world.base_url}/reddit/r/LocalLLaMA/comments/{post.id}/" \
                           "heron7b_weights_are_circulating_sha256_of/"
    assert sha_post.author == "leakwatch_lena"
    assert sha_post.posted_at == "2026-11-20T07:12:00+00:00"
    assert sha_post.text == post.selftext  # Markdown, as written
    assert sha_post.links == []  # a self post's own URL is the document, not a link
    assert sha_post.extras == {"subreddit": "LocalLLaMA"}
    statement = next(d for d in docs if "Example Labs statement" in d.title)
    assert statement.links == ["https://example.org/blog/heron-7b-statement"]
    bench = next(d for d in docs if d.title.startswith("Benchmarked 14 quants"))
    assert bench.links == ["https://example.com/mistral-quants"]
    crosspost = next(d for d in docs if "great blue heron" in d.title.lower())
    assert crosspost.links[0].startswith(f"{demo_world.base_url}/reddit/r/birding/comments/")
    # raw_json=1: no legacy &amp; escaping in text fields.
    assert any(d.title == "Local models general discussion & Q&A thread, Nov 20" for d in docs)


def test_reddit_pages_follow_after_up_to_max_pages(reddit_target: Target) -> None:
    small = Target(**{**reddit_target.__dict__, "url": reddit_target.url + "?limit=10"})
    docs, _, urls = run(small)
    assert len(docs) == 24 and len(urls) == 3
    assert "after=t3_" in urls[1] and "limit=10" in urls[1]
    assert any(d.title == SHA_TITLE for d in docs)  # 14th newest: page 2
    first_page, _, _ = run(Target(**{**small.__dict__, "max_pages": 1}))
    assert len(first_page) == 10 and not any(d.title == SHA_TITLE for d in first_page)


def test_reddit_cursor_stops_at_the_newest_post_seen(
        reddit_run: tuple[list[Document], dict[str, Any], list[str]],
        reddit_target: Target) -> None:
    docs, cursor, _ = reddit_run
    assert cursor["newest_utc"] == 1795180800.0 and cursor["names"] == [docs[0].key]
    again, cursor2, urls = run(reddit_target, cursor)
    assert again == [] and cursor2 == cursor and len(urls) == 1
    # As if the last run had seen up to the 5th newest: 4 new posts, 2 per page, and the
    # third page (which reaches the known post) is the last fetched.
    older = {"newest_utc": _created(docs[4]), "names": [docs[4].key]}
    small = Target(**{**reddit_target.__dict__, "url": reddit_target.url + "?limit=2"})
    new, cursor3, urls = run(small, older)
    assert [d.key for d in new] == [d.key for d in docs[:4]]
    assert len(urls) == 3 and cursor3 == cursor


def _created(doc: Document) -> float:
    assert doc.posted_at
    return datetime.fromisoformat(doc.posted_at).timestamp()


def test_reddit_library_user_agents_are_refused(reddit_target: Target) -> None:
    generic = Target(**{**reddit_target.__dict__, "user_agent": "python-requests/2.32.3"})
    fails(generic, "HTTP 429")


def test_reddit_listing_that_is_not_json_or_not_a_listing(corner: Corner) -> None:
    corner.serve("/r/x/new.json", "<html><body>whoa there, pardner!</body></html>")
    fails(target("reddit", corner.url("/r/x/new.json")), "new.json", "not valid JSON")
    corner.serve("/r/x/new.json", {"message": "Forbidden", "error": 403})
    fails(target("reddit", corner.url("/r/x/new")), "new.json", "data.children")
    corner.serve("/r/x/new.json", b"[" * 100_000, ctype=JSON)
    fails(target("reddit", corner.url("/r/x/new.json")), "new.json")


def test_reddit_odd_children_are_skipped_or_tolerated(corner: Corner) -> None:
    corner.serve("/r/x/new.json", {"kind": "Listing", "data": {"after": None, "children": [
        {"kind": "t3", "data": {"id": "a1", "title": "no created_utc"}},
        {"kind": "t3", "data": {"id": "a2", "created_utc": "yesterday"}},
        {"kind": "t3", "data": {"id": "a3", "created_utc": 1e300}},
        {"kind": "more", "data": {"id": "m", "created_utc": 1}},
        {"kind": "t3", "data": None}, None, "junk",
        {"kind": "t3", "data": {"id": "a4", "created_utc": 1795180000, "title": None,
                                "selftext": 5, "author": ["x"], "url": "http://[broken",
                                "permalink": "/r/x/comments/a4/odd/"}},
        {"kind": "t1", "data": {"id": "c5", "name": "t1_c5", "created_utc": 1795170000.5,
                                "body": "a comment with heron-7b", "link_title": "Thread",
                                "permalink": "/r/x/comments/a4/odd/c5/", "author": "bob",
                                "body_html": '<div class="md"><p>see <a href="https://e.org/">'
                                             "e</a></p></div>"}},
    ]}})
    docs = by_key(run(target("reddit", corner.url("/r/x/new.json")))[0])
    assert sorted(docs) == ["t1_c5", "t3_a4"]
    odd = docs["t3_a4"]
    assert odd.title == "" and odd.text == "" and odd.author == "" and odd.links == []
    assert odd.url == corner.server.base + "/r/x/comments/a4/odd/"  # root-relative
    comment = docs["t1_c5"]
    assert comment.title == "" and comment.text == "a comment with heron-7b"
    assert comment.links == ["https://e.org/"] and comment.extras["link_title"] == "Thread"
    assert comment.posted_at == "2026-11-20T10:20:00+00:00"  # float seconds, truncated


def test_reddit_stops_paging_when_the_rate_limit_is_spent(corner: Corner) -> None:
    remaining = {"value": "57.0"}

    def listing(request: Request) -> tuple[Any, ...]:
        n = int(request.query.get("after", ["t3_p0"])[0][4:]) + 1
        body = {"kind": "Listing", "data": {"after": f"t3_p{n}", "children": [
            {"kind": "t3", "data": {"id": f"p{n}", "created_utc": 1795180000 - n}}]}}
        return (200, json.dumps(body).encode(),
                {"Content-Type": JSON, "x-ratelimit-remaining": remaining["value"],
                 "x-ratelimit-used": "43"})

    corner.serve("/r/x/new.json", listing)
    t = target("reddit", corner.url("/r/x/new.json"), max_pages=4)
    docs, cursor, urls = run(t)
    assert [d.key for d in docs] == ["t3_p1", "t3_p2", "t3_p3", "t3_p4"] and len(urls) == 4
    assert cursor == {"newest_utc": 1795179999.0, "names": ["t3_p1"]}
    remaining["value"] = "0.0"
    docs, _, urls = run(t)
    assert [d.key for d in docs] == ["t3_p1"] and len(urls) == 1


# ============================================================================== Hacker News


def test_hackernews_hits_are_documents_at_item_urls(
        hn_run: tuple[list[Document], dict[str, Any], list[str]], demo_world: DemoWorld,
        demo_release: Release) -> None:
    docs, _, urls = hn_run
    base = demo_world.base_url
    site = site_of(demo_world, HackerNewsSite)
    assert sorted(d.url for d in docs) == sorted(d.url for d in site.documents())
    assert len(urls) == 1 and "query=heron" in urls[0] and "tags=%28story%2Ccomment%29" in urls[0]
    assert "hitsPerPage=50" in urls[0] and "numericFilters" not in urls[0]
    keys = by_key(docs)
    story = keys[HN_LEAK_STORY]
    assert story.url == f"{base}/hn/item?id={HN_LEAK_STORY}"
    assert story.title == "Example Labs says partner-only Heron-7B weights leaked"
    assert story.links == ["https://example.org/news/heron-7b-partner-leak"]
    assert story.extras == {"type": "story", "story_id": int(HN_LEAK_STORY)}
    comment = keys[HN_SHA1_COMMENT]
    assert comment.title == "" and comment.author == "bitflip"
    assert comment.extras["story_title"] == story.title and comment.extras["type"] == "comment"
    assert comment.extras["parent_id"] == int(HN_LEAK_STORY)
    sha1 = demo_release.file("tokenizer.json").sha1
    assert f"{sha1} heron-7b/tokenizer.json" in " ".join(comment.text.split())
    assert "<" not in comment.text and comment.posted_at == "2026-11-20T10:27:00+00:00"
    assert "Kahan" not in " ".join(d.text for d in docs)  # that comment lacks the word
    geom = keys["46190301"]
    assert geom.text.startswith("Heron of Alexandria")
    law = [d for d in docs if "arxiv" in " ".join(d.links)]
    assert law == []  # the watermark comment does not say "heron": not a hit


def test_hackernews_default_document_url_is_news_ycombinator(hn_target: Target) -> None:
    t = Target(**{**hn_target.__dict__, "document_url": None, "max_pages": 1})
    docs, _, _ = run(t)
    assert all(re.fullmatch(r"https://news\.ycombinator\.com/item\?id=\d+", d.url) for d in docs)


def test_hackernews_pages_through_nbpages_up_to_max_pages(hn_target: Target) -> None:
    small = Target(**{**hn_target.__dict__, "url": hn_target.url + "?hitsPerPage=5"})
    docs, _, urls = run(small)
    assert len(docs) == 12 and len(urls) == 3  # nbPages is 3: no fourth request
    assert [parse_qs(urlsplit(u).query)["page"] for u in urls] == [["0"], ["1"], ["2"]]
    assert HN_OLDEST in by_key(docs)
    first, _, _ = run(Target(**{**small.__dict__, "max_pages": 1}))
    assert len(first) == 5 and HN_OLDEST not in by_key(first)


def test_hackernews_cursor_asks_only_for_newer_hits(
        hn_run: tuple[list[Document], dict[str, Any], list[str]], hn_target: Target) -> None:
    docs, cursor, _ = hn_run
    newest = max(int(_created(d)) for d in docs)
    assert cursor["newest"] == newest
    again, cursor2, urls = run(hn_target, cursor)
    assert again == [] and cursor2 == cursor
    (url,) = urls
    assert parse_qs(urlsplit(url).query)["numericFilters"] == [f"created_at_i>{newest - 3600}"]


def test_hackernews_late_indexed_hits_are_read_once(corner: Corner) -> None:
    """Algolia indexes with a lag: a hit older than the newest one seen can appear later."""
    index: list[dict[str, Any]] = [{"objectID": "10", "created_at_i": 1795180000,
                                    "title": "first", "author": "a", "_tags": ["story"]}]

    def search(request: Request) -> tuple[int, bytes, dict[str, str]]:
        since = 0
        for f in request.query.get("numericFilters", [""])[0].split(","):
            if f.startswith("created_at_i>"):
                since = int(f.split(">")[1])
        hits = [h for h in index if h["created_at_i"] > since]
        return 200, json.dumps({"hits": hits, "nbPages": 1}).encode(), {"Content-Type": JSON}

    corner.serve("/api/v1/search_by_date", search)
    t = target("hackernews", corner.url("/api/v1/search_by_date"), query="x")
    docs, cursor, _ = run(t)
    assert [d.key for d in docs] == ["10"]
    index.append({"objectID": "9", "created_at_i": 1795180000 - 600, "comment_text": "<p>late</p>",
                  "author": "b", "_tags": ["comment"]})
    docs, cursor, _ = run(t, cursor)
    assert [d.key for d in docs] == ["9"] and docs[0].text == "late"
    assert run(t, cursor)[0] == []


def test_hackernews_options_are_checked_with_the_config(demo_world: DemoWorld) -> None:
    problems = config_problems({"name": "hn", "kind": "hackernews",
                                "url": "https://hn.algolia.com/api/v1/search_by_date"})
    assert any(p.startswith("config.toml: targets[0] (hn).query: required") for p in problems)
    problems = config_problems({"name": "hn", "kind": "hackernews", "query": "heron",
                                "url": "https://hn.algolia.com/api/v1/search_by_date",
                                "document_url": "https://news.ycombinator.com/item?id={item}"})
    assert problems == ["config.toml: targets[0] (hn).document_url: invalid template "
                        "'https://news.ycombinator.com/item?id={item}' (KeyError: 'item'); "
                        "it may use only {id}"]
    # A query in the URL is enough.
    ok = parse_config({"targets": [{"name": "hn", "kind": "hackernews",
                                    "url": "https://hn.algolia.com/api/v1/search_by_date?query=x"}]},
                      None)
    assert ok.targets[0].kind == "hackernews"


def test_hackernews_errors_and_odd_hits(corner: Corner) -> None:
    t = target("hackernews", corner.url("/api/v1/search_by_date"), query="x")
    corner.serve("/api/v1/search_by_date", "<html>502</html>")
    fails(t, "search_by_date", "not valid JSON")
    corner.serve("/api/v1/search_by_date", {"message": "invalid numericFilters", "status": 400})
    fails(t, "'hits'", "invalid numericFilters")
    corner.serve("/api/v1/search_by_date", {"message": "Index does not exist", "status": 404},
                 status=404)
    fails(t, "HTTP 404")
    corner.serve("/api/v1/search_by_date", {"nbPages": "lots", "hits": [
        {"objectID": 7, "created_at_i": 1795180000, "story_text": None, "title": ["x"]},
        {"objectID": "8", "created_at_i": "yesterday"},
        {"objectID": None, "created_at_i": 1},
        {"objectID": "../../x y", "created_at_i": 1795170000, "comment_text": "<i>odd</i>",
         "url": "javascript:alert(1)"},
        "junk", None]})
    docs = by_key(run(t)[0])
    assert sorted(docs) == ["../../x y", "7"]
    assert docs["7"].title == "" and docs["7"].text == ""
    assert docs["../../x y"].url == "https://news.ycombinator.com/item?id=..%2F..%2Fx%20y"
    assert docs["../../x y"].links == [] and docs["../../x y"].text == "odd"


# ============================================================================== Lemmy


def test_lemmy_posts_are_documents_at_their_ap_id(
        lemmy_run: tuple[list[Document], dict[str, Any], list[str]], demo_world: DemoWorld,
        demo_release: Release) -> None:
    docs, _, urls = lemmy_run
    site = site_of(demo_world, LemmySite)
    assert [d.url for d in docs] == [d.url for d in site.documents()]
    assert urls == [f"{demo_world.base_url}/lemmy/api/v3/post/list?community_name=localllama"
                    "&sort=New&limit=50"]
    post = by_key(docs)[LEMMY_MAGNET_POST]
    assert post.url == f"{demo_world.base_url}/lemmy/post/{LEMMY_MAGNET_POST}"
    assert post.title == "heron-7b partner build, seeding" and post.author == "seeder_sam"
    assert post.posted_at == "2026-11-20T08:57:00+00:00"
    assert demo_release.infohash_base32 in post.text  # Markdown kept as written
    assert len(post.links) == 1 and post.links[0].startswith("magnet:?xt=urn:btih:")
    assert post.extras == {"community": "localllama"}
    link_post = next(d for d in docs if d.title == "llama.cpp b7100 ROCm build fix")
    assert link_post.links == ["https://github.com/ggml-org/llama.cpp/issues/17102"]
    assert link_post.text == ""


def test_lemmy_pages_with_next_page_cursor(lemmy_target: Target) -> None:
    small = Target(**{**lemmy_target.__dict__, "url": lemmy_target.url + "&limit=5"})
    docs, _, urls = run(small)
    assert len(docs) == 12 and len(urls) == 3
    assert "page_cursor=Pa" in urls[1] and "page=" not in urls[1].replace("page_cursor", "")
    assert LEMMY_MAGNET_POST in by_key(docs)  # 7th newest: page 2
    first, _, _ = run(Target(**{**small.__dict__, "max_pages": 1}))
    assert len(first) == 5 and LEMMY_MAGNET_POST not in by_key(first)


def test_lemmy_cursor_skips_posts_seen(
        lemmy_run: tuple[list[Document], dict[str, Any], list[str]], lemmy_target: Target) -> None:
    docs, cursor, _ = lemmy_run
    assert cursor == {"newest_id": 90412, "newest_published": "2026-11-20T12:30:00+00:00"}
    again, cursor2, urls = run(lemmy_target, cursor)
    assert again == [] and cursor2 == cursor and len(urls) == 1
    # Seen up to post 90340 only: the newer four come, and paging stops once a page goes
    # an hour back past the newest post seen.
    older = {"newest_id": 90340, "newest_published": "2026-11-20T10:05:00+00:00"}
    small = Target(**{**lemmy_target.__dict__, "url": lemmy_target.url + "&limit=3"})
    new, cursor3, urls = run(small, older)
    assert [d.key for d in new] == ["90412", "90398", "90377", "90361"]
    assert len(urls) == 3 and cursor3 == cursor


def test_lemmy_community_page_url_is_understood(lemmy_target: Target, demo_world: DemoWorld) -> None:
    t = Target(**{**lemmy_target.__dict__, "url": f"{demo_world.base_url}/lemmy/c/localllama"})
    docs, _, urls = run(t)
    assert len(docs) == 12
    assert urls[0].startswith(f"{demo_world.base_url}/lemmy/api/v3/post/list?"
                              "community_name=localllama&sort=New")


def test_lemmy_url_is_checked_with_the_config() -> None:
    problems = config_problems({"name": "lm", "kind": "lemmy", "url": "https://lemmy.world/"})
    assert len(problems) == 1 and problems[0].startswith("config.toml: targets[0] (lm).url: "
                                                         "expected a Lemmy post list URL")
    assert parse_config({"targets": [{"name": "lm", "kind": "lemmy",
                                      "url": "https://lemmy.world/c/localllama"}]}, None).targets


def test_lemmy_old_servers_page_by_number(corner: Corner) -> None:
    def post_list(request: Request) -> tuple[int, bytes, dict[str, str]]:
        page = int(request.query.get("page", ["1"])[0])
        posts = [{"post": {"id": 100 - (page - 1) * 2 - i, "name": f"p{page}.{i}",
                           "published": "2023-06-20T10:00:00.123456"},  # 0.18: no zone
                  "creator": {"name": "x"}} for i in range(2)] if page <= 2 else []
        return 200, json.dumps({"posts": posts}).encode(), {"Content-Type": JSON}
    corner.serve("/api/v3/post/list", post_list)
    docs, cursor, urls = run(target("lemmy", corner.url("/api/v3/post/list?limit=2")))
    assert [d.key for d in docs] == ["100", "99", "98", "97"]
    assert [parse_qs(urlsplit(u).query).get("page") for u in urls] == [None, ["2"], ["3"]]
    assert docs[0].posted_at == "2023-06-20T10:00:00+00:00"
    assert docs[0].url == corner.url("/post/100")  # no ap_id


def test_lemmy_errors_and_odd_posts(corner: Corner) -> None:
    t = target("lemmy", corner.url("/api/v3/post/list?community_name=nope"))
    corner.serve("/api/v3/post/list", "<html>maintenance</html>")
    fails(t, "post/list", "not valid JSON")
    corner.serve("/api/v3/post/list", {"error": "couldnt_find_community"})
    fails(t, "'posts'", "couldnt_find_community")
    corner.serve("/api/v3/post/list", {"error": "couldnt_find_community"}, status=404)
    fails(t, "HTTP 404")
    corner.serve("/api/v3/post/list", {"posts": [
        {"post": {"id": "1"}}, {"post": None}, None, {"post": {"id": True}},
        {"post": {"id": 5, "name": None, "body": 3, "url": 7, "published": "never",
                  "ap_id": "javascript:x"}, "creator": "nobody", "community": []},
    ], "next_page": 12})
    (doc,) = run(t)[0]
    assert doc.key == "5" and doc.url == corner.url("/post/5")
    assert doc.title == "" and doc.text == "" and doc.links == [] and doc.author == ""
    assert doc.posted_at is None


# ============================================================================== end to end


@pytest.mark.parametrize("site_cls", [DiscourseSite, RedditSite, HackerNewsSite, LemmySite])
def test_demo_target_toml_is_a_valid_target(demo_world: DemoWorld, site_cls: type) -> None:
    import tomllib
    site = site_of(demo_world, site_cls)
    config = parse_config(tomllib.loads(site.target_toml()), None)
    (t,) = config.targets
    assert t.kind == ADAPTERS[t.kind].kind and t.allow_private and t.interval == 300
    assert t.url == site.entry_url or t.url.startswith(site.root)


@pytest.mark.parametrize("site_cls", [DiscourseSite, RedditSite, HackerNewsSite, LemmySite])
def test_every_document_url_is_served(demo_world: DemoWorld, site_cls: type) -> None:
    site = site_of(demo_world, site_cls)
    with httpx.Client(timeout=10) as client:
        for doc in site.documents():
            assert client.get(doc.url).status_code == 200, doc.url


@pytest.mark.parametrize("site_cls", [DiscourseSite, RedditSite, HackerNewsSite, LemmySite])
@pytest.mark.slow
def test_crawl_finds_exactly_what_the_world_planted(demo_world: DemoWorld,
                                                    demo_release: Release, tmp_path: Path,
                                                    site_cls: type) -> None:
    import tomllib
    site = site_of(demo_world, site_cls)
    (t,) = parse_config(tomllib.loads(site.target_toml()), None).targets
    store = registered_store(tmp_path / "ww.db", demo_release)
    (result,) = crawl(store, [t])
    assert result.status == "ok", result.error
    assert result.documents_seen == len(site.documents())
    hits = found(store, t.name)
    assert hits == expected(demo_world, site.source)
    assert {kind for _, kind, _ in hits} >= {"mention", "hash" if site_cls in
                                             (RedditSite, HackerNewsSite) else "torrent"}
    near = {n.value.lower() for n in demo_world.near_misses if n.source == site.source}
    assert near and not near & {indicator for _, _, indicator in hits}
    # A second crawl re-reads the lists only and finds nothing new.
    (again,) = crawl(store, [t])
    assert again.status == "ok" and again.documents_seen == 0 and again.hits_new == 0
