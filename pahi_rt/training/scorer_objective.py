"""The preference objective (Eq. 4) and the paired image sampling it needs.

For a prompt c and one draw eps, the Gaussian image uses noise eps and the head's image uses
mu(c) + sigma(c) * eps (reparameterisation, Eq. 6/8): the pair differs only in the noise model.

  s  = score(image(eps), c)                       (no gradient)
  s' = score(image(mu + sigma * eps), c)
  L  = softplus(s - s') = -log sigmoid(s' - s)    (Bradley-Terry: the head's image should win)

Gradients flow from the scorer through the decoder and the frozen UNet step into the head; the
diffusion model, decoder and scorers are frozen (requires_grad False) and only pass gradients on.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch

from .. import sampling
from ..render import images_from_noise


@dataclass(frozen=True)
class PairScores:
    """Weighted-sum scores [B] of the Gaussian image (s) and the head's image (s_head)."""

    s: torch.Tensor
    s_head: torch.Tensor

    def loss(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.s - self.s_head).mean()

    def wins(self) -> torch.Tensor:
        """1 where the head's image scores higher, 0.5 on ties, else 0; [B]."""
        return (self.s_head > self.s).float() + 0.5 * (self.s_head == self.s).float()


def paired_scores(head, components, scorers, prompts: Sequence[str], eps: torch.Tensor,
                  emb: torch.Tensor, schedule: sampling.Schedule, autocast=None,
                  grad: bool = True) -> PairScores:
    """Scores of the Gaussian image and of the head's image for the same prompts and eps."""
    autocast = autocast or contextlib.nullcontext
    with torch.no_grad(), autocast():
        s = scorers.total(images_from_noise(components, eps, emb, schedule), prompts)
    with torch.set_grad_enabled(grad), autocast():
        noise = head(eps, emb)
        s_head = scorers.total(images_from_noise(components, noise, emb, schedule), prompts)
    return PairScores(s.float().detach(), s_head.float())
