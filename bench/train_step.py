"""Training step: images/s on synthetic data, our trainer's step against a naive loop and a ceiling.

    python bench/train_step.py                                   # CPU: tiny batch and resolution
    python bench/train_step.py --device cuda                     # resnet18/50 at 128/160/224, batch 256/128
    python bench/train_step.py --device cuda --archs resnet50 --res 224 --batch 128

Three loops train the same model (same initial weights, a copy each) on the same random batch:
- naive:   fp32, channels-first, `loss.backward(); opt.step()`, PyTorch's default backend
           switches (no cuDNN autotuning): the typical first attempt. Since Ampere those defaults
           run convolutions in TF32 on tensor cores; a T4 has no TF32, so on a GPU a second row,
           "naive, no TF32", also turns that off: what the same loop gets on a T4 or a V100.
- ours:    `trainer.engine` exactly as `trainer train` runs it with the recipe's settings
           (`--recipe`, default t4-rn18-fast): amp_settings (fp16 + GradScaler on a T4, bf16 where
           supported), prepare_model (channels_last, compile if the recipe says so), fused SGD,
           the CUDA-graphed training pass (engine.training_forward) on a GPU, train_step.
- ceiling: the fastest of the plain-PyTorch configurations below (autocast in the device's best
           half precision, or in ours' when --precision names fp16 or bf16, with GradScaler for
           fp16 as plain PyTorch needs it; channels_last, torch.compile where it works, CUDA graphs through
           torch.cuda.make_graphed_callables with fused SGD on a GPU), timed the same way.
Repetitions are interleaved (naive, ours, ceiling candidates, then reversed); a ratio is the
median over repetitions of the two rates measured back to back. Only the optimizer steps are
timed (CUDA events on a GPU), never model building, compilation or warm-up.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from _common import Stopwatch, interleaved, machine, median, paired_ratio, pick_device, print_ratio, print_table, spread

# ------------------------------------------------------------------ settings (flags override)
GPU = dict(archs="resnet18,resnet50", res="128,160,224", batch="256,128", steps=20, warmup=10, reps=5)
CPU = dict(archs="resnet18,resnet50", res="64", batch="8", steps=2, warmup=1, reps=3)
# batch: one per arch (resnet50 at 224 px and batch 256 needs more than a T4's 16 GB in fp32).
CLASSES = 1000            # classifier outputs (ImageNet)
LR = 0.1                  # SGD learning rate for the naive and ceiling loops (the value does not change speed)
NO_TF32 = "naive, no TF32"  # the naive loop with TF32 convolutions off too (GPU only)


@dataclass(frozen=True)
class Setup:
    precision: str        # auto | fp16 | bf16 | fp32, as trainer.engine.amp_settings reads it
    channels_last: bool
    compile: bool
    cuda_graphs: bool


def recipe_setup(recipe: str) -> tuple[Setup, "object"]:
    from trainer.config import resolve

    config = resolve(recipe)
    return Setup(config.precision, config.channels_last, config.compile, config.cuda_graphs), config


def best_half(device: torch.device) -> torch.dtype | None:
    """The autocast dtype a plain PyTorch user would pick: bf16 where the hardware has it, fp16 on
    older GPUs (T4, V100), none on a CPU without fast bf16 (tried anyway as a candidate)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.bfloat16


def plain_loop(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, device: torch.device,
               dtype: torch.dtype | None, channels_last: bool, compile: bool, config,
               graphs: bool = False) -> Callable[[], None]:
    """A plain PyTorch training step (the naive loop is dtype=None, channels_last=False, compile=False).

    Same optimizer arithmetic and loss as ours (SGD with the recipe's momentum, Nesterov and weight
    decay; label smoothing), so the comparison isolates precision, memory layout, compilation and
    (graphs) CUDA-graph replay of forward and backward with fused SGD, as PyTorch's docs show it."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    if graphs:
        torch.backends.cudnn.benchmark = True   # autotune before capture, as the timed steps will run
        with torch.autocast(device.type, dtype=dtype, cache_enabled=False) if dtype else contextlib.nullcontext():
            model = torch.cuda.make_graphed_callables(model, (images,))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=config.momentum, nesterov=config.nesterov,
                          weight_decay=config.weight_decay, fused=graphs or None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            loss = criterion(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def our_loop(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, device: torch.device,
             setup: Setup, config) -> Callable[[], None]:
    """The trainer's step, through its public functions, with the recipe's settings."""
    from trainer.engine import (amp_settings, make_grad_scaler, make_optimizer, prepare_model, to_device, train_step,
                                training_forward)

    amp = amp_settings(device, setup.precision)
    model = prepare_model(model, device, setup.channels_last, setup.compile)
    opt = make_optimizer(model, LR, config.momentum, config.nesterov, config.weight_decay)
    forward, _ = training_forward(model, amp, device, len(images), setup.cuda_graphs, setup.compile, False)
    scaler = make_grad_scaler(amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    images, targets = to_device(images, targets, device, setup.channels_last)

    def step() -> None:
        train_step(forward, images, targets, criterion, opt, scaler, amp, setup.channels_last)
    return step


def with_backend_flags(step: Callable[[], None], tuned: bool, conv_tf32: bool = True) -> Callable[[], None]:
    """cuDNN autotuning and TF32 matmuls as `trainer train` sets them (tuned), or PyTorch's
    defaults (the naive loop: a first attempt sets neither); TF32 convolutions are PyTorch's
    default, off only for "naive, no TF32". They are process-wide switches, so each loop sets its
    own before every call."""
    def run() -> None:
        torch.backends.cudnn.benchmark = tuned
        torch.backends.cuda.matmul.allow_tf32 = tuned
        torch.backends.cudnn.allow_tf32 = conv_tf32
        step()
    return run


def rate(step: Callable[[], None], device: torch.device, steps: int, batch: int) -> Callable[[], float]:
    watch = Stopwatch(device)

    def run() -> float:
        watch.start()
        for _ in range(steps):
            step()
        return steps * batch / watch.stop()
    return run


def candidates(device: torch.device, try_compile: bool,
               half: torch.dtype | None = None) -> dict[str, tuple[torch.dtype | None, bool, bool, bool]]:
    """Plain-PyTorch configurations for the ceiling: name -> (autocast dtype, channels_last, compile, CUDA graphs).
    `half`: the autocast dtype to try (default: the device's best), so fp16 + GradScaler is held
    against a ceiling in fp16 + GradScaler, not against bf16."""
    half = half or best_half(device)
    half_name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[half]
    out = {
        "fp32 NHWC": (None, True, False, False),
        f"{half_name} NCHW": (half, False, False, False),
        f"{half_name} NHWC": (half, True, False, False),
    }
    if device.type == "cuda":
        out[f"{half_name} NHWC graphs"] = (half, True, False, True)
    if try_compile:
        out[f"{half_name} NHWC compile"] = (half, True, True, False)
    return out


def bench_one(arch: str, res: int, batch: int, device: torch.device, setup: Setup, config, args) -> dict:
    from trainer.models import build_model

    torch.manual_seed(0)
    base = build_model(arch, CLASSES).to(device)
    images = torch.randn(batch, 3, res, res, device=device)
    targets = torch.randint(0, CLASSES, (batch,), device=device)
    naive = plain_loop(copy.deepcopy(base), images, targets, device, None, False, False, config)
    ours = our_loop(copy.deepcopy(base), images, targets, device, setup, config)
    loops: dict[str, Callable[[], None]] = {"naive": with_backend_flags(naive, False)}
    if device.type == "cuda":
        strict = plain_loop(copy.deepcopy(base), images, targets, device, None, False, False, config)
        loops[NO_TF32] = with_backend_flags(strict, False, conv_tf32=False)
    loops["ours"] = with_backend_flags(ours, True)
    ours_half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(setup.precision)
    for name, (dtype, cl, comp, graphs) in candidates(device, args.compile == "on" or
                                                      (args.compile == "auto" and device.type == "cuda"),
                                                      ours_half).items():
        try:
            loop = plain_loop(copy.deepcopy(base), images, targets, device, dtype, cl, comp, config, graphs)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails to build is left out, saying why
            print(f"  {arch}@{res}: ceiling: {name} left out: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        loops[f"ceiling: {name}"] = with_backend_flags(loop, True)
    runs = {}
    for name, step in list(loops.items()):
        try:
            for _ in range(args.warmup):   # cuDNN autotuning, compilation, allocator growth
                step()
        except Exception as exc:  # noqa: BLE001 - a candidate that fails (compile on an old GPU) is left out
            print(f"  {arch}@{res}: {name} left out: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        runs[name] = rate(step, device, args.steps, batch)
    results = interleaved(runs, args.reps)
    del loops, runs, base
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--archs", help="comma-separated model names (GPU default resnet18,resnet50)")
    parser.add_argument("--res", help="comma-separated square input sizes in px (GPU default 128,160,224; CPU 64)")
    parser.add_argument("--batch", help="batch per arch, comma-separated, or one for all (GPU default 256,128; CPU 8)")
    parser.add_argument("--steps", type=int, help="timed steps per repetition (GPU default 20; CPU 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (GPU default 10; CPU 1)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (GPU default 5; CPU 3)")
    parser.add_argument("--recipe", default="t4-rn18-fast", help="whose speed settings `ours` uses (default t4-rn18-fast)")
    parser.add_argument("--precision", choices=("auto", "fp16", "bf16", "fp32"),
                        help="override the recipe's precision for `ours` (auto: fp16 on a T4, bf16 on A100/H100, fp32 on CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: on a shared or small machine more threads than "
                             "free cores make every parallel op wait for a descheduled thread)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="try torch.compile in the ceiling (auto: on a GPU only; a CPU compile takes minutes)")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    defaults = GPU if device.type == "cuda" else CPU
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    archs = args.archs.split(",")
    sizes = [int(v) for v in str(args.res).split(",")]
    batches = [int(v) for v in str(args.batch).split(",")]
    batches = (batches * len(archs))[:len(archs)] if len(batches) == 1 else batches
    setup, config = recipe_setup(args.recipe)
    if args.precision:
        setup = Setup(args.precision, setup.channels_last, setup.compile, setup.cuda_graphs)
    print(f"machine: {machine(device)}" + (f"; torch threads: {args.threads}" if device.type == "cpu" else ""))
    print(f"ours = trainer.engine with recipe {args.recipe}: precision {setup.precision}, "
          f"channels_last {setup.channels_last}, compile {setup.compile}, CUDA graphs {setup.cuda_graphs}")
    print(f"{args.steps} timed steps x {args.reps} interleaved reps after {args.warmup} warm-up steps\n")
    rows, summary = [], []
    for arch, batch in zip(archs, batches):
        for res in sizes:
            results = bench_one(arch, res, batch, device, setup, config, args)
            for name, values in results.items():
                rows.append([arch, res, batch, name, spread(values)])
            medians = {name: median(v) for name, v in results.items()}
            ceiling_name = max((n for n in medians if n.startswith("ceiling")), key=medians.get, default=None)
            summary.append((arch, res, results, medians, ceiling_name))
    print_table(["arch", "px", "batch", "loop", "images/s: median (min-max)"], rows)
    print()
    for arch, res, results, medians, ceiling_name in summary:
        if "ours" not in results:
            continue
        if "naive" in results:
            print_ratio(f"ours/naive {arch}@{res}", paired_ratio(results["ours"], results["naive"]))
        if NO_TF32 in results:
            print_ratio(f"ours/naive-no-TF32 {arch}@{res}", paired_ratio(results["ours"], results[NO_TF32]),
                        "fp32 as on a T4, which has no TF32")
        if ceiling_name:
            # The ceiling is the fastest plain configuration; the naive loop counts if it is faster.
            best = max((n for n in (ceiling_name, "naive") if n in medians), key=medians.get)
            print_ratio(f"ours/ceiling {arch}@{res}", paired_ratio(results["ours"], results[best]),
                        f"ceiling: {best.removeprefix('ceiling: ')}")
    print("(each ratio: the median over repetitions of ours/other measured back to back)")


if __name__ == "__main__":
    main()
