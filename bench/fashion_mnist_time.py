"""Time to a val top-1 on Fashion-MNIST: `trainer train --recipe fashion-mnist --target-top1 93`, by the clock.

    python bench/fashion_mnist_time.py --device cuda --epochs 10 --workers 7   # stops at 93%, else says the best
    python bench/fashion_mnist_time.py --device cuda                           # the recipe as it is (4 epochs, 2 workers)
    python bench/fashion_mnist_time.py --device cpu --train 512 --val 256 --epochs 1   # the plumbing, in seconds

The data is Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist, or
--source), converted with tests/trainer/fashion_mnist.py's `convert` to the trainer's folder
layout (PNG files), once: --dir keeps it for the next run. The conversion is timed apart. The run
is the real CLI in a child process (`python -m trainer train ... --resume none`), so its wall time
is what a user waits: start-up, workers, CUDA graph capture, every evaluation and checkpoint.
--workers changes the speed, not what is learned (augmentation is seeded per image and epoch).

Printed: each epoch's row of metrics.jsonl, then a line starting with `fashion-mnist:`: the epoch
that reached the target, the wall time to the end of the run (it stops there) and the run's own
clock at that epoch's end; or that it did not reach it within its epochs, with the best figure.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, print_table
from tests.trainer.fashion_mnist import SOURCE, convert, read_idx

FILES = {"train": "train", "val": "t10k"}   # our split -> the IDX files' prefix


def write_idx(path: Path, array) -> None:
    """IDX as read_idx reads it: zero, zero, dtype 0x08 (uint8), ndim, the dims big-endian, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def subset_source(source: Path, dest: Path, counts: dict[str, int]) -> Path:
    """The first N images of each split as IDX files in `dest` (to check the plumbing in seconds)."""
    dest.mkdir(parents=True, exist_ok=True)
    for split, prefix in FILES.items():
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte.gz"
            write_idx(dest / name, read_idx(source / name)[:counts[split]])
    return dest


def prepared(source: Path, work: Path, counts: dict[str, int] | None) -> tuple[Path, float]:
    """The converted dataset under `work` (made now, or reused), and the seconds the conversion took."""
    tag = "full" if not counts else f"first-{counts['train']}-{counts['val']}"
    data = work / f"fashion-mnist-{tag}"
    if (data / "dataset.json").exists():
        return data, 0.0
    started = time.monotonic()
    partial = work / f".{data.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        convert(partial, subset_source(source, Path(tmp), counts) if counts else source)
    os.replace(partial, data)   # a conversion cut short is never taken for a finished one
    return data, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--target", type=float, default=93.0, help="val top-1 in percent to stop at (default 93)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs at most (default 0: the recipe's, 4)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: the recipe's, 2)")
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"the IDX files (default {SOURCE})")
    parser.add_argument("--dir", type=Path, help="keep the converted dataset and the run here (default: a temporary folder)")
    parser.add_argument("--train", type=int, default=0, help="only the first N train images (plumbing; default all 60,000)")
    parser.add_argument("--val", type=int, default=0, help="only the first N val images (plumbing; default all 10,000)")
    args = parser.parse_args()
    if not (args.source / "train-images-idx3-ubyte.gz").exists():
        print(f"fashion-mnist: {args.source} has no train-images-idx3-ubyte.gz: install Debian's dataset-fashion-mnist "
              f"(apt-get install dataset-fashion-mnist) or pass --source DIR with its four .gz files")
        return 2
    counts = {"train": args.train or 60_000, "val": args.val or 10_000} if args.train or args.val else None

    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, convert_s = prepared(args.source, work, counts)
        out = work / "run"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "trainer", "train", "--data", str(data), "--out", str(out),
                   "--recipe", "fashion-mnist", "--target-top1", f"{args.target:g}", "--device", args.device,
                   "--resume", "none"]
        if args.epochs:
            command += ["--epochs", str(args.epochs)]
        if args.workers is not None:
            command += ["--workers", str(args.workers)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
        print(f"data: {data} ({'converted in %.0f s' % convert_s if convert_s else 'converted before'}"
              f"{'; a subset: plumbing only' if counts else ''})")
        print("$ python " + " ".join(command[1:]), flush=True)
        started = time.monotonic()
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            print(proc.stdout[-4000:] + proc.stderr[-4000:])
            print(f"fashion-mnist: `trainer train` FAILED (exit {proc.returncode}) after {wall:.0f} s")
            return 1
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        log = (out / "train.log").read_text() if (out / "train.log").exists() else proc.stderr
        # "training resnet_small ... on 10 classes, ..., cuda x1, bf16, ..., CUDA graphs on", without its time stamp
        settings = [line.split(" ", 2)[-1] for line in log.splitlines() if "CUDA graphs" in line]

    if settings:
        print(settings[0][:400])
    print_table(["epoch", "px", "val top-1 %", "train s", "eval s", "img/s", "data wait", "run's clock s"],
                [[r["epoch"], r["train_res"], "-" if r["val_top1"] is None else f"{r['val_top1']:.2f}",
                  f"{r['epoch_seconds']:.1f}", f"{r['eval_seconds']:.1f}", f"{r['images_per_sec']:,.0f}",
                  f"{100 * r['data_wait_fraction']:.0f}%", f"{3600 * r['elapsed_hours']:.1f}"] for r in rows])
    scored = [r for r in rows if r["val_top1"] is not None]
    reached = next((r for r in scored if r["val_top1"] >= args.target), None)
    epochs = rows[-1]["epochs"] if rows else args.epochs
    workers = "the recipe's" if args.workers is None else str(args.workers)
    setup = f"{args.device}, {workers} workers"
    if reached:
        print(f"fashion-mnist: {args.target:g}% val top-1 reached at epoch {reached['epoch']} of {epochs} "
              f"({reached['val_top1']:.2f}%): {wall:.0f} s wall for `trainer train` (start-up and the last "
              f"checkpoint included), {3600 * reached['elapsed_hours']:.0f} s by the run's own clock; {setup}")
    else:
        best = max(scored, key=lambda r: r["val_top1"], default=None)
        print(f"fashion-mnist: {args.target:g}% NOT reached within {epochs} epochs: best val top-1 "
              + (f"{best['val_top1']:.2f}% at epoch {best['epoch']}" if best else "none (no evaluation)")
              + f"; {wall:.0f} s wall for `trainer train`; {setup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
