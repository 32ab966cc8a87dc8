"""End to end: a short real training run from JPEG files, against the synthetic step rate.

    python bench/end_to_end.py                                    # CPU: tiny model, 32 px, 2 workers
    python bench/end_to_end.py --device cuda --recipe t4-rn18-fast --data /data/imagenet --steps 200
    python bench/end_to_end.py --device cuda --recipe t4-rn18-fast --images 4096   # generated JPEGs

The run goes through the trainer's own loader (`trainer.data`: ImageFiles, EpochSampler,
make_loader with the recipe's workers and prefetch) and its step (`trainer.engine`). Printed:
- end-to-end images/s over the timed steps (after warm-up: worker start, cuDNN autotuning);
- the synthetic rate: the same model, settings and batch on one random batch already on the
  device, measured before and after the run (median);
- ratio end-to-end/synthetic: 1.0 means the input pipeline never makes the compute wait;
- the data-wait fraction: the share of the wall time the loop spent blocked on the next batch.
  On a GPU the host runs ahead of the kernels, so a wait while kernels are still queued does not
  idle the GPU: this fraction is an upper bound on GPU starvation; the ratio is the measure.
On a CPU the workers and the model share the same cores, so the ratio there says little about a
GPU machine; the CPU run checks the machinery.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _common import (Stopwatch, machine, make_jpeg_folder, median, pick_device, print_ratio, print_table,
                     resize_short_copy, spread, synchronize)

# ------------------------------------------------------------------ settings (flags override)
CPU = dict(arch="resnet_small", width=16, depths=(1, 1, 1), res=32, batch=16, steps=12, warmup=3, workers=2,
           images=256)
GPU = dict(steps=100, warmup=20, images=2048)  # the rest comes from the recipe
SYNTHETIC_REPS = 3        # synthetic measurements before and after the run (the median is used)


def load_settings(args, device: torch.device) -> dict:
    """The recipe's model and speed settings, then the device's defaults, then flags."""
    from trainer.config import resolve

    config = resolve(args.recipe)
    settings = dict(arch=config.arch, res=config.train_res, batch=config.batch_size, workers=config.workers,
                    prefetch=config.prefetch_factor, precision=config.precision,
                    channels_last=config.channels_last, compile=config.compile, scale=config.crop_scale,
                    ratio=config.crop_ratio, mean=config.mean, std=config.std, config=config)
    settings.update(CPU if device.type == "cpu" else GPU)
    for key in ("arch", "res", "batch", "steps", "warmup", "workers", "images"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


def build(settings: dict, device: torch.device, num_classes: int):
    from trainer.engine import amp_settings, make_grad_scaler, make_optimizer, prepare_model, training_forward
    from trainer.models import build_model, resolve_stem

    c = settings["config"]
    torch.manual_seed(0)
    model = build_model(settings["arch"], num_classes, width=settings.get("width", c.width),
                        depths=settings.get("depths", c.depths),
                        stem=resolve_stem(c.stem, settings["res"]), blurpool=c.blurpool)
    model = prepare_model(model, device, settings["channels_last"], settings["compile"])
    amp = amp_settings(device, settings["precision"])
    optimizer = make_optimizer(model, 0.01, c.momentum, c.nesterov, c.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
    # What `trainer train` steps: the CUDA-graphed training pass where the recipe and device allow.
    model, _ = training_forward(model, amp, device, settings["batch"], c.cuda_graphs, settings["compile"], False)
    return model, optimizer, make_grad_scaler(amp), amp, criterion


def synthetic_rate(parts, settings: dict, device: torch.device, num_classes: int) -> float:
    from trainer.engine import to_device, train_step

    model, optimizer, scaler, amp, criterion = parts
    images = torch.randn(settings["batch"], 3, settings["res"], settings["res"])
    targets = torch.randint(0, num_classes, (settings["batch"],))
    images, targets = to_device(images, targets, device, settings["channels_last"])
    for _ in range(2):
        train_step(model, images, targets, criterion, optimizer, scaler, amp, settings["channels_last"])
    watch = Stopwatch(device)
    watch.start()
    for _ in range(settings["steps"]):
        train_step(model, images, targets, criterion, optimizer, scaler, amp, settings["channels_last"])
    return settings["steps"] * settings["batch"] / watch.stop()


def real_run(parts, settings: dict, device: torch.device, data: Path) -> tuple[float, float, int]:
    """(images/s, data-wait fraction, bad files) over `steps` batches after `warmup` batches."""
    from trainer.data import EpochSampler, ImageFiles, TrainTransform, load_dataset, make_loader
    from trainer.engine import InputNorm, to_device, train_step

    model, optimizer, scaler, amp, criterion = parts
    info = load_dataset(data, need_train=True, need_val=False)
    needed = settings["warmup"] + settings["steps"]
    # A small generated set is listed several times so the run fits in one epoch: a real epoch
    # (1.28M images) has one epoch-start refill of the workers per 2,500 steps, not one per 10.
    repeat = max(1, -(-needed * settings["batch"] // max(1, len(info.train))))
    dataset = ImageFiles(info.train * repeat, TrainTransform(settings["scale"], settings["ratio"], True))
    norm = InputNorm(settings["mean"], settings["std"])   # uint8 batches are normalised on the device
    sampler = EpochSampler(len(dataset), shuffle=True, seed=0, resolution=lambda epoch: settings["res"])
    loader = make_loader(dataset, sampler, settings["batch"], settings["workers"], settings["prefetch"],
                         pin_memory=device.type == "cuda", drop_last=True)
    epoch, done, waited, bad = 0, 0, 0.0, 0
    watch = Stopwatch(device)
    t_wall = 0.0
    while done < needed:
        sampler.set_epoch(epoch)
        it = iter(loader)
        while done < needed:
            if done == settings["warmup"] and not t_wall:   # the timed part starts with this batch
                synchronize(device)
                watch.start()
                t_wall = time.perf_counter()
            t0 = time.perf_counter()
            try:
                images, targets, skipped = next(it)
            except StopIteration:
                break
            if done >= settings["warmup"]:
                waited += time.perf_counter() - t0
            bad += len(skipped)
            images, targets = to_device(images, targets, device, settings["channels_last"], norm)
            train_step(model, images, targets, criterion, optimizer, scaler, amp, settings["channels_last"])
            done += 1
        epoch += 1
    seconds = watch.stop()
    wall = time.perf_counter() - t_wall
    del loader   # stops the persistent workers
    return settings["steps"] * settings["batch"] / seconds, waited / max(wall, 1e-9), bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--recipe", default="t4-rn18-fast", help="model and speed settings (default t4-rn18-fast)")
    parser.add_argument("--arch", help="override the recipe's model (CPU default resnet_small)")
    parser.add_argument("--res", type=int, help="train crop in px (default: the recipe's final train_res; CPU 32)")
    parser.add_argument("--batch", type=int, help="batch size (default: the recipe's; CPU 16)")
    parser.add_argument("--steps", type=int, help="timed steps (GPU default 100; CPU 12)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (GPU default 20; CPU 3)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: the recipe's; CPU 2)")
    parser.add_argument("--data", type=Path, help="a prepared dataset (DATA/train/<class>/*.jpg); default: generated JPEGs")
    parser.add_argument("--images", type=int, help="generated JPEGs when no --data (GPU default 2048; CPU 256)")
    parser.add_argument("--resize-short", type=int, default=0, help="re-encode the generated JPEGs at this short side")
    parser.add_argument("--dir", type=Path, help="keep the generated JPEGs here (reused next time)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the training process (default 1)")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    settings = load_settings(args, device)
    if device.type == "cuda":   # as `trainer train` sets them
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True

    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        data = args.data
        if data is None:
            data = make_jpeg_folder(work / "full", settings["images"], classes=8)
            if args.resize_short:
                data = resize_short_copy(data, work / f"short{args.resize_short}", args.resize_short)
        from trainer.data import load_dataset
        num_classes = len(load_dataset(data, need_train=True, need_val=False).classes)

        print(f"machine: {machine(device)}")
        print(f"recipe {args.recipe}: {settings['arch']} at {settings['res']} px, batch {settings['batch']}, "
              f"precision {settings['precision']}, channels_last {settings['channels_last']}, "
              f"compile {settings['compile']}, {settings['workers']} workers; data {data}")
        print(f"{settings['steps']} timed steps after {settings['warmup']} warm-up steps\n")
        parts = build(settings, device, num_classes)
        synthetic = [synthetic_rate(parts, settings, device, num_classes) for _ in range(SYNTHETIC_REPS)]
        e2e, wait, bad = real_run(parts, settings, device, data)
        synthetic += [synthetic_rate(parts, settings, device, num_classes) for _ in range(SYNTHETIC_REPS)]

    print_table(["measure", "images/s: median (min-max)"],
                [["synthetic step (random batch on the device)", spread(synthetic)],
                 ["end to end (JPEG files through trainer.data)", f"{e2e:,.1f}"]])
    print(f"\ndata-wait fraction: {100 * wait:.1f}% of the timed wall time blocked on the next batch"
          + (f"; {bad} unreadable files skipped" if bad else ""))
    print_ratio(f"end-to-end/synthetic {settings['arch']}@{settings['res']}", e2e / median(synthetic),
                "1.0: the input pipeline never makes the compute wait")


if __name__ == "__main__":
    main()
