"""`pahi-rt train`: preference training of an HI or PAHI noise head (works under
`accelerate launch`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..cli import app, command
from ..extras import check_extras
from ..errors import InputError
from ..specs import DEFAULT_MODEL

SCORER_HELP = ("Preference scorer, repeatable; the objective is the weighted sum. Syntax "
               "NAME[@SOURCE][=WEIGHT]: pickscore, imagereward or module:factory, e.g. "
               "--scorer pickscore=1.0 --scorer mymod:make=0.5 or pickscore@/models/PickScore_v1.")


@app.command()
@command
def train(
    mode: str = typer.Option("pahi", help="pahi (prompt-adaptive) or hi (one global Gaussian)."),
    model: str = typer.Option(DEFAULT_MODEL, help="Preset, diffusers model dir or HF id."),
    decoder: Optional[str] = typer.Option(None, help="AutoencoderTiny dir / HF id."),
    scorer: List[str] = typer.Option(["pickscore"], help=SCORER_HELP),
    prompts: str = typer.Option(..., help="Training prompts: .txt, .csv/.tsv, .jsonl or an HF "
                                "dataset id[:split]; val prompts are split off by hash unless "
                                "--val-prompts is given."),
    val_prompts: Optional[str] = typer.Option(None, help="Validation prompts (same formats)."),
    prompt_column: Optional[str] = typer.Option(None, help="Column of a .csv/.tsv or dataset "
                                                "(default: prompt, Prompt, caption or text)."),
    prompt_field: Optional[str] = typer.Option(None, help="Field of a .jsonl file."),
    max_val_prompts: int = typer.Option(500, help="Use at most this many validation prompts."),
    steps: int = typer.Option(100_000, help="Training steps (early stopping may end sooner)."),
    batch_size: int = typer.Option(72, help="Global batch size (the paper: 72)."),
    lr: Optional[float] = typer.Option(None, help="Peak Adam learning rate after the warm-up "
                                       "(default: 1e-3 for pahi, 1e-2 for hi)."),
    warmup: Optional[int] = typer.Option(None, help="Linear warm-up steps from 1e-5 to --lr "
                                         "(default: min(10000, steps / 10); the paper: 10000)."),
    pretrain_steps: int = typer.Option(1000, help="PAHI pretraining steps (Eq. 10); 0 skips. "
                                       "HI needs none."),
    val_every: int = typer.Option(1000, help="Validate (and save) every N steps."),
    patience: int = typer.Option(5, help="Stop after N validations without a lower val loss "
                                 "(0: never)."),
    hidden: int = typer.Option(144, help="Head MLP width (144: ~5M parameters at 512x512)."),
    height: int = typer.Option(512, help="Image height."),
    width: int = typer.Option(512, help="Image width."),
    seed: int = typer.Option(0, help="Seed of data order, noise and pretraining."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (auto: cuda when available; "
                               "under accelerate launch, accelerate decides)."),
    dtype: str = typer.Option("fp32", help="Weights of the frozen model: fp32 | fp16 | bf16."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast "
                                        "(default: on for CUDA)."),
    grad_checkpointing: Optional[bool] = typer.Option(None, "--grad-checkpointing/"
                                                      "--no-grad-checkpointing",
                                                      help="UNet activation checkpointing "
                                                      "(default: on for CUDA)."),
    out: Path = typer.Option(..., help="Output dir: the best head + train_state/ for --resume."),
    resume: bool = typer.Option(False, help="Continue the run saved in --out exactly."),
):
    """Train a noise head on a preference scorer (paper Eq. 4, with Eq. 10 pretraining)."""
    check_extras("train", scorer=scorer)
    from .. import io
    from ..components import load_components
    from ..noise import data
    from ..noise.scorers import ScorerSet, parse_scorer
    from ..noise.train import TrainConfig, make_accelerator, train as run_training
    from ..specs import check_image_size

    device = resolve_device(device)
    config = TrainConfig(mode=mode, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                         val_every=val_every, patience=patience, pretrain_steps=pretrain_steps,
                         hidden=hidden, height=height, width=width, seed=seed,
                         grad_checkpointing=bool(grad_checkpointing if grad_checkpointing
                                                 is not None else device.startswith("cuda")))
    config.check()
    [parse_scorer(s) for s in scorer]  # syntax errors before any loading
    check_image_size(height, width)
    train_set = data.load_prompts(prompts, prompt_column, prompt_field)
    if val_prompts:
        val_set = data.load_prompts(val_prompts, prompt_column, prompt_field, "--val-prompts")
        train_set = [p for p in train_set if p not in set(val_set)] or train_set
    else:
        split = data.split_prompts(train_set)
        train_set, val_set = split.train, split.val
    val_set = val_set[:max_val_prompts]
    io.ensure_writable_dir(out)
    accelerator = make_accelerator(device, bf16)
    comps = load_components(model, decoder, dtype, str(accelerator.device))
    scorers = ScorerSet.load(scorer, accelerator.device)
    extra = {"model": model, "decoder": comps.decoder_id, "prompts": str(prompts),
             "train_prompts": len(train_set), "val_prompts": len(val_set)}
    bar = _Progress(config, accelerator.is_main_process)
    try:
        run = run_training(comps, scorers, train_set, val_set, config, out, accelerator,
                           resume=resume, on_event=bar.update, extra_info=extra)
    finally:
        bar.close()
    if accelerator.is_main_process:
        best = next(h for h in run.history if h["step"] == run.best_step)
        stop = "early stop" if run.stopped_early else "done"
        typer.echo(f"{out}: {stop} at step {run.step}; best step {run.best_step} val loss "
                   f"{best['val_loss']:.4f} val win rate {100 * best['val_win_rate']:.1f}%")


def resolve_device(device: str) -> str:
    """`auto` -> cuda when torch sees a GPU, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda[:N], got '{device}'")
    return device


class _Progress:
    """tqdm bar over steps with loss, val loss and val win rate (main process only)."""

    def __init__(self, config, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=config.steps, desc=f"train {config.mode}", disable=not enabled,
                        dynamic_ncols=True)
        self.pre = tqdm(total=config.pretrain_steps, desc="pretrain", leave=False,
                        disable=not enabled or config.mode != "pahi" or not config.pretrain_steps)
        self.post: dict = {}

    def update(self, kind: str, step: int, metrics: dict) -> None:
        if kind == "pretrain":
            self.pre.update(1)
            self.pre.set_postfix(kl=f"{metrics['kl']:.4f}", recon=f"{metrics['recon']:.3f}")
            return
        if kind == "val":
            self.post.update(val_loss=f"{metrics['val_loss']:.4f}",
                             val_win=f"{100 * metrics['val_win_rate']:.1f}%")
        else:
            self.post["loss"] = f"{metrics['loss']:.4f}"
            self.bar.n = step
        self.bar.set_postfix(self.post, refresh=True)

    def close(self) -> None:
        self.pre.close()
        self.bar.close()
