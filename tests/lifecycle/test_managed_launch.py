"""`orch launch --managed` against moto: the plan, the refusals before anything is made, the group of one with the
job's spec and orch's package in the checkpoint bucket (the package's hash in the user data), nothing started from
the laptop, `orch status` telling the group's story, and a teardown that deletes the group, its template and the spec
but never the checkpoints. The instance's side (it starts the job from the bucket) is tests/lifecycle/
test_managed_e2e.py."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timezone

from pathlib import Path

import boto3
import pytest

from tests.fixtures.aws import REGION, read_state, tagged

CIDR = "203.0.113.7/32"
CKPT = "s3://orch-test-ckpt/runs"
MANAGED = ("--managed", "--spot", "--iam-instance-profile", "orch-trainer", "--checkpoint-bucket", CKPT,
           "--ssh-cidr", CIDR)


@pytest.fixture
def managed_aws(aws, monkeypatch):
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")  # the real infra/bootstrap.sh: each instance starts the job with it
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="orch-test-ckpt")
    return aws


def launch(orch, job, *extra, types="g4dn.xlarge,g5.xlarge"):
    return orch("launch", "--instance", types, "--name", job, *MANAGED, "--data", "demo", *extra)


def group(job: str) -> dict | None:
    found = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[f"orch-{job}"])["AutoScalingGroups"]
    return found[0] if found else None


def objects(prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="orch-test-ckpt", Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket="orch-test-ckpt", Key=k)["Body"].read() for k in keys}


def user_data_of(job: str) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    (template,) = ec2.describe_launch_templates(Filters=[{"Name": "tag:orch:job", "Values": [job]}])["LaunchTemplates"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    return base64.b64decode(data["UserData"]).decode()


def test_the_dry_run_shows_the_group_over_every_type_and_creates_nothing(managed_aws, orch):
    r = orch("launch", "--instance", "g4dn.xlarge,g5.xlarge", "--name", "plan", *MANAGED, "--data", "demo",
             "--dry-run")
    assert r.exit_code == 0, r.output
    assert "managed           Auto Scaling group orch-plan of one over g4dn.xlarge, g5.xlarge" in r.output
    assert "Dry run: nothing was created." in r.output
    assert group("plan") is None and objects("runs/") == {}
    plan = json.loads(orch("launch", "--instance", "g4dn.xlarge,g5.xlarge", "--name", "plan", *MANAGED, "--data",
                           "demo", "--dry-run", "--json").stdout)["plan"]
    assert plan["managed"] == ["g4dn.xlarge", "g5.xlarge"] and plan["user_data_bytes"] < 16384


@pytest.mark.parametrize("args, says", [
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--managed", "--iam-instance-profile", "p"),
     "--managed needs --checkpoint-bucket"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "/tmp", *MANAGED), "reads its data from S3"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--nodes", "2", *MANAGED), "--nodes"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--env", "A=1", *MANAGED), "--env"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--on-demand-fallback", *MANAGED),
     "does not fall back by itself"),
    (("--instance", "g4dn.xlarge,g5.xlarge", "--name", "x", "--data", "demo"), "several types are for --managed"),
    (("--instance", "g4dn.xlarge,,g5.xlarge", "--name", "x", "--data", "demo", *MANAGED), "distinct types"),
    (("--instance", "g4dn.xlarge", "--name", "x", *MANAGED), "keeps a training job running"),
])
def test_what_a_replacement_could_not_set_up_from_the_bucket_is_refused_before_anything_is_made(
        managed_aws, orch, args, says):
    r = orch("launch", *args)
    assert r.exit_code == 2, r.output
    assert says in r.output
    assert group("x") is None and tagged("x")["instances"] == [] and tagged("x")["key_pairs"] == []


def test_a_managed_launch_leaves_the_job_to_its_group_and_teardown_removes_all_but_the_checkpoints(
        managed_aws, orch, job_calls):
    r = launch(orch, "m", "--", "--epochs", "2")
    assert r.exit_code == 0, r.output
    assert "AWS keeps one instance of m running (g4dn.xlarge, g5.xlarge, spot)" in r.output
    assert job_calls.started == []  # the laptop starts nothing: the instance does, from the bucket

    raw = group("m")
    assert raw["DesiredCapacity"] == 1 and len(raw["Instances"]) == 1
    assert {t["Key"]: t["Value"] for t in raw["Tags"]}["orch:spec"] == f"{CKPT}/orch-jobs/m"
    (instance,) = tagged("m")["instances"]
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["orch:managed"] == "orch-m"
    assert read_state(Path(os.environ["ORCH_HOME"]).parent)["jobs"]["m"]["instance_id"] == instance["InstanceId"]

    kept = objects("runs/orch-jobs/m/")
    spec = json.loads(kept["runs/orch-jobs/m/spec.json"])
    assert (spec["job"], spec["data"], spec["checkpoint_bucket"]) == ("m", "demo", CKPT)
    assert spec["trainer_args"] == ["--epochs", "2"]
    (package_key,) = [k for k in kept if k.endswith(".tar.gz")]
    user_data = user_data_of("m")
    digest = hashlib.sha256(kept[package_key]).hexdigest()
    assert f"export ORCH_PACKAGE_SHA256={digest}\n" in user_data
    assert f"export ORCH_PACKAGE_URI=s3://orch-test-ckpt/{package_key}\n" in user_data
    assert f"export ORCH_SPEC_URI={CKPT}/orch-jobs/m/spec.json\n" in user_data
    assert "export ORCH_MANAGED_GROUP=orch-m\n" in user_data and "export ORCH_CAP_FROM=" in user_data

    again = launch(orch, "m", "--", "--epochs", "2")  # attaches: no second group, template or instance
    assert again.exit_code == 0, again.output
    assert "orch-m: 1 instance(s) wanted, 1 up" in again.output and len(tagged("m")["instances"]) == 1

    boto3.client("s3", region_name=REGION).put_object(Bucket="orch-test-ckpt", Key="runs/m/last.pt", Body=b"w")
    down = orch("teardown", "m", "--yes")
    assert down.exit_code == 0, down.output
    assert f"{CKPT}/orch-jobs/m/spec.json (the job's spec and orch, not its checkpoints)" in down.output
    assert "auto scaling group orch-m" in down.output and "Nothing tagged orch:job=m remains." in down.output
    assert group("m") is None and objects("runs/orch-jobs/") == {} and objects("runs/m/") == {"runs/m/last.pt": b"w"}
    held = tagged("m")
    assert held["instances"] == [] and held["security_groups"] == [] and held["key_pairs"] == []
    assert boto3.client("ec2", region_name=REGION).describe_launch_templates(
        Filters=[{"Name": "tag:orch:job", "Values": ["m"]}])["LaunchTemplates"] == []


def test_checkpoints_of_an_earlier_job_of_that_name_need_resume_to_be_continued(managed_aws, orch, job_calls):
    boto3.client("s3", region_name=REGION).put_object(Bucket="orch-test-ckpt", Key="runs/old/last.pt", Body=b"w")
    r = launch(orch, "old")
    assert r.exit_code == 2 and "an earlier job old left checkpoints" in r.output, r.output
    assert group("old") is None and tagged("old")["key_pairs"] == []
    r = launch(orch, "old", "--resume")
    assert r.exit_code == 0, r.output
    assert group("old")["DesiredCapacity"] == 1


def test_status_tells_the_groups_story_replacements_and_a_job_that_ended_on_purpose(managed_aws, orch, job_calls):
    assert launch(orch, "s").exit_code == 0
    at = datetime(2026, 12, 6, 9, 30, tzinfo=timezone.utc)
    managed_aws.scaling_activities[:] = [  # as AWS words them (moto keeps no history)
        {"ActivityId": "1", "AutoScalingGroupName": "orch-s", "StatusCode": "Successful", "StartTime": at,
         "Description": "Launching a new EC2 instance: i-0aaa", "Cause": "At 2026-12-06T09:30:00Z a user request "
         "created an AutoScalingGroup changing the desired capacity from 0 to 1."},
        {"ActivityId": "2", "AutoScalingGroupName": "orch-s", "StatusCode": "Successful",
         "StartTime": at.replace(hour=11), "Description": "Terminating EC2 instance: i-0aaa",
         "Cause": "At 2026-12-06T11:00:00Z an instance was taken out of service in response to an EC2 instance "
                  "rebalance recommendation."},
        {"ActivityId": "3", "AutoScalingGroupName": "orch-s", "StatusCode": "Successful",
         "StartTime": at.replace(hour=11, minute=1), "Description": "Launching a new EC2 instance: i-0bbb",
         "Cause": "At 2026-12-06T11:01:00Z an instance was started in response to a difference between desired "
                  "and actual capacity, increasing the capacity from 0 to 1."}]
    r = orch("status", "s", "--json")
    view = json.loads(r.stdout)
    assert view["state"] == "running", r.output
    assert "managed by Auto Scaling group orch-s" in view["note"] and "1 replacement(s) so far" in view["note"]
    assert "rebalance recommendation" in view["note"]

    ec2 = boto3.client("ec2", region_name=REGION)
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(AutoScalingGroupName="orch-s",
                                                                         DesiredCapacity=0)  # as the watcher does
    if left := [i["InstanceId"] for i in tagged("s")["instances"]]:  # moto ends it at once; AWS a moment later
        ec2.terminate_instances(InstanceIds=left)
    r = orch("status", "s")
    assert "ended" in r.output and "The job ended on purpose" in r.output, r.output
    assert group("s")["Instances"] == []  # not replaced


def test_with_no_instance_up_fetch_weights_takes_the_checkpoints_from_the_bucket_each_checked(
        managed_aws, orch, job_calls, tmp_path):
    assert launch(orch, "w").exit_code == 0
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(AutoScalingGroupName="orch-w",
                                                                         DesiredCapacity=0)  # ended: none up
    s3 = boto3.client("s3", region_name=REGION)
    weights = b"weights" * 1000
    for key, body in (("last.pt", weights), ("last.pt.sha256", f"{hashlib.sha256(weights).hexdigest()}  last.pt\n"),
                      ("metrics.jsonl", '{"epoch": 1}\n')):
        s3.put_object(Bucket="orch-test-ckpt", Key=f"runs/w/{key}", Body=body)
    r = orch("fetch-weights", "w", "--which", "last", "--dest", str(tmp_path / "got"))
    assert r.exit_code == 0, r.output
    assert f"No instance of w is up: from its checkpoint bucket, {CKPT}/w/" in r.output
    assert (tmp_path / "got" / "checkpoints" / "last.pt").read_bytes() == weights and "(sha256 ok)" in r.output
    assert (tmp_path / "got" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'

    s3.put_object(Bucket="orch-test-ckpt", Key="runs/w/last.pt", Body=b"a newer one, mid-copy")
    s3.put_object(Bucket="orch-test-ckpt", Key="runs/w/last.pt.sha256", Body=f"{'0' * 64}  last.pt\n")
    r = orch("fetch-weights", "w", "--which", "last", "--dest", str(tmp_path / "got"))
    assert r.exit_code != 0 and "does not match its .sha256" in r.output, r.output
    assert (tmp_path / "got" / "checkpoints" / "last.pt").read_bytes() == weights  # the good copy here is kept
    assert list((tmp_path / "got" / "checkpoints").glob("*.fetched")) == []

    # Lost between the watcher's two copies: the .sha256 is the last one's; the digest on the object is its own.
    newer = b"epoch 2" * 1000
    s3.put_object(Bucket="orch-test-ckpt", Key="runs/w/last.pt", Body=newer,
                  Metadata={"sha256": hashlib.sha256(newer).hexdigest()})
    s3.put_object(Bucket="orch-test-ckpt", Key="runs/w/last.pt.sha256",
                  Body=f"{hashlib.sha256(weights).hexdigest()}  last.pt\n")
    r = orch("fetch-weights", "w", "--which", "last", "--dest", str(tmp_path / "got"))
    assert r.exit_code == 0 and "(sha256 ok)" in r.output, r.output
    assert (tmp_path / "got" / "checkpoints" / "last.pt").read_bytes() == newer
    assert (tmp_path / "got" / "checkpoints" / "last.pt.sha256").read_text().split()[0] == hashlib.sha256(newer).hexdigest()


def test_a_launch_without_managed_over_a_managed_job_starts_nothing_there(managed_aws, orch, job_calls):
    assert launch(orch, "g").exit_code == 0
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "g", "--ssh-cidr", CIDR, "--data", "demo")
    assert r.exit_code != 0 and "Job g is managed" in r.output, r.output
    assert job_calls.started == [] and len(tagged("g")["instances"]) == 1


def test_a_managed_job_in_a_subnet_without_public_addresses_asks_one_for_each_instance(managed_aws, orch):
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    r = launch(orch, "mp", "--subnet-id", subnet)
    assert r.exit_code == 0, r.output
    (template,) = ec2.describe_launch_templates(Filters=[{"Name": "tag:orch:job", "Values": ["mp"]}])["LaunchTemplates"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    (nic,) = data["NetworkInterfaces"]
    (sg,) = tagged("mp")["security_groups"]
    assert nic["AssociatePublicIpAddress"] is True and nic["Groups"] == [sg["GroupId"]] and "SubnetId" not in nic
    assert "SecurityGroupIds" not in data and group("mp")["VPCZoneIdentifier"] == subnet


def test_the_instances_run_the_job_as_the_amis_own_user(managed_aws, orch):
    r = launch(orch, "mu", "--ssh-user", "ec2-user")
    assert r.exit_code == 0, r.output
    assert "export ORCH_USER=ec2-user\n" in user_data_of("mu")  # bootstrap.sh's default is ubuntu


def test_teardown_deletes_the_spec_of_a_job_whose_group_was_deleted_by_hand(managed_aws, orch):
    assert launch(orch, "gone").exit_code == 0
    boto3.client("autoscaling", region_name=REGION).delete_auto_scaling_group(AutoScalingGroupName="orch-gone",
                                                                              ForceDelete=True)
    assert objects("runs/orch-jobs/gone/")
    r = orch("teardown", "gone", "--yes")
    assert r.exit_code == 0, r.output
    assert objects("runs/orch-jobs/gone/") == {} and "Nothing tagged orch:job=gone remains." in r.output


def test_teardown_waits_until_aws_has_deleted_the_group_so_a_new_launch_can_take_its_name(managed_aws, orch):
    assert launch(orch, "slow").exit_code == 0
    managed_aws.slow_group_deletes = 3  # AWS deletes a group in the background
    r = orch("teardown", "slow", "--yes")
    assert r.exit_code == 0, r.output
    assert managed_aws.slow_group_deletes == 0 and "Nothing tagged orch:job=slow remains." in r.output
    # A launch straight after a teardown that did not wait (cut short): the name is AWS's until it is done.
    managed_aws.slow_group_deletes = 2
    managed_aws.deleting = [{"AutoScalingGroupName": "orch-slow", "Status": "Delete in progress", "DesiredCapacity": 0,
                             "Instances": [], "Tags": [{"Key": "orch:job", "Value": "slow"}]}]
    again = launch(orch, "slow")
    assert again.exit_code == 0, again.output
    assert managed_aws.slow_group_deletes == 0 and group("slow")["DesiredCapacity"] == 1


def test_with_its_instance_gone_a_managed_jobs_machine_waits_for_the_next_never_dials_the_old_address(
        managed_aws, orch):
    from orchestrator.lifecycle import machines
    from orchestrator.remote.base import SSHUnreachable

    assert launch(orch, "gap").exit_code == 0
    machine = machines.machine_for("gap")
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(AutoScalingGroupName="orch-gap",
                                                                         DesiredCapacity=0)
    assert [i["State"]["Name"] for i in tagged("gap")["instances"]] in ([], ["terminated"], ["shutting-down"])
    with pytest.raises(SSHUnreachable, match="No running instance for job 'gap'.*AWS starts its group's replacement"):
        machine.open(1)  # `orch logs --follow` retries it until the replacement is up


def role_with(profile: str, actions: list[str] | None) -> None:
    """Instance profile `profile` with a role of that name, whose orch policy (`orch init`'s) allows `actions`."""
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    if actions is not None:
        iam.put_role_policy(RoleName=profile, PolicyName="orch-trainer", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))


def test_a_role_that_could_not_stop_its_group_is_refused_before_anything_is_made(managed_aws, orch):
    role_with("orch-trainer", ["s3:GetObject"])  # orch init's policy from before --managed
    r = launch(orch, "old")
    assert r.exit_code != 0 and "may not autoscaling:SetDesiredCapacity" in r.output and "orch init" in r.output
    assert group("old") is None and tagged("old")["security_groups"] == [] and objects("runs/") == {}


@pytest.mark.parametrize("actions,warned", [(["s3:GetObject", "autoscaling:SetDesiredCapacity"], False),
                                            (["autoscaling:*"], False), (None, True)],
                         ids=["orch-policy", "wildcard", "a-role-of-ones-own"])
def test_a_role_that_can_stop_its_group_launches_and_one_orch_cannot_read_is_a_warning(
        managed_aws, orch, actions, warned):
    role_with("orch-trainer", actions)
    r = launch(orch, "ok")
    assert r.exit_code == 0, r.output
    assert ("warning: could not read what the role of orch-trainer may do" in r.output) is warned
