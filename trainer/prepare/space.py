"""Will the result fit? Checked before anything is written.

The estimate is the source's size scaled by the share of it this run writes. With
--resize-short S, a JPEG's bytes scale with its pixel count: ImageNet's average short side is
about 350 px, and we allow 1.5x for the shorter images that are kept as they are. With
--resize-short-train T as well, each split's bytes scale by its own side, the source's bytes split
between train and val by image count (train is 96% of ImageNet's images).
"""
from __future__ import annotations

import shutil
from pathlib import Path

TYPICAL_SHORT_SIDE = 350


class SpaceError(Exception):
    pass


def estimate_bytes(source_bytes: int, counts: tuple[int, int, int], share_of_classes: float,
                   max_per_class: int | None, short_side: dict[str, int | None]) -> int:
    """`counts`: the source's classes, train and val images (Source.full_counts); `short_side`: each
    split's stored short side ("train", "val"), None where its images are kept as they came."""
    share = share_of_classes
    classes, train, val = counts
    if max_per_class is not None:
        share *= min(1.0, max_per_class * 2 / ((train + val) / classes))
    per_class = {"train": train / max(classes, 1), "val": val / max(classes, 1)}
    if max_per_class is not None:
        per_class = {s: min(n, max_per_class) for s, n in per_class.items()}
    total = sum(per_class.values())
    weight = {s: n / total for s, n in per_class.items()} if total else {"train": 0.5, "val": 0.5}
    share *= sum(w * _pixel_share(short_side.get(s)) for s, w in weight.items())
    return int(source_bytes * share)


def _pixel_share(short: int | None) -> float:
    """The share of its bytes an image keeps when stored with this short side."""
    return 1.0 if short is None else min(1.0, 1.5 * (short / TYPICAL_SHORT_SIDE) ** 2)


def check_free_space(dest: Path, need: int) -> None:
    """Raise SpaceError, saying what to do, when `need` bytes will not fit where `dest` lives."""
    probe = Path(dest).absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise SpaceError(
            f"Not enough free space for {dest}: it needs about {_gb(need)}, and {probe} has {_gb(free)} free. "
            f"Nothing was written and the source is untouched. Free some space or pick another --dest; "
            f"or write less: --resize-short 256 (smaller files; the short side the recipes evaluate at, so "
            f"val top-1 stays standard), or --subset-percent 10."
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
