"""Help, doctor, the local target, bad input, and secrets that stay home: all through the CLI."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fixtures.aws import REGION, tagged

CIDR = "203.0.113.7/32"
COMMANDS = ["launch", "status", "list", "teardown", "ssh", "doctor", "logs", "fetch-weights", "init"]


def home() -> Path:
    return Path(os.environ["ORCH_HOME"])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(orch, command):
    r = orch(command, "--help")
    assert r.exit_code == 0, r.output
    assert "Example: orch " in r.output


def test_cli_imports_no_cloud_or_ssh_library():
    code = ("import sys, orchestrator.cli; "
            "bad = [m for m in ('boto3', 'botocore', 'paramiko', 'docker') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_doctor_reports_quota_zero_with_the_fix_and_a_loose_key_file(aws, orch):
    aws.quotas["L-DB2E81BA"] = 0.0
    keys = home() / "keys"
    keys.mkdir(parents=True)
    loose = keys / "old.pem"
    loose.write_text("x")
    loose.chmod(0o644)
    r = orch("doctor", "--instance", "g4dn.2xlarge")
    assert r.exit_code == 1
    assert "[ok  ] aws credentials" in r.output
    assert "[FAIL] vcpu quota" in r.output and "--quota-code L-DB2E81BA" in r.output
    assert f"chmod 600 {loose}" in r.output


def test_doctor_without_aws_says_so_cleanly(orch):
    # conftest points AWS_ENDPOINT_URL nowhere: credentials can't be checked.
    r = orch("doctor")
    assert r.exit_code == 1
    assert "[FAIL] aws credentials" in r.output and "Traceback" not in r.output


def test_local_target_starts_and_tears_down_the_job_on_this_machine(orch, job_calls):
    r = orch("launch", "--target", "local", "--name", "loc", "--data", "demo", "--no-gpus", "--", "--epochs", "1")
    assert r.exit_code == 0, r.output
    ((endpoint, spec),) = job_calls.started
    assert endpoint is None and spec.gpus is False and spec.trainer_args == ("--epochs", "1")
    state = json.loads((home() / "state.json").read_text())
    assert state["jobs"]["loc"]["target"] == "local"
    r = orch("list", "--json")  # AWS is unreachable here (conftest): the local job is still listed
    assert r.exit_code == 0, r.output
    assert [(v["job"], v["state"]) for v in json.loads(r.stdout)] == [("loc", "running")]  # what its trainer says
    assert "warning: could not list us-east-1: Cannot reach AWS" in r.stderr
    r = orch("teardown", "loc", "--yes")
    assert r.exit_code == 0, r.output
    assert job_calls.stopped == [(None, "loc")]
    assert "loc" not in json.loads((home() / "state.json").read_text())["jobs"]


def test_caller_ip_not_detected_asks_for_ssh_cidr_and_creates_nothing(aws, orch, monkeypatch):
    from orchestrator.lifecycle import keys

    monkeypatch.setattr(keys, "IP_ECHO_URL", "http://127.0.0.1:9/")  # the network edge: unreachable
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "noip")
    assert r.exit_code == 1
    assert "--ssh-cidr" in r.output and "Traceback" not in r.output
    assert tagged("noip")["security_groups"] == [] and aws.run_calls == []


def test_spot_quota_zero_without_fallback_names_the_spot_quota(aws, orch):
    aws.quotas["L-3819A6DF"] = 0.0
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "sq", "--ssh-cidr", CIDR, "--spot",
             "--no-on-demand-fallback")
    assert r.exit_code == 1 and "L-3819A6DF" in r.output and "--desired-value 8" in r.output
    assert aws.run_calls == []


def test_malformed_config_file_is_a_clean_error_and_state_is_untouched(aws, orch, job_calls):
    assert orch("launch", "--instance", "g4dn.xlarge", "--name", "cfg", "--ssh-cidr", CIDR).exit_code == 0
    before = (home() / "state.json").read_bytes()
    (home() / "config.toml").write_text("region = [unclosed\n")
    for args in (("list",), ("status", "cfg"), ("launch", "--instance", "g4dn.xlarge", "--name", "cfg2"),
                 ("teardown", "cfg", "--yes")):
        r = orch(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "config.toml is not valid TOML" in r.output and "Traceback" not in r.output
    (home() / "config.toml").write_text('regoin = "us-east-1"\n')
    r = orch("list")
    assert r.exit_code == 2 and "unknown setting(s) regoin" in r.output
    assert (home() / "state.json").read_bytes() == before
    assert len(tagged("cfg")["instances"]) == 1


def test_corrupt_state_file_is_a_clean_error_and_is_left_alone(orch):
    home().mkdir(parents=True, exist_ok=True)
    (home() / "state.json").write_text("{not json")
    r = orch("status", "x")
    assert r.exit_code == 1 and "state.json is unreadable" in r.output and "orch list" in r.output
    assert (home() / "state.json").read_text() == "{not json"
    (home() / "state.json").write_text('{"schema": 99, "jobs": {}}')
    r = orch("list")
    assert r.exit_code == 1 and "schema 99, expected 1" in r.output
    assert (home() / "state.json").read_text() == '{"schema": 99, "jobs": {}}'


bad_names = st.one_of(
    st.text(min_size=1, max_size=60),
    st.sampled_from(["UPPER", "with space", "a" * 41, "dots.in.name", "semi;colon", "ünï", "../etc"]),
).filter(lambda s: not s.startswith("-")  # an option to click, not a name: its own usage error
         and not __import__("re").fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", s))
bad_cidrs = st.one_of(st.text(max_size=30), st.sampled_from(["1.2.3.4", "1.2.3.4/33", "300.1.1.1/32",
                                                             "1.2.3.4/24", "::1/128", "0.0.0.0/x"]))
bad_numbers = st.sampled_from(["-5", "0", "7", "abc", "1e9", "nan", "20000"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=bad_names, cidr=bad_cidrs, volume=bad_numbers, which=st.sampled_from(["name", "cidr", "volume"]))
def test_bad_launch_arguments_give_a_clean_error_and_no_state_change(orch, name, cidr, volume, which):
    args = ["launch", "--instance", "g4dn.xlarge", "--name", "ok", "--ssh-cidr", CIDR]
    if which == "name":
        args[4] = name
    elif which == "cidr":
        args[6] = cidr
        if not cidr or cidr.startswith("-"):
            return
        import ipaddress
        try:
            ipaddress.IPv4Network(cidr, strict=True)
            return  # a valid network after all
        except ValueError:
            pass
    else:
        args += ["--volume-gb", volume]
    state = home() / "state.json"
    before = state.read_bytes() if state.exists() else None
    r = orch(*args)
    assert r.exit_code in (1, 2), (args, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    assert "Traceback" not in r.output
    assert (state.read_bytes() if state.exists() else None) == before


def test_secrets_never_reach_state_logs_or_user_data(aws, orch, job_calls, monkeypatch, tmp_path):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEYorch1"
    token = "FwoGZXIvYXdzEXAMPLESESSIONTOKENorch1234567890"
    access = "AKIAORCHDISTINCTIVE1"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
    script = tmp_path / "bootstrap.sh"
    script.write_text("#!/bin/bash\nset -eu\necho \"bootstrapping $ORCH_JOB\"\n")
    monkeypatch.setenv("ORCH_BOOTSTRAP_SCRIPT", str(script))
    iam = boto3.client("iam", region_name=REGION)
    iam.create_instance_profile(InstanceProfileName="orch-trainer")
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "sec", "--ssh-cidr", CIDR, "--data", "demo",
             "--autostop-minutes", "15", "--max-hours", "2.5", "--iam-instance-profile", "orch-trainer")
    assert r.exit_code == 0, r.output
    user_data = base64.b64decode(aws.run_calls[-1]["UserData"]).decode()
    assert user_data.startswith("#!/bin/bash\n")
    assert "export ORCH_JOB=sec" in user_data and "export ORCH_AUTOSTOP_MINUTES=15" in user_data
    assert "export ORCH_MAX_HOURS=2.5" in user_data and 'echo "bootstrapping $ORCH_JOB"' in user_data
    assert aws.run_calls[-1]["IamInstanceProfile"] == {"Name": "orch-trainer"}
    ((endpoint, spec),) = job_calls.started
    sent = user_data + repr(endpoint) + repr(spec)
    written = [p.read_bytes().decode(errors="replace") for p in home().rglob("*") if p.is_file()]
    for value in (secret, token, access):
        assert value not in sent
        assert value not in r.output
        assert all(value not in text for text in written)

    # And if the script itself would carry a secret, the launch refuses to send it.
    script.write_text(f"#!/bin/bash\nexport AWS_SECRET_ACCESS_KEY={secret}\n")
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "sec2", "--ssh-cidr", CIDR)
    assert r.exit_code == 1 and "Refusing to send user data" in r.output
    assert secret not in r.output
    assert tagged("sec2")["instances"] == []


def test_list_marks_an_instance_that_died_outside_orch(aws, orch, job_calls):
    assert orch("launch", "--instance", "g4dn.xlarge", "--name", "gone", "--ssh-cidr", CIDR).exit_code == 0
    (inst,) = tagged("gone")["instances"]
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[inst["InstanceId"]])
    r = orch("list", "--json")
    assert [(v["job"], v["state"]) for v in json.loads(r.output)] == [("gone", "terminated")]
    r = orch("status", "gone")
    assert r.exit_code == 0 and "terminated" in r.output and "orch teardown gone" in r.output
    assert orch("teardown", "gone", "--yes").exit_code == 0
    left = tagged("gone")
    assert left["security_groups"] == [] and left["key_pairs"] == []


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=bad_names, command=st.sampled_from([("status",), ("teardown", "--yes"), ("logs",),
                                                 ("fetch-weights",), ("ssh", "--print")]))
def test_bad_job_names_on_every_command_give_a_clean_error(orch, name, command):
    state = home() / "state.json"
    before = state.read_bytes() if state.exists() else None
    r = orch(command[0], name, *command[1:])
    assert r.exit_code == 2, (command, name, r.output)
    assert "job name" in r.output and "Traceback" not in r.output
    assert (state.read_bytes() if state.exists() else None) == before


def test_other_bad_options_give_a_clean_error(orch):
    cases = [
        (("fetch-weights", "j", "--which", "newest"), "--which 'newest'"),
        (("launch", "--target", "gcp", "--name", "j"), "--target 'gcp'"),
        (("launch", "--name", "j"), "--instance is required"),
        (("launch", "--instance", "g4dn.xlarge", "--name", "j", "--", "--epochs", "3"), "need a dataset"),
        (("launch", "--instance", "g4dn.xlarge", "--name", "j", "--region", "mars"), "not an AWS region"),
        (("launch", "--instance", "g4dn.xlarge", "--name", "j", "--volume-throughput", "5000"), "125..1000"),
        (("launch", "--instance", "g4dn.xlarge", "--name", "j", "--max-hours", "-1"), "max_hours must be > 0"),
        (("status",), "No jobs yet"),
    ]
    for args, message in cases:
        r = orch(*args)
        assert r.exit_code in (1, 2), (args, r.output)
        assert message in r.output, (args, r.output)
        assert "Traceback" not in r.output
    assert not (home() / "state.json").exists()


def test_a_reclaimed_spot_instance_shows_as_interrupted_and_resumes(aws, orch, job_calls):
    assert orch("launch", "--instance", "g4dn.xlarge", "--name", "sp", "--ssh-cidr", CIDR, "--spot").exit_code == 0
    (inst,) = tagged("sp")["instances"]
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[inst["InstanceId"]])
    aws.spot_reclaimed = True
    r = orch("status", "sp")
    assert r.exit_code == 0 and "sp: interrupted" in r.output and "orch launch --name sp" in r.output
    assert [(v["job"], v["state"]) for v in json.loads(orch("list", "--json").output)] == [("sp", "interrupted")]
    assert json.loads((home() / "state.json").read_text())["jobs"]["sp"]["status"] == "interrupted"
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "sp", "--ssh-cidr", CIDR, "--spot")
    assert r.exit_code == 0, r.output
    (new,) = tagged("sp")["instances"]
    assert new["InstanceId"] != inst["InstanceId"]
    assert json.loads(orch("status", "sp", "--json", "--no-container").output)["state"] == "running"


def test_ctrl_c_during_a_launch_names_the_job_to_resume_or_remove(aws, orch, monkeypatch):
    from orchestrator.cloud import network as cloud_network

    def pressed_ctrl_c(region, job):  # the user gives up while AWS is being asked
        raise KeyboardInterrupt

    monkeypatch.setattr(cloud_network, "create_key_pair", pressed_ctrl_c)
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "kbd", "--ssh-cidr", CIDR)
    assert r.exit_code == 130
    assert "orch teardown kbd" in r.output and "JOB" not in r.output
    r = orch("launch", "--instance", "g4dn.xlarge", "--ssh-cidr", CIDR)  # no --name: one was made up
    assert r.exit_code == 130
    made_up = __import__("re").search(r"orch teardown (job-\d{8}-\d{6})", r.output)
    assert made_up and f"again with --name {made_up.group(1)}" in r.output, r.output


def test_orch_ssh_quotes_the_known_hosts_path_and_uses_the_instance_id(aws, orch, job_calls, monkeypatch, tmp_path):
    import shlex

    spaced = tmp_path / "Library" / "Application Support" / "orch"  # macOS's default ORCH_HOME
    monkeypatch.setenv("ORCH_HOME", str(spaced))
    ssm = "aws ssm start-session --target %i --document-name AWS-StartSSHSession --parameters portNumber=%p"
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "ssm", "--ssh-cidr", CIDR, "--ssh-proxy-command", ssm)
    assert r.exit_code == 0, r.output
    (inst,) = tagged("ssm")["instances"]
    r = orch("ssh", "ssm", "--print")
    assert r.exit_code == 0, r.output
    args = shlex.split(r.stdout)
    assert f'UserKnownHostsFile="{spaced}/known_hosts"' in args  # one value for OpenSSH, space and all
    assert f"ProxyCommand={ssm.replace('%i', inst['InstanceId'])}" in args  # %p is left to OpenSSH
    if f"HostKeyAlias={inst['InstanceId']}" not in args:  # set when machines.endpoint_for names the instance
        from orchestrator.lifecycle import machines

        assert machines.endpoint_for("ssm").instance_id is None


def test_launch_tells_the_job_its_autostop_time(aws, orch, job_calls):
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "as1", "--ssh-cidr", CIDR, "--data", "demo",
             "--autostop-minutes", "45")
    assert r.exit_code == 0, r.output
    ((_, spec),) = job_calls.started
    assert spec.autostop_minutes == 45  # start_on keeps it as a container label, for `orch logs` to say
