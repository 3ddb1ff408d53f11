"""One source of truth for presets, shapes, timesteps and tensor names.

Everything downstream (components, sampler, noise heads, export, engines, runtime, bench) reads
these frozen dataclasses instead of repeating literals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from .errors import InputError
from .model_configs import (OPENCLIP_H_TEXT, SD21_UNET, SD_VAE, TAESD,  # noqa: F401 (re-exported)
                            TINY_TAESD, TINY_TEXT, TINY_UNET, TINY_VAE)


@dataclass(frozen=True)
class TensorNames:
    """Names of graph inputs/outputs, shared by export, engine build and runtime bindings."""

    input_ids: str = "input_ids"  # int32/int64 [B, 77] CLIP token ids
    text_embeddings: str = "text_embeddings"  # [B, 77, D] text encoder last hidden state
    eps: str = "eps"  # [B, 4, h, w] standard normal draw (seeded on the host)
    noise: str = "noise"  # [B, 4, h, w] unit-scale initial noise mu + sigma * eps
    mu: str = "mu"  # [B, 4, h, w] noise head mean
    sigma: str = "sigma"  # [B, 4, h, w] noise head standard deviation
    sample: str = "sample"  # [B, 4, h, w] UNet input (already scaled by 1/sqrt(sigma^2+1))
    timestep: str = "timestep"  # [B] float32 UNet timestep
    noise_pred: str = "noise_pred"  # [B, 4, h, w] UNet epsilon prediction
    latents: str = "latents"  # [B, 4, h, w] denoised x0 in the decoder's latent scale
    image: str = "image"  # decoder: [B, 3, H, W] in [-1, 1]; fused graphs: uint8 [B, H, W, 3]


NAMES = TensorNames()


@dataclass(frozen=True)
class GraphNames:
    """Component graph names (= artifact file stems); fused graphs are named after their mode."""

    text_encoder: str = "text_encoder"
    head: str = "head"
    unet: str = "unet"
    decoder: str = "decoder"


GRAPHS = GraphNames()
ONNX, ENGINE = "onnx", "engine"  # artifact kinds in manifest.json
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # bf16: torch, openvino; int8: openvino (UNet)
NOISE_KINDS = ("gaussian", "hi", "pahi")
# One seed range everywhere (generate, serve, feedback records): what torch.Generator.manual_seed
# takes without wrapping. Image i of a run uses seed + i, so a run's last seed must fit too.
SEED_MAX = 2**64 - 1
MAX_STEPS = 1000  # Euler steps: at most one per training timestep of the schedule
MAX_IMAGE_SIDE = 16384  # pixels; a typo beyond this, not an image (latent side 2048)
BACKENDS = ("torch", "onnxruntime", "tensorrt", "openvino")
# Timed stages of one prompt->image run, in order (the bench's per-stage columns).
STAGES = ("tokenize", "text_encoder", "head", "unet_step_1", "unet_step_2", "decode", "copy_out")


def unet_stage(index: int) -> str:
    """Stage name of Euler step `index` (0-based)."""
    return f"unet_step_{index + 1}"


@dataclass(frozen=True)
class Mode:
    """A render mode: the noise source and the number of Euler steps (a fused graph's name). What a
    head is (hi | pahi) is its kind instead (`heads.HeadConfig.kind`, `train --mode`)."""

    noise: str  # gaussian | hi | pahi
    steps: int

    @property
    def name(self) -> str:
        """`pahi-1step`, `gaussian-2step`, ...: also the name of the mode's fused graph."""
        return f"{self.noise}-{self.steps}step"


# The modes exported as fused prompt->image graphs (any other noise/steps runs staged).
MODES = MappingProxyType({m.name: m for m in (Mode("pahi", 1), Mode("hi", 1),
                                              Mode("gaussian", 1), Mode("gaussian", 2))})


def component_graphs(mode: Mode) -> tuple[str, ...]:
    """The component graphs `mode` runs, in data order (its fused graph is composed from
    them): text encoder, the head unless the noise is gaussian, UNet, decoder."""
    head = (GRAPHS.head,) if mode.noise != "gaussian" else ()
    return (GRAPHS.text_encoder, *head, GRAPHS.unet, GRAPHS.decoder)


def parse_mode(noise: str, steps: int) -> Mode:
    """The mode for `--noise NOISE --steps STEPS`, validated."""
    if noise not in NOISE_KINDS:
        raise InputError(f"--noise must be one of {', '.join(NOISE_KINDS)}, got '{noise}'")
    check_steps(steps)
    return Mode(noise, steps)


def check_steps(steps: int, where: str = "--steps") -> None:
    """Euler steps in 1..MAX_STEPS (an int, not a bool); InputError naming `where` otherwise."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"{where} must be an integer from 1 to {MAX_STEPS}, got {steps!r}")


@dataclass(frozen=True)
class SchedulerSpec:
    """SD-Turbo's Euler scheduler (diffusers `EulerDiscreteScheduler`), guidance 0.

    The math (sigma_t = sqrt((1 - abar_t) / abar_t), epsilon prediction):
      x_T     = noise * init_sigma, with init_sigma = sigma_max for trailing spacing
      input   = x / sqrt(sigma_i^2 + 1)                    (model-input scaling)
      x0      = x - sigma_i * eps_theta(input, t_i, c)     (epsilon prediction)
      x       = x + (x - x0) / sigma_i * (sigma_{i+1} - sigma_i)   (Euler step; sigma_L = 0)
    With one step the result is x0 itself.
    """

    num_train_timesteps: int = 1000  # T of the training schedule
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # betas = linspace(sqrt(b0), sqrt(b1), T)^2 ("linear" too)
    prediction_type: str = "epsilon"  # or "v_prediction": x0 = x/(s^2+1) - s*v/sqrt(s^2+1)
    timestep_spacing: str = "trailing"  # 1 step -> [999]; 2 steps -> [999, 499]
    steps_offset: int = 0  # only used by "leading" spacing

    def timesteps(self, steps: int) -> tuple[float, ...]:
        """Timesteps as diffusers' EulerDiscreteScheduler.set_timesteps computes them."""
        import numpy as np

        T = self.num_train_timesteps
        if steps < 1 or steps > T:
            raise InputError(f"--steps must be between 1 and {T}, got {steps}")
        if self.timestep_spacing == "trailing":
            t = np.round(np.arange(T, 0, -T / steps)).astype(np.float32) - 1
        elif self.timestep_spacing == "linspace":
            t = np.linspace(0, T - 1, steps, dtype=np.float32)[::-1]
        elif self.timestep_spacing == "leading":
            t = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.float32)
            t += self.steps_offset
        else:
            raise InputError(f"unsupported timestep_spacing '{self.timestep_spacing}'")
        return tuple(float(x) for x in t)

    def sigmas(self, steps: int) -> tuple[float, ...]:
        """sigma at each timestep (float32, interpolated as diffusers does), plus a final 0."""
        import numpy as np
        import torch

        T = self.num_train_timesteps
        if self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, T,
                                   dtype=torch.float32) ** 2
        else:
            betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float32)
        abar = torch.cumprod(1.0 - betas, dim=0)
        all_sigmas = np.array(((1 - abar) / abar) ** 0.5)
        s = np.interp(np.array(self.timesteps(steps)), np.arange(T), all_sigmas)
        return tuple(float(x) for x in np.concatenate([s, [0.0]]).astype(np.float32))

    def init_sigma(self, steps: int) -> float:
        """Scale of the initial latent: sigma_max for trailing/linspace spacing (as diffusers)."""
        s = max(self.sigmas(steps))
        return s if self.timestep_spacing in ("trailing", "linspace") else math.sqrt(s * s + 1)


@dataclass(frozen=True)
class ModelSpec:
    """What a loaded model is: enough to size tensors and rebuild the sampling math."""

    name: str  # preset name, HF id or directory
    text_dim: int  # text encoder hidden size (cross-attention dim)
    max_tokens: int = 77  # CLIP context length
    latent_channels: int = 4
    vae_scale_factor: int = 8  # pixels per latent cell
    latent_scale: float = 1.0  # decoder input = x0 / latent_scale (AutoencoderTiny: 1.0)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    default_sample_size: int | tuple[int, int] = 64  # latent side(s): unet.config.sample_size

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels when none is given, as diffusers' `default_sample_size *
        vae_scale_factor`: 512x512 for SD-Turbo and `synthetic`, 64x64 for `tiny`."""
        s = self.default_sample_size
        h, w = (s, s) if isinstance(s, int) else s
        return h * self.vae_scale_factor, w * self.vae_scale_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the latent for an image size; validates the size."""
        check_image_size(height, width, self.vae_scale_factor)
        f = self.vae_scale_factor
        return (self.latent_channels, height // f, width // f)


@dataclass(frozen=True)
class RenderShape:
    """`batch` images of `height` x `width` pixels in `precision`: what a backend, graph or engine
    is built for. Run/pipeline/export configs hold it; serve, bench and train build theirs."""

    batch: int = 1
    height: int | None = None  # None: the model's default_size (`sized`)
    width: int | None = None
    precision: str = "fp32"  # one of PRECISIONS

    def sized(self, spec: "ModelSpec") -> "RenderShape":
        """This shape with a missing height/width taken from `spec.default_size`."""
        h, w = spec.default_size
        return replace(self, height=h if self.height is None else self.height,
                       width=w if self.width is None else self.width)

    @property
    def key(self) -> str:
        """The one cache-key form, "1x512x512-fp32" (batch x height x width - precision)."""
        return f"{self.batch}x{self.height}x{self.width}-{self.precision}"


class ShapeFields:
    """Reads batch, height, width and precision through from `self.shape` (a RenderShape)."""
    batch = property(lambda self: self.shape.batch)
    height = property(lambda self: self.shape.height)
    width = property(lambda self: self.shape.width)
    precision = property(lambda self: self.shape.precision)


def check_image_size(height: int, width: int, multiple: int = 8, where: str = "",
                     labels: tuple[str, str] = ("--height", "--width")) -> None:
    """64..MAX_IMAGE_SIDE pixels, a multiple of `multiple`; InputError (prefixed `where`)."""
    for label, v in zip(labels, (height, width)):
        if v < 64 or v > MAX_IMAGE_SIDE or v % multiple:
            raise InputError(f"{where}{label} must be a multiple of {multiple} from 64 to "
                             f"{MAX_IMAGE_SIDE}, got {v}")


@dataclass(frozen=True)
class Preset:
    """A named model: where its weights come from, or how to build it."""

    name: str
    hub_id: str | None  # HF repo with tokenizer/, text_encoder/, unet/, scheduler/
    decoder_id: str | None  # default AutoencoderTiny repo
    unet: MappingProxyType | None = None  # built from these configs when hub_id is None
    text_encoder: MappingProxyType | None = None
    decoder: MappingProxyType | None = None
    vae: MappingProxyType | None = None  # the full VAE `--decoder vae` builds (random presets)
    seed: int = 0  # random-weight presets are reproducible

    def spec(self) -> ModelSpec:
        text_dim = self.text_encoder["hidden_size"] if self.text_encoder else 1024
        sample = {"default_sample_size": self.unet["sample_size"]} if self.unet else {}
        return ModelSpec(name=self.name, text_dim=text_dim, **sample)


PRESETS = MappingProxyType({
    "sd-turbo": Preset("sd-turbo", hub_id="stabilityai/sd-turbo", decoder_id="madebyollin/taesd"),
    "synthetic": Preset("synthetic", hub_id=None, decoder_id=None, unet=SD21_UNET,
                        text_encoder=OPENCLIP_H_TEXT, decoder=TAESD, vae=SD_VAE),
    "tiny": Preset("tiny", hub_id=None, decoder_id=None, unet=TINY_UNET, text_encoder=TINY_TEXT,
                   decoder=TINY_TAESD, vae=TINY_VAE),
})
DEFAULT_MODEL = "sd-turbo"


def check_seeds(seeds) -> None:
    """Every seed an int in 0..SEED_MAX (numpy integers too); one-line InputError otherwise."""
    import numbers

    bad = [s for s in seeds if not (isinstance(s, numbers.Integral) and 0 <= s <= SEED_MAX)]
    if bad:
        raise InputError(f"seed {bad[0]} is outside 0..2**64-1 (image i of a run uses seed+i)")


# `--decoder vae`: the model's own full VAE (a checkpoint's vae/ folder, a single file's
# first_stage_model, a random preset's seeded `Preset.vae`) instead of TAESD
OWN_VAE = "vae"


def random_decoder_label(model: str) -> str:
    """What a random-weight preset's built-in TAESD is called (`decoder_id`, PNG metadata)."""
    return f"{model} (random TAESD)"
