"""A link that goes silent (a laptop that slept, a NAT that forgot the flow) during a sync, a fetch or
`logs --follow`: noticed within seconds, then resumed, instead of hanging until TCP gives up.

The real sshd's relay is frozen (`SshdServer.freeze_connections`: no bytes, no close, for two
minutes); ORCH_KEEPALIVE_S makes the liveness checks fast, as a user could.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.labels import LABEL_JOB, container_name
from orchestrator.job.logs import follow
from orchestrator.machines.instance import InstanceMachine
from orchestrator.job.fetch import fetch_files
from orchestrator.job.sync import sync_dataset, sync_s3
from orchestrator.machines import docker_runner as ctr
from orchestrator.remote.base import ConnectionLost
from orchestrator.remote.ssh import connect
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import FREEZE_MAX_S, ssh_endpoint, ssh_key, sshd_server  # noqa: F401

pytestmark = pytest.mark.needs_sshd

KEEPALIVE_S = 0.5
BOUND_S = 20  # well under FREEZE_MAX_S: only the watch can end a blocked transfer this soon
assert BOUND_S < FREEZE_MAX_S / 2


@pytest.fixture(autouse=True)
def fast_keepalive(monkeypatch):
    monkeypatch.setenv("ORCH_KEEPALIVE_S", str(KEEPALIVE_S))


def freeze(server) -> None:
    """`server.freeze_connections()`, but the cut file is replaced atomically: a busy relay that reads it
    halfway through a plain rewrite sees "" and cuts its connection instead of freezing it."""
    generation = int((server.cut_file.read_text() or "0").split()[0])
    tmp = server.cut_file.with_name(server.cut_file.name + ".tmp")
    tmp.write_text(f"{generation + 1} freeze")
    os.replace(tmp, server.cut_file)


def bounded(fn, seconds: float = BOUND_S):
    """fn()'s result or exception, or a failure if it is still blocked after `seconds`."""
    box: list = []

    def run():
        try:
            box.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001
            box.append(("error", e))

    t = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s on a silent link"
    return box[0], time.monotonic() - started


class _FreezeAfter:
    """The real session; the link goes silent once `limit` bytes have gone out (tar) or come in (SFTP)."""

    def __init__(self, session, server, limit: int):
        self._session, self._server, self._limit = session, server, limit
        self._seen, self._frozen = 0, False
        self.where = session.where

    def __getattr__(self, name):
        return getattr(self._session, name)

    def _count(self, n: int) -> None:
        self._seen += n
        if self._seen >= self._limit and not self._frozen:
            self._frozen = True
            freeze(self._server)
            time.sleep(0.3)  # the relay notices within 0.1 s

    def exec_stream(self, cmd):
        stream = self._session.exec_stream(cmd)
        if "tar -x" in cmd:
            real_write = stream.stdin.write

            def write(data):
                self._count(len(data))
                return real_write(data)

            stream.stdin.write = write
        return stream

    def sftp(self):
        sftp = self._session.sftp()
        real_open = sftp.open

        def open_(path, mode="r"):
            f = real_open(path, mode)
            if path.endswith(".pt"):
                real_read = f.read

                def read(n=-1):
                    data = real_read(n)
                    self._count(len(data))
                    return data

                f.read = read
            return f

        sftp.open = open_
        return sftp


def make_dataset(root: Path, files: int, size: int) -> Path:
    rng = random.Random(0)
    for i in range(files):
        path = root / f"class_{i % 3}" / f"{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


def test_a_sync_over_a_link_that_goes_silent_fails_in_seconds_and_resumes(sshd_server, ssh_endpoint, tmp_path):
    data = make_dataset(tmp_path / "data", files=30, size=400_000)
    remote = tmp_path / "instance"
    session = connect(ssh_endpoint)
    (kind, error), took = bounded(lambda: sync_dataset(_FreezeAfter(session, sshd_server, limit=2_000_000), data,
                                                       str(remote), progress=False))
    session.close()
    assert kind == "error" and isinstance(error, ConnectionLost), error
    assert "gave no answer" in str(error) and "run the same command again" in str(error)
    assert took < BOUND_S

    with connect(ssh_endpoint) as again:  # a new connection: the sync picks up what is missing
        report = sync_dataset(again, data, str(remote), progress=False)
    assert report.files_total == 30 and report.files_sent < 30
    for path in data.rglob("*.bin"):
        assert (remote / path.relative_to(data)).read_bytes() == path.read_bytes()


def test_a_fetch_over_a_link_that_goes_silent_fails_in_seconds_and_resumes(sshd_server, ssh_endpoint, tmp_path):
    out = tmp_path / "instance" / "out"
    (out / "checkpoints").mkdir(parents=True)
    payload = random.Random(1).randbytes(6 << 20)
    (out / "checkpoints" / "last.pt").write_bytes(payload)
    (out / "checkpoints" / "last.pt.sha256").write_text(f"{hashlib.sha256(payload).hexdigest()}  last.pt\n")
    dest = tmp_path / "weights"
    session = connect(ssh_endpoint)
    (kind, error), took = bounded(lambda: fetch_files(_FreezeAfter(session, sshd_server, limit=1 << 20), str(out),
                                                      ["checkpoints/last.pt"], dest))
    session.close()
    assert kind == "error" and isinstance(error, ConnectionLost), error
    assert "gave no answer" in str(error) and "to resume from there" in str(error)
    part = dest / "checkpoints" / "last.pt.part"
    kept = part.stat().st_size
    assert 0 < kept < len(payload)

    with connect(ssh_endpoint) as again:
        report = fetch_files(again, str(out), ["checkpoints/last.pt"], dest)
    assert report.bytes_downloaded == len(payload) - kept
    assert (dest / "checkpoints" / "last.pt").read_bytes() == payload


def test_an_s3_copy_over_a_link_that_goes_silent_fails_in_seconds(sshd_server, ssh_endpoint, tmp_path):
    fake = sshd_server.bin_dir / "aws"  # the instance's AWS CLI, busy copying a large dataset
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    session = connect(ssh_endpoint)
    try:
        threading.Timer(1.0, freeze, args=(sshd_server,)).start()
        (kind, error), took = bounded(lambda: sync_s3(session, "s3://bucket/imagenet/", str(tmp_path / "instance")))
    finally:
        session.close()
        fake.unlink()
    assert kind == "error" and isinstance(error, ConnectionLost), error
    assert "gave no answer" in str(error) and "run the same command again" in str(error)


# -- logs --follow: needs a Docker engine on the "instance" ----------------------------------------
@pytest.fixture
def remote_engine(sshd_server, docker_engine):  # noqa: F811
    """`docker` on the sshd's machine is the test engine (what the instance's engine is to orch)."""
    wrapper = sshd_server.bin_dir / "docker"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('docker')} -H {docker_engine.base_url} \"$@\"\n")
    wrapper.chmod(0o755)
    client = docker_engine.client()
    yield client
    client.close()
    wrapper.unlink(missing_ok=True)


@pytest.mark.needs_docker
def test_logs_follow_over_a_link_that_goes_silent_reconnects_and_loses_nothing(
        sshd_server, ssh_endpoint, remote_engine, base_image, capsys):  # noqa: F811
    job = f"t-silent-{uuid.uuid4().hex[:8]}"
    lines = 120
    remote_engine.containers.run(
        base_image, ["python3", "-u", "-c", f"import time\nfor i in range({lines}):\n print('line', i)\n time.sleep(0.1)"],
        detach=True, labels={LABEL_JOB: job}, name=container_name(job), network_mode="none")
    try:
        out = io.StringIO()
        box: list = []
        follower = threading.Thread(target=lambda: box.append(follow(
            InstanceMachine(job, ssh_endpoint), follow=True, out=out, reconnect_s=60)), daemon=True)
        follower.start()
        deadline = time.monotonic() + 60
        while out.getvalue().count("\n") < 10:
            assert time.monotonic() < deadline and follower.is_alive(), out.getvalue()
            time.sleep(0.1)
        connections = len(sshd_server.requested_targets())
        freeze(sshd_server)
        frozen_at = time.monotonic()
        while len(sshd_server.requested_targets()) == connections:  # a new connection, through a new relay
            assert time.monotonic() - frozen_at < BOUND_S, "the follower never noticed the silent link"
            time.sleep(0.1)
        follower.join(60)
        assert not follower.is_alive() and box == [0]
        assert "gave no answer" in capsys.readouterr().err
        assert out.getvalue().splitlines() == [f"line {i}" for i in range(lines)]  # no gap, no duplicate
    finally:
        ctr.remove(remote_engine, job, timeout_s=1)
