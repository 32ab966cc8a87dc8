"""The job lifecycle: plan -> pre-flight -> resume or create -> run -> (start job) ... -> teardown.

`launch` with `cfg.resume` first makes sure there is a checkpoint to bring back (the bucket, a
local copy, or the root volume a `--keep-volume` job left: the new instance starts in its zone and
it is attached while the job restores from it) before anything is created, and hands it to the job
as a `restore.Restore`;
`follow_and_recover` stays attached and launches again with resume when AWS reclaims the spot
instance (from this process: orch has no watcher in the cloud).

Each step is a plain function the CLI calls. Cloud calls go through `providers.ec2`; the job on
the machine goes through `orchestrator.job` (imported when needed). The state file is written at
every step, but any step can be lost: the next `launch` or `teardown` finds resources by tag.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from orchestrator import state
from orchestrator.config import ConfigError, LaunchConfig, Settings, orch_home, repo_root, validate_job_name
from orchestrator.providers import ec2
from orchestrator.providers.base import Instance, LaunchPlan, SSHEndpoint, TeardownReport
from orchestrator.trainer_args import CapSpent

Say = Callable[[str], None]
IP_ECHO_URL = "https://checkip.amazonaws.com"


class FlowError(RuntimeError):
    """A failure with a message the user can act on (what was wrong, what was kept, what to run)."""


class NoCheckpointSource(FlowError):
    """`--resume` with nowhere to resume from; raised before anything is created (a usage error)."""


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def phase(name: str, say: Say) -> Iterator[None]:
    start = time.monotonic()
    say(f"… {name}")
    yield
    say(f"✓ {name} ({time.monotonic() - start:.1f}s)")


# --- paths ------------------------------------------------------------------------------------


def keys_dir() -> Path:
    return orch_home() / "keys"


def key_path(job: str) -> Path:
    return keys_dir() / f"{job}.pem"


def known_hosts_path() -> Path:
    return orch_home() / "known_hosts"


def write_private_file(path: Path, text: str) -> None:
    """Atomically write a secret file that is mode 600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
            f.flush()
            os.fsync(f.fileno())  # on disk before it replaces anything: EC2 hands out a private key once
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- caller address ---------------------------------------------------------------------------


def caller_cidr(timeout_s: float = 4.0) -> str:
    """This machine's public IPv4 address as a /32, asked of an HTTPS echo service."""
    import ipaddress
    import urllib.request

    try:
        with urllib.request.urlopen(IP_ECHO_URL, timeout=timeout_s) as response:
            text = response.read(64).decode().strip()
        return f"{ipaddress.IPv4Address(text)}/32"
    except Exception as e:
        raise FlowError(
            f"Could not detect your public IP address ({IP_ECHO_URL}: {e}). SSH is only opened to "
            "your own address: pass it with --ssh-cidr YOUR.IP.ADDRESS/32 (or set ssh_cidr in "
            f"{orch_home() / 'config.toml'})."
        ) from None


# --- user data --------------------------------------------------------------------------------


def bootstrap_script(settings: Settings) -> Path | None:
    path = Path(settings.bootstrap_script) if settings.bootstrap_script else repo_root() / "infra" / "bootstrap.sh"
    return path if path.is_file() else None


def render_user_data(job: str, settings: Settings, price_per_hour: float | None) -> str:
    """infra/bootstrap.sh with the job's settings exported after its shebang. No credentials."""
    script = bootstrap_script(settings)
    if script is None:
        return ""
    text = script.read_text(encoding="utf-8")
    values = {
        "ORCH_JOB": job,
        "ORCH_REGION": settings.region,
        "ORCH_AUTOSTOP_MINUTES": settings.autostop_minutes,
        "ORCH_MAX_HOURS": settings.max_hours,
        "ORCH_MAX_DOLLARS": settings.max_dollars,
        "ORCH_PRICE_PER_HOUR": price_per_hour,
        "ORCH_CHECKPOINT_BUCKET": settings.checkpoint_bucket,
    }
    block = ["# --- orch job settings (written by `orch launch`; never credentials) ---"]
    block += [f"export {k}={shlex.quote(str(v))}" for k, v in values.items() if v is not None]
    lines = text.splitlines()
    head = [lines.pop(0)] if lines and lines[0].startswith("#!") else ["#!/bin/bash"]
    rendered = "\n".join(head + block + lines) + "\n"
    _refuse_secrets(rendered, "user data")
    if len(rendered.encode()) > 16384:
        raise FlowError(f"{script} renders to {len(rendered.encode())} bytes of user data; EC2 allows 16384.")
    return rendered


def _refuse_secrets(text: str, where: str) -> None:
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name, "")
        if len(value) >= 12 and value in text:
            raise FlowError(f"Refusing to send {where}: it contains the value of ${name}.")


# --- plan and pre-flight ----------------------------------------------------------------------


def plan(cfg: LaunchConfig, ssh_cidr: str) -> LaunchPlan:
    """Resolve everything a launch needs, reading the cloud but creating nothing."""
    from orchestrator import pricing

    s = cfg.settings
    validate_job_name(cfg.job)
    _require_instance_profile(s)
    check_dataset(cfg)
    info = ec2.instance_type_info(s.region, cfg.instance_type)
    ami = ec2.resolve_ami(s.region, s.ami_ssm_parameter, s.ami_owners, s.ami_name_pattern, cfg.ami)
    zones = ec2.offered_zones(s.region, cfg.instance_type)
    if not zones:
        raise FlowError(f"{cfg.instance_type} is not offered in any zone of {s.region}. "
                        "Try another region with --region (e.g. us-east-1, us-west-2).")
    if cfg.zone:
        if cfg.zone not in zones:
            raise FlowError(f"--zone {cfg.zone}: {cfg.instance_type} is offered in {', '.join(zones)} "
                            f"of {s.region} (with a default subnet). Pick one of those, or leave --zone out.")
        zones = (cfg.zone,)
    price = pricing.hourly_price(cfg.instance_type, s.region, spot=cfg.spot, live=s.live_prices)
    return LaunchPlan(
        job=cfg.job, region=s.region, instance_type=info.name, vcpus=info.vcpus, ami=ami.image_id,
        ami_source=ami.source, spot=cfg.spot, allow_on_demand_fallback=s.allow_on_demand_fallback,
        volume_gb=s.volume_gb, volume_throughput=s.volume_throughput, ssh_cidr=ssh_cidr, zones=zones,
        key_name=ec2.resource_name(cfg.job), security_group_name=ec2.resource_name(cfg.job),
        root_device=ami.root_device_name, iam_instance_profile=s.iam_instance_profile,
        user_data=render_user_data(cfg.job, s, price.usd_per_hour if price else None),
        price_per_hour=price.usd_per_hour if price else None, gpus=info.gpus, gpu_name=info.gpu_name,
        price_source=price.source if price else None,
        tags=_launch_tags(cfg), keep_volume=cfg.keep_volume,
    )


def _needs_instance_profile(what: str, why: str, otherwise: str = "") -> ConfigError:
    """The refusal for something the instance does in S3 with its own role, when it has none."""
    return ConfigError(
        f"{what} needs --iam-instance-profile: {why}. Nothing was created. Create the profile once (the "
        "commands are at the top of infra/bootstrap.sh; its policy is infra/instance-role-policy.json), then add "
        f"--iam-instance-profile orch-trainer (or set iam_instance_profile in config.toml){otherwise}.")


def _require_instance_profile(s: Settings) -> None:
    """The instance copies checkpoints to the bucket with its own role: without one, every copy would fail."""
    if s.checkpoint_bucket and not s.iam_instance_profile:
        raise _needs_instance_profile(
            f"--checkpoint-bucket {s.checkpoint_bucket}",
            "the instance copies each checkpoint there with its own role, and without one every copy fails (and a "
            "later --resume finds nothing)")


def check_dataset(cfg: LaunchConfig) -> None:
    """Refuse a --data the job could never use, before anything is created or paid for.

    A local folder needs train/ and val/ splits, as `trainer.data.load_dataset` does for `trainer
    train` (mirrored here: orch does not import the trainer); an s3:// URI is copied on the
    instance with its own role.
    """
    data = cfg.job_spec.data if cfg.job_spec is not None else None
    if data is None or data == "demo":
        return
    if data.startswith("s3://"):
        if cfg.target == "aws" and not cfg.settings.iam_instance_profile:
            raise _needs_instance_profile(
                f"--data {data}", "the instance copies the dataset from S3 with its own role, and without one the "
                "copy fails once the instance is up (and billing)",
                "; or download the dataset (`aws s3 sync URI DIR`) and pass --data DIR")
        return
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"--data {data}: {folder} is not a folder here{' (it is a file)' if folder.exists() else ''}. "
            "Nothing was created. Pass a dataset folder (train/<class>/*.jpg and val/<class>/*.jpg; "
            "`trainer prepare` makes one), an s3:// URI, or --data demo.")
    missing = next((split for split in ("train", "val") if not (folder / split).is_dir()), None)
    if missing:
        fix = (f"`trainer prepare folder --source {folder} --dest NEW_FOLDER` splits a folder of class folders "
               "(`trainer prepare` also makes that layout from ImageNet, Tiny ImageNet or CIFAR-100 as downloaded)"
               if missing == "train" else
               f"`trainer prepare folder --source {folder} --dest NEW_FOLDER --val-percent 10` draws val/ from "
               "train/ (a seeded 10% of each class)")
        raise ConfigError(
            f"--data {data}: {folder} has no {missing}/ folder, so the trainer would stop at once (no {missing} "
            f"split). Nothing was created. Expected {folder / 'train'}/<class>/*.jpg and {folder / 'val'}/<class>/"
            f"*.jpg: {fix}; or pass --data demo.")


def _on_demand_plan(cfg: LaunchConfig, p: LaunchPlan) -> LaunchPlan:
    """The spot plan's on-demand fallback: the same launch, its --max-dollars cap at the on-demand price."""
    from orchestrator import pricing

    price = pricing.hourly_price(p.instance_type, p.region, spot=False, live=cfg.settings.live_prices)
    usd = price.usd_per_hour if price else None
    return replace(p, spot=False, user_data=render_user_data(cfg.job, cfg.settings, usd), price_per_hour=usd,
                   price_source=price.source if price else None)


def _launch_tags(cfg: LaunchConfig) -> tuple[tuple[str, str], ...]:
    """Job settings that must outlive the state file: a resume on another laptop reads them back."""
    tags = []
    if cfg.settings.checkpoint_bucket:
        tags.append((ec2.TAG_CHECKPOINT_BUCKET, cfg.settings.checkpoint_bucket))
    if cfg.settings.iam_instance_profile:
        tags.append((ec2.TAG_INSTANCE_PROFILE, cfg.settings.iam_instance_profile))
    if cfg.recover:
        tags.append((ec2.TAG_RECOVER, "on"))
    if cfg.keep_volume:
        tags.append((ec2.TAG_KEEP_VOLUME, "on"))
    return tuple(tags)


@dataclass(frozen=True)
class Preflight:
    """What the quota check found (it raises FlowError when the launch can't go ahead)."""

    summary: str  # one line on the check
    spot_quota_too_low: bool = False  # a spot plan whose fallback is allowed: start on-demand


def preflight(p: LaunchPlan) -> Preflight:
    """Refuse a launch AWS would refuse for quota; says what was checked."""
    from orchestrator import quota

    check = quota.check_vcpu_quota(p.region, p.instance_type, p.vcpus, p.spot)
    if check.ok is False:
        if p.spot and p.allow_on_demand_fallback:
            od = quota.check_vcpu_quota(p.region, p.instance_type, p.vcpus, False)
            if od.ok is not False:
                return Preflight(f"spot quota too low ({check.limit:g}); starting on-demand (fallback allowed)", True)
        raise FlowError(quota.fix_message(check, p.region))
    if check.ok is None:
        return Preflight(f"quota not checked: {check.detail}")
    return Preflight(f"{check.quota_name}: {check.in_use_vcpus}+{check.needed_vcpus} of {check.limit:g} vCPUs")


# --- launch -----------------------------------------------------------------------------------


def launch(cfg: LaunchConfig, say: Say = _quiet) -> Instance:
    """Create (or resume) the job's instance, record it, and start the job when one is given."""
    validate_job_name(cfg.job)
    if cfg.target == "local":
        if cfg.resume or cfg.recover:
            raise ConfigError("--resume and --recover are for --target aws: a local job's outputs stay on this "
                              "machine, so launching it again already resumes it")
        return _launch_local(cfg, say)
    s = cfg.settings
    _require_instance_profile(s)
    check_dataset(cfg)
    restore = _resume_sources(cfg, say) if cfg.resume else None  # refuses before anything is created
    with phase("plan", say):
        p = plan(cfg, ssh_cidr="")  # a bad type or AMI is reported before any network probe
        p = replace(p, ssh_cidr=s.ssh_cidr or caller_cidr())
        if restore is not None and restore.volume_id:
            p = replace(p, zones=(_kept_volume_zone(p, restore.volume_id),))
        say(f"  {p.machine} in {p.region}, AMI {p.ami} [{p.ami_source}], "
            f"{'spot' if p.spot else 'on-demand'}, {p.volume_gb} GB gp3"
            f"{' kept after the instance (outputs on it)' if p.keep_volume else ''}, SSH from {p.ssh_cidr}")
    record = state.get(cfg.job)
    if record and record.target == "local":
        raise FlowError(f"Job {cfg.job!r} is a local job. Tear it down first (`orch teardown {cfg.job}`) "
                        "or choose another --name.")
    # Before the quota: the job's own running instance is reused, and must not count against it.
    with phase("look for an existing instance (tag orch:job)", say):
        existing = []
        for found in ec2.find_instances(p.region, cfg.job):
            if found.state == "shutting-down":  # going away: wait, then start a fresh one
                ec2.wait_for_state(p.region, found.instance_id, {"terminated"}, s.wait_timeout_s, s.poll_interval_s)
            else:
                existing.append(found)
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
            if not cfg.resume and cfg.job_spec is not None and _last_reclaimed(p.region, cfg.job):
                say(f"  note: AWS reclaimed this job's last instance. This launch starts training from scratch; "
                    f"to carry on from its checkpoint instead: Ctrl-C, then `orch launch --name {cfg.job} --resume`")
    fallback = _on_demand_plan(cfg, p) if p.spot and p.allow_on_demand_fallback and not existing else None
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
                 launch=_launch_record(cfg) if cfg.job_spec is not None and not existing else recorded)

    if s.max_dollars is not None and p.price_per_hour is None:
        say(f"  warning: no price known for {p.instance_type}; --max-dollars can't be enforced, use --max-hours")
    if s.max_dollars is not None and fallback is not None and fallback.price_per_hour is None:
        say(f"  warning: no on-demand price known for {p.instance_type}; an on-demand fallback would run without "
            "the --max-dollars cap, use --max-hours")
    if not p.ssh_cidr.endswith("/32"):
        say(f"  warning: SSH will be open to {p.ssh_cidr}, not a single address (asked with --ssh-cidr)")

    with phase("key pair and security group", say):
        key = _ensure_key(p.region, cfg.job, in_use=bool(existing))
        group_id = ec2.ensure_security_group(p.region, cfg.job, p.ssh_cidr)
        state.update(cfg.job, key_name=key.name, key_path=str(key_path(cfg.job)), security_group_id=group_id)

    if existing:
        instance = existing[0]
        if instance.state in ("stopped", "stopping"):
            ec2.wait_for_state(p.region, instance.instance_id, {"stopped"}, s.wait_timeout_s, s.poll_interval_s)
            ec2.client("ec2", p.region).start_instances(InstanceIds=[instance.instance_id])
    else:
        with phase("run instance", say):
            instance = ec2.run_instance(p, group_id, log=lambda m: say("  " + m),
                                        on_demand_user_data=fallback.user_data if fallback else None)
            say(f"  {instance.instance_id} in {instance.zone}{' (spot)' if instance.spot else ''}")
    state.update(cfg.job, instance_id=instance.instance_id, spot=instance.spot, status=instance.state)

    with phase("wait until running", say):
        instance = ec2.wait_for_state(p.region, instance.instance_id, {"running"}, s.wait_timeout_s,
                                      s.poll_interval_s)
        state.update(cfg.job, status="running", public_ip=instance.public_ip, private_ip=instance.private_ip)
        say(f"  {instance.public_ip or instance.private_ip}")

    if cfg.job_spec is not None:
        from orchestrator import job as job_api

        spec = replace(cfg.job_spec, remote_root=s.remote_root, restore=restore,
                       outputs_root=job_api.ROOT_VOLUME_ROOT if cfg.keep_volume else None)
        with _volume_attached(restore.volume_id if restore else None, instance, s, say):
            with phase("start the job" + (" (restoring its checkpoint)" if restore else ""), say):
                try:
                    status = job_api.start_job(endpoint_for(cfg.job, s), spec)
                except (RuntimeError, OSError) as e:
                    if isinstance(e, NotImplementedError):
                        raise
                    if isinstance(e, CapSpent):
                        raise FlowError(_cap_spent(cfg.job, e)) from None
                    raise FlowError(f"{e}\nThe instance {instance.instance_id} is up and recorded ({_billing(p, s)}): "
                                    f"run the same `orch launch --name {cfg.job} ...` again to carry on, or "
                                    f"`orch teardown {cfg.job}` to remove it.") from e
                if not status.already_running:
                    state.update(cfg.job, launch=_launch_record(cfg))
                _say_started(status, cfg.job, say, stop_first=f"`orch fetch-weights {cfg.job}`, then `orch teardown "
                                                              f"{cfg.job}` (its instance and outputs go with it)",
                              start_over=f"`orch teardown {cfg.job}` first, or choose another --name")
    note = _lifetime_note(cfg, p)
    if note:
        say(f"  {note}")
    return instance


def _cap_spent(job: str, e: CapSpent) -> str:
    text = str(e)
    return (f"{text[:1].upper()}{text[1:]}. At the cap the instance shuts itself down (and is terminated, its disks "
            f"with it). To train on, on a new instance with a cap of its own: `orch fetch-weights {job} --which all` "
            f"while this one is up (not needed with --checkpoint-bucket or --keep-volume), `orch teardown {job}`, then "
            f"`orch launch --name {job} --resume --max-hours H`.")


# What infra/bootstrap.sh's watcher does with the job's settings (keep the two in step).
BOOTSTRAP_AUTOSTOP_MINUTES = 30  # its default when the setting is unset
IDLE_MINUTES_BOUNDS = (10, 120)


def idle_minutes(autostop_minutes: float) -> float:
    """How long an instance where no job ever started waits, with no SSH connection, before it shuts down."""
    if autostop_minutes <= 0:
        return 0  # autostop off: the watcher never stops it
    low, high = IDLE_MINUTES_BOUNDS
    return min(max(2 * autostop_minutes, low), high)


def _autostop(s: Settings) -> float:
    return BOOTSTRAP_AUTOSTOP_MINUTES if s.autostop_minutes is None else s.autostop_minutes


def _billing(p: LaunchPlan, s: Settings) -> str:
    """Until when an instance whose job did not start bills."""
    autostop = _autostop(s)
    if not p.user_data or autostop <= 0:
        return f"it bills until `orch teardown {p.job}`"
    return (f"it bills until `orch teardown {p.job}`, or until it shuts itself down (and is terminated): "
            f"{idle_minutes(autostop):g} min without an SSH connection while no job has started on it, "
            f"{autostop:g} min after its job ends")


def _lifetime_note(cfg: LaunchConfig, p: LaunchPlan) -> str:
    """What the instance's watcher will do on its own, and what it takes with it."""
    s = cfg.settings
    autostop = _autostop(s)
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
    volume = ec2.get_volume(p.region, volume_id)
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
        from orchestrator.restore import ATTACH_DEVICE

        ec2.attach_volume(region, volume_id, instance.instance_id, ATTACH_DEVICE, timeout_s=s.wait_timeout_s,
                          poll_s=s.poll_interval_s)
    try:
        yield
    finally:
        with phase(f"detach the kept volume {volume_id} (`orch teardown` deletes it)", say):
            try:
                ec2.detach_volume(region, volume_id, instance.instance_id, timeout_s=s.wait_timeout_s,
                                  poll_s=s.poll_interval_s)
            except Exception as e:  # it goes with the instance's teardown anyway
                say(f"  warning: could not detach {volume_id} ({ec2.friendly_error(e) or e})")


# --- resume and recover -------------------------------------------------------------------------


def _launch_record(cfg: LaunchConfig) -> state.LaunchRecord:
    spec, s = cfg.job_spec, cfg.settings
    data = spec.data
    if data != "demo" and not data.startswith("s3://"):
        data = str(Path(data).expanduser().resolve())  # a resume may run from another folder
    return state.LaunchRecord(
        data=data, trainer_args=tuple(spec.trainer_args), image=spec.image, gpus=spec.gpus,
        instance_type=cfg.instance_type, region=s.region, spot=cfg.spot, checkpoint_bucket=s.checkpoint_bucket,
        iam_instance_profile=s.iam_instance_profile, volume_gb=s.volume_gb, remote_root=s.remote_root,
        recover=cfg.recover, max_recoveries=cfg.max_recoveries, keep_volume=cfg.keep_volume,
    )


def recorded_launch(job: str, settings: Settings) -> state.LaunchRecord | None:
    """What the job was launched with: the state file, else what its newest instance's tags say."""
    record = state.get(job)
    if record and record.launch:
        return record.launch
    if record and record.target == "local":
        return None
    region = (record.region if record else None) or settings.region
    found = ec2.find_instances(region, job, include_terminated=True)
    if not found:
        return None
    newest = found[0]
    return state.LaunchRecord(instance_type=newest.instance_type, region=region, spot=newest.spot,
                              checkpoint_bucket=newest.tags.get(ec2.TAG_CHECKPOINT_BUCKET),
                              iam_instance_profile=newest.tags.get(ec2.TAG_INSTANCE_PROFILE),
                              recover=newest.tags.get(ec2.TAG_RECOVER) == "on",
                              keep_volume=newest.tags.get(ec2.TAG_KEEP_VOLUME) == "on")


def remote_root_for(job: str, settings: Settings) -> str | None:
    """The job folder's root on the machine: the setting, else what the job was launched with."""
    record = state.get(job)
    return settings.remote_root or (record.launch.remote_root if record and record.launch else None)


def outputs_root_for(job: str) -> str | None:
    """Where the job's outputs are when not under its job folder: on the root volume (--keep-volume)."""
    from orchestrator.job import ROOT_VOLUME_ROOT

    record = state.get(job)
    return ROOT_VOLUME_ROOT if record and record.launch and record.launch.keep_volume else None


def _last_reclaimed(region: str, job: str) -> bool:
    found = ec2.find_instances(region, job, include_terminated=True)
    return bool(found) and found[0].state_reason == ec2.SPOT_RECLAIMED


def default_resume_dir(job: str) -> Path:
    """Where `orch fetch-weights JOB` puts files without --dest (relative to the current folder)."""
    return Path("weights") / job


def _resume_sources(cfg: LaunchConfig, say: Say):
    """The checkpoint sources for --resume; refuses (exit 2, nothing created) when there is none."""
    from orchestrator.restore import Restore, RestoreError, local_copy

    if cfg.job_spec is None:
        raise ConfigError(f"--resume restarts training, so it needs the job's dataset: job {cfg.job!r} has none "
                          "recorded. Add --data PATH|demo|s3://... (and the trainer arguments after `--`).")
    folder = Path(cfg.resume_from).expanduser() if cfg.resume_from else default_resume_dir(cfg.job)
    try:
        local = local_copy(folder)
    except RestoreError as e:
        raise NoCheckpointSource(str(e)) from None
    if cfg.resume_from and local is None:
        raise NoCheckpointSource(f"--resume-from {cfg.resume_from}: there is no checkpoints/last.pt in it. "
                                 f"`orch fetch-weights {cfg.job} --which all --dest {cfg.resume_from}` writes one "
                                 "while the job's machine is up.")
    bucket = cfg.settings.checkpoint_bucket
    if bucket or local:
        sources = ([f"{bucket} (copied on the new instance)"] if bucket else []) + ([str(folder)] if local else [])
        say(f"--resume: the checkpoint comes from {', else '.join(sources)}")
        return Restore(bucket=bucket, local_dir=str(folder) if local else None)
    s = cfg.settings
    live = []
    for found in ec2.find_instances(cfg.region, cfg.job):
        if found.state == "shutting-down":  # a reclaim: its root volume detaches once it is gone
            ec2.wait_for_state(cfg.region, found.instance_id, {"terminated"}, s.wait_timeout_s, s.poll_interval_s)
        else:
            live.append(found)
    # Only volumes launched with --keep-volume hold the job's outputs (not one kept at teardown).
    kept = [v for v in ec2.kept_volumes(cfg.region, cfg.job, wait_s=min(s.wait_timeout_s, 120),
                                        poll_s=s.poll_interval_s) if v.kept]
    if kept and (not live or live[0].zone == kept[0].zone):
        # With a live instance too: an earlier resume may have stopped before the restore (its machine, a good
        # last.pt already there, is then kept as is: restore.restore_checkpoints).
        say(f"--resume: the checkpoint comes from the kept volume {kept[0].volume_id} ({kept[0].zone}), "
            f"attached to the {'instance' if live else 'new instance'} while the job starts")
        return Restore(volume_id=kept[0].volume_id)
    if live:
        return None  # its outputs are still on it
    raise NoCheckpointSource(
        f"--resume: job {cfg.job!r} has no live instance and nothing to resume from: no checkpoint bucket was "
        f"recorded for it, no volume of it was kept and there is no local copy in {folder}/checkpoints. "
        "Nothing was created.\n"
        f"Fix: pass --resume-from DIR (a copy made with `orch fetch-weights {cfg.job} --which all --dest DIR`), "
        "or --checkpoint-bucket s3://... if its instance copied checkpoints there; or start over without --resume "
        "(and with --keep-volume, so that the next reclaim leaves its outputs behind)."
    )


def _machine_lost(region: str, instance_id: str) -> Callable[[], bool]:
    def lost() -> bool:
        instance = ec2.describe_instance(region, instance_id)
        return instance is None or instance.state not in ("pending", "running")
    return lost


def follow_and_recover(cfg: LaunchConfig, say: Say = _quiet, ended: Callable | None = None) -> int:
    """Follow the job's logs; when AWS reclaims its spot instance, launch again with resume.

    Returns the trainer's exit code. Runs in this process only: if this terminal closes, nothing
    relaunches the job (`orch launch --name JOB --resume` does it by hand). `ended` is given the
    job's end (`job.JobEnded`) when its container exits for good, as in `orch logs --follow`.
    """
    from orchestrator import job as job_api

    s = cfg.settings
    check_s = min(30.0, max(0.5, 10 * s.poll_interval_s))
    recoveries = 0
    if not s.checkpoint_bucket and not cfg.keep_volume:
        say(f"  warning: no --checkpoint-bucket or --keep-volume: after a reclaim, only a local copy in {default_resume_dir(cfg.job)} "
            f"(orch fetch-weights {cfg.job} --which all) can be resumed from")
    while True:
        record = state.get(cfg.job)
        region = (record.region if record else None) or s.region
        instance_id = record.instance_id if record else None
        try:
            code = job_api.follow_logs(endpoint_for(cfg.job, s), cfg.job, follow=True,
                                       machine_lost=_machine_lost(region, instance_id) if instance_id else None,
                                       check_s=check_s, ended=ended)
        except job_api.MachineLost:
            code = None
        instance = ec2.describe_instance(region, instance_id) if instance_id else None
        if instance is not None and instance.state == "shutting-down":
            instance = ec2.wait_for_state(region, instance.instance_id, {"terminated"}, s.wait_timeout_s,
                                          s.poll_interval_s)
        reclaimed = instance is not None and instance.state_reason == ec2.SPOT_RECLAIMED
        if code == 0 or (code is not None and not reclaimed):
            return code
        if not reclaimed:
            state_now = instance.state if instance else "gone"
            raise FlowError(f"the job's instance {instance_id} is {state_now}, and not because AWS reclaimed it, so "
                            f"--recover does not relaunch it. See `orch status {cfg.job}`; to carry on from the last "
                            f"checkpoint: orch launch --name {cfg.job} --resume")
        if recoveries >= cfg.max_recoveries:
            raise FlowError(f"AWS reclaimed the spot instance {instance_id} again, after {recoveries} recoveries "
                            f"(--max-recoveries {cfg.max_recoveries}); giving up. The checkpoints are where the "
                            f"job put them: `orch launch --name {cfg.job} --resume` carries on (try --on-demand).")
        recoveries += 1
        say(f"[orch] AWS reclaimed the spot instance {instance_id}: launching a new one and resuming from the "
            f"last checkpoint (recovery {recoveries} of {cfg.max_recoveries})")
        state.update(cfg.job, status="interrupted")
        launch(replace(cfg, resume=True), say)
        say(f"[orch] job {cfg.job} resumed; following its logs again")


def _ensure_key(region: str, job: str, in_use: bool) -> ec2.KeyPairInfo:
    """The job's key pair with its private key on disk (mode 600); created when missing."""
    path = key_path(job)
    existing = ec2.find_key_pair(region, job)
    if path.exists() and (existing or in_use):
        # A running instance keeps its public key even if the key pair object was deleted.
        os.chmod(path, 0o600)
        return existing or ec2.KeyPairInfo(ec2.resource_name(job), None, False)
    if in_use:
        raise FlowError(
            f"The job's instance exists but its private key {path} is missing, so it can't be "
            f"reached. Remove it with `orch teardown {job}` and launch again."
        )
    if existing:  # a key pair whose private key is lost, and no instance uses it: replace it
        ec2.delete_key_pair(region, existing)
    info, material = ec2.create_key_pair(region, job)
    write_private_file(path, material)
    return info


def _launch_local(cfg: LaunchConfig, say: Say) -> Instance:
    record = state.get(cfg.job)
    if record and record.target != "local":
        raise FlowError(f"Job {cfg.job!r} already exists on AWS. Choose another --name.")
    check_dataset(cfg)
    state.update(cfg.job, target="local", status="running")
    if cfg.job_spec is not None:
        from orchestrator import job as job_api
        from orchestrator.trainer_args import budget_from_flag, max_hours_of, with_max_hours

        spec, budget = cfg.job_spec, None
        if cfg.settings.max_hours:  # no watcher here: the trainer's own budget is the cap
            budget = budget_from_flag(cfg.settings.max_hours, max_hours_of(spec.trainer_args))
            spec = replace(spec, trainer_args=with_max_hours(spec.trainer_args, budget.hours))
        with phase("start the job on this machine", say):
            try:
                status = job_api.start_job(None, spec)
            except Exception:
                if record is None:  # nothing was started: don't list a job that never ran
                    state.remove(cfg.job)
                raise
            if budget is not None and not status.already_running:
                status = replace(status, budget=budget.note)
            _say_started(status, cfg.job, say, stop_first=(
                f"`orch teardown {cfg.job} --yes` (its outputs{f' at {status.outputs}' if status.outputs else ''} "
                "are kept, and a launch under this name continues from them, on the same data)"),
                start_over="delete that folder, or choose another --name")
    return Instance(job=cfg.job, provider="local", instance_id="local", state="running",
                    instance_type="local")


def _say_started(status, job: str, say: Say, stop_first: str, start_over: str) -> None:
    """The job's state after a start; what a launch did not apply (the job was running) or continues from."""
    say(f"  {'trainer process' if status.runner == 'process' else 'container'} {status.state}")
    if status.budget:
        say(f"  {status.budget}")
    if status.not_applied:
        say(f"  warning: job {job} was already running, so this launch changed nothing. NOT applied: "
            f"{'; '.join(status.not_applied)}. To run with them: {stop_first} first, then launch again; "
            "or choose another --name.")
    if status.continues_from:
        say(f"  continues from the checkpoint in {status.continues_from} (a launch under an existing name resumes "
            f"it); to start over, {start_over}")


# --- where a job is ---------------------------------------------------------------------------


def endpoint_for(job: str, settings: Settings | None = None) -> SSHEndpoint | None:
    """How to reach the job's machine (None: it runs on this machine). Current settings win."""
    from orchestrator.config import load_settings

    s = settings or load_settings()
    record = state.get(job)
    if record and record.target == "local":
        return None
    region = (record.region if record else None) or s.region
    instance = None
    if record and record.instance_id:
        instance = ec2.describe_instance(region, record.instance_id)
    if instance is None or instance.state == "terminated":
        with _asking_aws(job, region, known=record is not None):
            live = ec2.find_instances(region, job)
        instance = live[0] if live else None
    if instance is None and record is None:
        raise FlowError(_not_here(job, f"Nor is an instance tagged orch:job={job} running in {region}."))
    if instance is None:
        raise FlowError(f"No running instance for job {job!r} in {region}. See `orch list`.")
    host = instance.public_ip or instance.private_ip
    if not host:
        raise FlowError(f"Instance {instance.instance_id} of job {job!r} has no address yet ({instance.state}).")
    default_user = Settings().ssh_user
    user = s.ssh_user if s.ssh_user != default_user else (record.ssh_user if record else default_user)
    proxy = s.ssh_proxy_command or (record.ssh_proxy_command if record else None)
    path = Path(record.key_path) if record and record.key_path else key_path(job)
    if not path.exists():
        raise FlowError(f"The private key of job {job!r} is missing ({path}), so its instance can't be "
                        f"reached. `orch teardown {job}` removes it; launch again for a new key.")
    return SSHEndpoint(host=host, port=22, user=user, key_path=path, proxy_command=proxy,
                       known_hosts=known_hosts_path(), instance_id=instance.instance_id)


def _not_here(job: str, aws: str) -> str:
    """A job that neither the registry here nor AWS knows: that first, then what AWS said (or why it could not)."""
    from orchestrator import local

    outputs = local.job_dir(job) / "outputs"
    kept = f" (A local job {job} torn down earlier left its outputs at {outputs}.)" if outputs.is_dir() else ""
    return f"No job named {job} here (`orch list` shows the jobs). {aws}{kept}"


@contextlib.contextmanager
def _asking_aws(job: str, region: str, known: bool) -> Iterator[None]:
    """A job not in the registry is looked for by its tag on AWS; when AWS can't be asked, say it isn't here first."""
    try:
        yield
    except Exception as e:
        if known or not type(e).__module__.startswith("botocore"):
            raise
        raise FlowError(_not_here(job, f"AWS ({region}) could not be asked for an instance tagged orch:job={job}: "
                                       f"{ec2.friendly_error(e) or e}")) from None


def resolve_job(job: str | None) -> str:
    """The job named, or the only one in the registry."""
    if job:
        return validate_job_name(job)
    jobs = sorted(state.load())
    if len(jobs) == 1:
        return jobs[0]
    if not jobs:
        raise FlowError("No jobs yet. Start one with `orch launch --instance g4dn.2xlarge --name myjob`.")
    raise FlowError(f"Several jobs: {', '.join(jobs)}. Name one, e.g. `orch status {jobs[0]}`.")


@dataclass(frozen=True)
class JobView:
    job: str
    target: str
    state: str  # the cloud's word (running, terminated, ...), "gone"; a local job's trainer state, or "local"
    region: str | None = None
    instance: Instance | None = None
    container: object | None = None  # job.ContainerStatus when asked for and reachable
    note: str = ""


def status(job: str, settings: Settings, container: bool = True) -> JobView:
    record = state.get(job)
    if record and record.target == "local":
        view = JobView(job=job, target="local", state="local")
        return with_container(view, settings) if container else view
    region = (record.region if record else None) or settings.region
    with _asking_aws(job, region, known=record is not None):
        instances = ec2.find_instances(region, job, include_terminated=True)
    live = [i for i in instances if i.state != "terminated"]
    instance = live[0] if live else (instances[0] if instances else None)
    if instance is None:
        if record is None:
            raise FlowError(_not_here(job, f"Nor is anything tagged orch:job={job} in {region}."))
        return JobView(job, "aws", "gone", region, None, None,
                       f"nothing tagged in {region}; `orch teardown {job}` forgets it")
    shown, note = _cloud_state(job, instance, region)
    state.update(job, target="aws", region=region, instance_id=instance.instance_id,
                 instance_type=instance.instance_type, status=shown,
                 public_ip=instance.public_ip, private_ip=instance.private_ip)
    view = JobView(job, "aws", shown, region, instance, None, note)
    return with_container(view, settings) if container else view


def with_container(view: JobView, settings: Settings) -> JobView:
    """The view with its container (asked over SSH for a short while only): `status` prints the cloud part first."""
    if view.target == "local":
        return replace(view, container=_container(None, view.job))
    if view.instance is None or view.instance.state != "running":
        return view
    try:
        return replace(view, container=_container(endpoint_for(view.job, settings), view.job))
    except FlowError as e:
        return replace(view, note=str(e))


def _cloud_state(job: str, instance: Instance, region: str) -> tuple[str, str]:
    """The state to show for a job's instance, and what the user can do about it."""
    if instance.state != "terminated":
        return instance.state, ""
    volumes = ec2.kept_volumes(region, job)
    kept = [v for v in volumes if v.kept]
    volume = (f" Its outputs are on the kept volume {', '.join(v.volume_id for v in kept)} ({kept[0].zone}, "
              f"~/orch/{job}/outputs there): `orch launch --name {job} --resume` restores from it; "
              f"`orch teardown {job}` deletes it (add --keep-volume to keep it).") if kept else ""
    other = [v.volume_id for v in volumes if not v.kept]
    if other:
        volume += (f" Volume {', '.join(other)} was kept at teardown and holds no job outputs (the job was not "
                   f"launched with --keep-volume); it bills until deleted: `orch teardown {job}` deletes it.")
    if instance.state_reason == ec2.SPOT_RECLAIMED:
        return "interrupted", (f"AWS reclaimed the spot instance; its checkpoints are where the job put "
                               f"them. Resume: `orch launch --name {job} --resume`; clean up: `orch teardown {job}`."
                               + volume)
    return "terminated", (f"instance terminated; `orch teardown {job}` removes its key pair and security group."
                          + volume)


def _container(endpoint: SSHEndpoint | None, job: str) -> object | None:
    from orchestrator import job as job_api

    try:
        # A status is a glance: a machine SSH can't reach now (a new IP, still booting) is said so, not waited for.
        return job_api.job_status(endpoint, job, deadline_s=job_api.quick_ssh_deadline_s())
    except NotImplementedError:
        return None
    except Exception as e:  # unreachable, no container yet: the cloud view still stands
        return f"unreachable: {e}"


def list_jobs(settings: Settings, warn: Say = _quiet) -> list[JobView]:
    """Every job in the registry or tagged in the cloud; the registry is updated to match."""
    records = state.load()
    regions = {settings.region} | {r.region for r in records.values() if r.target == "aws" and r.region}
    by_job: dict[str, Instance] = {}
    unreachable: dict[str, str] = {}
    for region in sorted(regions):
        try:
            for instance in ec2.find_instances(region, None, include_terminated=True):
                seen = by_job.get(instance.job)
                # Newest first; a live instance wins over a terminated one.
                replaces_dead = seen is not None and seen.state == "terminated" and instance.state != "terminated"
                if instance.job and (seen is None or replaces_dead):
                    by_job[instance.job] = instance
        except Exception as e:  # no credentials or network: still list what the registry knows
            if not type(e).__module__.startswith("botocore"):
                raise
            unreachable[region] = ec2.friendly_error(e) or str(e)
            if not ec2.no_credentials(e):
                warn(f"warning: could not list {region}: {unreachable[region]}")
            elif len(unreachable) == 1:  # the same for every region: once
                warn("No AWS credentials here, so only this machine's jobs are listed "
                     "(`aws configure` to list the jobs on AWS too).")
    views = []
    for name in sorted(set(records) | set(by_job)):
        record = records.get(name)
        if record and record.target == "local":
            views.append(JobView(name, "local", _local_state(name)))
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
        shown, note = _cloud_state(name, instance, instance.region or region)
        state.update(name, target="aws", region=instance.region, instance_id=instance.instance_id,
                     instance_type=instance.instance_type, spot=instance.spot, status=shown,
                     public_ip=instance.public_ip, private_ip=instance.private_ip)
        views.append(JobView(name, "aws", shown, instance.region, instance, None, note))
    return views


def _local_state(job: str) -> str:
    """A local job's trainer (process or container): running, exited, ...; "local" when it can't be asked."""
    from orchestrator import job as job_api

    try:
        return job_api.job_status(None, job).state
    except Exception:  # the Docker engine went away: the job is still this machine's
        return "local"


# --- teardown ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalJob:
    """What a local job's teardown stops, and what it keeps."""

    trainer: str  # "the container orch-JOB", "the trainer process", or "the trainer" (no record of which)
    outputs: Path


def local_job(job: str) -> LocalJob | None:
    """The local job named (None: it is not one)."""
    record = state.get(job)
    if record is None or record.target != "local":
        return None
    from orchestrator import local

    found = local.load_record(job)
    trainer = ("the trainer" if found is None else "the trainer process" if found.runner == "process"
               else f"the container orch-{job}")
    return LocalJob(trainer=trainer, outputs=local.outputs_dir(job))


def teardown(job: str, settings: Settings, keep_volume: bool = False, say: Say = _quiet) -> TeardownReport:
    """Stop the job, terminate its instance, delete its SG and key pair, and check nothing remains."""
    validate_job_name(job)
    record = state.get(job)
    from orchestrator import job as job_api

    if record and record.target == "local":
        from orchestrator import local

        warnings, stopped = (), None
        try:
            before = job_api.job_status(None, job)
        except Exception:  # the engine went away: stop_job says so below
            before = None
        outputs = Path(before.outputs) if before and before.outputs else local.job_dir(job) / "outputs"
        try:
            job_api.stop_job(None, job)
            if before and before.state in ("running", "restarting", "created", "paused"):
                stopped = "the trainer process" if before.runner == "process" else f"the container orch-{job}"
        except Exception as e:
            warnings = (f"could not stop the local container: {e}",)
        state.remove(job)
        return TeardownReport(job=job, warnings=warnings, local=True, stopped=stopped,
                              kept_outputs=str(outputs) if outputs.is_dir() else None)

    region = (record.region if record else None) or settings.region
    if record is None:  # before any step says it succeeded
        with _asking_aws(job, region, known=False):
            left = ec2.remaining_resources(region, job)
        if not left:
            raise FlowError(_not_here(job, f"Nor is anything tagged orch:job={job} in {region}: nothing to remove."))
    warnings: list[str] = []
    live = ec2.find_instances(region, job)
    if keep_volume:  # first: if AWS refuses, nothing is stopped or terminated
        roots = ec2.keep_root_volumes(region, job)
        for instance in live:
            if instance.tags.get(ec2.TAG_KEEP_VOLUME) != "on" and roots.get(instance.instance_id):
                warnings.append(
                    f"the root volume {', '.join(roots[instance.instance_id])} of {instance.instance_id} is kept, but "
                    f"holds no job outputs: {job} was not launched with --keep-volume, so they were on the instance's "
                    "NVMe disk (where it has one), which goes with it. The volume bills until deleted.")
    if any(i.state == "running" for i in live) and key_path(job).exists():
        # Briefly: an address the security group no longer admits (a new IP) must not hold up the terminate.
        deadline_s = job_api.quick_ssh_deadline_s()
        say(f"… stop the job's container (SSH for up to {deadline_s:g} s)")
        start = time.monotonic()
        try:
            job_api.stop_job(endpoint_for(job, settings), job, deadline_s=deadline_s)
            say(f"✓ stop the job's container ({time.monotonic() - start:.1f}s)")
        except Exception as e:  # the instance is going anyway
            say(f"✗ stop the job's container ({time.monotonic() - start:.1f}s): terminating anyway")
            warnings.append(
                f"could not stop the container before terminating ({type(e).__name__}: {str(e).splitlines()[0]}). "
                "The instance was terminated anyway: its shutdown stops the container (Docker sends the trainer "
                "SIGTERM), but whatever the job wrote since its last checkpoint copy may be lost.")
    with phase("terminate and delete", say):
        report = ec2.terminate_job(region, job, keep_volume=keep_volume, timeout_s=settings.wait_timeout_s,
                                   poll_s=settings.poll_interval_s, log=lambda m: say("  " + m))
    key_path(job).unlink(missing_ok=True)
    # Pinned by address, or by instance id (an endpoint with an instance id: SSM and the like).
    _forget_host_keys({name for i in live for name in (i.public_ip, i.private_ip, i.instance_id) if name})
    if report.remaining:
        state.update(job, status="teardown-incomplete")
    else:
        state.remove(job)
    return replace(report, warnings=tuple(warnings) + report.warnings)


def _forget_host_keys(hosts: set[str]) -> None:
    """Drop pinned host keys of terminated instances: AWS reuses addresses for other machines."""
    path = known_hosts_path()
    if not hosts or not path.exists():
        return
    def names(line: str) -> set[str]:
        field = line.split(" ", 1)[0]
        return {n.split("]:")[0].lstrip("[") for n in field.split(",")}
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not (names(line) & hosts)]
    if len(kept) != len(lines):
        write_private_file(path, "\n".join(kept))


# --- doctor -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: could not tell (a warning)
    detail: str


def doctor(settings: Settings, instance_type: str = "g4dn.2xlarge", spot: bool = False) -> list[Check]:
    from orchestrator import quota

    checks: list[Check] = [Check("region", True, settings.region)]
    try:
        checks.append(Check("aws credentials", True, ec2.caller_identity(settings.region)))
        creds_ok = True
    except Exception as e:
        checks.append(Check("aws credentials", False, ec2.friendly_error(e) or str(e)))
        creds_ok = False
    info = None
    if creds_ok:
        try:
            info = ec2.instance_type_info(settings.region, instance_type)
        except ec2.UnknownInstanceType as e:  # a typo: a launch with it would be refused too
            checks.append(Check("instance type", False, str(e)))
        except Exception as e:
            checks.append(Check("instance type", None, ec2.friendly_error(e) or str(e)))
    if info is not None:
        try:
            q = quota.check_vcpu_quota(settings.region, info.name, info.vcpus, spot)
            if q.ok is False:
                checks.append(Check("vcpu quota", False, quota.fix_message(q, settings.region)))
            elif q.ok is None:
                checks.append(Check("vcpu quota", None, q.detail))
            else:
                checks.append(Check("vcpu quota", True, f"{q.quota_name} ({q.quota_code}): {q.limit:g} vCPUs, "
                                                        f"{q.in_use_vcpus} in use; {instance_type} needs {info.vcpus}"))
        except Exception as e:
            checks.append(Check("vcpu quota", None, ec2.friendly_error(e) or str(e)))
    bad = []
    for path in [state.state_path(), *sorted(keys_dir().glob("*.pem"))] if keys_dir().exists() else [state.state_path()]:
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            bad.append(str(path))
    checks.append(Check("key and state file permissions", not bad,
                        "all mode 600" if not bad else f"too open: {', '.join(bad)}; fix: chmod 600 " + " ".join(bad)))
    checks.append(_tool_check("ssh", "install OpenSSH (apt install openssh-client)"))
    checks.append(_docker_check())
    return checks


def _tool_check(tool: str, fix: str) -> Check:
    path = shutil.which(tool)
    return Check(f"{tool} client", bool(path), path or f"not found; {fix}")


def _docker_check() -> Check:
    if not shutil.which("docker") and not os.path.exists("/var/run/docker.sock"):
        return Check("docker (for --target local)", None, "not found; only needed for --target local")
    try:
        import docker

        client = docker.from_env(timeout=3)
        version = client.version().get("Version", "?")
        client.close()
        return Check("docker (for --target local)", True, f"engine {version}")
    except Exception as e:
        return Check("docker (for --target local)", None, f"engine not reachable ({e}); only needed for --target local")
