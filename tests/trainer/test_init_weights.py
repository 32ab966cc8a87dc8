"""`--init-weights`: fine-tuning from weights trained elsewhere (USERS.md: "ResNet-18 from scratch vs
fine-tuned" on CIFAR-100; DataParallel's `module.` prefixes that break loading later).

Every tensor whose name and shape match is copied, whatever wrapper saved it; the rest stay random
and are named; weights of another architecture are refused; a resumed run keeps its own weights.
"""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from tests.trainer.conftest import TINY, cli, metrics
from trainer.errors import TrainerError
from trainer.init_weights import init_from
from trainer.models import build_model


def imagenet_resnet18() -> nn.Module:
    torch.manual_seed(7)
    return torchvision.models.resnet18(num_classes=1000)


def small_resnet18(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", classes, stem="small")


@pytest.mark.parametrize("wrap", ["plain", "dataparallel", "compiled", "lightning", "tutorial"])
def test_matching_tensors_are_copied_whatever_saved_them(tmp_path, wrap):
    source = imagenet_resnet18()
    state = source.state_dict()
    saved = {
        "plain": state,
        "dataparallel": nn.DataParallel(source).state_dict(),                       # module.conv1.weight
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},                # torch.compile's wrapper
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3},
        "tutorial": {"model_state_dict": state, "optimizer_state_dict": {}, "epoch": 9},
    }[wrap]
    torch.save(saved, tmp_path / "w.pth")
    model = small_resnet18()
    report = init_from(model, str(tmp_path / "w.pth"), "resnet18")
    # the small stem's 3x3 conv1 and the 3-class head are not ImageNet's: they stay random
    assert set(report.fresh) == {"conv1.weight", "fc.weight", "fc.bias"}
    assert report.loaded == report.total - 3
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(model.layer1[0].bn1.running_var, state["layer1.0.bn1.running_var"])
    assert not torch.equal(model.fc.weight[:3], state["fc.weight"][:3])
    assert "random init for conv1.weight, fc.weight, fc.bias" in report.describe()


def test_a_trainer_checkpoint_gives_all_its_weights(trained_run):
    best = trained_run / "checkpoints" / "best.pt"
    payload = torch.load(best, weights_only=False)
    model = build_model("resnet_small", 4, width=8, depths=(1, 1), stem="small")
    report = init_from(model, str(best), "resnet_small")
    assert report.fresh == () and report.loaded == report.total
    assert all(torch.equal(v, payload["model"][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("other", ["resnet50", "resnet34", "vgg11"])
def test_weights_of_another_architecture_are_refused(tmp_path, other):
    """resnet50's share many names and some shapes with resnet18, and resnet34's hold all of resnet18's
    tensors: both would half-load without a word; vgg11's share nothing."""
    torch.save(torchvision.models.get_model(other).state_dict(), tmp_path / "w.pth")
    model = small_resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainerError, match="does not fit --arch resnet18: .* another architecture"):
        init_from(model, str(tmp_path / "w.pth"), "resnet18")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "nothing is half-loaded"


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"not a pickle at all", "cannot be read as PyTorch weights"),
    ({"epoch": 3, "lr": 0.1}, "holds no state_dict"),
])
def test_a_file_that_is_not_weights_is_refused(tmp_path, content, message):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(TrainerError, match=message):
        init_from(small_resnet18(), str(path), "resnet18")


def test_imagenet_reads_torchvisions_weights_from_the_torch_cache(tmp_path, monkeypatch):
    """No download here: the file torchvision would download is already in $TORCH_HOME's cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    state = imagenet_resnet18().state_dict()
    torch.save(state, cached)
    model = small_resnet18()
    report = init_from(model, "imagenet", "resnet18")
    assert report.source == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert torch.equal(model.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])


def test_imagenet_without_a_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(TrainerError) as err:
        init_from(small_resnet18(), "imagenet", "resnet18")
    assert "could not download" in str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-") in str(err.value)


def test_imagenet_weights_for_our_own_models_are_refused():
    with pytest.raises(TrainerError, match="no ImageNet weights for --arch resnet_small"):
        init_from(build_model("resnet_small", 3), "imagenet", "resnet_small")


def test_train_fine_tunes_from_a_file_and_a_resumed_run_keeps_its_own_weights(demo_data, trained_run, tmp_path):
    out = tmp_path / "ft"
    best = trained_run / "checkpoints" / "best.pt"
    first = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1", "--init-weights", best)
    assert first.exit_code == 0, first.output
    log = (out / "train.log").read_text()
    assert f"weights from {best}: " in log
    # started from a trained model: better than the scratch run's first epoch
    assert metrics(out)[0]["val_top1"] >= metrics(trained_run)[0]["val_top1"]
    second = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--init-weights", best)
    assert second.exit_code == 0, second.output
    resumed = (out / "train.log").read_text()[len(log):]
    assert "resumed from" in resumed and "weights from" not in resumed
