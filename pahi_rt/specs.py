"""One source of truth for presets, shapes, timesteps and tensor names.

Everything downstream (components, sampler, noise heads, export, engines, runtime, bench) reads
these frozen dataclasses instead of repeating literals.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType

from .errors import InputError
from .scheduler_spec import EULER_A, SAMPLERS, SchedulerSpec  # noqa: F401
from .model_configs import (CLIP_L_TEXT, OPENCLIP_BIGG_TEXT, OPENCLIP_H_TEXT,  # noqa: F401
                            SD21_UNET, SD_VAE, SDXL_UNET, SDXL_VAE, TAESD, TINY_TAESD, TINY_TEXT,
                            TINY_UNET, TINY_VAE, TINY_XL_UNET)


@dataclass(frozen=True)
class TensorNames:
    """Names of graph inputs/outputs, shared by export, engine build and runtime bindings."""

    input_ids: str = "input_ids"  # int32/int64 [B, 77] CLIP token ids
    text_embeddings: str = "text_embeddings"  # [B, 77, D] the UNet's encoder_hidden_states
    text_embeds: str = "text_embeds"  # SDXL [B, P] pooled projection of text_encoder_2
    time_ids: str = "time_ids"  # SDXL [B, 6] (original H, W, crop top, left, target H, W)
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


def fused_graph(mode: Mode, spec=None) -> str | None:
    """The name of `mode`'s fused graph on a model `spec` (None: SD 2.x), or None where the
    mode runs staged: modes outside MODES, and Euler-ancestral at 2+ steps (its step noise is
    drawn from each image's seed on the host; no fused graph takes it as an input)."""
    ancestral = spec is not None and spec.scheduler.ancestral and mode.steps > 1
    return mode.name if mode.name in MODES and not ancestral else None


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


# Architectures pahi-rt runs (`ModelSpec.architecture`) and how a checkpoint names them.
SD2, SDXL = "sd2", "sdxl"
ARCHITECTURES = MappingProxyType({SD2: "SD 2.x (StableDiffusionPipeline)",
                                  SDXL: "SDXL (StableDiffusionXLPipeline)"})
TIME_IDS = 6  # SDXL micro-conditioning: original (H, W), crop (top, left), target (H, W)


@dataclass(frozen=True)
class ConditioningTensor:
    """One tensor the UNet is conditioned on, per image (the batch dimension comes first)."""

    name: str  # tensor name in graphs (a NAMES field)
    unet_arg: str  # UNet keyword, or a key of its `added_cond_kwargs` when `added`
    shape: tuple[int, ...]  # per image
    dtype: str = "model"  # the model's float dtype (diffusers casts time_ids to it too)
    added: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What a loaded model is: enough to size tensors and rebuild the sampling math.

    SD 2.x: one text encoder, the UNet reads its last hidden state. SDXL: two (CLIP-L and
    OpenCLIP-bigG); the UNet reads their penultimate hidden states concatenated
    ([B, 77, 768 + 1280]), plus `text_embeds` (text_encoder_2's pooled projection) and
    `time_ids` through `added_cond_kwargs`. A head's text feature is the hidden state tensor
    (`text_dim` wide) in both.
    """

    name: str  # preset name, HF id or directory
    text_dim: int  # width of the UNet's encoder_hidden_states (cross-attention dim)
    max_tokens: int = 77  # CLIP context length
    latent_channels: int = 4
    vae_scale_factor: int = 8  # pixels per latent cell
    latent_scale: float = 1.0  # decoder input = x0 / latent_scale (AutoencoderTiny: 1.0)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    default_sample_size: int | tuple[int, int] = 64  # latent side(s): unet.config.sample_size

    architecture: str = SD2  # a key of ARCHITECTURES
    pooled_dim: int = 0  # SDXL: width of text_embeds (text_encoder_2 projection_dim)

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels when none is given, as diffusers' `default_sample_size *
        vae_scale_factor`: 512x512 for SD-Turbo and `synthetic`, 64x64 for `tiny`
        and `tiny-xl`, 512x512 for the SDXL presets."""
        s = self.default_sample_size
        h, w = (s, s) if isinstance(s, int) else s
        return h * self.vae_scale_factor, w * self.vae_scale_factor

    @property
    def text_encoders(self) -> int:
        """(tokenizer, text encoder) pairs: 1 for SD 2.x, 2 for SDXL."""
        return 2 if self.architecture == SDXL else 1

    @property
    def token_ids_shape(self) -> tuple[int, ...]:
        """Per-image token ids: (77,) for SD 2.x, (2, 77) for SDXL (one row per tokenizer)."""
        n = self.max_tokens
        return (n,) if self.text_encoders == 1 else (self.text_encoders, n)

    @property
    def conditioning(self) -> tuple[ConditioningTensor, ...]:
        """The UNet's conditioning tensors, in the order graphs take them."""
        hidden = ConditioningTensor(NAMES.text_embeddings, "encoder_hidden_states",
                                    (self.max_tokens, self.text_dim))
        if self.architecture != SDXL:
            return (hidden,)
        return (hidden, ConditioningTensor(NAMES.text_embeds, "text_embeds", (self.pooled_dim,),
                                           added=True),
                ConditioningTensor(NAMES.time_ids, "time_ids", (TIME_IDS,), added=True))

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
    architecture: str = SD2
    text_encoder_2: MappingProxyType | None = None  # SDXL: CLIPTextModelWithProjection config
    scheduler_class: str = "EulerDiscreteScheduler"  # random presets: what the real one ships

    def spec(self) -> ModelSpec:
        """The spec of a random-weight preset (a hub preset's comes from its configs)."""
        scheduler = SchedulerSpec(class_name=self.scheduler_class)
        sample = {"default_sample_size": self.unet["sample_size"]} if self.unet else {}
        if self.architecture != SDXL:
            text_dim = self.text_encoder["hidden_size"] if self.text_encoder else 1024
            return ModelSpec(name=self.name, text_dim=text_dim, scheduler=scheduler, **sample)
        te, te2 = self.text_encoder or CLIP_L_TEXT, self.text_encoder_2 or OPENCLIP_BIGG_TEXT
        return ModelSpec(name=self.name, text_dim=te["hidden_size"] + te2["hidden_size"],
                         scheduler=scheduler, architecture=SDXL, pooled_dim=te2["projection_dim"],
                         **sample)


PRESETS = MappingProxyType({
    "sd-turbo": Preset("sd-turbo", hub_id="stabilityai/sd-turbo", decoder_id="madebyollin/taesd"),
    "synthetic": Preset("synthetic", hub_id=None, decoder_id=None, unet=SD21_UNET,
                        text_encoder=OPENCLIP_H_TEXT, decoder=TAESD, vae=SD_VAE),
    "tiny": Preset("tiny", hub_id=None, decoder_id=None, unet=TINY_UNET, text_encoder=TINY_TEXT,
                   decoder=TINY_TAESD, vae=TINY_VAE),
    "sdxl-turbo": Preset("sdxl-turbo", hub_id="stabilityai/sdxl-turbo",
                         decoder_id="madebyollin/taesdxl", architecture=SDXL,
                         scheduler_class=EULER_A),
    "synthetic-xl": Preset("synthetic-xl", hub_id=None, decoder_id=None, unet=SDXL_UNET,
                           text_encoder=CLIP_L_TEXT, text_encoder_2=OPENCLIP_BIGG_TEXT,
                           decoder=TAESD, vae=SDXL_VAE, architecture=SDXL,
                           scheduler_class=EULER_A),
    "tiny-xl": Preset("tiny-xl", hub_id=None, decoder_id=None, unet=TINY_XL_UNET,
                      text_encoder=TINY_TEXT, text_encoder_2=TINY_TEXT, decoder=TINY_TAESD,
                      vae=TINY_VAE, architecture=SDXL, scheduler_class=EULER_A),
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
