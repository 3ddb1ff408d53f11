"""`pahi-rt serve`: the OpenAI-compatible image API on Ray Serve (`pahi_rt.serving.app`)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import BackendError, InputError
from ..specs import DEFAULT_MODEL
from .common import (Artifacts, Backend, Decoder, Device, Height, Model, Noise, Precision, Steps,
                     Width, echo_err, pick_precision, resolve_precision)

Address = typer.Option(None, help="Ray cluster to deploy to (default: $RAY_ADDRESS, else an "
                       "embedded local Ray on 127.0.0.1, stopped on exit).")


def serve(
    model: Model = DEFAULT_MODEL,
    decoder: Decoder = None,
    noise: Noise = "gaussian",
    head: Optional[Path] = typer.Option(None, help="Head checkpoint dir for --noise hi|pahi."),
    steps: Steps = 1,
    height: Height = 512,
    width: Width = 512,
    precision: Precision = "fp32",
    device: Device = "auto",
    backend: Backend = "torch",
    artifacts: Artifacts = None,
    host: str = typer.Option("127.0.0.1", help="Interface the HTTP proxy binds (0.0.0.0 "
                             "exposes it to the network)."),
    port: int = typer.Option(8000, help="HTTP port."),
    replicas: int = typer.Option(1, help="Model replicas (each loads the model once)."),
    gpus_per_replica: float = typer.Option(0.0, help="GPUs per replica (fractions share one)."),
    cpus_per_replica: float = typer.Option(1.0, help="CPUs per replica (a CPU replica runs "
                                           "that many torch threads)."),
    max_batch: int = typer.Option(8, help="Most images per pipeline call (dynamic batching)."),
    batch_wait_ms: float = typer.Option(10.0, help="How long a batch waits to fill up (ms)."),
    max_queued: int = typer.Option(64, help="Requests waiting beyond what replicas run; past "
                                   "it: 503 with Retry-After."),
    address: Optional[str] = Address,
):
    """Serve POST /v1/images/generations (OpenAI Images API), /v1/models and /healthz."""
    from ..extras import check_extras
    from ..serving.schema import ServeSettings
    from ..specs import check_image_size, parse_mode

    check_extras("serve", backend=backend, artifacts=artifacts)
    if noise == "gaussian" and head is not None:
        raise InputError("--head is only used with --noise hi or --noise pahi")
    parse_mode(noise, steps)
    check_image_size(height, width)
    _check_ranges(port, replicas, gpus_per_replica, max_batch, batch_wait_ms, max_queued)
    if cpus_per_replica <= 0:
        raise InputError(f"--cpus-per-replica must be positive, got {cpus_per_replica}")
    settings = ServeSettings(
        _absolute(model), _absolute(decoder), _absolute(head), noise, backend,
        _absolute(artifacts), resolve_precision(pick_precision(precision, None), backend, device),
        height, width, steps, device,
        max_batch, batch_wait_ms)
    if not (address or os.environ.get("RAY_ADDRESS")):
        _precheck(settings)  # here, not after a minute of Ray start-up and replica retries
    _run(settings, host, port, address, dict(replicas=replicas, max_queued=max_queued,
                                             gpus_per_replica=gpus_per_replica,
                                             cpus_per_replica=cpus_per_replica))


def _check_ranges(port, replicas, gpus, max_batch, wait_ms, max_queued) -> None:
    for name, value, lo, hi in (("--port", port, 1, 65535), ("--replicas", replicas, 1, 4096),
                                ("--max-batch", max_batch, 1, 256),
                                ("--max-queued", max_queued, 0, 1_000_000)):
        if not lo <= value <= hi:
            raise InputError(f"{name} must be in {lo}..{hi}, got {value}")
    if gpus < 0 or wait_ms < 0:
        raise InputError("--gpus-per-replica and --batch-wait-ms must not be negative")


def _precheck(settings) -> None:
    """What a local replica would fail on first, checked in this process (cheaply: no
    weights are read): the model source, a decoder for a non-preset model, the head dir."""
    from ..components import resolve_model_dir
    from ..specs import PRESETS

    preset = PRESETS.get(settings.model)
    if preset is None or preset.hub_id is not None:
        resolve_model_dir(preset.hub_id if preset else settings.model, preset is not None)
    if preset is None and settings.decoder is None:
        raise InputError(f"--model {settings.model} needs --decoder (an AutoencoderTiny "
                         "directory or HF id, e.g. madebyollin/taesd)")
    if settings.head is not None and not Path(settings.head).is_dir():
        raise InputError(f"--head {settings.head}: no such directory")


def _absolute(path) -> str | None:
    """Replicas do not run in this directory: local paths travel as absolute ones."""
    if path is None:
        return None
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _stop(signum, frame):
    raise KeyboardInterrupt


def _run(settings, host: str, port: int, address: str | None, options: dict) -> None:
    from ..serving import app, cluster

    how = cluster.connect(address)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        echo_err(f"deploying {settings.model} at {settings.size} ({options['replicas']} "
                 f"replica(s), batches of up to {settings.max_batch})")
        try:
            app.deploy(settings, host, port, **options)
        except Exception as e:  # a replica failed to start: its own error's last line
            lines = [x for x in str(e).splitlines() if x.strip()]
            raise BackendError(f"the deployment failed: {lines[-1] if lines else e}") from None
        typer.echo(f"serving http://{host}:{port}/v1  (POST /v1/images/generations, "
                   f"GET /v1/models, GET /healthz; Ctrl-C stops)")
        echo_err("metrics (Prometheus): " + ", ".join(cluster.metrics_urls()))
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        echo_err("stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            app.undeploy(how == "local")
        finally:
            cluster.disconnect(how)
