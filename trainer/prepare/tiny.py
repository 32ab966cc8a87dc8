"""Find Tiny ImageNet (tiny-imagenet-200.zip, or its extracted folder) and read it class by class.

Layout: wnids.txt (the 200 classes), words.txt (wnid<TAB>names for all of WordNet),
train/<wnid>/images/<wnid>_N.JPEG, val/images/val_N.JPEG with labels in val/val_annotations.txt
(name<TAB>wnid<TAB>box). The unlabelled test/ split is not used. torchvision has no Tiny ImageNet
reader, hence this one.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterator

from trainer.prepare.catalog import Entry, Event, Expect, Selection, Source, SourceError, plain_name, plain_names
from trainer.prepare.trees import DirTree, Tree, ZipTree, zip_prefix

ZIP = "tiny-imagenet-200.zip"


def find_tiny(source: Path) -> Source:
    source = Path(source)
    tree: Tree | None = None
    if (source / ZIP).is_file():
        prefix = zip_prefix(source / ZIP, "wnids.txt")
        if prefix is None:
            raise SourceError(f"{source / ZIP} has no wnids.txt; it is not the Tiny ImageNet zip. Download it again "
                              f"from http://cs231n.stanford.edu/tiny-imagenet-200.zip.")
        tree, path, layout = ZipTree(source / ZIP, prefix), source / ZIP, "tiny-zip"
    else:
        for root in (source, source / "tiny-imagenet-200"):
            if (root / "wnids.txt").is_file():
                tree, path, layout = DirTree(root), root, "tiny-extracted"
                break
    if tree is None:
        raise SourceError(f"No Tiny ImageNet in {source}: looked for {ZIP} or an extracted tiny-imagenet-200/ "
                          f"(with wnids.txt, words.txt, train/, val/).")
    wnids = sorted(plain_names(tree.read("wnids.txt").decode().split(), tree.where("wnids.txt")))
    words = {}
    for line in tree.read("words.txt").decode().splitlines():
        wnid, _, name = line.partition("\t")
        words[wnid] = name.strip()
    names = {w: words.get(w, w) for w in wnids}
    val_labels: dict[str, list[str]] = defaultdict(list)
    for line in tree.read("val/val_annotations.txt").decode().splitlines():
        if line.strip():
            name, tab, rest = line.partition("\t")
            wnid = rest.split("\t")[0]
            if not tab or not wnid:
                raise SourceError(f"{tree.where('val/val_annotations.txt')}: line {line[:60]!r} is not "
                                  "'name<TAB>wnid<TAB>box'; download Tiny ImageNet again (nothing was written).")
            val_labels[wnid].append(plain_name(name, tree.where("val/val_annotations.txt")))

    def entries(sel: Selection) -> Iterator[Event]:
        for cls in sorted(sel.classes):
            for split, folder, listed in (("train", f"train/{cls}/images", None), ("val", "val/images", val_labels[cls])):
                if not sel.wants(split, cls):
                    continue
                if listed is None:
                    listed = plain_names(tree.files(folder), tree.where(folder))
                picked = sel.pick(listed)
                yield Expect(split, cls, tuple(picked))
                for name in picked:
                    yield Entry(split, cls, name, tree.read(f"{folder}/{name}"))

    paths = (path,) if layout == "tiny-zip" else tuple(path / n for n in ("wnids.txt", "words.txt", "train", "val", "test") if (path / n).exists())
    return Source("tiny-imagenet", layout, tuple(wnids), names, paths, entries, (path,) if layout == "tiny-zip" else ())
