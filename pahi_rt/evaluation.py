"""Paired win rate of a head against Gaussian noise (paper Tables 1 and 2).

For seed round r (0 .. seeds-1) and prompt i, both images use eps drawn with
`Generator("cpu").manual_seed(r * len(prompts) + i)` (sampling.draw_eps), so the pair differs only
in the noise model. Per scorer: win rate = share of prompts where the head's image scores higher
(ties count half), reported as mean (std) over rounds; mean scores of both noise sources, plus
the Gaussian two-step sampler as Table 2's reference row, and time per image.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from . import sampling
from .render import images_from_noise, text_embeddings


@dataclass
class EvalResult:
    """Per scorer label: lists over seed rounds."""

    head_mode: str
    scorers: list[str]
    prompts: int
    seeds: int
    win_rate: dict = field(default_factory=dict)  # label -> [rate per round]
    score: dict = field(default_factory=dict)  # method -> label -> [mean score per round]
    seconds_per_image: dict = field(default_factory=dict)  # method -> seconds
    test_time: str = "plain"  # what every method spent per image (test_time.TestTime.label)
    refine_curve: dict = field(default_factory=dict)  # method -> mean best-so-far per iterate

    def summary(self) -> dict:
        """JSON-ready: mean and std over rounds of every number."""
        def ms(xs):
            return {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs), "runs": xs}
        return {"head_mode": self.head_mode, "prompts": self.prompts, "seeds": self.seeds,
                "win_rate": {k: ms(v) for k, v in self.win_rate.items()},
                "score": {m: {k: ms(v) for k, v in d.items()} for m, d in self.score.items()},
                "seconds_per_image": self.seconds_per_image, "test_time": self.test_time,
                "refine_curve": self.refine_curve}


def _method_names(mode: str) -> tuple[str, str, str]:
    return "gaussian 1-step", "gaussian 2-step", f"{mode} 1-step"


def _images(test_time, head, components, scorers, chunk, seeds, eps, emb, schedule, shape,
            curves: dict, method: str) -> torch.Tensor:
    """One method's images [B, 3, H, W] in [0, 1]: plain, or with test-time compute (whose
    candidates/iterates are ranked by the weighted total of all scorers)."""
    if test_time is None or test_time.plain:
        noise = eps if head is None else head(eps, emb)
        steps = len(schedule.timesteps)  # Euler-ancestral: later noise from the seeds, as generate
        z = sampling.draw_step_noise(seeds, shape, steps) if schedule.ancestral else None
        return images_from_noise(components, noise, emb, schedule, z)
    from .test_time.search import apply

    f = components.spec.vae_scale_factor
    images, done = apply(test_time, components, head or sampling.gaussian, scorers, chunk, seeds,
                         schedule, shape[1] * f, shape[2] * f)
    if done is not None:  # sum over images of the best-so-far score at each iterate
        curve = [x * len(chunk) for x in done.best_so_far()]
        old = curves.get(method, [0.0] * len(curve))
        curves[method] = [a + b for a, b in zip(old, curve)]
    return images


@torch.no_grad()
def evaluate(head, components, scorers, prompts: list[str], seeds: int = 5, batch_size: int = 8,
             height: int | None = None, width: int | None = None, two_step: bool = True,
             on_batch=None, test_time=None) -> EvalResult:
    """Score head and Gaussian images for every (round, prompt); see the module docstring.
    A size left out is the head's (its latent shape fixes the image size)."""
    f = components.spec.vae_scale_factor
    shape = components.spec.latent_shape(height or head.config.latent_shape[1] * f,
                                         width or head.config.latent_shape[2] * f)
    one = sampling.Schedule.from_spec(components.spec.scheduler, 1)
    two = sampling.Schedule.from_spec(components.spec.scheduler, 2) if two_step else None
    gauss1, gauss2, mine = _method_names(head.config.kind)
    result = EvalResult(head.config.kind, scorers.labels, len(prompts), seeds,
                        test_time=test_time.label if test_time is not None else "plain")
    methods = [gauss1, mine] + ([gauss2] if two else [])
    seconds, curves = {m: 0.0 for m in methods}, {}
    for r in range(seeds):
        per = {m: [[] for _ in scorers.labels] for m in methods}
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            chunk_seeds = [r * len(prompts) + i + j for j in range(len(chunk))]
            eps = sampling.draw_eps(chunk_seeds, shape).to(components.device)
            emb = text_embeddings(components, chunk)
            noises = {gauss1: (None, one), mine: (head, one)}
            if two:
                noises[gauss2] = (None, two)
            for m, (source, schedule) in noises.items():
                t0 = time.perf_counter()
                images = _images(test_time, source, components, scorers, chunk, chunk_seeds, eps,
                                 emb, schedule, shape, curves, m)
                seconds[m] += time.perf_counter() - t0
                for k, s in enumerate(scorers.each(images, chunk)):
                    per[m][k].append(s.cpu())
            if on_batch is not None:
                on_batch(len(chunk))
        for k, label in enumerate(scorers.labels):
            a, b = torch.cat(per[gauss1][k]), torch.cat(per[mine][k])
            wins = ((b > a).float() + 0.5 * (b == a).float()).mean().item()
            result.win_rate.setdefault(label, []).append(wins)
            for m in methods:
                result.score.setdefault(m, {}).setdefault(label, []).append(
                    torch.cat(per[m][k]).mean().item())
    result.seconds_per_image = {m: s / (seeds * len(prompts)) for m, s in seconds.items()}
    result.refine_curve = {m: [x / (seeds * len(prompts)) for x in c] for m, c in curves.items()}
    return result


def markdown(result: EvalResult, title: str = "") -> str:
    """Table 1 (win rate vs Gaussian, mean (std) over seeds) and Table 2 (scores and time)."""
    s = result.summary()
    lines = [f"## {title}" if title else "## Evaluation", "",
             f"{s['prompts']} prompts x {s['seeds']} seeds; paired: both images of a pair share "
             "prompt and eps.", "",
             f"Table 1. Win rate (%) of {result.head_mode.upper()} noise against the standard "
             "Gaussian, mean (std) over seeds.", "",
             "| scorer | win rate (%) |", "|---|---|"]
    for label, v in s["win_rate"].items():
        lines.append(f"| {label} | {100 * v['mean']:.1f} ({100 * v['std']:.1f}) |")
    lines += ["", "Table 2. Mean score, mean (std) over seeds, and sampling time per image "
              f"(UNet + decoder; batched; test-time compute: {result.test_time}).", "",
              "| method | " + " | ".join(result.scorers) + " | s / image |",
              "|---|" + "---|" * (len(result.scorers) + 1)]
    for m, per in s["score"].items():
        cells = [f"{per[k]['mean']:.4f} ({per[k]['std']:.4f})" for k in result.scorers]
        lines.append(f"| {m} | " + " | ".join(cells) +
                     f" | {s['seconds_per_image'][m]:.4f} |")
    return "\n".join(lines) + "\n"
