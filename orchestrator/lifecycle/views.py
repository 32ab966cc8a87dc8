"""`orch status` and `orch list`: a job as the cloud and its machine report it; the state file follows them."""
from __future__ import annotations

from dataclasses import replace

from orchestrator import state
from orchestrator.cloud import aws, groups, instances, volumes
from orchestrator.config import Settings
from orchestrator.errors import FlowError
from orchestrator.job import control
from orchestrator.lifecycle import machines
from orchestrator.lifecycle.progress import Say, quiet
from orchestrator.machines.base import quick_ssh_deadline_s
from orchestrator.records import Instance, JobView


def status(job: str, settings: Settings, container: bool = True) -> JobView:
    """The job as the cloud says (and, with `container`, as its machine says: see `with_container`)."""
    record = state.get(job)
    if machines.is_local(job):
        view = JobView(job=job, target=machines.LOCAL, state="local")
        return with_container(view, settings) if container else view
    region = (record.region if record else None) or settings.region
    with machines.asking_aws(job, region, known=record is not None):
        found = instances.find_instances(region, job, include_terminated=True)
    live = [i for i in found if i.state != "terminated"]
    by_node: dict[int, Instance] = {}
    for i in live + [i for i in found if i.state == "terminated"]:  # a node's live instance, else its newest (lost)
        by_node.setdefault(i.node, i)
    nodes = tuple(by_node[n] for n in sorted(by_node) if n >= 0) if any(i.node for i in found) else ()
    # A --nodes job is node 0's (it holds rank 0 and the outputs): a lost node 0 is the job's state, whatever else runs.
    instance = nodes[0] if nodes else live[0] if live else (found[0] if found else None)
    if instance is None and (group := groups.find_group_if_allowed(region, job)) is not None:  # a managed job with no instance visible
        return JobView(job, "aws", "starting" if group.desired else "ended", region, None, None,
                       f"managed by Auto Scaling group {group.name}: " + (
                           "AWS is starting its instance (spot capacity can take a while)" if group.desired else
                           f"the job ended on purpose; weights: `orch fetch-weights {job}`, then `orch teardown {job}`"))
    if instance is None:
        if record is None:
            raise FlowError(machines.not_here(job, f"Nor is anything tagged orch:job={job} in {region}."))
        return JobView(job, "aws", "gone", region, None, None,
                       f"nothing tagged in {region}; `orch teardown {job}` forgets it")
    shown, note = managed_state(job, instance, region) if aws.TAG_MANAGED in instance.tags else \
        cloud_state(job, instance, region)
    state.update(job, target="aws", region=region, instance_id=instance.instance_id,
                 instance_type=instance.instance_type, status=shown,
                 public_ip=instance.public_ip, private_ip=instance.private_ip)
    view = JobView(job, "aws", shown, region, instance, None, note, nodes=nodes)
    return with_container(view, settings) if container else view


def with_container(view: JobView, settings: Settings) -> JobView:
    """The view with its trainer (an instance is asked over SSH for a short while only): `status` prints the cloud
    part first. An instance that is not running has no trainer to ask."""
    if view.target != machines.LOCAL and (view.instance is None or view.instance.state != "running"):
        return view
    try:
        machine = machines.machine_for(view.job, settings)
    except FlowError as e:
        return replace(view, note=str(e))
    try:
        # A status is a glance: a machine SSH can't reach now (a new IP, still booting) is said so, not waited for.
        view = replace(view, container=control.status(machine, deadline_s=quick_ssh_deadline_s()))
    except Exception as e:  # unreachable, no container yet: the cloud view still stands
        view = replace(view, unreachable=str(e))
    return replace(view, node_containers=tuple(_node_trainer(view, i, settings) for i in view.nodes[1:]))


def _node_trainer(view: JobView, instance: Instance, settings: Settings) -> str:
    """Node I's trainer of a `--nodes N` job, in a few words ("running", "exited 4", "unreachable: ...")."""
    if instance.state != "running":
        return f"its instance is {instance.state}"
    try:
        c = control.status(machines.machine_for(view.job, settings, node=instance.node),
                           deadline_s=quick_ssh_deadline_s())
    except Exception as e:
        return f"unreachable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return c.state + (f" exit {c.exit_code}" if c.exit_code is not None else "")


def cloud_state(job: str, instance: Instance, region: str) -> tuple[str, str]:
    """The state to show for a job's instance, and what the user can do about it."""
    if instance.state != "terminated":
        return instance.state, ""
    kept_ones = volumes.kept_volumes(region, job)
    kept = [v for v in kept_ones if v.kept]
    volume = (f" Its outputs are on the kept volume {', '.join(v.volume_id for v in kept)} ({kept[0].zone}, "
              f"~/orch/{job}/outputs there): `orch launch --name {job} --resume` restores from it; "
              f"`orch teardown {job}` deletes it (add --keep-volume to keep it).") if kept else ""
    other = [v.volume_id for v in kept_ones if not v.kept]
    if other:
        volume += (f" Volume {', '.join(other)} was kept at teardown and holds no job outputs (the job was not "
                   f"launched with --keep-volume); it bills until deleted: `orch teardown {job}` deletes it.")
    if instance.state_reason == aws.SPOT_RECLAIMED:
        return "interrupted", (f"AWS reclaimed the spot instance; its checkpoints are where the job put "
                               f"them. Resume: `orch launch --name {job} --resume`; clean up: `orch teardown {job}`."
                               + volume)
    return "terminated", (f"instance terminated; `orch teardown {job}` removes its key pair and security group."
                          + volume)


def managed_state(job: str, instance: Instance, region: str) -> tuple[str, str]:
    """A managed job's state and its group's story: how many times AWS replaced its instance, and why last."""
    group = groups.find_group(region, job)
    if group is None:
        return instance.state, "managed, but its Auto Scaling group is gone (torn down)"
    try:
        history = groups.activities(region, job)
    except Exception as e:
        if not aws.is_boto_error(e):
            raise
        history = []
    launches = [a for a in history if a.launch and a.status != "Failed"]
    ended = [a for a in history if a.description.startswith("Terminating")]
    note = (f"managed by Auto Scaling group {group.name} ({', '.join(group.instances) or 'no instance now'}): "
            f"{max(len(launches) - 1, 0)} replacement(s) so far")
    if ended:
        note += f"; the last instance ended at {ended[-1].at}: {ended[-1].cause[:200]}"
    if group.desired == 0:
        return ("ended" if instance.state == "terminated" else instance.state), note + (
            f". The job ended on purpose (finished, a cap or autostop): the group is set to 0 instances and AWS "
            f"starts no other. Weights: `orch fetch-weights {job}`; then `orch teardown {job}`.")
    if instance.state != "running":
        return "replacing", note + f". Its instance {instance.instance_id} is {instance.state}: AWS starts another, " \
                                   "which resumes from the checkpoint bucket by itself."
    return instance.state, note


def list_jobs(settings: Settings, warn: Say = quiet) -> list[JobView]:
    """Every job in the registry or tagged in the cloud; the registry is updated to match."""
    records = state.load()
    regions = {settings.region} | {r.region for r in records.values() if not machines.runs_here(r) and r.region}
    by_job: dict[str, Instance] = {}
    unreachable: dict[str, str] = {}
    for region in sorted(regions):
        try:
            for instance in instances.find_instances(region, None, include_terminated=True):
                seen = by_job.get(instance.job)
                # Newest first; a live instance wins over a terminated one, and a --nodes job's node 0 over the others.
                better = seen is not None and instance.state != "terminated" and (
                    seen.state == "terminated" or (seen.node != 0 and instance.node == 0))
                if instance.job and (seen is None or better):
                    by_job[instance.job] = instance
        except Exception as e:  # no credentials or network: still list what the registry knows
            if not type(e).__module__.startswith("botocore"):
                raise
            unreachable[region] = aws.friendly_error(e) or str(e)
            if not aws.no_credentials(e):
                warn(f"warning: could not list {region}: {unreachable[region]}")
            elif len(unreachable) == 1:  # the same for every region: once
                warn("No AWS credentials here, so only this machine's jobs are listed "
                     "(`aws configure` to list the jobs on AWS too).")
    views = []
    for name in sorted(set(records) | set(by_job)):
        record = records.get(name)
        if machines.runs_here(record):
            views.append(JobView(name, machines.LOCAL, _local_state(name)))
            continue
        instance = by_job.get(name)
        region = (record.region if record else None) or settings.region
        if instance is None and region in unreachable:
            views.append(JobView(name, "aws", "unknown", region, None, None,
                                 f"{record.status} when last seen; AWS not reachable: {unreachable[region]}"))
            continue
        if instance is None:
            views.append(JobView(name, "aws", "terminated", region, None, None,
                                 f"no live instance; `orch teardown {name}` cleans up"))
            if record and record.status != "terminated":
                state.update(name, status="terminated", public_ip=None)
            continue
        shown, note = cloud_state(name, instance, instance.region or region)
        if record is None and instance.state == "terminated":
            # Torn down (AWS shows a terminated instance for about an hour): listed, not recorded again.
            views.append(JobView(name, "aws", shown, instance.region, instance, None, note))
            continue
        state.update(name, target="aws", region=instance.region, instance_id=instance.instance_id,
                     instance_type=instance.instance_type, spot=instance.spot, status=shown,
                     public_ip=instance.public_ip, private_ip=instance.private_ip)
        views.append(JobView(name, "aws", shown, instance.region, instance, None, note))
    return views


def _local_state(job: str) -> str:
    """A local job's trainer (process or container): running, exited, ...; "local" when it can't be asked."""
    try:
        return control.status(machines.machine_for(job)).state
    except Exception:  # the Docker engine went away: the job is still this machine's
        return "local"
