"""TensorRT(-RTX) engines: a real ahead-of-time build on the CPU, its manifest, and refusal of
engines that do not fit this machine."""
from __future__ import annotations

import pytest

from pahi_rt.artifacts import manifest as mf, tensorrt
from pahi_rt.errors import EngineError
from pahi_rt.export import engine
from pahi_rt.specs import RenderShape

from helpers import has_module

needs_trt = pytest.mark.skipif(
    not (has_module("tensorrt_rtx") or has_module("tensorrt")),
    reason="neither tensorrt_rtx nor tensorrt is importable (pip install 'pahi-rt[tensorrt-rtx]')")


@needs_trt
def test_fused_engine_built_with_manifest(tiny_artifacts):
    path, entry = mf.verified_artifact(tiny_artifacts.directory, "pahi-1step", "engine")
    flavour = engine.flavour_version()
    assert entry["flavour"] == flavour["flavour"] and entry["trt_version"] == flavour["version"]
    assert entry["build_seconds"] > 0 and entry["size_bytes"] == path.stat().st_size
    onnx_entry = mf.find_artifact(tiny_artifacts.manifest, "pahi-1step", "onnx")
    assert entry["source_sha256"] == onnx_entry["sha256"]
    log = (tiny_artifacts.directory / entry["build_log"]).read_text()
    assert "pahi-1step" in entry["path"] and log.strip()
    if entry["flavour"] == tensorrt.RTX:
        assert entry["targets"] == list(engine.DEFAULT_TARGETS)


@needs_trt
def test_engine_from_other_version_is_refused(tiny_artifacts):
    path, entry = mf.verified_artifact(tiny_artifacts.directory, "pahi-1step", "engine")
    with pytest.raises(EngineError, match="re-run `pahi-rt export`"):
        tensorrt.check_engine(path.read_bytes(), {**entry, "trt_version": "0.0.1"})


@needs_trt
def test_engine_validity_query(tiny_artifacts):
    """TensorRT-RTX answers whether an engine runs here; without a GPU it cannot."""
    path, entry = mf.verified_artifact(tiny_artifacts.directory, "pahi-1step", "engine")
    validity, diagnostics = tensorrt.engine_validity(path.read_bytes())
    assert validity in ("VALID", "SUBOPTIMAL", "INVALID", "UNKNOWN") and diagnostics
    if validity == "INVALID":
        with pytest.raises(EngineError, match="cannot run here"):
            tensorrt.check_engine(path.read_bytes(), entry)


def test_bad_target_is_refused():
    with pytest.raises(EngineError, match="--target"):
        engine.check_targets(["sm99"])


@needs_trt
def test_dynamic_batch_graph_and_engine_profile(tmp_path, tiny_components, pahi_head):
    """--max-batch: a free batch axis in ONNX (runs at other batch sizes) and an engine
    optimisation profile 1..max_batch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from pahi_rt.export.artifacts import export_artifacts
    from pahi_rt.export.build import ExportOptions
    from pahi_rt.specs import NAMES

    options = ExportOptions(RenderShape(2, 64, 64), max_batch=4, graphs=("head",),
                            engines=("head",))
    report = export_artifacts(tiny_components, tmp_path, options, pahi_head)
    entry = mf.find_artifact(report.manifest, "head", "engine")
    assert entry["profile"][NAMES.eps] == [[1, 4, 8, 8], [2, 4, 8, 8], [4, 4, 8, 8]]
    eps, emb = torch.randn(3, 4, 8, 8), torch.randn(3, 77, 32)
    session = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {NAMES.eps: eps.numpy(), NAMES.text_embeddings: emb.numpy()})[0]
    np.testing.assert_allclose(out, pahi_head(eps, emb).numpy(), atol=1e-5)


@needs_trt
def test_fp16_engine_is_strongly_typed_from_fp16_onnx(tiny_artifacts_fp16):
    path, entry = mf.verified_artifact(tiny_artifacts_fp16.directory, "pahi-1step", "engine")
    assert entry["precision"] == "fp16" and path.stat().st_size > 0


@needs_trt
def test_other_trt_version_or_target_rebuilds_engine(tiny_artifacts, tiny_components, pahi_head,
                                                     tmp_path, monkeypatch):
    """The engine's cache key holds the TensorRT flavour/version and targets: a new TensorRT or
    another --target rebuilds it, the ONNX graphs are reused."""
    import shutil

    from pahi_rt.export.artifacts import export_artifacts
    from pahi_rt.export.build import ExportOptions

    out = tmp_path / "a"
    shutil.copytree(tiny_artifacts.directory, out)
    options = ExportOptions(RenderShape(2, 64, 64), graphs=("pahi-1step",), engines=("pahi-1step",))
    assert export_artifacts(tiny_components, out, options, pahi_head).built == []
    real = engine.flavour_version()
    monkeypatch.setattr(engine, "flavour_version", lambda: {**real, "version": "9.9.9"})
    report = export_artifacts(tiny_components, out, options, pahi_head)
    assert report.built == ["pahi-1step.engine"]
    assert "pahi-1step.onnx" in report.reused and not [b for b in report.built if "onnx" in b]
