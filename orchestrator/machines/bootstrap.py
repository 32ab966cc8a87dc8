"""What an instance's first-boot set-up (infra/bootstrap.sh, run by cloud-init) leaves for a job to read.

sshd answers before cloud-init has run the user data, which mounts the fast disk at /mnt/orch and
gives Docker the GPUs: `wait_for_bootstrap` waits for it. The set-up's watcher keeps the hard cap
(`--max-hours`/`--max-dollars`) and its clock in /var/lib/orch: `hard_cap` reads them.
"""
from __future__ import annotations

import re
import shlex
import sys

from orchestrator.machines.base import Say
from orchestrator.records import HardCap

WATCHER_STATE_DIR = "/var/lib/orch"  # infra/bootstrap.sh's watcher keeps its hard cap and its clock here
BOOTSTRAP_WAIT_S = 900.0  # cloud-init on a fresh instance: installing Docker (when missing) takes minutes


def wait_for_bootstrap(session, timeout_s: float = BOOTSTRAP_WAIT_S, say: Say | None = None) -> None:
    """Wait, up to `timeout_s`, for an instance's first-boot set-up (cloud-init running infra/bootstrap.sh).

    sshd answers before cloud-init has run the user data, which mounts the fast disk at /mnt/orch and
    gives Docker the GPUs: a job set up before it would put its folders on the root volume. A machine
    without cloud-init, or whose set-up is over, returns at once.
    """
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    probe = session.run("command -v cloud-init >/dev/null 2>&1 || exit 0; cloud-init status 2>/dev/null", timeout=60)
    if re.search(r"^status:\s*error", probe.stdout, re.MULTILINE):
        say("  warning: the instance's set-up (cloud-init) reported an error; carrying on "
            "(see /var/log/cloud-init-output.log and /var/log/orch-bootstrap.log there)")
    if not re.search(r"^status:\s*(running|not run|not started)", probe.stdout, re.MULTILINE):
        return
    say(f"  waiting for the instance's first-boot set-up (cloud-init) on {session.where}")
    waited = session.run(f"timeout {int(timeout_s)} cloud-init status --wait >/dev/null 2>&1; echo $?",
                         timeout=timeout_s + 60)
    code = waited.stdout.strip().splitlines()[-1:] or ["?"]
    if code[0] == "124":
        say(f"  warning: the instance's set-up had not finished after {timeout_s:.0f} s; carrying on "
            "(see /var/log/cloud-init-output.log there)")
    elif code[0] not in ("0", "2"):  # 2: done, with recoverable errors
        say(f"  warning: the instance's set-up reported an error (cloud-init exit {code[0]}); carrying on "
            "(see /var/log/cloud-init-output.log and /var/log/orch-bootstrap.log there)")


def hard_cap(session) -> HardCap | None:
    """The instance's hard cap from its watcher's state folder; None: no cap, or no watcher that says (another
    machine, a bootstrap older than this orch, or a watcher not started yet)."""
    folder = shlex.quote(WATCHER_STATE_DIR)
    out = session.run(f"cat {folder}/started {folder}/cap 2>/dev/null && date +%s").stdout.split()
    try:
        started, cap, now = (int(v) for v in out)
    except ValueError:
        return None
    return HardCap(seconds=cap, elapsed_s=max(0, now - started)) if cap > 0 else None
