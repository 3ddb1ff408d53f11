"""Preference objectives on the head's own density: DPO (pairs) and KTO (good/bad labels).

A head is a density, p(x_T | c) = N(mu(c), diag sigma(c)^2), so a recorded image's initial noise
x (recomputed from its seed) has an implicit reward: its scaled log-density ratio against the
reference head (N(0, I), or the head training started from):

    r(x, c) = [log p(x | c) - log p_ref(x | c)] / sqrt(n),      n = C * h * w latent elements

  DPO, pair w > l of one prompt:  L = -log sigmoid(beta * (r(x_w) - r(x_l)))
  KTO, one label (Kahneman-Tversky value with reference point z, no gradient through z):
      z = max(0, mean over the batch's prompts of KL(p(.|c) || p_ref(.|c)) / sqrt(n))
      good:  L = lambda_D * (1 - sigmoid(beta * (r - z)))
      bad:   L = lambda_U * (1 - sigmoid(beta * (z - r)))

z is the KTO paper's reference point. The paper estimates the KL from mismatched (prompt,
output) pairs in the batch; for a Gaussian head it has a closed form, used here exactly.
Why / sqrt(n): a log density over a latent is a sum over n elements (256 at 64x64, 16384 at
512x512). When the head moves every element's mean by a (a colour or brightness shift), the
ratio difference between two images grows like a * sqrt(n): dividing by sqrt(n) makes beta mean
the same thing at every image size (see README "Learn from feedback").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def density_scale(latent_shape) -> float:
    """1 / sqrt(C * h * w): the factor on every log-density ratio (module docstring)."""
    return 1.0 / math.sqrt(math.prod(latent_shape))


def log_density(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag sigma^2) per sample [B], without the -n/2 log(2 pi) that every ratio
    cancels. x, mu, sigma: [B, C, h, w]."""
    z = (x.float() - mu.float()) / sigma.float()
    return (-0.5 * z * z - sigma.float().log()).flatten(1).sum(1)


def kl_divergence(mu, sigma, mu_ref, sigma_ref) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(mu_ref, sigma_ref^2)) per sample [B], summed over elements."""
    mu, sigma, mu_ref, sigma_ref = (t.float() for t in (mu, sigma, mu_ref, sigma_ref))
    kl = (sigma_ref / sigma).log() + (sigma**2 + (mu - mu_ref) ** 2) / (2 * sigma_ref**2) - 0.5
    return kl.flatten(1).sum(1)


def implicit_reward(x, dist, ref_dist, scale: float) -> torch.Tensor:
    """r = scale * (log p(x) - log p_ref(x)) [B]; dist and ref_dist are (mu, sigma) pairs."""
    return scale * (log_density(x, *dist) - log_density(x, *ref_dist))


def dpo_loss(r_win: torch.Tensor, r_lose: torch.Tensor, beta: float) -> torch.Tensor:
    """-log sigmoid(beta * (r_win - r_lose)) per pair [B] (log 2 where the ratios agree)."""
    return -F.logsigmoid(beta * (r_win - r_lose))


def kto_loss(r: torch.Tensor, good: torch.Tensor, z: torch.Tensor, beta: float,
             weights: tuple[float, float]) -> torch.Tensor:
    """KTO loss per record [B]: good (bool [B]) rewards r above z, bad ones below it.
    weights = (lambda_D, lambda_U); z is detached and clamped at 0 here."""
    z = z.detach().clamp_min(0)
    value = torch.where(good, torch.sigmoid(beta * (r - z)), torch.sigmoid(beta * (z - r)))
    lam = torch.where(good, torch.tensor(weights[0]), torch.tensor(weights[1])).to(r)
    return lam * (1 - value)


def class_weights(n_good: int, n_bad: int, w_good: float | None = None,
                  w_bad: float | None = None) -> tuple[float, float]:
    """(lambda_D, lambda_U). Unset ones balance the classes: lambda_D * n_good = lambda_U *
    n_bad, both 1 when the classes are equal (the KTO paper's recommended ratio is 1 to 4/3)."""
    total = n_good + n_bad
    if w_good is None:
        w_good = total / (2 * n_good) if n_good else 1.0
    if w_bad is None:
        w_bad = total / (2 * n_bad) if n_bad else 1.0
    return float(w_good), float(w_bad)


def pair_accuracy(r_win: torch.Tensor, r_lose: torch.Tensor) -> float:
    """Share of pairs whose winner has the higher implicit reward (ties count half)."""
    return ((r_win > r_lose).float() + 0.5 * (r_win == r_lose).float()).mean().item()


def ranking_accuracy(r: torch.Tensor, good: torch.Tensor, groups: list) -> float:
    """Share of (good, bad) record pairs ranked right by r (ties half). Pairs are formed within
    each group (prompt) when any group has both kinds, else across all records; nan if there is
    no good/bad pair at all."""
    index: dict = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    parts = [torch.tensor(ix) for ix in index.values()
             if good[ix].any() and not good[ix].all()]
    if not parts:
        parts = [torch.arange(len(groups))]
    hits, count = 0.0, 0
    for ix in parts:
        rg, gg = r[ix], good[ix]
        diff = rg[gg][:, None] - rg[~gg][None, :]
        hits += ((diff > 0).float() + 0.5 * (diff == 0).float()).sum().item()
        count += diff.numel()
    return hits / count if count else float("nan")
