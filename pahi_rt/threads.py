"""CPU thread policy for the CLI: OpenMP threads that sleep while they wait.

torch's CPU kernels (ATen, MKL, oneDNN) share GNU OpenMP (libgomp). By default a libgomp thread
that reaches a barrier spins for ~300k iterations before it sleeps. On a machine whose cores are
busy with another process that is ruinous: the spinning thread holds a core that its partner
needs, so every parallel region waits for the scheduler. Measured on the 2-core machine
(bench/results/cpu-2core/threads.md): tiny 64x64 `generate` went from ~0.02 s to 1-2 s per image
with the other core busy; with passive waiting it stays near the idle time, and on an idle
machine passive waiting costs nothing measurable. libgomp reads these variables once, when torch
loads it, so this must run before torch is imported; the CLI calls it first thing in every verb.

Knobs (each respected when set): OMP_NUM_THREADS (threads; default one per core),
OMP_WAIT_POLICY / GOMP_SPINCOUNT (set either to keep libgomp's spinning).
"""
from __future__ import annotations

import os
from typing import MutableMapping

WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_thread_policy(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose a wait policy; returns what it set."""
    if any(environ.get(k) for k in WAIT_VARS):
        return {}
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return {"OMP_WAIT_POLICY": "PASSIVE"}
