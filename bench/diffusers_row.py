"""The reference row: a stock diffusers StableDiffusionPipeline with AutoencoderTiny, same
settings (guidance 0, Euler trailing, same seeds) - what users run today."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def diffusers_runner(comps, steps: int, height: int, width: int):
    """A run fn (prompts, seeds) -> uint8 [B, H, W, 3] on the host through the stock pipeline."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    s = comps.spec.scheduler
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=s.num_train_timesteps, beta_start=s.beta_start, beta_end=s.beta_end,
        beta_schedule=s.beta_schedule, prediction_type=s.prediction_type,
        timestep_spacing=s.timestep_spacing, steps_offset=s.steps_offset)
    pipe = StableDiffusionPipeline(
        vae=comps.decoder, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
        unet=comps.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def run(prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=0.0, height=height,
                   width=width, output_type="np",
                   generator=[torch.Generator("cpu").manual_seed(x) for x in seeds]).images
        return (out * 255).round().astype(np.uint8)

    return run
