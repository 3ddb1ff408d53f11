"""The torch reference sampler: SD-Turbo's one/two-step Euler recipe with guidance 0, and
SDXL-Turbo's (Euler-ancestral, `added_cond_kwargs`: see `conditioning`).

Everything else (ONNX graphs, engines, benchmarks) is checked against these functions, which
reproduce `diffusers.StableDiffusionPipeline(..., guidance_scale=0.0)` with an AutoencoderTiny VAE:

  ids    = tokenizer(prompt, padding="max_length", max_length=77, truncation=True)
  c      = text_encoder(ids).last_hidden_state                       [B, 77, D]
  eps    = randn([1, 4, H/8, W/8], Generator("cpu").manual_seed(seed + i), dtype)   per image i
  noise  = mu(c) + sigma(c) * eps        (gaussian: mu = 0, sigma = 1; the seam for HI/PAHI heads)
  x      = noise * init_sigma            (init_sigma = sigma_max = 14.6146 for trailing spacing)
  per step i (t = 999 | 999, 499; sigma_i from the schedule, sigma_L = 0):
    x_in = x / sqrt(sigma_i^2 + 1)                                  (`model_input`)
    e    = unet(x_in, t_i, c)
    x0   = x - sigma_i * e               (epsilon; v: x / (s^2+1) - s * e / sqrt(s^2+1))
    x    = x + (x - x0) / sigma_i * (sigma_{i+1} - sigma_i)      (`euler_step`, in float32)
    Euler-ancestral: step to sigma_down instead, then x += sigma_up * z_i, z_i the next draws of
    image i's generator after eps (`draw_step_noise`); the head shapes x_T only.
  image  = decoder(x / latent_scale)    AutoencoderTiny: tanh(x/3)*3 clamp inside, out in [-1, 1]
  pixels = round(clamp(image / 2 + 0.5, 0, 1) * 255)  as uint8, NHWC          (`pixels.to_uint8`)

Functions here keep autograd available (training backpropagates through `denoise` and `decode`);
`generate` is the no-grad convenience wrapper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .conditioning import (Conditioned, encode_prompts, tokenize,  # noqa: F401 (its home)
                           tokenize_prompts, unet_kwargs)
from .pixels import to_uint8  # noqa: F401 (the sampler's last step; one definition)
from .specs import RenderShape, SchedulerSpec

NoiseSource = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (eps, text emb) -> noise


@dataclass(frozen=True)
class Schedule:
    """The numbers one run of `denoise` needs, precomputed on the host."""

    timesteps: tuple[float, ...]
    sigmas: tuple[float, ...]  # len(timesteps) + 1, last is 0
    init_sigma: float
    prediction_type: str = "epsilon"
    ancestral: bool = False  # Euler-ancestral: steps add sigma_up * (seeded noise)

    @classmethod
    def from_spec(cls, spec: SchedulerSpec, steps: int) -> "Schedule":
        return cls(spec.timesteps(steps), spec.sigmas(steps), spec.init_sigma(steps),
                   spec.prediction_type, spec.ancestral)

    def step(self, index: int) -> "Schedule":
        """(Euler or Euler-ancestral) step `index` (0-based) alone: step 0 scales the unit noise
        by init_sigma, a later step continues from the previous step's latent (scale 1)."""
        return Schedule(self.timesteps[index:index + 1], self.sigmas[index:index + 2],
                        self.init_sigma if index == 0 else 1.0, self.prediction_type,
                        self.ancestral)


def encode_text(text_encoder: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Text embeddings [B, 77, D]: the text encoder's last hidden state (no clip-skip)."""
    return text_encoder(ids.to(text_encoder.device))[0]


def draw_eps(seeds: Sequence[int], shape: Sequence[int], dtype: torch.dtype = torch.float32
             ) -> torch.Tensor:
    """eps [B, *shape] on the CPU: image i from `Generator("cpu").manual_seed(seeds[i])`, drawn
    in `dtype` exactly as diffusers' `randn_tensor` draws it for a list of generators."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(s),
                                  dtype=dtype) for s in seeds])


def gaussian(eps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Standard Gaussian noise source: noise = eps."""
    return eps


def noise_source(head, device, dtype) -> NoiseSource:
    """The noise source for a head (None: `gaussian`): a copy of the head on `device` in
    `dtype`, so the fp32 CPU head that exports trace is left as it is."""
    import copy

    return gaussian if head is None else copy.deepcopy(head).to(device, dtype)


def model_input(x, sigma: float):
    """The UNet's input at noise level sigma: x / sqrt(sigma^2 + 1) (the scheduler's scaling)."""
    return x / ((sigma**2 + 1) ** 0.5)


def euler_step(x, model_output, sigma: float, sigma_next: float,
               prediction_type: str = "epsilon"):
    """One Euler step from x at sigma to sigma_next, given the UNet's output at model_input(x).

    Call with float32 tensors (torch, or anything with the same operators). With sigma_next = 0
    the result is x0, the denoised latent."""
    if prediction_type == "epsilon":
        x0 = x - sigma * model_output
    else:  # v_prediction
        x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
    return x + (x - x0) / sigma * (sigma_next - sigma)


def ancestral_sigmas(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an Euler-ancestral step, in float32 as diffusers computes them."""
    f, t = torch.tensor(sigma, dtype=torch.float32), torch.tensor(sigma_next, dtype=torch.float32)
    up = (t**2 * (f**2 - t**2) / f**2) ** 0.5
    return float((t**2 - up**2) ** 0.5), float(up)


def draw_step_noise(seeds: Sequence[int], shape: Sequence[int], steps: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ancestral noise [steps - 1, B, *shape]: for image i, the draws that follow eps on
    `Generator("cpu").manual_seed(seeds[i])`, one per step that adds noise (all but the last),
    as diffusers' EulerAncestralDiscreteScheduler.step draws them from the pipeline's generator.
    A head reshapes x_T only; these draws stay the seed's, so a head and the Gaussian source see
    the same later noise for a seed."""
    out = torch.empty((max(steps - 1, 0), len(seeds), *shape), dtype=dtype)
    for b, s in enumerate(seeds):
        gen = torch.Generator("cpu").manual_seed(s)
        torch.randn((1, *shape), generator=gen, dtype=dtype)  # eps (draw_eps)
        for i in range(steps - 1):
            out[i, b] = torch.randn((1, *shape), generator=gen, dtype=dtype)[0]
    return out


def denoise(unet: torch.nn.Module, noise: torch.Tensor, text_embeddings: Conditioned,
            schedule: Schedule, step_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Euler (or Euler-ancestral) steps from unit-scale noise to x0 latents [B, 4, h, w] (dtype
    of `noise`). `text_embeddings`: what `conditioning.encode_prompts` gives. Ancestral steps
    add `step_noise[i]` (`draw_step_noise`); without it, draws from torch's global generator
    (training, where no per-image seed exists)."""
    dtype = noise.dtype
    x = noise * schedule.init_sigma
    for i, t in enumerate(schedule.timesteps):
        sigma, sigma_next = schedule.sigmas[i], schedule.sigmas[i + 1]
        timestep = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        e = unet(model_input(x, sigma), timestep, **unet_kwargs(text_embeddings, x)).sample
        if not schedule.ancestral:
            x = euler_step(x.float(), e.float(), sigma, sigma_next, schedule.prediction_type)
            x = x.to(dtype)
            continue
        down, up = ancestral_sigmas(sigma, sigma_next)
        x_next = euler_step(x.float(), e.float(), sigma, down, schedule.prediction_type)
        if up > 0:
            z = (step_noise[i].to(e.device) if step_noise is not None
                 else torch.randn(e.shape, dtype=e.dtype, device=e.device))
            x_next = x_next + z * up
        x = x_next.to(dtype)
    return x


def decode(decoder: torch.nn.Module, latents: torch.Tensor, latent_scale: float = 1.0
           ) -> torch.Tensor:
    """Decoder output [B, 3, H, W] in [-1, 1] (AutoencoderTiny already maps [0,1] -> [-1,1])."""
    return decoder.decode(latents / latent_scale, return_dict=False)[0]


@torch.inference_mode()
def generate(components, prompts: Sequence[str], seeds: Sequence[int], *, steps: int = 1,
             height: int | None = None, width: int | None = None,
             noise_source: NoiseSource = gaussian) -> torch.Tensor:
    """Prompts -> uint8 images [B, H, W, 3]; image i uses seeds[i]. A size left out is the
    model's default (`ModelSpec.default_size`)."""
    spec = components.spec
    size = RenderShape(height=height, width=width).sized(spec)
    shape = spec.latent_shape(size.height, size.width)
    emb = encode_prompts(components, tokenize_prompts(components, prompts))
    eps = draw_eps(seeds, shape, components.dtype).to(components.device)
    noise = noise_source(eps, emb)
    schedule = Schedule.from_spec(spec.scheduler, steps)
    step_noise = (draw_step_noise(seeds, shape, steps, components.dtype)
                  if schedule.ancestral else None)
    latents = denoise(components.unet, noise, emb, schedule, step_noise)
    return to_uint8(decode(components.decoder, latents, spec.latent_scale)).cpu()
