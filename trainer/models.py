"""Models: any torchvision classifier by name, plus our own small ResNet and CNN.

`build_model(arch, num_classes, ...)` is the only entry point; it applies Kaiming init and,
optionally, zero-init of the last BN in each residual block (each block starts as the identity,
which trains deep nets from scratch faster: Goyal et al. 2017), and, optionally for the ResNets,
BlurPool before their strided convs (trainer/blurpool.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainer.blurpool import apply_blurpool
from trainer.errors import TrainerError

OUR_MODELS = ("resnet_small", "simple_cnn")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """ResNet with BasicBlocks, a configurable width and depth, and a stem for low resolution.

    width=64, depths=(2,2,2,2), stem="imagenet" is ResNet-18; stem="small" (3x3 stride 1, no
    max-pool) keeps detail at 32-64 px (CIFAR, Tiny ImageNet, Fashion-MNIST).
    """

    def __init__(self, num_classes: int, width: int = 64, depths: Sequence[int] = (2, 2, 2, 2),
                 stem: str = "imagenet", dropout: float = 0.0):
        super().__init__()
        if stem == "small":
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, depth in enumerate(depths):
            cout = width * 2 ** i
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


class SimpleCNN(nn.Module):
    """conv-BN-ReLU x2 + max-pool, three times, then a linear head: small, fast on a CPU."""

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.0):
        super().__init__()
        layers, cin = [], 3
        for i in range(3):
            cout = width * 2 ** i
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


def resolve_stem(stem: str, train_res: int, arch: str = "resnet_small") -> str:
    """The stem `arch` gets: "small" or "imagenet" for the ResNets (ours and torchvision's), "fixed"
    for every other model (it has its own, which `stem` does not change)."""
    if not takes_stem(arch):
        return "fixed"
    return ("small" if train_res <= 96 else "imagenet") if stem == "auto" else stem


def takes_stem(arch: str) -> bool:
    return arch == "resnet_small" or (arch not in OUR_MODELS and arch.startswith(("resnet", "resnext", "wide_resnet")))


def stem_of_weights(stem: str, state_dict: dict) -> str:
    """The stem a checkpoint's weights were made with. Before torchvision's ResNets took the small
    stem, a run at <= 96 px stored "small" for the weights of torchvision's standard 7x7 one."""
    conv1 = state_dict.get("conv1.weight")
    return "imagenet" if conv1 is not None and conv1.shape[-1] == 7 else stem


def available_models() -> list[str]:
    import torchvision
    return sorted(OUR_MODELS) + sorted(torchvision.models.list_models(module=torchvision.models))


def build_model(arch: str, num_classes: int, *, width: int = 64, depths: Sequence[int] = (2, 2, 2, 2),
                stem: str = "imagenet", dropout: float = 0.0, zero_init_residual: bool = True,
                blurpool: bool = False) -> nn.Module:
    """A freshly initialised classifier with `num_classes` outputs (random weights, never pretrained)."""
    if blurpool and not takes_stem(arch):
        raise TrainerError(
            f"blurpool=true applies to the ResNets only (resnet_small and torchvision's resnet*, resnext*, "
            f"wide_resnet*), not --arch {arch}. Drop --set blurpool=true (or set blurpool = false in the recipe), "
            f"or train a ResNet such as --arch resnet18."
        )
    if arch == "resnet_small":
        model: nn.Module = ResNetSmall(num_classes, width, depths, stem, dropout)
    elif arch == "simple_cnn":
        model = SimpleCNN(num_classes, width, dropout)
    else:
        import torchvision
        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise TrainerError(
                f"unknown architecture {arch!r}. Use one of ours ({', '.join(OUR_MODELS)}) or a torchvision "
                f"classification model such as resnet18, resnet50, alexnet, vgg16_bn, efficientnet_b0 "
                f"(list them all with `trainer models`)."
            )
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if stem == "small" and takes_stem(arch):   # torchvision's ResNet class: resnet*, resnext*, wide_resnet*
            # The CIFAR ResNet's stem (He et al. 2016, section 4.2; what "ResNet-18 on CIFAR" usually
            # means): a 3x3 stride-1 first conv and no max-pool, so a 32-64 px image is not cut to a
            # 8-16 px one before the first block. The rest is torchvision's model, unchanged.
            model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
    init_weights(model, zero_init_residual)
    if blurpool:
        apply_blurpool(model)
    return model


def init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    """Kaiming-normal convs (fan_out, ReLU), unit BN, small normal linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            last_bn = getattr(m, "bn3", None) if hasattr(m, "conv3") else getattr(m, "bn2", None)
            if isinstance(last_bn, nn.BatchNorm2d) and (hasattr(m, "downsample") or hasattr(m, "shortcut")):
                nn.init.zeros_(last_bn.weight)
