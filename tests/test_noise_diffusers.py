"""`initial_latents` in a stock diffusers pipeline gives pahi-rt's image for the same head/seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pahi_rt import sampling
from pahi_rt.components import load_components
from pahi_rt.errors import InputError
from pahi_rt.heads.drop_in import initial_latents

from helpers import random_head

PROMPTS, SEEDS = ["a red fox in the snow", "a lighthouse at dusk"], [11, 12]


@pytest.mark.parametrize("mode", ["pahi", "hi"])
def test_pipeline_with_head_latents_matches_sampler(tiny_checkpoint, mode):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    model_dir, decoder_dir = tiny_checkpoint
    comps = load_components(str(model_dir), str(decoder_dir))
    head = random_head(mode, seed=3)
    pipe = StableDiffusionPipeline(
        vae=comps.decoder, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
        unet=comps.unet, scheduler=EulerDiscreteScheduler.from_pretrained(model_dir / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = initial_latents(head, PROMPTS, SEEDS, 64, 64, pipe=pipe)
    out = pipe(PROMPTS, latents=latents, num_inference_steps=1, guidance_scale=0.0, height=64,
               width=64, output_type="np").images
    theirs = (out * 255).round().astype(np.uint8)
    ours = sampling.generate(comps, PROMPTS, SEEDS, height=64, width=64,
                             noise_source=head).numpy()
    gauss = sampling.generate(comps, PROMPTS, SEEDS, height=64, width=64).numpy()
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
    assert np.abs(ours.astype(int) - gauss.astype(int)).mean() > 3, "the head must matter"


def test_shape_mismatch_is_refused(tiny_components):
    head = random_head("pahi", latent_shape=(4, 16, 16))
    with pytest.raises(InputError, match="predicts latents"):
        initial_latents(head, ["a"], [0], 64, 64, tokenizer=tiny_components.tokenizer,
                        text_encoder=tiny_components.text_encoder)


def test_no_head_gives_the_seeded_gaussian(tiny_components):
    eps = initial_latents(None, ["a"], [4], 64, 64, tokenizer=tiny_components.tokenizer,
                          text_encoder=tiny_components.text_encoder)
    assert torch.equal(eps, sampling.draw_eps([4], (4, 8, 8)))
