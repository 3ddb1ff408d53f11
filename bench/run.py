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
from pahi_rt.export.first_use import export_on_first_use
from pahi_rt.runtime.backend import WallTimer
from pahi_rt.runtime.pipeline import LoadedModel, PipelineConfig, open_pipeline
from pahi_rt.specs import MODES

from . import floor
from .harness import CudaEventTimer, MemoryProbe, RowRun, mean_score
from .report import make_row

from .rows import REFERENCE, ROW_NAMES, VARIANTS  # noqa: F401 (the row names' home)


@dataclass(frozen=True)
class BenchConfig:
    backends: tuple[str, ...]  # keys of VARIANTS, or REFERENCE
    modes: tuple[str, ...]  # keys of MODES
    batches: tuple[int, ...] = (1,)
    height: int = 512
    width: int = 512
    precision: str = "fp32"  # or "auto": per row, what `cpu.auto_precision` picks
    warmup: int = 2
    iters: int = 10
    test_time: object = None  # noise.test_time.TestTime: best-of-N / refinement per image
    interleave: bool = True  # timed iterations round-robin over the rows open together
    calibration: tuple[str, ...] | None = None  # openvino int8 calibration prompts
    fused_stages: bool = True  # fused rows also time their stages (component graphs beside)


@dataclass
class OpenRow:
    """A row opened and warmed up, waiting for its timed iterations."""

    label: dict
    run: RowRun
    close: Callable[[], list]
    open_s: float
    precision: str


def run_bench(model: LoadedModel, config: BenchConfig, prompts: Sequence[str],
              log: Callable[[str], None] = print, tick: Callable[[], None] = lambda: None,
              scorers=None, artifacts=None, on_row: Callable[[dict], None] = lambda r: None
              ) -> dict:
    """Measure every row; returns the JSON-ready result (rows, machine, work, skipped).

    Rows are opened and warmed up one after another and kept open while the memory check
    says the next one fits beside them; then the open group's timed iterations run
    round-robin (row A, B, C, A, B, C, ...), so load from other processes lands on every row
    of the group alike and ratios within a group hold on a shared machine. A row that does not
    fit beside the open ones starts the next group. `on_row(result so far)` is called after
    each group (the CLI writes partial results)."""
    peaks = floor.measure_peaks(model.device, "fp32" if config.precision == "auto"
                                else config.precision)
    head = model.export_head
    works = {b: floor.stage_work(model.base, head, b, config.height, config.width,
                                 "fp32" if config.precision == "auto" else config.precision)
             for b in config.batches}
    rows, skipped = [], []
    result = {"rows": rows, "skipped": skipped}
    todo = [(batch, name, MODES[m]) for batch in config.batches for name in config.backends
            for m in config.modes]
    group: list[OpenRow] = []
    groups = 0
    try:
        while todo or group:
            if todo:
                batch, name, mode = todo[0]
                opened = _open_row(model, config, name, mode, batch, prompts, log, scorers,
                                   artifacts, beside=len(group))
                if opened is None:  # does not fit beside the open rows: measure those first
                    pass
                else:
                    todo.pop(0)
                    if isinstance(opened, OpenRow):
                        group.append(opened)
                    else:
                        skipped.append(opened)
                    tick()
                    if todo and config.interleave:
                        continue
            if group:
                groups += 1
                rows += _time_group(group, config, groups, peaks, works, scorers, log, tick)
                group = []
            # the group's sessions/compiled graphs go before the next group opens its own: at full
            # size two modes' onnxruntime sessions do not fit beside each other in 24 GiB
            release(model)
            on_row(_result(result, model, config, peaks, works, scorers))
    finally:  # a bug or Ctrl-C mid-group: its pipelines are released all the same
        for row in group:
            row.close()
    return _result(result, model, config, peaks, works, scorers)


def _time_group(group: list[OpenRow], config: BenchConfig, number: int, peaks, works,
                scorers, log, tick) -> list[dict]:
    """Timed iterations round-robin over the group's rows, then each row's JSON row."""
    names = ", ".join(f"{r.label['backend']} {r.label['mode']}" for r in group)
    log(f"group {number}: timing {len(group)} row(s) round-robin, {config.iters} iteration(s) "
        f"each: {names}")
    failed: dict[int, str] = {}
    for _ in range(config.iters):
        for i, row in enumerate(group):
            if i in failed:
                continue
            try:
                row.run.iteration()
            except PahiError as e:
                failed[i] = str(e).splitlines()[0]
            tick()
    out = []
    for i, row in enumerate(group):
        notes = row.close()
        if i in failed:
            log(f"skip {row.label['backend']} {row.label['mode']}: {failed[i]}")
            continue
        timing = row.run.timing
        score = mean_score(scorers, timing.outputs) if scorers is not None else None
        made = make_row(row.label["_mode"], row.label["backend"], row.precision,
                        row.label["batch"], peaks.device, timing,
                        works[row.label["batch"]], peaks, config.iters, config.warmup, score,
                        open_s=row.open_s, notes=notes,
                        fused=row.run.fused)
        made["group"] = number
        out.append(made)
    return out


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


def _cpu_fields() -> dict:
    """The CPU and its inference-relevant features (recorded with every result)."""
    from pahi_rt.cpu import cpu_info

    info = cpu_info()
    return {"cpu": info.model, "cpu_features": list(info.flags), "bf16_units": info.bf16,
            "int8_units": info.int8}


def _result(result: dict, model, config: BenchConfig, peaks, works, scorers) -> dict:
    device = model.device
    return {**result,
            "machine": {"device": peaks.device, "peak_tflops": peaks.flops_per_s / 1e12,
                        "peak_gbps": peaks.bytes_per_s / 1e9,
                        "peak_precision": "fp32" if device.type == "cpu" else config.precision,
                        "torch": torch.__version__, "python": sys.version.split()[0],
                        "threads": torch.get_num_threads(), **_cpu_fields()},
            "interleave": config.interleave,
            "work": {str(b): {k: {"flops": w.flops, "bytes": w.bytes,
                                  "floor_ms": peaks.floor_ms(w)} for k, w in work.items()}
                     for b, work in works.items()},
            "height": config.height, "width": config.width,
            "scorer": str(scorers) if scorers is not None else None}


def _open_row(model, config: BenchConfig, name, mode, batch, prompts, log, scorers, artifacts,
              beside: int):
    """An OpenRow (opened and warmed up), a skipped-row dict {"backend", "mode", "batch",
    "reason"}, or None when it does not fit in memory beside `beside` open rows."""
    from pahi_rt.cpu import auto_precision

    tt = config.test_time
    label_name = f"{name} + {tt.label}" if tt is not None and not tt.plain else name
    label = {"backend": label_name, "mode": mode.name, "batch": batch}
    backend = VARIANTS.get(name, ("torch", {}))[0]
    precision = VARIANTS.get(name, ("", {}))[1].get("precision", config.precision)
    if precision == "auto":
        precision, why = auto_precision(backend, model.device.type)
        log(f"{name}: precision auto: {precision} ({why})")
    t0, close = time.perf_counter(), None
    try:
        if tt is not None and tt.refine is not None and name != "torch":
            raise PahiError(f"--refine runs on the torch backend only, not {name}")
        try:
            _fits(model, config, name, batch, artifacts, precision)
        except PahiError:
            if beside:
                return None
            raise
        e2e, staged, fused, make_timer, close = _runners(model, config, name, mode, batch,
                                                         artifacts, log, precision)
        if tt is not None and not tt.plain:
            e2e, staged, fused = _with_test_time(e2e, model, config, mode, scorers), \
                None, True
        log(f"opening {label_name} {mode.name} batch {batch} ({config.warmup} warm-up)")
        run = RowRun(e2e, staged, prompts, batch, fused, make_timer,
                     MemoryProbe(model.device.type == "cuda"), keep_outputs=scorers is not None)
        for _ in range(config.warmup):
            run.warm_up()
    except BaseException as e:  # this row cannot run here (bugs still raise): release it
        if close is not None:
            close()
        if not isinstance(e, PahiError):
            raise
        log(f"skip {label_name} {mode.name} batch {batch}: {e}")
        return {**label, "reason": str(e).splitlines()[0]}
    return OpenRow({**label, "_mode": mode}, run, close, time.perf_counter() - t0, precision)


def _fits(model: LoadedModel, config: BenchConfig, name: str, batch: int, artifacts,
          precision: str) -> None:
    """Skip (PahiError) a row whose export + run would not fit in memory."""
    from pahi_rt import memory

    backend = VARIANTS.get(name, ("torch", {}))[0]
    memory.check(memory.model_params(model.base.model_id), f"this row ({name}, batch {batch})",
                 {}, height=config.height, width=config.width, batch=batch,
                 precision=precision, backend=backend, device=model.device.type,
                 export=backend != "torch" and artifacts is None, loaded=True,
                 sessions=2 if config.fused_stages and "staged" not in name else 1)


def _runners(model, config: BenchConfig, name, mode, batch, artifacts, log, precision):
    """(e2e fn, staged fn, fused?, timer factory, close) for one row."""
    if name == REFERENCE:
        from .diffusers_row import diffusers_runner

        if mode.noise != "gaussian":
            raise PahiError("the diffusers reference row runs Gaussian noise only")
        comps = model.torch_components(precision)
        run = diffusers_runner(comps, mode.steps, config.height, config.width)
        return run, None, True, None, lambda: []
    backend, overrides = VARIANTS[name]
    cfg = replace(PipelineConfig(backend=backend, mode=mode, batch=batch, height=config.height,
                                 width=config.width, precision=precision,
                                 artifacts=artifacts if backend != "torch" else None,
                                 calibration=config.calibration), **overrides)
    pipe = open_pipeline(model, cfg, log, export=export_on_first_use)
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
    staged = pipe.run_staged if config.fused_stages or not pipe.fused else None
    return pipe, staged, pipe.fused, timer, close


def _with_test_time(pipe, model: LoadedModel, config: BenchConfig, mode, scorers):
    """The row's end-to-end call with best-of-N (any backend) or refinement (torch) inside."""
    import copy

    from pahi_rt import sampling
    from pahi_rt.test_time import search as tt

    cfg = config.test_time
    if cfg.refine is None:
        return lambda prompts, seeds: tt.best_of(pipe, scorers, prompts, seeds,
                                                 cfg.best_of).pixels
    comps = model.torch_components("fp32" if config.precision == "auto" else config.precision)
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
