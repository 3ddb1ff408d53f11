"""Content keys: what an exported graph is built from, hashed.

Every artifact has a content key: the hash of the weights and configs it is built from, the code
version (pahi-rt's version and the source of the sampler/export modules), and the options
(precision, shapes; TensorRT flavour/version/targets for engines). The exporter stores them;
the runtime recomputes `source_hashes` to check that an artifact directory belongs to the model
it loaded and to find its directory in the cache (`cache.cache_dir`).
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from ..errors import ArtifactError
from ..io import sha256_json

# Modules whose code shapes an exported graph: their source is part of every ONNX key. They are
# located by name (their source is read, not imported), so reading needs no exporter import.
GRAPH_CODE = ("pahi_rt.specs", "pahi_rt.sampling", "pahi_rt.pixels", "pahi_rt.heads.head",
              "pahi_rt.export.graphs", "pahi_rt.export.cleanup", "pahi_rt.export.onnx_export",
              "pahi_rt.export.external", "pahi_rt.export.compose")
# Packages whose version changes the graphs written (exporter, cleanup, fp16 converter).
GRAPH_TOOLS = ("torch", "onnx", "onnxslim", "onnxruntime")


def weights_hash(module) -> str:
    """sha256 over a torch module's parameter/buffer names, dtypes, shapes and bytes (not file
    names)."""
    import torch

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
    """Content hashes of everything graphs are built from (weights, configs, code, tools)."""
    spec = components.spec
    out = {"text_encoder": weights_hash(components.text_encoder),
           "unet": weights_hash(components.unet), "decoder": weights_hash(components.decoder),
           "model_spec": sha256_json(asdict(spec)), "code": code_version(),
           "tools": sha256_json(tool_versions())}
    if getattr(components, "text_encoder_2", None) is not None:  # SDXL (SD 2.x keys unchanged)
        out["text_encoder_2"] = weights_hash(components.text_encoder_2)
    if head is not None:
        out["head"] = weights_hash(head)
        out["head_config"] = sha256_json(head.config.to_dict())
    return out


def options_key(options) -> list:
    """What of the export options keys a graph and its cache directory: `options.shape.key`
    (the one shape form, `specs.RenderShape.key`, e.g. "1x512x512-fp32") and `options.max_batch`
    (0: static batch). `options` is an `export.build.ExportOptions` with its size filled in."""
    return [options.shape.key, options.max_batch]
