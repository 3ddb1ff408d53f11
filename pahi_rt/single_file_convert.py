"""Original Stable Diffusion layout -> diffusers layout, with diffusers' own key converters
(`diffusers.loaders.single_file_utils`), offline: the configs come from single_file.py.

Each part is built on the `meta` device, given the converted tensors (`assign`: no copy, the
file's dtype kept), checked strictly and saved as safetensors; then its tensors are dropped.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import InputError, ModelLoadError


def convert(path: Path, arch, configs: dict, out: Path) -> None:
    """Write the diffusers-layout directory of single-file checkpoint `path` into `out`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import load_file

    try:
        ckpt = load_file(str(path))
    except Exception as e:  # safetensors raises its own types on damaged files
        raise InputError(f"--model {path}: unreadable safetensors ({str(e).splitlines()[0]})"
                         ) from None
    out.mkdir(parents=True)
    unet_cfg, vae_cfg = configs["unet"], configs["vae"]
    _save(UNet2DConditionModel, unet_cfg, sfu.convert_ldm_unet_checkpoint(ckpt, unet_cfg),
          out / "unet", "UNet", path)
    _save(AutoencoderKL, vae_cfg, sfu.convert_ldm_vae_checkpoint(ckpt, vae_cfg), out / "vae",
          "VAE", path)
    for sub, layout, prefix in arch.text_encoders:
        _save_text(ckpt, configs[sub], layout, prefix, out / sub, path)
    _save_tokenizers(arch, out)
    for name, cfg in configs.items():  # model_index.json, scheduler/scheduler_config.json
        if name in ("", "scheduler"):
            target = out / name / ("model_index.json" if not name else "scheduler_config.json")
            target.parent.mkdir(exist_ok=True)
            target.write_text(json.dumps(cfg, indent=1) + "\n")


def _model(cls, cfg: dict):
    with torch.device("meta"):
        if cls.__module__.startswith("diffusers"):
            return cls.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
        from transformers import CLIPTextConfig

        return cls(CLIPTextConfig(**{k: v for k, v in cfg.items() if k != "architectures"}))


def _save(cls, cfg: dict, state: dict, out: Path, what: str, path: Path,
          allowed_extra: tuple[str, ...] = ()) -> None:
    model = _model(cls, cfg)
    wanted = set(model.state_dict())
    missing = sorted(wanted - set(state))
    extra = sorted(set(state) - wanted - set(allowed_extra))
    if missing or extra:
        raise InputError(f"--model {path}: the {what} does not match its config "
                         f"({len(missing)} tensors missing, e.g. {missing[:2]}; "
                         f"{len(extra)} unexpected, e.g. {extra[:2]})")
    state = {k: v for k, v in state.items() if k in wanted}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise InputError(f"--model {path}: the {what} does not match its config: "
                         f"{str(e).splitlines()[-1].strip()}") from None
    try:
        model.save_pretrained(str(out), safe_serialization=True)
    except OSError as e:
        raise ModelLoadError(f"could not write {out}: {e}") from None


def _save_text(ckpt: dict, cfg: dict, layout: str, prefix: str, out: Path, path: Path) -> None:
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with_projection = cfg.get("architectures") == ["CLIPTextModelWithProjection"]
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    if layout == "clip":
        state = sfu.convert_ldm_clip_checkpoint(ckpt, remove_prefix=prefix)
    else:
        # OpenCLIP towers are cut where diffusers reads them (SD 2.x: 23 of 24 layers)
        block = prefix + "transformer.resblocks."
        keep = {k: v for k, v in ckpt.items() if k.startswith(prefix) and not (
            k.startswith(block) and int(k[len(block):].split(".")[0]) >= cfg["num_hidden_layers"])}
        state = sfu.convert_open_clip_checkpoint(_model(cls, cfg), keep, prefix=prefix)
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    if not any(k.startswith("text_model.") for k in _model(cls, cfg).state_dict()):
        # transformers 5 dropped the `text_model.` level that diffusers' converters name
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    _save(cls, {**cfg, "_class_name": cls.__name__}, state, out, f"text encoder ({prefix})", path,
          allowed_extra=("text_projection.weight", "logit_scale"))


def _save_tokenizers(arch, out: Path) -> None:
    from transformers import CLIPTokenizer

    from .tokenizer import bpe_path, vocab_and_merges

    vocab, merges = vocab_and_merges(bpe_path())
    for sub, pad in arch.tokenizers:
        CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad, model_max_length=77
                      ).save_pretrained(str(out / sub))
