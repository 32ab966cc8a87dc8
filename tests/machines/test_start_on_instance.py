"""Starting a job on an instance (`job.start.start` on an `InstanceMachine` over SSH; the "instance" engine is the test dockerd):
where its folders go, waiting for the instance's first-boot set-up, GPUs that are not there, and
a second start while the job runs (nothing changes; what it asked for differently is reported).

The trainer image is a stub (the test base image with `echo` as its entrypoint): what is checked is
what orch asks the engine for, not training.
"""
from __future__ import annotations

import io
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.records import JobSpec
from orchestrator import errors
from orchestrator.job.start import start
from orchestrator.machines import bootstrap
from orchestrator.machines import instance as instance_machine
from orchestrator.machines.instance import InstanceMachine
from orchestrator.machines.local_docker import LocalDockerMachine
from orchestrator.labels import LABEL_AUTOSTOP, LABEL_DATA, LABEL_OUTPUTS, LABEL_SOURCE
from orchestrator.machines import docker_runner as ctr
from tests.fixtures.dockerd import base_image, docker_engine, running_image  # noqa: F401 (fixtures)
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401 (fixtures)
from tests.fixtures.tiny_instance import instance  # noqa: F401 (fixtures; each test asks for its image)

pytestmark = [pytest.mark.needs_docker, pytest.mark.needs_sshd]

FAKE_CLOUD_INIT = """#!/bin/sh
# Stands in for cloud-init on a fresh instance: its set-up (infra/bootstrap.sh) is still running,
# and mounts the fast disk when it is done.
if [ "$1 $2" = "status --wait" ]; then sleep 2; mkdir -p {fast}; touch {done}; echo "status: done"; exit 0; fi
if [ -e {done} ]; then echo "status: done"; else echo "status: running"; fi
"""


@pytest.fixture(scope="module")
def stub_image(docker_engine, base_image):  # noqa: F811
    client = docker_engine.client()
    dockerfile = f'FROM {base_image}\nENTRYPOINT ["/bin/echo", "trainer"]\n'.encode()
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), tag="orch-test-stub-trainer:1", rm=True,
                                   network_mode="none")
    client.close()
    return "orch-test-stub-trainer:1"


def start_on(session, spec, say=None):
    """`job.start.start` on the "instance" that `session` reaches (the loopback sshd, the test dockerd)."""
    return start(InstanceMachine(spec.job, session.endpoint), spec, say=say)


def new_job(jobs: list[str], kind: str) -> str:
    jobs.append(f"t-{kind}-{uuid.uuid4().hex[:8]}")
    return jobs[-1]


def tiny_dataset(path: Path) -> Path:
    (path / "train" / "c0").mkdir(parents=True)
    (path / "train" / "c0" / "0.bin").write_bytes(b"x" * 100)
    return path


def test_a_job_whose_container_exists_keeps_the_folders_its_labels_name(instance, stub_image, tmp_path):
    session, client, jobs = instance
    job = new_job(jobs, "labels")
    data = tiny_dataset(tmp_path / "data")
    first = JobSpec(job=job, data=str(data), image=stub_image, gpus=False, remote_root=str(tmp_path / "a"),
                            autostop_minutes=45)
    start_on(session, first, say=lambda m: None)
    labels = ctr.find(client, job).labels
    assert labels[LABEL_DATA] == str(tmp_path / "a" / job / "data")
    assert labels[LABEL_OUTPUTS] == str(tmp_path / "a" / job / "outputs")
    assert labels[LABEL_AUTOSTOP] == "45"
    ctr.wait_state(client, job, {"exited"}, timeout_s=60)

    # Started again (the container ended), from settings that would choose other folders: the
    # checkpoints are in the labelled ones, so those are used.
    again = JobSpec(job=job, data=str(data), image=stub_image, gpus=False)
    start_on(session, again, say=lambda m: None)
    labels = ctr.find(client, job).labels
    assert labels[LABEL_OUTPUTS] == str(tmp_path / "a" / job / "outputs")
    assert labels[LABEL_DATA] == str(tmp_path / "a" / job / "data")


def test_a_start_while_the_job_runs_changes_nothing_and_says_what_it_did_not_apply(instance, running_image, tmp_path):
    session, client, jobs = instance
    job = new_job(jobs, "running")
    data, other = tiny_dataset(tmp_path / "data"), tiny_dataset(tmp_path / "other")
    first = JobSpec(job=job, data=str(data), image=running_image, gpus=False,
                            remote_root=str(tmp_path / "root"), trainer_args=("--recipe", "demo", "--epochs", "50"))
    started = start_on(session, first, say=lambda m: None)
    assert started.not_applied == () and ctr.find(client, job).labels[LABEL_SOURCE] == str(data)

    said: list[str] = []
    again = start_on(session, replace(first, data=str(other), trainer_args=("--recipe", "demo")),
                             say=said.append)
    assert again.state == "running" and any("not starting a second one" in line for line in said), said
    assert again.not_applied == (f"--data {other} (it trains on {data})",
                                 "trainer arguments `--recipe demo` (it runs with `--recipe demo --epochs 50`)")
    assert start_on(session, first, say=lambda m: None).not_applied == ()  # the same launch: nothing to say


def test_a_fresh_instance_gets_its_folders_once_its_set_up_is_done(instance, sshd_server, stub_image, tmp_path,
                                                                  monkeypatch):
    session, client, jobs = instance
    job = new_job(jobs, "boot")
    fast = tmp_path / "fast"  # stands for /mnt/orch, which the set-up mounts when it has finished
    monkeypatch.setattr(instance_machine, "REMOTE_FAST_ROOT", str(fast))
    fake = sshd_server.bin_dir / "cloud-init"
    fake.write_text(FAKE_CLOUD_INIT.format(fast=fast, done=tmp_path / "cloud-init-done"))
    fake.chmod(0o755)
    said: list[str] = []
    try:
        start_on(session, JobSpec(job=job, data=str(tiny_dataset(tmp_path / "data")),
                                                  image=stub_image, gpus=False), say=said.append)
    finally:
        fake.unlink()
    labels = ctr.find(client, job).labels
    assert labels[LABEL_OUTPUTS] == str(fast / job / "outputs")
    assert labels[LABEL_DATA] == str(fast / job / "data")
    assert any("first-boot set-up" in line for line in said), said


def watcher_state(folder: Path, cap_s: int, started_s_ago: int) -> Path:
    """What infra/bootstrap.sh's watcher writes in its state folder (tests/reliability/test_autostop.py runs it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cap").write_text(f"{cap_s}\n")
    (folder / "started").write_text(f"{int(time.time()) - started_s_ago}\n")
    return folder


def test_a_resumed_run_under_the_hard_cap_gets_its_trained_hours_plus_what_is_left(instance, stub_image, tmp_path,
                                                                                    monkeypatch):
    session, client, jobs = instance
    job = new_job(jobs, "cap")
    # Its watcher started an hour ago, less 20 s: the budget below stays the same for the test's first 30 s.
    monkeypatch.setattr(bootstrap, "WATCHER_STATE_DIR", str(watcher_state(tmp_path / "state", 3 * 3600, 3600 - 20)))
    outputs = tmp_path / "root" / job / "outputs"
    (outputs / "checkpoints").mkdir(parents=True)
    (outputs / "checkpoints" / "last.pt").write_bytes(b"weights")
    (outputs / "metrics.jsonl").write_text('{"epoch": 1, "elapsed_hours": 0.5}\n{"epoch": 2, "elapsed_hours": 1.5}\n')
    spec = JobSpec(job=job, data=str(tiny_dataset(tmp_path / "data")), image=stub_image, gpus=False,
                           remote_root=str(tmp_path / "root"), trainer_args=("--recipe", "demo"))
    started = start_on(session, spec, say=lambda m: None)
    # The trainer's budget counts the 1.5 h the run trained before: 1.5 + the ~2 h left of the cap - 10 min.
    command = ctr.find(client, job).attrs["Config"]["Cmd"]
    assert command[-4:] == ["--max-hours", "3.33", "--resume", "auto"]
    assert started.budget.startswith("trainer: --max-hours 3.33 (1.5 h already trained (its budget counts every "
                                     "resume) + 2")
    assert started.budget.endswith(" h left of the 3 h cap, less 10 min to save)")
    assert started.continues_from == str(outputs)


def test_a_hard_cap_about_to_stop_the_machine_starts_nothing_and_syncs_nothing(instance, stub_image, tmp_path,
                                                                              monkeypatch):
    from orchestrator.trainer_args import CapSpent

    session, client, jobs = instance
    job = new_job(jobs, "spent")
    monkeypatch.setattr(bootstrap, "WATCHER_STATE_DIR", str(watcher_state(tmp_path / "state", 3 * 3600, 3 * 3600 - 300)))
    spec = JobSpec(job=job, data=str(tiny_dataset(tmp_path / "data")), image=stub_image, gpus=False,
                           remote_root=str(tmp_path / "root"))
    with pytest.raises(CapSpent, match="has 5 min left, and the trainer needs 10 min of it to save and stop"):
        start_on(session, spec, say=lambda m: None)
    assert ctr.find(client, job) is None and not (tmp_path / "root" / job).exists()


def test_an_instance_engine_without_gpu_support_is_an_error_not_a_cpu_run(instance, stub_image, tmp_path):
    session, client, jobs = instance
    job = new_job(jobs, "gpu")
    spec = JobSpec(job=job, data=str(tiny_dataset(tmp_path / "data")), image=stub_image, gpus=True,
                           remote_root=str(tmp_path / "root"))
    with pytest.raises(errors.NoGPUs, match="--no-gpus"):
        start_on(session, spec, say=lambda m: None)
    assert ctr.find(client, job) is None  # nothing left that would pass for the job's container


def test_the_local_target_runs_on_the_cpu_with_a_warning(docker_engine, stub_image, tmp_path, monkeypatch,  # noqa: F811
                                                         capsys):
    monkeypatch.setenv("DOCKER_HOST", docker_engine.base_url)
    monkeypatch.setenv("ORCH_LOCAL_RUNNER", "docker")
    job = f"t-cpu-{uuid.uuid4().hex[:8]}"
    client = docker_engine.client()
    try:
        start(LocalDockerMachine(job), JobSpec(job=job, data=str(tiny_dataset(tmp_path / "data")),
                                               image=stub_image, gpus=True))
        container = ctr.find(client, job)
        assert container is not None and not container.attrs["HostConfig"].get("DeviceRequests")
        assert "runs on the CPU" in capsys.readouterr().err
    finally:
        ctr.remove(client, job, timeout_s=1)
        client.close()
