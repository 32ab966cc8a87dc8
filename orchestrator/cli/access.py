"""`orch ssh`, `orch logs` and `orch fetch-weights`: reaching a running job from this terminal."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import List, Optional

import typer

from orchestrator.cli.app import app, err, errors, job_argument, json_option, out, out_json, settings
from orchestrator.paths import default_resume_dir


def node_option():
    return typer.Option(0, "--node", min=0, help="Of a job launched with --nodes N: which instance, 0 to N-1 "
                                                 "(default 0, the one that writes checkpoints).")


@app.command(context_settings={"allow_extra_args": True})
def ssh(
    job: Optional[str] = job_argument(),
    command: Optional[List[str]] = typer.Argument(None, help="After `--`: a command to run instead of a shell."),
    print_only: bool = typer.Option(False, "--print", help="Print the ssh command instead of running it."),
    ssh_user: Optional[str] = typer.Option(None, "--ssh-user", help="SSH user (default: the one used at launch)."),
    ssh_proxy_command: Optional[str] = typer.Option(None, "--ssh-proxy-command", help="OpenSSH ProxyCommand."),
    node: int = node_option(),
) -> None:
    """Open a shell on the job's instance (with its key and pinned host key).

    \b
    Example: orch ssh resnet50 -- nvidia-smi

    \b
    Example (node 1 of a --nodes job): orch ssh rn50x16 --node 1
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import access, machines

    with errors() as about:
        name = about.name = machines.resolve_job(job)
        args = access.ssh_command(name, settings(ssh_user=ssh_user, ssh_proxy_command=ssh_proxy_command),
                                  list(command or []), node=node)
        if print_only:
            out(shlex.join(args))
            return
        os.execvp(args[0], args)


@app.command()
def logs(
    job: Optional[str] = job_argument(),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the trainer exits."),
    since: Optional[str] = typer.Option(
        None, "--since", help="Only output from then on: a duration (10m, 2h) or a time, e.g. 2024-05-01T12:00 "
                              "(UTC, unless it ends in Z or +HH:MM)."),
    node: int = node_option(),
) -> None:
    """Print the trainer's output; with --follow, stream it and exit with the trainer's code.

    \b
    Example: orch logs resnet50 --follow

    \b
    Example (node 1 of a --nodes job; node 0 is rank 0, the default): orch logs rn50x16 --node 1 --follow
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import access, machines

    with errors() as about:
        name = about.name = machines.resolve_job(job)
        access.check_since(since)
        code = access.logs(name, settings(), follow_on=follow, since=since, say_after=err, node=node)
    raise typer.Exit(code)


@app.command("fetch-weights")
def fetch_weights(
    job: Optional[str] = job_argument(),
    which: str = typer.Option("best", "--which", help="best, last or all."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Folder to put them in (default: ./weights/JOB)."),
    as_json: bool = json_option(),
) -> None:
    """Download the job's weights (verified by checksum).

    \b
    Example: orch fetch-weights resnet50 --which best --dest ./weights
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import access, machines

    with errors():
        access.check_which(which)
        name = machines.resolve_job(job)
        report = access.fetch_weights(name, settings(), which, dest or default_resume_dir(name))
        if as_json:
            out_json(report)
            return
        if report.source:
            out(f"No instance of {name} is up: from its checkpoint bucket, {report.source}/{name}/")
        for f in report.files:
            out(f"{f}{'  (sha256 ok)' if f in report.verified else ''}")
        out(f"{len(report.files)} file(s), {report.bytes_downloaded} bytes downloaded into {report.dest}")
