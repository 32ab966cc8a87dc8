"""Training through the CLI: it learns, it resumes exactly, it stops cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import TINY, cli, metrics
from trainer import checkpoint as ckpt
from trainer import train as train_module
from trainer.engine import AmpSettings
from trainer.checkpoint import resume_position
from trainer.train import init_distributed

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
    # The hint drops the spent budget (it counts every resume together: the same one stops at once).
    hint = (out / "train.log").read_text().split("Resume with: ")[1].splitlines()[0]
    assert "--max-hours" not in hint.split(" (or with")[0] and "or with a larger --max-hours" in hint, hint
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


def test_stop_file_saves_mid_epoch_and_exits_resumable(demo_data, trained_run, tmp_path):
    out, flag = tmp_path / "run", tmp_path / "stop-now"
    flag.touch()
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2", "--stop-file", flag)
    assert result.exit_code == 143, result.output
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert (payload["epoch"], payload["step_in_epoch"], payload["images_in_epoch"]) == (0, 1, 16)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["reason"] == "stop-file"
    # The hint removes the stop file first: with it still there the resumed run would stop at once.
    hint = (out / "train.log").read_text().split("Resume with: ")[1].splitlines()[0]
    assert hint.startswith(f"rm {flag} && ") and hint.endswith("--resume auto"), hint
    # A checkpoint written before "images_in_epoch" existed still resumes exactly.
    del payload["images_in_epoch"]
    ckpt.save(payload, out / "checkpoints" / "last.pt")
    flag.unlink()
    resumed = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    same_lines(metrics(out), metrics(trained_run))


def test_a_run_saved_without_loss_scaling_resumes_with_it(demo_data, tmp_path, monkeypatch):
    """Saved in fp32 (a CPU) or bf16, resumed where precision auto picks fp16 + GradScaler (a T4).
    No GPU here: the resume gets the settings amp_settings returns on a T4, autocast left off."""
    out, flag = tmp_path / "run", tmp_path / "stop-now"
    flag.touch()
    assert cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1", "--stop-file", flag).exit_code == 143
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["scaler"] == {}
    flag.unlink()
    monkeypatch.setattr(train_module, "amp_settings", lambda device, precision="auto": AmpSettings(None, True, "cpu"))
    resumed = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1")
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["scaler"]["scale"] > 0


def test_resume_with_another_batch_size_follows_the_new_schedule_and_trains_each_image_once(demo_data, tmp_path):
    """After an out-of-memory, say: the LR is the new batch's schedule at the same point of training
    (its own peak; linear still ends at zero), and the interrupted epoch skips the images done."""
    linear = [*TINY, "--epochs", "2", "--lr", "0.1", "--set", "lr_scale_batch=256", "--schedule", "linear",
              "--warmup-epochs", "0"]
    fresh = tmp_path / "fresh"
    assert cli("train", "--data", demo_data, "--out", fresh, *linear, "--batch-size", "8").exit_code == 0
    out, flag = tmp_path / "run", tmp_path / "stop-now"
    flag.touch()   # stops after the first step: 16 of the epoch's 160 images
    assert cli("train", "--data", demo_data, "--out", out, *linear, "--stop-file", flag).exit_code == 143
    flag.unlink()
    resumed = cli("train", "--data", demo_data, "--out", out, *linear, "--batch-size", "8")
    assert resumed.exit_code == 0, resumed.output
    log = (out / "train.log").read_text()
    assert "epoch 1, step 2/20" in log and "settings differ from the checkpoint's: batch_size" in log
    rows = metrics(out)
    assert [r["lr"] for r in rows] == [r["lr"] for r in metrics(fresh)] and rows[-1]["lr"] == 0.0
    assert [r["train_images"] for r in rows] == [160, 160]


def test_resume_position_counts_images_so_the_epoch_still_ends_at_its_last_step():
    # Same settings: exactly the saved step (8 of 10 steps of 16 images).
    assert resume_position(8 * 16, 1, 160, 16) == (128, 8)
    # 1 step at batch 16 on 2 processes (32 images), resumed on 1 process: 32 skipped, 8 steps left of 10.
    assert resume_position(32, 1, 160, 16) == (32, 2)
    # 1 step at batch 16 on 1 process, resumed on 2 processes of 80 images each, batch 8.
    assert resume_position(16, 2, 80, 8) == (8, 1)
    # 24 images done, resumed at batch 16: 136 left make 8 full steps, so it continues at step 2 of 10.
    assert resume_position(24, 1, 160, 16) == (24, 2)
    assert resume_position(0, 1, 160, 16) == (0, 0)


def test_a_stop_during_evaluation_saves_without_waiting_for_the_rest_of_it(data_copy, trained_run, tmp_path):
    """docker stop gives 10-30 s before SIGKILL and an ImageNet evaluation takes longer. Here the
    first val image is a FIFO, so the evaluation waits there until the test writes to it; the last
    val image is another FIFO nobody writes to: an evaluation that went on would hang on it."""
    val = data_copy / "val"
    classes = sorted(p.name for p in val.iterdir())
    first, last = val / classes[0] / "0-first.jpg", val / classes[-1] / "z-last.jpg"
    for fifo in (first, last):
        os.mkfifo(fifo)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "trainer", "train", "--data", str(data_copy), "--out", str(out), *TINY, "--epochs", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, fd = time.monotonic() + 120, None
    while fd is None:   # a FIFO opens for writing (non-blocking) only once the reader has it open
        try:
            fd = os.open(first, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)   # while the evaluation of epoch 1 waits for its first image
    os.write(fd, b"not an image")
    os.close(fd)
    try:
        output = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM during evaluation waited for the rest of the evaluation: " + proc.communicate()[0][-2000:])
    assert proc.returncode == 143, output
    assert "evaluation of epoch 1" in output and "Resume with:" in output
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert (payload["epoch"], payload["step_in_epoch"]) == (0, 10)   # trained, not evaluated
    assert not metrics(out)
    # The resumed run evaluates epoch 1 first; the FIFOs are now unreadable files, which evaluation
    # skips, so val is demo_data's again and the run ends as one never stopped.
    for fifo in (first, last):
        fifo.unlink()
        fifo.write_bytes(b"not an image")
    resumed = cli("train", "--data", data_copy, "--out", out, *TINY, "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    same_lines(metrics(out), metrics(trained_run))


def test_data_resized_below_the_eval_resize_is_warned_about(data_copy, tmp_path):
    meta_path = data_copy / "dataset.json"
    meta = json.loads(meta_path.read_text())
    for resize_short, warned in ((8, True), (16, False)):   # TINY evaluates at resize 16, crop 16
        meta_path.write_text(json.dumps({**meta, "resize_short": resize_short}))
        out = tmp_path / f"run{resize_short}"
        assert cli("train", "--data", data_copy, "--out", out, *TINY, "--epochs", "1").exit_code == 0
        log = (out / "train.log").read_text()
        assert ("--resize-short 8, below the evaluation's resize to 16 px" in log) == warned, log
        assert log.count("below the evaluation's resize") == (1 if warned else 0)


def test_nccl_ranks_select_their_gpu_before_joining_the_process_group(monkeypatch):
    """No GPU here: CUDA and the process group are stood in for; what is checked is the order."""
    calls = []
    for key, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **_: calls.append(("init", backend)))
    assert init_distributed("auto").local_rank == 1
    assert calls == [("set_device", 1), ("init", "nccl")]
    calls.clear()
    init_distributed("cpu")
    assert calls == [("init", "gloo")]


@pytest.mark.parametrize("how", ["SIGTERM to the process group", "SIGHUP", "SIGTERM to each process (pkill -f)"])
def test_a_stop_signal_with_loader_workers_saves_and_exits_cleanly(demo_data, tmp_path, how):
    """`timeout`, `kill -- -PGID`, systemd and Slurm signal the whole process group, workers
    included; `pkill -f "trainer train"` signals every process whose command line matches, the
    workers' too; a closed terminal or SSH session sends SIGHUP. Either way the run saves last.pt and
    exits with 128 + the signal, saying it once, and no worker's death turns it into a crash."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "trainer", "train", "--data", str(demo_data), "--out", str(out), *TINY,
            "--epochs", "500", "--workers", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "train.log").exists() or "epoch 1/500 lr" not in (out / "train.log").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)   # then the (persistent) workers are running
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) >= 2, workers
    if how == "SIGHUP":
        proc.send_signal(signal.SIGHUP)
        expected, name = 129, "SIGHUP"
    elif how.startswith("SIGTERM to each"):
        for pid in [proc.pid, *map(int, workers)]:
            os.kill(pid, signal.SIGTERM)
        expected, name = 143, "SIGTERM"
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        expected, name = 143, "SIGTERM"
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == expected, output
    assert "Traceback" not in output and "killed by signal" not in output, output
    assert output.count(f"received {name}") == 1, output
    assert (out / "checkpoints" / "last.pt").exists()
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["reason"], status["exit_code"]) == ("interrupted", name, expected)
    time.sleep(0.5)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert not alive, f"workers outlived the run: {alive}"
