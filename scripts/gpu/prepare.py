"""Export the full-size synthetic model's fp16 artifacts into $PAHI_RT_CACHE exactly as
`pahi-rt bench` would (same random head, same options), so the bench finds them. CPU only.

    python3 scripts/gpu/prepare.py --batch 1 [--precision fp16] [--engines]
"""
from __future__ import annotations

import argparse
import os
import resource
import time

from pahi_rt.export.first_use import export_on_first_use
from pahi_rt.runtime.pipeline import PipelineConfig, ensure_artifacts, load_model
from pahi_rt.specs import MODES, RenderShape

MODE_NAMES = ("pahi-1step", "gaussian-1step", "gaussian-2step")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--engines", action="store_true", help="also TensorRT engines (GPU)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    size = int(os.environ.get("SIZE", 512))
    model = load_model(os.environ.get("MODEL", "synthetic"), device=os.environ.get(
        "DEVICE", "cuda") if args.engines else "cpu", noise=[MODES[m].noise for m in MODE_NAMES],
        random_heads=True, height=size, width=size, log=print)
    backend = "tensorrt" if args.engines else "onnxruntime"
    for name in MODE_NAMES:
        config = PipelineConfig(backend=backend, mode=MODES[name],
                                shape=RenderShape(batch=args.batch, height=size, width=size,
                                                  precision=args.precision))
        directory = ensure_artifacts(model, config, print, export_on_first_use)
        print(f"{name} batch {args.batch}: {directory}  ({time.perf_counter() - t0:.0f} s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"done in {time.perf_counter() - t0:.0f} s, peak RSS {peak:.1f} GiB")


if __name__ == "__main__":
    main()
