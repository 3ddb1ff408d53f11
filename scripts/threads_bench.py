"""CPU thread policy under load: `pahi-rt generate` per-image time, idle and with busy cores.

    python scripts/threads_bench.py --model tiny --size 64 --images 12 --repeats 3
    python scripts/threads_bench.py --model synthetic --size 512 --images 3 --repeats 2

Each run is a fresh `pahi-rt generate --prompts` process (OpenMP reads its settings at start)
with one thread/wait-policy setting; settings are interleaved so a change in the machine's other
load hits them alike. Load levels: `idle` (nothing of ours; other users' processes may run: the
`other` column shows the CPU they took, in cores), `busy1`/`busy2` (one/two busy-loop processes
we start, and stop, by pid). Per run: the median seconds per image after the first (warm-up).
`--max-other C` repeats (up to 5 tries) an idle-load run during which everything else took more
than C cores, so that `idle` means idle on a shared machine; the disturbed runs are kept in the
JSON. Prints a markdown table; `--json` keeps every run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {  # name -> environment for the generate process
    "libgomp default (spin)": {"GOMP_SPINCOUNT": "300000"},  # libgomp's default spin count
    "pahi-rt default (passive)": {},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}
LOADS = {"idle": 0, "busy1": 1, "busy2": 2}
LINE = re.compile(r"seed (\d+)\s+([\d.]+) s")


def cpu_busy_jiffies() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def run_once(env_extra: dict, args, prompts: Path, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    cmd = [args.pahi_rt, "generate", "--prompts", str(prompts), "--model", args.model,
           "--height", str(args.size), "--width", str(args.size), "--out", str(out),
           "--overwrite"]
    hz = os.sysconf("SC_CLK_TCK")
    busy0, wall0 = cpu_busy_jiffies(), time.perf_counter()
    before = os.times()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    after = os.times()
    wall = time.perf_counter() - wall0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    ours = (after.children_user + after.children_system
            - before.children_user - before.children_system)
    other = max(0.0, (cpu_busy_jiffies() - busy0) / hz - ours) / wall
    times = [float(m.group(2)) for m in LINE.finditer(proc.stderr)]
    return {"per_image_s": statistics.median(times[1:]), "first_s": times[0], "images": times,
            "other_cores": other, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loads", default="idle,busy1,busy2")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma list of SETTINGS")
    ap.add_argument("--max-other", type=float, default=0.0,
                    help="idle load: repeat runs during which others took more cores than this")
    ap.add_argument("--pahi-rt", dest="pahi_rt", default="pahi-rt")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(f"a photo of object {i}" for i in range(args.images)))
    results = {}
    for load in args.loads.split(","):
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                 for _ in range(LOADS[load])]
        try:
            time.sleep(1)
            for rep in range(args.repeats):
                for name in args.settings.split(","):
                    for _ in range(5 if load == "idle" and args.max_other else 1):
                        r = run_once(SETTINGS[name], args, prompts, work / "out")
                        quiet = not args.max_other or r["other_cores"] <= args.max_other
                        key = name if quiet or load != "idle" else f"{name} (disturbed)"
                        results.setdefault(load, {}).setdefault(key, []).append(r)
                        print(f"{load} {key} #{rep}: {r['per_image_s']:.3f} s/image "
                              f"(first {r['first_s']:.2f} s, other load "
                              f"{r['other_cores']:.2f} cores)", file=sys.stderr, flush=True)
                        if quiet or load != "idle":
                            break
        finally:
            for p in loops:
                p.terminate()
                p.wait()
    print(table(results, args))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "settings": SETTINGS, "results": results}, indent=2))


def table(results: dict, args) -> str:
    names = args.settings.split(",")
    lines = [f"`{args.model}` {args.size}x{args.size}, seconds per image after the first: "
             f"median of {args.repeats} runs [min-max]; `other`: CPU cores used by everything "
             "else during the runs (median)"
             + (f"; idle runs kept only when other <= {args.max_other}" if args.max_other
                else "") + ".", "",
             "| load | " + " | ".join(names) + " | other |",
             "|---|" + "---:|" * (len(names) + 1)]
    for load, by_setting in results.items():
        cells, other = [], []
        for name in names:
            xs = [r["per_image_s"] for r in by_setting.get(name, [])]
            if not xs:
                cells.append("-")
                continue
            other += [r["other_cores"] for r in by_setting[name]]
            cells.append(f"{statistics.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}]")
        lines.append(f"| {load} | " + " | ".join(cells) + f" | {statistics.median(other):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
