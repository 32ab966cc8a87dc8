"""Resolve a launch before anything is created: the plan (`--dry-run` prints it), the data check, the quota."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.cloud import aws, catalog, network, pricing, quota
from orchestrator.config import ConfigError, Settings, validate_job_name
from orchestrator.errors import FlowError
from orchestrator.lifecycle import orch_package
from orchestrator.lifecycle.userdata import bootstrap_script, render_user_data
from orchestrator.records import InstanceTypeInfo, LaunchConfig, LaunchPlan


# --- plan and pre-flight ----------------------------------------------------------------------


def plan(cfg: LaunchConfig, ssh_cidr: str) -> LaunchPlan:
    """Resolve everything a launch needs, reading the cloud but creating nothing."""
    s = cfg.settings
    validate_job_name(cfg.job)
    require_instance_profile(s)
    check_dataset(cfg)
    if bootstrap_script(s) is None and cfg.managed:  # a missing one is refused before the cloud is asked anything
        raise ConfigError("--managed: each instance of the job starts it with infra/bootstrap.sh, and bootstrap_script "
                          "is \"none\" (config.toml or $ORCH_BOOTSTRAP_SCRIPT). Unset it. Nothing was created.")
    if cfg.ami is None:  # by name, before the cloud is asked: with their own AMI, users bring their driver
        for name in cfg.managed or (cfg.instance_type,):
            refuse_unsupported(name, s)
    info = catalog.instance_type_info(s.region, cfg.instance_type)
    ami = catalog.resolve_ami(s.region, s.ami_ssm_parameter, s.ami_owners, s.ami_name_pattern, cfg.ami)
    net = network.network_for(s.region, s.subnet_id, via_proxy=bool(s.ssh_proxy_command))
    zones = catalog.offered_zones(s.region, cfg.instance_type, [zone for zone, _ in net.subnets])
    for other in cfg.managed[1:]:  # a managed job's group may start any of its types: the zones of any
        catalog.instance_type_info(s.region, other)  # a type EC2 doesn't know is refused here
        more = catalog.offered_zones(s.region, other, [zone for zone, _ in net.subnets])
        zones += tuple(z for z in more if z not in zones)
    if not zones:
        where = f"the zone of --subnet-id {s.subnet_id}" if s.subnet_id else f"any zone of {s.region}"
        raise FlowError(f"{cfg.instance_type} is not offered in {where}. Nothing was created. Try another "
                        + ("subnet (in another zone)" if s.subnet_id else "region with --region (e.g. us-east-1, "
                           "us-west-2)") + ".")
    if cfg.zone:
        if cfg.zone not in zones:
            raise FlowError(f"--zone {cfg.zone}: {cfg.instance_type} is offered in {', '.join(zones)} "
                            f"of {s.region} (with a subnet: {net.described}). Pick one of those, or leave --zone out.")
        zones = (cfg.zone,)
    price = pricing.hourly_price(cfg.instance_type, s.region, spot=cfg.spot, live=s.live_prices)
    for other in cfg.managed[1:]:  # the caps and the plan take the dearest type the group may start
        dearer = pricing.hourly_price(other, s.region, spot=cfg.spot, live=s.live_prices)
        if price is not None and (dearer is None or dearer.usd_per_hour > price.usd_per_hour):
            price = dearer
    group, group_note = placement_for(cfg, info)
    if group is not None and not cfg.zone:
        zones = zones[:1]  # a cluster placement group is in one zone: the first that offers the type
    return LaunchPlan(
        job=cfg.job, region=s.region, instance_type=info.name, vcpus=info.vcpus, ami=ami.image_id,
        ami_source=ami.source, spot=cfg.spot, allow_on_demand_fallback=s.allow_on_demand_fallback and not cfg.managed,
        volume_gb=volume_for(cfg, info), volume_throughput=s.volume_throughput, ssh_cidr=ssh_cidr, zones=zones,
        key_name=aws.resource_name(cfg.job), security_group_name=aws.resource_name(cfg.job),
        root_device=ami.root_device_name, iam_instance_profile=s.iam_instance_profile,
        user_data=render_user_data(cfg.job, s, price.usd_per_hour if price else None, managed_values(cfg)),
        price_per_hour=price.usd_per_hour if price else None, gpus=info.gpus, gpu_name=info.gpu_name,
        price_source=price.source if price else None,
        tags=launch_tags(cfg), keep_volume=cfg.keep_volume,
        vpc_id=net.vpc_id, subnets=net.subnets, public_ip=net.public_ip, network=net.described,
        nodes=cfg.nodes, placement_group=group, placement_note=group_note, quota=quota_named(info.name, cfg.spot),
        managed=cfg.managed,
    )


def managed_values(cfg: LaunchConfig) -> dict[str, object] | None:
    """A managed job's user data settings (lifecycle/orch_package.py); None for any other job."""
    if not cfg.managed:
        return None
    return orch_package.boot_values(cfg.job, cfg.settings.checkpoint_bucket, orch_package.build(), int(time.time()))


def quota_named(instance_type: str, spot: bool) -> str:
    code, name = quota.quota_for(instance_type, spot)
    return f"{name} ({code})" if code else ""


def placement_for(cfg: LaunchConfig, info: InstanceTypeInfo) -> tuple[str | None, str]:
    """A `--nodes N` job's cluster placement group (its name), or None and why not."""
    if cfg.nodes <= 1:
        return None, ""
    if info.cluster_placement is False:
        return None, f"none: {info.name} can't join a cluster placement group (the nodes start unplaced)"
    note = "" if info.cluster_placement else f" (EC2 does not say whether {info.name} can join one: AWS refuses if not)"
    return aws.resource_name(cfg.job), note


def refuse_unsupported(instance_type: str, s: Settings) -> None:
    """A type the Deep Learning AMI cannot drive, refused by name with priced alternatives."""
    found = catalog.dlami_unsupported(instance_type)
    if found is None:
        return
    gpu, count = found
    options = []
    for name in catalog.dlami_alternatives(count):
        price = pricing.table_price(name, s.region)
        options.append(f"{name} (${price.usd_per_hour:.3f}/h on-demand, {price.source})" if price else name)
    raise FlowError(
        f"{instance_type} has {gpu} GPUs, which the Deep Learning Base AMI's NVIDIA driver cannot drive: it "
        f"would boot and bill, then fail to start the container. Nothing was created. The closest supported "
        f"types: {'; '.join(options)}. (With your own AMI and driver, pass --ami.)")


def needs_instance_profile(what: str, why: str, otherwise: str = "") -> ConfigError:
    """The refusal for something the instance does in S3 with its own role, when it has none."""
    return ConfigError(
        f"{what} needs --iam-instance-profile: {why}. Nothing was created. Create the profile once with "
        "`orch init --data-bucket BUCKET` (its policy is infra/instance-role-policy.json), then add "
        f"--iam-instance-profile orch-trainer (or set iam_instance_profile in config.toml){otherwise}.")


def require_instance_profile(s: Settings) -> None:
    """The instance copies checkpoints to the bucket with its own role: without one, every copy would fail."""
    if s.checkpoint_bucket and not s.iam_instance_profile:
        raise needs_instance_profile(
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
    if cfg.job_spec.command and not data.startswith("s3://"):
        return  # not `trainer train`: a download `trainer make-dataset` prepares, checked by the command
    if data.startswith(("s3://", "dataset:")):
        if cfg.target == "aws" and not cfg.settings.iam_instance_profile:
            raise needs_instance_profile(
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


def on_demand_plan(cfg: LaunchConfig, p: LaunchPlan) -> LaunchPlan:
    """The spot plan's on-demand fallback: the same launch, its --max-dollars cap at the on-demand price."""
    price = pricing.hourly_price(p.instance_type, p.region, spot=False, live=cfg.settings.live_prices)
    usd = price.usd_per_hour if price else None
    return replace(p, spot=False, user_data=render_user_data(cfg.job, cfg.settings, usd), price_per_hour=usd,
                   price_source=price.source if price else None)


def launch_tags(cfg: LaunchConfig) -> tuple[tuple[str, str], ...]:
    """Job settings that must outlive the state file: a resume on another laptop reads them back."""
    tags = []
    if cfg.settings.checkpoint_bucket:
        tags.append((aws.TAG_CHECKPOINT_BUCKET, cfg.settings.checkpoint_bucket))
    if cfg.settings.iam_instance_profile:
        tags.append((aws.TAG_INSTANCE_PROFILE, cfg.settings.iam_instance_profile))
    if cfg.settings.subnet_id:
        tags.append((aws.TAG_SUBNET, cfg.settings.subnet_id))
    if cfg.recover:
        tags.append((aws.TAG_RECOVER, "on"))
    if cfg.keep_volume:
        tags.append((aws.TAG_KEEP_VOLUME, "on"))
    if cfg.prepares:
        tags.append((aws.TAG_PREPARES, cfg.prepares))
    if cfg.managed:
        tags.append((aws.TAG_MANAGED, aws.resource_name(cfg.job)))
    return tuple(tags)


DATA_ROOM_GB = 120  # on the root volume besides a restored dataset: the AMI's system, the trainer image, checkpoints


def volume_for(cfg: LaunchConfig, info: InstanceTypeInfo) -> int:
    """The root volume: as configured, or bigger when a kept dataset is restored onto it, i.e. when the type has
    no instance store that holds it. Its shards are extracted one by one and deleted (machines/data.py), so the
    restore needs about the dataset's size, not twice it."""
    source = cfg.job_spec.dataset if cfg.job_spec is not None else None
    need_gb = math.ceil(source.bytes * 1.1 / 1e9) if source is not None else 0
    if not need_gb or info.instance_store_gb >= need_gb:
        return cfg.settings.volume_gb
    return min(max(cfg.settings.volume_gb, need_gb + DATA_ROOM_GB), 16384)


@dataclass(frozen=True)
class Preflight:
    """What the quota check found (it raises FlowError when the launch can't go ahead)."""

    summary: str  # one line on the check
    spot_quota_too_low: bool = False  # a spot plan whose fallback is allowed: start on-demand


def preflight(p: LaunchPlan, count: int = 1) -> Preflight:
    """Refuse a launch of `count` instances AWS would refuse for quota; says what was checked."""
    check = quota.check_vcpu_quota(p.region, p.instance_type, p.vcpus * count, p.spot)
    if check.ok is False:
        if p.spot and p.allow_on_demand_fallback:
            od = quota.check_vcpu_quota(p.region, p.instance_type, p.vcpus * count, False)
            if od.ok is not False:
                return Preflight(f"spot quota too low ({check.limit:g}); starting on-demand (fallback allowed)", True)
        raise FlowError(quota.fix_message(check, p.region))
    if check.ok is None:
        return Preflight(f"quota not checked: {check.detail}")
    return Preflight(f"{check.quota_name}: {check.in_use_vcpus}+{check.needed_vcpus} of {check.limit:g} vCPUs")


def dry_run(cfg: LaunchConfig) -> LaunchPlan | None:
    """What the launch would create, checked as a launch checks it; None on this machine (nothing to create)."""
    if cfg.target == "local":
        check_dataset(cfg)
        return None
    return plan(cfg, cfg.settings.ssh_cidr or "<your public IP>/32 (detected at launch)")
