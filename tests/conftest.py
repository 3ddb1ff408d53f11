"""Shared fixtures: tiny random diffusers checkpoints saved to disk, like diffusers' dummy parts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# One intra-op thread: the tiny models gain nothing from two, and on a shared 2-core machine
# two spinning OpenMP threads slow training steps down by 10x or more when a core is busy.
torch.set_num_threads(1)

from helpers import save_tiny_checkpoint  # noqa: E402 - after the thread/env settings


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=1234)


@pytest.fixture(scope="session")
def tiny_vae_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny checkpoint with a full VAE in vae/ (`--decoder vae`, single-file tests)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny_vae"), seed=4321, vae=True)


@pytest.fixture(scope="session")
def tiny_components():
    from pahi_rt.components import load_components

    return load_components("tiny")


@pytest.fixture(scope="session")
def tiny_xl_components():
    from pahi_rt.components import load_components

    return load_components("tiny-xl")


@pytest.fixture(scope="session")
def pahi_head():
    from helpers import random_head

    return random_head("pahi")


def _export(tmp_path_factory, components, head, precision, engines=()):
    from pahi_rt.export.artifacts import export_artifacts
    from pahi_rt.export.build import ExportOptions
    from pahi_rt.specs import RenderShape

    out = tmp_path_factory.mktemp(f"artifacts_{precision}")
    options = ExportOptions(RenderShape(2, 64, 64, precision), engines=engines)
    return export_artifacts(components, out, options, head, head_source="random pahi head")


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, tiny_components, pahi_head):
    """fp32 export of the tiny model (64x64, batch 2) with a PAHI head; with tensorrt_rtx
    importable, also a real (ahead-of-time, CPU) engine of the fused pahi graph."""
    from helpers import has_module

    engines = ("pahi-1step",) if has_module("tensorrt_rtx") or has_module("tensorrt") else ()
    return _export(tmp_path_factory, tiny_components, pahi_head, "fp32", engines)


@pytest.fixture(scope="session")
def xl_random_head(tiny_xl_components):
    """A random-weight PAHI head for tiny-xl (64x64: latents [4, 8, 8])."""
    from helpers import random_head

    return random_head("pahi", text_dim=tiny_xl_components.spec.text_dim, base_model="tiny-xl",
                       architecture="sdxl")


@pytest.fixture(scope="session")
def tiny_xl_artifacts(tmp_path_factory, tiny_xl_components, xl_random_head):
    """fp32 export of tiny-xl (64x64, batch 2) with a PAHI head: one text encoder graph with
    both encoders, a UNet taking text_embeds/time_ids, fused 1-step graphs (Euler-ancestral at
    2 steps has none: it runs staged)."""
    return _export(tmp_path_factory, tiny_xl_components, xl_random_head, "fp32")


@pytest.fixture(scope="session")
def tiny_artifacts_fp16(tmp_path_factory, tiny_components, pahi_head):
    """fp16 export; with a TensorRT flavour importable, a strongly typed fp16 engine too."""
    from helpers import has_module

    engines = ("pahi-1step",) if has_module("tensorrt_rtx") or has_module("tensorrt") else ()
    return _export(tmp_path_factory, tiny_components, pahi_head, "fp16", engines)


@pytest.fixture(scope="session")
def local_ray():
    """One real local Ray for the session (loopback only, as `pahi-rt serve` starts it), shut
    down at the end so no process outlives the tests."""
    pytest.importorskip("ray.serve")
    from pahi_rt.serving import cluster

    os.environ.pop("RAY_ADDRESS", None)  # never a cluster that happens to be configured
    how = cluster.connect(num_cpus=4)  # logical CPUs: one replica and one Ray Data actor
    yield
    from ray import serve

    serve.shutdown()
    cluster.disconnect(how)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVED = dict(model="tiny", height=64, width=64, device="cpu", max_batch=4, batch_wait_ms=100,
              more_sizes=((64, 128),), more_steps=(2,), max_active=24)


@pytest.fixture(scope="session")
def feedback_db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feedback") / "feedback.db"


@pytest.fixture(scope="session")
def server(local_ray, feedback_db) -> str:
    """The real HTTP server (Ray Serve, tiny model at 64x64 (and 128x64), 1 (and 2) steps,
    batches of up to 4; a replica takes 24 requests at once, 503 beyond; a feedback store);
    its base URL."""
    from pahi_rt.serving import app
    from pahi_rt.serving.schema import ServeSettings

    port = free_port()
    app.deploy(ServeSettings(**SERVED, feedback_db=str(feedback_db)), "127.0.0.1", port,
               max_queued=16)
    yield f"http://127.0.0.1:{port}"
    app.undeploy(started_here=False)


@pytest.fixture
def fresh_model_keys(tmp_path, monkeypatch):
    """model_key with an empty digest cache of its own and no memoised keys, before and after."""
    from pahi_rt.model_key import model_key

    monkeypatch.setenv("PAHI_RT_DIGEST_CACHE", str(tmp_path / "digests.json"))
    model_key.cache_clear()
    yield
    model_key.cache_clear()
