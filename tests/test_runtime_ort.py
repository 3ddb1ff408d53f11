"""The onnxruntime backend against the torch reference: per component and fused, fp32 and fp16."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pahi_rt import sampling
from pahi_rt.export import graphs
from pahi_rt.runtime.backend import RunConfig
from pahi_rt.runtime.ort_backend import OrtBackend
from pahi_rt.runtime.torch_backend import TorchBackend
from pahi_rt.specs import MODES, NAMES, RenderShape

PROMPTS, SEEDS = ["a red fox in the snow", "an astronaut riding a horse"], [5, 6]
# fp16 vs torch fp32 on the tiny model, measured: max 10, mean < 1 level (bench/results/cpu-2core)
FP16_MAX_LEVELS, FP16_MEAN_LEVELS = 16, 2.0


def _inputs(comps):
    ids = sampling.tokenize(comps.tokenizer, PROMPTS).numpy()
    eps = sampling.draw_eps(SEEDS, comps.spec.latent_shape(64, 64)).numpy()
    return ids, eps


def _reference(comps, head, mode):
    source = head if MODES[mode].noise != "gaussian" else sampling.gaussian
    cfg = RunConfig(MODES[mode], RenderShape(2, 64, 64))
    return TorchBackend(cfg, comps, source).run(*_inputs(comps))


def _ort(artifacts, comps, mode, precision="fp32"):
    cfg = RunConfig(MODES[mode], RenderShape(2, 64, 64, precision))
    return OrtBackend(cfg, artifacts.directory, comps.spec, "cpu")


def test_component_graphs_match_torch(tiny_artifacts, tiny_components, pahi_head):
    comps = tiny_components
    backend = _ort(tiny_artifacts, comps, "pahi-1step")
    ids, eps = _inputs(comps)
    with torch.no_grad():
        emb = sampling.encode_text(comps.text_encoder, torch.from_numpy(ids))
        noise = pahi_head(torch.from_numpy(eps), emb)
        t = torch.full((2,), 999.0)
        pred = comps.unet(noise, t, encoder_hidden_states=emb).sample
        image = sampling.decode(comps.decoder, noise)
    ort_emb = backend.encode_text(ids)[NAMES.text_embeddings]
    torch.testing.assert_close(ort_emb, emb, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(backend.make_noise(eps, {NAMES.text_embeddings: emb}), noise,
                               atol=1e-4, rtol=1e-4)
    ort_pred = backend.infer(graphs.UNET, {NAMES.sample: noise, NAMES.timestep: t,
                                           NAMES.text_embeddings: emb})[NAMES.noise_pred]
    torch.testing.assert_close(ort_pred, pred, atol=1e-4, rtol=1e-4)
    ort_image = backend.infer(graphs.DECODER, {NAMES.latents: noise})[NAMES.image]
    torch.testing.assert_close(ort_image, image, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["pahi-1step", "gaussian-1step", "gaussian-2step"])
def test_fused_and_staged_match_torch_fp32(tiny_artifacts, tiny_components, pahi_head, mode):
    ref = _reference(tiny_components, pahi_head, mode)
    backend = _ort(tiny_artifacts, tiny_components, mode)
    ids, eps = _inputs(tiny_components)
    fused, staged = backend.run(ids, eps), backend.run_staged(ids, eps, _null)
    assert fused.shape == ref.shape == (2, 64, 64, 3) and fused.dtype == np.uint8
    assert ref.std() > 20, "images need contrast for the comparison to mean anything"
    for out in (fused, staged):
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2


def test_pahi_head_changes_the_image(tiny_artifacts, tiny_components, pahi_head):
    """The head's mu/sigma are non-trivial: PAHI and Gaussian differ for the same seeds."""
    ids, eps = _inputs(tiny_components)
    pahi = _ort(tiny_artifacts, tiny_components, "pahi-1step").run(ids, eps)
    gauss = _ort(tiny_artifacts, tiny_components, "gaussian-1step").run(ids, eps)
    assert np.abs(pahi.astype(int) - gauss.astype(int)).mean() > 5


@pytest.mark.parametrize("mode", ["pahi-1step", "gaussian-2step"])
def test_fp16_within_measured_tolerance(tiny_artifacts_fp16, tiny_components, pahi_head, mode):
    ref = _reference(tiny_components, pahi_head, mode)
    backend = _ort(tiny_artifacts_fp16, tiny_components, mode, "fp16")
    ids, eps = _inputs(tiny_components)
    for out in (backend.run(ids, eps), backend.run_staged(ids, eps, _null)):
        diff = np.abs(out.astype(int) - ref.astype(int))
        assert diff.max() <= FP16_MAX_LEVELS and diff.mean() <= FP16_MEAN_LEVELS, (
            diff.max(), diff.mean())


def test_wrong_shape_or_precision_is_refused(tiny_artifacts, tiny_components):
    from pahi_rt.errors import ArtifactError

    cfg = RunConfig(MODES["pahi-1step"], RenderShape(2, 64, 64, "fp16"))
    with pytest.raises(ArtifactError, match="export again"):
        OrtBackend(cfg, tiny_artifacts.directory, tiny_components.spec)


def _null(stage):
    from pahi_rt.runtime.backend import null_timer

    return null_timer(stage)


def test_hi_head_fused_graph(tmp_path, tiny_components):
    """A HI head (one global mu, sigma) exports as `hi-1step` and matches torch."""
    from pahi_rt.export.artifacts import export_artifacts
    from pahi_rt.export.build import ExportOptions

    from helpers import random_head

    head = random_head("hi", seed=5)
    export_artifacts(tiny_components, tmp_path, ExportOptions(
        RenderShape(2, 64, 64), graphs=("head", "hi-1step")), head)
    cfg = RunConfig(MODES["hi-1step"], RenderShape(2, 64, 64))
    ids, eps = _inputs(tiny_components)
    ref = TorchBackend(cfg, tiny_components, head).run(ids, eps)
    out = OrtBackend(cfg, tmp_path, tiny_components.spec, "cpu").run(ids, eps)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2
