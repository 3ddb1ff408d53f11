"""The Serve application, two deployments bound together as in Ray Serve's Stable Diffusion
example: the HTTP ingress (`ingress.ImageIngress`: FastAPI routes of the OpenAI Images API,
validation, PNG/base64 encoding, error bodies, feedback, the rating page) holds a deployment
handle to the model deployment (`model.ImageModel`: loads the model, opens the pipelines,
batches images of concurrent requests with `@serve.batch`, returns uint8 pixels and metadata).

Each scales on its own: `replicas` model replicas (each loads the model once; CPUs/GPUs per
replica), `INGRESS_REPLICAS` ingress replicas (no model, no torch, no CPU reserved, as Serve's
own HTTP proxy), which admit `settings.max_active` requests per model replica between them.
"""
from __future__ import annotations

import dataclasses
import math

from ray import serve
from ray.serve.config import BackpressureConfig

from .ingress import ImageIngress
from .model import ImageModel
from .schema import ServeSettings

APP_NAME = "pahi-rt"
INGRESS_REPLICAS = 1  # one on a machine is plenty: it encodes PNGs, the model renders them


def application(settings: ServeSettings, replicas: int = 1, gpus_per_replica: float = 0.0,
                max_queued: int = 64, cpus_per_replica: float = 1.0,
                ingress_replicas: int = INGRESS_REPLICAS):
    """The bound Serve application. Overload: the ingress takes `settings.max_active`
    requests per model replica (one batch running on each, the rest waiting to batch) and
    answers 503 with Retry-After (OpenAI shape) beyond; Serve's own limits stand behind that
    as a backstop on both deployments."""
    headroom = settings.max_active + settings.max_batch  # + room for /healthz's stats call
    common = dict(backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1),
                  health_check_period_s=2, graceful_shutdown_wait_loop_s=0.5,
                  graceful_shutdown_timeout_s=3)
    model = ImageModel.options(
        num_replicas=replicas, max_ongoing_requests=headroom,
        max_queued_requests=max(max_queued, 4 * headroom),
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        **common).bind(settings)
    admitted = math.ceil(settings.max_active * replicas / ingress_replicas)
    front = dataclasses.replace(settings, max_active=admitted)
    return ImageIngress.options(
        num_replicas=ingress_replicas, max_ongoing_requests=admitted + settings.max_batch,
        max_queued_requests=max(max_queued, 4 * headroom), ray_actor_options={"num_cpus": 0},
        **common).bind(front, model, APP_NAME)


def deploy(settings: ServeSettings, host: str, port: int, **options) -> None:
    """Start Serve's HTTP proxy on host:port (if this cluster has none yet) and deploy; returns
    once every replica of both deployments is up (model replicas have loaded the model)."""
    from . import control

    control.reset(APP_NAME)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(settings, **options), name=APP_NAME, route_prefix="/",
              blocking=False)


def drain(options: dict, timeout_s: float | None) -> tuple[float, int]:
    """`control.drain` of this app: waits for the ingress replicas, which hold the requests."""
    from . import control

    return control.drain(APP_NAME, options.get("ingress_replicas", INGRESS_REPLICAS),
                         timeout_s)


def undeploy(started_here: bool) -> None:
    """Stop serving: the whole of Serve when this process started Ray, else just our app."""
    if started_here:
        serve.shutdown()
    else:
        serve.delete(APP_NAME)
