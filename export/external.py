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


def split_inline(path: Path):
    """The graph of an ONNX file whose weights are inline, with every initializer's bytes left in
    the file: initializers become external references to `path` itself (offset, length), found
    by walking the protobuf wire format, so the weights are never loaded (a 1.3 GB text encoder
    cost 2.6 GB just to parse). The result goes on through `make_placeholders`."""
    onnx = require("onnx", "onnx")
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        top = list(_fields(buf, 0, len(buf)))
        g0, g1 = next((s, e) for n, w, s, e in top if n == 7 and w == 2)  # ModelProto.graph
        graph_fields = list(_fields(buf, g0, g1))
        structure = b"".join(_field_bytes(buf, field) for field in graph_fields if field[0] != 5)
        graph = onnx.GraphProto.FromString(structure)
        for n, w, s, e in graph_fields:
            if n == 5 and w == 2:  # GraphProto.initializer
                graph.initializer.append(_reference(buf, s, e, path.name))
        rest = b"".join(_field_bytes(buf, field) for field in top if field[0] != 7)
    model = onnx.ModelProto.FromString(rest)
    model.graph.CopyFrom(graph)
    return model


def _reference(buf, start: int, end: int, location: str):
    """A TensorProto for the serialized tensor at buf[start:end]: everything but raw_data
    parsed, raw_data replaced by an external reference to the same bytes in the file."""
    import onnx

    fields = list(_fields(buf, start, end))
    raw = next(((s, e) for n, w, s, e in fields if n == 9 and w == 2), None)
    tensor = onnx.TensorProto.FromString(b"".join(_field_bytes(buf, f) for f in fields
                                                  if f[0] != 9))
    if raw is not None:
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(raw[0])),
                           ("length", str(raw[1] - raw[0]))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return tensor


def _fields(buf, start: int, end: int):
    """(field number, wire type, value start, value end) of each field in buf[start:end]; the
    header bytes sit just before `value start` (see `_field_bytes`)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(buf, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, pos, after
        pos = after


def _field_bytes(buf, field) -> bytes:
    """The whole serialized field (key, length and value) for re-assembly."""
    number, wire, start, end = field
    header = _encode_varint(number << 3 | wire)
    if wire == 2:
        header += _encode_varint(end - start)
    return header + bytes(buf[start:end])


def _varint(buf, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b, value = value & 0x7F, value >> 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)
