"""Interchangeable runtimes (torch, onnxruntime, tensorrt) behind one protocol (`backend.Backend`)."""
