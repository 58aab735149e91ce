"""Snapshots: one page's posts share one response, so it is hashed and compressed once."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from monitor.models import Document, Hit
from monitor.store import Store
from monitor.store import documents as documents_module


def posts(page: bytes, count: int, url: str = "https://f.example/t?t=1") -> list[Document]:
    return [Document(target="forum", key=f"{url}#p{i}", url=f"{url}#p{i}", text=f"post {i}",
                     snapshot=page, snapshot_url=url) for i in range(count)]


class Counting:
    """Counts the calls given a page (documents' content hashes use sha256 too)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        if args and isinstance(args[0], bytes) and args[0].startswith(b"<html>"):
            self.calls += 1
        return self.fn(*args, **kwargs)


def test_a_page_is_hashed_and_compressed_once_for_all_its_posts(tmp_path, monkeypatch):
    page = b"<html>" + b"<div class=post>leak</div>" * 500 + b"</html>"
    page_sha = hashlib.sha256(page).hexdigest()
    compress = Counting(documents_module._compress)  # noqa: SLF001 (what the store calls)
    sha256 = Counting(hashlib.sha256)
    monkeypatch.setattr(documents_module, "_compress", compress)
    monkeypatch.setattr(documents_module.hashlib, "sha256", sha256)
    with Store(tmp_path / "w.db") as store:
        saved = [store.save_document(d, [], run_id=None)[0] for d in posts(page, 30)]
        assert (compress.calls, sha256.calls) == (1, 1)
        shas = {store.document(s.id)["snapshot_sha256"] for s in saved}
        assert shas == {page_sha}
        assert store.snapshot(shas.pop()) == page
        # Another page (the same bytes in another object too) is looked at afresh.
        other = page.replace(b"leak", b"weights")
        for d in posts(other, 3, url="https://f.example/t?t=2"):
            store.save_document(d, [], run_id=None)
        for d in posts(bytes(bytearray(page)), 2, url="https://f.example/t?t=3"):
            store.save_document(d, [], run_id=None)
        assert (compress.calls, sha256.calls) == (2, 3)
        assert store.db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 2


def test_a_rolled_back_snapshot_is_stored_by_the_next_post(tmp_path):
    page = b"<html>the page</html>"
    first, second = posts(page, 2)
    bad = Hit(kind="nonsense", severity="low", indicator="x", detector="rules", context="c")
    with Store(tmp_path / "w.db") as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.save_document(first, [bad], run_id=None)  # the snapshot insert rolls back
        assert store.db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 0
        saved, _ = store.save_document(second, [], run_id=None)
        assert store.snapshot(store.document(saved.id)["snapshot_sha256"]) == page
