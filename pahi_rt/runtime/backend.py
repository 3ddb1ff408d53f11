"""The protocol every runtime implements.

A backend serves one (model, head, mode, batch, size, precision). Inputs come from the host:
token ids [B, 77] int64 and eps [B, 4, h, w] float32 (drawn from seeds exactly as the reference
does), so every backend renders the same image for the same seed. The public `run` and
`run_staged` check those inputs and call the stages; stages are separate calls so the bench can
time each one, and a backend with a fused graph/engine/CUDA graph overrides `_run` with one call.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from ..errors import InputError
from ..specs import Mode, ModelSpec, unet_stage


@dataclass(frozen=True)
class RunConfig:
    """Static shape and precision one backend instance is built for."""

    mode: Mode
    batch: int = 1  # images per call; static backends pad smaller calls up to it
    height: int = 512
    width: int = 512
    precision: str = "fp32"  # fp32 | fp16 | bf16 (torch only)


class Backend(ABC):
    """One runtime. Device-side values between stages are whatever the runtime uses."""

    name: ClassVar[str]
    static_batch: ClassVar[bool] = False  # True: every call runs exactly config.batch images

    def __init__(self, config: RunConfig, spec: ModelSpec):
        self.config = config
        self.spec = spec
        # Euler-ancestral noise of the next run, [steps - 1, B, 4, h, w] float32 on the host
        # (`sampling.draw_step_noise`), set by the pipeline; None: plain Euler (torch only)
        self.step_noise: np.ndarray | None = None

    @abstractmethod
    def encode_text(self, ids: np.ndarray) -> Any:
        """ids [B, *spec.token_ids_shape] int64 (host) -> the UNet's conditioning (device):
        embeddings [B, 77, D], or a `conditioning.Conditioning` for SDXL."""

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
        """Release sessions/engines/graphs."""

    @property
    def fused(self) -> bool:
        """True when `run` is one fused graph/engine/CUDA graph rather than the stages."""
        return False

    def run(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """End to end: token ids and eps on the host -> uint8 images [B, H, W, 3] on the host."""
        n, ids, eps = self.check_inputs(ids, eps)
        return self._run(ids, eps)[:n]

    def run_staged(self, ids: np.ndarray, eps: np.ndarray, timer: "Timer") -> np.ndarray:
        """Like `run`, stage by stage, each stage inside `timer(stage name)`."""
        n, ids, eps = self.check_inputs(ids, eps)
        return self._run_staged(ids, eps, timer)[:n]

    def _run(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        return self._run_staged(ids, eps, null_timer)

    def _run_staged(self, ids: np.ndarray, eps: np.ndarray, timer: "Timer") -> np.ndarray:
        with timer("text_encoder"):
            emb = self.encode_text(ids)
        with timer("head"):
            x = self.make_noise(eps, emb)
        for i in range(self.config.mode.steps):
            with timer(unet_stage(i)):
                x = self.unet_step(i, x, emb)
        with timer("decode"):
            image = self.decode(x)
        with timer("copy_out"):
            return self.to_host(image)

    def distribution(self, text_embeddings: Any) -> tuple[Any, Any] | None:
        """The head's (mu, sigma) [B, 4, h, w] for these embeddings where the backend computes
        them apart from the noise (torch); None: `make_noise` runs the head as one graph."""
        return None

    def run_conditioned(self, text_embeddings: Any, eps: np.ndarray, mu: Any = None,
                        sigma: Any = None) -> np.ndarray:
        """From cached conditioning (`runtime.prompt_cache`): embeddings [B, 77, D] and, when
        given, mu/sigma [B, 4, h, w] (device), eps [B, 4, h, w] (host, already padded to a
        static backend's batch) -> uint8 images [B, H, W, 3] on the host. Stage by stage."""
        if mu is None:
            x = self.make_noise(eps, text_embeddings)
        else:
            x = self.noise_from(mu, sigma, eps)
        for i in range(self.config.mode.steps):
            x = self.unet_step(i, x, text_embeddings)
        return self.to_host(self.decode(x))

    def noise_from(self, mu: Any, sigma: Any, eps: np.ndarray) -> Any:
        """mu + sigma * eps (the head's formula) for backends whose `distribution` gives them."""
        raise NotImplementedError(f"{self.name} runs its head as one graph")

    def check_inputs(self, ids, eps) -> tuple[int, np.ndarray, np.ndarray]:
        """(images asked for, ids int64, eps float32), checked against this backend's shapes;
        a static backend gets both padded to its batch (the padding is cut from the output)."""
        cfg = self.config
        latent = self.spec.latent_shape(cfg.height, cfg.width)
        ids, eps = np.asarray(ids), np.asarray(eps)
        per_image = self.spec.token_ids_shape
        n = ids.shape[0] if ids.ndim == 1 + len(per_image) else -1
        if ids.shape != (n, *per_image) or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"{self.name}: token ids must be integers "
                             f"[B, {', '.join(map(str, per_image))}], got {ids.dtype} "
                             f"{list(ids.shape)}")
        if eps.shape != (n, *latent) or not np.issubdtype(eps.dtype, np.floating):
            raise InputError(f"{self.name}: eps must be float [{n}, {', '.join(map(str, latent))}]"
                             f", got {eps.dtype} {list(eps.shape)}")
        if not 1 <= n <= cfg.batch:
            raise InputError(f"{self.name}: batch {n} outside 1..{cfg.batch} (this backend was "
                             f"opened for batch {cfg.batch})")
        ids, eps = ids.astype(np.int64, copy=False), eps.astype(np.float32, copy=False)
        if self.static_batch and n < cfg.batch:
            pad = cfg.batch - n
            ids = np.concatenate([ids, np.repeat(ids[-1:], pad, 0)])
            eps = np.concatenate([eps, np.repeat(eps[-1:], pad, 0)])
        return n, ids, eps


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
