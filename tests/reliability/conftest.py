"""Fixtures for the fault-injection tests: tiny training runs, a fake instance-metadata service,
a small disk, and the shared cloud and SSH fixtures (imported, not copied).

What is real here: the `trainer` and `orch` CLIs, the filesystem (a real tmpfs that really fills),
an HTTP server speaking IMDSv2 on 127.0.0.1, moto for EC2, OpenSSH for the instance.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from tests.conftest import require
from tests.fixtures.sshd import sshd_server, ssh_endpoint, ssh_key  # noqa: F401 (fixtures)
from tests.fixtures.aws import aws, job_calls, moto_url, orch  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]

# A model and data small enough that an epoch takes about a second on a busy CPU. A cosine
# schedule with warmup makes every epoch's LR distinct, so a schedule that restarted would show.
TINY = ["--arch", "resnet_small", "--width", "8", "--set", "depths=1,1", "--set", "stem=small",
        "--batch-size", "8", "--workers", "0", "--train-res", "16", "--eval-res", "16", "--set", "eval_resize=16",
        "--device", "cpu", "--lr", "0.2", "--set", "lr_scale_batch=0", "--schedule", "cosine",
        "--warmup-epochs", "1", "--set", "log_every_seconds=0.5", "--set", "label_smoothing=0"]


def trainer(*args) -> "CliRunner.Result":
    """`trainer ARGS` in-process (stdout and stderr together in .output)."""
    from trainer.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


def trainer_process(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` as its own process: real exit codes, signals and threads."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "trainer", *[str(a) for a in args]], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def background_trainer():
    """Start `python -m trainer ARGS` in the background (output together); ended after the test."""
    started: list[subprocess.Popen] = []

    def start(*args, env: dict | None = None) -> subprocess.Popen:
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen([sys.executable, "-m", "trainer", *[str(a) for a in args]], cwd=REPO, env=full_env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sha_ok(path: Path) -> bool:
    """`sha256sum -c` of PATH.sha256, run in its folder, as a user would check it."""
    sha = path.with_name(path.name + ".sha256")
    r = subprocess.run(["sha256sum", "-c", sha.name], cwd=path.parent, capture_output=True, text=True)
    return r.returncode == 0


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("tiny-data")
    r = trainer("demo-data", "--dest", dest, "--classes", "3", "--per-class", "16", "--val-per-class", "4",
                "--size", "16", "--seed", "1")
    assert r.exit_code == 0, r.output
    return dest


@pytest.fixture(scope="session")
def longer_data(tmp_path_factory) -> Path:
    """Enough steps per epoch (18) that a run of 10 epochs outlasts the 5 s spot-notice poll."""
    dest = tmp_path_factory.mktemp("longer-data")
    r = trainer("demo-data", "--dest", dest, "--classes", "3", "--per-class", "48", "--val-per-class", "4",
                "--size", "16", "--seed", "2")
    assert r.exit_code == 0, r.output
    return dest


# --- a fake EC2 instance-metadata service (IMDSv2) ----------------------------------------------


@dataclass
class FakeImds:
    """IMDSv2 on 127.0.0.1: a token first, then `spot/instance-action` is 404 until `notice_when()`."""

    notice_when: Callable[[], bool] = lambda: False
    url: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    requests: list = field(default_factory=list)  # (method, path, had a valid token)
    notices_served: int = 0

    def handler(self):
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                imds.requests.append(("PUT", self.path, True))
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._send(200, imds.token)
                else:
                    self._send(400)

            def do_GET(self):
                ok = self.headers.get("X-aws-ec2-metadata-token") == imds.token
                imds.requests.append(("GET", self.path, ok))
                if not ok:
                    return self._send(401)
                if self.path == "/latest/meta-data/spot/instance-action" and imds.notice_when():
                    imds.notices_served += 1
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
                    return self._send(200, json.dumps({"action": "terminate", "time": when}))
                self._send(404, "Not Found")

        return Handler


@pytest.fixture
def fake_imds():
    imds = FakeImds()
    server = ThreadingHTTPServer(("127.0.0.1", 0), imds.handler())
    imds.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield imds
    server.shutdown()
    server.server_close()


# --- a small disk that really fills --------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mount_point: Path, options: str):
    """A fresh tmpfs mounted at `mount_point` (made here) with mount `options`, unmounted after."""
    mount_point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                       capture_output=True, text=True)
    require(r.returncode == 0, f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A fresh 3 MiB tmpfs; a helper fills it to leave only `free_bytes`."""
    with tmpfs(tmp_path / "small-disk", "size=3m") as mount_point:
        yield mount_point


def fill_disk(mount_point: Path, free_bytes: int) -> Path:
    """Write a ballast file so that about `free_bytes` stay free; returns it (delete it to free space)."""
    ballast = mount_point / "ballast"
    st = os.statvfs(mount_point)
    size = st.f_bavail * st.f_frsize - free_bytes
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(0, size))
    return ballast


def no_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" not in text and "--- Logging error ---" not in text
