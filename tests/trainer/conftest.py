"""Fixtures for the trainer tests: a tiny generated dataset and one short finished run, shared."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.cli import app

# A model and data small enough that an epoch takes about a second on a busy CPU.
TINY = ["--arch", "resnet_small", "--width", "8", "--set", "depths=1,1", "--set", "stem=small",
        "--batch-size", "16", "--workers", "0", "--train-res", "16", "--eval-res", "16", "--set", "eval_resize=16",
        "--set", "log_every_seconds=0.5", "--device", "cpu", "--lr", "0.2", "--set", "lr_scale_batch=0",
        "--set", "label_smoothing=0", "--set", "crop_scale=0.6,1"]


def cli(*args: str | Path):
    """Run `trainer ARGS` in-process; returns the click Result (exit_code, output)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("demo")
    result = cli("demo-data", "--dest", dest, "--classes", "4", "--per-class", "40", "--val-per-class", "12",
                 "--size", "16", "--seed", "1")
    assert result.exit_code == 0, result.output
    return dest


@pytest.fixture
def data_copy(demo_data, tmp_path) -> Path:
    """A private copy of the demo data a test may damage."""
    return Path(shutil.copytree(demo_data, tmp_path / "data"))


@pytest.fixture(scope="session")
def trained_run(demo_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2")
    assert result.exit_code == 0, result.output
    return out
