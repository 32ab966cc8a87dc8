"""The run's projected length (trainer/forecast.py) and what the training log says with it."""
from __future__ import annotations

import re
import threading
import time

import pytest

from tests.trainer.conftest import TINY, cli, metrics
from trainer import forecast
from trainer.forecast import Remaining, Speed


def test_the_models_share_of_the_time_scales_with_pixels():
    speed = Speed(images_per_sec=1000.0, res=128, data_wait=0.0)
    assert forecast.seconds_per_image(speed, 128) == pytest.approx(1e-3)
    assert forecast.seconds_per_image(speed, 160) == pytest.approx(1e-3 * (160 / 128) ** 2)
    assert forecast.seconds_per_image(speed, 64) == pytest.approx(1e-3 / 4)


def test_a_loader_bound_pace_is_a_floor_at_every_resolution():
    speed = Speed(images_per_sec=1000.0, res=128, data_wait=0.4)   # the model worked 60% of the time
    assert speed.loader_bound
    assert forecast.seconds_per_image(speed, 128) == pytest.approx(1e-3)     # not 0.6 ms: the loader's pace
    assert forecast.seconds_per_image(speed, 96) == pytest.approx(1e-3)      # smaller crops decode no faster
    assert forecast.seconds_per_image(speed, 224) == pytest.approx(0.6e-3 * (224 / 128) ** 2)   # the model again
    below = Speed(images_per_sec=1000.0, res=128, data_wait=forecast.LOADER_BOUND / 2)
    assert forecast.seconds_per_image(below, 96) == pytest.approx((1 - below.data_wait) * 1e-3 * (96 / 128) ** 2)


def test_seconds_left_adds_each_epoch_at_its_resolution_and_the_evaluations():
    speed = Speed(images_per_sec=2000.0, res=128, data_wait=0.0)
    left = Remaining(epochs=[(128, 1000), (160, 2000)], evaluations=2, val_images=600, eval_res=224,
                     eval_seconds=3.0)
    assert forecast.seconds_left(speed, left) == pytest.approx(1000 / 2000 + 2000 / 2000 * (160 / 128) ** 2 + 2 * 3.0)
    # Before an evaluation was timed: a forward pass is a third of a training step at its resolution.
    untimed = Remaining(epochs=[], evaluations=1, val_images=600, eval_res=256)
    assert forecast.seconds_left(speed, untimed) == pytest.approx(600 / 2000 / 3 * (256 / 128) ** 2)
    # ...but never faster than the loader delivered images when it set the pace.
    slow_loader = Speed(images_per_sec=2000.0, res=128, data_wait=0.5)
    assert forecast.seconds_left(slow_loader, Remaining([], 1, 600, 128)) == pytest.approx(600 / 2000)


def test_the_budget_advice_names_the_epochs_that_fit():
    hour = 3600.0
    assert forecast.budget_advice(0.1 * hour, 2.0 * hour, 3 * hour, 16) is None
    assert forecast.epochs_within(3 * hour, 0.1 * hour, 3.9 * hour, 16) == 12
    advice = forecast.budget_advice(0.1 * hour, 3.9 * hour, 3 * hour, 16)
    assert "--max-hours 3" in advice and "About 12 of the 16 epochs fit" in advice
    assert "--epochs 12 --resume auto" in advice
    assert "not even one epoch" in forecast.budget_advice(0.0, 100 * hour, 3 * hour, 16)
    assert forecast.budget_advice(0.0, 1e9, float("inf"), 16) is None      # no --max-hours


def test_the_loader_advice_says_what_would_help_here():
    fed = Speed(3000.0, 160, 0.02)
    starved = Speed(3000.0, 160, 0.35)
    assert forecast.loader_advice(fed, workers=2, cpus=8, resized_files=False) is None
    few_workers = forecast.loader_advice(starved, workers=2, cpus=8, resized_files=True)
    assert "35%" in few_workers and "Raise --workers (now 2, with 8 CPUs" in few_workers
    full_size = forecast.loader_advice(starved, workers=7, cpus=8, resized_files=False)
    assert "--resize-short 256" in full_size
    cpu_bound = forecast.loader_advice(starved, workers=7, cpus=8, resized_files=True)
    assert "the 8 CPUs are the limit" in cpu_bound


def test_durations_read_the_way_a_log_should():
    assert forecast.duration(40) == "40 s"
    assert forecast.duration(14 * 60 + 10) == "14 min"
    assert forecast.duration(2 * 3600 + 5 * 60) == "2 h 05 min"
    assert forecast.duration(-3) == "0 s"


def test_every_epoch_line_and_metrics_row_carry_the_time_left(trained_run):
    rows = metrics(trained_run)
    assert rows[0]["seconds_left"] > 0 and rows[-1]["seconds_left"] == 0
    # A projection from epoch 1's own speed: about one more such epoch (2 epochs, same resolution).
    # abs: the row rounds to 0.1 s, and an epoch of this tiny run takes less than that
    assert rows[0]["seconds_left"] == pytest.approx(rows[0]["epoch_seconds"] + rows[0]["eval_seconds"], rel=0.5, abs=0.1)
    log_text = (trained_run / "train.log").read_text()
    assert re.search(r"epoch 1/2 .* \| about \d+ s left", log_text), log_text
    assert not re.search(r"epoch 2/2 .* left", log_text)


def test_the_first_projection_warns_when_the_run_will_not_fit_its_budget(demo_data, tmp_path, monkeypatch):
    """A million epochs cannot fit in an hour: the log says so early, names the epochs that fit, and
    the run (stopped as the advice says) keeps what it trained."""
    monkeypatch.setattr(forecast, "WARMUP_STEPS", 1)
    monkeypatch.setattr(forecast, "FIRST_AFTER_SECONDS", 0.0)
    out, flag = tmp_path / "run", tmp_path / "stop-now"
    log_file = out / "train.log"

    def stop_after_the_advice():   # what a user does on reading the warning
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log_file.exists() and "epochs fit" in log_file.read_text():
                flag.touch()
                return
            time.sleep(0.05)
        flag.touch()

    watcher = threading.Thread(target=stop_after_the_advice, daemon=True)
    watcher.start()
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1000000", "--max-hours", "1",
                 "--stop-file", flag)
    watcher.join(timeout=130)
    assert result.exit_code == 143, result.output
    text = log_file.read_text()
    speed = re.search(r"speed: (\d+) img/s at 16 px, data wait \d+%: about (.+?) for the 1000000 epochs left",
                      text)
    assert speed and int(speed.group(1)) > 0, text
    fit = re.search(r"that is past --max-hours 1: .* About (\d+) of the 1000000 epochs fit: .* --epochs (\d+) "
                    r"--resume auto", text)
    assert fit and fit.group(1) == fit.group(2) and 1 <= int(fit.group(1)) < 1000000, text
    assert "input pipeline" not in text   # on a CPU the model and the workers share the cores: no loader advice
    assert (out / "checkpoints" / "last.pt").exists()
