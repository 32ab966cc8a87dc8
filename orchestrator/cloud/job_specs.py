"""A managed job's spec, orch's package and checkpoints in S3: put there by `orch launch --managed`, read by the job's
instances, deleted by `orch teardown`."""
from __future__ import annotations

import os
from pathlib import Path

from orchestrator.cloud.aws import client, error_code
from orchestrator.cloud.datasets import split

MAX_SPEC_BYTES = 1 << 20  # a spec is a few KB: a larger object is not one orch wrote
# S3 answers a missing object with 403, not 404, to a caller without s3:ListBucket on the bucket (infra/iam-policy.json
# grants it for orch's prefixes only): for a checkpoint's name that means "not there" as far as orch can tell.
ABSENT = ("NoSuchKey", "404", "NotFound", "NoSuchBucket", "403", "AccessDenied", "Forbidden")


def get_small(region: str, uri: str) -> bytes | None:
    """A small object's bytes (a spec, a .sha256: the first MiB at most); None when there is none."""
    bucket, key = split(uri)
    try:
        got = client("s3", region).get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_SPEC_BYTES}")
    except Exception as e:
        if error_code(e) in ABSENT:
            return None
        raise
    return got["Body"].read()


def exists(region: str, uri: str) -> bool:
    bucket, key = split(uri)
    try:
        client("s3", region).head_object(Bucket=bucket, Key=key)
    except Exception as e:
        if error_code(e) in ABSENT:
            return False
        raise
    return True


def object_sha256(region: str, uri: str) -> str | None:
    """The SHA-256 infra/bootstrap.sh's watcher puts on a checkpoint object (its metadata, written with it in one
    PUT); None when the object has none (or is not there)."""
    bucket, key = split(uri)
    try:
        meta = client("s3", region).head_object(Bucket=bucket, Key=key).get("Metadata", {})
    except Exception as e:
        if error_code(e) in ABSENT:
            return None
        raise
    value = str(meta.get("sha256", "")).lower()
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def put(region: str, uri: str, body: bytes) -> None:
    bucket, key = split(uri)
    client("s3", region).put_object(Bucket=bucket, Key=key, Body=body)


def delete_folder(region: str, uri: str) -> list[str]:
    """Delete what is kept under `uri`/ (a managed job's spec and orch's package); the keys deleted."""
    bucket, folder = split(uri)
    prefix = folder + "/"
    s3 = client("s3", region)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
    return keys


def download(region: str, uri: str, local: Path) -> int | None:
    """`uri` into `local` (through `local`.part, renamed when whole); its size, or None when there is no such object."""
    bucket, key = split(uri)
    part = local.with_name(local.name + ".part")
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        client("s3", region).download_file(bucket, key, str(part))
    except Exception as e:
        part.unlink(missing_ok=True)
        if error_code(e) in ABSENT:
            return None
        raise
    os.replace(part, local)
    return local.stat().st_size
