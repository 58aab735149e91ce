"""parse_html's two ways to a tree (issue 16): libxml2 building it itself, counted a chunk
at a time, and the bounded builder for pages past a cap or past libxml2's own depth limit
(255 levels, below which it silently drops elements and text)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from lxml import etree
from structlog.testing import capture_logs

from monitor import parsing
from monitor.parsing import MAX_HTML_DEPTH, MAX_HTML_ELEMENTS, html_text, parse_html

RECORDED = json.loads(gzip.decompress((Path(__file__).parent / "bs4_documents.json.gz")
                                      .read_bytes()))


def shape(root: etree._Element) -> list[tuple[object, ...]]:
    return [(e.tag, {k: v for k, v in e.attrib.items() if not k.startswith("{")}
             if isinstance(e.tag, str) else {}, e.text, e.tail) for e in root.iter()]


def test_a_page_deeper_than_libxml2_keeps_but_under_the_cap_loses_nothing() -> None:
    depth = MAX_HTML_DEPTH - 2  # past libxml2's 255 levels once <html> and <body> count
    markup = ("<html><body>" + "<div>" * (depth - 2) + "deepest words"
              + "</div>" * (depth - 2) + "after</body></html>").encode()
    assert parsing._native(markup, "utf-8", MAX_HTML_ELEMENTS, MAX_HTML_DEPTH) is None
    with capture_logs() as logs:
        page = parse_html(markup)
    assert not page.truncated and not logs
    deepest = page.root.findall(".//div")[-1]
    assert len(list(deepest.iterancestors())) + 1 == depth
    assert html_text(page).split() == ["deepest", "words", "after"]


def test_both_ways_build_the_same_tree_for_ordinary_pages() -> None:
    """Every recorded forum and torrent-index page: libxml2's own tree and the bounded
    builder's are the same elements, attributes and text, so which one a page takes
    changes nothing a selector or html_text sees. (Only `xml:lang`, a namespaced
    attribute, is kept by libxml2 alone; no selector here reads it.)"""
    pages = [r["call"]["body"].encode("latin-1") for r in RECORDED
             if "body" in r["call"] and r["call"]["body_bytes"]]
    assert len(pages) > 100
    for body in pages:
        native = parsing._native(body, "utf-8", MAX_HTML_ELEMENTS, MAX_HTML_DEPTH)
        bounded, truncated = parsing._bounded(body, "utf-8", "", MAX_HTML_ELEMENTS,
                                              MAX_HTML_DEPTH)
        if native is None:  # a hostile page built by a test: past a cap
            assert truncated or bounded is not None
            continue
        assert bounded is not None and not truncated
        assert shape(native) == shape(bounded)


def test_a_cancelled_bounded_parse_raises_parse_cancelled_not_lxml_s_complaint() -> None:
    """A ParseCancelled raised inside a parser callback leaves elements open; lxml keeps
    the exception for the caller, and the builder's close must not replace it."""

    class Stop(BaseException):
        pass

    target = parsing._BoundedTarget(MAX_HTML_ELEMENTS, MAX_HTML_DEPTH)
    real_data = target.data

    def data(text: str, /) -> None:
        if "stop" in text:
            raise Stop
        real_data(text)

    target.data = data  # type: ignore[method-assign]
    parser = etree.HTMLParser(target=target, recover=True)
    try:
        parser.feed("<html><body><div><p>stop here</p>" + "<i>x</i>" * 10)
        parser.close()
    except Stop:
        pass
    else:
        raise AssertionError("the callback's exception was lost")


def test_bytes_decode_as_bs4_decoded_them() -> None:
    """bs4's EncodingDetector order: the HTTP charset, else the page's <meta>, else a
    guess, UTF-8, Windows-1252."""
    cyrillic = "<html><head><meta charset='windows-1251'></head><body>Привет</body></html>"
    assert html_text(parse_html(cyrillic.encode("cp1251"))) == "Привет"
    latin = "<html><body>café</body></html>".encode("latin-1")
    assert html_text(parse_html(latin, charset="iso-8859-1")) == "café"
    assert html_text(parse_html("<p>café</p>".encode())) == "café"
    assert html_text(parse_html(b"")) == "" and html_text(parse_html("<!-- only -->")) == ""
