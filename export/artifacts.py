"""`export_artifacts`: the cached, locked, atomic export of ONNX graphs and TensorRT engines.

Each artifact is rebuilt only when its content key (`build.onnx_key`, `fused_key`,
`engine_key`) or its files' sha256 no longer match the manifest. The whole export holds an
exclusive lock on DIR/.lock, and each file and the manifest are replaced atomically.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..artifacts import manifest as mf
from ..artifacts.keys import options_key, source_hashes
from ..errors import ArtifactError
from ..io import atomic_write_bytes, atomic_write_json, sha256_file, sha256_json
from ..conditioning import host_conditioning
from ..sampling import Schedule
from ..specs import ENGINE, MODES, ONNX, component_graphs
from . import graphs
from .build import ExportOptions, graph_plan, onnx_key
from .compose import compose_graph
from .manifest import put_artifact, remove_stale_temporaries
from .onnx_export import export_graph


# graph -> the Components fields it is traced from
_MODULES = {graphs.TEXT_ENCODER: ("text_encoder", "text_encoder_2"), graphs.UNET: ("unet",),
            graphs.DECODER: ("decoder",)}


@dataclass
class ExportReport:
    """What an export did: artifacts built and reused (paths relative to the directory)."""

    directory: Path
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


def export_artifacts(components, out_dir: str | Path, options: ExportOptions, head=None,
                     head_source: str | None = None, progress=lambda message: None,
                     sources: dict | None = None, consume: bool = False) -> ExportReport:
    """Export every graph of `graph_plan(head, spec=components.spec)` into out_dir, then engines for
    `options.engines`; reuses artifacts whose content key and sha256 still match. `sources`
    (from `source_hashes(components, head)`) saves hashing the weights again. `consume`: the
    caller hands the components over; each torch module is dropped once its graph is written
    (the UNet goes first, so the other traces run without its 3.5 GB beside them)."""
    options = replace(options, shape=options.shape.sized(components.spec)).check()
    out = Path(out_dir)
    report = ExportReport(out)
    sources = sources or source_hashes(components, head)
    with mf.directory_lock(out):
        remove_stale_temporaries(out)  # what a killed export left (we hold the lock)
        manifest = mf.read_manifest(out)
        manifest.update(model=components.model_id, decoder=components.decoder_id,
                        head=head_source, height=options.height, width=options.width,
                        batch=options.batch, max_batch=options.max_batch,
                        precision=options.precision, sources=sources)
        for name, steps in graph_plan(head, options.graphs, components.spec):
            _export_one(components, head, name, steps, sources, options, manifest, report,
                        progress)
            for field_name in _MODULES.get(name, ()) if consume else ():
                setattr(components, field_name, None)
                gc.collect()
        for name in options.engines:
            _build_one(name, options, manifest, report, progress)
        atomic_write_json(out / mf.MANIFEST, manifest)
    report.manifest = manifest
    return report


def _export_one(components, head, name, steps, sources, options, manifest, report, progress):
    out = report.directory
    parts = _components_of(name, manifest, out) if name in MODES else {}
    key = (fused_key(name, parts, sources, options) if parts
           else onnx_key(name, steps, sources, options))
    entry = mf.find_artifact(manifest, name, ONNX)
    if entry and entry.get("key") == key and mf.is_intact(out, entry):
        report.reused.append(entry["path"])
        return
    progress(f"{'composing' if parts else 'exporting'} {name}.onnx ({options.precision})")
    path = out / f"{name}.onnx"
    dynamic = options.max_batch > options.batch
    depends = []
    if parts:
        schedule = Schedule.from_spec(components.spec.scheduler, steps)
        host = host_conditioning(components.spec, 1, options.height, options.width)
        facts = compose_graph(out, MODES[name], schedule, {g: e["path"] for g, e in parts.items()},
                              path, dynamic, host)
        depends = [f for e in parts.values() for f in mf.artifact_files(e) if f[0] != e["path"]]
    else:
        module = graphs.build_module(name, components, head)
        args = graphs.example_inputs(name, components, options.batch, options.height,
                                     options.width)
        facts = export_graph(module, args, graphs.graph_spec(name, components.spec), path,
                             options.precision, dynamic_batch=dynamic)
    entry = {"path": path.name, "kind": ONNX, "graph": name, "key": key, "steps": steps,
             "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
             "precision": options.precision, "batch": options.batch,
             "max_batch": options.max_batch, "height": options.height, "width": options.width,
             "built_from": {k: v for k, v in sources.items()}, "depends": depends, **facts}
    if facts["external_data"]:
        data = out / facts["external_data"]
        entry.update(external_data_sha256=sha256_file(data),
                     size_bytes=entry["size_bytes"] + data.stat().st_size)
    put_artifact(manifest, entry)
    atomic_write_json(out / mf.MANIFEST, manifest)  # keep progress if a later graph fails
    report.built.append(entry["path"])


def _components_of(name: str, manifest: dict, out: Path) -> dict[str, dict]:
    """The manifest entries of the component graphs a fused graph is composed from."""
    needed = component_graphs(MODES[name])
    parts = {g: mf.find_artifact(manifest, g, ONNX) for g in needed}
    missing = [g for g, e in parts.items() if e is None or not mf.is_intact(out, e)]
    if missing:
        raise ArtifactError(f"{out}: {name} is composed from {', '.join(needed)}, but "
                            f"{', '.join(missing)} is missing or corrupt; export them too")
    return parts


def fused_key(name: str, parts: dict[str, dict], sources: dict, options: ExportOptions) -> str:
    """Key of a composed graph: its components' keys, the glue code and the schedule."""
    return sha256_json({"graph": name, "parts": {g: e["key"] for g, e in parts.items()},
                        "code": sources["code"], "tools": sources["tools"],
                        "spec": sources["model_spec"], "options": options_key(options)})


def engine_key(onnx_entry: dict, options: ExportOptions) -> str:
    """Key of an engine: its ONNX files, TensorRT flavour/version, build options, and the GPU
    when the build is for the local GPU (classic TensorRT, or TensorRT-RTX target `current`)."""
    from ..artifacts.tensorrt import CLASSIC
    from .engine import flavour_version, local_gpu

    flavour = flavour_version()
    local = flavour["flavour"] == CLASSIC or "current" in options.build.targets
    return sha256_json({"onnx": mf.artifact_files(onnx_entry), **flavour,
                        "build": _build_options(onnx_entry, options).to_dict(),
                        "gpu": local_gpu() if local else None})


def _build_options(onnx_entry: dict, options: ExportOptions):
    """The build options, with a batch profile 1..max_batch when the graph has a free batch."""
    if not (options.max_batch > options.batch):
        return options.build
    profile = {}
    for name, (shape, _) in onnx_entry["io"]["inputs"].items():
        rest = tuple(shape[1:])
        profile[name] = ((1, *rest), (options.batch, *rest), (options.max_batch, *rest))
    return replace(options.build, profile=profile)


def _build_one(name, options, manifest, report, progress):
    from ..artifacts.tensorrt import RTX
    from .engine import build_engine

    out = report.directory
    source_path, source = mf.verified_artifact(out, name, ONNX)
    key = engine_key(source, options)
    entry = mf.find_artifact(manifest, name, ENGINE)
    if entry and entry.get("key") == key and mf.is_intact(out, entry):
        report.reused.append(entry["path"])
        return
    progress(f"building {name}.engine")
    data, facts = build_engine(source_path, _build_options(source, options))
    path, log = out / f"{name}.engine", out / f"{name}.engine.log"
    atomic_write_bytes(log, ("\n".join(facts.pop("log")) + "\n").encode())
    atomic_write_bytes(path, data)
    entry = {"path": path.name, "kind": ENGINE, "graph": name, "key": key,
             "sha256": sha256_file(path), "size_bytes": len(data),
             "source": source["path"], "source_sha256": source["sha256"],
             "precision": source["precision"], "io": source["io"], "build_log": log.name,
             "cuda_graphs": "whole-graph capture at run time" if facts["flavour"] == RTX
             else "none", **facts}
    put_artifact(manifest, entry)
    atomic_write_json(out / mf.MANIFEST, manifest)
    report.built.append(entry["path"])
