#!/usr/bin/env bash
# One GPU lease, in phases, one per device call (see scripts/gpu/README.md):
#   start   install the small wheels and pahi-rt into /tmp/site; in the background: export the
#           full-size fp16 artifacts (CPU) and run the training probe (GPU)
#   status  show the background jobs' progress (the calls that only carry wheel loads)
#   main    install the last wheels; wait for the jobs; GPU tests; fp16/fp32 parity; start the
#           bench in the background and wait for it as long as the call allows
#   finish  wait for the bench; gather results
# Everything lands in /tmp/gpu (logs/, results/); each phase copies results into $OUT.
set -uo pipefail
phase=${1:?phase}; repo=$(pwd); G=/tmp/gpu; L=$G/logs; R=$G/results
mkdir -p $L $R /tmp/dw
export PYTHONPATH=/tmp/site:$repo/tests PYTHONUNBUFFERED=1 PAHI_RT_CACHE=$G/cache HF_HUB_OFFLINE=1
py=python3; cli="python3 -P -m pahi_rt.cli"  # -P: the installed package, not the source tree
# a local dry run: DRY=1 MODEL=tiny SIZE=64 DEVICE=cpu BACKENDS=torch,onnxruntime,diffusers
MODEL=${MODEL:-synthetic} SIZE=${SIZE:-512} DEVICE=${DEVICE:-cuda}
BACKENDS=${BACKENDS:-torch,torch-compile,onnxruntime,onnxruntime-staged,tensorrt,diffusers}
export MODEL SIZE DEVICE
bg() { setsid nohup bash -c "$2" > $L/$1.log 2>&1 < /dev/null & echo $! > $L/$1.pid; }
running() { [ -f $L/$1.pid ] && kill -0 "$(cat $L/$1.pid)" 2>/dev/null; }
wait_for() { while running $1; do sleep 5; [ $SECONDS -gt ${2:-99999} ] && return 1; done; return 0; }
show() { for f in $L/*.log; do echo "== $(basename $f) (last lines)"; tail -n ${1:-4} $f; done; }
collect() { cp $R/* $OUT/ 2>/dev/null; tar -czf $OUT/logs.tgz -C $G logs 2>/dev/null; ls -la $OUT; }

install() {  # whole wheels present in /tmp/dw (split ones reassembled first), then pahi-rt
  [ -n "${DRY:-}" ] && return 0
  cp "$@" /tmp/dw/ 2>/dev/null
  (cd /tmp/dw && for s in *.sha256; do [ -e "$s" ] || continue; w=${s%.sha256}
     ls $w.part* >/dev/null 2>&1 || continue
     cat $w.part* > $w && echo "$(cat $s)  $w" | sha256sum -c - && rm $w.part* $s; done)
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/dw/*.whl 2>&1 | grep -v WARN
  $py -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target /tmp/site . 2>&1 | grep -v WARN
}

case $phase in
start)
  install .dw/load1/*.whl .dw/load1/*.sha256
  { nvidia-smi; $py -c 'import torch, sys; print(sys.version, torch.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))'
    $py -m pip list 2>/dev/null | grep -iE "^(torch|onnx|onnxruntime|diffusers|transformers|triton|accelerate) "; nproc; free -g; } > $L/env.log 2>&1
  cat $L/env.log
  bg export "$py scripts/gpu/prepare.py --batch 1 && $py scripts/gpu/prepare.py --batch 4"
  bg train "bash scripts/gpu/train_probe.sh $R"
  sleep 20; show 3 ;;
start2)  # a second, shorter lease: torch rows at once, both exports in parallel
  install .dw/load1/*.whl .dw/load1/*.sha256
  bg export "$py scripts/gpu/prepare.py --batch 1"
  bg export4 "$py scripts/gpu/prepare.py --batch 4"
  bg benchtorch "$cli bench --model $MODEL --height $SIZE --width $SIZE --device $DEVICE --precision fp16 --batch 1,4 --backends torch,torch-compile,diffusers --modes pahi-1step,gaussian-1step,gaussian-2step --warmup 3 --iters 20 --json $R/bench_torch.json --markdown $R/bench_torch.md --plot $R/bench_torch.png"
  sleep 15; show 2 ;;
ort2)  # the last wheels; the onnxruntime rows once the exports are done
  install .dw/load*/*
  wait_for export $((SECONDS + 400)); wait_for export4 $((SECONDS + 100)); wait_for benchtorch $((SECONDS + 200))
  bg bench "$cli bench --model $MODEL --height $SIZE --width $SIZE --device $DEVICE --precision fp16 --batch 1,4 --backends onnxruntime,onnxruntime-staged --modes pahi-1step,gaussian-1step,gaussian-2step --warmup 3 --iters 20 --json $R/bench_ort.json --markdown $R/bench_ort.md --plot $R/bench_ort.png"
  wait_for bench $((SECONDS + ${2:-280})); show 3; collect ;;
status)
  cp .dw/load*/* /tmp/dw/ 2>/dev/null; ls /tmp/dw | wc -l; show 3 ;;
main)
  install .dw/load*/*
  $py -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())' 2>&1 | tail -1
  wait_for export $((SECONDS + 90)); wait_for train $((SECONDS + 30)); show 6
  timeout 240 $py -P -m pytest -m gpu -q -rs -s tests/test_gpu.py tests/test_runtime_trt.py tests/test_sampling.py 2>&1 | tee $L/pytest_gpu.log | tail -25
  timeout 90 $py scripts/gpu/parity.py $R/parity.json 2>&1 | tee $L/parity.log | tail -4
  if ! timeout 60 $py scripts/gpu/trt_probe.py > $L/trt_probe.log 2>&1; then
    BACKENDS=${BACKENDS//,tensorrt/}; echo "TensorRT rows dropped:"; fi; tail -3 $L/trt_probe.log
  # the bench starts once the export and the training probe are done (no contention)
  bg bench "while kill -0 \$(cat $L/export.pid) 2>/dev/null || kill -0 \$(cat $L/train.pid) 2>/dev/null; do sleep 2; done; $cli bench --model $MODEL --height $SIZE --width $SIZE --device $DEVICE --precision fp16 --batch 1,4 --backends $BACKENDS --modes pahi-1step,gaussian-1step,gaussian-2step --warmup 3 --iters 20 --json $R/bench.json --markdown $R/bench.md --plot $R/bench.png"
  sleep 5; show 4; collect ;;
retest)  # the GPU tests again (python -P: the installed package, not the source tree)
  if running bench && ! pgrep -f "pahi_rt.cli bench" >/dev/null; then kill $(cat $L/bench.pid); fi
  $py -c "import torch, onnxruntime as o; p=[('CUDAExecutionProvider', {}), 'CPUExecutionProvider']; s=o.InferenceSession('$(ls $G/cache/*/decoder.onnx | head -1)', providers=p); print('ORT providers in use:', s.get_providers())" 2>&1 | tail -2
  timeout 200 $py -P -m pytest -m gpu -q -rs -s tests/test_gpu.py tests/test_runtime_trt.py tests/test_sampling.py 2>&1 | tee $L/pytest_gpu.log | tail -30
  running bench || bg bench "while kill -0 \$(cat $L/export.pid) 2>/dev/null; do sleep 2; done; $cli bench --model $MODEL --height $SIZE --width $SIZE --device $DEVICE --precision fp16 --batch 1,4 --backends ${BACKENDS//,tensorrt/} --modes pahi-1step,gaussian-1step,gaussian-2step --warmup 3 --iters 20 --json $R/bench.json --markdown $R/bench.md --plot $R/bench.png"
  sleep 3; show 3; collect ;;
bench)  # (re)start the bench now and wait for it
  running bench || bg bench "$cli bench --model $MODEL --height $SIZE --width $SIZE --device $DEVICE --precision fp16 --batch 1,4 --backends ${BACKENDS//,tensorrt/} --modes pahi-1step,gaussian-1step,gaussian-2step --warmup 3 --iters 20 --json $R/bench.json --markdown $R/bench.md --plot $R/bench.png"
  wait_for bench $((SECONDS + ${2:-500})); tail -c 3000 $L/bench.log; collect ;;
finish)
  wait_for bench $((SECONDS + ${2:-500})); show 30; collect ;;
esac
