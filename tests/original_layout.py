"""Test helper: a diffusers-layout SD 2.x checkpoint written as one file in the original Stable
Diffusion layout (what A1111/ComfyUI users have), the inverse of diffusers' single-file
converters. Follows diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py,
generalised to any number of levels and layers per block (the tiny UNet has 2 levels of 1)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RESNET = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]
TOP = [
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
]


def _unet_prefixes(cfg: dict) -> list[tuple[str, str]]:
    per, n = cfg["layers_per_block"] + 1, len(cfg["block_out_channels"])
    down = ["CrossAttn" in t for t in cfg["down_block_types"]]
    up = ["CrossAttn" in t for t in cfg["up_block_types"]]
    out = [
        ("middle_block.1.", "mid_block.attentions.0."),
        ("middle_block.0.", "mid_block.resnets.0."),
        ("middle_block.2.", "mid_block.resnets.1."),
    ]
    for i in range(n):
        for j in range(per - 1):
            out.append((f"input_blocks.{per * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down[i]:
                out.append(
                    (f"input_blocks.{per * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}.")
                )
        for j in range(per):
            out.append((f"output_blocks.{per * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up[i]:
                out.append((f"output_blocks.{per * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < n - 1:
            out.append(
                (f"input_blocks.{per * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv.")
            )
            out.append(
                (
                    f"output_blocks.{per * i + per - 1}.{2 if up[i] else 1}.",
                    f"up_blocks.{i}.upsamplers.0.",
                )
            )
    return out + TOP


def unet_to_original(state: dict, cfg: dict) -> dict:
    prefixes = _unet_prefixes(cfg)
    out = {}
    for key, value in state.items():
        sd_prefix, hf_prefix = next((s, h) for s, h in prefixes if key.startswith(h))
        rest = key[len(hf_prefix) :]
        if "resnets" in hf_prefix:
            for sd, hf in RESNET:
                rest = rest.replace(hf, sd)
        out["model.diffusion_model." + sd_prefix + rest] = value
    return out


def vae_to_original(state: dict) -> dict:
    pairs = [
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(4):
        for j in range(3):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
            pairs.append((f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
        pairs += [
            (f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."),
            (f"up.{3 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."),
        ]
    for i in range(2):
        pairs.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attn = [
        ("norm.", "group_norm."),
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("proj_out.", "to_out.0."),
    ]
    out = {}
    for key, value in state.items():
        for sd, hf in pairs:
            key = key.replace(hf, sd)
        if "mid.attn_1." in key:
            for sd, hf in attn:
                key = key.replace(hf, sd)
            if value.ndim == 2:  # the original attention uses 1x1 convs
                value = value[:, :, None, None]
        out["first_stage_model." + key] = value
    return out


def text_to_openclip(
    state: dict,
    layers: int,
    seed: int,
    p: str = "cond_stage_model.model.",
    extra_layer: bool = True,
) -> dict:
    """HF CLIPTextModel(WithProjection) -> OpenCLIP keys under prefix `p`; `extra_layer`: plus
    the layer SD 2.x's tower has beyond what it reads (random: it must be dropped). The text
    projection is the model's own (transposed, as OpenCLIP stores it) or random."""
    out = {}
    # transformers 5 saves CLIPTextModel without its `text_model.` level
    state = {
        "text_model." + k
        if k.startswith(("embeddings.", "encoder.", "final_layer_norm."))
        else k: v
        for k, v in state.items()
    }
    g = torch.Generator().manual_seed(seed)
    for i in range(layers + extra_layer):
        src = i if i < layers else 0
        hf, sd = f"text_model.encoder.layers.{src}.", f"{p}transformer.resblocks.{i}."
        noise = (lambda t: torch.randn(t.shape, generator=g)) if i == layers else (lambda t: t)
        for part in ("weight", "bias"):
            out[sd + f"attn.in_proj_{part}"] = noise(
                torch.cat([state[hf + f"self_attn.{x}_proj.{part}"] for x in "qkv"])
            )
            for a, b in (
                ("attn.out_proj", "self_attn.out_proj"),
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
            ):
                out[sd + f"{a}.{part}"] = noise(state[hf + f"{b}.{part}"])
    width = state["text_model.embeddings.token_embedding.weight"].shape[1]
    out.update(
        {
            p + "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
            p + "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
            p + "ln_final.weight": state["text_model.final_layer_norm.weight"],
            p + "ln_final.bias": state["text_model.final_layer_norm.bias"],
            p + "text_projection": state["text_projection.weight"].T
            if "text_projection.weight" in state
            else torch.randn(width, width, generator=g),
            p + "logit_scale": torch.tensor(4.6),
        }
    )
    return out


def write_original(model_dir: Path, out: Path, dtype: torch.dtype | None = None) -> Path:
    """model_dir (tokenizer/ text_encoder/ unet/ vae/) -> one original-layout safetensors."""
    unet_cfg = json.loads((model_dir / "unet" / "config.json").read_text())
    text_cfg = json.loads((model_dir / "text_encoder" / "config.json").read_text())
    state = unet_to_original(
        load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors"), unet_cfg
    )
    state.update(
        vae_to_original(load_file(model_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    )
    state.update(
        text_to_openclip(
            load_file(model_dir / "text_encoder" / "model.safetensors"),
            text_cfg["num_hidden_layers"],
            seed=7,
        )
    )
    state = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in state.items()}
    save_file(state, str(out))
    return out


XL_TOP = [
    ("label_emb.0.0.", "add_embedding.linear_1."),
    ("label_emb.0.2.", "add_embedding.linear_2."),
]


def write_original_xl(model_dir: Path, out: Path) -> Path:
    """An SDXL diffusers dir (unet/ vae/ text_encoder/ text_encoder_2/) -> one original file."""
    unet_cfg = json.loads((model_dir / "unet" / "config.json").read_text())
    unet = load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    top = {k: v for k, v in unet.items() if k.startswith("add_embedding.")}
    state = unet_to_original({k: v for k, v in unet.items() if k not in top}, unet_cfg)
    for sd, hf in XL_TOP:
        for k, v in top.items():
            if k.startswith(hf):
                state["model.diffusion_model." + sd + k[len(hf) :]] = v
    state.update(
        vae_to_original(load_file(model_dir / "vae" / "diffusion_pytorch_model.safetensors"))
    )
    clip = load_file(model_dir / "text_encoder" / "model.safetensors")
    for k, v in clip.items():
        k = k if k.startswith("text_model.") else "text_model." + k
        state["conditioner.embedders.0.transformer." + k] = v
    big_cfg = json.loads((model_dir / "text_encoder_2" / "config.json").read_text())
    big = load_file(model_dir / "text_encoder_2" / "model.safetensors")
    state.update(
        text_to_openclip(
            big, big_cfg["num_hidden_layers"], 7, "conditioner.embedders.1.model.", False
        )
    )
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out
