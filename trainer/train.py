"""Train a classifier from random weights; resume anywhere; write the run folder.

    trainer train --data DATA --out OUT --recipe fashion-mnist
    torchrun --nproc_per_node 2 -m trainer train --data DATA --out OUT     # DDP, same flags

OUT/checkpoints/{last,best}.pt (+ .sha256), OUT/metrics.jsonl, OUT/train.log, OUT/curves.png,
OUT/config.json, OUT/status.json, OUT/tensorboard/. `--resume auto` continues from last.pt (falling back to
last.prev.pt if last.pt is corrupt): same epochs, LR schedule and metrics lines as a run never
stopped. The loop below is deliberately one flat function you can read top to bottom.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import decode, forecast
from trainer import checkpoint as ckpt
from trainer import runlock
from trainer.config import TrainConfig, recipe_hint, to_dict
from trainer.data import (EpochSampler, ImageFiles, TrainTransform, available_cpus, eval_transform, load_dataset,
                          make_loader, progressive_resolution)
from trainer.engine import (InputNorm, amp_settings, effective_channels_last, evaluate, make_grad_scaler, make_optimizer,
                            pick_device, prepare_model, to_device, train_step_with_logits, training_forward, unwrap)
from trainer.errors import EXIT_PEER_LOST, EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM, TrainerError
from trainer.init_weights import init_from
from trainer.metrics import (Progress, append_metrics, epoch_row, read_metrics, setup_logging, truncate_metrics,
                             write_run_config)
from trainer.models import OUR_MODELS, build_model, resolve_stem
from trainer.report import plot_curves
from trainer.schedule import Schedule, make_scheduler
from trainer.stopping import StopRequest
from trainer.scalars import Scalars

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_hint: str, timeout_minutes: float = 10.0) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs, gloo on CPU (the tests).

    `timeout_minutes` bounds every collective: a rank whose peer is gone (a machine of a multi-node
    run reclaimed, its network cut without a goodbye) fails after that long instead of the
    backend's default (30 min for gloo), keeping the last checkpoint."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    use_cuda = torch.cuda.is_available() and device_hint != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        # Before the process group: NCCL's object collectives (all_gather_object in save) use the
        # current device, and without this every rank would use cuda:0 and hang.
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo",
                                             timeout=datetime.timedelta(minutes=timeout_minutes))
    return Dist(int(os.environ["RANK"]), local_rank, world)


def peer_lost(exc: BaseException) -> bool:
    """A collective failed because another rank is gone: its connection closed, or the timeout passed."""
    if isinstance(exc, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(exc)
    return any(k in text for k in ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out",
                                   "NCCL communicator was aborted", "ProcessGroupGloo", "ProcessGroupNCCL"))


def _all_max(flags: list[float], dist: Dist, device: torch.device) -> list[float]:
    if not dist.enabled:
        return flags
    t = torch.tensor(flags, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def _all_sum(values: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.enabled:
        torch.distributed.all_reduce(values)
    return values


def resume_command(argv: list[str], stop_file: Path | None = None, drop_max_hours: bool = False) -> str:
    """The command that was run, with `--resume auto` (what to type to continue). After a stop
    file, first its removal (else the resumed run stops at once); after --max-hours, without it
    (the budget counts every resume together, so the same one would stop the run at once)."""
    args = list(argv)
    for option in ("--resume", "--max-hours") if drop_max_hours else ("--resume",):
        while option in args:
            i = args.index(option)
            del args[i:i + 2]
        args = [a for a in args if not a.startswith(option + "=")]
    prog = "trainer" if Path(args[0]).name in ("trainer", "cli.py", "__main__.py") else args[0]
    command = " ".join(shlex.quote(a) for a in [prog, *args[1:], "--resume", "auto"])
    return f"rm {shlex.quote(str(stop_file))} && {command}" if stop_file else command


def set_aside_previous_run(out: Path) -> Path | None:
    """`--resume none` in a folder that holds a run: its checkpoints and metrics move to
    OUT/previous-<UTC time>/ (nothing is deleted); returns that folder, or None if there was no run."""
    ckpts = out / "checkpoints"
    if not ((ckpts.is_dir() and any(ckpts.iterdir())) or (out / "metrics.jsonl").exists()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest, n = out / f"previous-{stamp}", 1
    while dest.exists():
        n += 1
        dest = out / f"previous-{stamp}-{n}"
    dest.mkdir()
    for name in ("checkpoints", "metrics.jsonl", "curves.png", "config.json", "status.json", "tensorboard"):
        if (out / name).exists():
            os.replace(out / name, dest / name)
    return dest


def write_status(out: Path, **fields: Any) -> None:
    tmp = out / ".status.json.tmp"
    tmp.write_text(json.dumps(fields) + "\n")
    os.replace(tmp, out / "status.json")


def train(config: TrainConfig, data_dir: Path, out_dir: Path, resume: str = "auto", stop_file: Path | None = None,
          watch_spot: bool = False, argv: list[str] | None = None) -> int:
    """Run (or continue) a training job; returns the process exit code. Raises TrainerError on bad input."""
    dist = init_distributed(config.device, config.dist_timeout_minutes)
    try:
        with runlock.held(Path(out_dir)) if dist.main else contextlib.nullcontext():
            return _train(config, Path(data_dir), Path(out_dir), resume, stop_file, watch_spot, argv or sys.argv, dist)
    except RuntimeError as exc:
        if not (dist.enabled and peer_lost(exc)):
            raise
        if dist.main and (Path(out_dir) / "status.json").exists():
            write_status(Path(out_dir), state="failed", reason="peer-lost", exit_code=EXIT_PEER_LOST)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TrainerError(
            f"process {dist.rank} of {dist.world}: another process of this run stopped answering ({first}). On a run "
            f"over several machines that is usually one of them lost (a spot reclaim, a crash); this one stops too. "
            f"Node 0's checkpoints/last.pt is as last saved: start the same command on every machine again (`orch "
            f"launch --name JOB --resume` does) and training continues from it.", EXIT_PEER_LOST) from None
    finally:
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(config: TrainConfig, data_dir: Path, out: Path, resume: str, stop_file: Path | None, watch_spot: bool,
           argv: list[str], dist: Dist) -> int:
    started = time.monotonic()
    device = pick_device(config.device, dist.local_rank)
    ckpt_dir = out / "checkpoints"
    set_aside = set_aside_previous_run(out) if dist.main and resume == "none" and out.is_dir() else None
    if dist.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "train.log" if dist.main else None, dist.main)
    if set_aside:
        log.warning("--resume none: the previous run's checkpoints and metrics in %s were moved to %s (nothing was "
                    "deleted); this run starts from random weights", out, set_aside)
    info = load_dataset(data_dir)
    classes = info.classes
    if len(classes) < 2:
        raise TrainerError(f"{data_dir / 'train'} has {len(classes)} class folder ({', '.join(classes)}): a classifier "
                           f"needs at least 2. Put each class's images in train/<class>/ and val/<class>/.")
    hint = recipe_hint(info.dataset, config)
    if dist.main and hint:
        log.warning("%s", hint)
    amp = amp_settings(device, config.precision)
    stem = resolve_stem(config.stem, config.train_res, config.arch)
    if dist.main and config.dropout and config.arch not in OUR_MODELS:
        log.warning("dropout %g applies to our models only (%s); %s keeps its own", config.dropout,
                    ", ".join(OUR_MODELS), config.arch)
    eval_resize = eval_transform(config.eval_res, config.eval_resize).resize
    if dist.main and info.resize_short and info.resize_short < eval_resize:
        log.warning("%s was prepared with --resize-short %d, below the evaluation's resize to %d px: val images are "
                    "upsampled, so val top-1 is not the standard figure for this eval size. For that, prepare with "
                    "--resize-short %d or more (or none).", data_dir, info.resize_short, eval_resize, eval_resize)
    if dist.main:
        for warning in info.warnings:
            log.warning("%s", warning)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- model, optimizer, schedule (same seed on every rank: identical initial weights) ----
    torch.manual_seed(config.seed)
    model = build_model(config.arch, len(classes), width=config.width, depths=config.depths, stem=stem,
                        dropout=config.dropout, zero_init_residual=config.zero_init_residual, blurpool=config.blurpool)
    # On the device before the optimizer exists: a resumed optimizer's state (momentum buffers) is
    # loaded onto its parameters' device, so CPU parameters here would leave it on the CPU.
    model = model.to(device)
    global_batch = config.batch_size * dist.world
    peak_lr = config.lr * global_batch / config.lr_scale_batch if config.lr_scale_batch else config.lr
    optimizer = make_optimizer(model, peak_lr, config.momentum, config.nesterov, config.weight_decay)

    def resolution(epoch: int) -> int:
        """The train crop of `epoch` (0-based): progressive resizing."""
        return progressive_resolution(epoch, config.train_res_start, config.train_res, config.res_ramp_epochs, config.epochs,
                                      config.res_ramp_start)

    train_sampler = EpochSampler(len(info.train), shuffle=True, seed=config.seed, rank=dist.rank, world=dist.world,
                                 resolution=resolution)
    steps_per_epoch = len(train_sampler.shard()) // config.batch_size
    if steps_per_epoch == 0:
        raise TrainerError(f"the train split has {len(info.train)} images, fewer than one batch of {config.batch_size} "
                           f"per process. Use a smaller --batch-size.")
    schedule = Schedule(config.schedule, steps_per_epoch * config.epochs, int(config.warmup_epochs * steps_per_epoch),
                        config.warmup_div, config.pct_start)
    scaler = make_grad_scaler(amp)

    # ---- resume ----
    start = ckpt.resume(resume, ckpt_dir, model, optimizer, scaler, config, classes, stem, dist.rank, dist.world,
                        len(train_sampler.shard()))
    best_top1 = start.best_top1
    if start.source is None and config.init_weights:   # fine-tuning: a fresh run only (a resumed one has its weights)
        report = init_from(unwrap(model), config.init_weights, config.arch)
        if dist.main:
            log.info("%s", report.describe())
    # The LR is always the current settings' schedule at this position (the scheduler's saved state
    # is not loaded): a run resumed with another batch size or world size gets its own peak LR and
    # step count, and a schedule to zero still ends at zero.
    scheduler = make_scheduler(optimizer, schedule, start.epoch * steps_per_epoch + start.step)
    if dist.main:
        truncate_metrics(out / "metrics.jsonl", start.epoch)
        write_run_config(out / "config.json", to_dict(config), {
            "data": str(data_dir), "dataset": info.dataset, "num_classes": len(classes), "train_images": len(info.train),
            "val_images": len(info.val), "world_size": dist.world, "global_batch": global_batch, "peak_lr": peak_lr,
            "steps_per_epoch": steps_per_epoch, "device": str(device), "amp": str(amp.dtype), "stem": stem})
        write_status(out, state="running", epoch=start.epoch, best_top1=best_top1)
    if start.epoch >= config.epochs:
        log.info("already trained %d of %d epochs; nothing to do (raise --epochs to train longer)", start.epoch, config.epochs)
        return 0

    channels_last = effective_channels_last(device, config.channels_last, config.batch_size, model)
    model = prepare_model(model, device, channels_last, config.compile)
    if dist.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model, graphs = training_forward(model, amp, device, config.batch_size, config.cuda_graphs, config.compile,
                                          dist.enabled)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    pin = device.type == "cuda"
    train_set = ImageFiles(info.train, TrainTransform(config.crop_scale, config.crop_ratio, config.hflip, config.crop_pad))
    val_set = ImageFiles(info.val, eval_transform(config.eval_res, config.eval_resize))
    norm = InputNorm(config.mean, config.std)
    val_sampler = EpochSampler(len(info.val), shuffle=False, rank=dist.rank, world=dist.world)
    train_loader = make_loader(train_set, train_sampler, config.batch_size, config.workers, config.prefetch_factor, pin, True)
    val_loader = make_loader(val_set, val_sampler, config.batch_size, config.workers, config.prefetch_factor, pin, False)

    stop = StopRequest(stop_file)
    stop.install_signal_handlers()
    if watch_spot and dist.main:
        stop.watch_spot_notice()
    budget_s = config.max_hours * 3600 if config.max_hours > 0 else float("inf")
    save_seconds, eval_seconds = 0.0, 0.0
    last_save = time.monotonic()
    progress = Progress(dist.main, config.log_every_seconds)
    log.info("training %s (%s stem) on %d classes, %d train / %d val images, %s x%d, %s, global batch %d, peak lr %g, "
             "%d epochs x %d steps, CUDA graphs %s", config.arch, stem, len(classes), len(info.train), len(info.val), device,
             dist.world, amp.dtype or "fp32", global_batch, peak_lr, config.epochs, steps_per_epoch, graphs)
    log.info("input: %d loader worker(s) per process; train crops: %s%s; JPEG crops decoded %s",
             train_loader.num_workers,
             f"zero-pad {config.crop_pad} px, random window" if config.crop_pad else
             f"random-resized, area {config.crop_scale[0]:g}-{config.crop_scale[1]:g}",
             ", mirrored half the time" if config.hflip else "", decode.jpeg_decoder())

    def elapsed() -> float:
        return start.elapsed_seconds + time.monotonic() - started

    plan = forecast.Plan(config.epochs, resolution, steps_per_epoch * global_batch, config.eval_every, len(info.val),
                         config.eval_res)
    run = ckpt.RunInfo(config, stem, classes, info.names, info.dataset, eval_resize)

    advised: set[str] = set()   # each piece of advice once per process

    def advise(speed: forecast.Speed, left_s: float) -> None:
        budget = forecast.budget_advice(elapsed(), left_s, budget_s, config.epochs) if "budget" not in advised else None
        if budget:
            advised.add("budget")
            log.warning("%s", budget)
        if device.type != "cpu" and "loader" not in advised:   # on a CPU the model and the workers share the cores
            loader = forecast.loader_advice(speed, train_loader.num_workers, available_cpus(), bool(info.resize_short_train))
            if loader:
                advised.add("loader")
                log.warning("%s", loader)

    def save(epoch: int, step: int, images: int, sums: torch.Tensor, is_best: bool = False) -> None:
        """images: of this epoch, trained by all processes together (where a resume continues)."""
        nonlocal save_seconds, last_save
        t = time.monotonic()
        payload = ckpt.training_state(model, optimizer, scheduler, scaler, run,
                                      ckpt.Position(epoch, step, images, sums.tolist(), best_top1, elapsed()),
                                      ckpt.rng_states(dist.world))
        if dist.main:
            ckpt.save(payload, ckpt_dir / "last.pt", keep_previous=True)
            if is_best:
                ckpt.save(payload, ckpt_dir / "best.pt")
        if dist.enabled:
            torch.distributed.barrier()
        save_seconds, last_save = time.monotonic() - t, time.monotonic()

    def stopped(reason: str, epoch: int, step: int) -> int:
        code = {"SIGINT": EXIT_SIGINT, "SIGHUP": EXIT_SIGHUP}.get(reason, 0 if reason in ("max-hours", "target") else EXIT_SIGTERM)
        if dist.main:
            where = f"epoch {epoch + 1} step {step}/{steps_per_epoch}" if step else f"the end of epoch {epoch}"
            log.warning("stopped (%s) at %s; saved %s. Resume with: %s%s", reason, where, ckpt_dir / "last.pt",
                        resume_command(argv, stop_file if reason == "stop-file" else None,
                                       drop_max_hours=reason == "max-hours"),
                        " (or with a larger --max-hours: it counts the hours already trained)"
                        if reason == "max-hours" else "")
            write_status(out, state="time_limit" if reason == "max-hours" else "interrupted", reason=reason,
                         epoch=epoch, step_in_epoch=step, best_top1=best_top1, exit_code=code)
        return code

    scalars = (Scalars.open(out / "tensorboard", len(info.train), start.epoch, start.skip * dist.world,
                            every_seconds=min(5.0, config.log_every_seconds))
               if dist.main and config.tensorboard else Scalars())
    try:
        for epoch in range(start.epoch, config.epochs):
            first = epoch == start.epoch
            step = start.step if first else 0
            sums = torch.tensor(start.partial if first else (0.0,) * 4, dtype=torch.float64)
            position = start.skip if first else 0   # this process's images of the epoch done (sampler positions)
            train_sampler.set_epoch(epoch, skip=position)
            res = resolution(epoch)
            dev_sums = torch.zeros(2, dtype=torch.float64, device=device)   # loss*n, correct (n: images_seen, on the host)
            skipped = 0
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            model.train()
            progress.start(f"epoch {epoch + 1}/{config.epochs} ({res}px)", steps_per_epoch)
            t_epoch = time.perf_counter()
            data_wait, images_seen = 0.0, 0
            first_speed = forecast.FirstSpeed(start.step, steps_per_epoch, dist.world, res) if first and dist.main else None
            t_wait = time.perf_counter()

            def epoch_totals() -> torch.Tensor:
                """loss*n, correct, n, skipped so far this epoch, summed over processes (a device sync)."""
                mine = torch.tensor([float(images_seen), float(skipped)], dtype=torch.float64)
                return _all_sum(torch.cat([dev_sums.cpu(), mine]).to(device), dist).cpu()

            for images, targets, bad in train_loader:
                data_wait += time.perf_counter() - t_wait
                for path, why in bad:
                    log.warning("skipped unreadable image %s (%s)", path, why)
                skipped += len(bad)
                if len(targets):
                    images, targets = to_device(images, targets, device, channels_last, norm)
                    loss, logits, targets = train_step_with_logits(step_model, images, targets, criterion, optimizer, scaler,
                                                                   amp, channels_last, config.grad_clip)
                    n = len(targets)
                    # No host-to-device copy here: from pageable memory that would make the host wait
                    # for the GPU every step (the count stays on the host, in images_seen).
                    dev_sums += torch.stack([loss.double() * n, (logits.argmax(1) == targets).sum().double()])
                    images_seen += n
                scheduler.step()
                step += 1
                position += config.batch_size
                if first_speed and (speed := first_speed.after_step(step, images_seen, data_wait, time.perf_counter())):
                    left_s = forecast.seconds_left(speed, plan.remaining(epoch, (steps_per_epoch - step) * global_batch,
                                                                         eval_seconds))
                    log.info("%s", forecast.first_projection(speed, left_s, config.epochs - epoch))
                    advise(speed, left_s)
                if progress.due():
                    s = dev_sums.tolist()   # a device sync: only when a line or the bar is due
                    progress.update(step, f"loss {s[0] / max(1, images_seen):.4f} lr {scheduler.get_last_lr()[0]:.4g}")
                    scalars.step(epoch, position * dist.world, s[0], images_seen, scheduler.get_last_lr()[0])
                # Stop or save inside the epoch: every rank must agree, so the flags are reduced.
                out_of_time = elapsed() + 2 * save_seconds >= budget_s
                periodic = config.checkpoint_minutes > 0 and time.monotonic() - last_save >= 60 * config.checkpoint_minutes
                want_stop, want_save, timeout = _all_max([float(stop.poll() is not None), float(periodic), float(out_of_time)],
                                                         dist, device)
                if (want_stop or want_save or timeout) and step < steps_per_epoch:
                    save(epoch, step, position * dist.world, epoch_totals() + sums)
                    if want_stop or timeout:
                        progress.stop()
                        return stopped(stop.reason or "SIGTERM" if want_stop else "max-hours", epoch, step)
                t_wait = time.perf_counter()
            progress.stop()
            train_seconds = time.perf_counter() - t_epoch
            totals = epoch_totals() + sums
            if totals[2] == 0:   # (summed over processes: every rank raises together)
                if dist.main:
                    write_status(out, state="failed", reason="no-images", epoch=epoch, best_top1=best_top1, exit_code=2)
                raise TrainerError(f"no image of epoch {epoch + 1} could be loaded ({int(totals[3])} skipped; the "
                                   f"warnings above say why): nothing was trained. Check the data with `trainer verify "
                                   f"--data {data_dir}` and the crop settings.")

            # ---- evaluate, log, checkpoint ----
            last_epoch = epoch + 1 == config.epochs
            # Reduced: evaluation is collective under DDP, so every rank must make the same choice.
            out_of_time = _all_max([float(elapsed() + eval_seconds + 2 * save_seconds >= budget_s)], dist, device)[0] > 0
            skip_eval = out_of_time and not last_epoch
            result = None
            if ((epoch + 1) % config.eval_every == 0 or last_epoch) and not skip_eval:
                t_eval = time.perf_counter()
                result = evaluate(model, val_loader, device, amp, channels_last, len(classes), dist.enabled, norm,
                                  should_stop=lambda: stop.poll() is not None, flip=config.tta == "flip")
                eval_seconds = time.perf_counter() - t_eval
                if result.stopped:
                    # A stop during evaluation (docker stop's grace is 10-30 s, an ImageNet eval
                    # takes longer) saves now: the epoch as trained, at its last step with its
                    # sums. The resumed run finds no batch left in this epoch, so it evaluates,
                    # logs and saves it just as an uninterrupted run would have.
                    save(epoch, steps_per_epoch, position * dist.world, totals)
                    if dist.main:
                        log.warning("the stop came during the evaluation of epoch %d: it is skipped now and runs "
                                    "again on resume", epoch + 1)
                    return stopped(stop.reason or "SIGTERM", epoch, steps_per_epoch)
            throughput = forecast.Speed(images_seen * dist.world / max(1e-9, train_seconds), res,
                                        data_wait / max(1e-9, train_seconds))
            # This process's first epoch: its speed after the warm-up steps, which would skew the projection.
            measured = first_speed.measured(images_seen, data_wait, t_epoch + train_seconds) if first_speed else None
            speed = measured or throughput
            # None: nothing to project from (a resumed epoch whose images were all trained before the stop).
            left_s = (None if not images_seen else 0.0 if last_epoch else
                      forecast.seconds_left(speed, plan.remaining(epoch + 1, steps_per_epoch * global_batch, eval_seconds)))
            max_gpu_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
            row = epoch_row(epoch, config.epochs, optimizer.param_groups[0]["lr"], totals.tolist(), result, throughput,
                            train_seconds, eval_seconds, max_gpu_mem, elapsed(), left_s)
            is_best = row.val_top1 is not None and row.val_top1 > best_top1
            if is_best:
                best_top1 = row.val_top1
            if dist.main:
                append_metrics(out / "metrics.jsonl", row)
                scalars.epoch(row)
                val = (f"val loss {row.val_loss:.4f} top-1 {row.val_top1:.2f}% top-5 {row.val_top5:.2f}%"
                       if row.val_top1 is not None else "val skipped")
                if row.val_top1_flip is not None:
                    val += f" (flip TTA: top-1 {row.val_top1_flip:.2f}% top-5 {row.val_top5_flip:.2f}%)"
                log.info("epoch %d/%d lr %.4g | train loss %.4f top-1 %.2f%% | %s | %.0f img/s, %.1f s, data wait %.0f%%%s%s",
                         epoch + 1, config.epochs, row.lr, row.train_loss, row.train_top1, val,
                         row.images_per_sec, train_seconds, 100 * row.data_wait_fraction,
                         f", {row.skipped_images} unreadable images skipped" if row.skipped_images else "",
                         f" | about {forecast.duration(left_s)} left" if left_s else "")
                if left_s:
                    advise(speed, left_s)
            save(epoch + 1, 0, 0, torch.zeros(4, dtype=torch.float64), is_best)
            if dist.main:
                try:
                    plot_curves(read_metrics(out / "metrics.jsonl"), out / "curves.png")
                except Exception as exc:  # noqa: BLE001 - a plot must never stop training
                    log.warning("could not draw curves.png: %s", exc)
            if config.target_top1 and row.val_top1 is not None and row.val_top1 >= config.target_top1:
                log.info("val top-1 %.2f%% reached --target-top1 %.2f%%: stopping", row.val_top1, config.target_top1)
                if dist.main:
                    write_status(out, state="finished", reason="target", epoch=epoch + 1, best_top1=best_top1, exit_code=0)
                return 0
            stop_now, timeout = _all_max([float(stop.poll() is not None), float(elapsed() + 2 * save_seconds >= budget_s)], dist, device)
            if (stop_now or timeout) and not last_epoch:
                return stopped(stop.reason or "SIGTERM" if stop_now else "max-hours", epoch + 1, 0)
    finally:
        progress.stop()
        stop.restore_signal_handlers()
        scalars.close()
    if dist.main:
        log.info("finished %d epochs in %.2f h; best val top-1 %.2f%%; weights: %s", config.epochs, elapsed() / 3600,
                 best_top1, ckpt_dir / "best.pt")
        write_status(out, state="finished", reason="epochs", epoch=config.epochs, best_top1=best_top1, exit_code=0)
    return 0
