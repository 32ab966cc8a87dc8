"""orch as a user installs it: a wheel built from the sources, in a fresh venv that has no torch, run from
a folder outside the checkout. It must carry its instance set-up script (the user data and its autostop
watcher), its IAM policies and the trainer's build context, and build the same trainer image a checkout
builds. Its dependencies come from this venv (no network here): only orch's own dependency closure is
made visible to the fresh venv, so torch is not importable there.
"""
from __future__ import annotations

import base64
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from packaging.requirements import Requirement

from orchestrator import assets
from orchestrator.machines.image import image_tag
from tests.fixtures.aws import REGION, SSM_PARAM, moto_url  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
CIDR = "198.51.100.7/32"


def _closure(name: str) -> list[md.Distribution]:
    """The installed distributions `name` needs (its base requirements, markers evaluated), itself excluded."""
    seen: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in md.requires(name) or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        dist = md.distribution(req.name)
        seen[key] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return list(seen.values())


def _expose(dists: list[md.Distribution], into: Path) -> None:
    """Symlink each distribution's top-level modules and its metadata into `into`."""
    into.mkdir()
    for dist in dists:
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = base / top
            if source.exists() and not (into / top).exists() and top != "__pycache__":
                (into / top).symlink_to(source)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the orch wheel (built from a copy of the sources) and nothing else of ours."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    for name in assets.members(ROOT) + ["MANIFEST.in"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "orchestrator", src / "orchestrator",
                    ignore=lambda d, names: [n for n in names if assets.is_build_product(Path(n)) or n == assets.BUNDLE])
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(work / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = (work / "dist").glob("orch_trainer-*.whl")
    return fresh_venv_with(wheel, work)


def fresh_venv_with(wheel: Path, work: Path) -> Path:
    """A new venv under `work` holding `wheel` alone, its dependencies this venv's (orch's closure only)."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    put = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert put.returncode == 0, put.stderr[-3000:]
    site, = (venv / "lib").glob("python3*/site-packages")
    _expose(_closure("orch-trainer"), work / "deps")
    (site / "orch-deps.pth").write_text(str(work / "deps") + "\n")
    return venv


def run(venv: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "ORCH_BOOTSTRAP_SCRIPT"}  # the shipped one
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**full, **(env or {})})


def test_the_installed_wheel_has_no_torch_and_carries_what_the_checkout_carries(installed, tmp_path):
    probe = run(installed, "python", "-c", (
        "import importlib.util, orchestrator; from orchestrator import assets; from orchestrator.machines.image "
        "import image_tag; print(importlib.util.find_spec('torch') is None); print(orchestrator.__file__); "
        "print(assets.root()); print(image_tag(assets.root(), 'base')[0])"), cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    no_torch, package, root, tag = probe.stdout.split()
    assert no_torch == "True"
    assert Path(package).is_relative_to(installed) and Path(root) == Path(package).parent / assets.BUNDLE
    assert sorted(assets.members(Path(root))) == sorted(assets.members(ROOT))
    assert tag == image_tag(ROOT, "base")[0]  # the image a wheel builds is the checkout's, by content hash


def test_a_launch_from_the_installed_wheel_gives_the_instance_its_bootstrap(installed, moto_url, tmp_path):  # noqa: F811
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    image = ec2.register_image(Name="Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250101",
                               RootDeviceName="/dev/sda1",
                               BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50}}])["ImageId"]
    boto3.client("ssm", region_name=REGION, endpoint_url=moto_url).put_parameter(Name=SSM_PARAM, Value=image,
                                                                                  Type="String")
    env = {"AWS_ENDPOINT_URL": moto_url, "ORCH_AMI_SSM_PARAMETER": SSM_PARAM, "ORCH_LIVE_PRICES": "0",
           "ORCH_POLL_INTERVAL_S": "0.05", "ORCH_WAIT_TIMEOUT_S": "5",
           "ORCH_SSH_PROXY_COMMAND": "false"}  # moto's addresses are never dialled
    args = ("orch", "launch", "--instance", "g4dn.2xlarge", "--name", "wheel", "--ssh-cidr", CIDR, "--data", "demo")

    plan = run(installed, *args, "--dry-run", cwd=tmp_path, env=env)
    assert plan.returncode == 0, plan.stderr + plan.stdout
    assert re.search(r"user data\s+\d+ bytes", plan.stdout), plan.stdout

    # No sshd answers moto's instance: once it exists, the launch is killed (a closed laptop), and the
    # teardown from the wheel finds it by its tags.
    full = {k: v for k, v in os.environ.items() if k != "ORCH_BOOTSTRAP_SCRIPT"}
    launching = subprocess.Popen([str(installed / "bin" / "orch"), *args[1:]], cwd=tmp_path, env={**full, **env},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while not (ids := [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]):
            assert launching.poll() is None and time.monotonic() < deadline, launching.communicate()[0]
            time.sleep(0.2)
    finally:
        launching.kill()
        launching.communicate()
    assert len(ids) == 1
    raw = ec2.describe_instance_attribute(InstanceId=ids[0], Attribute="userData")["UserData"]["Value"]
    user_data = base64.b64decode(raw).decode()
    assert "export ORCH_JOB=wheel" in user_data
    script = (ROOT / "infra" / "bootstrap.sh").read_text().splitlines(keepends=True)
    body = "".join(script[next(i for i, line in enumerate(script) if not line.startswith("#")):])
    assert user_data.startswith("#!") and user_data.endswith(body)

    down = run(installed, "orch", "teardown", "wheel", "--yes", cwd=tmp_path, env={**env, "ORCH_QUICK_SSH_S": "1"})
    assert down.returncode == 0, down.stdout + down.stderr
    states = {i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
    assert states <= {"shutting-down", "terminated"}


def test_an_install_without_its_bootstrap_refuses_to_launch_before_creating_anything(installed, moto_url, tmp_path):  # noqa: F811
    bundle, = installed.glob(f"lib/python3*/site-packages/orchestrator/{assets.BUNDLE}")
    script = bundle / "infra" / "bootstrap.sh"
    script.rename(script.with_suffix(".away"))
    try:
        r = run(installed, "orch", "launch", "--instance", "g4dn.2xlarge", "--name", "nobs", "--ssh-cidr", CIDR,
                "--data", "demo", cwd=tmp_path, env={"AWS_ENDPOINT_URL": moto_url})
    finally:
        script.with_suffix(".away").rename(script)
    said = re.sub(r"\s+", " ", r.stdout + r.stderr)
    assert r.returncode == 1 and "this install is incomplete, and orch sets up nothing" in said
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    assert not [i for res in ec2.describe_instances()["Reservations"] for i in res["Instances"]
                if any(t["Value"] == "nobs" for t in i.get("Tags", []))]
