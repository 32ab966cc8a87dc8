"""Learning-rate schedules as pure functions of the optimizer step: `lr_factor(step)` in [0, 1].

The LR at a step depends only on the step number and the settings, so a resumed run follows
exactly the same curve as an uninterrupted one. `make_scheduler` wraps it in a LambdaLR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    kind: str                 # step | cosine | onecycle | linear | constant
    total_steps: int          # optimizer steps in the whole run
    warmup_steps: int = 0     # linear warmup (not used by onecycle)
    warmup_div: float = 25.0  # warmup and onecycle start at peak / warmup_div
    pct_start: float = 0.25   # onecycle: fraction of the steps spent rising
    final_div: float = 1e4    # onecycle and cosine end at peak / final_div

    def factor(self, step: int) -> float:
        """Multiplier of the peak LR at optimizer step `step` (0-based)."""
        total = max(1, self.total_steps)
        start = 1.0 / self.warmup_div
        if self.kind == "onecycle":
            # The shape of torch's OneCycleLR (cosine up, cosine down), as a pure function.
            up = max(1, int(self.pct_start * total))
            if step < up:
                return _cos_interp(start, 1.0, step / up)
            return _cos_interp(1.0, 1.0 / self.final_div, min(1.0, (step - up) / max(1, total - up)))
        if step < self.warmup_steps:
            return start + (1.0 - start) * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        if self.kind == "step":   # the classic: divide by 10 at each third of the run
            return 0.1 ** min(2, int(3 * (step / total)))
        if self.kind == "cosine":
            return _cos_interp(1.0, 1.0 / self.final_div, progress)
        if self.kind == "linear":
            return 1.0 - progress
        return 1.0


def _cos_interp(a: float, b: float, t: float) -> float:
    return b + (a - b) * (1 + math.cos(math.pi * t)) / 2


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule,
                   start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR at `start_step` (the optimizer steps already done): the optimizer's LR is set to
    the schedule's value there. The groups' current LR is the peak."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor, last_epoch=start_step - 1)
