"""Where a job runs: the one place that reads a job's recorded target and turns it into a `Machine`.

    machine = machine_for("r50")        # an InstanceMachine (found by its orch:job tag), or this machine's
    job.control.status(machine)

An instance is found by its `orch:job` tag (the state file is a cache); this machine's jobs by their
record under `$ORCH_HOME/jobs` (machines/local_jobs.py). A new kind of machine is one module under
machines/ and one line in `LOCAL_MACHINES` or `machine_for`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from orchestrator import state
from orchestrator.cloud import aws, instances
from orchestrator.config import Settings, load_settings, validate_job_name
from orchestrator.errors import FlowError, JobError, NoRunningInstance
from orchestrator.labels import node_key
from orchestrator.machines.base import SSH_DEADLINE_S, Machine
from orchestrator.machines.instance import InstanceMachine
from orchestrator.machines.local_docker import LocalDockerMachine
from orchestrator.machines.local_jobs import load_record
from orchestrator.machines.local_process import LocalProcessMachine
from orchestrator.machines.process_runner import alive
from orchestrator.paths import key_path, known_hosts_path, local_job_dir
from orchestrator.records import SSHEndpoint
from orchestrator.remote.base import SSHUnreachable
from orchestrator.remote.local import LocalSession

LOCAL = "local"  # a job's recorded target when it runs on this machine (`--target local`); else "aws"
RUNNER_ENV = "ORCH_LOCAL_RUNNER"
LOCAL_MACHINES = {"docker": LocalDockerMachine, "process": LocalProcessMachine}


def runs_here(record: state.JobRecord | None) -> bool:
    """Whether a registry record is of a job on this machine."""
    return bool(record and record.target == LOCAL)


def is_local(job: str) -> bool:
    """Whether the registry says the job runs on this machine."""
    return runs_here(state.get(job))


def machine_for(job: str, settings: Settings | None = None, node: int = 0) -> Machine:
    """The machine the job runs on: this machine (by the runner it started with), or its instance (of a `--nodes N`
    job, node `node`'s, where that node's trainer is known by `labels.node_key`)."""
    if is_local(job):
        count = state.get(job).nodes
        if node >= count:
            raise FlowError(f"Job {job} runs on this machine with {count} node(s): --node 0"
                            + (f" to {count - 1}." if count > 1 else " (or leave it out)."))
        key = node_key(job, node)
        record = load_record(key)
        runner = record.runner if record else ("docker" if engine_answers() else "process")
        return LOCAL_MACHINES[runner](key)
    endpoint = endpoint_for(job, settings, node)
    if endpoint.managed:
        return CurrentInstanceMachine(job, endpoint, settings)
    return InstanceMachine(node_key(job, node), endpoint)


class CurrentInstanceMachine(InstanceMachine):
    """A managed job's machine: whichever instance its Auto Scaling group runs now, looked up by tag at each
    connection (AWS replaces a reclaimed one; `orch logs --follow` goes on from the new one's trainer)."""

    replaceable = True

    def __init__(self, job: str, endpoint: SSHEndpoint, settings: Settings | None):
        super().__init__(job, endpoint)
        self.settings = settings

    def open(self, deadline_s: float = SSH_DEADLINE_S):
        try:
            self.endpoint = endpoint_for(self.job, self.settings)
            self.where = f"{self.endpoint.user}@{self.endpoint.host}:{self.endpoint.port}"
        except NoRunningInstance as e:  # AWS is starting the replacement: never the last one's address, which AWS
            raise SSHUnreachable(f"{e} AWS starts its group's replacement") from None  # may have given another
        return super().open(deadline_s)


def local_machine_to_start(job: str) -> Machine:
    """The machine a local launch starts the job on: its running trainer process, else `choose_runner`'s."""
    record = load_record(job)
    if record and record.runner == "process" and alive(record.pid):
        return LocalProcessMachine(job)
    return LOCAL_MACHINES[choose_runner()](job)


def engine_answers(timeout_s: float = 3.0) -> bool:
    """Whether a Docker engine answers on this machine ($DOCKER_HOST or the default socket)."""
    try:
        path = LocalSession().docker_socket()
    except Exception:
        return False
    if not os.path.exists(path):
        return False
    try:
        import docker

        client = docker.DockerClient(base_url="unix://" + path, timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def choose_runner() -> str:
    """$ORCH_LOCAL_RUNNER: auto (Docker when its engine answers, else a process), docker or process."""
    wanted = os.environ.get(RUNNER_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "docker", "process"):
        raise JobError(f"{RUNNER_ENV}={wanted!r}: use auto, docker or process")
    if wanted == "process":
        return "process"
    if engine_answers():
        return "docker"
    if wanted == "docker":
        raise JobError(f"{RUNNER_ENV}=docker but no Docker engine answers here ($DOCKER_HOST or "
                       "/var/run/docker.sock). Start Docker, or unset it to run the trainer as a local process.")
    return "process"


def endpoint_for(job: str, settings: Settings | None = None, node: int = 0) -> SSHEndpoint:
    """How to reach the job's instance (node `node`'s, of a `--nodes N` job) over SSH. Current settings win over the
    recorded ones."""
    s = settings or load_settings()
    record = state.get(job)
    region = (record.region if record else None) or s.region
    instance = None
    if record and record.instance_id and node == 0:  # the record's instance is node 0's
        instance = instances.describe_instance(region, record.instance_id)
    if instance is None or instance.state in ("terminated", "shutting-down") or instance.node != node:
        with asking_aws(job, region, known=record is not None):
            live = [i for i in instances.find_instances(region, job) if i.node == node and i.state != "shutting-down"]
        instance = live[0] if live else None
    if instance is None and record is None:
        raise FlowError(not_here(job, f"Nor is an instance tagged orch:job={job} running in {region}."))
    if instance is None and node:
        raise FlowError(f"No running instance for node {node} of job {job!r} in {region}. `orch status {job}` "
                        "lists its nodes.")
    if instance is None:
        raise NoRunningInstance(f"No running instance for job {job!r} in {region}. See `orch list`.")
    host = instance.public_ip or instance.private_ip
    if not host:
        raise NoRunningInstance(f"Instance {instance.instance_id} of job {job!r} has no address yet ({instance.state}).")
    default_user = Settings().ssh_user
    user = s.ssh_user if s.ssh_user != default_user else (record.ssh_user if record else default_user)
    proxy = s.ssh_proxy_command or (record.ssh_proxy_command if record else None)
    path = Path(record.key_path) if record and record.key_path else key_path(job)
    if not path.exists():
        raise FlowError(f"The private key of job {job!r} is missing ({path}), so its instance can't be "
                        f"reached. `orch teardown {job}` removes it; launch again for a new key.")
    return SSHEndpoint(host=host, port=22, user=user, key_path=path, proxy_command=proxy,
                       known_hosts=known_hosts_path(), instance_id=instance.instance_id,
                       managed=aws.TAG_MANAGED in instance.tags)


def not_here(job: str, aws: str) -> str:
    """A job that neither the registry here nor AWS knows: that first, then what AWS said (or why it could not)."""
    outputs = local_job_dir(job) / "outputs"
    kept = f" (A local job {job} torn down earlier left its outputs at {outputs}.)" if outputs.is_dir() else ""
    return f"No job named {job} here (`orch list` shows the jobs). {aws}{kept}"


@contextlib.contextmanager
def asking_aws(job: str, region: str, known: bool) -> Iterator[None]:
    """A job not in the registry is looked for by its tag on AWS; when AWS can't be asked, say it isn't here first."""
    try:
        yield
    except Exception as e:
        if known or not type(e).__module__.startswith("botocore"):
            raise
        raise FlowError(not_here(job, f"AWS ({region}) could not be asked for an instance tagged orch:job={job}: "
                                       f"{aws.friendly_error(e) or e}")) from None


def resolve_job(job: str | None) -> str:
    """The job named, or the only one in the registry. An empty name is refused, never read as "no
    name": `orch teardown "$JOB" --yes` with $JOB unset must not pick the only job."""
    if job is not None:
        return validate_job_name(job)
    jobs = sorted(state.load())
    if len(jobs) == 1:
        return jobs[0]
    if not jobs:
        raise FlowError("No jobs yet. Start one with `orch launch --instance g4dn.2xlarge --name myjob`.")
    raise FlowError(f"Several jobs: {', '.join(jobs)}. Name one, e.g. `orch status {jobs[0]}`.")
