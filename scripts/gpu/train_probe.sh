#!/usr/bin/env bash
# Training at full size on the GPU (bf16 autocast + UNet gradient checkpointing, the CUDA
# defaults): step time and peak memory at batch 8 and 72, then 300 steps at batch 8 with the
# synthetic colour scorer. Usage: train_probe.sh RESULTS_DIR (PYTHONPATH must hold tests/).
set -uo pipefail
R=${1:?results dir}; W=/tmp/gpu/train; mkdir -p $W
python3 - <<'PY'
from synthetic_scorers import colour_prompts
train, val = colour_prompts()
open("/tmp/gpu/train/train.txt", "w").write("\n".join(train) + "\n")
open("/tmp/gpu/train/val.txt", "w").write("\n".join(val) + "\n")
PY
common="--mode pahi --model ${MODEL:-synthetic} --height ${SIZE:-512} --width ${SIZE:-512} --device ${DEVICE:-cuda}
  --scorer synthetic_scorers:colour_by_word --prompts $W/train.txt --val-prompts $W/val.txt"
for b in 8 72; do
  echo "== batch $b: 6 steps (step time, peak memory)"
  python3 -m pahi_rt.cli train $common --batch-size $b --steps 6 --val-every 1000 \
    --pretrain-steps 0 --out $W/b$b 2>&1 | tail -2
done
echo "== batch 8: 300 steps, validation every 50"
python3 -m pahi_rt.cli train $common --batch-size 8 --steps 300 --val-every 50 \
  --pretrain-steps 50 --warmup 30 --out $W/run300 2>&1 | tail -2
python3 - <<'PY' > $R/train_history.json
import json
info = json.load(open("/tmp/gpu/train/run300/config.json"))["training"]
print(json.dumps({k: info.get(k) for k in ("history", "pretrain", "best_step", "val_loss",
                                            "val_win_rate", "steps")}, indent=1))
PY
echo "train probe done"
