"""What writes artifacts (installed as pahi_rt.export): ONNX tracing and cleanup, fused graphs
composed from the components, TensorRT engine builds, manifest entries, and the exporter a run
is handed for exporting on first use (`first_use`). Reading artifacts is `pahi_rt.artifacts`."""
