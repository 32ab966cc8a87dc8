"""OUT/tensorboard/: what `tensorboard --logdir OUT/tensorboard` shows, read back with TensorBoard's own reader."""
from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.summary.writer.record_writer import RecordWriter

from tests.trainer.conftest import TINY, cli, metrics

EVERY_STEP = ["--set", "log_every_seconds=0"]   # a progress line, and so a running point, after every step
# 4 classes x 40 train images, batch 16: a running point every 16 images into training.
TWO_EPOCHS_OF_POINTS = list(range(16, 2 * 160 + 1, 16))
# A tag per number of metrics.jsonl's lines (a few of them; every number is checked by count).
EPOCH_TAGS = {"train/loss": "train_loss", "train/top1": "train_top1", "val/loss": "val_loss", "val/top1": "val_top1",
              "val/top5": "val_top5", "lr": "lr", "speed/images_per_sec": "images_per_sec",
              "speed/data_wait_fraction": "data_wait_fraction", "gpu/max_gpu_mem": "max_gpu_mem", "train/res": "train_res"}


def scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_one_point_per_epoch_as_in_metrics(out: Path) -> dict[str, list[tuple[int, float]]]:
    tb, rows = scalars(out), metrics(out)
    for tag, field in EPOCH_TAGS.items():
        assert [step for step, _ in tb[tag]] == [r["epoch"] for r in rows], tag
        assert [value for _, value in tb[tag]] == pytest.approx([r[field] for r in rows], rel=1e-6), tag  # float32
    numbers = {k for r in rows for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "epochs")}
    assert len([t for t in tb if not t.startswith("running/")]) == len(numbers), (sorted(tb), sorted(numbers))
    return tb


def test_each_number_of_an_epochs_metrics_line_is_a_scalar_at_that_epoch(trained_run):
    assert_one_point_per_epoch_as_in_metrics(trained_run)
    assert "tensorboard --logdir" in (trained_run / "train.log").read_text()


def test_a_resumed_run_writes_each_epoch_once_and_its_steps_only_go_forward(demo_data, tmp_path):
    out = tmp_path / "run"
    # Stopped inside epoch 1 (a budget spent in the first steps), then resumed with one more epoch.
    first = cli("train", "--data", demo_data, "--out", out, *TINY, *EVERY_STEP, "--epochs", "1", "--max-hours", "0.000005")
    assert first.exit_code == 0, first.output
    assert len(metrics(out)) == 0
    second = cli("train", "--data", demo_data, "--out", out, *TINY, *EVERY_STEP, "--epochs", "2", "--resume", "auto")
    assert second.exit_code == 0, second.output
    tb = assert_one_point_per_epoch_as_in_metrics(out)
    assert [step for step, _ in tb["running/train_loss"]] == TWO_EPOCHS_OF_POINTS
    assert [step for step, _ in tb["running/lr"]] == TWO_EPOCHS_OF_POINTS

    # From the end of epoch 1 again (last.prev.pt), with another LR: epoch 2's figures are the new run's,
    # once, and its running points replace those the first try wrote.
    before = tb["val/loss"][1]
    third = cli("train", "--data", demo_data, "--out", out, *TINY, *EVERY_STEP, "--epochs", "2", "--lr", "0.05",
                "--resume", out / "checkpoints" / "last.prev.pt")
    assert third.exit_code == 0, third.output
    tb = assert_one_point_per_epoch_as_in_metrics(out)
    assert tb["val/loss"][1] != before
    assert [step for step, _ in tb["running/train_loss"]] == TWO_EPOCHS_OF_POINTS


def test_resume_none_moves_the_earlier_scalars_aside_with_its_metrics(demo_data, tmp_path):
    out = tmp_path / "run"
    first = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1")
    assert first.exit_code == 0, first.output
    again = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1", "--resume", "none")
    assert again.exit_code == 0, again.output
    previous, = out.glob("previous-*")
    assert [step for step, _ in scalars(previous)["val/top1"]] == [1]
    assert [step for step, _ in scalars(out)["val/top1"]] == [1]


def test_tensorboard_false_writes_no_folder(demo_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1", "--set", "tensorboard=false")
    assert result.exit_code == 0, result.output
    assert not (out / "tensorboard").exists()
    assert "TensorBoard" not in (out / "train.log").read_text()


def test_without_the_tensorboard_package_training_goes_on_and_the_log_says_how_to_get_it(demo_data, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)   # what `import tensorboard` does where it is not installed
    for name in [m for m in sys.modules if m == "torch.utils.tensorboard" or m.startswith("torch.utils.tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)               # so torch's writer is imported again, and fails
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert len(metrics(out)) == 1 and not (out / "tensorboard").exists()
    lines = [line for line in (out / "train.log").read_text().splitlines() if "TensorBoard" in line]
    assert len(lines) == 1 and "not installed" in lines[0] and "pip install tensorboard" in lines[0], lines


def _disk_full_at_val_top1(monkeypatch) -> None:
    real = RecordWriter.write

    def write(self, data: bytes) -> None:
        if b"val/top1" in data:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, data)
    monkeypatch.setattr(RecordWriter, "write", write)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")   # the writer's own thread
@pytest.mark.parametrize("failure", ["a file in the folder's place", "the disk full after the first epoch's loss"])
def test_scalars_that_cannot_be_written_are_one_warning_and_training_goes_on(demo_data, tmp_path, monkeypatch, failure):
    out = tmp_path / "run"
    if failure.startswith("a file"):
        out.mkdir()
        (out / "tensorboard").write_text("not a folder")
    else:
        _disk_full_at_val_top1(monkeypatch)
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    log = (out / "train.log").read_text()
    warnings = [line for line in log.splitlines() if "TensorBoard" in line and "training goes on" in line]
    assert len(warnings) == 1, warnings
    assert "finished 2 epochs" in log
