#!/usr/bin/env bash
# The trainer's GPU code paths, end to end, on whatever CUDA GPU this machine has (a few minutes).
#
#   bash scripts/gpu-check.sh [WORKDIR]        # needs the trainer's dependencies and a visible GPU
#
# CI has no GPU, so the test suite covers these paths on the CPU only. This script trains the demo
# recipe on generated data with each precision (fp16 + GradScaler as on a T4, bf16 as on A100/H100,
# fp32), with progressive resizing (CUDA graphs recaptured per resolution), once with torch.compile,
# interrupts and resumes one run, fine-tunes one from another's weights (on a machine with several
# GPUs every run is DDP, one process per GPU), then checks that each learned (val top-1 well above chance),
# that the runs meant to use CUDA graphs did, and that `trainer evaluate` of the best checkpoint
# reproduces the logged top-1. Exit 0 only when every check passed.
set -euo pipefail
WORK="${1:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(cd "$(dirname "$0")/.." && pwd)"
trainer() { "$PY" -m trainer "$@"; }

DEVICE="${DEVICE:-cuda}"   # DEVICE=cpu: a dry run of this script on a machine without a GPU
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU is visible')"
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
fi
trainer demo-data --dest "$WORK/data" >/dev/null
COMMON=(--data "$WORK/data" --recipe demo --device "$DEVICE" --epochs 6 --batch-size 64 --workers 4)

run() {  # name, extra flags...
  local name="$1"; shift
  local t0=$SECONDS
  trainer train "${COMMON[@]}" --out "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 \
    || { echo "FAIL $name: trainer exited $?"; tail -20 "$WORK/$name.log"; exit 1; }
  echo "ran $name in $((SECONDS - t0)) s"
}
run fp16 --precision fp16
run bf16 --precision bf16
run fp32 --precision fp32
run progressive --precision auto --train-res-start 24
run compiled --precision auto --compile --train-res-start 24

# Interrupted after the first checkpointed epoch, then resumed: same epoch count as uninterrupted.
"$PY" -m trainer train "${COMMON[@]}" --out "$WORK/resumed" --precision fp16 >"$WORK/interrupted.log" 2>&1 &
pid=$!
while ! grep -qs '"epoch": 2' "$WORK/resumed/metrics.jsonl" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || break; sleep 0.2
done
kill -TERM $pid 2>/dev/null || true
code=0; wait $pid || code=$?
[ "$code" = 143 ] || { echo "FAIL interrupted: trainer exited $code after SIGTERM, expected 143"; exit 1; }
run resumed --precision fp16 --resume auto
# Fine-tuned from the fp16 run's weights (--init-weights): it starts from them, so it learns too.
run finetuned --precision auto --init-weights "$WORK/fp16/checkpoints/best.pt"

"$PY" - "$WORK" "$DEVICE" <<'PY'
import json, subprocess, sys
from pathlib import Path
work = Path(sys.argv[1]); failed = []
for name in ("fp16", "bf16", "fp32", "progressive", "compiled", "resumed", "finetuned"):
    lines = [json.loads(l) for l in (work / name / "metrics.jsonl").read_text().splitlines() if l.strip()]
    evals = [l for l in lines if l.get("val_top1") is not None]
    epochs = sorted({l["epoch"] for l in evals})
    best = max(l["val_top1"] for l in evals)
    out = subprocess.run([sys.executable, "-m", "trainer", "evaluate", "--data", str(work / "data"), "--device", sys.argv[2],
                          "--checkpoint", str(work / name / "checkpoints" / "best.pt")], capture_output=True, text=True)
    top1 = json.loads(out.stdout)["top1"] if out.returncode == 0 else None
    # evaluate runs in the device's default precision, training may not have: allow one point.
    ok = best > 40 and epochs == list(range(1, 7)) and top1 is not None and abs(top1 - best) < 1.0
    if name == "resumed":   # the second run continued (no epoch logged twice), it did not start over
        ok = ok and len(evals) == 6 and "resum" in (work / "resumed.log").read_text().lower()
    if name == "finetuned":
        ok = ok and "weights from " in (work / "finetuned.log").read_text()
    graphs = "CUDA graphs off (torch.compile" if name == "compiled" else "CUDA graphs on"
    ok = ok and (sys.argv[2] != "cuda" or graphs in (work / f"{name}.log").read_text())
    print(f"{'ok  ' if ok else 'FAIL'} {name:9s} epochs {epochs[0]}..{epochs[-1]}  best val top-1 {best:.1f}%  "
          f"evaluate: {top1 if top1 is None else round(top1, 2)}%")
    failed += [] if ok else [name]
sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
PY
