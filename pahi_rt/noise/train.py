"""Preference training of HI / PAHI heads (paper Sec. 3.2, setup of Sec. 4).

  optional PAHI pretraining (Eq. 10, `pretrain.py`) -> Adam on softplus(s - s') (Eq. 4) with a
  linear LR warm-up -> validation every `val_every` steps -> early stopping on the validation loss

Data and noise are functions of (seed, step) alone: prompts come from a per-epoch permutation
and eps from a per-step generator, so `--resume` continues exactly and every process of an
`accelerate launch` run takes its own slice of the same global batch. OUT holds the best head
(by validation loss; `generate --head OUT` and `eval --head OUT` read it) and OUT/train_state
(the last step, for `--resume`). Multi-GPU and bf16 autocast come from `accelerate.Accelerator`.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import sampling
from ..errors import InputError
from .checkpoint import save_head_in_place, update_training_info
from .head import HeadConfig, build_head
from .objective import paired_scores, text_embeddings
from .pretrain import PretrainConfig, pretrain
from .state import has_train_state, load_train_state, read_train_info, save_train_state

VAL_SEED = 1_000_000_007  # validation eps: Generator(VAL_SEED + i) for val prompt i, every eval
WARMUP_START_LR = 1e-5  # the paper's warm-up starts here
# The paper gives only the warm-up start (1e-5). HI's parameters are the noise itself, while one
# Adam step on PAHI's last layer moves mu through ~hidden units at once: HI gets a 10x larger LR
# for a comparable speed.
DEFAULT_LR = {"pahi": 1e-3, "hi": 1e-2}
FEATURE_STAT_PROMPTS = 1024  # training prompts (first in the file) for the feature statistics


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults follow the paper where it says (batch 72, Adam, warm-up from
    1e-5 over 10k steps, validation every 1000 steps, patience 5)."""

    mode: str = "pahi"  # "hi" or "pahi"
    steps: int = 100_000  # optimiser steps (upper bound; early stopping usually ends sooner)
    batch_size: int = 72  # global batch (split over processes)
    lr: float | None = None  # peak Adam LR after warm-up; None: DEFAULT_LR[mode]
    warmup: int | None = None  # warm-up steps; None: min(10_000, steps // 10)
    val_every: int = 1000  # steps between validations (and resume checkpoints)
    patience: int = 5  # validations without a lower val loss before stopping; 0: never stop
    pretrain_steps: int = 1000  # PAHI only (Eq. 10); 0 skips
    hidden: int = 144  # head MLP width (~5M parameters at 512x512, D = 1024)
    height: int = 512
    width: int = 512
    sampler_steps: int = 1  # Euler steps of the frozen sampler (one-step, as in the paper)
    seed: int = 0
    grad_checkpointing: bool = False  # UNet activation checkpointing (memory for time)

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else min(10_000, self.steps // 10)

    def check(self) -> None:
        if self.mode not in ("hi", "pahi"):
            raise InputError(f"--mode must be hi or pahi, got '{self.mode}'")
        for name in ("steps", "batch_size", "val_every", "hidden"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.peak_lr() <= 0 or self.warmup_steps() < 0 or self.patience < 0:
            raise InputError("--lr must be > 0, --warmup and --patience >= 0")


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """LR multiplier: linear from WARMUP_START_LR to lr over the warm-up, then constant."""
    start, warmup = min(WARMUP_START_LR / config.peak_lr(), 1.0), config.warmup_steps()

    def factor(step: int) -> float:
        if warmup == 0 or step >= warmup:
            return 1.0
        return start + (1.0 - start) * step / warmup
    return factor


def batch_prompts(prompts: list[str], seed: int, step: int, batch_size: int) -> list[str]:
    """The global batch of `step`: consecutive slices of a per-epoch permutation."""
    out, n = [], len(prompts)
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n)
        out.append(prompts[_permutation(n, seed, epoch)[pos]])
    return out


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()


def batch_eps(seed: int, step: int, batch_size: int, shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step + 1)
    return torch.randn((batch_size, *shape), generator=gen)


@dataclass
class RunState:
    step: int = 0
    best_val_loss: float = float("inf")
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list = None  # one dict per validation
    pretrain: dict = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def validate(head, components, scorers, prompts: list[str], batch_size: int, config: TrainConfig,
             schedule, autocast) -> dict:
    """Paired val loss and win rate with fixed eps (VAL_SEED + i): comparable across evals."""
    shape = components.spec.latent_shape(config.height, config.width)
    losses, wins = [], []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        eps = sampling.draw_eps([VAL_SEED + i + j for j in range(len(chunk))], shape)
        emb = text_embeddings(components, chunk)
        pair = paired_scores(head, components, scorers, chunk, eps.to(components.device), emb,
                             schedule, autocast, grad=False)
        losses.append(torch.nn.functional.softplus(pair.s - pair.s_head))
        wins.append(pair.wins())
    return {"val_loss": torch.cat(losses).mean().item(),
            "val_win_rate": torch.cat(wins).mean().item()}


def make_accelerator(device: str, bf16: bool | None):
    """accelerate.Accelerator for `device` (ignored under `accelerate launch`, which sets it);
    bf16 autocast defaults to on for CUDA."""
    from ..errors import require

    accelerate = require("accelerate", "train")
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    bf16 = cuda if bf16 is None else bf16
    return accelerate.Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no")


def train(components, scorers, train_prompts: list[str], val_prompts: list[str],
          config: TrainConfig, out: str | Path, accelerator, resume: bool = False,
          on_event: Callable[[str, int, dict], None] | None = None, extra_info: dict | None = None
          ) -> RunState:
    """Train a head into `out`; returns the final RunState. `on_event(kind, step, metrics)` is
    called with kind "pretrain", "step" or "val" (the CLI draws its progress bar from it)."""
    config.check()
    out = Path(out)
    emit = on_event or (lambda kind, step, metrics: None)
    shape = components.spec.latent_shape(config.height, config.width)
    schedule = sampling.Schedule.from_spec(components.spec.scheduler, config.sampler_steps)
    with torch.random.fork_rng(devices=[]):  # the head's init depends on --seed only
        torch.manual_seed(config.seed)
        head = build_head(HeadConfig(config.mode, shape, components.spec.text_dim, config.hidden,
                                     components.model_id)).to(components.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.peak_lr())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    run = _start(head, optimizer, scheduler, components, train_prompts, config, out, resume, emit)
    if config.grad_checkpointing:
        components.unet.enable_gradient_checkpointing()
    model, prepared_opt = accelerator.prepare(head, optimizer)
    info = {**(extra_info or {}), "config": asdict(config)}
    recent_losses: list[float] = []

    def evaluate_and_save() -> None:
        metrics = validate(head, components, scorers, val_prompts, config.batch_size, config,
                           schedule, accelerator.autocast)
        if recent_losses:  # mean training loss since the previous validation
            metrics = {"train_loss": sum(recent_losses) / len(recent_losses), **metrics}
            recent_losses.clear()
        _record(run, metrics, config)
        if accelerator.is_main_process:
            if run.best_step == run.step:
                save_head_in_place(head, out, _training_info(run, info, scorers))
            save_train_state(out, head, optimizer, scheduler, {**run.to_dict(), **info})
        emit("val", run.step, metrics)

    if not run.history:
        evaluate_and_save()  # step 0: the Gaussian baseline (win rate 0.5) and the first best
    while run.step < config.steps and not run.stopped_early:
        t0 = time.perf_counter()
        loss = _train_step(model, prepared_opt, accelerator, components, scorers, train_prompts,
                           config, run.step, schedule)
        scheduler.step()
        run.step += 1
        recent_losses.append(loss)
        emit("step", run.step, {"loss": recent_losses[-1], "lr": scheduler.get_last_lr()[0],
                                "seconds": time.perf_counter() - t0})
        if run.step % config.val_every == 0 or run.step == config.steps:
            evaluate_and_save()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # the best weights stay; their record gets the whole run
        update_training_info(out, _training_info(run, info, scorers))
    return run


def _train_step(model, optimizer, accelerator, components, scorers, train_prompts: list[str],
                config: TrainConfig, step: int, schedule) -> float:
    """One optimiser step on this process's slice of the global batch; returns the mean loss
    over all processes."""
    shape = components.spec.latent_shape(config.height, config.width)
    per_process = max(1, config.batch_size // accelerator.num_processes)
    sl = slice(accelerator.process_index * per_process,
               (accelerator.process_index + 1) * per_process)
    prompts = batch_prompts(train_prompts, config.seed, step, config.batch_size)[sl]
    eps = batch_eps(config.seed, step, config.batch_size, shape)[sl].to(components.device)
    emb = text_embeddings(components, prompts)
    pair = paired_scores(model, components, scorers, prompts, eps, emb, schedule,
                         accelerator.autocast)
    loss = pair.loss()
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()
    return accelerator.gather(loss.detach()[None]).mean().item()


def _start(head, optimizer, scheduler, components, prompts, config, out, resume, emit
           ) -> RunState:
    """Fresh run (with PAHI pretraining) or the saved state of OUT (`--resume`)."""
    if resume:
        saved = read_train_info(out).get("config", {})
        for key in ("mode", "height", "width", "hidden", "seed", "batch_size", "sampler_steps"):
            if key in saved and saved[key] != getattr(config, key):
                raise InputError(f"--resume: {out} was trained with --{key.replace('_', '-')} "
                                 f"{saved[key]}, not {getattr(config, key)}")
        info = load_train_state(out, head, optimizer, scheduler)
        return RunState(**{k: info[k] for k in RunState.__dataclass_fields__ if k in info})
    if has_train_state(out):
        raise InputError(f"--out {out} already holds a training run; pass --resume to continue "
                         "it or choose another --out")
    if config.mode == "pahi":  # standardise the text feature with training-prompt statistics
        sample = prompts[:FEATURE_STAT_PROMPTS]
        head.fit_feature_stats(torch.cat([text_embeddings(components, sample[i:i + 64])
                                          for i in range(0, len(sample), 64)]).float())
    summary = pretrain(head, components, prompts,
                       PretrainConfig(steps=config.pretrain_steps, batch_size=config.batch_size,
                                      lr=config.peak_lr(), seed=config.seed),
                       on_step=lambda step, m: emit("pretrain", step, m))
    return RunState(history=[], pretrain=summary)


def _record(run: RunState, metrics: dict, config: TrainConfig) -> None:
    run.history.append({"step": run.step, **metrics})
    if metrics["val_loss"] < run.best_val_loss:
        run.best_val_loss, run.best_step, run.bad_evals = metrics["val_loss"], run.step, 0
    else:
        run.bad_evals += 1
        run.stopped_early = config.patience > 0 and run.bad_evals >= config.patience


def _training_info(run: RunState, info: dict, scorers) -> dict:
    best = next(h for h in run.history if h["step"] == run.best_step)
    return {**info, "scorer": str(scorers), "steps": run.step, "best_step": run.best_step,
            "val_loss": best["val_loss"], "val_win_rate": best["val_win_rate"],
            "history": run.history, "pretrain": run.pretrain}
