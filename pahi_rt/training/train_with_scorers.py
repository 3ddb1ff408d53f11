"""Preference training of HI / PAHI heads (paper Sec. 3.2, setup of Sec. 4).

  optional PAHI pretraining (Eq. 10, `pretrain.py`) -> Adam on softplus(s - s') (Eq. 4) with a
  linear LR warm-up -> validation every `val_every` steps -> early stopping on the validation loss

The loop itself is `loop.fit`, shared with the feedback objectives (`feedback.py`). Data and
noise are functions of (seed, step) alone: prompts come from a per-epoch permutation and eps from
a per-step generator, so `--resume` continues exactly and every process of an `accelerate
launch` run takes its own slice of the same global batch. OUT holds the best head (by validation
loss; `generate --head OUT` and `eval --head OUT` read it) and OUT/train_state (the last step,
for `--resume`). Multi-GPU and bf16 autocast come from `accelerate.Accelerator`.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from .. import conditioning, sampling
from ..heads.head import HeadConfig, build_head
from .loop import DEFAULT_LR, TrainConfig, batch_indices, fit, lr_factor  # noqa: F401 (API)
from ..render import text_embeddings
from ..specs import SEED_MAX
from .scorer_objective import paired_scores
from .pretrain import PretrainConfig, pretrain

VAL_SEED = 1_000_000_007  # validation eps: Generator(VAL_SEED + i) for val prompt i, every eval
FEATURE_STAT_PROMPTS = 1024  # training prompts (first in the file) for the feature statistics
# what must match between a run and its --resume (TrainConfig field names)
RESUME_KEYS = ("mode", "height", "width", "hidden", "seed", "batch_size", "sampler_steps",
               "objective")


def prompt_set_id(prompts: list[str]) -> str:
    """'N prompts, sha256 XXXX' of an ordered prompt list (what --resume compares)."""
    import hashlib

    digest = hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()[:12]
    return f"{len(prompts)} prompts, sha256 {digest}"


def batch_prompts(prompts: list[str], seed: int, step: int, batch_size: int) -> list[str]:
    """The global batch of `step`: consecutive slices of a per-epoch permutation."""
    return [prompts[i] for i in batch_indices(len(prompts), seed, step, batch_size)]


def batch_eps(seed: int, step: int, batch_size: int, shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step + 1) % (SEED_MAX + 1))
    return torch.randn((batch_size, *shape), generator=gen)


@torch.no_grad()
def validate(head, components, scorers, prompts: list[str], batch_size: int, config: TrainConfig,
             schedule, autocast) -> dict:
    """Paired val loss and win rate with fixed eps (VAL_SEED + i): comparable across evals."""
    shape = config.latent_shape(components.spec)
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
          on_event: Callable[[str, int, dict], None] | None = None, extra_info: dict | None = None,
          head=None, fingerprint: dict | None = None):
    """Train a head on the scorers into `out`; returns the final loop.RunState.
    `on_event(kind, step, metrics)` is called with kind "pretrain", "step" or "val" (the CLI
    draws its progress bar from it). `head`: start from this head (no feature statistics or
    pretraining) instead of a fresh one; `fingerprint`: more keys --resume must match."""
    config.check()
    emit = on_event or (lambda kind, step, metrics: None)
    shape = config.latent_shape(components.spec)
    start = head
    if head is None:
        with torch.random.fork_rng(devices=[]):  # the head's init depends on --seed only
            torch.manual_seed(config.seed)
            head = build_head(HeadConfig(config.mode, shape, components.spec.text_dim,
                                         config.hidden, components.model_id,
                                         components.spec.architecture))
    head = head.to(components.device)
    if config.grad_checkpointing:
        components.unet.enable_gradient_checkpointing()
    objective = ScorerObjective(components, scorers, train_prompts, val_prompts, config,
                                accelerator.autocast)

    def fresh_start() -> dict:
        if start is not None:
            return {"steps": 0}
        return prepare_head(head, components, train_prompts, config, emit)

    return fit(head, objective, config, out, accelerator, resume=resume, fresh_start=fresh_start,
               fingerprint={**{k: getattr(config, k) for k in RESUME_KEYS},
                            "model": components.model_id, "scorer": str(scorers),
                            "prompts": prompt_set_id(train_prompts),
                            "val_prompts": prompt_set_id(val_prompts), **(fingerprint or {})},
               info={**(extra_info or {}), "config": asdict(config)}, on_event=emit)


class ScorerObjective:
    """Eq. 4 through the frozen sampler: softplus(s - s') on a batch of training prompts."""

    def __init__(self, components, scorers, train_prompts: list[str], val_prompts: list[str],
                 config: TrainConfig, autocast):
        self.components, self.scorers, self.config, self.autocast = (components, scorers, config,
                                                                     autocast)
        self.train_prompts, self.val_prompts = train_prompts, val_prompts
        self.schedule = sampling.Schedule.from_spec(components.spec.scheduler,
                                                    config.sampler_steps)
        self.shape = config.latent_shape(components.spec)

    def loss(self, model, step: int, part: slice) -> torch.Tensor:
        c, comps = self.config, self.components
        prompts = batch_prompts(self.train_prompts, c.seed, step, c.batch_size)[part]
        eps = batch_eps(c.seed, step, c.batch_size, self.shape)[part].to(comps.device)
        emb = text_embeddings(comps, prompts)
        return paired_scores(model, comps, self.scorers, prompts, eps, emb, self.schedule,
                             self.autocast).loss()

    def validate(self, head) -> dict:
        return validate(head, self.components, self.scorers, self.val_prompts,
                        self.config.batch_size, self.config, self.schedule, self.autocast)

    def describe(self) -> dict:
        return {"objective": "scorer", "scorer": str(self.scorers)}


def prepare_head(head, components, prompts: list[str], config: TrainConfig, emit) -> dict:
    """A fresh PAHI head: text-feature statistics of the training prompts, then pretraining
    (Eq. 10); returns the pretraining summary. HI heads need neither."""
    if config.mode == "pahi":  # standardise the text feature with training-prompt statistics
        sample = list(dict.fromkeys(prompts))[:FEATURE_STAT_PROMPTS]  # each prompt once
        head.fit_feature_stats(conditioning.cat([text_embeddings(components, sample[i:i + 64])
                                                 for i in range(0, len(sample), 64)]).float())
    return pretrain(head, components, prompts,
                    PretrainConfig(steps=config.pretrain_steps, batch_size=config.batch_size,
                                   lr=config.peak_lr(), seed=config.seed),
                    on_step=lambda step, m: emit("pretrain", step, m))
