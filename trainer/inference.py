"""Rebuild a trained model from a checkpoint alone (no dataset needed): predict, evaluate, export."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import checkpoint as ckpt
from trainer.config import TrainConfig, from_dict
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


def load_model(path: str | Path) -> LoadedModel:
    payload: dict[str, Any] = ckpt.load(Path(path))
    config = from_dict(payload["config"])
    model = build_model(config.arch, len(payload["classes"]), width=config.width, depths=config.depths,
                        stem=stem_of_weights(payload["stem"], payload["model"]), dropout=config.dropout,
                        zero_init_residual=False)
    model.load_state_dict(payload["model"])
    model.eval()
    return LoadedModel(model, config, list(payload["classes"]), dict(payload.get("names") or {}), list(payload["mean"]),
                       list(payload["std"]), int(payload["eval_res"]), int(payload["eval_resize"]), int(payload["epoch"]))
