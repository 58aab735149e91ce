"""An ONNX model whose tensors live in a side file (`model.onnx.data`, data_location
EXTERNAL), met inside a zip, inside a tgz and on a web server: each is recognised from the
side file's tensors, `bytes_read` counts both files, and a side-file name that would leave
the model's folder (archive folder or URL folder) is refused with one line.

The model is hand-encoded with the protobuf encoder of test_onnx_reader (no onnx package).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import tarfile
import zipfile

import numpy as np
import pytest
import weights_lab as lab
from support import FAST, RangeServer, attribute_int, external_tensor, model, node, target

from fingerprints.tensors import BytesSource, WeightFileError
from fingerprints.weights import open_weights
from monitor.config import ScanSettings
from monitor.fetch import Fetcher
from monitor.registry import register_paths
from monitor.scan import Registry, ScanReport, load_registry, scan_path, scan_url
from monitor.store import Store

SHAPE = (384, 256)
LAYERS = 6


@pytest.fixture(scope="module")
def layers() -> list[np.ndarray]:
    rng = np.random.default_rng(1414)
    return [rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(LAYERS)]


def onnx_pair(layers: list[np.ndarray], location: str = "model.onnx.data") -> tuple[bytes, bytes]:
    """(model.onnx, its side file): every weight external, used by Gemm(transB=1) as
    PyTorch stores it, under anonymised names."""
    data = b"\0" * 64  # an offset other than 0, as exporters align
    tensors, nodes = [], []
    for i, w in enumerate(layers):
        tensors.append(external_tensor(f"onnx::Gemm_{100 + i}", SHAPE, location, len(data), w.nbytes))
        nodes.append(node("Gemm", [f"h{i}", f"onnx::Gemm_{100 + i}"], [f"h{i + 1}"],
                          [attribute_int("transB", 1)]))
        data += w.tobytes()
    return model(tensors, nodes), data


@pytest.fixture(scope="module")
def registry(layers, tmp_path_factory) -> Registry:
    folder = tmp_path_factory.mktemp("registry")
    lab.write_safetensors(folder / "ours.safetensors",
                          {f"encoder.layer.{i}.weight": w for i, w in enumerate(layers)})
    with Store(folder / "registry.db") as store:
        registered, = register_paths(store, [folder / "ours.safetensors"], model="kestrel")
        assert registered.tensors == LAYERS, registered.note
        # Tensors only: digests would answer before any side file is read.
        return dataclasses.replace(load_registry(store), digests={})


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def tarred(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def assert_matched_from_the_side_file(report: ScanReport) -> None:
    out = report.as_dict()
    assert report.verdict == "match", out
    assert report.result is not None and report.result.model == "kestrel"
    # Every tensor of the model is in the side file, so each one matched was read there.
    assert report.result.tensors_matched >= 2, out


@pytest.mark.parametrize("pack,suffix", [(zipped, "zip"), (tarred, "tgz")])
def test_an_archived_onnx_model_reads_its_side_file_from_its_archive_folder(
        layers, registry, tmp_path, pack, suffix) -> None:
    blob, data = onnx_pair(layers)
    path = tmp_path / f"release.{suffix}"
    path.write_bytes(pack({"pkg/model/model.onnx": blob, "pkg/model/model.onnx.data": data,
                           "pkg/README.md": b"hello"}))
    report = scan_path(path, registry, ScanSettings())
    assert_matched_from_the_side_file(report)
    # What was read from the side file is counted: the model alone is a few hundred bytes.
    assert report.bytes_read > len(blob) + 4 * SHAPE[1] * 4, report.as_dict()
    with open(path, "rb") as f:
        reader = open_weights(BytesSource(f.read(), path.name))
    w = reader.tensor("onnx::Gemm_103")
    np.testing.assert_array_equal(reader.read_rows(w, [5, 300]), layers[3][[5, 300]])


@pytest.mark.parametrize("location,message", [
    ("../model.onnx.data", "leaves the model's folder"),
    ("/etc/passwd", "is an absolute path"),
    ("sub\\..\\..\\other.data", "leaves the model's folder"),
])
def test_an_archived_side_file_name_that_escapes_is_refused_with_one_line(
        layers, tmp_path, location, message) -> None:
    blob, data = onnx_pair(layers[:1], location)
    # The escaping name exists in the archive, one folder up: only confinement stops it.
    archive = zipped({"pkg/model/model.onnx": blob, "pkg/model.onnx.data": data,
                      "pkg/other.data": data, "pkg/model/sub/x": b""})
    with pytest.raises(WeightFileError) as caught:
        open_weights(BytesSource(archive, "release.zip"))
    text = str(caught.value)
    assert "\n" not in text and message in text, text
    # A member name is no URL: `%2e%2e` is a literal folder name, here a missing file.
    blob, _ = onnx_pair(layers[:1], "%2e%2e/other.data")
    reader = open_weights(BytesSource(zipped({"pkg/model/model.onnx": blob,
                                              "pkg/other.data": data}), "release.zip"))
    assert reader.tensors == [] and "no member" in dict(reader.skipped)["onnx::Gemm_100"]


def test_an_archived_model_missing_its_side_file_notes_it_and_reads_the_rest(layers) -> None:
    blob, _ = onnx_pair(layers[:2])
    reader = open_weights(BytesSource(zipped({"m/model.onnx": blob}), "release.zip"))
    assert reader.tensors == [] and "model.onnx.data" in dict(reader.skipped)["onnx::Gemm_100"]


def test_side_files_count_against_the_archive_walk_members_budget(layers, monkeypatch) -> None:
    import fingerprints.weights as weights

    monkeypatch.setattr(weights, "_MAX_MEMBERS_READ", 1)
    blob, data = onnx_pair(layers[:1])
    with pytest.raises(WeightFileError, match="more than 1 weight and archive members") as caught:
        open_weights(BytesSource(zipped({"model.onnx": blob, "model.onnx.data": data}), "r.zip"))
    assert "\n" not in str(caught.value)


# -- remote ------------------------------------------------------------------------------------------
def scan_remote_url(server: RangeServer, path: str, registry: Registry,
                    settings: ScanSettings | None = None) -> ScanReport:
    url = server.url(path)
    settings = settings or ScanSettings()

    async def go() -> ScanReport:
        async with Fetcher(FAST) as fetcher:
            return await scan_url(url, registry, settings, fetcher, target("scan", url))

    return asyncio.run(go())


def test_a_remote_onnx_model_reads_its_side_file_by_range_within_one_budget(layers, registry
                                                                             ) -> None:
    blob, data = onnx_pair(layers)
    server = RangeServer()
    try:
        server.put("/m/model.onnx", blob)
        server.put("/m/model.onnx.data", data)
        report = scan_remote_url(server, "/m/model.onnx", registry)
        assert_matched_from_the_side_file(report)
        sent = server.sent.get("/m/model.onnx", 0) + server.sent.get("/m/model.onnx.data", 0)
        assert server.sent.get("/m/model.onnx.data", 0) > 0
        # Both files are counted, and nothing the server sent goes uncounted.
        assert report.bytes_read >= sent > len(blob), (report.bytes_read, sent)
        assert report.bytes_read < len(data), "read by range, not whole"
        # One budget for the model and its side file: a budget the side file would
        # overrun stops the scan instead of granting the side file a budget of its own.
        tight = ScanSettings(max_bytes=len(blob) + 20 * 1024)
        capped = scan_remote_url(server, "/m/model.onnx", registry, tight)
        assert capped.bytes_read <= tight.max_bytes, capped.as_dict()
        assert capped.verdict != "match", capped.as_dict()
    finally:
        server.close()


@pytest.mark.parametrize("location", ["../model.onnx.data", "/m/model.onnx.data",
                                      "http://127.0.0.2/m/model.onnx.data",
                                      "%2e%2e/model.onnx.data", "sub/%2E%2E/%2e%2e/x.data",
                                      "//127.0.0.2/x.data"])
def test_a_remote_side_file_that_leaves_the_url_folder_is_refused_unrequested(
        layers, registry, location) -> None:
    blob, data = onnx_pair(layers[:1], location)
    server = RangeServer()
    try:
        server.put("/m/sub/model.onnx", blob)
        server.put("/m/model.onnx.data", data)
        report = scan_remote_url(server, "/m/sub/model.onnx", registry)
        assert report.verdict == "error", report.as_dict()
        assert "\n" not in report.error and "external data" in report.error, report.error
        assert [urlpath(r.path) for r in server.requests if "robots" not in r.path] \
            == ["/m/sub/model.onnx"] * len([r for r in server.requests if "robots" not in r.path])
    finally:
        server.close()


def urlpath(path: str) -> str:
    return path.split("?", 1)[0]


def test_a_remote_model_missing_its_side_file_notes_it(layers, registry) -> None:
    blob, _ = onnx_pair(layers[:2])
    server = RangeServer()
    try:
        server.put("/m/model.onnx", blob)
        report = scan_remote_url(server, "/m/model.onnx", registry)
        assert report.verdict == "inconclusive", report.as_dict()
        assert server.hits("/m/model.onnx.data"), "the side file was asked for"
    finally:
        server.close()
