"""SDXL and Euler-ancestral: the reference sampler against diffusers' pipelines (guidance 0,
AutoencoderTiny), on tiny checkpoints built here with diffusers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pahi_rt import sampling
from pahi_rt.components import load_components, scheduler_spec
from pahi_rt.errors import ModelLoadError

from helpers import save_tiny_checkpoint, save_tiny_xl_checkpoint

PROMPTS = ["a red fox in the snow", "an astronaut riding a horse, oil painting"]
SEEDS = [5, 6]


def _pixels(pipe, steps, height, width):
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPTS, num_inference_steps=steps, guidance_scale=0.0, height=height, width=width,
               generator=[torch.Generator("cpu").manual_seed(s) for s in SEEDS],
               output_type="np").images
    return (out * 255).round().astype(np.uint8)


def xl_reference(comps, model_dir, steps, height, width):
    import diffusers

    cls = getattr(diffusers, comps.spec.scheduler.class_name)
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=comps.decoder, text_encoder=comps.text_encoder, text_encoder_2=comps.text_encoder_2,
        tokenizer=comps.tokenizer, tokenizer_2=comps.tokenizer_2, unet=comps.unet,
        scheduler=cls.from_pretrained(model_dir / "scheduler"), add_watermarker=False)
    return _pixels(pipe, steps, height, width)


def sd_reference(comps, model_dir, steps, height, width):
    import diffusers

    cls = getattr(diffusers, comps.spec.scheduler.class_name)
    pipe = diffusers.StableDiffusionPipeline(
        vae=comps.decoder, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
        unet=comps.unet, scheduler=cls.from_pretrained(model_dir / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return _pixels(pipe, steps, height, width)


def _check(ours, ref):
    assert ours.shape == ref.shape == (2, 64, 96, 3)
    assert ours.std() > 20, "images must have contrast for the comparison to mean anything"
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"max level difference {diff.max()}"


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler",
                                       "EulerAncestralDiscreteScheduler"])
@pytest.mark.parametrize("steps", [1, 2])
def test_sdxl_pixel_parity_with_diffusers(tmp_path, scheduler, steps):
    model_dir, decoder_dir = save_tiny_xl_checkpoint(tmp_path, 7, scheduler)
    comps = load_components(str(model_dir), str(decoder_dir))
    assert comps.spec.architecture == "sdxl" and comps.spec.scheduler.class_name == scheduler
    ours = sampling.generate(comps, PROMPTS, SEEDS, steps=steps, height=64, width=96).numpy()
    _check(ours, xl_reference(comps, model_dir, steps, 64, 96))


@pytest.mark.parametrize("steps", [1, 2])
def test_sd_euler_ancestral_parity_with_diffusers(tmp_path, steps):
    model_dir, decoder_dir = save_tiny_checkpoint(
        tmp_path, 8, scheduler_class="EulerAncestralDiscreteScheduler")
    comps = load_components(str(model_dir), str(decoder_dir))
    assert comps.spec.scheduler.sampler == "Euler a"
    ours = sampling.generate(comps, PROMPTS, SEEDS, steps=steps, height=64, width=96).numpy()
    _check(ours, sd_reference(comps, model_dir, steps, 64, 96))


def test_ancestral_noise_comes_from_the_seed(tiny_xl_components):
    """Two ancestral steps: the seed decides the later noise too (same seed, same image), and
    one step equals plain Euler (the last step adds no noise)."""
    from dataclasses import replace

    comps = tiny_xl_components
    a = sampling.generate(comps, ["a cat"], [3], steps=2, height=64, width=64)
    b = sampling.generate(comps, ["a cat"], [3], steps=2, height=64, width=64)
    assert torch.equal(a, b)
    euler = replace(comps, spec=replace(comps.spec, scheduler=replace(
        comps.spec.scheduler, class_name="EulerDiscreteScheduler")))
    one_a = sampling.generate(comps, ["a cat"], [3], steps=1, height=64, width=64)
    assert torch.equal(one_a, sampling.generate(euler, ["a cat"], [3], steps=1, height=64,
                                                width=64))
    assert not torch.equal(a, sampling.generate(euler, ["a cat"], [3], steps=2, height=64,
                                                width=64))


def test_other_schedulers_are_refused_in_one_line():
    with pytest.raises(ModelLoadError, match="DPMSolverMultistepScheduler is not supported"):
        scheduler_spec({"_class_name": "DPMSolverMultistepScheduler"})


def test_unsupported_architecture_is_refused(tmp_path):
    import json

    model_dir, decoder_dir = save_tiny_xl_checkpoint(tmp_path, 1)
    (model_dir / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelLoadError, match="FluxPipeline is not supported"):
        load_components(str(model_dir), str(decoder_dir))


def test_add_time_ids_checked_against_the_unet(tmp_path):
    import json

    model_dir, decoder_dir = save_tiny_xl_checkpoint(tmp_path, 1)
    cfg = json.loads((model_dir / "unet" / "config.json").read_text())
    cfg["addition_time_embed_dim"] = 4
    (model_dir / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="added embedding"):
        load_components(str(model_dir), str(decoder_dir))
