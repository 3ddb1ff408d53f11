"""HPS v2.1 (Wu et al., 2023): an OpenCLIP ViT-H-14 fine-tuned on human preferences.

Score = cosine(image embedding, prompt embedding), as `hpsv2.score` computes it (no logit
scale). The checkpoint (`HPS_v2.1_compressed.pt` in the HF repo `xswu/HPSv2`, or any OpenCLIP
state dict as .pt/.safetensors) is read as a plain state dict (`torch.load(weights_only=True)`,
never unpickling code) and its OpenCLIP keys are mapped onto a transformers `CLIPModel` with the
same architecture (the way laion's HF CLIP-ViT-H-14 was converted): open_clip itself needs
torchvision, whose wheels are tied to one torch build, and its math is the same CLIP.
Preprocessing is OpenCLIP's eval transform in differentiable torch: shortest side -> 224
(bicubic, antialiased like PIL), center crop rounded like torchvision, OpenAI mean/std.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError, ModelLoadError
from ..hub import local_file
from .clip_preprocess import CLIP_MEAN, CLIP_STD, ClipImagePreprocess, pooled

HPSV2_REPO = "xswu/HPSv2"
HPSV2_FILE = "HPS_v2.1_compressed.pt"
HEAD_WIDTH = {1280: 80}  # OpenCLIP ViT-H-14's vision tower uses 80-wide heads; others 64


def resolve(source: str | None) -> Path:
    """A local checkpoint file, or `REPO[:FILE]` from the HF cache (one-line error offline)."""
    source = source or HPSV2_REPO
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.exists() or source.startswith((".", "/", "~")):
        raise InputError(f"--scorer hpsv2: '{source}' is not a checkpoint file")
    repo, _, name = source.partition(":")
    return Path(local_file(repo, name or HPSV2_FILE,
                           hint="; pass a local file with --scorer hpsv2@FILE"))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """OpenCLIP state dict from .safetensors or a weights-only torch file ({'state_dict': ...}
    and DataParallel's 'module.' prefix are unwrapped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code in it, ...
        raise ModelLoadError(f"could not read hpsv2 checkpoint '{path}': "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict) or "visual.proj" not in {k.removeprefix("module.") for k in sd}:
        raise ModelLoadError(f"'{path}' is not an OpenCLIP state dict (no visual.proj)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _layers(sd: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def clip_config(sd: dict):
    """A transformers CLIPConfig with the architecture the state dict's shapes imply."""
    from transformers import CLIPConfig

    v_width, _, patch, _ = sd["visual.conv1.weight"].shape
    grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    t_width = sd["token_embedding.weight"].shape[1]
    vision = dict(hidden_size=v_width, patch_size=patch, image_size=grid * patch,
                  intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                  num_hidden_layers=_layers(sd, "visual.transformer.resblocks."),
                  num_attention_heads=v_width // HEAD_WIDTH.get(v_width, 64),
                  hidden_act="gelu", layer_norm_eps=1e-5)
    text = dict(hidden_size=t_width, vocab_size=sd["token_embedding.weight"].shape[0],
                max_position_embeddings=sd["positional_embedding"].shape[0],
                intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                num_hidden_layers=_layers(sd, "transformer.resblocks."),
                num_attention_heads=t_width // 64, hidden_act="gelu", layer_norm_eps=1e-5,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=0)
    return CLIPConfig(text_config=text, vision_config=vision,
                      projection_dim=sd["visual.proj"].shape[1])


def _blocks(sd: dict, src: str, dst: str, n: int) -> dict:
    out = {}
    for i in range(n):
        s, d = f"{src}.{i}.", f"{dst}.{i}."
        for name in ("weight", "bias"):
            q, k, v = sd[f"{s}attn.in_proj_{name}"].chunk(3)
            out.update({f"{d}self_attn.q_proj.{name}": q, f"{d}self_attn.k_proj.{name}": k,
                        f"{d}self_attn.v_proj.{name}": v,
                        f"{d}self_attn.out_proj.{name}": sd[f"{s}attn.out_proj.{name}"],
                        f"{d}layer_norm1.{name}": sd[f"{s}ln_1.{name}"],
                        f"{d}layer_norm2.{name}": sd[f"{s}ln_2.{name}"],
                        f"{d}mlp.fc1.{name}": sd[f"{s}mlp.c_fc.{name}"],
                        f"{d}mlp.fc2.{name}": sd[f"{s}mlp.c_proj.{name}"]})
    return out


def to_transformers(sd: dict, config) -> dict:
    """OpenCLIP keys -> transformers CLIPModel keys (attention in_proj split into q, k, v)."""
    v, t = "vision_model.", "text_model."
    out = {f"{v}embeddings.class_embedding": sd["visual.class_embedding"],
           f"{v}embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
           f"{v}embeddings.position_embedding.weight": sd["visual.positional_embedding"],
           f"{t}embeddings.token_embedding.weight": sd["token_embedding.weight"],
           f"{t}embeddings.position_embedding.weight": sd["positional_embedding"],
           "visual_projection.weight": sd["visual.proj"].T.contiguous(),
           "text_projection.weight": sd["text_projection"].T.contiguous(),
           "logit_scale": sd["logit_scale"]}
    for name in ("weight", "bias"):
        out[f"{v}pre_layrnorm.{name}"] = sd[f"visual.ln_pre.{name}"]
        out[f"{v}post_layernorm.{name}"] = sd[f"visual.ln_post.{name}"]
        out[f"{t}final_layer_norm.{name}"] = sd[f"ln_final.{name}"]
    out.update(_blocks(sd, "visual.transformer.resblocks", f"{v}encoder.layers",
                       config.vision_config.num_hidden_layers))
    out.update(_blocks(sd, "transformer.resblocks", f"{t}encoder.layers",
                       config.text_config.num_hidden_layers))
    return out


class HpsV2Scorer(nn.Module):
    """(images [B, 3, H, W] in [0, 1], prompts) -> cosine similarity [B], differentiable."""

    def __init__(self, model: nn.Module, tokenizer, preprocess: nn.Module):
        super().__init__()
        self.model, self.tokenizer, self.preprocess = model, tokenizer, preprocess

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = self.preprocess(images.to(device)).to(self.model.dtype)
        ids = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.model.config.text_config.max_position_embeddings,
                             return_tensors="pt").input_ids.to(device)
        image = pooled(self.model.get_image_features(pixel_values=pixels))
        with torch.no_grad():  # OpenCLIP text tower: causal mask only, pooled at EOT
            text = pooled(self.model.get_text_features(input_ids=ids))
        image = nn.functional.normalize(image.float(), dim=-1)
        text = nn.functional.normalize(text.float(), dim=-1)
        return (image * text).sum(-1)


def load_hpsv2(source: str | None = None) -> HpsV2Scorer:
    """HPS v2.1 from `source` (file, or HF `REPO[:FILE]`; default xswu/HPSv2)."""
    from transformers import CLIPModel

    from ..tokenizer import clip_tokenizer

    sd = read_state_dict(resolve(source))
    try:
        config = clip_config(sd)
        model = CLIPModel(config)
        missing, unexpected = model.load_state_dict(to_transformers(sd, config), strict=False)
    except (KeyError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"hpsv2 checkpoint does not fit OpenCLIP ViT layout: "
                             f"{str(e).splitlines()[0]}") from None
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ModelLoadError(f"hpsv2 checkpoint: missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}")
    size = config.vision_config.image_size
    preprocess = ClipImagePreprocess(size, (size, size), CLIP_MEAN, CLIP_STD, center="round")
    return HpsV2Scorer(model.eval(), clip_tokenizer(), preprocess)
