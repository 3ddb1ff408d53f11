"""The life of `pahi-rt serve` after its options are parsed (`ServeOptions`): checks that need
no Ray, start, serve until Ctrl-C/SIGTERM, drain, stop. Torch-free to import."""
from __future__ import annotations

import errno
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from ..errors import BackendError, InputError
from ..progress import say as echo_err
from .schema import ServeSettings


@dataclass(frozen=True)
class ServeOptions:
    """`pahi-rt serve`: what every replica serves (`settings`) and how the deployment runs."""

    settings: ServeSettings
    host: str  # the interface the HTTP proxy binds
    port: int
    address: str | None  # Ray cluster (None: $RAY_ADDRESS, else an embedded local Ray)
    cluster: bool  # deploying to a running cluster (not a local Ray started here)
    replicas: int
    max_queued: int  # requests a replica holds beyond the 2 x max_batch it renders
    gpus_per_replica: float
    cpus_per_replica: float
    drain_timeout: float | None  # seconds accepted requests get on stop (None: derived)


def precheck(o: ServeOptions) -> None:
    """What a replica would fail on first, checked in this process before Ray starts (cheaply:
    no weights are read): modes, the head, the feedback store, and for a local Ray the model
    source, the port and memory."""
    from ..specs import parse_mode

    settings = o.settings
    for steps in settings.step_list:
        parse_mode(settings.noise, steps)
    check_head(settings.noise, settings.head)
    if settings.feedback_db:
        from ..feedback.store import FeedbackStore

        FeedbackStore(settings.feedback_db)
    if not o.cluster:
        check_model(settings)
        check_port(o.host, o.port)
        _check_memory(settings, o.replicas)


def check_head(noise: str, head: str | None) -> None:
    if noise == "gaussian":
        if head is not None:
            raise InputError("--head is only used with --noise hi or --noise pahi")
        return
    if head is None:
        raise InputError(f"--noise {noise} needs --head DIR (a head trained by `pahi-rt train`)")
    if not Path(head).is_dir():
        raise InputError(f"--head {head}: no such directory")
    from ..heads.checkpoint import usable_head_config

    kind = usable_head_config(head).kind
    if kind != noise:
        raise InputError(f"--head {head} is a '{kind}' head, not '{noise}' (--noise {kind})")


def check_model(settings) -> None:
    from ..components import resolve_model_dir
    from ..specs import PRESETS

    preset = PRESETS.get(settings.model)
    if preset is None or preset.hub_id is not None:
        resolve_model_dir(preset.hub_id if preset else settings.model, preset is not None)
    if preset is None and settings.decoder is None:
        raise InputError(f"--model {settings.model} needs --decoder (an AutoencoderTiny "
                         "directory or HF id, e.g. madebyollin/taesd)")


def _check_memory(settings, replicas: int) -> None:
    """Every replica holds the model once; pipelines of other sizes share its weights, and one
    batch runs at a time, so the largest size sets the peak (artifact backends hold sessions
    per pipeline: counted per size)."""
    from .. import memory

    params = memory.model_params(settings.model, settings.decoder)
    sizes = [(settings.height, settings.width), *settings.more_sizes]
    h, w = max(sizes, key=lambda s: s[0] * s[1])
    if params is None:
        return
    device = "cuda" if settings.device.startswith("cuda") else "cpu"
    per = dict(height=h, width=w, batch=settings.max_batch, precision=settings.precision,
               backend=settings.backend, device=device)
    scale = replicas * (1 if settings.backend == "torch" else len(sizes))
    params = memory.Params(**{k: v * scale for k, v in vars(params).items()})
    what = f"{replicas} replica(s) of {settings.model} at {', '.join(settings.sizes)}"
    memory.check(params, what, {}, **per)


def check_port(host: str, port: int) -> None:
    """InputError when host:port cannot be listened on: in use (Ray's proxy would share it
    through SO_REUSEPORT and split traffic at random) or not an address of this machine."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no user
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise InputError(f"--port {port}: {host}:{port} is already in use (another "
                                 "server?); pick another --port") from None
            raise InputError(f"--host {host}: cannot listen there ({e.strerror})") from None


def _stop(signum, frame):
    raise KeyboardInterrupt


def run(o: ServeOptions) -> None:
    """Deploy, serve until Ctrl-C/SIGTERM, drain and stop (returns once Ray is stopped)."""
    from . import app, cluster

    settings, host, port, drain_s = o.settings, o.host, o.port, o.drain_timeout
    how = cluster.connect(o.address)
    if how == "local":
        from . import reaper

        reaper.start(os.getpid())  # kill -9 of this process leaves no Ray behind
    previous = signal.signal(signal.SIGTERM, _stop)
    deployed = False
    try:
        echo_err(f"deploying {settings.model} at {', '.join(settings.sizes)} "
                 f"({o.replicas} replica(s), batches of up to {settings.max_batch})")
        try:
            app.deploy(settings, host, port, replicas=o.replicas, max_queued=o.max_queued,
                       gpus_per_replica=o.gpus_per_replica,
                       cpus_per_replica=o.cpus_per_replica)
        except Exception as e:  # a replica failed to start: its own error's last line
            lines = [x for x in str(e).splitlines() if x.strip()]
            raise BackendError(f"the deployment failed: {lines[-1] if lines else e}") from None
        deployed = True
        typer.echo(f"serving http://{host}:{port}/v1  (POST /v1/images/generations, "
                   f"GET /v1/models, GET /healthz{', the rating page at /' if settings.ui else ''}"
                   f"; Ctrl-C stops)")
        echo_err("metrics (Prometheus): " + ", ".join(cluster.metrics_urls()))
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        if deployed:
            bound = f"{drain_s:g} s" if drain_s is not None else "the longest batch + 5 s"
            echo_err(f"stopping: new requests get 503, accepted ones get up to {bound}")
            took, left = app.drain({}, drain_s)
            echo_err(f"drained in {took:.1f} s" + (f"; {left} request(s) still waiting got "
                                                   "503" if left else ""))
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            if how != "local":  # a local Ray goes whole (ray.shutdown): nothing is left to wait
                app.undeploy(False)
        finally:
            cluster.disconnect(how)
