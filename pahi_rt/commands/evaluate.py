"""`pahi-rt eval`: paired win rate of a trained head against Gaussian noise (Tables 1 and 2)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..extras import check_extras
from ..specs import DEFAULT_MODEL
from .common import (SCORER_HELP, BestOfOption, Decoder, Device, DtypeAlias, Model, Precision,
                     RefineLr, RefineOption, RefineReg, pick_precision)
from .options import EvalOptions


def evaluate(
    head: Path = typer.Option(..., help="Head checkpoint dir (from pahi-rt train)."),
    model: Model = DEFAULT_MODEL,
    decoder: Decoder = None,
    scorer: List[str] = typer.Option(["pickscore"], help=SCORER_HELP + " Each is reported "
                                     "on its own (weights are ignored here)."),
    prompts: str = typer.Option(..., help="Test prompts: .txt, .csv/.tsv, .jsonl or HF dataset."),
    prompt_column: Optional[str] = typer.Option(None, help="Column of a .csv/.tsv or dataset."),
    prompt_field: Optional[str] = typer.Option(None, help="Field of a .jsonl file."),
    max_prompts: Optional[int] = typer.Option(None, help="Use only the first N prompts."),
    seeds: int = typer.Option(5, help="Seed rounds; results are mean (std) over them."),
    batch_size: int = typer.Option(8, help="Images per forward pass."),
    height: Optional[int] = typer.Option(None, help="Image height (default: the head's)."),
    width: Optional[int] = typer.Option(None, help="Image width (default: the head's)."),
    two_step: bool = typer.Option(True, "--two-step/--no-two-step",
                                  help="Also score Gaussian 2-step images (Table 2 reference)."),
    device: Device = "auto",
    precision: Precision = "fp32",
    dtype: DtypeAlias = None,
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON."),
    markdown_path: Optional[Path] = typer.Option(None, "--markdown", help="Write the tables."),
    best_of: BestOfOption = 1,
    refine: RefineOption = None,
    refine_lr: RefineLr = 5.0,
    refine_reg: RefineReg = 0.01,
):
    """Win rate (%) of HI/PAHI noise vs standard Gaussian noise (same prompt and eps); with \
--best-of/--refine every method spends that test-time compute."""
    check_extras("eval", scorer=scorer)
    from .. import io
    from ..errors import InputError
    from .. import prompt_sets as data
    from ..heads.checkpoint import read_head_config
    from ..scorers.spec import parse_scorers

    if seeds < 1 or batch_size < 1:
        raise InputError("--seeds and --batch-size must be at least 1")
    read_head_config(head)
    parse_scorers(scorer)  # syntax errors before any loading
    from ..test_time.search import check_test_time

    test_time = check_test_time(best_of, refine, refine_lr, refine_reg, scorer)
    if max_prompts is not None and max_prompts < 1:
        raise InputError(f"--max-prompts must be at least 1, got {max_prompts}")
    texts = data.load_prompts(prompts, prompt_column, prompt_field)[:max_prompts]
    io.check_output_file(json_path, "--json")
    io.check_output_file(markdown_path, "--markdown")
    _evaluate(EvalOptions(
        head=head, model=model, decoder=decoder, scorers=tuple(scorer), prompts=prompts,
        texts=tuple(texts), seeds=seeds, batch_size=batch_size, height=height, width=width,
        two_step=two_step, device=device, precision=pick_precision(precision, dtype),
        json_path=json_path, markdown_path=markdown_path, test_time=test_time))


def _evaluate(o: EvalOptions) -> None:
    """Load the model, the head and the scorers; score; write --json/--markdown; print the
    table."""
    from .. import io
    from ..components import load_components, resolve_device
    from ..evaluation import evaluate as run_eval, markdown
    from ..heads.checkpoint import load_head, read_head_config
    from ..scorers.scorer_set import ScorerSet

    config, training = read_head_config(o.head)
    comps = load_components(o.model, o.decoder, o.precision, str(resolve_device(o.device)))
    f = comps.spec.vae_scale_factor
    height = o.height or config.latent_shape[1] * f
    width = o.width or config.latent_shape[2] * f
    module = load_head(o.head, comps.spec, height, width).to(comps.device)
    scorers = ScorerSet.load(o.scorers, comps.device)
    if o.test_time.refine is not None:
        scorers.check_differentiable()
    with typer.progressbar(length=o.seeds * len(o.texts), label="scoring", file=None) as bar:
        result = run_eval(module, comps, scorers, list(o.texts), seeds=o.seeds,
                          batch_size=o.batch_size, height=height, width=width,
                          two_step=o.two_step, on_batch=bar.update, test_time=o.test_time)
    summary = {**result.summary(), "head": str(o.head), "model": o.model,
               "decoder": comps.decoder_id, "prompts_file": str(o.prompts),
               "size": f"{width}x{height}", "head_training": {
                   k: training.get(k) for k in ("scorer", "steps", "best_step", "val_loss",
                                                "val_win_rate")}}
    table = markdown(result, f"{config.kind.upper()} vs Gaussian: {o.head} on {o.model}")
    if o.json_path:
        io.atomic_write_text(o.json_path, json.dumps(summary, indent=2))
    if o.markdown_path:
        io.atomic_write_text(o.markdown_path, table)
    typer.echo(table)
