"""Rendering through the frozen model from unit-scale noise, differentiably: what scorer training,
test-time compute and evaluation share (the torch reference path of `sampling`)."""
from __future__ import annotations

from typing import Sequence

import torch

from . import sampling
from .pixels import signed_to_unit


@torch.no_grad()
def text_embeddings(components, prompts: Sequence[str]) -> torch.Tensor:
    """Frozen E(c) [B, 77, D] on the components' device."""
    ids = sampling.tokenize(components.tokenizer, prompts, components.spec.max_tokens)
    return sampling.encode_text(components.text_encoder, ids)


def images_from_noise(components, noise: torch.Tensor, emb: torch.Tensor,
                      schedule: sampling.Schedule) -> torch.Tensor:
    """Unit-scale noise -> images [B, 3, H, W] float in [0, 1] (what the scorers read)."""
    latents = sampling.denoise(components.unet, noise.to(components.dtype), emb, schedule)
    image = sampling.decode(components.decoder, latents, components.spec.latent_scale)
    return signed_to_unit(image)
