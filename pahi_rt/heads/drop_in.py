"""Drop-in for stock diffusers: initial latents from a HI/PAHI head for `pipe(latents=...)`.

    pipe = StableDiffusionPipeline.from_pretrained("stabilityai/sd-turbo")
    height, width = spec.default_size  # what the head was trained at
    head = load_head("runs/pahi", spec, height, width)
    latents = initial_latents(head, ["a red fox"], [7], height, width, pipe=pipe)
    image = pipe("a red fox", latents=latents, num_inference_steps=1, guidance_scale=0.0).images[0]

The pipeline multiplies given latents by `scheduler.init_noise_sigma` itself, so these are
unit-scale: mu(c) + sigma(c) * eps, with eps drawn exactly as `sampling.draw_eps` (and diffusers
for a list of CPU generators) draws it. The same seed therefore gives pahi-rt's image.

SDXL pipes (`StableDiffusionXLPipeline`, with `text_encoder_2`) work the same way; the head reads
the concatenated penultimate hidden states (`conditioning`). With an Euler-ancestral scheduler at
2+ steps, pahi-rt's later noise is the draws that follow eps on the seed's generator: pass
`generator=` one seeded with the seed that has drawn one latent already to get pahi-rt's image.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import sampling
from ..errors import InputError


@torch.no_grad()
def initial_latents(head, prompts: Sequence[str], seeds: Sequence[int], height: int, width: int,
                    *, pipe=None, tokenizer=None, text_encoder=None) -> torch.Tensor:
    """Unit-scale initial latents [B, C, H/f, W/f] for `prompts` (image i from `seeds[i]`).

    `head` is a GlobalPrior (HI) or NoiseHead (PAHI), or None for plain Gaussian eps. Pass a
    diffusers `pipe`, or its `tokenizer` and `text_encoder`."""
    tokenizer = tokenizer or getattr(pipe, "tokenizer", None)
    text_encoder = text_encoder or getattr(pipe, "text_encoder", None)
    if tokenizer is None or text_encoder is None:
        raise InputError("initial_latents needs `pipe` or both `tokenizer` and `text_encoder`")
    if len(prompts) != len(seeds):
        raise InputError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    factor = getattr(pipe, "vae_scale_factor", 8)
    channels = pipe.unet.config.in_channels if pipe is not None else 4
    if height % factor or width % factor:
        raise InputError(f"height and width must be multiples of {factor}")
    shape = (channels, height // factor, width // factor)
    if head is not None and tuple(head.config.latent_shape) != shape:
        raise InputError(f"the head predicts latents {tuple(head.config.latent_shape)}, "
                         f"but {width}x{height} needs {shape}")
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: both text encoders
        emb = _sdxl_conditioning(pipe, prompts, factor)
    else:
        ids = sampling.tokenize(tokenizer, prompts, tokenizer.model_max_length)
        emb = sampling.encode_text(text_encoder, ids)
    eps = sampling.draw_eps(seeds, shape, emb.dtype).to(emb.device)
    if head is None:
        return eps
    head = head.to(device=emb.device, dtype=emb.dtype)
    return head(eps, emb)


def _sdxl_conditioning(pipe, prompts: Sequence[str], factor: int):
    """An SDXL pipe's conditioning, as `conditioning.encode_prompts` makes it."""
    from types import SimpleNamespace

    from ..specs import SDXL, ModelSpec

    spec = ModelSpec(name="pipe", text_dim=pipe.unet.config.cross_attention_dim,
                     max_tokens=pipe.tokenizer.model_max_length, vae_scale_factor=factor,
                     architecture=SDXL, pooled_dim=pipe.text_encoder_2.config.projection_dim)
    parts = SimpleNamespace(spec=spec, tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2,
                            text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2)
    return sampling.encode_prompts(parts, sampling.tokenize_prompts(parts, prompts))
