"""Serving state every ingress replica reads: "serving", "draining" (new requests: 503, accepted
ones finish) or "stopping" (the drain time is over: what is left answers 503). Kept in Ray's GCS
key-value store (one key per app), so it reaches every replica on every node; each ingress
replica (the deployment that holds the requests; `ingress.ImageIngress`) polls it (`POLL_S`)
and, while draining, reports how many requests it still holds and the longest batch the model
rendered for it.

`drain` is what `pahi-rt serve` does on SIGTERM/Ctrl-C before it stops Serve.
"""
from __future__ import annotations

import time

NAMESPACE = "pahi-rt"
POLL_S = 0.25  # how often a replica reads the state (so a drain starts within this)
MIN_DRAIN_S, DRAIN_MARGIN_S = 10.0, 5.0  # default drain time: longest batch + margin, >= min


def _kv():
    from ray.experimental import internal_kv

    return internal_kv


def set_state(app: str, state: str) -> None:
    _kv()._internal_kv_put(f"{app}/state", state, namespace=NAMESPACE)


def state(app: str) -> str:
    value = _kv()._internal_kv_get(f"{app}/state", namespace=NAMESPACE)
    return value.decode() if value else "serving"


def report_active(app: str, replica: str, active: int, longest_batch_s: float) -> None:
    _kv()._internal_kv_put(f"{app}/active/{replica}",
                           f"{active} {longest_batch_s} {time.time()}", namespace=NAMESPACE)


def active(app: str, since: float) -> dict[str, tuple[int, float]]:
    """replica -> (requests it held, its longest batch in seconds) at its last report made
    after `since` (time.time())."""
    kv, out = _kv(), {}
    for key in kv._internal_kv_list(f"{app}/active/", namespace=NAMESPACE):
        value = kv._internal_kv_get(key, namespace=NAMESPACE)
        if value:
            count, longest, at = value.decode().split()
            if float(at) >= since:
                out[key.decode().rsplit("/", 1)[-1]] = (int(count), float(longest))
    return out


def reset(app: str) -> None:
    _kv()._internal_kv_del(f"{app}/", del_by_prefix=True, namespace=NAMESPACE)


def drain_bound(timeout_s: float | None, longest_batch_s: float) -> float:
    """The drain time: `timeout_s` when given, else the longest batch any replica ran plus
    DRAIN_MARGIN_S, at least MIN_DRAIN_S."""
    if timeout_s is not None:
        return timeout_s
    return max(MIN_DRAIN_S, longest_batch_s + DRAIN_MARGIN_S)


def drain(app: str, replicas: int, timeout_s: float | None) -> tuple[float, int]:
    """Set "draining", wait until every replica reported it holds nothing (or the drain time,
    `drain_bound`), then set "stopping" (replicas answer 503 to what is left). Returns
    (seconds taken, requests still held when the time ran out)."""
    t0, since = time.monotonic(), time.time()
    set_state(app, "draining")
    left, bound = -1, drain_bound(timeout_s, 0.0)
    while time.monotonic() - t0 < bound:
        reports = active(app, since)
        left = sum(count for count, _ in reports.values())
        if len(reports) >= replicas and left == 0:
            break
        bound = drain_bound(timeout_s, max((b for _, b in reports.values()), default=0.0))
        time.sleep(POLL_S / 2)
    set_state(app, "stopping")
    if left:  # the replicas answer what they still hold with 503 before Ray stops
        time.sleep(3 * POLL_S)
    return time.monotonic() - t0, max(left, 0)
