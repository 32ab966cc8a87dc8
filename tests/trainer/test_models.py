"""The stem a model gets, for our ResNet and torchvision's (CIFAR / Tiny ImageNet: "ResNet-18 from scratch")."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from tests.trainer.conftest import TINY, cli
from trainer import checkpoint as ckpt
from trainer.inference import load_model
from trainer.models import build_model, resolve_stem


def test_torchvision_resnets_take_the_small_stem_at_low_resolution():
    assert resolve_stem("auto", 32, "resnet18") == "small" and resolve_stem("auto", 224, "resnet50") == "imagenet"
    assert resolve_stem("auto", 32, "efficientnet_b0") == "fixed" and resolve_stem("small", 32, "simple_cnn") == "fixed"
    small = build_model("resnet18", 10, stem="small")
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3), (1, 1)) and isinstance(small.maxpool, nn.Identity)
    # A 32 px image reaches the last stage at 4x4 instead of 1x1 (the standard stem divides by 4 first).
    features = nn.Sequential(*list(small.children())[:-2])
    assert features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)
    standard = build_model("resnet18", 10, stem="imagenet")
    assert standard.conv1.kernel_size == (7, 7) and isinstance(standard.maxpool, nn.MaxPool2d)
    # Everything but the stem is torchvision's model: its weights load into the stock one once its stem is swapped.
    stock = torchvision.models.resnet18(num_classes=10)
    stock.conv1, stock.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    stock.load_state_dict(small.state_dict())


def test_a_low_resolution_resnet18_run_says_and_stores_its_real_stem(demo_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--arch", "resnet18", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "training resnet18 (small stem)" in (out / "train.log").read_text()
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert payload["stem"] == "small" and payload["model"]["conv1.weight"].shape[-1] == 3
    report = json.loads(cli("evaluate", "--data", demo_data, "--checkpoint", out / "checkpoints" / "best.pt").output)
    assert report["top1"] >= 0


def test_checkpoints_from_before_keep_loading_and_resuming_says_what_to_do(demo_data, tmp_path):
    """Earlier versions stored "small" for a torchvision ResNet at <= 96 px but built the standard stem."""
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--arch", "resnet18", "--set", "stem=imagenet",
                 "--epochs", "1")
    assert result.exit_code == 0, result.output
    for name in ("last.pt", "best.pt"):
        payload = torch.load(out / "checkpoints" / name, weights_only=False)
        payload["stem"] = "small"
        ckpt.save(payload, out / "checkpoints" / name)
    loaded = load_model(out / "checkpoints" / "best.pt")
    assert loaded.model.conv1.kernel_size == (7, 7)
    resumed = cli("train", "--data", demo_data, "--out", out, *TINY, "--arch", "resnet18", "--epochs", "2")
    assert resumed.exit_code == 2 and "Resume it with --set stem=imagenet" in resumed.output, resumed.output
    fixed = cli("train", "--data", demo_data, "--out", out, *TINY, "--arch", "resnet18", "--set", "stem=imagenet",
                "--epochs", "2")
    assert fixed.exit_code == 0, fixed.output


def test_dropout_on_a_torchvision_model_is_said_to_do_nothing(demo_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--arch", "resnet18", "--set", "dropout=0.3",
                 "--epochs", "1", "--max-hours", "0.000001")
    assert result.exit_code == 0, result.output
    assert "dropout 0.3 applies to our models only" in (out / "train.log").read_text()
