"""SDXL through export and onnxruntime on `tiny-xl`: the graphs carry the spec's conditioning
tensors by name, the fused graph equals torch, and Euler-ancestral at 2 steps runs staged with
the seeds' step noise."""
from __future__ import annotations

import numpy as np
import pytest

from pahi_rt.artifacts import manifest as mf
from pahi_rt.errors import InputError
from pahi_rt.runtime.backend import RunConfig, null_timer
from pahi_rt.runtime.ort_backend import OrtBackend
from pahi_rt.runtime.pipeline import LoadedModel, PipelineConfig, open_pipeline
from pahi_rt.runtime.torch_backend import TorchBackend
from pahi_rt.specs import MODES, NAMES, RenderShape

PROMPTS, SEEDS = ["a red fox in the snow", "an astronaut riding a horse"], [11, 12]


def test_xl_graphs_take_the_spec_conditioning_by_name(tiny_xl_artifacts, tiny_xl_components):
    manifest = tiny_xl_artifacts.manifest
    io = {e["graph"]: e["io"] for e in manifest["artifacts"] if e["kind"] == "onnx"}
    assert list(io["text_encoder"]["outputs"]) == [NAMES.text_embeddings, NAMES.text_embeds]
    assert io["text_encoder"]["inputs"][NAMES.input_ids][0] == [2, 2, 77]
    assert list(io["unet"]["inputs"]) == [NAMES.sample, NAMES.timestep, NAMES.text_embeddings,
                                          NAMES.text_embeds, NAMES.time_ids]
    assert io["text_encoder"]["outputs"][NAMES.text_embeds][0] == [
        2, tiny_xl_components.spec.pooled_dim]
    fused = {e["graph"] for e in manifest["artifacts"] if e["graph"] in MODES}
    assert fused == {"pahi-1step", "gaussian-1step"}  # no ancestral 2-step graph


def test_xl_two_step_fused_graph_is_refused_in_one_line(tiny_xl_components):
    from pahi_rt.export.build import graph_plan

    with pytest.raises(InputError, match="Euler-ancestral at 2\\+ steps has no fused graph"):
        graph_plan(None, ("gaussian-2step",), tiny_xl_components.spec)


@pytest.mark.parametrize("mode", ["pahi-1step", "gaussian-1step"])
def test_fused_xl_graph_equals_torch(tiny_xl_artifacts, tiny_xl_components, xl_random_head,
                                     mode):
    """As the SD fused-parity test: composed graph, staged graphs and torch agree (fp32, max
    <= 2 levels)."""
    from pahi_rt import sampling

    comps, m = tiny_xl_components, MODES[mode]
    head = xl_random_head if m.noise == "pahi" else sampling.gaussian
    ids = sampling.tokenize_prompts(comps, PROMPTS).numpy()
    eps = sampling.draw_eps(SEEDS, comps.spec.latent_shape(64, 64)).numpy()
    cfg = RunConfig(m, RenderShape(2, 64, 64))
    with OrtBackend(cfg, tiny_xl_artifacts.directory, comps.spec) as ort:
        assert ort.fused
        fused, staged = ort.run(ids, eps), ort.run_staged(ids, eps, null_timer)
        text = ort.encode_text(ids)
        assert set(text) == {t.name for t in comps.spec.conditioning}
    with TorchBackend(cfg, comps, head) as torch_backend:
        reference = torch_backend.run(ids, eps)
        torch_text = torch_backend.encode_text(ids)
    assert reference.std() > 20, "images need contrast for the comparison to mean anything"
    for other in (staged, reference):
        assert np.abs(fused.astype(int) - other.astype(int)).max() <= 2
    for name, value in torch_text.items():
        assert np.allclose(text[name].numpy(), value.numpy(), atol=1e-4), name


def test_ancestral_two_steps_run_staged_with_the_seed_noise(tiny_xl_artifacts,
                                                           tiny_xl_components):
    """gaussian-2step (Euler a) on onnxruntime: staged (no fused graph), the later noise from
    each image's seed, the same image as torch and the reference sampler; batch 1 of a static
    batch-2 export pads the step noise like eps."""
    from pahi_rt import sampling

    model = LoadedModel(tiny_xl_components, {}, "cpu", None)
    out = {}
    for backend in ("onnxruntime", "torch"):
        config = PipelineConfig(backend=backend, mode=MODES["gaussian-2step"],
                                shape=RenderShape(2, 64, 64),
                                artifacts=tiny_xl_artifacts.directory if backend != "torch"
                                else None)
        with open_pipeline(model, config) as pipe:
            assert not pipe.fused
            out[backend] = pipe(PROMPTS[:1], SEEDS[:1])
    ref = sampling.generate(tiny_xl_components, PROMPTS[:1], SEEDS[:1], steps=2, height=64,
                            width=64).numpy()
    assert ref.std() > 20
    for got in out.values():
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 2
    assert mf.find_artifact(mf.read_manifest(tiny_xl_artifacts.directory), "gaussian-2step",
                            "onnx") is None
