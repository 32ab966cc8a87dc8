"""A kept dataset copied and restored on a machine (machines/data.py), with this machine as the machine:
`LocalSession` runs the same shell an instance runs, `ProcessRunner` the same `trainer unpack` its image
runs. Stand-in: `aws` on PATH copies from a folder mirroring the bucket (as tests/reliability/test_resume.py).

What is shown: a restore cut after some shards (their shards deleted once extracted) copies only the rest
on the next start; a restored dataset is not copied again; a new version of the dataset replaces the old
one on the machine with no stale shard or file left."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import dataset_store
from orchestrator.errors import JobError
from orchestrator.machines.data import copy_dataset, unpack_dataset
from orchestrator.machines.process_runner import ProcessRunner
from orchestrator.records import DatasetSource, JobSpec
from orchestrator.remote.local import LocalSession

FAKE_AWS = """#!/bin/sh
echo "$*" >> {record}
[ "$1 $2" = "s3 cp" ] || exit 2
cp "{root}/${{3#s3://}}" "$4"
"""


def packed(dataset: Path, out: Path, shard_bytes: int) -> dict:
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from trainer.shards import pack; "
                    "pack(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))", str(dataset), str(out),
                    str(shard_bytes)], check=True)
    return json.loads((out / "manifest.json").read_text())


def source(bucket: Path, version: str, manifest: dict) -> DatasetSource:
    return DatasetSource(name="tiny", uri=f"s3://b/orch-datasets/tiny/shards-{version}",
                         shards=dataset_store.shard_entries(manifest, "test"),
                         manifest_key=dataset_store.manifest_key(manifest))


@pytest.fixture
def bucket(tmp_path, monkeypatch) -> Path:
    root, record = tmp_path / "bucket", tmp_path / "aws-calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(FAKE_AWS.format(record=record, root=root))
    (bin_dir / "aws").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    return root


def copies(bucket: Path) -> list[str]:
    record = bucket.parent / "aws-calls.txt"
    return [line.split()[2] for line in record.read_text().splitlines()] if record.exists() else []


def files(root) -> set[str]:
    """The dataset's files (not the restore's own hidden records)."""
    found = {p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)}
    assert found
    return found


def demo(dest: Path, classes: int) -> Path:
    subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(dest), "--classes", str(classes),
                    "--per-class", "20", "--size", "32"], check=True, capture_output=True)
    return dest


def test_a_cut_restore_copies_only_the_shards_not_restored_and_a_new_version_leaves_nothing_stale(bucket, tmp_path):
    v1 = packed(demo(tmp_path / "v1", classes=3), bucket / "b/orch-datasets/tiny/shards-1", 16 << 10)
    assert len(v1["shards"]) >= 3
    spec = JobSpec(job="tiny-job", data="dataset:tiny", dataset=source(bucket, "1", v1))
    session, runner, said = LocalSession(), ProcessRunner("tiny-job"), []
    data_dir = str(tmp_path / "job" / "data")

    # A start whose restore is cut: the last shard arrives damaged, the others are restored (and deleted).
    copy_dataset(session, spec, data_dir, said.append)
    last = v1["shards"][-1]["name"]
    shards_dir = next((tmp_path / "job" / "shards").iterdir())
    (shards_dir / last).write_bytes(b"cut")
    with pytest.raises(JobError, match=f"{last}.*carries on|carries on"):
        unpack_dataset(session, runner, spec, data_dir, "", "", said.append)
    assert sorted(p.name for p in shards_dir.glob("shard-*")) == [last]

    # The next start copies only that shard, then restores it.
    before = len(copies(bucket))
    copy_dataset(session, spec, data_dir, said.append)
    assert copies(bucket)[before:] == [f"s3://b/orch-datasets/tiny/shards-1/{n}" for n in ("manifest.json", last)]
    assert f"{len(v1['shards']) - 1} restored before" in said[-1]
    unpack_dataset(session, runner, spec, data_dir, "", "", said.append)
    assert files(data_dir) == files(tmp_path / "v1")

    # Restored: a start copies nothing.
    before = len(copies(bucket))
    copy_dataset(session, spec, data_dir, said.append)
    assert copies(bucket)[before:] == [] and "already restored" in said[-1]

    # A new version (fewer classes): its shards replace the old ones, and no old file stays.
    v2 = packed(demo(tmp_path / "v2", classes=2), bucket / "b/orch-datasets/tiny/shards-2", 16 << 10)
    spec2 = JobSpec(job="tiny-job", data="dataset:tiny", dataset=source(bucket, "2", v2))
    copy_dataset(session, spec2, data_dir, said.append)
    assert [p.name for p in (tmp_path / "job" / "shards").iterdir()] == [spec2.dataset.manifest_key[:16]]
    unpack_dataset(session, runner, spec2, data_dir, "", "", said.append)
    assert files(data_dir) == files(tmp_path / "v2") and files(tmp_path / "v2") != files(tmp_path / "v1")


@pytest.mark.parametrize("shard", [
    {"name": "../../.ssh/authorized_keys", "bytes": 1, "files": 1, "sha256": "0" * 64},
    {"name": "shard-00000.tar; rm -rf ~", "bytes": 1, "files": 1, "sha256": "0" * 64},
    {"name": "shard-00000.tar", "bytes": "1; reboot", "files": 1, "sha256": "0" * 64},
    {"name": "shard-00000.tar", "bytes": 1, "files": 1, "sha256": "$(reboot)"},
])
def test_a_manifest_that_names_anything_but_shards_is_refused_before_a_machine_sees_it(shard):
    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match="refused"):
        dataset_store.shard_entries({"shards": [shard]}, "s3://b/orch-datasets/x/shards-1/manifest.json")
