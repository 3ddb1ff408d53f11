"""Bounded load test of `pahi-rt serve` on this machine: starts the server on 127.0.0.1, sends a
fixed number of requests at each concurrency, stops the server (SIGTERM) and writes a table.

    python scripts/serve_load.py --requests 200 --out bench/results/cpu-2core/serve
    python scripts/serve_load.py --full-size 4 --requests 0 --out ...   # 512x512 synthetic only

Only 127.0.0.1 is ever targeted; every phase has a fixed request count and a timeout, so the
script stops by itself. Results: OUT.md (markdown) and OUT.json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOST = "127.0.0.1"  # fixed: this script never targets another machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`pahi-rt serve ARGS` on a free loopback port, up until `stop`."""

    def __init__(self, args: list[str], log: Path, ready_timeout: float = 600):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = ["pahi-rt", "serve", "--host", HOST, "--port", str(self.port), *args]
        self.command = " ".join(cmd[:5] + ["PORT"] + cmd[6:])
        self.log = open(log, "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < ready_timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}); see {log}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as r:
                    self.health = json.loads(r.read())
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        else:
            self.stop()
            raise SystemExit(f"server not healthy after {ready_timeout} s; see {log}")
        self.startup_s = time.monotonic() - t0

    def stop(self) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return time.monotonic() - t0


def request(url: str, body: dict, timeout: float) -> tuple[int, float]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url + "/v1/images/generations", data=data,
                                 headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError):
        status = 0  # timeout or connection error
    return status, time.perf_counter() - t0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted `values` (nan when empty)."""
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def load(url: str, concurrency: int, count: int, size: str, timeout: float) -> dict:
    """`count` one-image requests, `concurrency` at a time."""
    bodies = [{"prompt": f"a photo of thing {i}", "seed": i, "size": size} for i in range(count)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda b: request(url, b, timeout), bodies))
    wall = time.perf_counter() - t0
    ok = sorted(t for s, t in results if s == 200)
    return {"concurrency": concurrency, "requests": count, "ok": len(ok),
            "errors": count - len(ok), "statuses": sorted({s for s, _ in results}),
            "wall_s": wall, "images_per_s": len(ok) / wall, "p50_s": percentile(ok, 0.5),
            "p99_s": percentile(ok, 0.99),
            "mean_s": statistics.fmean(ok) if ok else float("nan")}


def run_config(name: str, args: list[str], concurrencies, count, size, timeout, logdir) -> dict:
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    server = Server(args, logdir / f"serve-{slug}.log")
    load_before = os.getloadavg()[0]
    print(f"[{name}] up in {server.startup_s:.1f} s: {server.command}", flush=True)
    rows = []
    try:
        request(server.url, {"prompt": "warm up", "seed": 0, "size": size}, timeout)
        for c in concurrencies:
            rows.append(load(server.url, c, count, size, timeout))
            print(f"[{name}] c={c}: {rows[-1]['images_per_s']:.2f} img/s, "
                  f"p50 {rows[-1]['p50_s']:.3f} s, errors {rows[-1]['errors']}", flush=True)
    finally:
        stop_s = server.stop()
    print(f"[{name}] stopped in {stop_s:.1f} s", flush=True)
    return {"name": name, "command": server.command, "health": server.health,
            "startup_s": server.startup_s, "stop_s": stop_s, "rows": rows,
            "loadavg_1min": [load_before, os.getloadavg()[0]]}


def markdown(results: list[dict], argv: list[str]) -> str:
    lines = ["# `pahi-rt serve` load test (cpu-2core)", "",
             "Client and server on one shared 2-core CPU machine (other jobs were running: "
             "numbers are indicative), loopback only. Produced by:", "",
             "```bash", "python scripts/serve_load.py " + " ".join(argv), "```", ""]
    for res in results:
        h = res["health"]
        lines += [f"## {res['name']}", "", f"`{res['command']}`  (device {h.get('device')}, "
                  f"{h.get('torch_threads')} torch thread(s) per replica; server up in "
                  f"{res['startup_s']:.0f} s, SIGTERM to exit {res['stop_s']:.1f} s; machine load "
                  f"average {' -> '.join(f'{x:.1f}' for x in res.get('loadavg_1min', []))})",
                  "",
                  "| concurrency | requests | ok | errors | images/s | p50 (s) | p99 (s) |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['concurrency']} | {r['requests']} | {r['ok']} | {r['errors']} | "
                  f"{r['images_per_s']:.2f} | {r['p50_s']:.3f} | {r['p99_s']:.3f} |"
                  for r in res["rows"]]
        lines.append("")
    by = {r["name"]: {row["concurrency"]: row for row in r["rows"]} for r in results}
    if "tiny --max-batch 8" in by and "tiny --max-batch 1" in by:
        lines += ["## Dynamic batching gain (tiny 64x64, images/s, max-batch 8 vs 1)", "",
                  "| concurrency | max-batch 8 | max-batch 1 | gain |", "|---:|---:|---:|---:|"]
        for c, row in by["tiny --max-batch 8"].items():
            base = by["tiny --max-batch 1"].get(c)
            if base:
                lines.append(f"| {c} | {row['images_per_s']:.2f} | {base['images_per_s']:.2f} | "
                             f"{row['images_per_s'] / base['images_per_s']:.2f}x |")
        lines.append("")
    lines += ["Reading the tables: a request is one image (`n` 1), sent by a closed loop of "
              "`concurrency` client threads. With `--max-batch 8` a lone request still waits "
              "`--batch-wait-ms` (10 ms) for company, which costs at concurrency 1. With "
              "`--max-batch 1` a replica takes 2 requests at a time (2 x max-batch), the rest "
              "wait in Serve's proxy queue. Errors count anything but HTTP 200 (none expected "
              "below `--max-queued` 64). The full-size rows use the `synthetic` preset (SD-Turbo "
              "architecture, random weights) with 2 torch threads.", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="per concurrency level (tiny)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--full-size", type=int, default=4, help="requests at 512x512 (0: skip)")
    ap.add_argument("--timeout", type=float, default=600, help="per request (s)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cpu-2core/serve"))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logdir = args.out.parent / "logs"
    logdir.mkdir(exist_ok=True)
    tiny = ["--model", "tiny", "--height", "64", "--width", "64", "--device", "cpu"]
    results = []
    if args.requests:
        for batch in (8, 1):
            results.append(run_config(f"tiny --max-batch {batch}", [*tiny, "--max-batch",
                                      str(batch)], args.concurrency, args.requests, "64x64",
                                      args.timeout, logdir))
    if args.full_size:
        full = ["--model", "synthetic", "--height", "512", "--width", "512", "--device", "cpu",
                "--max-batch", "2", "--cpus-per-replica", "2"]
        results.append(run_config("synthetic 512x512", full, [1, 2], args.full_size,
                                  "512x512", args.timeout, logdir))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(markdown(results, argv))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    os.environ.pop("RAY_ADDRESS", None)  # the server starts its own loopback Ray
    main(sys.argv[1:])
