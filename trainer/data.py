"""Image folders: layout checks, the dataset (decoding through trainer.decode), sampler and loaders.

DATA/train/<class>/* and DATA/val/<class>/*; DATA/dataset.json (optional) adds readable class
names. A corrupt or unreadable image is skipped: the batch comes back smaller and the loop counts
and reports the file, so one bad JPEG never stops an epoch.
"""
from __future__ import annotations


import contextlib
import os
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info
from torchvision.datasets.folder import make_dataset

from trainer import decode
from trainer.errors import TrainerError
from trainer.prepare.catalog import IMAGE_EXTENSIONS, class_folders, is_image
from trainer.prepare.verify import missing_val_classes
from trainer.stopping import shield_worker_from_stop_signals


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    classes: list[str]                      # folder names, sorted; index = position
    names: dict[str, str]                   # folder name -> readable name (may be empty)
    dataset: str                            # "imagenet", "cifar100", ... or the folder name
    train: list[tuple[str, int]] = field(repr=False)
    val: list[tuple[str, int]] = field(repr=False)
    resize_short: int | None = None         # `trainer prepare --resize-short`: the stored val images' short side
    warnings: tuple[str, ...] = ()          # usable but questionable layout; the caller logs them (main process)
    # The stored train images' short side: --resize-short-train, else --resize-short (older dataset.json: both)
    resize_short_train: int | None = None


def read_metadata(root: Path) -> dict:
    path = root / "dataset.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainerError(f"{path} is not valid JSON ({exc}). Fix or delete it (it is optional).") from exc
    return meta if isinstance(meta, dict) else {}


def scan_split(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    index = {c: i for i, c in enumerate(classes)}
    present = {c: index[c] for c in class_folders(split_dir)}
    samples = make_dataset(str(split_dir), present, is_valid_file=is_image, allow_empty=True)
    counts = {c: 0 for c in present}
    for _, i in samples:
        counts[classes[i]] += 1
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        shown = ", ".join(str(split_dir / c) for c in empty[:5]) + (f" (+{len(empty) - 5} more)" if len(empty) > 5 else "")
        raise TrainerError(
            f"{len(empty)} class folder(s) hold no images: {shown}. Image files end in "
            f"{', '.join(IMAGE_EXTENSIONS)} (hidden files are skipped). Nothing was trained. Add images or remove the empty folders, "
            f"then check the layout with `trainer verify --data {split_dir.parent}`."
        )
    return samples


def load_dataset(root: str | Path, need_train: bool = True, need_val: bool = True) -> DatasetInfo:
    """Check the layout and list the images; raise TrainerError saying what to fix."""
    root = Path(root)
    if not root.is_dir():
        raise TrainerError(
            f"data directory {root} does not exist. Expected {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg; "
            f"make one with `trainer prepare ...` or try `trainer demo-data --dest {root}`."
        )
    train_dir, val_dir = root / "train", root / "val"
    if need_train and not train_dir.is_dir():
        raise TrainerError(f"no train split: {train_dir} is missing. Expected {train_dir}/<class>/*.jpg.")
    if need_val and not val_dir.is_dir():
        raise TrainerError(
            f"no val split: {val_dir} is missing. Expected {val_dir}/<class>/*.jpg with the same class folders as "
            f"train/. `trainer prepare folder --source {root} --dest NEW_FOLDER --val-percent 10` draws one from "
            f"train/ (a seeded 10% of each class's images)."
        )
    meta = read_metadata(root)
    classes = class_folders(train_dir if train_dir.is_dir() else val_dir)
    if not classes:
        raise TrainerError(f"{train_dir if need_train else val_dir} has no class folders. Expected <split>/<class>/*.jpg.")
    if meta.get("classes") and list(meta["classes"]) != classes:
        raise TrainerError(
            f"{root}/dataset.json lists {len(meta['classes'])} classes but train/ has {len(classes)} class folders "
            f"(or a different order). Re-run `trainer prepare` or delete dataset.json."
        )
    warnings = []
    if need_val:
        val_classes = set(class_folders(val_dir))
        extra = sorted(val_classes - set(classes))
        if extra:
            raise TrainerError(f"val/ has class folders that train/ lacks: {', '.join(extra[:5])}. Val classes must be train classes.")
        missing = sorted(set(classes) - val_classes)
        if missing and len(missing) < len(classes):  # none at all is the "no val split" error below
            warnings.append(missing_val_classes(missing, len(classes)))   # as `trainer verify` says it
    train = scan_split(train_dir, classes) if need_train else []
    val = scan_split(val_dir, classes) if need_val else []
    if need_val and not val:
        raise TrainerError(f"no val split: {val_dir} has no images. Put a few images per class in {val_dir}/<class>/.")
    resize_short = _short_side(meta.get("resize_short"))
    return DatasetInfo(root, classes, dict(meta.get("names") or {}), str(meta.get("dataset") or root.name), train, val,
                       resize_short, tuple(warnings),
                       resize_short_train=_short_side(meta.get("resize_short_train")) or resize_short)


def _short_side(value) -> int | None:
    """A short side from dataset.json, or None where it is absent or not a positive number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
    return int(value) if ok else None


@dataclass(frozen=True)
class TrainTransform:
    scale: tuple[float, float]
    ratio: tuple[float, float]
    hflip: bool
    pad: int = 0            # > 0: CIFAR's pad-and-random-crop instead of the random-resized crop


@dataclass(frozen=True)
class EvalTransform:
    resize: int
    crop: int


class ImageFiles(Dataset):
    """(uint8 image tensor (3, H, W), class index) for each file; (path, reason) for a file that
    cannot be decoded. Workers hand over uint8: `engine.to_device` converts and normalises on the
    training device (a quarter of the bytes through the worker queue and the PCIe bus).

    Items are indices or (index, train_resolution, seed) from `EpochSampler`, so progressive
    resizing works with persistent workers (their copy of the dataset never needs updating).
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: TrainTransform | EvalTransform):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, res, seed = item if isinstance(item, tuple) else (item, None, None)
        with _seeded(seed):
            return self._load(index, res)

    def _load(self, index: int, res: int | None):
        path, target = self.samples[index]
        t = self.transform
        try:
            if isinstance(t, TrainTransform) and t.pad:
                img = decode.load_pad_crop(path, res, t.pad, t.hflip)
            elif isinstance(t, TrainTransform):
                img = decode.load_train_crop(path, res, t.scale, t.ratio, t.hflip)
            else:
                img = decode.load_eval_crop(path, t.resize, t.crop)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means "skip this file"
            return (path, f"{type(exc).__name__}: {exc}")
        return img, target


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Augmentation as a pure function of (run seed, epoch, image): identical after a resume, with
    any number of workers. In the main process the global RNG is restored afterwards."""
    if seed is None:
        yield
        return
    # Only the CPU generator (what decoding draws from): torch.manual_seed would also seed every
    # accelerator, which costs ~100x more per image.
    generator = torch.default_generator
    saved = generator.get_state() if get_worker_info() is None else None
    generator.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            generator.set_state(saved)


def collate_skipping_bad(items):
    """Stack the good items; return the bad ones as (path, reason) pairs beside the batch.

    The batch is (N, 3, H, W) in channels_last memory (N x H x W x 3): the layout the decoders
    write, so stacking is a plain copy instead of a transpose per image, and the one the model
    trains in, so `engine.to_device` has nothing to reorder. torch's `default_collate` does the
    stacking: in a worker it stacks straight into shared memory (no copy when the batch is sent).
    """
    good = [it for it in items if isinstance(it[0], torch.Tensor)]
    bad = [it for it in items if not isinstance(it[0], torch.Tensor)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images = default_collate([g[0].permute(1, 2, 0) for g in good]).permute(0, 3, 1, 2)
    return images, torch.tensor([g[1] for g in good]), bad


class EpochSampler(Sampler):
    """Shuffled (seed + epoch) or ordered indices, sharded over DDP ranks, resumable mid-epoch.

    - The permutation depends only on (seed, epoch): a resumed run sees the same order.
    - `skip` drops the first items of this rank's shard (the batches done before the interruption).
    - Train mode gives every rank the same number of items (DDP needs equal step counts);
      eval mode shards without padding so no image is counted twice.
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 resolution: Callable[[int], int] | None = None):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.resolution = resolution
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
            order = order[: self.n - self.n % self.world] if self.n >= self.world else order
        else:
            order = list(range(self.n))
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator:
        items = self.shard()[self.skip:]
        if self.resolution is None:
            return iter(items)
        res = self.resolution(self.epoch)
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        return iter((i, res, (base + i) % (1 << 63)) for i in items)

    def __len__(self) -> int:
        return max(0, len(self.shard()) - self.skip)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def make_loader(dataset: ImageFiles, sampler: EpochSampler, batch_size: int, workers: int, prefetch: int,
                pin_memory: bool, drop_last: bool) -> DataLoader:
    # More worker processes than CPUs only adds contention (and a warning per loader): recipes
    # are written for an 8-vCPU g4dn.2xlarge, and the same recipe must run on a 2-core laptop.
    workers = min(workers, available_cpus())
    kwargs = dict(persistent_workers=True, prefetch_factor=prefetch) if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      drop_last=drop_last, collate_fn=collate_skipping_bad,
                      worker_init_fn=shield_worker_from_stop_signals if workers > 0 else None, **kwargs)


def eval_transform(eval_res: int, eval_resize: int) -> EvalTransform:
    return EvalTransform(eval_resize or int(round(eval_res / 0.875)), eval_res)


def progressive_resolution(epoch: int, start: int, end: int, ramp_epochs: float, epochs: int,
                           ramp_start: float = 0.0) -> int:
    """Train crop for `epoch` (0-based): `start` until `ramp_start`, then linear to `end`, reached at
    epoch `ramp_epochs` - 1, in steps of 16 px (of 8 px below 64 px) so a GPU sees few distinct
    shapes. FFCV's (start_ramp, end_ramp) = (11, 13) of 16 epochs is ramp_start 11, ramp_epochs 13:
    12 epochs at `start`, 4 at `end`."""
    if not start or start == end:
        return end
    ramp = ramp_epochs or max(1.0, 0.75 * epochs)
    t = min(1.0, max(0.0, epoch - ramp_start) / max(1.0, ramp - 1 - ramp_start))
    if t >= 1.0:
        return end
    res = start + (end - start) * t
    step = 16 if end >= 64 else 8
    return int(max(8, min(max(start, end), round(res / step) * step)))
