"""Text helpers shared by detectors."""

from __future__ import annotations

from monitor.models import Document

# The parts the last text was joined from, and the text: every detector of a pass asks for
# the same document's text in turn, and joining it again cost a sixth of detection. The
# parts are held (not the document), so "the same" is decided by identity, never by an id
# a freed object's successor could reuse; one tuple, replaced whole, so threads never see
# half of an entry.
_last: tuple[str, str, tuple[str, ...], str] = ("", "", (), "")


def searchable_text(doc: Document) -> str:
    """What detectors read: title, body and links (magnets often sit only in an href)."""
    global _last
    title, text, links, joined = _last
    if doc.text is text and doc.title is title and len(doc.links) == len(links) \
            and all(a is b for a, b in zip(doc.links, links)):
        return joined
    joined = "\n".join(part for part in (doc.title, doc.text, *doc.links) if part)
    _last = (doc.title, doc.text, tuple(doc.links), joined)
    return joined


def snippet(text: str, start: int, end: int, width: int = 100) -> str:
    """The match with some context either side, on one line."""
    left = max(0, start - width)
    right = min(len(text), end + width)
    out = " ".join(text[left:right].split())
    return ("…" if left else "") + out + ("…" if right < len(text) else "")
