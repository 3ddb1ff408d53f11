"""`pahi-rt train`: preference training of an HI or PAHI noise head (works under
`accelerate launch`)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..extras import check_extras
from ..specs import DEFAULT_MODEL
from .common import (SCORER_HELP, Decoder, Device, DtypeAlias, PromptColumn, PromptField,
                     check_number, image_size, pick_precision)
from .options import TrainOptions

SCORER_DEFAULTS = {"steps": 100_000, "batch_size": 72, "val_every": 1000, "patience": 5}


def train(
    mode: str = typer.Option("pahi", help="pahi (prompt-adaptive) or hi (one global Gaussian)."),
    objective: str = typer.Option("scorer", help="scorer: through the frozen sampler into "
                                  "--scorer (paper Eq. 4); kto: good/bad labels, dpo: pairs, "
                                  "from --feedback records."),
    feedback_method: str = typer.Option("reward", help="kto/dpo: reward (fit a reward model on "
                                        "the labelled images, train through the sampler "
                                        "against it) or density (KTO/DPO on the head's own "
                                        "density: no UNet, needs ~10x more records)."),
    feedback: Optional[Path] = typer.Option(None, help="Feedback records (JSONL, from `pahi-rt "
                                            "feedback add|pair`) for --objective kto|dpo."),
    init: Optional[Path] = typer.Option(None, help="kto/dpo: start from this head; it is also "
                                        "the reference (default: N(0, I))."),
    beta: Optional[float] = typer.Option(None, help="kto/dpo: sigmoid sharpness on "
                                         "implicit-reward differences (default 10)."),
    good_weight: Optional[float] = typer.Option(None, help="kto: weight of good records "
                                                "(default: balance the class counts)."),
    bad_weight: Optional[float] = typer.Option(None, help="kto: weight of bad records "
                                               "(default: balance the class counts)."),
    model: Optional[str] = typer.Option(None, help="Preset, diffusers model dir or HF id "
                                        f"(default {DEFAULT_MODEL}; kto/dpo: the records')."),
    decoder: Decoder = None,
    scorer: List[str] = typer.Option(["pickscore"], help=SCORER_HELP),
    prompts: Optional[str] = typer.Option(None, help="Training prompts (scorer objective): "
                                          ".txt, .csv/.tsv, .jsonl or an HF dataset id[:split];"
                                          " val prompts are split off by hash unless "
                                          "--val-prompts is given."),
    val_prompts: Optional[str] = typer.Option(None, help="Validation prompts (same formats)."),
    prompt_column: PromptColumn = None,
    prompt_field: PromptField = None,
    max_val_prompts: int = typer.Option(500, help="Use at most this many validation prompts."),
    steps: Optional[int] = typer.Option(None, help="Training steps (early stopping may end "
                                        "sooner; default 100000; kto/dpo: fitted to the "
                                        "records, see README)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (default 72, the "
                                             "paper's; kto/dpo: see README)."),
    lr: Optional[float] = typer.Option(None, help="Peak Adam learning rate after the warm-up "
                                       "(default: 1e-3 for pahi, 1e-2 for hi; kto/dpo: 10x "
                                       "less)."),
    warmup: Optional[int] = typer.Option(None, help="Linear warm-up steps from 1e-5 to --lr "
                                         "(default: min(10000, steps / 10); the paper: 10000)."),
    pretrain_steps: Optional[int] = typer.Option(None, help="PAHI pretraining steps (Eq. 10); "
                                                 "0 skips (default 1000; kto/dpo: 0). HI needs "
                                                 "none."),
    val_every: Optional[int] = typer.Option(None, help="Validate (and save) every N steps "
                                            "(default 1000; kto/dpo: see README)."),
    patience: Optional[int] = typer.Option(None, help="Stop after N validations without a "
                                           "lower val loss (0: never; default 5)."),
    hidden: Optional[int] = typer.Option(None, help="Head MLP width (default 144: ~5M "
                                         "parameters at 512x512; with --init: the head's)."),
    height: Optional[int] = typer.Option(None, help="Image height (default: the model's own, "
                                         "e.g. 64 for tiny; kto/dpo: the records')."),
    width: Optional[int] = typer.Option(None, help="Image width (default: the model's own; "
                                        "kto/dpo: the records')."),
    seed: int = typer.Option(0, help="Seed of data order, noise and pretraining."),
    device: Device = "auto",
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16: the dtype the frozen "
                                  "model's weights are stored in. --bf16 is separate: autocast "
                                  "of the computation; the usual mixed precision is fp32 weights "
                                  "with --bf16."),
    dtype: DtypeAlias = None,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast of the "
                                        "forward/backward pass over whatever --precision stores "
                                        "(default: on for CUDA)."),
    grad_checkpointing: Optional[bool] = typer.Option(None, "--grad-checkpointing/"
                                                      "--no-grad-checkpointing",
                                                      help="UNet activation checkpointing "
                                                      "(default: on for CUDA)."),
    out: Path = typer.Option(..., help="Output dir: the best head + train_state/ for --resume."),
    resume: bool = typer.Option(False, help="Continue the run saved in --out exactly."),
):
    """Train a noise head on a preference scorer (paper Eq. 4, with Eq. 10 pretraining) or \
on users' feedback records (KTO / DPO on the head's density)."""
    for option, value, high in (("--beta", beta, 1e4), ("--good-weight", good_weight, 1e4),
                                ("--bad-weight", bad_weight, 1e4), ("--lr", lr, 10.0)):
        check_number(option, value, 0.0, high, low_open=True)
    check_extras("train", scorer=scorer)
    from ..training.config import TrainConfig  # torch-free: options checked before imports

    dtype = pick_precision(precision, dtype)
    feedback_run = objective in ("kto", "dpo")
    sized = dict(steps=steps, batch_size=batch_size, val_every=val_every, patience=patience)
    if not feedback_run:  # kto/dpo fill theirs from the number of records
        sized = {k: SCORER_DEFAULTS[k] if v is None else v for k, v in sized.items()}
    settings = dict(mode=mode, **sized, lr=lr, warmup=warmup, seed=seed, objective=objective,
                    pretrain_steps=pretrain_steps if pretrain_steps is not None
                    else 0 if feedback_run else 1000)
    TrainConfig(**{k: SCORER_DEFAULTS[k] if v is None and k in SCORER_DEFAULTS else v
                   for k, v in settings.items()}).check()
    o = TrainOptions(
        out=out, mode=mode, objective=objective, feedback_method=feedback_method,
        feedback=feedback, init=init, beta=beta, good_weight=good_weight, bad_weight=bad_weight,
        model=model, decoder=decoder, scorers=tuple(scorer), prompts=prompts,
        val_prompts=val_prompts, prompt_column=prompt_column, prompt_field=prompt_field,
        max_val_prompts=max_val_prompts, hidden=hidden, height=height, width=width,
        device=device, precision=dtype, bf16=bf16, resume=resume)
    _check_objective_options(o)
    from ..components import resolve_device

    device = str(resolve_device(device))  # under accelerate launch, accelerate decides
    settings["grad_checkpointing"] = bool(grad_checkpointing if grad_checkpointing is not None
                                          else device.startswith("cuda") and not feedback_run)
    o = replace(o, device=device, settings=settings)
    if feedback_run:
        from .train_feedback import run_feedback_training

        done = run_feedback_training(o)
    else:
        done = _scorer_training(o)
    if done is not None:  # under accelerate launch: the main process reports
        report(o.out, *done)


def _check_objective_options(o: TrainOptions) -> None:
    """Options that belong to the other kind of run are refused (before any import)."""
    if o.feedback_run:
        if o.prompts or o.val_prompts:
            raise InputError(f"--prompts/--val-prompts are not used by --objective {o.objective} "
                             "(the prompts come from the --feedback records)")
        return
    unused = [name for name, v in (("--feedback", o.feedback), ("--init", o.init),
                                   ("--beta", o.beta), ("--good-weight", o.good_weight),
                                   ("--bad-weight", o.bad_weight)) if v is not None]
    if unused:
        raise InputError(f"{', '.join(unused)}: only used with --objective kto|dpo")
    if o.prompts is None:
        raise InputError("--objective scorer needs --prompts")


def _scorer_training(o: TrainOptions):
    """Train on the --scorer set into --out; (run, progress) to report on the main process,
    None on the others."""
    from .. import io
    from ..components import load_components
    from .. import prompt_sets as data
    from ..progress import TrainProgress
    from ..scorers.scorer_set import ScorerSet
    from ..scorers.spec import parse_scorers
    from ..training.config import TrainConfig
    from ..training.train_with_scorers import make_accelerator, train as run_training

    parse_scorers(o.scorers)  # syntax errors before any loading
    height, width = image_size(o.model or DEFAULT_MODEL, o.height, o.width)
    config = TrainConfig(**o.settings, hidden=144 if o.hidden is None else o.hidden,
                         height=height, width=width)
    config.check()
    train_set = data.load_prompts(o.prompts, o.prompt_column, o.prompt_field)
    if o.val_prompts:
        val_set = data.load_prompts(o.val_prompts, o.prompt_column, o.prompt_field,
                                    "--val-prompts")
        train_set = data.without_overlap(train_set, val_set)
    else:
        split = data.split_prompts(train_set)
        train_set, val_set = split.train, split.val
    val_set = val_set[:o.max_val_prompts]
    io.ensure_writable_dir(o.out)
    accelerator = make_accelerator(o.device, o.bf16)
    # two runs into one --out would mix their files; under accelerate launch one lock (rank 0)
    lock = io.run_lock(o.out, "training run") if accelerator.is_main_process else nullcontext()
    with lock:
        model = o.model or DEFAULT_MODEL
        comps = load_components(model, o.decoder, o.precision, str(accelerator.device))
        scorers = ScorerSet.load(o.scorers, accelerator.device)
        extra = {"model": model, "decoder": comps.decoder_id, "prompts": str(o.prompts),
                 "train_prompts": len(train_set), "val_prompts": len(val_set)}
        bar = TrainProgress(config, accelerator.is_main_process)
        try:
            run = run_training(comps, scorers, train_set, val_set, config, o.out, accelerator,
                               resume=o.resume, on_event=bar.update, extra_info=extra)
        finally:
            bar.close()
    return (run, bar) if accelerator.is_main_process else None


def report(out, run, progress=None) -> None:
    """The run's last line: where it stopped, its best validation metrics, and its cost; then
    an InputError (exit 2) when the best head is the starting head."""
    from ..training.loop import NO_IMPROVEMENT, final_status

    best = next(h for h in run.history if h["step"] == run.best_step)
    stop = "early stop" if run.stopped_early else "done"
    extra = "".join(f" {k.replace('_', ' ')} {100 * best[k]:.1f}%"
                    for k in ("val_win_rate", "val_accuracy")
                    if k in best and best[k] == best[k])
    typer.echo(f"{out}: {stop} at step {run.step}; best step {run.best_step} val loss "
               f"{best['val_loss']:.4f}{extra}{progress.cost() if progress else ''}")
    if final_status(run) == NO_IMPROVEMENT:
        raise InputError(f"no improvement: no step beat the starting head on validation, so "
                         f"{out} holds the starting head (config.json status '{NO_IMPROVEMENT}'"
                         "); more feedback, or other --steps/--lr, may help")
