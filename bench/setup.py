"""What a bench run needs: the model in the bench precision, heads, and a backend factory."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from pahi_rt.components import load_components
from pahi_rt.errors import InputError
from pahi_rt.noise.checkpoint import load_head
from pahi_rt.noise.head import HeadConfig, build_head
from pahi_rt.runtime.backend import MODES, RunConfig

TORCH_DTYPE = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


def load_for_bench(model: str, decoder: str | None, head: Path | None, modes, precision: str,
                   device: str, height: int, width: int):
    """Components in the bench precision and a head per noise kind the modes need."""
    if precision not in TORCH_DTYPE:
        raise InputError(f"--precision must be fp32, fp16 or bf16, got '{precision}'")
    comps = load_components(model, decoder, TORCH_DTYPE[precision], device)
    heads: dict[str, torch.nn.Module | None] = {"gaussian": None}
    for kind in {MODES[m].noise for m in modes} - {"gaussian"}:
        if head is not None:
            h = load_head(head, comps.spec, height, width, expect_mode=kind)
        else:
            h = random_head(kind, comps.spec, height, width)
        heads[kind] = h.to(comps.device, comps.dtype)
    return comps, heads


@torch.no_grad()
def random_head(kind: str, spec, height: int, width: int, seed: int = 0):
    """A head of the right shape with small random weights (not the zero-init identity)."""
    h = build_head(HeadConfig(kind, spec.latent_shape(height, width), spec.text_dim,
                              base_model=spec.name))
    gen = torch.Generator().manual_seed(seed)
    for p in h.parameters():
        p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return h.eval().requires_grad_(False)


class BackendMaker:
    """make(name, RunConfig, head) -> Backend; exports artifacts through the cache if needed."""

    def __init__(self, comps, model: str, decoder: str | None, artifacts: Path | None,
                 log: Callable[[str], None] = print):
        self.comps, self.model, self.decoder = comps, model, decoder
        self.artifacts, self.log = artifacts, log

    def __call__(self, name: str, config: RunConfig, head):
        from pahi_rt import sampling
        from pahi_rt.runtime.torch_backend import TorchBackend

        if name == "torch":
            return TorchBackend(config, self.comps, head if head is not None else sampling.gaussian)
        raise InputError(f"backend '{name}' is not available in this build")
