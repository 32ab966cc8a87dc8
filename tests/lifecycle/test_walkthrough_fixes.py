"""What a new user's first hour ran into, through the CLI against moto.

A --data that can't work (a folder that isn't there or lacks a train/ or val/ split, an s3:// URI with no
instance role to copy it) is refused before anything is created; teardown and status don't wait
minutes for an SSH that a changed address can't reach; teardown of a job that doesn't exist
claims no success; a local launch that started nothing leaves no job behind; doctor fails on an
instance type that doesn't exist; without AWS credentials, a job that isn't here is said to be not
here (the credentials second), and `orch list` lists this machine's jobs without a warning.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import boto3
import pytest

from orchestrator.remote import base as remote_base
from orchestrator.remote import ssh as remote_ssh
from tests.fixtures.aws import REGION, read_state, tagged

CIDR = "203.0.113.7/32"


def launch(orch, job, *extra):
    return orch("launch", "--instance", "g4dn.2xlarge", "--name", job, "--ssh-cidr", CIDR, *extra)


def registry() -> dict:
    return read_state(Path(os.environ["ORCH_HOME"]).parent).get("jobs", {})


def nothing_created(aws, job: str) -> bool:
    left = tagged(job)
    return not aws.run_calls and not left["security_groups"] and not left["key_pairs"] and job not in registry()


# --- 1. a local --data folder the trainer could not read ----------------------------------------


@pytest.fixture
def bad_data(request, tmp_path):
    kind = request.param
    if kind == "missing":
        return tmp_path / "nonexistent", "is not a folder"
    if kind == "file":
        path = tmp_path / "data.tar"
        path.write_text("not a folder")
        return path, "is not a folder"
    if kind == "no-val":
        path = tmp_path / "train-only"
        (path / "train" / "cat").mkdir(parents=True)  # the trainer stops at once without a val split
        return path, "has no val/ folder"
    path = tmp_path / "flat"
    (path / "cat").mkdir(parents=True)  # images but no train/ split
    return path, "has no train/ folder"


@pytest.mark.parametrize("bad_data", ["missing", "file", "no-train", "no-val"], indirect=True)
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_data_folder_the_trainer_cannot_read_is_refused_before_anything_is_created(
        aws, orch, job_calls, bad_data, dry_run, tmp_path):
    path, why = bad_data
    r = launch(orch, "d1", "--data", path, *(["--dry-run"] if dry_run else []))
    assert r.exit_code == 2, r.output
    assert why in r.output and "Nothing was created" in r.output and "Traceback" not in r.output
    if "has no" in why:   # the fix: a command that makes the layout from this folder
        assert f"trainer prepare folder --source {path}" in r.output
    assert "Dry run" not in r.output
    assert nothing_created(aws, "d1")
    assert job_calls.started == []


def test_a_data_folder_with_train_and_val_splits_launches(aws, orch, job_calls, tmp_path):
    data = tmp_path / "data"
    (data / "train" / "cat").mkdir(parents=True)
    (data / "val" / "cat").mkdir(parents=True)
    r = launch(orch, "d2", "--data", data)
    assert r.exit_code == 0, r.output
    assert [spec.data for _, spec in job_calls.started] == [str(data)]


def test_init_weights_from_this_machine_is_refused_for_an_instance_before_anything_is_created(
        aws, orch, job_calls, tmp_path):
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split / "cat").mkdir(parents=True)
    r = launch(orch, "w1", "--data", data, "--", "--init-weights", str(tmp_path / "resnet18.pth"))
    assert r.exit_code == 2 and "--init-weights /data/resnet18.pth" in r.output, r.output
    assert nothing_created(aws, "w1") and job_calls.started == []
    r = launch(orch, "w2", "--data", data, "--", "--init-weights", "/data/resnet18.pth")
    assert r.exit_code == 0, r.output


def test_a_local_target_with_a_missing_data_folder_is_refused_and_not_listed(orch, tmp_path):
    r = orch("launch", "--target", "local", "--name", "l0", "--data", tmp_path / "nonexistent")
    assert r.exit_code == 2 and "is not a folder" in r.output, r.output
    listed = orch("list")
    assert "l0" not in listed.output and "l0" not in registry()


# --- 2. s3:// data without an instance profile ---------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_s3_data_without_an_instance_profile_is_refused_before_anything_is_created(aws, orch, job_calls, dry_run,
                                                                                  tmp_path):
    r = launch(orch, "s1", "--data", "s3://bucket/imagenet", *(["--dry-run"] if dry_run else []))
    assert r.exit_code == 2, r.output
    assert "needs --iam-instance-profile" in r.output and "Nothing was created" in r.output
    assert nothing_created(aws, "s1")


def test_s3_data_with_an_instance_profile_launches(aws, orch, job_calls):
    boto3.client("iam", region_name=REGION).create_instance_profile(InstanceProfileName="orch-trainer")
    r = launch(orch, "s2", "--data", "s3://bucket/imagenet", "--iam-instance-profile", "orch-trainer")
    assert r.exit_code == 0, r.output
    assert [spec.data for _, spec in job_calls.started] == ["s3://bucket/imagenet"]


# --- 3. teardown and status with an SSH that can't be reached -------------------------------------


@pytest.fixture
def ssh_blocked(monkeypatch):
    """Every SSH attempt times out, as when the /32 security group no longer admits the caller's new address."""
    first: list[float] = []

    def connect(endpoint, timeout=20.0):
        first.append(first[0] if first else time.monotonic())
        if time.monotonic() - first[0] > 5:
            raise RuntimeError("still retrying SSH after 5 s")
        raise remote_base.SSHUnreachable(f"timed out connecting to {endpoint.host}:22")

    monkeypatch.setattr(remote_ssh, "connect", connect)
    monkeypatch.setenv("ORCH_QUICK_SSH_S", "1")
    return first


def test_teardown_terminates_without_waiting_for_an_unreachable_ssh(aws, orch, ssh_blocked):
    assert launch(orch, "t1").exit_code == 0  # no --data: the real job functions, never called at launch
    r = orch("teardown", "t1", "--yes")
    assert r.exit_code == 0, r.output
    assert ssh_blocked, "teardown did not try to stop the container"
    assert "still retrying SSH" not in r.output
    assert "could not stop the container before terminating" in r.output and "terminated anyway" in r.output
    assert "SSH for up to 1 s" in r.output
    assert tagged("t1")["instances"] == [] and tagged("t1")["key_pairs"] == []


def test_status_shows_the_instance_without_waiting_for_an_unreachable_ssh(aws, orch, ssh_blocked):
    assert launch(orch, "t2").exit_code == 0
    r = orch("status", "t2")
    assert r.exit_code == 0, r.output
    assert "t2: running (aws)" in r.output
    assert "container unreachable" in r.output and "still retrying SSH" not in r.output
    orch("teardown", "t2", "--yes")


# --- 5. nothing there, nothing claimed -----------------------------------------------------------


def test_teardown_of_a_job_that_does_not_exist_claims_no_success(aws, orch):
    r = orch("teardown", "nosuch", "--yes")
    assert r.exit_code == 1
    assert "No job named nosuch here" in r.output and "Nor is anything tagged orch:job=nosuch" in r.output
    assert "✓" not in r.output


def test_a_local_launch_that_started_nothing_leaves_no_job(orch, monkeypatch):
    monkeypatch.setenv("ORCH_LOCAL_RUNNER", "process")
    # The local target can't copy s3:// data: the start fails after the checks, with nothing started.
    r = orch("launch", "--target", "local", "--name", "l1", "--data", "s3://bucket/imagenet")
    assert r.exit_code == 1 and "download it first" in r.output, r.output
    assert "l1" not in registry()
    assert "l1" not in orch("list").output


# --- 6. doctor and an instance type that doesn't exist ---------------------------------------------


def test_doctor_fails_on_an_instance_type_that_does_not_exist(aws, orch):
    r = orch("doctor", "--instance", "g4dn.3xlarge")
    assert r.exit_code == 1, r.output
    assert "[FAIL] instance type" in r.output and "g4dn.3xlarge" in r.output and "Did you mean" in r.output


def test_doctor_only_warns_when_the_quota_cannot_be_asked(aws, orch):
    aws.quotas.clear()  # Service Quotas answers NoSuchResource, as moto would
    r = orch("doctor", "--instance", "g4dn.2xlarge")
    assert "[warn] vcpu quota" in r.output and "[FAIL] instance type" not in r.output
    assert "[FAIL] vcpu quota" not in r.output


# --- 7. no AWS credentials: a job that isn't here, and the list --------------------------------------


@pytest.fixture
def no_aws_credentials(monkeypatch):
    from orchestrator.cloud import aws as cloud_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup either
    monkeypatch.setattr(cloud_aws, "_cache", {})  # no client made with another test's credentials


@pytest.mark.parametrize("command", [("status",), ("teardown", "--yes"), ("logs",), ("fetch-weights",)])
def test_a_job_that_is_not_here_is_said_so_before_the_missing_credentials(orch, no_aws_credentials, command):
    r = orch(command[0], "nosuch", *command[1:])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: No job named nosuch here (`orch list` shows the jobs). "), r.output
    assert "could not be asked" in r.output and "No AWS credentials found" in r.output
    assert "Traceback" not in r.output


def test_list_without_credentials_lists_this_machines_jobs_in_one_plain_line(orch, job_calls, no_aws_credentials):
    r = orch("launch", "--target", "local", "--name", "loc", "--data", "demo", "--no-gpus")
    assert r.exit_code == 0, r.output
    r = orch("list")
    assert r.exit_code == 0, r.output
    assert "No AWS credentials here, so only this machine's jobs are listed" in r.stderr
    assert "warning" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert [line.split()[:3] for line in r.stdout.splitlines()[1:]] == [["loc", "local", "running"]]
