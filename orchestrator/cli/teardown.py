"""`orch teardown`: remove a job's machine and everything tagged for it (a local job: stop it, keep its outputs)."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from orchestrator.cli.app import EXIT_ERROR, EXIT_USAGE, app, err, errors, job_argument, out, settings


@app.command()
def teardown(
    job: Optional[str] = job_argument(),
    yes: bool = typer.Option(False, "--yes", "-y", help="Don't ask for confirmation (required off a terminal)."),
    keep_volume: bool = typer.Option(
        False, "--keep-volume", help="Keep the root EBS volume (and its data) after terminating, and any volume "
                                     "a `launch --keep-volume` left behind."),
    region: Optional[str] = typer.Option(None, "--region", help="Region to look in when the job isn't in the registry."),
) -> None:
    """Stop the job, terminate its instance, delete its security group and key pair, and verify.

    A local job: stop its container (or trainer process) and forget it; its outputs stay.

    \b
    Example: orch teardown resnet50 --yes
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import machines
    from orchestrator.lifecycle import teardown as lifecycle_teardown

    with errors() as about:
        s = settings(region=region)
        name = about.name = machines.resolve_job(job)
        if not yes:
            if not sys.stdin.isatty():
                err(f"Refusing to tear down {name} without confirmation: add --yes.")
                raise typer.Exit(EXIT_USAGE)
            here = lifecycle_teardown.local_job(name)
            typer.confirm(f"Stop {here.trainer} of job {name} on this machine, and forget the job (its outputs stay "
                          f"in {here.outputs})?" if here is not None else
                          f"Terminate job {name} and delete its resources?", abort=True)
        report = lifecycle_teardown.teardown(name, s, keep_volume=keep_volume, say=out)
        for w in report.warnings:
            err(f"warning: {w}")
        if report.local:
            out(f"Stopped: {report.stopped or 'nothing (the job was not running)'}. Job {name} is forgotten here.")
            if report.kept_outputs:
                out(f"Outputs kept at {report.kept_outputs}. A launch named {name} continues from them (on the same "
                f"data); to start fresh, delete that folder (rm -rf {report.kept_outputs}) or choose another --name.")
            return
        removed = ([f"auto scaling group {g}" for g in report.auto_scaling_groups]
                   + [f"launch template {t}" for t in report.launch_templates]
                   + [f"{u} (the job's spec and orch, not its checkpoints)" for u in report.bucket_objects]
                   + [f"instance {i}" for i in report.terminated] + [f"security group {g}" for g in report.security_groups]
                   + [f"key pair {k}" for k in report.key_pairs] + [f"placement group {g}" for g in report.placement_groups]
                   + [f"volume {v}" for v in report.volumes])
        out(f"Removed: {', '.join(removed) if removed else 'nothing (no resources were left)'}")
        if report.kept_volumes:
            out(f"Kept volume(s): {', '.join(report.kept_volumes)} (they bill until deleted: "
                 f"aws ec2 delete-volume --volume-id {report.kept_volumes[0]})")
        if report.remaining:
            err(f"Still tagged for {name}: {', '.join(report.remaining)}. Run `orch teardown {name} --yes` again.")
            raise typer.Exit(EXIT_ERROR)
        if report.kept_volumes:
            out(f"Nothing else tagged orch:job={name} remains.")
        else:
            out(f"Nothing tagged orch:job={name} remains.")
