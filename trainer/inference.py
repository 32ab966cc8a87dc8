"""Rebuild a trained model from a checkpoint alone (no dataset needed): predict, evaluate, export."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from trainer import checkpoint as ckpt
from trainer.config import TrainConfig, from_dict
from trainer.errors import TrainerError
from trainer.models import build_model, stem_of_weights


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module          # eval mode, on CPU, fp32
    config: TrainConfig
    classes: list[str]
    names: dict[str, str]
    mean: list[float]
    std: list[float]
    eval_res: int
    eval_resize: int
    epoch: int

    def label(self, index: int) -> str:
        cls = self.classes[index]
        return self.names.get(cls, cls)


# What rebuilding the model needs beyond the weights and class list (`trainer train` writes them all).
RUN_KEYS = ("config", "stem", "mean", "std", "eval_res", "eval_resize", "epoch")


def load_model(path: str | Path) -> LoadedModel:
    """TrainerError, not a traceback, for a file that is not a full checkpoint of `trainer train`
    (a plain state_dict, one without its config) or whose weights do not fit its own settings."""
    path = Path(path)
    payload: dict[str, Any] = ckpt.load(path)
    ckpt.require(payload, RUN_KEYS, path, "rebuilding its model")
    try:
        config = from_dict(payload["config"])
    except TrainerError as exc:
        raise TrainerError(f"checkpoint {path}: {exc.message}") from exc
    model = build_model(config.arch, len(payload["classes"]), width=config.width, depths=config.depths,
                        stem=stem_of_weights(payload["stem"], payload["model"]), dropout=config.dropout,
                        zero_init_residual=False, blurpool=config.blurpool)
    ckpt.load_weights(model, payload["model"], path,
                      f"Its {len(payload['classes'])} classes or its settings were changed after training; use "
                      f"another copy of it, such as the run's last.pt.")
    model.eval()
    return LoadedModel(model, config, list(payload["classes"]), dict(payload.get("names") or {}), list(payload["mean"]),
                       list(payload["std"]), int(payload["eval_res"]), int(payload["eval_resize"]), int(payload["epoch"]))
