"""The compiled torch backend: `torch.compile` (inductor) of each stage, and on a CUDA GPU one
CUDA graph of the whole prompt->image path replayed over static buffers.

Stages are the reference sampler's own functions, compiled, so pixels equal eager within float
tolerance. `run` on CUDA copies ids/eps into static device buffers, replays the captured graph
(text encoder, head, every Euler step, decoder and the uint8 step: one launch) and copies the
uint8 image into pinned host memory. Shapes are static (the batch is padded up), so compiled
code is reused for every call. Inductor's compiled kernels are cached on disk by torch
(TORCHINDUCTOR_CACHE_DIR, which `cache_dir()` points under pahi-rt's cache when unset), so a
second process compiles much faster; `compile_seconds` is what the first call took here.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from .. import sampling
from .torch_backend import TorchBackend


def cache_dir() -> Path:
    """Where inductor keeps compiled kernels across runs (unless TORCHINDUCTOR_CACHE_DIR is set)."""
    base = os.environ.get("PAHI_RT_CACHE", Path.home() / ".cache" / "pahi-rt" / "artifacts")
    path = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", Path(base).parent / "inductor"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path))
    return path


class CompiledTorchBackend(TorchBackend):
    name = "torch"
    static_batch = True  # one compiled graph (and one CUDA graph) per shape

    def __init__(self, config, components, noise_source=sampling.gaussian):
        super().__init__(config, components, noise_source)
        cache_dir()
        comps, scale = components, components.spec.latent_scale
        compile_ = torch.compile  # default inductor mode; CUDA graphs are ours (whole path)
        self._encode = compile_(lambda ids: sampling.encode_text(comps.text_encoder, ids))
        self._noise = noise_source if noise_source is sampling.gaussian else compile_(noise_source)
        self._steps = [compile_(self._step_fn(i)) for i in range(config.mode.steps)]
        self._decode = compile_(lambda x: sampling.to_uint8(sampling.decode(comps.decoder, x,
                                                                            scale)))
        self.graph: torch.cuda.CUDAGraph | None = None
        self.compile_seconds: float | None = None

    def _step_fn(self, index: int):
        s = self.schedule
        one = sampling.Schedule(s.timesteps[index:index + 1], s.sigmas[index:index + 2],
                                s.init_sigma if index == 0 else 1.0, s.prediction_type)
        unet = self.comps.unet
        return lambda x, emb: sampling.denoise(unet, x, emb, one)

    @torch.inference_mode()
    def encode_text(self, ids):
        return self._encode(torch.from_numpy(ids).to(self.device))

    @torch.inference_mode()
    def make_noise(self, eps, text_embeddings):
        return self._noise(torch.from_numpy(eps).to(self.device, self.comps.dtype),
                           text_embeddings)

    @torch.inference_mode()
    def unet_step(self, index, x, text_embeddings):
        return self._steps[index](x, text_embeddings)

    @torch.inference_mode()
    def decode(self, latents):
        return self._decode(latents)

    def _path(self, ids: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Device ids [B, 77] and eps [B, 4, h, w] -> device uint8 image: the whole path."""
        emb = self._encode(ids)
        x = self._noise(eps.to(self.comps.dtype), emb)
        for step in self._steps:
            x = step(x, emb)
        return self._decode(x)

    @torch.inference_mode()
    def _run(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        if self.device.type != "cuda":
            if self.compile_seconds is None:
                t0 = time.perf_counter()
                out = self._path(torch.from_numpy(ids), torch.from_numpy(eps)).numpy()
                self.compile_seconds = time.perf_counter() - t0
                return out
            return self._path(torch.from_numpy(ids), torch.from_numpy(eps)).numpy()
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

    def close(self) -> None:
        self.graph = None
