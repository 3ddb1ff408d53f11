"""Export a model's graphs (and engines) into an artifact directory, rebuilding only what changed.

Every artifact has a content key: the hash of the weights and configs it is built from, the code
version (pahi-rt's version and the source of the sampler/export modules), and the options
(precision, shapes, opset; TensorRT flavour/version/targets for engines). An artifact is reused
only when its key matches and its file still has the recorded sha256. The whole export holds an
exclusive lock on DIR/.lock, and each file and the manifest are replaced atomically.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from ..errors import InputError
from . import graphs, manifest as mf
from .engine import BuildOptions
from .onnx_export import PRECISIONS

_CODE_FILES = ("sampling.py", "noise/head.py", "export/graphs.py", "export/cleanup.py",
               "export/onnx_export.py")


@dataclass(frozen=True)
class ExportOptions:
    """Shapes, precision and which engines to build. Static shapes unless max_batch > batch."""

    height: int = 512
    width: int = 512
    batch: int = 1
    precision: str = "fp32"
    max_batch: int = 0  # > batch: dynamic batch axis and an optimisation profile 1..max_batch
    graphs: tuple[str, ...] = ()  # graph names to export (empty: all of `graph_plan`)
    engines: tuple[str, ...] = ()  # graph names to build engines for (empty: none)
    build: BuildOptions = field(default_factory=BuildOptions)

    def check(self) -> "ExportOptions":
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.batch < 1 or (self.max_batch and self.max_batch < self.batch):
            raise InputError("--batch must be >= 1 and --max-batch >= --batch")
        return self


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over parameter/buffer names, dtypes, shapes and bytes (not file names)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def code_version() -> str:
    root = Path(__file__).resolve().parents[1]
    package = Path(graphs.__file__).resolve().parents[1]  # pahi_rt/ (export/ is mapped into it)
    h = hashlib.sha256(_version().encode())
    for rel in _CODE_FILES:
        path = (root if rel.startswith("export/") else package) / rel
        h.update(path.read_bytes() if path.is_file() else rel.encode())
    return h.hexdigest()


def _version() -> str:
    try:
        return metadata.version("pahi-rt")
    except metadata.PackageNotFoundError:
        return "unknown"


def source_hashes(components, head=None) -> dict:
    """Content hashes of everything graphs are built from (weights and configs)."""
    spec = components.spec
    out = {"text_encoder": weights_hash(components.text_encoder),
           "unet": weights_hash(components.unet), "decoder": weights_hash(components.decoder),
           "model_spec": mf.sha256_json(asdict(spec)), "code": code_version(),
           "torch": torch.__version__}
    if head is not None:
        out["head"] = weights_hash(head)
        out["head_config"] = mf.sha256_json(head.config.to_dict())
    return out


def graph_plan(head=None, only: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """(graph name, Euler steps) of the graphs exported: components, then fused modes."""
    plan = [(graphs.TEXT_ENCODER, 1), (graphs.UNET, 1), (graphs.DECODER, 1)]
    if head is not None:
        plan += [(graphs.HEAD, 1), (f"{head.config.mode}-1step", 1)]
    plan += [("gaussian-1step", 1), ("gaussian-2step", 2)]
    unknown = set(only) - {name for name, _ in plan}
    if unknown:
        raise InputError(f"--graph {', '.join(sorted(unknown))}: not one of "
                         f"{', '.join(name for name, _ in plan)}")
    return [(name, steps) for name, steps in plan if not only or name in only]


_USES = {graphs.TEXT_ENCODER: ("text_encoder",), graphs.UNET: ("unet",),
         graphs.DECODER: ("decoder",), graphs.HEAD: ("head", "head_config")}


def onnx_key(name: str, steps: int, sources: dict, options: ExportOptions) -> str:
    used = _USES.get(name, ("text_encoder", "unet", "decoder", "head", "head_config"))
    if name.startswith("gaussian"):
        used = ("text_encoder", "unet", "decoder")
    return mf.sha256_json({"graph": name, "steps": steps, "code": sources["code"],
                           "torch": sources["torch"], "spec": sources["model_spec"],
                           "weights": {k: sources.get(k) for k in used},
                           "options": [options.height, options.width, options.batch,
                                       options.max_batch, options.precision]})


def cache_dir(components, head, options: ExportOptions) -> Path:
    """A content-keyed directory under $PAHI_RT_CACHE (default ~/.cache/pahi-rt/artifacts)."""
    base = Path(os.environ.get("PAHI_RT_CACHE", Path.home() / ".cache" / "pahi-rt" / "artifacts"))
    key = mf.sha256_json({"sources": source_hashes(components, head),
                          "options": [options.height, options.width, options.batch,
                                      options.max_batch, options.precision]})
    return base / key[:20]
