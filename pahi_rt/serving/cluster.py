"""Ray, connected one way for `serve` and `generate --ray`: an existing cluster (`--address` or
RAY_ADDRESS), a Ray this process already initialised, or an embedded local one bound to the
loopback interface only (node IP 127.0.0.1, no dashboard)."""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from ..errors import BackendError, require


def connect(address: str | None = None, num_cpus: int | None = None) -> str:
    """Make sure this process is a Ray driver. Returns how: "local" (it started a local Ray),
    "cluster" (it joined one) or "" (Ray was already initialised here: left as it is)."""
    ray = require("ray", "serve")
    if ray.is_initialized():
        return ""
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address:
            _reachable(address)
            ray.init(address=address, **quiet)
            return "cluster"
        _loopback_only()
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                 num_cpus=num_cpus or os.cpu_count(), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise BackendError(f"cannot start or reach {where}: {str(e).splitlines()[0]}") from None
    return "local"


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT address must accept a TCP connection within `timeout` s: Ray itself retries
    an unreachable GCS for minutes (a hang to the user). Other forms (auto, ray://) are Ray's."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdecimal():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError, OverflowError) as e:
        raise BackendError(f"cannot reach the Ray cluster at {address} (--address or "
                           f"RAY_ADDRESS): {e.strerror or e}") from None


def _loopback_only() -> None:
    """Ray's single-machine mode (its default on macOS/Windows): the node IP is 127.0.0.1, so
    GCS, raylet, workers and the metrics agent listen on loopback only. Without it Ray turns
    `_node_ip_address="127.0.0.1"` into the machine's routable address. The switch is read
    from the environment by Ray's services (children inherit it) and once at import in this
    process (hence the constant too)."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def disconnect(how: str) -> None:
    """Undo `connect`: leave the cluster, or stop the local Ray this process started."""
    import ray

    if how and ray.is_initialized():
        ray.shutdown()


def metrics_urls() -> list[str]:
    """Each live node's Prometheus endpoint (Ray's and Serve's metrics, and ours)."""
    import ray

    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]


@contextmanager
def native_stderr_to(path):
    """Send what is written to file descriptor 2 (Ray's C++ core worker: `core_worker.cc ... E`
    lines, its Python log handlers) to the file `path` for the block, while `sys.stderr` (our
    progress lines, warnings and errors) still reaches the user's terminal."""
    try:
        ours = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test runner's capture: not fd 2
        ours = False
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    old = sys.stderr
    if ours:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old.encoding,
                               errors="backslashreplace")
    try:
        yield
    finally:
        if ours:
            sys.stderr.close()
            sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)
