"""Timing harness: warm-up, then timed iterations, end to end and per stage.

End to end is prompt strings in, uint8 images on the host out, on a monotonic clock (the copy to
the host completes all device work). Stages come from `Pipeline.run_staged` with a timer: CUDA
events for eager torch on a GPU, else the monotonic clock with the backend's synchronize around
each stage. A pipeline with a fused `run` is timed end to end through it, and per stage
separately.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from pahi_rt.runtime.backend import WallTimer

RunFn = Callable[[Sequence[str], Sequence[int]], np.ndarray]


@dataclass
class Timing:
    """Raw measurements of one row (seconds), before the report turns them into a table."""

    e2e: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    peak_memory_mb: float | None = None
    first_call_s: float | None = None  # the first warm-up call (compilation, CUDA-graph capture)
    outputs: list[tuple[list[str], np.ndarray]] = field(default_factory=list)  # for scoring

    def add_stages(self, seconds: dict[str, float]) -> None:
        for k, v in seconds.items():
            self.stages.setdefault(k, []).append(v)


def mean_score(scorers, outputs: list[tuple[list[str], np.ndarray]]) -> float:
    """Mean weighted score over every kept image (uint8 NHWC -> float [0, 1] NCHW)."""
    import torch

    from pahi_rt.pixels import uint8_to_unit

    scores = []
    with torch.no_grad():
        for prompts, images in outputs:
            x = uint8_to_unit(images)
            scores.append(scorers.total(x, prompts).float())
    return float(torch.cat(scores).mean())


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")


class RowRun:
    """One row's timing: warm-up calls, then timed iterations one call at a time, so a bench can
    interleave the iterations of several open rows (round-robin). Prompts cycle; image k of
    the row uses seed k."""

    def __init__(self, e2e: RunFn, staged: Callable | None, prompts: Sequence[str], batch: int,
                 fused: bool, make_timer: Callable[[], WallTimer], memory: "MemoryProbe",
                 keep_outputs: bool = False):
        self.e2e, self.staged, self.prompts, self.batch = e2e, staged, prompts, batch
        self.fused, self.make_timer, self.memory = fused, make_timer, memory
        self.keep_outputs = keep_outputs
        self.timing = Timing()
        self.calls = 0  # calls so far (warm-up and timed): the next call's index

    def _next(self) -> tuple[list[str], list[int]]:
        i, b = self.calls, self.batch
        self.calls += 1
        idx = [(i * b + j) % len(self.prompts) for j in range(b)]
        return [self.prompts[k] for k in idx], [i * b + j for j in range(b)]

    def warm_up(self) -> None:
        """One untimed call (the first one's time is kept: compilation, capture, allocation)."""
        first = self.calls == 0
        t0 = time.perf_counter()
        self.e2e(*self._next())
        if first:
            self.timing.first_call_s = time.perf_counter() - t0

    def iteration(self) -> None:
        """One timed call end to end; per-stage times from the staged path (the same call for a
        staged row, a separate call for a fused one)."""
        p, s = self._next()
        with self.memory.watch():
            if self.staged is not None and not self.fused:
                timer = self.make_timer()
                t0 = time.perf_counter()
                images = self.staged(p, s, timer)
                self.timing.e2e.append(time.perf_counter() - t0)
                self.timing.add_stages(timer.seconds)
            else:
                t0 = time.perf_counter()
                images = self.e2e(p, s)
                self.timing.e2e.append(time.perf_counter() - t0)
                if self.staged is not None:
                    timer = self.make_timer()
                    self.staged(p, s, timer)
                    self.timing.add_stages(timer.seconds)
        self.timing.peak_memory_mb = self.memory.peak_mb
        if self.keep_outputs:
            self.timing.outputs.append((p, images))


def measure(e2e: RunFn, staged: Callable | None, prompts: Sequence[str], batch: int,
            warmup: int, iters: int, fused: bool, make_timer: Callable[[], WallTimer],
            memory: "MemoryProbe", tick: Callable[[], None] = lambda: None,
            keep_outputs: bool = False) -> Timing:
    """Warm up, then time `iters` iterations of one row (no interleaving)."""
    run = RowRun(e2e, staged, prompts, batch, fused, make_timer, memory, keep_outputs)
    for _ in range(warmup):
        run.warm_up()
        tick()
    for _ in range(iters):
        run.iteration()
        tick()
    return run.timing


class MemoryProbe:
    """Peak memory over the watched calls: the CUDA allocator's peak on a GPU; on the CPU the
    process's peak RSS from the standard library: VmHWM of /proc/self/status, reset before each
    call through /proc/self/clear_refs, or where that cannot be reset, VmRSS sampled every 5 ms
    by a thread. MiB; None where neither exists. Rows open side by side (interleaved) share the
    process, so a CPU row's peak includes the rows open beside it."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peak_mb: float | None = None

    def _keep(self, mb: float | None) -> None:
        if mb is not None:
            self.peak_mb = max(self.peak_mb or 0.0, mb)

    @contextmanager
    def watch(self) -> Iterator[None]:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            yield
            self._keep(torch.cuda.max_memory_allocated() / 2**20)
            return
        if _reset_hwm():
            yield
            self._keep(_status_kib("VmHWM") and _status_kib("VmHWM") / 1024)
            return
        peak, stop = [0.0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _status_kib("VmRSS") or 0)
                stop.wait(0.005)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._keep(peak[0] / 1024 if peak[0] else None)


def _status_kib(field: str) -> float | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


class CudaEventTimer:
    """Per-stage GPU time from CUDA events on the current stream (torch backend on a GPU)."""

    def __init__(self):
        self._events: list[tuple[str, object, object]] = []
        self._seconds: dict[str, float] | None = None

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._events.append((stage, start, end))

    @property
    def seconds(self) -> dict[str, float]:
        import torch

        torch.cuda.synchronize()
        out: dict[str, float] = {}
        for stage, start, end in self._events:
            out[stage] = out.get(stage, 0.0) + start.elapsed_time(end) / 1e3
        return out
