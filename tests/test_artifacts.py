"""The read side of artifacts (pahi_rt.artifacts) and the exporter seam of the pipeline opener:
the runtime exports on first use only with the exporter it is handed."""
from __future__ import annotations

import os

import pytest

from pahi_rt.artifacts.cache import cache_dir, cache_root, inductor_cache_dir
from pahi_rt.artifacts.first_use import ExportRequest
from pahi_rt.errors import ArtifactError
from pahi_rt.io import atomic_write_files
from pahi_rt.specs import MODES, RenderShape, component_graphs


def test_cache_roots_are_pure(tmp_path):
    """The cache helpers read the environment they are given; they neither create folders nor
    set variables."""
    before = dict(os.environ)
    env = {"PAHI_RT_CACHE": str(tmp_path / "c" / "artifacts")}
    assert cache_root(env) == tmp_path / "c" / "artifacts"
    assert inductor_cache_dir(env) == tmp_path / "c" / "inductor"
    assert inductor_cache_dir({**env, "TORCHINDUCTOR_CACHE_DIR": "/x"}).as_posix() == "/x"
    assert cache_root({}).parts[-3:] == (".cache", "pahi-rt", "artifacts")
    assert not (tmp_path / "c").exists() and dict(os.environ) == before


def _request(width: int) -> ExportRequest:
    return ExportRequest(components=None, head=None, head_source=None, sources={},
                         directory=None, graphs=(),
                         shape=RenderShape(batch=1, height=64, width=width, precision="fp32"))


def test_cache_dir_follows_sources_and_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path))
    a = cache_dir({"unet": "1"}, _request(64))
    assert a.parent == tmp_path and a != cache_dir({"unet": "2"}, _request(64))
    assert a != cache_dir({"unet": "1"}, _request(128))


def test_component_graphs_of_modes():
    assert component_graphs(MODES["pahi-1step"]) == ("text_encoder", "head", "unet", "decoder")
    assert component_graphs(MODES["gaussian-2step"]) == ("text_encoder", "unet", "decoder")


def _model(components, head):
    from pahi_rt.runtime.pipeline import LoadedModel

    return LoadedModel(components, {"pahi": head}, "cpu", "runs/pahi")


def test_no_exporter_no_export(tiny_components, pahi_head, tmp_path, monkeypatch):
    """Without --artifacts and without an exporter the runtime refuses; it never imports one."""
    from pahi_rt.runtime.pipeline import PipelineConfig, ensure_artifacts

    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path))
    config = PipelineConfig(backend="onnxruntime", mode=MODES["pahi-1step"],
                            shape=RenderShape(batch=2, height=64, width=64))
    with pytest.raises(ArtifactError, match="--artifacts DIR"):
        ensure_artifacts(_model(tiny_components, pahi_head), config, print)


def test_exporter_gets_what_the_run_needs(tiny_components, pahi_head, tmp_path, monkeypatch):
    from pahi_rt.runtime.pipeline import PipelineConfig, ensure_artifacts

    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path))
    model, asked = _model(tiny_components, pahi_head), []
    for backend, fused in (("onnxruntime", True), ("tensorrt", False), ("openvino", True)):
        config = PipelineConfig(backend=backend, mode=MODES["pahi-1step"],
                                shape=RenderShape(batch=2, height=64, width=64, precision="fp32"),
                                fused=fused)
        directory = ensure_artifacts(model, config, print, lambda r, log: asked.append(r))
        assert asked[-1].directory == directory and directory.parent == tmp_path
    parts = ("text_encoder", "head", "unet", "decoder")
    assert [r.graphs for r in asked] == [parts + ("pahi-1step",), parts, parts + ("pahi-1step",)]
    assert [r.engines for r in asked] == [(), parts, ()]
    assert asked[0].sources == model.sources() and asked[0].head is pahi_head
    assert asked[0].head_source == "runs/pahi" and asked[0].components is tiny_components


def test_atomic_write_files_publishes_in_order_or_not_at_all(tmp_path):
    (tmp_path / "g.onnx").write_text("old")

    def fail(tmp):
        (tmp / "g.onnx.data").write_text("new data")
        raise RuntimeError("checker refused the graph")
    with pytest.raises(RuntimeError):
        atomic_write_files(tmp_path, ("g.onnx.data", "g.onnx"), fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]  # temp folder gone
    assert (tmp_path / "g.onnx").read_text() == "old"

    def write(tmp):
        (tmp / "g.onnx").write_text("new")
    assert atomic_write_files(tmp_path, ("g.onnx.data", "g.onnx"), write) == ["g.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]
    assert (tmp_path / "g.onnx").read_text() == "new"
