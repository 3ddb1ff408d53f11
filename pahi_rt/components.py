"""Load or build the diffusion model's parts: tokenizer, text encoder, UNet, scheduler spec,
decoder.

Sources: a preset name (`sd-turbo` from the HF cache/hub, `synthetic` and `tiny` built from
`specs.py` with random weights), or a diffusers-layout directory / HF id. Weights load from
safetensors only (`use_safetensors=True`), never from pickles.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import torch

from . import taesd
from .random_init import fast_random_init
from .errors import InputError, ModelLoadError
from .hub import SUBFOLDERS, local_snapshot, resolve_model_dir, unet_sample_size  # noqa: F401
from .specs import (DEFAULT_MODEL, OWN_VAE, PRESETS, ModelSpec, Preset,  # noqa: F401
                    SchedulerSpec, random_decoder_label)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Components:
    """A loaded model, frozen and in eval mode. `spec` sizes every tensor downstream."""

    spec: ModelSpec
    tokenizer: object  # transformers CLIPTokenizer
    text_encoder: torch.nn.Module  # transformers CLIPTextModel
    unet: torch.nn.Module | None  # diffusers UNet2DConditionModel (None: text parts only)
    decoder: torch.nn.Module | None  # diffusers AutoencoderTiny (None: text parts only)
    model_id: str  # what --model named
    decoder_id: str  # what --decoder named (or the preset's default)

    @property
    def dtype(self) -> torch.dtype:
        return (self.unet if self.unet is not None else self.text_encoder).dtype

    @property
    def device(self) -> torch.device:
        return (self.unet if self.unet is not None else self.text_encoder).device


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise InputError(f"--precision must be one of {', '.join(DTYPES)}, got '{name}'")
    return DTYPES[name]


def parse_device(name: str) -> torch.device:
    """cpu or cuda[:N] (a GPU torch can see); everything else is refused in one line."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"--device '{name}' is not supported (use auto, cpu or cuda[:N])")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise InputError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s)")
    return device


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when torch sees a GPU, else cpu; anything else as `parse_device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return parse_device(name)


def load_components(model: str = DEFAULT_MODEL, decoder: str | None = None, dtype: str = "fp32",
                    device: str = "cpu") -> Components:
    """Load `model` (preset, directory, single .safetensors file or HF id) and its decoder
    (default TAESD; `--decoder vae`: its full VAE, pahi_rt.decoders), frozen, on device/dtype."""
    torch_dtype, torch_device = parse_dtype(dtype), parse_device(device)
    preset = PRESETS.get(model)
    if preset is not None and preset.hub_id is None:
        parts = _build_preset(preset)
    else:
        parts = _load_pretrained(preset.hub_id if preset else model, is_preset=preset is not None)
    decoder_id = decoder or (preset.decoder_id if preset else None) or model
    if decoder is None and preset is not None and preset.hub_id is None:
        dec = taesd.build(preset.decoder, seed=preset.seed + 2)
        decoder_id = random_decoder_label(model)
    elif decoder is None and preset is None:
        raise InputError(f"--model {model} needs --decoder (an AutoencoderTiny directory or HF id, "
                         f"e.g. madebyollin/taesd, or {OWN_VAE}: the model's own full VAE)")
    elif decoder is None:
        dec = taesd.load(decoder_id)
    else:
        dec = _full_or_tiny_decoder(decoder, preset, model, parts)
    comps = Components(model_id=model, decoder_id=decoder_id, decoder=dec, **parts)
    for m in (comps.text_encoder, comps.unet, comps.decoder):
        m.requires_grad_(False).eval().to(device=torch_device, dtype=torch_dtype)
    return comps


def _full_or_tiny_decoder(decoder: str, preset: Preset | None, model: str, parts: dict):
    """`--decoder` as given (decoders.load_decoder); a full VAE's scaling factor goes into the
    spec (parts["spec"].latent_scale), so every graph and backend decodes with it."""
    from pathlib import Path

    from . import decoders

    model_dir = None
    if decoder == OWN_VAE and (preset is None or preset.hub_id is not None):
        model_dir = Path(resolve_model_dir(preset.hub_id if preset else model, preset is not None))
    dec = decoders.load_decoder(decoder, preset, model_dir)
    decoders.check_fits(dec, parts["spec"], decoder)
    scale = decoders.latent_scale(dec)
    if scale != parts["spec"].latent_scale:
        parts["spec"] = replace(parts["spec"], latent_scale=scale)
    return dec


def load_text_components(model: str = DEFAULT_MODEL, dtype: str = "fp32", device: str = "cpu"
                         ) -> Components:
    """Spec, tokenizer and text encoder of `model` only (unet and decoder None): all that
    training a head from feedback needs. The UNet's weights are never read (its config is)."""
    torch_dtype, torch_device = parse_dtype(dtype), parse_device(device)
    preset = PRESETS.get(model)
    if preset is not None and preset.hub_id is None:
        parts = _build_preset(preset, text_only=True)
    else:
        parts = _load_pretrained(preset.hub_id if preset else model, is_preset=preset is not None,
                                 text_only=True)
    comps = Components(model_id=model, decoder_id="", decoder=None, **parts)
    comps.text_encoder.requires_grad_(False).eval().to(device=torch_device, dtype=torch_dtype)
    return comps


def _build_preset(preset: Preset, text_only: bool = False) -> dict:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import clip_tokenizer

    with torch.device("meta"):
        unet = None if text_only else UNet2DConditionModel(**preset.unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
    unet = None if text_only else fast_random_init(unet, preset.seed)
    text_encoder = fast_random_init(text_encoder, preset.seed + 1)  # own generator: same weights
    return dict(spec=preset.spec(), tokenizer=clip_tokenizer(), text_encoder=text_encoder,
                unet=unet)


def _load_pretrained(source: str, is_preset: bool, text_only: bool = False) -> dict:
    """Tokenizer, text encoder, UNet (None with text_only) and scheduler spec from a
    diffusers-layout dir or HF id."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source_dir = str(resolve_model_dir(source, is_preset))
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source_dir, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(source_dir, subfolder="text_encoder",
                                                     use_safetensors=True)
        unet = None if text_only else UNet2DConditionModel.from_pretrained(
            source_dir, subfolder="unet", use_safetensors=True)
        unet_config = (UNet2DConditionModel.load_config(source_dir, subfolder="unet")
                       if text_only else unet.config)
        scheduler = scheduler_spec(_read_scheduler_config(source_dir))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load model '{source}': "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    text_dim = text_encoder.config.hidden_size
    if unet_config["cross_attention_dim"] != text_dim:
        raise ModelLoadError(f"model '{source}': UNet cross-attention dim "
                             f"{unet_config['cross_attention_dim']} != text encoder width "
                             f"{text_dim}")
    spec = ModelSpec(name=source, text_dim=text_dim, max_tokens=tokenizer.model_max_length,
                     latent_channels=unet_config["in_channels"], scheduler=scheduler,
                     default_sample_size=unet_sample_size(unet_config))
    return dict(spec=spec, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet)


def _read_scheduler_config(source: str) -> dict:
    from diffusers import EulerDiscreteScheduler

    return dict(EulerDiscreteScheduler.load_config(source, subfolder="scheduler"))


def scheduler_spec(config: dict) -> SchedulerSpec:
    """SchedulerSpec from a diffusers scheduler config; refuses what our math does not cover."""
    spec = SchedulerSpec()
    fields = {k: config[k] for k in ("num_train_timesteps", "beta_start", "beta_end",
                                     "beta_schedule", "prediction_type", "timestep_spacing",
                                     "steps_offset") if k in config}
    spec = replace(spec, **fields)
    if not isinstance(spec.num_train_timesteps, int) or spec.num_train_timesteps < 1:
        raise ModelLoadError(f"scheduler config: num_train_timesteps must be a positive integer, "
                             f"got {spec.num_train_timesteps!r}")
    unsupported = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                               "rescale_betas_zero_snr") if config.get(k)]
    if (spec.prediction_type not in ("epsilon", "v_prediction")
            or spec.beta_schedule not in ("scaled_linear", "linear")
            or spec.timestep_spacing not in ("trailing", "linspace", "leading")
            or config.get("interpolation_type", "linear") != "linear"
            or config.get("final_sigmas_type", "zero") != "zero" or unsupported):
        raise ModelLoadError(f"scheduler {json.dumps(fields)} {unsupported}: pahi-rt samples with "
                             "the Euler scheduler (epsilon or v prediction, (scaled_)linear betas, "
                             "plain sigmas)")
    return spec
