"""`trainer prepare`: find the source, check space, write the classes, record dataset.json.

The steps, in order: detect the layout (nothing is written if that fails), optionally check the
archives' MD5s, pick the classes, refuse a DEST started with other options, delete half-written
files of an interrupted run, check free space, write every class not yet complete, write
DEST/dataset.json, and only then (with --delete-source, and only if verify passes) remove the
source files.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from trainer.prepare.catalog import (ARCHIVE_ERRORS, SPLITS, DamagedArchive, Expect, HostileSource, Selection,
                                     Source, SourceError, subset_classes, typical_per_class)
from trainer.prepare.cifar import find_cifar100
from trainer.prepare.folder import find_folder
from trainer.prepare.imagenet import find_imagenet
from trainer.prepare.journal import Journal, write_json
from trainer.prepare.space import SpaceError, check_free_space, estimate_bytes
from trainer.prepare.tiny import find_tiny
from trainer.prepare.writer import Writer

FINDERS: dict[str, Callable[[Path], Source]] = {
    "imagenet": find_imagenet,
    "tiny-imagenet": find_tiny,
    "cifar100": find_cifar100,
}


class PrepareError(Exception):
    """A refusal or failure the user can act on; the message says what was kept and what to run."""


@dataclass(frozen=True)
class PrepareOptions:
    dataset: str
    source: Path
    dest: Path
    subset_percent: float | None = None
    seed: int = 0
    max_per_class: int | None = None
    resize_short: int | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    verify_checksums: bool = False
    delete_source: bool = False
    val_percent: float | None = None   # "folder" only: the share of each class drawn for val/
    resize_short_train: int | None = None   # train/'s short side when it differs from --resize-short's

    def short_side(self, split: str) -> int | None:
        """The short side `split`'s images are stored at; None: as they came."""
        if split == "train" and self.resize_short_train is not None:
            return self.resize_short_train
        return self.resize_short

    @property
    def distinct_train_short(self) -> int | None:
        """--resize-short-train when it changes anything (what the journal and dataset.json record)."""
        t = self.resize_short_train
        return t if t is not None and t != self.resize_short else None


@dataclass(frozen=True)
class PrepareResult:
    dest: Path
    dataset: str
    layout: str
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    images_written: int
    classes_skipped: int          # complete from an earlier run, not redone
    partial_removed: int          # half-written files of an earlier run, deleted
    bytes_written: int
    seconds: float
    deleted: tuple[Path, ...] = ()
    # "split/class/name" of images that did not decode for --resize-short; stored as they came
    undecodable: tuple[str, ...] = ()
    source_paths: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()   # the reader's: files left out, how val/ was drawn


class Reporter(Protocol):
    # classes to write per split, and the typical images per class of each split
    def begin(self, units: dict[str, int], per_class: dict[str, float]) -> None: ...
    def expect(self, images: int, split: str) -> None: ...   # one (split, class)'s count, when known
    def written(self, images: int) -> None: ...
    def verifying(self, total: int) -> None: ...
    def checked(self, images: int) -> None: ...


class QuietReporter:
    def begin(self, units, per_class): pass
    def expect(self, images, split): pass
    def written(self, images): pass
    def verifying(self, total): pass
    def checked(self, images): pass


def usage_problem(opts: PrepareOptions) -> str | None:
    """What is wrong with these options on their own (out of range, or in conflict), or None."""
    p = opts.subset_percent
    if p is not None and not 0 < p <= 100:  # also refuses nan
        return (f"--subset-percent {p:g} is out of range: it is the share of the classes to keep, more than 0 and "
                f"at most 100 (10 keeps a tenth of them; leave the flag out to keep all). Nothing was written.")
    v = opts.val_percent
    if v is not None and opts.dataset != "folder":
        return f"--val-percent is for `trainer prepare folder`; {opts.dataset} comes with its own val split."
    if v is not None and not 0 < v < 100:  # also refuses nan
        return (f"--val-percent {v:g} is out of range: it is the share of each class's images drawn for val/, more "
                f"than 0 and less than 100 (10 is usual). Nothing was written.")
    if opts.max_per_class is not None and opts.max_per_class < 1:
        return (f"--max-per-class {opts.max_per_class} is out of range: it is the most images kept per class and "
                f"split, 1 or more (leave the flag out to keep all). Nothing was written.")
    return delete_source_conflict(opts)


def delete_source_conflict(opts: PrepareOptions) -> str | None:
    """Why --delete-source cannot go with these options, or None.

    --delete-source removes the whole download, and verify can only vouch for what was written:
    with a subset or a per-class limit the rest of the download would be lost with it.
    """
    if not opts.delete_source:
        return None
    partial = []
    if opts.subset_percent is not None and opts.subset_percent < 100:
        partial.append(f"--subset-percent {opts.subset_percent:g} keeps only that share of the classes")
    if opts.max_per_class is not None:
        partial.append(f"--max-per-class {opts.max_per_class} keeps at most that many images per class")
    if not partial:
        return None
    return (f"--delete-source removes the whole download, but {' and '.join(partial)}, so the images left out "
            f"would be lost with it. Nothing was written. Rerun without --delete-source (and delete the download "
            f"yourself once you no longer need the full set), or without the option that keeps only part.")


def prepare(opts: PrepareOptions, report: Reporter = QuietReporter()) -> PrepareResult:
    start = time.perf_counter()
    problem = usage_problem(opts)
    if problem:
        raise PrepareError(problem)
    try:
        if opts.dataset == "folder":  # the one reader that draws a split, so it takes its options
            source = find_folder(opts.source, opts.val_percent, opts.seed, opts.dest)
        else:
            source = FINDERS[opts.dataset](opts.source)
    except SourceError as exc:
        refused = isinstance(exc, (DamagedArchive, HostileSource))
        raise PrepareError(str(exc) + (" Nothing was written." if refused else "")) from None
    if opts.verify_checksums:
        _verify_checksums(source)
    try:
        selected = subset_classes(source.classes, opts.subset_percent, opts.seed)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None

    journal = Journal(opts.dest)
    options = {
        "dataset": source.dataset,
        "classes": list(selected),
        "max_per_class": opts.max_per_class,
        "resize_short": opts.resize_short,
        "subset": {"percent": opts.subset_percent, "seed": opts.seed} if opts.subset_percent else None,
    }
    if opts.distinct_train_short is not None:  # only then: a run started before this option still resumes
        options["resize_short_train"] = opts.distinct_train_short
    options.update(source.recorded)
    _check_dest(opts.dest, journal, options)
    done = {k: n for k, n in journal.done().items() if k[1] in selected}
    removed = journal.clean_partial(done)

    units = len(SPLITS) * len(selected)
    share = len(selected) / len(source.classes) * (units - len(done)) / units
    need = estimate_bytes(source.size_bytes, source.full_counts, share, opts.max_per_class,
                          {s: opts.short_side(s) for s in SPLITS})
    try:
        check_free_space(opts.dest, need)
    except SpaceError as exc:
        raise PrepareError(str(exc)) from None
    journal.start(options)

    report.begin({s: sum(1 for c in selected if (s, c) not in done) for s in SPLITS},
                 typical_per_class(source.full_counts, opts.max_per_class))
    writer = Writer(opts.dest, journal, {s: opts.short_side(s) for s in SPLITS}, max(1, opts.workers),
                    on_written=lambda split, n: report.written(n))
    selection = Selection(frozenset(selected), opts.max_per_class, frozenset(done))
    try:
        for event in source.entries(selection):
            if isinstance(event, Expect):
                report.expect(len(event.names), event.split)
            writer.handle(event)
        missing = writer.finish()
    except (SourceError, *ARCHIVE_ERRORS) as exc:
        what = str(exc) if isinstance(exc, SourceError) else (
            f"An archive of {', '.join(str(p) for p in source.paths)} is damaged or incomplete "
            f"({type(exc).__name__}: {exc}). Download it again.")
        complete = sum(1 for k in journal.done() if k[1] in selected)
        raise PrepareError(f"{what} The {complete} class folders already complete are kept in {opts.dest} (nothing "
                           f"was written outside it); once the download is whole, rerun the same command: it skips "
                           f"them.") from exc
    finally:
        writer.close()

    finished = {k: n for k, n in journal.done().items() if k[1] in selected}
    absent = [f"{s}/{c}" for s in SPLITS for c in selected if (s, c) not in finished]
    if missing or absent:
        lines = [f"{s}/{c}: {n} images not found in the source" for (s, c), n in sorted(missing.items())]
        lines += [f"{u}: no images in the source" for u in absent if tuple(u.split("/")) not in missing]
        raise PrepareError(
            f"{len(absent)} of {units} class folders are incomplete because the source lacks images:\n  "
            + "\n  ".join(lines[:10]) + ("\n  ..." if len(lines) > 10 else "")
            + f"\nThe {len(finished)} complete ones are kept in {opts.dest}. Fix the source (download it again) "
              f"and rerun the same command; it resumes."
        )

    counts = {s: {c: finished[(s, c)] for c in selected} for s in SPLITS}
    meta = {
        "schema": 1,
        "dataset": source.dataset,
        "classes": list(selected),
        "names": {c: source.names.get(c, c) for c in selected},
        "counts": counts,
        "source_layout": source.layout,
        "subset": options["subset"],
        "max_per_class": opts.max_per_class,
        "resize_short": opts.resize_short,              # val's; train's too unless resize_short_train
        "resize_short_train": opts.distinct_train_short,
    }
    meta.update(source.recorded)
    write_json(Path(opts.dest) / "dataset.json", meta)

    deleted: tuple[Path, ...] = ()
    if opts.delete_source:
        deleted = _delete_source_if_verified(source, opts, report)
    return PrepareResult(
        dest=Path(opts.dest), dataset=source.dataset, layout=source.layout, classes=selected, counts=counts,
        images_written=_images_written(counts, done), classes_skipped=len(done),
        partial_removed=removed, bytes_written=writer.bytes_written, seconds=time.perf_counter() - start,
        deleted=deleted, undecodable=tuple(sorted(writer.undecodable)), source_paths=source.paths,
        notes=source.notes,
    )


def _images_written(counts, done) -> int:
    return sum(n for s in SPLITS for c, n in counts[s].items() if (s, c) not in done)


def _check_dest(dest: Path, journal: Journal, options: dict) -> None:
    dest = Path(dest)
    if journal.started():
        before = journal.options()
        if before != options:
            changed = sorted(k for k in options.keys() | before.keys() if before.get(k) != options.get(k))
            raise PrepareError(
                f"{dest} was started by an earlier `trainer prepare` with other options ({', '.join(changed)} "
                f"differ). Its files are kept. Rerun with the same options to finish it, or pick a new --dest "
                f"(or delete {dest}) to start over."
            )
    elif dest.exists() and any(dest.iterdir()):
        raise PrepareError(f"{dest} is not empty and was not made by `trainer prepare`; nothing was written there. "
                           f"Pick an empty or new --dest.")


def _verify_checksums(source: Source) -> None:
    from trainer.prepare.checksums import mismatches

    if not source.canonical:
        raise PrepareError(f"--verify-checksums: the {source.layout} layout has no published checksums; "
                           f"leave the flag out.")
    bad = mismatches(source.canonical)
    if bad:
        raise PrepareError("Checksums differ from the published ones (nothing was written):\n  " + "\n  ".join(bad)
                           + "\nDownload the archive again; or, for a re-packed copy you trust, rerun without "
                             "--verify-checksums.")


def _delete_source_if_verified(source: Source, opts: PrepareOptions, report: Reporter) -> tuple[Path, ...]:
    from trainer.prepare.verify import verify_dataset

    result = verify_dataset(opts.dest, workers=max(1, opts.workers), on_total=report.verifying,
                            on_checked=report.checked)
    if not result.ok:
        raise PrepareError(
            "The result did not verify, so --delete-source kept the source:\n  " + "\n  ".join(result.problems)
            + f"\nSee `trainer verify --data {opts.dest}`."
        )
    for path in source.paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return source.paths
