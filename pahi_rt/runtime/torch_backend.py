"""The torch backend: the reference sampler's functions, stage by stage (eager)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import sampling
from .backend import Backend, RunConfig


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, config: RunConfig, components, noise_source=sampling.gaussian):
        super().__init__(config, components.spec)
        self.comps = components
        self.noise_source = noise_source
        self.schedule = sampling.Schedule.from_spec(components.spec.scheduler, config.mode.steps)
        self.device = components.device

    @torch.inference_mode()
    def encode_text(self, ids: np.ndarray) -> Any:
        return sampling.encode_prompts(self.comps, torch.from_numpy(ids))

    @torch.inference_mode()
    def make_noise(self, eps: np.ndarray, text_embeddings: Any) -> Any:
        e = torch.from_numpy(eps).to(self.device, self.comps.dtype)
        return self.noise_source(e, text_embeddings)

    @torch.inference_mode()
    def distribution(self, text_embeddings: Any) -> tuple[Any, Any] | None:
        head_distribution = getattr(self.noise_source, "distribution", None)
        return None if head_distribution is None else head_distribution(text_embeddings)

    @torch.inference_mode()
    def noise_from(self, mu: Any, sigma: Any, eps: np.ndarray) -> Any:
        e = torch.from_numpy(eps).to(self.device, self.comps.dtype)
        return mu + sigma * e  # NoiseHead.forward / GlobalPrior.forward

    @torch.inference_mode()
    def unet_step(self, index: int, x: Any, text_embeddings: Any) -> Any:
        s = self.schedule
        one = sampling.Schedule(s.timesteps[index:index + 1], s.sigmas[index:index + 2],
                                s.init_sigma if index == 0 else 1.0, s.prediction_type,
                                s.ancestral)
        noise = None if self.step_noise is None else torch.as_tensor(
            self.step_noise[index:index + 1]).to(self.device, self.comps.dtype)
        return sampling.denoise(self.comps.unet, x, text_embeddings, one, noise)

    @torch.inference_mode()
    def decode(self, latents: Any) -> Any:
        return sampling.to_uint8(sampling.decode(self.comps.decoder, latents,
                                                 self.comps.spec.latent_scale))

    def to_host(self, image: Any) -> np.ndarray:
        return image.cpu().numpy()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
