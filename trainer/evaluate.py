"""Evaluate a checkpoint on DATA/val (or another split): top-1, top-5, loss, per-class accuracy."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch

from trainer.data import EpochSampler, ImageFiles, eval_transform, load_dataset, make_loader
from trainer.engine import InputNorm, amp_settings, evaluate, pick_device, prepare_model
from trainer.errors import TrainerError
from trainer.inference import load_model


def evaluate_checkpoint(checkpoint: Path, data_dir: Path, split: str = "val", batch_size: int = 128, workers: int = 4,
                        device_name: str = "auto", precision: str = "auto",
                        warn: Callable[[str], None] = logging.getLogger("trainer").warning) -> dict[str, Any]:
    """The checkpoint's metrics on one split of `data_dir`. `warn` is given, before evaluating, each warning
    `trainer train` logs about that data (a val/ without some train classes)."""
    loaded = load_model(checkpoint)
    info = load_dataset(data_dir, need_train=(split == "train"), need_val=(split == "val"))
    if info.classes != loaded.classes:
        differing = sorted(set(info.classes) ^ set(loaded.classes))
        shown = ", ".join(differing[:5]) + (f" (+{len(differing) - 5} more)" if len(differing) > 5 else "")
        raise TrainerError(
            f"checkpoint {checkpoint} was trained on {len(loaded.classes)} classes but {data_dir} has "
            f"{len(info.classes)} class folders"
            + (f" (in one but not the other: {shown})" if differing else " (the same names in another order)")
            + ". Its outputs mean its own classes, so it can only be scored on them: evaluate it on the dataset it "
            "was trained on (`trainer evaluate --data THAT_FOLDER`), or train a model for this one."
        )
    for warning in info.warnings:
        warn(warning)
    samples = info.val if split == "val" else info.train
    device = pick_device(device_name)
    amp = amp_settings(device, precision)
    model = prepare_model(loaded.model, device, channels_last=device.type == "cuda", compile=False)
    dataset = ImageFiles(samples, eval_transform(loaded.eval_res, loaded.eval_resize))
    loader = make_loader(dataset, EpochSampler(len(samples), shuffle=False), batch_size, workers, 2,
                         device.type == "cuda", drop_last=False)
    result = evaluate(model, loader, device, amp, device.type == "cuda", len(loaded.classes),
                      norm=InputNorm(tuple(loaded.mean), tuple(loaded.std)))
    per_class = {
        cls: {"name": loaded.label(i), "images": result.per_class_total[i],
              "top1": 100 * result.per_class_correct[i] / result.per_class_total[i] if result.per_class_total[i] else None}
        for i, cls in enumerate(loaded.classes)
    }
    return {"checkpoint": str(checkpoint), "data": str(data_dir), "split": split, "epoch": loaded.epoch,
            "arch": loaded.config.arch, "images": result.count, "skipped_images": len(samples) - result.count,
            "top1": result.top1, "top5": result.top5, "loss": result.loss, "per_class": per_class}
