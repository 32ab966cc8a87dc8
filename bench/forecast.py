"""How good the training log's "about X left" is: projected against what the run then took.

    python bench/forecast.py                          # CPU: ~2 min, resnet_small, 32 -> 64 px
    python bench/forecast.py --device cuda --recipe t4-rn18-fast --data /data/imagenet-subset --epochs 6
    python bench/forecast.py --device cuda --recipe t4-rn18-fast --epochs 6 --per-class 4000 --size 176

A real `trainer train` run (a subprocess, as users run it) with progressive resizing, so the later
epochs cost more per image than the first. After each epoch but the last the trainer writes
`seconds_left` to metrics.jsonl (trainer/forecast.py: this epoch's speed, the model's share scaled
by the later epochs' pixels, the loader's pace as a floor, evaluations as the last one took). The
run's own clock then says what the rest really took (`elapsed_hours` of the last line minus this
one's); the ratio projected/actual is printed per epoch, and for the projection after epoch 1
(the one a user acts on). 1.00x is exact; checkpoint saves are not projected, so a slight
under-estimate is expected. Without --data, a generated dataset (`trainer demo-data`).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, pick_device, print_ratio, print_table

# ------------------------------------------------------------------ settings (flags override)
CPU_ARGS = ["--arch", "resnet_small", "--width", "16", "--batch-size", "32", "--workers", "1", "--lr", "0.1",
            "--train-res", "64", "--set", "train_res_start=32", "--set", "res_ramp_epochs=4",
            "--eval-res", "64", "--set", "eval_resize=64", "--set", "checkpoint_minutes=0"]
EPOCHS = 5
CLASSES, PER_CLASS, VAL_PER_CLASS, SIZE = 8, 150, 25, 72   # the generated set: 1,200 train / 200 val images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipe", default=None, help="a recipe to run (default: a small CPU model)")
    parser.add_argument("--data", default=None, help="an ImageFolder to train on (default: generated)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="generated train images per class")
    parser.add_argument("--size", type=int, default=SIZE, help="generated images' side, px")
    parser.add_argument("--out", default=None, help="keep the run folder here (default: a temporary one)")
    args = parser.parse_args()
    device = pick_device(args.device)
    print(f"machine: {machine(device)}")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not args.data:
            subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(data), "--classes", str(CLASSES),
                            "--per-class", str(args.per_class), "--val-per-class", str(VAL_PER_CLASS), "--size", str(args.size)],
                           check=True, capture_output=True)
        out = Path(args.out) if args.out else Path(tmp) / "run"
        model_args = ["--recipe", args.recipe] if args.recipe else CPU_ARGS
        command = [sys.executable, "-m", "trainer", "train", "--data", str(data), "--out", str(out), "--resume", "none",
                   *model_args, "--epochs", str(args.epochs), "--device", str(device)]
        print("run:", " ".join(command[1:]))
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    end = rows[-1]["elapsed_hours"] * 3600
    table, ratios = [], []
    for row in rows[:-1]:
        actual = end - row["elapsed_hours"] * 3600
        ratios.append(row["seconds_left"] / actual)
        table.append([row["epoch"], row["train_res"], f"{row['images_per_sec']:.0f}",
                      f"{100 * row['data_wait_fraction']:.0f}%", f"{row['seconds_left']:.1f}", f"{actual:.1f}",
                      f"{ratios[-1]:.2f}x"])
    print_table(["after epoch", "train px", "img/s", "data wait", "projected s left", "took s", "ratio"], table)
    print_ratio("projected/actual time left, after epoch 1", ratios[0])
    print_ratio("projected/actual, mean over epochs", sum(ratios) / len(ratios))


if __name__ == "__main__":
    main()
