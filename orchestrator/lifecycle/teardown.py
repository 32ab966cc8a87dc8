"""`orch teardown`: stop the job, terminate its instance, delete what is tagged for it, and check."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator import state
from orchestrator.cloud import aws, instances, volumes
from orchestrator.config import Settings, validate_job_name
from orchestrator.errors import FlowError
from orchestrator.cloud import teardown as cloud_teardown
from orchestrator.job import control
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.keys import forget_host_keys
from orchestrator.lifecycle.progress import Say, phase, quiet
from orchestrator.machines.base import quick_ssh_deadline_s
from orchestrator.machines.local_jobs import load_record, outputs_dir
from orchestrator.files import locked
from orchestrator.paths import job_lock_path, key_path, local_job_dir
from orchestrator.records import TeardownReport


@dataclass(frozen=True)
class LocalTeardown:
    """What a local job's teardown stops, and what it keeps."""

    trainer: str  # "the container orch-JOB", "the trainer process", or "the trainer" (no record of which)
    outputs: Path


def local_job(job: str) -> LocalTeardown | None:
    """The local job named (None: it is not one)."""
    if not machines.is_local(job):
        return None
    found = load_record(job)
    trainer = ("the trainer" if found is None else "the trainer process" if found.runner == "process"
               else f"the container orch-{job}")
    return LocalTeardown(trainer=trainer, outputs=outputs_dir(job))


def teardown(job: str, settings: Settings, keep_volume: bool = False, say: Say = quiet) -> TeardownReport:
    """Stop the job, terminate its instance, delete its SG and key pair, and check nothing remains.

    A local job: stop its trainer and forget it; its outputs stay (a launch under the name continues them)."""
    validate_job_name(job)
    if machines.is_local(job):
        return _teardown_local(job)
    # A launch of the job on this machine between its look for an instance and the instance's record would
    # leave what it creates behind this teardown: wait for it (lifecycle/launch.py holds the same lock).
    with locked(job_lock_path(job), waiting=lambda: say(f"  waiting: an orch launch of {job} on this machine is "
                                                          "creating its instance")):
        return _teardown_aws(job, settings, keep_volume, say)


def _teardown_local(job: str) -> TeardownReport:
    warnings, stopped = (), None
    machine = before = None
    try:
        machine = machines.machine_for(job)
        before = control.status(machine)
    except Exception:  # the engine went away: stopping says so below
        pass
    outputs = Path(before.outputs) if before and before.outputs else local_job_dir(job) / "outputs"
    try:
        control.stop(machine or machines.machine_for(job))
        if before and before.state in ("running", "restarting", "created", "paused"):
            stopped = "the trainer process" if before.runner == "process" else f"the container orch-{job}"
    except Exception as e:
        warnings = (f"could not stop the local container: {e}",)
    record = state.get(job)
    for node in range(1, record.nodes if record else 1):  # `--nodes N`: its other trainers (each stops with node 0)
        try:
            control.stop(machines.machine_for(job, node=node))
        except Exception as e:
            warnings += (f"could not stop node {node}'s trainer: {e}",)
    state.remove(job)
    return TeardownReport(job=job, warnings=warnings, local=True, stopped=stopped,
                          kept_outputs=str(outputs) if outputs.is_dir() else None)


def _teardown_aws(job: str, settings: Settings, keep_volume: bool, say: Say) -> TeardownReport:
    record = state.get(job)
    region = (record.region if record else None) or settings.region
    if record is None:  # before any step says it succeeded
        with machines.asking_aws(job, region, known=False):
            left = cloud_teardown.remaining_resources(region, job)
        if not left:
            raise FlowError(machines.not_here(job, f"Nor is anything tagged orch:job={job} in {region}: nothing to remove."))
    warnings: list[str] = []
    live = instances.find_instances(region, job)
    if keep_volume:  # first: if AWS refuses, nothing is stopped or terminated
        roots = volumes.keep_root_volumes(region, job)
        for instance in live:
            if instance.tags.get(aws.TAG_KEEP_VOLUME) != "on" and roots.get(instance.instance_id):
                warnings.append(
                    f"the root volume {', '.join(roots[instance.instance_id])} of {instance.instance_id} is kept, but "
                    f"holds no job outputs: {job} was not launched with --keep-volume, so they were on the instance's "
                    "NVMe disk (where it has one), which goes with it. The volume bills until deleted.")
    if any(i.state == "running" for i in live) and key_path(job).exists():
        # Briefly: an address the security group no longer admits (a new IP) must not hold up the terminate.
        deadline_s = quick_ssh_deadline_s()
        say(f"… stop the job's container (SSH for up to {deadline_s:g} s)")
        start = time.monotonic()
        try:
            control.stop(machines.machine_for(job, settings), deadline_s=deadline_s)
            say(f"✓ stop the job's container ({time.monotonic() - start:.1f}s)")
        except Exception as e:  # the instance is going anyway
            say(f"✗ stop the job's container ({time.monotonic() - start:.1f}s): terminating anyway")
            warnings.append(
                f"could not stop the container before terminating ({type(e).__name__}: {str(e).splitlines()[0]}). "
                "The instance was terminated anyway: its shutdown stops the container (Docker sends the trainer "
                "SIGTERM), but whatever the job wrote since its last checkpoint copy may be lost.")
    with phase("terminate and delete", say):
        report = cloud_teardown.terminate_job(region, job, keep_volume=keep_volume, timeout_s=settings.wait_timeout_s,
                                              poll_s=settings.poll_interval_s, log=lambda m: say("  " + m),
                                              spec_folder=record.spec_folder if record else None)
    key_path(job).unlink(missing_ok=True)
    # Pinned by address, or by instance id (an endpoint with an instance id: SSM and the like).
    forget_host_keys({name for i in live for name in (i.public_ip, i.private_ip, i.instance_id) if name})
    if report.remaining:
        state.update(job, status="teardown-incomplete")
    else:
        state.remove(job)
    return replace(report, warnings=tuple(warnings) + report.warnings)
