"""The TensorRT backend against torch: needs a CUDA GPU and an engine built for it."""
from __future__ import annotations

import numpy as np
import pytest

from pahi_rt import sampling
from pahi_rt.runtime.backend import RunConfig
from pahi_rt.specs import MODES, RenderShape

from helpers import has_module

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not (has_module("tensorrt_rtx") or has_module("tensorrt")),
                       reason="needs tensorrt or tensorrt_rtx"),
]


@pytest.mark.parametrize("mode", ["pahi-1step", "gaussian-1step", "gaussian-2step"])
def test_engine_matches_torch(tmp_path, tiny_components, pahi_head, mode):
    from pahi_rt.export.artifacts import export_artifacts
    from pahi_rt.export.build import ExportOptions
    from pahi_rt.export.engine import BuildOptions
    from pahi_rt.runtime.torch_backend import TorchBackend
    from pahi_rt.runtime.trt_backend import TrtBackend

    targets = ("current",)  # TensorRT-RTX builds for this GPU (classic TensorRT always does)
    graphs = ("text_encoder", "unet", "decoder", "head", mode)
    export_artifacts(tiny_components, tmp_path, ExportOptions(
        shape=RenderShape(batch=2, height=64, width=64), graphs=graphs, engines=graphs,
        build=BuildOptions(targets=targets)), pahi_head)
    from pahi_rt.artifacts.tensorrt import engine_validity
    from pahi_rt.export import engine as trt_engine

    validity, why = engine_validity((tmp_path / f"{mode}.engine").read_bytes())
    if validity == "INVALID" and "UNSUPPORTED_CC" in why:  # e.g. TensorRT-RTX on Hopper
        pytest.skip(f"{trt_engine.flavour_version()} does not run on this GPU: {why}")
    cfg = RunConfig(MODES[mode], RenderShape(2, 64, 64))
    ids = sampling.tokenize(tiny_components.tokenizer, ["a cat", "a dog"]).numpy()
    eps = sampling.draw_eps([1, 2], (4, 8, 8)).numpy()
    source = pahi_head if mode.startswith("pahi") else sampling.gaussian
    ref = TorchBackend(cfg, tiny_components, source).run(ids, eps).astype(int)
    backend = TrtBackend(cfg, tmp_path, tiny_components.spec)
    for out in (backend.run(ids, eps), backend.run_staged(ids, eps, lambda s: _null())):
        assert np.abs(out.astype(int) - ref).max() <= 2


def _null():
    from contextlib import nullcontext

    return nullcontext()
