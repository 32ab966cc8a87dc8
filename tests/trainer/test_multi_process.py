"""`trainer train` runs one process per GPU by itself (`--nproc auto`), so a multi-GPU machine (or
`orch launch` on a 4-GPU instance, which starts `trainer train`) uses every GPU. On this CPU the
same launch runs N gloo ranks (`--nproc N`), which is what these tests drive: the ranks train as one
DDP run, and the exit status and the stop on a signal are the single process's."""
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

from tests.trainer.conftest import TINY, metrics
from trainer.errors import TrainerError
from trainer.launch import processes_wanted


@pytest.mark.parametrize("nproc, device, gpus, env, expected", [
    ("auto", "auto", 4, {}, 4),             # a g4dn.12xlarge: every GPU
    ("auto", "cuda", 4, {}, 4),
    ("auto", "auto", 1, {}, 1),             # a g4dn.2xlarge: one process, as before
    ("auto", "auto", 0, {}, 1),             # no GPU
    ("auto", "cpu", 4, {}, 1),              # the CPU asked for
    ("auto", "cuda:1", 4, {}, 1),           # one GPU picked
    ("1", "auto", 4, {}, 1),                # opted out
    ("2", "cpu", 0, {}, 2),                 # gloo ranks on a CPU
    ("auto", "auto", 4, {"WORLD_SIZE": "4"}, 1),   # already a rank (torchrun by hand, or the launch itself)
])
def test_how_many_processes(monkeypatch, nproc, device, gpus, env, expected):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert processes_wanted(nproc, device) == expected


@pytest.mark.parametrize("nproc", ["0", "two", "-1"])
def test_a_bad_nproc_is_refused(nproc):
    with pytest.raises(TrainerError, match="--nproc"):
        processes_wanted(nproc, "auto")


def trainer(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trainer", "train", "--data", str(data), "--out", str(out), *TINY, "--nproc", "2",
            *extra]


def test_two_ranks_train_as_one_ddp_run(demo_data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(trainer(out, demo_data, "--epochs", "1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch"] == 32
    assert len(metrics(out)) == 1
    assert "2 training processes (DDP" in proc.stderr
    assert "OMP_NUM_THREADS" not in proc.stderr   # torchrun's banner: the launch sets it itself


def test_bad_input_exits_2_as_one_process_does(tmp_path):
    proc = subprocess.run(trainer(tmp_path / "run", tmp_path / "nowhere", "--epochs", "1"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "does not exist" in proc.stderr


def descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [d for c in map(int, children) for d in (c, *descendants(c))]


def test_sigterm_to_the_launch_saves_every_rank_and_exits_143(demo_data, tmp_path):
    """What `docker stop` does to the container's first process: the ranks stop at the same step,
    last.pt is saved, and the exit status says SIGTERM (torchrun alone would exit 1)."""
    out = tmp_path / "run"
    proc = subprocess.Popen(trainer(out, demo_data, "--epochs", "500"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while not (out / "train.log").exists() or "epoch 1/500 lr" not in (out / "train.log").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    ranks = descendants(proc.pid)
    assert len(ranks) >= 2, ranks
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=180)[0]
    assert proc.returncode == 143, output
    assert output.count("received SIGTERM") == 1, output   # said by the main rank, not once per rank
    assert "Resume with: " in output and "Traceback" not in output
    status = json.loads((out / "status.json").read_text())
    assert (status["state"], status["reason"]) == ("interrupted", "SIGTERM")
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert len(payload["rng"]) == 2   # both ranks' state: the resumed run continues each
    time.sleep(0.5)
    alive = [p for p in ranks if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    assert not alive, f"processes outlived the run: {alive}"
