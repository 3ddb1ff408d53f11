"""Learning a head from simulated users' feedback on `tiny` (CPU): KTO and DPO against scorer
training, and how the held-out win rate grows with the number of records.

Simulated users are the synthetic scorers of tests/synthetic_scorers.py: `colour_by_word` (PAHI
task: the target colour is named in the prompt) and `fixed_colour` (HI task: one colour for every
prompt). For the 48 training prompts, Gaussian images are made (seed k for image k, prompt k mod
48) and scored in batches in this process; then:
  kto, N records: images 0..N-1, labelled per prompt: the better-scoring half good, the rest bad
  dpo, N records: pairs (k, k + M/2) of the same prompt, the higher score wins (2N images)
The records are pahi-rt JSONL with the model's content key; `pahi-rt train` trains from them and
`pahi-rt eval` measures the paired win rate against Gaussian noise on the 16 held-out prompts
(objects never seen in training) over 5 seed rounds, with the scorer that labelled. Scorer
training (the existing objective, bench/train_tiny.sh's recipe) is the upper bound.

    OMP_NUM_THREADS=1 PYTHONPATH=tests python scripts/feedback_bench.py

writes bench/results/cpu-2core/feedback.md and .json. Every command it runs is in the report;
a failing command stops the script with its output.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"pahi": "colour_by_word", "hi": "fixed_colour"}
SIZES = (100, 1000, 10000)
SMALL = ["--model", "tiny", "--height", "64", "--width", "64", "--device", "cpu"]
# the density method (KTO/DPO on the head's own density) with the settings its table was made
# with; the default reward-model method is measured by scripts/feedback_lab.py
FEEDBACK_ARGS = ["--feedback-method", "density", "--steps", "500", "--batch-size", "72",
                 "--val-every", "25", "--patience", "4"]
SCORER_ARGS = ["--steps", "200", "--batch-size", "8", "--val-every", "20", "--patience", "5",
               "--hidden", "144", "--pretrain-steps", "50"]


def score_pool(n_images: int, prompts: list[str], batch: int = 256) -> dict:
    """{scorer name: [score of image k]} for Gaussian 1-step images, seed k, prompt k mod P."""
    import torch

    import synthetic_scorers
    from pahi_rt import sampling
    from pahi_rt.components import load_components
    from pahi_rt.render import images_from_noise, text_embeddings

    comps = load_components("tiny")
    shape = comps.spec.latent_shape(64, 64)
    schedule = sampling.Schedule.from_spec(comps.spec.scheduler, 1)
    scorers = {name: getattr(synthetic_scorers, name)() for name in MODES.values()}
    out = {name: [] for name in scorers}
    with torch.no_grad():
        for start in range(0, n_images, batch):
            seeds = list(range(start, min(start + batch, n_images)))
            texts = [prompts[k % len(prompts)] for k in seeds]
            images = images_from_noise(comps, sampling.draw_eps(seeds, shape),
                                       text_embeddings(comps, texts), schedule)
            for name, scorer in scorers.items():
                out[name] += scorer(images, texts).tolist()
    return out


def write_records(path: Path, objective: str, n: int, scores: list[float],
                  prompts: list[str]) -> None:
    """N pahi-rt feedback records (see the module docstring) as JSONL."""
    from pahi_rt.model_key import model_key

    source = {"model": "tiny", "decoder": "tiny (random TAESD)",
              "model_key": model_key("tiny"), "size": "64x64", "steps": 1, "noise": "gaussian"}
    lines, half = [], len(scores) // 2
    if objective == "dpo":
        for k in range(n):
            win, lose = (k, k + half) if scores[k] > scores[k + half] else (k + half, k)
            lines.append({"prompt": prompts[k % len(prompts)], "seed_win": win,
                          "seed_lose": lose, **source})
    else:
        by_prompt: dict[int, list[int]] = {}
        for k in range(n):
            by_prompt.setdefault(k % len(prompts), []).append(k)
        for p, ks in by_prompt.items():
            ranked = sorted(ks, key=lambda k: scores[k], reverse=True)
            good = set(ranked[:len(ranked) // 2])
            lines += [{"prompt": prompts[p], "seed": k, "label": "good" if k in good else "bad",
                       **source} for k in sorted(ks)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def run(cmd: list[str], log: Path) -> float:
    """Run a command (stdout+stderr to `log`); raise with the log's tail if it fails."""
    print("+", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    no_gain = proc.returncode == 2 and "error: no improvement" in log.read_text()
    if proc.returncode != 0 and not no_gain:  # no improvement: the start is kept, and measured
        tail = log.read_text()[-3000:]
        raise SystemExit(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{tail}")
    return seconds


def train_and_eval(work: Path, name: str, mode: str, train_args: list[str],
                   commands: list[str]) -> dict:
    """`pahi-rt train` into work/name then `pahi-rt eval` on the held-out prompts."""
    out, scorer = work / name, f"synthetic_scorers:{MODES[mode]}"
    train = ["pahi-rt", "train", "--mode", mode, *train_args, "--out", str(out)]
    evaluate = ["pahi-rt", "eval", "--head", str(out), "--model", "tiny", "--device", "cpu",
                "--scorer", scorer, "--prompts", str(work / "test.txt"), "--seeds", "5",
                "--batch-size", "16", "--no-two-step", "--json", str(out) + "-eval.json"]
    wall = run(train, work / f"{name}.train.log")
    run(evaluate, work / f"{name}.eval.log")
    commands += [shlex.join(c).replace(str(work), "$WORK") for c in (train, evaluate)]
    meta = json.loads((out / "config.json").read_text())["training"]
    result = json.loads((out.parent / f"{name}-eval.json").read_text())
    win = result["win_rate"][scorer]
    return {"name": name, "mode": mode, "win_mean": win["mean"], "win_std": win["std"],
            "win_runs": win["runs"], "train_seconds": meta["train_seconds"],
            "command_seconds": round(wall, 2), "steps": meta["steps"],
            "best_step": meta["best_step"], "val_accuracy": meta.get("val_accuracy"),
            "records": meta.get("records")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (default: temp)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cpu-2core/feedback")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1" or "tests" not in os.environ.get("PYTHONPATH",
                                                                                  ""):
        raise SystemExit("run as: OMP_NUM_THREADS=1 PYTHONPATH=tests python "
                         "scripts/feedback_bench.py")
    import torch

    from synthetic_scorers import colour_prompts

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="feedback-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    train_prompts, held_out = colour_prompts()
    (work / "test.txt").write_text("\n".join(held_out))
    (work / "train.txt").write_text("\n".join(train_prompts))
    (work / "val.txt").write_text("\n".join(held_out[:8]))
    pool_size = 2 * len(train_prompts) * -(-max(args.sizes) // len(train_prompts))
    t0 = time.perf_counter()
    pool = score_pool(pool_size, train_prompts)
    pool_seconds = time.perf_counter() - t0
    commands: list[str] = []
    rows = []
    for mode, scorer in MODES.items():
        rows.append({**train_and_eval(work, f"{mode}-scorer", mode, [
            *SMALL, "--scorer", f"synthetic_scorers:{scorer}", "--prompts",
            str(work / "train.txt"), "--val-prompts", str(work / "val.txt"), *SCORER_ARGS],
            commands), "objective": "scorer", "n": None})
        for objective in ("kto", "dpo"):
            for n in args.sizes:
                records = work / f"{mode}-{objective}-{n}.jsonl"
                write_records(records, objective, n, pool[scorer], train_prompts)
                rows.append({**train_and_eval(work, f"{mode}-{objective}-{n}", mode, [
                    "--objective", objective, "--feedback", str(records), *FEEDBACK_ARGS],
                    commands), "objective": objective, "n": n})
    from feedback_report import write_report

    write_report(args.out, rows, commands, pool_size, pool_seconds,
                 f"Python {platform.python_version()}, torch {torch.__version__}, "
                 f"{platform.machine()}, {os.cpu_count()} CPUs")
    print(f"wrote {args.out}.md and {args.out}.json")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
