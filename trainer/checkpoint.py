"""Checkpoints: what one holds, atomic writes with a `.sha256` beside each file, and resuming.

Saving `last.pt` first moves the previous one to `last.prev.pt`, so a checkpoint that is torn or
corrupted later (disk full, a killed copy) still leaves one good file to resume from.

`training_state` builds the payload and `resume` reads it back: they sit together so the format
has one definition (FORMAT_VERSION; a key is only ever added, and `resume` fills in what an older
file lacks). `inference.load_model` reads the run's part (config, classes, stem, mean/std, eval size).

A checkpoint is read as data only (`torch.load(weights_only=True)`): it may come from a machine
that is no longer trusted (a cloud instance's best.pt fetched to a laptop), and an unrestricted
pickle runs whatever it names. So the payload holds only tensors, numbers, strings, lists and
dicts, and `load_untrusted` refuses a file that asks for anything else.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import TrainConfig, to_dict
from trainer.engine import load_optimizer_state, unwrap
from trainer.errors import EXIT_BAD_INPUT, EXIT_DISK, TrainerError, UnsafeFileError
from trainer.models import stem_of_weights

log = logging.getLogger("trainer")

FORMAT_VERSION = 1
# What resuming needs beyond the weights, class list and config (`trainer train` has written them all
# since the first format; what was added since is filled in by `resume`).
RESUME_KEYS = ("config", "optimizer", "epoch", "step_in_epoch", "best_top1", "partial", "rng")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(payload: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Write `payload` to `path` atomically with `path.sha256` ("<hex>  <name>\\n", sha256sum format).

    keep_previous: move the current file (and its digest) to `<stem>.prev.pt` first.
    A file and its digest are replaced as a pair: the old digest is removed before the file is
    renamed, and the new one written after it, so a kill at any point leaves each file either with
    its own digest or with none (which `verify` accepts), never beside another file's.
    On a write error (disk full) the previous files are left as they were and TrainerError(EXIT_DISK)
    is raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    sha_path = _sha_path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            old_digest = _read_digest(sha_path) if path.exists() else ""
            if keep_previous:
                _sha_path(previous_path(path)).unlink(missing_ok=True)
            sha_path.unlink(missing_ok=True)
            if keep_previous and path.exists():
                prev = previous_path(path)
                os.replace(path, prev)
                if old_digest:
                    _write_atomic(_sha_path(prev), f"{old_digest}  {prev.name}\n".encode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _write_atomic(sha_path, f"{digest}  {path.name}\n".encode())
    except OSError as exc:
        raise TrainerError(
            f"could not write checkpoint {path}: {exc.strerror or exc}. The previous checkpoint in {path.parent} "
            f"was kept. Free disk space (df -h {path.parent}) and resume with `trainer train ... --resume auto`.",
            EXIT_DISK,
        ) from exc


def _sha_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_digest(sha_path: Path) -> str:
    """The hex digest in a .sha256 file; "" when there is none."""
    try:
        text = sha_path.read_text().split()
    except FileNotFoundError:
        return ""
    return text[0] if text else ""


def previous_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def verify(path: Path) -> str | None:
    """None when `path` matches its .sha256 (or has none); otherwise why it does not."""
    sha_path = _sha_path(path)
    if not sha_path.exists():
        return None
    expected = _read_digest(sha_path)
    actual = sha256_file(path)
    return None if actual == expected else f"sha256 mismatch (file {actual[:12]}..., {sha_path.name} {expected[:12]}...)"


def load_untrusted(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load` of data only: tensors, numbers, strings, lists, dicts. UnsafeFileError for a file
    whose pickle asks for anything else (it would run code if loaded unrestricted); TrainerError for
    one that cannot be read at all. `what` names the file's role in the message ("checkpoint")."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a torn or foreign file
        raise unreadable(exc, what, path) from exc


def unreadable(exc: Exception, what: str, path: Path) -> TrainerError:
    """The error for a file `torch.load(..., weights_only=True)` raised `exc` on."""
    # torch's weights-only unpickler names what it refused as "GLOBAL module.name" (every torch
    # since 2.0). Only that dotted name is repeated: the rest is the file's text (it could hold
    # terminal control sequences) and torch's advice to load the file unrestricted.
    refused = re.search(r"GLOBAL ([\w.]+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    if refused is None:   # a torn or foreign file (an opcode it does not know is one too)
        return TrainerError(f"{what} {path} cannot be read as PyTorch weights ({type(exc).__name__}: "
                            f"{_first_line(exc)}).")
    return UnsafeFileError(
        f"{what} {path} was refused: reading it would call {refused.group(1)}, which a file of weights never needs "
        f"(it holds only tensors, numbers, strings, lists and dicts), so it may have been tampered with. It was not "
        f"loaded and nothing in it ran. Use a copy you trust, such as one from the machine that made it. (A file "
        f"saved by another tool may hold that tool's own objects: where you trust it, load it and save only its "
        f"weights, `torch.save(model.state_dict(), PATH)`.)")


def _first_line(exc: Exception) -> str:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return "".join(c if c.isprintable() else "?" for c in line)[:300]


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check one checkpoint file; TrainerError if it is missing, corrupt or not ours,
    UnsafeFileError if it asks to run code."""
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f"checkpoint {path} does not exist. Training writes OUT/checkpoints/last.pt and best.pt.")
    problem = verify(path)
    if problem:
        raise TrainerError(f"checkpoint {path} is corrupt: {problem}.")
    payload = load_untrusted(path, "checkpoint", map_location)
    problem = _not_a_checkpoint(payload)
    if problem:
        raise TrainerError(f"{path} is not a checkpoint of `trainer train`: {problem}. " + _NOT_OURS_ADVICE.format(path))
    return payload


_NOT_OURS_ADVICE = ("Evaluating, predicting, exporting and resuming need the class list and settings `trainer train` "
                    "saves beside the weights; to start a new run from its weights: `trainer train ... --init-weights {}`.")


def _not_a_checkpoint(payload: Any) -> str:
    """Why `payload` is not what `training_state` writes ("" when it is)."""
    if not isinstance(payload, dict):
        return f"it holds a {type(payload).__name__}, not a dict"
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return "it holds only weights (a state_dict)"
    missing = [k for k in ("model", "classes") if k not in payload]
    if missing:
        return f"it has no {' or '.join(repr(k) for k in missing)} entry"
    if not isinstance(payload["model"], dict):
        return "its 'model' is not a state_dict"
    if not isinstance(payload["classes"], list) or not all(isinstance(c, str) for c in payload["classes"]):
        return "its 'classes' is not a list of names"
    return ""


def require(payload: dict[str, Any], keys: tuple[str, ...], source: Path, purpose: str) -> None:
    """TrainerError naming what `purpose` needs and `payload` lacks (an "config" that is not a dict
    counts as lacking: nothing can be rebuilt from it)."""
    missing = [k for k in keys if k not in payload or (k == "config" and not isinstance(payload[k], dict))]
    if missing:
        raise TrainerError(f"checkpoint {source} has no {', '.join(repr(k) for k in missing)}, which {purpose} needs: "
                           f"it was not written by `trainer train`, or was edited since. "
                           + _NOT_OURS_ADVICE.format(source))


def load_latest(checkpoint_dir: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest good checkpoint among last.pt and last.prev.pt; None when there is none at all.

    A corrupt last.pt is reported and skipped (its bytes are kept as last.pt.corrupt for a post-mortem).
    """
    candidates = [checkpoint_dir / "last.pt", previous_path(checkpoint_dir / "last.pt")]
    existing = [p for p in candidates if p.exists()]
    if not existing:
        return None
    problems = []
    for path in existing:
        try:
            return load(path, map_location), path
        except UnsafeFileError as exc:
            raise UnsafeFileError(
                f"{exc.message} Nothing in {checkpoint_dir} was changed. If you trust the rest of the run folder, "
                f"delete {path.name} and resume again (`--resume auto` then continues from "
                f"{previous_path(path).name} when it is there), or start over with a new --out directory.") from exc
        except TrainerError as exc:
            problems.append(exc.message)
            # Move it aside so the next save does not rotate it over the good previous file.
            corrupt = path.with_name(path.name + ".corrupt")
            os.replace(path, corrupt)
            log.warning("%s Moved it to %s; falling back to the previous checkpoint.", exc.message, corrupt.name)
    raise TrainerError(
        "no usable checkpoint in " + str(checkpoint_dir) + ": " + " ".join(problems)
        + " Start over with a new --out directory, or with `--resume none` to overwrite this one.",
        EXIT_BAD_INPUT,
    )


def load_weights(model: nn.Module, state: dict[str, Any], source: Path, advice: str) -> None:
    """`model.load_state_dict`, with a message instead of a traceback when the checkpoint's tensors do
    not fit: a resume with another width or depth, or a file edited since (a class list that no
    longer matches its classifier). `advice` says what to do."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        # torch's first line names the model class; the next name the mismatched tensors.
        shown = [_first_line(Exception(line)).rstrip(".") for line in str(exc).splitlines()[1:] if line.strip()][:2]
        raise TrainerError(f"checkpoint {source}: its weights do not fit the model built for them "
                           f"({'; '.join(shown) or _first_line(exc)}). {advice}") from exc


def check_compatible(payload: dict[str, Any], arch: str, classes: list[str], source: Path) -> None:
    """A checkpoint from another architecture or class list cannot be resumed or evaluated."""
    got_arch = payload.get("config", {}).get("arch")
    if got_arch != arch:
        raise TrainerError(
            f"checkpoint {source} is for arch {got_arch!r}, not {arch!r}. Pass --arch {got_arch} to resume it, "
            f"or use a new --out directory to train {arch}."
        )
    if list(payload["classes"]) != list(classes):
        theirs, ours = list(payload["classes"]), list(classes)
        diff = sorted(set(theirs) ^ set(ours))[:5]
        raise TrainerError(
            f"checkpoint {source} was trained on {len(theirs)} classes but the data has {len(ours)}"
            + (f" (differing: {', '.join(diff)})" if diff else " (same names, different order)")
            + ". Use the dataset it was trained on, or a new --out directory."
        )


# ---- what a training checkpoint holds, and resuming from it ----

@dataclass(frozen=True)
class RunInfo:
    """What a checkpoint says about its run, the same in every save: enough to rebuild and use the
    weights without the dataset (inference.load_model), and to refuse resuming another run's."""
    config: TrainConfig
    stem: str                  # the stem actually built ("small"/"imagenet"), not the setting ("auto")
    classes: list[str]
    names: dict[str, str]
    dataset: str
    eval_resize: int           # resolved: the setting may say "the standard ratio"


@dataclass(frozen=True)
class Position:
    """Where training is at a save: what a resumed run continues from."""
    epoch: int                 # epochs completed: the 0-based index of the one in progress
    step: int                  # steps of that epoch done, at the batch and world size of this run
    images: int                # images of that epoch trained, all processes together
    partial: list[float]       # loss*n, correct, n, skipped of that epoch so far, all processes
    best_top1: float
    elapsed_seconds: float     # the run's training time so far, every resume together (--max-hours counts it)


@dataclass(frozen=True)
class ResumePoint:
    """Where this process continues; a fresh run's is ResumePoint()."""
    epoch: int = 0
    step: int = 0              # the step counter's value in `epoch` (the epoch still ends at its last step)
    skip: int = 0              # images of `epoch` this process skips (its sampler positions already trained)
    best_top1: float = 0.0
    elapsed_seconds: float = 0.0
    partial: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)   # as Position.partial
    source: Path | None = None  # the checkpoint resumed (None: a fresh start)


def rng_states(world: int) -> list[dict[str, Any]]:
    """Every process's RNG state, so a resumed run continues each. Under DDP a collective: every
    process calls it."""
    state = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    if world <= 1:
        return [state]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def restore_rng(states: list[dict[str, Any]], rank: int) -> None:
    # A run resumed on more processes than it was saved with: the extra ones keep their seeded state.
    if rank < len(states):
        torch.set_rng_state(states[rank]["cpu"])
        if torch.cuda.is_available() and states[rank]["cuda"]:
            torch.cuda.set_rng_state_all(states[rank]["cuda"])


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                   run: RunInfo, at: Position, rng: list[dict[str, Any]]) -> dict[str, Any]:
    """The payload of last.pt and best.pt; `rng` is `rng_states()`. The model is saved unwrapped (no
    `module.`/`_orig_mod.` prefixes), so any later run or tool loads it as is."""
    config = run.config
    return {
        "format": FORMAT_VERSION, "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": at.epoch, "step_in_epoch": at.step,
        "images_in_epoch": at.images, "partial": at.partial, "best_top1": at.best_top1,
        "elapsed_seconds": at.elapsed_seconds, "rng": rng,
        "config": to_dict(config), "arch": config.arch, "stem": run.stem, "classes": run.classes, "names": run.names,
        "dataset": run.dataset, "mean": list(config.mean), "std": list(config.std),
        "eval_res": config.eval_res, "eval_resize": run.eval_resize,
    }


def resume_position(images_done: int, world: int, shard_len: int, batch_size: int) -> tuple[int, int]:
    """Where an interrupted epoch continues: (images this process skips, the step it continues at).

    `images_done` counts the epoch's images already trained by all processes together, so a run
    may resume with another batch size or number of processes: each skips its share of them, and
    the step counter is set so the epoch still ends at its last step (with the same settings:
    exactly the step that was saved).
    """
    skip = min(shard_len, images_done // world)
    steps_per_epoch = shard_len // batch_size
    return skip, (steps_per_epoch - (shard_len - skip) // batch_size if skip else 0)


def _read_by_rank_0(which: str, checkpoint_dir: Path, rank: int, world: int) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint to resume from: read by rank 0 and sent to the others. Only rank 0 writes the
    run's checkpoints, so in a run over several machines the others' run folders have none; and one
    reader never races another over a torn last.pt it moves aside. A refusal on rank 0 (a torn or
    unsafe file) is raised on every rank, so none waits for a checkpoint that is not coming."""
    def read():
        return load_latest(checkpoint_dir) if which == "auto" else None if which == "none" else (load(Path(which)), Path(which))

    if world <= 1 or not torch.distributed.is_initialized():
        return read()
    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = ("ok", read())
        except TrainerError as exc:
            box[0] = ("refused", type(exc).__name__, exc.message, exc.code)
    # From rank 0, a process of this same run: the payload was read with weights_only=True there.
    torch.distributed.broadcast_object_list(box, src=0)
    if box[0][0] == "refused":
        _, kind, message, code = box[0]
        raise (UnsafeFileError if kind == UnsafeFileError.__name__ else TrainerError)(message, code)
    return box[0][1]


def resume(which: str, checkpoint_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
           scaler: torch.amp.GradScaler, config: TrainConfig, classes: list[str], stem: str, rank: int, world: int,
           shard_len: int) -> ResumePoint:
    """Continue from a checkpoint, if there is one: `which` is "auto" (last.pt, else last.prev.pt,
    else a fresh start), "none" (a fresh start) or a checkpoint's path. Loads the weights, the
    optimizer's state (not its settings), the loss scale and this process's RNG state into what it
    is given; `shard_len` is this process's share of the train images per epoch."""
    loaded = _read_by_rank_0(which, checkpoint_dir, rank, world)
    if loaded is None:
        return ResumePoint()
    payload, source = loaded
    require(payload, RESUME_KEYS, source, "resuming")
    check_compatible(payload, config.arch, classes, source)
    stored = payload.get("config", {})
    if stem_of_weights(stem, payload["model"]) != stem:
        raise TrainerError(f"{source} holds {config.arch} weights with torchvision's standard 7x7 stem (an earlier "
                           f"version built it at this resolution); this version builds the small stem here. "
                           f"Resume it with --set stem=imagenet.")
    # Only these settings shape our models' tensors (the arch and class list were checked above).
    trained_as = " ".join(f"--set {k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in stored.items()
                          if k in ("width", "depths") and v != to_dict(config)[k])
    trained_as = trained_as or "as the run folder's config.json lists them"
    load_weights(unwrap(model), payload["model"], source,
                 f"Resume with the settings it was trained with ({trained_as}), or train into a new --out directory.")
    load_optimizer_state(optimizer, payload["optimizer"])
    # A run saved without loss scaling (fp32 on a CPU, bf16) saved an empty scaler state; resumed
    # in fp16 (auto on a T4) the scaler starts from its initial scale.
    if payload.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(payload["scaler"])
    # Checkpoints before "images_in_epoch" only had steps: of the batch size and world size they
    # were saved with (one RNG state per process).
    images_done = payload.get("images_in_epoch", payload["step_in_epoch"] * stored.get("batch_size", config.batch_size)
                              * len(payload["rng"]))
    skip, step = resume_position(images_done, world, shard_len, config.batch_size)
    restore_rng(payload["rng"], rank)
    point = ResumePoint(payload["epoch"], step, skip, payload["best_top1"], payload.get("elapsed_seconds", 0.0),
                        tuple(payload["partial"]), source)
    log.info("resumed from %s: epoch %d, step %d/%d, best val top-1 %.2f%%", source, point.epoch + 1, step,
             shard_len // config.batch_size, point.best_top1)
    changed = [k for k, v in to_dict(config).items() if stored.get(k, v) != v and k not in ("device", "workers", "max_hours", "tensorboard")]
    if changed:
        log.warning("settings differ from the checkpoint's: %s (the new values are used; the LR is the new "
                    "schedule's at this point of training)", ", ".join(changed))
    return point
