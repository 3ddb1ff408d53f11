"""Tables (markdown) and a plot (PNG) from scripts/feedback_lab.py's JSON lines.

    python scripts/feedback_lab_report.py            # reads and writes bench/results/cpu-2core/

feedback_variants.jsonl -> feedback_variants.md; feedback_curves.jsonl (+ more JSONL files given
with --extra, e.g. more seeds) -> feedback_curves.md and feedback_curves.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results/cpu-2core"
MACHINE = ("shared 2-core AMD EPYC (family 25 model 17, Zen 4: AVX2, AVX512F/BW/VL, "
           "AVX512_BF16, AVX512_VNNI, no AMX), no GPU, OMP_NUM_THREADS=1, other agents' jobs "
           "running at the same time")
HELD_OUT = ("day_night", "warm")
LAB = "OMP_NUM_THREADS=1 PYTHONPATH=tests python scripts/feedback_lab.py curves"
CURVE_COMMANDS = [f"{LAB} --tasks day_night warm --sizes 30 100 300 1000 3000 --seeds 1",
                  f"{LAB} --tasks day_night warm --sizes 100 1000 --seeds 1 --first-seed 1",
                  f"{LAB} --tasks warm day_night --objectives kto --sizes 10000 --seeds 1",
                  f"{LAB} --tasks warm day_night --objectives dpo --sizes 10000 --seeds 1",
                  "python scripts/feedback_lab_report.py"]


def read(paths) -> list[dict]:
    return [json.loads(line) for p in paths if Path(p).is_file()
            for line in Path(p).read_text().splitlines() if line.strip()]


def pooled(rows: list[dict]) -> dict:
    """(task, objective, n, variant) -> all runs of every file (seed 0 counted once)."""
    out: dict = {}
    for r in rows:
        key = (r["task"], r["objective"], r["n"], r["variant"])
        runs = out.setdefault(key, {})
        for i, run in enumerate(r["runs"]):
            runs.setdefault(r.get("first_seed", 0) + i, run)  # one run per seed
    return {k: list(v.values()) for k, v in out.items()}


def cell(runs: list[dict]) -> str:
    wins = [r["win"] for r in runs]
    std = statistics.pstdev(wins) if len(wins) > 1 else None
    nohead = sum(r.get("status") == "no preference found" for r in runs)
    text = f"{100 * statistics.fmean(wins):.1f}"
    text += f" ({100 * std:.1f})" if std is not None else ""
    text += f" [{len(wins)}]"
    return text + (f" {nohead}x no head" if nohead else "")


def seconds(runs: list[dict]) -> str:
    trained = [r["wall_seconds"] for r in runs if r.get("status") != "no preference found"]
    return f"{statistics.fmean(trained):.0f}" if trained else "-"


def variants_md(rows: list[dict]) -> str:
    table = pooled(rows)
    lines = ["# Feedback method variants on the tuning tasks (`tiny`, simulated users)", "",
             f"Machine: {MACHINE}. Win rate (%) against Gaussian noise on the held-out prompts "
             "(objects never seen), one training run per cell [runs]; s: wall seconds of the "
             "training run (whole in-process call, machine shared). Command: "
             "`OMP_NUM_THREADS=1 PYTHONPATH=tests python scripts/feedback_lab.py variants "
             "--seeds 1`. These runs checked the reward model's cross-validated accuracy "
             "against a flat 55% (every run passed); the default now asks for chance + 2 "
             "standard errors (60% at 100 records, 53% at 1,000), as the curves use.", "",
             "| task | objective | labels | variant | win rate (%) | s |",
             "|---|---|---:|---|---:|---:|"]
    for (task, obj, n, variant), runs in table.items():
        lines.append(f"| {task} | {obj} | {n:,} | {variant} | {cell(runs)} | {seconds(runs)} |")
    return "\n".join(lines) + "\n"


def curves_md(rows: list[dict]) -> str:
    table = pooled(rows)
    tasks = list(dict.fromkeys(k[0] for k in table))
    sizes = sorted({k[2] for k in table})
    lines = ["# Learning curves: win rate vs number of feedback records (`tiny`, default "
             "options)", "",
             f"Machine: {MACHINE}. Simulated users label Gaussian 1-step images "
             "(scripts/feedback_lab.py docstring); `pahi-rt train --objective kto|dpo` "
             "defaults (reward-model method); win rate (%) against Gaussian noise on held-out "
             "prompts, mean (std over training runs) [runs]. `no head`: the run found no "
             "preference and wrote no head (the user keeps the start: counted as 50%). Tasks "
             f"{', '.join(HELD_OUT)} were never used to choose the method or its settings. "
             "KTO: N labels; DPO: N pairs (2N images).", "",
             "| task | mode | objective | " + " | ".join(f"{n:,}" for n in sizes) + " |",
             "|---|---|---|" + "---:|" * len(sizes)]
    for task in tasks:
        for obj in ("kto", "dpo"):
            cells = [cell(table[(task, obj, n, "default")]) if (task, obj, n, "default")
                     in table else "-" for n in sizes]
            mode = next(r["mode"] for r in rows if r["task"] == task)
            lines.append(f"| {task} | {mode} | {obj} | " + " | ".join(cells) + " |")
    lines += ["", "Commands (each appends to feedback_curves.jsonl; then the report):", "",
              "```bash", *CURVE_COMMANDS, "```", "",
              "Mean wall seconds per training run (whole in-process call on the shared machine; "
              "no-head runs excluded):", "",
              "| task | objective | " + " | ".join(f"{n:,}" for n in sizes) + " |",
              "|---|---|" + "---:|" * len(sizes)]
    for task in tasks:
        for obj in ("kto", "dpo"):
            cells = [seconds(table[(task, obj, n, "default")]) if (task, obj, n, "default")
                     in table else "-" for n in sizes]
            lines.append(f"| {task} | {obj} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pooled(rows)
    tasks = list(dict.fromkeys(k[0] for k in table))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for obj, marker in (("kto", "o"), ("dpo", "s")):
            pts = sorted((n, [r["win"] for r in runs]) for (t, o, n, v), runs in table.items()
                         if t == task and o == obj and v == "default")
            if not pts:
                continue
            xs = [n for n, _ in pts]
            means = [100 * statistics.fmean(w) for _, w in pts]
            lo = [100 * min(w) for _, w in pts]
            hi = [100 * max(w) for _, w in pts]
            ax.plot(xs, means, marker=marker, label=obj)
            ax.fill_between(xs, lo, hi, alpha=0.2)
        mode = next(r["mode"] for r in rows if r["task"] == task)
        held = " (held out)" if task in HELD_OUT else ""
        ax.set(xscale="log", ylim=(40, 102), xlabel="records (labels / pairs)",
               ylabel="win rate vs Gaussian (%)", title=f"{mode.upper()}: {task}{held}")
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.legend(loc="lower right")
    fig.suptitle("Feedback training, default options, tiny model (line: mean; band: min-max)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", nargs="*", default=[], help="more curve JSONL files")
    args = parser.parse_args()
    variants = read([RESULTS / "feedback_variants.jsonl"])
    if variants:
        (RESULTS / "feedback_variants.md").write_text(variants_md(variants))
    curves = read([RESULTS / "feedback_curves.jsonl", *args.extra])
    if curves:
        (RESULTS / "feedback_curves.md").write_text(curves_md(curves))
        plot(curves, RESULTS / "feedback_curves.png")
    print("wrote", *(p.name for p in RESULTS.glob("feedback_*.md")), sep="\n  ")
    print(f"load average now: {os.getloadavg()}")


if __name__ == "__main__":
    main()
