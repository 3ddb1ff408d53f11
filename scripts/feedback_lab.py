"""Simulated-user feedback experiments on `tiny`, in one process: method variants and learning
curves on the same tasks, with the held-out win rate against Gaussian noise.

Tasks (simulated users, tests/synthetic_scorers.py): each labels Gaussian 1-step images of its
training prompts. Pool image k: seed POOL_SEED + k, prompt k mod P (P training prompts), so
round k // P has every prompt once. Scores are functions of an image's mean RGB, which is all
that is kept of the pool.
  kto, N labels: N pool images drawn at random (per --seeds round), labelled good when they
                 score above their prompt's median over the whole pool (a user's standard)
  dpo, N pairs:  N (prompt, two rounds) pairs drawn at random, the higher score wins
Win rate: paired against Gaussian noise on the task's held-out prompts (objects never seen in
training), EVAL_ROUNDS seeds each (seeds 0.., far from the pool's), ties half; as `pahi-rt eval`.

Tuning tasks (variants were chosen on these): colour_by_word (PAHI), fixed_colour (HI).
Held-out tasks (final measurement only): day_night (PAHI), warm (HI).

    OMP_NUM_THREADS=1 PYTHONPATH=tests python scripts/feedback_lab.py variants
    OMP_NUM_THREADS=1 PYTHONPATH=tests python scripts/feedback_lab.py curves
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
POOL_SEED = 1_000_000
EVAL_ROUNDS = 5
# task -> (mode, prompt set, scorer factory in synthetic_scorers, tuned on)
TASKS = {"colour_by_word": ("pahi", "colour", "colour_by_word", True),
         "fixed_colour": ("hi", "colour", "fixed_colour", True),
         "day_night": ("pahi", "day_night", "day_night", False),
         "warm": ("hi", "day_night", "warm", False)}


def prompt_sets() -> dict:
    import synthetic_scorers as ss
    return {"colour": ss.colour_prompts(), "day_night": ss.day_night_prompts()}


class Pool:
    """Mean RGB of Gaussian 1-step images of one prompt set (see the module docstring)."""

    def __init__(self, comps, prompts: list[str], size: int, batch: int = 128):
        from pahi_rt import sampling
        from pahi_rt.render import images_from_noise, text_embeddings

        self.prompts, self.shape = prompts, comps.spec.latent_shape(64, 64)
        schedule = sampling.Schedule.from_spec(comps.spec.scheduler, 1)
        emb = text_embeddings(comps, prompts)
        rgb = []
        with torch.no_grad():
            for start in range(0, size, batch):
                ks = list(range(start, min(start + batch, size)))
                eps = sampling.draw_eps([POOL_SEED + k for k in ks], self.shape)
                images = images_from_noise(comps, eps, emb[[k % len(prompts) for k in ks]],
                                           schedule)
                rgb.append(images.mean(dim=(2, 3)))
        self.rgb = torch.cat(rgb)

    def scores(self, scorer) -> torch.Tensor:
        """Scores of every pool image (the scorer reads a 1x1 'image' of its mean colour)."""
        texts = [self.prompts[k % len(self.prompts)] for k in range(len(self.rgb))]
        return scorer(self.rgb[:, :, None, None], texts)


def make_records(pool: Pool, scores: torch.Tensor, objective: str, n: int, seed: int) -> list:
    from pahi_rt.feedback.records import Record, Source

    source = Source(model="tiny", size="64x64", steps=1)
    p, g = len(pool.prompts), torch.Generator().manual_seed(seed)
    if objective == "kto":
        rounds = len(scores) // p
        median = scores[:rounds * p].reshape(rounds, p).median(0).values
        ks = torch.randperm(len(scores), generator=g)[:n].tolist()
        return [Record(pool.prompts[k % p], (POOL_SEED + k,), bool(scores[k] > median[k % p]),
                       source) for k in ks]
    pairs = [(r * 2 * p + i, (r * 2 + 1) * p + i) for r in range(len(scores) // (2 * p))
             for i in range(p)]
    out = []
    for j in torch.randperm(len(pairs), generator=g)[:n].tolist():
        a, b = pairs[j]
        win, lose = (a, b) if scores[a] > scores[b] else (b, a)
        out.append(Record(pool.prompts[a % p], (POOL_SEED + win, POOL_SEED + lose), None,
                          source))
    return out


class Judge:
    """Held-out win rate of a head against Gaussian noise (Gaussian scores computed once)."""

    def __init__(self, comps, prompts: list[str], scorer):
        from pahi_rt import sampling
        from pahi_rt.render import images_from_noise, text_embeddings

        self.comps, self.scorer, self.prompts = comps, scorer, prompts
        shape = comps.spec.latent_shape(64, 64)
        self.schedule = sampling.Schedule.from_spec(comps.spec.scheduler, 1)
        self.emb = text_embeddings(comps, prompts).repeat(EVAL_ROUNDS, 1, 1)
        self.eps = sampling.draw_eps(range(EVAL_ROUNDS * len(prompts)), shape)
        self.texts = prompts * EVAL_ROUNDS
        with torch.no_grad():
            self.base = scorer(images_from_noise(comps, self.eps, self.emb, self.schedule),
                               self.texts)
        self.images_from_noise = images_from_noise

    @torch.no_grad()
    def win_rate(self, head) -> tuple[float, float]:
        """(mean, std over rounds) of the paired win rate."""
        head = head.float().eval()
        s = self.scorer(self.images_from_noise(self.comps, head(self.eps, self.emb), self.emb,
                                               self.schedule), self.texts)
        wins = ((s > self.base).float() + 0.5 * (s == self.base).float())
        per = wins.reshape(EVAL_ROUNDS, -1).mean(1).tolist()
        return statistics.fmean(per), statistics.pstdev(per)


def train_one(comps, records, mode: str, objective: str, options: dict, seed: int) -> tuple:
    """(head, training record dict) of one feedback run with `options` over the defaults."""
    from pahi_rt.heads.checkpoint import load_head
    from pahi_rt.training.train_from_feedback import FeedbackConfig, feedback_defaults
    from pahi_rt.training.train_from_reward import train_feedback
    from pahi_rt.training.train_with_scorers import TrainConfig, make_accelerator

    fb_keys = set(FeedbackConfig.__dataclass_fields__)
    fb = FeedbackConfig(**{k: v for k, v in options.items() if k in fb_keys})
    settings = {**feedback_defaults(len(records), fb.method),
                **{k: v for k, v in options.items() if k not in fb_keys}}
    config = TrainConfig(mode=mode, objective=objective, height=64, width=64, seed=seed,
                         pretrain_steps=0, **settings)
    with tempfile.TemporaryDirectory() as out:
        run = train_feedback(comps, records, config, fb, out, make_accelerator("cpu", False))
        head = load_head(out, comps.spec, 64, 64)
        info = json.loads((Path(out) / "config.json").read_text())["training"]
    return head, {"steps": run.step, "best_step": run.best_step,
                  "train_seconds": round(run.seconds, 2), "status": info.get("status")}


VARIANTS = {  # name -> options over the defaults (feedback.feedback_defaults, FeedbackConfig)
    "reward model (default)": {},
    "density, full-res (the old default)": {"method": "density"},
    "density, grid 1": {"method": "density", "update_grid": 1},
    "density, grid 4": {"method": "density", "update_grid": 4},
}


def run_grid(comps, tasks, objectives, sizes, variants, seeds, pools, log) -> list[dict]:
    """Train and judge every (size, task, objective, variant) for each seed in `seeds`."""
    import synthetic_scorers as ss
    from pahi_rt.training.train_from_reward import NoPreferenceFound

    sets, rows, judges = prompt_sets(), [], {}
    for task in tasks:
        mode, pset, scorer_name, _ = TASKS[task]
        scorer = getattr(ss, scorer_name)()
        judges[task] = (Judge(comps, sets[pset][1], scorer), pools[pset].scores(scorer))
    for n in sizes:  # smallest first: a cut-short run still has whole small-size rows
        for task in tasks:
            mode, pset, _, _ = TASKS[task]
            judge, scores = judges[task]
            for objective in objectives:
                for name, options in variants.items():
                    wins, runs = [], []
                    for s in seeds:
                        records = make_records(pools[pset], scores, objective, n, seed=s)
                        t0 = time.perf_counter()
                        try:
                            head, meta = train_one(comps, records, mode, objective, options, s)
                            win, rounds_std = judge.win_rate(head)
                            meta["eval_rounds_std"] = rounds_std
                        except NoPreferenceFound:  # no head: the user keeps the start (50%)
                            meta, win = {"status": "no preference found"}, 0.5
                        meta["wall_seconds"] = round(time.perf_counter() - t0, 2)
                        wins.append(win)
                        runs.append({**meta, "win": win})
                    row = {"task": task, "mode": mode, "objective": objective, "n": n,
                           "first_seed": seeds[0],
                           "variant": name, "options": options, "win_mean": statistics.fmean(
                               wins), "win_std": statistics.pstdev(wins), "runs": runs}
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "options"}),
                          file=log, flush=True)
                    print(f"{task} {objective} {n} {name}: {100 * row['win_mean']:.1f} "
                          f"({100 * row['win_std']:.1f}) steps "
                          f"{[r.get('best_step') for r in runs]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("variants", "curves"))
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--objectives", nargs="+", default=["kto", "dpo"])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument("--try", dest="extra", action="append", default=[],
                        metavar="NAME=JSON", help="an extra variant: options as a JSON object")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        raise SystemExit("run with OMP_NUM_THREADS=1 PYTHONPATH=tests")
    torch.set_num_threads(1)
    from pahi_rt.components import load_components

    comps = load_components("tiny")
    if args.what == "variants":
        tasks = args.tasks or [t for t, v in TASKS.items() if v[3]]
        sizes = args.sizes or [100, 1000]
        variants = {k: v for k, v in VARIANTS.items()
                    if args.variants is None or k in args.variants}
        if args.extra and args.variants is None:
            variants = {}
        variants.update({e.split("=", 1)[0]: json.loads(e.split("=", 1)[1])
                         for e in args.extra})
    else:
        tasks = args.tasks or list(TASKS)
        sizes = args.sizes or [30, 100, 300, 1000, 3000, 10000]
        variants = {"default": {}}
    need = (2 if "dpo" in args.objectives else 1) * max(sizes)  # dpo: 2 images a pair
    pools = {}
    t0 = time.perf_counter()
    for pset, (train, _) in prompt_sets().items():
        if any(TASKS[t][1] == pset for t in tasks):
            pools[pset] = Pool(comps, train, need + (-need) % len(train))
    print(f"pools: {time.perf_counter() - t0:.0f} s", flush=True)
    out = args.out or ROOT / f"bench/results/cpu-2core/feedback_{args.what}.jsonl"
    with open(out, "a") as log:
        run_grid(comps, tasks, args.objectives, sizes, variants,
                 range(args.first_seed, args.first_seed + args.seeds), pools, log)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    main()
