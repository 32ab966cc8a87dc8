"""uint8 batches from the loaders, normalised on the device by engine.to_device."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import functional as F

from trainer.engine import InputNorm, to_device

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("channels_last", [False, True])
def test_to_device_normalises_uint8_like_torchvision(channels_last):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    targets = torch.arange(4)
    out, t = to_device(images, targets, torch.device("cpu"), channels_last, InputNorm(MEAN, STD))
    expected = F.normalize(images.float() / 255, MEAN, STD)
    assert out.dtype == torch.float32 and torch.equal(t, targets)
    assert torch.allclose(out, expected, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_one_image_without_a_batch_dimension():
    image = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    out = InputNorm(MEAN, STD).apply(image)
    assert out.shape == (3, 2, 2)
    assert torch.allclose(out[:, 0, 0], torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)]), atol=1e-5)


def test_float_batches_pass_through_and_uint8_without_a_norm_is_refused():
    x = torch.randn(2, 3, 4, 4)
    out, _ = to_device(x, torch.zeros(2, dtype=torch.long), torch.device("cpu"), False)
    assert torch.equal(out, x)
    with pytest.raises(ValueError, match="InputNorm"):
        to_device(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), torch.device("cpu"), False)
