"""The OpenVINO backend: the exported fp32 ONNX graphs compiled by OpenVINO's CPU plugin.

OpenVINO reads the ONNX files `pahi-rt export` writes (external data and composed fused graphs
included) and compiles them with its own graph compiler and thread scheduling. The run's
precision is OpenVINO's `INFERENCE_PRECISION_HINT` over those fp32 graphs: fp32 (`f32`), bf16
(`bf16`: AMX or AVX512-BF16 units; OpenVINO's own default on such CPUs), or int8: the UNet
replaced by an NNCF post-training-quantized copy (`ov_int8`), the other graphs in fp32, run stage
by stage. Compiled models go to OpenVINO's model cache (`CACHE_DIR`) in a directory keyed by the
graph's sha256, the OpenVINO version, the precision and the CPU, so a second open skips the
compile and a changed graph never meets an old blob.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..artifacts.manifest import verified_artifact
from ..cpu import cpu_info
from ..errors import BackendError, require
from ..io import sha256_json
from ..specs import GRAPHS, ONNX, ModelSpec
from .artifact_backend import ArtifactBackend, check_entry
from .backend import RunConfig

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: what is not quantized runs fp32
CACHE = "openvino-cache"  # folder in the artifact directory


def openvino():
    """The openvino module (MissingDependencyError naming the extra when absent)."""
    return require("openvino", "openvino")


class OpenVinoBackend(ArtifactBackend):
    name = "openvino"

    def __init__(self, config: RunConfig, artifacts: str | Path, spec: ModelSpec,
                 threads: int = 0, fused: bool = True, compiled: dict | None = None,
                 calibration: Sequence[str] | None = None, tokenize=None, log=lambda m: None):
        if config.precision not in HINTS:
            raise BackendError(f"--backend openvino runs {', '.join(HINTS)}, not "
                               f"{config.precision}")
        # the graphs on disk are fp32 whatever OpenVINO computes them in
        self.artifact_config = replace(config, shape=replace(config.shape, precision="fp32"))
        int8 = config.precision == "int8"
        super().__init__(self.artifact_config, artifacts, spec, torch.device("cpu"),
                         fused and not int8)  # int8 quantizes the UNet graph: staged
        self.config = config
        self.ov = openvino()
        self.threads = threads
        self.calibration = calibration  # int8: prompts whose UNet inputs calibrate it
        self.tokenize = tokenize  # int8: prompts -> token ids [B, 77] int64 (numpy)
        self.log = log
        # compiled models by (file, sha256, precision): shared with other backends over the same
        # artifacts when `compiled` is given (a bench opens several rows on one model)
        self.shared = {} if compiled is None else compiled
        self._owns = compiled is None
        self._requests: dict[str, Any] = {}
        self.notes: list[str] = (["int8: UNet quantized (NNCF), other graphs fp32, staged"]
                                 if int8 else [])

    def properties(self) -> dict:
        """Compile properties: precision hint, latency hint, threads, keyed model cache dir."""
        props = {"INFERENCE_PRECISION_HINT": HINTS[self.config.precision],
                 "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = self.threads
        return props

    def cache_dir(self, graph_sha: str) -> Path:
        """The CACHE_DIR for one graph file: keyed by its content, OpenVINO's version, the
        compile properties and the CPU (a blob compiled for AMX does not suit AVX2)."""
        key = sha256_json({"graph": graph_sha, "openvino": self.ov.get_version(),
                           "properties": self.properties(), "cpu": cpu_info().flags})
        return self.directory / CACHE / key[:20]

    def model_file(self, graph: str) -> tuple[Path, str]:
        """(file to compile, its content key): the sha256-checked ONNX graph, or for the UNet
        at int8 the quantized IR made from it (built on first use, refused when stale)."""
        path, entry = verified_artifact(self.directory, graph, ONNX)
        check_entry(entry, self.artifact_config)
        if graph == GRAPHS.unet and self.config.precision == "int8":
            from .ov_int8 import int8_unet

            return int8_unet(self, path, entry, self.calibration, self.log)
        return path, entry["sha256"]

    def request(self, graph: str):
        """The infer request of `graph`, compiled on first use (from OpenVINO's cache when the
        keyed cache dir has it)."""
        self.check_open()
        if graph in self._requests:
            return self._requests[graph]
        path, sha = self.model_file(graph)
        key = ("openvino", str(path.resolve()), sha, self.config.precision, self.threads)
        if key not in self.shared:
            props = {**self.properties(), "CACHE_DIR": str(self.cache_dir(sha))}
            try:
                self.shared[key] = self.ov.Core().compile_model(str(path), "CPU", props)
            except Exception as e:  # noqa: BLE001 - OpenVINO raises plain RuntimeError
                raise BackendError(f"openvino could not compile {path.name}: "
                                   f"{' '.join(str(e).split())[:300]}") from None
        self._requests[graph] = self.shared[key].create_infer_request()
        return self._requests[graph]

    def _graph_inputs_impl(self, graph: str) -> dict[str, tuple]:
        return {p.get_any_name(): tuple(d.get_length() if d.is_static else None
                                        for d in p.get_partial_shape())
                for p in self.request(graph).model_inputs}

    def _infer_impl(self, graph: str, feeds: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        request = self.request(graph)
        request.infer({k: np.ascontiguousarray(v.numpy()) for k, v in feeds.items()},
                      share_inputs=True)
        # copies: the request's output buffers are overwritten by its next call, and images
        # handed to the caller must outlive that (the copy is <1 ms at 512x512)
        return {port.get_any_name(): torch.from_numpy(request.get_tensor(port).data.copy())
                for port in request.model_outputs}

    def _close_impl(self) -> None:
        """Drop the infer requests (and the compiled models, when this backend owns them)."""
        super()._close_impl()
        self._requests.clear()
        if self._owns:
            self.shared.clear()
