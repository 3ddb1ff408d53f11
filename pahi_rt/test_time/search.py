"""Test-time compute on top of a noise source: best-of-N and ReNO-style noise refinement.

Best-of-N. Candidate k (0 <= k < N) of an image with seed s is rendered from seed

    candidate_seed(s, 0) = s                                   (best-of-1 is the plain image)
    candidate_seed(s, k) = first 8 bytes, little-endian, of sha256(b"pahi-rt/best-of/{s}/{k}")

so candidates never collide with the seeds of neighbouring images (s + 1, ...), and candidate k
of seed s is the same image in every run. Each candidate goes through the chosen noise source and
backend like a plain image; the scorer set's weighted total of its uint8 pixels picks the winner
(ties: the lowest k). Best-of-N therefore never scores below best-of-1 for the same seed.

Refinement (ReNO, Eyring et al., NeurIPS 2024), K gradient steps per image. What is optimised is
eps, the standard-normal draw the noise source reads: gaussian x_T = eps (exactly ReNO),
hi/pahi x_T = mu(c) + sigma(c) * eps with the head frozen. So the search starts from the head's
noise, and ReNO's regulariser - the negative log-likelihood of ||eps|| under N(0, I), a chi
distribution with d = C*h*w degrees of freedom: ||eps||^2 / 2 - (d - 1) log ||eps|| - keeps
x_T likely under the head's own prior N(mu, sigma^2) rather than pulling it back to N(0, I).
Loss per image: -score + reg * that NLL; SGD with Nesterov momentum 0.9, the gradient of each
image clipped to norm 0.1 (ReNO's defaults: lr 5, reg 0.01). Best iterate: the K steps give
K + 1 iterates (0 is the start); each image keeps the one its scorers rated highest, so the
result never scores below the start. Scores are of the pixels that get written: the image is
rounded to uint8 in the forward pass with a straight-through gradient. On CUDA the forward runs
under bf16 autocast with UNet gradient checkpointing, as training does.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .. import sampling
from ..pixels import uint8_to_unit, unit_to_uint8
from ..render import images_from_noise, text_embeddings
from .options import (MAX_BEST_OF, MAX_REFINE, RefineConfig, TestTime,  # noqa: F401
                      candidate_seed, check_test_time)

Render = Callable[[Sequence[str], Sequence[int]], np.ndarray]  # (prompts, seeds) -> uint8 NHWC


pixels_to_images = uint8_to_unit  # uint8 NHWC -> float [0, 1] NCHW, what scorers read


@dataclass
class BestOf:
    """The winners of a batch: pixels [B, H, W, 3], candidate index and seed, all scores."""

    pixels: np.ndarray
    candidate: list[int]
    seeds: list[int]
    scores: list[list[float]]  # per image, the N candidates' weighted totals


@torch.no_grad()
def best_of(render: Render, scorers, prompts: Sequence[str], seeds: Sequence[int], n: int
            ) -> BestOf:
    """Render N candidates per prompt (one `render` call, prompt-major), score, keep the best."""
    cand = [[candidate_seed(s, k) for k in range(n)] for s in seeds]
    flat_prompts = [p for p in prompts for _ in range(n)]
    pixels = np.asarray(render(flat_prompts, [c for row in cand for c in row]))
    scores = torch.cat([scorers.total(pixels_to_images(pixels[i:i + n]), flat_prompts[i:i + n])
                        for i in range(0, len(flat_prompts), n)]).view(len(prompts), n).cpu()
    win = [int(torch.argmax(row)) for row in scores]  # argmax: the first of equal maxima
    return BestOf(np.stack([pixels[i * n + k] for i, k in enumerate(win)]), win,
                  [cand[i][k] for i, k in enumerate(win)], scores.tolist())


def norm_nll(eps: torch.Tensor) -> torch.Tensor:
    """ReNO's regulariser [B]: -log p(||eps||) under N(0, I) up to a constant (chi, d dof)."""
    flat = eps.float().flatten(1)
    norm = flat.norm(dim=1)
    return 0.5 * norm**2 - (flat.shape[1] - 1) * torch.log(norm)


def quantised(images: torch.Tensor) -> torch.Tensor:
    """Round to the uint8 grid in the forward pass, identity gradient (straight-through)."""
    return images + ((images * 255).round() / 255 - images).detach()


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (what training's accelerate mixed_precision="bf16" does), else off."""
    if torch.device(device).type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


@dataclass
class Refined:
    """Result of `refine` for a batch."""

    eps: torch.Tensor  # the best iterate's eps [B, C, h, w]
    pixels: torch.Tensor  # its uint8 images [B, H, W, 3] (CPU)
    scores: list[list[float]] = field(default_factory=list)  # per iterate 0..K, per image
    best_iter: list[int] = field(default_factory=list)  # per image
    seconds: list[float] = field(default_factory=list)  # per gradient step (fwd+bwd+update)

    @property
    def start_scores(self) -> list[float]:
        return self.scores[0]

    @property
    def best_scores(self) -> list[float]:
        return [self.scores[t][i] for i, t in enumerate(self.best_iter)]

    def best_so_far(self) -> list[float]:
        """Mean over images of the best score up to each iterate (the refinement curve)."""
        s = torch.tensor(self.scores)
        return torch.cummax(s, dim=0).values.mean(dim=1).tolist()


def refine(components, source, scorers, prompts: Sequence[str], eps: torch.Tensor,
           config: RefineConfig, schedule: sampling.Schedule, emb: torch.Tensor | None = None,
           on_step: Callable[[int, float], None] = lambda i, s: None,
           seeds: Sequence[int] | None = None) -> Refined:
    """ReNO refinement of `eps` [B, C, h, w] for `prompts` (see the module docstring).
    `source(eps, emb)` is the frozen noise source (gaussian, or a HI/PAHI head). `seeds`:
    Euler-ancestral at 2+ steps keeps each seed's later noise fixed while x_T is refined."""
    device = components.device
    emb = text_embeddings(components, prompts) if emb is None else emb
    autocast = autocast_for(device)
    if device.type == "cuda" and hasattr(components.unet, "enable_gradient_checkpointing"):
        components.unet.enable_gradient_checkpointing()
    x = eps.detach().to(device, torch.float32).clone().requires_grad_(True)
    z = (sampling.draw_step_noise(seeds, x.shape[1:], len(schedule.timesteps))
         if schedule.ancestral and seeds is not None else None)
    opt = torch.optim.SGD([x], lr=config.lr, momentum=config.momentum, nesterov=True)
    best_eps, best_px = x.detach().clone(), None
    best = torch.full((x.shape[0],), -float("inf"))
    result = Refined(best_eps, None)
    for step in range(config.steps + 1):
        t0 = time.perf_counter()
        last = step == config.steps  # the last iterate is scored, not stepped from
        with torch.set_grad_enabled(not last):  # callers may hold no_grad (eval does)
            with autocast():
                images = quantised(images_from_noise(
                    components, source(x.to(components.dtype), emb), emb, schedule, z))
                score = scorers.total(images, prompts).float()
            loss = (-score + config.reg * norm_nll(x)).sum()
        cpu = score.detach().cpu()
        better = cpu > best
        best = torch.where(better, cpu, best)
        best_eps[better] = x.detach()[better.to(device)]
        px = unit_to_uint8(images.detach()).cpu()
        best_px = px if best_px is None else torch.where(better.view(-1, 1, 1, 1), px, best_px)
        result.scores.append(cpu.tolist())
        if not last:
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss.backward()
            with torch.no_grad():  # per image, so each image's step ignores its batch mates
                g = x.grad.flatten(1)
                g.mul_((config.grad_clip / g.norm(dim=1).clamp_min(1e-12)).clamp(max=1)[:, None])
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            result.seconds.append(time.perf_counter() - t0)
            on_step(step, result.seconds[-1])
    s = torch.tensor(result.scores)
    result.best_iter = [int(torch.nonzero(s[:, i] == best[i])[0]) for i in range(s.shape[1])]
    result.pixels = best_px
    return result


def torch_render(components, source, schedule: sampling.Schedule, shape: Sequence[int],
                 batch: int = 8) -> Render:
    """A `Render` on the torch reference path: (prompts, seeds) -> uint8 NHWC, `batch` at a time
    (the pipeline's torch backend computes the same images). `shape`: the latent (C, h, w)."""
    @torch.no_grad()
    def render(prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        out = []
        for i in range(0, len(prompts), batch):
            emb = text_embeddings(components, prompts[i:i + batch])
            eps = sampling.draw_eps(seeds[i:i + batch], shape).to(components.device)
            steps = len(schedule.timesteps)
            noise = (sampling.draw_step_noise(seeds[i:i + batch], shape, steps)
                     if schedule.ancestral else None)
            images = images_from_noise(components, source(eps.to(components.dtype), emb), emb,
                                       schedule, noise)
            out.append(unit_to_uint8(images).cpu().numpy())
        return np.concatenate(out)
    return render


def apply(test_time: TestTime, components, source, scorers, prompts: Sequence[str],
          seeds: Sequence[int], schedule: sampling.Schedule, height: int, width: int
          ) -> tuple[torch.Tensor, Refined | None]:
    """Images [B, 3, H, W] in [0, 1] for prompts/seeds with `test_time` spent on each, on the
    torch path (what `eval` scores), and the refinement record when refining."""
    shape = components.spec.latent_shape(height, width)
    done = None
    if test_time.refine is not None:
        eps = sampling.draw_eps(seeds, shape)
        done = refine(components, source, scorers, prompts, eps, test_time.refine, schedule,
                      seeds=seeds)
        pixels = done.pixels
    elif test_time.best_of > 1:
        render = torch_render(components, source, schedule, shape, len(prompts))
        pixels = best_of(render, scorers, prompts, seeds, test_time.best_of).pixels
    else:
        pixels = torch_render(components, source, schedule, shape, len(prompts))(prompts, seeds)
    return pixels_to_images(pixels).to(components.device), done
