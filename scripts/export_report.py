"""Export measurements on this machine -> bench/results/<machine>/export.{json,md}.

    python scripts/export_report.py tiny            # ORT vs torch pixels on tiny (seconds)
    python scripts/export_report.py full --work DIR # full-size: export peaks, pixels, engine
    python scripts/export_report.py markdown        # rewrite export.md from export.json

`full` runs the CLI under /usr/bin/time -v (peak RSS, wall time): the fp32 and fp16 exports of
every graph of the synthetic model at 512x512 (components + composed fused graphs), the fused
onnxruntime fp32 image against torch fp32 (one prompt and seed), and a TensorRT-RTX ahead-of-time
engine of the fused fp16 graph. Errors stop the script (nothing is swallowed).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "pahi_rt.cli"]
FULL = ["--model", "synthetic", "--height", "512", "--width", "512"]


def timed(args: list[str]) -> dict:
    """Run a CLI command under /usr/bin/time -v; its wall seconds and peak RSS (GiB)."""
    cmd = ["/usr/bin/time", "-v", *CLI, *args]
    print("+", " ".join(cmd[2:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)
    parts = [float(x) for x in wall.group(1).split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"command": "pahi-rt " + " ".join(args), "seconds": round(seconds, 1),
            "peak_rss_GiB": round(peak / 2**20, 2)}


def manifest_facts(directory: Path) -> dict:
    manifest = json.loads((directory / "manifest.json").read_text())
    files = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    return {"artifacts": [{"graph": e["graph"], "kind": e["kind"],
                           "MiB": round(e["size_bytes"] / 2**20, 1),
                           "seconds": e.get("build_seconds", e.get("seconds"))}
                          for e in manifest["artifacts"]],
            "directory_GiB": round(files / 2**30, 2)}


def full(work: Path) -> dict:
    out = {}
    for precision in ("fp32", "fp16"):
        directory = work / precision
        out[f"export_{precision}"] = timed(["export", *FULL, "--precision", precision,
                                            "--no-engine", "--out", str(directory)])
        out[f"export_{precision}"].update(manifest_facts(directory))
    out["pixels_fused_fp32_vs_torch"] = full_parity(work / "fp32")
    out["engine_fused_fp16_sm86"] = timed(["export", *FULL, "--precision", "fp16", "--graph",
                                           "gaussian-1step", "--engine-graph", "gaussian-1step",
                                           "--target", "sm86", "--out", str(work / "fp16")])
    engine = json.loads((work / "fp16" / "manifest.json").read_text())["artifacts"]
    out["engine_fused_fp16_sm86"]["engine_MiB"] = next(
        round(e["size_bytes"] / 2**20, 1) for e in engine if e["kind"] == "engine")
    return out


def full_parity(directory: Path) -> dict:
    """One prompt and seed through the fused fp32 graph (onnxruntime, CPU) and torch fp32."""
    from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
    from pahi_rt.specs import MODES, RenderShape

    model = load_model("synthetic", device="cpu")
    images = {}
    for backend in ("torch", "onnxruntime"):
        config = PipelineConfig(backend=backend, mode=MODES["gaussian-1step"],
                                shape=RenderShape(batch=1, height=512, width=512),
                                artifacts=directory if backend != "torch" else None)
        t0 = time.perf_counter()
        with open_pipeline(model, config) as pipe:
            images[backend] = pipe(["a red fox in the snow"], [0])
        print(backend, f"{time.perf_counter() - t0:.1f} s", flush=True)
    d = np.abs(images["onnxruntime"].astype(int) - images["torch"].astype(int))
    return {"max": int(d.max()), "mean": round(float(d.mean()), 4),
            "image_std": round(float(images["torch"].std()), 1)}


def tiny() -> dict:
    """ORT (fused = composed, and staged) vs torch pixels on the tiny model, fp32 and fp16."""
    import tempfile

    from pahi_rt.export.first_use import export_on_first_use
    from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
    from pahi_rt.specs import MODES, RenderShape

    prompts = ["a red fox in the snow", "an astronaut riding a horse", "a bowl of ramen",
               "a lighthouse at dusk"]
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["PAHI_RT_CACHE"] = cache
        model = load_model("tiny", device="cpu", noise=("pahi",), random_heads=True, height=64,
                           width=64)
        for precision in ("fp32", "fp16"):
            for mode in ("pahi-1step", "gaussian-1step", "gaussian-2step"):
                with open_pipeline(model, PipelineConfig(
                        backend="torch", mode=MODES[mode],
                        shape=RenderShape(batch=4, height=64, width=64))) as p:
                    ref = p(prompts, range(4)).astype(int)
                for fused in (True, False):
                    cfg = PipelineConfig(backend="onnxruntime", mode=MODES[mode],
                                         shape=RenderShape(batch=4, height=64, width=64,
                                                           precision=precision), fused=fused)
                    with open_pipeline(model, cfg, export=export_on_first_use) as pipe:
                        d = np.abs(pipe(prompts, range(4)).astype(int) - ref)
                    rows[f"{precision} {mode} {'fused' if fused else 'staged'}"] = {
                        "max": int(d.max()), "mean": round(float(d.mean()), 3)}
    return rows


def markdown(results: dict) -> str:
    lines = ["# Export on the 2-core CPU machine", "",
             "Produced by `python scripts/export_report.py tiny|full|markdown` (commands "
             "inside each row).", ""]
    if "tiny" in results:
        lines += ["## onnxruntime vs torch on `tiny` (64x64, batch 4, levels of 255)", "",
                  "| precision / mode / path | max | mean |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['max']} | {v['mean']} |" for k, v in results["tiny"].items()]
    if "full" in results:
        f = results["full"]
        lines += ["", "## Full size (`synthetic`, 512x512): every graph, components + composed "
                  "fused", "", "| step | wall s | peak RSS GiB | on disk GiB |",
                  "|---|---:|---:|---:|"]
        for key in ("export_fp32", "export_fp16", "engine_fused_fp16_sm86"):
            r = f[key]
            lines.append(f"| `{r['command']}` | {r['seconds']} | {r['peak_rss_GiB']} | "
                         f"{r.get('directory_GiB', '-')} |")
        for key in ("export_fp32", "export_fp16"):
            lines += ["", f"{key}: " + ", ".join(
                f"{a['graph']} {a['kind']} {a['MiB']} MiB ({a['seconds']} s)"
                for a in f[key]["artifacts"])]
        p = f["pixels_fused_fp32_vs_torch"]
        lines += ["", f"Fused onnxruntime fp32 vs torch fp32 (gaussian-1step, 'a red fox in the "
                  f"snow', seed 0): max {p['max']}, mean {p['mean']} levels (image std "
                  f"{p['image_std']}).", "",
                  f"TensorRT-RTX AOT engine of the fused fp16 graph (sm86): "
                  f"{f['engine_fused_fp16_sm86']['engine_MiB']} MiB."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("tiny", "full", "markdown"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/pahi-export-report"))
    ap.add_argument("--machine", default="cpu-2core")
    args = ap.parse_args()
    results_dir = ROOT / "bench" / "results" / args.machine
    path = results_dir / "export.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.what == "tiny":
        results["tiny"] = tiny()
    elif args.what == "full":
        results["full"] = full(args.work)
    path.write_text(json.dumps(results, indent=2) + "\n")
    (results_dir / "export.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
