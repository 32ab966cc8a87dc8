"""`orch doctor`: credentials, region, vCPU quota, key and state permissions, and the local tools."""
from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass

from orchestrator import state
from orchestrator.cloud import aws, catalog, quota
from orchestrator.config import Settings
from orchestrator.paths import keys_dir


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: could not tell (a warning)
    detail: str


def doctor(settings: Settings, instance_type: str = "g4dn.2xlarge", spot: bool = False) -> list[Check]:
    checks: list[Check] = [Check("region", True, settings.region)]
    try:
        checks.append(Check("aws credentials", True, aws.caller_identity(settings.region)))
        creds_ok = True
    except Exception as e:
        checks.append(Check("aws credentials", False, aws.friendly_error(e) or str(e)))
        creds_ok = False
    info = None
    if creds_ok:
        try:
            info = catalog.instance_type_info(settings.region, instance_type)
        except aws.UnknownInstanceType as e:  # a typo: a launch with it would be refused too
            checks.append(Check("instance type", False, str(e)))
        except Exception as e:
            checks.append(Check("instance type", None, aws.friendly_error(e) or str(e)))
    if info is not None:
        try:
            q = quota.check_vcpu_quota(settings.region, info.name, info.vcpus, spot)
            if q.ok is False:
                checks.append(Check("vcpu quota", False, quota.fix_message(q, settings.region)))
            elif q.ok is None:
                checks.append(Check("vcpu quota", None, q.detail))
            else:
                checks.append(Check("vcpu quota", True, f"{q.quota_name} ({q.quota_code}): {q.limit:g} vCPUs, "
                                                        f"{q.in_use_vcpus} in use; {instance_type} needs {info.vcpus}"))
        except Exception as e:
            checks.append(Check("vcpu quota", None, aws.friendly_error(e) or str(e)))
    if creds_ok:
        checks.append(_instance_profile_check(settings))
    bad = []
    for path in [state.state_path(), *sorted(keys_dir().glob("*.pem"))] if keys_dir().exists() else [state.state_path()]:
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            bad.append(str(path))
    checks.append(Check("key and state file permissions", not bad,
                        "all mode 600" if not bad else f"too open: {', '.join(bad)}; fix: chmod 600 " + " ".join(bad)))
    checks.append(_tool_check("ssh", "install OpenSSH (apt install openssh-client)"))
    checks.append(_docker_check())
    return checks


def _instance_profile_check(settings: Settings) -> Check:
    """The profile a launch would pass: refused at launch when named and missing; else `orch init`'s."""
    from orchestrator.cloud import iam
    from orchestrator.lifecycle.init import ROLE

    name = settings.iam_instance_profile or ROLE
    what = f"instance profile {name}"
    try:
        roles = iam.instance_profile_roles(settings.region, name)
    except Exception as e:
        return Check(what, None, f"could not be read ({aws.friendly_error(e) or e})")
    if roles is None:
        fix = "run `orch init` to create it" if name == ROLE else "create it, or `orch init` creates orch-trainer"
        if settings.iam_instance_profile:
            return Check(what, False, f"missing, and config names it: a launch would fail; {fix}")
        return Check(what, None, f"missing: s3:// data and --checkpoint-bucket need it; {fix}")
    if not roles:
        return Check(what, False, "has no role; run `orch init`" if name == ROLE else "has no role")
    hint = "" if settings.iam_instance_profile else f"; launch with --iam-instance-profile {name} for s3:// data"
    return Check(what, True, f"role {', '.join(roles)}{hint}")


def _tool_check(tool: str, fix: str) -> Check:
    path = shutil.which(tool)
    return Check(f"{tool} client", bool(path), path or f"not found; {fix}")


def _docker_check() -> Check:
    if not shutil.which("docker") and not os.path.exists("/var/run/docker.sock"):
        return Check("docker (for --target local)", None, "not found; only needed for --target local")
    try:
        import docker

        client = docker.from_env(timeout=3)
        version = client.version().get("Version", "?")
        client.close()
        return Check("docker (for --target local)", True, f"engine {version}")
    except Exception as e:
        return Check("docker (for --target local)", None, f"engine not reachable ({e}); only needed for --target local")
