"""Training a head from feedback records: KTO on good/bad labels, DPO on pairs. No scorer and no
UNet: one head forward per record.

Per record, x_T is recomputed from its seed (sampling.draw_eps, as generate drew it) and its noise
source: eps for Gaussian images, mu + sigma * eps under the head that made a hi/pahi image (loaded
from the record's `head`, refused if its key changed). Text embeddings come from the frozen text
encoder once per unique prompt. The loss is preference.py's, against a frozen reference: the
head training starts from (`--init HEAD`, else a fresh head = N(0, I)). The loop, validation
schedule, early stopping and `--resume` are loop.fit's. Validation uses held-out records (by a
stable hash of the prompt): the objective's loss, and the preference accuracy of the implicit
reward (pairs, or same-prompt good/bad pairs, ranked right).
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import conditioning, sampling
from ..errors import InputError
from . import density_objectives as pref
from ..heads.checkpoint import head_key, load_head
from ..prompt_sets import bucket
from ..heads.head import HeadConfig, build_head
from .loop import TrainConfig, batch_indices, fit
from ..render import text_embeddings
from ..feedback.records import Record
from .smooth import check_grid, coarsen_updates
from .train_with_scorers import RESUME_KEYS, prepare_head

# beta on the per-sqrt(n) log-density ratio (preference.py); chosen on the tiny task, where it
# kept held-out accuracy rising without the mean drifting away from N(0, I) (README)
DEFAULT_BETA = 10.0
METHODS = ("reward", "density")
VAL_FRACTION = 0.1  # records of this share of prompts (stable hash) are held out
# feedback_defaults: passes over the records, bounds on steps, validations per run, patience
DEFAULT_BATCH, EPOCHS, MIN_STEPS, MAX_STEPS, VALIDATIONS, PATIENCE = 72, 40, 200, 3000, 20, 5
REWARD_DEFAULTS = {"batch_size": 8, "steps": 200, "val_every": 20, "patience": 5}


@dataclass(frozen=True)
class FeedbackConfig:
    """What the feedback objectives add to a TrainConfig (objective kto or dpo)."""

    beta: float = DEFAULT_BETA  # sharpness of the sigmoid on implicit-reward differences
    good_weight: float | None = None  # KTO lambda_D; None: balance the class counts
    bad_weight: float | None = None  # KTO lambda_U; None: balance the class counts
    init: str | None = None  # head dir to start from; it is then the reference
    val_fraction: float = VAL_FRACTION
    update_grid: int = 0  # smooth.py: mu/log-sigma change per grid x grid block; 0: per element
    method: str = "reward"  # reward: fitted reward model (feedback_reward.py); density: KTO/DPO

    def check(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"--feedback-method must be one of {', '.join(METHODS)}, got "
                             f"'{self.method}'")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise InputError(f"--beta must be a finite number > 0, got {self.beta}")
        for name in ("good_weight", "bad_weight"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"--{name.replace('_', '-')} must be a finite number > 0, "
                                 f"got {value}")


def feedback_defaults(n_records: int, method: str = "reward") -> dict:
    """TrainConfig settings (batch, steps, validation cadence, patience) that fit `n_records`
    records (or pairs). Scorer training's defaults (100k steps, validation every 1000) would run
    half an hour on 100 records and stop at their first validation.
    reward: head training against the fitted reward model costs the same for any number of
    records: scorer training's tiny recipe (REWARD_DEFAULTS). density: ~EPOCHS passes over the
    records in MIN_STEPS..MAX_STEPS steps, VALIDATIONS validations, patience PATIENCE."""
    if method == "reward":
        return dict(REWARD_DEFAULTS)
    batch = min(DEFAULT_BATCH, max(8, n_records))
    steps = min(MAX_STEPS, max(MIN_STEPS, math.ceil(EPOCHS * n_records / batch)))
    return {"batch_size": batch, "steps": steps, "val_every": max(5, steps // VALIDATIONS),
            "patience": PATIENCE}


def split_records(records: list[Record], fraction: float) -> tuple[list[Record], list[Record]]:
    """(train, val): records of prompts whose hash bucket is below `fraction` are held out, so
    validation sees unseen prompts; with too few prompts for that, single records are."""
    val = [r for r in records if bucket(r.prompt) < fraction]
    if not val or len(val) == len(records):
        val = [r for r in records if bucket(f"{r.prompt}\n{r.seeds}") < fraction]
        if not val:
            val = [min(records, key=lambda r: bucket(f"{r.prompt}\n{r.seeds}"))]
    held = {id(r) for r in val}
    train = [r for r in records if id(r) not in held]
    if not train:
        raise InputError("need at least 2 feedback records (one is held out for validation)")
    return train, val


class FeedbackData:
    """Records with what x_T and the implicit reward need: prompt embeddings (once per unique
    prompt) and the heads that made hi/pahi images."""

    def __init__(self, records: list[Record], components, shape, needs_text: bool):
        self.shape, self.device = tuple(shape), components.device
        prompts = list(dict.fromkeys(r.prompt for r in records))
        self.row = {p: i for i, p in enumerate(prompts)}
        if needs_text or any(r.source.noise == "pahi" for r in records):
            self.table = conditioning.cat([text_embeddings(components, prompts[i:i + 64]).float()
                                           for i in range(0, len(prompts), 64)])
        else:  # HI from Gaussian images reads no text: a placeholder row per prompt
            self.table = torch.zeros(len(prompts), 1, 1, device=self.device)
        self.heads = self._source_heads(records, components.spec)

    def _source_heads(self, records: list[Record], spec) -> dict:
        heads = {}
        for r in records:
            src = r.source
            if src.noise == "gaussian" or (src.head, src.head_key) in heads:
                continue
            where = f"line {r.line}" if r.line else r.prompt
            try:
                if src.head_key and head_key(src.head) != src.head_key:
                    raise InputError(f"it changed since the feedback was recorded (key "
                                     f"{head_key(src.head)}, record {src.head_key})")
                module = load_head(src.head, spec, self.shape[1] * spec.vae_scale_factor,
                                   self.shape[2] * spec.vae_scale_factor, expect_mode=src.noise)
            except (InputError, OSError) as e:
                raise InputError(f"feedback {where}: image made with --noise {src.noise} --head "
                                 f"{src.head}, which cannot be used ({e}); its x_T cannot be "
                                 "recomputed") from None
            heads[(src.head, src.head_key)] = module.float().to(self.device)
        return heads

    def embeddings(self, records: list[Record]) -> torch.Tensor:
        return self.table[[self.row[r.prompt] for r in records]].to(self.device)

    @torch.no_grad()
    def initial_noise(self, records: list[Record], side: int, emb: torch.Tensor) -> torch.Tensor:
        """x_T [B, C, h, w] of image `side` (0: the label's image or the winner, 1: the loser)."""
        x = sampling.draw_eps([r.seeds[side] for r in records], self.shape).to(self.device)
        for key, head in self.heads.items():
            idx = [i for i, r in enumerate(records) if (r.source.head, r.source.head_key) == key]
            if idx:
                x[idx] = head(x[idx], emb[idx]).float()
        return x


class FeedbackObjective:
    """KTO (labels) or DPO (pairs) on the head's density against a frozen reference head."""

    def __init__(self, objective: str, train: list[Record], val: list[Record],
                 data: FeedbackData, reference, config: TrainConfig, fb: FeedbackConfig):
        self.objective, self.train, self.val, self.data = objective, train, val, data
        self.reference, self.config, self.fb = reference, config, fb
        self.scale = pref.density_scale(data.shape)
        n_good = sum(r.label is True for r in train)
        self.weights = pref.class_weights(n_good, len(train) - n_good, fb.good_weight,
                                          fb.bad_weight)

    def _losses(self, head, records: list[Record]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss per record, implicit reward per image: [B] or [B, 2] for pairs)."""
        emb = self.data.embeddings(records)
        dist = head.distribution(emb)
        with torch.no_grad():
            ref = self.reference.distribution(emb)
        r = [pref.implicit_reward(self.data.initial_noise(records, side, emb), dist, ref,
                                  self.scale) for side in range(len(records[0].seeds))]
        if self.objective == "dpo":
            return pref.dpo_loss(r[0], r[1], self.fb.beta), torch.stack(r, 1)
        z = self.scale * pref.kl_divergence(*dist, *ref).mean()
        good = torch.tensor([rec.label for rec in records], device=r[0].device)
        return pref.kto_loss(r[0], good, z, self.fb.beta, self.weights), r[0]

    def loss(self, model, step: int, part: slice) -> torch.Tensor:
        c = self.config
        idx = batch_indices(len(self.train), c.seed, step, c.batch_size)[part]
        return self._losses(model, [self.train[i] for i in idx])[0].mean()

    @torch.no_grad()
    def validate(self, head) -> dict:
        losses, rewards = [], []
        for i in range(0, len(self.val), self.config.batch_size):
            loss, r = self._losses(head, self.val[i:i + self.config.batch_size])
            losses.append(loss)
            rewards.append(r.float().cpu())
        r = torch.cat(rewards)
        if self.objective == "dpo":
            accuracy = pref.pair_accuracy(r[:, 0], r[:, 1])
        else:
            good = torch.tensor([rec.label for rec in self.val])
            accuracy = pref.ranking_accuracy(r, good, [rec.prompt for rec in self.val])
        return {"val_loss": torch.cat(losses).mean().item(), "val_accuracy": accuracy}

    def describe(self) -> dict:
        out = {"objective": self.objective, "beta": self.fb.beta,
               "reference": self.fb.init or "N(0, I)",
               "records": {"train": len(self.train), "val": len(self.val)}}
        if self.objective == "kto":
            out["kto_weights"] = {"good": self.weights[0], "bad": self.weights[1]}
            out["records"]["good"] = sum(r.label is True for r in self.train + self.val)
        return out


def train_from_feedback(components, records: list[Record], config: TrainConfig,
                        fb: FeedbackConfig, out: str | Path, accelerator, resume: bool = False,
                        on_event=None, extra_info: dict | None = None):
    """Train a head on KTO/DPO records (config.objective) into `out`; returns loop.RunState.
    `components` needs only the tokenizer and text encoder (components.load_text_components).
    Records must already be selected for the objective, deduplicated and checked for model and
    size (see commands/train.py)."""
    config.check()
    fb.check()
    if accelerator.num_processes > 1:
        raise InputError("training from feedback runs in one process (it needs no UNet and "
                         "takes seconds to minutes): run it without accelerate launch")
    emit = on_event or (lambda kind, step, metrics: None)
    shape = config.latent_shape(components.spec)
    head, reference = make_heads(components, config, fb, shape)
    try:
        check_grid(fb.update_grid, shape)
    except ValueError as e:
        raise InputError(str(e)) from None
    coarsen_updates(head, fb.update_grid)
    train, val = split_records(records, fb.val_fraction)
    if config.objective == "kto" and len({r.label for r in train}) < 2:
        raise InputError("after holding out validation records, the training records are all "
                         "one label; KTO needs good and bad ones")
    data = FeedbackData(records, components, shape, needs_text=config.mode == "pahi")
    objective = FeedbackObjective(config.objective, train, val, data, reference, config, fb)

    def fresh_start() -> dict:
        summary = {"steps": 0}
        if fb.init is None:
            prompts = list(dict.fromkeys(r.prompt for r in train))  # statistics per prompt
            summary = prepare_head(head, components, prompts, config, emit)
        reference.load_state_dict(head.state_dict())
        return summary

    digest = hashlib.sha256("\n".join(repr(r.to_json()) for r in records).encode()).hexdigest()
    fingerprint = {**{k: getattr(config, k) for k in RESUME_KEYS}, "beta": fb.beta,
                   "init": fb.init, "update_grid": fb.update_grid,
                   "feedback_records_sha256": digest[:16]}
    info = {**(extra_info or {}), "config": asdict(config), "feedback_config": asdict(fb)}
    return fit(head, objective, config, out, accelerator, resume=resume, fresh_start=fresh_start,
               fingerprint=fingerprint, info=info, on_event=emit,
               extra_modules={"reference": reference})


def make_heads(components, config: TrainConfig, fb: FeedbackConfig, shape):
    """(trainable head, frozen reference of the same config) on the components' device."""
    if fb.init is not None:
        f = components.spec.vae_scale_factor
        init = load_head(fb.init, components.spec, shape[1] * f, shape[2] * f,
                         expect_mode=config.mode)
        if config.mode == "pahi" and init.config.hidden != config.hidden:
            raise InputError(f"--init {fb.init} has hidden width {init.config.hidden}, not "
                             f"--hidden {config.hidden}")
        head = copy.deepcopy(init).requires_grad_(True).train()
    else:
        with torch.random.fork_rng(devices=[]):  # the head's init depends on --seed only
            torch.manual_seed(config.seed)
            head = build_head(HeadConfig(config.mode, shape, components.spec.text_dim,
                                         config.hidden, components.model_id,
                                         components.spec.architecture))
    reference = copy.deepcopy(head).requires_grad_(False).eval()
    return head.to(components.device), reference.to(components.device)
