"""The trainer image: its build context (what the Dockerfile copies), content-hash tag, and the build.

The context comes from `assets.root()`: the checkout, or the copy an installed wheel carries.

Built once per content hash on each engine: a second job (or launch) on the same machine reuses it.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Callable

from orchestrator import assets
from orchestrator.errors import ContainerError
from orchestrator.labels import LABEL_IMAGE_HASH

IMAGE_REPOSITORY = "orch-trainer"

# What the Dockerfile copies: the only files sent as the build context, and what the image tag hashes.
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "setup.py", "README.md")
CONTEXT_TREES = ("trainer",)


def _context_members(root: Path) -> list[tuple[str, Path | None]]:
    members: list[tuple[str, Path | None]] = []
    for name in CONTEXT_FILES:
        path = root / name
        members.append((name, path if path.is_file() else None))
    # What a wheel would ship of the trees (never what a local install built in place: bytecode,
    # trainer._jpegcrop's .so for this machine's Python; the image builds its own).
    for name in assets.members(root):
        if name.split("/", 1)[0] in CONTEXT_TREES:
            members.append((name, root / name))
    return members


def context_tar(root: Path) -> tuple[bytes, str]:
    """The build context as an in-memory tar (deterministic), and its content hash."""
    digest = hashlib.sha256()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in _context_members(root):
            if path is None:
                if name == "README.md":  # pyproject names it; a checkout without it still builds
                    data = b"orch-trainer\n"
                elif name == "Dockerfile":
                    raise ContainerError(f"{root / 'Dockerfile'} is missing: orch builds the trainer image from it.")
                else:
                    continue
            else:
                data = path.read_bytes()
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), digest.hexdigest()


def image_tag(root: Path, base_image: str | None = None) -> tuple[str, str]:
    """(`orch-trainer:<hash>`, hash) for the build context and base image."""
    _, content = context_tar(root)
    h = hashlib.sha256((content + "\0" + (base_image or "")).encode()).hexdigest()[:16]
    return f"{IMAGE_REPOSITORY}:{h}", h


def image_exists(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_image(client, root: Path, base_image: str | None = None, log: Callable[[str], None] | None = None,
                 progress: Callable[[dict], None] | None = None) -> tuple[str, str]:
    """Build the trainer image from `root` unless its content-hash tag is already there.

    `base_image` overrides the Dockerfile's BASE_IMAGE. `log` gets the build's text lines, `progress`
    its pull events (the base image's layers). Returns (tag, hash).
    """
    tar, content = context_tar(root)
    h = hashlib.sha256((content + "\0" + (base_image or "")).encode()).hexdigest()[:16]
    tag = f"{IMAGE_REPOSITORY}:{h}"
    if image_exists(client, tag):
        return tag, h
    buildargs = {"BASE_IMAGE": base_image} if base_image else {}
    tail: list[str] = []
    try:
        for chunk in client.api.build(fileobj=io.BytesIO(tar), custom_context=True, tag=tag, rm=True,
                                      forcerm=True, buildargs=buildargs, decode=True, network_mode="host",
                                      labels={LABEL_IMAGE_HASH: h}):
            if "error" in chunk:
                raise ContainerError(
                    f"building {tag} failed: {chunk['error'].strip()}\n" + "".join(tail[-20:])
                    + "\nFix the Dockerfile or the base image, or pass a prebuilt image with --image.")
            if progress and chunk.get("status"):
                progress(chunk)
            text = chunk.get("stream") or ""
            if text:
                tail.append(text)
                if log and text.strip():
                    log(text.rstrip("\n"))
    except ContainerError:
        raise
    except Exception as e:  # the engine dropped the build
        raise ContainerError(f"building {tag} failed: {e}") from e
    return tag, h


