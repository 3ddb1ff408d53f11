"""Shared logic of backends that run exported artifacts (onnxruntime, TensorRT).

Values between graphs are torch tensors on the backend's device, so the Euler update and the
[-1, 1] -> uint8 step are `sampling.euler_step` / `sampling.to_uint8` themselves, in float32, as
in the reference. A subclass only says how to run one graph (`infer`).
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
import torch

from .. import sampling
from ..artifacts.manifest import find_artifact, read_manifest
from ..errors import ArtifactError
from ..specs import GRAPHS, NAMES, ModelSpec
from .backend import Backend, RunConfig


class ArtifactBackend(Backend):
    """Runs the graphs of an artifact directory written by `pahi-rt export`."""

    kind: str = "onnx"  # manifest kind of the artifacts this backend runs

    def __init__(self, config: RunConfig, artifacts: str | Path, spec: ModelSpec,
                 device: torch.device, fused: bool = True):
        super().__init__(config, spec)
        self.directory = Path(artifacts)
        self.device = torch.device(device)
        self.schedule = sampling.Schedule.from_spec(spec.scheduler, config.mode.steps)
        manifest = check_manifest(self.directory, config)
        # read once: `run` is the per-image path and must not touch the disk for this
        self._fused = fused and find_artifact(manifest, config.mode.name, self.kind) is not None
        self.static_batch = (manifest.get("max_batch") or 0) <= manifest["batch"]

    @abstractmethod
    def infer(self, graph: str, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run graph `graph` on named device tensors; returns its single output (a device
        tensor that stays valid until the next call of the same graph)."""

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def encode_text(self, ids: np.ndarray) -> torch.Tensor:
        return self.infer(GRAPHS.text_encoder, {NAMES.input_ids: self.tensor(ids)})

    def make_noise(self, eps: np.ndarray, text_embeddings: torch.Tensor) -> torch.Tensor:
        if self.config.mode.noise == "gaussian":
            return self.tensor(eps)
        return self.infer(GRAPHS.head, {NAMES.eps: self.tensor(eps),
                                        NAMES.text_embeddings: text_embeddings})

    def unet_step(self, index: int, x: torch.Tensor, text_embeddings: torch.Tensor
                  ) -> torch.Tensor:
        s = self.schedule
        sigma, sigma_next = s.sigmas[index], s.sigmas[index + 1]
        x = x * s.init_sigma if index == 0 else x
        t = torch.full((x.shape[0],), s.timesteps[index], dtype=torch.float32, device=x.device)
        e = self.infer(GRAPHS.unet, {NAMES.sample: sampling.model_input(x, sigma),
                                     NAMES.timestep: t, NAMES.text_embeddings: text_embeddings})
        return sampling.euler_step(x, e.float(), sigma, sigma_next, s.prediction_type)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return sampling.to_uint8(self.infer(GRAPHS.decoder, {NAMES.latents: latents}))

    def to_host(self, image: torch.Tensor) -> np.ndarray:
        return image.cpu().numpy()

    @property
    def fused(self) -> bool:
        """Whether the directory holds the fused graph of this mode (else `run` is staged)."""
        return self._fused

    def _run(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """One call of the fused graph named after the mode (e.g. `pahi-1step`), or the stages
        in sequence when only the component graphs were exported."""
        if not self.fused:
            return super()._run(ids, eps)
        image = self.infer(self.config.mode.name, {NAMES.input_ids: self.tensor(ids),
                                                   NAMES.eps: self.tensor(eps)})
        return self.to_host(image)


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
