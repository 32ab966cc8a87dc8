"""A managed job's spec as a file in the bucket (issue 24): what an instance the job's Auto Scaling group starts
reads to set itself up, with nothing from the laptop (orchestrator/lifecycle/self_start.py).

    s3://BUCKET/orch-jobs/JOB/spec.json     {"schema": 1, "job": ..., "data": ..., "trainer_args": [...], ...}

It holds no secret: a job with --env values or a Kaggle token is refused here (they go to a machine
only from the laptop, in a mode-600 file). Read back, every field is checked as the laptop checked
it at launch (a job name, a dataset's shard names, an s3:// URI), so a spec edited in the bucket
can't name a path outside the job's folders.
"""
from __future__ import annotations

import json
import re

from orchestrator.config import ConfigError, validate_job_name
from orchestrator.dataset_store import SHARD_NAME
from orchestrator.records import DatasetSource, ImageRegistry, JobSpec, Restore

SCHEMA = 1
PREFIX = "orch-jobs"
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")


def spec_uri(bucket: str, job: str) -> str:
    """Where the job's spec is kept: s3://BUCKET/orch-jobs/JOB/spec.json (BUCKET as s3://NAME[/...])."""
    return f"{bucket.rstrip('/')}/{PREFIX}/{validate_job_name(job)}/spec.json"


def to_json(spec: JobSpec, region: str) -> dict:
    """The spec as the bucket keeps it; refused (ConfigError) when it holds what a bucket must not."""
    if spec.env:
        raise ConfigError("a managed job's machines start from its spec in the bucket, and --env values are never "
                          "written there: pass them another way (a file in your own image), or leave out --managed")
    if spec.kaggle is not None or spec.data.startswith("kaggle:"):
        raise ConfigError("a managed job trains on a kept dataset (`--data dataset:NAME`), not a Kaggle download")
    if not (spec.data == "demo" or spec.data.startswith(("s3://", "dataset:"))):
        raise ConfigError(f"--data {spec.data}: a managed job's replacement instance reads its data from the bucket: "
                          "keep it there first (`orch data prepare NAME ... --bucket s3://...`, then --data "
                          "dataset:NAME), or give an s3:// URI")
    ds = spec.dataset
    return {
        "schema": SCHEMA, "job": spec.job, "region": region, "data": spec.data, "image": spec.image,
        "trainer_args": list(spec.trainer_args), "gpus": spec.gpus, "max_restarts": spec.max_restarts,
        "remote_root": spec.remote_root, "autostop_minutes": spec.autostop_minutes,
        "checkpoint_bucket": spec.restore.bucket if spec.restore else None,
        "registry": {"repository": spec.registry.repository, "region": spec.registry.region} if spec.registry else None,
        "dataset": {"name": ds.name, "uri": ds.uri, "shards": [list(s) for s in ds.shards],
                    "manifest_key": ds.manifest_key} if ds else None,
    }


def from_json(raw: object, where: str) -> tuple[JobSpec, str]:
    """(the spec, its region) from what the bucket holds, each field checked; ConfigError names what is wrong."""
    def refuse(what: str) -> ConfigError:
        return ConfigError(f"{where}: {what}: refused")

    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise refuse(f"not an orch job spec of schema {SCHEMA}")
    try:
        job = validate_job_name(raw.get("job"))
    except (ConfigError, TypeError):
        raise refuse("its job name is not one orch gives") from None
    args = raw.get("trainer_args")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise refuse("trainer_args is not a list of strings")
    data = raw.get("data")
    if not isinstance(data, str) or not (data == "demo" or S3_URI.fullmatch(data) or data.startswith("dataset:")):
        raise refuse("data is not demo, an s3:// URI or dataset:NAME")
    for name in ("checkpoint_bucket",):
        if raw.get(name) is not None and not (isinstance(raw[name], str) and S3_URI.fullmatch(raw[name])):
            raise refuse(f"{name} is not an s3:// URI")
    dataset = None
    if (d := raw.get("dataset")) is not None:
        shards = d.get("shards") if isinstance(d, dict) else None
        if not (isinstance(shards, list) and shards and isinstance(d.get("uri"), str) and S3_URI.fullmatch(d["uri"])
                and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and SHARD_NAME.fullmatch(s[0])
                        and isinstance(s[1], int) and s[1] >= 0 for s in shards)):
            raise refuse("its dataset names shards `trainer pack` would not write")
        if not re.fullmatch(r"[0-9a-f]{64}", str(d.get("manifest_key", ""))) or \
                not re.fullmatch(r"[\w.-]{1,128}", str(d.get("name", ""))):
            raise refuse("its dataset's name or manifest key is not one orch writes")
        dataset = DatasetSource(str(d.get("name", "")), d["uri"], tuple((s[0], s[1]) for s in shards),
                                str(d.get("manifest_key", "")))
    registry = None
    if (r := raw.get("registry")) is not None:
        if not (isinstance(r, dict) and isinstance(r.get("repository"), str) and isinstance(r.get("region"), str)):
            raise refuse("registry is not a repository and a region")
        registry = ImageRegistry(r["repository"], r["region"])
    root = raw.get("remote_root")
    if root is not None and not (isinstance(root, str) and re.fullmatch(r"(/|~/)[\w./-]*", root) and ".." not in root):
        raise refuse("remote_root is not a folder path")
    region = raw.get("region")
    if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise refuse("region is not an AWS region")
    bucket = raw.get("checkpoint_bucket")
    spec = JobSpec(job=job, data=data, image=raw.get("image") if isinstance(raw.get("image"), str) else None,
                   trainer_args=tuple(args), gpus=raw.get("gpus") is not False,
                   max_restarts=raw["max_restarts"] if isinstance(raw.get("max_restarts"), int) else 5,
                   remote_root=root,
                   autostop_minutes=raw.get("autostop_minutes") if isinstance(raw.get("autostop_minutes"), int)
                   else None,
                   restore=Restore(bucket=bucket) if bucket else None, registry=registry, dataset=dataset)
    return spec, region


def dumps(spec: JobSpec, region: str) -> bytes:
    return json.dumps(to_json(spec, region), indent=1).encode()
