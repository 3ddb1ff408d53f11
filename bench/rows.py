"""The bench's row names and what each runs, without torch: `pahi-rt bench` checks
`--backends` against them before the heavy imports."""
from __future__ import annotations

REFERENCE = "diffusers"
# Row name -> (backend, PipelineConfig overrides). "-staged": the component graphs one by one;
# a precision override pins the row's precision whatever --precision says.
VARIANTS = {
    "torch": ("torch", {}), "torch-compile": ("torch", {"compile": True}),
    "torch-bf16": ("torch", {"precision": "bf16"}),
    "onnxruntime": ("onnxruntime", {}), "onnxruntime-staged": ("onnxruntime", {"fused": False}),
    "tensorrt": ("tensorrt", {}), "tensorrt-staged": ("tensorrt", {"fused": False}),
    "openvino": ("openvino", {}), "openvino-staged": ("openvino", {"fused": False}),
    "openvino-bf16": ("openvino", {"precision": "bf16"}),
    "openvino-int8": ("openvino", {"precision": "int8"}),
}
ROW_NAMES = tuple(VARIANTS) + (REFERENCE,)
