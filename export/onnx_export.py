"""Trace one graph to ONNX, clean it, convert precision, and save it with its weights in
`NAME.onnx.data` (always external, so fused graphs can refer to the same bytes).

Tracing uses torch's TorchScript exporter (`dynamo=False`): it traces diffusers/transformers
models on the CPU in seconds at opset 17, and the graph it gives runs in onnxruntime and TensorRT.
Small graphs are cleaned in memory with onnxslim. Graphs whose weights exceed `STREAM_BYTES`
(the full-size text encoder and UNet) are never loaded with their weights: shape inference runs
on the files, the structure is rewritten around placeholders, and the weights are streamed into
the data file (`external.py`), which keeps a full-size export near the size of the torch model
in memory. fp16 is made from the fp32 graph (see `cleanup.to_fp16`), so no fp16 kernels are
needed in torch.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch

from ..errors import require
from ..io import atomic_write_files
from . import cleanup, external
from .graphs import GraphSpec

OPSET = 17
PRECISIONS = ("fp32", "fp16")
STREAM_BYTES = 512 << 20  # above this many bytes of weights, a graph's weights are streamed


def trace(module: torch.nn.Module, args: tuple, spec: GraphSpec, workdir: Path,
          dynamic_batch: bool = False) -> Path:
    """torch module -> workdir/traced.onnx (torch writes weights beside it when over 2 GB);
    axis 0 named "batch" and left free when `dynamic_batch`."""
    require("onnx", "onnx")  # a clear error naming the extra before tracing
    path = workdir / "traced.onnx"
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(spec.inputs),
                          output_names=list(spec.outputs), opset_version=OPSET, dynamo=False,
                          do_constant_folding=True, dynamic_axes={
                              n: {0: "batch"} for n in spec.inputs + spec.outputs
                          } if dynamic_batch else None)
    return path


def load_structure(traced: Path) -> tuple[object, dict, str]:
    """(model, placeholder sources, cleanup description) of a traced graph. Small graphs come
    back whole and slimmed; large ones as structure + placeholders (`external.py`)."""
    onnx = require("onnx", "onnx")
    work = traced.parent
    weights = sum(f.stat().st_size for f in work.iterdir() if f.is_file())
    if weights <= STREAM_BYTES:
        return cleanup.slim(onnx.load(str(traced))), {}, "onnxslim"
    if traced.stat().st_size > STREAM_BYTES:  # weights inline (< 2 GB): refer to them in place
        moved = work / "external.onnx"
        onnx.save_model(external.split_inline(traced), str(moved))
        traced = moved
    inferred = work / "inferred.onnx"
    onnx.shape_inference.infer_shapes_path(str(traced), str(inferred))  # weights stay on disk
    model = onnx.load(str(inferred), load_external_data=False)
    return model, external.make_placeholders(model, work), "torch constant folding " \
        "(weights streamed; onnxslim skipped)"


def save(model, sources: dict, path: Path) -> dict:
    """Write graph + `NAME.onnx.data`, check the graph, and move both into place (data first,
    so the graph never points at nothing) with `io.atomic_write_files`. An empty data file is
    not kept. Returns {"external_data": the data file's name or None}."""
    onnx = require("onnx", "onnx")
    data_name = f"{path.name}.data"

    def write(tmp: Path) -> None:
        external.write_weights(model, sources, tmp / data_name)
        onnx.save_model(model, str(tmp / path.name))
        onnx.checker.check_model(str(tmp / path.name), full_check=False)
        if not (tmp / data_name).stat().st_size:
            (tmp / data_name).unlink()
    if data_name not in atomic_write_files(path.parent, (data_name, path.name), write):
        (path.parent / data_name).unlink(missing_ok=True)
        return {"external_data": None}
    return {"external_data": data_name}


def export_graph(module: torch.nn.Module, args: tuple, spec: GraphSpec, path: Path,
                 precision: str = "fp32", dynamic_batch: bool = False) -> dict:
    """Export `module` as graph `spec` to `path`; returns facts for the manifest."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".trace.{path.name}.") as work:
        model, sources, how = load_structure(trace(module, args, spec, Path(work), dynamic_batch))
        if precision == "fp16":
            model = cleanup.to_fp16(model, infer_shapes=not sources)
        facts = save(model, sources, path)
    facts.update(seconds=round(time.perf_counter() - t0, 2), opset=OPSET,
                 exporter=f"torch {torch.__version__} (TorchScript)", cleanup=how,
                 io=io_signature(model))
    return facts


def io_signature(model) -> dict:
    """{tensor name: [shape, onnx dtype name]} for graph inputs and outputs."""
    onnx = require("onnx", "onnx")

    def describe(values):
        return {v.name: [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim],
                         onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)]
                for v in values}
    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}
