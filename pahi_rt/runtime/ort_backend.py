"""The onnxruntime backend: exported ONNX graphs on the CPU, CUDA, TensorRT or TensorRT-RTX EP."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require
from ..export.manifest import verified_artifact
from ..specs import ModelSpec
from .artifact_backend import ArtifactBackend, check_entry
from .backend import RunConfig

# preferred first; only those the installed onnxruntime offers are used
PROVIDERS = ("NvTensorRTRTXExecutionProvider", "TensorrtExecutionProvider",
             "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers(wanted: tuple[str, ...] | None = None) -> list[str]:
    ort = require("onnxruntime", "onnx")
    have = set(ort.get_available_providers())
    return [p for p in (wanted or PROVIDERS) if p in have] or ["CPUExecutionProvider"]


class OrtBackend(ArtifactBackend):
    name = "onnxruntime"

    def __init__(self, config: RunConfig, artifacts: str | Path, spec: ModelSpec,
                 providers: tuple[str, ...] | None = None, threads: int = 0):
        super().__init__(config, artifacts, spec)
        self.ort = require("onnxruntime", "onnx")
        self.providers = available_providers(providers)
        self.threads = threads
        self.sessions: dict[str, Any] = {}

    def session(self, graph: str):
        """The InferenceSession of `graph`, created on first use from a sha256-checked file."""
        if graph not in self.sessions:
            path, entry = verified_artifact(self.directory, graph, "onnx")
            check_entry(entry, self.config)
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.log_severity_level = 3
            self.sessions[graph] = self.ort.InferenceSession(str(path), options,
                                                             providers=self.providers)
        return self.sessions[graph]

    def infer(self, graph: str, feeds: dict[str, Any]) -> Any:
        return self.session(graph).run(None, feeds)[0]

    def to_host(self, image: Any) -> np.ndarray:
        return np.asarray(image)

    def close(self) -> None:
        self.sessions.clear()
