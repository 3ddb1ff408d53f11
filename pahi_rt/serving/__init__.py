"""Serving: an OpenAI-compatible image API on Ray Serve (`pahi-rt serve`; `app` binds the HTTP
ingress deployment `ingress.ImageIngress` to the model deployment `model.ImageModel`) and
offline batches on Ray Data (`pahi-rt generate --ray`; `offline.render_batches`). Only `schema`
is importable without Ray."""
