"""`generate --best-of N` / `--refine K`: the images of a run, each with its test-time record
(winning candidate and every candidate's score; refinement's start/best score and step time)."""
from __future__ import annotations

import json
import time
from typing import Callable, Iterator, Sequence

from .. import sampling
from . import search as tt

REFINE_BATCH = 4  # prompts refined together (each image's step ignores its batch mates)


def load_scorers(texts: Sequence[str], tt_config: tt.TestTime, device):
    """The scorer set, refusing non-differentiable ones for --refine."""
    from ..scorers.scorer_set import ScorerSet

    scorers = ScorerSet.load(texts, device)
    if tt_config.refine is not None:
        scorers.check_differentiable()
    return scorers


def images(pipe, loaded, scorers, tt_config: tt.TestTime, noise: str, prompts: Sequence[str],
           seeds: Sequence[int], log: Callable[[str], None]
           ) -> Iterator[tuple[int, object, dict, float]]:
    """(index, uint8 pixels [H, W, 3], metadata fields, seconds per image) for each prompt."""
    if tt_config.refine is None:
        for i, (p, s) in enumerate(zip(prompts, seeds)):
            t0 = time.perf_counter()
            won = tt.best_of(pipe, scorers, [p], [s], tt_config.best_of)
            extra = {"best_of": tt_config.best_of, "candidate": won.candidate[0],
                     "candidate_seed": won.seeds[0], "scorer": str(scorers),
                     "candidate_scores": json.dumps([round(x, 6) for x in won.scores[0]])}
            yield i, won.pixels[0], extra, time.perf_counter() - t0
        return
    comps = loaded.torch_components(pipe.config.precision)
    head = loaded.head(noise)
    source = sampling.noise_source(head, comps.device, comps.dtype)
    schedule = sampling.Schedule.from_spec(comps.spec.scheduler, pipe.config.mode.steps)
    cfg = tt_config.refine
    for start in range(0, len(prompts), REFINE_BATCH):
        chunk = list(prompts[start:start + REFINE_BATCH])
        t0 = time.perf_counter()
        eps = sampling.draw_eps(seeds[start:start + len(chunk)], pipe.latent_shape)
        done = tt.refine(comps, source, scorers, chunk, eps, cfg, schedule,
                         seeds=seeds[start:start + len(chunk)])
        per_image = (time.perf_counter() - t0) / len(chunk)
        step_s = sum(done.seconds) / max(len(done.seconds), 1)
        log(f"refined {len(chunk)} image(s): {cfg.steps} steps, {step_s:.3f} s per step")
        for j in range(len(chunk)):
            extra = {"refine": cfg.steps, "refine_lr": cfg.lr, "refine_reg": cfg.reg,
                     "scorer": str(scorers), "best_iteration": done.best_iter[j],
                     "start_score": round(done.start_scores[j], 6),
                     "refined_score": round(done.best_scores[j], 6),
                     "refine_seconds_per_step": round(step_s, 4)}
            yield start + j, done.pixels[j].numpy(), extra, per_image
