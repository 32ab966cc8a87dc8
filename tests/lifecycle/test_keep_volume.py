"""`orch launch --keep-volume`: the root EBS volume outlives the instance and holds the job's outputs.

Against moto through the CLI (the job on the machine is recorded, not run: `job_calls`), plus the
outputs path on a machine, with `LocalSession` standing for it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import boto3

from orchestrator.machines.instance import job_dirs
from orchestrator.records import JobSpec, Restore
from orchestrator.errors import JobError
from orchestrator.remote.local import LocalSession
from tests.fixtures.aws import REGION, tagged

CIDR = "203.0.113.7/32"


def launch(orch, job, *extra):
    return orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--ssh-cidr", CIDR, *extra)


def tags_of(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def reclaim(edge, job: str) -> str:
    """AWS takes the spot instance back (moto terminates it; the edge reports AWS's reason)."""
    (inst,) = tagged(job)["instances"]
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[inst["InstanceId"]])
    edge.spot_reclaimed = True
    return inst["InstanceId"]


def test_keep_volume_outlives_a_reclaim_and_teardown_deletes_it(aws, orch, job_calls):
    r = launch(orch, "kv1", "--spot", "--keep-volume", "--data", "demo")
    assert r.exit_code == 0, r.output
    run = aws.run_calls[-1]
    assert run["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is False
    volume_spec = next(t for t in run["TagSpecifications"] if t["ResourceType"] == "volume")
    assert tags_of(volume_spec) == {"orch:job": "kv1", "orch:created-by": "orch", "Name": "orch-kv1",
                                    "orch:keep-volume": "on"}
    (volume,) = tagged("kv1")["volumes"]
    assert tags_of(volume)["orch:keep-volume"] == "on"
    assert tags_of(tagged("kv1")["instances"][0])["orch:keep-volume"] == "on"  # outlives the state file
    (_, spec), = job_calls.started
    assert spec.outputs_root == "~/orch"  # the outputs go on the root volume
    assert json.loads((Path(os.environ["ORCH_HOME"]) / "state.json").read_text())["jobs"]["kv1"]["launch"][
        "keep_volume"] is True

    reclaim(aws, "kv1")
    (left,) = tagged("kv1")["volumes"]
    assert left["VolumeId"] == volume["VolumeId"] and left["State"] == "available"
    r = orch("status", "kv1", "--no-container")
    assert r.exit_code == 0 and "kv1: interrupted" in r.output
    assert f"kept volume {volume['VolumeId']}" in r.output and "~/orch/kv1/outputs" in r.output

    r = orch("teardown", "kv1", "--yes")
    assert r.exit_code == 0, r.output
    assert f"volume {volume['VolumeId']}" in r.output and "Nothing tagged orch:job=kv1 remains." in r.output
    assert tagged("kv1")["volumes"] == []


def test_teardown_keep_volume_keeps_a_volume_left_by_a_reclaim(aws, orch, job_calls):
    assert launch(orch, "kv2", "--spot", "--keep-volume").exit_code == 0
    (volume,) = tagged("kv2")["volumes"]
    reclaim(aws, "kv2")
    r = orch("teardown", "kv2", "--yes", "--keep-volume")
    assert r.exit_code == 0, r.output
    assert f"Kept volume(s): {volume['VolumeId']}" in r.output
    assert "Nothing else tagged orch:job=kv2 remains." in r.output and "Nothing tagged" not in r.output
    left = tagged("kv2")
    assert [v["VolumeId"] for v in left["volumes"]] == [volume["VolumeId"]]
    assert left["instances"] == [] and left["security_groups"] == [] and left["key_pairs"] == []


def test_without_keep_volume_the_root_volume_goes_with_the_instance(aws, orch, job_calls):
    assert launch(orch, "kv3", "--spot").exit_code == 0
    assert aws.run_calls[-1]["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is True
    reclaim(aws, "kv3")
    assert tagged("kv3")["volumes"] == []
    r = orch("status", "kv3", "--no-container")
    assert "kv3: interrupted" in r.output and "kept volume" not in r.output


def test_resume_launches_again_with_the_recorded_keep_volume(aws, orch, job_calls, tmp_path):
    assert launch(orch, "kv4", "--spot", "--keep-volume", "--data", "demo").exit_code == 0
    reclaim(aws, "kv4")
    copy = tmp_path / "weights"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    r = orch("launch", "--name", "kv4", "--resume", "--resume-from", copy, "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    assert aws.run_calls[-1]["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is False
    assert job_calls.started[-1][1].outputs_root == "~/orch"


def test_dry_run_says_the_volume_is_kept(aws, orch):
    r = launch(orch, "kv5", "--keep-volume", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "kept after the instance (tag orch:keep-volume=on)" in r.output
    assert "deleted with the instance" in launch(orch, "kv5", "--dry-run").output


def test_keep_volume_is_refused_for_the_local_target(orch):
    r = orch("launch", "--target", "local", "--keep-volume", "--data", "demo")
    assert r.exit_code == 2 and "--keep-volume is for --target aws" in r.output


def test_outputs_go_under_the_outputs_root_and_data_stays_on_the_fast_disk(tmp_path):
    session = LocalSession()
    home = os.environ["HOME"]  # a temp dir (tests/conftest.py)
    fast = str(tmp_path / "nvme")
    spec = JobSpec(job="kv6", data="demo", remote_root=fast, outputs_root="~/orch")
    assert job_dirs(session, spec) == (f"{fast}/kv6/data", f"{home}/orch/kv6/outputs")
    assert job_dirs(session, JobSpec(job="kv6", data="demo", remote_root=fast)) == (
        f"{fast}/kv6/data", f"{fast}/kv6/outputs")


# --- --resume from a kept volume ------------------------------------------------------------------


def test_resume_from_a_kept_volume_starts_in_its_zone_and_attaches_it(aws, orch, job_calls, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./weights/JOB copy: the kept volume is the only source
    assert launch(orch, "kv7", "--spot", "--keep-volume", "--zone", "us-east-1c", "--data", "demo").exit_code == 0
    (volume,) = tagged("kv7")["volumes"]
    reclaim(aws, "kv7")

    ec2 = boto3.client("ec2", region_name=REGION)
    seen = []

    def attached(spec):  # the volume must be attached while the job restores from it
        (raw,) = ec2.describe_volumes(VolumeIds=[volume["VolumeId"]])["Volumes"]
        seen.append([(a["InstanceId"], a["State"]) for a in raw["Attachments"]])

    job_calls.on_start = attached
    r = orch("launch", "--name", "kv7", "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    assert f"the checkpoint comes from the kept volume {volume['VolumeId']} (us-east-1c)" in r.output
    assert aws.run_calls[-1]["Placement"]["AvailabilityZone"] == "us-east-1c"
    (new,) = tagged("kv7")["instances"]
    assert seen == [[(new["InstanceId"], "attached")]]
    assert job_calls.started[-1][1].restore == Restore(volume_id=volume["VolumeId"])
    volumes = {v["VolumeId"]: v for v in tagged("kv7")["volumes"]}
    assert volumes[volume["VolumeId"]]["State"] == "available"  # detached again, still kept
    assert len(volumes) == 2  # and the new instance's own root volume, kept too

    r = orch("teardown", "kv7", "--yes")
    assert r.exit_code == 0, r.output
    assert tagged("kv7")["volumes"] == []


def test_resume_from_a_kept_volume_in_another_zone_than_asked_creates_nothing(aws, orch, job_calls, monkeypatch,
                                                                               tmp_path):
    monkeypatch.chdir(tmp_path)
    assert launch(orch, "kv8", "--spot", "--keep-volume", "--zone", "us-east-1c", "--data", "demo").exit_code == 0
    reclaim(aws, "kv8")
    calls = len(aws.run_calls)
    r = orch("launch", "--name", "kv8", "--resume", "--zone", "us-east-1a", "--ssh-cidr", CIDR)
    assert r.exit_code == 1 and "is in us-east-1c" in r.output and "nothing was created" in r.output, r.output
    assert "Traceback" not in r.output and len(aws.run_calls) == calls


def test_a_resume_cut_before_the_restore_attaches_the_volume_again(aws, orch, job_calls, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert launch(orch, "kv9", "--spot", "--keep-volume", "--data", "demo").exit_code == 0
    (volume,) = tagged("kv9")["volumes"]
    reclaim(aws, "kv9")
    job_calls.fail_start = JobError("the trainer image did not build")
    r = orch("launch", "--name", "kv9", "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 1 and "did not build" in r.output and "Traceback" not in r.output
    (raw,) = boto3.client("ec2", region_name=REGION).describe_volumes(VolumeIds=[volume["VolumeId"]])["Volumes"]
    assert raw["State"] == "available"  # detached even though the start failed

    (instance,) = tagged("kv9")["instances"]
    r = orch("launch", "--name", "kv9", "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    assert f"resuming {instance['InstanceId']}" in r.output  # the same instance, not a second one
    assert job_calls.started[-1][1].restore.volume_id == volume["VolumeId"]  # its restore is tried again


def test_resume_waits_for_a_reclaimed_root_volume_still_detaching(aws, orch, job_calls, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no bucket, no local copy: the kept volume is the only source
    assert launch(orch, "kv10", "--spot", "--keep-volume", "--data", "demo").exit_code == 0
    (volume,) = tagged("kv10")["volumes"]
    reclaim(aws, "kv10")
    aws.detaching[volume["VolumeId"]] = 3  # AWS still shows it in-use, detaching from the gone instance
    r = orch("launch", "--name", "kv10", "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    assert f"the checkpoint comes from the kept volume {volume['VolumeId']}" in r.output
    assert aws.detaching[volume["VolumeId"]] == 0
    assert job_calls.started[-1][1].restore.volume_id == volume["VolumeId"]


# --- teardown --keep-volume -----------------------------------------------------------------------


def test_teardown_keep_volume_stops_when_aws_will_not_keep_the_volume(aws, orch, job_calls):
    assert launch(orch, "kv11").exit_code == 0
    (inst,) = tagged("kv11")["instances"]
    aws.fail_keep_volume = True
    r = orch("teardown", "kv11", "--yes", "--keep-volume")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "Could not keep the root volume" in r.output and "Nothing was terminated" in r.output
    assert "orch teardown kv11 --keep-volume" in r.output
    assert [i["InstanceId"] for i in tagged("kv11")["instances"]] == [inst["InstanceId"]]  # nothing destroyed
    assert job_calls.stopped == []  # the job was not even stopped
    assert len(tagged("kv11")["volumes"]) == 1


def test_teardown_keep_volume_of_a_job_launched_with_it_needs_no_change(aws, orch, job_calls):
    assert launch(orch, "kv12", "--keep-volume").exit_code == 0
    aws.fail_keep_volume = True  # its root volume already outlives the instance: nothing to ask of AWS
    r = orch("teardown", "kv12", "--yes", "--keep-volume")
    assert r.exit_code == 0, r.output
    assert "holds no job outputs" not in r.output
    (volume,) = tagged("kv12")["volumes"]
    assert f"Kept volume(s): {volume['VolumeId']}" in r.output


def test_a_volume_kept_at_teardown_of_a_job_without_keep_volume_is_not_called_its_outputs(
        aws, orch, job_calls, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert launch(orch, "kv13", "--data", "demo").exit_code == 0
    r = orch("teardown", "kv13", "--yes", "--keep-volume")
    assert r.exit_code == 0, r.output
    (volume,) = tagged("kv13")["volumes"]
    assert f"Kept volume(s): {volume['VolumeId']}" in r.output
    assert "holds no job outputs" in r.output and "not launched with --keep-volume" in r.output
    r = orch("status", "kv13", "--no-container")
    assert r.exit_code == 0, r.output
    assert "Its outputs are on the kept volume" not in r.output
    assert f"{volume['VolumeId']} was kept at teardown and holds no job outputs" in r.output
    # Nor is it a checkpoint source for --resume: refused before anything is created.
    calls = len(aws.run_calls)
    r = orch("launch", "--name", "kv13", "--resume", "--data", "demo", "--ssh-cidr", CIDR)
    assert r.exit_code == 2 and "nothing to resume from" in r.output, r.output
    assert len(aws.run_calls) == calls
