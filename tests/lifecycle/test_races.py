"""Two orch commands about one job at once, as two terminals (or a script and a person) run them.

Each command runs in a process of its own (forked, so it keeps this test's moto edge and fake machine),
through the CLI entry point; AWS is the moto server, and the instances are counted by tag afterwards.
"""
from __future__ import annotations

import multiprocessing
import re
import time

from tests.fixtures.aws import tagged

CIDR = "203.0.113.7/32"
LAUNCH = ("launch", "--instance", "g4dn.2xlarge", "--ssh-cidr", CIDR, "--name")


def _run(orch, args, results, start, before=None, edge=None):
    from orchestrator.cloud import aws as cloud_aws

    cloud_aws._cache.clear()  # the parent's clients (and their sockets) are not this process's
    if before is not None:
        edge.before_run = before
    start.wait(timeout=30)
    r = orch(*args)
    results.put((args[0], r.exit_code, r.output))


def _in_processes(*commands) -> list[tuple[str, int, str]]:
    """Run each (target, kwargs) in a forked process, all released at once; their (command, code, output)."""
    ctx = multiprocessing.get_context("fork")
    results, start = ctx.Queue(), ctx.Barrier(len(commands))
    procs = [ctx.Process(target=target, kwargs=dict(kwargs, results=results, start=start))
             for target, kwargs in commands]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return out


def test_two_launches_of_one_job_at_once_start_one_instance(aws, orch, job_calls):
    for attempt in range(3):
        job = f"twice{attempt}"
        outcomes = _in_processes(*[(_run, dict(orch=orch, args=(*LAUNCH, job)))] * 2)
        assert [code for _, code, _ in outcomes] == [0, 0], outcomes
        assert len(tagged(job)["instances"]) == 1, outcomes
        resumed = [out for _, _, out in outcomes if "not starting a second one" in out]
        assert len(resumed) == 1, outcomes


def test_a_teardown_during_a_launch_leaves_no_instance_running(aws, orch, job_calls):
    ctx = multiprocessing.get_context("fork")
    creating = ctx.Event()

    def slow_create():  # the launch is between its look for an instance and the instance's record
        creating.set()
        time.sleep(1.0)

    def teardown_once_creating(orch, results, start):
        start.wait(timeout=30)
        assert creating.wait(timeout=60)
        r = orch("teardown", "race", "--yes")
        results.put(("teardown", r.exit_code, r.output))

    outcomes = dict((cmd, (code, out)) for cmd, code, out in _in_processes(
        (_run, dict(orch=orch, args=(*LAUNCH, "race"), before=slow_create, edge=aws)),
        (teardown_once_creating, dict(orch=orch))))
    code, out = outcomes["teardown"]
    assert code == 0, out
    created = re.search(r"(i-[0-9a-f]+) in us-east-1", outcomes["launch"][1]).group(1)
    assert created in out  # the teardown waited for the instance's record, and terminated it
    assert tagged("race")["instances"] == []
    assert tagged("race")["security_groups"] == [] and tagged("race")["key_pairs"] == []


def test_list_after_a_teardown_does_not_record_the_job_again(aws, orch, job_calls):
    from orchestrator import state

    assert orch(*LAUNCH, "gone").exit_code == 0
    assert orch("teardown", "gone", "--yes").exit_code == 0
    r = orch("list")  # AWS still shows the terminated instance for about an hour
    assert r.exit_code == 0, r.output
    assert state.get("gone") is None


def test_a_launch_from_another_machine_at_the_same_time_leaves_one_instance(aws, orch, job_calls):
    import boto3

    from tests.fixtures.aws import REGION

    ec2 = boto3.client("ec2", region_name=REGION)
    rival = []

    def other_laptop():  # its launch looked, found nothing, and ran its instance just before ours
        if not rival:
            made = ec2.run_instances(ImageId=aws.image_id, InstanceType="g4dn.2xlarge", MinCount=1, MaxCount=1,
                                     TagSpecifications=[{"ResourceType": "instance",
                                                         "Tags": [{"Key": "orch:job", "Value": "two"}]}])
            rival.append(made["Instances"][0]["InstanceId"])
            time.sleep(1.1)  # launched a second earlier: the first to launch stays

    aws.before_run = other_laptop
    r = orch(*LAUNCH, "two")
    assert r.exit_code == 1, r.output
    assert f"started {rival[0]}" in r.output and "terminated its own" in r.output
    assert [i["InstanceId"] for i in tagged("two")["instances"]] == rival
