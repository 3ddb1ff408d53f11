"""Markdown + JSON report of scripts/feedback_bench.py."""
from __future__ import annotations

import json
from pathlib import Path


def _cell(row: dict | None) -> tuple[str, str]:
    if row is None:
        return "-", "-"
    return (f"{100 * row['win_mean']:.1f} ({100 * row['win_std']:.1f})",
            f"{row['train_seconds']:.1f}")


def _label(objective: str, n) -> str:
    if objective == "scorer":
        return "scorer training (upper bound)"
    unit = "labels" if objective == "kto" else "pairs"
    return f"{objective} from {n:,} {unit}"


def write_report(out: Path, rows: list[dict], commands: list[str], pool_size: int,
                 pool_seconds: float, machine: str) -> None:
    import os

    out.parent.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # the machine is shared: say how busy
    keys = list(dict.fromkeys((r["objective"], r["n"]) for r in rows))
    by = {(r["mode"], r["objective"], r["n"]): r for r in rows}
    lines = [
        "# Learning a head from feedback on `tiny` (CPU, 2 cores, OMP_NUM_THREADS=1)", "",
        "Simulated users are the synthetic scorers of `tests/synthetic_scorers.py`: PAHI learns "
        "`colour_by_word` (target colour named in the prompt), HI `fixed_colour`. Records come "
        "from Gaussian 1-step images of the 48 training prompts: kto labels the better-scoring "
        "half of each prompt's images good, dpo pairs two images of one prompt (the higher score "
        "wins; N pairs = 2N images). Win rate: `pahi-rt eval` on the 16 held-out prompts "
        "(objects never seen in training), paired against Gaussian noise with the scorer that "
        "labelled, mean (std) over 5 seed rounds. Train s: wall time of pretraining, steps and "
        "validations as the run records it (`train_seconds`; loading and Python start-up "
        "excluded, see the JSON for whole-command times). Random-weight `tiny` model, 64x64.",
        "", f"{machine}; load average (1, 5, 15 min) when the report was written: {load} "
        "(other users' jobs share the machine, which inflates every time here). Scoring the "
        f"{pool_size:,} Gaussian images of the record pool in process (batches of 256) took "
        f"{pool_seconds:.0f} s.", "",
        "| method | HI win rate (%) | HI train s | PAHI win rate (%) | PAHI train s |",
        "|---|---:|---:|---:|---:|"]
    for objective, n in keys:
        hi, hi_s = _cell(by.get(("hi", objective, n)))
        pahi, pahi_s = _cell(by.get(("pahi", objective, n)))
        lines.append(f"| {_label(objective, n)} | {hi} | {hi_s} | {pahi} | {pahi_s} |")
    lines += ["", "Per run: steps run (early stopping), best step by held-out loss, held-out "
              "preference accuracy at the best step (kto: same-prompt good/bad pairs ranked "
              "right by the implicit reward; dpo: pairs; scorer runs report none), whole "
              "command wall time.", "",
              "| run | steps | best step | val accuracy (%) | command s |",
              "|---|---:|---:|---:|---:|"]
    for r in rows:
        acc = "-" if r.get("val_accuracy") is None else f"{100 * r['val_accuracy']:.1f}"
        lines.append(f"| {r['name']} | {r['steps']} | {r['best_step']} | {acc} | "
                     f"{r['command_seconds']:.1f} |")
    lines += ["", "Commands (`$WORK` is the scratch directory; the JSONL files are written by "
              "the script as described above):", "", "```bash",
              "OMP_NUM_THREADS=1 PYTHONPATH=tests python scripts/feedback_bench.py",
              "# which runs, with OMP_NUM_THREADS=1 PYTHONPATH=tests:", *commands, "```", ""]
    out.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": machine, "load_average": os.getloadavg(), "pool_size": pool_size,
         "pool_seconds": pool_seconds, "rows": rows, "commands": commands}, indent=1),
        encoding="utf-8")
