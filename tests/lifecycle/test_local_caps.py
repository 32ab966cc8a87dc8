"""orch's caps on the local target: --max-hours becomes the trainer's budget (tests/machines/test_local_target.py);
--max-dollars has no hourly price to count against on the user's own machine, so a launch says so and goes on.
"""
from __future__ import annotations

import pytest

NO_DOLLARS = "warning: --max-dollars has no effect on the local target (no hourly price)"


def local_launch(orch, *extra):
    return orch("launch", "--target", "local", "--name", "loc", "--data", "demo", "--no-gpus", *extra,
                "--", "--epochs", "1")


@pytest.mark.parametrize("dry_run", [True, False])
def test_max_dollars_on_the_local_target_is_said_to_do_nothing_and_the_launch_goes_on(orch, job_calls, dry_run):
    r = local_launch(orch, "--max-dollars", "5", *(["--dry-run"] if dry_run else []))
    assert r.exit_code == 0, r.output
    assert f"{NO_DOLLARS}; use --max-hours to cap the run's time\n" in r.stdout
    assert len(job_calls.started) == (0 if dry_run else 1)
    assert ("Dry run: job loc would run on this machine" in r.stdout) == dry_run


def test_with_max_hours_too_the_warning_names_the_cap_that_applies(orch, job_calls):
    r = local_launch(orch, "--max-dollars", "5", "--max-hours", "1.5", "--dry-run")
    assert r.exit_code == 0, r.output
    assert f"{NO_DOLLARS}; --max-hours 1.5 caps the run's time\n" in r.stdout


@pytest.mark.parametrize("dry_run", [True, False])
def test_without_max_dollars_nothing_is_said(orch, job_calls, monkeypatch, dry_run):
    monkeypatch.setenv("ORCH_MAX_DOLLARS", "20")  # a standing cap for AWS launches: not the local launch's business
    r = local_launch(orch, "--max-hours", "1", *(["--dry-run"] if dry_run else []))
    assert r.exit_code == 0, r.output
    assert "max-dollars" not in r.output and "warning" not in r.output


def test_a_weights_file_of_this_machine_is_refused_when_the_local_job_runs_in_docker(monkeypatch, tmp_path):
    """The local container sees the dataset as /data, like an instance's; a local process reads the path as is."""
    from orchestrator.config import ConfigError
    from orchestrator.job.start import start
    from orchestrator.machines.local_docker import LocalDockerMachine
    from orchestrator.machines.local_process import LocalProcessMachine
    from orchestrator.records import JobSpec
    from orchestrator.remote.local import LocalSession

    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split / "cat").mkdir(parents=True)
    spec = JobSpec(job="wloc", data=str(data), trainer_args=("--init-weights", str(tmp_path / "w.pth")))
    docker = LocalDockerMachine("wloc")
    monkeypatch.setattr(docker, "runner", lambda session: pytest.fail("the engine was asked to start a container"))
    with pytest.raises(ConfigError, match="pass --init-weights /data/w.pth"):
        start(docker, spec)
    LocalProcessMachine("wloc").prepare(LocalSession(), spec, say=print)  # a local process reads the path as it is
