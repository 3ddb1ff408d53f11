"""Start-up and stop of `pahi-rt serve` measured on this machine (tiny model, loopback only):
SIGTERM when idle, SIGTERM with requests in flight (how many finished), kill -9 (how long any
process of its tree lives on), a port in use and an unreachable --address (time to the error).

    python scripts/serve_lifecycle.py --out bench/results/cpu-2core/serve_lifecycle

Every phase has a time limit; the script stops by itself. Results: OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from serve_load import HOST, Server, request

TINY = ["--model", "tiny", "--height", "64", "--width", "64", "--device", "cpu", "--sizes",
        "64x64,256x256", "--max-batch", "4"]


def gone_after(procs: list, limit: float = 180) -> float:
    """Seconds until none of `procs` runs (limit if some still do)."""
    t0 = time.monotonic()
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs):
        if time.monotonic() - t0 > limit:
            return limit
        time.sleep(0.1)
    return time.monotonic() - t0


def stop(log: Path, in_flight: int, how: signal.Signals) -> dict:
    """Start a server, put `in_flight` requests of 8 images (256x256) in flight, send `how`."""
    server = Server(TINY, log)
    tree = [server.proc, *psutil.Process(server.proc.pid).children(recursive=True)]
    tree = [psutil.Process(p.pid) for p in tree]
    results: list = []
    body = {"prompt": "in flight", "n": 8, "size": "256x256"}
    threads = [threading.Thread(target=lambda: results.append(request(server.url, body, 120)))
               for _ in range(in_flight)]
    [t.start() for t in threads]
    time.sleep(0.5 if in_flight else 0)
    t0 = time.monotonic()
    server.proc.send_signal(how)
    server.proc.wait(120)
    exit_s = time.monotonic() - t0
    all_s = gone_after(tree)
    [t.join(120) for t in threads]
    server.log.close()
    return {"signal": how.name, "in_flight": in_flight, "exit_s": exit_s,
            "all_gone_s": all_s + exit_s, "ok": sum(s == 200 for s, _ in results),
            "processes": len(tree), "returncode": server.proc.returncode}


def refusal(args: list[str]) -> dict:
    t0 = time.monotonic()
    r = subprocess.run(["pahi-rt", "serve", *args], capture_output=True, text=True, timeout=300)
    return {"args": " ".join(args), "seconds": time.monotonic() - t0, "code": r.returncode,
            "message": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/cpu-2core/serve_lifecycle"))
    args = ap.parse_args(argv)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs = [stop(logs / "lifecycle-idle.log", 0, signal.SIGTERM),
            stop(logs / "lifecycle-drain.log", 6, signal.SIGTERM),
            stop(logs / "lifecycle-kill.log", 0, signal.SIGKILL)]
    blocker = Server(TINY, logs / "lifecycle-port.log")
    refusals = [refusal(["--model", "tiny", "--port", str(blocker.port), "--host", HOST]),
                refusal(["--model", "tiny", "--address", "127.0.0.1:1"])]
    blocker.stop()
    cpu = platform.processor() or open("/proc/cpuinfo").read().split("model name")[1].split(
        "\n")[0].strip(": \t")
    result = {"cpu": cpu, "cores": os.cpu_count(), "runs": runs, "refusals": refusals,
              "loadavg_1min": os.getloadavg()[0]}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = ["# `pahi-rt serve` start-up errors and stops (cpu-2core)", "",
             f"{cpu}, {os.cpu_count()} cores, shared with other jobs (load average "
             f"{result['loadavg_1min']:.1f}); tiny model, `pahi-rt serve {' '.join(TINY)}`. "
             "Produced by `python scripts/serve_lifecycle.py " + " ".join(argv) + "`.", "",
             "| signal | requests of 8 images (256x256) in flight | finished with 200 | "
             "process exit (s) | every process of its tree gone (s) | exit code |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['signal']} | {r['in_flight']} | {r['ok']} | {r['exit_s']:.1f} | "
              f"{r['all_gone_s']:.1f} | {r['returncode']} |" for r in runs]
    lines += ["", "| refused | seconds to the error | exit code | message |", "|---|---:|---:|---|"]
    lines += [f"| `{r['args']}` | {r['seconds']:.1f} | {r['code']} | {r['message']} |"
              for r in refusals]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.pop("RAY_ADDRESS", None)
    main(sys.argv[1:])
