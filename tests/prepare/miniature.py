"""Miniature copies of the real downloads: same file names, same nesting, a few tiny images.

Each builder writes the files into a folder and returns `Truth`: every image the prepared result
must hold, as {(split, class, file name): bytes}, plus the class names.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Six leaf synsets. The devkit numbers them in its own order (not sorted wnid order), and lists
# two non-leaf synsets after them, as the real meta.mat does.
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]
WORDS = {
    "n01440764": "tench, Tinca tinca",
    "n01443537": "goldfish, Carassius auratus",
    "n01484850": "great white shark, white shark, man-eater",
    "n01491361": "tiger shark, Galeocerdo cuvieri",
    "n01494475": "hammerhead, hammerhead shark",
    "n01496331": "electric ray, crampfish, numbfish, torpedo",
}
DEVKIT_ID = {"n01496331": 1, "n01443537": 2, "n01491361": 3, "n01440764": 4, "n01494475": 5, "n01484850": 6}
TRAIN_PER_CLASS = [4, 3, 5, 3, 4, 3]   # plus the two odd files of n01443537
VAL_LABELS = [WNIDS[i % 6] for i in (0, 1, 2, 3, 4, 5, 3, 1, 0, 5, 2, 4, 0, 3)]   # 14 val images


@dataclass(frozen=True)
class Truth:
    images: dict[tuple[str, str, str], bytes]
    names: dict[str, str]

    @property
    def classes(self) -> list[str]:
        return sorted(self.names)


def jpeg(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            _add(tar, name, data)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def meta_mat(renamed: dict[str, str] | None = None) -> bytes:
    """data/meta.mat in the devkit's struct layout (a 1-D struct array named `synsets`); `renamed`
    {wnid: WNID to store instead} gives a leaf another id (a hostile one, in a test)."""
    import scipy.io as sio

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    renamed = renamed or {}
    rows = [(DEVKIT_ID[w], renamed.get(w, w), WORDS[w], "a fish", 0, np.zeros((0,), dtype=np.uint8), 0, 1300)
            for w in sorted(WNIDS, key=DEVKIT_ID.get)]
    rows += [(7, "n01473806", "aquatic vertebrate", "a group", 2, np.array([1, 2], dtype=np.uint8), 1, 0),
             (8, "n00001740", "entity", "everything", 1, np.array([7], dtype=np.uint8), 2, 0)]
    synsets = np.empty((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f, v in zip(fields, row):
            synsets[i, 0][f] = v
    out = io.BytesIO()
    sio.savemat(out, {"synsets": synsets})
    return out.getvalue()


def odd_files() -> dict[str, bytes]:
    """Real ImageNet's oddities: CMYK JPEGs (22 of them) and one PNG named .JPEG."""
    cmyk, png = io.BytesIO(), io.BytesIO()
    Image.open(io.BytesIO(jpeg(555))).convert("CMYK").save(cmyk, format="JPEG", quality=90)
    Image.open(io.BytesIO(jpeg(556))).save(png, format="PNG")
    return {"n01443537_cmyk.JPEG": cmyk.getvalue(), "n01443537_png.JPEG": png.getvalue()}


def _imagenet_images() -> Truth:
    images = {}
    seed = 0
    for wnid, n in zip(WNIDS, TRAIN_PER_CLASS):
        for k in range(n):
            seed += 1
            images[("train", wnid, f"{wnid}_{1000 + 7 * k}.JPEG")] = jpeg(seed)
    images.update({("train", "n01443537", name): data for name, data in odd_files().items()})
    for i, wnid in enumerate(VAL_LABELS, start=1):
        images[("val", wnid, f"ILSVRC2012_val_{i:08d}.JPEG")] = jpeg(1000 + i)
    return Truth(images, dict(WORDS))


def make_imagenet(root: Path, layout: str) -> Truth:
    """layout: "archives", "extracted", "kaggle-zip" or "kaggle-dir"."""
    root.mkdir(parents=True, exist_ok=True)
    truth = _imagenet_images()
    train = {k: v for k, v in truth.images.items() if k[0] == "train"}
    val = {k: v for k, v in truth.images.items() if k[0] == "val"}
    if layout in ("archives", "extracted"):
        ground_truth = "".join(f"{DEVKIT_ID[w]}\n" for w in VAL_LABELS).encode()
        devkit = {"ILSVRC2012_devkit_t12/data/meta.mat": meta_mat(),
                  "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": ground_truth,
                  "ILSVRC2012_devkit_t12/readme.txt": b"devkit"}
        class_tars = {f"{w}.tar": _tar_bytes({n: d for (_, c, n), d in train.items() if c == w})
                      for w in reversed(WNIDS)}   # the outer tar is not in sorted order either
        # A copy re-packed on a Mac carries AppleDouble "._" files; they are not images.
        class_tars["n01440764.tar"] = _tar_bytes({"._n01440764_1000.JPEG": b"\x00\x05\x16\x07 junk",
                                                  **{n: d for (_, c, n), d in train.items() if c == "n01440764"}})
        if layout == "archives":
            (root / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(class_tars))
            (root / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes({n: d for (_, _, n), d in val.items()}))
            with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
                for name, data in devkit.items():
                    _add(tar, name, data)
        else:
            _write_all(root / "ILSVRC2012_img_train", class_tars)
            _write_all(root / "ILSVRC2012_img_val", {n: d for (_, _, n), d in val.items()})
            _write_all(root, devkit)
        return truth
    members = {
        "LOC_synset_mapping.txt": "".join(f"{w} {WORDS[w]}\n" for w in WNIDS).encode(),
        "LOC_val_solution.csv": ("ImageId,PredictionString\n" + "".join(
            f"{n[:-5]},{c} 10 20 30 40 {c} 1 2 3 4 \n" for (_, c, n) in val)).encode(),
        "LOC_train_solution.csv": b"ImageId,PredictionString\n",
        "LOC_sample_submission.csv": b"ImageId,PredictionString\n",
        "ILSVRC/Data/CLS-LOC/test/ILSVRC2012_test_00000001.JPEG": jpeg(99999),
        "ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_00000001.xml": b"<annotation/>",
    }
    members.update({f"ILSVRC/Data/CLS-LOC/train/{c}/{n}": d for (_, c, n), d in train.items()})
    members.update({f"ILSVRC/Data/CLS-LOC/val/{n}": d for (_, _, n), d in val.items()})
    if layout == "kaggle-zip":
        with zipfile.ZipFile(root / "imagenet-object-localization-challenge.zip", "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        _write_all(root, members)
    return truth


def make_tiny(root: Path, zipped: bool) -> Truth:
    wnids = WNIDS[:4]
    names = {w: WORDS[w] for w in wnids}
    images, files = {}, {}
    files["wnids.txt"] = "".join(f"{w}\n" for w in reversed(wnids)).encode()
    files["words.txt"] = "".join(f"{w}\t{WORDS[w]}\n" for w in WNIDS).encode() + b"n00001740\tentity\n"
    seed = 2000
    for w in wnids:
        for k in range(3):
            seed += 1
            images[("train", w, f"{w}_{k}.JPEG")] = files[f"train/{w}/images/{w}_{k}.JPEG"] = jpeg(seed, (64, 64))
        files[f"train/{w}/{w}_boxes.txt"] = b""
    lines = []
    for i in range(8):
        w = wnids[(i * 3) % 4]
        images[("val", w, f"val_{i}.JPEG")] = files[f"val/images/val_{i}.JPEG"] = jpeg(3000 + i, (64, 64))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t1\t60\t62\n")
    files["val/val_annotations.txt"] = "".join(lines).encode()
    files["test/images/test_0.JPEG"] = jpeg(4000, (64, 64))
    root.mkdir(parents=True, exist_ok=True)
    if zipped:
        with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as zf:
            zf.writestr("tiny-imagenet-200/", b"")   # the real zip lists its folders too
            for name, data in files.items():
                zf.writestr(f"tiny-imagenet-200/{name}", data)
    else:
        _write_all(root / "tiny-imagenet-200", files)
    return Truth(images, names)


CIFAR_CLASSES = ["apple", "aquarium_fish", "baby", "bear", "beaver"]


def make_cifar100(root: Path, same_names: dict[int, str] | None = None
                  ) -> tuple[dict[tuple[str, str, str], np.ndarray], list[str]]:
    """Returns {(split, class, name): 32x32x3 pixels} and the fine label names.

    `same_names` {train row: file name} renames rows, e.g. to give two rows of a class one name;
    the expected names are then the ones prepare must write for them."""
    rng = np.random.default_rng(7)
    expected, blobs = {}, {}
    blobs["meta"] = pickle.dumps({"fine_label_names": CIFAR_CLASSES, "coarse_label_names": ["fruit", "fish", "people", "mammals"]})
    for file, split, n in (("train", "train", 15), ("test", "val", 10)):
        data = rng.integers(0, 255, (n, 3072), dtype=np.uint8)
        labels = [i % len(CIFAR_CLASSES) for i in range(n)]
        filenames = [f"{CIFAR_CLASSES[l]}_s_{100 + i:06d}.png" for i, l in enumerate(labels)]
        expected_names = list(filenames)
        if file == "train" and same_names:
            for row, name in same_names.items():
                filenames[row] = name
                expected_names[row] = name.replace(".png", f"-row{row}.png")
        blobs[file] = pickle.dumps({"filenames": filenames, "batch_label": f"{file} batch", "fine_labels": labels,
                                    "coarse_labels": [0] * n, "data": data})
        for row, label, name in zip(data, labels, expected_names):
            expected[(split, CIFAR_CLASSES[label], name)] = row.reshape(3, 32, 32).transpose(1, 2, 0)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, data in blobs.items():
            _add(tar, f"cifar-100-python/{name}", data)
        _add(tar, "cifar-100-python/file.txt~", b"")
    return expected, CIFAR_CLASSES


def _write_all(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
