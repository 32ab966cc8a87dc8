"""Re-encode one image with its short side at S pixels (what --resize-short stores).

Runs in worker processes. For JPEG, `Image.draft` asks libjpeg to decode at 1/2, 1/4 or 1/8
scale (the largest reduction still at least the target size), which skips most of the IDCT work;
a 500x375 photo shrunk to short side 160 decodes at 1/2 scale. Images already at or below S are
stored unchanged: never upscale, never re-encode for nothing.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

JPEG_QUALITY = 90   # visually lossless for training crops; about a tenth of the full-size bytes


def shrink(data: bytes, short: int, png: bool = False) -> bytes:
    """`data` with its short side at `short`, as PNG if `png` (lossless sets) else JPEG."""
    from PIL import Image

    from trainer.pixels import to_rgb

    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if min(w, h) <= short:
            return data
        size = (round(w * short / min(w, h)), round(h * short / min(w, h)))
        if img.format == "JPEG":
            img.draft("RGB", size)
        img = to_rgb(img)  # ImageNet has CMYK and greyscale JPEGs, others 16-bit PNGs; the trainer wants RGB
        # Bilinear, antialiased over the whole footprint as PIL always does when shrinking: the
        # same filter torchvision's Resize uses, and after draft() the remaining factor is < 2.
        img = img.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    # The format follows the file name, so ImageNet's one PNG named .JPEG becomes a real JPEG.
    if png:
        img.save(out, format="PNG")
    else:
        img.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def shrink_or_keep(data: bytes, short: int, png: bool = False) -> tuple[bytes, bool]:
    """(shrunk bytes, True), or (`data` unchanged, False) when it does not decode.

    A damaged image (a truncated JPEG in the download) is stored as it came, as it is without
    --resize-short, so the run finishes and `trainer verify` names the file; raising here would
    stop every rerun at the same image.
    """
    from PIL import Image

    try:
        return shrink(data, short, png), True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return data, False


def shrink_to_file(data: bytes, path: str, short: int) -> tuple[int, bool]:
    """Write the shrunk image (or, if it does not decode, `data`) to `path` atomically; returns
    (bytes written, whether it decoded)."""
    out, decoded = shrink_or_keep(data, short, png=path.lower().endswith(".png"))
    write_atomic(Path(path), out)
    return len(out), decoded


def write_atomic(path: Path, data: bytes) -> None:
    """Temp name in the same folder, then os.replace: a reader sees the whole file or none.

    No fsync per image (it would dominate 1.28M small writes); the class is only marked complete
    after all its files are replaced, and a rerun redoes any class that was not marked.
    """
    tmp = path.with_name(f".{path.name}{PART}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


PART = ".part"   # suffix of half-written files; a rerun deletes them
