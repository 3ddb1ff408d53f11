"""Serving: an OpenAI-compatible image API on Ray Serve (`pahi-rt serve`) and offline batches on
Ray Data (`pahi-rt generate --ray`). Only `schema` is importable without Ray."""
