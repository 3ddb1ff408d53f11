"""The protocol every runtime implements, and the modes it serves.

A backend serves one (model, head, mode, batch, size, precision). Inputs stay on the host:
token ids [B, 77] int64 and eps [B, 4, h, w] (drawn from seeds exactly as the reference does), so
every backend renders the same image for the same seed. Stages are separate calls so the bench can
time each one; a backend with a fused graph/engine also overrides `run` with one call.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

STAGES = ("tokenize", "text_encoder", "head", "unet_step_1", "unet_step_2", "decode", "copy_out")


@dataclass(frozen=True)
class Mode:
    """What the path computes: the noise source and the number of Euler steps."""

    name: str
    noise: str  # gaussian | hi | pahi
    steps: int


MODES = {m.name: m for m in (Mode("pahi-1step", "pahi", 1), Mode("hi-1step", "hi", 1),
                             Mode("gaussian-1step", "gaussian", 1),
                             Mode("gaussian-2step", "gaussian", 2))}


@dataclass(frozen=True)
class RunConfig:
    """Static shape and precision one backend instance is built for."""

    mode: Mode
    batch: int = 1
    height: int = 512
    width: int = 512
    precision: str = "fp32"  # fp32 | fp16 | bf16 (torch only)


class Backend(ABC):
    """One runtime. Device-side values between stages are whatever the runtime uses."""

    name: ClassVar[str]

    def __init__(self, config: RunConfig):
        self.config = config

    @abstractmethod
    def encode_text(self, ids: np.ndarray) -> Any:
        """ids [B, 77] int64 (host) -> text embeddings [B, 77, D] (device)."""

    @abstractmethod
    def make_noise(self, eps: np.ndarray, text_embeddings: Any) -> Any:
        """eps [B, 4, h, w] (host) -> unit-scale noise mu + sigma * eps (device)."""

    @abstractmethod
    def unet_step(self, index: int, x: Any, text_embeddings: Any) -> Any:
        """Euler step `index` (0-based). Step 0 takes the unit noise (scales by init sigma)."""

    @abstractmethod
    def decode(self, latents: Any) -> Any:
        """x0 latents -> uint8 image [B, H, W, 3] (device)."""

    @abstractmethod
    def to_host(self, image: Any) -> np.ndarray:
        """Device uint8 image -> numpy (the copy-out stage)."""

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA backends); a no-op on the CPU."""

    def close(self) -> None:
        """Release sessions/engines."""

    @property
    def fused(self) -> bool:
        """True when `run` is one fused graph/engine rather than the stages in sequence."""
        return False

    def run(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """End to end: token ids and eps on the host -> uint8 images on the host."""
        return self.run_staged(ids, eps, null_timer)

    def run_staged(self, ids: np.ndarray, eps: np.ndarray, timer: "Timer") -> np.ndarray:
        with timer("text_encoder"):
            emb = self.encode_text(ids)
        with timer("head"):
            x = self.make_noise(eps, emb)
        for i in range(self.config.mode.steps):
            with timer(f"unet_step_{i + 1}"):
                x = self.unet_step(i, x, emb)
        with timer("decode"):
            image = self.decode(x)
        with timer("copy_out"):
            return self.to_host(image)


Timer = Callable[[str], Any]  # timer(stage_name) -> context manager recording that stage


@contextmanager
def null_timer(stage: str) -> Iterator[None]:
    yield


class WallTimer:
    """Per-stage wall-clock timing (monotonic clock); `sync` is called around each stage."""

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self.sync = sync
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
