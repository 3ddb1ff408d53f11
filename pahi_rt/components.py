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
from .conditioning import check_add_time_ids
from .specs import (DEFAULT_MODEL, OWN_VAE, PRESETS, SAMPLERS, SD2, SDXL,  # noqa: F401
                    ModelSpec, Preset, SchedulerSpec, random_decoder_label)

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
    tokenizer_2: object = None  # SDXL: OpenCLIP-bigG's tokenizer (pads with "!")
    text_encoder_2: torch.nn.Module | None = None  # SDXL: CLIPTextModelWithProjection

    @property
    def modules(self) -> tuple[torch.nn.Module, ...]:
        """Every loaded torch module (text encoders, UNet, decoder), for moves and counts."""
        return tuple(m for m in (self.text_encoder, self.text_encoder_2, self.unet, self.decoder)
                     if m is not None)

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
    for m in comps.modules:
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
    for m in comps.modules:
        m.requires_grad_(False).eval().to(device=torch_device, dtype=torch_dtype)
    return comps


def _build_preset(preset: Preset, text_only: bool = False) -> dict:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizer import clip_tokenizer

    xl = preset.text_encoder_2 is not None
    with torch.device("meta"):
        unet = None if text_only else UNet2DConditionModel(**preset.unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
        text_encoder_2 = (CLIPTextModelWithProjection(CLIPTextConfig(**preset.text_encoder_2))
                          if xl else None)
    unet = None if text_only else fast_random_init(unet, preset.seed)
    text_encoder = fast_random_init(text_encoder, preset.seed + 1)  # own generator: same weights
    parts = dict(spec=preset.spec(), tokenizer=clip_tokenizer(), text_encoder=text_encoder,
                 unet=unet)
    if xl:  # SDXL's first tokenizer pads with its EOS token, the second with "!" (SD 2.x's)
        parts.update(tokenizer=clip_tokenizer("<|endoftext|>"), tokenizer_2=clip_tokenizer(),
                     text_encoder_2=fast_random_init(text_encoder_2, preset.seed + 3))
    return parts


def _load_pretrained(source: str, is_preset: bool, text_only: bool = False) -> dict:
    """Tokenizer(s), text encoder(s), UNet (None with text_only) and the spec from a
    diffusers-layout dir or HF id; the architecture is read from its configs."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTokenizer

    source_dir = str(resolve_model_dir(source, is_preset))
    try:
        unet_config = dict(UNet2DConditionModel.load_config(source_dir, subfolder="unet"))
        arch = detect_architecture(source_dir, unet_config, source)
        parts = dict(tokenizer=CLIPTokenizer.from_pretrained(source_dir, subfolder="tokenizer"),
                     text_encoder=_text_encoder(source_dir, "text_encoder"))
        if arch == SDXL:
            parts.update(tokenizer_2=CLIPTokenizer.from_pretrained(source_dir,
                                                                   subfolder="tokenizer_2"),
                         text_encoder_2=_text_encoder(source_dir, "text_encoder_2"))
        parts["unet"] = None if text_only else UNet2DConditionModel.from_pretrained(
            source_dir, subfolder="unet", use_safetensors=True)
        scheduler = scheduler_spec(_read_scheduler_config(source_dir))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load model '{source}': "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    text_dim = sum(parts[k].config.hidden_size for k in ("text_encoder", "text_encoder_2")
                   if k in parts)
    if unet_config["cross_attention_dim"] != text_dim:
        raise ModelLoadError(f"model '{source}': UNet cross-attention dim "
                             f"{unet_config['cross_attention_dim']} != text encoder width "
                             f"{text_dim}")
    pooled_dim = 0
    if arch == SDXL:
        pooled_dim = parts["text_encoder_2"].config.projection_dim
        check_add_time_ids(unet_config, pooled_dim, source)
    parts["spec"] = ModelSpec(name=source, text_dim=text_dim,
                              max_tokens=parts["tokenizer"].model_max_length,
                              latent_channels=unet_config["in_channels"], scheduler=scheduler,
                              architecture=arch, pooled_dim=pooled_dim,
                              default_sample_size=unet_sample_size(unet_config))
    return parts


def _text_encoder(source_dir: str, subfolder: str) -> torch.nn.Module:
    """The text encoder class its config names (CLIPTextModel, or CLIPTextModelWithProjection:
    SDXL's second, whose pooled projection is `text_embeds`)."""
    import transformers

    config = transformers.CLIPTextConfig.from_pretrained(source_dir, subfolder=subfolder)
    name = (config.architectures or ["CLIPTextModel"])[0]
    wanted = ("CLIPTextModelWithProjection",) if subfolder == "text_encoder_2" else (
        "CLIPTextModel", "CLIPTextModelWithProjection")
    if name not in wanted:
        raise ModelLoadError(f"{subfolder} is a {name}; pahi-rt reads {' or '.join(wanted)}")
    return getattr(transformers, name).from_pretrained(source_dir, subfolder=subfolder,
                                                       use_safetensors=True)


PIPELINES = {"StableDiffusionPipeline": SD2, "StableDiffusionXLPipeline": SDXL}


def detect_architecture(source_dir: str, unet_config: dict, source: str = "") -> str:
    """sd2 or sdxl, from model_index.json's `_class_name` (when there is one) and the UNet
    config's `addition_embed_type` (text_time: SDXL); ModelLoadError for anything else."""
    from pathlib import Path

    from .io import read_json_object

    index = Path(source_dir) / "model_index.json"
    cls = read_json_object(index, f"model '{source}'", ModelLoadError).get("_class_name") \
        if index.is_file() else None
    embed = unet_config.get("addition_embed_type")
    arch = {None: SD2, "text_time": SDXL}.get(embed)
    if (cls is not None and cls not in PIPELINES) or arch is None:
        raise ModelLoadError(f"model '{source}': {cls or 'UNet addition_embed_type ' + str(embed)}"
                             f" is not supported (pahi-rt runs {', '.join(PIPELINES)})")
    if cls is not None and PIPELINES[cls] != arch:
        raise ModelLoadError(f"model '{source}': model_index says {cls} but the UNet's "
                             f"addition_embed_type is {embed}")
    return arch


def _read_scheduler_config(source: str) -> dict:
    from diffusers import EulerDiscreteScheduler

    return dict(EulerDiscreteScheduler.load_config(source, subfolder="scheduler"))


def scheduler_spec(config: dict) -> SchedulerSpec:
    """SchedulerSpec from a diffusers scheduler config (its `_class_name` picks Euler or
    Euler-ancestral; absent: Euler); refuses what our math does not cover, in one line."""
    class_name = config.get("_class_name", "EulerDiscreteScheduler")
    if class_name not in SAMPLERS:
        raise ModelLoadError(f"scheduler {class_name} is not supported (pahi-rt samples with "
                             f"{' or '.join(SAMPLERS)})")
    spec = SchedulerSpec(class_name=class_name)
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
