"""What orch needs at run time besides its code, wherever orch is installed.

The instance's set-up script and the IAM policies (infra/), the Dockerfile and the trainer's build
context, the trainer's flags file and recipes. From a checkout (or `pip install -e .`) they are read
where they are; a wheel carries a copy of exactly these under `orchestrator/_bundle/`, in the same
layout, which setup.py puts there at build time from `members()` (`FILES` and `TREES`). Either way `root()` is a folder that
looks like a checkout, so the trainer image a wheel builds has the same content hash as the
checkout's. Standard library only: setup.py imports this file on its own.
"""
from __future__ import annotations

from pathlib import Path

# Relative to the checkout. Files first, then whole trees (their sources, not build products).
FILES = (
    "Dockerfile", ".dockerignore", "pyproject.toml", "setup.py", "README.md",
    "infra/bootstrap.sh", "infra/iam-policy.json", "infra/iam-init-policy.json",
    "infra/instance-role-policy.json", "infra/instance-role-trust.json",
)
TREES = ("trainer",)
BUNDLE = "_bundle"
_MARKERS = ("infra/bootstrap.sh", "Dockerfile", "trainer/train-flags.json")


class AssetsMissing(FileNotFoundError):
    """Neither a checkout nor a wheel's bundle is next to the package: orch cannot set up machines."""


def is_build_product(path: Path) -> bool:
    """What a local build leaves in a tree (bytecode, an extension built for this Python): never shipped."""
    return "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo", ".so", ".pyd")


def members(root: Path) -> list[str]:
    """The relative paths shipped from `root` (a checkout or a bundle), files before trees, sorted within."""
    out = [name for name in FILES if (root / name).is_file()]
    for tree in TREES:
        out += sorted(p.relative_to(root).as_posix() for p in (root / tree).rglob("*")
                      if p.is_file() and not is_build_product(p.relative_to(root)))
    return out


def _complete(root: Path) -> bool:
    return all((root / marker).is_file() for marker in _MARKERS)


def root() -> Path:
    """The checkout this package runs from, else the bundle its wheel carries."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent, package / BUNDLE):
        if _complete(candidate):
            return candidate
    raise AssetsMissing(
        f"orch's run-time files (infra/bootstrap.sh, the Dockerfile, the trainer's sources) are neither in a "
        f"checkout at {package.parent} nor bundled at {package / BUNDLE}: this install is incomplete, "
        "and orch sets up nothing without them. Reinstall orch from a wheel or a checkout (`pip install orch-trainer` or `pip install .`).")


def path(relative: str) -> Path:
    """One shipped file, e.g. path("infra/iam-policy.json")."""
    return root() / relative
