"""Coarse updates for heads trained from feedback: the change to mu and log-sigma is held
constant over blocks of a `grid` x `grid` partition of the latent (grid 1: one value per
channel).

Why: a feedback record's x_T is n = C * h * w numbers of which a user judged only what the image
shows (colour, brightness, tone, layout at coarse scale). Learned at full resolution, every
element's update is estimated from that element alone, and the fine-scale part is pure noise the
head memorises (held-out loss rises from the first validation). Averaging the gradient over
blocks estimates the coarse update from h * w / grid^2 elements at once: the same labels give
a sqrt(h * w) / grid times less noisy estimate (bench/results/cpu-2core/feedback_variants.md).

The gradient of the parameters that produce mu and log-sigma directly (HI: mu, log_sigma; PAHI:
the last layer of each MLP) is replaced by its block mean. Adam updates elements with equal
gradients equally, so a head that starts with these parameters block-constant (a fresh head:
zero; `--init`: any head, as only the update is coarse) keeps a block-constant update.
"""
from __future__ import annotations

import torch


def block_mean(t: torch.Tensor, grid: int) -> torch.Tensor:
    """t [..., h, w] with each of grid x grid blocks replaced by its mean (same shape)."""
    *lead, h, w = t.shape
    blocks = t.reshape(*lead, grid, h // grid, grid, w // grid)
    return blocks.mean(dim=(-3, -1), keepdim=True).expand_as(blocks).reshape(t.shape)


def check_grid(grid: int, latent_shape) -> None:
    """ValueError unless grid is 0 (full resolution) or divides the latent's height and width."""
    _, h, w = latent_shape
    if grid < 0 or (grid and (h % grid or w % grid)):
        raise ValueError(f"update_grid must be 0 (full resolution) or divide the latent size "
                         f"{h}x{w}, got {grid}")


def coarsen_updates(head, grid: int) -> list:
    """Register gradient hooks on `head` (GlobalPrior or NoiseHead) so its mu and log-sigma
    change block-constantly on a grid x grid partition; grid 0 registers none. Returns the
    hook handles (remove() them to undo)."""
    if grid == 0:
        return []
    c, h, w = head.config.latent_shape
    if head.config.kind == "hi":
        return [p.register_hook(lambda g: block_mean(g, grid))
                for p in (head.mu, head.log_sigma)]

    def weight_hook(g):  # [C*h*w, hidden] -> per hidden unit a [C, h, w] map
        maps = g.reshape(c, h, w, -1).permute(3, 0, 1, 2)
        return block_mean(maps, grid).permute(1, 2, 3, 0).reshape(g.shape)

    handles = []
    for mlp in (head.mu_mlp, head.sigma_mlp):
        handles.append(mlp[-1].weight.register_hook(weight_hook))
        handles.append(mlp[-1].bias.register_hook(
            lambda g: block_mean(g.reshape(c, h, w), grid).reshape(g.shape)))
    return handles
