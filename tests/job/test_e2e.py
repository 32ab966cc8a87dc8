"""End to end through the `orch` CLI: moto for EC2, a real sshd behind the proxy command, a real
dockerd reached over that SSH connection, the trainer image built from the project's Dockerfile.

Only the EC2 API is emulated. Two edges stand in for what cloud-init does on a real instance:
the job's new key pair is authorized on the sshd as soon as EC2 (moto) creates it, and `docker`
on the "instance" is the CLI pointed at the test engine (a wrapper first on the sshd's PATH).
That engine has no GPU, so the jobs are launched with --no-gpus (on an instance, a GPU job the
engine cannot give GPUs to is refused rather than run on the CPU).
"""
from __future__ import annotations

import io
import json
import pwd
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from orchestrator import container as ctr
from orchestrator import job as job_api
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import authorize_new_key_pairs, sshd_server  # noqa: F401 (fixture)
from tests.orch.conftest import aws, moto_url, orch, tagged  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.needs_docker, pytest.mark.needs_sshd]

CIDR = "198.51.100.7/32"
TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8")


@pytest.fixture
def instance(aws, sshd_server, docker_engine, base_image, monkeypatch):  # noqa: F811
    """The moto instance is "reached" through the proxy command; its engine is the test engine."""
    wrapper = sshd_server.bin_dir / "docker"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('docker')} -H {docker_engine.base_url} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("ORCH_SSH_PROXY_COMMAND", sshd_server.proxy_command)
    monkeypatch.setenv("ORCH_SSH_USER", sshd_server.user)
    monkeypatch.setenv("ORCH_BASE_IMAGE", base_image)
    monkeypatch.setenv("ORCH_RECONNECT_S", "60")

    authorized = authorize_new_key_pairs(monkeypatch, sshd_server)
    jobs: list[str] = []
    yield jobs
    client = docker_engine.client()
    for job in jobs:
        found = ctr.find(client, job)
        if found is not None:
            ctr.remove(client, job, timeout_s=1)
        home = Path(pwd.getpwnam(sshd_server.user).pw_dir)
        shutil.rmtree(home / "orch" / job, ignore_errors=True)  # the job's folder on the "instance"
    client.close()
    for public in authorized:
        sshd_server.revoke(public)
    wrapper.unlink(missing_ok=True)


def make_dataset(dest: Path, classes: int, per_class: int) -> Path:
    subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(dest), "--classes", str(classes),
                    "--per-class", str(per_class), "--size", "32"], check=True, capture_output=True)
    return dest


def job_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def test_launch_logs_fetch_evaluate_teardown(instance, orch, docker_engine, sshd_server, tmp_path):  # noqa: F811
    data = make_dataset(tmp_path / "data", classes=3, per_class=20)
    job = job_name("e2e")
    instance.append(job)

    r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--ssh-cidr", CIDR, "--no-gpus",
             "--data", str(data),
             "--", *TINY, "--epochs", "2")
    assert r.exit_code == 0, r.output
    assert any(t.endswith(" 22") for t in sshd_server.requested_targets())  # reached through the proxy
    client = docker_engine.client()
    container = ctr.find(client, job)
    assert container is not None and container.labels[ctr.LABEL_JOB] == job
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/data"]["RW"] is False
    synced = Path(mounts["/data"]["Source"])  # the tar stream over SSH put the dataset there
    assert sorted(p.relative_to(synced) for p in synced.rglob("*.png")) == \
        sorted(p.relative_to(data) for p in data.rglob("*.png"))

    r = orch("logs", job, "--follow")
    assert r.exit_code == 0, r.output
    assert "epoch 1/2" in r.output and "epoch 2/2" in r.output

    r = orch("status", job)
    assert r.exit_code == 0, r.output

    dest = tmp_path / "weights"
    r = orch("fetch-weights", job, "--which", "best", "--dest", str(dest))
    assert r.exit_code == 0, r.output
    assert "sha256 ok" in r.output
    best = dest / "checkpoints" / "best.pt"
    assert best.exists() and (dest / "checkpoints" / "best.pt.sha256").exists()
    assert (dest / "metrics.jsonl").exists() and (dest / "train.log").exists()

    evaluated = subprocess.run([sys.executable, "-m", "trainer", "evaluate", "--data", str(data), "--checkpoint",
                                str(best), "--device", "cpu", "--workers", "0"], capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    # the fetched weights are the best epoch's: evaluated here, they score what the trainer logged
    metrics = [json.loads(line) for line in (dest / "metrics.jsonl").read_text().splitlines()]
    best_epoch = next(m for m in metrics if m["epoch"] == result["epoch"])
    assert result["top1"] == pytest.approx(best_epoch["val_top1"], abs=1e-6)

    r = orch("teardown", job, "--yes")
    assert r.exit_code == 0, r.output
    assert client.containers.list(all=True, filters={"label": f"{ctr.LABEL_JOB}={job}"}) == []
    left = tagged(job)
    assert left["instances"] == [] and left["security_groups"] == [] and left["key_pairs"] == []
    client.close()


def test_ssh_cut_during_follow_loses_and_repeats_nothing(instance, orch, docker_engine, sshd_server,  # noqa: F811
                                                         tmp_path, capsys):
    data = make_dataset(tmp_path / "data", classes=4, per_class=40)
    job = job_name("cut")
    instance.append(job)
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--ssh-cidr", CIDR, "--no-gpus",
             "--data", str(data),
             "--", *TINY, "--epochs", "3", "--batch-size", "8", "--set", "log_every_seconds=1")
    assert r.exit_code == 0, r.output

    from orchestrator import flow, remote

    endpoint = flow.endpoint_for(job)
    out = io.StringIO()
    result: list[int] = []
    follower = threading.Thread(target=lambda: result.append(job_api.follow_container_logs(
        lambda: remote.open_session(endpoint, 60), job, True, None, out=out, reconnect_s=60)), daemon=True)
    follower.start()

    cuts = 0
    deadline = time.monotonic() + 400
    while follower.is_alive() and cuts < 3 and time.monotonic() < deadline:
        lines = out.getvalue().count("\n")
        if lines >= 2 + cuts * 3:  # cut while lines are streaming, several times
            connections = len(sshd_server.requested_targets())
            sshd_server.cut_connections()
            cuts += 1
            while len(sshd_server.requested_targets()) == connections and follower.is_alive():
                time.sleep(0.2)  # the follower reconnected through a new proxy
        time.sleep(0.3)
    follower.join(timeout=400)
    assert not follower.is_alive(), "the follower never finished"
    assert cuts >= 2, out.getvalue()
    assert result == [0]
    assert "reconnect" in capsys.readouterr().err

    client = docker_engine.client()
    full = ctr.find(client, job).logs(stdout=True, stderr=True).decode().splitlines()
    followed = out.getvalue().splitlines()
    assert followed == full  # every line once, in order: no gap, no duplicate
    client.close()
    orch("teardown", job, "--yes")
