"""What one training run is (`TrainConfig`) and its checked ranges, without torch: `pahi-rt
train` validates its options against it before the heavy imports (the loop lives in loop.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError
from ..specs import SEED_MAX, RenderShape

WARMUP_START_LR = 1e-5  # the paper's warm-up starts here
# The paper gives only the warm-up start (1e-5). HI's parameters are the noise itself, while one
# Adam step on PAHI's last layer moves mu through ~hidden units at once: HI gets a 10x larger LR
# for a comparable speed.
DEFAULT_LR = {"pahi": 1e-3, "hi": 1e-2}
# Feedback (kto/dpo) gradients are noisy estimates: a record's x_T is mostly noise in directions
# no user cares about, so large steps memorise it. 10x smaller steps plus early stopping on
# held-out records generalised on the tiny task (bench/results/cpu-2core/feedback.md).
FEEDBACK_LR = {"pahi": 1e-4, "hi": 1e-3}
OBJECTIVES = ("scorer", "kto", "dpo")
MAX_HIDDEN = 65536  # head MLP width: beyond this a typo, not a head (memory: hidden x latent)
MAX_BATCH = 65536


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults follow the paper where it says (batch 72, Adam, warm-up from
    1e-5 over 10k steps, validation every 1000 steps, patience 5)."""

    mode: str = "pahi"  # the head's kind, "hi" or "pahi" (`--mode`; not a specs.Mode)
    steps: int = 100_000  # optimiser steps (upper bound; early stopping usually ends sooner)
    batch_size: int = 72  # global batch (split over processes): prompts, records or pairs
    lr: float | None = None  # peak Adam LR after warm-up; None: DEFAULT_LR / FEEDBACK_LR[mode]
    warmup: int | None = None  # warm-up steps; None: min(10_000, steps // 10)
    val_every: int = 1000  # steps between validations (and resume checkpoints)
    patience: int = 5  # validations without a lower val loss before stopping; 0: never stop
    pretrain_steps: int = 1000  # PAHI only (Eq. 10); 0 skips
    hidden: int = 144  # head MLP width (~5M parameters at 512x512, D = 1024)
    height: int | None = None  # image size the head is for; None: the model's default size
    width: int | None = None
    sampler_steps: int = 1  # Euler steps of the frozen sampler (one-step, as in the paper)
    seed: int = 0
    grad_checkpointing: bool = False  # UNet activation checkpointing (memory for time)
    objective: str = "scorer"  # scorer (Eq. 4, through the sampler) | kto | dpo (feedback)

    def latent_shape(self, spec) -> tuple[int, int, int]:
        """(C, h, w) of the head's latent for `spec` (a specs.ModelSpec) at this size."""
        size = RenderShape(height=self.height, width=self.width).sized(spec)
        return spec.latent_shape(size.height, size.width)

    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return (DEFAULT_LR if self.objective == "scorer" else FEEDBACK_LR)[self.mode]

    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else min(10_000, self.steps // 10)

    def check(self) -> None:
        if self.mode not in ("hi", "pahi"):
            raise InputError(f"--mode must be hi or pahi, got '{self.mode}'")
        if self.objective not in OBJECTIVES:
            raise InputError(f"--objective must be one of {', '.join(OBJECTIVES)}, "
                             f"got '{self.objective}'")
        for name in ("steps", "batch_size", "val_every", "hidden"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        for name, value, high in (("--hidden", self.hidden, MAX_HIDDEN),
                                  ("--batch-size", self.batch_size, MAX_BATCH),
                                  ("--seed", self.seed, SEED_MAX),
                                  ("--pretrain-steps", self.pretrain_steps, 2**31)):
            if not 0 <= value <= high:
                raise InputError(f"{name} must be in 0..{high}, got {value}")
        if not math.isfinite(self.peak_lr()) or self.peak_lr() <= 0 or self.warmup_steps() < 0 \
                or self.patience < 0:
            raise InputError("--lr must be > 0, --warmup and --patience >= 0")
