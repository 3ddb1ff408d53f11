"""Interchangeable runtimes (torch, onnxruntime, tensorrt) behind one protocol
(`backend.Backend`), and the pipeline layer that opens them (`pipeline.py`)."""
