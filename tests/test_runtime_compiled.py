"""The compiled torch backend (torch.compile, inductor) on the CPU: same pixels as eager, fused
and staged, with static shapes (a smaller batch is padded). The CUDA-graph replay is checked in
test_gpu.py."""
from __future__ import annotations

import numpy as np

from pahi_rt.runtime.backend import null_timer
from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
from pahi_rt.specs import MODES, RenderShape


def test_compiled_matches_eager_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = load_model("tiny", device="cpu", noise=("pahi",), random_heads=True, height=64,
                       width=64)
    mode, prompts, seeds = MODES["pahi-1step"], ["a cat", "a dog"], [1, 2]
    base = dict(backend="torch", mode=mode, shape=RenderShape(batch=2, height=64, width=64))
    eager = open_pipeline(model, PipelineConfig(**base))
    compiled = open_pipeline(model, PipelineConfig(**base, compile=True))
    reference = eager(prompts, seeds).astype(int)
    assert reference.std() > 20
    for out in (compiled(prompts, seeds), compiled.run_staged(prompts, seeds, null_timer)):
        assert np.abs(out.astype(int) - reference).max() <= 1
    one = compiled(prompts[:1], [7])  # padded to the compiled batch, cut back to one image
    assert one.shape == (1, 64, 64, 3)
    assert np.abs(one.astype(int) - eager(prompts[:1], [7]).astype(int)).max() <= 1
    assert compiled.backend.compile_seconds > 0 and (tmp_path / "inductor").exists()
