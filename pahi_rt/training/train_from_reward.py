"""Training a head from feedback through a fitted reward model (`--feedback-method reward`, the
default): records -> their images re-made (x_T -> frozen sampler -> decoder) -> reward model
(reward_model.py) -> scorer training (train.py) with the reward model as the scorer.

The labelled images are re-made exactly (x_T from the seed and noise source, as feedback.py
recomputes it), so no image file is read. The head trains on the records' training prompts and
validates on the held-out records' prompts (feedback.split_records), as scorer training does.
Before any head training, 5-fold cross-validation by prompt says whether the reward model finds
a preference in the labels at all; unless its accuracy beats chance by MIN_Z standard errors the
run stops with NoPreferenceFound and writes no head (a head that equals its start, or one
fitted to noise, is not a result).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math

import torch

from .. import sampling
from ..errors import InputError
from . import reward_model as rm
from .train_from_feedback import FeedbackData, make_heads, split_records, train_from_feedback
from ..render import images_from_noise, text_embeddings
from ..scorers.scorer_set import ScorerSet, ScorerSpec
from .train_with_scorers import train

# The cross-validated accuracy must beat chance by MIN_Z standard errors (0.5 / sqrt(records)):
# 68% from 30 records, 60% from 100, 53% from 1,000 (one-sided p ~ 0.02)
MIN_Z = 2.0
MIN_PROMPT_FOLDS = 5  # fewer unique prompts: folds split records, not prompts


class NoPreferenceFound(InputError):
    """The feedback holds no preference the method can learn: the best head is the start."""


class RewardScorer:
    """The fitted reward model as a `--scorer` callable (images [B, 3, H, W], prompts) -> [B];
    text features of the records' prompts are cached, others computed on first use."""

    differentiable = True

    def __init__(self, model: rm.RewardModel, components, cache: dict):
        self.model, self.components, self.cache = model, components, cache

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if missing:
            with torch.no_grad():
                g = rm.text_features(text_embeddings(self.components, missing)).cpu()
            self.cache.update(zip(missing, g))
        text = torch.stack([self.cache[p] for p in prompts]).to(images.device)
        return self.model.to(images.device)(rm.image_features(images), text)


@torch.no_grad()
def record_features(data, records, components, sampler_steps: int) -> torch.Tensor:
    """Image features of every record's image(s): [N, F] (labels) or [N, 2, F] (pairs)."""
    schedule = sampling.Schedule.from_spec(components.spec.scheduler, sampler_steps)
    sides = []
    for side in range(len(records[0].seeds)):
        out = []
        for i in range(0, len(records), 32):
            chunk = records[i:i + 32]
            emb = data.embeddings(chunk)
            x = data.initial_noise(chunk, side, emb)
            # Euler-ancestral: the record's seed also drew the later noise of its image
            z = (sampling.draw_step_noise([r.seeds[side] for r in chunk], data.shape,
                                          sampler_steps) if schedule.ancestral else None)
            images = images_from_noise(components, x.to(components.dtype), emb.to(
                components.dtype), schedule, z)
            out.append(rm.image_features(images).cpu())
        sides.append(torch.cat(out))
    return sides[0] if len(sides) == 1 else torch.stack(sides, 1)


def fit_reward_model(data, records, components, mode: str, sampler_steps: int) -> tuple:
    """(RewardScorer, summary dict) fitted on all records; NoPreferenceFound when 5-fold
    cross-validation by prompt finds no preference (MIN_Z)."""
    pairs = records[0].is_pair
    feats = record_features(data, records, components, sampler_steps)
    prompts = list(dict.fromkeys(r.prompt for r in records))
    with torch.no_grad():
        g = rm.text_features(data.table[[data.row[p] for p in prompts]].float()).cpu()
    cache = dict(zip(prompts, g))
    text = torch.stack([cache[r.prompt] for r in records])
    target = torch.tensor([1.0 if pairs else float(r.label) for r in records])

    def make() -> rm.RewardModel:
        model = rm.RewardModel(feats.shape[-1], g.shape[-1], prompt_dependent=mode == "pahi")
        model.fit_stats(feats.reshape(-1, feats.shape[-1]), g)
        return model
    groups = [r.prompt for r in records]
    if len(set(groups)) < MIN_PROMPT_FOLDS:  # too few prompts to hold some out: fold records
        groups = list(range(len(records)))
    cv = rm.cross_val_accuracy(make, feats, text, target, pairs, groups)
    needed = 0.5 + MIN_Z * 0.5 / math.sqrt(len(records))
    summary = {"features": f"image mean RGB on {rm.POOL}x{rm.POOL} cells",
               "prompt_dependent": mode == "pahi", "cv_accuracy": round(cv, 4),
               "cv_needed": round(needed, 4)}
    if not cv >= needed:
        raise NoPreferenceFound(
            f"no preference found in {len(records)} feedback records: a reward model fitted on "
            f"the others ranks held-out records {100 * cv:.0f}% right, and {len(records)} "
            f"records need {100 * needed:.0f}% to tell a preference from chance; no head "
            "written, add feedback")
    model = rm.fit(make(), feats, text, target, pairs)
    summary["train_accuracy"] = round(rm.accuracy(model, feats, text, target, pairs), 4)
    return RewardScorer(model, components, cache), summary


def train_feedback(components, records, config, fb, out, accelerator, resume: bool = False,
                   on_event=None, extra_info: dict | None = None):
    """Train a head from feedback records into `out` by fb.method; returns loop.RunState.
    density: feedback.train_from_feedback (text components suffice). reward: the reward model
    route above (needs the UNet and decoder: components.load_components)."""
    if fb.method == "density":
        return train_from_feedback(components, records, config, fb, out, accelerator, resume,
                                   on_event, extra_info)
    config.check()
    fb.check()
    if accelerator.num_processes > 1:
        raise InputError("training from feedback runs in one process: run it without "
                         "accelerate launch")
    shape = config.latent_shape(components.spec)
    head = make_heads(components, config, fb, shape)[0] if fb.init is not None else None
    train_set, val = split_records(records, fb.val_fraction)
    data = FeedbackData(records, components, shape, needs_text=True)
    scorer, summary = fit_reward_model(data, records, components, config.mode,
                                       config.sampler_steps)
    scorers = ScorerSet([ScorerSpec("feedback-reward-model")], [scorer])
    digest = hashlib.sha256("\n".join(repr(r.to_json()) for r in records).encode()).hexdigest()
    info = {**(extra_info or {}), "feedback_objective": config.objective,
            "feedback_method": "reward", "reward_model": summary,
            "feedback_config": dataclasses.asdict(fb),
            "records": {"train": len(train_set), "val": len(val)}}
    return train(components, scorers, list(dict.fromkeys(r.prompt for r in train_set)),
                 list(dict.fromkeys(r.prompt for r in val)),
                 dataclasses.replace(config, objective="scorer"), out, accelerator,
                 resume=resume, on_event=on_event, extra_info=info, head=head,
                 fingerprint={"init": fb.init, "feedback_records_sha256": digest[:16]})
