"""`pahi-rt bench`: latency tables for the PAHI path against one- and two-step baselines."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..cli import app, command
from ..extras import check_extras
from ..errors import InputError

DEFAULT_BACKENDS = "torch,onnxruntime,tensorrt,diffusers"
DEFAULT_MODES = "pahi-1step,gaussian-1step,gaussian-2step"


def _split(value: str, allowed, label: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise InputError(f"{label}: unknown {', '.join(bad) or 'empty list'} "
                         f"(choose from {', '.join(allowed)})")
    return items


def command_line(ctx: typer.Context) -> str:
    """The invocation, rebuilt from the parsed options (non-defaults only), for the results."""
    parts = ["pahi-rt", ctx.info_name or "bench"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default or not param.opts:
            continue
        if isinstance(value, bool):
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        elif isinstance(value, (list, tuple)):
            for item in value:
                parts += [param.opts[0], shlex.quote(str(item))]
        else:
            parts += [param.opts[0], shlex.quote(str(value))]
    return " ".join(parts)


@app.command()
@command
def bench(
    ctx: typer.Context,
    model: str = typer.Option("synthetic", help="Preset, model directory or HF id."),
    decoder: Optional[str] = typer.Option(None, help="AutoencoderTiny dir / HF id / taesd file."),
    head: Optional[Path] = typer.Option(None, help="Head checkpoint; without one, a random head "
                                        "of the right shape (latency does not depend on weights)."),
    backends: str = typer.Option(DEFAULT_BACKENDS, help="Comma list: torch, onnxruntime, "
                                 "tensorrt, diffusers (the stock pipeline reference row)."),
    modes: str = typer.Option(DEFAULT_MODES, help="Comma list: pahi-1step, hi-1step, "
                              "gaussian-1step, gaussian-2step."),
    batch: int = typer.Option(1, min=1),
    height: int = typer.Option(512),
    width: int = typer.Option(512),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16 (bf16: torch only)"),
    device: str = typer.Option("cpu", help="cpu | cuda[:N]"),
    warmup: int = typer.Option(2, min=0),
    iters: int = typer.Option(10, min=1),
    prompts: Optional[Path] = typer.Option(None, help="Prompt file cycled through the runs."),
    artifacts: Optional[Path] = typer.Option(None, help="Exported artifacts dir (onnxruntime / "
                                             "tensorrt); default: export into the cache."),
    fused: bool = typer.Option(True, help="Export the fused graph per mode for onnxruntime/"
                               "tensorrt rows; --no-fused times the component graphs in sequence "
                               "(full-size fp32 fused graphs need more than 24 GiB to export)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON."),
    markdown: Optional[Path] = typer.Option(None, help="Write the markdown tables."),
    plot: Optional[Path] = typer.Option(None, help="Write a PNG chart."),
    scorer: List[str] = typer.Option([], help="Also score the timed images (mean score column, "
                                     "like the paper's Table 2): NAME[@SOURCE][=WEIGHT], "
                                     "repeatable; pickscore, imagereward or module:factory."),
):
    """Time prompt-to-image latency per backend and mode, per stage, against the device floor."""
    check_extras("bench", plot=plot, scorer=scorer)
    from ..io import read_prompt_lines
    from ..runtime.backend import MODES
    from ..specs import check_image_size
    from ..bench.report import markdown as render, write_outputs
    from ..bench.run import REFERENCE, BenchConfig, run_bench
    from ..bench.setup import BackendMaker, load_for_bench

    names = _split(backends, ("torch", "onnxruntime", "tensorrt", REFERENCE), "--backends")
    mode_names = _split(modes, tuple(MODES), "--modes")
    check_image_size(height, width)
    texts = read_prompt_lines(prompts) if prompts else ["a red fox in the snow, photograph"]
    for p in (json_path, markdown, plot):
        if p is not None and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
    cfg = BenchConfig(names, mode_names, batch, height, width, precision, warmup, iters)
    scorers = None
    if scorer:
        from ..noise.scorers import ScorerSet

        scorers = ScorerSet.load(scorer, device)
    comps, heads = load_for_bench(model, decoder, head, mode_names, precision, device, height,
                                  width)
    export_head = next((h for h in heads.values() if h is not None), None)
    maker = BackendMaker(comps, artifacts, export_head, log=lambda m: typer.echo(m, err=True),
                         fused=fused)
    total = len(names) * len(mode_names) * (warmup + iters)
    with typer.progressbar(length=total, label="bench", file=sys.stderr) as bar:
        result = run_bench(comps, heads, cfg, texts, maker,
                           log=lambda m: typer.echo(f"\n{m}", err=True),
                           tick=lambda: bar.update(1), scorers=scorers)
    result["command"] = command_line(ctx)
    result["model"] = model
    typer.echo(render(result))  # the table first: a failing plot must not lose it
    write_outputs(result, json_path, markdown, plot)
