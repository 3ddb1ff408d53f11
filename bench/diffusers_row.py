"""The reference row: a stock diffusers pipeline with AutoencoderTiny, same settings (guidance 0,
the scheduler the checkpoint names with trailing spacing, same seeds) - what users run today:
`StableDiffusionPipeline` for SD 2.x, `StableDiffusionXLPipeline` for SDXL models."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pahi_rt.specs import SDXL


def stock_pipeline(comps):
    """The diffusers pipeline of the components' architecture, sharing their modules."""
    import diffusers

    s = comps.spec.scheduler
    scheduler = getattr(diffusers, s.class_name)(  # Euler or Euler-ancestral (`SAMPLERS`)
        num_train_timesteps=s.num_train_timesteps, beta_start=s.beta_start, beta_end=s.beta_end,
        beta_schedule=s.beta_schedule, prediction_type=s.prediction_type,
        timestep_spacing=s.timestep_spacing, steps_offset=s.steps_offset)
    if comps.spec.architecture == SDXL:
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=comps.decoder, text_encoder=comps.text_encoder,
            text_encoder_2=comps.text_encoder_2, tokenizer=comps.tokenizer,
            tokenizer_2=comps.tokenizer_2, unet=comps.unet, scheduler=scheduler,
            add_watermarker=False)
    else:
        pipe = diffusers.StableDiffusionPipeline(
            vae=comps.decoder, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
            unet=comps.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_runner(comps, steps: int, height: int, width: int):
    """A run fn (prompts, seeds) -> uint8 [B, H, W, 3] on the host through the stock pipeline
    (one CPU generator per image: image i from seeds[i], its later ancestral noise included)."""
    pipe = stock_pipeline(comps)

    def run(prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=0.0, height=height,
                   width=width, output_type="np",
                   generator=[torch.Generator("cpu").manual_seed(x) for x in seeds]).images
        return (out * 255).round().astype(np.uint8)

    return run
