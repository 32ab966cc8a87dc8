#!/usr/bin/env bash
# GPU acceptance in one run of under ~8 minutes on one GPU: what our training step gains, whether the
# recipe's loader keeps up, the time to 93% on Fashion-MNIST, and each ImageNet recipe's T4 hours and $.
#
#   bash bench/gpu-acceptance.sh bench/results/h100-2026-12-06   # all steps, from the repo root
#   bash bench/gpu-acceptance.sh RESULTS e2e projection          # only these steps
#   DEVICE=cpu SMALL=1 bash bench/gpu-acceptance.sh /tmp/r       # the plumbing on a laptop: no figure in it
#
# Steps, each one's budget on an H100 (ESTIMATES from the rates of the H100 runs of 2026-11-22, not timed as
# a whole yet) and the file it writes in RESULTS:
#   part 1: our step (trainer.engine, recipe t4-rn18-fast's settings) against the naive fp32 loop and
#   the plain-PyTorch ceiling (bench/train_step.py, 10 timed steps x 3 interleaved reps, no compile):
#     step-rn18-fp16  resnet18 @128 and @160, batch 256, fp16 + GradScaler (a T4's)     ~50 s  train_step_rn18_fp16.txt
#     step-rn50-fp16  resnet50 @160, batch 128, fp16 + GradScaler                       ~40 s  train_step_rn50_fp16.txt
#     step-rn18-best  resnet18 as above in the GPU's best precision (bf16; skipped on a
#                     GPU without bf16, a T4, where it is the fp16 step)                ~50 s  train_step_rn18_best.txt
#     step-rn50-best  resnet50 as above in the best precision                           ~40 s  train_step_rn50_best.txt
#   part 2: e2e       t4-rn18-fast from 2,048 generated JPEGs through trainer.data with the recipe's 7
#                     workers, against synthetic batches (bench/end_to_end.py)          ~70 s  e2e_rn18_w7.txt
#   part 3: fmnist    time to 93% val top-1 on Fashion-MNIST: `trainer train --recipe fashion-mnist
#                     --target-top1 93` at most FMNIST_EPOCHS (10) epochs, FMNIST_WORKERS (7) workers
#                     (bench/fashion_mnist_time.py); SKIPPED, not failed, when Debian's
#                     dataset-fashion-mnist is missing (FMNIST_SOURCE=DIR: a copy of its .gz files)  ~100 s  fashion_mnist.txt
#   part 4: projection  each ImageNet recipe's GPU hours and $ on a T4, the rates measured here in fp16
#                     scaled by dense fp16 TFLOPS and by memory bandwidth (bench/t4_projection.py)  ~90 s  t4_projection.txt
# Together ~7.5 min plus start-ups. No step may overrun the run's deadline (DEADLINE seconds, default
# 540: under a lent machine's 10 minutes per command): a step is stopped at 3x its budget or at the
# deadline, and a step with no time left is SKIPPED; the summary is written as the steps go. On a T4
# (about 10x slower than an H100 here) SCALE=10 is set by itself: budgets and deadline x10; set
# SCALE for another slow GPU.
# Part 2 on a GPU faster than a T4: its end-to-end images/s is what the recipe's 7 workers deliver on
# this host's CPU; hold it against part 4's "T4 rates" line (what a T4 trains at 160 px).
# A step that fails is reported with its last lines and the others still run; exit status 1 if any failed.
# summary.txt: the machine, then each step's part, command, status, seconds and result lines.
set -uo pipefail
[ $# -ge 1 ] || { sed -n '2,36p' "$0"; exit 2; }
RESULTS="$1"; shift
ALL=(step-rn18-fp16 step-rn50-fp16 step-rn18-best step-rn50-best e2e fmnist projection)
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=("${ALL[@]}")
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac   # steps run from bench/
DEVICE="${DEVICE:-cuda}"
FMNIST_SOURCE="${FMNIST_SOURCE:-/usr/share/datasets/fashion-mnist}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULTS" || exit 2
RESULTS="$(cd "$RESULTS" && pwd)"
WORK="$(mktemp -d)"   # generated JPEGs and the converted Fashion-MNIST: never in RESULTS
trap 'rm -rf "$WORK"' EXIT
cd "$REPO/bench" || exit 2

# SMALL=1 shrinks every step to seconds (to check this script, not to measure).
if [ "${SMALL:-0}" = 1 ]; then
  STEP=(--steps 1 --warmup 1 --reps 1); RN18=(--archs resnet18 --res 32 --batch 2); RN50=(--archs resnet50 --res 32 --batch 2)
  E2E=(--images 32 --batch 8 --steps 2 --warmup 1 --workers 1 --res 32)
  FMNIST=(--train 512 --val 256 --epochs 1)
else
  STEP=(--steps 10 --warmup 5 --reps 3); RN18=(--archs resnet18 --res 128,160 --batch 256)
  RN50=(--archs resnet50 --res 160 --batch 128); E2E=(--images 2048 --workers 7)
  FMNIST=(--epochs "${FMNIST_EPOCHS:-10}" --workers "${FMNIST_WORKERS:-7}")
fi

part() {
  case "$1" in
    step-*) echo "1 train step" ;; e2e) echo "2 end to end" ;; fmnist) echo "3 Fashion-MNIST" ;;
    projection) echo "4 T4 projection" ;;
  esac
}

budget() {  # seconds a step is expected to take on an H100 (it is stopped at three times this)
  case "$1" in
    step-rn18-*) echo 50 ;; step-rn50-*) echo 40 ;; e2e) echo 70 ;; fmnist) echo 100 ;; projection) echo 90 ;;
  esac
}

output_file() {
  case "$1" in
    step-*) echo "train_step_$(echo "${1#step-}" | tr - _).txt" ;; e2e) echo e2e_rn18_w7.txt ;;
    fmnist) echo fashion_mnist.txt ;; projection) echo t4_projection.txt ;;
  esac
}

step_command() {  # sets CMD, the step's command as words
  case "$1" in
    step-rn18-fp16) CMD=("$PY" train_step.py --device "$DEVICE" --compile off --precision fp16 "${RN18[@]}" "${STEP[@]}") ;;
    step-rn50-fp16) CMD=("$PY" train_step.py --device "$DEVICE" --compile off --precision fp16 "${RN50[@]}" "${STEP[@]}") ;;
    step-rn18-best) CMD=("$PY" train_step.py --device "$DEVICE" --compile off --precision "$BEST" "${RN18[@]}" "${STEP[@]}") ;;
    step-rn50-best) CMD=("$PY" train_step.py --device "$DEVICE" --compile off --precision "$BEST" "${RN50[@]}" "${STEP[@]}") ;;
    e2e) CMD=("$PY" end_to_end.py --device "$DEVICE" --recipe t4-rn18-fast "${E2E[@]}" --dir "$WORK/jpegs") ;;
    fmnist) CMD=("$PY" fashion_mnist_time.py --device "$DEVICE" "${FMNIST[@]}" --source "$FMNIST_SOURCE" --dir "$WORK/fmnist") ;;
    projection) CMD=("$PY" t4_projection.py --device "$DEVICE") ;;
    *) return 1 ;;
  esac
}

skip_reason() {  # why a step does not run here; nothing when it does
  case "$1" in
    step-*-best) [ "$BEST" != fp16 ] || echo "this GPU has no bf16: its best precision is fp16, the fp16 step's" ;;
    fmnist) [ -e "$FMNIST_SOURCE/train-images-idx3-ubyte.gz" ] \
      || echo "$FMNIST_SOURCE/train-images-idx3-ubyte.gz is missing (apt-get install dataset-fashion-mnist, or FMNIST_SOURCE=DIR)" ;;
  esac
}

result_lines() {  # what summary.txt keeps of a step's output
  case "$1" in
    step-*) grep -E "^ratio |^[a-z0-9_]+ +[0-9]+ +[0-9]+ +ours |left out" "$2" ;;
    e2e) grep -E "^ratio |^data-wait|^(synthetic step|end to end)" "$2" ;;
    fmnist) grep -E "^fashion-mnist:|^training " "$2" ;;
    projection) grep -E "^projection |^T4 rates |^specs:|NOTE |batch .* ran out" "$2" ;;
  esac
}

limited() {  # seconds, command...: the command, stopped (its workers too) once it runs that long
  if command -v timeout >/dev/null; then timeout --kill-after=15 "$@"; else shift; "$@"; fi
}

BEST=bf16   # (for the check of the step names; measured below)
for s in "${STEPS[@]}"; do
  step_command "$s" || { echo "unknown step $s (steps: ${ALL[*]})"; exit 2; }
done
# The GPU's best precision (bf16 where it has bf16 tensor cores, else fp16: a T4; bf16 on a CPU), and
# how much slower than an H100 these steps run (SCALE: 10 on a T4 by itself; set it for another GPU).
read -r BEST GPU_SCALE < <("$PY" -c "
import re, sys, torch
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if cuda else ''
bf16 = sys.argv[1] == 'cpu' or not cuda or torch.cuda.is_bf16_supported(including_emulation=False)   # no GPU: the steps fail, saying so
print('bf16' if bf16 else 'fp16', 10 if re.search(r'\bT4\b', name) else 1)" "$DEVICE" 2>/dev/null)
BEST="${BEST:-fp16}"; SCALE="${SCALE:-${GPU_SCALE:-1}}"
DEADLINE="${DEADLINE:-$((540 * SCALE))}"
SUMMARY="$RESULTS/summary.txt"
started=$SECONDS
small=""; [ "${SMALL:-0}" = 1 ] && small=", SMALL=1 (the plumbing: no figure below means anything)"
commit="unknown (no git here)"   # a copied working tree may come without .git
if head="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"; then
  commit="$head ($(git -C "$REPO" status --porcelain 2>/dev/null | wc -l | tr -d ' ') paths differ from it)"
fi
{ echo "gpu-acceptance.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), DEVICE=$DEVICE$small, commit $commit"
  "$PY" - "$DEVICE" "$BEST" "$FMNIST_SOURCE" "$SCALE" <<'EOF' 2>&1
import platform, sys
from pathlib import Path
import torch
device, best, fmnist, scale = sys.argv[1:5]
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
print(f"python {platform.python_version()} | torch {torch.__version__} | {gpu} | best precision here: {best}"
      + (f" | budgets x{scale} (SCALE)" if scale != "1" else ""))
if device != "cpu" and not torch.cuda.is_available():
    print(f"DEVICE={device} but no CUDA GPU is visible (check nvidia-smi): the GPU steps will fail")
try:
    from trainer.decode import jpeg_decoder
    print("JPEG crops decoded", jpeg_decoder())
except Exception as exc:  # noqa: BLE001 - a header line, never a reason to stop
    print(f"trainer.decode does not import: {type(exc).__name__}: {exc}")
print("Fashion-MNIST:", fmnist if (Path(fmnist) / "train-images-idx3-ubyte.gz").exists() else f"{fmnist} missing (part 3 is skipped)")
EOF
} | tee "$SUMMARY"

failed=0
for s in "${STEPS[@]}"; do
  out="$RESULTS/$(output_file "$s")"
  step_command "$s"
  echo "== [$(part "$s")] $s: ${CMD[*]}" | tee -a "$SUMMARY"
  reason="$(skip_reason "$s")"
  left=$((DEADLINE - (SECONDS - started)))
  cap=$((3 * $(budget "$s") * SCALE)); limit=$((cap < left ? cap : left))
  [ "${SMALL:-0}" = 1 ] && limit=$(( left < 300 ? left : 300 ))   # a slow laptop: only the deadline
  if [ -z "$reason" ] && [ "$limit" -lt 10 ]; then reason="no time left of the ${DEADLINE} s deadline (DEADLINE=SECONDS)"; fi
  if [ -n "$reason" ]; then
    echo "SKIPPED: $reason" >"$out"
    echo "   SKIPPED: $reason" | tee -a "$SUMMARY"
    continue
  fi
  t0=$SECONDS
  (echo "\$ ${CMD[*]}"; limited "$limit" "${CMD[@]}") >"$out" 2>&1; rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="FAILED (stopped after $limit s: three times its budget, or the deadline)"; failed=1 ;;
    *) status="FAILED (exit $rc)"; failed=1 ;;
  esac
  { echo "   $status in $((SECONDS - t0)) s -> $out"
    result_lines "$s" "$out" | sed 's/^/   /'
    [ $rc -eq 0 ] || tail -n 4 "$out" | sed 's/^/   | /'
  } | tee -a "$SUMMARY"
done
echo "== done in $((SECONDS - started)) s: $([ $failed -eq 0 ] && echo "no step failed" || echo "a step FAILED (see above)")" \
  | tee -a "$SUMMARY"
exit $failed
