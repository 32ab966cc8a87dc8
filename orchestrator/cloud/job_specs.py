"""A managed job's spec and checkpoints in S3, as the job's instances read them."""
from __future__ import annotations

from orchestrator.cloud.aws import client, error_code
from orchestrator.cloud.datasets import split

MAX_SPEC_BYTES = 1 << 20  # a spec is a few KB: a larger object is not one orch wrote


def get_spec(region: str, uri: str) -> bytes | None:
    """The spec's bytes; None when there is none."""
    bucket, key = split(uri)
    try:
        got = client("s3", region).get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_SPEC_BYTES}")
    except Exception as e:
        if error_code(e) in ("NoSuchKey", "404", "NoSuchBucket"):
            return None
        raise
    return got["Body"].read()


def exists(region: str, uri: str) -> bool:
    bucket, key = split(uri)
    try:
        client("s3", region).head_object(Bucket=bucket, Key=key)
    except Exception as e:
        if error_code(e) in ("NoSuchKey", "404", "NotFound"):
            return False
        raise
    return True
