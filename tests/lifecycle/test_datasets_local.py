"""`orch data prepare|list|rm` and `--data dataset:NAME` on this machine: from the files as downloaded (a
miniature CIFAR-100 tarball in its real layout) to a kept, sharded dataset, a job trained on it, and a teardown
that leaves it. Real: the `orch` and `trainer` commands, as a user runs them (trainer as a local process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prepare.miniature import make_cifar100

ORCH = str(Path(sys.executable).with_name("orch"))
TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--epochs", "1", "--batch-size", "5")


def orch(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([ORCH, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "ORCH_LOCAL_RUNNER": "process"})


@pytest.fixture
def downloads(tmp_path) -> Path:
    make_cifar100(tmp_path / "downloads")
    return tmp_path / "downloads"


def test_a_dataset_prepared_from_the_download_is_kept_trained_on_and_outlives_the_job(downloads):
    r = orch("data", "prepare", "cifar", "--kind", "cifar100", "--source", str(downloads), "--target", "local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Dataset cifar: 5 classes, 15 train and 10 val images" in r.stdout
    again = orch("data", "prepare", "cifar", "--kind", "cifar100", "--source", str(downloads))
    assert again.returncode == 2 and "exists" in again.stderr and "--replace" in again.stderr

    listed, = json.loads(orch("data", "list", "--json").stdout)
    assert (listed["name"], listed["kind"], listed["classes"], listed["train_images"], listed["val_images"]) == \
        ("cifar", "cifar100", 5, 15, 10)
    assert listed["location"].startswith(os.environ["ORCH_HOME"]) and listed["dollars_per_month"] is None
    assert listed["shards"] >= 1 and listed["bytes"] > 0
    assert not (Path(listed["location"]) / "prepared").exists()  # the work folder went once packed
    assert "cifar" in orch("data", "list").stdout

    launched = orch("launch", "--target", "local", "--data", "dataset:cifar", "--name", "dsjob", "--", *TINY)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    followed = orch("logs", "dsjob", "--follow")
    assert followed.returncode == 0 and "epoch 1/1" in followed.stdout, followed.stdout + followed.stderr
    assert orch("teardown", "dsjob", "--yes").returncode == 0
    assert [d["name"] for d in json.loads(orch("data", "list", "--json").stdout)] == ["cifar"]  # a job's teardown keeps it

    assert orch("data", "rm", "cifar", "--yes").returncode == 0
    assert json.loads(orch("data", "list", "--json").stdout) == []
    gone = orch("launch", "--target", "local", "--data", "dataset:cifar", "--name", "dsjob2", "--", *TINY)
    assert gone.returncode == 2 and "no such dataset here" in gone.stderr and "orch data prepare cifar" in gone.stderr


def test_bad_dataset_requests_are_refused_before_anything_is_written(downloads, tmp_path):
    wrong = orch("data", "prepare", "wrong", "--kind", "imagenet", "--source", str(downloads))
    assert wrong.returncode == 1 and "trainer prepare failed" in wrong.stderr
    assert json.loads(orch("data", "list", "--json").stdout) == []
    for args, says in ((("BAD_NAME", "--kind", "cifar100", "--source", str(downloads)), "is invalid"),
                       (("x", "--kind", "mnist", "--source", str(downloads)), "--kind 'mnist'"),
                       (("x", "--kind", "cifar100", "--source", str(tmp_path / "none")), "no such file or folder"),
                       (("x", "--kind", "cifar100", "--source", "kaggle:imagenet-object-localization-challenge"),
                        "not built yet")):
        r = orch("data", "prepare", *args)
        assert r.returncode == 2 and says in r.stderr, r.stderr
    r = orch("launch", "--instance", "g4dn.xlarge", "--data", "dataset:cifar", "--dry-run")
    assert r.returncode == 2 and "not built yet" in r.stderr
