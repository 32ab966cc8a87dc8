"""Training through the CLI: it learns, it resumes exactly, it stops cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.trainer.conftest import TINY, cli, metrics

DETERMINISTIC = ("epoch", "lr", "train_res", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")


def same_lines(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for key in DETERMINISTIC:
            assert abs(ra[key] - rb[key]) <= 1e-6 * max(1.0, abs(ra[key])), (ra["epoch"], key, ra[key], rb[key])


def test_a_few_epochs_on_generated_data_learn(trained_run):
    rows = metrics(trained_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_sec",
                "epoch_seconds", "data_wait_fraction", "max_gpu_mem"):
        assert key in rows[-1]
    assert rows[-1]["val_top1"] >= 60, rows  # 4 classes: chance is 25%
    for name in ("last.pt", "best.pt"):
        path = trained_run / "checkpoints" / name
        sha = subprocess.run(["sha256sum", name], cwd=path.parent, capture_output=True, text=True).stdout
        assert (path.parent / f"{name}.sha256").read_text() == sha
    payload = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=False)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in payload["model"])
    assert payload["classes"] == sorted(payload["classes"]) and len(payload["classes"]) == 4
    assert {"optimizer", "scheduler", "scaler", "rng", "config", "epoch"} <= set(payload)
    assert (trained_run / "curves.png").stat().st_size > 1000
    run_config = json.loads((trained_run / "config.json").read_text())
    assert run_config["config"]["arch"] == "resnet_small" and "torch" in run_config["versions"]
    assert "epoch 2/2" in (trained_run / "train.log").read_text()


def test_stopped_by_max_hours_then_resumed_matches_an_uninterrupted_run(demo_data, trained_run, tmp_path):
    out = tmp_path / "run"
    # A budget of ~20 ms is spent within the first steps (an epoch is 10 steps), however fast the
    # machine: the run stops at a step boundary inside epoch 1.
    first = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--max-hours", "0.000005")
    assert first.exit_code == 0, first.output
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "time_limit"
    assert len(metrics(out)) < 2
    second = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--resume", "auto")
    assert second.exit_code == 0, second.output
    same_lines(metrics(out), metrics(trained_run))
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_sigterm_saves_last_pt_exits_143_and_resume_auto_finishes_the_same(demo_data, trained_run, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "trainer", "train", "--data", str(demo_data), "--out", str(out), *TINY, "--epochs", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    # The header line is logged once the signal handlers are in place. A tiny epoch takes a
    # fraction of a second, so freeze the run first: SIGTERM then lands mid-run however fast
    # or loaded the machine is, and the trainer sees it at its next step boundary.
    while not (out / "train.log").exists() or "training resnet_small" not in (out / "train.log").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    assert "finished" not in (out / "train.log").read_text()
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    assert "Resume with:" in output and "--resume auto" in output
    assert (out / "checkpoints" / "last.pt").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    resumed = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--resume", "auto")
    assert resumed.exit_code == 0, resumed.output
    same_lines(metrics(out), metrics(trained_run))


def test_corrupted_last_pt_falls_back_to_the_previous_checkpoint(demo_data, trained_run, tmp_path):
    import shutil
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    last = out / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--resume", "auto")
    assert result.exit_code == 0, result.output
    log = (out / "train.log").read_text()
    assert "corrupt" in log and "falling back" in log and "last.prev.pt" in log and "resumed from" in log
    assert (out / "checkpoints" / "last.pt.corrupt").exists()
    same_lines(metrics(out), metrics(trained_run))   # epoch 2 was redone from the epoch-1 checkpoint, identically


def test_resume_auto_without_a_checkpoint_starts_fresh_and_finished_run_is_a_no_op(demo_data, trained_run, tmp_path):
    import shutil
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    again = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--resume", "auto")
    assert again.exit_code == 0
    assert len(metrics(out)) == 2


def test_torchrun_two_processes_gloo_runs_one_epoch(demo_data, tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "trainer", "train",
                           "--data", str(demo_data), "--out", str(out), *TINY, "--epochs", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = metrics(out)
    assert len(rows) == 1 and rows[0]["val_top1"] is not None
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch"] == 32
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in payload["model"])
    assert len(payload["rng"]) == 2


def test_stop_file_saves_mid_epoch_and_exits_resumable(demo_data, tmp_path):
    out, flag = tmp_path / "run", tmp_path / "stop-now"
    flag.touch()
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--stop-file", flag)
    assert result.exit_code == 143, result.output
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert (payload["epoch"], payload["step_in_epoch"]) == (0, 1)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["reason"] == "stop-file"
