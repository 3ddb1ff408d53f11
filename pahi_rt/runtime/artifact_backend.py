"""Shared logic of backends that run exported artifacts (onnxruntime, TensorRT).

Values between graphs are torch tensors on the backend's device, so the Euler update and the
[-1, 1] -> uint8 step are `sampling.euler_step` / `sampling.to_uint8` themselves, in float32, as
in the reference. A subclass only says how to run one graph (`_infer_impl`: every output by
name) and what inputs a graph declares (`_graph_inputs_impl`, which the public `infer` checks
feeds against).
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
import torch

from .. import conditioning, sampling
from ..artifacts.manifest import find_artifact, read_manifest
from ..errors import ArtifactError, BackendError, InputError
from ..specs import GRAPHS, NAMES, ModelSpec
from .backend import Backend, RunConfig, TextOutputs


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
        self._inputs: dict[str, dict[str, tuple]] = {}  # graph -> its inputs (graph_inputs)

    def infer(self, graph: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run graph `graph` (a component graph or a fused one) on named device tensors;
        returns EVERY output by name (device tensors valid until the next call of the same
        graph). InputError when the names, ranks, static sizes or device do not fit the graph."""
        self.check_open()
        self._check_feeds(graph, feeds)
        return self._infer_impl(graph, feeds)

    def graph_inputs(self, graph: str) -> dict[str, tuple]:
        """Input name -> shape (None for a free axis) as the graph declares them (cached)."""
        self.check_open()
        if graph not in self._inputs:
            self._inputs[graph] = self._graph_inputs_impl(graph)
        return self._inputs[graph]

    def _check_feeds(self, graph: str, feeds: dict) -> None:
        want = self.graph_inputs(graph)
        if set(feeds) != set(want):
            raise InputError(f"{self.name}: graph '{graph}' takes {', '.join(want)}; got "
                             f"{', '.join(feeds) or 'nothing'}")
        for name, value in feeds.items():
            shape = tuple(getattr(value, "shape", ()))
            if len(shape) != len(want[name]) or any(d is not None and d != s
                                                    for d, s in zip(want[name], shape)):
                dims = ", ".join("?" if d is None else str(d) for d in want[name])
                raise InputError(f"{self.name}: {graph} input {name} must be [{dims}], got "
                                 f"{list(shape)}")
            self._check_device(name, value)

    @abstractmethod
    def _infer_impl(self, graph: str, feeds: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        """Run one graph (checked feeds); every output by name."""

    @abstractmethod
    def _graph_inputs_impl(self, graph: str) -> dict[str, tuple]:
        """The graph's inputs as `graph_inputs` returns them (opens the graph)."""

    def _close_impl(self) -> None:
        self._inputs.clear()

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _encode_text_impl(self, ids: np.ndarray) -> TextOutputs:
        """The text encoder graph's outputs plus what the host makes (SDXL's time_ids at the
        run's size): the spec's conditioning tensors by name."""
        out = self.infer(GRAPHS.text_encoder, {NAMES.input_ids: self.tensor(ids)})
        cfg = self.config
        return {**out, **conditioning.host_conditioning(self.spec, ids.shape[0], cfg.height,
                                                        cfg.width, device=self.device)}

    def _make_noise_impl(self, eps: np.ndarray, text: TextOutputs) -> torch.Tensor:
        if self.config.mode.noise == "gaussian":
            return self.tensor(eps)
        return self.infer(GRAPHS.head, {NAMES.eps: self.tensor(eps), NAMES.text_embeddings:
                                        text[NAMES.text_embeddings]})[NAMES.noise]

    def _unet_step_impl(self, index: int, x: torch.Tensor, text: TextOutputs) -> torch.Tensor:
        s = self.schedule
        sigma, sigma_next = s.sigmas[index], s.sigmas[index + 1]
        x = x * s.init_sigma if index == 0 else x
        t = torch.full((x.shape[0],), s.timesteps[index], dtype=torch.float32, device=x.device)
        # every text output the UNet graph takes (SDXL's take the pooled embeddings too)
        conds = {k: v for k, v in text.items() if k in self.graph_inputs(GRAPHS.unet)}
        e = self.infer(GRAPHS.unet, {NAMES.sample: sampling.model_input(x, sigma),
                                     NAMES.timestep: t, **conds})[NAMES.noise_pred]
        if not s.ancestral:
            return sampling.euler_step(x, e.float(), sigma, sigma_next, s.prediction_type)
        # Euler-ancestral, as `sampling.denoise`: down to sigma_down, then the seed's noise
        down, up = sampling.ancestral_sigmas(sigma, sigma_next)
        x = sampling.euler_step(x, e.float(), sigma, down, s.prediction_type)
        return x + self._step_noise(index, x.shape[0]) * up if up > 0 else x

    def _step_noise(self, index: int, batch: int) -> torch.Tensor:
        """Row `index` of the pipeline's `step_noise` [B, 4, h, w], padded like eps to a
        static batch."""
        if self.step_noise is None:
            raise BackendError(f"{self.name}: Euler-ancestral at 2+ steps needs the seeds' step "
                               "noise (run through a Pipeline, or set backend.step_noise)")
        z = self.step_noise[index]
        return self.tensor(np.concatenate([z, np.repeat(z[-1:], batch - len(z), 0)]))

    def _decode_impl(self, latents: torch.Tensor) -> torch.Tensor:
        return sampling.to_uint8(self.infer(GRAPHS.decoder, {NAMES.latents: latents})[NAMES.image])

    def _to_host_impl(self, image: torch.Tensor) -> np.ndarray:
        return image.cpu().numpy()

    @property
    def fused(self) -> bool:
        """Whether the directory holds the fused graph of this mode (else `run` is staged)."""
        return self._fused

    def _run_impl(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """One call of the fused graph named after the mode (e.g. `pahi-1step`), or the stages
        in sequence when only the component graphs were exported."""
        if not self.fused:
            return super()._run_impl(ids, eps)
        image = self.infer(self.config.mode.name, {NAMES.input_ids: self.tensor(ids),
                                                   NAMES.eps: self.tensor(eps)})[NAMES.image]
        return self._to_host_impl(image)


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
