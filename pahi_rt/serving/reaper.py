"""`python -m pahi_rt.serving.reaper PID`: stops the embedded Ray that `pahi-rt serve` (PID)
started when that process dies without stopping it (kill -9, OOM killer).

Ray fate-shares GCS and raylet with their driver (the kernel kills them with it), but its agents
(dashboard agent, runtime-env agent) then spend 60 s trying to report the raylet's death to the
dead GCS before they exit (Ray 2.60: `publish_error_to_driver(..., timeout 60)`). This process
snapshots PID's process tree once a second and, once PID is gone, kills what is left of the last
snapshot (matched by creation time, so a reused PID is never touched)."""
from __future__ import annotations

import os
import sys
import time

POLL_S = 1.0


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(pid: int) -> int:
    """Wait for `pid` to die, then kill its last known descendants; returns how many."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.Error:
        return 0
    tree: dict[int, float] = {}
    while _alive(parent):
        try:
            tree = {p.pid: p.create_time() for p in parent.children(recursive=True)
                    if p.pid != os.getpid()}
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    killed = 0
    for child, created in tree.items():
        try:
            proc = psutil.Process(child)
            if proc.create_time() == created and _alive(proc):
                proc.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


def start(pid: int):
    """Start the reaper for `pid` in its own session (a signal to the terminal's process group
    does not reach it); None when psutil is missing."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("psutil") is None:
        return None
    return subprocess.Popen([sys.executable, "-m", __name__, str(pid)], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
