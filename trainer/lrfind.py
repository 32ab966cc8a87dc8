"""LR range test (Smith 2015): raise the LR exponentially each step, record the smoothed loss.

The suggested one-cycle peak is a tenth of the LR where the smoothed loss is lowest (fastai's
heuristic): beyond that minimum the loss soon diverges. That peak is for the batch size the test
ran at; `trainer train --lr` is per `lr_scale_batch` images (the peak is lr * global batch /
lr_scale_batch), so the result also gives the value to pass as --lr.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.data import EpochSampler, ImageFiles, TrainTransform, load_dataset, make_loader
from trainer.engine import (InputNorm, amp_settings, effective_channels_last, make_grad_scaler, make_optimizer, pick_device, prepare_model, to_device,
                            train_step)
from trainer.models import build_model, resolve_stem


@dataclass(frozen=True)
class LRFindResult:
    lrs: list[float]
    losses: list[float]          # smoothed
    suggested_peak_lr: float     # the optimizer's LR, at `batch_size`
    suggested_lr: float          # the same as `trainer train --lr`: per `lr_scale_batch` images
    batch_size: int
    lr_scale_batch: int          # 0: --lr is used as is
    plot: Path
    data: Path


def lr_find(config: TrainConfig, data_dir: Path, out_dir: Path, start_lr: float = 1e-5, end_lr: float = 10.0,
            steps: int = 100) -> LRFindResult:
    info = load_dataset(data_dir, need_val=False)
    device = pick_device(config.device)
    amp = amp_settings(device, config.precision)
    torch.manual_seed(config.seed)
    model = build_model(config.arch, len(info.classes), width=config.width, depths=config.depths,
                        stem=resolve_stem(config.stem, config.train_res, config.arch), dropout=config.dropout,
                        zero_init_residual=config.zero_init_residual, blurpool=config.blurpool)
    channels_last = effective_channels_last(device, config.channels_last, config.batch_size, model)
    model = prepare_model(model, device, channels_last, config.compile)
    optimizer = make_optimizer(model, start_lr, config.momentum, config.nesterov, config.weight_decay)
    scaler = make_grad_scaler(amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    dataset = ImageFiles(info.train, TrainTransform(config.crop_scale, config.crop_ratio, config.hflip, config.crop_pad))
    norm = InputNorm(config.mean, config.std)
    sampler = EpochSampler(len(info.train), shuffle=True, seed=config.seed, resolution=lambda e: config.train_res)
    loader = make_loader(dataset, sampler, config.batch_size, config.workers, config.prefetch_factor,
                         device.type == "cuda", drop_last=True)
    gamma = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, losses, avg, best, epoch = [], [], 0.0, math.inf, 0
    model.train()
    while len(lrs) < steps:
        sampler.set_epoch(epoch)
        epoch += 1
        for images, targets, _bad in loader:
            if len(lrs) >= steps:
                break
            if not len(targets):
                continue
            lr = start_lr * gamma ** len(lrs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = to_device(images, targets, device, channels_last, norm)
            loss = float(train_step(model, images, targets, criterion, optimizer, scaler, amp, channels_last))
            avg = 0.9 * avg + 0.1 * loss
            smoothed = avg / (1 - 0.9 ** (len(lrs) + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(loss) or smoothed > 4 * best:
                break
        else:
            continue
        break
    i_min = min(range(len(losses)), key=losses.__getitem__)
    peak = lrs[i_min] / 10
    # What train.py turns back into this peak at this batch size (one process).
    flag = peak * config.lr_scale_batch / config.batch_size if config.lr_scale_batch else peak
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path, plot_path = out_dir / "lr_find.json", out_dir / "lr_find.png"
    tmp = data_path.with_name(".lr_find.json.tmp")
    tmp.write_text(json.dumps({"lr": lrs, "loss": losses, "suggested_peak_lr": peak, "suggested_lr": flag,
                               "batch_size": config.batch_size, "lr_scale_batch": config.lr_scale_batch}) + "\n")
    os.replace(tmp, data_path)
    result = LRFindResult(lrs, losses, peak, flag, config.batch_size, config.lr_scale_batch, plot_path, data_path)
    _plot(result)
    return result


def describe(result: LRFindResult) -> str:
    """The suggestion in the units of `trainer train --lr`, with the LR it becomes at the tested batch."""
    if not result.lr_scale_batch:
        return f"--lr {result.suggested_lr:.3g} (the peak LR itself: lr_scale_batch is 0)"
    return (f"--lr {result.suggested_lr:.3g} (per {result.lr_scale_batch} images: a peak LR of "
            f"{result.suggested_peak_lr:.3g} at batch {result.batch_size}, scaled linearly with the global batch)")


def _plot(result: LRFindResult) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggested_peak_lr, color="tab:red", ls="--",
               label=f"suggested peak {result.suggested_peak_lr:.3g} = --lr {result.suggested_lr:.3g}")
    ax.set(xscale="log", xlabel=f"learning rate at batch {result.batch_size}", ylabel="smoothed training loss",
           title="LR range test")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(result.plot, dpi=110)
    plt.close(fig)
