"""PAHI pretraining (Eq. 10): start near N(0, I) while keeping the prompt's information.

  L' = KL(N(mu(c), sigma(c)) || N(0, I)) + MSE(t(c), h_omega(x_T')),   x_T' = mu + sigma * eps

t(c) is the mean-pooled text embedding E(c), standardised with the head's feature statistics
and held fixed (a target of unit scale, so the reconstruction cannot be met by shrinking it);
h_omega is a 2-layer MLP that reads the flattened sample. The KL term is averaged per latent
element (weight `kl_weight`, 10) so its balance with the reconstruction does not depend on the
image size. The KL pulls the head to the standard Gaussian; the reconstruction keeps mu(c)
prompt-dependent, so preference training starts from different noises for different prompts
instead of from one collapsed point.

HI has no text input, and a fresh GlobalPrior is exactly N(0, I): it skips this stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..conditioning import text_feature
from ..render import text_embeddings


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000  # optimiser steps; 0 skips pretraining
    batch_size: int = 72
    lr: float = 1e-3  # Adam (the training command passes its --lr)
    kl_weight: float = 10.0  # per-element KL vs reconstruction MSE; 10 keeps KL ~0.02 per element
    seed: int = 0


class TextDecoder(nn.Module):
    """h_omega: flattened x_T' [B, C*h*w] -> pooled text embedding [B, D]."""

    def __init__(self, latent_size: int, text_dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(latent_size, hidden), nn.SiLU(),
                                 nn.Linear(hidden, text_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(1))


def kl_to_standard(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per element, averaged: 0 exactly at mu = 0, sigma = 1."""
    return 0.5 * (sigma.float() ** 2 + mu.float() ** 2 - 1 - 2 * sigma.float().log()).mean()


@torch.no_grad()
def pooled_target(head, emb: torch.Tensor) -> torch.Tensor:
    """The head's own standardised mean-pooled text feature, fixed (zero query = mean pool)."""
    x = head.norm(text_feature(emb).float()).mean(dim=1)
    return (x - head.feature_mean) / head.feature_scale


def pretrain_loss(head, decoder: TextDecoder, emb: torch.Tensor, eps: torch.Tensor,
                  kl_weight: float = 10.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, kl, reconstruction mse) for one batch of text embeddings and eps."""
    mu, sigma = head.distribution(emb)
    x = mu + sigma * eps.to(mu.dtype)
    kl = kl_to_standard(mu, sigma)
    recon = nn.functional.mse_loss(decoder(x.float()), pooled_target(head, emb))
    return kl_weight * kl + recon, kl, recon


def pretrain(head, components, prompts: list[str], config: PretrainConfig,
             on_step=None) -> dict:
    """Run Eq. 10 on `head` in place (its device); returns a summary for the checkpoint."""
    if config.steps <= 0 or head.config.kind != "pahi":
        return {"steps": 0}
    device = next(head.parameters()).device
    n = 1
    for s in head.config.latent_shape:
        n *= s
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # reproducible from the seed alone
        torch.manual_seed(config.seed)
        decoder = TextDecoder(n, head.config.text_dim, head.config.hidden)
    decoder.to(device)
    params = list(head.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    head.train()
    for step in range(config.steps):
        idx = torch.randint(len(prompts), (config.batch_size,), generator=gen).tolist()
        emb = text_embeddings(components, [prompts[i] for i in idx]).float()
        eps = torch.randn((config.batch_size, *head.config.latent_shape), generator=gen)
        loss, kl, recon = pretrain_loss(head, decoder, emb.to(device), eps.to(device),
                                        config.kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, {"kl": kl.item(), "recon": recon.item()})
    head.eval()
    return {"steps": config.steps, "kl": kl.item(), "recon": recon.item(),
            "batch_size": config.batch_size, "lr": config.lr, "kl_weight": config.kl_weight}
