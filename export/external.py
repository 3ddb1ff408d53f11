"""Weights outside the graph: placeholders while a graph's structure is rewritten, and streaming
of the real tensors into one `NAME.onnx.data` file afterwards.

A full-size fp32 UNet holds 3.5 GB of weights. Loading them into an onnx ModelProto, converting
and serialising costs several copies (an fp32 export peaked at 18 GiB). Instead, the graph is
loaded without its weights; every external initializer is swapped for a one-element placeholder
(so graph rewrites such as the fp16 conversion decide types without touching data); then each
tensor is read from the traced file, cast when its new type says so, and appended to the data
file - one tensor in memory at a time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import require

ALIGN = 4096  # tensor offsets in the data file (page-aligned: mmap-friendly for runtimes)


@dataclass(frozen=True)
class Source:
    """Where a weight's bytes are: a file (relative to a directory), offset and length."""

    location: str
    offset: int
    length: int
    dims: tuple[int, ...]
    data_type: int


def external_info(tensor) -> dict:
    return {e.key: e.value for e in tensor.external_data}


def make_placeholders(model, base_dir: Path) -> dict[str, Source]:
    """Swap every external initializer of `model` (loaded without its data) for a one-element
    tensor of the same type; returns where each one's real bytes are."""
    onnx = require("onnx", "onnx")
    sources = {}
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = external_info(t)
        path = base_dir / info["location"]
        length = int(info.get("length", path.stat().st_size - int(info.get("offset", 0))))
        sources[t.name] = Source(str(path), int(info.get("offset", 0)), length, tuple(t.dims),
                                 t.data_type)
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
        del t.dims[:]
        t.dims.append(1)
        t.raw_data = np.zeros(1, _numpy_type(t.data_type)).tobytes()
    return sources


def write_weights(model, sources: dict[str, Source], data_path: Path,
                  inline_limit: int = 1024) -> None:
    """Fill `model`'s placeholders from `sources` (cast to each initializer's current type) and
    move them, with every inline initializer over `inline_limit` bytes, into `data_path`; the
    initializers then refer to that file by its name (relative to the graph file)."""
    onnx = require("onnx", "onnx")
    from onnx import numpy_helper

    with open(data_path, "wb") as out:
        for t in model.graph.initializer:
            src = sources.get(t.name)
            if src is not None:
                array = _read(src)
                if t.data_type == onnx.TensorProto.FLOAT16 and src.data_type != t.data_type:
                    array = _fp16(array)
            elif t.data_location != onnx.TensorProto.EXTERNAL and _nbytes(t) > inline_limit:
                array = numpy_helper.to_array(t)
            else:
                continue
            blob = np.ascontiguousarray(array).tobytes()
            pad = -out.tell() % ALIGN
            out.write(b"\0" * pad)
            offset = out.tell()
            out.write(blob)
            t.ClearField("raw_data")
            t.ClearField("float_data")
            t.ClearField("int32_data")
            t.ClearField("int64_data")
            del t.dims[:]
            t.dims.extend(src.dims if src is not None else array.shape)
            t.data_location = onnx.TensorProto.EXTERNAL
            del t.external_data[:]
            for key, value in (("location", data_path.name), ("offset", str(offset)),
                               ("length", str(len(blob)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
        out.flush()
        os.fsync(out.fileno())


def _read(src: Source) -> np.ndarray:
    dtype = _numpy_type(src.data_type)
    count = src.length // np.dtype(dtype).itemsize
    with open(src.location, "rb") as f:
        f.seek(src.offset)
        array = np.fromfile(f, dtype=dtype, count=count)
    return array.reshape(src.dims)


def _fp16(array: np.ndarray) -> np.ndarray:
    """fp32 -> fp16 as onnxruntime's converter does it (tiny values to +-min positive, large
    ones clipped to the largest finite), so streamed and in-memory conversions agree."""
    from onnxruntime.transformers.float16 import convert_np_to_float16

    return convert_np_to_float16(array)


def _nbytes(tensor) -> int:
    return len(tensor.raw_data) or 4 * (len(tensor.float_data) + len(tensor.int32_data)) \
        + 8 * len(tensor.int64_data)


def _numpy_type(data_type: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(data_type)
