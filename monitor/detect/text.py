"""Text helpers shared by detectors."""

from __future__ import annotations

from monitor.models import Document


def searchable_text(doc: Document) -> str:
    """What detectors read: title, body and links (magnets often sit only in an href)."""
    return "\n".join(part for part in (doc.title, doc.text, *doc.links) if part)


def snippet(text: str, start: int, end: int, width: int = 100) -> str:
    """The match with some context either side, on one line."""
    left = max(0, start - width)
    right = min(len(text), end + width)
    out = " ".join(text[left:right].split())
    return ("…" if left else "") + out + ("…" if right < len(text) else "")
