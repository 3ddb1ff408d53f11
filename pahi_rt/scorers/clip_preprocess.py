"""What CLIP-based scorers share: differentiable torch image preprocessing and the pooled
embedding accessor."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipImagePreprocess(nn.Module):
    """CLIPImageProcessor in torch, differentiable: shortest side -> `size` (bicubic with
    antialias, as PIL resizes), center crop, normalise. Input float [0, 1] NCHW."""

    def __init__(self, size: int = 224, crop: tuple[int, int] = (224, 224),
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 center: str = "floor"):
        super().__init__()
        # "floor": transformers' center crop ((h - ch) // 2); "round": torchvision's (OpenCLIP)
        self.size, self.crop, self.center = size, crop, center
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, config: dict) -> "ClipImagePreprocess":
        """From a preprocessor_config.json dict (transformers' keys and defaults)."""
        size = config.get("size", {"shortest_edge": 224})
        size = size.get("shortest_edge", 224) if isinstance(size, dict) else int(size)
        crop = config.get("crop_size", {"height": 224, "width": 224})
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        return cls(size, crop, config.get("image_mean", CLIP_MEAN),
                   config.get("image_std", CLIP_STD))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.size * long / short)  # transformers' get_resize_output_image_size
        new_hw = (self.size, new_long) if h <= w else (new_long, self.size)
        x = nn.functional.interpolate(images.float(), size=new_hw, mode="bicubic",
                                      align_corners=False, antialias=True)
        ch, cw = self.crop
        if self.center == "round":
            top, left = int(round((new_hw[0] - ch) / 2)), int(round((new_hw[1] - cw) / 2))
        else:
            top, left = (new_hw[0] - ch) // 2, (new_hw[1] - cw) // 2
        x = x[..., top:top + ch, left:left + cw]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def pooled(out) -> torch.Tensor:
    """transformers 5 returns a model output with the projected embeds in pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
