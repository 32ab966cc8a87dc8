"""Training settings: the defaults (here, each with a comment), a recipe file, then flags.

Precedence: defaults < `trainer/recipes/NAME.toml` (or a path to a .toml) < command-line flags.
The resolved `TrainConfig` is frozen, written to OUT/config.json and stored in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---
    arch: str = "resnet50"            # torchvision model name, or one of ours: resnet_small, simple_cnn
    width: int = 64                   # our models: channels of the first stage (torchvision models ignore it)
    depths: tuple[int, ...] = (2, 2, 2, 2)  # our resnet_small: residual blocks per stage (2,2,2,2 = ResNet-18)
    stem: str = "auto"                # ResNets (ours, torchvision's): "imagenet" (7x7/2 + maxpool), "small" (3x3/1), auto: small when res <= 96
    zero_init_residual: bool = True   # zero the last BN of each residual block: each block starts as identity
    blurpool: bool = False            # ResNets only: blur (3x3 binomial) the input of each strided conv with >= 16 channels (FFCV)
    dropout: float = 0.0              # dropout before the classifier (our models)
    init_weights: str = ""            # fine-tune: start from "imagenet" (torchvision's weights for arch) or a weights file
                                      # instead of random weights; tensors of another shape (the classifier) stay random
    # --- optimisation ---
    epochs: int = 90                  # passes over the training set
    batch_size: int = 256             # images per step per process (DDP: per GPU)
    lr: float = 0.1                   # peak LR for batch_size 256; scaled linearly with the global batch
    lr_scale_batch: int = 256         # the batch size `lr` is given for (0: use lr as is)
    momentum: float = 0.9             # SGD momentum
    nesterov: bool = True             # Nesterov momentum
    weight_decay: float = 5e-5        # L2 on conv/linear weights only (never BN or bias)
    label_smoothing: float = 0.1      # cross-entropy label smoothing
    schedule: str = "onecycle"        # step (LR/10 at each third) | cosine | onecycle | linear (to zero) | constant
    warmup_epochs: float = 2.0        # linear warmup from lr/warmup_div (step, cosine, linear); onecycle uses pct_start
    warmup_div: float = 25.0          # warmup starts at lr / warmup_div
    pct_start: float = 0.25           # onecycle: fraction of training spent rising to the peak
    grad_clip: float = 0.0            # clip the global grad norm (0: off)
    # --- resolution and augmentation ---
    train_res: int = 176              # train crop (px) at the end of progressive resizing
    train_res_start: int = 0          # progressive resizing: start crop (0: no progressive resizing)
    res_ramp_epochs: float = 0.0      # the ramp from train_res_start ends (train_res reached) at this epoch (0: 3/4 of the epochs)
    res_ramp_start: float = 0.0       # ...and starts here: the epochs before it train at train_res_start (FFCV's start_ramp)
    eval_res: int = 224               # eval centre crop (px); larger than train_res is the "FixRes" effect
    eval_resize: int = 0              # eval short-side resize before the crop (0: eval_res / 0.875)
    crop_scale: tuple[float, float] = (0.25, 1.0)  # random-resized-crop area range (torchvision uses 0.08)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)  # random-resized-crop aspect range
    crop_pad: int = 0                 # > 0: CIFAR's crop instead (zero-pad N px, a random train_res window; no scale/ratio)
    hflip: bool = True                # random horizontal flip
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # input normalisation (ImageNet stats)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)   # input normalisation: per-channel spread
    # --- speed ---
    precision: str = "auto"           # auto (fp16 on T4, bf16 where supported, fp32 on CPU) | fp16 | bf16 | fp32
    channels_last: bool = True        # NHWC memory format: faster convolutions with tensor cores
    compile: bool = False             # torch.compile the model (slow first epoch, faster after)
    cuda_graphs: bool = True          # replay each training step's forward and backward as a CUDA graph (GPU only;
                                      # not with compile or DDP): less host time launching kernels
    workers: int = 8                  # DataLoader worker processes per training process
    prefetch_factor: int = 4          # batches each worker prepares ahead
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    # --- stopping, evaluation, checkpoints ---
    target_top1: float = 0.0          # stop once val top-1 (percent) reaches this (0: off)
    max_hours: float = 0.0            # save and stop before this wall-clock budget (0: off)
    checkpoint_minutes: float = 30.0  # also save last.pt every N minutes inside an epoch (0: only per epoch)
    eval_every: int = 1               # evaluate every N epochs (always after the last)
    tta: str = "none"                 # "flip": also report val top-1/top-5 of the mean of each image's and its mirror's
                                      # logits (FFCV), beside the plain figures; best.pt and target_top1 use the plain ones
    log_every_seconds: float = 30.0   # plain progress lines this often when output is not a terminal
    tensorboard: bool = True          # write TensorBoard scalars to OUT/tensorboard/ (needs the tensorboard package)
    seed: int = 0                     # seeds init, shuffling and augmentation
    deterministic: bool = False       # cuDNN deterministic algorithms (slower)
    dist_timeout_minutes: float = 10.0  # several processes: a collective waiting this long for a rank that is gone fails
                                      # the run (a machine of a multi-node run lost); last.pt stays as last saved
    recipe: str = ""                  # the recipe this config came from (informational)


INT_TUPLES = {"depths"}
FLOAT_TUPLES = {"crop_scale", "crop_ratio", "mean", "std"}
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
SCHEDULES = ("step", "cosine", "onecycle", "linear", "constant")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
TTAS = ("none", "flip")


# The recipe for each dataset `trainer prepare` makes, and its images' size (0: they vary).
DATASET_RECIPES = {"imagenet": ("t4-rn18-fast", 0), "tiny-imagenet": ("t4-tiny-rn18", 64),
                   "cifar100": ("t4-cifar100-rn18", 32)}


def recipe_hint(dataset: str, c: TrainConfig) -> str:
    """A line for the log when a prepared dataset is trained without a recipe, with settings meant
    for another one (the defaults are ImageNet's); empty when there is nothing to say."""
    if c.recipe or dataset not in DATASET_RECIPES:
        return ""
    recipe, size = DATASET_RECIPES[dataset]
    if size and c.train_res > 2 * size:
        return (f"no --recipe: training {dataset}'s {size} px images upsampled to {c.train_res} px costs about "
                f"{(c.train_res / size) ** 2:.0f}x the compute of their own size; `--recipe {recipe}` trains "
                f"them at {size} px (or set --set train_res={size} --set eval_res={size} --set eval_resize={size})")
    if not size and c.arch == "resnet50" and c.epochs >= 60:
        return (f"no --recipe: the defaults train resnet50 for {c.epochs} epochs (days on one T4); `--recipe {recipe}` "
                f"aims at 60% top-1 (~65% expected) in about 3 hours there, `--recipe t4-rn50-fast` at ~72.5% in under 8 "
                f"and `--recipe t4-rn50` at ~75% in ~13.5 (estimates; `trainer recipes` lists them)")
    return ""


def setting_help() -> dict[str, str]:
    """Each setting's meaning: its comment in TrainConfig above, the one place it is written (a test
    checks that every setting has one)."""
    import inspect
    import re

    out: dict[str, str] = {}
    last = None
    for line in inspect.getsourcelines(TrainConfig)[0]:
        field_line = re.match(r"\s+(\w+): [^#]*#\s*(.*)$", line)
        comment_line = re.match(r"\s+#\s*(.*)$", line)
        if field_line:
            last = field_line.group(1)
            out[last] = field_line.group(2).strip()
        elif comment_line and last and not comment_line.group(1).startswith("---"):
            out[last] += " " + comment_line.group(1).strip()   # the comment goes on below
        else:
            last = None
    return out


def setting_sources(recipe: str | None, overrides: dict[str, Any]) -> dict[str, str]:
    """Where each setting of `resolve(recipe, overrides)` comes from: default, recipe or --set."""
    sources = {name: "default" for name in FIELDS}
    if recipe:
        sources.update({name: "recipe" for name in load_recipe(recipe)})
        sources["recipe"] = "recipe"
    sources.update({name: "--set" for name, value in overrides.items() if value is not None})
    return sources


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_path(name: str) -> Path:
    """A recipe name (`fashion-mnist`) or a path to a .toml file."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = RECIPES_DIR / f"{name}.toml"
    if candidate.exists():
        return candidate
    raise TrainerError(
        f"unknown recipe {name!r}. Valid recipes: {', '.join(available_recipes()) or '(none)'}; "
        f"or pass a path to a .toml file. List them with `trainer recipes`."
    )


def load_recipe(name: str) -> dict[str, Any]:
    path = recipe_path(name)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TrainerError(f"recipe {path} is not valid TOML: {exc}. Fix the file and run again.") from exc
    # Allow one optional [train] table, so a recipe can carry notes in other tables.
    values = data.get("train", data)
    return {k: v for k, v in values.items() if not isinstance(v, dict)}


def _coerce(name: str, value: Any) -> Any:
    default = FIELDS[name].default
    try:
        if name in INT_TUPLES:
            return tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
        if name in FLOAT_TUPLES:
            return tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise TrainerError(f"setting {name!r} got {value!r}, expected {type(default).__name__} like {default!r}") from exc


def resolve(recipe: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the recipe, then `overrides` (flags that were given; None values are skipped)."""
    values: dict[str, Any] = {}
    if recipe:
        values.update(load_recipe(recipe))
        values["recipe"] = recipe
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise TrainerError(
            f"unknown setting(s) {', '.join(unknown)}"
            + (f" in recipe {recipe!r}" if recipe else "")
            + f". Valid settings: {', '.join(FIELDS)}."
        )
    config = TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    validate(config)
    return config


def validate(c: TrainConfig) -> None:
    problems = []
    if c.schedule not in SCHEDULES:
        problems.append(f"schedule {c.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if c.precision not in PRECISIONS:
        problems.append(f"precision {c.precision!r} is not one of {', '.join(PRECISIONS)}")
    if c.epochs < 1:
        problems.append("epochs must be at least 1")
    if c.batch_size < 1:
        problems.append("batch_size must be at least 1")
    if c.lr <= 0:
        problems.append("lr must be positive")
    if c.train_res < 8 or c.eval_res < 8:
        problems.append("train_res and eval_res must be at least 8 px")
    if len(c.crop_scale) != 2 or not 0 < c.crop_scale[0] <= c.crop_scale[1] <= 1:
        problems.append("crop_scale must be two numbers 0 < lo <= hi <= 1 (e.g. --set crop_scale=0.25,1)")
    if len(c.crop_ratio) != 2 or not 0 < c.crop_ratio[0] <= c.crop_ratio[1]:
        problems.append("crop_ratio must be two numbers 0 < lo <= hi (e.g. --set crop_ratio=0.75,1.333)")
    if not 0 <= c.crop_pad <= min(r for r in (c.train_res, c.train_res_start) if r) // 2:
        problems.append("crop_pad must be between 0 (off) and half the train resolution (CIFAR uses 4 at 32 px)")
    if c.width < 1 or not c.depths or any(d < 1 for d in c.depths):
        problems.append("width must be at least 1 and depths one or more blocks per stage, each at least 1 (e.g. 2,2,2,2)")
    if not 0 <= c.dropout < 1:
        problems.append("dropout must be at least 0 and below 1")
    if not 0 <= c.label_smoothing < 1:
        problems.append("label_smoothing must be at least 0 and below 1 (0.1 is usual)")
    if not 0 <= c.momentum < 1:
        problems.append("momentum must be at least 0 and below 1 (0.9 is usual)")
    if c.weight_decay < 0:
        problems.append("weight_decay must be >= 0")
    if c.grad_clip < 0:
        problems.append("grad_clip must be >= 0 (0: off)")
    if c.max_hours < 0 or c.target_top1 < 0 or c.checkpoint_minutes < 0:
        problems.append("max_hours, target_top1 and checkpoint_minutes must be >= 0 (0: off)")
    if c.stem not in ("auto", "imagenet", "small"):
        problems.append("stem must be auto, imagenet or small")
    if c.dist_timeout_minutes <= 0:
        problems.append("dist_timeout_minutes must be positive")
    if c.workers < 0:
        problems.append("workers must be >= 0")
    if c.tta not in TTAS:
        problems.append(f"tta {c.tta!r} is not one of {', '.join(TTAS)}")
    # Divisors and counts that would only fail (ZeroDivisionError, a DataLoader error) epochs later.
    if c.eval_every < 1:
        problems.append("eval_every must be at least 1 (evaluate every N epochs; the last is always evaluated)")
    if c.warmup_div <= 0:
        problems.append("warmup_div must be positive (warmup starts at lr / warmup_div)")
    if c.res_ramp_start < 0 or (c.res_ramp_start and c.res_ramp_epochs and c.res_ramp_start >= c.res_ramp_epochs):
        problems.append("res_ramp_start must be >= 0 and below res_ramp_epochs (the ramp starts, then ends)")
    if c.warmup_epochs < 0:
        problems.append("warmup_epochs must be >= 0")
    if not 0 <= c.pct_start <= 1:
        problems.append("pct_start must be between 0 and 1")
    if c.lr_scale_batch < 0:
        problems.append("lr_scale_batch must be >= 0 (0: use lr as is)")
    if c.prefetch_factor < 1:
        problems.append("prefetch_factor must be at least 1")
    if len(c.std) != 3 or any(v <= 0 for v in c.std) or len(c.mean) != 3:
        problems.append("mean and std must be three numbers each, std positive")
    if problems:
        raise TrainerError("invalid settings: " + "; ".join(problems) + ". See `trainer train --help`.")


def to_dict(c: TrainConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(c).items()}


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a config stored in a checkpoint; settings added since are left at their defaults."""
    return TrainConfig(**{k: _coerce(k, v) for k, v in d.items() if k in FIELDS})
