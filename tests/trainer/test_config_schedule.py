"""Settings precedence and the LR schedules (pure functions of the step)."""
from __future__ import annotations

import pytest
import torch

from trainer.config import available_recipes, load_recipe, resolve
from trainer.schedule import Schedule, make_scheduler


def test_flags_override_the_recipe_which_overrides_the_defaults():
    base = resolve()
    recipe = load_recipe("fashion-mnist")
    config = resolve("fashion-mnist", {"epochs": 7, "batch_size": None, "depths": "2,2"})
    assert config.epochs == 7                                  # flag
    assert config.batch_size == recipe["batch_size"]           # recipe (None flag is "not given")
    assert config.depths == (2, 2)
    assert config.momentum == base.momentum                    # default
    assert "fashion-mnist" in available_recipes() and "demo" in available_recipes()


def test_step_schedule_divides_by_ten_at_each_third():
    s = Schedule("step", total_steps=300)
    assert [s.factor(i) for i in (0, 99, 100, 199, 200, 299)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_then_linear_to_zero_and_cosine():
    lin = Schedule("linear", total_steps=110, warmup_steps=10, warmup_div=10)
    assert lin.factor(0) == pytest.approx(0.1) and lin.factor(10) == pytest.approx(1.0)
    assert lin.factor(60) == pytest.approx(0.5) and lin.factor(110) == pytest.approx(0.0)
    cos = Schedule("cosine", total_steps=100)
    assert cos.factor(0) == pytest.approx(1.0) and cos.factor(50) == pytest.approx(0.5, abs=1e-3)
    assert cos.factor(100) == pytest.approx(1e-4)


def test_onecycle_rises_to_the_peak_then_anneals():
    s = Schedule("onecycle", total_steps=100, pct_start=0.25, warmup_div=25)
    values = [s.factor(i) for i in range(101)]
    assert values[0] == pytest.approx(1 / 25) and max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == 25 and values[-1] < 1e-3
    assert all(a <= b for a, b in zip(values[:25], values[1:26]))


def test_a_scheduler_made_at_a_step_gives_the_lr_of_one_stepped_there():
    """How a resume sets the LR: from the schedule at its position, not from a saved scheduler."""
    schedule = Schedule("onecycle", total_steps=50, pct_start=0.3, warmup_div=25)

    def optimizer():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)

    stepped = optimizer()
    scheduler = make_scheduler(stepped, schedule)
    lrs = [stepped.param_groups[0]["lr"]]
    for _ in range(50):
        stepped.step()
        scheduler.step()
        lrs.append(stepped.param_groups[0]["lr"])
    for start in (0, 1, 17, 49, 50):
        fresh = optimizer()
        make_scheduler(fresh, schedule, start_step=start)
        assert fresh.param_groups[0]["lr"] == lrs[start]   # bit for bit: a resume is exact


def test_progressive_resizing_can_hold_the_first_resolution_until_the_ramp_starts_as_ffcv_does():
    from trainer.data import progressive_resolution
    # FFCV rn18_16_epochs: start_ramp 11, end_ramp 13 -> 12 epochs at the low resolution, 4 at the high one
    assert [progressive_resolution(e, 128, 160, 13, 16, ramp_start=11) for e in range(16)] == [128] * 12 + [160] * 4
    # without ramp_start, the ramp starts at once (3 x 128, 6 x 144, 7 x 160 over 12 epochs)
    assert [progressive_resolution(e, 128, 160, 12, 16) for e in range(16)] == [128] * 3 + [144] * 6 + [160] * 7


def test_a_ramp_that_ends_before_it_starts_is_refused():
    import pytest

    from trainer.config import resolve
    from trainer.errors import TrainerError
    with pytest.raises(TrainerError, match="res_ramp_start must be >= 0 and below res_ramp_epochs"):
        resolve(None, {"res_ramp_start": "12", "res_ramp_epochs": "10", "train_res_start": "128"})
