"""Ray, connected one way for `serve` and `generate --ray`: an existing cluster (`--address` or
RAY_ADDRESS), a Ray this process already initialised, or an embedded local one bound to the
loopback interface only (node IP 127.0.0.1, no dashboard)."""
from __future__ import annotations

import logging
import os
import socket
import sys
from contextlib import contextmanager

from ..errors import BackendError, require

# Ray's lines a user of `serve` has no use for: the token-auth notice of a local Ray (token auth
# stays on), Serve's start-up INFO lines ("New http_options will not be applied", ...).
QUIET_LOGGERS = {"ray._private.authentication.authentication_token_setup": logging.ERROR,
                 "ray.serve": logging.WARNING}


def connect(address: str | None = None, num_cpus: int | None = None) -> str:
    """Make sure this process is a Ray driver. Returns how: "local" (it started a local Ray),
    "cluster" (it joined one) or "" (Ray was already initialised here: left as it is)."""
    ray = require("ray", "serve")
    if ray.is_initialized():
        return ""
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        if address:
            check_address(address)
            ray.init(address=address, **quiet)
            return "cluster"
        _loopback_only()
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                 num_cpus=num_cpus or os.cpu_count(), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise BackendError(f"cannot start or reach {where}: {str(e).splitlines()[0]}") from None
    return "local"


def _loopback_only() -> None:
    """Ray's single-machine mode (its default on macOS/Windows): the node IP is 127.0.0.1, so
    GCS, raylet, workers and the metrics agent listen on loopback only. Without it Ray turns
    `_node_ip_address="127.0.0.1"` into the machine's routable address. The switch is read
    from the environment by Ray's services (children inherit it) and once at import in this
    process (hence the constant too)."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def check_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds when nothing answers at a `--address HOST:PORT` (Ray itself retries for
    a minute or more); dials only the address given. "auto" and "local" are Ray's to resolve."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BackendError(f"--address {address}: expected HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError, OverflowError) as e:  # refused, unknown host, port > 65535
        raise BackendError(f"cannot reach the Ray cluster at {address} (--address or "
                           f"RAY_ADDRESS): {getattr(e, 'strerror', None) or e} (is `ray start "
                           "--head` running there?)") from None


def bind_replica_grpc_to_loopback() -> None:
    """Ray 2.60's Serve replica binds its inter-deployment gRPC server to `[::]:0`
    (serve/_private/replica.py, `_on_initialized`), with no setting to change it. Called in a
    replica's constructor (which runs before that), this makes it bind 127.0.0.1 instead: the
    embedded single-node Ray never needs it reachable from elsewhere (with Serve's default
    RAY_SERVE_USE_GRPC_BY_DEFAULT=0 requests reach replicas as Ray actor calls anyway)."""
    from ray.serve._private import replica

    bind = getattr(replica, "_pahi_original_bind", replica.add_port_to_grpc_server)

    def loopback_bind(server, address):
        return bind(server, "127.0.0.1:0" if address == "[::]:0" else address)

    replica._pahi_original_bind = bind
    replica.add_port_to_grpc_server = loopback_bind


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
def native_output_to(path):
    """Send what Ray writes during the block to the file `path`: file descriptors 1 and 2 (its
    C++ core worker: `core_worker.cc ... E` lines) and Python's sys.stdout/sys.stderr (its
    loggers and the raylet's `(raylet) Task ... failed` reports, printed by a driver thread).
    Yields `say(line)`, which still reaches the user's stderr (progress lines): the terminal,
    or a test runner's capture of sys.stderr."""
    old = sys.stdout, sys.stderr
    try:
        ours = old[1].fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test runner's capture: not fd 2
        ours = False
    for stream in old:
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8",
                         errors="backslashreplace") if ours else old[1]
    log = open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    for fd in saved:
        os.dup2(log.fileno(), fd)
    sys.stdout = sys.stderr = log

    def say(line: str) -> None:
        terminal.write(line + "\n")
        terminal.flush()
    try:
        yield say
    finally:
        sys.stdout, sys.stderr = old
        log.close()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        if ours:
            terminal.close()
