"""Real data: Fashion-MNIST (Debian's dataset-fashion-mnist) to >= 90% test top-1 on a CPU.

    .venv/bin/pytest tests/trainer/test_fashion_mnist.py -m slow -s
"""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import require
from tests.trainer.conftest import cli, metrics
from tests.trainer.fashion_mnist import SOURCE, convert


@pytest.mark.slow
def test_fashion_mnist_reaches_90_percent_with_the_recipe(tmp_path):
    require((SOURCE / "train-images-idx3-ubyte.gz").exists(),
            f"{SOURCE} is missing: sudo apt-get install dataset-fashion-mnist")
    started = time.monotonic()
    data = convert(tmp_path / "fashion-mnist")
    converted = time.monotonic() - started
    out = tmp_path / "run"
    result = cli("train", "--data", data, "--out", out, "--recipe", "fashion-mnist", "--device", "cpu")
    assert result.exit_code == 0, result.output
    total = time.monotonic() - started
    rows = metrics(out)
    best = max(r["val_top1"] for r in rows)
    print(f"\nfashion-mnist: val top-1 {best:.2f}% after {len(rows)} epochs; conversion {converted:.0f} s, "
          f"total {total:.0f} s; per epoch " + ", ".join(f"{r['epoch_seconds']:.0f} s" for r in rows))
    assert best >= 90.0, rows
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
