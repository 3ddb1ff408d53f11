"""The full-VAE decoder (`--decoder vae`) of full-size `synthetic` (SD-Turbo's architecture:
diffusers AutoencoderKL, SD's VAE config, seeded random weights) against TAESD, at one image
size on this machine: per-image decode time (torch, onnxruntime), peak RSS, ONNX export time and
the onnxruntime pixels against torch's.

Each measurement runs in its own process (peak RSS is per process). Run it under the machine's
heavy-work lock, e.g.

    flock /tmp/pahi-heavy.lock python scripts/full_vae_report.py

which writes bench/results/cpu-2core/full_vae.md and .json. Timings: 1 warm-up, then `--runs`
decodes of batch 1, monotonic clock, p50 and min (a shared machine: min is the least disturbed).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("taesd-torch", "vae-torch", "vae-onnxruntime")


def _decoder(kind: str):
    from pahi_rt import decoders, taesd
    from pahi_rt.specs import PRESETS

    preset = PRESETS["synthetic"]  # the exact decoders `--model synthetic [--decoder vae]` uses
    if kind == "taesd":
        return taesd.build(preset.decoder, seed=preset.seed + 2), 1.0
    dec = decoders.build_vae(preset.vae, seed=preset.seed + 3)
    return dec, decoders.latent_scale(dec)


def _latents(size: int):
    import torch

    return torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))


def _time(fn, runs: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "runs": runs}


def phase(name: str, size: int, runs: int, work: Path) -> dict:
    import numpy as np
    import torch

    from pahi_rt import sampling
    from pahi_rt.export.graphs import DecoderGraph, graph_spec

    torch.set_num_threads(2)
    kind, backend = name.split("-")
    dec, scale = _decoder(kind)
    module = DecoderGraph(dec.eval().requires_grad_(False), scale)
    z = _latents(size)
    out = {"phase": name, "params_M": round(sum(p.numel() for p in dec.decoder.parameters())
                                           / 1e6, 1)}
    if backend == "torch":
        with torch.inference_mode():
            out.update(_time(lambda: module(z), runs))
            pixels = sampling.to_uint8(module(z)).numpy()
        np.save(work / f"{kind}.npy", pixels)
    else:
        import onnxruntime as ort

        from pahi_rt.export.onnx_export import export_graph

        path = work / "decoder.onnx"
        t0 = time.perf_counter()
        export_graph(module, (z,), graph_spec("decoder"), path)
        out["export_s"] = round(time.perf_counter() - t0, 1)
        del module, dec
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"latents": z.numpy()}
        out.update(_time(lambda: session.run(None, feed), runs))
        image = torch.from_numpy(session.run(None, feed)[0])
        pixels = sampling.to_uint8(image).numpy()
        ref = np.load(work / f"{kind}.npy")
        diff = np.abs(pixels.astype(int) - ref.astype(int))
        out.update(max_levels=int(diff.max()), mean_levels=round(float(diff.mean()), 3))
    out["peak_rss_GiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def _cpu() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def report(rows: list[dict], size: int, out: Path) -> None:
    lines = [f"# Full VAE vs TAESD decoder, `synthetic` (SD-Turbo architecture), {size}x{size}",
             "", f"CPU: {_cpu()} (Zen 4: AVX2, AVX512F/BW/VL, AVX512_BF16, AVX512_VNNI, no AMX), "
             "2 cores, 24 GiB, shared with other jobs (timings vary with their load; min is the "
             "least disturbed run). fp32, batch 1, 2 threads, 1 warm-up.", "",
             "Command: `flock /tmp/pahi-heavy.lock python scripts/full_vae_report.py "
             f"--size {size} --out {out}`", "",
             "| decoder | backend | decoder params (M) | decode p50 (ms) | min (ms) | export (s) "
             "| peak RSS (GiB) | pixels vs torch (max / mean levels) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind, backend = r["phase"].split("-")
        name = "full VAE (AutoencoderKL)" if kind == "vae" else "TAESD (AutoencoderTiny)"
        pix = f"{r['max_levels']} / {r['mean_levels']}" if "max_levels" in r else "reference"
        lines.append(f"| {name} | {backend} | {r['params_M']} | {r['p50_ms']} | {r['min_ms']} | "
                     f"{r.get('export_s', '-')} | {r['peak_rss_GiB']} | {pix} |")
    lines += ["", "Peak RSS is the whole process (Python, torch, the decoder; onnxruntime: also "
              "the export and the session). Decode only: the UNet and text encoder are the same "
              "for both decoders (bench/results/cpu-2core/bench_synthetic_fp32*.md)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"size": size, "cpu": _cpu(), "rows": rows},
                                                   indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/results/cpu-2core/full_vae"))
    ap.add_argument("--phase", choices=PHASES)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.size, args.runs, args.work)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in PHASES:
            done = subprocess.run([sys.executable, __file__, "--phase", name, "--size",
                                   str(args.size), "--runs", str(args.runs), "--work", work],
                                  check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    report(rows, args.size, args.out)


if __name__ == "__main__":
    main()
