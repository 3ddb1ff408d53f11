"""Shared logic of backends that run exported artifacts (onnxruntime, TensorRT).

The Euler update between UNet calls is the reference sampler's formula on the host in float32;
the decoder's [-1, 1] image becomes uint8 NHWC exactly as `sampling.to_uint8` rounds it. A
subclass only says how to run one graph (`infer`).
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from ..export import graphs
from ..export.manifest import ArtifactError, find_artifact, read_manifest
from ..sampling import Schedule
from ..specs import NAMES, ModelSpec
from .backend import Backend, RunConfig


class ArtifactBackend(Backend):
    """Runs the graphs of an artifact directory written by `pahi-rt export`."""

    kind: str = "onnx"  # manifest kind of the artifacts this backend runs

    def __init__(self, config: RunConfig, artifacts: str | Path, spec: ModelSpec):
        super().__init__(config)
        self.directory = Path(artifacts)
        self.schedule = Schedule.from_spec(spec.scheduler, config.mode.steps)
        manifest = check_manifest(self.directory, config)
        # read once: `run` is the per-image path and must not touch the disk for this
        self._fused = find_artifact(manifest, config.mode.name, self.kind) is not None

    @abstractmethod
    def infer(self, graph: str, feeds: dict[str, Any]) -> Any:
        """Run graph `graph` on named inputs; returns its single output."""

    def encode_text(self, ids: np.ndarray) -> Any:
        return self.infer(graphs.TEXT_ENCODER, {NAMES.input_ids: ids.astype(np.int64)})

    def make_noise(self, eps: np.ndarray, text_embeddings: Any) -> Any:
        eps = np.ascontiguousarray(eps, dtype=np.float32)
        if self.config.mode.noise == "gaussian":
            return self.as_device(eps)
        return self.infer(graphs.HEAD, {NAMES.eps: eps, NAMES.text_embeddings: text_embeddings})

    def unet_step(self, index: int, x: Any, text_embeddings: Any) -> Any:
        s = self.schedule
        sigma, sigma_next = s.sigmas[index], s.sigmas[index + 1]
        x = x * s.init_sigma if index == 0 else x
        t = self.as_device(np.full((x.shape[0],), s.timesteps[index], dtype=np.float32))
        e = self.infer(graphs.UNET, {NAMES.sample: x / ((sigma**2 + 1) ** 0.5),
                                     NAMES.timestep: t, NAMES.text_embeddings: text_embeddings})
        if s.prediction_type == "epsilon":
            x0 = x - sigma * e
        else:
            x0 = e * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
        return x + (x - x0) / sigma * (sigma_next - sigma)

    def decode(self, latents: Any) -> Any:
        image = self.infer(graphs.DECODER, {NAMES.latents: latents})
        return self.image_to_uint8(image)

    @property
    def fused(self) -> bool:
        """Whether the directory holds the fused graph of this mode (else `run` is staged)."""
        return self._fused

    def run(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """One call of the fused graph named after the mode (e.g. `pahi-1step`), or the stages
        in sequence when only the component graphs were exported."""
        if not self.fused:
            return super().run(ids, eps)
        image = self.infer(self.config.mode.name, {
            NAMES.input_ids: ids.astype(np.int64),
            NAMES.eps: np.ascontiguousarray(eps, dtype=np.float32)})
        return self.to_host(image)

    def as_device(self, array: np.ndarray) -> Any:
        return array

    def image_to_uint8(self, image):
        x = np.clip(image.astype(np.float32) / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
        return np.round(x * 255).astype(np.uint8)


def check_entry(entry: dict, config: RunConfig) -> dict:
    """Refuse one artifact whose precision or image size differs from the run's."""
    want = (config.precision, config.height, config.width)
    have = (entry.get("precision"), entry.get("height", config.height),
            entry.get("width", config.width))
    if have != want:
        raise ArtifactError(f"{entry['path']} is {have}, this run needs {want}; export again")
    return entry


def check_manifest(directory: Path, config: RunConfig) -> dict:
    """The directory's manifest, checked against the run's shape and precision."""
    manifest = read_manifest(directory)
    if not manifest["artifacts"]:
        raise ArtifactError(f"{directory}: no artifacts (run `pahi-rt export --out {directory}`)")
    want = {"height": config.height, "width": config.width, "precision": config.precision}
    have = {k: manifest.get(k) for k in want}
    batch_ok = manifest.get("batch") == config.batch or (
        config.batch <= (manifest.get("max_batch") or 0))
    if have != want or not batch_ok:
        raise ArtifactError(f"{directory} holds {have} batch {manifest.get('batch')}, but this run "
                            f"needs {want} batch {config.batch}; export again with those options")
    return manifest
