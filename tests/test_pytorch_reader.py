"""PyTorch zip checkpoints read without torch and without running the pickle.

The checkpoints here are written by hand, byte for byte as `torch.save` writes them: a zip
with `archive/data.pkl` (protocol 2, tensors as `torch._utils._rebuild_tensor_v2` globals over
persistent-id storages, the state dict an `OrderedDict` with `_metadata` set by BUILD),
`archive/byteorder`, `archive/version` and the raw storages under `archive/data/<key>`,
stored uncompressed and aligned to 64 bytes as torch aligns them. Hostile pickles are the
payloads real attacks use; the command they would run creates a marker file, and the test
shows the file is not there afterwards (and that `pickle.loads` of the same bytes does create
it, so the payload is live).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest
from support import (
    Call,
    Global,
    Ordered,
    Storage,
    Tensor,
    TorchPickler,
    bf16_bits,
    bf16_values,
    checkpoint,
    torch_zip,
)

from fingerprints.archives import ZipArchive, sniff
from fingerprints.pytorch import PyTorchReader, load_pickle, open_pytorch
from fingerprints.tensors import BytesSource, FileSource, WeightFileError


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"f32": rng.standard_normal((4, 6)).astype(np.float32),
            "f16": rng.standard_normal((3, 5)).astype(np.float16),
            "bf16": bf16_bits(rng.standard_normal((8, 16))),
            "bias": rng.standard_normal(6).astype(np.float32)}


def test_reads_rows_of_a_torch_save_checkpoint_by_range(tmp_path, arrays):
    blob, _ = checkpoint(arrays)
    path = tmp_path / "consolidated.00.pth"
    path.write_bytes(blob)
    assert sniff(BytesSource(blob)) == "pytorch-zip"
    with FileSource(path) as source:
        reader = open_pytorch(source)
        names = [t.name for t in reader.tensors]
        assert names == ["layers.0.attention.wq.weight", "layers.0.ffn.w1.weight",
                         "tok_embeddings.weight", "layers.0.attention.wq.bias", "rows_view",
                         "transposed"]
        wq = reader.tensor("layers.0.attention.wq.weight")
        assert (wq.shape, wq.dtype, wq.nbytes, wq.row_nbytes) == ((4, 6), "F32", 96, 24)
        # offset points into the checkpoint file itself: the storage is stored, not deflated
        assert blob[wq.offset:wq.offset + wq.nbytes] == arrays["f32"].tobytes()
        assert wq.offset % 64 == 0  # torch's alignment survives
        before = source.bytes_read
        rows = reader.read_rows(wq, [3, 1])
        assert source.bytes_read - before <= 3 * wq.row_nbytes  # rows, not the whole tensor
        np.testing.assert_array_equal(rows, arrays["f32"][[3, 1]])
        half = reader.tensor("layers.0.ffn.w1.weight")
        assert half.dtype == "F16"
        np.testing.assert_array_equal(reader.read_rows(half, [0, 2]),
                                      arrays["f16"][[0, 2]].astype(np.float32))
        emb = reader.tensor("tok_embeddings.weight")
        assert emb.dtype == "BF16" and emb.row_nbytes == 32
        np.testing.assert_array_equal(reader.read_rows(emb, [7, 0, 7]),
                                      bf16_values(arrays["bf16"][[7, 0, 7]]))
        bias = reader.tensor("layers.0.attention.wq.bias")
        np.testing.assert_array_equal(reader.read_tensor(bias), arrays["bias"])
        view = reader.tensor("rows_view")
        assert view.offset == wq.offset + 24
        np.testing.assert_array_equal(reader.read_tensor(view), arrays["f32"][1:3])
        assert reader.prefix == "archive/" and reader.byteorder == "little"


def test_non_contiguous_view_is_listed_but_its_rows_are_refused(arrays):
    blob, _ = checkpoint(arrays)
    reader = PyTorchReader(BytesSource(blob, "model.pt"))
    transposed = reader.tensor("transposed")
    assert transposed.extra["contiguous"] is False and transposed.shape == (6, 4)
    with pytest.raises(WeightFileError, match="non-contiguous view"):
        reader.read_rows(transposed, [0])
    with pytest.raises(WeightFileError, match="outside 0..3"):
        reader.read_rows(reader.tensor("layers.0.attention.wq.weight"), [4])


def test_nested_state_dicts_are_flattened_with_dotted_names_and_other_prefixes(arrays):
    s0 = Storage("0", "FloatStorage", arrays["f32"].tobytes(), 4)
    top = {"model": Ordered([("encoder.weight", Tensor(s0, 0, (4, 6), (6, 1)))]),
           "state_dict": {"head": [Tensor(s0, 12, (2, 6), (6, 1))]},
           "epoch": 7, "note": "fine-tuned", "lr": None}
    blob = torch_zip(TorchPickler().dump(top), [s0], prefix="my_model_v2", byteorder=None)
    reader = PyTorchReader(BytesSource(blob, "last.ckpt"))
    assert [t.name for t in reader.tensors] == ["model.encoder.weight", "state_dict.head.0"]
    assert reader.prefix == "my_model_v2/" and reader.byteorder == "little"
    np.testing.assert_array_equal(reader.read_tensor(reader.tensor("state_dict.head.0")),
                                  arrays["f32"][2:4])


def test_big_endian_checkpoints_are_byte_swapped(arrays):
    big = Storage("0", "FloatStorage", arrays["f32"].astype(">f4").tobytes(), 4)
    blob = torch_zip(TorchPickler().dump(Ordered([("w", Tensor(big, 0, (4, 6), (6, 1)))])),
                     [big], byteorder="big")
    reader = PyTorchReader(BytesSource(blob))
    assert reader.byteorder == "big"
    np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], [2]), arrays["f32"][[2]])


def test_deflated_storages_of_a_rezipped_checkpoint_are_inflated(arrays):
    blob, _ = checkpoint(arrays, compression=zipfile.ZIP_DEFLATED)
    reader = PyTorchReader(BytesSource(blob))
    emb = reader.tensor("tok_embeddings.weight")
    assert emb.extra["member"] == "archive/data/2"
    np.testing.assert_array_equal(reader.read_rows(emb, [1, 5]), bf16_values(arrays["bf16"][[1, 5]]))


def test_newer_pickles_untyped_storage_with_a_dtype_global(arrays):
    """torch 2.x writes float8 and unsigned types with _rebuild_tensor_v3 over UntypedStorage."""
    raw = arrays["f16"].tobytes()
    untyped = Storage("0", "UntypedStorage", raw, 1)
    tensor = Call(Global("torch._utils", "_rebuild_tensor_v3"),
                  (untyped, 0, (3, 5), (5, 1), False, Ordered(metadata=False),
                   Global("torch", "float16")))
    blob = torch_zip(TorchPickler().dump(Ordered([("w", tensor)])), [untyped])
    reader = PyTorchReader(BytesSource(blob))
    assert reader.tensors[0].dtype == "F16"
    np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], [1]),
                                  arrays["f16"][[1]].astype(np.float32))


def test_storage_shorter_than_the_tensor_is_refused(arrays):
    short = Storage("0", "FloatStorage", arrays["f32"].tobytes()[:40], 4)
    blob = torch_zip(TorchPickler().dump(Ordered([("w", Tensor(short, 0, (4, 6), (6, 1)))])), [short])
    with pytest.raises(WeightFileError, match="tensor w reaches byte 96 of storage archive/data/0"):
        PyTorchReader(BytesSource(blob))
    missing = torch_zip(TorchPickler().dump(Ordered([("w", Tensor(short, 0, (2, 5), (5, 1)))])), [])
    with pytest.raises(WeightFileError, match="storage archive/data/0 is missing"):
        PyTorchReader(BytesSource(missing))


# -- hostile pickles ---------------------------------------------------------------------------
class Gadget:
    """What a real payload pickles: an object whose __reduce__ names a dangerous callable."""

    def __init__(self, func: object, *args: object):
        self.func, self.args = func, args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return self.func, self.args


def payloads(marker: str) -> dict[str, tuple[bytes, str]]:
    """name -> (data.pkl bytes, the global the error must name)."""
    cmd = f"touch {marker}"
    code = f"open({marker!r}, 'w').close()"
    hand_os = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd.encode() + b"\x85R."
    in_state_dict = TorchPickler().dump(Ordered([
        ("w", Tensor(Storage("0", "FloatStorage", b"\0" * 16, 4), 0, (4,), (1,))),
        ("hook", Call(Global("os", "system"), (cmd,)))]))
    return {
        "os.system by hand": (hand_os, "os.system"),
        "posix.system gadget": (pickle.dumps(Gadget(os.system, cmd), protocol=2), "posix.system"),
        "posix.system gadget, protocol 4 STACK_GLOBAL":
            (pickle.dumps(Gadget(os.system, cmd), protocol=4), "posix.system"),
        "builtins.exec": (pickle.dumps(Gadget(exec, code), protocol=2, fix_imports=False),
                          "builtins.exec"),
        "__builtin__.exec (protocol 2 names builtins as Python 2 did)":
            (pickle.dumps(Gadget(exec, code), protocol=2), "__builtin__.exec"),
        "builtins.eval": (pickle.dumps(Gadget(eval, code), protocol=3), "builtins.eval"),
        "subprocess.Popen": (pickle.dumps(Gadget(subprocess.Popen, ["touch", marker]), protocol=4),
                             "subprocess.Popen"),
        "os.system inside a state dict": (in_state_dict, "os.system"),
        "INST opcode": (b"(S'" + cmd.encode() + b"'\nios\nsystem\n.", "os.system"),
        "torch namespace but not allowed": (
            b"\x80\x02ctorch\nload\nX" + struct.pack("<I", len(marker)) + marker.encode() + b"\x85R.",
            "torch.load"),
    }


@pytest.mark.parametrize("case", list(payloads("m")))
def test_a_pickle_that_would_run_a_command_is_refused_naming_the_global(tmp_path, case):
    marker = tmp_path / "pwned"
    data, global_name = payloads(str(marker))[case]
    blob = torch_zip(data, [Storage("0", "FloatStorage", b"\0" * 16, 4)])
    with pytest.raises(WeightFileError) as caught:
        PyTorchReader(BytesSource(blob, "evil.pth"))
    message = str(caught.value)
    assert "\n" not in message
    assert f"refusing to load global '{global_name}'" in message
    assert message.startswith("evil.pth: archive/data.pkl: ")
    assert not marker.exists()


def test_the_payloads_are_live(tmp_path):
    """The same bytes given to pickle.loads do run the command: the refusal above matters."""
    marker = tmp_path / "live"
    data, _ = payloads(str(marker))["posix.system gadget"]
    pickle.loads(data)  # noqa: S301 - deliberately, to prove the payload is real
    assert marker.exists()


@pytest.mark.parametrize("data, message", [
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x01tR.", "called with 1 arguments"),
    (b"\x80\x02]q\x00}b.", "refusing to BUILD"),
    (b"\x80\x02\x82\x01.", "extension registry"),
    (b"\x80\x02ccollections\nOrderedDict\nq\x00K\x01\x85Q.", "persistent id"),
    (b"\x80\x02ctorch\nFloatStorage\n)R.", "refusing to call 'torch.FloatStorage'"),
    (b"\x80\x02]q\x00h\x05.", "memo has no entry 5"),
    (b"\x80\x02X\xff\xff\xff\x7fabc.", "truncated"),
    (b"\x80\x02K\x01", "ends without STOP"),
    (b"\x80\x02\x8b\x00\x00\x00\x10.", "more than 1024 bytes"),
    (b"\x80\x02\xff.", "unsupported pickle opcode"),
])
def test_malformed_and_sneaky_pickles_fail_with_one_line(data, message):
    with pytest.raises(WeightFileError, match=message) as caught:
        load_pickle(data, "x.pkl")
    assert "\n" not in str(caught.value)


def test_memo_cycles_shared_containers_and_deep_nesting():
    # a list that contains itself, and a chain of lists each holding the next one twice
    cyclic = b"\x80\x02]q\x00h\x00a."
    assert PyTorchReader(BytesSource(torch_zip(cyclic, []))).tensors == []  # the walk ends
    chain = bytearray(b"\x80\x02]q\x00")
    for i in range(1, 40):
        chain += b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i])
    chain += b"."
    blob = torch_zip(bytes(chain), [])
    assert PyTorchReader(BytesSource(blob)).tensors == []  # 2**39 paths, walked once each
    deep = b"\x80\x02" + b"]" * 100 + b"a" * 99 + b"."
    with pytest.raises(WeightFileError, match="nests deeper than 64"):
        PyTorchReader(BytesSource(torch_zip(deep, [])))
    with pytest.raises(WeightFileError, match="more than 1000 opcodes"):
        load_pickle(b"\x80\x02" + b"N0" * 1000 + b"N.", max_ops=1000)


def test_legacy_pickle_checkpoints_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "legacy-pwned"
    data, _ = payloads(str(marker))["posix.system gadget"]
    legacy_magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + data
    for blob in (legacy_magic, data):
        assert sniff(BytesSource(blob)) == "pickle-legacy"
        with pytest.raises(WeightFileError, match="legacy \\(pre-zip\\) PyTorch pickle"):
            PyTorchReader(BytesSource(blob, "old.pt"))
    assert not marker.exists()
    with pytest.raises(WeightFileError, match="not a PyTorch zip checkpoint"):
        PyTorchReader(BytesSource(b"GGUF" + b"\0" * 100))
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(WeightFileError, match="no \\*/data.pkl member"):
        PyTorchReader(BytesSource(plain_zip.getvalue()))


def test_zip_bomb_and_oversized_pickles_are_refused(arrays):
    bomb = torch_zip(b"\x80\x02N" + b"0N" * (2 << 20) + b".", [], compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 30_000
    with pytest.raises(WeightFileError, match="ratio over 100.*zip bomb"):
        PyTorchReader(BytesSource(bomb))
    blob, _ = checkpoint(arrays)
    with pytest.raises(WeightFileError, match="over the limit of 100"):
        PyTorchReader(BytesSource(blob), max_pickle_bytes=100)


def test_a_checkpoint_inside_a_zip_archive_reads_through_the_member(arrays):
    blob, _ = checkpoint(arrays)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("leak/README.txt", "enjoy")
        zf.writestr("leak/consolidated.00.pth", blob)
    archive = ZipArchive(BytesSource(outer.getvalue(), "leak.zip"))
    member = archive.member("leak/consolidated.00.pth")
    inner = archive.open(member)
    assert sniff(inner) == "pytorch-zip"
    reader = PyTorchReader(inner)
    np.testing.assert_array_equal(reader.read_rows(reader.tensors[0], [0]), arrays["f32"][[0]])


def test_mutated_checkpoints_fail_cleanly_or_read(arrays):
    """Random corruption of a valid checkpoint: a WeightFileError or a result, never a crash."""
    rng = np.random.default_rng(1)
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        blob, _ = checkpoint(arrays, compression=compression)
        pkl = blob.index(b"\x80\x02")
        for _ in range(200):
            data = bytearray(blob)
            for _ in range(int(rng.integers(1, 5))):
                # half the hits land in the pickle, the rest anywhere
                at = pkl + int(rng.integers(400)) if rng.random() < 0.5 else int(rng.integers(len(data)))
                data[at] = int(rng.integers(256))
            try:
                reader = PyTorchReader(BytesSource(bytes(data)))
                for t in reader.tensors:
                    if t.extra["contiguous"]:
                        reader.read_rows(t, [0, t.rows - 1])
            except WeightFileError as exc:
                assert "\n" not in str(exc)
