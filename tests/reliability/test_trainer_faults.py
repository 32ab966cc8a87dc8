"""The trainer under faults: a spot notice mid-run, a time budget, a corrupted last.pt, a full disk.

Each test runs the real `trainer` CLI on a tiny generated dataset and checks what a user would:
the exit code, the line that says why it stopped, the checkpoint on disk (its .sha256 verifies),
and that `--resume auto` ends with the same epochs and LR schedule as a run never stopped.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.reliability.conftest import (TINY, fill_disk, metrics, no_traceback, sha_ok, trainer,
                                        trainer_process)

EXIT_SIGTERM = 143   # trainer.errors: stopped by SIGTERM / spot notice after saving last.pt
EXIT_DISK = 3        # trainer.errors: could not write a checkpoint


def schedule(out):
    return [(m["epoch"], m["lr"]) for m in metrics(out)]


def test_spot_notice_mid_run_saves_and_exits_143_then_resume_matches_an_uninterrupted_run(
        longer_data, fake_imds, background_trainer, tmp_path):
    data, epochs = longer_data, 10
    baseline = tmp_path / "baseline"
    uninterrupted = background_trainer("train", "--data", data, "--out", baseline, *TINY, "--epochs", epochs)

    # The notice appears once the first epoch is on disk, so the stop is mid-run, never before it.
    out = tmp_path / "spot"
    fake_imds.notice_when = lambda: len(metrics(out)) >= 1
    # Poll often: a tiny epoch takes well under the default 5 s on a fast machine.
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": fake_imds.url, "TRAINER_SPOT_POLL_SECONDS": "0.05"}
    r = trainer_process("train", "--data", data, "--out", out, *TINY, "--epochs", epochs, "--watch-spot", env=env)
    output = r.stdout + r.stderr
    assert fake_imds.requests, "the trainer never asked the metadata service at AWS_EC2_METADATA_SERVICE_ENDPOINT"
    assert all(ok for method, _, ok in fake_imds.requests if method == "GET"), "IMDSv2: every GET carries the token"
    assert fake_imds.notices_served >= 1, output
    assert r.returncode == EXIT_SIGTERM, output
    assert "spot interruption notice" in output and no_traceback(output)
    assert "--resume auto" in output  # it says how to continue
    done = len(metrics(out))
    assert 1 <= done < epochs
    last = out / "checkpoints" / "last.pt"
    assert sha_ok(last)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["reason"] == "spot" and status["exit_code"] == EXIT_SIGTERM

    # The replacement instance has no notice pending.
    fake_imds.notice_when = lambda: False
    r = trainer_process("train", "--data", data, "--out", out, *TINY, "--epochs", epochs, "--watch-spot",
                        "--resume", "auto", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in r.stdout + r.stderr
    baseline_output, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, baseline_output
    assert [e for e, _ in schedule(out)] == [e for e, _ in schedule(baseline)] == list(range(1, epochs + 1))
    assert [lr for _, lr in schedule(out)] == pytest.approx([lr for _, lr in schedule(baseline)], rel=1e-9)
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_sigterm_mid_epoch_as_docker_stop_sends_it_saves_and_resumes(longer_data, background_trainer, tmp_path):
    """The watcher's hard cap and `orch teardown` stop the container: SIGTERM, then SIGKILL after a grace period."""
    import signal
    import time

    out = tmp_path / "run"
    proc = background_trainer("train", "--data", longer_data, "--out", out, *TINY, "--epochs", 6)
    deadline = time.monotonic() + 300
    while not metrics(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # Freeze the run before signalling: tiny epochs are fast, and SIGTERM must land mid-run.
    proc.send_signal(signal.SIGSTOP)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_SIGTERM, output
    assert "SIGTERM" in output and no_traceback(output)
    assert sha_ok(out / "checkpoints" / "last.pt")
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    r = trainer("train", "--data", longer_data, "--out", out, *TINY, "--epochs", 6, "--resume", "auto")
    assert r.exit_code == 0, r.output
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3, 4, 5, 6]


def test_max_hours_stops_cleanly_with_a_checkpoint_and_says_why(longer_data, tmp_path):
    out, epochs = tmp_path / "run", 8
    # 0.00002 h is 72 ms: inside the first epoch of eight, however fast this machine is today.
    r = trainer("train", "--data", longer_data, "--out", out, *TINY, "--epochs", epochs, "--max-hours", 0.00002)
    assert r.exit_code == 0, r.output  # documented: exit 0 at --max-hours
    assert no_traceback(r.output)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "time_limit" and status["reason"] == "max-hours"
    log = (out / "train.log").read_text()
    assert "max-hours" in log and "--resume auto" in log
    assert len(metrics(out)) < epochs
    assert sha_ok(out / "checkpoints" / "last.pt")

    # The budget counts every resume together: a larger one lets the same run finish.
    r = trainer("train", "--data", longer_data, "--out", out, *TINY, "--epochs", epochs, "--max-hours", 1)
    assert r.exit_code == 0, r.output
    assert [m["epoch"] for m in metrics(out)] == list(range(1, epochs + 1))
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbage(path):
    path.write_bytes(os.urandom(path.stat().st_size))


def _garbage_with_matching_sha(path):
    """Garbage whose .sha256 was rewritten to match: only loading it can tell."""
    import hashlib

    data = b"not a checkpoint " * 100
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


@pytest.mark.parametrize("damage", [_truncate, _garbage, _garbage_with_matching_sha], ids=lambda f: f.__name__[1:])
def test_corrupted_last_pt_falls_back_to_the_previous_checkpoint_and_finishes(tiny_data, tmp_path, damage):
    out = tmp_path / "run"
    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 3)
    assert r.exit_code == 0, r.output
    reference = schedule(out)
    ckpts = out / "checkpoints"
    assert (ckpts / "last.prev.pt").exists()
    damage(ckpts / "last.pt")

    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 3, "--resume", "auto")
    assert r.exit_code == 0, r.output
    assert no_traceback(r.output)
    log = (out / "train.log").read_text()
    assert "falling back to the previous checkpoint" in log
    assert "last.prev.pt" in log  # says which one it resumed from
    # last.prev.pt held epoch 2: epoch 3 is redone; nothing is skipped or doubled.
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]
    assert (ckpts / "last.pt.corrupt").exists()  # kept for a post-mortem
    assert sha_ok(ckpts / "last.pt")
    assert schedule(out) == reference  # the same epochs and LRs as the undamaged run


def test_both_checkpoints_corrupt_is_a_clear_error_not_a_fresh_start(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 2).exit_code == 0
    for name in ("last.pt", "last.prev.pt"):
        _truncate(out / "checkpoints" / name)
    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 3, "--resume", "auto")
    assert r.exit_code == 2, r.output
    assert "no usable checkpoint" in r.output and "--resume none" in r.output
    assert no_traceback(r.output)
    assert [m["epoch"] for m in metrics(out)] == [1, 2]  # the record of the work is not thrown away


def test_full_disk_while_checkpointing_stops_cleanly_keeps_the_last_good_one_and_resumes(
        tiny_data, small_disk, tmp_path):
    out = small_disk / "run"
    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 1)
    assert r.exit_code == 0, r.output
    last = out / "checkpoints" / "last.pt"
    good = last.read_bytes()
    size = len(good)

    # Room for the metrics line and the log, not for another checkpoint.
    ballast = fill_disk(small_disk, free_bytes=size // 2)
    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 3, "--resume", "auto")
    assert r.exit_code == EXIT_DISK, r.output
    assert no_traceback(r.output)
    assert "No space left on device" in r.output and "was kept" in r.output and "--resume auto" in r.output
    assert last.read_bytes() == good and sha_ok(last)
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")], "no torn temp files left"

    ballast.unlink()
    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 3, "--resume", "auto")
    assert r.exit_code == 0, r.output
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]
    assert sha_ok(last)


def test_a_disk_that_fills_during_training_is_reported_never_a_traceback(tiny_data, small_disk):
    """No ballast timing: the run simply outgrows its disk, at whichever write that happens."""
    out = small_disk / "run"
    # Less than three checkpoints' worth: the second epoch cannot fit, whichever file it writes first.
    fill_disk(small_disk, free_bytes=160_000)
    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 5)
    assert r.exit_code == EXIT_DISK, r.output
    assert no_traceback(r.output), r.output
    assert "No space left on device" in r.output
    last = out / "checkpoints" / "last.pt"
    if last.exists():
        assert sha_ok(last)


def test_a_run_started_on_a_full_disk_is_a_clean_error(tiny_data, small_disk):
    out = small_disk / "run"
    fill_disk(small_disk, free_bytes=0)
    r = trainer("train", "--data", tiny_data, "--out", out, *TINY, "--epochs", 2)
    assert r.exit_code == EXIT_DISK, f"{r.exception!r}\n{r.output}"
    assert no_traceback(r.output)
    assert "No space left on device" in r.output and str(out) in r.output
