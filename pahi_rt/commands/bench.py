"""`pahi-rt bench`: latency tables for the PAHI path against one- and two-step baselines."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..extras import check_extras
from .common import (SCORER_SYNTAX, Artifacts, BestOfOption, Decoder, Device, DtypeAlias,
                     Height, Precision, RefineLr, RefineOption, RefineReg, Width, echo_err, fits,
                     image_size, pick_precision)

DEFAULT_BACKENDS = "torch,onnxruntime,tensorrt,openvino,diffusers"
DEFAULT_MODES = "pahi-1step,gaussian-1step,gaussian-2step"
CALIBRATION_PROMPTS = 8  # openvino-int8: the first N prompts of --calibration-prompts


def split_list(value: str, allowed, label: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise InputError(f"{label}: unknown {', '.join(bad) or 'empty list'} "
                         f"(choose from {', '.join(allowed)})")
    return items


def parse_batches(value: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise InputError(f"--batch: a comma list of positive integers, got '{value}'")
    return tuple(dict.fromkeys(batches))


def command_line(ctx: typer.Context) -> str:
    """The invocation, rebuilt from the parsed options (non-defaults only), for the results."""
    parts = ["pahi-rt", ctx.info_name or "bench"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default or not param.opts or param.hidden:
            continue
        if isinstance(value, bool):
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        elif isinstance(value, (list, tuple)):
            for item in value:
                parts += [param.opts[0], shlex.quote(str(item))]
        else:
            parts += [param.opts[0], shlex.quote(str(value))]
    return " ".join(parts)


def bench(
    ctx: typer.Context,
    model: str = typer.Option("synthetic", help="Preset, model directory or HF id."),
    decoder: Decoder = None,
    head: Optional[Path] = typer.Option(None, help="Head checkpoint; without one, a random head "
                                        "of the right shape (latency does not depend on weights)."),
    backends: str = typer.Option(DEFAULT_BACKENDS, help="Comma list of rows: torch, "
                                 "torch-compile, torch-bf16, onnxruntime, onnxruntime-staged, "
                                 "tensorrt, tensorrt-staged, openvino, openvino-staged, "
                                 "openvino-bf16, openvino-int8, diffusers (the stock pipeline "
                                 "reference). A -bf16/-int8 row runs at that precision."),
    modes: str = typer.Option(DEFAULT_MODES, help="Comma list: pahi-1step, hi-1step, "
                              "gaussian-1step, gaussian-2step."),
    batch: str = typer.Option("1", help="Batch size, or a comma list (e.g. 1,4): rows for each."),
    height: Height = None,
    width: Width = None,
    precision: Precision = "fp32",
    dtype: DtypeAlias = None,
    device: Device = "auto",
    warmup: int = typer.Option(2, min=0, help="Untimed calls per row before timing (first-call "
                               "costs: allocation, kernel selection, compilation)."),
    iters: int = typer.Option(10, min=1, help="Timed calls per row; p50/p90/p99 are over these."),
    interleave: bool = typer.Option(True, help="Time the rows that fit in memory together "
                                    "round-robin (ratios hold under load); --no-interleave: "
                                    "one row after another."),
    fused_stages: bool = typer.Option(True, help="Fused rows also time each stage in a "
                                      "separate staged call (the component graphs open beside "
                                      "the fused one: twice the weights in memory); "
                                      "--no-fused-stages: end to end only (the -staged rows "
                                      "have the stages)."),
    calibration_prompts: Optional[Path] = typer.Option(
        None, help="openvino-int8: prompt file whose first 8 prompts' UNet inputs calibrate the "
        "quantization (default: 8 built-in prompts)."),
    prompts: Optional[Path] = typer.Option(None, help="Prompt file cycled through the runs."),
    artifacts: Artifacts = None,
    fused: bool = typer.Option(True, hidden=True, help="Old switch: --no-fused runs the "
                               "artifact rows as their -staged variants."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON."),
    markdown: Optional[Path] = typer.Option(None, help="Write the markdown tables."),
    plot: Optional[Path] = typer.Option(None, help="Write a PNG chart."),
    scorer: List[str] = typer.Option([], help="Also score the timed images (mean score column, "
                                     f"like the paper's Table 2), repeatable: {SCORER_SYNTAX}."),
    best_of: BestOfOption = 1,
    refine: RefineOption = None,
    refine_lr: RefineLr = 5.0,
    refine_reg: RefineReg = 0.01,
):
    """Time prompt-to-image latency per backend and mode, per stage, against the device floor."""
    check_extras("bench", plot=plot, scorer=scorer)
    # every option is checked before torch is imported (seconds)
    from ..bench.rows import ROW_NAMES
    from ..io import check_output_file
    from ..scorers.spec import parse_scorers
    from ..test_time.options import check_test_time
    from ..prompts import read_prompts
    from ..specs import MODES, RenderShape

    names = split_list(backends, ROW_NAMES, "--backends")
    if not fused:
        names = tuple(dict.fromkeys(n if n in ("torch", "torch-compile", "diffusers") or
                                    n.endswith("-staged") else f"{n}-staged" for n in names))
    mode_names = split_list(modes, tuple(MODES), "--modes")
    height, width = image_size(model, height, width)
    texts = ([p.text for p in read_prompts(prompts)] if prompts
             else ["a red fox in the snow, photograph"])
    calibration = (tuple(p.text for p in read_prompts(calibration_prompts))[:CALIBRATION_PROMPTS]
                   if calibration_prompts else None)
    for p, option in ((json_path, "--json"), (markdown, "--markdown"), (plot, "--plot")):
        check_output_file(p, option)
    test_time = check_test_time(best_of, refine, refine_lr, refine_reg, scorer)
    parse_scorers(scorer)  # syntax errors before any loading
    batches, precision = parse_batches(batch), pick_precision(precision, dtype)
    from ..bench.report import markdown as render, write_outputs
    from ..bench.run import BenchConfig, run_bench
    from ..scorers.scorer_set import ScorerSet
    from ..runtime.pipeline import PipelineConfig, load_model

    cfg = BenchConfig(backends=names, modes=mode_names, batches=batches, height=height,
                      width=width, precision=precision, warmup=warmup, iters=iters,
                      test_time=test_time, interleave=interleave, calibration=calibration,
                      fused_stages=fused_stages)

    fits(model, PipelineConfig(shape=RenderShape(height=height, width=width)), device, run=False,
         decoder=decoder)
    loaded = load_model(model, decoder, device=device, head=head, height=height, width=width,
                        noise=tuple(MODES[m].noise for m in mode_names), random_heads=True,
                        log=echo_err)
    scorers = ScorerSet.load(scorer, loaded.device) if scorer else None
    if test_time.refine is not None:
        scorers.check_differentiable()
    def save(partial: dict) -> dict:  # after every group of rows: nothing is lost
        partial = {**partial, "command": command_line(ctx), "model": model,
                   "decoder": loaded.base.decoder_id}
        write_outputs(partial, json_path, markdown, None)
        return partial
    # progress: one line per step on stderr (no bar: bench output is often logged to a file)
    with loaded:  # the sessions the rows shared are released however the run ends
        result = run_bench(loaded, cfg, texts, log=echo_err, scorers=scorers,
                           artifacts=artifacts, on_row=save)
    result = save(result)
    typer.echo(render(result))  # the table first: a failing plot must not lose it
    if plot:
        write_outputs(result, None, None, plot)
