"""The torch backend: the reference sampler's functions, stage by stage (eager)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import conditioning, sampling
from ..specs import NAMES
from .backend import Backend, RunConfig, TextOutputs


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, config: RunConfig, components, noise_source=sampling.gaussian):
        super().__init__(config, components.spec)
        self.comps = components  # shared with the loaded model: closing drops the reference
        self.noise_source = noise_source  # the pipeline's own copy of the head
        self.schedule = sampling.Schedule.from_spec(components.spec.scheduler, config.mode.steps)
        self.device = components.device

    @torch.inference_mode()
    def _encode_text_impl(self, ids: np.ndarray) -> TextOutputs:
        cond = sampling.encode_prompts(self.comps, torch.from_numpy(ids))
        return conditioning.by_name(cond, self.spec, self.config.height, self.config.width)

    @torch.inference_mode()
    def _make_noise_impl(self, eps: np.ndarray, text: TextOutputs) -> Any:
        e = torch.from_numpy(eps).to(self.device, self.comps.dtype)
        return self.noise_source(e, text[NAMES.text_embeddings])

    @torch.inference_mode()
    def _distribution_impl(self, text: TextOutputs) -> tuple[Any, Any] | None:
        head_distribution = getattr(self.noise_source, "distribution", None)
        return (None if head_distribution is None
                else head_distribution(text[NAMES.text_embeddings]))

    @torch.inference_mode()
    def _noise_from_impl(self, mu: Any, sigma: Any, eps: np.ndarray) -> Any:
        e = torch.from_numpy(eps).to(self.device, self.comps.dtype)
        return mu + sigma * e  # NoiseHead.forward / GlobalPrior.forward

    @torch.inference_mode()
    def _unet_step_impl(self, index: int, x: Any, text: TextOutputs) -> Any:
        noise = None if self.step_noise is None else torch.as_tensor(
            self.step_noise[index:index + 1]).to(self.device, self.comps.dtype)
        return sampling.denoise(self.comps.unet, x, conditioning.from_names(text, self.spec),
                                self.schedule.step(index), noise)

    @torch.inference_mode()
    def _decode_impl(self, latents: Any) -> Any:
        return sampling.to_uint8(sampling.decode(self.comps.decoder, latents,
                                                 self.comps.spec.latent_scale))

    def _to_host_impl(self, image: Any) -> np.ndarray:
        return image.cpu().numpy()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _close_impl(self) -> None:
        self.synchronize()  # nothing queued may still read what is dropped
        self.comps = self.noise_source = None
