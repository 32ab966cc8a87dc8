"""`orch launch` on AWS: plan -> pre-flight -> find or create the instance -> start the job on it.

Each step is recorded in the state file, but any step can be lost: the next `launch` or `teardown`
finds resources by tag. With `cfg.resume`, the checkpoint source (lifecycle/resume.py) is settled
before anything is created and handed to the job; a kept volume is attached while the job restores.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Callable, Iterator

from orchestrator import state
from orchestrator.cloud import aws, groups, instances, network, volumes
from orchestrator.cloud.aws import error_code, is_boto_error
from orchestrator.cloud.registry import KEEP_IMAGES, ensure_repository
from orchestrator.config import ConfigError, Settings, validate_job_name
from orchestrator.errors import FlowError
from orchestrator.job.restore import ATTACH_DEVICE
from orchestrator.job.start import start
from orchestrator.lifecycle import datasets, machines, managed, nodes
from orchestrator.lifecycle.keys import caller_cidr, ensure_key
from orchestrator.lifecycle.local import launch_local, say_started
from orchestrator.lifecycle.plan import check_dataset, on_demand_plan, plan, preflight, require_instance_profile
from orchestrator.lifecycle.progress import Say, phase, quiet
from orchestrator.lifecycle.resume import last_reclaimed, launch_record, resume_sources
from orchestrator.lifecycle.userdata import autostop_of, billing_note, idle_minutes
from orchestrator.machines.instance import ROOT_VOLUME_ROOT
from orchestrator.files import locked
from orchestrator.paths import job_lock_path, key_path
from orchestrator.records import ContainerStatus, ImageRegistry, Instance, LaunchConfig, LaunchPlan, whole
from orchestrator.trainer_args import CapSpent


def launch(cfg: LaunchConfig, say: Say = quiet) -> Instance:
    """Create (or resume) the job's instance, record it, and start the job when one is given."""
    validate_job_name(cfg.job)
    if cfg.target == "local":
        if cfg.resume or cfg.recover:
            raise ConfigError("--resume and --recover are for --target aws: a local job's outputs stay on this "
                              "machine, so launching it again already resumes it")
        return launch_local(cfg, say)
    s = cfg.settings
    require_instance_profile(s)
    check_dataset(cfg)
    if cfg.job_spec is not None and (name := datasets.name_of(cfg.job_spec.data)) is not None:
        source = datasets.for_instance(name, s.bucket, s.region)  # before anything is created
        cfg = replace(cfg, job_spec=replace(cfg.job_spec, dataset=source))
    # refuses before anything is created (a managed job's instances restore from its checkpoint bucket themselves)
    restore = resume_sources(cfg, say) if cfg.resume and not cfg.managed else None
    with phase("plan", say):
        p = plan(cfg, ssh_cidr="")  # a bad type or AMI is reported before any network probe
        p = replace(p, ssh_cidr=s.ssh_cidr or caller_cidr())
        if restore is not None and restore.volume_id:
            p = replace(p, zones=(_kept_volume_zone(p, restore.volume_id),))
        say(f"  {p.machine} in {p.region}, AMI {p.ami} [{p.ami_source}], "
            f"{'spot' if p.spot else 'on-demand'}, {p.volume_gb} GB gp3"
            f"{' kept after the instance (outputs on it)' if p.keep_volume else ''}, SSH from {p.ssh_cidr}")
        if p.volume_gb > s.volume_gb and cfg.job_spec is not None and cfg.job_spec.dataset is not None:
            say(f"  the volume is {p.volume_gb} GB, not {s.volume_gb}: dataset {cfg.job_spec.dataset.name} "
                f"({cfg.job_spec.dataset.bytes / 1e9:,.0f} GB) is restored onto it ({p.instance_type} has no instance "
                "store that holds it)")
    if machines.is_local(cfg.job):
        raise FlowError(f"Job {cfg.job!r} is a local job. Tear it down first (`orch teardown {cfg.job}`) "
                        "or choose another --name.")
    if not cfg.managed and groups.find_group_if_allowed(p.region, cfg.job) is not None:
        raise FlowError(f"Job {cfg.job} is managed: its Auto Scaling group keeps its instance (or is starting one) and "
                        f"starts the job there. `orch status {cfg.job}` shows it; to launch it otherwise, "
                        f"`orch teardown {cfg.job}` first.")
    if cfg.nodes > 1:
        return _launch_nodes(cfg, p, restore, say)
    if cfg.managed:
        with phase("trainer image repository (ECR)", say):
            registry = _image_registry(p.region, say)
        return managed.launch_managed(cfg, p, registry, say)
    # One look-then-create at a time per job on this machine: two `orch launch` of one job in two terminals
    # would each find no instance and start one. A teardown takes the same lock (lifecycle/teardown.py).
    with locked(job_lock_path(cfg.job), waiting=lambda: say(f"  waiting: another orch launch or teardown of "
                                                              f"{cfg.job} is running on this machine")):
        instance, p = _find_or_create(cfg, p, say)

    with phase("wait until running", say):
        instance = instances.wait_for_state(p.region, instance.instance_id, {"running"}, s.wait_timeout_s,
                                      s.poll_interval_s)
        state.update(cfg.job, status="running", public_ip=instance.public_ip, private_ip=instance.private_ip)
        say(f"  {instance.public_ip or instance.private_ip}")

    if cfg.job_spec is not None:
        registry = None
        if cfg.job_spec.image is None:
            with phase("trainer image repository (ECR)", say):
                registry = _image_registry(p.region, say)
        spec = replace(cfg.job_spec, remote_root=s.remote_root, restore=restore, registry=registry,
                       outputs_root=ROOT_VOLUME_ROOT if cfg.keep_volume else None)
        with _volume_attached(restore.volume_id if restore else None, instance, s, say):
            with phase("start the job" + (" (restoring its checkpoint)" if restore else ""), say):
                _start_and_say(cfg, p, lambda: start(machines.machine_for(cfg.job, s), spec), say,
                               f"The instance {instance.instance_id} is", "its instance and outputs go with it")
    note = _lifetime_note(cfg, p)
    if note:
        say(f"  {note}")
    return instance


def _launch_nodes(cfg: LaunchConfig, p: LaunchPlan, restore, say: Say) -> Instance:
    """`--nodes N` (lifecycle/nodes.py): the N instances found or started, then the trainer on each; node 0's."""
    s = cfg.settings
    with locked(job_lock_path(cfg.job), waiting=lambda: say(f"  waiting: another orch launch or teardown of "
                                                              f"{cfg.job} is running on this machine")):
        found, p = nodes.find_or_create(cfg, p, say)
    up = nodes.wait_running(cfg, found, say)
    with phase("trainer image repository (ECR)", say):
        registry = _image_registry(p.region, say)
    spec = replace(cfg.job_spec, remote_root=s.remote_root, restore=restore, registry=registry)
    with phase(f"start the job on its {cfg.nodes} nodes" + (" (node 0 restores the checkpoint)" if restore else ""),
               say):
        _start_and_say(cfg, p, lambda: nodes.start_nodes(cfg, up, spec, say)[0], say,
                       f"The job's {cfg.nodes} instances are", f"its {cfg.nodes} instances go with it")
    note = _lifetime_note(cfg, p)
    if note:
        say(f"  {note}")
    return up[0]


def _start_and_say(cfg: LaunchConfig, p: LaunchPlan, start_job: Callable[[], ContainerStatus], say: Say,
                   machines_are: str, gone_with: str) -> None:
    """Start the job (`start_job`: node 0's status) and say how it went; a failure says what is left billing."""
    try:
        status = start_job()
    except (RuntimeError, OSError) as e:
        if isinstance(e, CapSpent):
            raise FlowError(_cap_spent(cfg.job, e)) from None
        raise FlowError(f"{e}\n{machines_are} up and recorded ({billing_note(p, cfg.settings)}): run the same "
                        f"`orch launch --name {cfg.job} ...` again to carry on, or `orch teardown {cfg.job}` to remove "
                        f"{'them' if cfg.nodes > 1 else 'it'}.") from e
    if not status.already_running:
        state.update(cfg.job, launch=launch_record(cfg))
    say_started(status, cfg.job, say, stop_first=f"`orch fetch-weights {cfg.job}`, then `orch teardown {cfg.job}` "
                                                 f"({gone_with})",
                start_over=f"`orch teardown {cfg.job}` first, or choose another --name")


def _find_or_create(cfg: LaunchConfig, p: LaunchPlan, say: Say) -> tuple[Instance, LaunchPlan]:
    """The job's instance: the one tagged for it, else a new one (after the quota check); recorded either way.
    Returns it with the plan it was started on (an on-demand fallback changes it)."""
    s = cfg.settings
    record = state.get(cfg.job)
    # Before the quota: the job's own running instance is reused, and must not count against it.
    with phase("look for an existing instance (tag orch:job)", say):
        existing = instances.usable_instances(p.region, cfg.job, s.wait_timeout_s, s.poll_interval_s)
        if counts := {whole(i.tags[aws.TAG_NODES], 2) for i in existing if aws.TAG_NODES in i.tags}:
            raise FlowError(f"Job {cfg.job} runs on {max(counts)} instances (launched with --nodes {max(counts)}): "
                            f"add --nodes {max(counts)}, or launch with --resume, which takes it from the first launch.")
        if len(existing) > 1:
            say(f"  warning: {len(existing)} instances tagged {cfg.job}; using the newest")
        if existing:
            say(f"  resuming {existing[0].instance_id} ({existing[0].state}); not starting a second one")
            if cfg.resume:
                say("  --resume: the job's outputs are still on that machine; its container is started "
                    "again only if it stopped (and then carries on from its last.pt)")
            if existing[0].instance_type != p.instance_type:
                say(f"  warning: it is a {existing[0].instance_type}, not {p.instance_type}; "
                    f"`orch teardown {cfg.job}` first to change the type")
        else:
            say("  none")
            if not cfg.resume and cfg.job_spec is not None and last_reclaimed(p.region, cfg.job):
                say(f"  note: AWS reclaimed this job's last instance. This launch starts training from scratch; "
                    f"to carry on from its checkpoint instead: Ctrl-C, then `orch launch --name {cfg.job} --resume`")
    fallback = on_demand_plan(cfg, p) if p.spot and p.allow_on_demand_fallback and not existing else None
    if existing and existing[0].state in ("pending", "running"):
        say(f"  quota not checked: {existing[0].instance_id} is already running")
    else:
        with phase("pre-flight (quota)", say):
            check = preflight(p)
            say("  " + check.summary)
            if check.spot_quota_too_low and fallback is not None:
                p, fallback = fallback, None
    # What the job is launched with, for a later --resume. Onto a live instance only once the job has started:
    # if it was already running, this launch changed nothing, and its --data and arguments must not be recorded.
    recorded = record.launch if record else None
    state.update(cfg.job, target="aws", region=p.region, instance_type=p.instance_type, spot=p.spot,
                 ssh_user=s.ssh_user, ssh_proxy_command=s.ssh_proxy_command,
                 status=record.status if record else "launching",
                 launch=launch_record(cfg) if cfg.job_spec is not None and not existing else recorded)

    if s.max_dollars is not None and p.price_per_hour is None:
        say(f"  warning: no price known for {p.instance_type}; --max-dollars can't be enforced, use --max-hours")
    if s.max_dollars is not None and fallback is not None and fallback.price_per_hour is None:
        say(f"  warning: no on-demand price known for {p.instance_type}; an on-demand fallback would run without "
            "the --max-dollars cap, use --max-hours")
    if not p.ssh_cidr.endswith("/32"):
        say(f"  warning: SSH will be open to {p.ssh_cidr}, not a single address (asked with --ssh-cidr)")

    with phase("key pair and security group", say):
        key = ensure_key(p.region, cfg.job, in_use=bool(existing))
        group_id = network.ensure_security_group(p.region, cfg.job, p.ssh_cidr, p.vpc_id)
        state.update(cfg.job, key_name=key.name, key_path=str(key_path(cfg.job)), security_group_id=group_id)

    if existing:
        instance = existing[0]
        instances.start_if_stopped(p.region, instance, s.wait_timeout_s, s.poll_interval_s)
    else:
        with phase("run instance", say):
            instance = instances.run_instance(p, group_id, log=lambda m: say("  " + m),
                                              on_demand_user_data=fallback.user_data if fallback else None)
            say(f"  {instance.instance_id} in {instance.zone}{' (spot)' if instance.spot else ''}")
        _keep_only_the_first(cfg.job, p.region, instance)
    state.update(cfg.job, instance_id=instance.instance_id, spot=instance.spot, status=instance.state)
    return instance, p


def _keep_only_the_first(job: str, region: str, ours: Instance) -> None:
    """Another machine's `orch launch` of the same job (the lock is this machine's only) may have started an
    instance between our look and our run. The tags are the truth: of the job's live instances the first launched
    (then the lowest id: every launch orders them alike) stays, and a later one terminates itself."""
    live = instances.find_instances(region, job)
    first = min(live + [ours], key=lambda i: (i.launched_at or "", i.instance_id))
    if first.instance_id == ours.instance_id:
        return
    aws.client("ec2", region).terminate_instances(InstanceIds=[ours.instance_id])
    raise FlowError(f"Another `orch launch` of {job} (from another machine or account user) started {first.instance_id} "
                    f"while this one started {ours.instance_id}; this launch terminated its own so that one instance "
                    f"bills. Carry on from the machine that launched {first.instance_id}, or `orch teardown {job}` "
                    "and launch again.")


def check_can_launch(cfg: LaunchConfig, say: Say = quiet) -> None:
    """What `launch` would refuse before creating anything (the plan, the quota), checked ahead of work that is paid
    for first (`orch launch --prepare` prepares the dataset on an instance of its own before this launch)."""
    if cfg.target != "aws":
        return
    with phase(f"check the launch of {cfg.job} before preparing its dataset", say):
        p = plan(cfg, ssh_cidr="")
        if any(i.state in ("pending", "running") for i in instances.find_instances(p.region, cfg.job)):
            say(f"  {cfg.job} has a running instance: quota not checked")
            return
        say(f"  {p.machine} in {p.region}: {preflight(p).summary}")


def _image_registry(region: str, say: Say) -> ImageRegistry | None:
    """The account's trainer-image repository (made once); None, after saying why, when it can't be had."""
    try:
        setup = ensure_repository(region)
    except Exception as e:
        if not is_boto_error(e):
            raise
        why = error_code(e) or type(e).__name__
        say(f"  no ECR repository ({why}): the instance builds the trainer image itself, as each new one will. "
            f"infra/iam-policy.json allows what orch needs (ecr:DescribeRepositories, ecr:CreateRepository).")
        return None
    say(f"  {setup.registry.repository}"
        + (f" (created; it keeps the {KEEP_IMAGES} newest images)" if setup.created else ""))
    return setup.registry


def _cap_spent(job: str, e: CapSpent) -> str:
    text = str(e)
    return (f"{text[:1].upper()}{text[1:]}. At the cap the instance shuts itself down (and is terminated, its disks "
            f"with it). To train on, on a new instance with a cap of its own: `orch fetch-weights {job} --which all` "
            f"while this one is up (not needed with --checkpoint-bucket or --keep-volume), `orch teardown {job}`, then "
            f"`orch launch --name {job} --resume --max-hours H`.")


def _lifetime_note(cfg: LaunchConfig, p: LaunchPlan) -> str:
    """What the instance's watcher will do on its own, and what it takes with it."""
    s = cfg.settings
    autostop = autostop_of(s)
    if not p.user_data or autostop <= 0:
        return ""
    if cfg.job_spec is None:
        return (f"note: with no job started, the instance shuts itself down (and is terminated, its disks with it) "
                f"after {idle_minutes(autostop):g} min without an SSH connection; --autostop-minutes 0 turns this off")
    if s.checkpoint_bucket or cfg.keep_volume:
        return ""
    cap = " (and at the --max-hours/--max-dollars cap)" if s.max_hours or s.max_dollars else ""
    return (f"warning: autostop terminates the instance {autostop:g} min after the job ends{cap}, and its disks "
            f"with it: run `orch fetch-weights {cfg.job}` before then, or launch with --checkpoint-bucket "
            "or --keep-volume")


def _kept_volume_zone(p: LaunchPlan, volume_id: str) -> str:
    """The zone the new instance must start in: a volume attaches only within its zone."""
    volume = volumes.get_volume(p.region, volume_id)
    if volume is None or volume.state != "available":
        raise FlowError(f"The kept volume {volume_id} of job {p.job} is {volume.state if volume else 'gone'}; "
                        f"nothing was created. Run `orch launch --name {p.job} --resume` again once it is available, "
                        "or resume from another source (--resume-from, --checkpoint-bucket).")
    if volume.zone not in p.zones:
        raise FlowError(f"The kept volume {volume_id} is in {volume.zone}, and {p.instance_type} can't start there "
                        f"(zones: {', '.join(p.zones)}); nothing was created. Leave out --zone, or pick an instance "
                        f"type offered in {volume.zone}.")
    return volume.zone


@contextlib.contextmanager
def _volume_attached(volume_id: str | None, instance: Instance, s: Settings, say: Say) -> Iterator[None]:
    """The kept volume attached to the instance while the job restores from it, then detached (kept)."""
    if volume_id is None:
        yield
        return
    region = instance.region or s.region
    with phase(f"attach the kept volume {volume_id}", say):
        volumes.attach_volume(region, volume_id, instance.instance_id, ATTACH_DEVICE, timeout_s=s.wait_timeout_s,
                              poll_s=s.poll_interval_s)
    try:
        yield
    finally:
        with phase(f"detach the kept volume {volume_id} (`orch teardown` deletes it)", say):
            try:
                volumes.detach_volume(region, volume_id, instance.instance_id, timeout_s=s.wait_timeout_s,
                                  poll_s=s.poll_interval_s)
            except Exception as e:  # it goes with the instance's teardown anyway
                say(f"  warning: could not detach {volume_id} ({aws.friendly_error(e) or e})")
