"""The TensorRT backend: engines from `pahi-rt export` run on a CUDA GPU (tensorrt or
tensorrt_rtx, whichever `artifacts.tensorrt.trt_module` finds). Device buffers are torch CUDA
tensors.

Each engine is sha256-checked against the manifest and asked whether it fits this GPU and
TensorRT version (`artifacts.tensorrt.check_engine`) before it is deserialised. Input and output
buffers are allocated once per (graph, input shapes) and bound once, so a call only copies its
inputs in and enqueues the engine; with TensorRT for RTX, contexts capture the whole graph as a
CUDA graph (`CudaGraphStrategy.WHOLE_GRAPH_CAPTURE`), which relies on those fixed addresses.
Outputs keep the engine's dtypes (the uint8 step reads them as they are).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..artifacts.manifest import verified_artifact
from ..artifacts.tensorrt import RTX, check_engine, trt_module
from ..errors import BackendError, EngineError
from ..specs import ENGINE, ModelSpec
from .artifact_backend import ArtifactBackend, check_entry
from .backend import RunConfig


class TrtBackend(ArtifactBackend):
    name = "tensorrt"
    kind = ENGINE

    def __init__(self, config: RunConfig, artifacts: str | Path, spec: ModelSpec,
                 device: str | torch.device = "cuda", fused: bool = True):
        if not torch.cuda.is_available():
            raise BackendError("--backend tensorrt needs a CUDA GPU (torch sees none); use "
                               "--backend onnxruntime on the CPU")
        super().__init__(config, artifacts, spec, torch.device(device), fused)
        self.trt, self.flavour = trt_module()
        self.stream = torch.cuda.Stream(self.device)
        self.runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.contexts: dict[str, tuple[Any, Any]] = {}
        # graph -> (input shapes, input buffers, output buffers by name)
        self.buffers: dict[str, tuple[tuple, dict, dict]] = {}

    def context(self, graph: str):
        """(engine, execution context) of `graph`, loaded once after the checks."""
        self.check_open()
        if graph not in self.contexts:
            path, entry = verified_artifact(self.directory, graph, ENGINE)
            data = path.read_bytes()
            check_entry(entry, self.config)
            check_engine(data, entry)
            engine = self.runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise EngineError(f"{path}: TensorRT could not deserialise the engine")
            if self.flavour == RTX:
                runtime_config = engine.create_runtime_config()
                runtime_config.cuda_graph_strategy = self.trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
                ctx = engine.create_execution_context(runtime_config)
            else:
                ctx = engine.create_execution_context()
            self.contexts[graph] = (engine, ctx)
        return self.contexts[graph]

    def _torch_dtype(self, trt_dtype):
        d = self.trt.DataType
        return {d.FLOAT: torch.float32, d.HALF: torch.float16, d.INT64: torch.int64,
                d.INT32: torch.int32, d.UINT8: torch.uint8, d.BOOL: torch.bool}[trt_dtype]

    def _graph_inputs_impl(self, graph: str) -> dict[str, tuple]:
        engine, _ = self.context(graph)
        names = (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))
        return {n: tuple(d if d >= 0 else None for d in engine.get_tensor_shape(n))
                for n in names if engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT}

    def _bind(self, graph: str, feeds: dict[str, torch.Tensor]):
        """Input buffers, output buffers and bound addresses for these input shapes."""
        shapes = tuple((k, tuple(v.shape)) for k, v in sorted(feeds.items()))
        cached = self.buffers.get(graph)
        if cached is not None and cached[0] == shapes:
            return cached
        engine, ctx = self.context(graph)
        inputs, outputs = {}, {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = self._torch_dtype(engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                buf = torch.empty(tuple(feeds[name].shape), dtype=dtype, device=self.device)
                ctx.set_input_shape(name, tuple(buf.shape))
                inputs[name] = buf
            else:
                buf = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype,
                                  device=self.device)
                outputs[name] = buf
            ctx.set_tensor_address(name, buf.data_ptr())
        self.buffers[graph] = (shapes, inputs, outputs)
        return self.buffers[graph]

    def _infer_impl(self, graph: str, feeds: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        _, ctx = self.context(graph)
        _, inputs, outputs = self._bind(graph, feeds)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # producers of feeds
        with torch.cuda.stream(self.stream):
            for name, buf in inputs.items():
                buf.copy_(feeds[name])
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise EngineError(f"TensorRT failed to run {graph}")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)  # consumers of outputs
        return dict(outputs)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def _close_impl(self) -> None:
        """Wait for queued work, then free buffers, contexts before their engines, the
        runtime and the stream."""
        super()._close_impl()
        self.synchronize()
        self.buffers.clear()
        while self.contexts:
            _, (engine, ctx) = self.contexts.popitem()
            del ctx, engine
        self.runtime = self.stream = None
