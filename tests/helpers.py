"""Test helpers: tiny random checkpoints and paths to shared data."""
from __future__ import annotations

import json
from pathlib import Path

import torch

# the checkout's sibling shared/data (a worktree under wt/ finds it one level further up)
SHARED = next((p / "shared" / "data" for p in Path(__file__).resolve().parents[1:4]
               if (p / "shared" / "data").is_dir()),
              Path(__file__).resolve().parents[1].parent / "shared" / "data")


def save_tiny_checkpoint(root: Path, seed: int, unet_overrides: dict | None = None,
                         scheduler_overrides: dict | None = None, vae: bool = False,
                         scheduler_class: str = "EulerDiscreteScheduler") -> tuple[Path, Path]:
    """A diffusers-layout model dir and an AutoencoderTiny dir with random weights; with `vae`,
    the model dir has a full VAE (AutoencoderKL, specs.TINY_VAE) in vae/ too."""
    import diffusers
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pahi_rt import specs, taesd
    from pahi_rt.tokenizer import clip_tokenizer

    model_dir, decoder_dir = root / "model", root / "taesd"
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**specs.TINY_UNET, **(unet_overrides or {})})
    text = CLIPTextModel(CLIPTextConfig(**specs.TINY_TEXT))
    sched = getattr(diffusers, scheduler_class)(**{**dict(beta_start=0.00085, beta_end=0.012,
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
    if vae:
        from pahi_rt.decoders import build_vae

        build_vae(specs.TINY_VAE, seed=seed).save_pretrained(model_dir / "vae")
    return model_dir, decoder_dir


def save_tiny_xl_checkpoint(root: Path, seed: int, scheduler_class: str = "EulerDiscreteScheduler",
                            scheduler_overrides: dict | None = None) -> tuple[Path, Path]:
    """A tiny random SDXL checkpoint (diffusers layout, model_index.json included: two
    tokenizers and text encoders, a text_time UNet) and an AutoencoderTiny dir."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pahi_rt import specs, taesd
    from pahi_rt.tokenizer import clip_tokenizer

    model_dir, decoder_dir = root / "model", root / "taesd"
    torch.manual_seed(seed)
    diffusers.UNet2DConditionModel(**specs.TINY_XL_UNET).save_pretrained(model_dir / "unet")
    CLIPTextModel(CLIPTextConfig(**specs.TINY_TEXT)).save_pretrained(model_dir / "text_encoder")
    CLIPTextModelWithProjection(CLIPTextConfig(**specs.TINY_TEXT)).save_pretrained(
        model_dir / "text_encoder_2")
    clip_tokenizer("<|endoftext|>").save_pretrained(model_dir / "tokenizer")
    clip_tokenizer().save_pretrained(model_dir / "tokenizer_2")
    getattr(diffusers, scheduler_class)(**{
        **dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
               timestep_spacing="trailing"), **(scheduler_overrides or {})}
    ).save_pretrained(model_dir / "scheduler")
    (model_dir / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": diffusers.__version__}))
    taesd.build(specs.TINY_TAESD, seed=seed).save_pretrained(decoder_dir)
    return model_dir, decoder_dir


def random_head(mode: str = "pahi", latent_shape=(4, 8, 8), text_dim: int = 32, seed: int = 0,
                base_model: str = "tiny", architecture: str = "sd2"):
    """A HI/PAHI head with random non-zero weights everywhere, so mu and sigma matter."""
    from pahi_rt.heads.head import HeadConfig, build_head

    head = build_head(HeadConfig(mode, tuple(latent_shape), text_dim, hidden=16,
                                 base_model=base_model, architecture=architecture))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return head.eval().requires_grad_(False)


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def save_tiny_clip(root: Path, seed: int = 0, image_size: int = 32, shortest_edge: int = 40
                   ) -> Path:
    """A tiny random CLIPModel + CLIP tokenizer + CLIPImageProcessor config in one directory,
    laid out like an HF repo (PickScore_v1 + its processor)."""
    from transformers import CLIPConfig, CLIPModel

    from pahi_rt.tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=image_size, patch_size=8),
        projection_dim=8)
    CLIPModel(config).save_pretrained(root, safe_serialization=True)
    clip_tokenizer().save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": shortest_edge}, "resample": 3, "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return root


def traced_fused_graph(components, steps: int, head=None):
    """The whole reference sampler as one torch module, for tracing a fused graph the old way
    (the composed graphs are checked against it)."""
    from torch import nn

    from pahi_rt import sampling

    schedule = sampling.Schedule.from_spec(components.spec.scheduler, steps)

    class FusedGraph(nn.Module):
        def forward(self, input_ids, eps):
            emb = sampling.encode_text(components.text_encoder, input_ids)
            noise = head(eps, emb) if head is not None else eps
            latents = sampling.denoise(components.unet, noise, emb, schedule)
            return sampling.to_uint8(sampling.decode(components.decoder, latents,
                                                     components.spec.latent_scale))
    return FusedGraph()
