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
