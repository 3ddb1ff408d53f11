"""Trace one graph to ONNX, clean it, convert precision, save (external data over 2 GB), check.

Tracing uses torch's TorchScript exporter (`dynamo=False`): it traces diffusers/transformers
models on the CPU in seconds at opset 17, and the graph it gives runs in onnxruntime and TensorRT.
fp16 is made from the fp32 graph (see `cleanup.to_fp16`), so no fp16 kernels are needed in torch.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ..errors import require
from . import cleanup
from .graphs import GraphSpec

OPSET = 17
PRECISIONS = ("fp32", "fp16")


def trace(module: torch.nn.Module, args: tuple, spec: GraphSpec, workdir: Path,
          dynamic_batch: bool = False):
    """torch module -> onnx.ModelProto (weights loaded in memory); axis 0 named "batch" and
    left free when `dynamic_batch`."""
    require("onnx", "onnx")  # a clear error naming the extra before tracing
    path = workdir / "traced.onnx"
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(spec.inputs),
                          output_names=list(spec.outputs), opset_version=OPSET, dynamo=False,
                          do_constant_folding=True, dynamic_axes={
                              n: {0: "batch"} for n in spec.inputs + spec.outputs
                          } if dynamic_batch else None)
    return load_traced(path)


def load_traced(path: Path):
    """Load a traced graph. Over 2 GB (torch then writes external data beside it), run ONNX
    shape inference on the files first (`infer_shapes_path`): in-memory inference cannot handle
    such graphs, and the fp16 converter needs the inferred types to place its Casts."""
    onnx = require("onnx", "onnx")
    on_disk = sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file())
    if on_disk > cleanup.TWO_GB:
        inferred = path.with_name("inferred.onnx")
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred))
        path = inferred
    return onnx.load(str(path))  # also reads the external data


def save(model, path: Path) -> dict:
    """Save atomically into path's directory; graphs over 2 GB keep weights in `NAME.data`.

    Returns {"external_data": relative name or None}. Both files are written in a temp folder
    and moved into place with os.replace (data first, so the graph never points at nothing)."""
    onnx = require("onnx", "onnx")
    large = cleanup.is_large(model)
    data_name = f"{path.name}.data" if large else None
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        onnx.save_model(model, str(tmp / path.name), save_as_external_data=large,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        onnx.checker.check_model(str(tmp / path.name), full_check=False)  # path-based: > 2 GB ok
        if large:
            os.replace(tmp / data_name, path.parent / data_name)
        elif (path.parent / f"{path.name}.data").exists():
            os.unlink(path.parent / f"{path.name}.data")
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"external_data": data_name}


def export_graph(module: torch.nn.Module, args: tuple, spec: GraphSpec, path: Path,
                 precision: str = "fp32", dynamic_batch: bool = False) -> dict:
    """Export `module` as graph `spec` to `path`; returns facts for the manifest."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".trace.") as work:
        model = trace(module, args, spec, Path(work), dynamic_batch)
        how = cleanup.cleanup_name(model)
        cleaned = cleanup.slim(model)
        del model
        if precision == "fp16":
            cleaned = cleanup.to_fp16(cleaned)
        facts = save(cleaned, path)
    facts.update(seconds=round(time.perf_counter() - t0, 2), opset=OPSET,
                 exporter=f"torch {torch.__version__} (TorchScript)", cleanup=how,
                 io=io_signature(cleaned))
    return facts


def io_signature(model) -> dict:
    """{tensor name: [shape, onnx dtype name]} for graph inputs and outputs."""
    onnx = require("onnx", "onnx")

    def describe(values):
        return {v.name: [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim],
                         onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)]
                for v in values}
    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}
