"""Full-size pixel differences on the GPU: torch fp16 and onnxruntime fp16 (fused graph from
the export cache) against torch fp32, same prompts and seeds. Writes JSON to argv[1].

    python3 scripts/gpu/parity.py results/parity.json
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from pahi_rt.export.first_use import export_on_first_use
from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
from pahi_rt.specs import MODES, RenderShape

PROMPTS = ["a red fox in the snow, photograph", "an astronaut riding a horse on the moon",
           "a bowl of ramen, studio lighting", "a watercolor painting of a lighthouse"]


def main(out: str) -> None:
    size = int(os.environ.get("SIZE", 512))
    model = load_model(os.environ.get("MODEL", "synthetic"),
                       device=os.environ.get("DEVICE", "cuda"), noise=("pahi",),
                       random_heads=True, height=size, width=size)
    result = {}
    for mode in ("gaussian-1step", "pahi-1step"):
        runs = {}
        for name, backend, precision in (("torch fp32", "torch", "fp32"),
                                         ("torch fp16", "torch", "fp16"),
                                         ("onnxruntime fp16 fused", "onnxruntime", "fp16")):
            shape = RenderShape(batch=1, height=size, width=size, precision=precision)
            pipe = open_pipeline(model, PipelineConfig(backend=backend, mode=MODES[mode],
                                                       shape=shape), print,
                                 export=export_on_first_use)
            runs[name] = np.concatenate([pipe([p], [i]) for i, p in enumerate(PROMPTS)])
            pipe.close()
        ref = runs["torch fp32"].astype(int)
        result[mode] = {name: {"max": int(np.abs(x.astype(int) - ref).max()),
                               "mean": float(np.abs(x.astype(int) - ref).mean()),
                               "std_of_image": float(x.std())}
                        for name, x in runs.items() if name != "torch fp32"}
        print(mode, json.dumps(result[mode]))
    with open(out, "w") as f:
        json.dump({"prompts": PROMPTS, "seeds": list(range(len(PROMPTS))), "size": "512x512",
                   "model": "synthetic (random weights)", "levels_vs_torch_fp32": result}, f,
                  indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
