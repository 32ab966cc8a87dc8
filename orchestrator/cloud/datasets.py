"""Datasets kept in the user's bucket, under one prefix: `s3://BUCKET/orch-datasets/<name>/`.

    shards-VERSION/manifest.json, shard-NNNNN.tar   as `trainer pack` wrote them (a --replace: a new VERSION)
    dataset.json                                    orch's description (records.DatasetInfo), written last,
                                                    and only over the one read (a conditional write)

The fixed prefix is what lets infra/iam-policy.json allow these calls on any bucket the user names,
and nothing outside `orch-datasets/`. Transfers run `PARALLEL` at a time, each a multipart transfer
for a large shard (boto3's transfer manager).

    upload_shards(Path("shards"), "s3://b/orch-datasets/imagenet/shards-V", region, on_progress)
    descriptions("s3://b", region)  # [("imagenet", {...}), ...]: each dataset's folder name and description

Nothing here checks what it reads: lifecycle/datasets.py and dataset_store.py do.
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from orchestrator.cloud.aws import ProviderError, client, error_code

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
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError

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
        except (S3UploadFailedError, S3TransferFailedError) as e:
            raise ProviderError(f"an S3 transfer failed: {e}") from None
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def upload_shards(shards: Path, uri: str, region: str, on_progress: Progress | None = None) -> None:
    """Every shard into the prefix `uri`, then the manifest (a reader that finds the manifest finds every shard)."""
    s3, (bucket, key) = _s3(region), split(uri)
    files = sorted(p for p in shards.iterdir() if p.name.startswith("shard-") and p.name.endswith(".tar"))
    _transfer([(lambda cb, p=p: s3.upload_file(str(p), bucket, f"{key}/{p.name}", Callback=cb),
                p.stat().st_size) for p in files], on_progress)
    _transfer([(lambda cb: s3.upload_file(str(shards / "manifest.json"), bucket, f"{key}/manifest.json"), 0)], None)


def download_shards(uri: str, shards: list[tuple[str, int]], dest: Path, region: str,
                    on_progress: Progress | None = None) -> None:
    """The (name, bytes) shards from the prefix `uri` into `dest` (names checked by the caller)."""
    s3, (bucket, key) = _s3(region), split(uri)
    dest.mkdir(parents=True, exist_ok=True)
    _transfer([(lambda cb, n=n: s3.download_file(bucket, f"{key}/{n}", str(dest / n), Callback=cb), size)
               for n, size in shards], on_progress)


def manifest(uri: str, region: str) -> bytes:
    """The manifest.json under the prefix `uri`, as stored (at most 64 MiB: a million shards would be less)."""
    bucket, key = split(uri)
    body = _s3(region).get_object(Bucket=bucket, Key=f"{key}/manifest.json")["Body"]
    return body.read(64 << 20)


class Changed(ProviderError):
    """The description changed (or appeared) since it was read: another writer came first."""


def read_description(uri: str, region: str) -> tuple[bytes | None, str | None]:
    """The dataset's description as stored (at most 1 MiB) and its ETag; (None, None) when there is none."""
    bucket, key = split(uri)
    try:
        got = _s3(region).get_object(Bucket=bucket, Key=f"{key}/{DESCRIPTION}")
    except Exception as e:
        if error_code(e) in ("NoSuchKey", "404"):
            return None, None
        raise
    return got["Body"].read(1 << 20), got["ETag"]


def put_description(uri: str, description: dict, region: str, replacing: str | None) -> None:
    """Write the description only if it is still the one read (ETag `replacing`; None: only if there is none),
    else raise Changed: S3's conditional writes make the swap one step (two writers can't both win)."""
    bucket, key = split(uri)
    condition = {"IfMatch": replacing} if replacing else {"IfNoneMatch": "*"}
    try:
        _s3(region).put_object(Bucket=bucket, Key=f"{key}/{DESCRIPTION}", ContentType="application/json",
                               Body=json.dumps(description, indent=1).encode(), **condition)
    except Exception as e:
        if error_code(e) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"):
            raise Changed(f"{uri}/{DESCRIPTION} changed while it was being replaced") from None
        raise


def _one_level(uri: str, region: str) -> tuple[list[dict], list[str]]:
    """The objects directly under the prefix `uri`, and the names of the folders there."""
    s3, (bucket, key) = _s3(region), split(uri)
    objects, folders_ = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}/", Delimiter="/"):
        objects += page.get("Contents", [])
        folders_ += [c["Prefix"][len(key) + 1:].rstrip("/") for c in page.get("CommonPrefixes", [])]
    return objects, folders_


def sizes(uri: str, region: str) -> dict[str, int]:
    """{name: bytes} of the objects directly under the prefix `uri`."""
    key = split(uri)[1]
    return {o["Key"][len(key) + 1:]: o["Size"] for o in _one_level(uri, region)[0]}


def folders(uri: str, region: str) -> list[str]:
    """The names of the folders directly under the prefix `uri` (a dataset's shards-VERSION folders)."""
    return _one_level(uri, region)[1]


def descriptions(bucket_uri: str, region: str) -> list[tuple[str, object]]:
    """(folder name, parsed description) of every dataset in the bucket (one without it is unfinished, and left
    out)."""
    found, root = [], f"s3://{split(bucket_uri)[0]}"
    for name in folders(f"{root}/{PREFIX}", region):
        body, _ = read_description(location(root, name), region)
        if body is None:
            continue
        try:
            found.append((name, json.loads(body)))
        except (ValueError, RecursionError):  # not JSON, or nested past any description orch writes
            continue
    return found


def delete(uri: str, region: str, folder: str | None = None) -> int:
    """Every object of the dataset, its description first; how many there were. With `folder` (e.g.
    "shards-V"), only what is in that folder of it."""
    s3, (bucket, key) = _s3(region), split(uri)
    prefix = f"{key}/{folder}/" if folder else f"{key}/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    if f"{key}/{DESCRIPTION}" in keys:
        s3.delete_object(Bucket=bucket, Key=f"{key}/{DESCRIPTION}")
    rest = [k for k in keys if k != f"{key}/{DESCRIPTION}"]
    for i in range(0, len(rest), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in rest[i:i + 1000]], "Quiet": True})
    return len(keys)
