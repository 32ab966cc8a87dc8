"""Input pipeline: images/s per worker process, ours against torchvision ImageFolder + PIL.

    python bench/data_pipeline.py                       # ~1 min on a laptop CPU
    python bench/data_pipeline.py --images 512 --reps 7 --size 176
    python bench/data_pipeline.py --device cuda          # adds GPU JPEG decoding (nvjpeg)

Both pipelines run in this one process with torch limited to one thread, which is what one
DataLoader worker gets: the figure is per worker, so the number of cores (or the neighbours on
a shared machine) does not enter it. Multiply by the workers you run (8 vCPUs on a g4dn.2xlarge:
about 7 workers beside the training process) to get the loader's ceiling.

A worker loads the items of a batch and collates them; both pipelines are timed doing both.

- baseline: torchvision `ImageFolder` (PIL loader) + RandomResizedCrop + RandomHorizontalFlip +
  ToTensor + Normalize: decode the whole JPEG, crop, resize in PIL; torch's `default_collate`.
- ours: `trainer.data.ImageFiles` (what training uses) over `trainer.decode.load_train_crop`:
  crop box from the header, JPEG decoding of only the crop's part (trainer/_jpegcrop.c, or the
  whole image by simplejpeg where it is not built) at the smallest M/8 scale the crop allows,
  torch's uint8 resize, flip; `collate_skipping_bad` stacks uint8 channels_last batches, and
  training converts and normalises them on the device (`trainer.engine.to_device`;
  bench/end_to_end.py counts that cost).
- ours + CPU normalise: the same, then the baseline's float conversion and normalisation in the
  worker, for a like-for-like float tensor (what a CPU-only run pays per image).

Data: ImageNet-like JPEGs (about 500x375, quality 90) made from scikit-image's photographs, and
the same files after `prepare --resize-short 160` (re-encoded with the short side at 160 px).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from _common import (interleaved, machine, make_jpeg_folder, median, paired_ratio, pick_device, print_ratio,
                     print_table, resize_short_copy, spread)

# ------------------------------------------------------------------ settings (flags override)
IMAGES = 96               # JPEGs per set; every repetition decodes each once per pipeline
REPS = 5                  # interleaved repetitions (baseline, ours, then reversed); ratio: median of per-rep ratios
SIZE = 160                # output crop, px (the T4 recipe trains at 160-192 px)
RESIZE_SHORT = 160        # the re-encoded set's short side, px (`trainer prepare --resize-short`)
CROP_SCALE = (0.08, 1.0)  # random-resized-crop area range (torchvision's and FFCV's default)
WHOLE = "ours, whole-image decoding"
BATCH = 64                # items a worker collates into one batch (torch's default_collate for the baseline)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def baseline_dataset(root: Path, size: int, scale: tuple[float, float]):
    from torchvision import datasets, transforms

    return datasets.ImageFolder(str(root), transforms.Compose([
        transforms.RandomResizedCrop(size, scale=scale),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ]))


def our_dataset(root: Path, size: int, scale: tuple[float, float]):
    from trainer.data import ImageFiles, TrainTransform, load_dataset

    info = load_dataset(root, need_train=True, need_val=False)
    dataset = ImageFiles(info.train, TrainTransform(scale, (3 / 4, 4 / 3), hflip=True))
    # The sampler's items: (index, train resolution, seed); no seed keeps the global generator.
    return dataset, [(i, size, None) for i in range(len(dataset))]


def with_cpu_normalise(load: Callable) -> Callable:
    """`load`, then the float conversion and normalisation in this process (the baseline's ToTensor
    + Normalize, done the trainer's way)."""
    from trainer.engine import InputNorm

    norm = InputNorm(MEAN, STD)

    def run(item):
        image, target = load(item)
        return norm.apply(image), target
    return run


def whole_image_decoding(load: Callable) -> Callable:
    """`load` with trainer._jpegcrop switched off: simplejpeg decodes whole images (the fallback)."""
    from trainer import decode

    def run(item):
        native, decode._jpegcrop = decode._jpegcrop, None
        try:
            return load(item)
        finally:
            decode._jpegcrop = native
    return run


def rate(load: Callable, items: list, collate: Callable, batch: int = BATCH) -> Callable[[], float]:
    """A run: load every item once and collate them in batches, as a worker does; return images/s."""
    def run() -> float:
        t0 = time.perf_counter()
        for start in range(0, len(items), batch):
            loaded = [load(item) for item in items[start:start + batch]]
            for x, _ in loaded:
                assert isinstance(x, torch.Tensor), x   # a decoding failure would inflate the rate
            collate(loaded)
        return len(items) / (time.perf_counter() - t0)
    return run


def cpu_pipelines(root: Path, size: int, scale: tuple[float, float], reps: int) -> dict[str, list[float]]:
    from torch.utils.data import default_collate

    from trainer import decode
    from trainer.data import collate_skipping_bad

    base = baseline_dataset(root / "train", size, scale)
    ours, items = our_dataset(root, size, scale)
    assert len(base) == len(ours), (len(base), len(ours))
    runs = {
        "ImageFolder + PIL": rate(base.__getitem__, list(range(len(base))), default_collate),
        "ours (trainer.data, uint8 out)": rate(ours.__getitem__, items, collate_skipping_bad),
        "ours + CPU normalise": rate(with_cpu_normalise(ours.__getitem__), items, collate_skipping_bad),
    }
    if decode._jpegcrop is not None:   # what the partial decoder buys, in the same run
        runs[WHOLE] = rate(whole_image_decoding(ours.__getitem__), items, collate_skipping_bad)
    for run in runs.values():   # warm the page cache and imports out of the timing
        run()
    return interleaved(runs, reps)


def train_jpegs(root: Path) -> list[Path]:
    """The JPEG files of ROOT/train, listed by the loader training uses (any case of .jpg/.jpeg,
    so a prepared ImageNet's .JPEG files count). Exits with a message when there are none."""
    from trainer.data import load_dataset
    from trainer.errors import TrainerError

    try:
        samples = load_dataset(root, need_train=True, need_val=False).train
    except TrainerError as exc:
        raise SystemExit(f"data_pipeline.py: {exc}") from None
    files = sorted(Path(path) for path, _ in samples if Path(path).suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"data_pipeline.py: no JPEG files (.jpg/.jpeg, any case) in {root / 'train'}/<class>/; "
                         f"GPU decoding (nvjpeg) reads only JPEGs. Point --data at a prepared JPEG dataset, or "
                         f"leave --data out to use generated ones.")
    return files


def gpu_decode(root: Path, size: int, scale: tuple[float, float], reps: int, device: torch.device,
               batch: int = 128) -> list[float]:
    """nvjpeg: read the bytes on the CPU, decode a batch on the GPU, random-resized-crop and flip
    each image on the GPU. Returns images/s for the whole process (the CPU only reads files)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms.v2 import functional as F2

    from _common import Stopwatch

    files = train_jpegs(root)
    mean = torch.tensor(MEAN, device=device).view(3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(3, 1, 1) * 255

    def run() -> float:
        watch = Stopwatch(device)
        watch.start()
        for i in range(0, len(files), batch):
            data = [read_file(str(p)) for p in files[i:i + batch]]
            try:   # batched decoding: torchvision >= 0.19
                images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            except TypeError:
                images = [decode_jpeg(d, mode=ImageReadMode.RGB, device=device) for d in data]
            crops = []
            for img in images:
                top, left, h, w = RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
                crop = F2.resized_crop(img, top, left, h, w, [size, size], antialias=True)
                crops.append(crop.flip(-1) if torch.rand(()) < 0.5 else crop)
            out = (torch.stack(crops).float() - mean) / std
        del out
        return len(files) / watch.stop()

    run()   # nvjpeg handles and CUDA context out of the timing
    return [run() for _ in range(reps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--images", type=int, default=IMAGES, help=f"JPEGs per set (default {IMAGES})")
    parser.add_argument("--reps", type=int, default=REPS, help=f"interleaved repetitions (default {REPS})")
    parser.add_argument("--size", type=int, default=SIZE, help=f"output crop in px (default {SIZE})")
    parser.add_argument("--resize-short", type=int, default=RESIZE_SHORT,
                        help=f"short side of the re-encoded set, 0 to skip it (default {RESIZE_SHORT})")
    parser.add_argument("--crop-scale", default=",".join(map(str, CROP_SCALE)), help="area range lo,hi (default 0.08,1.0)")
    parser.add_argument("--dir", type=Path, help="keep the generated JPEGs here (reused next time) instead of a temp dir")
    parser.add_argument("--data", type=Path, help="use this prepared dataset (DATA/train/<class>/*.jpg or *.JPEG) instead")
    parser.add_argument("--device", default="cpu", help="cuda adds GPU JPEG decoding (default cpu: CPU pipelines only)")
    args = parser.parse_args()
    scale = tuple(float(v) for v in args.crop_scale.split(","))
    device = pick_device(args.device)

    torch.set_num_threads(1)   # what a DataLoader worker gets
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        sets = {}
        if args.data:
            sets[f"{args.data}"] = args.data
        else:
            full = make_jpeg_folder(work / "full", args.images)
            sets["full-size (~500x375, q90)"] = full
            if args.resize_short:
                sets[f"resize-short {args.resize_short}"] = resize_short_copy(full, work / f"short{args.resize_short}",
                                                                               args.resize_short)
        from trainer.decode import jpeg_decoder

        print(f"machine: {machine(device)}; torch threads: 1 (one worker)")
        print(f"ours: JPEG crops decoded {jpeg_decoder()}")
        print(f"{args.images} images per set, output {args.size} px, crop scale {scale}, {args.reps} interleaved reps\n")
        rows, ratios = [], []
        for name, root in sets.items():
            results = cpu_pipelines(root, args.size, scale, args.reps)
            base, ours, ours_float = (results[k] for k in list(results)[:3])
            for pipeline, values in results.items():
                rows.append([name, pipeline, spread(values)])
            ratios.append((f"ours/ImageFolder per worker, {name}, {args.size} px", paired_ratio(ours, base)))
            ratios.append((f"ours + CPU normalise/ImageFolder per worker, {name}, {args.size} px",
                           paired_ratio(ours_float, base)))
            if WHOLE in results:
                ratios.append((f"ours/ours with whole-image decoding (trainer._jpegcrop off), {name}, {args.size} px",
                               paired_ratio(ours, results[WHOLE])))
            if device.type == "cuda":
                gpu = gpu_decode(root, args.size, scale, args.reps, device)
                rows.append([name, "GPU decode_jpeg (whole process)", spread(gpu)])
                # Not paired: the GPU runs come after all the CPU ones, so this is a ratio of medians.
                ratios.append((f"GPU decode (one process)/ImageFolder per worker, {name}, ratio of the medians "
                               f"of separate runs", median(gpu) / median(base)))
        print_table(["images", "pipeline", "images/s per worker: median (min-max)"], rows)
        print()
        for label, ratio in ratios:
            print_ratio(label, ratio)
        print("(each CPU ratio: the median over repetitions of ours/baseline measured back to back"
              + ("; the GPU ratio: median GPU run over median baseline run, not back to back)" if device.type == "cuda"
                 else ")"))


if __name__ == "__main__":
    main()
