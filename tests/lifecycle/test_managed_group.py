"""A managed job's Auto Scaling group of one (cloud/groups.py, the cloud half of issue 24) against moto: made once
from the launch's plan, spot over the allowed types in every zone, stopped from replacing, and removed by
`orch teardown` with its launch template before the job's instances (it would replace them)."""
from __future__ import annotations

import base64

import boto3

from orchestrator.cloud import groups, network
from orchestrator.lifecycle.keys import ensure_key
from orchestrator.lifecycle.plan import plan
from orchestrator.lifecycle.request import LaunchRequest, configure
from tests.fixtures.aws import REGION, tagged

CIDR = "203.0.113.7/32"


def managed(job: str, spot: bool = True):
    cfg = configure(LaunchRequest(instance="g4dn.xlarge", name=job, spot=spot, ssh_cidr=CIDR)).config
    p = plan(cfg, ssh_cidr=CIDR)
    ensure_key(p.region, job, in_use=False)
    group_id = network.ensure_security_group(p.region, job, CIDR, p.vpc_id)
    return p, groups.ensure_group(p, group_id, ("g4dn.xlarge", "g5.xlarge"))


def test_a_managed_job_is_a_spot_group_of_one_over_the_allowed_types_in_every_zone(aws, monkeypatch):
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")  # the real infra/bootstrap.sh is the user data
    p, group = managed("kept")
    assert group.name == "orch-kept" and group.desired == 1 and len(group.instances) == 1
    raw = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=["orch-kept"])["AutoScalingGroups"][0]
    assert (raw["MinSize"], raw["MaxSize"], raw["CapacityRebalance"]) == (0, 1, True)
    policy = raw["MixedInstancesPolicy"]
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == ["g4dn.xlarge", "g5.xlarge"]
    assert policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0  # spot only
    assert sorted(raw["VPCZoneIdentifier"].split(",")) == sorted(s for z, s in p.subnets if z in p.zones)
    assert {t["Key"]: t["Value"] for t in raw["Tags"]}["orch:job"] == "kept"

    template = boto3.client("ec2", region_name=REGION).describe_launch_template_versions(
        LaunchTemplateId=group.launch_template_id)["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert template["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert p.user_data.startswith("#!") and base64.b64decode(template["UserData"]).decode() == p.user_data
    (instance,) = tagged("kept")["instances"]
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["orch:job"] == "kept"

    again = groups.ensure_group(p, "sg-unused", ("g4dn.xlarge",))
    assert again.name == group.name and groups.find_launch_templates(REGION, "kept") == [group.launch_template_id]


def test_an_on_demand_group_asks_for_on_demand_only(aws):
    _, group = managed("od", spot=False)
    raw = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[group.name])["AutoScalingGroups"][0]
    assert raw["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 100
    assert raw["CapacityRebalance"] is False


def test_a_job_that_ends_on_purpose_stops_its_group_replacing_it(aws):
    managed("done")
    assert groups.stop_replacing(REGION, "done") is True
    group = groups.find_group(REGION, "done")
    assert group.desired == 0
    assert groups.stop_replacing(REGION, "nothing-here") is False


def test_teardown_removes_the_group_and_its_template_then_everything_else(aws, orch, job_calls):
    managed("gone")
    r = orch("teardown", "gone", "--yes")
    assert r.exit_code == 0, r.output
    assert "auto scaling group orch-gone" in r.output and "launch template lt-" in r.output
    assert groups.find_group(REGION, "gone") is None and groups.find_launch_templates(REGION, "gone") == []
    assert tagged("gone") == {"instances": [], "security_groups": [], "key_pairs": [], "volumes": []}
