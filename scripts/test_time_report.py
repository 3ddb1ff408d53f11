"""Test-time compute trade-off: held-out score vs wall time per image for {gaussian, pahi} x
{plain, best-of 2/4/8, refine 5/10/20} on `tiny` with the synthetic colour scorer, plus the time
per image of plain / best-of 2 / refine at full size (`synthetic`, 512x512, CPU).

    OMP_NUM_THREADS=1 PYTHONPATH=tests python scripts/test_time_report.py [--skip-full-size]

Writes bench/results/$MACHINE/test_time.{md,json,png}. Every tiny grid point is one
`pahi-rt eval --best-of N | --refine K` run on the same trained head, prompts and seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCORER = "synthetic_scorers:colour_by_word"
GRID = [(), ("--best-of", "2"), ("--best-of", "4"), ("--best-of", "8"), ("--refine", "5"),
        ("--refine", "10"), ("--refine", "20")]
TRAIN = ("--model tiny --height 64 --width 64 --device cpu --steps 200 --batch-size 8 "
         "--val-every 20 --patience 5 --hidden 144 --pretrain-steps 50")
EVAL = "--model tiny --device cpu --seeds 3 --batch-size 16 --no-two-step"


def pahi_rt(*args: str) -> None:
    subprocess.run(["pahi-rt", *args], check=True, stdout=subprocess.DEVNULL)


def tiny_grid(work: Path) -> dict:
    from synthetic_scorers import colour_prompts

    train, held_out = colour_prompts()
    (work / "train.txt").write_text("\n".join(train))
    (work / "val.txt").write_text("\n".join(held_out[:8]))
    (work / "test.txt").write_text("\n".join(held_out[8:] + held_out[:8]))
    head = work / "pahi"
    pahi_rt("train", "--mode", "pahi", "--scorer", SCORER, "--prompts", str(work / "train.txt"),
            "--val-prompts", str(work / "val.txt"), *TRAIN.split(), "--out", str(head))
    points = []
    for extra in GRID:
        out = work / f"eval{'_'.join(extra)}.json"
        pahi_rt("eval", "--head", str(head), "--scorer", SCORER, "--prompts",
                str(work / "test.txt"), *EVAL.split(), *extra, "--json", str(out))
        r = json.loads(out.read_text())
        for method, source in (("gaussian 1-step", "gaussian"), ("pahi 1-step", "pahi")):
            s = r["score"][method][SCORER]
            points.append({"noise": source, "test_time": r["test_time"], "score": s["mean"],
                           "score_std": s["std"], "s_per_image": r["seconds_per_image"][method],
                           "curve": r["refine_curve"].get(method)})
        print(f"tiny {r['test_time']}: done", file=sys.stderr)
    return {"points": points, "prompts": r["prompts"], "seeds": r["seeds"]}


def full_size(iters: int = 2) -> dict:
    """Time per image at 512x512 on `synthetic` (random weights; a random PAHI head)."""
    import torch

    from pahi_rt import sampling
    from pahi_rt.test_time import search as tt
    from pahi_rt.scorers.scorer_set import ScorerSet
    from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
    from pahi_rt.specs import MODES, RenderShape

    model = load_model("synthetic", device="cpu", noise=("pahi",), random_heads=True)
    scorers = ScorerSet.load([SCORER])
    prompt, rows = ["a red kite"], []
    for noise in ("gaussian", "pahi"):
        pipe = open_pipeline(model, PipelineConfig(backend="torch", mode=MODES[f"{noise}-1step"],
                                                     shape=RenderShape(batch=2)))
        pipe(prompt, [0])  # warm-up
        t0 = time.perf_counter()
        pipe(prompt, [0])
        rows.append({"noise": noise, "test_time": "plain", "s_per_image": time.perf_counter() - t0})
        t0 = time.perf_counter()
        tt.best_of(pipe, scorers, prompt, [0], 2)
        rows.append({"noise": noise, "test_time": "best-of 2",
                     "s_per_image": time.perf_counter() - t0})
        comps = model.torch_components("fp32")
        source = model.head(noise) or sampling.gaussian
        schedule = sampling.Schedule.from_spec(comps.spec.scheduler, 1)
        eps = sampling.draw_eps([0], pipe.latent_shape)
        t0 = time.perf_counter()
        done = tt.refine(comps, source, scorers, prompt, eps, tt.RefineConfig(iters), schedule)
        rows.append({"noise": noise, "test_time": f"refine {iters}",
                     "s_per_image": time.perf_counter() - t0, "s_per_iteration": done.seconds})
        print(f"full size {noise}: {rows[-3:]}", file=sys.stderr)
    return {"rows": rows, "threads": torch.get_num_threads(),
            "peak_rss_gb": _peak_rss_gb(), "load_average": os.getloadavg()}


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def iterations_to_reach(points: list[dict]) -> dict:
    """From the refine-20 curves: the first iterate at which PAHI's best-so-far mean reaches the
    Gaussian-started final (iterate 20) mean."""
    curves = {p["noise"]: p["curve"] for p in points if p["test_time"] == "refine 20"}
    target = curves["gaussian"][-1]
    hit = next((t for t, v in enumerate(curves["pahi"]) if v >= target), None)
    return {"gaussian_final": target, "pahi_iterations": hit,
            "gaussian_iterations": len(curves["gaussian"]) - 1, "curves": curves}


def markdown(result: dict) -> str:
    tiny, reach = result["tiny"], result["reach"]
    lines = ["# Test-time compute on top of the head (CPU, 2 cores, shared)", "",
             "Produced by:", "", "```bash", result["command"], "```", "",
             "## Tiny: held-out score vs wall time per image", "",
             f"`tiny` (random weights, 64x64, one Euler step), a PAHI head trained for the "
             f"synthetic `colour_by_word` task (`pahi-rt train --mode pahi --scorer {SCORER} "
             f"{TRAIN}`, as scripts/train_tiny.sh), then one `pahi-rt eval {EVAL} --scorer "
             f"{SCORER} [--best-of N | --refine K]` per column on {tiny['prompts']} held-out "
             f"prompts x {tiny['seeds']} seeds. The scorer that ranks candidates / drives the "
             "refinement is the one reported (a known-optimum task, not an independent judge). "
             "Score: mean (std over seeds), higher is better (0 is the optimum). Time: wall "
             "seconds per image, batches of 16.", "",
             "| noise | test-time compute | score | s / image |", "|---|---|---:|---:|"]
    for p in tiny["points"]:
        lines.append(f"| {p['noise']} | {p['test_time']} | {p['score']:.3f} "
                     f"({p['score_std']:.3f}) | {p['s_per_image']:.4f} |")
    hit = reach["pahi_iterations"]
    lines += ["", "Refinement curves (mean best-so-far score per iterate, refine 20 run):", "",
              "| iterate | " + " | ".join(str(t) for t in (0, 1, 2, 3, 5, 10, 15, 20)) + " |",
              "|---|" + "---:|" * 8]
    for noise, curve in reach["curves"].items():
        lines.append(f"| {noise} | " + " | ".join(f"{curve[t]:.3f}" for t in
                                                  (0, 1, 2, 3, 5, 10, 15, 20)) + " |")
    verdict = (f"**confirmed**: PAHI-started refinement reaches the Gaussian-started final score "
               f"({reach['gaussian_final']:.3f} after {reach['gaussian_iterations']} iterations) "
               f"after {hit} iteration(s)." if hit is not None and
               hit < reach["gaussian_iterations"] else
               "**not confirmed**: PAHI-started refinement did not reach the Gaussian-started "
               f"final score ({reach['gaussian_final']:.3f}) in fewer iterations.")
    lines += ["", f"Prediction check: {verdict}", ""]
    full = result.get("full_size")
    if full:
        lines += ["## Full size: time per image (synthetic 512x512, CPU, fp32)", "",
                  "`synthetic` preset (SD-Turbo shapes, random weights), one prompt, batch 1, "
                  f"torch backend, {full['threads']} threads on a shared 2-core machine; one "
                  "timed call each after one plain warm-up call (so these are single "
                  "measurements, not p50s). Peak RSS of the process "
                  f"{full['peak_rss_gb']:.1f} GB; load average (1/5/15 min) at the end "
                  f"{' / '.join(f'{x:.1f}' for x in full.get('load_average', []))} (this "
                  "process alone is ~2).", "", *([full["note"], ""] if "note" in full else []),
                  "| noise | test-time compute | s / image | s per refine iteration |",
                  "|---|---|---:|---|"]
        for r in full["rows"]:
            its = ", ".join(f"{x:.1f}" for x in r.get("s_per_iteration", [])) or "-"
            lines.append(f"| {r['noise']} | {r['test_time']} | {r['s_per_image']:.1f} | {its} |")
    lines += ["", f"Python {platform.python_version()}, {platform.machine()}.", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for noise, colour in (("gaussian", "tab:blue"), ("pahi", "tab:orange")):
        pts = [p for p in result["tiny"]["points"] if p["noise"] == noise]
        for kind, marker in (("plain", "o"), ("best-of", "s"), ("refine", "^")):
            sel = [p for p in pts if p["test_time"].startswith(kind)]
            a.scatter([p["s_per_image"] * 1e3 for p in sel], [p["score"] for p in sel],
                      c=colour, marker=marker, label=f"{noise} {kind}")
            for p in sel:
                a.annotate(p["test_time"].split()[-1], (p["s_per_image"] * 1e3, p["score"]),
                           fontsize=7)
        b.plot(result["reach"]["curves"][noise], c=colour, label=f"{noise}-started")
    a.set(xscale="log", xlabel="ms per image (tiny, CPU)", ylabel="held-out score",
          title="score vs time")
    b.set(xlabel="refinement iterate", ylabel="mean best-so-far score",
          title="refine 20 curves")
    a.legend(fontsize=7)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-full-size", action="store_true")
    ap.add_argument("--full-size-iters", type=int, default=2)
    ap.add_argument("--only-full-size", action="store_true",
                    help="Keep the tiny grid of an earlier run's JSON; add the full-size rows.")
    args = ap.parse_args()
    out = ROOT / "bench" / "results" / os.environ.get("MACHINE", "cpu-2core")
    out.mkdir(parents=True, exist_ok=True)
    flags = [f for f, on in (("--skip-full-size", args.skip_full_size),
                             ("--only-full-size", args.only_full_size)) if on]
    command = (f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} PYTHONPATH=tests "
               f"python scripts/test_time_report.py {' '.join(flags)}").strip()
    if args.only_full_size:
        old = json.loads((out / "test_time.json").read_text())
        lines = [c for c in old["command"].splitlines() if "--only-full-size" not in c]
        result = {**old, "command": "\n".join(lines + [command])}
    else:
        with tempfile.TemporaryDirectory() as work:
            tiny = tiny_grid(Path(work))
        result = {"command": command, "tiny": tiny, "reach": iterations_to_reach(tiny["points"])}
        (out / "test_time.json").write_text(json.dumps(result, indent=2))  # before the slow part
    if not args.skip_full_size:
        result["full_size"] = full_size(args.full_size_iters)
    (out / "test_time.json").write_text(json.dumps(result, indent=2))
    (out / "test_time.md").write_text(markdown(result))
    plot(result, out / "test_time.png")
    print(f"wrote {out}/test_time.md")


if __name__ == "__main__":
    main()
