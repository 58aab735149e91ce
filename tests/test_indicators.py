"""fingerprints.indicators: checksum lists, magnets, encodings and free-text scanning."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from fingerprints.indicators import (
    Indicator,
    IndicatorError,
    Magnet,
    Token,
    btih_to_hex,
    md5_b64_to_hex,
    parse_indicator_text,
    parse_magnet,
    scan_text,
)

DATA = b"consolidated.00.pth contents"
MD5 = hashlib.md5(DATA).hexdigest()
SHA1 = hashlib.sha1(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()
# Infohashes are just SHA-1 / SHA-256 values; derive them from distinct bytes.
BTIH = hashlib.sha1(b"info dict v1").hexdigest()
BTMH = hashlib.sha256(b"info dict v2").hexdigest()
BTIH_B32 = base64.b32encode(bytes.fromhex(BTIH)).decode()


# --- encodings -------------------------------------------------------------------------


def test_btih_base32_and_hex_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(50):
        raw = rng.randbytes(20)
        b32 = base64.b32encode(raw).decode()
        assert len(b32) == 32
        assert btih_to_hex(b32) == raw.hex()
        assert btih_to_hex(b32.lower()) == raw.hex()
        assert btih_to_hex(raw.hex().upper()) == raw.hex()
        assert base64.b32encode(bytes.fromhex(btih_to_hex(b32))).decode() == b32


@pytest.mark.parametrize(
    "bad",
    ["", "abc", BTIH[:-1], BTIH + "0", BTIH_B32[:-1], BTIH_B32 + "A", "1" * 32, "g" * 40],
)
def test_btih_rejects_other_shapes(bad: str) -> None:
    with pytest.raises(ValueError):
        btih_to_hex(bad)


def test_md5_base64_as_imageboards_write_it() -> None:
    for payload in (b"", b"x", DATA, bytes(range(256))):
        digest = hashlib.md5(payload)
        b64 = base64.b64encode(digest.digest()).decode()
        assert len(b64) == 24 and b64.endswith("==")
        assert md5_b64_to_hex(b64) == digest.hexdigest()
        assert md5_b64_to_hex(b64.rstrip("=")) == digest.hexdigest()


@pytest.mark.parametrize(
    "bad",
    [
        base64.b64encode(b"\x00" * 15).decode(),
        base64.b64encode(b"\x00" * 17).decode(),
        base64.b64encode(b"\x00" * 20).decode(),
        "not base64 at all!!",
        "",
    ],
)
def test_md5_base64_rejects_anything_but_16_bytes(bad: str) -> None:
    with pytest.raises(ValueError):
        md5_b64_to_hex(bad)


# --- magnets ---------------------------------------------------------------------------


def test_magnet_with_btih_btmh_name_length_and_trackers() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{BTIH.upper()}&xt=urn:btmh:1220{BTMH.upper()}"
        "&dn=LLaMA%207B%20weights&xl=13476939516"
        "&tr=udp%3A%2F%2Ftracker.example%3A1337%2Fannounce&tr=http://t2.example/announce"
    )
    m = parse_magnet(uri)
    assert m == Magnet(
        btih=BTIH,
        btmh=BTMH,
        name="LLaMA 7B weights",
        length=13476939516,
        trackers=("udp://tracker.example:1337/announce", "http://t2.example/announce"),
    )


def test_magnet_base32_html_escaped_and_numbered_xt() -> None:
    m = parse_magnet(f"MAGNET:?dn=llama+65b&amp;xt.1=URN:BTIH:{BTIH_B32.lower()}&amp;xl=5")
    assert (m.btih, m.btmh, m.name, m.length, m.trackers) == (BTIH, None, "llama 65b", 5, ())


def test_magnet_v2_only_and_unknown_xt_ignored() -> None:
    m = parse_magnet(f"magnet:?xt=urn:ed2k:31d6cfe0d16ae931b73c59d7e0c089c0&xt=urn:btmh:1220{BTMH}")
    assert m.btih is None and m.btmh == BTMH and m.name is None and m.length is None


@pytest.mark.parametrize(
    "bad",
    [
        "magnet:?dn=only+a+name&xl=1",
        f"magnet:?xt=urn:btih:{BTIH[:-2]}",
        f"magnet:?xt=urn:btmh:1114{BTMH}",  # sha1 multihash code, not a v2 infohash
        f"http://example/?xt=urn:btih:{BTIH}",
    ],
)
def test_magnet_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_magnet(bad)


# --- indicator files -------------------------------------------------------------------


def test_gnu_coreutils_lines_text_and_binary_mode() -> None:
    text = (
        f"{MD5}  consolidated.00.pth\n"
        f"{SHA1.upper()} *params.json\n"
        f"{SHA256}  dir/tokenizer model.bin\n"
        f"\\{SHA256}  weird\\nname\\\\x\n"
    )
    assert parse_indicator_text(text) == [
        Indicator("md5", MD5, "consolidated.00.pth", None, 1),
        Indicator("sha1", SHA1, "params.json", None, 2),
        Indicator("sha256", SHA256, "dir/tokenizer model.bin", None, 3),
        Indicator("sha256", SHA256, "weird\nname\\x", None, 4),
    ]


def test_gnu_output_of_hashlib_matches_what_sha256sum_would_print() -> None:
    names = ["a.bin", "b c.safetensors", "(1).pth"]
    text = "".join(f"{hashlib.sha256(n.encode()).hexdigest()}  {n}\n" for n in names)
    got = parse_indicator_text(text)
    assert [(i.name, i.value) for i in got] == [
        (n, hashlib.sha256(n.encode()).hexdigest()) for n in names
    ]


def test_bsd_and_shasum_tag_lines() -> None:
    text = (
        f"SHA256 (consolidated.00.pth) = {SHA256}\n"
        f"MD5 (x (2).bin) = {MD5.upper()}\n"
        f"SHA1 (params.json) = {SHA1}\n"
        f"SHA2-256(openssl.out)= {SHA256}\n"
    )
    assert parse_indicator_text(text) == [
        Indicator("sha256", SHA256, "consolidated.00.pth", None, 1),
        Indicator("md5", MD5, "x (2).bin", None, 2),
        Indicator("sha1", SHA1, "params.json", None, 3),
        Indicator("sha256", SHA256, "openssl.out", None, 4),
    ]


def test_magnet_lines_comments_blank_lines_and_prefixed_infohashes() -> None:
    text = (
        "\ufeff# leaked torrents, collected 2023-03-03\n"
        "\n"
        f"magnet:?xt=urn:btih:{BTIH}&xt=urn:btmh:1220{BTMH}&dn=LLaMA&xl=219&tr=udp://t\n"
        "   # indented comment\n"
        f"urn:btih:{BTIH_B32}\n"
        f"btih:{BTIH.upper()}  LLaMA again\n"
        f"urn:btmh:1220{BTMH}\n"
    )
    assert parse_indicator_text(text) == [
        Indicator("btih", BTIH, "LLaMA", 219, 3),
        Indicator("btmh", BTMH, "LLaMA", 219, 3),
        Indicator("btih", BTIH, None, None, 5),
        Indicator("btih", BTIH, "LLaMA again", None, 6),
        Indicator("btmh", BTMH, None, None, 7),
    ]


def test_lone_hex_lines_are_typed_by_length_and_a_lone_40_hex_is_sha1_and_btih() -> None:
    text = f"{MD5}\r\n{BTIH.upper()}\r\n{SHA256}\r\n"
    assert [(i.algo, i.value, i.name, i.line) for i in parse_indicator_text(text)] == [
        ("md5", MD5, None, 1),
        ("sha1", BTIH, None, 2),
        ("btih", BTIH, None, 2),
        ("sha256", SHA256, None, 3),
    ]


def test_a_named_40_hex_line_is_sha1sum_output_only() -> None:
    assert parse_indicator_text(f"{SHA1}  params.json\n") == [
        Indicator("sha1", SHA1, "params.json", None, 1)]


def test_bare_base32_infohash_line() -> None:
    text = f"{BTIH_B32}\n  {BTIH_B32.lower()}  \n"
    assert parse_indicator_text(text) == [
        Indicator("btih", BTIH, None, None, 1),
        Indicator("btih", BTIH, None, None, 2),
    ]


def test_a_32_character_line_of_hex_is_an_md5_not_base32() -> None:
    # "abcdef234567..." is valid base32 too; hex is what checksum lists hold.
    hexlike = ("abcdef234567" * 3)[:32]
    assert parse_indicator_text(hexlike) == [Indicator("md5", hexlike, None, None, 1)]


@pytest.mark.parametrize("bad", [BTIH_B32[:-1], BTIH_B32 + "A", BTIH_B32[:-1] + "1"])
def test_near_base32_lines_are_errors(bad: str) -> None:
    with pytest.raises(IndicatorError, match="line 1: not a checksum line"):
        parse_indicator_text(bad)


def test_meta_checklist_chk() -> None:
    # The shape of the checklist.chk Meta shipped in each LLaMA folder: md5sum output.
    files = {"consolidated.00.pth": b"shard zero", "consolidated.01.pth": b"shard one",
             "params.json": b'{"dim": 4096}'}
    text = "".join(f"{hashlib.md5(data).hexdigest()}  {name}\n" for name, data in files.items())
    assert parse_indicator_text(text) == [
        Indicator("md5", hashlib.md5(data).hexdigest(), name, None, n)
        for n, (name, data) in enumerate(files.items(), 1)]


# --- model-hub JSON --------------------------------------------------------------------


def hub_model_info(**extra: object) -> dict:
    return {
        "id": "acme/heron-7b", "sha": "0" * 40, **extra,
        "siblings": [
            {"rfilename": ".gitattributes", "blobId": "1" * 40, "size": 1519},
            {"rfilename": "config.json", "blobId": "2" * 40, "size": 600},
            {"rfilename": "model-00001-of-00002.safetensors", "blobId": "3" * 40,
             "size": 4_976_698_672,
             "lfs": {"sha256": SHA256, "size": 4_976_698_672, "pointerSize": 135}},
            {"rfilename": "model-00002-of-00002.safetensors", "blobId": "4" * 40,
             "size": 9000, "lfs": {"sha256": BTMH.upper(), "size": 9000, "pointerSize": 134}},
        ],
    }


def test_hub_model_info_json_gives_lfs_sha256_named_and_sized() -> None:
    import json

    text = json.dumps(hub_model_info(), indent=2)
    assert parse_indicator_text(text) == [
        Indicator("sha256", SHA256, "model-00001-of-00002.safetensors", 4_976_698_672, None,
                  "siblings[2]"),
        Indicator("sha256", BTMH, "model-00002-of-00002.safetensors", 9000, None,
                  "siblings[3]"),
    ]


def test_hub_tree_json_gives_lfs_oids_and_skips_directories_and_git_blobs() -> None:
    import json

    tree = [
        {"type": "directory", "oid": "5" * 40, "size": 0, "path": "onnx"},
        {"type": "file", "oid": "6" * 40, "size": 600, "path": "config.json"},
        {"type": "file", "oid": "7" * 40, "size": 12, "path": "onnx/model.onnx",
         "lfs": {"oid": SHA256, "size": 90_000_000, "pointerSize": 133}},
    ]
    assert parse_indicator_text("\ufeff\n  " + json.dumps(tree)) == [
        Indicator("sha256", SHA256, "onnx/model.onnx", 90_000_000, None, "[2]")]


def test_hub_model_info_without_blobs_is_refused_not_silently_empty() -> None:
    import json

    text = json.dumps({"id": "acme/heron-7b", "siblings": [{"rfilename": "config.json"},
                                                           {"rfilename": "model.bin"}]})
    with pytest.raises(IndicatorError, match=r"^siblings: .*blobs=true"):
        parse_indicator_text(text)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('{"id": "x", "siblings": [', r"^line 1: not valid JSON: .*column"),
        ('{\n"id": "x",\n"siblings": [}\n', r"^line 3: not valid JSON"),
        ('{"id": "x"}', r"^siblings: .*'siblings' list"),
        ('{"siblings": [7]}', r"^siblings\[0\]: expected an object"),
        ('{"siblings": [{"size": 1}]}', r"^siblings\[0\]\.rfilename: missing"),
        ('{"siblings": [{"rfilename": "a", "lfs": {"sha256": "abc"}}]}',
         r"^siblings\[0\]\.lfs\.sha256: expected a SHA-256 \(64 hex characters\), got 'abc'"),
        ('{"siblings": [{"rfilename": "a", "lfs": {"size": 3}}]}',
         r"^siblings\[0\]\.lfs\.sha256: .*got missing"),
        ('{"siblings": [{"rfilename": "a", "size": -1}]}', r"^siblings\[0\]\.size: "),
        ('{"siblings": [{"rfilename": "a", "lfs": {"sha256": "%s", "size": true}}]}' % SHA256,
         r"^siblings\[0\]\.lfs\.size: expected a size"),
        ('[{"type": "file", "path": "a", "lfs": {"oid": "%s"}}]' % SHA256[:-1],
         r"^\[0\]\.lfs\.oid: "),
        ('[{"type": "symlink", "path": "a"}]', r"^\[0\]\.type: unknown entry type"),
        ("[" * 100_000, r"(nested too deeply|not valid JSON)"),
    ],
)
def test_bad_hub_json_names_the_line_or_entry(doc: str, message: str) -> None:
    with pytest.raises(IndicatorError, match=message):
        parse_indicator_text(doc)


def test_git_lfs_pointer() -> None:
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{SHA256}\nsize 13476939516\n"
    assert parse_indicator_text(text) == [Indicator("sha256", SHA256, None, 13476939516, 2)]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (f"{MD5}  ok.bin\n\nthis is not a checksum\n", 3, "not a checksum line or magnet link"),
        (f"# c\n{SHA256}  a\nSHA512 (a) = {SHA256}{SHA256}\n", 3, "SHA512"),
        (f"SHA1 (a) = {MD5}\n", 1, "sha1 digest must be 40 hex characters, not 32"),
        ("deadbeef  short.bin\n", 1, "length 8"),
        ("\n\nmagnet:?dn=no+hash\n", 3, "btih"),
        (f"btih:{BTIH[:-1]}\n", 1, "infohash"),
        ("size 12\n", 1, "not a checksum line"),
    ],
)
def test_bad_lines_name_their_line_number(text: str, line: int, fragment: str) -> None:
    with pytest.raises(IndicatorError) as info:
        parse_indicator_text(text)
    assert str(info.value).startswith(f"line {line}: ")
    assert fragment in str(info.value)
    assert info.value.line == line
    assert isinstance(info.value, ValueError)


def test_error_quotes_at_most_60_characters_of_the_line() -> None:
    long_line = "x" * 200
    with pytest.raises(IndicatorError) as info:
        parse_indicator_text(long_line)
    assert str(info.value) == f"line 1: not a checksum line or magnet link: {'x' * 60}"


# --- scanning free text ----------------------------------------------------------------


def _values(tokens: list[Token]) -> list[str]:
    return [t.value for t in tokens]


def test_scan_finds_bare_hex_with_spans_and_lowercases() -> None:
    text = f"md5 {MD5.upper()}, sha1=({SHA1}) and sha256:{SHA256}."
    tokens = scan_text(text)
    assert _values(tokens) == [MD5, SHA1, SHA256]
    for t in tokens:
        assert t.encoding == "hex" and t.algo_hint is None
        assert text[t.start : t.end] == t.raw
        assert t.raw.lower() == t.value
    assert tokens[0].raw == MD5.upper()


@pytest.mark.parametrize("length", [31, 33, 39, 41, 63, 65, 70, 128])
def test_scan_ignores_other_hex_lengths(length: int) -> None:
    run = (SHA256 * 3)[:length]
    assert scan_text(f"see {run} here") == []


def test_scan_ignores_hex_embedded_in_longer_alphanumeric_runs() -> None:
    assert scan_text("deadbeef" * 8 + "abcdef") == []  # 70 hex: no 64-char slice
    assert scan_text(f"x{SHA256}") == []
    assert scan_text(f"{SHA256}g") == []
    assert scan_text(f"sessionid_{MD5}Z") == []
    # Punctuation and underscores are boundaries; letters and digits are not.
    assert _values(scan_text(f"_{MD5}_ /{SHA1}/ \"{SHA256}\"")) == [MD5, SHA1, SHA256]


def test_scan_finds_magnet_infohashes_hex_base32_and_v2() -> None:
    text = (
        f"grab it: magnet:?xt=urn:btih:{BTIH.upper()}&dn=llama\n"
        f"old client: magnet:?xt=urn:btih:{BTIH_B32}&dn=llama\n"
        f"v2: magnet:?xt=urn:btmh:1220{BTMH}&dn=llama"
    )
    tokens = scan_text(text)
    assert [(t.value, t.encoding, t.algo_hint) for t in tokens] == [
        (BTIH, "magnet", "btih"),
        (BTIH, "base32", "btih"),
        (BTMH, "magnet", "btmh"),
    ]
    assert [t.raw for t in tokens] == [BTIH.upper(), BTIH_B32, BTMH]
    assert all(text[t.start : t.end] == t.raw for t in tokens)


def test_scan_finds_html_escaped_and_percent_encoded_magnets() -> None:
    html = (
        f'<a href="magnet:?xt=urn:btih:{BTIH}&amp;xt=urn:btmh:1220{BTMH}&amp;dn=x">dl</a>'
        f'<a href="/go?u=magnet%3A%3Fxt%3Durn%3Abtih%3A{BTIH_B32.lower()}%26dn%3Dx">dl2</a>'
    )
    tokens = scan_text(html)
    assert [(t.value, t.algo_hint) for t in tokens] == [
        (BTIH, "btih"),
        (BTMH, "btmh"),
        (BTIH, "btih"),
    ]


def test_scan_reports_a_magnet_hash_once_and_keeps_text_order() -> None:
    # A 40-hex btih is also a bare 40-hex run, and an all-A-F/2-7 base32 value is also a
    # 32-hex run: each must come back once, as the magnet token.
    b32_hexlike = "ABCDEF234567" * 2 + "ABCDEF23"
    text = f"{MD5} magnet:?xt=urn:btih:{BTIH} x magnet:?xt=urn:btih:{b32_hexlike} {SHA1}"
    tokens = scan_text(text)
    assert [(t.encoding, t.raw) for t in tokens] == [
        ("hex", MD5),
        ("magnet", BTIH),
        ("base32", b32_hexlike),
        ("hex", SHA1),
    ]
    assert tokens[2].value == base64.b32decode(b32_hexlike).hex()
    assert [t.start for t in tokens] == sorted(t.start for t in tokens)


def test_scan_ignores_bare_base32_and_malformed_magnets() -> None:
    assert scan_text(f"random words {BTIH_B32} more words") == []
    assert scan_text(f"magnet:?xt=urn:btih:{BTIH}0&dn=x") == []  # 41 chars
    assert scan_text(f"magnet:?xt=urn:btmh:1220{BTMH[:-1]}") == []
    assert scan_text("the llama (an animal) ate 42 leaves") == []


# --- importing into the registry (monitor.registry, a real SQLite file) ------------------


def _imported(tmp_path, name: str, text: str, duplicates: int = 0) -> list[tuple]:
    from monitor.registry import import_indicators
    from monitor.store import Store

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with Store(tmp_path / "w.db") as store:
        result = import_indicators(store, path, model="heron-7b")
        rows = store.db.execute(
            "SELECT algo, value, name, size, source FROM indicators ORDER BY id").fetchall()
    assert result.parsed - duplicates == len(rows) == result.added
    return rows


def test_import_checklist_chk_keeps_file_and_line(tmp_path) -> None:
    rows = _imported(tmp_path, "checklist.chk", f"{MD5}  consolidated.00.pth\n")
    assert rows == [("md5", MD5, "consolidated.00.pth", None, "import:checklist.chk:1")]


def test_import_bare_infohashes_as_registry_rows(tmp_path) -> None:
    # The base32 line 3 is the same infohash as line 2: read, but nothing new.
    rows = _imported(tmp_path, "hashes.txt", f"# pasted from a chat\n{BTIH}\n{BTIH_B32}\n",
                     duplicates=1)
    assert rows == [("sha1", BTIH, None, None, "import:hashes.txt:2"),
                    ("btih", BTIH, None, None, "import:hashes.txt:2")]


def test_import_hub_json_source_names_the_entry(tmp_path) -> None:
    import json

    rows = _imported(tmp_path, "model-info.json", json.dumps(hub_model_info()))
    assert rows == [
        ("sha256", SHA256, "model-00001-of-00002.safetensors", 4_976_698_672,
         "import:model-info.json:siblings[2]"),
        ("sha256", BTMH, "model-00002-of-00002.safetensors", 9000,
         "import:model-info.json:siblings[3]"),
    ]


def test_import_malformed_json_is_one_line_naming_the_file(tmp_path) -> None:
    from monitor.registry import IndicatorFileError, import_indicators
    from monitor.store import Store

    path = tmp_path / "tree.json"
    path.write_text('[\n  {"type": "file", "path": "a",\n  "lfs": {"oid": }}\n]\n')
    with Store(tmp_path / "w.db") as store, pytest.raises(IndicatorFileError) as info:
        import_indicators(store, path, model="heron-7b")
    message = str(info.value)
    assert message.startswith(f"{path}: line 3: not valid JSON")
    assert "\n" not in message
