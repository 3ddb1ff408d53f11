#!/usr/bin/env bash
# Short PAHI and HI training runs on the `tiny` preset with the synthetic colour scorers of
# tests/synthetic_scorers.py (a known optimum), then `pahi-rt eval` on held-out prompts.
# Writes bench/results/$MACHINE/train_tiny.md. CPU: OMP_NUM_THREADS=1 (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
MACHINE=${MACHINE:-cpu-2core}
PAHI_RT=${PAHI_RT:-pahi-rt}
WORK=$(mktemp -d)
OUT=bench/results/$MACHINE
mkdir -p "$OUT"
export PYTHONPATH=tests${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python tests/synthetic_scorers.py "$WORK" >/dev/null  # train.txt, val.txt, test.txt
COMMON="--model tiny --height 64 --width 64 --device cpu --prompts $WORK/train.txt --val-prompts $WORK/val.txt --steps 200 --batch-size 8 --val-every 20 --patience 5 --hidden 144"
for MODE in pahi hi; do
  SCORER=synthetic_scorers:$([ $MODE = pahi ] && echo colour_by_word || echo fixed_colour)
  /usr/bin/time -f "%e s" -o "$WORK/$MODE.time" $PAHI_RT train --mode $MODE --scorer $SCORER $COMMON --pretrain-steps 50 --out "$WORK/$MODE" >/dev/null
  $PAHI_RT eval --head "$WORK/$MODE" --model tiny --device cpu --scorer $SCORER --prompts "$WORK/test.txt" --seeds 5 --batch-size 16 --json "$WORK/$MODE-eval.json" --markdown "$WORK/$MODE-eval.md" >/dev/null
done
python - "$WORK" "$OUT/train_tiny.md" "$COMMON" <<'PY'
import json, platform, sys
work, dest, common = sys.argv[1:]
common = common.replace(work, "$WORK")
lines = ["# Training on `tiny` (CPU, 2 cores, OMP_NUM_THREADS=1)", "",
         "Synthetic preference tasks with a known optimum (`tests/synthetic_scorers.py`): PAHI "
         "must match a target mean colour named by a colour word in the prompt "
         "(`colour_by_word`); HI a fixed colour for every prompt (`fixed_colour`). Validation "
         "and test prompts use objects never seen in training. Random-weight `tiny` model, "
         "64x64, one Euler step. `$WORK` holds the prompt files the script writes (48 training "
         "prompts, 8 validation, 16 test). Produced by `scripts/train_tiny.sh`, which runs:", "",
         "```bash",
         f"pahi-rt train --mode pahi --scorer synthetic_scorers:colour_by_word {common} --pretrain-steps 50 --out $WORK/pahi",
         "pahi-rt eval --head $WORK/pahi --model tiny --device cpu --scorer synthetic_scorers:colour_by_word --prompts $WORK/test.txt --seeds 5 --batch-size 16 --json ... --markdown ...",
         f"pahi-rt train --mode hi --scorer synthetic_scorers:fixed_colour {common} --pretrain-steps 50 --out $WORK/hi",
         "pahi-rt eval --head $WORK/hi --model tiny --device cpu --scorer synthetic_scorers:fixed_colour --prompts $WORK/test.txt --seeds 5 --batch-size 16 --json ... --markdown ...",
         "```", "", f"Python {platform.python_version()}, {platform.machine()}.", ""]
for mode in ("pahi", "hi"):
    meta = json.load(open(f"{work}/{mode}/config.json"))["training"]
    secs = open(f"{work}/{mode}.time").read().strip()
    lines += [f"## {mode.upper()} training curve", "",
              f"Wall time {secs} (incl. model build and, for PAHI, pretraining; {meta['steps']} steps, "
              f"{len(meta['history'])} validations); best step {meta['best_step']}.", "",
              "| step | train loss (mean since last eval) | val loss | val win rate (%) |",
              "|---|---|---|---|"]
    for h in meta["history"]:
        train_loss = f"{h['train_loss']:.4f}" if "train_loss" in h else "-"
        lines.append(f"| {h['step']} | {train_loss} | {h['val_loss']:.4f} | "
                     f"{100 * h['val_win_rate']:.1f} |")
    table = open(f"{work}/{mode}-eval.md").read().replace("## ", "### ").replace(work, "$WORK")
    lines += ["", table]
open(dest, "w").write("\n".join(lines))
PY
echo "wrote $OUT/train_tiny.md"
