"""`--json` on the commands that report something: one JSON document on stdout, progress on stderr."""
from __future__ import annotations

import json

from tests.fixtures.aws import tagged

CIDR = "203.0.113.7/32"


def test_a_dry_run_prints_its_plan_as_json_and_creates_nothing(aws, orch):
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "js1", "--ssh-cidr", CIDR, "--spot", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["job"] == "js1" and doc["created"] is False
    plan = doc["plan"]
    assert plan["instance_type"] == "g4dn.2xlarge" and plan["spot"] is True and plan["vcpus"] == 8
    assert plan["ssh_cidr"] == CIDR and plan["zones"] and plan["price_per_hour"] > 0
    assert "user_data" not in plan and isinstance(plan["user_data_bytes"], int)
    assert tagged("js1") == {"instances": [], "security_groups": [], "key_pairs": [], "volumes": []}


def test_a_launch_prints_the_started_instance_as_json_with_its_progress_on_stderr(aws, orch, job_calls):
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "js2", "--ssh-cidr", CIDR, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    (inst,) = tagged("js2")["instances"]
    assert doc["created"] is True and doc["instance"]["instance_id"] == inst["InstanceId"]
    assert doc["instance"]["instance_type"] == "g4dn.2xlarge" and doc["instance"]["spot"] is False
    assert "Job js2" in r.stderr  # the progress a person would have read


def test_json_and_recover_are_refused_together(aws, orch):
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "js3", "--spot", "--recover", "--data", "demo", "--json")
    assert r.exit_code == 2 and "--recover" in r.output


def test_doctor_reports_each_check_as_json(aws, orch):
    aws.quotas["L-DB2E81BA"] = 0.0
    r = orch("doctor", "--json")
    assert r.exit_code == 1  # as without --json: a failing check fails the command
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["region"] == {"name": "region", "ok": True, "detail": "us-east-1"}
    assert checks["vcpu quota"]["ok"] is False and "L-DB2E81BA" in checks["vcpu quota"]["detail"]
