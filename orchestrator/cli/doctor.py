"""`orch doctor`: is this machine and account ready for a launch?"""
from __future__ import annotations

from typing import Optional

import typer

from orchestrator.cli.app import EXIT_ERROR, app, errors, json_option, out, out_json, settings


@app.command()
def doctor(
    instance: str = typer.Option("g4dn.2xlarge", "--instance", "-i", help="Instance type whose quota to check."),
    spot: bool = typer.Option(False, "--spot/--on-demand", help="Check the spot quota instead."),
    region: Optional[str] = typer.Option(None, "--region", help="AWS region."),
    as_json: bool = json_option(),
) -> None:
    """Check credentials, region, vCPU quota, key-file permissions, and local SSH and Docker.

    \b
    Example: orch doctor --instance g4dn.2xlarge --region us-east-1
    """
    # lifecycle/ is imported when a command runs, never with the CLI: `orch --help` loads no SSH, Docker or AWS code.
    from orchestrator.lifecycle import doctor as lifecycle_doctor

    with errors():
        checks = lifecycle_doctor.doctor(settings(region=region), instance, spot)
        if as_json:
            out_json(checks)
        else:
            for c in checks:
                mark = {True: "ok  ", False: "FAIL", None: "warn"}[c.ok]
                out(f"[{mark}] {c.name}: {c.detail}")
        if any(c.ok is False for c in checks):
            raise typer.Exit(EXIT_ERROR)
