"""An EC2 instance over SSH, with Docker there: the machine of every `--target aws` job.

On the machine, a job lives in `<root>/<job>/{data,outputs}`, where `<root>` is the `remote_root`
setting when given, else the fast local disk that infra/bootstrap.sh mounts at /mnt/orch when the
instance has one, else `~/orch`. A job launched with `--keep-volume` writes its outputs to
`~/orch/<job>/outputs` instead (`JobSpec.outputs_root`): the root EBS volume, which outlives the
instance, while the data stays on the fast disk (it can be synced again). The folders are chosen
only once the instance's first-boot set-up is done (machines/bootstrap.py). The data is synced
over SSH, copied from S3 on the instance with its role, or generated there (`--data demo`).
A GPU job whose engine can't give the container a GPU is refused: a GPU instance training on its
CPU costs as much for a fraction of the speed.

This module never calls a cloud API: lifecycle/machines.py finds the instance and hands over its
`SSHEndpoint`.
"""
from __future__ import annotations

import posixpath
import shlex
import sys
import threading
import time
from pathlib import Path

from orchestrator.errors import JobError
from orchestrator.job.sync import sync_dataset
from orchestrator.machines import tensorboard
from orchestrator.machines.base import SSH_DEADLINE_S, Say
from orchestrator.machines.bootstrap import hard_cap, wait_for_bootstrap
from orchestrator.machines.data import copy_dataset, copy_from_s3, download_kaggle, make_demo_data, unpack_dataset
from orchestrator.machines.docker_runner import DockerRunner, docker_client
from orchestrator.machines.registry import login as registry_login, push_detached
from orchestrator.records import HardCap, ImageReady, ImageRegistry, JobSpec, RunSpec, SSHEndpoint
from orchestrator.remote.forward import listen_loopback
from orchestrator.remote.linkwatch import LinkWatch
from orchestrator.remote.ssh import wait_for_ssh

REMOTE_FAST_ROOT = "/mnt/orch"  # infra/bootstrap.sh mounts the instance's NVMe disk here
ROOT_VOLUME_ROOT = "~/orch"  # on the root EBS volume: outputs that outlive the instance (--keep-volume)
CHECK_S = 5.0  # how often a served TensorBoard's container is asked after
REMOVE_S = 20.0  # at most this long to remove it when done: a dead link must not hold up Ctrl-C


def absolute(session, path: str) -> str:
    if path.startswith("~/"):  # Docker mounts and SFTP need it absolute: the machine's $HOME
        home = session.run('echo "$HOME"', check=True).stdout.strip()
        return posixpath.join(home, path[2:])
    return path


def job_root(session, job: str, remote_root: str | None = None) -> str:
    """`<remote_root>/<job>`, else `<fast disk or ~>/orch/<job>` on the session's machine."""
    if remote_root:
        return posixpath.join(absolute(session, remote_root), job)
    out = session.run(
        f"if [ -d {REMOTE_FAST_ROOT} ] && [ -w {REMOTE_FAST_ROOT} ]; then echo {REMOTE_FAST_ROOT}; "
        'else echo "$HOME/orch"; fi', check=True).stdout.strip()
    return posixpath.join(out, job)


def job_dirs(session, spec: JobSpec) -> tuple[str, str]:
    """The job's (data, outputs) folders on the session's machine, absolute."""
    root = job_root(session, spec.job, spec.remote_root)
    if spec.outputs_root:
        return posixpath.join(root, "data"), posixpath.join(absolute(session, spec.outputs_root), spec.job, "outputs")
    return posixpath.join(root, "data"), posixpath.join(root, "outputs")


class InstanceMachine:
    autostops = True  # infra/bootstrap.sh's watcher, --autostop-minutes after the job ends
    replaceable = False

    def __init__(self, job: str, endpoint: SSHEndpoint):
        self.job, self.endpoint = job, endpoint
        self.where = f"{endpoint.user}@{endpoint.host}:{endpoint.port}"
        self.progress = sys.stderr.isatty()

    def open(self, deadline_s: float = SSH_DEADLINE_S):
        return wait_for_ssh(self.endpoint, deadline_s)

    def runner(self, session) -> DockerRunner:
        return DockerRunner(docker_client(session), self.job, session.where)

    def prepare(self, session, spec: JobSpec, say: Say) -> None:
        wait_for_bootstrap(session, say=say)

    def hard_cap(self, session) -> HardCap | None:
        return hard_cap(session)

    def folders(self, session, spec: JobSpec) -> tuple[str, str]:
        return job_dirs(session, spec)

    def place_data(self, session, runner, spec: JobSpec, data_dir: str, image: str, user: str, say: Say) -> str:
        if spec.data == "demo":
            make_demo_data(session, runner, data_dir, image, user, say)
        elif spec.dataset is not None:
            copy_dataset(session, spec, data_dir, say)  # unpacked by finish_data, once the image is there
        elif spec.data.startswith("s3://"):
            copy_from_s3(session, spec, data_dir, " with its instance role", say)
        elif spec.data.startswith("kaggle:"):
            download_kaggle(session, spec, data_dir, say)
        else:
            say(f"  syncing {spec.data} to {session.where}:{data_dir}")
            report = sync_dataset(session, Path(spec.data), data_dir)
            say(f"  {report.files_sent} of {report.files_total} files sent "
                f"({report.bytes_sent / 1e6:.1f} MB, {report.mb_per_s:.1f} MB/s)")
        return data_dir

    def registry_auth(self, session, registry: ImageRegistry) -> tuple[dict | None, str]:
        return registry_login(session, registry)

    def push_image(self, session, registry: ImageRegistry, ready: ImageReady) -> str | None:
        log = posixpath.join(ROOT_VOLUME_ROOT, "image-push.log")
        return push_detached(session, registry, ready.image, ready.content_hash, log)

    def finish_data(self, session, runner, spec: JobSpec, data_dir: str, image: str, user: str, say: Say) -> None:
        if spec.dataset is not None:
            unpack_dataset(session, runner, spec, data_dir, image, user, say)

    def without_gpus(self, say: Say) -> bool:
        return False

    def remember(self, run: RunSpec) -> None:
        pass  # the container's labels are the record

    def forget(self) -> bool:
        return False

    def tensorboard(self, session, outputs: str, port: int, say: Say) -> "ForwardedTensorBoard":
        """TensorBoard in a container on the instance (machines/tensorboard.py), on its 127.0.0.1 only, carried
        to this machine's 127.0.0.1:`port` through `direct-tcpip` channels of the job's SSH connection."""
        listener = listen_loopback(port)  # first: a taken port starts nothing on the instance
        runner = None
        try:
            if not session.run(f"test -d {shlex.quote(outputs)}", timeout=60).ok:
                raise JobError(f"job {self.job} has no outputs folder on {self.where} yet ({outputs}): its trainer "
                               f"has not started. `orch status {self.job}` says where it is.")
            runner = self.runner(session)
            image = tensorboard.trainer_image(runner.client, runner.state().image)
            say(f"  starting TensorBoard on {self.where} in {image}, on {outputs}/tensorboard (read-only)")
            tb = tensorboard.start(runner.client, self.job, image, outputs)
            try:
                forward = session.forward_port(listener, "127.0.0.1", tb.port)
            except BaseException:
                tensorboard.remove(runner.client, self.job)
                raise
        except BaseException:
            listener.close()
            if runner is not None:
                runner.close()
            raise
        return ForwardedTensorBoard(session, runner, tb, forward)


class ForwardedTensorBoard:
    """A `Viewer`: the job's TensorBoard container on the instance, reached at this machine's forwarded port."""

    def __init__(self, session, runner: DockerRunner, tb: tensorboard.TensorBoardContainer, forward):
        self._session, self._runner, self._tb, self._forward = session, runner, tb, forward
        self.url = f"http://127.0.0.1:{forward.port}/"
        self._link = LinkWatch(session)  # a link gone silent (a laptop that slept) is dropped, and said so
        self._next_check = time.monotonic() + CHECK_S

    def ended(self) -> str | None:
        again = "Run the same command again to carry on."
        if self._link.lost.is_set() or not self._session.alive:
            why = self._link.reason if self._link.lost.is_set() else "it closed"
            return f"the SSH connection to {self._session.where} dropped ({why}). {again}"
        if time.monotonic() < self._next_check:
            return None
        self._next_check = time.monotonic() + CHECK_S
        try:
            why = tensorboard.ended(self._runner.client, self._tb)
        except Exception as e:  # the engine, or the link to it: the next look says more
            if not self._session.alive:
                return f"the SSH connection to {self._session.where} dropped ({type(e).__name__}). {again}"
            return None
        return f"{why}\n{again}" if why else None

    def close(self) -> str | None:
        self._forward.close()
        self._link.stop()
        finished, removed = threading.Event(), []

        def remove() -> None:
            try:
                tensorboard.remove(self._runner.client, self._tb.job)
                removed.append(True)
            except Exception:
                pass
            finally:
                finished.set()

        threading.Thread(target=remove, name="orch-tensorboard-remove", daemon=True).start()
        finished.wait(REMOVE_S)
        try:
            self._runner.close()
        except Exception:
            pass
        if removed:
            return None
        return (f"TensorBoard's container may still run on {self._session.where} (it could not be removed): the "
                f"next `orch tensorboard {self._tb.job}` or `orch teardown {self._tb.job}` removes it.")
