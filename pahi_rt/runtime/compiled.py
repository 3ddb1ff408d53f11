"""The compiled torch backend: `torch.compile` (inductor) of each stage, and on a CUDA GPU one
CUDA graph of the whole prompt->image path replayed over static buffers.

Stages are the reference sampler's own functions, compiled, so pixels equal eager within float
tolerance. `run` on CUDA copies ids/eps into static device buffers, replays the captured graph
(text encoder, head, every Euler step, decoder and the uint8 step: one launch) and copies the
uint8 image into pinned host memory. Shapes are static (the batch is padded up), so compiled
code is reused for every call. Inductor's compiled kernels are cached on disk by torch
(TORCHINDUCTOR_CACHE_DIR, set to `artifacts.cache.inductor_cache_dir()` when unset), so a
second process compiles much faster; `compile_seconds` is what the first call took here.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from .. import sampling
from ..artifacts.cache import inductor_cache_dir
from ..specs import NAMES
from .torch_backend import TorchBackend


class CompiledTorchBackend(TorchBackend):
    name = "torch"
    static_batch = True  # one compiled graph (and one CUDA graph) per shape

    def __init__(self, config, components, noise_source=sampling.gaussian,
                 compiled: dict | None = None):
        super().__init__(config, components, noise_source)
        # torch reads the variable when it compiles: kernels persist beside pahi-rt's cache
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
        # The modules are compiled, not the step functions: the timestep is a tensor input, so
        # one UNet compilation serves every step and mode. `compiled` (kept by the loaded model)
        # shares them between backends of the same components.
        compiled = {} if compiled is None else compiled
        self.unet = _compiled(compiled, components.unet)
        self.text_encoder = _compiled(compiled, components.text_encoder)
        self._noise = noise_source if noise_source is sampling.gaussian else _compiled(
            compiled, noise_source)
        scale, decoder = components.spec.latent_scale, components.decoder
        key = ("decode", id(decoder))
        if key not in compiled:
            compiled[key] = torch.compile(
                lambda x: sampling.to_uint8(sampling.decode(decoder, x, scale)), dynamic=False)
        self._decode = compiled[key]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.compile_seconds: float | None = None

    @torch.inference_mode()
    def _encode_text_impl(self, ids):
        return {NAMES.text_embeddings: sampling.encode_text(
            self.text_encoder, torch.from_numpy(ids).to(self.device))}

    @torch.inference_mode()
    def _make_noise_impl(self, eps, text):
        return self._noise(torch.from_numpy(eps).to(self.device, self.comps.dtype),
                           text[NAMES.text_embeddings])

    @torch.inference_mode()
    def _unet_step_impl(self, index, x, text):
        return sampling.denoise(self.unet, x, text[NAMES.text_embeddings],
                                self.schedule.step(index))

    @torch.inference_mode()
    def _decode_impl(self, latents):
        return self._decode(latents)

    def _path(self, ids: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Device ids [B, 77] and eps [B, 4, h, w] -> device uint8 image: the whole path."""
        emb = sampling.encode_text(self.text_encoder, ids)
        x = self._noise(eps.to(self.comps.dtype), emb)
        x = sampling.denoise(self.unet, x, emb, self.schedule)
        return self._decode(x)

    @torch.inference_mode()
    def _run_impl(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        if self.device.type != "cuda":
            t0 = time.perf_counter()
            out = self._path(torch.from_numpy(ids), torch.from_numpy(eps)).numpy()
            if self.compile_seconds is None:
                self.compile_seconds = time.perf_counter() - t0
            return out
        if self.graph is None:
            self._capture(ids, eps)
        self.static_ids.copy_(torch.from_numpy(ids))
        self.static_eps.copy_(torch.from_numpy(eps))
        self.graph.replay()
        self.host_out.copy_(self.static_out, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return self.host_out.numpy().copy()

    def _capture(self, ids: np.ndarray, eps: np.ndarray) -> None:
        """Compile (first calls) and capture the whole path as one CUDA graph."""
        t0 = time.perf_counter()
        self.static_ids = torch.from_numpy(ids).to(self.device)
        self.static_eps = torch.from_numpy(eps).to(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up (and compilation) off the capture stream
            for _ in range(2):
                self._path(self.static_ids, self.static_eps)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self._path(self.static_ids, self.static_eps)
        self.host_out = torch.empty(self.static_out.shape, dtype=torch.uint8, pin_memory=True)
        torch.cuda.synchronize(self.device)
        self.compile_seconds = time.perf_counter() - t0

    @property
    def fused(self) -> bool:
        return True  # `run` is one compiled path (one CUDA-graph replay on a GPU)

    def _close_impl(self) -> None:
        """Drop the CUDA graph, its static buffers and the compiled modules (the `compiled`
        cache of the loaded model keeps what other backends share)."""
        super()._close_impl()
        self.graph = self.static_ids = self.static_eps = self.static_out = self.host_out = None
        self.unet = self.text_encoder = self._noise = self._decode = None


def _compiled(cache: dict, module: torch.nn.Module):
    """torch.compile(module) once per module (static shapes: the batch is padded)."""
    key = ("module", id(module))
    if key not in cache:
        cache[key] = torch.compile(module, dynamic=False)
    return cache[key]
