"""Run a whole benchmark: every (backend, mode) row on one model, plus the diffusers reference."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from pahi_rt.runtime.backend import MODES, RunConfig, WallTimer

from . import floor
from .harness import CudaEventTimer, MemoryProbe, backend_runners, mean_score, measure
from .report import make_row

REFERENCE = "diffusers"


@dataclass(frozen=True)
class BenchConfig:
    backends: tuple[str, ...]  # torch, onnxruntime, tensorrt, diffusers
    modes: tuple[str, ...]  # keys of MODES
    batch: int = 1
    height: int = 512
    width: int = 512
    precision: str = "fp32"
    warmup: int = 2
    iters: int = 10


def run_bench(comps, heads: dict, config: BenchConfig, prompts: Sequence[str],
              make_backend: Callable, log: Callable[[str], None] = print,
              tick: Callable[[], None] = lambda: None, scorers=None) -> dict:
    """Measure every row; returns the JSON-ready result (rows, machine, work, skipped)."""
    device = comps.device
    peaks = floor.measure_peaks(device, config.precision)
    first_head = next((h for h in heads.values() if h is not None), None)
    work = floor.stage_work(comps, first_head, config.batch, config.height, config.width,
                            config.precision)
    rows, skipped = [], []
    for backend_name in config.backends:
        for mode_name in config.modes:
            mode = MODES[mode_name]
            run_cfg = RunConfig(mode, config.batch, config.height, config.width, config.precision)
            try:
                e2e, staged, fused, timer, close = _runners(backend_name, comps, heads, run_cfg,
                                                            make_backend)
            except Exception as e:  # one backend failing must not lose the others' rows
                skipped.append({"backend": backend_name, "mode": mode_name,
                                "reason": str(e).splitlines()[0] if str(e) else repr(e)})
                log(f"skip {backend_name} {mode_name}: {skipped[-1]['reason']}")
                continue
            log(f"timing {backend_name} {mode_name} ({config.warmup} warm-up, "
                f"{config.iters} timed)")
            try:
                timing = measure(e2e, staged, prompts, config.batch, config.warmup,
                                 config.iters, fused, timer, MemoryProbe(device.type == "cuda"),
                                 tick, keep_outputs=scorers is not None)
            finally:
                close()  # free sessions/engines before the next row is built
            score = mean_score(scorers, timing.outputs) if scorers is not None else None
            rows.append(make_row(mode, backend_name, config.precision, config.batch,
                                 peaks.device, timing, work, peaks, config.iters, config.warmup,
                                 score))
    return {"rows": rows, "skipped": skipped,
            "machine": {"device": peaks.device, "peak_tflops": peaks.flops_per_s / 1e12,
                        "peak_gbps": peaks.bytes_per_s / 1e9,
                        "peak_precision": "fp32" if device.type == "cpu" else config.precision,
                        "torch": torch.__version__, "python": sys.version.split()[0],
                        "threads": torch.get_num_threads()},
            "work": {k: {"flops": w.flops, "bytes": w.bytes, "floor_ms": peaks.floor_ms(w)}
                     for k, w in work.items()},
            "height": config.height, "width": config.width,
            "scorer": str(scorers) if scorers is not None else None}


def _runners(backend_name: str, comps, heads: dict, cfg: RunConfig, make_backend: Callable):
    """(e2e fn, staged fn, fused?, timer factory) for one row."""
    if backend_name == REFERENCE:
        from .diffusers_row import diffusers_runner

        if cfg.mode.noise != "gaussian":
            raise ValueError("the diffusers reference row runs Gaussian noise only")
        run = diffusers_runner(comps, cfg.mode.steps, cfg.height, cfg.width)
        return run, None, True, None, lambda: None
    backend = make_backend(backend_name, cfg, heads.get(cfg.mode.noise))
    e2e, staged = backend_runners(backend, comps, cfg.height, cfg.width)
    fused = backend.fused  # a fused graph/engine serves `run`
    on_gpu = comps.device.type == "cuda"
    if on_gpu and backend_name == "torch":
        timer = CudaEventTimer
    else:
        timer = lambda: WallTimer(sync=backend.synchronize)  # noqa: E731
    return e2e, staged, fused, timer, backend.close
