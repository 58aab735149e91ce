"""TorchScript archives (`torch.jit.save`): tensors read, classes kept as inert names.

The real material is Silero VAD's `silero_vad.jit`, as the PyPI package `silero-vad` 6.2.3
ships it (installed with `--no-deps`: its code is never imported here, only its data
folder is located). The same package ships the same network exported to ONNX
(`silero_vad_16k_op15.onnx`); the test checks every tensor read from the TorchScript
archive twice: against its raw storage bytes, read with the standard library's `zipfile`
and numpy at the offset and shape the test takes from the archive, and against the
ONNX export's initializer of the same name.

Hostile archives are `torch.jit.save`-shaped zips whose `data.pkl` is written opcode by
opcode here; each must fail with one line, executing nothing.
"""

from __future__ import annotations

import io
import pickletools
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support import silero_data

from fingerprints.pytorch import Placeholder, PyTorchReader
from fingerprints.tensors import BytesSource, FileSource, WeightFileError
from fingerprints.weights import open_weights
from monitor.cli import main

# The 16 kHz network's parameters, as torch names them from the scripted module's attributes.
SILERO_16K = (["_model.stft.forward_basis_buffer"]
              + [f"_model.encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")]
              + [f"_model.decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
              + ["_model.decoder.decoder.2.weight", "_model.decoder.decoder.2.bias"])


def whole(reader, tensor) -> np.ndarray:
    return reader.read_rows(tensor, range(tensor.shape[0])).reshape(tensor.shape)


def test_real_torchscript_tensors_equal_their_storages_and_the_onnx_export():
    path = silero_data() / "silero_vad.jit"
    reader = open_weights(FileSource(path))
    assert isinstance(reader, PyTorchReader) and reader.torchscript
    assert isinstance(reader.root, Placeholder)
    assert reader.root.cls == "__torch__.vad.model.vad_annotator.VADRNNJITMerge"
    tensors = {t.name: t for t in reader.tensors}
    assert set(SILERO_16K) <= set(tensors)
    assert {n.replace("_model_8k.", "_model.") for n in tensors if n.startswith("_model_8k.")} \
        == set(SILERO_16K)
    assert "constants.0" in tensors  # the constants.pkl tensor, under constants/0

    # 1. Raw bytes: the standard library's zip reader and numpy, tensor by tensor.
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        prefix = next(n for n in names if n.endswith("/data.pkl"))[:-len("data.pkl")]
        # Which storages the pickle names, from its opcodes alone (genops executes nothing).
        pickled = archive.read(prefix + "data.pkl")
        keys = {arg for op, arg, _ in pickletools.genops(pickled)
                if op.name == "BINUNICODE" and arg.isdigit()}
        assert {t.extra["storage"] for n, t in tensors.items()
                if not n.startswith("constants.")} == keys
        checked = 0
        for name, tensor in tensors.items():
            folder = "constants" if name.startswith("constants.") else "data"
            raw = archive.read(f"{prefix}{folder}/{tensor.extra['storage']}")
            values = np.frombuffer(raw, "<f4")
            count = int(np.prod(tensor.shape))
            start = tensor.extra["storage_offset"]
            expected = values[start:start + count].reshape(tensor.shape)
            if count:
                np.testing.assert_array_equal(whole(reader, tensor), expected)
                checked += 1
    assert checked == 30  # every non-empty tensor of both networks

    # 2. The same weights published as ONNX in the same package, name by name.
    onnx = open_weights(FileSource(silero_data() / "silero_vad_16k_op15.onnx"))
    exported = {t.name: t for t in onnx.tensors}
    for name in SILERO_16K:
        theirs = exported[name[1:]]  # `_model.x` in the scripted module is `model.x` there
        np.testing.assert_array_equal(whole(reader, tensors[name]), whole(onnx, theirs))


def test_scan_of_the_real_torchscript_file_matches_its_onnx_export(tmp_path: Path):
    db = tmp_path / "m.db"
    runner = CliRunner()
    result = runner.invoke(main, ["--db", str(db), "register",
                                  str(silero_data() / "silero_vad_16k_op15.onnx"),
                                  "--model", "silero"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["--db", str(db), "scan", str(silero_data() / "silero_vad.jit"),
                                  "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import json
    row, = json.loads(result.stdout)
    assert (row["format"], row["verdict"], row["model"]) == ("pytorch-zip", "match", "silero")


# -- hostile archives ------------------------------------------------------------------------

def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _script_object(cls: str, state: bytes) -> bytes:
    """NEWOBJ of a TorchScript class, then BUILD with `state` (opcodes leaving one dict)."""
    module, name = cls.rsplit(".", 1)
    return _global(module, name) + b")\x81" + state + b"b"


STORAGE = (_global("torch._utils", "_rebuild_tensor_v2") + b"((" + _text("storage")
           + _global("torch", "FloatStorage") + _text("0") + _text("cpu") + b"K\x04tQ"
           + b"K\x00K\x02K\x02\x86K\x02K\x01\x86\x89" + _global("collections", "OrderedDict")
           + b")Rt" + b"R")


def jit_archive(pickle_body: bytes, storage: bytes = np.arange(4, dtype="<f4").tobytes()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("m/data.pkl", b"\x80\x02" + pickle_body + b".")
        archive.writestr("m/data/0", storage)
        archive.writestr("m/version", b"3\n")
        archive.writestr("m/code/__torch__/m.py", b"import os\nos.system('touch pwned')\n")
    return out.getvalue()


def test_a_scripted_module_built_here_reads_under_its_attribute_path():
    inner = _script_object("__torch__.m.Linear", b"}(" + _text("weight") + STORAGE
                           + _text("training") + b"\x89u")
    outer = _script_object("__torch__.m.___torch_mangle_3.Net",
                           b"}(" + _text("layer") + inner + _text("sizes")
                           + _global("torch.jit._pickle", "build_intlist")
                           + b"]K\x01a\x85R" + b"u")
    reader = open_weights(BytesSource(jit_archive(outer), "net.pt"))
    tensor, = reader.tensors
    assert (tensor.name, tensor.shape) == ("layer.weight", (2, 2))
    np.testing.assert_array_equal(whole(reader, tensor), [[0, 1], [2, 3]])
    assert reader.root.state["sizes"] == [1]


MARKER = "weightwatch-pwned-marker"


@pytest.mark.parametrize("body, needle", [
    (_global("posix", "system") + _text(f"touch {MARKER}") + b"\x85R",
     "refusing to load global 'posix.system'"),
    (_global("builtins", "eval") + _text("__import__('os')") + b"\x85R",
     "refusing to load global 'builtins.eval'"),
    (_global("__torch__.m", "C") + _text("x") + b"\x85R", "constructed with arguments"),
    (_global("__torch__.m", "C;import os") + b")\x81", "refusing to load global"),
    (_global("__torch__.m", "C") + b")\x81" + b")R", "refusing to call 'Placeholder'"),
    (_script_object("__torch__.m.C", b"}") + b"}b", "receives its state twice"),
    (_global("torch.jit._pickle", "build_intlist") + _text("x") + b"\x85R", "expects a list"),
    (_global("__torch__.os", "system") + b")\x81" + _text("ls") + b"\x85R",
     "refusing to call 'Placeholder'"),
    # Placeholders nested 200 deep: the walk that names tensors stops at 64.
    ((_global("__torch__.m", "C") + b")\x81}(" + _text("a")) * 200 + b"N" + b"ub" * 200,
     "nests deeper than 64"),
])
def test_hostile_torchscript_pickles_fail_with_one_line(tmp_path, monkeypatch, body, needle):
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(WeightFileError) as caught:
        open_weights(BytesSource(jit_archive(body), "evil.pt"))
    message = str(caught.value)
    assert needle in message and "\n" not in message and message.startswith("evil.pt")
    assert time.monotonic() - started < 10
    assert not (tmp_path / MARKER).exists() and list(tmp_path.iterdir()) == []


def test_a_flood_of_scripted_objects_stops_at_the_opcode_bound():
    """Scripted objects cost opcodes and estimated memory like any other; the default
    bounds (4 M opcodes, 96 MiB) take seconds to reach, so a smaller bound shows it."""
    body = _global("__torch__.m", "C") + b"q\x00(" + b"h\x00)\x81" * 200_000 + b"l"
    with pytest.raises(WeightFileError, match=r"^evil.pt: m/data.pkl: pickle runs more than "
                                              r"100000 opcodes; refusing$"):
        PyTorchReader(BytesSource(jit_archive(body), "evil.pt"), max_ops=100_000)
