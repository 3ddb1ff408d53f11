"""A small reward model fitted on feedback records, for training a head through the frozen
sampler as scorer training does (`train --objective kto|dpo`, the default `--feedback-method
reward`).

Why not only the head's own density (preference.py)? A record's x_T is n numbers whose relation
to what the user judged passes through the UNet and the decoder: on `tiny`, a linear function of
x_T explains under a fifth of the variance of an image's mean colour, so hundreds of labels of
x_T mostly teach noise. The decoded image carries the judged property directly. Each labelled
image is re-made from its record (x_T -> sampler -> decoder) and reduced to features:

    f(image) = the image average-pooled to POOL x POOL cells, RGB in [0, 1]   [3 * POOL^2]

standardised over the records' images. The reward is linear in f, and for PAHI heads bilinear in
f and the prompt's text feature g (token-mean of the frozen text embeddings, standardised over
the records' unique prompts), so it can change with the prompt:

    r(image, prompt) = f . w + f . (A g)          (HI: A = 0)

fitted by L2-regularised logistic regression (KTO: label ~ sigmoid(r + b); DPO: winner ~
sigmoid(r_win - r_lose)) with L-BFGS. `cross_val_accuracy` says whether the labels hold a
preference this model can find at all; training refuses to report success when they do not.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..conditioning import text_feature

POOL = 4  # image features: POOL x POOL cells of mean RGB (48 numbers)
L2 = 1e-2  # ridge on w and A per record (features and text are standardised)


def image_features(images: torch.Tensor) -> torch.Tensor:
    """images [B, 3, H, W] in [0, 1] -> [B, 3 * POOL^2] mean RGB per cell."""
    return nn.functional.adaptive_avg_pool2d(images.float(), POOL).flatten(1)


def text_features(embeddings: torch.Tensor) -> torch.Tensor:
    """Frozen text embeddings [B, 77, D] -> layer-normed token mean [B, D]."""
    embeddings = text_feature(embeddings)  # SDXL: the hidden states
    x = nn.functional.layer_norm(embeddings.float(), embeddings.shape[-1:])
    return x.mean(1)


class RewardModel(nn.Module):
    """r(images, text features) [B]; see the module docstring. Buffers hold the standardisation,
    so the model is self-contained once fitted."""

    def __init__(self, n_features: int, text_dim: int, prompt_dependent: bool):
        super().__init__()
        self.prompt_dependent = prompt_dependent
        self.register_buffer("f_mean", torch.zeros(n_features))
        self.register_buffer("f_scale", torch.ones(n_features))
        self.register_buffer("g_mean", torch.zeros(text_dim))
        self.register_buffer("g_scale", torch.ones(text_dim))
        self.w = nn.Parameter(torch.zeros(n_features))
        self.a = nn.Parameter(torch.zeros(n_features, text_dim if prompt_dependent else 0))
        self.bias = nn.Parameter(torch.zeros(()))

    def fit_stats(self, features: torch.Tensor, text: torch.Tensor) -> None:
        """Standardisation from image features [N, F] and unique prompts' text features [P, D]."""
        with torch.no_grad():
            self.f_mean.copy_(features.mean(0))
            self.f_scale.copy_(features.std(0).clamp_min(1e-6) if len(features) > 1
                               else torch.ones_like(self.f_scale))
            self.g_mean.copy_(text.mean(0))
            std = text.std(0) if len(text) > 1 else torch.ones_like(self.g_scale)
            self.g_scale.copy_(std.clamp_min(1e-3 * max(std.max().item(), 1e-6)))

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        f = (features.float() - self.f_mean) / self.f_scale
        r = f @ self.w
        if self.prompt_dependent:
            g = (text.float() - self.g_mean) / self.g_scale
            r = r + ((f @ self.a) * g).sum(-1) / math.sqrt(g.shape[-1])
        return r


def _logits(model: RewardModel, feats: torch.Tensor, text: torch.Tensor, pairs: bool):
    if pairs:  # feats [N, 2, F]: winner first
        return model(feats[:, 0], text) - model(feats[:, 1], text)
    return model(feats, text) + model.bias


def fit(model: RewardModel, feats: torch.Tensor, text: torch.Tensor, target: torch.Tensor,
        pairs: bool, l2: float = L2, iters: int = 100) -> RewardModel:
    """L2-regularised logistic regression of `target` (KTO: label in {0, 1} [N]; DPO: ones [N])
    on the model's logits, by L-BFGS; returns `model` fitted in place."""
    opt = torch.optim.LBFGS([model.w, model.a, model.bias], max_iter=iters,
                            line_search_fn="strong_wolfe")
    target = target.float()

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(
            _logits(model, feats, text, pairs), target)
        loss = loss + l2 * (model.w.square().sum() + model.a.square().sum())
        loss.backward()
        return loss
    opt.step(closure)
    return model.requires_grad_(False)


def accuracy(model: RewardModel, feats, text, target, pairs: bool) -> float:
    """Share of records the fitted model gets right (KTO: label; DPO: winner), ties half."""
    with torch.no_grad():
        z = _logits(model, feats, text, pairs)
    right = torch.where(target.bool(), z > 0, z < 0).float() + 0.5 * (z == 0).float()
    return right.mean().item()


def cross_val_accuracy(make, feats, text, target, pairs: bool, groups: list, folds: int = 5
                       ) -> float:
    """Mean held-out accuracy over `folds` folds split by group (prompt), so a fold's prompts
    are unseen; `make()` returns a fresh RewardModel with its standardisation set. nan with
    fewer than 2 groups."""
    keys = sorted(set(groups))
    if len(keys) < 2:
        return float("nan")
    fold_of = {k: i % min(folds, len(keys)) for i, k in enumerate(keys)}
    hits, count = 0.0, 0
    for f in range(min(folds, len(keys))):
        test = torch.tensor([fold_of[g] == f for g in groups])
        model = fit(make(), feats[~test], text[~test], target[~test], pairs)
        hits += accuracy(model, feats[test], text[test], target[test], pairs) * int(test.sum())
        count += int(test.sum())
    return hits / count
