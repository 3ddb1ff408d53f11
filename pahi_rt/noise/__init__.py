"""Noise sources for the sampler's seam: noise = mu + sigma * eps.

`gaussian` is the identity (mu = 0, sigma = 1). HI (`GlobalPrior`) and PAHI (`NoiseHead`) heads
are loaded from a head checkpoint directory (see `noise.checkpoint`).
"""
from __future__ import annotations

from ..errors import InputError
from ..sampling import NoiseSource, gaussian

NOISE_KINDS = ("gaussian", "hi", "pahi")


def noise_source(kind: str, head: str | None, components, height: int, width: int
                 ) -> tuple[NoiseSource, str | None]:
    """The noise source for `--noise KIND [--head DIR]`, checked against the loaded model.

    Returns the callable and the head's description for metadata (None for gaussian)."""
    if kind not in NOISE_KINDS:
        raise InputError(f"--noise must be one of {', '.join(NOISE_KINDS)}, got '{kind}'")
    if kind == "gaussian":
        if head:
            raise InputError("--head is only used with --noise hi or --noise pahi")
        return gaussian, None
    if not head:
        raise InputError(f"--noise {kind} needs --head DIR (a head trained by `pahi-rt train`)")
    from .checkpoint import load_head

    module = load_head(head, components.spec, height, width, expect_mode=kind)
    module.to(device=components.device, dtype=components.dtype)
    return module, str(head)
