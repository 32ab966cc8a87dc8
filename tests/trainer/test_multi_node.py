"""One run over several machines: `trainer train --nnodes N --node-rank I --master HOST:PORT` on each.

Here the "machines" are two process groups on this CPU, each with its own run folder (as two
instances have), meeting at 127.0.0.1 with gloo: both take part (world size 2), node 0's first
process alone writes checkpoints and metrics, a node killed mid-run (a reclaimed instance) stops
the other within a bounded time with node 0's last.pt kept, and the same commands again continue
from it, node 1 getting the checkpoint from node 0 (it has none of its own)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.conftest import TINY, metrics

WAIT_S = 240  # every wait below is bounded by this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node(rank: int, data: Path, out: Path, port: int, *extra: str) -> subprocess.Popen:
    """Node `rank` of 2: its own process group (killed together, as a machine is lost)."""
    command = [sys.executable, "-m", "trainer", "train", "--data", str(data), "--out", str(out), *TINY, "--nproc", "1",
               "--nnodes", "2", "--node-rank", str(rank), "--master", f"127.0.0.1:{port}", *extra]
    log = open(out.parent / f"node{rank}.log", "ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(*procs: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + WAIT_S
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            codes.append(p.wait())
    return codes


def descendants(pid: int) -> list[int]:
    """torch's launcher starts each rank in a session of its own: a process group does not hold them all."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [d for c in map(int, children) for d in (c, *descendants(c))]


def output(tmp: Path, rank: int) -> str:
    return (tmp / f"node{rank}.log").read_text(errors="replace")


@pytest.mark.slow
def test_two_nodes_train_as_one_run_and_only_node_0_writes(demo_data, tmp_path):
    port = free_port()
    outs = [tmp_path / "node0-out", tmp_path / "node1-out"]
    procs = [node(r, demo_data, outs[r], port, "--epochs", "2") for r in (0, 1)]
    assert finish(*procs) == [0, 0], output(tmp_path, 0)[-3000:] + output(tmp_path, 1)[-3000:]
    config = json.loads((outs[0] / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch"] == 32
    assert [row["epoch"] for row in metrics(outs[0])] == [1, 2]
    assert (outs[0] / "checkpoints" / "last.pt").is_file()
    assert not (outs[1] / "checkpoints").exists() and not (outs[1] / "metrics.jsonl").exists()
    assert "node 1 of 2 (node 0 at 127.0.0.1:" in output(tmp_path, 1)


@pytest.mark.slow
def test_a_lost_node_stops_the_other_in_bounded_time_and_the_same_commands_continue(demo_data, tmp_path):
    outs = [tmp_path / "node0-out", tmp_path / "node1-out"]
    extra = ("--epochs", "40", "--checkpoint-minutes", "0.002", "--set", "dist_timeout_minutes=1")
    port = free_port()
    procs = [node(r, demo_data, outs[r], port, *extra) for r in (0, 1)]
    rows = outs[0] / "metrics.jsonl"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not (rows.exists() and len(rows.read_text().splitlines()) >= 2):
        assert procs[0].poll() is None, output(tmp_path, 0)[-3000:]
        time.sleep(0.1)
    for pid in [procs[1].pid, *descendants(procs[1].pid)]:   # node 1's machine is gone: every process on it
        os.kill(pid, signal.SIGKILL)
    lost_at = time.monotonic()
    code0, _ = finish(*procs)
    assert code0 == 4 and time.monotonic() - lost_at < 90   # node 0 does not wait for it forever
    told = output(tmp_path, 0)
    assert "another process of this run stopped answering" in told and "Traceback" not in told
    assert json.loads((outs[0] / "status.json").read_text())["reason"] == "peer-lost"
    saved = metrics(outs[0])
    assert (outs[0] / "checkpoints" / "last.pt").is_file() and 2 <= len(saved) < 40

    port = free_port()                                  # both again, as `orch launch --resume` starts them
    procs = [node(r, demo_data, outs[r], port, *extra[:2]) for r in (0, 1)]
    assert finish(*procs) == [0, 0], output(tmp_path, 0)[-3000:] + output(tmp_path, 1)[-3000:]
    log = (outs[0] / "train.log").read_text()
    assert "resumed from" in log
    assert [row["epoch"] for row in metrics(outs[0])] == list(range(1, 41))   # each epoch once, none lost
    assert not (outs[1] / "checkpoints").exists()


def test_multi_node_flags_are_checked_before_anything_starts(demo_data, tmp_path):
    from tests.trainer.conftest import cli
    for flags, message in ((["--nnodes", "2"], "--master"), (["--nnodes", "2", "--master", "10.0.0.1"], "HOST:PORT"),
                           (["--nnodes", "2", "--node-rank", "2", "--master", "h:1"], "--node-rank 2: give 0 to 1"),
                           (["--node-rank", "1"], "go with --nnodes N")):
        result = cli("train", "--data", demo_data, "--out", tmp_path / "run", *TINY, *flags)
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "run" / "checkpoints").exists()
