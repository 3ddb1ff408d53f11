"""Rows, tables, JSON and plot for `pahi-rt bench`."""
from __future__ import annotations

import json
import math
from pathlib import Path

from pahi_rt.io import atomic_write, atomic_write_text
from pahi_rt.specs import STAGES

from .floor import Peaks, Work
from .harness import Timing, percentile_ms

METHOD = {"pahi-1step": "PAHI", "hi-1step": "HI", "gaussian-1step": "one step",
          "gaussian-2step": "two steps"}


def make_row(mode, backend: str, precision: str, batch: int, device: str, timing: Timing,
             work: dict[str, Work], peaks: Peaks, iters: int, warmup: int,
             score: float | None = None, open_s: float | None = None,
             notes: list[str] | None = None, fused: bool = False) -> dict:
    """One JSON row: latency percentiles, per-stage p50 and their floors."""
    p50 = percentile_ms(timing.e2e, 50)
    stages = {k: percentile_ms(v, 50) for k, v in timing.stages.items()}
    floors = {}
    for stage in stages:
        key = "unet_step" if stage.startswith("unet_step") else stage
        if key in work:
            floors[stage] = peaks.floor_ms(work[key])
    steps = [f"unet_step_{i + 1}" for i in range(mode.steps)]
    e2e_floor = sum(peaks.floor_ms(work[k]) for k in ("text_encoder", "head", "decode",
                                                         "copy_out")) + \
        len(steps) * peaks.floor_ms(work["unet_step"])
    return {
        "mode": mode.name, "backend": backend, "precision": precision, "batch": batch,
        "device": device, "p50_ms": p50, "p90_ms": percentile_ms(timing.e2e, 90),
        "p99_ms": percentile_ms(timing.e2e, 99), "p10_ms": percentile_ms(timing.e2e, 10),
        "min_ms": min(timing.e2e) * 1e3, "max_ms": max(timing.e2e) * 1e3,
        "images_per_s": batch * 1e3 / p50 if p50 > 0 else float("nan"),
        "peak_memory_mb": timing.peak_memory_mb, "stages": stages,
        "floor_ms": floors, "floor_ratio": {k: stages[k] / v for k, v in floors.items() if v > 0},
        "e2e_floor_ms": e2e_floor, "e2e_floor_ratio": p50 / e2e_floor if e2e_floor else None,
        "iters": iters, "warmup": warmup, "score": score,
        "open_s": open_s, "first_call_s": timing.first_call_s, "notes": notes or [],
        "fused": fused,
    }


def _fmt(x, digits=1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def markdown(result: dict) -> str:
    rows, m = result["rows"], result["machine"]
    cpu = (f" CPU: {m['cpu']}, features: {' '.join(m.get('cpu_features') or []) or '-'}."
           if m.get("cpu") else "")
    how = (" Rows of one group were timed round-robin (interleaved); spread = min-max ms."
           if result.get("interleave") else " Rows timed one after another; spread = min-max ms.")
    lines = [f"# pahi-rt bench: {m['device']}", "",
             f"`{result['command']}`", "",
             f"Measured peaks: {m['peak_tflops']:.2f} TFLOP/s ({m['peak_precision']} matmul), "
             f"{m['peak_gbps']:.1f} GB/s (copy). Model `{result['model']}`"
             + (f", decoder `{result['decoder']}`" if result.get("decoder") else "") + ", "
             f"{result['height']}x{result['width']}." + cpu + how
             + (f" Score: mean of `{result['scorer']}` over the timed images."
                if result.get("scorer") else ""), "",
             "| Method | Backend | Precision | Batch | Group | Time (s) | p50 ms | spread ms | "
             "p90 ms | images/s | peak MiB | floor ms | x floor | Score | setup s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        setup = (r.get("open_s") or 0) + (r.get("first_call_s") or 0)
        spread = (f"{_fmt(r['min_ms'], 0)}-{_fmt(r['max_ms'], 0)}" if "min_ms" in r else "-")
        lines.append(
            f"| {METHOD.get(r['mode'], r['mode'])} | {r['backend']} | {r['precision']} | "
            f"{r['batch']} | {r.get('group', '-')} | {r['p50_ms'] / 1e3 / r['batch']:.4f} | "
            f"{_fmt(r['p50_ms'], 2)} | {spread} | {_fmt(r['p90_ms'], 2)} | "
            f"{_fmt(r['images_per_s'], 2)} | {_fmt(r['peak_memory_mb'], 0)} | "
            f"{_fmt(r['e2e_floor_ms'], 2)} | {_fmt(r['e2e_floor_ratio'])} | "
            f"{_fmt(r.get('score'), 3)} | {_fmt(setup)} |")
    lines += ["", "Time (s) is p50 per image, the paper's Table 2 unit; setup s = opening the "
              "pipeline (export/engine/session) + the first call (compile, CUDA-graph capture). "
              "Per stage, p50 ms (measured / floor):", "",
              "| Method | Backend | Batch | " + " | ".join(STAGES) + " |",
              "|---|---|---:|" + "---:|" * len(STAGES)]
    for r in rows:
        cells = []
        for s in STAGES:
            ms, ratio = r["stages"].get(s), r["floor_ratio"].get(s)
            cells.append("-" if ms is None else
                         f"{ms:,.2f}" + (f" ({ratio:,.1f}x)" if ratio else ""))
        lines.append(f"| {METHOD.get(r['mode'], r['mode'])} | {r['backend']} | {r['batch']} | "
                     + " | ".join(cells) + " |")
    for batch, work in result["work"].items():
        lines += ["", f"Work per stage (batch {batch}):", "",
                  "| Stage | GFLOP | MB moved (min) | floor ms |", "|---|---:|---:|---:|"]
        for stage, w in work.items():
            lines.append(f"| {stage} | {w['flops'] / 1e9:,.1f} | {w['bytes'] / 1e6:,.1f} | "
                         f"{_fmt(w['floor_ms'], 3)} |")
    notes = [(r, n) for r in rows for n in r.get("notes", [])]
    if result.get("skipped") or notes:
        lines += ["", "Skipped rows and notes:", ""]
        lines += [f"- {s['backend']} {s['mode']} batch {s.get('batch', '-')}: skipped, "
                  f"{s['reason']}" for s in result.get("skipped", [])]
        lines += [f"- {r['backend']} {r['mode']} batch {r['batch']}: {n}" for r, n in notes]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, json_path: Path | None, md_path: Path | None,
                  plot_path: Path | None) -> None:
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    if md_path:
        atomic_write_text(md_path, markdown(result))
    if plot_path:
        plot(result, plot_path)


def plot_stages(row: dict) -> dict[str, float]:
    """The stage bars of a row in the plot: none for a fused row (its stages were timed in a
    separate staged call and do not add up to the fused call), no head bar for Gaussian noise
    (no head runs: the stage is the identity)."""
    if row.get("fused"):
        return {}
    skip = {"head"} if row["mode"].startswith("gaussian") else set()
    return {k: v for k, v in row["stages"].items() if k not in skip}


def plot(result: dict, path: Path) -> None:
    """Horizontal stacked bars: per-stage p50 per row, with the end-to-end p50 marked."""
    from pahi_rt.errors import require

    matplotlib = require("matplotlib", "bench")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.6))
    labels = [f"{METHOD.get(r['mode'], r['mode'])} / {r['backend']} {r['precision']} "
              f"b{r['batch']}" for r in rows]
    stages = [plot_stages(r) for r in rows]
    for s in STAGES:
        left = [sum(st.get(x, 0.0) for x in STAGES[:STAGES.index(s)]) for st in stages]
        ax.barh(labels, [st.get(s, 0.0) for st in stages], left=left, label=s)
    fused = [(label, r["p50_ms"]) for label, r in zip(labels, rows) if r.get("fused")]
    if fused:  # one call (fused graph, stock pipeline): its stages are not separable
        ax.barh([f for f, _ in fused], [ms for _, ms in fused], color="0.6", hatch="//",
                label="one call (fused)")
    ax.scatter([r["p50_ms"] for r in rows], labels, marker="|", s=300, color="black",
               label="end to end p50", zorder=3)
    ax.set_xlabel("ms (p50)")
    ax.set_title(f"{result['model']} {result['height']}x{result['width']} on "
                 f"{result['machine']['device']}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
