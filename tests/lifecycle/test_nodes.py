"""`orch launch --nodes N` against moto: the plan, the N tagged instances in one placement group and zone, the
security group's rule between them, each node's trainer told where the run meets, status and logs per node, and a
teardown that leaves nothing tagged. The machines are the fake ones (tests/fixtures/fake_machine.py); a run over two
real containers is tests/lifecycle/test_nodes_e2e.py."""
from __future__ import annotations

import json
from dataclasses import replace

import boto3
import pytest

from orchestrator.lifecycle.nodes import rendezvous_port
from tests.fixtures.aws import REGION, tagged

CIDR = "203.0.113.7/32"


def launch(orch, job, *extra):
    return orch("launch", "--instance", "g4dn.2xlarge", "--name", job, "--ssh-cidr", CIDR, "--data", "demo", *extra)


def node_tags(instance: dict) -> tuple[str, str]:
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    return tags.get("orch:node", ""), tags.get("orch:nodes", "")


def test_the_dry_run_of_four_g4dn_12xlarge_shows_the_placement_group_the_price_of_four_and_the_quota_need(aws, orch):
    r = orch("launch", "--instance", "g4dn.12xlarge", "--nodes", "4", "--name", "big", "--data", "demo",
             "--ssh-cidr", CIDR, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "g4dn.12xlarge (48 vCPUs, 4 x " in r.output and "x 4 instances" in r.output
    assert "one training run of 16 processes (one per GPU)" in r.output
    assert "placement group   orch-big (cluster" in r.output
    assert "4 x 48 = 192 vCPUs of Running On-Demand G and VT instances (L-DB2E81BA)" in r.output
    assert "$15.648/hour for the 4 instances (each $3.912/hour" in r.output
    assert "Dry run: nothing was created." in r.output
    assert tagged("big")["instances"] == [] and aws.placement_groups == {}

    as_json = json.loads(orch("launch", "--instance", "g4dn.12xlarge", "--nodes", "4", "--name", "big", "--data",
                              "demo", "--ssh-cidr", CIDR, "--dry-run", "--json").stdout)
    assert as_json["plan"]["nodes"] == 4 and as_json["plan"]["placement_group"] == "orch-big"


def test_two_nodes_start_as_two_tagged_instances_in_one_placement_group_and_zone_each_told_to_meet_on_node_0(
        aws, orch, job_calls):
    r = launch(orch, "pair", "--nodes", "2", "--", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert "(node 0 of 2; every node: orch status pair)." in r.output

    held = tagged("pair")
    by_node = {node_tags(i): i for i in held["instances"]}
    assert set(by_node) == {("0", "2"), ("1", "2")}
    node0, node1 = by_node[("0", "2")], by_node[("1", "2")]
    assert node0["Placement"]["AvailabilityZone"] == node1["Placement"]["AvailabilityZone"]
    assert [c["Placement"].get("GroupName") for c in aws.run_calls] == ["orch-pair", "orch-pair"]
    assert aws.placement_groups["orch-pair"]["strategy"] == "cluster"
    assert aws.placement_groups["orch-pair"]["tags"]["orch:job"] == "pair"

    (sg,) = held["security_groups"]
    members = [p for p in sg["IpPermissions"] if p["IpProtocol"] == "-1"]
    assert [g["GroupId"] for p in members for g in p["UserIdGroupPairs"]] == [sg["GroupId"]]  # its members only
    assert [r["CidrIp"] for p in sg["IpPermissions"] for r in p.get("IpRanges", [])] == [CIDR]  # SSH as before

    master = f"{node0['PrivateIpAddress']}:{rendezvous_port('pair')}"
    specs = {spec.job: spec for _, spec in job_calls.started}
    assert set(specs) == {"pair", "pair.node1"}  # node 1's trainer is known apart from node 0's
    for job, rank in (("pair", "0"), ("pair.node1", "1")):
        assert specs[job].trainer_args == ("--epochs", "1", "--nnodes", "2", "--node-rank",
                                           rank, "--master", master)
    started_on = {spec.job: endpoint.instance_id for endpoint, spec in job_calls.started}
    assert started_on == {"pair": node0["InstanceId"], "pair.node1": node1["InstanceId"]}

    status = orch("status", "pair")
    assert status.exit_code == 0, status.output
    assert f"node 0    {node0['InstanceId']} running" in status.output
    assert f"node 1    {node1['InstanceId']} running" in status.output and "trainer running" in status.output
    nodes = json.loads(orch("status", "pair", "--json").stdout)["nodes"]
    assert [(n["node"], n["instance"]["instance_id"]) for n in nodes] == [(0, node0["InstanceId"]),
                                                                          (1, node1["InstanceId"])]

    down = orch("teardown", "pair", "--yes")
    assert down.exit_code == 0, down.output
    assert "placement group orch-pair" in down.output
    assert tagged("pair") == {"instances": [], "security_groups": [], "key_pairs": [], "volumes": []}
    assert aws.placement_groups == {}


def test_no_trainer_starts_when_one_nodes_start_fails_and_a_launch_again_starts_them_together(aws, orch, job_calls):
    job_calls.fail_start = RuntimeError("the image build failed: no space left on device")
    r = launch(orch, "half", "--nodes", "2")
    assert r.exit_code == 1, r.output
    assert "no space left on device" in r.output and "not started: another node's start failed" in r.output
    assert "The job's 2 instances are up and recorded" in r.output
    assert job_calls.trainers == {}  # neither node's trainer waits at a rendezvous the other never reaches

    r = launch(orch, "half", "--nodes", "2")
    assert r.exit_code == 0, r.output
    assert sorted(job for _, job in job_calls.trainers) == ["half", "half.node1"]
    assert all(run.labels for run in job_calls.trainers.values())
    assert {spec.max_restarts for _, spec in job_calls.started} == {0}  # a node restarting alone can't rejoin


def test_a_launch_again_after_a_node_is_lost_starts_that_node_alone_in_the_same_zone(aws, orch, job_calls):
    assert launch(orch, "mend", "--nodes", "2").exit_code == 0
    node1 = next(i for i in tagged("mend")["instances"] if node_tags(i)[0] == "1")
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[node1["InstanceId"]])

    one = launch(orch, "mend")  # --nodes left out: not taken for a one-instance job of the same name
    assert one.exit_code == 1 and "add --nodes 2, or launch with --resume" in one.output, one.output
    lost = orch("status", "mend")
    assert f"node 1    {node1['InstanceId']} terminated" in lost.output and "its instance is terminated" in lost.output
    early = launch(orch, "mend", "--nodes", "2")  # node 0's trainer has not noticed yet: node 1 would wait alone
    assert early.exit_code == 1 and "node(s) 0 still run the trainer of an earlier start" in early.output
    assert "to start: node 1" in early.output
    node0 = next(key for key in job_calls.trainers if key[1] == "mend")
    job_calls.trainers[node0] = replace(job_calls.trainers[node0], state="exited", exit_code=4)  # peer lost
    r = launch(orch, "mend", "--nodes", "2")
    assert r.exit_code == 0, r.output
    assert "to start: none" in r.output  # node 1 started by the launch before
    assert job_calls.trainers[node0].state == "running"  # started again, with node 1's new trainer
    assert len(aws.run_calls) == 3 and aws.run_calls[-1]["Placement"]["AvailabilityZone"] == \
        node1["Placement"]["AvailabilityZone"]
    assert {node_tags(i) for i in tagged("mend")["instances"]} == {("0", "2"), ("1", "2")}


def test_the_quota_is_checked_for_every_node_before_any_starts(aws, orch, job_calls):
    aws.quotas["L-DB2E81BA"] = 40.0  # two g4dn.2xlarge need 16: fits; three g4dn.4xlarge (16 each) need 48
    r = orch("launch", "--instance", "g4dn.4xlarge", "--nodes", "3", "--name", "many", "--data", "demo",
             "--ssh-cidr", CIDR)
    assert r.exit_code != 0
    assert "this launch needs 48" in r.output
    assert aws.run_calls == [] and aws.placement_groups == {}


def test_logs_and_ssh_of_another_node_reach_that_nodes_instance(aws, orch, job_calls):
    assert launch(orch, "two", "--nodes", "2").exit_code == 0
    node1 = next(i for i in tagged("two")["instances"] if node_tags(i)[0] == "1")
    ssh = orch("ssh", "two", "--node", "1", "--print")
    assert ssh.exit_code == 0, ssh.output
    assert node1["InstanceId"] in ssh.output or node1.get("PublicIpAddress", "?") in ssh.output
    node0 = next(i for i in tagged("two")["instances"] if node_tags(i)[0] == "0")
    listed = json.loads(orch("list", "--json").stdout)
    assert [(v["job"], v["instance"]["instance_id"]) for v in listed] == [("two", node0["InstanceId"])]
    missing = orch("logs", "two", "--node", "5")
    assert missing.exit_code != 0 and "No running instance for node 5 of job 'two'" in missing.output


@pytest.mark.parametrize("extra, refused", [
    (("--keep-volume",), "--keep-volume"),
    (("--image", "me/trainer:1"), "--image"),
])
def test_what_several_nodes_do_not_go_with_is_refused_before_anything_is_made(aws, orch, extra, refused):
    r = launch(orch, "no", "--nodes", "2", *extra)
    assert r.exit_code == 2, r.output
    assert f"--nodes 2 does not go with {refused}" in r.output
    assert aws.run_calls == []


def test_the_run_s_meeting_point_is_orchs_to_give_not_the_users(aws, orch):
    r = launch(orch, "mine", "--", "--nnodes", "2")
    assert r.exit_code == 2, r.output
    assert "orch launch --nodes N" in r.output


def test_a_launch_on_another_count_of_instances_is_refused_before_anything_starts(aws, orch, job_calls):
    assert launch(orch, "one").exit_code == 0  # a one-instance job
    r = launch(orch, "one", "--nodes", "2")
    assert r.exit_code == 1 and "has instances of a launch on 1 instance(s), not 2" in r.output, r.output
    assert len(aws.run_calls) == 1


@pytest.mark.parametrize("tag, node", [("0", 0), ("3", 3), ("²", -1), ("-1", -1), ("abc", -1), ("", -1)])
def test_a_node_tag_orch_never_writes_is_no_node_of_the_run(tag, node):
    from orchestrator.records import Instance

    assert Instance("j", "ec2", "i-1", "running", "g4dn.xlarge", tags={"orch:node": tag}).node == node


def test_spot_nodes_without_a_checkpoint_bucket_are_warned_that_node_0_holds_the_checkpoints(aws, orch):
    r = launch(orch, "sp", "--nodes", "2", "--spot", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "warning: --nodes 2 --spot without --checkpoint-bucket: node 0 holds the run's checkpoints" in r.output


def test_a_placement_group_of_the_name_that_is_not_the_jobs_is_not_joined(aws, orch, job_calls):
    aws.placement_groups["orch-taken"] = {"strategy": "cluster", "tags": {}}  # someone else's, untagged
    r = launch(orch, "taken", "--nodes", "2")
    assert r.exit_code == 1 and "A placement group named orch-taken exists" in r.output, r.output
    assert aws.run_calls == []
