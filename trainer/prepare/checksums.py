"""--verify-checksums: compare the archives as distributed with their published MD5s.

Off by default: re-packed copies handed out in classes are common and differ byte for byte.
The ImageNet and CIFAR-100 sums are torchvision's (torchvision.datasets.imagenet.ARCHIVE_META,
torchvision.datasets.CIFAR100.tgz_md5), copied rather than imported because importing
torchvision loads torch, which `trainer prepare` otherwise never needs (seconds at every start).
Tiny ImageNet's is the one public loaders use for cs231n's zip. The Kaggle zip has none published.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

PUBLISHED_MD5 = {
    "ILSVRC2012_img_train.tar": "1d675b47d978889d74fa0da5fadfb00e",
    "ILSVRC2012_img_val.tar": "29b22e2961454d5413ddabcf34fc5622",
    "ILSVRC2012_devkit_t12.tar.gz": "fa75699e90414af021442c21a62c3abf",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de",
}


def md5_of(path: Path, advance: Callable[[int], None] = lambda n: None) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def mismatches(paths: tuple[Path, ...], advance: Callable[[int], None] = lambda n: None) -> list[str]:
    """One line per archive whose MD5 differs from the published one (unknown names are skipped)."""
    bad = []
    for path in paths:
        want = PUBLISHED_MD5.get(path.name)
        if want is not None and (got := md5_of(path, advance)) != want:
            bad.append(f"{path}: md5 {got}, published {want}")
    return bad
