"""The TensorRT backend: engines from `pahi-rt export` run on a CUDA GPU (tensorrt or
tensorrt_rtx, whichever `export.engine.trt_module` finds). Device buffers are torch CUDA tensors.

Each engine is sha256-checked against the manifest and asked whether it fits this GPU and
TensorRT version (`export.engine.check_engine`) before it is deserialised. With TensorRT for RTX,
contexts capture the whole graph as a CUDA graph (`CudaGraphStrategy.WHOLE_GRAPH_CAPTURE`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..export.engine import RTX, check_engine, trt_module
from ..export.manifest import verified_artifact
from ..specs import ModelSpec
from .artifact_backend import ArtifactBackend, check_entry
from .backend import RunConfig


class TrtBackend(ArtifactBackend):
    name = "tensorrt"
    kind = "engine"

    def __init__(self, config: RunConfig, artifacts: str | Path, spec: ModelSpec,
                 device: int = 0):
        import torch

        if not torch.cuda.is_available():
            raise InputError("--backend tensorrt needs a CUDA GPU (torch sees none); use "
                             "--backend onnxruntime on the CPU")
        super().__init__(config, artifacts, spec)
        self.torch = torch
        self.trt, self.flavour = trt_module()
        self.device = torch.device("cuda", device)
        self.stream = torch.cuda.Stream(self.device)
        self.runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.contexts: dict[str, tuple[Any, Any]] = {}

    def context(self, graph: str):
        """(engine, execution context) of `graph`, loaded once after the checks."""
        if graph not in self.contexts:
            path, entry = verified_artifact(self.directory, graph, "engine")
            data = path.read_bytes()
            check_entry(entry, self.config)
            check_engine(data, entry)
            engine = self.runtime.deserialize_cuda_engine(data)
            if self.flavour == RTX:
                runtime_config = engine.create_runtime_config()
                runtime_config.cuda_graph_strategy = self.trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
                ctx = engine.create_execution_context(runtime_config)
            else:
                ctx = engine.create_execution_context()
            self.contexts[graph] = (engine, ctx)
        return self.contexts[graph]

    def _torch_dtype(self, trt_dtype):
        t, d = self.torch, self.trt.DataType
        return {d.FLOAT: t.float32, d.HALF: t.float16, d.INT64: t.int64, d.INT32: t.int32,
                d.UINT8: t.uint8, d.BOOL: t.bool}[trt_dtype]

    def infer(self, graph: str, feeds: dict[str, Any]) -> Any:
        engine, ctx = self.context(graph)
        keep, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = self._torch_dtype(engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                value = self.as_device(feeds[name]).to(dtype).contiguous()
                ctx.set_input_shape(name, tuple(value.shape))
                keep.append(value)
            else:
                value = self.torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype,
                                         device=self.device)
                outputs.append(value)
            ctx.set_tensor_address(name, value.data_ptr())
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {graph}")
        self.stream.synchronize()
        return outputs[0].float() if outputs[0].is_floating_point() else outputs[0]

    def as_device(self, array: Any) -> Any:
        if isinstance(array, np.ndarray):
            return self.torch.from_numpy(array).to(self.device)
        return array

    def image_to_uint8(self, image):
        x = (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        return (x * 255).round().to(self.torch.uint8)

    def to_host(self, image: Any) -> np.ndarray:
        return image.cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.contexts.clear()
