"""The one copy of each pixel conversion: decoder output, scorer input and uint8 images agree."""
from __future__ import annotations

import numpy as np
import torch

from pahi_rt import pixels


def test_conversions_round_trip_and_agree():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 8, 12, generator=gen) * 2.4 - 1.2  # [-1, 1] plus overshoot
    u8 = pixels.to_uint8(image)
    assert u8.dtype == torch.uint8 and u8.shape == (2, 8, 12, 3)
    unit = pixels.signed_to_unit(image)
    assert unit.min() >= 0 and unit.max() <= 1
    assert torch.equal(pixels.unit_to_uint8(unit), u8)  # the sampler's and search's paths agree
    assert u8[image.permute(0, 2, 3, 1) >= 1].min() == 255
    assert u8[image.permute(0, 2, 3, 1) <= -1].max() == 0
    back = pixels.uint8_to_unit(u8.numpy())  # numpy in, as the bench and scorers pass it
    assert back.shape == (2, 3, 8, 12) and back.dtype == torch.float32
    assert torch.equal(pixels.unit_to_uint8(back), u8)
    assert np.array_equal(pixels.uint8_to_unit(u8).numpy(), back.numpy())
