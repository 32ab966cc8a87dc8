"""Flip TTA, evaluation at other resolutions, and BatchNorm statistics re-estimated there."""
from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from tests.trainer.conftest import TINY, cli, metrics
from trainer.data import EvalTransform
from trainer.engine import InputNorm, amp_settings, evaluate
from trainer.evaluate import Scorer, recalibrated

CPU = torch.device("cpu")
FP32 = amp_settings(CPU, "fp32")


class Lopsided(nn.Module):
    """Scores class 0 by the left half of the image and class 1 by the right half: its mirror swaps them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[3] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], dim=1) * 10


def _batches(images: torch.Tensor, targets: torch.Tensor):
    return [(images, targets, [])]


def test_flip_tta_scores_the_mean_of_the_image_and_its_mirror_beside_the_plain_figure():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 4, 4)
    images[:3, :, :, :2] += 1.0     # bright left half: class 0 plain, class 1 mirrored
    images[3:, :, :, 2:] += 1.0
    targets = torch.tensor([0, 0, 0, 1, 1, 1])
    model = Lopsided()
    result = evaluate(model, _batches(images, targets), CPU, FP32, False, 2, flip=True)
    mean = (model(images) + model(images.flip(3))) / 2
    expected_loss = nn.functional.cross_entropy(mean, targets).item()
    assert result.top1 == 100.0
    assert abs(result.loss_flip - expected_loss) < 1e-6
    assert result.top1_flip == 100 * float((mean.argmax(1) == targets).float().mean())
    plain = evaluate(model, _batches(images, targets), CPU, FP32, False, 2)
    assert plain.top1_flip is None and plain.top1 == result.top1 and plain.loss == result.loss


def test_a_run_with_flip_tta_logs_and_records_both_figures_each_labelled(demo_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1", "--tta", "flip")
    assert result.exit_code == 0, result.output
    row = metrics(out)[-1]
    assert row["val_top1"] is not None and row["val_top1_flip"] is not None and row["val_top5_flip"] is not None
    line = next(t for t in (out / "train.log").read_text().splitlines() if "epoch 1/1" in t and "val loss" in t)
    assert f"top-1 {row['val_top1']:.2f}%" in line and f"(flip TTA: top-1 {row['val_top1_flip']:.2f}%" in line
    plain = tmp_path / "plain"
    assert cli("train", "--data", demo_data, "--out", plain, *TINY, "--epochs", "1").exit_code == 0
    assert metrics(plain)[-1]["val_top1_flip"] is None
    assert metrics(plain)[-1]["val_top1"] == row["val_top1"]    # the plain figure is the same run's either way


def test_an_unknown_tta_is_refused_before_training(demo_data, tmp_path):
    result = cli("train", "--data", demo_data, "--out", tmp_path / "run", *TINY, "--tta", "five-crop")
    assert result.exit_code == 2 and "tta 'five-crop' is not one of none, flip" in result.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_evaluate_reports_each_resolution_with_and_without_recalibrated_batchnorm(trained_run, demo_data):
    best = trained_run / "checkpoints" / "best.pt"
    before = hashlib.sha256(best.read_bytes()).hexdigest()
    plain = cli("evaluate", "--data", demo_data, "--checkpoint", best, "--workers", "0", "--device", "cpu")
    assert plain.exit_code == 0, plain.output
    result = cli("evaluate", "--data", demo_data, "--checkpoint", best, "--workers", "0", "--device", "cpu",
                 "--tta", "flip", "--res", "12,16,24", "--recalibrate-bn", "2", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    own = json.loads(plain.stdout)
    assert (report["res"], report["resize"], report["top1"]) == (16, 16, own["top1"])   # its own framing, unchanged
    assert "top1_flip" in report and "top1_flip" not in own
    assert [e["res"] for e in report["by_res"]] == [12, 16, 24]
    assert [e["resize"] for e in report["by_res"]] == [12, 16, 24]        # the checkpoint's 16/16 ratio
    at_16 = report["by_res"][1]
    assert at_16["top1"] == report["top1"] and at_16["top1_flip"] == report["top1_flip"]
    for entry in report["by_res"]:
        tuned = entry["recalibrated_bn"]
        assert tuned["batches"] == 2 and tuned["train_images"] == 16
        assert {"top1", "top5", "loss", "top1_flip"} <= set(tuned)
    table = result.output[len(result.stdout):] if result.output.startswith(result.stdout) else result.output
    assert "BN recal." in table and "crop 16, resize 16" in table
    assert hashlib.sha256(best.read_bytes()).hexdigest() == before   # the checkpoint is never changed


def test_recalibrated_batchnorm_holds_the_mean_of_the_batches_it_saw_and_the_original_is_untouched(tmp_path):
    from PIL import Image
    train = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 30, 0, 255 - i * 30)).save(path)
        train.append((str(path), 0))
    model = nn.Sequential(nn.BatchNorm2d(3))
    model[0].running_mean.fill_(5.0)
    scorer = Scorer(CPU, FP32, batch_size=4, workers=0, num_classes=1,
                     norm=InputNorm((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), flip=False)
    tuned, seen = recalibrated(model, train, EvalTransform(8, 8), batches=2, scorer=scorer)
    assert seen == 8
    red = sum(i * 30 for i in range(8)) / 8 / 255
    assert abs(tuned[0].running_mean[0].item() - red) < 1e-4
    assert model[0].running_mean.tolist() == [5.0, 5.0, 5.0] and not tuned.training


def test_bad_resolutions_are_a_message(trained_run, demo_data):
    best = trained_run / "checkpoints" / "best.pt"
    result = cli("evaluate", "--data", demo_data, "--checkpoint", best, "--res", "160,big", "--device", "cpu")
    assert result.exit_code == 2 and "--res '160,big'" in result.output
    result = cli("evaluate", "--data", demo_data, "--checkpoint", best, "--res", "4", "--device", "cpu")
    assert result.exit_code == 2 and "at least 8 px" in result.output
