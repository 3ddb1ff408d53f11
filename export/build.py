"""Export a model's graphs (and engines) into an artifact directory, rebuilding only what changed.

Every artifact has a content key: the hash of the weights and configs it is built from, the code
version (pahi-rt's version and the source of the sampler/export modules), and the options
(precision, shapes, opset; TensorRT flavour/version/targets for engines). An artifact is reused
only when its key matches and its file still has the recorded sha256. The whole export holds an
exclusive lock on DIR/.lock, and each file and the manifest are replaced atomically.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from ..errors import ArtifactError, InputError
from ..specs import MODES, RenderShape, ShapeFields
from . import graphs, manifest as mf
from .engine import BuildOptions
from .onnx_export import PRECISIONS

# Modules whose code shapes an exported graph: their source is part of every ONNX key.
GRAPH_CODE = ("pahi_rt.specs", "pahi_rt.sampling", "pahi_rt.pixels", "pahi_rt.heads.head",
              "pahi_rt.export.graphs", "pahi_rt.export.cleanup", "pahi_rt.export.onnx_export",
              "pahi_rt.export.external", "pahi_rt.export.compose")
# Packages whose version changes the graphs written (exporter, cleanup, fp16 converter).
GRAPH_TOOLS = ("torch", "onnx", "onnxslim", "onnxruntime")


MAX_EXPORT_BATCH = 256  # images per graph call; serve --max-batch has the same limit


@dataclass(frozen=True)
class ExportOptions(ShapeFields):
    """Shape, precision and which engines to build. Static shapes unless max_batch > batch; a
    None size in `shape` is the model's (`export_artifacts` fills it in)."""

    shape: RenderShape = RenderShape()
    max_batch: int = 0  # > batch: dynamic batch axis and an optimisation profile 1..max_batch
    graphs: tuple[str, ...] = ()  # graph names to export (empty: all of `graph_plan`)
    engines: tuple[str, ...] = ()  # graph names to build engines for (empty: none)
    build: BuildOptions = field(default_factory=BuildOptions)

    @property
    def key(self) -> list:
        """What of the options keys a graph and the cache directory (`RenderShape.key`)."""
        return [self.shape.key, self.max_batch]

    def check(self) -> "ExportOptions":
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.batch < 1 or (self.max_batch and self.max_batch < self.batch):
            raise InputError("--batch must be >= 1 and --max-batch >= --batch")
        if max(self.batch, self.max_batch or 0) > MAX_EXPORT_BATCH:
            raise InputError(f"--batch and --max-batch must be at most {MAX_EXPORT_BATCH} "
                             "(serve's largest batch)")
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
    """Hash of pahi-rt's version and the source of every module in GRAPH_CODE, located through
    the import system (so it works for wheels, editable installs and source checkouts)."""
    h = hashlib.sha256(_version().encode())
    for name in GRAPH_CODE:
        h.update(name.encode())
        h.update(module_source(name))
    return h.hexdigest()


def module_source(name: str) -> bytes:
    """The source bytes of module `name`; refuses loudly when they cannot be read (a cache
    key that silently skipped a file would reuse stale graphs)."""
    spec = importlib.util.find_spec(name)
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    if origin is None or origin.suffix != ".py" or not origin.is_file():
        raise ArtifactError(f"cannot read the source of {name} ({origin}) to key the export "
                            "cache; reinstall pahi-rt")
    return origin.read_bytes()


def tool_versions() -> dict:
    """Versions of the packages in GRAPH_TOOLS ("-" when not installed)."""
    out = {}
    for name in GRAPH_TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


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
           "tools": mf.sha256_json(tool_versions())}
    if head is not None:
        out["head"] = weights_hash(head)
        out["head_config"] = mf.sha256_json(head.config.to_dict())
    return out


def component_graphs(mode) -> tuple[str, ...]:
    """The component graphs a mode's fused graph is composed from."""
    head = (graphs.HEAD,) if mode.noise != "gaussian" else ()
    return (graphs.TEXT_ENCODER,) + head + (graphs.UNET, graphs.DECODER)


def graph_plan(head=None, only: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    """(graph name, Euler steps) of the graphs exported: components, then the fused modes
    (composed from the components, so asking for a fused graph brings its components)."""
    # the largest first: an export that consumes its components frees each after its graph
    plan = [(graphs.UNET, 1), (graphs.TEXT_ENCODER, 1), (graphs.DECODER, 1)]
    fused = [m for m in MODES.values() if m.noise == "gaussian" or
             (head is not None and m.noise == head.config.kind)]
    if head is not None:
        plan.append((graphs.HEAD, 1))
    plan += [(m.name, m.steps) for m in fused]
    unknown = set(only) - {name for name, _ in plan}
    if unknown:
        raise InputError(f"--graph {', '.join(sorted(unknown))}: not one of "
                         f"{', '.join(name for name, _ in plan)}")
    wanted = set(only)
    for name in only:
        if name in MODES:
            wanted.update(component_graphs(MODES[name]))
    return [(name, steps) for name, steps in plan if not only or name in wanted]


_USES = {graphs.TEXT_ENCODER: ("text_encoder",), graphs.UNET: ("unet",),
         graphs.DECODER: ("decoder",), graphs.HEAD: ("head", "head_config")}


def onnx_key(name: str, steps: int, sources: dict, options: ExportOptions) -> str:
    used = _USES.get(name, ("text_encoder", "unet", "decoder", "head", "head_config"))
    if name in MODES and MODES[name].noise == "gaussian":
        used = ("text_encoder", "unet", "decoder")
    return mf.sha256_json({"graph": name, "steps": steps, "code": sources["code"],
                           "tools": sources["tools"], "spec": sources["model_spec"],
                           "weights": {k: sources.get(k) for k in used},
                           "options": options.key})


def cache_root() -> Path:
    """$PAHI_RT_CACHE (default ~/.cache/pahi-rt/artifacts), checked to be a writable folder."""
    env = os.environ.get("PAHI_RT_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "pahi-rt" / "artifacts"
    try:
        base.mkdir(parents=True, exist_ok=True)
        ok = base.is_dir() and os.access(base, os.W_OK)
    except OSError:
        ok = False
    if not ok:
        raise InputError(f"PAHI_RT_CACHE={base}: not a writable folder; point it at one (or "
                         "pass --artifacts DIR)")
    return base


def cache_dir(sources: dict, options: ExportOptions) -> Path:
    """A content-keyed directory under $PAHI_RT_CACHE (default ~/.cache/pahi-rt/artifacts) for
    the graphs of `sources` (from `source_hashes`) at these shapes and precision."""
    base = cache_root()
    key = mf.sha256_json({"sources": sources, "options": options.key})
    return base / key[:20]
