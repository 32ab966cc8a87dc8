#!/usr/bin/env bash
# Every GPU figure the README reports, one step after another, each step's output kept in RESULTS.
#
#   bash bench/gpu-all.sh RESULTS                    # all steps (roughly half an hour on an H100: an estimate)
#   bash bench/gpu-all.sh RESULTS pipeline e2e-short # only these (a machine lent 10 minutes a call)
#   DEVICE=cpu SMALL=1 bash bench/gpu-all.sh /tmp/r pipeline e2e-short   # the plumbing, on a laptop
#
# Steps (the README's "On a GPU" table; the file each writes in RESULTS):
#   build           trainer._jpegcrop built in place when gcc and libjpeg's headers are there  build.txt
#   pipeline        input pipeline per worker, full-size and resize-short 160, + nvJPEG         data_pipeline.txt
#   pipeline-recipe the same at the recipes' crop scale, full-size and resize-short 256       data_pipeline_recipe_scale.txt
#   e2e-short       t4-rn18-fast end to end, resize-short-160 files, 15 workers               e2e_rn18_short_w15.txt
#   e2e-recipe      t4-rn18-fast end to end, full-size files, the recipe's 7 workers          e2e_rn18_w7.txt
#   e2e-short256    the same from resize-short-256 files (the README's prepare step)          e2e_rn18_short256_w7.txt
#   e2e-rn50        t4-rn50 end to end, full-size files, 7 workers                            e2e_rn50_w7.txt
#   step            train step against the naive fp32 loop and the plain-PyTorch ceiling      train_step.txt
#   check           scripts/gpu-check.sh: the trainer's GPU paths learn and resume            gpu_check.txt
#   graphs          tests/trainer/test_cuda_graphs.py                                          pytest_cuda_graphs.txt
#   forecast        the log's "about X left" against what t4-rn18-fast's run then took        forecast.txt
# A step that fails is reported and the others still run; the exit status is 1 if any failed.
# summary.txt lists each step's status, seconds and ratio lines.
set -uo pipefail
[ $# -ge 1 ] || { sed -n '2,22p' "$0"; exit 2; }
RESULTS="$1"; shift
ALL=(build pipeline pipeline-recipe e2e-short e2e-recipe e2e-short256 e2e-rn50 step check graphs forecast)
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=("${ALL[@]}")
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac   # steps run from bench/
DEVICE="${DEVICE:-cuda}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULTS"
cd "$REPO/bench" || exit 2

# SMALL=1 shrinks every step to seconds (to check this script, not to measure).
if [ "${SMALL:-0}" = 1 ]; then
  IMAGES=(--images 16 --reps 1); E2E=(--images 64 --steps 2 --warmup 1 --batch 8); STEP=(--archs resnet18 --res 32
  --batch 2 --steps 1 --warmup 1 --reps 1); WORKERS_MANY=2; WORKERS=2; FORECAST=(--epochs 2 --per-class 8)
else
  IMAGES=(--images 256); E2E=(--images 2048); STEP=(); WORKERS_MANY=15; WORKERS=7
  FORECAST=(--recipe t4-rn18-fast --epochs 6 --per-class 4000 --size 176)
fi

step_command() {  # the command of one step, as words
  case "$1" in
    build) echo "build" ;;
    pipeline) echo "$PY data_pipeline.py --device $DEVICE ${IMAGES[*]}" ;;
    pipeline-recipe) echo "$PY data_pipeline.py --device $DEVICE ${IMAGES[*]} --crop-scale 0.25,1.0 --resize-short 256" ;;
    e2e-short) echo "$PY end_to_end.py --device $DEVICE --recipe t4-rn18-fast ${E2E[*]} --resize-short 160 --workers $WORKERS_MANY" ;;
    e2e-recipe) echo "$PY end_to_end.py --device $DEVICE --recipe t4-rn18-fast ${E2E[*]} --workers $WORKERS" ;;
    e2e-short256) echo "$PY end_to_end.py --device $DEVICE --recipe t4-rn18-fast ${E2E[*]} --resize-short 256 --workers $WORKERS" ;;
    e2e-rn50) echo "$PY end_to_end.py --device $DEVICE --recipe t4-rn50 ${E2E[*]} --workers $WORKERS" ;;
    step) echo "$PY train_step.py --device $DEVICE --compile off ${STEP[*]}" ;;
    check) echo "env DEVICE=$DEVICE bash $REPO/scripts/gpu-check.sh" ;;
    graphs) echo "$PY -m pytest -q -p no:cacheprovider $REPO/tests/trainer/test_cuda_graphs.py" ;;
    forecast) echo "$PY forecast.py --device $DEVICE ${FORECAST[*]}" ;;
    *) return 1 ;;
  esac
}

output_file() {
  case "$1" in
    pipeline) echo data_pipeline.txt ;; pipeline-recipe) echo data_pipeline_recipe_scale.txt ;;
    e2e-short) echo e2e_rn18_short_w15.txt ;; e2e-recipe) echo e2e_rn18_w7.txt ;;
    e2e-short256) echo e2e_rn18_short256_w7.txt ;; e2e-rn50) echo e2e_rn50_w7.txt ;;
    step) echo train_step.txt ;; check) echo gpu_check.txt ;; graphs) echo pytest_cuda_graphs.txt ;;
    build) echo build.txt ;; forecast) echo forecast.txt ;;
  esac
}

build() {  # the partial JPEG decoder, where a compiler and libjpeg's headers are (else the fallback runs)
  if command -v cc >/dev/null && echo '#include <stdio.h>
#include <jpeglib.h>' | cc -E -x c - >/dev/null 2>&1; then
    (cd "$REPO" && "$PY" setup.py build_ext --inplace) || echo "build failed: whole-image decoding will run"
  else
    echo "no C compiler or no jpeglib.h here: the loader decodes whole images with simplejpeg"
  fi
  "$PY" -c "from trainer.decode import jpeg_decoder; print('JPEG crops decoded', jpeg_decoder())"
}

for s in "${STEPS[@]}"; do
  step_command "$s" >/dev/null || { echo "unknown step $s (steps: ${ALL[*]})"; exit 2; }
done
failed=0
{ echo "gpu-all.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), DEVICE=$DEVICE, commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA GPU')"
} | tee "$RESULTS/summary.txt"
for s in "${STEPS[@]}"; do
  out="$RESULTS/$(output_file "$s")"
  cmd="$(step_command "$s")"
  echo "== $s: $cmd" | tee -a "$RESULTS/summary.txt"
  t0=$SECONDS
  if [ "$s" = build ]; then build >"$out" 2>&1; rc=$?; else (echo "\$ $cmd"; $cmd) >"$out" 2>&1; rc=$?; fi
  status=$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")
  [ $rc -eq 0 ] || failed=1
  { echo "   $status in $((SECONDS - t0)) s -> $out"; grep -E "^ratio |^data-wait|JPEG crops decoded|passed|failed" "$out" | sed 's/^/   /'; } \
    | tee -a "$RESULTS/summary.txt"
done
exit $failed
