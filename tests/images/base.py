"""The test stand-in for the NGC PyTorch image: Debian bookworm + python 3.11 + the trainer's deps.

No registry is reachable from the tests, so the base image is made locally and `docker import`ed:

1. a minbase Debian bookworm rootfs with python3, pip and setuptools (`debootstrap`, about 45 s
   from Debian's mirror, cached under CACHE_DIR);
2. the trainer's Python packages copied from the running interpreter's site-packages (bookworm's
   python3 is 3.11, ABI-compatible with the test venv), into /usr/local/lib/python3.11/dist-packages.
   A CUDA build of torch links its CUDA libraries at import, so those stay, but the parts it only
   loads on a GPU (cuDNN's engines, cuSOLVER-Mg, headers, static libraries) and triton and
   cuda-bindings are left out: they are most of its 5 GB;
3. one `docker import`, tagged `orch-test-base:<hash of the package set and this file>`, skipped
   when that tag exists in the engine.

As a script: `python -m tests.images.base unix:///run/orch-test-docker.sock` prints the tag.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE_DIR = Path(os.environ.get("ORCH_TEST_CACHE", "/var/cache/orch-test"))
ROOTFS = CACHE_DIR / "bookworm-python3"
MIRROR = os.environ.get("ORCH_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_PACKAGES = "python3,python3-pip,python3-setuptools,python3-wheel"
REPOSITORY = "orch-test-base"
SITE = "usr/local/lib/python3.11/dist-packages"

# What the trainer imports in the container (pyproject's `trainer` extra + its CLI), and what
# `pip install --no-build-isolation .` needs to build the project.
ROOTS = ("torch", "torchvision", "numpy", "pillow", "simplejpeg", "matplotlib", "scipy", "onnx", "onnxscript",
         "typer", "rich", "setuptools", "packaging")
# GPU-only weight: not needed to import or run torch on CPU.
LEFT_OUT = re.compile(r"^(triton|cuda-bindings|cuda-pathfinder)$")
GPU_ONLY_FILES = re.compile(
    r"(^nvidia/.*/include/|\.a$|\.bc$|libcudnn_.*\.so|libcusolverMg|libnvrtc\.alt|libnvblas|libcufftw"
    r"|libnvperf|libpcsampling|libcheckpoint|nvshmem_transport)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(roots=ROOTS) -> list[md.Distribution]:
    """The installed distributions `roots` need (requirements closure, this platform, no extras)."""
    from packaging.markers import Marker

    seen: dict[str, md.Distribution] = {}
    done: set[tuple[str, str]] = set()  # (distribution, extra) pairs already expanded
    stack = [(r, "") for r in roots]
    while stack:
        raw, extra = stack.pop()
        name = _norm(raw)
        if (name, extra) in done or LEFT_OUT.match(name):
            continue
        done.add((name, extra))
        try:
            dist = seen.get(name) or md.distribution(name)
        except md.PackageNotFoundError:
            if name in (_norm(r) for r in roots) and name not in ("onnx", "onnxscript"):
                raise RuntimeError(f"{name} is not installed in {sys.prefix}; the test base needs it")
            continue
        seen[name] = dist
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if marker and not Marker(marker).evaluate({"extra": extra}):
                continue
            match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[([^\]]*)\])?", spec)
            if match:
                stack.append((match.group(1), ""))
                for want in (match.group(2) or "").split(","):
                    if want.strip():
                        stack.append((match.group(1), want.strip()))
    return [seen[k] for k in sorted(seen)]


def image_tag(dists: list[md.Distribution]) -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for d in dists:
        h.update(f"{d.metadata['Name']}=={d.version}\n".encode())
    return f"{REPOSITORY}:{h.hexdigest()[:16]}"


def ensure_rootfs() -> Path:
    if (ROOTFS / "usr/bin/python3").exists():
        return ROOTFS
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (Debian: apt-get install debootstrap)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="rootfs.", dir=CACHE_DIR))
    made = subprocess.run(["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}",
                           "bookworm", str(partial), MIRROR], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if made.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"debootstrap from {MIRROR} failed: {made.stderr[-2000:]}")
    for debs in (partial / "var/cache/apt/archives").glob("*.deb"):
        debs.unlink()
    try:
        os.replace(partial, ROOTFS)
    except OSError:  # another test session made it first
        shutil.rmtree(partial, ignore_errors=True)
    return ROOTFS


def why_no_base() -> str | None:
    """None when the base image can be made here, else the reason."""
    if (ROOTFS / "usr/bin/python3").exists():
        return None
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (Debian: apt-get install debootstrap)"
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _stage(rootfs: Path, dists: list[md.Distribution], stage: Path) -> None:
    # Hard links: staging 1.5 GB costs no copy when the cache and the venv share a filesystem.
    subprocess.run(["cp", "-al", f"{rootfs}/.", str(stage)], check=True)
    site_dst = stage / SITE
    for dist in dists:
        base = Path(dist.locate_file(""))
        for rel in dist.files or []:
            if ".." in rel.parts or rel.parts[0] == "__pycache__":
                continue
            if GPU_ONLY_FILES.search(rel.as_posix()):
                continue
            src = base / rel
            if src.is_file():
                _link_or_copy(src, site_dst / rel)
    # The NGC images let pip install into the system interpreter; so does this stand-in.
    for marker in stage.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    python = stage / "usr/local/bin/python"
    python.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        python.symlink_to("/usr/bin/python3")


def image_exists(base_url: str, tag: str) -> bool:
    import docker

    client = docker.DockerClient(base_url=base_url, timeout=60)
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def ensure_base_image(base_url: str) -> str:
    """The tag of the test base image in the engine at `base_url`, building it when missing."""
    dists = distributions()
    tag = image_tag(dists)
    if image_exists(base_url, tag):
        return tag
    rootfs = ensure_rootfs()
    stage = Path(tempfile.mkdtemp(prefix="stage.", dir=CACHE_DIR))
    try:
        _stage(rootfs, dists, stage)
        tar = subprocess.Popen(["tar", "-C", str(stage), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "-H", base_url, "import",
             "-c", "ENV LANG=C.UTF-8", "-c", "ENV PYTHONDONTWRITEBYTECODE=1",
             "-c", 'CMD ["python3"]', "-", tag],
            stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import of {tag} failed: {imported.stderr.strip()}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _drop_older_bases(base_url, tag)
    return tag


def _drop_older_bases(base_url: str, keep: str) -> None:
    """Each base is a 4 GB layer: untag older ones and the trainer images built on them, then prune."""
    import docker

    client = docker.DockerClient(base_url=base_url, timeout=600)
    try:
        for image in client.images.list():
            for tag in image.tags:
                old_base = tag.startswith(REPOSITORY + ":") and tag != keep
                if old_base or tag.startswith("orch-trainer:"):
                    try:
                        client.images.remove(tag, force=True)  # only untags an image a container uses
                    except docker.errors.APIError:
                        pass
        client.images.prune(filters={"dangling": True})
    finally:
        client.close()


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "unix:///run/orch-test-docker.sock"
    t0 = time.monotonic()
    print(ensure_base_image(url))
    print(f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
