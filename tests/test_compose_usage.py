"""docker-compose.yml's usage, as its comment gives it, runs the trainer as the user who typed it, into
an output folder that user made (no Docker Compose here: the file's variables are checked against
what bash really exports)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_the_usage_exports_what_the_user_field_reads_and_makes_out_first(tmp_path):
    text = (REPO / "docker-compose.yml").read_text()
    service = yaml.safe_load(text)["services"]["trainer"]
    usage = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#   ")]
    steps = [line.split("  #")[0].strip() for line in usage]

    # bash does not export UID, has no GID, and refuses `UID=... cmd`: the names must be others.
    names = re.findall(r"\$\{(\w+)", service["user"])
    assert len(names) == 2 and not {"UID", "GID", "EUID"} & set(names), service["user"]
    export = next(step for step in steps if step.startswith("export "))
    env = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"{export}; env"], capture_output=True, text=True,
                         check=True, env={"PATH": os.environ["PATH"]}).stdout.splitlines()
    assert f"{names[0]}={os.getuid()}" in env and f"{names[1]}={os.getgid()}" in env
    assert ":?" in service["user"]  # unset: compose stops and says so, rather than run as uid 1000

    # OUT is made by the user before compose runs; the engine would make a missing one root's.
    out_volume = next(v for v in service["volumes"] if v.endswith(":/outputs"))
    assert out_volume.startswith("${OUT:?"), out_volume
    for step in steps:
        if "OUT=" in step:
            out = re.search(r"OUT=(\S+)", step).group(1)
            made = [s for s in steps if s.startswith(f"mkdir -p {out}") or f"mkdir -p {out} " in s]
            assert made, f"the usage runs with OUT={out} but never makes it: {step}"
