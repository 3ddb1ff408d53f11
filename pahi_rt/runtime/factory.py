"""Pick a backend by name (`torch`, `onnxruntime`, `tensorrt`) behind the one protocol."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .backend import Backend, RunConfig

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def make_backend(name: str, config: RunConfig, components, noise_source=None,
                 artifacts: str | Path | None = None) -> Backend:
    """A ready backend. torch runs `components` eagerly; the others run the artifacts in
    `artifacts` (a directory written by `pahi-rt export`)."""
    if name == "torch":
        from .. import sampling
        from .torch_backend import TorchBackend

        return TorchBackend(config, components, noise_source or sampling.gaussian)
    if name not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got '{name}'")
    if artifacts is None:
        raise InputError(f"--backend {name} needs an artifact directory (pahi-rt export)")
    if name == "onnxruntime":
        from .ort_backend import OrtBackend

        return OrtBackend(config, artifacts, components.spec)
    from .trt_backend import TrtBackend

    return TrtBackend(config, artifacts, components.spec)
