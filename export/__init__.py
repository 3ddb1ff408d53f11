"""ONNX export, graph cleanup, TensorRT engines, manifest and cache (installed as
pahi_rt.export)."""
