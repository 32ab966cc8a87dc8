"""BlurPool (`--set blurpool=true`): a blur before each strided ResNet conv, as FFCV trains ImageNet."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.trainer.conftest import TINY, cli, metrics
from trainer import checkpoint as ckpt
from trainer.blurpool import BlurConv2d, binomial_filter
from trainer.inference import load_model
from trainer.models import build_model

# TINY's width 8 leaves no strided conv with the 16 input channels BlurPool needs: width 16 has two.
BLUR = [*TINY, "--width", "16", "--set", "blurpool=true"]


def blurred_convs(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, BlurConv2d)}


@pytest.mark.parametrize("arch,kwargs", [("resnet18", {}), ("resnet50", {}), ("resnet18", {"stem": "small"}),
                                         ("resnet_small", {"width": 16, "depths": (1, 1, 1)}),
                                         ("resnet_small", {"width": 8, "depths": (1, 1, 1)})])
def test_exactly_the_strided_convs_with_16_or_more_input_channels_are_blurred(arch, kwargs):
    plain = build_model(arch, 10, **kwargs)
    expected = {name for name, m in plain.named_modules()
                if isinstance(m, nn.Conv2d) and max(m.stride) > 1 and m.in_channels >= 16}
    blurred = build_model(arch, 10, blurpool=True, **kwargs)
    assert blurred_convs(blurred) == expected
    if arch == "resnet18":   # the stage transitions' first 3x3 conv and 1x1 shortcut; never the RGB stem
        assert expected == {f"layer{i}.0.{conv}" for i in (2, 3, 4) for conv in ("conv1", "downsample.0")}
    # No learned weights added and no names changed: the same state_dict keys and shapes.
    assert {k: v.shape for k, v in blurred.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}


def test_the_blur_is_the_binomial_filter_before_the_unchanged_strided_conv():
    assert torch.equal(binomial_filter() * 16, torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))
    conv = nn.Conv2d(16, 16, 1, stride=1, bias=False)   # stride 1 here only to look at the blur itself
    nn.init.dirac_(conv.weight)                          # the identity: the output is the blurred input
    blur = BlurConv2d.from_conv(conv)
    assert blur.weight is conv.weight
    with torch.no_grad():
        constant = blur(torch.full((1, 16, 8, 8), 3.0))
        assert torch.allclose(constant[..., 1:-1, 1:-1], torch.full((1, 16, 6, 6), 3.0))   # zero padding at the border
        impulse = torch.zeros(1, 16, 7, 7)
        impulse[..., 3, 3] = 16.0
        spread = blur(impulse)[0, 5]
    assert torch.equal(spread[2:5, 2:5], torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))
    assert spread.sum() == 16 and spread[3].tolist() == [0, 0, 2, 4, 2, 0, 0]


def test_a_blurpool_run_trains_resumes_predicts_evaluates_and_exports_to_a_matching_onnx(demo_data, tmp_path):
    out = tmp_path / "run"
    first = cli("train", "--data", demo_data, "--out", out, *BLUR, "--epochs", "1")
    assert first.exit_code == 0, first.output
    resumed = cli("train", "--data", demo_data, "--out", out, *BLUR, "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in (out / "train.log").read_text()
    assert [m["epoch"] for m in metrics(out)] == [1, 2]
    best = out / "checkpoints" / "best.pt"
    loaded = load_model(best)
    assert loaded.config.blurpool and blurred_convs(loaded.model) == {"stages.1.0.conv1", "stages.1.0.shortcut.0"}

    image = sorted((demo_data / "val").glob("*/*.jpg"))[0]
    predicted = cli("predict", "--checkpoint", best, image, "--json")
    assert predicted.exit_code == 0, predicted.output
    evaluated = cli("evaluate", "--data", demo_data, "--checkpoint", best, "--workers", "0")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["top1"] == pytest.approx(max(m["val_top1"] for m in metrics(out)))

    onnx = tmp_path / "model.onnx"
    exported = cli("export", "--checkpoint", best, "--format", "onnx", "--out", onnx)
    assert exported.exit_code == 0, exported.output
    # Independently of the export's own check: the ONNX model agrees with the blurred model, which
    # is not the same weights without the blur.
    import onnxruntime
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    unblurred = build_model("resnet_small", 4, width=16, depths=(1, 1), stem="small", zero_init_residual=False).eval()
    unblurred.load_state_dict(loaded.model.state_dict())
    with torch.no_grad():
        expected, without = loaded.model(x).numpy(), unblurred(x).numpy()
    got = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert abs(got - expected).max() < 1e-4 < abs(without - expected).max()


def test_torchvision_resnet18_trains_and_evaluates_with_blurpool(demo_data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *BLUR, "--arch", "resnet18", "--epochs", "1")
    assert result.exit_code == 0, result.output
    best = out / "checkpoints" / "best.pt"
    assert blurred_convs(load_model(best).model) == {f"layer{i}.0.{c}" for i in (2, 3, 4) for c in ("conv1", "downsample.0")}
    evaluated = cli("evaluate", "--data", demo_data, "--checkpoint", best, "--workers", "0")
    assert evaluated.exit_code == 0, evaluated.output


@pytest.mark.parametrize("arch", ["simple_cnn", "mobilenet_v3_small"])
def test_blurpool_on_a_model_that_is_not_a_resnet_is_refused_before_training(demo_data, tmp_path, arch):
    out = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", out, *BLUR, "--arch", arch, "--epochs", "1")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "blurpool=true applies to the ResNets only" in result.output and f"not --arch {arch}" in result.output
    assert not (out / "checkpoints" / "last.pt").exists()


def test_a_checkpoint_from_before_the_setting_loads_without_blurpool(trained_run, demo_data, tmp_path):
    payload = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=False)
    del payload["config"]["blurpool"]
    old = tmp_path / "old.pt"
    ckpt.save(payload, old)
    assert not load_model(old).config.blurpool and not blurred_convs(load_model(old).model)
    image = sorted((demo_data / "val").glob("*/*.jpg"))[0]
    assert cli("predict", "--checkpoint", old, image, "--json").exit_code == 0
