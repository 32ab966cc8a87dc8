"""Top-k classes for image files, from a checkpoint (class names from the dataset's metadata)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trainer import decode
from trainer.engine import InputNorm
from trainer.errors import TrainerError
from trainer.inference import load_model


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[tuple[str, str, float]]     # (class folder, readable name, probability)


@torch.no_grad()
def predict(checkpoint: Path, images: list[Path], k: int = 5) -> list[Prediction]:
    loaded = load_model(checkpoint)
    results = []
    for path in images:
        try:
            img = decode.load_eval_crop(path, loaded.eval_resize, loaded.eval_res)
        except Exception as exc:  # noqa: BLE001 - any decoder error is the user's file
            raise TrainerError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
        x = InputNorm(tuple(loaded.mean), tuple(loaded.std)).apply(img)[None]
        probs = loaded.model(x).float().softmax(1)[0]
        p, idx = probs.topk(min(k, len(loaded.classes)))
        results.append(Prediction(str(path), [(loaded.classes[i], loaded.label(i), float(v)) for v, i in zip(p.tolist(), idx.tolist())]))
    return results
