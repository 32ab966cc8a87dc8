"""This machine's Docker engine (`--target local` with an engine): the trainer container, as on an instance.

The data folder is mounted where it is (nothing is copied), and an engine that cannot give the
container a GPU runs it on the CPU, with a warning (on an instance that is refused instead).
"""
from __future__ import annotations

from orchestrator.job.logtext import now_rfc3339
from orchestrator.machines.base import Say
from orchestrator.machines.data import copy_from_s3, make_demo_data
from orchestrator.machines.docker_runner import DockerRunner, docker_client
from orchestrator.machines.local_jobs import LocalJob, LocalMachine, save_record
from orchestrator.records import JobSpec, RunSpec
from orchestrator.trainer_args import check_container_paths


class LocalDockerMachine(LocalMachine):
    def runner(self, session) -> DockerRunner:
        return DockerRunner(docker_client(session), self.job, self.where)

    def prepare(self, session, spec: JobSpec, say: Say) -> None:
        check_container_paths(spec.trainer_args, spec.data)  # the container sees /data and /outputs only
        self.check_data(spec)

    def place_data(self, session, runner, spec: JobSpec, data_dir: str, image: str, user: str, say: Say) -> str:
        if spec.data == "demo":
            make_demo_data(session, runner, data_dir, image, user, say)
        elif spec.data.startswith("s3://"):
            copy_from_s3(session, spec, data_dir, "", say)
        return data_dir  # a local folder is mounted where it is

    def without_gpus(self, say: Say) -> bool:
        say("  warning: this machine's Docker engine cannot give the container a GPU (no NVIDIA Container "
            "Toolkit), so the trainer runs on the CPU. Install the toolkit for the GPU, or pass --no-gpus.")
        return True

    def remember(self, run: RunSpec) -> None:
        save_record(LocalJob(job=self.job, runner="docker", data_dir=run.data_dir, outputs_dir=run.outputs_dir,
                             started_at=now_rfc3339()))
