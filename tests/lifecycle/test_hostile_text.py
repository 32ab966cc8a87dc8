"""What a machine, a hand-edited file or a script's unset variable hands orch: never a terminal escape on the
user's screen, never a traceback, never a job chosen for the user.

The machine here is a finished local job as the process runner leaves it (job.json, console.log, exit.json,
outputs/metrics.jsonl): its files are what a compromised trainer could write.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from orchestrator import state
from orchestrator.machines.local_jobs import LocalJob, job_dir, save_record

ESCAPES = ["\x1b]0;owned\x07", "\x1b]52;c;cm0gLXJmIH4=\x07", "\x1b[2J\x1b[H", "\x1b]8;;http://evil\x1b\\",
           "\x9b31m", "\x1bP+q\x1b\\", "\x07\x00\x7f"]


def home() -> Path:
    return Path(os.environ["ORCH_HOME"])


def finished_local_job(job: str, lines: list[str], metrics: dict) -> None:
    root = job_dir(job)
    outputs = root / "outputs"
    outputs.mkdir(parents=True)
    save_record(LocalJob(job=job, runner="process", data_dir=str(root / "data"), outputs_dir=str(outputs)))
    (root / "console.log").write_text("".join(f"2026-12-06T00:00:0{i}.000000000Z {line}\n"
                                              for i, line in enumerate(lines)))
    (root / "exit.json").write_text(json.dumps({"exit_code": 0, "restarts": 0}))
    (outputs / "metrics.jsonl").write_text(json.dumps(metrics) + "\n")
    state.put(state.JobRecord(job=job, target="local", status="running"))


def test_logs_and_status_print_no_terminal_escapes_from_the_machine(orch):
    plain = "epoch 1/2 lr 0.1000 | train loss 2.30 | val top-1 12.5% | 850 img/s"
    finished_local_job("hostile", [plain, "loading 10%\rloading 100%", "\x1b]0;unended"] + [f"before{e}after" for e in ESCAPES],
                       {"epoch": "\x1b]0;owned\x07", "note\x1b[2J": "\x1b]52;c;eA==\x07"})
    logs = orch("logs", "hostile")
    assert logs.exit_code == 0, logs.output
    assert plain in logs.output  # the trainer's own lines pass unchanged
    assert logs.output.count("beforeafter") == len(ESCAPES)
    assert "loading 100%\n" in logs.output and "10%" not in logs.output  # a redrawn line, as a terminal leaves it
    status = orch("status", "hostile")
    assert status.exit_code == 0, status.output
    assert "latest" in status.output
    for result in (logs, status):
        assert not any(c in result.output for c in "\x1b\x07\x00\r\x9b"), repr(result.output)


def test_an_unended_sequence_never_swallows_the_lines_after_it():
    from orchestrator.printable import printable

    said = "the machine said \x1b]0;x\u009d\nThe instance i-1 is up and billing: `orch teardown j` removes it."
    assert printable(said) == "the machine said \nThe instance i-1 is up and billing: `orch teardown j` removes it."


@pytest.mark.parametrize("args", [("teardown", "", "--yes"), ("teardown", "  ", "--yes"), ("logs", ""),
                                  ("status", ""), ("fetch-weights", ""),
                                  ("launch", "--target", "local", "--name", "", "--dry-run", "--data", "demo")])
def test_an_empty_job_name_is_refused_not_taken_for_the_only_job(orch, args):
    finished_local_job("only", ["line"], {"epoch": 1})
    r = orch(*args)
    assert r.exit_code == 2, r.output
    assert "job name is empty" in r.output
    assert state.get("only") is not None and (job_dir("only") / "job.json").exists()


def test_a_dry_run_refuses_the_name_a_real_launch_refuses(orch):
    r = orch("launch", "--target", "local", "--name", "Bad_Name", "--dry-run", "--data", "demo")
    assert r.exit_code == 2 and "job name 'Bad_Name' is invalid" in r.output


@pytest.mark.parametrize("variable, value, says", [
    ("ORCH_POLL_INTERVAL_S", "0", "poll_interval_s must be > 0"),
    ("ORCH_POLL_INTERVAL_S", "soon", "poll_interval_s = 'soon' is not a valid value"),
    ("ORCH_WAIT_TIMEOUT_S", "-5", "wait_timeout_s must be > 0"),
    ("ORCH_VOLUME_GB", "lots", "volume_gb = 'lots' is not a valid value"),
])
def test_a_bad_orch_number_is_a_message(orch, monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    r = orch("list")
    assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output


def test_orch_home_is_created_private_and_a_file_there_is_a_message(orch, monkeypatch, tmp_path):
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "new" / "orch"))
    assert orch("list").exit_code == 0
    assert (tmp_path / "new" / "orch").stat().st_mode & 0o777 == 0o700
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "file"))
    r = orch("list")
    assert r.exit_code == 2 and "is a file, not a folder" in r.output and "Traceback" not in r.output
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_config_toml_that_is_a_folder_is_a_message(orch):
    (home() / "config.toml").mkdir(parents=True)
    r = orch("list")
    assert r.exit_code == 2 and "config.toml cannot be read" in r.output and "Move it aside" in r.output


@pytest.mark.parametrize("record, says", [
    ({"job": "a", "status": 3}, "job 'a': status is 3, not str"),
    ({"job": "a", "spot": "yes"}, "job 'a': spot is 'yes', not bool"),
    ({"job": "a", "launch": {"trainer_args": "--epochs 3"}}, "trainer_args is '--epochs 3'"),
    ({"job": "b"}, "job 'a' holds the record of 'b'"),
    ("a", "job 'a' is not an object"),
])
def test_a_malformed_state_file_is_a_message_and_is_left_as_it_is(orch, record, says):
    path = home() / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"schema": 1, "jobs": {"a": record, "kept": {"job": "kept", "target": "local"}}})
    path.write_text(text)
    for args in (("list",), ("status", "a"), ("teardown", "a", "--yes")):
        r = orch(*args)
        assert r.exit_code == 1, r.output
        assert says in r.output and "was left as it is" in r.output and "Traceback" not in r.output
    assert path.read_text() == text


def test_a_record_without_its_job_field_is_read_by_its_key(orch):
    path = home() / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "jobs": {"nameless": {"target": "local", "status": "exited"}}}))
    assert state.get("nameless").job == "nameless"


def test_a_full_disk_under_orch_home_is_a_message_naming_the_file(orch, monkeypatch):
    import orchestrator.files

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(orchestrator.files.os, "fsync", full)  # the disk, as a full one answers
    r = orch("launch", "--target", "local", "--name", "full", "--no-gpus", "--data", "demo")
    assert r.exit_code == 1, r.output
    assert "No space left on device" in r.output and "Traceback" not in r.output
    assert "tagged orch:job=full" in r.output


@pytest.mark.timeout(60)
def test_fetch_weights_refuses_a_fifo_in_the_outputs_instead_of_hanging(orch, tmp_path):
    finished_local_job("fifo", ["line"], {"epoch": 1})
    outputs = job_dir("fifo") / "outputs"
    (outputs / "checkpoints").mkdir()
    (outputs / "checkpoints" / "best.pt").write_bytes(b"weights")
    os.mkfifo(outputs / "train.log")
    r = orch("fetch-weights", "fifo", "--which", "best", "--dest", tmp_path / "w")
    assert r.exit_code == 1, r.output
    assert "train.log" in r.output and "not a plain file" in r.output
