"""Short and partial hashes (issue 18): AutoV1, AutoV2, AutoV3, CRC32 and BLAKE3 kept in the
registry, carried by bundles and imported from Civitai records, and recognised in posts
only in naming context, each hit stating the bits it rests on.

Real material: A1111 generation parameters as people posted them (A1111's own docstring of
its infotext parser, a Chinese prompt guide, a Colab tutorial, a blog post about gophers, a
ControlNet API example) and a Civitai model-version record (id 1050496, quoted whole in a
public ComfyUI LoRA-preset node); none of their hashes is ours, so none may hit, and one of
ours planted into the same blocks must.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fingerprints.algos import EMPTY_AUTOV1, SHORT_FORMS
from fingerprints.bundle import BundleError, parse_bundle
from fingerprints.indicators import IndicatorError, parse_indicator_file, scan_short_hashes
from monitor.bundle import bundle_from_store, import_bundle
from monitor.detect.digests import DigestDetector
from monitor.migrations import MIGRATIONS
from monitor.models import Document, Hit
from monitor.registry import import_indicators
from monitor.store import Store

MIB = 1 << 20

# --- real material ---------------------------------------------------------------------

# AUTOMATIC1111's infotext as its own parser documents it (an 8-hex AutoV1, 2022).
A1111_DOCSTRING = (
    "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, "
    "Model hash: 45dee52b")
# 10-hex AutoV2s, 2023 and 2024.
PROMPT_GUIDE = ("1girl, magic Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 2785601337, "
                "Size: 512x512, Model hash: fc2511737a, Model: chilloutmix_NiPrunedFp32Fix")
COLAB = ("An woman wearing an ais-metal bikini, standing on a tropical beach\n"
         "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1922608063, Size: 512x512, "
         "Model hash: a928fee35b, Model: albedobaseXL_v20-mid_140737-vid_281176, "
         "Version: v1.7.0")
GOPHERS = ("* Settings: Steps: 30, Sampler: Euler a, CFG scale: 10, Seed: 1643617518, "
           "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
           "Version: v1.6.0")
# A ControlNet model in A1111's checkpoint-title form.
CONTROLNET = ("Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 555, Size: 512x512, "
              "Model hash: fc2511737a, Model: chilloutmix_NiPrunedFp32Fix, Denoising "
              "strength: 0.75, Clip skip: 2, ControlNet 0: \"preprocessor: canny, model: "
              "control_sd15_canny [fef5e48e], weight: 1, starting/ending: (0, 1)\"")
# A1111 1.9 with LoRAs and embeddings (a script's sample output), and Forge with Flux.
LORAS = ("Steps: 6, Sampler: LCM, Schedule type: Automatic, CFG scale: 1.5, Seed: 3748719078, "
         "Size: 768x1024, Model hash: 19bbe9faa4, Model: fantasticmix_k2, VAE hash: "
         "07af11b95c, VAE: vae-ft-mse-840000-ema-pruned.safetensors, Clip skip: 2, Lora "
         'hashes: "LCM_15: aaebf6360f7d, ip-adapter-faceid-plusv2_sd15_lora: a95a0f4bdcb9", '
         'TI hashes: "MajicNegative_V2: a53884ef726b, badhandv4: 5e40d722fc3d", Downcast '
         "alphas_cumprod: True, Version: v1.9.4")
FLUX = ("Steps: 35\nSampler: Euler\nCFG scale: 1\nSeed: 348050396\nSize: 896x1152\n"
        "Model hash: 06f96f89f6\nModel: flux_dev\nLora hashes: \"flux_sad1es1nk: "
        'bd081f6e5b13"\nVersion: f2.0.1v1.10.1-previous-544-g86d00326')
REAL_BLOCKS = [A1111_DOCSTRING, PROMPT_GUIDE, COLAB, GOPHERS, CONTROLNET, LORAS, FLUX]
# Civitai's model-version API (GET /api/v1/model-versions/1050496), description and images
# left out.
CIVITAI_RECORD = {
    "id": 1050496, "modelId": 706978, "name": "V.3",
    "createdAt": "2024-11-11T11:46:50.924Z", "status": "Published",
    "trainedWords": ["aesthetic_pos3", "dynamic_pos3"], "baseModel": "Flux.1 D",
    "air": "urn:air:flux1:lora:civitai:706978@1050496",
    "model": {"name": "Realistic/Aesthetic Poses FluxDev", "type": "LORA", "nsfw": False,
              "poi": False},
    "files": [{
        "id": 956231, "sizeKB": 167938.8828125, "name": "aeshteticv5.safetensors",
        "type": "Model", "pickleScanResult": "Success",
        "pickleScanMessage": "No Pickle imports", "virusScanResult": "Success",
        "virusScanMessage": None, "scannedAt": "2024-11-11T11:50:59.770Z",
        "metadata": {"format": "SafeTensor", "size": None, "fp": None},
        "hashes": {
            "AutoV1": "88828AE7", "AutoV2": "21437EC266",
            "SHA256": "21437EC26670E230B067CA936F6657CAF5CA063F15AEC333EF249BEC7C0F0DC0",
            "CRC32": "F8F2BE29",
            "BLAKE3": "AAA6F513C4BFA00031941F3A427046D31A12B161CBE2CE75AAB260C74D13C0FC",
            "AutoV3": "7AAE878CB805"},
        "primary": True, "downloadUrl": "https://civitai.com/api/download/models/1050496"}],
}


# --- our release -----------------------------------------------------------------------


def short_hashes(data: bytes, tensor_data: bytes) -> dict[str, str]:
    """What register computes (fingerprints/digests.py, the register helper's): AutoV1
    over the 64 KiB at 1 MiB, AutoV3 over the tensor data, CRC32 of the file. BLAKE3 is
    not in hashlib: a stand-in value, which the store holds without recomputing."""
    return {"autov1": hashlib.sha256(data[MIB:MIB + 0x10000]).hexdigest(),
            "autov3": hashlib.sha256(tensor_data).hexdigest(),
            "crc32": f"{zlib.crc32(data):08x}",
            "blake3": hashlib.sha256(b"blake3 of " + data[:64]).hexdigest()}


@pytest.fixture(scope="module")
def weights() -> bytes:
    return random.Random(18).randbytes(MIB + 0x10000 + 4096)


@pytest.fixture(scope="module")
def ours(weights: bytes) -> dict[str, str]:
    found = short_hashes(weights, weights[4096:])
    found["sha256"] = hashlib.sha256(weights).hexdigest()
    return found


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, weights: bytes,
          ours: dict[str, str]) -> Iterator[Store]:
    with Store(tmp_path_factory.mktemp("db") / "ww.db") as store:
        artifact_id, _ = store.add_artifact(
            model="nai", name="animefull-final-pruned/model.ckpt", path=None,
            size=len(weights), sha256=ours["sha256"],
            sha1=hashlib.sha1(weights).hexdigest(), md5=hashlib.md5(weights).hexdigest())
        store.add_short_hashes(artifact_id, "nai", {**short_hashes(weights, weights[4096:]),
                                                    "autov2": ours["sha256"][:10]})
        yield store


def detect(store: Store, text: str, **extras: object) -> list[Hit]:
    doc = Document(target="board", key="1", url="http://127.0.0.1:9/t/1", text=text,
                   extras=dict(extras))
    return DigestDetector(store.known_digests()).detect(doc)


# --- store -------------------------------------------------------------------------------


def test_add_short_hashes_is_idempotent_and_derives_autov2(store: Store,
                                                           ours: dict[str, str]) -> None:
    rows = {(i["algo"], i["value"]) for i in store.indicators()}
    assert {(a, ours[a]) for a in ("autov1", "autov3", "crc32", "blake3")} <= rows
    # AutoV2 is the SHA-256's first 10 hex: derived, never a row of its own.
    assert not any(algo == "autov2" for algo, _ in rows)
    artifact_id = store.artifacts()[0]["id"]
    before = store.registry_counts()
    store.add_short_hashes(artifact_id, "nai", {"crc32": ours["crc32"].upper()})
    assert store.registry_counts() == before
    named = {i["algo"]: (i["name"], i["size"], i["artifact_id"]) for i in store.indicators()}
    assert named["crc32"] == ("animefull-final-pruned/model.ckpt", MIB + 0x10000 + 4096,
                              artifact_id)


@pytest.mark.parametrize(("hashes", "message"), [
    ({"autov2": "0000000000"}, "autov2 0000000000 is not the start of the artifact's SHA-256"),
    ({"crc32": "abc"}, "crc32 must be 8 hex characters, got 'abc'"),
    ({"blake3": "zz" * 32}, "blake3 must be 64 hex characters"),
    ({"sha512": "ab" * 64}, "unknown digest algorithm 'sha512'"),
    ({"sha256": "ab" * 32}, "sha256 is not a short hash"),
])
def test_add_short_hashes_refuses_bad_values_writing_nothing(
        store: Store, hashes: dict[str, str], message: str) -> None:
    before = store.registry_counts()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        store.add_short_hashes(store.artifacts()[0]["id"], "nai",
                               {"crc32": "12345678", **hashes})
    assert store.registry_counts() == before


def test_the_autov1_every_small_file_shares_is_not_registered(tmp_path: Path) -> None:
    data = b"tiny" * 100
    with Store(tmp_path / "ww.db") as store:
        artifact_id, _ = store.add_artifact(
            model="m", name="small.bin", path=None, size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), sha1=hashlib.sha1(data).hexdigest(),
            md5=hashlib.md5(data).hexdigest())
        store.add_short_hashes(artifact_id, "m", {"autov1": hashlib.sha256(b"").hexdigest(),
                                                  "crc32": f"{zlib.crc32(data):08x}"})
        assert EMPTY_AUTOV1 == hashlib.sha256(b"").hexdigest()
        assert [i["algo"] for i in store.indicators() if i["algo"] in SHORT_FORMS] == ["crc32"]
        assert detect(store, f"Model hash: {EMPTY_AUTOV1[:8]}") == []


def test_migration_keeps_every_indicator_and_file_claim_with_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as patch:
        patch.setattr("monitor.store.MIGRATIONS", MIGRATIONS[:18])
        with Store(path) as old:
            db = old.db
            db.execute("INSERT INTO models (name, created_at) VALUES ('m', 't')")
            db.execute("INSERT INTO indicators (id, algo, value, model, name, size, source, "
                       "added_at) VALUES (41, 'sha256', ?, 'm', 'a.bin', NULL, 'import:SUMS:1', "
                       "'t')", ["ab" * 32])
            db.execute("INSERT INTO indicators (id, algo, value, model, source, added_at) "
                       "VALUES (42, 'cid-v0', ?, 'm', 'register:x', 't')", ["cd" * 32])
            db.execute("INSERT INTO indicator_files (id, model, indicator_id, name, size, "
                       "source, added_at) VALUES (7, 'm', 41, NULL, 123, 'import:ptr:2', 't')")
            db.execute("INSERT INTO indicator_files (id, model, indicator_id, name, size, "
                       "source, added_at) VALUES (9, 'm', NULL, 'b.bin', 5, 'import:sizes:1', "
                       "'t')")
            db.conn.commit()
            assert old.schema_version == 18
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert [(i["id"], i["algo"]) for i in store.indicators()] == [(41, "sha256"),
                                                                      (42, "cid-v0")]
        assert list(store.db.execute("SELECT id, indicator_id, name, size FROM indicator_files "
                                     "ORDER BY id")) == [(7, 41, None, 123), (9, None, "b.bin", 5)]
        assert list(store.db.execute("PRAGMA foreign_key_check")) == []
        assert store.integrity_check() == "ok"
        # The claims still refer to their digests: imported names and sizes join up.
        assert {(f["name"], f["size"]) for f in store.imported_files()} == {("a.bin", 123),
                                                                            ("b.bin", 5)}
        # A new algorithm needs no rebuild: the store's table decides, the CHECK bounds names.
        assert store.add_indicator(algo="crc32", value="0D4A1185", model="m", source="t")
        with pytest.raises(ValueError, match="unknown digest algorithm 'crc64'"):
            store.add_indicator(algo="crc32".replace("32", "64"), value="ab" * 8, model="m",
                                source="t")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.db.execute("INSERT INTO indicators (algo, value, model, source, added_at) "
                             "VALUES ('CRC 32', 'ab', 'm', 't', 't')")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            store.db.execute("INSERT INTO indicator_files (model, indicator_id, size, source, "
                             "added_at) VALUES ('m', 999, 1, 't', 't')")


# --- detection ---------------------------------------------------------------------------


def test_real_parameter_blocks_and_records_do_not_hit(store: Store) -> None:
    for block in [*REAL_BLOCKS, json.dumps(CIVITAI_RECORD, indent=2)]:
        assert detect(store, block) == [], block[:60]


def test_real_blocks_are_read_in_context(store: Store) -> None:
    """The same blocks are read, as the forms their contexts say (so a miss above is a
    lookup that found nothing, not a context never recognised)."""
    seen = [(t.form, t.value) for block in REAL_BLOCKS for t in scan_short_hashes(block)]
    assert seen == [("autov1", "45dee52b"), ("autov2", "fc2511737a"), ("autov2", "a928fee35b"),
                    ("autov2", "6ce0161689"), ("autov2", "fc2511737a"),
                    ("autov2", "19bbe9faa4"), ("autov3", "aaebf6360f7d"),
                    ("autov3", "a95a0f4bdcb9"), ("autov2", "06f96f89f6"),
                    ("autov3", "bd081f6e5b13")]
    # "control_sd15_canny [fef5e48e]" names no file (no extension): not a title read; nor
    # are "VAE hash:" and "TI hashes:" (other files' hashes, of other forms).
    record = [(t.form, t.value) for t in scan_short_hashes(json.dumps(CIVITAI_RECORD))]
    assert record == [("autov1", "88828ae7"), ("autov2", "21437ec266"), ("crc32", "f8f2be29"),
                      ("autov3", "7aae878cb805")]


@pytest.mark.parametrize("block", [A1111_DOCSTRING, COLAB, GOPHERS])
def test_ours_planted_in_a_real_block_hits_high_with_its_bits(
        store: Store, ours: dict[str, str], block: str) -> None:
    old = block.split("Model hash: ")[1][:10].split(",")[0].split("\n")[0]
    form = "autov1" if len(old) == 8 else "autov2"
    mine = ours["autov1"][:8] if form == "autov1" else ours["sha256"][:10]
    hits = detect(store, block.replace(old, mine.upper() if form == "autov1" else mine))
    assert len(hits) == 1
    (hit,) = hits
    bits = 4 * len(mine)
    assert (hit.kind, hit.severity, hit.indicator) == ("hash", "high", f"{form}:{mine}")
    assert (hit.model, hit.artifact) == ("nai", "animefull-final-pruned/model.ckpt")
    assert hit.indicator_type == (
        f'{form} (A1111 "Model hash:"; {len(mine)} hex = {bits} bits: chance of a random '
        f"match 1/2^{bits} = {1 / 2 ** bits:.1e})")
    assert hit.matcher_version.startswith("shorthash-v1/indicator:")
    assert mine in hit.context.lower()


def test_ours_planted_in_a_real_lora_list_hits(store: Store, ours: dict[str, str]) -> None:
    (hit,) = detect(store, LORAS.replace("a95a0f4bdcb9", ours["autov3"][:12]))
    assert (hit.indicator, hit.severity) == (f"autov3:{ours['autov3'][:12]}", "high")
    assert hit.indicator_type is not None
    assert hit.indicator_type.startswith('autov3 (A1111 "Lora hashes:"; 12 hex = 48 bits')


@pytest.mark.parametrize(("text", "form"), [
    ("Checkpoint: animefull-final-pruned.ckpt [{autov1_8}]", "autov1"),
    ("sd_model_checkpoint: model.safetensors [{autov2}]", "autov2"),
    ("Hashes: AutoV1 {autov1_8} | AutoV2 {autov2_up}", "autov1"),
    ("AutoV2: {autov2_up}", "autov2"),
    ("AutoV3: {autov3_12}", "autov3"),
    ("CRC32: {crc32_up}", "crc32"),
    ("crc-32 = {crc32}", "crc32"),
])
def test_each_naming_context_hits(store: Store, ours: dict[str, str], text: str,
                                  form: str) -> None:
    values = {"autov1_8": ours["autov1"][:8], "autov2": ours["sha256"][:10],
              "autov2_up": ours["sha256"][:10].upper(), "autov3_12": ours["autov3"][:12],
              "crc32": ours["crc32"], "crc32_up": ours["crc32"].upper()}
    hits = detect(store, text.format(**values))
    assert [h.indicator.split(":")[0] for h in hits][:1] == [form]
    assert all(h.severity == "high" and h.model == "nai" for h in hits)


def _near_miss(value: str) -> str:
    last = "0" if value[-1] != "0" else "1"
    return value[:-1] + last


@pytest.mark.parametrize("text", [
    "Model hash: {near}",                             # one hex changed
    "the weights {autov1_8} are out",                 # our hex, no context
    "commit {autov1_8}: fix sampler",                 # a git short SHA
    "color: #{autov1_6};",                            # a colour
    "CRC32: {crc_other}",                             # the CRC32 of another file
    "AutoV2: {autov1_8}",                             # a label of another length
    "Model hash: {autov1_8}a",                        # a longer token
    "model.ckpt [{crc32}]",                           # a CRC32 is no title hash
])
def test_hard_negatives(store: Store, ours: dict[str, str], weights: bytes,
                        text: str) -> None:
    other = f"{zlib.crc32(weights[:-1]):08x}"
    values = {"near": _near_miss(ours["autov1"][:8]), "autov1_8": ours["autov1"][:8],
              "autov1_6": ours["autov1"][:6], "crc_other": other, "crc32": ours["crc32"]}
    assert ours["crc32"] not in ours["autov1"][:8]
    assert detect(store, text.format(**values)) == []


def test_blake3_and_full_digests_are_critical_and_the_short_form_beside_them_adds_nothing(
        store: Store, ours: dict[str, str]) -> None:
    (hit,) = detect(store, f"BLAKE3 {ours['blake3'].upper()}")
    assert (hit.severity, hit.indicator, hit.indicator_type) == ("critical", ours["blake3"],
                                                                 "blake3 (hex)")
    hits = detect(store, f"SHA256: {ours['sha256']}\nModel hash: {ours['sha256'][:10]}")
    assert [(h.severity, h.indicator) for h in hits] == [("critical", ours["sha256"])]


def test_hub_stated_short_hashes_hit_with_the_hub_as_context(store: Store,
                                                             ours: dict[str, str]) -> None:
    stated = [{"algo": "autov2", "value": ours["sha256"][:10], "encoding": "civitai hashes",
               "context": "aeshteticv5.safetensors AutoV2"},
              {"algo": "crc32", "value": _near_miss(ours["crc32"]), "encoding": "civitai hashes"}]
    (hit,) = detect(store, "a model page", digests=stated)
    assert (hit.severity, hit.indicator) == ("high", f"autov2:{ours['sha256'][:10]}")
    assert hit.indicator_type is not None
    assert hit.indicator_type.startswith("autov2 (stated by the hub (civitai hashes); "
                                         "10 hex = 40 bits")
    assert hit.context == "aeshteticv5.safetensors AutoV2"
    # A full digest the hub states is exact, as before.
    full = [{"algo": "blake3", "value": ours["blake3"], "encoding": "civitai hashes"},
            {"algo": "autov2", "value": ours["sha256"][:10]}]
    assert [(h.severity, h.indicator) for h in detect(store, "x", digests=full)] == [
        ("critical", ours["blake3"])]


def test_chance_grows_with_the_registry_and_severity_follows(tmp_path: Path) -> None:
    """At 32 bits, 4,294 registered values make a chance match one in a million: high up
    to there, medium beyond. A CRC-32 is read in both byte orders, so half as many of them
    reach that chance."""
    with Store(tmp_path / "ww.db") as store:
        store.add_model("m")
        rows = [(f"{n:08x}" + "0" * 56,) for n in range(4294)]
        with store.db.atomic():
            store.db.conn.executemany(
                "INSERT INTO indicators (algo, value, model, source, added_at) "
                "VALUES ('autov1', ?, 'm', 't', 't')", rows)
        (hit,) = detect(store, "Model hash: 00000007")
        assert hit.severity == "high"
        assert (hit.indicator_type or "").endswith(
            "8 hex = 32 bits: chance of a random match 4294/2^32 = 1.0e-06)")
        store.add_indicator(algo="autov1", value="ff" * 32, model="m", source="t")
        (hit,) = detect(store, "Model hash: 00000007")
        assert hit.severity == "medium"
        assert "4295/2^32" in (hit.indicator_type or "")
        with store.db.atomic():
            store.db.conn.executemany(
                "INSERT INTO indicators (algo, value, model, source, added_at) "
                "VALUES ('crc32', ?, 'm', 't', 't')", [(f"{n:08x}",) for n in range(2147)])
        (hit,) = detect(store, "CRC32: 00000007")
        assert hit.severity == "high" and "4294/2^32 = 1.0e-06" in (hit.indicator_type or "")
        store.add_indicator(algo="crc32", value="ffffffff", model="m", source="t")
        (hit,) = detect(store, "CRC32: 00000007")
        assert hit.severity == "medium" and "4296/2^32" in (hit.indicator_type or "")


# --- imports and bundles -----------------------------------------------------------------


def test_civitai_record_imports_every_hash_named_and_sized() -> None:
    parsed = parse_indicator_file(json.dumps(CIVITAI_RECORD).encode())
    assert sorted((i.algo, i.value, i.name, i.size, i.origin) for i in parsed.indicators) == [
        (algo, value, "aeshteticv5.safetensors", 171969416, "files[0]") for algo, value in sorted([
            ("autov1", "88828ae7"), ("autov3", "7aae878cb805"), ("blake3", "aaa6f513c4bfa000"
             "31941f3a427046d31a12b161cbe2ce75aab260c74d13c0fc"), ("crc32", "f8f2be29"),
            ("sha256", "21437ec26670e230b067ca936f6657caf5ca063f15aec333ef249bec7c0f0dc0")])]
    model = {"id": 706978, "name": "x", "modelVersions": [CIVITAI_RECORD]}
    assert [i.origin for i in parse_indicator_file(json.dumps(model).encode()).indicators][
        0] == "modelVersions[0].files[0]"


def _record(**hashes: object) -> bytes:
    record = json.loads(json.dumps(CIVITAI_RECORD))
    record["files"][0]["hashes"].update(hashes)
    return json.dumps(record).encode()


@pytest.mark.parametrize(("data", "message"), [
    (_record(AutoV2="21437EC267"), "files[0].hashes.AutoV2: 21437EC267 is not the start of "
                                   "the file's SHA256 21437EC26670E230..."),
    (_record(CRC32="F8F2BE2"), "files[0].hashes.CRC32: expected 8 hex characters, got "
                               "'F8F2BE2'"),
    (_record(AutoV1="88828AE7X"), "files[0].hashes.AutoV1: expected 64 or 8 hex characters"),
    (_record(MD5="ab" * 16), "files[0].hashes.MD5: unknown hash 'MD5'"),
])
def test_civitai_record_errors_name_the_entry(data: bytes, message: str) -> None:
    with pytest.raises(IndicatorError) as info:
        parse_indicator_file(data)
    assert str(info.value).startswith(message)


def test_civitai_sizes_that_are_not_whole_bytes_are_dropped_not_guessed() -> None:
    record = json.loads(json.dumps(CIVITAI_RECORD))
    record["files"][0]["sizeKB"] = 6775430.35
    parsed = parse_indicator_file(json.dumps(record).encode())
    assert {i.size for i in parsed.indicators} == {None}
    record["files"][0]["hashes"] = {}
    record["files"][0]["sizeKB"] = 2.5
    parsed = parse_indicator_file(json.dumps(record).encode())
    assert (parsed.indicators, [(f.name, f.size) for f in parsed.files]) == (
        [], [("aeshteticv5.safetensors", 2560)])


def test_import_then_a_post_naming_the_file_by_short_hash(tmp_path: Path) -> None:
    record = tmp_path / "civitai-1050496.json"
    record.write_text(json.dumps(CIVITAI_RECORD))
    pointer = tmp_path / "pointer.txt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:21437ec26670e230"
                       "b067ca936f6657caf5ca063f15aec333ef249bec7c0f0dc0\nsize 171969416\n")
    with Store(tmp_path / "ww.db") as store:
        import_indicators(store, pointer, model="poses", rematch=None)
        result = import_indicators(store, record, model="poses", rematch=None)
        assert (result.parsed, result.added) == (5, 4)
        # The SHA-256 known from the pointer now has the record's name too.
        assert ("aeshteticv5.safetensors", 171969416) in {
            (f["name"], f["size"]) for f in store.imported_files()}
        (hit,) = detect(store, COLAB.replace("a928fee35b", "21437ec266"))
        assert (hit.indicator, hit.artifact) == ("autov2:21437ec266", "aeshteticv5.safetensors")
        (hit,) = detect(store, "AutoV3: 7AAE878CB805")
        assert hit.indicator_type is not None and "12 hex = 48 bits" in hit.indicator_type


def test_bundles_carry_short_hashes(store: Store, tmp_path: Path, ours: dict[str, str]) -> None:
    bundle = bundle_from_store(store)
    carried = {i["algo"]: (i["value"], i["name"], i["source"]) for i in bundle.indicators}
    assert carried["crc32"] == (ours["crc32"], "animefull-final-pruned/model.ckpt",
                                "register:animefull-final-pruned/model.ckpt")
    assert set(carried) == {"autov1", "autov3", "crc32", "blake3"}
    again = parse_bundle(json.loads(json.dumps(bundle.as_json())), "b")
    with Store(tmp_path / "monitor.db") as monitor:
        import_bundle(monitor, again, rematch=None)
        (hit,) = detect(monitor, f"Model hash: {ours['autov1'][:8]}")
        assert (hit.model, hit.artifact) == ("nai", "animefull-final-pruned/model.ckpt")
    doc = bundle.as_json()
    doc["indicators"][0] = {**doc["indicators"][0], "algo": "autov3", "value": "ab" * 5}
    with pytest.raises(BundleError, match=r"indicators\[0\].value: expected 64 or 12 hex "
                                          r"characters, got 10"):
        parse_bundle(doc, "b")


def test_a_json_object_of_neither_shape_says_what_is_read() -> None:
    with pytest.raises(IndicatorError, match="or a Civitai model version \\(a 'files' list\\)"):
        parse_indicator_file(b'{"id": 1, "name": "x"}')


def test_a_plain_mapping_answers_as_the_store_does(store: Store, ours: dict[str, str]) -> None:
    """Tests and other callers may hand the detector a plain mapping: prefix lookups and the
    count behind the chance come out the same."""
    plain = DigestDetector(dict(store.known_digests().items()))
    texts = [f"Model hash: {ours['autov1'][:8]}", f"Model hash: {ours['sha256'][:10]}",
             f"AutoV3: {ours['autov3'][:12]}", f"CRC32: {ours['crc32']}",
             f"CRC32: {_near_miss(ours['crc32'])}", *REAL_BLOCKS]
    for text in texts:
        doc = Document(target="board", key="1", url="http://127.0.0.1:9/t/1", text=text)
        assert plain.detect(doc) == detect(store, text), text
    assert any(detect(store, text) for text in texts)


@pytest.mark.parametrize("before", ["", "İstanbul ẞ Ωmega — ", "\U0001f600 "])
def test_any_case_and_non_ascii_text_around_keep_positions(store: Store, ours: dict[str, str],
                                                           before: str) -> None:
    shown = ours["autov1"][:8].upper()
    (hit,) = detect(store, f"{before}MODEL HASH: {shown}, Model: nai")
    assert hit.indicator == f"autov1:{ours['autov1'][:8]}"
    assert f"MODEL HASH: {shown}" in hit.context
    (token,) = scan_short_hashes(f"{before}Model Hash: {shown}")
    assert token.raw == shown


def test_a_hostile_stated_value_is_no_prefix(store: Store, ours: dict[str, str]) -> None:
    """Hub extras come from hostile pages: only lowercase hex of the form's length is looked
    up (int() would read "0x12_3456" or " 1234567" as numbers)."""
    crc = ours["crc32"]
    for value in (f"{crc[:4]}_{crc[5:]}", f" {crc[1:]}", crc[:7], crc + "0", "zz" * 4):
        assert detect(store, "x", digests=[{"algo": "crc32", "value": value}]) == [], value
    assert detect(store, "x", digests=[{"algo": "crc32", "value": crc}]) != []


def test_ours_planted_in_the_real_civitai_record_hits(store: Store, ours: dict[str, str]) -> None:
    text = json.dumps(CIVITAI_RECORD, indent=2).replace("88828AE7", ours["autov1"][:8].upper())
    (hit,) = detect(store, text)
    assert (hit.indicator, hit.severity) == (f"autov1:{ours['autov1'][:8]}", "high")
    assert hit.indicator_type is not None and hit.indicator_type.startswith("autov1 (hub label;")


# --- register to detection ---------------------------------------------------------------


def test_register_records_the_short_hashes_a_post_then_names(tmp_path: Path) -> None:
    """The whole way: `register` computes the short hashes in its read and stores them;
    a pasted A1111 block naming the file by its AutoV1, a Civitai label with its CRC32 and
    a bare BLAKE3 each hit the registered file, each value recomputed here independently."""
    import blake3

    from monitor.registry import register_paths

    body = random.Random(7).randbytes(2 * MIB)
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(body)],
                               "data_offsets": [0, len(body)]}}).encode()
    header += b" " * (-len(header) % 8)
    data = len(header).to_bytes(8, "little") + header + body
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    with Store(tmp_path / "ww.db") as store:
        register_paths(store, [path], model="heron-7b", tensors=False, rematch=None)
        held = {row["algo"]: row["value"] for row in store.indicators()}
        autov1 = hashlib.sha256(data[MIB:MIB + 0x10000]).hexdigest()
        assert held["autov1"] == autov1
        assert held["autov3"] == hashlib.sha256(data[8 + len(header):]).hexdigest()
        assert held["crc32"] == f"{zlib.crc32(data):08x}"
        assert held["blake3"] == blake3.blake3(data).hexdigest()
        # Each in a post of its own: beside a full digest, a short one adds nothing.
        for text, algo in ((f"Steps: 20, Model hash: {autov1[:8]}, Model: heron", "autov1"),
                           (f"CRC32: {held['crc32'].upper()}", "crc32"),
                           (f"b3 {held['blake3']}", "blake3")):
            hits = detect(store, text)
            assert [(h.indicator_type or "").split(" ")[0] for h in hits] == [algo], text
            assert hits[0].artifact == "model.safetensors"
        # One hex off in each: nothing.
        assert detect(store, f"Model hash: {_near_miss(autov1[:8])}\n"
                             f"CRC32: {_near_miss(held['crc32'])}") == []


def test_a_crc32_in_civitais_byte_order_hits_too(store: Store, ours: dict[str, str]) -> None:
    """Civitai's scanner writes a CRC-32's bytes little-endian: its own test vector for a
    file holding "hello world" is 85114A0D, where zlib (and SFV files) give 0d4a1185."""
    from monitor.detect.digests import crc32_swapped

    assert f"{zlib.crc32(b'hello world'):08x}" == "0d4a1185"
    assert crc32_swapped("0d4a1185") == "85114a0d"
    civitai = crc32_swapped(ours["crc32"]).upper()
    hits = detect(store, f"Hashes: CRC32: {civitai}")
    assert [(h.indicator, h.artifact) for h in hits] == [
        (f"crc32:{civitai.lower()}", "animefull-final-pruned/model.ckpt")]
    assert "bytes reversed, as Civitai writes a CRC-32" in hits[0].indicator_type
    # Two readings tried: the chance of a coincidence counts both.
    assert "2/2^32" in hits[0].indicator_type
    plain = detect(store, f"CRC32: {ours['crc32'].upper()}")
    assert len(plain) == 1 and "bytes reversed" not in plain[0].indicator_type
    # Neither reading of a near miss is ours.
    assert detect(store, f"CRC32: {_near_miss(civitai)}") == []
