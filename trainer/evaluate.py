"""Evaluate a checkpoint on DATA/val (or another split): top-1, top-5, loss, per-class accuracy;
optionally with flip TTA, at other resolutions, and after re-estimating BatchNorm statistics there."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from trainer.config import TTAS
from trainer.data import EpochSampler, EvalTransform, ImageFiles, eval_transform, load_dataset, make_loader
from trainer.engine import AmpSettings, EvalResult, InputNorm, amp_settings, evaluate, pick_device, prepare_model, to_device
from trainer.errors import TrainerError
from trainer.inference import load_model


def evaluate_checkpoint(checkpoint: Path, data_dir: Path, split: str = "val", batch_size: int = 128, workers: int = 4,
                        device_name: str = "auto", precision: str = "auto",
                        warn: Callable[[str], None] = logging.getLogger("trainer").warning, tta: str = "none",
                        resolutions: Sequence[int] = (), recalibrate_bn: int = 0) -> dict[str, Any]:
    """The checkpoint's metrics on one split of `data_dir`, at its own eval framing (the one its
    recipe fixed). `warn` is given, before evaluating, each warning `trainer train` logs about that
    data (a val/ without some train classes).

    tta "flip": each figure also for the mean of the image's and its mirror's logits (`*_flip`).
    resolutions: also evaluate at these centre crops (`by_res`), each resized in the checkpoint's
    own crop-to-resize ratio (224 of 256: 160 of 183). recalibrate_bn > 0: at each of them also
    after re-estimating BatchNorm's statistics on that many batches of train images framed the same
    way (FixRes, Touvron et al. 2019: the statistics of a low-resolution run do not fit a larger
    eval crop); the checkpoint itself is never changed.
    """
    if tta not in TTAS:
        raise TrainerError(f"--tta {tta!r}: use {' or '.join(TTAS)}.")
    if any(r < 8 for r in resolutions) or recalibrate_bn < 0:
        raise TrainerError("--res takes crop sizes of at least 8 px (e.g. --res 160,192,224) and --recalibrate-bn a "
                           "number of batches >= 0.")
    loaded = load_model(checkpoint)
    if recalibrate_bn and not resolutions:
        resolutions = (loaded.eval_res,)
    need_train = split == "train" or recalibrate_bn > 0
    info = load_dataset(data_dir, need_train=need_train, need_val=(split == "val"))
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
    scorer = Scorer(pick=device, amp=amp_settings(device, precision), batch_size=batch_size, workers=workers,
                     num_classes=len(loaded.classes), norm=InputNorm(tuple(loaded.mean), tuple(loaded.std)),
                     flip=tta == "flip")
    model = prepare_model(loaded.model, device, channels_last=scorer.channels_last, compile=False)
    own = eval_transform(loaded.eval_res, loaded.eval_resize)
    result = scorer.score(model, samples, own)
    per_class = {
        cls: {"name": loaded.label(i), "images": result.per_class_total[i],
              "top1": 100 * result.per_class_correct[i] / result.per_class_total[i] if result.per_class_total[i] else None}
        for i, cls in enumerate(loaded.classes)
    }
    report = {"checkpoint": str(checkpoint), "data": str(data_dir), "split": split, "epoch": loaded.epoch,
              "arch": loaded.config.arch, "res": own.crop, "resize": own.resize, "tta": tta, "images": result.count,
              "skipped_images": len(samples) - result.count, **_figures(result), "per_class": per_class}
    if resolutions:
        report["by_res"] = []
        for res in resolutions:
            framing = EvalTransform(int(round(res * own.resize / own.crop)), res)
            plain = result if framing == own else scorer.score(model, samples, framing)   # its own framing: once
            entry: dict[str, Any] = {"res": res, "resize": framing.resize, **_figures(plain)}
            if recalibrate_bn:
                tuned, seen = recalibrated(model, info.train, framing, recalibrate_bn, scorer)
                entry["recalibrated_bn"] = {"batches": recalibrate_bn, "train_images": seen,
                                            **_figures(scorer.score(tuned, samples, framing))}
            report["by_res"].append(entry)
    return report


def _figures(result: EvalResult) -> dict[str, Any]:
    figures = {"top1": result.top1, "top5": result.top5, "loss": result.loss}
    if result.top1_flip is not None:
        figures.update(top1_flip=result.top1_flip, top5_flip=result.top5_flip, loss_flip=result.loss_flip)
    return figures


class Scorer:
    """Evaluation of a model on a list of images framed one way, with the run's device settings."""

    def __init__(self, pick: torch.device, amp: AmpSettings, batch_size: int, workers: int, num_classes: int,
                 norm: InputNorm, flip: bool):
        self.device, self.amp, self.batch_size, self.workers = pick, amp, batch_size, workers
        self.num_classes, self.norm, self.flip = num_classes, norm, flip
        self.channels_last = pick.type == "cuda"

    def loader(self, samples, framing: EvalTransform, shuffle: bool = False):
        return make_loader(ImageFiles(samples, framing), EpochSampler(len(samples), shuffle=shuffle), self.batch_size,
                           self.workers, 2, self.device.type == "cuda", drop_last=False)

    def score(self, model: nn.Module, samples, framing: EvalTransform) -> EvalResult:
        return evaluate(model, self.loader(samples, framing), self.device, self.amp, self.channels_last,
                        self.num_classes, norm=self.norm, flip=self.flip)


@torch.no_grad()
def recalibrated(model: nn.Module, train: Sequence[tuple[str, int]], framing: EvalTransform, batches: int,
                 scorer: Scorer) -> tuple[nn.Module, int]:
    """A copy of `model` whose BatchNorm running statistics are re-estimated (an equal-weight
    average, from scratch) on `batches` batches of shuffled train images framed as `framing`; the
    weights are untouched. Returns the copy and the number of images it saw."""
    tuned = copy.deepcopy(model)
    norms = [m for m in tuned.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise TrainerError("--recalibrate-bn: this model has no BatchNorm layers to recalibrate.")
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None          # cumulative average over the batches seen
    tuned.eval()
    for bn in norms:
        bn.train()
    seen = 0
    for i, (images, targets, _bad) in enumerate(scorer.loader(train, framing, shuffle=True)):
        if i >= batches:
            break
        if len(targets):
            images, _ = to_device(images, targets, scorer.device, scorer.channels_last, scorer.norm)
            with scorer.amp.autocast():
                tuned(images)
            seen += len(targets)
    tuned.eval()
    return tuned, seen
