"""Sub-fp32 precisions on this CPU against fp32: pixels, scores and seconds per image.

    PYTHONPATH=tests python scripts/precision_report.py --model tiny --size 64 --out /tmp/p
    PYTHONPATH=tests flock /tmp/pahi-heavy.lock python scripts/precision_report.py \\
        --model synthetic --size 512 --images 4 \\
        --calibration ../shared/data/prompts/pickapic_flowgrpo_train.txt \\
        --prompts ../shared/data/prompts/pickapic_test500.txt \\
        --out bench/results/cpu-2core/precision_zen4

Every variant renders the same prompts and seeds (the same random PAHI head as `pahi-rt bench`)
through `open_pipeline`; each is compared with torch fp32: max and mean absolute difference in
levels of 255, and the mean score of the synthetic scorers (tests/synthetic_scorers.py,
colour_by_word + fixed_colour) minus fp32's. Seconds per image are the median of the calls after
the first (one process, variants one after another: a rough figure, the bench has the ratios).
int8 calibrates on the first 8 prompts of --calibration (the test prompts are never used).
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import numpy as np

VARIANTS = "torch:fp32,onnxruntime:fp32,openvino:fp32,openvino:bf16,openvino:int8,torch:bf16"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--modes", default="pahi-1step")
    ap.add_argument("--variants", default=VARIANTS, help="backend:precision list; the first is "
                    "the reference")
    ap.add_argument("--prompts", type=Path)
    ap.add_argument("--calibration", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    a = ap.parse_args()
    from pahi_rt.cpu import cpu_info
    from pahi_rt.prompts import read_prompts
    from pahi_rt.runtime.pipeline import load_model

    prompts = ([p.text for p in read_prompts(a.prompts)][:a.images] if a.prompts else
               [f"a {c} {o}" for c, o in zip(("red", "green", "blue", "yellow") * 4,
                                             ("cat", "house", "boat", "tree") * 4)][:a.images])
    calibration = (tuple(p.text for p in read_prompts(a.calibration))[:8] if a.calibration
                   else None)
    model = load_model(a.model, device="cpu", noise=("pahi", "gaussian"), random_heads=True,
                       height=a.size, width=a.size, log=print)
    rows = []
    for mode in a.modes.split(","):
        ref = None
        for backend, precision in (v.split(":") for v in a.variants.split(",")):
            images, seconds = render(model, backend, precision, mode, prompts, a.size,
                                     calibration)
            ref = images if ref is None else ref
            rows.append(compare(backend, precision, mode, images, ref, prompts, seconds))
            print(rows[-1], flush=True)
    result = {"model": a.model, "size": a.size, "prompts": prompts, "cpu": cpu_info().model,
              "cpu_features": list(cpu_info().flags), "rows": rows,
              "command": "python scripts/precision_report.py " + " ".join(
                  f"--{k} {v}" for k, v in vars(a).items() if v is not None)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def render(model, backend, precision, mode, prompts, size, calibration):
    """uint8 images [N, H, W, 3] and the median seconds per image after the first call."""
    from pahi_rt.hostmem import give_back_freed_memory
    from pahi_rt.export.first_use import export_on_first_use
    from pahi_rt.runtime.pipeline import PipelineConfig, open_pipeline
    from pahi_rt.specs import MODES, RenderShape

    out, times = [], []
    config = PipelineConfig(backend=backend, mode=MODES[mode],
                            shape=RenderShape(batch=1, height=size, width=size,
                                              precision=precision), calibration=calibration)
    with open_pipeline(model, config, log=print, export=export_on_first_use) as pipe:
        for i, p in enumerate(prompts):
            t0 = time.perf_counter()
            out.append(pipe([p], [i])[0])
            times.append(time.perf_counter() - t0)
    model.close()  # shared sessions and the bf16 copy of the torch weights
    gc.collect()
    give_back_freed_memory()
    return np.stack(out), statistics.median(times[1:] or times)


def compare(backend, precision, mode, images, ref, prompts, seconds) -> dict:
    from synthetic_scorers import colour_by_word, fixed_colour

    from pahi_rt.pixels import uint8_to_unit

    def score(x):
        t = uint8_to_unit(x)
        return {f.__name__: float(f()(t, prompts).mean()) for f in (colour_by_word, fixed_colour)}
    diff = np.abs(images.astype(int) - ref.astype(int))
    s, r = score(images), score(ref)
    return {"backend": backend, "precision": precision, "mode": mode,
            "max": int(diff.max()), "mean": float(diff.mean()),
            "score_delta": {k: s[k] - r[k] for k in s}, "seconds": seconds}


def markdown(result: dict) -> str:
    lines = [f"# Precision vs fp32: `{result['model']}` {result['size']}x{result['size']}", "",
             f"`{result['command']}`", "",
             f"CPU: {result['cpu']}, features: {' '.join(result['cpu_features'])}. "
             f"{len(result['prompts'])} prompts, seeds 0..; reference: torch fp32. Shared "
             "machine: seconds are rough (variants ran one after another).", "",
             "| mode | backend | precision | max | mean | score delta (colour_by_word / "
             "fixed_colour) | s/image |", "|---|---|---|---:|---:|---|---:|"]
    for r in result["rows"]:
        d = r["score_delta"]
        lines.append(f"| {r['mode']} | {r['backend']} | {r['precision']} | {r['max']} | "
                     f"{r['mean']:.3f} | {d['colour_by_word']:+.4f} / {d['fixed_colour']:+.4f}"
                     f" | {r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
