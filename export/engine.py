"""TensorRT engines built from ONNX graphs (`tensorrt` or TensorRT for RTX, imported through
`pahi_rt.artifacts.tensorrt.trt_module`, which also checks an engine before it runs).

TensorRT for RTX (`tensorrt_rtx`) builds ahead of time without a GPU for chosen compute
capabilities (sm75/80/86/89/120/121; `current` builds for the GPU in this machine); networks are
strongly typed, so an fp16 ONNX graph gives an fp16 engine with its fp32 islands (attention
scores, norms) kept as the graph's Casts say. Classic `tensorrt` needs the target GPU at build
time and builds for it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts.tensorrt import RTX, trt_logger, trt_module
from ..errors import EngineError

DEFAULT_TARGETS = ("sm86",)  # RTX 3090-class; add sm80/sm89/sm120 with --target
TARGETS = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121", "current")


def local_gpu() -> str:
    """Name and compute capability of CUDA device 0 ("none" without one): engines built for
    the local GPU are keyed by it."""
    import torch

    if not torch.cuda.is_available():
        return "none"
    major, minor = torch.cuda.get_device_capability(0)
    return f"{torch.cuda.get_device_name(0)} sm{major}{minor}"


def flavour_version() -> dict:
    trt, flavour = trt_module()
    return {"flavour": flavour, "version": trt.__version__}


@dataclass
class BuildOptions:
    """How an engine is built; part of the engine's cache key."""

    targets: tuple[str, ...] = DEFAULT_TARGETS  # RTX only; classic builds for the local GPU
    # input name -> (min, opt, max) shapes
    profile: dict[str, tuple[tuple, tuple, tuple]] = field(default_factory=dict)
    workspace_mb: int = 0  # 0: TensorRT's default (all device memory)

    def to_dict(self) -> dict:
        return {"targets": list(self.targets), "profile": {k: [list(s) for s in v]
                                                           for k, v in self.profile.items()},
                "workspace_mb": self.workspace_mb}


def check_targets(targets) -> tuple[str, ...]:
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise EngineError(f"--target must be among {', '.join(TARGETS)}, got {', '.join(bad)}")
    return tuple(targets)


def build_engine(onnx_path: Path, options: BuildOptions) -> tuple[bytes, dict]:
    """Parse the ONNX graph (external data beside it is read) and build a serialized engine.

    Returns (engine bytes, facts: flavour, version, targets, build seconds, log lines)."""
    trt, flavour = trt_module()
    lines: list[str] = []
    logger = trt_logger(trt, lines)
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT could not parse {onnx_path}: {'; '.join(errors)[:500]}")
    config = builder.create_builder_config()
    if flavour == RTX:
        config.num_compute_capabilities = len(options.targets)
        for i, target in enumerate(check_targets(options.targets)):
            config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), i)
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.profile:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in options.profile.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    data = builder.build_serialized_network(network, config)
    if data is None:
        tail = "; ".join(line for line in lines if "ERROR" in line)[-500:]
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path}: {tail}")
    facts = {"flavour": flavour, "trt_version": trt.__version__,
             "targets": list(options.targets) if flavour == RTX else ["local GPU"],
             "build_seconds": round(time.perf_counter() - t0, 2), **options.to_dict()}
    return bytes(data), {**facts, "log": lines}
