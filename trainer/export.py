"""Export a checkpoint to ONNX (for TensorRT on a Jetson) or TorchScript, and check the outputs match.

The exported model takes normalised NCHW float32 images (batch dimension dynamic) and returns
logits; `<out>.json` beside it records classes, names, mean/std and the input size.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.errors import TrainerError
from trainer.inference import load_model

FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata_path: Path
    max_abs_diff: float | None    # largest |exported - checkpoint| logit on a random batch (None: not checked)


def export(checkpoint: Path, fmt: str, out: Path, opset: int = 17, dynamo: bool = False, check: bool = True,
           tolerance: float = 1e-3) -> ExportResult:
    if fmt not in FORMATS:
        raise TrainerError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    loaded = load_model(checkpoint)
    model = loaded.model
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, loaded.eval_res, loaded.eval_res)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():
        # torch >= 2.10 flags both exporters as deprecated; they remain what TensorRT and Jetson users load.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if fmt == "onnx":
            # The TorchScript-based exporter by default: it works on every torch the NGC images ship
            # (2.3+), takes a second rather than ten, and its graphs are what TensorRT parses best.
            if dynamo:
                torch.onnx.export(model, (example,), str(tmp), dynamo=True, input_names=["images"], output_names=["logits"],
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=max(opset, 18))
            else:
                torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset)
        else:
            torch.jit.trace(model, example).save(str(tmp))
    os.replace(tmp, out)
    meta_path = out.with_name(out.name + ".json")
    meta = {"checkpoint": str(checkpoint), "format": fmt, "arch": loaded.config.arch, "epoch": loaded.epoch,
            "input": {"name": "images", "shape": ["batch", 3, loaded.eval_res, loaded.eval_res], "dtype": "float32",
                      "resize": loaded.eval_resize, "crop": loaded.eval_res, "mean": loaded.mean, "std": loaded.std},
            "output": "logits", "classes": loaded.classes, "names": loaded.names}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    diff = max_difference(model, out, fmt, loaded.eval_res) if check else None
    if diff is not None and diff > tolerance:
        raise TrainerError(f"the exported model differs from the checkpoint by {diff:.2e} (> {tolerance:g}); "
                           f"{out} was written but should not be trusted. Try --format torchscript or another --opset.")
    return ExportResult(out, meta_path, diff)


@torch.no_grad()
def max_difference(model: torch.nn.Module, path: Path, fmt: str, res: int, batch: int = 3) -> float | None:
    """Largest absolute logit difference on a random batch (a batch size other than the traced one)."""
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(0))
    expected = model(x).numpy()
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            got = torch.jit.load(str(path))(x).numpy()
    return float(abs(got - expected).max())
