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
    """make(name, RunConfig, head) -> Backend. Artifact backends use --artifacts, or export what
    the row needs (its component graphs and fused graph) into the content-keyed export cache."""

    def __init__(self, comps, artifacts: Path | None, export_head=None,
                 log: Callable[[str], None] = print, fused: bool = True):
        self.comps, self.artifacts, self.log, self.fused = comps, artifacts, log, fused
        self.export_head = export_head  # one head for all rows, so all share one cache dir

    def __call__(self, name: str, config: RunConfig, head):
        from pahi_rt import sampling
        from pahi_rt.errors import require
        from pahi_rt.runtime.factory import make_backend

        if name == "torch":
            return make_backend(name, config, self.comps, head or sampling.gaussian)
        if name == "tensorrt" and not torch.cuda.is_available():
            raise InputError("tensorrt engines need a CUDA GPU and torch sees none")
        if name == "onnxruntime":
            require("onnxruntime", "onnx")
        artifacts = self.artifacts or self._export(name, config)
        return make_backend(name, config, self.comps, head, artifacts)

    def _export(self, name: str, config: RunConfig) -> Path:
        from pahi_rt.export import graphs
        from pahi_rt.export.artifacts import export_artifacts
        from pahi_rt.export.build import ExportOptions, cache_dir

        needed = (graphs.TEXT_ENCODER, graphs.UNET, graphs.DECODER) + (
            (graphs.HEAD,) if config.mode.noise != "gaussian" else ()) + (
            (config.mode.name,) if self.fused else ())
        options = ExportOptions(height=config.height, width=config.width, batch=config.batch,
                                precision=config.precision, graphs=needed,
                                engines=(config.mode.name,) if name == "tensorrt" else ())
        directory = cache_dir(self.comps, self.export_head, ExportOptions(
            height=config.height, width=config.width, batch=config.batch,
            precision=config.precision))
        self.log(f"no --artifacts: exporting {', '.join(needed)} into the cache {directory}")
        export_artifacts(self.comps, directory, options, self.export_head, progress=self.log)
        return directory
