"""The torch backend, run stage by stage, renders the reference sampler's pixels."""
from __future__ import annotations

import numpy as np
import pytest

from pahi_rt import sampling
from pahi_rt.runtime.backend import RunConfig, WallTimer
from pahi_rt.specs import MODES, RenderShape
from pahi_rt.runtime.torch_backend import TorchBackend


@pytest.mark.parametrize("mode", ["gaussian-1step", "gaussian-2step"])
def test_torch_backend_matches_reference(tiny_components, mode):
    prompts, seeds = ["a cat", "a dog"], [3, 4]
    cfg = RunConfig(MODES[mode], RenderShape(2, 64, 64))
    backend = TorchBackend(cfg, tiny_components)
    ids = sampling.tokenize(tiny_components.tokenizer, prompts).numpy()
    eps = sampling.draw_eps(seeds, tiny_components.spec.latent_shape(64, 64)).numpy()
    timer = WallTimer()
    out = backend.run_staged(ids, eps, timer)
    ref = sampling.generate(tiny_components, prompts, seeds, steps=MODES[mode].steps, height=64,
                            width=64).numpy()
    assert out.dtype == np.uint8 and out.shape == (2, 64, 64, 3)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    expected = {"text_encoder", "head", "decode", "copy_out"} | {
        f"unet_step_{i + 1}" for i in range(MODES[mode].steps)}
    assert set(timer.seconds) == expected
