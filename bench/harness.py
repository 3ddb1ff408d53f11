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

    scores = []
    with torch.no_grad():
        for prompts, images in outputs:
            x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255
            scores.append(scorers.total(x, prompts).float())
    return float(torch.cat(scores).mean())


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")


def measure(e2e: RunFn, staged: Callable | None, prompts: Sequence[str], batch: int,
            warmup: int, iters: int, fused: bool, make_timer: Callable[[], WallTimer],
            memory: "MemoryProbe", tick: Callable[[], None] = lambda: None,
            keep_outputs: bool = False) -> Timing:
    """Warm up, then time `iters` iterations; prompts cycle, image k of the run uses seed k.
    With `keep_outputs`, the timed iterations' (prompts, images) are kept for scoring."""
    timing = Timing()

    def batch_at(i):
        idx = [(i * batch + j) % len(prompts) for j in range(batch)]
        return [prompts[k] for k in idx], [i * batch + j for j in range(batch)]

    for i in range(warmup):
        t0 = time.perf_counter()
        e2e(*batch_at(i))
        if i == 0:
            timing.first_call_s = time.perf_counter() - t0
        tick()
    with memory.watch():
        for i in range(iters):
            p, s = batch_at(warmup + i)
            if staged is not None and not fused:
                timer = make_timer()
                t0 = time.perf_counter()
                images = staged(p, s, timer)
                timing.e2e.append(time.perf_counter() - t0)
                timing.add_stages(timer.seconds)
            else:
                t0 = time.perf_counter()
                images = e2e(p, s)
                timing.e2e.append(time.perf_counter() - t0)
                if staged is not None:
                    timer = make_timer()
                    staged(p, s, timer)
                    timing.add_stages(timer.seconds)
            if keep_outputs:
                timing.outputs.append((p, images))
            tick()
    timing.peak_memory_mb = memory.peak_mb
    return timing


class MemoryProbe:
    """Peak memory while timing: CUDA allocator peak on a GPU, else process RSS sampled every
    5 ms by a thread (psutil), reported as the peak in MiB."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peak_mb: float | None = None

    @contextmanager
    def watch(self) -> Iterator[None]:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            yield
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        try:
            import psutil
        except ImportError:
            yield
            return
        proc, peak, stop = psutil.Process(), [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                stop.wait(0.005)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.peak_mb = peak[0] / 2**20


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
