"""Seeded random weights for presets built without a download."""
from __future__ import annotations

import math

import torch

from .errors import ModelLoadError


@torch.no_grad()
def fast_random_init(module: torch.nn.Module, seed: int, gain: float = 1.0) -> torch.nn.Module:
    """Materialise a meta-device module with seeded weights, skipping the slow default init.

    Weights ~ N(0, gain^2/fan_in) keep activations O(1) through the deep nets (so fp16 stays
    finite; gain sqrt(2) for ReLU nets); norm scales 1, biases 0. Random-weight presets thus build
    in seconds and give images with real contrast, which parity tests need. Non-persistent
    buffers are rebuilt (CLIP's position ids).
    """
    module = module.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, gain / math.sqrt(p[0].numel()), generator=gen)
        elif "norm" in name and name.endswith("weight"):
            p.fill_(1.0)
        else:
            p.zero_()
    for name, buf in module.named_buffers():
        if name.endswith("position_ids"):
            buf.copy_(torch.arange(buf.shape[-1]).expand_as(buf))
        else:
            raise ModelLoadError(f"fast_random_init: unknown buffer {name}; extend the initialiser")
    return module
