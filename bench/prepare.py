"""Benchmark: `trainer prepare imagenet --resize-short` against a plain extract-and-move.

Run:  .venv/bin/python bench/prepare.py                  # ~1 minute: 1,500 images, 15 classes
      .venv/bin/python bench/prepare.py --images 20000 --classes 100 --workers 8

It builds a miniature ImageNet in the official layout (ILSVRC2012_img_train.tar holding one
nXXXXXXXX.tar per class, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz) from real
photographs that scikit-image ships, cropped, flipped and resized to ImageNet's typical 500x375,
JPEG quality 90. Then, in the same run and on the same files:

  baseline   one process: extract the train tar, extract each class tar into its folder and
             delete it, extract the val tar and move each image into its class folder (what
             torchvision's parse_train_archive / parse_val_archive and most copied scripts do)
  prepare    the `prepare()` that `trainer prepare imagenet` calls, with --resize-short and
             --workers (streaming, re-encoding in a process pool); and, for reference, without
             --resize-short (streaming the bytes unchanged)

and prints the rates in images/s and their ratios, repetitions interleaved (`--reps`). It also times decoding (PIL open, convert to
RGB) of the resized files against the full-size ones: the gain every training epoch sees.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# skimage.data photographs bundled with the package (no download needed); others are skipped.
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "motorcycle_left", "cat", "colorwheel"]


def photographs() -> list[Image.Image]:
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            pixels = getattr(skimage.data, name)()
        except Exception:  # not bundled in this version, or needs a download: skip it
            continue
        if pixels.ndim == 3 and pixels.shape[2] >= 3:
            out.append(Image.fromarray(np.ascontiguousarray(pixels[..., :3])))
    if not out:
        raise SystemExit("scikit-image ships no colour photographs here; install scikit-image.")
    return out


def imagenet_like_jpeg(photos: list[Image.Image], rng: random.Random) -> bytes:
    """A random crop of a photo, maybe mirrored, at 500x375 or 375x500, JPEG quality 90."""
    img = rng.choice(photos)
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    size = (500, 375) if rng.random() < 0.8 else (375, 500)
    crop = img.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_source(root: Path, n_images: int, n_classes: int, seed: int = 0) -> int:
    """The three official archives under `root`; returns the number of images (train + val)."""
    import scipy.io as sio

    rng = random.Random(seed)
    photos = photographs()
    wnids = [f"n{1440764 + 37 * i:08d}" for i in range(n_classes)]
    n_val = max(n_classes, n_images // 20)
    per_class = (n_images - n_val) // n_classes
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid in wnids:
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for k in range(per_class):
                    _add(inner, f"{wnid}_{k}.JPEG", imagenet_like_jpeg(photos, rng))
            _add(outer, f"{wnid}.tar", inner_bytes.getvalue())
    ids = list(range(1, n_classes + 1))
    rng.shuffle(ids)   # devkit ids are not in sorted-wnid order
    labels = [rng.randrange(n_classes) for _ in range(n_val)]
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(1, n_val + 1):
            _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", imagenet_like_jpeg(photos, rng))
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.empty((n_classes, 1), dtype=[(f, "O") for f in fields])
    for i, wnid in enumerate(wnids):
        for f, v in zip(fields, (ids[i], wnid, f"class {i}", "", 0, np.zeros(0), 0, per_class)):
            synsets[i, 0][f] = v
    mat = io.BytesIO()
    sio.savemat(mat, {"synsets": synsets})
    truth = "".join(f"{ids[c]}\n" for c in labels).encode()
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)
    return per_class * n_classes + n_val


def baseline_extract_and_move(source: Path, dest: Path) -> int:
    """Single process, no re-encode: untar, untar each class tar, move val images by label."""
    from trainer.prepare.devkit import devkit_labels

    train = dest / "train"
    train.mkdir(parents=True)
    with tarfile.open(source / "ILSVRC2012_img_train.tar") as tar:
        tar.extractall(train, filter="data")
    count = 0
    for class_tar in sorted(train.glob("*.tar")):
        with tarfile.open(class_tar) as tar:
            tar.extractall(train / class_tar.stem, filter="data")
        class_tar.unlink()
        count += len(os.listdir(train / class_tar.stem))
    val = dest / "val"
    val.mkdir()
    with tarfile.open(source / "ILSVRC2012_img_val.tar") as tar:
        tar.extractall(val, filter="data")
    with tarfile.open(source / "ILSVRC2012_devkit_t12.tar.gz") as tar:
        meta = tar.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()
        gt = tar.extractfile("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").read()
    for name, wnid in devkit_labels(meta, gt).val.items():
        (val / wnid).mkdir(exist_ok=True)
        shutil.move(val / name, val / wnid / name)
        count += 1
    return count


def decode_seconds(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as img:
            img.convert("RGB")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1500, help="train + val images in the miniature")
    parser.add_argument("--classes", type=int, default=15)
    parser.add_argument("--resize-short", type=int, default=160)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=3,
                        help="interleaved repetitions (default 3); each ratio is the median of per-repetition ratios")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir, removed)")
    args = parser.parse_args()

    from _common import interleaved, paired_ratio, print_ratio, spread
    from trainer.prepare.run import PrepareOptions, prepare

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        source = work / "src"
        source.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        n = build_source(source, args.images, args.classes)
        size = sum(p.stat().st_size for p in source.iterdir())
        print(f"built {n:,} ImageNet-like JPEGs ({size / 1e6:,.0f} MB, official layout) in {time.perf_counter() - t:.1f} s")

        def fresh(name: str) -> Path:
            dest = work / name
            shutil.rmtree(dest, ignore_errors=True)   # every repetition starts from nothing (no resume)
            return dest

        written: dict[str, int] = {}

        # Each run clears the previous repetition's output before its clock starts.
        def baseline() -> float:
            dest = fresh("baseline")
            t = time.perf_counter()
            moved = baseline_extract_and_move(source, dest)
            return moved / (time.perf_counter() - t)

        def resized() -> float:
            opts = PrepareOptions(dataset="imagenet", source=source, dest=fresh("prepared"),
                                  resize_short=args.resize_short, workers=args.workers)
            t = time.perf_counter()
            result = prepare(opts)
            written["bytes"] = result.bytes_written
            return result.images_written / (time.perf_counter() - t)

        def plain() -> float:
            opts = PrepareOptions(dataset="imagenet", source=source, dest=fresh("plain"), workers=1)
            t = time.perf_counter()
            result = prepare(opts)
            return result.images_written / (time.perf_counter() - t)

        runs = {
            "baseline extract-and-move (1 process, no re-encode)": baseline,
            f"prepare --resize-short {args.resize_short} --workers {args.workers}": resized,
            "prepare without --resize-short (1 worker, bytes as they are)": plain,
        }
        results = interleaved(runs, args.reps)
        base, prep, unchanged = results.values()

        full = sorted((work / "baseline" / "train").glob("*/*.JPEG"))[:300]
        small = [work / "prepared" / "train" / p.parent.name / p.name for p in full]
        full_s, small_s = decode_seconds(full), decode_seconds(small)

        print(f"cpus: {os.cpu_count()}, workers: {args.workers}, {args.reps} interleaved repetitions "
              f"({written.get('bytes', 0) / 1e6:,.0f} MB written with --resize-short vs {size / 1e6:,.0f} MB)")
        for name, values in results.items():
            print(f"  {name}: {spread(values)} images/s")
        print_ratio("prepare --resize-short / baseline", paired_ratio(prep, base))
        print_ratio("prepare without --resize-short / baseline", paired_ratio(unchanged, base))
        print_ratio("decode (PIL open + RGB) resized / full-size files", full_s / small_s,
                    f"{len(full)} files: {full_s * 1e3 / len(full):.2f} against {small_s * 1e3 / len(full):.2f} ms/image, "
                    "the gain every training epoch sees")
        print("(each prepare ratio: the median over repetitions of the two rates measured back to back)")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
