"""Manifests from imported indicators (issue 18): a registry built only from `indicators
import` (checksum lists, Git LFS pointers, size lists, hub model info, our released
.torrent) catches a re-packed torrent by its files' names and sizes, as registered files
would; names and sizes of one digest from different imports add up in any order.

Real formats throughout: the demo release's real bytes, `sha256sum` output, one LFS pointer
file per released file as a git checkout without LFS holds them, `du -b` output, a Hugging
Face `/api/models/NAME?blobs=true` answer, and the .torrent files the release was handed
out with; the re-pack is a real v1 .torrent over the same bytes with another name and piece
length, parsed as the torrent sources parse it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from demo.release import Release, build_torrent, make_release
from fingerprints.indicators import (
    FileEntry,
    Indicator,
    parse_indicator_file,
    parse_indicator_text,
)
from fingerprints.torrent import parse_torrent
from monitor.cli import main
from monitor.config import parse_config
from monitor.detect import build_detectors, detect_all
from monitor.detect.manifest import MIN_FILE_BYTES
from monitor.models import Document, Hit
from monitor.registry import IndicatorFileError, import_indicators
from monitor.sources.torrent_index import metainfo_extras
from monitor.store import Store

MODEL = "heron-7b"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return make_release(tmp_path_factory.mktemp("release"))


def weights(release: Release):  # the one released file above the manifest floor
    (big,) = [f for f in release.files if f.size >= MIN_FILE_BYTES]
    return big


def lfs_pointers(release: Release, folder: Path) -> list[Path]:
    """One pointer file per released file, named as the file, as a clone without git-lfs
    leaves them (the spec's exact three lines)."""
    out = []
    for f in release.files:
        path = folder / f.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{f.sha256}\n"
                        f"size {f.size}\n", encoding="ascii")
        out.append(path)
    return out


def repack(release: Release, name: str = "heron7b-leak",
           sizes: dict[str, int] | None = None) -> Document:
    """A v1 .torrent made again from the released bytes (its infohash is nobody's), as the
    torrent sources read it; `sizes` replaces some files' bytes by that many zeros."""
    layout = []
    for f in release.files:
        data = f.path.read_bytes()
        if sizes and f.name in sizes:
            data = bytes(sizes[f.name])
        layout.append((f.name.split("/")[1:], data))
    meta, _ = build_torrent(name, layout, piece_length=32768, announce="http://127.0.0.1:1/a",
                            comment="", creation_date=1_700_000_000)
    info = parse_torrent(meta)
    return Document(target="torrents", key=name, url=f"http://127.0.0.1:1/t/{name}",
                    text=name, title=name, extras={"torrent": {"name": name,
                                                               **metainfo_extras(info)}})


def detect(store: Store, doc: Document) -> list[Hit]:
    return detect_all(build_detectors(parse_config({}, None), store), doc)


def torrent_hits(hits: list[Hit]) -> set[tuple[str, str, str, str | None]]:
    return {(h.severity, h.indicator, h.detector, h.artifact) for h in hits
            if h.kind == "torrent"}


def imported(store: Store, *paths: Path) -> None:
    for path in paths:
        import_indicators(store, path, model=MODEL, rematch=None)


# --- the Done-when: checksum list and LFS pointers, in either order ----------------------


@pytest.mark.parametrize("order", ["checksums first", "pointers first"])
def test_a_repacked_torrent_is_caught_by_a_registry_of_imports_only(
        release: Release, tmp_path: Path, order: str) -> None:
    sums = release.root / "SHA256SUMS"
    pointers = lfs_pointers(release, tmp_path / "clone")
    big = weights(release)
    with Store(tmp_path / "w.db") as store:
        files = [sums, *pointers] if order == "checksums first" else [*pointers, sums]
        imported(store, *files)
        assert store.artifacts() == []  # nothing registered: imports only
        hits = detect(store, repack(release))
    assert torrent_hits(hits) == {
        ("high", f"model.safetensors:{big.size}", "manifest", big.name),
        ("medium", f"total:{release.total_size}", "manifest", None)}
    (high,) = [h for h in hits if h.severity == "high"]
    assert high.model == MODEL
    assert "(imported indicators)" in high.context
    assert high.matcher_version.startswith("indicator:")


@pytest.mark.parametrize("which", ["checksums", "pointers"])
def test_either_import_alone_is_not_enough(release: Release, tmp_path: Path,
                                           which: str) -> None:
    """The names are in the checksum list and the sizes in the pointers: the hit above
    comes from joining them (the pointers alone give sizes of files below the size-alone
    threshold, the list alone no size)."""
    with Store(tmp_path / "w.db") as store:
        if which == "checksums":
            imported(store, release.root / "SHA256SUMS")
        else:
            imported(store, *lfs_pointers(release, tmp_path / "clone"))
        assert [h for h in detect(store, repack(release)) if h.severity == "high"] == []


def test_the_cli_import_that_joins_a_size_rematches_a_stored_torrent(
        release: Release, tmp_path: Path) -> None:
    """A torrent stored before the registry knew it: importing the checksum list finds
    nothing; importing the pointers (known digests, new sizes) matches it again."""
    db = tmp_path / "w.db"
    with Store(db) as store:
        store.save_document(repack(release), [], None)

    def cli(*args: str) -> str:
        result = CliRunner().invoke(main, ["--db", str(db), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    out = cli("indicators", "import", str(release.root / "SHA256SUMS"), "--model", MODEL)
    assert out.strip() == f"{release.root / 'SHA256SUMS'}: 3 indicators read, 3 new for {MODEL}"
    def torrent_rows() -> list[tuple]:
        return [(h["kind"], h["severity"], h["indicator"], h["artifact"])
                for h in json.loads(cli("hits", "--format", "json")) if h["kind"] == "torrent"]

    assert torrent_rows() == []
    pointer = lfs_pointers(release, tmp_path / "clone")[1]
    assert pointer.name == "model.safetensors"
    out = cli("indicators", "import", str(pointer), "--model", MODEL)
    assert out.strip() == (f"{pointer}: 1 indicators read, 0 new for {MODEL}; "
                           "1 known digests newly named or sized")
    assert torrent_rows() == [
        ("torrent", "high", f"model.safetensors:{weights(release).size}",
         "heron-7b/model.safetensors")]


# --- merge semantics ---------------------------------------------------------------------


def test_one_digest_from_two_sources_keeps_the_name_and_the_size(
        release: Release, tmp_path: Path) -> None:
    big = weights(release)
    with Store(tmp_path / "w.db") as store:
        imported(store, *lfs_pointers(release, tmp_path / "clone"), release.root / "SHA256SUMS")
        row = store.db.execute("SELECT name, size, source FROM indicators WHERE value = ?",
                               [big.sha256]).fetchone()
        files = [(f["name"], f["size"]) for f in store.imported_files()]
    # The row keeps its first source and gains what it lacked; both claims are kept.
    assert row == (big.name, big.size, "import:model.safetensors:2")
    assert (big.name, big.size) in files


def test_two_names_of_one_digest_are_both_kept_and_both_match(
        release: Release, tmp_path: Path) -> None:
    big = weights(release)
    hub_name = "original/consolidated.00.safetensors"
    renamed = tmp_path / "renamed.sha256"
    renamed.write_text(f"{big.sha256}  {hub_name}\n", encoding="ascii")
    with Store(tmp_path / "w.db") as store:
        imported(store, release.root / "SHA256SUMS", renamed,
                 *lfs_pointers(release, tmp_path / "clone"))
        names = {f["name"] for f in store.imported_files() if f["size"] == big.size}
        assert names == {big.name, hub_name}
        as_released = detect(store, repack(release))
        layout_renamed = repack(release)
        for entry in layout_renamed.extras["torrent"]["files"]:
            if entry["path"].endswith("/model.safetensors"):
                entry["path"] = "x/consolidated.00.safetensors"
        as_renamed = detect(store, layout_renamed)
    assert ("high", f"model.safetensors:{big.size}", "manifest", big.name) in \
        torrent_hits(as_released)
    assert ("high", f"consolidated.00.safetensors:{big.size}", "manifest", hub_name) in \
        torrent_hits(as_renamed)


def test_a_size_contradicting_the_known_one_stops_the_import(
        release: Release, tmp_path: Path) -> None:
    big = weights(release)
    bad = tmp_path / "bad-pointer"
    bad.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{big.sha256}\n"
                   f"size {big.size + 1}\n", encoding="ascii")
    with Store(tmp_path / "w.db") as store:
        imported(store, *lfs_pointers(release, tmp_path / "clone"))
        before = store.db.execute("SELECT COUNT(*) FROM indicator_files").fetchone()
        with pytest.raises(IndicatorFileError) as info:
            imported(store, bad)
        after = store.db.execute("SELECT COUNT(*) FROM indicator_files").fetchone()
    message = str(info.value)
    assert message == (f"{bad}: line 2: size {big.size + 1} for sha256 {big.sha256[:16]}..., "
                       f"but import:model.safetensors:2 gave {big.size}")
    assert before == after


def test_a_size_list_joins_names_to_sizes(release: Release, tmp_path: Path) -> None:
    # `du -b heron-7b/*` run where the release was built.
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("".join(f"{f.size}\t./{f.name}\n" for f in release.files), encoding="ascii")
    parsed = parse_indicator_file(sizes.read_bytes())
    assert parsed.indicators == []
    assert parsed.files == [FileEntry(f.name, f.size, i) for i, f in enumerate(release.files, 1)]
    big = weights(release)
    with Store(tmp_path / "w.db") as store:
        imported(store, release.root / "SHA256SUMS", sizes)
        hits = detect(store, repack(release))
    assert ("high", f"model.safetensors:{big.size}", "manifest", big.name) in torrent_hits(hits)


# --- hub model info and our own .torrent -------------------------------------------------


def hub_model_info(release: Release) -> dict:
    """`GET /api/models/acme/heron-7b?blobs=true` as the Hugging Face hub answers it: small
    text files in git (blobId and size only), weights in LFS (sha256, size, pointerSize)."""
    siblings: list[dict] = [{"rfilename": ".gitattributes", "blobId": "a" * 40, "size": 1519}]
    for f in release.files:
        entry: dict = {"rfilename": f.name.split("/", 1)[1], "blobId": f.sha1, "size": f.size}
        if f.name.endswith(".safetensors"):
            entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 135}
        siblings.append(entry)
    return {"_id": "6650" + "0" * 20, "id": "acme/heron-7b", "modelId": "acme/heron-7b",
            "author": "acme", "sha": "b" * 40, "private": False, "gated": "manual",
            "disabled": False, "tags": ["safetensors"], "siblings": siblings,
            "usedStorage": release.total_size}


def test_a_hub_model_info_import_names_and_sizes_lfs_files(
        release: Release, tmp_path: Path) -> None:
    path = tmp_path / "model-info.json"
    path.write_text(json.dumps(hub_model_info(release)), encoding="utf-8")
    parsed = parse_indicator_file(path.read_bytes())
    big = weights(release)
    assert parsed.indicators == [Indicator("sha256", big.sha256, "model.safetensors", big.size,
                                           None, "siblings[2]")]
    # Files in git give their names and sizes (no digest of the file is given).
    assert [(e.name, e.size, e.origin) for e in parsed.files] == [
        (".gitattributes", 1519, "siblings[0]"), ("config.json", 598, "siblings[1]"),
        ("tokenizer.json", 16824, "siblings[3]")]
    with Store(tmp_path / "w.db") as store:
        imported(store, path)
        hits = detect(store, repack(release))
    assert ("high", f"model.safetensors:{big.size}", "manifest", "model.safetensors") in \
        torrent_hits(hits)


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_our_released_torrent_imports_its_file_list(release: Release, tmp_path: Path,
                                                    which: str) -> None:
    path = release.root / (f"{MODEL}.torrent" if which == "v1" else f"{MODEL}-v2.torrent")
    parsed = parse_indicator_file(path.read_bytes())
    infohash = release.infohash if which == "v1" else release.infohash_v2
    assert parsed.indicators[0] == Indicator("btih" if which == "v1" else "btmh", infohash,
                                             MODEL, release.total_size, origin="info")
    listed = [(e.name, e.size) for e in parsed.files] + [
        (i.name, i.size) for i in parsed.indicators if i.algo == "pieces_root"]
    assert sorted(listed) == sorted((f.name, f.size) for f in release.files)
    if which == "v2":  # each file's pieces root, named and sized
        assert {i.value for i in parsed.indicators[1:]} == {f.pieces_root for f in release.files}
    big = weights(release)
    with Store(tmp_path / "w.db") as store:
        imported(store, path)
        out = CliRunner().invoke(main, ["--db", str(tmp_path / "w.db"), "indicators", "import",
                                        str(path), "--model", MODEL])
        hits = detect(store, repack(release))
    assert out.exit_code == 0
    files = len(release.files) if which == "v1" else 0
    sized = f", {files} files' names and sizes read" if files else ""
    assert out.stdout.strip() == (f"{path}: {len(parsed.indicators)} indicators read{sized}, "
                                  f"0 new for {MODEL}")
    assert torrent_hits(hits) == {
        ("high", f"model.safetensors:{big.size}", "manifest", big.name),
        ("medium", f"total:{release.total_size}", "manifest", None)}


# --- hard negatives ----------------------------------------------------------------------


@pytest.fixture
def registry_of_imports(release: Release, tmp_path: Path) -> Store:
    s = Store(tmp_path / "w.db")
    imported(s, release.root / "SHA256SUMS", *lfs_pointers(release, tmp_path / "clone"))
    yield s
    s.close()


def test_the_right_names_with_other_sizes_are_no_hit(release: Release,
                                                     registry_of_imports: Store) -> None:
    other = {f.name: f.size + 4096 for f in release.files}
    assert detect(registry_of_imports, repack(release, sizes=other)) == []


def test_the_right_sizes_of_small_files_only_are_no_hit(release: Release,
                                                        registry_of_imports: Store) -> None:
    # The weights replaced by other bytes of another size; config and tokenizer as released.
    big = weights(release)
    hits = detect(registry_of_imports, repack(release, sizes={big.name: big.size - 1}))
    assert [h for h in hits if h.kind == "torrent"] == []


# --- hostile input: one line naming the file ---------------------------------------------


def bad_import(tmp_path: Path, name: str, data: bytes | None = None, *,
               size: int | None = None) -> str:
    path = tmp_path / name
    path.write_bytes(data or b"")
    if size is not None:
        with path.open("r+b") as f:
            f.truncate(size)  # sparse: the size is what is checked first
    with Store(tmp_path / "w.db") as store, pytest.raises(IndicatorFileError) as info:
        import_indicators(store, path, model=MODEL, rematch=None)
    with Store(tmp_path / "w.db") as store:
        assert store.registry_counts()["indicators"] == 0
        assert store.imported_files() == []
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_a_huge_json_is_refused_unread(tmp_path: Path) -> None:
    assert bad_import(tmp_path, "model-info.json", b"{", size=65 * 2**20) == (
        "larger than 64 MiB; not an indicator list")


@pytest.mark.parametrize(("size", "where"), [
    ("-1", "siblings[0].lfs.size"), ('"12"', "siblings[0].lfs.size"),
    ("1e30", "siblings[0].lfs.size"), ("true", "siblings[0].lfs.size"),
    (str(2**60), "siblings[0].lfs.size")])
def test_bad_sizes_in_hub_json(tmp_path: Path, size: str, where: str) -> None:
    doc = ('{"siblings": [{"rfilename": "w.safetensors", "size": 5, "lfs": {"sha256": "'
           + "a" * 64 + f'", "size": {size}}}}}]}}')
    assert bad_import(tmp_path, "model-info.json", doc.encode()).startswith(f"{where}: ")


@pytest.mark.parametrize(("text", "fragment"), [
    (f"version https://git-lfs.github.com/spec/v1\noid sha256:{'a' * 64}\nsize {2**60}\n",
     f"line 3: size {2**60} is larger than any real file"),
    (f"{2**55}  model.safetensors\n", f"line 1: size {2**55} is larger than any real file"),
    ("12345678901234567890123  model.safetensors\n", "line 1: unsupported digest length 23"),
])
def test_bad_sizes_in_text(tmp_path: Path, text: str, fragment: str) -> None:
    assert bad_import(tmp_path, "sizes.txt", text.encode()).startswith(fragment)


@pytest.mark.parametrize(("data", "fragment"), [
    # Nesting a million deep inside the info dict.
    (b"d4:infod1:x" + b"l" * 1_000_000 + b"e" * 1_000_002, "torrent: not a valid .torrent"),
    # A string claiming a terabyte.
    (b"d4:infod4:name1000000000000:x", "torrent: not a valid .torrent"),
    # Truncated metainfo and a non-dict info.
    (b"d8:announce3:abc4:info", "torrent: not a valid .torrent"),
    (b"d4:infoi3ee", "torrent: not a valid .torrent"),
    # Over the .torrent cap.
    (b"d4:info" + b"0" * (11 * 2**20), "torrent: not a valid .torrent"),
])
def test_a_torrent_bomb_is_one_line(tmp_path: Path, data: bytes, fragment: str) -> None:
    assert bad_import(tmp_path, "evil.torrent", data).startswith(fragment)


def test_binary_that_is_not_a_torrent_is_one_line(tmp_path: Path) -> None:
    assert bad_import(tmp_path, "x.bin", b"abc\n\xff\xfe") == (
        "line 2: not UTF-8 text (nor a .torrent)")


def test_a_checksum_line_starting_with_d_is_not_taken_for_bencode() -> None:
    md5_of_nothing = "d41d8cd98f00b204e9800998ecf8427e"
    assert parse_indicator_file(f"{md5_of_nothing}  empty.txt\n".encode()).indicators == \
        parse_indicator_text(f"{md5_of_nothing}  empty.txt\n") == [
            Indicator("md5", md5_of_nothing, "empty.txt", None, 1)]


# --- imports beside registered files, magnets, hub files kept in git ---------------------


def test_a_file_both_registered_and_imported_is_one_hit(release: Release, tmp_path: Path) -> None:
    from monitor.registry import register_paths

    big = weights(release)
    with Store(tmp_path / "w.db") as store:
        imported(store, release.root / "SHA256SUMS", *lfs_pointers(release, tmp_path / "clone"))
        register_paths(store, [release.root / MODEL], model=MODEL, release="v1",
                       tensors=False, rematch=None)
        hits = detect(store, repack(release))
    assert torrent_hits(hits) == {
        ("high", f"model.safetensors:{big.size}", "manifest", big.name),
        ("medium", f"total:{release.total_size}", "manifest", None)}
    (high,) = [h for h in hits if h.severity == "high"]
    assert high.matcher_version.startswith("artifact:")  # the registered file's, once
    (total,) = [h for h in hits if h.severity == "medium"]
    assert "heron-7b v1 (3 files)" in total.context


def test_a_magnets_length_is_a_release_total(release: Release, tmp_path: Path) -> None:
    """Our magnets give the torrent's name and total size (`dn`, `xl`): a re-pack with the
    same total is medium, and no file is named by them."""
    with Store(tmp_path / "w.db") as store:
        imported(store, release.root / f"{MODEL}.magnets")
        hits = detect(store, repack(release))
        other_total = detect(store, repack(release, sizes={release.files[0].name: 1}))
    assert torrent_hits(hits) == {("medium", f"total:{release.total_size}", "manifest", None)}
    assert f"the total size of {MODEL}'s released torrent {MODEL}" in hits[0].context
    assert torrent_hits(other_total) == set()


def test_a_hub_file_kept_in_git_counts_by_its_name_and_size(tmp_path: Path) -> None:
    """A tokenizer of 2 MB that the repository keeps in git (no LFS, so no digest of it):
    its name and size from the model info are enough for a name-and-size hit."""
    info = {"id": "acme/heron-7b", "siblings": [
        {"rfilename": "tokenizer.json", "blobId": "c" * 40, "size": 2_113_415},
        {"rfilename": "model.safetensors", "blobId": "d" * 40, "size": 9_000_000,
         "lfs": {"sha256": "e" * 64, "size": 9_000_000, "pointerSize": 134}}]}
    path = tmp_path / "model-info.json"
    path.write_text(json.dumps(info), encoding="utf-8")
    doc = Document(target="t", key="k", url="http://127.0.0.1:1/t/1", text="x", title="x",
                   extras={"torrent": {"name": "x", "total_size": 1, "files": [
                       {"path": "x/tokenizer.json", "length": 2_113_415, "pieces_root": None},
                       {"path": "x/tokenizer.json.bak", "length": 2_113_414,
                        "pieces_root": None}]}})
    with Store(tmp_path / "w.db") as store:
        imported(store, path)
        hits = detect(store, doc)
    assert torrent_hits(hits) == {("high", "tokenizer.json:2113415", "manifest",
                                   "tokenizer.json")}
    assert hits[0].matcher_version.startswith("file:")
