"""Secrets stay home: with distinctive AWS credentials in the environment, a dry run, a real (moto)
launch, a job over SSH and a local job leave them nowhere: not in $ORCH_HOME (state, keys, logs),
not in the user data EC2 holds, not in CLI output, not in anything the instance receives.
Also: key and state files are mode 600, and SSH is open only to the given /32.
"""
from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.fixtures.sshd import authorize_new_key_pairs
from tests.fixtures.aws import REGION, tagged
from tests.fixtures.dockerd import docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.tiny_instance import instance, tiny_base, tiny_context  # noqa: F401 (fixtures)

ACCESS_KEY = "AKIAORCHLEAK7F3A9Q2Z"
SECRET_KEY = "SECRET-DO-NOT-LEAK-7f3a9c1e5b/wJalrXUtnFEMIK7MDENG"
SESSION_TOKEN = "TOKEN-DO-NOT-LEAK-IQoJb3JpZ2luX2VjEJr7f3a9c1e5b"
SECRETS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
CIDR = "198.51.100.23/32"
ORCH = str(Path(sys.executable).with_name("orch"))


def home() -> Path:
    return Path(os.environ["ORCH_HOME"])


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return [s for s in SECRETS if s in text]


def leaks_under(root: Path) -> dict[str, list[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            hit = leaks(path.read_bytes())
            if hit:
                found[str(path)] = hit
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)


@pytest.fixture
def real_user_data(monkeypatch):
    """The shipped infra/bootstrap.sh, not the tests' stand-in, is what goes to the instance."""
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT", raising=False)


def ingress(job: str) -> list[dict]:
    (group,) = tagged(job)["security_groups"]
    return group["IpPermissions"]


def user_data_of(instance_id: str) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attr.get("UserData", {}).get("Value", "")).decode()


def test_launch_keeps_credentials_home_and_locks_the_door(aws, orch, job_calls, credentials, real_user_data):
    outputs = []
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "sec", "--ssh-cidr", CIDR, "--dry-run")
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    assert "bytes" in r.output and "no autostop watcher" not in r.output

    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "sec", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    for args in (("status", "sec"), ("list",), ("ssh", "sec", "--print"), ("doctor", "--instance", "g4dn.xlarge")):
        outputs.append(orch(*args).output)

    # What EC2 holds as user data: the real bootstrap script, the job's settings, no credentials.
    (inst,) = tagged("sec")["instances"]
    user_data = user_data_of(inst["InstanceId"])
    assert user_data.startswith("#!/bin/bash\n") and "export ORCH_JOB=sec" in user_data
    assert "export ORCH_AUTOSTOP_MINUTES=30" in user_data  # autostop is on by default
    assert leaks(user_data) == []
    assert "AWS_SECRET_ACCESS_KEY=" not in user_data and "AWS_SESSION_TOKEN=" not in user_data
    shutdown = boto3.client("ec2", region_name=REGION).describe_instance_attribute(
        InstanceId=inst["InstanceId"], Attribute="instanceInitiatedShutdownBehavior")
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"  # autostop ends the bill

    # SSH only, only from the caller's /32.
    rules = ingress("sec")
    assert [(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) for p in rules] == [("tcp", 22, 22)]
    assert [rng["CidrIp"] for rng in rules[0]["IpRanges"]] == [CIDR]
    assert not rules[0].get("Ipv6Ranges") and not rules[0].get("UserIdGroupPairs")

    # Files under $ORCH_HOME: private, and free of credentials.
    key = home() / "keys" / "sec.pem"
    assert mode(key) == 0o600 and mode(key.parent) == 0o700
    assert mode(home() / "state.json") == 0o600
    for name in ("known_hosts", "state.lock"):
        if (home() / name).exists():
            assert mode(home() / name) & 0o077 == 0, name

    r = orch("teardown", "sec", "--yes")
    assert r.exit_code == 0, r.output
    outputs.append(r.output)
    assert leaks("\n".join(outputs)) == []
    assert leaks_under(home()) == {}


def test_ssh_is_open_to_the_world_only_when_asked_explicitly(aws, orch, job_calls):
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "open", "--ssh-cidr", "0.0.0.0/0")
    assert r.exit_code == 0, r.output
    assert "warning" in r.output.lower() and "0.0.0.0/0" in r.output
    rules = ingress("open")
    assert [(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) for p in rules] == [("tcp", 22, 22)]
    assert [rng["CidrIp"] for rng in rules[0]["IpRanges"]] == ["0.0.0.0/0"]

    # Launching the same job again from a single address closes the world-wide rule.
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "open", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    cidrs = [rng["CidrIp"] for p in ingress("open") for rng in p["IpRanges"]]
    assert "0.0.0.0/0" not in cidrs and CIDR in cidrs


# --- what the instance receives over SSH ---------------------------------------------------------

RECORDER = """#!/bin/sh
# Records what a command on the "instance" received (arguments and environment), then behaves.
{{ echo "== $0 $*"; env; }} >> {log}
{then}
"""


@pytest.fixture
def instance_over_ssh(aws, sshd_server, monkeypatch, tmp_path):  # noqa: F811 (fixtures)
    """The moto instance is reached through the real sshd; every tool it runs records its input."""
    monkeypatch.setenv("ORCH_SSH_PROXY_COMMAND", sshd_server.proxy_command)
    monkeypatch.setenv("ORCH_SSH_USER", sshd_server.user)
    record = tmp_path / "instance-received.log"
    tools = {"mkdir": "exec /bin/mkdir \"$@\"", "id": "exec /usr/bin/id \"$@\"", "tar": "exec /bin/tar \"$@\"",
             "df": "exec /bin/df \"$@\"",
             # No engine on this "instance": the job stops there, with everything before it sent.
             "docker": "echo 'Cannot connect to the Docker daemon' >&2; exit 1"}
    placed = []
    for name, then in tools.items():
        path = sshd_server.bin_dir / name
        if path.exists():
            continue
        path.write_text(RECORDER.format(log=record, then=then))
        path.chmod(0o755)
        placed.append(path)

    authorized = authorize_new_key_pairs(monkeypatch, sshd_server)
    jobs: list[str] = []
    yield record, jobs
    for path in placed:
        path.unlink(missing_ok=True)
    for public in authorized:
        sshd_server.revoke(public)
    remote_home = Path(pwd.getpwnam(sshd_server.user).pw_dir)
    for job in jobs:
        shutil.rmtree(remote_home / "orch" / job, ignore_errors=True)


@pytest.mark.needs_sshd
def test_nothing_sent_to_the_instance_carries_credentials(instance_over_ssh, orch, sshd_server, credentials,
                                                          tiny_data):
    record, jobs = instance_over_ssh
    jobs.append("sshsec")
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "sshsec", "--ssh-cidr", CIDR, "--data", tiny_data,
             "--", "--epochs", "1")
    # This "instance" has no Docker engine: the launch stops there, cleanly, after the first commands.
    assert r.exit_code == 1 and "Docker engine" in r.output and "Traceback" not in r.output, r.output
    received = record.read_text() if record.exists() else ""
    assert "== " in received, f"no command reached the instance: {r.output}"
    assert leaks(received) == [], "credentials reached the instance"
    assert not [line for line in received.splitlines() if line.startswith("AWS_")], \
        "AWS_* variables reached the instance"
    assert leaks("\n".join(sshd_server.requested_targets())) == []
    remote_job = Path(pwd.getpwnam(sshd_server.user).pw_dir) / "orch" / "sshsec"
    if remote_job.exists():
        assert leaks_under(remote_job) == {}
    assert leaks(r.output) == []
    orch("teardown", "sshsec", "--yes")
    assert leaks_under(home()) == {}


def test_a_local_job_writes_no_credentials_under_orch_home(credentials, monkeypatch):
    monkeypatch.setenv("ORCH_LOCAL_RUNNER", "process")
    env = os.environ.copy()

    def orch_cli(*args):
        return subprocess.run([ORCH, *args], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                              env=env)

    launched = orch_cli("launch", "--target", "local", "--data", "demo", "--name", "locsec", "--",
                        "--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--epochs", "1")
    try:
        assert launched.returncode == 0, launched.stdout + launched.stderr
        followed = orch_cli("logs", "locsec", "--follow")
        assert followed.returncode == 0, followed.stdout + followed.stderr
        outputs = [launched.stdout + launched.stderr, followed.stdout + followed.stderr,
                   orch_cli("status", "locsec").stdout]
    finally:
        down = orch_cli("teardown", "locsec", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert leaks("\n".join(outputs + [down.stdout, down.stderr])) == []
    assert leaks_under(home()) == {}
    if (home() / "state.json").exists():
        assert mode(home() / "state.json") == 0o600


# --- --env / --env-file: the trainer's secrets ----------------------------------------------------------------------
ENV_SECRET = "WANDB-DO-NOT-LEAK-5d1c0ffee42"
FILE_SECRET = "HF-DO-NOT-LEAK-9a8b7c6d5e"


def test_trainer_env_values_reach_the_trainer_through_a_mode_600_file_and_nowhere_else(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCH_LOCAL_RUNNER", "process")
    env_file = tmp_path / "my.env"
    # As editors write them: a BOM, CRLF, `export` and a tab, a comment after a value.
    env_file.write_text(f"\ufeff# for the trainer\r\nexport\tORCH_TEST_HF='{FILE_SECRET}'  # the hub\r\n"
                        "ORCH_TEST_WANDB=overridden # by --env\r\n", encoding="utf-8")

    def orch_cli(*args):
        return subprocess.run([ORCH, *args], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)

    launched = orch_cli("launch", "--target", "local", "--data", "demo", "--name", "envsec", "--env",
                        f"ORCH_TEST_WANDB={ENV_SECRET}", "--env-file", str(env_file), "--",
                        "--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--epochs", "1")
    try:
        assert launched.returncode == 0, launched.stdout + launched.stderr
        written = home() / "jobs" / "envsec" / "env.json"
        assert mode(written) == 0o600
        assert json.loads(written.read_text()) == {"ORCH_TEST_HF": FILE_SECRET, "ORCH_TEST_WANDB": ENV_SECRET}
        followed = orch_cli("logs", "envsec", "--follow")
        assert followed.returncode == 0, followed.stdout + followed.stderr
        # The trainer read them (by name; the values are never printed).
        assert "environment from $TRAINER_ENV_FILE: ORCH_TEST_HF, ORCH_TEST_WANDB (values not shown)" in followed.stdout
        said = [launched.stdout, launched.stderr, followed.stdout, followed.stderr,
                orch_cli("status", "envsec").stdout, orch_cli("status", "envsec", "--json").stdout,
                orch_cli("list", "--json").stdout]
        elsewhere = {path: text for path, text in ((p, p.read_bytes()) for p in home().rglob("*")
                                                   if p.is_file() and p != written)
                     if ENV_SECRET.encode() in text or FILE_SECRET.encode() in text}
        assert elsewhere == {}, f"--env values outside {written}: {sorted(map(str, elsewhere))}"
    finally:
        down = orch_cli("teardown", "envsec", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [s for s in said + [down.stdout, down.stderr] if ENV_SECRET in s or FILE_SECRET in s]
    assert not (home() / "jobs" / "envsec" / "env.json").exists()  # gone with the job; its outputs stay


def test_a_bad_env_flag_is_refused_without_echoing_what_may_be_a_secret(tmp_path):
    for typo in (f"WANDB KEY {ENV_SECRET}", "ghp_SECRETTOKEN1234"):  # the second looks like a name, and is a token
        r = subprocess.run([ORCH, "launch", "--target", "local", "--data", "demo", "--env", typo],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr
        assert ENV_SECRET not in r.stdout + r.stderr and "SECRETTOKEN" not in r.stdout + r.stderr
    r = subprocess.run([ORCH, "launch", "--target", "local", "--data", "demo", "--env-file", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "can't read it" in r.stderr
    r = subprocess.run([ORCH, "launch", "--target", "local", "--env", f"A={ENV_SECRET}"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "are for the trainer" in r.stderr and ENV_SECRET not in r.stdout + r.stderr


def test_the_trainer_refuses_an_env_file_it_cannot_read(tmp_path):
    bad = tmp_path / "env.json"
    bad.write_text('{"A": 1}')
    run = subprocess.run([sys.executable, "-m", "trainer", "models"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TRAINER_ENV_FILE": str(bad)})
    assert run.returncode == 2 and "expected a JSON object of NAME" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_container_gets_env_values_as_a_read_only_file_not_in_its_config(instance, tiny_context, tmp_path):  # noqa: F811
    from orchestrator.job.env import parse_env
    from orchestrator.machines import docker_runner as ctr
    from orchestrator.records import JobSpec
    from tests.machines.test_start_on_instance import start_on, tiny_dataset

    session, client, jobs = instance
    jobs.append("envctr")
    start_on(session, JobSpec(job="envctr", data=str(tiny_dataset(tmp_path / "data")), gpus=False,
                              remote_root=str(tmp_path / "root"), env=parse_env([f"ORCH_TEST_WANDB={ENV_SECRET}"])),
             say=lambda m: None)
    attrs = ctr.find(client, "envctr").attrs
    written = tmp_path / "root" / "envctr" / "env.json"
    assert mode(written) == 0o600 and ENV_SECRET in written.read_text()
    assert "TRAINER_ENV_FILE=/run/orch/env.json" in attrs["Config"]["Env"]
    mount, = [m for m in attrs["Mounts"] if m["Destination"] == "/run/orch/env.json"]
    assert mount["Source"] == str(written) and mount["RW"] is False
    assert ENV_SECRET not in json.dumps(attrs)  # not its environment, labels, command or anything `docker inspect` shows


def test_env_values_are_not_in_user_data_tags_state_or_output_of_an_aws_launch(aws, orch, job_calls, real_user_data):
    outputs = []
    for extra in (("--dry-run", "--json"), ()):
        r = orch("launch", "--instance", "g4dn.xlarge", "--name", "envaws", "--ssh-cidr", CIDR, "--data", "demo",
                 "--env", f"ORCH_TEST_WANDB={ENV_SECRET}", *extra)
        assert r.exit_code == 0, r.output
        outputs.append(r.output)
    (_, spec), = job_calls.started  # the machine is given them, to write its mode-600 file
    assert spec.env.items == (("ORCH_TEST_WANDB", ENV_SECRET),) and ENV_SECRET not in repr(spec)
    for args in (("status", "envaws"), ("status", "envaws", "--json"), ("list", "--json")):
        outputs.append(orch(*args).output)
    held = tagged("envaws")
    (inst,) = held["instances"]
    assert ENV_SECRET not in user_data_of(inst["InstanceId"]) + json.dumps(held, default=str)
    assert ENV_SECRET not in "\n".join(outputs)
    assert not [p for p in home().rglob("*") if p.is_file() and ENV_SECRET.encode() in p.read_bytes()]
