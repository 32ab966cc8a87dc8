"""How long the rest of a run will take, projected from the speed measured so far.

The training log says it about a minute after the first steps and after every epoch, and
metrics.jsonl keeps it as `seconds_left`, so a user learns within minutes (not after a first
ImageNet epoch) whether a recipe's estimated hours hold on their machine and fit their budget.

The model is deliberately simple, and the log says "about":
- the model's share of an image's time (the share not spent waiting for batches) scales with the
  pixels of each epoch's train resolution, so progressive resizing makes later epochs dearer. On
  a GPU that holds well: in bench/train_step.py's H100 run (bench/results/h100-2026-11-22-graphs)
  resnet18 took 1.56x as long per image at 160 px as at 128 px (pixels: 1.56x), 2.74x at 224 px
  (3.06x), resnet50 1.51x at 160 px. A small model on a CPU grows less than its pixels
  (bench/forecast.py measures the projection against the run's own clock);
- when the model waited for batches (data wait at or above LOADER_BOUND), the input pipeline's
  measured pace is also a floor per image at every resolution: a worker decodes a file in about
  the same time whatever size it resizes the crop to;
- an evaluation takes what the last one took; before one has run, a forward pass is counted as a
  third of a training step at the evaluation's resolution (no backward pass, no optimizer), and
  never faster than the loader's pace when the loader was the limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

LOADER_BOUND = 0.10        # data-wait fraction from which the input pipeline, not the model, sets the pace
FORWARD_SHARE = 1 / 3      # an evaluation image's cost against a training image's at the same resolution
# The first projection: measured from the end of a process's first WARMUP_STEPS steps (which include
# cuDNN's autotuning, CUDA graph capture and the workers' start), FIRST_AFTER_SECONDS after it.
WARMUP_STEPS = 5
FIRST_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class Speed:
    images_per_sec: float  # trained images per second, all processes together
    res: int               # the train resolution it was measured at
    data_wait: float       # fraction of that time spent waiting for batches

    @property
    def loader_bound(self) -> bool:
        return self.data_wait >= LOADER_BOUND


@dataclass(frozen=True)
class Remaining:
    epochs: Sequence[tuple[int, int]]   # (train resolution, images) for each epoch still to train, in order
    evaluations: int                    # evaluations still to run
    val_images: int
    eval_res: int
    eval_seconds: float | None = None   # what the last evaluation took (None: none ran yet)


@dataclass(frozen=True)
class Plan:
    """The run's shape, as far as what is left of it goes."""
    epochs: int
    resolution: Callable[[int], int]   # the train resolution of an epoch (0-based): progressive resizing
    images_per_epoch: int              # all processes together
    eval_every: int
    val_images: int
    eval_res: int

    def remaining(self, epoch: int, images_left_in_epoch: int, last_eval_seconds: float) -> Remaining:
        """What is left from `epoch` (0-based), of which `images_left_in_epoch` are still to train;
        `last_eval_seconds`: what the last evaluation took (0: none ran yet)."""
        epochs = [(self.resolution(epoch), images_left_in_epoch)] + [(self.resolution(e), self.images_per_epoch)
                                                                     for e in range(epoch + 1, self.epochs)]
        evaluations = sum(1 for e in range(epoch, self.epochs) if (e + 1) % self.eval_every == 0 or e + 1 == self.epochs)
        return Remaining([e for e in epochs if e[1] > 0], evaluations, self.val_images, self.eval_res,
                         last_eval_seconds or None)


class FirstSpeed:
    """A process's speed in its first epoch, measured from the end of its warm-up steps: once
    FIRST_AFTER_SECONDS have passed it is due for the first projection (`after_step`), and at the
    epoch's end it is the speed that epoch's projection uses (`measured`: the warm-up would skew it)."""

    def __init__(self, start_step: int, steps_per_epoch: int, world: int, res: int):
        self.start_step, self.steps_per_epoch, self.world, self.res = start_step, steps_per_epoch, world, res
        self._mark: tuple[float, int, float] | None = None   # (time, images, data wait) after the warm-up steps
        self._projected = False

    def after_step(self, step: int, images_seen: int, data_wait: float, now: float) -> Speed | None:
        """The speed so far when the first projection is due (once per process), else None. Not in the
        epoch's last step: the epoch's own line follows at once."""
        if self._projected:
            return None
        if step - self.start_step == WARMUP_STEPS:
            self._mark = (now, images_seen, data_wait)
        elif self._mark is not None and now - self._mark[0] >= FIRST_AFTER_SECONDS and step < self.steps_per_epoch:
            self._projected = True
            return self._since_mark(images_seen, data_wait, now)
        return None

    def measured(self, images_seen: int, data_wait: float, now: float) -> Speed | None:
        """The speed since the warm-up; None when it had not ended or no image was trained since."""
        if self._mark is None or images_seen <= self._mark[1]:
            return None
        return self._since_mark(images_seen, data_wait, now)

    def _since_mark(self, images_seen: int, data_wait: float, now: float) -> Speed:
        # images_seen is this process's: every process trains as many.
        span = now - self._mark[0]
        return Speed((images_seen - self._mark[1]) * self.world / span, self.res, (data_wait - self._mark[2]) / span)


def first_projection(speed: Speed, left_s: float, epochs_left: int) -> str:
    """The log line of the first projection."""
    return (f"speed: {speed.images_per_sec:.0f} img/s at {speed.res} px, data wait {100 * speed.data_wait:.0f}%: "
            f"about {duration(left_s)} for the {epochs_left} epochs left (projected: later epochs scaled by their "
            f"pixels, evaluations estimated until one is timed)")


def seconds_per_image(speed: Speed, res: int) -> float:
    compute = (1 - min(speed.data_wait, 0.99)) / speed.images_per_sec * (res / speed.res) ** 2
    return max(compute, 1 / speed.images_per_sec) if speed.loader_bound else compute


def seconds_per_evaluation(speed: Speed, left: Remaining) -> float:
    if left.eval_seconds is not None:
        return left.eval_seconds
    per_image = FORWARD_SHARE * seconds_per_image(Speed(speed.images_per_sec, speed.res, 0.0), left.eval_res)
    if speed.loader_bound:
        per_image = max(per_image, 1 / speed.images_per_sec)
    return left.val_images * per_image


def seconds_left(speed: Speed, left: Remaining) -> float:
    """The rest of the run at this speed: training plus evaluations (checkpoint saves not counted)."""
    train = sum(images * seconds_per_image(speed, res) for res, images in left.epochs)
    return train + left.evaluations * seconds_per_evaluation(speed, left)


def epochs_within(budget_s: float, elapsed_s: float, left_s: float, epochs: int) -> int:
    """About how many epochs a run of `epochs` fits in `budget_s`, its projected length being
    `elapsed_s + left_s` (each epoch taken as the average one: a shorter run also has fewer
    high-resolution epochs, so this errs on the safe side with progressive resizing)."""
    total = elapsed_s + left_s
    return epochs if total <= budget_s else max(0, math.floor(epochs * budget_s / total))


def duration(seconds: float) -> str:
    """'2 h 05 min', '14 min', '40 s': what a log line needs, no more."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def budget_advice(elapsed_s: float, left_s: float, budget_s: float, epochs: int) -> str | None:
    """What to do when the projected run is longer than --max-hours (None: it fits)."""
    if elapsed_s + left_s <= budget_s:
        return None
    fit = epochs_within(budget_s, elapsed_s, left_s, epochs)
    hours = f"{budget_s / 3600:g}"
    if fit == 0:
        return (f"at this speed not even one epoch fits in --max-hours {hours}: raise --max-hours, or use a smaller "
                f"model, resolution or dataset")
    return (f"that is past --max-hours {hours}: the run would stop with its learning rate schedule unfinished. About "
            f"{fit} of the {epochs} epochs fit: stop the run (Ctrl-C or SIGTERM save last.pt) and start it again with "
            f"--epochs {fit} --resume auto (it continues from last.pt and its LR schedule then ends within the "
            f"budget), or raise --max-hours")


def loader_advice(speed: Speed, workers: int, cpus: int, resized_files: bool) -> str | None:
    """What to do when the input pipeline, not the model, set the pace (None: it did not)."""
    if not speed.loader_bound:
        return None
    text = (f"the model waited for batches {100 * speed.data_wait:.0f}% of the time: the input pipeline sets this "
            f"run's pace")
    if workers < cpus - 1:
        return text + f". Raise --workers (now {workers}, with {cpus} CPUs here; one CPU for the training process)"
    if not resized_files:
        return text + (". Files prepared with `trainer prepare ... --resize-short 256` decode several times faster "
                       "than full-size ImageNet JPEGs (bench/prepare.py measures it)")
    return text + (f"; the {cpus} CPUs are the limit (a machine with more vCPUs per GPU, or smaller train files "
                   f"from `trainer prepare ... --resize-short-train`, would help)")
