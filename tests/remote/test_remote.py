"""remote/ (SSH sessions, the proxy command, this machine's session) against a real sshd on 127.0.0.1, reached only through the endpoint's proxy command."""
from __future__ import annotations

import os
import shlex
import socket
import stat
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.records import SSHEndpoint
from orchestrator.remote.base import (
    ConnectionLost,
    HostKeyChanged,
    KeyFileError,
    RemoteError,
    RunResult,
    SSHUnreachable,
)
from orchestrator.remote.local import LocalSession
from orchestrator.remote.proxy import expand_proxy_command
from orchestrator.remote.ssh import connect, wait_for_ssh
from tests.conftest import require
from tests.fixtures.sshd import (  # noqa: F401
    FAKE_INSTANCE_IP,
    SshdServer,
    make_client_key,
    own_sshd,
    ssh_endpoint,
    ssh_key,
    sshd_server,
)

pytestmark = pytest.mark.needs_sshd


def test_connect_and_run_through_the_proxy_command(sshd_server, ssh_endpoint):
    with connect(ssh_endpoint) as session:
        result = session.run("echo out; echo err >&2; exit 3")
        assert result == RunResult(exit_code=3, stdout="out\n", stderr="err\n")
        assert session.run("true", check=True).ok
    # The relay was asked for the fake instance address: %h and %p were expanded.
    assert f"{FAKE_INSTANCE_IP} 22" in sshd_server.requested_targets()


def test_run_check_raises_with_the_command_and_its_stderr(ssh_endpoint):
    with connect(ssh_endpoint) as session:
        with pytest.raises(Exception) as e:
            session.run("echo no such thing >&2; exit 7", check=True)
    assert "exit code 7" in str(e.value) and "no such thing" in str(e.value)


def test_run_timeout_is_bounded(ssh_endpoint):
    with connect(ssh_endpoint) as session:
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            session.run("sleep 30", timeout=1)
        assert time.monotonic() - t < 5


def test_large_output_on_both_streams_does_not_deadlock(ssh_endpoint):
    with connect(ssh_endpoint) as session:
        result = session.run("head -c 3000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2",
                             timeout=60)
    assert len(result.stdout) == 3_000_000 and len(result.stderr) == 3_000_000


def test_host_key_is_pinned_on_first_connect_mode_600(ssh_endpoint):
    known = ssh_endpoint.known_hosts
    assert not known.exists()
    connect(ssh_endpoint).close()
    text = known.read_text()
    assert text.startswith(f"{FAKE_INSTANCE_IP} ssh-ed25519 ")
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    connect(ssh_endpoint).close()  # the same key again: accepted, file unchanged
    assert known.read_text() == text


def test_changed_host_key_is_refused_naming_the_file_and_the_fix(tmp_path):
    with own_sshd(tmp_path) as (server, key):
        endpoint = server.endpoint(key, tmp_path / "known_hosts")
        connect(endpoint).close()
        pinned = endpoint.known_hosts.read_text()

        server.rotate_host_key()
        with pytest.raises(HostKeyChanged) as e:
            connect(endpoint)
        message = str(e.value)
        assert str(endpoint.known_hosts) in message
        assert f"ssh-keygen -R {FAKE_INSTANCE_IP} -f {endpoint.known_hosts}" in message
        assert endpoint.known_hosts.read_text() == pinned  # the pin is not overwritten
        # wait_for_ssh does not retry it either: waiting would not help.
        t = time.monotonic()
        with pytest.raises(HostKeyChanged):
            wait_for_ssh(endpoint, deadline_s=30, progress=None)
        assert time.monotonic() - t < 10
        # The command the message gives is the fix: forget the old key, and the next connect pins the new one.
        fix = [line.strip() for line in message.splitlines() if line.strip().startswith("ssh-keygen -R")][0]
        subprocess.run(shlex.split(fix), check=True, capture_output=True)
        with connect(endpoint) as session:
            assert session.run("echo ok").stdout == "ok\n"
        assert endpoint.known_hosts.read_text() != pinned


def test_a_key_readable_by_others_is_refused(ssh_endpoint):
    ssh_endpoint.key_path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        connect(ssh_endpoint)


def test_wait_for_ssh_waits_for_a_server_that_comes_up_late(tmp_path):
    server = SshdServer(tmp_path / "sshd")
    key = make_client_key(tmp_path / "keys")
    endpoint = server.endpoint(key, tmp_path / "known_hosts")
    lines: list[str] = []
    started = threading.Event()

    def boot_later():
        time.sleep(2.0)
        try:
            server.start()
            server.authorize(key.with_name(key.name + ".pub").read_text())
        finally:
            started.set()

    threading.Thread(target=boot_later, daemon=True).start()
    try:
        t = time.monotonic()
        session = wait_for_ssh(endpoint, deadline_s=40, first_delay_s=0.3, max_delay_s=1.0, progress=lines.append)
        waited = time.monotonic() - t
        assert session.run("echo up").stdout == "up\n"
        session.close()
        assert waited >= 1.5 and lines, "it should have retried while the server was down"
        assert "waiting for SSH" in lines[0] and FAKE_INSTANCE_IP in lines[0]
    finally:
        started.wait(30)
        server.stop()


def test_wait_for_ssh_gives_a_clear_error_at_the_deadline(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = make_client_key(tmp_path / "keys")
    dead = SshdServer(tmp_path / "never")
    dead.port = port
    endpoint = dead.endpoint(key, tmp_path / "known_hosts")
    lines: list[str] = []
    t = time.monotonic()
    with pytest.raises(SSHUnreachable) as e:
        wait_for_ssh(endpoint, deadline_s=3, first_delay_s=0.2, max_delay_s=1.0, progress=lines.append)
    took = time.monotonic() - t
    assert 2.5 <= took < 10
    assert "did not come up in 3 s" in str(e.value) and FAKE_INSTANCE_IP in str(e.value)
    assert len(lines) >= 2  # one progress line per failed attempt
    assert not endpoint.known_hosts.exists()


def test_cut_connection_is_reported_not_hung(sshd_server, ssh_endpoint):
    session = connect(ssh_endpoint)
    threading.Timer(0.5, sshd_server.cut_connections).start()
    t = time.monotonic()
    with pytest.raises(ConnectionLost):
        session.run("sleep 20", timeout=30)
    assert time.monotonic() - t < 10
    assert not session.check_alive(timeout=2)
    session.close()
    with connect(ssh_endpoint) as again:  # later connections work
        assert again.check_alive(timeout=10)
        assert again.run("echo ok").stdout == "ok\n"


def test_a_silently_dropped_link_is_noticed_by_check_alive(sshd_server, ssh_endpoint):
    with connect(ssh_endpoint) as session:
        assert session.check_alive(timeout=10)
        sshd_server.freeze_connections()
        time.sleep(0.3)  # the relay notices within 0.1 s
        t = time.monotonic()
        assert not session.check_alive(timeout=2)
        assert time.monotonic() - t < 4
    with connect(ssh_endpoint) as again:
        assert again.check_alive(timeout=10)


def test_exec_stream_round_trip(ssh_endpoint):
    with connect(ssh_endpoint) as session:
        stream = session.exec_stream("wc -c")
        stream.stdin.write(b"x" * 1_000_000)
        stream.close_stdin()
        assert stream.stdout.read().strip() == b"1000000"
        assert stream.wait(30) == 0


def test_forward_joins_each_local_connection_to_a_remote_command(ssh_endpoint):
    with connect(ssh_endpoint) as session:
        path = session.forward("cat")
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        for payload in (b"hello", b"y" * 200_000):
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(path)
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := c.recv(65536):
                    got += chunk
            assert got == payload
    assert not os.path.exists(path)  # closing the session removes the socket


def _docker_engine() -> str | None:
    """A unix socket where an engine answers /_ping, or None."""
    from tests.fixtures.dockerd import SOCKET

    for path in (str(SOCKET), "/var/run/docker.sock"):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(path)
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                if b"OK" in s.recv(4096):
                    return path
        except OSError:
            continue
    return None


def test_docker_socket_reaches_the_remote_engine(ssh_endpoint):
    engine = _docker_engine()
    if engine is None:
        pytest.skip("no Docker engine answers here; the container tests cover this with their dockerd fixture")
    import docker

    with connect(ssh_endpoint) as session:
        client = docker.DockerClient(base_url="unix://" + session.docker_socket(f"unix://{engine}"))
        assert client.ping() is True
        assert client.version()["ApiVersion"]
        client.close()


def test_expand_proxy_command_tokens():
    e = SSHEndpoint(host="i-0abc", port=2222, user="ubuntu")
    assert expand_proxy_command("ssm --target %h --port %p -u %r 100%%", e) == "ssm --target i-0abc --port 2222 -u ubuntu 100%"
    ssm = SSHEndpoint(host="10.0.0.5", instance_id="i-0123456789abcdef0")
    template = "aws ssm start-session --target %i --parameters portNumber=%p # %%i"
    assert expand_proxy_command(template, ssm) == \
        "aws ssm start-session --target i-0123456789abcdef0 --parameters portNumber=22 # %i"
    # For OpenSSH (`orch ssh`): only %i, which it does not know; the rest stays for it to expand.
    assert expand_proxy_command(template, ssm, only="i") == \
        "aws ssm start-session --target i-0123456789abcdef0 --parameters portNumber=%p # %%i"
    with pytest.raises(RemoteError, match="%i, the instance id"):
        expand_proxy_command(template, SSHEndpoint(host="10.0.0.5"))


def _own_server(tmp_path) -> SshdServer:
    server = SshdServer(tmp_path / "sshd")
    try:
        server.start()
    except Exception as e:  # noqa: BLE001
        require(False, f"no sshd: {e}")
    return server


def test_host_key_is_pinned_under_the_instance_id_and_an_address_reused_by_another_instance_is_fine(tmp_path):
    server = _own_server(tmp_path)
    try:
        key = make_client_key(tmp_path / "keys")
        server.authorize(key.with_name(key.name + ".pub").read_text())
        known = tmp_path / "known_hosts"
        by_address = server.endpoint(key, known)
        # An SSM-style proxy command: it names the instance (%i); the address means nothing to it.
        ssm = replace(by_address, proxy_command=server.proxy_command.replace(" %h %p", " %i %p"))
        first = replace(ssm, instance_id="i-0aaaaaaaaaaaaaaa1")
        connect(by_address).close()  # an older orch pinned the first machine by its address
        with connect(first) as session:
            assert session.run("echo ok").stdout == "ok\n"
        assert "i-0aaaaaaaaaaaaaaa1 22" in server.requested_targets()  # %i was expanded
        names = [line.split()[0] for line in known.read_text().splitlines()]
        assert names == [FAKE_INSTANCE_IP, "i-0aaaaaaaaaaaaaaa1"]

        server.rotate_host_key()  # AWS gives the address to a new instance, with a new key
        second = replace(ssm, instance_id="i-0bbbbbbbbbbbbbbb2")
        with connect(second) as session:  # no HostKeyChanged: it is another machine, pinned on first use
            assert session.run("echo ok").stdout == "ok\n"
        assert known.read_text().splitlines()[-1].startswith("i-0bbbbbbbbbbbbbbb2 ssh-ed25519 ")
        # The same instance with another key is still refused, and the fix names the instance.
        with pytest.raises(HostKeyChanged) as e:
            connect(first)
        assert f"ssh-keygen -R i-0aaaaaaaaaaaaaaa1 -f {known}" in str(e.value)
        # An endpoint without an instance id still checks the entry by address (old known_hosts files).
        with pytest.raises(HostKeyChanged, match=f"ssh-keygen -R {FAKE_INSTANCE_IP} "):
            connect(by_address)
    finally:
        server.stop()


def test_local_session_has_the_same_interface(tmp_path):
    session = LocalSession()
    assert session.run("echo a; echo b >&2; exit 2") == RunResult(2, "a\n", "b\n")
    stream = session.exec_stream("wc -c")
    stream.stdin.write(b"abc")
    stream.close_stdin()
    assert stream.stdout.read().strip() == b"3" and stream.wait(10) == 0
    (tmp_path / "f").write_bytes(b"12345")
    files = session.sftp()
    assert files.stat(str(tmp_path / "f")).st_size == 5
    with files.open(str(tmp_path / "f"), "rb") as f:
        f.seek(2)
        assert f.read() == b"345"
    assert session.docker_socket("unix:///run/x.sock") == "/run/x.sock"


def test_no_local_environment_reaches_the_machine(ssh_endpoint, monkeypatch):
    secret = "orch-test-local-secret-0c1d2e"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "LC_ORCH_SECRET"):
        monkeypatch.setenv(name, secret)
    with connect(ssh_endpoint) as session:
        remote_env = session.run("env", check=True).stdout
        stream = session.exec_stream("env")
        stream.close_stdin()
        remote_env += stream.stdout.read().decode()
        stream.wait(30)
    assert secret not in remote_env
    assert "AWS_" not in remote_env
