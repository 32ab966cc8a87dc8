"""A managed job's instance starting the job by itself, from the bucket alone (issue 24): what infra/bootstrap.sh
runs (its `start` step) on each instance the job's Auto Scaling group starts, as the SSH user, with the instance role.

    python -m orchestrator.lifecycle.self_start s3://BUCKET/orch-jobs/JOB/spec.json

The job's spec (job/spec_file.py), then job/start.py as `orch launch` runs it over SSH, here through
a local session (machines/this_instance.py): the kept dataset from the bucket, the image pulled from
ECR (or built and pushed), the newest checkpoint from the checkpoint bucket when there is one
(checked against its .sha256), and the trainer container, which resumes from it. Exit 0 once the
trainer runs (or already ran here), 2 for a spec that is refused, 1 for anything else; each with one
line on stderr.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import replace

from orchestrator.cloud import job_specs
from orchestrator.config import ConfigError
from orchestrator.job import spec_file
from orchestrator.job.restore import bucket_uri
from orchestrator.job.start import start
from orchestrator.machines.this_instance import ThisInstanceMachine


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def self_start(uri: str, region: str, pinned: str | None = None) -> int:
    """Start the job of the spec at `uri`; `pinned`, the spec's SHA-256 from the user data: any other is refused
    (the bucket is writable by every instance's role, what this one runs was fixed at launch)."""
    raw = job_specs.get_small(region, uri)
    if raw is None:
        raise ConfigError(f"{uri}: no job spec there (the job was torn down, or the bucket is not the job's)")
    if pinned is not None and hashlib.sha256(raw).hexdigest() != pinned:
        raise ConfigError(f"{uri}: not the spec this job was launched with (its SHA-256 is not {pinned})")
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{uri}: not JSON") from None
    spec, region = spec_file.from_json(parsed, uri)
    if uri != spec_file.spec_uri(uri.rsplit(f"/{spec_file.PREFIX}/", 1)[0], spec.job):
        raise ConfigError(f"{uri}: its job is {spec.job}, not the one its place names")
    if spec.restore is not None and not job_specs.exists(region, bucket_uri(spec.restore.bucket, spec.job, "last.pt.sha256")):
        say(f"no checkpoint in {spec.restore.bucket} yet: the trainer starts from scratch")
        spec = replace(spec, restore=None)
    status = start(ThisInstanceMachine(spec.job), spec, say=say)
    say(f"job {spec.job}: trainer {status.state}"
        + (f", continuing from {status.continues_from}" if status.continues_from else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].startswith("s3://"):
        say("usage: python -m orchestrator.lifecycle.self_start s3://BUCKET/orch-jobs/JOB/spec.json")
        return 2
    region = os.environ.get("ORCH_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    try:
        return self_start(args[0], region, os.environ.get("ORCH_SPEC_SHA256") or None)
    except ConfigError as e:
        say(f"error: {e}")
        return 2
    except Exception as e:  # one line for the instance's log; the job's instance is replaced or torn down
        say(f"error: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
