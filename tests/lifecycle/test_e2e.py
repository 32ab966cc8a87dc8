"""End to end through the `orch` CLI: moto for EC2, a real sshd behind the proxy command, a real
dockerd reached over that SSH connection, the trainer image built from the project's Dockerfile.

Only the EC2 API is emulated. Edges stand in for what cloud-init does on a real instance: the
job's new key pair is authorized on the sshd as soon as EC2 (moto) creates it, `docker` on the
"instance" is the CLI pointed at the test engine (a wrapper first on the sshd's PATH), and where a
test asks for it (`booted_watcher`), the user data EC2 holds for the new instance is run in its
`watch` mode, as its watcher service would be (its state in a test folder, its shutdown a file).
That engine has no GPU, so the jobs are launched with --no-gpus (on an instance, a GPU job the
engine cannot give GPUs to is refused rather than run on the CPU).
"""
from __future__ import annotations

import io
import json
import pwd
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest


from orchestrator.labels import LABEL_JOB, LABEL_TRAINER_ARGS
from orchestrator.machines import docker_runner as ctr
from tests.fixtures.dockerd import base_image, docker_engine, running_image  # noqa: F401 (fixtures)
from tests.fixtures.sshd import authorize_new_key_pairs, sshd_server  # noqa: F401 (fixture)
from tests.fixtures.aws import aws, moto_url, orch, tagged  # noqa: F401 (fixtures)

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


@pytest.fixture
def booted_watcher(instance, docker_engine, monkeypatch, tmp_path):  # noqa: F811
    """Each instance orch starts runs the watcher of its own user data (infra/bootstrap.sh with the launch's
    settings), as at boot; orch reads its hard cap and clock from the folder it keeps them in."""
    import base64

    import boto3

    from orchestrator.cloud import instances as cloud_instances
    from orchestrator.machines import bootstrap
    from tests.fixtures.aws import REGION

    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")  # the real infra/bootstrap.sh is the user data
    state = tmp_path / "watcher"
    monkeypatch.setattr(bootstrap, "WATCHER_STATE_DIR", str(state / "state"))  # /var/lib/orch on an instance
    watchers: list[subprocess.Popen] = []
    run = cloud_instances.run_instance

    def run_and_boot(plan, *args, **kwargs):
        started = run(plan, *args, **kwargs)
        raw = boto3.client("ec2", region_name=REGION).describe_instance_attribute(
            InstanceId=started.instance_id, Attribute="userData")["UserData"]["Value"]
        script = state / "user-data.sh"
        state.mkdir(parents=True, exist_ok=True)
        script.write_text(base64.b64decode(raw).decode())
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DOCKER_HOST": docker_engine.base_url,
               "ORCH_STATE_DIR": str(state / "state"), "ORCH_LOG": str(state / "watch.log"),
               "ORCH_WATCH_INTERVAL_S": "1", "ORCH_SHUTDOWN_CMD": f"touch {state / 'shut-down'}"}
        watchers.append(subprocess.Popen(["bash", str(script), "watch"], env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30  # cloud-init has started it before orch reaches the machine
        while not (state / "state" / "cap").exists():
            assert time.monotonic() < deadline, (state / "watch.log").read_text()
            time.sleep(0.2)
        return started

    monkeypatch.setattr(cloud_instances, "run_instance", run_and_boot)
    yield state
    for watcher in watchers:
        watcher.kill()
        watcher.wait()
    assert not (state / "shut-down").exists()


def make_dataset(dest: Path, classes: int, per_class: int) -> Path:
    subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(dest), "--classes", str(classes),
                    "--per-class", str(per_class), "--size", "32"], check=True, capture_output=True)
    return dest


def job_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def test_launch_logs_fetch_evaluate_teardown(instance, orch, docker_engine, sshd_server, booted_watcher,  # noqa: F811
                                             tmp_path):
    data = make_dataset(tmp_path / "data", classes=3, per_class=20)
    job = job_name("e2e")
    instance.append(job)

    args = (*TINY, "--epochs", "2", "--max-hours", "5")
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--ssh-cidr", CIDR, "--no-gpus",
             "--data", str(data), "--max-hours", "3", "--", *args)
    assert r.exit_code == 0, r.output
    assert any(t.endswith(" 22") for t in sshd_server.requested_targets())  # reached through the proxy
    client = docker_engine.client()
    container = ctr.find(client, job)
    assert container is not None and container.labels[LABEL_JOB] == job
    # The trainer is told the instance's hard cap (what is left of it when its container starts, less 10 min to
    # save), so it saves and exits before the watcher stops it; the user's larger --max-hours gives way, and says so.
    command = container.attrs["Config"]["Cmd"]
    assert command[-4:-3] == ["--max-hours"] and command[-2:] == ["--resume", "auto"]
    assert command.count("--max-hours") == 1 and 2.7 <= float(command[-3]) <= 3 - 10 / 60
    assert json.loads(container.labels[LABEL_TRAINER_ARGS]) == list(args)  # what it was launched with
    said = re.search(r"trainer: --max-hours (\S+) \((\S+) h left of the 3 h cap, less 10 min to save\); your "
                     r"--max-hours 5 is larger, so it is not used", r.output)
    assert said and said[1] == command[-3] and float(said[2]) > 2.9, r.output
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
    r = orch("fetch-weights", job, "--which", "last", "--dest", str(tmp_path / "last"), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["dest"] == str(tmp_path / "last") and report["bytes_downloaded"] > 0
    assert str(tmp_path / "last" / "checkpoints" / "last.pt") in report["verified"]

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
    assert client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job}"}) == []
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

    from orchestrator.job.logs import follow
    from orchestrator.lifecycle import machines

    out = io.StringIO()
    result: list[int] = []
    follower = threading.Thread(target=lambda: result.append(follow(
        machines.machine_for(job), follow=True, out=out, reconnect_s=60)), daemon=True)
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


def test_a_launch_under_a_running_jobs_name_records_none_of_what_it_did_not_apply(  # noqa: F811
        instance, orch, docker_engine, running_image, tmp_path):  # noqa: F811
    from orchestrator import state

    first, other = tmp_path / "first", tmp_path / "other"
    for data in (first, other):
        for split in ("train", "val"):
            (data / split / "c0").mkdir(parents=True)
            (data / split / "c0" / "0.bin").write_bytes(b"x" * 100)
    job = job_name("again")
    instance.append(job)

    def launch(data: Path, *args: str):
        return orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--ssh-cidr", CIDR, "--no-gpus",
                    "--image", running_image, "--data", str(data), "--", *args)

    r = launch(first, "--epochs", "50")
    assert r.exit_code == 0, r.output
    recorded = state.get(job).launch
    assert (recorded.data, recorded.trainer_args) == (str(first), ("--epochs", "50"))
    client = docker_engine.client()
    container = ctr.find(client, job)

    r = launch(other, "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert f"NOT applied: --data {other} (it trains on {first}); trainer arguments `--epochs 1`" in r.output
    # The job runs as before, and a later `orch launch --name JOB --resume` takes what it runs with.
    assert ctr.find(client, job).id == container.id
    assert state.get(job).launch == recorded
    client.close()
    orch("teardown", job, "--yes")


def test_two_instances_train_one_run_a_lost_node_stops_it_and_a_resume_continues(  # noqa: F811
        instance, orch, docker_engine, sshd_server, aws, tmp_path, monkeypatch):
    """`--nodes 2`: two moto instances, each reached through the proxy command, each with its own container on
    host networking (both on the test engine here: they meet on its loopback, `rendezvous_host`)."""
    import boto3

    from tests.fixtures.aws import REGION

    monkeypatch.setenv("ORCH_RENDEZVOUS_HOST", "127.0.0.1")
    data = make_dataset(tmp_path / "data", classes=3, per_class=20)
    job = job_name("nodes")
    node1 = f"{job}.node1"
    instance.extend([job, node1])
    epochs = 30
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--nodes", "2", "--ssh-cidr", CIDR, "--no-gpus",
             "--data", str(data), "--", *TINY, "--batch-size", "8", "--epochs", str(epochs))
    assert r.exit_code == 0, r.output
    client = docker_engine.client()
    containers = [ctr.find(client, job), ctr.find(client, node1)]
    assert all(c is not None and c.attrs["HostConfig"]["NetworkMode"] == "host" for c in containers)
    assert [c.attrs["HostConfig"]["RestartPolicy"]["Name"] for c in containers] == ["no", "no"]

    outputs = Path(pwd.getpwnam(sshd_server.user).pw_dir) / "orch"
    metrics = outputs / job / "outputs" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 2:
        assert time.monotonic() < deadline and containers[0].reload() is None and containers[0].status == "running", \
            orch("logs", job).output[-3000:]
        time.sleep(0.5)
    assert json.loads((outputs / job / "outputs" / "config.json").read_text())["world_size"] == 2
    r = orch("logs", job, "--node", "1")
    assert r.exit_code == 0 and "node 1 of 2" in r.output, r.output

    # Node 1's instance is lost mid-run (a reclaim): its container dies with it, and AWS says it is terminated.
    ec2 = boto3.client("ec2", region_name=REGION)
    lost = [i["InstanceId"] for res in ec2.describe_instances(Filters=[{"Name": "tag:orch:node", "Values": ["1"]},
                                                                        {"Name": "tag:orch:job", "Values": [job]}])[
        "Reservations"] for i in res["Instances"]]
    containers[1].kill()
    ec2.terminate_instances(InstanceIds=lost)
    lost_at = time.monotonic()
    r = orch("logs", job, "--follow")
    assert r.exit_code == 4, r.output[-3000:]  # node 0 stops: its peer is gone
    assert time.monotonic() - lost_at < 120 and "stopped answering" in r.output
    saved = len(metrics.read_text().splitlines())
    assert 2 <= saved < epochs and (outputs / job / "outputs" / "checkpoints" / "last.pt").is_file()

    r = orch("launch", "--name", job, "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    assert "to start: node 1" in r.output and "continues from the checkpoint" in r.output
    r = orch("logs", job, "--follow")
    assert r.exit_code == 0, r.output[-3000:]
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == list(range(1, epochs + 1))
    assert not (outputs / node1 / "outputs" / "checkpoints").exists()  # node 0 alone writes
    assert not (outputs / node1 / "outputs" / "metrics.jsonl").exists()

    r = orch("teardown", job, "--yes")
    assert r.exit_code == 0, r.output
    assert f"placement group orch-{job}" in r.output
    assert tagged(job) == {"instances": [], "security_groups": [], "key_pairs": [], "volumes": []}
    assert aws.placement_groups == {}
    assert client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job}"}) == []
    client.close()
