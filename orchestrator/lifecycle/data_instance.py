"""`orch data prepare --target aws`: a dataset prepared on an instance, from the files as downloaded, and kept
in the bucket; the laptop sends at most the download (once), never the prepared dataset.

The preparing is a job like any other, named `data-NAME` (tagged, listed, torn down like one; its tag
orch:prepares says what it prepares, so a rerun carries on only where the same is prepared, and a job of
that name that is not a preparing is never taken over): a CPU
instance (`--instance`, default DEFAULT_INSTANCE) gets the download (a folder here, synced; an s3://
prefix, copied there with its role; or kaggle:COMPETITION, downloaded there with the user's token,
which goes only into a mode-600 file there, removed once the download ends), and its container runs `trainer make-dataset` (`trainer prepare`
with all its vCPUs, checked as it ends, then `trainer pack`), its progress streamed here. Then the
instance uploads the shards with its role under a new version of the dataset, this machine writes the
description that makes them the dataset and removes any older version, the instance is torn down, and
the command says what it cost.

A cut or a Ctrl-C leaves the instance preparing: the same command attaches to it again (the trainer
resumes its work folder if the container had stopped), uploads and tears it down. An instance whose
preparing ended shuts itself down `autostop_minutes` later, and its work with it.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.cloud import instances, pricing
from orchestrator.cloud.aws import TAG_PREPARES
from orchestrator.config import ConfigError, Settings
from orchestrator.errors import FlowError
from orchestrator.job import control
from orchestrator.job.logs import follow
from orchestrator.labels import LABEL_OUTPUTS
from orchestrator.lifecycle import datasets, machines
from orchestrator.lifecycle.datasets import PrepareRequest
from orchestrator.lifecycle.kaggle import read_token
from orchestrator.lifecycle.launch import check_can_launch, launch
from orchestrator.lifecycle.progress import Say, phase, quiet
from orchestrator.lifecycle.teardown import teardown
from orchestrator.machines.data import upload_dataset
from orchestrator.records import DatasetInfo, JobSpec, LaunchConfig

DEFAULT_INSTANCE = "c6i.4xlarge"  # 16 vCPUs for the resize, no GPU: about $0.68/h on demand in us-east-1


def job_of(name: str) -> str:
    """data-NAME; a name too long for a job's 40 characters keeps its start and a hash of the whole."""
    if len(name) <= 35:
        return f"data-{name}"
    return f"data-{name[:26].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def command(req: PrepareRequest) -> tuple[str, ...]:
    """`trainer make-dataset` in the container: the download at /data, the work and the shards in /outputs."""
    return ("make-dataset", req.kind, "--source", "/data", "--work", "/outputs/prepared", "--out", "/outputs/shards",
            *datasets.trainer_options(req))


IMAGENET_FROM_S3_GB = 500  # 147 GB of archives, the prepared images and their shards, with room to spare


def volume_gb(kind: str, data: str, configured: int) -> int:
    """A disk for the download, what is prepared from it and its shards: 2.5 times a folder's size (plus
    room for the system), ImageNet from S3 IMAGENET_FROM_S3_GB; never less than configured."""
    if data.startswith(("s3://", "kaggle:")):
        need = IMAGENET_FROM_S3_GB if kind == "imagenet" else 0
    else:
        size = sum(p.stat().st_size for p in Path(data).rglob("*") if p.is_file())
        need = math.ceil(size * 2.5 / 1e9) + 40
    return min(max(configured, need), 16384)


def prepare_dataset(req: PrepareRequest, s: Settings, say: Say = quiet) -> DatasetInfo:
    """`orch data prepare`: here (datasets.prepare) or, with --target aws, on an instance."""
    if req.target != "aws":
        return datasets.prepare(req, say)
    datasets.check(req)
    if req.source.startswith("kaggle:"):
        read_token()  # no token: refused before anything is created
    return datasets.with_cost(prepare_on_instance(req, datasets.new_bucket_version(req), s, say))


def ensure_prepared(req: PrepareRequest, s: Settings, say: Say = quiet,
                    training: LaunchConfig | None = None) -> DatasetInfo:
    """`orch launch --prepare`: the dataset kept under req.name, prepared first unless it is kept already (in the
    bucket, or here for --target local): the next job on the same download does not prepare it again. The
    `training` launch is checked (plan, quota) before any preparing is paid for."""
    found = datasets.find(req.name, req.bucket, req.region)
    if found is not None and (req.target == "local" or found.location.startswith("s3://")):
        asked = datasets.options_of(req)
        if (found.kind, found.options) != (req.kind, asked):
            raise ConfigError(f"dataset {req.name} is kept already, as {found.kind} {found.options or ''} from "
                              f"{found.source}, not {req.kind} {asked or ''}: name this one with --dataset-name, or "
                              f"`orch data rm {req.name}` first")
        say(f"dataset {req.name} is kept already ({found.location}, {found.train_images:,} train images): not "
            "prepared again (`orch data rm` it, or --dataset-name, to make another)")
        return found
    if training is not None:
        check_can_launch(training, say)
    return prepare_dataset(req, s, say)


def digest(req: PrepareRequest, data: str) -> str:
    """What a preparing instance prepares (name, kind, download, options), as its orch:prepares tag: a rerun
    carries on only on an instance preparing the same."""
    what = json.dumps([req.name, req.kind, data, datasets.options_of(req)], sort_keys=True)
    return hashlib.sha256(what.encode()).hexdigest()[:32]


def _refuse_other_work(job: str, tag: str, req: PrepareRequest, region: str) -> None:
    """A live instance of `job` that is not preparing exactly `req` is never reused, nor taken over."""
    for found in instances.find_instances(region, job):
        if found.state in ("shutting-down", "terminated"):
            continue
        theirs = found.tags.get(TAG_PREPARES)
        if theirs is None:
            raise ConfigError(f"job {job} ({found.instance_id}) exists and is not the preparing of a dataset: it "
                              f"was launched by `orch launch --name {job}`. Name the dataset otherwise, or `orch "
                              f"teardown {job}` first if it is not needed.")
        if theirs != tag:
            raise ConfigError(f"{job} ({found.instance_id}) is preparing {req.name} from another download or with "
                              f"other options than these, and its work would not fit them. `orch teardown {job}` "
                              "first (its download and work go with it), or name this dataset otherwise.")


def prepare_on_instance(req: PrepareRequest, info: DatasetInfo, s: Settings, say: Say) -> DatasetInfo:
    """Prepare `req` on an instance and keep it as `info` (a new version) in the bucket; the info kept."""
    job = job_of(req.name)
    data = datasets.data_of(req.source)
    tag = digest(req, data)
    _refuse_other_work(job, tag, req, s.region)
    token = None
    if data.startswith("kaggle:"):
        token, warning = read_token()
        if warning:
            say(f"warning: {warning}")
    spec = JobSpec(job=job, data=data, gpus=False, max_restarts=0,  # a rerun resumes; a retry repeats
                   command=command(req), kaggle=token)
    cfg = LaunchConfig(job=job, instance_type=req.instance or DEFAULT_INSTANCE, job_spec=spec, prepares=tag,
                       # The training launch's caps are not the preparing's: a capped prepare would stop half way.
                       settings=replace(s, volume_gb=volume_gb(req.kind, spec.data, s.volume_gb), max_hours=None,
                                        max_dollars=None))
    instance = launch(cfg, say)
    machine = machines.machine_for(job, s)
    with phase(f"prepare {req.kind} on {instance.instance_id} (Ctrl-C leaves it preparing: the same command "
               "attaches again)", say):
        code = follow(machine, follow=True, out=sys.stderr)
    if code != 0:
        raise FlowError(f"preparing {req.name} on {instance.instance_id} failed (exit {code}; its output is above). "
                        f"The instance keeps what was prepared: fix the cause and run the same command to carry on, "
                        f"or `orch teardown {job}` to remove it (and its work).")
    with phase(f"upload the shards to {datasets.shards_uri(info)} (with the instance's role)", say):
        with control.trainer_on(machine) as (session, runner):
            outputs = runner.state().labels.get(LABEL_OUTPUTS)
            if not outputs:
                raise FlowError(f"the container of {job} is gone, and its outputs with it: run the same command "
                                "again to prepare anew")
            upload_dataset(session, f"{outputs}/shards", datasets.shards_uri(info), say)
    info = replace(info, **datasets.summary_in_bucket(info, s.region))
    datasets.write_description(info, s.region)
    hours = _hours_since(instance.launched_at)
    price = pricing.hourly_price(instance.instance_type or cfg.instance_type, s.region, spot=instance.spot,
                                 live=s.live_prices)
    with phase(f"tear down {job}", say):
        teardown(job, s, say=say)
    took = f"{hours * 60:.0f} min" if hours is not None and hours < 1 else f"{hours:.1f} h"
    cost = (f"about ${price.usd_per_hour * hours:,.2f} ({took} of {instance.instance_type} at "
            f"${price.usd_per_hour:.3f}/h, {price.source}; the volume and transfers add little)"
            if price and hours is not None else "unknown (no price known for it)")
    say(f"preparing on {instance.instance_type} cost {cost}")
    return info


def _hours_since(launched_at: str | None) -> float | None:
    if not launched_at:
        return None
    try:
        start = datetime.fromisoformat(launched_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - start).total_seconds() / 3600)
