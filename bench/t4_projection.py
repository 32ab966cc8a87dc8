"""T4 projection: each ImageNet recipe's GPU hours and $ on a g4dn.2xlarge, from our step measured here.

    python bench/t4_projection.py --device cuda                          # every ImageNet recipe (~1.5 min on an H100: an estimate)
    python bench/t4_projection.py --device cuda --recipes t4-rn50 --steps 40
    python bench/t4_projection.py --device cpu                           # tiny sizes: the plumbing, NOT a projection

For each recipe, its settings come from `trainer.config.resolve(recipe)` and its train resolution
per epoch from `trainer.data.progressive_resolution` (what `trainer train` runs). On this GPU it
measures:
- our training step (bench/train_step.py's `our_loop`: trainer.engine with the recipe's
  channels_last and CUDA graphs) in fp16 + GradScaler, what a T4 runs, with the recipe's arch,
  BlurPool and batch (halved until it fits when this GPU's memory is short, and said so), at
  each distinct resolution of the schedule, on a random batch already on the GPU;
- the evaluation forward pass (eval mode, no grad, fp16 autocast) at the recipe's eval_res; with
  tta = "flip" each val image costs two of them.
Then hours = 1,281,167 train images x the schedule / the train rates + the evaluations
(every eval_every epochs and the last) x 50,000 images x passes / the eval rate, projected to
a T4 twice: the rates times the ratio of the T4's dense fp16 tensor-core TFLOPS to this GPU's
(compute-bound), and times the ratio of their memory bandwidths (memory-bound). Convolutions
sit between the two, so the two hours are the range. On a T4 the ratio is 1 and the figure is the
measurement; on a GPU not in SPECS the measured rates are printed and the projection needs its
specs. Lines starting with `projection ` are the result (bench/gpu-acceptance.sh collects them).

GPU time only: data loading (bench/end_to_end.py's ratio says whether the loader keeps up),
checkpoint saves and start-up are not counted.
"""
from __future__ import annotations

import argparse
import gc
import re
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from _common import Stopwatch, machine, median, pick_device, print_table, spread
from train_step import CLASSES, Setup, our_loop, rate, with_backend_flags

# ------------------------------------------------------------------ settings (flags override)
RECIPES = ("t4-rn18-fast", "t4-rn50-fast", "t4-rn50")   # the ImageNet recipes (t4-rn50-fast: skipped if absent)
GPU = dict(steps=20, warmup=10, reps=3, res_scale=1.0, max_batch=0)
CPU = dict(steps=1, warmup=1, reps=1, res_scale=0.25, max_batch=2)   # plumbing only: seconds, not figures
TRAIN_IMAGES = 1_281_167  # ImageNet-1k train set
VAL_IMAGES = 50_000       # ImageNet-1k val set
PRICE_PER_HOUR = 0.752    # g4dn.2xlarge on demand, us-east-1 (orchestrator/data/prices.json)
MIN_BATCH = 16            # halving the batch for memory stops here


@dataclass(frozen=True)
class GpuSpec:
    name: str
    pattern: str          # searched in torch.cuda.get_device_name(), case-insensitive; the first match wins
    fp16_tflops: float    # dense fp16 tensor-core TFLOPS (NVIDIA prints sparse figures with a *: halved here)
    mem_gbps: float       # memory bandwidth, GB/s


# From NVIDIA's datasheets. Hopper, Ampere and Ada datasheets print the fp16 tensor figure WITH 2:4
# structured sparsity (marked *), twice the dense rate; the dense figure is used here. Turing (T4)
# has no structured sparsity, so its figure is dense as printed.
SPECS = (
    # T4 datasheet: "Mixed Precision (FP16/FP32) 65 TFLOPS", 320 GB/s GDDR6 (at 1,590 MHz boost).
    GpuSpec("T4", r"\bT4\b", 65, 320),
    # L4 datasheet: "FP16 Tensor Core 242 teraFLOPS*" (* with sparsity) -> 121 dense; 300 GB/s.
    GpuSpec("L4", r"\bL4\b", 121, 300),
    # NVIDIA publishes no A10G (AWS g5) datasheet; the A10's: "FP16 Tensor Core 125 TF | 250 TF*" ->
    # 125 dense; 600 GB/s. The A10G is taken to match it (approximate).
    GpuSpec("A10G", r"\bA10G\b", 125, 600),
    GpuSpec("A10", r"\bA10\b", 125, 600),
    # A100 datasheet: "FP16 Tensor Core 312 TFLOPS | 624 TFLOPS*" -> 312 dense; 80GB SXM 2,039 GB/s,
    # 80GB PCIe 1,935 GB/s, 40GB 1,555 GB/s.
    GpuSpec("A100 80GB PCIe", r"A100.*PCIe.*80GB|A100.*80GB.*PCIe", 312, 1935),
    GpuSpec("A100 SXM 80GB", r"A100.*80GB", 312, 2039),
    GpuSpec("A100 40GB", r"A100.*40GB", 312, 1555),
    # H100 datasheet: SXM "FP16 Tensor Core 1,979 teraFLOPS*" -> 989 dense, 3.35 TB/s;
    # PCIe "1,513 teraFLOPS*" -> 756 dense, 2.0 TB/s. (H100 NVL is not in the table: unknown here.)
    GpuSpec("H100 PCIe", r"\bH100.*PCIe", 756, 2000),
    GpuSpec("H100 SXM", r"\bH100(?!.*NVL)", 989, 3350),
    # H200 datasheet: SXM "FP16 Tensor Core 1,979 TFLOPS*" -> 989 dense, 4.8 TB/s. (H200 NVL, GH200: not here.)
    GpuSpec("H200", r"\bH200(?!.*NVL)", 989, 4800),
)
T4 = SPECS[0]


def gpu_spec(device_name: str) -> GpuSpec | None:
    for spec in SPECS:
        if re.search(spec.pattern, device_name, re.IGNORECASE):
            return spec
    return None


# ------------------------------------------------------------------ the recipe's plan

def schedule(c) -> list[int]:
    """The train resolution of each epoch, as `trainer train` computes it."""
    from trainer.data import progressive_resolution

    return [progressive_resolution(epoch, c.train_res_start, c.train_res, c.res_ramp_epochs, c.epochs,
                                   c.res_ramp_start) for epoch in range(c.epochs)]


def evaluations(c) -> int:
    """Evaluations in a run: every eval_every epochs, and always after the last."""
    return sum(1 for e in range(c.epochs) if (e + 1) % c.eval_every == 0 or e + 1 == c.epochs)


def run_hours(epochs_res: list[int], train_rate: dict[int, float], eval_rate: float, n_evals: int,
              eval_passes: int, train_images: int = TRAIN_IMAGES, val_images: int = VAL_IMAGES) -> float:
    """GPU hours of a run: each epoch's images at its resolution's rate, plus the evaluations."""
    train = sum(train_images / train_rate[res] for res in epochs_res)
    return (train + n_evals * val_images * eval_passes / eval_rate) / 3600


# ------------------------------------------------------------------ measuring

def scaled(res: int, factor: float) -> int:
    return res if factor == 1 else max(16, round(res * factor / 8) * 8)


def build(c, res_for_stem: int):
    from trainer.models import build_model, resolve_stem

    torch.manual_seed(0)
    extra = {"blurpool": True} if getattr(c, "blurpool", False) else {}   # older trainers have no blurpool
    return build_model(c.arch, CLASSES, width=c.width, depths=c.depths,
                       stem=resolve_stem(c.stem, res_for_stem, c.arch), **extra)


def train_rates(c, res: int, batch: int, device: torch.device, precision: str, args) -> list[float]:
    setup = Setup(precision, c.channels_last, c.compile, c.cuda_graphs)
    images = torch.randn(batch, 3, res, res, device=device)
    targets = torch.randint(0, CLASSES, (batch,), device=device)
    step = with_backend_flags(our_loop(build(c, c.train_res), images, targets, device, setup, c), tuned=True)
    for _ in range(args.warmup):   # cuDNN autotuning, the CUDA graph's capture, allocator growth
        step()
    run = rate(step, device, args.steps, batch)
    return [run() for _ in range(args.reps)]


def eval_rates(c, res: int, batch: int, device: torch.device, precision: str, args) -> list[float]:
    """One forward pass per image as `trainer.engine.evaluate` runs it: eval mode, no grad, autocast, eager."""
    from trainer.engine import amp_settings, prepare_model

    amp = amp_settings(device, precision)
    model = prepare_model(build(c, c.train_res), device, c.channels_last, c.compile).eval()
    images = torch.randn(batch, 3, res, res, device=device)
    if c.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward() -> None:
        with amp.autocast():
            model(images)
    step = with_backend_flags(forward, tuned=True)
    for _ in range(args.warmup):
        step()
    watch = Stopwatch(device)

    def run() -> float:
        watch.start()
        for _ in range(args.steps):
            step()
        return args.steps * batch / watch.stop()
    return [run() for _ in range(args.reps)]


def fitting(measure: Callable[[int], list[float]], batch: int, device: torch.device) -> tuple[list[float], int]:
    """measure(batch), halving the batch while this GPU runs out of memory: (rates, batch used)."""
    while True:
        try:
            return measure(batch), batch
        except torch.cuda.OutOfMemoryError:
            if batch // 2 < MIN_BATCH:
                raise
            print(f"  batch {batch} ran out of this GPU's memory: trying {batch // 2}")
            batch //= 2
        finally:   # a failed try's model and CUDA graph pool go before the next (cycles need the collector)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()


# ------------------------------------------------------------------ one recipe

def project_recipe(name: str, device: torch.device, spec: GpuSpec | None, device_name: str, args) -> None:
    from trainer.config import resolve

    c = resolve(name)
    plan = schedule(c)
    factor = args.res_scale
    batch = min(c.batch_size, args.max_batch) if args.max_batch else c.batch_size
    passes = 2 if c.tta == "flip" else 1
    n_evals = evaluations(c)
    print(f"\n{name}: {c.arch}, blurpool {getattr(c, 'blurpool', 'n/a (not in this trainer)')}, batch {c.batch_size}, "
          f"{c.epochs} epochs at " + ", ".join(f"{plan.count(r)} x {r} px" for r in sorted(set(plan)))
          + f"; {n_evals} evaluations at {c.eval_res} px" + (" with flip TTA (2 forward passes)" if passes == 2 else ""))
    if batch < c.batch_size:
        print(f"  batch capped at {batch} by --max-batch")
    rows, train_rate, notes = [], {}, []
    for res in sorted(set(plan)):
        run_res = scaled(res, factor)
        rates, used = fitting(lambda b: train_rates(c, run_res, b, device, args.precision, args), batch, device)
        train_rate[res] = median(rates)
        rows.append([f"train @{run_res}", plan.count(res), used, spread(rates)])
        if used < batch:
            notes.append(f"train @{res}: batch {used}, not {batch}: {batch} does not fit this GPU's memory")
    eval_res = scaled(c.eval_res, factor)
    rates, used = fitting(lambda b: eval_rates(c, eval_res, b, device, args.precision, args), batch, device)
    eval_rate = median(rates)
    rows.append([f"eval @{eval_res} (x{passes} per image)", n_evals, used, spread(rates)])
    if used < batch:
        notes.append(f"eval: batch {used}, not {batch} (memory)")
    print_table(["our step, " + args.precision, "epochs/evals", "batch", "images/s here: median (min-max)"], rows)
    for note in notes:
        print(f"  NOTE {note}")

    here_h = run_hours(plan, train_rate, eval_rate, n_evals, passes)
    if device.type != "cuda":
        print(f"projection {name}: none: a CPU run at {factor:g}x the resolutions and batch {batch} checks the "
              f"plumbing, NOT a projection (the arithmetic at these rates: {here_h:,.1f} h)")
        return
    named = [(f"train @{res}", train_rate[res]) for res in sorted(train_rate)] + [(f"eval @{c.eval_res}", eval_rate)]
    if spec is not None:
        print(t4_rates(name, named, spec, passes))
    print(headline(name, here_h, spec, device_name, notes))


def scalings(spec: GpuSpec) -> tuple[float, ...]:
    """What this GPU's rates are multiplied by for a T4: (compute, bandwidth); (1,) on a T4."""
    return (1.0,) if spec is T4 else (T4.fp16_tflops / spec.fp16_tflops, T4.mem_gbps / spec.mem_gbps)


def t4_rates(name: str, rates: list[tuple[str, float]], spec: GpuSpec, passes: int) -> str:
    """The rates a T4 would run at: what its loader must deliver (held against bench/end_to_end.py's)."""
    factors = sorted(scalings(spec))
    return (f"T4 rates {name}, images/s " + ("(measured): " if spec is T4 else "(compute-bandwidth scaled): ")
            + "; ".join(f"{what} " + "-".join(f"{r * f:,.0f}" for f in factors) for what, r in rates)
            + (" (forward passes: 2 per image with TTA)" if passes == 2 else ""))


def headline(name: str, here_h: float, spec: GpuSpec | None, device_name: str, notes: list[str]) -> str:
    """The `projection NAME: ...` line: the T4 hours and $ with the scaling next to them."""
    caveat = "; batch reduced for memory: " + ", ".join(notes) if notes else ""
    if spec is None:
        return (f"projection {name}: none: no specs for {device_name!r} in bench/t4_projection.py's SPECS (add its "
                f"dense fp16 tensor TFLOPS and memory GB/s); at this GPU's own rates the run takes {here_h:.2f} GPU "
                f"hours" + caveat)
    if spec is T4:
        return (f"projection {name}: {here_h:.1f} h on this T4 (measured, not scaled), "
                f"${here_h * PRICE_PER_HOUR:.2f} at ${PRICE_PER_HOUR}/h" + caveat)
    compute, bandwidth = scalings(spec)
    low, high = sorted((here_h / compute, here_h / bandwidth))
    return (f"projection {name}: {low:.1f}-{high:.1f} h on a T4, ${low * PRICE_PER_HOUR:.2f}-${high * PRICE_PER_HOUR:.2f} "
            f"at ${PRICE_PER_HOUR}/h (compute-scaled x{compute:.3f} = T4 {T4.fp16_tflops:g} / {spec.name} "
            f"{spec.fp16_tflops:g} dense fp16 tensor TFLOPS: {here_h / compute:.1f} h; bandwidth-scaled "
            f"x{bandwidth:.3f} = {T4.mem_gbps:g} / {spec.mem_gbps:g} GB/s: {here_h / bandwidth:.1f} h; "
            f"{here_h:.2f} h here)" + caveat)

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated (default {','.join(RECIPES)})")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "fp32"),
                        help="our step's precision (default fp16 + GradScaler: what a T4 runs)")
    parser.add_argument("--steps", type=int, help="timed steps per repetition (GPU default 20; CPU 1)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (GPU default 10; CPU 1)")
    parser.add_argument("--reps", type=int, help="repetitions, median reported (GPU default 3; CPU 1)")
    parser.add_argument("--res-scale", type=float, help="scale every resolution (GPU default 1; CPU 0.25: plumbing)")
    parser.add_argument("--max-batch", type=int, help="cap the recipes' batch (GPU default 0: none; CPU 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    for key, value in (GPU if device.type == "cuda" else CPU).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    spec = gpu_spec(device_name) if device.type == "cuda" else None
    print(f"machine: {machine(device)}")
    if device.type != "cuda":
        print("CPU: tiny sizes to check the plumbing; nothing below is a T4 projection")
    elif spec is None:
        print(f"{device_name!r} is not in SPECS: the measured rates follow, without a projection")
    elif spec is T4:
        print("a T4: the figures below are measurements (ratio 1)")
    else:
        print(f"specs: {spec.name} {spec.fp16_tflops:g} dense fp16 tensor TFLOPS, {spec.mem_gbps:g} GB/s; "
              f"T4 {T4.fp16_tflops:g}, {T4.mem_gbps:g} GB/s (NVIDIA's datasheets)")
        print("Both projections assume a T4 reaches the same fraction of its peak as this GPU does. Against that: "
              "65 TFLOPS is at the T4's boost clock, which a 70 W T4 does not hold under sustained load. For it: "
              "short steps here are partly bound by the host launching kernels, less so on a slower GPU.")
    print(f"{args.steps} timed steps x {args.reps} reps after {args.warmup} warm-up steps; GPU time only "
          "(data loading, checkpoints and start-up not counted)")
    from trainer.config import recipe_path
    from trainer.errors import TrainerError

    failed = 0
    for name in [r for r in args.recipes.split(",") if r]:
        try:
            recipe_path(name)
        except TrainerError as exc:   # a recipe not written yet (t4-rn50-fast is new) is skipped, not failed
            print(f"\nprojection {name}: skipped: {exc}")
            continue
        try:
            project_recipe(name, device, spec, device_name, args)
        except Exception as exc:  # noqa: BLE001 - one recipe's failure (out of memory at the smallest batch) is reported, the rest run
            failed += 1
            print(f"\nprojection {name}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
