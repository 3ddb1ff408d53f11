"""Start-up cost of the CLI's fast paths, before and after lazy imports (issue 19 item 2).

Each command runs in a fresh interpreter (`python -m pahi_rt.cli ...`) from a source tree put
first on PYTHONPATH: a snapshot of the working tree's `pahi_rt/` taken at start ("after") and,
for "before", `git archive REV` of an earlier commit unpacked into a temp dir. Wall time from
process start to exit (monotonic clock), median and min over --repeats runs, commands
interleaved so load changes hit both trees alike.
A benchmark, not a test: tests/test_first_hour.py checks that these paths import no torch.

    python scripts/startup_bench.py --before 923011e --repeats 5
    # writes bench/results/cpu-2core/startup.md and startup.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {  # name -> argv after `pahi-rt`
    "argument error (`generate --model tiny`)": ["generate", "--model", "tiny"],
    "`--help`": ["--help"],
    "`generate --help`": ["generate", "--help"],
    "`--version`": ["--version"],
    "`feedback add` of one PNG": ["feedback", "add", "o/00000.png", "--good", "--to", "f.jsonl"],
    "first image (`generate` tiny 64x64)": ["generate", "a red fox", "--model", "tiny",
                                           "--height", "64", "--width", "64", "--out", "{fresh}"],
}


def source_tree(rev: str, into: Path) -> Path:
    """`git archive rev` unpacked into `into` (the repository's own objects, nothing fetched)."""
    data = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def timed(tree: Path, argv: list[str], cwd: Path) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pahi_rt.cli", *argv], cwd=cwd, env=env,
                       capture_output=True, timeout=600)
    return time.perf_counter() - t0, p.returncode


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    def field(key: str) -> str:
        return next((x.split(":", 1)[1].strip() for x in info.splitlines()
                     if x.split(":")[0].strip() == key), "?")

    name = f"{field('model name')} (family {field('cpu family')} model {field('model')})"
    flags = next((x.split(":", 1)[1].split() for x in info.splitlines()
                  if x.startswith("flags")), [])
    keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags]
    return f"{name}, {os.cpu_count()} CPUs ({', '.join(keep)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="923011e", help="git revision measured as 'before'")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/cpu-2core/startup")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "pahi_rt", tmp / "after" / "pahi_rt")  # edits later: not seen
        trees = {"before": source_tree(args.before, tmp / "before"), "after": tmp / "after"}
        work = tmp / "work"
        work.mkdir()
        made = timed(trees["after"], ["generate", "a cat", "--model", "tiny", "--height", "64",
                                      "--width", "64", "--out", "o"], work)
        assert made[1] == 0 and (work / "o" / "00000.png").is_file(), "could not make a PNG"
        load0 = os.getloadavg()
        runs: dict = {name: {t: [] for t in trees} for name in COMMANDS}
        codes: dict = {name: {} for name in COMMANDS}
        for _ in range(args.repeats):
            for name, argv in COMMANDS.items():
                for label, tree in trees.items():
                    fresh = f"g-{label}-{len(runs[name][label])}"  # a new dir: no collision
                    seconds, code = timed(tree, [a.format(fresh=fresh) for a in argv], work)
                    runs[name][label].append(seconds)
                    codes[name][label] = code
        load1 = os.getloadavg()
    write(args, runs, codes, (load0, load1))


def write(args, runs: dict, codes: dict, loads) -> None:
    rows = {name: {label: {"median_s": round(statistics.median(v), 3), "min_s": round(min(v), 3),
                           "exit_code": codes[name][label]} for label, v in per.items()}
            for name, per in runs.items()}
    facts = {"machine": machine(), "before": args.before, "repeats": args.repeats,
             "load_average_start_end": [round(x, 2) for x in (loads[0][0], loads[1][0])],
             "python": sys.version.split()[0], "rows": rows,
             "note": "shared machine: other agents' jobs ran at the same time"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(facts, indent=2) + "\n")
    lines = [f"# CLI start-up, before ({args.before}) and after lazy imports", "",
             f"Machine: {facts['machine']}; Python {facts['python']}; shared with other jobs "
             f"(1-min load average {facts['load_average_start_end'][0]} at start, "
             f"{facts['load_average_start_end'][1]} at end). Wall time of a fresh process, "
             f"median (min) of {args.repeats} runs, interleaved.", "",
             f"Command: `python scripts/startup_bench.py --before {args.before} "
             f"--repeats {args.repeats}`", "",
             "| command | before s | after s | exit before / after |", "|---|---:|---:|---|"]
    for name, r in rows.items():
        b, a = r["before"], r["after"]
        lines.append(f"| {name} | {b['median_s']:.2f} ({b['min_s']:.2f}) | "
                     f"{a['median_s']:.2f} ({a['min_s']:.2f}) | {b['exit_code']} / "
                     f"{a['exit_code']} |")
    lines += ["", "Exit 2 is the expected one-line error; `--version` did not exist before "
              "(exit 2: no such option)."]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
