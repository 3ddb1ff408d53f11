"""The life of `pahi-rt serve` after its options are parsed: checks that need no Ray, start,
serve until Ctrl-C/SIGTERM, drain, stop."""
from __future__ import annotations

import errno
import os
import signal
import socket
import time
from pathlib import Path

import typer

from ..errors import BackendError, InputError
from .common import echo_err


def precheck(settings, host: str, port: int, replicas: int, cluster: bool) -> None:
    """What a replica would fail on first, checked in this process before Ray starts (cheaply:
    no weights are read): modes, the head, the feedback store, and for a local Ray the model
    source, the port and memory."""
    from ..specs import parse_mode

    for steps in settings.step_list:
        parse_mode(settings.noise, steps)
    check_head(settings.noise, settings.head)
    if settings.feedback_db:
        from ..feedback.store import FeedbackStore

        FeedbackStore(settings.feedback_db)
    if not cluster:
        check_model(settings)
        check_port(host, port)
        _check_memory(settings, replicas)


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

    params = memory.model_params(settings.model)
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


def run(settings, host: str, port: int, address: str | None, options: dict,
        drain_s: float | None) -> None:
    from ..serving import app, cluster, control

    how = cluster.connect(address)
    if how == "local":
        from ..serving import reaper

        reaper.start(os.getpid())  # kill -9 of this process leaves no Ray behind
    previous = signal.signal(signal.SIGTERM, _stop)
    deployed = False
    try:
        echo_err(f"deploying {settings.model} at {', '.join(settings.sizes)} "
                 f"({options['replicas']} replica(s), batches of up to {settings.max_batch})")
        try:
            app.deploy(settings, host, port, **options)
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
            took, left = control.drain(app.APP_NAME, options["replicas"], drain_s)
            echo_err(f"drained in {took:.1f} s" + (f"; {left} request(s) still waiting got "
                                                   "503" if left else ""))
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            if how != "local":  # a local Ray goes whole (ray.shutdown): nothing is left to wait
                app.undeploy(False)
        finally:
            cluster.disconnect(how)
    _exit_now()


def _exit_now() -> None:
    """Exit 0 without the interpreter's finalization: once Ray is stopped, tearing down its
    native core worker and gRPC state took 4-10 s here for nothing."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
