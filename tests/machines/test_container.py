"""The trainer container on a real Docker engine: build, run detached, logs, restart, remove.

The engine is the test dockerd (tests/fixtures/dockerd.py), reached as this machine's engine
(`endpoint=None` with DOCKER_HOST); the base image is the locally imported stand-in for the NGC
image (tests/images/base.py). The first run on a machine builds both (about 2 minutes); later runs
reuse them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.records import JobSpec
from orchestrator.labels import LABEL_CREATED_BY, LABEL_IMAGE_HASH, LABEL_JOB, LABEL_OUTPUTS, container_name
from orchestrator import assets
from orchestrator.errors import JobError
from orchestrator.job import logtext
from orchestrator.job.logs import parse_since
from orchestrator.machines import docker_runner as ctr
from orchestrator.machines.image import ensure_image, image_tag
from orchestrator.records import LogLine
from tests.fixtures.on_this_machine import Here
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from orchestrator.machines.local_docker import LocalDockerMachine

pytestmark = pytest.mark.needs_docker

TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8")

HERE = Here(LocalDockerMachine)  # what `orch launch --target local` runs on here
start_job, job_status, stop_job, follow_logs, fetch_weights = (
    HERE.start_job, HERE.job_status, HERE.stop_job, HERE.follow_logs, HERE.fetch_weights)



@pytest.fixture(scope="session")
def trainer_image(docker_engine, base_image):  # noqa: F811
    client = docker_engine.client()
    try:
        tag, _ = ensure_image(client, assets.root(), base_image)
    finally:
        client.close()
    return tag


@pytest.fixture
def local_engine(docker_engine, base_image, monkeypatch):  # noqa: F811
    """This machine's engine is the test engine; builds use the test base."""
    monkeypatch.setenv("DOCKER_HOST", docker_engine.base_url)
    monkeypatch.setenv("ORCH_BASE_IMAGE", base_image)
    monkeypatch.setenv("ORCH_LOCAL_RUNNER", "docker")
    client = docker_engine.client()
    yield client
    for job in _made:
        ctr.remove(client, job, timeout_s=1)
    _made.clear()
    client.close()


_made: list[str] = []


def new_job(kind: str) -> str:
    """A job name of its own: test sessions may share the engine."""
    name = f"t-{kind}-{uuid.uuid4().hex[:8]}"
    _made.append(name)
    return name


def make_dataset(dest: Path, classes: int = 3, per_class: int = 20) -> Path:
    subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(dest), "--classes", str(classes),
                    "--per-class", str(per_class), "--size", "32"], check=True, capture_output=True)
    return dest


def epochs_in(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(line)["epoch"] for line in metrics.read_text().splitlines() if line.strip()]


def test_image_builds_from_the_dockerfile_on_the_base(docker_engine, base_image, trainer_image):  # noqa: F811
    client = docker_engine.client()
    image = client.images.get(trainer_image)
    assert image.attrs["Config"]["Entrypoint"] == ["trainer"]
    assert image.attrs["Config"]["User"] not in ("", "0", "root")  # non-root by default
    code, out = ctr.run_once(client, trainer_image, ["models"], {})
    assert code == 0, out
    # torch comes from the base, not reinstalled: the same files in both images
    probe = client.containers.run(trainer_image, entrypoint=["python3", "-c",
                                  "import torch, trainer; print(torch.__file__)"], remove=True, network_mode="none")
    assert b"/usr/local/lib/python3.11/dist-packages/torch/" in probe
    # an unchanged context is a cache hit: the tag names the content, nothing is built again
    first, _ = ensure_image(client, assets.root(), base_image)
    started = time.monotonic()
    again, _ = ensure_image(client, assets.root(), base_image)
    assert again == first and time.monotonic() - started < 10
    client.close()


def test_context_hash_follows_the_trainer_sources(tmp_path):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "trainer" / "a.py").write_text("a = 1\n")
    first, _ = image_tag(tmp_path)
    (tmp_path / "trainer" / "__pycache__").mkdir()
    (tmp_path / "trainer" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert image_tag(tmp_path)[0] == first  # caches do not change the image
    (tmp_path / "trainer" / "_jpegcrop.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF built in place")
    assert image_tag(tmp_path)[0] == first  # nor does an extension built for this machine's Python
    (tmp_path / "setup.py").write_text("from setuptools import setup\n")
    assert image_tag(tmp_path)[0] != first  # setup.py builds the image's own: part of the context
    first, _ = image_tag(tmp_path)
    (tmp_path / "trainer" / "a.py").write_text("a = 2\n")
    assert image_tag(tmp_path)[0] != first
    assert image_tag(tmp_path, "other-base")[0] != image_tag(tmp_path)[0]


def test_job_runs_detached_with_labels_and_mounts(local_engine, trainer_image, tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    job = new_job("run")
    spec = JobSpec(job=job, data=str(data), trainer_args=(*TINY, "--epochs", "2"))
    started = start_job(spec)
    assert started.state in ("running", "created", "exited")

    container = ctr.find(local_engine, job)
    assert container.labels[LABEL_JOB] == job
    assert container.labels[LABEL_CREATED_BY].startswith("orch")
    assert container.labels[LABEL_IMAGE_HASH]
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/data"]["Source"] == str(data) and mounts["/data"]["RW"] is False
    assert mounts["/outputs"]["RW"] is True
    host_config = container.attrs["HostConfig"]
    assert host_config["RestartPolicy"]["Name"] == "on-failure"
    assert host_config["ShmSize"] >= 1 << 30
    assert container.attrs["Args"][-2:] == ["--resume", "auto"]
    # a second start of a running job does not start another container
    start_job(spec)
    assert len(local_engine.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job}"})) == 1

    code = follow_logs(job, follow_on=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "epoch 1/2" in out and "epoch 2/2" in out
    assert out.count("epoch 2/2 lr") == 1

    st = job_status(job)
    assert (st.state, st.exit_code) == ("exited", 0)
    assert st.last_metrics["epoch"] == 2

    report = fetch_weights(job, "best", tmp_path / "weights")
    assert tmp_path / "weights" / "checkpoints" / "best.pt" in report.verified
    assert (tmp_path / "weights" / "metrics.jsonl").exists()

    assert stop_job(job) is True
    assert ctr.find(local_engine, job) is None
    assert job_status(job).state == "missing"
    assert stop_job(job) is False


def test_container_killed_mid_epoch_restarts_and_resumes(local_engine, trainer_image, tmp_path, capsys):
    data = make_dataset(tmp_path / "data", classes=4, per_class=60)
    job = new_job("crash")
    epochs = 4
    start_job(JobSpec(job=job, data=str(data),
                                            trainer_args=(*TINY, "--epochs", str(epochs), "--batch-size", "16")))
    outputs = Path(ctr.find(local_engine, job).labels[LABEL_OUTPUTS])
    metrics = outputs / "metrics.jsonl"

    deadline = time.monotonic() + 300
    # The first epoch is done and checkpointed: the trainer draws curves.png after saving last.pt.
    while not (len(epochs_in(metrics)) >= 1 and (outputs / "curves.png").exists()):
        assert time.monotonic() < deadline, "the first epoch never finished"
        assert ctr.status(local_engine, job).state == "running", ctr.find(local_engine, job).logs()[-3000:]
        time.sleep(0.05)
    # Freeze it first (tiny epochs are fast on an idle machine), check it is mid-run, then crash it:
    # a SIGKILL from outside, as the OOM killer would (not `docker stop`/`docker kill`, which count
    # as a manual stop and are not restarted).
    pid = ctr.find(local_engine, job).attrs["State"]["Pid"]
    os.kill(pid, signal.SIGSTOP)
    before = epochs_in(metrics)
    assert len(before) < epochs, "the run finished before it could be killed; make epochs longer"
    os.kill(pid, signal.SIGKILL)

    code = follow_logs(job, follow_on=True)
    out = capsys.readouterr().out
    assert code == 0, out
    st = job_status(job)
    assert st.restarts >= 1
    after = epochs_in(metrics)
    assert after == list(range(1, epochs + 1)), after  # continued from the checkpoint, not from epoch 1
    assert out.count(f"epoch 1/{epochs} lr") == 1  # epoch 1 was not trained again
    assert "resumed from /outputs/checkpoints/last.pt" in out
    stop_job(job)


def test_log_cursor_skips_what_was_printed():
    line = LogLine
    cursor = logtext.LogCursor()
    printed = [x.text for x in [line(1, "a"), line(2, "b"), line(2, "c")] if cursor.fresh(x)]
    assert printed == ["a", "b", "c"]
    # reconnect: the engine replays from ts 2 (inclusive), then new lines
    cursor.restart()
    replay = [line(2, "b"), line(2, "c"), line(2, "d"), line(3, "e")]
    assert [x.text for x in replay if cursor.fresh(x)] == ["d", "e"]
    cursor.restart()
    assert [x.text for x in [line(3, "e"), line(4, "f")] if cursor.fresh(x)] == ["f"]


def test_log_timestamps_and_since():
    ns = logtext.parse_timestamp_ns("2026-01-31T08:00:01.123456789Z")
    assert ns % 1_000_000_000 == 123456789
    assert logtext.split_log_line("2026-01-31T08:00:01.5Z hello world").text == "hello world"
    assert parse_since("2026-01-31T08:00:01.123456789Z") == ns
    assert parse_since("1700000000") == 1_700_000_000 * 10**9
    assert parse_since(None) is None
    with pytest.raises(JobError):
        parse_since("yesterday")


def test_bootstrap_watcher_shuts_down_after_the_job_ends(docker_engine, base_image, tmp_path):  # noqa: F811
    """infra/bootstrap.sh's watcher, on the test engine: no shutdown while the job runs, one after."""
    client = docker_engine.client()
    job = new_job("autostop")
    marker = tmp_path / "shutdown-called"
    client.containers.run(base_image, ["python3", "-c", "import time; time.sleep(6)"], detach=True,
                          labels={LABEL_JOB: job}, network_mode="none", name=container_name(job))
    env = {**os.environ, "DOCKER_HOST": docker_engine.base_url, "ORCH_AUTOSTOP_MINUTES": "0.05",
           "ORCH_WATCH_INTERVAL_S": "1", "ORCH_SHUTDOWN_CMD": f"touch {marker}",
           "ORCH_STATE_DIR": str(tmp_path / "state"), "ORCH_LOG": str(tmp_path / "watch.log")}
    watcher = subprocess.Popen(["bash", str(assets.root() / "infra" / "bootstrap.sh"), "watch"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)
        assert not marker.exists()  # the job still runs
        assert watcher.wait(timeout=30) == 0
        assert marker.exists()
        log = (tmp_path / "watch.log").read_text()
        assert "no orch container running for 3s" in log
    finally:
        if watcher.poll() is None:
            watcher.kill()
        ctr.remove(client, job, timeout_s=1)
        client.close()


def test_a_line_longer_than_the_engines_16_kib_pieces_comes_back_whole(docker_engine, base_image):  # noqa: F811
    client = docker_engine.client()
    job = new_job("longline")
    line = "".join(f"{i:07d} 2026-01-01T00:00:00Z " for i in range(2000))  # 62 KB, timestamps of its own inside
    try:
        container = client.containers.run(base_image, ["python3", "-c", f"print({line!r}); print('after')"],
                                          detach=True, labels={LABEL_JOB: job}, network_mode="none",
                                          name=container_name(job))
        assert container.wait(timeout=60)["StatusCode"] == 0
        assert [entry.text for entry in ctr.stream_logs(client, job)] == [line, "after"]
    finally:
        ctr.remove(client, job, timeout_s=1)
        client.close()


def test_iam_policy_changes_only_orch_tagged_resources():
    policy = json.loads((assets.root() / "infra" / "iam-policy.json").read_text())
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        assert all("*" not in a for a in actions), st["Sid"]  # no wildcard actions
        writes = [a for a in actions if a.split(":")[1].startswith(("Terminate", "Delete", "Stop", "Start", "Modify",
                                                                   "Authorize", "Revoke", "Attach", "Detach"))]
        if writes and all(a.startswith(("ec2:", "autoscaling:")) for a in writes):
            assert st["Condition"]["Null"] == {"aws:ResourceTag/orch:job": "false"}, st["Sid"]
        elif writes:  # S3: only what `orch data` keeps and a managed job's spec, each under its prefix
            assert st["Resource"] in ("arn:aws:s3:::*/orch-datasets/*", "arn:aws:s3:::*/orch-jobs/*"), st["Sid"]
        if "ec2:CreateTags" in actions:
            assert "ec2:CreateAction" in st["Condition"]["StringEquals"]
    role = json.loads((assets.root() / "infra" / "instance-role-policy.json").read_text())
    role_actions = {a for st in role["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    ecr_image = {"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage",
                 "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage"}
    # Read data, write checkpoints, pull and push the trainer image, stop a managed job's own group replacing its
    # instance: nothing deletes, nothing else.
    assert role_actions <= {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                            "ecr:GetAuthorizationToken", "autoscaling:SetDesiredCapacity"} | ecr_image
    for st in role["Statement"]:
        actions = set([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
        if actions & ecr_image:
            assert st["Resource"] == "arn:aws:ecr:*:*:repository/orch-trainer", st["Sid"]
        if "autoscaling:SetDesiredCapacity" in actions:  # orch's groups only
            assert st["Condition"]["Null"] == {"aws:ResourceTag/orch:job": "false"}, st["Sid"]


def test_local_target_in_docker_through_the_cli(local_engine, trainer_image, tmp_path):
    """The README's `orch launch --target local --data demo` on a machine with Docker."""
    orch = str(Path(sys.executable).with_name("orch"))
    job = new_job("cli")

    def run(*args):
        return subprocess.run([orch, *args], capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL, env=os.environ.copy())

    r = run("launch", "--target", "local", "--data", "demo", "--name", job, "--", *TINY, "--epochs", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    container = ctr.find(local_engine, job)
    assert container is not None  # the container, not a local process
    r = run("logs", job, "--follow")
    assert r.returncode == 0 and "epoch 1/1 lr" in r.stdout, r.stdout + r.stderr
    r = run("fetch-weights", job, "--dest", str(tmp_path / "w"))
    assert r.returncode == 0 and "sha256 ok" in r.stdout, r.stdout + r.stderr
    r = run("teardown", job, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ctr.find(local_engine, job) is None
