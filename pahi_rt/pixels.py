"""Pixel conversions, one copy each: decoder output, scorer input and uint8 images.

    decoder output   float [-1, 1] NCHW   (AutoencoderTiny / diffusers' VAE convention)
    scorer input     float [0, 1]  NCHW   (`signed_to_unit`, `uint8_to_unit`)
    images           uint8 [0, 255] NHWC  (`to_uint8`, `unit_to_uint8`: rounded as diffusers'
                                           image processor does: round(clamp(x, 0, 1) * 255))

The sampler, the fused graphs (traced), test-time search, the bench and the scorers all call
these, so a pixel is computed the same way on every path.
"""
from __future__ import annotations

import numpy as np
import torch


def signed_to_unit(image: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> float32 [0, 1], clamped (any layout)."""
    return (image.float() / 2 + 0.5).clamp(0, 1)


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [0, 1] NCHW (already clamped) -> uint8 NHWC on the same device, rounded."""
    return (images.float().permute(0, 2, 3, 1) * 255).round().to(torch.uint8)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Decoder output float [-1, 1] NCHW -> uint8 NHWC on the same device."""
    return unit_to_uint8(signed_to_unit(image))


def uint8_to_unit(pixels) -> torch.Tensor:
    """uint8 NHWC (numpy or torch) -> float32 [0, 1] NCHW, what scorers read."""
    x = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.asarray(pixels))
    return x.permute(0, 3, 1, 2).float() / 255
