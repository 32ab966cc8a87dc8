"""`orch init`: the account's one-time set-up (the instance role and profile), said step by step."""
from __future__ import annotations

from typing import List, Optional

import typer

from orchestrator.cli.app import app, errors, json_option, jsonable, out, out_json, settings


@app.command()
def init(
    data_bucket: Optional[List[str]] = typer.Option(
        None, "--data-bucket", help="A bucket the instance may read datasets from, e.g. s3://my-bucket (repeatable)."),
    checkpoint_bucket: Optional[str] = typer.Option(
        None, "--checkpoint-bucket", help="The bucket the instance copies checkpoints to, e.g. s3://my-bucket/orch-ckpt."),
    region: Optional[str] = typer.Option(None, "--region", help="AWS region (IAM is global; this picks the endpoint)."),
    as_json: bool = json_option(),
) -> None:
    """Create (or bring up to date) the orch-trainer instance role and profile that s3:// data,
    checkpoint buckets and the trainer image in ECR need, from the policies in infra/. Safe to run again: it changes only what differs.

    \b
    Example: orch init --data-bucket s3://my-datasets --checkpoint-bucket s3://my-bucket/orch-ckpt
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import init as lifecycle_init

    with errors():
        setup = lifecycle_init.init(settings(region=region), tuple(data_bucket or ()), checkpoint_bucket)
        if as_json:
            out_json({**jsonable(setup), "changed": setup.changed})
            return
        for line in lifecycle_init.describe(setup, buckets_given=bool(data_bucket or checkpoint_bucket)):
            out(line)
        out(f"Launch with --iam-instance-profile {setup.profile} (or set iam_instance_profile = \"{setup.profile}\" "
            "in config.toml); `orch doctor` checks it.")

