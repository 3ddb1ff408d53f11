"""Run a whole benchmark: every (backend variant, mode, batch) row on one loaded model, plus the
stock diffusers reference row. Rows open their pipeline through `runtime.pipeline`, the same
path `generate` and `serve` use."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from pahi_rt.errors import PahiError
from pahi_rt.runtime.backend import WallTimer
from pahi_rt.runtime.pipeline import LoadedModel, PipelineConfig, open_pipeline
from pahi_rt.specs import MODES

from . import floor
from .harness import CudaEventTimer, MemoryProbe, mean_score, measure
from .report import make_row

REFERENCE = "diffusers"
# Row name -> (backend, PipelineConfig overrides). "-staged": the component graphs one by one.
VARIANTS = {
    "torch": ("torch", {}), "torch-compile": ("torch", {"compile": True}),
    "onnxruntime": ("onnxruntime", {}), "onnxruntime-staged": ("onnxruntime", {"fused": False}),
    "tensorrt": ("tensorrt", {}), "tensorrt-staged": ("tensorrt", {"fused": False}),
}
ROW_NAMES = tuple(VARIANTS) + (REFERENCE,)


@dataclass(frozen=True)
class BenchConfig:
    backends: tuple[str, ...]  # keys of VARIANTS, or REFERENCE
    modes: tuple[str, ...]  # keys of MODES
    batches: tuple[int, ...] = (1,)
    height: int = 512
    width: int = 512
    precision: str = "fp32"
    warmup: int = 2
    iters: int = 10
    test_time: object = None  # noise.test_time.TestTime: best-of-N / refinement per image


def run_bench(model: LoadedModel, config: BenchConfig, prompts: Sequence[str],
              log: Callable[[str], None] = print, tick: Callable[[], None] = lambda: None,
              scorers=None, artifacts=None, on_row: Callable[[dict], None] = lambda r: None
              ) -> dict:
    """Measure every row; returns the JSON-ready result (rows, machine, work, skipped).
    `on_row(result so far)` is called after each row (the CLI writes partial results)."""
    peaks = floor.measure_peaks(model.device, config.precision)
    head = model.export_head
    works = {b: floor.stage_work(model.base, head, b, config.height, config.width,
                                 config.precision) for b in config.batches}
    rows, skipped = [], []
    result = {"rows": rows, "skipped": skipped}
    for batch in config.batches:
        for name in config.backends:
            for mode_name in config.modes:
                row = _row(model, config, name, MODES[mode_name], batch, prompts, log, tick,
                           scorers, artifacts, peaks, works[batch])
                (rows if "p50_ms" in row else skipped).append(row)
                on_row(_result(result, model, config, peaks, works, scorers))
                # each row's sessions/compiled graphs go before the next row opens its own: at
                # full size two modes' onnxruntime sessions do not fit beside each other in 24 GiB
                release(model)
    return _result(result, model, config, peaks, works, scorers)


def release(model: LoadedModel) -> None:
    """Drop the runtime objects the model's pipelines shared and give cached GPU memory back,
    so the next backend's sessions find room (ORT's cuDNN handles failed without it)."""
    import gc

    from pahi_rt.hostmem import give_back_freed_memory

    model.cache.clear()
    gc.collect()
    give_back_freed_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _result(result: dict, model, config: BenchConfig, peaks, works, scorers) -> dict:
    device = model.device
    return {**result,
            "machine": {"device": peaks.device, "peak_tflops": peaks.flops_per_s / 1e12,
                        "peak_gbps": peaks.bytes_per_s / 1e9,
                        "peak_precision": "fp32" if device.type == "cpu" else config.precision,
                        "torch": torch.__version__, "python": sys.version.split()[0],
                        "threads": torch.get_num_threads()},
            "work": {str(b): {k: {"flops": w.flops, "bytes": w.bytes,
                                  "floor_ms": peaks.floor_ms(w)} for k, w in work.items()}
                     for b, work in works.items()},
            "height": config.height, "width": config.width,
            "scorer": str(scorers) if scorers is not None else None}


def _row(model, config: BenchConfig, name, mode, batch, prompts, log, tick, scorers, artifacts,
         peaks, work) -> dict:
    """One measured row, or {"backend", "mode", "batch", "reason"} when it cannot run here."""
    tt = config.test_time
    if tt is not None and not tt.plain:
        name = f"{name} + {tt.label}"
    label = {"backend": name, "mode": mode.name, "batch": batch}
    t0 = time.perf_counter()
    try:
        base = name.split(" + ")[0]
        if tt is not None and tt.refine is not None and base != "torch":
            raise PahiError(f"--refine runs on the torch backend only, not {base}")
        _fits(model, config, base, batch, artifacts)
        e2e, staged, fused, make_timer, close = _runners(model, config, base, mode, batch,
                                                         artifacts, log)
        if tt is not None and not tt.plain:
            e2e, staged, fused = _with_test_time(e2e, model, config, mode, scorers), \
                None, True
    except PahiError as e:  # this row cannot run here; bugs still raise
        log(f"skip {name} {mode.name} batch {batch}: {e}")
        return {**label, "reason": str(e).splitlines()[0]}
    open_s = time.perf_counter() - t0
    log(f"timing {name} {mode.name} batch {batch} ({config.warmup} warm-up, "
        f"{config.iters} timed)")
    try:
        timing = measure(e2e, staged, prompts, batch, config.warmup, config.iters, fused,
                         make_timer, MemoryProbe(model.device.type == "cuda"), tick,
                         keep_outputs=scorers is not None)
    except PahiError as e:
        log(f"skip {name} {mode.name} batch {batch}: {e}")
        return {**label, "reason": str(e).splitlines()[0]}
    finally:
        notes = close()
    score = mean_score(scorers, timing.outputs) if scorers is not None else None
    return make_row(mode, name, config.precision, batch, peaks.device, timing, work, peaks,
                    config.iters, config.warmup, score, open_s=open_s, notes=notes)


def _fits(model: LoadedModel, config: BenchConfig, name: str, batch: int, artifacts) -> None:
    """Skip (PahiError) a row whose export + run would not fit in memory."""
    from pahi_rt import memory

    backend = VARIANTS.get(name, ("torch", {}))[0]
    memory.check(memory.model_params(model.base.model_id), f"this row ({name}, batch {batch})",
                 {}, height=config.height, width=config.width, batch=batch,
                 precision=config.precision, backend=backend, device=model.device.type,
                 export=backend != "torch" and artifacts is None, loaded=True)


def _runners(model, config: BenchConfig, name, mode, batch, artifacts, log):
    """(e2e fn, staged fn, fused?, timer factory, close) for one row."""
    if name == REFERENCE:
        from .diffusers_row import diffusers_runner

        if mode.noise != "gaussian":
            raise PahiError("the diffusers reference row runs Gaussian noise only")
        comps = model.torch_components(config.precision)
        run = diffusers_runner(comps, mode.steps, config.height, config.width)
        return run, None, True, None, lambda: []
    backend, overrides = VARIANTS[name]
    cfg = replace(PipelineConfig(backend, mode, batch, config.height, config.width,
                                 config.precision, artifacts), **overrides)
    pipe = open_pipeline(model, cfg, log)
    if model.device.type == "cuda" and backend == "torch" and not cfg.compile:
        timer = CudaEventTimer
    else:
        timer = lambda: WallTimer(sync=pipe.backend.synchronize)  # noqa: E731

    def close():
        notes = list(getattr(pipe.backend, "notes", []))
        seconds = getattr(pipe.backend, "compile_seconds", None)
        if seconds is not None:
            notes.append(f"compile + capture {seconds:.1f} s (first call)")
        pipe.close()
        return notes
    return pipe, pipe.run_staged, pipe.fused, timer, close


def _with_test_time(pipe, model: LoadedModel, config: BenchConfig, mode, scorers):
    """The row's end-to-end call with best-of-N (any backend) or refinement (torch) inside."""
    import copy

    from pahi_rt import sampling
    from pahi_rt.noise import test_time as tt

    cfg = config.test_time
    if cfg.refine is None:
        return lambda prompts, seeds: tt.best_of(pipe, scorers, prompts, seeds,
                                                 cfg.best_of).pixels
    comps = model.torch_components(config.precision)
    head = model.head(mode.noise)
    source = sampling.gaussian if head is None else copy.deepcopy(head).to(comps.device,
                                                                          comps.dtype)
    schedule = sampling.Schedule.from_spec(comps.spec.scheduler, mode.steps)
    shape = model.spec.latent_shape(config.height, config.width)

    def run(prompts, seeds):
        eps = sampling.draw_eps(seeds, shape)
        return tt.refine(comps, source, scorers, prompts, eps, cfg.refine, schedule
                         ).pixels.numpy()
    return run
