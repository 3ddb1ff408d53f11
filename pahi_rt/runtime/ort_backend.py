"""The onnxruntime backend: exported ONNX graphs on the CPU or a CUDA GPU.

Provider order on a CUDA device: the TensorRT-RTX plugin EP when `onnxruntime-ep-nv-tensorrt-rtx`
is installed (registered through ORT's plugin-EP API), then CUDA, then CPU for what the others
do not take. On the CPU: the CPU EP alone.

On CUDA every graph runs through IO binding on device buffers that this backend owns: inputs are
copied into fixed buffers and outputs land in fixed buffers, so no host round trip happens between
stages, and with static shapes ORT can capture each graph as a CUDA graph (`enable_cuda_graph`),
which needs exactly such fixed addresses. When a graph cannot be captured (a node ORT placed on
the CPU, say), its session is rebuilt without CUDA graphs and the reason is kept in `notes`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts.manifest import verified_artifact
from ..errors import BackendError, require
from ..specs import ModelSpec
from .artifact_backend import ArtifactBackend, check_entry
from .backend import RunConfig

RTX_EP, CUDA_EP, CPU_EP = ("NvTensorRTRTXExecutionProvider", "CUDAExecutionProvider",
                           "CPUExecutionProvider")
_ONNX_TO_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16,
                  "tensor(int64)": torch.int64, "tensor(int32)": torch.int32,
                  "tensor(uint8)": torch.uint8}


def cuda_providers(cuda_graph: bool, device_id: int = 0) -> list:
    """CUDA then CPU providers of the installed onnxruntime (MissingDependencyError: none)."""
    ort = require("onnxruntime", "gpu")
    if CUDA_EP not in ort.get_available_providers():
        raise BackendError("onnxruntime has no CUDAExecutionProvider here; install the GPU build "
                           "with: pip install 'pahi-rt[gpu]' (and no CPU-only onnxruntime)")
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels torch installed
        ort.preload_dlls()
    options = {"device_id": str(device_id), "enable_cuda_graph": "1" if cuda_graph else "0"}
    return [(CUDA_EP, options), CPU_EP]


def add_rtx_plugin(ort, options) -> bool:
    """Register the TensorRT-RTX plugin EP (package onnxruntime-ep-nv-tensorrt-rtx) for the
    session options when it is installed; returns whether it was added."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime_ep_nv_tensorrt_rtx") is None:
        return False
    import onnxruntime_ep_nv_tensorrt_rtx as plugin

    name = plugin.get_ep_name()
    if not any(d.ep_name == name for d in ort.get_ep_devices()):
        ort.register_execution_provider_library(name, plugin.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if devices:
        options.add_provider_for_devices(devices, {})
    return bool(devices)


class OrtBackend(ArtifactBackend):
    name = "onnxruntime"

    def __init__(self, config: RunConfig, artifacts: str | Path, spec: ModelSpec,
                 device: str | torch.device = "cpu", threads: int = 0, cuda_graph: bool = True,
                 fused: bool = True, sessions: dict | None = None):
        super().__init__(config, artifacts, spec, torch.device(device), fused)
        self.ort = require("onnxruntime", "onnx")
        self.threads = threads
        self.cuda = self.device.type == "cuda"
        # CUDA graphs need static shapes: a free batch axis would change addresses and sizes
        self.cuda_graph = cuda_graph and self.cuda and self.static_batch
        self.providers = cuda_providers(False, self.device.index or 0) if self.cuda else [CPU_EP]
        # Sessions and CUDA bindings by (graph file, options): shared with other backends over
        # the same artifacts when `sessions` is given (a CUDA-graph session replays its captured
        # addresses, so it lives and dies with its one binding).
        self.shared = {} if sessions is None else sessions
        self._owns_sessions = sessions is None
        self._sessions: dict[tuple[str, bool], Any] = {}  # this backend's, resolved once
        self.notes: list[str] = []  # e.g. why a graph runs without CUDA graphs

    def session(self, graph: str, cuda_graph: bool = False):
        """The InferenceSession of `graph`, created on first use from a sha256-checked file
        (checked once per backend: `run` is the per-image path)."""
        self.check_open()
        if (graph, cuda_graph) in self._sessions:
            return self._sessions[graph, cuda_graph]
        path, entry = verified_artifact(self.directory, graph, "onnx")
        key = ("session", str(path.resolve()), entry["sha256"], self.cuda, cuda_graph)
        if key not in self.shared:
            check_entry(entry, self.config)
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.log_severity_level = 3
            providers = self.providers
            if self.cuda:
                providers = cuda_providers(cuda_graph, self.device.index or 0)
                if add_rtx_plugin(self.ort, options):
                    providers = None  # the plugin EP was added to the options, CUDA after it
            try:
                self.shared[key] = self.ort.InferenceSession(str(path), options,
                                                             providers=providers)
            except Exception as e:  # noqa: BLE001 - ORT raises its own Fail/RuntimeException
                raise BackendError(f"onnxruntime could not open {path.name} on {self.device}: "
                                   f"{' '.join(str(e).split())[:300]}") from None
        self._sessions[graph, cuda_graph] = self.shared[key]
        return self.shared[key]

    def _graph_inputs_impl(self, graph: str) -> dict[str, tuple]:
        return {i.name: tuple(d if isinstance(d, int) else None for d in i.shape)
                for i in self.session(graph).get_inputs()}

    def _infer_impl(self, graph: str, feeds: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        if not self.cuda:
            session = self.session(graph)
            arrays = {k: np.ascontiguousarray(v.numpy()) for k, v in feeds.items()}
            names = [o.name for o in session.get_outputs()]
            return {k: torch.from_numpy(v) for k, v in zip(names, session.run(names, arrays))}
        shapes = tuple(sorted((k, tuple(v.shape)) for k, v in feeds.items()))
        key = ("binding", graph, str(self.directory.resolve()), shapes)
        binding = self.shared.get(key)
        if binding is not None:
            return binding.run(feeds)
        try:  # the first run of a CUDA-graph session captures it
            binding = self.shared[key] = self._bind(graph, feeds, self.cuda_graph)
            return binding.run(feeds)
        except Exception as e:  # noqa: BLE001 - ORT raises plain errors when capture fails
            if not self.cuda_graph:
                raise
            self.notes.append(f"{graph}: no CUDA graph ({str(e).splitlines()[0][:200]})")
            binding = self.shared[key] = self._bind(graph, feeds, False)
            return binding.run(feeds)

    def _bind(self, graph: str, feeds: dict[str, torch.Tensor], cuda_graph: bool) -> "_Binding":
        return _Binding(self.session(graph, cuda_graph), feeds, self.device, cuda_graph)

    def _close_impl(self) -> None:
        """Drop this backend's sessions (and, when it owns them, the sessions and CUDA
        bindings themselves; shared ones stay with the loaded model until it closes)."""
        super()._close_impl()
        self._sessions.clear()
        if self._owns_sessions:
            self.shared.clear()


class _Binding:
    """A session's IO binding to fixed device buffers (allocated once per input shapes)."""

    def __init__(self, session, feeds: dict[str, torch.Tensor], device: torch.device,
                 cuda_graph: bool):
        self.session, self.cuda_graph = session, cuda_graph
        self.inputs = {k: torch.empty_like(v, device=device).contiguous()
                       for k, v in feeds.items()}
        self.binding = session.io_binding()
        for name, buf in self.inputs.items():
            self._bind(self.binding.bind_input, name, buf)
        batch = self.inputs[next(iter(self.inputs))].shape[0]
        self.outputs = {}  # every output, by name, in its fixed buffer
        for out in session.get_outputs():
            shape = [batch if isinstance(d, str) else d for d in out.shape]
            self.outputs[out.name] = torch.empty(shape, dtype=_ONNX_TO_TORCH[out.type],
                                                 device=device)
            self._bind(self.binding.bind_output, out.name, self.outputs[out.name])

    @staticmethod
    def _bind(bind, name: str, buf: torch.Tensor) -> None:
        element = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
                   torch.int32: np.int32, torch.uint8: np.uint8}[buf.dtype]
        bind(name, buf.device.type, buf.device.index or 0, element, list(buf.shape),
             buf.data_ptr())

    def fits(self, feeds: dict[str, torch.Tensor]) -> bool:
        return all(feeds[k].shape == v.shape for k, v in self.inputs.items())

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, buf in self.inputs.items():
            buf.copy_(feeds[name])
        # ORT runs on its own stream: the copies above (torch's stream) must land first. Run
        # returns once ORT's stream is done, so torch may read the output right after.
        torch.cuda.current_stream(buf.device).synchronize()
        self.session.run_with_iobinding(self.binding)
        return dict(self.outputs)
