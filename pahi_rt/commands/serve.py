"""`pahi-rt serve`: the OpenAI-compatible image API on Ray Serve (`pahi_rt.serving.app`).
Everything checkable is checked here, before Ray starts (`serving.launch` runs it)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..specs import DEFAULT_MODEL
from .common import (Artifacts, Backend, Decoder, Device, Height, Model, Noise, Precision, Steps,
                     Width, check_number, image_size, pick_precision, resolve_precision)
from .options import absolute_path

Address = typer.Option(None, help="Ray cluster to deploy to (default: $RAY_ADDRESS, else an "
                       "embedded local Ray on 127.0.0.1, stopped on exit).")
HOST = typer.Option("127.0.0.1", help="Interface the HTTP proxy binds (0.0.0.0 exposes it to "
                    "the network: set --api-key).")
SIZES = typer.Option(None, help="Sizes served, e.g. 512x512,768x512 (WxH; the first is the "
                     "default; overrides --height/--width). Each opens a pipeline at start.")
STEP_COUNTS = typer.Option(None, help="Step counts served, e.g. 1,2 (the first is the default; "
                           "overrides --steps).")
API_KEY = typer.Option(None, "--api-key", envvar="PAHI_RT_API_KEY", show_envvar=True,
                       help="Require 'Authorization: Bearer KEY' (repeat for several keys; "
                       "the variable takes them space-separated). /healthz stays open.")
TIMEOUT = typer.Option(300.0, help="Default deadline of a request in seconds (504 past it; "
                       "clients may pass a shorter `timeout`); 0: none.")
DRAIN = typer.Option(None, help="On Ctrl-C/SIGTERM: seconds accepted requests get to finish "
                     "(new ones get 503) before the server stops (default: the longest batch "
                     "so far + 5, at least 10).")
FEEDBACK_DB = typer.Option(None, help="SQLite file (WAL) storing served images' generation "
                           "records and POST /v1/images/feedback ratings; off when not given.")


def serve(
    model: Model = DEFAULT_MODEL,
    decoder: Decoder = None,
    noise: Noise = "gaussian",
    head: Optional[Path] = typer.Option(None, help="Head checkpoint dir for --noise hi|pahi "
                                        "(watched: a new head in it is taken up live)."),
    steps: Steps = 1,
    height: Height = None,
    width: Width = None,
    sizes: Optional[str] = SIZES,
    step_counts: Optional[str] = STEP_COUNTS,
    precision: Precision = "fp32",
    device: Device = "auto",
    backend: Backend = "torch",
    artifacts: Artifacts = None,
    host: str = HOST,
    port: int = typer.Option(8000, help="HTTP port (in use: an error)."),
    replicas: int = typer.Option(1, help="Model replicas (each loads the model once)."),
    gpus_per_replica: float = typer.Option(0.0, help="GPUs per replica (fractions share one)."),
    cpus_per_replica: float = typer.Option(1.0, help="CPUs per replica (a CPU replica runs "
                                           "that many torch threads)."),
    max_batch: int = typer.Option(8, help="Most images per pipeline call (dynamic batching)."),
    batch_wait_ms: float = typer.Option(10.0, help="How long a batch waits to fill up (ms)."),
    max_queued: int = typer.Option(64, help="Requests a replica holds beyond the 2 x "
                                   "--max-batch it renders; past it: 503 with Retry-After."),
    request_timeout: float = TIMEOUT,
    drain_timeout: Optional[float] = DRAIN,
    max_prompt_bytes: int = typer.Option(4096, help="Longest prompt (UTF-8 bytes; 400 past)."),
    max_body_bytes: int = typer.Option(65536, help="Largest request body (bytes; 413 past)."),
    api_key: Optional[List[str]] = API_KEY,
    feedback_db: Optional[Path] = FEEDBACK_DB,
    ui: bool = typer.Option(False, help="Serve the rating page at / (needs --feedback-db)."),
    address: Optional[str] = Address,
):
    """Serve POST /v1/images/generations (OpenAI Images API), POST /v1/images/feedback, \
/v1/models and /healthz."""
    from ..extras import check_extras
    from ..serving import launch
    from ..serving.schema import ServeSettings

    check_extras("serve", backend=backend, artifacts=artifacts)
    size_list = parse_sizes(sizes) if sizes else [image_size(model, height, width)]
    step_list = parse_counts(step_counts) if step_counts else [steps]
    _check_ranges(port, replicas, gpus_per_replica, max_batch, batch_wait_ms, max_queued)
    check_number("--cpus-per-replica", cpus_per_replica, 0.0, 1024.0, low_open=True)
    check_number("--request-timeout", request_timeout, 0.0, 1e6)
    if drain_timeout is not None:
        check_number("--drain-timeout", drain_timeout, 0.0, 1e6)
    for name, value in (("--max-prompt-bytes", max_prompt_bytes),
                        ("--max-body-bytes", max_body_bytes)):
        if value <= 0:
            raise InputError(f"{name} must be positive, got {value}")
    if ui and feedback_db is None:
        raise InputError("--ui posts ratings to the feedback store: give --feedback-db FILE")
    keys = tuple(k for value in (api_key or ()) for k in value.split())
    cluster = bool(address or os.environ.get("RAY_ADDRESS"))
    settings = ServeSettings(
        model=absolute_path(model), decoder=absolute_path(decoder), head=absolute_path(head),
        noise=noise, backend=backend, artifacts=absolute_path(artifacts),
        precision=resolve_precision(pick_precision(precision, None), backend, device),
        height=size_list[0][0], width=size_list[0][1], steps=step_list[0], device=device,
        max_batch=max_batch, batch_wait_ms=batch_wait_ms, more_sizes=tuple(size_list[1:]),
        more_steps=tuple(step_list[1:]), max_prompt_bytes=max_prompt_bytes,
        max_body_bytes=max_body_bytes, request_timeout_s=request_timeout,
        max_active=2 * max_batch + max_queued, api_keys=keys,
        feedback_db=str(feedback_db.resolve()) if feedback_db else None, ui=ui,
        loopback=not cluster)
    options = launch.ServeOptions(
        settings=settings, host=host, port=port, address=address, cluster=cluster,
        replicas=replicas, max_queued=max_queued, gpus_per_replica=gpus_per_replica,
        cpus_per_replica=cpus_per_replica, drain_timeout=drain_timeout)
    launch.precheck(options)
    launch.run(options)
    _exit_now()


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"512x512,768x512" -> [(height, width), ...] (WxH as OpenAI's `size`)."""
    from ..specs import check_image_size

    out = []
    for item in text.split(","):
        w, sep, h = item.strip().partition("x")
        if not sep or not w.isdigit() or not h.isdigit():
            raise InputError(f"--sizes: '{item.strip()}' is not WxH (e.g. 512x512)")
        check_image_size(int(h), int(w))
        out.append((int(h), int(w)))
    return list(dict.fromkeys(out))


def parse_counts(text: str) -> list[int]:
    items = [x.strip() for x in text.split(",")]
    if not all(x.isdigit() and int(x) >= 1 for x in items):
        raise InputError(f"--step-counts: expected positive integers like 1,2, got '{text}'")
    return list(dict.fromkeys(int(x) for x in items))


def _check_ranges(port, replicas, gpus, max_batch, wait_ms, max_queued) -> None:
    for name, value, lo, hi in (("--port", port, 1, 65535), ("--replicas", replicas, 1, 4096),
                                ("--max-batch", max_batch, 1, 256),
                                ("--max-queued", max_queued, 0, 1_000_000)):
        if not lo <= value <= hi:
            raise InputError(f"{name} must be in {lo}..{hi}, got {value}")
    check_number("--gpus-per-replica", gpus, 0.0, 1024.0)
    check_number("--batch-wait-ms", wait_ms, 0.0, 60_000.0)


def _exit_now() -> None:
    """Exit 0 without the interpreter's finalization: once Ray is stopped, tearing down its
    native core worker and gRPC state took 4-10 s here for nothing."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
