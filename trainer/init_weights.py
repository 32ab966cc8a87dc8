"""Start a run from weights trained elsewhere (fine-tuning) instead of random ones.

`--init-weights imagenet` takes torchvision's ImageNet weights for `--arch` (downloaded once into
torch's hub cache, $TORCH_HOME/hub/checkpoints); `--init-weights FILE` takes a file of weights:
a plain state_dict (torchvision's .pth), one saved from a DataParallel / DDP / torch.compile model
or a Lightning module (their "module.", "_orig_mod." or "model." prefixes are found and dropped),
a dict holding one under "state_dict" / "model_state_dict" / "model", or a trainer checkpoint.

Every tensor whose name and shape match the model is copied; the rest keep their random
initialisation and are named in the log: the classifier when the class count differs (1000
ImageNet classes, 100 here), the first conv when the stem differs (the small stem's 3x3 against
ImageNet's 7x7). Weights that fit less than half of the model, or leave more than a few of their
own tensors over (resnet34's in a resnet18), are refused: they were made for another architecture.
"""
from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainer.checkpoint import load_untrusted, unreadable
from trainer.errors import TrainerError

IMAGENET = "imagenet"
WRAPPERS = ("state_dict", "model_state_dict", "model")   # where saved dicts keep their weights


@dataclass(frozen=True)
class InitReport:
    source: str                 # what was read: the file, or torchvision's weights' name
    total: int                  # model tensors in all
    fresh: tuple[str, ...]      # model tensors left at their random initialisation
    prefix: str = ""            # dropped from the file's names ("module.", ...)

    @property
    def loaded(self) -> int:    # model tensors copied from it
        return self.total - len(self.fresh)

    def describe(self) -> str:
        line = f"weights from {self.source}: {self.loaded} of {self.total} tensors"
        if self.prefix:
            line += f" (names without their {self.prefix!r} prefix)"
        if self.fresh:
            shown = ", ".join(self.fresh[:6]) + (f" (+{len(self.fresh) - 6} more)" if len(self.fresh) > 6 else "")
            line += f"; random init for {shown} (absent there, or another shape)"
        return line


def init_from(model: nn.Module, spec: str, arch: str) -> InitReport:
    """Copy the matching tensors of `spec` ("imagenet" or a file) into `model`; TrainerError if unusable."""
    state, source = read_weights(spec, arch)
    return load_matching(model, state, source, arch)


def read_weights(spec: str, arch: str) -> tuple[dict[str, torch.Tensor], str]:
    if spec == IMAGENET:
        return _torchvision_weights(arch)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TrainerError(f"--init-weights {spec}: no such file. Pass a .pth/.pt file of weights, or "
                           f"`--init-weights imagenet` for torchvision's ImageNet weights of --arch.")
    # Data only: a weights file from the internet must not run code when it is read.
    obj = load_untrusted(path, "--init-weights")
    for key in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrainerError(f"--init-weights {spec} holds no state_dict (a dict of tensor names to tensors, as "
                           f"`torch.save(model.state_dict(), path)` writes).")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, str(path)


def _torchvision_weights(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError) as exc:
        raise TrainerError(f"--init-weights imagenet: torchvision has no ImageNet weights for --arch {arch} (ours, "
                           f"resnet_small and simple_cnn, start from random weights only). Use a torchvision model "
                           f"such as resnet18, or pass a weights file.") from exc
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        # torch.hub reads its cache unrestricted unless told: the file there may not be the one downloaded.
        state = weights.get_state_dict(progress=False, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unreadable(exc, "--init-weights imagenet: torch's cached", cached) from exc
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, a torn download: all mean "not here"
        raise TrainerError(
            f"--init-weights imagenet: could not download {weights} from {weights.url} ({type(exc).__name__}: "
            f"{exc}). Download it where there is internet and pass the file (--init-weights FILE), or put it in "
            f"torch's cache, {cached}.") from exc
    return state, f"torchvision {weights}"


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> InitReport:
    own = model.state_dict()
    prefix = _common_prefix(state, set(own))
    copied: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        theirs = state.get(prefix + name)
        if theirs is not None and theirs.shape == tensor.shape:
            copied[name] = theirs.to(dtype=tensor.dtype)
    # BatchNorm's num_batches_tracked are bookkeeping, not weights: they neither count nor decide
    counted = [n for n in own if not _bookkeeping(n)]
    fresh = tuple(n for n in counted if n not in copied)
    # The file's weights (under the prefix: other entries, an EMA copy say, are not the model's) that
    # found no place. For the same architecture that is its head, and its stem when the stem differs;
    # weights of a deeper or another model leave whole blocks over (resnet34's into resnet18).
    unused = [k for k in state if k.startswith(prefix) and not _bookkeeping(k) and k[len(prefix):] not in copied]
    if len(fresh) * 2 > len(counted) or len(unused) > max(4, len(state) // 10):
        raise TrainerError(
            f"--init-weights {source} does not fit --arch {arch}: "
            f"{len(counted) - len(fresh)} of the model's {len(counted)} tensors match it by name and shape, and "
            f"{len(unused)} of its own find no place (such as {', '.join(unused[:3]) or '-'}; the model's unmatched "
            f"ones include {', '.join(fresh[:3]) or '-'}). It holds weights of another architecture: pass the "
            f"--arch they were trained as.")
    model.load_state_dict({**own, **copied})
    return InitReport(source, len(counted), fresh, prefix)


def _bookkeeping(name: str) -> bool:
    return name.endswith("num_batches_tracked")


def _common_prefix(state: dict[str, torch.Tensor], names: set[str]) -> str:
    """The prefix most of the file's names carry before a name of the model ("" when none)."""
    found: Counter[str] = Counter()
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in names:
                found[".".join(parts[:i]) + ("." if i else "")] += 1
                break
    return found.most_common(1)[0][0] if found else ""
