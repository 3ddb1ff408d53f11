"""Measure export on this machine: ORT-vs-torch parity (tiny, fp32/fp16), export and engine build
times and sizes. Writes bench/results/<machine>/export.json and export.md.

    python -m pahi_rt.bench.export_report --machine cpu-2core
    python -m pahi_rt.bench.export_report --machine cpu-2core --full   # + synthetic fp16 (heavy)
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import sampling
from ..components import load_components
from ..export.artifacts import export_artifacts
from ..export.build import ExportOptions
from ..runtime.backend import MODES, RunConfig, null_timer
from ..runtime.ort_backend import OrtBackend
from ..runtime.torch_backend import TorchBackend

PROMPTS = ["a red fox in the snow", "an astronaut riding a horse", "a bowl of ramen",
           "a lighthouse at dusk"]


def random_pahi_head(spec, height, width, seed=0):
    from ..noise.head import HeadConfig, build_head

    head = build_head(HeadConfig("pahi", spec.latent_shape(height, width), spec.text_dim, 16))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return head.eval()


def tiny_parity(workdir: Path) -> dict:
    comps = load_components("tiny")
    head = random_pahi_head(comps.spec, 64, 64)
    ids = sampling.tokenize(comps.tokenizer, PROMPTS).numpy()
    eps = sampling.draw_eps(range(len(PROMPTS)), comps.spec.latent_shape(64, 64)).numpy()
    rows = {}
    for precision in ("fp32", "fp16"):
        out = workdir / precision
        engines = ("pahi-1step",) if precision == "fp16" else ("pahi-1step", "gaussian-2step")
        t0 = time.perf_counter()
        report = export_artifacts(comps, out, ExportOptions(64, 64, len(PROMPTS), precision,
                                                            engines=_if_trt(engines)), head)
        rows[f"export_{precision}_s"] = round(time.perf_counter() - t0, 1)
        rows[f"artifacts_{precision}"] = _artifact_rows(report.manifest)
        for mode in ("pahi-1step", "gaussian-1step", "gaussian-2step"):
            cfg = RunConfig(MODES[mode], len(PROMPTS), 64, 64, precision)
            src = head if mode.startswith("pahi") else sampling.gaussian
            ref = TorchBackend(cfg, comps, src).run(ids, eps).astype(int)
            ort = OrtBackend(cfg, out, comps.spec, providers=("CPUExecutionProvider",))
            for path, img in (("fused", ort.run(ids, eps)),
                              ("staged", ort.run_staged(ids, eps, null_timer))):
                d = np.abs(img.astype(int) - ref)
                rows[f"{precision} {mode} {path}"] = {"max": int(d.max()),
                                                      "mean": round(float(d.mean()), 3)}
    return rows


def _if_trt(engines):
    import importlib.util

    ok = any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_rtx"))
    return engines if ok else ()


def _artifact_rows(manifest) -> list[dict]:
    return [{"path": e["path"], "kind": e["kind"], "MiB": round(e["size_bytes"] / 2**20, 2),
             "seconds": e.get("build_seconds", e.get("seconds"))} for e in manifest["artifacts"]]


def full_size(out: Path, graphs: tuple[str, ...]) -> dict:
    """synthetic (SD-Turbo architecture, random weights), 512x512, fp16 graphs + UNet engine.

    On a 24 GiB machine the fused graph (all 1.2B parameters traced at once) does not fit
    beside the torch model; the component graphs do."""
    t0 = time.perf_counter()
    comps = load_components("synthetic")
    report = export_artifacts(comps, out, ExportOptions(
        512, 512, 1, "fp16", graphs=graphs, engines=_if_trt(("unet",))),
        progress=lambda m: print(m, time.strftime("%X"), flush=True))
    return {"total_s": round(time.perf_counter() - t0, 1),
            "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1),
            "artifacts": _artifact_rows(report.manifest)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", default="cpu-2core")
    ap.add_argument("--full", action="store_true", help="also the full-size synthetic fp16 export")
    ap.add_argument("--full-out", default=None, help="artifact dir for --full")
    args = ap.parse_args()
    results_dir = Path(__file__).parent / "results" / args.machine
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "export.json"
    if args.full:
        out = Path(args.full_out or tempfile.mkdtemp(prefix="pahi-synthetic-"))
        new = {"synthetic_fp16_512": full_size(out, ("unet", "text_encoder", "decoder"))}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            new = {"tiny": tiny_parity(Path(tmp))}
    results = json.loads(path.read_text()) if path.exists() else {}  # merge with other runs
    results.update(new)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
