"""A restore from the checkpoint bucket (orchestrator/job/restore.py) with the real AWS CLI against moto's S3, run
as on the machine (a local session): a checkpoint whose .sha256 in the bucket is an older one's (the instance was
reclaimed between the watcher's two copies) is still restored when the SHA-256 that infra/bootstrap.sh puts on the
object itself matches; without one that matches, nothing is put in place."""
from __future__ import annotations

import hashlib

import boto3
import pytest

from orchestrator.job.restore import Restore, RestoreError, restore_checkpoints
from orchestrator.remote.local import LocalSession
from tests.fixtures.aws import REGION, aws, moto_url  # noqa: F401 (fixtures)

BUCKET, JOB = "orch-test-ckpt", "torn"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bucket_with(last: bytes, sha_of: bytes, metadata: dict[str, str]) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=f"runs/{JOB}/last.pt", Body=last, Metadata=metadata)
    s3.put_object(Bucket=BUCKET, Key=f"runs/{JOB}/last.pt.sha256", Body=f"{digest(sha_of)}  last.pt\n".encode())


def test_a_checkpoint_whose_sha256_copy_was_cut_off_is_restored_by_the_digest_on_the_object(aws, tmp_path):  # noqa: F811
    bucket_with(b"epoch-4", sha_of=b"epoch-3", metadata={"sha256": digest(b"epoch-4")})
    outputs = tmp_path / "outputs"
    report = restore_checkpoints(LocalSession(), Restore(bucket=f"s3://{BUCKET}/runs"), JOB, str(outputs))
    assert (report.source, report.files) == ("bucket", ("checkpoints/last.pt",))
    assert (outputs / "checkpoints" / "last.pt").read_bytes() == b"epoch-4"
    assert (outputs / "checkpoints" / "last.pt.sha256").read_text() == f"{digest(b'epoch-4')}  last.pt\n"


@pytest.mark.parametrize("metadata", [{}, {"sha256": digest(b"something else")}, {"sha256": "$(touch pwned)"}],
                         ids=["none", "another", "not-a-digest"])
def test_a_checkpoint_that_matches_neither_digest_is_never_put_in_place(aws, tmp_path, metadata):  # noqa: F811
    bucket_with(b"epoch-4", sha_of=b"epoch-3", metadata=metadata)
    outputs = tmp_path / "outputs"
    with pytest.raises(RestoreError, match="does not match its .sha256"):
        restore_checkpoints(LocalSession(), Restore(bucket=f"s3://{BUCKET}/runs"), JOB, str(outputs))
    assert list((outputs / "checkpoints").iterdir()) == [] and not list(tmp_path.rglob("pwned"))
