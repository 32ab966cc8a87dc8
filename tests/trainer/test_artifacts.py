"""What a finished run hands over: evaluate, predict, export (ONNX and TorchScript), lr-find."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import functional as F

from tests.trainer.conftest import TINY, cli
from trainer import decode
from trainer.inference import load_model


def test_evaluate_prints_top1_top5_loss_and_per_class_json(demo_data, trained_run, tmp_path):
    result = cli("evaluate", "--data", demo_data, "--checkpoint", trained_run / "checkpoints" / "best.pt",
                 "--workers", "0", "--out", tmp_path / "eval.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["images"] == 48 and set(report["per_class"]) == set(json.loads((demo_data / "dataset.json").read_text())["classes"])
    best = max(json.loads(l)["val_top1"] for l in (trained_run / "metrics.jsonl").read_text().splitlines())
    assert report["top1"] == pytest.approx(best, abs=1e-6)
    assert 0 < report["loss"] and report["top5"] >= report["top1"]


def test_predict_names_classes_from_dataset_json(demo_data, trained_run):
    image = sorted((demo_data / "val").glob("*/*.jpg"))[0]
    result = cli("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt", image, "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    [pred] = json.loads(result.output)
    names = json.loads((demo_data / "dataset.json").read_text())["names"]
    assert len(pred["top"]) == 3 and all(t["name"] == names[t["class"]] for t in pred["top"])
    assert sum(t["prob"] for t in pred["top"]) <= 1.0 + 1e-6
    text = cli("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt", image)
    assert names[pred["top"][0]["class"]] in text.output


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("fmt,suffix", [("onnx", "onnx"), ("torchscript", "pt")])
def test_export_matches_the_checkpoint(demo_data, trained_run, tmp_path, fmt, suffix):
    ckpt = trained_run / "checkpoints" / "best.pt"
    out = tmp_path / f"model.{suffix}"
    result = cli("export", "--checkpoint", ckpt, "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["classes"] == load_model(ckpt).classes
    # Independently of the export's own check: real images through both.
    loaded = load_model(ckpt)
    images = sorted((demo_data / "val").glob("*/*.jpg"))[:5]
    x = torch.stack([F.normalize(decode.load_eval_crop(p, meta["input"]["resize"], meta["input"]["crop"]).float() / 255,
                                 meta["input"]["mean"], meta["input"]["std"]) for p in images])
    with torch.no_grad():
        expected = loaded.model(x).numpy()
        if fmt == "onnx":
            import onnxruntime
            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = session.run(None, {"images": x.numpy()})[0]
        else:
            got = torch.jit.load(str(out))(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_lr_find_writes_a_plot_and_suggests_an_lr(demo_data, tmp_path):
    result = cli("lr-find", "--data", demo_data, "--out", tmp_path, "--steps", "12", "--arch", "resnet_small",
                 "--batch-size", "16", "--device", "cpu", "--set", "width=8", "--set", "depths=1", "--set", "workers=0",
                 "--set", "train_res=16")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "lr_find.json").read_text())
    assert 1e-6 < data["suggested_peak_lr"] < 10 and len(data["lr"]) >= 5
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    # `trainer train --lr` is per lr_scale_batch (256) images: the peak found at batch 16 is 16x that.
    assert (data["batch_size"], data["lr_scale_batch"]) == (16, 256)
    assert data["suggested_lr"] == pytest.approx(data["suggested_peak_lr"] * 256 / 16)
    assert f"--lr {data['suggested_lr']:.3g} " in result.output
    assert f"peak LR of {data['suggested_peak_lr']:.3g} at batch 16" in result.output
