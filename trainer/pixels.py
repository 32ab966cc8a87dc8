"""Pixels as the trainer wants them: 8-bit RGB, whatever the file held. PIL and numpy only (no torch),
so that `trainer prepare` and `trainer verify` use the same rule as training."""
from __future__ import annotations

import numpy as np
from PIL import Image

# PIL's modes for 16-bit greyscale, and "I" (32-bit integers), which older Pillow opens 16-bit PNGs as.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image) -> Image.Image:
    """`img.convert("RGB")`, with 16-bit greyscale first scaled to 8 bits: PIL's conversion clips
    values at 255 (mid-grey 32768 becomes white), so a 16-bit dataset would train on blank images."""
    if img.mode in SIXTEEN_BIT_MODES:
        # The high byte, as Pillow itself reduces 16-bit RGB PNGs; "I" may hold any int32, so clip first.
        high = np.clip(np.asarray(img), 0, 65535) >> 8
        img = Image.fromarray(high.astype(np.uint8))
    return img.convert("RGB")
