"""BlurPool (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again") as FFCV applies it.

FFCV's ImageNet configs (ffcv-imagenet, train_imagenet.py) turn it on in every recipe: each
nn.Conv2d with a stride above 1 and at least 16 input channels first low-passes its input with a
fixed 3x3 binomial filter ([1,2,1] outer [1,2,1] / 16, per channel, stride 1, zero padding 1), then
runs unchanged. In a ResNet that is each stage's first 3x3 conv and its 1x1 shortcut conv; the RGB
stem (3 channels) is left alone. Zhang reports ResNet-18 69.7 -> 71.7% top-1 over 90 epochs.

Written here rather than taken from a library:
- `antialiased-cnns` (Zhang's own package) is licensed CC BY-NC-SA 4.0 (non-commercial), has had no
  release since 2021, and pads by reflection by default where FFCV pads with zeros.
- kornia's `BlurPool2D(3, stride=1)` computes the same blur, but it is the one `F.conv2d` below:
  the selecting and wrapping of convs, which is the feature, would still be ours, for a dependency
  (kornia and its compiled kornia_rs) the trainer does not otherwise need. Its `BlurPool2D` with
  the default stride 2 blurs and subsamples (Zhang's replacement for a max-pool), not FFCV's
  blur before an unchanged strided conv.

The blurred conv is a subclass of nn.Conv2d that keeps the original's parameters under the same
names, and its filter is a non-persistent buffer: a model's state_dict keys are the same with
BlurPool on or off (torchvision's ImageNet weights still fit for fine-tuning), and BlurPool adds
no learned weights. Whether a checkpoint's model has it is in its stored config (`blurpool`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MIN_CHANNELS = 16   # FFCV's threshold: narrower strided convs (an RGB stem) are not blurred


def binomial_filter() -> torch.Tensor:
    """The 3x3 binomial low-pass filter, [1,2,1] outer [1,2,1] / 16 (it sums to 1)."""
    row = torch.tensor([1.0, 2.0, 1.0])
    return torch.outer(row, row) / 16


class BlurConv2d(nn.Conv2d):
    """nn.Conv2d whose input is first blurred by `binomial_filter`, channel by channel."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        blur = binomial_filter().to(self.weight).expand(self.in_channels, 1, 3, 3).contiguous()
        self.register_buffer("blur", blur, persistent=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> BlurConv2d:
        """A BlurConv2d with `conv`'s settings that shares its weight and bias (the same Parameters)."""
        blurred = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
        blurred.weight = conv.weight
        blurred.bias = conv.bias
        return blurred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.conv2d(x, self.blur, padding=1, groups=self.in_channels))


def blurs(conv: nn.Module) -> bool:
    """Whether FFCV's rule blurs the input of `conv`: a plain Conv2d, strided, with >= 16 input channels."""
    return type(conv) is nn.Conv2d and max(conv.stride) > 1 and conv.in_channels >= MIN_CHANNELS


def apply_blurpool(model: nn.Module) -> int:
    """Swap, in place, every conv `blurs` selects for its BlurConv2d; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if blurs(child):
                setattr(parent, name, BlurConv2d.from_conv(child))
                swapped += 1
    return swapped
