"""What `orch launch` checks and chooses before and while it pays for an instance, against moto.

The quota for a job that is already up, spot refusals that on-demand can answer, the --max-dollars
cap at the price of the market that really launched, an instance profile for a checkpoint bucket,
gp3 IOPS for the throughput asked, ClientTokens that never repeat, and what the launch says about
what the instance will do on its own (its disks go with it).
"""
from __future__ import annotations

import base64
import json
import os
import re
from types import SimpleNamespace

import boto3
import pytest

from orchestrator.cloud import instances as cloud_instances
from orchestrator.cloud import pricing
from orchestrator import assets
from orchestrator.config import Settings, orch_home
from orchestrator.errors import JobError
from orchestrator.lifecycle.keys import write_private_file
from orchestrator.lifecycle.resume import recorded_launch
from orchestrator.lifecycle.userdata import idle_minutes
from orchestrator.records import HardCap
from tests.fixtures.aws import REGION, tagged

CIDR = "203.0.113.7/32"


def launch(orch, job, *extra):
    return orch("launch", "--instance", "g4dn.2xlarge", "--name", job, "--ssh-cidr", CIDR, *extra)


def spot_calls(edge) -> list:
    return [c for c in edge.run_calls if "InstanceMarketOptions" in c]


def user_data(call: dict) -> str:
    # botocore base64-encodes it in place after the edge saw the call; a call the edge refused keeps the text.
    text = call["UserData"]
    return text if text.startswith("#!") else base64.b64decode(text).decode()


def instance_profile(name: str = "orch-trainer") -> str:
    """moto checks that a launch's instance profile exists."""
    boto3.client("iam", region_name=REGION).create_instance_profile(InstanceProfileName=name)
    return name


# --- quota -------------------------------------------------------------------------------------


def test_launching_a_running_job_again_is_not_refused_for_the_quota_its_own_instance_uses(aws, orch, job_calls):
    aws.quotas["L-DB2E81BA"] = 8.0  # room for exactly one g4dn.2xlarge
    assert launch(orch, "q1").exit_code == 0
    r = launch(orch, "q1")  # the README's advice after a dropped connection
    assert r.exit_code == 0, r.output
    assert "not starting a second one" in r.output and "request" not in r.output
    assert len(aws.run_calls) == 1
    r = launch(orch, "q2")  # a second job still needs the quota
    assert r.exit_code == 1 and "L-DB2E81BA" in r.output
    assert len(aws.run_calls) == 1


# --- spot refused: on-demand when allowed -------------------------------------------------------


@pytest.mark.parametrize("code", ["MaxSpotInstanceCountExceeded", "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
                                  "UnauthorizedOperation"])
def test_a_spot_refusal_goes_straight_to_on_demand_when_the_fallback_is_allowed(aws, orch, job_calls, code):
    aws.spot_error = code
    r = launch(orch, "sp1", "--spot", "--on-demand-fallback")
    assert r.exit_code == 0, r.output
    assert len(spot_calls(aws)) == 1  # no other zone is tried for spot: each would say the same
    assert "InstanceMarketOptions" not in aws.run_calls[-1] and "falling back to on-demand" in r.output
    (inst,) = tagged("sp1")["instances"]
    assert inst.get("InstanceLifecycle") != "spot"


def test_a_spot_refusal_without_fallback_says_what_to_do(aws, orch, job_calls):
    aws.spot_error = "AuthFailure.ServiceLinkedRoleCreationNotPermitted"
    r = launch(orch, "sp2", "--spot")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com" in r.output
    assert "Refresh them" not in r.output  # not a credentials problem
    assert len(aws.run_calls) == 1 and tagged("sp2")["instances"] == []

    aws.spot_error = "MaxSpotInstanceCountExceeded"
    r = launch(orch, "sp3", "--spot")
    assert r.exit_code == 1 and "spot quota" in r.output and "--on-demand" in r.output
    assert len(aws.run_calls) == 2


def test_a_policy_that_refuses_only_spot_names_the_missing_permission(aws, orch, job_calls):
    # An IAM policy copied before spot requests had to be tagged: on-demand works, spot is unauthorized.
    aws.spot_error = "UnauthorizedOperation"
    r = launch(orch, "sp5", "--spot")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "arn:aws:ec2:*:*:spot-instances-request/*" in r.output and "infra/iam-policy.json" in r.output
    assert "--on-demand" in r.output
    assert len(aws.run_calls) == 1 and tagged("sp5")["instances"] == []


def test_a_spot_launch_tags_its_spot_request_as_the_policy_requires(aws, orch, job_calls):
    assert launch(orch, "sp6", "--spot").exit_code == 0
    (call,) = aws.run_calls
    specs = {s["ResourceType"]: {t["Key"]: t["Value"] for t in s["Tags"]} for s in call["TagSpecifications"]}
    assert specs["spot-instances-request"]["orch:job"] == "sp6"


def test_a_spot_quota_too_low_at_preflight_starts_on_demand_at_its_price(aws, orch, job_calls, monkeypatch):
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")  # infra/bootstrap.sh: the cap is in the user data
    aws.quotas["L-3819A6DF"] = 0.0  # spot
    r = launch(orch, "sp4", "--spot", "--on-demand-fallback", "--max-dollars", "10")
    assert r.exit_code == 0, r.output
    assert "spot quota too low (0); starting on-demand" in r.output
    assert spot_calls(aws) == [] and len(aws.run_calls) == 1
    assert "export ORCH_PRICE_PER_HOUR=0.752" in user_data(aws.run_calls[0])


def test_the_iam_policy_lets_orch_create_only_the_spot_and_auto_scaling_service_roles():
    policy = json.loads((assets.root() / "infra" / "iam-policy.json").read_text())
    granting = [s for s in policy["Statement"] if "iam:CreateServiceLinkedRole" in json.dumps(s["Action"])]
    services = []
    for st in granting:
        assert st["Action"] == "iam:CreateServiceLinkedRole" and st["Effect"] == "Allow"
        service = st["Condition"]["StringLike"]["iam:AWSServiceName"]
        assert st["Condition"] == {"StringLike": {"iam:AWSServiceName": service}}
        assert st["Resource"] == f"arn:aws:iam::*:role/aws-service-role/{service}/*"
        services.append(service)
    assert sorted(services) == ["autoscaling.amazonaws.com", "spot.amazonaws.com"]


# --- the --max-dollars cap of an on-demand fallback -----------------------------------------------


def test_the_on_demand_fallback_caps_dollars_at_the_on_demand_price(aws, orch, job_calls, monkeypatch):
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")
    monkeypatch.setenv("ORCH_LIVE_PRICES", "1")  # moto has no Pricing API: its answers are faked here
    monkeypatch.setattr(pricing, "_live_spot", lambda *_: pricing.Price(0.25, "live: spot"))
    monkeypatch.setattr(pricing, "_live_on_demand", lambda *_: pricing.Price(0.75, "live: on-demand"))
    aws.no_spot_capacity = True
    r = launch(orch, "cap1", "--spot", "--on-demand-fallback", "--max-dollars", "3")
    assert r.exit_code == 0, r.output
    spots = spot_calls(aws)
    assert spots and all("export ORCH_PRICE_PER_HOUR=0.25\n" in user_data(c) for c in spots)
    on_demand = aws.run_calls[-1]
    assert "InstanceMarketOptions" not in on_demand
    text = user_data(on_demand)
    assert "export ORCH_PRICE_PER_HOUR=0.75\n" in text and "export ORCH_MAX_DOLLARS=3.0\n" in text


# --- a checkpoint bucket needs the instance's role -------------------------------------------------


def test_a_checkpoint_bucket_without_an_instance_profile_is_refused_before_anything_is_created(aws, orch):
    for extra in ((), ("--dry-run",)):
        r = launch(orch, "ck1", "--checkpoint-bucket", "s3://b/ckpt", *extra)
        assert r.exit_code == 2, r.output
        assert "--iam-instance-profile" in r.output and "Nothing was created" in r.output
    assert aws.run_calls == [] and tagged("ck1") == {"instances": [], "security_groups": [], "key_pairs": [],
                                                     "volumes": []}
    assert not (orch_home() / "state.json").exists()


def test_a_checkpoint_bucket_with_an_instance_profile_launches_and_tags_both(aws, orch, job_calls):
    profile = instance_profile()
    r = launch(orch, "ck2", "--checkpoint-bucket", "s3://b/ckpt", "--iam-instance-profile", profile)
    assert r.exit_code == 0, r.output
    (inst,) = tagged("ck2")["instances"]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["orch:checkpoint-bucket"] == "s3://b/ckpt" and tags["orch:iam-instance-profile"] == profile
    (orch_home() / "state.json").unlink()  # another laptop: the tags say what to launch with again
    recorded = recorded_launch("ck2", Settings(region=REGION))
    assert (recorded.checkpoint_bucket, recorded.iam_instance_profile) == ("s3://b/ckpt", profile)


# --- the root volume ------------------------------------------------------------------------------


def test_gp3_iops_follow_the_throughput(aws, orch, job_calls):
    assert launch(orch, "io1", "--volume-throughput", "1000").exit_code == 0
    ebs = aws.run_calls[-1]["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["Throughput"], ebs["Iops"]) == (1000, 4000)  # gp3: at least 4 IOPS per MiB/s
    assert launch(orch, "io2", "--volume-throughput", "500").exit_code == 0
    ebs = aws.run_calls[-1]["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["Throughput"], ebs["Iops"]) == (500, 3000)  # the free baseline


# --- ClientToken ----------------------------------------------------------------------------------


def test_client_tokens_of_a_long_job_name_never_repeat_across_launches(aws, orch, job_calls, monkeypatch):
    nonces = iter(range(1, 100))
    # Nonces alike in their first characters: what a cut to 64 characters would keep of them.
    monkeypatch.setattr(cloud_instances, "uuid", SimpleNamespace(
        uuid4=lambda: SimpleNamespace(hex=f"abcd{next(nonces):08x}{0:020x}")))
    job = "a-very-long-job-name-for-imagenet-rn50-x"  # 40 characters, the most a name may have
    aws.capacity_fail_zones = {"us-east-1a"}
    assert launch(orch, job).exit_code == 0
    assert orch("teardown", job, "--yes").exit_code == 0
    assert launch(orch, job).exit_code == 0
    tokens = [c["ClientToken"] for c in aws.run_calls]
    assert len(tokens) == 4 and len(set(tokens)) == 4, tokens
    assert all(len(t) <= 64 for t in tokens)


# --- the private key ------------------------------------------------------------------------------


def test_a_private_file_is_on_disk_before_it_replaces_anything(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), replace(a, b))[1])
    path = tmp_path / "keys" / "job.pem"
    write_private_file(path, "-----BEGIN OPENSSH PRIVATE KEY-----")
    assert events[:2] == ["fsync", "replace"]
    assert path.read_text() == "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


# --- what the instance does on its own -----------------------------------------------------------


def test_launch_says_autostop_takes_the_disks_when_nothing_keeps_the_outputs(aws, orch, job_calls, monkeypatch):
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")  # the watcher is in the user data
    r = launch(orch, "life1", "--data", "demo")
    assert r.exit_code == 0, r.output
    assert ("autostop terminates the instance 30 min after the job ends, and its disks with it: "
            "run `orch fetch-weights life1` before then, or launch with --checkpoint-bucket or --keep-volume"
            ) in r.output
    r = launch(orch, "life2", "--data", "demo", "--autostop-minutes", "20", "--max-hours", "5")
    assert "autostop terminates the instance 20 min after the job ends (and at the --max-hours" in r.output
    for extra in (("--keep-volume",), ("--autostop-minutes", "0")):
        r = launch(orch, f"life3{len(extra)}", "--data", "demo", *extra)
        assert r.exit_code == 0 and "autostop terminates" not in r.output, r.output


def test_a_failed_job_start_says_when_the_instance_stops_billing(aws, orch, job_calls, monkeypatch):
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")
    job_calls.fail_start = JobError("the dataset sync failed")
    r = launch(orch, "life4", "--data", "demo", "--autostop-minutes", "15")
    assert r.exit_code == 1 and "the dataset sync failed" in r.output
    said = re.sub(r"\s+", " ", r.output)
    assert ("it bills until `orch teardown life4`, or until it shuts itself down (and is terminated): "
            "30 min without an SSH connection while no job has started on it, 15 min after its job ends") in said
    assert "until autostop or teardown" not in said
    assert [idle_minutes(m) for m in (0, 1, 15, 30, 90)] == [0, 10, 30, 60, 120]

    monkeypatch.setenv("ORCH_BOOTSTRAP_SCRIPT", "none")  # no watcher on the machine, knowingly
    job_calls.fail_start = JobError("the dataset sync failed")
    r = launch(orch, "life5", "--data", "demo")
    assert r.exit_code == 1 and "(it bills until `orch teardown life5`):" in r.output


def test_a_hard_cap_too_near_its_end_to_train_says_how_to_train_on(aws, orch, job_calls, monkeypatch):
    job_calls.hard_cap = HardCap(seconds=3 * 3600, elapsed_s=3 * 3600 - 300)  # what the machine's watcher says
    r = launch(orch, "cap2", "--data", "demo", "--max-hours", "3")
    assert r.exit_code == 1
    said = re.sub(r"\s+", " ", r.output)
    assert ("Error: The instance's hard cap of 3 h (--max-hours/--max-dollars) has 5 min left, and the trainer needs "
            "10 min of it to save and stop: nothing was started. At the cap the instance shuts itself down") in said
    assert ("`orch fetch-weights cap2 --which all` while this one is up (not needed with --checkpoint-bucket or "
            "--keep-volume), `orch teardown cap2`, then `orch launch --name cap2 --resume --max-hours H`") in said
    assert "run the same `orch launch" not in said


# --- the demo data trains the demo recipe -------------------------------------------------------


def test_demo_data_without_trainer_arguments_trains_the_demo_recipe(aws, orch, job_calls):
    r = launch(orch, "demo1", "--data", "demo")
    assert r.exit_code == 0, r.output
    assert "training the demo recipe" in r.output
    ((_, spec),) = job_calls.started
    assert spec.trainer_args == ("--recipe", "demo")

    r = launch(orch, "demo2", "--data", "demo", "--", "--arch", "resnet18", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert "demo recipe" not in r.output
    assert job_calls.started[-1][1].trainer_args == ("--arch", "resnet18", "--epochs", "1")



def test_a_bootstrap_script_that_is_not_there_is_refused_before_anything_is_created(aws, orch, job_calls, monkeypatch):
    monkeypatch.setenv("ORCH_BOOTSTRAP_SCRIPT", "/nonexistent/bootstrap.sh")
    r = launch(orch, "nobs", "--data", "demo")
    said = re.sub(r"\s+", " ", r.output)
    assert r.exit_code == 1 and "bootstrap_script '/nonexistent/bootstrap.sh'" in said
    assert "no autostop watcher" in said and "Nothing was created." in said
    assert aws.run_calls == [] and not any(tagged("nobs").values())

    monkeypatch.setenv("ORCH_BOOTSTRAP_SCRIPT", "none")  # chosen knowingly: launched, and the plan says so
    r = launch(orch, "nobs", "--data", "demo", "--dry-run")
    assert r.exit_code == 0 and 'none (bootstrap_script = "none": no autostop watcher)' in r.output


@pytest.mark.parametrize("instance_type, gpus, expect", [
    ("p3.2xlarge", "NVIDIA V100 (Volta)", "g4dn.xlarge ($0.526/h on-demand"),
    ("p3.8xlarge", "NVIDIA V100 (Volta)", "g4dn.12xlarge ($3.912/h on-demand"),
    ("g3s.xlarge", "NVIDIA M60 (Maxwell)", "g5.xlarge ($1.006/h on-demand"),
])
def test_a_type_the_deep_learning_ami_cannot_drive_is_refused_with_priced_alternatives(
        aws, orch, job_calls, instance_type, gpus, expect):
    r = orch("launch", "--instance", instance_type, "--name", "old", "--ssh-cidr", CIDR, "--data", "demo", "--dry-run")
    said = re.sub(r"\s+", " ", r.output)
    assert r.exit_code == 1 and f"{instance_type} has {gpus} GPUs" in said, said
    assert "Nothing was created" in said and expect in said and "pass --ami" in said
    r = orch("launch", "--instance", instance_type, "--name", "old", "--ssh-cidr", CIDR, "--data", "demo")
    assert r.exit_code == 1 and aws.run_calls == [] and not any(tagged("old").values())
