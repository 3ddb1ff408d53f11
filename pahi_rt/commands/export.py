"""`pahi-rt export`: ONNX graphs (components and fused), TensorRT engines and a manifest."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer

from ..extras import check_extras
from ..specs import DEFAULT_MODEL
from .common import Decoder, DtypeAlias, Model, echo_err, fits, image_size, pick_precision


def export_cmd(
    model: Model = DEFAULT_MODEL,
    decoder: Decoder = None,
    head: Optional[Path] = typer.Option(None, help="HI/PAHI head checkpoint dir: adds the head "
                                        "graph and the fused `<mode>-1step` graph."),
    height: Optional[int] = typer.Option(None, help="Image height (static shape; default: the "
                                         "model's own, e.g. 64 for tiny)."),
    width: Optional[int] = typer.Option(None, help="Image width (static shape; default: the "
                                        "model's)."),
    batch: int = typer.Option(1, help="Batch size (static, or the profile's optimum)."),
    max_batch: int = typer.Option(0, help="> --batch: dynamic batch axis and an engine "
                                  "optimisation profile 1..max-batch."),
    precision: str = typer.Option("fp32", help="fp32 | fp16: the graphs' and engines' "
                                  "precision."),
    dtype: DtypeAlias = None,
    out: Path = typer.Option(Path("artifacts"), help="Artifact directory (manifest.json)."),
    graph: List[str] = typer.Option([], help="Export only these graphs (repeatable)."),
    target: List[str] = typer.Option([], help="TensorRT-RTX target GPUs (repeatable): sm75, "
                                     "sm80, sm86 (default), sm89, sm120, sm121, or current "
                                     "(the GPU in this machine)."),
    engine_graph: List[str] = typer.Option([], help="Build engines only for these graphs "
                                           "(default: every exported graph)."),
    no_engine: bool = typer.Option(False, "--no-engine", help="ONNX only, no TensorRT engines."),
):
    """Export ONNX graphs and TensorRT engines; rebuilds only what changed (content hashes)."""
    check_extras("export")
    from ..errors import MissingDependencyError
    from ..artifacts.tensorrt import trt_module
    from ..export.engine import DEFAULT_TARGETS, BuildOptions, check_targets
    from ..io import ensure_writable_dir
    from ..hub import check_model_source
    from ..specs import RenderShape

    # arguments first: torch and the model libraries take seconds to import
    check_model_source(model)
    height, width = image_size(model, height, width)
    shape = RenderShape(batch=batch, height=height, width=width,
                        precision=pick_precision(precision, dtype))
    check_targets(target or DEFAULT_TARGETS)
    ensure_writable_dir(out, "--out")  # before any loading (an existing file, /proc/...)
    from ..components import load_components
    from ..export.artifacts import export_artifacts
    from ..export.build import ExportOptions, graph_plan
    from ..heads.checkpoint import load_head
    from ..runtime.pipeline import PipelineConfig

    fits(model, PipelineConfig(backend="onnxruntime",
                               shape=replace(shape, batch=max(batch, max_batch))),
         "cpu", export=True, run=False, decoder=decoder)
    comps = load_components(model, decoder)
    noise_head = load_head(head, comps.spec, height, width) if head else None
    names = tuple(n for n, _ in graph_plan(noise_head, tuple(graph), comps.spec))
    engines: tuple[str, ...] = ()
    if not no_engine:
        try:
            trt_module()
            engines = tuple(engine_graph) or names
        except MissingDependencyError as e:
            typer.secho(f"warning: engines skipped: {e}", fg="yellow", err=True)
    options = ExportOptions(shape=shape, max_batch=max_batch, graphs=tuple(graph),
                            engines=engines,
                            build=BuildOptions(targets=check_targets(target or DEFAULT_TARGETS)))
    report = export_artifacts(comps, out, options.check(), noise_head,
                              str(head) if head else None, progress=echo_err,
                              consume=True)  # this verb owns the model: free what is traced
    for entry in report.manifest["artifacts"]:
        state = "built " if entry["path"] in report.built else "cached"
        typer.echo(f"{state}  {entry['kind']:6s}  {out / entry['path']}  "
                   f"{entry['size_bytes'] / 2**20:8.1f} MiB  sha256 {entry['sha256'][:12]}")
