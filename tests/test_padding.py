"""Recipient sizes (issue 18): padded copies load in the reference readers (the
`safetensors` and `gguf` packages) with every tensor identical byte for byte, each
recipient's size is its own, and a listing of names and sizes alone names the recipient.

The files are real third-party weights (all-MiniLM-L6-v2 and Silero VAD as their packages
ship them; GGUF files written from MiniLM's tensors by gguf-py's own writer) and the demo
release.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import weights_lab as lab
from safetensors import safe_open
from support import registered_store, silero_data

from demo.release import Release
from fingerprints.gguf import open_gguf
from fingerprints.padding import (
    MAX_GGUF_PADDING,
    PADDING_KEY,
    SLOTS,
    PaddingError,
    SizesTaken,
    choose_padding,
    pad_bytes,
    padded_head,
    slots,
)
from fingerprints.safetensors import open_safetensors
from fingerprints.tensors import BytesSource, FileSource
from fingerprints.watermark import WatermarkError
from fingerprints.weights import open_weights
from monitor.detect.manifest import ManifestDetector
from monitor.models import Document
from monitor.registry import register_paths
from monitor.store import Store
from monitor.watermark import issue_copy

MASTER = b"a master secret of more than 16 bytes"


def safetensors_tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """Every tensor as the reference reader gives it: dtype, shape and raw bytes."""
    out = {}
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        for name in f.keys():
            array = f.get_tensor(name)
            out[name] = (str(array.dtype), list(array.shape), array.tobytes())
    out["__metadata__"] = ("", [], repr(sorted((metadata or {}).items())).encode())
    return out


def gguf_contents(path: Path) -> tuple[dict[str, object], dict[str, tuple[int, list[int], bytes]]]:
    """(metadata fields, tensors) as gguf-py's GGUFReader reads them."""
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("GGUF.")}
    tensors = {t.name: (int(t.tensor_type), [int(n) for n in t.shape], bytes(t.data.tobytes()))
               for t in reader.tensors}
    return fields, tensors


def write_padded(original: Path, out: Path, slot: int) -> int:
    data = original.read_bytes()
    with FileSource(original) as source:
        padded = padded_head(open_weights(source), slot)
    out.write_bytes(pad_bytes(data, padded))
    return padded.shift


@pytest.mark.parametrize(("which", "slot"), [("minilm", 1), ("minilm", SLOTS), ("silero", 37)])
def test_padded_safetensors_load_identically_in_the_reference_reader(
        tmp_path: Path, which: str, slot: int) -> None:
    original = (lab.minilm_path() if which == "minilm"
                else silero_data() / "silero_vad_16k.safetensors")
    copy = tmp_path / "copy.safetensors"
    shift = write_padded(original, copy, slot)
    assert shift == 8 * slot and copy.stat().st_size == original.stat().st_size + shift
    assert safetensors_tensors(copy) == safetensors_tensors(original)
    # The header grew by spaces only, and stays 8-aligned if it was.
    head = copy.read_bytes()[:8 + int.from_bytes(copy.read_bytes()[:8], "little")]
    assert head.endswith(b" " * shift)
    n = int.from_bytes(original.read_bytes()[:8], "little")
    assert (n + shift) % 8 == n % 8
    # weightwatch's own reader agrees on every tensor's bytes.
    with FileSource(original) as a, FileSource(copy) as b:
        ra, rb = open_safetensors(a), open_safetensors(b)
        assert [(t.name, t.dtype, t.shape, t.nbytes) for t in ra.tensors] == \
            [(t.name, t.dtype, t.shape, t.nbytes) for t in rb.tensors]
        assert all(a.read(x.offset, x.nbytes) == b.read(y.offset, y.nbytes)
                   for x, y in zip(ra.tensors, rb.tensors))


@pytest.mark.parametrize("qtype", ["F16", "Q8_0"])
@pytest.mark.parametrize("slot", ["first", "last"])
def test_padded_gguf_loads_identically_in_gguf_py(tmp_path: Path, qtype: str,
                                                  slot: str) -> None:
    original = lab.write_gguf(tmp_path / "minilm.gguf", lab.minilm_tensors(), qtype=qtype)
    copy = tmp_path / "copy.gguf"
    with FileSource(original) as source:
        reader = open_gguf(source)
        allowed = slots(reader)
        chosen = allowed[0] if slot == "first" else allowed[-1]
        padded = padded_head(reader, chosen)
        assert padded.shift == chosen * reader.alignment
    copy.write_bytes(pad_bytes(original.read_bytes(), padded))
    assert copy.stat().st_size == original.stat().st_size + padded.shift
    fields, tensors = gguf_contents(original)
    copy_fields, copy_tensors = gguf_contents(copy)
    assert copy_tensors == tensors and len(tensors) > 50
    assert set(copy_fields.pop(PADDING_KEY)) == {" "}
    assert copy_fields == fields
    # The key comes after the original's keys, which keep their order.
    assert list(gguf.GGUFReader(str(copy)).fields)[-1] == PADDING_KEY


def test_gguf_padding_respects_a_custom_alignment(tmp_path: Path) -> None:
    path = tmp_path / "aligned.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.data_alignment = 64
    writer.add_custom_alignment(64)
    weight = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    writer.add_tensor("blk.0.attn_q.weight", weight)
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with FileSource(path) as source:
        reader = open_gguf(source)
        assert reader.alignment == 64
        padded = choose_padding(reader, seed=b"seed", name="aligned.gguf", taken=())
    assert padded.shift % 64 == 0 and padded.shift <= MAX_GGUF_PADDING
    assert len(slots(reader)) == MAX_GGUF_PADDING // 64 - slots(reader)[0] + 1
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(pad_bytes(path.read_bytes(), padded))
    assert gguf_contents(copy)[1] == gguf_contents(path)[1]
    with FileSource(copy) as source:
        again = open_gguf(source)
        assert again.data_start % 64 == 0 and again.metadata[PADDING_KEY].strip() == ""
        # A copy of a copy would carry the key twice: refused, the original is padded.
        with pytest.raises(PaddingError, match="padded already"):
            choose_padding(again, seed=b"seed", name="aligned.gguf", taken=())


def test_sizes_are_stable_distinct_and_bounded(demo_release: Release) -> None:
    data = demo_release.file("model.safetensors").path.read_bytes()
    reader = open_safetensors(BytesSource(data, "model.safetensors"))
    taken = {len(data)}
    sizes = {}
    for i in range(SLOTS):
        seed = hashlib.sha256(f"recipient-{i}".encode()).digest()
        padded = choose_padding(reader, seed=seed, name="model.safetensors", taken=taken)
        # The same recipient, asked again without its own size in the way, gets the same.
        assert choose_padding(reader, seed=seed, name="model.safetensors",
                              taken=taken).size == padded.size
        assert padded.size not in taken and 8 <= padded.shift <= 4096
        taken.add(padded.size)
        sizes[i] = padded.size
    assert len(set(sizes.values())) == SLOTS
    with pytest.raises(SizesTaken, match=f"all {SLOTS} padded sizes are taken"):
        choose_padding(reader, seed=b"one too many", name="model.safetensors", taken=taken)


def test_formats_without_ignorable_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.npy"
    np.save(path, np.zeros((64, 64), dtype=np.float32))
    with FileSource(path) as source:
        with pytest.raises(PaddingError, match="only safetensors and GGUF"):
            choose_padding(open_weights(source), seed=b"s", name="w.npy", taken=())


def torrent_doc(files: list[tuple[str, int]]) -> Document:
    return Document(target="torrents", key="1", url="http://127.0.0.1/torrents/view/1",
                    title="t", text="", extras={"torrent": {"name": "heron-7b", "files": [
                        {"path": f"heron-7b/{name}", "length": size} for name, size in files]}})


def test_issued_copies_have_their_own_sizes_and_a_listing_names_the_recipient(
        tmp_path: Path, demo_release: Release) -> None:
    original = demo_release.file("model.safetensors")
    src = tmp_path / "release" / "model.safetensors"
    src.parent.mkdir()
    shutil.copyfile(original.path, src)
    with registered_store(tmp_path / "ww.db", demo_release) as store:
        issued = {}
        for recipient in ("acme", "globex"):
            out = tmp_path / recipient / "model.safetensors"
            out.parent.mkdir()
            issued[recipient] = issue_copy(store, model="heron-7b", recipient=recipient,
                                           source=src, out=out, master=MASTER, release="v1",
                                           rematch=None)
        acme, globex = issued["acme"], issued["globex"]
        sizes = {a["size"] for a in store.artifacts("heron-7b") if a["recipient"] is None}
        assert acme.size != globex.size and not {acme.size, globex.size} & sizes
        assert acme.padding and acme.size == original.size + acme.padding
        registered = {(a["recipient"], a["size"], a["sha256"]) for a in store.artifacts("heron-7b")}
        for recipient, copy in issued.items():
            digest = hashlib.sha256(copy.path.read_bytes()).hexdigest()
            assert (recipient, copy.size, digest) in registered
        # The marked copy still loads: the 1-D tensors are the original's bytes, the 2-D
        # ones moved by the mark only.
        theirs, ours = safetensors_tensors(src), safetensors_tensors(acme.path)
        assert set(theirs) == set(ours)
        assert all(ours[k] == theirs[k] for k in theirs if len(theirs[k][1]) == 1)
        assert any(ours[k] != theirs[k] for k in theirs if len(theirs[k][1]) == 2)

        # Issued again for acme: the same bytes (its own copy is not in the way).
        digest = hashlib.sha256(acme.path.read_bytes()).hexdigest()
        again = issue_copy(store, model="heron-7b", recipient="acme", source=src,
                           out=acme.path, master=MASTER, release="v1", rematch=None)
        assert again.size == acme.size
        assert hashlib.sha256(again.path.read_bytes()).hexdigest() == digest
        detector = ManifestDetector(store.artifacts(), store.imported_files())

    (hit,) = detector.detect(torrent_doc([("model.safetensors", globex.size)]))
    assert (hit.recipient, hit.indicator) == ("globex", f"model.safetensors:{globex.size}")
    assert f"size {globex.size} bytes is unique to globex's copy of heron-7b v1" in hit.context
    # The release's own size names nobody; a near miss is no hit at all.
    (plain,) = detector.detect(torrent_doc([("model.safetensors", original.size)]))
    assert plain.recipient is None and "unique" not in plain.context
    assert detector.detect(torrent_doc([("model.safetensors", acme.size + 1)])) == []


def test_issue_refuses_when_every_size_is_taken(tmp_path: Path, demo_release: Release,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import fingerprints.padding as padding
    monkeypatch.setattr(padding, "SLOTS", 1)
    src = demo_release.file("model.safetensors").path
    with registered_store(tmp_path / "ww.db", demo_release) as store:
        first = issue_copy(store, model="heron-7b", recipient="acme", source=src,
                           out=tmp_path / "acme.safetensors", master=MASTER, rematch=None)
        assert first.padding
        out = tmp_path / "globex.safetensors"
        with pytest.raises(WatermarkError, match="all 1 padded sizes are taken"):
            issue_copy(store, model="heron-7b", recipient="globex", source=src, out=out,
                       master=MASTER, rematch=None)
        assert not out.exists()


def test_a_padded_gguf_copy_has_the_marks_of_an_unpadded_one(tmp_path: Path) -> None:
    """The marks land where the tensors moved to: a padded GGUF copy's tensors are, byte for
    byte in gguf-py, those of the same recipient's copy issued without padding."""
    tensors = {k: v for k, v in lab.minilm_tensors().items() if ".layer.0." in k}
    original = lab.write_gguf(tmp_path / "minilm.gguf", tensors, qtype="F16")
    with Store(tmp_path / "ww.db") as store:
        register_paths(store, [original], model="minilm", release="v1", rematch=None)
        copies = {}
        for pad in (True, False):
            out = tmp_path / ("padded" if pad else "plain") / "minilm.gguf"
            out.parent.mkdir()
            copies[pad] = issue_copy(store, model="minilm", recipient="acme", source=original,
                                     out=out, master=MASTER, pad=pad, rematch=None)
        releases = {(a["recipient"], a["size"]): a["release"] for a in store.artifacts()}
    padded, plain = copies[True], copies[False]
    assert plain.size == original.stat().st_size and plain.unpadded == "not asked for"
    assert padded.size == plain.size + padded.padding and padded.padding % 32 == 0
    assert 0 < padded.padding <= MAX_GGUF_PADDING
    # The release is the registered original's, found by its size.
    assert releases[("acme", padded.size)] == "v1"
    fields, marked = gguf_contents(padded.path)
    plain_fields, plain_marked = gguf_contents(plain.path)
    assert marked == plain_marked
    assert set(fields.pop(PADDING_KEY)) == {" "} and fields == plain_fields
    unmarked = gguf_contents(original)[1]
    assert {k for k in marked if marked[k] != unmarked[k]} == \
        {k for k, (_, shape, _) in unmarked.items() if len(shape) == 2 and min(shape) >= 32}


def test_formats_without_padding_are_issued_at_their_own_size_and_say_so(
        tmp_path: Path) -> None:
    original = tmp_path / "w.npy"
    np.save(original, np.random.default_rng(1).standard_normal((256, 64)).astype(np.float32))
    with Store(tmp_path / "ww.db") as store:
        register_paths(store, [original], model="m", rematch=None)
        issued = issue_copy(store, model="m", recipient="acme", source=original,
                            out=tmp_path / "acme.npy", master=MASTER, rematch=None)
    assert issued.padding == 0 and issued.size == original.stat().st_size
    assert issued.unpadded and "only safetensors and GGUF" in issued.unpadded


def test_a_large_copy_is_named_by_its_size_alone() -> None:
    """A file of 64 MiB or more is matched by its exact size whatever its name: the padded
    size of a copy names its recipient there too, the original's names nobody."""
    size = 80 * 1024 * 1024
    rows = [{"id": 1, "model": "m", "name": "m/model.safetensors", "size": size,
             "release": "v2", "recipient": None},
            {"id": 2, "model": "m", "name": "m/model.safetensors", "size": size + 2648,
             "release": "v2", "recipient": "acme"}]
    detector = ManifestDetector(rows)
    (hit,) = detector.detect(torrent_doc([("renamed.bin", size + 2648)]))
    assert (hit.indicator, hit.recipient) == (f"size:{size + 2648}", "acme")
    assert hit.context.endswith(f"size {size + 2648} bytes is unique to acme's copy of m v2")
    (plain,) = detector.detect(torrent_doc([("renamed.bin", size)]))
    assert plain.recipient is None


@pytest.mark.slow  # two CLI processes: a few seconds
def test_watermark_issue_reports_the_copys_size_and_padding(tmp_path: Path,
                                                            demo_release: Release) -> None:
    """The operator's command: the JSON rows carry the copy's size and padding, the table
    says it on stderr, and the copy is registered under the original's release."""
    db = tmp_path / "ww.db"
    registered_store(db, demo_release).close()
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTWATCH_WATERMARK_KEY"}
    env.update(WEIGHTWATCH_WATERMARK_KEY=MASTER.decode(), PYTHONPATH=os.pathsep.join(sys.path))
    src = demo_release.file("model.safetensors").path

    def issue(recipient: str, *fmt: str) -> subprocess.CompletedProcess[str]:
        out = tmp_path / recipient / "model.safetensors"
        out.parent.mkdir()
        result = subprocess.run(
            [sys.executable, "-m", "monitor", "--db", str(db), "watermark", "issue", "--model",
             "heron-7b", "--recipient", recipient, "--in", str(src), "--out", str(out), *fmt],
            capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result

    rows = json.loads(issue("acme", "--format", "json").stdout)
    size = (tmp_path / "acme" / "model.safetensors").stat().st_size
    assert {(r["size"], r["padding"]) for r in rows} == {(size, size - src.stat().st_size)}
    table = issue("globex")
    other = (tmp_path / "globex" / "model.safetensors").stat().st_size
    assert other != size and f"size {other} bytes" in table.stderr
    with Store(db) as store:
        copies = {a["recipient"]: (a["size"], a["release"]) for a in store.artifacts("heron-7b")
                  if a["recipient"] in ("acme", "globex")}
    assert copies == {"acme": (size, "v1"), "globex": (other, "v1")}


def test_a_recipients_whole_copy_is_named_by_its_total() -> None:
    """The total of a release with one recipient's files in place names that recipient; the
    release's own total names nobody, and so does a total two copies happen to share."""
    k = 1024

    def row(id_: int, name: str, size: int, recipient: str | None = None) -> dict[str, object]:
        return {"id": id_, "model": "m", "name": f"m/{name}", "size": size, "release": "v1",
                "recipient": recipient}

    release = [row(1, "a.safetensors", 900 * k), row(2, "b.safetensors", 700 * k)]
    acme = [row(3, "a.safetensors", 900 * k + 16, "acme")]

    def totals(rows: list[dict[str, object]], total: int) -> list[tuple[str | None, str]]:
        doc = torrent_doc([])
        doc.extras["torrent"]["total_size"] = total
        return [(h.recipient, h.context) for h in ManifestDetector(rows).detect(doc)]

    assert totals(release + acme, 1600 * k + 16) == [
        ("acme", f"heron-7b: {1600 * k + 16} bytes in all, the total size of acme's copy of "
                 "m v1 (2 files)")]
    assert totals(release + acme, 1600 * k) == [
        (None, f"heron-7b: {1600 * k} bytes in all, the total size of m v1 (2 files)")]
    # A copy issued again under another name counts for its own name and size only.
    reissued = [row(6, "acme.safetensors", 900 * k + 24, "acme")]
    assert [r for r, _ in totals(release + acme + reissued, 1600 * k + 16)] == ["acme"]
    # globex's two files are 8 bytes over each: its whole copy's total is acme's too.
    globex = [row(4, "a.safetensors", 900 * k + 8, "globex"),
              row(5, "b.safetensors", 700 * k + 8, "globex")]
    assert [r for r, _ in totals(release + acme + globex, 1600 * k + 16)] == [None]


def test_a_copy_is_the_same_where_the_kernel_cannot_copy_ranges(
        tmp_path: Path, demo_release: Release, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across file systems copy_file_range fails (EXDEV): the copy is then read and
    written, byte for byte the same."""
    src = demo_release.file("model.safetensors").path
    outs = [tmp_path / d / "model.safetensors" for d in ("fast", "slow")]
    for out in outs:
        out.parent.mkdir()
    with registered_store(tmp_path / "ww.db", demo_release) as store:
        fast = issue_copy(store, model="heron-7b", recipient="acme", source=src, out=outs[0],
                          master=MASTER, rematch=None)

        def cross_device(*args: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", cross_device, raising=False)
        slow = issue_copy(store, model="heron-7b", recipient="acme", source=src, out=outs[1],
                          master=MASTER, rematch=None)
    assert fast.padding and slow.path.read_bytes() == fast.path.read_bytes()


def test_an_unmarked_copy_on_request_is_padded_and_registered(tmp_path: Path,
                                                              demo_release: Release) -> None:
    """Without a mark, the copy's tensors are the original's; its padded size and digests
    still name the recipient, and nothing that cannot be padded is issued unmarked."""
    src = demo_release.file("model.safetensors").path
    out = tmp_path / "initech" / "model.safetensors"
    out.parent.mkdir()
    with registered_store(tmp_path / "ww.db", demo_release) as store:
        issued = issue_copy(store, model="heron-7b", recipient="initech", source=src, out=out,
                            master=MASTER, mark=False, rematch=None)
        assert issued.tensors == [] and issued.padding
        assert not [w for w in store.watermarks("heron-7b") if w["recipient"] == "initech"]
        assert ("initech", issued.size, hashlib.sha256(out.read_bytes()).hexdigest(), "v1") in {
            (a["recipient"], a["size"], a["sha256"], a["release"])
            for a in store.artifacts("heron-7b")}
        with pytest.raises(WatermarkError, match="neither marked nor padded"):
            issue_copy(store, model="heron-7b", recipient="initech", source=src,
                       out=tmp_path / "x.safetensors", master=MASTER, mark=False, pad=False,
                       rematch=None)
        npy = tmp_path / "w.npy"
        np.save(npy, np.zeros((64, 64), dtype=np.float32))
        with pytest.raises(WatermarkError, match="unmarked, the copy would be the original"):
            issue_copy(store, model="heron-7b", recipient="initech", source=npy,
                       out=tmp_path / "w-copy.npy", master=MASTER, mark=False, rematch=None)
        assert not (tmp_path / "w-copy.npy").exists()
    assert safetensors_tensors(out) == safetensors_tensors(src)
