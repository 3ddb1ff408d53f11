"""Interchangeable runtimes (torch, onnxruntime, tensorrt, openvino) behind one protocol
(`backend.Backend`), and the pipeline layer that opens them (`pipeline.py`). Exported artifacts
are read through `pahi_rt.artifacts`; nothing here imports `pahi_rt.export`."""
