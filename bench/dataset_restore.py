"""Restoring a prepared dataset from a bucket: as shards (`trainer pack` / `trainer unpack`) against
copying it object by object, in one run.

    python bench/dataset_restore.py                        # 2,000 files of ~110 KB (ImageNet's mean), 32 MB shards
    python bench/dataset_restore.py --files 10000 --shard-mb 64 --rounds 3

The bucket is a moto S3 server on loopback (the project's only emulated service); both ways use the
same boto3 client and 10 parallel transfers (the AWS CLI's default `max_concurrent_requests`). Object
by object: list, then GET each file into place. As shards: GET each shard, then `trainer.shards.unpack`
(checked against the manifest's SHA-256s, 4 threads, each shard deleted once extracted). Each round
starts from an empty destination; the two ways alternate.

Printed: images/s and MB/s of each (medians), and `ratio shards/objects` (images/s; above 1: shards
faster). On loopback a request costs moto's Python handling; on real S3 it costs a round trip (tens of
ms to the first byte), so per-object overhead is, if anything, larger there.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.shards import pack, unpack  # noqa: E402

BUCKET = "orch-bench-datasets"
PARALLEL = 10


def make_dataset(root: Path, files: int, mean_kb: int, classes: int = 20) -> int:
    rng = __import__("random").Random(0)
    total = 0
    for i in range(files):
        split = "val" if i % 10 == 0 else "train"
        path = root / split / f"c{i % classes:03d}" / f"{i:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = max(1024, int(rng.gauss(mean_kb, mean_kb / 3) * 1024))
        path.write_bytes(os.urandom(size))
        total += size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--mean-kb", type=int, default=110)
    ap.add_argument("--shard-mb", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    from botocore.config import Config

    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://{host}:{port}",
                      config=Config(max_pool_connections=PARALLEL * 2))
    work = Path(tempfile.mkdtemp(prefix="orch-bench-restore-"))
    try:
        data = work / "data"
        total = make_dataset(data, args.files, args.mean_kb)
        files = sorted(p for p in data.rglob("*") if p.is_file())
        manifest = pack(data, work / "shards", args.shard_mb << 20)
        s3.create_bucket(Bucket=BUCKET)
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda p: s3.upload_file(str(p), BUCKET, "objects/" + p.relative_to(data).as_posix()), files))
            list(pool.map(lambda p: s3.upload_file(str(p), BUCKET, "shards/" + p.name),
                          sorted((work / "shards").iterdir())))

        def by_object(dest: Path) -> None:
            keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="objects/")
                    for o in page.get("Contents", [])]

            def get(key: str) -> None:
                target = dest / key[len("objects/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(BUCKET, key, str(target))

            with ThreadPoolExecutor(PARALLEL) as pool:
                list(pool.map(get, keys))
            assert len(keys) == len(files)

        def by_shard(dest: Path) -> None:
            staging = dest.parent / (dest.name + "-shards")
            staging.mkdir()
            names = ["manifest.json"] + [s["name"] for s in manifest.shards]
            with ThreadPoolExecutor(PARALLEL) as pool:
                list(pool.map(lambda n: s3.download_file(BUCKET, "shards/" + n, str(staging / n)), names))
            report = unpack(staging, dest, workers=4, delete_shards=True)
            assert report.files == len(files)

        times: dict[str, list[float]] = {"objects": [], "shards": []}
        for r in range(args.rounds):
            for name, run in (("objects", by_object), ("shards", by_shard)):
                dest = work / f"{name}-{r}"
                t0 = time.perf_counter()
                run(dest)
                times[name].append(time.perf_counter() - t0)
                shutil.rmtree(dest, ignore_errors=True)
                shutil.rmtree(work / f"{name}-{r}-shards", ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.files:,} files, {total / 1e6:,.0f} MB (~{args.mean_kb} KB each), {len(manifest.shards)} shards of "
          f"~{args.shard_mb} MB, {PARALLEL} parallel transfers, {args.rounds} rounds, {os.cpu_count()} CPUs, moto S3 on loopback")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:8s}  {args.files / t:8,.0f} images/s  {total / t / 1e6:7,.1f} MB/s   "
              f"({', '.join(f'{v:.1f}' for v in values)} s)")
    ratio = statistics.median(times["objects"]) / statistics.median(times["shards"])
    print(f"ratio shards/objects: {ratio:.2f}x  (images/s; above 1: restoring shards is faster)")


if __name__ == "__main__":
    main()
