"""The instance's user data: infra/bootstrap.sh with the job's settings, and what its watcher does with them."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from orchestrator import assets
from orchestrator.config import Settings
from orchestrator.errors import FlowError
from orchestrator.records import LaunchPlan


# --- user data --------------------------------------------------------------------------------


NO_BOOTSTRAP = "none"  # bootstrap_script = "none": launch without user data, knowingly (no autostop watcher)


def bootstrap_script(settings: Settings) -> Path | None:
    """The instance's set-up script; None only when the user chose "none". A missing one is refused:
    without it there is no watcher, and an instance whose job never starts bills until torn down."""
    if settings.bootstrap_script and settings.bootstrap_script.strip().lower() == NO_BOOTSTRAP:
        return None
    if settings.bootstrap_script:
        path = Path(settings.bootstrap_script).expanduser()
        if not path.is_file():
            raise FlowError(f"bootstrap_script {settings.bootstrap_script!r} (config.toml or $ORCH_BOOTSTRAP_SCRIPT) "
                            "is not a file: without it the instance has no autostop watcher. Fix the path, leave "
                            "it unset for orch's own infra/bootstrap.sh, or set it to \"none\" to launch without "
                            "one knowingly. Nothing was created.")
        return path
    try:
        return assets.path("infra/bootstrap.sh")
    except assets.AssetsMissing as e:
        raise FlowError(f"{e} Nothing was created.") from None


def render_user_data(job: str, settings: Settings, price_per_hour: float | None,
                     more: dict[str, object] | None = None) -> str:
    """infra/bootstrap.sh with the job's settings (and `more`, a managed job's) exported after its shebang, its
    opening comments left out (EC2 holds 16 KB of user data). No credentials."""
    script = bootstrap_script(settings)
    if script is None:
        return ""
    text = script.read_text(encoding="utf-8")
    values = {
        "ORCH_JOB": job,
        "ORCH_REGION": settings.region,
        # the AMI's login user, whom jobs run as (ec2-user on Amazon Linux); bootstrap.sh's own default is ubuntu
        "ORCH_USER": settings.ssh_user if settings.ssh_user != "ubuntu" else None,
        "ORCH_AUTOSTOP_MINUTES": settings.autostop_minutes,
        "ORCH_MAX_HOURS": settings.max_hours,
        "ORCH_MAX_DOLLARS": settings.max_dollars,
        "ORCH_PRICE_PER_HOUR": price_per_hour,
        "ORCH_CHECKPOINT_BUCKET": settings.checkpoint_bucket,
        **(more or {}),
    }
    block = ["# --- orch job settings (written by `orch launch`; never credentials) ---"]
    block += [f"export {k}={shlex.quote(str(v))}" for k, v in values.items() if v is not None]
    lines = text.splitlines()
    head = [lines.pop(0)] if lines and lines[0].startswith("#!") else ["#!/bin/bash"]
    opening = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    if opening:
        lines[:opening] = [f"# {script.name}: its opening comments are left out here (EC2 holds 16 KB of user data)"]
    rendered = "\n".join(head + block + lines) + "\n"
    refuse_secrets(rendered, "user data")
    if len(rendered.encode()) > 16384:
        raise FlowError(f"{script} renders to {len(rendered.encode())} bytes of user data; EC2 allows 16384.")
    return rendered


def refuse_secrets(text: str, where: str) -> None:
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name, "")
        if len(value) >= 12 and value in text:
            raise FlowError(f"Refusing to send {where}: it contains the value of ${name}.")




# What infra/bootstrap.sh's watcher does with the job's settings (keep the two in step).
BOOTSTRAP_AUTOSTOP_MINUTES = 30  # its default when the setting is unset
IDLE_MINUTES_BOUNDS = (10, 120)


def idle_minutes(autostop_minutes: float) -> float:
    """How long an instance where no job ever started waits, with no SSH connection, before it shuts down."""
    if autostop_minutes <= 0:
        return 0  # autostop off: the watcher never stops it
    low, high = IDLE_MINUTES_BOUNDS
    return min(max(2 * autostop_minutes, low), high)


def autostop_of(s: Settings) -> float:
    return BOOTSTRAP_AUTOSTOP_MINUTES if s.autostop_minutes is None else s.autostop_minutes


def billing_note(p: LaunchPlan, s: Settings) -> str:
    """Until when an instance whose job did not start bills."""
    autostop = autostop_of(s)
    if not p.user_data or autostop <= 0:
        return f"it bills until `orch teardown {p.job}`"
    return (f"it bills until `orch teardown {p.job}`, or until it shuts itself down (and is terminated): "
            f"{idle_minutes(autostop):g} min without an SSH connection while no job has started on it, "
            f"{autostop:g} min after its job ends")
