"""launch -> status -> list -> teardown through the CLI, against moto; what moto holds afterwards."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import boto3
import pytest

from tests.fixtures.fake_machine import running
from tests.fixtures.aws import REGION, Killed, tagged

CIDR = "203.0.113.7/32"


def home() -> Path:
    return Path(os.environ["ORCH_HOME"])


def state() -> dict:
    return json.loads((home() / "state.json").read_text())


def launch(orch, job, *extra):
    return orch("launch", "--instance", "g4dn.2xlarge", "--name", job, "--ssh-cidr", CIDR, *extra)


def test_launch_status_list_teardown_leaves_nothing(aws, orch, job_calls):
    r = launch(orch, "t1", "--volume-gb", "100")
    assert r.exit_code == 0, r.output
    assert "✓ run instance" in r.output and "s)" in r.output  # each phase with its duration

    held = tagged("t1")
    assert len(held["instances"]) == 1
    inst = held["instances"][0]
    assert inst["InstanceType"] == "g4dn.2xlarge"
    assert inst["ImageId"] == aws.image_id  # the Deep Learning AMI, via SSM
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags == {"orch:job": "t1", "orch:created-by": "orch", "Name": "orch-t1"}
    run = aws.run_calls[-1]
    assert run["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert run["BlockDeviceMappings"][0]["Ebs"] == {
        "VolumeSize": 100, "VolumeType": "gp3", "Iops": 3000, "Throughput": 250, "DeleteOnTermination": True}
    assert "UserData" not in run  # no infra/bootstrap.sh in this test

    (sg,) = held["security_groups"]
    assert sg["GroupName"] == "orch-t1"
    ingress = [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in sg["IpPermissions"]]
    assert ingress == [(22, [CIDR])]  # SSH from the caller's /32 only
    (kp,) = held["key_pairs"]
    assert kp["KeyName"] == "orch-t1"

    key = home() / "keys" / "t1.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text()
    assert stat.S_IMODE((home() / "state.json").stat().st_mode) == 0o600
    rec = state()["jobs"]["t1"]
    assert state()["schema"] == 1
    assert rec["instance_id"] == inst["InstanceId"] and rec["status"] == "running"
    assert rec["security_group_id"] == sg["GroupId"] and rec["region"] == REGION
    assert not job_calls.started  # no --data: provision only

    job_calls.found["t1"] = running("t1")  # a trainer started there by hand
    r = orch("status", "t1", "--json")
    assert r.exit_code == 0, r.output
    view = json.loads(r.output)
    assert view["state"] == "running" and view["instance"]["instance_id"] == inst["InstanceId"]
    assert view["container"]["last_metrics"]["epoch"] == 1
    r = orch("status", "t1")
    assert r.exit_code == 0, r.output
    assert "  latest    epoch 1 | val top-1 0.10%\n" in r.output

    r = orch("list", "--json")
    assert r.exit_code == 0, r.output
    assert [(v["job"], v["state"]) for v in json.loads(r.output)] == [("t1", "running")]

    host = inst.get("PublicIpAddress") or inst["PrivateIpAddress"]
    (home() / "known_hosts").write_text(f"{host} ssh-ed25519 AAAAkey\n[{host}]:2222 ssh-ed25519 AAAAkey\n"
                                       f"{inst['InstanceId']} ssh-ed25519 AAAAkey\n"  # pinned by instance id
                                       "198.51.100.1 ssh-ed25519 AAAAother\n")
    r = orch("teardown", "t1", "--yes")
    assert r.exit_code == 0, r.output
    assert "Nothing tagged orch:job=t1 remains." in r.output
    # the pinned host key goes with the instance (AWS reuses addresses); others stay
    assert (home() / "known_hosts").read_text() == "198.51.100.1 ssh-ed25519 AAAAother\n"
    assert inst["InstanceId"] in r.output and sg["GroupId"] in r.output and "orch-t1" in r.output
    left = tagged("t1")
    assert left["instances"] == [] and left["security_groups"] == [] and left["key_pairs"] == []
    assert left["volumes"] == []
    assert job_calls.stopped and job_calls.stopped[0][1] == "t1"  # container stopped first
    assert not key.exists()
    assert "t1" not in state()["jobs"]


def test_launch_twice_resumes_instead_of_duplicating(aws, orch, job_calls):
    assert launch(orch, "t2").exit_code == 0
    first = tagged("t2")["instances"][0]["InstanceId"]
    r = launch(orch, "t2")
    assert r.exit_code == 0, r.output
    assert f"resuming {first}" in r.output
    held = tagged("t2")
    assert [i["InstanceId"] for i in held["instances"]] == [first]
    assert len(held["security_groups"]) == 1 and len(held["key_pairs"]) == 1
    assert len(aws.run_calls) == 1


def test_launch_again_from_another_address_moves_ssh_access(aws, orch, job_calls):
    assert launch(orch, "t2b").exit_code == 0
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "t2b", "--ssh-cidr", "198.51.100.9/32")
    assert r.exit_code == 0, r.output
    (sg,) = tagged("t2b")["security_groups"]
    assert [r["CidrIp"] for p in sg["IpPermissions"] for r in p["IpRanges"]] == ["198.51.100.9/32"]


def test_launch_killed_after_run_instances_then_teardown_finds_everything(aws, orch, job_calls):
    aws.fail_after_run_instances = True
    with pytest.raises(Killed):
        launch(orch, "t3")
    held = tagged("t3")
    assert len(held["instances"]) == 1  # it exists in the cloud, tagged, though orch never saw its id
    assert state()["jobs"]["t3"]["instance_id"] is None

    r = orch("teardown", "t3", "--yes")
    assert r.exit_code == 0, r.output
    left = tagged("t3")
    assert left["instances"] == [] and left["security_groups"] == [] and left["key_pairs"] == []


def test_launch_killed_then_launch_again_resumes(aws, orch, job_calls):
    aws.fail_after_run_instances = True
    with pytest.raises(Killed):
        launch(orch, "t3b")
    aws.fail_after_run_instances = False
    r = launch(orch, "t3b")
    assert r.exit_code == 0, r.output
    assert len(tagged("t3b")["instances"]) == 1 and len(aws.run_calls) == 1
    assert state()["jobs"]["t3b"]["status"] == "running"


def test_teardown_with_no_state_file_finds_resources_by_tag(aws, orch, job_calls):
    assert launch(orch, "t4").exit_code == 0
    (home() / "state.json").unlink()
    r = orch("list", "--json")  # rebuilds the registry from tags
    assert [v["job"] for v in json.loads(r.output)] == ["t4"]
    assert orch("teardown", "t4", "--yes").exit_code == 0
    left = tagged("t4")
    assert left["instances"] == [] and left["security_groups"] == [] and left["key_pairs"] == []


def test_capacity_error_in_one_zone_then_success_in_the_next(aws, orch, job_calls):
    aws.capacity_fail_zones = {"us-east-1a"}
    r = launch(orch, "t5")
    assert r.exit_code == 0, r.output
    assert "no on-demand capacity for g4dn.2xlarge in us-east-1a" in r.output
    zones = [c["Placement"]["AvailabilityZone"] for c in aws.run_calls]
    assert zones == ["us-east-1a", "us-east-1b"]
    (inst,) = tagged("t5")["instances"]
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1b"


def test_no_capacity_anywhere_is_a_clear_error_and_leaves_a_teardownable_job(aws, orch, job_calls):
    ec2 = boto3.client("ec2", region_name=REGION)
    aws.capacity_fail_zones = {z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}
    r = launch(orch, "t6")
    assert r.exit_code == 1
    assert "No capacity for g4dn.2xlarge in us-east-1" in r.output and "Traceback" not in r.output
    assert tagged("t6")["instances"] == []
    assert orch("teardown", "t6", "--yes").exit_code == 0
    left = tagged("t6")
    assert left["security_groups"] == [] and left["key_pairs"] == []


def test_spot_without_capacity_falls_back_to_on_demand(aws, orch, job_calls):
    aws.no_spot_capacity = True
    r = launch(orch, "t7", "--spot", "--on-demand-fallback")
    assert r.exit_code == 0, r.output
    assert "no spot capacity for g4dn.2xlarge in us-east-1a" in r.output
    assert "falling back to on-demand" in r.output
    spot_calls = [c for c in aws.run_calls if "InstanceMarketOptions" in c]
    assert len(spot_calls) == 5 and "InstanceMarketOptions" not in aws.run_calls[-1]  # every zone, then on-demand
    (inst,) = tagged("t7")["instances"]
    assert inst.get("InstanceLifecycle") != "spot"


def test_spot_without_capacity_and_no_fallback_fails_clearly(aws, orch, job_calls):
    aws.no_spot_capacity = True
    r = launch(orch, "t7b", "--spot")  # on-demand fallback is opt-in
    assert r.exit_code == 1
    assert "No capacity for g4dn.2xlarge" in r.output and "Try --on-demand" in r.output
    assert tagged("t7b")["instances"] == []


def test_spot_launch_is_tagged_spot(aws, orch, job_calls):
    r = launch(orch, "t7c", "--spot")
    assert r.exit_code == 0, r.output
    (inst,) = tagged("t7c")["instances"]
    assert aws.run_calls[0]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert json.loads(orch("status", "t7c", "--json", "--no-container").output)["instance"]["spot"] is (
        inst.get("InstanceLifecycle") == "spot")


def test_quota_of_zero_gives_the_actionable_message_and_creates_nothing(aws, orch, job_calls):
    aws.quotas["L-DB2E81BA"] = 0.0
    r = launch(orch, "t8")
    assert r.exit_code == 1
    assert "L-DB2E81BA" in r.output
    assert ("aws service-quotas request-service-quota-increase --service-code ec2 "
            "--quota-code L-DB2E81BA --desired-value 8 --region us-east-1") in r.output
    held = tagged("t8")
    assert held["instances"] == [] and held["security_groups"] == [] and held["key_pairs"] == []
    assert aws.run_calls == []


def test_unknown_quota_does_not_block(aws, orch, job_calls):
    aws.quotas.clear()  # NoSuchResource: as moto, or a user without servicequotas:Get*
    r = launch(orch, "t9")
    assert r.exit_code == 0, r.output
    assert "quota not checked" in r.output


def test_dry_run_creates_nothing_and_prints_price(aws, orch):
    r = launch(orch, "t10", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "$0.752/hour" in r.output and "g4dn.2xlarge (8 vCPUs, 1 x T4)" in r.output
    assert "per GPU" not in r.output
    assert aws.image_id in r.output
    held = tagged("t10")
    assert held == {"instances": [], "security_groups": [], "key_pairs": [], "volumes": []}
    assert not (home() / "state.json").exists() and not (home() / "keys").exists()


def test_a_multi_gpu_instance_says_the_trainer_uses_every_gpu(aws, orch):
    """`trainer train` runs one DDP process per GPU (trainer/launch.py); the plan says so, before it is paid for."""
    r = orch("launch", "--instance", "g4dn.12xlarge", "--name", "t10b", "--ssh-cidr", CIDR, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "g4dn.12xlarge (48 vCPUs, 4 x T4: one training process per GPU)" in r.output


def test_unknown_instance_type_is_refused_with_closest_names(aws, orch):
    r = orch("launch", "--instance", "g4dn.2xlarg", "--name", "t11", "--ssh-cidr", CIDR)
    assert r.exit_code == 1
    assert "does not exist" in r.output and "g4dn.2xlarge" in r.output
    assert aws.run_calls == []


def test_ami_falls_back_to_describe_images_when_ssm_has_no_parameter(aws, orch, job_calls, monkeypatch):
    monkeypatch.setenv("ORCH_AMI_SSM_PARAMETER", "/orch-test/missing")
    monkeypatch.setenv("ORCH_AMI_OWNERS", "self")
    r = launch(orch, "t12", "--dry-run")
    assert r.exit_code == 0, r.output
    assert f"{aws.image_id} [describe_images:" in r.output


def test_launch_with_data_starts_the_job_over_ssh_endpoint(aws, orch, job_calls, monkeypatch):
    monkeypatch.setenv("ORCH_SSH_PROXY_COMMAND", "nc 127.0.0.1 2222")
    r = launch(orch, "t13", "--data", "demo", "--image", "trainer:dev", "--ssh-user", "orch", "--", "--epochs", "2")
    assert r.exit_code == 0, r.output
    ((endpoint, spec),) = job_calls.started
    inst = tagged("t13")["instances"][0]
    assert endpoint.host == (inst.get("PublicIpAddress") or inst["PrivateIpAddress"])
    assert endpoint.user == "orch" and endpoint.proxy_command == "nc 127.0.0.1 2222"
    assert endpoint.key_path == home() / "keys" / "t13.pem"
    assert endpoint.instance_id == inst["InstanceId"]  # %i in a proxy command; the host key is pinned under it
    assert endpoint.known_hosts == home() / "known_hosts"
    assert spec.data == "demo" and spec.image == "trainer:dev" and spec.trainer_args == ("--epochs", "2")

    r = orch("ssh", "t13", "--print")
    assert r.exit_code == 0, r.output
    assert "ProxyCommand=nc 127.0.0.1 2222" in r.output and f"orch@{endpoint.host}" in r.output


def test_teardown_needs_yes_off_a_terminal(aws, orch, job_calls):
    assert launch(orch, "t14").exit_code == 0
    r = orch("teardown", "t14")
    assert r.exit_code == 2 and "--yes" in r.output
    assert len(tagged("t14")["instances"]) == 1


def test_keep_volume(aws, orch, job_calls):
    assert launch(orch, "t15").exit_code == 0
    r = orch("teardown", "t15", "--yes", "--keep-volume")
    assert r.exit_code == 0, r.output
    assert "Kept volume(s): vol-" in r.output
    left = tagged("t15")
    assert left["instances"] == [] and left["security_groups"] == [] and left["key_pairs"] == []
    assert len(left["volumes"]) == 1


def test_zone_is_respected_and_a_pinned_zone_does_not_wander(aws, orch, job_calls):
    r = launch(orch, "t16", "--zone", "us-east-1c")
    assert r.exit_code == 0, r.output
    assert tagged("t16")["instances"][0]["Placement"]["AvailabilityZone"] == "us-east-1c"
    aws.capacity_fail_zones = {"us-east-1d"}
    r = launch(orch, "t17", "--zone", "us-east-1d")
    assert r.exit_code == 1 and "No capacity for g4dn.2xlarge" in r.output
    assert [c["Placement"]["AvailabilityZone"] for c in aws.run_calls[1:]] == ["us-east-1d"]
    r = launch(orch, "t18", "--zone", "us-east-1z")
    assert r.exit_code == 1 and "--zone us-east-1z" in r.output


def test_ssh_settings_file_then_env_then_flag(aws, orch, job_calls, monkeypatch):
    (home()).mkdir(parents=True, exist_ok=True)
    (home() / "config.toml").write_text('ssh_proxy_command = "proxy-from-file %h"\nssh_user = "fileuser"\n')
    assert launch(orch, "t19").exit_code == 0
    r = orch("ssh", "t19", "--print")
    assert r.exit_code == 0, r.output
    assert "ProxyCommand=proxy-from-file %h" in r.output and "fileuser@" in r.output
    assert "UserKnownHostsFile=" in r.output and str(home() / "known_hosts") in r.output  # quoted or not
    assert str(home() / "keys" / "t19.pem") in r.output
    monkeypatch.setenv("ORCH_SSH_PROXY_COMMAND", "proxy-from-env")
    assert "ProxyCommand=proxy-from-env" in orch("ssh", "t19", "--print").output
    r = orch("ssh", "t19", "--print", "--ssh-proxy-command", "proxy-from-flag", "--ssh-user", "flaguser")
    assert "ProxyCommand=proxy-from-flag" in r.output and "flaguser@" in r.output
    (home() / "keys" / "t19.pem").unlink()
    r = orch("ssh", "t19", "--print")
    assert r.exit_code == 1 and "private key of job 't19' is missing" in r.output


def test_resume_without_the_private_key_says_what_to_do(aws, orch, job_calls):
    assert launch(orch, "t20").exit_code == 0
    (home() / "keys" / "t20.pem").unlink()
    r = launch(orch, "t20")
    assert r.exit_code == 1 and "private key" in r.output and "orch teardown t20" in r.output
    assert len(tagged("t20")["instances"]) == 1  # nothing duplicated, nothing destroyed
    assert orch("teardown", "t20", "--yes").exit_code == 0
    assert tagged("t20")["key_pairs"] == [] and tagged("t20")["instances"] == []


def test_throttling_is_retried_with_backoff_and_launches_once(aws, orch, job_calls):
    aws.throttle_run_instances = 2
    r = launch(orch, "t21")
    assert r.exit_code == 0, r.output
    assert aws.sends == 3 and len(aws.run_calls) == 1  # one call, retried below it
    assert len(tagged("t21")["instances"]) == 1


def test_dry_run_spot_labels_the_table_price_honestly(aws, orch):
    ami = boto3.client("ec2", region_name="eu-west-1").register_image(
        Name="any-image", RootDeviceName="/dev/sda1")["ImageId"]
    r = launch(orch, "t22", "--dry-run", "--spot", "--region", "eu-west-1", "--ami", ami)
    assert r.exit_code == 0, r.output
    assert "$0.752/hour" in r.output and "eu-west-1 is usually higher" in r.output
    assert "spot is usually 50-70% less" in r.output and "spot, no fallback" not in r.output


def test_status_reads_the_latest_metrics_line_as_a_person_would():
    from orchestrator.cli.views import progress_text as _progress_text

    row = {"epoch": 5, "epochs": 16, "lr": 0.21, "val_top1": 42.1049, "val_top5": 68.2, "train_loss": 3.21987,
           "images_per_sec": 1873.4, "data_wait_fraction": 0.031, "seconds_left": 8640.0}
    assert _progress_text(row) == ("epoch 5/16 | val top-1 42.10%, top-5 68.20% | train loss 3.2199 | 1,873 img/s, "
                                   "data wait 3% | about 2 h 24 min left (projected)")
    assert _progress_text({"epoch": 3, "val_top1": None, "train_loss": 1.5}) == "epoch 3 | train loss 1.5000"
    # Metrics of another trainer image, or a damaged line: shown as they are, never a traceback.
    assert _progress_text({"step": 7, "acc": "n/a"}) == "step=7 acc=n/a"
    assert _progress_text({"epoch": 2, "val_top1": "high"}) == "epoch=2 val_top1=high"
