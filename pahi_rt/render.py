"""Rendering through the frozen model from unit-scale noise, differentiably: what scorer training,
test-time compute and evaluation share (the torch reference path of `sampling`)."""
from __future__ import annotations

from typing import Sequence

import torch

from . import sampling
from .pixels import signed_to_unit


@torch.no_grad()
def text_embeddings(components, prompts: Sequence[str]) -> sampling.Conditioned:
    """Frozen E(c) on the components' device: [B, 77, D], or SDXL's `Conditioning` (whose
    hidden states are the head's text feature: `conditioning.text_feature`)."""
    return sampling.encode_prompts(components, sampling.tokenize_prompts(components, prompts))


def images_from_noise(components, noise: torch.Tensor, emb: sampling.Conditioned,
                      schedule: sampling.Schedule, step_noise: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """Unit-scale noise -> images [B, 3, H, W] float in [0, 1] (what the scorers read).
    `step_noise`: Euler-ancestral noise from the seeds (`sampling.draw_step_noise`); None
    draws it from torch's generator (training)."""
    latents = sampling.denoise(components.unet, noise.to(components.dtype), emb, schedule,
                               step_noise)
    image = sampling.decode(components.decoder, latents, components.spec.latent_scale)
    return signed_to_unit(image)
