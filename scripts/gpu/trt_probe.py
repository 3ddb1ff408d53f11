"""Can TensorRT(-RTX) build and run an engine on this GPU? Builds the tiny model's fused
gaussian-1step engine for the local GPU (target `current`) and runs it once; prints OK, or
the exact error and exits 1."""
from __future__ import annotations

import sys
import tempfile
import traceback

from pahi_rt.export.first_use import export_on_first_use
from pahi_rt.runtime.pipeline import PipelineConfig, load_model, open_pipeline
from pahi_rt.specs import MODES, RenderShape

try:
    model = load_model("tiny", device="cuda", height=64, width=64)
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["PAHI_RT_CACHE"] = cache
        with open_pipeline(model, PipelineConfig(backend="tensorrt",
                                                 mode=MODES["gaussian-1step"],
                                                 shape=RenderShape(batch=1, height=64, width=64)),
                           print, export=export_on_first_use) as pipe:
            image = pipe(["a red fox"], [0])
        print("TRT OK", image.shape, image.dtype, float(image.std()))
except Exception as e:  # noqa: BLE001 - the message is the result
    traceback.print_exc()
    print(f"TRT FAILED: {type(e).__name__}: {e}")
    sys.exit(1)
