"""The CUDA paths on the tiny model: onnxruntime CUDA (IO binding, CUDA graphs), compiled torch
replayed as one CUDA graph, fp16 on the GPU, and a bench run with every row. Need a GPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pahi_rt import sampling
from pahi_rt.runtime.backend import RunConfig, null_timer
from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
from pahi_rt.specs import MODES, RenderShape

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
PROMPTS, SEEDS = ["a red fox in the snow", "an astronaut riding a horse"], [5, 6]


def _ids_eps(comps, seeds=SEEDS):
    ids = sampling.tokenize(comps.tokenizer, PROMPTS).numpy()
    return ids, sampling.draw_eps(seeds, comps.spec.latent_shape(64, 64)).numpy()


def _cpu_reference(comps, head, mode):
    from pahi_rt.runtime.torch_backend import TorchBackend

    source = head if MODES[mode].noise != "gaussian" else sampling.gaussian
    return TorchBackend(RunConfig(MODES[mode], RenderShape(2, 64, 64)), comps,
                        source).run(*_ids_eps(comps))


@pytest.mark.parametrize("mode", ["pahi-1step", "gaussian-2step"])
def test_onnxruntime_cuda_matches_torch(tiny_artifacts, tiny_components, pahi_head, mode):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider (pip install 'pahi-rt[gpu]')")
    from pahi_rt.runtime.ort_backend import OrtBackend

    backend = OrtBackend(RunConfig(MODES[mode], RenderShape(2, 64, 64)), tiny_artifacts.directory,
                         tiny_components.spec, "cuda")
    ref = _cpu_reference(tiny_components, pahi_head, mode).astype(int)
    ids, eps = _ids_eps(tiny_components)
    for _ in range(2):  # the second call replays the captured CUDA graphs
        for out in (backend.run(ids, eps), backend.run_staged(ids, eps, null_timer)):
            assert np.abs(out.astype(int) - ref).max() <= 2, backend.notes
    other = backend.run(*_ids_eps(tiny_components, [7, 8]))  # new inputs reach the graph
    assert np.abs(other.astype(int) - ref).mean() > 1
    print("onnxruntime CUDA notes:", backend.notes or "all graphs captured")


def test_compiled_cuda_graph_matches_eager():
    model = load_model("tiny", device="cuda", noise=("pahi",), random_heads=True, height=64,
                       width=64)
    mode = MODES["pahi-1step"]
    base = dict(backend="torch", mode=mode, shape=RenderShape(batch=2, height=64, width=64))
    eager = open_pipeline(model, PipelineConfig(**base))
    compiled = open_pipeline(model, PipelineConfig(**base, compile=True))
    a, b = compiled(PROMPTS, SEEDS), eager(PROMPTS, SEEDS)
    assert compiled.backend.graph is not None  # replayed as one CUDA graph
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    c = compiled(PROMPTS[:1], [9])  # padded to the static batch, new seed reaches the graph
    assert np.abs(c.astype(int) - eager(PROMPTS[:1], [9]).astype(int)).max() <= 2
    assert np.abs(c.astype(int) - a[:1].astype(int)).mean() > 1


def test_fp16_on_cuda_close_to_fp32():
    model = load_model("tiny", device="cuda", height=64, width=64)
    mode = MODES["gaussian-1step"]
    base = dict(backend="torch", mode=mode)
    fp32 = open_pipeline(model, PipelineConfig(**base, shape=RenderShape(
        batch=2, height=64, width=64, precision="fp32")))(PROMPTS, SEEDS)
    fp16 = open_pipeline(model, PipelineConfig(**base, shape=RenderShape(
        batch=2, height=64, width=64, precision="fp16")))(PROMPTS, SEEDS)
    diff = np.abs(fp16.astype(int) - fp32.astype(int))
    assert diff.max() <= 16 and diff.mean() <= 2, (diff.max(), diff.mean())


def test_bench_every_row_on_cuda(tmp_path, monkeypatch):
    from pahi_rt.cli import app

    monkeypatch.setenv("PAHI_RT_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(app, [
        "bench", "--model", "tiny", "--height", "64", "--width", "64", "--device", "cuda",
        "--precision", "fp16", "--batch", "1,2", "--warmup", "1", "--iters", "2",
        "--backends", "torch,torch-compile,onnxruntime,onnxruntime-staged,tensorrt,diffusers",
        "--modes", "pahi-1step,gaussian-2step", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "r.json").read_text())
    rows = {(x["backend"], x["mode"], x["batch"]) for x in result["rows"]}
    for batch in (1, 2):
        for name in ("torch", "torch-compile", "onnxruntime", "onnxruntime-staged"):
            assert (name, "pahi-1step", batch) in rows, result["skipped"]
        assert ("diffusers", "gaussian-2step", batch) in rows
    assert result["machine"]["device"] != "cpu"
    print(json.dumps(result["skipped"], indent=1))
