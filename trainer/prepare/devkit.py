"""ImageNet labels: the ILSVRC2012 devkit (meta.mat + val ground truth) and Kaggle's CSV files.

torchvision.datasets.imagenet has the same parsing, but not in a form we can call: its
`parse_meta_mat` and `parse_val_groundtruth_txt` are local functions inside
`parse_devkit_archive`, which first demands the canonical archive's MD5 (re-packed class copies
fail it), extracts the whole devkit to a temp dir and saves the result with torch.save. We read
the same two files straight from the archive (or the extracted folder) with the same
scipy.io.loadmat call and the same leaf-synset rule (num_children == 0).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from trainer.prepare.catalog import SourceError

VAL_NAME = "ILSVRC2012_val_{:08d}.JPEG"
AGAIN = "download it again from the official source (nothing was written)"


@dataclass(frozen=True)
class Labels:
    """Class names and the class of every val image (by file name)."""

    names: dict[str, str]        # wnid -> "tench, Tinca tinca"
    val: dict[str, str]          # "ILSVRC2012_val_00000001.JPEG" -> wnid


def parse_meta_mat(meta_mat: bytes) -> tuple[dict[int, str], dict[str, str]]:
    """(ILSVRC2012_ID -> wnid, wnid -> words) for the 1000 leaf synsets of data/meta.mat.

    The IDs are the devkit's own numbering, not the position in sorted-wnid order, which is why
    the ground-truth file must be read through this map.
    """
    import scipy.io as sio

    try:
        synsets = sio.loadmat(io.BytesIO(meta_mat), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
        names = {str(s["WNID"]): str(s["words"]) for s in leaves}
    except Exception as e:  # scipy's reader raises many kinds on a file that is not a MATLAB file
        raise SourceError(f"the devkit's data/meta.mat is not the ILSVRC2012 one ({type(e).__name__}: {e}); "
                          f"{AGAIN}") from None
    return id_to_wnid, names


def devkit_labels(meta_mat: bytes, ground_truth: bytes) -> Labels:
    """Labels from data/meta.mat and data/ILSVRC2012_validation_ground_truth.txt.

    Line i of the ground truth (1-based) is the ILSVRC2012_ID of ILSVRC2012_val_{i:08d}.JPEG.
    """
    id_to_wnid, names = parse_meta_mat(meta_mat)
    val = {}
    for i, word in enumerate(ground_truth.decode(errors="replace").split(), start=1):
        if not word.isdigit() or int(word) not in id_to_wnid:
            raise SourceError(f"line {i} of the devkit's data/ILSVRC2012_validation_ground_truth.txt is {word[:40]!r}, "
                              f"not a class id that data/meta.mat lists; {AGAIN}")
        val[VAL_NAME.format(i)] = id_to_wnid[int(word)]
    return Labels(names=names, val=val)


def kaggle_labels(synset_mapping: bytes, val_solution: bytes) -> Labels:
    """Labels from LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca") and
    LOC_val_solution.csv (ImageId,PredictionString; the first token of the string is the wnid)."""
    names = {}
    for line in synset_mapping.decode().splitlines():
        if line.strip():
            wnid, _, words = line.strip().partition(" ")
            names[wnid] = words
    val = {}
    for n, row in enumerate(csv.DictReader(io.StringIO(val_solution.decode(errors="replace"))), start=2):
        image, boxes = row.get("ImageId"), (row.get("PredictionString") or "").split()
        if not image or not boxes:
            raise SourceError(f"line {n} of LOC_val_solution.csv has no ImageId or no PredictionString (the columns "
                              f"are ImageId,PredictionString); {AGAIN}")
        val[image + ".JPEG"] = boxes[0]
    return Labels(names=names, val=val)
