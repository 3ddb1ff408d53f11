"""Bounded load test of `pahi-rt serve` on this machine with locust (headless, as a library):
starts the server on 127.0.0.1, runs a fixed number of requests at each concurrency (locust
users in a closed loop), stops the server (SIGTERM) and writes a table; a row for
POST /v1/images/feedback under load too.

    python scripts/serve_load.py --requests 200 --out bench/results/cpu-2core/serve
    python scripts/serve_load.py --full-size 4 --requests 0 --out ...   # 512x512 synthetic only

Only 127.0.0.1 is ever targeted; every level has a fixed request count, a fixed number of
users and a time limit, so the script stops by itself. Results: OUT.md and OUT.json.
"""
from __future__ import annotations

import locust  # noqa: F401 - first: gevent patches the standard library at import

import argparse
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.exception import StopUser

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


def request(url: str, body: dict, timeout: float, path: str = "/v1/images/generations"
            ) -> tuple[int, dict]:
    """(status, JSON body) of one POST outside the measured load (warm-up, image ids)."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


class Budget:
    """A fixed number of requests shared by a level's users; each user stops when it is spent."""

    def __init__(self, count: int):
        self.left = itertools.count(count, -1)

    def take(self) -> None:
        if next(self.left) <= 0:
            raise StopUser()


def user_class(kind: str, budget: Budget, size: str, timeout: float, ids: list[str]):
    """A locust user sending one-image generations (kind "images") or feedback labels on the
    served image ids (kind "feedback"), back to back."""
    seeds = itertools.count()

    class ImageUser(FastHttpUser):
        wait_time = constant(0)
        network_timeout = connection_timeout = timeout

        @task
        def one(self):
            budget.take()
            if kind == "images":
                i = next(seeds)
                body = {"prompt": f"a photo of thing {i}", "seed": i, "size": size}
                self.client.post("/v1/images/generations", json=body, name="images")
            else:
                body = {"id": random.choice(ids), "label": random.choice(("good", "bad"))}
                self.client.post("/v1/images/feedback", json=body, name="feedback")

    return ImageUser


def load(url: str, concurrency: int, count: int, size: str, timeout: float,
         kind: str = "images", ids: list[str] = ()) -> dict:
    """`count` requests from `concurrency` locust users in a closed loop; stopped after
    `timeout` seconds whatever is left."""
    user = user_class(kind, Budget(count), size, timeout, list(ids))
    env = Environment(user_classes=[user], host=url)
    runner = env.create_local_runner()
    t0 = time.perf_counter()
    runner.start(concurrency, spawn_rate=concurrency)
    gevent.sleep(0.1)
    while runner.user_count and time.perf_counter() - t0 < timeout:
        gevent.sleep(0.05)
    wall = time.perf_counter() - t0
    runner.quit()
    stats = env.stats.get(kind, "POST")
    ok = stats.num_requests - stats.num_failures
    pct = (lambda p: stats.get_response_time_percentile(p) / 1000) if ok else (
        lambda p: float("nan"))
    return {"kind": kind, "concurrency": concurrency, "requests": stats.num_requests,
            "ok": ok, "errors": stats.num_failures, "wall_s": wall,
            "images_per_s": ok / wall, "p50_s": pct(0.5), "p99_s": pct(0.99),
            "mean_s": stats.avg_response_time / 1000}


def feedback_ids(url: str, timeout: float) -> list[str]:
    """Ids of 8 freshly served images to rate."""
    status, body = request(url, {"prompt": "to be rated", "n": 8, "seed": 1}, timeout)
    return [d["id"] for d in body.get("data", [])] if status == 200 else []


def run_config(name: str, args: list[str], concurrencies, count, size, timeout, logdir,
               feedback: bool = False) -> dict:
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
        ids = feedback_ids(server.url, timeout) if feedback else []
        for c in concurrencies if ids else ():
            rows.append(load(server.url, c, count, size, timeout, "feedback", ids))
            print(f"[{name}] feedback c={c}: {rows[-1]['images_per_s']:.1f} req/s, "
                  f"p50 {rows[-1]['p50_s']:.3f} s, errors {rows[-1]['errors']}", flush=True)
    finally:
        stop_s = server.stop()
    print(f"[{name}] stopped in {stop_s:.1f} s", flush=True)
    return {"name": name, "command": server.command, "health": server.health,
            "startup_s": server.startup_s, "stop_s": stop_s, "rows": rows,
            "loadavg_1min": [load_before, os.getloadavg()[0]]}


def cpu_name() -> str:
    """The CPU's model name and the vector features that matter here (from /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown"
    name = info.split("model name", 1)[-1].split("\n", 1)[0].strip(": \t")
    flags = set(info.split("\nflags", 1)[-1].split("\n", 1)[0].split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
    return f"{name}: {', '.join(f for f in wanted if f in flags) or 'no AVX2'}"


def markdown(results: list[dict], argv: list[str]) -> str:
    lines = ["# `pahi-rt serve` load test (cpu-2core)", "",
             f"Client (locust {locust.__version__}) and server on one shared 2-core CPU machine "
             f"({cpu_name()}; other jobs were running: numbers are indicative), loopback only. "
             "Produced by:", "",
             "```bash", "python scripts/serve_load.py " + " ".join(argv), "```", ""]
    for res in results:
        h = res["health"]
        lines += [f"## {res['name']}", "", f"`{res['command']}`  (device {h.get('device')}, "
                  f"{h.get('torch_threads')} torch thread(s) per replica; server up in "
                  f"{res['startup_s']:.0f} s, SIGTERM to exit {res['stop_s']:.1f} s; machine load "
                  f"average {' -> '.join(f'{x:.1f}' for x in res.get('loadavg_1min', []))})",
                  "",
                  "| endpoint | concurrency | requests | ok | errors | images/s | p50 (s) | "
                  "p99 (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.get('kind', 'images')} | {r['concurrency']} | {r['requests']} | "
                  f"{r['ok']} | {r['errors']} | {r['images_per_s']:.2f} | {r['p50_s']:.3f} | "
                  f"{r['p99_s']:.3f} |" for r in res["rows"]]
        lines.append("")
    by = {r["name"]: {row["concurrency"]: row for row in r["rows"]
                      if row.get("kind", "images") == "images"} for r in results}
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
              "`concurrency` locust users (FastHttpUser, no wait between requests); for the "
              "`feedback` rows a request is one label on a served image (images/s reads "
              "requests/s), stored in the server's SQLite feedback store (WAL). With "
              "`--max-batch 8` a lone request still waits `--batch-wait-ms` (10 ms) for "
              "company, which costs at concurrency 1. With "
              "`--max-batch 1` a replica renders 1 image at a time, the rest wait in its batch "
              "queue. Errors count anything but HTTP 200 (none expected "
              "below `--max-queued` 64). The full-size rows use the `synthetic` preset (SD-Turbo "
              "architecture, random weights) with 2 torch threads. Locust keeps response times "
              "over 10 s to 2 significant digits (17.000 means 17 s +- 0.5).", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="per concurrency level (tiny)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--full-size", type=int, default=4, help="requests at 512x512 (0: skip)")
    ap.add_argument("--timeout", type=float, default=600, help="per request and per level (s)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/cpu-2core/serve"))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logdir = args.out.parent / "logs"
    logdir.mkdir(exist_ok=True)
    tiny = ["--model", "tiny", "--height", "64", "--width", "64", "--device", "cpu"]
    results = []
    if args.requests:
        for batch in (8, 1):
            db = Path(tempfile.mkdtemp(prefix="pahi-serve-load-")) / "feedback.db"
            store = ["--feedback-db", str(db)] if batch == 8 else []
            results.append(run_config(f"tiny --max-batch {batch}", [*tiny, "--max-batch",
                                      str(batch), *store], args.concurrency, args.requests,
                                      "64x64", args.timeout, logdir, feedback=bool(store)))
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
