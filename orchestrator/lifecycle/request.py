"""`orch launch`'s flags as given, turned into one resolved `LaunchConfig`: the rules live here, not in the CLI.

`--resume` takes every option not given from the job's first launch (the state file, else its
instance's tags); then each rule that can refuse a launch before anything is created is applied,
and the settings are layered (defaults < config.toml < ORCH_* < flags, config.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.config import ConfigError, load_settings, validate_job_name
from orchestrator.lifecycle.machines import resolve_job
from orchestrator.lifecycle.resume import recorded_launch
from orchestrator.job.env import parse_env
from orchestrator.lifecycle.datasets import PrepareRequest, dataset_name_for
from orchestrator.records import JobSpec, LaunchConfig
from orchestrator.trainer_args import check_trainer_args

TARGETS = ("aws", "local")


@dataclass(frozen=True)
class LaunchRequest:
    """What the user typed; None means "not given" (a resume then takes the first launch's value)."""

    trainer_args: tuple[str, ...] = ()
    instance: str | None = None
    name: str | None = None
    region: str | None = None
    zone: str | None = None
    spot: bool | None = None
    on_demand_fallback: bool | None = None
    volume_gb: int | None = None
    volume_throughput: int | None = None
    ami: str | None = None
    dry_run: bool = False
    ssh_cidr: str | None = None
    ssh_user: str | None = None
    ssh_proxy_command: str | None = None
    iam_instance_profile: str | None = None
    subnet_id: str | None = None
    autostop_minutes: int | None = None
    max_hours: float | None = None
    max_dollars: float | None = None
    checkpoint_bucket: str | None = None
    target: str = "aws"
    data: str | None = None
    image: str | None = None
    gpus: bool | None = None
    remote_root: str | None = None
    resume: bool = False
    resume_from: str | None = None
    recover: bool | None = None
    max_recoveries: int | None = None
    keep_volume: bool | None = None
    bucket: str | None = None
    env: tuple[str, ...] = field(default=(), repr=False)  # --env KEY=VALUE, as typed (values: never recorded)
    env_files: tuple[str, ...] = ()  # --env-file FILE
    prepare: str | None = None  # --prepare KIND: --data is a download, prepared and kept first (then dataset:NAME)
    resize_short: int | None = None  # with --prepare
    resize_short_train: int | None = None  # with --prepare: train/ alone at this short side
    subset_percent: float | None = None  # with --prepare
    dataset_name: str | None = None  # with --prepare: else named after the source
    nodes: int | None = None  # --nodes N: one run over N instances
    managed: bool = False  # --managed: an Auto Scaling group of one keeps the job's instance (lifecycle/managed.py)


DEMO_ARGS = ("--recipe", "demo")


@dataclass(frozen=True)
class Launch:
    config: LaunchConfig
    name_was_made_up: bool  # job-DATE-TIME: the same command again would make another
    warnings: tuple[str, ...] = ()
    prepare: PrepareRequest | None = None  # --prepare: the dataset made (or found kept) before the job starts


def with_recorded(req: LaunchRequest) -> LaunchRequest:
    """`--resume`: the options not given, from the job's first launch."""
    name = resolve_job(req.name)
    recorded = recorded_launch(name, load_settings(region=req.region))
    if recorded is None and not (req.instance and req.data):
        raise ConfigError(f"--resume: job {name!r} is not in the registry and has no tagged instance, so "
                          "there is nothing to take its settings from. Pass them: --instance TYPE --data "
                          "PATH|demo|s3://... -- TRAINER ARGS (and --resume-from DIR).")
    if recorded is None:
        return replace(req, name=name)

    def given(value, fallback):
        return value if value is not None else fallback

    return replace(
        req, name=name, instance=req.instance or recorded.instance_type, region=req.region or recorded.region,
        spot=given(req.spot, recorded.spot), data=req.data or recorded.data,
        trainer_args=req.trainer_args or tuple(recorded.trainer_args), image=req.image or recorded.image,
        gpus=given(req.gpus, recorded.gpus), checkpoint_bucket=req.checkpoint_bucket or recorded.checkpoint_bucket,
        iam_instance_profile=req.iam_instance_profile or recorded.iam_instance_profile,
        subnet_id=req.subnet_id or recorded.subnet_id,
        volume_gb=req.volume_gb or recorded.volume_gb, remote_root=req.remote_root or recorded.remote_root,
        recover=given(req.recover, recorded.recover), max_recoveries=given(req.max_recoveries, recorded.max_recoveries),
        keep_volume=given(req.keep_volume, recorded.keep_volume), nodes=given(req.nodes, recorded.nodes))


def configure(req: LaunchRequest) -> Launch:
    """The launch the flags ask for, resolved; `ConfigError` (exit 2) for any flag the launch would refuse."""
    if req.resume_from is not None and not req.resume:
        raise ConfigError("--resume-from is for --resume, e.g. orch launch --name JOB --resume --resume-from DIR")
    if req.resume and req.target == "aws":
        req = with_recorded(req)
    spot, gpus, recover, keep_volume = bool(req.spot), req.gpus is not False, bool(req.recover), bool(req.keep_volume)
    max_recoveries = 3 if req.max_recoveries is None else req.max_recoveries
    if max_recoveries < 0:
        raise ConfigError("--max-recoveries must be 0 or more, e.g. --max-recoveries 3")
    if recover and not spot:
        raise ConfigError("--recover is for --spot jobs: AWS does not reclaim on-demand instances")
    if recover and not req.data:
        raise ConfigError("--recover follows a training job: add --data PATH|demo|s3://...")
    if req.target not in TARGETS:
        raise ConfigError(f"--target {req.target!r}: use aws or local")
    if keep_volume and req.target != "aws":
        raise ConfigError("--keep-volume is for --target aws: a local job's outputs already stay on this machine")
    if req.target == "aws" and not req.instance:
        raise ConfigError("--instance is required for --target aws, e.g. --instance g4dn.2xlarge")
    nodes = check_nodes(req)
    types = instance_types(req)
    trainer_env = parse_env(req.env, [Path(f) for f in req.env_files])
    if trainer_env and not req.data:
        raise ConfigError("--env and --env-file are for the trainer: add --data PATH|demo|s3://...")
    if req.trainer_args and not req.data:
        raise ConfigError("trainer arguments after `--` need a dataset: add --data PATH|demo|s3://...")
    settings = load_settings(
        region=req.region, volume_gb=req.volume_gb, volume_throughput=req.volume_throughput, ssh_cidr=req.ssh_cidr,
        ssh_user=req.ssh_user, ssh_proxy_command=req.ssh_proxy_command, iam_instance_profile=req.iam_instance_profile,
        subnet_id=req.subnet_id,        allow_on_demand_fallback=req.on_demand_fallback, autostop_minutes=req.autostop_minutes,
        max_hours=req.max_hours, max_dollars=req.max_dollars, checkpoint_bucket=req.checkpoint_bucket,
        remote_root=req.remote_root, bucket=req.bucket)
    prepare = None
    if req.prepare is not None:
        prepare = prepare_request(req, settings)
        req = replace(req, data=f"dataset:{prepare.name}")
    elif req.data and req.data.startswith("kaggle:"):
        raise ConfigError(f"--data {req.data}: a Kaggle download is prepared first: add --prepare KIND, e.g. "
                          f"--data {req.data} --prepare imagenet --resize-short 256")
    elif req.resize_short or req.resize_short_train or req.subset_percent or req.dataset_name:
        raise ConfigError("--resize-short, --resize-short-train, --subset-percent and --dataset-name go with "
                          "--prepare KIND, e.g. "
                          "--data ~/downloads/imagenet --prepare imagenet --resize-short 256")
    if req.data and req.data.startswith("dataset:") and req.target == "aws" and not settings.bucket:
        raise ConfigError(f"--data {req.data} on an instance needs the bucket it is kept in: --bucket s3://NAME "
                          "(or bucket in config.toml)")
    if req.managed:
        check_managed(req, settings, bool(trainer_env))
    # Checked here, for every target and --dry-run alike; "" is a refused name, not "make one up".
    job = validate_job_name(req.name) if req.name is not None else time.strftime("job-%Y%m%d-%H%M%S")
    spec = None
    warnings = []
    if nodes > 1 and spot and not settings.checkpoint_bucket:
        warnings.append(f"--nodes {nodes} --spot without --checkpoint-bucket: node 0 holds the run's checkpoints, and "
                        "if AWS reclaims it they go with it (a resume then starts over). Add --checkpoint-bucket "
                        "s3://BUCKET/PREFIX (and --iam-instance-profile).")
    if req.data == "demo" and not req.trainer_args and req.image is None:
        # The trainer's defaults are ImageNet's (ResNet-50, 90 epochs): over an hour on the demo images.
        req = replace(req, trainer_args=DEMO_ARGS)
        warnings.append(f"--data demo: training the demo recipe (`-- {' '.join(DEMO_ARGS)}`); "
                        "pass trainer arguments after `--` to train something else")
    if req.data:
        check_trainer_args(req.trainer_args, check_options=req.image is None,
                           data=req.data if req.target == "aws" else None)
        if trainer_env and req.image:
            warnings.append(f"--image {req.image}: its program gets the --env values only if it reads the JSON file "
                            "$TRAINER_ENV_FILE names (orch's trainer does)")
        spec = JobSpec(job=job, data=req.data, image=req.image, trainer_args=tuple(req.trainer_args), gpus=gpus,
                       env=trainer_env,
                       autostop_minutes=settings.autostop_minutes if req.target == "aws" else None)
    # The flag only: a max_dollars in config.toml or ORCH_MAX_DOLLARS is a standing cap for AWS launches.
    if req.target == "local" and req.max_dollars is not None:
        cap = (f"--max-hours {req.max_hours:g} caps the run's time" if req.max_hours
               else "use --max-hours to cap the run's time")
        warnings.append(f"--max-dollars has no effect on the local target (no hourly price); {cap}")
    config = LaunchConfig(job=job, instance_type=types[0] if types else "local", settings=settings, spot=spot, zone=req.zone,
                          ami=req.ami, dry_run=req.dry_run, target=req.target, job_spec=spec, resume=req.resume,
                          resume_from=req.resume_from, recover=recover, max_recoveries=max_recoveries,
                          keep_volume=keep_volume, nodes=nodes, managed=types if req.managed else ())
    return Launch(config, name_was_made_up=req.name is None, warnings=tuple(warnings), prepare=prepare)


def prepare_request(req: LaunchRequest, settings) -> PrepareRequest:
    """--prepare KIND: what `orch data prepare` is asked first; --data is the download (a folder, s3://, kaggle:)."""
    if not req.data or req.data == "demo" or req.data.startswith("dataset:"):
        raise ConfigError("--prepare KIND makes a dataset from a download: --data is its folder, s3:// prefix or "
                          "kaggle:COMPETITION, e.g. --data ~/downloads/imagenet --prepare imagenet")
    if req.resume:
        raise ConfigError("--prepare is for a job's first launch: a --resume trains on the dataset it was launched "
                          "with")
    name = req.dataset_name if req.dataset_name is not None else dataset_name_for(
        req.data, req.resize_short, req.subset_percent, resize_short_train=req.resize_short_train)
    return PrepareRequest(name=name, kind=req.prepare, source=req.data, resize_short=req.resize_short,
                          resize_short_train=req.resize_short_train, subset_percent=req.subset_percent,
                          target=req.target, bucket=settings.bucket if req.target == "aws" else None,
                          region=settings.region)



def check_nodes(req: LaunchRequest) -> int:
    """--nodes N: what one run over N instances can't be launched with yet, refused before anything is made."""
    nodes = 1 if req.nodes is None else req.nodes
    if nodes < 1:
        raise ConfigError(f"--nodes {nodes}: give 1 or more, e.g. --nodes 2")
    if nodes == 1:
        return 1
    refused = [(bool(req.keep_volume), "--keep-volume (node 0's outputs: use --checkpoint-bucket)"),
               (bool(req.recover), "--recover"),
               (bool(req.image), "--image (the nodes meet through orch's trainer: `trainer train --nnodes`)"),
               (req.data is None, "no --data (several instances are for one training run)")]
    for refuse, what in refused:
        if refuse:
            raise ConfigError(f"--nodes {nodes} does not go with {what}. One instance per job otherwise: leave "
                              "--nodes out.")
    return nodes


def instance_types(req: LaunchRequest) -> tuple[str, ...]:
    """--instance TYPE, or with --managed TYPE,OTHER,...: the types the job may run on, the first preferred."""
    types = tuple(t.strip() for t in (req.instance or "").split(",")) if req.instance else ()
    if any(not t for t in types) or len(set(types)) != len(types):
        raise ConfigError(f"--instance {req.instance}: give a type, or with --managed distinct types separated by "
                          "commas, e.g. --instance g4dn.2xlarge,g5.2xlarge")
    if len(types) > 1 and not req.managed:
        raise ConfigError(f"--instance {req.instance}: several types are for --managed (its Auto Scaling group picks "
                          "the one with spot capacity); otherwise give one, e.g. --instance g4dn.2xlarge")
    return types


def check_managed(req: LaunchRequest, settings, has_env: bool) -> None:
    """--managed: a replacement instance starts the job from the checkpoint bucket alone, so what it can't get
    from there is refused before anything is made."""
    refused = [(req.target != "aws", "--target local (AWS keeps the job's instance)"),
               ((req.nodes or 1) > 1, "--nodes (one instance per managed job)"),
               (bool(req.recover), "--recover (the group replaces the instance without this terminal)"),
               (bool(req.keep_volume), "--keep-volume (a replacement starts on a new volume: use --checkpoint-bucket)"),
               (req.resume_from is not None, "--resume-from (a replacement restores from --checkpoint-bucket)"),
               (has_env, "--env/--env-file (values are never written to the bucket a replacement reads)"),
               (req.on_demand_fallback is True, "--on-demand-fallback (an Auto Scaling group does not fall back by "
                                                "itself: give it more types, --instance g4dn.2xlarge,g5.2xlarge, or "
                                                "leave out --spot for an on-demand group)")]
    for refuse, what in refused:
        if refuse:
            raise ConfigError(f"--managed does not go with {what}.")
    if not req.data:
        raise ConfigError("--managed keeps a training job running: add --data dataset:NAME|s3://...|demo")
    if not (req.data == "demo" or req.data.startswith(("s3://", "dataset:"))):
        raise ConfigError(f"--data {req.data}: a managed job's replacement instance reads its data from S3: keep it "
                          "there first (`orch data prepare NAME ... --bucket s3://...`, then --data dataset:NAME), or "
                          "give an s3:// URI")
    if not settings.checkpoint_bucket:
        raise ConfigError("--managed needs --checkpoint-bucket s3://BUCKET/PREFIX: the job's spec is kept there and "
                          "each replacement instance resumes from the newest checkpoint there")
