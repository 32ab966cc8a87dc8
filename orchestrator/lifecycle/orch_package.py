"""orch itself as one tar.gz, for a managed job's instances (issue 24): each instance the job's Auto Scaling group
starts installs it (infra/bootstrap.sh `start`) and runs `python -m orchestrator.lifecycle.self_start` from it.

The archive is a source tree `pip install` builds (pyproject.toml, setup.py, orchestrator/, and what
assets.py ships: infra/, the Dockerfile, trainer/), made the same way each time from the same files
(sorted, no times, no owners), so its SHA-256 names this version of orch. The user data carries that
hash and the instance refuses any other archive: the checkpoint bucket the archive is kept in is
writable by the instance role, but what runs as root at boot is fixed at launch.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator import assets
from orchestrator.cloud.aws import resource_name
from orchestrator.job.spec_file import spec_uri

SKIP_DIRS = ("__pycache__", assets.BUNDLE)


@dataclass(frozen=True)
class OrchPackage:
    data: bytes
    sha256: str

    @property
    def name(self) -> str:
        return f"orch-{self.sha256[:16]}.tar.gz"


def files() -> list[tuple[str, Path]]:
    """(name in the archive, file here): the run-time files assets.py ships, then the orchestrator package."""
    root = assets.root()
    out = [(name, root / name) for name in assets.members(root)]
    package = Path(assets.__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        if path.is_file() and not any(part in SKIP_DIRS for part in relative.parts) \
                and not assets.is_build_product(relative) and path.suffix in (".py", ".json", ".typed"):
            out.append(("orchestrator/" + relative.as_posix(), path))
    return out


def build() -> OrchPackage:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in files():
            info = tarfile.TarInfo(name)
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
    return OrchPackage(packed, hashlib.sha256(packed).hexdigest())


def boot_values(job: str, checkpoint_bucket: str, package: OrchPackage, launched_at: int,
                spec_sha256: str | None = None) -> dict[str, object]:
    """What a managed job's user data adds (infra/bootstrap.sh reads them): where its spec and orch's package are,
    the hashes of both (the instance role can write to that bucket: what each instance runs is fixed at launch),
    the group to set to 0 when the job ends on purpose, and when its caps started counting."""
    spec = spec_uri(checkpoint_bucket, job)
    return {"ORCH_MANAGED_GROUP": resource_name(job), "ORCH_SPEC_URI": spec,
            "ORCH_PACKAGE_URI": spec.rsplit("/", 1)[0] + "/" + package.name, "ORCH_PACKAGE_SHA256": package.sha256,
            "ORCH_SPEC_SHA256": spec_sha256, "ORCH_CAP_FROM": launched_at}
