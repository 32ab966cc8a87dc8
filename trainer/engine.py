"""The one AMP code path: precision settings, model preparation, a training step, evaluation.

Training, evaluation, lr-find and the benchmarks all call these, so what the benchmark measures
is what training does.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class AmpSettings:
    dtype: torch.dtype | None   # autocast dtype, None: full fp32
    use_grad_scaler: bool       # fp16 needs loss scaling; bf16 and fp32 do not
    device_type: str = "cpu"

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def amp_settings(device: torch.device, precision: str = "auto") -> AmpSettings:
    """fp16 + GradScaler on CUDA without bf16 (T4), bf16 where supported, fp32 on CPU unless asked."""
    kind = device.type
    if precision == "fp32":
        return AmpSettings(None, False, kind)
    if precision == "auto":
        if kind != "cuda":
            return AmpSettings(None, False, kind)
        precision = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if precision == "bf16":
        return AmpSettings(torch.bfloat16, False, kind)
    if precision == "fp16":
        return AmpSettings(torch.float16, kind == "cuda", kind)
    raise ValueError(f"precision {precision!r}: expected auto, fp16, bf16 or fp32")


def make_grad_scaler(amp: AmpSettings) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(amp.device_type, enabled=amp.use_grad_scaler)


def effective_channels_last(device: torch.device, requested: bool, batch_size: int,
                            model: nn.Module | None = None) -> bool:
    """channels_last (NHWC) as asked, except on CPU where torch 2.14's oneDNN crashes with it.

    On CPU the backward pass of a channels_last ResNet aborts the process (heap corruption) when
    the batch size is odd; `train_step` also trims an odd batch (images skipped as unreadable) by
    one image on CPU. And oneDNN's AVX-512 kernel for the weight gradient of a 1x1 stride-2
    convolution with fewer than 16 input channels (a narrow `resnet_small`'s shortcut) segfaults at
    48 px and up (measured here: 4, 8 and 12 channels crash, 16 and more do not), so such a model
    trains channels-first on CPU. Elsewhere NHWC is ~3x faster on CPU, and what GPUs want.
    """
    if not requested:
        return False
    if device.type == "cuda":
        return True
    narrow_1x1 = model is not None and any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels < 16
        for m in model.modules())
    return batch_size % 2 == 0 and not narrow_1x1


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool, compile: bool) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model


class GraphedTraining(nn.Module):
    """The model's training forward and backward as CUDA graph replays (`make_graphed_callables`).

    On a fast GPU a ResNet step at 128-160 px is bound by the host launching a thousand small
    kernels, not by the GPU running them; a replay launches them all at once. One capture, for the
    full batch at one input shape: a new shape (progressive resizing) drops the old capture and
    makes a new one (three warm-up steps and a capture); any other batch (a short one, or the model in eval mode) runs
    eagerly. The loss and the optimizer step stay outside the graph, so the LR schedule, GradScaler
    (fp16), gradient clipping and checkpoints are unchanged. Parameters are the wrapped model's, so
    `parameters()` and `unwrap` see the same tensors.
    """

    def __init__(self, model: nn.Module, amp: AmpSettings, batch_size: int, capture=None):
        super().__init__()
        self.model = model
        self.amp = amp
        self.batch_size = batch_size
        self.captures = 0                              # how many shapes were captured (for logs and tests)
        self.failed = ""                               # why a capture failed; then every step runs eagerly
        self._capture = capture or capture_cuda_graph  # tests pass a fake: CUDA graphs need a GPU
        # (shape key, replaying callable); a tuple, so the captured module is not registered as
        # a submodule of this one (its parameters and state_dict stay the model's alone).
        self._current: tuple[tuple, object] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.failed or not self.model.training or images.shape[0] != self.batch_size:
            return self.model(images)
        key = (tuple(images.shape), images.stride(), images.dtype, images.device)
        if self._current is None or self._current[0] != key:
            if self._current is not None:
                self._current = None                   # free the old capture's memory pool first,
                if images.is_cuda:                     # back to the device: a 16 GB T4 has no room for two
                    torch.cuda.empty_cache()
            try:
                self._current = (key, self._capture(self.model, images, self.amp))
            except Exception as exc:  # noqa: BLE001 - a speed-up must never end a run: go on eagerly
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                logging.getLogger("trainer").warning("CUDA graph capture failed (%s); training goes on without "
                                                     "graphs (--no-cuda-graphs skips trying)", self.failed)
                return self.model(images)
            self.captures += 1
        return self._current[1](images)


class _Forward(nn.Module):
    """A fresh module around `model` for each capture: make_graphed_callables patches the forward
    of the module it is given, and the model itself must stay plain (eval, checkpoints, export)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def capture_cuda_graph(model: nn.Module, images: torch.Tensor, amp: AmpSettings):
    """A callable replaying `model`'s forward (and, through autograd, its backward) for this shape."""
    # The warm-up iterations run the batch through BatchNorm in train mode; put the running
    # statistics back afterwards so capturing leaves the model exactly as it was.
    saved = [b.detach().clone() for b in model.buffers()]
    sample = images.detach().clone()
    # AMP inside a graph needs autocast's weight cache off; replays then cast weights every step,
    # as an eager step does anyway.
    autocast = (torch.autocast(amp.device_type, dtype=amp.dtype, cache_enabled=False) if amp.dtype is not None
                else contextlib.nullcontext())
    try:
        with autocast, _thread_local_capture() as extra:
            return torch.cuda.make_graphed_callables(_Forward(model), (sample,), **extra)
    finally:   # a failed capture too: the run goes on eagerly from the same state
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)


@contextlib.contextmanager
def _thread_local_capture():
    """Capture in "thread_local" error mode: the DataLoader's pin-memory thread keeps calling CUDA
    (pinned allocations, event queries) while we capture, which the default "global" mode forbids
    in every thread. Newer torch takes the mode as an argument of make_graphed_callables; older
    releases (those in NVIDIA's NGC containers of 2025-26 among them) do not, so there, and only for
    the duration of the capture, torch.cuda.graph (which make_graphed_callables looks up when it
    captures) defaults to that mode."""
    if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
        yield {"capture_error_mode": "thread_local"}
        return
    original = torch.cuda.graph

    class ThreadLocalGraph(original):
        def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="thread_local"):
            super().__init__(cuda_graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode)

    torch.cuda.graph = ThreadLocalGraph
    try:
        yield {}
    finally:
        torch.cuda.graph = original


def training_forward(model: nn.Module, amp: AmpSettings, device: torch.device, batch_size: int, cuda_graphs: bool,
                     compiled: bool, distributed: bool) -> tuple[nn.Module, str]:
    """What a training step calls: the model, or its CUDA-graphed training pass; and why, for the log."""
    if not cuda_graphs:
        return model, "off"
    if device.type != "cuda":
        return model, "off (no CUDA device)"
    if compiled:
        return model, "off (torch.compile does its own)"
    if distributed:
        return model, "off (not with DDP)"
    return GraphedTraining(model, amp, batch_size), "on"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (`.module`), torch.compile (`._orig_mod`) and GraphedTraining."""
    while True:
        if isinstance(model, GraphedTraining):
            model = model.model
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@dataclass(frozen=True)
class InputNorm:
    """Per-channel mean and std (of pixel values in 0..1) for the uint8 images the loaders yield."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> normalised float32, on the images' device, memory format kept."""
        scale, shift = _norm_tensors(tuple(self.mean), tuple(self.std), images.device)
        return images.float().mul_(scale).add_(shift)


@functools.lru_cache(maxsize=16)
def _norm_tensors(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    # Cached per device: making them every step would be a blocking host-to-device copy.
    m = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
    return (1 / (255 * s)).float().to(device), (-m / s).float().to(device)


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool,
              norm: InputNorm | None = None):
    """Move a batch to the device; uint8 images are converted and normalised there (with `norm`)."""
    images = images.to(device, non_blocking=True)
    # The loaders' batches are channels_last already; either way the layout is settled on uint8
    # (a quarter of the bytes), and a no-op when it is already the one asked for.
    images = images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if images.dtype == torch.uint8:
        if norm is None:
            raise ValueError("uint8 images need an InputNorm (the dataset's mean and std)")
        images = norm.apply(images)
    return images, targets.to(device, non_blocking=True)


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, amp: AmpSettings,
               channels_last: bool, grad_clip: float = 0.0) -> torch.Tensor:
    """Forward, backward and optimizer step on one batch already on the device; returns the loss."""
    loss, _, _ = train_step_with_logits(model, images, targets, criterion, optimizer, scaler, amp, channels_last, grad_clip)
    return loss


def train_step_with_logits(model, images, targets, criterion, optimizer, scaler, amp, channels_last, grad_clip=0.0):
    """`train_step` that also returns the logits and the targets they are for (for running accuracy)."""
    if channels_last and images.dim() == 4:
        if images.device.type == "cpu" and len(images) % 2 == 1 and len(images) > 1:
            images, targets = images[:-1], targets[:-1]   # see effective_channels_last
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        logits = model(images)
        loss = criterion(logits, targets)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return loss.detach(), logits.detach(), targets


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[int]:
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hits = pred.eq(targets[:, None])
    return [int(hits[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


@dataclass(frozen=True)
class EvalResult:
    loss: float
    top1: float        # percent
    top5: float        # percent
    count: int
    per_class_correct: list[int]
    per_class_total: list[int]
    stopped: bool = False  # `should_stop` ended it early: the figures cover only the batches done
    # flip TTA (`flip=True`): the same figures for the mean of the logits of each image and its mirror
    # (FFCV sums them); None when not asked for. The plain figures above are always the plain model's.
    loss_flip: float | None = None
    top1_flip: float | None = None
    top5_flip: float | None = None


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp: AmpSettings,
             channels_last: bool, num_classes: int, distributed: bool = False,
             norm: InputNorm | None = None, should_stop: Callable[[], bool] | None = None,
             flip: bool = False) -> EvalResult:
    """Loss, top-1/top-5 and per-class counts over `loader` (summed over processes under DDP).

    flip: also score the mean of the logits of each image and its horizontal mirror (test-time
    augmentation), reported beside the plain figures, never in their place.

    should_stop: asked before each batch; once it answers True the rest is skipped and the result
    says `stopped` (a stop request must not wait for a whole ImageNet evaluation). Under DDP the
    flag is summed with the counts, so every process returns the same `stopped`.
    """
    model.eval()
    # loss*n, top1, top5, n, processes stopped; then flip TTA's loss*n, top1, top5
    sums = torch.zeros(8, dtype=torch.float64, device=device)
    per_class = torch.zeros(2, num_classes, dtype=torch.float64, device=device)
    for batch in loader:
        if should_stop is not None and should_stop():
            sums[4] = 1.0
            break
        images, targets = batch[0], batch[1]
        if len(targets) == 0:
            continue
        images, targets = to_device(images, targets, device, channels_last, norm)
        with amp.autocast():
            logits = model(images)
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, targets, reduction="sum")
        c1, c5 = topk_correct(logits, targets)
        sums[:4] += torch.tensor([float(loss), c1, c5, len(targets)], dtype=torch.float64, device=device)
        if flip:
            mirrored = images.flip(3)
            if channels_last:
                mirrored = mirrored.contiguous(memory_format=torch.channels_last)
            with amp.autocast():
                both = (logits + model(mirrored).float()) / 2
            f1, f5 = topk_correct(both, targets)
            sums[5:] += torch.tensor([float(nn.functional.cross_entropy(both, targets, reduction="sum")), f1, f5],
                                     dtype=torch.float64, device=device)
        correct = (logits.argmax(1) == targets).double()
        per_class[0].index_add_(0, targets, correct)
        per_class[1].index_add_(0, targets, torch.ones_like(correct))
    if distributed:
        torch.distributed.all_reduce(sums)
        torch.distributed.all_reduce(per_class)
    n = max(1.0, float(sums[3]))
    s = sums.tolist()
    return EvalResult(s[0] / n, 100 * s[1] / n, 100 * s[2] / n, int(s[3]),
                      [int(v) for v in per_class[0].tolist()], [int(v) for v in per_class[1].tolist()],
                      stopped=s[4] > 0, loss_flip=s[5] / n if flip else None, top1_flip=100 * s[6] / n if flip else None,
                      top5_flip=100 * s[7] / n if flip else None)


def make_optimizer(model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float) -> torch.optim.SGD:
    """SGD with weight decay on conv/linear weights only: decaying BN scales and biases hurts accuracy.

    On CUDA the fused implementation: a few kernels for all parameters instead of a few per
    tensor group, and with fp16 GradScaler unscales and skips inf steps inside it, without a sync."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.is_cuda for p in decay + no_decay) and bool(decay + no_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's per-parameter state (momentum buffers) but keep every setting of this
    optimizer's groups: the current config's LR, momentum and weight decay (a resume with changed
    settings uses the new values, as its log says), and the implementation (fused, foreach), which
    describes the machine it runs on: a run saved on a CPU may resume on a GPU or back."""
    kept = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, kept):
        params = group["params"]
        group.clear()   # also drops the saved run's `initial_lr` (its peak LR): the scheduler sets ours
        group.update(settings, params=params)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    from trainer.errors import TrainerError
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainerError("--device cuda was asked for but no CUDA GPU is visible (check nvidia-smi and the "
                               "container's --gpus flag), or use --device cpu / auto.")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name == "cpu":
        return torch.device("cpu")
    raise TrainerError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.")
