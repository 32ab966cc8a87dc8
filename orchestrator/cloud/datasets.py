"""Datasets kept in the user's bucket, under one prefix: `s3://BUCKET/orch-datasets/<name>/`.

    shards/manifest.json, shards/shard-NNNNN.tar    as `trainer pack` wrote them
    dataset.json                                    orch's description (records.DatasetInfo), written last

The fixed prefix is what lets infra/iam-policy.json allow these calls on any bucket the user names,
and nothing outside `orch-datasets/`. Transfers run `PARALLEL` at a time, each a multipart transfer
for a large shard (boto3's transfer manager).

    upload_shards(Path("shards"), "s3://b/orch-datasets/imagenet", on_progress)
    descriptions("s3://b")          # [{"name": ..., ...}, ...] for every dataset there
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from orchestrator.cloud.aws import client, error_code

PREFIX = "orch-datasets"
DESCRIPTION = "dataset.json"
PARALLEL = 8
Progress = Callable[[int, int], None]


def location(bucket: str, name: str) -> str:
    """s3://BUCKET/orch-datasets/NAME"""
    return f"{bucket.rstrip('/')}/{PREFIX}/{name}"


def split(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def _s3(region: str):
    return client("s3", region)


def _transfer(jobs: list[tuple[Callable, int]], on_progress: Progress | None) -> None:
    """Run (call(callback), size) jobs PARALLEL at a time; the callbacks add up the bytes moved."""
    total, done, lock = sum(size for _, size in jobs), [0], threading.Lock()

    def moved(n: int) -> None:
        with lock:
            done[0] += n
            if on_progress:
                on_progress(done[0], total)

    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(call, moved) for call, _ in jobs]
        try:
            for f in futures:
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def upload_shards(shards: Path, uri: str, region: str, on_progress: Progress | None = None) -> None:
    """Every shard, then the manifest (a reader that finds the manifest finds every shard)."""
    s3, (bucket, key) = _s3(region), split(uri)
    files = sorted(p for p in shards.iterdir() if p.name.startswith("shard-") and p.name.endswith(".tar"))
    _transfer([(lambda cb, p=p: s3.upload_file(str(p), bucket, f"{key}/shards/{p.name}", Callback=cb),
                p.stat().st_size) for p in files], on_progress)
    s3.upload_file(str(shards / "manifest.json"), bucket, f"{key}/shards/manifest.json")


def download_shards(uri: str, dest: Path, region: str, on_progress: Progress | None = None) -> None:
    """The manifest, then each shard it names (a shard already here at its size is kept: a resumed download)."""
    s3, (bucket, key) = _s3(region), split(uri)
    dest.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, f"{key}/shards/manifest.json", str(dest / "manifest.json"))
    shards = json.loads((dest / "manifest.json").read_text())["shards"]
    todo = [s for s in shards if not ((dest / s["name"]).is_file() and (dest / s["name"]).stat().st_size == s["bytes"])]
    # Names are checked again by `trainer unpack`; here only shard-NNNNN.tar may become a file name.
    if any("/" in str(s["name"]) or not str(s["name"]).startswith("shard-") for s in todo):
        raise ValueError(f"{uri}/shards/manifest.json names a file that is not a shard: refused")
    _transfer([(lambda cb, s=s: s3.download_file(bucket, f"{key}/shards/{s['name']}", str(dest / s["name"]),
                                                 Callback=cb), int(s["bytes"])) for s in todo], on_progress)


def manifest(uri: str, region: str) -> dict:
    """The dataset's shard manifest (as `trainer pack` wrote it)."""
    bucket, key = split(uri)
    return json.loads(_s3(region).get_object(Bucket=bucket, Key=f"{key}/shards/manifest.json")["Body"].read())


def put_description(uri: str, description: dict, region: str) -> None:
    bucket, key = split(uri)
    _s3(region).put_object(Bucket=bucket, Key=f"{key}/{DESCRIPTION}", Body=json.dumps(description, indent=1).encode(),
                           ContentType="application/json")


def descriptions(bucket_uri: str, region: str) -> list[dict]:
    """The description of every dataset in the bucket (one without it is unfinished, and left out)."""
    s3, (bucket, _) = _s3(region), split(bucket_uri)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/", Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            try:
                body = s3.get_object(Bucket=bucket, Key=f"{common['Prefix']}{DESCRIPTION}")["Body"].read()
            except Exception as e:
                if error_code(e) in ("NoSuchKey", "404"):
                    continue
                raise
            try:
                value = json.loads(body)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def delete(uri: str, region: str) -> int:
    """Every object of the dataset, its description first; how many there were."""
    s3, (bucket, key) = _s3(region), split(uri)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}/")
            for o in page.get("Contents", [])]
    if f"{key}/{DESCRIPTION}" in keys:
        s3.delete_object(Bucket=bucket, Key=f"{key}/{DESCRIPTION}")
    rest = [k for k in keys if k != f"{key}/{DESCRIPTION}"]
    for i in range(0, len(rest), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in rest[i:i + 1000]], "Quiet": True})
    return len(keys)
