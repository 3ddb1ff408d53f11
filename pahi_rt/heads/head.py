"""HI and PAHI noise models: x_T = mu + sigma * eps (unit scale, before the scheduler's init sigma).

Relation to the paper (Kim et al., Eq. 6 and 8 write x_T = eps * sigma^2 + mu): the paper's
sigma^2 is our `sigma`, the standard deviation of the Gaussian. We parameterise it as
sigma = exp(log_sigma), which keeps it positive without clamping, makes sigma = 1 exactly
representable at init (log_sigma = 0), and gives the closed-form KL of Eq. 10 in terms of the
same number the sampler multiplies eps with.

Both models take the same (eps, text_embeddings) as the Gaussian source, so the same seed gives a
paired comparison, and both expose `distribution(text_embeddings) -> (mu, sigma)`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..conditioning import text_feature
from .config import HeadConfig


class GlobalPrior(nn.Module):
    """HI: one learned mu and log-sigma over the whole latent, shared by every prompt."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.mu = nn.Parameter(torch.zeros(config.latent_shape))
        self.log_sigma = nn.Parameter(torch.zeros(config.latent_shape))

    def distribution(self, text_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = text_embeddings.shape[0]
        return self.mu.expand(b, -1, -1, -1), self.log_sigma.exp().expand(b, -1, -1, -1)

    def forward(self, eps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        mu, sigma = self.distribution(text_embeddings)
        return mu + sigma * eps


class NoiseHead(nn.Module):
    """PAHI: frozen text embeddings E(c) [B, 77, D] (SDXL: the concatenated hidden states of
    both text encoders, `conditioning.text_feature`) -> attention pool -> two MLPs -> mu, sigma.

    Text feature: a single learned query attends over the 77 token embeddings. Its query starts
    at zero, so at init the pool is exactly the mean over tokens; training can then focus on the
    informative tokens instead of the padding that dominates a mean. Unlike EOS pooling it needs
    no token ids, so the head reads only what the UNet reads, and it exports to one small graph.
    The pooled feature is then standardised with per-dimension statistics of the training
    prompts (`fit_feature_stats`, stored as buffers in the checkpoint): embeddings of different
    prompts share a large common component, and standardising puts their differences at unit
    scale, so the MLPs can become prompt-dependent in few steps.
    The last layer of each MLP starts at zero: mu = 0 and sigma = 1 before any training.
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        d, h, n = config.text_dim, config.hidden, 1
        for s in config.latent_shape:
            n *= s
        self.query = nn.Parameter(torch.zeros(d))
        self.norm = nn.LayerNorm(d)
        self.register_buffer("feature_mean", torch.zeros(d))
        self.register_buffer("feature_scale", torch.ones(d))
        self.mu_mlp = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, n))
        self.sigma_mlp = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, n))
        for mlp in (self.mu_mlp, self.sigma_mlp):
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    def pooled(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Attention-pooled token embeddings [B, D] (before standardisation)."""
        x = self.norm(text_feature(text_embeddings).to(self.query.dtype))
        # the scale goes into the query, not after the MatMul: OpenVINO 2026.4's CPU plugin
        # fails to compile MatMul(x, 1-D constant) followed by a division (MatMulMultiplyFusion)
        weights = torch.softmax(x @ (self.query / x.shape[-1] ** 0.5), dim=1)  # [B, 77]
        return (weights.unsqueeze(-1) * x).sum(dim=1)

    def features(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Standardised pooled text feature [B, D]."""
        return (self.pooled(text_embeddings) - self.feature_mean) / self.feature_scale

    @torch.no_grad()
    def fit_feature_stats(self, text_embeddings: torch.Tensor) -> None:
        """Set the standardisation from embeddings [N, 77, D] of (a sample of) the training
        prompts, each prompt once (repeats would shrink the std; callers pass unique prompts,
        and identical rows are dropped here too). Degenerate cases: with fewer than two distinct
        features (one prompt) there is no spread to measure, so the scale is 1 (the feature is
        only centred); a dimension whose spread is below 1e-3 of the largest is scaled by that
        floor, never by ~0."""
        f = torch.unique(self.pooled(text_embeddings).float(), dim=0)
        self.feature_mean.copy_(f.mean(0))
        std = f.std(0) if f.shape[0] > 1 else torch.zeros_like(f[0])
        top = std.max().item()
        if not top > 1e-6 or not math.isfinite(top):  # one distinct prompt: nothing to scale by
            self.feature_scale.fill_(1.0)
        else:
            self.feature_scale.copy_(std.clamp_min(1e-3 * top))

    def distribution(self, text_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(text_embeddings)
        shape = (f.shape[0], *self.config.latent_shape)
        return self.mu_mlp(f).view(shape), self.sigma_mlp(f).view(shape).exp()

    def forward(self, eps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        mu, sigma = self.distribution(text_embeddings)
        return mu + sigma * eps


def build_head(config: HeadConfig) -> nn.Module:
    return {"hi": GlobalPrior, "pahi": NoiseHead}[config.kind](config)


@torch.no_grad()
def random_head(kind: str, spec, height: int, width: int, seed: int = 0):
    """A head of the right shape with small random weights (not the zero-init identity)."""
    h = build_head(HeadConfig(kind, spec.latent_shape(height, width), spec.text_dim,
                              base_model=spec.name, architecture=spec.architecture))
    gen = torch.Generator().manual_seed(seed)
    for p in h.parameters():
        p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return h.eval().requires_grad_(False)
