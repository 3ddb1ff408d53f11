"""Test helpers: tiny random checkpoints and paths to shared data."""
from __future__ import annotations

from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def save_tiny_checkpoint(root: Path, seed: int, unet_overrides: dict | None = None,
                         scheduler_overrides: dict | None = None) -> tuple[Path, Path]:
    """A diffusers-layout model dir and an AutoencoderTiny dir with random weights."""
    from diffusers import AutoencoderTiny, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pahi_rt import specs, taesd
    from pahi_rt.tokenizer import clip_tokenizer

    model_dir, decoder_dir = root / "model", root / "taesd"
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**specs.TINY_UNET, **(unet_overrides or {})})
    text = CLIPTextModel(CLIPTextConfig(**specs.TINY_TEXT))
    sched = EulerDiscreteScheduler(**{**dict(beta_start=0.00085, beta_end=0.012,
                                             beta_schedule="scaled_linear",
                                             timestep_spacing="trailing"),
                                      **(scheduler_overrides or {})})
    dec = taesd.build(specs.TINY_TAESD, seed=seed)
    unet.save_pretrained(model_dir / "unet")
    text.save_pretrained(model_dir / "text_encoder")
    clip_tokenizer().save_pretrained(model_dir / "tokenizer")
    sched.save_pretrained(model_dir / "scheduler")
    assert isinstance(dec, AutoencoderTiny)
    dec.save_pretrained(decoder_dir)
    return model_dir, decoder_dir


def random_head(mode: str = "pahi", latent_shape=(4, 8, 8), text_dim: int = 32, seed: int = 0):
    """A HI/PAHI head with random non-zero weights everywhere, so mu and sigma matter."""
    from pahi_rt.noise.head import HeadConfig, build_head

    head = build_head(HeadConfig(mode, tuple(latent_shape), text_dim, hidden=16, base_model="tiny"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return head.eval().requires_grad_(False)


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
