"""`InstanceMachine.tensorboard`: TensorBoard in a container on the "instance" (the loopback sshd, whose `docker` is
the test engine), reached through a port on this machine carried over the SSH connection.

The image is the test base image with a stand-in `tensorboard` (tests/fixtures/tensorboard.py); what the real
TensorBoard prints once it listens is checked against the real one in the venv, where it is installed.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import uuid
from pathlib import Path

import pytest

from orchestrator.errors import JobError
from orchestrator.labels import LABEL_CREATED_BY, LABEL_JOB, LABEL_OUTPUTS, LABEL_TENSORBOARD
from orchestrator.machines import docker_runner as ctr
from orchestrator.machines import instance as instance_machine
from orchestrator.machines.instance import InstanceMachine
from orchestrator.machines.tensorboard import listening_port
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401 (fixtures)
from tests.fixtures.tensorboard import http_get, tensorboard_image  # noqa: F401 (fixtures)
from tests.fixtures.tiny_instance import instance  # noqa: F401 (fixtures)

WAIT_S = 60


def test_the_port_is_read_from_what_the_real_tensorboard_prints(tmp_path):
    command = Path(sys.executable).parent / "tensorboard"
    if not command.exists():
        pytest.skip("tensorboard is not installed in this environment")
    proc = subprocess.Popen([str(command), "--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, deadline = "", time.monotonic() + WAIT_S
        while (port := listening_port(output)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, output
            output += proc.stdout.readline().decode(errors="replace")
        assert b"TensorBoard" in http_get(f"http://127.0.0.1:{port}/")
    finally:
        proc.kill()
        proc.wait(WAIT_S)
        proc.stdout.close()


def test_what_the_machine_prints_gives_a_port_and_nothing_else():
    assert listening_port("W0101 warning\nTensorBoard 2.16.2 at http://127.0.0.1:43117/ (Press CTRL+C to quit)") == 43117
    assert listening_port("\x1b]0;x\x07TensorBoard 2.9 at http://localhost:6006/ (Press CTRL+C to quit)") == 6006
    assert listening_port("TensorBoard 2.16.2 at http://127.0.0.1:99999/") is None
    assert listening_port("TensorFlow installation not found - running with reduced feature set.") is None


def outputs_with_events(root: Path) -> Path:
    outputs = root / "outputs"
    (outputs / "tensorboard").mkdir(parents=True)
    (outputs / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"\x00" * 64)
    return outputs


def ended_trainer(client, job: str, image: str, outputs: Path):
    """The job's trainer container, ended: people look at curves once the job is done."""
    container = client.containers.run(image, ["sh", "-c", "true"], detach=True, name=f"orch-{job}",
                                      network_mode="none", labels={LABEL_JOB: job, LABEL_OUTPUTS: str(outputs)})
    ctr.wait_state(client, job, {"exited"}, timeout_s=WAIT_S)
    return container


def refused(url: str) -> bool:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def tensorboards(client, job: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_TENSORBOARD}={job}"})


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_tensorboard_runs_on_the_machine_after_the_job_ended_and_is_removed_on_close(
        instance, tensorboard_image, tmp_path, monkeypatch):  # noqa: F811
    session, client, jobs = instance
    job = f"t-tb-{uuid.uuid4().hex[:8]}"
    jobs.append(job)
    outputs = outputs_with_events(tmp_path)
    trainer = ended_trainer(client, job, tensorboard_image, outputs)
    monkeypatch.setattr(instance_machine, "CHECK_S", 0.0)
    said: list[str] = []
    machine = InstanceMachine(job, session.endpoint)

    viewer = machine.tensorboard(session, str(outputs), 0, said.append)
    try:
        assert viewer.url.startswith("http://127.0.0.1:")
        page = http_get(viewer.url).decode()
        # The outputs are mounted read-only at /outputs; TensorBoard reads OUT/tensorboard.
        assert page == "stand-in tensorboard on /outputs/tensorboard (read-only): events.out.tfevents.1.host.1.0"
        [tb] = tensorboards(client, job)
        assert tb.attrs["HostConfig"]["NetworkMode"] == "host"
        assert [(m["Destination"], m["RW"]) for m in tb.attrs["Mounts"]] == [("/outputs", False)]
        assert tb.attrs["Config"]["Entrypoint"] == ["tensorboard"]
        assert tb.attrs["Config"]["Cmd"][-4:] == ["--host", "127.0.0.1", "--port", "0"]  # the machine's loopback only
        assert tb.labels[LABEL_CREATED_BY] == "orch" and LABEL_JOB not in tb.labels  # not the job's trainer
        assert ctr.find(client, job).id == trainer.id  # `orch status` still sees the trainer
        assert viewer.ended() is None
        assert any(tensorboard_image in line for line in said)
    finally:
        left = viewer.close()
    assert left is None
    assert tensorboards(client, job) == []
    assert refused(viewer.url)
    assert not (outputs / "tensorboard" / "written-by-tensorboard").exists()


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_second_one_replaces_the_first_and_teardown_removes_it(instance, tensorboard_image, tmp_path,
                                                                  monkeypatch):  # noqa: F811
    session, client, jobs = instance
    job = f"t-tb-{uuid.uuid4().hex[:8]}"
    jobs.append(job)
    outputs = outputs_with_events(tmp_path)
    ended_trainer(client, job, tensorboard_image, outputs)
    monkeypatch.setattr(instance_machine, "CHECK_S", 0.0)
    machine = InstanceMachine(job, session.endpoint)
    first = machine.tensorboard(session, str(outputs), 0, lambda m: None)
    second = machine.tensorboard(session, str(outputs), 0, lambda m: None)
    try:
        assert "removed" in (first.ended() or "")
        assert b"stand-in tensorboard" in http_get(second.url)
        assert len(tensorboards(client, job)) == 1
        ctr.remove(client, job, timeout_s=1)  # what teardown runs before the instance goes
        assert tensorboards(client, job) == []
        assert "removed" in (second.ended() or "")
    finally:
        first.close()
        second.close()


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_no_outputs_yet_or_no_tensorboard_in_the_image_is_said_and_leaves_nothing(
        instance, base_image, tmp_path):  # noqa: F811
    session, client, jobs = instance
    job = f"t-tb-{uuid.uuid4().hex[:8]}"
    jobs.append(job)
    machine = InstanceMachine(job, session.endpoint)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(JobError, match="no outputs folder"):
        machine.tensorboard(session, str(tmp_path / "not-there"), port, lambda m: None)
    assert not (tmp_path / "not-there").exists() and tensorboards(client, job) == []

    outputs = outputs_with_events(tmp_path)
    ended_trainer(client, job, base_image, outputs)  # an image of one's own, without TensorBoard
    with pytest.raises(JobError, match="has no `tensorboard` command") as e:
        machine.tensorboard(session, str(outputs), port, lambda m: None)
    assert f"orch tensorboard --fetched weights/{job}" in str(e.value)
    assert tensorboards(client, job) == []
    with pytest.raises((ConnectionRefusedError, urllib.error.URLError)):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
