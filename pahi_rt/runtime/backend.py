"""The protocol every runtime implements.

A backend serves one (model, head, mode, batch, size, precision). Inputs come from the host:
token ids [B, *spec.token_ids_shape] int64 ([B, 77]; SDXL [B, 2, 77]) and eps [B, 4, h, w]
float32 (drawn from seeds exactly as the reference does; Euler-ancestral's later noise too, set
as `step_noise` by the pipeline), so every backend renders the same image for the same seed.

As Polygraphy's runners do: every public method checks its inputs against the run
(`input_checks`: a one-line InputError) and calls the `_..._impl` method that does the work;
stages are separate calls so the bench can time each one, and a backend with a fused
graph/engine/CUDA graph overrides `_run_impl` with one call. The text encoder stage returns
the model spec's conditioning tensors by name (`TextOutputs`, `ModelSpec.conditioning`: SD 2.x
text_embeddings; SDXL text_embeddings, text_embeds, time_ids) and the later stages take them.
A backend is a context manager: `close()` (idempotent; `__exit__` calls it, on exceptions too)
releases its sessions, compiled models, engines, CUDA graphs and modules, and a closed backend
refuses every call with a BackendError.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from ..errors import BackendError, InputError
from ..specs import Mode, ModelSpec, RenderShape, ShapeFields, unet_stage
from .input_checks import InputChecks


@dataclass(frozen=True)
class RunConfig(ShapeFields):
    """The mode and the static shape/precision one backend instance is built for. `shape.batch`:
    images per call (static backends pad smaller calls up to it); sizes are resolved."""

    mode: Mode
    shape: RenderShape  # precision: fp32 | fp16 | bf16 (torch only)


TextOutputs = dict  # the text encoder's outputs by tensor name (specs.NAMES), [B, ...] each


class Closing:
    """`with` support for what holds runtime resources: `__exit__` (on exceptions too) calls
    the idempotent `close()`."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Backend(Closing, InputChecks, ABC):
    """One runtime. Device-side values between stages are whatever the runtime uses (torch
    tensors on `device` for every backend here)."""

    name: ClassVar[str]
    static_batch: ClassVar[bool] = False  # True: every call runs exactly config.batch images
    device: Any = None  # torch.device of the values between stages (None: not checked)

    def __init__(self, config: RunConfig, spec: ModelSpec):
        self.config = config
        self.spec = spec
        self.closed = False
        # Euler-ancestral noise of the next run, [steps - 1, B, 4, h, w] float32 on the host
        # (`sampling.draw_step_noise`), set by the pipeline; None: plain Euler (torch only)
        self.step_noise: np.ndarray | None = None

    def __enter__(self) -> "Backend":
        self.check_open()
        return self

    def close(self) -> None:
        """Release sessions/engines/graphs/modules; idempotent. Any later call raises
        BackendError."""
        if not self.closed:
            self.closed = True
            self._close_impl()

    def _close_impl(self) -> None:
        """Drop this backend's references to what it holds (subclasses)."""

    def check_open(self) -> None:
        """BackendError when this backend was closed."""
        if self.closed:
            raise BackendError(f"the {self.name} backend was closed; open a new pipeline")

    def encode_text(self, ids: np.ndarray) -> TextOutputs:
        """ids [B, *spec.token_ids_shape] integer (host) -> the spec's conditioning tensors by
        name (device): {text_embeddings: [B, 77, D]}, SDXL also text_embeds [B, P] and
        time_ids [B, 6] (`conditioning.by_name`)."""
        self.check_open()
        return self._encode_text_impl(self._checked_ids(ids))

    def make_noise(self, eps: np.ndarray, text: TextOutputs) -> Any:
        """eps [B, 4, h, w] float (host) -> unit-scale noise mu + sigma * eps (device)."""
        self.check_open()
        eps = self._checked_eps(eps)
        self._check_text(text, eps.shape[0])
        return self._make_noise_impl(eps, text)

    def unet_step(self, index: int, x: Any, text: TextOutputs) -> Any:
        """Euler step `index` (0-based) of x [B, 4, h, w] (device). Step 0 takes the unit noise
        (scales by init sigma)."""
        self.check_open()
        steps = self.config.mode.steps
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < steps:
            raise InputError(f"{self.name}: step index must be 0..{steps - 1}, got {index!r}")
        self._check_text(text, self._check_latent("x", x))
        return self._unet_step_impl(index, x, text)

    def decode(self, latents: Any) -> Any:
        """x0 latents [B, 4, h, w] (device) -> uint8 image [B, H, W, 3] (device)."""
        self.check_open()
        self._check_latent("latents", latents)
        return self._decode_impl(latents)

    def to_host(self, image: Any) -> np.ndarray:
        """Device uint8 image -> numpy (the copy-out stage)."""
        self.check_open()
        return self._to_host_impl(image)

    def distribution(self, text: TextOutputs) -> tuple[Any, Any] | None:
        """The head's (mu, sigma) [B, 4, h, w] for these text outputs where the backend computes
        them apart from the noise (torch); None: `make_noise` runs the head as one graph."""
        self.check_open()
        self._check_text(text)
        return self._distribution_impl(text)

    def noise_from(self, mu: Any, sigma: Any, eps: np.ndarray) -> Any:
        """mu + sigma * eps (the head's formula) for backends whose `distribution` gives them."""
        self.check_open()
        eps = self._checked_eps(eps)
        for label, value in (("mu", mu), ("sigma", sigma)):
            if self._check_latent(label, value) != eps.shape[0]:
                raise InputError(f"{self.name}: {label} and eps differ in batch")
        return self._noise_from_impl(mu, sigma, eps)

    @abstractmethod
    def _encode_text_impl(self, ids: np.ndarray) -> TextOutputs: ...

    @abstractmethod
    def _make_noise_impl(self, eps: np.ndarray, text: TextOutputs) -> Any: ...

    @abstractmethod
    def _unet_step_impl(self, index: int, x: Any, text: TextOutputs) -> Any: ...

    @abstractmethod
    def _decode_impl(self, latents: Any) -> Any: ...

    @abstractmethod
    def _to_host_impl(self, image: Any) -> np.ndarray: ...

    def _distribution_impl(self, text: TextOutputs) -> tuple[Any, Any] | None:
        return None

    def _noise_from_impl(self, mu: Any, sigma: Any, eps: np.ndarray) -> Any:
        raise BackendError(f"{self.name} runs its head as one graph (no mu/sigma apart)")

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA backends); a no-op on the CPU."""

    @property
    def fused(self) -> bool:
        """True when `run` is one fused graph/engine/CUDA graph rather than the stages."""
        return False

    def run(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """End to end: token ids and eps on the host -> uint8 images [B, H, W, 3] on the host."""
        self.check_open()
        n, ids, eps = self.check_inputs(ids, eps)
        return self._run_impl(ids, eps)[:n]

    def run_staged(self, ids: np.ndarray, eps: np.ndarray, timer: "Timer") -> np.ndarray:
        """Like `run`, stage by stage, each stage inside `timer(stage name)`."""
        self.check_open()
        n, ids, eps = self.check_inputs(ids, eps)
        return self._run_staged_impl(ids, eps, timer)[:n]

    def run_conditioned(self, text: TextOutputs, eps: np.ndarray, mu: Any = None,
                        sigma: Any = None) -> np.ndarray:
        """From cached conditioning (`runtime.prompt_cache`): the text outputs and, when
        given, mu/sigma [B, 4, h, w] (device), eps [B, 4, h, w] (host, already padded to a
        static backend's batch) -> uint8 images [B, H, W, 3] on the host. Stage by stage."""
        self.check_open()
        x = self.make_noise(eps, text) if mu is None else self.noise_from(mu, sigma, eps)
        for i in range(self.config.mode.steps):
            x = self._unet_step_impl(i, x, text)
        return self._to_host_impl(self._decode_impl(x))

    def _run_impl(self, ids: np.ndarray, eps: np.ndarray) -> np.ndarray:
        return self._run_staged_impl(ids, eps, null_timer)

    def _run_staged_impl(self, ids: np.ndarray, eps: np.ndarray, timer: "Timer") -> np.ndarray:
        with timer("text_encoder"):
            text = self._encode_text_impl(ids)
        with timer("head"):
            x = self._make_noise_impl(eps, text)
        for i in range(self.config.mode.steps):
            with timer(unet_stage(i)):
                x = self._unet_step_impl(i, x, text)
        with timer("decode"):
            image = self._decode_impl(x)
        with timer("copy_out"):
            return self._to_host_impl(image)

    def check_inputs(self, ids, eps) -> tuple[int, np.ndarray, np.ndarray]:
        """(images asked for, ids int64, eps float32), checked against this backend's shapes;
        a static backend gets both padded to its batch (the padding is cut from the output)."""
        cfg = self.config
        ids, eps = self._checked_ids(ids), self._checked_eps(eps)
        n = ids.shape[0]
        if eps.shape[0] != n:
            raise InputError(f"{self.name}: {n} token id rows but {eps.shape[0]} eps rows")
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
