"""The optimisation loop every training objective shares (scorer, KTO, DPO).

  fresh start (objective-specific: PAHI pretraining, `--init`) or `--resume` -> Adam with a
  linear LR warm-up -> validation every `val_every` steps -> early stopping on the val loss

An objective (`Objective`) supplies the loss of this process's slice of the global batch at a
step, validation metrics (with "val_loss"), and what to record about itself. Its data and noise
must be functions of (seed, step) alone, so `--resume` continues exactly and every process of an
`accelerate launch` run takes its own slice of the same global batch. OUT holds the best head (by
validation loss) and OUT/train_state (the last validation step, for `--resume`).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch

from ..errors import InputError
from ..heads.checkpoint import save_head_in_place, update_training_info
from ..specs import SEED_MAX
from .state import has_train_state, load_train_state, read_train_info, save_train_state

from .config import (DEFAULT_LR, FEEDBACK_LR, MAX_BATCH, MAX_HIDDEN,  # noqa: F401
                           OBJECTIVES, WARMUP_START_LR, TrainConfig)


class Objective(Protocol):
    """What `fit` needs from a training objective."""

    def loss(self, model, step: int, part: slice) -> torch.Tensor:
        """Mean loss over this process's `part` of the global batch of `step` (with grad)."""

    def validate(self, head) -> dict:
        """Validation metrics: "val_loss" (early stopping) plus objective-specific ones."""

    def describe(self) -> dict:
        """What the checkpoint's "training" record says about the objective."""


@dataclass
class RunState:
    step: int = 0
    best_val_loss: float = float("inf")
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list = None  # one dict per validation
    pretrain: dict = None
    seconds: float = 0.0  # wall time of pretraining, steps and validations (not loading)

    def to_dict(self) -> dict:
        return asdict(self)


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """LR multiplier: linear from WARMUP_START_LR to lr over the warm-up, then constant."""
    start, warmup = min(WARMUP_START_LR / config.peak_lr(), 1.0), config.warmup_steps()

    def factor(step: int) -> float:
        if warmup == 0 or step >= warmup:
            return 1.0
        return start + (1.0 - start) * step / warmup
    return factor


def batch_indices(n: int, seed: int, step: int, batch_size: int) -> list[int]:
    """Indices (into n items) of the global batch of `step`: consecutive slices of a per-epoch
    permutation, so every item is seen once per epoch and the order depends on seed alone."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n)
        out.append(_permutation(n, seed, epoch)[pos])
    return out


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    seed = (seed * 7919 + epoch) % (SEED_MAX + 1)  # the same as before for every seed that fit
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def fit(head, objective: Objective, config: TrainConfig, out: str | Path, accelerator, *,
        resume: bool, fresh_start: Callable[[], dict], fingerprint: dict, info: dict,
        on_event: Callable[[str, int, dict], None] | None = None,
        extra_modules: dict | None = None) -> RunState:
    """Train `head` in place into `out`; returns the final RunState.

    fresh_start() prepares a new run (pretraining, --init) and returns its summary; with `resume`
    the saved state of `out` is loaded instead, after checking that `fingerprint` (option name ->
    value) matches the saved run's. `extra_modules` (name -> module, e.g. a frozen reference
    head) are saved in and restored from the train state beside the head. `on_event(kind, step,
    metrics)` is called with kind "step" or "val".
    """
    out = Path(out)
    emit = on_event or (lambda kind, step, metrics: None)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.peak_lr())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    info = {**info, "fingerprint": fingerprint, "status": "running"}
    if resume:
        _check_fingerprint(out, fingerprint)
        saved = load_train_state(out, head, optimizer, scheduler, extra_modules)
        run = RunState(**{k: saved[k] for k in RunState.__dataclass_fields__ if k in saved})
    else:
        if has_train_state(out):
            raise InputError(f"--out {out} already holds a training run; pass --resume to "
                             "continue it or choose another --out")
        t0 = time.perf_counter()
        summary = fresh_start()
        run = RunState(history=[], pretrain=summary, seconds=time.perf_counter() - t0)
    model, prepared_opt = accelerator.prepare(head, optimizer)
    recent_losses: list[float] = []

    def evaluate_and_save() -> None:
        t0 = time.perf_counter()
        metrics = objective.validate(head)
        run.seconds += time.perf_counter() - t0
        if recent_losses:  # mean training loss since the previous validation
            metrics = {"train_loss": sum(recent_losses) / len(recent_losses), **metrics}
            recent_losses.clear()
        _record(run, metrics, config)
        if not all(torch.isfinite(p).all() for p in head.parameters()):
            raise InputError(f"training stopped at step {run.step}: the head's weights are not "
                             f"finite ({_suspects(config)}); nothing non-finite is saved")
        if accelerator.is_main_process:
            if run.best_step == run.step:
                save_head_in_place(head, out, _training_info(run, info, objective))
            save_train_state(out, head, optimizer, scheduler, {**run.to_dict(), **info},
                             extra_modules)
        emit("val", run.step, metrics)

    try:
        _loop(run, model, prepared_opt, scheduler, accelerator, objective, config, emit,
              evaluate_and_save, recent_losses)
    except BaseException as e:  # the saved head says the run did not finish
        if accelerator.is_main_process and (out / "config.json").is_file():
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            status = (f"interrupted at step {run.step}" if isinstance(e, KeyboardInterrupt)
                      else f"failed at step {run.step}: {reason}")
            update_training_info(out, {**_training_info(run, info, objective), "status": status})
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # the best weights stay; their record gets the whole run
        update_training_info(out, {**_training_info(run, info, objective),
                                   "status": final_status(run)})
    return run


NO_IMPROVEMENT = "no improvement"


def final_status(run: RunState) -> str:
    """"done", or NO_IMPROVEMENT when no step beat the starting head on validation (the saved
    head is then the start: never reported as a result)."""
    return "done" if run.best_step > 0 or run.step == 0 else NO_IMPROVEMENT


def _loop(run, model, optimizer, scheduler, accelerator, objective, config, emit,
          evaluate_and_save, recent_losses) -> None:
    if not run.history:
        evaluate_and_save()  # step 0: the starting point (win rate 0.5) and the first best
    while run.step < config.steps and not run.stopped_early:
        t0 = time.perf_counter()
        loss = _train_step(model, optimizer, accelerator, objective, config, run.step)
        if not math.isfinite(loss):
            raise InputError(f"training stopped at step {run.step + 1}: the loss is {loss} "
                             f"({_suspects(config)}); the best head so far (step "
                             f"{run.best_step}) is kept")
        scheduler.step()
        run.step += 1
        recent_losses.append(loss)
        run.seconds += time.perf_counter() - t0
        emit("step", run.step, {"loss": loss, "lr": scheduler.get_last_lr()[0],
                                "seconds": time.perf_counter() - t0})
        if run.step % config.val_every == 0 or run.step == config.steps:
            evaluate_and_save()


def _suspects(config: TrainConfig) -> str:
    """What can make a run non-finite, for the objective at hand (feedback runs have no
    scorer: scorers that return nan/inf are refused by name where they are called)."""
    if config.objective == "scorer":
        return f"a scorer returned nan/inf, or --lr {config.peak_lr():g} is too high"
    return f"--lr {config.peak_lr():g} or --beta too high for these {config.objective} records"


def _train_step(model, optimizer, accelerator, objective: Objective, config: TrainConfig,
                step: int) -> float:
    """One optimiser step on this process's slice of the global batch; returns the mean loss
    over all processes."""
    per_process = max(1, config.batch_size // accelerator.num_processes)
    part = slice(accelerator.process_index * per_process,
                 (accelerator.process_index + 1) * per_process)
    loss = objective.loss(model, step, part)
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()
    return accelerator.gather(loss.detach()[None]).mean().item()


def _check_fingerprint(out: Path, fingerprint: dict) -> None:
    info = read_train_info(out)
    saved = info.get("fingerprint") or info.get("config", {})
    for key, value in fingerprint.items():
        if key in saved and saved[key] != value:
            raise InputError(f"--resume: {out} was trained with --{key.replace('_', '-')} "
                             f"{saved[key]}, not {value}")


def _record(run: RunState, metrics: dict, config: TrainConfig) -> None:
    run.history.append({"step": run.step, **metrics})
    if metrics["val_loss"] < run.best_val_loss:
        run.best_val_loss, run.best_step, run.bad_evals = metrics["val_loss"], run.step, 0
    else:
        run.bad_evals += 1
        run.stopped_early = config.patience > 0 and run.bad_evals >= config.patience


def _training_info(run: RunState, info: dict, objective: Objective) -> dict:
    best = next(h for h in run.history if h["step"] == run.best_step)
    val = {k: v for k, v in best.items() if k.startswith("val_")}
    return {**info, **objective.describe(), "steps": run.step, "best_step": run.best_step,
            **val, "history": run.history, "pretrain": run.pretrain,
            "train_seconds": round(run.seconds, 3)}
