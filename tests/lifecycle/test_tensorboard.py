"""`orch tensorboard` through the CLI, until Ctrl-C (SIGINT to this process, as a terminal sends it).

- An instance's job: moto for EC2, the real sshd behind the proxy command as the instance, the test dockerd as its
  engine (as in tests/job/test_after_the_job.py), a trainer image whose `tensorboard` is a stand-in
  (tests/fixtures/tensorboard.py). TensorBoard runs there; this machine's port reaches it over SSH.
- A local job, and `--fetched DIR`: this machine's `tensorboard` (the real one, where the venv has it); without
  one, the install command and exit 2, with nothing started.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator import state
from orchestrator.labels import LABEL_JOB, LABEL_OUTPUTS, LABEL_TENSORBOARD, container_name
from orchestrator.lifecycle import machines
from orchestrator.lifecycle import tensorboard as lifecycle_tensorboard
from orchestrator.machines import docker_runner as ctr
from orchestrator.machines import tensorboard_here
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import authorize_new_key_pairs, sshd_server  # noqa: F401 (fixtures)
from tests.fixtures.tensorboard import http_get, interrupt_when, tensorboard_image  # noqa: F401 (fixtures)

CIDR = "198.51.100.7/32"
INSTALL = "pip install 'orch[tensorboard]'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def fetched_outputs(root: Path) -> Path:
    (root / "tensorboard").mkdir(parents=True)
    return root


@pytest.fixture
def no_tensorboard_here(tmp_path, monkeypatch):
    """No `tensorboard` beside this Python or on PATH; and a start would fail the test."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python"))

    def started(*args, **kwargs):
        raise AssertionError(f"something was started: {args}")

    monkeypatch.setattr(tensorboard_here.subprocess, "Popen", started)


def test_the_help_has_an_example(orch):
    r = orch("tensorboard", "--help")
    assert r.exit_code == 0
    assert "Example: orch tensorboard resnet50" in r.output and "--no-browser" in r.output and "--fetched" in r.output


def test_a_local_job_without_tensorboard_says_how_to_install_it_and_starts_nothing(orch, no_tensorboard_here,
                                                                                  monkeypatch):
    job = f"local-{uuid.uuid4().hex[:6]}"
    state.put(state.JobRecord(job=job, target="local", status="running"))
    monkeypatch.setattr(machines, "engine_answers", lambda timeout_s=3.0: False)  # the trainer ran as a process
    r = orch("tensorboard", job, "--no-browser", "--port", free_port())
    assert r.exit_code == 2, r.output
    assert INSTALL in r.output and "pip install tensorboard" in r.output and "nothing was started" in r.output
    assert "Traceback" not in r.output


def test_fetched_outputs_without_tensorboard_say_how_to_install_it(orch, no_tensorboard_here, tmp_path):
    folder = fetched_outputs(tmp_path / "weights" / "r50")
    r = orch("tensorboard", "--fetched", folder, "--no-browser")
    assert r.exit_code == 2, r.output
    assert INSTALL in r.output and "pip install tensorboard" in r.output and "Traceback" not in r.output


def test_fetched_outputs_without_their_tensorboard_folder_are_refused(orch, tmp_path):
    r = orch("tensorboard", "--fetched", tmp_path, "--no-browser")
    assert r.exit_code == 2 and "has no tensorboard/ folder" in r.output and "orch fetch-weights" in r.output
    r = orch("tensorboard", "--fetched", tmp_path / "nope", "--no-browser")
    assert r.exit_code == 2 and "does not exist" in r.output
    r = orch("tensorboard", "--fetched", fetched_outputs(tmp_path / "w"), "--port", "70000")
    assert r.exit_code == 2 and "--port 70000" in r.output


def test_a_busy_port_is_a_message_naming_the_option_and_starts_nothing(orch, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ran"
    (bin_dir / "tensorboard").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (bin_dir / "tensorboard").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-venv" / "python"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = orch("tensorboard", "--fetched", fetched_outputs(tmp_path / "w"), "--no-browser", "--port", port)
    assert r.exit_code == 1, r.output
    assert f"port {port}" in r.output and "--port" in r.output and "Traceback" not in r.output
    assert not marker.exists()


def test_fetched_outputs_with_the_real_tensorboard_until_ctrl_c(orch, tmp_path, monkeypatch):
    if tensorboard_here.command() is None:
        pytest.skip("tensorboard is not installed in this environment")
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.compat.proto import event_pb2, summary_pb2

    folder = tmp_path / "weights" / "r50"
    writer = EventFileWriter(str(folder / "tensorboard" / "train"))
    for step, loss in enumerate((4.6, 3.1, 2.2)):
        value = summary_pb2.Summary.Value(tag="loss", simple_value=loss)
        writer.add_event(event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary_pb2.Summary(value=[value])))
    writer.close()
    port = free_port()

    def look():
        assert b"TensorBoard" in http_get(f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 60  # the runs load in the background, after it serves
        while "train" not in (tags := json.loads(http_get(f"http://127.0.0.1:{port}/data/plugin/scalars/tags"))):
            assert time.monotonic() < deadline, tags
            time.sleep(0.5)
        return tags

    r, tags = interrupt_when(lambda: orch("tensorboard", "--fetched", folder, "--no-browser", "--port", port), look,
                             monkeypatch)
    assert r.exit_code == 0, r.output
    assert f"http://127.0.0.1:{port}/" in r.stdout and "Stopped" in r.stderr
    assert "loss" in tags["train"]  # the event file under DIR/tensorboard/train was read
    assert refused(port)
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if str(folder).encode() in _read(p)]  # TensorBoard (and its data server) stopped


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_the_browser_is_opened_only_where_there_is_a_display(monkeypatch):
    opened = []

    class Browser(lifecycle_tensorboard.webbrowser.BackgroundBrowser):
        def open(self, url, new=0, autoraise=True):
            opened.append(url)
            return True

    monkeypatch.setattr(lifecycle_tensorboard.webbrowser, "get", lambda *a: Browser("firefox"))
    monkeypatch.setattr(lifecycle_tensorboard.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert lifecycle_tensorboard.open_browser("http://127.0.0.1:6006/") is False and opened == []
    monkeypatch.setenv("DISPLAY", ":0")
    assert lifecycle_tensorboard.open_browser("http://127.0.0.1:6006/") is True and opened == ["http://127.0.0.1:6006/"]
    monkeypatch.setattr(lifecycle_tensorboard.webbrowser, "get",
                        lambda *a: lifecycle_tensorboard.webbrowser.GenericBrowser("lynx"))
    assert lifecycle_tensorboard.open_browser("http://127.0.0.1:6006/") is False  # it would take over the terminal


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_an_instance_jobs_tensorboard_runs_there_and_reaches_this_machine_over_ssh_until_ctrl_c(
        aws, orch, sshd_server, docker_engine, tensorboard_image, monkeypatch, tmp_path):  # noqa: F811
    wrapper = sshd_server.bin_dir / "docker"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('docker')} -H {docker_engine.base_url} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("ORCH_SSH_PROXY_COMMAND", sshd_server.proxy_command)
    monkeypatch.setenv("ORCH_SSH_USER", sshd_server.user)
    authorized = authorize_new_key_pairs(monkeypatch, sshd_server)
    client = docker_engine.client()
    job = f"tb-{uuid.uuid4().hex[:8]}"
    try:
        r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--ssh-cidr", CIDR)
        assert r.exit_code == 0, r.output
        from tests.fixtures.aws import tagged

        rules = tagged(job)["security_groups"][0]["IpPermissions"]
        outputs = tmp_path / "outputs"
        (outputs / "tensorboard").mkdir(parents=True)
        (outputs / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"\x00" * 64)
        # The job's trainer has ended: when people look at curves.
        client.containers.run(tensorboard_image, ["sh", "-c", "true"], detach=True, name=container_name(job),
                              network_mode="none", labels={LABEL_JOB: job, LABEL_OUTPUTS: str(outputs)})
        ctr.wait_state(client, job, {"exited"}, timeout_s=60)
        port = free_port()

        def look():
            page = http_get(f"http://127.0.0.1:{port}/").decode()
            [tb] = client.containers.list(filters={"label": f"{LABEL_TENSORBOARD}={job}"})
            return page, tb.attrs["HostConfig"]["NetworkMode"], [m["RW"] for m in tb.attrs["Mounts"]]

        r, (page, network, writable) = interrupt_when(
            lambda: orch("tensorboard", job, "--no-browser", "--port", port), look, monkeypatch)
        assert r.exit_code == 0, r.output
        assert page == "stand-in tensorboard on /outputs/tensorboard (read-only): events.out.tfevents.1.host.1.0"
        assert network == "host" and writable == [False]
        assert f"TensorBoard of {job}: http://127.0.0.1:{port}/" in r.stdout
        assert "Stopped" in r.stderr and "\x1b" not in r.output
        # Ctrl-C closed the tunnel and removed the container; the security group is as it was.
        assert refused(port)
        assert client.containers.list(all=True, filters={"label": f"{LABEL_TENSORBOARD}={job}"}) == []
        assert tagged(job)["security_groups"][0]["IpPermissions"] == rules
        assert ctr.find(client, job) is not None  # the job's own container is left as it was
    finally:
        ctr.remove(client, job, timeout_s=1)
        client.close()
        for public in authorized:
            sshd_server.revoke(public)
        wrapper.unlink(missing_ok=True)
